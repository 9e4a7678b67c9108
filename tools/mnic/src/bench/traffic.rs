//! `mnic bench traffic`: a traffic-generator run against the CPU doing the same
//! accesses; optionally with a second thread paging the range out during the runs.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mnic::abi::counter;
use mnic::{Access, Context, DmaBuffer, Pattern, Traffic, Work};
use mnic_bench_schema::names::{metric, param, ratio, row};
use mnic_bench_schema::{Bench, Report, Side};
use serde_json::json;

use crate::bench::args::Common;
use crate::bench::harness::{alloc, drive, open, progress};
use crate::bench::report::{new_report, record_counters};
use crate::bench::statistics::Timing;
use crate::error::CmdResult;
use crate::output::human_bytes;

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
pub fn run(
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
    let mut report = new_report(Bench::Traffic, c);
    record_counters(&mut report, &ctx, &before)?;
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
    dm.push(metric::OPS_PER_S, ops_rate(&dev));
    // Always present (also when zero): the stale-access count must stay 0.
    dm.push(
        metric::STALE_ACCESSES,
        delta.get(counter::STALE_ACCESSES) as f64,
    );
    dm.push(metric::DEVICE_FAULTS, delta.get(counter::FAULTS) as f64);
    dm.push(
        metric::DEVICE_INVALIDATIONS,
        delta.get(counter::INVALIDATIONS) as f64,
    );
    dm.push(metric::DRIVER_FAULTS, (cs1.faults - cs0.faults) as f64);
    dm.push(
        metric::DRIVER_INVALIDATIONS,
        (cs1.invalidations - cs0.invalidations) as f64,
    );
    dm.push(metric::SYNC_WAITS, (cs1.sync_waits - cs0.sync_waits) as f64);
    dm.push(metric::PAGEOUTS, pageouts as f64);
    let mut cm = cpu.metrics(bytes);
    cm.push(metric::OPS_PER_S, ops_rate(&cpu));
    report.params.push(param::SIZE, json!(size));
    report.params.push(param::OP_SIZE, json!(op_size));
    report.params.push(param::OPS, json!(ops));
    report
        .params
        .push(param::PATTERN, json!(format!("{pattern:?}")));
    report.params.push(param::RATE, json!(rate));
    report.params.push(param::SEED, json!(seed));
    report.params.push(param::PAGEOUT, json!(pageout));
    report
        .params
        .push(param::PAGEOUT_EVERY_MS, json!(pageout_every_ms));
    if let Some(q) = &quiet {
        report.row(row::DEVICE_TRAFFIC_PAGEOUT, Side::Measured, dm);
        let mut qm = q.metrics(bytes);
        qm.push(metric::OPS_PER_S, ops_rate(q));
        report.row(row::DEVICE_TRAFFIC, Side::Baseline, qm);
        report.row(row::CPU_SAME_PATTERN, Side::Reference, cm);
        report.ratio(
            ratio::PAGEOUT_OVER_QUIET_THROUGHPUT,
            ops_rate(&dev),
            ops_rate(q),
            "ops/s with page-outs during the runs / ops/s without (<1: swapping slows the device)",
        );
    } else {
        report.row(row::DEVICE_TRAFFIC, Side::Measured, dm);
        report.row(row::CPU_SAME_PATTERN, Side::Baseline, cm);
    }
    report.ratio(
        ratio::DEVICE_OVER_CPU_TIME,
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
