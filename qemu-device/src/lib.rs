//! `mnic-device`: the mnic device model, served to QEMU over vfio-user.
//!
//! Why an own server loop instead of crates.io `vfio_user` 0.1.7: that crate replies
//! to an unknown or out-of-range request before reading its payload (the stream then
//! desyncs), unwraps the client's version string (a panic reachable from the socket)
//! and allocates whatever size a REGION_READ asks for. The protocol is a 16-byte
//! header and a dozen messages, so owning the loop (on `libc` for SCM_RIGHTS and
//! mmap) is smaller than guarding every gap of the crate.
#![deny(missing_docs)]

pub mod config;
pub mod control;
pub mod counters;
pub mod engine;
pub mod fabric;
pub mod mem;
pub mod mmio;
pub mod oracle;
pub mod oracle_op;
pub mod proto;
pub mod server;
pub mod shared;
pub mod stale;
pub mod supervisor;
/// Test hooks: only with the `testkit` feature (and in the crate's own unit tests).
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod translate;
