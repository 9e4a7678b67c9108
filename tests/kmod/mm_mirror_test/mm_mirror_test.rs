// SPDX-License-Identifier: GPL-2.0
//! `mm_mirror_test`: a software "device" that mirrors a range of a process' address space
//! through the safe `kernel::mm::{mmu_notifier, hmm}` abstractions only, so that a user program
//! (`tests/kmod/mm-mirror-test`) can check them against real munmap, madvise, swap-out, fork and
//! exit.
//!
//! Each open file of `/dev/mm_mirror_test` may register one range. The "device" is a toy
//! translation table (one physical address per page) behind the notifier's lock, plus a log of
//! the invalidations the notifier saw. The ioctl interface is `../mm_mirror_abi.rs`.

use kernel::{
    fs::File,
    ioctl::_IOC_SIZE,
    miscdevice::{MiscDevice, MiscDeviceOptions, MiscDeviceRegistration},
    mm::{
        hmm::{Access, FaultError, Range},
        mmu_notifier::{
            Event, IntervalNotifier, IntervalNotifierOps, Invalidated, Invalidation, ReadSeq,
            WouldBlock,
        },
    },
    new_mutex,
    page::PAGE_SIZE,
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        lock::mutex::MutexBackend,
        Mutex,
    },
    time::{delay::fsleep, msecs_to_jiffies, Delta},
    transmute::{AsBytes, FromBytes},
    uaccess::{UserPtr, UserSlice},
};

#[path = "../mm_mirror_abi.rs"]
mod abi;

module! {
    type: MmMirrorTestModule,
    name: "mm_mirror_test",
    authors: ["mnic developers"],
    description: "Test device for the Rust mmu interval notifier and hmm abstractions",
    license: "GPL",
}

// SAFETY: The ABI structures are `#[repr(C)]`, made of integers only, without implicit padding:
// every byte pattern is a valid value and every byte is initialised.
unsafe impl FromBytes for abi::Register {}
// SAFETY: As above.
unsafe impl FromBytes for abi::Fault {}
// SAFETY: As above.
unsafe impl AsBytes for abi::Fault {}
// SAFETY: As above.
unsafe impl FromBytes for abi::ReadLog {}
// SAFETY: As above.
unsafe impl AsBytes for abi::ReadLog {}
// SAFETY: As above.
unsafe impl AsBytes for abi::LogEntry {}
// SAFETY: As above.
unsafe impl AsBytes for abi::SeqCheck {}
// SAFETY: As above.
unsafe impl AsBytes for abi::Table {}
// SAFETY: As above.
unsafe impl FromBytes for abi::Stall {}

/// How many times a fault restarts its read sequence before giving up with `EBUSY`: an
/// invalidation storm must not keep an ioctl in the kernel forever.
const MAX_FAULT_RETRIES: u32 = 1000;

#[pin_data]
struct MmMirrorTestModule {
    #[pin]
    _misc: MiscDeviceRegistration<MirrorFile>,
}

impl kernel::InPlaceModule for MmMirrorTestModule {
    fn init(_module: &'static ThisModule) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            _misc <- MiscDeviceRegistration::register(MiscDeviceOptions {
                name: c"mm_mirror_test",
            }),
        })
    }
}

/// The state of the toy device, protected by the notifier's user lock.
///
/// Nothing here is allocated while the lock is held: invalidations may run in reclaim.
struct Mirror {
    /// One physical address per page of the registration, 0 when not mapped.
    table: KVec<u64>,
    log: [abi::LogEntry; abi::LOG_CAPACITY],
    log_len: usize,
    dropped: u64,
}

impl Mirror {
    /// Clears the table entries of `[start, end)`, a part of the registration starting at `base`.
    fn clear(&mut self, base: usize, start: usize, end: usize) {
        let first = (start - base) / PAGE_SIZE;
        let last = (end - base).div_ceil(PAGE_SIZE);
        for entry in self.table.iter_mut().take(last).skip(first) {
            *entry = 0;
        }
    }

    /// Appends to the log, returning the index of the entry.
    fn record(&mut self, entry: abi::LogEntry) -> Option<usize> {
        match self.log.get_mut(self.log_len) {
            Some(slot) => {
                *slot = entry;
                self.log_len += 1;
                Some(self.log_len - 1)
            }
            None => {
                self.dropped += 1;
                None
            }
        }
    }
}

fn event_code(event: Event) -> u32 {
    match event {
        Event::Unmap => abi::EVENT_UNMAP,
        Event::Clear => abi::EVENT_CLEAR,
        Event::ProtectionVma => abi::EVENT_PROTECTION_VMA,
        Event::ProtectionPage => abi::EVENT_PROTECTION_PAGE,
        Event::SoftDirty => abi::EVENT_SOFT_DIRTY,
        Event::Release => abi::EVENT_RELEASE,
        Event::Migrate => abi::EVENT_MIGRATE,
        Event::Exclusive => abi::EVENT_EXCLUSIVE,
        Event::Other(n) => abi::EVENT_OTHER.saturating_add(n),
    }
}

