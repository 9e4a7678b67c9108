//! One DMA access of a context, in the order it happens: translate (TLB, else a walk
//! whose leaf is cached), judge (the stale checker now, spec §8; the oracle's record
//! for when the step ends, spec §8a), then the DMA gate (an injected stall, bus
//! mastering, a pending halt) right before the memory access. Accesses are cut into
//! pieces that each stay inside one page.
//!
//! Nothing translated is kept across steps; the oracle judges a step's accesses when
//! the step ends ([`Core::oracle_judge`]).

use std::time::Duration;

use mnic_abi::counter;

use super::error::{AccessError, DeviceError, Fault, FaultCause};
use super::state::Core;
use crate::mem::{self, GuestMem};
use crate::oracle::Access;
use crate::stale::Verdict;
use crate::translate::{walk, TlbEntry, WalkError};

/// Walks of one address in a row that an oracle report may overtake before the last is
/// taken as it is (each report is one invalidation of the kernel's: a run of them is rare).
const OVERTAKEN_WALKS: u32 = 4;

/// When a translation was walked: what the stale checker and the oracle judge an
/// access through it by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkStamp {
    /// The command sequence number at walk time (spec §8).
    pub seq: u64,
    /// The oracle clock read before the walk began (spec §8a).
    pub oracle: u64,
}

impl WalkStamp {
    /// The stamp of a cached translation.
    pub fn of(e: &TlbEntry) -> Self {
        WalkStamp {
            seq: e.seq,
            oracle: e.oracle,
        }
    }
}

/// A VA translated up to the end of its page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translated {
    /// The guest-physical address of the VA.
    pub gpa: u64,
    /// Bytes from the VA to the end of its page.
    pub room: u64,
    /// When the translation was walked.
    pub walked: WalkStamp,
}

impl Translated {
    /// `va` through the cached translation `e` (which covers it).
    pub fn through(e: &TlbEntry, va: u64) -> Self {
        Translated {
            gpa: e.leaf.gpa_of(va),
            room: e.leaf.room(va),
            walked: WalkStamp::of(e),
        }
    }
}

/// A translated and judged piece of an access, inside one page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    /// Where the piece starts in guest memory.
    pub gpa: u64,
    /// Its length.
    pub len: u64,
}

impl Core {
    /// Translates `va` of context `c` for a read or write: TLB first, else a walk
    /// whose leaf is cached with the current command sequence number and the oracle
    /// time read before the walk began.
    pub(super) fn xlate(
        &mut self,
        m: &GuestMem,
        c: u16,
        root: u64,
        va: u64,
        write: bool,
    ) -> Result<TlbEntry, AccessError> {
        let counters = &self.sh.counters;
        if let Some(e) = self.tlb.lookup(c, va) {
            // A read-only hit for a write walks again: the driver may have made the
            // page writable since (a RESUME after a permission fault).
            if !write || e.leaf.writable {
                self.tlb_hits += 1;
                return Ok(e);
            }
        }
        counters.inc(counter::TLB_MISSES);
        let fault = |cause| Fault { va, write, cause };
        let mut overtaken = 0;
        let (leaf, oracle) = loop {
            counters.inc(counter::WALKS);
            // Before the walk: a report that arrives while the walk reads the table is newer
            // than the translation it produces...
            let oracle = self.sh.oracle.now();
            #[cfg(test)]
            if let Some(f) = self.before_walk.as_mut() {
                f(m, va);
            }
            let leaf = walk(m, root, va).map_err(|e| match e {
                WalkError::NotPresent { .. } => AccessError::Fault(fault(FaultCause::NotPresent)),
                WalkError::Table { .. } => DeviceError::Table { va }.into(),
                WalkError::Address { .. } => DeviceError::Address { addr: va }.into(),
                WalkError::NonCanonical => DeviceError::NonCanonical { va }.into(),
            })?;
            // ... so when one covering `va` did, the walk may have read the table before the
            // driver's change or after it (its fill of the new page, with nothing for its
            // invalidation to clear): walk again rather than stamp a translation older than
            // what it read (spec §8a). Only an armed context has reports; a run of them that
            // keeps overtaking is let through, stamped early, for the judge to weigh.
            if overtaken < OVERTAKEN_WALKS && self.sh.oracle.overtaken(c, va, oracle) {
                overtaken += 1;
                continue;
            }
            break (leaf, oracle);
        };
        let e = self.tlb.insert(c, leaf, self.seq, oracle);
        counters.set(counter::TLB_ENTRIES, self.tlb.len() as u64);
        if write && !leaf.writable {
            return Err(fault(FaultCause::NotWritable).into());
        }
        Ok(e)
    }

