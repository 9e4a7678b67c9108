//! The sender side of tagged messages (docs/fabric.md 14.14): a SEND's bounded step sends
//! its `EAGER` (the data read through the context's translation at send time, so a
//! local fault parks the context as COPY's do) or its `RTS`, again after an RNR back-off,
//! and ends when the target's `REPLY` (eager) or the receiver's `FIN` (rendezvous) says
//! so. The `REPLY` reaches the SEND through `initiator`, the `FIN` here; the pulls of a
//! rendezvous message are served by `target`.

use std::time::Instant;

use mnic_abi::fabric::{nak, ptype, EagerHeader, FinHeader, RtsHeader, FIN_LEN};
use mnic_abi::{completion, fabric_counter, Endpoint};
use zerocopy::{FromBytes, IntoBytes};

use super::context::{Item, Stage};
use super::initiator::{Stop, SEND_RETRY};
use super::msg::SendMsg;
use super::state::Core;
use super::step::Outcome;
use crate::fabric::{Message, SendError};
use crate::mem::GuestMem;

/// A well-formed `FIN`: `(req_id, status, detail)`.
fn parse_fin(payload: &[u8]) -> Option<(u32, u16, u32)> {
    if payload.len() != FIN_LEN {
        return None;
    }
    let h = FinHeader::read_from_bytes(payload).ok()?;
    let status = h.status.get();
    let known = nak::is_answer(status);
    let ok = known && h.reserved.get() == 0 && h.reserved2.get() == 0 && h.req_id.get() != 0;
    ok.then(|| (h.req_id.get(), status, h.detail.get()))
}

/// How a SEND that ended is completed.
fn outcome(s: &SendMsg) -> Option<Outcome> {
    if let Some(e) = s.end {
        return Some(Outcome::Ended {
            status: e.status,
            detail: e.detail,
            bytes: 0,
            fault_va: 0,
        });
    }
    (s.phase == super::msg::Phase::Done).then_some(Outcome::Finished { bytes: s.len })
}

impl Core {
    /// One step of a SEND of context `c`: send its packet when due, then finish, fail
    /// or wait (for a back-off, the reply timeout, or without a deadline for a `FIN`).
    pub(super) fn send_step(
        &mut self,
        m: &GuestMem,
        c: u16,
        root: u64,
        item: &mut Item,
    ) -> Outcome {
        let now = Instant::now();
        if item.msg.is_none() {
            let id = self.take_req_id();
            item.msg = Some(Box::new(SendMsg::new(&item.desc, id, now)));
        }
        let Some(s) = item.msg.as_deref_mut() else {
            return Outcome::More;
        };
        let Some(timing) = self.link.as_ref().map(|l| l.timing) else {
            s.fail(completion::NO_ROUTE, 0);
            return outcome(s).unwrap_or(Outcome::More);
        };
        if s.timed_out(now, &timing) {
            self.sh.rma.bump(fabric_counter::PEER_GONE);
            s.fail(completion::PEER_GONE, 0);
        }
        if let Some(o) = outcome(s) {
            return o;
        }
        if s.due(now) {
            match self.send_msg(m, c, root, s) {
                Ok(()) => s.sent(now),
                Err(Stop::Access(e)) => return Outcome::Failed(e),
                Err(Stop::Full) => return Outcome::Wait(now + SEND_RETRY),
                Err(Stop::NoRoute) => {
                    s.fail(completion::NO_ROUTE, 0);
                    return outcome(s).unwrap_or(Outcome::More);
                }
            }
        }
        match s.deadline(&timing) {
            Some(t) => Outcome::Wait(t),
            None => Outcome::Waiting,
        }
    }

