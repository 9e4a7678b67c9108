// SPDX-License-Identifier: GPL-2.0
//! Latency histograms (`MNIC_IOC_CTX_LATENCY` / `MNIC_IOC_DEV_LATENCY`, spec §13): how long SYNC
//! waits and device faults take, in power-of-two microsecond buckets, per context and per
//! device; and the receipt times of a context's unanswered faults that the fault latency is
//! measured from.
//!
//! Everything is a relaxed atomic: a histogram is recorded from invalidation callbacks (which
//! may run in reclaim and must not allocate or wait for a lock) and read while it grows.

use kernel::{
    sync::atomic::{Acquire, Atomic, Relaxed, Release},
    time::{Instant, Monotonic},
};

use crate::abi::{self, LATENCY_BUCKETS};

/// One histogram: counts per bucket of `abi::latency_bucket`.
pub(crate) struct Histogram([Atomic<u64>; LATENCY_BUCKETS]);

impl Histogram {
    pub(crate) const fn new() -> Self {
        Histogram([const { Atomic::new(0) }; LATENCY_BUCKETS])
    }

    /// Counts one latency of `ns` nanoseconds.
    pub(crate) fn record(&self, ns: u64) {
        self.0[abi::latency_bucket(ns)].add(1, Relaxed);
    }

    /// The counts now (each bucket read once; a count racing the read may be missed).
    pub(crate) fn counts(&self) -> [u64; LATENCY_BUCKETS] {
        core::array::from_fn(|i| self.0[i].load(Relaxed))
    }
}

/// The two histograms of a context, or of a device.
pub(crate) struct Latency {
    /// SYNC waits (invalidations' second pass, `MNIC_IOC_SYNC`).
    pub(crate) sync_wait: Histogram,
    /// Device faults, from the event's receipt to the posted RESUME or ABORT.
    pub(crate) fault: Histogram,
}

impl Latency {
    pub(crate) const fn new() -> Self {
        Latency {
            sync_wait: Histogram::new(),
            fault: Histogram::new(),
        }
    }

    /// The `MNIC_IOC_*_LATENCY` answer.
    pub(crate) fn report(&self) -> abi::MnicLatency {
        abi::MnicLatency {
            sync_wait: self.sync_wait.counts(),
            fault: self.fault.counts(),
        }
    }
}

/// The device's histograms, and the clock faults are timed with.
pub(crate) struct DevLatency {
    pub(crate) hist: Latency,
    /// Times are kept as nanoseconds since this instant, so that they fit an atomic.
    epoch: Instant<Monotonic>,
}

impl DevLatency {
    pub(crate) fn new() -> Self {
        DevLatency {
            hist: Latency::new(),
            epoch: Instant::now(),
        }
    }

    /// Nanoseconds since the device was bound.
    pub(crate) fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos().max(0) as u64
    }
}

/// Unanswered faults whose receipt a context remembers: the device parks one fault per context
/// (spec §12); the spare slots keep the measurement right for a device that parks a few.
const FAULT_CLOCK_SLOTS: usize = 4;

/// Receipt times of a context's unanswered faults, by fault id (ids are never 0, spec §12: 0
/// marks a free slot). A fault whose slot another fault took meanwhile is answered unmeasured.
pub(crate) struct FaultClock {
    ids: [Atomic<u64>; FAULT_CLOCK_SLOTS],
    received_ns: [Atomic<u64>; FAULT_CLOCK_SLOTS],
}

impl FaultClock {
    pub(crate) const fn new() -> Self {
        FaultClock {
            ids: [const { Atomic::new(0) }; FAULT_CLOCK_SLOTS],
            received_ns: [const { Atomic::new(0) }; FAULT_CLOCK_SLOTS],
        }
    }

    fn slot(id: u64) -> usize {
        (id % FAULT_CLOCK_SLOTS as u64) as usize
    }

    /// Fault `id` was received at `now_ns`. Only the event thread calls this.
    pub(crate) fn start(&self, id: u64, now_ns: u64) {
        let i = Self::slot(id);
        self.received_ns[i].store(now_ns, Relaxed);
        // Release: whoever sees the id sees its time.
        self.ids[i].store(id, Release);
    }

    /// When fault `id` was received, if its slot still holds it.
    pub(crate) fn received(&self, id: u64) -> Option<u64> {
        let i = Self::slot(id);
        (id != 0 && self.ids[i].load(Acquire) == id).then(|| self.received_ns[i].load(Relaxed))
    }

    /// Fault `id` is answered: its receipt time, and the slot is free again.
    pub(crate) fn stop(&self, id: u64) -> Option<u64> {
        let received = self.received(id)?;
        // Only if it is still ours: the event thread may have given the slot to a new fault.
        self.ids[Self::slot(id)].cmpxchg(id, 0, Relaxed).ok()?;
        Some(received)
    }
}
