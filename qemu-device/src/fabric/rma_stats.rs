//! Statistics of remote memory access and tagged messages (docs/fabric.md 14.13, 14.14),
//! kept by the device's data thread next to the transport's [`Stats`](super::stats::Stats).
//! Which there are, their indices and names are defined once, in `mnic_abi::fabric_counter`
//! (spec §10): the guest reads them as the `FABRIC_COUNTER` registers of BAR0
//! ([`crate::mmio`]), the host through the control socket (`mnic-device stats` prints them
//! after the counters, as `rma_<name> <value>` lines).
//! They are statistics: not cleared by a device reset.

use std::sync::atomic::{AtomicU64, Ordering};

use mnic_abi::fabric_counter;

const COUNT: usize = fabric_counter::COUNT as usize;

/// What the device counts about PUT, GET, SEND and RECV, one relaxed atomic per
/// `fabric_counter` index.
pub struct RmaStats {
    slots: [AtomicU64; COUNT],
}

impl Default for RmaStats {
    fn default() -> Self {
        RmaStats {
            slots: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// A copy of [`RmaStats`] at one moment; index it with a `fabric_counter` constant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RmaSnapshot([u64; COUNT]);

impl RmaSnapshot {
    /// The values, in `fabric_counter` order.
    pub fn values(&self) -> &[u64] {
        &self.0
    }
}

impl std::ops::Index<u32> for RmaSnapshot {
    type Output = u64;
    fn index(&self, i: u32) -> &u64 {
        &self.0[i as usize]
    }
}

impl RmaStats {
    /// Adds one to statistic `i` (a `fabric_counter` index; ignored outside them).
    pub fn bump(&self, i: u32) {
        self.add(i, 1);
    }

    /// Adds `n` to statistic `i` (ignored outside them).
    pub fn add(&self, i: u32, n: u64) {
        if let Some(c) = self.slots.get(i as usize) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Statistic `i` now (0 outside them).
    pub fn get(&self, i: u32) -> u64 {
        self.slots
            .get(i as usize)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// The values now.
    pub fn snapshot(&self) -> RmaSnapshot {
        RmaSnapshot(std::array::from_fn(|i| {
            self.slots[i].load(Ordering::Relaxed)
        }))
    }

    /// `rma_<name> <value>` lines, one per statistic, in index order.
    pub fn render(&self) -> String {
        let s = self.snapshot();
        let mut out = String::new();
        for (name, v) in fabric_counter::NAMES.iter().zip(s.0) {
            out.push_str(&format!("{}{name} {v}\n", fabric_counter::PREFIX));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_names_every_statistic() {
        let s = RmaStats::default();
        s.bump(fabric_counter::RNR_SENT);
        s.bump(fabric_counter::RNR_SENT);
        s.bump(fabric_counter::COUNT);
        let r = s.render();
        assert!(r.contains("rma_rnr_sent 2\n"), "{r}");
        assert!(r.contains("rma_put_served 0\n"), "{r}");
        assert!(r.ends_with("rma_fin_dropped 0\n"), "{r}");
        assert_eq!(r.lines().count(), 24);
        assert_eq!(s.snapshot()[fabric_counter::RNR_SENT], 2);
        assert_eq!(s.get(fabric_counter::COUNT), 0, "outside the statistics");
    }
}
