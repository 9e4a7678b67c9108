//! The flags of `mnic bench`: the benchmarks, their own flags and the ones every
//! benchmark takes.

use clap::{Args, Subcommand, ValueEnum};
use mnic::Pattern;

use crate::output::parse_size;

/// Flags every benchmark takes.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Device index N of /dev/mnicN.
    #[arg(long, short, default_value_t = 0)]
    pub device: u32,
    /// Print one machine-readable JSON report on stdout instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Timed iterations.
    #[arg(long, short = 'n', default_value_t = 20)]
    pub iters: u32,
    /// Untimed iterations first.
    #[arg(long, default_value_t = 2)]
    pub warmup: u32,
    /// How work is announced to the device.
    #[arg(long, value_enum, default_value_t = DoorbellArg::Auto)]
    pub doorbell: DoorbellArg,
    /// Queue entries (log2, 4..=12) of the work and completion queues.
    #[arg(long, default_value_t = 6)]
    pub queue_log2: u8,
    /// Give up waiting for one work item after this many milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub timeout_ms: u64,
    /// Use 2 MiB-aligned buffers advised for transparent huge pages.
    #[arg(long)]
    pub huge: bool,
    /// Smoke run: one timed iteration, no warmup, small sizes (for `make test`).
    #[arg(long)]
    pub smoke: bool,
}

impl Common {
    /// `self` with the smoke settings applied.
    pub fn effective(&self) -> Common {
        let mut c = self.clone();
        if c.smoke {
            c.iters = 1;
            c.warmup = 0;
        }
        c
    }

    /// `size`, capped to `smoke_cap` in a smoke run.
    pub fn size(&self, size: u64, smoke_cap: u64) -> u64 {
        if self.smoke {
            size.min(smoke_cap)
        } else {
            size
        }
    }
}

/// `--doorbell` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DoorbellArg {
    /// Shadow doorbell if the device polls, else mapped doorbell page, else system call.
    Auto,
    /// Shadow doorbell (shadow page + mapped doorbell page) only.
    Shadow,
    /// Mapped doorbell page only: every post a trapped register write.
    Mapped,
    /// MNIC_IOC_POST system call.
    Syscall,
}

/// `--pattern` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PatternArg {
    /// Sequential reads.
    SeqRead,
    /// Sequential writes.
    SeqWrite,
    /// Random reads and writes.
    RandomRw,
}

impl From<PatternArg> for Pattern {
    fn from(p: PatternArg) -> Self {
        match p {
            PatternArg::SeqRead => Pattern::SeqRead,
            PatternArg::SeqWrite => Pattern::SeqWrite,
            PatternArg::RandomRw => Pattern::RandomRw,
        }
    }
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// Device COPY against memcpy of the same size.
    Copy {
        #[command(flatten)]
        common: Common,
        /// Bytes per copy (K/M/G suffixes); above 64 MiB it is split into COPY items.
        #[arg(long, short, default_value = "1M", value_parser = parse_size)]
        size: u64,
        /// Cold translations: register both buffers anew (on demand, no prefetch) before
        /// every iteration, so each copy faults every page in (the pages stay resident).
        #[arg(long)]
        cold: bool,
    },
    /// Registration cost: on-demand (default) against pinned (REG_PINNED).
    Register {
        #[command(flatten)]
        common: Common,
        /// Bytes registered (K/M/G suffixes).
        #[arg(long, short, default_value = "64M", value_parser = parse_size)]
        size: u64,
        /// Skip the first device pass over the registered memory (then only
        /// register/deregister are timed).
        #[arg(long)]
        no_touch: bool,
        /// Do not make the pages resident first (on-demand registration touches no
        /// memory; pinning then also allocates every page).
        #[arg(long)]
        no_fill: bool,
    },
    /// First-touch device fault cost against prefetch and against CPU page faults.
    Fault {
        #[command(flatten)]
        common: Common,
        /// Bytes per pass (K/M/G suffixes).
        #[arg(long, short, default_value = "4M", value_parser = parse_size)]
        size: u64,
    },
    /// Invalidation cost: munmap and MADV_PAGEOUT of a registered range (device
    /// entries present) against the same on an unregistered one, and SYNC wait times.
    Invalidate {
        #[command(flatten)]
        common: Common,
        /// Bytes unmapped / paged out per iteration (K/M/G suffixes).
        #[arg(long, short, default_value = "16M", value_parser = parse_size)]
        size: u64,
        /// Skip the MADV_PAGEOUT half (it needs swap).
        #[arg(long)]
        no_pageout: bool,
    },
    /// A traffic-generator run against the CPU doing the same accesses.
    Traffic {
        #[command(flatten)]
        common: Common,
        /// Range the generator works in (K/M/G suffixes).
        #[arg(long, short, default_value = "16M", value_parser = parse_size)]
        size: u64,
        /// Bytes per DMA operation (1..=65536).
        #[arg(long, default_value_t = 4096)]
        op_size: u32,
        /// Operations per run (default: one pass over the range).
        #[arg(long)]
        ops: Option<u64>,
        /// Access pattern.
        #[arg(long, value_enum, default_value_t = PatternArg::SeqRead)]
        pattern: PatternArg,
        /// Operations per second, 0 = unthrottled.
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Pseudo-random seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// MADV_PAGEOUT the range before each run (measures fault-back).
        #[arg(long)]
        pageout: bool,
        /// Swap the range out every MS milliseconds *while* the generator runs (from a
        /// second thread), and compare with the same runs without page-outs.
        #[arg(long, value_name = "MS")]
        pageout_every_ms: Option<u64>,
    },
    /// MNIC_IOC_SYNC round trips with the shadow doorbell against every post trapped
    /// (debugfs trapped_doorbells = 1), alternating blocks. --doorbell is not used.
    Sync {
        #[command(flatten)]
        common: Common,
        /// SYNC round trips per block (one block per side and iteration).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
        batch: u32,
    },
    /// One small hot COPY item, post to completion: a shadow-doorbell context against
    /// a mapped-doorbell one (every post trapped). --doorbell is not used.
    Doorbell {
        #[command(flatten)]
        common: Common,
        /// Bytes per COPY item (K/M suffixes, at most 64 MiB).
        #[arg(long, short, default_value = "4K", value_parser = parse_size)]
        size: u64,
        /// Items per block (one block per side and iteration).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
        batch: u32,
    },
    /// The device's CPU time while idle (spin budget long over), as a share of one
    /// core, next to the same while one context posts NOPs back to back.
    Idle {
        #[command(flatten)]
        common: Common,
        /// Length of each busy and each idle measurement, ms.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
        period_ms: u64,
        /// Quiet time before each idle measurement, ms (well past the spin budget).
        #[arg(long, default_value_t = 50)]
        settle_ms: u64,
    },
}

impl BenchCmd {
    /// The flags every benchmark takes (the dispatcher destructures instead).
    #[cfg(test)]
    pub fn common(&self) -> &Common {
        match self {
            BenchCmd::Copy { common, .. }
            | BenchCmd::Register { common, .. }
            | BenchCmd::Fault { common, .. }
            | BenchCmd::Invalidate { common, .. }
            | BenchCmd::Traffic { common, .. }
            | BenchCmd::Sync { common, .. }
            | BenchCmd::Doorbell { common, .. }
            | BenchCmd::Idle { common, .. } => common,
        }
    }
}
