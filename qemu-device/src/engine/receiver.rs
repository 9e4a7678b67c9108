//! The receiver side of tagged messages (docs/fabric.md 14.14). An `EAGER` or `RTS`
//! delivered to this node is parsed on its own (malformed: refused, counted, not
//! answered), then matched against the context's posted receives: an eager message is
//! written at once, through the context's translation like a `PUT` (all or nothing: a
//! missing page writes nothing and is answered `RNR` with a network fault), an `RTS`
//! starts a pull; without a match the message is kept unexpected, or refused `RNR` when
//! that queue is full. A RECV fetched by `work` takes the oldest unexpected message it
//! matches, or is posted. Each context step first advances its oldest delivery: copy
//! the kept data, drive the pull (the GET code of `initiator`), send the `FIN`, write
//! the completion. A context that stops tells the rendezvous senders it owes a `FIN`.
//!
//! Listed after `work`: it writes completions and parks with `work`'s code, and `work`
//! hands it the RECVs it fetches and each step's deliveries.

use std::time::Instant;

use mnic_abi::fabric::{nak, ptype, EagerHeader, ReplyHeader, RtsHeader};
use mnic_abi::{completion, counter, fabric_counter, pte, work, Endpoint, WorkDesc};
use zerocopy::{FromBytes, IntoBytes};

use super::context::{Ctx, Done, Origin, Site};
use super::error::{AccessError, DeviceError};
use super::initiator::SEND_RETRY;
use super::msg::{fin_reason, Body, Deliver, Delivery, Message, Outcome as Delivered};
use super::state::Core;
use super::step::{Outcome, Step};
use super::target::{page_back, Refused, EFAULT};
use super::work::Wrote;
use crate::fabric::Message as Packet;
use crate::mem::{self, GuestMem};

/// A well-formed `EAGER` or `RTS`.
struct Arrival<'a> {
    bits: u64,
    req_id: u32,
    /// An eager message's data, else `None` (an RTS).
    data: Option<&'a [u8]>,
    /// An RTS: the sender's buffer and the message's length.
    va: u64,
    len: u64,
}

/// Parses an `EAGER` (`eager`) or `RTS` payload: `None` if malformed.
fn parse(eager: bool, payload: &[u8]) -> Option<Arrival<'_>> {
    if eager {
        let (h, data) = EagerHeader::read_from_prefix(payload).ok()?;
        let ok = h.msg_len.get() as usize == data.len() && h.req_id.get() != 0;
        return ok.then_some(Arrival {
            bits: h.match_bits.get(),
            req_id: h.req_id.get(),
            data: Some(data),
            va: 0,
            len: data.len() as u64,
        });
    }
    let h = RtsHeader::read_from_bytes(payload).ok()?;
    let (va, len) = (h.va.get(), u64::from(h.msg_len.get()));
    let ok = h.rkey.get() == 0
        && h.reserved.get() == 0
        && h.req_id.get() != 0
        && len <= u64::from(work::RMA_MAX)
        && va.checked_add(len).is_some_and(|end| end <= pte::VA_LIMIT);
    ok.then_some(Arrival {
        bits: h.match_bits.get(),
        req_id: h.req_id.get(),
        data: None,
        va,
        len,
    })
}

/// What a delivery step leads to, once the delivery is no longer borrowed.
enum Next {
    /// The step ends so.
    Step(Step),
    /// A local fault: park.
    Park(super::error::Fault),
    /// The completion is to be written.
    Write(Done),
}

impl Core {
    /// Serves one delivered `EAGER` or `RTS` and answers it.
    pub(super) fn serve_message(&mut self, m: &GuestMem, msg: &Packet) {
        let Some(a) = parse(msg.ptype == ptype::EAGER, &msg.payload) else {
            self.sh.rma.bump(fabric_counter::REFUSED);
            tracing::debug!(src = msg.src_node, ptype = msg.ptype, "malformed message");
            return;
        };
        let (status, detail) = self.arrive(m, msg, &a);
        if !self.oracle_pieces.is_empty() {
            self.oracle_judge();
        }
        match status {
            nak::OK => {}
            nak::RNR => self.sh.rma.bump(fabric_counter::RNR_SENT),
            _ => self.sh.rma.bump(fabric_counter::ERRORS_SENT),
        }
        let h = ReplyHeader {
            req_id: a.req_id.into(),
            status: status.into(),
            detail: detail.into(),
            ..ReplyHeader::default()
        };
        if let Some(l) = &self.link {
            // Refused only with the send queue full: the sender's timeout covers it.
            let _ = l.send(
                &self.sh.rma,
                msg.src_node,
                ptype::REPLY,
                msg.dst_ctx,
                msg.src_ctx,
                h.as_bytes(),
            );
        }
    }