/// The notifier's data: the toy device.
#[pin_data]
struct Region {
    #[pin]
    mirror: Mutex<Mirror>,
    /// Non-blockable invalidations that found the lock taken (outside the lock, for that reason).
    would_block: Atomic<u64>,
}

impl IntervalNotifierOps for Region {
    type Locked = Mirror;
    type Backend = MutexBackend;
    /// The log index of the invalidation, marked finished by the second pass.
    type Finish = usize;

    fn user_lock(&self) -> &Mutex<Mirror> {
        &self.mirror
    }

    fn invalidate<'a>(
        &'a self,
        inv: Invalidation<'a, Self>,
    ) -> Result<Invalidated<'a, Self>, WouldBlock<'a>> {
        let mut mirror = match inv.lock() {
            Ok(mirror) => mirror,
            Err(would_block) => {
                self.would_block.add(1, Relaxed);
                return Err(would_block);
            }
        };
        let (base, _) = inv.interval();
        let (start, end) = inv.clamped();
        mirror.clear(base, start, end);
        let blockable = inv.is_blockable();
        let index = mirror.record(abi::LogEntry {
            event: event_code(inv.event()),
            flags: if blockable { abi::LOG_BLOCKABLE } else { 0 },
            start: inv.start() as u64,
            end: inv.end() as u64,
        });
        // Exercise the second pass whenever it is allowed to take the lock (it sleeps).
        match index {
            Some(index) if blockable => Ok(mirror.finish_later(index)),
            _ => Ok(mirror.done()),
        }
    }

    fn invalidate_finish(&self, index: usize) {
        if let Some(entry) = self.mirror.lock().log.get_mut(index) {
            entry.flags |= abi::LOG_FINISHED;
        }
    }
}

/// Per open file.
struct FileState {
    region: Option<Pin<KBox<IntervalNotifier<Region>>>>,
    /// The read sequence kept between `SEQ_BEGIN` and `SEQ_CHECK`.
    seq: Option<ReadSeq>,
}

#[pin_data]
struct MirrorFile {
    #[pin]
    state: Mutex<FileState>,
}

#[vtable]
impl MiscDevice for MirrorFile {
    type Ptr = Pin<KBox<Self>>;

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<Pin<KBox<Self>>> {
        KBox::try_pin_init(
            try_pin_init!(MirrorFile {
                state <- new_mutex!(FileState { region: None, seq: None }),
            }),
            GFP_KERNEL,
        )
    }

    fn ioctl(me: Pin<&MirrorFile>, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        let user = UserSlice::new(UserPtr::from_addr(arg), _IOC_SIZE(cmd));
        let mut state = me.state.lock();
        match cmd {
            abi::REGISTER => register(&mut state, user.reader().read()?)?,
            abi::UNREGISTER => {
                state.seq = None;
                state.region = None;
            }
            abi::FAULT => {
                let (mut reader, mut writer) = user.reader_writer();
                let mut req: abi::Fault = reader.read()?;
                fault(&state, &mut req)?;
                writer.write(&req)?;
            }
            abi::READ_LOG => {
                let (mut reader, mut writer) = user.reader_writer();
                let mut req: abi::ReadLog = reader.read()?;
                read_log(&state, &mut req)?;
                writer.write(&req)?;
            }
            abi::SEQ_BEGIN => {
                let region = state.region.as_ref().ok_or(ENODEV)?;
                let seq = region.read_begin();
                state.seq = Some(seq);
            }
            abi::SEQ_CHECK => {
                let seq = state.seq.take().ok_or(EINVAL)?;
                let region = state.region.as_ref().ok_or(ENODEV)?;
                let stale = {
                    let mirror = region.user_lock().lock();
                    region.read_retry(seq, &mirror).is_err()
                };
                user.writer().write(&abi::SeqCheck {
                    stale: stale.into(),
                    _pad: 0,
                })?;
            }
            abi::TABLE => {
                let region = state.region.as_ref().ok_or(ENODEV)?;
                let table = {
                    let mirror = region.user_lock().lock();
                    abi::Table {
                        valid: mirror.table.iter().filter(|e| **e != 0).count() as u64,
                        pages: mirror.table.len() as u64,
                        would_block: region.would_block.load(Relaxed),
                    }
                };
                user.writer().write(&table)?;
            }
            abi::STALL => {
                let req: abi::Stall = user.reader().read()?;
                let region = state.region.as_ref().ok_or(ENODEV)?;
                let ms = req.ms.min(abi::MAX_STALL_MS);
                let _held = (req.hold_lock != 0).then(|| region.user_lock().lock());
                fsleep(Delta::from_millis(ms.into()));
            }
            _ => return Err(ENOTTY),
        }
        Ok(0)
    }
}

