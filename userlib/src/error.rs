//! Errors: what an errno from `/dev/mnicN` or a completion status means (spec §11, §13).

use std::io;
use std::path::PathBuf;

use mnic_abi::completion;

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking to an mnic device.
///
/// The errno values the driver documents (spec §13) get their own variants, named by
/// what they mean for mnic; any other errno is kept as [`Error::Os`]. Every variant that
/// comes from a system call names the operation (`"REGISTER"`, `"WAIT"`, `"open"`, …).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `EINVAL`: the driver refused a malformed argument (reserved field non-zero, bad
    /// flags, zero length, unaligned or wrapping range, queue size out of range).
    #[error("{op}: invalid argument (EINVAL): a flag, length, alignment or size was refused")]
    InvalidArgument {
        /// The operation.
        op: &'static str,
    },
    /// `EFAULT`: the driver could not read or write the argument, or the range is not
    /// mapped in this process.
    #[error("{op}: bad address (EFAULT)")]
    BadAddress {
        /// The operation.
        op: &'static str,
    },
    /// `ENOENT`: the registration handle is unknown to this context.
    #[error("{op}: unknown registration handle (ENOENT)")]
    UnknownHandle {
        /// The operation.
        op: &'static str,
    },
    /// `ENOSPC`: the context holds its maximum number of registrations.
    #[error("{op}: too many registrations on this context (ENOSPC)")]
    TooManyRegistrations {
        /// The operation.
        op: &'static str,
    },
    /// `EBUSY`: the context's queues were already set up.
    #[error("{op}: queues already set up on this context (EBUSY)")]
    QueuesBusy {
        /// The operation.
        op: &'static str,
    },
    /// `ENODEV`: the device is gone (unbound, removed) or halted after a fatal error.
    #[error("{op}: device gone or halted (ENODEV)")]
    DeviceGone {
        /// The operation.
        op: &'static str,
    },
    /// `ETIMEDOUT`: a wait expired before the work completed.
    #[error("{op}: timed out (ETIMEDOUT)")]
    TimedOut {
        /// The operation.
        op: &'static str,
    },
    /// `EINTR`: a signal arrived during a wait; the wait may be repeated.
    #[error("{op}: interrupted by a signal (EINTR)")]
    Interrupted {
        /// The operation.
        op: &'static str,
    },
    /// `ENOTTY`: the file does not understand this ioctl (not an mnic device, or a driver
    /// that predates the request).
    #[error("{op}: not supported by this file (ENOTTY): not an mnic device or an older driver")]
    NotSupported {
        /// The operation.
        op: &'static str,
    },
    /// `EOPNOTSUPP`: the device is not a node of a fabric, so it cannot give a
    /// registration a remote key ([`Access::REMOTE`](crate::Access::REMOTE)).
    #[error("{op}: the device is not a node of a fabric (EOPNOTSUPP)")]
    NoFabric {
        /// The operation.
        op: &'static str,
    },
    /// Any other errno.
    #[error("{op}: {source}")]
    Os {
        /// The operation.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Opening a device file failed.
    #[error("cannot open {}: {source}", path.display())]
    Open {
        /// The device file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// No `/dev/mnicN` device exists (or the requested index does not).
    #[error("no mnic device found{}", match .0 { Some(p) => format!(" at {}", p.display()), None => String::new() })]
    NoDevice(Option<PathBuf>),
    /// The stale-access oracle ([`crate::oracle`]) is not loaded: its module's node
    /// [`crate::oracle::NODE`] does not exist.
    #[error(
        "the stale-access oracle is not loaded: no {} (insmod mnic_oracle.ko, the test module \
         built from tests/kmod/mnic-oracle)",
        crate::oracle::NODE
    )]
    NoOracle,
    /// The driver speaks another user-ABI version than this library.
    #[error("user ABI version mismatch: driver {driver}, library {library}")]
    AbiMismatch {
        /// `MnicInfo::abi_version` reported by the driver.
        driver: u32,
        /// [`mnic_abi::UABI_VERSION`].
        library: u32,
    },
    /// A work descriptor was refused by the library before it reached the device.
    #[error("invalid work descriptor: {0}")]
    InvalidWork(&'static str),
    /// A library-side argument check failed (before any system call).
    #[error("invalid argument: {0}")]
    InvalidInput(&'static str),
    /// Posting would exceed the number of work items that may be outstanding (the
    /// completion queue must have room for every posted item, spec §11).
    #[error("queue full: {outstanding} work items outstanding, limit {limit}")]
    QueueFull {
        /// Items posted and not yet completed.
        outstanding: u32,
        /// Most items that may be outstanding.
        limit: u32,
    },
    /// Work was posted or polled before [`Context::setup_queues`](crate::Context::setup_queues).
    #[error("queues not set up on this context")]
    QueuesNotSetUp,
    /// A blocking wait was asked for with no work outstanding that could wake it
    /// (nothing posted, or only items without [`Work::notify`](crate::Work::notify)).
    #[error("nothing to wait for: no outstanding work item asked for a notification")]
    NothingToWaitFor,
    /// A work item completed with an error status.
    #[error("work item {tag:#x} failed: {error}{}", if *.fault_va != 0 { format!(" at VA {:#x}", .fault_va) } else { String::new() })]
    Work {
        /// The descriptor's tag.
        tag: u64,
        /// What went wrong.
        error: WorkError,
        /// VA of the access that failed, or 0.
        fault_va: u64,
    },
}

impl Error {
    /// Maps an errno returned by operation `op` to its meaning (spec §13).
    pub fn from_errno(op: &'static str, errno: i32) -> Self {
        match errno {
            libc::EINVAL => Error::InvalidArgument { op },
            libc::EFAULT => Error::BadAddress { op },
            libc::ENOENT => Error::UnknownHandle { op },
            libc::ENOSPC => Error::TooManyRegistrations { op },
            libc::EBUSY => Error::QueuesBusy { op },
            libc::ENODEV => Error::DeviceGone { op },
            libc::ETIMEDOUT => Error::TimedOut { op },
            libc::EINTR => Error::Interrupted { op },
            libc::ENOTTY => Error::NotSupported { op },
            libc::EOPNOTSUPP => Error::NoFabric { op },
            _ => Error::Os {
                op,
                source: io::Error::from_raw_os_error(errno),
            },
        }
    }

    /// Maps the current `errno` (after a failed system call) for operation `op`.
    pub(crate) fn last_os(op: &'static str) -> Self {
        Self::from_errno(op, io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }

    /// The errno behind this error, if it came from the kernel.
    pub fn errno(&self) -> Option<i32> {
        Some(match self {
            Error::InvalidArgument { .. } => libc::EINVAL,
            Error::BadAddress { .. } => libc::EFAULT,
            Error::UnknownHandle { .. } => libc::ENOENT,
            Error::TooManyRegistrations { .. } => libc::ENOSPC,
            Error::QueuesBusy { .. } => libc::EBUSY,
            Error::DeviceGone { .. } => libc::ENODEV,
            Error::TimedOut { .. } => libc::ETIMEDOUT,
            Error::Interrupted { .. } => libc::EINTR,
            Error::NotSupported { .. } => libc::ENOTTY,
            Error::NoFabric { .. } => libc::EOPNOTSUPP,
            Error::Os { source, .. } | Error::Open { source, .. } => source.raw_os_error()?,
            _ => return None,
        })
    }

    /// The [`WorkError`] of a failed work item, if this is one.
    pub fn work_error(&self) -> Option<WorkError> {
        match self {
            Error::Work { error, .. } => Some(*error),
            _ => None,
        }
    }

    /// The [`RemoteError`] of a failed PUT or GET, if this is one.
    pub fn remote_error(&self) -> Option<RemoteError> {
        self.work_error()?.remote()
    }

    /// True for errors after which repeating the same call may succeed (`EINTR`,
    /// `ETIMEDOUT`, a full queue).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Interrupted { .. } | Error::TimedOut { .. } | Error::QueueFull { .. }
        )
    }
}

