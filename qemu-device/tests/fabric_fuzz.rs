//! A connected peer that sends random operation packets (docs/fabric.md 14.13 and 14.14,
//! "Hostile peers"): the datagrams are well-formed for the transport (the right node,
//! epoch and sequence numbers, so every one is delivered to the operation layer), their
//! payloads are random bytes or random variations of the real shapes (`RemoteAccess`
//! with the real key or a wrong one, any VA near the buffer, lengths that disagree,
//! operation ranges that leave the key, truncations), sent to the target context and to
//! others. The target holds one key over the middle page of three. Whatever arrives:
//! the device keeps serving, the pages outside the key keep every byte, and nothing the
//! peer gets back was read outside the key.
//!
//! The transport's own parsing of random datagrams is `src/fabric/wire.rs`'s proptest;
//! the specific forgeries are in `tests/rma.rs` and `tests/msg.rs`.

use std::time::{Duration, Instant};

use mnic_abi::fabric::{
    ptype, EagerHeader, FinHeader, GetRespHeader, RemoteAccess, ReplyHeader, RtsHeader, MAX_PAYLOAD,
};
use mnic_abi::{counter, fabric_counter, key_access, NUM_CONTEXTS};
use mnic_device::testkit::{pattern, Hostile};
use proptest::prelude::Rng;
use proptest::test_runner::{RngAlgorithm, TestRng};
use zerocopy::{FromBytes, IntoBytes};

/// The attacker's context on node 1, the target's on node 2.
const CA: u16 = 1;
const CB: u16 = 3;
const VA_B: u64 = 0x2000_0000;
const PAGE: u64 = 4096;
const KEY: u32 = 0x5eed_0001;
/// Datagrams sent in all, and between two waits for the victim to take them (well inside
/// the receive window, so none is dropped for arriving too early).
const DATAGRAMS: usize = 20_000;
const PACE: usize = 32;
const LIMIT: Duration = Duration::from_secs(10);

/// The operation packet types.
const TYPES: [u8; 7] = [
    ptype::EAGER,
    ptype::GET_REQ,
    ptype::GET_RESP,
    ptype::REPLY,
    ptype::PUT,
    ptype::RTS,
    ptype::FIN,
];

fn below(rng: &mut TestRng, n: u64) -> u64 {
    rng.next_u64() % n
}

