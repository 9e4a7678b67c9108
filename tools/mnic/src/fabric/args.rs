//! The flags of `mnic pingpong` and `mnic bw`: the two ends and the run settings, which
//! become the [`Common`] flags of the bench harness.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use mnic::parse_device_name;

use crate::bench::args::{Common, DoorbellArg};
use crate::output::parse_size;

/// What a fabric benchmark moves the bytes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum FabricOp {
    /// Remote memory access through a key: PUT (and GET for `bw`), docs/fabric.md 14.13.
    #[default]
    Put,
    /// Tagged messages: SEND into RECVs posted at the peer (MX-style, eager up to 1416
    /// bytes, rendezvous above), docs/fabric.md 14.14.
    Send,
}

impl FabricOp {
    /// The name in reports (`op` parameter).
    pub fn name(self) -> &'static str {
        match self {
            FabricOp::Put => "put",
            FabricOp::Send => "send",
        }
    }
}

/// Flags both fabric benchmarks take.
#[derive(Debug, Clone, Args)]
pub struct FabricArgs {
    /// How the bytes move: `put` (remote memory access) or `send` (tagged SEND/RECV). With
    /// `--serve`/`--connect`, both ends must be given the same.
    #[arg(long, value_enum, default_value_t = FabricOp::Put)]
    pub op: FabricOp,
    /// The initiator's device (it also runs the local COPY baseline).
    #[arg(long, default_value = "/dev/mnic0")]
    pub local: PathBuf,
    /// The target's device: a peer of the local one on the fabric.
    #[arg(long, default_value = "/dev/mnic1")]
    pub remote: PathBuf,
    /// Message sizes (K/M suffixes), comma separated; default depends on the benchmark.
    #[arg(long, value_delimiter = ',', value_parser = parse_size)]
    pub sizes: Vec<u64>,
    /// Print one machine-readable JSON report on stdout instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Timed iterations per size.
    #[arg(long, short = 'n', default_value_t = 200)]
    pub iters: u32,
    /// Untimed iterations first, per size (default: 10 for pingpong, 1 for bw).
    #[arg(long)]
    pub warmup: Option<u32>,
    /// Give up waiting for one work item (or a PUT's bytes) after this many milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub timeout_ms: u64,
    /// Smoke run: one timed iteration, no warmup, two small sizes (with `--op send`: the
    /// largest eager and the smallest rendezvous message) (for `make test`).
    #[arg(long)]
    pub smoke: bool,
    /// Run only the target's end, in this process, on `--local`: register a window for
    /// remote access and hand its region to the client over `--link` (with `--op send`:
    /// hand it this context's endpoint, echo each ping, take and check the stream,
    /// acknowledging each iteration), serve until the client is done, and answer whether
    /// all went well (ends in two processes or two guests).
    #[arg(long, requires = "link", conflicts_with = "connect")]
    pub serve: bool,
    /// Run only the initiator's end, in this process, on `--local`, against the window (or
    /// with `--op send` the endpoint) a `--serve` end hands over `--link`; prints the
    /// report.
    #[arg(long, requires = "link")]
    pub connect: bool,
    /// The line link to the other end with `--serve`/`--connect`: a serial port (made raw),
    /// e.g. `/dev/ttyS1` between two guests of `mnic-vm run --peer-cmd`.
    #[arg(long)]
    pub link: Option<PathBuf>,
    /// With `--serve` (bw, `--op put`): page the window out (MADV_PAGEOUT) every this many
    /// milliseconds while the client streams; the server then fails unless at least one
    /// page-out happened during the stream and the data arrived intact.
    #[arg(long)]
    pub pageout_ms: Option<u64>,
    /// Arm the stale-access oracle (spec §8a) for every context this run opens, so that its
    /// device flags any access through a translation the kernel already invalidated, judged
    /// by a witness that does not trust the driver (`oracle_invalidations` and
    /// `oracle_violations` in `mnic stats`). A testing aid: needs root, debugfs and the
    /// `mnic_oracle` test module loaded (tests/kmod/mnic-oracle; the guest image has it in
    /// /lib/modules), and fails if it is not.
    #[arg(long)]
    pub oracle: bool,
    /// bw, both ends here, `--op put`: measure what a network fault costs per page instead
    /// of PUT/GET bandwidth: one PUT per iteration into the target's window paged out
    /// (MADV_PAGEOUT) just before, against one local COPY into a destination paged out the
    /// same way, and a PUT into the resident window (default sizes 64K,1M).
    #[arg(long)]
    pub target_pageout: bool,
    /// bw, both ends here, `--op put`: measure PUT bandwidth into a target window registered
    /// on demand against one registered PINNED instead of PUT/GET bandwidth (with
    /// `--target-pageout`: both) (default sizes 64K,1M).
    #[arg(long)]
    pub target_pinned: bool,
}

