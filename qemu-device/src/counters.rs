//! The device counters (spec §10): one relaxed atomic per slot, written by the data
//! thread and the socket thread, read through BAR0 and the control socket.
//! `DEVICE_CPU_US` is not a count but a reading: the process's CPU time, taken when it
//! is read (so a reset does not clear it).

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
        if i == counter::DEVICE_CPU_US {
            return process_cpu_us();
        }
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

/// CPU time this process has used (every thread: the polling data thread, the socket
/// thread), in microseconds.
fn process_cpu_us() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `t`, a live local.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) } != 0 {
        return 0;
    }
    let us = i128::from(t.tv_sec) * 1_000_000 + i128::from(t.tv_nsec) / 1000;
    u64::try_from(us).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_cpu_us_is_a_reading_that_survives_clear() {
        let c = Counters::default();
        let a = c.get(counter::DEVICE_CPU_US);
        // Burn some CPU so that the reading must move.
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < std::time::Duration::from_millis(20) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        c.clear();
        let b = c.get(counter::DEVICE_CPU_US);
        assert!(a > 0 && b > a, "{a} -> {b}");
        assert!(c.render().contains("device_cpu_us "));
    }
}
