//! The latency histograms in `mnic stats`: the device's (every context, through
//! `MNIC_IOC_DEV_LATENCY`) as a bucket table, and each open context's (debugfs
//! `latency_us`, readable by root) as one summary line per histogram.

use std::path::Path;

use mnic::{Bucket, Histogram, Latency};
use serde::Serialize;

use crate::output::Table;

/// One open context's histograms, from debugfs.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ContextLatency {
    pub ctx: u32,
    #[serde(flatten)]
    pub latency: Latency,
}

/// Reads `latency_us` of debugfs directory `dir` (`/sys/kernel/debug/mnicN`); `None` if it
/// cannot be read (debugfs not mounted, not root, an older driver).
pub fn read_contexts(dir: &Path) -> Option<Vec<ContextLatency>> {
    parse_contexts(&std::fs::read_to_string(dir.join("latency_us")).ok()?)
}

/// Parses the driver's `latency_us`: a header, then per context one `CTX sync_wait COUNTS...`
/// and one `CTX fault COUNTS...` line (debugfs ends the file with an empty line).
pub fn parse_contexts(text: &str) -> Option<Vec<ContextLatency>> {
    let mut out: Vec<ContextLatency> = Vec::new();
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let mut cols = line.split_whitespace();
        let ctx: u32 = cols.next()?.parse().ok()?;
        let what = cols.next()?;
        let counts: Vec<u64> = cols.map(str::parse).collect::<Result<_, _>>().ok()?;
        let hist = Histogram {
            counts: counts.try_into().ok()?,
        };
        if out.last().is_none_or(|c| c.ctx != ctx) {
            out.push(ContextLatency {
                ctx,
                latency: Latency::default(),
            });
        }
        let entry = out.last_mut()?;
        match what {
            "sync_wait" => entry.latency.sync_wait = hist,
            "fault" => entry.latency.fault = hist,
            _ => return None,
        }
    }
    Some(out)
}

/// `[start, end)` of a bucket, in microseconds.
fn range(b: &Bucket) -> String {
    match b.end_us {
        Some(end) => format!("[{}, {end}) us", b.start_us),
        None => format!(">= {} us", b.start_us),
    }
}

/// The bound below which quantile `q` lies ("<512"), or "-" with nothing counted.
fn quantile(h: &Histogram, q: f64) -> String {
    match h.quantile_bucket(q) {
        Some(Bucket {
            end_us: Some(end), ..
        }) => format!("<{end}"),
        Some(b) => format!(">={}", b.start_us),
        None => "-".into(),
    }
}

/// The device's histograms as one table of buckets (those between the first and the last
/// non-empty one), with the counts since the previous sample when there is one.
pub fn render_device(now: &Latency, delta: Option<&Latency>) -> String {
    let mut headers = vec!["latency (device, all contexts)", "sync_wait", "fault"];
    if delta.is_some() {
        headers.extend(["sync_wait delta", "fault delta"]);
    }
    let mut t = Table::new(&headers);
    let used: Vec<usize> = (0..mnic::abi::LATENCY_BUCKETS)
        .filter(|&i| now.sync_wait.counts[i] + now.fault.counts[i] > 0)
        .collect();
    if let (Some(&lo), Some(&hi)) = (used.first(), used.last()) {
        for i in lo..=hi {
            let mut row = vec![
                range(&now.sync_wait.bucket(i)),
                now.sync_wait.counts[i].to_string(),
                now.fault.counts[i].to_string(),
            ];
            if let Some(d) = delta {
                row.extend([
                    d.sync_wait.counts[i].to_string(),
                    d.fault.counts[i].to_string(),
                ]);
            }
            t.row(&row);
        }
    }
    let summary = |name: &str, f: &dyn Fn(&Histogram) -> String| {
        let mut row = vec![name.to_string(), f(&now.sync_wait), f(&now.fault)];
        if let Some(d) = delta {
            row.extend([f(&d.sync_wait), f(&d.fault)]);
        }
        row
    };
    t.row(&summary("total", &|h| h.total().to_string()));
    t.row(&summary("p50 (us)", &|h| quantile(h, 0.5)));
    t.row(&summary("p99 (us)", &|h| quantile(h, 0.99)));
    t.render()
}

/// One line per open context and histogram: count and quantile bounds.
pub fn render_contexts(contexts: &[ContextLatency]) -> String {
    let mut t = Table::new(&[
        "context latency",
        "count",
        "p50 (us)",
        "p99 (us)",
        "max (us)",
    ]);
    for c in contexts {
        for (what, h) in [
            ("sync_wait", &c.latency.sync_wait),
            ("fault", &c.latency.fault),
        ] {
            t.row(&[
                format!("ctx {} {what}", c.ctx),
                h.total().to_string(),
                quantile(h, 0.5),
                quantile(h, 0.99),
                quantile(h, 1.0),
            ]);
        }
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBUGFS: &str = "\
ctx  what           0      2      4      8     16     32     64    128    256    512   1024   2048   4096   8192  16384  32768
  3  sync_wait      0      0      0      0      0      0      0      1      4      2      0      0      0      0      0      0
  3  fault          0      0      0      0      0      0      0      0      0      0      3      1      0      0      0      0
  7  sync_wait      0      0      0      0      0      0      0      0      0      0      0      0      0      0      0      0
  7  fault          0      0      0      0      0      0      0      0      0      0      0      0      0      0      0      5

";

    #[test]
    fn parses_the_drivers_per_context_file() {
        let c = parse_contexts(DEBUGFS).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].ctx, 3);
        assert_eq!(c[0].latency.sync_wait.total(), 7);
        assert_eq!(c[0].latency.sync_wait.counts[8], 4);
        assert_eq!(c[0].latency.fault.counts[10], 3);
        assert_eq!(c[1].latency.fault.counts[15], 5);
        assert_eq!(parse_contexts("header only\n").unwrap(), vec![]);
        assert_eq!(parse_contexts("h\n3 sync_wait 1 2\n"), None);
    }

    #[test]
    fn renders_quantiles_and_the_used_buckets() {
        let c = parse_contexts(DEBUGFS).unwrap();
        let text = render_contexts(&c);
        // ctx 3's SYNC waits: 1 in [128,256), 4 in [256,512), 2 in [512,1024).
        let line = text
            .lines()
            .find(|l| l.starts_with("ctx 3 sync_wait"))
            .unwrap();
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[3..], ["7", "<512", "<1024", "<1024"]);
        assert!(text.contains(">=32768"));
        let dev = render_device(&c[0].latency, Some(&c[1].latency));
        assert!(dev.contains("[128, 256) us"));
        assert!(dev.contains("[2048, 4096) us"));
        assert!(
            !dev.contains("[64, 128) us"),
            "empty leading buckets are left out:\n{dev}"
        );
        assert!(dev.contains("sync_wait delta"));
    }
}
