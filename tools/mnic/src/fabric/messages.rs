//! What `--op send` shares between `pingpong` and `bw`: tagged SEND/RECV (docs/fabric.md
//! 14.14) driven on both ends from this one process. A RECV completes out of work-queue
//! order, so a wait is for one tag; every other completion met on the way must succeed.

use std::time::{Duration, Instant};

use mnic::abi::fabric::EAGER_MAX;
use mnic::abi::work::POSTED_MAX;
use mnic::{Context, Work, WorkDone};

use crate::error::CmdResult;

/// Sizes of a smoke run of `--op send`: the largest eager and the smallest rendezvous
/// message, so both protocols run.
pub const SMOKE_SIZES: [u64; 2] = [EAGER_MAX as u64, EAGER_MAX as u64 + 1];

/// Polls `ctx` until the item tagged `tag` completes and returns its completion; every
/// other completion consumed meanwhile must succeed.
pub fn poll_for(ctx: &Context, tag: u64, timeout: Duration) -> CmdResult<WorkDone> {
    let start = Instant::now();
    loop {
        if let Some(done) = ctx.poll()? {
            done.result()?;
            if done.tag == tag {
                return Ok(done);
            }
        } else if start.elapsed() > timeout {
            return Err(format!("work item {tag:#x} did not complete within {timeout:?}").into());
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Waits for every outstanding item of `ctx`; each must succeed.
pub fn drain(ctx: &Context, timeout: Duration) -> CmdResult {
    while ctx.outstanding() > 0 {
        ctx.wait(Some(timeout))?.result()?;
    }
    Ok(())
}

/// Checks that a receive took the whole `size`-byte message tagged `bits`.
pub fn check_received(done: &WorkDone, size: u64, bits: u64) -> CmdResult {
    match done.message {
        Some(m) if m.match_bits == bits && !m.truncated && done.bytes == size => Ok(()),
        other => Err(format!(
            "receive of {size}-byte message {bits:#x}: {} bytes, {other:?}",
            done.bytes
        )
        .into()),
    }
}

/// Streams `count` copies of `send` from `sender` into `count` copies of `recv` posted at
/// `receiver` (receives kept ahead of the sends, at most `POSTED_MAX` posted), polling both
/// ends; returns the time from the first post to the last receive completion and the bytes
/// the receives took.
pub fn stream(
    sender: &Context,
    receiver: &Context,
    send: Work,
    recv: Work,
    count: u64,
    timeout: Duration,
) -> CmdResult<(Duration, u64)> {
    let recv_room = receiver.outstanding_limit().min(POSTED_MAX as u32);
    let (mut sends, mut recvs) = (count, count);
    let (mut received, mut bytes) = (0, 0);
    let start = Instant::now();
    let mut last_progress = start;
    while received < count || sender.outstanding() > 0 {
        while recvs > 0 && receiver.outstanding() < recv_room {
            receiver.push(&recv)?;
            recvs -= 1;
        }
        receiver.ring()?;
        while sends > 0 && sender.outstanding() < sender.outstanding_limit() {
            sender.push(&send)?;
            sends -= 1;
        }
        sender.ring()?;
        let mut progress = false;
        while let Some(d) = sender.poll()? {
            d.result()?;
            progress = true;
        }
        while let Some(d) = receiver.poll()? {
            bytes += d.result()?;
            if d.truncated() {
                return Err("a streamed message was truncated".into());
            }
            received += 1;
            progress = true;
        }
        if progress {
            last_progress = Instant::now();
        } else if last_progress.elapsed() > timeout {
            return Err(format!(
                "message stream stalled for {timeout:?}: {received}/{count} received"
            )
            .into());
        } else {
            std::hint::spin_loop();
        }
    }
    Ok((start.elapsed(), bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mnic::{Endpoint, Received};

    fn recv_done(bytes: u64, bits: u64, truncated: bool) -> WorkDone {
        WorkDone {
            tag: 1,
            bytes,
            error: None,
            fault_va: 0,
            message: Some(Received {
                match_bits: bits,
                sender: Endpoint { node: 1, ctx: 0 },
                truncated,
            }),
        }
    }

    #[test]
    fn a_receive_must_hold_the_whole_message() {
        assert!(check_received(&recv_done(64, 7, false), 64, 7).is_ok());
        assert!(check_received(&recv_done(64, 8, false), 64, 7).is_err());
        assert!(check_received(&recv_done(63, 7, false), 64, 7).is_err());
        assert!(check_received(&recv_done(64, 7, true), 64, 7).is_err());
        let not_a_receive = WorkDone {
            message: None,
            ..recv_done(64, 7, false)
        };
        assert!(check_received(&not_a_receive, 64, 7).is_err());
        assert_eq!(SMOKE_SIZES, [1416, 1417]);
    }
}
