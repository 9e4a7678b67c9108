//! The machine-readable record of a test run: what the guest harness and `make test-host`
//! write under `target/mnic-test-results/`, and what `test-report` turns into Markdown.
//! Every measured figure the docs show comes from here.

use crate::provenance::Provenance;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The result of one test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Passed.
    #[serde(rename = "ok")]
    Ok,
    /// Failed.
    #[serde(rename = "not ok")]
    NotOk,
    /// Skipped (`ok ... # SKIP`); cargo reports it as ignored.
    #[serde(rename = "skip")]
    Skip,
}

impl Outcome {
    /// The KTAP word for it.
    pub fn word(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::NotOk => "not ok",
            Outcome::Skip => "skip",
        }
    }
}

/// Passed / failed / skipped counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Passed.
    pub passed: u64,
    /// Failed.
    pub failed: u64,
    /// Skipped (ignored).
    pub skipped: u64,
}

impl Tally {
    /// All tests counted.
    pub fn total(&self) -> u64 {
        self.passed + self.failed + self.skipped
    }

    /// Counts one outcome.
    pub fn add(&mut self, o: Outcome) {
        match o {
            Outcome::Ok => self.passed += 1,
            Outcome::NotOk => self.failed += 1,
            Outcome::Skip => self.skipped += 1,
        }
    }

    /// Adds another tally.
    pub fn merge(&mut self, other: Tally) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
    }
}

/// One guest test: a KTAP case, a suite's exit status, a KUnit case or a boot check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseRecord {
    /// Name inside its suite.
    pub name: String,
    /// The cargo test name (`BOOT/SUITE/CASE`).
    pub test: String,
    /// Its result.
    pub outcome: Outcome,
    /// Seconds between the previous result (or the suite's start) and this result reaching
    /// the host; absent where the console gives no such time (KUnit, boot checks).
    pub seconds: Option<f64>,
    /// The suite's diagnostic lines printed for this case.
    #[serde(default)]
    pub notes: Vec<String>,
    /// Why it failed (failures only).
    pub message: Option<String>,
}

/// A suite of one boot (`setup`, a plan suite, `kunit`, or `boot` for the boot's own checks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuiteRecord {
    /// Suite name.
    pub name: String,
    /// The suite program's exit status; absent if it never ended (or has none).
    pub rc: Option<i32>,
    /// Seconds from its begin marker to its end marker, as seen by the host.
    pub seconds: Option<f64>,
    /// Its tests, in order.
    pub cases: Vec<CaseRecord>,
}

impl SuiteRecord {
    /// Counts of its tests.
    pub fn tally(&self) -> Tally {
        let mut t = Tally::default();
        self.cases.iter().for_each(|c| t.add(c.outcome));
        t
    }
}

/// One device's counters as `mnic-device stats` printed them when the guest job ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceCounters {
    /// Device index (`mnic-device #N`).
    pub index: u32,
    /// Counter name to value; empty if the device could not be asked.
    pub counters: BTreeMap<String, u64>,
    /// Why the counters are missing (a killed device), if they are.
    pub error: Option<String>,
}

/// One VM boot of the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootRecord {
    /// Boot name from the plan.
    pub name: String,
    /// Its `mnic-vm run` arguments.
    pub vm_args: Vec<String>,
    /// Wall-clock seconds of the boot.
    pub seconds: f64,
    /// The runner's exit status (the guest job's; 124 timeout, 125 no result; -1 no run).
    pub job_status: i32,
    /// Its suites, in order; the last one, `boot`, holds the boot's own checks.
    pub suites: Vec<SuiteRecord>,
    /// Device counters at the end of the job.
    #[serde(default)]
    pub devices: Vec<DeviceCounters>,
}

impl BootRecord {
    /// Counts of its tests.
    pub fn tally(&self) -> Tally {
        let mut t = Tally::default();
        self.suites.iter().for_each(|s| t.merge(s.tally()));
        t
    }

    /// Every test of the boot.
    pub fn cases(&self) -> impl Iterator<Item = &CaseRecord> {
        self.suites.iter().flat_map(|s| s.cases.iter())
    }
}

/// A run of the guest harness (`make test-guest`, `make soak`, `make soak-debug`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestRun {
    /// When and on what tree it ran.
    pub provenance: Provenance,
    /// The plan file (`tests/suites.txt` or `tests/soak.txt`).
    pub plan: String,
    /// `normal` or `debug` (MNIC_KERNEL_FLAVOR).
    pub kernel_flavor: String,
    /// Extra kernel command line (MNIC_VM_APPEND), if any.
    #[serde(default)]
    pub kernel_append: Option<String>,
    /// True when every boot of the plan ran and no test was filtered out.
    pub complete: bool,
    /// What selected a subset (filter and skip arguments), for a partial run.
    pub selection: Option<String>,
    /// Wall-clock seconds of all boots.
    pub seconds: f64,
    /// The boots, in plan order.
    pub boots: Vec<BootRecord>,
}

impl GuestRun {
    /// Counts of every test.
    pub fn tally(&self) -> Tally {
        let mut t = Tally::default();
        self.boots.iter().for_each(|b| t.merge(b.tally()));
        t
    }
}

/// One test binary of the host tests, from libtest's summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostBinary {
    /// `crate (source)`, e.g. `mnic_device (unittests src/lib.rs)` or `mnic (doc-tests)`.
    pub name: String,
    /// Counts from its `test result:` line (criterion benches: `Success` lines).
    pub tally: Tally,
    /// Names of its failed tests.
    pub failed_tests: Vec<String>,
    /// False if it started but printed no summary (it crashed or was cut short).
    pub finished: bool,
}

/// A run of the host tests (`make test-host`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostRun {
    /// When and on what tree it ran.
    pub provenance: Provenance,
    /// Exit status of the test commands.
    pub exit_status: i32,
    /// Wall-clock seconds (build included).
    pub seconds: f64,
    /// Every test binary cargo ran.
    pub binaries: Vec<HostBinary>,
}

impl HostRun {
    /// Counts over every binary.
    pub fn tally(&self) -> Tally {
        let mut t = Tally::default();
        self.binaries.iter().for_each(|b| t.merge(b.tally));
        t
    }
}

/// Writes a record as pretty JSON, creating its directory.
pub fn save<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// Reads a record written by [`save`].
pub fn load<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_serialize_as_ktap_words() {
        let s = serde_json::to_string(&[Outcome::Ok, Outcome::NotOk, Outcome::Skip]).unwrap();
        assert_eq!(s, r#"["ok","not ok","skip"]"#);
    }

    #[test]
    fn tallies_add_up() {
        let mut t = Tally::default();
        for o in [Outcome::Ok, Outcome::Ok, Outcome::NotOk, Outcome::Skip] {
            t.add(o);
        }
        assert_eq!((t.passed, t.failed, t.skipped, t.total()), (2, 1, 1, 4));
    }
}
