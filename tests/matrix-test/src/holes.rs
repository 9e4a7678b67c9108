//! The invariant's known holes, each reproduced deterministically (docs/testing.md, "Holes").
//!
//! Every case here once let the device touch a page after the kernel's invalidate callback had
//! returned, and the device's own checker could not see it (it only judges the invalidations
//! the driver posts). The stale-access oracle (tests/kmod/mnic-oracle, spec §8a) sees them: it
//! reports every invalidation of the process's address space to the device independently of
//! the driver, so `no_stale` fails on a driver with the hole. They run in their own boot
//! (`invariant` in tests/suites.txt): a strict device halts on the first violation.

use std::fs;
use std::thread;
use std::time::Duration;

use mnic::{Access, DmaBuffer};

use crate::util::*;

fn thp_enabled() -> bool {
    fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .is_ok_and(|s| s.contains("[always]") || s.contains("[madvise]"))
}

/// A context and one THP-backed 2 MiB block filled with pattern `seed` (`None` when THP is
/// off). The buffer is returned to keep the mapping; the cases reach it through the `Map`.
fn thp_block(seed: u64) -> Result<Option<(Nic, DmaBuffer, Map)>, String> {
    if !thp_enabled() {
        return Ok(None);
    }
    let ctx = ctxq()?;
    let huge = 2 << 20;
    let buf = DmaBuffer::new_huge(huge).map_err(e("huge buffer"))?;
    let m = Map::adopt(buf.as_mut_ptr() as usize, huge);
    m.fill(0, huge, seed);
    Ok(Some((ctx, buf, m)))
}

/// A 2 MiB device leaf installed over a 4 KiB leaf the device had cached.
///
/// The device caches the 4 KiB translation of page P of a THP block; a device fault elsewhere
/// in the block makes the driver install one 2 MiB leaf over the block. MADV_DONTNEED of the
/// half without P takes the 2 MiB leaf down (the device drops what overlaps that half), then
/// MADV_DONTNEED of P itself: the driver must make the device forget P's 4 KiB translation
/// too. With the hole, the table no longer showed it, nothing was invalidated, and the device
/// read the freed page.
pub fn huge_leaf_over_cached_small() -> CaseResult {
    let Some((ctx, _buf, m)) = thp_block(50)? else {
        return Ok(Outcome::Skip("THP disabled".into()));
    };
    let huge = m.len;
    let _r = reg_raw(&ctx, m.va(), huge, Access::READ_WRITE)?;
    let p = PAGE * 384;
    // P alone: a 4 KiB leaf, and the device caches it.
    ctx.prefetch(m.at(p), PAGE as u64, false)
        .map_err(e("prefetch P"))?;
    is_pattern(&dev_read(&ctx, m.at(p), PAGE).map_err(e("read P"))?, p, 50)?;
    // A device fault on page 0 maps the whole block with one 2 MiB leaf.
    is_pattern(&dev_read(&ctx, m.va(), PAGE).map_err(e("read 0"))?, 0, 50)?;
    let q = query(&ctx, m.va(), huge)?;
    if q.valid_2m != 1 {
        std::mem::forget(m);
        return Ok(Outcome::Skip(format!("no 2 MiB leaf for the block: {q:?}")));
    }
    // The half without P goes; then P.
    m.madvise(0, huge / 2, libc::MADV_DONTNEED)?;
    m.madvise(p, PAGE, libc::MADV_DONTNEED)?;
    // The CPU sees a fresh zero page at P; the device must see the same.
    let seen = dev_read(&ctx, m.at(p), PAGE).map_err(e("read P after DONTNEED"))?;
    is_zero(&seen, "device read of P after MADV_DONTNEED")?;
    no_stale(&ctx)?;
    std::mem::forget(m);
    Ok(Outcome::Pass)
}

/// A device write through a read-only 2 MiB leaf, allowed by a second registration that
/// covers only part of the block.
///
/// A read registration over the whole THP block gets a read-only 2 MiB leaf; a read-write
/// registration over one page of it lets the device write there. The write faults on the
/// read-only leaf, and the driver must split it: once it answered RESUME with the huge leaf
/// unchanged, and the device faulted on the same write for ever.
pub fn huge_ro_leaf_partial_write() -> CaseResult {
    let Some((ctx, _buf, m)) = thp_block(80)? else {
        return Ok(Outcome::Skip("THP disabled".into()));
    };
    let huge = m.len;
    let _ro = reg_raw(&ctx, m.va(), huge, Access::READ)?;
    let p = PAGE * 100;
    let _rw = reg_raw(&ctx, m.at(p), PAGE, Access::READ_WRITE)?;
    is_pattern(&dev_read(&ctx, m.va(), PAGE).map_err(e("read"))?, 0, 80)?;
    let q = query(&ctx, m.va(), huge)?;
    if q.valid_2m != 1 {
        std::mem::forget(m);
        return Ok(Outcome::Skip(format!("no 2 MiB leaf for the block: {q:?}")));
    }
    let data = pattern(p, PAGE, 81);
    dev_write(&ctx, m.at(p), &data).map_err(e("device write through the partial registration"))?;
    m.check(p, PAGE, 81)?;
    is_pattern(
        &dev_read(&ctx, m.va(), PAGE).map_err(e("read after"))?,
        0,
        80,
    )?;
    no_stale(&ctx)?;
    std::mem::forget(m);
    Ok(Outcome::Pass)
}

