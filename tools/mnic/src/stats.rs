//! `mnic stats`: the driver's per-context counters, the device counters, the device's fabric
//! counters (a node of a fabric; from debugfs, root only), and the latency histograms of SYNC
//! waits and device faults (device-wide, and per open context).

use std::time::{Duration, Instant};

use mnic::abi::MnicCtxStats;
use mnic::{ctx_stats_fields, DevCounters, Device, Latency};
use mnic_bench_schema::Fields;
use serde::Serialize;

use crate::error::CmdResult;
use crate::latency::{self, ContextLatency};
use crate::output::Table;

/// One reading.
#[derive(Debug, Serialize)]
pub struct Sample {
    pub device: u32,
    pub path: String,
    pub sample: u32,
    pub elapsed_s: f64,
    /// Driver counters of the context this tool opened.
    pub context: Fields<u64>,
    /// Device counters (all contexts).
    pub device_counters: Fields<u64>,
    /// Device counters since the previous sample (only with `--interval`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_delta: Option<Fields<u64>>,
    /// Lower bound of each latency bucket, in microseconds (spec §13).
    pub latency_bucket_start_us: Vec<u64>,
    /// SYNC-wait and fault latency histograms of the device (all contexts).
    pub device_latency: Latency,
    /// The same since the previous sample (only with `--interval`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_latency_delta: Option<Latency>,
    /// Each open context's histograms (debugfs; absent when it cannot be read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_latency: Option<Vec<ContextLatency>>,
    /// The device's fabric counters by name (spec §10; debugfs `fabric`): absent when it
    /// cannot be read or the device is no node of a fabric.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fabric_counters: Option<Fields<u64>>,
}

/// What one sample reads.
pub struct Reading<'a> {
    pub ctx: &'a MnicCtxStats,
    pub counters: &'a DevCounters,
    pub latency: &'a Latency,
    pub contexts: Option<Vec<ContextLatency>>,
    pub fabric: Option<Fields<u64>>,
}

/// The fabric counters in debugfs `fabric` of directory `dir` (`/sys/kernel/debug/mnicN`);
/// `None` if it cannot be read (debugfs not mounted, not root) or has none.
fn read_fabric(dir: &std::path::Path) -> Option<Fields<u64>> {
    parse_fabric(&std::fs::read_to_string(dir.join("fabric")).ok()?)
}

/// The driver's `fabric` file: its own lines, then, on a node of a fabric, one
/// `rma_<name> <value>` line per fabric counter; the counters by name.
fn parse_fabric(text: &str) -> Option<Fields<u64>> {
    let prefix = mnic::abi::fabric_counter::PREFIX;
    let f: Fields<u64> = text
        .lines()
        .filter_map(|l| {
            let (name, v) = l.strip_prefix(prefix)?.split_once(' ')?;
            Some((name, v.parse().ok()?))
        })
        .collect();
    (!f.is_empty()).then_some(f)
}

pub fn sample(
    dev: &Device,
    n: u32,
    elapsed: Duration,
    now: Reading<'_>,
    prev: Option<(&DevCounters, &Latency)>,
) -> Sample {
    Sample {
        device: dev.index(),
        path: dev.path().display().to_string(),
        sample: n,
        elapsed_s: elapsed.as_secs_f64(),
        context: ctx_stats_fields(now.ctx).into_iter().collect(),
        device_counters: now.counters.iter().collect(),
        device_delta: prev.map(|(p, _)| now.counters.since(p).iter().collect()),
        latency_bucket_start_us: (0..mnic::abi::LATENCY_BUCKETS)
            .map(mnic::abi::latency_bucket_start_us)
            .collect(),
        device_latency: *now.latency,
        device_latency_delta: prev.map(|(_, l)| now.latency.since(l)),
        context_latency: now.contexts,
        fabric_counters: now.fabric,
    }
}

pub fn render(s: &Sample) -> String {
    let mut out = format!("{} sample {} at {:.1}s\n", s.path, s.sample, s.elapsed_s);
    let mut t = Table::new(&["device counter", "value", "delta"]);
    for (name, v) in &s.device_counters.0 {
        let d = s
            .device_delta
            .as_ref()
            .and_then(|d| d.get(name))
            .map_or(String::new(), u64::to_string);
        t.row(&[name.clone(), v.to_string(), d]);
    }
    out.push_str(&t.render());
    out.push('\n');
    if let Some(f) = &s.fabric_counters {
        let mut t = Table::new(&["fabric counter", "value"]);
        for (name, v) in f.iter() {
            t.row(&[name.to_string(), v.to_string()]);
        }
        out.push_str(&t.render());
        out.push('\n');
    }
    let mut t = Table::new(&["context counter (this tool's context)", "value"]);
    for (name, v) in &s.context.0 {
        t.row(&[name.clone(), v.to_string()]);
    }
    out.push_str(&t.render());
    out.push('\n');
    out.push_str(&latency::render_device(
        &s.device_latency,
        s.device_latency_delta.as_ref(),
    ));
    out.push('\n');
    match &s.context_latency {
        Some(c) => out.push_str(&latency::render_contexts(c)),
        None => out.push_str("per-context latency: debugfs latency_us not readable (root only)\n"),
    }
    out
}

