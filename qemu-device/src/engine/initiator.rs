//! The initiator side of PUT and GET (docs/fabric.md 14.13): a work item's bounded step
//! sends the packets that are due (`rma` decides which), reading a PUT's data through
//! the context's translation at send time and checking, before a GET request, that its
//! local destination is translated writable; a local fault parks the context as COPY's
//! do. The answers arrive between steps (`remote` hands them here): a `REPLY` retires,
//! backs off or fails its packet, a `GET_RESP` is written through a fresh translation.

use std::time::{Duration, Instant};

use mnic_abi::fabric::{nak, ptype, GetRespHeader, RemoteAccess, ReplyHeader};
use mnic_abi::{completion, counter};
use zerocopy::{FromBytes, IntoBytes};

use super::context::{Ctx, Item, Stage};
use super::error::AccessError;
use super::rma::{reply_status, Rma};
use super::state::Core;
use super::step::Outcome;
use crate::fabric::rma_stats::bump;
use crate::fabric::{Message, SendError};
use crate::mem::{self, GuestMem};

/// How soon a step tries again when the transport's send queue was full.
const SEND_RETRY: Duration = Duration::from_millis(1);

/// A well-formed answer to one of this node's packets.
enum Answer<'a> {
    /// A `REPLY`.
    Reply {
        req_id: u32,
        status: u16,
        va: u64,
        detail: u32,
    },
    /// A `GET_RESP` and its data.
    Data {
        req_id: u32,
        va: u64,
        data: &'a [u8],
    },
}

impl Answer<'_> {
    fn parse(msg: &Message) -> Option<Answer<'_>> {
        if msg.ptype == ptype::REPLY {
            let h = ReplyHeader::read_from_bytes(&msg.payload).ok()?;
            let status = h.status.get();
            let known = status == nak::OK || (nak::RNR..=nak::NO_CONTEXT).contains(&status);
            (known && h.reserved.get() == 0 && h.reserved2.get() == 0).then_some(Answer::Reply {
                req_id: h.req_id.get(),
                status,
                va: h.va.get(),
                detail: h.detail.get(),
            })
        } else {
            let (h, data) = GetRespHeader::read_from_prefix(&msg.payload).ok()?;
            (h.reserved.get() == 0).then_some(Answer::Data {
                req_id: h.req_id.get(),
                va: h.va.get(),
                data,
            })
        }
    }

    fn req_id(&self) -> u32 {
        match self {
            Answer::Reply { req_id, .. } | Answer::Data { req_id, .. } => *req_id,
        }
    }

    fn va(&self) -> u64 {
        match self {
            Answer::Reply { va, .. } | Answer::Data { va, .. } => *va,
        }
    }
}

impl Core {
    /// A fresh `req_id`: per device, never 0.
    fn take_req_id(&mut self) -> u32 {
        let id = self.next_req_id;
        self.next_req_id = self.next_req_id.checked_add(1).unwrap_or(1);
        id
    }

    /// One step of a PUT or GET of context `c`: send what is due, then finish, fail or
    /// wait for the earliest instant something is due (answers wake the thread).
    pub(super) fn rma_step(&mut self, m: &GuestMem, c: u16, root: u64, item: &mut Item) -> Outcome {
        let now = Instant::now();
        if item.rma.is_none() {
            let id = self.take_req_id();
            item.rma = Some(Box::new(Rma::new(&item.desc, id, now)));
        }
        let Some(r) = item.rma.as_deref_mut() else {
            return Outcome::More;
        };
        let Some(timing) = self.link.as_ref().map(|l| l.timing) else {
            r.fail(completion::NO_ROUTE, 0, r.remote.va);
            return ended(r);
        };
        if let Some(va) = r.timed_out(now, &timing) {
            bump(&self.sh.rma.peer_gone);
            r.fail(completion::PEER_GONE, 0, va);
        }
        if r.end.is_some() {
            return ended(r);
        }
        item.done = r.confirmed;
        r.cut();
        let mut from = 0;
        let mut blocked = false;
        while let Some(i) = r.due(from, now) {
            from = i + 1;
            match self.send_pkt(m, c, root, r, i) {
                Ok(()) => r.sent(i, now),
                Err(Stop::Access(e)) => return Outcome::Failed(e),
                Err(Stop::Full) => {
                    blocked = true;
                    break;
                }
                Err(Stop::NoRoute) => {
                    r.fail_pkt(i, completion::NO_ROUTE, 0);
                    return ended(r);
                }
            }
        }
        item.done = r.confirmed;
        if r.finished() {
            return Outcome::Finished { bytes: r.len };
        }
        let deadline = r.deadline(&timing);
        let retry = blocked.then(|| now + SEND_RETRY);
        match (deadline, retry) {
            (Some(a), Some(b)) => Outcome::Wait(a.min(b)),
            (Some(t), None) | (None, Some(t)) => Outcome::Wait(t),
            // Nothing due and nothing sent: cannot happen while unfinished; look again.
            (None, None) => Outcome::More,
        }
    }

