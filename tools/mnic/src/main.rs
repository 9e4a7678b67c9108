//! `mnic`: inspect mnic devices and benchmark them.
//!
//! ```text
//! mnic info [--device N] [--json]
//! mnic stats [--device N] [--interval SECS [--count N]] [--json]
//! mnic bench copy|register|fault|invalidate|traffic|sync|doorbell|idle [--device N] [--json] [--smoke] [options]
//! mnic pingpong|bw [--local /dev/mnic0] [--remote /dev/mnic1] [--sizes S,...] [-n N] [--json] [--smoke]
//! ```
//!
//! This file only dispatches: the flags are in `cli.rs` (and `bench/args.rs`), each
//! subcommand in its own module.

mod bench;
mod cli;
mod error;
mod fabric;
mod info;
mod latency;
mod output;
mod stats;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Cmd};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Info { device, json } => info::run(device, json),
        Cmd::Stats {
            device,
            interval,
            count,
            json,
        } => stats::run(device, interval, count, json),
        Cmd::Bench { which } => bench::run(which),
        Cmd::Pingpong { args } => fabric::pingpong(&args),
        Cmd::Bw { args } => fabric::bw(&args),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mnic: {e}");
            let mut src = e.source();
            while let Some(s) = src {
                eprintln!("  caused by: {s}");
                src = s.source();
            }
            ExitCode::FAILURE
        }
    }
}
