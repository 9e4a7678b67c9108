//! Shadow doorbells and the polling device (spec §4a) on a [`Harness`]: where the tails
//! come from, the `polling` flag through [`Pace`] with a made-up clock, the sleep
//! handshake's decision, the checks at enable and `CTX_ENABLE`, the counters; and one
//! run of the real data thread for the backstop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mnic_abi::{caps, cmd, completion, control, counter, error, reg, spin, status, work};
use mnic_abi::{Command, CtxEntry, Shadow, WorkDesc};
use zerocopy::IntoBytes;

use super::pace::{Next, Pace, BACKSTOP};
use super::poll::Activity;
use crate::counters::Counters;
use crate::engine::Engine;
use crate::mem::{self, GuestRam};
use crate::mmio::{Followup, Mmio};
use crate::shared::Shared;
use crate::testkit::{Harness, CMDQ, CMD_SHADOW, CTX_TABLE, EVQ, SYNC_WORD};

const SPIN: Duration = Duration::from_micros(200);

fn nop() -> WorkDesc {
    WorkDesc {
        opcode: work::NOP,
        ..Default::default()
    }
}

/// Writes command `c` into slot `slot` of the command ring, without any tail.
fn put_cmd(h: &Harness, slot: u64, c: Command) {
    let at = CMDQ + size_of::<Command>() as u64 * slot;
    mem::write(&h.mem(), at, c.as_bytes()).unwrap();
}

fn sync_cmd(value: u64) -> Command {
    Command {
        opcode: cmd::SYNC,
        arg0: SYNC_WORD,
        arg1: value,
        ..Default::default()
    }
}

fn sync_word(h: &Harness) -> u64 {
    mem::load_u64(&h.mem(), SYNC_WORD).unwrap()
}

fn set_shadow_tail(h: &Harness, page: u64, tail: u32) {
    mem::store_u32(&h.mem(), page + Shadow::TAIL_OFFSET as u64, tail).unwrap();
}

#[test]
fn caps_announce_shadow() {
    let h = Harness::new(true);
    assert_ne!(h.reg(reg::CAPS) & caps::SHADOW, 0);
}

#[test]
fn command_tail_comes_only_from_the_shadow_page() {
    let mut h = Harness::with_cmd_shadow(true);
    // The harness posts as a producer: tail into the page, and (polling = 0) the register.
    assert_eq!(h.sync(1), 1);
    assert_eq!(h.counter(counter::DOORBELLS), 1);
    assert_eq!(h.counter(counter::SHADOW_TAILS), 1);
    // The register alone does not move the queue: it only wakes the device.
    put_cmd(&h, 1, sync_cmd(2));
    let _ = h.core.shared().take_kick();
    h.write_reg(reg::CMDQ_TAIL, 2);
    assert!(
        h.core.shared().take_kick(),
        "the write wakes the data thread"
    );
    h.run();
    assert_eq!(sync_word(&h), 1, "a CMDQ_TAIL value is not a tail here");
    assert_eq!(h.reg(reg::CMDQ_HEAD), 1);
    assert_eq!(h.counter(counter::DOORBELLS), 2);
    // The shadow's tail, without any register write, is.
    set_shadow_tail(&h, CMD_SHADOW, 2);
    h.run();
    assert_eq!(sync_word(&h), 2);
    assert_eq!(h.reg(reg::CMDQ_HEAD), 2);
    assert_eq!(h.counter(counter::SHADOW_TAILS), 2);
    assert_eq!(h.counter(counter::DOORBELLS), 2);
    // A register value behind the shadow's does not move it back either.
    h.write_reg(reg::CMDQ_TAIL, 0);
    h.run();
    assert_eq!(h.reg(reg::CMDQ_HEAD), 2);
    assert_eq!(h.counter(counter::COMMANDS), 2);
}

