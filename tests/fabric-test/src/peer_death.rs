//! A peer NIC that dies in the middle of a transfer (`docs/fabric.md` 14.5, 14.13): the
//! target's device engine is SIGKILLed (`mnic-vm run --kill-device-after N`) while the
//! initiator streams PUTs into its window. The PUT the death catches fails with
//! `PEER_GONE` within the transport's budget and writes nothing outside its own range;
//! later PUTs and GETs to that node fail the same way and write nothing; the initiator's
//! NIC keeps working.
//!
//! The roles are the reverse of the other cases': `mnic-vm` kills the engine of the first
//! NIC, so the target (the NIC that dies) is `/dev/mnic0` and the initiator `/dev/mnic1`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use mnic::{Access, Context, Error, RemoteError, Work, WorkDone};
use mnic_abi::fabric::{REPLY_TIMEOUT_MS, RETRIES, RTO_MAX_MS, RTO_MS};
use mnic_guest_util::nic;
use mnic_guest_util::{
    check, e, is_pattern, note, word, CaseResult, KlogWindow, Map, Outcome, PAGE,
};

use crate::pair::*;

/// The NIC that dies (the first: the one `mnic-vm` kills) holds the target window...
const TARGET_NIC: &str = INITIATOR;
/// ... and the initiator is the other one.
const INITIATOR_NIC: &str = TARGET;

/// The environment variable that tells the case the boot kills `/dev/mnic0`'s engine: the
/// boot's `--kill-device-after` seconds, which `mnic-vm` puts on the kernel command line
/// (the kernel hands it to init's environment). Without it the case is skipped, since the
/// peer would never die.
pub const KILL_ENV: &str = "MNIC_KILL_DEVICE_AFTER";
/// A PUT must have failed by this many seconds of guest uptime after the planned kill.
const DIES_WITHIN: f64 = 90.0;
/// Added to the specification's bounds: a TCG guest on a shared host may wake late. These
/// are correctness bounds (the failure comes, and from the transport's timers), not
/// timings.
const SLACK: Duration = Duration::from_secs(5);
/// How long the case waits for one completion: beyond every bound it checks, so a late
/// failure is measured rather than cut off.
const WAIT: Option<Duration> = Some(Duration::from_secs(30));
/// One PUT of the stream: 64 target pages, about 190 packets (more than the 64 an
/// initiator keeps in flight).
const CHUNK: usize = 64 * PAGE;
/// The window: PUT `i` goes to slot `i % 2`; the third slot is no PUT's destination.
const WINDOW: usize = 3 * CHUNK;
/// PUTs posted ahead: the context runs its items one at a time, so with two posted the
/// device always has a PUT to run while the case checks the last one, and the kill lands
/// in the middle of a PUT.
const AHEAD: usize = 2;
/// PUTs posted to the dead node after the failure and the one queued behind it.
const LATER_PUTS: usize = 3;

/// The window's own pattern.
const WINDOW_SEED: u64 = 140;
/// The PUT sources' patterns: PUT `i` sends `SOURCE_SEEDS[i % 3]`, so the PUTs just before
/// and after one into the same slot, and the one into the other slot, each send other bytes.
const SOURCE_SEEDS: [u64; 3] = [141, 142, 143];
const GET_DEST_SEED: u64 = 144;
const GUARD_SEED: u64 = 145;
const COPY_SEED: u64 = 146;

/// Pattern PUT `i` sends.
fn seed(i: usize) -> u64 {
    SOURCE_SEEDS[i % SOURCE_SEEDS.len()]
}

/// Window offset (and source offset) of PUT `i`.
fn slot(i: usize) -> usize {
    (i % 2) * CHUNK
}

/// How long the transport keeps retransmitting to a silent peer before it is gone (14.5):
/// `RETRIES` retransmissions after the first send, each wait doubling from `RTO` up to
/// `RTO_MAX`, and the last wait (2.13 s with the defaults).
fn retry_budget() -> Duration {
    let (mut wait, mut total) = (RTO_MS, 0);
    for _ in 0..=RETRIES {
        total += wait;
        wait = (wait * 2).min(RTO_MAX_MS);
    }
    Duration::from_millis(total)
}

/// Guest uptime in seconds.
fn uptime() -> Result<f64, String> {
    let text = std::fs::read_to_string("/proc/uptime").map_err(e("/proc/uptime"))?;
    text.split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("/proc/uptime: {text:?}"))
}

/// Posts `work` on `ctx` with a notification; returns its tag.
fn post(ctx: &Context, work: mnic::Result<Work>, what: &str) -> Result<u64, String> {
    let work = work.map_err(|err| format!("{what}: {err}"))?;
    ctx.post(&work.notify(true))
        .map_err(|err| format!("{what}: post: {err}"))
}

