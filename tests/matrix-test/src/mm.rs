//! Page-table events, one case each: the device's view must follow the CPU's (data checks),
//! the device entries must be gone when the syscall returns (QUERY), and the device must never
//! use a translation older than a completed invalidation (STALE_ACCESSES == 0).

use std::fs;
use std::time::Duration;

use mnic::{Access, DmaBuffer, Traffic};

use crate::util::*;
use mnic_guest_util::numa::{move_to_other_node, one_numa_node};

const RW: i32 = libc::PROT_READ | libc::PROT_WRITE;

/// hmm-tests anon_read / anon_write: the device reads what the CPU wrote and the CPU reads what
/// the device wrote, through on-demand faults, with no pinning.
pub fn anon_read_write() -> CaseResult {
    let ctx = ctxq()?;
    let len = 64 * PAGE;
    let m = Map::anon(len)?;
    m.fill(0, len, 1);
    let _r = reg_raw(&ctx, m.va(), len, Access::READ_WRITE)?;
    let s0 = stats(&ctx)?;
    check(query(&ctx, m.va(), len)?.valid() == 0, || {
        "entries before any DMA".into()
    })?;
    let got = dev_read(&ctx, m.va(), len).map_err(e("device read"))?;
    is_pattern(&got, 0, 1)?;
    let q = query(&ctx, m.va(), len)?;
    check(q.valid_4k == 64, || {
        format!("{} entries after read", q.valid())
    })?;
    dev_write(&ctx, m.va(), &pattern(0, len, 2)).map_err(e("device write"))?;
    m.check(0, len, 2)?;
    let s = stats(&ctx)?;
    check(s.faults > s0.faults, || "no device fault".into())?;
    note(format!(
        "faults {} (read then write: read-only leaves upgraded on write)",
        s.faults - s0.faults
    ));
    no_stale(&ctx)?;
    Ok(Outcome::Pass)
}

/// Swap-out under real memory pressure: a registered, device-mapped buffer in a memory cgroup
/// whose memory.max is far below what the group touches. Reclaim swaps registered pages out;
/// every page that left memory must have left the device table too; the device faults the data
/// back intact.
pub fn pageout_memcg_pressure() -> CaseResult {
    if !ensure_swap()? {
        return Ok(Outcome::Skip("no swap (no zram)".into()));
    }
    let Some(cg) = MemCg::new("mnic-matrix-pressure", "16M", true)? else {
        return Ok(Outcome::Skip("no memory cgroup controller".into()));
    };
    let blen = 8 << 20;
    in_child(|| {
        cg.join()?;
        let ctx = ctxq()?;
        let buf = Map::anon(blen)?;
        buf.fill(0, blen, 0x11);
        let _r = reg_raw(&ctx, buf.va(), blen, Access::READ_WRITE | Access::PREFETCH)?;
        let pages = blen / PAGE;
        let q = query(&ctx, buf.va(), blen)?;
        check(q.valid_4k as usize == pages, || {
            format!("{} of {pages} entries after prefetch", q.valid())
        })?;
        let swap0 = proc_value("/proc/meminfo", "SwapFree")?;
        let s0 = stats(&ctx)?;
        // The hog: 32 MiB touched in a 16 MiB group. Reclaim must take our buffer too.
        let hog = Map::anon(32 << 20)?;
        for off in (0..hog.len).step_by(PAGE) {
            hog.fill_byte(off, 8, 0x5a);
        }
        let res = buf.resident(0, blen)?;
        let gone: Vec<usize> = (0..pages).filter(|p| !res[*p]).collect();
        let swapped_kib = swap0.saturating_sub(proc_value("/proc/meminfo", "SwapFree")?);
        check(gone.len() >= 64, || {
            format!(
                "pressure reclaimed only {} of {pages} buffer pages (swap +{swapped_kib} KiB)",
                gone.len()
            )
        })?;
        // Every page that is out of memory is out of the device table.
        let mut stale_entries = 0;
        for p in &gone {
            if query(&ctx, buf.at(p * PAGE), PAGE)?.valid() != 0 {
                stale_entries += 1;
            }
        }
        check(stale_entries == 0, || {
            format!("{stale_entries} swapped-out pages still have device entries")
        })?;
        let valid_after = query(&ctx, buf.va(), blen)?.valid();
        drop(hog);
        let s1 = stats(&ctx)?;
        // Fault everything back through the device, 1 MiB at a time.
        for off in (0..blen).step_by(1 << 20) {
            let got = dev_read(&ctx, buf.at(off), 1 << 20).map_err(e("device read after swap"))?;
            is_pattern(&got, off, 0x11)?;
        }
        let s2 = stats(&ctx)?;
        check(s1.invalidations > s0.invalidations, || {
            "no invalidation during reclaim".into()
        })?;
        check(s2.faults > s1.faults, || {
            "no device fault after swap-out".into()
        })?;
        note(format!(
            "memcg 16M: {} of {pages} pages swapped out (swap +{swapped_kib} KiB, pgmajfault {}), \
             device entries {pages} -> {valid_after}; {} invalidations ({} entries), \
             {} faults to read it back",
            gone.len(),
            cg.stat("pgmajfault"),
            s1.invalidations - s0.invalidations,
            s1.entries_invalidated - s0.entries_invalidated,
            s2.faults - s1.faults
        ));
        no_stale(&ctx)
    })?;
    no_stale_fresh()?;
    Ok(Outcome::Pass)
}

/// MADV_DONTNEED on part of a device-mapped range: entries gone, the device reads zeroes there
/// and the old data elsewhere; a device write after lands in the fresh page.
pub fn anon_dontneed() -> CaseResult {
    let ctx = ctxq()?;
    let len = 16 * PAGE;
    let m = Map::anon(len)?;
    m.fill(0, len, 3);
    let _r = reg_raw(&ctx, m.va(), len, Access::READ_WRITE | Access::PREFETCH)?;
    let s0 = stats(&ctx)?;
    m.madvise(4 * PAGE, 4 * PAGE, libc::MADV_DONTNEED)?;
    let hole = query(&ctx, m.at(4 * PAGE), 4 * PAGE)?;
    check(hole.valid() == 0, || {
        format!("{} entries survived MADV_DONTNEED", hole.valid())
    })?;
    let rest = query(&ctx, m.va(), len)?.valid();
    check(rest == 12, || {
        format!("{rest} entries outside the hole, want 12")
    })?;
    let got = dev_read(&ctx, m.va(), len).map_err(e("device read"))?;
    is_pattern(&got[..4 * PAGE], 0, 3)?;
    is_zero(&got[4 * PAGE..8 * PAGE], "device read of the dropped pages")?;
    is_pattern(&got[8 * PAGE..], 8 * PAGE, 3)?;
    dev_write(&ctx, m.at(4 * PAGE), &pattern(4 * PAGE, 4 * PAGE, 4)).map_err(e("dev write"))?;
    m.check(4 * PAGE, 4 * PAGE, 4)?;
    let s = stats(&ctx)?;
    note(format!(
        "{} invalidations, {} entries invalidated",
        s.invalidations - s0.invalidations,
        s.entries_invalidated - s0.entries_invalidated
    ));
    no_stale(&ctx)?;
    Ok(Outcome::Pass)
}

