//! Concurrency, isolation, hostile input and faults: teardown races, a mutator hammering the
//! page tables under device traffic, many contexts, two processes, an ioctl fuzzer, hostile
//! work descriptors, module unload and unbind with open contexts, and the device process dying.

use std::fs::{self, File, OpenOptions};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use mnic::{Access, Context, DmaBuffer, Error, Pattern, Traffic, Work, WorkError};
use mnic_abi as abi;
use zerocopy::{FromBytes, IntoBytes};

use crate::util::*;

/// MPOL_MF_MOVE of move_pages(2) (not in the libc crate).
const MPOL_MF_MOVE: i32 = 1 << 1;

const RW: i32 = libc::PROT_READ | libc::PROT_WRITE;

/// hmm-tests anon_teardown: another thread unmaps the range while the device copies from (or
/// into) it. Each copy either completes with the right data (it finished before the unmap) or
/// is aborted with EFAULT; the device never touches the freed pages (stale checker).
pub fn anon_teardown() -> CaseResult {
    let ctx = ctxq()?;
    let iters = if soak() { 3000 } else { 80 };
    let len = 64 * PAGE;
    let dst = DmaBuffer::new(len).map_err(e("buffer"))?;
    let src = DmaBuffer::new(len).map_err(e("buffer"))?;
    src.write_from(0, &pattern(0, len, 0xabc));
    let _rd = ctx.register(&dst, Access::WRITE).map_err(e("register"))?;
    let _rs = ctx.register(&src, Access::READ).map_err(e("register"))?;
    let mut rng = Rng(0x7ea4_d0e1);
    let (mut ok, mut aborted) = (0u64, 0u64);
    let s0 = stats(&ctx)?;
    for i in 0..iters {
        let m = Map::anon(len)?;
        m.fill(0, len, i);
        let reg = reg_raw(&ctx, m.va(), len, Access::READ_WRITE)?;
        let (ptr, mlen) = (m.ptr, m.len);
        std::mem::forget(m); // the thread unmaps it
        let delay = Duration::from_micros(rng.below(4000));
        let th = std::thread::spawn(move || {
            std::thread::sleep(delay);
            // SAFETY: the case's own mapping, unmapped exactly once, by this thread.
            unsafe { libc::munmap(ptr as *mut _, mlen) };
        });
        let into_region = i % 2 == 1;
        let work = if into_region {
            Work::copy(src.va(), ptr as u64, len as u32)
        } else {
            Work::copy(ptr as u64, dst.va(), len as u32)
        }
        .map_err(e("work"))?;
        let r = ctx.run(&work, TIMEOUT);
        th.join()
            .map_err(|_| "munmap thread panicked".to_string())?;
        match r {
            Ok(_) => {
                ok += 1;
                if !into_region {
                    is_pattern(&dst.to_vec(), 0, i).map_err(|w| {
                        format!("iteration {i}: completed copy has wrong data: {w}")
                    })?;
                }
            }
            Err(Error::Work {
                error: WorkError::FaultAborted { errno },
                ..
            }) if errno == libc::EFAULT => aborted += 1,
            Err(other) => return Err(format!("iteration {i}: {other}")),
        }
        let q = query(&ctx, ptr as u64, len)?;
        check(q.valid() == 0, || {
            format!("iteration {i}: {} entries survived munmap", q.valid())
        })?;
        drop(reg);
    }
    let s = stats(&ctx)?;
    note(format!(
        "{iters} races: {ok} copies completed, {aborted} aborted with EFAULT; {} invalidations, \
         {} faults",
        s.invalidations - s0.invalidations,
        s.faults - s0.faults
    ));
    no_stale(&ctx)?;
    Ok(Outcome::Pass)
}

fn move_chunk(ptr: usize, pages: usize, node: i32) {
    let ptrs: Vec<*mut libc::c_void> = (0..pages).map(|i| (ptr + i * PAGE) as *mut _).collect();
    let nodes = vec![node; pages];
    let mut status = vec![0i32; pages];
    // SAFETY: move_pages(2) on our own process with arrays of `pages` entries.
    unsafe {
        libc::syscall(
            libc::SYS_move_pages,
            0,
            pages as libc::c_ulong,
            ptrs.as_ptr(),
            nodes.as_ptr(),
            status.as_mut_ptr(),
            MPOL_MF_MOVE,
        )
    };
}

