//! Work queue and completion queue in user memory (spec §11): ring arithmetic, the
//! phase-bit convention, and the outstanding-items limit.
//!
//! Nothing here makes a system call; [`Context`](crate::Context) adds the ioctls and
//! the doorbell. That keeps the ring logic testable without a device: the unit tests
//! play the device on plain memory.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::mem::size_of;
use std::time::Instant;

use mnic_abi::{completion, ring, Completion, WorkDesc, RING_LOG2_MAX, RING_LOG2_MIN};
use zerocopy::{FromBytes, IntoBytes};

use crate::buffer::DmaBuffer;
use crate::error::{Error, Result, WorkError};
use crate::remote::Endpoint;
use crate::sys;
use crate::work::Work;

/// How a [`Context`](crate::Context) rings its doorbell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DoorbellMode {
    /// [`Shadow`](Self::Shadow) if the device has `CAPS.SHADOW` and both pages map,
    /// else [`Mapped`](Self::Mapped), else [`Syscall`](Self::Syscall).
    #[default]
    Auto,
    /// A shadow doorbell (spec §4a): ask for a shadow page (`MNIC_IOC_SHADOW`), map it
    /// (mmap offset 4096) and the doorbell page; every tail goes to the shadow page, and
    /// the doorbell register is written only while the device is not polling. Fails if
    /// the driver or the device does not offer shadow pages.
    Shadow,
    /// Map the doorbell page (mmap offset 0) and store `WQ_TAIL` directly, every post
    /// a trapped register write (no shadow page); fail if the mapping is refused.
    Mapped,
    /// Ring through `MNIC_IOC_POST` (one system call per doorbell).
    Syscall,
}

/// Sizes of the work and completion queues, and how to ring the doorbell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    /// log2 of work-queue entries (64 bytes each), 4..=12.
    pub wq_log2: u8,
    /// log2 of completion-queue entries (32 bytes each), 4..=12.
    pub cq_log2: u8,
    /// Doorbell mechanism.
    pub doorbell: DoorbellMode,
}

impl Default for QueueConfig {
    /// 256 work entries, 256 completion entries, the best doorbell the device offers.
    fn default() -> Self {
        Self {
            wq_log2: 8,
            cq_log2: 8,
            doorbell: DoorbellMode::Auto,
        }
    }
}

impl QueueConfig {
    /// Checks the sizes against `RING_LOG2_MIN..=RING_LOG2_MAX`.
    pub fn validate(&self) -> Result<()> {
        let ok = |l: u8| (RING_LOG2_MIN..=RING_LOG2_MAX).contains(&l);
        if ok(self.wq_log2) && ok(self.cq_log2) {
            Ok(())
        } else {
            Err(Error::InvalidInput(
                "queue sizes must be 2^4..=2^12 entries",
            ))
        }
    }

    /// Most work items that may be outstanding (posted, completion not yet consumed).
    ///
    /// The completion queue has no head register, so it must have room for every
    /// outstanding item: at most `cq_entries` (spec §11). The work queue keeps one slot
    /// empty (a full ring, tail == head, would look empty to the device): at most what
    /// `ring::free` allows in an empty ring, `wq_entries - 1`.
    pub fn outstanding_limit(&self) -> u32 {
        let wq_room = ring::free(0, 0, 1u64 << self.wq_log2);
        let cq_room = 1u64 << self.cq_log2;
        // Both are at most 2^12 (`validate`), so the minimum fits.
        wq_room.min(cq_room) as u32
    }

    /// Byte offset of the completion queue in the queue memory (page aligned).
    pub(crate) fn cq_offset(&self) -> usize {
        let wq = size_of::<WorkDesc>() << self.wq_log2;
        wq.next_multiple_of(sys::page_size())
    }

    /// Bytes of queue memory: work queue, padding to a page, completion queue.
    pub(crate) fn mem_len(&self) -> usize {
        self.cq_offset() + (size_of::<Completion>() << self.cq_log2)
    }
}

/// Producer index of the work queue. `tail` counts every descriptor ever written; the
/// slot and the doorbell value follow from it by the ring rules of `mnic_abi::ring`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WqRing {
    log2: u8,
    tail: u64,
}

