//! One PUT or GET at the initiator (docs/fabric.md 14.13), as a state machine without
//! memory or sockets: how the operation is cut into packets (never across a 4 KiB page
//! of either VA, at most `PUT_CHUNK`/`GET_CHUNK` bytes), which are due to be sent, at
//! most `RMA_IN_FLIGHT` unanswered, the RNR back-off, the silence timeout, and how an
//! answer finds its packet. `initiator` drives it with the data thread's memory accesses
//! and the transport.

use std::time::Instant;

use mnic_abi::fabric::{nak, GET_CHUNK, PUT_CHUNK, RMA_IN_FLIGHT};
use mnic_abi::{completion, pte, work, Endpoint, Remote, WorkDesc};

use super::link::RmaTiming;

/// Where one packet is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PktState {
    /// Cut, to be sent (for the first time, or again after its GET_RESP was dropped).
    Unsent,
    /// Sent, waiting for its answer.
    Sent,
    /// Answered `RNR`: sent again at the instant.
    Backoff(Instant),
}

/// One packet of the operation, not yet answered `OK`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pkt {
    /// Offset in the operation.
    pub off: u64,
    /// Bytes.
    pub len: u32,
    /// Where it is.
    pub state: PktState,
    /// `RNR`s in a row.
    pub rnr: u32,
    /// Times sent.
    pub sends: u32,
}

/// How the item ends when it does not end `OK`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct End {
    /// `completion::*` status.
    pub status: u16,
    /// The target's errno for `REMOTE_FAULT_ABORTED`, else 0.
    pub detail: u32,
    /// The remote VA of the packet that failed.
    pub fault_va: u64,
}

/// A PUT or GET in progress.
#[derive(Debug)]
pub struct Rma {
    /// PUT (else GET).
    pub put: bool,
    /// The remote side.
    pub remote: Remote,
    /// The local VA.
    pub local: u64,
    /// Bytes in all.
    pub len: u64,
    /// The id its packets carry (per device, never 0).
    pub req_id: u32,
    /// Offset of the first byte not cut into a packet yet.
    next: u64,
    /// Packets cut and not answered `OK` yet, in offset order.
    pkts: Vec<Pkt>,
    /// Bytes answered `OK` (PUT) or written (GET).
    pub confirmed: u64,
    /// The last answer, or the first send after a time with nothing in flight.
    last_heard: Instant,
    /// Set once the item failed.
    pub end: Option<End>,
}

/// The `completion::REMOTE_*` status of a `REPLY` error status.
pub fn reply_status(s: u16) -> Option<u16> {
    Some(match s {
        nak::BAD_KEY => completion::REMOTE_BAD_KEY,
        nak::BAD_RANGE => completion::REMOTE_BAD_RANGE,
        nak::BAD_ACCESS => completion::REMOTE_BAD_ACCESS,
        nak::REMOTE_FAULT => completion::REMOTE_FAULT_ABORTED,
        nak::NO_CONTEXT => completion::REMOTE_NO_CONTEXT,
        _ => return None,
    })
}

/// Bytes from `va` to the end of its 4 KiB page.
fn page_room(va: u64) -> u64 {
    pte::PAGE_SIZE - (va & (pte::PAGE_SIZE - 1))
}

impl Rma {
    /// The state of validated PUT or GET `d`, its packets carrying `req_id`.
    pub fn new(d: &WorkDesc, req_id: u32, now: Instant) -> Self {
        let put = d.opcode == work::PUT;
        Self::start(put, d.remote(), d.local(), u64::from(d.len), req_id, now)
    }

    /// The pull of a rendezvous message (docs/fabric.md 14.14): a GET of `len` bytes of
    /// `from`'s buffer at `va` into local `local`, authorised by the SEND's `req_id`
    /// (the key is 0).
    pub fn pull(from: Endpoint, va: u64, local: u64, len: u64, req_id: u32, now: Instant) -> Self {
        let remote = Remote {
            node: from.node,
            ctx: from.ctx,
            key: 0,
            va,
        };
        Self::start(false, remote, local, len, req_id, now)
    }

    /// An operation that has sent nothing yet.
    fn start(put: bool, remote: Remote, local: u64, len: u64, req_id: u32, now: Instant) -> Self {
        Rma {
            put,
            remote,
            local,
            len,
            req_id,
            next: 0,
            pkts: Vec::new(),
            confirmed: 0,
            last_heard: now,
            end: None,
        }
    }

    /// The remote VA of offset `off`.
    pub fn remote_va(&self, off: u64) -> u64 {
        self.remote.va.wrapping_add(off)
    }

    /// The local VA of offset `off`.
    pub fn local_va(&self, off: u64) -> u64 {
        self.local.wrapping_add(off)
    }

