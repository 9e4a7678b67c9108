//! A node's protocol logic, without a socket (docs/fabric.md 14.2-14.5): it takes
//! datagrams and the layer above's messages, and produces datagrams to send, messages to
//! deliver and completions of sent messages. The transport (`transport.rs`) feeds it from
//! its socket and clock; tests can feed it directly.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use mnic_abi::fabric::{flags, nak, ptype, SendStatus, DELIVER_QUEUE, MAX_PAYLOAD, SEND_QUEUE};
use mnic_abi::NUM_CONTEXTS;

use super::config::{FabricConfig, Timing};
use super::inject::Datagram;
use super::peer::{Epochs, Peer, State};
use super::recv::{Arrived, Verdict};
use super::send::{Due, Outgoing};
use super::stats::Stats;
use super::wire::{self, Fields, Refusal};

/// A message delivered by the transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Sender's node.
    pub src_node: u16,
    /// Packet type.
    pub ptype: u8,
    /// Sending context.
    pub src_ctx: u16,
    /// Target context.
    pub dst_ctx: u16,
    /// Payload.
    pub payload: Vec<u8>,
}

/// What became of a sent message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The id [`Node::send`] returned.
    pub id: u64,
    /// The node it was sent to.
    pub dst_node: u16,
    /// Its fate.
    pub status: SendStatus,
}

/// Why a send was refused (nothing was queued).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Not in the peer map (or this node).
    #[error("node not in the peer map")]
    UnknownPeer,
    /// Payload beyond `MAX_PAYLOAD`.
    #[error("payload longer than one packet")]
    TooLong,
    /// Context beyond `NUM_CONTEXTS`.
    #[error("no such context")]
    BadContext,
    /// `SEND_QUEUE` messages outstanding (queued, in flight, or completed and not taken).
    #[error("send queue full")]
    Full,
    /// Not a sequenced type (`ACK` and `NAK` are the transport's own).
    #[error("packet type not sent by this device")]
    BadType,
}

/// The protocol state of one node.
pub struct Node {
    me: u16,
    timing: Timing,
    peers: HashMap<u16, Peer>,
    outstanding: usize,
    next_id: u64,
    inbox: VecDeque<Message>,
    done: VecDeque<Completion>,
    stats: Arc<Stats>,
}

impl Node {
    /// Node `cfg.node` with `cfg`'s peers, every connection starting at `epoch` (not 0).
    pub fn new(cfg: &FabricConfig, epoch: u32, stats: Arc<Stats>) -> Self {
        let epoch = epoch.max(1);
        Node {
            me: cfg.node,
            timing: cfg.timing,
            peers: cfg
                .peers
                .iter()
                .map(|&(id, addr)| (id, Peer::new(addr, epoch)))
                .collect(),
            outstanding: 0,
            next_id: 1,
            inbox: VecDeque::new(),
            done: VecDeque::new(),
            stats,
        }
    }

    /// Queues a message of type `ptype` to `dst` and sends what the window allows.
    #[allow(clippy::too_many_arguments)]
    pub fn send(
        &mut self,
        now: Instant,
        dst: u16,
        ptype: u8,
        src_ctx: u16,
        dst_ctx: u16,
        payload: &[u8],
        out: &mut Vec<Datagram>,
    ) -> Result<u64, SendError> {
        // The layer above sends only the sequenced types (docs/fabric.md 14.3).
        if !ptype::is_sequenced(ptype) {
            return Err(SendError::BadType);
        }
        if payload.len() > MAX_PAYLOAD {
            return Err(SendError::TooLong);
        }
        if u32::from(src_ctx) >= NUM_CONTEXTS || u32::from(dst_ctx) >= NUM_CONTEXTS {
            return Err(SendError::BadContext);
        }
        if self.outstanding >= SEND_QUEUE {
            return Err(SendError::Full);
        }
        let peer = self.peers.get_mut(&dst).ok_or(SendError::UnknownPeer)?;
        let id = self.next_id;
        self.next_id += 1;
        self.outstanding += 1;
        peer.state = State::Up;
        peer.send.push(Outgoing {
            id,
            ptype,
            src_ctx,
            dst_ctx,
            payload: payload.to_vec(),
        });
        Self::send_window(self.me, dst, peer, now, &self.timing, out);
        Ok(id)
    }

