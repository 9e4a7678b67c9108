//! One peer's sending side (docs/fabric.md 14.5): messages waiting for the window,
//! packets in flight with their sequence numbers and retransmission deadlines, and the
//! cumulative acknowledgement that retires them.

use std::collections::VecDeque;
use std::time::Instant;

use mnic_abi::fabric::{seq_after, WINDOW};

use super::config::Timing;

/// A message the layer above gave the transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// The transport's id of the message, reported in its completion.
    pub id: u64,
    /// Packet type.
    pub ptype: u8,
    /// Sending context.
    pub src_ctx: u16,
    /// Target context.
    pub dst_ctx: u16,
    /// Payload.
    pub payload: Vec<u8>,
}

/// A packet sent and not yet acknowledged.
#[derive(Debug)]
pub struct InFlight {
    /// Its sequence number.
    pub seq: u32,
    /// What it carries.
    pub msg: Outgoing,
    /// How many times it was sent.
    pub sends: u32,
    /// Retransmissions since the peer was last heard from: the retry budget counts these,
    /// so a peer that answers (even without progress: a receiver whose layer above is
    /// slow) is never declared gone.
    pub silent: u32,
    /// When it is sent again if still unacknowledged.
    pub deadline: Instant,
}

/// What the retransmission timer found.
pub enum Due {
    /// Nothing to do.
    Nothing,
    /// These in-flight packets (indices) are due again; their counts and deadlines are
    /// already moved on.
    Resend(Vec<usize>),
    /// A packet spent its retry budget: the peer is gone.
    Exhausted,
}

/// An acknowledgement that names a sequence number never sent.
#[derive(Debug, PartialEq, Eq)]
pub struct ForgedAck;

/// The sending side of one connection.
#[derive(Debug)]
pub struct SendStream {
    next_seq: u32,
    acked: u32,
    waiting: VecDeque<Outgoing>,
    in_flight: VecDeque<InFlight>,
}

impl Default for SendStream {
    fn default() -> Self {
        SendStream {
            next_seq: 1,
            acked: 0,
            waiting: VecDeque::new(),
            in_flight: VecDeque::new(),
        }
    }
}

impl SendStream {
    /// Messages waiting or in flight.
    pub fn len(&self) -> usize {
        self.waiting.len() + self.in_flight.len()
    }
    /// Whether nothing is waiting or in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues `m` behind the others.
    pub fn push(&mut self, m: Outgoing) {
        self.waiting.push_back(m);
    }

    /// Moves waiting messages into the window, giving each its sequence number; returns
    /// the indices (in [`SendStream::in_flight`]) of the packets to send now.
    pub fn fill_window(&mut self, now: Instant, t: &Timing) -> std::ops::Range<usize> {
        let first = self.in_flight.len();
        while self.in_flight.len() < WINDOW as usize {
            let Some(msg) = self.waiting.pop_front() else {
                break;
            };
            let seq = self.next_seq;
            self.next_seq = seq.wrapping_add(1);
            self.in_flight.push_back(InFlight {
                seq,
                msg,
                sends: 1,
                silent: 0,
                deadline: now + t.backoff(1),
            });
        }
        first..self.in_flight.len()
    }

    /// The packets in flight, oldest first.
    pub fn in_flight(&self) -> &VecDeque<InFlight> {
        &self.in_flight
    }

    /// Checks `ack` without changing anything: `Err` if it acknowledges a sequence number
    /// not sent yet.
    pub fn check_ack(&self, ack: u32) -> Result<(), ForgedAck> {
        let last_sent = self.next_seq.wrapping_sub(1);
        if seq_after(ack, last_sent) {
            return Err(ForgedAck);
        }
        Ok(())
    }

    /// Applies a checked cumulative `ack`: retires the packets it covers and returns their
    /// messages' ids (none for an old ack).
    pub fn on_ack(&mut self, ack: u32) -> Vec<u64> {
        if !seq_after(ack, self.acked) || self.check_ack(ack).is_err() {
            return Vec::new();
        }
        self.acked = ack;
        let mut done = Vec::new();
        while let Some(p) = self.in_flight.front() {
            if seq_after(p.seq, ack) {
                break;
            }
            done.extend(self.in_flight.pop_front().map(|p| p.msg.id));
        }
        done
    }

