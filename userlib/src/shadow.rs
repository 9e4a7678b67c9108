//! The producer's side of a shadow doorbell (spec §4a): how a work-queue tail is
//! published through the context's shadow page, and when the doorbell register must be
//! written as well.
//!
//! Nothing here maps or writes a device register: [`ShadowWords`] is the two words of a
//! shadow page (the mapped page in `sys.rs`, plain memory in the tests) and [`publish`]
//! returns whether the caller must ring. That keeps the one rule that decides whether a
//! post can be lost testable without a device.

use std::sync::atomic::{fence, AtomicU32, Ordering};

use mnic_abi::Shadow;

/// The two words of a shadow page: `tail` (ours to write) and `polling` (the device's).
pub(crate) trait ShadowWords {
    /// Stores the producer index into `tail` with release ordering: the descriptors
    /// written before it are visible to whoever sees the new tail.
    fn store_tail(&self, tail: u32);
    /// Loads `polling`, which the device writes at any time from another process.
    fn load_polling(&self) -> u32;
}

/// Two words in shared memory, accessed only atomically.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Words<'a> {
    pub(crate) tail: &'a AtomicU32,
    pub(crate) polling: &'a AtomicU32,
}

impl ShadowWords for Words<'_> {
    fn store_tail(&self, tail: u32) {
        // The device reads the word as little-endian, like a register value.
        self.tail.store(tail.to_le(), Ordering::Release);
    }
    fn load_polling(&self) -> u32 {
        u32::from_le(self.polling.load(Ordering::Acquire))
    }
}

/// Publishes `tail` (spec §4a, producer steps 1-3): stores it into the shadow page,
/// then a full fence, then reads `polling`. Returns true when the device is not polling
/// (`polling == 0`), i.e. when the caller must also write `tail` to the doorbell
/// register.
///
/// The fence is what makes a lost post impossible: the device, before it sleeps,
/// stores `polling = 0`, fences, and reads the tail once more. With a store-load fence
/// on both sides at least one of them sees the other's store, so either the device finds
/// the new tail or this returns true and the caller rings.
pub(crate) fn publish(words: &impl ShadowWords, tail: u32) -> bool {
    words.store_tail(tail);
    fence(Ordering::SeqCst);
    Shadow::doorbell_needed(words.load_polling(), false)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::RefCell;

    use super::*;

    /// What a producer did to a shadow page, in order.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Op {
        StoreTail(u32),
        LoadPolling(u32),
    }

    /// A shadow page that records every access; `polling` is what the "device" says.
    pub(crate) struct Recorder {
        pub(crate) polling: u32,
        pub(crate) ops: RefCell<Vec<Op>>,
    }

    impl ShadowWords for Recorder {
        fn store_tail(&self, tail: u32) {
            self.ops.borrow_mut().push(Op::StoreTail(tail));
        }
        fn load_polling(&self) -> u32 {
            self.ops.borrow_mut().push(Op::LoadPolling(self.polling));
            self.polling
        }
    }

    #[test]
    fn rings_only_when_the_device_is_not_polling() {
        for (polling, ring) in [(0, true), (1, false), (0xffff_ffff, false)] {
            let r = Recorder {
                polling,
                ops: RefCell::new(Vec::new()),
            };
            assert_eq!(publish(&r, 7), ring, "polling = {polling}");
        }
    }

    #[test]
    fn tail_is_stored_before_polling_is_read() {
        // Whatever the answer, the tail goes to the page first (the device takes the
        // queue's tail from the page only), and polling is read exactly once, after it.
        for polling in [0, 1] {
            let r = Recorder {
                polling,
                ops: RefCell::new(Vec::new()),
            };
            publish(&r, 42);
            assert_eq!(
                *r.ops.borrow(),
                [Op::StoreTail(42), Op::LoadPolling(polling)]
            );
        }
    }

    #[test]
    fn words_in_memory() {
        let (tail, polling) = (AtomicU32::new(0), AtomicU32::new(1));
        let w = Words {
            tail: &tail,
            polling: &polling,
        };
        assert!(!publish(&w, 5));
        assert_eq!(u32::from_le(tail.load(Ordering::Relaxed)), 5);
        // The device went to sleep: the next post rings, and still writes the tail.
        polling.store(0, Ordering::Relaxed);
        assert!(publish(&w, 6));
        assert_eq!(u32::from_le(tail.load(Ordering::Relaxed)), 6);
    }
}