impl WqRing {
    pub(crate) fn new(log2: u8) -> Self {
        Self { log2, tail: 0 }
    }
    fn entries(&self) -> u64 {
        1u64 << self.log2
    }
    /// Slot the next descriptor goes to.
    pub(crate) fn slot(&self) -> usize {
        ring::slot(self.tail, self.entries()) as usize
    }
    pub(crate) fn advance(&mut self) {
        self.tail = self.tail.wrapping_add(1);
    }
    /// Value for `WQ_TAIL`: the producer index modulo the ring size, i.e. the slot the
    /// next descriptor goes to.
    pub(crate) fn doorbell(&self) -> u32 {
        ring::slot(self.tail, self.entries()) as u32
    }
}

/// Consumer index of the completion queue and the phase it expects.
///
/// `head` counts every completion ever consumed. The device writes the `count`-th
/// completion with phase `ring::phase(count, entries)` (1 on the first pass, 0 on the
/// second, ...); the ring starts zeroed, so an entry is new when its phase bit equals
/// the phase of the consumer's current pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CqRing {
    log2: u8,
    head: u64,
}

impl CqRing {
    pub(crate) fn new(log2: u8) -> Self {
        Self { log2, head: 0 }
    }
    fn entries(&self) -> u64 {
        1u64 << self.log2
    }
    pub(crate) fn slot(&self) -> usize {
        ring::slot(self.head, self.entries()) as usize
    }
    /// Phase bit of new entries in the current pass.
    pub(crate) fn phase(&self) -> bool {
        ring::phase(self.head, self.entries())
    }
    /// True if an entry whose `flags` field reads `flags` at [`slot`](Self::slot) is new.
    ///
    /// Only `flags` is read before deciding (the rest of the entry is read after an
    /// acquire fence), so the abi's rule is applied to an entry holding just that field.
    pub(crate) fn is_new(&self, flags: u16) -> bool {
        Completion {
            flags,
            ..Completion::default()
        }
        .is_new(self.phase())
    }
    pub(crate) fn advance(&mut self) {
        self.head = self.head.wrapping_add(1);
    }
}

/// One outstanding item as the library posted it: enough to recognise its completion
/// (`tag`), to decode it (`recv`: a RECV's completion carries a message's bits and
/// sender) and to count the `WORK_DONE` events it brings (`notify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pending {
    pub(crate) tag: u64,
    pub(crate) notify: bool,
    pub(crate) recv: bool,
}

/// Bookkeeping of outstanding items, in posting order, and of the `WORK_DONE` events
/// consumed so far.
///
/// Completions do not come in posting order once RECVs are involved (spec §11: a RECV
/// completes when its message is delivered, after items posted behind it), so a
/// completion is matched to its item by tag, not by position: the items other than
/// RECV complete in posting order among themselves, and the oldest outstanding item
/// with the completion's tag is taken. (Tags are unique while the library assigns them;
/// with [`Work::with_tag`] duplicates among outstanding items, an out-of-order
/// completion may be charged to the wrong one of them, which can only make a wait
/// sleep one slice too long or wake up early, and mis-decode a RECV's message fields.)
///
/// The device posts a `WORK_DONE` event with each notifying completion, in completion
/// order; so the event count that means "the next notifying completion is in the queue"
/// is one more than the notifying completions consumed, whichever items they were.
#[derive(Debug)]
pub(crate) struct Outstanding {
    limit: u32,
    items: VecDeque<Pending>,
    notify_consumed: u64,
}

