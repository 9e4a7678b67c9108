//! Page-table events at the target while peers write it: munmap in the middle of a PUT
//! stream, mprotect to read-only, and fork (copy-on-write). The target's driver resolves or
//! aborts the network faults these cause; the initiator sees `REMOTE_FAULT_ABORTED` with the
//! target's errno where the memory is gone or read-only, and nothing lands anywhere else.

use mnic::{Access, RemoteError, Work};
use mnic_guest_util::{check, e, fork_pair, note, CaseResult, Outcome, PAGE};

use crate::pair::*;

/// A stream of one-page PUTs over 64 target pages; right after the 9th is posted the target
/// unmaps pages 16..48. Every item into the hole either ran before the munmap or fails with
/// `REMOTE_FAULT_ABORTED` (EFAULT); the pages on both sides of the hole hold the stream's
/// data, and a PUT into the hole afterwards fails the same way. Then the target deregisters
/// and unmaps the rest: a PUT is refused with `BAD_KEY`.
pub fn munmap_target_mid_stream() -> CaseResult {
    let p = pair()?;
    let pages = 64;
    let len = pages * PAGE;
    let (hole_start, hole_end) = (16, 48);
    let mut w = Window::new(&p.target, len, Access::READ_WRITE, Some(50))?;
    let (src, _rs) = local(&p.init, len, Access::READ, 51)?;
    let items = (0..pages)
        .map(|i| Work::put_va(src.at(i * PAGE), &w.region, (i * PAGE) as u64, PAGE as u32))
        .collect::<mnic::Result<Vec<_>>>()
        .map_err(e("PUT"))?;
    let done = stream(&p.init, &items, |i| {
        if i == 8 {
            w.map
                .munmap(hole_start * PAGE, (hole_end - hole_start) * PAGE)?;
        }
        Ok(())
    })?;
    let mut aborted = 0;
    for (i, d) in done.iter().enumerate() {
        let in_hole = (hole_start..hole_end).contains(&i);
        match (in_hole, d.result()) {
            (_, Ok(_)) => {}
            (true, r) => {
                want_remote_abort(r, &[libc::EFAULT], &format!("PUT of page {i}"))?;
                aborted += 1;
            }
            (false, Err(err)) => return Err(format!("PUT of mapped page {i}: {err}")),
        }
    }
    w.holds(0, hole_start * PAGE, 51)?;
    w.holds(hole_end * PAGE, (pages - hole_end) * PAGE, 51)?;
    let after = p.run(Work::put_va(
        src.at(hole_start * PAGE),
        &w.region,
        (hole_start * PAGE) as u64,
        PAGE as u32,
    ));
    want_remote_abort(after, &[libc::EFAULT], "PUT into the unmapped range")?;
    // The failed PUTs wrote nothing next to the hole either.
    w.holds(0, hole_start * PAGE, 51)?;
    w.holds(hole_end * PAGE, (pages - hole_end) * PAGE, 51)?;

    w.deregister()?;
    w.map.munmap(0, hole_start * PAGE)?;
    let dead = p.run(Work::put_va(src.va(), &w.region, 0, PAGE as u32));
    want_remote(
        dead,
        RemoteError::BadKey,
        "PUT after deregistration and munmap",
    )?;
    note(format!(
        "{aborted} of {} PUTs into the hole aborted at the target (the rest ran before munmap)",
        hole_end - hole_start
    ));
    p.no_stale()?;
    Ok(Outcome::Pass)
}

/// The target makes its buffer read-only: a PUT fails with `REMOTE_FAULT_ABORTED` and
/// changes nothing, a GET still reads it; read-write again, PUTs work again.
pub fn mprotect_target_readonly() -> CaseResult {
    let p = pair()?;
    let len = 16 * PAGE;
    let w = Window::new(&p.target, len, Access::READ_WRITE, Some(60))?;
    let (src, _rs) = local(&p.init, len, Access::READ, 61)?;
    p.put(src.va(), &w.region, 0, PAGE, "PUT before mprotect")?;
    w.map.mprotect(0, len, libc::PROT_READ)?;
    let errno = want_remote_abort(
        p.run(Work::put_va(src.va(), &w.region, 0, len as u32)),
        &WRITE_DENIED,
        "PUT into read-only target memory",
    )?;
    w.holds(0, PAGE, 61)?;
    w.holds(PAGE, len - PAGE, 60)?;
    let (back, _rb) = local(&p.init, len, Access::WRITE, 0)?;
    p.get(
        back.va(),
        &w.region,
        0,
        len,
        "GET of read-only target memory",
    )?;
    mnic_guest_util::is_pattern(&back.read(0, PAGE), 0, 61)?;
    mnic_guest_util::is_pattern(&back.read(PAGE, len - PAGE), PAGE, 60)?;
    w.map.mprotect(0, len, libc::PROT_READ | libc::PROT_WRITE)?;
    p.put(src.va(), &w.region, 0, len, "PUT after mprotect read-write")?;
    w.holds(0, len, 61)?;
    note(format!("PUT into read-only memory: target errno {errno}"));
    p.no_stale()?;
    Ok(Outcome::Pass)
}

/// The target forks while its buffer has writable device entries: a PUT afterwards lands in
/// the parent's pages (the target context's process), the child still sees the old bytes.
pub fn fork_target_cow() -> CaseResult {
    let p = pair()?;
    let len = 16 * PAGE;
    let w = Window::new(&p.target, len, Access::READ_WRITE, Some(70))?;
    p.target
        .prefetch(w.map.va(), len as u64, true)
        .map_err(e("PREFETCH"))?;
    let (src, _rs) = local(&p.init, len, Access::READ, 71)?;
    fork_pair(
        |link| {
            link.recv()?;
            w.holds(0, len, 70)
                .map_err(|m| format!("child's copy-on-write view changed: {m}"))
        },
        |link, _pid| {
            p.put(src.va(), &w.region, 0, len, "PUT after fork")?;
            w.holds(0, len, 71)
                .map_err(|m| format!("parent after the PUT: {m}"))?;
            link.send(1);
            Ok(())
        },
    )?;
    check(w.map.read(0, 1) == src.read(0, 1), || {
        "parent lost the PUT".into()
    })?;
    p.no_stale()?;
    Ok(Outcome::Pass)
}
