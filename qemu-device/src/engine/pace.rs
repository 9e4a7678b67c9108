//! When the data thread polls and when it sleeps (spec §4a): the spin budget, the sleep
//! handshake's place, the backstop. The thread asks [`Pace`] after every round; the
//! shadow-page accesses themselves are `shadow`'s.
//!
//! Two states. *Awake*: rounds follow each other; while the device polls shadow pages
//! (`Core::polling`) an idle round still polls again until the spin budget has passed
//! since the last work or kick, then the handshake decides. *Asleep*: the thread waits
//! for a kick (doorbell register, request, bus mastering), a throttled item's instant, or
//! the backstop; a round after the backstop that finds nothing leaves it asleep (and
//! `polling` at 0). Without shadow pages (or with a budget of 0) an idle round sleeps at
//! once and nothing but a kick or an instant wakes it, as before shadow pages existed.

use std::time::{Duration, Instant};

use mnic_abi::{counter, reg, spin};

use super::poll::Activity;
use super::state::Core;
use crate::mem::GuestMem;

/// The reference model's spin budget (`mnic-device serve --spin-us`).
pub const DEFAULT_SPIN: Duration = Duration::from_micros(200);

/// The least spin budget while a context has a parked fault (spec §4a): the driver's
/// RESUME or ABORT usually arrives within a millisecond, and polling for it spares every
/// fault a trapped doorbell and a wake-up of this thread.
pub const FAULT_SPIN: Duration = Duration::from_millis(2);

/// Longest sleep while the device has a shadow page to poll: bounds the delay of a post
/// whose producer missed `polling` = 0 (a guest without a real fence, spec §4a).
pub const BACKSTOP: Duration = Duration::from_millis(5);

/// What the data thread does after a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Another round now.
    Poll,
    /// Sleep until kicked, or until the instant.
    Sleep(Option<Instant>),
}

/// The data thread's polling policy.
#[derive(Debug)]
pub struct Pace {
    /// The device's own budget; `SPIN_US` with `OVERRIDE` replaces it until a reset.
    default_spin: Duration,
    /// The last round that found work, or the last kick.
    last_work: Instant,
    /// Went to sleep and nothing woke it yet (a backstop round does not).
    asleep: bool,
}

impl Pace {
    /// A policy with spin budget `spin` (zero: never poll), starting asleep.
    pub fn new(spin: Duration) -> Self {
        Pace {
            default_spin: spin,
            last_work: Instant::now(),
            asleep: true,
        }
    }

    /// The budget in force: the driver's `SPIN_US` override, or the device's default;
    /// at least [`FAULT_SPIN`] while a fault waits for its answer (a budget of 0 stays 0:
    /// then nothing polls).
    fn spin(&self, core: &Core) -> Duration {
        let r = core.sh.reg(reg::SPIN_US);
        let base = if r & spin::OVERRIDE != 0 {
            Duration::from_micros(u64::from(r & spin::US_MASK))
        } else {
            self.default_spin
        };
        if !base.is_zero() && core.has_parked_fault() {
            base.max(FAULT_SPIN)
        } else {
            base
        }
    }

    /// Whether it is asleep (a backstop round keeps it so).
    pub fn asleep(&self) -> bool {
        self.asleep
    }

    /// Before a round at `now`; `kicked`: a doorbell register write, a request or
    /// bus mastering woke the thread (or came while it was awake).
    pub fn before_round(&mut self, core: &mut Core, m: &GuestMem, now: Instant, kicked: bool) {
        if kicked {
            self.wake(core, m, now);
        }
    }

    /// Awake at `now`: the budget starts again, and the device polls (writes `polling`
    /// = 1) if it has a budget and a shadow page.
    fn wake(&mut self, core: &mut Core, m: &GuestMem, now: Instant) {
        self.asleep = false;
        self.last_work = now;
        if !self.spin(core).is_zero() && !core.polling() {
            core.set_polling(m, true);
        }
    }

    /// After a round that came to `act`, at `now`: poll again, or sleep (after the
    /// handshake, if the device was polling).
    pub fn after_round(
        &mut self,
        core: &mut Core,
        m: &GuestMem,
        act: Activity,
        now: Instant,
    ) -> Next {
        let until = match act {
            Activity::Busy => {
                self.wake(core, m, now);
                return Next::Poll;
            }
            Activity::Idle(until) => until,
        };
        if core.polling() {
            if now.saturating_duration_since(self.last_work) < self.spin(core) {
                return Next::Poll;
            }
            if !core.sleep_check(m) {
                // A post raced the decision: it is work.
                self.last_work = now;
                return Next::Poll;
            }
        }
        if !self.asleep {
            self.asleep = true;
            core.sh.counters.inc(counter::SLEEPS);
        }
        // The backstop is for a producer that missed `polling` = 0; with a budget of 0
        // no page ever said 1.
        let backstop = (!self.spin(core).is_zero() && core.has_shadows()).then(|| now + BACKSTOP);
        Next::Sleep(match (until, backstop) {
            (Some(u), Some(b)) => Some(u.min(b)),
            (u, b) => u.or(b),
        })
    }
}
