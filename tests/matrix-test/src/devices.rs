//! More than one NIC (boot `twonic`, `mnic-vm run --devices 2`): each device keeps its own
//! translations of the same memory, and every invalidation must reach all of them.

use std::fs;
use std::thread;
use std::time::Duration;

use mnic::{Access, Context, Pattern, Traffic};
use mnic_abi as abi;

use crate::util::*;
use mnic_guest_util::nic::Nic;

const NICS: [&str; 2] = ["/dev/mnic0", "/dev/mnic1"];

fn open_nic(path: &str) -> Result<Nic, String> {
    check(fs::metadata(path).is_ok(), || {
        format!("{path} missing: this case needs two NICs (mnic-vm run --devices 2)")
    })?;
    let ctx = mnic_guest_util::nic::open_path(path)?;
    ctx.setup_queues(mnic_guest_util::nic::queue_config())
        .map_err(e("setup_queues"))?;
    Ok(ctx)
}

fn completed(ctx: &Context) -> Result<u64, String> {
    Ok(ctx
        .dev_stats()
        .map_err(e("DEV_STATS"))?
        .get(abi::counter::WORK_COMPLETED))
}

/// One buffer registered on two NICs by one process: both devices read and write it; a munmap
/// of part of it removes that part from both devices' tables before it returns, and both then
/// refuse it; both generators run over it while it is swapped out, with no stale access on
/// either device; work on one device never shows up in the other's counters.
pub fn two_nics() -> CaseResult {
    ensure_module()?;
    let a = open_nic(NICS[0])?;
    let b = open_nic(NICS[1])?;
    let len = 16 * PAGE;
    let m = Map::anon(len)?;
    m.fill(0, len, 70);
    let ra = reg_raw(&a, m.va(), len, Access::READ_WRITE)?;
    let rb = reg_raw(&b, m.va(), len, Access::READ_WRITE)?;
    let b_before = completed(&b)?;
    is_pattern(&dev_read(&a, m.va(), len).map_err(e("NIC 0 read"))?, 0, 70)?;
    dev_write(&a, m.va(), &pattern(0, 8 * PAGE, 71)).map_err(e("NIC 0 write"))?;
    check(completed(&b)? == b_before, || {
        "NIC 0's work counted by NIC 1".into()
    })?;
    is_pattern(
        &dev_read(&b, m.va(), 8 * PAGE).map_err(e("NIC 1 read"))?,
        0,
        71,
    )?;
    dev_write(&b, m.at(8 * PAGE), &pattern(8 * PAGE, 8 * PAGE, 72)).map_err(e("NIC 1 write"))?;
    m.check(0, 8 * PAGE, 71)?;
    m.check(8 * PAGE, 8 * PAGE, 72)?;
    is_pattern(
        &dev_read(&a, m.at(8 * PAGE), 8 * PAGE).map_err(e("NIC 0 read back"))?,
        8 * PAGE,
        72,
    )?;
    for (name, ctx) in [("NIC 0", &a), ("NIC 1", &b)] {
        let q = query(ctx, m.va(), len)?;
        check(q.valid() == 16, || format!("{name}: {q:?} before munmap"))?;
    }
    m.munmap(4 * PAGE, 4 * PAGE)?;
    for (name, ctx) in [("NIC 0", &a), ("NIC 1", &b)] {
        let hole = query(ctx, m.at(4 * PAGE), 4 * PAGE)?.valid();
        check(hole == 0, || {
            format!("{name}: {hole} entries of the unmapped pages survived munmap")
        })?;
        let rest = query(ctx, m.va(), len)?.valid();
        check(rest == 12, || {
            format!("{name}: {rest} entries outside the hole, want 12")
        })?;
        want_abort(
            dev_read(ctx, m.at(4 * PAGE), PAGE),
            &[libc::EFAULT],
            "device read of unmapped memory",
        )?;
    }
    drop((ra, rb));
    // Both generators over one buffer while it is swapped out under them (rate-limited:
    // they run for at least 0.8 s, longer than the page-outs).
    let swap = ensure_swap()?;
    let t = Map::anon(1 << 20)?;
    t.fill(0, t.len, 73);
    let _ta = reg_raw(&a, t.va(), t.len, Access::READ_WRITE)?;
    let _tb = reg_raw(&b, t.va(), t.len, Access::READ_WRITE)?;
    for (i, ctx) in [&a, &b].into_iter().enumerate() {
        let w = Traffic::new(t.va(), t.len as u32)
            .op_size(4096)
            .ops(4000)
            .rate(5000)
            .pattern(Pattern::RandomRw)
            .seed(i as u64)
            .build()
            .map_err(e("traffic"))?;
        ctx.post(&w).map_err(e("post"))?;
    }
    let (sa, sb) = (stats(&a)?, stats(&b)?);
    let mut pageouts = 0;
    if swap {
        for _ in 0..6 {
            thread::sleep(Duration::from_millis(100));
            t.madvise(0, t.len, libc::MADV_PAGEOUT)?;
            pageouts += 1;
        }
    }
    for (name, ctx) in [("NIC 0", &a), ("NIC 1", &b)] {
        ctx.wait(TIMEOUT)
            .map_err(e("traffic wait"))?
            .result()
            .map_err(|err| format!("{name} traffic: {err}"))?;
    }
    let (da, db) = (stats(&a)?, stats(&b)?);
    if swap {
        check(
            da.invalidations > sa.invalidations && db.invalidations > sb.invalidations,
            || "a page-out under traffic did not reach both devices' tables".into(),
        )?;
    }
    note(format!(
        "under {pageouts} page-outs: NIC 0 {} faults / {} invalidations, NIC 1 {} / {}",
        da.faults - sa.faults,
        da.invalidations - sa.invalidations,
        db.faults - sb.faults,
        db.invalidations - sb.invalidations
    ));
    no_stale(&a)?;
    no_stale(&b)?;
    Ok(Outcome::Pass)
}
