//! userfaultfd: a range whose missing-page and write-protect faults belong to user space.
//! The driver never hands a device fault to the process's handler (its fault thread must not
//! wait for user space): on such a range the device uses the pages that are there and gets
//! EFAULT for the rest, while write-protection, like mprotect, reaches the device tables
//! before the ioctl returns.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use mnic::Access;

use crate::util::*;

/// `UFFD_API` and the ioctls of `<linux/userfaultfd.h>` (not in the libc crate).
const UFFD_API: u64 = 0xaa;
const UFFDIO: u32 = 0xaa;
const REGISTER_MODE_MISSING: u64 = 1 << 0;
const REGISTER_MODE_WP: u64 = 1 << 1;
const WRITEPROTECT_MODE_WP: u64 = 1 << 0;

#[repr(C)]
#[derive(Default)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioWriteprotect {
    range: UffdioRange,
    mode: u64,
}

const fn iowr<T>(nr: u32) -> u32 {
    linux_ioc(3, UFFDIO, nr, size_of::<T>())
}

/// A userfaultfd over one range of this process.
struct Uffd {
    fd: OwnedFd,
    range: UffdioRange,
}

impl Uffd {
    /// Opens a userfaultfd and registers `[va, va+len)` for missing-page and write-protect
    /// faults.
    fn register(va: u64, len: usize) -> Result<Uffd, String> {
        // SAFETY: userfaultfd(2) takes flags only and returns a new descriptor or -1.
        let fd =
            unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
        check(fd >= 0, || os_err("userfaultfd (CONFIG_USERFAULTFD?)"))?;
        // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let mut api = UffdioApi {
            api: UFFD_API,
            ..Default::default()
        };
        raw_ioctl(&fd, iowr::<UffdioApi>(0x3f), &mut api)
            .map_err(|err| format!("UFFDIO_API: errno {err}"))?;
        let range = UffdioRange {
            start: va,
            len: len as u64,
        };
        let mut reg = UffdioRegister {
            range,
            mode: REGISTER_MODE_MISSING | REGISTER_MODE_WP,
            ioctls: 0,
        };
        raw_ioctl(&fd, iowr::<UffdioRegister>(0x00), &mut reg)
            .map_err(|err| format!("UFFDIO_REGISTER: errno {err}"))?;
        Ok(Uffd { fd, range })
    }

    /// Resolves missing pages at `dst` with a copy of `src` (UFFDIO_COPY).
    fn copy(&self, dst: u64, src: &[u8]) -> Result<(), String> {
        let mut c = UffdioCopy {
            dst,
            src: src.as_ptr() as u64,
            len: src.len() as u64,
            ..Default::default()
        };
        raw_ioctl(&self.fd, iowr::<UffdioCopy>(0x03), &mut c)
            .map_err(|err| format!("UFFDIO_COPY: errno {err}"))?;
        check(c.copy == src.len() as i64, || {
            format!("UFFDIO_COPY copied {}", c.copy)
        })
    }

    /// Write-protects (or unprotects) `[va, va+len)`.
    fn write_protect(&self, va: u64, len: usize, on: bool) -> Result<(), String> {
        let mut w = UffdioWriteprotect {
            range: UffdioRange {
                start: va,
                len: len as u64,
            },
            mode: if on { WRITEPROTECT_MODE_WP } else { 0 },
        };
        raw_ioctl(&self.fd, iowr::<UffdioWriteprotect>(0x06), &mut w)
            .map_err(|err| format!("UFFDIO_WRITEPROTECT: errno {err}"))?;
        Ok(())
    }

    /// Fails if a fault message is queued: no device access may become user space's fault.
    fn no_message(&self) -> Result<(), String> {
        let mut msg = [0u8; 32];
        // SAFETY: reads at most 32 bytes into a local buffer (one uffd_msg).
        let n = unsafe { libc::read(self.fd.as_raw_fd(), msg.as_mut_ptr().cast(), msg.len()) };
        check(n < 0 && errno() == libc::EAGAIN, || {
            format!("a userfaultfd message was queued (read returned {n})")
        })
    }

    fn unregister(self) -> Result<(), String> {
        let mut r = self.range;
        raw_ioctl(
            &self.fd,
            linux_ioc(2, UFFDIO, 0x01, size_of::<UffdioRange>()),
            &mut r,
        )
        .map_err(|err| format!("UFFDIO_UNREGISTER: errno {err}"))?;
        Ok(())
    }
}

