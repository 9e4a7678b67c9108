//! Tagged messages (`docs/fabric.md` 14.14) and memory that moves: receive buffers that no
//! CPU touched or that were swapped out before a stream of receives (the receiver's device
//! faults them in), a rendezvous source swapped out at the sender (the pull faults at the
//! sender), and a receiving process that exits with receives posted and a message waiting
//! (its sender gets a typed error, and nothing lands in another context).

use std::time::Duration;

use mnic::{Access, RemoteError, Work};
use mnic_guest_util::nic::{self, TIMEOUT};
use mnic_guest_util::{
    check, e, ensure_swap, fork_pair, is_pattern, is_zero, note, CaseResult, Map, OnOneCpu,
    Outcome, PAGE,
};

use crate::msg::*;
use crate::paging::{no_entries_for_gone_pages, page_out};
use crate::pair::*;

const SLOT: usize = 64 << 10;
const STREAM: usize = 32;
const BITS: u64 = 0x5047 << 48;

/// Sizes of the stream into paged receive buffers: eager and rendezvous in turn.
fn stream_size(k: usize) -> usize {
    if k.is_multiple_of(2) {
        1000 + k
    } else {
        40_000 + k
    }
}

/// Streams [`STREAM`] messages from `src` (pattern `seed`) into slot `k` of `inbox` at
/// `k * SLOT + off`; returns how many faults the receiving context took meanwhile.
fn stream_into(p: &Pair, src: &Map, inbox: &Map, off: usize) -> Result<u64, String> {
    let to = endpoint(&p.target)?;
    let sends = (0..STREAM)
        .map(|k| Work::send_va(src.at(k * SLOT), stream_size(k) as u32, to, BITS | k as u64))
        .collect::<mnic::Result<Vec<_>>>()
        .map_err(e("SEND"))?;
    let recvs = (0..STREAM)
        .map(|k| {
            Work::recv_va(
                inbox.at(k * SLOT + off),
                stream_size(k) as u32,
                BITS | k as u64,
                EXACT,
            )
        })
        .collect::<mnic::Result<Vec<_>>>()
        .map_err(e("RECV"))?;
    let f0 = faults(&p.target)?;
    let (sent, got) = exchange(&p.init, &p.target, &sends, &recvs)?;
    all_ok(&sent, "SEND stream")?;
    all_ok(&got, "RECV stream")?;
    for d in &got {
        check(!d.truncated() && d.message.is_some(), || {
            format!("receive {:#x}: {d:?}", d.tag)
        })?;
    }
    Ok(faults(&p.target)? - f0)
}

/// Receive buffers the receiving CPU never touched (nothing resident, no device entry): the
/// receiver's device faults them in as messages land, eager ones written at arrival and
/// rendezvous ones pulled. Then receive buffers swapped out after they were filled: their
/// device entries are gone when madvise returns, and the stream faults them back.
pub fn msg_recv_buffer_paged() -> CaseResult {
    let _one_cpu = OnOneCpu::new(0)?;
    let p = pair()?;
    let len = STREAM * SLOT;
    let (src, _rs) = local(&p.init, len, Access::READ, 50)?;

    let inbox = Map::anon(len)?;
    let _ri = register(&p.target, &inbox, Access::WRITE)?;
    let resident = inbox.resident(0, len)?.iter().filter(|r| **r).count();
    check(resident == 0, || {
        format!("{resident} receive pages resident before")
    })?;
    let untouched_faults = stream_into(&p, &src, &inbox, 0)?;
    check(untouched_faults > 0, || {
        "no receiver fault for untouched receive buffers".into()
    })?;
    for k in 0..STREAM {
        let n = stream_size(k);
        is_pattern(&inbox.read(k * SLOT, n), k * SLOT, 50)
            .map_err(|m| format!("untouched receive {k}: {m}"))?;
        is_zero(
            &inbox.read(k * SLOT + n, PAGE),
            "after an untouched receive",
        )?;
    }

    if !ensure_swap()? {
        note("no swap (no zram): swapped-out receive buffers not tested");
        p.no_stale()?;
        return Ok(Outcome::Pass);
    }
    let swapped = Map::anon(len)?;
    swapped.fill(0, len, GUARD);
    let _rw = register(&p.target, &swapped, Access::WRITE)?;
    let gone = page_out(&swapped, len)?;
    no_entries_for_gone_pages(&p.target, &swapped, len)?;
    let swapped_faults = stream_into(&p, &src, &swapped, 8)?;
    check(swapped_faults > 0, || {
        "no receiver fault for swapped-out receive buffers".into()
    })?;
    for k in 0..STREAM {
        let what = format!("swapped-out receive {k}");
        holds_message(&swapped, k * SLOT + 8, stream_size(k), k * SLOT, 50, &what)?;
    }
    note(format!(
        "receiver faults: {untouched_faults} into untouched buffers, {swapped_faults} after \
         {gone} pages were swapped out"
    ));
    p.no_stale()?;
    Ok(Outcome::Pass)
}

