//! The traffic generator (spec §11 `TRAFFIC`): `ops` DMA operations of `op_size`
//! bytes inside `[src, src + len)`, reading into and writing from device buffers.
//!
//! Everything is a pure function of the seed and the operation index (offset,
//! direction, data), so an operation retried after a fault does the same thing and
//! a test can predict what memory holds afterwards. The generator decides the
//! operations; the engine carries each one out through the callback of
//! [`TrafficState::step`] (translation, checks, the access), so this file needs nothing
//! of the engine but its error and outcome types.

use std::time::{Duration, Instant};

use mnic_abi::{work, WorkDesc};

use super::error::AccessError;
use super::step::Outcome;

/// Most operations per step.
const STEP_OPS: u64 = 64;
/// Most bytes per step.
const STEP_BYTES: u64 = 256 << 10;

/// Per-item generator state: the device buffers and the item's start (for `rate`).
pub struct TrafficState {
    wbuf: Vec<u8>,
    rbuf: Vec<u8>,
    start: Instant,
}

/// One DMA operation of a TRAFFIC item, for the engine to carry out.
pub enum TrafficOp<'a> {
    /// Read `buf.len()` bytes at `va` into the device buffer.
    Read {
        /// Where in the context's address space.
        va: u64,
        /// The device's read buffer.
        buf: &'a mut [u8],
    },
    /// Write the device buffer at `va`.
    Write {
        /// Where in the context's address space.
        va: u64,
        /// The item's write pattern.
        buf: &'a [u8],
    },
}

/// splitmix64: a tiny, well-mixed, stateless hash (deterministic across runs).
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The bytes every write operation of a TRAFFIC item with `seed` writes.
pub fn pattern(seed: u64, op_size: usize) -> Vec<u8> {
    (0..op_size.div_ceil(8))
        .flat_map(|i| mix(seed ^ mix(i as u64)).to_le_bytes())
        .take(op_size)
        .collect()
}

/// Offset inside the range and direction (true = write) of operation `i`.
pub fn op(pattern: u32, seed: u64, len: u64, op_size: u64, i: u64) -> (u64, bool) {
    let slots = (len / op_size).max(1);
    match pattern {
        work::PATTERN_SEQ_READ => ((i % slots) * op_size, false),
        work::PATTERN_SEQ_WRITE => ((i % slots) * op_size, true),
        _ => {
            let h = mix(seed.wrapping_add(mix(i)));
            (h % (len - op_size + 1), h >> 63 != 0)
        }
    }
}

impl TrafficState {
    /// The state of a TRAFFIC item `desc` starting now.
    pub fn new(desc: &WorkDesc) -> Self {
        let op_size = desc.op_size as usize;
        TrafficState {
            wbuf: pattern(desc.seed, op_size),
            rbuf: vec![0; op_size],
            start: Instant::now(),
        }
    }

    /// One step of the TRAFFIC item `desc` with `done` operations done: up to
    /// [`STEP_OPS`] operations or [`STEP_BYTES`], fewer when `rate` says the next
    /// operation is not due yet. `dma` carries out one operation; `done` counts those it
    /// carried out.
    pub fn step(
        &mut self,
        desc: &WorkDesc,
        done: &mut u64,
        mut dma: impl FnMut(TrafficOp<'_>) -> Result<(), AccessError>,
    ) -> Outcome {
        let d = desc;
        let op_size = u64::from(d.op_size);
        let mut bytes = 0;
        let mut n = 0;
        while *done < d.ops && n < STEP_OPS && bytes < STEP_BYTES {
            if d.rate != 0 {
                let due = self.start + rate_offset(*done, d.rate);
                if due > Instant::now() {
                    return Outcome::Wait(due);
                }
            }
            let (off, write) = op(d.pattern, d.seed, u64::from(d.len), op_size, *done);
            let va = d.src + off;
            let r = if write {
                dma(TrafficOp::Write {
                    va,
                    buf: &self.wbuf,
                })
            } else {
                dma(TrafficOp::Read {
                    va,
                    buf: &mut self.rbuf,
                })
            };
            if let Err(e) = r {
                return Outcome::Failed(e);
            }
            *done += 1;
            bytes += op_size;
            n += 1;
        }
        if *done >= d.ops {
            Outcome::Finished { bytes: *done }
        } else {
            Outcome::More
        }
    }
}

/// When operation `i` is due at `rate` operations per second.
fn rate_offset(i: u64, rate: u64) -> Duration {
    let nanos = u128::from(i) * 1_000_000_000 / u128::from(rate.max(1));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_stay_in_range() {
        for p in 0..3 {
            for i in 0..1000 {
                let (off, _) = op(p, 7, 10_000, 333, i);
                assert!(off + 333 <= 10_000);
            }
        }
        let (o, w) = op(work::PATTERN_SEQ_WRITE, 0, 4096, 1024, 5);
        assert_eq!((o, w), (1024, true));
        assert_eq!(op(work::PATTERN_SEQ_READ, 0, 4096, 4096, 9), (0, false));
        // Random: both directions occur.
        let writes = (0..100).filter(|&i| op(2, 1, 1 << 20, 64, i).1).count();
        assert!((20..80).contains(&writes), "{writes}");
    }

    #[test]
    fn pattern_is_seeded() {
        assert_eq!(pattern(1, 13), pattern(1, 13));
        assert_ne!(pattern(1, 16), pattern(2, 16));
        assert_eq!(pattern(3, 100).len(), 100);
        assert_eq!(rate_offset(3, 1000), Duration::from_millis(3));
    }
}
