//! `mnic bench doorbell`: one small hot COPY item, post to completion, on a context with
//! a shadow doorbell ([`DoorbellMode::Shadow`]) against a context whose every post is a
//! trapped register write ([`DoorbellMode::Mapped`]), in blocks that alternate within
//! one run. Both copy the same registered, prefetched, already-faulted buffers.

use std::time::{Duration, Instant};

use mnic::{Access, Caps, Context, Device, DmaBuffer, DoorbellMode, QueueConfig, Work};
use mnic_bench_schema::names::{param, ratio, row};
use mnic_bench_schema::{Bench, Report, Side};
use serde_json::json;

use crate::bench::args::Common;
use crate::bench::device_counts::DeviceCounts;
use crate::bench::harness::{progress, sides};
use crate::bench::report::{new_report, record_counters};
use crate::bench::statistics::Timing;
use crate::error::CmdResult;

/// A context of /dev/mnicN with its queues set up in `mode`.
fn context(c: &Common, mode: DoorbellMode) -> mnic::Result<Context> {
    let ctx = Device::open_index(c.device)?;
    ctx.setup_queues(QueueConfig {
        wq_log2: c.queue_log2,
        cq_log2: c.queue_log2,
        doorbell: mode,
    })?;
    Ok(ctx)
}

/// `batch` items, each posted alone and waited for, each timed.
fn block(
    ctx: &Context,
    w: &Work,
    batch: u32,
    timeout: Duration,
    t: &mut Vec<Duration>,
) -> CmdResult {
    for _ in 0..batch {
        let s = Instant::now();
        let moved = ctx.run(w, Some(timeout))?;
        t.push(s.elapsed());
        if moved != u64::from(w.desc().len) {
            return Err(format!("COPY moved {moved} bytes, expected {}", w.desc().len).into());
        }
    }
    Ok(())
}

pub fn run(c: &Common, size: u64, batch: u32) -> CmdResult<Report> {
    let shadow_ctx = match context(c, DoorbellMode::Shadow) {
        Ok(ctx) => ctx,
        Err(e) => {
            let cap = Device::open_index(c.device)
                .map(|x| x.info().caps.contains(Caps::SHADOW))
                .unwrap_or(false);
            return Ok(Report::skipped(
                Bench::Doorbell,
                c.device,
                format!("no shadow doorbell on this context ({e}; device CAPS.SHADOW: {cap})"),
            ));
        }
    };
    let trapped_ctx = context(c, DoorbellMode::Mapped)?;
    let len = usize::try_from(size)?;
    let src = DmaBuffer::new(len)?;
    let dst = DmaBuffer::new(len)?;
    let pattern: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(7) ^ 0xa5).collect();
    src.write_from(0, &pattern);
    dst.fill(0);
    // Hot on both contexts: registered, translations filled, pages resident.
    let mut regs = Vec::new();
    for ctx in [&shadow_ctx, &trapped_ctx] {
        let rs = ctx.register(&src, Access::READ)?;
        let rd = ctx.register(&dst, Access::WRITE)?;
        rs.prefetch(false)?;
        rd.prefetch(true)?;
        regs.push((rs, rd));
    }
    let work = Work::copy_buffers(&src, 0, &dst, 0, len)?;
    let timeout = Duration::from_millis(c.timeout_ms);
    eprintln!(
        "[doorbell] {size} B COPY items, {batch} per block, shadow and trapped contexts \
         alternating, {} iterations + {} warmup",
        c.iters, c.warmup
    );
    let (mut shadow, mut trapped) = (Timing::default(), Timing::default());
    let (mut n_shadow, mut n_trapped) = (DeviceCounts::default(), DeviceCounts::default());
    let mut before = shadow_ctx.dev_stats()?;
    for i in 0..c.warmup + c.iters {
        if i == c.warmup {
            before = shadow_ctx.dev_stats()?;
        }
        for is_trapped in sides(i) {
            let ctx = if is_trapped {
                &trapped_ctx
            } else {
                &shadow_ctx
            };
            let mut t = Vec::new();
            let a = ctx.dev_stats()?;
            block(ctx, &work, batch, timeout, &mut t)?;
            let b = ctx.dev_stats()?;
            if i >= c.warmup {
                let (timing, counts) = if is_trapped {
                    (&mut trapped, &mut n_trapped)
                } else {
                    (&mut shadow, &mut n_shadow)
                };
                timing.0.extend(t);
                counts.add(&a, &b, u64::from(batch));
            }
        }
        if i >= c.warmup {
            progress("doorbell", i - c.warmup, c.iters);
        }
    }
    let mut report = new_report(Bench::Doorbell, c);
    record_counters(&mut report, &shadow_ctx, &before)?;
    drop(regs);
    if dst.to_vec() != pattern {
        return Err("doorbell: destination differs from source".into());
    }
    report.params.push(param::SIZE, json!(size));
    report.params.push(param::BATCH, json!(batch));
    report.params.push(
        param::MEASURED_DOORBELL,
        json!(format!("{:?}", DoorbellMode::Shadow).to_lowercase()),
    );
    for (name, side, t, n) in [
        (row::COPY_ITEM_SHADOW, Side::Measured, &shadow, &n_shadow),
        (row::COPY_ITEM_TRAPPED, Side::Baseline, &trapped, &n_trapped),
    ] {
        let mut m = t.metrics(size);
        for (k, v) in n.per_op() {
            m.push(k, v);
        }
        report.row(name, side, m);
    }
    report.ratio(
        ratio::COPY_ITEM_TRAPPED_OVER_SHADOW,
        trapped.p50_us(),
        shadow.p50_us(),
        "one hot COPY item, post to completion, trapped doorbell / shadow doorbell, medians (>1: shadow faster)",
    );
    Ok(report)
}
