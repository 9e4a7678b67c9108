//! Why a device access or a DMA_MAP/DMA_UNMAP was refused.

use std::io;

/// A guest address the device may not access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("DMA address {addr:#x} is in no DMA map")]
pub struct AddrError {
    /// The first offending address (or the start of the refused range).
    pub addr: u64,
}

/// Why a DMA_MAP could not be mapped.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// Size or offset do not fit the host.
    #[error("map does not fit the host address space")]
    TooLarge,
    /// mmap of the fd failed.
    #[error("mmap: {0}")]
    Mmap(#[from] vm_memory::mmap::MmapRegionError),
    /// The range overlaps a map or range already recorded.
    #[error("overlaps an existing map")]
    Overlap,
    /// The fd is not a memfd sealed against shrinking, and cannot be sealed (a memfd
    /// created without `MFD_ALLOW_SEALING`, a plain file, not a file at all): it could
    /// shrink under the device.
    #[error("not a memfd that is or can be sealed against shrinking: {0}")]
    Shrinkable(io::Error),
    /// `offset + size` lies beyond the end of the file.
    #[error("file offset {offset:#x} + size {size:#x} is beyond the end of the file ({len:#x})")]
    Short {
        /// DMA_MAP offset.
        offset: u64,
        /// DMA_MAP size.
        size: u64,
        /// The file's size.
        len: u64,
    },
    /// A writable map of a file the device can only map read-only.
    #[error("writable map of a file opened read-only")]
    ReadOnlyFile,
    /// The device keeps no more of this kind (`MAX_MAPS`, `MAX_FILES`, `MAX_NO_FD`).
    #[error("already {0} of them")]
    Full(usize),
}

/// Why a DMA_UNMAP was refused (nothing was removed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the map at {start:#x} (size {len:#x}) crosses an edge of the range")]
pub struct UnmapError {
    /// Start of the map that would be cut.
    pub start: u64,
    /// Its size.
    pub len: u64,
}
