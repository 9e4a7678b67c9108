//! Contexts and their work (spec §11, §12): descriptor fetch, COPY/NOP/TRAFFIC
//! execution in bounded steps, completions, and faults that park a context.
//!
//! Every access of a context goes through [`Core::xlate`] (TLB, then walk), is judged
//! by the stale checker, and passes the DMA gate (injected stall, bus mastering) right
//! before the memory access, one page piece (or hot stretch) at a time (`check`).
//! Nothing translated is kept across steps; the oracle judges a step's accesses when
//! the step ends.
//!
//! Ring indices: `WQ_TAIL` is taken modulo the ring size; the device's consumer index
//! advances when an item's completion is written. So at most `wq_entries - 1` items
//! can be pending (a tail equal to the head means "empty").

use std::time::Instant;

use mnic_abi::{
    completion, counter, error, event, pte, work, Completion, CtxEntry, Event, WorkDesc,
};
use zerocopy::{FromBytes, IntoBytes};

use super::traffic;
use super::Core;
use crate::mem::{self, GuestMem};
use crate::translate::{walk, TlbEntry, WalkError};

/// Most bytes one COPY step moves before the data thread looks at commands again: bounds how
/// long a SYNC waits behind a copy (1 MiB is about 50 us at memory speed) while keeping the
/// per-step overhead (a poll round) small against the copy.
pub const COPY_STEP: u64 = 1 << 20;

/// Where a parked context stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Site {
    /// Reading the next descriptor.
    Fetch,
    /// Executing the current item.
    Work,
    /// Writing the current item's completion.
    Completion,
}

/// A parked fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parked {
    /// The fault id (unique per device, never 0).
    pub id: u64,
    /// Where the context stopped.
    pub site: Site,
    /// The faulting VA.
    pub va: u64,
}

/// A work item being executed.
pub struct Item {
    /// The descriptor as fetched.
    pub desc: WorkDesc,
    /// Progress: bytes (COPY) or operations (TRAFFIC) done.
    pub done: u64,
    /// Traffic generator state, created on the first step.
    pub traffic: Option<traffic::State>,
}

/// A completion ready to be written.
#[derive(Clone, Copy, Debug)]
pub struct Done {
    cpl: Completion,
    notify: bool,
}

/// A context's progress through its queue.
pub enum Stage {
    /// Between items: fetch the next descriptor when there is one.
    Idle,
    /// Executing.
    Exec(Item),
    /// The item finished; its completion is still to be written.
    Complete(Done),
}

/// A running context: the device's copy of its table entry and queue state.
pub struct Ctx {
    entry: CtxEntry,
    wq_head: u32,
    cq_written: u64,
    /// Where the context is.
    pub stage: Stage,
    /// Set while a fault waits for RESUME/ABORT.
    pub parked: Option<Parked>,
}

impl Ctx {
    /// A context started from a validated table entry.
    pub fn new(entry: CtxEntry) -> Self {
        Ctx {
            entry,
            wq_head: 0,
            cq_written: 0,
            stage: Stage::Idle,
            parked: None,
        }
    }
}

/// The completion for `desc`.
pub fn completion(desc: &WorkDesc, status: u16, detail: u32, bytes: u64, fault_va: u64) -> Done {
    Done {
        cpl: Completion {
            tag: desc.tag,
            status,
            flags: 0,
            detail,
            bytes,
            fault_va,
        },
        notify: desc.flags & work::FLAG_NOTIFY != 0,
    }
}

/// What one step of a context did.
pub enum Step {
    /// Work was done.
    Progress,
    /// Nothing to do (no descriptors, parked, disabled).
    Idle,
    /// A throttled traffic item wants to run again at this instant.
    Until(Instant),
}

