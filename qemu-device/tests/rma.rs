//! PUT and GET between two devices (docs/fabric.md 14.13): two device cores on memfd
//! guest RAM, with translation tables built by hand, nodes 1 and 2 of a fabric of two
//! real transports on 127.0.0.1 (ephemeral ports), polled by the test. Data is compared
//! byte for byte; faults at the target are resolved by the test playing the target's
//! driver; errors come back as the specified completion statuses; a hostile peer changes
//! nothing. Every wait is bounded; timings are shortened where a test waits for them.

use std::time::Duration;

use mnic_abi::fabric::PUT_CHUNK;
use mnic_abi::{cmd, completion, counter, error, event, fabric_counter, key_access, work};
use mnic_abi::{Command, Completion, Event, Remote, WorkDesc};
use mnic_device::engine::NETWORK_FAULT;
use mnic_device::testkit::{pattern, Harness, Hostile, Pair, PairConfig};

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
/// The errnos a target's driver refuses a fault with (an mprotect'd range, a failed read,
/// a page gone).
const EPERM: u64 = 1;
const EIO: u64 = 5;
const EFAULT: u64 = 14;

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
    let gpa_a = p.a.buffer(CA, VA_A, span);
    let gpa_b = p.b.buffer(CB, VA_B, span);
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
        (PUT_CHUNK as u32, 5, 17),
        (PUT_CHUNK as u32 + 1, 0, 4090),
        (4096 + 7, 4093, 1),
        (1 << 20, 0, 0),
        (1 << 20, 100, 3000),
    ] {
        let data = pattern(len as usize, tag as u8);
        s.p.a.write_bytes(s.gpa_a + off_a, &data);
        tag += 1;
        let c = run(&mut s.p, put(VA_A + off_a, VA_B + off_b, len, tag));
        ok(&c, len);
        assert_eq!(
            s.p.b.read_bytes(s.gpa_b + off_b, len as usize),
            data,
            "PUT {len}"
        );

        // And back: GET it into a zeroed buffer of a's.
        s.p.a.write_bytes(s.gpa_a, &vec![0; SPAN as usize]);
        tag += 1;
        let c = run(&mut s.p, get(VA_A + off_b, VA_B + off_b, len, tag));
        ok(&c, len);
        assert_eq!(
            s.p.a.read_bytes(s.gpa_a + off_b, len as usize),
            data,
            "GET {len}"
        );
    }
    let (sa, sb) = (
        s.p.a.core.shared().rma.snapshot(),
        s.p.b.core.shared().rma.snapshot(),
    );
    assert!(
        sb[fabric_counter::PUT_SERVED] > 0 && sb[fabric_counter::GET_SERVED] > 0,
        "{sb:?}"
    );
    assert_eq!(
        sa[fabric_counter::PACKETS_SENT],
        sb[fabric_counter::PUT_SERVED] + sb[fabric_counter::GET_SERVED],
        "{sa:?} {sb:?}"
    );
    assert_eq!(
        (
            sa[fabric_counter::LATE],
            sa[fabric_counter::REFUSED],
            sb[fabric_counter::REFUSED],
            sb[fabric_counter::RNR_SENT]
        ),
        (0, 0, 0, 0)
    );
    // The guest sees the same statistics in BAR0's FABRIC_COUNTER registers (spec §10).
    assert_eq!(
        s.p.a.fabric_counters(),
        sa.values(),
        "initiator's registers"
    );
    assert_eq!(s.p.b.fabric_counters(), sb.values(), "target's registers");
    // Network accesses are DMA: counted at both ends.
    assert!(s.p.b.counter(counter::DMA_BYTES) >= 2 * (1 << 20));
    for h in [&s.p.a, &s.p.b] {
        assert_eq!(h.counter(counter::STALE_ACCESSES), 0);
        assert_eq!(h.counter(counter::ERRORS), 0);
    }
}

/// Polls until the target `b` posts a FAULT event (consuming its events).
fn target_fault(p: &mut Pair) -> Event {
    p.until(LIMIT, |p| {
        p.b.events().into_iter().find(|e| e.kind == event::FAULT)
    })
}

/// Posts `d` on a's context and polls until the target parks its FAULT.
fn post_to_fault(s: &mut Setup, d: WorkDesc) -> Event {
    s.p.a.post(CA, d);
    target_fault(&mut s.p)
}

/// The target's driver refuses fault `e` with `errno` (ABORT): the initiator's item ends
/// `REMOTE_FAULT_ABORTED` with that errno.
fn target_refuses(s: &mut Setup, e: &Event, errno: u64) -> Completion {
    s.p.b.command(cmd::ABORT, CB, e.id, errno);
    let c = s.p.completion(CA, LIMIT);
    assert_eq!(
        (c.status, u64::from(c.detail)),
        (completion::REMOTE_FAULT_ABORTED, errno),
        "{c:?}"
    );
    c
}

/// The target's driver resolves fault `e`: it maps the page at `off` in its buffer
/// (`writable` or not) and resumes.
fn target_resolves(s: &mut Setup, e: &Event, off: u64, writable: bool) {
    s.p.b.map(CB, VA_B + off, s.gpa_b + off, 4096, writable);
    s.p.b.command(cmd::RESUME, CB, e.id, 0);
}

