//! What leaves the device besides DMA: errors, events and interrupts. The one place a
//! [`DeviceError`] becomes `ERROR_CODE`, `ERROR_COUNT`, counters (`ERRORS`, and
//! `DMA_UNMAPPED` for a refused DMA address) and an `ERROR` event ([`Core::report`]); the event ring flushed; halts in strict mode.

use mnic_abi::{counter, event, irq, reg, status, Event};

use super::error::DeviceError;
use super::state::Core;
use crate::mem::GuestMem;

impl Core {
    /// Records device error `e` of context `ctx` (`event::NO_CTX` for none): ERROR_CODE
    /// (first only), ERROR_COUNT, the ERRORS counter, IRQ_STATUS.ERROR, and an ERROR
    /// event (`addr` = the error's detail, `info` = `info`) when the event ring exists.
    pub(super) fn report(&mut self, e: DeviceError, ctx: u16, info: u64) {
        let (code, addr) = (e.code(), e.detail());
        tracing::debug!(code, ctx, addr, info, error = %e, "device error");
        self.sh.set_reg_if_zero(reg::ERROR_CODE, code);
        let n = self.sh.reg(reg::ERROR_COUNT).wrapping_add(1);
        self.sh.set_reg(reg::ERROR_COUNT, n);
        self.sh.counters.inc(counter::ERRORS);
        if matches!(e, DeviceError::Address { .. }) {
            // A DMA address in no map (spec §1b): the access was refused.
            self.sh.counters.inc(counter::DMA_UNMAPPED);
        }
        self.irq_pending |= irq::ERROR;
        if self.enabled {
            self.post(Event {
                kind: event::ERROR,
                ctx,
                code,
                addr,
                info,
                ..Event::default()
            });
        }
    }

    /// Queues an event for the next flush.
    pub(super) fn post(&mut self, ev: Event) {
        self.evq.post(ev, &self.sh.counters);
    }

    /// Raises interrupt causes: IRQ_STATUS bits, then MSI-X unless masked (and never
    /// without bus mastering).
    pub(super) fn raise(&mut self, bits: u32) {
        if bits == 0 {
            return;
        }
        self.sh.raise(bits);
    }

    /// Writes waiting events into the ring and publishes `EVQ_TAIL`; returns whether any
    /// was written.
    pub(super) fn flush_events(&mut self, m: &GuestMem) -> bool {
        let head = self.sh.reg(reg::EVQ_HEAD);
        let n = match self.evq.flush(m, head) {
            Ok(n) => n,
            Err(e) => {
                // The ring left the DMA maps (DMA_UNMAP after enable): keep the events.
                // A refused access like any other, but there is nowhere to report it.
                self.sh.counters.inc(counter::DMA_UNMAPPED);
                tracing::warn!(addr = e.addr, "event ring not writable");
                0
            }
        };
        self.sh.set_reg(reg::EVQ_TAIL, self.evq.tail());
        if n > 0 {
            self.irq_pending |= irq::EVENT;
        }
        n > 0
    }

    /// Halts the device in strict mode: `e` is a stale access or an oracle violation.
    pub(super) fn halt(&mut self, e: DeviceError, ctx: u16) {
        tracing::warn!(code = e.code(), ctx, va = e.detail(), "device halted");
        self.report(e, ctx, self.seq);
        self.halted = true;
        self.sh.or_reg(reg::STATUS, status::HALTED);
    }

    /// Carries out a halt the oracle asked for from the socket thread (a table violation
    /// in strict mode); returns whether the device is halted.
    pub(super) fn stopped(&mut self) -> bool {
        if self.sh.oracle.halt_pending() {
            if let Some((ctx, va)) = self.sh.oracle.take_halt() {
                if !self.halted {
                    self.halt(DeviceError::OracleViolation { va }, ctx);
                }
            }
        }
        self.halted
    }
}
