//! Tagged messages (SEND/RECV, `docs/fabric.md` 14.14) between the initiator (sender) and
//! the target (receiver): eager and rendezvous sizes, receives posted before and after the
//! message arrives, match bits and masks against posting and arrival order, truncation, and
//! a long stream of mixed sizes in order. Every case checks the data, the bytes around each
//! receive buffer, the match bits and sender every receive reports, and both devices'
//! stale-access counters.

use std::time::{Duration, Instant};

use mnic::Work;
use mnic_guest_util::{check, duration, e, note, CaseResult, Map, Outcome, Rng, PAGE};

use crate::msg::*;
use crate::pair::*;

/// Empty, one byte, the largest eager message, the smallest rendezvous one, 64 KiB and an
/// odd tail (many pull packets), 1 MiB (many receiver pages).
const SIZES: [usize; 6] = [0, 1, EAGER_MAX, EAGER_MAX + 1, (64 << 10) + 5, 1 << 20];
/// Receive buffers start 7 bytes before a page boundary (every size above 7 crosses
/// pages), send buffers at another odd offset.
const DST_OFF: usize = PAGE - 7;
const SRC_OFF: usize = 3;
/// Match bits of each case, in the high half; the low half numbers the messages.
const SIZES_BITS: u64 = 0x5153 << 48;
const UNEXPECTED_BITS: u64 = 0x5545 << 48;
const TRUNC_BITS: u64 = 0x5452 << 48;
const STREAM_BITS: u64 = 0x5354 << 48;
const HIGH_HALF: u64 = !0 << 32;

/// A receive mapping of `len` bytes filled with [`GUARD`] and registered writable on the
/// receiver, and a send mapping filled with pattern `seed` registered readable on the sender.
struct Buffers<'a> {
    inbox: Map,
    out: Map,
    _regs: [mnic::Registration<'a>; 2],
}

fn buffers<'a>(p: &'a Pair, len: usize, seed: u64) -> Result<Buffers<'a>, String> {
    let inbox = Map::anon(len)?;
    inbox.fill(0, len, GUARD);
    let rin = register(&p.target, &inbox, mnic::Access::WRITE)?;
    let (out, rout) = local(&p.init, len, mnic::Access::READ, seed)?;
    Ok(Buffers {
        inbox,
        out,
        _regs: [rin, rout],
    })
}

/// For each size, a receive posted before the message: the SEND completes with the full
/// length, the receive with the same length, the sender's endpoint and the SEND's bits, and
/// the receiver's buffer holds the message and nothing around it changed.
pub fn msg_sizes() -> CaseResult {
    let p = pair()?;
    let (from, to) = (endpoint(&p.init)?, endpoint(&p.target)?);
    let len = 2 << 20;
    let b = buffers(&p, len, 40)?;
    for (i, &n) in SIZES.iter().enumerate() {
        let bits = SIZES_BITS | i as u64;
        let what = format!("{n}-byte message");
        let recv = Work::recv_va(b.inbox.at(DST_OFF), n as u32, bits, EXACT);
        let send = Work::send_va(b.out.at(SRC_OFF), n as u32, to, bits);
        let (s, r) = exchange(
            &p.init,
            &p.target,
            &[send.map_err(e("SEND"))?],
            &[recv.map_err(e("RECV"))?],
        )?;
        sent_ok(&s[0], n, &what)?;
        let want = Want {
            bits,
            from,
            bytes: n,
            truncated: false,
        };
        received(&r[0], &want, &what)?;
        holds_message(&b.inbox, DST_OFF, n, SRC_OFF, 40, &what)?;
        b.inbox.fill(0, len, GUARD);
    }
    p.no_stale()?;
    Ok(Outcome::Pass)
}

/// A message that arrives before any receive is posted (unexpected): an eager one is kept by
/// the receiving device and its SEND completes at once; a rendezvous SEND waits (nothing is
/// read until a receive matches). The receive posted afterwards takes it, intact.
pub fn msg_unexpected() -> CaseResult {
    let p = pair()?;
    let (from, to) = (endpoint(&p.init)?, endpoint(&p.target)?);
    let b = buffers(&p, 2 << 20, 41)?;
    let mut sender = Waiter::new(&p.init);
    let mut receiver = Waiter::new(&p.target);
    for (i, n) in [1000, EAGER_MAX, EAGER_MAX + 1, 1 << 20]
        .into_iter()
        .enumerate()
    {
        let bits = UNEXPECTED_BITS | i as u64;
        let what = format!("unexpected {n}-byte message");
        let send = sender.post(Work::send_va(b.out.at(SRC_OFF), n as u32, to, bits))?;
        if n <= EAGER_MAX {
            sent_ok(&sender.take(send)?, n, &what)?;
        } else {
            sender.quiet_for(
                Duration::from_millis(100),
                &format!("{what}: rendezvous SEND before any receive"),
            )?;
        }
        let recv = receiver.post(Work::recv_va(b.inbox.at(DST_OFF), n as u32, bits, EXACT))?;
        let want = Want {
            bits,
            from,
            bytes: n,
            truncated: false,
        };
        received(&receiver.take(recv)?, &want, &what)?;
        if n > EAGER_MAX {
            sent_ok(&sender.take(send)?, n, &what)?;
        }
        holds_message(&b.inbox, DST_OFF, n, SRC_OFF, 41, &what)?;
        b.inbox.fill(0, b.inbox.len, GUARD);
    }
    p.no_stale()?;
    Ok(Outcome::Pass)
}

