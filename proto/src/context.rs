//! [`Context`]: one hardware context programmed by hand (spec §5, §11): its own
//! translation table over the driver's DMA memory, its work queue and completion queue at
//! virtual addresses of the driver's choosing, the context-table entry, `CTX_ENABLE`, and
//! then posting work (descriptor, doorbell) and reaping completions by phase bit.

use std::sync::atomic::{fence, Ordering};
use std::time::{Duration, Instant};

use mnic_abi::{cmd, completion, pte, reg, ring, Completion, CtxEntry, WorkDesc, CTX_FLAG_VALID};

use crate::error::{Error, Result};
use crate::nic::{Nic, DEVICE_WAIT};
use crate::table::TranslationTable;

/// VA of every context's work queue in its own address space (the completion queue
/// follows 1 MiB above). Any canonical address works: the table says what it means.
pub const WQ_VA: u64 = 0x7f00_0000_0000;
/// VA of the completion queue.
pub const CQ_VA: u64 = WQ_VA + (1 << 20);
/// Where [`Context::buffer`] places data buffers in the context's address space.
pub const DATA_VA: u64 = 0x10_0000_0000;

bitflags::bitflags! {
    /// How [`Context::buffer`] maps a new buffer in the context's table.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct BufferFlags: u32 {
        /// The device may write it (leaves with `W`); without it, read-only.
        const WRITABLE = 1 << 0;
        /// Left out of the table: the device faults on every page until the driver maps
        /// them (the VA is reserved all the same).
        const UNMAPPED = 1 << 1;
    }
}

/// A data buffer: DMA memory and the VA the context sees it at.
#[derive(Clone, Copy, Debug)]
pub struct Buffer {
    /// VA in the context's address space.
    pub va: u64,
    /// IOVA of its first byte (contiguous).
    pub iova: u64,
    /// Length in bytes (whole pages).
    pub len: u64,
}

/// An enabled hardware context.
pub struct Context {
    /// Its index (the doorbell page and `ctx` field of commands and events).
    pub index: u16,
    /// Its translation table.
    pub table: TranslationTable,
    wq: u64,
    cq: u64,
    wq_log2: u8,
    cq_log2: u8,
    posted: u64,
    completed: u64,
    next_va: u64,
}

impl Context {
    /// Creates context `index` with `1 << wq_log2` work and `1 << cq_log2` completion
    /// entries, maps its queues (the work queue read-only: the device only reads it),
    /// writes its table entry, and enables it (`CTX_DISABLE`, `CTX_ENABLE`, `SYNC`). Fails if the
    /// device reports an error for it.
    pub fn create(nic: &mut Nic, index: u16, wq_log2: u8, cq_log2: u8) -> Result<Self> {
        let table = TranslationTable::new(nic.mem.clone())?;
        let wq_len = (size_of::<WorkDesc>() << wq_log2) as u64;
        let cq_len = (size_of::<Completion>() << cq_log2) as u64;
        let pages = |len: u64| len.div_ceil(pte::PAGE_SIZE) as usize;
        let wq = nic.mem.alloc_pages(pages(wq_len))?;
        let cq = nic.mem.alloc_pages(pages(cq_len))?;
        table.map(WQ_VA, wq, wq_len.next_multiple_of(pte::PAGE_SIZE), false)?;
        table.map(CQ_VA, cq, cq_len.next_multiple_of(pte::PAGE_SIZE), true)?;
        nic.write_ctx_entry(
            index,
            &CtxEntry {
                flags: CTX_FLAG_VALID,
                wq_size_log2: wq_log2,
                cq_size_log2: cq_log2,
                root: table.root(),
                wq_va: WQ_VA,
                cq_va: CQ_VA,
                ..Default::default()
            },
        );
        let errors = nic.reg(reg::ERROR_COUNT);
        // Disabling first makes this work whatever an earlier run left enabled (disabling a
        // disabled context is no error, spec §7).
        nic.command(cmd::CTX_DISABLE, index, 0, 0)?;
        nic.run_command(cmd::CTX_ENABLE, index, 0, 0)?;
        if nic.reg(reg::ERROR_COUNT) != errors {
            return Err(Error::Device(format!(
                "CTX_ENABLE {index} refused: ERROR_CODE {}, events {:?}",
                nic.reg(reg::ERROR_CODE),
                nic.pending_events()
            )));
        }
        Ok(Self {
            index,
            table,
            wq,
            cq,
            wq_log2,
            cq_log2,
            posted: 0,
            completed: 0,
            next_va: DATA_VA,
        })
    }

    /// `pages` pages of fresh zeroed DMA memory at the next free VA of the context, with
    /// a guard page of VA space after it, mapped as `flags` say.
    pub fn buffer(&mut self, nic: &Nic, pages: usize, flags: BufferFlags) -> Result<Buffer> {
        let len = pages as u64 * pte::PAGE_SIZE;
        let b = Buffer {
            va: self.next_va,
            iova: nic.mem.alloc_pages(pages)?,
            len,
        };
        self.next_va += len + pte::PAGE_SIZE;
        if !flags.contains(BufferFlags::UNMAPPED) {
            self.table
                .map(b.va, b.iova, len, flags.contains(BufferFlags::WRITABLE))?;
        }
        Ok(b)
    }

    /// Checks `d` against the device's descriptor rule (spec §11), writes it into the next
    /// work-queue slot and rings the context's doorbell. At most as many items may be
    /// outstanding as the completion queue holds.
    pub fn post(&mut self, nic: &Nic, d: WorkDesc) -> Result<()> {
        d.validate().map_err(|e| Error::Descriptor(e.message()))?;
        let wq_n = 1u64 << self.wq_log2;
        let cq_n = 1u64 << self.cq_log2;
        if self.posted - self.completed >= (wq_n - 1).min(cq_n) {
            return Err(Error::Device(format!(
                "context {}: {} items outstanding, the queues are full",
                self.index,
                self.posted - self.completed
            )));
        }
        let slot = ring::slot(self.posted, wq_n);
        nic.mem
            .write_obj(self.wq + size_of::<WorkDesc>() as u64 * slot, &d);
        self.posted += 1;
        // The descriptor must be in memory before the device sees the new tail.
        fence(Ordering::SeqCst);
        nic.ring_doorbell(self.index, ring::slot(self.posted, wq_n) as u32);
        Ok(())
    }

    /// The next completion, if the device has written it.
    pub fn poll_completion(&mut self, nic: &Nic) -> Option<Completion> {
        let n = 1u64 << self.cq_log2;
        let c = nic.mem.read_if_new::<Completion>(
            self.cq + size_of::<Completion>() as u64 * ring::slot(self.completed, n),
            Completion::PHASE_OFFSET,
            completion::FLAG_PHASE as u8,
            ring::phase(self.completed, n),
        )?;
        self.completed += 1;
        Some(c)
    }

    /// Waits (polling) for the next completion.
    pub fn wait_completion(&mut self, nic: &Nic) -> Result<Completion> {
        let start = Instant::now();
        loop {
            if let Some(c) = self.poll_completion(nic) {
                return Ok(c);
            }
            if start.elapsed() > DEVICE_WAIT {
                return Err(Error::Timeout {
                    what: format!(
                        "a completion of context {} (STATUS {:#x})",
                        self.index,
                        nic.reg(reg::STATUS)
                    ),
                    waited: DEVICE_WAIT,
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Items posted and not yet completed.
    pub fn outstanding(&self) -> u64 {
        self.posted - self.completed
    }
}
