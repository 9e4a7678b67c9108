//! Shadow pages (spec §4a): the queue tails read from them, the `polling` flags written
//! into them, and the sleep handshake's decision.
//!
//! A queue with a shadow page takes its tail from that page only: [`Core::refresh_tails`]
//! reads every page once per poll round into the queue's cached tail (modulo the ring
//! size, so no value can point outside the ring), and the command queue and the work
//! fetch use that cache. A page is addressed by GPA (never translated), through the
//! checked accessors of `mem`; a page that has left guest RAM since it was checked is
//! "no news". Nothing here touches memory unless the engine may run: enabled, not
//! halted, bus mastering on.

use std::sync::atomic::{fence, Ordering};

use mnic_abi::{counter, Shadow, SHADOW_PAGE_SIZE};

use super::state::Core;
use crate::mem::{self, GuestMem};

/// Whether `gpa` may be a shadow page: 0 (none), or a 4 KiB aligned, writable page of
/// guest RAM.
pub(super) fn valid(m: &GuestMem, gpa: u64) -> bool {
    gpa == 0
        || (gpa.is_multiple_of(SHADOW_PAGE_SIZE)
            && mem::check(m, gpa, SHADOW_PAGE_SIZE, true).is_ok())
}

/// The `tail` of the shadow page at `gpa`, modulo `entries`; `None` if it cannot be read.
pub(super) fn read_tail(m: &GuestMem, gpa: u64, entries: u64) -> Option<u32> {
    let t = mem::load_u32(m, gpa + Shadow::TAIL_OFFSET as u64).ok()?;
    // `entries` is at most 4096: the remainder fits.
    Some((u64::from(t) % entries) as u32)
}

impl Core {
    /// Whether the engine may touch guest memory at all, shadow pages included.
    fn may_touch_shadows(&self) -> bool {
        self.enabled && !self.halted && self.sh.bus_master()
    }

    /// Whether any queue has a shadow page the engine can poll now (the data thread then
    /// wakes itself for the backstop; without one it sleeps until a doorbell).
    pub fn has_shadows(&self) -> bool {
        self.may_touch_shadows()
            && (self.cmd_shadow != 0 || self.shadowed.round_robin(0).next().is_some())
    }

    /// Whether the device has told the producers (with `polling` = 1) that it polls,
    /// and can poll now. (With bus mastering off the pages keep saying so, but nothing
    /// can be read: the thread sleeps, and setting the bit wakes it.)
    pub fn polling(&self) -> bool {
        self.polling && self.may_touch_shadows()
    }

    /// Whether any context waits for the answer to a fault (the spin budget grows then).
    pub(super) fn has_parked_fault(&self) -> bool {
        self.live
            .round_robin(0)
            .any(|i| self.ctxs[i].as_ref().is_some_and(|x| x.parked.is_some()))
    }

    /// Reads every shadow page's `tail` into its queue. Returns whether any queue's
    /// tail changed (each change counts one `SHADOW_TAILS`).
    pub(super) fn refresh_tails(&mut self, m: &GuestMem) -> bool {
        if !self.may_touch_shadows() {
            return false;
        }
        let mut changed = 0;
        if self.cmd_shadow != 0 {
            let n = 1u64 << self.cmdq_log2;
            if let Some(t) = read_tail(m, self.cmd_shadow, n) {
                if t != self.cmd_tail {
                    self.cmd_tail = t;
                    changed += 1;
                }
            }
        }
        for i in self.shadowed.round_robin(0) {
            let Some(x) = self.ctxs[i].as_mut().filter(|x| x.shadow() != 0) else {
                continue;
            };
            if let Some(t) = read_tail(m, x.shadow(), x.wq_entries()) {
                if t != x.shadow_tail {
                    x.shadow_tail = t;
                    changed += 1;
                }
            }
        }
        if changed != 0 {
            self.sh.counters.add(counter::SHADOW_TAILS, changed);
        }
        changed != 0
    }

    /// Writes `polling` = `on` into every shadow page the device polls, and remembers
    /// it. Without a page, or without access (bus mastering off, halted, disabled),
    /// nothing is written and the device does not count as polling.
    pub fn set_polling(&mut self, m: &GuestMem, on: bool) {
        if !self.has_shadows() {
            self.polling = false;
            return;
        }
        let v = u32::from(on);
        if self.cmd_shadow != 0 {
            write_polling(m, self.cmd_shadow, v);
        }
        for i in self.shadowed.round_robin(0) {
            if let Some(x) = self.ctxs[i].as_ref().filter(|x| x.shadow() != 0) {
                write_polling(m, x.shadow(), v);
            }
        }
        self.polling = on;
    }

    /// A shadow page joins while the device polls (`CTX_ENABLE`): it says so at once.
    pub(super) fn polling_joined(&self, m: &GuestMem, gpa: u64) {
        if self.polling && gpa != 0 && self.may_touch_shadows() {
            write_polling(m, gpa, 1);
        }
    }

    /// The sleep handshake (spec §4a), once the spin budget ran out: `polling` = 0 in
    /// every page, a full fence, every `tail` read once more. Returns `true` if the
    /// device may sleep; `false` if a tail moved meanwhile (a post that raced the
    /// decision), and then the device polls again (`polling` = 1 written back).
    ///
    /// Why no post is lost: the producer stores `tail`, fences, loads `polling`; this
    /// side stores `polling`, fences, loads `tail`. Of two store-fence-load sequences
    /// at least one load sees the other's store: either the tail read here sees the
    /// post, or the producer sees `polling` = 0 and rings the doorbell register.
    pub fn sleep_check(&mut self, m: &GuestMem) -> bool {
        if !self.polling() {
            return true;
        }
        self.set_polling(m, false);
        fence(Ordering::SeqCst);
        if self.refresh_tails(m) {
            self.set_polling(m, true);
            return false;
        }
        true
    }
}

/// Stores the `polling` word of the page at `gpa` (a page that left guest RAM is
/// skipped: nobody can read it there either).
fn write_polling(m: &GuestMem, gpa: u64, v: u32) {
    let _ = mem::store_u32(m, gpa + Shadow::POLLING_OFFSET as u64, v);
}
