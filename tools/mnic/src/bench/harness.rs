//! Running a benchmark: opening the context, allocating buffers, keeping the queue full
//! while waiting for completions, progress lines.

use std::time::Duration;

use mnic::abi::pte;
use mnic::{Context, Device, DmaBuffer, DoorbellMode, QueueConfig, Work};

use crate::bench::args::{Common, DoorbellArg};
use crate::error::CmdResult;

/// Bytes of a base page.
pub const PAGE: usize = pte::PAGE_SIZE as usize;

/// Opens /dev/mnicN and sets up its queues as the flags say.
pub fn open(c: &Common) -> CmdResult<Context> {
    let ctx = Device::open_index(c.device)?;
    setup(c, ctx)
}

/// Sets up the queues of an opened context as the flags say.
pub fn setup(c: &Common, ctx: Context) -> CmdResult<Context> {
    ctx.setup_queues(QueueConfig {
        wq_log2: c.queue_log2,
        cq_log2: c.queue_log2,
        doorbell: match c.doorbell {
            DoorbellArg::Auto => DoorbellMode::Auto,
            DoorbellArg::Shadow => DoorbellMode::Shadow,
            DoorbellArg::Mapped => DoorbellMode::Mapped,
            DoorbellArg::Syscall => DoorbellMode::Syscall,
        },
    })?;
    let qc = ctx.queue_config().ok_or("queues not set up")?;
    eprintln!(
        "[bench] {} context {}, doorbell {:?}, up to {} items outstanding",
        ctx.path().display(),
        ctx.info().ctx,
        qc.doorbell,
        ctx.outstanding_limit()
    );
    Ok(ctx)
}

/// A buffer of `len` bytes, 2 MiB-aligned and advised for huge pages with `--huge`.
pub fn alloc(c: &Common, len: u64) -> CmdResult<DmaBuffer> {
    let len = usize::try_from(len)?;
    Ok(if c.huge {
        DmaBuffer::new_huge(len)?
    } else {
        DmaBuffer::new(len)?
    })
}

/// One store per page: every page of `buf` faults in (allocated and zeroed) without the
/// cost of writing whole pages.
pub fn touch(buf: &DmaBuffer, byte: u8) {
    for off in (0..buf.len()).step_by(PAGE) {
        buf.write_from(off, &[byte]);
    }
}

/// Posts every item, keeping at most the context's limit outstanding, and waits for
/// all of them; returns the sum of their `bytes`. Fails on the first failed item.
pub fn drive(
    ctx: &Context,
    works: impl IntoIterator<Item = Work>,
    timeout: Duration,
) -> CmdResult<u64> {
    let mut it = works.into_iter();
    let mut total = 0;
    loop {
        let mut pushed = false;
        while ctx.outstanding() < ctx.outstanding_limit() {
            let Some(w) = it.next() else { break };
            ctx.push(&w)?;
            pushed = true;
        }
        if pushed {
            ctx.ring()?;
        }
        if ctx.outstanding() == 0 {
            return Ok(total);
        }
        total += ctx.wait(Some(timeout))?.result()?;
    }
}

/// The order of the two sides of an A/B benchmark in iteration `i`: `false` (measured)
/// first in even iterations, `true` (baseline) first in odd ones, so that neither side
/// always runs right after the other.
pub fn sides(i: u32) -> [bool; 2] {
    if i.is_multiple_of(2) {
        [false, true]
    } else {
        [true, false]
    }
}

/// A progress line on stderr every tenth of `n` iterations (and at the last).
pub fn progress(tag: &str, i: u32, n: u32) {
    if n >= 10 && (i + 1).is_multiple_of(n / 10) || i + 1 == n {
        eprintln!("[{tag}] {}/{n}", i + 1);
    }
}
