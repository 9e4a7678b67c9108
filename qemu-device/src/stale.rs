//! The stale-access checker (spec §8): the device checks the coherence invariant on
//! itself.
//!
//! Every invalidation command (INVALIDATE_RANGE, INVALIDATE_CTX, CTX_DISABLE) is
//! recorded with its sequence number; a SYNC with sequence number `t` that completed
//! fences every invalidation with a smaller number (commands run strictly in order).
//! A DMA access through a translation walked at sequence `w` is stale if a fenced
//! invalidation with sequence `> w` covers the accessed range: the driver has been
//! told that no such access can happen any more.

use std::collections::VecDeque;

/// Invalidations remembered per context.
pub const WINDOW: usize = 4096;

/// One recorded invalidation.
#[derive(Clone, Copy, Debug)]
struct Inval {
    seq: u64,
    start: u64,
    end: u64,
}

#[derive(Default)]
struct CtxLog {
    invals: VecDeque<Inval>,
    /// Highest sequence number pushed out of the window.
    evicted_max: u64,
}

/// What the checker says about one access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed.
    Fresh,
    /// Violates the invariant: the invalidation with this sequence number, fenced by a
    /// completed SYNC, covers the access.
    Stale {
        /// Sequence number of the invalidation.
        inval_seq: u64,
    },
    /// The translation is older than the window: not judged.
    Unchecked,
}

/// The checker's state.
#[derive(Default)]
pub struct StaleChecker {
    /// Indexed by context (a vector, not a hash map: `check` runs for every DMA piece).
    logs: Vec<CtxLog>,
    /// Sequence number of the last completed SYNC (0: none).
    last_sync: u64,
}

impl StaleChecker {
    /// Records an invalidation of `[start, end)` of `ctx` at command `seq`.
    pub fn record(&mut self, ctx: u16, seq: u64, start: u64, end: u64) {
        let i = usize::from(ctx);
        if self.logs.len() <= i {
            self.logs.resize_with(i + 1, CtxLog::default);
        }
        let log = &mut self.logs[i];
        log.invals.push_back(Inval { seq, start, end });
        if log.invals.len() > WINDOW {
            if let Some(old) = log.invals.pop_front() {
                log.evicted_max = log.evicted_max.max(old.seq);
            }
        }
    }

    /// A SYNC with sequence number `seq` wrote its value.
    pub fn sync_completed(&mut self, seq: u64) {
        self.last_sync = self.last_sync.max(seq);
    }

    /// Judges an access of `[start, end)` by `ctx` through a translation walked at `w`.
    pub fn check(&self, ctx: u16, start: u64, end: u64, w: u64) -> Verdict {
        let Some(log) = self.logs.get(usize::from(ctx)) else {
            return Verdict::Fresh;
        };
        // Newest first; only invalidations after the walk matter.
        for i in log.invals.iter().rev() {
            if i.seq <= w {
                break;
            }
            if i.seq < self.last_sync && i.start < end && start < i.end {
                return Verdict::Stale { inval_seq: i.seq };
            }
        }
        if w < log.evicted_max {
            Verdict::Unchecked
        } else {
            Verdict::Fresh
        }
    }

    /// Forgets what was recorded for `ctx`.
    pub fn forget(&mut self, ctx: u16) {
        if let Some(log) = self.logs.get_mut(usize::from(ctx)) {
            *log = CtxLog::default();
        }
    }

    /// Forgets everything (device reset).
    pub fn clear(&mut self) {
        self.logs.clear();
        self.last_sync = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_only_after_a_covering_fenced_invalidation() {
        let mut c = StaleChecker::default();
        // Translation walked at seq 3; invalidation of [0x1000, 0x2000) at seq 5.
        c.record(1, 5, 0x1000, 0x2000);
        assert_eq!(c.check(1, 0x1000, 0x1008, 3), Verdict::Fresh, "no SYNC yet");
        c.sync_completed(6);
        assert_eq!(
            c.check(1, 0x1ff8, 0x2000, 3),
            Verdict::Stale { inval_seq: 5 }
        );
        assert_eq!(c.check(1, 0x2000, 0x2008, 3), Verdict::Fresh, "not covered");
        assert_eq!(
            c.check(2, 0x1000, 0x1008, 3),
            Verdict::Fresh,
            "other context"
        );
        assert_eq!(
            c.check(1, 0x1000, 0x1008, 5),
            Verdict::Fresh,
            "walked after"
        );
        c.record(2, 7, 0x1000, 0x2000);
        c.sync_completed(8);
        c.forget(1);
        assert_eq!(c.check(1, 0x1000, 0x1008, 3), Verdict::Fresh, "forgotten");
        assert_eq!(
            c.check(2, 0x1000, 0x1008, 3),
            Verdict::Stale { inval_seq: 7 }
        );
        c.forget(200);
        c.clear();
        assert_eq!(c.check(2, 0x1000, 0x1008, 3), Verdict::Fresh);
    }

    #[test]
    fn sync_before_the_invalidation_does_not_fence_it() {
        let mut c = StaleChecker::default();
        c.sync_completed(4);
        c.record(1, 5, 0, u64::MAX);
        assert_eq!(c.check(1, 0, 8, 1), Verdict::Fresh);
        c.sync_completed(7);
        assert_eq!(c.check(1, 0, 8, 1), Verdict::Stale { inval_seq: 5 });
    }

    #[test]
    fn window_overflow_is_unchecked() {
        let mut c = StaleChecker::default();
        for s in 0..(WINDOW as u64 + 10) {
            c.record(1, 100 + s, 0x10_0000, 0x10_1000);
        }
        c.sync_completed(u64::MAX);
        assert_eq!(c.check(1, 0, 8, 50), Verdict::Unchecked);
        assert_eq!(c.check(1, 0, 8, 200), Verdict::Fresh);
        assert!(matches!(
            c.check(1, 0x10_0000, 0x10_0008, 50),
            Verdict::Stale { .. }
        ));
    }
}