/// The PUT of three pages whose middle page is missing at the target: the FAULT the
/// target parks is a network fault of node 1 at that page.
fn put_into_a_missing_page(cfg: &PairConfig) -> (Setup, Vec<u8>, Event) {
    let mut s = setup(cfg, 3 * 4096, RW);
    s.p.b.unmap(CB, VA_B + 4096);
    let data = pattern(3 * 4096, 9);
    s.p.a.write_bytes(s.gpa_a, &data);
    let e = post_to_fault(&mut s, put(VA_A, VA_B, 3 * 4096, 1));
    assert_eq!(e.ctx, CB);
    assert_eq!(e.info, NETWORK_FAULT | 1, "a network fault of node 1");
    assert_eq!(e.addr & !0xfff, VA_B + 4096);
    assert_ne!(e.flags & event::FLAG_WRITE, 0);
    (s, data, e)
}

#[test]
fn a_fault_at_the_target_is_answered_rnr_until_its_driver_resumes() {
    let (mut s, data, e) = put_into_a_missing_page(&PairConfig::default());
    // Nothing was written into the missing page's frame meanwhile.
    assert_eq!(s.p.b.read_bytes(s.gpa_b + 4096, 4096), vec![0; 4096]);
    // The driver fills the leaf and resumes: the retried packets land.
    target_resolves(&mut s, &e, 4096, true);
    ok(&s.p.completion(CA, LIMIT), 3 * 4096);
    assert_eq!(s.p.b.read_bytes(s.gpa_b, 3 * 4096), data);
    let (sa, sb) = (
        s.p.a.core.shared().rma.snapshot(),
        s.p.b.core.shared().rma.snapshot(),
    );
    assert!(
        sa[fabric_counter::RNR_RECEIVED] >= 1 && sa[fabric_counter::RESENDS] >= 1,
        "{sa:?}"
    );
    assert_eq!(
        sb[fabric_counter::RNR_SENT],
        sa[fabric_counter::RNR_RECEIVED]
    );
    assert_eq!(
        sb[fabric_counter::NETWORK_FAULTS],
        1,
        "one fault per context: {sb:?}"
    );
    assert_eq!(s.p.b.counter(counter::FAULTS), 1);
    assert_eq!(s.p.b.counter(counter::RESUMES), 1);
}

#[test]
fn an_aborted_network_fault_fails_the_put_with_the_target_errno() {
    let (mut s, data, e) = put_into_a_missing_page(&PairConfig::default());
    let c = target_refuses(&mut s, &e, EIO);
    assert_eq!(c.fault_va & !0xfff, VA_B + 4096, "the packet that failed");
    assert!(c.bytes < 3 * 4096);
    // The pages that were there got their data; the missing one nothing.
    assert_eq!(s.p.b.read_bytes(s.gpa_b, 4096), data[..4096]);
    assert_eq!(s.p.b.read_bytes(s.gpa_b + 4096, 4096), vec![0; 4096]);
    assert_eq!(s.p.b.counter(counter::ABORTS), 1);
    // The target's context runs on: a PUT into its other pages still works.
    let c = run(&mut s.p, put(VA_A, VA_B + 8192, 4096, 2));
    ok(&c, 4096);
}

#[test]
fn an_aborted_write_fault_refuses_no_read_of_the_page() {
    // A PUT into a read-only page faults for write; the target's driver refuses it
    // (EPERM, as for an mprotect(PROT_READ) range).
    let mut s = setup(&PairConfig::default(), 4096, RW);
    let old = pattern(4096, 4);
    s.p.b.write_bytes(s.gpa_b, &old);
    s.p.b.map(CB, VA_B, s.gpa_b, 4096, false);
    let e = post_to_fault(&mut s, put(VA_A, VA_B, 4096, 1));
    assert_ne!(e.flags & event::FLAG_WRITE, 0);
    target_refuses(&mut s, &e, EPERM);
    // The page then leaves the device's table (an invalidation): a GET of it faults for
    // read, and that fault is the driver's to resolve, not refused by the write's ABORT.
    s.p.b.unmap(CB, VA_B);
    s.p.b.command(cmd::INVALIDATE_CTX, CB, 0, 0);
    s.p.b.run();
    let e = post_to_fault(&mut s, get(VA_A, VA_B, 4096, 2));
    assert_eq!(e.flags & event::FLAG_WRITE, 0, "a read fault: {e:?}");
    target_resolves(&mut s, &e, 0, false);
    ok(&s.p.completion(CA, LIMIT), 4096);
    assert_eq!(s.p.a.read_bytes(s.gpa_a, 4096), old);
}

#[test]
fn an_abort_answers_its_operation_and_a_later_one_is_asked_again() {
    // The page is not in the device's table (an mprotect(PROT_READ) took it away); the
    // driver refuses the PUT's write fault with EPERM.
    let mut s = setup(&PairConfig::default(), 4096, RW);
    s.p.b.unmap(CB, VA_B);
    let data = pattern(4096, 6);
    s.p.a.write_bytes(s.gpa_a, &data);
    let e = post_to_fault(&mut s, put(VA_A, VA_B, 4096, 1));
    target_refuses(&mut s, &e, EPERM);
    // The target makes the page writable again (mprotect back): the next PUT is a new
    // operation, and its fault goes to the driver instead of being refused by the old
    // answer.
    let e = post_to_fault(&mut s, put(VA_A, VA_B, 4096, 2));
    assert_ne!(e.flags & event::FLAG_WRITE, 0, "{e:?}");
    target_resolves(&mut s, &e, 0, true);
    ok(&s.p.completion(CA, LIMIT), 4096);
    assert_eq!(s.p.b.read_bytes(s.gpa_b, 4096), data);
}

