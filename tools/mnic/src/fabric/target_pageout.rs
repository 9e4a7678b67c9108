//! `mnic bw --target-pageout`: what a network fault costs per page, against a local device
//! fault. Each round pages the target's window out (`MADV_PAGEOUT`) and times one PUT of
//! the size into it, so the PUT meets a missing page per 4 KiB at the target (each a
//! network fault there: `REPLY RNR`, the target's driver resolves it, the packet is resent
//! after back-off, docs/fabric.md 14.13); then the same PUT into the now resident window
//! (the reference); then pages the initiator's COPY destination out and times one local
//! COPY of the same bytes into it (a local device fault per missing page: the baseline).
//! RNRs are counted inside the device only (not in BAR0, not in the completion): the
//! target's device `faults` counter stands for them, one per network fault.

use mnic::abi::counter;
use mnic::{Context, DmaBuffer, Work};
use mnic_bench_schema::names::{metric, ratio, row};
use mnic_bench_schema::{Report, Side as RowSide};

use crate::bench::args::Common;
use crate::bench::harness::PAGE;
use crate::bench::statistics::{per_page, Timing};
use crate::error::CmdResult;
use crate::fabric::ends::Local;
use crate::fabric::measure::rounds;
use crate::fabric::stream::timed;

/// Below this fraction of pages swapped out, the report says the page-outs did not swap.
const SWAPPED_ENOUGH: f64 = 0.9;

/// Pages a transfer of `size` bytes from offset 0 of a page-aligned buffer touches.
fn pages_of(size: u64) -> u64 {
    size.div_ceil(PAGE as u64)
}

/// The fault counters of the context (and its device) whose memory faults.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Faults {
    /// The context's driver faults.
    driver: u64,
    /// The device's `faults` counter.
    device: u64,
}

impl Faults {
    fn read(ctx: &Context) -> CmdResult<Self> {
        Ok(Self {
            driver: ctx.ctx_stats()?.faults,
            device: ctx.dev_stats()?.get(counter::FAULTS),
        })
    }

    fn add_since(&mut self, before: Faults, after: Faults) {
        self.driver += after.driver.wrapping_sub(before.driver);
        self.device += after.device.wrapping_sub(before.device);
    }

    /// Per-iteration metrics over `rounds` rounds.
    fn per_iter(&self, rounds: u32) -> [(&'static str, f64); 2] {
        let n = f64::from(rounds.max(1));
        [
            (metric::FAULTS_PER_ITER, self.driver as f64 / n),
            (metric::DEVICE_FAULTS_PER_ITER, self.device as f64 / n),
        ]
    }
}

/// Pages found swapped out after the page-outs, and pages looked at.
#[derive(Debug, Clone, Copy, Default)]
struct Swapped {
    out: usize,
    total: usize,
}

impl Swapped {
    fn page_out(&mut self, buf: &DmaBuffer) -> CmdResult {
        pageout_from_every_cpu(buf)?;
        let (resident, total) = buf.resident_pages()?;
        self.out += total - resident;
        self.total += total;
        Ok(())
    }

