//! `mnic pingpong` and `mnic bw` with each end in a process of its own, on another node
//! (another guest): `--serve` runs the target's end, `--connect` the initiator's, and the
//! two talk over a line link (`link.rs`). This file has the PUT ends and what every end
//! shares; `cross_send.rs` has the ends of `--op send`.
//!
//! The exchange: the server registers its window for remote access and answers the
//! client's `hello` with its region; the client (ping-pong: sends its own and) runs, then says it is done; the
//! server checks what it must and answers `ok` or `fail WHY`, so both ends agree on how the
//! run ended. Ping-pong: before each message size the client announces its rounds; in
//! each round it PUTs a stamped message into the server's window and the server, which
//! polls its window for the stamp, PUTs one back; the client's one-way latency is half the
//! round trip. Bandwidth: the client's PUT/GET stream, exactly as with both ends local
//! (`bw::measure`); the server can page its window out while the stream runs
//! (`--pageout-ms`) and checks at the end that the stream's data arrived intact.

use std::path::Path;
use std::time::{Duration, Instant};

use mnic::{Context, RemoteRegion, Work};
use mnic_bench_schema::names::{param, ratio, row};
use mnic_bench_schema::{Bench, Report};
use serde_json::json;

use crate::bench::args::Common;
use crate::bench::harness::setup;
use crate::bench::report::{new_report, record_counters};
use crate::error::CmdResult;
use crate::fabric::args::FabricArgs;
use crate::fabric::bw;
use crate::fabric::ends::{largest, Buffers, Side};
use crate::fabric::link::{Link, Msg};
use crate::fabric::measure::{latency_vs_copy, message_len, rounds, Measured};
use crate::fabric::oracle::{self, End};
use crate::fabric::pingpong::{self, arm, one_way, stamp};

/// How long an end waits for the other to come up (the other guest may still be booting).
pub(super) const PEER_WAIT: Duration = Duration::from_secs(300);

/// This end's context on `--local` (a node of a fabric), with its queues set up, armed with
/// `--oracle` (by this process: the oracle watches the address space of the one that arms).
pub(super) fn open_end(a: &FabricArgs, c: &Common) -> CmdResult<End> {
    let ctx = Context::open(&a.local)?;
    if ctx.info().node.is_none() {
        return Err(format!("{} is not a node of a fabric", a.local.display()).into());
    }
    oracle::end(a, setup(c, ctx)?)
}

/// The report parameters of a client: its device and node, the link, the server's node, the
/// operation; then the oracle's note and the sizes, as a run with both ends here has them.
pub(super) fn record_client(
    r: &mut Report,
    a: &FabricArgs,
    ctx: &Context,
    (link, remote_node): (&Path, u16),
    sizes: &[u64],
) {
    r.params
        .push(param::LOCAL, json!(a.local.display().to_string()));
    r.params.push(param::LOCAL_NODE, json!(ctx.info().node));
    r.params
        .push(param::REMOTE, json!(format!("link {}", link.display())));
    r.params.push(param::REMOTE_NODE, json!(remote_node));
    r.params.push(param::OP, json!(a.op.name()));
    oracle::note(r, a);
    r.params.push(param::SIZES, json!(sizes));
}

/// Checks that the server's window takes the largest message.
fn fits(peer: &RemoteRegion, max: usize) -> CmdResult {
    if (max as u64) > peer.len {
        return Err(format!(
            "the server's window is {} bytes, smaller than the largest message ({max}): give \
             both ends the same --sizes",
            peer.len
        )
        .into());
    }
    Ok(())
}

/// The server's answer to the client's `done`: `ok`, or `fail` with the reason; the reason
/// also fails this process.
pub(super) fn verdict(link: &mut Link<std::fs::File>, result: CmdResult) -> CmdResult {
    match result {
        Ok(()) => link.send(&Msg::Ok),
        Err(e) => {
            link.send(&Msg::Fail(e.to_string()))?;
            Err(e)
        }
    }
}

