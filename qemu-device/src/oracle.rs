//! The oracle (spec §8a): a second judge of the coherence invariant, fed by a guest test
//! module's own mmu notifier instead of the driver's commands, so a driver that forgets
//! an invalidation (or returns before its SYNC) cannot fool it.
//!
//! Both threads use it. The socket thread carries out `ORACLE_OP` writes itself
//! (`oracle_op`), synchronously: a report must be recorded even while the data thread is
//! stuck in the middle of a DMA step (a stalled device is the case the oracle exists for).
//! At each report it checks the context's translation table (check 1). The data thread stamps
//! every TLB entry with the clock before its walk and, after each work step, judges that
//! step's accesses against the reports (check 2, [`Oracle::judge`]).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use mnic_abi::NUM_CONTEXTS;

use crate::stale::{StaleChecker, Verdict};

/// One DMA access of the data thread, judged after its step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// The context.
    pub ctx: u16,
    /// First VA.
    pub start: u64,
    /// End VA (exclusive).
    pub end: u64,
    /// Oracle time at which the walk of its translation began.
    pub stamp: u64,
}

/// The reports per context. The stale checker's bounded log, with every report in force
/// from the moment it is recorded (the oracle has no SYNC to wait for): judging an access
/// walked at `w` against it is the same question, "a covering report newer than `w`?".
struct Reports(StaleChecker);

impl Reports {
    fn new() -> Self {
        let mut c = StaleChecker::default();
        c.sync_completed(u64::MAX);
        Reports(c)
    }
}

/// The oracle's state, shared by the socket thread and the data thread.
pub struct Oracle {
    /// Device-wide clock: the time of the last report.
    clock: AtomicU64,
    /// Last generation handed out (generations are never 0).
    last_gen: AtomicU32,
    /// Armed generation per context (0: not armed). Written under the `reports` lock, read
    /// without it on the data thread's hot path.
    gens: [AtomicU32; NUM_CONTEXTS as usize],
    reports: Mutex<Reports>,
    /// A strict-mode table violation found by the socket thread, for the data thread to
    /// turn into a halt: (context, VA).
    halt: Mutex<Option<(u16, u64)>>,
    halt_pending: AtomicBool,
}

