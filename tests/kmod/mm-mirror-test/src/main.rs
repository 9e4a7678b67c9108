// SPDX-License-Identifier: GPL-2.0
//! `mm-mirror-test`: drives `/dev/mm_mirror_test` (the `mm_mirror_test` module, built on the
//! kernel's Rust `mmu_notifier` and `hmm` abstractions) through real address-space changes and
//! checks that each one reaches the notifier with the expected event, clears the mirrored
//! translations, and makes a read sequence taken before it stale. Prints KTAP; exits non-zero if
//! a case fails.
//!
//! Needs the module loaded (it runs `insmod $MM_MIRROR_KO`, default
//! `/lib/modules/mm_mirror_test.ko`, if the device is missing) and, for the swap case, zram.

#[path = "../../mm_mirror_abi.rs"]
mod abi;

use std::ffi::CString;
use std::fs;
use std::io;
use std::process::Command;

const DEVICE: &str = "/dev/mm_mirror_test";

use mnic_guest_util::{
    ensure_swap, errno, kernel_problems, Case, CaseResult, KlogWindow, Map, MemCg, Outcome, PAGE,
};

/// Fails the case with a formatted reason unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// An open file of the test device: one registration at most.
struct Dev {
    fd: libc::c_int,
}

impl Dev {
    fn open() -> Result<Dev, String> {
        let path = CString::new(DEVICE).map_err(|e| e.to_string())?;
        // SAFETY: `path` is a valid NUL-terminated string.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(format!("open {DEVICE}: {}", io::Error::last_os_error()));
        }
        Ok(Dev { fd })
    }

    /// Issues `cmd` with `arg` (a pointer to the ioctl's structure, or 0); returns the errno.
    fn ioctl<T>(&self, cmd: u32, arg: Option<&mut T>) -> Result<(), i32> {
        let ptr = arg.map_or(std::ptr::null_mut(), |a| a as *mut T as *mut libc::c_void);
        // SAFETY: `ptr` is null or points to a live `T` of the size encoded in `cmd`.
        let ret = unsafe { libc::ioctl(self.fd, cmd as libc::c_ulong, ptr) };
        if ret < 0 {
            Err(errno())
        } else {
            Ok(())
        }
    }

    fn register(&self, addr: u64, len: u64) -> Result<(), String> {
        let mut req = abi::Register { addr, len };
        self.ioctl(abi::REGISTER, Some(&mut req))
            .map_err(|e| format!("REGISTER failed: errno {e}"))
    }

    /// Faults (or snapshots) `[addr, addr + len)`; returns the reply and the per-page bytes.
    fn fault_raw(&self, addr: u64, len: u64, access: u32) -> Result<(abi::Fault, Vec<u8>), i32> {
        let mut pages = vec![0u8; len as usize / PAGE];
        let mut req = abi::Fault {
            addr,
            len,
            access,
            pages: pages.as_mut_ptr() as u64,
            ..Default::default()
        };
        self.ioctl(abi::FAULT, Some(&mut req))?;
        Ok((req, pages))
    }

    fn fault(&self, addr: u64, len: u64, access: u32) -> Result<(abi::Fault, Vec<u8>), String> {
        self.fault_raw(addr, len, access)
            .map_err(|e| format!("FAULT(access {access}) failed: errno {e}"))
    }

    fn read_log(&self) -> Result<Vec<abi::LogEntry>, String> {
        let mut entries = vec![abi::LogEntry::default(); abi::LOG_CAPACITY];
        let mut req = abi::ReadLog {
            entries: entries.as_mut_ptr() as u64,
            max: entries.len() as u32,
            ..Default::default()
        };
        self.ioctl(abi::READ_LOG, Some(&mut req))
            .map_err(|e| format!("READ_LOG failed: errno {e}"))?;
        entries.truncate(req.count as usize);
        Ok(entries)
    }

    fn seq_begin(&self) -> Result<(), String> {
        self.ioctl::<u8>(abi::SEQ_BEGIN, None)
            .map_err(|e| format!("SEQ_BEGIN failed: errno {e}"))
    }

    fn seq_stale(&self) -> Result<bool, String> {
        let mut req = abi::SeqCheck::default();
        self.ioctl(abi::SEQ_CHECK, Some(&mut req))
            .map_err(|e| format!("SEQ_CHECK failed: errno {e}"))?;
        Ok(req.stale != 0)
    }

    fn table(&self) -> Result<abi::Table, String> {
        let mut req = abi::Table::default();
        self.ioctl(abi::TABLE, Some(&mut req))
            .map_err(|e| format!("TABLE failed: errno {e}"))?;
        Ok(req)
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        // SAFETY: We own the descriptor.
        unsafe { libc::close(self.fd) };
    }
}

