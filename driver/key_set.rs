// SPDX-License-Identifier: GPL-2.0
//! The live remote keys of one device (spec §13 `REMOTE`, `docs/fabric.md` 14.13): a key is
//! unique on the device while its registration lives, never 0, and the device holds at most
//! `abi::MAX_REMOTE_KEYS` of them, so the driver keeps the set of keys it handed out over
//! every context and draws new ones against it. Which key belongs to which registration, and
//! when the device is told, is `remote_key.rs`.

use kernel::{
    prelude::*,
    rbtree::{RBTree, RBTreeNodeReservation},
};

use crate::abi;

/// Draws before giving up on finding a free key. With at most 2^16 of 2^32 values taken, a
/// random draw is taken with probability 2^-16: failing this many times in a row does not
/// happen, but the loop stays bounded.
const DRAWS: u32 = 16;

/// A node for [`KeySet::claim`], allocated before the set's lock is taken.
pub(crate) type KeyNode = RBTreeNodeReservation<u32, u16>;

/// The device's live remote keys, each with the index of the context that holds it.
pub(crate) struct KeySet {
    keys: RBTree<u32, u16>,
    len: u32,
}

impl KeySet {
    pub(crate) fn new() -> Self {
        KeySet {
            keys: RBTree::new(),
            len: 0,
        }
    }

    /// A node for one more key (allocates; call it without the set's lock).
    pub(crate) fn reserve() -> Result<KeyNode> {
        RBTreeNodeReservation::new(GFP_KERNEL)
    }

    /// Draws a new key for context `ctx` and records it: random, never 0, not live on the
    /// device. `ENOSPC` once the device holds `MAX_REMOTE_KEYS`.
    pub(crate) fn claim(&mut self, node: KeyNode, ctx: u16) -> Result<u32> {
        if self.len >= abi::MAX_REMOTE_KEYS {
            return Err(ENOSPC);
        }
        for _ in 0..DRAWS {
            // SAFETY: `get_random_u32` has no preconditions and may be called from any context.
            let key = unsafe { kernel::bindings::get_random_u32() };
            if key != 0 && self.keys.get(&key).is_none() {
                self.keys.insert(node.into_node(key, ctx));
                self.len += 1;
                return Ok(key);
            }
        }
        Err(ENOSPC)
    }

    /// Forgets `key` (its registration is gone, or was never made).
    pub(crate) fn forget(&mut self, key: u32) {
        if self.keys.remove(&key).is_some() {
            self.len -= 1;
        }
    }

    /// Live keys (debugfs).
    pub(crate) fn len(&self) -> u32 {
        self.len
    }
}
