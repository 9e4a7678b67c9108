//! The guest half: the marker lines `images/guest/bench.sh` prints on the guest
//! console, each `mnic bench` report read through the shared schema.
//!
//! ```text
//! @@MNIC-ENV {"mode":...,"cpus":...,"mem_total_kb":...,"swap_total_kb":...,"kernel":...}
//! @@MNIC-JSON NAME {...one mnic bench --json report...}
//! @@MNIC-FAIL NAME rc=N last stderr lines
//! @@MNIC-DONE fails=N
//! ```

use std::collections::BTreeMap;

use mnic_bench_schema::names::param;
use mnic_bench_schema::Report;
use serde::{Deserialize, Serialize};

/// The guest's environment line (written by `bench.sh`, not by the `mnic` tool).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GuestEnv {
    /// "full" or "quick".
    pub mode: String,
    pub cpus: u32,
    pub mem_total_kb: u64,
    pub swap_total_kb: u64,
    pub kernel: String,
}

/// Guest reports by case name, plus failures and the environment line.
#[derive(Debug, Default)]
pub struct Guest {
    pub reports: BTreeMap<String, Report>,
    pub failures: Vec<String>,
    pub env: Option<GuestEnv>,
    /// The end marker was seen.
    pub done: bool,
}

impl Guest {
    /// Picks the marker lines out of a guest console (anything may surround them).
    pub fn parse_console(&mut self, text: &str) {
        for line in text.lines() {
            let line = line.trim_end_matches('\r');
            let Some(at) = line.find("@@MNIC-") else {
                continue;
            };
            let l = &line[at..];
            if let Some(rest) = l.strip_prefix("@@MNIC-JSON ") {
                let (name, body) = rest.split_once(' ').unwrap_or((rest, ""));
                match serde_json::from_str::<Report>(body) {
                    Ok(r) => {
                        self.reports.insert(name.to_owned(), r);
                    }
                    Err(e) => self
                        .failures
                        .push(format!("{name}: unreadable report on the console ({e})")),
                }
            } else if let Some(rest) = l.strip_prefix("@@MNIC-FAIL ") {
                self.failures.push(rest.to_owned());
            } else if let Some(rest) = l.strip_prefix("@@MNIC-ENV ") {
                self.env = serde_json::from_str(rest).ok();
            } else if l.starts_with("@@MNIC-DONE") {
                self.done = true;
            }
        }
    }

    /// Metric `metric` of row `row` in case `case`.
    pub fn metric(&self, case: &str, row: &str, metric: &str) -> Option<f64> {
        self.reports.get(case)?.metric(row, metric)
    }

    /// Ratio `name` of case `case`.
    pub fn ratio(&self, case: &str, name: &str) -> Option<f64> {
        self.reports.get(case)?.ratio_value(name)
    }

    /// Cases whose name starts with `prefix`, ordered by their size parameter.
    pub fn by_size(&self, prefix: &str) -> Vec<(u64, &str, &Report)> {
        let mut v: Vec<_> = self
            .reports
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .filter_map(|(k, r)| Some((r.param_u64(param::SIZE)?, k.as_str(), r)))
            .collect();
        v.sort_by_key(|x| x.0);
        v
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use mnic_bench_schema::names::{metric, ratio, row};
    use mnic_bench_schema::{Bench, Fields, Side};
    use serde_json::json;

    /// A `copy --size 1M` report as the tool writes it: device at 100 µs, memcpy at 200.
    pub fn copy_report() -> Report {
        let mut r = Report::new(Bench::Copy, 0);
        r.params.push(param::SIZE, json!(1 << 20));
        for (name, side, p50) in [
            (row::DEVICE_COPY, Side::Measured, 100.0),
            (row::MEMCPY, Side::Baseline, 200.0),
        ] {
            let mut m = Fields::default();
            m.push(metric::P50_US, p50);
            m.push(metric::BYTES, f64::from(1 << 20));
            r.row(name, side, m);
        }
        r.ratio(ratio::DEVICE_OVER_MEMCPY_BANDWIDTH, 200.0, 100.0, "");
        r
    }

    /// A console with every kind of marker, noise around them and one broken report.
    pub fn console() -> String {
        format!(
            "[    1.0] boot\r\n\
             junk @@MNIC-ENV {{\"cpus\":2,\"mem_total_kb\":2048000,\"swap_total_kb\":0,\"kernel\":\"7.3\"}}\n\
             @@MNIC-JSON copy_hot_1M {}\n\
             @@MNIC-JSON broken {{\"x\":\n\
             @@MNIC-FAIL register_1G rc=1 out of memory\n\
             @@MNIC-DONE fails=1\n",
            serde_json::to_string(&copy_report()).unwrap()
        )
    }

    #[test]
    fn console_markers_survive_noise() {
        let mut g = Guest::default();
        g.parse_console(&console());
        assert!(g.done);
        assert_eq!(g.env.as_ref().unwrap().cpus, 2);
        assert_eq!(g.env.as_ref().unwrap().kernel, "7.3");
        assert_eq!(
            g.ratio("copy_hot_1M", ratio::DEVICE_OVER_MEMCPY_BANDWIDTH),
            Some(2.0)
        );
        assert_eq!(
            g.metric("copy_hot_1M", row::MEMCPY, metric::P50_US),
            Some(200.0)
        );
        assert_eq!(g.by_size("copy_hot_")[0].0, 1 << 20);
        // The broken report and the FAIL line.
        assert_eq!(g.failures.len(), 2);
    }
}