    /// The retransmission timer at `now`.
    pub fn due(&mut self, now: Instant, t: &Timing) -> Due {
        let mut resend = Vec::new();
        for (i, p) in self.in_flight.iter_mut().enumerate() {
            if p.deadline > now {
                continue;
            }
            if p.silent >= t.retries {
                return Due::Exhausted;
            }
            p.sends += 1;
            p.silent += 1;
            p.deadline = now + t.backoff(p.sends);
            resend.push(i);
        }
        if resend.is_empty() {
            Due::Nothing
        } else {
            Due::Resend(resend)
        }
    }

    /// The peer was heard from (a valid packet of this connection): the retry budget
    /// starts over for every packet in flight; their back-off does not.
    pub fn heard(&mut self) {
        for p in self.in_flight.iter_mut() {
            p.silent = 0;
        }
    }

    /// Ends the stream (peer gone or reset): returns every message's id, waiting and in
    /// flight, and starts numbering from 1 again.
    pub fn drain(&mut self) -> Vec<u64> {
        let ids = self
            .in_flight
            .drain(..)
            .map(|p| p.msg.id)
            .chain(self.waiting.drain(..).map(|m| m.id))
            .collect();
        *self = SendStream::default();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn msg(id: u64) -> Outgoing {
        Outgoing {
            id,
            ptype: mnic_abi::fabric::ptype::EAGER,
            src_ctx: 0,
            dst_ctx: 0,
            payload: vec![],
        }
    }

    #[test]
    fn window_numbers_and_acks_retire_in_order() {
        let t = Timing::default();
        let now = Instant::now();
        let mut s = SendStream::default();
        for id in 0..100 {
            s.push(msg(id));
        }
        assert_eq!(s.fill_window(now, &t), 0..64);
        assert_eq!(s.in_flight()[0].seq, 1);
        assert_eq!(s.check_ack(65), Err(ForgedAck));
        assert_eq!(s.on_ack(10), (0..10).collect::<Vec<_>>());
        assert!(s.on_ack(5).is_empty(), "an old ack retires nothing");
        assert_eq!(s.fill_window(now, &t), 54..64);
        assert_eq!(s.in_flight().back().unwrap().seq, 74);
        assert_eq!(s.drain().len(), 90);
        assert!(s.is_empty() && s.check_ack(1).is_err());
    }

    #[test]
    fn retransmission_backs_off_and_exhausts_the_budget() {
        let t = Timing {
            rto: Duration::from_millis(1),
            rto_max: Duration::from_millis(4),
            retries: 3,
        };
        let mut now = Instant::now();
        let mut s = SendStream::default();
        s.push(msg(1));
        s.fill_window(now, &t);
        assert!(matches!(s.due(now, &t), Due::Nothing));
        let mut resends = 0;
        loop {
            now += Duration::from_millis(4);
            match s.due(now, &t) {
                Due::Resend(v) => {
                    assert_eq!(v, vec![0]);
                    resends += 1;
                }
                Due::Exhausted => break,
                Due::Nothing => {}
            }
        }
        assert_eq!(resends, 3);
    }

    #[test]
    fn a_peer_that_answers_never_exhausts_the_budget() {
        let t = Timing {
            rto: Duration::from_millis(1),
            rto_max: Duration::from_millis(4),
            retries: 3,
        };
        let mut now = Instant::now();
        let mut s = SendStream::default();
        s.push(msg(1));
        s.fill_window(now, &t);
        for _ in 0..20 {
            now += Duration::from_millis(4);
            assert!(matches!(s.due(now, &t), Due::Resend(_)));
            s.heard();
        }
        assert_eq!(s.in_flight()[0].sends, 21);
    }

    #[test]
    fn numbering_continues_across_the_wrap() {
        let t = Timing::default();
        let now = Instant::now();
        let mut s = SendStream {
            next_seq: u32::MAX,
            acked: u32::MAX - 1,
            ..SendStream::default()
        };
        for id in 0..3 {
            s.push(msg(id));
        }
        s.fill_window(now, &t);
        let seqs: Vec<_> = s.in_flight().iter().map(|p| p.seq).collect();
        assert_eq!(seqs, vec![u32::MAX, 0, 1]);
        assert_eq!(s.on_ack(0), vec![0, 1]);
        assert_eq!(s.check_ack(2), Err(ForgedAck));
    }
}
