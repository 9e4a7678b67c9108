//! Renders run records as the Markdown blocks of `docs/testing.md`: the `make test` block
//! (host and guest) and the soak blocks (guest only). Only complete runs are rendered unless
//! the caller allows a partial one, which the block then announces.

use crate::markdown::{cell, duration, header, row, thousands};
use crate::record::{CaseRecord, GuestRun, HostRun, Outcome, Tally};
use anyhow::{bail, Result};

/// Device counters shown per boot: (counter, column title).
const COUNTERS: [(&str, &str); 7] = [
    ("dma_ops", "DMA ops"),
    ("faults", "faults"),
    ("invalidations", "invalidations"),
    ("stale_accesses", "stale accesses"),
    ("oracle_invalidations", "oracle reports"),
    ("oracle_violations", "oracle violations"),
    ("dma_refused", "DMA refused"),
];

fn verdict(t: &Tally) -> &'static str {
    if t.failed == 0 && t.total() > 0 {
        "**pass**"
    } else {
        "**FAIL**"
    }
}

fn tally_cells(t: &Tally) -> [String; 4] {
    [
        t.total().to_string(),
        t.passed.to_string(),
        t.failed.to_string(),
        t.skipped.to_string(),
    ]
}

fn check_complete(guest: &GuestRun, allow_partial: bool) -> Result<String> {
    if guest.complete {
        return Ok(String::new());
    }
    if !allow_partial {
        bail!(
            "the guest record is a partial run ({}): not written; run the whole make target, \
             or pass --allow-partial to publish it marked as partial",
            guest.selection.as_deref().unwrap_or("not every boot ran")
        );
    }
    let boots: Vec<&str> = guest.boots.iter().map(|b| b.name.as_str()).collect();
    Ok(format!(
        "**Partial run, not a full result** ({}): only the boots {}.\n\n",
        guest.selection.as_deref().unwrap_or("not every boot ran"),
        boots.join(", ")
    ))
}

fn failures(guest: &GuestRun) -> String {
    let failed: Vec<_> = guest
        .boots
        .iter()
        .flat_map(|b| b.cases())
        .filter(|c| c.outcome == Outcome::NotOk)
        .collect();
    if failed.is_empty() {
        return String::new();
    }
    let mut s = String::from("Failed guest tests:\n\n");
    for c in failed {
        let first = c
            .message
            .as_deref()
            .unwrap_or("")
            .lines()
            .next()
            .unwrap_or("");
        s += &format!("- `{}`: {}\n", c.test, cell(first));
    }
    s + "\n"
}

fn suites_table(guest: &GuestRun) -> String {
    let mut s = header(&[
        "boot",
        "`mnic-vm run` arguments",
        "suite",
        "tests",
        "passed",
        "failed",
        "skipped",
        "exit",
        "time",
    ]);
    for b in &guest.boots {
        for (i, su) in b.suites.iter().enumerate() {
            let [n, p, f, k] = tally_cells(&su.tally());
            let (boot, args) = if i == 0 {
                (
                    format!("`{}`", b.name),
                    format!("`{}`", b.vm_args.join(" ")),
                )
            } else {
                (String::new(), String::new())
            };
            let exit = su.rc.map(|r| r.to_string()).unwrap_or_else(|| "–".into());
            let time = su.seconds.map(duration).unwrap_or_else(|| "–".into());
            s += &row(&[boot, args, format!("`{}`", su.name), n, p, f, k, exit, time]);
        }
        let [n, p, f, k] = tally_cells(&b.tally());
        s += &row(&[
            String::new(),
            String::new(),
            format!("boot `{}` (job status {})", b.name, b.job_status),
            n,
            p,
            f,
            k,
            String::new(),
            duration(b.seconds),
        ]);
    }
    s
}

