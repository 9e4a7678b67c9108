// SPDX-License-Identifier: GPL-2.0
//! The remote key of one `REMOTE` registration (spec §13, `docs/fabric.md` 14.13): drawn
//! from the device's key set (`key_set.rs`) and forgotten there when it is dropped, whether
//! the device holds it, and the `KEY_SET` and `KEY_CLEAR` commands that change that. When
//! those are posted is `remote.rs`.

use kernel::{
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        Arc,
    },
};

use crate::abi::{self, key_access, reg_flags, Command};
use crate::device::MnicDev;
use crate::key_set::KeySet;

/// The remote key of one registration, recorded in the device's key set for as long as this
/// lives (dropped with the registration, or on a failed registration).
pub(crate) struct RemoteKey {
    dev: Arc<MnicDev>,
    pub(crate) key: u32,
    /// `key_access` bits: what peers may do through the key.
    access: u64,
    /// The device holds the key: its `KEY_SET` was posted to the enabled context, and neither
    /// `KEY_CLEAR` nor a `CTX_ENABLE`/`CTX_DISABLE` came after. Changed under `Ctx::key_lock`.
    held: Atomic<bool>,
}

impl RemoteKey {
    /// Draws a key for a registration of context `ctx` with `reg_flags` `flags`.
    pub(crate) fn claim(dev: &Arc<MnicDev>, ctx: u16, flags: u32) -> Result<Self> {
        let node = KeySet::reserve()?;
        let key = dev.remote_keys.lock().claim(node, ctx)?;
        let mut access = 0;
        if flags & reg_flags::READ != 0 {
            access |= key_access::READ;
        }
        if flags & reg_flags::WRITE != 0 {
            access |= key_access::WRITE;
        }
        Ok(RemoteKey {
            dev: dev.clone(),
            key,
            access,
            held: Atomic::new(false),
        })
    }

    /// The `KEY_SET` that gives the device this key for context `ctx` over [start, end), if
    /// the device does not hold it yet; it counts as held from now on. Under `Ctx::key_lock`:
    /// if the post that carries the command then fails, the device is going and executes no
    /// command any more, the `KEY_CLEAR` that follows included.
    pub(crate) fn set_command(&self, ctx: u16, start: u64, end: u64) -> Option<Command> {
        (!self.held.xchg(true, Relaxed)).then(|| Command {
            opcode: abi::cmd::KEY_SET,
            ctx,
            arg0: start,
            arg1: end - start,
            arg2: key_access::arg(self.key, self.access),
            ..Command::default()
        })
    }

    /// The `KEY_CLEAR` that takes this key away from context `ctx`, if the device holds it;
    /// it counts as not held from now on. Under `Ctx::key_lock`.
    pub(crate) fn clear_command(&self, ctx: u16) -> Option<Command> {
        self.held.xchg(false, Relaxed).then(|| Command {
            opcode: abi::cmd::KEY_CLEAR,
            ctx,
            arg0: u64::from(self.key),
            ..Command::default()
        })
    }
}

impl Drop for RemoteKey {
    fn drop(&mut self) {
        self.dev.remote_keys.lock().forget(self.key);
    }
}
