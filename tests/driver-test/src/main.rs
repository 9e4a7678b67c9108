//! `mnic-driver-test`: the driver's acceptance tests, run in the guest (KTAP on stdout).
//!
//! Everything goes through the `mnic` library except the cases that must send malformed
//! requests, which use raw ioctls on purpose. Each case checks what the kernel and the device
//! report (device table entries, page residency, swap, pin counters, the device's
//! stale-access counter), not only that calls return.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::time::Duration;

mod observe;

use mnic::{
    Access, Context, DevCounters, DmaBuffer, DoorbellMode, Error, QueueConfig, Work, WorkError,
};
use mnic_abi as abi;
use mnic_guest_util::nic::{
    ensure_module, no_stale, open, open_with_queues, post_long_traffic, DEV, MODULE, TIMEOUT,
};
use mnic_guest_util::{
    check, e, ensure_swap, in_child, note, pins_held, proc_value, raw_ioctl, Case, CaseResult, Map,
    Outcome::*,
};

fn pattern(buf: &DmaBuffer, seed: u8) {
    let data: Vec<u8> = (0..buf.len())
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect();
    buf.write_from(0, &data);
}

fn has_pattern(buf: &DmaBuffer, seed: u8) -> bool {
    buf.to_vec()
        .iter()
        .enumerate()
        .all(|(i, b)| *b == (i as u8).wrapping_mul(31) ^ seed)
}

fn expect_errno<T>(fd: &File, what: &str, cmd: u32, arg: *mut T, want: i32) -> Result<(), String> {
    match raw_ioctl(fd, cmd, arg) {
        Err(got) if got == want => Ok(()),
        Err(got) => Err(format!("{what}: errno {got}, want {want}")),
        Ok(_) => Err(format!("{what}: succeeded, want errno {want}")),
    }
}

// ---------------------------------------------------------------------------- cases

fn probe_identity() -> CaseResult {
    let ctx = open()?;
    let info = ctx.info();
    check(
        u32::from(info.hw_major) == abi::MNIC_VERSION_VALUE >> 16,
        || format!("hardware version {}.{}", info.hw_major, info.hw_minor),
    )?;
    check(info.caps.bits() == abi::caps::ALL, || {
        format!("caps {:#x}", info.caps.bits())
    })?;
    check(info.num_contexts == abi::NUM_CONTEXTS, || {
        format!("{} contexts", info.num_contexts)
    })?;
    // The device's MSI-X vectors, as the PCI core set them up.
    let mut vectors = None;
    for dev in fs::read_dir("/sys/bus/pci/devices")
        .map_err(e("sysfs"))?
        .flatten()
    {
        let read = |f: &str| fs::read_to_string(dev.path().join(f)).unwrap_or_default();
        if read("vendor").trim() == "0x1234" && read("device").trim() == "0x4d4e" {
            vectors = Some(
                fs::read_dir(dev.path().join("msi_irqs"))
                    .map_err(e("msi_irqs"))?
                    .count(),
            );
        }
    }
    let vectors = vectors.ok_or("no 1234:4d4e device in sysfs")?;
    check(vectors == abi::MSIX_VECTORS as usize, || {
        format!("{vectors} MSI-X vectors")
    })?;
    let irqs = fs::read_to_string("/proc/interrupts").map_err(e("/proc/interrupts"))?;
    check(irqs.contains("mnic-events"), || {
        "no mnic-events interrupt".into()
    })?;
    Ok(Pass)
}

fn copy_on_demand_unpinned() -> CaseResult {
    let ctx = open_with_queues()?;
    let pins_before = pins_held()?;
    let src = DmaBuffer::new(64 << 10).map_err(e("buffer"))?;
    let dst = DmaBuffer::new(64 << 10).map_err(e("buffer"))?;
    pattern(&src, 0x5a);
    let _rs = ctx
        .register(&src, Access::READ)
        .map_err(e("register src"))?;
    let _rd = ctx
        .register(&dst, Access::WRITE)
        .map_err(e("register dst"))?;
    let before = ctx.query_buffer(&src).map_err(e("query"))?;
    check(before.valid() == 0, || {
        format!("{} entries before any DMA", before.valid())
    })?;
    let faults0 = ctx.ctx_stats().map_err(e("stats"))?.faults;
    let work = Work::copy_buffers(&src, 0, &dst, 0, src.len()).map_err(e("work"))?;
    let bytes = ctx.run(&work, TIMEOUT).map_err(e("copy"))?;
    check(bytes == src.len() as u64, || {
        format!("copied {bytes} bytes")
    })?;
    check(has_pattern(&dst, 0x5a), || {
        "destination differs from source".into()
    })?;
    let faults = ctx.ctx_stats().map_err(e("stats"))?.faults - faults0;
    check(faults > 0, || {
        "no device fault: translations were not created on demand".into()
    })?;
    let after = ctx.query_buffer(&dst).map_err(e("query"))?;
    check(after.valid() > 0, || {
        "no device entries after the DMA".into()
    })?;
    let pins = pins_held()? - pins_before;
    check(pins == 0, || {
        format!("{pins} pages pinned (FOLL_PIN) while registered")
    })?;
    println!(
        "# {faults} device faults filled {} + {} entries",
        after.valid_4k, after.valid_2m
    );
    no_stale(&ctx)?;
    Ok(Pass)
}

fn pageout_frees_and_faults_back() -> CaseResult {
    if !ensure_swap()? {
        return Ok(Skip("no swap and no zram".into()));
    }
    let ctx = open_with_queues()?;
    let buf = DmaBuffer::new(256 << 10).map_err(e("buffer"))?;
    let dst = DmaBuffer::new(256 << 10).map_err(e("buffer"))?;
    pattern(&buf, 0x33);
    let _r = ctx
        .register(&buf, Access::READ_WRITE | Access::PREFETCH)
        .map_err(e("register"))?;
    let _rd = ctx
        .register(&dst, Access::WRITE)
        .map_err(e("register dst"))?;
    let pages = (buf.len() / 4096) as u64;
    let q = ctx.query_buffer(&buf).map_err(e("query"))?;
    check(q.valid() == pages, || {
        format!("{} of {pages} entries after prefetch", q.valid())
    })?;
    let swap_free0 = proc_value("/proc/meminfo", "SwapFree")?;
    buf.pageout().map_err(e("MADV_PAGEOUT"))?;
    // madvise has returned: the invalidation (and its SYNC) is complete.
    let q = ctx.query_buffer(&buf).map_err(e("query"))?;
    check(q.valid() == 0, || {
        format!("{} device entries survived the page-out", q.valid())
    })?;
    let (resident, _) = buf.resident_pages().map_err(e("mincore"))?;
    check(resident == 0, || {
        format!("{resident} pages still resident after MADV_PAGEOUT")
    })?;
    let swapped = swap_free0.saturating_sub(proc_value("/proc/meminfo", "SwapFree")?);
    check(swapped >= 4, || {
        format!("swap use grew by only {swapped} KiB")
    })?;
    let stats0 = ctx.ctx_stats().map_err(e("stats"))?;
    let work = Work::copy_buffers(&buf, 0, &dst, 0, buf.len()).map_err(e("work"))?;
    ctx.run(&work, TIMEOUT).map_err(e("copy after page-out"))?;
    check(has_pattern(&dst, 0x33), || {
        "data after fault-back differs".into()
    })?;
    let stats = ctx.ctx_stats().map_err(e("stats"))?;
    check(stats.faults > stats0.faults, || {
        "no device fault after the page-out".into()
    })?;
    check(stats.invalidations > 0 && stats.sync_waits > 0, || {
        format!(
            "invalidations {} sync waits {}",
            stats.invalidations, stats.sync_waits
        )
    })?;
    println!(
        "# swapped {swapped} KiB; fault-back took {} faults; SYNC waits {} avg {} us",
        stats.faults - stats0.faults,
        stats.sync_waits,
        stats.sync_wait_ns / stats.sync_waits.max(1) / 1000
    );
    no_stale(&ctx)?;
    Ok(Pass)
}