fn counters_table(guest: &GuestRun) -> String {
    let mut cols = vec!["boot", "device"];
    cols.extend(COUNTERS.iter().map(|(_, t)| *t));
    let mut s = header(&cols);
    let mut any = false;
    for b in &guest.boots {
        for d in &b.devices {
            any = true;
            let mut cells = vec![format!("`{}`", b.name), format!("#{}", d.index)];
            if let Some(e) = &d.error {
                // The last part of the message: the run directory's path changes every run.
                let why = e.rsplit(": ").next().unwrap_or(e);
                cells[1] += &format!(" (not read: {})", cell(why));
            }
            cells.extend(COUNTERS.iter().map(|(k, _)| {
                d.counters
                    .get(*k)
                    .map(|v| thousands(*v))
                    .unwrap_or_else(|| "–".into())
            }));
            s += &row(&cells);
        }
    }
    if !any {
        return String::new();
    }
    format!(
        "Device counters when each boot's guest job ended (`mnic-vm run --stats`). A device \
         reset (unbind, probe) zeroes every counter but the oracle's (spec §8a), and a device \
         the boot killed cannot be asked:\n\n{s}\n"
    )
}

/// A case's notes without the line that only repeats its duration (`NAME: 1.2 s`), which
/// the time column already shows.
fn shown_notes(c: &CaseRecord) -> String {
    let own_time = |n: &&String| {
        n.strip_prefix(c.name.as_str())
            .and_then(|r| r.strip_prefix(": "))
            .and_then(|r| r.strip_suffix(" s"))
            .is_some_and(|t| t.parse::<f64>().is_ok())
    };
    let notes: Vec<&str> = c
        .notes
        .iter()
        .filter(|n| !own_time(n))
        .map(String::as_str)
        .collect();
    cell(&notes.join("; "))
}

fn every_test(guest: &GuestRun) -> String {
    let n: usize = guest.boots.iter().map(|b| b.cases().count()).sum();
    let mut s = format!(
        "<details><summary>Every guest test ({n}): result, time between its result and the \
         previous one on the console, and the notes its suite printed for it</summary>\n\n"
    );
    s += &header(&["test", "result", "time", "notes"]);
    for c in guest.boots.iter().flat_map(|b| b.cases()) {
        let time = c.seconds.map(duration).unwrap_or_default();
        let result = match c.outcome {
            Outcome::NotOk => "**not ok**".to_string(),
            o => o.word().to_string(),
        };
        s += &row(&[format!("`{}`", c.test), result, time, shown_notes(c)]);
    }
    s + "\n</details>\n"
}

fn guest_sections(guest: &GuestRun) -> String {
    let mut s = format!(
        "Guest boots and suites (plan `{}`; the `boot` rows are each boot's kernel-log and \
         job-status checks):\n\n",
        guest.plan
    );
    s += &suites_table(guest);
    s += "\n";
    s += &failures(guest);
    s += &counters_table(guest);
    s += &every_test(guest);
    s
}

fn kernel(guest: &GuestRun) -> String {
    match &guest.kernel_append {
        Some(a) if !a.is_empty() => format!("`{}` (booted with `{a}`)", guest.kernel_flavor),
        _ => format!("`{}`", guest.kernel_flavor),
    }
}

