//! `mnic bench`: device work against a CPU or pinned baseline, side by side.
//!
//! Every benchmark prints progress on stderr and a result table (or, with `--json`,
//! one JSON report) on stdout: the measured side, the baseline side, their ratios,
//! and the device and context counters that moved during the measurement.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use mnic::abi::{counter, work as wk};
use mnic::{
    ctx_stats_fields, Access, Context, DevCounters, Device, DmaBuffer, DoorbellMode, Pattern,
    QueueConfig, Traffic, Work,
};
use serde::Serialize;
use serde_json::{json, Value};

use crate::bench_mm;
use crate::output::{human_bytes, parse_size, Fields, Table};
use crate::CmdResult;

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
    fn effective(&self) -> Common {
        let mut c = self.clone();
        if c.smoke {
            c.iters = 1;
            c.warmup = 0;
        }
        c
    }

    /// `size`, capped to `smoke_cap` in a smoke run.
    fn size(&self, size: u64, smoke_cap: u64) -> u64 {
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
    /// Mapped doorbell page, system call if mapping fails.
    Auto,
    /// Mapped doorbell page only.
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
}

/// One side of a comparison.
#[derive(Debug, Serialize)]
pub struct Row {
    pub name: String,
    /// "measured", "baseline" or "reference" (context only).
    pub side: &'static str,
    pub metrics: Fields<f64>,
}

