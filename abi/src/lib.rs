//! `mnic-abi`: the hardware interface and user ABI of mnic, shared by the device model,
//! the kernel driver and the user library. See `docs/spec.md`.
//!
//! The definitions live in `abi.rs`, which the kernel module also compiles (with
//! `#[path]`), so they cannot drift between the three users. The fabric's packet formats
//! are in `fabric.rs`, which only the device models use.
#![no_std]
#![deny(missing_docs)]

mod abi;
pub use abi::*;

/// The fabric's wire (docs/fabric.md): not part of what the kernel driver compiles.
pub mod fabric;

#[cfg(test)]
mod layout_tests;