/// The block `make test` writes: host and guest results of one run.
pub fn test_block(host: &HostRun, guest: &GuestRun, allow_partial: bool) -> Result<String> {
    let partial = check_complete(guest, allow_partial)?;
    if host.provenance.commit != guest.provenance.commit {
        bail!(
            "the host record (commit {:?}) and the guest record (commit {:?}) come from \
             different trees: run `make test` again",
            host.provenance.commit,
            guest.provenance.commit
        );
    }
    let (ht, gt) = (host.tally(), guest.tally());
    let mut all = ht;
    all.merge(gt);
    let mut s = String::from(
        "<!-- Written by `make test` (tests/src/bin/test-report.rs) from \
         target/mnic-test-results/host.json and guest.json; edits here are overwritten. -->\n\n",
    );
    s += &partial;
    s += &format!(
        "Last `make test`: {} — started {}, commit {}, guest kernel {}, {} boots; \
         {} tests: {} passed, {} failed, {} skipped; {}.\n\n",
        verdict(&all),
        host.provenance.started,
        guest.provenance.tree(),
        kernel(guest),
        guest.boots.len(),
        all.total(),
        all.passed,
        all.failed,
        all.skipped,
        duration(host.seconds + guest.seconds),
    );
    s += &header(&["part", "tests", "passed", "failed", "skipped", "time"]);
    let host_label = if host.exit_status == 0 {
        "host (`make test-host`)".to_string()
    } else {
        format!("host (`make test-host`, exit status {})", host.exit_status)
    };
    for (label, t, secs) in [
        (host_label, ht, host.seconds),
        ("guest (`make test-guest`)".to_string(), gt, guest.seconds),
    ] {
        let [n, p, f, k] = tally_cells(&t);
        s += &row(&[label, n, p, f, k, duration(secs)]);
    }
    s += "\nThe host time includes building the tests. Host test binaries that ran at least \
          one test:\n\n";
    s += &header(&["binary", "passed", "failed", "skipped", "failed tests"]);
    for b in host
        .binaries
        .iter()
        .filter(|b| b.tally.total() > 0 || !b.finished)
    {
        let mut failed = b.failed_tests.join(", ");
        if !b.finished {
            failed += " (no summary: did not finish)";
        }
        s += &row(&[
            format!("`{}`", b.name),
            b.tally.passed.to_string(),
            b.tally.failed.to_string(),
            b.tally.skipped.to_string(),
            cell(&failed),
        ]);
    }
    s += "\n";
    s += &guest_sections(guest);
    Ok(s)
}