/// Waits for the completion of the item tagged `tag` (PUTs and GETs complete in posting
/// order), whatever its status.
fn completion(ctx: &Context, tag: u64, what: &str) -> Result<WorkDone, String> {
    let d = ctx
        .wait(WAIT)
        .map_err(|err| format!("{what}: no completion: {err}"))?;
    check(d.tag == tag, || {
        format!(
            "{what}: the next completion is tag {:#x}, want {tag:#x}",
            d.tag
        )
    })?;
    Ok(d)
}

/// The completion's remote error, if it failed with one.
fn remote_error(d: &WorkDone) -> Option<RemoteError> {
    d.error.and_then(|err| err.remote())
}

/// `d`, which took `took`, failed with `PEER_GONE` within `bound`.
fn gone_within(d: &WorkDone, took: Duration, bound: Duration, what: &str) -> Result<(), String> {
    check(remote_error(d) == Some(RemoteError::PeerGone), || {
        format!("{what}: completed {:?}, want PEER_GONE", d.result())
    })?;
    check(took < bound, || {
        format!("{what}: PEER_GONE only after {took:?} (bound {bound:?})")
    })
}

/// Posts a PUT or GET to the dead node and checks that it fails with `PEER_GONE` within
/// `bound`; returns how long it took.
fn fails_gone(
    ctx: &Context,
    work: mnic::Result<Work>,
    bound: Duration,
    what: &str,
) -> Result<Duration, String> {
    let t = Instant::now();
    let tag = post(ctx, work, what)?;
    let d = completion(ctx, tag, what)?;
    let took = t.elapsed();
    gone_within(&d, took, bound, what)?;
    Ok(took)
}

/// Checks that every 8-byte word of `data`, which sits at window offset `off`, holds
/// pattern `old` or pattern `new`: a PUT cut short writes whole packets of its own bytes
/// and nothing else. Returns how many bytes hold `new`.
fn old_or_new(data: &[u8], off: usize, old: u64, new: u64) -> Result<usize, String> {
    let mut landed = 0;
    for (i, w) in data.chunks_exact(8).enumerate() {
        let at = off + i * 8;
        let v = u64::from_le_bytes(w.try_into().map_err(e("word"))?);
        if v == word(at, new) {
            landed += 8;
        } else if v != word(at, old) {
            return Err(format!(
                "window byte {at:#x} holds {v:#018x}: neither the bytes before the failed PUT \
                 nor its own"
            ));
        }
    }
    Ok(landed)
}

/// The first and last word of every page of `[off, off + CHUNK)` hold pattern `seed`: a
/// cheap look after each PUT of the stream (every word is checked once a PUT has failed).
fn sampled(window: &Map, off: usize, seed: u64) -> Result<(), String> {
    for page in (off..off + CHUNK).step_by(PAGE) {
        for at in [page, page + PAGE - 8] {
            let got = window.read(at, 8);
            check(got == word(at, seed).to_le_bytes(), || {
                format!("window byte {at:#x} is not the PUT's ({got:02x?})")
            })?;
        }
    }
    Ok(())
}