/// Why an access failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessErr {
    /// Translation or permission fault: park.
    Fault {
        /// Faulting VA.
        va: u64,
        /// The access was a write.
        write: bool,
        /// `event::FAULT_NOT_PRESENT` or `FAULT_NOT_WRITABLE`.
        code: u32,
    },
    /// Malformed table or an address outside RAM: the access fails.
    Bad {
        /// The VA of the access.
        va: u64,
        /// `error::TABLE_ERROR` or `error::ADDRESS_ERROR`.
        code: u32,
    },
    /// A stale access or an oracle violation halted the device.
    Halted,
    /// Bus mastering is off: the access was not made. The step ends and the work stays
    /// where it is, to continue when the bit is set again.
    Refused,
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

/// What executing an item for one step came to.
pub enum Outcome {
    /// Not finished; continue next step.
    More,
    /// Finished with this completion.
    Done(Done),
    /// An access failed.
    Err(AccessErr),
    /// Throttled until the instant.
    Wait(Instant),
}

fn in_va_range(va: u64, len: u64) -> bool {
    va.checked_add(len).is_some_and(|end| end <= pte::VA_LIMIT)
}

/// Whether a descriptor may run (spec §11); refused ones complete with BAD_DESCRIPTOR.
pub fn valid(d: &WorkDesc) -> bool {
    let len = u64::from(d.len);
    match d.opcode {
        work::NOP => true,
        work::COPY => {
            d.len > 0
                && d.len <= work::COPY_MAX
                && in_va_range(d.src, len)
                && in_va_range(d.dst, len)
                && (d.src + len <= d.dst || d.dst + len <= d.src)
        }
        work::TRAFFIC => {
            d.len > 0
                && in_va_range(d.src, len)
                && (1..=work::TRAFFIC_OP_MAX).contains(&d.op_size)
                && d.op_size <= d.len
                && d.pattern <= work::PATTERN_RANDOM_RW
                && d.ops <= work::TRAFFIC_OPS_MAX
        }
        _ => false,
    }
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
    ) -> Result<TlbEntry, AccessErr> {
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
        counters.inc(counter::WALKS);
        // Before the walk: a report that arrives while the walk reads the table is newer
        // than the translation it produces.
        let oracle = self.sh.oracle.now();
        let leaf = match walk(m, root, va) {
            Ok(l) => l,
            Err(WalkError::NotPresent { .. }) => {
                return Err(AccessErr::Fault {
                    va,
                    write,
                    code: event::FAULT_NOT_PRESENT,
                })
            }
            Err(WalkError::Table { .. }) => {
                return Err(AccessErr::Bad {
                    va,
                    code: error::TABLE_ERROR,
                })
            }
            Err(WalkError::Address { .. } | WalkError::NonCanonical) => {
                return Err(AccessErr::Bad {
                    va,
                    code: error::ADDRESS_ERROR,
                })
            }
        };
        let e = self.tlb.insert(c, leaf, self.seq, oracle);
        counters.set(counter::TLB_ENTRIES, self.tlb.len() as u64);
        if write && !leaf.writable {
            return Err(AccessErr::Fault {
                va,
                write,
                code: event::FAULT_NOT_WRITABLE,
            });
        }
        Ok(e)
    }

    /// Translates and judges one piece starting at `va` of at most `len` bytes that
    /// stays in one page. Returns the GPA and the piece length.
    pub(super) fn piece(
        &mut self,
        m: &GuestMem,
        c: u16,
        root: u64,
        va: u64,
        len: u64,
        write: bool,
    ) -> Result<(u64, u64), AccessErr> {
        let e = self.xlate(m, c, root, va, write)?;
        let n = len.min(e.leaf.room(va));
        self.judge(c, va, n, e.seq, e.oracle)?;
        Ok((e.leaf.gpa_of(va), n))
    }

    /// Reads `buf.len()` bytes at `va` of context `c` (page by page).
    pub(super) fn dma_read(
        &mut self,
        m: &GuestMem,
        c: u16,
        root: u64,
        va: u64,
        buf: &mut [u8],
    ) -> Result<(), AccessErr> {
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
    ) -> Result<(), AccessErr> {
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
    ) -> Result<(), AccessErr> {
        let mut off = 0usize;
        while off < len {
            let v = va + off as u64;
            let mark = self.oracle_pieces.len();
            let (gpa, n) = self.piece(m, c, root, v, (len - off) as u64, write)?;
            let n = n as usize;
            self.dma_gate(mark, false)?;
            if access(gpa, off, n).is_err() {
                // Refused by the RAM check before any byte moved.
                self.oracle_pieces.truncate(mark);
                return Err(AccessErr::Bad {
                    va: v,
                    code: error::ADDRESS_ERROR,
                });
            }
            self.sh.counters.inc(counter::DMA_OPS);
            self.sh.counters.add(counter::DMA_BYTES, n as u64);
            off += n;
        }
        Ok(())
    }

    fn park(&mut self, x: &mut Ctx, c: u16, site: Site, va: u64, write: bool, code: u32) {
        let id = self.next_fault_id;
        self.next_fault_id = self.next_fault_id.checked_add(1).unwrap_or(1);
        x.parked = Some(Parked { id, site, va });
        self.sh.counters.inc(counter::FAULTS);
        tracing::debug!(ctx = c, va, write, code, id, ?site, "fault: context parked");
        self.post(Event {
            kind: event::FAULT,
            flags: if write { event::FLAG_WRITE } else { 0 },
            ctx: c,
            code,
            addr: va,
            id,
            info: 0,
        });
    }

    /// One step of context `i`.
    pub(super) fn step_ctx(&mut self, m: &GuestMem, i: usize) -> Step {
        // Checked before `take`: taking moves the whole slot, and most slots are empty.
        let Some(slot) = self.ctxs.get_mut(i).filter(|s| s.is_some()) else {
            return Step::Idle;
        };
        let Some(mut x) = slot.take() else {
            return Step::Idle;
        };
        let c = i as u16;
        let r = self.step_inner(m, i, &mut x);
        self.ctxs[i] = Some(x);
        // All of the step's DMA is done: the oracle judges it now, so an access that a
        // report overtook while it was in progress is caught too (spec §8a).
        if !self.oracle_pieces.is_empty() {
            self.oracle_judge();
        }
        match r {
            Ok(s) => s,
            Err((code, va)) => {
                // The context cannot make progress: it stays disabled.
                self.disable_ctx(i);
                self.error(code, c, va, 0);
                Step::Progress
            }
        }
    }

    /// `Err((code, va))`: disable the context with that error.
    fn step_inner(&mut self, m: &GuestMem, i: usize, x: &mut Ctx) -> Result<Step, (u32, u64)> {
        if x.parked.is_some() {
            return Ok(Step::Idle);
        }
        let c = i as u16;
        let root = x.entry.root;
        match std::mem::replace(&mut x.stage, Stage::Idle) {
            Stage::Idle => {
                let n = 1u32 << x.entry.wq_size_log2;
                if x.wq_head == self.sh.doorbell(i) % n {
                    return Ok(Step::Idle);
                }
                let va = x.entry.wq_va + 64 * u64::from(x.wq_head);
                let mut b = [0u8; 64];
                match self.dma_read(m, c, root, va, &mut b) {
                    Ok(()) => {}
                    Err(AccessErr::Fault { va, write, code }) => {
                        self.park(x, c, Site::Fetch, va, write, code);
                        return Ok(Step::Progress);
                    }
                    Err(AccessErr::Bad { va, code }) => return Err((code, va)),
                    Err(AccessErr::Halted) => return Ok(Step::Progress),
                    Err(AccessErr::Refused) => return Ok(Step::Idle),
                }
                let desc = WorkDesc::read_from_bytes(&b).unwrap_or_default();
                tracing::debug!(
                    ctx = c,
                    op = desc.opcode,
                    tag = desc.tag,
                    len = desc.len,
                    "work"
                );
                x.stage = if valid(&desc) {
                    Stage::Exec(Item {
                        desc,
                        done: 0,
                        traffic: None,
                    })
                } else {
                    self.error(error::BAD_DESCRIPTOR, c, desc.tag, 0);
                    Stage::Complete(completion(&desc, completion::BAD_DESCRIPTOR, 0, 0, 0))
                };
                Ok(Step::Progress)
            }
            Stage::Exec(mut item) => {
                let out = match item.desc.opcode {
                    work::COPY => self.copy_step(m, c, root, &mut item),
                    work::TRAFFIC => self.traffic_step(m, c, root, &mut item),
                    _ => Outcome::Done(completion(&item.desc, completion::OK, 0, 0, 0)),
                };
                let mut step = Step::Progress;
                match out {
                    Outcome::More => x.stage = Stage::Exec(item),
                    Outcome::Done(d) => x.stage = Stage::Complete(d),
                    Outcome::Wait(t) => {
                        x.stage = Stage::Exec(item);
                        step = Step::Until(t);
                    }
                    Outcome::Err(AccessErr::Fault { va, write, code }) => {
                        x.stage = Stage::Exec(item);
                        self.park(x, c, Site::Work, va, write, code);
                    }
                    Outcome::Err(AccessErr::Bad { va, code }) => {
                        self.error(code, c, va, 0);
                        let d = completion(&item.desc, completion::TABLE_ERROR, 0, item.done, va);
                        x.stage = Stage::Complete(d);
                    }
                    Outcome::Err(AccessErr::Halted) => x.stage = Stage::Exec(item),
                    Outcome::Err(AccessErr::Refused) => {
                        x.stage = Stage::Exec(item);
                        step = Step::Idle;
                    }
                }
                Ok(step)
            }
            Stage::Complete(d) => {
                let n = 1u64 << x.entry.cq_size_log2;
                let va = x.entry.cq_va + 32 * (x.cq_written % n);
                let phase = if (x.cq_written / n).is_multiple_of(2) {
                    completion::FLAG_PHASE
                } else {
                    0
                };
                // Entries are 32-byte aligned: one piece, never across a page.
                let mark = self.oracle_pieces.len();
                let r = self
                    .piece(m, c, root, va, 32, true)
                    .and_then(|(gpa, _)| self.dma_gate(mark, false).map(|()| gpa));
                let gpa = match r {
                    Ok(gpa) => gpa,
                    Err(AccessErr::Fault { va, write, code }) => {
                        x.stage = Stage::Complete(d);
                        self.park(x, c, Site::Completion, va, write, code);
                        return Ok(Step::Progress);
                    }
                    Err(AccessErr::Bad { va, code }) => return Err((code, va)),
                    Err(AccessErr::Halted) => {
                        x.stage = Stage::Complete(d);
                        return Ok(Step::Progress);
                    }
                    Err(AccessErr::Refused) => {
                        x.stage = Stage::Complete(d);
                        return Ok(Step::Idle);
                    }
                };
                // The entry with the old phase first, then the flags with a release
                // store: a process that sees the new phase sees the whole entry.
                let mut cpl = d.cpl;
                cpl.flags = phase ^ completion::FLAG_PHASE;
                mem::write(m, gpa, cpl.as_bytes())
                    .and_then(|()| mem::store_u16(m, gpa + 10, phase))
                    .map_err(|e| (error::ADDRESS_ERROR, e.addr))?;
                self.sh.counters.inc(counter::DMA_OPS);
                self.sh.counters.add(counter::DMA_BYTES, 32);
                x.cq_written += 1;
                x.wq_head = (x.wq_head + 1) % (1u32 << x.entry.wq_size_log2);
                self.sh.counters.inc(counter::WORK_COMPLETED);
                tracing::debug!(ctx = c, tag = cpl.tag, status = cpl.status, "completion");
                if d.notify {
                    self.post(Event {
                        kind: event::WORK_DONE,
                        ctx: c,
                        code: u32::from(cpl.status),
                        addr: cpl.tag,
                        ..Event::default()
                    });
                }
                Ok(Step::Progress)
            }
        }
    }

    /// Copies one run of a COPY (translated and judged already), counts it, and adds it to
    /// `done` (the bytes a completion reports: only what was really copied).
    fn copy_run(
        &mut self,
        m: &GuestMem,
        run: Option<Run>,
        done: &mut u64,
    ) -> Result<(), AccessErr> {
        let Some(r) = run else {
            return Ok(());
        };
        self.dma_gate(r.mark, true)?;
        if mem::copy(m, r.src, r.dst, r.len as usize, &mut self.scratch).is_err() {
            // Refused by the RAM check before any byte moved.
            self.oracle_pieces.truncate(r.mark);
            return Err(AccessErr::Bad {
                va: r.va,
                code: error::ADDRESS_ERROR,
            });
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
    ) -> Option<Result<(u64, u64, u64), AccessErr>> {
        let page = |va: u64, write: bool| {
            self.tlb
                .front_hit(c, va)
                .filter(|e| !write || e.leaf.writable)
                .map(|e| (e.leaf.gpa_of(va), e.leaf.room(va), (e.seq, e.oracle)))
        };
        let (sg, s_room, s_when) = page(src, false)?;
        let (dg, d_room, d_when) = page(dst, true)?;
        // Offsets (from the start) where the current page of each side ends.
        let (mut s_end, mut d_end) = (s_room, d_room);
        let mut n = s_end.min(d_end).min(max);
        while n < max {
            // Front entries are 4 KiB pages, so a page ends on a page boundary.
            let next = |end: u64, va: u64, gpa: u64, when: (u64, u64), write: bool| {
                page(va + end, write)
                    .filter(|&(g, _, w)| g == gpa + end && w == when)
                    .map(|_| end + pte::PAGE_SIZE)
            };
            if s_end == n {
                let Some(e) = next(s_end, src, sg, s_when, false) else {
                    break;
                };
                s_end = e;
            }
            if d_end == n {
                let Some(e) = next(d_end, dst, dg, d_when, true) else {
                    break;
                };
                d_end = e;
            }
            n = s_end.min(d_end).min(max);
        }
        let pages = |va: u64| ((va + n - 1) >> pte::PAGE_SHIFT) - (va >> pte::PAGE_SHIFT) + 1;
        self.tlb_hits += pages(src) + pages(dst);
        Some(
            self.judge(c, src, n, s_when.0, s_when.1)
                .and_then(|()| self.judge(c, dst, n, d_when.0, d_when.1))
                .map(|()| (sg, dg, n)),
        )
    }

    /// One step of a COPY: up to [`COPY_STEP`] bytes, translated page by page (or leaf by
    /// leaf) on both sides.
    fn copy_step(&mut self, m: &GuestMem, c: u16, root: u64, item: &mut Item) -> Outcome {
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
                self.piece(m, c, root, s, want, false).and_then(|(sg, sn)| {
                    let (dg, dn) = self.piece(m, c, root, t, sn, true)?;
                    Ok((sg, dg, dn))
                })
            });
            let (sg, dg, n) = match r {
                Ok(v) => v,
                Err(e) => {
                    // This piece is not accessed; what was translated before it is still
                    // copied.
                    self.oracle_pieces.truncate(mark);
                    if let Err(e) = self.copy_run(m, run.take(), &mut item.done) {
                        return Outcome::Err(e);
                    }
                    return Outcome::Err(e);
                }
            };
            run = match run {
                Some(r) if r.src + r.len == sg && r.dst + r.len == dg => Some(Run {
                    len: r.len + n,
                    ..r
                }),
                prev => {
                    if let Err(e) = self.copy_run(m, prev, &mut item.done) {
                        return Outcome::Err(e);
                    }
                    Some(Run {
                        src: sg,
                        dst: dg,
                        len: n,
                        va: s,
                        mark,
                    })
                }
            };
            pos += n;
            budget -= n;
        }
        if let Err(e) = self.copy_run(m, run, &mut item.done) {
            return Outcome::Err(e);
        }
        if item.done >= total {
            Outcome::Done(completion(&d, completion::OK, 0, total, 0))
        } else {
            Outcome::More
        }
    }
}
