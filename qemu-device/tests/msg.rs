//! Tagged SEND/RECV between two devices (docs/fabric.md 14.14): two device cores on memfd
//! guest RAM, nodes 1 (the sender, `a`) and 2 (the receiver, `b`) of a fabric of two
//! real transports on 127.0.0.1, polled by the test. Data is compared byte for byte;
//! faults at either end are resolved by the test playing the driver; completions carry
//! the message's bits and sender; a hostile peer changes nothing. Every wait is bounded.

use std::time::Duration;

use mnic_abi::fabric::{EAGER_MAX, UNEXPECTED_MAX};
use mnic_abi::{cmd, completion, counter, event, fabric_counter, work};
use mnic_abi::{Completion, Endpoint, Event, WorkDesc};
use mnic_device::engine::{RmaTiming, NETWORK_FAULT};
use mnic_device::fabric::rma_stats::RmaSnapshot;
use mnic_device::testkit::{pattern, Harness, Hostile, Pair, PairConfig};

/// Longest wait for one completion.
const LIMIT: Duration = Duration::from_secs(20);
/// The sender's context on node 1, the receiver's on node 2.
const CA: u16 = 1;
const CB: u16 = 3;
/// Where the buffers are mapped: the sender's, the receiver's.
const VA_A: u64 = 0x1000_0000;
const VA_B: u64 = 0x2000_0000;
/// The receiver, as a SEND names it; the sender, as a RECV completion names it.
const TO_B: Endpoint = Endpoint { node: 2, ctx: CB };
const FROM_A: Endpoint = Endpoint { node: 1, ctx: CA };

struct Setup {
    p: Pair,
    /// GPA of a's buffer.
    gpa_a: u64,
    /// GPA of b's buffer.
    gpa_b: u64,
}

/// The two devices with a context each (queues of 256 entries) and a buffer of `span`
/// bytes on both sides.
fn setup(cfg: &PairConfig, span: u64) -> Setup {
    let mut p = Pair::new(cfg);
    p.a.setup_ctx(CA, 8, 8);
    p.b.setup_ctx(CB, 8, 8);
    let gpa_a = p.a.buffer(CA, VA_A, span);
    let gpa_b = p.b.buffer(CB, VA_B, span);
    Setup { p, gpa_a, gpa_b }
}

fn send(src: u64, len: u32, bits: u64, tag: u64) -> WorkDesc {
    WorkDesc::send(work::FLAG_NOTIFY, tag, src, len, TO_B, bits)
}

fn recv(dst: u64, len: u32, bits: u64, mask: u64, tag: u64) -> WorkDesc {
    WorkDesc::recv(work::FLAG_NOTIFY, tag, dst, len, bits, mask)
}

/// The next completion of a's context.
fn sent(p: &mut Pair) -> Completion {
    p.completion(CA, LIMIT)
}

/// The next `n` completions of b's context.
fn received(p: &mut Pair, n: usize) -> Vec<Completion> {
    p.completions_on(true, CB, n, LIMIT)
}

fn rma(h: &Harness) -> RmaSnapshot {
    h.core.shared().rma.snapshot()
}

/// A SEND completion: `OK`, `len` bytes.
fn send_ok(c: &Completion, tag: u64, len: u32) {
    assert_eq!(
        (c.tag, c.status, c.bytes, c.detail),
        (tag, completion::OK, u64::from(len), 0),
        "{c:?}"
    );
}

/// A RECV completion: `status`, `bytes`, bits `bits` from a's context.
fn recv_done(c: &Completion, tag: u64, status: u16, bytes: u64, bits: u64) {
    assert_eq!((c.tag, c.status, c.bytes), (tag, status, bytes), "{c:?}");
    assert_eq!((c.recv_bits(), c.recv_sender()), (bits, FROM_A), "{c:?}");
}

/// Polls until b keeps `n` unexpected messages in all.
fn kept(p: &mut Pair, n: u64) {
    p.until(LIMIT, |p| {
        (rma(&p.b)[fabric_counter::UNEXPECTED] >= n).then_some(())
    });
}