/// A device *read* must not dirty the pages it reads: after MADV_FREE the pages are clean and
/// lazily freed; a device read faults them in through a read-write registration; reclaim must
/// still be free to discard them (they read as zero afterwards). Once every fill of a
/// writable registration marked its pages dirty, read or not, and they were kept (written
/// back to swap for nothing).
pub fn read_fault_keeps_pages_clean() -> CaseResult {
    if !ensure_swap()? {
        return Ok(Outcome::Skip("no swap".into()));
    }
    let ctx = ctxq()?;
    // MADV_FREE and MADV_PAGEOUT on one CPU: otherwise the page-out may find the pages still
    // queued (per CPU) for the lazy-free list, swap them out and keep their data, which this
    // case would blame on the device (it failed that way once in the debug soak).
    let _one_cpu = OnOneCpu::new(0)?;
    let len = 8 * PAGE;
    let m = Map::anon(len)?;
    m.fill(0, len, 8);
    let _r = reg_raw(&ctx, m.va(), len, Access::READ_WRITE)?;
    m.madvise(0, len, libc::MADV_FREE)?;
    is_pattern(
        &dev_read(&ctx, m.va(), len).map_err(e("device read"))?,
        0,
        8,
    )?;
    m.madvise(0, len, libc::MADV_PAGEOUT)?;
    let after = m.read(0, len);
    let kept = after.iter().filter(|b| **b != 0).count();
    note(format!(
        "{kept} bytes of the lazily freed pages kept after reclaim"
    ));
    is_zero(
        &after,
        "lazily freed pages after a device read and reclaim (the read dirtied them)",
    )?;
    no_stale(&ctx)?;
    Ok(Outcome::Pass)
}

/// MADV_FREE then reclaim: a page the CPU wrote after MADV_FREE keeps its data, and so must a
/// page the *device* wrote after MADV_FREE (the kernel may only discard clean lazy-free pages;
/// a device write must make the page dirty like a CPU write does).
pub fn anon_madv_free() -> CaseResult {
    if !ensure_swap()? {
        return Ok(Outcome::Skip("no swap".into()));
    }
    let ctx = ctxq()?;
    let len = 8 * PAGE;
    let m = Map::anon(len)?;
    m.fill(0, len, 5);
    let _r = reg_raw(&ctx, m.va(), len, Access::READ_WRITE | Access::PREFETCH)?;
    m.madvise(0, len, libc::MADV_FREE)?;
    let after_free = query(&ctx, m.va(), len)?;
    // The CPU writes page 0, the device writes page 1, pages 2.. stay clean.
    m.fill(0, PAGE, 6);
    dev_write(&ctx, m.at(PAGE), &pattern(PAGE, PAGE, 7)).map_err(e("device write"))?;
    m.madvise(0, len, libc::MADV_PAGEOUT)?;
    let res = m.resident(0, len)?;
    let clean = m.read(2 * PAGE, 6 * PAGE);
    let discarded = clean.iter().all(|b| *b == 0);
    m.check(0, PAGE, 6)
        .map_err(|w| format!("CPU write after MADV_FREE lost: {w}"))?;
    let dev_page = m.read(PAGE, PAGE);
    note(format!(
        "entries after MADV_FREE {}; resident after PAGEOUT {:?}; clean pages {}",
        after_free.valid(),
        res,
        if discarded {
            "discarded (zero)"
        } else {
            "kept"
        }
    ));
    is_pattern(&dev_page, PAGE, 7).map_err(|w| {
        format!(
            "device write after MADV_FREE lost on reclaim ({w}): the driver does not mark pages \
             it mapped writable dirty (no set_page_dirty on invalidation / write fault)"
        )
    })?;
    no_stale(&ctx)?;
    Ok(Outcome::Pass)
}

/// munmap: partial (inside one registration), spanning two adjacent registrations, then full.
pub fn munmap_partial_spanning() -> CaseResult {
    let ctx = ctxq()?;
    let len = 32 * PAGE;
    let m = Map::anon(len)?;
    m.fill(0, len, 8);
    let half = len / 2;
    let ra = reg_raw(&ctx, m.va(), half, Access::READ_WRITE | Access::PREFETCH)?;
    let rb = reg_raw(
        &ctx,
        m.at(half),
        half,
        Access::READ_WRITE | Access::PREFETCH,
    )?;
    check(query(&ctx, m.va(), len)?.valid() == 32, || {
        "prefetch incomplete".into()
    })?;
    let s0 = stats(&ctx)?;
    // Partial: two pages inside A.
    m.munmap(2 * PAGE, 2 * PAGE)?;
    check(query(&ctx, m.at(2 * PAGE), 2 * PAGE)?.valid() == 0, || {
        "entries survived a partial munmap".into()
    })?;
    let s1 = stats(&ctx)?;
    // Spanning: pages 12..20 cross from A into B.
    m.munmap(12 * PAGE, 8 * PAGE)?;
    let s2 = stats(&ctx)?;
    let hole = query(&ctx, m.at(12 * PAGE), 8 * PAGE)?.valid();
    check(hole == 0, || {
        format!("{hole} entries survived the spanning munmap")
    })?;
    let left = query(&ctx, m.va(), len)?.valid();
    check(left == 32 - 2 - 8, || {
        format!("{left} entries left, want 22")
    })?;
    want_abort(
        dev_read(&ctx, m.at(12 * PAGE), 8 * PAGE),
        &[libc::EFAULT],
        "device read of the unmapped span",
    )?;
    want_abort(
        dev_write(&ctx, m.at(2 * PAGE), &[1; PAGE]),
        &[libc::EFAULT],
        "device write into the unmapped pages",
    )?;
    is_pattern(&dev_read(&ctx, m.va(), 2 * PAGE).map_err(e("read"))?, 0, 8)?;
    is_pattern(
        &dev_read(&ctx, m.at(4 * PAGE), 8 * PAGE).map_err(e("read"))?,
        4 * PAGE,
        8,
    )?;
    is_pattern(
        &dev_read(&ctx, m.at(20 * PAGE), 12 * PAGE).map_err(e("read"))?,
        20 * PAGE,
        8,
    )?;
    check(s2.invalidations - s1.invalidations >= 2, || {
        format!(
            "spanning munmap: {} invalidation callbacks, want one per registration",
            s2.invalidations - s1.invalidations
        )
    })?;
    // Full.
    m.munmap(0, len)?;
    check(query(&ctx, m.va(), len)?.valid() == 0, || {
        "entries survived the full munmap".into()
    })?;
    let s3 = stats(&ctx)?;
    note(format!(
        "invalidations: partial {}, spanning {}, full {}; sync waits {}",
        s1.invalidations - s0.invalidations,
        s2.invalidations - s1.invalidations,
        s3.invalidations - s2.invalidations,
        s3.sync_waits - s0.sync_waits
    ));
    drop((ra, rb));
    no_stale(&ctx)?;
    Ok(Outcome::Pass)
}

fn mremap(
    old: usize,
    old_len: usize,
    new_len: usize,
    flags: i32,
    new: usize,
) -> Result<usize, String> {
    // SAFETY: remapping our own mapping (to `new`, a range we own, with MREMAP_FIXED).
    let p = unsafe {
        libc::mremap(
            old as *mut _,
            old_len,
            new_len,
            flags,
            new as *mut libc::c_void,
        )
    };
    check(p != libc::MAP_FAILED, || os_err("mremap"))?;
    Ok(p as usize)
}

