//! The guest test harness (`make test-guest`): boots every VM of the plan
//! (`tests/suites.txt`, or `tests/soak.txt` with MNIC_SOAK=1), and reports each KTAP
//! case, each suite's exit status, KUnit results and the kernel log's health as
//! individual cargo tests. Consoles are kept in target/guest-logs/.

use libtest_mimic::{Arguments, Failed, Trial};
use mnic_tests::{ktap, plan, vm};
use std::path::{Path, PathBuf};

fn trial(name: String, result: Result<(), String>) -> Trial {
    Trial::test(name, move || result.clone().map_err(Failed::from))
}

fn excerpt(lines: &[String]) -> String {
    let n = lines.len();
    lines[n.saturating_sub(40)..].join("\n")
}

fn boot_trials(art: &vm::Artifacts, boot: &plan::Boot, logs: &Path) -> Vec<Trial> {
    let mut trials = Vec::new();
    let b = &boot.name;
    let job = boot.guest_job();
    eprintln!("booting guest '{b}' ({} suites)...", boot.suites.len());
    let out = match vm::boot(art, &boot.vm_args, &job) {
        Ok(o) => o,
        Err(e) => return vec![trial(format!("{b}/boot"), Err(format!("{e:#}")))],
    };
    let log = logs.join(format!("{b}.log"));
    let _ = std::fs::write(
        &log,
        format!("{}\n--- runner stderr ---\n{}", out.console, out.stderr),
    );
    let suites = ktap::suites(&out.console);
    let mut expected: Vec<String> = Vec::new();
    if !boot.setup.is_empty() {
        expected.push("setup".into());
    }
    expected.extend(boot.suites.iter().map(|(n, _)| n.clone()));
    for name in &expected {
        let Some(s) = suites.iter().find(|s| &s.name == name) else {
            trial_push(
                &mut trials,
                format!("{b}/{name}/ran"),
                Err(format!(
                    "suite never started (see {})\n{}",
                    log.display(),
                    out.stderr
                )),
            );
            continue;
        };
        for c in &s.cases {
            let r = if c.passed {
                Ok(())
            } else {
                Err(format!(
                    "{} # {}\n--- suite output ---\n{}",
                    c.name,
                    c.directive,
                    excerpt(&s.output)
                ))
            };
            let mut t = trial(format!("{b}/{name}/{}", c.name), r);
            if c.skipped {
                t = t.with_ignored_flag(true);
            }
            trials.push(t);
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
        trial_push(&mut trials, format!("{b}/{name}/exit_status"), status);
    }
    if boot.kunit {
        let cases = ktap::kunit_cases(&out.console);
        if cases.is_empty() {
            trial_push(
                &mut trials,
                format!("{b}/kunit"),
                Err(format!(
                    "no KUnit results in the console (see {})",
                    log.display()
                )),
            );
        }
        for c in cases {
            let r = if c.passed {
                Ok(())
            } else {
                Err(format!("{}.{} failed # {}", c.path, c.name, c.directive))
            };
            trials.push(trial(format!("{b}/kunit/{}/{}", c.path, c.name), r));
        }
    }
    let problems = ktap::kernel_problems(&out.console);
    let clean = if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    };
    trial_push(&mut trials, format!("{b}/kernel_log_clean"), clean);
    let st = if out.status == 0 {
        Ok(())
    } else {
        Err(format!(
            "guest job status {} (124 = timeout, 125 = no result)\n{}",
            out.status, out.stderr
        ))
    };
    trial_push(&mut trials, format!("{b}/guest_job_status"), st);
    trials
}

fn trial_push(trials: &mut Vec<Trial>, name: String, r: Result<(), String>) {
    trials.push(trial(name, r));
}

fn main() {
    let args = Arguments::from_args();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let plan_file = if std::env::var_os("MNIC_SOAK").is_some() {
        "soak.txt"
    } else {
        "suites.txt"
    };
    let mut trials = Vec::new();
    match (
        std::fs::read_to_string(root.join(plan_file))
            .map_err(anyhow::Error::from)
            .and_then(|t| plan::parse(&t)),
        vm::Artifacts::from_env(),
    ) {
        (Ok(boots), Ok(art)) => {
            let logs = root.join("../target/guest-logs");
            let _ = std::fs::create_dir_all(&logs);
            for boot in &boots {
                // `--list` and filters must not boot guests that no selected test needs.
                if args.list
                    || args.filter.as_ref().is_some_and(|f| {
                        !f.starts_with(&boot.name)
                            && !boot.name.starts_with(f.split('/').next().unwrap_or(""))
                    })
                {
                    continue;
                }
                trials.extend(boot_trials(&art, boot, &logs));
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            trials.push(trial("guest/setup".into(), Err(format!("{e:#}"))))
        }
    }
    libtest_mimic::run(&args, trials).exit();
}
