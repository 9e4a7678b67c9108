//! COPY (spec §11): bounded steps of at most [`COPY_STEP`] bytes, both sides translated
//! page by page through `dma`, and pieces that continue each other on both sides copied
//! as one run with one memcpy. Stretches of consecutive front-cache hits are translated
//! and judged without a per-page TLB lookup ([`Core::front_pair`]).

use mnic_abi::{counter, pte};

use super::context::Item;
use super::dma::Translated;
use super::error::{AccessError, DeviceError};
use super::state::Core;
use super::step::Outcome;
use crate::mem::{self, GuestMem};

/// Most bytes one COPY step moves before the data thread looks at commands again: bounds how
/// long a SYNC waits behind a copy (1 MiB is about 50 us at memory speed) while keeping the
/// per-step overhead (a poll round) small against the copy.
pub const COPY_STEP: u64 = 1 << 20;

/// A translated and judged stretch of a COPY: `len` bytes from `src` to `dst` (guest
/// physical), each side contiguous.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stretch {
    src: u64,
    dst: u64,
    len: u64,
}

/// Pieces of a COPY that continue each other on both sides, copied with one memcpy.
#[derive(Clone, Copy)]
struct Run {
    /// Source GPA.
    src: u64,
    /// Destination GPA.
    dst: u64,
    /// Bytes.
    len: u64,
    /// Source VA (for an error report).
    va: u64,
    /// Length of `oracle_pieces` before the run's first piece was judged: what a refused
    /// run takes back (it and everything after it never touched memory).
    mark: usize,
}

impl Core {
    /// One step of a COPY: up to [`COPY_STEP`] bytes, translated page by page (or leaf by
    /// leaf) on both sides.
    pub(super) fn copy_step(
        &mut self,
        m: &GuestMem,
        c: u16,
        root: u64,
        item: &mut Item,
    ) -> Outcome {
        let d = item.desc;
        let total = u64::from(d.len);
        let mut budget = COPY_STEP;
        // Pieces that continue each other on both sides (same leaf, or guest-physically
        // contiguous pages) are copied as one run: one memcpy instead of one per page.
        let mut run: Option<Run> = None;
        // Bytes translated: copied (`item.done`) or pending in `run`.
        let mut pos = item.done;
        while pos < total && budget > 0 {
            let (s, t) = (d.src + pos, d.dst + pos);
            let want = (total - pos).min(budget);
            let mark = self.oracle_pieces.len();
            let r = self.front_pair(c, s, t, want).unwrap_or_else(|| {
                let src = self.piece(m, c, root, s, want, false)?;
                let dst = self.piece(m, c, root, t, src.len, true)?;
                Ok(Stretch {
                    src: src.gpa,
                    dst: dst.gpa,
                    len: dst.len,
                })
            });
            let next = match r {
                Ok(v) => v,
                Err(e) => {
                    // This piece is not accessed; what was translated before it is still
                    // copied.
                    self.oracle_pieces.truncate(mark);
                    if let Err(e) = self.copy_run(m, run.take(), &mut item.done) {
                        return Outcome::Failed(e);
                    }
                    return Outcome::Failed(e);
                }
            };
            run = match run {
                Some(r) if r.src + r.len == next.src && r.dst + r.len == next.dst => Some(Run {
                    len: r.len + next.len,
                    ..r
                }),
                prev => {
                    if let Err(e) = self.copy_run(m, prev, &mut item.done) {
                        return Outcome::Failed(e);
                    }
                    Some(Run {
                        src: next.src,
                        dst: next.dst,
                        len: next.len,
                        va: s,
                        mark,
                    })
                }
            };
            pos += next.len;
            budget -= next.len;
        }
        if let Err(e) = self.copy_run(m, run, &mut item.done) {
            return Outcome::Failed(e);
        }
        if item.done >= total {
            Outcome::Finished { bytes: total }
        } else {
            Outcome::More
        }
    }

    /// Copies one run of a COPY (translated and judged already), counts it, and adds it to
    /// `done` (the bytes a completion reports: only what was really copied).
    fn copy_run(
        &mut self,
        m: &GuestMem,
        run: Option<Run>,
        done: &mut u64,
    ) -> Result<(), AccessError> {
        let Some(r) = run else {
            return Ok(());
        };
        self.dma_gate(r.mark, true)?;
        if mem::copy(m, r.src, r.dst, r.len as usize).is_err() {
            // Refused by the RAM check before any byte moved.
            self.oracle_pieces.truncate(r.mark);
            return Err(DeviceError::Address { addr: r.va }.into());
        }
        self.sh.counters.inc(counter::DMA_OPS);
        self.sh.counters.add(counter::DMA_BYTES, r.len);
        *done += r.len;
        Ok(())
    }

    /// The longest stretch of a COPY from `src` to `dst`, at most `max` bytes, that the
    /// front cache translates on both sides into guest-physically contiguous pages walked
    /// at one sequence number and one oracle time per side; judged as a whole. `None` when
    /// the first page of either side is not a front hit (or not writable for `dst`): the
    /// caller goes page by page through [`Core::piece`].
    ///
    /// Why: a 1 MiB COPY is 512 page translations, and one `piece` each (a by-value TLB
    /// lookup, a checker call) cost a fifth of the copy. Scanning consecutive front slots
    /// is sequential memory, and one checker call for pages that share a walk sequence
    /// gives exactly the verdict of one call per page (the checker only compares the
    /// range against invalidations newer than that sequence); the same holds for the
    /// oracle and the oracle time.
    fn front_pair(
        &mut self,
        c: u16,
        src: u64,
        dst: u64,
        max: u64,
    ) -> Option<Result<Stretch, AccessError>> {
        let page = |va: u64, write: bool| {
            self.tlb
                .front_hit(c, va)
                .filter(|e| !write || e.leaf.writable)
                .map(|e| Translated::through(e, va))
        };
        let s0 = page(src, false)?;
        let d0 = page(dst, true)?;
        // Offsets (from the start) where the current page of each side ends.
        let (mut s_end, mut d_end) = (s0.room, d0.room);
        let mut n = s_end.min(d_end).min(max);
        while n < max {
            // Front entries are 4 KiB pages, so a page ends on a page boundary. The next
            // page continues the stretch if it follows in guest memory and was walked at
            // the same time.
            let next = |end: u64, va: u64, first: Translated, write: bool| {
                page(va + end, write)
                    .filter(|t| t.gpa == first.gpa + end && t.walked == first.walked)
                    .map(|_| end + pte::PAGE_SIZE)
            };
            if s_end == n {
                let Some(e) = next(s_end, src, s0, false) else {
                    break;
                };
                s_end = e;
            }
            if d_end == n {
                let Some(e) = next(d_end, dst, d0, true) else {
                    break;
                };
                d_end = e;
            }
            n = s_end.min(d_end).min(max);
        }
        let pages = |va: u64| ((va + n - 1) >> pte::PAGE_SHIFT) - (va >> pte::PAGE_SHIFT) + 1;
        self.tlb_hits += pages(src) + pages(dst);
        let judged: Result<(), AccessError> = self
            .judge(c, src, n, s0.walked)
            .and_then(|()| self.judge(c, dst, n, d0.walked));
        Some(judged.map(|()| Stretch {
            src: s0.gpa,
            dst: d0.gpa,
            len: n,
        }))
    }
}
