// SPDX-License-Identifier: GPL-2.0
//! Taking translations down: the mmu notifier callbacks of every registration (`Region`), and
//! the same steps started by the driver itself (deregistration).
//!
//! This is where the invariant holds: an invalidation clears the leaves of its range, posts
//! `INVALIDATE_RANGE` + `SYNC`, and returns only once the SYNC has executed (or the device is
//! known to be stopped), so the device never touches the old page afterwards (`docs/spec.md`
//! §7; the rules are listed in `docs/driver.md`). Only then does it unmap the pages' DMA
//! mappings (`dma_map.rs`): the device, or its TLB, may use a bus address until the SYNC.
//! Nothing here allocates: invalidations run in memory reclaim.

use kernel::{
    mm::mmu_notifier::{IntervalNotifierOps, Invalidated, Invalidation, WouldBlock},
    prelude::*,
    sync::{atomic::Relaxed, lock::mutex::MutexBackend, Mutex},
};

use crate::abi::{self, Command};
use crate::cmd_ring::Ticket;
use crate::context::{Ctx, CtxState, Region};
use crate::observe::InvalSpan;

/// What the second pass of an invalidation needs: the SYNC to wait for, the range whose DMA
/// mappings go once it has executed, and the trace span that ends (`mnic:inval_end`) when
/// the pass is over.
pub(crate) struct Fence {
    ticket: Ticket,
    start: u64,
    end: u64,
    _span: InvalSpan,
}

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
    type Finish = Fence;

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
        let fence = |span: InvalSpan, ticket| {
            let (ticket, span) = span.until(ticket);
            Fence {
                ticket,
                start: start as u64,
                end: end as u64,
                _span: span,
            }
        };
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
                    Ok(st.finish_later(fence(span, t)))
                }
                // Every SYNC posted for a cleared leaf has executed (or the device is stopped):
                // nothing of the range can be used any more.
                _ => {
                    self.dma.unmap_fenced(start as u64, end as u64);
                    Ok(st.done())
                }
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
                Ok(st.finish_later(fence(span, t)))
            }
            // The device is stopped (reset at unbind, or dead and stopped): no DMA any more.
            Err(_) if dev.is_quiesced() => {
                st.unflushed = false;
                self.dma.unmap_fenced(start as u64, end as u64);
                Ok(st.done())
            }
            // Going (unbind in progress, or just declared dead) but not yet stopped: it may still
            // use the cleared entries. Return only once it is stopped.
            Err(_) => Ok(st.finish_later(fence(span, Ticket::QUIESCED))),
        }
    }

    /// Step 3: wait for the SYNC, then unmap. `wait_sync` returns only once the SYNC executed
    /// or the device is stopped, so either way the device can no longer use the range.
    fn invalidate_finish(&self, fence: Fence) {
        if let Ok(waited) = self.ctx.dev.wait_sync(fence.ticket) {
            self.ctx.record_sync_wait(waited);
        }
        self.dma.unmap_fenced(fence.start, fence.end);
    }
}

impl Ctx {
    /// Clears [start, end) and waits until the device dropped it (deregistration: the same
    /// steps as an invalidation, started by the driver). When it returns, the device can use no
    /// translation of the range: the caller may unmap its pages' DMA mappings. `first` (a
    /// registration's `KEY_CLEAR`) is posted before the invalidation, behind the same SYNC.
    pub(crate) fn shoot_down(&self, start: u64, end: u64, first: Option<Command>) -> Result {
        let ticket = {
            let mut st = self.state.lock();
            let cleared = st.table.clear(start, end);
            if cleared.total() == 0 && !st.unflushed && first.is_none() {
                // As in an invalidation: an earlier SYNC for leaves of this range may not have
                // executed yet, and the range's DMA mappings must outlive it.
                return match st.pending {
                    Some(t) if !self.dev.sync_done(t) => {
                        drop(st);
                        self.dev.wait_sync(t).map(|_| ())
                    }
                    _ => Ok(()),
                };
            }
            let cmd = st.invalidation(self.index, start, end);
            st.unflushed = false;
            let posted = match first {
                Some(first) => self.dev.post_sync(&[first, cmd]),
                None => self.dev.post_sync(&[cmd]),
            };
            match posted {
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