    /// Sends SEND `s`'s `EAGER` (header and data) or `RTS`.
    fn send_msg(&mut self, m: &GuestMem, c: u16, root: u64, s: &SendMsg) -> Result<(), Stop> {
        let (t, payload) = if s.eager {
            let h = EagerHeader {
                match_bits: s.bits.into(),
                msg_len: (s.len as u32).into(),
                req_id: s.req_id.into(),
            };
            let mut p = h.as_bytes().to_vec();
            let at = p.len();
            p.resize(at + s.len as usize, 0);
            self.dma_read(m, c, root, s.src, &mut p[at..])
                .map_err(Stop::Access)?;
            (ptype::EAGER, p)
        } else {
            let h = RtsHeader {
                match_bits: s.bits.into(),
                msg_len: (s.len as u32).into(),
                rkey: 0.into(),
                va: s.src.into(),
                req_id: s.req_id.into(),
                reserved: 0.into(),
            };
            (ptype::RTS, h.as_bytes().to_vec())
        };
        let Some(l) = &self.link else {
            return Err(Stop::NoRoute);
        };
        match l.send(&self.sh.rma, s.dest.node, t, c, s.dest.ctx, &payload) {
            Ok(()) => {
                self.sh.rma.bump(fabric_counter::MSG_SENT);
                if s.sends > 0 {
                    self.sh.rma.bump(fabric_counter::RESENDS);
                }
                Ok(())
            }
            Err(SendError::Full) => Err(Stop::Full),
            Err(_) => Err(Stop::NoRoute),
        }
    }

    /// A `FIN` delivered to this node: it ends the rendezvous SEND it names, if that
    /// SEND waits for one.
    pub(super) fn take_fin(&mut self, msg: &Message) {
        let Some((req_id, status, detail)) = parse_fin(&msg.payload) else {
            self.sh.rma.bump(fabric_counter::REFUSED);
            return;
        };
        let from = Endpoint {
            node: msg.src_node,
            ctx: msg.src_ctx,
        };
        let send = self
            .ctxs
            .get_mut(usize::from(msg.dst_ctx))
            .and_then(Option::as_mut)
            .and_then(|x| match &mut x.stage {
                Stage::Exec(item) => item.msg.as_deref_mut(),
                _ => None,
            })
            .filter(|s| s.owns(from, req_id));
        if send.is_some_and(|s| s.finished(status, detail)) {
            self.sh.rma.bump(fabric_counter::FIN_RECEIVED);
        } else {
            self.sh.rma.bump(fabric_counter::FIN_DROPPED);
        }
    }

    /// Sends `FIN(req_id, status, detail)` from context `c` to the rendezvous sender
    /// `to`; `false` if the transport's queue is full (try again later).
    pub(super) fn send_fin(
        &mut self,
        c: u16,
        to: Endpoint,
        req_id: u32,
        status: u16,
        detail: u32,
    ) -> bool {
        let Some(l) = &self.link else {
            return true;
        };
        let h = FinHeader {
            req_id: req_id.into(),
            status: status.into(),
            detail: detail.into(),
            ..FinHeader::default()
        };
        match l.send(&self.sh.rma, to.node, ptype::FIN, c, to.ctx, h.as_bytes()) {
            Ok(()) => {
                self.sh.rma.bump(fabric_counter::FIN_SENT);
                true
            }
            Err(SendError::Full) => false,
            // Not a peer (or gone): nobody waits for it.
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_fins_are_refused() {
        let fin = |req_id: u32, status: u16, reserved: u16| {
            FinHeader {
                req_id: req_id.into(),
                status: status.into(),
                reserved: reserved.into(),
                detail: 5.into(),
                reserved2: 0.into(),
            }
            .as_bytes()
            .to_vec()
        };
        assert_eq!(parse_fin(&fin(3, nak::OK, 0)), Some((3, nak::OK, 5)));
        assert_eq!(
            parse_fin(&fin(3, nak::NO_CONTEXT, 0)),
            Some((3, nak::NO_CONTEXT, 5))
        );
        assert_eq!(parse_fin(&fin(0, nak::OK, 0)), None, "req_id 0");
        assert_eq!(parse_fin(&fin(3, nak::STALE_EPOCH, 0)), None, "status");
        assert_eq!(parse_fin(&fin(3, 8, 0)), None, "status");
        assert_eq!(parse_fin(&fin(3, nak::OK, 1)), None, "reserved");
        assert_eq!(parse_fin(&fin(3, nak::OK, 0)[..15]), None, "short");
        let mut long = fin(3, nak::OK, 0);
        long.push(0);
        assert_eq!(parse_fin(&long), None, "long");
    }
}
