//! `mnic bench fault`: first-touch device faults against prefetch and a hot pass, and
//! against the CPU's own faults (first touch of fresh memory, swap-in after
//! MADV_PAGEOUT: device reads, device writes, CPU loads).

use std::hint::black_box;
use std::time::{Duration, Instant};

use mnic::{Access, Context, DmaBuffer, Pattern, Traffic, Work};
use mnic_bench_schema::names::{metric, param, ratio, row};
use mnic_bench_schema::{Bench, Report, Side};
use serde_json::json;

use crate::bench::args::Common;
use crate::bench::device_counts::DeviceCounts;
use crate::bench::harness::{alloc, drive, open, progress, touch, PAGE};
use crate::bench::report::{new_report, record_counters};
use crate::bench::statistics::{per_page, Timing};
use crate::error::CmdResult;
use crate::output::human_bytes;

/// One generator pass reading (`SeqRead`) or writing (`SeqWrite`) every page of `buf` once
/// (4 KiB ops).
fn page_pass(buf: &DmaBuffer, pattern: Pattern) -> CmdResult<(Work, u64)> {
    let pages = (buf.len() / PAGE) as u64;
    let w = Traffic::over(buf)
        .op_size(PAGE as u32)
        .ops(pages)
        .pattern(pattern)
        .build()?;
    Ok((w, pages))
}

fn run_pass(ctx: &Context, w: Work, pages: u64, timeout: Duration) -> CmdResult<Duration> {
    let t = Instant::now();
    let done = drive(ctx, [w], timeout)?;
    let took = t.elapsed();
    if done != pages {
        return Err(format!("traffic did {done} ops, expected {pages}").into());
    }
    Ok(took)
}

