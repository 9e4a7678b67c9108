//! `mnic bench invalidate`: munmap and MADV_PAGEOUT of registered memory (every device
//! entry present, or none) against unregistered memory, with the driver's SYNC waits.

use std::time::Instant;

use mnic::abi::MnicCtxStats;
use mnic::{Access, DmaBuffer};
use mnic_bench_schema::names::{metric, param, ratio, row};
use mnic_bench_schema::{Bench, Report, Side};
use serde_json::json;

use crate::bench::args::Common;
use crate::bench::harness::{alloc, open, progress, touch, PAGE};
use crate::bench::report::{new_report, record_counters};
use crate::bench::statistics::{per_page, Timing};
use crate::error::CmdResult;
use crate::output::human_bytes;

/// Per-iteration driver counter deltas of a registered-side measurement.
#[derive(Default)]
struct SyncTotals {
    waits: u64,
    wait_ns: u64,
    invalidations: u64,
    entries: u64,
}

impl SyncTotals {
    fn add(&mut self, a: &MnicCtxStats, b: &MnicCtxStats) {
        self.waits += b.sync_waits - a.sync_waits;
        self.wait_ns += b.sync_wait_ns - a.sync_wait_ns;
        self.invalidations += b.invalidations - a.invalidations;
        self.entries += b.entries_invalidated - a.entries_invalidated;
    }
    fn extra(&self, iters: u32) -> Vec<(&'static str, f64)> {
        let n = f64::from(iters.max(1));
        vec![
            (metric::SYNC_WAITS_PER_ITER, self.waits as f64 / n),
            (
                metric::SYNC_WAIT_MEAN_US,
                if self.waits > 0 {
                    self.wait_ns as f64 / self.waits as f64 / 1e3
                } else {
                    0.0
                },
            ),
            (metric::SYNC_WAIT_US_PER_ITER, self.wait_ns as f64 / n / 1e3),
            (
                metric::INVALIDATIONS_PER_ITER,
                self.invalidations as f64 / n,
            ),
            (
                metric::ENTRIES_INVALIDATED_PER_ITER,
                self.entries as f64 / n,
            ),
        ]
    }
}

/// munmap and MADV_PAGEOUT of registered memory with every device entry present
/// against the same on unregistered memory; the driver's SYNC waits during them.
pub fn run(c: &Common, size: u64, no_pageout: bool) -> CmdResult<Report> {
    let ctx = open(c)?;
    let len = usize::try_from(size)?.next_multiple_of(PAGE);
    let pages = (len / PAGE) as u64;
    eprintln!(
        "[invalidate] {} ({pages} pages) per munmap / page-out, warmup {}",
        human_bytes(len as u64),
        c.warmup
    );
    let (mut un_plain, mut un_reg, mut un_empty) =
        (Timing::default(), Timing::default(), Timing::default());
    let (mut po_plain, mut po_reg) = (Timing::default(), Timing::default());
    let (mut s_un, mut s_empty, mut s_po) = (
        SyncTotals::default(),
        SyncTotals::default(),
        SyncTotals::default(),
    );
    let buf = if no_pageout {
        None
    } else {
        Some(alloc(c, len as u64)?)
    };
    let before = ctx.dev_stats()?;
    for i in 0..c.warmup + c.iters {
        let keep = i >= c.warmup;
        // munmap, unregistered.
        let a = DmaBuffer::new(len)?;
        touch(&a, 1);
        let t = Instant::now();
        a.unmap()?;
        let d = t.elapsed();
        if keep {
            un_plain.0.push(d);
        }
        // munmap, registered, every translation present: the notifier clears the
        // entries and waits for INVALIDATE + SYNC before the pages can go.
        for (prefetch, timing, totals) in [
            (true, &mut un_reg, &mut s_un),
            (false, &mut un_empty, &mut s_empty),
        ] {
            let a = DmaBuffer::new(len)?;
            touch(&a, 2);
            // SAFETY: the buffer is only written before registering (above) and no work is
            // posted on it; it is unmapped while still
            // registered (what is being measured) and nothing is mapped at that
            // address before the registration is removed right after.
            let reg = unsafe { ctx.register_raw(a.va(), len as u64, Access::READ)? };
            if prefetch {
                reg.prefetch(false)?;
            }
            let s0 = ctx.ctx_stats()?;
            let t = Instant::now();
            a.unmap()?;
            let d = t.elapsed();
            let s1 = ctx.ctx_stats()?;
            reg.deregister()?;
            if keep {
                timing.0.push(d);
                totals.add(&s0, &s1);
            }
        }
        // MADV_PAGEOUT, unregistered then registered with entries present.
        if let Some(buf) = &buf {
            buf.fill(3);
            let t = Instant::now();
            buf.pageout()?;
            let d = t.elapsed();
            if keep {
                po_plain.0.push(d);
            }
            buf.fill(4);
            let reg = ctx.register(buf, Access::READ)?;
            reg.prefetch(false)?;
            let s0 = ctx.ctx_stats()?;
            let t = Instant::now();
            buf.pageout()?;
            let d = t.elapsed();
            let s1 = ctx.ctx_stats()?;
            reg.deregister()?;
            if keep {
                po_reg.0.push(d);
                s_po.add(&s0, &s1);
            }
        }
        if keep {
            progress("invalidate", i - c.warmup, c.iters);
        }
    }
    let mut report = new_report(Bench::Invalidate, c);
    record_counters(&mut report, &ctx, &before)?;
    let bytes = len as u64;
    report.params.push(param::SIZE, json!(bytes));
    report.params.push(param::PAGES, json!(pages));
    report.params.push(param::PAGEOUT, json!(!no_pageout));
    report.row(
        row::MUNMAP_REGISTERED,
        Side::Measured,
        per_page(&un_reg, bytes, pages, &s_un.extra(c.iters)),
    );
    report.row(
        row::MUNMAP_REGISTERED_NO_ENTRIES,
        Side::Measured,
        per_page(&un_empty, bytes, pages, &s_empty.extra(c.iters)),
    );
    report.row(
        row::MUNMAP_UNREGISTERED,
        Side::Baseline,
        per_page(&un_plain, bytes, pages, &[]),
    );
    report.ratio(
        ratio::MUNMAP_REGISTERED_OVER_UNREGISTERED,
        un_reg.p50_us(),
        un_plain.p50_us(),
        "munmap time, registered with every device entry present / unregistered, medians",
    );
    report.ratio(
        ratio::MUNMAP_REGISTERED_NO_ENTRIES_OVER_UNREGISTERED,
        un_empty.p50_us(),
        un_plain.p50_us(),
        "munmap time, registered but no device entry / unregistered, medians",
    );
    if !no_pageout {
        report.row(
            row::PAGEOUT_REGISTERED,
            Side::Measured,
            per_page(&po_reg, bytes, pages, &s_po.extra(c.iters)),
        );
        report.row(
            row::PAGEOUT_UNREGISTERED,
            Side::Baseline,
            per_page(&po_plain, bytes, pages, &[]),
        );
        report.ratio(
            ratio::PAGEOUT_REGISTERED_OVER_UNREGISTERED,
            po_reg.p50_us(),
            po_plain.p50_us(),
            "MADV_PAGEOUT time, registered with entries present / unregistered, medians",
        );
    }
    Ok(report)
}
