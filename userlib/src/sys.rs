//! The FFI boundary: every ioctl and mmap of `/dev/mnicN` goes through here (the
//! doorbell page and the shadow page are the two mappings).
//!
//! Each argument structure of `mnic-abi` is tied to exactly one request number by the
//! [`Request`] trait, so a request can never be issued with a buffer of the wrong type
//! or size (checked at compile time against the size field of the request number).

use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;

use mnic_abi as abi;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::error::{Error, Result};
use crate::shadow::Words;

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
request!(CtxLatency, abi::MNIC_IOC_CTX_LATENCY, "CTX_LATENCY");
request!(DevLatency, abi::MNIC_IOC_DEV_LATENCY, "DEV_LATENCY");

/// `MNIC_IOC_CTX_LATENCY`'s argument: the two latency requests share `abi::MnicLatency`, and
/// a structure is tied to one request, so each gets a wrapper of its own.
#[repr(transparent)]
#[derive(Default, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub(crate) struct CtxLatency(pub(crate) abi::MnicLatency);

/// `MNIC_IOC_DEV_LATENCY`'s argument (see [`CtxLatency`]).
#[repr(transparent)]
#[derive(Default, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub(crate) struct DevLatency(pub(crate) abi::MnicLatency);

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

/// A no-argument request (`_IO`: size field 0): the ioctl's third argument is unused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command {
    /// `MNIC_IOC_SHADOW`: give the context a shadow page (before SETUP_QUEUES).
    Shadow,
    /// `MNIC_IOC_SYNC`: post a SYNC on the command queue and wait for it.
    Sync,
}

impl Command {
    const fn req(self) -> u32 {
        match self {
            Command::Shadow => abi::MNIC_IOC_SHADOW,
            Command::Sync => abi::MNIC_IOC_SYNC,
        }
    }
    const fn name(self) -> &'static str {
        match self {
            Command::Shadow => "SHADOW",
            Command::Sync => "SYNC",
        }
    }
}

// The kernel reads no argument for these: their size field must say so.
const _: () = assert!(ioc_size(Command::Shadow.req()) == 0);
const _: () = assert!(ioc_size(Command::Sync.req()) == 0);

/// Issues the no-argument request `cmd` on `fd`.
pub(crate) fn command(fd: BorrowedFd<'_>, cmd: Command) -> Result<()> {
    // SAFETY: `fd` is an open file for the duration of the call (borrowed); the request
    // takes no argument (size 0, asserted above), so the kernel dereferences nothing and
    // the 0 passed as the third argument is never used as a pointer.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), cmd.req() as _, 0 as libc::c_ulong) };
    if rc < 0 {
        Err(Error::last_os(cmd.name()))
    } else {
        Ok(())
    }
}

/// One page of `/dev/mnicN` mapped `MAP_SHARED` at a given offset (spec §13).
///
/// # Invariants
/// `ptr` is the start of a live shared mapping of one 4096-byte page that this value
/// owns and unmaps on drop (in the process that mapped it).
#[derive(Debug)]
struct DevicePage {
    ptr: NonNull<u8>,
    /// The process that mapped it: the driver marks the mapping "do not copy on fork", so in
    /// a forked child the address holds whatever the child maps there, never this page.
    owner: i32,
}

/// Size of every page mapped from the device file.
const DEVICE_PAGE: usize = 4096;
const _: () = assert!(abi::DOORBELL_PAGE_SIZE as usize == DEVICE_PAGE);
const _: () = assert!(abi::SHADOW_PAGE_SIZE as usize == DEVICE_PAGE);

impl DevicePage {
    fn map(fd: BorrowedFd<'_>, offset: u64, prot: i32, what: &'static str) -> Result<Self> {
        let offset = libc::off_t::try_from(offset).map_err(|_| Error::InvalidInput(what))?;
        // SAFETY: a fresh mapping chosen by the kernel (addr NULL), of a device file we
        // hold open; it overlaps no Rust object. The result is checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                DEVICE_PAGE,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                offset,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Error::last_os(what));
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or(Error::InvalidInput("mmap returned NULL"))?;
        Ok(Self {
            ptr,
            owner: getpid(),
        })
    }

