//! Tagged messages (docs/fabric.md 14.14) as state without memory or sockets: a
//! context's posted receives, its unexpected messages and the deliveries in progress
//! (with their bounds and the matching order), and one SEND at its sender (eager or
//! rendezvous, the RNR back-off, the silence timeout, the answers it takes). `sender`
//! and `receiver` drive them with the data thread's memory accesses and the transport.

use std::collections::VecDeque;
use std::time::Instant;

use mnic_abi::fabric::{nak, EAGER_MAX, UNEXPECTED_BYTES, UNEXPECTED_MAX};
use mnic_abi::{completion, tags_match, work, Endpoint, WorkDesc};

use super::link::RmaTiming;
use super::rma::{reply_status, End, Rma};

/// What an arrived message carries.
#[derive(Debug)]
pub enum Body {
    /// An eager message's data.
    Eager(Vec<u8>),
    /// A rendezvous announcement: where the sender's buffer is, and the SEND's id.
    Rts {
        /// VA of the sender's buffer.
        va: u64,
        /// The message's length.
        len: u64,
        /// The SEND's `req_id`.
        req_id: u32,
    },
}

/// A message that arrived for a context.
#[derive(Debug)]
pub struct Message {
    /// Who sent it.
    pub from: Endpoint,
    /// Its match bits.
    pub bits: u64,
    /// Its data or its announcement.
    pub body: Body,
}

impl Message {
    /// The message's length.
    pub fn len(&self) -> u64 {
        match &self.body {
            Body::Eager(d) => d.len() as u64,
            Body::Rts { len, .. } => *len,
        }
    }

    /// Bytes of eager data it keeps.
    fn kept_bytes(&self) -> usize {
        match &self.body {
            Body::Eager(d) => d.len(),
            Body::Rts { .. } => 0,
        }
    }

    /// The rendezvous SEND it announces: (sender, `req_id`).
    fn rendezvous(&self) -> Option<(Endpoint, u32)> {
        match self.body {
            Body::Rts { req_id, .. } => Some((self.from, req_id)),
            Body::Eager(_) => None,
        }
    }
}

/// Where a delivery is.
#[derive(Debug)]
pub enum Deliver {
    /// An unexpected eager message's data, to be written into the receive's buffer.
    Copy(Vec<u8>),
    /// A rendezvous message being pulled.
    Pull(Box<Rma>),
    /// A `FIN` with this status and detail is to be sent to the sender, then the
    /// completion written.
    Fin {
        /// `nak::OK` or why not.
        status: u16,
        /// The errno of `REMOTE_FAULT`.
        detail: u32,
        /// The completion that follows.
        then: Outcome,
    },
    /// The completion is to be written.
    Complete(Outcome),
}

/// How a receive ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// `completion::*` status.
    pub status: u16,
    /// The completion's `detail`.
    pub detail: u32,
    /// Bytes delivered.
    pub bytes: u64,
    /// The completion's `fault_va`.
    pub fault_va: u64,
}

/// A receive matched with its message, being delivered.
#[derive(Debug)]
pub struct Delivery {
    /// The RECV.
    pub recv: WorkDesc,
    /// The sender.
    pub from: Endpoint,
    /// The message's match bits.
    pub bits: u64,
    /// The message's length.
    pub msg_len: u64,
    /// A rendezvous message: the SEND's `req_id`.
    pub req_id: Option<u32>,
    /// Where it is.
    pub step: Deliver,
}

impl Delivery {
    /// Bytes that fit: the message, cut at the receive's buffer.
    pub fn fits(&self) -> u64 {
        self.msg_len.min(u64::from(self.recv.len))
    }

    /// The completion of a delivery that moved everything that fits.
    pub fn delivered(&self) -> Outcome {
        Outcome {
            status: if self.msg_len > u64::from(self.recv.len) {
                completion::RECV_TRUNCATED
            } else {
                completion::OK
            },
            detail: self.from.packed(),
            bytes: self.fits(),
            fault_va: self.bits,
        }
    }

