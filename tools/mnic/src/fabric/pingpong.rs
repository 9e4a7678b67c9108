//! `mnic pingpong`: one-way PUT latency per message size, like `ib_write_lat`. Each end
//! PUTs into the other's window in turn, and the process (which holds both ends) polls the
//! target's memory until the message's last bytes show the new stamp; the time from the
//! post to that moment is one one-way latency. Baseline: the same message moved by a local
//! COPY on the initiator's device, timed from post to its last bytes visible.

use std::time::{Duration, Instant};

use mnic::abi::fabric::PUT_CHUNK;
use mnic::{Context, DmaBuffer, Work};
use mnic_bench_schema::names::{ratio, row};
use mnic_bench_schema::{Bench, Report};

use crate::error::CmdResult;
use crate::fabric::args::FabricArgs;
use crate::fabric::ends::{run_local, Local, Side};
use crate::fabric::measure::{latency_vs_copy, message_len, rounds, Measured};

/// Untimed iterations per size without `--warmup`.
pub const DEFAULT_WARMUP: u32 = 10;
/// Sizes without `--sizes`: small messages, one full PUT packet and one byte more, a page,
/// 64 KiB.
pub const DEFAULT_SIZES: [u64; 7] = [
    8,
    64,
    512,
    PUT_CHUNK as u64,
    PUT_CHUNK as u64 + 1,
    4096,
    65536,
];

/// The stamp bytes of message `n`: the last `min(8, size)` bytes of the message.
pub(super) fn stamp(n: u64, size: usize) -> Vec<u8> {
    n.to_le_bytes()[..size.min(8)].to_vec()
}

/// Sets the stamp bytes of round `n` of `len`-byte messages in `window` to something else
/// than the stamp, so that only that round's message makes them match.
pub(super) fn arm(window: &DmaBuffer, len: usize, n: u64) {
    let want = stamp(n, len);
    let not_yet: Vec<u8> = want.iter().map(|b| !b).collect();
    window.write_from(len - want.len(), &not_yet);
}

/// Posts `work` on `ctx` and polls `watch` at `off` until it holds `want`; returns the time
/// from the post to then. The item's completion is consumed (untimed) before returning, and
/// an item that fails, or bytes that do not appear within `timeout`, are errors.
fn post_and_watch(
    ctx: &Context,
    work: &Work,
    watch: &DmaBuffer,
    off: usize,
    want: &[u8],
    timeout: Duration,
) -> CmdResult<Duration> {
    let mut seen = vec![0u8; want.len()];
    let start = Instant::now();
    ctx.post(work)?;
    let mut completed = false;
    let took = loop {
        watch.read_into(off, &mut seen);
        if seen == want {
            break start.elapsed();
        }
        if !completed {
            if let Some(done) = ctx.poll()? {
                done.result()?;
                completed = true;
            }
        }
        if start.elapsed() > timeout {
            return Err(
                format!("the message's last bytes did not appear within {timeout:?}").into(),
            );
        }
        std::hint::spin_loop();
    };
    if !completed {
        ctx.wait(Some(timeout))?.result()?;
    }
    Ok(took)
}

/// One message of `size` bytes from `from` into `into_window` (a PUT through `region`, or a
/// local COPY when `region` is `None`), stamped `n`: the bytes watched are first set to
/// something else, so only this message can make them match.
pub(super) fn one_way(
    from: &Side,
    into_window: &DmaBuffer,
    region: Option<&mnic::RemoteRegion>,
    size: usize,
    n: u64,
    timeout: Duration,
) -> CmdResult<Duration> {
    let want = stamp(n, size);
    let off = size - want.len();
    let not_yet: Vec<u8> = want.iter().map(|b| !b).collect();
    into_window.write_from(off, &not_yet);
    from.bufs.src.write_from(off, &want);
    let work = match region {
        Some(r) => Work::put(&from.bufs.src, 0, r, 0, size)?,
        None => Work::copy_buffers(&from.bufs.src, 0, into_window, 0, size)?,
    };
    post_and_watch(from.ctx, &work, into_window, off, &want, timeout)
}

/// Fills both ends' sources with their `size`-byte messages, bytes that differ from zero,
/// from each other's and from the previous size's; returns the messages' length.
pub(super) fn fill_messages(e: &Local, size: u64) -> CmdResult<usize> {
    let len = message_len(size)?;
    e.l.bufs.src.fill_range(0, len, 0xa5 ^ size as u8);
    e.r.bufs.src.fill_range(0, len, 0x5a ^ size as u8);
    Ok(len)
}

pub fn run(a: &FabricArgs) -> CmdResult<Report> {
    let c = a.common(DEFAULT_WARMUP);
    let sizes = a.sizes(&DEFAULT_SIZES);
    run_local(a, Bench::Pingpong, &c, &sizes, 8, |report, e| {
        let (l, r) = (&e.l, &e.r);
        let mut n = 0u64;
        for &size in e.sizes {
            let len = fill_messages(e, size)?;
            let what = format!("{size} bytes");
            let [mut put, back, copy] = rounds(&c, "pingpong", &what, || {
                n += 1;
                Ok([
                    one_way(l, &r.bufs.window, Some(&r.region), len, n, e.timeout)?,
                    one_way(r, &l.bufs.window, Some(&l.region), len, n, e.timeout)?,
                    one_way(l, &l.bufs.dst, None, len, n, e.timeout)?,
                ])
            })?;
            // Both directions are one-way PUTs.
            put.0.extend(back.0);
            // The whole message arrived, not only its stamp.
            if r.bufs.window.to_vec()[..len] != l.bufs.src.to_vec()[..len] {
                return Err(format!("PUT of {size} bytes: the target's window differs").into());
            }
            let m = Measured {
                row: row::PUT_ONE_WAY,
                ratio: ratio::PUT_OVER_COPY_ONE_WAY,
                meaning:
                    "one-way PUT latency / local COPY latency, medians (>1: the fabric is slower)",
                times: &put,
            };
            latency_vs_copy(report, size, m, &copy);
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_fit_the_message() {
        assert_eq!(stamp(0x0102, 1), [0x02]);
        assert_eq!(stamp(0x0102, 3), [0x02, 0x01, 0]);
        assert_eq!(stamp(7, 4096).len(), 8);
        // Consecutive stamps differ even in one byte.
        assert_ne!(stamp(255, 1), stamp(256, 1));
    }
}
