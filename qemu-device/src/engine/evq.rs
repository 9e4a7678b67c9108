//! The event queue (spec §9): a ring the device writes, with phase bits, and a
//! backlog inside the device for events that do not fit yet.
//!
//! Indices and phase bits follow spec §7a (`mnic_abi::ring`): the driver's `EVQ_HEAD` is
//! taken modulo the ring size, so the device can tell "full" from "empty" only by keeping
//! one slot free: at most `entries - 1` events are unconsumed in the ring at any time.
//! The device never overwrites an unconsumed slot; the rest waits in the backlog.
//!
//! Bounded: at most [`BACKLOG_MAX`] ERROR and WORK_DONE events wait (more are dropped and
//! counted), and at most one FAULT event per context. A context has at most one parked
//! fault, and the FAULT event of a fault that ended (RESUME, ABORT, the context disabled)
//! before it reached the ring is withdrawn ([`EventQueue::withdraw_fault`]), so a guest
//! that never consumes events while it faults, resumes and re-enables a context in a loop
//! cannot grow the backlog.

use std::collections::VecDeque;

use mnic_abi::{counter, event, ring, Event, NUM_CONTEXTS};
use zerocopy::IntoBytes;

use crate::counters::Counters;
use crate::mem::{self, AddrError, GuestMem};

/// Events waiting inside the device beyond which ERROR and WORK_DONE events are
/// dropped (FAULT events never are: at most one per context waits).
pub const BACKLOG_MAX: usize = 4096;

/// Most events that ever wait inside the device: [`BACKLOG_MAX`] others and one FAULT
/// per context.
pub const BACKLOG_BOUND: usize = BACKLOG_MAX + NUM_CONTEXTS as usize;

/// Words of the bitmap of contexts with a FAULT event in the backlog.
const FAULT_WORDS: usize = NUM_CONTEXTS as usize / 64;

/// Size of one ring entry.
const ENTRY: u64 = size_of::<Event>() as u64;

/// The device side of the event ring.
#[derive(Default)]
pub struct EventQueue {
    base: u64,
    log2: u8,
    /// Events written since enable (free-running; the slot is `produced % entries`).
    produced: u64,
    backlog: VecDeque<Event>,
    /// Contexts with a FAULT event in `backlog` (at most one each).
    faults: [u64; FAULT_WORDS],
}

/// The bitmap word and bit of context `ctx`, if it is one.
fn fault_bit(ctx: u16) -> Option<(usize, u64)> {
    let c = usize::from(ctx);
    (c < NUM_CONTEXTS as usize).then(|| (c / 64, 1u64 << (c % 64)))
}

impl EventQueue {
    /// A queue over the ring at `base` with `1 << log2` entries (validated by the caller).
    pub fn new(base: u64, log2: u8) -> Self {
        EventQueue {
            base,
            log2,
            produced: 0,
            backlog: VecDeque::new(),
            faults: [0; FAULT_WORDS],
        }
    }

    fn entries(&self) -> u64 {
        1u64 << self.log2
    }

    /// The producer index (`EVQ_TAIL`).
    pub fn tail(&self) -> u32 {
        ring::slot(self.produced, self.entries().max(1)) as u32
    }

    /// Events waiting inside the device.
    pub fn backlog(&self) -> usize {
        self.backlog.len()
    }

    /// Queues `ev`. Over [`BACKLOG_MAX`] waiting events a non-fault event is dropped
    /// and counted. A FAULT event replaces one of the same context still waiting (that
    /// fault has ended: a context has one parked fault at a time).
    pub fn post(&mut self, ev: Event, counters: &Counters) {
        if ev.kind == event::FAULT {
            if let Some((w, bit)) = fault_bit(ev.ctx) {
                self.withdraw_fault(ev.ctx);
                self.faults[w] |= bit;
                self.backlog.push_back(ev);
                return;
            }
        }
        if self.backlog.len() >= BACKLOG_MAX {
            counters.inc(counter::EVENTS_DROPPED);
            return;
        }
        self.backlog.push_back(ev);
    }

    /// The fault of context `ctx` ended: its FAULT event, if it has not reached the ring
    /// yet, is withdrawn (the driver never learns of a fault that is already over).
    pub fn withdraw_fault(&mut self, ctx: u16) {
        let Some((w, bit)) = fault_bit(ctx) else {
            return;
        };
        if self.faults[w] & bit != 0 {
            self.faults[w] &= !bit;
            self.backlog
                .retain(|e| !(e.kind == event::FAULT && e.ctx == ctx));
        }
    }

