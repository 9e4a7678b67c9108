//! The command queue (spec §7): strictly in order, one sequence number per command.
//! `KEY_SET`/`KEY_CLEAR` change the remote keys (`keys`) between packets, so a SYNC after
//! a `KEY_CLEAR` fences the key like an invalidation (docs/fabric.md 14.13).
//! A bad command is reported (ERROR event, ERROR_CODE, counter), skipped, and the
//! queue continues. Indices follow spec §7a (`mnic_abi::ring`).

use mnic_abi::SHADOW_PAGE_SIZE;
use mnic_abi::{cmd, completion, counter, event, irq, pte, reg, ring, Command, CtxEntry};
use mnic_abi::{CMD_FLAG_IRQ, CTX_FLAG_VALID, NUM_CONTEXTS, RING_LOG2_MAX, RING_LOG2_MIN};
use zerocopy::FromBytes;

use super::context::{Ctx, Done, NetAbort, Site, Stage};
use super::error::DeviceError;
use super::keys::Keys;
use super::shadow;
use super::state::Core;
use crate::mem::{self, GuestMem};

/// Size of one command.
const ENTRY: u64 = size_of::<Command>() as u64;

/// Commands executed per poll before the contexts get a turn.
const CMD_BUDGET: usize = 64;

impl Core {
    /// Executes pending commands (at most the budget). Returns whether any ran.
    pub(super) fn run_commands(&mut self, m: &GuestMem) -> bool {
        let n = 1u64 << self.cmdq_log2;
        // One source of truth per queue (spec §4a): with a shadow page, `CMDQ_TAIL` only
        // wakes the device.
        let tail = if self.cmd_shadow != 0 {
            u64::from(self.cmd_tail)
        } else {
            u64::from(self.sh.reg(reg::CMDQ_TAIL))
        };
        let mut ran = 0;
        while ring::pending(u64::from(self.cmd_head), tail, n) != 0
            && ran < CMD_BUDGET
            && !self.stopped()
        {
            let at = self.cmdq_base + u64::from(self.cmd_head) * ENTRY;
            let mut b = [0u8; ENTRY as usize];
            self.seq += 1;
            self.sh.counters.inc(counter::COMMANDS);
            match mem::read(m, at, &mut b) {
                Ok(()) => {
                    // 32 bytes always parse.
                    let c = Command::read_from_bytes(&b).unwrap_or_default();
                    tracing::debug!(seq = self.seq, op = c.opcode, ctx = c.ctx, "command");
                    if let Err(e) = self.exec(m, &c) {
                        self.report(e, c.ctx, self.seq);
                    }
                    if c.flags & CMD_FLAG_IRQ != 0 {
                        // After the command's effect (a SYNC value is in memory).
                        self.raise(irq::CMD_DONE);
                    }
                }
                Err(e) => self.report(
                    DeviceError::Address { addr: e.addr },
                    event::NO_CTX,
                    self.seq,
                ),
            }
            self.cmd_head = ring::next(u64::from(self.cmd_head), n) as u32;
            self.sh.set_reg(reg::CMDQ_HEAD, self.cmd_head);
            ran += 1;
        }
        ran > 0
    }

    fn ctx_index(c: &Command) -> Result<usize, DeviceError> {
        if u32::from(c.ctx) < NUM_CONTEXTS {
            Ok(usize::from(c.ctx))
        } else {
            Err(bad_context(c))
        }
    }

