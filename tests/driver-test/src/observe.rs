//! Where the time goes, seen from user space: the `mnic:*` trace events (spec §13) through
//! tracefs, and the latency histograms of `MNIC_IOC_CTX_LATENCY` / `MNIC_IOC_DEV_LATENCY`.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::path::{Path, PathBuf};

use mnic::{Access, DmaBuffer, Work};
use mnic_guest_util::nic::{ensure_module, no_stale, open_with_queues, TIMEOUT};
use mnic_guest_util::{check, e, ensure_swap, note, os_err, CaseResult, OnOneCpu, Outcome::*};

const TRACEFS: &str = "/sys/kernel/tracing";

/// A tracefs instance of its own (its own buffer and event switches, so the test neither
/// depends on nor disturbs the global trace), with the `mnic` events enabled; removed on drop.
struct TraceInstance {
    dir: PathBuf,
}

impl TraceInstance {
    fn new(name: &str) -> Result<TraceInstance, String> {
        if !Path::new(TRACEFS).join("instances").exists() {
            let (src, target, fstype) = (c"nodev", CString::new(TRACEFS).unwrap(), c"tracefs");
            // SAFETY: plain mount(2) with NUL-terminated strings that outlive the call and no
            // data argument.
            let rc = unsafe {
                libc::mount(
                    src.as_ptr(),
                    target.as_ptr(),
                    fstype.as_ptr(),
                    0,
                    std::ptr::null(),
                )
            };
            check(rc == 0, || os_err("mount tracefs"))?;
        }
        let dir = Path::new(TRACEFS).join("instances").join(name);
        // A leftover of an earlier run is reused: it has the same switches.
        if !dir.exists() {
            fs::create_dir(&dir).map_err(e("tracefs instance"))?;
        }
        let t = TraceInstance { dir };
        t.write("events/mnic/enable", "1")?;
        t.write("trace", "")?;
        Ok(t)
    }

    fn write(&self, file: &str, value: &str) -> Result<(), String> {
        fs::write(self.dir.join(file), value).map_err(|err| format!("{file}: {err}"))
    }

    /// Stops recording and returns the events recorded, in order.
    fn stop(&self) -> Result<Vec<Event>, String> {
        self.write("events/mnic/enable", "0")?;
        let text = fs::read_to_string(self.dir.join("trace")).map_err(e("trace"))?;
        Ok(text.lines().filter_map(Event::parse).collect())
    }
}

impl Drop for TraceInstance {
    fn drop(&mut self) {
        let _ = self.write("events/mnic/enable", "0");
        let _ = fs::remove_dir(&self.dir);
    }
}

const EVENTS: [&str; 7] = [
    "inval_start",
    "inval_end",
    "sync_post",
    "sync_done",
    "fault_recv",
    "fault_resolved",
    "fault_resumed",
];

/// One line of the `trace` file: `TASK-PID [CPU] FLAGS TIME: NAME: key=value ...`.
#[derive(Debug)]
struct Event {
    name: &'static str,
    fields: HashMap<String, String>,
}

impl Event {
    fn parse(line: &str) -> Option<Event> {
        EVENTS.iter().find_map(|&name| {
            let (_, rest) = line.split_once(&format!(" {name}: "))?;
            let fields = rest
                .split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Some(Event { name, fields })
        })
    }

    fn get(&self, key: &str) -> &str {
        self.fields.get(key).map_or("", String::as_str)
    }

    /// A numeric field (decimal, or hex with 0x); `u64::MAX` if absent or malformed, which no
    /// check below accepts.
    fn num(&self, key: &str) -> u64 {
        let v = self.get(key);
        match v.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => v.parse(),
        }
        .unwrap_or(u64::MAX)
    }

    fn is(&self, name: &str, ctx: &str) -> bool {
        self.name == name && self.get("ctx") == ctx
    }
}

/// The first event after index `from` that `matches`, with its index.
fn find_after(
    events: &[Event],
    from: usize,
    matches: impl Fn(&Event) -> bool,
) -> Option<(usize, &Event)> {
    events
        .iter()
        .enumerate()
        .skip(from + 1)
        .find(|(_, ev)| matches(ev))
}

/// A latency a trace event reports: below 20 s (a SYNC wait ends after at most 2 s).
fn sane_us(ev: &Event) -> Result<(), String> {
    check(ev.num("us") < 20_000_000, || {
        format!("latency out of range: {ev:?}")
    })
}