/// Why a work item completed with an error (`Completion::status`, spec §11–§12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WorkError {
    /// The device faulted and the driver could not resolve the fault, so it aborted the
    /// item with `errno` (typically `EFAULT`: the address is not covered by a
    /// registration with the needed access, or is not mapped). Bytes moved before the
    /// fault stay moved.
    #[error("device fault aborted by the driver: {}", errno_text(*.errno))]
    FaultAborted {
        /// The errno the driver gave in its ABORT.
        errno: i32,
    },
    /// The device refused the descriptor (unknown opcode, zero or oversized length,
    /// wrapping range, non-canonical address). Nothing was executed.
    #[error("descriptor refused by the device (BAD_DESCRIPTOR)")]
    BadDescriptor,
    /// The context's translation table was malformed: a driver bug.
    #[error("malformed translation table (TABLE_ERROR): driver bug")]
    TableError,
    /// The context was disabled while the item was queued (fd closing, a descriptor
    /// fetch or completion write that could not be resolved, device reset).
    #[error("context disabled while the item was queued (CTX_DISABLED)")]
    ContextDisabled,
    /// A PUT or GET failed at or on the way to the target (completion statuses 5..=12).
    #[error("remote access failed: {0}")]
    Remote(RemoteError),
    /// A status this library does not know.
    #[error("unknown completion status {0}")]
    Unknown(u16),
}