#[test]
fn a_context_the_device_stopped_keeps_its_keys_until_ctx_disable() {
    let mut s = setup(&PairConfig::default(), 4096, RW);
    // The target's work queue page goes away and its descriptor fetch is aborted: the
    // device stops the context on its own.
    s.p.b.unmap(CB, mnic_device::testkit::WQ_VA);
    s.p.b.post(
        CB,
        WorkDesc {
            opcode: work::NOP,
            tag: 9,
            ..Default::default()
        },
    );
    let e = target_fault(&mut s.p);
    s.p.b.command(cmd::ABORT, CB, e.id, EFAULT);
    s.p.b.run();
    // The stop itself is reported (BAD_CONTEXT, spec §12).
    let errors = s.p.b.counter(counter::ERRORS);
    assert!(errors >= 1);
    fails_with(&mut s, put(VA_A, VA_B, 8, 1), completion::REMOTE_NO_CONTEXT);
    // The driver still clears the key it gave (deregistration): the device holds it.
    s.p.b.key_clear(CB, KEY);
    s.p.b.run();
    assert_eq!(
        s.p.b.counter(counter::ERRORS),
        errors,
        "KEY_CLEAR of a stopped context's key is no error"
    );
    // And once CTX_DISABLE has run, the key is gone.
    s.p.b.key_set(CB, VA_B, 4096, KEY, RW);
    s.p.b.run();
    assert_eq!(
        s.p.b.counter(counter::ERRORS),
        errors + 1,
        "KEY_SET on a stopped context"
    );
    s.p.b.command(cmd::CTX_DISABLE, CB, 0, 0);
    s.p.b.run();
    s.p.b.key_clear(CB, KEY);
    s.p.b.run();
    assert_eq!(
        s.p.b.counter(counter::ERRORS),
        errors + 2,
        "the key went with CTX_DISABLE"
    );
}

#[test]
fn rnr_in_a_row_fails_the_item_when_the_fault_is_never_answered() {
    let cfg = PairConfig {
        rma: mnic_device::engine::RmaTiming {
            rnr_backoff: Duration::from_micros(100),
            rnr_backoff_max: Duration::from_micros(400),
            rnr_retries: 5,
            ..Default::default()
        },
        ..PairConfig::default()
    };
    let (mut s, _, _) = put_into_a_missing_page(&cfg);
    let c = s.p.completion(CA, LIMIT);
    assert_eq!(c.status, completion::RNR_RETRY_EXCEEDED, "{c:?}");
    assert_eq!(c.fault_va & !0xfff, VA_B + 4096);
    assert!(s.p.a.core.shared().rma.snapshot()[fabric_counter::RNR_RECEIVED] >= 5);
}

/// One item from a to b that fails at the target's checks with `status`.
fn fails_with(s: &mut Setup, d: WorkDesc, status: u16) {
    let before = s.p.b.read_bytes(s.gpa_b, 8192);
    let c = run(&mut s.p, d);
    assert_eq!(c.status, status, "{c:?}");
    assert_eq!((c.bytes, c.detail), (0, 0), "{c:?}");
    assert_eq!(c.fault_va, d.remote().va, "{c:?}");
    assert_eq!(
        s.p.b.read_bytes(s.gpa_b, 8192),
        before,
        "target memory unchanged"
    );
}

#[test]
fn the_target_checks_context_key_range_and_access() {
    // The key covers 3000 bytes of the first page only, for reading.
    let mut s = setup(&PairConfig::default(), 8192, key_access::READ);
    s.p.b.key_clear(CB, KEY);
    s.p.b.key_set(CB, VA_B, 3000, KEY, key_access::READ);
    s.p.b.run();
    s.p.a.write_bytes(s.gpa_a, &pattern(8192, 3));
    let with = |d: WorkDesc, f: &dyn Fn(&mut WorkDesc)| {
        let mut d = d;
        f(&mut d);
        d
    };
    let bad_key = with(put(VA_A, VA_B, 100, 1), &|d| d.op_size = KEY ^ 1);
    fails_with(&mut s, bad_key, completion::REMOTE_BAD_KEY);
    let beyond = get(VA_A, VA_B + 4096, 100, 2);
    fails_with(&mut s, beyond, completion::REMOTE_BAD_RANGE);
    let inside = get(VA_A, VA_B + 2900, 100, 3);
    let c = run(&mut s.p, inside);
    assert_eq!(c.status, completion::OK, "inside: {c:?}");
    let straddles = get(VA_A, VA_B + 2950, 100, 4);
    fails_with(&mut s, straddles, completion::REMOTE_BAD_RANGE);
    fails_with(
        &mut s,
        put(VA_A, VA_B, 100, 5),
        completion::REMOTE_BAD_ACCESS,
    );
    let other_ctx = with(put(VA_A, VA_B, 100, 6), &|d| d.pattern = 2 | 7 << 16);
    fails_with(&mut s, other_ctx, completion::REMOTE_NO_CONTEXT);
    let sb = s.p.b.core.shared().rma.snapshot();
    assert_eq!(sb[fabric_counter::ERRORS_SENT], 5, "{sb:?}");
}

