//! Copy-on-write after fork: the parent's device writes land in the parent's pages and
//! the child's view is untouched.
//!
//! The parent registers `dst`, lets the device map it writable, and forks. The child
//! writes its copy of the first half of `dst` (breaking COW on its side), tells the
//! parent, and waits. The parent then has the device COPY new data over all of `dst`,
//! checks it sees that data, and tells the child, which checks that its first half
//! still holds what it wrote and its second half still holds the pre-fork data.
//!
//! Usage: `fork [N]`.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::Duration;

use mnic::{Access, Device, DmaBuffer, QueueConfig, Work};

const LEN: usize = 1 << 20;
const HALF: usize = LEN / 2;
const BEFORE: u8 = 0xa0; // dst before fork
const CHILD: u8 = 0xc1; // what the child writes into its first half
const DEVICE: u8 = 0xd5; // what the parent's device copies in

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    match run() {
        Ok(()) => {
            println!("fork: ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fork: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn all(buf: &DmaBuffer, off: usize, len: usize, v: u8) -> bool {
    let mut tmp = vec![0; len];
    buf.read_into(off, &mut tmp);
    tmp.iter().all(|&b| b == v)
}

/// A pipe as (read end, write end). Not a socket pair: the test kernel has no AF_UNIX.
fn pipe() -> std::io::Result<(File, File)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe(2) to fill.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe(2) succeeded: both fds are open and owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((File::from(r), File::from(w)))
}

/// The child: write our half, signal, wait, check. Never returns.
fn child(dst: &DmaBuffer, (mut rx, mut tx): (File, File)) -> ! {
    dst.fill_range(0, HALF, CHILD);
    let ok = tx.write_all(b"w").is_ok()
        && rx.read_exact(&mut [0u8; 1]).is_ok()
        && all(dst, 0, HALF, CHILD)
        && all(dst, HALF, HALF, BEFORE);
    if !ok {
        eprintln!("fork: child's view of dst changed");
    }
    // Leave without running destructors: the inherited context is the parent's.
    std::process::exit(if ok { 0 } else { 1 })
}

fn run() -> Res {
    let n = std::env::args().nth(1).map_or(Ok(0), |s| s.parse())?;
    let ctx = Device::open_index(n)?;
    ctx.setup_queues(QueueConfig::default())?;
    let src = DmaBuffer::new(LEN)?;
    let dst = DmaBuffer::new(LEN)?;
    src.fill(DEVICE);
    dst.fill(BEFORE);
    let _rs = ctx.register(&src, Access::READ)?;
    let rd = ctx.register(&dst, Access::WRITE)?;
    rd.prefetch(true)?;
    println!(
        "before fork: dst writable device entries {}",
        rd.query()?.writable
    );

    let (mut from_child, child_tx) = pipe()?;
    let (child_rx, mut to_child) = pipe()?;
    // SAFETY: the process is single-threaded here (no threads were started), so the
    // child may run any code; it only touches its own copies and exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    if pid == 0 {
        drop((from_child, to_child));
        child(&dst, (child_rx, child_tx));
    }
    drop((child_rx, child_tx));

    // Fork write-protected the parent's pages: the device lost its writable entries.
    println!(
        "after fork: dst writable device entries {}",
        rd.query()?.writable
    );
    let mut b = [0u8; 1];
    from_child.read_exact(&mut b)?;
    println!("child wrote its copy; device copies into the parent's dst");
    ctx.run(
        &Work::copy_buffers(&src, 0, &dst, 0, LEN)?,
        Some(Duration::from_secs(10)),
    )?;
    let parent_ok = all(&dst, 0, LEN, DEVICE);
    to_child.write_all(b"d")?;

    let mut status = 0;
    // SAFETY: `pid` is our child; `status` is a valid out pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    if r != pid {
        return Err(std::io::Error::last_os_error().into());
    }
    let child_ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    println!("parent sees device data: {parent_ok}; child's view untouched: {child_ok}");
    if !parent_ok {
        return Err("device write did not land in the parent's pages".into());
    }
    if !child_ok {
        return Err("child's copy was modified (or child failed)".into());
    }
    Ok(())
}
