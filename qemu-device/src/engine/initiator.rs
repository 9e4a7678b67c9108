//! The initiator side of PUT and GET (docs/fabric.md 14.13), and of a rendezvous pull
//! (a GET authorised by a SEND's id, 14.14): a bounded step sends the packets that are
//! due (`rma` decides which), reading a PUT's data through the context's translation at
//! send time and checking, before a GET request, that its local destination is
//! translated writable; a local fault parks the context as COPY's do. The answers arrive
//! between steps (`remote` hands them here): a `REPLY` retires, backs off or fails its
//! packet, a `GET_RESP` is written through a fresh translation; a `REPLY` to a SEND's
//! `EAGER` or `RTS` goes to the SEND (`msg`).

use std::time::{Duration, Instant};

use mnic_abi::fabric::{nak, ptype, GetRespHeader, RemoteAccess, ReplyHeader};
use mnic_abi::{completion, counter, fabric_counter, Endpoint};
use zerocopy::{FromBytes, IntoBytes};

use super::context::{Ctx, Item, Stage};
use super::error::AccessError;
use super::link::RmaTiming;
use super::rma::{reply_status, Rma};
use super::state::Core;
use super::step::Outcome;
use crate::fabric::{Message, SendError};
use crate::mem::{self, GuestMem};

/// How soon a step tries again when the transport's send queue was full.
pub(super) const SEND_RETRY: Duration = Duration::from_millis(1);

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
            let known = nak::is_answer(status);
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
    pub(super) fn take_req_id(&mut self) -> u32 {
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
        let out = self.rma_drive(m, c, root, r);
        item.done = r.confirmed;
        out
    }

    /// One step of PUT, GET or pull `r` of context `c`.
    pub(super) fn rma_drive(&mut self, m: &GuestMem, c: u16, root: u64, r: &mut Rma) -> Outcome {
        let now = Instant::now();
        let Some(timing) = self.link.as_ref().map(|l| l.timing) else {
            r.fail(completion::NO_ROUTE, 0, r.remote.va);
            return ended(r);
        };
        if let Some(va) = r.timed_out(now, &timing) {
            self.sh.rma.bump(fabric_counter::PEER_GONE);
            r.fail(completion::PEER_GONE, 0, va);
        }
        if r.end.is_some() {
            return ended(r);
        }
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
            // Both fit: an operation is at most `work::RMA_MAX` bytes (were one longer,
            // the target would refuse the packet as malformed).
            op_offset: u32::try_from(p.off).unwrap_or(u32::MAX).into(),
            op_len: u32::try_from(r.len).unwrap_or(0).into(),
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
                self.sh.rma.bump(fabric_counter::PACKETS_SENT);
                if resend {
                    self.sh.rma.bump(fabric_counter::RESENDS);
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
            self.sh.rma.bump(fabric_counter::REFUSED);
            return;
        };
        let i = usize::from(msg.dst_ctx);
        let Some(mut x) = self.ctxs.get_mut(i).and_then(Option::take) else {
            self.sh.rma.bump(fabric_counter::LATE);
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
            Used::Late => self.sh.rma.bump(fabric_counter::LATE),
            Used::Malformed => self.sh.rma.bump(fabric_counter::REFUSED),
        }
    }

    /// Applies answer `a` to what of context `x` it answers: the pull in progress, the
    /// current item's PUT or GET, or its SEND.
    fn answer_item(&mut self, m: &GuestMem, msg: &Message, a: &Answer, x: &mut Ctx) -> Used {
        let c = msg.dst_ctx;
        let root = x.root();
        let now = Instant::now();
        let timing = self.link.as_ref().map(|l| l.timing).unwrap_or_default();
        let from = Endpoint {
            node: msg.src_node,
            ctx: msg.src_ctx,
        };
        let ours = |r: &Rma| {
            r.req_id == a.req_id()
                && r.remote.node == from.node
                && r.remote.ctx == from.ctx
                && r.end.is_none()
                && r.find(a.va()).is_some()
        };
        if let Some(r) = x.msgs.pull_mut().filter(|r| ours(r)) {
            return self.answer_rma(m, c, root, r, a, now, &timing);
        }
        let Stage::Exec(item) = &mut x.stage else {
            return Used::Late;
        };
        if let (Some(s), Answer::Reply { status, detail, .. }) = (item.msg.as_deref_mut(), a) {
            // The answers to an EAGER or an RTS carry VA 0.
            let used = a.va() == 0
                && s.owns(from, a.req_id())
                && s.replied(*status, *detail, now, &timing);
            if used && *status == nak::RNR {
                self.sh.rma.bump(fabric_counter::RNR_RECEIVED);
            }
            return if used { Used::Yes } else { Used::Late };
        }
        let Some(r) = item.rma.as_deref_mut().filter(|r| ours(r)) else {
            return Used::Late;
        };
        let used = self.answer_rma(m, c, root, r, a, now, &timing);
        item.done = r.confirmed;
        used
    }

    /// Applies answer `a` to PUT, GET or pull `r` of context `c`, which has a packet in
    /// flight at the answer's VA.
    #[allow(clippy::too_many_arguments)]
    fn answer_rma(
        &mut self,
        m: &GuestMem,
        c: u16,
        root: u64,
        r: &mut Rma,
        a: &Answer,
        now: Instant,
        timing: &RmaTiming,
    ) -> Used {
        let Some(i) = r.find(a.va()) else {
            return Used::Late;
        };
        match *a {
            Answer::Reply { status, detail, .. } => match status {
                nak::OK if r.put => r.ok(i, now),
                // A GET_REQ is served with a GET_RESP, never `REPLY OK`.
                nak::OK => return Used::Malformed,
                nak::RNR => {
                    self.sh.rma.bump(fabric_counter::RNR_RECEIVED);
                    r.rnr(i, now, timing);
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
                        self.sh.rma.bump(fabric_counter::GET_RESP_DROPPED);
                        r.again(i, now);
                    }
                }
            }
        }
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

/// Why a step stopped sending (a PUT's, GET's or SEND's).
pub(super) enum Stop {
    /// A local access failed or faulted.
    Access(AccessError),
    /// The transport's send queue is full.
    Full,
    /// No fabric, or the node is not a peer.
    NoRoute,
}

/// The outcome of a failed item.
pub(super) fn ended(r: &Rma) -> Outcome {
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