#[test]
fn work_tail_comes_only_from_the_shadow_page() {
    let mut h = Harness::new(true);
    h.setup_ctx_with(1, 4, 4, true);
    let page = h.ctx_shadow(1);
    assert_ne!(page, 0);
    // Posted by the rule: shadow tail 1, polling 0 so the register too.
    h.post(1, nop());
    h.run();
    assert_eq!(h.completions(1).len(), 1);
    assert_eq!(
        h.counter(counter::DOORBELLS),
        2,
        "CMDQ_TAIL of CTX_ENABLE, WQ_TAIL"
    );
    assert_eq!(h.counter(counter::SHADOW_TAILS), 1);
    // The descriptor is in the ring, the tail only in the register: nothing runs.
    h.post(1, nop());
    set_shadow_tail(&h, page, 1);
    h.dev.bar2_write(4096, &2u32.to_le_bytes());
    h.run();
    assert!(h.completions(1).is_empty(), "WQ_TAIL only wakes the device");
    set_shadow_tail(&h, page, 2);
    h.run();
    assert_eq!(h.completions(1).len(), 1);
    // A context without a page on the same device still uses its register.
    h.setup_ctx(2, 4, 4);
    h.post(2, nop());
    h.run();
    assert_eq!(h.completions(2).len(), 1);
}

#[test]
fn garbage_shadow_tails_are_taken_mod_the_ring_size() {
    let mut h = Harness::new(true);
    h.setup_ctx_with(1, 4, 4, true);
    let page = h.ctx_shadow(1);
    for _ in 0..3 {
        h.post(1, nop());
    }
    // 3 modulo 16: the three posted descriptors, nothing else.
    set_shadow_tail(&h, page, 0xffff_fff3);
    h.run();
    let c = h.completions(1);
    assert_eq!(c.len(), 3);
    assert!(c.iter().all(|c| c.status == completion::OK));
    // 15 modulo 16: the rest of the ring (zeroed slots, refused descriptors), and never
    // a read outside it: the harness maps exactly the ring, so one would fault.
    set_shadow_tail(&h, page, u32::MAX);
    h.run();
    let c = h.completions(1);
    assert_eq!(c.len(), 12);
    assert!(c.iter().all(|c| c.status == completion::BAD_DESCRIPTOR));
    assert_eq!(h.counter(counter::FAULTS), 0);
    assert_eq!(h.counter(counter::WORK_COMPLETED), 15);

    // The command queue (64 entries): 0xdead_beef mod 64 = 47 zeroed slots, NOPs.
    let mut h = Harness::with_cmd_shadow(true);
    set_shadow_tail(&h, CMD_SHADOW, 0xdead_beef);
    h.run();
    assert_eq!(h.reg(reg::CMDQ_HEAD), 0xdead_beef % 64);
    assert_eq!(h.counter(counter::COMMANDS), u64::from(0xdead_beefu32 % 64));
    assert_eq!(h.counter(counter::ERRORS), 0);
}

#[test]
fn a_queue_starts_at_the_shadow_tail() {
    let mut h = Harness::new(true);
    // A page that already says 2 when the context is enabled: slots 0 and 1 are pending.
    let page = h.alloc(4096, false);
    set_shadow_tail(&h, page, 2);
    h.setup_ctx(1, 4, 4);
    let mut b = [0u8; 64];
    mem::read(&h.mem(), CTX_TABLE + 64, &mut b).unwrap();
    let mut e: CtxEntry = zerocopy::FromBytes::read_from_bytes(&b).unwrap();
    e.shadow = page;
    mem::write(&h.mem(), CTX_TABLE + 64, e.as_bytes()).unwrap();
    h.command(cmd::CTX_DISABLE, 1, 0, 0);
    h.command(cmd::CTX_ENABLE, 1, 0, 0);
    h.run();
    assert_eq!(h.completions(1).len(), 2);
    assert_eq!(
        h.counter(counter::SHADOW_TAILS),
        0,
        "the start is not a change"
    );
}