fn munmap_then_dma_fails_cleanly() -> CaseResult {
    let ctx = open_with_queues()?;
    let len = 4 * 4096;
    let map = Map::anon(len)?;
    map.fill_byte(0, len, 0x77);
    let addr = map.va();
    let dst = DmaBuffer::new(len).map_err(e("buffer"))?;
    let _rd = ctx
        .register(&dst, Access::WRITE)
        .map_err(e("register dst"))?;
    // SAFETY: [addr, addr+len) is our mapping; no Rust reference into it exists.
    let raw =
        unsafe { ctx.register_raw(addr, len as u64, Access::READ) }.map_err(e("register_raw"))?;
    let copy = Work::copy(addr, dst.va(), len as u32).map_err(e("work"))?;
    ctx.run(&copy, TIMEOUT).map_err(e("copy before munmap"))?;
    check(dst.to_vec().iter().all(|b| *b == 0x77), || {
        "copy before munmap wrong".into()
    })?;
    map.munmap(0, len)?;
    let q = ctx.query(addr, len as u64).map_err(e("query"))?;
    check(q.valid() == 0, || {
        format!("{} entries survived munmap", q.valid())
    })?;
    match ctx.run(&copy, TIMEOUT) {
        Err(Error::Work {
            error: WorkError::FaultAborted { errno },
            ..
        }) => check(errno == libc::EFAULT, || {
            format!("aborted with errno {errno}, want EFAULT")
        })?,
        other => return Err(format!("DMA from unmapped memory: {other:?}")),
    }
    drop(raw);
    // A device write into a registration without REG_WRITE is refused the same way.
    let src = DmaBuffer::new(len).map_err(e("buffer"))?;
    let _rs = ctx.register(&src, Access::READ).map_err(e("register"))?;
    let backwards = Work::copy_buffers(&dst, 0, &src, 0, len).map_err(e("work"))?;
    match ctx.run(&backwards, TIMEOUT) {
        Err(Error::Work {
            error: WorkError::FaultAborted { errno },
            ..
        }) => check(errno == libc::EACCES, || {
            format!("aborted with errno {errno}, want EACCES")
        })?,
        other => {
            return Err(format!(
                "device read of a write-only registration: {other:?}"
            ))
        }
    }
    no_stale(&ctx)?;
    Ok(Pass)
}

fn fork_cow_parent_keeps_device_writes() -> CaseResult {
    let ctx = open_with_queues()?;
    let src = DmaBuffer::new(4096).map_err(e("buffer"))?;
    let buf = DmaBuffer::new(4096).map_err(e("buffer"))?;
    pattern(&src, 0x50);
    buf.fill(b'p');
    let _rs = ctx
        .register(&src, Access::READ | Access::PREFETCH)
        .map_err(e("register"))?;
    let _rb = ctx
        .register(&buf, Access::READ_WRITE | Access::PREFETCH)
        .map_err(e("register"))?;
    let (mut to_parent, mut to_child) = ([0i32; 2], [0i32; 2]);
    // SAFETY: plain pipe(2) calls with arrays of two fds.
    unsafe {
        libc::pipe(to_parent.as_mut_ptr());
        libc::pipe(to_child.as_mut_ptr());
    }
    let buf_ref = &buf;
    // SAFETY: single-threaded test; the child only touches its copy of `buf` and the pipes.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        buf_ref.fill(b'c'); // the child's write breaks COW: it gets its own copy
        let mut b = [1u8];
        // SAFETY: pipe fds from above.
        unsafe {
            libc::write(to_parent[1], b.as_ptr().cast(), 1);
            libc::read(to_child[0], b.as_mut_ptr().cast(), 1);
        }
        let ok = buf_ref.to_vec().iter().all(|x| *x == b'c');
        // SAFETY: leave the child without running destructors.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut b = [0u8];
    // SAFETY: pipe fds from above.
    unsafe { libc::read(to_parent[0], b.as_mut_ptr().cast(), 1) };
    let copy = Work::copy_buffers(&src, 0, &buf, 0, 4096).map_err(e("work"));
    let result = copy.and_then(|w| ctx.run(&w, TIMEOUT).map_err(e("device write after fork")));
    // SAFETY: pipe fds from above; then reap the child.
    let mut status = 0;
    unsafe {
        libc::write(to_child[1], b.as_ptr().cast(), 1);
        libc::waitpid(pid, &mut status, 0);
    }
    result?;
    check(has_pattern(&buf, 0x50), || {
        "the device write did not land in the parent's page".into()
    })?;
    check(status == 0, || {
        "the child's copy was changed by the parent's device write".into()
    })?;
    no_stale(&ctx)?;
    Ok(Pass)
}

fn child_uses_parent_context_refused() -> CaseResult {
    let ctx = open()?;
    let buf = DmaBuffer::new(4096).map_err(e("buffer"))?;
    in_child(|| match ctx.register(&buf, Access::READ) {
        Err(err) if err.errno() == Some(libc::EPERM) => Ok(()),
        Err(err) => Err(format!("want EPERM, got {err}")),
        Ok(_) => Err("a forked child could register in its parent's context".into()),
    })?;
    Ok(Pass)
}

