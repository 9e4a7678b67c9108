//! The FFI boundary: every ioctl and mmap of `/dev/mnicN` goes through here.
//!
//! Each argument structure of `mnic-abi` is tied to exactly one request number by the
//! [`Request`] trait, so a request can never be issued with a buffer of the wrong type
//! or size (checked at compile time against the size field of the request number).

use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

use mnic_abi as abi;
use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::error::{Error, Result};

/// An ioctl argument structure and the one request that takes it.
pub(crate) trait Request: IntoBytes + FromBytes + Immutable {
    /// The request number (`_IOR`/`_IOW`/`_IOWR` encoded, from `mnic-abi`).
    const REQ: u32;
    /// Name used in errors.
    const NAME: &'static str;
}

/// Size field of an ioctl request number (bits 29:16).
pub(crate) const fn ioc_size(req: u32) -> usize {
    ((req >> 16) & 0x3fff) as usize
}

macro_rules! request {
    ($ty:ty, $req:expr, $name:literal) => {
        impl Request for $ty {
            const REQ: u32 = $req;
            const NAME: &'static str = $name;
        }
        const _: () = assert!(ioc_size($req) == core::mem::size_of::<$ty>());
    };
}

request!(abi::MnicInfo, abi::MNIC_IOC_INFO, "INFO");
request!(abi::MnicRegister, abi::MNIC_IOC_REGISTER, "REGISTER");
request!(abi::MnicHandle, abi::MNIC_IOC_DEREGISTER, "DEREGISTER");
request!(abi::MnicRange, abi::MNIC_IOC_PREFETCH, "PREFETCH");
request!(abi::MnicQueues, abi::MNIC_IOC_SETUP_QUEUES, "SETUP_QUEUES");
request!(abi::MnicPost, abi::MNIC_IOC_POST, "POST");
request!(abi::MnicWait, abi::MNIC_IOC_WAIT, "WAIT");
request!(abi::MnicCtxStats, abi::MNIC_IOC_CTX_STATS, "CTX_STATS");
request!(abi::MnicDevStats, abi::MNIC_IOC_DEV_STATS, "DEV_STATS");
request!(abi::MnicQuery, abi::MNIC_IOC_QUERY, "QUERY");

/// Issues request `T::REQ` on `fd` with `arg` as its in/out argument.
pub(crate) fn ioctl<T: Request>(fd: BorrowedFd<'_>, arg: &mut T) -> Result<()> {
    let ptr: *mut T = arg;
    // SAFETY: `fd` is an open file for the duration of the call (borrowed). `ptr` points
    // to a live, exclusively borrowed `T` whose size equals the size encoded in
    // `T::REQ` (compile-time assertion in `request!`), so the kernel reads and writes
    // only inside it; `T: FromBytes` makes any bytes the kernel writes a valid `T`.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), T::REQ as _, ptr) };
    if rc < 0 {
        Err(Error::last_os(T::NAME))
    } else {
        Ok(())
    }
}

/// The context's doorbell page, mapped with `mmap(offset 0, 4096, PROT_WRITE,
/// MAP_SHARED)` (spec §4, §13).
///
/// # Invariants
/// `ptr` is the start of a live shared mapping of `DOORBELL_PAGE_SIZE` bytes that this
/// value owns and unmaps on drop.
#[derive(Debug)]
pub(crate) struct DoorbellPage {
    ptr: NonNull<u8>,
    /// The process that mapped it: the driver marks the mapping "do not copy on fork", so in
    /// a forked child the address holds whatever the child maps there, never this page.
    owner: i32,
}

impl DoorbellPage {
    /// Maps the doorbell page of the context open on `fd`.
    pub(crate) fn map(fd: BorrowedFd<'_>) -> Result<Self> {
        // SAFETY: a fresh mapping chosen by the kernel (addr NULL), of a device file we
        // hold open; it overlaps no Rust object. The result is checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                abi::DOORBELL_PAGE_SIZE as usize,
                libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Error::last_os("mmap doorbell"));
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or(Error::InvalidInput("mmap returned NULL"))?;
        Ok(Self {
            ptr,
            owner: getpid(),
        })
    }

    /// Stores `tail` to `WQ_TAIL` with one 32-bit write.
    pub(crate) fn ring(&self, tail: u32) {
        // Descriptor stores must be visible to the device before the doorbell.
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        let reg = self
            .ptr
            .as_ptr()
            .wrapping_add(abi::reg::DB_WQ_TAIL as usize)
            .cast::<u32>();
        // SAFETY: by the invariant `reg` lies inside the live doorbell mapping
        // (DB_WQ_TAIL = 0 < 4096) and is 4-byte aligned (page aligned base); a volatile
        // store makes exactly one 32-bit MMIO write, which the device traps.
        unsafe { std::ptr::write_volatile(reg, tail.to_le()) };
    }
}

impl Drop for DoorbellPage {
    fn drop(&mut self) {
        // In a forked child the page was never there (not copied at fork): unmapping the
        // address would unmap whatever the child put there since.
        if getpid() != self.owner {
            return;
        }
        // SAFETY: by the invariant the mapping is live and owned by us (we are the process
        // that mapped it); nothing else refers to it once we are dropped.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), abi::DOORBELL_PAGE_SIZE as usize) };
    }
}

/// The system page size.
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p)
        .ok()
        .filter(|p| p.is_power_of_two())
        .unwrap_or(4096)
}

/// The calling process's id.
pub(crate) fn getpid() -> i32 {
    std::process::id() as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_sizes_match_structs() {
        // The `request!` assertions are compile-time; spot-check the decoding here.
        assert_eq!(ioc_size(abi::MNIC_IOC_INFO), 32);
        assert_eq!(ioc_size(abi::MNIC_IOC_WAIT), 24);
        assert_eq!(ioc_size(abi::MNIC_IOC_DEV_STATS), 256);
        assert_eq!(<abi::MnicQuery as Request>::NAME, "QUERY");
    }

    #[test]
    fn ioctl_on_a_non_device_is_enotty() {
        let f = tempfile::tempfile().unwrap();
        let mut info = abi::MnicInfo::default();
        let fd = std::os::fd::AsFd::as_fd(&f);
        let e = ioctl(fd, &mut info).unwrap_err();
        assert!(matches!(e, Error::NotSupported { op: "INFO" }), "{e:?}");
    }
}
