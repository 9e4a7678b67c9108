//! One peer's receiving side (docs/fabric.md 14.5): the next expected sequence number, a
//! window of packets that arrived early, and the verdict on each arrival (kept,
//! duplicate, out of window).

use mnic_abi::fabric::WINDOW;

/// A sequenced packet that arrived, as the layer above gets it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arrived {
    /// Packet type.
    pub ptype: u8,
    /// Sending context.
    pub src_ctx: u16,
    /// Target context.
    pub dst_ctx: u16,
    /// Payload.
    pub payload: Vec<u8>,
}

/// What became of an arrival.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Kept for delivery (now or once the gap before it fills).
    Kept,
    /// Delivered or kept already.
    Duplicate,
    /// Beyond the window.
    OutOfWindow,
}

/// The receiving side of one connection. Slot `seq % WINDOW` holds packet `seq`: only
/// `WINDOW` consecutive numbers are ever kept, and 2^32 is a multiple of `WINDOW`, so
/// slots stay distinct across the wrap.
#[derive(Debug)]
pub struct RecvStream {
    expected: u32,
    slots: Vec<Option<Arrived>>,
}

impl Default for RecvStream {
    fn default() -> Self {
        RecvStream {
            expected: 1,
            slots: vec![None; WINDOW as usize],
        }
    }
}

impl RecvStream {
    /// The cumulative acknowledgement: the last sequence number delivered.
    pub fn ack(&self) -> u32 {
        self.expected.wrapping_sub(1)
    }

    /// Takes packet `seq`.
    pub fn accept(&mut self, seq: u32, a: Arrived) -> Verdict {
        let ahead = seq.wrapping_sub(self.expected);
        if (ahead as i32) < 0 {
            return Verdict::Duplicate;
        }
        if ahead >= WINDOW {
            return Verdict::OutOfWindow;
        }
        let slot = &mut self.slots[(seq % WINDOW) as usize];
        if slot.is_some() {
            return Verdict::Duplicate;
        }
        *slot = Some(a);
        Verdict::Kept
    }

    /// The next packet in order, if it is here; the acknowledgement moves past it.
    pub fn pop_ready(&mut self) -> Option<Arrived> {
        let a = self.slots[(self.expected % WINDOW) as usize].take()?;
        self.expected = self.expected.wrapping_add(1);
        Some(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(n: u8) -> Arrived {
        Arrived {
            ptype: 1,
            src_ctx: 0,
            dst_ctx: 0,
            payload: vec![n],
        }
    }

    #[test]
    fn early_packets_wait_for_the_gap() {
        let mut r = RecvStream::default();
        assert_eq!(r.accept(2, a(2)), Verdict::Kept);
        assert_eq!(r.pop_ready(), None);
        assert_eq!(r.accept(2, a(2)), Verdict::Duplicate);
        assert_eq!(r.accept(1, a(1)), Verdict::Kept);
        assert_eq!(r.pop_ready(), Some(a(1)));
        assert_eq!(r.pop_ready(), Some(a(2)));
        assert_eq!(r.ack(), 2);
        assert_eq!(r.accept(1, a(1)), Verdict::Duplicate);
        assert_eq!(r.accept(3 + WINDOW, a(0)), Verdict::OutOfWindow);
        assert_eq!(r.accept(2 + WINDOW, a(0)), Verdict::Kept);
        assert_eq!(r.accept(0x8000_0000, a(0)), Verdict::OutOfWindow);
    }

    #[test]
    fn the_window_slides_across_the_wrap() {
        let mut r = RecvStream {
            expected: u32::MAX,
            ..RecvStream::default()
        };
        assert_eq!(r.accept(0, a(0)), Verdict::Kept);
        assert_eq!(r.accept(u32::MAX, a(9)), Verdict::Kept);
        assert_eq!(r.pop_ready(), Some(a(9)));
        assert_eq!(r.pop_ready(), Some(a(0)));
        assert_eq!(r.ack(), 0);
        assert_eq!(r.accept(u32::MAX, a(9)), Verdict::Duplicate);
    }
}
