//! Remote keys (docs/fabric.md 14.13, spec §7 `KEY_SET`/`KEY_CLEAR`): which registration
//! of which context a peer reaches through a 32-bit key, and what it may do there. At
//! most `MAX_REMOTE_KEYS` over the device; a context's keys go when it is disabled or
//! enabled.

use std::collections::HashMap;

use mnic_abi::{key_access, MAX_REMOTE_KEYS};

/// A live remote key: a range of one context and the access peers have to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    /// The context the key belongs to.
    pub ctx: u16,
    /// First VA of the range.
    pub va: u64,
    /// Its length (not 0; `va + len` does not wrap).
    pub len: u64,
    /// Peers may read (`GET`).
    pub read: bool,
    /// Peers may write (`PUT`).
    pub write: bool,
}

impl Key {
    /// Whether `[va, va + len)` lies inside the key's range.
    pub fn covers(&self, va: u64, len: u64) -> bool {
        let (Some(end), Some(key_end)) = (va.checked_add(len), self.va.checked_add(self.len))
        else {
            return false;
        };
        va >= self.va && end <= key_end
    }
}

/// Why a `KEY_SET` or `KEY_CLEAR` was refused (each a `BAD_COMMAND` error).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyError {
    /// Key 0, a zero or wrapping range, no access bit, or bits above 33 set.
    Malformed,
    /// The key is held already (by any context).
    Taken,
    /// `MAX_REMOTE_KEYS` keys are held.
    Full,
    /// `KEY_CLEAR` of a key the context does not hold.
    NotHeld,
}

/// The device's remote keys, by key value.
#[derive(Default)]
pub struct Keys {
    by_key: HashMap<u32, Key>,
}

impl Keys {
    /// Decodes `KEY_SET` arguments (arg0 VA, arg1 length, arg2 key | access bits) for
    /// context `ctx`, without looking at the keys held.
    pub fn decode(ctx: u16, va: u64, len: u64, arg2: u64) -> Result<(u32, Key), KeyError> {
        let key = arg2 as u32;
        let access = arg2 & !u64::from(u32::MAX);
        let ok = key != 0
            && len != 0
            && va.checked_add(len).is_some()
            && access & !key_access::ALL == 0
            && access != 0;
        if !ok {
            return Err(KeyError::Malformed);
        }
        let k = Key {
            ctx,
            va,
            len,
            read: access & key_access::READ != 0,
            write: access & key_access::WRITE != 0,
        };
        Ok((key, k))
    }

    /// Gives `k` the key value `key`.
    pub fn insert(&mut self, key: u32, k: Key) -> Result<(), KeyError> {
        if self.by_key.contains_key(&key) {
            return Err(KeyError::Taken);
        }
        if self.by_key.len() >= MAX_REMOTE_KEYS as usize {
            return Err(KeyError::Full);
        }
        self.by_key.insert(key, k);
        Ok(())
    }

    /// Takes `key` away from `ctx`.
    pub fn clear(&mut self, ctx: u16, key: u32) -> Result<(), KeyError> {
        match self.by_key.get(&key) {
            Some(k) if k.ctx == ctx => {
                self.by_key.remove(&key);
                Ok(())
            }
            _ => Err(KeyError::NotHeld),
        }
    }

    /// The key `key` if `ctx` holds it.
    pub fn get(&self, ctx: u16, key: u32) -> Option<Key> {
        self.by_key.get(&key).filter(|k| k.ctx == ctx).copied()
    }

    /// Drops every key of `ctx`.
    pub fn drop_ctx(&mut self, ctx: u16) {
        if !self.by_key.is_empty() {
            self.by_key.retain(|_, k| k.ctx != ctx);
        }
    }

    /// Keys held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RW: u64 = key_access::READ | key_access::WRITE;

    #[test]
    fn decode_refuses_every_malformed_argument() {
        assert!(Keys::decode(1, 0x1000, 0x2000, key_access::arg(5, RW)).is_ok());
        let bad = [
            (0x1000, 0x2000, key_access::arg(0, RW)),
            (0x1000, 0, key_access::arg(5, RW)),
            (u64::MAX - 1, 2, key_access::arg(5, RW)),
            (0x1000, 0x2000, 5),
            (0x1000, 0x2000, key_access::arg(5, RW) | 1 << 34),
        ];
        for (va, len, arg2) in bad {
            assert_eq!(
                Keys::decode(1, va, len, arg2),
                Err(KeyError::Malformed),
                "{va:#x} {len:#x} {arg2:#x}"
            );
        }
        let (key, k) =
            Keys::decode(1, 0x1000, 0x2000, key_access::arg(9, key_access::READ)).unwrap();
        assert_eq!(key, 9);
        assert!(k.read && !k.write);
        assert!(k.covers(0x1000, 0x2000) && k.covers(0x2fff, 1));
        assert!(!k.covers(0xfff, 2) && !k.covers(0x2fff, 2) && !k.covers(u64::MAX, 2));
    }

    #[test]
    fn keys_are_unique_per_device_and_belong_to_their_context() {
        let mut keys = Keys::default();
        let (key, k) = Keys::decode(1, 0x1000, 0x1000, key_access::arg(7, RW)).unwrap();
        keys.insert(key, k).unwrap();
        let (_, other) = Keys::decode(2, 0x1000, 0x1000, key_access::arg(7, RW)).unwrap();
        assert_eq!(keys.insert(7, other), Err(KeyError::Taken));
        assert_eq!(keys.get(2, 7), None);
        assert_eq!(keys.get(1, 7), Some(k));
        assert_eq!(keys.clear(2, 7), Err(KeyError::NotHeld));
        keys.drop_ctx(2);
        assert_eq!(keys.len(), 1);
        keys.drop_ctx(1);
        assert_eq!(keys.len(), 0);
        assert_eq!(keys.clear(1, 7), Err(KeyError::NotHeld));
    }
}