    /// The sender of the rendezvous message being delivered and its `req_id`, while the
    /// sender still waits for a `FIN` from this delivery.
    fn owes_fin(&self) -> Option<(Endpoint, u32)> {
        match &self.step {
            Deliver::Pull(_) | Deliver::Fin { .. } => self.req_id.map(|id| (self.from, id)),
            Deliver::Copy(_) | Deliver::Complete(_) => None,
        }
    }

    /// A delivery that stopped on a local fault was aborted with `errno`: it completes
    /// `FAULT_ABORTED`, after telling a rendezvous sender (`FIN REMOTE_FAULT`).
    pub fn abort(&mut self, errno: u32, fault_va: u64) {
        let bytes = match &self.step {
            Deliver::Pull(r) => r.confirmed,
            _ => 0,
        };
        let then = Outcome {
            status: completion::FAULT_ABORTED,
            detail: errno,
            bytes,
            fault_va,
        };
        self.step = match &self.step {
            Deliver::Pull(_) => Deliver::Fin {
                status: nak::REMOTE_FAULT,
                detail: errno,
                then,
            },
            _ => Deliver::Complete(then),
        };
    }
}

/// A context's receive side: posted receives, unexpected messages, deliveries.
#[derive(Debug, Default)]
pub struct MsgQueues {
    /// RECVs waiting for a message, in the order they were posted.
    posted: VecDeque<WorkDesc>,
    /// Messages no posted receive took, in arrival order.
    unexpected: VecDeque<Message>,
    /// Eager bytes in `unexpected`.
    unexpected_bytes: usize,
    /// Receives matched and being delivered, oldest first.
    pub active: VecDeque<Delivery>,
}

impl MsgQueues {
    /// Whether one more RECV may be taken (`POSTED_MAX` posted or being delivered).
    pub fn can_post(&self) -> bool {
        self.posted.len() + self.active.len() < work::POSTED_MAX
    }

    /// Takes RECV `recv`: delivers the oldest unexpected message it matches (which is
    /// returned, to start its delivery), or posts it.
    pub fn post(&mut self, recv: WorkDesc) -> Option<Message> {
        let (bits, mask) = (recv.match_bits(), recv.match_mask());
        let Some(i) = self
            .unexpected
            .iter()
            .position(|m| tags_match(m.bits, bits, mask))
        else {
            self.posted.push_back(recv);
            return None;
        };
        let m = self.unexpected.remove(i)?;
        self.unexpected_bytes -= m.kept_bytes();
        Some(m)
    }

    /// The oldest posted receive that message bits `bits` match.
    pub fn find_posted(&self, bits: u64) -> Option<usize> {
        self.posted
            .iter()
            .position(|r| tags_match(bits, r.match_bits(), r.match_mask()))
    }

    /// Posted receive `i`.
    pub fn posted(&self, i: usize) -> Option<&WorkDesc> {
        self.posted.get(i)
    }

    /// Takes posted receive `i` (it matched).
    pub fn take_posted(&mut self, i: usize) -> Option<WorkDesc> {
        self.posted.remove(i)
    }

    /// Keeps message `m` for a later RECV; `false` (and `m` dropped) if the unexpected
    /// queue is full (`UNEXPECTED_MAX` messages, `UNEXPECTED_BYTES` of eager data).
    pub fn keep(&mut self, m: Message) -> bool {
        let bytes = m.kept_bytes();
        if self.unexpected.len() >= UNEXPECTED_MAX
            || self.unexpected_bytes + bytes > UNEXPECTED_BYTES
        {
            return false;
        }
        self.unexpected_bytes += bytes;
        self.unexpected.push_back(m);
        true
    }