/// Polls until a FAULT event comes from `b` (if `on_b`) or `a`.
fn fault(p: &mut Pair, on_b: bool) -> Event {
    p.until(LIMIT, |p| {
        let h = if on_b { &mut p.b } else { &mut p.a };
        h.events().into_iter().find(|e| e.kind == event::FAULT)
    })
}

const SIZES: [u32; 5] = [
    1,
    EAGER_MAX as u32,
    EAGER_MAX as u32 + 1,
    (64 << 10) + 5,
    1 << 20,
];

#[test]
fn every_size_arrives_intact_posted_first_or_unexpected() {
    let mut s = setup(&PairConfig::default(), 1 << 20);
    let mut tag = 0;
    for len in SIZES {
        for posted_first in [true, false] {
            tag += 1;
            let (bits, data) = (0xabc0_0000 + tag, pattern(len as usize, tag as u8));
            s.p.a.write_bytes(s.gpa_a, &data);
            s.p.b.write_bytes(s.gpa_b, &vec![0; len as usize + 1]);
            let r = recv(VA_B, len, bits, u64::MAX, 100 + tag);
            if posted_first {
                s.p.b.post(CB, r);
                s.p.b.run();
                s.p.a.post(CA, send(VA_A, len, bits, tag));
            } else {
                let before = rma(&s.p.b)[fabric_counter::UNEXPECTED];
                s.p.a.post(CA, send(VA_A, len, bits, tag));
                kept(&mut s.p, before + 1);
                if len as usize <= EAGER_MAX {
                    // Kept at the target: the eager SEND is done before any RECV.
                    send_ok(&sent(&mut s.p), tag, len);
                }
                s.p.b.post(CB, r);
            }
            let c = received(&mut s.p, 1);
            recv_done(&c[0], 100 + tag, completion::OK, u64::from(len), bits);
            if posted_first || len as usize > EAGER_MAX {
                send_ok(&sent(&mut s.p), tag, len);
            }
            let got = s.p.b.read_bytes(s.gpa_b, len as usize + 1);
            assert!(
                got[..len as usize] == data[..],
                "{len} bytes, posted first {posted_first}"
            );
            assert_eq!(got[len as usize], 0, "nothing beyond the message");
        }
    }
    let (sa, sb) = (rma(&s.p.a), rma(&s.p.b));
    assert_eq!(
        (
            sb[fabric_counter::EAGER_MATCHED],
            sb[fabric_counter::RTS_MATCHED]
        ),
        (2, 3),
        "{sb:?}"
    );
    assert_eq!(
        (
            sb[fabric_counter::UNEXPECTED],
            sb[fabric_counter::RECV_MATCHED]
        ),
        (5, 5),
        "{sb:?}"
    );
    assert_eq!(
        (
            sb[fabric_counter::FIN_SENT],
            sa[fabric_counter::FIN_RECEIVED]
        ),
        (6, 6),
        "{sa:?} {sb:?}"
    );
    assert!(sa[fabric_counter::PULL_SERVED] > 700, "{sa:?}");
    assert_eq!(
        (
            sa[fabric_counter::REFUSED],
            sb[fabric_counter::REFUSED],
            sa[fabric_counter::LATE],
            sb[fabric_counter::LATE]
        ),
        (0, 0, 0, 0)
    );
    // What the guest reads in BAR0's FABRIC_COUNTER registers (spec §10) is the same.
    assert_eq!(s.p.a.fabric_counters(), sa.values(), "sender's registers");
    assert_eq!(s.p.b.fabric_counters(), sb.values(), "receiver's registers");
    for h in [&s.p.a, &s.p.b] {
        assert_eq!(h.counter(counter::ERRORS), 0);
        assert_eq!(h.counter(counter::STALE_ACCESSES), 0);
    }
}

