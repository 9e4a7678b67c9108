//! The DMA mappings behind the device's leaves (driver/dma_map.rs): a leaf holds a bus address
//! the DMA API gave out for the page, and the driver unmaps it only after the device was fenced.
//!
//! Both cases read the driver's module-wide counts in debugfs (`dma_maps`: `live`, `mapped`,
//! `unmapped`). Without an IOMMU a bus address is the physical one, so an early unmap would go
//! unnoticed by the device: these counts are what can be observed of the order.

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use mnic::{Access, DmaBuffer};

use crate::util::*;

/// The driver's `dma_maps` debugfs file.
#[derive(Clone, Copy, Debug)]
struct DmaCounts {
    live: u64,
    mapped: u64,
    unmapped: u64,
}

fn dma_counts(minor: u32) -> Result<DmaCounts, String> {
    let path = format!("/sys/kernel/debug/mnic{minor}/dma_maps");
    let text = fs::read_to_string(&path).map_err(|err| format!("{path}: {err}"))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
            .ok_or_else(|| format!("{path}: no `{name}` in {text:?}"))
    };
    let c = DmaCounts {
        live: field("live ")?,
        mapped: field("mapped ")?,
        unmapped: field("unmapped ")?,
    };
    check(c.mapped.checked_sub(c.unmapped) == Some(c.live), || {
        format!("{path}: live is not mapped - unmapped: {c:?}")
    })?;
    Ok(c)
}