    /// Sends the packets that just entered `peer`'s window.
    fn send_window(
        me: u16,
        id: u16,
        peer: &mut Peer,
        now: Instant,
        t: &Timing,
        out: &mut Vec<Datagram>,
    ) {
        let fresh = peer.send.fill_window(now, t);
        if fresh.is_empty() {
            return;
        }
        for i in fresh {
            out.push(Self::data(me, id, peer, i));
        }
        // The packets carry the acknowledgement.
        peer.ack_due = false;
    }

    /// The datagram of `peer`'s in-flight packet `i`, with the current acknowledgement.
    fn data(me: u16, id: u16, peer: &Peer, i: usize) -> Datagram {
        let p = &peer.send.in_flight()[i];
        let f = Fields {
            ptype: p.msg.ptype,
            flags: if p.sends > 1 { flags::RETRANSMIT } else { 0 },
            src_node: me,
            dst_node: id,
            src_ctx: p.msg.src_ctx,
            dst_ctx: p.msg.dst_ctx,
            src_epoch: peer.my_epoch,
            dst_epoch: peer.dst_epoch(),
            seq: p.seq,
            ack: peer.recv.ack(),
            status: 0,
        };
        Datagram {
            to: peer.addr,
            bytes: wire::encode(&f, &p.msg.payload),
        }
    }

    /// Takes one received datagram from `from`. A refused one is counted and changes
    /// nothing (docs/fabric.md 14.2).
    pub fn receive(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
        out: &mut Vec<Datagram>,
    ) -> Result<(), Refusal> {
        let r = self.take(now, from, bytes, out);
        if let Err(e) = r {
            self.stats.refused(e);
        }
        r
    }

    fn take(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
        out: &mut Vec<Datagram>,
    ) -> Result<(), Refusal> {
        let p = wire::parse(bytes)?;
        let f = p.f;
        if f.dst_node != self.me {
            return Err(Refusal::WrongNode);
        }
        let me = self.me;
        let peer = self
            .peers
            .get_mut(&f.src_node)
            .ok_or(Refusal::UnknownPeer)?;
        if peer.addr != from {
            return Err(Refusal::WrongAddress);
        }
        let epochs = peer.epochs(&f);
        let ack_counts = f.ptype != ptype::NAK && peer.ack_counts(&f, epochs);
        if ack_counts {
            peer.send.check_ack(f.ack).map_err(|_| Refusal::ForgedAck)?;
        }
        // Accepted: from here on the packet may change state.
        self.stats.rx();
        match epochs {
            Epochs::OldSource => {
                self.stats.stale();
                return Ok(());
            }
            Epochs::OldDestination => {
                self.stats.stale();
                if ptype::is_sequenced(f.ptype) {
                    out.push(Self::stale_nak(me, peer, &f));
                }
                return Ok(());
            }
            Epochs::NewSource => {
                self.stats.reset();
                let ids = peer.reset(f.src_epoch);
                Self::fail(
                    &mut self.done,
                    &self.stats,
                    f.src_node,
                    ids,
                    SendStatus::PeerReset,
                );
            }
            Epochs::Current => {
                peer.peer_epoch.get_or_insert(f.src_epoch);
            }
        }
        peer.state = State::Up;
        peer.send.heard();
        if ack_counts {
            for id in peer.send.on_ack(f.ack) {
                self.stats.acked();
                self.done.push_back(Completion {
                    id,
                    dst_node: f.src_node,
                    status: SendStatus::Ok,
                });
            }
        }
        if ptype::is_sequenced(f.ptype) {
            let a = Arrived {
                ptype: f.ptype,
                src_ctx: f.src_ctx,
                dst_ctx: f.dst_ctx,
                payload: p.payload.to_vec(),
            };
            match peer.recv.accept(f.seq, a) {
                Verdict::Kept => {}
                Verdict::Duplicate => self.stats.duplicate(),
                Verdict::OutOfWindow => self.stats.out_of_window(),
            }
            peer.ack_due = true;
        }
        // An acknowledgement may have opened the window.
        Self::send_window(me, f.src_node, peer, now, &self.timing, out);
        self.pump();
        Ok(())
    }