#[test]
fn masks_choose_messages_and_receives_match_in_posted_order() {
    let mut s = setup(&PairConfig::default(), 4 << 10);
    let slot = |i: u64| VA_B + i * 64;
    s.p.b.post(CB, recv(slot(1), 64, 0x100, 0xf00, 1));
    s.p.b.post(CB, recv(slot(2), 64, 0x100, 0xf00, 2));
    s.p.b.post(CB, recv(slot(3), 64, 0x2aa, u64::MAX, 3));
    s.p.b.run();
    for (i, bits) in [0x2aa_u64, 0x155, 0x1ff, 0x300].into_iter().enumerate() {
        let off = i as u64 * 64;
        s.p.a.write_bytes(s.gpa_a + off, &pattern(64, bits as u8));
        s.p.a.post(CA, send(VA_A + off, 64, bits, 10 + i as u64));
        send_ok(&sent(&mut s.p), 10 + i as u64, 64);
    }
    // 0x2aa only to the exact receive; 0x155 and 0x1ff to the masked ones, in order;
    // 0x300 to none of them.
    let c = received(&mut s.p, 3);
    let got: Vec<(u64, u64)> = c.iter().map(|c| (c.tag, c.recv_bits())).collect();
    assert_eq!(got, vec![(3, 0x2aa), (1, 0x155), (2, 0x1ff)]);
    for (tag, bits) in got {
        let at = s.gpa_b + tag * 64;
        assert_eq!(s.p.b.read_bytes(at, 64), pattern(64, bits as u8));
    }
    assert_eq!(rma(&s.p.b)[fabric_counter::UNEXPECTED], 1, "0x300 waits");
    // A receive that names it takes it from the unexpected queue.
    s.p.b.post(CB, recv(slot(4), 64, 0x300, u64::MAX, 4));
    let c = received(&mut s.p, 1);
    recv_done(&c[0], 4, completion::OK, 64, 0x300);
    assert_eq!(s.p.b.read_bytes(s.gpa_b + 4 * 64, 64), pattern(64, 0x00));
}

#[test]
fn a_message_longer_than_its_receive_is_truncated() {
    let mut s = setup(&PairConfig::default(), 128 << 10);
    let mut tag = 0;
    for (len, room, posted_first) in [
        (100u32, 40u32, true),
        (100, 40, false),
        ((64 << 10) + 5, 5000, true),
        ((64 << 10) + 5, 5000, false),
        (3000, 0, true),
    ] {
        tag += 1;
        let data = pattern(len as usize, tag as u8);
        s.p.a.write_bytes(s.gpa_a, &data);
        s.p.b.write_bytes(s.gpa_b, &vec![0xee; len as usize]);
        let r = recv(VA_B, room, tag, u64::MAX, 100 + tag);
        if posted_first {
            s.p.b.post(CB, r);
        }
        s.p.a.post(CA, send(VA_A, len, tag, tag));
        if !posted_first {
            let n = rma(&s.p.b)[fabric_counter::UNEXPECTED] + 1;
            kept(&mut s.p, n);
            s.p.b.post(CB, r);
        }
        let c = received(&mut s.p, 1);
        recv_done(
            &c[0],
            100 + tag,
            completion::RECV_TRUNCATED,
            u64::from(room),
            tag,
        );
        send_ok(&sent(&mut s.p), tag, len);
        let got = s.p.b.read_bytes(s.gpa_b, len as usize);
        assert!(
            got[..room as usize] == data[..room as usize],
            "{len} into {room}"
        );
        assert!(
            got[room as usize..].iter().all(|&b| b == 0xee),
            "beyond the receive"
        );
    }
}

