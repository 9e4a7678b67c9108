//! The set of enabled contexts, and the round-robin order the poll loop visits them in.

use mnic_abi::NUM_CONTEXTS;

/// Words of the bitmap.
const WORDS: usize = NUM_CONTEXTS as usize / 64;
const _: () = assert!((NUM_CONTEXTS as usize).is_multiple_of(64));

/// Which context slots are occupied: a poll round visits only those (walking all 256
/// slots after a large copy had pushed them out of the cache cost microseconds).
#[derive(Clone, Copy, Default)]
pub struct LiveSet([u64; WORDS]);

impl LiveSet {
    /// Records whether slot `i` holds a context.
    pub fn set(&mut self, i: usize, on: bool) {
        if let Some(w) = self.0.get_mut(i / 64) {
            let bit = 1u64 << (i % 64);
            if on {
                *w |= bit;
            } else {
                *w &= !bit;
            }
        }
    }

    /// The members at or above `from`, then those below it: one round-robin pass. The
    /// pass is over this copy of the set, so contexts may stop during it.
    pub fn round_robin(self, from: usize) -> impl Iterator<Item = usize> {
        let live = self.0;
        let ones = move |lo: usize, hi: usize| {
            (0..WORDS)
                .flat_map(move |w| {
                    let mut bits = live[w];
                    std::iter::from_fn(move || {
                        let t = bits.trailing_zeros() as usize;
                        bits &= bits.checked_sub(1)?;
                        Some(w * 64 + t)
                    })
                })
                .filter(move |&i| (lo..hi).contains(&i))
        };
        ones(from, NUM_CONTEXTS as usize).chain(ones(0, from))
    }
}