/// `mnic pingpong --connect`.
pub fn pingpong_client(a: &FabricArgs, link_path: &Path) -> CmdResult<Report> {
    let c = a.common(pingpong::DEFAULT_WARMUP);
    let sizes = a.sizes(&pingpong::DEFAULT_SIZES);
    let mut link = Link::open(link_path)?;
    let ctx = open_end(a, &c)?;
    let max = largest(&sizes, 8)?;
    let bufs = Buffers::new(max)?;
    let me = Side::new(&ctx, &bufs)?;
    let peer = link.connect(PEER_WAIT, Msg::into_region)?;
    fits(&peer, max)?;
    link.send(&Msg::Region(me.region))?;
    let timeout = Duration::from_millis(c.timeout_ms);
    let mut report = new_report(Bench::Pingpong, &c);
    let remote = (link_path, peer.endpoint.node);
    record_client(&mut report, a, &ctx, remote, &sizes);
    let before = ctx.dev_stats()?;
    let mut n = 0u64;
    for &size in &sizes {
        let len = message_len(size)?;
        bufs.src.fill_range(0, len, 0xa5 ^ size as u8);
        let count = u64::from(c.warmup + c.iters);
        link.request(
            &Msg::Rounds {
                size,
                count,
                first: n + 1,
            },
            timeout,
        )?;
        let what = format!("{size} bytes");
        let [put, copy] = rounds(&c, "pingpong", &what, || {
            n += 1;
            // Into the server's window, and watched in ours, where its answer lands.
            let round_trip = one_way(&me, &bufs.window, Some(&peer), len, n, timeout)?;
            let local_copy = one_way(&me, &bufs.dst, None, len, n, timeout)?;
            Ok([round_trip / 2, local_copy])
        })?;
        let m = Measured {
            row: row::PUT_ONE_WAY,
            ratio: ratio::PUT_OVER_COPY_ONE_WAY,
            meaning: "one-way PUT latency (half the round trip) / local COPY latency, medians",
            times: &put,
        };
        latency_vs_copy(&mut report, size, m, &copy);
    }
    link.finish(0, timeout)?;
    report
        .notes
        .push("one end per process: one-way PUT latency is half the round trip".into());
    record_counters(&mut report, &ctx, &before)?;
    Ok(report)
}

/// Polls `window` at `off` until it holds `want`.
fn wait_for(window: &mnic::DmaBuffer, off: usize, want: &[u8], timeout: Duration) -> CmdResult {
    let mut seen = vec![0u8; want.len()];
    let start = Instant::now();
    loop {
        window.read_into(off, &mut seen);
        if seen == want {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(format!("round message not seen within {timeout:?}").into());
        }
        std::hint::spin_loop();
    }
}

/// `mnic pingpong --serve`.
pub fn pingpong_server(a: &FabricArgs, link_path: &Path) -> CmdResult {
    let c = a.common(pingpong::DEFAULT_WARMUP);
    let max = largest(&a.sizes(&pingpong::DEFAULT_SIZES), 8)?;
    let mut link = Link::open(link_path)?;
    let ctx = open_end(a, &c)?;
    let bufs = Buffers::new(max)?;
    let me = Side::new(&ctx, &bufs)?;
    println!("pingpong server: offering {}", me.region);
    link.accept(&Msg::Region(me.region), PEER_WAIT)?;
    let peer = link.recv_region(PEER_WAIT)?;
    let timeout = Duration::from_millis(c.timeout_ms);
    let mut rounds = 0u64;
    loop {
        match link.recv(PEER_WAIT)? {
            Msg::Rounds { size, count, first } => {
                let len = usize::try_from(size)?;
                if len == 0 || len > max {
                    let why = format!("message size {size} outside 1..={max}");
                    return verdict(&mut link, Err(why.into()));
                }
                bufs.src.fill_range(0, len, 0x5a ^ size as u8);
                arm(&bufs.window, len, first);
                link.send(&Msg::Ready)?;
                let echo = |n: u64| -> CmdResult {
                    let want = stamp(n, len);
                    let off = len - want.len();
                    wait_for(&bufs.window, off, &want, timeout)?;
                    // The next round's message can only come after this answer.
                    arm(&bufs.window, len, n + 1);
                    bufs.src.write_from(off, &want);
                    ctx.run(&Work::put(&bufs.src, 0, &peer, 0, len)?, Some(timeout))?;
                    Ok(())
                };
                for n in first..first + count {
                    if let Err(e) = echo(n) {
                        return verdict(&mut link, Err(e));
                    }
                }
                rounds += count;
            }
            Msg::Done { .. } => {
                println!("pingpong server: {rounds} rounds answered");
                return verdict(&mut link, Ok(()));
            }
            other => return Err(format!("link: unexpected `{other}`").into()),
        }
    }
}