    /// Length of the packet at `off`: a chunk, cut at the end of the operation and of
    /// the 4 KiB pages of both VAs.
    fn chunk(&self, off: u64) -> u32 {
        let chunk = if self.put { PUT_CHUNK } else { GET_CHUNK } as u64;
        let n = chunk
            .min(self.len - off)
            .min(page_room(self.remote_va(off)))
            .min(page_room(self.local_va(off)));
        n as u32
    }

    /// Cuts new packets while fewer than `RMA_IN_FLIGHT` are unanswered.
    pub fn cut(&mut self) {
        while self.end.is_none() && self.pkts.len() < RMA_IN_FLIGHT && self.next < self.len {
            let len = self.chunk(self.next);
            self.pkts.push(Pkt {
                off: self.next,
                len,
                state: PktState::Unsent,
                rnr: 0,
                sends: 0,
            });
            self.next += u64::from(len);
        }
    }

    /// The first packet due to be sent at `now`, after index `from`.
    pub fn due(&self, from: usize, now: Instant) -> Option<usize> {
        self.pkts
            .iter()
            .enumerate()
            .skip(from)
            .find(|(_, p)| match p.state {
                PktState::Unsent => true,
                PktState::Backoff(t) => t <= now,
                PktState::Sent => false,
            })
            .map(|(i, _)| i)
    }

    /// Packet `i`.
    pub fn pkt(&self, i: usize) -> Pkt {
        self.pkts[i]
    }

    /// Whether any packet is sent and unanswered.
    pub fn waiting(&self) -> bool {
        self.pkts.iter().any(|p| p.state == PktState::Sent)
    }

    /// Packet `i` was sent at `now`.
    pub fn sent(&mut self, i: usize, now: Instant) {
        if !self.waiting() {
            // The silence is measured from here, not from an earlier answer.
            self.last_heard = now;
        }
        self.pkts[i].state = PktState::Sent;
        self.pkts[i].sends += 1;
    }

    /// The packet an answer about remote `va` is for: one sent and unanswered.
    pub fn find(&self, va: u64) -> Option<usize> {
        self.pkts
            .iter()
            .position(|p| p.state == PktState::Sent && self.remote_va(p.off) == va)
    }

    /// Packet `i` is answered `OK` (PUT) or its data written (GET).
    pub fn ok(&mut self, i: usize, now: Instant) {
        let p = self.pkts.remove(i);
        self.confirmed += u64::from(p.len);
        self.last_heard = now;
    }

    /// Packet `i` is answered `RNR` at `now`: sent again after the back-off, or the item
    /// fails after `rnr_retries` in a row.
    pub fn rnr(&mut self, i: usize, now: Instant, t: &RmaTiming) {
        self.last_heard = now;
        let p = &mut self.pkts[i];
        p.rnr += 1;
        if p.rnr >= t.rnr_retries {
            self.fail_pkt(i, completion::RNR_RETRY_EXCEEDED, 0);
        } else {
            p.state = PktState::Backoff(now + t.rnr_wait(p.rnr));
        }
    }

    /// Packet `i`'s answer was heard but could not be used (a GET_RESP whose local
    /// translation was gone): it is sent again.
    pub fn again(&mut self, i: usize, now: Instant) {
        self.last_heard = now;
        self.pkts[i].state = PktState::Unsent;
    }

    /// Packet `i` failed with `status` (its remote VA is the completion's `fault_va`).
    pub fn fail_pkt(&mut self, i: usize, status: u16, detail: u32) {
        let va = self.remote_va(self.pkts[i].off);
        self.fail(status, detail, va);
    }

    /// The item fails: whatever is in flight is answered late.
    pub fn fail(&mut self, status: u16, detail: u32, fault_va: u64) {
        if self.end.is_none() {
            self.end = Some(End {
                status,
                detail,
                fault_va,
            });
        }
        self.pkts.clear();
    }

    /// The remote VA of the first unanswered packet, if the item has packets sent and
    /// nothing was heard for the reply timeout.
    pub fn timed_out(&self, now: Instant, t: &RmaTiming) -> Option<u64> {
        let first = self.pkts.iter().find(|p| p.state == PktState::Sent)?;
        (now.saturating_duration_since(self.last_heard) >= t.reply_timeout)
            .then(|| self.remote_va(first.off))
    }

    /// The remote VA of the first packet sent and unanswered (what a lost peer fails).
    pub fn first_waiting(&self) -> Option<u64> {
        self.pkts
            .iter()
            .find(|p| p.state == PktState::Sent)
            .map(|p| self.remote_va(p.off))
    }