/// The peer NIC dies mid-stream (explicit case, run in the boot that kills `/dev/mnic0`'s
/// engine; skipped without [`KILL_ENV`]). PUTs of 256 KiB from `/dev/mnic1` into a window
/// on `/dev/mnic0`, two posted ahead (the device always has one running), each sampled in
/// the window, until one fails (at most [`DIES_WITHIN`] s after the planned kill; the note
/// says how much of the failed PUT had landed). Then: it failed with `PEER_GONE`, the only
/// status the specification gives a peer that stops answering (the transport's retry budget
/// running out, or `REPLY_TIMEOUT_MS` of silence when every packet was taken and none
/// answered), within the larger of those two after the last success; its `fault_va` lies
/// in its range; every word of its range holds the bytes before it or its own, at least as
/// many of its own as the completion confirmed. The PUT queued behind it, three more PUTs
/// and a GET each fail `PEER_GONE` within the retry budget (no packet of theirs is taken,
/// so only the budget can end them; `NO_ROUTE` would be wrong, the node stays in the peer
/// map) and write nothing: the rest of the window keeps the last PUT's bytes or its own,
/// the GET's destination its own. The PUT sources and a registered buffer no item names
/// are unchanged. The driver then declares `/dev/mnic0` dead (the kill really was the
/// target's), and `/dev/mnic1` still runs a COPY with the right bytes and counts no stale
/// access and no oracle violation.
pub fn peer_nic_dies() -> CaseResult {
    let kill_after: f64 = match std::env::var(KILL_ENV) {
        Err(_) => {
            return Ok(Outcome::Skip(format!(
                "no peer dies here: needs a boot that kills /dev/mnic0's engine (mnic-vm run \
                 --kill-device-after N) and {KILL_ENV}=N (boot fabric-peerkill)"
            )))
        }
        Ok(v) => v
            .parse()
            .map_err(|_| format!("{KILL_ENV}={v:?} is not a number of seconds"))?,
    };
    let win = KlogWindow::new("peer_nic_dies", false)?;
    let p = pair_on(INITIATOR_NIC, TARGET_NIC)?;
    let w = Window::new(&p.target, WINDOW, Access::READ_WRITE, Some(WINDOW_SEED))?;
    // Each source holds its pattern at the window's offsets (PUT `i` sends `[slot(i),
    // slot(i) + CHUNK)` of source `i % 3` to the same offsets of the window).
    let srcs = SOURCE_SEEDS
        .iter()
        .map(|&s| local(&p.init, 2 * CHUNK, Access::READ, s))
        .collect::<Result<Vec<_>, _>>()?;
    let (back, _rb) = local(&p.init, CHUNK, Access::WRITE, GET_DEST_SEED)?;
    let (guard, _rg) = local(&p.init, CHUNK, Access::READ_WRITE, GUARD_SEED)?;
    let put = |i: usize| {
        let src = &srcs[i % srcs.len()].0;
        Work::put_va(src.at(slot(i)), &w.region, slot(i) as u64, CHUNK as u32)
    };
    let post_put = |i: usize| post(&p.init, put(i), &format!("PUT {i}"));

    // The stream, until the death catches a PUT.
    let deadline = kill_after + DIES_WITHIN;
    let mut tags = (0..AHEAD)
        .map(post_put)
        .collect::<Result<VecDeque<_>, _>>()?;
    let mut landed = 0usize;
    let mut last_ok: Option<Instant> = None;
    let (failed, since_ok) = loop {
        let now = uptime()?;
        check(now < deadline, || {
            format!(
                "{landed} PUTs and none failed by {now:.1} s of uptime ({DIES_WITHIN} s after \
                 the kill planned at {kill_after} s): /dev/mnic0's engine was not killed"
            )
        })?;
        let tag = tags.pop_front().ok_or("no PUT posted")?;
        let d = completion(&p.init, tag, &format!("PUT {landed}"))?;
        let done = Instant::now();
        if d.error.is_some() {
            let Some(ok) = last_ok else {
                return Err(format!(
                    "the first PUT failed ({:?}) at {now:.1} s of uptime: the peer died \
                     before the stream began (kill planned at {kill_after} s)",
                    d.result()
                ));
            };
            break (d, done - ok);
        }
        check(d.bytes == CHUNK as u64, || {
            format!("PUT {landed}: completion says {} bytes", d.bytes)
        })?;
        sampled(&w.map, slot(landed), seed(landed))
            .map_err(|m| format!("after PUT {landed}: {m}"))?;
        landed += 1;
        last_ok = Some(done);
        tags.push_back(post_put(landed + AHEAD - 1)?);
    };
    let failed_at = Instant::now();

    // The PUT the death caught.
    let k = landed;
    let budget = retry_budget();
    let reply_timeout = Duration::from_millis(REPLY_TIMEOUT_MS);
    let bound = budget.max(reply_timeout) + SLACK;
    gone_within(
        &failed,
        since_ok,
        bound,
        &format!("PUT {k} (the first to fail), timed from the last success"),
    )?;
    let range = w.map.va() + slot(k) as u64..w.map.va() + (slot(k) + CHUNK) as u64;
    check(range.contains(&failed.fault_va), || {
        format!(
            "the failed PUT's fault_va {:#x} is outside its range {range:x?}",
            failed.fault_va
        )
    })?;

    // The PUT queued behind it starts only now: it fails within the budget.
    let tag = tags
        .pop_front()
        .ok_or("no PUT queued behind the failed one")?;
    let queued = completion(&p.init, tag, &format!("PUT {}", k + 1))?;
    let t_queued = failed_at.elapsed();
    gone_within(
        &queued,
        t_queued,
        budget + SLACK,
        &format!("PUT {} (queued behind the failed one)", k + 1),
    )?;

    // Nothing but the failed PUT's own bytes landed: its slot holds, word by word, the
    // bytes before it (PUT k - 2's, or the window's) or its own, and the other slot PUT
    // k - 1's (PUT k + 1 sends other bytes there); the third slot is the window's.
    let window = w.map.read(0, WINDOW);
    let before = if k >= 2 { seed(k - 2) } else { WINDOW_SEED };
    let mine = &window[slot(k)..slot(k) + CHUNK];
    let written = old_or_new(mine, slot(k), before, seed(k))?;
    check(written as u64 >= failed.bytes, || {
        format!(
            "the failed PUT confirmed {} bytes but only {written} of its bytes are in the window",
            failed.bytes
        )
    })?;
    let other = slot(k + 1);
    is_pattern(&window[other..other + CHUNK], other, seed(k - 1))
        .map_err(|m| format!("the other slot after PUT {} failed: {m}", k + 1))?;
    is_pattern(&window[2 * CHUNK..], 2 * CHUNK, WINDOW_SEED)
        .map_err(|m| format!("window outside the PUTs' slots: {m}"))?;

    // Later items to the dead node: each fails the same way and writes nothing.
    let mut later = vec![t_queued];
    for i in k + 2..k + 2 + LATER_PUTS {
        let what = format!("PUT {i} (after the failure)");
        later.push(fails_gone(&p.init, put(i), budget + SLACK, &what)?);
    }
    let get = Work::get_va(back.va(), &w.region, 0, CHUNK as u32);
    let t_get = fails_gone(&p.init, get, budget + SLACK, "GET after the failure")?;
    back.check(0, CHUNK, GET_DEST_SEED)
        .map_err(|m| format!("the failed GET's destination changed: {m}"))?;
    same(
        &w.map.read(0, WINDOW),
        &window,
        "window after the later items",
    )?;
    for (i, (src, _)) in srcs.iter().enumerate() {
        src.check(0, 2 * CHUNK, SOURCE_SEEDS[i])
            .map_err(|m| format!("PUT source {i} changed: {m}"))?;
    }
    guard
        .check(0, CHUNK, GUARD_SEED)
        .map_err(|m| format!("a buffer no item names changed: {m}"))?;

    // The dead NIC is the target's: the driver finds it dead at the next invalidation of
    // the window (its SYNC never completes), which the case makes now that the window's
    // bytes are checked.
    let t = Instant::now();
    while !matches!(p.target.ctx_stats(), Err(Error::DeviceGone { .. })) {
        check(t.elapsed() < Duration::from_secs(30), || {
            format!("{TARGET_NIC} still answers 30 s after its PUT failed PEER_GONE")
        })?;
        w.map.madvise(0, PAGE, libc::MADV_DONTNEED)?;
        std::thread::sleep(Duration::from_millis(200));
    }
    let declared = win
        .clean()?
        .into_iter()
        .find(|l| l.contains("not responding"))
        .ok_or_else(|| format!("no 'not responding' for {TARGET_NIC} in the kernel log"))?;

    // The surviving NIC works and saw no stale access.
    let (csrc, _rcs) = local(&p.init, CHUNK, Access::READ, COPY_SEED)?;
    let (cdst, _rcd) = local(&p.init, CHUNK, Access::WRITE, 0)?;
    let copied = p
        .init
        .run(
            &Work::copy(csrc.va(), cdst.va(), CHUNK as u32).map_err(e("COPY"))?,
            WAIT,
        )
        .map_err(|err| format!("COPY on {INITIATOR_NIC}: {err}"))?;
    check(copied == CHUNK as u64, || {
        format!("COPY on {INITIATOR_NIC}: completion says {copied} bytes")
    })?;
    cdst.check(0, CHUNK, COPY_SEED)
        .map_err(|m| format!("COPY on {INITIATOR_NIC}: {m}"))?;
    nic::no_stale(&p.init).map_err(|m| format!("{INITIATOR_NIC}: {m}"))?;
    note(format!(
        "{landed} PUTs of {CHUNK} bytes landed; the next failed PEER_GONE {since_ok:.2?} after \
         the last success (retry budget {budget:.2?}, reply timeout {reply_timeout:.2?}) with \
         {} bytes confirmed and {written} of its bytes in the window; later PUTs PEER_GONE in \
         {later:.2?} (the first was queued behind it), a GET in {t_get:.2?}; kernel: {}",
        failed.bytes,
        declared.trim()
    ));
    Ok(Outcome::Pass)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_budget_is_the_documented_figure() {
        // docs/fabric.md 14.5: 10+20+40+80+160+320+500+500+500 ms.
        assert_eq!(retry_budget(), Duration::from_millis(2130));
    }

    #[test]
    fn a_cut_short_put_is_old_or_new_word_by_word() {
        let (old, new, off) = (1, 2, 4096);
        let mut data: Vec<u8> = (off..off + 64)
            .step_by(8)
            .flat_map(|o| word(o, old).to_le_bytes())
            .collect();
        assert_eq!(old_or_new(&data, off, old, new), Ok(0));
        data[16..24].copy_from_slice(&word(off + 16, new).to_le_bytes());
        assert_eq!(old_or_new(&data, off, old, new), Ok(8));
        data[40] ^= 1;
        assert!(old_or_new(&data, off, old, new)
            .unwrap_err()
            .contains("0x1028"));
    }

    #[test]
    fn neighbouring_puts_send_other_bytes() {
        for k in 2..10 {
            // The same slot before and after, and the other slot on each side.
            assert_eq!(slot(k), slot(k - 2));
            assert_ne!(seed(k), seed(k - 2));
            assert_ne!(seed(k + 1), seed(k - 1));
        }
    }
}
