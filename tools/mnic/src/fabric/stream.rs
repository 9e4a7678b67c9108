//! A stream of work items for the bandwidth modes (`bw`, `send_bw`, `target_pinned`,
//! `target_pageout`): how many items of a size make one timed iteration, and the time one
//! iteration takes. Its own file so that the modes import it and `bw` imports the modes,
//! one way.

use std::time::{Duration, Instant};

use mnic::Work;

use crate::bench::harness::drive;
use crate::error::CmdResult;

/// Bytes each timed iteration moves (at least one item of the size).
const BYTES_PER_ITER: u64 = 8 << 20;
/// The same in a smoke run.
const SMOKE_BYTES_PER_ITER: u64 = 256 << 10;
/// Most items per iteration: small sizes would otherwise make an iteration long.
const MAX_ITEMS: u64 = 2048;

/// Items of `size` bytes per iteration so that about `per_iter` bytes move.
pub(crate) fn items_per_iter(size: u64, per_iter: u64) -> u64 {
    (per_iter / size.max(1)).clamp(1, MAX_ITEMS)
}

/// The time `drive` takes for `items` (which must all succeed and move `bytes`).
pub(crate) fn timed(
    ctx: &mnic::Context,
    items: &[Work],
    bytes: u64,
    timeout: Duration,
) -> CmdResult<Duration> {
    let start = Instant::now();
    let moved = drive(ctx, items.iter().copied(), timeout)?;
    let took = start.elapsed();
    if moved != bytes {
        return Err(format!("moved {moved} bytes, expected {bytes}").into());
    }
    Ok(took)
}

/// Bytes each timed iteration moves.
pub(crate) fn per_iter_bytes(smoke: bool) -> u64 {
    if smoke {
        SMOKE_BYTES_PER_ITER
    } else {
        BYTES_PER_ITER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_per_iteration() {
        assert_eq!(items_per_iter(4096, 8 << 20), 2048);
        assert_eq!(items_per_iter(1, 8 << 20), MAX_ITEMS);
        assert_eq!(items_per_iter(4 << 20, 8 << 20), 2);
        assert_eq!(items_per_iter(16 << 20, 8 << 20), 1);
        assert_eq!(items_per_iter(0, 8), 8);
    }
}
