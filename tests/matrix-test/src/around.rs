//! Fault-around: a device fault brings in its window of neighbours (swap read-ahead for the
//! device), and around a write fault maps writable only what the process owns alone.

use crate::util::*;
use mnic::Access;

/// The window these cases rely on: the driver's fault-around window is at least this large
/// (debugfs `fault_around_kib`, default larger) and aligned to its size, so a registration of
/// this size at this alignment lies inside one window.
const WINDOW: usize = 64 << 10;

/// A write fault over swapped-out memory faults its swapped-out neighbours back in (one write
/// fault, every entry of the window present), and after fork, where those neighbours are
/// COW-shared with the child, maps them read-only: a device write to one faults again and
/// breaks COW, so the child never sees the parent's device writes.
pub fn write_fault_around_cow() -> CaseResult {
    if !ensure_swap()? {
        return Ok(Outcome::Skip("no swap".into()));
    }
    let ctx = ctxq()?;
    let pages = WINDOW / PAGE;
    // Twice the window, so that a window-aligned piece of it exists.
    let m = Map::anon(2 * WINDOW)?;
    let off = (WINDOW - m.va() as usize % WINDOW) % WINDOW;
    let page = |i: usize| off + i * PAGE;
    m.fill(off, WINDOW, 40);
    let _r = reg_raw(&ctx, m.at(off), WINDOW, Access::READ_WRITE)?;

    // 1. No fork: the process owns every page alone.
    m.madvise(off, WINDOW, libc::MADV_PAGEOUT)?;
    let swapped = m.resident(off, WINDOW)?.iter().filter(|r| !**r).count();
    if swapped < pages / 2 {
        return Ok(Outcome::Skip(format!(
            "MADV_PAGEOUT swapped out only {swapped} of {pages} pages"
        )));
    }
    dev_write(&ctx, m.at(page(3)), &pattern(page(3), PAGE, 41)).map_err(e("device write"))?;
    let q = query(&ctx, m.at(off), WINDOW)?;
    check(q.valid() == pages as u64, || {
        format!(
            "{} of {pages} entries after a device write fault over {swapped} swapped-out pages \
             (the window was not faulted in)",
            q.valid()
        )
    })?;
    note(format!(
        "no fork: {swapped} pages swapped out; one write fault: {} entries, {} writable",
        q.valid(),
        q.writable
    ));
    m.check(page(3), PAGE, 41)
        .map_err(|w| format!("device write not in memory: {w}"))?;
    m.check(off, 3 * PAGE, 40)
        .and_then(|()| m.check(page(4), WINDOW - 4 * PAGE, 40))
        .map_err(|w| format!("a neighbour faulted back in lost its data: {w}"))?;

    // 2. Swapped out again, then fork: the swapped pages are shared with the child.
    m.madvise(off, WINDOW, libc::MADV_PAGEOUT)?;
    let m2 = &m;
    fork_pair(
        |link| {
            link.recv()?; // the parent has done its device writes
            m2.check(page(3), PAGE, 41)
                .and_then(|()| m2.check(off, 3 * PAGE, 40))
                .and_then(|()| m2.check(page(4), WINDOW - 4 * PAGE, 40))
                .map_err(|w| format!("child sees the parent's device writes: {w}"))?;
            link.send(1);
            Ok(())
        },
        |link, _pid| {
            dev_write(&ctx, m.at(page(5)), &pattern(page(5), PAGE, 42))
                .map_err(e("device write after fork"))?;
            let window = query(&ctx, m.at(off), WINDOW)?;
            let neighbour = query(&ctx, m.at(page(6)), PAGE)?;
            note(format!(
                "after fork: one write fault: {} entries, {} writable",
                window.valid(),
                window.writable
            ));
            check(neighbour.writable == 0, || {
                "a COW-shared neighbour of a write fault got a writable device entry".into()
            })?;
            check(window.valid() == pages as u64, || {
                format!(
                    "{} of {pages} entries after a write fault after fork",
                    window.valid()
                )
            })?;
            let f0 = stats(&ctx)?.faults;
            dev_write(&ctx, m.at(page(6)), &pattern(page(6), PAGE, 43))
                .map_err(e("device write to a COW-shared neighbour"))?;
            let f1 = stats(&ctx)?.faults;
            check(f1 > f0, || {
                "a device write to a COW-shared neighbour did not fault".into()
            })?;
            m.check(page(5), PAGE, 42)
                .and_then(|()| m.check(page(6), PAGE, 43))
                .map_err(|w| format!("parent's device writes not in the parent: {w}"))?;
            link.send(1);
            link.recv()?;
            Ok(())
        },
    )?;
    no_stale(&ctx)?;
    Ok(Outcome::Pass)
}