pub fn run(device: u32, interval: Option<f64>, count: Option<u32>, json: bool) -> CmdResult {
    let dev = Device::from_index(device);
    let ctx = dev.context()?;
    let period = match interval {
        Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
        Some(_) => return Err("--interval must be a positive number of seconds".into()),
        None => None,
    };
    // Without an interval: one sample. With one: `count` samples (default: forever).
    let total = match (period, count) {
        (None, _) => 1,
        (Some(_), Some(c)) => c,
        (Some(_), None) => u32::MAX,
    };
    let start = Instant::now();
    let mut prev: Option<(DevCounters, Latency)> = None;
    let debugfs = std::path::PathBuf::from(format!("/sys/kernel/debug/mnic{device}"));
    for n in 0..total {
        if n > 0 {
            if let Some(p) = period {
                std::thread::sleep(p);
            }
        }
        let now = ctx.dev_stats()?;
        let cs = ctx.ctx_stats()?;
        let lat = ctx.dev_latency()?;
        let reading = Reading {
            ctx: &cs,
            counters: &now,
            latency: &lat,
            contexts: latency::read_contexts(&debugfs),
            fabric: read_fabric(&debugfs),
        };
        let s = sample(
            &dev,
            n,
            start.elapsed(),
            reading,
            prev.as_ref().map(|(c, l)| (c, l)),
        );
        if json {
            // One JSON object per line, so a stream of samples is easy to consume.
            println!("{}", serde_json::to_string(&s)?);
        } else {
            println!("{}", render(&s));
        }
        prev = Some((now, lat));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mnic::abi::{counter, MnicDevStats};

    #[test]
    fn json_shape() {
        let mut a = MnicDevStats::default();
        a.counters[counter::FAULTS as usize] = 3;
        let mut b = a;
        b.counters[counter::FAULTS as usize] = 10;
        let cs = MnicCtxStats {
            faults: 2,
            ..Default::default()
        };
        let mut lat_a = Latency::default();
        lat_a.sync_wait.counts[8] = 2;
        let mut lat_b = lat_a;
        lat_b.sync_wait.counts[8] = 5;
        lat_b.fault.counts[10] = 1;
        let (ca, cb) = (DevCounters(a), DevCounters(b));
        let reading = |counters, latency| Reading {
            ctx: &cs,
            counters,
            latency,
            contexts: None,
            fabric: None,
        };
        let s = sample(
            &Device::from_index(0),
            1,
            Duration::from_millis(1500),
            reading(&cb, &lat_b),
            Some((&ca, &lat_a)),
        );
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["device"], 0);
        assert_eq!(v["sample"], 1);
        assert_eq!(v["elapsed_s"], 1.5);
        assert_eq!(v["context"]["faults"], 2);
        assert_eq!(v["device_counters"]["faults"], 10);
        assert_eq!(v["device_delta"]["faults"], 7);
        assert_eq!(v["device_latency"]["sync_wait"]["counts"][8], 5);
        assert_eq!(v["device_latency_delta"]["sync_wait"]["counts"][8], 3);
        assert_eq!(v["device_latency_delta"]["fault"]["counts"][10], 1);
        assert_eq!(v["latency_bucket_start_us"][15], 32768);
        assert!(v.get("context_latency").is_none());
        assert_eq!(
            v["device_counters"].as_object().unwrap().len(),
            counter::COUNT as usize
        );
        // Key order follows the counter numbering.
        let line = serde_json::to_string(&s).unwrap();
        assert!(line.find("\"dma_ops\"").unwrap() < line.find("\"commands\"").unwrap());
        let first = sample(
            &Device::from_index(0),
            0,
            Duration::ZERO,
            reading(&ca, &lat_a),
            None,
        );
        let first = serde_json::to_value(&first).unwrap();
        assert!(first.get("device_delta").is_none());
        assert!(first.get("fabric_counters").is_none());
        assert!(first.get("device_latency_delta").is_none());
        let text = render(&s);
        assert!(text.contains("faults"));
        assert!(text.contains("[256, 512) us"), "{text}");
    }

    #[test]
    fn fabric_counters_from_debugfs() {
        assert!(parse_fabric("node 0xffff\nremote_keys 0\nnetwork_faults 0\n").is_none());
        let text =
            "node 0x2\nremote_keys 1\nnetwork_faults 4\nrma_put_served 192\nrma_rnr_sent 7\n";
        let f = parse_fabric(text).unwrap();
        assert_eq!(f.get("put_served"), Some(&192));
        assert_eq!(f.get("rnr_sent"), Some(&7));
        assert_eq!(
            f.get("network_faults"),
            None,
            "the driver's own line is not one"
        );
        let s = Sample {
            fabric_counters: Some(f),
            ..sample(
                &Device::from_index(1),
                0,
                Duration::ZERO,
                Reading {
                    ctx: &MnicCtxStats::default(),
                    counters: &DevCounters(MnicDevStats::default()),
                    latency: &Latency::default(),
                    contexts: None,
                    fabric: None,
                },
                None,
            )
        };
        assert_eq!(
            serde_json::to_value(&s).unwrap()["fabric_counters"]["rnr_sent"],
            7
        );
        assert!(render(&s).contains("fabric counter"));
    }
}