#[test]
fn an_eager_message_into_a_missing_page_is_refused_until_the_receiver_resumes() {
    let mut s = setup(&PairConfig::default(), 3 << 12);
    // The receive straddles a page boundary; its second page is missing.
    s.p.b.unmap(CB, VA_B + 4096);
    let at = VA_B + 4096 - 500;
    s.p.b.post(CB, recv(at, 1000, 7, u64::MAX, 1));
    let data = pattern(1000, 3);
    s.p.a.write_bytes(s.gpa_a, &data);
    s.p.a.post(CA, send(VA_A, 1000, 7, 2));
    let e = fault(&mut s.p, true);
    assert_eq!(
        (e.ctx, e.info, e.addr & !0xfff),
        (CB, NETWORK_FAULT | 1, VA_B + 4096)
    );
    assert_ne!(e.flags & event::FLAG_WRITE, 0);
    // All or nothing: not even the first page got its 500 bytes.
    let first = s.gpa_b + 4096 - 500;
    assert_eq!(s.p.b.read_bytes(first, 500), vec![0; 500]);
    assert!(
        s.p.b.completions(CB).is_empty(),
        "the receive waits, posted"
    );
    s.p.until(LIMIT, |p| {
        (rma(&p.a)[fabric_counter::RNR_RECEIVED] >= 1).then_some(())
    });
    s.p.b.map(CB, VA_B + 4096, s.gpa_b + 4096, 4096, true);
    s.p.b.command(cmd::RESUME, CB, e.id, 0);
    send_ok(&sent(&mut s.p), 2, 1000);
    let c = received(&mut s.p, 1);
    recv_done(&c[0], 1, completion::OK, 1000, 7);
    assert_eq!(s.p.b.read_bytes(first, 1000), data);
    let sb = rma(&s.p.b);
    assert_eq!(
        (
            sb[fabric_counter::NETWORK_FAULTS],
            sb[fabric_counter::EAGER_MATCHED]
        ),
        (1, 1),
        "{sb:?}"
    );
}

#[test]
fn a_rendezvous_into_a_missing_page_parks_the_receiver_as_a_local_fault() {
    const LEN: u32 = 3 << 12;
    let mut s = setup(&PairConfig::default(), u64::from(LEN));
    s.p.b.unmap(CB, VA_B + 4096);
    let data = pattern(LEN as usize, 5);
    s.p.a.write_bytes(s.gpa_a, &data);
    s.p.b.post(CB, recv(VA_B, LEN, 1, u64::MAX, 1));
    s.p.a.post(CA, send(VA_A, LEN, 1, 2));
    let e = fault(&mut s.p, true);
    assert_eq!(
        (e.ctx, e.info, e.addr & !0xfff),
        (CB, 0, VA_B + 4096),
        "local"
    );
    let moved = s.p.b.alloc(4096, false);
    s.p.b.map(CB, VA_B + 4096, moved, 4096, true);
    s.p.b.command(cmd::RESUME, CB, e.id, 0);
    let c = received(&mut s.p, 1);
    recv_done(&c[0], 1, completion::OK, u64::from(LEN), 1);
    send_ok(&sent(&mut s.p), 2, LEN);
    assert_eq!(s.p.b.read_bytes(s.gpa_b, 4096), data[..4096]);
    assert_eq!(s.p.b.read_bytes(moved, 4096), data[4096..8192]);
    assert_eq!(s.p.b.read_bytes(s.gpa_b + 4096, 4096), vec![0; 4096]);
    assert_eq!(s.p.b.read_bytes(s.gpa_b + 8192, 4096), data[8192..]);
}

#[test]
fn a_rendezvous_from_a_missing_page_is_a_network_fault_at_the_sender() {
    const LEN: u32 = 3 << 12;
    let mut s = setup(&PairConfig::default(), u64::from(LEN));
    let data = pattern(LEN as usize, 6);
    s.p.a.write_bytes(s.gpa_a, &data);
    s.p.a.unmap(CA, VA_A + 8192);
    s.p.b.post(CB, recv(VA_B, LEN, 1, u64::MAX, 1));
    s.p.a.post(CA, send(VA_A, LEN, 1, 2));
    let e = fault(&mut s.p, false);
    assert_eq!(
        (e.ctx, e.info, e.addr & !0xfff),
        (CA, NETWORK_FAULT | 2, VA_A + 8192)
    );
    assert_eq!(e.flags & event::FLAG_WRITE, 0, "a read");
    s.p.a.map(CA, VA_A + 8192, s.gpa_a + 8192, 4096, false);
    s.p.a.command(cmd::RESUME, CA, e.id, 0);
    let c = received(&mut s.p, 1);
    recv_done(&c[0], 1, completion::OK, u64::from(LEN), 1);
    send_ok(&sent(&mut s.p), 2, LEN);
    assert_eq!(s.p.b.read_bytes(s.gpa_b, LEN as usize), data);
    let (sa, sb) = (rma(&s.p.a), rma(&s.p.b));
    assert!(
        sa[fabric_counter::RNR_SENT] >= 1 && sb[fabric_counter::RNR_RECEIVED] >= 1,
        "{sa:?} {sb:?}"
    );
    assert_eq!(sa[fabric_counter::NETWORK_FAULTS], 1);
}