/// The concurrency hammer: the traffic generator does random reads and writes over a 4 MiB
/// range while another thread, in a loop, drops pages (DONTNEED), pages them out, write-protects
/// and restores them, replaces the mapping (mmap MAP_FIXED), forks, and migrates pages between
/// nodes. Every work item completes (OK, or aborted while the range was read-only); the stale
/// checker stays at zero; afterwards the device and CPU agree on the data.
pub fn hammer_concurrent() -> CaseResult {
    let _ = ensure_swap();
    let ctx = ctxq()?;
    let len = 4 << 20;
    let m = Map::anon(len)?;
    m.fill(0, len, 0x55);
    let _r = reg_raw(&ctx, m.va(), len, Access::READ_WRITE)?;
    let dur = duration(4, 180);
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new([(); 6].map(|_| AtomicU64::new(0)));
    let two_nodes = fs::metadata("/sys/devices/system/node/node1").is_ok();
    let (ptr, stop2, ops2) = (m.ptr, stop.clone(), ops.clone());
    let mutator = std::thread::spawn(move || {
        let mut rng = Rng(0x4a11_3e75);
        let chunk = 64 << 10;
        while !stop2.load(Ordering::Relaxed) {
            let off = rng.below((len / chunk) as u64) as usize * chunk;
            let at = (ptr + off) as *mut libc::c_void;
            let op = rng.below(6) as usize;
            // SAFETY (all arms): system calls over a 64 KiB chunk of the case's own mapping;
            // the mapping stays in place (MAP_FIXED replaces it atomically).
            unsafe {
                match op {
                    0 => {
                        libc::madvise(at, chunk, libc::MADV_DONTNEED);
                    }
                    1 => {
                        libc::madvise(at, chunk, libc::MADV_PAGEOUT);
                    }
                    2 => {
                        libc::mprotect(at, chunk, libc::PROT_READ);
                        std::thread::sleep(Duration::from_micros(300));
                        libc::mprotect(at, chunk, RW);
                    }
                    3 => {
                        libc::mmap(
                            at,
                            chunk,
                            RW,
                            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                            -1,
                            0,
                        );
                    }
                    4 => {
                        let pid = libc::fork();
                        if pid == 0 {
                            libc::_exit(0);
                        }
                        if pid > 0 {
                            libc::waitpid(pid, std::ptr::null_mut(), 0);
                        }
                    }
                    _ => {
                        if two_nodes {
                            move_chunk(ptr + off, chunk / PAGE, rng.below(2) as i32);
                        }
                    }
                }
            }
            ops2[op].fetch_add(1, Ordering::Relaxed);
        }
    });
    let d0 = ctx.dev_stats().map_err(e("DEV_STATS"))?;
    let s0 = stats(&ctx)?;
    let start = Instant::now();
    let (mut ok, mut aborted, mut seed) = (0u64, 0u64, 1u64);
    let mut abort_errnos = std::collections::BTreeMap::new();
    let mut failure = None;
    while start.elapsed() < dur {
        let w = Traffic::new(m.va(), len as u32)
            .op_size(4096)
            .ops(300)
            .pattern(Pattern::RandomRw)
            .seed(seed)
            .build()
            .map_err(e("traffic"))?;
        seed += 1;
        match ctx.run(&w, TIMEOUT) {
            Ok(_) => ok += 1,
            Err(Error::Work {
                error: WorkError::FaultAborted { errno },
                ..
            }) if [libc::EPERM, libc::EFAULT, libc::EBUSY].contains(&errno) => {
                aborted += 1;
                *abort_errnos.entry(errno).or_insert(0u64) += 1;
            }
            Err(other) => {
                failure = Some(format!("traffic item {seed}: {other}"));
                break;
            }
        }
        if stale(&ctx)? != 0 {
            failure = Some(format!("stale access after {:?}", start.elapsed()));
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    mutator
        .join()
        .map_err(|_| "mutator thread panicked".to_string())?;
    if let Some(f) = failure {
        return Err(f);
    }
    let d = ctx.dev_stats().map_err(e("DEV_STATS"))?.since(&d0);
    let s = stats(&ctx)?;
    let counts: Vec<u64> = ops.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    // Afterwards, CPU and device agree.
    m.fill(0, len, 0x56);
    is_pattern(
        &dev_read(&ctx, m.va(), len).map_err(e("read after"))?,
        0,
        0x56,
    )?;
    note(format!(
        "{:?}: {ok} traffic items ok, {aborted} aborted {abort_errnos:?} (errno: count); \
         {} DMA ops, {} traffic ops; mutator dontneed {} pageout {} mprotect {} remap {} fork {} \
         migrate {}; {} invalidations ({} entries), {} faults ({} retries), {} SYNCs, max SYNC \
         wait {} us",
        dur,
        d.get(abi::counter::DMA_OPS),
        d.get(abi::counter::TRAFFIC_OPS),
        counts[0],
        counts[1],
        counts[2],
        counts[3],
        counts[4],
        counts[5],
        s.invalidations - s0.invalidations,
        s.entries_invalidated - s0.entries_invalidated,
        s.faults - s0.faults,
        s.fault_retries - s0.fault_retries,
        d.get(abi::counter::SYNCS),
        s.sync_wait_max_ns / 1000
    ));
    check(
        ok + aborted > 0 && d.get(abi::counter::TRAFFIC_OPS) > 0,
        || "no traffic made progress".into(),
    )?;
    no_stale(&ctx)?;
    Ok(Outcome::Pass)
}

/// Many contexts at once: 16 threads, each with its own open file (hardware context), copy
/// and traffic at the same time; every context has its own index and its own data.
pub fn many_contexts() -> CaseResult {
    ensure_module()?;
    let n = 16;
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let b = barrier.clone();
            std::thread::spawn(move || -> Result<u32, String> {
                let ctx = ctxq()?;
                b.wait(); // all 16 open at once
                let len = 256 << 10;
                let src = Map::anon(len)?;
                let dst = Map::anon(len)?;
                let seed = 100 + i as u64;
                src.fill(0, len, seed);
                let _rs = reg_raw(&ctx, src.va(), len, Access::READ)?;
                let _rd = reg_raw(&ctx, dst.va(), len, Access::READ_WRITE)?;
                for _ in 0..4 {
                    let t = Traffic::new(dst.va(), len as u32)
                        .ops(500)
                        .pattern(Pattern::RandomRw)
                        .seed(seed)
                        .build()
                        .map_err(e("traffic"))?;
                    ctx.run(&t, TIMEOUT).map_err(e("traffic"))?;
                    let w = Work::copy(src.va(), dst.va(), len as u32).map_err(e("work"))?;
                    ctx.run(&w, TIMEOUT).map_err(e("copy"))?;
                    dst.check(0, len, seed)
                        .map_err(|w| format!("context {i}: {w}"))?;
                }
                Ok(ctx.info().ctx)
            })
        })
        .collect();
    let mut idx = Vec::new();
    for t in threads {
        idx.push(t.join().map_err(|_| "thread panicked".to_string())??);
    }
    idx.sort_unstable();
    idx.dedup();
    check(idx.len() == n, || {
        format!("context indices not distinct: {idx:?}")
    })?;
    note(format!("16 contexts, indices {idx:?}"));
    no_stale_fresh()?;
    Ok(Outcome::Pass)
}

/// Two processes cannot reach each other's memory: the child gets the VA of memory the parent
/// mapped after fork; through its own context that VA is unregistered (EFAULT), then registered
/// but not mapped in the child (EFAULT), then mapped to the child's own memory (the child's
/// data, never the parent's). The parent's memory is untouched; the inherited parent context is
/// refused in the child (EPERM).
pub fn two_process_isolation() -> CaseResult {
    let ctx = ctxq()?;
    let len = 4 * PAGE;
    let parent_ctx = &ctx;
    fork_pair(
        |link| {
            let va = link.recv()? as usize;
            // Keep that address ours before anything else is mapped in the child.
            let hole = Map::fixed_noreplace(va, len, libc::PROT_NONE)?;
            match reg_raw(parent_ctx, hole.va(), len, Access::READ) {
                Err(w) if w.contains("EPERM") || w.contains("not permitted") => {}
                other => {
                    return Err(format!(
                        "child registered in the parent's context: {other:?}"
                    ))
                }
            }
            let cctx = ctxq()?;
            want_abort(
                dev_read(&cctx, va as u64, len),
                &[libc::EFAULT],
                "unregistered foreign VA",
            )?;
            let r = reg_raw(&cctx, va as u64, len, Access::READ_WRITE)?;
            want_abort(
                dev_read(&cctx, va as u64, len),
                &[libc::EFAULT, libc::EPERM],
                "registered VA that is PROT_NONE in the child",
            )?;
            want_abort(
                dev_write(&cctx, va as u64, &[0xee; PAGE]),
                &[libc::EFAULT, libc::EPERM],
                "device write to that VA",
            )?;
            hole.munmap(0, len)?;
            want_abort(
                dev_read(&cctx, va as u64, len),
                &[libc::EFAULT],
                "registered VA not mapped in the child",
            )?;
            let own = Map::fixed_noreplace(va, len, RW)?;
            own.fill(0, len, 201);
            is_pattern(
                &dev_read(&cctx, va as u64, len).map_err(e("read own"))?,
                0,
                201,
            )
            .map_err(|w| format!("child's device read of its own memory: {w}"))?;
            dev_write(&cctx, va as u64, &pattern(0, len, 202)).map_err(e("write own"))?;
            drop(r);
            no_stale(&cctx)?;
            link.send(1);
            Ok(())
        },
        |link, _| {
            let m = Map::anon(len)?;
            m.fill(0, len, 200);
            let _r = reg_raw(&ctx, m.va(), len, Access::READ_WRITE | Access::PREFETCH)?;
            link.send(m.va());
            link.recv()?;
            m.check(0, len, 200)
                .map_err(|w| format!("the child reached the parent's memory: {w}"))?;
            is_pattern(&dev_read(&ctx, m.va(), len).map_err(e("read"))?, 0, 200)?;
            Ok(())
        },
    )?;
    no_stale(&ctx)?;
    Ok(Outcome::Pass)
}

// ------------------------------------------------------------------ hostile input

fn open_raw() -> Result<File, String> {
    ensure_module()?;
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(DEV)
        .map_err(e("open"))
}

const fn ioc(dir: u32, nr: u32, size: u32) -> u32 {
    abi::ioc(dir, nr, size as usize)
}

/// The ioctl fuzzer (in a child process, for a bounded time): random and near-valid commands,
/// sizes, pointers (NULL, kernel addresses, unmapped, PROT_NONE, a struct running into a
/// PROT_NONE page), wrapping ranges, structured requests with hostile fields, doorbell mmaps.
/// Afterwards: no kernel warning in the log, every context slot free again (no leak), and the
/// device still copies correctly.
pub fn ioctl_fuzz() -> CaseResult {
    let win = KlogWindow::new("ioctl_fuzz", false)?;
    let dur = duration(3, 120);
    let slab0 = proc_value("/proc/meminfo", "SUnreclaim").unwrap_or(0);
    in_child(|| fuzz(dur))?;
    win.clean()?;
    // No leaked context slot: all of them can be opened again, and one more is refused.
    let mut all = Vec::new();
    let refusal = loop {
        match Context::open(DEV.as_ref()) {
            Ok(c) => all.push(c),
            Err(err) => break err,
        }
        if all.len() > abi::NUM_CONTEXTS as usize {
            break Error::InvalidInput("more contexts than the device has");
        }
    };
    let opened = all.len();
    drop(all);
    check(opened == abi::NUM_CONTEXTS as usize, || {
        format!("{opened} contexts could be opened after the fuzzer ({refusal})")
    })?;
    let slab1 = proc_value("/proc/meminfo", "SUnreclaim").unwrap_or(0);
    let ctx = ctxq()?;
    let m = Map::anon(16 * PAGE)?;
    m.fill(0, m.len, 300);
    let _r = reg_raw(&ctx, m.va(), m.len, Access::READ)?;
    is_pattern(&dev_read(&ctx, m.va(), m.len).map_err(e("read"))?, 0, 300)?;
    note(format!(
        "afterwards: {opened} contexts open at once, then '{refusal}'; unreclaimable slab \
         {slab0} -> {slab1} KiB"
    ));
    no_stale(&ctx)?;
    Ok(Outcome::Pass)
}

