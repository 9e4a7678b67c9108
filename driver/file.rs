// SPDX-License-Identifier: GPL-2.0
//! `/dev/mnicN`: one hardware context per open file, the ioctls of spec §13 and the mmaps of
//! the context's doorbell page and shadow page.

use kernel::{
    fs::File,
    ioctl::_IOC_SIZE,
    miscdevice::{MiscDevice, MiscDeviceOptions, MiscDeviceRegistration},
    mm::virt::VmaNew,
    prelude::*,
    sync::{atomic::Relaxed, Arc, CondVarTimeoutResult},
    time::msecs_to_jiffies,
    uaccess::{UserPtr, UserSlice, UserSliceReader, UserSliceWriter},
};
use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::abi::{self, pte};
use crate::context::Ctx;
use crate::device::MnicDev;
use crate::slots::ContextSlots;

/// The misc device of one NIC, with the device its files open contexts on and the table of
/// their indices.
#[pin_data]
pub(crate) struct MiscHandle {
    dev: Arc<MnicDev>,
    contexts: Arc<ContextSlots>,
    #[pin]
    reg: MiscDeviceRegistration<OpenFile>,
}

impl MiscHandle {
    pub(crate) fn new(
        dev: Arc<MnicDev>,
        contexts: Arc<ContextSlots>,
        name: &'static CStr,
    ) -> impl PinInit<Self, Error> {
        try_pin_init!(MiscHandle {
            dev,
            contexts,
            reg <- MiscDeviceRegistration::register(MiscDeviceOptions { name }),
        }? Error)
    }
}

/// One open file: its context, and the table in which it holds the context's index (freed
/// again at release).
pub(crate) struct OpenFile {
    ctx: Arc<Ctx>,
    contexts: Arc<ContextSlots>,
}

/// Reads an ABI structure from user space (zerocopy: no `unsafe` trait impls needed).
fn read_user<T: FromBytes>(reader: &mut UserSliceReader) -> Result<T> {
    let mut buf = [0u8; 128];
    let n = size_of::<T>();
    let bytes = buf.get_mut(..n).ok_or(EINVAL)?;
    reader.read_slice(bytes)?;
    T::read_from_bytes(bytes).map_err(|_| EINVAL)
}

fn write_user<T: IntoBytes + Immutable>(writer: &mut UserSliceWriter, value: &T) -> Result {
    writer.write_slice(value.as_bytes())
}

#[vtable]
impl MiscDevice for OpenFile {
    type Ptr = KBox<OpenFile>;

    fn open(_file: &File, misc: &MiscDeviceRegistration<Self>) -> Result<KBox<OpenFile>> {
        let misc: *const MiscDeviceRegistration<OpenFile> = misc;
        // SAFETY: every `MiscDeviceRegistration<OpenFile>` of this driver is the `reg` field of a
        // pinned `MiscHandle`. The misc core calls `open` with `misc_mtx` held, and the
        // registration is only removed (in `MiscHandle`'s drop, under the same mutex) after it
        // returns, so the container is alive and not moving while we read it.
        let handle = unsafe { &*kernel::container_of!(misc, MiscHandle, reg) };
        let contexts = handle.contexts.clone();
        let index = contexts.reserve()?;
        let opened = Ctx::new(handle.dev.clone(), index)
            .and_then(|i| Arc::pin_init(i, GFP_KERNEL))
            .and_then(|ctx| {
                let contexts = contexts.clone();
                Ok(KBox::new(OpenFile { ctx, contexts }, GFP_KERNEL)?)
            });
        let this = match opened {
            Ok(this) => this,
            Err(e) => {
                contexts.release(index);
                return Err(e);
            }
        };
        contexts.publish(index, this.ctx.clone());
        Ok(this)
    }

    fn release(this: KBox<OpenFile>, _file: &File) {
        let ctx = &this.ctx;
        // The file's mapping goes with it: unbind must not zap through it any more.
        *ctx.doorbell_mapping.lock() = 0;
        ctx.teardown();
        this.contexts.release(ctx.index);
    }