#[test]
fn polling_is_set_while_awake_and_cleared_after_the_budget() {
    let mut h = Harness::with_cmd_shadow(true);
    h.setup_ctx_with(1, 4, 4, true);
    let pages = [CMD_SHADOW, h.ctx_shadow(1)];
    let words = |h: &Harness| pages.map(|p| h.polling_word(p));
    let m = h.mem();
    let mut pace = Pace::new(SPIN);
    let t0 = Instant::now();
    assert_eq!(words(&h), [0, 0], "asleep at start");
    pace.before_round(&mut h.core, &m, t0, true);
    assert_eq!(words(&h), [1, 1], "woken: polling");
    assert!(h.core.polling());
    // Idle rounds within the budget: keep polling.
    let next = pace.after_round(&mut h.core, &m, Activity::Idle(None), t0 + SPIN / 2);
    assert_eq!(next, Next::Poll);
    assert_eq!(words(&h), [1, 1]);
    // Work restarts the budget.
    let t1 = t0 + SPIN / 2;
    assert_eq!(
        pace.after_round(&mut h.core, &m, Activity::Busy, t1),
        Next::Poll
    );
    let next = pace.after_round(&mut h.core, &m, Activity::Idle(None), t1 + SPIN / 2);
    assert_eq!(next, Next::Poll);
    // A context enabled while polling is told so at CTX_ENABLE.
    h.setup_ctx_with(2, 4, 4, true);
    assert_eq!(h.polling_word(h.ctx_shadow(2)), 1);
    // The budget runs out: polling 0 everywhere, asleep, with the backstop.
    let t2 = t1 + SPIN * 2;
    let next = pace.after_round(&mut h.core, &m, Activity::Idle(None), t2);
    assert_eq!(next, Next::Sleep(Some(t2 + BACKSTOP)));
    assert_eq!(words(&h), [0, 0]);
    assert_eq!(h.polling_word(h.ctx_shadow(2)), 0);
    assert!(!h.core.polling() && pace.asleep());
    assert_eq!(h.counter(counter::SLEEPS), 1);
    // A backstop round that finds nothing stays asleep: no flag, no second sleep counted.
    let t3 = t2 + BACKSTOP;
    let next = pace.after_round(&mut h.core, &m, Activity::Idle(None), t3);
    assert_eq!(next, Next::Sleep(Some(t3 + BACKSTOP)));
    assert_eq!(words(&h), [0, 0]);
    assert_eq!(h.counter(counter::SLEEPS), 1);
    // A throttled item's earlier instant wins over the backstop.
    let soon = t3 + Duration::from_micros(10);
    let next = pace.after_round(&mut h.core, &m, Activity::Idle(Some(soon)), t3);
    assert_eq!(next, Next::Sleep(Some(soon)));
    // A backstop round that finds work wakes it.
    assert_eq!(
        pace.after_round(&mut h.core, &m, Activity::Busy, t3),
        Next::Poll
    );
    assert_eq!(words(&h), [1, 1]);
    assert!(!pace.asleep());
}

#[test]
fn no_backstop_and_no_polling_without_shadow_pages() {
    let mut h = Harness::new(true);
    h.setup_ctx(1, 4, 4);
    let m = h.mem();
    let mut pace = Pace::new(SPIN);
    let t0 = Instant::now();
    pace.before_round(&mut h.core, &m, t0, true);
    assert!(!h.core.polling(), "nothing to poll");
    // Idle: sleeps at once (no spinning), until a doorbell.
    let next = pace.after_round(&mut h.core, &m, Activity::Idle(None), t0);
    assert_eq!(next, Next::Sleep(None));
    assert_eq!(h.counter(counter::SLEEPS), 1);
}

#[test]
fn spin_zero_never_sets_polling() {
    let mut h = Harness::with_cmd_shadow(true);
    h.setup_ctx_with(1, 4, 4, true);
    let pages = [CMD_SHADOW, h.ctx_shadow(1)];
    let m = h.mem();
    let mut pace = Pace::new(Duration::ZERO);
    let t0 = Instant::now();
    pace.before_round(&mut h.core, &m, t0, true);
    assert_eq!(
        pace.after_round(&mut h.core, &m, Activity::Busy, t0),
        Next::Poll
    );
    assert!(!h.core.polling());
    // Idle: sleeps at once, and with no page ever saying 1 there is no backstop.
    let next = pace.after_round(&mut h.core, &m, Activity::Idle(None), t0);
    assert_eq!(next, Next::Sleep(None));
    assert_eq!(pages.map(|p| h.polling_word(p)), [0, 0]);
    // Every post rings, and works.
    h.post(1, nop());
    h.run();
    assert_eq!(h.completions(1).len(), 1);
    assert_eq!(
        h.counter(counter::DOORBELLS),
        2,
        "CMDQ_TAIL of CTX_ENABLE, WQ_TAIL"
    );
}

