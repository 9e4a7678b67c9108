//! What the polling device did per operation: the device counters of spec §4a
//! (`doorbells`, `shadow_tails`, `sleeps`) summed over the timed blocks of one side.

use mnic::abi::counter;
use mnic::DevCounters;
use mnic_bench_schema::names::metric;

/// Counter deltas of one side, summed over its timed blocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct DeviceCounts {
    ops: u64,
    doorbells: u64,
    shadow_tails: u64,
    sleeps: u64,
}

impl DeviceCounts {
    /// Adds a block of `ops` operations that ran between the readings `a` and `b`.
    pub fn add(&mut self, a: &DevCounters, b: &DevCounters, ops: u64) {
        let d = b.since(a);
        self.ops += ops;
        self.doorbells += d.get(counter::DOORBELLS);
        self.shadow_tails += d.get(counter::SHADOW_TAILS);
        self.sleeps += d.get(counter::SLEEPS);
    }

    /// The per-operation metrics.
    pub fn per_op(&self) -> [(&'static str, f64); 3] {
        let n = self.ops.max(1) as f64;
        [
            (metric::DOORBELLS_PER_OP, self.doorbells as f64 / n),
            (metric::SHADOW_TAILS_PER_OP, self.shadow_tails as f64 / n),
            (metric::SLEEPS_PER_OP, self.sleeps as f64 / n),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mnic::abi::MnicDevStats;

    #[test]
    fn sums_blocks_per_op() {
        let reading = |d, s, z| {
            let mut m = MnicDevStats::default();
            m.counters[counter::DOORBELLS as usize] = d;
            m.counters[counter::SHADOW_TAILS as usize] = s;
            m.counters[counter::SLEEPS as usize] = z;
            DevCounters(m)
        };
        let mut c = DeviceCounts::default();
        c.add(&reading(10, 0, 5), &reading(12, 8, 5), 10);
        c.add(&reading(12, 8, 5), &reading(12, 18, 6), 10);
        assert_eq!(
            c.per_op(),
            [
                (metric::DOORBELLS_PER_OP, 0.1),
                (metric::SHADOW_TAILS_PER_OP, 0.9),
                (metric::SLEEPS_PER_OP, 0.05)
            ]
        );
    }
}
