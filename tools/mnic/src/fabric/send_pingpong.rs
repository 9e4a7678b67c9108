//! `mnic pingpong --op send`: tagged SEND/RECV latency per message size, like
//! `mx_pingpong` or `fi_pingpong`. In each round the measuring end posts a receive for the
//! answer and SENDs a ping tagged with the round's number; the answering end, which has a
//! receive posted for it, checks the ping (whole, from the measuring end, this round's
//! stamp), posts the receive of the next round and SENDs the ping back from where it landed
//! (an echo); the measuring end's receive completion ends the round trip, and the echo must
//! be byte for byte the ping it sent, so a wrong or stale byte either way fails the round.
//! Half the round trip is the one-way latency. The default sizes cross the eager limit
//! (1416 bytes: one packet; above it the receiver pulls the message by rendezvous).
//! Baseline: the same message moved by a local COPY on the local device, as in the PUT mode.
//!
//! [`measure`] is the measuring end's loop, whichever end answers: an [`Answerer`] in this
//! process ([`run`], both ends here) or a server at the other end of a link (`cross_send`);
//! both answer with an [`Echo`].

use std::time::{Duration, Instant};

use mnic::abi::fabric::EAGER_MAX;
use mnic::{Context, DmaBuffer, Endpoint, Work};
use mnic_bench_schema::names::{param, ratio, row};
use mnic_bench_schema::{Bench, Report};
use serde_json::json;

use crate::bench::args::Common;
use crate::error::CmdResult;
use crate::fabric::args::FabricArgs;
use crate::fabric::ends::{run_local, Side};
use crate::fabric::measure::{latency_vs_copy, message_len, rounds, Measured};
use crate::fabric::messages::{
    answer_failed, check_received, drain, poll_for, FAILED, SMOKE_SIZES,
};
use crate::fabric::pingpong::{self, arm, one_way, stamp};

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

/// The run's sizes: `--sizes`, the default, or in a smoke run the smoke sizes (both ends
/// of a two-process run size their buffers from this).
pub fn sizes(a: &FabricArgs) -> Vec<u64> {
    a.sizes_or_smoke(&DEFAULT_SIZES, &SMOKE_SIZES)
}

/// The end that answers the pings, as the measuring end sees it.
pub trait Answerer {
    /// Where the pings go.
    fn endpoint(&self) -> Endpoint;
    /// Rounds `first..first + count` of `size`-byte messages start: the answering end
    /// posts the receive of round `first`.
    fn begin(&mut self, size: u64, first: u64, count: u64) -> CmdResult;
    /// Round `n`'s ping was posted: in this process, answer it (a server at the other end
    /// of a link answers on its own).
    fn answer(&mut self, n: u64) -> CmdResult;
    /// The rounds of the size are over.
    fn end(&mut self) -> CmdResult;
    /// Why an answer came back marked [`FAILED`].
    fn failure(&mut self) -> Box<dyn std::error::Error>;
}

/// The answering end of the rounds of one size: its context, the buffer the pings land in
/// and the echoes leave from, the measuring end, and the receive posted for the next round.
pub struct Echo<'a> {
    ctx: &'a Context,
    window: &'a DmaBuffer,
    len: usize,
    to: Endpoint,
    timeout: Duration,
    /// The round whose receive is posted, and its tag.
    next: u64,
    posted: u64,
    /// The first round after this size's.
    end: u64,
}

impl<'a> Echo<'a> {
    /// Rounds `first..first + count` of `len`-byte pings from `to` into `window`: posts the
    /// receive of round `first`, after setting the window's stamp bytes to what only that
    /// round's ping has.
    pub fn begin(
        ctx: &'a Context,
        window: &'a DmaBuffer,
        (len, to): (usize, Endpoint),
        first: u64,
        count: u64,
        timeout: Duration,
    ) -> CmdResult<Self> {
        let mut echo = Self {
            ctx,
            window,
            len,
            to,
            timeout,
            next: first,
            posted: 0,
            end: first + count,
        };
        if count > 0 {
            arm(window, len, first);
            echo.post_recv()?;
        }
        Ok(echo)
    }

    fn post_recv(&mut self) -> CmdResult {
        let recv = Work::recv(self.window, 0, self.len, PING | self.next, !0)?;
        self.posted = self.ctx.post(&recv)?;
        Ok(())
    }

    /// Answers round `n`'s ping: waits for it and checks it (whole, from `to`, this round's
    /// bits and stamp); posts the next round's receive before the echo (a RECV queued behind
    /// a rendezvous SEND waits for its FIN, and the next ping would find no receive), then
    /// echoes the ping from where it landed, marked [`FAILED`] if it was wrong (and then
    /// waits for that echo to be taken). The next ping can only come once the echo is whole
    /// at the measuring end, so the window is free by then. Returns the check's result.
    pub fn answer(&mut self, n: u64) -> CmdResult {
        if n != self.next || n >= self.end {
            return Err(format!("round {n} answered out of order").into());
        }
        let got = poll_for(self.ctx, self.posted, self.timeout)?;
        let check = check_received(&got, self.len as u64, PING | n, self.to).and_then(|()| {
            let want = stamp(n, self.len);
            let mut seen = vec![0u8; want.len()];
            self.window.read_into(self.len - want.len(), &mut seen);
            if seen == want {
                Ok(())
            } else {
                Err(format!("round {n}: the ping's stamp is {seen:?}, not {want:?}").into())
            }
        });
        self.next = n + 1;
        if check.is_ok() && self.next < self.end {
            self.post_recv()?;
        }
        let bits = PONG | n | if check.is_err() { FAILED } else { 0 };
        let echo = Work::send(self.window, 0, self.len, self.to, bits)?;
        let echo = self.ctx.post(&echo)?;
        if check.is_err() {
            // The measuring end learns of the failure from this echo: it must get there
            // before this end gives up (and its context, with the echo, goes away).
            poll_for(self.ctx, echo, self.timeout)?;
        }
        check
    }