impl Default for Oracle {
    fn default() -> Self {
        Oracle {
            clock: AtomicU64::new(0),
            last_gen: AtomicU32::new(0),
            gens: std::array::from_fn(|_| AtomicU32::new(0)),
            reports: Mutex::new(Reports::new()),
            halt: Mutex::new(None),
            halt_pending: AtomicBool::new(false),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Oracle {
    /// The oracle time now: what a walk that begins now is stamped with.
    #[inline]
    pub fn now(&self) -> u64 {
        self.clock.load(Ordering::Acquire)
    }

    /// Whether `ctx` is armed (one atomic load: the data thread asks on every access).
    #[inline]
    pub fn armed(&self, ctx: u16) -> bool {
        self.gens
            .get(usize::from(ctx))
            .is_some_and(|g| g.load(Ordering::Relaxed) != 0)
    }

    /// The generation `ctx` is armed with (0: not armed).
    pub fn generation(&self, ctx: u16) -> u32 {
        self.gens
            .get(usize::from(ctx))
            .map_or(0, |g| g.load(Ordering::Relaxed))
    }

    /// Arms `ctx` with a fresh generation and returns it (0 if there is no such context).
    /// The reports of an earlier generation are forgotten: they describe another watch.
    pub fn arm(&self, ctx: u16) -> u32 {
        let Some(slot) = self.gens.get(usize::from(ctx)) else {
            return 0;
        };
        let mut r = lock(&self.reports);
        let mut g = self
            .last_gen
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1);
        if g == 0 {
            // Wrapped after 2^32 arms: 0 means "not armed".
            g = self
                .last_gen
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_add(1);
        }
        r.0.forget(ctx);
        slot.store(g, Ordering::Relaxed);
        g
    }

    /// Disarms `ctx` if it is armed with `gen`; returns whether it was.
    pub fn disarm(&self, ctx: u16, gen: u32) -> bool {
        let mut r = lock(&self.reports);
        if gen == 0 || self.generation(ctx) != gen {
            return false;
        }
        Self::forget_locked(&mut r, &self.gens, ctx);
        true
    }

    /// Forgets `ctx` whatever its generation (CTX_DISABLE).
    pub fn forget(&self, ctx: u16) {
        let mut r = lock(&self.reports);
        Self::forget_locked(&mut r, &self.gens, ctx);
    }

    fn forget_locked(r: &mut Reports, gens: &[AtomicU32], ctx: u16) {
        if let Some(g) = gens.get(usize::from(ctx)) {
            g.store(0, Ordering::Relaxed);
        }
        r.0.forget(ctx);
    }

    /// Records a report that `[start, end)` of `ctx` is being invalidated, claimed by
    /// generation `gen`. Returns its time, or `None` if `gen` is not `ctx`'s current
    /// generation (the report is then ignored).
    pub fn record(&self, ctx: u16, gen: u32, start: u64, end: u64) -> Option<u64> {
        let mut r = lock(&self.reports);
        if gen == 0 || self.generation(ctx) != gen {
            return None;
        }
        // Advanced under the lock: reports are logged in clock order.
        let t = self.clock.fetch_add(1, Ordering::AcqRel) + 1;
        r.0.record(ctx, t, start, end);
        Some(t)
    }

    /// The accesses among `accesses` that a report newer than their walk covers, each
    /// with that report's time. One lock for the whole step.
    pub fn judge(&self, accesses: &[Access]) -> Vec<(Access, u64)> {
        let r = lock(&self.reports);
        accesses
            .iter()
            .filter_map(|a| match r.0.check(a.ctx, a.start, a.end, a.stamp) {
                Verdict::Stale { inval_seq } => Some((*a, inval_seq)),
                // Older than the window of reports: not judged (spec §8a).
                Verdict::Fresh | Verdict::Unchecked => None,
            })
            .collect()
    }

    /// Whether a report newer than `since` covers `va` of `ctx`: a walk that began at
    /// `since` was overtaken by it, and may have read the table before or after the
    /// driver's change (spec §8a).
    pub fn overtaken(&self, ctx: u16, va: u64, since: u64) -> bool {
        if !self.armed(ctx) || self.now() == since {
            return false;
        }
        let r = lock(&self.reports);
        matches!(
            r.0.check(ctx, va, va.saturating_add(1), since),
            Verdict::Stale { .. }
        )
    }

    /// Asks the data thread to halt the device (a strict-mode table violation).
    pub fn request_halt(&self, ctx: u16, va: u64) {
        let mut h = lock(&self.halt);
        h.get_or_insert((ctx, va));
        self.halt_pending.store(true, Ordering::Release);
    }

    /// Whether a halt was asked for and not taken yet (one atomic load).
    #[inline]
    pub fn halt_pending(&self) -> bool {
        self.halt_pending.load(Ordering::Acquire)
    }

    /// Data thread: the halt asked for, if any.
    pub fn take_halt(&self) -> Option<(u16, u64)> {
        let mut h = lock(&self.halt);
        self.halt_pending.store(false, Ordering::Release);
        h.take()
    }

    /// Device reset: every context disarmed, every report and pending halt forgotten. The
    /// clock and the generation counter go on, so no old generation is handed out again.
    pub fn clear(&self) {
        let mut r = lock(&self.reports);
        for g in &self.gens {
            g.store(0, Ordering::Relaxed);
        }
        *r = Reports::new();
        drop(r);
        self.take_halt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(ctx: u16, start: u64, end: u64, stamp: u64) -> Access {
        Access {
            ctx,
            start,
            end,
            stamp,
        }
    }

    #[test]
    fn generations() {
        let o = Oracle::default();
        assert!(!o.armed(3));
        let g1 = o.arm(3);
        assert_ne!(g1, 0);
        assert!(o.armed(3));
        let g2 = o.arm(3);
        assert!(g2 != 0 && g2 != g1, "a fresh generation per ARM");
        assert_eq!(o.arm(NUM_CONTEXTS as u16), 0, "no such context");
        assert_eq!(o.record(3, g1, 0, 4096), None, "old generation");
        assert_eq!(o.record(4, g2, 0, 4096), None, "other context");
        assert_eq!(o.record(4, 0, 0, 4096), None, "unarmed context claims 0");
        assert!(!o.disarm(3, g1));
        assert!(o.armed(3));
        assert!(o.disarm(3, g2));
        assert!(!o.armed(3));
        assert_eq!(o.record(3, g2, 0, 4096), None, "disarmed");
        let g3 = o.arm(3);
        o.forget(3);
        assert!(!o.armed(3));
        assert_eq!(o.record(3, g3, 0, 4096), None, "forgotten");
        // Generations go on after a reset.
        let g4 = o.arm(5);
        o.clear();
        assert!(!o.armed(5));
        assert!(o.arm(5) > g4);
    }

    #[test]
    fn judges_accesses_walked_before_a_covering_report() {
        let o = Oracle::default();
        let g = o.arm(1);
        let g2 = o.arm(2);
        let before = o.now();
        assert_eq!(o.record(1, g, 0x1000, 0x3000), Some(before + 1));
        let after = o.now();
        assert_eq!(after, before + 1);
        let accesses = [
            access(1, 0x2ff8, 0x3000, before), // covered, walked before: violation
            access(1, 0x3000, 0x3008, before), // not covered
            access(1, 0x1000, 0x1008, after),  // walked after the report
            access(2, 0x1000, 0x1008, before), // another context
            access(1, 0x0ff8, 0x1001, before), // overlaps by one byte
        ];
        let v = o.judge(&accesses);
        assert_eq!(v, vec![(accesses[0], after), (accesses[4], after)]);
        // Re-arming forgets the old generation's reports.
        assert_ne!(o.arm(1), g);
        assert!(o.judge(&accesses).is_empty());
        assert!(o.record(2, g2, 0, u64::MAX).is_some());
        assert_eq!(o.judge(&accesses[3..4]).len(), 1, "the whole address space");
    }

    #[test]
    fn reports_are_bounded_per_context() {
        let o = Oracle::default();
        let g = o.arm(1);
        let old = o.now();
        o.record(1, g, 0x20_0000, 0x20_1000);
        let lone = [access(1, 0x20_0000, 0x20_0008, old)];
        assert_eq!(o.judge(&lone).len(), 1);
        for _ in 0..crate::stale::WINDOW {
            o.record(1, g, 0x10_0000, 0x10_1000);
        }
        // The first report left the window: what it alone covers is not judged any more.
        assert!(o.judge(&lone).is_empty());
        assert_eq!(o.judge(&[access(1, 0x10_0000, 0x10_0008, old)]).len(), 1);
    }

    #[test]
    fn halt_requests() {
        let o = Oracle::default();
        assert!(!o.halt_pending());
        o.request_halt(3, 0x1000);
        o.request_halt(4, 0x2000);
        assert!(o.halt_pending());
        assert_eq!(o.take_halt(), Some((3, 0x1000)), "the first one");
        assert!(!o.halt_pending());
        assert_eq!(o.take_halt(), None);
        o.request_halt(3, 0x1000);
        o.clear();
        assert!(!o.halt_pending());
    }
}