/// A mapping of `pages` pages, registered on a fresh device file and faulted in writable.
fn mirrored(pages: usize) -> Result<(Dev, Map), String> {
    let map = Map::anon(pages * PAGE)?;
    map.fill(0, map.len, 1);
    let dev = Dev::open()?;
    dev.register(map.va(), map.len as u64)?;
    let (reply, _) = dev.fault(map.va(), map.len as u64, abi::ACCESS_WRITE)?;
    ensure!(
        reply.present == pages as u64 && reply.writable == pages as u64,
        "write fault: present {} writable {} of {pages}",
        reply.present,
        reply.writable
    );
    // Whatever the set-up itself caused is not what the case looks for.
    dev.read_log()?;
    Ok((dev, map))
}

fn event_name(event: u32) -> String {
    match event {
        abi::EVENT_UNMAP => "unmap".into(),
        abi::EVENT_CLEAR => "clear".into(),
        abi::EVENT_PROTECTION_VMA => "protection_vma".into(),
        abi::EVENT_PROTECTION_PAGE => "protection_page".into(),
        abi::EVENT_SOFT_DIRTY => "soft_dirty".into(),
        abi::EVENT_RELEASE => "release".into(),
        abi::EVENT_MIGRATE => "migrate".into(),
        abi::EVENT_EXCLUSIVE => "exclusive".into(),
        other => format!("other({other:#x})"),
    }
}

fn describe(log: &[abi::LogEntry]) -> String {
    let items: Vec<String> = log
        .iter()
        .map(|e| {
            format!(
                "{}[{:#x},{:#x}) flags {:#x}",
                event_name(e.event),
                e.start,
                e.end,
                e.flags
            )
        })
        .collect();
    format!("log: [{}]", items.join(", "))
}

/// Requires an invalidation `event` covering `[start, end)`, blockable, whose second pass ran.
fn expect_event(log: &[abi::LogEntry], event: u32, start: u64, end: u64) -> Result<(), String> {
    let hit = log
        .iter()
        .find(|e| e.event == event && e.start <= start && e.end >= end);
    match hit {
        None => Err(format!(
            "no {} invalidation covering [{start:#x},{end:#x}); {}",
            event_name(event),
            describe(log)
        )),
        Some(e) if e.flags & abi::LOG_BLOCKABLE == 0 => Err(format!("not blockable: {e:?}")),
        Some(e) if e.flags & abi::LOG_FINISHED == 0 => {
            Err(format!("second pass did not run: {e:?}"))
        }
        Some(e) => {
            // KTAP diagnostic: what the notifier actually saw.
            println!("# {}; matched {}", describe(log), event_name(e.event));
            Ok(())
        }
    }
}

/// Runs `child` in a forked process; returns its raw wait status.
fn fork_status(child: impl FnOnce() -> bool) -> Result<libc::c_int, String> {
    // SAFETY: This program is single-threaded; the child only runs `child` and exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", io::Error::last_os_error()));
    }
    if pid == 0 {
        let ok = child();
        // SAFETY: Leaves the child without running the parent's destructors a second time.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: Waits for our own child.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        return Err(format!("waitpid: {}", io::Error::last_os_error()));
    }
    Ok(status)
}

/// Runs `child` in a forked process; tells whether it exited with success.
fn fork_child(child: impl FnOnce() -> bool) -> Result<bool, String> {
    let status = fork_status(child)?;
    Ok(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0)
}

// ---- the cases ----

