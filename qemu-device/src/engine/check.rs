//! What every DMA access of a work step passes through: the stale checker (spec §8) and
//! the oracle's record when it is translated, the DMA gate (an injected stall, bus
//! mastering, a pending halt) right before it touches memory, and the oracle's verdict
//! when the step ends (spec §8a).

use std::time::Duration;

use mnic_abi::{counter, error};

use super::work::AccessErr;
use super::Core;
use crate::oracle::Access;
use crate::stale::Verdict;

impl Core {
    /// Judges an access of `[va, va + len)` by context `c` through translations walked at
    /// command `seq` and oracle time `stamp`: the stale checker now, the oracle (when `c`
    /// is armed) when the step ends.
    pub(super) fn judge(
        &mut self,
        c: u16,
        va: u64,
        len: u64,
        seq: u64,
        stamp: u64,
    ) -> Result<(), AccessErr> {
        let end = va.saturating_add(len);
        match self.checker.check(c, va, end, seq) {
            Verdict::Fresh => {}
            Verdict::Unchecked => self.sh.counters.inc(counter::STALE_UNCHECKED),
            Verdict::Stale { inval_seq } => {
                self.sh.counters.inc(counter::STALE_ACCESSES);
                tracing::warn!(ctx = c, va, walked = seq, inval_seq, "stale access");
                if self.strict() {
                    self.halt(error::STALE_ACCESS, c, va);
                    return Err(AccessErr::Halted);
                }
            }
        }
        // One atomic load when the context is not armed: nothing else on the hot path.
        if self.sh.oracle.armed(c) {
            self.oracle_pieces.push(Access {
                ctx: c,
                start: va,
                end,
                stamp,
            });
        }
        Ok(())
    }

    /// Right before an access touches guest memory, after its translation: sleeps an
    /// armed `DEBUG_STALL_MS` if this is COPY data (`copy_data`: the stall is meant to catch
    /// the engine holding translations of user buffers, not a descriptor fetch or a
    /// completion write), then lets the access through only if the device may still master
    /// the bus and no halt is pending. A refused access did not happen: what `judge`
    /// recorded for the oracle since `mark` is taken back.
    pub(super) fn dma_gate(&mut self, mark: usize, copy_data: bool) -> Result<(), AccessErr> {
        let ms = if copy_data { self.sh.take_stall() } else { 0 };
        if ms != 0 {
            tracing::info!(ms, "DEBUG_STALL_MS: the engine stalls before an access");
            self.sh.stall(Duration::from_millis(u64::from(ms)));
        }
        let refused = if !self.sh.bus_master() {
            self.sh.counters.inc(counter::DMA_REFUSED);
            AccessErr::Refused
        } else if self.sh.oracle.halt_pending() {
            // The socket thread found a violation in strict mode (maybe while we slept).
            AccessErr::Halted
        } else {
            return Ok(());
        };
        self.oracle_pieces.truncate(mark);
        Err(refused)
    }

    /// The end of a work step: the oracle judges each of its accesses of armed contexts
    /// against the reports newer than its translation. Each violating access is counted;
    /// in strict mode the first halts the device.
    pub(super) fn oracle_judge(&mut self) {
        let mut pieces = std::mem::take(&mut self.oracle_pieces);
        for (a, t) in self.sh.oracle.judge(&pieces) {
            self.sh.counters.inc(counter::ORACLE_VIOLATIONS);
            tracing::warn!(
                ctx = a.ctx,
                va = a.start,
                len = a.end - a.start,
                walked = a.stamp,
                report = t,
                "oracle: access through a translation the kernel had taken away"
            );
            if self.strict() && !self.halted {
                self.halt(error::ORACLE_VIOLATION, a.ctx, a.start);
            }
        }
        // Keeps the allocation for the next step.
        pieces.clear();
        self.oracle_pieces = pieces;
    }
}
