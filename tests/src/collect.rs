//! Turns what one boot printed into its [`BootRecord`]: every KTAP case, each suite's exit
//! status, the KUnit results, the kernel log's health and the job's status, with failure
//! messages, durations and the device counters. The guest harness makes its cargo tests
//! from this record, so the record and cargo's report always agree.

use crate::ktap;
use crate::plan::Boot;
use crate::record::{BootRecord, CaseRecord, DeviceCounters, Outcome, SuiteRecord};
use crate::vm;
use std::collections::BTreeMap;
use std::path::Path;

/// Name of the pseudo-suite holding a boot's own checks.
pub const BOOT_CHECKS: &str = "boot";

fn excerpt(lines: &[String]) -> String {
    let n = lines.len();
    lines[n.saturating_sub(40)..].join("\n")
}

fn check(name: &str, test: String, r: Result<(), String>) -> CaseRecord {
    CaseRecord {
        name: name.to_string(),
        test,
        outcome: if r.is_ok() {
            Outcome::Ok
        } else {
            Outcome::NotOk
        },
        seconds: None,
        notes: Vec::new(),
        message: r.err(),
    }
}

fn time_between(times: &[f64], from: usize, to: usize) -> Option<f64> {
    Some(times.get(to)? - times.get(from)?)
}

/// The record of a boot that could not even start.
pub fn failed_boot(boot: &Boot, error: String) -> BootRecord {
    BootRecord {
        name: boot.name.clone(),
        vm_args: boot.vm_args.clone(),
        seconds: 0.0,
        job_status: -1,
        suites: vec![SuiteRecord {
            name: BOOT_CHECKS.into(),
            rc: None,
            seconds: None,
            cases: vec![check("boot", format!("{}/boot", boot.name), Err(error))],
        }],
        devices: Vec::new(),
    }
}

fn suite_record(b: &str, name: &str, s: &ktap::Suite, times: &[f64]) -> SuiteRecord {
    let mut cases = Vec::new();
    let mut prev = s.begin_line;
    for c in &s.cases {
        let (outcome, message) = match (c.passed, c.skipped) {
            (_, true) => (Outcome::Skip, None),
            (true, false) => (Outcome::Ok, None),
            (false, false) => (
                Outcome::NotOk,
                Some(format!(
                    "{} # {}\n--- suite output ---\n{}",
                    c.name,
                    c.directive,
                    excerpt(&s.output)
                )),
            ),
        };
        cases.push(CaseRecord {
            name: c.name.clone(),
            test: format!("{b}/{name}/{}", c.name),
            outcome,
            seconds: time_between(times, prev, c.line),
            notes: c.notes.clone(),
            message,
        });
        prev = c.line;
    }
    let status = match (s.rc, s.cases.is_empty()) {
        (_, true) => Err(format!("printed no KTAP result\n{}", excerpt(&s.output))),
        (Some(0), false) => Ok(()),
        (Some(rc), false) => Err(format!("exited with {rc}\n{}", excerpt(&s.output))),
        (None, false) => Err(format!(
            "never finished (guest crashed or timed out)\n{}",
            excerpt(&s.output)
        )),
    };
    cases.push(check(
        "exit_status",
        format!("{b}/{name}/exit_status"),
        status,
    ));
    SuiteRecord {
        name: name.to_string(),
        rc: s.rc,
        seconds: s
            .end_line
            .and_then(|e| time_between(times, s.begin_line, e)),
        cases,
    }
}

fn kunit_record(b: &str, console: &str, log: &Path) -> SuiteRecord {
    let found = ktap::kunit_cases(console);
    let mut cases = Vec::new();
    if found.is_empty() {
        cases.push(check(
            "results",
            format!("{b}/kunit"),
            Err(format!(
                "no KUnit results in the console (see {})",
                log.display()
            )),
        ));
    }
    for c in found {
        let r = if c.passed {
            Ok(())
        } else {
            Err(format!("{}.{} failed # {}", c.path, c.name, c.directive))
        };
        let mut rec = check(
            &format!("{}/{}", c.path, c.name),
            format!("{b}/kunit/{}/{}", c.path, c.name),
            r,
        );
        if c.skipped {
            rec.outcome = Outcome::Skip;
        }
        cases.push(rec);
    }
    SuiteRecord {
        name: "kunit".into(),
        rc: None,
        seconds: None,
        cases,
    }
}