/// Why a PUT or GET failed (spec §11 statuses 5..=12, `docs/fabric.md` 14.13). The
/// first four come from the target's checks, made before it translates anything, so
/// nothing was written there; bytes already confirmed before any other failure stay
/// written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// `REMOTE_BAD_KEY`: the target context has no live key of that value (never
    /// given, or deregistered).
    #[error("the target has no such remote key (REMOTE_BAD_KEY)")]
    BadKey,
    /// `REMOTE_BAD_RANGE`: the remote range is not inside the key's registration.
    #[error("remote range outside the key's registration (REMOTE_BAD_RANGE)")]
    BadRange,
    /// `REMOTE_BAD_ACCESS`: the key does not allow the access (write for PUT, read for
    /// GET).
    #[error("the remote key does not allow this access (REMOTE_BAD_ACCESS)")]
    BadAccess,
    /// `REMOTE_NO_CONTEXT`: the target context is not enabled (its process closed it,
    /// or it never existed).
    #[error("the target context is not enabled (REMOTE_NO_CONTEXT)")]
    NoContext,
    /// `REMOTE_FAULT_ABORTED`: the target's driver aborted the fault the access raised
    /// there, with `errno` (e.g. `EFAULT`: the target unmapped or write-protected the
    /// page).
    #[error("the target's driver aborted the fault: {}", errno_text(*.errno))]
    FaultAborted {
        /// The target driver's errno.
        errno: i32,
    },
    /// `RNR_RETRY_EXCEEDED`: the target answered "not ready" too many times in a row for
    /// one packet (its fault was not resolved in time).
    #[error("the target stayed not ready (RNR_RETRY_EXCEEDED)")]
    RnrRetryExceeded,
    /// `PEER_GONE`: the target node stopped answering, restarted, or did not answer in
    /// time.
    #[error("the peer is gone (PEER_GONE)")]
    PeerGone,
    /// `NO_ROUTE`: this device is not a node of a fabric, or the target node is not one
    /// of its peers.
    #[error("no route to the target node (NO_ROUTE)")]
    NoRoute,
}

impl RemoteError {
    /// Every variant with its status, for mapping both ways.
    const STATUSES: [(u16, Option<RemoteError>); 8] = [
        (completion::REMOTE_BAD_KEY, Some(RemoteError::BadKey)),
        (completion::REMOTE_BAD_RANGE, Some(RemoteError::BadRange)),
        (completion::REMOTE_BAD_ACCESS, Some(RemoteError::BadAccess)),
        (completion::REMOTE_NO_CONTEXT, Some(RemoteError::NoContext)),
        (completion::REMOTE_FAULT_ABORTED, None),
        (
            completion::RNR_RETRY_EXCEEDED,
            Some(RemoteError::RnrRetryExceeded),
        ),
        (completion::PEER_GONE, Some(RemoteError::PeerGone)),
        (completion::NO_ROUTE, Some(RemoteError::NoRoute)),
    ];