    fn mmap(this: &OpenFile, file: &File, vma: &VmaNew) -> Result {
        let ctx = &this.ctx;
        // SAFETY: `vma` is a valid VMA being set up by mmap; reading its offset is a plain load.
        let pgoff = unsafe { (*vma.as_ptr()).vm_pgoff };
        let len = vma.end() - vma.start();
        if pgoff as u64 == abi::MMAP_SHADOW_OFFSET / abi::SHADOW_PAGE_SIZE
            && len == abi::SHADOW_PAGE_SIZE as usize
        {
            let access = ctx.dev.enter()?;
            let shadow = ctx.shadow.lock();
            // Before `MNIC_IOC_SHADOW` there is nothing to map.
            return shadow.as_ref().ok_or(EINVAL)?.mmap(access.bound(), vma);
        }
        if pgoff != 0 || len != abi::DOORBELL_PAGE_SIZE as usize {
            return Err(EINVAL);
        }
        // The doorbell must not be inherited: a child after fork has its own mm and context.
        vma.set_io();
        vma.set_dontcopy();
        vma.set_dontexpand();
        vma.set_dontdump();
        vma.try_clear_mayexec()?;
        let _access = ctx.dev.enter()?;
        let phys = ctx.dev.doorbell_phys + u64::from(ctx.index) * abi::DOORBELL_PAGE_SIZE;
        // SAFETY: `vm_iomap_memory` maps `phys` (one page of this device's BAR2, which stays
        // claimed by the driver while it is bound; `_access` proves it is) into the VMA being
        // created, whose size was checked to be exactly that page. Nothing in Rust aliases it.
        kernel::error::to_result(unsafe {
            kernel::bindings::vm_iomap_memory(
                vma.as_ptr(),
                phys as kernel::bindings::phys_addr_t,
                abi::DOORBELL_PAGE_SIZE as _,
            )
        })?;
        // SAFETY: `file` is the open file being mapped; reading its `f_mapping` pointer is a
        // plain load of a field that is set at open and stays valid while the file is open.
        let mapping = unsafe { (*file.as_ptr()).f_mapping };
        *ctx.doorbell_mapping.lock() = mapping as usize;
        Ok(())
    }

    fn ioctl(this: &OpenFile, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        let ctx = &this.ctx;
        let user = UserSlice::new(UserPtr::from_addr(arg), _IOC_SIZE(cmd));
        if ctx.dev.is_gone() {
            return Err(ENODEV);
        }
        match cmd {
            abi::MNIC_IOC_INFO => {
                let info = abi::MnicInfo {
                    abi_version: abi::UABI_VERSION,
                    hw_version: ctx.dev.hw_version,
                    caps: ctx.dev.caps,
                    num_contexts: abi::NUM_CONTEXTS,
                    ctx: ctx.index.into(),
                    minor: ctx.dev.minor_index,
                    max_registrations: abi::MAX_REGISTRATIONS,
                    node: ctx.dev.node,
                };
                write_user(&mut user.writer(), &info)?;
            }
            abi::MNIC_IOC_REGISTER => {
                let (mut r, mut w) = user.reader_writer();
                let mut req: abi::MnicRegister = read_user(&mut r)?;
                ctx.register(&mut req)?;
                if let Err(e) = write_user(&mut w, &req) {
                    let _ = ctx.deregister(req.handle);
                    return Err(e);
                }
            }
            abi::MNIC_IOC_DEREGISTER => {
                let req: abi::MnicHandle = read_user(&mut user.reader())?;
                if req.rsvd != 0 {
                    return Err(EINVAL);
                }
                ctx.deregister(req.handle)?;
            }
            abi::MNIC_IOC_PREFETCH => {
                let req: abi::MnicRange = read_user(&mut user.reader())?;
                ctx.prefetch_ioctl(&req)?;
            }
            abi::MNIC_IOC_SETUP_QUEUES => {
                let req: abi::MnicQueues = read_user(&mut user.reader())?;
                setup_queues(&ctx, &req)?;
            }
            abi::MNIC_IOC_POST => {
                let req: abi::MnicPost = read_user(&mut user.reader())?;
                if req.rsvd != 0 {
                    return Err(EINVAL);
                }
                if !ctx.enabled.load(Relaxed) {
                    return Err(EINVAL);
                }
                ctx.check_owner()?;
                let shadow = ctx.shadow.lock();
                ctx.dev
                    .ring_doorbell(ctx.index, req.wq_tail, shadow.as_ref())?;
            }
            abi::MNIC_IOC_WAIT => {
                let (mut r, mut w) = user.reader_writer();
                let mut req: abi::MnicWait = read_user(&mut r)?;
                if req.rsvd != 0 {
                    return Err(EINVAL);
                }
                let result = wait(&ctx, &req);
                req.count = ctx.work_done.load(Relaxed);
                write_user(&mut w, &req)?;
                result?;
            }
            abi::MNIC_IOC_CTX_STATS => {
                let s = &ctx.stats;
                let valid = ctx.count(0, pte::VA_LIMIT);
                let out = abi::MnicCtxStats {
                    registrations: ctx.registration_count() as u64,
                    mapped_4k: valid.small,
                    mapped_2m: valid.huge,
                    pinned_pages: ctx.pinned_pages(0, pte::VA_LIMIT),
                    faults: s.faults.load(Relaxed),
                    resumes: s.resumes.load(Relaxed),
                    aborts: s.aborts.load(Relaxed),
                    invalidations: s.invalidations.load(Relaxed),
                    entries_invalidated: s.entries_invalidated.load(Relaxed),
                    sync_waits: s.sync_waits.load(Relaxed),
                    sync_wait_ns: s.sync_wait_ns.load(Relaxed),
                    sync_wait_max_ns: s.sync_wait_max_ns.load(Relaxed),
                    work_done: ctx.work_done.load(Relaxed),
                    fault_retries: s.fault_retries.load(Relaxed),
                    rsvd: [0; 2],
                };
                write_user(&mut user.writer(), &out)?;
            }
            abi::MNIC_IOC_DEV_STATS => {
                let mut out = abi::MnicDevStats::default();
                ctx.dev.counters(&mut out.counters)?;
                write_user(&mut user.writer(), &out)?;
            }
            abi::MNIC_IOC_QUERY => {
                let (mut r, mut w) = user.reader_writer();
                let mut req: abi::MnicQuery = read_user(&mut r)?;
                let end = req.addr.checked_add(req.len).ok_or(EINVAL)?;
                if req.len == 0 || req.addr % pte::PAGE_SIZE != 0 || req.len % pte::PAGE_SIZE != 0 {
                    return Err(EINVAL);
                }
                let n = ctx.count(req.addr, end);
                req.valid_4k = n.small;
                req.valid_2m = n.huge;
                req.writable = n.writable;
                req.pinned = ctx.pinned_pages(req.addr, end);
                write_user(&mut w, &req)?;
            }
            abi::MNIC_IOC_SHADOW => ctx.give_shadow()?,
            abi::MNIC_IOC_SYNC => ctx.fence()?,
            abi::MNIC_IOC_CTX_LATENCY => {
                write_user(&mut user.writer(), &ctx.stats.latency.report())?
            }
            abi::MNIC_IOC_DEV_LATENCY => {
                write_user(&mut user.writer(), &ctx.dev.latency.hist.report())?
            }
            _ => return Err(ENOTTY),
        }
        Ok(0)
    }
}