    /// Starts delivering `m` into `recv`.
    pub fn deliver(&mut self, recv: WorkDesc, m: Message, now: Instant) {
        let msg_len = m.len();
        let fits = msg_len.min(u64::from(recv.len));
        let (step, req_id) = match m.body {
            Body::Eager(mut data) => {
                data.truncate(fits as usize);
                (Deliver::Copy(data), None)
            }
            Body::Rts { va, req_id, .. } => {
                let r = Rma::pull(m.from, va, recv.dst, fits, req_id, now);
                (Deliver::Pull(Box::new(r)), Some(req_id))
            }
        };
        self.active.push_back(Delivery {
            recv,
            from: m.from,
            bits: m.bits,
            msg_len,
            step,
            req_id,
        });
    }

    /// Records a delivery already done (an eager message written on arrival): only its
    /// completion is left.
    pub fn delivered(&mut self, recv: WorkDesc, from: Endpoint, bits: u64, msg_len: u64) {
        let mut d = Delivery {
            recv,
            from,
            bits,
            msg_len,
            step: Deliver::Copy(Vec::new()),
            req_id: None,
        };
        d.step = Deliver::Complete(d.delivered());
        self.active.push_back(d);
    }

    /// The pull in progress (only the oldest delivery runs).
    pub fn pull_mut(&mut self) -> Option<&mut Rma> {
        match self.active.front_mut().map(|d| &mut d.step) {
            Some(Deliver::Pull(r)) => Some(r),
            _ => None,
        }
    }

    /// Every rendezvous sender that waits for a `FIN` from this context (unexpected
    /// announcements, pulls in progress): what a context that stops must tell.
    pub fn owed_fins(&self) -> Vec<(Endpoint, u32)> {
        self.unexpected
            .iter()
            .filter_map(Message::rendezvous)
            .chain(self.active.iter().filter_map(Delivery::owes_fin))
            .collect()
    }

    /// Unexpected messages kept (tests).
    #[cfg(test)]
    pub fn unexpected_len(&self) -> usize {
        self.unexpected.len()
    }
}

/// Where a SEND is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Its `EAGER` or `RTS` is to be sent.
    Unsent,
    /// Answered `RNR`: sent again at the instant.
    Backoff(Instant),
    /// Sent, waiting for the target's `REPLY`.
    WaitReply,
    /// A rendezvous message taken by the target: waiting for its `FIN` (and serving its
    /// pulls).
    WaitFin,
    /// Delivered.
    Done,
}

/// One SEND at its sender.
#[derive(Debug)]
pub struct SendMsg {
    /// Where to.
    pub dest: Endpoint,
    /// Match bits.
    pub bits: u64,
    /// The buffer's VA.
    pub src: u64,
    /// Bytes.
    pub len: u64,
    /// The id its packets carry (per device, never 0).
    pub req_id: u32,
    /// Eager (one packet), else rendezvous.
    pub eager: bool,
    /// Where it is.
    pub phase: Phase,
    /// `RNR`s in a row.
    rnr: u32,
    /// Times sent.
    pub sends: u32,
    /// The last send.
    last_sent: Instant,
    /// Set once the item failed.
    pub end: Option<End>,
}

/// The completion status of a `FIN` status other than `OK`.
pub fn fin_status(s: u16) -> u16 {
    match s {
        nak::RNR => completion::RNR_RETRY_EXCEEDED,
        s => reply_status(s).unwrap_or(completion::REMOTE_NO_CONTEXT),
    }
}

/// The `FIN` status that tells a sender its message failed at the receiver with
/// completion status `s`.
pub fn fin_reason(s: u16) -> u16 {
    match s {
        completion::REMOTE_BAD_KEY => nak::BAD_KEY,
        completion::REMOTE_BAD_RANGE => nak::BAD_RANGE,
        completion::REMOTE_BAD_ACCESS => nak::BAD_ACCESS,
        completion::REMOTE_NO_CONTEXT => nak::NO_CONTEXT,
        completion::RNR_RETRY_EXCEEDED => nak::RNR,
        _ => nak::REMOTE_FAULT,
    }
}