    /// Decodes a remote status (`detail` is the errno of `REMOTE_FAULT_ABORTED`);
    /// `None` for any other status.
    pub fn from_status(status: u16, detail: u32) -> Option<Self> {
        if status == completion::REMOTE_FAULT_ABORTED {
            return Some(RemoteError::FaultAborted {
                errno: errno_from_detail(detail),
            });
        }
        Self::STATUSES
            .iter()
            .find(|(s, _)| *s == status)
            .and_then(|(_, e)| *e)
    }

    /// The raw completion status.
    pub fn status(&self) -> u16 {
        match self {
            RemoteError::FaultAborted { .. } => completion::REMOTE_FAULT_ABORTED,
            other => Self::STATUSES
                .iter()
                .find(|(_, e)| *e == Some(*other))
                .map_or(completion::REMOTE_FAULT_ABORTED, |(s, _)| *s),
        }
    }

    /// True if the target refused the access before touching any memory (bad key,
    /// range, access or context): repeating it unchanged fails the same way.
    pub fn refused_by_target(&self) -> bool {
        matches!(
            self,
            RemoteError::BadKey
                | RemoteError::BadRange
                | RemoteError::BadAccess
                | RemoteError::NoContext
        )
    }
}

fn errno_from_detail(detail: u32) -> i32 {
    i32::try_from(detail).unwrap_or(i32::MAX)
}

fn errno_text(errno: i32) -> String {
    format!("{} (errno {errno})", io::Error::from_raw_os_error(errno))
}

impl WorkError {
    /// Decodes a completion's `status` and `detail`; `None` for `OK`.
    pub fn from_status(status: u16, detail: u32) -> Option<Self> {
        Some(match status {
            completion::OK => return None,
            completion::FAULT_ABORTED => WorkError::FaultAborted {
                errno: errno_from_detail(detail),
            },
            completion::BAD_DESCRIPTOR => WorkError::BadDescriptor,
            completion::TABLE_ERROR => WorkError::TableError,
            completion::CTX_DISABLED => WorkError::ContextDisabled,
            other => match RemoteError::from_status(other, detail) {
                Some(r) => WorkError::Remote(r),
                None => WorkError::Unknown(other),
            },
        })
    }

    /// The raw status code.
    pub fn status(&self) -> u16 {
        match self {
            WorkError::FaultAborted { .. } => completion::FAULT_ABORTED,
            WorkError::BadDescriptor => completion::BAD_DESCRIPTOR,
            WorkError::TableError => completion::TABLE_ERROR,
            WorkError::ContextDisabled => completion::CTX_DISABLED,
            WorkError::Remote(r) => r.status(),
            WorkError::Unknown(s) => *s,
        }
    }