/// mremap: move (the old range's entries go, the device follows the data to the new address
/// once registered there) and grow (in place and with a move).
pub fn mremap_move_grow() -> CaseResult {
    let ctx = ctxq()?;
    let len = 8 * PAGE;
    let a = Map::anon(len)?;
    a.fill(0, len, 9);
    let dst = Map::anon(len)?; // a place to move to
    let ra = reg_raw(&ctx, a.va(), len, Access::READ_WRITE | Access::PREFETCH)?;
    let s0 = stats(&ctx)?;
    let moved = mremap(
        a.ptr,
        len,
        len,
        libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
        dst.ptr,
    )?;
    std::mem::forget(dst); // now `b` owns that range
    let b = Map::adopt(moved, len);
    check(query(&ctx, a.va(), len)?.valid() == 0, || {
        "entries of the old range survived mremap".into()
    })?;
    want_abort(
        dev_read(&ctx, a.va(), len),
        &[libc::EFAULT],
        "device read of the old range",
    )?;
    let s1 = stats(&ctx)?;
    // Unregistered new range: refused; registered: the data moved with the pages.
    want_abort(
        dev_read(&ctx, b.va(), len),
        &[libc::EFAULT],
        "device read of the unregistered new range",
    )?;
    let rb = reg_raw(&ctx, b.va(), len, Access::READ_WRITE)?;
    is_pattern(&dev_read(&ctx, b.va(), len).map_err(e("read"))?, 0, 9)?;
    dev_write(&ctx, b.va(), &pattern(0, len, 10)).map_err(e("write"))?;
    b.check(0, len, 10)?;
    drop((ra, rb));
    std::mem::forget(a); // unmapped by the move

    // Grow in place: 4 pages with 4 free pages after them, a registration over all 8.
    let c = Map::anon(len)?;
    c.munmap(4 * PAGE, 4 * PAGE)?;
    c.fill(0, 4 * PAGE, 11);
    let rc = reg_raw(&ctx, c.va(), len, Access::READ_WRITE)?;
    is_pattern(&dev_read(&ctx, c.va(), 4 * PAGE).map_err(e("read"))?, 0, 11)?;
    want_abort(
        dev_read(&ctx, c.at(4 * PAGE), 4 * PAGE),
        &[libc::EFAULT],
        "read beyond the mapping",
    )?;
    let grown = mremap(c.ptr, 4 * PAGE, len, 0, 0)?;
    check(grown == c.ptr, || "in-place grow moved".into())?;
    let got = dev_read(&ctx, c.va(), len).map_err(e("read grown"))?;
    is_pattern(&got[..4 * PAGE], 0, 11)?;
    is_zero(&got[4 * PAGE..], "grown part")?;
    // Grow with a move (64 pages do not fit in place).
    let c_ptr = c.ptr;
    let far = mremap(c_ptr, len, 64 * PAGE, libc::MREMAP_MAYMOVE, 0)?;
    let d = Map::adopt(far, 64 * PAGE);
    std::mem::forget(c);
    if far != c_ptr {
        check(query(&ctx, c_ptr as u64, len)?.valid() == 0, || {
            "entries survived the grow-and-move".into()
        })?;
    }
    let rd = reg_raw(&ctx, d.va(), 64 * PAGE, Access::READ_WRITE)?;
    let got = dev_read(&ctx, d.va(), 64 * PAGE).map_err(e("read moved"))?;
    is_pattern(&got[..4 * PAGE], 0, 11)?;
    is_zero(&got[4 * PAGE..], "grown part after move")?;
    let s2 = stats(&ctx)?;
    note(format!(
        "move: {} invalidations; whole case {} invalidations, {} faults",
        s1.invalidations - s0.invalidations,
        s2.invalidations - s0.invalidations,
        s2.faults - s0.faults
    ));
    drop((rc, rd));
    no_stale(&ctx)?;
    Ok(Outcome::Pass)
}

/// hmm-tests anon_write_prot: mprotect read-only removes writable device entries; a device
/// write then faults and is refused, a read works; after mprotect back the write succeeds.
/// PROT_NONE refuses both.
pub fn mprotect_ro_rw() -> CaseResult {
    let ctx = ctxq()?;
    let len = 8 * PAGE;
    let m = Map::anon(len)?;
    m.fill(0, len, 12);
    let _r = reg_raw(&ctx, m.va(), len, Access::READ_WRITE | Access::PREFETCH)?;
    check(query(&ctx, m.va(), len)?.writable == 8, || {
        "prefetch did not make writable entries".into()
    })?;
    m.mprotect(0, len, libc::PROT_READ)?;
    let q = query(&ctx, m.va(), len)?;
    check(q.writable == 0, || {
        format!("{} writable entries after mprotect(PROT_READ)", q.writable)
    })?;
    let errno = want_abort(
        dev_write(&ctx, m.va(), &pattern(0, len, 13)),
        &[libc::EPERM, libc::EFAULT, libc::EACCES],
        "device write to a read-only mapping",
    )?;
    m.check(0, len, 12)
        .map_err(|w| format!("refused write changed memory: {w}"))?;
    is_pattern(
        &dev_read(&ctx, m.va(), len).map_err(e("read of RO"))?,
        0,
        12,
    )?;
    let q = query(&ctx, m.va(), len)?;
    check(q.valid() > 0 && q.writable == 0, || {
        format!("after a read of RO memory: {q:?}")
    })?;
    m.mprotect(0, len, libc::PROT_NONE)?;
    check(query(&ctx, m.va(), len)?.valid() == 0, || {
        "entries survived PROT_NONE".into()
    })?;
    let errno_none = want_abort(
        dev_read(&ctx, m.va(), len),
        &[libc::EFAULT, libc::EPERM, libc::EACCES],
        "device read of PROT_NONE",
    )?;
    m.mprotect(0, len, RW)?;
    dev_write(&ctx, m.va(), &pattern(0, len, 13)).map_err(e("write after mprotect back"))?;
    m.check(0, len, 13)?;
    note(format!(
        "write to PROT_READ aborted with errno {errno}, read of PROT_NONE with errno {errno_none}"
    ));
    no_stale(&ctx)?;
    Ok(Outcome::Pass)
}

/// fork + COW, both directions (hmm-tests anon_write_child): the parent's device writes land in
/// the parent's pages, the child's CPU view is untouched; a parent CPU write after fork (COW
/// break) is what the parent's device then reads; the child's own context reads and writes the
/// child's copy, never the parent's.
pub fn fork_cow_both() -> CaseResult {
    let ctx = ctxq()?;
    let len = 4 * PAGE;
    let m = Map::anon(len)?;
    m.fill(0, len, 20);
    let _r = reg_raw(&ctx, m.va(), len, Access::READ_WRITE | Access::PREFETCH)?;
    check(query(&ctx, m.va(), len)?.writable == 4, || {
        "no writable entries".into()
    })?;
    let s0 = stats(&ctx)?;
    let m2 = &m;
    fork_pair(
        |link| {
            link.recv()?; // the parent has done its writes
            m2.check(0, 2 * PAGE, 20)
                .map_err(|w| format!("child sees the parent's writes: {w}"))?;
            let cctx = ctxq()?;
            let _cr = reg_raw(&cctx, m2.va(), len, Access::READ_WRITE)?;
            is_pattern(
                &dev_read(&cctx, m2.va(), PAGE).map_err(e("child device read"))?,
                0,
                20,
            )
            .map_err(|w| format!("child's device read: {w}"))?;
            dev_write(&cctx, m2.at(2 * PAGE), &pattern(2 * PAGE, PAGE, 23))
                .map_err(e("child device write"))?;
            m2.check(2 * PAGE, PAGE, 23)
                .map_err(|w| format!("child's device write not in the child: {w}"))?;
            link.send(1);
            link.recv()?;
            Ok(())
        },
        |link, _pid| {
            let q = query(&ctx, m.va(), len)?;
            check(q.writable == 0, || {
                format!("{} writable device entries survived fork", q.writable)
            })?;
            // CPU write in the parent (COW break), then the device reads: the new data.
            m.fill(0, PAGE, 21);
            is_pattern(&dev_read(&ctx, m.va(), PAGE).map_err(e("read"))?, 0, 21)
                .map_err(|w| format!("parent device read after COW break: {w}"))?;
            // Device write in the parent.
            dev_write(&ctx, m.at(PAGE), &pattern(PAGE, PAGE, 22)).map_err(e("write"))?;
            m.check(PAGE, PAGE, 22)
                .map_err(|w| format!("parent device write not in the parent: {w}"))?;
            link.send(1);
            link.recv()?;
            m.check(2 * PAGE, PAGE, 20)
                .map_err(|w| format!("child's device write reached the parent: {w}"))?;
            is_pattern(
                &dev_read(&ctx, m.at(2 * PAGE), PAGE).map_err(e("read"))?,
                2 * PAGE,
                20,
            )?;
            link.send(2);
            Ok(())
        },
    )?;
    let s = stats(&ctx)?;
    note(format!(
        "fork: {} invalidations, {} faults in the parent",
        s.invalidations - s0.invalidations,
        s.faults - s0.faults
    ));
    no_stale(&ctx)?;
    Ok(Outcome::Pass)
}