fn fuzz(dur: Duration) -> Result<(), String> {
    let arena = Map::anon(64 * PAGE)?;
    let none = Map::new(
        PAGE,
        libc::PROT_NONE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
        0,
    )?;
    let gone = Map::anon(PAGE)?;
    gone.munmap(0, PAGE)?;
    let edge = Map::anon(2 * PAGE)?;
    edge.mprotect(PAGE, PAGE, libc::PROT_NONE)?;
    let av = arena.va();
    let interesting: Vec<u64> = vec![
        av,
        av + PAGE as u64,
        av + 32 * PAGE as u64,
        av + 1,
        av + 64 * PAGE as u64 - 4096,
        0,
        8,
        4096,
        8192,
        1 << 21,
        1 << 30,
        (1 << 30) + 4096,
        u64::MAX,
        u64::MAX - 4095,
        abi::pte::VA_LIMIT,
        abi::pte::VA_LIMIT - 4096,
        0xffff_8880_0000_0000,
        none.va(),
        gone.va(),
        4,
        12,
        3,
        1,
        2,
        0x0000_000c_0000_0004,
        0x0000_0008_0000_0008,
    ];
    let mut rng = Rng(0xf022_5eed);
    for o in (0..arena.len).step_by(8) {
        let v = interesting[rng.below(interesting.len() as u64) as usize];
        arena.fill_byte(o, 8, 0);
        // SAFETY: inside the arena, aligned.
        unsafe { std::ptr::write_volatile((arena.ptr + o) as *mut u64, v) };
    }
    let mut fds = vec![open_raw()?, open_raw()?];
    let sizes: [u32; 10] = [32, 24, 8, 24, 24, 8, 24, 128, 256, 48];
    let dirs: [u32; 10] = [2, 3, 1, 1, 1, 1, 3, 2, 2, 3];
    let mut buf = [0u64; 64];
    let mut results = std::collections::BTreeMap::<i32, u64>::new();
    let (mut n, mut maps) = (0u64, 0u64);
    let start = Instant::now();
    while start.elapsed() < dur {
        n += 1;
        if rng.below(300) == 0 {
            let i = rng.below(fds.len() as u64) as usize;
            fds[i] = open_raw()?;
        }
        let fd = &fds[rng.below(fds.len() as u64) as usize];
        if rng.below(50) == 0 {
            let len = [0, 4096, 8192, 1 << 20][rng.below(4) as usize];
            let off = [0i64, 4096, -4096, 1 << 40][rng.below(4) as usize];
            let prot =
                [libc::PROT_WRITE, RW, libc::PROT_EXEC | libc::PROT_READ][rng.below(3) as usize];
            let flags = [libc::MAP_SHARED, libc::MAP_PRIVATE][rng.below(2) as usize];
            use std::os::fd::AsRawFd;
            // SAFETY: a new mapping of our device file at an address the kernel picks.
            let p =
                unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd.as_raw_fd(), off) };
            if p != libc::MAP_FAILED {
                maps += 1;
                // SAFETY: the doorbell page (the only mapping the driver allows) takes any
                // 32-bit store; then it is unmapped.
                unsafe {
                    std::ptr::write_volatile(p.cast::<u32>(), rng.next_u64() as u32);
                    libc::munmap(p, len);
                }
            }
            continue;
        }
        let nr = rng.below(11) as u32;
        let cmd = match (rng.below(10), nr) {
            (0..=6, 0..=9) => ioc(dirs[nr as usize], nr, sizes[nr as usize]),
            (7, _) => ioc(rng.below(4) as u32, nr, rng.below(0x4000) as u32),
            (8, _) => rng.next_u64() as u32,
            (_, 0..=9) => ioc(rng.below(4) as u32, nr, sizes[nr as usize]),
            _ => ioc(3, nr, 8),
        };
        for w in buf.iter_mut() {
            *w = if rng.below(4) == 0 {
                rng.next_u64()
            } else {
                interesting[rng.below(interesting.len() as u64) as usize]
            };
        }
        // Structured requests: valid-looking ones with one hostile field.
        if rng.below(2) == 0 && nr <= 6 {
            let a = av + rng.below(64) * PAGE as u64;
            let l = (1 + rng.below(16)) * PAGE as u64;
            buf[0] = a;
            buf[1] = l;
            buf[2] = rng.below(16); // flags / handle
            if nr == 2 {
                buf[0] = rng.below(40);
            }
            if nr == 4 {
                buf[1] = a + PAGE as u64;
                buf[2] = (4 + rng.below(10)) | ((4 + rng.below(10)) << 32);
            }
            if nr == 5 {
                buf[0] = rng.below(1 << 13);
            }
        }
        if cmd == abi::MNIC_IOC_WAIT {
            buf[0] = rng.below(4);
            buf[2] = rng.below(3); // timeout_ms: never sleep long
        }
        let arg: usize = if cmd == abi::MNIC_IOC_WAIT {
            buf.as_mut_ptr() as usize
        } else {
            match rng.below(8) {
                0 => 0,
                1 => 8,
                2 => 0xffff_8880_0000_0000,
                3 => 0xffff_ffff_8100_0000,
                4 => gone.ptr,
                5 => none.ptr,
                6 => edge.ptr + PAGE - 8 * (1 + rng.below(8)) as usize,
                _ => buf.as_mut_ptr() as usize,
            }
        };
        let r = raw_ioctl(fd, cmd, arg as *mut u8);
        *results.entry(r.err().unwrap_or(0)).or_default() += 1;
    }
    drop(fds);
    let summary: Vec<String> = results
        .iter()
        .map(|(k, v)| {
            format!(
                "{}:{v}",
                if *k == 0 {
                    "ok".into()
                } else {
                    format!("errno{k}")
                }
            )
        })
        .collect();
    note(format!(
        "fuzzer: {n} ioctls in {dur:?}, {maps} device mmaps accepted; results {}",
        summary.join(" ")
    ));
    Ok(())
}

/// A work and completion queue driven by hand (the library refuses bad descriptors before
/// they reach the device; this does not).
struct RawQueue<'a> {
    fd: &'a File,
    mem: Map,
    tail: u32,
    head: u64,
}

const RAW_LOG2: u32 = 4;

impl<'a> RawQueue<'a> {
    fn new(fd: &'a File) -> Result<Self, String> {
        let mem = Map::anon(2 * PAGE)?;
        let mut r = abi::MnicRegister {
            addr: mem.va(),
            len: mem.len as u64,
            flags: abi::reg_flags::READ | abi::reg_flags::WRITE | abi::reg_flags::PREFETCH,
            ..Default::default()
        };
        raw_ioctl(fd, abi::MNIC_IOC_REGISTER, &mut r)
            .map_err(|n| format!("register: errno {n}"))?;
        let mut q = abi::MnicQueues {
            wq_addr: mem.va(),
            cq_addr: mem.at(PAGE),
            wq_size_log2: RAW_LOG2,
            cq_size_log2: RAW_LOG2,
        };
        raw_ioctl(fd, abi::MNIC_IOC_SETUP_QUEUES, &mut q)
            .map_err(|n| format!("setup queues: errno {n}"))?;
        Ok(Self {
            fd,
            mem,
            tail: 0,
            head: 0,
        })
    }

