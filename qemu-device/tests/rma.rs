//! PUT and GET between two devices (docs/fabric.md 14.13): two device cores on memfd
//! guest RAM, with translation tables built by hand, nodes 1 and 2 of a fabric of two
//! real transports on 127.0.0.1 (ephemeral ports), polled by the test. Data is compared
//! byte for byte; faults at the target are resolved by the test playing the target's
//! driver; errors come back as the specified completion statuses; a hostile peer changes
//! nothing. Every wait is bounded; timings are shortened where a test waits for them.

use std::time::Duration;

use mnic_abi::{cmd, completion, counter, event, key_access, work};
use mnic_abi::{Completion, Remote, WorkDesc};
use mnic_device::engine::NETWORK_FAULT;
use mnic_device::mem;
use mnic_device::testkit::{Harness, Pair, PairConfig};

/// Longest wait for one completion.
const LIMIT: Duration = Duration::from_secs(10);
/// The initiator's context on node 1, the target's on node 2.
const CA: u16 = 1;
const CB: u16 = 3;
/// Where the buffers are mapped: the initiator's, the target's.
const VA_A: u64 = 0x1000_0000;
const VA_B: u64 = 0x2000_0000;
/// The target's remote key.
const KEY: u32 = 0x5eed_0001;
const RW: u64 = key_access::READ | key_access::WRITE;

/// A buffer of `len` bytes mapped at `va` of `ctx`: its GPA.
fn buffer(h: &mut Harness, ctx: u16, va: u64, len: u64) -> u64 {
    let gpa = h.alloc(len, false);
    h.map(ctx, va, gpa, len.next_multiple_of(4096), true);
    gpa
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

fn read(h: &Harness, gpa: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    mem::read(&h.mem(), gpa, &mut b).unwrap();
    b
}

fn write(h: &Harness, gpa: u64, data: &[u8]) {
    mem::write(&h.mem(), gpa, data).unwrap();
}

/// The two devices with a context each, a buffer of `len` bytes on both sides (at
/// `VA_A + off_a`, `VA_B + off_b`) and the target's key over its buffer with `access`;
/// returns (pair, GPA of a's buffer, GPA of b's buffer).
struct Setup {
    p: Pair,
    gpa_a: u64,
    gpa_b: u64,
}

fn setup(cfg: &PairConfig, span: u64, access: u64) -> Setup {
    let mut p = Pair::new(cfg);
    p.a.setup_ctx(CA, 6, 6);
    p.b.setup_ctx(CB, 6, 6);
    let gpa_a = buffer(&mut p.a, CA, VA_A, span);
    let gpa_b = buffer(&mut p.b, CB, VA_B, span);
    p.b.key_set(CB, VA_B, span, KEY, access);
    p.b.run();
    assert_eq!(p.b.counter(counter::ERRORS), 0, "KEY_SET taken");
    Setup { p, gpa_a, gpa_b }
}

fn remote(va: u64) -> Remote {
    Remote {
        node: 2,
        ctx: CB,
        key: KEY,
        va,
    }
}

fn put(local: u64, remote_va: u64, len: u32, tag: u64) -> WorkDesc {
    WorkDesc::rma(
        work::PUT,
        work::FLAG_NOTIFY,
        tag,
        local,
        remote(remote_va),
        len,
    )
}

fn get(local: u64, remote_va: u64, len: u32, tag: u64) -> WorkDesc {
    WorkDesc::rma(
        work::GET,
        work::FLAG_NOTIFY,
        tag,
        local,
        remote(remote_va),
        len,
    )
}

/// Posts `d` on a's context and polls until it completes.
fn run(p: &mut Pair, d: WorkDesc) -> Completion {
    p.a.post(CA, d);
    let c = p.completion(CA, LIMIT);
    assert_eq!(c.tag, d.tag);
    c
}

fn ok(c: &Completion, len: u32) {
    assert_eq!(
        (c.status, c.bytes, c.detail, c.fault_va),
        (completion::OK, u64::from(len), 0, 0),
        "{c:?}"
    );
}

#[test]
fn put_and_get_move_every_size_intact() {
    const SPAN: u64 = (1 << 20) + 3 * 4096;
    let mut s = setup(&PairConfig::default(), SPAN, RW);
    let mut tag = 0;
    // Sizes around a packet and a page, at offsets that make packets cross neither.
    for (len, off_a, off_b) in [
        (1u32, 0u64, 0u64),
        (1408, 5, 17),
        (1409, 0, 4090),
        (4096 + 7, 4093, 1),
        (1 << 20, 0, 0),
        (1 << 20, 100, 3000),
    ] {
        let data = pattern(len as usize, tag as u8);
        write(&s.p.a, s.gpa_a + off_a, &data);
        tag += 1;
        let c = run(&mut s.p, put(VA_A + off_a, VA_B + off_b, len, tag));
        ok(&c, len);
        assert_eq!(
            read(&s.p.b, s.gpa_b + off_b, len as usize),
            data,
            "PUT {len}"
        );

        // And back: GET it into a zeroed buffer of a's.
        write(&s.p.a, s.gpa_a, &vec![0; SPAN as usize]);
        tag += 1;
        let c = run(&mut s.p, get(VA_A + off_b, VA_B + off_b, len, tag));
        ok(&c, len);
        assert_eq!(
            read(&s.p.a, s.gpa_a + off_b, len as usize),
            data,
            "GET {len}"
        );
    }
    let (sa, sb) = (
        s.p.a.core.shared().rma.snapshot(),
        s.p.b.core.shared().rma.snapshot(),
    );
    assert!(sb.put_served > 0 && sb.get_served > 0, "{sb:?}");
    assert_eq!(
        sa.packets_sent,
        sb.put_served + sb.get_served,
        "{sa:?} {sb:?}"
    );
    assert_eq!((sa.late, sa.refused, sb.refused, sb.rnr_sent), (0, 0, 0, 0));
    // Network accesses are DMA: counted at both ends.
    assert!(s.p.b.counter(counter::DMA_BYTES) >= 2 * (1 << 20));
    for h in [&s.p.a, &s.p.b] {
        assert_eq!(h.counter(counter::STALE_ACCESSES), 0);
        assert_eq!(h.counter(counter::ERRORS), 0);
    }
}