/// The driver's fault-injection knob (debugfs) that widens deregistration's window.
fn set_deregister_delay(minor: u32, ms: u32) -> Result<(), String> {
    let path = format!("/sys/kernel/debug/mnic{minor}/fault_deregister_delay_ms");
    fs::write(&path, format!("{ms}\n")).map_err(|err| format!("{path}: {err}"))
}

/// Deregistration racing an munmap of the same range on another thread.
///
/// Deregistration has two steps: take the translations down behind a SYNC, and remove the
/// notifier. In the wrong order (the hole), an munmap landing between them frees pages that the
/// table (and so the device) still maps, and no notifier of the context hears of it. The
/// driver's fault-injection delay puts the munmap between the two steps every time.
pub fn deregister_races_munmap() -> CaseResult {
    let ctx = ctxq()?;
    let minor = ctx.info().minor;
    let len = 16 * PAGE;
    let m = Map::anon(len)?;
    m.fill(0, len, 60);
    let r = reg_raw(&ctx, m.va(), len, Access::READ_WRITE)?;
    r.prefetch(true).map_err(e("prefetch"))?;
    let q = query(&ctx, m.va(), len)?;
    check(q.valid_4k == 16, || format!("prefetch mapped {q:?}"))?;
    set_deregister_delay(minor, 400)?;
    // The other thread unmaps the range itself; `m` must not unmap it again later.
    let va = m.va();
    std::mem::forget(m);
    let raced = thread::scope(|s| {
        let unmapper = s.spawn(move || {
            // Deregistration is inside its delay by now.
            thread::sleep(Duration::from_millis(150));
            // SAFETY: the range is this case's own anonymous mapping, touched by nothing else.
            if unsafe { libc::munmap(va as *mut libc::c_void, len) } == 0 {
                Ok(())
            } else {
                Err(os_err("munmap"))
            }
        });
        let dereg = r.deregister().map_err(e("deregister"));
        let unmapped = unmapper
            .join()
            .map_err(|_| "munmap thread panicked".to_string())
            .and_then(|r| r);
        dereg.and(unmapped)
    });
    set_deregister_delay(minor, 0)?;
    raced?;
    let q = query(&ctx, va, len)?;
    check(q.valid_4k + q.valid_2m == 0, || {
        format!("entries left after deregistration: {q:?}")
    })?;
    no_stale(&ctx)?;
    Ok(Outcome::Pass)
}

/// Unloads and loads the driver again: probe resets the device (a halted or stopped device
/// works again) and turns bus mastering back on.
fn reload_driver() -> Result<(), String> {
    module_cmd("rmmod", "mnic")?;
    module_cmd("insmod", MODULE)
}

/// A slow device, not a dead one: its engine stalls with a translation in hand while an
/// invalidation waits for its SYNC.
///
/// The driver's SYNC wait gives up after its timeout. With the hole it then only marked the
/// device dead and let MADV_DONTNEED return, and the device, waking up, wrote into the freed
/// pages through the translation it had taken before. Now the driver stops the device (bus
/// mastering off, confirmed by a read back) before the callback returns, and the device
/// refuses the late DMA (`DMA_REFUSED`).
/// Starts a 1 MiB device COPY into a fresh registered mapping and makes the engine stall
/// `stall_ms` with its first translation in hand. Returns the destination (the caller frees
/// its pages while the engine sleeps) and the registrations.
struct StalledCopy<'a> {
    dst: Map,
    _regs: [mnic::Registration<'a>; 2],
}

fn stalled_copy<'a>(
    ctx: &'a mnic::Context,
    src: &'a DmaBuffer,
    stall_ms: u32,
) -> Result<StalledCopy<'a>, String> {
    let len = src.len();
    src.write_from(0, &pattern(0, len, 70));
    let dst = Map::anon(len)?;
    dst.fill(0, len, 71);
    let rs = ctx.register(src, Access::READ).map_err(e("register src"))?;
    let rd = reg_raw(ctx, dst.va(), len, Access::READ_WRITE)?;
    rs.prefetch(false).map_err(e("prefetch src"))?;
    rd.prefetch(true).map_err(e("prefetch dst"))?;
    mnic_guest_util::oracle::stall(ctx.info().minor, stall_ms)?;
    ctx.post(&mnic::Work::copy(src.va(), dst.va(), len as u32).map_err(e("copy"))?)
        .map_err(e("post"))?;
    // The engine has translated the first piece of the copy and sleeps.
    thread::sleep(Duration::from_millis(300));
    Ok(StalledCopy {
        dst,
        _regs: [rs, rd],
    })
}