fn register(state: &mut FileState, req: abi::Register) -> Result {
    if state.region.is_some() {
        return Err(EBUSY);
    }
    let (addr, len) = (req.addr as usize, req.len as usize);
    if req.len == 0
        || req.len > abi::MAX_REGISTER_LEN
        || addr % PAGE_SIZE != 0
        || len % PAGE_SIZE != 0
        || addr.checked_add(len).is_none()
    {
        return Err(EINVAL);
    }
    let mut table = KVec::new();
    table.resize(len / PAGE_SIZE, 0u64, GFP_KERNEL)?;
    let task = current!();
    let mm = task.mm().ok_or(EINVAL)?;
    let region = KBox::pin_init(
        IntervalNotifier::new(
            mm,
            addr,
            len,
            pin_init!(Region {
                mirror <- new_mutex!(Mirror {
                    table,
                    log: [abi::LogEntry::default(); abi::LOG_CAPACITY],
                    log_len: 0,
                    dropped: 0,
                }),
                would_block: Atomic::new(0),
            }),
        ),
        GFP_KERNEL,
    )?;
    state.seq = None;
    state.region = Some(region);
    Ok(())
}

/// The driver fault path: read sequence, hmm fault under the mmap lock, program the table under
/// the notifier lock if the sequence is still current, else start over.
fn fault(state: &FileState, req: &mut abi::Fault) -> Result {
    let region = state.region.as_ref().ok_or(ENODEV)?;
    let unlocked = req.access & abi::ACCESS_UNLOCKED != 0;
    let access = match req.access & !abi::ACCESS_UNLOCKED {
        abi::ACCESS_SNAPSHOT => Access::Snapshot,
        abi::ACCESS_READ => Access::Read,
        abi::ACCESS_WRITE => Access::Write,
        _ => return Err(EINVAL),
    };
    let start = usize::try_from(req.addr)?;
    let end = start.checked_add(usize::try_from(req.len)?).ok_or(EINVAL)?;
    // Everything allocated here, before the notifier lock is taken.
    let mut range = Range::new(region, start, end, access)?;
    let mut pages = KVec::new();
    pages.resize(range.npages(), 0u8, GFP_KERNEL)?;
    // The mm of the caller; `Range::fault` refuses it unless it is the registered one.
    let task = current!();
    let mm = task.mm().ok_or(EINVAL)?;

    req.retries = 0;
    loop {
        if req.retries > MAX_FAULT_RETRIES {
            return Err(EBUSY);
        }
        let faulted = if unlocked {
            // hmm begins the read sequence itself and returns it.
            range.fault_unlocked(mm, Some(msecs_to_jiffies(1000)))
        } else {
            let seq = region.read_begin();
            let mmap = mm.mmap_read_lock();
            range.fault(&seq, &mmap).map(|_| seq)
        };
        let seq = match faulted {
            Ok(seq) => seq,
            Err(FaultError::Busy) => {
                req.retries += 1;
                continue;
            }
            Err(FaultError::Error(e)) => return Err(e),
        };
        let mut mirror = region.user_lock().lock();
        let Ok(current) = region.read_retry(seq, &mirror) else {
            req.retries += 1;
            continue;
        };
        let (mut present, mut writable, mut huge) = (0, 0, 0);
        let base = region.start();
        for ((va, pfn), out) in range.pfns_checked(&current)?.zip(pages.iter_mut()) {
            let Some(pa) = pfn.phys_addr() else {
                *out = if pfn.is_error() { abi::PAGE_ERROR } else { 0 };
                continue;
            };
            let order = pfn.map_order().unwrap_or(0);
            *out = abi::PAGE_VALID | ((order as u8) << abi::PAGE_ORDER_SHIFT);
            present += 1;
            if pfn.is_writable() {
                *out |= abi::PAGE_WRITE;
                writable += 1;
            }
            if order > 0 {
                huge += 1;
            }
            if let Some(entry) = mirror.table.get_mut((va - base) / PAGE_SIZE) {
                *entry = pa;
            }
        }
        (req.present, req.writable, req.huge) = (present, writable, huge);
        break;
    }
    // Copying to user memory can fault and reclaim: only after the notifier lock is dropped.
    if req.pages != 0 {
        let out = UserSlice::new(UserPtr::from_addr(usize::try_from(req.pages)?), pages.len());
        out.writer().write_slice(&pages)?;
    }
    Ok(())
}

fn read_log(state: &FileState, req: &mut abi::ReadLog) -> Result {
    let region = state.region.as_ref().ok_or(ENODEV)?;
    let max = (req.max as usize).min(abi::LOG_CAPACITY);
    let mut entries = KVec::with_capacity(max, GFP_KERNEL)?;
    {
        let mut mirror = region.user_lock().lock();
        let count = mirror.log_len.min(max);
        for entry in mirror.log.iter().take(count) {
            // Cannot fail: the capacity was reserved before taking the lock.
            entries.push_within_capacity(*entry).map_err(|_| ENOMEM)?;
        }
        req.dropped = mirror.dropped + (mirror.log_len - count) as u64;
        mirror.log_len = 0;
        mirror.dropped = 0;
    }
    req.count = entries.len() as u32;
    let bytes = entries.len() * core::mem::size_of::<abi::LogEntry>();
    let mut writer =
        UserSlice::new(UserPtr::from_addr(usize::try_from(req.entries)?), bytes).writer();
    for entry in entries.iter() {
        writer.write(entry)?;
    }
    Ok(())
}