/// Waits (up to 2 s: a closing file's release may still run) until the live mappings are back
/// to `base`; fails with what is left.
fn back_to(minor: u32, base: u64, after: &str) -> Result<(), String> {
    let t = Instant::now();
    loop {
        let now = dma_counts(minor)?;
        if now.live == base {
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(2) {
            return Err(format!(
                "after {after}: {} DMA mappings left (live {}, before {base})",
                now.live - base.min(now.live),
                now.live
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Checks that filling `pages` pages made at least that many mappings (else the counts prove
/// nothing about their release).
fn made_at_least(minor: u32, base: u64, pages: u64, what: &str) -> Result<(), String> {
    let now = dma_counts(minor)?;
    check(now.live >= base + pages, || {
        format!(
            "{what}: {} live DMA mappings, expected at least {base} + {pages}",
            now.live
        )
    })
}

/// Every DMA mapping a registration's fills made is unmapped once the registration is gone, on
/// each path that takes it away: deregistration, munmap of the registered range (an
/// invalidation), the pinned baseline, a 2 MiB leaf (one mapping of the whole huge page), a
/// context closed with its registrations, and a process that exits with them.
pub fn dma_mappings_released() -> CaseResult {
    // No queues: nothing but these registrations is mapped for the device.
    let ctx = open()?;
    let minor = ctx.info().minor;
    let base = dma_counts(minor)?.live;
    let pages = 64;
    let len = pages * PAGE;

    let m = Map::anon(len)?;
    m.fill(0, len, 80);
    let r = reg_raw(&ctx, m.va(), len, Access::READ_WRITE)?;
    r.prefetch(true).map_err(e("prefetch"))?;
    made_at_least(minor, base, pages as u64, "prefetch")?;
    r.deregister().map_err(e("deregister"))?;
    back_to(minor, base, "deregistration")?;

    let r = reg_raw(&ctx, m.va(), len, Access::READ_WRITE)?;
    r.prefetch(true).map_err(e("prefetch again"))?;
    made_at_least(minor, base, pages as u64, "prefetch again")?;
    m.munmap(0, len)?;
    back_to(minor, base, "munmap of the registered range")?;
    r.deregister().map_err(e("deregister unmapped"))?;

    let buf = DmaBuffer::new(len).map_err(e("buffer"))?;
    let r = ctx
        .register(&buf, Access::READ_WRITE | Access::PINNED)
        .map_err(e("register pinned"))?;
    made_at_least(minor, base, pages as u64, "pinned registration")?;
    r.deregister().map_err(e("deregister pinned"))?;
    back_to(minor, base, "deregistration of a pinned registration")?;

    let huge = 2 << 20;
    let hbuf = DmaBuffer::new_huge(huge).map_err(e("huge buffer"))?;
    let r = ctx
        .register(&hbuf, Access::READ_WRITE)
        .map_err(e("register huge"))?;
    r.prefetch(true).map_err(e("prefetch huge"))?;
    let q = query(&ctx, hbuf.va(), huge)?;
    if q.valid_2m == 1 {
        // One mapping for the whole block.
        made_at_least(minor, base, 1, "a 2 MiB leaf")?;
    } else {
        note(format!("no 2 MiB leaf (THP off?): {q:?}"));
        made_at_least(minor, base, (huge / PAGE) as u64, "a non-THP 2 MiB buffer")?;
    }
    r.deregister().map_err(e("deregister huge"))?;
    back_to(minor, base, "deregistration of a 2 MiB leaf")?;

    {
        let other = open()?;
        let r = other
            .register(&buf, Access::READ_WRITE)
            .map_err(e("register in a second context"))?;
        r.prefetch(true)
            .map_err(e("prefetch in a second context"))?;
        made_at_least(minor, base, pages as u64, "second context")?;
        // Closed with the registration in place.
        std::mem::forget(r);
    }
    back_to(minor, base, "closing a context with a registration")?;

    in_child(|| {
        let ctx = open()?;
        let buf = DmaBuffer::new(len).map_err(e("child buffer"))?;
        let r = ctx
            .register(&buf, Access::READ_WRITE)
            .map_err(e("child register"))?;
        r.prefetch(true).map_err(e("child prefetch"))?;
        made_at_least(minor, base, pages as u64, "child")?;
        // Exit with everything in place (`in_child` ends with _exit: no destructors).
        std::mem::forget(r);
        std::mem::forget(buf);
        std::mem::forget(ctx);
        Ok(())
    })?;
    back_to(minor, base, "exit of a process with a registration")?;
    Ok(Outcome::Pass)
}

/// How long the engine stalls with a translation in hand (below the driver's 2 s SYNC timeout,
/// so the SYNC executes late instead of the device being stopped).
const STALL_MS: u32 = 1500;

/// A page's DMA mapping outlives the device's last possible use of it: an invalidation unmaps
/// only after its SYNC has executed.
///
/// The engine stalls with a translation of a COPY's destination in hand; MADV_DONTNEED of the
/// destination clears the leaves, posts INVALIDATE + SYNC and waits, and the SYNC runs only
/// when the stall ends. While MADV_DONTNEED is blocked the driver's count of unmapped mappings
/// must not move; once it has returned, the destination's 256 mappings must be gone. A driver
/// that unmaps before the wait (the device may still be writing through that bus address, or
/// its TLB hold it) moves the count while MADV_DONTNEED is still blocked.
pub fn dma_unmap_waits_for_sync() -> CaseResult {
    let ctx = ctxq()?;
    let minor = ctx.info().minor;
    let len = 1 << 20;
    let src = DmaBuffer::new(len).map_err(e("src"))?;
    src.write_from(0, &pattern(0, len, 81));
    let dst = Map::anon(len)?;
    dst.fill(0, len, 82);
    let rs = ctx
        .register(&src, Access::READ)
        .map_err(e("register src"))?;
    let rd = reg_raw(&ctx, dst.va(), len, Access::READ_WRITE)?;
    rs.prefetch(false).map_err(e("prefetch src"))?;
    rd.prefetch(true).map_err(e("prefetch dst"))?;
    mnic_guest_util::oracle::stall(minor, STALL_MS)?;
    ctx.post(&mnic::Work::copy(src.va(), dst.va(), len as u32).map_err(e("copy"))?)
        .map_err(e("post"))?;
    // The engine has translated the first piece of the copy and sleeps.
    thread::sleep(Duration::from_millis(300));
    let before = dma_counts(minor)?;
    let returned = AtomicBool::new(false);
    let va = dst.va();
    let (during, blocked_for) = thread::scope(|s| {
        let dontneed = s.spawn(|| {
            let t = Instant::now();
            // SAFETY: the case's own anonymous mapping; its contents are not used afterwards.
            let rc = unsafe { libc::madvise(va as *mut libc::c_void, len, libc::MADV_DONTNEED) };
            returned.store(true, Ordering::SeqCst);
            check(rc == 0, || os_err("madvise")).map(|()| t.elapsed())
        });
        thread::sleep(Duration::from_millis(400));
        let during = (dma_counts(minor), returned.load(Ordering::SeqCst));
        let blocked_for = dontneed
            .join()
            .map_err(|_| "madvise thread panicked".to_string())
            .and_then(|r| r);
        (during, blocked_for)
    });
    let (during, returned_early) = (during.0?, during.1);
    let blocked_for = blocked_for?;
    let after = dma_counts(minor)?;
    note(format!(
        "MADV_DONTNEED blocked {blocked_for:?}; unmapped before {}, while blocked {}, after {}",
        before.unmapped, during.unmapped, after.unmapped
    ));
    check(!returned_early, || {
        format!(
            "MADV_DONTNEED returned within 400 ms ({blocked_for:?}): did the stall hold the SYNC?"
        )
    })?;
    check(during.unmapped == before.unmapped, || {
        format!(
            "{} DMA mappings were unmapped while the SYNC was pending",
            during.unmapped - before.unmapped
        )
    })?;
    check(
        after.unmapped >= before.unmapped + (len / PAGE) as u64,
        || {
            format!(
                "only {} mappings unmapped once MADV_DONTNEED returned, expected {}",
                after.unmapped - before.unmapped,
                len / PAGE
            )
        },
    )?;
    // The copy finishes into fresh pages (the device faults them in again).
    ctx.wait(TIMEOUT).map_err(e("copy completion"))?;
    no_stale(&ctx)?;
    drop((rs, rd));
    Ok(Outcome::Pass)
}

/// Unbind takes every DMA mapping of user pages down, once the device is stopped, even while
/// contexts with registrations stay open: nothing is left mapped for a device the driver no
/// longer owns (the function may be bound to another driver, with another IOMMU domain, next).
///
/// The counts are read through the debugfs directory of the device bound again (the old one
/// goes at unbind), while the old context is still open.
pub fn dma_unmapped_at_unbind() -> CaseResult {
    let ctx = open()?;
    let (bdf, drv) = crate::stress::mnic_pci()?;
    check(!drv.is_empty(), || "device not bound".into())?;
    let minor = ctx.info().minor;
    let base = dma_counts(minor)?.live;
    let pages = 64;
    let m = Map::anon(pages * PAGE)?;
    m.fill(0, m.len, 83);
    let r = reg_raw(&ctx, m.va(), m.len, Access::READ_WRITE)?;
    r.prefetch(true).map_err(e("prefetch"))?;
    made_at_least(minor, base, pages as u64, "prefetch")?;
    fs::write(format!("/sys/bus/pci/drivers/{drv}/unbind"), &bdf).map_err(e("unbind"))?;
    fs::write(format!("/sys/bus/pci/drivers/{drv}/bind"), &bdf).map_err(e("bind"))?;
    let left = dma_counts(minor)?.live;
    // The old context and its registration go now, in any case.
    drop(r);
    drop(ctx);
    check(left == base, || {
        format!(
            "{} DMA mappings left after unbind (live {left}, before {base})",
            left - base.min(left)
        )
    })?;
    back_to(minor, base, "closing the old context")?;
    device_copies(84)?;
    Ok(Outcome::Pass)
}
