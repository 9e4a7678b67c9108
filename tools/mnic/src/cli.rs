//! The command line of `mnic`: subcommands and their flags (the bench flags are in
//! `bench/args.rs`).

use clap::{Parser, Subcommand};

use crate::bench::args::BenchCmd;
use crate::fabric::args::FabricArgs;
#[cfg(test)]
use crate::fabric::args::FabricOp;

/// Inspect and benchmark mnic devices (/dev/mnicN).
#[derive(Debug, Parser)]
#[command(name = "mnic", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Devices, capabilities and limits.
    Info {
        /// Only /dev/mnicN (default: every device found).
        #[arg(long, short)]
        device: Option<u32>,
        /// Machine-readable JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Driver per-context counters, device counters, and SYNC-wait and fault latency
    /// histograms.
    ///
    /// The tool opens its own context: the per-context counters are that context's,
    /// the device counters and the device's histograms cover every context; the
    /// per-context histograms come from debugfs (root only).
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
        which: BenchCmd,
    },
    /// One-way PUT latency per message size between two devices on one fabric (like
    /// ib_write_lat), against a local COPY: both ends in this process, each PUTs into the
    /// other's memory and the process polls for the message's last bytes. With `--op send`:
    /// tagged SEND/RECV round trips into receives posted at each end, halved (like
    /// mx_pingpong / fi_pingpong), across the eager/rendezvous limit. With
    /// `--serve`/`--connect --link PATH`, one end per process (or guest): half the round
    /// trip (with `--op send`: to the server's echo).
    Pingpong {
        #[command(flatten)]
        args: FabricArgs,
    },
    /// PUT and GET bandwidth per message size between two devices on one fabric (like
    /// ib_write_bw / ib_read_bw), against the same bytes moved by local COPY items. With
    /// `--op send`: streaming tagged SENDs into receives the peer keeps posted. With
    /// `--serve`/`--connect --link PATH`, one end per process (or guest).
    Bw {
        #[command(flatten)]
        args: FabricArgs,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::args::{Common, DoorbellArg, PatternArg};
    use clap::CommandFactory;

    /// The common bench flags of a parsed bench command line.
    fn bench_common(args: &[&str]) -> Common {
        match Cli::parse_from(args).cmd {
            Cmd::Bench { which } => which.common().clone(),
            other => panic!("not a bench command: {other:?}"),
        }
    }

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
                BenchCmd::Traffic {
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
        assert_eq!(pattern, PatternArg::RandomRw);
        assert!(common.json);
        assert_eq!(common.device, 1);
        let c = bench_common(&["mnic", "bench", "register", "--doorbell", "syscall"]);
        assert_eq!(c.doorbell, DoorbellArg::Syscall);
        assert!(Cli::try_parse_from(["mnic", "bench", "copy", "--size", "0"]).is_err());
        let c = bench_common(&["mnic", "bench", "copy", "--doorbell", "shadow"]);
        assert_eq!(c.doorbell, DoorbellArg::Shadow);
    }

    #[test]
    fn shadow_doorbell_benches() {
        let c = Cli::parse_from(["mnic", "bench", "sync", "--smoke", "--batch", "7"]);
        assert!(matches!(
            c.cmd,
            Cmd::Bench { which: BenchCmd::Sync { batch: 7, ref common } } if common.smoke
        ));
        let c = Cli::parse_from(["mnic", "bench", "doorbell"]);
        assert!(matches!(
            c.cmd,
            Cmd::Bench {
                which: BenchCmd::Doorbell {
                    size: 4096,
                    batch: 20,
                    ..
                }
            }
        ));
        let c = Cli::parse_from(["mnic", "bench", "idle", "--period-ms", "300"]);
        assert!(matches!(
            c.cmd,
            Cmd::Bench {
                which: BenchCmd::Idle {
                    period_ms: 300,
                    settle_ms: 50,
                    ..
                }
            }
        ));
        assert!(Cli::try_parse_from(["mnic", "bench", "doorbell", "--batch", "0"]).is_err());
        assert!(Cli::try_parse_from(["mnic", "bench", "idle", "--period-ms", "0"]).is_err());
    }

    #[test]
    fn fabric_flags() {
        let Cmd::Pingpong { args } = Cli::parse_from(["mnic", "pingpong"]).cmd else {
            panic!("not pingpong");
        };
        assert_eq!(args.local.to_str(), Some("/dev/mnic0"));
        assert_eq!(args.remote.to_str(), Some("/dev/mnic1"));
        assert_eq!(args.sizes(&[8, 64, 4096]), [8, 64, 4096]);
        let c = args.common(10);
        assert_eq!((c.device, c.iters, c.warmup), (0, 200, 10));
        assert_eq!(args.op, FabricOp::Put);
        let Cmd::Pingpong { args } =
            Cli::parse_from(["mnic", "pingpong", "--op", "send", "--smoke"]).cmd
        else {
            panic!("not pingpong");
        };
        assert_eq!(args.op, FabricOp::Send);
        // A smoke run without --sizes takes the smoke sizes, with --sizes the two smallest.
        assert_eq!(
            args.sizes_or_smoke(&[8, 64, 4096], &[1416, 1417]),
            [1416, 1417]
        );
        let Cmd::Pingpong { args } = Cli::parse_from([
            "mnic", "pingpong", "--op", "send", "--smoke", "--sizes", "9,3,5",
        ])
        .cmd
        else {
            panic!("not pingpong");
        };
        assert_eq!(args.sizes_or_smoke(&[8], &[1416, 1417]), [3, 5]);
        assert!(Cli::try_parse_from(["mnic", "bw", "--op", "get"]).is_err());
        let Cmd::Bw { args } = Cli::parse_from([
            "mnic",
            "bw",
            "--local",
            "/dev/mnic3",
            "--remote",
            "/dev/mnic2",
            "--sizes",
            "64K,1M,4K",
            "--smoke",
            "--json",
            "-n",
            "9",
        ])
        .cmd
        else {
            panic!("not bw");
        };
        assert_eq!(args.sizes, [64 << 10, 1 << 20, 4096]);
        // Smoke: the two smallest sizes, one iteration.
        assert_eq!(args.sizes(&[]), [4096, 64 << 10]);
        let c = args.common(1);
        assert_eq!((c.device, c.iters, c.warmup, c.json), (3, 1, 0, true));
        assert!(Cli::try_parse_from(["mnic", "bw", "--sizes", "0"]).is_err());
    }

    #[test]
    fn one_end_per_process_flags() {
        use crate::fabric::args::Role;
        let fabric = |args: &[&str]| match Cli::try_parse_from(args).map(|c| c.cmd) {
            Ok(Cmd::Pingpong { args } | Cmd::Bw { args }) => Ok(args),
            Ok(other) => panic!("not a fabric command: {other:?}"),
            Err(e) => Err(e),
        };
        let a = fabric(&[
            "mnic",
            "bw",
            "--serve",
            "--link",
            "/dev/ttyS1",
            "--pageout-ms",
            "50",
        ])
        .unwrap();
        assert_eq!(
            a.role().unwrap().map(|(r, p)| (r, p.to_str())),
            Some((Role::Serve, Some("/dev/ttyS1")))
        );
        assert_eq!(a.pageout_ms, Some(50));
        let a = fabric(&["mnic", "pingpong", "--connect", "--link", "/dev/ttyS1"]).unwrap();
        assert_eq!(a.role().unwrap().map(|(r, _)| r), Some(Role::Connect));
        assert_eq!(fabric(&["mnic", "pingpong"]).unwrap().role(), Ok(None));
        // A link needs an end, an end needs a link, one end only, page-outs on the server.
        assert!(fabric(&["mnic", "bw", "--link", "/dev/ttyS1"])
            .unwrap()
            .role()
            .is_err());
        assert!(fabric(&["mnic", "bw", "--serve"]).is_err());
        assert!(fabric(&["mnic", "bw", "--serve", "--connect", "--link", "x"]).is_err());
        let a = fabric(&[
            "mnic",
            "bw",
            "--connect",
            "--link",
            "x",
            "--pageout-ms",
            "5",
        ]);
        assert!(a.unwrap().role().is_err());
        // Either operation at either end.
        for end in ["--serve", "--connect"] {
            for op in ["put", "send"] {
                for tool in ["pingpong", "bw"] {
                    let a = fabric(&["mnic", tool, "--op", op, end, "--link", "x"]).unwrap();
                    assert!(a.role().unwrap().is_some(), "{tool} --op {op} {end}");
                }
            }
        }
        assert_eq!(
            fabric(&["mnic", "bw", "--op", "send"]).unwrap().role(),
            Ok(None)
        );
    }

    #[test]
    fn oracle_flag_for_both_tools_and_every_end() {
        let oracle = |args: &[&str]| match Cli::parse_from(args).cmd {
            Cmd::Pingpong { args } | Cmd::Bw { args } => args.oracle,
            other => panic!("not a fabric command: {other:?}"),
        };
        assert!(!oracle(&["mnic", "pingpong"]));
        assert!(!oracle(&["mnic", "bw", "--serve", "--link", "x"]));
        for tool in ["pingpong", "bw"] {
            assert!(oracle(&["mnic", tool, "--oracle"]));
            assert!(oracle(&["mnic", tool, "--op", "send", "--oracle"]));
            assert!(oracle(&[
                "mnic", tool, "--serve", "--link", "x", "--oracle"
            ]));
            assert!(oracle(&[
                "mnic",
                tool,
                "--oracle",
                "--connect",
                "--link",
                "x"
            ]));
        }
        assert!(Cli::try_parse_from(["mnic", "stats", "--oracle"]).is_err());
    }

    #[test]
    fn smoke_shrinks_the_run() {
        let c = bench_common(&["mnic", "bench", "fault", "--smoke", "-n", "9"]);
        let e = c.effective();
        assert_eq!((e.iters, e.warmup), (1, 0));
        assert_eq!(e.size(64 << 20, 1 << 20), 1 << 20);
        let c = bench_common(&["mnic", "bench", "copy"]);
        assert_eq!(c.effective().iters, 20);
        assert_eq!(c.size(64 << 20, 1 << 20), 64 << 20);
    }
}
