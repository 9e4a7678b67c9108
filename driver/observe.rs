// SPDX-License-Identifier: GPL-2.0
//! Where the time goes: the steps of an invalidation, a SYNC and a device fault reported as
//! trace events (`trace.rs`) and counted in the latency histograms (`latency.rs`).
//!
//! The paths themselves (`invalidate.rs`, `fill.rs`, `fault.rs`, `device.rs`) call one method
//! of this file at each step, so what is measured, and how, is all here. When no event is
//! enabled, a step costs its static-key tests and, for faults and SYNC waits, the histogram
//! counts (a clock read and a relaxed add).

use kernel::{
    mm::mmu_notifier::{Event, Invalidation},
    prelude::*,
    sync::atomic::Relaxed,
    time::{Delta, Instant, Monotonic},
};

use crate::abi::{pte, Command};
use crate::cmd_ring::Ticket;
use crate::context::{Ctx, PendingFault, Region};
use crate::device::MnicDev;
use crate::fill::window_bytes;
use crate::table::Leaves;
use crate::trace;

fn micros(ns: u64) -> u64 {
    ns / 1000
}

/// The `mmu_notifier_event` value of `event` (what the trace event prints by name).
fn raw_event(event: Event) -> u32 {
    use kernel::bindings as b;
    match event {
        Event::Unmap => b::mmu_notifier_event_MMU_NOTIFY_UNMAP,
        Event::Clear => b::mmu_notifier_event_MMU_NOTIFY_CLEAR,
        Event::ProtectionVma => b::mmu_notifier_event_MMU_NOTIFY_PROTECTION_VMA,
        Event::ProtectionPage => b::mmu_notifier_event_MMU_NOTIFY_PROTECTION_PAGE,
        Event::SoftDirty => b::mmu_notifier_event_MMU_NOTIFY_SOFT_DIRTY,
        Event::Release => b::mmu_notifier_event_MMU_NOTIFY_RELEASE,
        Event::Migrate => b::mmu_notifier_event_MMU_NOTIFY_MIGRATE,
        Event::Exclusive => b::mmu_notifier_event_MMU_NOTIFY_EXCLUSIVE,
        Event::Other(raw) => raw,
    }
}

/// The errno a fault's answer carries: 0 for RESUME.
fn result_errno(result: &Result) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => e.to_errno().abs(),
    }
}

/// One invalidation of one registration, from its first pass to the end of its wait:
/// `inval_start` when made, `inval_end` when dropped. The notifier's second pass gets it with
/// the SYNC ticket (`until`), so a deferred wait ends it there; every other way out of the
/// callback drops it at once. Inert (no clock read) when neither event is enabled.
pub(crate) struct InvalSpan {
    dev: u32,
    ctx: u16,
    handle: u32,
    start: u64,
    end: u64,
    event: u32,
    seq: u64,
    begun: Option<Instant<Monotonic>>,
}

impl InvalSpan {
    /// The span, handed with the SYNC `ticket` its invalidation waits for to the second pass.
    pub(crate) fn until(mut self, ticket: Ticket) -> (Ticket, InvalSpan) {
        // `QUIESCED` is no SYNC: the wait is for the device to stop.
        self.seq = if ticket == Ticket::QUIESCED {
            0
        } else {
            ticket.0
        };
        (ticket, self)
    }
}

impl Drop for InvalSpan {
    fn drop(&mut self) {
        if let Some(begun) = self.begun {
            let us = micros(begun.elapsed().as_nanos().max(0) as u64);
            trace::inval_end(
                self.dev,
                self.ctx,
                self.handle,
                self.start,
                self.end,
                self.event,
                self.seq,
                us,
            );
        }
    }
}

impl Region {
    /// The first pass of `inv` has cleared `cleared` from this registration's part of it.
    pub(crate) fn inval_span(&self, inv: &Invalidation<'_, Region>, cleared: &Leaves) -> InvalSpan {
        let (start, end) = inv.clamped();
        let span = InvalSpan {
            dev: self.ctx.dev.minor_index,
            ctx: self.ctx.index,
            handle: self.handle,
            start: start as u64,
            end: end as u64,
            event: raw_event(inv.event()),
            seq: 0,
            begun: (trace::inval_start_enabled() || trace::inval_end_enabled()).then(Instant::now),
        };
        trace::inval_start(
            span.dev,
            span.ctx,
            span.handle,
            span.start,
            span.end,
            span.event,
            cleared.small,
            cleared.huge,
            inv.is_blockable(),
        );
        span
    }
}

impl Ctx {
    /// The event thread took fault `f` for this context: the fault's latency starts here.
    pub(crate) fn fault_received(&self, f: &PendingFault) {
        self.stats
            .fault_clock
            .start(f.id, self.dev.latency.now_ns());
        if f.network {
            self.dev.network_faults.add(1, Relaxed);
        }
        trace::fault_recv(
            self.dev.minor_index,
            self.index,
            f.va,
            f.write,
            f.id,
            f.network,
        );
    }

    /// Nanoseconds since fault `id` was received (0 if its receipt is not known).
    fn fault_age_ns(&self, id: u64) -> u64 {
        self.stats
            .fault_clock
            .received(id)
            .map_or(0, |t| self.dev.latency.now_ns().saturating_sub(t))
    }

    /// The fill of fault `id` at `va` finished with `result`.
    pub(crate) fn fault_resolved(&self, va: u64, write: bool, id: u64, result: &Result) {
        if !trace::fault_resolved_enabled() {
            // Counting the window below takes the notifier lock: only for someone who looks.
            return;
        }
        let window_len = window_bytes(self.dev.fault_around_kib.load(Relaxed));
        let lo = va & !(window_len - 1);
        let mapped = self.count(lo, lo + window_len);
        let window = if mapped.huge > 0 {
            window_len / pte::PAGE_SIZE
        } else {
            mapped.small
        };
        trace::fault_resolved(
            self.dev.minor_index,
            self.index,
            va,
            write,
            id,
            micros(self.fault_age_ns(id)),
            window as u32,
            result_errno(result),
        );
    }

    /// Fault `id`'s answer (RESUME for `Ok`, ABORT with the errno) is posted: the fault's
    /// latency ends here, in this context's and the device's histograms.
    pub(crate) fn fault_answered(&self, id: u64, result: &Result) {
        let Some(received) = self.stats.fault_clock.stop(id) else {
            return;
        };
        let ns = self.dev.latency.now_ns().saturating_sub(received);
        self.stats.latency.fault.record(ns);
        self.dev.latency.hist.fault.record(ns);
        trace::fault_resumed(
            self.dev.minor_index,
            self.index,
            id,
            micros(ns),
            result_errno(result),
        );
    }
}

impl MnicDev {
    /// `cmds` and a SYNC with `ticket` (if any) are on the command queue; `rang`: the tail
    /// register was written (not just the shadow page).
    pub(crate) fn sync_posted(&self, cmds: &[Command], ticket: Option<Ticket>, rang: bool) {
        if let Some(t) = ticket {
            let ctx = cmds.first().map_or(-1, |c| i32::from(c.ctx));
            trace::sync_post(self.minor_index, ctx, t.0, cmds.len() as u32, rang);
        }
    }

    /// A wait saw SYNC `ticket` after `waited`; it polled for `spin` before it slept. Returns
    /// `waited`.
    pub(crate) fn sync_waited(&self, ticket: Ticket, waited: Delta, spin: Delta) -> Delta {
        let ns = waited.as_nanos().max(0) as u64;
        trace::sync_done(self.minor_index, ticket.0, micros(ns), waited <= spin);
        waited
    }
}