/// Matching: posted receives are searched in posting order, with each receive's mask; the
/// unexpected messages in arrival order. A receive that matches nothing stays posted while
/// other messages pass it.
pub fn msg_match_masks() -> CaseResult {
    let p = pair()?;
    let (from, to) = (endpoint(&p.init)?, endpoint(&p.target)?);
    let b = buffers(&p, 16 * PAGE, 42)?;
    let mut sender = Waiter::new(&p.init);
    let mut receiver = Waiter::new(&p.target);
    let slot = |k: usize| b.inbox.at(k * 2 * PAGE + 8);
    let src = |k: usize| k * 512;
    // Posted: only 0x..1xx; anything; exactly B; exactly 0xdead (never sent until the end).
    const B: u64 = 0x2000_0000_0000_0001;
    let posted = [(0x100, 0xf00), (0, 0), (B, EXACT), (0xdead, EXACT)];
    let mut tags = Vec::new();
    for (k, (bits, mask)) in posted.iter().enumerate() {
        tags.push(receiver.post(Work::recv_va(slot(k), 256, *bits, *mask))?);
    }
    // B would match the exact receive, but the wildcard was posted first; the next B finds
    // only the exact one left; 0x1ff fits the first receive's mask.
    let sends = [(B, 0), (B, 1), (0x1ff, 2)];
    for (bits, k) in sends {
        let send = sender.post(Work::send_va(b.out.at(src(k)), 100, to, bits))?;
        sent_ok(&sender.take(send)?, 100, "posted-order message")?;
    }
    // (receive, message it must hold)
    for (r, k) in [(1, 0), (2, 1), (0, 2)] {
        let what = format!("posted receive {r}");
        let want = Want {
            bits: sends[k].0,
            from,
            bytes: 100,
            truncated: false,
        };
        received(&receiver.take(tags[r])?, &want, &what)?;
        let off = r * 2 * PAGE + 8;
        holds_message(&b.inbox, off, 100, src(k), 42, &what)?;
    }
    receiver.quiet_for(Duration::from_millis(50), "the receive for 0xdead")?;

    // Unexpected: X (0x0177) then Y (0x0277) arrive with no receive for them. A receive
    // that wants 0x02xx takes Y though X is older; a wildcard then takes X.
    for (bits, k) in [(0x0177, 3), (0x0277, 4)] {
        let send = sender.post(Work::send_va(b.out.at(src(k)), 200, to, bits))?;
        sent_ok(&sender.take(send)?, 200, "unexpected message")?;
    }
    for (r, bits, mask, k) in [(4, 0x0200, 0xff00, 4), (5, 0, 0, 3)] {
        let what = format!("receive {r} of an unexpected message");
        let tag = receiver.post(Work::recv_va(slot(r), 256, bits, mask))?;
        let want = Want {
            bits: [0x0177, 0x0277][k - 3],
            from,
            bytes: 200,
            truncated: false,
        };
        received(&receiver.take(tag)?, &want, &what)?;
        holds_message(&b.inbox, r * 2 * PAGE + 8, 200, src(k), 42, &what)?;
    }
    // Same bits twice: the older message goes to the older receive.
    for k in [5, 6] {
        let send = sender.post(Work::send_va(b.out.at(src(k)), 64, to, 0x77))?;
        sent_ok(&sender.take(send)?, 64, "same-bits message")?;
    }
    for (r, k) in [(6, 5), (7, 6)] {
        let tag = receiver.post(Work::recv_va(slot(r), 256, 0x77, EXACT))?;
        let what = format!("same-bits receive {r}");
        let want = Want {
            bits: 0x77,
            from,
            bytes: 64,
            truncated: false,
        };
        received(&receiver.take(tag)?, &want, &what)?;
        holds_message(&b.inbox, r * 2 * PAGE + 8, 64, src(k), 42, &what)?;
    }
    // Finally the receive that waited all along.
    let send = sender.post(Work::send_va(b.out.at(src(7)), 8, to, 0xdead))?;
    sent_ok(&sender.take(send)?, 8, "0xdead")?;
    let want = Want {
        bits: 0xdead,
        from,
        bytes: 8,
        truncated: false,
    };
    received(&receiver.take(tags[3])?, &want, "the receive for 0xdead")?;
    holds_message(&b.inbox, 3 * 2 * PAGE + 8, 8, src(7), 42, "0xdead")?;
    p.no_stale()?;
    Ok(Outcome::Pass)
}

