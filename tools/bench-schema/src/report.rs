//! [`Report`]: one `mnic bench` run, the measured side next to its baseline.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::fields::Fields;

/// Which benchmark produced a report (`"bench"` in the JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bench {
    /// `mnic bench copy`: device COPY against memcpy.
    Copy,
    /// `mnic bench register`: on-demand against pinned registration.
    Register,
    /// `mnic bench fault`: device faults against prefetch and CPU faults.
    Fault,
    /// `mnic bench invalidate`: munmap / page-out of registered against unregistered memory.
    Invalidate,
    /// `mnic bench traffic`: the traffic generator against the CPU.
    Traffic,
    /// `mnic bench sync`: `MNIC_IOC_SYNC` round trips, shadow against trapped doorbells.
    Sync,
    /// `mnic bench doorbell`: one hot COPY item, shadow against trapped doorbell.
    Doorbell,
    /// `mnic bench idle`: the device's CPU time while idle (against busy, and one core).
    Idle,
    /// `mnic pingpong`: one-way PUT latency between two nodes against a local COPY.
    Pingpong,
    /// `mnic bw`: PUT and GET bandwidth between two nodes against a local COPY.
    Bw,
}

impl Bench {
    /// The subcommand name (also the JSON value).
    pub fn name(self) -> &'static str {
        match self {
            Bench::Copy => "copy",
            Bench::Register => "register",
            Bench::Fault => "fault",
            Bench::Invalidate => "invalidate",
            Bench::Traffic => "traffic",
            Bench::Sync => "sync",
            Bench::Doorbell => "doorbell",
            Bench::Idle => "idle",
            Bench::Pingpong => "pingpong",
            Bench::Bw => "bw",
        }
    }
}

/// The role of a row in the comparison (`"side"` in the JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// What the benchmark is about.
    Measured,
    /// What it is compared with.
    Baseline,
    /// Context only, compared with nothing.
    Reference,
}

impl Side {
    /// The JSON value, also shown in the text table.
    pub fn name(self) -> &'static str {
        match self {
            Side::Measured => "measured",
            Side::Baseline => "baseline",
            Side::Reference => "reference",
        }
    }
}

/// One side of a comparison: a named set of metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// A name from [`names::row`](crate::names::row).
    pub name: String,
    /// Its role.
    pub side: Side,
    /// Metric name (from [`names::metric`](crate::names::metric)) → value.
    pub metrics: Fields<f64>,
}

/// A ratio between two measurements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ratio {
    /// A name from [`names::ratio`](crate::names::ratio).
    pub name: String,
    /// The quotient; NaN when the denominator was not positive (JSON `null`).
    #[serde(deserialize_with = "nan_if_null")]
    pub value: f64,
    /// What the quotient means, for people.
    #[serde(default)]
    pub meaning: String,
}

impl Ratio {
    /// `num / den` called `name`, NaN unless `den > 0`.
    pub fn of(name: &str, num: f64, den: f64, meaning: &str) -> Self {
        Self {
            name: name.to_owned(),
            value: if den > 0.0 { num / den } else { f64::NAN },
            meaning: meaning.to_owned(),
        }
    }
}

/// JSON has no NaN: serde_json writes it as `null`, so `null` reads back as NaN.
fn nan_if_null<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// What `mnic bench --json` prints: one benchmark run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The benchmark.
    pub bench: Bench,
    /// Device index N of /dev/mnicN.
    pub device: u32,
    /// Parameter name (from [`names::param`](crate::names::param)) → value.
    #[serde(default)]
    pub params: Fields<Value>,
    /// The measured rows and their baselines, in the order measured.
    #[serde(default)]
    pub results: Vec<Row>,
    /// Ratios between rows.
    #[serde(default)]
    pub ratios: Vec<Ratio>,
    /// Device counters that changed during the timed part.
    #[serde(default)]
    pub device_counters: Fields<u64>,
    /// Driver counters of the benchmark's context at the end.
    #[serde(default)]
    pub context: Fields<u64>,
    /// Remarks: a baseline that could not be measured, and why.
    #[serde(default)]
    pub notes: Vec<String>,
    /// Set when the benchmark could not run at all here (a driver or device without
    /// the feature it measures): why. The report then has no results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

impl Report {
    /// An empty report of `bench` on /dev/mnic`device`.
    pub fn new(bench: Bench, device: u32) -> Self {
        Self {
            bench,
            device,
            params: Fields::default(),
            results: Vec::new(),
            ratios: Vec::new(),
            device_counters: Fields::default(),
            context: Fields::default(),
            notes: Vec::new(),
            skipped: None,
        }
    }

