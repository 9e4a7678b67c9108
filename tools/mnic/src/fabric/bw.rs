//! `mnic bw`: PUT and GET bandwidth per message size, like `ib_write_bw` and `ib_read_bw`:
//! the initiator keeps its queue full of items of one size, all to (or from) the same
//! remote window, and each timed iteration moves a fixed number of bytes. Baseline: the same
//! bytes moved by local COPY items of the same size on the initiator's device.

use std::time::{Duration, Instant};

use mnic::{RemoteRegion, Work};
use mnic_bench_schema::names::{param, ratio, row};
use mnic_bench_schema::{Bench, Report, Side as RowSide};
use serde_json::json;

use crate::bench::args::Common;
use crate::bench::harness::{drive, progress};
use crate::bench::report::{new_report, record_counters};
use crate::bench::statistics::Timing;
use crate::error::CmdResult;
use crate::fabric::args::FabricArgs;
use crate::fabric::ends::{open_both, record_ends, remote_note, Buffers, Side};

/// Untimed iterations per size without `--warmup`.
pub const DEFAULT_WARMUP: u32 = 1;
/// Sizes without `--sizes`.
pub const DEFAULT_SIZES: [u64; 5] = [1408, 4096, 65536, 1 << 20, 4 << 20];
/// Bytes each timed iteration moves (at least one item of the size).
const BYTES_PER_ITER: u64 = 8 << 20;
/// The same in a smoke run.
const SMOKE_BYTES_PER_ITER: u64 = 256 << 10;
/// Most items per iteration: small sizes would otherwise make an iteration long.
const MAX_ITEMS: u64 = 2048;

/// Items of `size` bytes per iteration so that about `per_iter` bytes move.
pub(super) fn items_per_iter(size: u64, per_iter: u64) -> u64 {
    (per_iter / size.max(1)).clamp(1, MAX_ITEMS)
}

/// The time `drive` takes for `items` (which must all succeed and move `bytes`).
pub(super) fn timed(
    ctx: &mnic::Context,
    items: &[Work],
    bytes: u64,
    timeout: Duration,
) -> CmdResult<Duration> {
    let start = Instant::now();
    let moved = drive(ctx, items.iter().copied(), timeout)?;
    let took = start.elapsed();
    if moved != bytes {
        return Err(format!("moved {moved} bytes, expected {bytes}").into());
    }
    Ok(took)
}

/// Bytes each timed iteration moves.
pub(super) fn per_iter_bytes(smoke: bool) -> u64 {
    if smoke {
        SMOKE_BYTES_PER_ITER
    } else {
        BYTES_PER_ITER
    }
}

/// What a stream of `len` bytes carries (and what the target's window or receive buffer
/// must hold after).
pub(super) fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(29) ^ 0x3c)
        .collect()
}

pub fn run(a: &FabricArgs) -> CmdResult<Report> {
    let c = a.common(DEFAULT_WARMUP);
    let sizes = a.sizes(&DEFAULT_SIZES);
    let (local, remote) = match open_both(a, &c)? {
        Ok(ends) => ends,
        Err(why) => return Ok(Report::skipped(Bench::Bw, c.device, why)),
    };
    let max = usize::try_from(sizes.iter().copied().max().unwrap_or(4096))?;
    let (lbufs, rbufs) = (Buffers::new(max)?, Buffers::new(max)?);
    let l = Side::new(&local, &lbufs)?;
    let r = Side::new(&remote, &rbufs)?;
    let pattern = pattern(max);
    lbufs.src.write_from(0, &pattern);
    rbufs.window.write_from(0, &pattern);
    let mut report = new_report(Bench::Bw, &c);
    record_ends(&mut report, a, &local, &remote, &sizes);
    report.params.push(param::OP, json!(a.op.name()));
    let before = local.dev_stats()?;
    let remote_before = remote.dev_stats()?;
    measure(&mut report, &c, &sizes, &l, &r.region, &pattern)?;
    if rbufs.window.to_vec() != pattern {
        return Err("the target's window differs after the runs".into());
    }
    drop(r);
    record_counters(&mut report, &local, &before)?;
    remote_note(&mut report, &remote, &remote_before)?;
    Ok(report)
}

/// The timed runs of every size from `l` against `region` (PUT, GET) and the local COPY
/// baseline, into `report`; `l`'s source holds `pattern`, and what GET and COPY bring
/// back is checked against it. The target's window is the caller's to check.
pub(super) fn measure(
    report: &mut Report,
    c: &Common,
    sizes: &[u64],
    l: &Side,
    region: &RemoteRegion,
    pattern: &[u8],
) -> CmdResult {
    let per_iter = per_iter_bytes(c.smoke);
    let timeout = Duration::from_millis(c.timeout_ms);
    report.params.push(param::BYTES_PER_ITER, json!(per_iter));
    let lbufs = l.bufs;
    for &size in sizes {
        let len = usize::try_from(size)?;
        let count = items_per_iter(size, per_iter);
        let bytes = count * size;
        let put = Work::put(&lbufs.src, 0, region, 0, len)?;
        let get = Work::get(&lbufs.dst, 0, region, 0, len)?;
        let copy = Work::copy_buffers(&lbufs.src, 0, &lbufs.dst, 0, len)?;
        let batch = |w: Work| vec![w; count as usize];
        let (puts, gets, copies) = (batch(put), batch(get), batch(copy));
        eprintln!(
            "[bw] {size} bytes: {count} items per iteration, {} iterations",
            c.iters
        );
        let (mut tp, mut tg, mut tc) = (Timing::default(), Timing::default(), Timing::default());
        for i in 0..c.warmup + c.iters {
            let p = timed(l.ctx, &puts, bytes, timeout)?;
            let g = timed(l.ctx, &gets, bytes, timeout)?;
            let k = timed(l.ctx, &copies, bytes, timeout)?;
            if i >= c.warmup {
                tp.0.push(p);
                tg.0.push(g);
                tc.0.push(k);
                progress("bw", i - c.warmup, c.iters);
            }
        }
        if lbufs.dst.to_vec()[..len] != pattern[..len] {
            return Err(format!("{size} bytes: data differs after the runs").into());
        }
        report.row(
            &row::sized(row::PUT_BW, size),
            RowSide::Measured,
            tp.metrics(bytes),
        );
        report.row(
            &row::sized(row::GET_BW, size),
            RowSide::Measured,
            tg.metrics(bytes),
        );
        report.row(
            &row::sized(row::COPY_BW, size),
            RowSide::Baseline,
            tc.metrics(bytes),
        );
        // Same bytes per iteration: bandwidth ratio = inverse time ratio.
        report.ratio(
            &row::sized(ratio::PUT_OVER_COPY_BANDWIDTH, size),
            tc.p50_us(),
            tp.p50_us(),
            "PUT bandwidth / local COPY bandwidth, medians (<1: the fabric is slower)",
        );
        report.ratio(
            &row::sized(ratio::GET_OVER_COPY_BANDWIDTH, size),
            tc.p50_us(),
            tg.p50_us(),
            "GET bandwidth / local COPY bandwidth, medians (<1: the fabric is slower)",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_per_iteration() {
        assert_eq!(items_per_iter(4096, 8 << 20), 2048);
        assert_eq!(items_per_iter(1, 8 << 20), MAX_ITEMS);
        assert_eq!(items_per_iter(4 << 20, 8 << 20), 2);
        assert_eq!(items_per_iter(16 << 20, 8 << 20), 1);
        assert_eq!(items_per_iter(0, 8), 8);
    }
}
