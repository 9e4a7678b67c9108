//! The transport's statistics (docs/fabric.md 14.10): the four device counters it feeds
//! (`FABRIC_*`, when it runs inside a device) and finer ones for tests and the log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mnic_abi::counter;

use super::wire::Refusal;
use crate::counters::Counters;

/// What the transport counts. Relaxed atomics: they are statistics, read while it runs.
#[derive(Default)]
pub struct Stats {
    device: Option<Arc<Counters>>,
    tx: AtomicU64,
    rx: AtomicU64,
    retransmits: AtomicU64,
    refused: [AtomicU64; Refusal::ALL.len()],
    delivered: AtomicU64,
    acked: AtomicU64,
    duplicates: AtomicU64,
    out_of_window: AtomicU64,
    stale: AtomicU64,
    peers_gone: AtomicU64,
    resets: AtomicU64,
    failed: AtomicU64,
    send_errors: AtomicU64,
    injected_drops: AtomicU64,
    injected_dups: AtomicU64,
    injected_reorders: AtomicU64,
}

/// A copy of [`Stats`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Datagrams sent.
    pub tx: u64,
    /// Datagrams received and accepted.
    pub rx: u64,
    /// Retransmissions.
    pub retransmits: u64,
    /// Datagrams refused, by [`Refusal::index`].
    pub refused: [u64; Refusal::ALL.len()],
    /// Messages handed to the layer above.
    pub delivered: u64,
    /// Messages acknowledged by their peer.
    pub acked: u64,
    /// Sequenced packets received again.
    pub duplicates: u64,
    /// Sequenced packets beyond the receive window.
    pub out_of_window: u64,
    /// Packets of an earlier connection.
    pub stale: u64,
    /// Peers declared gone.
    pub peers_gone: u64,
    /// Connections reset by a peer's newer epoch.
    pub resets: u64,
    /// Messages that completed with an error.
    pub failed: u64,
    /// Datagrams the socket would not take.
    pub send_errors: u64,
    /// Datagrams dropped by injection.
    pub injected_drops: u64,
    /// Datagrams duplicated by injection.
    pub injected_dups: u64,
    /// Datagrams held back by injection.
    pub injected_reorders: u64,
}

impl Snapshot {
    /// Datagrams refused, all reasons.
    pub fn bad_packets(&self) -> u64 {
        self.refused.iter().sum()
    }
    /// Datagrams refused for `r`.
    pub fn refused_for(&self, r: Refusal) -> u64 {
        self.refused[r.index()]
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Stats {
    /// Statistics that also feed `device`'s `FABRIC_*` counters.
    pub fn new(device: Option<Arc<Counters>>) -> Self {
        Stats {
            device,
            ..Stats::default()
        }
    }
    fn device(&self, i: u32) {
        if let Some(d) = &self.device {
            d.inc(i);
        }
    }
    /// A datagram went to the socket.
    pub fn tx(&self) {
        bump(&self.tx);
        self.device(counter::FABRIC_TX);
    }
    /// A datagram was accepted.
    pub fn rx(&self) {
        bump(&self.rx);
        self.device(counter::FABRIC_RX);
    }
    /// A packet was sent again.
    pub fn retransmit(&self) {
        bump(&self.retransmits);
        self.device(counter::FABRIC_RETRANSMITS);
    }
    /// A datagram was refused.
    pub fn refused(&self, r: Refusal) {
        bump(&self.refused[r.index()]);
        self.device(counter::FABRIC_BAD_PACKETS);
    }
    /// A message was delivered.
    pub fn delivered(&self) {
        bump(&self.delivered);
    }
    /// A message was acknowledged.
    pub fn acked(&self) {
        bump(&self.acked);
    }
    /// A duplicate arrived.
    pub fn duplicate(&self) {
        bump(&self.duplicates);
    }
    /// A packet beyond the window arrived.
    pub fn out_of_window(&self) {
        bump(&self.out_of_window);
    }
    /// A packet of an earlier connection arrived.
    pub fn stale(&self) {
        bump(&self.stale);
    }
    /// A peer was declared gone.
    pub fn peer_gone(&self) {
        bump(&self.peers_gone);
    }
    /// A connection was reset.
    pub fn reset(&self) {
        bump(&self.resets);
    }
    /// A message failed.
    pub fn failed(&self) {
        bump(&self.failed);
    }
    /// The socket refused a datagram.
    pub fn send_error(&self) {
        bump(&self.send_errors);
    }
    /// Injection dropped a datagram.
    pub fn injected_drop(&self) {
        bump(&self.injected_drops);
    }
    /// Injection duplicated a datagram.
    pub fn injected_dup(&self) {
        bump(&self.injected_dups);
    }
    /// Injection held a datagram back.
    pub fn injected_reorder(&self) {
        bump(&self.injected_reorders);
    }

    /// Grows whenever a message is delivered or a sent one completes: a taker that saw
    /// it unchanged has nothing new to take.
    pub fn news(&self) -> u64 {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        g(&self.delivered)
            .wrapping_add(g(&self.acked))
            .wrapping_add(g(&self.failed))
    }

    /// The values now.
    pub fn snapshot(&self) -> Snapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            tx: g(&self.tx),
            rx: g(&self.rx),
            retransmits: g(&self.retransmits),
            refused: std::array::from_fn(|i| g(&self.refused[i])),
            delivered: g(&self.delivered),
            acked: g(&self.acked),
            duplicates: g(&self.duplicates),
            out_of_window: g(&self.out_of_window),
            stale: g(&self.stale),
            peers_gone: g(&self.peers_gone),
            resets: g(&self.resets),
            failed: g(&self.failed),
            send_errors: g(&self.send_errors),
            injected_drops: g(&self.injected_drops),
            injected_dups: g(&self.injected_dups),
            injected_reorders: g(&self.injected_reorders),
        }
    }
}
