//! `mnic-bench-report`: the report half of `make bench`.
//!
//! ```text
//! mnic-bench-report --criterion target/criterion --guest results/guest-console.log \
//!     --out results [--meta KEY=VALUE ...]
//! ```
//!
//! Reads the criterion estimates of the device-model benches (median per benchmark)
//! and the `@@MNIC-JSON NAME {...}` lines that `images/guest/bench.sh` prints on the
//! guest console, and writes `OUT/report.md`, SVG plots, `OUT/summary.txt` and
//! `OUT/results.json`; prints the summary table (the targets of docs/performance.md, met or not).
//!
//! One job per file: `host` (criterion estimates), `guest` (console markers, reports
//! read through `mnic-bench-schema`), `targets` (the verdicts), `sections` (the
//! markdown tables and plots), `svg` (the plots), `format` (numbers), `write` (the
//! output files). This file reads the command line.

mod format;
mod guest;
mod host;
mod sections;
mod svg;
mod targets;
mod write;

use std::path::PathBuf;
use std::process::ExitCode;

use guest::Guest;

fn usage() -> &'static str {
    "usage: mnic-bench-report [--criterion DIR] [--guest CONSOLE_LOG]... --out DIR [--meta KEY=VALUE]..."
}

fn main() -> ExitCode {
    let mut crit: Option<PathBuf> = None;
    let mut guests: Vec<PathBuf> = Vec::new();
    let mut out: Option<PathBuf> = None;
    let mut meta: Vec<(String, String)> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        let r = match a.as_str() {
            "--criterion" => val().map(|v| crit = Some(v.into())),
            "--guest" => val().map(|v| guests.push(v.into())),
            "--out" => val().map(|v| out = Some(v.into())),
            "--meta" => val().and_then(|v| {
                v.split_once('=')
                    .map(|(k, v)| meta.push((k.to_owned(), v.to_owned())))
                    .ok_or_else(|| format!("--meta {v}: expected KEY=VALUE"))
            }),
            "-h" | "--help" => {
                println!("{}", usage());
                return ExitCode::SUCCESS;
            }
            _ => Err(format!("unknown argument {a}")),
        };
        if let Err(e) = r {
            eprintln!("mnic-bench-report: {e}\n{}", usage());
            return ExitCode::from(2);
        }
    }
    let Some(out) = out else {
        eprintln!("mnic-bench-report: --out is required\n{}", usage());
        return ExitCode::from(2);
    };
    let host = crit
        .as_deref()
        .map(host::read_criterion)
        .unwrap_or_default();
    let mut guest = Guest::default();
    for g in &guests {
        match std::fs::read_to_string(g) {
            Ok(text) => guest.parse_console(&text),
            Err(e) => guest.failures.push(format!("{}: {e}", g.display())),
        }
    }
    match write::write_all(&out, &host, &guest, &meta) {
        Ok(summary) => {
            print!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mnic-bench-report: {e}");
            ExitCode::FAILURE
        }
    }
}