/// Everything a finished boot reported; `log` is where its console was kept.
pub fn boot_record(boot: &Boot, out: &vm::Outcome, log: &Path) -> BootRecord {
    let b = &boot.name;
    let suites = ktap::suites(&out.console);
    let mut expected: Vec<String> = Vec::new();
    if !boot.setup.is_empty() {
        expected.push("setup".into());
    }
    expected.extend(boot.suites.iter().map(|(n, _)| n.clone()));
    let mut records = Vec::new();
    for name in &expected {
        match suites.iter().find(|s| &s.name == name) {
            Some(s) => records.push(suite_record(b, name, s, &out.line_times)),
            None => records.push(SuiteRecord {
                name: name.clone(),
                rc: None,
                seconds: None,
                cases: vec![check(
                    "ran",
                    format!("{b}/{name}/ran"),
                    Err(format!(
                        "suite never started (see {})\n{}",
                        log.display(),
                        out.stderr
                    )),
                )],
            }),
        }
    }
    if boot.kunit {
        records.push(kunit_record(b, &out.console, log));
    }
    let problems = kernel_problems(out);
    let clean = if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    };
    let job = if out.status == 0 {
        Ok(())
    } else {
        Err(format!(
            "guest job status {} (124 = timeout, 125 = no result)\n{}",
            out.status, out.stderr
        ))
    };
    records.push(SuiteRecord {
        name: BOOT_CHECKS.into(),
        rc: None,
        seconds: None,
        cases: vec![
            check("kernel_log_clean", format!("{b}/kernel_log_clean"), clean),
            check("guest_job_status", format!("{b}/guest_job_status"), job),
        ],
    });
    BootRecord {
        name: b.clone(),
        vm_args: boot.vm_args.clone(),
        seconds: out.seconds,
        job_status: out.status,
        suites: records,
        devices: devices(out),
    }
}

/// Both guests' kernel warnings: a boot's log is clean only if every kernel's is; guest 2's
/// lines are marked as such.
fn kernel_problems(out: &vm::Outcome) -> Vec<String> {
    let mut problems = ktap::kernel_problems(&out.console);
    if let Some(peer) = &out.peer_console {
        problems.extend(
            ktap::kernel_problems(peer)
                .into_iter()
                .map(|p| format!("{}{p}", vm::GUEST2_PREFIX)),
        );
    }
    problems
}

/// Every device's counters: guest 1's, then guest 2's (the runner numbers the run's
/// devices across guests).
fn devices(out: &vm::Outcome) -> Vec<DeviceCounters> {
    let mut d = device_counters(&out.console);
    if let Some(peer) = &out.peer_console {
        d.extend(device_counters(peer));
    }
    d
}

