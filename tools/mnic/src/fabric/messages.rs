//! What `--op send` shares between `pingpong` and `bw`, and between their ends in one
//! process and their ends in two (`cross_send`): tagged SEND/RECV (docs/fabric.md 14.14).
//! A RECV completes out of work-queue order, so a wait is for one tag; every other
//! completion met on the way must succeed.

use std::time::{Duration, Instant};

use mnic::abi::fabric::EAGER_MAX;
use mnic::abi::work::POSTED_MAX;
use mnic::{Context, DmaBuffer, Endpoint, Work, WorkDone};

use crate::error::CmdResult;

/// Sizes of a smoke run of `--op send`: the largest eager and the smallest rendezvous
/// message, so both protocols run.
pub const SMOKE_SIZES: [u64; 2] = [EAGER_MAX as u64, EAGER_MAX as u64 + 1];
/// Set in the match bits of an answer (an echo, an acknowledgement) whose sender found
/// what it answers wrong: the asking end's receive leaves this bit out of its mask, so it
/// takes the answer either way, and then learns why from the answering end (across a
/// link: the server's `fail` line) instead of waiting for an answer that never comes.
pub const FAILED: u64 = 1 << 47;

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

/// Checks that a receive took the whole `size`-byte message tagged `bits` from `from`.
pub fn check_received(done: &WorkDone, size: u64, bits: u64, from: Endpoint) -> CmdResult {
    match done.message {
        Some(m)
            if m.match_bits == bits && m.sender == from && !m.truncated && done.bytes == size =>
        {
            Ok(())
        }
        other => Err(format!(
            "receive of {size}-byte message {bits:#x} from {from}: {} bytes, {other:?}",
            done.bytes
        )
        .into()),
    }
}

/// Whether a received answer carries [`FAILED`].
pub fn answer_failed(done: &WorkDone) -> bool {
    done.message.is_some_and(|m| m.match_bits & FAILED != 0)
}

/// Checks that the first `len` bytes of `buf` are `want`'s (a receive buffer after a
/// stream, which the receiver zeroed before it: nothing stale passes).
pub fn check_pattern(buf: &DmaBuffer, want: &[u8]) -> CmdResult {
    let mut got = vec![0u8; want.len()];
    buf.read_into(0, &mut got);
    match got.iter().zip(want).position(|(g, w)| g != w) {
        Some(at) => Err(format!(
            "the receive buffer differs from the {}-byte message at byte {at}",
            want.len()
        )
        .into()),
        None => Ok(()),
    }
}

/// Keeps a context's work queue fed with copies of one item: at most `room` items of the
/// context outstanding (whatever they are), until `left` are pushed.
pub struct Pusher<'a> {
    ctx: &'a Context,
    item: Work,
    left: u64,
    room: u32,
}

impl<'a> Pusher<'a> {
    pub fn new(ctx: &'a Context, item: Work, count: u64, room: u32) -> Self {
        Self {
            ctx,
            item,
            left: count,
            room,
        }
    }

    /// Pushes copies while there is room, then rings if it pushed any.
    pub fn fill(&mut self) -> CmdResult {
        let mut pushed = false;
        while self.left > 0 && self.ctx.outstanding() < self.room {
            self.ctx.push(&self.item)?;
            self.left -= 1;
            pushed = true;
        }
        if pushed {
            self.ctx.ring()?;
        }
        Ok(())
    }
}

/// Most receives a context keeps posted: `POSTED_MAX`, or fewer if its queue is smaller.
pub fn recv_room(ctx: &Context) -> u32 {
    ctx.outstanding_limit().min(POSTED_MAX as u32)
}

/// Counts progress of a loop that polls, and fails once nothing moved for `timeout`.
pub struct Stall {
    last: Instant,
    timeout: Duration,
}

impl Stall {
    pub fn new(timeout: Duration) -> Self {
        Self {
            last: Instant::now(),
            timeout,
        }
    }

