//! `mnic pingpong`: one-way PUT latency per message size, like `ib_write_lat`. Each end
//! PUTs into the other's window in turn, and the process (which holds both ends) polls the
//! target's memory until the message's last bytes show the new stamp; the time from the
//! post to that moment is one one-way latency. Baseline: the same message moved by a local
//! COPY on the initiator's device, timed from post to its last bytes visible.

use std::time::{Duration, Instant};

use mnic::{Context, DmaBuffer, Work};
use mnic_bench_schema::names::{metric, param, ratio, row};
use mnic_bench_schema::{Bench, Fields, Report, Side as RowSide};
use serde_json::json;

use crate::bench::harness::progress;
use crate::bench::report::{new_report, record_counters};
use crate::bench::statistics::Timing;
use crate::error::CmdResult;
use crate::fabric::args::FabricArgs;
use crate::fabric::ends::{open_both, record_ends, remote_note, Buffers, Side};

/// Untimed iterations per size without `--warmup`.
pub const DEFAULT_WARMUP: u32 = 10;
/// Sizes without `--sizes`: small messages, one full PUT packet and one byte more, a page,
/// 64 KiB.
pub const DEFAULT_SIZES: [u64; 7] = [8, 64, 512, 1408, 1409, 4096, 65536];

/// The stamp bytes of message `n`: the last `min(8, size)` bytes of the message.
pub(super) fn stamp(n: u64, size: usize) -> Vec<u8> {
    n.to_le_bytes()[..size.min(8)].to_vec()
}

/// Posts `work` on `ctx` and polls `watch` at `off` until it holds `want`; returns the time
/// from the post to then. The item's completion is consumed (untimed) before returning, and
/// an item that fails, or bytes that do not appear within `timeout`, are errors.
fn post_and_watch(
    ctx: &Context,
    work: &Work,
    watch: &DmaBuffer,
    off: usize,
    want: &[u8],
    timeout: Duration,
) -> CmdResult<Duration> {
    let mut seen = vec![0u8; want.len()];
    let start = Instant::now();
    ctx.post(work)?;
    let mut completed = false;
    let took = loop {
        watch.read_into(off, &mut seen);
        if seen == want {
            break start.elapsed();
        }
        if !completed {
            if let Some(done) = ctx.poll()? {
                done.result()?;
                completed = true;
            }
        }
        if start.elapsed() > timeout {
            return Err(
                format!("the message's last bytes did not appear within {timeout:?}").into(),
            );
        }
        std::hint::spin_loop();
    };
    if !completed {
        ctx.wait(Some(timeout))?.result()?;
    }
    Ok(took)
}

/// One message of `size` bytes from `from` into `into_window` (a PUT through `region`, or a
/// local COPY when `region` is `None`), stamped `n`: the bytes watched are first set to
/// something else, so only this message can make them match.
pub(super) fn one_way(
    from: &Side,
    into_window: &DmaBuffer,
    region: Option<&mnic::RemoteRegion>,
    size: usize,
    n: u64,
    timeout: Duration,
) -> CmdResult<Duration> {
    let want = stamp(n, size);
    let off = size - want.len();
    let not_yet: Vec<u8> = want.iter().map(|b| !b).collect();
    into_window.write_from(off, &not_yet);
    from.bufs.src.write_from(off, &want);
    let work = match region {
        Some(r) => Work::put(&from.bufs.src, 0, r, 0, size)?,
        None => Work::copy_buffers(&from.bufs.src, 0, into_window, 0, size)?,
    };
    post_and_watch(from.ctx, &work, into_window, off, &want, timeout)
}

/// Latency metrics of one row: timing metrics plus the 99th percentile.
pub(super) fn latency_metrics(t: &Timing, size: u64) -> Fields<f64> {
    let mut m = t.metrics(size);
    m.push(metric::P99_US, t.pct_us(0.99));
    m
}

pub fn run(a: &FabricArgs) -> CmdResult<Report> {
    let c = a.common(DEFAULT_WARMUP);
    let sizes = a.sizes(&DEFAULT_SIZES);
    let (local, remote) = match open_both(a, &c)? {
        Ok(ends) => ends,
        Err(why) => return Ok(Report::skipped(Bench::Pingpong, c.device, why)),
    };
    let max = usize::try_from(sizes.iter().copied().max().unwrap_or(8))?;
    let (lbufs, rbufs) = (Buffers::new(max)?, Buffers::new(max)?);
    let l = Side::new(&local, &lbufs)?;
    let r = Side::new(&remote, &rbufs)?;
    let timeout = Duration::from_millis(c.timeout_ms);
    let mut report = new_report(Bench::Pingpong, &c);
    record_ends(&mut report, a, &local, &remote, &sizes);
    report.params.push(param::OP, json!(a.op.name()));
    let before = local.dev_stats()?;
    let remote_before = remote.dev_stats()?;
    let mut n = 0u64;
    for &size in &sizes {
        let len = usize::try_from(size)?;
        if len == 0 {
            return Err("message sizes must be at least 1 byte".into());
        }
        // Message bytes that differ from zero and from the previous size's.
        lbufs.src.fill_range(0, len, 0xa5 ^ size as u8);
        rbufs.src.fill_range(0, len, 0x5a ^ size as u8);
        eprintln!("[pingpong] {size} bytes: {} iterations", c.iters);
        let (mut put, mut copy) = (Timing::default(), Timing::default());
        for i in 0..c.warmup + c.iters {
            n += 1;
            let there = one_way(&l, &rbufs.window, Some(&r.region), len, n, timeout)?;
            let back = one_way(&r, &lbufs.window, Some(&l.region), len, n, timeout)?;
            let local_copy = one_way(&l, &lbufs.dst, None, len, n, timeout)?;
            if i >= c.warmup {
                put.0.extend([there, back]);
                copy.0.push(local_copy);
                progress("pingpong", i - c.warmup, c.iters);
            }
        }
        // The whole message arrived, not only its stamp.
        if rbufs.window.to_vec()[..len] != lbufs.src.to_vec()[..len] {
            return Err(format!("PUT of {size} bytes: the target's window differs").into());
        }
        report.row(
            &row::sized(row::PUT_ONE_WAY, size),
            RowSide::Measured,
            latency_metrics(&put, size),
        );
        report.row(
            &row::sized(row::COPY_ONE_WAY, size),
            RowSide::Baseline,
            latency_metrics(&copy, size),
        );
        report.ratio(
            &row::sized(ratio::PUT_OVER_COPY_ONE_WAY, size),
            put.p50_us(),
            copy.p50_us(),
            "one-way PUT latency / local COPY latency, medians (>1: the fabric is slower)",
        );
    }
    record_counters(&mut report, &local, &before)?;
    remote_note(&mut report, &remote, &remote_before)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_fit_the_message() {
        assert_eq!(stamp(0x0102, 1), [0x02]);
        assert_eq!(stamp(0x0102, 3), [0x02, 0x01, 0]);
        assert_eq!(stamp(7, 4096).len(), 8);
        // Consecutive stamps differ even in one byte.
        assert_ne!(stamp(255, 1), stamp(256, 1));
    }
}
