//! `mnic bench sync`: the round trip of one `MNIC_IOC_SYNC` (the driver posts a SYNC on
//! the command queue and waits for it) with the shadow doorbell against the same with
//! every post trapped (`trapped_doorbells` = 1), in blocks that alternate within one
//! run on an otherwise idle device.

use std::time::{Duration, Instant};

use mnic::{Caps, Context, Device};
use mnic_bench_schema::names::{param, ratio, row};
use mnic_bench_schema::{Bench, Report, Side};
use serde_json::json;

use crate::bench::args::Common;
use crate::bench::device_counts::DeviceCounts;
use crate::bench::harness::{progress, sides};
use crate::bench::report::{new_report, record_counters};
use crate::bench::statistics::Timing;
use crate::bench::trapped::TrappedKnob;
use crate::error::CmdResult;

/// `batch` SYNC round trips, each timed.
fn block(ctx: &Context, batch: u32, t: &mut Vec<Duration>) -> CmdResult {
    for _ in 0..batch {
        let s = Instant::now();
        ctx.sync()?;
        t.push(s.elapsed());
    }
    Ok(())
}

pub fn run(c: &Common, batch: u32) -> CmdResult<Report> {
    // No queues: a SYNC goes through the command queue only.
    let ctx = Device::open_index(c.device)?;
    match ctx.sync() {
        Ok(()) => {}
        Err(e @ mnic::Error::NotSupported { .. }) => {
            return Ok(Report::skipped(
                Bench::Sync,
                c.device,
                format!("the driver has no MNIC_IOC_SYNC ({e})"),
            ))
        }
        Err(e) => return Err(e.into()),
    }
    let knob = match TrappedKnob::open(ctx.info().minor) {
        Ok(k) => k,
        Err(why) => return Ok(Report::skipped(Bench::Sync, c.device, why)),
    };
    let shadow_cap = ctx.info().caps.contains(Caps::SHADOW);
    eprintln!(
        "[sync] {batch} SYNC round trips per block, shadow and trapped blocks alternating, \
         {} iterations + {} warmup; device CAPS.SHADOW: {shadow_cap}",
        c.iters, c.warmup
    );
    let (mut shadow, mut trapped) = (Timing::default(), Timing::default());
    let (mut n_shadow, mut n_trapped) = (DeviceCounts::default(), DeviceCounts::default());
    let mut before = ctx.dev_stats()?;
    for i in 0..c.warmup + c.iters {
        if i == c.warmup {
            before = ctx.dev_stats()?;
        }
        for forced in sides(i) {
            knob.set(forced)?;
            let mut t = Vec::new();
            let a = ctx.dev_stats()?;
            block(&ctx, batch, &mut t)?;
            let b = ctx.dev_stats()?;
            if i >= c.warmup {
                let (timing, counts) = if forced {
                    (&mut trapped, &mut n_trapped)
                } else {
                    (&mut shadow, &mut n_shadow)
                };
                timing.0.extend(t);
                counts.add(&a, &b, u64::from(batch));
            }
        }
        if i >= c.warmup {
            progress("sync", i - c.warmup, c.iters);
        }
    }
    knob.set(false)?;
    let mut report = new_report(Bench::Sync, c);
    record_counters(&mut report, &ctx, &before)?;
    report.params.push(param::BATCH, json!(batch));
    report.params.push(param::SHADOW_CAP, json!(shadow_cap));
    if !shadow_cap {
        report.notes.push(
            "the device has no CAPS.SHADOW: the driver rings CMDQ_TAIL on both sides, \
             so the two sides measure the same path"
                .into(),
        );
    }
    for (name, side, t, n) in [
        (row::SYNC_SHADOW, Side::Measured, &shadow, &n_shadow),
        (row::SYNC_TRAPPED, Side::Baseline, &trapped, &n_trapped),
    ] {
        let mut m = t.metrics(0);
        for (k, v) in n.per_op() {
            m.push(k, v);
        }
        report.row(name, side, m);
    }
    report.ratio(
        ratio::SYNC_TRAPPED_OVER_SHADOW,
        trapped.p50_us(),
        shadow.p50_us(),
        "SYNC round trip, every post trapped / shadow doorbell, medians (>1: shadow faster)",
    );
    Ok(report)
}
