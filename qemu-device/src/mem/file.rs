//! The host side of the DMA maps: each distinct file the peer shares (a memfd of guest
//! RAM) is checked once and mapped into the device process once, whole, and every DMA map
//! of it points into that one mapping. A map behind an IOMMU is one 4 KiB page; an mmap
//! per map would cost a system call each and run into the process's map count.
//!
//! A mapped file must not shrink under the device: an access to a page past the end of
//! the file is SIGBUS, which would kill the device. So only a memfd sealed against
//! shrinking (`F_SEAL_SHRINK`, which QEMU's `memory-backend-memfd` sets by default) is
//! taken, sealed here when the memfd allows it, and only a range the file holds.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Weak};

use vm_memory::{FileOffset, MmapRegion, VolatileMemory, VolatileSlice};

use crate::mem::error::MapError;

/// Most distinct files mapped at once (superseded mappings still in use included).
pub const MAX_FILES: usize = 64;

/// A whole file (or anonymous memory) mapped into the device process.
pub struct FileMap {
    region: MmapRegion<()>,
    /// Mapped with `PROT_WRITE` (a file opened read-only is mapped read-only).
    writable: bool,
}

impl FileMap {
    /// Anonymous memory of `size` bytes (unit tests, benches, the fuzz driver).
    pub fn anonymous(size: usize) -> Result<Arc<Self>, MapError> {
        Ok(Arc::new(FileMap {
            region: MmapRegion::new(size)?,
            writable: true,
        }))
    }

    /// Size of the mapping.
    pub fn len(&self) -> u64 {
        self.region.size() as u64
    }

    /// Whether the mapping is empty (never: a zero-length file is refused).
    pub fn is_empty(&self) -> bool {
        self.region.size() == 0
    }

    /// The bytes `[offset, offset + len)` of the mapping (`None` past its end).
    #[inline]
    pub fn slice(&self, offset: u64, len: usize) -> Option<VolatileSlice<'_>> {
        let offset = usize::try_from(offset).ok()?;
        self.region.get_slice(offset, len).ok()
    }
}

/// Identity of a file: what makes two fds of one memfd the same mapping.
type FileId = (u64, u64);

/// The mappings of the files the peer shared, found again by file identity.
#[derive(Default)]
pub struct Files {
    by_id: HashMap<FileId, Weak<FileMap>>,
    /// Every mapping handed out, to bound how many are alive.
    all: Vec<Weak<FileMap>>,
}

/// Makes sure `file` cannot shrink: its seals include `F_SEAL_SHRINK`, added here if
/// the file allows it. Only memfds (and other shmem files created sealable) do.
fn seal_against_shrinking(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl(F_GET_SEALS) on an fd we own; it touches no memory of ours.
    let seals = unsafe { libc::fcntl(fd, libc::F_GET_SEALS) };
    if seals < 0 {
        return Err(io::Error::last_os_error());
    }
    if seals & libc::F_SEAL_SHRINK != 0 {
        return Ok(());
    }
    // SAFETY: fcntl(F_ADD_SEALS) with an int argument on an fd we own.
    if unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, libc::F_SEAL_SHRINK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Maps all `len` bytes of `file`, writable if the file allows it.
fn map_whole(file: File, len: u64) -> Result<FileMap, MapError> {
    let size = usize::try_from(len).map_err(|_| MapError::TooLarge)?;
    let build = |file: File, prot| {
        MmapRegion::build(
            Some(FileOffset::new(file, 0)),
            size,
            prot,
            libc::MAP_SHARED | libc::MAP_NORESERVE,
        )
    };
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let ro_file = file.try_clone().map_err(MapError::Shrinkable)?;
    match build(file, rw) {
        Ok(region) => Ok(FileMap {
            region,
            writable: true,
        }),
        // An fd opened read-only: only read-only DMA maps can use it.
        Err(_) => Ok(FileMap {
            region: build(ro_file, libc::PROT_READ)?,
            writable: false,
        }),
    }
}

impl Files {
    /// The mapping of `file` that holds `[offset, offset + size)` (writable if `write`):
    /// the one already made for the same file when it does, else a new one of the whole
    /// file (which later maps of the file then use). Checks the file first: sealed
    /// against shrinking, and holding the range.
    pub fn get(
        &mut self,
        file: File,
        offset: u64,
        size: u64,
        write: bool,
    ) -> Result<Arc<FileMap>, MapError> {
        // Sealed first, measured second: the size cannot shrink in between.
        seal_against_shrinking(&file).map_err(MapError::Shrinkable)?;
        let meta = file.metadata().map_err(MapError::Shrinkable)?;
        let file_len = meta.len();
        let end = offset.checked_add(size);
        if end.is_none_or(|end| end > file_len) {
            return Err(MapError::Short {
                offset,
                size,
                len: file_len,
            });
        }
        let end = end.unwrap_or(u64::MAX);
        let id = (meta.dev(), meta.ino());
        if let Some(fm) = self.by_id.get(&id).and_then(Weak::upgrade) {
            if fm.len() >= end && (fm.writable || !write) {
                return Ok(fm);
            }
        }
        self.all.retain(|w| w.strong_count() > 0);
        self.by_id.retain(|_, w| w.strong_count() > 0);
        if self.all.len() >= MAX_FILES {
            return Err(MapError::Full(MAX_FILES));
        }
        let fm = Arc::new(map_whole(file, file_len)?);
        if write && !fm.writable {
            return Err(MapError::ReadOnlyFile);
        }
        self.by_id.insert(id, Arc::downgrade(&fm));
        self.all.push(Arc::downgrade(&fm));
        Ok(fm)
    }

    /// Number of file mappings alive (held by a map or a view).
    pub fn alive(&self) -> usize {
        self.all.iter().filter(|w| w.strong_count() > 0).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::memfd::memfd;

    #[test]
    fn one_mapping_per_file() {
        let fd = memfd(0x10000);
        let mut files = Files::default();
        let a = files
            .get(File::from(fd.try_clone().unwrap()), 0, 0x1000, true)
            .unwrap();
        let b = files
            .get(File::from(fd.try_clone().unwrap()), 0x8000, 0x1000, false)
            .unwrap();
        assert!(
            Arc::ptr_eq(&a, &b),
            "a second fd of the same memfd re-uses the mapping"
        );
        let other = files
            .get(File::from(memfd(0x1000)), 0, 0x1000, true)
            .unwrap();
        assert!(!Arc::ptr_eq(&a, &other));
        assert_eq!(files.alive(), 2);
        drop((a, b));
        assert_eq!(files.alive(), 1, "a mapping goes with its last user");
        assert!(matches!(
            files.get(File::from(fd), 0xf000, 0x2000, true),
            Err(MapError::Short { .. })
        ));
    }
}