    /// Matches, writes or keeps message `a` for its context: the `REPLY` status.
    fn arrive(&mut self, m: &GuestMem, msg: &Packet, a: &Arrival) -> Refused {
        let i = usize::from(msg.dst_ctx);
        if !self.enabled || self.halted {
            return (nak::NO_CONTEXT, 0);
        }
        let Some(mut x) = self.ctxs.get_mut(i).and_then(Option::take) else {
            return (nak::NO_CONTEXT, 0);
        };
        let r = self.arrive_at(m, msg, a, &mut x, i);
        self.ctxs[i] = Some(x);
        r
    }

    fn arrive_at(
        &mut self,
        m: &GuestMem,
        msg: &Packet,
        a: &Arrival,
        x: &mut Ctx,
        i: usize,
    ) -> Refused {
        let from = Endpoint {
            node: msg.src_node,
            ctx: msg.src_ctx,
        };
        let body = || match a.data {
            Some(d) => Body::Eager(d.to_vec()),
            None => Body::Rts {
                va: a.va,
                len: a.len,
                req_id: a.req_id,
            },
        };
        let Some(p) = x.msgs.find_posted(a.bits) else {
            let kept = Message {
                from,
                bits: a.bits,
                body: body(),
            };
            if x.msgs.keep(kept) {
                self.sh.rma.bump(fabric_counter::UNEXPECTED);
                return (nak::OK, 0);
            }
            self.sh.rma.bump(fabric_counter::UNEXPECTED_FULL);
            return (nak::RNR, 0);
        };
        let Some(recv) = x.msgs.posted(p).copied() else {
            return (nak::RNR, 0);
        };
        let Some(data) = a.data else {
            x.msgs.take_posted(p);
            let rts = Message {
                from,
                bits: a.bits,
                body: body(),
            };
            x.msgs.deliver(recv, rts, Instant::now());
            self.sh.rma.bump(fabric_counter::RTS_MATCHED);
            return (nak::OK, 0);
        };
        let fits = &data[..data.len().min(recv.len as usize)];
        match self.write_whole(m, i as u16, x.root(), recv.dst, fits) {
            Ok(()) => {
                if let Some(last) = fits.len().checked_sub(1) {
                    page_back(x, recv.dst, true);
                    page_back(x, recv.dst + last as u64, true);
                }
                x.msgs.take_posted(p);
                x.msgs.delivered(recv, from, a.bits, data.len() as u64);
                self.sh.rma.bump(fabric_counter::EAGER_MATCHED);
                (nak::OK, 0)
            }
            Err(AccessError::Fault(f)) => {
                let origin = Origin {
                    node: from.node,
                    ctx: from.ctx,
                    req_id: a.req_id,
                };
                self.network_fault_of(x, i, f, origin)
            }
            Err(AccessError::Failed(e)) => {
                self.report(e, i as u16, 0);
                (nak::REMOTE_FAULT, EFAULT)
            }
            // Not now (bus mastering off, a halt): the sender retries.
            Err(AccessError::Halted | AccessError::Refused) => (nak::RNR, 0),
        }
    }