fn fault_write_present_writable() -> CaseResult {
    let (dev, map) = mirrored(16)?;
    let (reply, pages) = dev.fault(map.va(), map.len as u64, abi::ACCESS_WRITE)?;
    let want = abi::PAGE_VALID | abi::PAGE_WRITE;
    ensure!(
        pages.iter().all(|p| p & want == want),
        "per-page results {pages:?}"
    );
    ensure!(
        reply.present == 16 && reply.writable == 16,
        "reply {reply:?}"
    );
    let table = dev.table()?;
    ensure!(table.valid == 16 && table.pages == 16, "table {table:?}");
    Ok(Outcome::Pass)
}

fn fault_unlocked_write() -> CaseResult {
    let map = Map::anon(8 * PAGE)?;
    let dev = Dev::open()?;
    dev.register(map.va(), map.len as u64)?;
    let access = abi::ACCESS_WRITE | abi::ACCESS_UNLOCKED;
    let (reply, _) = dev.fault(map.va(), map.len as u64, access)?;
    ensure!(reply.present == 8 && reply.writable == 8, "reply {reply:?}");
    ensure!(dev.table()?.valid == 8, "table not programmed");
    map.madvise(0, 8 * PAGE, libc::MADV_DONTNEED)?;
    expect_event(
        &dev.read_log()?,
        abi::EVENT_CLEAR,
        map.va(),
        map.at(8 * PAGE),
    )?;
    ensure!(dev.table()?.valid == 0, "table entries survived DONTNEED");
    Ok(Outcome::Pass)
}

fn snapshot_untouched_not_present() -> CaseResult {
    let map = Map::anon(8 * PAGE)?;
    let dev = Dev::open()?;
    dev.register(map.va(), map.len as u64)?;
    let (reply, pages) = dev.fault(map.va(), map.len as u64, abi::ACCESS_SNAPSHOT)?;
    ensure!(
        reply.present == 0 && pages.iter().all(|p| p & abi::PAGE_VALID == 0),
        "snapshot of untouched memory: {reply:?}"
    );
    ensure!(dev.table()?.valid == 0, "table not empty");
    // A read fault maps the zero page: present, not writable.
    let (reply, _) = dev.fault(map.va(), map.len as u64, abi::ACCESS_READ)?;
    ensure!(
        reply.present == 8 && reply.writable == 0,
        "read fault: {reply:?}"
    );
    Ok(Outcome::Pass)
}

fn seq_unchanged_is_current() -> CaseResult {
    let (dev, _map) = mirrored(4)?;
    dev.seq_begin()?;
    ensure!(!dev.seq_stale()?, "stale without any invalidation");
    Ok(Outcome::Pass)
}

fn munmap_unmap() -> CaseResult {
    let (dev, map) = mirrored(16)?;
    dev.seq_begin()?;
    map.munmap(4 * PAGE, 4 * PAGE)?;
    expect_event(
        &dev.read_log()?,
        abi::EVENT_UNMAP,
        map.at(4 * PAGE),
        map.at(8 * PAGE),
    )?;
    ensure!(dev.seq_stale()?, "read sequence not stale after munmap");
    let table = dev.table()?;
    ensure!(table.valid == 12, "table {table:?}, want 12 valid entries");
    Ok(Outcome::Pass)
}

fn madv_dontneed_clear() -> CaseResult {
    let (dev, map) = mirrored(8)?;
    map.madvise(2 * PAGE, 2 * PAGE, libc::MADV_DONTNEED)?;
    expect_event(
        &dev.read_log()?,
        abi::EVENT_CLEAR,
        map.at(2 * PAGE),
        map.at(4 * PAGE),
    )?;
    let table = dev.table()?;
    ensure!(table.valid == 6, "table {table:?}, want 6 valid entries");
    let (_, pages) = dev.fault(map.va(), map.len as u64, abi::ACCESS_SNAPSHOT)?;
    let present: Vec<bool> = pages.iter().map(|p| p & abi::PAGE_VALID != 0).collect();
    ensure!(
        present == [true, true, false, false, true, true, true, true],
        "present after DONTNEED: {present:?}"
    );
    Ok(Outcome::Pass)
}