impl SendMsg {
    /// The state of validated SEND `d`, its packets carrying `req_id`.
    pub fn new(d: &WorkDesc, req_id: u32, now: Instant) -> Self {
        SendMsg {
            dest: d.dest(),
            bits: d.match_bits(),
            src: d.src,
            len: u64::from(d.len),
            req_id,
            eager: d.len as usize <= EAGER_MAX,
            phase: Phase::Unsent,
            rnr: 0,
            sends: 0,
            last_sent: now,
            end: None,
        }
    }

    /// Whether its packet is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.end.is_none()
            && match self.phase {
                Phase::Unsent => true,
                Phase::Backoff(t) => t <= now,
                _ => false,
            }
    }

    /// Its packet was sent at `now`.
    pub fn sent(&mut self, now: Instant) {
        self.phase = Phase::WaitReply;
        self.sends += 1;
        self.last_sent = now;
    }

    /// Whether an answer from `from` with `req_id` is about this SEND.
    pub fn owns(&self, from: Endpoint, req_id: u32) -> bool {
        self.end.is_none() && self.req_id == req_id && self.dest == from
    }

    /// The target's `REPLY` with `status` (and `detail`) at `now`; `false` if no
    /// answer was awaited (late).
    pub fn replied(&mut self, status: u16, detail: u32, now: Instant, t: &RmaTiming) -> bool {
        if self.phase != Phase::WaitReply {
            return false;
        }
        match status {
            nak::OK if self.eager => self.phase = Phase::Done,
            nak::OK => self.phase = Phase::WaitFin,
            nak::RNR => {
                self.rnr += 1;
                if self.rnr >= t.rnr_retries {
                    self.fail(completion::RNR_RETRY_EXCEEDED, 0);
                } else {
                    self.phase = Phase::Backoff(now + t.rnr_wait(self.rnr));
                }
            }
            s => {
                let status = reply_status(s).unwrap_or(completion::REMOTE_NO_CONTEXT);
                let detail = if s == nak::REMOTE_FAULT { detail } else { 0 };
                self.fail(status, detail);
            }
        }
        true
    }

    /// The receiver's `FIN`; `false` if none was awaited.
    pub fn finished(&mut self, status: u16, detail: u32) -> bool {
        if self.phase != Phase::WaitFin || self.end.is_some() {
            return false;
        }
        if status == nak::OK {
            self.phase = Phase::Done;
        } else {
            let detail = if status == nak::REMOTE_FAULT {
                detail
            } else {
                0
            };
            self.fail(fin_status(status), detail);
        }
        true
    }

    /// Whether the receiver may pull `[va, va + len)` with `req_id` from `from`: this
    /// is a rendezvous SEND to `from` whose `RTS` went out, not finished, and the range
    /// lies inside its buffer.
    pub fn serves_pull(&self, from: Endpoint, req_id: u32, va: u64, len: u64) -> bool {
        let inside = va >= self.src
            && va
                .checked_add(len)
                .is_some_and(|end| end <= self.src + self.len);
        !self.eager
            && self.sends > 0
            && matches!(self.phase, Phase::WaitReply | Phase::WaitFin)
            && self.owns(from, req_id)
            && inside
    }

    /// The SEND fails with `status`.
    pub fn fail(&mut self, status: u16, detail: u32) {
        if self.end.is_none() {
            self.end = Some(End {
                status,
                detail,
                fault_va: 0,
            });
        }
    }

    /// The peer is gone or reset: a SEND that waits on it fails with `PEER_GONE`.
    /// Returns whether it did.
    pub fn lost(&mut self) -> bool {
        let waiting = self.sends > 0 && self.end.is_none() && self.phase != Phase::Done;
        if waiting {
            self.fail(completion::PEER_GONE, 0);
        }
        waiting
    }

    /// Whether its packet went unanswered for the reply timeout.
    pub fn timed_out(&self, now: Instant, t: &RmaTiming) -> bool {
        self.phase == Phase::WaitReply
            && now.saturating_duration_since(self.last_sent) >= t.reply_timeout
    }

    /// When it has something to do without an answer: the back-off's end, or the reply
    /// timeout. `None` while it waits for a `FIN` (no timeout: a receiver may post its
    /// receive at any time).
    pub fn deadline(&self, t: &RmaTiming) -> Option<Instant> {
        match self.phase {
            Phase::Backoff(at) => Some(at),
            Phase::WaitReply => Some(self.last_sent + t.reply_timeout),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(tag: u64, bits: u64, mask: u64, len: u32) -> WorkDesc {
        WorkDesc::recv(0, tag, 0x1000, len, bits, mask)
    }

    fn eager(bits: u64, len: usize) -> Message {
        Message {
            from: Endpoint { node: 1, ctx: 2 },
            bits,
            body: Body::Eager(vec![7; len]),
        }
    }

    #[test]
    fn posted_receives_match_in_order_under_their_mask() {
        let mut q = MsgQueues::default();
        assert!(q.post(recv(1, 0x10, 0xf0, 8)).is_none());
        assert!(q.post(recv(2, 0x10, 0xf0, 8)).is_none());
        assert!(q.post(recv(3, 0x25, u64::MAX, 8)).is_none());
        assert_eq!(q.find_posted(0x26), None);
        assert_eq!(q.find_posted(0x25), Some(2));
        let i = q.find_posted(0x1f).unwrap();
        assert_eq!(q.take_posted(i).unwrap().tag, 1, "first posted first");
        let i = q.find_posted(0x11).unwrap();
        assert_eq!(q.take_posted(i).unwrap().tag, 2);
    }

    #[test]
    fn a_receive_takes_the_oldest_matching_unexpected_message() {
        let mut q = MsgQueues::default();
        assert!(q.keep(eager(0x1, 4)));
        assert!(q.keep(eager(0x2, 5)));
        assert!(q.keep(eager(0x2, 6)));
        let m = q.post(recv(1, 0x2, u64::MAX, 8)).unwrap();
        assert_eq!(m.len(), 5);
        let m = q.post(recv(2, 0, 0, 8)).unwrap();
        assert_eq!((m.bits, m.len()), (0x1, 4), "a zero mask takes anything");
        assert_eq!(q.unexpected_len(), 1);
        assert!(q.post(recv(3, 0x9, u64::MAX, 8)).is_none(), "posted");
        assert_eq!(q.find_posted(0x9), Some(0));
    }

    #[test]
    fn the_unexpected_queue_is_bounded_by_count_and_bytes() {
        let mut q = MsgQueues::default();
        let per = UNEXPECTED_BYTES / 50;
        for _ in 0..50 {
            assert!(q.keep(eager(0, per)));
        }
        assert!(!q.keep(eager(0, UNEXPECTED_BYTES - 50 * per + 1)), "bytes");
        assert!(q.keep(eager(0, 0)));
        let rts = |req_id| Message {
            from: Endpoint { node: 1, ctx: 2 },
            bits: 0,
            body: Body::Rts {
                va: 0,
                len: 1 << 20,
                req_id,
            },
        };
        for i in 0..(UNEXPECTED_MAX - 51) as u32 {
            assert!(q.keep(rts(i + 1)), "an RTS keeps no bytes");
        }
        assert!(!q.keep(rts(99)), "count");
        assert_eq!(q.owed_fins().len(), UNEXPECTED_MAX - 51);
        // Taking one makes room again.
        assert!(q.post(recv(1, 0, 0, 0)).is_some());
        assert!(q.keep(eager(0, 1)));
    }

    #[test]
    fn posted_and_delivering_receives_are_bounded() {
        let mut q = MsgQueues::default();
        for i in 0..work::POSTED_MAX as u64 - 1 {
            assert!(q.can_post());
            q.post(recv(i, i, u64::MAX, 8));
        }
        q.delivered(recv(99, 0, 0, 8), Endpoint::default(), 0, 8);
        assert!(!q.can_post());
        q.active.pop_front();
        assert!(q.can_post());
    }

    #[test]
    fn a_delivery_reports_truncation_bits_and_sender() {
        let mut q = MsgQueues::default();
        let from = Endpoint { node: 4, ctx: 5 };
        q.delivered(recv(1, 0, 0, 10), from, 0xab, 25);
        let Deliver::Complete(o) = q.active[0].step else {
            panic!("complete");
        };
        assert_eq!(
            o,
            Outcome {
                status: completion::RECV_TRUNCATED,
                detail: from.packed(),
                bytes: 10,
                fault_va: 0xab
            }
        );
    }

    fn send(len: u32) -> SendMsg {
        let d = WorkDesc::send(0, 1, 0x4000, len, Endpoint { node: 2, ctx: 3 }, 9);
        SendMsg::new(&d, 7, Instant::now())
    }

    #[test]
    fn an_eager_send_ends_on_its_reply_and_backs_off_on_rnr() {
        let t = RmaTiming {
            rnr_retries: 2,
            ..RmaTiming::default()
        };
        let now = Instant::now();
        let mut s = send(EAGER_MAX as u32);
        assert!(s.eager && s.due(now));
        assert!(!s.replied(nak::OK, 0, now, &t), "nothing sent yet");
        s.sent(now);
        assert_eq!(s.deadline(&t), Some(now + t.reply_timeout));
        assert!(s.replied(nak::RNR, 0, now, &t));
        assert!(!s.due(now) && s.due(now + t.rnr_backoff));
        s.sent(now);
        assert!(s.replied(nak::OK, 0, now, &t));
        assert_eq!(s.phase, Phase::Done);
        let mut s = send(8);
        s.sent(now);
        s.replied(nak::RNR, 0, now, &t);
        s.sent(now);
        s.replied(nak::RNR, 0, now, &t);
        assert_eq!(s.end.unwrap().status, completion::RNR_RETRY_EXCEEDED);
    }

    #[test]
    fn a_rendezvous_send_serves_its_pulls_until_its_fin() {
        let t = RmaTiming::default();
        let now = Instant::now();
        let mut s = send(EAGER_MAX as u32 + 1);
        let peer = Endpoint { node: 2, ctx: 3 };
        assert!(!s.eager);
        assert!(!s.serves_pull(peer, 7, 0x4000, 8), "RTS not sent");
        s.sent(now);
        assert!(!s.finished(nak::OK, 0), "FIN before the REPLY");
        assert!(s.replied(nak::OK, 0, now, &t));
        assert_eq!((s.phase, s.deadline(&t)), (Phase::WaitFin, None));
        assert!(s.serves_pull(peer, 7, 0x4000, 1417));
        assert!(!s.serves_pull(peer, 7, 0x4001, 1417), "beyond the buffer");
        assert!(!s.serves_pull(peer, 7, 0x3fff, 2), "before it");
        assert!(!s.serves_pull(peer, 8, 0x4000, 8), "another req_id");
        assert!(!s.serves_pull(Endpoint { node: 2, ctx: 4 }, 7, 0x4000, 8));
        assert!(s.finished(nak::REMOTE_FAULT, 5));
        let e = s.end.unwrap();
        assert_eq!((e.status, e.detail), (completion::REMOTE_FAULT_ABORTED, 5));
        assert!(!s.serves_pull(peer, 7, 0x4000, 8), "ended");
    }

    #[test]
    fn fin_statuses_map_both_ways() {
        for s in [
            completion::REMOTE_NO_CONTEXT,
            completion::RNR_RETRY_EXCEEDED,
            completion::REMOTE_BAD_KEY,
            completion::REMOTE_FAULT_ABORTED,
        ] {
            assert_eq!(fin_status(fin_reason(s)), s);
        }
        assert_eq!(fin_reason(completion::FAULT_ABORTED), nak::REMOTE_FAULT);
    }
}