/// fork with MADV_DONTFORK (the child has no mapping) and MADV_WIPEONFORK (the child sees
/// zeroes); the parent's device keeps reading and writing the parent's data.
pub fn fork_dontfork_wipeonfork() -> CaseResult {
    let ctx = ctxq()?;
    let len = 4 * PAGE;
    let x = Map::anon(len)?;
    let y = Map::anon(len)?;
    x.madvise(0, len, libc::MADV_DONTFORK)?;
    y.madvise(0, len, libc::MADV_WIPEONFORK)?;
    x.fill(0, len, 30);
    y.fill(0, len, 31);
    let _rx = reg_raw(&ctx, x.va(), len, Access::READ_WRITE | Access::PREFETCH)?;
    let _ry = reg_raw(&ctx, y.va(), len, Access::READ_WRITE | Access::PREFETCH)?;
    let (xr, yr) = (&x, &y);
    let (qx, qy) = fork_pair(
        |link| {
            link.recv()?;
            let mut v = [0u8; 4];
            // SAFETY: mincore on a range that must not be mapped in the child.
            let rc = unsafe { libc::mincore(xr.ptr as *mut _, len, v.as_mut_ptr()) };
            check(rc != 0 && errno() == libc::ENOMEM, || {
                "MADV_DONTFORK range is mapped in the child".into()
            })?;
            is_zero(&yr.read(0, len), "MADV_WIPEONFORK range in the child")?;
            // The hole is free address space: the child's own context (its queues, its
            // doorbell and shadow pages) could be placed there, and the device would then
            // rightly read that. Hold the hole while the context is made, then free it.
            // SAFETY: a fresh PROT_NONE mapping over the range mincore just showed unmapped;
            // MAP_FIXED_NOREPLACE fails rather than replace anything.
            let hold = unsafe {
                libc::mmap(
                    xr.ptr as *mut _,
                    len,
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                    -1,
                    0,
                )
            };
            check(hold == xr.ptr as *mut _, || {
                format!("cannot hold the parent-only range: errno {}", errno())
            })?;
            let cctx = ctxq();
            // SAFETY: unmaps exactly the placeholder mapped above.
            unsafe { libc::munmap(hold, len) };
            let cctx = cctx?;
            let _c = reg_raw(&cctx, xr.va(), len, Access::READ)?;
            want_abort(
                dev_read(&cctx, xr.va(), len),
                &[libc::EFAULT],
                "child's device read of the parent-only range",
            )?;
            Ok(())
        },
        |link, _| {
            let qx = query(&ctx, x.va(), len)?;
            let qy = query(&ctx, y.va(), len)?;
            dev_write(&ctx, x.va(), &pattern(0, len, 32)).map_err(e("write x"))?;
            dev_write(&ctx, y.va(), &pattern(0, len, 33)).map_err(e("write y"))?;
            x.check(0, len, 32)?;
            y.check(0, len, 33)?;
            link.send(1);
            Ok((qx, qy))
        },
    )?;
    note(format!(
        "parent entries kept across fork: DONTFORK {}/4 writable {}, WIPEONFORK {}/4 writable {}",
        qx.valid(),
        qx.writable,
        qy.valid(),
        qy.writable
    ));
    no_stale(&ctx)?;
    Ok(Outcome::Pass)
}

fn thp_enabled() -> bool {
    fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .is_ok_and(|s| s.contains("[always]") || s.contains("[madvise]"))
}

const MADV_COLLAPSE: i32 = 25;

/// THP (hmm-tests anon_write_huge / compound): 2 MiB device leaves are used for THP-backed
/// memory; a split (mprotect of one page, munmap of one page) removes them and the data stays
/// right; MADV_COLLAPSE makes a huge page again and the device maps it huge again.
pub fn thp_huge_split_collapse() -> CaseResult {
    if !thp_enabled() {
        return Ok(Outcome::Skip("THP disabled".into()));
    }
    let ctx = ctxq()?;
    let huge = 2 << 20;
    let buf = DmaBuffer::new_huge(2 * huge).map_err(e("huge buffer"))?;
    let m = Map::adopt(buf.as_mut_ptr() as usize, 2 * huge);
    m.fill(0, 2 * huge, 40);
    let _r = reg_raw(&ctx, m.va(), 2 * huge, Access::READ_WRITE)?;
    is_pattern(&dev_read(&ctx, m.va(), 2 * huge).map_err(e("read"))?, 0, 40)?;
    let q = query(&ctx, m.va(), 2 * huge)?;
    let anon_huge = proc_value("/proc/meminfo", "AnonHugePages")?;
    if q.valid_2m == 0 && anon_huge == 0 {
        std::mem::forget(m);
        return Ok(Outcome::Skip("the kernel gave no huge page".into()));
    }
    check(q.valid_2m == 2, || {
        format!("{q:?} for two THPs (AnonHugePages {anon_huge} KiB)")
    })?;
    let s0 = stats(&ctx)?;
    // Split the first block: one page read-only.
    m.mprotect(PAGE * 256, PAGE, libc::PROT_READ)?;
    let q1 = query(&ctx, m.va(), huge)?;
    check(q1.valid_2m == 0, || {
        format!("huge leaf survived the split by mprotect: {q1:?}")
    })?;
    check(query(&ctx, m.at(huge), huge)?.valid_2m == 1, || {
        "the other block lost its huge leaf".into()
    })?;
    is_pattern(
        &dev_read(&ctx, m.va(), huge).map_err(e("read split"))?,
        0,
        40,
    )?;
    let q1b = query(&ctx, m.va(), huge)?;
    check(q1b.valid_2m == 0 && q1b.valid_4k == 512, || {
        format!("after reading the split block: {q1b:?}")
    })?;
    want_abort(
        dev_write(&ctx, m.at(PAGE * 256), &[7; PAGE]),
        &[libc::EPERM, libc::EFAULT],
        "device write to the read-only page of the split THP",
    )?;
    dev_write(&ctx, m.at(PAGE * 257), &pattern(PAGE * 257, PAGE, 41)).map_err(e("write"))?;
    m.check(PAGE * 257, PAGE, 41)?;
    m.mprotect(PAGE * 256, PAGE, RW)?;
    // Split the second block: munmap one page.
    m.munmap(huge + PAGE * 100, PAGE)?;
    let q2 = query(&ctx, m.at(huge), huge)?;
    check(q2.valid_2m == 0, || {
        format!("huge leaf survived a partial munmap: {q2:?}")
    })?;
    is_pattern(
        &dev_read(&ctx, m.at(huge), PAGE * 100).map_err(e("read"))?,
        huge,
        40,
    )?;
    is_pattern(
        &dev_read(&ctx, m.at(huge + PAGE * 101), huge - PAGE * 101).map_err(e("read"))?,
        huge + PAGE * 101,
        40,
    )?;
    want_abort(
        dev_read(&ctx, m.at(huge + PAGE * 100), PAGE),
        &[libc::EFAULT],
        "read of the unmapped page",
    )?;
    // Collapse the first block back into a THP.
    let s1 = stats(&ctx)?;
    let collapse = m.madvise(0, huge, MADV_COLLAPSE);
    let collapsed = match &collapse {
        Ok(()) => {
            check(query(&ctx, m.va(), huge)?.valid() == 0, || {
                "entries survived MADV_COLLAPSE".into()
            })?;
            let mut want = pattern(0, huge, 40);
            want[PAGE * 257..PAGE * 258].copy_from_slice(&pattern(PAGE * 257, PAGE, 41));
            let got = dev_read(&ctx, m.va(), huge).map_err(e("read collapsed"))?;
            check(got == want, || "data wrong after collapse".into())?;
            let q3 = query(&ctx, m.va(), huge)?;
            check(q3.valid_2m == 1, || {
                format!("collapsed THP not mapped huge by the device: {q3:?}")
            })?;
            "collapsed, device maps it huge again".to_string()
        }
        Err(w) => format!("MADV_COLLAPSE unavailable ({w})"),
    };
    let s2 = stats(&ctx)?;
    note(format!(
        "2 THPs as {} huge leaves; split invalidations {}; {collapsed}; collapse invalidations {}",
        q.valid_2m,
        s1.invalidations - s0.invalidations,
        s2.invalidations - s1.invalidations
    ));
    std::mem::forget(m); // the DmaBuffer unmaps it
    drop(buf);
    no_stale(&ctx)?;
    Ok(Outcome::Pass)
}

