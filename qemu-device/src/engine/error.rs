//! The engine's typed errors, and the one mapping from them to the spec's numbers: the
//! error code and detail of a device error (spec §9 `ERROR` events, §10 `ERROR_CODE`) and
//! the code of a fault (spec §7 `FAULT` events).
//!
//! The engine's jobs return these; only `Core::report` (errors) and `Core::park`
//! (faults) turn them into registers and events.

use mnic_abi::{error, event, DescError};

/// A device error. `Core::report` records it as `ERROR_CODE` (first only),
/// `ERROR_COUNT`, the `ERRORS` counter and an `ERROR` event whose `addr` is
/// [`Self::detail`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// The ring or table registers were refused at enable.
    #[error("ring or table registers refused at enable")]
    BadConfig,
    /// An unknown opcode or a malformed argument of a command.
    #[error("malformed command (value {value:#x})")]
    BadCommand {
        /// The offending opcode or argument.
        value: u64,
    },
    /// A context index out of range, an invalid context entry, a context that cannot
    /// make progress.
    #[error("bad context (value {value:#x})")]
    BadContext {
        /// The context index, or the VA where a disabled context had stopped.
        value: u64,
    },
    /// A malformed translation-table entry on the way to a VA.
    #[error("malformed translation entry for VA {va:#x}")]
    Table {
        /// The VA being translated.
        va: u64,
    },
    /// An access refused because its DMA address is in no DMA map, or is in a read-only
    /// one and the access writes (spec §1b). Counted in `DMA_UNMAPPED` when reported.
    #[error("address {addr:#x} outside the DMA maps")]
    Address {
        /// The VA of the access, or the DMA address the device used.
        addr: u64,
    },
    /// A VA outside the translatable (canonical) range: reported
    /// with the same code as [`Self::Address`], but no DMA address was refused.
    #[error("VA {va:#x} is not canonical")]
    NonCanonical {
        /// The VA.
        va: u64,
    },
    /// RESUME or ABORT of a fault that is not parked.
    #[error("no parked fault with id {id}")]
    BadFaultId {
        /// The id the command named.
        id: u64,
    },
    /// Strict mode: an access through a translation older than an invalidation of it.
    #[error("stale access at VA {va:#x}")]
    StaleAccess {
        /// The VA of the access.
        va: u64,
    },
    /// A work descriptor refused by `WorkDesc::validate` (spec §11).
    #[error("descriptor {tag:#x} refused: {}", .reason.message())]
    BadDescriptor {
        /// The descriptor's tag.
        tag: u64,
        /// Why it was refused.
        reason: DescError,
    },
    /// Strict mode: the oracle saw the invariant violated (spec §8a).
    #[error("oracle violation at VA {va:#x}")]
    OracleViolation {
        /// The VA of the access, or of the leaf that outlived a report.
        va: u64,
    },
}

impl DeviceError {
    /// The spec's error code (`mnic_abi::error`).
    pub fn code(&self) -> u32 {
        match self {
            DeviceError::BadConfig => error::BAD_CONFIG,
            DeviceError::BadCommand { .. } => error::BAD_COMMAND,
            DeviceError::BadContext { .. } => error::BAD_CONTEXT,
            DeviceError::Table { .. } => error::TABLE_ERROR,
            DeviceError::Address { .. } | DeviceError::NonCanonical { .. } => error::ADDRESS_ERROR,
            DeviceError::BadFaultId { .. } => error::BAD_FAULT_ID,
            DeviceError::StaleAccess { .. } => error::STALE_ACCESS,
            DeviceError::BadDescriptor { .. } => error::BAD_DESCRIPTOR,
            DeviceError::OracleViolation { .. } => error::ORACLE_VIOLATION,
        }
    }

    /// The detail the `ERROR` event carries in `addr`.
    pub fn detail(&self) -> u64 {
        match *self {
            DeviceError::BadConfig => 0,
            DeviceError::BadCommand { value } | DeviceError::BadContext { value } => value,
            DeviceError::Table { va }
            | DeviceError::StaleAccess { va }
            | DeviceError::NonCanonical { va }
            | DeviceError::OracleViolation { va } => va,
            DeviceError::Address { addr } => addr,
            DeviceError::BadFaultId { id } => id,
            DeviceError::BadDescriptor { tag, .. } => tag,
        }
    }
}

/// Why an access faulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultCause {
    /// No present leaf for the VA.
    NotPresent,
    /// A write through a leaf without `W`.
    NotWritable,
}

impl FaultCause {
    /// The `FAULT` event's code (`event::FAULT_*`).
    pub fn code(self) -> u32 {
        match self {
            FaultCause::NotPresent => event::FAULT_NOT_PRESENT,
            FaultCause::NotWritable => event::FAULT_NOT_WRITABLE,
        }
    }
}

/// A translation or permission fault: the context parks until RESUME or ABORT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{cause:?} fault at VA {va:#x} (write: {write})")]
pub struct Fault {
    /// The faulting VA.
    pub va: u64,
    /// The access was a write.
    pub write: bool,
    /// What the translation lacked.
    pub cause: FaultCause,
}

/// Why a DMA access of a context was not made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// A translation or permission fault: park.
    #[error(transparent)]
    Fault(#[from] Fault),
    /// A malformed table or an address outside RAM ([`DeviceError::Table`] or
    /// [`DeviceError::Address`]): the access fails.
    #[error(transparent)]
    Failed(#[from] DeviceError),
    /// A stale access or an oracle violation halted the device.
    #[error("the device halted")]
    Halted,
    /// Bus mastering is off: the access was not made. The step ends and the work stays
    /// where it is, to continue when the bit is set again.
    #[error("bus mastering is off")]
    Refused,
}