    /// Translates and judges one piece starting at `va` of at most `len` bytes that
    /// stays in one page.
    pub(super) fn piece(
        &mut self,
        m: &GuestMem,
        c: u16,
        root: u64,
        va: u64,
        len: u64,
        write: bool,
    ) -> Result<Piece, AccessError> {
        let e = self.xlate(m, c, root, va, write)?;
        let t = Translated::through(&e, va);
        let len = len.min(t.room);
        self.judge(c, va, len, t.walked)?;
        Ok(Piece { gpa: t.gpa, len })
    }

    /// Judges an access of `[va, va + len)` by context `c` through translations
    /// `walked`: the stale checker now, the oracle (when `c` is armed) when the step
    /// ends.
    pub(super) fn judge(
        &mut self,
        c: u16,
        va: u64,
        len: u64,
        walked: WalkStamp,
    ) -> Result<(), AccessError> {
        let end = va.saturating_add(len);
        match self.checker.check(c, va, end, walked.seq) {
            Verdict::Fresh => {}
            Verdict::Unchecked => self.sh.counters.inc(counter::STALE_UNCHECKED),
            Verdict::Stale { inval_seq } => {
                self.sh.counters.inc(counter::STALE_ACCESSES);
                tracing::warn!(ctx = c, va, walked = walked.seq, inval_seq, "stale access");
                if self.strict() {
                    self.halt(DeviceError::StaleAccess { va }, c);
                    return Err(AccessError::Halted);
                }
            }
        }
        // One atomic load when the context is not armed: nothing else on the hot path.
        if self.sh.oracle.armed(c) {
            self.oracle_pieces.push(Access {
                ctx: c,
                start: va,
                end,
                stamp: walked.oracle,
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
    pub(super) fn dma_gate(&mut self, mark: usize, copy_data: bool) -> Result<(), AccessError> {
        let ms = if copy_data { self.sh.take_stall() } else { 0 };
        if ms != 0 {
            tracing::info!(ms, "DEBUG_STALL_MS: the engine stalls before an access");
            self.sh.stall(Duration::from_millis(u64::from(ms)));
        }
        let refused = if !self.sh.bus_master() {
            self.sh.counters.inc(counter::DMA_REFUSED);
            AccessError::Refused
        } else if self.sh.oracle.halt_pending() {
            // The socket thread found a violation in strict mode (maybe while we slept).
            AccessError::Halted
        } else {
            return Ok(());
        };
        self.oracle_pieces.truncate(mark);
        Err(refused)
    }

    /// Reads `buf.len()` bytes at `va` of context `c` (page by page).
    pub(super) fn dma_read(
        &mut self,
        m: &GuestMem,
        c: u16,
        root: u64,
        va: u64,
        buf: &mut [u8],
    ) -> Result<(), AccessError> {
        self.dma_pieces(m, c, root, va, buf.len(), false, |gpa, off, n| {
            mem::read(m, gpa, &mut buf[off..off + n])
        })
    }

    /// Writes `buf` at `va` of context `c` (page by page).
    pub(super) fn dma_write(
        &mut self,
        m: &GuestMem,
        c: u16,
        root: u64,
        va: u64,
        buf: &[u8],
    ) -> Result<(), AccessError> {
        self.dma_pieces(m, c, root, va, buf.len(), true, |gpa, off, n| {
            mem::write(m, gpa, &buf[off..off + n])
        })
    }

    /// Translates [va, va+len) piece by piece (each piece inside one leaf) and hands each
    /// piece's guest address, offset and length to `access`, counting the DMA.
    #[allow(clippy::too_many_arguments)]
    fn dma_pieces<E>(
        &mut self,
        m: &GuestMem,
        c: u16,
        root: u64,
        va: u64,
        len: usize,
        write: bool,
        mut access: impl FnMut(u64, usize, usize) -> Result<(), E>,
    ) -> Result<(), AccessError> {
        let mut off = 0usize;
        while off < len {
            let v = va + off as u64;
            let mark = self.oracle_pieces.len();
            let p = self.piece(m, c, root, v, (len - off) as u64, write)?;
            let n = p.len as usize;
            self.dma_gate(mark, false)?;
            if access(p.gpa, off, n).is_err() {
                // Refused by the RAM check before any byte moved.
                self.oracle_pieces.truncate(mark);
                return Err(DeviceError::Address { addr: v }.into());
            }
            self.sh.counters.inc(counter::DMA_OPS);
            self.sh.counters.add(counter::DMA_BYTES, n as u64);
            off += n;
        }
        Ok(())
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
                self.halt(DeviceError::OracleViolation { va: a.start }, a.ctx);
            }
        }
        // Keeps the allocation for the next step.
        pieces.clear();
        self.oracle_pieces = pieces;
    }
}