    /// When the item has something to do without an answer: the earliest back-off, or
    /// the reply timeout while packets are unanswered.
    pub fn deadline(&self, t: &RmaTiming) -> Option<Instant> {
        let backoff = self
            .pkts
            .iter()
            .filter_map(|p| match p.state {
                PktState::Backoff(at) => Some(at),
                _ => None,
            })
            .min();
        let timeout = self.waiting().then(|| self.last_heard + t.reply_timeout);
        match (backoff, timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether every byte is confirmed.
    pub fn finished(&self) -> bool {
        self.end.is_none() && self.next >= self.len && self.pkts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rma(put: bool, local: u64, remote: u64, len: u32) -> Rma {
        let op = if put { work::PUT } else { work::GET };
        let r = Remote {
            node: 2,
            ctx: 1,
            key: 9,
            va: remote,
        };
        Rma::new(&WorkDesc::rma(op, 0, 1, local, r, len), 7, Instant::now())
    }

    /// Every packet's (offset, length) once cut and sent, answered OK in order.
    fn packets(r: &mut Rma) -> Vec<(u64, u32)> {
        let now = Instant::now();
        let mut out = Vec::new();
        loop {
            r.cut();
            let Some(i) = r.due(0, now) else { break };
            r.sent(i, now);
            let p = r.pkt(i);
            out.push((p.off, p.len));
            let i = r.find(r.remote_va(p.off)).unwrap();
            r.ok(i, now);
        }
        out
    }

    #[test]
    fn packets_never_cross_a_page_of_either_side() {
        for (put, local, remote, len) in [
            (true, 0x1000, 0x5000, 1),
            (true, 0x1000, 0x5000, PUT_CHUNK as u32 + 1),
            (true, 0x1007, 0x5ff0, 4096 + 7),
            (false, 0x1ffe, 0x5003, 20_000),
            (false, 0x1000, 0x5000, 1 << 20),
        ] {
            let mut r = rma(put, local, remote, len);
            let chunk = if put { PUT_CHUNK } else { GET_CHUNK } as u32;
            let ps = packets(&mut r);
            let mut off = 0;
            for &(o, n) in &ps {
                assert_eq!(o, off, "contiguous");
                assert!(n >= 1 && n <= chunk);
                for va in [local + o, remote + o] {
                    assert_eq!(va / 4096, (va + u64::from(n) - 1) / 4096, "crosses a page");
                }
                off += u64::from(n);
            }
            assert_eq!(off, u64::from(len));
            assert!(r.finished() && r.confirmed == u64::from(len));
        }
    }

    #[test]
    fn at_most_rma_in_flight_packets_are_unanswered() {
        let mut r = rma(true, 0x1000, 0x5000, 1 << 20);
        let now = Instant::now();
        r.cut();
        let mut sent = 0;
        while let Some(i) = r.due(0, now) {
            r.sent(i, now);
            sent += 1;
        }
        assert_eq!(sent, RMA_IN_FLIGHT);
        r.cut();
        assert_eq!(r.due(0, now), None, "no more until an answer");
    }

    #[test]
    fn rnr_backs_off_and_fails_after_the_retries() {
        let t = RmaTiming {
            rnr_retries: 3,
            ..RmaTiming::default()
        };
        let mut r = rma(true, 0x1000, 0x5000, 100);
        let now = Instant::now();
        r.cut();
        r.sent(0, now);
        r.rnr(0, now, &t);
        assert_eq!(r.due(0, now), None, "waits");
        assert_eq!(r.deadline(&t), Some(now + t.rnr_backoff));
        let later = now + Duration::from_secs(1);
        assert_eq!(r.due(0, later), Some(0));
        r.sent(0, later);
        r.rnr(0, later, &t);
        r.sent(0, later);
        r.rnr(0, later, &t);
        let e = r.end.unwrap();
        assert_eq!(e.status, completion::RNR_RETRY_EXCEEDED);
        assert_eq!(e.fault_va, 0x5000);
        assert!(
            !r.finished() && r.find(0x5000).is_none(),
            "late from now on"
        );
    }

    #[test]
    fn silence_times_out_only_with_packets_unanswered() {
        let t = RmaTiming::default();
        let mut r = rma(false, 0x1000, 0x5000, 100);
        let now = Instant::now();
        r.cut();
        assert_eq!(r.timed_out(now + t.reply_timeout, &t), None, "nothing sent");
        r.sent(0, now);
        assert_eq!(r.timed_out(now, &t), None);
        assert_eq!(r.timed_out(now + t.reply_timeout, &t), Some(0x5000));
        assert_eq!(r.deadline(&t), Some(now + t.reply_timeout));
    }

    #[test]
    fn reply_statuses_map_to_completions() {
        assert_eq!(reply_status(nak::BAD_KEY), Some(completion::REMOTE_BAD_KEY));
        assert_eq!(
            reply_status(nak::REMOTE_FAULT),
            Some(completion::REMOTE_FAULT_ABORTED)
        );
        assert_eq!(reply_status(nak::RNR), None);
        assert_eq!(reply_status(nak::OK), None);
        assert_eq!(reply_status(nak::STALE_EPOCH), None);
    }
}
