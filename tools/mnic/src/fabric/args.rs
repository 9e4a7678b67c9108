//! The flags of `mnic pingpong` and `mnic bw`: the two ends and the run settings, which
//! become the [`Common`] flags of the bench harness.

use std::path::PathBuf;

use clap::Args;
use mnic::parse_device_name;

use crate::bench::args::{Common, DoorbellArg};
use crate::output::parse_size;

/// Flags both fabric benchmarks take.
#[derive(Debug, Clone, Args)]
pub struct FabricArgs {
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
    /// Smoke run: one timed iteration, no warmup, two small sizes (for `make test`).
    #[arg(long)]
    pub smoke: bool,
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