#[test]
fn an_operation_that_leaves_the_key_writes_and_reads_nothing() {
    // Both target pages translated writable; the key covers the first one only. Each
    // operation straddles the key's end, so its first packet lies inside the key.
    let mut s = setup(&PairConfig::default(), 8192, RW);
    s.p.b.key_clear(CB, KEY);
    s.p.b.key_set(CB, VA_B, 4096, KEY, RW);
    s.p.b.run();
    s.p.a.write_bytes(s.gpa_a, &pattern(8192, 4));
    s.p.b.write_bytes(s.gpa_b, &pattern(8192, 5));
    let local_before = s.p.a.read_bytes(s.gpa_a, 8192);
    fails_with(
        &mut s,
        put(VA_A, VA_B + 4088, 16, 1),
        completion::REMOTE_BAD_RANGE,
    );
    fails_with(
        &mut s,
        get(VA_A + 4088, VA_B + 4088, 16, 2),
        completion::REMOTE_BAD_RANGE,
    );
    assert_eq!(
        s.p.a.read_bytes(s.gpa_a, 8192),
        local_before,
        "the GET wrote nothing locally"
    );
    let sb = s.p.b.core.shared().rma.snapshot();
    assert_eq!(
        (
            sb[fabric_counter::PUT_SERVED],
            sb[fabric_counter::GET_SERVED]
        ),
        (0, 0),
        "{sb:?}"
    );
    // Inside the key, the same page is served.
    ok(&run(&mut s.p, put(VA_A, VA_B + 4080, 16, 3)), 16);
}

#[test]
fn key_clear_then_sync_stops_every_later_packet() {
    let mut s = setup(&PairConfig::default(), 8192, RW);
    s.p.a.write_bytes(s.gpa_a, &pattern(8192, 1));
    ok(&run(&mut s.p, put(VA_A, VA_B, 4096, 1)), 4096);
    s.p.b.key_clear(CB, KEY);
    assert_eq!(s.p.b.sync(7), 7);
    s.p.a.write_bytes(s.gpa_a, &pattern(8192, 2));
    fails_with(&mut s, put(VA_A, VA_B, 8192, 2), completion::REMOTE_BAD_KEY);
    assert_eq!(s.p.b.read_bytes(s.gpa_b, 4096), pattern(8192, 1)[..4096]);
}

#[test]
fn ctx_disable_drops_the_keys_and_the_context() {
    let mut s = setup(&PairConfig::default(), 4096, RW);
    s.p.b.command(cmd::CTX_DISABLE, CB, 0, 0);
    s.p.b.run();
    fails_with(&mut s, put(VA_A, VA_B, 8, 1), completion::REMOTE_NO_CONTEXT);
    s.p.b.command(cmd::CTX_ENABLE, CB, 0, 0);
    s.p.b.run();
    fails_with(&mut s, put(VA_A, VA_B, 8, 2), completion::REMOTE_BAD_KEY);
}

#[test]
fn no_fabric_or_an_unknown_node_is_no_route() {
    let mut s = setup(&PairConfig::default(), 4096, RW);
    let mut d = put(VA_A, VA_B, 8, 1);
    d.pattern = 9 | u32::from(CB) << 16;
    let c = run(&mut s.p, d);
    assert_eq!(
        (c.status, c.fault_va),
        (completion::NO_ROUTE, VA_B),
        "{c:?}"
    );
    // A device that is not a node.
    let mut h = Harness::new(false);
    h.setup_ctx(CA, 4, 4);
    h.buffer(CA, VA_A, 4096);
    h.post(CA, get(VA_A, VA_B, 8, 2));
    h.run();
    let c = h.completions(CA);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].status, completion::NO_ROUTE, "{c:?}");
}

/// The ERROR events' codes of `h` since the last call.
fn errors(h: &mut Harness) -> Vec<u32> {
    h.events()
        .into_iter()
        .filter(|e| e.kind == event::ERROR)
        .map(|e| e.code)
        .collect()
}

#[test]
fn key_set_and_key_clear_refuse_every_error_case() {
    let mut p = Pair::new(&PairConfig::default());
    let h = &mut p.b;
    h.setup_ctx(CB, 4, 4);
    h.setup_ctx(CB + 1, 4, 4);
    let key_cmd = |ctx: u16, va: u64, len: u64, arg2: u64| Command {
        opcode: cmd::KEY_SET,
        ctx,
        arg0: va,
        arg1: len,
        arg2,
        ..Default::default()
    };
    let good = key_access::arg(KEY, RW);
    h.cmd(key_cmd(CB, VA_B, 4096, good));
    h.run();
    assert_eq!(errors(h), Vec::<u32>::new(), "taken");
    let bad = [
        (
            key_cmd(CB, VA_B, 4096, key_access::arg(0, RW)),
            error::BAD_COMMAND,
        ),
        (
            key_cmd(CB, VA_B, 0, key_access::arg(5, RW)),
            error::BAD_COMMAND,
        ),
        (
            key_cmd(CB, u64::MAX - 10, 4096, key_access::arg(5, RW)),
            error::BAD_COMMAND,
        ),
        (key_cmd(CB, VA_B, 4096, 5), error::BAD_COMMAND),
        (
            key_cmd(CB, VA_B, 4096, key_access::arg(5, RW) | 1 << 40),
            error::BAD_COMMAND,
        ),
        (key_cmd(CB, VA_B, 4096, good), error::BAD_COMMAND),
        (key_cmd(CB + 1, VA_B, 4096, good), error::BAD_COMMAND),
        (
            key_cmd(CB + 2, VA_B, 4096, key_access::arg(5, RW)),
            error::BAD_CONTEXT,
        ),
        (
            key_cmd(256, VA_B, 4096, key_access::arg(5, RW)),
            error::BAD_CONTEXT,
        ),
    ];
    for (c, code) in bad {
        h.cmd(c);
        h.run();
        assert_eq!(errors(h), vec![code], "{c:?}");
    }
    h.key_clear(CB + 1, KEY);
    h.run();
    assert_eq!(errors(h), vec![error::BAD_COMMAND], "another context's key");
    h.key_clear(CB + 2, KEY);
    h.run();
    assert_eq!(errors(h), vec![error::BAD_COMMAND], "a disabled context's");
    h.key_clear(CB, KEY);
    h.key_clear(CB, KEY);
    h.run();
    assert_eq!(errors(h), vec![error::BAD_COMMAND], "cleared once");

    // MAX_REMOTE_KEYS over the device, then one more.
    for k in 1..=mnic_abi::MAX_REMOTE_KEYS {
        h.cmd(key_cmd(
            CB,
            VA_B,
            4096,
            key_access::arg(k, key_access::READ),
        ));
        if k % 60 == 0 {
            h.run();
        }
    }
    h.run();
    assert_eq!(errors(h), Vec::<u32>::new());
    h.cmd(key_cmd(CB, VA_B, 4096, key_access::arg(u32::MAX, RW)));
    h.run();
    assert_eq!(errors(h), vec![error::BAD_COMMAND], "full");
    // CTX_DISABLE gives them all back.
    h.command(cmd::CTX_DISABLE, CB, 0, 0);
    h.command(cmd::CTX_ENABLE, CB, 0, 0);
    h.cmd(key_cmd(CB, VA_B, 4096, key_access::arg(u32::MAX, RW)));
    h.run();
    assert_eq!(errors(h), Vec::<u32>::new(), "room again");

    // A device that is not a node has no keys at all.
    let mut plain = Harness::new(false);
    plain.setup_ctx(CB, 4, 4);
    plain.cmd(key_cmd(CB, VA_B, 4096, good));
    plain.run();
    assert_eq!(errors(&mut plain), vec![error::BAD_COMMAND]);
}

