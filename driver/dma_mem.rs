// SPDX-License-Identifier: GPL-2.0
//! One-word access to coherent DMA memory the device reads and writes concurrently: the
//! translation tables, the command and event rings, the context table and the sync word.
//!
//! Every access is one volatile 64-bit load or store, so the device never sees a torn entry
//! and the compiler never merges, splits or elides an access the device depends on.

use kernel::{dma::Coherent, prelude::*};

/// One 64-bit load from DMA memory the device may write concurrently (a volatile access).
pub(crate) fn load(mem: &Coherent<[u64]>, index: usize) -> Result<u64> {
    Ok(kernel::io::io_read!(mem, [try: index]))
}

/// One 64-bit store to DMA memory the device may read concurrently: the device sees either
/// the old or the new entry, never a torn one.
pub(crate) fn store(mem: &Coherent<[u64]>, index: usize, value: u64) -> Result {
    kernel::io::io_write!(mem, [try: index], value);
    Ok(())
}