    /// The [`RemoteError`], for a failed PUT or GET.
    pub fn remote(&self) -> Option<RemoteError> {
        match self {
            WorkError::Remote(r) => Some(*r),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping_round_trips() {
        let table = [
            (libc::EINVAL, "InvalidArgument"),
            (libc::EFAULT, "BadAddress"),
            (libc::ENOENT, "UnknownHandle"),
            (libc::ENOSPC, "TooManyRegistrations"),
            (libc::EBUSY, "QueuesBusy"),
            (libc::ENODEV, "DeviceGone"),
            (libc::ETIMEDOUT, "TimedOut"),
            (libc::EINTR, "Interrupted"),
            (libc::ENOTTY, "NotSupported"),
            (libc::EOPNOTSUPP, "NoFabric"),
        ];
        for (errno, name) in table {
            let e = Error::from_errno("TEST", errno);
            assert!(format!("{e:?}").starts_with(name), "{errno} -> {e:?}");
            assert_eq!(e.errno(), Some(errno));
            assert!(e.to_string().starts_with("TEST: "), "{e}");
        }
        let other = Error::from_errno("TEST", libc::EPERM);
        assert!(matches!(other, Error::Os { op: "TEST", .. }));
        assert_eq!(other.errno(), Some(libc::EPERM));
        assert!(Error::QueuesNotSetUp.errno().is_none());
    }

    #[test]
    fn transient_errors() {
        assert!(Error::from_errno("WAIT", libc::EINTR).is_transient());
        assert!(Error::from_errno("WAIT", libc::ETIMEDOUT).is_transient());
        assert!(!Error::from_errno("WAIT", libc::ENODEV).is_transient());
    }

    #[test]
    fn completion_status_mapping() {
        assert_eq!(WorkError::from_status(completion::OK, 0), None);
        let e = WorkError::from_status(completion::FAULT_ABORTED, libc::EFAULT as u32).unwrap();
        assert_eq!(
            e,
            WorkError::FaultAborted {
                errno: libc::EFAULT
            }
        );
        assert!(e.to_string().contains("errno 14"), "{e}");
        for (s, w) in [
            (completion::BAD_DESCRIPTOR, WorkError::BadDescriptor),
            (completion::TABLE_ERROR, WorkError::TableError),
            (completion::CTX_DISABLED, WorkError::ContextDisabled),
            (77, WorkError::Unknown(77)),
        ] {
            let got = WorkError::from_status(s, 0).unwrap();
            assert_eq!(got, w);
            assert_eq!(got.status(), s);
        }
    }

    #[test]
    fn remote_statuses_map_to_typed_errors() {
        let table = [
            (completion::REMOTE_BAD_KEY, RemoteError::BadKey),
            (completion::REMOTE_BAD_RANGE, RemoteError::BadRange),
            (completion::REMOTE_BAD_ACCESS, RemoteError::BadAccess),
            (completion::REMOTE_NO_CONTEXT, RemoteError::NoContext),
            (
                completion::REMOTE_FAULT_ABORTED,
                RemoteError::FaultAborted {
                    errno: libc::EFAULT,
                },
            ),
            (
                completion::RNR_RETRY_EXCEEDED,
                RemoteError::RnrRetryExceeded,
            ),
            (completion::PEER_GONE, RemoteError::PeerGone),
            (completion::NO_ROUTE, RemoteError::NoRoute),
        ];
        // Statuses 5..=12, each once.
        let mut seen: Vec<u16> = table.iter().map(|(s, _)| *s).collect();
        seen.sort_unstable();
        assert_eq!(seen, (5..=12).collect::<Vec<u16>>());
        for (status, remote) in table {
            let w = WorkError::from_status(status, libc::EFAULT as u32).unwrap();
            assert_eq!(w, WorkError::Remote(remote), "status {status}");
            assert_eq!(w.status(), status);
            assert_eq!(w.remote(), Some(remote));
            let e = Error::Work {
                tag: 1,
                error: w,
                fault_va: 0,
            };
            assert_eq!(e.remote_error(), Some(remote));
        }
        let aborted = WorkError::from_status(completion::REMOTE_FAULT_ABORTED, 13).unwrap();
        assert_eq!(
            aborted,
            WorkError::Remote(RemoteError::FaultAborted {
                errno: libc::EACCES
            })
        );
        assert!(aborted.to_string().contains("errno 13"), "{aborted}");
        assert!(RemoteError::BadKey.refused_by_target());
        assert!(!RemoteError::PeerGone.refused_by_target());
        assert_eq!(RemoteError::from_status(completion::FAULT_ABORTED, 0), None);
        // A truncated receive is not a failure: `WorkDone` decodes RECV_TRUNCATED as a
        // received message, so it is no `WorkError` either.
        assert_eq!(
            WorkError::from_status(completion::RECV_TRUNCATED, 0),
            Some(WorkError::Unknown(completion::RECV_TRUNCATED))
        );
        assert_eq!(WorkError::BadDescriptor.remote(), None);
    }

    #[test]
    fn work_error_display_names_fault_va() {
        let e = Error::Work {
            tag: 7,
            error: WorkError::BadDescriptor,
            fault_va: 0x1000,
        };
        assert!(e.to_string().contains("0x1000"), "{e}");
        let e = Error::Work {
            tag: 7,
            error: WorkError::BadDescriptor,
            fault_va: 0,
        };
        assert!(!e.to_string().contains(" at VA"), "{e}");
    }
}
