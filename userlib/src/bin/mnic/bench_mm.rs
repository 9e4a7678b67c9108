//! `mnic bench fault` and `mnic bench invalidate`: what following the CPU page tables
//! costs. Device faults against prefetch and against CPU page faults on the same
//! memory; munmap and MADV_PAGEOUT of registered memory against unregistered memory,
//! with the driver's SYNC wait times.

use std::hint::black_box;
use std::time::{Duration, Instant};

use mnic::abi::{pte, MnicCtxStats};
use mnic::{Access, Context, DmaBuffer, Pattern, Traffic, Work};
use serde_json::json;

use crate::bench::{alloc, drive, open, progress, Common, Report, Timing};
use crate::output::{human_bytes, Fields};
use crate::CmdResult;

const PAGE: usize = pte::PAGE_SIZE as usize;

/// One store per page: every page of `buf` faults in (allocated and zeroed) without the
/// cost of writing whole pages.
fn touch(buf: &DmaBuffer, byte: u8) {
    for off in (0..buf.len()).step_by(PAGE) {
        buf.write_from(off, &[byte]);
    }
}

/// One generator pass reading every page of `buf` once (4 KiB ops).
fn page_pass(buf: &DmaBuffer) -> CmdResult<(Work, u64)> {
    let pages = (buf.len() / PAGE) as u64;
    let w = Traffic::over(buf)
        .op_size(PAGE as u32)
        .ops(pages)
        .pattern(Pattern::SeqRead)
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

/// Timing metrics plus the median cost per page in ns and counters per iteration.
fn per_page(t: &Timing, bytes: u64, pages: u64, extra: &[(&str, f64)]) -> Fields<f64> {
    let mut m = t.metrics(bytes);
    m.push("pages", pages as f64);
    m.push("ns_per_page", t.p50_us() * 1e3 / pages.max(1) as f64);
    for (k, v) in extra {
        m.push(*k, *v);
    }
    m
}

/// First-touch device faults (translations empty, pages resident) against prefetch
/// and a hot pass, against the CPU's own faults: first touch of fresh anonymous memory,
/// and swap-in after MADV_PAGEOUT (device and CPU).
pub fn fault(c: &Common, size: u64) -> CmdResult<Report> {
    let ctx = open(c)?;
    let timeout = Duration::from_millis(c.timeout_ms);
    let buf = alloc(c, size)?;
    buf.fill(0x33);
    let (w, pages) = page_pass(&buf)?;
    let len = buf.len();
    eprintln!(
        "[fault] {} ({pages} pages) per pass, warmup {}",
        human_bytes(len as u64),
        c.warmup
    );
    let (mut first, mut hot, mut pref, mut pref_pass) = Default::default();
    let (mut dev_swap, mut cpu_fresh, mut cpu_swap) = Default::default();
    let (mut first_faults, mut swap_faults, mut swapped, mut swap_total) = (0u64, 0u64, 0, 0);
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
        keep(&mut dev_swap, run_pass(&ctx, w, pages, timeout)?, i);
        let f3 = ctx.ctx_stats()?.faults;
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
            swapped += tot - res;
            swap_total += tot;
            progress("fault", i - c.warmup, c.iters);
        }
    }
    let mut report = Report::new("fault", c);
    report.counters(&ctx, &before)?;
    let n = f64::from(c.iters.max(1));
    let bytes = len as u64;
    report.params.push("size", json!(bytes));
    report.params.push("pages", json!(pages));
    let swapped_frac = swapped as f64 / swap_total.max(1) as f64;
    report
        .params
        .push("swapped_out_fraction", json!(swapped_frac));
    if swapped_frac < 0.9 {
        report.notes.push(format!(
            "MADV_PAGEOUT swapped out only {:.0}% of the pages (no swap?): the swap-in rows \
             measure mostly resident memory",
            swapped_frac * 100.0
        ));
    }
    report.row(
        "device_first_touch",
        "measured",
        per_page(
            &first,
            bytes,
            pages,
            &[("faults_per_iter", first_faults as f64 / n)],
        ),
    );
    report.row(
        "device_hot_pass",
        "reference",
        per_page(&hot, bytes, pages, &[]),
    );
    report.row(
        "prefetch_ioctl",
        "baseline",
        per_page(&pref, bytes, pages, &[]),
    );
    report.row(
        "device_pass_after_prefetch",
        "reference",
        per_page(&pref_pass, bytes, pages, &[]),
    );
    report.row(
        "cpu_first_touch",
        "baseline",
        per_page(&cpu_fresh, bytes, pages, &[]),
    );
    report.row(
        "device_swapin",
        "measured",
        per_page(
            &dev_swap,
            bytes,
            pages,
            &[("faults_per_iter", swap_faults as f64 / n)],
        ),
    );
    report.row(
        "cpu_swapin",
        "baseline",
        per_page(&cpu_swap, bytes, pages, &[]),
    );
    let fault_only = (first.p50_us() - hot.p50_us()).max(0.0);
    report.ratio(
        "device_first_touch_over_cpu_first_touch",
        first.p50_us(),
        cpu_fresh.p50_us(),
        "per page: device pass that faults every page / CPU first touch of fresh memory, medians",
    );
    report.ratio(
        "device_fault_overhead_over_prefetch",
        fault_only,
        pref.p50_us(),
        "per page: (first-touch pass - hot pass) / MNIC_IOC_PREFETCH of the same pages, medians",
    );
    report.ratio(
        "device_first_touch_over_hot",
        first.p50_us(),
        hot.p50_us(),
        "first-touch pass / hot pass over the same pages, medians",
    );
    report.ratio(
        "device_swapin_over_cpu_swapin",
        dev_swap.p50_us(),
        cpu_swap.p50_us(),
        "per page after MADV_PAGEOUT: device pass / CPU loads, medians",
    );
    Ok(report)
}

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
            ("sync_waits_per_iter", self.waits as f64 / n),
            (
                "sync_wait_mean_us",
                if self.waits > 0 {
                    self.wait_ns as f64 / self.waits as f64 / 1e3
                } else {
                    0.0
                },
            ),
            ("sync_wait_us_per_iter", self.wait_ns as f64 / n / 1e3),
            ("invalidations_per_iter", self.invalidations as f64 / n),
            ("entries_invalidated_per_iter", self.entries as f64 / n),
        ]
    }
}

