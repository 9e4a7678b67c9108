//! Per-iteration times and the metrics derived from them (mean, percentiles,
//! throughput, cost per page).

use std::time::Duration;

use mnic_bench_schema::names::metric;
use mnic_bench_schema::Fields;

/// Per-iteration times.
#[derive(Debug, Default, Clone)]
pub struct Timing(pub Vec<Duration>);

impl Timing {
    pub fn mean_us(&self) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.iter().map(Duration::as_secs_f64).sum::<f64>() * 1e6 / self.0.len() as f64
    }
    /// The `p`-quantile (0.0 = fastest, 1.0 = slowest), nearest rank, in µs.
    pub fn pct_us(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        let mut v = self.0.clone();
        v.sort();
        let i = ((v.len() - 1) as f64 * p).round() as usize;
        v[i].as_secs_f64() * 1e6
    }
    pub fn p50_us(&self) -> f64 {
        self.pct_us(0.5)
    }
    pub fn total_s(&self) -> f64 {
        self.0.iter().map(Duration::as_secs_f64).sum()
    }
    /// iters, mean/min/p50/max in µs, and throughput for `bytes` per iteration.
    pub fn metrics(&self, bytes: u64) -> Fields<f64> {
        let mut m = Fields::default();
        m.push(metric::ITERS, self.0.len() as f64);
        m.push(metric::BYTES, bytes as f64);
        m.push(metric::MEAN_US, self.mean_us());
        m.push(metric::MIN_US, self.pct_us(0.0));
        m.push(metric::P50_US, self.pct_us(0.5));
        m.push(metric::MAX_US, self.pct_us(1.0));
        let t = self.total_s();
        m.push(
            metric::MIB_PER_S,
            if t > 0.0 {
                bytes as f64 * self.0.len() as f64 / t / (1 << 20) as f64
            } else {
                0.0
            },
        );
        m
    }
}

/// Timing metrics plus the median cost per page in ns and `extra` metrics.
pub fn per_page(t: &Timing, bytes: u64, pages: u64, extra: &[(&str, f64)]) -> Fields<f64> {
    let mut m = t.metrics(bytes);
    m.push(metric::PAGES, pages as f64);
    m.push(metric::NS_PER_PAGE, t.p50_us() * 1e3 / pages.max(1) as f64);
    for (k, v) in extra {
        m.push(*k, *v);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_stats() {
        let t = Timing(vec![
            Duration::from_micros(30),
            Duration::from_micros(10),
            Duration::from_micros(20),
        ]);
        assert!((t.mean_us() - 20.0).abs() < 1e-9);
        assert!((t.pct_us(0.0) - 10.0).abs() < 1e-9);
        assert!((t.pct_us(0.5) - 20.0).abs() < 1e-9);
        assert!((t.pct_us(1.0) - 30.0).abs() < 1e-9);
        let m = t.metrics(1 << 20);
        assert_eq!(m.get(metric::ITERS), Some(&3.0));
        // 3 MiB in 60 µs.
        assert!((m.get(metric::MIB_PER_S).unwrap() - 3.0 / 60e-6).abs() < 1.0);
        assert_eq!(Timing::default().mean_us(), 0.0);
        let p = per_page(&t, 8192, 2, &[("x", 1.0)]);
        assert_eq!(p.get(metric::NS_PER_PAGE), Some(&10_000.0));
        assert_eq!(p.get("x"), Some(&1.0));
    }
}