/// Page migration between the two fake NUMA nodes (move_pages): device entries of migrated
/// pages are gone when the syscall returns, the device faults the new pages in with the same
/// data; then compaction with device traffic running.
pub fn migrate_numa() -> CaseResult {
    if let Some(skip) = one_numa_node() {
        return Ok(skip);
    }
    let ctx = ctxq()?;
    let n = 16;
    let len = n * PAGE;
    let m = Map::anon(len)?;
    m.fill(0, len, 50);
    let _r = reg_raw(&ctx, m.va(), len, Access::READ_WRITE | Access::PREFETCH)?;
    let s0 = stats(&ctx)?;
    let (from, to, status) = move_to_other_node(&m, n)?;
    let moved = status.iter().filter(|s| **s == to).count();
    check(moved > 0, || format!("no page migrated: status {status:?}"))?;
    let mut survivors = 0;
    for (i, s) in status.iter().enumerate() {
        if *s == to && query(&ctx, m.at(i * PAGE), PAGE)?.valid() != 0 {
            survivors += 1;
        }
    }
    check(survivors == 0, || {
        format!("{survivors} migrated pages still have device entries")
    })?;
    let s1 = stats(&ctx)?;
    is_pattern(&dev_read(&ctx, m.va(), len).map_err(e("read"))?, 0, 50)?;
    dev_write(&ctx, m.va(), &pattern(0, len, 51)).map_err(e("write"))?;
    m.check(0, len, 51)?;
    let s2 = stats(&ctx)?;
    check(s2.faults > s1.faults, || "no fault after migration".into())?;
    // Compaction while the device hammers a buffer; its data must survive.
    let big = Map::anon(4 << 20)?;
    big.fill(0, big.len, 52);
    let _rb = reg_raw(&ctx, big.va(), big.len, Access::READ_WRITE)?;
    let t = Traffic::new(big.va(), big.len as u32)
        .op_size(4096)
        .ops(20_000)
        .build()
        .map_err(e("traffic"))?;
    ctx.post(&t).map_err(e("post"))?;
    let c0 = proc_value("/proc/vmstat", "compact_migrate_scanned").unwrap_or(0);
    fs::write("/proc/sys/vm/compact_memory", "1").map_err(e("compact_memory"))?;
    let c1 = proc_value("/proc/vmstat", "compact_migrate_scanned").unwrap_or(0);
    ctx.wait(TIMEOUT)
        .map_err(e("traffic wait"))?
        .result()
        .map_err(e("traffic"))?;
    is_pattern(
        &dev_read(&ctx, big.va(), big.len).map_err(e("read"))?,
        0,
        52,
    )?;
    big.check(0, big.len, 52)?;
    let s3 = stats(&ctx)?;
    note(format!(
        "move_pages node {from} -> {to}: {moved}/{n} pages, {} invalidations, {} faults back; \
         compaction scanned {} pages, {} invalidations during it",
        s1.invalidations - s0.invalidations,
        s2.faults - s1.faults,
        c1.saturating_sub(c0),
        s3.invalidations - s2.invalidations
    ));
    no_stale(&ctx)?;
    Ok(Outcome::Pass)
}

/// mlock is not pinning: a locked, registered page may still migrate (move_pages), and its
/// device entry goes with it before the syscall returns; the device then faults the new page
/// in. munlock changes no PTE, so it leaves the device entries alone.
pub fn mlock_migrate() -> CaseResult {
    if let Some(skip) = one_numa_node() {
        return Ok(skip);
    }
    let ctx = ctxq()?;
    let n = 8;
    let len = n * PAGE;
    let m = Map::anon(len)?;
    m.fill(0, len, 55);
    // SAFETY: mlock(2) of a mapping this case owns; it only changes residency policy.
    let rc = unsafe { libc::mlock(m.ptr as *const libc::c_void, len) };
    check(rc == 0, || os_err("mlock"))?;
    let locked = proc_value("/proc/self/status", "VmLck")?;
    check(locked >= (len / 1024) as u64, || {
        format!("VmLck {locked} kB after mlock of {} kB", len / 1024)
    })?;
    let _r = reg_raw(&ctx, m.va(), len, Access::READ_WRITE | Access::PREFETCH)?;
    check(query(&ctx, m.va(), len)?.writable == n as u64, || {
        "prefetch did not map every locked page writable".into()
    })?;
    let s0 = stats(&ctx)?;
    let (_, to, status) = move_to_other_node(&m, n)?;
    let moved: Vec<usize> = (0..n).filter(|&i| status[i] == to).collect();
    check(!moved.is_empty(), || {
        format!("no locked page migrated: status {status:?}")
    })?;
    for &i in &moved {
        let q = query(&ctx, m.at(i * PAGE), PAGE)?;
        check(q.valid() == 0, || {
            format!("locked page {i} migrated but its device entry survived")
        })?;
    }
    let s1 = stats(&ctx)?;
    is_pattern(&dev_read(&ctx, m.va(), len).map_err(e("read"))?, 0, 55)?;
    dev_write(&ctx, m.va(), &pattern(0, len, 56)).map_err(e("write"))?;
    m.check(0, len, 56)?;
    let before_munlock = query(&ctx, m.va(), len)?;
    // SAFETY: as for mlock above.
    let rc = unsafe { libc::munlock(m.ptr as *const libc::c_void, len) };
    check(rc == 0, || os_err("munlock"))?;
    let after_munlock = query(&ctx, m.va(), len)?;
    check(after_munlock.valid() == before_munlock.valid(), || {
        format!("munlock dropped device entries: {before_munlock:?} -> {after_munlock:?}")
    })?;
    note(format!(
        "{}/{n} locked pages moved to node {to}: {} invalidations",
        moved.len(),
        s1.invalidations - s0.invalidations
    ));
    no_stale(&ctx)?;
    Ok(Outcome::Pass)
}