    /// The aligned 32-bit word at byte `offset` (< 4096, a multiple of 4).
    fn word(&self, offset: usize) -> *mut u32 {
        debug_assert!(offset < DEVICE_PAGE && offset.is_multiple_of(4));
        self.ptr.as_ptr().wrapping_add(offset).cast::<u32>()
    }
}

impl Drop for DevicePage {
    fn drop(&mut self) {
        // In a forked child the page was never there (not copied at fork): unmapping the
        // address would unmap whatever the child put there since.
        if getpid() != self.owner {
            return;
        }
        // SAFETY: by the invariant the mapping is live and owned by us (we are the process
        // that mapped it); nothing else refers to it once we are dropped.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), DEVICE_PAGE) };
    }
}

/// The context's doorbell page, mapped with `mmap(offset 0, 4096, PROT_WRITE,
/// MAP_SHARED)` (spec §4, §13).
#[derive(Debug)]
pub(crate) struct DoorbellPage(DevicePage);

impl DoorbellPage {
    /// Maps the doorbell page of the context open on `fd`.
    pub(crate) fn map(fd: BorrowedFd<'_>) -> Result<Self> {
        DevicePage::map(fd, 0, libc::PROT_WRITE, "mmap doorbell").map(Self)
    }

    /// Stores `tail` to `WQ_TAIL` with one 32-bit write.
    pub(crate) fn ring(&self, tail: u32) {
        // Descriptor stores must be visible to the device before the doorbell.
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        let reg = self.0.word(abi::reg::DB_WQ_TAIL as usize);
        // SAFETY: `reg` lies inside the live doorbell mapping (DevicePage invariant;
        // DB_WQ_TAIL = 0 < 4096) and is 4-byte aligned (page aligned base); a volatile
        // store makes exactly one 32-bit MMIO write, which the device traps.
        unsafe { std::ptr::write_volatile(reg, tail.to_le()) };
    }
}

/// The context's shadow page (spec §4a), mapped with `mmap(offset
/// MMAP_SHADOW_OFFSET, 4096, PROT_READ | PROT_WRITE, MAP_SHARED)` after
/// `MNIC_IOC_SHADOW`.
///
/// It is ordinary guest memory that the driver allocated for this context: the device
/// reads `tail` and writes `polling` there by physical address (no translation, no
/// fault). Rust never holds a reference to it other than the two `AtomicU32`s of
/// [`words`](Self::words), so the device's writes from another process are just
/// another thread's atomic stores.
#[derive(Debug)]
pub(crate) struct ShadowPage(DevicePage);

impl ShadowPage {
    /// Maps the shadow page of the context open on `fd`.
    pub(crate) fn map(fd: BorrowedFd<'_>) -> Result<Self> {
        DevicePage::map(
            fd,
            abi::MMAP_SHADOW_OFFSET,
            libc::PROT_READ | libc::PROT_WRITE,
            "mmap shadow page",
        )
        .map(Self)
    }

    /// Its `tail` and `polling` words.
    pub(crate) fn words(&self) -> Words<'_> {
        let tail = self.0.word(abi::Shadow::TAIL_OFFSET);
        let polling = self.0.word(abi::Shadow::POLLING_OFFSET);
        // SAFETY: both words lie inside the live, readable and writable mapping (DevicePage
        // invariant; offsets 0 and 4 of a page-aligned page, so 4-byte aligned), which
        // outlives the returned borrows of `self`. The page is only ever accessed
        // atomically (here, and by the device with 32-bit accesses), never through a
        // non-atomic Rust reference.
        unsafe {
            Words {
                tail: AtomicU32::from_ptr(tail),
                polling: AtomicU32::from_ptr(polling),
            }
        }
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
        let e = command(fd, Command::Sync).unwrap_err();
        assert!(matches!(e, Error::NotSupported { op: "SYNC" }), "{e:?}");
    }

    #[test]
    fn no_argument_requests() {
        assert_eq!(Command::Shadow.req(), 0x0000_b70a);
        assert_eq!(Command::Sync.req(), 0x0000_b70b);
        assert_eq!(ioc_size(Command::Sync.req()), 0);
    }
}
