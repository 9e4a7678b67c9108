//! The driver's latency histograms (`MNIC_IOC_CTX_LATENCY`, `MNIC_IOC_DEV_LATENCY`, spec §13):
//! how long SYNC waits and device faults took, in power-of-two microsecond buckets.

use mnic_abi as abi;
use mnic_abi::LATENCY_BUCKETS;

/// One histogram: `counts[i]` latencies fell in bucket `i` (see [`Histogram::bucket`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Histogram {
    /// Count per bucket.
    pub counts: [u64; LATENCY_BUCKETS],
}

/// One bucket of a [`Histogram`]: latencies in `[start_us, end_us)` microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Lower bound, in microseconds (inclusive).
    pub start_us: u64,
    /// Upper bound, in microseconds (exclusive); `None` for the last bucket.
    pub end_us: Option<u64>,
    /// Latencies counted in it.
    pub count: u64,
}

impl Histogram {
    /// How many latencies it counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Bucket `i` with its bounds (`i < LATENCY_BUCKETS`).
    pub fn bucket(&self, i: usize) -> Bucket {
        Bucket {
            start_us: abi::latency_bucket_start_us(i),
            end_us: (i + 1 < LATENCY_BUCKETS).then(|| abi::latency_bucket_start_us(i + 1)),
            count: self.counts[i],
        }
    }

    /// Every bucket, in order.
    pub fn buckets(&self) -> impl Iterator<Item = Bucket> + '_ {
        (0..LATENCY_BUCKETS).map(|i| self.bucket(i))
    }

    /// The bucket the `q`-quantile (0 < q ≤ 1) falls in: the first bucket by which at least
    /// `q` of the latencies are counted. `None` if nothing was counted.
    pub fn quantile_bucket(&self, q: f64) -> Option<Bucket> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let want = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        self.buckets().find(|b| {
            seen += b.count;
            seen >= want
        })
    }

    /// `self - earlier` per bucket (wrapping): what was counted in between.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        Histogram {
            counts: std::array::from_fn(|i| self.counts[i].wrapping_sub(earlier.counts[i])),
        }
    }
}

/// The SYNC-wait and fault latency histograms of a context or of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Latency {
    /// SYNC waits: invalidations' fences and [`Context::sync`](crate::Context::sync).
    pub sync_wait: Histogram,
    /// Device faults, from the driver's receipt of the fault to its posted answer.
    pub fault: Histogram,
}

impl From<abi::MnicLatency> for Latency {
    fn from(l: abi::MnicLatency) -> Self {
        Latency {
            sync_wait: Histogram {
                counts: l.sync_wait,
            },
            fault: Histogram { counts: l.fault },
        }
    }
}

impl Latency {
    /// `self - earlier`, both histograms.
    pub fn since(&self, earlier: &Latency) -> Latency {
        Latency {
            sync_wait: self.sync_wait.since(&earlier.sync_wait),
            fault: self.fault.since(&earlier.fault),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(pairs: &[(usize, u64)]) -> Histogram {
        let mut h = Histogram::default();
        for &(i, n) in pairs {
            h.counts[i] = n;
        }
        h
    }

    #[test]
    fn buckets_have_power_of_two_bounds() {
        let h = hist(&[(0, 1), (3, 2), (15, 4)]);
        assert_eq!(h.total(), 7);
        let b: Vec<Bucket> = h.buckets().collect();
        assert_eq!(b.len(), LATENCY_BUCKETS);
        assert_eq!((b[0].start_us, b[0].end_us, b[0].count), (0, Some(2), 1));
        assert_eq!((b[3].start_us, b[3].end_us, b[3].count), (8, Some(16), 2));
        assert_eq!(
            (b[15].start_us, b[15].end_us, b[15].count),
            (32768, None, 4)
        );
    }

    #[test]
    fn quantiles_pick_the_bucket_that_reaches_them() {
        let h = hist(&[(2, 50), (5, 49), (9, 1)]);
        assert_eq!(h.quantile_bucket(0.5).unwrap().start_us, 4);
        assert_eq!(h.quantile_bucket(0.99).unwrap().start_us, 32);
        assert_eq!(h.quantile_bucket(1.0).unwrap().start_us, 512);
        assert_eq!(Histogram::default().quantile_bucket(0.5), None);
    }

    #[test]
    fn since_subtracts_per_bucket() {
        let a = Latency::from(abi::MnicLatency {
            sync_wait: hist(&[(1, 3)]).counts,
            fault: hist(&[(4, 1)]).counts,
        });
        let mut b = a;
        b.sync_wait.counts[1] += 2;
        b.fault.counts[7] += 5;
        let d = b.since(&a);
        assert_eq!(d.sync_wait.total(), 2);
        assert_eq!(d.fault.counts[7], 5);
        assert_eq!(d.fault.counts[4], 0);
    }
}