/// A forked child that drops its copy of a `Context` must leave alone whatever it mapped at
/// the address of the parent's doorbell page (the page itself is not copied at fork, so the
/// address is free in the child). The library once unmapped it.
fn child_drop_keeps_doorbell_address() -> CaseResult {
    let ctx = open()?;
    ctx.setup_queues(mnic::QueueConfig {
        doorbell: mnic::DoorbellMode::Mapped,
        ..mnic::QueueConfig::default()
    })
    .map_err(e("setup_queues (mapped doorbell)"))?;
    let node = format!("/dev/mnic{}", ctx.info().minor);
    let maps = fs::read_to_string("/proc/self/maps").map_err(e("maps"))?;
    let va = maps
        .lines()
        .find(|l| l.ends_with(&node))
        .and_then(|l| usize::from_str_radix(l.split('-').next()?, 16).ok())
        .ok_or_else(|| format!("no mapping of {node} in /proc/self/maps"))?;
    in_child(move || {
        // The child's own page where the parent's doorbell is.
        let mine = Map::fixed_noreplace(va, 4096, libc::PROT_READ | libc::PROT_WRITE)?;
        mine.fill_byte(0, 4096, 0x5a);
        drop(ctx);
        // Still mapped, still ours (a fault here would kill the child: the case fails).
        let back = mine.read(0, 4096);
        check(back.iter().all(|b| *b == 0x5a), || {
            "the child's page at the doorbell address changed".into()
        })
    })?;
    Ok(Pass)
}

fn kill_with_dma_in_flight() -> CaseResult {
    let (mut p, mut b) = ([0i32; 2], [0u8]);
    // SAFETY: pipe(2) with an array of two fds.
    unsafe { libc::pipe(p.as_mut_ptr()) };
    // SAFETY: single-threaded; the child runs the closure then blocks until killed.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let run = || -> Result<(), String> {
            let ctx = open_with_queues()?;
            let buf = DmaBuffer::new(1 << 20).map_err(e("buffer"))?;
            let _r = ctx
                .register(&buf, Access::READ_WRITE)
                .map_err(e("register"))?;
            post_long_traffic(&ctx, &buf, mnic::Pattern::SeqRead)?;
            // SAFETY: pipe fd from above.
            unsafe { libc::write(p[1], [1u8].as_ptr().cast(), 1) };
            std::thread::sleep(Duration::from_secs(60));
            Ok(())
        };
        let _ = run();
        // SAFETY: leave the child.
        unsafe { libc::_exit(1) };
    }
    // SAFETY: pipe fds. The parent closes its write end first, so the read ends (0 bytes)
    // if the child fails before signalling instead of blocking forever.
    let n = unsafe {
        libc::close(p[1]);
        libc::read(p[0], b.as_mut_ptr().cast(), 1)
    };
    std::thread::sleep(Duration::from_millis(300));
    let mut status = 0;
    // SAFETY: killing and reaping our own child; closing our read end.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, &mut status, 0);
        libc::close(p[0]);
    }
    check(n == 1, || "the child could not start its DMA".into())?;
    // The device and the driver are healthy: a new context copies correctly.
    let ctx = open_with_queues()?;
    let src = DmaBuffer::new(16 << 10).map_err(e("buffer"))?;
    let dst = DmaBuffer::new(16 << 10).map_err(e("buffer"))?;
    pattern(&src, 9);
    let _rs = ctx.register(&src, Access::READ).map_err(e("register"))?;
    let _rd = ctx.register(&dst, Access::WRITE).map_err(e("register"))?;
    let w = Work::copy_buffers(&src, 0, &dst, 0, src.len()).map_err(e("work"))?;
    ctx.run(&w, TIMEOUT).map_err(e("copy after the kill"))?;
    check(has_pattern(&dst, 9), || "copy after the kill wrong".into())?;
    no_stale(&ctx)?;
    Ok(Pass)
}

fn bad_ioctls_refused() -> CaseResult {
    ensure_module()?;
    let fd = OpenOptions::new()
        .read(true)
        .write(true)
        .open(DEV)
        .map_err(e("open"))?;
    let page = 4096u64;
    let buf = DmaBuffer::new(2 * page as usize).map_err(e("buffer"))?;
    let reg = |addr: u64, len: u64, flags: u32| abi::MnicRegister {
        addr,
        len,
        flags,
        ..Default::default()
    };
    let rw = abi::reg_flags::READ | abi::reg_flags::WRITE;
    let cases: [(&str, abi::MnicRegister, i32); 7] = [
        ("no access flags", reg(buf.va(), page, 0), libc::EINVAL),
        (
            "unknown flag",
            reg(buf.va(), page, rw | 1 << 20),
            libc::EINVAL,
        ),
        (
            "unaligned address",
            reg(buf.va() + 8, page, rw),
            libc::EINVAL,
        ),
        ("zero length", reg(buf.va(), 0, rw), libc::EINVAL),
        (
            "wrapping range",
            reg(u64::MAX - page + 1, 2 * page, rw),
            libc::EINVAL,
        ),
        (
            "beyond the VA limit",
            reg(abi::pte::VA_LIMIT, page, rw),
            libc::EINVAL,
        ),
        (
            "handle not zero",
            abi::MnicRegister {
                handle: 5,
                ..reg(buf.va(), page, rw)
            },
            libc::EINVAL,
        ),
    ];
    for (what, mut r, want) in cases {
        expect_errno(&fd, what, abi::MNIC_IOC_REGISTER, &mut r, want)?;
    }
    let mut h = abi::MnicHandle {
        handle: 999,
        rsvd: 0,
    };
    expect_errno(
        &fd,
        "unknown handle",
        abi::MNIC_IOC_DEREGISTER,
        &mut h,
        libc::ENOENT,
    )?;
    let mut range = abi::MnicRange {
        addr: buf.va(),
        len: page,
        flags: 0,
        rsvd: 0,
    };
    expect_errno(
        &fd,
        "prefetch unregistered",
        abi::MNIC_IOC_PREFETCH,
        &mut range,
        libc::ENOENT,
    )?;
    let mut q = abi::MnicQueues {
        wq_addr: buf.va(),
        cq_addr: buf.va(),
        wq_size_log2: 30,
        cq_size_log2: 4,
    };
    expect_errno(
        &fd,
        "queue size",
        abi::MNIC_IOC_SETUP_QUEUES,
        &mut q,
        libc::EINVAL,
    )?;
    let mut post = abi::MnicPost {
        wq_tail: 1,
        rsvd: 0,
    };
    expect_errno(
        &fd,
        "post without queues",
        abi::MNIC_IOC_POST,
        &mut post,
        libc::EINVAL,
    )?;
    let mut wait = abi::MnicWait {
        target: 1,
        count: 0,
        timeout_ms: 0,
        rsvd: 0,
    };
    expect_errno(
        &fd,
        "wait with nothing done",
        abi::MNIC_IOC_WAIT,
        &mut wait,
        libc::ETIMEDOUT,
    )?;
    let mut query = abi::MnicQuery {
        addr: buf.va(),
        len: 0,
        ..Default::default()
    };
    expect_errno(
        &fd,
        "query zero length",
        abi::MNIC_IOC_QUERY,
        &mut query,
        libc::EINVAL,
    )?;
    let mut dummy = 0u64;
    expect_errno(
        &fd,
        "unknown ioctl",
        abi::ioc(0, 0xff, 0),
        &mut dummy,
        libc::ENOTTY,
    )?;
    expect_errno(
        &fd,
        "bad pointer",
        abi::MNIC_IOC_INFO,
        8 as *mut abi::MnicInfo,
        libc::EFAULT,
    )?;
    for (what, cmd) in [
        ("CTX_LATENCY to a bad pointer", abi::MNIC_IOC_CTX_LATENCY),
        ("DEV_LATENCY to a bad pointer", abi::MNIC_IOC_DEV_LATENCY),
    ] {
        // An address in the first page, which is never mapped.
        expect_errno(&fd, what, cmd, 16 as *mut abi::MnicLatency, libc::EFAULT)?;
    }
    // The refusals above left nothing behind: a good registration is the only one listed
    // (a failed copy-out is checked by `remote_registration_without_fabric`).
    let mut r = reg(buf.va(), page, rw);
    raw_ioctl(&fd, abi::MNIC_IOC_REGISTER, &mut r).map_err(|n| format!("good register: {n}"))?;
    let mut stats = abi::MnicCtxStats::default();
    raw_ioctl(&fd, abi::MNIC_IOC_CTX_STATS, &mut stats).map_err(|n| format!("stats: {n}"))?;
    check(stats.registrations == 1, || {
        format!("{} registrations", stats.registrations)
    })?;
    // mmap of anything but the doorbell page.
    // SAFETY: asking for a fresh shared mapping of the device; checked below and unmapped.
    let bad = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            8192,
            libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    check(bad == libc::MAP_FAILED, || {
        "an 8 KiB doorbell mapping was accepted".into()
    })?;
    Ok(Pass)
}

