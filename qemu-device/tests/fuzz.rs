//! Bounded-time fuzzing of everything the guest controls: random MMIO writes (BAR0
//! and doorbells), random command-ring entries, context-table entries, translation
//! entries, work descriptors and shadow-page tails (some episodes give the queues shadow
//! pages, spec §4a, and step the data thread's polling policy), driven into the device
//! engine with a seeded RNG.
//!
//! Why not cargo-fuzz: it needs a nightly compiler (sanitizer flags), and this
//! project builds with stable rustc 1.95 only. This driver keeps the useful part of
//! the idea — structured random inputs where valid knobs are common enough to reach
//! deep states — and runs inside `cargo test` for `MNIC_FUZZ_SECS` seconds (default
//! 5; `MNIC_FUZZ_SEED` picks the first seed). It asserts:
//! - no panic (the test would fail) and no hang (a watchdog fails the test if one
//!   action takes longer than 10 s);
//! - guest memory safety: every device access is bounds-checked, so the host process
//!   must not crash; a read-only RAM region (DMA_MAP without the write flag) and a
//!   fd-less ROM range sit inside the address space the fuzzer points at, and the
//!   read-only region must still hold its canary bytes afterwards;
//! - the coherence invariant: with a correct TLB no input may produce a stale access.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mnic_abi::{cmd, control, counter, pte, reg, status, Command, CtxEntry, WorkDesc};
use mnic_device::engine::{mix, Activity, Pace};
use mnic_device::mem::{self, GuestRam};
use mnic_device::testkit::{
    memfd, Harness, CMDQ, CMD_SHADOW, CTX_TABLE, EVQ, RAM_SIZE, SYNC_WORD, TABLES, WQ_VA,
};
use zerocopy::IntoBytes;

/// GPA of the read-only canary region.
const RO: u64 = 0x400_0000;
const RO_LEN: u64 = 0x1_0000;
/// GPA of the fd-less ROM range.
const ROM: u64 = 0x500_0000;
const CANARY: u8 = 0xa5;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        mix(self.0)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    /// An address: mostly useful ones, sometimes hostile.
    fn gpa(&mut self) -> u64 {
        match self.below(10) {
            0 => self.next(),
            1 => RO + self.below(RO_LEN),
            2 => ROM + self.below(0x1000),
            3 => RAM_SIZE as u64 - self.below(64),
            _ => self.below(RAM_SIZE as u64) & !7,
        }
    }
    fn va(&mut self) -> u64 {
        match self.below(8) {
            0 => self.next(),
            1 => pte::VA_LIMIT - self.below(0x2000),
            2 => WQ_VA + self.below(1 << 21),
            _ => 0x10_0000_0000 + self.below(64 << 12),
        }
    }
}

fn ram() -> GuestRam {
    let ram = GuestRam::anonymous(&[(0, RAM_SIZE)]).unwrap();
    let fd = memfd(RO_LEN);
    let setup = GuestRam::new();
    setup
        .map_fd(0, RO_LEN, fd.try_clone().unwrap(), 0, true)
        .unwrap();
    mem::write(&setup.snapshot(), 0, &vec![CANARY; RO_LEN as usize]).unwrap();
    ram.map_fd(RO, RO_LEN, fd, 0, false).unwrap();
    ram.map_none(ROM, 0x1000).unwrap();
    ram
}