#[test]
fn spin_us_register_overrides_the_budget_until_reset() {
    let mut h = Harness::with_cmd_shadow(true);
    h.setup_ctx_with(1, 4, 4, true);
    let m = h.mem();
    // A device started with a long budget; the driver turns polling off at run time.
    let mut pace = Pace::new(Duration::from_secs(10));
    h.write_reg(reg::SPIN_US, spin::OVERRIDE);
    let t0 = Instant::now();
    pace.before_round(&mut h.core, &m, t0, true);
    assert!(!h.core.polling(), "an override of 0 never polls");
    assert_eq!(
        pace.after_round(&mut h.core, &m, Activity::Idle(None), t0),
        Next::Sleep(None)
    );
    // An override of 50 us: polls, and sleeps once 50 us have passed (not 10 s).
    h.write_reg(reg::SPIN_US, spin::OVERRIDE | 50);
    pace.before_round(&mut h.core, &m, t0, true);
    assert!(h.core.polling());
    let later = t0 + Duration::from_micros(60);
    assert!(matches!(
        pace.after_round(&mut h.core, &m, Activity::Idle(None), later),
        Next::Sleep(Some(_))
    ));
    // Without OVERRIDE (a reset writes 0) the default is back: 60 us is within 10 s.
    h.write_reg(reg::SPIN_US, 0);
    pace.before_round(&mut h.core, &m, later, true);
    assert_eq!(
        pace.after_round(
            &mut h.core,
            &m,
            Activity::Idle(None),
            later + Duration::from_micros(60)
        ),
        Next::Poll
    );
}

/// The store-buffer handshake, both ways, deterministically: a post that lands after
/// the device's last idle round but before its last tail read keeps it awake; one that
/// lands after that read finds `polling` = 0 and rings the register.
#[test]
fn sleep_handshake_loses_no_post() {
    let mut h = Harness::with_cmd_shadow(true);
    let m = h.mem();
    let mut pace = Pace::new(SPIN);
    let t0 = Instant::now();
    pace.before_round(&mut h.core, &m, t0, true);
    assert_eq!(h.run(), Activity::Idle(None));
    // The producer stores its tail (and has not yet read `polling`) while the device
    // decides to sleep.
    put_cmd(&h, 0, sync_cmd(7));
    set_shadow_tail(&h, CMD_SHADOW, 1);
    assert!(!h.core.sleep_check(&m), "the last tail read sees the post");
    assert_eq!(h.polling_word(CMD_SHADOW), 1, "polling again");
    assert_eq!(h.run(), Activity::Idle(None));
    assert_eq!(sync_word(&h), 7);
    // Through the pace: the same race at the end of the budget keeps it polling.
    put_cmd(&h, 1, sync_cmd(8));
    set_shadow_tail(&h, CMD_SHADOW, 2);
    let next = pace.after_round(&mut h.core, &m, Activity::Idle(None), t0 + SPIN * 2);
    assert_eq!(next, Next::Poll);
    assert!(!pace.asleep());
    assert_eq!(h.counter(counter::SLEEPS), 0);
    h.run();
    assert_eq!(sync_word(&h), 8);
    // Nothing raced: it sleeps, and a producer after that sees polling = 0 and rings.
    let t1 = t0 + SPIN * 4;
    assert!(matches!(
        pace.after_round(&mut h.core, &m, Activity::Idle(None), t1),
        Next::Sleep(_)
    ));
    let rung = h.counter(counter::DOORBELLS);
    h.command(cmd::SYNC, 0, SYNC_WORD, 9);
    assert_eq!(h.counter(counter::DOORBELLS), rung + 1, "the producer rang");
    assert!(h.core.shared().take_kick());
    h.run();
    assert_eq!(sync_word(&h), 9);
    // While polling, the producer does not ring (unless forced).
    pace.before_round(&mut h.core, &m, t1, true);
    h.command(cmd::SYNC, 0, SYNC_WORD, 10);
    assert_eq!(h.counter(counter::DOORBELLS), rung + 1);
    h.forced_doorbells = true;
    h.command(cmd::SYNC, 0, SYNC_WORD, 11);
    assert_eq!(h.counter(counter::DOORBELLS), rung + 2);
    h.run();
    assert_eq!(sync_word(&h), 11);
}

#[test]
fn bus_master_off_means_no_shadow_access() {
    let mut h = Harness::with_cmd_shadow(true);
    let m = h.mem();
    let mut pace = Pace::new(SPIN);
    let t0 = Instant::now();
    pace.before_round(&mut h.core, &m, t0, true);
    assert_eq!(h.polling_word(CMD_SHADOW), 1);
    h.core.shared().set_bus_master(false);
    put_cmd(&h, 0, sync_cmd(3));
    set_shadow_tail(&h, CMD_SHADOW, 1);
    // No tail read, no flag written: the page keeps saying 1, nothing runs.
    assert_eq!(h.run(), Activity::Idle(None));
    assert!(!h.core.polling());
    let next = pace.after_round(&mut h.core, &m, Activity::Idle(None), t0);
    assert_eq!(
        next,
        Next::Sleep(None),
        "no backstop either: setting the bit kicks"
    );
    assert_eq!(h.polling_word(CMD_SHADOW), 1);
    assert_eq!(h.counter(counter::SHADOW_TAILS), 0);
    assert_eq!(sync_word(&h), 0);
    h.core.shared().set_bus_master(true);
    h.run();
    assert_eq!(sync_word(&h), 3);
}

