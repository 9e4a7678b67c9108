// SPDX-License-Identifier: GPL-2.0
//! The ioctl interface of `/dev/mm_mirror_test`: one definition, included with `#[path]` by the
//! kernel module (`mm_mirror_test/`) and by its user-space driver (`mm-mirror-test/`).
//!
//! Every structure is `#[repr(C)]`, made of `u32`/`u64` only, with explicit padding, so that
//! the layout is the same for both and any byte pattern is a valid value.

#![allow(dead_code, unreachable_pub)]

/// The ioctl "type" byte of the device.
pub const IOC_TYPE: u32 = 0xe7;

const IOC_NONE: u32 = 0;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// Linux's `_IOC()` encoding (x86): direction, size, type, number.
const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | (IOC_TYPE << 8) | nr
}

/// Subscribe a notifier over `[addr, addr + len)` of the caller's address space (one per open
/// file; `EBUSY` if there is one already). Also allocates the toy device table.
pub const REGISTER: u32 = ioc(IOC_WRITE, 1, core::mem::size_of::<Register>());
/// Drop the notifier (and the read sequence).
pub const UNREGISTER: u32 = ioc(IOC_NONE, 2, 0);
/// Fault (or snapshot) a sub-range through hmm, program the toy device table with the present
/// pages, and report per-page results.
pub const FAULT: u32 = ioc(IOC_READ | IOC_WRITE, 3, core::mem::size_of::<Fault>());
/// Copy the invalidation log out and empty it.
pub const READ_LOG: u32 = ioc(IOC_READ | IOC_WRITE, 4, core::mem::size_of::<ReadLog>());
/// Begin a read sequence and keep it in the file.
pub const SEQ_BEGIN: u32 = ioc(IOC_NONE, 5, 0);
/// Check (and consume) the kept read sequence under the notifier's lock.
pub const SEQ_CHECK: u32 = ioc(IOC_READ, 6, core::mem::size_of::<SeqCheck>());
/// Count the valid entries of the toy device table.
pub const TABLE: u32 = ioc(IOC_READ, 7, core::mem::size_of::<Table>());

/// Sleep (uninterruptibly, like a driver waiting for its device) inside the ioctl, optionally
/// holding the notifier's lock: lets a test keep an OOM victim's address space alive until the
/// OOM reaper runs, and make the reaper's non-blocking invalidation meet a held lock.
pub const STALL: u32 = ioc(IOC_WRITE, 8, core::mem::size_of::<Stall>());

/// Longest `STALL`.
pub const MAX_STALL_MS: u32 = 10_000;
/// Largest registration: bounds the toy device table (one `u64` per page).
pub const MAX_REGISTER_LEN: u64 = 64 << 20;
/// Capacity of the invalidation log; older entries are kept, newer ones counted as dropped.
pub const LOG_CAPACITY: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Register {
    pub addr: u64,
    pub len: u64,
}

/// `Fault::access` values.
pub const ACCESS_SNAPSHOT: u32 = 0;
pub const ACCESS_READ: u32 = 1;
pub const ACCESS_WRITE: u32 = 2;
/// Or-ed into `Fault::access`: fault with `Range::fault_unlocked` (the mmap lock is taken, and
/// the read sequence begun, inside hmm) instead of `Range::fault` under the driver's mmap lock.
pub const ACCESS_UNLOCKED: u32 = 1 << 8;

/// Bits of the per-page result bytes written to `Fault::pages`.
pub const PAGE_VALID: u8 = 1 << 0;
pub const PAGE_WRITE: u8 = 1 << 1;
pub const PAGE_ERROR: u8 = 1 << 2;
/// The CPU mapping order (`hmm_pfn_to_map_order`) is in the top five bits.
pub const PAGE_ORDER_SHIFT: u32 = 3;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Fault {
    /// In: the sub-range, page aligned, inside the registration.
    pub addr: u64,
    pub len: u64,
    /// In: `ACCESS_*`.
    pub access: u32,
    /// Out: how many times the read sequence had to be restarted.
    pub retries: u32,
    /// In: a user buffer of `len / PAGE_SIZE` bytes for the per-page results, or 0.
    pub pages: u64,
    /// Out: pages present, present and writable, in a huge (order > 0) mapping.
    pub present: u64,
    pub writable: u64,
    pub huge: u64,
}

/// `LogEntry::event` values (C `enum mmu_notifier_event`; unknown ones are `EVENT_OTHER + n`).
pub const EVENT_UNMAP: u32 = 0;
pub const EVENT_CLEAR: u32 = 1;
pub const EVENT_PROTECTION_VMA: u32 = 2;
pub const EVENT_PROTECTION_PAGE: u32 = 3;
pub const EVENT_SOFT_DIRTY: u32 = 4;
pub const EVENT_RELEASE: u32 = 5;
pub const EVENT_MIGRATE: u32 = 6;
pub const EVENT_EXCLUSIVE: u32 = 7;
pub const EVENT_OTHER: u32 = 0x100;

/// `LogEntry::flags` bits.
pub const LOG_BLOCKABLE: u32 = 1 << 0;
/// The second pass (`invalidate_finish`) ran for this invalidation.
pub const LOG_FINISHED: u32 = 1 << 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct LogEntry {
    pub event: u32,
    pub flags: u32,
    /// The invalidated range as the core passed it (not clamped to the registration).
    pub start: u64,
    pub end: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadLog {
    /// In: a user buffer of `max` `LogEntry`s.
    pub entries: u64,
    pub max: u32,
    /// Out: entries written.
    pub count: u32,
    /// Out: invalidations not logged because the log was full.
    pub dropped: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SeqCheck {
    /// Out: 1 if an invalidation collided with the kept read sequence, else 0.
    pub stale: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Table {
    /// Out: valid entries of the toy device table.
    pub valid: u64,
    /// Out: its size in pages.
    pub pages: u64,
    /// Out: non-blockable invalidations that found the lock taken and returned "would block".
    pub would_block: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Stall {
    /// In: milliseconds, at most `MAX_STALL_MS`.
    pub ms: u32,
    /// In: 1 to hold the notifier's lock while sleeping.
    pub hold_lock: u32,
}