/// Turns zram swap on unless some swap is on already. `Ok(false)`: no zram in this kernel.
fn madv_pageout_swap_clear() -> CaseResult {
    if !ensure_swap()? {
        return Ok(Outcome::Skip("no swap and no zram device".into()));
    }
    let (dev, map) = mirrored(8)?;
    dev.seq_begin()?;
    map.madvise(0, 8 * PAGE, libc::MADV_PAGEOUT)?;
    let log = dev.read_log()?;
    expect_event(&log, abi::EVENT_CLEAR, map.va(), map.at(PAGE))?;
    // hmm took no page reference: reclaim could swap every page out.
    let (reply, _) = dev.fault(map.va(), map.len as u64, abi::ACCESS_SNAPSHOT)?;
    ensure!(
        reply.present == 0,
        "{} of 8 pages still present after MADV_PAGEOUT; {}",
        reply.present,
        describe(&log)
    );
    ensure!(dev.table()?.valid == 0, "table entries survived swap-out");
    ensure!(dev.seq_stale()?, "read sequence not stale after swap-out");
    // Swap-in brings the data back, and the mirror can fault it again.
    ensure!(
        map.check(0, map.len, 1).is_ok(),
        "data changed across swap-out/in"
    );
    let (reply, _) = dev.fault(map.va(), map.len as u64, abi::ACCESS_WRITE)?;
    ensure!(reply.writable == 8, "fault after swap-in: {reply:?}");
    Ok(Outcome::Pass)
}

fn fork_cow_protection_page() -> CaseResult {
    let (dev, map) = mirrored(8)?;
    dev.seq_begin()?;
    ensure!(fork_child(|| true)?, "child failed");
    expect_event(
        &dev.read_log()?,
        abi::EVENT_PROTECTION_PAGE,
        map.va(),
        map.at(8 * PAGE),
    )?;
    ensure!(dev.seq_stale()?, "read sequence not stale after fork");
    ensure!(
        dev.table()?.valid == 0,
        "table entries survived write-protection"
    );
    // The parent's pages are now write-protected for copy-on-write.
    let (reply, _) = dev.fault(map.va(), map.len as u64, abi::ACCESS_SNAPSHOT)?;
    ensure!(
        reply.present == 8 && reply.writable == 0,
        "after fork: {reply:?}"
    );
    Ok(Outcome::Pass)
}

fn mprotect_protection_vma() -> CaseResult {
    let (dev, map) = mirrored(8)?;
    map.mprotect(0, map.len, libc::PROT_READ)?;
    expect_event(
        &dev.read_log()?,
        abi::EVENT_PROTECTION_VMA,
        map.va(),
        map.at(8 * PAGE),
    )?;
    let (reply, _) = dev.fault(map.va(), map.len as u64, abi::ACCESS_SNAPSHOT)?;
    ensure!(
        reply.present == 8 && reply.writable == 0,
        "after mprotect: {reply:?}"
    );
    // A write fault on a read-only mapping is refused.
    let errno = dev
        .fault_raw(map.va(), map.len as u64, abi::ACCESS_WRITE)
        .err();
    ensure!(
        errno == Some(libc::EPERM),
        "write fault on PROT_READ: {errno:?}"
    );
    Ok(Outcome::Pass)
}

fn seq_stale_after_invalidation() -> CaseResult {
    let (dev, map) = mirrored(4)?;
    dev.seq_begin()?;
    map.madvise(0, PAGE, libc::MADV_DONTNEED)?;
    ensure!(
        dev.seq_stale()?,
        "read sequence not stale after MADV_DONTNEED"
    );
    // A new sequence after the invalidation is current again.
    dev.seq_begin()?;
    ensure!(!dev.seq_stale()?, "new read sequence stale");
    Ok(Outcome::Pass)
}

fn exit_release() -> CaseResult {
    let dev = Dev::open()?;
    // The child registers its own address space on the shared file, then exits.
    let child_ok = fork_child(|| {
        let Ok(map) = Map::anon(4 * PAGE) else {
            return false;
        };
        map.fill(0, map.len, 1);
        dev.register(map.va(), map.len as u64).is_ok()
            && dev
                .fault(map.va(), map.len as u64, abi::ACCESS_WRITE)
                .is_ok_and(|(r, _)| r.writable == 4)
    })?;
    ensure!(child_ok, "child could not register and fault");
    let log = dev.read_log()?;
    ensure!(
        log.iter()
            .any(|e| e.event == abi::EVENT_RELEASE && e.start == 0 && e.end == u64::MAX),
        "no release over the whole address space; {}",
        describe(&log)
    );
    ensure!(dev.table()?.valid == 0, "table entries survived exit");
    // The notifier of a dead address space is removed cleanly.
    dev.ioctl::<u8>(abi::UNREGISTER, None)
        .map_err(|e| format!("UNREGISTER: errno {e}"))?;
    Ok(Outcome::Pass)
}

