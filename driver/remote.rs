// SPDX-License-Identifier: GPL-2.0
//! When a context gives the device its remote keys (`KEY_SET`) and takes them back
//! (`KEY_CLEAR`) (spec §13 `REMOTE`, `docs/fabric.md` 14.13; the key itself is
//! `remote_key.rs`).
//!
//! The rule: a key the process holds is known to the device. `MNIC_IOC_REGISTER` returns
//! the key only after its `KEY_SET` and a SYNC have executed, or, on a context that is not
//! enabled yet (the device refuses `KEY_SET` there, and serves no packet to it anyway),
//! `MNIC_IOC_SETUP_QUEUES` gives every key listed so far right after its `CTX_ENABLE`, which
//! drops whatever keys the context had. Deregistration posts `KEY_CLEAR` before the
//! invalidation that ends the registration, so one SYNC fences both (`registration.rs`);
//! teardown's `CTX_DISABLE` drops the keys on the device, and the registrations' drop forgets
//! them in the device-wide set (`key_set.rs`).
//!
//! Whether the device holds a key (`RemoteKey::held`) changes only under `Ctx::key_lock`,
//! which orders a registration's `KEY_SET` against the context's enabling and against its
//! deregistration: every key is set once and cleared at most once.

use kernel::{prelude::*, sync::atomic::Relaxed};

use crate::abi::{self, Command};
use crate::context::{Ctx, Registered};

/// Most `KEY_SET`s in one post: well below the ring's `MAX_BATCH`, so that enabling a context
/// with many remote registrations leaves room for the invalidations of others.
const KEY_BATCH: usize = 64;

impl Registered {
    /// The `KEY_SET` of this registration's key, if it has one the device does not hold yet
    /// (see `RemoteKey::set_command`).
    fn key_set(&self) -> Option<Command> {
        let region = self.notifier.data();
        region.remote.as_ref()?.set_command(
            region.ctx.index,
            self.notifier.start() as u64,
            self.notifier.end() as u64,
        )
    }
}

impl Ctx {
    /// After the `REMOTE` registration `handle` is listed: gives its key to the device and
    /// waits for the SYNC behind it. On a context that is not enabled yet this is left to
    /// [`Ctx::enable`].
    pub(crate) fn give_key(&self, handle: u32) -> Result {
        let _keys = self.key_lock.lock();
        if !self.enabled.load(Relaxed) {
            return Ok(());
        }
        // None if gone already: a racing deregistration of the handle took it (and its key).
        let cmd = self
            .registrations
            .lock()
            .find(handle)
            .and_then(Registered::key_set);
        let Some(cmd) = cmd else {
            return Ok(());
        };
        let ticket = self.dev.post_sync(&[cmd])?;
        self.dev.wait_sync(ticket).map(|_| ())
    }

    /// Enables the context on the device (`CTX_ENABLE` behind a SYNC), then gives it the keys
    /// of the remote registrations made before (the device refuses `KEY_SET` on a context that
    /// is not enabled, and `CTX_ENABLE` drops any key the context had).
    pub(crate) fn enable(&self) -> Result {
        let _keys = self.key_lock.lock();
        let enable = Command {
            opcode: abi::cmd::CTX_ENABLE,
            ctx: self.index,
            ..Default::default()
        };
        let ticket = self.dev.post_sync(&[enable])?;
        self.dev.wait_sync(ticket)?;
        self.enabled.store(true, Relaxed);
        self.give_listed_keys()
    }

    /// Gives the device the key of every listed remote registration it does not hold, and
    /// waits for the SYNC behind the last. Called with `key_lock` held: a registration listed
    /// after the count below gives its own key ([`Ctx::give_key`] sees the context enabled).
    fn give_listed_keys(&self) -> Result {
        let remote = |r: &&Registered| r.notifier.data().remote.is_some();
        let count = self.registrations.lock().list.iter().filter(remote).count();
        if count == 0 {
            return Ok(());
        }
        let mut cmds = KVec::with_capacity(count, GFP_KERNEL)?;
        for r in self.registrations.lock().list.iter().filter(remote) {
            if cmds.len() == count {
                break;
            }
            if let Some(cmd) = r.key_set() {
                // Within the capacity (checked above): cannot fail.
                let _ = cmds.push_within_capacity(cmd);
            }
        }
        let mut last = None;
        for batch in cmds.chunks(KEY_BATCH) {
            last = Some(self.dev.post_sync(batch)?);
        }
        match last {
            Some(ticket) => self.dev.wait_sync(ticket).map(|_| ()),
            None => Ok(()),
        }
    }
}