    fn exec(&mut self, m: &GuestMem, c: &Command) -> Result<(), DeviceError> {
        let seq = self.seq;
        match c.opcode {
            cmd::NOP => Ok(()),
            cmd::INVALIDATE_RANGE => {
                Self::ctx_index(c)?;
                let end = c.arg0.checked_add(c.arg1);
                let Some(end) = end.filter(|_| c.arg1 != 0) else {
                    return Err(DeviceError::BadCommand { value: c.arg0 });
                };
                let n = self.tlb.invalidate_range(c.ctx, c.arg0, end);
                self.checker.record(c.ctx, seq, c.arg0, end);
                self.invalidated(n);
                Ok(())
            }
            cmd::INVALIDATE_CTX => {
                Self::ctx_index(c)?;
                let n = self.tlb.invalidate_ctx(c.ctx);
                self.checker.record(c.ctx, seq, 0, u64::MAX);
                self.invalidated(n);
                Ok(())
            }
            cmd::SYNC => {
                if !c.arg0.is_multiple_of(8) {
                    return Err(DeviceError::BadCommand { value: c.arg0 });
                }
                // Fence: see the module comment of `engine`. No DMA is in flight
                // here, and every earlier invalidation has dropped its entries.
                mem::store_u64(m, c.arg0, c.arg1)
                    .map_err(|e| DeviceError::Address { addr: e.addr })?;
                self.checker.sync_completed(seq);
                self.sh.counters.inc(counter::SYNCS);
                Ok(())
            }
            cmd::RESUME | cmd::ABORT => {
                let i = Self::ctx_index(c)?;
                let parked = self.ctxs[i]
                    .as_ref()
                    .and_then(|x| x.parked)
                    .filter(|p| p.id == c.arg0)
                    .ok_or(DeviceError::BadFaultId { id: c.arg0 })?;
                if c.opcode == cmd::RESUME {
                    self.sh.counters.inc(counter::RESUMES);
                    if let Some(x) = self.ctxs[i].as_mut() {
                        x.parked = None;
                    }
                    self.evq.withdraw_fault(c.ctx);
                    tracing::debug!(ctx = c.ctx, id = c.arg0, "resume");
                } else {
                    self.sh.counters.inc(counter::ABORTS);
                    tracing::debug!(ctx = c.ctx, id = c.arg0, "abort");
                    self.abort(i, parked.site, c.arg1 as u32);
                }
                Ok(())
            }
            cmd::CTX_ENABLE => self.ctx_enable(m, c),
            cmd::KEY_SET => self.key_set(c),
            cmd::KEY_CLEAR => {
                let i = Self::ctx_index(c)?;
                self.keys
                    .clear(i as u16, c.arg0 as u32)
                    .map_err(|_| DeviceError::BadCommand { value: c.arg0 })?;
                tracing::debug!(ctx = c.ctx, key = c.arg0 as u32, "remote key cleared");
                Ok(())
            }
            cmd::CTX_DISABLE => {
                let i = Self::ctx_index(c)?;
                self.disable_ctx(i);
                // Only the command takes the keys away: a context the device stopped on
                // its own keeps them until the driver's CTX_DISABLE (spec §12a), so that
                // the driver's record of the keys the device holds stays exact.
                self.keys.drop_ctx(c.ctx);
                self.checker.record(c.ctx, seq, 0, u64::MAX);
                // The context's process is gone or going: its oracle watch ends too.
                self.sh.oracle.forget(c.ctx);
                Ok(())
            }
            op => Err(DeviceError::BadCommand {
                value: u64::from(op),
            }),
        }
    }

    /// `KEY_SET` (spec §7): the checks in order, then the key is live for packets served
    /// after this command.
    fn key_set(&mut self, c: &Command) -> Result<(), DeviceError> {
        let i = Self::ctx_index(c)?;
        let bad = DeviceError::BadCommand { value: c.arg2 };
        if self.link.is_none() {
            return Err(DeviceError::BadCommand {
                value: u64::from(c.opcode),
            });
        }
        let (key, k) = Keys::decode(c.ctx, c.arg0, c.arg1, c.arg2).map_err(|_| bad)?;
        if self.ctxs[i].is_none() {
            return Err(bad_context(c));
        }
        self.keys.insert(key, k).map_err(|_| bad)?;
        tracing::debug!(ctx = c.ctx, key, va = k.va, len = k.len, "remote key set");
        Ok(())
    }

    fn invalidated(&mut self, n: usize) {
        self.sh.counters.inc(counter::INVALIDATIONS);
        self.sh
            .counters
            .set(counter::TLB_ENTRIES, self.tlb.len() as u64);
        tracing::debug!(dropped = n, "invalidate");
    }

