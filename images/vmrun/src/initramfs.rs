//! Writes newc cpio archives: the cached base initramfs, and the small per-run archive
//! that the kernel unpacks on top of it (Linux accepts concatenated cpio archives, so a
//! run's command is added without rebuilding the base image).

use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::fs;
use std::io::{BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// One file to place in the guest.
#[derive(Debug, Clone)]
pub struct FileSpec {
    /// Where its content comes from.
    pub content: Content,
    /// Absolute path in the guest.
    pub dest: String,
    /// Permission bits.
    pub mode: u32,
}

/// The content of a guest file.
#[derive(Debug, Clone)]
pub enum Content {
    /// Copied from a host file.
    Host(PathBuf),
    /// Given inline.
    Bytes(Vec<u8>),
}

impl FileSpec {
    /// Parses `SRC:DEST[:MODE]` (MODE octal; default: the source's mode).
    pub fn parse(arg: &str) -> Result<Self> {
        let parts: Vec<&str> = arg.split(':').collect();
        let (src, dest, mode) = match parts.as_slice() {
            [src, dest] => (*src, *dest, None),
            [src, dest, mode] => (*src, *dest, Some(*mode)),
            _ => bail!("--file wants SRC:DEST[:MODE], got '{arg}'"),
        };
        if !dest.starts_with('/') {
            bail!("guest path '{dest}' must be absolute");
        }
        let meta = fs::metadata(src).with_context(|| format!("--file source '{src}'"))?;
        let mode = match mode {
            Some(m) => {
                u32::from_str_radix(m, 8).with_context(|| format!("mode '{m}' is not octal"))?
            }
            None => meta.permissions().mode() & 0o7777,
        };
        Ok(Self {
            content: Content::Host(src.into()),
            dest: dest.to_string(),
            mode,
        })
    }
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// Builds an archive; directories leading to every file are created implicitly.
pub struct Archive {
    entries: Vec<Entry>,
    dirs: BTreeSet<String>,
}

enum Entry {
    Dir(String),
    File(String, u32, Content),
    Symlink(String, String),
    CharDev(String, u32, u32, u32),
}

impl Archive {
    /// An empty archive.
    pub fn new() -> Self {
        Self {
            entries: Vec::new(),
            dirs: BTreeSet::new(),
        }
    }

    fn ensure_parents(&mut self, path: &str) {
        let mut prefix = String::new();
        let components: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        for c in &components[..components.len().saturating_sub(1)] {
            prefix.push('/');
            prefix.push_str(c);
            if self.dirs.insert(prefix.clone()) {
                self.entries.push(Entry::Dir(prefix.clone()));
            }
        }
    }

    /// Adds a directory.
    pub fn dir(&mut self, path: &str) {
        self.ensure_parents(path);
        if self.dirs.insert(path.to_string()) {
            self.entries.push(Entry::Dir(path.to_string()));
        }
    }

    /// Adds a file.
    pub fn file(&mut self, spec: FileSpec) {
        self.ensure_parents(&spec.dest);
        self.entries
            .push(Entry::File(spec.dest, spec.mode, spec.content));
    }

    /// Adds a symbolic link.
    pub fn symlink(&mut self, path: &str, target: &str) {
        self.ensure_parents(path);
        self.entries
            .push(Entry::Symlink(path.to_string(), target.to_string()));
    }

    /// Adds a character device node (the console must exist before devtmpfs is mounted).
    pub fn char_dev(&mut self, path: &str, mode: u32, major: u32, minor: u32) {
        self.ensure_parents(path);
        self.entries
            .push(Entry::CharDev(path.to_string(), mode, major, minor));
    }

    /// Writes the archive to `out`.
    pub fn write_to(self, out: &Path) -> Result<()> {
        let f = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
        let mut w = BufWriter::new(f);
        for (ino, entry) in self.entries.into_iter().enumerate() {
            let ino = ino as u32 + 1;
            let (name, mode, data, dev) = match entry {
                Entry::Dir(p) => (p, S_IFDIR | 0o755, Vec::new(), None),
                Entry::Symlink(p, t) => (p, S_IFLNK | 0o777, t.into_bytes(), None),
                Entry::CharDev(p, m, maj, min) => (p, S_IFCHR | m, Vec::new(), Some((maj, min))),
                Entry::File(p, m, Content::Bytes(b)) => (p, S_IFREG | m, b, None),
                Entry::File(p, m, Content::Host(src)) => {
                    let b = fs::read(&src).with_context(|| format!("reading {}", src.display()))?;
                    (p, S_IFREG | m, b, None)
                }
            };
            let size = u32::try_from(data.len()).context("file larger than 4 GiB")?;
            let mut b = cpio::newc::Builder::new(name.trim_start_matches('/'))
                .ino(ino)
                .mode(mode)
                .nlink(1);
            if let Some((maj, min)) = dev {
                b = b.rdev_major(maj).rdev_minor(min);
            }
            let mut fw = b.write(&mut w, size);
            fw.write_all(&data)?;
            fw.finish()?;
        }
        cpio::newc::trailer(&mut w)?;
        w.flush()?;
        Ok(())
    }
}

impl Default for Archive {
    fn default() -> Self {
        Self::new()
    }
}