#[test]
fn a_full_unexpected_queue_answers_rnr_until_a_receive_drains_it() {
    let cfg = PairConfig {
        rma: RmaTiming {
            rnr_backoff: Duration::from_micros(200),
            rnr_backoff_max: Duration::from_millis(2),
            rnr_retries: 100_000,
            ..RmaTiming::default()
        },
        ..PairConfig::default()
    };
    let mut s = setup(&cfg, 4096);
    s.p.a.write_bytes(s.gpa_a, &pattern(4096, 1));
    for i in 0..UNEXPECTED_MAX as u64 {
        s.p.a.post(CA, send(VA_A + i, 8, i, i));
        send_ok(&sent(&mut s.p), i, 8);
    }
    let n = UNEXPECTED_MAX as u64;
    s.p.a.post(CA, send(VA_A + n, 8, n, n));
    s.p.until(LIMIT, |p| {
        (rma(&p.a)[fabric_counter::RNR_RECEIVED] >= 3).then_some(())
    });
    assert!(s.p.a.completions(CA).is_empty(), "refused, waiting");
    let sb = rma(&s.p.b);
    assert!(sb[fabric_counter::UNEXPECTED_FULL] >= 3, "{sb:?}");
    assert_eq!(
        s.p.b.counter(counter::FAULTS),
        0,
        "no fault for a full queue"
    );
    // A receive for anything takes the oldest message; the refused one is kept then.
    s.p.b.post(CB, recv(VA_B, 8, 0, 0, 1000));
    let c = received(&mut s.p, 1);
    recv_done(&c[0], 1000, completion::OK, 8, 0);
    send_ok(&sent(&mut s.p), n, 8);
    // The rest come out in arrival order, the late one last.
    for i in 1..=n {
        s.p.b.post(CB, recv(VA_B, 8, 0, 0, 1000 + i));
        let c = received(&mut s.p, 1);
        recv_done(&c[0], 1000 + i, completion::OK, 8, i);
        assert_eq!(
            s.p.b.read_bytes(s.gpa_b, 8),
            pattern(4096, 1)[i as usize..][..8]
        );
    }
}

#[test]
fn a_lossy_wire_delivers_200_mixed_messages_in_order() {
    const N: u64 = 200;
    const SLOT: u64 = 8 << 10;
    let cfg = PairConfig::lossy(3, 4);
    let mut s = setup(&cfg, N * SLOT);
    let len = |i: u64| match i % 5 {
        0 => 0,
        1 => 1 + i as u32,
        2 => EAGER_MAX as u32,
        3 => 5000 + i as u32,
        _ => 700,
    };
    for i in 0..N {
        s.p.a
            .write_bytes(s.gpa_a + i * SLOT, &pattern(len(i) as usize, i as u8));
        // Receives for anything, posted first for half of the messages.
        if i < N / 2 {
            s.p.b.post(CB, recv(VA_B + i * SLOT, SLOT as u32, 0, 0, i));
        }
    }
    for i in 0..N {
        s.p.a.post(CA, send(VA_A + i * SLOT, len(i), i, i));
    }
    for i in N / 2..N {
        s.p.b.post(CB, recv(VA_B + i * SLOT, SLOT as u32, 0, 0, i));
    }
    let c = received(&mut s.p, N as usize);
    for (i, c) in (0..N).zip(&c) {
        recv_done(c, i, completion::OK, u64::from(len(i)), i);
        let got = s.p.b.read_bytes(s.gpa_b + i * SLOT, len(i) as usize);
        assert!(got == pattern(len(i) as usize, i as u8), "message {i}");
    }
    let sends = s.p.completions_on(false, CA, N as usize, LIMIT);
    for (i, c) in (0..N).zip(&sends) {
        send_ok(c, i, len(i));
    }
    let ta = s.p.a.core.fabric().unwrap().stats();
    assert!(ta.injected_drops > 0 && ta.retransmits > 0, "{ta:?}");
}

