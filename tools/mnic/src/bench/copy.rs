//! `mnic bench copy`: device COPY against memcpy of the same size, with hot (registered
//! once, prefetched) or cold (registered anew each iteration) translations.

use std::hint::black_box;
use std::time::{Duration, Instant};

use mnic::abi::work as wk;
use mnic::{Access, DmaBuffer, Work};
use mnic_bench_schema::names::{metric, param, ratio, row};
use mnic_bench_schema::{Bench, Report, Side};
use serde_json::json;

use crate::bench::args::Common;
use crate::bench::harness::{alloc, drive, open, progress};
use crate::bench::report::{new_report, record_counters};
use crate::bench::statistics::Timing;
use crate::error::CmdResult;
use crate::output::human_bytes;

/// COPY items moving `len` bytes from `src` to `dst`, split at `COPY_MAX`.
fn copies(src: &DmaBuffer, dst: &DmaBuffer, len: usize) -> CmdResult<Vec<Work>> {
    let max = wk::COPY_MAX as usize;
    (0..len)
        .step_by(max)
        .map(|off| Ok(Work::copy_buffers(src, off, dst, off, max.min(len - off))?))
        .collect()
}

pub fn run(c: &Common, size: u64, cold: bool) -> CmdResult<Report> {
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
    let mut report = new_report(Bench::Copy, c);
    record_counters(&mut report, &ctx, &before)?;
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
    report.params.push(param::SIZE, json!(size));
    report.params.push(param::COLD, json!(cold));
    let mut dm = dev.metrics(size);
    dm.push(
        metric::FAULTS_PER_ITER,
        faults as f64 / f64::from(c.iters.max(1)),
    );
    report.row(row::DEVICE_COPY, Side::Measured, dm);
    report.row(row::MEMCPY, Side::Baseline, cpu.metrics(size));
    report.ratio(
        ratio::DEVICE_OVER_MEMCPY_TIME,
        dev.mean_us(),
        cpu.mean_us(),
        "mean device COPY time / mean memcpy time (>1: device slower)",
    );
    report.ratio(
        ratio::DEVICE_OVER_MEMCPY_BANDWIDTH,
        cpu.p50_us(),
        dev.p50_us(),
        "device COPY bandwidth / memcpy bandwidth, medians (<1: device slower)",
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_items_split_at_copy_max() {
        let src = DmaBuffer::new(4096).unwrap();
        let dst = DmaBuffer::new(4096).unwrap();
        assert_eq!(copies(&src, &dst, 4096).unwrap().len(), 1);
    }
}