fn pinned_baseline_pins_and_fills() -> CaseResult {
    let ctx = open_with_queues()?;
    let buf = DmaBuffer::new(128 << 10).map_err(e("buffer"))?;
    pattern(&buf, 0x11);
    let pages = (buf.len() / 4096) as u64;
    let pins0 = pins_held()?;
    let reg = ctx
        .register(&buf, Access::READ_WRITE | Access::PINNED)
        .map_err(e("register pinned"))?;
    let q = ctx.query_buffer(&buf).map_err(e("query"))?;
    check(q.valid() == pages, || {
        format!("{} of {pages} entries filled", q.valid())
    })?;
    check(q.pinned == pages, || {
        format!("{} of {pages} pages reported pinned", q.pinned)
    })?;
    let pinned = pins_held()? - pins0;
    check(pinned == pages as i64, || {
        format!("{pinned} FOLL_PIN pins for {pages} pages")
    })?;
    // Pinned memory cannot be paged out: that is the cost the on-demand mode avoids.
    let _ = buf.pageout();
    let (resident, _) = buf.resident_pages().map_err(e("mincore"))?;
    check(resident as u64 == pages, || {
        format!("only {resident} pinned pages resident")
    })?;
    reg.deregister().map_err(e("deregister"))?;
    let left = pins_held()? - pins0;
    check(left == 0, || {
        format!("{left} pins left after deregistration")
    })?;
    no_stale(&ctx)?;
    Ok(Pass)
}

fn debugfs_reports_contexts_and_sync_waits() -> CaseResult {
    let ctx = open()?;
    let buf = DmaBuffer::new(64 << 10).map_err(e("buffer"))?;
    buf.fill(1);
    let _r = ctx
        .register(&buf, Access::READ_WRITE | Access::PREFETCH)
        .map_err(e("register"))?;
    let dir = "/sys/kernel/debug/mnic0";
    let contexts = fs::read_to_string(format!("{dir}/contexts")).map_err(e("contexts"))?;
    let mine = contexts
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&ctx.info().ctx.to_string()))
        .ok_or_else(|| format!("context {} not listed:\n{contexts}", ctx.info().ctx))?;
    let cols: Vec<&str> = mine.split_whitespace().collect();
    check(
        cols.get(1) == Some(&"1") && cols.get(2) == Some(&"16"),
        || format!("want 1 registration and 16 mapped pages: {mine}"),
    )?;
    buf.dontneed().map_err(e("MADV_DONTNEED"))?;
    let hist = fs::read_to_string(format!("{dir}/sync_wait_us")).map_err(e("sync_wait_us"))?;
    let waits: u64 = hist
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum();
    check(waits > 0, || {
        format!("no SYNC wait in the histogram:\n{hist}")
    })?;
    let device = fs::read_to_string(format!("{dir}/device")).map_err(e("device"))?;
    check(device.lines().any(|l| l == "stale_accesses 0"), || {
        format!("device counters: {device}")
    })?;
    Ok(Pass)
}

fn module_reload() -> CaseResult {
    mnic_guest_util::module_cmd("rmmod", "mnic")?;
    mnic_guest_util::module_cmd("insmod", MODULE)?;
    let ctx = open_with_queues()?;
    let src = DmaBuffer::new(8192).map_err(e("buffer"))?;
    let dst = DmaBuffer::new(8192).map_err(e("buffer"))?;
    pattern(&src, 3);
    let _rs = ctx.register(&src, Access::READ).map_err(e("register"))?;
    let _rd = ctx.register(&dst, Access::WRITE).map_err(e("register"))?;
    let w = Work::copy_buffers(&src, 0, &dst, 0, src.len()).map_err(e("work"))?;
    ctx.run(&w, TIMEOUT).map_err(e("copy after reload"))?;
    check(has_pattern(&dst, 3), || "copy after reload wrong".into())?;
    Ok(Pass)
}

/// Safe code that forgets a registration and then drops its buffer must not get the memory
/// reused while the driver still has the range registered: the library keeps the mapping (and
/// the device can still write there, into memory nothing else uses).
fn forgotten_registration_keeps_memory() -> CaseResult {
    let ctx = open_with_queues()?;
    let src = DmaBuffer::new(8192).map_err(e("buffer"))?;
    pattern(&src, 9);
    let _rs = ctx.register(&src, Access::READ).map_err(e("register"))?;
    let dst = DmaBuffer::new(8192).map_err(e("buffer"))?;
    let va = dst.va();
    let reg = ctx.register(&dst, Access::WRITE).map_err(e("register"))?;
    let registered = ctx.ctx_stats().map_err(e("stats"))?.registrations;
    std::mem::forget(reg);
    drop(dst);
    // The range is still mapped: nothing new can be placed there.
    let reuse = mnic_guest_util::Map::fixed_noreplace(va as usize, 8192, libc::PROT_READ);
    check(reuse.is_err(), || {
        format!("the registered buffer's memory at {va:#x} was given back after drop")
    })?;
    // The device writes there, and the registration still works.
    ctx.run(&Work::copy(src.va(), va, 8192).map_err(e("work"))?, TIMEOUT)
        .map_err(e("copy into the forgotten registration"))?;
    let stats = ctx.ctx_stats().map_err(e("stats"))?;
    check(stats.registrations == registered, || {
        format!(
            "{} registrations, want the {registered} there were",
            stats.registrations
        )
    })?;
    Ok(Pass)
}

// ------------------------------------------------------------------ shadow doorbells

