//! `mnic bench register`: on-demand registration against pinned (`REG_PINNED`):
//! register, optionally one device pass, deregister.

use std::time::{Duration, Instant};

use mnic::{Access, Pattern, Traffic};
use mnic_bench_schema::names::{metric, param, ratio, row};
use mnic_bench_schema::{Bench, Fields, Report, Side};
use serde_json::json;

use crate::bench::args::Common;
use crate::bench::harness::{alloc, drive, open, progress};
use crate::bench::report::{new_report, record_counters};
use crate::bench::statistics::Timing;
use crate::error::CmdResult;
use crate::output::human_bytes;

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
        m.push(metric::ITERS, f64::from(iters));
        m.push(metric::BYTES, size as f64);
        m.push(metric::REGISTER_US, self.register.mean_us());
        m.push(metric::REGISTER_P50_US, self.register.p50_us());
        m.push(metric::FIRST_TOUCH_US, self.touch.mean_us());
        m.push(metric::DEREGISTER_US, self.deregister.mean_us());
        m.push(metric::TOTAL_US, self.total.mean_us());
        m.push(
            metric::FAULTS_PER_ITER,
            self.faults as f64 / f64::from(iters.max(1)),
        );
        m
    }
}

/// True if `e` is the driver refusing `REG_PINNED` (`EOPNOTSUPP`).
pub(crate) fn pinned_unsupported(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<mnic::Error>()
        .and_then(mnic::Error::errno)
        .is_some_and(|n| n == libc::EOPNOTSUPP)
}

pub fn run(c: &Common, size: u64, no_touch: bool, no_fill: bool) -> CmdResult<Report> {
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
    let mut report = new_report(Bench::Register, c);
    record_counters(&mut report, &ctx, &before)?;
    report.params.push(param::SIZE, json!(size));
    report.params.push(param::FIRST_TOUCH, json!(!no_touch));
    report.params.push(param::FILL, json!(!no_fill));
    report
        .params
        .push(param::PINNED_SUPPORTED, json!(pin.is_some()));
    report.row(row::ON_DEMAND, Side::Measured, od.metrics(size, c.iters));
    let Some(pin) = pin else {
        report.notes.push(
            "REG_PINNED returned EOPNOTSUPP: this driver has no pinned mode, so there is \
             no pinned baseline and no ratio"
                .into(),
        );
        return Ok(report);
    };
    report.row(row::PINNED, Side::Baseline, pin.metrics(size, c.iters));
    report.ratio(
        ratio::PINNED_OVER_ON_DEMAND_REGISTER,
        pin.register.p50_us(),
        od.register.p50_us(),
        "registration time, pinned / on-demand, medians (>1: pinning costs more)",
    );
    if !no_touch {
        report.ratio(
            ratio::PINNED_OVER_ON_DEMAND_FIRST_TOUCH,
            pin.touch.p50_us(),
            od.touch.p50_us(),
            "first device pass, pinned / on-demand, medians (<1: on-demand pays its faults here)",
        );
    }
    report.ratio(
        ratio::PINNED_OVER_ON_DEMAND_TOTAL,
        pin.total.p50_us(),
        od.total.p50_us(),
        "register + first pass + deregister, pinned / on-demand, medians",
    );
    Ok(report)
}