    /// Writes `data` at `va` of context `c` all or nothing: every piece is translated
    /// and judged before the first byte is written (an eager message spans at most two
    /// pages).
    fn write_whole(
        &mut self,
        m: &GuestMem,
        c: u16,
        root: u64,
        va: u64,
        data: &[u8],
    ) -> Result<(), AccessError> {
        let mark = self.oracle_pieces.len();
        let mut pieces = Vec::new();
        let mut off = 0usize;
        while off < data.len() {
            let at = va + off as u64;
            match self.piece(m, c, root, at, (data.len() - off) as u64, true) {
                Ok(p) => {
                    pieces.push((p.gpa, off, p.len as usize));
                    off += p.len as usize;
                }
                Err(e) => {
                    self.oracle_pieces.truncate(mark);
                    return Err(e);
                }
            }
        }
        self.dma_gate(mark, false)?;
        for (gpa, off, n) in pieces {
            if mem::write(m, gpa, &data[off..off + n]).is_err() {
                self.oracle_pieces.truncate(mark);
                let addr = va + off as u64;
                return Err(DeviceError::Address { addr }.into());
            }
            self.sh.counters.inc(counter::DMA_OPS);
            self.sh.counters.add(counter::DMA_BYTES, n as u64);
        }
        Ok(())
    }

    /// Takes validated RECV `recv` of context `x`: it retires its work-queue slot and
    /// takes the oldest matching unexpected message, or is posted. `false` when
    /// `POSTED_MAX` receives are outstanding: it waits in the queue.
    pub(super) fn post_recv(&mut self, x: &mut Ctx, recv: WorkDesc) -> bool {
        if !x.msgs.can_post() {
            return false;
        }
        x.retire();
        if let Some(msg) = x.msgs.post(recv) {
            self.sh.rma.bump(fabric_counter::RECV_MATCHED);
            x.msgs.deliver(recv, msg, Instant::now());
        }
        true
    }

    /// One step of context `x`'s oldest delivery.
    pub(super) fn deliver_step(
        &mut self,
        m: &GuestMem,
        c: u16,
        x: &mut Ctx,
    ) -> Result<Step, DeviceError> {
        let root = x.root();
        let Some(d) = x.msgs.active.front_mut() else {
            return Ok(Step::Idle);
        };
        let next = match &mut d.step {
            Deliver::Copy(data) => {
                let r = self.dma_write(m, c, root, d.recv.dst, data);
                match r {
                    Ok(()) => {
                        d.step = Deliver::Complete(d.delivered());
                        Next::Step(Step::Progress)
                    }
                    Err(e) => self.delivery_failed(c, d, e, 0),
                }
            }
            Deliver::Pull(r) => {
                let out = self.rma_drive(m, c, root, r);
                let bytes = r.confirmed;
                match out {
                    Outcome::Finished { .. } => {
                        let then = d.delivered();
                        d.step = Deliver::Fin {
                            status: nak::OK,
                            detail: 0,
                            then,
                        };
                        Next::Step(Step::Progress)
                    }
                    Outcome::Ended {
                        status,
                        detail,
                        bytes,
                        fault_va,
                    } => {
                        let then = Delivered {
                            status,
                            detail,
                            bytes,
                            fault_va,
                        };
                        d.step = match status {
                            // Nobody to tell.
                            completion::PEER_GONE | completion::NO_ROUTE => Deliver::Complete(then),
                            s => Deliver::Fin {
                                status: fin_reason(s),
                                detail: if s == completion::REMOTE_FAULT_ABORTED {
                                    detail
                                } else {
                                    0
                                },
                                then,
                            },
                        };
                        Next::Step(Step::Progress)
                    }
                    Outcome::Failed(e) => self.delivery_failed(c, d, e, bytes),
                    Outcome::Wait(t) => Next::Step(Step::Until(t)),
                    Outcome::Waiting => Next::Step(Step::Idle),
                    Outcome::More => Next::Step(Step::Progress),
                }
            }
            Deliver::Fin {
                status,
                detail,
                then,
            } => {
                let (status, detail, then) = (*status, *detail, *then);
                let sent = match d.req_id {
                    Some(id) => self.send_fin(c, d.from, id, status, detail),
                    None => true,
                };
                if sent {
                    d.step = Deliver::Complete(then);
                    Next::Step(Step::Progress)
                } else {
                    Next::Step(Step::Until(Instant::now() + SEND_RETRY))
                }
            }
            Deliver::Complete(o) => Next::Write(Done::posted(
                &d.recv, o.status, o.detail, o.bytes, o.fault_va,
            )),
        };
        match next {
            Next::Step(s) => Ok(s),
            Next::Park(f) => {
                self.park(x, c, Site::Recv, f);
                Ok(Step::Progress)
            }
            Next::Write(done) => match self.write_cpl(m, c, x, &done)? {
                Wrote::Yes => {
                    x.msgs.active.pop_front();
                    Ok(Step::Progress)
                }
                Wrote::Fault(f) => {
                    self.park(x, c, Site::Completion, f);
                    Ok(Step::Progress)
                }
                Wrote::Later(s) => Ok(s),
            },
        }
    }