#[test]
fn bad_shadow_base_refuses_enable() {
    let mut h = Harness::with_cmd_shadow(true);
    assert_eq!(h.reg(reg::STATUS) & status::ENABLED, status::ENABLED);
    let enable = |h: &mut Harness, lo: u32, hi: u32| {
        h.write_reg(reg::CONTROL, 0);
        h.write_reg(reg::ERROR_CODE, 0);
        h.write_reg(reg::SHADOW_BASE_LO, lo);
        h.write_reg(reg::SHADOW_BASE_HI, hi);
        h.write_reg(reg::CONTROL, control::ENABLE);
        (h.reg(reg::STATUS) & status::ENABLED, h.reg(reg::ERROR_CODE))
    };
    assert_eq!(
        enable(&mut h, CMD_SHADOW as u32 + 8, 0),
        (0, error::BAD_CONFIG)
    );
    assert_eq!(enable(&mut h, CMD_SHADOW as u32, 1), (0, error::BAD_CONFIG));
    assert_eq!(
        enable(&mut h, 0xffff_f000, 0),
        (0, error::BAD_CONFIG),
        "past RAM"
    );
    assert_eq!(enable(&mut h, 0, 0), (status::ENABLED, 0), "none");
    assert_eq!(enable(&mut h, CMD_SHADOW as u32, 0), (status::ENABLED, 0));
    // Latched: a later write has no effect until the next enable.
    h.write_reg(reg::SHADOW_BASE_LO, 0x1234);
    assert_eq!(h.sync(5), 5);
    assert_eq!(h.counter(counter::SHADOW_TAILS), 1);
}

#[test]
fn bad_ctx_shadow_refuses_ctx_enable() {
    let mut h = Harness::new(true);
    h.setup_ctx(1, 4, 4);
    let mut b = [0u8; 64];
    mem::read(&h.mem(), CTX_TABLE + 64, &mut b).unwrap();
    let good: CtxEntry = zerocopy::FromBytes::read_from_bytes(&b).unwrap();
    h.command(cmd::CTX_DISABLE, 1, 0, 0);
    h.run();
    for shadow in [0x20_0008, 1 << 40] {
        let e = CtxEntry { shadow, ..good };
        mem::write(&h.mem(), CTX_TABLE + 64, e.as_bytes()).unwrap();
        h.command(cmd::CTX_ENABLE, 1, 0, 0);
        h.run();
    }
    let codes: Vec<u32> = h.events().iter().map(|e| e.code).collect();
    assert_eq!(codes, vec![error::BAD_CONTEXT, error::ADDRESS_ERROR]);
    h.post(1, nop());
    assert_eq!(
        h.counter(counter::BAD_DOORBELL),
        1,
        "the context is not running"
    );
}