#[test]
fn an_invalidation_at_the_target_between_packets_is_never_written_through() {
    const LEN: u32 = 1 << 20;
    const MOVED: u64 = 768 << 10;
    let mut s = setup(&PairConfig::default(), u64::from(LEN), RW);
    let (old, new) = (pattern(LEN as usize, 1), pattern(LEN as usize, 2));
    // A first PUT leaves the target's TLB holding the whole buffer.
    s.p.a.write_bytes(s.gpa_a, &old);
    ok(&run(&mut s.p, put(VA_A, VA_B, LEN, 1)), LEN);
    s.p.a.write_bytes(s.gpa_a, &new);
    s.p.a.post(CA, put(VA_A, VA_B, LEN, 2));
    let served = s.p.b.core.shared().rma.snapshot()[fabric_counter::PUT_SERVED];
    s.p.until(LIMIT, |p| {
        (p.b.core.shared().rma.snapshot()[fabric_counter::PUT_SERVED] >= served + 20).then_some(())
    });
    // The target's driver takes one page away while the PUT runs: leaf cleared,
    // INVALIDATE_RANGE, SYNC.
    s.p.b.unmap(CB, VA_B + MOVED);
    s.p.b.command(cmd::INVALIDATE_RANGE, CB, VA_B + MOVED, 4096);
    assert_eq!(s.p.b.sync(9), 9);
    let e = target_fault(&mut s.p);
    assert_eq!((e.addr & !0xfff, e.info), (VA_B + MOVED, NETWORK_FAULT | 1));
    // It comes back elsewhere (as after a migration), and the PUT completes there.
    let moved_to = s.p.b.alloc(4096, false);
    s.p.b.map(CB, VA_B + MOVED, moved_to, 4096, true);
    s.p.b.command(cmd::RESUME, CB, e.id, 0);
    ok(&s.p.completion(CA, LIMIT), LEN);
    let m = MOVED as usize;
    assert_eq!(s.p.b.read_bytes(moved_to, 4096), new[m..m + 4096]);
    assert_eq!(
        s.p.b.read_bytes(s.gpa_b + MOVED, 4096),
        old[m..m + 4096],
        "old page untouched"
    );
    assert_eq!(s.p.b.read_bytes(s.gpa_b, m), new[..m]);
    assert_eq!(s.p.b.counter(counter::STALE_ACCESSES), 0);
    assert!(s.p.b.core.shared().rma.snapshot()[fabric_counter::RNR_SENT] >= 1);
}

#[test]
fn a_local_fault_parks_the_initiator_as_copy_does() {
    let mut s = setup(&PairConfig::default(), 3 * 4096, RW);
    let data = pattern(3 * 4096, 4);
    s.p.a.write_bytes(s.gpa_a, &data);
    for (tag, d) in [
        (1, put(VA_A, VA_B, 3 * 4096, 1)),
        (2, get(VA_A, VA_B, 3 * 4096, 2)),
    ] {
        s.p.a.unmap(CA, VA_A + 4096);
        s.p.a.command(cmd::INVALIDATE_CTX, CA, 0, 0);
        s.p.a.run();
        s.p.a.post(CA, d);
        let e = s.p.until(LIMIT, |p| {
            p.a.events().into_iter().find(|e| e.kind == event::FAULT)
        });
        assert_eq!(
            (e.ctx, e.addr & !0xfff, e.info),
            (CA, VA_A + 4096, 0),
            "{tag}"
        );
        s.p.a.map(CA, VA_A + 4096, s.gpa_a + 4096, 4096, true);
        s.p.a.command(cmd::RESUME, CA, e.id, 0);
        let c = s.p.completion(CA, LIMIT);
        assert_eq!(c.tag, tag);
        ok(&c, 3 * 4096);
    }
    assert_eq!(s.p.b.read_bytes(s.gpa_b, 3 * 4096), data);
    assert_eq!(s.p.a.read_bytes(s.gpa_a, 3 * 4096), data);
}