/// A registered range under userfaultfd (missing + write-protect): a device read of a missing
/// page is refused with EFAULT, maps nothing and queues no message for the handler; pages the
/// handler installs (UFFDIO_COPY) are what the device reads and writes; write-protecting them
/// removes the device's write access before UFFDIO_WRITEPROTECT returns and a device write is
/// then refused with memory unchanged; once the range is unregistered the device faults pages
/// in as usual. No kernel warning on the way (a debug kernel dumps a stack if a driver takes
/// such a fault without being able to retry).
pub fn userfaultfd_missing_wp() -> CaseResult {
    let win = KlogWindow::new("userfaultfd_missing_wp", false)?;
    let ctx = ctxq()?;
    let n = 8;
    let len = n * PAGE;
    let m = Map::anon(len)?;
    let uffd = Uffd::register(m.va(), len)?;
    let _r = reg_raw(&ctx, m.va(), len, Access::READ_WRITE)?;
    let errno = want_abort(
        dev_read(&ctx, m.va(), PAGE),
        &[libc::EFAULT],
        "device read of a missing userfaultfd page",
    )?;
    check(query(&ctx, m.va(), len)?.valid() == 0, || {
        "a missing userfaultfd page got a device entry".into()
    })?;
    uffd.no_message()?;
    // The handler's answer: pages 0..4 copied in.
    uffd.copy(m.va(), &pattern(0, 4 * PAGE, 80))?;
    is_pattern(
        &dev_read(&ctx, m.va(), 4 * PAGE).map_err(e("device read of copied pages"))?,
        0,
        80,
    )?;
    dev_write(&ctx, m.at(PAGE), &pattern(PAGE, PAGE, 81)).map_err(e("device write"))?;
    m.check(PAGE, PAGE, 81)?;
    let writable = query(&ctx, m.va(), 4 * PAGE)?.writable;
    check(writable > 0, || "no writable device entry before WP".into())?;
    uffd.write_protect(m.va(), 4 * PAGE, true)?;
    let q = query(&ctx, m.va(), 4 * PAGE)?;
    check(q.writable == 0, || {
        format!("{q:?} after UFFDIO_WRITEPROTECT: the device can still write")
    })?;
    want_abort(
        dev_write(&ctx, m.at(2 * PAGE), &pattern(2 * PAGE, PAGE, 82)),
        &[libc::EFAULT],
        "device write to a write-protected page",
    )?;
    m.check(2 * PAGE, PAGE, 80)
        .map_err(|w| format!("refused write changed memory: {w}"))?;
    is_pattern(
        &dev_read(&ctx, m.at(2 * PAGE), PAGE).map_err(e("device read of a WP page"))?,
        2 * PAGE,
        80,
    )?;
    uffd.no_message()?;
    // Unprotected and written by the CPU (a writable PTE again), the device may write.
    uffd.write_protect(m.va(), 4 * PAGE, false)?;
    m.fill(2 * PAGE, PAGE, 83);
    dev_write(&ctx, m.at(2 * PAGE), &pattern(2 * PAGE, PAGE, 84)).map_err(e("write after WP"))?;
    m.check(2 * PAGE, PAGE, 84)?;
    uffd.unregister()?;
    // No longer armed: a missing page faults in (zero-filled) like anywhere else.
    is_zero(
        &dev_read(&ctx, m.at(6 * PAGE), PAGE).map_err(e("read after unregister"))?,
        "a never-touched page",
    )?;
    win.clean()?;
    note(format!(
        "missing page refused with errno {errno}; {writable} writable entries before WP, none \
         after"
    ));
    no_stale(&ctx)?;
    Ok(Outcome::Pass)
}
