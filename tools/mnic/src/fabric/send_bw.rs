//! `mnic bw --op send`: tagged SEND bandwidth per message size, like `mx_stream` or
//! `fi_msg_bw`: the receiving end keeps receives posted (up to the device's `POSTED_MAX`),
//! the sending end keeps its queue full of SENDs of one size, and each timed iteration moves
//! a fixed number of bytes. A context has one message in flight (a SEND completes when the
//! target has taken it), so this measures the per-message cost as much as the wire. The
//! receiver checks every message (whole, from the sender, the stream's bits) and, after each
//! iteration, that its buffer (zeroed before) holds the stream's data. Baseline: the same
//! bytes moved by local COPY items of the same size, as in the PUT mode.
//!
//! [`measure`] is the sending end's loop, whichever end receives: a [`Receiver`] in this
//! process ([`run`], both ends here: an iteration ends with its last receive's completion)
//! or a server at the other end of a link (`cross_send`: an iteration ends when the server's
//! acknowledgement of it arrives).

use std::time::Duration;

use mnic::abi::fabric::EAGER_MAX;
use mnic::{Endpoint, Work};
use mnic_bench_schema::names::{param, ratio, row};
use mnic_bench_schema::{Bench, Report};
use serde_json::json;

use crate::bench::args::Common;
use crate::error::CmdResult;
use crate::fabric::args::FabricArgs;
use crate::fabric::bw;
use crate::fabric::ends::{run_local, Side};
use crate::fabric::measure::{bandwidth_vs_copy, rounds, Measured};
use crate::fabric::messages::{check_pattern, stream, Expect, SMOKE_SIZES};
use crate::fabric::stream::{items_per_iter, per_iter_bytes, timed};

/// Sizes without `--sizes`: the largest eager message, then rendezvous ones.
pub const DEFAULT_SIZES: [u64; 4] = [EAGER_MAX as u64, 4096, 65536, 1 << 20];
/// Match bits of every streamed message; the receives want exactly these.
pub const BITS: u64 = 0x5354_5245_414d;

/// The run's sizes: `--sizes`, the default, or in a smoke run the smoke sizes (both ends
/// of a two-process run size their buffers from this).
pub fn sizes(a: &FabricArgs) -> Vec<u64> {
    a.sizes_or_smoke(&DEFAULT_SIZES, &SMOKE_SIZES)
}

/// The end that receives the stream, as the sending end sees it.
pub trait Receiver {
    /// Where the messages go.
    fn endpoint(&self) -> Endpoint;
    /// `iters` iterations of `count` `size`-byte messages each start: the receiving end
    /// posts its first receives.
    fn begin(&mut self, size: u64, count: u64, iters: u64) -> CmdResult;
    /// One timed iteration: `count` copies of `send` from `l`; returns its time and the
    /// bytes the stream moved.
    fn iteration(&mut self, l: &Side, send: Work, count: u64) -> CmdResult<(Duration, u64)>;
}

/// The sending end's stream of every size into `peer`, from `l` (whose source holds the
/// stream's data, `bw::pattern`), and the local COPY baseline, into `report`.
pub fn measure(
    report: &mut Report,
    c: &Common,
    sizes: &[u64],
    l: &Side,
    peer: &mut dyn Receiver,
) -> CmdResult {
    let timeout = Duration::from_millis(c.timeout_ms);
    let per_iter = per_iter_bytes(c.smoke);
    report.params.push(param::EAGER_MAX, json!(EAGER_MAX));
    report.params.push(param::BYTES_PER_ITER, json!(per_iter));
    let to = peer.endpoint();
    for &size in sizes {
        let len = usize::try_from(size)?;
        let count = items_per_iter(size, per_iter);
        let bytes = count * size;
        let send = Work::send(&l.bufs.src, 0, len, to, BITS)?;
        let copies = vec![Work::copy_buffers(&l.bufs.src, 0, &l.bufs.dst, 0, len)?; count as usize];
        peer.begin(size, count, u64::from(c.warmup + c.iters))?;
        let what = format!("send {size} bytes: {count} messages per iteration");
        let [ts, tc] = rounds(c, "bw", &what, || {
            let (s, moved) = peer.iteration(l, send, count)?;
            if moved != bytes {
                return Err(format!("{size} bytes: moved {moved} bytes, expected {bytes}").into());
            }
            Ok([s, timed(l.ctx, &copies, bytes, timeout)?])
        })?;
        let m = Measured {
            row: row::SEND_BW,
            ratio: ratio::SEND_OVER_COPY_BANDWIDTH,
            meaning: "SEND bandwidth / local COPY bandwidth, medians (<1: the fabric is slower)",
            times: &ts,
        };
        bandwidth_vs_copy(report, size, bytes, &[m], &tc);
    }
    Ok(())
}

/// The receiving end in this process: `r` (at `at`), taking `from`'s stream of `pattern`.
struct Local<'a> {
    r: &'a Side<'a>,
    at: Endpoint,
    from: Endpoint,
    pattern: &'a [u8],
    timeout: Duration,
    /// The receive of the current size, and what it must take.
    recv: Option<(Work, Expect)>,
}

impl Receiver for Local<'_> {
    fn endpoint(&self) -> Endpoint {
        self.at
    }

    fn begin(&mut self, size: u64, _count: u64, _iters: u64) -> CmdResult {
        let len = usize::try_from(size)?;
        let recv = Work::recv(&self.r.bufs.window, 0, len, BITS, !0)?;
        let expect = Expect {
            len: size,
            bits: BITS,
            from: self.from,
        };
        self.recv = Some((recv, expect));
        Ok(())
    }

    fn iteration(&mut self, l: &Side, send: Work, count: u64) -> CmdResult<(Duration, u64)> {
        let (recv, expect) = self.recv.ok_or("an iteration before the size began")?;
        let window = &self.r.bufs.window;
        let len = expect.len as usize;
        window.fill_range(0, len, 0);
        let (took, got) = stream(l.ctx, self.r.ctx, send, recv, expect, count, self.timeout)?;
        check_pattern(window, &self.pattern[..len])?;
        Ok((took, got))
    }
}

pub fn run(a: &FabricArgs) -> CmdResult<Report> {
    let c = a.common(bw::DEFAULT_WARMUP);
    let sizes = sizes(a);
    run_local(a, Bench::Bw, &c, &sizes, 4096, |report, e| {
        let pattern = bw::pattern(e.max);
        e.l.bufs.src.write_from(0, &pattern);
        let mut peer = Local {
            r: &e.r,
            at: e.r.endpoint()?,
            from: e.l.endpoint()?,
            pattern: &pattern,
            timeout: e.timeout,
            recv: None,
        };
        measure(report, &c, e.sizes, &e.l, &mut peer)
    })
}