#[test]
fn a_get_response_whose_destination_went_away_is_asked_for_again() {
    let mut s = setup(&PairConfig::default(), 3 * 4096, RW);
    let data = pattern(3 * 4096, 5);
    s.p.b.write_bytes(s.gpa_b, &data);
    s.p.a.post(CA, get(VA_A, VA_B, 3 * 4096, 1));
    // Only the initiator runs: it probes its pages and sends every request (three per
    // page: 1416 + 1416 + 1264 bytes).
    let sent = |h: &Harness| h.core.shared().rma.snapshot()[fabric_counter::PACKETS_SENT];
    while sent(&s.p.a) < 9 {
        s.p.a.core.poll(&s.p.a.mem());
    }
    // Its middle page goes away before the answers are in.
    s.p.a.unmap(CA, VA_A + 4096);
    s.p.a.command(cmd::INVALIDATE_RANGE, CA, VA_A + 4096, 4096);
    while s.p.b.core.shared().rma.snapshot()[fabric_counter::GET_SERVED] < 9 {
        s.p.b.core.poll(&s.p.b.mem());
        std::thread::sleep(Duration::from_micros(50));
    }
    let e = s.p.until(LIMIT, |p| {
        p.a.events().into_iter().find(|e| e.kind == event::FAULT)
    });
    assert_eq!((e.addr & !0xfff, e.info), (VA_A + 4096, 0));
    assert_eq!(
        s.p.a.core.shared().rma.snapshot()[fabric_counter::GET_RESP_DROPPED],
        3
    );
    assert_eq!(
        s.p.a.read_bytes(s.gpa_a + 4096, 4096),
        vec![0; 4096],
        "not written"
    );
    let moved_to = s.p.a.alloc(4096, false);
    s.p.a.map(CA, VA_A + 4096, moved_to, 4096, true);
    s.p.a.command(cmd::RESUME, CA, e.id, 0);
    ok(&s.p.completion(CA, LIMIT), 3 * 4096);
    assert_eq!(s.p.a.read_bytes(moved_to, 4096), data[4096..8192]);
    assert_eq!(s.p.a.read_bytes(s.gpa_a, 4096), data[..4096]);
    assert_eq!(s.p.a.counter(counter::STALE_ACCESSES), 0);
}

#[test]
fn a_lossy_wire_moves_put_and_get_intact() {
    const LEN: u32 = 256 << 10;
    let cfg = PairConfig::lossy(1, 2);
    let mut s = setup(&cfg, 2 * u64::from(LEN), RW);
    let data = pattern(LEN as usize, 6);
    s.p.a.write_bytes(s.gpa_a, &data);
    ok(&run(&mut s.p, put(VA_A, VA_B, LEN, 1)), LEN);
    assert_eq!(s.p.b.read_bytes(s.gpa_b, LEN as usize), data);
    let back = u64::from(LEN);
    ok(&run(&mut s.p, get(VA_A + back, VA_B, LEN, 2)), LEN);
    assert_eq!(s.p.a.read_bytes(s.gpa_a + back, LEN as usize), data);
    let ta = s.p.a.core.fabric().unwrap().stats();
    let tb = s.p.b.core.fabric().unwrap().stats();
    assert!(
        ta.injected_drops > 0 && tb.injected_drops > 0,
        "{ta:?} {tb:?}"
    );
    assert!(ta.retransmits > 0, "{ta:?}");
}