    /// Sends packet `i` of `r` (again, if it was sent before).
    fn send_pkt(&mut self, m: &GuestMem, c: u16, root: u64, r: &Rma, i: usize) -> Result<(), Stop> {
        let p = r.pkt(i);
        let (local, remote) = (r.local_va(p.off), r.remote_va(p.off));
        let ra = RemoteAccess {
            rkey: r.remote.key.into(),
            len: p.len.into(),
            va: remote.into(),
            req_id: r.req_id.into(),
            reserved: 0.into(),
        };
        let mut payload = ra.as_bytes().to_vec();
        let t = if r.put {
            let at = payload.len();
            payload.resize(at + p.len as usize, 0);
            self.dma_read(m, c, root, local, &mut payload[at..])
                .map_err(Stop::Access)?;
            ptype::PUT
        } else {
            // Only a probe: the data is written, through a fresh translation, when it
            // comes back.
            self.xlate(m, c, root, local, true).map_err(Stop::Access)?;
            ptype::GET_REQ
        };
        let Some(l) = &self.link else {
            return Err(Stop::NoRoute);
        };
        let resend = p.sends > 0;
        match l.send(&self.sh.rma, r.remote.node, t, c, r.remote.ctx, &payload) {
            Ok(()) => {
                bump(&self.sh.rma.packets_sent);
                if resend {
                    bump(&self.sh.rma.resends);
                }
                Ok(())
            }
            Err(SendError::Full) => Err(Stop::Full),
            Err(_) => Err(Stop::NoRoute),
        }
    }

    /// An answer (`REPLY` or `GET_RESP`) delivered to this node.
    pub(super) fn take_answer(&mut self, m: &GuestMem, msg: &Message) {
        let Some(a) = Answer::parse(msg) else {
            bump(&self.sh.rma.refused);
            return;
        };
        let i = usize::from(msg.dst_ctx);
        let Some(mut x) = self.ctxs.get_mut(i).and_then(Option::take) else {
            bump(&self.sh.rma.late);
            return;
        };
        let used = if self.enabled && !self.halted {
            self.answer_item(m, msg, &a, &mut x)
        } else {
            Used::Late
        };
        self.ctxs[i] = Some(x);
        if !self.oracle_pieces.is_empty() {
            self.oracle_judge();
        }
        match used {
            Used::Yes => {}
            Used::Late => bump(&self.sh.rma.late),
            Used::Malformed => bump(&self.sh.rma.refused),
        }
    }

    /// Applies answer `a` to the current item of context `x`.
    fn answer_item(&mut self, m: &GuestMem, msg: &Message, a: &Answer, x: &mut Ctx) -> Used {
        let c = msg.dst_ctx;
        let root = x.root();
        let Stage::Exec(item) = &mut x.stage else {
            return Used::Late;
        };
        let Some(r) = item.rma.as_deref_mut() else {
            return Used::Late;
        };
        let ours = r.req_id == a.req_id()
            && r.remote.node == msg.src_node
            && r.remote.ctx == msg.src_ctx
            && r.end.is_none();
        let Some(i) = r.find(a.va()).filter(|_| ours) else {
            return Used::Late;
        };
        let now = Instant::now();
        let timing = self.link.as_ref().map(|l| l.timing).unwrap_or_default();
        match *a {
            Answer::Reply { status, detail, .. } => match status {
                nak::OK if r.put => r.ok(i, now),
                // A GET_REQ is served with a GET_RESP, never `REPLY OK`.
                nak::OK => return Used::Malformed,
                nak::RNR => {
                    bump(&self.sh.rma.rnr_received);
                    r.rnr(i, now, &timing);
                }
                s => {
                    let status = reply_status(s).unwrap_or(completion::REMOTE_NO_CONTEXT);
                    let detail = if s == nak::REMOTE_FAULT { detail } else { 0 };
                    r.fail_pkt(i, status, detail);
                }
            },
            Answer::Data { data, .. } => {
                let p = r.pkt(i);
                if r.put || data.len() != p.len as usize {
                    return Used::Malformed;
                }
                let va = r.local_va(p.off);
                let mark = self.oracle_pieces.len();
                let piece = self
                    .piece(m, c, root, va, u64::from(p.len), true)
                    .and_then(|pc| self.dma_gate(mark, false).map(|()| pc));
                match piece {
                    Ok(pc) if pc.len == u64::from(p.len) => {
                        if mem::write(m, pc.gpa, data).is_err() {
                            self.oracle_pieces.truncate(mark);
                            let e = super::error::DeviceError::Address { addr: va };
                            self.report(e, c, 0);
                            r.fail(completion::TABLE_ERROR, 0, va);
                        } else {
                            self.sh.counters.inc(counter::DMA_OPS);
                            self.sh.counters.add(counter::DMA_BYTES, u64::from(p.len));
                            r.ok(i, now);
                        }
                    }
                    Err(AccessError::Failed(e)) => {
                        self.report(e, c, 0);
                        r.fail(completion::TABLE_ERROR, 0, va);
                    }
                    // The translation is gone (or may not be used now): the data is
                    // dropped and asked for again by the next step, which probes the
                    // destination first (and parks the context on a fault).
                    _ => {
                        self.oracle_pieces.truncate(mark);
                        bump(&self.sh.rma.get_resp_dropped);
                        r.again(i, now);
                    }
                }
            }
        }
        item.done = r.confirmed;
        Used::Yes
    }
}

/// What became of an answer.
enum Used {
    /// It answered a packet of the item.
    Yes,
    /// It answers nothing in flight (late, forged, replayed): dropped.
    Late,
    /// It names a packet in flight but cannot be its answer: refused.
    Malformed,
}

/// Why a step stopped sending.
enum Stop {
    /// A local access failed or faulted.
    Access(AccessError),
    /// The transport's send queue is full.
    Full,
    /// No fabric, or the node is not a peer.
    NoRoute,
}

/// The outcome of a failed item.
fn ended(r: &Rma) -> Outcome {
    match r.end {
        Some(e) => Outcome::Ended {
            status: e.status,
            detail: e.detail,
            bytes: r.confirmed,
            fault_va: e.fault_va,
        },
        None => Outcome::More,
    }
}
