//! Arming the stale-access oracle: a testing aid for people who test memory management
//! (the driver, or the kernel's mm under it) with mnic.
//!
//! **What the oracle is.** mnic's invariant (spec §7) is that once the kernel's invalidate
//! callback returns, the device never touches the old page again. The device's own
//! stale-access checker judges accesses only against the invalidations the driver posts, so a
//! driver that forgets one fools it. The oracle is a second judge that does not trust the
//! driver (spec §8a): a separate C kernel module, `mnic_oracle` (built from
//! `tests/kmod/mnic-oracle`, node [`NODE`]), registers a plain `mmu_notifier` of its own on the
//! address space of the process that arms it, and reports every invalidation of that address
//! space to the device after the driver's callbacks have returned. From each report on, the
//! device flags any access through a translation taken before it, and any leaf the driver left
//! in the context's table. It counts the reports it accepted in `ORACLE_INVALIDATIONS` and
//! what it flagged in `ORACLE_VIOLATIONS` ([`Context::dev_stats`]: `oracle_invalidations`,
//! `oracle_violations`); a device run in strict mode halts at the first violation.
//!
//! **Not for production.** The module is a test module (every invalidation of the armed
//! process costs a round of register writes to the device), and arming needs root: the module
//! finds the device by the bus address of its registers, which the driver publishes in debugfs
//! (`/sys/kernel/debug/mnicN/bar0`, so debugfs must be mounted).
//!
//! **Who arms.** The module's notifier watches the address space of the process that writes
//! the `arm` command, so a context can only be armed by the process that opened it (and uses
//! it): [`arm`] takes that process's [`Context`]. Each [`Armed`] holds one arming; dropping it
//! disarms (the device forgets the context's reports) and removes the notifier. The device also
//! forgets an arming when the context closes.
//!
//! ```no_run
//! let ctx = mnic::Device::open_index(0)?;
//! let armed = mnic::oracle::arm(&ctx)?;
//! // ... register, post work, page out, munmap: the oracle judges it all ...
//! let violations = ctx.dev_stats()?.get(mnic::abi::counter::ORACLE_VIOLATIONS);
//! drop(armed);
//! # Ok::<(), mnic::Error>(())
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::info::Caps;

/// The oracle module's device node.
pub const NODE: &str = "/dev/mnic_oracle";

/// Whether the oracle module is loaded (its node exists).
pub fn is_loaded() -> bool {
    Path::new(NODE).exists()
}

/// The driver's debugfs file that holds the BAR0 bus address of `/dev/mnic{minor}`.
pub fn bar0_path(minor: u32) -> PathBuf {
    PathBuf::from(format!("/sys/kernel/debug/mnic{minor}/bar0"))
}

/// The BAR0 bus address of `/dev/mnic{minor}`: how the oracle module (and a test that pokes
/// the device's registers through it) names the function.
///
/// # Errors
/// [`Error::Open`] if the driver's debugfs file cannot be read (debugfs not mounted, not
/// root); [`Error::Os`] if it does not hold a hexadecimal address.
pub fn bar0(minor: u32) -> Result<u64> {
    let path = bar0_path(minor);
    let text = fs::read_to_string(&path).map_err(|source| Error::Open {
        path: path.clone(),
        source,
    })?;
    parse_bar0(&text).ok_or_else(|| Error::Os {
        op: "oracle: debugfs bar0",
        source: io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: not a hex address: {:?}", path.display(), text.trim()),
        ),
    })
}

/// The address in a debugfs `bar0` file (`0x` and hex digits, a newline).
fn parse_bar0(text: &str) -> Option<u64> {
    let t = text.trim();
    let hex = t.strip_prefix("0x").unwrap_or(t);
    u64::from_str_radix(hex, 16).ok()
}

/// The module's command that arms context `ctx` of the function at `bar0`.
fn arm_command(bar0: u64, ctx: u32) -> String {
    format!("arm {bar0:#x} {ctx}\n")
}

/// One context watched by the oracle: disarmed, and the notifier removed, when dropped.
///
/// Drop it before the context if work may still be running when the context is let go (its
/// teardown's invalidations would judge that work); keep it while the memory the context
/// used is unmapped if those unmaps should be reported too.
#[derive(Debug)]
#[must_use = "the oracle is disarmed as soon as this is dropped"]
pub struct Armed {
    /// The module's file: the arming lives as long as it is open.
    _file: File,
    minor: u32,
    ctx: u32,
}

impl Armed {
    /// N of the `/dev/mnicN` whose context is armed.
    pub fn minor(&self) -> u32 {
        self.minor
    }

    /// The armed context's index.
    pub fn context(&self) -> u32 {
        self.ctx
    }
}

/// Arms the oracle for `ctx`, which this process opened: from now on the oracle module
/// reports every invalidation of this process's address space to `ctx`'s device.
///
/// # Errors
/// [`Error::NoOracle`] if the module is not loaded; [`Error::InvalidInput`] if the device
/// has no oracle registers ([`Caps::ORACLE`]); the errors of [`bar0`]; [`Error::Os`] if the
/// module refused (`ENODEV`: no mnic function at that address, or the device refused the
/// context).
pub fn arm(ctx: &Context) -> Result<Armed> {
    let info = ctx.info();
    if !info.caps.contains(Caps::ORACLE) {
        return Err(Error::InvalidInput(
            "the device has no stale-access oracle registers (Caps::ORACLE)",
        ));
    }
    let file = arm_at(Path::new(NODE), bar0(info.minor)?, info.ctx)?;
    Ok(Armed {
        _file: file,
        minor: info.minor,
        ctx: info.ctx,
    })
}

/// Opens the module's node `node` and writes the `arm` command for context `ctx` of the
/// function at `bar0`; the returned file holds the arming.
fn arm_at(node: &Path, bar0: u64, ctx: u32) -> Result<File> {
    let mut file = OpenOptions::new()
        .write(true)
        .open(node)
        .map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => Error::NoOracle,
            _ => Error::Open {
                path: node.to_owned(),
                source,
            },
        })?;
    file.write_all(arm_command(bar0, ctx).as_bytes())
        .map_err(|source| Error::Os {
            op: "oracle: arm",
            source,
        })?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar0_file_is_a_hex_address() {
        assert_eq!(parse_bar0("0xfe000000\n"), Some(0xfe00_0000));
        assert_eq!(parse_bar0("febf0000"), Some(0xfebf_0000));
        assert_eq!(parse_bar0(""), None);
        assert_eq!(parse_bar0("0xzz\n"), None);
    }

    #[test]
    fn arming_writes_one_arm_line_and_keeps_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let node = dir.path().join("mnic_oracle");
        fs::write(&node, "").unwrap();
        let file = arm_at(&node, 0xfe00_0000, 3).unwrap();
        drop(file);
        assert_eq!(fs::read_to_string(&node).unwrap(), "arm 0xfe000000 3\n");
    }

    #[test]
    fn a_missing_module_is_no_oracle() {
        let dir = tempfile::tempdir().unwrap();
        let err = arm_at(&dir.path().join("mnic_oracle"), 0x1000, 0).unwrap_err();
        assert!(matches!(err, Error::NoOracle), "{err:?}");
        assert!(err.to_string().contains(NODE), "{err}");
        assert!(err.to_string().contains("mnic_oracle.ko"), "{err}");
    }
}