/// A ratio between the two sides.
#[derive(Debug, Serialize)]
pub struct Ratio {
    pub name: String,
    pub value: f64,
    pub meaning: String,
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
pub struct Report {
    pub bench: &'static str,
    pub device: u32,
    pub params: Fields<Value>,
    pub results: Vec<Row>,
    pub ratios: Vec<Ratio>,
    /// Device counters that changed during the timed part.
    pub device_counters: Fields<u64>,
    /// Driver counters of the benchmark's context at the end.
    pub context: Fields<u64>,
    /// Remarks: a baseline that could not be measured, and why.
    pub notes: Vec<String>,
}

impl Report {
    pub(crate) fn new(bench: &'static str, c: &Common) -> Self {
        let mut params = Fields::default();
        params.push("iters", json!(c.iters));
        params.push("warmup", json!(c.warmup));
        params.push(
            "doorbell",
            json!(format!("{:?}", c.doorbell).to_lowercase()),
        );
        params.push("queue_log2", json!(c.queue_log2));
        params.push("huge", json!(c.huge));
        params.push("smoke", json!(c.smoke));
        Self {
            bench,
            device: c.device,
            params,
            results: Vec::new(),
            ratios: Vec::new(),
            device_counters: Fields::default(),
            context: Fields::default(),
            notes: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, name: &str, side: &'static str, metrics: Fields<f64>) {
        self.results.push(Row {
            name: name.to_owned(),
            side,
            metrics,
        });
    }

    pub(crate) fn ratio(&mut self, name: &str, num: f64, den: f64, meaning: &str) {
        self.ratios.push(Ratio {
            name: name.to_owned(),
            value: if den > 0.0 { num / den } else { f64::NAN },
            meaning: meaning.to_owned(),
        });
    }

    pub(crate) fn counters(&mut self, ctx: &Context, before: &DevCounters) -> CmdResult {
        let delta = ctx.dev_stats()?.since(before);
        self.device_counters = delta.iter().filter(|(_, v)| *v != 0).collect();
        self.context = ctx_stats_fields(&ctx.ctx_stats()?).into_iter().collect();
        Ok(())
    }

    /// The human-readable form.
    pub fn render(&self) -> String {
        let mut out = format!("mnic bench {} on /dev/mnic{}\n", self.bench, self.device);
        let params: Vec<String> = self
            .params
            .0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        out.push_str(&format!("  {}\n\n", params.join(" ")));
        let mut cols: Vec<&str> = Vec::new();
        for r in &self.results {
            for (k, _) in &r.metrics.0 {
                if !cols.contains(&k.as_str()) {
                    cols.push(k);
                }
            }
        }
        let mut headers = vec!["name", "side"];
        headers.extend(&cols);
        let mut t = Table::new(&headers);
        for r in &self.results {
            let mut cells = vec![r.name.clone(), r.side.to_owned()];
            cells.extend(
                cols.iter()
                    .map(|c| r.metrics.get(c).map_or(String::new(), |v| fmt_num(*v))),
            );
            t.row(&cells);
        }
        out.push_str(&t.render());
        if !self.ratios.is_empty() {
            out.push('\n');
            let mut t = Table::new(&["ratio", "value", "meaning"]);
            for r in &self.ratios {
                t.row(&[r.name.clone(), format!("{:.3}", r.value), r.meaning.clone()]);
            }
            out.push_str(&t.render());
        }
        if !self.device_counters.0.is_empty() {
            out.push('\n');
            let mut t = Table::new(&["device counter (delta)", "value"]);
            for (k, v) in &self.device_counters.0 {
                t.row(&[k.clone(), v.to_string()]);
            }
            out.push_str(&t.render());
        }
        for n in &self.notes {
            out.push_str(&format!("\nnote: {n}\n"));
        }
        out
    }
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// Per-iteration times.
#[derive(Debug, Default, Clone)]
pub struct Timing(pub Vec<Duration>);

impl Timing {
    pub fn mean_us(&self) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.iter().map(Duration::as_secs_f64).sum::<f64>() * 1e6 / self.0.len() as f64
    }
    pub fn pct_us(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        let mut v = self.0.clone();
        v.sort();
        let i = ((v.len() - 1) as f64 * p).round() as usize;
        v[i].as_secs_f64() * 1e6
    }
    pub fn p50_us(&self) -> f64 {
        self.pct_us(0.5)
    }
    pub fn total_s(&self) -> f64 {
        self.0.iter().map(Duration::as_secs_f64).sum()
    }
    /// iters, mean/min/p50/max in µs, and throughput for `bytes` per iteration.
    pub fn metrics(&self, bytes: u64) -> Fields<f64> {
        let mut m = Fields::default();
        m.push("iters", self.0.len() as f64);
        m.push("bytes", bytes as f64);
        m.push("mean_us", self.mean_us());
        m.push("min_us", self.pct_us(0.0));
        m.push("p50_us", self.pct_us(0.5));
        m.push("max_us", self.pct_us(1.0));
        let t = self.total_s();
        m.push(
            "mib_per_s",
            if t > 0.0 {
                bytes as f64 * self.0.len() as f64 / t / (1 << 20) as f64
            } else {
                0.0
            },
        );
        m
    }
}

pub(crate) fn open(c: &Common) -> CmdResult<Context> {
    let ctx = Device::open_index(c.device)?;
    ctx.setup_queues(QueueConfig {
        wq_log2: c.queue_log2,
        cq_log2: c.queue_log2,
        doorbell: match c.doorbell {
            DoorbellArg::Auto => DoorbellMode::Auto,
            DoorbellArg::Mapped => DoorbellMode::Mapped,
            DoorbellArg::Syscall => DoorbellMode::Syscall,
        },
    })?;
    let qc = ctx.queue_config().ok_or("queues not set up")?;
    eprintln!(
        "[bench] /dev/mnic{} context {}, doorbell {:?}, up to {} items outstanding",
        c.device,
        ctx.info().ctx,
        qc.doorbell,
        ctx.outstanding_limit()
    );
    Ok(ctx)
}

pub(crate) fn alloc(c: &Common, len: u64) -> CmdResult<DmaBuffer> {
    let len = usize::try_from(len)?;
    Ok(if c.huge {
        DmaBuffer::new_huge(len)?
    } else {
        DmaBuffer::new(len)?
    })
}

/// Posts every item, keeping at most the context's limit outstanding, and waits for
/// all of them; returns the sum of their `bytes`. Fails on the first failed item.
pub fn drive(
    ctx: &Context,
    works: impl IntoIterator<Item = Work>,
    timeout: Duration,
) -> CmdResult<u64> {
    let mut it = works.into_iter();
    let mut total = 0;
    loop {
        let mut pushed = false;
        while ctx.outstanding() < ctx.outstanding_limit() {
            let Some(w) = it.next() else { break };
            ctx.push(&w)?;
            pushed = true;
        }
        if pushed {
            ctx.ring()?;
        }
        if ctx.outstanding() == 0 {
            return Ok(total);
        }
        total += ctx.wait(Some(timeout))?.result()?;
    }
}

/// COPY items moving `len` bytes from `src` to `dst`, split at `COPY_MAX`.
fn copies(src: &DmaBuffer, dst: &DmaBuffer, len: usize) -> CmdResult<Vec<Work>> {
    let max = wk::COPY_MAX as usize;
    (0..len)
        .step_by(max)
        .map(|off| Ok(Work::copy_buffers(src, off, dst, off, max.min(len - off))?))
        .collect()
}

pub(crate) fn progress(tag: &str, i: u32, n: u32) {
    if n >= 10 && (i + 1) % (n / 10) == 0 || i + 1 == n {
        eprintln!("[{tag}] {}/{n}", i + 1);
    }
}

fn bench_copy(c: &Common, size: u64, cold: bool) -> CmdResult<Report> {
    let ctx = open(c)?;
    let src = alloc(c, size)?;
    let dst = alloc(c, size)?;
    let len = usize::try_from(size)?;
    let pattern: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ 0x5a)
        .collect();
    src.write_from(0, &pattern);
    // Hot: registered once, every translation prefetched (and cached by the device
    // after the warmup). Cold: registered anew before each iteration, nothing filled.
    let hot = if cold {
        None
    } else {
        let rs = ctx.register(&src, Access::READ)?;
        let rd = ctx.register(&dst, Access::WRITE)?;
        rs.prefetch(false)?;
        rd.prefetch(true)?;
        Some((rs, rd))
    };
    let timeout = Duration::from_millis(c.timeout_ms);
    let items = copies(&src, &dst, len)?;
    eprintln!(
        "[copy] {} per copy in {} COPY item(s), {} translations, warmup {}",
        human_bytes(size),
        items.len(),
        if cold { "cold" } else { "hot" },
        c.warmup
    );
    let mut before = ctx.dev_stats()?;
    let mut dev = Timing::default();
    let mut faults = 0;
    for i in 0..c.warmup + c.iters {
        if i == c.warmup {
            before = ctx.dev_stats()?;
        }
        let regs = if cold {
            Some((
                ctx.register(&src, Access::READ)?,
                ctx.register(&dst, Access::WRITE)?,
            ))
        } else {
            None
        };
        let f0 = ctx.ctx_stats()?.faults;
        let t = Instant::now();
        let moved = drive(&ctx, items.iter().copied(), timeout)?;
        let took = t.elapsed();
        let f1 = ctx.ctx_stats()?.faults;
        drop(regs);
        if moved != size {
            return Err(format!("device copied {moved} bytes, expected {size}").into());
        }
        if i >= c.warmup {
            dev.0.push(took);
            faults += f1 - f0;
            progress("copy", i - c.warmup, c.iters);
        }
    }
    let mut report = Report::new("copy", c);
    report.counters(&ctx, &before)?;
    drop(hot);
    if dst.to_vec() != pattern {
        return Err("device copy: destination differs from source".into());
    }
    eprintln!("[copy] device data verified; memcpy baseline");
    let a = pattern.clone();
    let mut b = vec![0u8; len];
    for _ in 0..c.warmup {
        b.copy_from_slice(black_box(&a));
    }
    let mut cpu = Timing::default();
    for _ in 0..c.iters {
        let t = Instant::now();
        black_box(&mut b).copy_from_slice(black_box(&a));
        cpu.0.push(t.elapsed());
    }
    report.params.push("size", json!(size));
    report.params.push("cold", json!(cold));
    let mut dm = dev.metrics(size);
    dm.push("faults_per_iter", faults as f64 / f64::from(c.iters.max(1)));
    report.row("device_copy", "measured", dm);
    report.row("memcpy", "baseline", cpu.metrics(size));
    report.ratio(
        "device_over_memcpy_time",
        dev.mean_us(),
        cpu.mean_us(),
        "mean device COPY time / mean memcpy time (>1: device slower)",
    );
    report.ratio(
        "device_over_memcpy_bandwidth",
        cpu.p50_us(),
        dev.p50_us(),
        "device COPY bandwidth / memcpy bandwidth, medians (<1: device slower)",
    );
    Ok(report)
}

#[derive(Default)]
struct RegTimes {
    register: Timing,
    touch: Timing,
    deregister: Timing,
    total: Timing,
    faults: u64,
}

impl RegTimes {
    fn metrics(&self, size: u64, iters: u32) -> Fields<f64> {
        let mut m = Fields::default();
        m.push("iters", f64::from(iters));
        m.push("bytes", size as f64);
        m.push("register_us", self.register.mean_us());
        m.push("register_p50_us", self.register.p50_us());
        m.push("first_touch_us", self.touch.mean_us());
        m.push("deregister_us", self.deregister.mean_us());
        m.push("total_us", self.total.mean_us());
        m.push(
            "faults_per_iter",
            self.faults as f64 / f64::from(iters.max(1)),
        );
        m
    }
}

/// True if `e` is the driver refusing `REG_PINNED` (`EOPNOTSUPP`).
fn pinned_unsupported(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<mnic::Error>()
        .and_then(mnic::Error::errno)
        .is_some_and(|n| n == libc::EOPNOTSUPP)
}

fn bench_register(c: &Common, size: u64, no_touch: bool, no_fill: bool) -> CmdResult<Report> {
    let ctx = open(c)?;
    let buf = alloc(c, size)?;
    // Resident pages on both sides, so pinning measures pinning, not page allocation.
    if !no_fill {
        buf.fill(0x11);
    }
    let timeout = Duration::from_millis(c.timeout_ms);
    let pages = buf.len() as u64 / mnic::abi::pte::PAGE_SIZE;
    let touch = Traffic::over(&buf)
        .op_size(4096)
        .ops(pages)
        .pattern(Pattern::SeqRead)
        .build()?;
    let before = ctx.dev_stats()?;
    let run = |name: &str, access: Access| -> CmdResult<RegTimes> {
        let mut r = RegTimes::default();
        for i in 0..c.warmup + c.iters {
            let f0 = ctx.ctx_stats()?.faults;
            let t0 = Instant::now();
            let reg = ctx.register(&buf, access)?;
            let t1 = Instant::now();
            if !no_touch {
                let ops = drive(&ctx, [touch], timeout)?;
                if ops != pages {
                    return Err(format!("traffic did {ops} ops, expected {pages}").into());
                }
            }
            let t2 = Instant::now();
            reg.deregister()?;
            let t3 = Instant::now();
            if i >= c.warmup {
                r.register.0.push(t1 - t0);
                r.touch.0.push(t2 - t1);
                r.deregister.0.push(t3 - t2);
                r.total.0.push(t3 - t0);
                r.faults += ctx.ctx_stats()?.faults - f0;
                progress(name, i - c.warmup, c.iters);
            }
        }
        Ok(r)
    };
    eprintln!(
        "[register] {} ({pages} pages), on-demand",
        human_bytes(size)
    );
    let od = run("register on-demand", Access::READ)?;
    eprintln!("[register] pinned (REG_PINNED)");
    let pin = match run("register pinned", Access::READ | Access::PINNED) {
        Ok(p) => Some(p),
        Err(e) if pinned_unsupported(e.as_ref()) => {
            eprintln!(
                "[register] REG_PINNED is not supported by this driver (EOPNOTSUPP): \
                 the pinned baseline is skipped, only on-demand is reported"
            );
            None
        }
        Err(e) => return Err(e),
    };
    let mut report = Report::new("register", c);
    report.counters(&ctx, &before)?;
    report.params.push("size", json!(size));
    report.params.push("first_touch", json!(!no_touch));
    report.params.push("fill", json!(!no_fill));
    report.params.push("pinned_supported", json!(pin.is_some()));
    report.row("on_demand", "measured", od.metrics(size, c.iters));
    let Some(pin) = pin else {
        report.notes.push(
            "REG_PINNED returned EOPNOTSUPP: this driver has no pinned mode, so there is \
             no pinned baseline and no ratio"
                .into(),
        );
        return Ok(report);
    };
    report.row("pinned", "baseline", pin.metrics(size, c.iters));
    report.ratio(
        "pinned_over_on_demand_register",
        pin.register.p50_us(),
        od.register.p50_us(),
        "registration time, pinned / on-demand, medians (>1: pinning costs more)",
    );
    if !no_touch {
        report.ratio(
            "pinned_over_on_demand_first_touch",
            pin.touch.p50_us(),
            od.touch.p50_us(),
            "first device pass, pinned / on-demand, medians (<1: on-demand pays its faults here)",
        );
    }
    report.ratio(
        "pinned_over_on_demand_total",
        pin.total.p50_us(),
        od.total.p50_us(),
        "register + first pass + deregister, pinned / on-demand, medians",
    );
    Ok(report)
}

/// The CPU doing what the traffic generator does: `ops` accesses of `op_size` bytes in
/// `region`, sequential (wrapping) or at pseudo-random offsets.
pub fn cpu_traffic(region: &mut [u8], op_size: usize, ops: u64, pattern: Pattern, seed: u64) {
    let mut scratch = vec![0u8; op_size];
    let slots = (region.len() / op_size).max(1);
    let mut x = seed | 1;
    for i in 0..ops {
        let (slot, write) = match pattern {
            Pattern::SeqRead => ((i as usize) % slots, false),
            Pattern::SeqWrite => ((i as usize) % slots, true),
            Pattern::RandomRw => {
                // xorshift64
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ((x as usize >> 1) % slots, x & 1 == 1)
            }
        };
        let chunk = &mut region[slot * op_size..(slot + 1) * op_size];
        if write {
            scratch[0] = i as u8;
            chunk.copy_from_slice(black_box(&scratch));
        } else {
            scratch.copy_from_slice(black_box(chunk));
        }
    }
    black_box(&scratch);
}

/// Timed generator runs; with `pageout_every`, a second thread swaps the buffer out
/// at that period while they run. Returns the times and how many page-outs happened.
fn traffic_runs(
    ctx: &Context,
    buf: &DmaBuffer,
    w: Work,
    c: &Common,
    ops: u64,
    pageout_before: bool,
    pageout_every: Option<Duration>,
) -> CmdResult<(Timing, u64)> {
    let timeout = Duration::from_millis(c.timeout_ms);
    let stop = AtomicBool::new(false);
    let pageouts = AtomicU64::new(0);
    let (va, len) = (buf.va() as usize, buf.len());
    let (stop, pageouts) = (&stop, &pageouts);
    std::thread::scope(|s| {
        if let Some(every) = pageout_every {
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // SAFETY: `[va, va + len)` is the live mapping of `buf`, which outlives
                    // this scope; MADV_PAGEOUT only swaps pages out (their contents are
                    // kept), so no memory a Rust reference could see changes.
                    let rc =
                        unsafe { libc::madvise(va as *mut libc::c_void, len, libc::MADV_PAGEOUT) };
                    if rc == 0 {
                        pageouts.fetch_add(1, Ordering::Relaxed);
                    }
                    std::thread::sleep(every);
                }
            });
        }
        let result = (|| -> CmdResult<Timing> {
            let mut dev = Timing::default();
            for i in 0..c.iters {
                if pageout_before {
                    buf.pageout()?;
                }
                let t = Instant::now();
                let done = drive(ctx, [w], timeout)?;
                dev.0.push(t.elapsed());
                if done != ops {
                    return Err(format!("traffic did {done} ops, expected {ops}").into());
                }
                progress("traffic", i, c.iters);
            }
            Ok(dev)
        })();
        stop.store(true, Ordering::Relaxed);
        result.map(|t| (t, pageouts.load(Ordering::Relaxed)))
    })
}

