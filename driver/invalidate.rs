// SPDX-License-Identifier: GPL-2.0
//! Taking translations down: the mmu notifier callbacks of every registration (`Region`), and
//! the same steps started by the driver itself (deregistration).
//!
//! This is where the invariant holds: an invalidation clears the leaves of its range, posts
//! `INVALIDATE_RANGE` + `SYNC`, and returns only once the SYNC has executed (or the device is
//! known to be stopped), so the device never touches the old page afterwards (`docs/spec.md`
//! §7; the rules are listed in `docs/driver.md`). Nothing here allocates: invalidations run
//! in memory reclaim.

use kernel::{
    mm::mmu_notifier::{IntervalNotifierOps, Invalidated, Invalidation, WouldBlock},
    prelude::*,
    sync::{atomic::Relaxed, lock::mutex::MutexBackend, Mutex},
};

use crate::abi::{self, Command};
use crate::cmd_ring::Ticket;
use crate::context::{Ctx, CtxState, Region};
use crate::observe::InvalSpan;

impl CtxState {
    /// The command that makes the device forget [start, end) and anything left unflushed.
    pub(crate) fn invalidation(&self, ctx: u16, start: u64, end: u64) -> Command {
        if self.unflushed {
            Command {
                opcode: abi::cmd::INVALIDATE_CTX,
                ctx,
                ..Command::default()
            }
        } else {
            Command {
                opcode: abi::cmd::INVALIDATE_RANGE,
                ctx,
                arg0: start,
                arg1: end - start,
                ..Command::default()
            }
        }
    }
}

impl IntervalNotifierOps for Region {
    type Locked = CtxState;
    type Backend = MutexBackend;
    type Finish = (Ticket, InvalSpan);

    fn user_lock(&self) -> &Mutex<CtxState> {
        &self.ctx.state
    }

    /// Steps 1 and 2 of the invariant: clear the entries, post INVALIDATE + SYNC. Step 3 (the
    /// wait) is in `invalidate_finish`, so one munmap over many registrations waits once.
    fn invalidate<'a>(
        &'a self,
        inv: Invalidation<'a, Self>,
    ) -> Result<Invalidated<'a, Self>, WouldBlock<'a>> {
        let ctx = &self.ctx;
        let mut st = inv.lock()?;
        let (start, end) = inv.clamped();
        let cleared = st.table.clear(start as u64, end as u64);
        let span = self.inval_span(&inv, &cleared);
        pr_debug!(
            "mnic ctx {}: invalidate {:#x}..{:#x} {:?} blockable {}: {} + {} leaves\n",
            ctx.index,
            start,
            end,
            inv.event(),
            inv.is_blockable(),
            cleared.small,
            cleared.huge
        );
        ctx.stats.invalidations.add(1, Relaxed);
        ctx.stats.entries_invalidated.add(cleared.total(), Relaxed);
        let dev = &ctx.dev;
        if !inv.is_blockable() {
            // Only the OOM reaper invalidates without blocking: the mm is going away.
            ctx.reaped.store(true, Relaxed);
        }

        if cleared.total() == 0 && !st.unflushed {
            // The device caches only valid leaves, and every leaf cleared so far had its SYNC
            // posted. If the last such SYNC has not executed yet (a concurrent invalidation is
            // still waiting for it), this range may still be cached: wait for it as well.
            return match st.pending {
                Some(t) if !dev.sync_done(t) && !dev.is_quiesced() => {
                    if let Some(wb) = st.would_block() {
                        return Err(wb);
                    }
                    Ok(st.finish_later(span.until(t)))
                }
                _ => Ok(st.done()),
            };
        }
        let cmd = st.invalidation(ctx.index, start as u64, end as u64);
        if !st.is_blockable() {
            // OOM reaper: may not sleep. Post without waiting and ask to be called again; the
            // retry finds the entries gone and waits (or not) for this SYNC above. If even
            // posting would have to wait, remember that the device still has to be told.
            match dev.try_post_sync(&[cmd]) {
                Ok(t) => {
                    st.pending = Some(t);
                    st.unflushed = false;
                }
                Err(_) if dev.is_quiesced() => st.unflushed = false,
                Err(_) => st.unflushed = true,
            }
            return match st.would_block() {
                Some(wb) => Err(wb),
                None => Ok(st.done()),
            };
        }
        match dev.post_sync(&[cmd]) {
            Ok(t) => {
                st.pending = Some(t);
                st.unflushed = false;
                Ok(st.finish_later(span.until(t)))
            }
            // The device is stopped (reset at unbind, or dead and stopped): no DMA any more.
            Err(_) if dev.is_quiesced() => {
                st.unflushed = false;
                Ok(st.done())
            }
            // Going (unbind in progress, or just declared dead) but not yet stopped: it may still
            // use the cleared entries. Return only once it is stopped.
            Err(_) => Ok(st.finish_later(span.until(Ticket::QUIESCED))),
        }
    }

    fn invalidate_finish(&self, (ticket, _span): (Ticket, InvalSpan)) {
        if let Ok(waited) = self.ctx.dev.wait_sync(ticket) {
            self.ctx.record_sync_wait(waited);
        }
    }
}

impl Ctx {
    /// Clears [start, end) and waits until the device dropped it (deregistration: the same
    /// steps as an invalidation, started by the driver).
    pub(crate) fn shoot_down(&self, start: u64, end: u64) -> Result {
        let ticket = {
            let mut st = self.state.lock();
            let cleared = st.table.clear(start, end);
            if cleared.total() == 0 && !st.unflushed {
                return Ok(());
            }
            let cmd = st.invalidation(self.index, start, end);
            st.unflushed = false;
            match self.dev.post_sync(&[cmd]) {
                Ok(t) => {
                    st.pending = Some(t);
                    t
                }
                // The device is going: the entries are fenced once it is stopped.
                Err(_) => Ticket::QUIESCED,
            }
        };
        self.dev.wait_sync(ticket).map(|_| ())
    }
}
