//! One poll round of the state machine: shadow tails, events, a bounded batch of
//! commands, a bounded batch of fabric deliveries, one step of each enabled context in
//! round-robin order, events again, interrupts.

use std::time::Instant;

use mnic_abi::counter;

use super::state::Core;
use super::step::Step;
use crate::mem::GuestMem;

/// What a poll achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activity {
    /// Something happened; poll again.
    Busy,
    /// Nothing to do until woken, or until the instant (a throttled traffic item).
    Idle(Option<Instant>),
}

impl Core {
    /// One round: shadow tails, events, up to `CMD_BUDGET` commands, one step of each runnable
    /// context, events again, interrupts. Bounded work; holds no state in `m` after
    /// it returns.
    pub fn poll(&mut self, m: &GuestMem) -> Activity {
        let a = self.poll_round(m);
        if self.tlb_hits != 0 {
            self.sh
                .counters
                .add(counter::TLB_HITS, std::mem::take(&mut self.tlb_hits));
        }
        a
    }

    fn poll_round(&mut self, m: &GuestMem) -> Activity {
        if !self.enabled || self.halted {
            // Peers still get their answers (NO_CONTEXT); no memory is touched.
            return if self.serve_fabric(m) {
                Activity::Busy
            } else {
                Activity::Idle(None)
            };
        }
        if !self.sh.bus_master() {
            // No DMA at all (spec §3); setting the bit kicks us.
            self.sh.counters.inc(counter::DMA_REFUSED);
            return Activity::Idle(None);
        }
        // An oracle halt is applied here so that its ERROR event is flushed below.
        self.stopped();
        // The queues with shadow pages take their tails now (spec §4a).
        self.refresh_tails(m);
        let mut busy = self.flush_events(m);
        busy |= self.run_commands(m);
        // Between commands, like work steps: a SYNC fences the network's accesses too.
        busy |= self.serve_fabric(m);
        let mut deadline: Option<Instant> = None;
        let n = self.ctxs.len();
        for c in self.live.round_robin(self.rr) {
            if self.stopped() {
                break;
            }
            match self.step_ctx(m, c) {
                Step::Progress => busy = true,
                Step::Idle => {}
                Step::Until(t) => deadline = Some(deadline.map_or(t, |d| d.min(t))),
            }
        }
        self.rr = (self.rr + 1) % n;
        // A halt asked for during the last step gets its ERROR event out with this round.
        self.stopped();
        busy |= self.flush_events(m);
        let bits = std::mem::take(&mut self.irq_pending);
        self.raise(bits);
        if busy {
            Activity::Busy
        } else {
            Activity::Idle(deadline)
        }
    }

    /// Polls until idle or `max_rounds` rounds (tests and tools).
    pub fn run_until_idle(&mut self, m: &GuestMem, max_rounds: usize) -> Activity {
        for _ in 0..max_rounds {
            if let a @ Activity::Idle(_) = self.poll(m) {
                return a;
            }
        }
        Activity::Busy
    }
}