/// The device counters of `ctx`'s NIC.
fn dev_counters(ctx: &Context) -> Result<DevCounters, String> {
    ctx.dev_stats().map_err(e("DEV_STATS"))
}

/// mmap of `len` bytes at offset `off` of `fd` with `flags`; the errno on failure.
fn map_dev(fd: &impl AsRawFd, off: u64, len: usize, flags: i32) -> Result<Map, i32> {
    // SAFETY: a fresh mapping at an address the kernel chooses; nothing in Rust refers to it,
    // and `Map` unmaps it when dropped.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            fd.as_raw_fd(),
            off as libc::off_t,
        )
    };
    if p == libc::MAP_FAILED {
        Err(mnic_guest_util::errno())
    } else {
        Ok(Map::adopt(p as usize, len))
    }
}

/// A shadow page mapped at offset 4096 (spec §13), read through its two words.
struct ShadowView(Map);

impl ShadowView {
    fn map(fd: &impl AsRawFd) -> Result<ShadowView, String> {
        map_dev(
            fd,
            abi::MMAP_SHADOW_OFFSET,
            abi::SHADOW_PAGE_SIZE as usize,
            libc::MAP_SHARED,
        )
        .map(ShadowView)
        .map_err(|n| format!("mmap of the shadow page: errno {n}"))
    }

    fn word(&self, off: usize) -> u32 {
        // SAFETY: `off` is 0 or 4: an aligned word inside the live 4 KiB shared mapping, which
        // the library and the device write concurrently, so it is read atomically and never
        // through a plain reference.
        let w = unsafe { std::sync::atomic::AtomicU32::from_ptr((self.0.ptr + off) as *mut u32) };
        u32::from_le(w.load(std::sync::atomic::Ordering::SeqCst))
    }

    fn tail(&self) -> u32 {
        self.word(abi::Shadow::TAIL_OFFSET)
    }

    fn polling(&self) -> u32 {
        self.word(abi::Shadow::POLLING_OFFSET)
    }
}

fn expect_cmd_errno(fd: &impl AsRawFd, what: &str, cmd: u32, want: i32) -> Result<(), String> {
    match raw_ioctl(fd, cmd, std::ptr::null_mut::<u8>()) {
        Err(got) if got == want => Ok(()),
        Err(got) => Err(format!("{what}: errno {got}, want {want}")),
        Ok(_) => Err(format!("{what}: succeeded, want errno {want}")),
    }
}

fn expect_cmd_ok(fd: &impl AsRawFd, what: &str, cmd: u32) -> Result<(), String> {
    raw_ioctl(fd, cmd, std::ptr::null_mut::<u8>())
        .map(drop)
        .map_err(|n| format!("{what}: errno {n}"))
}

fn shadow_config(doorbell: DoorbellMode) -> QueueConfig {
    QueueConfig {
        doorbell,
        ..QueueConfig::default()
    }
}

/// The errors of `MNIC_IOC_SHADOW`, `MNIC_IOC_SYNC` and the shadow mmap (spec §13).
fn shadow_ioctls() -> CaseResult {
    let ctx = open()?;
    let fd: &Context = &ctx;
    check(ctx.info().caps.contains(mnic::Caps::SHADOW), || {
        format!("no CAPS.SHADOW: caps {:#x}", ctx.info().caps.bits())
    })?;
    // Before MNIC_IOC_SHADOW there is no page to map.
    let early = map_dev(fd, abi::MMAP_SHADOW_OFFSET, 4096, libc::MAP_SHARED);
    check(early.as_ref().err() == Some(&libc::EINVAL), || {
        format!(
            "shadow mmap before MNIC_IOC_SHADOW: {:?}, want EINVAL",
            early.as_ref().map(|m| m.ptr)
        )
    })?;
    // A forked child holds the file but not the context: SHADOW is the owner's, SYNC is
    // anybody's.
    in_child(|| {
        expect_cmd_errno(fd, "SHADOW from a child", abi::MNIC_IOC_SHADOW, libc::EPERM)?;
        expect_cmd_ok(fd, "SYNC from a child", abi::MNIC_IOC_SYNC)
    })?;
    expect_cmd_ok(fd, "SHADOW", abi::MNIC_IOC_SHADOW)?;
    expect_cmd_ok(fd, "SHADOW again", abi::MNIC_IOC_SHADOW)?;
    let private = map_dev(fd, abi::MMAP_SHADOW_OFFSET, 4096, libc::MAP_PRIVATE);
    check(private.as_ref().err() == Some(&libc::EINVAL), || {
        format!(
            "private shadow mmap: {:?}, want EINVAL",
            private.as_ref().map(|m| m.ptr)
        )
    })?;
    let long = map_dev(fd, abi::MMAP_SHADOW_OFFSET, 8192, libc::MAP_SHARED);
    check(long.as_ref().err() == Some(&libc::EINVAL), || {
        format!(
            "8 KiB shadow mmap: {:?}, want EINVAL",
            long.as_ref().map(|m| m.ptr)
        )
    })?;
    let view = ShadowView::map(fd)?;
    check(view.tail() == 0 && view.polling() == 0, || {
        format!(
            "fresh shadow page: tail {} polling {}, want zeroes",
            view.tail(),
            view.polling()
        )
    })?;
    expect_cmd_ok(fd, "SYNC", abi::MNIC_IOC_SYNC)?;
    // The library asks once more (harmless) and maps the page itself.
    ctx.setup_queues(shadow_config(DoorbellMode::Shadow))
        .map_err(e("setup_queues (shadow)"))?;
    let mode = ctx.queue_config().map(|c| c.doorbell);
    check(mode == Some(DoorbellMode::Shadow), || {
        format!("doorbell mode {mode:?}, want Shadow")
    })?;
    expect_cmd_errno(
        fd,
        "SHADOW after SETUP_QUEUES",
        abi::MNIC_IOC_SHADOW,
        libc::EBUSY,
    )?;
    // Our mapping and the library's are the same page, the one the device reads: the tails
    // the library publishes show in ours, and the posts complete.
    for i in 1..=3u32 {
        ctx.run(&Work::nop(), TIMEOUT).map_err(e("NOP"))?;
        check(view.tail() == i, || {
            format!("shadow tail {} after {i} posts", view.tail())
        })?;
    }
    expect_cmd_ok(fd, "SYNC after setup", abi::MNIC_IOC_SYNC)?;
    in_child(|| expect_cmd_ok(fd, "SYNC from a child after setup", abi::MNIC_IOC_SYNC))?;
    no_stale(&ctx)?;
    Ok(Pass)
}

