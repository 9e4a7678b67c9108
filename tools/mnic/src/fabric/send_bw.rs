//! `mnic bw --op send`: tagged SEND bandwidth per message size, like `mx_stream` or
//! `fi_msg_bw`: the peer keeps receives posted (up to the device's `POSTED_MAX`), the local
//! end keeps its queue full of SENDs of one size, and each timed iteration moves a fixed
//! number of bytes. A context has one message in flight (a SEND completes when the target
//! has taken it), so this measures the per-message cost as much as the wire. Baseline: the
//! same bytes moved by local COPY items of the same size, as in the PUT mode.

use mnic::abi::fabric::EAGER_MAX;
use mnic::Work;
use mnic_bench_schema::names::{param, ratio, row};
use mnic_bench_schema::{Bench, Report};
use serde_json::json;

use crate::error::CmdResult;
use crate::fabric::args::FabricArgs;
use crate::fabric::bw;
use crate::fabric::ends::run_local;
use crate::fabric::measure::{bandwidth_vs_copy, rounds, Measured};
use crate::fabric::messages::{stream, SMOKE_SIZES};
use crate::fabric::stream::{items_per_iter, per_iter_bytes, timed};

/// Sizes without `--sizes`: the largest eager message, then rendezvous ones.
pub const DEFAULT_SIZES: [u64; 4] = [EAGER_MAX as u64, 4096, 65536, 1 << 20];
/// Match bits of every streamed message; the receives want exactly these.
const BITS: u64 = 0x5354_5245_414d;

pub fn run(a: &FabricArgs) -> CmdResult<Report> {
    let c = a.common(bw::DEFAULT_WARMUP);
    let sizes = a.sizes_or_smoke(&DEFAULT_SIZES, &SMOKE_SIZES);
    run_local(a, Bench::Bw, &c, &sizes, 4096, |report, e| {
        let (l, r) = (&e.l, &e.r);
        let to = r
            .ctx
            .endpoint()
            .ok_or("the remote context has no endpoint")?;
        let pattern = bw::pattern(e.max);
        l.bufs.src.write_from(0, &pattern);
        let per_iter = per_iter_bytes(c.smoke);
        report.params.push(param::EAGER_MAX, json!(EAGER_MAX));
        report.params.push(param::BYTES_PER_ITER, json!(per_iter));
        for &size in e.sizes {
            let len = usize::try_from(size)?;
            let count = items_per_iter(size, per_iter);
            let bytes = count * size;
            let send = Work::send(&l.bufs.src, 0, len, to, BITS)?;
            let recv = Work::recv(&r.bufs.window, 0, len, BITS, !0)?;
            let copies =
                vec![Work::copy_buffers(&l.bufs.src, 0, &l.bufs.dst, 0, len)?; count as usize];
            let what = format!("send {size} bytes: {count} messages per iteration");
            let [ts, tc] = rounds(&c, "bw", &what, || {
                r.bufs.window.fill_range(0, len, 0);
                let (s, got) = stream(l.ctx, r.ctx, send, recv, count, e.timeout)?;
                if got != bytes {
                    return Err(
                        format!("{size} bytes: received {got} bytes, expected {bytes}").into(),
                    );
                }
                Ok([s, timed(l.ctx, &copies, bytes, e.timeout)?])
            })?;
            if r.bufs.window.to_vec()[..len] != pattern[..len] {
                return Err(format!("SEND of {size} bytes: the receive buffer differs").into());
            }
            let m = Measured {
                row: row::SEND_BW,
                ratio: ratio::SEND_OVER_COPY_BANDWIDTH,
                meaning:
                    "SEND bandwidth / local COPY bandwidth, medians (<1: the fabric is slower)",
                times: &ts,
            };
            bandwidth_vs_copy(report, size, bytes, &[m], &tc);
        }
        Ok(())
    })
}
