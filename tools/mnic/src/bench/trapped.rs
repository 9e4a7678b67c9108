//! The driver's `trapped_doorbells` debugfs knob (`/sys/kernel/debug/mnicN/`): 1 makes
//! the driver write `CMDQ_TAIL` on every command-queue post and turn the device's
//! polling off (spin budget 0), the path without shadow doorbells: the "trapped" side of
//! `mnic bench sync`. The driver reads it
//! at every post, so it can be flipped between blocks of one run.

use std::path::PathBuf;

use crate::error::CmdResult;

/// The knob of one device, set back to 0 when dropped (whatever happened meanwhile).
pub struct TrappedKnob {
    path: PathBuf,
}

impl TrappedKnob {
    /// Where the knob of `/dev/mnic<minor>` lives.
    pub fn path(minor: u32) -> PathBuf {
        PathBuf::from(format!("/sys/kernel/debug/mnic{minor}/trapped_doorbells"))
    }

    /// The knob of `/dev/mnic<minor>`, or why it cannot be used.
    pub fn open(minor: u32) -> Result<Self, String> {
        let path = Self::path(minor);
        match std::fs::metadata(&path) {
            Ok(_) => Ok(Self { path }),
            Err(e) => Err(format!(
                "{}: {e} (a driver without the knob, or debugfs not mounted)",
                path.display()
            )),
        }
    }

    /// Forces (`true`) or releases (`false`) the trapped doorbell.
    pub fn set(&self, trapped: bool) -> CmdResult {
        std::fs::write(&self.path, if trapped { "1\n" } else { "0\n" })
            .map_err(|e| format!("{}: {e}", self.path.display()).into())
    }
}

impl Drop for TrappedKnob {
    fn drop(&mut self) {
        let _ = self.set(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knob_path_and_missing_knob() {
        assert_eq!(
            TrappedKnob::path(3),
            PathBuf::from("/sys/kernel/debug/mnic3/trapped_doorbells")
        );
        // No device 99 anywhere: the reason names the file.
        let e = TrappedKnob::open(99).err().unwrap();
        assert!(e.contains("mnic99/trapped_doorbells"), "{e}");
    }
}