    /// Delivery `d` of context `c` met access error `e` with `bytes` delivered: a fault
    /// parks the context; a failed access completes the receive `TABLE_ERROR` (after
    /// telling a rendezvous sender).
    fn delivery_failed(&mut self, c: u16, d: &mut Delivery, e: AccessError, bytes: u64) -> Next {
        match e {
            AccessError::Fault(f) => Next::Park(f),
            AccessError::Failed(e) => {
                let va = e.detail();
                self.report(e, c, 0);
                let then = Delivered {
                    status: completion::TABLE_ERROR,
                    detail: 0,
                    bytes,
                    fault_va: va,
                };
                d.step = match d.step {
                    Deliver::Pull(_) => Deliver::Fin {
                        status: nak::REMOTE_FAULT,
                        detail: EFAULT,
                        then,
                    },
                    _ => Deliver::Complete(then),
                };
                Next::Step(Step::Progress)
            }
            AccessError::Halted => Next::Step(Step::Progress),
            AccessError::Refused => Next::Step(Step::Idle),
        }
    }

    /// Context `x` (index `c`) stops: every rendezvous sender it owes a `FIN` is told
    /// `NO_CONTEXT` (its posted receives and messages go with it, without completions).
    pub(super) fn drop_messages(&mut self, c: u16, x: &Ctx) {
        for (to, req_id) in x.msgs.owed_fins() {
            // A full send queue loses it: the sender's SEND then waits, as for a lost
            // receiver.
            self.send_fin(c, to, req_id, nak::NO_CONTEXT, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eager(len: u32, data: usize, req_id: u32) -> Vec<u8> {
        let h = EagerHeader {
            match_bits: 9.into(),
            msg_len: len.into(),
            req_id: req_id.into(),
        };
        let mut p = h.as_bytes().to_vec();
        p.resize(p.len() + data, 1);
        p
    }

    fn rts(len: u32, va: u64, rkey: u32, req_id: u32) -> Vec<u8> {
        RtsHeader {
            match_bits: 9.into(),
            msg_len: len.into(),
            rkey: rkey.into(),
            va: va.into(),
            req_id: req_id.into(),
            reserved: 0.into(),
        }
        .as_bytes()
        .to_vec()
    }

    #[test]
    fn malformed_messages_are_refused() {
        assert!(parse(true, &eager(10, 10, 1)).is_some());
        assert!(parse(true, &eager(0, 0, 1)).is_some(), "empty message");
        assert!(parse(true, &eager(10, 9, 1)).is_none(), "length");
        assert!(parse(true, &eager(10, 11, 1)).is_none(), "length");
        assert!(parse(true, &eager(0, 0, 0)).is_none(), "req_id 0");
        assert!(parse(true, &eager(0, 0, 1)[..15]).is_none(), "short");
        assert!(parse(false, &rts(5000, 0x1000, 0, 1)).is_some());
        assert!(parse(false, &rts(5000, 0x1000, 3, 1)).is_none(), "a key");
        assert!(parse(false, &rts(5000, 0x1000, 0, 0)).is_none(), "req_id 0");
        assert!(
            parse(false, &rts(work::RMA_MAX + 1, 0x1000, 0, 1)).is_none(),
            "too long"
        );
        assert!(
            parse(false, &rts(5000, pte::VA_LIMIT - 10, 0, 1)).is_none(),
            "beyond the VAs"
        );
        let mut long = rts(5000, 0x1000, 0, 1);
        long.push(0);
        assert!(parse(false, &long).is_none(), "trailing bytes");
        let mut p = rts(5000, 0x1000, 0, 1);
        p[28] = 1;
        assert!(parse(false, &p).is_none(), "reserved");
    }
}
