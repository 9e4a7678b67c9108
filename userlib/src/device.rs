//! Finding `/dev/mnicN` devices and opening contexts on them.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::context::Context;
use crate::error::{Error, Result};

/// Directory the device nodes live in.
pub const DEV_DIR: &str = "/dev";
/// Prefix of device node names (`mnic0`, `mnic1`, …).
pub const DEV_PREFIX: &str = "mnic";

/// One mnic device node: its index N and path (`/dev/mnicN`).
///
/// Finding a device opens nothing. Opening one ([`Device::context`],
/// [`Device::open`], [`Device::open_index`]) takes one of the device's hardware
/// contexts, held until the [`Context`] is dropped.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Device {
    index: u32,
    path: PathBuf,
}

/// The index N of a device node named `mnicN` (decimal, no sign, no leading zeros
/// except `mnic0`), or `None` for any other name.
pub fn parse_device_name(name: &str) -> Option<u32> {
    let digits = name.strip_prefix(DEV_PREFIX)?;
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
    {
        return None;
    }
    digits.parse().ok()
}

impl Device {
    /// Every `/dev/mnicN`, sorted by N. An empty list is not an error.
    ///
    /// ```no_run
    /// for dev in mnic::Device::list()? {
    ///     let ctx = dev.context()?;
    ///     println!("{}: {} contexts", dev.path().display(), ctx.info().num_contexts);
    /// }
    /// # Ok::<(), mnic::Error>(())
    /// ```
    ///
    /// # Errors
    /// If `/dev` cannot be read.
    pub fn list() -> Result<Vec<Device>> {
        Self::list_in(Path::new(DEV_DIR))
    }

    /// Every `mnicN` entry of `dir` (not a directory), sorted by N. A missing `dir`
    /// gives an empty list.
    ///
    /// # Errors
    /// If `dir` exists but cannot be read.
    pub fn list_in(dir: &Path) -> Result<Vec<Device>> {
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(Error::Open {
                    path: dir.to_owned(),
                    source,
                })
            }
        };
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|source| Error::Open {
                path: dir.to_owned(),
                source,
            })?;
            let Some(index) = entry.file_name().to_str().and_then(parse_device_name) else {
                continue;
            };
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            out.push(Device {
                index,
                path: entry.path(),
            });
        }
        out.sort();
        Ok(out)
    }

    /// The device `/dev/mnic<n>` (whether or not it exists).
    pub fn from_index(n: u32) -> Device {
        Device {
            index: n,
            path: Path::new(DEV_DIR).join(format!("{DEV_PREFIX}{n}")),
        }
    }

    /// N of `/dev/mnicN`.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The device node.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens a new hardware context on this device.
    ///
    /// # Errors
    /// As [`Device::open`].
    pub fn context(&self) -> Result<Context> {
        Context::open(&self.path)
    }

    /// Opens a new hardware context on the device node `path`.
    ///
    /// # Errors
    /// [`Error::NoDevice`] if `path` does not exist, [`Error::Open`] if it cannot be
    /// opened (for example all contexts are in use), [`Error::NotSupported`] if it is
    /// not an mnic device, [`Error::AbiMismatch`] for a driver of another ABI version.
    pub fn open(path: impl AsRef<Path>) -> Result<Context> {
        Context::open(path.as_ref())
    }

    /// Opens a new hardware context on `/dev/mnic<n>`.
    ///
    /// # Errors
    /// As [`Device::open`].
    pub fn open_index(n: u32) -> Result<Context> {
        Self::from_index(n).context()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(parse_device_name("mnic0"), Some(0));
        assert_eq!(parse_device_name("mnic17"), Some(17));
        for bad in [
            "mnic",
            "mnic01",
            "mnic-1",
            "mnic+1",
            "mnicx",
            "mnic0p1",
            "xmnic0",
            "MNIC0",
            "mnic99999999999",
        ] {
            assert_eq!(parse_device_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn list_in_temp_dir() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["mnic10", "mnic2", "mnic0", "null", "mnicfoo", "mnic01"] {
            fs::write(dir.path().join(n), b"").unwrap();
        }
        fs::create_dir(dir.path().join("mnic5")).unwrap();
        let devs = Device::list_in(dir.path()).unwrap();
        let idx: Vec<u32> = devs.iter().map(Device::index).collect();
        assert_eq!(idx, [0, 2, 10]);
        assert_eq!(devs[1].path(), dir.path().join("mnic2"));
        assert!(Device::list_in(&dir.path().join("missing"))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn from_index_path() {
        assert_eq!(Device::from_index(3).path(), Path::new("/dev/mnic3"));
    }

    #[test]
    fn open_errors() {
        let e = Device::open("/nonexistent/mnic0").unwrap_err();
        assert!(matches!(e, Error::NoDevice(Some(_))), "{e:?}");
        // A file that is not a device: INFO is refused.
        let f = tempfile::NamedTempFile::new().unwrap();
        let e = Device::open(f.path()).unwrap_err();
        assert!(matches!(e, Error::NotSupported { op: "INFO" }), "{e:?}");
    }
}