    fn fraction(&self) -> f64 {
        self.out as f64 / self.total.max(1) as f64
    }
}

/// `MADV_PAGEOUT` of `buf` once from each CPU this thread may run on. A page swapped in a
/// moment ago (by the driver's fault worker, on whatever CPU) waits in that CPU's batch of
/// pages not yet on the LRU lists, where reclaim cannot take it; `MADV_PAGEOUT` drains the
/// batch of the CPU it runs on only. Without this, the pages the last PUT brought back
/// often stay resident and the next PUT meets no fault.
fn pageout_from_every_cpu(buf: &DmaBuffer) -> CmdResult {
    // SAFETY: `cpu_set_t` is plain data; the calls get and set this thread's affinity
    // with a set of the size passed.
    let mut allowed: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: as above; `allowed` is a valid, writable set of `size` bytes.
    if unsafe { libc::sched_getaffinity(0, size, &mut allowed) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, the set's bit count.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &allowed) })
        .collect();
    let result = cpus.iter().try_for_each(|&cpu| -> CmdResult {
        // SAFETY: as above.
        let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `cpu` is below CPU_SETSIZE.
        unsafe { libc::CPU_SET(cpu, &mut one) };
        // SAFETY: `one` is a valid set of `size` bytes.
        if unsafe { libc::sched_setaffinity(0, size, &one) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(buf.pageout()?)
    });
    // SAFETY: `allowed` is the set read above.
    if unsafe { libc::sched_setaffinity(0, size, &allowed) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    result
}

/// One size's times and counts, every round (warmups too: the counters are read around
/// each timed item, whatever its round).
struct SizeRun {
    swapped_put: Timing,
    resident_put: Timing,
    swapped_copy: Timing,
    /// The target's faults during the swapped PUTs.
    target: Faults,
    /// The initiator's faults during the swapped COPYs.
    local: Faults,
    swapped: Swapped,
    rounds: u32,
}

/// `mnic bw --target-pageout` over `e.sizes`, into `report`. The window and the COPY
/// destination are paged out whole (the helper `mnic bench fault` uses); a PUT or COPY of
/// `size` bytes touches their first `pages_of(size)` pages.
pub fn measure(report: &mut Report, c: &Common, e: &Local) -> CmdResult {
    let (window, dst) = (&e.r.bufs.window, &e.l.bufs.dst);
    for &size in e.sizes {
        let len = usize::try_from(size)?;
        let put = [Work::put(&e.l.bufs.src, 0, &e.r.region, 0, len)?];
        let copy = [Work::copy_buffers(&e.l.bufs.src, 0, dst, 0, len)?];
        let (mut target, mut local) = (Faults::default(), Faults::default());
        let mut swapped = Swapped::default();
        let what = format!(
            "{size} bytes ({} pages) into a paged-out target, one PUT per iteration",
            pages_of(size)
        );
        let [swapped_put, resident_put, swapped_copy] =
            rounds(c, "bw target-pageout", &what, || {
                swapped.page_out(window)?;
                let before = Faults::read(e.r.ctx)?;
                let tp = timed(e.l.ctx, &put, size, e.timeout)?;
                target.add_since(before, Faults::read(e.r.ctx)?);
                let tr = timed(e.l.ctx, &put, size, e.timeout)?;
                swapped.page_out(dst)?;
                let before = Faults::read(e.l.ctx)?;
                let tc = timed(e.l.ctx, &copy, size, e.timeout)?;
                local.add_since(before, Faults::read(e.l.ctx)?);
                Ok([tp, tr, tc])
            })?;
        let run = SizeRun {
            swapped_put,
            resident_put,
            swapped_copy,
            target,
            local,
            swapped,
            rounds: c.warmup + c.iters,
        };
        record(report, size, &run);
        check_copied(dst, &e.l.bufs.src, len)?;
    }
    Ok(())
}

/// What the COPYs brought into the destination is what the source holds.
fn check_copied(dst: &DmaBuffer, src: &DmaBuffer, len: usize) -> CmdResult {
    if dst.to_vec()[..len] != src.to_vec()[..len] {
        return Err(format!("{len} bytes: the paged-out COPY destination differs").into());
    }
    Ok(())
}

/// The rows of one size (per page), the ratio network fault / local fault per page, and a
/// note when the page-outs did not swap.
fn record(report: &mut Report, size: u64, run: &SizeRun) {
    let pages = pages_of(size);
    report.row(
        &row::sized(row::PUT_SWAPPED_TARGET, size),
        RowSide::Measured,
        per_page(
            &run.swapped_put,
            size,
            pages,
            &run.target.per_iter(run.rounds),
        ),
    );
    report.row(
        &row::sized(row::PUT_RESIDENT_TARGET, size),
        RowSide::Reference,
        per_page(&run.resident_put, size, pages, &[]),
    );
    report.row(
        &row::sized(row::COPY_SWAPPED_DST, size),
        RowSide::Baseline,
        per_page(
            &run.swapped_copy,
            size,
            pages,
            &run.local.per_iter(run.rounds),
        ),
    );
    report.ratio(
        &row::sized(ratio::NETWORK_FAULT_OVER_LOCAL_FAULT_PER_PAGE, size),
        run.swapped_put.p50_us(),
        run.swapped_copy.p50_us(),
        "per page: PUT into a paged-out target / local COPY into a paged-out destination, \
         medians (>1: a network fault costs more than a local one)",
    );
    let fraction = run.swapped.fraction();
    if fraction < SWAPPED_ENOUGH {
        report.notes.push(format!(
            "{size} bytes: MADV_PAGEOUT swapped out only {:.0}% of the pages (no swap? \
             `. /usr/share/mnic/bench-env.sh` sets up zram): the paged-out rows measure partly \
             resident memory",
            fraction * 100.0
        ));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mnic_bench_schema::Bench;

    use super::*;
    use crate::bench::report::new_report;

    #[test]
    fn pages_of_a_transfer() {
        assert_eq!(pages_of(65536), 16);
        assert_eq!(pages_of(4097), 2);
        assert_eq!(pages_of(1), 1);
    }

    #[test]
    fn faults_per_iteration() {
        let mut f = Faults::default();
        f.add_since(
            Faults {
                driver: 10,
                device: 3,
            },
            Faults {
                driver: 14,
                device: 11,
            },
        );
        f.add_since(
            Faults::default(),
            Faults {
                driver: 2,
                device: 1,
            },
        );
        assert_eq!(
            f.per_iter(2),
            [
                (metric::FAULTS_PER_ITER, 3.0),
                (metric::DEVICE_FAULTS_PER_ITER, 4.5)
            ]
        );
    }

    #[test]
    fn rows_per_page_and_the_ratio() {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            c: Common,
        }
        let c = Wrap::parse_from(["t", "--iters", "1"]).c;
        let mut r = new_report(Bench::Bw, &c);
        let t = |us| Timing(vec![Duration::from_micros(us)]);
        let run = SizeRun {
            swapped_put: t(1600),
            resident_put: t(160),
            swapped_copy: t(400),
            target: Faults {
                driver: 4,
                device: 16,
            },
            local: Faults {
                driver: 2,
                device: 2,
            },
            swapped: Swapped { out: 1, total: 4 },
            rounds: 2,
        };
        record(&mut r, 65536, &run);
        let names: Vec<&str> = r.results.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "put_swapped_target/65536",
                "put_resident_target/65536",
                "copy_swapped_dst/65536"
            ]
        );
        assert_eq!(
            r.results[0].metrics.get(metric::NS_PER_PAGE),
            Some(&100_000.0)
        );
        assert_eq!(
            r.results[0].metrics.get(metric::DEVICE_FAULTS_PER_ITER),
            Some(&8.0)
        );
        assert_eq!(r.results[2].side, RowSide::Baseline);
        assert_eq!(r.ratios.len(), 1);
        assert_eq!(r.ratios[0].value, 4.0);
        // A quarter swapped out: the note says the rows partly measure resident memory.
        assert_eq!(r.notes.len(), 1);
    }
}