fn random_bytes(rng: &mut TestRng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

/// A VA from a page before the buffer to a page after it, with room for `len` bytes
/// before its page ends when `fit`.
fn near_va(rng: &mut TestRng, len: u64, fit: bool) -> u64 {
    let page = VA_B - PAGE + below(rng, 5) * PAGE;
    let room = if fit {
        PAGE.saturating_sub(len) + 1
    } else {
        PAGE
    };
    page + below(rng, room)
}

/// A `RemoteAccess` (a `PUT`'s data after it when `put`), plausible or not: the real key
/// mostly, lengths that fit a page mostly, and operations that sometimes leave the key.
fn remote_access(rng: &mut TestRng, put: bool) -> Vec<u8> {
    let len = match below(rng, 3) {
        0 => 1 + below(rng, 16),
        1 => 1 + below(rng, 1400),
        _ => below(rng, 5000),
    };
    let fit = below(rng, 4) != 0;
    let va = near_va(rng, len, fit);
    let op_offset = match below(rng, 3) {
        0 => below(rng, 2 * PAGE),
        _ => 0,
    };
    let op_len = match below(rng, 4) {
        0 | 1 => op_offset + len,
        2 => op_offset + len + below(rng, 2 * PAGE),
        _ => below(rng, 3 * PAGE),
    };
    let rkey = match below(rng, 8) {
        0 => 0,
        1 => rng.next_u32(),
        _ => KEY,
    };
    let ra = RemoteAccess {
        rkey: rkey.into(),
        len: (len as u32).into(),
        va: va.into(),
        req_id: (1 + rng.next_u32() % 4).into(),
        op_offset: (op_offset as u32).into(),
        op_len: (op_len as u32).into(),
        reserved: 0.into(),
    };
    let mut p = ra.as_bytes().to_vec();
    if put {
        let n = (len as usize).min(MAX_PAYLOAD - p.len());
        p.extend(random_bytes(rng, n));
    }
    p
}

/// A payload of the shape type `t` has, with plausible fields.
fn shaped(rng: &mut TestRng, t: u8) -> Vec<u8> {
    let req_id = (1 + rng.next_u32() % 4).into();
    match t {
        ptype::PUT => remote_access(rng, true),
        ptype::GET_REQ => remote_access(rng, false),
        ptype::EAGER => {
            let n = below(rng, 200) as usize;
            let mut p = EagerHeader {
                match_bits: below(rng, 4).into(),
                msg_len: (n as u32).into(),
                req_id,
            }
            .as_bytes()
            .to_vec();
            p.extend(random_bytes(rng, n));
            p
        }
        ptype::RTS => RtsHeader {
            match_bits: below(rng, 4).into(),
            msg_len: (below(rng, 1 << 20) as u32).into(),
            rkey: 0.into(),
            va: near_va(rng, 0, false).into(),
            req_id,
            reserved: 0.into(),
        }
        .as_bytes()
        .to_vec(),
        ptype::FIN => FinHeader {
            req_id,
            status: (below(rng, 10) as u16).into(),
            ..FinHeader::default()
        }
        .as_bytes()
        .to_vec(),
        ptype::REPLY => ReplyHeader {
            req_id,
            status: (below(rng, 10) as u16).into(),
            va: near_va(rng, 0, false).into(),
            ..ReplyHeader::default()
        }
        .as_bytes()
        .to_vec(),
        _ => {
            let mut p = GetRespHeader {
                req_id,
                reserved: 0.into(),
                va: near_va(rng, 0, false).into(),
            }
            .as_bytes()
            .to_vec();
            let n = below(rng, 1400) as usize;
            p.extend(random_bytes(rng, n));
            p
        }
    }
}

/// One packet: its type, its target context and its payload: shaped for its type, or
/// that with a byte changed, cut short, or random bytes.
fn random_packet(rng: &mut TestRng) -> (u8, u16, Vec<u8>) {
    let t = TYPES[below(rng, TYPES.len() as u64) as usize];
    let ctx = match below(rng, 8) {
        // Any context the transport carries (one beyond them is its refusal, tested there).
        0 => below(rng, u64::from(NUM_CONTEXTS)) as u16,
        1 => CA,
        _ => CB,
    };
    let mut p = shaped(rng, t);
    match below(rng, 8) {
        0 if !p.is_empty() => {
            let i = below(rng, p.len() as u64) as usize;
            p[i] ^= 1 << below(rng, 8);
        }
        1 => p.truncate(below(rng, p.len() as u64 + 1) as usize),
        2 => {
            let n = below(rng, MAX_PAYLOAD as u64 + 1) as usize;
            p = random_bytes(rng, n);
        }
        _ => {}
    }
    (t, ctx, p)
}

/// Polls the victim until its transport has delivered `sent` forged packets and it has
/// served them, acknowledging what it sent back; collects what it sent.
fn settle(h: &mut Hostile, sent: u64, back: &mut Vec<(u8, Vec<u8>)>) {
    let start = Instant::now();
    loop {
        let b = &mut h.victim;
        b.core.poll(&b.mem());
        let delivered = b.core.fabric().unwrap().stats().delivered;
        back.extend(h.take_and_ack());
        if delivered >= sent {
            // One more round serves what the last poll took, then its answers.
            let b = &mut h.victim;
            b.core.poll(&b.mem());
            back.extend(h.take_and_ack());
            return;
        }
        assert!(
            start.elapsed() < LIMIT,
            "the victim delivered {delivered} of {sent} forged packets: {:?}",
            h.victim.core.fabric().unwrap().stats()
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

#[test]
fn random_operation_packets_reach_only_the_keyed_page_and_the_device_keeps_serving() {
    let mut h = Hostile::new();
    let b = &mut h.victim;
    b.setup_ctx(CB, 4, 4);
    let gpa = b.buffer(CB, VA_B, 3 * PAGE);
    b.key_set(
        CB,
        VA_B + PAGE,
        PAGE,
        KEY,
        key_access::READ | key_access::WRITE,
    );
    b.run();
    assert_eq!(b.counter(counter::ERRORS), 0, "KEY_SET taken");
    let before = pattern(3 * PAGE as usize, 9);
    b.write_bytes(gpa, &before);

    let mut rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
    let mut back = Vec::new();
    for i in 1..=DATAGRAMS {
        let (t, ctx, payload) = random_packet(&mut rng);
        h.forge(t, CA, ctx, &payload);
        if i % PACE == 0 || i == DATAGRAMS {
            settle(&mut h, i as u64, &mut back);
        }
    }

    let b = &mut h.victim;
    let after = b.read_bytes(gpa, 3 * PAGE as usize);
    let (p, q) = (PAGE as usize, 2 * PAGE as usize);
    assert!(after[..p] == before[..p], "the page before the key changed");
    assert!(after[q..] == before[q..], "the page after the key changed");
    let mut read_back = 0;
    for (t, payload) in &back {
        if *t != ptype::GET_RESP {
            continue;
        }
        let (h, data) = GetRespHeader::read_from_prefix(payload).unwrap();
        let (start, end) = (h.va.get(), h.va.get() + data.len() as u64);
        assert!(
            start >= VA_B + PAGE && end <= VA_B + 2 * PAGE,
            "read outside the key: [{start:#x}, {end:#x})"
        );
        read_back += 1;
    }

    // Not vacuous: the random packets reached every branch, served and refused.
    let s = b.core.shared().rma.snapshot();
    assert!(
        s[fabric_counter::PUT_SERVED] > 0 && s[fabric_counter::GET_SERVED] > 0 && read_back > 0,
        "nothing served: {s:?}"
    );
    assert!(
        s[fabric_counter::REFUSED] > 0
            && s[fabric_counter::ERRORS_SENT] > 0
            && s[fabric_counter::LATE] > 0,
        "{s:?}"
    );
    assert!(s[fabric_counter::UNEXPECTED] > 0, "no message kept: {s:?}");
    assert!(
        after[p..q] != before[p..q],
        "no PUT landed in the keyed page"
    );
    // The device serves its driver, and no error of its own was raised.
    assert_eq!(b.sync(5), 5);
    assert_eq!(b.counter(counter::ERRORS), 0);
}