#[test]
fn ctx_disable_drops_receives_and_messages_without_completions() {
    const BIG: u32 = 64 << 10;
    let mut s = setup(&PairConfig::default(), u64::from(BIG));
    s.p.b.post(CB, recv(VA_B, 64, 1, u64::MAX, 1));
    s.p.b.post(CB, recv(VA_B, 64, 2, u64::MAX, 2));
    // A rendezvous message nobody receives: its SEND waits for a FIN.
    s.p.a.post(CA, send(VA_A, BIG, 3, 3));
    kept(&mut s.p, 1);
    for _ in 0..50 {
        s.p.poll();
    }
    assert!(s.p.a.completions(CA).is_empty(), "the sender waits");
    s.p.b.command(cmd::CTX_DISABLE, CB, 0, 0);
    s.p.b.run();
    // The receiver told the sender it will not take the message.
    let c = sent(&mut s.p);
    assert_eq!(
        (c.tag, c.status),
        (3, completion::REMOTE_NO_CONTEXT),
        "{c:?}"
    );
    // A message to the disabled context is refused.
    s.p.a.post(CA, send(VA_A, 8, 1, 4));
    let c = sent(&mut s.p);
    assert_eq!(
        (c.tag, c.status),
        (4, completion::REMOTE_NO_CONTEXT),
        "{c:?}"
    );
    assert!(
        s.p.b.completions(CB).is_empty(),
        "no completion for the receives"
    );
    assert_eq!(s.p.b.read_bytes(s.gpa_b, 64), vec![0; 64]);
    assert_eq!(rma(&s.p.b)[fabric_counter::FIN_SENT], 1);
}

