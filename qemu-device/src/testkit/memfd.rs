//! Guest RAM as QEMU hands it over: a sealed memfd.

use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};

/// A fresh memfd of `size` bytes (zero-filled), sealed as QEMU's `memory-backend-memfd`
/// seals guest RAM by default (against growing, shrinking and further seals), so the
/// device takes it in DMA_MAP. Panics on failure: test use only.
pub fn memfd(size: u64) -> OwnedFd {
    // SAFETY: memfd_create takes a NUL-terminated name and flags and returns a new fd
    // or -1; nothing else is touched.
    let fd = unsafe {
        libc::memfd_create(
            c"mnic-test".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` was just created, is valid and owned by nobody else.
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(size).expect("ftruncate memfd");
    let seals = libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
    // SAFETY: fcntl(F_ADD_SEALS) with an int argument on the fd we own.
    let r = unsafe {
        libc::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            libc::F_ADD_SEALS,
            seals,
        )
    };
    assert_eq!(r, 0, "seal memfd: {}", std::io::Error::last_os_error());
    f.into()
}