/// The `[host] mnic-device #N counters:` blocks `mnic-vm run --stats` prints when the job
/// ends: `name value` lines up to the first line that is not one, or the reason the device
/// could not be asked.
pub fn device_counters(console: &str) -> Vec<DeviceCounters> {
    let mut out: Vec<DeviceCounters> = Vec::new();
    let mut cur: Option<DeviceCounters> = None;
    for line in console.lines() {
        let header = line
            .strip_prefix("[host] mnic-device #")
            .and_then(|r| r.strip_suffix(" counters:"))
            .and_then(|n| n.parse::<u32>().ok());
        if let Some(index) = header {
            out.extend(cur.take());
            cur = Some(DeviceCounters {
                index,
                counters: BTreeMap::new(),
                error: None,
            });
            continue;
        }
        let Some(dev) = cur.as_mut() else { continue };
        let pair = line
            .split_once(' ')
            .filter(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            })
            .and_then(|(k, v)| Some((k, v.trim().parse::<u64>().ok()?)));
        match pair {
            Some((k, v)) => {
                dev.counters.insert(k.to_string(), v);
            }
            None => {
                if dev.counters.is_empty() {
                    if let Some(e) = line.strip_prefix("(stats failed: ") {
                        dev.error = Some(e.strip_suffix(')').unwrap_or(e).to_string());
                    }
                }
                out.extend(cur.take());
            }
        }
    }
    out.extend(cur);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(console: &str, status: i32) -> vm::Outcome {
        let n = console.lines().count();
        vm::Outcome {
            console: console.to_string(),
            peer_console: None,
            status,
            stderr: String::new(),
            line_times: (0..n).map(|i| i as f64).collect(),
            seconds: n as f64,
        }
    }

    fn plan(text: &str) -> Boot {
        crate::plan::parse(text).unwrap().remove(0)
    }

    #[test]
    fn a_failed_case_fails_its_suite_and_is_timed() {
        let boot = plan("boot b --devices 1\nsuite b s prog\n");
        let console = "# mnic-suite-begin s\n1..2\n# took 3 faults\nok 1 good\nnot ok 2 bad # broke\n# mnic-suite-end s rc=1\nMNIC-EXIT=1\n";
        let r = boot_record(&boot, &outcome(console, 1), Path::new("b.log"));
        let names: Vec<_> = r.cases().map(|c| c.test.as_str()).collect();
        assert_eq!(
            names,
            [
                "b/s/good",
                "b/s/bad",
                "b/s/exit_status",
                "b/kernel_log_clean",
                "b/guest_job_status"
            ]
        );
        let s = &r.suites[0];
        assert_eq!(s.cases[0].seconds, Some(3.0));
        assert_eq!(s.cases[1].seconds, Some(1.0));
        assert_eq!(s.cases[0].notes, ["took 3 faults"]);
        assert_eq!(s.cases[1].outcome, Outcome::NotOk);
        assert!(s.cases[1].message.as_deref().unwrap().contains("broke"));
        assert_eq!(s.seconds, Some(5.0));
        let t = r.tally();
        assert_eq!((t.passed, t.failed), (2, 3));
    }

    #[test]
    fn a_suite_that_never_started_is_a_failure() {
        let boot = plan("boot b\nsuite b s prog\nkunit b\n");
        let r = boot_record(&boot, &outcome("nothing\n", 125), Path::new("b.log"));
        assert_eq!(r.suites[0].cases[0].test, "b/s/ran");
        assert_eq!(r.suites[1].cases[0].test, "b/kunit");
        assert_eq!(
            (r.tally().failed, r.tally().passed),
            (3, 1),
            "only the kernel log is clean"
        );
    }

    #[test]
    fn a_two_guest_boot_checks_both_kernels_and_keeps_both_devices() {
        let boot = plan("boot b --devices 1 --peer-cmd p.sh\nsuite b s prog\n");
        let console = "# mnic-suite-begin s\nok 1 a\n# mnic-suite-end s rc=0\n[host] mnic-device #0 counters:\nstale_accesses 0\n";
        let peer = "[    3.0] WARNING: CPU: 0 PID: 9 at mm/x.c:1\n[host] mnic-device #1 counters:\nstale_accesses 0\n";
        let mut out = outcome(console, 0);
        out.peer_console = Some(peer.to_string());
        let r = boot_record(&boot, &out, Path::new("b.log"));
        let clean = r.cases().find(|c| c.test == "b/kernel_log_clean").unwrap();
        assert_eq!(
            clean.outcome,
            Outcome::NotOk,
            "guest 2's warning fails the boot"
        );
        assert!(clean
            .message
            .as_deref()
            .unwrap()
            .starts_with("[guest2] [    3.0] WARNING"));
        let indices: Vec<u32> = r.devices.iter().map(|d| d.index).collect();
        assert_eq!(indices, [0, 1]);
        out.peer_console = Some("[    3.0] mnic0: bound\n".into());
        let r = boot_record(&boot, &out, Path::new("b.log"));
        assert_eq!(r.tally().failed, 0);
    }

    #[test]
    fn device_counters_are_read_until_the_block_ends() {
        let console = "x\n[host] mnic-device #0 counters:\ndma_ops 6\noracle_violations 0\n\n[    4.0] reboot\n[host] mnic-device #1 counters:\n(stats failed: refused (os error 111))\n";
        let d = device_counters(console);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].counters["dma_ops"], 6);
        assert_eq!(d[0].counters.len(), 2);
        assert_eq!(d[1].index, 1);
        assert!(d[1].counters.is_empty());
        assert_eq!(d[1].error.as_deref(), Some("refused (os error 111)"));
    }
}