/// First-touch device faults (translations empty, pages resident) against prefetch
/// and a hot pass, against the CPU's own faults: first touch of fresh anonymous memory,
/// and swap-in after MADV_PAGEOUT (device and CPU).
pub fn run(c: &Common, size: u64) -> CmdResult<Report> {
    let ctx = open(c)?;
    let timeout = Duration::from_millis(c.timeout_ms);
    let buf = alloc(c, size)?;
    buf.fill(0x33);
    let (w, pages) = page_pass(&buf, Pattern::SeqRead)?;
    let (write_pass, _) = page_pass(&buf, Pattern::SeqWrite)?;
    let len = buf.len();
    eprintln!(
        "[fault] {} ({pages} pages) per pass, warmup {}",
        human_bytes(len as u64),
        c.warmup
    );
    let (mut first, mut hot, mut pref, mut pref_pass) = Default::default();
    let (mut dev_swap, mut dev_write_swap, mut cpu_fresh, mut cpu_swap) = Default::default();
    let mut write_swap_faults = 0u64;
    let (mut first_faults, mut swap_faults, mut swapped, mut swap_total) = (0u64, 0u64, 0, 0);
    // What the polling device did per swap-in fault (doorbells: RESUMEs that had to wake it).
    let mut swap_counts = DeviceCounts::default();
    let keep = |t: &mut Timing, d: Duration, i: u32| {
        if i >= c.warmup {
            t.0.push(d);
        }
    };
    let before = ctx.dev_stats()?;
    for i in 0..c.warmup + c.iters {
        // Device first touch: a fresh on-demand registration, every page faults
        // (the driver fills a fault-around window per fault). Then a hot pass.
        let reg = ctx.register(&buf, Access::READ)?;
        let f0 = ctx.ctx_stats()?.faults;
        keep(&mut first, run_pass(&ctx, w, pages, timeout)?, i);
        let f1 = ctx.ctx_stats()?.faults;
        keep(&mut hot, run_pass(&ctx, w, pages, timeout)?, i);
        reg.deregister()?;
        // Prefetch: the same translations filled by MNIC_IOC_PREFETCH, then a pass.
        let reg = ctx.register(&buf, Access::READ)?;
        let t = Instant::now();
        reg.prefetch(false)?;
        keep(&mut pref, t.elapsed(), i);
        keep(&mut pref_pass, run_pass(&ctx, w, pages, timeout)?, i);
        reg.deregister()?;
        // Device swap-in: paged out while unregistered, then faulted back by the device.
        buf.pageout()?;
        let (res, tot) = buf.resident_pages()?;
        let reg = ctx.register(&buf, Access::READ)?;
        let f2 = ctx.ctx_stats()?.faults;
        let d2 = ctx.dev_stats()?;
        keep(&mut dev_swap, run_pass(&ctx, w, pages, timeout)?, i);
        let d3 = ctx.dev_stats()?;
        let f3 = ctx.ctx_stats()?.faults;
        reg.deregister()?;
        // Device write swap-in: the same with a write pass (the window around a write fault).
        buf.pageout()?;
        let reg = ctx.register(&buf, Access::READ_WRITE)?;
        let f4 = ctx.ctx_stats()?.faults;
        keep(
            &mut dev_write_swap,
            run_pass(&ctx, write_pass, pages, timeout)?,
            i,
        );
        let f5 = ctx.ctx_stats()?.faults;
        reg.deregister()?;
        // CPU: first touch of fresh anonymous memory (allocate + zero + map).
        let a = DmaBuffer::new(len)?;
        let t = Instant::now();
        touch(&a, 1);
        keep(&mut cpu_fresh, t.elapsed(), i);
        drop(a);
        // CPU swap-in: page out, then one load per page.
        buf.pageout()?;
        let t = Instant::now();
        for off in (0..len).step_by(PAGE) {
            black_box(buf.read_u64(off));
        }
        keep(&mut cpu_swap, t.elapsed(), i);
        if i >= c.warmup {
            first_faults += f1 - f0;
            swap_faults += f3 - f2;
            swap_counts.add(&d2, &d3, f3 - f2);
            write_swap_faults += f5 - f4;
            swapped += tot - res;
            swap_total += tot;
            progress("fault", i - c.warmup, c.iters);
        }
    }
    let mut report = new_report(Bench::Fault, c);
    record_counters(&mut report, &ctx, &before)?;
    let n = f64::from(c.iters.max(1));
    let bytes = len as u64;
    report.params.push(param::SIZE, json!(bytes));
    report.params.push(param::PAGES, json!(pages));
    let swapped_frac = swapped as f64 / swap_total.max(1) as f64;
    report
        .params
        .push(param::SWAPPED_OUT_FRACTION, json!(swapped_frac));
    if swapped_frac < 0.9 {
        report.notes.push(format!(
            "MADV_PAGEOUT swapped out only {:.0}% of the pages (no swap?): the swap-in rows \
             measure mostly resident memory",
            swapped_frac * 100.0
        ));
    }
    report.row(
        row::DEVICE_FIRST_TOUCH,
        Side::Measured,
        per_page(
            &first,
            bytes,
            pages,
            &[(metric::FAULTS_PER_ITER, first_faults as f64 / n)],
        ),
    );
    report.row(
        row::DEVICE_HOT_PASS,
        Side::Reference,
        per_page(&hot, bytes, pages, &[]),
    );
    report.row(
        row::PREFETCH_IOCTL,
        Side::Baseline,
        per_page(&pref, bytes, pages, &[]),
    );
    report.row(
        row::DEVICE_PASS_AFTER_PREFETCH,
        Side::Reference,
        per_page(&pref_pass, bytes, pages, &[]),
    );
    report.row(
        row::CPU_FIRST_TOUCH,
        Side::Baseline,
        per_page(&cpu_fresh, bytes, pages, &[]),
    );
    report.row(
        row::DEVICE_SWAPIN,
        Side::Measured,
        per_page(
            &dev_swap,
            bytes,
            pages,
            // The device counters per fault of the pass (`*_per_op`: the op is a fault).
            &[
                &[(metric::FAULTS_PER_ITER, swap_faults as f64 / n)][..],
                &swap_counts.per_op()[..],
            ]
            .concat(),
        ),
    );
    report.row(
        row::DEVICE_WRITE_SWAPIN,
        Side::Reference,
        per_page(
            &dev_write_swap,
            bytes,
            pages,
            &[(metric::FAULTS_PER_ITER, write_swap_faults as f64 / n)],
        ),
    );
    report.row(
        row::CPU_SWAPIN,
        Side::Baseline,
        per_page(&cpu_swap, bytes, pages, &[]),
    );
    let fault_only = (first.p50_us() - hot.p50_us()).max(0.0);
    report.ratio(
        ratio::DEVICE_FIRST_TOUCH_OVER_CPU_FIRST_TOUCH,
        first.p50_us(),
        cpu_fresh.p50_us(),
        "per page: device pass that faults every page / CPU first touch of fresh memory, medians",
    );
    report.ratio(
        ratio::DEVICE_FAULT_OVERHEAD_OVER_PREFETCH,
        fault_only,
        pref.p50_us(),
        "per page: (first-touch pass - hot pass) / MNIC_IOC_PREFETCH of the same pages, medians",
    );
    report.ratio(
        ratio::DEVICE_FIRST_TOUCH_OVER_HOT,
        first.p50_us(),
        hot.p50_us(),
        "first-touch pass / hot pass over the same pages, medians",
    );
    report.ratio(
        ratio::DEVICE_SWAPIN_OVER_CPU_SWAPIN,
        dev_swap.p50_us(),
        cpu_swap.p50_us(),
        "per page after MADV_PAGEOUT: device pass / CPU loads, medians",
    );
    Ok(report)
}