/// `mnic bw --connect`.
pub fn bw_client(a: &FabricArgs, link_path: &Path) -> CmdResult<Report> {
    let c = a.common(bw::DEFAULT_WARMUP);
    let sizes = a.sizes(&bw::DEFAULT_SIZES);
    let mut link = Link::open(link_path)?;
    let ctx = open_end(a, &c)?;
    let max = largest(&sizes, 4096)?;
    let bufs = Buffers::new(max)?;
    let me = Side::new(&ctx, &bufs)?;
    let peer = link.connect(PEER_WAIT, Msg::into_region)?;
    fits(&peer, max)?;
    let pattern = bw::pattern(max);
    bufs.src.write_from(0, &pattern);
    let mut report = new_report(Bench::Bw, &c);
    let remote = (link_path, peer.endpoint.node);
    record_client(&mut report, a, &ctx, remote, &sizes);
    let before = ctx.dev_stats()?;
    bw::measure(&mut report, &c, &sizes, &me, &peer, &pattern)?;
    // Every size's PUTs wrote a prefix of the pattern: the server checks the largest.
    link.finish(max as u64, Duration::from_millis(c.timeout_ms))?;
    report
        .notes
        .push("the server checked that its window holds the stream's data".into());
    record_counters(&mut report, &ctx, &before)?;
    Ok(report)
}

/// `mnic bw --serve`: offers the window, pages it out every `--pageout-ms` while the
/// client streams, then checks the data.
pub fn bw_server(a: &FabricArgs, link_path: &Path) -> CmdResult {
    let c = a.common(bw::DEFAULT_WARMUP);
    let max = largest(&a.sizes(&bw::DEFAULT_SIZES), 4096)?;
    let mut link = Link::open(link_path)?;
    let ctx = open_end(a, &c)?;
    let bufs = Buffers::new(max)?;
    let me = Side::new(&ctx, &bufs)?;
    let before = ctx.dev_stats()?;
    println!("bw server: offering {}", me.region);
    link.accept(&Msg::Region(me.region), PEER_WAIT)?;
    let every = a.pageout_ms.map(Duration::from_millis);
    let mut last = Instant::now();
    let mut pageouts = 0u32;
    let done = link.recv_with(PEER_WAIT, || {
        if let Some(every) = every {
            if last.elapsed() >= every {
                bufs.window.pageout()?;
                pageouts += 1;
                last = Instant::now();
            }
        }
        Ok(())
    })?;
    let Msg::Done { check } = done else {
        return Err(format!("link: expected `done`, got `{done}`").into());
    };
    let (resident, pages) = bufs.window.resident_pages()?;
    println!(
        "bw server: stream done; the window was paged out {pageouts} times during it \
         ({resident}/{pages} pages resident now)"
    );
    let delta = ctx.dev_stats()?.since(&before);
    let moved: Vec<String> = delta
        .iter()
        .filter(|(_, v)| *v != 0)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!(
        "bw server: device counters during the stream: {}",
        moved.join(" ")
    );
    let result = check_window(&bufs.window, check, max, every.map(|_| pageouts));
    if result.is_ok() {
        println!("bw server: the window's first {check} bytes hold the stream's data");
    }
    verdict(&mut link, result)
}

/// The server's check: the window's first `check` bytes are the stream's pattern, and with
/// page-outs asked for, at least one happened during the stream.
fn check_window(
    window: &mnic::DmaBuffer,
    check: u64,
    max: usize,
    pageouts: Option<u32>,
) -> CmdResult {
    let len = usize::try_from(check)?;
    if len > max {
        return Err(format!("asked to check {len} bytes of a {max}-byte window").into());
    }
    let (got, want) = (window.to_vec(), bw::pattern(len));
    if let Some(at) = (0..len).find(|&i| got[i] != want[i]) {
        return Err(format!("the window differs from the stream's data at byte {at}").into());
    }
    if pageouts == Some(0) {
        return Err("the stream ended before the first page-out (raise the stream's size)".into());
    }
    Ok(())
}