/// KSM's tunables, restored (and its merged pages unmerged) on drop, whatever the case did.
struct Ksm {
    saved: Vec<(&'static str, String)>,
}

const KSM: &str = "/sys/kernel/mm/ksm";

impl Ksm {
    /// Starts ksmd scanning as fast as it can.
    fn start() -> Result<Ksm, String> {
        let mut saved = Vec::new();
        for (knob, value) in [
            ("pages_to_scan", "4096"),
            ("sleep_millisecs", "0"),
            ("run", "1"),
        ] {
            let path = format!("{KSM}/{knob}");
            let old = fs::read_to_string(&path).map_err(e("KSM knob (CONFIG_KSM?)"))?;
            saved.push((knob, old.trim().to_string()));
            fs::write(&path, value).map_err(e("KSM knob"))?;
        }
        Ok(Ksm { saved })
    }
}

impl Drop for Ksm {
    fn drop(&mut self) {
        // run=2 unmerges everything, so no merged page outlives the case.
        let _ = fs::write(format!("{KSM}/run"), "2");
        for (knob, old) in self.saved.iter().rev() {
            let _ = fs::write(format!("{KSM}/{knob}"), old);
        }
    }
}

/// KSM merges identical registered pages into one write-protected page. Pages are not pinned,
/// so KSM can merge them at all; when it does, every device entry of a merged page is gone (or
/// read-only) by the time ksmd swaps the PTE, the device reads the shared page, and a device
/// write breaks COW into a private page like a CPU write does: the other merged pages keep
/// their content.
pub fn ksm_merge_cow() -> CaseResult {
    let ctx = ctxq()?;
    let n = 8;
    let len = n * PAGE;
    let m = Map::anon(len)?;
    m.madvise(0, len, libc::MADV_MERGEABLE)?;
    m.fill_byte(0, len, 0x5a);
    let _r = reg_raw(&ctx, m.va(), len, Access::READ_WRITE | Access::PREFETCH)?;
    check(query(&ctx, m.va(), len)?.writable == n as u64, || {
        "prefetch did not map every page writable".into()
    })?;
    let s0 = stats(&ctx)?;
    let ksm = Ksm::start()?;
    let merged = || proc_value("/proc/self/ksm_stat", "ksm_merging_pages");
    let t0 = std::time::Instant::now();
    while merged()? < n as u64 {
        check(t0.elapsed() < Duration::from_secs(60), || {
            format!(
                "ksmd merged {} of {n} identical pages in 60 s",
                merged().unwrap_or(0)
            )
        })?;
        std::thread::sleep(Duration::from_millis(50));
    }
    let merge_time = t0.elapsed();
    let q = query(&ctx, m.va(), len)?;
    check(q.writable == 0, || {
        format!("merged pages still device-writable: {q:?}")
    })?;
    let s1 = stats(&ctx)?;
    check(s1.invalidations > s0.invalidations, || {
        "KSM merged registered pages without invalidating the device".into()
    })?;
    let got = dev_read(&ctx, m.va(), len).map_err(e("device read of merged pages"))?;
    check(got.iter().all(|b| *b == 0x5a), || {
        "device read of the merged pages differs".into()
    })?;
    // The device writes page 3: COW must give this process a private page for it.
    dev_write(&ctx, m.at(3 * PAGE), &pattern(3 * PAGE, PAGE, 57)).map_err(e("device write"))?;
    m.check(3 * PAGE, PAGE, 57)?;
    for i in (0..n).filter(|&i| i != 3) {
        check(m.read(i * PAGE, PAGE).iter().all(|b| *b == 0x5a), || {
            format!("page {i} changed: the device wrote the shared KSM page")
        })?;
    }
    // ksmd drops the written page from its count on its next pass: a figure, not a check.
    let still = merged()?;
    drop(ksm);
    note(format!(
        "{n} pages merged in {} ms ({} invalidations); device write broke COW ({still} counted \
         merged right after)",
        merge_time.as_millis(),
        s1.invalidations - s0.invalidations
    ));
    no_stale(&ctx)?;
    Ok(Outcome::Pass)
}

fn memfd(name: &str, len: usize) -> Result<i32, String> {
    let cname = std::ffi::CString::new(name).unwrap_or_default();
    // SAFETY: memfd_create with a NUL-terminated name.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
    check(fd >= 0, || os_err("memfd_create"))?;
    // SAFETY: our fd.
    let rc = unsafe { libc::ftruncate(fd, len as i64) };
    check(rc == 0, || os_err("ftruncate"))?;
    Ok(fd)
}

/// Shared memory seen by two processes, each through its own context: a memfd MAP_SHARED
/// inherited by a child. The child's device writes are what the parent's CPU and device read;
/// the child's munmap does not touch the parent's entries; punching a hole in the file
/// invalidates the parent's entries.
pub fn shared_memfd_two_processes() -> CaseResult {
    let ctx = ctxq()?;
    let len = 16 * PAGE;
    let fd = memfd("mnic-matrix", len)?;
    let m = Map::new(len, RW, libc::MAP_SHARED, fd, 0)?;
    m.fill(0, len, 60);
    let _r = reg_raw(&ctx, m.va(), len, Access::READ_WRITE | Access::PREFETCH)?;
    let mr = &m;
    fork_pair(
        |_link| {
            let cctx = ctxq()?;
            let _cr = reg_raw(&cctx, mr.va(), len, Access::READ_WRITE)?;
            is_pattern(
                &dev_read(&cctx, mr.va(), len).map_err(e("child read"))?,
                0,
                60,
            )?;
            dev_write(&cctx, mr.va(), &pattern(0, 8 * PAGE, 61)).map_err(e("child write"))?;
            mr.munmap(0, len)?;
            Ok(())
        },
        |_, _| Ok(()),
    )?;
    let kept = query(&ctx, m.va(), len)?.valid();
    m.check(0, 8 * PAGE, 61)
        .map_err(|w| format!("parent CPU does not see the child's device write: {w}"))?;
    let got = dev_read(&ctx, m.va(), len).map_err(e("parent read"))?;
    is_pattern(&got[..8 * PAGE], 0, 61)
        .map_err(|w| format!("parent device does not see the child's device write: {w}"))?;
    is_pattern(&got[8 * PAGE..], 8 * PAGE, 60)?;
    // Punch a hole: the file's pages go, so do the parent's entries.
    // SAFETY: fallocate on our memfd.
    let rc = unsafe {
        libc::fallocate(
            fd,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            (12 * PAGE) as i64,
            (4 * PAGE) as i64,
        )
    };
    check(rc == 0, || os_err("fallocate(PUNCH_HOLE)"))?;
    let q = query(&ctx, m.at(12 * PAGE), 4 * PAGE)?;
    check(q.valid() == 0, || {
        format!("{} entries survived a hole punch", q.valid())
    })?;
    is_zero(
        &dev_read(&ctx, m.at(12 * PAGE), 4 * PAGE).map_err(e("read hole"))?,
        "device read of the punched hole",
    )?;
    note(format!(
        "parent entries after the child's munmap and exit: {kept}/16"
    ));
    // SAFETY: our fd.
    unsafe { libc::close(fd) };
    no_stale(&ctx)?;
    Ok(Outcome::Pass)
}

/// hmm-tests file_read / file_write on a tmpfs file: the device reads what write(2) wrote, a
/// device write through MAP_SHARED is what pread(2) reads; through MAP_PRIVATE it is not.
pub fn file_read_write() -> CaseResult {
    let ctx = ctxq()?;
    let len = 8 * PAGE;
    let path = "/tmp/mnic-matrix-file";
    fs::write(path, pattern(0, len, 70)).map_err(e("write file"))?;
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(e("open file"))?;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    let fd = f.as_raw_fd();
    let shared = Map::new(len, RW, libc::MAP_SHARED, fd, 0)?;
    let private = Map::new(len, RW, libc::MAP_PRIVATE, fd, 0)?;
    let _rs = reg_raw(&ctx, shared.va(), len, Access::READ_WRITE)?;
    let _rp = reg_raw(&ctx, private.va(), len, Access::READ_WRITE)?;
    is_pattern(&dev_read(&ctx, shared.va(), len).map_err(e("read"))?, 0, 70)?;
    is_pattern(
        &dev_read(&ctx, private.va(), len).map_err(e("read"))?,
        0,
        70,
    )?;
    dev_write(&ctx, shared.va(), &pattern(0, 4 * PAGE, 71)).map_err(e("write shared"))?;
    let mut back = vec![0u8; len];
    f.read_exact_at(&mut back, 0).map_err(e("pread"))?;
    is_pattern(&back[..4 * PAGE], 0, 71)
        .map_err(|w| format!("pread after a device write via MAP_SHARED: {w}"))?;
    is_pattern(&back[4 * PAGE..], 4 * PAGE, 70)?;
    // The private mapping saw the shared write for pages it had not COWed yet; a device write
    // through it stays private.
    dev_write(&ctx, private.at(4 * PAGE), &pattern(4 * PAGE, 4 * PAGE, 72))
        .map_err(e("write private"))?;
    private.check(4 * PAGE, 4 * PAGE, 72)?;
    f.read_exact_at(&mut back, 0).map_err(e("pread"))?;
    is_pattern(&back[4 * PAGE..], 4 * PAGE, 70)
        .map_err(|w| format!("a device write via MAP_PRIVATE reached the file: {w}"))?;
    // write(2) to the file: the device sees it through the shared mapping.
    f.write_all_at(&pattern(0, PAGE, 73), 0)
        .map_err(e("pwrite"))?;
    is_pattern(
        &dev_read(&ctx, shared.va(), PAGE).map_err(e("read"))?,
        0,
        73,
    )?;
    // Truncate: the mapping's pages go, and so do the device entries.
    f.set_len((4 * PAGE) as u64).map_err(e("truncate"))?;
    check(
        query(&ctx, shared.at(4 * PAGE), 4 * PAGE)?.valid() == 0,
        || "entries survived truncation".into(),
    )?;
    want_abort(
        dev_read(&ctx, shared.at(4 * PAGE), PAGE),
        &[libc::EFAULT],
        "device read beyond EOF",
    )?;
    drop((shared, private));
    let _ = fs::remove_file(path);
    no_stale(&ctx)?;
    Ok(Outcome::Pass)
}

/// hmm-tests mixedmap-like: one registration over consecutive VMAs of different kinds (anon,
/// shared file, private file, PROT_NONE, hole); the device gets each one's semantics.
pub fn mixedmap() -> CaseResult {
    let ctx = ctxq()?;
    let len = 20 * PAGE;
    let m = Map::anon(len)?; // reserve, then carve
    let path = "/tmp/mnic-matrix-mixed";
    fs::write(path, pattern(0, 8 * PAGE, 80)).map_err(e("write file"))?;
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(e("open"))?;
    use std::os::fd::AsRawFd;
    let fd = f.as_raw_fd();
    let fixed = |off: usize, n: usize, flags: i32, foff: i64| -> Result<(), String> {
        // SAFETY: MAP_FIXED over a part of our own reservation `m`.
        let p = unsafe {
            libc::mmap(
                (m.ptr + off) as *mut _,
                n,
                RW,
                flags | libc::MAP_FIXED,
                fd,
                foff,
            )
        };
        check(p != libc::MAP_FAILED, || os_err("mmap fixed"))
    };
    m.fill(0, 4 * PAGE, 81); // anon: pages 0..4
    fixed(4 * PAGE, 4 * PAGE, libc::MAP_SHARED, 0)?; // shared file: 4..8
    fixed(8 * PAGE, 4 * PAGE, libc::MAP_PRIVATE, (4 * PAGE) as i64)?; // private file: 8..12
    m.mprotect(12 * PAGE, 4 * PAGE, libc::PROT_NONE)?; // 12..16
    m.munmap(16 * PAGE, 4 * PAGE)?; // hole: 16..20
    let _r = reg_raw(&ctx, m.va(), len, Access::READ_WRITE)?;
    is_pattern(&dev_read(&ctx, m.va(), 4 * PAGE).map_err(e("anon"))?, 0, 81)?;
    is_pattern(
        &dev_read(&ctx, m.at(4 * PAGE), 4 * PAGE).map_err(e("shared"))?,
        0,
        80,
    )?;
    is_pattern(
        &dev_read(&ctx, m.at(8 * PAGE), 4 * PAGE).map_err(e("private"))?,
        4 * PAGE,
        80,
    )?;
    // One copy across anon + shared + private works.
    let got = dev_read(&ctx, m.va(), 12 * PAGE).map_err(e("across"))?;
    is_pattern(&got[4 * PAGE..8 * PAGE], 0, 80)?;
    want_abort(
        dev_read(&ctx, m.at(12 * PAGE), 4 * PAGE),
        &[libc::EFAULT, libc::EPERM],
        "PROT_NONE part",
    )?;
    want_abort(
        dev_read(&ctx, m.at(16 * PAGE), 4 * PAGE),
        &[libc::EFAULT],
        "hole",
    )?;
    // A copy that runs from valid memory into the PROT_NONE part fails where that part starts.
    match dev_read(&ctx, m.at(8 * PAGE), 8 * PAGE) {
        Err(mnic::Error::Work { fault_va, .. }) => check(
            fault_va >= m.at(12 * PAGE) && fault_va < m.at(16 * PAGE),
            || format!("copy into PROT_NONE failed at {fault_va:#x}"),
        )?,
        other => return Err(format!("copy across into PROT_NONE: {other:?}")),
    }
    let _ = fs::remove_file(path);
    no_stale(&ctx)?;
    Ok(Outcome::Pass)
}

/// Process exit and exec with DMA in flight, and close of the file with DMA in flight: the
/// teardown paths (RELEASE notifier, file release) while the device is mid-work.
pub fn exit_exec_dma_in_flight() -> CaseResult {
    let busy_child = |exec: bool| {
        in_child(move || {
            let ctx = ctxq()?;
            let buf = DmaBuffer::new(1 << 20).map_err(e("buffer"))?;
            let _r = ctx
                .register(&buf, Access::READ_WRITE)
                .map_err(e("register"))?;
            post_long_traffic(&ctx, &buf, mnic::Pattern::RandomRw)?;
            std::thread::sleep(Duration::from_millis(100));
            if exec {
                // A duplicate without CLOEXEC keeps the context open across exec: the old mm
                // goes away (RELEASE) while the file and its DMA live on in the new program.
                use std::os::fd::AsRawFd;
                // SAFETY: dup of our open context fd.
                let keep = unsafe { libc::dup(ctx.as_raw_fd()) };
                check(keep >= 0, || os_err("dup"))?;
                let prog = c"/bin/sleep";
                let args = [prog.as_ptr(), c"1".as_ptr(), std::ptr::null()];
                // SAFETY: execv with NUL-terminated strings and a NULL-terminated argv.
                unsafe { libc::execv(prog.as_ptr(), args.as_ptr()) };
                return Err(os_err("execv"));
            }
            // Exit (the destructors do not run: _exit in `in_child`).
            std::mem::forget(_r);
            std::mem::forget(buf);
            std::mem::forget(ctx);
            Ok(())
        })
    };
    let t0 = std::time::Instant::now();
    busy_child(false)?;
    let t_exit = t0.elapsed();
    busy_child(true)?;
    let t_exec = t0.elapsed() - t_exit;
    // Close with DMA in flight, in this process.
    let t1 = std::time::Instant::now();
    {
        let ctx = ctxq()?;
        let buf = DmaBuffer::new(1 << 20).map_err(e("buffer"))?;
        let _r = ctx
            .register(&buf, Access::READ_WRITE)
            .map_err(e("register"))?;
        let w = Traffic::over(&buf)
            .op_size(4096)
            .ops(1 << 20)
            .pattern(mnic::Pattern::SeqWrite)
            .build()
            .map_err(e("traffic"))?;
        ctx.post(&w).map_err(e("post"))?;
        std::thread::sleep(Duration::from_millis(100));
    }
    let t_close = t1.elapsed();
    // Healthy afterwards.
    let ctx = ctxq()?;
    let src = DmaBuffer::new(64 << 10).map_err(e("buffer"))?;
    let m = Map::adopt(src.as_mut_ptr() as usize, src.len());
    m.fill(0, m.len, 90);
    let _r = ctx.register(&src, Access::READ).map_err(e("register"))?;
    is_pattern(
        &dev_read(&ctx, src.va(), src.len()).map_err(e("read"))?,
        0,
        90,
    )?;
    std::mem::forget(m);
    note(format!(
        "exit with DMA in flight {:?}, exec {:?}, close {:?} (incl. 100 ms of DMA each)",
        t_exit, t_exec, t_close
    ));
    no_stale(&ctx)?;
    Ok(Outcome::Pass)
}

/// An OOM kill of a process whose registered memory the device is using: the OOM reaper's
/// non-blockable invalidation. The console is silenced for the OOM report (its stack trace is
/// by design) and the kernel log of that window is checked here.
pub fn oom_kill_registered() -> CaseResult {
    oom_case("oom_kill_registered", true)
}

/// The same without DMA in flight at the kill (the device does not fault in between the OOM
/// reaper's attempts): the contrast case for `oom_kill_registered`.
pub fn oom_kill_registered_idle() -> CaseResult {
    oom_case("oom_kill_registered_idle", false)
}

fn oom_case(case: &str, traffic: bool) -> CaseResult {
    let Some(cg) = MemCg::new("mnic-matrix-oom", "32M", false)? else {
        return Ok(Outcome::Skip("no memory cgroup controller".into()));
    };
    let win = KlogWindow::new(case, true)?;
    let (stalled, status, msg) = fork_raw(
        |link| {
            cg.join()?;
            let ctx = ctxq()?;
            let buf = DmaBuffer::new(4 << 20).map_err(e("buffer"))?;
            buf.fill(1);
            let _r = ctx
                .register(&buf, Access::READ_WRITE | Access::PREFETCH)
                .map_err(e("register"))?;
            let w = Traffic::over(&buf)
                .op_size(4096)
                .ops(1 << 24)
                .pattern(mnic::Pattern::RandomRw)
                .build()
                .map_err(e("traffic"))?;
            if traffic {
                ctx.post(&w).map_err(e("post"))?;
            }
            // Keep the address space alive after the kill (a thread sleeping uninterruptibly
            // in the mm_mirror_test module), so that the OOM reaper, not the exit, tears it
            // down: its invalidations are the non-blockable ones.
            let stalled = stall_thread(&buf);
            println!(
                "# victim: stall thread {}",
                if stalled { "running" } else { "unavailable" }
            );
            link.send(if stalled { 1 } else { 2 });
            loop {
                let chunk = Map::anon(1 << 20)?;
                for off in (0..chunk.len).step_by(PAGE) {
                    chunk.fill_byte(off, 1, 1);
                }
                std::mem::forget(chunk);
            }
        },
        |link, _| link.recv(),
    )?;
    std::thread::sleep(Duration::from_millis(500));
    let log = win.clean()?;
    drop(win);
    check(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
        || format!("child not OOM-killed: {} {msg}", describe_status(status)),
    )?;
    let reaper = log
        .iter()
        .find(|l| l.contains("oom_reaper"))
        .cloned()
        .unwrap_or_else(|| "no oom_reaper line".into());
    note(reaper.trim());
    if stalled != 1 {
        return Ok(Outcome::Skip(
            "no mm_mirror_test module to keep the victim's mm alive for the reaper".into(),
        ));
    }
    check(reaper.contains("reaped process"), || {
        format!(
            "the OOM reaper could not reap the victim ({}): {reaper}",
            if traffic {
                "with DMA in flight the device re-faults the entries between the reaper's \
                 attempts and the driver's non-blockable invalidation returns 'would block' \
                 whenever it cleared entries"
            } else {
                "without DMA in flight"
            }
        )
    })?;
    // Healthy afterwards.
    let ctx = ctxq()?;
    let m = Map::anon(8 * PAGE)?;
    m.fill(0, m.len, 91);
    let _r = reg_raw(&ctx, m.va(), m.len, Access::READ)?;
    is_pattern(&dev_read(&ctx, m.va(), m.len).map_err(e("read"))?, 0, 91)?;
    no_stale(&ctx)?;
    Ok(Outcome::Pass)
}

/// Starts a thread that sleeps 6 s uninterruptibly in `/dev/mm_mirror_test` (module of
/// tests/kmod), keeping the process's mm alive past a SIGKILL. False if unavailable.
fn stall_thread(buf: &DmaBuffer) -> bool {
    const DEVICE: &str = "/dev/mm_mirror_test";
    if fs::metadata(DEVICE).is_err() {
        let _ = std::process::Command::new("insmod")
            .arg("/lib/modules/mm_mirror_test.ko")
            .status();
    }
    let Ok(f) = fs::OpenOptions::new().read(true).write(true).open(DEVICE) else {
        return false;
    };
    // The module's ABI (tests/kmod/mm_mirror_abi.rs): REGISTER {addr, len}, STALL {ms, hold}.
    const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
        linux_ioc(dir, 0xe7, nr, size)
    }
    let mut reg = [buf.va(), PAGE as u64];
    if raw_ioctl(&f, ioc(1, 1, 16), reg.as_mut_ptr()).is_err() {
        return false;
    }
    std::thread::spawn(move || {
        let mut stall = [6000u32, 0];
        let _ = raw_ioctl(&f, ioc(1, 8, 8), stall.as_mut_ptr());
    });
    std::thread::sleep(Duration::from_millis(100));
    true
}