impl Outstanding {
    pub(crate) fn new(limit: u32) -> Self {
        Self {
            limit,
            items: VecDeque::with_capacity(limit as usize),
            notify_consumed: 0,
        }
    }
    pub(crate) fn len(&self) -> u32 {
        self.items.len() as u32
    }
    pub(crate) fn limit(&self) -> u32 {
        self.limit
    }
    /// Refuses if one more item would exceed the limit.
    pub(crate) fn check(&self) -> Result<()> {
        if self.len() >= self.limit {
            Err(Error::QueueFull {
                outstanding: self.len(),
                limit: self.limit,
            })
        } else {
            Ok(())
        }
    }
    pub(crate) fn push(&mut self, item: Pending) {
        self.items.push_back(item);
    }
    /// Takes the item a completion with `tag` belongs to: the oldest outstanding one
    /// with that tag (the oldest item at all if none has it, which only a device that
    /// invents tags could cause; the counts stay right either way).
    pub(crate) fn complete(&mut self, tag: u64) -> Option<Pending> {
        let i = self.items.iter().position(|p| p.tag == tag).unwrap_or(0);
        let item = self.items.remove(i)?;
        if item.notify {
            self.notify_consumed += 1;
        }
        Some(item)
    }
    /// `WORK_DONE` count to wait for so that one more notifying item has completed, or
    /// `None` if no outstanding item notifies.
    pub(crate) fn wait_target(&self) -> Option<u64> {
        self.items
            .iter()
            .any(|p| p.notify)
            .then_some(self.notify_consumed + 1)
    }
}

/// What a RECV received: the message's match bits and sender (spec §11, from the
/// completion's `fault_va` and `detail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// The message's match bits (the SEND's, not the receive's).
    pub match_bits: u64,
    /// The context that sent it.
    pub sender: Endpoint,
    /// The message was longer than the receive's buffer: the buffer holds its first
    /// bytes ([`WorkDone::bytes`] = the buffer's length) and the rest was dropped. Not
    /// an error: the bytes delivered are good and [`WorkDone::result`] is `Ok`; check
    /// this (or [`WorkDone::truncated`]) when a short read matters.
    pub truncated: bool,
}

/// A consumed completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkDone {
    /// The descriptor's tag.
    pub tag: u64,
    /// Bytes copied (COPY, PUT, GET, SEND), bytes of a message delivered (RECV), or
    /// operations done (TRAFFIC); for a failed item, what was done before the failure.
    pub bytes: u64,
    /// `None` on success (for a RECV also when the message was truncated), else why the
    /// item failed.
    pub error: Option<WorkError>,
    /// VA of the access that failed, or 0.
    pub fault_va: u64,
    /// A RECV that received a message (whole or truncated): its match bits and sender;
    /// `None` for every other item and for a RECV that failed.
    pub message: Option<Received>,
}

impl WorkDone {
    /// Decodes a raw completion entry of any item but a RECV (a `RECV_TRUNCATED`
    /// status, which only a RECV gets, is decoded as [`from_recv`](Self::from_recv)
    /// does).
    pub fn from_raw(c: &Completion) -> Self {
        if c.status == completion::RECV_TRUNCATED {
            return Self::from_recv(c);
        }
        Self {
            tag: c.tag,
            bytes: c.bytes,
            error: WorkError::from_status(c.status, c.detail),
            fault_va: c.fault_va,
            message: None,
        }
    }

    /// Decodes a raw completion entry of a RECV: `OK` and `RECV_TRUNCATED` carry the
    /// message's match bits in `fault_va` and its sender in `detail`
    /// ([`Completion::recv_bits`], [`Completion::recv_sender`]).
    pub fn from_recv(c: &Completion) -> Self {
        let truncated = c.status == completion::RECV_TRUNCATED;
        if c.status != completion::OK && !truncated {
            return Self::from_raw(c);
        }
        let sender = c.recv_sender();
        Self {
            tag: c.tag,
            bytes: c.bytes,
            error: None,
            fault_va: 0,
            message: Some(Received {
                match_bits: c.recv_bits(),
                sender: Endpoint {
                    node: sender.node,
                    ctx: sender.ctx,
                },
                truncated,
            }),
        }
    }

    /// True if the item succeeded.
    pub fn is_ok(&self) -> bool {
        self.error.is_none()
    }

    /// True for a RECV whose message was longer than its buffer.
    pub fn truncated(&self) -> bool {
        self.message.is_some_and(|m| m.truncated)
    }

    /// `Ok(bytes)` on success (a truncated RECV included), [`Error::Work`] otherwise.
    pub fn result(&self) -> Result<u64> {
        match self.error {
            None => Ok(self.bytes),
            Some(error) => Err(Error::Work {
                tag: self.tag,
                error,
                fault_va: self.fault_va,
            }),
        }
    }
}

