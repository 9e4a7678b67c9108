//! `mnic`: inspect mnic devices and benchmark them.
//!
//! ```text
//! mnic info [--device N] [--json]
//! mnic stats [--device N] [--interval SECS [--count N]] [--json]
//! mnic bench copy|register|fault|invalidate|traffic [--device N] [--json] [--smoke] [options]
//! ```

mod bench;
mod bench_mm;
mod info;
mod output;
mod stats;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Result of a subcommand.
pub type CmdResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// Inspect and benchmark mnic devices (/dev/mnicN).
#[derive(Debug, Parser)]
#[command(name = "mnic", version, about)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Devices, capabilities and limits.
    Info {
        /// Only /dev/mnicN (default: every device found).
        #[arg(long, short)]
        device: Option<u32>,
        /// Machine-readable JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Driver per-context counters and device counters.
    ///
    /// The tool opens its own context: the per-context counters are that context's,
    /// the device counters cover every context.
    Stats {
        /// Device index N of /dev/mnicN.
        #[arg(long, short, default_value_t = 0)]
        device: u32,
        /// Sample every SECS seconds (with deltas) instead of once.
        #[arg(long, short)]
        interval: Option<f64>,
        /// Number of samples with --interval (default: until interrupted).
        #[arg(long, short, requires = "interval")]
        count: Option<u32>,
        /// One JSON object per sample on stdout (JSON lines).
        #[arg(long)]
        json: bool,
    },
    /// Benchmarks, each against its baseline.
    Bench {
        #[command(subcommand)]
        which: bench::BenchCmd,
    },
}

impl Cli {
    /// The common bench flags, if this is a bench command (for tests).
    #[cfg(test)]
    fn bench_common(self) -> Option<bench::Common> {
        match self.cmd {
            Cmd::Bench { which } => Some(match which {
                bench::BenchCmd::Copy { common, .. }
                | bench::BenchCmd::Register { common, .. }
                | bench::BenchCmd::Fault { common, .. }
                | bench::BenchCmd::Invalidate { common, .. }
                | bench::BenchCmd::Traffic { common, .. } => common,
            }),
            _ => None,
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_flags() {
        let c = Cli::parse_from([
            "mnic",
            "stats",
            "--device",
            "2",
            "--interval",
            "0.5",
            "--count",
            "3",
            "--json",
        ]);
        assert!(matches!(
            c.cmd,
            Cmd::Stats { device: 2, interval: Some(i), count: Some(3), json: true } if i == 0.5
        ));
        assert!(Cli::try_parse_from(["mnic", "stats", "--count", "3"]).is_err());
        let c = Cli::parse_from([
            "mnic",
            "bench",
            "traffic",
            "--size",
            "2M",
            "--pattern",
            "random-rw",
            "--json",
            "-d",
            "1",
        ]);
        let Cmd::Bench {
            which:
                bench::BenchCmd::Traffic {
                    common,
                    size,
                    pattern,
                    ..
                },
        } = c.cmd
        else {
            panic!("not traffic");
        };
        assert_eq!(size, 2 << 20);
        assert_eq!(pattern, bench::PatternArg::RandomRw);
        assert!(common.json);
        assert_eq!(common.device, 1);
        let c = Cli::parse_from(["mnic", "bench", "register", "--doorbell", "syscall"]);
        assert_eq!(
            c.bench_common().unwrap().doorbell,
            bench::DoorbellArg::Syscall
        );
        assert!(Cli::try_parse_from(["mnic", "bench", "copy", "--size", "0"]).is_err());
    }
}
