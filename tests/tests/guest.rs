//! The guest test harness (`make test-guest`): boots every VM of the plan
//! (`tests/suites.txt`, or `tests/soak.txt` with MNIC_SOAK=1), and reports each KTAP
//! case, each suite's exit status, KUnit results and the kernel log's health as
//! individual cargo tests. Consoles are kept in target/guest-logs/; the run's record
//! (every test's result, durations, device counters, date and commit) goes to
//! MNIC_TEST_RECORD, by default target/mnic-test-results/PLAN.json (see `record_path`).

use libtest_mimic::{Arguments, Failed, Trial};
use mnic_tests::record::{self, BootRecord, GuestRun, Outcome};
use mnic_tests::{collect, plan, provenance::Provenance, vm};
use std::path::{Path, PathBuf};
use std::time::Instant;

fn trial(name: String, result: Result<(), String>) -> Trial {
    Trial::test(name, move || result.clone().map_err(Failed::from))
}

fn boot_record(art: &vm::Artifacts, boot: &plan::Boot, logs: &Path) -> BootRecord {
    let b = &boot.name;
    eprintln!("booting guest '{b}' ({} suites)...", boot.suites.len());
    let out = match vm::boot(art, &boot.vm_args, &boot.guest_job()) {
        Ok(o) => o,
        Err(e) => return collect::failed_boot(boot, format!("{e:#}")),
    };
    let log = logs.join(format!("{b}.log"));
    let peer = match &out.peer_console {
        Some(p) => format!("\n--- guest 2 console ---\n{p}"),
        None => String::new(),
    };
    let _ = std::fs::write(
        &log,
        format!(
            "{}{peer}\n--- runner stderr ---\n{}",
            out.console, out.stderr
        ),
    );
    collect::boot_record(boot, &out, &log)
}

/// The cargo tests of a boot, straight from its record.
fn trials(rec: &BootRecord) -> Vec<Trial> {
    rec.cases()
        .map(|c| {
            let r = match c.outcome {
                Outcome::NotOk => Err(c.message.clone().unwrap_or_default()),
                _ => Ok(()),
            };
            trial(c.test.clone(), r).with_ignored_flag(c.outcome == Outcome::Skip)
        })
        .collect()
}

/// `guest`, `soak`, `soak-debug` (`-debug` for the debug kernel flavor), with `-partial`
/// for a run that left something out, so a partial run never replaces a complete record.
fn record_path(root: &Path, soak: bool, flavor: &str, complete: bool) -> PathBuf {
    if let Some(p) = std::env::var_os("MNIC_TEST_RECORD") {
        return PathBuf::from(p);
    }
    let mut name = String::from(if soak { "soak" } else { "guest" });
    if flavor != "normal" {
        name += &format!("-{flavor}");
    }
    if !complete {
        name += "-partial";
    }
    root.join(format!("../target/mnic-test-results/{name}.json"))
}

fn selection(args: &Arguments) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(f) = &args.filter {
        parts.push(format!("filter '{f}'"));
    }
    for s in &args.skip {
        parts.push(format!("skip '{s}'"));
    }
    if args.ignored {
        parts.push("--ignored".into());
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

fn main() {
    let args = Arguments::from_args();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let soak = std::env::var_os("MNIC_SOAK").is_some();
    let plan_file = if soak { "soak.txt" } else { "suites.txt" };
    let mut trials_out = Vec::new();
    match (
        std::fs::read_to_string(root.join(plan_file))
            .map_err(anyhow::Error::from)
            .and_then(|t| plan::parse(&t)),
        vm::Artifacts::from_env(),
    ) {
        (Ok(boots), Ok(art)) => {
            let logs = root.join("../target/guest-logs");
            let _ = std::fs::create_dir_all(&logs);
            let provenance = Provenance::now(&root.join(".."));
            let started = Instant::now();
            let mut records = Vec::new();
            for boot in &boots {
                // `--list` and filters must not boot guests that no selected test needs.
                if args.list || args.filter.as_ref().is_some_and(|f| !boot.selected_by(f)) {
                    continue;
                }
                let rec = boot_record(&art, boot, &logs);
                trials_out.extend(trials(&rec));
                records.push(rec);
            }
            if !args.list {
                let selection = selection(&args);
                let complete = selection.is_none() && records.len() == boots.len();
                let flavor = std::env::var("MNIC_KERNEL_FLAVOR")
                    .ok()
                    .filter(|f| !f.is_empty())
                    .unwrap_or_else(|| "normal".into());
                let run = GuestRun {
                    provenance,
                    plan: format!("tests/{plan_file}"),
                    kernel_append: std::env::var("MNIC_VM_APPEND")
                        .ok()
                        .filter(|a| !a.is_empty()),
                    complete,
                    selection,
                    seconds: started.elapsed().as_secs_f64(),
                    boots: records,
                    kernel_flavor: flavor,
                };
                let path = record_path(&root, soak, &run.kernel_flavor, complete);
                match record::save(&path, &run) {
                    Ok(()) => eprintln!("guest run record: {}", path.display()),
                    Err(e) => trials_out.push(trial("guest/record".into(), Err(format!("{e:#}")))),
                }
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            trials_out.push(trial("guest/setup".into(), Err(format!("{e:#}"))))
        }
    }
    libtest_mimic::run(&args, trials_out).exit();
}