/// Ring state behind a `RefCell` (a context is used from one thread at a time).
#[derive(Debug)]
struct State {
    wq: WqRing,
    cq: CqRing,
    outstanding: Outstanding,
    next_tag: u64,
    /// Last value given to the doorbell.
    rung: u32,
}

/// The queue memory of a context and its ring state.
///
/// # Invariants
/// `mem` holds the work queue at offset 0 and the completion queue at `cq_off`, sized
/// by `cfg`; it stays mapped as long as the context can use it (the context owns it and
/// closes its file first).
#[derive(Debug)]
pub(crate) struct Queue {
    mem: DmaBuffer,
    cfg: QueueConfig,
    cq_off: usize,
    state: RefCell<State>,
}

impl Queue {
    /// Allocates zeroed queue memory for `cfg` (the caller registers it and hands it to
    /// the driver).
    pub(crate) fn new(cfg: QueueConfig) -> Result<Self> {
        cfg.validate()?;
        let mem = DmaBuffer::new(cfg.mem_len())?;
        Ok(Self {
            mem,
            cfg,
            cq_off: cfg.cq_offset(),
            state: RefCell::new(State {
                wq: WqRing::new(cfg.wq_log2),
                cq: CqRing::new(cfg.cq_log2),
                outstanding: Outstanding::new(cfg.outstanding_limit()),
                next_tag: 1,
                rung: 0,
            }),
        })
    }

    pub(crate) fn mem(&self) -> &DmaBuffer {
        &self.mem
    }
    pub(crate) fn wq_va(&self) -> u64 {
        self.mem.va()
    }
    pub(crate) fn cq_va(&self) -> u64 {
        self.mem.va_at(self.cq_off)
    }
    pub(crate) fn config(&self) -> &QueueConfig {
        &self.cfg
    }

    /// Writes `work` into the next WQ slot (without ringing); returns its tag.
    pub(crate) fn push(&self, work: &Work) -> Result<u64> {
        let mut st = self.state.borrow_mut();
        st.outstanding.check()?;
        let tag = work.tag().unwrap_or(st.next_tag);
        st.next_tag = st.next_tag.wrapping_add(1);
        let mut desc = *work.desc();
        desc.tag = tag;
        let off = st.wq.slot() * size_of::<WorkDesc>();
        self.mem.write_from(off, desc.as_bytes());
        st.wq.advance();
        st.outstanding.push(Pending {
            tag,
            notify: work.notifies(),
            recv: work.is_recv(),
        });
        Ok(tag)
    }

    /// The tail to give the doorbell, if it moved since the last call.
    pub(crate) fn take_tail(&self) -> Option<u32> {
        let mut st = self.state.borrow_mut();
        let t = st.wq.doorbell();
        (t != st.rung).then(|| {
            st.rung = t;
            t
        })
    }

    /// Forgets that `tail` was rung (the doorbell failed): the next ring retries it.
    pub(crate) fn unring(&self, previous: u32) {
        self.state.borrow_mut().rung = previous;
    }

    /// The tail last given to the doorbell.
    pub(crate) fn rung(&self) -> u32 {
        self.state.borrow().rung
    }

    /// Consumes the next completion if the device has written it.
    pub(crate) fn poll(&self) -> Option<WorkDone> {
        let mut st = self.state.borrow_mut();
        let off = self.cq_off + st.cq.slot() * size_of::<Completion>();
        if !st.cq.is_new(self.read_completion_flags(off)) {
            return None;
        }
        // Read the body only after seeing the phase bit.
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        let mut raw = [0u8; size_of::<Completion>()];
        self.mem.read_into(off, &mut raw);
        let c = Completion::read_from_bytes(&raw).unwrap_or_default();
        st.cq.advance();
        let recv = st.outstanding.complete(c.tag).is_some_and(|p| p.recv);
        Some(if recv {
            WorkDone::from_recv(&c)
        } else {
            WorkDone::from_raw(&c)
        })
    }

