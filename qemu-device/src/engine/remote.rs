//! The data thread's side of the fabric (docs/fabric.md 14.13): attaching a transport,
//! and, once per poll round between commands and the contexts' steps, taking what the
//! transport delivered (a bounded batch) and the completions of what this node sent.
//! `PUT` and `GET_REQ` are served (`target`), answers go to their work item
//! (`initiator`), `EAGER` and `RTS` to the receiving context (`receiver`), `FIN` to its
//! SEND (`sender`); a peer reported gone or reset fails the items and pulls waiting on
//! it with `PEER_GONE`.

use mnic_abi::fabric::{ptype, SendStatus};
use mnic_abi::{completion, fabric_counter};

use super::context::Stage;
use super::link::{Link, RmaTiming};
use super::rma::Rma;
use super::state::Core;
use crate::fabric::{Completion, Message, Transport};
use crate::mem::GuestMem;

/// Deliveries served per poll round: bounds how long a SYNC waits behind the network
/// (each is at most one page of DMA), like `CMD_BUDGET` for commands.
const FABRIC_BUDGET: usize = 64;

impl Core {
    /// Makes the device node `t.node()` of `t`'s fabric, with the specification's
    /// PUT/GET timing: `FABRIC_NODE` and `CAPS.FABRIC` say so, and the transport wakes
    /// the data thread when something arrives.
    pub fn attach_fabric(&mut self, t: Transport) {
        self.attach_fabric_with(t, RmaTiming::default());
    }

    /// [`Core::attach_fabric`] with PUT/GET timing `timing` (tests shorten it).
    pub fn attach_fabric_with(&mut self, t: Transport, timing: RmaTiming) {
        let sh = self.sh.clone();
        t.set_waker(Box::new(move || sh.kick()));
        self.sh.set_fabric_node(t.node());
        tracing::info!(node = t.node(), "device attached to the fabric");
        self.link = Some(Link { t, timing });
    }

    /// The transport, when the device is a node.
    pub fn fabric(&self) -> Option<&Transport> {
        self.link.as_ref().map(|l| &l.t)
    }

    /// Takes and serves what the transport has for this node; returns whether anything
    /// came.
    pub(super) fn serve_fabric(&mut self, m: &GuestMem) -> bool {
        let Some(l) = &self.link else {
            return false;
        };
        let mut msgs: Vec<Message> = Vec::new();
        let mut done: Vec<Completion> = Vec::new();
        l.t.take(FABRIC_BUDGET, &mut msgs, &mut done);
        let mut busy = !msgs.is_empty();
        for c in &done {
            if c.status != SendStatus::Ok {
                busy = true;
                self.peer_lost(c.dst_node);
            }
        }
        for msg in &msgs {
            match msg.ptype {
                ptype::PUT | ptype::GET_REQ => self.serve_access(m, msg),
                ptype::REPLY | ptype::GET_RESP => self.take_answer(m, msg),
                ptype::EAGER | ptype::RTS => self.serve_message(m, msg),
                ptype::FIN => self.take_fin(msg),
                _ => self.sh.rma.bump(fabric_counter::REFUSED),
            }
        }
        busy
    }

    /// The transport gave up on `node` (gone, or reset: its answers will not come): every
    /// item with packets unanswered there, every SEND waiting on it and every pull from
    /// it fails with `PEER_GONE`.
    fn peer_lost(&mut self, node: u16) {
        let mut failed = 0;
        let lost = |r: &mut Rma| {
            let va = r
                .first_waiting()
                .filter(|_| r.remote.node == node && r.end.is_none());
            if let Some(va) = va {
                r.fail(completion::PEER_GONE, 0, va);
            }
            va.is_some()
        };
        for i in self.live.round_robin(0) {
            let Some(x) = self.ctxs[i].as_mut() else {
                continue;
            };
            if x.msgs.pull_mut().is_some_and(lost) {
                failed += 1;
            }
            let Stage::Exec(item) = &mut x.stage else {
                continue;
            };
            if item.rma.as_deref_mut().is_some_and(lost) {
                failed += 1;
            }
            if item
                .msg
                .as_deref_mut()
                .is_some_and(|s| s.dest.node == node && s.lost())
            {
                failed += 1;
            }
        }
        if failed > 0 {
            tracing::debug!(node, failed, "peer lost");
            self.sh.rma.add(fabric_counter::PEER_GONE, failed);
        }
    }
}