    /// `NAK STALE_EPOCH` for `f`, a sequenced packet sent to an earlier connection.
    fn stale_nak(me: u16, peer: &Peer, f: &Fields) -> Datagram {
        let n = Fields {
            ptype: ptype::NAK,
            src_node: me,
            dst_node: f.src_node,
            src_epoch: peer.my_epoch,
            dst_epoch: f.src_epoch,
            seq: f.seq,
            status: nak::STALE_EPOCH,
            ..Fields::default()
        };
        Datagram {
            to: peer.addr,
            bytes: wire::encode(&n, &[]),
        }
    }

    fn fail(
        done: &mut VecDeque<Completion>,
        stats: &Stats,
        dst_node: u16,
        ids: Vec<u64>,
        status: SendStatus,
    ) {
        for id in ids {
            stats.failed();
            done.push_back(Completion {
                id,
                dst_node,
                status,
            });
        }
    }

    /// Moves packets that are next in order into the delivery queue while it has room.
    fn pump(&mut self) {
        for (&id, peer) in self.peers.iter_mut() {
            while self.inbox.len() < DELIVER_QUEUE {
                let Some(a) = peer.recv.pop_ready() else {
                    break;
                };
                self.stats.delivered();
                peer.ack_due = true;
                self.inbox.push_back(Message {
                    src_node: id,
                    ptype: a.ptype,
                    src_ctx: a.src_ctx,
                    dst_ctx: a.dst_ctx,
                    payload: a.payload,
                });
            }
        }
    }

    /// One `ACK` to every peer that is owed one.
    pub fn flush_acks(&mut self, out: &mut Vec<Datagram>) {
        for (&id, peer) in self.peers.iter_mut().filter(|(_, p)| p.ack_due) {
            peer.ack_due = false;
            let f = Fields {
                ptype: ptype::ACK,
                src_node: self.me,
                dst_node: id,
                src_epoch: peer.my_epoch,
                dst_epoch: peer.dst_epoch(),
                ack: peer.recv.ack(),
                ..Fields::default()
            };
            out.push(Datagram {
                to: peer.addr,
                bytes: wire::encode(&f, &[]),
            });
        }
    }

    /// The retransmission timer at `now`: packets due again are resent, a peer whose
    /// packet spent its retry budget is declared gone.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Datagram>) {
        for (&id, peer) in self.peers.iter_mut() {
            match peer.send.due(now, &self.timing) {
                Due::Nothing => {}
                Due::Resend(idx) => {
                    for i in idx {
                        self.stats.retransmit();
                        out.push(Self::data(self.me, id, peer, i));
                    }
                    peer.ack_due = false;
                }
                Due::Exhausted => {
                    self.stats.peer_gone();
                    tracing::warn!(peer = id, "fabric peer gone: retry budget spent");
                    let ids = peer.declare_gone();
                    Self::fail(&mut self.done, &self.stats, id, ids, SendStatus::PeerGone);
                }
            }
        }
    }

    /// The next delivered message.
    pub fn take_message(&mut self) -> Option<Message> {
        let m = self.inbox.pop_front();
        if m.is_some() {
            self.pump();
        }
        m
    }

    /// The next completion of a sent message.
    pub fn take_completion(&mut self) -> Option<Completion> {
        let c = self.done.pop_front()?;
        self.outstanding = self.outstanding.saturating_sub(1);
        Some(c)
    }

    /// Whether a message or a completion is waiting to be taken.
    pub fn has_news(&self) -> bool {
        !self.inbox.is_empty() || !self.done.is_empty()
    }

    /// `peer`'s state, if it is in the map.
    pub fn peer_state(&self, peer: u16) -> Option<State> {
        self.peers.get(&peer).map(|p| p.state)
    }
}
