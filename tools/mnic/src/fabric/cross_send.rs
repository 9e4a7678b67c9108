//! `mnic pingpong --op send` and `mnic bw --op send` with each end in a process of its own,
//! on another node (another guest), talking over the line link as the PUT ends of
//! `cross.rs` do, but with no window and no key: tagged messages need only the other end's
//! endpoint.
//!
//! The exchange: the server answers the client's `hello` with its endpoint and the client
//! sends its own. Then, for each message size, the client announces what comes (`rounds`
//! for the ping-pong, `stream` for bw); the server posts its first receive(s) before it
//! answers `ready` (so that the first message finds a receive), and the two exchange tagged
//! messages on the fabric, the client measuring with the same loop as with both ends in
//! one process:
//! - ping-pong (`send_pingpong::measure`): the server answers each ping with an [`Echo`]:
//!   it checks the ping's stamp, posts the next round's receive, and SENDs the ping back;
//!   the client checks that the echo is the ping it sent, byte for byte;
//! - bw (`send_bw::measure`): the server keeps receives posted across the size's
//!   iterations, checks every message and, after each iteration, that its buffer (zeroed
//!   before) holds the stream's data, then acknowledges the iteration with a message of
//!   match bits only (`ACK` | the iteration's number), whose arrival ends the client's timed
//!   iteration.
//!
//! A server that finds a message wrong still answers it, marked `FAILED`, then says `fail
//! WHY` on the link and stops; the client, seeing the mark, reads the reason there. At the
//! end the client says `done` and the server answers `ok`.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use mnic::{Context, Endpoint, Work};
use mnic_bench_schema::{Bench, Report};

use crate::bench::args::Common;
use crate::bench::report::{new_report, record_counters};
use crate::error::CmdResult;
use crate::fabric::args::FabricArgs;
use crate::fabric::cross::{open_end, record_client, verdict, PEER_WAIT};
use crate::fabric::ends::{largest, Buffers, Side};
use crate::fabric::link::{Link, Msg};
use crate::fabric::messages::{
    answer_failed, check_pattern, check_received, drain, poll_for, recv_room, Expect, Pusher,
    Stall, FAILED,
};
use crate::fabric::send_bw::{self, Receiver, BITS};
use crate::fabric::send_pingpong::{self, Answerer, Echo};
use crate::fabric::{bw, pingpong};

/// Match bits of the server's acknowledgement of a bw iteration: this in the high half,
/// the iteration's number (from 0 in each size) in the low half.
const ACK: u64 = 0x4143 << 48;

/// The server at the other end of the link, as the client's measuring loop sees it.
struct Remote<'a> {
    link: &'a mut Link<File>,
    server: Endpoint,
    timeout: Duration,
    /// bw: the number of the current size's next iteration.
    iteration: u64,
}

impl Remote<'_> {
    /// Why the server marked an answer [`FAILED`]: its `fail` line.
    fn failure(&mut self) -> Box<dyn std::error::Error> {
        match self.link.verdict(self.timeout) {
            Err(e) => e,
            Ok(()) => "the server marked an answer failed, then said ok".into(),
        }
    }
}

impl Answerer for Remote<'_> {
    fn endpoint(&self) -> Endpoint {
        self.server
    }

    fn begin(&mut self, size: u64, first: u64, count: u64) -> CmdResult {
        let rounds = Msg::Rounds { size, count, first };
        self.link.request(&rounds, self.timeout)
    }

    fn answer(&mut self, _n: u64) -> CmdResult {
        // The server answers on its own.
        Ok(())
    }

    fn end(&mut self) -> CmdResult {
        Ok(())
    }

    fn failure(&mut self) -> Box<dyn std::error::Error> {
        Remote::failure(self)
    }
}

impl Receiver for Remote<'_> {
    fn endpoint(&self) -> Endpoint {
        self.server
    }

    fn begin(&mut self, size: u64, count: u64, iters: u64) -> CmdResult {
        self.iteration = 0;
        let stream = Msg::Stream { size, count, iters };
        self.link.request(&stream, self.timeout)
    }

    /// Posts the receive of the iteration's acknowledgement, keeps the queue full of
    /// SENDs until the acknowledgement arrives (the timed part), then takes the last SENDs'
    /// completions.
    fn iteration(&mut self, l: &Side, send: Work, count: u64) -> CmdResult<(Duration, u64)> {
        let bits = ACK | self.iteration;
        self.iteration += 1;
        let ack = l
            .ctx
            .post(&Work::recv(&l.bufs.window, 0, 0, bits, !FAILED)?)?;
        let mut sends = Pusher::new(l.ctx, send, count, l.ctx.outstanding_limit());
        let mut stall = Stall::new(self.timeout);
        let (mut sent, mut bytes) = (0u64, 0u64);
        let start = Instant::now();
        let answer = 'stream: loop {
            sends.fill()?;
            let mut progress = false;
            while let Some(d) = l.ctx.poll()? {
                progress = true;
                if d.tag == ack {
                    break 'stream d;
                }
                bytes += d.result()?;
                sent += 1;
            }
            stall.check(progress, || {
                format!("message stream ({sent}/{count} sent, not acknowledged)")
            })?;
        };
        let took = start.elapsed();
        // A SEND completes on the target's answer, which can come after the server's
        // acknowledgement.
        while l.ctx.outstanding() > 0 {
            bytes += l.ctx.wait(Some(self.timeout))?.result()?;
            sent += 1;
        }
        answer.result()?;
        if answer_failed(&answer) {
            return Err(Remote::failure(self));
        }
        check_received(&answer, 0, bits, self.server)?;
        if sent != count {
            let why = format!("the server acknowledged after {sent} of {count} messages");
            return Err(why.into());
        }
        Ok((took, bytes))
    }
}