/// The block `make soak` or `make soak-debug` writes (`target` names the make target).
pub fn soak_block(guest: &GuestRun, target: &str, allow_partial: bool) -> Result<String> {
    let partial = check_complete(guest, allow_partial)?;
    let t = guest.tally();
    let mut s = format!(
        "<!-- Written by `make {target}` (tests/src/bin/test-report.rs) from its record in \
         target/mnic-test-results/; edits here are overwritten. -->\n\n"
    );
    s += &partial;
    s += &format!(
        "Last `make {target}`: {} — started {}, commit {}, kernel {}, {} boots; {} tests: \
         {} passed, {} failed, {} skipped; {}.\n\n",
        verdict(&t),
        guest.provenance.started,
        guest.provenance.tree(),
        kernel(guest),
        guest.boots.len(),
        t.total(),
        t.passed,
        t.failed,
        t.skipped,
        duration(guest.seconds),
    );
    s += &guest_sections(guest);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provenance::Provenance;
    use crate::record::{BootRecord, CaseRecord, DeviceCounters, HostBinary, SuiteRecord};

    fn prov() -> Provenance {
        Provenance {
            started_unix: 0,
            started: "2026-11-30 09:00 UTC".into(),
            commit: Some("abc1234".into()),
            dirty: Some(false),
        }
    }

    fn case(test: &str, outcome: Outcome) -> CaseRecord {
        CaseRecord {
            name: test.rsplit('/').next().unwrap().into(),
            test: test.into(),
            outcome,
            seconds: Some(1.5),
            notes: vec![
                "2048 | pages".into(),
                format!("{}: 1.5 s", test.rsplit('/').next().unwrap()),
            ],
            message: (outcome == Outcome::NotOk).then(|| "boom\nmore".to_string()),
        }
    }

    fn guest(outcomes: &[Outcome]) -> GuestRun {
        let cases = outcomes
            .iter()
            .enumerate()
            .map(|(i, o)| case(&format!("m/s/c{i}"), *o))
            .collect();
        GuestRun {
            provenance: prov(),
            plan: "tests/suites.txt".into(),
            kernel_flavor: "normal".into(),
            kernel_append: None,
            complete: true,
            selection: None,
            seconds: 150.0,
            boots: vec![BootRecord {
                name: "m".into(),
                vm_args: vec!["--devices".into(), "1".into()],
                seconds: 150.0,
                job_status: 0,
                suites: vec![SuiteRecord {
                    name: "s".into(),
                    rc: Some(0),
                    seconds: Some(3.0),
                    cases,
                }],
                devices: vec![
                    DeviceCounters {
                        index: 0,
                        counters: [("oracle_invalidations".to_string(), 270_265)].into(),
                        error: None,
                    },
                    DeviceCounters {
                        index: 1,
                        counters: Default::default(),
                        error: Some("mnic-device: /tmp/run-x/mnic1.ctl: Connection refused".into()),
                    },
                ],
            }],
        }
    }

    fn host() -> HostRun {
        HostRun {
            provenance: prov(),
            exit_status: 0,
            seconds: 60.0,
            binaries: vec![HostBinary {
                name: "mnic_abi (unittests src/lib.rs)".into(),
                tally: Tally {
                    passed: 8,
                    failed: 0,
                    skipped: 0,
                },
                failed_tests: vec![],
                finished: true,
            }],
        }
    }

    #[test]
    fn a_passing_run_is_counted_and_listed() {
        let b = test_block(&host(), &guest(&[Outcome::Ok, Outcome::Skip]), false).unwrap();
        assert!(b.contains("**pass**"), "{b}");
        assert!(
            b.contains("10 tests: 9 passed, 0 failed, 1 skipped; 3 min 30 s"),
            "{b}"
        );
        assert!(b.contains("commit `abc1234`"), "{b}");
        assert!(
            b.contains("| `m/s/c1` | skip | 1.5 s | 2048 \\| pages |"),
            "{b}"
        );
        assert!(b.contains("| 270,265 |"), "{b}");
        assert!(b.contains("| #1 (not read: Connection refused) |"), "{b}");
        assert!(!b.contains("Failed guest tests"), "{b}");
    }

    #[test]
    fn a_failing_case_shows_as_failed() {
        let b = test_block(&host(), &guest(&[Outcome::Ok, Outcome::NotOk]), false).unwrap();
        assert!(b.contains("**FAIL**"), "{b}");
        assert!(b.contains("| `m/s/c1` | **not ok** |"), "{b}");
        assert!(b.contains("- `m/s/c1`: boom\n"), "{b}");
        assert!(b.contains("9 passed, 1 failed, 0 skipped"), "{b}");
        let s = soak_block(&guest(&[Outcome::NotOk]), "soak", false).unwrap();
        assert!(s.contains("Last `make soak`: **FAIL**"), "{s}");
    }

    #[test]
    fn partial_runs_are_refused_or_announced() {
        let mut g = guest(&[Outcome::Ok]);
        g.complete = false;
        g.selection = Some("filter 'm/'".into());
        let e = test_block(&host(), &g, false).unwrap_err().to_string();
        assert!(e.contains("partial"), "{e}");
        let b = soak_block(&g, "soak", true).unwrap();
        assert!(
            b.contains("**Partial run, not a full result** (filter 'm/')"),
            "{b}"
        );
    }

    #[test]
    fn records_of_different_trees_are_refused() {
        let mut h = host();
        h.provenance.commit = Some("0000000".into());
        assert!(test_block(&h, &guest(&[Outcome::Ok]), false).is_err());
    }

    #[test]
    fn a_host_failure_is_shown() {
        let mut h = host();
        h.exit_status = 101;
        h.binaries[0].tally.failed = 1;
        h.binaries[0].failed_tests = vec!["layout".into()];
        let b = test_block(&h, &guest(&[Outcome::Ok]), false).unwrap();
        assert!(b.contains("exit status 101"), "{b}");
        assert!(b.contains("| 8 | 1 | 0 | layout |"), "{b}");
        assert!(b.contains("**FAIL**"), "{b}");
    }
}
