//! Device faults handled by the prototyping driver itself: a translation left out of the
//! context's table, the `FAULT` event taken from the event ring after the MSI-X eventfd
//! fired, and the two answers (fill + `RESUME`, `ABORT`); then `INVALIDATE_RANGE` + `SYNC`,
//! after which the device must walk the table again and fault.

use mnic_abi::{cmd, completion, counter, event, Event, VECTOR_EVENT};

use super::kit::{check, contents, copy, e, pattern, CaseResult, Session, CTX};
use crate::context::BufferFlags;
use crate::nic::{Nic, DEVICE_WAIT};

const PAGE: u64 = mnic_abi::pte::PAGE_SIZE;
/// errno the `ABORT` case hands the device (EFAULT), returned in the completion.
const ABORT_ERRNO: u64 = libc::EFAULT as u64;

/// Waits for the next event, which must be a `FAULT` of context 0 at `va` (a write fault
/// if `write`), delivered with an MSI-X signal on vector 0.
fn expect_fault(nic: &mut Nic, va: u64, write: bool) -> Result<Event, String> {
    let irqs = nic.irqs.seen(VECTOR_EVENT);
    let ev = nic.next_event(DEVICE_WAIT).map_err(e("FAULT event"))?;
    check(
        ev.kind == event::FAULT
            && ev.ctx == CTX
            && ev.addr == va
            && ev.code == event::FAULT_NOT_PRESENT
            && (ev.flags & event::FLAG_WRITE != 0) == write
            && ev.id != 0,
        || {
            format!("event {ev:?}, want a not-present FAULT of context {CTX} at {va:#x} (write {write})")
        },
    )?;
    let signalled = nic
        .signalled_since(VECTOR_EVENT, irqs)
        .map_err(e("vector 0"))?;
    check(signalled, || {
        "the FAULT event came without a signal on the vector 0 eventfd".into()
    })?;
    Ok(ev)
}

/// A COPY whose second destination page is not in the table: the device parks the work
/// and reports a write fault there; the driver maps the page and answers `RESUME`, and the
/// COPY completes with every byte in place.
pub fn fault_resume(s: &mut Session) -> CaseResult {
    let (nic, ctx) = s.ctx()?;
    let src = ctx
        .buffer(nic, 2, BufferFlags::empty())
        .map_err(e("source"))?;
    let dst = ctx
        .buffer(nic, 2, BufferFlags::WRITABLE | BufferFlags::UNMAPPED)
        .map_err(e("destination"))?;
    ctx.table
        .map_page(dst.va, dst.iova, true)
        .map_err(e("map the first destination page"))?;
    let data = pattern(src.len as usize, 0x11);
    nic.mem.write(src.iova, &data);
    let before = nic.counters();
    ctx.post(nic, copy(src.va, dst.va, src.len as u32, 7))
        .map_err(e("post COPY"))?;
    let ev = expect_fault(nic, dst.va + PAGE, true)?;
    check(ctx.poll_completion(nic).is_none(), || {
        "the faulted COPY completed before the fault was answered".into()
    })?;
    ctx.table
        .map_page(dst.va + PAGE, dst.iova + PAGE, true)
        .map_err(e("fill the hole"))?;
    nic.run_command(cmd::RESUME, CTX, ev.id, 0)
        .map_err(e("RESUME"))?;
    let c = ctx.wait_completion(nic).map_err(e("completion"))?;
    check(
        c.tag == 7 && c.status == completion::OK && c.bytes == src.len,
        || format!("completion {c:?}"),
    )?;
    check(contents(nic, &dst) == data, || {
        "the destination differs from the source after RESUME".into()
    })?;
    let after = nic.counters();
    let (f, r) = (
        after.since(&before, counter::FAULTS),
        after.since(&before, counter::RESUMES),
    );
    check(f == 1 && r == 1, || {
        format!("FAULTS +{f} RESUMES +{r}, want +1 and +1")
    })
}