#[allow(clippy::too_many_arguments)]
fn bench_traffic(
    c: &Common,
    size: u64,
    op_size: u32,
    ops: Option<u64>,
    pattern: Pattern,
    rate: u64,
    seed: u64,
    pageout: bool,
    pageout_every_ms: Option<u64>,
) -> CmdResult<Report> {
    let len = u32::try_from(size).map_err(|_| "--size must be below 4 GiB")?;
    let ops = ops.unwrap_or(u64::from(len / op_size.max(1)));
    let ctx = open(c)?;
    let buf = alloc(c, size)?;
    buf.fill(0x22);
    let access = if pattern.writes() {
        Access::READ_WRITE
    } else {
        Access::READ
    };
    let reg = ctx.register(&buf, access)?;
    let w = Traffic::new(buf.va(), len)
        .op_size(op_size)
        .ops(ops)
        .pattern(pattern)
        .rate(rate)
        .seed(seed)
        .build()?;
    let timeout = Duration::from_millis(c.timeout_ms);
    eprintln!(
        "[traffic] {ops} ops of {op_size} B over {}, {pattern:?}, rate {}",
        human_bytes(size),
        if rate == 0 {
            "unthrottled".to_owned()
        } else {
            format!("{rate}/s")
        }
    );
    for _ in 0..c.warmup {
        drive(&ctx, [w], timeout)?;
    }
    let every = pageout_every_ms.map(Duration::from_millis);
    // With page-outs during the runs, the same runs without them are the baseline.
    let quiet = match every {
        Some(_) => {
            eprintln!("[traffic] baseline: no page-outs");
            Some(traffic_runs(&ctx, &buf, w, c, ops, pageout, None)?.0)
        }
        None => None,
    };
    if let Some(ms) = pageout_every_ms {
        eprintln!("[traffic] swapping the range out every {ms} ms while it runs");
    }
    let before = ctx.dev_stats()?;
    let cs0 = ctx.ctx_stats()?;
    let (dev, pageouts) = traffic_runs(&ctx, &buf, w, c, ops, pageout, every)?;
    let cs1 = ctx.ctx_stats()?;
    let mut report = Report::new("traffic", c);
    report.counters(&ctx, &before)?;
    let delta = ctx.dev_stats()?.since(&before);
    drop(reg);
    eprintln!("[traffic] CPU baseline");
    let mut region = vec![0x22u8; buf.len()];
    let mut cpu = Timing::default();
    for i in 0..c.warmup + c.iters {
        let t = Instant::now();
        cpu_traffic(&mut region, op_size as usize, ops, pattern, seed);
        if i >= c.warmup {
            cpu.0.push(t.elapsed());
        }
    }
    let bytes = ops * u64::from(op_size);
    let ops_rate = |t: &Timing| {
        let s = t.total_s();
        if s > 0.0 {
            ops as f64 * t.0.len() as f64 / s
        } else {
            0.0
        }
    };
    let mut dm = dev.metrics(bytes);
    dm.push("ops_per_s", ops_rate(&dev));
    // Always present (also when zero): the stale-access count must stay 0.
    dm.push("stale_accesses", delta.get(counter::STALE_ACCESSES) as f64);
    dm.push("device_faults", delta.get(counter::FAULTS) as f64);
    dm.push(
        "device_invalidations",
        delta.get(counter::INVALIDATIONS) as f64,
    );
    dm.push("driver_faults", (cs1.faults - cs0.faults) as f64);
    dm.push(
        "driver_invalidations",
        (cs1.invalidations - cs0.invalidations) as f64,
    );
    dm.push("sync_waits", (cs1.sync_waits - cs0.sync_waits) as f64);
    dm.push("pageouts", pageouts as f64);
    let mut cm = cpu.metrics(bytes);
    cm.push("ops_per_s", ops_rate(&cpu));
    report.params.push("size", json!(size));
    report.params.push("op_size", json!(op_size));
    report.params.push("ops", json!(ops));
    report.params.push("pattern", json!(format!("{pattern:?}")));
    report.params.push("rate", json!(rate));
    report.params.push("seed", json!(seed));
    report.params.push("pageout", json!(pageout));
    report
        .params
        .push("pageout_every_ms", json!(pageout_every_ms));
    if let Some(q) = &quiet {
        report.row("device_traffic_pageout", "measured", dm);
        let mut qm = q.metrics(bytes);
        qm.push("ops_per_s", ops_rate(q));
        report.row("device_traffic", "baseline", qm);
        report.row("cpu_same_pattern", "reference", cm);
        report.ratio(
            "pageout_over_quiet_throughput",
            ops_rate(&dev),
            ops_rate(q),
            "ops/s with page-outs during the runs / ops/s without (<1: swapping slows the device)",
        );
    } else {
        report.row("device_traffic", "measured", dm);
        report.row("cpu_same_pattern", "baseline", cm);
    }
    report.ratio(
        "device_over_cpu_time",
        dev.mean_us(),
        cpu.mean_us(),
        "mean device run time / mean CPU time for the same accesses",
    );
    if let Some(f) = report
        .device_counters
        .get(counter::NAMES[counter::FAULTS as usize])
    {
        eprintln!("[traffic] {f} device faults during the timed runs");
    }
    Ok(report)
}