/// Registration, COPY with device faults, MADV_PAGEOUT of the source, the COPY again
/// (faults on swapped-out pages), and a SYNC: every step shows up in the `mnic` trace events
/// with this context's index and fields that fit together.
pub fn trace_events_show_each_step() -> CaseResult {
    if !ensure_swap()? {
        return Ok(Skip("no swap and no zram".into()));
    }
    // The module's events exist in tracefs only once it is loaded.
    ensure_module()?;
    let trace = TraceInstance::new("mnic-driver-test")?;
    let ctx = open_with_queues()?;
    let me = ctx.info().ctx.to_string();
    let len = 64 << 10;
    let src = DmaBuffer::new(len).map_err(e("buffer"))?;
    let dst = DmaBuffer::new(len).map_err(e("buffer"))?;
    let one_cpu = OnOneCpu::new(0)?;
    src.fill(0x7e);
    let _rs = ctx
        .register(&src, Access::READ)
        .map_err(e("register src"))?;
    let _rd = ctx
        .register(&dst, Access::WRITE)
        .map_err(e("register dst"))?;
    let copy = Work::copy_buffers(&src, 0, &dst, 0, len).map_err(e("work"))?;
    ctx.run(&copy, TIMEOUT).map_err(e("copy"))?;
    // The source: the CPU filled it, on this CPU (see `OnOneCpu`).
    src.pageout().map_err(e("MADV_PAGEOUT"))?;
    let (resident, _) = src.resident_pages().map_err(e("mincore"))?;
    check(resident == 0, || {
        format!("{resident} pages resident after MADV_PAGEOUT")
    })?;
    drop(one_cpu);
    ctx.run(&copy, TIMEOUT).map_err(e("copy after page-out"))?;
    ctx.sync().map_err(e("SYNC"))?;
    let events = trace.stop()?;
    let counts: Vec<String> = EVENTS
        .iter()
        .map(|n| format!("{n} {}", events.iter().filter(|ev| ev.name == *n).count()))
        .collect();
    note(format!("ctx {me}: {}", counts.join(", ")));

    // The fault-around window (debugfs `fault_around_kib`, rounded down to a power of two
    // pages): a resolved fault maps at least its own page and at most the window.
    let knob = format!(
        "/sys/kernel/debug/mnic{}/fault_around_kib",
        ctx.info().minor
    );
    let window_kib: u64 = std::fs::read_to_string(&knob)
        .map_err(|err| format!("read {knob}: {err}"))?
        .trim()
        .parse()
        .map_err(|err| format!("{knob}: {err}"))?;
    let window_pages = (window_kib / 4).max(1);
    let window_pages = 1u64 << window_pages.ilog2();
    let within = |va: u64, buf: &DmaBuffer| buf.va() <= va && va < buf.va() + buf.len() as u64;
    // Faults: every one received is resolved and answered, in that order, under its id.
    let mut faults = 0;
    for (i, recv) in events
        .iter()
        .enumerate()
        .filter(|(_, ev)| ev.is("fault_recv", &me))
    {
        let (va, id) = (recv.num("va"), recv.get("id"));
        // This device is no node of a fabric: no packet raises a fault.
        check(recv.get("remote") == "0", || {
            format!("a local fault traced as a network fault: {recv:?}")
        })?;
        if within(va, &src) || within(va, &dst) {
            faults += 1;
            check(
                recv.get("write") == if within(va, &dst) { "1" } else { "0" },
                || {
                    format!("a fault on the source must be a read, on the destination a write: {recv:?}")
                },
            )?;
        }
        let (j, resolved) = find_after(&events, i, |ev| {
            ev.is("fault_resolved", &me) && ev.get("id") == id
        })
        .ok_or_else(|| format!("no fault_resolved after {recv:?}"))?;
        check(
            resolved.num("va") == va && resolved.get("result") == "0",
            || format!("{resolved:?} for {recv:?}"),
        )?;
        check((1..=window_pages).contains(&resolved.num("window")), || {
            format!("the fault's page is not in its window: {resolved:?}")
        })?;
        let (_, resumed) = find_after(&events, j, |ev| {
            ev.is("fault_resumed", &me) && ev.get("id") == id
        })
        .ok_or_else(|| format!("no fault_resumed after {resolved:?}"))?;
        check(resumed.get("result") == "0", || format!("{resumed:?}"))?;
        check(resumed.num("us") >= resolved.num("us"), || {
            format!("answered before resolved: {resolved:?} {resumed:?}")
        })?;
        sane_us(resumed)?;
    }
    check(faults >= 2, || {
        format!("{faults} faults on the buffers traced for ctx {me}, want both copies'")
    })?;

    // The page-out: an invalidation of the source that cleared leaves, fenced by a SYNC
    // this context posted and someone waited for, then its end, for the same range.
    let mut fenced = 0;
    for (i, start) in events
        .iter()
        .enumerate()
        .filter(|(_, ev)| ev.is("inval_start", &me))
    {
        let (lo, hi) = (start.num("start"), start.num("end"));
        check(lo < hi, || format!("empty range: {start:?}"))?;
        let same = |ev: &Event| {
            ev.is("inval_end", &me)
                && ["handle", "start", "end", "event"]
                    .iter()
                    .all(|k| ev.get(k) == start.get(k))
        };
        let (j, end) =
            find_after(&events, i, same).ok_or_else(|| format!("no inval_end for {start:?}"))?;
        sane_us(end)?;
        if start.num("pages") == 0 || !(within(lo, &src) && within(hi - 1, &src)) {
            continue;
        }
        check(start.get("event") == "CLEAR", || {
            format!("page-out as {start:?}")
        })?;
        let seq = end.get("seq");
        check(seq != "0", || {
            format!("leaves cleared without a SYNC: {start:?} {end:?}")
        })?;
        // Cleared leaves: the callback posts INVALIDATE + SYNC itself, after clearing.
        check(
            events[i..j]
                .iter()
                .any(|ev| ev.is("sync_post", &me) && ev.get("seq") == seq),
            || format!("no sync_post of ctx {me} with seq {seq} for {start:?}"),
        )?;
        let done = events[i..j]
            .iter()
            .find(|ev| ev.name == "sync_done" && ev.get("seq") == seq);
        check(done.is_some(), || {
            format!("no sync_done of seq {seq} before {end:?}")
        })?;
        sane_us(done.unwrap())?;
        fenced += 1;
    }
    check(fenced >= 1, || {
        let mine: Vec<&Event> = events
            .iter()
            .filter(|ev| ev.is("inval_start", &me))
            .collect();
        format!(
            "no fenced invalidation of the paged-out buffer [{:#x}, {:#x}) traced for ctx {me}: {mine:?}",
            src.va(),
            src.va() + len as u64
        )
    })?;

    // The explicit SYNC: posted alone (ctx -1) and waited for.
    let (k, post) = events
        .iter()
        .enumerate()
        .rev()
        .find(|(_, ev)| ev.name == "sync_post" && ev.get("ctx") == "-1" && ev.get("cmds") == "0")
        .ok_or("no bare sync_post for Context::sync")?;
    find_after(&events, k, |ev| {
        ev.name == "sync_done" && ev.get("seq") == post.get("seq")
    })
    .ok_or_else(|| format!("no sync_done for {post:?}"))?;
    no_stale(&ctx)?;
    Ok(Pass)
}

