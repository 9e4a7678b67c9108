//! [`Error`]: everything that can go wrong while the prototyping driver binds, maps and
//! programs the device.

use std::io;
use std::time::Duration;

/// A failure of the prototyping driver.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A sysfs or device-file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The system's error.
        source: io::Error,
    },
    /// A VFIO operation failed.
    #[error("{what}: {source}")]
    Vfio {
        /// What was being done.
        what: &'static str,
        /// The VFIO wrapper's error.
        source: vfio_ioctls::VfioError,
    },
    /// No PCI function with mnic's vendor and device id.
    #[error("no mnic PCI function ({vendor:04x}:{device:04x}) in /sys/bus/pci/devices")]
    NoDevice {
        /// The vendor id looked for.
        vendor: u16,
        /// The device id looked for.
        device: u16,
    },
    /// The device answered, but not as the spec says it must.
    #[error("device: {0}")]
    Device(String),
    /// The device did not do something in time.
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        waited: Duration,
    },
    /// A work descriptor the device would refuse (spec §11), caught before posting.
    #[error("descriptor refused before posting: {0}")]
    Descriptor(&'static str),
}

/// The prototyping driver's result.
pub type Result<T> = std::result::Result<T, Error>;

/// Wraps an `io::Error` with what was being done.
pub fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// Wraps a VFIO error with what was being done.
pub fn vfio_err(what: &'static str) -> impl FnOnce(vfio_ioctls::VfioError) -> Error {
    move |source| Error::Vfio { what, source }
}