pub fn run(cmd: BenchCmd) -> CmdResult {
    let (report, json) = match cmd {
        BenchCmd::Copy { common, size, cold } => {
            let c = common.effective();
            (bench_copy(&c, c.size(size, 64 << 10), cold)?, c.json)
        }
        BenchCmd::Register {
            common,
            size,
            no_touch,
            no_fill,
        } => {
            let c = common.effective();
            let size = c.size(size, 1 << 20);
            (bench_register(&c, size, no_touch, no_fill)?, c.json)
        }
        BenchCmd::Fault { common, size } => {
            let c = common.effective();
            (bench_mm::fault(&c, c.size(size, 256 << 10))?, c.json)
        }
        BenchCmd::Invalidate {
            common,
            size,
            no_pageout,
        } => {
            let c = common.effective();
            let size = c.size(size, 1 << 20);
            (bench_mm::invalidate(&c, size, no_pageout)?, c.json)
        }
        BenchCmd::Traffic {
            common,
            size,
            op_size,
            ops,
            pattern,
            rate,
            seed,
            pageout,
            pageout_every_ms,
        } => {
            let c = common.effective();
            let size = c.size(size, 1 << 20);
            let ops = if c.smoke {
                Some(ops.unwrap_or(64).min(64))
            } else {
                ops
            };
            let report = bench_traffic(
                &c,
                size,
                op_size,
                ops,
                pattern.into(),
                rate,
                seed,
                pageout,
                pageout_every_ms,
            )?;
            (report, c.json)
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn common() -> Common {
        crate::Cli::parse_from(["mnic", "bench", "copy"])
            .bench_common()
            .unwrap()
    }

    #[test]
    fn smoke_shrinks_the_run() {
        let c = crate::Cli::parse_from(["mnic", "bench", "fault", "--smoke", "-n", "9"])
            .bench_common()
            .unwrap();
        let e = c.effective();
        assert_eq!((e.iters, e.warmup), (1, 0));
        assert_eq!(e.size(64 << 20, 1 << 20), 1 << 20);
        let c = common();
        assert_eq!(c.effective().iters, 20);
        assert_eq!(c.size(64 << 20, 1 << 20), 64 << 20);
    }

    #[test]
    fn timing_stats() {
        let t = Timing(vec![
            Duration::from_micros(30),
            Duration::from_micros(10),
            Duration::from_micros(20),
        ]);
        assert!((t.mean_us() - 20.0).abs() < 1e-9);
        assert!((t.pct_us(0.0) - 10.0).abs() < 1e-9);
        assert!((t.pct_us(0.5) - 20.0).abs() < 1e-9);
        assert!((t.pct_us(1.0) - 30.0).abs() < 1e-9);
        let m = t.metrics(1 << 20);
        assert_eq!(m.get("iters"), Some(&3.0));
        // 3 MiB in 60 µs.
        assert!((m.get("mib_per_s").unwrap() - 3.0 / 60e-6).abs() < 1.0);
        assert_eq!(Timing::default().mean_us(), 0.0);
    }

    #[test]
    fn report_json_shape() {
        let mut r = Report::new("copy", &common());
        r.params.push("size", json!(4096));
        r.results.push(Row {
            name: "device_copy".into(),
            side: "measured",
            metrics: Timing(vec![Duration::from_micros(4)]).metrics(4096),
        });
        r.results.push(Row {
            name: "memcpy".into(),
            side: "baseline",
            metrics: Timing(vec![Duration::from_micros(1)]).metrics(4096),
        });
        r.ratio("device_over_memcpy_time", 4.0, 1.0, "x");
        r.ratio("zero", 1.0, 0.0, "y");
        r.device_counters.push("faults", 3);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["bench"], "copy");
        assert_eq!(v["device"], 0);
        assert_eq!(v["params"]["iters"], 20);
        assert_eq!(v["params"]["doorbell"], "auto");
        assert_eq!(v["params"]["size"], 4096);
        assert_eq!(v["results"][0]["side"], "measured");
        assert_eq!(v["results"][1]["side"], "baseline");
        assert_eq!(v["results"][0]["metrics"]["mean_us"], 4.0);
        assert_eq!(v["ratios"][0]["value"], 4.0);
        // NaN has no JSON form: serde_json writes null.
        assert!(v["ratios"][1]["value"].is_null());
        assert_eq!(v["device_counters"]["faults"], 3);
        let text = r.render();
        assert!(text.contains("device_copy"));
        assert!(text.contains("baseline"));
        assert!(text.contains("4.000"));
    }

    #[test]
    fn cpu_traffic_touches_the_region() {
        let mut region = vec![0u8; 16 * 4096];
        cpu_traffic(&mut region, 4096, 16, Pattern::SeqWrite, 1);
        // Each op wrote its index into the first byte of its slot.
        for i in 0..16 {
            assert_eq!(region[i * 4096], i as u8);
        }
        cpu_traffic(&mut region, 4096, 1000, Pattern::RandomRw, 7);
        cpu_traffic(&mut region, 100, 10, Pattern::SeqRead, 0);
    }

    #[test]
    fn copy_items_split_at_copy_max() {
        let src = DmaBuffer::new(4096).unwrap();
        let dst = DmaBuffer::new(4096).unwrap();
        assert_eq!(copies(&src, &dst, 4096).unwrap().len(), 1);
    }
}