/// One episode: a freshly enabled device with two good contexts, then `steps`
/// random actions.
fn episode(seed: u64, steps: usize, beat: &AtomicU64) {
    let mut r = Rng(seed);
    let cmd_shadow = if r.chance(30) { CMD_SHADOW } else { 0 };
    let mut h = Harness::build(ram(), true, cmd_shadow);
    for ctx in [1u16, 2] {
        h.setup_ctx_with(ctx, 4, 4, r.chance(50));
        let g = h.alloc(64 << 12, false);
        h.map(ctx, 0x10_0000_0000, g, 64 << 12, true);
    }
    // The shadow pages this episode has (or may point a register or entry at).
    let mut pages = vec![CMD_SHADOW, h.alloc(4096, false)];
    pages.extend(
        [1, 2]
            .map(|c| h.ctx_shadow(c))
            .into_iter()
            .filter(|&p| p != 0),
    );
    let mut pace = Pace::new(Duration::from_micros(r.below(3) * 100));
    let t0 = Instant::now();
    for step in 0..steps {
        beat.fetch_add(1, Ordering::Relaxed);
        match r.below(14) {
            12 => {
                // A tail into a shadow page: usually small, sometimes anything.
                let page = pages[r.below(pages.len() as u64) as usize];
                let tail = if r.chance(80) {
                    r.below(40) as u32
                } else {
                    r.next() as u32
                };
                let _ = mem::write(&h.mem(), page, &tail.to_le_bytes());
            }
            13 => {
                // The data thread's policy around a round, on a made-up clock: woken,
                // within the budget, or past it (the sleep handshake).
                let m = h.mem();
                let now = t0 + Duration::from_micros(step as u64 * r.below(300));
                pace.before_round(&mut h.core, &m, now, r.chance(30));
                let act = h.core.poll(&m);
                let _ = pace.after_round(&mut h.core, &m, act, now);
                if r.chance(20) {
                    let _ = pace.after_round(&mut h.core, &m, Activity::Idle(None), now);
                }
            }
            0 if r.chance(25) => {
                // A whole oracle operation with plausible arguments, often right after
                // an ARM of the same context.
                use mnic_abi::oracle_op;
                let ctx = r.below(4) as u16;
                let mut gen = h.reg(reg::ORACLE_GEN);
                if r.chance(30) {
                    gen = h.oracle(oracle_op::ARM, ctx, 0, 0, 0);
                }
                let op = match r.below(10) {
                    0 => oracle_op::DISARM,
                    1 => r.below(8) as u32,
                    _ => oracle_op::INVALIDATE,
                };
                if r.chance(10) {
                    gen = r.next() as u32;
                }
                let start = r.va();
                let end = match r.below(4) {
                    0 => 0,
                    1 => r.next(),
                    _ => start.wrapping_add(r.below(1 << 22)),
                };
                h.oracle(op, ctx, gen, start, end);
            }
            0 => {
                // Any BAR0 register, any value; CONTROL favours sensible bits, the
                // oracle registers favour real ops on the good contexts.
                let off = if r.chance(80) {
                    r.below(u64::from(reg::SHADOW_BASE_HI) + 4) & !3
                } else {
                    r.below(0x1000)
                };
                let v = match off as u32 {
                    reg::CONTROL if r.chance(90) => {
                        (r.next() as u32) & (control::ENABLE | control::STRICT)
                            | if r.chance(5) { control::RESET } else { 0 }
                    }
                    reg::CMDQ_SIZE_LOG2 | reg::EVQ_SIZE_LOG2 => r.below(16) as u32,
                    // A few milliseconds at most: the watchdog wants progress.
                    reg::DEBUG_STALL_MS => r.below(3) as u32,
                    reg::ORACLE_OP => r.below(5) as u32,
                    reg::ORACLE_CTX if r.chance(90) => r.below(4) as u32,
                    reg::ORACLE_START_HI | reg::ORACLE_END_HI if r.chance(50) => {
                        r.below(0x20) as u32
                    }
                    reg::SHADOW_BASE_LO if r.chance(80) => {
                        let p = pages[r.below(pages.len() as u64) as usize];
                        if r.chance(20) {
                            p as u32 + r.below(4096) as u32
                        } else {
                            p as u32
                        }
                    }
                    reg::SHADOW_BASE_HI if r.chance(80) => 0,
                    _ => r.next() as u32,
                };
                h.write_reg(off as u32, v);
            }
            1 => {
                let ctx = if r.chance(90) {
                    r.below(4)
                } else {
                    r.below(300)
                };
                h.dev.bar2_write(
                    ctx * 4096 + if r.chance(90) { 0 } else { r.below(4096) },
                    &(r.below(40) as u32).to_le_bytes(),
                );
            }
            2 | 3 => {
                // A command: a real opcode with plausible or hostile arguments.
                let c = Command {
                    opcode: r.below(9) as u8,
                    flags: r.next() as u8,
                    ctx: if r.chance(90) {
                        r.below(4) as u16
                    } else {
                        r.next() as u16
                    },
                    rsvd: 0,
                    arg0: match r.below(3) {
                        0 => SYNC_WORD,
                        1 => r.va(),
                        _ => r.below(8),
                    },
                    arg1: if r.chance(50) {
                        r.below(1 << 20)
                    } else {
                        r.next()
                    },
                    arg2: r.next(),
                };
                h.cmd(c);
            }
            4 | 5 => {
                // A descriptor posted to a good context.
                let ctx = 1 + r.below(2) as u16;
                let d = WorkDesc {
                    opcode: r.below(5) as u16,
                    // Mostly the defined flag (NOTIFY) or none, so that most
                    // descriptors run; sometimes reserved bits, which refuse them.
                    flags: if r.chance(90) {
                        r.below(2) as u16
                    } else {
                        r.next() as u16
                    },
                    len: if r.chance(80) {
                        r.below(3 << 12) as u32
                    } else {
                        r.next() as u32
                    },
                    tag: r.next(),
                    src: r.va(),
                    dst: r.va(),
                    op_size: r.below(9000) as u32,
                    pattern: r.below(4) as u32,
                    ops: r.below(300),
                    rate: if r.chance(5) { r.below(100_000) } else { 0 },
                    seed: r.next(),
                };
                h.post(ctx, d);
            }
            6 => {
                // A translation entry of a good context: garbage, or a leaf anywhere.
                let ctx = 1 + r.below(2) as u16;
                let va = r.va() & (pte::VA_LIMIT - 1);
                let m = h.mem();
                let level = 1 + r.below(4) as u32;
                if let Some(at) = h.tables(ctx).entry_addr(&m, va, level) {
                    let v = match r.below(4) {
                        0 => r.next(),
                        1 => pte::leaf_2m(r.gpa(), r.chance(50)),
                        2 => pte::table(r.gpa()),
                        _ => pte::leaf_4k(r.gpa(), r.chance(50)),
                    };
                    let _ = mem::store_u64(&m, at, v);
                }
            }
            7 => {
                // A context-table entry.
                let ctx = r.below(4);
                let e = CtxEntry {
                    flags: r.below(4) as u32,
                    wq_size_log2: r.below(14) as u8,
                    cq_size_log2: r.below(14) as u8,
                    rsvd: 0,
                    root: if r.chance(60) {
                        TABLES + ctx * 0x4_0000
                    } else {
                        r.gpa() & !0xfff
                    },
                    wq_va: r.va() & !63,
                    cq_va: r.va() & !31,
                    shadow: match r.below(4) {
                        0 | 1 => 0,
                        2 => pages[r.below(pages.len() as u64) as usize],
                        _ => r.gpa() & !0xfff,
                    },
                    rsvd2: [0; 3],
                };
                let _ = mem::write(&h.mem(), CTX_TABLE + 64 * ctx, e.as_bytes());
            }
            8 => {
                // Raw garbage into a ring or the tables.
                let page = pages[r.below(pages.len() as u64) as usize];
                let base = [CMDQ, EVQ, CTX_TABLE, TABLES, page, r.gpa()][r.below(6) as usize];
                let bytes: Vec<u8> = (0..r.below(256)).map(|_| r.next() as u8).collect();
                let _ = mem::write(&h.mem(), base + r.below(4096), &bytes);
            }
            9 => {
                // Answer faults like a driver would, sometimes wrongly.
                for e in h.events() {
                    if e.kind == mnic_abi::event::FAULT {
                        let op = if r.chance(50) {
                            cmd::RESUME
                        } else {
                            cmd::ABORT
                        };
                        let id = if r.chance(90) { e.id } else { r.next() };
                        h.command(op, e.ctx, id, 14);
                    }
                }
            }
            _ => {
                h.run();
            }
        }
        if r.chance(30) {
            h.run();
        }
        let _ = h.completions(1);
        let _ = h.completions(2);
    }
    h.run();
    assert_eq!(h.counter(counter::STALE_ACCESSES), 0, "seed {seed}");
    // A halted device can only come from a stale access (none, above) or from the
    // oracle, which the fuzzer feeds reports that no driver followed.
    if h.reg(reg::STATUS) & status::HALTED != 0 {
        assert!(h.counter(counter::ORACLE_VIOLATIONS) > 0, "seed {seed}");
    }
    let mut b = vec![0u8; RO_LEN as usize];
    mem::read(&h.mem(), RO, &mut b).unwrap();
    assert!(
        b.iter().all(|&x| x == CANARY),
        "seed {seed}: read-only RAM was written"
    );
    for (i, c) in DEPTH.iter().enumerate() {
        c.fetch_add(h.counter(DEPTH_COUNTERS[i]), Ordering::Relaxed);
    }
}