    fn post(&mut self, d: &abi::WorkDesc) -> Result<abi::Completion, String> {
        let slot = (self.tail % (1 << RAW_LOG2)) as usize;
        for (i, w) in d.as_bytes().chunks(8).enumerate() {
            let v = u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
            // SAFETY: inside the WQ page of our mapping, aligned.
            unsafe { std::ptr::write_volatile((self.mem.ptr + slot * 64 + i * 8) as *mut u64, v) };
        }
        self.tail += 1;
        let mut p = abi::MnicPost {
            wq_tail: self.tail % (1 << RAW_LOG2),
            rsvd: 0,
        };
        raw_ioctl(self.fd, abi::MNIC_IOC_POST, &mut p).map_err(|n| format!("post: errno {n}"))?;
        let cslot = (self.head % (1 << RAW_LOG2)) as usize;
        let phase = (self.head >> RAW_LOG2) & 1 == 0;
        let start = Instant::now();
        loop {
            let bytes = self.mem.read(PAGE + cslot * 32, 32);
            let c = abi::Completion::read_from_bytes(&bytes).map_err(|_| "completion size")?;
            if (c.flags & abi::completion::FLAG_PHASE != 0) == phase {
                self.head += 1;
                return Ok(c);
            }
            if start.elapsed() > Duration::from_secs(10) {
                return Err(format!("no completion for {d:?}"));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// Hostile work descriptors straight onto the work queue: unknown opcode, zero and oversized
/// lengths, non-canonical and wrapping addresses, bad traffic parameters. Each completes with
/// BAD_DESCRIPTOR and is not executed; the queue keeps going and a valid copy after them works.
pub fn hostile_descriptors() -> CaseResult {
    let fd = open_raw()?;
    let mut q = RawQueue::new(&fd)?;
    let buf = Map::anon(4 * PAGE)?;
    buf.fill(0, 2 * PAGE, 400);
    let mut r = abi::MnicRegister {
        addr: buf.va(),
        len: buf.len as u64,
        flags: abi::reg_flags::READ | abi::reg_flags::WRITE,
        ..Default::default()
    };
    raw_ioctl(&fd, abi::MNIC_IOC_REGISTER, &mut r).map_err(|n| format!("register: errno {n}"))?;
    let mut dstats = abi::MnicDevStats::default();
    raw_ioctl(&fd, abi::MNIC_IOC_DEV_STATS, &mut dstats).map_err(|n| format!("stats {n}"))?;
    let errors0 = dstats.counters[abi::counter::ERRORS as usize];
    let (src, dst) = (buf.va(), buf.at(2 * PAGE));
    let copy = |len: u32, s: u64, d: u64| abi::WorkDesc {
        opcode: abi::work::COPY,
        len,
        src: s,
        dst: d,
        ..Default::default()
    };
    let traffic = |len: u32, op_size: u32, pattern: u32, ops: u64| abi::WorkDesc {
        opcode: abi::work::TRAFFIC,
        len,
        src,
        op_size,
        pattern,
        ops,
        ..Default::default()
    };
    let bad: Vec<(&str, abi::WorkDesc)> = vec![
        (
            "opcode 0x77",
            abi::WorkDesc {
                opcode: 0x77,
                len: 4096,
                src,
                dst,
                ..Default::default()
            },
        ),
        ("opcode 0", abi::WorkDesc::default()),
        ("COPY len 0", copy(0, src, dst)),
        (
            "COPY len 64 MiB + 1",
            copy(abi::work::COPY_MAX + 1, src, dst),
        ),
        ("COPY src non-canonical", copy(4096, 1 << 47, dst)),
        (
            "COPY dst kernel half",
            copy(4096, src, 0xffff_8880_0000_0000),
        ),
        ("COPY src wraps", copy(8192, u64::MAX - 4095, dst)),
        ("TRAFFIC len 0", traffic(0, 64, 0, 1)),
        ("TRAFFIC op_size 0", traffic(4096, 0, 0, 1)),
        ("TRAFFIC op_size 65537", traffic(1 << 20, 65537, 0, 1)),
        ("TRAFFIC pattern 9", traffic(4096, 64, 9, 1)),
        ("TRAFFIC ops 2^32 + 1", traffic(4096, 64, 0, (1 << 32) + 1)),
        (
            "TRAFFIC range wraps",
            abi::WorkDesc {
                src: u64::MAX - 100,
                ..traffic(4096, 64, 0, 1)
            },
        ),
    ];
    let mut refused = 0;
    for (i, (what, d)) in bad.iter().enumerate() {
        let d = abi::WorkDesc {
            tag: 1000 + i as u64,
            ..*d
        };
        let c = q.post(&d)?;
        check(c.tag == d.tag, || {
            format!("{what}: completion tag {} want {}", c.tag, d.tag)
        })?;
        check(c.status == abi::completion::BAD_DESCRIPTOR, || {
            format!(
                "{what}: completion status {} (want BAD_DESCRIPTOR)",
                c.status
            )
        })?;
        refused += 1;
    }
    is_zero(
        &buf.read(2 * PAGE, 2 * PAGE),
        "destination after refused descriptors",
    )?;
    // Informational: overlap (the spec forbids it but does not list it as BAD_DESCRIPTOR), and
    // unknown flag bits.
    let overlap = q.post(&abi::WorkDesc {
        tag: 2000,
        ..copy(4096, src, src + 2048)
    })?;
    let flags = q.post(&abi::WorkDesc {
        tag: 2001,
        flags: 0x8000,
        opcode: abi::work::NOP,
        ..Default::default()
    })?;
    // The unregistered source: a valid descriptor that faults and is aborted.
    let unreg = q.post(&abi::WorkDesc {
        tag: 2002,
        ..copy(4096, 0x1000_0000, dst)
    })?;
    check(
        unreg.status == abi::completion::FAULT_ABORTED && unreg.detail == libc::EFAULT as u32,
        || format!("unregistered source: {unreg:?}"),
    )?;
    buf.fill(0, 2 * PAGE, 400);
    let good = q.post(&abi::WorkDesc {
        tag: 3000,
        ..copy(2 * PAGE as u32, src, dst)
    })?;
    check(good.status == abi::completion::OK, || {
        format!("valid copy after the bad ones: {good:?}")
    })?;
    is_pattern(&buf.read(2 * PAGE, 2 * PAGE), 0, 400)?;
    raw_ioctl(&fd, abi::MNIC_IOC_DEV_STATS, &mut dstats).map_err(|n| format!("stats {n}"))?;
    let errors = dstats.counters[abi::counter::ERRORS as usize] - errors0;
    note(format!(
        "{refused} hostile descriptors -> BAD_DESCRIPTOR, device ERRORS +{errors}; overlapping \
         COPY -> status {}, NOP with unknown flag -> status {}",
        overlap.status, flags.status
    ));
    check(
        dstats.counters[abi::counter::STALE_ACCESSES as usize] == 0,
        || "stale accesses".into(),
    )?;
    Ok(Outcome::Pass)
}

// ------------------------------------------------------------------ module, unbind, death

fn run_cmd(cmd: &str, arg: &str) -> Result<(bool, String), String> {
    let out = Command::new(cmd).arg(arg).output().map_err(e("command"))?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    ))
}

/// rmmod with an open context must be refused (the open file holds the module); after close it
/// unloads, and reloads cleanly.
pub fn rmmod_with_open_context() -> CaseResult {
    let ctx = ctxq()?;
    // What the device went through in this boot so far (unload and unbind reset it).
    let d = ctx.dev_stats().map_err(e("DEV_STATS"))?;
    note(format!(
        "device totals so far: {}",
        d.iter()
            .filter(|(_, v)| *v != 0)
            .map(|(n, v)| format!("{n} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let m = Map::anon(4 * PAGE)?;
    m.fill(0, m.len, 500);
    let _r = reg_raw(&ctx, m.va(), m.len, Access::READ_WRITE | Access::PREFETCH)?;
    let (ok, msg) = run_cmd("rmmod", "mnic")?;
    check(!ok, || "rmmod succeeded while a context was open".into())?;
    is_pattern(
        &dev_read(&ctx, m.va(), m.len).map_err(e("read after refused rmmod"))?,
        0,
        500,
    )?;
    drop(_r);
    drop(ctx);
    let (ok, out) = run_cmd("rmmod", "mnic")?;
    check(ok, || format!("rmmod after close: {out}"))?;
    let (ok, out) = run_cmd("insmod", MODULE)?;
    check(ok, || format!("insmod: {out}"))?;
    let ctx = ctxq()?;
    let _r = reg_raw(&ctx, m.va(), m.len, Access::READ)?;
    is_pattern(
        &dev_read(&ctx, m.va(), m.len).map_err(e("read after reload"))?,
        0,
        500,
    )?;
    note(format!("rmmod with an open context: '{msg}'"));
    no_stale(&ctx)?;
    Ok(Outcome::Pass)
}

pub(crate) fn mnic_pci() -> Result<(String, String), String> {
    for d in fs::read_dir("/sys/bus/pci/devices")
        .map_err(e("sysfs"))?
        .flatten()
    {
        let read = |f: &str| fs::read_to_string(d.path().join(f)).unwrap_or_default();
        if read("vendor").trim() == "0x1234" && read("device").trim() == "0x4d4e" {
            let drv = fs::read_link(d.path().join("driver"))
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_default();
            return Ok((d.file_name().to_string_lossy().into_owned(), drv));
        }
    }
    Err("no 1234:4d4e device".into())
}

/// Unbind (the driver resets the device) while a context has DMA in flight, then bind again:
/// the open file gets ENODEV, munmap of its registered memory and close do not hang, nothing
/// warns, and after bind a new context works.
pub fn unbind_with_open_context() -> CaseResult {
    let win = KlogWindow::new("unbind_with_open_context", false)?;
    let ctx = ctxq()?;
    let (bdf, drv) = mnic_pci()?;
    check(!drv.is_empty(), || "device not bound".into())?;
    let m = Map::anon(1 << 20)?;
    m.fill(0, m.len, 600);
    let r = reg_raw(&ctx, m.va(), m.len, Access::READ_WRITE)?;
    let t = Traffic::new(m.va(), m.len as u32)
        .ops(1 << 30)
        .pattern(Pattern::RandomRw)
        .build()
        .map_err(e("traffic"))?;
    ctx.post(&t).map_err(e("post"))?;
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    fs::write(format!("/sys/bus/pci/drivers/{drv}/unbind"), &bdf).map_err(e("unbind"))?;
    let t_unbind = t0.elapsed();
    let after = ctx.ctx_stats();
    check(matches!(after, Err(Error::DeviceGone { .. })), || {
        format!("CTX_STATS after unbind: {after:?}")
    })?;
    let t1 = Instant::now();
    let waited = ctx.wait(Some(Duration::from_secs(5)));
    let t_wait = t1.elapsed();
    check(matches!(waited, Err(Error::DeviceGone { .. })), || {
        format!("wait after unbind: {waited:?}")
    })?;
    let t2 = Instant::now();
    m.munmap(0, m.len)?;
    let t_munmap = t2.elapsed();
    drop(r);
    let t3 = Instant::now();
    drop(ctx);
    let t_close = t3.elapsed();
    fs::write(format!("/sys/bus/pci/drivers/{drv}/bind"), &bdf).map_err(e("bind"))?;
    let devs = mnic::Device::list().map_err(e("list"))?;
    let names: Vec<String> = devs
        .iter()
        .map(|d| d.path().display().to_string())
        .collect();
    check(fs::metadata(DEV).is_ok(), || {
        format!("after bind the device nodes are {names:?}, not {DEV}")
    })?;
    device_copies(601)?;
    win.clean()?;
    note(format!(
        "unbind {t_unbind:?}; then wait -> ENODEV in {t_wait:?}, munmap {t_munmap:?}, close \
         {t_close:?}; rebound as {names:?}"
    ));
    Ok(Outcome::Pass)
}

/// The device process is killed (`mnic-vm run --kill-device-after`) after a load phase, while
/// the context holds registered memory, device entries and a sleeping waiter: the driver
/// notices (a SYNC that never completes declares the device dead after 2 s), ioctls get ENODEV,
/// waits end, munmap and close of registered memory do not hang, a new open is refused, nothing
/// warns, and the module unloads. Only run explicitly, in its own boot.
pub fn device_killed() -> CaseResult {
    let win = KlogWindow::new("device_killed", false)?;
    let ctx = ctxq()?;
    let len = 1 << 20;
    let m = Map::anon(len)?;
    m.fill(0, len, 700);
    let r = reg_raw(&ctx, m.va(), len, Access::READ_WRITE)?;
    // A waiter with a long timeout on a second fd of the same context (raw: the library
    // context is not shared between threads).
    use std::os::fd::AsRawFd;
    // SAFETY: dup of our context fd; owned by the File below.
    let dupfd = unsafe { libc::dup(ctx.as_raw_fd()) };
    check(dupfd >= 0, || os_err("dup"))?;
    // SAFETY: a fresh fd we own.
    let dup: File = unsafe { std::os::fd::FromRawFd::from_raw_fd(dupfd) };
    let start = Instant::now();
    let waiter = std::thread::spawn(move || loop {
        let mut w = abi::MnicWait {
            target: u64::MAX,
            count: 0,
            timeout_ms: 15_000,
            rsvd: 0,
        };
        let r = raw_ioctl(&dup, abi::MNIC_IOC_WAIT, &mut w);
        if r != Err(libc::ETIMEDOUT) {
            return (r, start.elapsed());
        }
        if start.elapsed() > Duration::from_secs(240) {
            return (r, start.elapsed());
        }
    });
    // Load until the guest has been up LOAD_UNTIL s, then no device access at all until
    // IDLE_UNTIL s: the kill (--kill-device-after, ~25 s after the VM starts) must land in the
    // idle window, because QEMU 11.1's vfio-user client aborts (error_setv assertion) when the
    // server dies with a request of the guest in flight.
    const LOAD_UNTIL: f64 = 12.0;
    const IDLE_UNTIL: f64 = 40.0;
    let uptime = || -> f64 {
        fs::read_to_string("/proc/uptime")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0)
    };
    let (mut items, mut invals, mut seed) = (0u64, 0u64, 0u64);
    let mut max_stale = 0;
    while uptime() < LOAD_UNTIL {
        seed += 1;
        let w = Traffic::new(m.va(), len as u32)
            .ops(2000)
            .pattern(Pattern::RandomRw)
            .seed(seed)
            .build()
            .map_err(e("traffic"))?;
        ctx.run(&w, Some(Duration::from_secs(5)))
            .map_err(|err| format!("traffic before the kill: {err}"))?;
        items += 1;
        m.madvise(
            (seed as usize % 16) * (64 << 10),
            64 << 10,
            libc::MADV_DONTNEED,
        )?;
        invals += 1;
        max_stale = max_stale.max(stale(&ctx)?);
    }
    check(max_stale == 0, || {
        format!("{max_stale} stale accesses before the kill")
    })?;
    // Entries the device holds when it dies.
    ctx.prefetch(m.va(), len as u64, true)
        .map_err(e("prefetch"))?;
    let held = query(&ctx, m.va(), len)?.valid();
    let idle_from = uptime();
    while uptime() < IDLE_UNTIL {
        std::thread::sleep(Duration::from_millis(200));
    }
    let failure = format!(
        "idle from {idle_from:.1} s to {IDLE_UNTIL} s of uptime with {held} device entries"
    );
    let t_fail = start.elapsed();
    // An invalidation now: its SYNC can never complete. It must return (2 s timeout).
    let t = Instant::now();
    m.madvise(0, len, libc::MADV_DONTNEED)?;
    let t_madvise = t.elapsed();
    let t_dead = start.elapsed();
    let stats_after = ctx.ctx_stats();
    let wait_after = {
        let t = Instant::now();
        let r = ctx.wait_events(u64::MAX, Duration::from_secs(10));
        (r, t.elapsed())
    };
    if t_madvise < Duration::from_millis(500) && stats_after.is_ok() {
        return Ok(Outcome::Skip(
            "the device answered after the idle window: it was not killed (run this case in \
             its own boot with --kill-device-after 25)"
                .into(),
        ));
    }
    let (waiter_result, waiter_at) = waiter
        .join()
        .map_err(|_| "waiter thread panicked".to_string())?;
    let reopen = Context::open(DEV.as_ref());
    let t_munmap = unmap_registered(&m, len, r)?;
    let t = Instant::now();
    drop(ctx);
    let t_close = t.elapsed();
    let declared = declared_dead(&win)?;
    // rmmod must not hang on a dead device.
    let t = Instant::now();
    let mut child = Command::new("rmmod")
        .arg("mnic")
        .spawn()
        .map_err(e("rmmod"))?;
    let rmmod = loop {
        if let Some(st) = child.try_wait().map_err(e("rmmod wait"))? {
            break format!("{st} in {:?}", t.elapsed());
        }
        if t.elapsed() > Duration::from_secs(30) {
            break "still running after 30 s (hung)".to_string();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    note(format!(
        "{items} traffic items and {invals} invalidations before the kill; {failure} \
         ({t_fail:?} into the case)"
    ));
    note(format!(
        "then: MADV_DONTNEED returned in {t_madvise:?}; CTX_STATS -> {:?}; WAIT -> {:?} in {:?}; \
         the thread already sleeping in WAIT (15 s timeout) returned {:?} at {:?} (device dead \
         at ~{t_dead:?}); reopen -> {:?}; munmap {t_munmap:?}; close {t_close:?}; rmmod {rmmod}",
        stats_after
            .as_ref()
            .map(|_| "ok")
            .map_err(|e| e.to_string()),
        wait_after.0.as_ref().map_err(|e| e.to_string()),
        wait_after.1,
        waiter_result,
        waiter_at,
        reopen.as_ref().map(|_| "ok").map_err(|e| e.to_string()),
    ));
    note(format!("kernel: {}", declared.trim()));
    check(t_madvise < Duration::from_secs(5), || {
        format!("an invalidation on the dead device took {t_madvise:?}")
    })?;
    check(matches!(stats_after, Err(Error::DeviceGone { .. })), || {
        "ioctls do not report ENODEV after the device died".into()
    })?;
    check(
        matches!(wait_after.0, Err(Error::DeviceGone { .. }))
            && wait_after.1 < Duration::from_secs(1),
        || "WAIT on the dead device does not end with ENODEV at once".into(),
    )?;
    check(reopen.is_err(), || {
        "a new context opened on the dead device".into()
    })?;
    released_dead_device(t_munmap, t_close, &declared)?;
    check(rmmod.starts_with("exit status: 0"), || {
        format!("rmmod: {rmmod}")
    })?;
    check(
        waiter_result == Err(libc::ENODEV) && waiter_at < t_dead + Duration::from_secs(2),
        || {
            format!(
                "a WAIT already sleeping when the device was declared dead (at ~{t_dead:?}) \
                 returned {waiter_result:?} only at {waiter_at:?}: declare_dead() does not wake \
                 the waiters (driver/file.rs wait() checks is_gone only before sleeping)"
            )
        },
    )?;
    Ok(Outcome::Pass)
}

/// Unmaps a registered mapping on a dead device and drops its registration: how long the
/// munmap took (it must not wait for the device).
fn unmap_registered(m: &Map, len: usize, r: mnic::Registration<'_>) -> Result<Duration, String> {
    let t = Instant::now();
    m.munmap(0, len)?;
    let took = t.elapsed();
    drop(r);
    Ok(took)
}

/// munmap and close of a dead device's memory and context returned, and the driver said it
/// found the device not responding.
fn released_dead_device(
    t_munmap: Duration,
    t_close: Duration,
    declared: &str,
) -> Result<(), String> {
    check(
        t_munmap < Duration::from_secs(5) && t_close < Duration::from_secs(5),
        || "munmap or close hung on the dead device".into(),
    )?;
    check(!declared.is_empty(), || {
        "no 'not responding' in the kernel log".into()
    })
}

/// The driver's "not responding" line in the case's kernel-log window (empty if none); the
/// window must be otherwise clean.
fn declared_dead(win: &KlogWindow) -> Result<String, String> {
    Ok(win
        .clean()?
        .iter()
        .find(|l| l.contains("not responding"))
        .cloned()
        .unwrap_or_default())
}

/// The device process dies *under load* (`mnic-vm run --kill-device-after`): traffic and
/// invalidations run without pause until the device stops answering. The device process is a
/// supervisor that keeps QEMU's socket and answers for the dead engine, so the guest sees a
/// device that fell off the bus (registers read all ones, nothing completes) instead of QEMU
/// aborting on a request in flight. The driver must notice (an all-ones read, or a SYNC that
/// never completes), report ENODEV, let the invalidation, munmap and close return, and unload.
/// Only run explicitly, in its own boot.
pub fn device_killed_under_load() -> CaseResult {
    let win = KlogWindow::new("device_killed_under_load", false)?;
    let ctx = ctxq()?;
    let len = 1 << 20;
    let m = Map::anon(len)?;
    m.fill(0, len, 710);
    let r = reg_raw(&ctx, m.va(), len, Access::READ_WRITE)?;
    let start = Instant::now();
    let (mut items, mut seed) = (0u64, 0u64);
    // Register reads back to back (the driver's debugfs counters: 46 MMIO reads a file), so
    // that a guest request is in flight when the device dies: the case that made QEMU abort.
    let reading = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let reader = {
        let reading = reading.clone();
        let path = format!("/sys/kernel/debug/mnic{}/device", ctx.info().minor);
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while reading.load(std::sync::atomic::Ordering::Relaxed) {
                match fs::read_to_string(&path) {
                    Ok(text) if !text.contains("device gone") => reads += 1,
                    _ => break,
                }
            }
            reads
        })
    };
    // Load until the device fails a work item or an invalidation (bounded: the kill comes
    // about 20 s after the VM starts).
    let failed_with = loop {
        if start.elapsed() > Duration::from_secs(120) {
            return Err(format!(
                "the device still answered after {items} traffic items: was it killed?"
            ));
        }
        seed += 1;
        let w = Traffic::new(m.va(), len as u32)
            .ops(2000)
            .pattern(Pattern::RandomRw)
            .seed(seed)
            .build()
            .map_err(e("traffic"))?;
        if let Err(err) = ctx.run(&w, Some(Duration::from_secs(5))) {
            break err.to_string();
        }
        items += 1;
        m.madvise(
            (seed as usize % 16) * (64 << 10),
            64 << 10,
            libc::MADV_DONTNEED,
        )?;
    };
    let t_failed = start.elapsed();
    reading.store(false, std::sync::atomic::Ordering::Relaxed);
    let reads = reader
        .join()
        .map_err(|_| "register reader panicked".to_string())?;
    // An invalidation now: it must return (the device is stopped, or known gone).
    let t = Instant::now();
    m.madvise(0, len, libc::MADV_DONTNEED)?;
    let t_madvise = t.elapsed();
    let stats_after = ctx.ctx_stats();
    let t_munmap = unmap_registered(&m, len, r)?;
    let t = Instant::now();
    drop(ctx);
    let t_close = t.elapsed();
    let declared = declared_dead(&win)?;
    let (rmmod_ok, rmmod) = run_cmd("rmmod", "mnic")?;
    note(format!(
        "{items} traffic items and {reads} reads of the counters, then after {t_failed:?}: \
         {failed_with}; MADV_DONTNEED {t_madvise:?}; munmap {t_munmap:?}; close {t_close:?}; \
         kernel: {}",
        declared.trim()
    ));
    check(t_madvise < Duration::from_secs(5), || {
        format!("an invalidation on the dead device took {t_madvise:?}")
    })?;
    check(matches!(stats_after, Err(Error::DeviceGone { .. })), || {
        format!("ioctls do not report ENODEV after the device died: {stats_after:?}")
    })?;
    released_dead_device(t_munmap, t_close, &declared)?;
    check(rmmod_ok, || format!("rmmod: {rmmod}"))?;
    Ok(Outcome::Pass)
}

/// After a device died (`mnic-vm run --kill-device-after`), a new device process is hot-added
/// (`--hot-add-device-after`: QMP `device_add` into a free PCIe root port). The driver binds it
/// as another `/dev/mnicN`, a context there works, and the old context keeps failing cleanly
/// with ENODEV. Only run explicitly, in its own boot.
pub fn device_replaced() -> CaseResult {
    let win = KlogWindow::new("device_replaced", false)?;
    let ctx = ctxq()?;
    let old_minor = ctx.info().minor;
    let (m, r) = registered_and_read(&ctx, 16, 720)?;
    // Until the driver sees the death: an invalidation of a mapped page posts a command,
    // which reads the device's ring index (all ones once it is gone).
    let start = Instant::now();
    while !matches!(ctx.ctx_stats(), Err(Error::DeviceGone { .. })) {
        if start.elapsed() > Duration::from_secs(90) {
            return Err("the device never died: run this case with --kill-device-after".into());
        }
        let _ = r.prefetch(true);
        m.madvise(0, PAGE, libc::MADV_DONTNEED)?;
        std::thread::sleep(Duration::from_millis(200));
    }
    let t_dead = start.elapsed();
    // The replacement appears as another node.
    let node = loop {
        let other = (0..8)
            .filter(|&i| i != old_minor)
            .map(|i| format!("/dev/mnic{i}"))
            .find(|p| fs::metadata(p).is_ok());
        if let Some(p) = other {
            break p;
        }
        if start.elapsed() > Duration::from_secs(120) {
            return Err("no new mnic device appeared: run with --hot-add-device-after".into());
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let t_new = start.elapsed();
    let fresh = open_path(&node)?;
    fresh
        .setup_queues(mnic_guest_util::nic::queue_config())
        .map_err(e("setup_queues on the new device"))?;
    let _on_new = registered_and_read(&fresh, 16, 721)?;
    no_stale(&fresh)?;
    let old_stats = ctx.ctx_stats();
    let old_read = dev_read(&ctx, m.va(), PAGE);
    let reopen = Context::open(format!("/dev/mnic{old_minor}").as_ref());
    drop(r);
    drop(ctx);
    win.clean()?;
    note(format!(
        "device gone after {t_dead:?}, {node} there after {t_new:?}; old context: stats \
         {:?}, copy {:?}, reopen {:?}",
        old_stats.as_ref().map(|_| "ok").map_err(|e| e.to_string()),
        old_read.as_ref().map(|_| "ok").map_err(|e| e.to_string()),
        reopen.as_ref().map(|_| "ok").map_err(|e| e.to_string()),
    ));
    check(
        matches!(old_stats, Err(Error::DeviceGone { .. }))
            && matches!(old_read, Err(Error::DeviceGone { .. }))
            && reopen.is_err(),
        || "the dead device's context or node still answered".into(),
    )?;
    Ok(Outcome::Pass)
}

/// A device fault that takes long to resolve (as one on an unresponsive FUSE server would)
/// must stall only its own context. The driver's one-shot fault-injection delay makes context
/// A's first fault take 3 s; context B's copy, which faults too, must not wait for it. They
/// were once resolved one at a time in the one event thread, and B waited the 3 s.
pub fn stuck_fault_stalls_only_its_context() -> CaseResult {
    let stuck_ms: u32 = 3000;
    let a = ctxq()?;
    let b = ctxq()?;
    let knob = format!(
        "/sys/kernel/debug/mnic{}/fault_resolve_delay_ms",
        a.info().minor
    );
    let len = 16 * PAGE;
    let (ma, mb) = (Map::anon(len)?, Map::anon(len)?);
    ma.fill(0, len, 740);
    mb.fill(0, len, 741);
    let _ra = reg_raw(&a, ma.va(), len, Access::READ)?;
    let _rb = reg_raw(&b, mb.va(), len, Access::READ)?;
    let (da, db) = (
        mnic::DmaBuffer::new(len).map_err(e("buffer"))?,
        mnic::DmaBuffer::new(len).map_err(e("buffer"))?,
    );
    let _rda = a.register(&da, Access::WRITE).map_err(e("register"))?;
    let _rdb = b.register(&db, Access::WRITE).map_err(e("register"))?;
    fs::write(&knob, format!("{stuck_ms}\n")).map_err(|err| format!("{knob}: {err}"))?;
    // A faults first and its fault hangs for `stuck_ms`.
    a.post(&Work::copy(ma.va(), da.va(), len as u32).map_err(e("copy"))?)
        .map_err(e("post A"))?;
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let b_done = b.run(
        &Work::copy(mb.va(), db.va(), len as u32).map_err(e("copy"))?,
        Some(Duration::from_secs(20)),
    );
    let t_b = t.elapsed();
    let a_done = a.wait(Some(Duration::from_secs(20)));
    let _ = fs::write(&knob, "0\n");
    b_done.map_err(e("B's copy"))?;
    a_done.map_err(e("A's copy"))?;
    is_pattern(&db.to_vec(), 0, 741)?;
    is_pattern(&da.to_vec(), 0, 740)?;
    note(format!(
        "B's copy (with its own faults) took {t_b:?} while A's fault was held {stuck_ms} ms"
    ));
    check(t_b < Duration::from_millis(u64::from(stuck_ms) / 2), || {
        format!("B's copy waited {t_b:?} behind A's stuck fault")
    })?;
    no_stale(&b)?;
    Ok(Outcome::Pass)
}

/// The `tables` column of this context's line in the driver's debugfs `contexts` file.
fn table_pages(ctx: &Context) -> Result<u64, String> {
    let path = format!("/sys/kernel/debug/mnic{}/contexts", ctx.info().minor);
    let text = fs::read_to_string(&path).map_err(|err| format!("{path}: {err}"))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let col = header
        .iter()
        .position(|h| *h == "tables")
        .ok_or_else(|| format!("no tables column in {path}"))?;
    let me = ctx.info().ctx.to_string();
    lines
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|c| c.first() == Some(&me.as_str()))
        .and_then(|c| c.get(col)?.parse().ok())
        .ok_or_else(|| format!("context {me} not in {path}"))
}

/// Registering and deregistering many ranges spread over the address space must not leave a
/// translation-table page behind for each: the driver keeps at most 520 tables that no
/// registration needs (enough to register 1 GiB again without allocating) and frees the rest
/// (after a SYNC), so a long-lived context does not grow for ever.
pub fn deregistration_frees_tables() -> CaseResult {
    const KEPT: u64 = 520;
    let ctx = open()?;
    let before = table_pages(&ctx)?;
    let rounds = 600;
    let mut maps = Vec::new();
    for _ in 0..rounds {
        // 64 KiB at the start of a 4 MiB mapping: kept mapped, the next lands in other
        // 2 MiB blocks, so each round needs a level-1 table of its own.
        let m = Map::anon(4 << 20)?;
        let r = reg_raw(&ctx, m.va(), 16 * PAGE, Access::READ_WRITE)?;
        r.prefetch(true).map_err(e("prefetch"))?;
        r.deregister().map_err(e("deregister"))?;
        maps.push(m);
    }
    let after = table_pages(&ctx)?;
    note(format!(
        "{rounds} registrations made and removed: table pages {before} -> {after}"
    ));
    check(after <= before + KEPT, || {
        format!(
            "{after} table pages left after {rounds} deregistrations (was {before}; at most \
             {KEPT} unused ones may stay)"
        )
    })?;
    Ok(Outcome::Pass)
}

/// Unbind with a context whose doorbell page is mapped: the mapping must be zapped, or a later
/// store would reach whatever the BAR address decodes to once the driver let it go (another
/// device's registers after a hot-plug). A child process maps its doorbell, the parent unbinds
/// the device, then the child rings: the store must fault (SIGBUS), not go through.
pub fn unbind_zaps_doorbells() -> CaseResult {
    ensure_module()?;
    let (bdf, drv) = mnic_pci()?;
    check(!drv.is_empty(), || "device not bound".into())?;
    let ((), status, msg) = fork_raw(
        |link| {
            let ctx = open()?;
            ctx.setup_queues(mnic::QueueConfig {
                doorbell: mnic::DoorbellMode::Mapped,
                ..mnic::QueueConfig::default()
            })
            .map_err(e("setup_queues (mapped doorbell)"))?;
            ctx.ring().map_err(e("ring before unbind"))?;
            link.send(1);
            link.recv()?;
            // After unbind: a store to the doorbell page (a new item, so there is a tail
            // to write).
            ctx.push(&mnic::Work::nop())
                .map_err(e("push after unbind"))?;
            ctx.ring().map_err(e("ring after unbind"))?;
            Err("the doorbell store after unbind went through".into())
        },
        |link, _pid| {
            link.recv()?;
            let r = fs::write(format!("/sys/bus/pci/drivers/{drv}/unbind"), &bdf);
            link.send(1);
            r.map_err(e("unbind"))
        },
    )?;
    fs::write(format!("/sys/bus/pci/drivers/{drv}/bind"), &bdf).map_err(e("bind"))?;
    note(format!(
        "child ringing after unbind: {} {msg}",
        describe_status(status)
    ));
    check(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGBUS,
        || {
            format!(
                "want SIGBUS for the store, got {}: {msg}",
                describe_status(status)
            )
        },
    )?;
    // The rebound device works.
    device_copies(730)?;
    Ok(Outcome::Pass)
}

/// Maps `len` bytes of a PCI resource file (a BAR) of the device for volatile accesses.
struct Bar {
    ptr: *mut u32,
    len: usize,
}

impl Bar {
    fn map(bdf: &str, index: u32, len: usize) -> Result<Bar, String> {
        let path = format!("/sys/bus/pci/devices/{bdf}/resource{index}");
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(e("open resource"))?;
        // SAFETY: a fresh shared mapping of the BAR chosen by the kernel, checked below; the
        // file may be closed afterwards (the mapping keeps the resource).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&f),
                0,
            )
        };
        check(p != libc::MAP_FAILED, || os_err(&format!("mmap {path}")))?;
        Ok(Bar { ptr: p.cast(), len })
    }

    fn write(&self, off: usize, v: u32) {
        if off + 4 <= self.len {
            // SAFETY: inside the mapping, 4-byte aligned (callers pass multiples of 4); MMIO
            // needs volatile accesses.
            unsafe { std::ptr::write_volatile(self.ptr.add(off / 4), v) };
        }
    }

    fn read(&self, off: usize) -> u32 {
        if off + 4 > self.len {
            return 0;
        }
        // SAFETY: as in `write`.
        unsafe { std::ptr::read_volatile(self.ptr.add(off / 4)) }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        // SAFETY: our own mapping.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// A guest that drives garbage into the device's registers (the driver unbound, straight from
/// user space through the PCI resource files): random values at every BAR0 offset, enable
/// with rings and tables pointing outside guest RAM, random ring tails and doorbells. The device
/// process must stay alive and keep answering, report errors, and work again once the driver
/// binds (its probe resets the device).
pub fn garbage_registers() -> CaseResult {
    let win = KlogWindow::new("garbage_registers", false)?;
    let (bdf, drv) = mnic_pci()?;
    if !drv.is_empty() {
        fs::write(format!("/sys/bus/pci/drivers/{drv}/unbind"), &bdf).map_err(e("unbind"))?;
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let errors_before;
    {
        let regs = Bar::map(&bdf, abi::BAR_REGS, abi::BAR_REGS_SIZE as usize)?;
        let doorbells = Bar::map(
            &bdf,
            abi::BAR_DOORBELLS,
            16 * abi::DOORBELL_PAGE_SIZE as usize,
        )?;
        check(
            regs.read(abi::reg::ID as usize) == abi::MNIC_ID_VALUE,
            || "ID register unreadable through resource0".into(),
        )?;
        errors_before = regs.read(abi::reg::ERROR_COUNT as usize);
        for h in [
            abi::reg::CTX_TABLE_HI,
            abi::reg::CMDQ_BASE_HI,
            abi::reg::EVQ_BASE_HI,
        ] {
            regs.write(h as usize, 0x8000_0000 | rng.next_u64() as u32);
        }
        let rounds = if soak() { 20_000 } else { 2_000 };
        // The high halves of the ring and table bases always point far outside guest RAM:
        // garbage that happens to name real RAM would let the device write events and SYNC
        // values over the guest kernel, as misprogrammed hardware without an IOMMU would,
        // and the test would crash the guest instead of checking the device.
        let high = [
            abi::reg::CTX_TABLE_HI,
            abi::reg::CMDQ_BASE_HI,
            abi::reg::EVQ_BASE_HI,
        ];
        let far = |rng: &mut Rng| 0x8000_0000 | rng.next_u64() as u32;
        for i in 0..rounds {
            let off = (rng.below(abi::BAR_REGS_SIZE / 4) * 4) as usize;
            if high.iter().any(|h| *h as usize == off) {
                regs.write(off, far(&mut rng));
                continue;
            }
            let v = match i % 4 {
                0 => rng.next_u64() as u32,
                1 => u32::MAX,
                2 => abi::control::ENABLE | (rng.below(4) as u32) << 1,
                _ => rng.below(1 << 12) as u32,
            };
            // Every few writes, enable with whatever the base registers hold.
            if i % 7 == 0 {
                regs.write(abi::reg::CONTROL as usize, abi::control::ENABLE);
            }
            regs.write(off, v);
            let ctx = rng.below(16) as usize;
            doorbells.write(
                ctx * abi::DOORBELL_PAGE_SIZE as usize,
                rng.next_u64() as u32,
            );
        }
        // Still there, still itself.
        check(
            regs.read(abi::reg::ID as usize) == abi::MNIC_ID_VALUE,
            || "the device stopped answering after the garbage".into(),
        )?;
        let errors = regs.read(abi::reg::ERROR_COUNT as usize);
        let bad_mmio = regs.read(abi::reg::counter(abi::counter::BAD_MMIO) as usize);
        note(format!(
            "{rounds} garbage register writes: device errors {errors_before} -> {errors}, \
             bad MMIO accesses {bad_mmio}"
        ));
        check(bad_mmio > 0 || errors > errors_before, || {
            "garbage reported neither as errors nor as bad MMIO".into()
        })?;
    }
    // The driver binds again (probe resets the device) and the device works.
    let drv = if drv.is_empty() {
        "mnic".to_string()
    } else {
        drv
    };
    if fs::write(format!("/sys/bus/pci/drivers/{drv}/bind"), &bdf).is_err() {
        ensure_module()?;
    }
    let ctx = ctxq()?;
    let m = Map::anon(4 * PAGE)?;
    m.fill(0, m.len, 602);
    let _r = reg_raw(&ctx, m.va(), m.len, Access::READ)?;
    is_pattern(
        &dev_read(&ctx, m.va(), m.len).map_err(e("read after rebind"))?,
        0,
        602,
    )?;
    win.clean()?;
    Ok(Outcome::Pass)
}