    /// An empty report of `bench` that says why it did not run.
    pub fn skipped(bench: Bench, device: u32, why: impl Into<String>) -> Self {
        Self {
            skipped: Some(why.into()),
            ..Self::new(bench, device)
        }
    }

    /// Appends a row.
    pub fn row(&mut self, name: &str, side: Side, metrics: Fields<f64>) {
        self.results.push(Row {
            name: name.to_owned(),
            side,
            metrics,
        });
    }

    /// Appends the ratio `num / den` (see [`Ratio::of`]).
    pub fn ratio(&mut self, name: &str, num: f64, den: f64, meaning: &str) {
        self.ratios.push(Ratio::of(name, num, den, meaning));
    }

    /// Metric `metric` of row `row`.
    pub fn metric(&self, row: &str, metric: &str) -> Option<f64> {
        let r = self.results.iter().find(|r| r.name == row)?;
        r.metrics.get(metric).copied()
    }

    /// The value of ratio `name`.
    pub fn ratio_value(&self, name: &str) -> Option<f64> {
        self.ratios.iter().find(|r| r.name == name).map(|r| r.value)
    }

    /// Parameter `name`, if it is a non-negative integer.
    pub fn param_u64(&self, name: &str) -> Option<u64> {
        self.params.get(name)?.as_u64()
    }

    /// Parameter `name`, if it is a boolean.
    pub fn param_bool(&self, name: &str) -> Option<bool> {
        self.params.get(name)?.as_bool()
    }

    /// Parameter `name`, if it is a string.
    pub fn param_str(&self, name: &str) -> Option<&str> {
        self.params.get(name)?.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{metric, param, ratio, row};
    use serde_json::json;

    fn sample() -> Report {
        let mut r = Report::new(Bench::Copy, 0);
        r.params.push(param::ITERS, json!(20));
        r.params.push(param::SIZE, json!(4096));
        let mut m = Fields::default();
        m.push(metric::MEAN_US, 4.0);
        r.row(row::DEVICE_COPY, Side::Measured, m);
        r.row(row::MEMCPY, Side::Baseline, Fields::default());
        r.ratio(ratio::DEVICE_OVER_MEMCPY_TIME, 4.0, 1.0, "x");
        r.ratio("zero", 1.0, 0.0, "y");
        r.device_counters.push("faults", 3);
        r
    }

    #[test]
    fn json_shape() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(v["bench"], "copy");
        assert_eq!(v["device"], 0);
        assert_eq!(v["params"]["iters"], 20);
        assert_eq!(v["results"][0]["side"], "measured");
        assert_eq!(v["results"][1]["side"], "baseline");
        assert_eq!(v["results"][0]["metrics"]["mean_us"], 4.0);
        assert_eq!(v["ratios"][0]["value"], 4.0);
        // NaN has no JSON form: serde_json writes null.
        assert!(v["ratios"][1]["value"].is_null());
        assert_eq!(v["device_counters"]["faults"], 3);
    }

    #[test]
    fn reads_back_what_it_writes() {
        let r = sample();
        let back: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back.metric(row::DEVICE_COPY, metric::MEAN_US), Some(4.0));
        assert_eq!(back.param_u64(param::SIZE), Some(4096));
        assert_eq!(back.ratio_value(ratio::DEVICE_OVER_MEMCPY_TIME), Some(4.0));
        assert!(back.ratio_value("zero").unwrap().is_nan());
        assert_eq!(back.results, r.results);
        assert_eq!(back.params, r.params);
        assert_eq!(back.skipped, None);
    }

    #[test]
    fn skipped_reports() {
        // A run report has no "skipped" key; a skipped one says why, and reads back.
        let v = serde_json::to_value(sample()).unwrap();
        assert!(v.get("skipped").is_none());
        let r = Report::skipped(Bench::Sync, 1, "no MNIC_IOC_SYNC (ENOTTY)");
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains(r#""bench":"sync""#));
        let back: Report = serde_json::from_str(&text).unwrap();
        assert_eq!(back.skipped.as_deref(), Some("no MNIC_IOC_SYNC (ENOTTY)"));
        assert!(back.results.is_empty());
        assert_eq!(Bench::Doorbell.name(), "doorbell");
        for b in [Bench::Pingpong, Bench::Bw] {
            let v = serde_json::to_value(Report::new(b, 0)).unwrap();
            assert_eq!(v["bench"], b.name());
        }
    }
}
