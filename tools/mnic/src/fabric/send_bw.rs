//! `mnic bw --op send`: tagged SEND bandwidth per message size, like `mx_stream` or
//! `fi_msg_bw`: the peer keeps receives posted (up to the device's `POSTED_MAX`), the local
//! end keeps its queue full of SENDs of one size, and each timed iteration moves a fixed
//! number of bytes. A context has one message in flight (a SEND completes when the target
//! has taken it), so this measures the per-message cost as much as the wire. Baseline: the
//! same bytes moved by local COPY items of the same size, as in the PUT mode.

use std::time::Duration;

use mnic::abi::fabric::EAGER_MAX;
use mnic::Work;
use mnic_bench_schema::names::{param, ratio, row};
use mnic_bench_schema::{Bench, Report, Side as RowSide};
use serde_json::json;

use crate::bench::harness::progress;
use crate::bench::report::{new_report, record_counters};
use crate::bench::statistics::Timing;
use crate::error::CmdResult;
use crate::fabric::args::FabricArgs;
use crate::fabric::bw::{self, items_per_iter, per_iter_bytes, timed};
use crate::fabric::ends::{open_both, record_ends, remote_note, Buffers, Side};
use crate::fabric::messages::{stream, SMOKE_SIZES};

/// Sizes without `--sizes`: the largest eager message, then rendezvous ones.
pub const DEFAULT_SIZES: [u64; 4] = [1416, 4096, 65536, 1 << 20];
/// Match bits of every streamed message; the receives want exactly these.
const BITS: u64 = 0x5354_5245_414d;

pub fn run(a: &FabricArgs) -> CmdResult<Report> {
    let c = a.common(bw::DEFAULT_WARMUP);
    let sizes = a.sizes_or_smoke(&DEFAULT_SIZES, &SMOKE_SIZES);
    let (local, remote) = match open_both(a, &c)? {
        Ok(ends) => ends,
        Err(why) => return Ok(Report::skipped(Bench::Bw, c.device, why)),
    };
    let max = usize::try_from(sizes.iter().copied().max().unwrap_or(4096))?;
    let (lbufs, rbufs) = (Buffers::new(max)?, Buffers::new(max)?);
    let l = Side::new(&local, &lbufs)?;
    let r = Side::new(&remote, &rbufs)?;
    let to = remote
        .endpoint()
        .ok_or("the remote context has no endpoint")?;
    let pattern = bw::pattern(max);
    lbufs.src.write_from(0, &pattern);
    let per_iter = per_iter_bytes(c.smoke);
    let timeout = Duration::from_millis(c.timeout_ms);
    let mut report = new_report(Bench::Bw, &c);
    record_ends(&mut report, a, &local, &remote, &sizes);
    report.params.push(param::OP, json!(a.op.name()));
    report.params.push(param::EAGER_MAX, json!(EAGER_MAX));
    report.params.push(param::BYTES_PER_ITER, json!(per_iter));
    let before = local.dev_stats()?;
    let remote_before = remote.dev_stats()?;
    for &size in &sizes {
        let len = usize::try_from(size)?;
        let count = items_per_iter(size, per_iter);
        let bytes = count * size;
        let send = Work::send(&lbufs.src, 0, len, to, BITS)?;
        let recv = Work::recv(&rbufs.window, 0, len, BITS, !0)?;
        let copies = vec![Work::copy_buffers(&lbufs.src, 0, &lbufs.dst, 0, len)?; count as usize];
        eprintln!(
            "[bw] send {size} bytes: {count} messages per iteration, {} iterations",
            c.iters
        );
        let (mut ts, mut tc) = (Timing::default(), Timing::default());
        for i in 0..c.warmup + c.iters {
            rbufs.window.fill_range(0, len, 0);
            let (s, got) = stream(l.ctx, r.ctx, send, recv, count, timeout)?;
            if got != bytes {
                return Err(format!("{size} bytes: received {got} bytes, expected {bytes}").into());
            }
            let k = timed(l.ctx, &copies, bytes, timeout)?;
            if i >= c.warmup {
                ts.0.push(s);
                tc.0.push(k);
                progress("bw", i - c.warmup, c.iters);
            }
        }
        if rbufs.window.to_vec()[..len] != pattern[..len] {
            return Err(format!("SEND of {size} bytes: the receive buffer differs").into());
        }
        report.row(
            &row::sized(row::SEND_BW, size),
            RowSide::Measured,
            ts.metrics(bytes),
        );
        report.row(
            &row::sized(row::COPY_BW, size),
            RowSide::Baseline,
            tc.metrics(bytes),
        );
        report.ratio(
            &row::sized(ratio::SEND_OVER_COPY_BANDWIDTH, size),
            tc.p50_us(),
            ts.p50_us(),
            "SEND bandwidth / local COPY bandwidth, medians (<1: the fabric is slower)",
        );
    }
    drop(r);
    record_counters(&mut report, &local, &before)?;
    remote_note(&mut report, &remote, &remote_before)?;
    Ok(report)
}
