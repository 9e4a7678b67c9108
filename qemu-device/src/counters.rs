//! The device counters (spec §10): one relaxed atomic per slot, written by the data
//! thread and the socket thread, read through BAR0 and the control socket.

use std::sync::atomic::{AtomicU64, Ordering};

use mnic_abi::counter;

/// The device counters, shared with the control socket.
pub struct Counters {
    slots: [AtomicU64; counter::SLOTS as usize],
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            slots: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Counters {
    /// Value of counter slot `i` (0 outside the slots).
    pub fn get(&self, i: u32) -> u64 {
        self.slots
            .get(i as usize)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
    /// Adds one to counter `i` (ignored outside the slots).
    pub fn inc(&self, i: u32) {
        self.add(i, 1);
    }
    /// Adds `n` to counter `i` (ignored outside the slots).
    pub fn add(&self, i: u32, n: u64) {
        if let Some(c) = self.slots.get(i as usize) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }
    /// Sets counter `i` (gauges such as `TLB_ENTRIES`).
    pub fn set(&self, i: u32, v: u64) {
        if let Some(c) = self.slots.get(i as usize) {
            c.store(v, Ordering::Relaxed);
        }
    }
    /// Resets every counter to 0 (a device reset), except the oracle's: the oracle is the
    /// tests' witness, and a driver that resets the device (unbind, reload) right after a
    /// violation must not erase the evidence (spec §8a).
    pub fn clear(&self) {
        for (i, c) in self.slots.iter().enumerate() {
            if !matches!(
                i as u32,
                counter::ORACLE_INVALIDATIONS | counter::ORACLE_VIOLATIONS
            ) {
                c.store(0, Ordering::Relaxed);
            }
        }
    }
    /// `name value` lines for every defined counter.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for (i, name) in counter::NAMES.iter().enumerate() {
            s.push_str(&format!("{name} {}\n", self.get(i as u32)));
        }
        s
    }
}