/// `MNIC_IOC_SETUP_QUEUES`: write the context entry and enable the context behind a SYNC
/// (and give it the remote keys of the registrations made before, `remote.rs`).
fn setup_queues(ctx: &Ctx, req: &abi::MnicQueues) -> Result {
    let sizes = u32::from(abi::RING_LOG2_MIN)..=u32::from(abi::RING_LOG2_MAX);
    if !sizes.contains(&req.wq_size_log2)
        || !sizes.contains(&req.cq_size_log2)
        || req.wq_addr == 0
        || req.cq_addr == 0
        || req.wq_addr % 64 != 0
        || req.cq_addr % 32 != 0
        || req
            .wq_addr
            .checked_add(64 << req.wq_size_log2)
            .is_none_or(|e| e > pte::VA_LIMIT)
        || req
            .cq_addr
            .checked_add(32 << req.cq_size_log2)
            .is_none_or(|e| e > pte::VA_LIMIT)
    {
        return Err(EINVAL);
    }
    ctx.check_owner()?;
    // Claimed once, atomically: two racing calls must not both program and enable it.
    if ctx.queues_claimed.cmpxchg(false, true, Relaxed).is_err() {
        return Err(EBUSY);
    }
    let result = enable_queues(ctx, req);
    // Once enabled, the claim stays: a second enable would be refused by the device. (What
    // can fail after it, giving the remote keys, fails only when the device is going.)
    if result.is_err() && !ctx.enabled.load(Relaxed) {
        ctx.queues_claimed.store(false, Relaxed);
    }
    result
}

/// Writes the context entry and enables the context (the caller claimed it).
fn enable_queues(ctx: &Ctx, req: &abi::MnicQueues) -> Result {
    let root = ctx.state.lock().table.root();
    // Read after the claim: `Ctx::give_shadow` gives no page from now on.
    let shadow = ctx
        .shadow
        .lock()
        .as_ref()
        .map_or(0, |page| page.dma_address());
    let entry = abi::CtxEntry {
        flags: abi::CTX_FLAG_VALID,
        wq_size_log2: req.wq_size_log2 as u8,
        cq_size_log2: req.cq_size_log2 as u8,
        rsvd: 0,
        root,
        wq_va: req.wq_addr,
        cq_va: req.cq_addr,
        shadow,
        rsvd2: [0; 3],
    };
    ctx.dev.write_ctx_entry(ctx.index, &entry)?;
    ctx.enable()
}

/// `MNIC_IOC_WAIT`: sleep until the context's `WORK_DONE` count reaches `target`.
fn wait(ctx: &Ctx, req: &abi::MnicWait) -> Result {
    let mut left = msecs_to_jiffies(req.timeout_ms);
    let mut guard = ctx.done_lock.lock();
    loop {
        if ctx.work_done.load(Relaxed) >= req.target {
            return Ok(());
        }
        if left == 0 {
            return Err(ETIMEDOUT);
        }
        if ctx.dev.is_gone() {
            return Err(ENODEV);
        }
        match ctx.done_cv.wait_interruptible_timeout(&mut guard, left) {
            CondVarTimeoutResult::Timeout => left = 0,
            CondVarTimeoutResult::Woken { jiffies } => left = jiffies,
            CondVarTimeoutResult::Signal { .. } => return Err(EINTR),
        }
    }
}