    /// Writes as many waiting events as the ring has room for, given the driver's
    /// consumer index `head`. Returns how many were written.
    pub fn flush(&mut self, m: &GuestMem, head: u32) -> Result<usize, AddrError> {
        let n = self.entries();
        if self.log2 == 0 {
            return Ok(0);
        }
        let tail = ring::slot(self.produced, n);
        let mut free = ring::free(u64::from(head), tail, n);
        let mut written = 0;
        while free > 0 {
            let Some(mut ev) = self.backlog.front().copied() else {
                break;
            };
            let slot = self.base + ring::slot(self.produced, n) * ENTRY;
            let phase = ring::phase(self.produced, n);
            // The entry first with the old phase, then the flags byte with a release
            // store: a driver that sees the new phase sees the whole entry.
            ev.flags = ev.flags_with_phase(!phase);
            mem::write(m, slot, ev.as_bytes())?;
            let flags_at = slot + Event::PHASE_OFFSET as u64;
            mem::store_u8(m, flags_at, ev.flags_with_phase(phase))?;
            self.backlog.pop_front();
            if ev.kind == event::FAULT {
                if let Some((w, bit)) = fault_bit(ev.ctx) {
                    self.faults[w] &= !bit;
                }
            }
            self.produced += 1;
            free -= 1;
            written += 1;
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::GuestRam;
    use proptest::prelude::*;
    use zerocopy::FromBytes;

    fn read_slot(m: &GuestMem, i: u64) -> Event {
        let mut b = [0u8; 32];
        mem::read(m, i * ENTRY, &mut b).unwrap();
        Event::read_from_bytes(&b).unwrap()
    }

    fn ev(kind: u8, id: u64) -> Event {
        Event {
            kind,
            id,
            ..Event::default()
        }
    }

    #[test]
    fn phase_wrap_and_room() {
        let ram = GuestRam::anonymous(&[(0, 0x1000)]).unwrap();
        let m = ram.snapshot();
        let c = Counters::default();
        let mut q = EventQueue::new(0, 4);
        for i in 0..20 {
            q.post(ev(event::WORK_DONE, i), &c);
        }
        // 16 slots, one kept free.
        assert_eq!(q.flush(&m, 0).unwrap(), 15);
        assert_eq!(q.tail(), 15);
        assert_eq!(q.backlog(), 5);
        for i in 0..15 {
            let e = read_slot(&m, i);
            assert_eq!((e.id, e.flags & event::FLAG_PHASE), (i, 1));
        }
        assert_eq!(read_slot(&m, 15).kind, 0, "slot 15 untouched");
        // The driver consumes 10: room for 10 more, wrapping with phase 0.
        assert_eq!(q.flush(&m, 10).unwrap(), 5);
        assert_eq!(read_slot(&m, 15).flags & event::FLAG_PHASE, 1);
        for i in 0..4 {
            let e = read_slot(&m, i);
            assert_eq!((e.id, e.flags & event::FLAG_PHASE), (16 + i, 0));
        }
        assert_eq!(q.tail(), 4);
        assert_eq!(q.flush(&m, 10).unwrap(), 0);
    }

    #[test]
    fn backlog_drops_all_but_faults() {
        let c = Counters::default();
        let mut q = EventQueue::new(0, 4);
        for i in 0..(BACKLOG_MAX as u64 + 3) {
            q.post(ev(event::ERROR, i), &c);
        }
        q.post(ev(event::FAULT, 99), &c);
        assert_eq!(q.backlog(), BACKLOG_MAX + 1);
        assert_eq!(c.get(counter::EVENTS_DROPPED), 3);
    }

    #[test]
    fn one_waiting_fault_per_context() {
        let ram = GuestRam::anonymous(&[(0, 0x1000)]).unwrap();
        let m = ram.snapshot();
        let c = Counters::default();
        let mut q = EventQueue::new(0, 4);
        let fault = |ctx: u16, id: u64| Event {
            ctx,
            ..ev(event::FAULT, id)
        };
        for id in 1..=1000 {
            q.post(fault(3, id), &c);
            q.post(fault(4, id), &c);
        }
        assert_eq!(
            q.backlog(),
            2,
            "only the newest fault of each context waits"
        );
        q.withdraw_fault(4);
        q.withdraw_fault(4);
        q.withdraw_fault(u16::MAX);
        assert_eq!(q.backlog(), 1);
        q.post(fault(4, 1001), &c);
        assert_eq!(q.flush(&m, 0).unwrap(), 2);
        assert_eq!(
            (read_slot(&m, 0).ctx, read_slot(&m, 0).id),
            (3, 1000),
            "the live fault of context 3"
        );
        assert_eq!((read_slot(&m, 1).ctx, read_slot(&m, 1).id), (4, 1001));
        // Delivered events are the driver's: a withdrawal no longer touches them.
        q.withdraw_fault(3);
        q.post(fault(3, 1002), &c);
        assert_eq!(q.backlog(), 1);
        // With the others capped, the backlog stays within its bound.
        for i in 0..(2 * BACKLOG_BOUND as u64) {
            q.post(ev(event::ERROR, i), &c);
            q.post(fault((i % 300) as u16, i), &c);
        }
        assert!(q.backlog() <= BACKLOG_BOUND, "{}", q.backlog());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// A consumer that follows the phase bit sees every event exactly once, in
        /// order, whatever the interleaving of posts and consumption.
        #[test]
        fn consumer_sees_every_event_once(steps in prop::collection::vec((0u8..8, 0u8..20), 1..60)) {
            let ram = GuestRam::anonymous(&[(0, 0x1000)]).unwrap();
            let m = ram.snapshot();
            let c = Counters::default();
            let mut q = EventQueue::new(0, 4);
            let (mut posted, mut seen, mut head) = (0u64, 0u64, 0u64);
            for (post, consume) in steps {
                for _ in 0..post {
                    q.post(ev(event::WORK_DONE, posted), &c);
                    posted += 1;
                }
                q.flush(&m, (head % 16) as u32).unwrap();
                for _ in 0..consume {
                    let e = read_slot(&m, ring::slot(head, 16));
                    if !e.is_new(ring::phase(head, 16)) {
                        break;
                    }
                    prop_assert_eq!(e.id, seen);
                    seen += 1;
                    head += 1;
                }
            }
            prop_assert!(seen <= posted);
            prop_assert_eq!(posted - seen, q.backlog() as u64 + (q.produced - head));
        }
    }
}