#[test]
fn a_hostile_peer_changes_no_memory_and_is_counted() {
    use mnic_abi::fabric::{nak, ptype, FinHeader, RemoteAccess, ReplyHeader, RtsHeader};
    use mnic_abi::fabric::{EagerHeader, MAX_DATAGRAM};
    use mnic_device::fabric::wire;
    use zerocopy::{FromBytes, IntoBytes};

    const LEN: u32 = 5000;
    // Node 2's map has node 1 at the attacker's address.
    let mut h = Hostile::new();
    let b = &mut h.victim;
    b.setup_ctx(CB, 6, 6);
    let gpa_b = b.buffer(CB, VA_B, 3 * 4096);
    let before = pattern(3 * 4096, 8);
    b.write_bytes(gpa_b, &before);
    // A posted receive, and a rendezvous SEND of b's to the attacker's context.
    b.post(CB, recv(VA_B + 8192, 4096, 0, 0, 1));
    let to_attacker = Endpoint { node: 1, ctx: CA };
    b.post(CB, WorkDesc::send(0, 2, VA_B, LEN, to_attacker, 9));
    h.attacker
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; MAX_DATAGRAM];
    let rts = loop {
        b.core.poll(&b.mem());
        let Ok(n) = h.attacker.recv(&mut buf) else {
            continue;
        };
        let p = wire::parse(&buf[..n]).unwrap();
        if p.f.ptype == ptype::RTS {
            break RtsHeader::read_from_bytes(p.payload).unwrap();
        }
    };
    assert_eq!(
        (rts.va.get(), rts.msg_len.get(), rts.rkey.get()),
        (VA_B, LEN, 0)
    );
    let req_id = rts.req_id.get();

    // A packet of `op_len` bytes at offset `op_offset` of its pull.
    let pull_in = |va: u64, len: u32, req_id: u32, op_offset: u32, op_len: u32| {
        RemoteAccess {
            rkey: 0.into(),
            len: len.into(),
            va: va.into(),
            req_id: req_id.into(),
            op_offset: op_offset.into(),
            op_len: op_len.into(),
            reserved: 0.into(),
        }
        .as_bytes()
        .to_vec()
    };
    let pull = |va: u64, len: u32, req_id: u32| pull_in(va, len, req_id, 0, len);
    let fin = |req_id: u32| {
        FinHeader {
            req_id: req_id.into(),
            ..FinHeader::default()
        }
        .as_bytes()
        .to_vec()
    };
    let eager = |len: u32, data: usize, req_id: u32| {
        let mut p = EagerHeader {
            match_bits: 1.into(),
            msg_len: len.into(),
            req_id: req_id.into(),
        }
        .as_bytes()
        .to_vec();
        p.resize(p.len() + data, 0xee);
        p
    };
    // Pulls with the wrong id, outside the SEND's buffer, from another context.
    h.forge(ptype::GET_REQ, CA, CB, &pull(VA_B, 16, req_id + 1));
    h.forge(
        ptype::GET_REQ,
        CA,
        CB,
        &pull(VA_B + u64::from(LEN) - 8, 16, req_id),
    );
    h.forge(ptype::GET_REQ, CA + 1, CB, &pull(VA_B, 16, req_id));
    // A packet inside the buffer, of a pull that leaves it.
    h.forge(
        ptype::GET_REQ,
        CA,
        CB,
        &pull_in(VA_B + u64::from(LEN) - 16, 8, req_id, 0, 24),
    );
    // A FIN for nothing (the SEND waits for its REPLY, and the id is wrong anyway).
    h.forge(ptype::FIN, CA, CB, &fin(req_id));
    h.forge(ptype::FIN, CA, CB, &fin(req_id + 1));
    // Malformed: a truncated EAGER, one with id 0, a short FIN, an RTS with a key.
    h.forge(ptype::EAGER, CA, CB, &eager(100, 10, 5));
    h.forge(ptype::EAGER, CA, CB, &eager(10, 10, 0));
    h.forge(ptype::FIN, CA, CB, &fin(req_id)[..12]);
    let mut keyed = rts;
    keyed.rkey = 7.into();
    h.forge(ptype::RTS, CA, CB, keyed.as_bytes());

    let want = (4, 2, 4);
    let got = h.counted(want, LIMIT, |s| {
        (
            s[fabric_counter::REFUSED],
            s[fabric_counter::FIN_DROPPED],
            s[fabric_counter::PULL_REFUSED],
        )
    });
    assert_eq!(got, want, "(refused, FIN dropped, pulls refused)");
    let b = &mut h.victim;
    let s = rma(b);
    assert_eq!(
        (
            s[fabric_counter::PULL_SERVED],
            s[fabric_counter::EAGER_MATCHED],
            s[fabric_counter::UNEXPECTED]
        ),
        (0, 0, 0),
        "{s:?}"
    );
    assert_eq!(b.read_bytes(gpa_b, 3 * 4096), before, "memory unchanged");
    assert!(b.completions(CB).is_empty(), "nothing completed");
    // The pulls were answered BAD_KEY, and nothing was read for the attacker.
    let mut refused = std::collections::BTreeSet::new();
    while let Ok(n) = h.attacker.recv(&mut buf) {
        b.core.poll(&b.mem());
        let p = wire::parse(&buf[..n]).unwrap();
        assert_ne!(p.f.ptype, ptype::GET_RESP, "nothing read for the attacker");
        if p.f.ptype == ptype::REPLY {
            let h = ReplyHeader::read_from_bytes(p.payload).unwrap();
            if h.status.get() == nak::BAD_KEY {
                refused.insert(p.f.seq);
            }
        }
    }
    assert_eq!(refused.len(), 4, "four pulls answered BAD_KEY");
    // The SEND's own receiver ends it properly: REPLY OK, then FIN.
    let ok = ReplyHeader {
        req_id: req_id.into(),
        ..ReplyHeader::default()
    };
    h.forge(ptype::REPLY, CA, CB, ok.as_bytes());
    h.forge(ptype::FIN, CA, CB, &fin(req_id));
    let b = &mut h.victim;
    let t = std::time::Instant::now();
    let c = loop {
        b.core.poll(&b.mem());
        if let Some(c) = b.completions(CB).pop() {
            break c;
        }
        assert!(t.elapsed() < LIMIT, "no completion");
        std::thread::sleep(Duration::from_micros(200));
    };
    assert_eq!(
        (c.tag, c.status, c.bytes),
        (2, completion::OK, u64::from(LEN))
    );
    assert_eq!(b.counter(counter::ERRORS), 0);
    assert_eq!(b.sync(3), 3, "the device serves its driver");
}