/// What one `mnic bw` run measures (`measurements` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BwMeasurement {
    /// PUT and GET bandwidth against local COPY (the default).
    PutGet,
    /// `--target-pageout`.
    TargetPageout,
    /// `--target-pinned`.
    TargetPinned,
}

impl BwMeasurement {
    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            BwMeasurement::PutGet => "put_get",
            BwMeasurement::TargetPageout => "target_pageout",
            BwMeasurement::TargetPinned => "target_pinned",
        }
    }
}

/// Which end this process runs, with `--serve` or `--connect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Serve,
    Connect,
}

impl FabricArgs {
    /// The bench harness's flags for this run: the local device's index (for the report),
    /// `--warmup` or `default_warmup`, the smoke settings applied, queues of 256 entries,
    /// the best doorbell.
    pub fn common(&self, default_warmup: u32) -> Common {
        let device = self
            .local
            .file_name()
            .and_then(|n| parse_device_name(&n.to_string_lossy()))
            .unwrap_or(0);
        Common {
            device,
            json: self.json,
            iters: self.iters,
            warmup: self.warmup.unwrap_or(default_warmup),
            doorbell: DoorbellArg::Auto,
            queue_log2: 8,
            timeout_ms: self.timeout_ms,
            huge: false,
            smoke: self.smoke,
        }
        .effective()
    }

    /// `--sizes`, or `default`; in a smoke run without `--sizes`, `smoke` instead.
    pub fn sizes_or_smoke(&self, default: &[u64], smoke: &[u64]) -> Vec<u64> {
        if self.smoke && self.sizes.is_empty() {
            smoke.to_vec()
        } else {
            self.sizes(default)
        }
    }

    /// What a `mnic bw` run measures: `--target-pageout` and `--target-pinned` if given (in
    /// that order), else PUT/GET bandwidth.
    pub fn bw_measurements(&self) -> Vec<BwMeasurement> {
        let mut m = Vec::new();
        if self.target_pageout {
            m.push(BwMeasurement::TargetPageout);
        }
        if self.target_pinned {
            m.push(BwMeasurement::TargetPinned);
        }
        if m.is_empty() {
            m.push(BwMeasurement::PutGet);
        }
        m
    }

    /// Refuses `--target-pageout`/`--target-pinned` where they do not apply: anything but
    /// `mnic bw` (`bw` false), `--op send`, one end per process.
    pub fn check_target_modes(&self, bw: bool) -> Result<(), String> {
        if !self.target_pageout && !self.target_pinned {
            return Ok(());
        }
        if !bw {
            return Err("--target-pageout and --target-pinned are options of `mnic bw`".into());
        }
        if self.op != FabricOp::Put || self.link.is_some() {
            return Err(
                "--target-pageout and --target-pinned need `--op put` and both ends in this \
                 process (no --link)"
                    .into(),
            );
        }
        Ok(())
    }

