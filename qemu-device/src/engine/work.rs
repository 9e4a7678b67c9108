//! A context's work items (spec §11, §12), one bounded step at a time: fetch and decode
//! the next descriptor (refusing it by `WorkDesc::validate`), execute it (COPY in
//! `copy`, TRAFFIC through the generator in `traffic`, PUT and GET in `initiator`, NOP),
//! write its completion, and
//! park the context on a fault until RESUME or ABORT.
//!
//! A context that cannot make progress (its descriptor or completion ring fails with a
//! device error) is disabled and the error reported, once, in [`Core::step_ctx`].

use mnic_abi::{completion, counter, event, work, Completion, Event, WorkDesc};
use zerocopy::{FromBytes, IntoBytes};

use super::context::{Ctx, Done, Item, Parked, Site, Stage, COMPLETION_SIZE};
use super::error::{AccessError, DeviceError, Fault};
use super::state::Core;
use super::step::{Outcome, Step};
use super::traffic::{TrafficOp, TrafficState};
use crate::mem::{self, GuestMem};

impl Core {
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
            Err(e) => {
                // The context cannot make progress: it stays disabled.
                self.disable_ctx(i);
                self.report(e, c, 0);
                Step::Progress
            }
        }
    }

    /// `Err`: the context cannot make progress; disable it with that error.
    fn step_inner(&mut self, m: &GuestMem, i: usize, x: &mut Ctx) -> Result<Step, DeviceError> {
        if x.parked.is_some() {
            return Ok(Step::Idle);
        }
        match std::mem::replace(&mut x.stage, Stage::Idle) {
            Stage::Idle => self.fetch(m, i, x),
            Stage::Exec(item) => Ok(self.execute(m, i as u16, x, item)),
            Stage::Complete(d) => self.complete(m, i as u16, x, d),
        }
    }

    /// Fetches and decodes the next descriptor, if the tail (doorbell or shadow page)
    /// says there is one. A refused descriptor is reported and completes with
    /// `BAD_DESCRIPTOR`.
    fn fetch(&mut self, m: &GuestMem, i: usize, x: &mut Ctx) -> Result<Step, DeviceError> {
        if !x.has_work(x.tail(self.sh.doorbell(i))) {
            return Ok(Step::Idle);
        }
        let c = i as u16;
        let mut b = [0u8; size_of::<WorkDesc>()];
        match self.dma_read(m, c, x.root(), x.next_desc_va(), &mut b) {
            Ok(()) => {}
            Err(AccessError::Fault(f)) => {
                self.park(x, c, Site::Fetch, f);
                return Ok(Step::Progress);
            }
            Err(AccessError::Failed(e)) => return Err(e),
            Err(AccessError::Halted) => return Ok(Step::Progress),
            Err(AccessError::Refused) => return Ok(Step::Idle),
        }
        let desc = WorkDesc::read_from_bytes(&b).unwrap_or_default();
        tracing::debug!(
            ctx = c,
            op = desc.opcode,
            tag = desc.tag,
            len = desc.len,
            "work"
        );
        x.stage = match desc.validate() {
            Ok(()) => Stage::Exec(Item::new(desc)),
            Err(reason) => {
                let tag = desc.tag;
                self.report(DeviceError::BadDescriptor { tag, reason }, c, 0);
                Stage::Complete(Done::of(&desc, completion::BAD_DESCRIPTOR, 0, 0, 0))
            }
        };
        Ok(Step::Progress)
    }

    /// One step of the current item. A failed access completes it with `TABLE_ERROR`; a
    /// fault parks the context with the item where it stopped.
    fn execute(&mut self, m: &GuestMem, c: u16, x: &mut Ctx, mut item: Item) -> Step {
        let root = x.root();
        let out = match item.desc.opcode {
            work::COPY => self.copy_step(m, c, root, &mut item),
            work::TRAFFIC => {
                let desc = item.desc;
                let state = item.traffic.get_or_insert_with(|| TrafficState::new(&desc));
                state.step(&desc, &mut item.done, |op| {
                    match op {
                        TrafficOp::Read { va, buf } => self.dma_read(m, c, root, va, buf),
                        TrafficOp::Write { va, buf } => self.dma_write(m, c, root, va, buf),
                    }?;
                    self.sh.counters.inc(counter::TRAFFIC_OPS);
                    Ok(())
                })
            }
            work::PUT | work::GET => self.rma_step(m, c, root, &mut item),
            _ => Outcome::Finished { bytes: 0 },
        };
        let mut step = Step::Progress;
        let mut fault = None;
        x.stage = match out {
            Outcome::More => Stage::Exec(item),
            Outcome::Finished { bytes } => {
                Stage::Complete(Done::of(&item.desc, completion::OK, 0, bytes, 0))
            }
            Outcome::Ended {
                status,
                detail,
                bytes,
                fault_va,
            } => Stage::Complete(Done::of(&item.desc, status, detail, bytes, fault_va)),
            Outcome::Wait(t) => {
                step = Step::Until(t);
                Stage::Exec(item)
            }
            Outcome::Failed(AccessError::Fault(f)) => {
                fault = Some(f);
                Stage::Exec(item)
            }
            Outcome::Failed(AccessError::Failed(e)) => {
                // A DMA access fails with the VA it was made at.
                let va = e.detail();
                self.report(e, c, 0);
                Stage::Complete(Done::of(
                    &item.desc,
                    completion::TABLE_ERROR,
                    0,
                    item.done,
                    va,
                ))
            }
            Outcome::Failed(AccessError::Halted) => Stage::Exec(item),
            Outcome::Failed(AccessError::Refused) => {
                step = Step::Idle;
                Stage::Exec(item)
            }
        };
        if let Some(f) = fault {
            self.park(x, c, Site::Work, f);
        }
        step
    }

    /// Writes the current item's completion (spec §7a: the entry with the previous
    /// pass's phase first, the phase bit last) and posts its WORK_DONE event if asked.
    fn complete(
        &mut self,
        m: &GuestMem,
        c: u16,
        x: &mut Ctx,
        d: Done,
    ) -> Result<Step, DeviceError> {
        let (va, phase) = x.next_completion();
        // Entries are 32-byte aligned: one piece, never across a page.
        let mark = self.oracle_pieces.len();
        let r = self
            .piece(m, c, x.root(), va, COMPLETION_SIZE, true)
            .and_then(|p| self.dma_gate(mark, false).map(|()| p.gpa));
        let gpa = match r {
            Ok(gpa) => gpa,
            Err(AccessError::Fault(f)) => {
                x.stage = Stage::Complete(d);
                self.park(x, c, Site::Completion, f);
                return Ok(Step::Progress);
            }
            Err(AccessError::Failed(e)) => return Err(e),
            Err(AccessError::Halted) => {
                x.stage = Stage::Complete(d);
                return Ok(Step::Progress);
            }
            Err(AccessError::Refused) => {
                x.stage = Stage::Complete(d);
                return Ok(Step::Idle);
            }
        };
        // The entry with the old phase first, then the flags with a release store: a
        // process that sees the new phase sees the whole entry.
        let mut cpl = d.cpl;
        cpl.flags = cpl.flags_with_phase(!phase);
        mem::write(m, gpa, cpl.as_bytes())
            .and_then(|()| {
                let flags_at = gpa + Completion::PHASE_OFFSET as u64;
                mem::store_u16(m, flags_at, cpl.flags_with_phase(phase))
            })
            .map_err(|e| DeviceError::Address { addr: e.addr })?;
        self.sh.counters.inc(counter::DMA_OPS);
        self.sh.counters.add(counter::DMA_BYTES, COMPLETION_SIZE);
        x.completed();
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

    /// Parks context `c` on fault `f` at `site` and posts its FAULT event (`info` 0: a
    /// local fault).
    fn park(&mut self, x: &mut Ctx, c: u16, site: Site, f: Fault) {
        self.park_with(x, c, site, f, 0);
    }

    /// Parks context `c` on fault `f` at `site` and posts its FAULT event with `info`
    /// (`1 << 32 | source node` for a network fault, docs/fabric.md 14.13).
    pub(super) fn park_with(&mut self, x: &mut Ctx, c: u16, site: Site, f: Fault, info: u64) {
        let id = self.next_fault_id;
        self.next_fault_id = self.next_fault_id.checked_add(1).unwrap_or(1);
        x.parked = Some(Parked {
            id,
            site,
            va: f.va,
            write: f.write,
        });
        self.sh.counters.inc(counter::FAULTS);
        let (va, write, code) = (f.va, f.write, f.cause.code());
        tracing::debug!(ctx = c, va, write, code, id, ?site, "fault: context parked");
        self.post(Event {
            kind: event::FAULT,
            flags: if f.write { event::FLAG_WRITE } else { 0 },
            ctx: c,
            code,
            addr: va,
            id,
            info,
        });
    }
}
