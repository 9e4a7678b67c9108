//! Helpers shared by the cases: raw mappings with verifiable patterns, device copies, forked
//! children with a message channel, memory cgroups, the quiet console for OOM cases, /proc.

/// A context with queues set up.
pub use mnic_guest_util::nic::open_with_queues as ctxq;
pub use mnic_guest_util::nic::*;
pub use mnic_guest_util::*;

use mnic::{Access, Context, DmaBuffer, Error, Registration, TableEntries, Work};

// ------------------------------------------------------------------ contexts

pub fn query(ctx: &Context, va: u64, len: usize) -> Result<TableEntries, String> {
    ctx.query(va, len as u64).map_err(e("QUERY"))
}

/// The device copies `len` bytes at `va` into a scratch buffer: what the device reads there.
/// A scratch buffer that does not overlap `[va, va+len)` (a freshly unmapped range is often
/// where the next mapping goes).
fn scratch_apart(va: u64, len: usize) -> mnic::Result<DmaBuffer> {
    let first = DmaBuffer::new(len)?;
    let overlaps = |b: &DmaBuffer| b.va() < va + len as u64 && va < b.va() + b.len() as u64;
    if !overlaps(&first) {
        return Ok(first);
    }
    let second = DmaBuffer::new(len)?;
    drop(first);
    Ok(second)
}

pub fn dev_read(ctx: &Context, va: u64, len: usize) -> mnic::Result<Vec<u8>> {
    let scratch = scratch_apart(va, len)?;
    let _r = ctx.register(&scratch, Access::WRITE)?;
    ctx.run(&Work::copy(va, scratch.va(), len as u32)?, TIMEOUT)?;
    let mut v = scratch.to_vec();
    v.truncate(len);
    Ok(v)
}

/// The device writes `data` at `va` (copy from a scratch buffer).
pub fn dev_write(ctx: &Context, va: u64, data: &[u8]) -> mnic::Result<()> {
    let scratch = scratch_apart(va, data.len())?;
    scratch.write_from(0, data);
    let _r = ctx.register(&scratch, Access::READ)?;
    ctx.run(&Work::copy(scratch.va(), va, data.len() as u32)?, TIMEOUT)?;
    Ok(())
}

/// Expects a work item aborted by the driver with one of `errnos`; returns the errno.
pub fn want_abort<T: std::fmt::Debug>(
    r: mnic::Result<T>,
    errnos: &[i32],
    what: &str,
) -> Result<i32, String> {
    match r {
        Err(Error::Work {
            error: mnic::WorkError::FaultAborted { errno },
            ..
        }) if errnos.contains(&errno) => Ok(errno),
        other => Err(format!(
            "{what}: got {other:?}, want an abort with errno in {errnos:?}"
        )),
    }
}

/// A fresh anonymous mapping of `pages` pages filled with pattern `seed`, registered
/// read-write with `ctx`, that the device reads back correctly.
pub fn registered_and_read<'a>(
    ctx: &'a Context,
    pages: usize,
    seed: u64,
) -> Result<(Map, Registration<'a>), String> {
    let m = Map::anon(pages * PAGE)?;
    m.fill(0, m.len, seed);
    let r = reg_raw(ctx, m.va(), m.len, Access::READ_WRITE)?;
    is_pattern(
        &dev_read(ctx, m.va(), m.len).map_err(e("device read"))?,
        0,
        seed,
    )?;
    Ok((m, r))
}

/// A fresh context copies 4 pages with pattern `seed` correctly (after a rebind, a reload or a
/// replacement: the device works again).
pub fn device_copies(seed: u64) -> Result<(), String> {
    let ctx = ctxq()?;
    let _mapped = registered_and_read(&ctx, 4, seed)?;
    no_stale(&ctx)
}