fn fault_foreign_mm_refused() -> CaseResult {
    let (dev, map) = mirrored(4)?;
    // The child inherits the file but has its own address space: hmm must not walk it.
    let refused = fork_child(|| {
        dev.fault_raw(map.va(), map.len as u64, abi::ACCESS_SNAPSHOT)
            .err()
            == Some(libc::EINVAL)
    })?;
    ensure!(
        refused,
        "fault from another address space was not refused with EINVAL"
    );
    Ok(Outcome::Pass)
}

fn fault_bad_range_refused() -> CaseResult {
    let (dev, map) = mirrored(4)?;
    let ps = PAGE as u64;
    let outside = dev.fault_raw(map.at(4 * PAGE), ps, abi::ACCESS_READ).err();
    ensure!(
        outside == Some(libc::EINVAL),
        "outside the registration: {outside:?}"
    );
    let unaligned = dev.fault_raw(map.va() + 1, ps, abi::ACCESS_READ).err();
    ensure!(unaligned == Some(libc::EINVAL), "unaligned: {unaligned:?}");
    let empty = dev.fault_raw(map.va(), 0, abi::ACCESS_READ).err();
    ensure!(empty == Some(libc::EINVAL), "empty: {empty:?}");
    let bad_access = dev.fault_raw(map.va(), ps, 7).err();
    ensure!(
        bad_access == Some(libc::EINVAL),
        "bad access mode: {bad_access:?}"
    );
    Ok(Outcome::Pass)
}