    /// ABORT of a parked fault: work faults complete the item; a descriptor fetch or
    /// completion write cannot make progress, so the context is disabled.
    fn abort(&mut self, i: usize, site: Site, detail: u32) {
        let Some(x) = self.ctxs[i].as_mut() else {
            return;
        };
        let (fault_va, fault_write) = x.parked.map_or((0, false), |p| (p.va, p.write));
        x.parked = None;
        self.evq.withdraw_fault(i as u16);
        match site {
            Site::Work => {
                if let Stage::Exec(item) = &x.stage {
                    let (desc, done) = (item.desc, item.done);
                    x.stage = Stage::Complete(Done::of(
                        &desc,
                        completion::FAULT_ABORTED,
                        detail,
                        done,
                        fault_va,
                    ));
                }
            }
            Site::Network => {
                // Nothing of the context's own waited: it runs on, and the page is
                // refused to the peers that fault there.
                x.net_abort = x.parked_origin.take().map(|origin| NetAbort {
                    page: fault_va & !(pte::PAGE_SIZE - 1),
                    write: fault_write,
                    errno: detail,
                    origin,
                });
            }
            Site::Fetch | Site::Completion => {
                self.disable_ctx(i);
                let e = DeviceError::BadContext { value: fault_va };
                self.report(e, i as u16, self.seq);
            }
        }
    }

    /// Stops context `i`: drops its TLB entries and any queued or parked work (and the
    /// parked fault's event if it is still waiting inside the device). Its remote keys
    /// stay until `CTX_DISABLE` (packets to a stopped context are answered `NO_CONTEXT`).
    pub(super) fn disable_ctx(&mut self, i: usize) {
        if self.ctxs.get_mut(i).and_then(Option::take).is_some() {
            tracing::debug!(ctx = i, "context disabled");
        }
        self.evq.withdraw_fault(i as u16);
        self.set_live(i, false);
        self.tlb.invalidate_ctx(i as u16);
        self.sh
            .counters
            .set(counter::TLB_ENTRIES, self.tlb.len() as u64);
    }

    fn ctx_enable(&mut self, m: &GuestMem, c: &Command) -> Result<(), DeviceError> {
        let i = Self::ctx_index(c)?;
        if self.ctxs[i].is_some() {
            return Err(bad_context(c));
        }
        // A context starts without remote keys (spec §7).
        self.keys.drop_ctx(c.ctx);
        let mut b = [0u8; size_of::<CtxEntry>()];
        let at = self.ctx_table + b.len() as u64 * i as u64;
        mem::read(m, at, &mut b).map_err(|e| DeviceError::Address { addr: e.addr })?;
        let e = CtxEntry::read_from_bytes(&b).unwrap_or_default();
        let sizes = RING_LOG2_MIN..=RING_LOG2_MAX;
        let fits = |va: u64, log2: u8, entry: u64| {
            va.checked_add(entry << log2)
                .is_some_and(|end| end <= pte::VA_LIMIT)
        };
        let ok = e.flags & CTX_FLAG_VALID != 0
            && e.rsvd == 0
            && e.rsvd2 == [0; 3]
            && sizes.contains(&e.wq_size_log2)
            && sizes.contains(&e.cq_size_log2)
            && e.root.is_multiple_of(pte::PAGE_SIZE)
            && e.wq_va.is_multiple_of(64)
            && e.cq_va.is_multiple_of(32)
            && fits(e.wq_va, e.wq_size_log2, 64)
            && fits(e.cq_va, e.cq_size_log2, 32);
        if !ok {
            return Err(bad_context(c));
        }
        mem::check(m, e.root, pte::PAGE_SIZE, false)
            .map_err(|_| DeviceError::Address { addr: e.root })?;
        // Checked as the root is: alignment is the entry's business, RAM the address's.
        if !e.shadow.is_multiple_of(SHADOW_PAGE_SIZE) {
            return Err(bad_context(c));
        }
        if !shadow::valid(m, e.shadow) {
            return Err(DeviceError::Address { addr: e.shadow });
        }
        // The queue starts at the shadow's tail of this moment (spec §4a).
        let n = 1u64 << e.wq_size_log2;
        let tail = if e.shadow != 0 {
            shadow::read_tail(m, e.shadow, n).unwrap_or(0)
        } else {
            0
        };
        self.ctxs[i] = Some(Box::new(Ctx::new(e, tail)));
        self.set_live(i, true);
        self.polling_joined(m, e.shadow);
        tracing::debug!(
            ctx = i,
            root = e.root,
            wq = e.wq_va,
            cq = e.cq_va,
            "context enabled"
        );
        Ok(())
    }
}

/// The error for a command naming a context it cannot act on.
fn bad_context(c: &Command) -> DeviceError {
    DeviceError::BadContext {
        value: u64::from(c.ctx),
    }
}