/// `n` SYNCs grow this context's SYNC-wait histogram by exactly `n` (the device's by at least
/// `n`); a COPY's device faults grow the fault histograms by the faults the driver answered.
pub fn latency_histograms_count_syncs_and_faults() -> CaseResult {
    let ctx = open_with_queues()?;
    let before = ctx.latency().map_err(e("CTX_LATENCY"))?;
    let dev_before = ctx.dev_latency().map_err(e("DEV_LATENCY"))?;
    let syncs = 5;
    for _ in 0..syncs {
        ctx.sync().map_err(e("SYNC"))?;
    }
    let after = ctx.latency().map_err(e("CTX_LATENCY"))?;
    let dev_after = ctx.dev_latency().map_err(e("DEV_LATENCY"))?;
    let grew = after.since(&before);
    check(grew.sync_wait.total() == syncs, || {
        format!(
            "{syncs} SYNCs, context histogram grew by {}: {grew:?}",
            grew.sync_wait.total()
        )
    })?;
    let dev_grew = dev_after.since(&dev_before);
    check(dev_grew.sync_wait.total() >= syncs, || {
        format!(
            "{syncs} SYNCs, device histogram grew by {}",
            dev_grew.sync_wait.total()
        )
    })?;

    let len = 64 << 10;
    let src = DmaBuffer::new(len).map_err(e("buffer"))?;
    let dst = DmaBuffer::new(len).map_err(e("buffer"))?;
    src.fill(0x21);
    let _rs = ctx
        .register(&src, Access::READ)
        .map_err(e("register src"))?;
    let _rd = ctx
        .register(&dst, Access::WRITE)
        .map_err(e("register dst"))?;
    let stats0 = ctx.ctx_stats().map_err(e("stats"))?;
    let lat0 = ctx.latency().map_err(e("CTX_LATENCY"))?;
    let dev0 = ctx.dev_latency().map_err(e("DEV_LATENCY"))?;
    let copy = Work::copy_buffers(&src, 0, &dst, 0, len).map_err(e("work"))?;
    ctx.run(&copy, TIMEOUT).map_err(e("copy"))?;
    let stats = ctx.ctx_stats().map_err(e("stats"))?;
    let lat = ctx.latency().map_err(e("CTX_LATENCY"))?;
    let dev = ctx.dev_latency().map_err(e("DEV_LATENCY"))?;
    let answered = (stats.resumes + stats.aborts) - (stats0.resumes + stats0.aborts);
    check(answered > 0, || "the COPY took no device fault".into())?;
    let counted = lat.since(&lat0).fault.total();
    check(counted == answered, || {
        format!("{answered} faults answered, context fault histogram grew by {counted}")
    })?;
    let dev_counted = dev.since(&dev0).fault.total();
    check(dev_counted >= answered, || {
        format!("{answered} faults answered, device fault histogram grew by {dev_counted}")
    })?;
    // The histogram and the counters count the same waits.
    check(lat.sync_wait.total() == stats.sync_waits, || {
        format!(
            "{} SYNC waits counted, histogram holds {}",
            stats.sync_waits,
            lat.sync_wait.total()
        )
    })?;
    note(format!(
        "fault p50 below {:?} us, SYNC wait p50 below {:?} us",
        lat.fault.quantile_bucket(0.5).and_then(|b| b.end_us),
        lat.sync_wait.quantile_bucket(0.5).and_then(|b| b.end_us)
    ));
    no_stale(&ctx)?;
    Ok(Pass)
}