/// What the oracle and the bus-master check counted (read from the registers: the driver may
/// have let the device go).
fn violations_and_refusals(bar0: u64) -> Result<(u64, u64), String> {
    let peek = |c| mnic_guest_util::oracle::peek_counter(bar0, c);
    let v = peek(mnic_abi::counter::ORACLE_VIOLATIONS)?;
    let r = peek(mnic_abi::counter::DMA_REFUSED)?;
    note(format!("oracle violations {v}, DMA refused {r}"));
    Ok((v, r))
}

fn no_late_dma(violations: u64, refused: u64) -> Result<(), String> {
    check(violations == 0, || {
        format!("the oracle saw {violations} accesses to pages freed while the device was stalled")
    })?;
    check(refused > 0, || {
        "the stalled DMA was neither refused nor flagged: did the stall happen?".into()
    })
}

const STALL_MS: u32 = 5000;

/// A slow device, not a dead one: its engine stalls with a translation in hand while an
/// invalidation waits for its SYNC.
///
/// The driver's SYNC wait gives up after its timeout. With the hole it then only marked the
/// device dead and let MADV_DONTNEED return, and the device, waking up, wrote into the freed
/// pages through the translation it had taken before. Now the driver stops the device (bus
/// mastering off, confirmed by a read back) before the callback returns, and the device
/// refuses the late DMA (`DMA_REFUSED`).
pub fn sync_timeout_slow_device() -> CaseResult {
    let bar0 = {
        let ctx = ctxq()?;
        let bar0 = mnic_guest_util::oracle::bar0(ctx.info().minor)?;
        let src = DmaBuffer::new(1 << 20).map_err(e("src"))?;
        let c = stalled_copy(&ctx, &src, STALL_MS)?;
        let t = std::time::Instant::now();
        c.dst.madvise(0, c.dst.len, libc::MADV_DONTNEED)?;
        note(format!("MADV_DONTNEED returned after {:?}", t.elapsed()));
        // The stall ends; a device nobody stopped writes into the freed pages now.
        thread::sleep(Duration::from_millis(u64::from(STALL_MS) + 1000));
        bar0
    };
    let (violations, refused) = violations_and_refusals(bar0)?;
    reload_driver()?;
    no_late_dma(violations, refused)?;
    device_copies(72)?;
    Ok(Outcome::Pass)
}

/// An invalidation racing unbind, with the device stalled holding a translation.
///
/// Unbind first refuses new submissions, then stops the device. With the hole, an
/// invalidation in between saw "gone", returned at once, and the device (reset only later, by
/// a posted write it had not yet carried out) wrote into the freed pages. Now invalidations
/// wait until the device is stopped. The driver's fault-injection delay holds unbind in that
/// window.
pub fn unbind_races_invalidation() -> CaseResult {
    // Opening loads the driver if needed.
    let ctx = ctxq()?;
    let (bdf, drv) = crate::stress::mnic_pci()?;
    check(!drv.is_empty(), || "device not bound".into())?;
    let minor = ctx.info().minor;
    let bar0 = mnic_guest_util::oracle::bar0(minor)?;
    let knob = format!("/sys/kernel/debug/mnic{minor}/fault_unbind_delay_ms");
    fs::write(&knob, "1000\n").map_err(|err| format!("{knob}: {err}"))?;
    let src = DmaBuffer::new(1 << 20).map_err(e("src"))?;
    let c = stalled_copy(&ctx, &src, STALL_MS)?;
    let unbind = format!("/sys/bus/pci/drivers/{drv}/unbind");
    let raced = thread::scope(|s| {
        let unbinder = s.spawn(|| fs::write(&unbind, &bdf).map_err(e("unbind")));
        // Wait until unbind refuses submissions (ioctls say the device is gone).
        let t = std::time::Instant::now();
        while ctx.ctx_stats().is_ok() && t.elapsed() < Duration::from_secs(3) {
            thread::sleep(Duration::from_millis(5));
        }
        let t = std::time::Instant::now();
        let freed = c.dst.madvise(0, c.dst.len, libc::MADV_DONTNEED);
        note(format!(
            "MADV_DONTNEED during unbind returned after {:?}",
            t.elapsed()
        ));
        let unbound = unbinder
            .join()
            .map_err(|_| "unbind thread panicked".to_string())
            .and_then(|r| r);
        freed.and(unbound)
    });
    thread::sleep(Duration::from_millis(u64::from(STALL_MS) + 1000));
    let counted = violations_and_refusals(bar0);
    drop(c);
    drop(ctx);
    fs::write(format!("/sys/bus/pci/drivers/{drv}/bind"), &bdf).map_err(e("bind"))?;
    raced?;
    // Unbind resets the device, which clears `DMA_REFUSED` (not the oracle's counters): only
    // the oracle's verdict is left to check.
    let (violations, _) = counted?;
    check(violations == 0, || {
        format!("the oracle saw {violations} accesses to pages freed during unbind")
    })?;
    device_copies(72)?;
    Ok(Outcome::Pass)
}