/// Counters summed over episodes, to see that the inputs reach deep states.
const DEPTH_COUNTERS: [u32; 10] = [
    counter::COMMANDS,
    counter::WORK_COMPLETED,
    counter::FAULTS,
    counter::RESUMES,
    counter::TRAFFIC_OPS,
    counter::ERRORS,
    counter::ORACLE_INVALIDATIONS,
    counter::ORACLE_VIOLATIONS,
    counter::SHADOW_TAILS,
    counter::SLEEPS,
];
static DEPTH: [AtomicU64; 10] = [const { AtomicU64::new(0) }; 10];

#[test]
fn fuzz_engine() {
    let secs: u64 = std::env::var("MNIC_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let first: u64 = std::env::var("MNIC_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let beat = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let (b2, d2) = (beat.clone(), done.clone());
    let fuzzer = std::thread::spawn(move || {
        let t = Instant::now();
        let mut seed = first;
        while t.elapsed() < Duration::from_secs(secs) {
            episode(seed, 300, &b2);
            seed += 1;
        }
        d2.store(true, Ordering::Release);
        seed - first
    });
    // Watchdog: the fuzzer must make progress at least every 10 s.
    let mut last = (0, Instant::now());
    while !done.load(Ordering::Acquire) && !fuzzer.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
        let b = beat.load(Ordering::Relaxed);
        if b != last.0 {
            last = (b, Instant::now());
        }
        assert!(
            last.1.elapsed() < Duration::from_secs(10),
            "fuzzer hung (seeds from {first}, {b} actions)"
        );
    }
    let episodes = fuzzer.join().expect("fuzzer panicked");
    assert!(episodes > 0);
    let d: Vec<u64> = DEPTH.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    eprintln!(
        "fuzz: {episodes} episodes, {} actions; commands {} work {} faults {} resumes {} traffic_ops {} errors {} oracle_invalidations {} oracle_violations {} shadow_tails {} sleeps {}",
        beat.load(Ordering::Relaxed),
        d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8], d[9]
    );
    assert!(
        d[1] > 0 && d[2] > 0,
        "the fuzzer never completed work or faulted"
    );
    assert!(
        d[8] > 0,
        "the fuzzer never moved a tail through a shadow page"
    );
}
