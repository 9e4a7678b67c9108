//! What the tagged-message cases share (SEND/RECV, `docs/fabric.md` 14.14): the sender is
//! the pair's initiator (`/dev/mnic0`), the receiver its target (`/dev/mnic1`); waiting for
//! one item among completions that come out of order; driving a stream of sends and
//! receives on both contexts at once; and the checks of a received message.

use std::thread;
use std::time::{Duration, Instant};

use mnic::abi::work::POSTED_MAX;
use mnic::{Context, Endpoint, Work, WorkDone};
use mnic_guest_util::nic::TIMEOUT;
use mnic_guest_util::{check, e, is_pattern, Map};

/// Largest eager message (`EAGER_MAX`): one byte more goes by rendezvous.
pub const EAGER_MAX: usize = mnic::abi::fabric::EAGER_MAX;
/// A receive mask that wants every bit equal.
pub const EXACT: u64 = !0;
/// What the receive buffers hold around the bytes a message may write.
pub const GUARD: u64 = 0x6b;

/// The endpoint of `ctx` (its device is a node of the fabric: `pair` checked).
pub fn endpoint(ctx: &Context) -> Result<Endpoint, String> {
    ctx.endpoint()
        .ok_or_else(|| "a context of the fabric without an endpoint".to_string())
}

/// Completions of one context consumed while waiting for another item of it (a RECV
/// completes out of work-queue order, so the one a case waits for may not be next).
pub struct Waiter<'a> {
    ctx: &'a Context,
    early: Vec<WorkDone>,
}

impl<'a> Waiter<'a> {
    pub fn new(ctx: &'a Context) -> Self {
        Waiter {
            ctx,
            early: Vec::new(),
        }
    }

    /// The completion of the item tagged `tag`, waiting for it if it has not come yet.
    pub fn take(&mut self, tag: u64) -> Result<WorkDone, String> {
        if let Some(i) = self.early.iter().position(|d| d.tag == tag) {
            return Ok(self.early.remove(i));
        }
        loop {
            let d = self.ctx.wait(TIMEOUT).map_err(e("wait"))?;
            if d.tag == tag {
                return Ok(d);
            }
            self.early.push(d);
        }
    }

    /// Posts `work` and returns its tag.
    pub fn post(&self, work: mnic::Result<Work>) -> Result<u64, String> {
        self.ctx.post(&work.map_err(e("build"))?).map_err(e("post"))
    }

    /// Nothing completed on this context within `wait` (beyond what was consumed).
    pub fn quiet_for(&mut self, wait: Duration, what: &str) -> Result<(), String> {
        thread::sleep(wait);
        match self.ctx.poll().map_err(e("poll"))? {
            None if self.early.is_empty() => Ok(()),
            got => Err(format!("{what}: completed early: {got:?} {:?}", self.early)),
        }
    }
}

/// Posts `recvs` on `receiver` and `sends` on `sender`, each in order, receives ahead of
/// sends and never more receives posted than the device keeps (`POSTED_MAX`) or more items
/// outstanding than a queue allows, polling both contexts until every item has completed.
/// Returns both lists of completions in the order they came.
pub fn exchange(
    sender: &Context,
    receiver: &Context,
    sends: &[Work],
    recvs: &[Work],
) -> Result<(Vec<WorkDone>, Vec<WorkDone>), String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let recv_room = receiver.outstanding_limit().min(POSTED_MAX as u32);
    let (mut si, mut ri) = (0, 0);
    let (mut sent, mut received) = (Vec::new(), Vec::new());
    while sent.len() < sends.len() || received.len() < recvs.len() {
        while ri < recvs.len() && receiver.outstanding() < recv_room {
            receiver.push(&recvs[ri]).map_err(e("push RECV"))?;
            ri += 1;
        }
        receiver.ring().map_err(e("ring"))?;
        while si < sends.len() && sender.outstanding() < sender.outstanding_limit() {
            sender.push(&sends[si]).map_err(e("push SEND"))?;
            si += 1;
        }
        sender.ring().map_err(e("ring"))?;
        let mut progress = false;
        while let Some(d) = sender.poll().map_err(e("poll"))? {
            sent.push(d);
            progress = true;
        }
        while let Some(d) = receiver.poll().map_err(e("poll"))? {
            received.push(d);
            progress = true;
        }
        if !progress {
            check(Instant::now() < deadline, || {
                format!(
                    "after 120 s: {}/{} sends and {}/{} receives completed",
                    sent.len(),
                    sends.len(),
                    received.len(),
                    recvs.len()
                )
            })?;
            thread::sleep(Duration::from_micros(50));
        }
    }
    Ok((sent, received))
}

/// Checks a SEND's completion: succeeded with `len` bytes.
pub fn sent_ok(d: &WorkDone, len: usize, what: &str) -> Result<(), String> {
    let bytes = d.result().map_err(|err| format!("{what}: SEND: {err}"))?;
    check(bytes == len as u64, || {
        format!("{what}: SEND completed with {bytes} bytes, want {len}")
    })
}

/// What a receive should report: the message's bits, its sender, the bytes delivered and
/// whether it was cut.
pub struct Want {
    pub bits: u64,
    pub from: Endpoint,
    pub bytes: usize,
    pub truncated: bool,
}

/// Checks a RECV's completion against `want`.
pub fn received(d: &WorkDone, want: &Want, what: &str) -> Result<(), String> {
    let bytes = d.result().map_err(|err| format!("{what}: RECV: {err}"))?;
    let msg = d
        .message
        .ok_or_else(|| format!("{what}: RECV completed without a message"))?;
    check(
        msg.match_bits == want.bits && msg.sender == want.from,
        || {
            format!(
                "{what}: received bits {:#x} from {}, want {:#x} from {}",
                msg.match_bits, msg.sender, want.bits, want.from
            )
        },
    )?;
    check(
        bytes == want.bytes as u64 && msg.truncated == want.truncated,
        || {
            format!(
                "{what}: {bytes} bytes delivered (truncated: {}), want {} (truncated: {})",
                msg.truncated, want.bytes, want.truncated
            )
        },
    )
}

/// `map[off..off + len]` holds the pattern of a message sent from offset `src_off` of a
/// mapping filled with `seed`, and the page before and after it still hold [`GUARD`].
pub fn holds_message(
    map: &Map,
    off: usize,
    len: usize,
    src_off: usize,
    seed: u64,
    what: &str,
) -> Result<(), String> {
    let got = map.read(off, len);
    let want = mnic_guest_util::pattern(src_off, len, seed);
    crate::pair::same(&got, &want, what)?;
    guarded(map, off, len, what)
}

/// The bytes around `[off, off + len)` of `map` (up to a page each side) hold [`GUARD`].
pub fn guarded(map: &Map, off: usize, len: usize, what: &str) -> Result<(), String> {
    let before = off.min(mnic_guest_util::PAGE);
    is_pattern(&map.read(off - before, before), off - before, GUARD)
        .map_err(|m| format!("{what}: before the buffer: {m}"))?;
    let end = off + len;
    let after = (map.len - end).min(mnic_guest_util::PAGE);
    is_pattern(&map.read(end, after), end, GUARD)
        .map_err(|m| format!("{what}: after the buffer: {m}"))
}
