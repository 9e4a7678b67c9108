//! What the driver and the device count: the per-context driver counters, the device
//! counters, and the table entries `MNIC_IOC_QUERY` counts over a range.

use mnic_abi as abi;
use mnic_abi::counter;

/// Device table entries over a range (`MNIC_IOC_QUERY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct TableEntries {
    /// Valid 4 KiB leaves in the range.
    pub valid_4k: u64,
    /// Valid 2 MiB leaves overlapping the range.
    pub valid_2m: u64,
    /// Of those, writable leaves.
    pub writable: u64,
    /// Pages of the range pinned by PINNED registrations.
    pub pinned: u64,
}

impl TableEntries {
    /// Total valid leaves (4 KiB and 2 MiB).
    pub fn valid(&self) -> u64 {
        self.valid_4k + self.valid_2m
    }
}

/// Names and values of the per-context driver counters (`MNIC_IOC_CTX_STATS`), in
/// structure order.
pub fn ctx_stats_fields(s: &abi::MnicCtxStats) -> [(&'static str, u64); 14] {
    [
        ("registrations", s.registrations),
        ("mapped_4k", s.mapped_4k),
        ("mapped_2m", s.mapped_2m),
        ("pinned_pages", s.pinned_pages),
        ("faults", s.faults),
        ("resumes", s.resumes),
        ("aborts", s.aborts),
        ("invalidations", s.invalidations),
        ("entries_invalidated", s.entries_invalidated),
        ("sync_waits", s.sync_waits),
        ("sync_wait_ns", s.sync_wait_ns),
        ("sync_wait_max_ns", s.sync_wait_max_ns),
        ("work_done", s.work_done),
        ("fault_retries", s.fault_retries),
    ]
}

/// The device counters (`MNIC_IOC_DEV_STATS`, spec §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DevCounters(pub abi::MnicDevStats);

impl DevCounters {
    /// Counter `i` (a `mnic_abi::counter` constant); 0 for undefined slots.
    pub fn get(&self, i: u32) -> u64 {
        self.0.counters.get(i as usize).copied().unwrap_or(0)
    }
    /// The defined counters with their names (`mnic_abi::counter::NAMES`).
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        counter::NAMES
            .iter()
            .enumerate()
            .map(|(i, n)| (*n, self.0.counters[i]))
    }
    /// `self - earlier` per counter (wrapping), except `tlb_entries`, a level, which is
    /// kept as is.
    pub fn since(&self, earlier: &DevCounters) -> DevCounters {
        let mut d = *self;
        for (i, c) in d.0.counters.iter_mut().enumerate() {
            if i != counter::TLB_ENTRIES as usize {
                *c = c.wrapping_sub(earlier.0.counters[i]);
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_counters_names_and_delta() {
        let mut a = abi::MnicDevStats::default();
        let mut b = abi::MnicDevStats::default();
        a.counters[counter::FAULTS as usize] = 5;
        b.counters[counter::FAULTS as usize] = 12;
        a.counters[counter::TLB_ENTRIES as usize] = 100;
        b.counters[counter::TLB_ENTRIES as usize] = 40;
        let d = DevCounters(b).since(&DevCounters(a));
        assert_eq!(d.get(counter::FAULTS), 7);
        assert_eq!(d.get(counter::TLB_ENTRIES), 40);
        assert_eq!(d.get(99), 0);
        let names: Vec<_> = d.iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), counter::COUNT as usize);
        assert_eq!(names[counter::FAULTS as usize], "faults");
    }

    #[test]
    fn ctx_stats_field_names() {
        let s = abi::MnicCtxStats {
            faults: 3,
            fault_retries: 9,
            ..Default::default()
        };
        let f = ctx_stats_fields(&s);
        assert_eq!(f[4], ("faults", 3));
        assert_eq!(f[13], ("fault_retries", 9));
    }
}