/// The frame of a client: opens the link and this end (buffers for the largest of `sizes`,
/// `fallback` bytes without any), hands endpoints over, runs `body` against the server,
/// ends the run with the server's verdict and adds this device's counters and `note`.
fn run_client(
    a: &FabricArgs,
    link_path: &Path,
    (bench, note): (Bench, &str),
    c: &Common,
    (sizes, fallback): (&[u64], u64),
    body: impl FnOnce(&mut Report, &Side, &mut Remote) -> CmdResult,
) -> CmdResult<Report> {
    let mut link = Link::open(link_path)?;
    let ctx = open_end(a, c)?;
    let bufs = Buffers::new(largest(sizes, fallback)?)?;
    let me = Side::new(&ctx, &bufs)?;
    let server = link.connect(PEER_WAIT, Msg::into_endpoint)?;
    link.send(&Msg::Endpoint(me.endpoint()?))?;
    let timeout = Duration::from_millis(c.timeout_ms);
    let mut report = new_report(bench, c);
    record_client(&mut report, a, &ctx, (link_path, server.node), sizes);
    let before = ctx.dev_stats()?;
    let mut remote = Remote {
        link: &mut link,
        server,
        timeout,
        iteration: 0,
    };
    body(&mut report, &me, &mut remote)?;
    link.finish(0, timeout)?;
    report.notes.push(note.into());
    record_counters(&mut report, &ctx, &before)?;
    Ok(report)
}

/// `mnic pingpong --op send --connect`.
pub fn pingpong_client(a: &FabricArgs, link_path: &Path) -> CmdResult<Report> {
    let c = a.common(pingpong::DEFAULT_WARMUP);
    let sizes = send_pingpong::sizes(a);
    let note = "one end per process: the SEND latency is half the round trip to the server's \
                echo; the server checked each ping's stamp, the client each echo, whole";
    let run = (Bench::Pingpong, note);
    run_client(a, link_path, run, &c, (&sizes, 8), |report, me, server| {
        send_pingpong::measure(report, &c, &sizes, me, server)
    })
}

/// `mnic bw --op send --connect`.
pub fn bw_client(a: &FabricArgs, link_path: &Path) -> CmdResult<Report> {
    let c = a.common(bw::DEFAULT_WARMUP);
    let sizes = send_bw::sizes(a);
    let note = "one end per process: an iteration ends when the server's acknowledgement of \
                it arrives; the server checked every message and, after each iteration, its \
                data";
    let run = (Bench::Bw, note);
    run_client(
        a,
        link_path,
        run,
        &c,
        (&sizes, 4096),
        |report, me, server| {
            me.bufs.src.write_from(0, &bw::pattern(me.bufs.src.len()));
            send_bw::measure(report, &c, &sizes, me, server)
        },
    )
}

/// `size` as the length of a message this server takes: 1 to `max` bytes.
fn within(size: u64, max: usize) -> CmdResult<usize> {
    match usize::try_from(size) {
        Ok(len) if (1..=max).contains(&len) => Ok(len),
        _ => Err(
            format!("message size {size} outside 1..={max}: give both ends the same --sizes")
                .into(),
        ),
    }
}

/// What a server does with each announcement: serves it (`Ok` with the messages it took).
type Serve<'s> = dyn FnMut(&Side, Endpoint, &mut Link<File>, Msg) -> CmdResult<u64> + 's;

/// The frame of a server (`name` in its messages): opens the link and this end (buffers
/// for the largest of its `sizes`, `fallback` bytes without any), hands endpoints over,
/// then serves each of the client's announcements with `serve` until `done`, and answers
/// `ok`, or `fail WHY` as soon as `serve` fails.
fn run_server(
    a: &FabricArgs,
    link_path: &Path,
    name: &str,
    c: &Common,
    (sizes, fallback): (&[u64], u64),
    serve: &mut Serve,
) -> CmdResult {
    let mut link = Link::open(link_path)?;
    let ctx = open_end(a, c)?;
    let bufs = Buffers::new(largest(sizes, fallback)?)?;
    let me = Side::new(&ctx, &bufs)?;
    let endpoint = me.endpoint()?;
    println!("{name} server (--op send): offering {endpoint}");
    link.accept(&Msg::Endpoint(endpoint), PEER_WAIT)?;
    let client = link.recv_endpoint(PEER_WAIT)?;
    let mut messages = 0u64;
    loop {
        match link.recv(PEER_WAIT)? {
            Msg::Done { .. } => {
                println!("{name} server: {messages} messages from {client} taken and checked");
                return verdict(&mut link, Ok(()));
            }
            m => match serve(&me, client, &mut link, m) {
                Ok(n) => messages += n,
                Err(e) => return verdict(&mut link, Err(e)),
            },
        }
    }
}