/// A COPY whose second source page is missing: a read fault; `ABORT` with an errno
/// completes the work with `FAULT_ABORTED`, the errno and the faulting VA, and the bytes it
/// reports as copied are the source's.
pub fn fault_abort(s: &mut Session) -> CaseResult {
    let (nic, ctx) = s.ctx()?;
    let src = ctx
        .buffer(nic, 2, BufferFlags::UNMAPPED)
        .map_err(e("source"))?;
    let dst = ctx
        .buffer(nic, 2, BufferFlags::WRITABLE)
        .map_err(e("destination"))?;
    ctx.table
        .map_page(src.va, src.iova, false)
        .map_err(e("map the first source page"))?;
    let data = pattern(src.len as usize, 0x22);
    nic.mem.write(src.iova, &data);
    let before = nic.counters();
    ctx.post(nic, copy(src.va, dst.va, src.len as u32, 8))
        .map_err(e("post COPY"))?;
    let ev = expect_fault(nic, src.va + PAGE, false)?;
    nic.run_command(cmd::ABORT, CTX, ev.id, ABORT_ERRNO)
        .map_err(e("ABORT"))?;
    let c = ctx.wait_completion(nic).map_err(e("completion"))?;
    check(
        c.tag == 8
            && c.status == completion::FAULT_ABORTED
            && u64::from(c.detail) == ABORT_ERRNO
            && c.fault_va == src.va + PAGE
            && c.bytes <= PAGE,
        || {
            format!(
                "completion {c:?}, want FAULT_ABORTED, detail {ABORT_ERRNO}, fault_va {:#x}",
                src.va + PAGE
            )
        },
    )?;
    let got = contents(nic, &dst);
    let n = c.bytes as usize;
    check(
        got[..n] == data[..n] && got[n..].iter().all(|&b| b == 0),
        || format!("the destination does not hold exactly the {n} bytes reported copied"),
    )?;
    let after = nic.counters();
    let (f, a) = (
        after.since(&before, counter::FAULTS),
        after.since(&before, counter::ABORTS),
    );
    check(f == 1 && a == 1, || {
        format!("FAULTS +{f} ABORTS +{a}, want +1 and +1")
    })
}

/// A COPY warms the device's TLB; the driver clears the source's leaf and posts
/// `INVALIDATE_RANGE` + `SYNC`. The next COPY from that VA must fault (the device walks
/// again instead of using what it cached), and after the driver maps the VA to another
/// page and resumes, the COPY moves the new page's bytes, not the old ones.
pub fn invalidate_sync_refaults(s: &mut Session) -> CaseResult {
    let (nic, ctx) = s.ctx()?;
    let src = ctx
        .buffer(nic, 1, BufferFlags::empty())
        .map_err(e("source"))?;
    let dst = ctx
        .buffer(nic, 1, BufferFlags::WRITABLE)
        .map_err(e("destination"))?;
    let old = pattern(PAGE as usize, 0x33);
    nic.mem.write(src.iova, &old);
    ctx.post(nic, copy(src.va, dst.va, PAGE as u32, 9))
        .map_err(e("post the first COPY"))?;
    let c = ctx.wait_completion(nic).map_err(e("first completion"))?;
    check(
        c.status == completion::OK && contents(nic, &dst) == old,
        || format!("first COPY: {c:?}, or wrong data"),
    )?;
    ctx.table.unmap_page(src.va).map_err(e("clear the leaf"))?;
    let leaf = ctx.table.leaf(src.va).map_err(e("read the leaf"))?;
    check(leaf == 0, || format!("leaf {leaf:#x} after clearing it"))?;
    let before = nic.counters();
    nic.run_command(cmd::INVALIDATE_RANGE, CTX, src.va, PAGE)
        .map_err(e("INVALIDATE_RANGE + SYNC"))?;
    let after = nic.counters();
    let (inv, syncs) = (
        after.since(&before, counter::INVALIDATIONS),
        after.since(&before, counter::SYNCS),
    );
    check(inv == 1 && syncs == 1, || {
        format!("INVALIDATIONS +{inv} SYNCS +{syncs}, want +1 and +1")
    })?;
    ctx.post(nic, copy(src.va, dst.va, PAGE as u32, 10))
        .map_err(e("post the second COPY"))?;
    let ev = expect_fault(nic, src.va, false)?;
    let new_page = nic.mem.alloc_pages(1).map_err(e("new page"))?;
    let new = pattern(PAGE as usize, 0x44);
    nic.mem.write(new_page, &new);
    ctx.table
        .map_page(src.va, new_page, false)
        .map_err(e("map the new page"))?;
    nic.run_command(cmd::RESUME, CTX, ev.id, 0)
        .map_err(e("RESUME"))?;
    let c = ctx.wait_completion(nic).map_err(e("second completion"))?;
    check(c.tag == 10 && c.status == completion::OK, || {
        format!("second completion {c:?}")
    })?;
    check(contents(nic, &dst) == new, || {
        "after the invalidation the COPY did not read the newly mapped page".into()
    })?;
    let stale = nic.counters().0[counter::STALE_ACCESSES as usize];
    check(stale == 0, || format!("STALE_ACCESSES = {stale}"))
}