    /// After one pass of the loop: `progress` restarts the clock; otherwise fails with
    /// `what()` once `timeout` has passed without any.
    pub fn check(&mut self, progress: bool, what: impl FnOnce() -> String) -> CmdResult {
        if progress {
            self.last = Instant::now();
        } else if self.last.elapsed() > self.timeout {
            return Err(format!("{} stalled for {:?}", what(), self.timeout).into());
        } else {
            std::hint::spin_loop();
        }
        Ok(())
    }
}

/// What every message of a stream must be, as its receiver checks it: whole, `len` bytes,
/// with match bits `bits`, from `from`.
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    pub len: u64,
    pub bits: u64,
    pub from: Endpoint,
}

impl Expect {
    pub fn check(&self, done: &WorkDone) -> CmdResult {
        check_received(done, self.len, self.bits, self.from)
    }
}

/// Streams `count` copies of `send` from `sender` into `count` copies of `recv` posted at
/// `receiver` (receives kept ahead of the sends, at most [`recv_room`] posted), polling both
/// ends; every receive must take what `expect` says. Returns the time from the first post
/// to the last receive completion and the bytes the receives took.
pub fn stream(
    sender: &Context,
    receiver: &Context,
    send: Work,
    recv: Work,
    expect: Expect,
    count: u64,
    timeout: Duration,
) -> CmdResult<(Duration, u64)> {
    let mut recvs = Pusher::new(receiver, recv, count, recv_room(receiver));
    let mut sends = Pusher::new(sender, send, count, sender.outstanding_limit());
    let (mut received, mut bytes) = (0, 0);
    let mut stall = Stall::new(timeout);
    let start = Instant::now();
    while received < count || sender.outstanding() > 0 {
        recvs.fill()?;
        sends.fill()?;
        let mut progress = false;
        while let Some(d) = sender.poll()? {
            d.result()?;
            progress = true;
        }
        while let Some(d) = receiver.poll()? {
            bytes += d.result()?;
            expect.check(&d)?;
            received += 1;
            progress = true;
        }
        stall.check(progress, || {
            format!("message stream ({received}/{count} received)")
        })?;
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
    fn a_receive_must_hold_the_whole_message_from_its_sender() {
        let from = Endpoint { node: 1, ctx: 0 };
        assert!(check_received(&recv_done(64, 7, false), 64, 7, from).is_ok());
        assert!(check_received(&recv_done(64, 8, false), 64, 7, from).is_err());
        assert!(check_received(&recv_done(63, 7, false), 64, 7, from).is_err());
        assert!(check_received(&recv_done(64, 7, true), 64, 7, from).is_err());
        let other = Endpoint { node: 1, ctx: 1 };
        assert!(check_received(&recv_done(64, 7, false), 64, 7, other).is_err());
        let not_a_receive = WorkDone {
            message: None,
            ..recv_done(64, 7, false)
        };
        assert!(check_received(&not_a_receive, 64, 7, from).is_err());
        assert_eq!(SMOKE_SIZES, [1416, 1417]);
    }

    #[test]
    fn a_failed_answer_is_told_by_its_bits() {
        assert!(!answer_failed(&recv_done(0, 7, false)));
        assert!(answer_failed(&recv_done(0, 7 | FAILED, false)));
        let not_a_receive = WorkDone {
            message: None,
            ..recv_done(0, 7 | FAILED, false)
        };
        assert!(!answer_failed(&not_a_receive));
    }

    #[test]
    fn a_stall_fails_only_after_its_timeout_without_progress() {
        let mut s = Stall::new(Duration::from_millis(50));
        assert!(s.check(false, || "x".into()).is_ok());
        std::thread::sleep(Duration::from_millis(60));
        assert!(
            s.check(true, || "x".into()).is_ok(),
            "progress restarts the clock"
        );
        assert!(s.check(false, || "x".into()).is_ok());
        std::thread::sleep(Duration::from_millis(60));
        let e = s.check(false, || "the stream".into()).unwrap_err();
        assert!(e.to_string().starts_with("the stream stalled"), "{e}");
    }
}