/// `POSTS` NOPs, each waited for, on a context with `mode`; the device counters' change.
fn post_nops(mode: DoorbellMode, posts: u32) -> Result<DevCounters, String> {
    let ctx = open()?;
    ctx.setup_queues(shadow_config(mode))
        .map_err(e("setup_queues"))?;
    let got = ctx.queue_config().map(|c| c.doorbell);
    check(got == Some(mode), || {
        format!("doorbell mode {got:?}, want {mode:?}")
    })?;
    let before = dev_counters(&ctx)?;
    for i in 0..posts {
        let bytes = ctx
            .run(&Work::nop(), TIMEOUT)
            .map_err(|err| format!("{mode:?} NOP {i}: {err}"))?;
        check(bytes == 0, || format!("{mode:?} NOP {i}: {bytes} bytes"))?;
    }
    let d = dev_counters(&ctx)?.since(&before);
    check(
        d.get(abi::counter::WORK_COMPLETED) >= u64::from(posts),
        || {
            format!(
                "{mode:?}: device completed {} items for {posts} posts",
                d.get(abi::counter::WORK_COMPLETED)
            )
        },
    )?;
    no_stale(&ctx)?;
    Ok(d)
}

fn shadow_posts_skip_the_doorbell() -> CaseResult {
    const POSTS: u32 = 200;
    // The device polls for its spin budget after each item, in host time; on a loaded host
    // the guest may take longer than the default 200 µs between two posts, the device
    // sleeps, and the post rings (it failed that way: 154 doorbells for 200 posts). What
    // this case checks is the protocol, so it gives the device a budget no scheduling gap
    // outlasts; the cost of the default budget is `mnic bench doorbell`'s to measure.
    let admin = open()?;
    let spin = PostKnob::new(&admin, "spin_us");
    spin.set("50000")
        .map_err(|n| format!("writing 50000 to spin_us: errno {n}"))?;
    admin.sync().map_err(e("SYNC applying spin_us"))?;
    let d = post_nops(DoorbellMode::Shadow, POSTS)?;
    let (bells, tails, sleeps) = (
        d.get(abi::counter::DOORBELLS),
        d.get(abi::counter::SHADOW_TAILS),
        d.get(abi::counter::SLEEPS),
    );
    note(format!(
        "shadow: {POSTS} posts, {bells} doorbells, {tails} shadow tails, {sleeps} sleeps"
    ));
    check(tails > 0, || {
        format!("shadow: no shadow tail taken in {POSTS} posts ({bells} doorbells)")
    })?;
    check(bells < u64::from(POSTS / 2), || {
        format!("shadow: {bells} doorbell writes for {POSTS} posts, want fewer than half")
    })?;
    let d = post_nops(DoorbellMode::Mapped, POSTS)?;
    let bells = d.get(abi::counter::DOORBELLS);
    note(format!("mapped: {POSTS} posts, {bells} doorbells"));
    check(bells >= u64::from(POSTS), || {
        format!("mapped: {bells} doorbell writes for {POSTS} posts")
    })?;
    Ok(Pass)
}

/// A debugfs knob of one NIC that changes how commands are posted (`trapped_doorbells`,
/// `spin_us`); set back to 0 (and applied by a SYNC) when dropped, whatever the case did.
struct PostKnob<'a> {
    path: String,
    ctx: &'a Context,
}

impl<'a> PostKnob<'a> {
    fn new(ctx: &'a Context, name: &str) -> Self {
        PostKnob {
            path: format!("/sys/kernel/debug/mnic{}/{name}", ctx.info().minor),
            ctx,
        }
    }

    fn set(&self, value: &str) -> Result<(), i32> {
        fs::write(&self.path, value).map_err(|err| err.raw_os_error().unwrap_or(0))
    }

    fn get(&self) -> Result<String, String> {
        fs::read_to_string(&self.path)
            .map(|s| s.trim().to_owned())
            .map_err(|err| format!("read {}: {err}", self.path))
    }
}

impl Drop for PostKnob<'_> {
    fn drop(&mut self) {
        let _ = self.set("0");
        // The driver hands the spin budget back to the device at its next command post.
        let _ = self.ctx.sync();
    }
}

/// `doorbells` over `n` back-to-back `MNIC_IOC_SYNC`s.
fn sync_doorbells(ctx: &Context, n: u64) -> Result<u64, String> {
    let before = dev_counters(ctx)?;
    for _ in 0..n {
        ctx.sync().map_err(e("MNIC_IOC_SYNC"))?;
    }
    Ok(dev_counters(ctx)?
        .since(&before)
        .get(abi::counter::DOORBELLS))
}

fn trapped_doorbells_knob() -> CaseResult {
    const N: u64 = 100;
    let ctx = open()?;
    let knob = PostKnob::new(&ctx, "trapped_doorbells");
    check(knob.get()? == "0", || {
        format!("trapped_doorbells starts at {:?}", knob.get())
    })?;
    for bad in ["2", "-1", "abc", "4294967296"] {
        let r = knob.set(bad);
        check(r == Err(libc::EINVAL), || {
            format!("writing {bad:?} to trapped_doorbells: {r:?}, want EINVAL")
        })?;
    }
    check(knob.get()? == "0", || {
        format!("trapped_doorbells is {:?} after refused writes", knob.get())
    })?;
    knob.set("1")
        .map_err(|n| format!("writing 1 to trapped_doorbells: errno {n}"))?;
    check(knob.get()? == "1", || {
        format!("trapped_doorbells reads {:?} after writing 1", knob.get())
    })?;
    let trapped = sync_doorbells(&ctx, N)?;
    check(trapped >= N, || {
        format!("trapped: {trapped} doorbell writes for {N} SYNCs")
    })?;
    knob.set("0")
        .map_err(|n| format!("writing 0 to trapped_doorbells: errno {n}"))?;
    // The device polls for its spin budget in host time; on a loaded host the guest can take
    // longer than the default 200 µs between two SYNCs, the device sleeps and every post
    // rings (it failed that way: 100 doorbells for 100 SYNCs while other guests ran). What
    // this case checks is that the knob gives polling back, so the budget is one that no
    // scheduling gap outlasts, as in `shadow_posts_skip_the_doorbell`.
    let spin = PostKnob::new(&ctx, "spin_us");
    spin.set("50000")
        .map_err(|n| format!("writing 50000 to spin_us: errno {n}"))?;
    // The first post after the change gives the device its spin budget back (and rings: the
    // device is not polling yet); the count starts after it.
    ctx.sync().map_err(e("MNIC_IOC_SYNC"))?;
    let polled = sync_doorbells(&ctx, N)?;
    note(format!(
        "{N} SYNCs: {trapped} doorbells trapped, {polled} with the device polling"
    ));
    check(polled < N, || {
        format!("polling: {polled} doorbell writes for {N} back-to-back SYNCs, want fewer")
    })?;
    drop(spin);
    drop(knob);
    no_stale(&ctx)?;
    Ok(Pass)
}