#[test]
fn two_contexts_exchange_rendezvous_messages_both_ways() {
    // Each side's SEND waits for the other's pull: deliveries must not wait behind it.
    // The receives are posted first: a RECV behind a rendezvous SEND in the same queue is
    // fetched only once that SEND completes (docs/fabric.md 14.14).
    const LEN: u32 = 256 << 10;
    let mut s = setup(&PairConfig::default(), 2 * u64::from(LEN));
    let (to_a, back) = (pattern(LEN as usize, 1), pattern(LEN as usize, 2));
    s.p.a.write_bytes(s.gpa_a, &to_a);
    s.p.b.write_bytes(s.gpa_b, &back);
    let here = u64::from(LEN);
    s.p.a.post(CA, recv(VA_A + here, LEN, 2, u64::MAX, 2));
    s.p.a.post(CA, send(VA_A, LEN, 1, 1));
    s.p.b.post(CB, recv(VA_B + here, LEN, 1, u64::MAX, 4));
    s.p.b.post(CB, WorkDesc::send(0, 3, VA_B, LEN, FROM_A, 2));
    let mut a = s.p.completions_on(false, CA, 2, LIMIT);
    let mut b = s.p.completions_on(true, CB, 2, LIMIT);
    a.sort_by_key(|c| c.tag);
    b.sort_by_key(|c| c.tag);
    assert_eq!(
        a.iter().map(|c| (c.tag, c.status)).collect::<Vec<_>>(),
        [(1, 0), (2, 0)]
    );
    assert_eq!(
        b.iter().map(|c| (c.tag, c.status)).collect::<Vec<_>>(),
        [(3, 0), (4, 0)]
    );
    assert!(s.p.a.read_bytes(s.gpa_a + here, LEN as usize) == back);
    assert!(s.p.b.read_bytes(s.gpa_b + here, LEN as usize) == to_a);
}

#[test]
fn an_aborted_fault_of_a_pull_fails_both_ends() {
    const EIO: u64 = 5;
    const LEN: u32 = 3 << 12;
    let mut s = setup(&PairConfig::default(), u64::from(LEN));
    s.p.b.unmap(CB, VA_B + 4096);
    s.p.b.post(CB, recv(VA_B, LEN, 1, u64::MAX, 1));
    s.p.a.post(CA, send(VA_A, LEN, 1, 2));
    let e = fault(&mut s.p, true);
    assert_eq!((e.info, e.addr & !0xfff), (0, VA_B + 4096));
    s.p.b.command(cmd::ABORT, CB, e.id, EIO);
    let c = received(&mut s.p, 1);
    assert_eq!(
        (c[0].tag, c[0].status, c[0].detail, c[0].fault_va & !0xfff),
        (1, completion::FAULT_ABORTED, EIO as u32, VA_B + 4096),
        "{c:?}"
    );
    let c = sent(&mut s.p);
    assert_eq!(
        (c.tag, c.status, c.detail),
        (2, completion::REMOTE_FAULT_ABORTED, EIO as u32),
        "{c:?}"
    );
    // Both contexts run on.
    s.p.b.post(CB, recv(VA_B, 8, 5, u64::MAX, 3));
    s.p.a.post(CA, send(VA_A, 8, 5, 4));
    recv_done(&received(&mut s.p, 1)[0], 3, completion::OK, 8, 5);
    send_ok(&sent(&mut s.p), 4, 8);
}