/// munmap and MADV_PAGEOUT of registered memory with every device entry present
/// against the same on unregistered memory; the driver's SYNC waits during them.
pub fn invalidate(c: &Common, size: u64, no_pageout: bool) -> CmdResult<Report> {
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
    let mut report = Report::new("invalidate", c);
    report.counters(&ctx, &before)?;
    let bytes = len as u64;
    report.params.push("size", json!(bytes));
    report.params.push("pages", json!(pages));
    report.params.push("pageout", json!(!no_pageout));
    report.row(
        "munmap_registered",
        "measured",
        per_page(&un_reg, bytes, pages, &s_un.extra(c.iters)),
    );
    report.row(
        "munmap_registered_no_entries",
        "measured",
        per_page(&un_empty, bytes, pages, &s_empty.extra(c.iters)),
    );
    report.row(
        "munmap_unregistered",
        "baseline",
        per_page(&un_plain, bytes, pages, &[]),
    );
    report.ratio(
        "munmap_registered_over_unregistered",
        un_reg.p50_us(),
        un_plain.p50_us(),
        "munmap time, registered with every device entry present / unregistered, medians",
    );
    report.ratio(
        "munmap_registered_no_entries_over_unregistered",
        un_empty.p50_us(),
        un_plain.p50_us(),
        "munmap time, registered but no device entry / unregistered, medians",
    );
    if !no_pageout {
        report.row(
            "pageout_registered",
            "measured",
            per_page(&po_reg, bytes, pages, &s_po.extra(c.iters)),
        );
        report.row(
            "pageout_unregistered",
            "baseline",
            per_page(&po_plain, bytes, pages, &[]),
        );
        report.ratio(
            "pageout_registered_over_unregistered",
            po_reg.p50_us(),
            po_plain.p50_us(),
            "MADV_PAGEOUT time, registered with entries present / unregistered, medians",
        );
    }
    Ok(report)
}