#[test]
fn a_target_that_goes_away_mid_put_fails_it_with_peer_gone() {
    const LEN: u32 = 1 << 20;
    let cfg = PairConfig {
        timing: mnic_device::fabric::Timing {
            rto: Duration::from_millis(2),
            rto_max: Duration::from_millis(8),
            retries: 3,
        },
        ..PairConfig::default()
    };
    let mut s = setup(&cfg, u64::from(LEN), RW);
    s.p.a.post(CA, put(VA_A, VA_B, LEN, 1));
    s.p.until(LIMIT, |p| {
        (p.b.core.shared().rma.snapshot()[fabric_counter::PUT_SERVED] >= 10).then_some(())
    });
    let Pair { mut a, b } = s.p;
    drop(b);
    let t = std::time::Instant::now();
    let c = loop {
        a.core.poll(&a.mem());
        if let Some(c) = a.completions(CA).pop() {
            break c;
        }
        assert!(t.elapsed() < LIMIT, "no completion");
        std::thread::sleep(Duration::from_micros(100));
    };
    assert_eq!(c.status, completion::PEER_GONE, "{c:?}");
    assert!(
        c.bytes < u64::from(LEN) && c.bytes >= 10 * PUT_CHUNK as u64,
        "{c:?}"
    );
    assert!((VA_B..VA_B + u64::from(LEN)).contains(&c.fault_va), "{c:?}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(a.core.shared().rma.snapshot()[fabric_counter::PEER_GONE], 1);
}

#[test]
fn silence_after_packets_fails_the_item_with_peer_gone() {
    // A "target" that takes packets (its transport acknowledges them) and never answers.
    let (sa, sb) = (
        mnic_device::testkit::loopback_socket(),
        mnic_device::testkit::loopback_socket(),
    );
    let (aa, ab) = (sa.local_addr().unwrap(), sb.local_addr().unwrap());
    let rma = mnic_device::engine::RmaTiming {
        reply_timeout: Duration::from_millis(200),
        ..Default::default()
    };
    let mut a = mnic_device::testkit::node_harness(
        1,
        sa,
        &[(2, ab)],
        Default::default(),
        Default::default(),
        rma,
    );
    let mute = mnic_device::fabric::Transport::on_socket(
        &mnic_device::fabric::FabricConfig {
            peers: vec![(1, aa)],
            ..mnic_device::fabric::FabricConfig::loopback(2)
        },
        sb,
        None,
    )
    .unwrap();
    a.setup_ctx(CA, 4, 4);
    a.buffer(CA, VA_A, 4096);
    a.post(CA, put(VA_A, VA_B, 100, 1));
    let t = std::time::Instant::now();
    let c = loop {
        a.core.poll(&a.mem());
        if let Some(c) = a.completions(CA).pop() {
            break c;
        }
        assert!(t.elapsed() < LIMIT, "no completion");
        std::thread::sleep(Duration::from_millis(1));
    };
    assert_eq!(
        (c.status, c.fault_va),
        (completion::PEER_GONE, VA_B),
        "{c:?}"
    );
    assert!(t.elapsed() >= Duration::from_millis(200));
    assert!(mute.stats().delivered >= 1, "the packet arrived");
}

/// A `RemoteAccess` payload of a one-packet operation: header, then `data`.
fn access(key: u32, len: u32, va: u64, req_id: u32, data: &[u8]) -> Vec<u8> {
    access_in(key, len, va, req_id, (0, len), data)
}

/// A `RemoteAccess` payload of the packet at `op.0` of an operation of `op.1` bytes.
fn access_in(key: u32, len: u32, va: u64, req_id: u32, op: (u32, u32), data: &[u8]) -> Vec<u8> {
    use zerocopy::IntoBytes;
    let ra = mnic_abi::fabric::RemoteAccess {
        rkey: key.into(),
        len: len.into(),
        va: va.into(),
        req_id: req_id.into(),
        op_offset: op.0.into(),
        op_len: op.1.into(),
        reserved: 0.into(),
    };
    let mut p = ra.as_bytes().to_vec();
    p.extend_from_slice(data);
    p
}

#[test]
fn a_hostile_peer_changes_no_memory_and_is_counted() {
    use mnic_abi::fabric::{nak, ptype, ReplyHeader, MAX_DATAGRAM};
    use mnic_device::fabric::wire;
    use zerocopy::{FromBytes, IntoBytes};

    // Node 2's map has node 1 at the attacker's address: forgeries come from there.
    let mut h = Hostile::new();
    let b = &mut h.victim;
    b.setup_ctx(CB, 4, 4);
    let gpa_b = b.buffer(CB, VA_B, 8192);
    b.key_set(CB, VA_B, 8192, KEY, RW);
    b.run();
    let before = pattern(8192, 8);
    b.write_bytes(gpa_b, &before);

    let data = [0xee; 64];
    let forged = KEY ^ 0x100;
    h.forge(ptype::PUT, CA, CB, &access(forged, 64, VA_B, 1, &data));
    for _ in 0..5 {
        // Replays of the same packet: the transport drops them.
        h.replay(ptype::PUT, CA, CB, &access(forged, 64, VA_B, 1, &data));
    }
    h.forge(ptype::PUT, CA, CB, &access(KEY, 64, VA_B, 2, &data)[..10]);
    h.forge(ptype::PUT, CA, CB, &access(KEY, 100, VA_B, 3, &data));
    h.forge(ptype::GET_REQ, CA, CB, &access(KEY, 0, VA_B, 4, &[]));
    h.forge(ptype::GET_REQ, CA, CB, &access(KEY, 1417, VA_B, 5, &[]));
    h.forge(
        ptype::GET_REQ,
        CA,
        CB,
        &access(KEY, 16, VA_B + 4090, 6, &[]),
    );
    // Even with the right key, a PUT across a page is not served.
    h.forge(
        ptype::PUT,
        CA,
        CB,
        &access(KEY, 16, VA_B + 4090, 7, &[1; 16]),
    );
    let reply = |status: u16| {
        ReplyHeader {
            req_id: 99.into(),
            status: status.into(),
            va: VA_B.into(),
            ..ReplyHeader::default()
        }
        .as_bytes()
        .to_vec()
    };
    h.forge(ptype::REPLY, CA, CB, &reply(nak::OK));
    let mut resp = access(0, 0, VA_B, 99, &[])[..16].to_vec();
    resp.extend_from_slice(&[5; 32]);
    h.forge(ptype::GET_RESP, CA, CB, &resp);
    h.forge(ptype::REPLY, CA, CB, &reply(nak::STALE_EPOCH));
    h.forge(ptype::EAGER, CA, CB, &[0; 24]);
    h.forge(ptype::PUT, CA, 9, &access(KEY, 64, VA_B, 8, &data));
    h.forge(ptype::GET_REQ, CA, CB, &access(forged, 64, VA_B, 9, &[]));
    // The right key and a packet inside its range, of an operation that leaves it.
    h.forge(
        ptype::PUT,
        CA,
        CB,
        &access_in(KEY, 64, VA_B + 8192 - 64, 10, (0, 128), &data),
    );
    // Inconsistent operation fields: the packet past its operation's end; an operation
    // that would start below VA 0.
    h.forge(
        ptype::PUT,
        CA,
        CB,
        &access_in(KEY, 64, VA_B, 11, (8, 64), &data),
    );
    h.forge(
        ptype::GET_REQ,
        CA,
        CB,
        &access_in(KEY, 64, VA_B, 12, (u32::MAX - 64, u32::MAX), &[]),
    );

    let want = (10, 2, 4);
    let got = h.counted(want, LIMIT, |s| {
        (
            s[fabric_counter::REFUSED],
            s[fabric_counter::LATE],
            s[fabric_counter::ERRORS_SENT],
        )
    });
    assert_eq!(got, want, "(refused, late, errors answered)");
    let b = &mut h.victim;
    let s = b.core.shared().rma.snapshot();
    assert_eq!(
        (
            s[fabric_counter::PUT_SERVED],
            s[fabric_counter::GET_SERVED],
            s[fabric_counter::NETWORK_FAULTS]
        ),
        (0, 0, 0),
        "{s:?}"
    );
    assert_eq!(b.read_bytes(gpa_b, 8192), before, "memory unchanged");
    assert!(b.core.fabric().unwrap().stats().duplicates >= 5);

    // The answers went back to the map's address for node 1: BAD_KEY twice, BAD_RANGE,
    // NO_CONTEXT.
    h.attacker
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // By sequence number: unacknowledged, they come again.
    let mut statuses = std::collections::BTreeMap::new();
    let mut buf = [0u8; MAX_DATAGRAM];
    while let Ok(n) = h.attacker.recv(&mut buf) {
        let Ok(p) = wire::parse(&buf[..n]) else {
            continue;
        };
        assert_ne!(p.f.ptype, ptype::GET_RESP, "nothing read for the attacker");
        if p.f.ptype == ptype::REPLY {
            let h = ReplyHeader::read_from_bytes(p.payload).unwrap();
            statuses.insert(p.f.seq, h.status.get());
        }
    }
    let mut statuses: Vec<u16> = statuses.into_values().collect();
    statuses.sort();
    assert_eq!(
        statuses,
        vec![nak::BAD_KEY, nak::BAD_KEY, nak::BAD_RANGE, nak::NO_CONTEXT]
    );
    // The device is up and serves its driver.
    assert_eq!(b.sync(3), 3);
    assert_eq!(b.counter(counter::ERRORS), 0);
}

/// Polls `h`'s completions of `ctx` (its core runs in a data thread) until one comes.
fn wait_completion(h: &mut Harness, ctx: u16) -> Completion {
    let t = std::time::Instant::now();
    loop {
        if let Some(c) = h.completions(ctx).pop() {
            return c;
        }
        assert!(t.elapsed() < LIMIT, "no completion");
        std::thread::sleep(Duration::from_micros(100));
    }
}

#[test]
fn the_real_data_threads_sleep_and_wake_for_the_network() {
    const LEN: u32 = 1 << 20;
    let mut s = setup(&PairConfig::default(), u64::from(LEN), RW);
    s.p.b.unmap(CB, VA_B + 4096);
    let data = pattern(LEN as usize, 10);
    s.p.a.write_bytes(s.gpa_a, &data);
    let spin = mnic_device::engine::DEFAULT_SPIN;
    let _ea = s.p.a.start_engine(spin).unwrap();
    let _eb = s.p.b.start_engine(spin).unwrap();
    s.p.a.post(CA, put(VA_A, VA_B, LEN, 1));
    // The target's fault, answered after a pause: the initiator sleeps through back-offs.
    let t = std::time::Instant::now();
    let e = loop {
        if let Some(e) = s.p.b.events().into_iter().find(|e| e.kind == event::FAULT) {
            break e;
        }
        assert!(t.elapsed() < LIMIT, "no fault");
        std::thread::sleep(Duration::from_micros(100));
    };
    assert_eq!(e.info, NETWORK_FAULT | 1);
    std::thread::sleep(Duration::from_millis(20));
    target_resolves(&mut s, &e, 4096, true);
    ok(&wait_completion(&mut s.p.a, CA), LEN);
    assert_eq!(s.p.b.read_bytes(s.gpa_b, LEN as usize), data);
    s.p.a.write_bytes(s.gpa_a, &vec![0; LEN as usize]);
    s.p.a.post(CA, get(VA_A, VA_B, LEN, 2));
    ok(&wait_completion(&mut s.p.a, CA), LEN);
    assert_eq!(s.p.a.read_bytes(s.gpa_a, LEN as usize), data);
    assert!(s.p.a.counter(counter::SLEEPS) >= 1, "the initiator slept");
}

#[test]
fn the_oracle_judges_the_networks_accesses_at_the_target() {
    use mnic_abi::oracle_op;
    let mut s = setup(&PairConfig::default(), 4096, RW);
    let gen = s.p.b.oracle(oracle_op::ARM, CB, 0, 0, 0);
    assert_ne!(gen, 0);
    ok(&run(&mut s.p, put(VA_A, VA_B, 64, 1)), 64);
    // A driver that cleared its leaf and reported it, but never told the device: the
    // target's TLB still holds the page, and the next packet through it is a violation.
    s.p.b.unmap(CB, VA_B);
    s.p.b
        .oracle(oracle_op::INVALIDATE, CB, gen, VA_B, VA_B + 4096);
    assert_eq!(
        s.p.b.counter(counter::ORACLE_VIOLATIONS),
        0,
        "the table is clean"
    );
    ok(&run(&mut s.p, get(VA_A, VA_B, 64, 2)), 64);
    assert_eq!(s.p.b.counter(counter::ORACLE_VIOLATIONS), 1);
    assert_eq!(
        s.p.b.counter(counter::STALE_ACCESSES),
        0,
        "the checker saw nothing"
    );
}

#[test]
fn ctx_disable_withdraws_a_parked_network_fault() {
    let (mut s, _, e) = put_into_a_missing_page(&PairConfig::default());
    s.p.b.command(cmd::CTX_DISABLE, CB, 0, 0);
    s.p.b.run();
    // The initiator's retried packets meet no context now.
    let c = s.p.completion(CA, LIMIT);
    assert_eq!(c.status, completion::REMOTE_NO_CONTEXT, "{c:?}");
    // Its fault is gone: answering it is an error.
    s.p.b.command(cmd::RESUME, CB, e.id, 0);
    s.p.b.run();
    assert_eq!(errors(&mut s.p.b), vec![error::BAD_FAULT_ID]);
}