    /// After the last round: waits for the last echo's completion.
    pub fn finish(self) -> CmdResult {
        drain(self.ctx, self.timeout)
    }
}

/// One round trip of `len` bytes, round `n`, from `l`'s source (stamped `n`): the answer's
/// receive posted first (untimed), then from the ping's post to the answer's receive
/// completion; the echo is checked against the ping, untimed. Every item's completion is
/// consumed before returning.
fn round_trip(
    l: &Side,
    peer: &mut dyn Answerer,
    len: usize,
    n: u64,
    timeout: Duration,
) -> CmdResult<Duration> {
    let to = peer.endpoint();
    let mut sent = vec![0u8; len];
    l.bufs.src.read_into(0, &mut sent);
    // Only an echo of this ping can make the window hold it.
    let poison: Vec<u8> = sent.iter().map(|b| !b).collect();
    l.bufs.window.write_from(0, &poison);
    let answer = Work::recv(&l.bufs.window, 0, len, PONG | n, !FAILED)?;
    let answer = l.ctx.post(&answer)?;
    let ping = Work::send(&l.bufs.src, 0, len, to, PING | n)?;
    let start = Instant::now();
    l.ctx.post(&ping)?;
    peer.answer(n)?;
    let back = poll_for(l.ctx, answer, timeout)?;
    let took = start.elapsed();
    if answer_failed(&back) {
        return Err(peer.failure());
    }
    check_received(&back, len as u64, PONG | n, to)?;
    let mut echo = poison;
    l.bufs.window.read_into(0, &mut echo);
    if let Some(at) = echo.iter().zip(&sent).position(|(e, s)| e != s) {
        return Err(
            format!("round {n}: the {len}-byte echo differs from the ping at byte {at}").into(),
        );
    }
    drain(l.ctx, timeout)?;
    Ok(took)
}

/// The measuring end's rounds of every size against `peer`, from `l`, and the local COPY
/// baseline, into `report`.
pub fn measure(
    report: &mut Report,
    c: &Common,
    sizes: &[u64],
    l: &Side,
    peer: &mut dyn Answerer,
) -> CmdResult {
    report.params.push(param::EAGER_MAX, json!(EAGER_MAX));
    let timeout = Duration::from_millis(c.timeout_ms);
    let mut n = 0u64;
    for &size in sizes {
        let len = message_len(size)?;
        // Bytes that differ from zero and from the previous size's.
        l.bufs.src.fill_range(0, len, 0xa5 ^ size as u8);
        peer.begin(size, n + 1, u64::from(c.warmup + c.iters))?;
        let what = format!("send {size} bytes");
        let [send, copy] = rounds(c, "pingpong", &what, || {
            n += 1;
            // The COPY first: it stamps the local source, which the ping then carries.
            let local_copy = one_way(l, &l.bufs.dst, None, len, n, timeout)?;
            let rtt = round_trip(l, peer, len, n, timeout)?;
            Ok([rtt / 2, local_copy])
        })?;
        peer.end()?;
        let m = Measured {
            row: row::SEND_HALF_ROUND_TRIP,
            ratio: ratio::SEND_OVER_COPY_ONE_WAY,
            meaning: "half a SEND/RECV round trip / local COPY latency, medians (>1: the fabric is slower)",
            times: &send,
        };
        latency_vs_copy(report, size, m, &copy);
    }
    Ok(())
}

/// The answering end in this process: `r` (at `at`), answering `to`.
struct Local<'a> {
    r: &'a Side<'a>,
    at: Endpoint,
    to: Endpoint,
    timeout: Duration,
    echo: Option<Echo<'a>>,
}

impl Answerer for Local<'_> {
    fn endpoint(&self) -> Endpoint {
        self.at
    }

    fn begin(&mut self, size: u64, first: u64, count: u64) -> CmdResult {
        let window = &self.r.bufs.window;
        let len = message_len(size)?;
        let echo = Echo::begin(
            self.r.ctx,
            window,
            (len, self.to),
            first,
            count,
            self.timeout,
        )?;
        self.echo = Some(echo);
        Ok(())
    }

    fn answer(&mut self, n: u64) -> CmdResult {
        self.echo
            .as_mut()
            .ok_or("an answer before the rounds began")?
            .answer(n)
    }

    fn end(&mut self) -> CmdResult {
        self.echo.take().map_or(Ok(()), Echo::finish)
    }

    fn failure(&mut self) -> Box<dyn std::error::Error> {
        // `answer` returns the check's error before the measuring end sees the echo.
        "the answering end found a ping wrong".into()
    }
}

pub fn run(a: &FabricArgs) -> CmdResult<Report> {
    let c = a.common(pingpong::DEFAULT_WARMUP);
    let sizes = sizes(a);
    run_local(a, Bench::Pingpong, &c, &sizes, 8, |report, e| {
        let mut peer = Local {
            r: &e.r,
            at: e.r.endpoint()?,
            to: e.l.endpoint()?,
            timeout: e.timeout,
            echo: None,
        };
        measure(report, &c, e.sizes, &e.l, &mut peer)
    })
}