/// An OOM-killed process whose address space stays alive (a thread sleeps in the device) is
/// reaped by the OOM reaper with non-blockable invalidations. With `hold_lock`, the sleeping
/// thread holds the notifier's lock, so the non-blockable callback must give up
/// (`WouldBlock`) instead of waiting.
fn oom_reaper_case(case: &str, hold_lock: bool) -> CaseResult {
    // No swap in the group: the OOM killer must act instead.
    let Some(cg) = MemCg::new("mm-mirror-test", "32M", false)? else {
        return Ok(Outcome::Skip("no memory cgroup controller".into()));
    };
    let dev = Dev::open()?;
    let fd = dev.fd;
    let quiet = KlogWindow::new(case, true)?;
    let status = fork_status(|| {
        if cg.join().is_err() {
            return false;
        }
        let Ok(map) = Map::anon(4 * PAGE) else {
            return false;
        };
        map.fill(0, map.len, 1);
        if dev.register(map.va(), map.len as u64).is_err()
            || dev
                .fault(map.va(), map.len as u64, abi::ACCESS_WRITE)
                .is_err()
        {
            return false;
        }
        // Keeps the address space alive past the reaper's delay (2 s) and its retries (1 s).
        std::thread::spawn(move || {
            let mut req = abi::Stall {
                ms: 6000,
                hold_lock: hold_lock.into(),
            };
            // SAFETY: `req` is a live `Stall`; `fd` stays open in this process.
            unsafe { libc::ioctl(fd, abi::STALL as libc::c_ulong, &mut req as *mut abi::Stall) };
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        // Exceed the group's limit: the OOM killer kills this process.
        loop {
            let Ok(chunk) = Map::anon(1 << 20) else {
                continue;
            };
            chunk.fill(0, chunk.len, 1);
            std::mem::forget(chunk);
        }
    })?;
    let klog = quiet.log()?;
    drop(quiet);
    ensure!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
        "child was not OOM-killed: wait status {status:#x}"
    );
    let problems = kernel_problems(&klog);
    ensure!(problems.is_empty(), "kernel problems: {problems:?}");
    // What the OOM reaper itself reported: it reaped, or gave up after its retries.
    let reaper = if hold_lock {
        "oom_reaper: unable to reap"
    } else {
        "oom_reaper: reaped process"
    };
    let reaper_line = klog.iter().find(|l| l.contains(reaper));
    ensure!(reaper_line.is_some(), "no '{reaper}' in the kernel log");
    println!("# {}", reaper_line.map_or("", |l| l.trim()));
    let log = dev.read_log()?;
    let table = dev.table()?;
    println!("# {}; would_block {}", describe(&log), table.would_block);
    if hold_lock {
        ensure!(
            table.would_block > 0,
            "the non-blockable invalidation never met the held lock"
        );
    } else {
        ensure!(
            log.iter()
                .any(|e| e.event == abi::EVENT_CLEAR && e.flags & abi::LOG_BLOCKABLE == 0),
            "no non-blockable clear from the OOM reaper; {}",
            describe(&log)
        );
        ensure!(
            table.would_block == 0,
            "would_block {} without contention",
            table.would_block
        );
    }
    ensure!(table.valid == 0, "table entries survived the OOM kill");
    Ok(Outcome::Pass)
}

fn oom_reaper_nonblocking() -> CaseResult {
    oom_reaper_case("oom_reaper_nonblocking", false)
}

fn oom_reaper_would_block() -> CaseResult {
    oom_reaper_case("oom_reaper_would_block", true)
}

fn thp_map_order() -> CaseResult {
    let enabled =
        fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    if !enabled.contains("[always]") && !enabled.contains("[madvise]") {
        return Ok(Outcome::Skip(format!("THP off: {}", enabled.trim())));
    }
    const HUGE: usize = 2 << 20;
    let map = Map::anon(2 * HUGE)?;
    let base = (map.ptr + HUGE - 1) & !(HUGE - 1);
    let off = base - map.ptr;
    map.madvise(off, HUGE, libc::MADV_HUGEPAGE)?;
    map.fill_byte(off, HUGE, 1);
    let smaps = fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    let thp_kb: u64 = smaps
        .lines()
        .find(|l| l.starts_with("AnonHugePages:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if thp_kb < 2048 {
        return Ok(Outcome::Skip(format!(
            "no huge page allocated (AnonHugePages {thp_kb} kB)"
        )));
    }
    let dev = Dev::open()?;
    dev.register(base as u64, HUGE as u64)?;
    let (reply, pages) = dev.fault(base as u64, HUGE as u64, abi::ACCESS_WRITE)?;
    let orders: Vec<u8> = pages.iter().map(|p| p >> abi::PAGE_ORDER_SHIFT).collect();
    ensure!(
        reply.huge == 512 && orders.iter().all(|o| *o == 9),
        "reply {reply:?}, orders of the first pages {:?}",
        &orders[..8]
    );
    Ok(Outcome::Pass)
}

fn ensure_module() {
    if fs::metadata(DEVICE).is_ok() {
        return;
    }
    let ko =
        std::env::var("MM_MIRROR_KO").unwrap_or_else(|_| "/lib/modules/mm_mirror_test.ko".into());
    match Command::new("insmod").arg(&ko).status() {
        Ok(s) if s.success() => {}
        other => println!("# insmod {ko}: {other:?}"),
    }
}

fn main() {
    let cases: &[Case] = &[
        (
            "fault_write_present_writable",
            fault_write_present_writable,
            true,
        ),
        ("fault_unlocked_write", fault_unlocked_write, true),
        (
            "snapshot_untouched_not_present",
            snapshot_untouched_not_present,
            true,
        ),
        ("seq_unchanged_is_current", seq_unchanged_is_current, true),
        ("munmap_unmap", munmap_unmap, true),
        ("madv_dontneed_clear", madv_dontneed_clear, true),
        ("madv_pageout_swap_clear", madv_pageout_swap_clear, true),
        ("fork_cow_protection_page", fork_cow_protection_page, true),
        ("mprotect_protection_vma", mprotect_protection_vma, true),
        (
            "seq_stale_after_invalidation",
            seq_stale_after_invalidation,
            true,
        ),
        ("exit_release", exit_release, true),
        ("fault_foreign_mm_refused", fault_foreign_mm_refused, true),
        ("fault_bad_range_refused", fault_bad_range_refused, true),
        ("thp_map_order", thp_map_order, true),
        ("oom_reaper_nonblocking", oom_reaper_nonblocking, true),
        ("oom_reaper_would_block", oom_reaper_would_block, true),
    ];
    ensure_module();
    mnic_guest_util::run("mm-mirror-test", cases);
}
