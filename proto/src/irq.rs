//! [`Vectors`]: the device's MSI-X vectors as eventfds. VFIO (`VFIO_DEVICE_SET_IRQS`)
//! makes the kernel signal eventfd `i` when the device sends MSI-X message `i`; the
//! driver waits on them with `poll` and counts what arrived.

use std::cell::Cell;
use std::os::fd::AsRawFd;
use std::time::Duration;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::error::{io_err, Result};

/// One eventfd per MSI-X vector, and how many signals each has delivered.
pub struct Vectors {
    fds: Vec<EventFd>,
    seen: Vec<Cell<u64>>,
}

impl Vectors {
    /// `n` fresh non-blocking eventfds.
    pub fn new(n: usize) -> Result<Self> {
        let fds = (0..n)
            .map(|_| EventFd::new(EFD_NONBLOCK).map_err(io_err("eventfd")))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            seen: (0..n).map(|_| Cell::new(0)).collect(),
            fds,
        })
    }

    /// The eventfds, in vector order (for `VFIO_DEVICE_SET_IRQS`).
    pub fn fds(&self) -> Vec<&EventFd> {
        self.fds.iter().collect()
    }

    /// Signals vector `v` has delivered so far (counted when consumed by [`Self::wait`]
    /// or [`Self::take`]).
    pub fn seen(&self, v: u16) -> u64 {
        self.seen[usize::from(v)].get()
    }

    /// Consumes what vector `v` has signalled without waiting; returns whether anything was.
    pub fn take(&self, v: u16) -> bool {
        let v = usize::from(v);
        match self.fds[v].read() {
            Ok(n) => {
                self.seen[v].set(self.seen[v].get() + n);
                true
            }
            Err(_) => false,
        }
    }

    /// Waits up to `timeout` for vector `v`; returns whether it was signalled (and consumes
    /// the signal).
    pub fn wait(&self, v: u16, timeout: Duration) -> Result<bool> {
        if self.take(v) {
            return Ok(true);
        }
        let mut pfd = libc::pollfd {
            fd: self.fds[usize::from(v)].as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd for our own eventfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(io_err("poll on an MSI-X eventfd")(e));
            }
        }
        Ok(self.take(v))
    }
}