fn shadow_survives_sleep() -> CaseResult {
    let ctx = open()?;
    ctx.setup_queues(shadow_config(DoorbellMode::Shadow))
        .map_err(e("setup_queues (shadow)"))?;
    let view = ShadowView::map(&*ctx)?;
    // Counted from before the NOP: reading the counters takes a register round trip each,
    // long enough for the device's spin budget to end while they are read.
    let c0 = dev_counters(&ctx)?;
    ctx.run(&Work::nop(), TIMEOUT).map_err(e("first NOP"))?;
    // Far beyond the device's spin budget (200 us): it has written polling = 0 and sleeps.
    std::thread::sleep(Duration::from_millis(50));
    let c1 = dev_counters(&ctx)?;
    let slept = c1.since(&c0).get(abi::counter::SLEEPS);
    check(slept > 0, || {
        "the device did not go to sleep in 50 ms".into()
    })?;
    let polling = view.polling();
    check(polling == 0, || {
        format!("the shadow page says polling = {polling} while the device sleeps")
    })?;
    ctx.run(&Work::nop(), TIMEOUT)
        .map_err(e("NOP after the sleep"))?;
    let d = dev_counters(&ctx)?.since(&c1);
    let bells = d.get(abi::counter::DOORBELLS);
    note(format!(
        "{slept} sleeps in 50 ms; the post after them: {bells} doorbells, {} shadow tails",
        d.get(abi::counter::SHADOW_TAILS)
    ));
    check(bells >= 1, || {
        "the post to a sleeping device did not ring the doorbell".into()
    })?;
    check(view.tail() == 2, || {
        format!("shadow tail {} after two posts", view.tail())
    })?;
    no_stale(&ctx)?;
    Ok(Pass)
}

/// Remote keys on a device without a fabric (spec §13 `REMOTE`, INFO `node`): `REMOTE` is
/// refused with `EOPNOTSUPP` and leaves nothing behind, non-zero `rkey`/`rsvd` in are
/// `EINVAL` (before the capability check), INFO says UABI 2 and no node.
fn remote_registration_without_fabric() -> CaseResult {
    ensure_module()?;
    let fd = OpenOptions::new()
        .read(true)
        .write(true)
        .open(DEV)
        .map_err(e("open"))?;
    let mut info = abi::MnicInfo::default();
    raw_ioctl(&fd, abi::MNIC_IOC_INFO, &mut info).map_err(|n| format!("INFO: errno {n}"))?;
    check(
        info.abi_version == 2 && info.abi_version == abi::UABI_VERSION,
        || format!("abi_version {}", info.abi_version),
    )?;
    check(info.caps & abi::caps::FABRIC == 0, || {
        format!("caps {:#x}: this guest's NIC has no fabric", info.caps)
    })?;
    check(info.node == u32::from(abi::NODE_NONE), || {
        format!("node {:#x} without a fabric, want 0xffff", info.node)
    })?;
    let page = 4096u64;
    let buf = DmaBuffer::new(page as usize).map_err(e("buffer"))?;
    let rw = abi::reg_flags::READ | abi::reg_flags::WRITE;
    let reg = |flags: u32, rkey: u32, rsvd: u32| abi::MnicRegister {
        addr: buf.va(),
        len: page,
        flags,
        rkey,
        rsvd,
        ..Default::default()
    };
    let remote = rw | abi::reg_flags::REMOTE;
    let cases = [
        (
            "REMOTE without CAPS.FABRIC",
            reg(remote, 0, 0),
            libc::EOPNOTSUPP,
        ),
        (
            "REMOTE read-only",
            reg(abi::reg_flags::READ | abi::reg_flags::REMOTE, 0, 0),
            libc::EOPNOTSUPP,
        ),
        ("rkey not zero", reg(rw, 7, 0), libc::EINVAL),
        ("rsvd not zero", reg(rw, 0, 1), libc::EINVAL),
        ("REMOTE with rkey not zero", reg(remote, 7, 0), libc::EINVAL),
        ("REMOTE with rsvd not zero", reg(remote, 0, 1), libc::EINVAL),
    ];
    for (what, mut r, want) in cases {
        expect_errno(&fd, what, abi::MNIC_IOC_REGISTER, &mut r, want)?;
    }
    let mut stats = abi::MnicCtxStats::default();
    raw_ioctl(&fd, abi::MNIC_IOC_CTX_STATS, &mut stats).map_err(|n| format!("stats: {n}"))?;
    check(stats.registrations == 0, || {
        format!("{} registrations left by refused ones", stats.registrations)
    })?;
    // A registration whose handle cannot be written back is rolled back.
    register_copy_out_fails(&fd, reg(rw, 0, 0))?;
    let mut stats = abi::MnicCtxStats::default();
    raw_ioctl(&fd, abi::MNIC_IOC_CTX_STATS, &mut stats).map_err(|n| format!("stats: {n}"))?;
    check(stats.registrations == 0, || {
        format!(
            "{} registrations left by a failed copy-out",
            stats.registrations
        )
    })?;
    // A plain registration still works, and gets no key.
    let mut r = reg(rw, 0, 0);
    raw_ioctl(&fd, abi::MNIC_IOC_REGISTER, &mut r).map_err(|n| format!("register: {n}"))?;
    check(r.handle != 0 && r.rkey == 0, || {
        format!("plain registration: handle {} rkey {:#x}", r.handle, r.rkey)
    })?;
    // The driver's own view (debugfs): the node it read at probe, and no key recorded.
    let fabric = fs::read_to_string(format!("/sys/kernel/debug/mnic{}/fabric", info.minor))
        .map_err(e("debugfs fabric"))?;
    check(
        fabric.lines().any(|l| l == "node 0xffff") && fabric.lines().any(|l| l == "remote_keys 0"),
        || format!("debugfs fabric: {fabric:?}"),
    )?;
    Ok(Pass)
}

/// `MNIC_IOC_REGISTER` of `req` from a read-only page: the kernel reads the request, registers,
/// and then cannot write the handle (and key) back. Must fail with `EFAULT`.
fn register_copy_out_fails(fd: &impl AsRawFd, req: abi::MnicRegister) -> Result<(), String> {
    let page = Map::anon(4096)?;
    let arg = page.ptr as *mut abi::MnicRegister;
    // SAFETY: `arg` points at the start of a fresh, page-aligned read-write anonymous mapping
    // of 4096 bytes, which holds a `MnicRegister` (32 bytes); nothing else refers to it.
    unsafe { arg.write(req) };
    // SAFETY: mprotect of the whole mapping `page` owns; only the kernel accesses it after.
    let rc = unsafe { libc::mprotect(page.ptr as *mut libc::c_void, 4096, libc::PROT_READ) };
    check(rc == 0, || "mprotect read-only".into())?;
    match raw_ioctl(fd, abi::MNIC_IOC_REGISTER, arg) {
        Err(n) if n == libc::EFAULT => Ok(()),
        other => Err(format!(
            "REGISTER with a read-only argument: {other:?}, want EFAULT"
        )),
    }
}