/// The real data thread, with a shadow page and no register write at all for the
/// second post (a producer that missed `polling` = 0): the backstop finds it.
#[test]
fn data_thread_polls_sleeps_and_backstops() {
    let sh = Shared::new(Arc::new(Counters::default()), true);
    let ram = Arc::new(GuestRam::anonymous(&[(0, 1 << 20)]).unwrap());
    let engine = Engine::spawn(sh.clone(), ram.clone(), Duration::from_millis(2), None).unwrap();
    let dev = Mmio::new(sh.clone());
    sh.set_bus_master(true);
    for (r, v) in [
        (reg::SHADOW_BASE_LO, CMD_SHADOW as u32),
        (reg::CTX_TABLE_LO, CTX_TABLE as u32),
        (reg::CMDQ_BASE_LO, CMDQ as u32),
        (reg::CMDQ_SIZE_LOG2, 4),
        (reg::EVQ_BASE_LO, EVQ as u32),
        (reg::EVQ_SIZE_LOG2, 4),
        (reg::CONTROL, control::ENABLE),
    ] {
        if let Some(Followup::Request(q)) = dev.bar0_write(r.into(), &v.to_le_bytes()) {
            engine.request(q);
        }
    }
    assert_eq!(dev.shared().reg(reg::STATUS), status::ENABLED);
    let m = ram.snapshot();
    let wait = |what: &str, f: &dyn Fn() -> bool| {
        let t = Instant::now();
        while !f() {
            assert!(t.elapsed() < Duration::from_secs(10), "{what}");
            std::thread::sleep(Duration::from_micros(200));
        }
    };
    let polling = || mem::load_u32(&m, CMD_SHADOW + 4).unwrap();
    let post = |slot: u64, value: u64, ring: bool| {
        let at = CMDQ + 32 * slot;
        mem::write(&m, at, sync_cmd(value).as_bytes()).unwrap();
        mem::store_u32(&m, CMD_SHADOW, slot as u32 + 1).unwrap();
        if ring {
            let _ = dev.bar0_write(reg::CMDQ_TAIL.into(), &(slot as u32 + 1).to_le_bytes());
        }
    };
    post(0, 1, true);
    wait("first SYNC", &|| mem::load_u64(&m, SYNC_WORD).unwrap() == 1);
    wait("asleep after the budget", &|| {
        polling() == 0 && sh.counters.get(counter::SLEEPS) >= 1
    });
    post(1, 2, false);
    wait("the backstop takes the tail", &|| {
        mem::load_u64(&m, SYNC_WORD).unwrap() == 2
    });
    assert_eq!(sh.counters.get(counter::DOORBELLS), 1);
    assert_eq!(sh.counters.get(counter::SHADOW_TAILS), 2);
    drop(engine);
}

#[test]
fn a_parked_fault_stretches_the_budget_to_fault_spin() {
    use super::context::{Parked, Site};
    use super::pace::FAULT_SPIN;
    let mut h = Harness::with_cmd_shadow(true);
    h.setup_ctx_with(1, 4, 4, true);
    let m = h.mem();
    let mut pace = Pace::new(SPIN);
    let t0 = Instant::now();
    pace.before_round(&mut h.core, &m, t0, true);
    h.core.ctxs[1].as_mut().expect("context 1").parked = Some(Parked {
        id: 7,
        site: Site::Fetch,
        va: 0x1000,
        write: false,
    });
    // Past the ordinary budget: still polling, the answer is expected soon.
    let next = pace.after_round(&mut h.core, &m, Activity::Idle(None), t0 + SPIN * 2);
    assert_eq!(next, Next::Poll);
    assert_eq!(h.polling_word(CMD_SHADOW), 1);
    // Past FAULT_SPIN without an answer: it sleeps after all (bounded cost).
    let t1 = t0 + FAULT_SPIN + SPIN;
    let next = pace.after_round(&mut h.core, &m, Activity::Idle(None), t1);
    assert_eq!(next, Next::Sleep(Some(t1 + BACKSTOP)));
    assert_eq!(h.polling_word(CMD_SHADOW), 0);
    // The answer came (RESUME clears `parked`): the ordinary budget again.
    h.core.ctxs[1].as_mut().expect("context 1").parked = None;
    let t2 = t1 + SPIN;
    assert_eq!(
        pace.after_round(&mut h.core, &m, Activity::Busy, t2),
        Next::Poll
    );
    let t3 = t2 + SPIN * 2;
    let next = pace.after_round(&mut h.core, &m, Activity::Idle(None), t3);
    assert_eq!(next, Next::Sleep(Some(t3 + BACKSTOP)));
}

#[test]
fn a_parked_fault_does_not_make_a_zero_budget_poll() {
    use super::context::{Parked, Site};
    let mut h = Harness::with_cmd_shadow(true);
    h.setup_ctx_with(1, 4, 4, true);
    let m = h.mem();
    let mut pace = Pace::new(Duration::ZERO);
    let t0 = Instant::now();
    pace.before_round(&mut h.core, &m, t0, true);
    h.core.ctxs[1].as_mut().expect("context 1").parked = Some(Parked {
        id: 7,
        site: Site::Fetch,
        va: 0x1000,
        write: false,
    });
    let next = pace.after_round(&mut h.core, &m, Activity::Idle(None), t0);
    assert_eq!(next, Next::Sleep(None));
    assert_eq!(h.polling_word(CMD_SHADOW), 0);
}