/// A message longer than its receive: the receive completes successfully, reported
/// truncated, with the buffer's length; the buffer holds the message's first bytes and the
/// bytes after it are untouched; the SEND completes with its full length. Eager and
/// rendezvous, receive posted before and after the message.
pub fn msg_truncation() -> CaseResult {
    let p = pair()?;
    let (from, to) = (endpoint(&p.init)?, endpoint(&p.target)?);
    let b = buffers(&p, 2 << 20, 43)?;
    let mut sender = Waiter::new(&p.init);
    let mut receiver = Waiter::new(&p.target);
    // (message, room, receive posted first)
    let cases = [
        (1000, 100, true),
        (EAGER_MAX, 0, true),
        ((64 << 10) + 5, 4096 + 3, true),
        (1000, 10, false),
        ((1 << 20) + 1, 5000, false),
    ];
    for (i, (n, room, first)) in cases.into_iter().enumerate() {
        let bits = TRUNC_BITS | i as u64;
        let what = format!("{n}-byte message into {room} bytes (posted first: {first})");
        let post_recv = |r: &Waiter| r.post(Work::recv_va(b.inbox.at(DST_OFF), room, bits, EXACT));
        let recv = if first {
            Some(post_recv(&receiver)?)
        } else {
            None
        };
        let send = sender.post(Work::send_va(b.out.at(SRC_OFF), n as u32, to, bits))?;
        if n <= EAGER_MAX {
            sent_ok(&sender.take(send)?, n, &what)?;
        }
        let recv = match recv {
            Some(t) => t,
            None => post_recv(&receiver)?,
        };
        let want = Want {
            bits,
            from,
            bytes: room as usize,
            truncated: true,
        };
        received(&receiver.take(recv)?, &want, &what)?;
        if n > EAGER_MAX {
            sent_ok(&sender.take(send)?, n, &what)?;
        }
        holds_message(&b.inbox, DST_OFF, room as usize, SRC_OFF, 43, &what)?;
        b.inbox.fill(0, b.inbox.len, GUARD);
    }
    p.no_stale()?;
    Ok(Outcome::Pass)
}

/// Messages of the stream case, and the room each receive has (no message is longer).
const STREAM_N: usize = 200;
const STREAM_SLOT: usize = 96 << 10;

/// Messages in a stream: 200 of mixed sizes (eager and rendezvous, some empty), receives
/// posted as the device takes them (at most `POSTED_MAX` at once), so some messages arrive
/// before their receive. One sender's messages reach the receiver in posting order: the
/// k-th receive (all match the same high bits) takes the k-th message, whole. With
/// `--soak`, new streams (other sizes) for 60 s.
pub fn msg_stream() -> CaseResult {
    let p = pair()?;
    let b = buffers(&p, STREAM_N * STREAM_SLOT, 44)?;
    let until = Instant::now() + duration(0, 60);
    let mut rounds = 0;
    loop {
        stream_round(&p, &b, rounds)?;
        rounds += 1;
        if Instant::now() >= until {
            break;
        }
    }
    if rounds > 1 {
        note(format!("{rounds} streams of {STREAM_N} messages"));
    }
    p.no_stale()?;
    Ok(Outcome::Pass)
}

/// One stream of [`msg_stream`], sizes drawn with seed `round`.
fn stream_round(p: &Pair, b: &Buffers, round: u64) -> Result<(), String> {
    let (from, to) = (endpoint(&p.init)?, endpoint(&p.target)?);
    b.inbox.fill(0, b.inbox.len, GUARD);
    let mut rng = Rng(0x5eed_0001 + round);
    let sizes: Vec<usize> = (0..STREAM_N)
        .map(|_| match rng.below(10) {
            0 => 0,
            1..=5 => 1 + rng.below(EAGER_MAX as u64) as usize,
            _ => EAGER_MAX + 1 + rng.below((STREAM_SLOT - PAGE - EAGER_MAX) as u64) as usize,
        })
        .collect();
    let slot = |k: usize| k * STREAM_SLOT;
    let sends = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| Work::send_va(b.out.at(slot(i) + 1), n as u32, to, STREAM_BITS | i as u64))
        .collect::<mnic::Result<Vec<_>>>()
        .map_err(e("SEND"))?;
    let recvs = (0..STREAM_N)
        .map(|k| {
            Work::recv_va(
                b.inbox.at(slot(k) + 8),
                (STREAM_SLOT - PAGE) as u32,
                STREAM_BITS,
                HIGH_HALF,
            )
            .map(|w| w.with_tag(1000 + k as u64))
        })
        .collect::<mnic::Result<Vec<_>>>()
        .map_err(e("RECV"))?;
    let (sent, got) = exchange(&p.init, &p.target, &sends, &recvs)?;
    for (i, d) in sent.iter().enumerate() {
        sent_ok(d, sizes[i], &format!("stream message {i}"))?;
    }
    for (k, d) in got.iter().enumerate() {
        let what = format!("stream {round}, receive {k}");
        check(d.tag == 1000 + k as u64, || {
            format!(
                "{what}: the completion of the item tagged {} came in its place",
                d.tag
            )
        })?;
        let want = Want {
            bits: STREAM_BITS | k as u64,
            from,
            bytes: sizes[k],
            truncated: false,
        };
        received(d, &want, &what)?;
        holds_message(&b.inbox, slot(k) + 8, sizes[k], slot(k) + 1, 44, &what)?;
    }
    Ok(())
}
