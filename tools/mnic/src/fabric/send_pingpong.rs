//! `mnic pingpong --op send`: tagged SEND/RECV latency per message size, like
//! `mx_pingpong` or `fi_pingpong`. Each end has a receive posted for the other's next
//! message; the local end SENDs a ping tagged with the round's number, the peer's receive
//! completes and it SENDs the pong back, and the local receive's completion ends the round
//! trip. Half the round trip is the one-way latency. The default sizes cross the eager
//! limit (1416 bytes: one packet; above it the receiver pulls the message by rendezvous).
//! Baseline: the same message moved by a local COPY on the local device, as in the PUT mode.

use std::time::{Duration, Instant};

use mnic::abi::fabric::EAGER_MAX;
use mnic::Work;
use mnic_bench_schema::names::{param, ratio, row};
use mnic_bench_schema::{Bench, Report};
use serde_json::json;

use crate::error::CmdResult;
use crate::fabric::args::FabricArgs;
use crate::fabric::ends::{run_local, Side};
use crate::fabric::measure::{latency_vs_copy, rounds, Measured};
use crate::fabric::messages::{check_received, drain, poll_for, SMOKE_SIZES};
use crate::fabric::pingpong::{self, fill_messages, one_way};

/// Sizes without `--sizes`: small messages, the largest eager message and one byte more,
/// a page, 64 KiB.
pub const DEFAULT_SIZES: [u64; 7] = [
    8,
    64,
    512,
    EAGER_MAX as u64,
    EAGER_MAX as u64 + 1,
    4096,
    65536,
];
/// Match bits: the direction in the high half, the round's number in the low half.
const PING: u64 = 0x5049 << 48;
const PONG: u64 = 0x504f << 48;

/// One round trip of `size` bytes, round `n`: both receives posted first (untimed), then
/// from the ping's post to the pong's receive completion. Every item's completion is
/// consumed before returning.
fn round_trip(l: &Side, r: &Side, size: usize, n: u64, timeout: Duration) -> CmdResult<Duration> {
    let (ping_bits, pong_bits) = (PING | n, PONG | n);
    let to_remote = r
        .ctx
        .endpoint()
        .ok_or("the remote context has no endpoint")?;
    let to_local = l
        .ctx
        .endpoint()
        .ok_or("the local context has no endpoint")?;
    let ping_recv = r
        .ctx
        .post(&Work::recv(&r.bufs.window, 0, size, ping_bits, !0)?)?;
    let pong_recv = l
        .ctx
        .post(&Work::recv(&l.bufs.window, 0, size, pong_bits, !0)?)?;
    let ping = Work::send(&l.bufs.src, 0, size, to_remote, ping_bits)?;
    let pong = Work::send(&r.bufs.src, 0, size, to_local, pong_bits)?;
    let start = Instant::now();
    l.ctx.post(&ping)?;
    let got = poll_for(r.ctx, ping_recv, timeout)?;
    r.ctx.post(&pong)?;
    let back = poll_for(l.ctx, pong_recv, timeout)?;
    let took = start.elapsed();
    check_received(&got, size as u64, ping_bits)?;
    check_received(&back, size as u64, pong_bits)?;
    drain(l.ctx, timeout)?;
    drain(r.ctx, timeout)?;
    Ok(took)
}

pub fn run(a: &FabricArgs) -> CmdResult<Report> {
    let c = a.common(pingpong::DEFAULT_WARMUP);
    let sizes = a.sizes_or_smoke(&DEFAULT_SIZES, &SMOKE_SIZES);
    run_local(a, Bench::Pingpong, &c, &sizes, 8, |report, e| {
        report.params.push(param::EAGER_MAX, json!(EAGER_MAX));
        let (l, r) = (&e.l, &e.r);
        let mut n = 0u64;
        for &size in e.sizes {
            let len = fill_messages(e, size)?;
            let what = format!("send {size} bytes");
            let [send, copy] = rounds(&c, "pingpong", &what, || {
                n += 1;
                // The COPY first: it stamps the local source, which the ping then carries.
                let local_copy = one_way(l, &l.bufs.dst, None, len, n, e.timeout)?;
                let rtt = round_trip(l, r, len, n, e.timeout)?;
                Ok([rtt / 2, local_copy])
            })?;
            // Each end holds the other's message, whole.
            if r.bufs.window.to_vec()[..len] != l.bufs.src.to_vec()[..len]
                || l.bufs.window.to_vec()[..len] != r.bufs.src.to_vec()[..len]
            {
                return Err(format!("SEND of {size} bytes: a receive buffer differs").into());
            }
            let m = Measured {
                row: row::SEND_HALF_ROUND_TRIP,
                ratio: ratio::SEND_OVER_COPY_ONE_WAY,
                meaning: "half a SEND/RECV round trip / local COPY latency, medians (>1: the fabric is slower)",
                times: &send,
            };
            latency_vs_copy(report, size, m, &copy);
        }
        Ok(())
    })
}