    /// The end this process runs and the link to the other, or `None` for both ends here.
    pub fn role(&self) -> Result<Option<(Role, &std::path::Path)>, String> {
        if self.pageout_ms.is_some() && !self.serve {
            return Err("--pageout-ms is for the --serve end".into());
        }
        if self.pageout_ms.is_some() && self.op != FabricOp::Put {
            // What is paged out is the window the client PUTs into; a SEND server's
            // receive buffer is not measured against paging.
            return Err("--pageout-ms needs `--op put`".into());
        }
        let Some(link) = self.link.as_deref() else {
            return Ok(None);
        };
        match (self.serve, self.connect) {
            (true, _) => Ok(Some((Role::Serve, link))),
            (false, true) => Ok(Some((Role::Connect, link))),
            (false, false) => Err("--link needs --serve or --connect".into()),
        }
    }

    /// `--sizes`, or `default`; in a smoke run the two smallest of them.
    pub fn sizes(&self, default: &[u64]) -> Vec<u64> {
        let mut sizes = if self.sizes.is_empty() {
            default.to_vec()
        } else {
            self.sizes.clone()
        };
        if self.smoke {
            sizes.sort_unstable();
            sizes.truncate(2);
        }
        sizes
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn parse(args: &[&str]) -> FabricArgs {
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            a: FabricArgs,
        }
        Wrap::parse_from(std::iter::once("t").chain(args.iter().copied())).a
    }

    #[test]
    fn bw_measures_put_get_unless_a_target_mode_is_given() {
        assert_eq!(parse(&[]).bw_measurements(), [BwMeasurement::PutGet]);
        assert_eq!(
            parse(&["--target-pinned", "--target-pageout"]).bw_measurements(),
            [BwMeasurement::TargetPageout, BwMeasurement::TargetPinned]
        );
        assert_eq!(
            parse(&["--target-pinned"]).bw_measurements(),
            [BwMeasurement::TargetPinned]
        );
    }

    #[test]
    fn target_modes_are_for_bw_put_with_both_ends_here() {
        assert!(parse(&[]).check_target_modes(false).is_ok());
        let pageout = parse(&["--target-pageout"]);
        assert!(pageout.check_target_modes(true).is_ok());
        assert!(pageout.check_target_modes(false).is_err());
        assert!(parse(&["--target-pinned", "--op", "send"])
            .check_target_modes(true)
            .is_err());
        assert!(
            parse(&["--target-pinned", "--connect", "--link", "/dev/ttyS1"])
                .check_target_modes(true)
                .is_err()
        );
    }

    #[test]
    fn send_runs_with_an_end_per_process_but_pages_out_only_put_windows() {
        for end in ["--serve", "--connect"] {
            let a = parse(&["--op", "send", end, "--link", "/dev/ttyS1"]);
            let want = if end == "--serve" {
                Role::Serve
            } else {
                Role::Connect
            };
            assert_eq!(a.role().unwrap().map(|(r, _)| r), Some(want));
        }
        let a = parse(&[
            "--op",
            "send",
            "--serve",
            "--link",
            "x",
            "--pageout-ms",
            "9",
        ]);
        assert_eq!(a.role().unwrap_err(), "--pageout-ms needs `--op put`");
        let a = parse(&["--serve", "--link", "x", "--pageout-ms", "9"]);
        assert_eq!(a.role().unwrap().map(|(r, _)| r), Some(Role::Serve));
    }

    #[test]
    fn both_ends_of_a_send_run_size_their_buffers_alike() {
        // A server without --sizes takes the client's default or smoke sizes.
        let smoke = parse(&["--op", "send", "--smoke", "--serve", "--link", "x"]);
        assert_eq!(
            smoke.sizes_or_smoke(&[8, 65536], &[1416, 1417]),
            [1416, 1417]
        );
        let given = parse(&[
            "--op",
            "send",
            "--sizes",
            "64K,1416,1417",
            "--connect",
            "--link",
            "x",
        ]);
        assert_eq!(given.sizes_or_smoke(&[8], &[1416]), [65536, 1416, 1417]);
    }
}