    /// The `flags` field of the completion entry at byte offset `entry`, with one
    /// volatile load of the aligned little-endian word that holds it (the device writes
    /// the phase byte last, so this load sees either the old or the new phase).
    fn read_completion_flags(&self, entry: usize) -> u16 {
        const WORD: usize = Completion::PHASE_OFFSET & !7;
        const SHIFT: usize = (Completion::PHASE_OFFSET - WORD) * 8;
        (self.mem.read_u64(entry + WORD) >> SHIFT) as u16
    }

    /// Polls until a completion arrives, `until` passes or nothing is outstanding
    /// (without a system call: the short-wait path of `Context::wait`).
    pub(crate) fn spin_poll(&self, until: Instant) -> Option<WorkDone> {
        loop {
            if let Some(d) = self.poll() {
                return Some(d);
            }
            if self.outstanding() == 0 || Instant::now() >= until {
                return None;
            }
            std::hint::spin_loop();
        }
    }

    pub(crate) fn outstanding(&self) -> u32 {
        self.state.borrow().outstanding.len()
    }
    pub(crate) fn limit(&self) -> u32 {
        self.state.borrow().outstanding.limit()
    }
    pub(crate) fn wait_target(&self) -> Option<u64> {
        self.state.borrow().outstanding.wait_target()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use mnic_abi::work;

    /// Plays the device: executes descriptors between its head and `tail`, writing
    /// completions with the phase convention.
    pub(crate) struct FakeDevice {
        wq_head: u64,
        cq_tail: u64,
    }

    impl FakeDevice {
        pub(crate) fn new() -> Self {
            Self {
                wq_head: 0,
                cq_tail: 0,
            }
        }
        /// Completes every descriptor up to doorbell value `tail`; returns how many.
        pub(crate) fn run(&mut self, q: &Queue, tail: u32) -> usize {
            let wq_n = 1u64 << q.cfg.wq_log2;
            let mut n = 0;
            while ring::slot(self.wq_head, wq_n) as u32 != tail {
                let mut raw = [0u8; 64];
                q.mem
                    .read_into(ring::slot(self.wq_head, wq_n) as usize * 64, &mut raw);
                let d = WorkDesc::read_from_bytes(&raw).unwrap();
                self.wq_head += 1;
                n += 1;
                if d.opcode == work::RECV {
                    // Posted: completed later, by `complete`.
                    continue;
                }
                self.complete(
                    q,
                    Completion {
                        tag: d.tag,
                        status: if d.opcode == work::NOP { 0 } else { 1 },
                        flags: 0,
                        detail: if d.opcode == work::NOP { 0 } else { 14 },
                        bytes: u64::from(d.len),
                        fault_va: d.src,
                    },
                );
            }
            n
        }
        /// Writes completion `c` into the next completion-queue slot.
        pub(crate) fn complete(&mut self, q: &Queue, mut c: Completion) {
            let cq_n = 1u64 << q.cfg.cq_log2;
            c.flags = c.flags_with_phase(ring::phase(self.cq_tail, cq_n));
            let off = q.cq_off + ring::slot(self.cq_tail, cq_n) as usize * 32;
            q.mem.write_from(off, c.as_bytes());
            self.cq_tail += 1;
        }
    }

    fn cfg(wq: u8, cq: u8) -> QueueConfig {
        QueueConfig {
            wq_log2: wq,
            cq_log2: cq,
            doorbell: DoorbellMode::Syscall,
        }
    }

    #[test]
    fn wq_index_wraps() {
        let mut r = WqRing::new(4);
        for i in 0..40u64 {
            assert_eq!(r.slot() as u64, i % 16);
            assert_eq!(u64::from(r.doorbell()), i % 16);
            r.advance();
        }
        let mut r = WqRing {
            log2: 4,
            tail: u64::MAX,
        };
        assert_eq!(r.slot(), 15);
        r.advance();
        assert_eq!((r.slot(), r.doorbell()), (0, 0));
    }

    #[test]
    fn cq_phase_flips_each_pass() {
        let mut r = CqRing::new(4);
        for pass in 0..4u64 {
            for i in 0..16 {
                assert_eq!(r.slot(), i);
                let expect = pass % 2 == 0;
                assert_eq!(r.phase(), expect, "pass {pass}");
                assert_eq!(r.is_new(completion::FLAG_PHASE), expect);
                assert_eq!(r.is_new(0), !expect);
                // Other flag bits do not matter.
                assert!(r.is_new(0xfffe | u16::from(expect)));
                r.advance();
            }
        }
    }

    #[test]
    fn limits_and_layout() {
        assert_eq!(cfg(4, 4).outstanding_limit(), 15);
        assert_eq!(cfg(8, 4).outstanding_limit(), 16);
        assert_eq!(cfg(4, 12).outstanding_limit(), 15);
        assert_eq!(cfg(12, 12).outstanding_limit(), 4095);
        assert_eq!(cfg(12, 11).outstanding_limit(), 2048);
        assert!(cfg(3, 8).validate().is_err());
        assert!(cfg(8, 13).validate().is_err());
        let c = cfg(4, 4);
        assert_eq!(c.cq_offset(), sys::page_size());
        assert_eq!(c.mem_len(), sys::page_size() + 512);
        assert_eq!(cfg(12, 4).cq_offset(), 64 << 12);
    }

    #[test]
    fn outstanding_limit_is_enforced() {
        let q = Queue::new(cfg(4, 4)).unwrap();
        for _ in 0..15 {
            q.push(&Work::nop()).unwrap();
        }
        assert_eq!(q.outstanding(), 15);
        let e = q.push(&Work::nop()).unwrap_err();
        assert!(
            matches!(
                e,
                Error::QueueFull {
                    outstanding: 15,
                    limit: 15
                }
            ),
            "{e:?}"
        );
        // Completing one frees one credit.
        let mut dev = FakeDevice::new();
        let tail = q.take_tail().unwrap();
        assert_eq!(tail, 15);
        assert_eq!(dev.run(&q, tail), 15);
        assert!(q.poll().is_some());
        assert_eq!(q.outstanding(), 14);
        q.push(&Work::nop()).unwrap();
        assert!(q.push(&Work::nop()).is_err());
    }

    #[test]
    fn many_passes_with_tags_and_phase() {
        // Exercise several wraps of both rings with uneven batch sizes.
        let q = Queue::new(cfg(4, 5)).unwrap();
        let mut dev = FakeDevice::new();
        let mut expect_tag = 1u64;
        let mut seen = 0u64;
        for round in 0..50u64 {
            let batch = 1 + round % 15;
            for _ in 0..batch {
                q.push(&Work::nop()).unwrap();
            }
            // Nothing before the device runs.
            assert!(q.poll().is_none());
            let tail = q.take_tail().unwrap();
            assert!(q.take_tail().is_none(), "tail handed out twice");
            assert_eq!(dev.run(&q, tail) as u64, batch);
            while let Some(d) = q.poll() {
                assert_eq!(d.tag, expect_tag);
                assert!(d.is_ok());
                expect_tag += 1;
                seen += 1;
            }
            assert_eq!(q.outstanding(), 0);
        }
        assert_eq!(seen, (0..50u64).map(|r| 1 + r % 15).sum::<u64>());
    }

    #[test]
    fn completion_errors_and_user_tags() {
        let q = Queue::new(cfg(4, 4)).unwrap();
        let w = Work::copy(0x10_0000, 0x20_0000, 4096)
            .unwrap()
            .with_tag(0xabc);
        assert_eq!(q.push(&w).unwrap(), 0xabc);
        let mut dev = FakeDevice::new();
        dev.run(&q, q.take_tail().unwrap());
        let d = q.poll().unwrap();
        assert_eq!(d.tag, 0xabc);
        assert_eq!(d.error, Some(WorkError::FaultAborted { errno: 14 }));
        assert_eq!(d.fault_va, 0x10_0000);
        assert!(matches!(d.result(), Err(Error::Work { tag: 0xabc, .. })));
    }

    #[test]
    fn wait_targets_follow_notify_items() {
        let q = Queue::new(cfg(5, 5)).unwrap();
        assert_eq!(q.wait_target(), None);
        q.push(&Work::nop().notify(false)).unwrap();
        assert_eq!(q.wait_target(), None);
        q.push(&Work::nop()).unwrap(); // ordinal 1
        q.push(&Work::nop()).unwrap(); // ordinal 2
        assert_eq!(q.wait_target(), Some(1));
        let mut dev = FakeDevice::new();
        dev.run(&q, q.take_tail().unwrap());
        q.poll().unwrap();
        assert_eq!(q.wait_target(), Some(1));
        q.poll().unwrap();
        assert_eq!(q.wait_target(), Some(2));
        q.poll().unwrap();
        assert_eq!(q.wait_target(), None);
    }

    #[test]
    fn spin_poll_returns_early_or_at_the_deadline() {
        let q = Queue::new(cfg(4, 4)).unwrap();
        let far = Instant::now() + std::time::Duration::from_secs(60);
        // Nothing outstanding: returns at once, even with a far deadline.
        assert!(q.spin_poll(far).is_none());
        q.push(&Work::nop()).unwrap();
        // Outstanding but not done: gives up at the deadline.
        let until = Instant::now() + std::time::Duration::from_millis(2);
        assert!(q.spin_poll(until).is_none());
        assert!(Instant::now() >= until);
        // Done: returned without waiting for the (far) deadline.
        FakeDevice::new().run(&q, q.take_tail().unwrap());
        assert!(q.spin_poll(far).is_some());
    }

    #[test]
    fn shadow_tail_drives_the_device_and_rings_only_when_asleep() {
        use crate::shadow::{publish, Words};
        use std::sync::atomic::{AtomicU32, Ordering};
        // The device takes the work queue's tail from the shadow page only (spec §4a):
        // the fake device here reads `tail` from the page, never from a doorbell value.
        let q = Queue::new(cfg(4, 4)).unwrap();
        let (tail, polling) = (AtomicU32::new(0), AtomicU32::new(1));
        let page = Words {
            tail: &tail,
            polling: &polling,
        };
        let mut dev = FakeDevice::new();
        let mut rings = 0;
        for round in 0..20u32 {
            // The device falls asleep every third round.
            polling.store(u32::from(round % 3 != 0), Ordering::Relaxed);
            for _ in 0..=round % 4 {
                q.push(&Work::nop()).unwrap();
            }
            let t = q.take_tail().unwrap();
            if publish(&page, t) {
                rings += 1;
                assert_eq!(polling.load(Ordering::Relaxed), 0, "rang a polling device");
            } else {
                assert_ne!(polling.load(Ordering::Relaxed), 0, "asleep and not rung");
            }
            let n = dev.run(&q, u32::from_le(tail.load(Ordering::Acquire)));
            assert_eq!(n as u32, round % 4 + 1, "round {round}");
            while q.poll().is_some() {}
        }
        assert_eq!(rings, 7);
    }

    #[test]
    fn unring_retries_the_tail() {
        let q = Queue::new(cfg(4, 4)).unwrap();
        q.push(&Work::nop()).unwrap();
        let t = q.take_tail().unwrap();
        q.unring(0);
        assert_eq!(q.take_tail(), Some(t));
        assert_eq!(q.rung(), t);
    }

    fn pending(tag: u64, notify: bool, recv: bool) -> Pending {
        Pending { tag, notify, recv }
    }

    #[test]
    fn out_of_order_completions_are_matched_by_tag() {
        let mut o = Outstanding::new(8);
        o.push(pending(1, true, true)); // a RECV, completes last
        o.push(pending(2, true, false));
        o.push(pending(3, false, false));
        o.push(pending(4, true, false));
        assert_eq!(o.wait_target(), Some(1));
        // The items behind the RECV complete first: each is charged to itself, and
        // every notifying completion consumed moves the target by one.
        assert_eq!(o.complete(2), Some(pending(2, true, false)));
        assert_eq!(o.wait_target(), Some(2));
        assert_eq!(o.complete(3), Some(pending(3, false, false)));
        assert_eq!(o.wait_target(), Some(2));
        assert_eq!(o.complete(4), Some(pending(4, true, false)));
        assert_eq!((o.len(), o.wait_target()), (1, Some(3)));
        assert_eq!(o.complete(1), Some(pending(1, true, true)));
        assert_eq!((o.len(), o.wait_target()), (0, None));
        assert_eq!(o.complete(1), None);
        // Only non-notifying items outstanding: nothing to sleep on.
        o.push(pending(5, false, true));
        assert_eq!(o.wait_target(), None);
        // A tag nobody posted takes the oldest item, so the count stays right.
        assert_eq!(o.complete(99), Some(pending(5, false, true)));
        // Duplicate tags: the oldest first.
        o.push(pending(7, true, true));
        o.push(pending(7, false, false));
        assert_eq!(o.complete(7), Some(pending(7, true, true)));
        assert_eq!(o.complete(7), Some(pending(7, false, false)));
    }

    #[test]
    fn a_recv_completing_after_later_items_is_decoded_as_a_recv() {
        let q = Queue::new(cfg(4, 4)).unwrap();
        let recv = Work::recv_va(0x10_0000, 4096, 0xab00, 0xff00).unwrap();
        let recv_tag = q.push(&recv).unwrap();
        let recv2_tag = q.push(&recv).unwrap();
        let nop_tag = q.push(&Work::nop()).unwrap();
        let mut dev = FakeDevice::new();
        assert_eq!(dev.run(&q, q.take_tail().unwrap()), 3);
        // The NOP completes first, though posted last: not decoded as a message.
        let d = q.poll().unwrap();
        assert_eq!((d.tag, d.message, d.error), (nop_tag, None, None));
        assert_eq!(q.outstanding(), 2);
        assert_eq!(q.wait_target(), Some(2));
        // The second RECV completes before the first, truncated.
        let sender = mnic_abi::Endpoint { node: 2, ctx: 5 };
        dev.complete(
            &q,
            Completion {
                tag: recv2_tag,
                status: completion::RECV_TRUNCATED,
                detail: sender.packed(),
                bytes: 4096,
                fault_va: 0xab42,
                ..Completion::default()
            },
        );
        dev.complete(
            &q,
            Completion {
                tag: recv_tag,
                status: completion::OK,
                detail: sender.packed(),
                bytes: 17,
                fault_va: 0xab01,
                ..Completion::default()
            },
        );
        let d = q.poll().unwrap();
        assert_eq!(d.tag, recv2_tag);
        assert_eq!(d.result().unwrap(), 4096);
        assert!(d.truncated());
        let m = d.message.unwrap();
        assert_eq!(m.match_bits, 0xab42);
        assert_eq!(m.sender, Endpoint { node: 2, ctx: 5 });
        let d = q.poll().unwrap();
        assert_eq!((d.tag, d.bytes, d.fault_va), (recv_tag, 17, 0));
        assert!(!d.truncated());
        assert_eq!(d.message.map(|m| m.match_bits), Some(0xab01));
        assert_eq!(q.outstanding(), 0);
        assert_eq!(q.wait_target(), None);
    }

    #[test]
    fn a_failed_recv_has_no_message() {
        let c = Completion {
            tag: 3,
            status: completion::REMOTE_NO_CONTEXT,
            fault_va: 0x5000,
            ..Completion::default()
        };
        let d = WorkDone::from_recv(&c);
        assert_eq!(d.message, None);
        assert_eq!(d.fault_va, 0x5000);
        assert_eq!(
            d.error,
            Some(WorkError::Remote(crate::RemoteError::NoContext))
        );
        // RECV_TRUNCATED is a RECV's whichever decoder sees it.
        let t = Completion {
            status: completion::RECV_TRUNCATED,
            ..c
        };
        assert_eq!(WorkDone::from_raw(&t), WorkDone::from_recv(&t));
        assert!(WorkDone::from_raw(&t).truncated());
        // An OK completion of another item keeps its fields as they are.
        let ok = Completion {
            status: completion::OK,
            fault_va: 0,
            detail: 0,
            ..c
        };
        assert_eq!(WorkDone::from_raw(&ok).message, None);
    }
}