/// `mnic pingpong --op send --serve`: answers each round's ping with its echo.
pub fn pingpong_server(a: &FabricArgs, link_path: &Path) -> CmdResult {
    let c = a.common(pingpong::DEFAULT_WARMUP);
    let sizes = send_pingpong::sizes(a);
    let max = largest(&sizes, 8)?;
    let timeout = Duration::from_millis(c.timeout_ms);
    let mut serve = |me: &Side, client, link: &mut Link<File>, m| match m {
        Msg::Rounds { size, count, first } => {
            let len = within(size, max)?;
            let window = &me.bufs.window;
            let mut echo = Echo::begin(me.ctx, window, (len, client), first, count, timeout)?;
            link.send(&Msg::Ready)?;
            for n in first..first + count {
                echo.answer(n)?;
            }
            echo.finish()?;
            Ok(count)
        }
        other => Err(format!("link: expected `rounds` or `done`, got `{other}`").into()),
    };
    run_server(a, link_path, "pingpong", &c, (&sizes, 8), &mut serve)
}

/// `mnic bw --op send --serve`: takes each size's stream, checks it, acknowledges each
/// iteration.
pub fn bw_server(a: &FabricArgs, link_path: &Path) -> CmdResult {
    let c = a.common(bw::DEFAULT_WARMUP);
    let sizes = send_bw::sizes(a);
    let max = largest(&sizes, 4096)?;
    let timeout = Duration::from_millis(c.timeout_ms);
    let mut serve = |me: &Side, client, link: &mut Link<File>, m| match m {
        Msg::Stream { size, count, iters } => {
            within(size, max)?;
            let expect = Expect {
                len: size,
                bits: BITS,
                from: client,
            };
            serve_stream(me, link, expect, (count, iters), timeout)
        }
        other => Err(format!("link: expected `stream` or `done`, got `{other}`").into()),
    };
    run_server(a, link_path, "bw", &c, (&sizes, 4096), &mut serve)
}

/// One size's stream at the server: `iters` iterations of `count` messages as `expect`
/// says (of a length the window takes), into `me`'s window. Receives stay posted across the iterations (the next
/// iteration's first message finds one); after each iteration the window must hold the
/// stream's data, and is zeroed for the next before the acknowledgement goes out (the
/// client sends nothing more until it arrives). Returns the messages taken.
fn serve_stream(
    me: &Side,
    link: &mut Link<File>,
    expect: Expect,
    (count, iters): (u64, u64),
    timeout: Duration,
) -> CmdResult<u64> {
    let (ctx, window) = (me.ctx, &me.bufs.window);
    let len = usize::try_from(expect.len)?;
    let pattern = bw::pattern(len);
    let total = count
        .checked_mul(iters)
        .ok_or("a stream of more messages than can be counted")?;
    let recv = Work::recv(window, 0, len, BITS, !0)?;
    let mut recvs = Pusher::new(ctx, recv, total, recv_room(ctx));
    window.fill_range(0, len, 0);
    recvs.fill()?;
    link.send(&Msg::Ready)?;
    for i in 0..iters {
        let check = take(ctx, &mut recvs, expect, count, timeout)?
            .and_then(|()| check_pattern(window, &pattern));
        window.fill_range(0, len, 0);
        let bits = ACK | i | if check.is_err() { FAILED } else { 0 };
        let ack = ctx.post(&Work::send(&me.bufs.src, 0, 0, expect.from, bits)?)?;
        if let Err(e) = check {
            // The client learns of the failure from this acknowledgement: it must get
            // there before this end gives up.
            poll_for(ctx, ack, timeout)?;
            return Err(format!("iteration {i} of {len}-byte messages: {e}").into());
        }
    }
    // The last acknowledgement's completion.
    drain(ctx, timeout)?;
    Ok(total)
}

/// Takes `count` messages of a stream, keeping `recvs` posted. `Err`: the stream cannot go
/// on (a failed item, a stall); `Ok(Err)`: the first message that is not what `expect`
/// says (the rest are still taken, so that the acknowledgement can say so).
fn take(
    ctx: &Context,
    recvs: &mut Pusher,
    expect: Expect,
    count: u64,
    timeout: Duration,
) -> CmdResult<CmdResult> {
    let mut stall = Stall::new(timeout);
    let (mut got, mut first_wrong) = (0u64, Ok(()));
    while got < count {
        recvs.fill()?;
        let mut progress = false;
        while let Some(d) = ctx.poll()? {
            progress = true;
            d.result()?;
            // Also the completions of the previous acknowledgements, which carry no message.
            if d.message.is_some() {
                got += 1;
                if first_wrong.is_ok() {
                    first_wrong = expect.check(&d);
                }
            }
        }
        stall.check(progress, || {
            format!("message stream ({got}/{count} received)")
        })?;
    }
    Ok(first_wrong)
}
