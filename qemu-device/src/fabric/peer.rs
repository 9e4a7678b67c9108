//! One peer's connection (docs/fabric.md 14.4): its address, state (IDLE, UP, GONE), the
//! two epochs, the sending and receiving sides, and the rules that classify a packet's
//! epochs and that reset or end the connection.

use std::net::SocketAddr;

use mnic_abi::fabric::epoch_newer;

use super::recv::RecvStream;
use super::send::SendStream;
use super::wire::Fields;

/// A peer's state (docs/fabric.md 14.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Nothing sent or received yet.
    Idle,
    /// Exchanging packets.
    Up,
    /// The retry budget ran out; the next send or packet opens a new connection.
    Gone,
}

/// How a valid packet's epochs relate to the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Epochs {
    /// From an earlier connection of the peer: drop.
    OldSource,
    /// Sent to an earlier connection of this node: drop, NAK if sequenced.
    OldDestination,
    /// The peer opened a new connection: reset, then take the packet.
    NewSource,
    /// This connection (or its first packet from the peer).
    Current,
}

/// One peer.
#[derive(Debug)]
pub struct Peer {
    /// Its address in the map.
    pub addr: SocketAddr,
    /// Its state.
    pub state: State,
    /// This node's epoch of the connection.
    pub my_epoch: u32,
    /// The peer's epoch, once a packet from it told.
    pub peer_epoch: Option<u32>,
    /// Sending side.
    pub send: SendStream,
    /// Receiving side.
    pub recv: RecvStream,
    /// An acknowledgement is owed (a sequenced packet arrived, or delivery moved).
    pub ack_due: bool,
}

/// The epoch after `e`; 0 means "not known" on the wire, so it is skipped.
fn next_epoch(e: u32) -> u32 {
    match e.wrapping_add(1) {
        0 => 1,
        n => n,
    }
}

impl Peer {
    /// A peer at `addr`, IDLE, with this node's epoch `epoch`.
    pub fn new(addr: SocketAddr, epoch: u32) -> Self {
        Peer {
            addr,
            state: State::Idle,
            my_epoch: epoch,
            peer_epoch: None,
            send: SendStream::default(),
            recv: RecvStream::default(),
            ack_due: false,
        }
    }

    /// `dst_epoch` of packets to this peer.
    pub fn dst_epoch(&self) -> u32 {
        self.peer_epoch.unwrap_or(0)
    }

    /// Classifies a valid packet from this peer by its epochs (changes nothing).
    pub fn epochs(&self, f: &Fields) -> Epochs {
        if self.peer_epoch.is_some_and(|k| epoch_newer(k, f.src_epoch)) {
            return Epochs::OldSource;
        }
        if f.dst_epoch != 0 && f.dst_epoch != self.my_epoch {
            return Epochs::OldDestination;
        }
        if self.peer_epoch.is_some_and(|k| epoch_newer(f.src_epoch, k)) {
            return Epochs::NewSource;
        }
        Epochs::Current
    }

    /// Whether the `ack` of a packet classified `e` acknowledges this connection's packets.
    pub fn ack_counts(&self, f: &Fields, e: Epochs) -> bool {
        e == Epochs::Current && f.dst_epoch == self.my_epoch
    }

    /// The peer opened connection `epoch`: both sides start over. Returns the ids of the
    /// messages that were queued or unacknowledged.
    pub fn reset(&mut self, epoch: u32) -> Vec<u64> {
        self.peer_epoch = Some(epoch);
        self.recv = RecvStream::default();
        self.ack_due = false;
        self.send.drain()
    }

    /// The retry budget ran out: ends the connection, prepares the next one (own epoch +
    /// 1, the peer's unknown). Returns the ids of the messages that were queued or
    /// unacknowledged.
    pub fn declare_gone(&mut self) -> Vec<u64> {
        self.state = State::Gone;
        self.my_epoch = next_epoch(self.my_epoch);
        self.peer_epoch = None;
        self.recv = RecvStream::default();
        self.ack_due = false;
        self.send.drain()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(src_epoch: u32, dst_epoch: u32) -> Fields {
        Fields {
            src_epoch,
            dst_epoch,
            ..Fields::default()
        }
    }

    #[test]
    fn epochs_classify_old_new_and_current() {
        let mut p = Peer::new(SocketAddr::from(([127, 0, 0, 1], 1)), 100);
        assert_eq!(p.epochs(&from(7, 0)), Epochs::Current);
        assert_eq!(p.epochs(&from(7, 99)), Epochs::OldDestination);
        p.peer_epoch = Some(7);
        assert_eq!(p.epochs(&from(6, 100)), Epochs::OldSource);
        assert_eq!(p.epochs(&from(8, 0)), Epochs::NewSource);
        assert_eq!(p.epochs(&from(7, 100)), Epochs::Current);
        assert!(p.ack_counts(&from(7, 100), Epochs::Current));
        assert!(!p.ack_counts(&from(7, 0), Epochs::Current));
    }

    #[test]
    fn gone_moves_to_a_new_connection() {
        let mut p = Peer::new(SocketAddr::from(([127, 0, 0, 1], 1)), u32::MAX);
        p.peer_epoch = Some(7);
        assert!(p.declare_gone().is_empty());
        assert_eq!((p.state, p.my_epoch, p.peer_epoch), (State::Gone, 1, None));
        // A packet aimed at the old connection is now an old destination.
        assert_eq!(p.epochs(&from(7, u32::MAX)), Epochs::OldDestination);
    }
}