/// The `remote_keys` line of debugfs `fabric` of NIC `minor` (the driver's device-wide key set).
fn live_remote_keys(minor: u32) -> Result<u64, String> {
    let path = format!("/sys/kernel/debug/mnic{minor}/fabric");
    let text = fs::read_to_string(&path).map_err(e("debugfs fabric"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("remote_keys ")?.parse().ok())
        .ok_or_else(|| format!("{path}: no remote_keys line in {text:?}"))
}

/// `MNIC_IOC_REGISTER` with `REMOTE` and `flags` over `pages` pages at `addr`: the handle and
/// the key.
fn register_remote(
    fd: &impl AsRawFd,
    addr: u64,
    pages: u64,
    flags: u32,
) -> Result<(u32, u32), String> {
    let mut r = abi::MnicRegister {
        addr,
        len: pages * 4096,
        flags: flags | abi::reg_flags::REMOTE,
        ..Default::default()
    };
    raw_ioctl(fd, abi::MNIC_IOC_REGISTER, &mut r)
        .map_err(|n| format!("REMOTE register: errno {n}"))?;
    Ok((r.handle, r.rkey))
}

/// Remote keys on a NIC that is a node of a fabric (explicit: boot with `--fabric`): keys
/// of registrations made before the queues (given at `SETUP_QUEUES`) and after are non-zero
/// and distinct; the driver's set follows registration, deregistration and close; and the
/// device refused none of the `KEY_SET`/`KEY_CLEAR` commands (a refused command is a device
/// error in the kernel log).
fn remote_keys_follow_registrations() -> CaseResult {
    let klog = mnic_guest_util::KlogWindow::new("remote_keys_follow_registrations", false)?;
    let minor;
    {
        let ctx = open()?;
        let info = ctx.info();
        if info.caps.bits() & abi::caps::FABRIC == 0 {
            return Ok(Skip(
                "the NIC is no node of a fabric (boot with --fabric)".into(),
            ));
        }
        minor = info.minor;
        let mut raw = abi::MnicInfo::default();
        raw_ioctl(&*ctx, abi::MNIC_IOC_INFO, &mut raw).map_err(|n| format!("INFO: {n}"))?;
        check(raw.node != u32::from(abi::NODE_NONE), || {
            format!("node {:#x} on a fabric", raw.node)
        })?;
        let before = live_remote_keys(minor)?;
        let buf = DmaBuffer::new(3 * 4096).map_err(e("buffer"))?;
        let rw = abi::reg_flags::READ | abi::reg_flags::WRITE;
        let (h_rw, k_rw) = register_remote(&*ctx, buf.va(), 1, rw)?;
        let (_, k_ro) = register_remote(&*ctx, buf.va() + 4096, 1, abi::reg_flags::READ)?;
        ctx.setup_queues(mnic_guest_util::nic::queue_config())
            .map_err(e("setup_queues"))?;
        let (_, k_after) = register_remote(&*ctx, buf.va() + 8192, 1, rw)?;
        let keys = [k_rw, k_ro, k_after];
        check(
            keys.iter().all(|&k| k != 0) && k_rw != k_ro && k_ro != k_after && k_rw != k_after,
            || format!("keys {keys:x?}: must be non-zero and distinct"),
        )?;
        let live = live_remote_keys(minor)?;
        check(live == before + 3, || {
            format!("{live} live keys after 3, {before} before")
        })?;
        let mut h = abi::MnicHandle {
            handle: h_rw,
            rsvd: 0,
        };
        raw_ioctl(&*ctx, abi::MNIC_IOC_DEREGISTER, &mut h)
            .map_err(|n| format!("deregister: {n}"))?;
        let live = live_remote_keys(minor)?;
        check(live == before + 2, || {
            format!("{live} live keys after a deregistration")
        })?;
        // A key whose registration cannot return it is cleared again (KEY_CLEAR + SYNC, no
        // device error below) and forgotten, and no registration remains.
        let regs = ctx.ctx_stats().map_err(e("stats"))?.registrations;
        let req = abi::MnicRegister {
            addr: buf.va(),
            len: 4096,
            flags: rw | abi::reg_flags::REMOTE,
            ..Default::default()
        };
        register_copy_out_fails(&*ctx, req)?;
        let live = live_remote_keys(minor)?;
        check(live == before + 2, || {
            format!("{live} live keys after a failed copy-out")
        })?;
        let now = ctx.ctx_stats().map_err(e("stats"))?.registrations;
        check(now == regs, || {
            format!("{now} registrations after a failed copy-out, {regs} before")
        })?;
        note(format!("keys {keys:08x?}, node {}", raw.node));
    }
    let live = live_remote_keys(minor)?;
    check(live == 0, || {
        format!("{live} live keys after the context closed")
    })?;
    let log = klog.clean()?;
    let refused: Vec<_> = log.iter().filter(|l| l.contains("device error")).collect();
    check(refused.is_empty(), || {
        format!("the device refused commands: {refused:?}")
    })?;
    Ok(Pass)
}

fn main() {
    let cases: &[Case] = &[
        ("probe_identity", probe_identity, true),
        ("copy_on_demand_unpinned", copy_on_demand_unpinned, true),
        (
            "pageout_frees_and_faults_back",
            pageout_frees_and_faults_back,
            true,
        ),
        (
            "munmap_then_dma_fails_cleanly",
            munmap_then_dma_fails_cleanly,
            true,
        ),
        (
            "fork_cow_parent_keeps_device_writes",
            fork_cow_parent_keeps_device_writes,
            true,
        ),
        (
            "child_uses_parent_context_refused",
            child_uses_parent_context_refused,
            true,
        ),
        (
            "child_drop_keeps_doorbell_address",
            child_drop_keeps_doorbell_address,
            true,
        ),
        ("kill_with_dma_in_flight", kill_with_dma_in_flight, true),
        ("bad_ioctls_refused", bad_ioctls_refused, true),
        (
            "remote_registration_without_fabric",
            remote_registration_without_fabric,
            true,
        ),
        // Explicit: needs a NIC that is a node of a fabric (`mnic-vm run --fabric`).
        (
            "remote_keys_follow_registrations",
            remote_keys_follow_registrations,
            false,
        ),
        (
            "pinned_baseline_pins_and_fills",
            pinned_baseline_pins_and_fills,
            true,
        ),
        (
            "debugfs_reports_contexts_and_sync_waits",
            debugfs_reports_contexts_and_sync_waits,
            true,
        ),
        (
            "forgotten_registration_keeps_memory",
            forgotten_registration_keeps_memory,
            true,
        ),
        ("shadow_ioctls", shadow_ioctls, true),
        (
            "shadow_posts_skip_the_doorbell",
            shadow_posts_skip_the_doorbell,
            true,
        ),
        ("trapped_doorbells_knob", trapped_doorbells_knob, true),
        ("shadow_survives_sleep", shadow_survives_sleep, true),
        (
            "trace_events_show_each_step",
            observe::trace_events_show_each_step,
            true,
        ),
        (
            "latency_histograms_count_syncs_and_faults",
            observe::latency_histograms_count_syncs_and_faults,
            true,
        ),
        // Last: unloads the module (every context above is closed by now).
        ("module_reload", module_reload, true),
    ];
    mnic_guest_util::run("mnic-driver-test", cases);
}
