//! Helpers shared by the guest test programs (`tests/driver-test`, `tests/matrix-test`,
//! `tests/kmod/mm-mirror-test`): the KTAP runner, forked children with a message channel,
//! /proc values, zram swap, memory cgroups, kernel-log windows, raw ioctls, NUMA migration
//! (module [`numa`]), and (module [`nic`]) the mnic device node and its contexts.
//!
//! Everything here runs inside the guest, as root, on the test kernel.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Duration;

pub mod nic;
pub mod numa;
pub mod oracle;

/// The guest's page size.
pub const PAGE: usize = 4096;

pub type CaseResult = Result<Outcome, String>;
pub enum Outcome {
    Pass,
    Skip(String),
}

pub fn check(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

pub fn e<E: std::fmt::Display>(ctx: &'static str) -> impl FnOnce(E) -> String {
    move |err| format!("{ctx}: {err}")
}

pub fn os_err(what: &str) -> String {
    format!("{what}: {}", io::Error::last_os_error())
}

/// Runs `insmod PATH` or `rmmod NAME` (or any one-argument command) and fails with its
/// error output.
pub fn module_cmd(cmd: &str, arg: &str) -> Result<(), String> {
    let out = Command::new(cmd)
        .arg(arg)
        .output()
        .map_err(e("module command"))?;
    check(out.status.success(), || {
        format!(
            "{cmd} {arg}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

pub fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// One case: name, function, and whether it runs when no case is named.
pub type Case = (&'static str, fn() -> CaseResult, bool);

/// The KTAP main program: runs the cases named on the command line (options starting with
/// `--` are ignored here), or every default case; prints KTAP with a duration note per case
/// and exits 0 only if none failed (2 for an unknown case name).
pub fn run(program: &str, cases: &[Case]) -> ! {
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    for o in &only {
        if !cases.iter().any(|(n, _, _)| n == o) {
            eprintln!("{program}: unknown case '{o}'");
            std::process::exit(2);
        }
    }
    let cases: Vec<&Case> = cases
        .iter()
        .filter(|(n, _, default)| {
            if only.is_empty() {
                *default
            } else {
                only.iter().any(|o| o == n)
            }
        })
        .collect();
    println!("KTAP version 1");
    println!("1..{}", cases.len());
    if soak() {
        println!("# soak mode: long loops");
    }
    let mut failed = 0;
    for (i, (name, case, _)) in cases.iter().enumerate() {
        let n = i + 1;
        let t = std::time::Instant::now();
        let r = case();
        println!("# {name}: {:.1} s", t.elapsed().as_secs_f64());
        match r {
            Ok(Outcome::Pass) => println!("ok {n} {name}"),
            Ok(Outcome::Skip(why)) => println!("ok {n} {name} # SKIP {why}"),
            Err(why) => {
                failed += 1;
                println!("not ok {n} {name} # {}", why.replace('\n', " "));
            }
        }
    }
    println!(
        "# {program}: {} passed or skipped, {failed} failed",
        cases.len() - failed
    );
    std::process::exit(if failed == 0 { 0 } else { 1 });
}

// ------------------------------------------------------------------ forked children

/// One end of a parent/child channel of u64 messages.
pub struct Link {
    rx: i32,
    tx: i32,
}

impl Link {
    pub fn send(&self, v: u64) {
        let b = v.to_le_bytes();
        // SAFETY: our pipe fd and an 8-byte buffer.
        unsafe { libc::write(self.tx, b.as_ptr().cast(), 8) };
    }
    pub fn recv(&self) -> Result<u64, String> {
        let mut b = [0u8; 8];
        let mut got = 0;
        while got < 8 {
            // SAFETY: our pipe fd; the rest of the buffer.
            let n = unsafe { libc::read(self.rx, b[got..].as_mut_ptr().cast(), 8 - got) };
            if n <= 0 {
                return Err("the other process went away".into());
            }
            got += n as usize;
        }
        Ok(u64::from_le_bytes(b))
    }
}

fn pipe() -> Result<(i32, i32), String> {
    let mut p = [0i32; 2];
    // SAFETY: pipe2 with an array of two fds.
    let rc = unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) };
    check(rc == 0, || os_err("pipe"))?;
    Ok((p[0], p[1]))
}

fn close(fd: i32) {
    // SAFETY: closing a pipe fd we own.
    unsafe { libc::close(fd) };
}

/// How a child ended.
pub fn describe_status(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exit {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("signal {}", libc::WTERMSIG(status))
    } else {
        format!("status {status:#x}")
    }
}

/// Forks; the child runs `child` (its error text comes back to the parent), the parent runs
/// `parent` with the child's pid. The child is killed if the parent's part fails. Returns the
/// parent's value and the child's wait status; the child's error (if any) is an error here.
pub fn fork_pair<T>(
    child: impl FnOnce(&Link) -> Result<(), String>,
    parent: impl FnOnce(&Link, i32) -> Result<T, String>,
) -> Result<T, String> {
    let (v, status, msg) = fork_raw(child, parent)?;
    check(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        || format!("child failed ({}): {msg}", describe_status(status)),
    )?;
    Ok(v)
}

/// As [`fork_pair`], but returns the child's wait status and error text instead of judging.
pub fn fork_raw<T>(
    child: impl FnOnce(&Link) -> Result<(), String>,
    parent: impl FnOnce(&Link, i32) -> Result<T, String>,
) -> Result<(T, i32, String), String> {
    let (to_child_r, to_child_w) = pipe()?;
    let (to_parent_r, to_parent_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    // SAFETY: the child only runs `child` and leaves with `_exit`; glibc makes malloc usable
    // after fork even if other threads exist.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(os_err("fork"));
    }
    if pid == 0 {
        close(to_child_w);
        close(to_parent_r);
        close(err_r);
        let link = Link {
            rx: to_child_r,
            tx: to_parent_w,
        };
        let r = child(&link);
        if let Err(m) = &r {
            // SAFETY: our pipe fd and the message bytes.
            unsafe { libc::write(err_w, m.as_ptr().cast(), m.len()) };
        }
        // SAFETY: leave the child without running the parent's destructors.
        unsafe { libc::_exit(if r.is_ok() { 0 } else { 1 }) };
    }
    close(to_child_r);
    close(to_parent_w);
    close(err_w);
    let link = Link {
        rx: to_parent_r,
        tx: to_child_w,
    };
    let r = parent(&link, pid);
    if r.is_err() {
        // SAFETY: killing our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    close(to_child_w);
    let mut msg = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        // SAFETY: our pipe fd and buffer.
        let n = unsafe { libc::read(err_r, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        msg.extend_from_slice(&buf[..n as usize]);
    }
    close(err_r);
    close(to_parent_r);
    let mut status = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    Ok((r?, status, String::from_utf8_lossy(&msg).into_owned()))
}

/// Runs `f` in a child process and waits for it.
pub fn in_child(f: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    fork_pair(|_| f(), |_, _| Ok(()))
}

// ------------------------------------------------------------------ /proc, swap, cgroups

/// `name value` from /proc/meminfo (KiB) or /proc/vmstat.
pub fn proc_value(file: &str, key: &str) -> Result<u64, String> {
    let text = fs::read_to_string(file).map_err(e("read /proc"))?;
    text.lines()
        .find_map(|l| {
            let mut it = l.split_whitespace();
            (it.next()?.trim_end_matches(':') == key).then(|| it.next()?.parse().ok())?
        })
        .ok_or_else(|| format!("{key} not in {file}"))
}

/// zram swap (128 MiB) if there is no swap yet; false if impossible.
pub fn ensure_swap() -> Result<bool, String> {
    let swaps = fs::read_to_string("/proc/swaps").map_err(e("/proc/swaps"))?;
    if swaps.lines().count() > 1 {
        return Ok(true);
    }
    if fs::metadata("/sys/block/zram0").is_err() {
        return Ok(false);
    }
    fs::write("/sys/block/zram0/disksize", "128M").map_err(e("zram disksize"))?;
    for (cmd, arg) in [("mkswap", "/dev/zram0"), ("swapon", "/dev/zram0")] {
        let out = Command::new(cmd)
            .arg(arg)
            .output()
            .map_err(e("swap setup"))?;
        check(out.status.success(), || format!("{cmd} failed"))?;
    }
    Ok(true)
}

/// A memory cgroup (v2) with `memory.max`, removed on drop.
pub struct MemCg {
    pub path: String,
}

impl MemCg {
    /// `Ok(None)` without a memory controller. `swap`: whether the group may swap.
    pub fn new(name: &str, max: &str, swap: bool) -> Result<Option<MemCg>, String> {
        let root = "/sys/fs/cgroup";
        if fs::metadata(format!("{root}/cgroup.controllers")).is_err() {
            let _ = fs::create_dir_all(root);
            let (src, dst, ty) = (
                CString::new("none").unwrap_or_default(),
                CString::new(root).unwrap_or_default(),
                CString::new("cgroup2").unwrap_or_default(),
            );
            // SAFETY: valid NUL-terminated strings; no mount data.
            let ret = unsafe {
                libc::mount(src.as_ptr(), dst.as_ptr(), ty.as_ptr(), 0, std::ptr::null())
            };
            if ret != 0 {
                return Ok(None);
            }
        }
        let controllers =
            fs::read_to_string(format!("{root}/cgroup.controllers")).unwrap_or_default();
        if !controllers.split_whitespace().any(|c| c == "memory") {
            return Ok(None);
        }
        fs::write(format!("{root}/cgroup.subtree_control"), "+memory")
            .map_err(e("enable memory controller"))?;
        let path = format!("{root}/{name}");
        let _ = fs::create_dir(&path);
        let cg = MemCg { path };
        fs::write(format!("{}/memory.max", cg.path), max).map_err(e("memory.max"))?;
        let _ = fs::write(
            format!("{}/memory.swap.max", cg.path),
            if swap { "max" } else { "0" },
        );
        Ok(Some(cg))
    }

    pub fn join(&self) -> Result<(), String> {
        fs::write(
            format!("{}/cgroup.procs", self.path),
            std::process::id().to_string(),
        )
        .map_err(e("join cgroup"))
    }

    pub fn stat(&self, key: &str) -> u64 {
        proc_value(&format!("{}/memory.stat", self.path), key).unwrap_or(0)
    }
}

impl Drop for MemCg {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.path);
    }
}

/// Kernel log lines that mean trouble (the host harness's list minus "Call Trace:", which an
/// OOM report prints by design; such windows are checked here instead).
const KERNEL_PROBLEMS: [&str; 9] = [
    "WARNING:",
    // Page poisoning (debug kernel): something wrote into a freed page.
    "memory corruption",
    "BUG:",
    "Oops",
    "Kernel panic",
    "general protection fault",
    "UBSAN:",
    "possible circular locking",
    "kmemleak",
];

/// The lines of `log` that show a kernel problem.
pub fn kernel_problems(log: &[String]) -> Vec<&String> {
    log.iter()
        .filter(|l| KERNEL_PROBLEMS.iter().any(|p| l.contains(p)))
        .collect()
}

/// Writes a marker into the kernel log; `quiet` also silences the console below KERN_ALERT
/// (an OOM report's stack trace would read as a kernel problem to the host harness).
pub struct KlogWindow {
    saved: Option<String>,
    marker: String,
}

impl KlogWindow {
    pub fn new(case: &str, quiet: bool) -> Result<KlogWindow, String> {
        let marker = format!("mnic guest test: {case} begins");
        // With its newline: a record without one stays open for continuation, and readers
        // (dmesg) do not see it until some later message closes it.
        fs::write("/dev/kmsg", format!("{marker}\n")).map_err(e("/dev/kmsg"))?;
        let mut saved = None;
        if quiet {
            let printk = fs::read_to_string("/proc/sys/kernel/printk").map_err(e("printk"))?;
            saved = Some(printk.split_whitespace().next().unwrap_or("5").to_string());
            fs::write("/proc/sys/kernel/printk", "1").map_err(e("printk"))?;
        }
        Ok(KlogWindow { saved, marker })
    }

    /// Kernel log lines since the marker.
    pub fn log(&self) -> Result<Vec<String>, String> {
        let out = Command::new("dmesg").output().map_err(e("dmesg"))?;
        check(out.status.success(), || {
            format!(
                "dmesg: {} {}",
                describe_status(std::os::unix::process::ExitStatusExt::into_raw(out.status)),
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })?;
        let log = String::from_utf8_lossy(&out.stdout);
        let start = log
            .rfind(&self.marker)
            .ok_or_else(|| format!("marker not found in the kernel log ({} bytes)", log.len()))?;
        Ok(log[start..].lines().map(str::to_string).collect())
    }

    /// `Err` listing problem lines since the marker.
    pub fn clean(&self) -> Result<Vec<String>, String> {
        let log = self.log()?;
        let bad = kernel_problems(&log);
        check(bad.is_empty(), || format!("kernel problems: {bad:?}"))?;
        Ok(log)
    }
}

impl Drop for KlogWindow {
    fn drop(&mut self) {
        if let Some(s) = &self.saved {
            let _ = fs::write("/proc/sys/kernel/printk", s);
        }
    }
}

/// A Linux ioctl number (`_IOC`): direction `dir` (1 write, 2 read, 3 both), type `ty`,
/// number `nr`, argument size `size`; for the other drivers the tests talk to (mnic's own
/// numbers come from `mnic_abi`).
pub const fn linux_ioc(dir: u32, ty: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | (ty << 8) | nr
}

/// Raw ioctl: `Err(errno)`. `arg` may be any pointer, valid or not: only the kernel reads it
/// (through copy_from_user, which fails with EFAULT), never this process.
#[allow(clippy::not_unsafe_ptr_arg_deref)]
pub fn raw_ioctl<T>(fd: &impl AsRawFd, cmd: u32, arg: *mut T) -> Result<i32, i32> {
    // SAFETY: `arg` points at a live `T` of the encoded size, or is deliberately invalid (the
    // kernel must then fail with EFAULT without touching our memory).
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), cmd as _, arg) };
    if rc >= 0 {
        Ok(rc)
    } else {
        Err(errno())
    }
}

/// A small xorshift generator (deterministic per seed).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

pub fn soak() -> bool {
    std::env::var_os("MNIC_SOAK").is_some_and(|v| v != "0")
        || std::env::args().any(|a| a == "--soak")
}

/// Seconds for a bounded loop: short in `make test`, long in soak.
pub fn duration(normal: u64, long: u64) -> Duration {
    Duration::from_secs(if soak() { long } else { normal })
}

/// The summary line of a case (KTAP diagnostic).
pub fn note(s: impl AsRef<str>) {
    println!("# {}", s.as_ref());
}

/// FOLL_PIN pins held system-wide right now (`nr_foll_pin_acquired - nr_foll_pin_released`).
pub fn pins_held() -> Result<i64, String> {
    // vmstat counters are per-CPU and folded lazily; this folds them now.
    fs::write("/proc/sys/vm/stat_refresh", "1").map_err(e("stat_refresh"))?;
    let acq = proc_value("/proc/vmstat", "nr_foll_pin_acquired")? as i64;
    let rel = proc_value("/proc/vmstat", "nr_foll_pin_released")? as i64;
    Ok(acq - rel)
}

// ------------------------------------------------------------------ patterns

/// The 8-byte word at byte offset `off` (a multiple of 8) of pattern `seed`.
pub fn word(off: usize, seed: u64) -> u64 {
    let mut z = (off as u64 / 8)
        .wrapping_add(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(1);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Pattern bytes for `[off, off+len)`.
pub fn pattern(off: usize, len: usize, seed: u64) -> Vec<u8> {
    (off / 8 * 8..(off + len).div_ceil(8) * 8)
        .step_by(8)
        .flat_map(|o| word(o, seed).to_le_bytes())
        .skip(off % 8)
        .take(len)
        .collect()
}

/// `Ok` if `data` (which sits at offset `off`) is pattern `seed`; else where it differs.
pub fn is_pattern(data: &[u8], off: usize, seed: u64) -> Result<(), String> {
    let want = pattern(off, data.len(), seed);
    match data.iter().zip(&want).position(|(a, b)| a != b) {
        None => Ok(()),
        Some(i) => Err(format!(
            "byte {:#x} is {:#04x}, pattern {seed:#x} wants {:#04x}{}",
            off + i,
            data[i],
            want[i],
            if data[i..].iter().take(PAGE).all(|b| *b == 0) {
                " (zeroes)"
            } else {
                ""
            }
        )),
    }
}

pub fn is_zero(data: &[u8], what: &str) -> Result<(), String> {
    match data.iter().position(|b| *b != 0) {
        None => Ok(()),
        Some(i) => Err(format!("{what}: byte {i:#x} is {:#04x}, want 0", data[i])),
    }
}

// ------------------------------------------------------------------ raw mappings

/// A raw mapping, accessed only with volatile copies (the device may write it at any time).
/// Parts may be unmapped (`munmap`), moved or re-protected by the case; on drop only what is
/// still its own is unmapped: a hole may hold somebody else's mapping by then (the kernel
/// reuses freed ranges, the allocator included).
pub struct Map {
    pub ptr: usize,
    pub len: usize,
    /// Ranges (offset, length) unmapped through [`Map::munmap`].
    holes: std::cell::RefCell<Vec<(usize, usize)>>,
}

impl Map {
    pub fn new(len: usize, prot: i32, flags: i32, fd: i32, off: i64) -> Result<Map, String> {
        // SAFETY: a fresh mapping at an address the kernel chooses (or MAP_FIXED over a range
        // the case owns); checked below.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, off) };
        if p == libc::MAP_FAILED {
            return Err(os_err("mmap"));
        }
        Ok(Map {
            ptr: p as usize,
            len,
            holes: Default::default(),
        })
    }

    pub fn anon(len: usize) -> Result<Map, String> {
        Self::new(
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    }

    /// A mapping exactly at `addr` that must not replace anything (MAP_FIXED_NOREPLACE).
    pub fn fixed_noreplace(addr: usize, len: usize, prot: i32) -> Result<Map, String> {
        // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping; checked below.
        let p = unsafe {
            libc::mmap(
                addr as *mut _,
                len,
                prot,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        check(p != libc::MAP_FAILED && p as usize == addr, || {
            os_err("mmap(MAP_FIXED_NOREPLACE)")
        })?;
        Ok(Map {
            ptr: addr,
            len,
            holes: Default::default(),
        })
    }

    /// Takes over an existing mapping (e.g. the result of mremap).
    pub fn adopt(ptr: usize, len: usize) -> Map {
        Map {
            ptr,
            len,
            holes: Default::default(),
        }
    }

    pub fn va(&self) -> u64 {
        self.ptr as u64
    }

    pub fn at(&self, off: usize) -> u64 {
        (self.ptr + off) as u64
    }

    /// Writes pattern `seed` over `[off, off+len)` (offsets relative to the mapping).
    pub fn fill(&self, off: usize, len: usize, seed: u64) {
        assert!(off.is_multiple_of(8) && len.is_multiple_of(8) && off + len <= self.len);
        for o in (off..off + len).step_by(8) {
            // SAFETY: inside the mapping, 8-byte aligned; volatile (the device may also write).
            unsafe { std::ptr::write_volatile((self.ptr + o) as *mut u64, word(o, seed)) };
        }
    }

    pub fn fill_byte(&self, off: usize, len: usize, b: u8) {
        for o in off..off + len {
            // SAFETY: inside the mapping (the caller keeps it mapped and writable).
            unsafe { std::ptr::write_volatile((self.ptr + o) as *mut u8, b) };
        }
    }

    pub fn read(&self, off: usize, len: usize) -> Vec<u8> {
        assert!(off + len <= self.len);
        (off..off + len)
            // SAFETY: inside the mapping (the caller keeps that part mapped and readable).
            .map(|o| unsafe { std::ptr::read_volatile((self.ptr + o) as *const u8) })
            .collect()
    }

    pub fn check(&self, off: usize, len: usize, seed: u64) -> Result<(), String> {
        is_pattern(&self.read(off, len), off, seed)
    }

    pub fn madvise(&self, off: usize, len: usize, advice: i32) -> Result<(), String> {
        // SAFETY: a range of our own mapping; nothing holds references into it.
        let rc = unsafe { libc::madvise((self.ptr + off) as *mut _, len, advice) };
        check(rc == 0, || os_err(&format!("madvise({advice})")))
    }

    pub fn mprotect(&self, off: usize, len: usize, prot: i32) -> Result<(), String> {
        // SAFETY: as in `madvise`.
        let rc = unsafe { libc::mprotect((self.ptr + off) as *mut _, len, prot) };
        check(rc == 0, || os_err("mprotect"))
    }

    pub fn munmap(&self, off: usize, len: usize) -> Result<(), String> {
        // SAFETY: as in `madvise`; the rest of the mapping stays ours.
        let rc = unsafe { libc::munmap((self.ptr + off) as *mut _, len) };
        check(rc == 0, || os_err("munmap"))?;
        self.holes
            .borrow_mut()
            .push((off, len.div_ceil(PAGE) * PAGE));
        Ok(())
    }

    /// Resident pages of `[off, off+len)` (mincore), page by page.
    pub fn resident(&self, off: usize, len: usize) -> Result<Vec<bool>, String> {
        let mut v = vec![0u8; len / PAGE];
        // SAFETY: our own mapping; one byte per page.
        let rc = unsafe { libc::mincore((self.ptr + off) as *mut _, len, v.as_mut_ptr()) };
        check(rc == 0, || os_err("mincore"))?;
        Ok(v.iter().map(|b| b & 1 != 0).collect())
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        let mut holes = std::mem::take(self.holes.get_mut());
        holes.sort_unstable();
        let mut at = 0;
        for (off, len) in holes.into_iter().chain([(self.len, 0)]) {
            if off > at {
                // SAFETY: [at, off) of our mapping was never unmapped by the case: still ours.
                unsafe { libc::munmap((self.ptr + at) as *mut _, off - at) };
            }
            at = at.max(off + len);
        }
    }
}

/// Keeps the calling thread on one CPU while it lives (the previous mask comes back on drop).
///
/// MADV_PAGEOUT can only take pages off the LRU lists, and a freshly filled page sits in a
/// per-CPU batch until that CPU drains it: madvise drains only its own CPU's, so a page
/// filled on the other CPU stays resident. MADV_FREE, too, only queues its pages in a per-CPU
/// batch; until that batch drains they are ordinary anonymous pages, which a page-out swaps
/// out (keeping their data) instead of discarding. Doing both on one CPU makes the page-out
/// see what the test did.
pub struct OnOneCpu {
    previous: libc::cpu_set_t,
}

impl OnOneCpu {
    /// Moves the calling thread onto `cpu`.
    pub fn new(cpu: usize) -> Result<OnOneCpu, String> {
        // SAFETY: `cpu_set_t` is plain data, valid all zeros; the libc calls only read and
        // write the sets passed, whose sizes are given.
        unsafe {
            let mut previous: libc::cpu_set_t = std::mem::zeroed();
            let size = std::mem::size_of::<libc::cpu_set_t>();
            check(libc::sched_getaffinity(0, size, &mut previous) == 0, || {
                os_err("sched_getaffinity")
            })?;
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut one);
            check(libc::sched_setaffinity(0, size, &one) == 0, || {
                os_err("sched_setaffinity")
            })?;
            Ok(OnOneCpu { previous })
        }
    }
}

impl Drop for OnOneCpu {
    fn drop(&mut self) {
        // SAFETY: as in `new`: a valid set of the size given.
        unsafe {
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.previous);
        }
    }
}