/// The sender's buffer is swapped out before a rendezvous SEND: the receiving device's
/// pulls meet a network fault at the sender (the sender's driver brings the pages back, the
/// puller retries), and the message arrives intact. An eager SEND from swapped-out memory
/// takes a local fault at the sender.
pub fn msg_rndv_source_swapped() -> CaseResult {
    let Some((_one_cpu, p)) = swap_pair()? else {
        return Ok(Outcome::Skip(NO_SWAP.into()));
    };
    let (from, to) = (endpoint(&p.init)?, endpoint(&p.target)?);
    let len = (1 << 20) + 2 * PAGE;
    let (src, _rs) = local(&p.init, len, Access::READ, 51)?;
    let inbox = Map::anon(len)?;
    inbox.fill(0, len, GUARD);
    let _ri = register(&p.target, &inbox, Access::WRITE)?;
    for (i, n) in [1 << 20, 1000].into_iter().enumerate() {
        let what = format!("{n}-byte message from swapped-out memory");
        // Once through the device first, so the entries exist and the invalidation matters.
        let bits = BITS | 0x100 | i as u64;
        let once = |bits| {
            exchange(
                &p.init,
                &p.target,
                &[Work::send_va(src.at(3), n as u32, to, bits).map_err(e("SEND"))?],
                &[Work::recv_va(inbox.at(PAGE), n as u32, bits, EXACT).map_err(e("RECV"))?],
            )
        };
        let (s, r) = once(bits)?;
        all_ok(&s, &what)?;
        all_ok(&r, &what)?;
        inbox.fill(0, len, GUARD);
        page_out(&src, len)?;
        no_entries_for_gone_pages(&p.init, &src, len)?;
        let f0 = faults(&p.init)?;
        let (s, r) = once(bits | 0x10)?;
        sent_ok(&s[0], n, &what)?;
        let want = Want {
            bits: bits | 0x10,
            from,
            bytes: n,
            truncated: false,
        };
        received(&r[0], &want, &what)?;
        check(faults(&p.init)? > f0, || {
            format!("{what}: no fault at the sender")
        })?;
        holds_message(&inbox, PAGE, n, 3, 51, &what)?;
        inbox.fill(0, len, GUARD);
    }
    p.no_stale()?;
    Ok(Outcome::Pass)
}

/// The receiving process exits with receives posted and a rendezvous message waiting
/// unexpected for a receive: the waiting SEND fails with `REMOTE_NO_CONTEXT`, later SENDs
/// to that context too (eager and rendezvous), a receive posted by another context of the
/// same device gets nothing, and a context opened afterwards (which may get the same index)
/// inherits no message.
pub fn msg_receiver_exits() -> CaseResult {
    const A: u64 = BITS | 0xa;
    const B: u64 = BITS | 0xb;
    const C: u64 = BITS | 0xc;
    let p = pair()?;
    let len = 1 << 20;
    let (src, _rs) = local(&p.init, len, Access::READ, 52)?;
    // A bystander on the receiving device: a wildcard receive that must stay empty.
    let bystander = Map::anon(PAGE)?;
    bystander.fill(0, PAGE, GUARD);
    let _rb = register(&p.target, &bystander, Access::WRITE)?;
    let mut watch = Waiter::new(&p.target);
    let by_tag = watch.post(Work::recv_va(bystander.va(), PAGE as u32, 0, 0))?;
    let mut sender = Waiter::new(&p.init);
    let gone = fork_pair(
        |link| {
            let ctx = nic::open_path(TARGET)?;
            ctx.setup_queues(nic::queue_config())
                .map_err(e("setup_queues"))?;
            let buf = mnic::DmaBuffer::new(2 * len).map_err(e("buffer"))?;
            let _reg = ctx.register(&buf, Access::WRITE).map_err(e("register"))?;
            let a = ctx
                .post(&Work::recv(&buf, 0, PAGE, A, EXACT).map_err(e("RECV"))?)
                .map_err(e("post"))?;
            ctx.post(&Work::recv(&buf, len, len, B, EXACT).map_err(e("RECV"))?)
                .map_err(e("post"))?;
            let me = endpoint(&ctx)?;
            link.send(u64::from(me.node) | u64::from(me.ctx) << 16);
            // The eager message A lands in the first receive.
            let d = ctx.wait(TIMEOUT).map_err(e("wait"))?;
            check(
                d.tag == a && d.message.is_some_and(|m| m.match_bits == A),
                || format!("child: got {d:?}, want the receive of A"),
            )?;
            is_pattern(&buf.to_vec()[..1000], 0, 52).map_err(|m| format!("child: {m}"))?;
            link.send(1);
            // Exit with the receive of B posted and C waiting unexpected.
            link.recv()?;
            Ok(())
        },
        |link, _pid| {
            let packed = link.recv()?;
            let child = mnic::Endpoint::new(packed as u32 & 0xffff, (packed >> 16) as u32)
                .ok_or("child endpoint")?;
            let a = sender.post(Work::send_va(src.va(), 1000, child, A))?;
            sent_ok(&sender.take(a)?, 1000, "A to the child")?;
            link.recv()?;
            let c = sender.post(Work::send_va(src.va(), len as u32, child, C))?;
            sender.quiet_for(Duration::from_millis(100), "C before the child exits")?;
            link.send(2);
            let got = sender.take(c)?;
            want_remote(
                got.result(),
                RemoteError::NoContext,
                "C when the child exited",
            )?;
            Ok(child)
        },
    )?;
    // The child is reaped: its context is gone, with its receive for B.
    for n in [1000, len] {
        want_remote(
            p.init.run(
                &Work::send_va(src.va(), n as u32, gone, B).map_err(e("SEND"))?,
                TIMEOUT,
            ),
            RemoteError::NoContext,
            &format!("{n}-byte B after the child exited"),
        )?;
    }
    watch.quiet_for(Duration::from_millis(50), "the bystander's receive")?;
    is_pattern(&bystander.read(0, PAGE), 0, GUARD).map_err(|m| format!("bystander: {m}"))?;
    // A new context of the receiving device keeps none of the child's messages.
    let fresh = nic::open_path(TARGET)?;
    fresh
        .setup_queues(nic::queue_config())
        .map_err(e("setup_queues"))?;
    let inbox = Map::anon(len)?;
    inbox.fill(0, len, GUARD);
    let _ri = register(&fresh, &inbox, Access::WRITE)?;
    let mut fresh_w = Waiter::new(&fresh);
    let t = fresh_w.post(Work::recv_va(inbox.va(), len as u32, 0, 0))?;
    fresh_w.quiet_for(
        Duration::from_millis(100),
        "a new context's wildcard receive",
    )?;
    guarded(&inbox, 0, 0, "a new context's receive buffer")?;
    is_pattern(&inbox.read(0, PAGE), 0, GUARD).map_err(|m| format!("new context: {m}"))?;
    // Both still receive what is sent to them.
    let to_fresh = endpoint(&fresh)?;
    let s = sender.post(Work::send_va(src.va(), 64, to_fresh, A))?;
    sent_ok(&sender.take(s)?, 64, "A to a new context")?;
    fresh_w
        .take(t)?
        .result()
        .map_err(e("new context's receive"))?;
    let s = sender.post(Work::send_va(src.va(), 64, endpoint(&p.target)?, A))?;
    sent_ok(&sender.take(s)?, 64, "A to the bystander")?;
    watch
        .take(by_tag)?
        .result()
        .map_err(e("bystander's receive"))?;
    nic::no_stale(&fresh)?;
    p.no_stale()?;
    Ok(Outcome::Pass)
}
