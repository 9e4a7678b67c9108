// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The one definition of mnic's hardware interface and user ABI (docs/spec.md).
//!
//! This file is compiled three ways: as the `mnic-abi` crate for the device model and
//! user space (`abi/src/lib.rs` includes it), and as a module of the kernel driver
//! (`#[path]`). It therefore uses only `core` and zerocopy 0.8 (which the 7.3 kernel
//! vendors and hands to every module with its derive crate), has no inner attributes,
//! and no `std`.

use zerocopy_derive::{FromBytes, Immutable, IntoBytes, KnownLayout};

// ------------------------------------------------------------------ PCI identity (spec §2)

/// PCI vendor id of the mnic function.
pub const MNIC_VENDOR_ID: u16 = 0x1234;
/// PCI device id of the mnic function ("MN").
pub const MNIC_DEVICE_ID: u16 = 0x4d4e;
/// PCI subsystem vendor id.
pub const MNIC_SUBSYS_VENDOR_ID: u16 = 0x1234;
/// PCI subsystem id.
pub const MNIC_SUBSYS_ID: u16 = 0x0001;
/// PCI class code (network controller, other), 24 bits.
pub const MNIC_CLASS: u32 = 0x02_80_00;
/// PCI revision id.
pub const MNIC_REVISION: u8 = 0x01;

/// BAR index of the register file.
pub const BAR_REGS: u32 = 0;
/// Size of the register BAR.
pub const BAR_REGS_SIZE: u64 = 0x1000;
/// BAR index of the per-context doorbell pages.
pub const BAR_DOORBELLS: u32 = 2;
/// Size of one doorbell page.
pub const DOORBELL_PAGE_SIZE: u64 = 0x1000;
/// BAR index that holds the MSI-X table and PBA.
pub const BAR_MSIX: u32 = 4;
/// Size of the MSI-X BAR.
pub const BAR_MSIX_SIZE: u64 = 0x1000;
/// Offset of the MSI-X table in its BAR.
pub const MSIX_TABLE_OFFSET: u32 = 0;
/// Offset of the MSI-X pending-bit array in its BAR.
pub const MSIX_PBA_OFFSET: u32 = 0x800;
/// Number of MSI-X vectors.
pub const MSIX_VECTORS: u16 = 2;
/// MSI-X vector signalled when events are written.
pub const VECTOR_EVENT: u16 = 0;
/// MSI-X vector signalled when a SYNC with `CMD_FLAG_IRQ` completes.
pub const VECTOR_CMD_DONE: u16 = 1;

/// Number of hardware contexts.
pub const NUM_CONTEXTS: u32 = 256;
/// Size of the doorbell BAR: one page per context.
pub const BAR_DOORBELLS_SIZE: u64 = NUM_CONTEXTS as u64 * DOORBELL_PAGE_SIZE;

// ------------------------------------------------------------------ BAR0 registers (spec §3)

/// Register offsets in BAR0.
pub mod reg {
    /// "MNIC" identification.
    pub const ID: u32 = 0x000;
    /// major << 16 | minor.
    pub const VERSION: u32 = 0x004;
    /// Capability bits (`caps::*`).
    pub const CAPS: u32 = 0x008;
    /// Number of contexts.
    pub const NUM_CONTEXTS: u32 = 0x00c;
    /// `control::*` bits.
    pub const CONTROL: u32 = 0x010;
    /// `status::*` bits.
    pub const STATUS: u32 = 0x014;
    /// First error code since last clear; any write clears.
    pub const ERROR_CODE: u32 = 0x018;
    /// Errors since reset.
    pub const ERROR_COUNT: u32 = 0x01c;
    /// Context table GPA, low half.
    pub const CTX_TABLE_LO: u32 = 0x020;
    /// Context table GPA, high half.
    pub const CTX_TABLE_HI: u32 = 0x024;
    /// Command ring GPA, low half.
    pub const CMDQ_BASE_LO: u32 = 0x030;
    /// Command ring GPA, high half.
    pub const CMDQ_BASE_HI: u32 = 0x034;
    /// log2 of command ring entries.
    pub const CMDQ_SIZE_LOG2: u32 = 0x038;
    /// Command ring producer index (doorbell).
    pub const CMDQ_TAIL: u32 = 0x03c;
    /// Command ring consumer index.
    pub const CMDQ_HEAD: u32 = 0x040;
    /// Event ring GPA, low half.
    pub const EVQ_BASE_LO: u32 = 0x050;
    /// Event ring GPA, high half.
    pub const EVQ_BASE_HI: u32 = 0x054;
    /// log2 of event ring entries.
    pub const EVQ_SIZE_LOG2: u32 = 0x058;
    /// Event ring consumer index (written by the driver).
    pub const EVQ_HEAD: u32 = 0x05c;
    /// Event ring producer index.
    pub const EVQ_TAIL: u32 = 0x060;
    /// Interrupt cause, write 1 to clear (`irq::*`).
    pub const IRQ_STATUS: u32 = 0x070;
    /// Interrupt mask (`irq::*`).
    pub const IRQ_MASK: u32 = 0x074;
    /// Oracle (spec §8a): context index the next `ORACLE_OP` is about.
    pub const ORACLE_CTX: u32 = 0x080;
    /// Oracle: the generation `ORACLE_OP_ARM` handed out (read), or the one an
    /// `ORACLE_OP_INVALIDATE` claims (written).
    pub const ORACLE_GEN: u32 = 0x084;
    /// Oracle: first VA of the range, low half.
    pub const ORACLE_START_LO: u32 = 0x088;
    /// Oracle: first VA of the range, high half.
    pub const ORACLE_START_HI: u32 = 0x08c;
    /// Oracle: end VA (exclusive) of the range, low half.
    pub const ORACLE_END_LO: u32 = 0x090;
    /// Oracle: end VA (exclusive) of the range, high half.
    pub const ORACLE_END_HI: u32 = 0x094;
    /// Oracle: writing an `oracle_op::*` value carries it out (reads 0).
    pub const ORACLE_OP: u32 = 0x098;
    /// Fault injection: the next DMA access of the engine stalls this many milliseconds
    /// after its translation and before it touches memory (at most `STALL_MS_MAX`; reads
    /// back what is still armed).
    pub const DEBUG_STALL_MS: u32 = 0x0a0;
    /// GPA of the command queue's shadow page (spec §4a), low half; 0 = none.
    pub const SHADOW_BASE_LO: u32 = 0x0a8;
    /// GPA of the command queue's shadow page, high half.
    pub const SHADOW_BASE_HI: u32 = 0x0ac;
    /// The device's spin budget (spec §4a): `spin::OVERRIDE` and a value in µs; 0 (the
    /// reset value) = the device's own default.
    pub const SPIN_US: u32 = 0x0b0;
    /// Scratch: holds whatever is written, does nothing with it (reset clears it). For a
    /// driver to check that its register writes reach the device.
    pub const SCRATCH: u32 = 0x0b4;
    /// This device's fabric node id (spec §14), or `fabric::NODE_NONE` (0xffff) when the
    /// device is not a node of a fabric. Read only.
    pub const FABRIC_NODE: u32 = 0x0b8;
    /// First 64-bit counter; counter `i` is at `COUNTERS + 8 * i`.
    pub const COUNTERS: u32 = 0x100;
    /// Offset of 64-bit counter `i`.
    pub const fn counter(i: u32) -> u32 {
        COUNTERS + 8 * i
    }
    /// First 64-bit fabric counter (spec §10, `fabric_counter`); fabric counter `i` is at
    /// `FABRIC_COUNTERS + 8 * i`. They read 0 on a device without `caps::FABRIC`.
    pub const FABRIC_COUNTERS: u32 = 0x200;
    /// Offset of 64-bit fabric counter `i`.
    pub const fn fabric_counter(i: u32) -> u32 {
        FABRIC_COUNTERS + 8 * i
    }
    /// Offset of the work-queue tail register inside a context's doorbell page (BAR2).
    pub const DB_WQ_TAIL: u32 = 0x000;
}

/// Value of `ID`.
pub const MNIC_ID_VALUE: u32 = 0x4d4e_4943;
/// Value of `VERSION`: 1.0.
pub const MNIC_VERSION_VALUE: u32 = 0x0001_0000;

/// `CAPS` bits.
pub mod caps {
    /// 2 MiB leaves.
    pub const HUGE_2M: u32 = 1 << 0;
    /// Traffic generator work items.
    pub const TRAFFIC_GEN: u32 = 1 << 1;
    /// Stale-access checker.
    pub const STALE_CHECK: u32 = 1 << 2;
    /// Per-context doorbells in BAR2.
    pub const DOORBELL_BAR: u32 = 1 << 3;
    /// The stale-access oracle registers and `DEBUG_STALL_MS` (spec §8a).
    pub const ORACLE: u32 = 1 << 4;
    /// Shadow doorbells and the polling device (spec §4a).
    pub const SHADOW: u32 = 1 << 5;
    /// Remote memory access over a fabric (spec §14): `PUT`/`GET` work items, the
    /// `KEY_SET`/`KEY_CLEAR` commands and the `FABRIC_NODE` register. Set only when the
    /// device is a node of a fabric.
    pub const FABRIC: u32 = 1 << 6;
    /// Everything this version implements without a fabric.
    pub const ALL: u32 = HUGE_2M | TRAFFIC_GEN | STALE_CHECK | DOORBELL_BAR | ORACLE | SHADOW;
}

/// `CONTROL` bits.
pub mod control {
    /// Enable (0→1 latches and validates the ring and table registers).
    pub const ENABLE: u32 = 1 << 0;
    /// Reset everything (self-clearing).
    pub const RESET: u32 = 1 << 1;
    /// A stale access halts the device.
    pub const STRICT: u32 = 1 << 2;
}

/// `ORACLE_OP` values (spec §8a).
pub mod oracle_op {
    /// Arm the oracle for `ORACLE_CTX`: a new generation is handed out in `ORACLE_GEN`.
    pub const ARM: u32 = 1;
    /// The kernel is about to change `[ORACLE_START, ORACLE_END)` of the address space of
    /// `ORACLE_CTX` (armed with generation `ORACLE_GEN`): every translation the device took
    /// before this moment for that range is dead.
    pub const INVALIDATE: u32 = 2;
    /// Forget `ORACLE_CTX` (its generation `ORACLE_GEN`).
    pub const DISARM: u32 = 3;
}

/// Longest `DEBUG_STALL_MS` the device accepts (larger values are clamped).
pub const STALL_MS_MAX: u32 = 60_000;

/// `STATUS` bits.
pub mod status {
    /// The device is enabled.
    pub const ENABLED: u32 = 1 << 0;
    /// The device halted on a fatal error; only reset recovers.
    pub const HALTED: u32 = 1 << 1;
}

/// `IRQ_STATUS` / `IRQ_MASK` bits.
pub mod irq {
    /// Events were written.
    pub const EVENT: u32 = 1 << 0;
    /// A command with `CMD_FLAG_IRQ` completed.
    pub const CMD_DONE: u32 = 1 << 1;
    /// An error was recorded.
    pub const ERROR: u32 = 1 << 2;
}

/// Smallest accepted log2 ring size (commands, events, work, completions).
pub const RING_LOG2_MIN: u8 = 4;
/// Largest accepted log2 ring size.
pub const RING_LOG2_MAX: u8 = 12;

/// Device error codes (`ERROR_CODE`, `ERROR` events; spec §9).
pub mod error {
    /// Invalid ring or table base/size at enable.
    pub const BAD_CONFIG: u32 = 1;
    /// Unknown opcode or malformed command.
    pub const BAD_COMMAND: u32 = 2;
    /// Context index out of range or invalid context entry.
    pub const BAD_CONTEXT: u32 = 3;
    /// Malformed translation-table entry.
    pub const TABLE_ERROR: u32 = 4;
    /// An address outside guest RAM.
    pub const ADDRESS_ERROR: u32 = 5;
    /// RESUME/ABORT of a fault that is not parked.
    pub const BAD_FAULT_ID: u32 = 6;
    /// Strict mode: the coherence invariant was violated.
    pub const STALE_ACCESS: u32 = 7;
    /// A work descriptor was refused.
    pub const BAD_DESCRIPTOR: u32 = 8;
    /// Strict mode: the oracle (spec §8a) saw the invariant violated.
    pub const ORACLE_VIOLATION: u32 = 9;
}

/// Device counters (spec §10): index into `COUNTERS`.
pub mod counter {
    /// DMA operations (page-sized or smaller pieces).
    pub const DMA_OPS: u32 = 0;
    /// Bytes moved by DMA.
    pub const DMA_BYTES: u32 = 1;
    /// Translations served by the TLB.
    pub const TLB_HITS: u32 = 2;
    /// Translations that missed the TLB.
    pub const TLB_MISSES: u32 = 3;
    /// Table walks.
    pub const WALKS: u32 = 4;
    /// Fault events raised.
    pub const FAULTS: u32 = 5;
    /// RESUME commands accepted.
    pub const RESUMES: u32 = 6;
    /// ABORT commands accepted.
    pub const ABORTS: u32 = 7;
    /// Invalidation commands executed.
    pub const INVALIDATIONS: u32 = 8;
    /// SYNC commands completed.
    pub const SYNCS: u32 = 9;
    /// Accesses through a translation fenced off by a completed SYNC.
    pub const STALE_ACCESSES: u32 = 10;
    /// Device errors.
    pub const ERRORS: u32 = 11;
    /// Work items completed.
    pub const WORK_COMPLETED: u32 = 12;
    /// Valid TLB entries now.
    pub const TLB_ENTRIES: u32 = 13;
    /// Events dropped because the event queue stayed full.
    pub const EVENTS_DROPPED: u32 = 14;
    /// Bad register accesses.
    pub const BAD_MMIO: u32 = 15;
    /// Doorbells rung on disabled contexts.
    pub const BAD_DOORBELL: u32 = 16;
    /// Accesses too old for the stale checker's window.
    pub const STALE_UNCHECKED: u32 = 17;
    /// Traffic-generator DMA operations.
    pub const TRAFFIC_OPS: u32 = 18;
    /// Commands executed.
    pub const COMMANDS: u32 = 19;
    /// Oracle invalidations accepted (spec §8a).
    pub const ORACLE_INVALIDATIONS: u32 = 20;
    /// Accesses, or table entries, that the oracle found to outlive an invalidation.
    pub const ORACLE_VIOLATIONS: u32 = 21;
    /// DMA refused because bus mastering was off (PCI command register).
    pub const DMA_REFUSED: u32 = 22;
    /// Doorbell register writes (`CMDQ_TAIL` and `WQ_TAIL`), spec §4a.
    pub const DOORBELLS: u32 = 23;
    /// Queue tails taken from shadow pages.
    pub const SHADOW_TAILS: u32 = 24;
    /// Times the data thread went to sleep.
    pub const SLEEPS: u32 = 25;
    /// CPU time the device process has used, in microseconds (what polling costs).
    pub const DEVICE_CPU_US: u32 = 26;
    /// Accesses refused because their DMA address is in no DMA map (or the access writes
    /// a read-only map), spec §1b.
    pub const DMA_UNMAPPED: u32 = 27;
    /// Fabric datagrams sent: first sends, retransmissions, ACKs and NAKs (spec §14).
    pub const FABRIC_TX: u32 = 28;
    /// Fabric datagrams received and accepted (duplicates and stale ones included).
    pub const FABRIC_RX: u32 = 29;
    /// Fabric retransmissions.
    pub const FABRIC_RETRANSMITS: u32 = 30;
    /// Fabric datagrams refused as malformed, forged or from an unknown peer.
    pub const FABRIC_BAD_PACKETS: u32 = 31;
    /// Number of defined counters.
    pub const COUNT: u32 = 32;
    /// Counter register slots in BAR0.
    pub const SLOTS: u32 = 32;
    /// Names, indexed by counter number (for tools and the stats socket).
    pub const NAMES: [&str; COUNT as usize] = [
        "dma_ops",
        "dma_bytes",
        "tlb_hits",
        "tlb_misses",
        "walks",
        "faults",
        "resumes",
        "aborts",
        "invalidations",
        "syncs",
        "stale_accesses",
        "errors",
        "work_completed",
        "tlb_entries",
        "events_dropped",
        "bad_mmio",
        "bad_doorbell",
        "stale_unchecked",
        "traffic_ops",
        "commands",
        "oracle_invalidations",
        "oracle_violations",
        "dma_refused",
        "doorbells",
        "shadow_tails",
        "sleeps",
        "device_cpu_us",
        "dma_unmapped",
        "fabric_tx",
        "fabric_rx",
        "fabric_retransmits",
        "fabric_bad_packets",
    ];
}

/// Fabric counters (spec §10, docs/fabric.md 14.10): what the device counts about `PUT`,
/// `GET`, `SEND` and `RECV`, index into `FABRIC_COUNTERS`. Statistics: a device reset does
/// not clear them.
pub mod fabric_counter {
    /// Target: `PUT` packets written (answered `REPLY OK`).
    pub const PUT_SERVED: u32 = 0;
    /// Target: `GET_REQ` packets read (answered `GET_RESP`).
    pub const GET_SERVED: u32 = 1;
    /// Target (and receiver, sender of a pull): packets refused with a `REPLY` error other
    /// than `RNR` (`NO_CONTEXT`, `BAD_KEY`, `BAD_RANGE`, `BAD_ACCESS`, `REMOTE_FAULT`).
    pub const ERRORS_SENT: u32 = 2;
    /// Target (and receiver, sender of a pull): packets answered `REPLY RNR` (a missing or
    /// read-only translation, a full unexpected queue).
    pub const RNR_SENT: u32 = 3;
    /// Target (and receiver, sender of a pull): network faults parked (FAULT events with
    /// `info` = 1 << 32 | node).
    pub const NETWORK_FAULTS: u32 = 4;
    /// Target and initiator: malformed payloads refused and not answered (short header,
    /// wrong data length, a request of 0 or more than `GET_CHUNK` bytes or across a page, a
    /// REPLY with an undefined status, a GET_RESP of the wrong length, a malformed EAGER,
    /// RTS or FIN).
    pub const REFUSED: u32 = 5;
    /// Initiator: `PUT` and `GET_REQ` packets sent (resends included).
    pub const PACKETS_SENT: u32 = 6;
    /// Initiator: packets sent again (after an `RNR`, or a GET_RESP dropped).
    pub const RESENDS: u32 = 7;
    /// Initiator: `REPLY RNR` received.
    pub const RNR_RECEIVED: u32 = 8;
    /// Initiator: answers to no packet in flight (a late answer to an item that already
    /// ended, a forged or replayed one), dropped.
    pub const LATE: u32 = 9;
    /// Initiator: `GET_RESP` data dropped because its local translation was gone.
    pub const GET_RESP_DROPPED: u32 = 10;
    /// Initiator: work items failed by the peer going away or staying silent
    /// (`PEER_GONE`).
    pub const PEER_GONE: u32 = 11;
    /// Packets the transport would not take (send queue full): the initiator sends them
    /// again later; a target's lost answer is covered by the initiator's timeout.
    pub const SEND_REFUSED: u32 = 12;
    /// Sender: `EAGER` and `RTS` packets sent (resends included).
    pub const MSG_SENT: u32 = 13;
    /// Receiver: `EAGER` messages written into a posted receive on arrival.
    pub const EAGER_MATCHED: u32 = 14;
    /// Receiver: `RTS` messages that matched a posted receive on arrival.
    pub const RTS_MATCHED: u32 = 15;
    /// Receiver: `EAGER`/`RTS` messages kept in an unexpected queue.
    pub const UNEXPECTED: u32 = 16;
    /// Receiver: `EAGER`/`RTS` answered `RNR` because the unexpected queue was full.
    pub const UNEXPECTED_FULL: u32 = 17;
    /// Receiver: RECVs that found their message in the unexpected queue when fetched.
    pub const RECV_MATCHED: u32 = 18;
    /// Sender: rendezvous pulls read and answered `GET_RESP`.
    pub const PULL_SERVED: u32 = 19;
    /// Sender: pulls answered `BAD_KEY` (no current SEND with that id to that puller, or
    /// outside its buffer).
    pub const PULL_REFUSED: u32 = 20;
    /// Receiver: `FIN` packets sent.
    pub const FIN_SENT: u32 = 21;
    /// Sender: `FIN` packets that ended a SEND.
    pub const FIN_RECEIVED: u32 = 22;
    /// Sender: well-formed `FIN`s for no SEND waiting for one (late, forged, replayed).
    pub const FIN_DROPPED: u32 = 23;
    /// Number of defined fabric counters.
    pub const COUNT: u32 = 24;
    /// Fabric counter register slots in BAR0 (those from `COUNT` on are undefined).
    pub const SLOTS: u32 = 32;
    /// Names, indexed by fabric counter number (the control socket prints them with an
    /// `rma_` prefix, as does the driver's debugfs `fabric`).
    pub const NAMES: [&str; COUNT as usize] = [
        "put_served",
        "get_served",
        "errors_sent",
        "rnr_sent",
        "network_faults",
        "refused",
        "packets_sent",
        "resends",
        "rnr_received",
        "late",
        "get_resp_dropped",
        "peer_gone",
        "send_refused",
        "msg_sent",
        "eager_matched",
        "rts_matched",
        "unexpected",
        "unexpected_full",
        "recv_matched",
        "pull_served",
        "pull_refused",
        "fin_sent",
        "fin_received",
        "fin_dropped",
    ];
    /// What the control socket and debugfs put before each name.
    pub const PREFIX: &str = "rma_";
}

// ------------------------------------------------------------------ context table (spec §5)

/// `CtxEntry::flags`: the entry is valid.
pub const CTX_FLAG_VALID: u32 = 1 << 0;

/// One context-table entry, 64 bytes.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct CtxEntry {
    /// `CTX_FLAG_*`.
    pub flags: u32,
    /// log2 of work-queue entries.
    pub wq_size_log2: u8,
    /// log2 of completion-queue entries.
    pub cq_size_log2: u8,
    /// Reserved, zero.
    pub rsvd: u16,
    /// GPA of the level-4 translation table.
    pub root: u64,
    /// VA of the work queue.
    pub wq_va: u64,
    /// VA of the completion queue.
    pub cq_va: u64,
    /// GPA of the context's shadow page (spec §4a), or 0 for none.
    pub shadow: u64,
    /// Reserved, zero.
    pub rsvd2: [u64; 3],
}

// ------------------------------------------------------------------ translation tables (spec §6)

/// Translation-table entry bits and helpers.
pub mod pte {
    /// Present.
    pub const P: u64 = 1 << 0;
    /// Writable (leaves).
    pub const W: u64 = 1 << 1;
    /// Huge: a 2 MiB leaf in an L2 entry.
    pub const H: u64 = 1 << 7;
    /// Address field mask (bits 51:12).
    pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
    /// Bits that must be zero.
    pub const RESERVED_MASK: u64 = !(ADDR_MASK | P | W | H);
    /// Entries per table.
    pub const ENTRIES: usize = 512;
    /// Number of levels.
    pub const LEVELS: u32 = 4;
    /// 4 KiB.
    pub const PAGE_SHIFT: u32 = 12;
    /// 4 KiB.
    pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
    /// 2 MiB.
    pub const HUGE_SHIFT: u32 = 21;
    /// 2 MiB.
    pub const HUGE_SIZE: u64 = 1 << HUGE_SHIFT;
    /// Highest VA + 1 (canonical lower half, 48 bits).
    pub const VA_LIMIT: u64 = 1 << 47;

    /// Index into the table at `level` (4 = root, 1 = leaf table) for `va`.
    pub const fn index(va: u64, level: u32) -> usize {
        ((va >> (PAGE_SHIFT + 9 * (level - 1))) & 0x1ff) as usize
    }
    /// A non-leaf entry pointing at the table at `table_gpa`.
    pub const fn table(table_gpa: u64) -> u64 {
        (table_gpa & ADDR_MASK) | P
    }
    /// A 4 KiB leaf.
    pub const fn leaf_4k(page_gpa: u64, writable: bool) -> u64 {
        (page_gpa & ADDR_MASK) | P | if writable { W } else { 0 }
    }
    /// A 2 MiB leaf (`page_gpa` must be 2 MiB aligned).
    pub const fn leaf_2m(page_gpa: u64, writable: bool) -> u64 {
        (page_gpa & ADDR_MASK) | P | H | if writable { W } else { 0 }
    }
}

// ------------------------------------------------------------------ command queue (spec §7)

/// Command opcodes.
pub mod cmd {
    /// Do nothing.
    pub const NOP: u8 = 0;
    /// Drop TLB entries of `ctx` over [arg0, arg0 + arg1).
    pub const INVALIDATE_RANGE: u8 = 1;
    /// Drop every TLB entry of `ctx`.
    pub const INVALIDATE_CTX: u8 = 2;
    /// Fence, then write arg1 (u64) to GPA arg0.
    pub const SYNC: u8 = 3;
    /// Retry the parked fault arg0 of `ctx`.
    pub const RESUME: u8 = 4;
    /// Fail the parked fault arg0 of `ctx` with detail arg1.
    pub const ABORT: u8 = 5;
    /// Read context-table entry `ctx` and start it.
    pub const CTX_ENABLE: u8 = 6;
    /// Stop `ctx`.
    pub const CTX_DISABLE: u8 = 7;
    /// Give `ctx` a remote key (spec §14.13): arg0 VA, arg1 length, arg2 the key in bits
    /// 31:0 and `key_access` bits in 33:32.
    pub const KEY_SET: u8 = 8;
    /// Take remote key arg0 (bits 31:0) away from `ctx`.
    pub const KEY_CLEAR: u8 = 9;
}

/// `KEY_SET` arg2 bits 33:32: what a peer may do through the key.
pub mod key_access {
    /// Peers may read (`GET`).
    pub const READ: u64 = 1 << 32;
    /// Peers may write (`PUT`).
    pub const WRITE: u64 = 1 << 33;
    /// Every defined bit above the key.
    pub const ALL: u64 = READ | WRITE;
    /// `KEY_SET` arg2 for `key` with `access` (`READ`/`WRITE` bits).
    pub const fn arg(key: u32, access: u64) -> u64 {
        (access & ALL) | key as u64
    }
}

/// Remote keys a device holds at most, over every context (spec §14.13): `KEY_SET`
/// beyond it fails with `BAD_COMMAND`.
pub const MAX_REMOTE_KEYS: u32 = 65536;

/// `Command::flags`: raise `VECTOR_CMD_DONE` when done.
pub const CMD_FLAG_IRQ: u8 = 1 << 0;

/// One command-queue entry, 32 bytes.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct Command {
    /// `cmd::*`.
    pub opcode: u8,
    /// `CMD_FLAG_*`.
    pub flags: u8,
    /// Context index.
    pub ctx: u16,
    /// Reserved, zero.
    pub rsvd: u32,
    /// First argument.
    pub arg0: u64,
    /// Second argument.
    pub arg1: u64,
    /// Third argument.
    pub arg2: u64,
}

// ------------------------------------------------------------------ event queue (spec §9)

/// Event kinds.
pub mod event {
    /// A work item needs a translation.
    pub const FAULT: u8 = 1;
    /// A device error.
    pub const ERROR: u8 = 2;
    /// A work item with `WORK_FLAG_NOTIFY` completed.
    pub const WORK_DONE: u8 = 3;
    /// `Event::flags`: phase bit.
    pub const FLAG_PHASE: u8 = 1 << 0;
    /// `Event::flags`: the faulting access was a write.
    pub const FLAG_WRITE: u8 = 1 << 1;
    /// `Event::code` of a FAULT: no present translation.
    pub const FAULT_NOT_PRESENT: u32 = 1;
    /// `Event::code` of a FAULT: translation present but not writable.
    pub const FAULT_NOT_WRITABLE: u32 = 2;
    /// `Event::ctx` when no context applies.
    pub const NO_CTX: u16 = 0xffff;
    /// `Event::info` of a FAULT: set for a network fault, raised by a packet from the
    /// fabric (spec §12 "Network faults"); bits 15:0 then hold the source node. 0 for every
    /// local fault.
    pub const FAULT_INFO_NETWORK: u64 = 1 << 32;
    /// `Event::info` of a network FAULT: the bits that hold the source node.
    pub const FAULT_INFO_NODE_MASK: u64 = 0xffff;
}

/// One event-queue entry, 32 bytes.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct Event {
    /// `event::FAULT` etc.
    pub kind: u8,
    /// `event::FLAG_*`.
    pub flags: u8,
    /// Context index or `event::NO_CTX`.
    pub ctx: u16,
    /// Error code or fault reason.
    pub code: u32,
    /// Faulting VA or offending address/value.
    pub addr: u64,
    /// Fault id.
    pub id: u64,
    /// Extra information (command sequence number).
    pub info: u64,
}

// ------------------------------------------------------------------ work and completions (spec §11)

/// Work opcodes.
pub mod work {
    /// Copy `len` bytes from `src` to `dst`.
    pub const COPY: u16 = 1;
    /// Run the traffic generator over [`src`, `src + len`).
    pub const TRAFFIC: u16 = 2;
    /// Complete without doing anything.
    pub const NOP: u16 = 3;
    /// Remote write (spec §14.13): `len` bytes from local `src` to remote `dst`.
    pub const PUT: u16 = 4;
    /// Remote read (spec §14.13): `len` bytes from remote `src` to local `dst`.
    pub const GET: u16 = 5;
    /// Tagged send (spec §11, docs/fabric.md 14.14): `len` bytes from local `src` to a
    /// context of another node, with 64-bit match bits ([`WorkDesc::send`]).
    pub const SEND: u16 = 6;
    /// Tagged receive (spec §11, docs/fabric.md 14.14): up to `len` bytes into local
    /// `dst`, from the first message whose match bits equal the receive's under its mask
    /// ([`WorkDesc::recv`]). Posted without blocking the queue; completes when a message
    /// is delivered, possibly out of work-queue order.
    pub const RECV: u16 = 7;
    /// `WorkDesc::flags`: post a `WORK_DONE` event when done.
    pub const FLAG_NOTIFY: u16 = 1 << 0;
    /// Every `WorkDesc::flags` bit the spec defines; a descriptor with any other bit set
    /// is refused.
    pub const FLAGS_KNOWN: u16 = FLAG_NOTIFY;
    /// Largest COPY length.
    pub const COPY_MAX: u32 = 64 << 20;
    /// Largest PUT, GET, SEND or RECV length.
    pub const RMA_MAX: u32 = 64 << 20;
    /// Receives a context may have posted and not completed (waiting for a message, or
    /// being delivered); the fetch of one more RECV waits until one completes.
    pub const POSTED_MAX: usize = 64;
    /// Largest TRAFFIC operation size.
    pub const TRAFFIC_OP_MAX: u32 = 65536;
    /// Largest TRAFFIC operation count.
    pub const TRAFFIC_OPS_MAX: u64 = 1 << 32;
    /// TRAFFIC pattern: sequential reads.
    pub const PATTERN_SEQ_READ: u32 = 0;
    /// TRAFFIC pattern: sequential writes.
    pub const PATTERN_SEQ_WRITE: u32 = 1;
    /// TRAFFIC pattern: random reads and writes.
    pub const PATTERN_RANDOM_RW: u32 = 2;
}

/// One work descriptor, 64 bytes.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct WorkDesc {
    /// `work::COPY` etc.
    pub opcode: u16,
    /// `work::FLAG_*`.
    pub flags: u16,
    /// Length in bytes.
    pub len: u32,
    /// Returned in the completion.
    pub tag: u64,
    /// Source VA / traffic range start.
    pub src: u64,
    /// Destination VA.
    pub dst: u64,
    /// Traffic: bytes per operation.
    pub op_size: u32,
    /// Traffic: `work::PATTERN_*`.
    pub pattern: u32,
    /// Traffic: number of operations.
    pub ops: u64,
    /// Traffic: operations per second, 0 = unthrottled.
    pub rate: u64,
    /// Traffic: pseudo-random seed.
    pub seed: u64,
}

/// Completion status codes.
pub mod completion {
    /// Success.
    pub const OK: u16 = 0;
    /// A fault was aborted by the driver; `detail` holds its errno.
    pub const FAULT_ABORTED: u16 = 1;
    /// The descriptor was refused.
    pub const BAD_DESCRIPTOR: u16 = 2;
    /// The translation table was malformed.
    pub const TABLE_ERROR: u16 = 3;
    /// The context was disabled while the item was queued.
    pub const CTX_DISABLED: u16 = 4;
    /// PUT/GET: the target has no live remote key of that value for that context.
    pub const REMOTE_BAD_KEY: u16 = 5;
    /// PUT/GET: the remote range is not inside the key's registration.
    pub const REMOTE_BAD_RANGE: u16 = 6;
    /// PUT/GET: the key does not allow the access (write for PUT, read for GET).
    pub const REMOTE_BAD_ACCESS: u16 = 7;
    /// PUT/GET: the target context is not enabled (it exited, or never existed).
    pub const REMOTE_NO_CONTEXT: u16 = 8;
    /// PUT/GET: the target's driver aborted the fault the access raised there; `detail`
    /// holds the target's errno.
    pub const REMOTE_FAULT_ABORTED: u16 = 9;
    /// PUT/GET: the target answered "not ready" (RNR) `fabric::RNR_RETRIES` times in a
    /// row for one packet.
    pub const RNR_RETRY_EXCEEDED: u16 = 10;
    /// PUT/GET: the peer stopped answering (retry budget spent), restarted, or its answers
    /// did not come within `fabric::REPLY_TIMEOUT_MS`.
    pub const PEER_GONE: u16 = 11;
    /// PUT/GET/SEND: this device is not a node of a fabric, or the node is not one of
    /// its peers.
    pub const NO_ROUTE: u16 = 12;
    /// RECV: the message was longer than the buffer; its first `len` bytes were
    /// delivered (`bytes` = `len`). The match bits and sender are in the completion as
    /// for `OK` ([`Completion::recv_bits`], [`Completion::recv_sender`]).
    pub const RECV_TRUNCATED: u16 = 13;
    /// `Completion::flags`: phase bit.
    pub const FLAG_PHASE: u16 = 1 << 0;
}

/// One completion-queue entry, 32 bytes.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct Completion {
    /// The descriptor's tag.
    pub tag: u64,
    /// `completion::*` status.
    pub status: u16,
    /// `completion::FLAG_PHASE`.
    pub flags: u16,
    /// errno from the driver's ABORT, or 0; a RECV's `OK`/`RECV_TRUNCATED`: the sender
    /// ([`Completion::recv_sender`]).
    pub detail: u32,
    /// Bytes copied, traffic operations done, or a message's bytes delivered (RECV).
    pub bytes: u64,
    /// VA of the access that failed, or 0; a RECV's `OK`/`RECV_TRUNCATED`: the message's
    /// match bits ([`Completion::recv_bits`]).
    pub fault_va: u64,
}

// ------------------------------------------------------------------ shadow doorbells (spec §4a)

/// `SPIN_US` fields (spec §4a).
pub mod spin {
    /// The budget in bits 19:0 replaces the device's default.
    pub const OVERRIDE: u32 = 1 << 31;
    /// The budget, in µs.
    pub const US_MASK: u32 = 0x000f_ffff;
}

/// Size (and alignment) of a shadow page.
pub const SHADOW_PAGE_SIZE: u64 = 4096;

/// The two words at offset 0 of a shadow page (spec §4a).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct Shadow {
    /// The queue's producer index, written by the producer.
    pub tail: u32,
    /// Written by the device: nonzero while it polls this page (no doorbell write
    /// needed), 0 when the producer must also ring the doorbell register.
    pub polling: u32,
}

impl Shadow {
    /// Byte offset of `tail` in the page.
    pub const TAIL_OFFSET: usize = core::mem::offset_of!(Shadow, tail);
    /// Byte offset of `polling` in the page.
    pub const POLLING_OFFSET: usize = core::mem::offset_of!(Shadow, polling);

    /// The producer's rule (spec §4a, step 3): after writing `tail` and a full fence,
    /// whether it must also write the doorbell register, given the `polling` word it
    /// read and whether doorbells are forced (a benchmark's trapped mode).
    pub const fn doorbell_needed(polling: u32, forced: bool) -> bool {
        forced || polling == 0
    }
}

// ------------------------------------------------------------------ ring rules (spec §7a)

/// The index and phase-bit rules every ring follows (spec §7a), written once for the
/// device model, the driver and the library.
///
/// A ring has `entries` slots (a power of two in every mnic ring, but these rules do not
/// rely on it). A producer that counts every entry it has ever written (`count`) finds
/// the slot and the phase bit from that count alone; register indices (`head`, `tail`)
/// are taken modulo `entries`, and `head == tail` means empty, so at most
/// `entries - 1` entries are pending.
pub mod ring {
    /// Slot of the `count`-th entry ever produced into a ring of `entries` slots.
    pub const fn slot(count: u64, entries: u64) -> u64 {
        count % entries
    }

    /// The phase bit of the `count`-th entry ever produced: 1 (true) on the first pass
    /// through the ring, 0 on the second, and so on.
    pub const fn phase(count: u64, entries: u64) -> bool {
        (count / entries).is_multiple_of(2)
    }

    /// Entries pending between consumer index `head` and producer index `tail`.
    pub const fn pending(head: u64, tail: u64, entries: u64) -> u64 {
        (tail % entries + entries - head % entries) % entries
    }

    /// Slots a producer may still fill before the ring is full: one slot always stays
    /// empty, so that `head == tail` means empty rather than full.
    pub const fn free(head: u64, tail: u64, entries: u64) -> u64 {
        entries - 1 - pending(head, tail, entries)
    }

    /// The index after `index` in a ring of `entries` slots.
    pub const fn next(index: u64, entries: u64) -> u64 {
        (index + 1) % entries
    }
}

impl Event {
    /// Byte offset of `flags`, the field that carries the phase bit. The device writes
    /// the entry with the previous pass's phase first and this byte last, so a consumer
    /// that sees the new phase sees the whole entry.
    pub const PHASE_OFFSET: usize = core::mem::offset_of!(Event, flags);

    /// The phase bit of this entry.
    pub const fn phase(&self) -> bool {
        self.flags & event::FLAG_PHASE != 0
    }

    /// `flags` with the phase bit set to `phase` and every other bit kept.
    pub const fn flags_with_phase(&self, phase: bool) -> u8 {
        (self.flags & !event::FLAG_PHASE) | if phase { event::FLAG_PHASE } else { 0 }
    }

    /// Whether a consumer that expects phase `expected` finds a new entry here.
    pub const fn is_new(&self, expected: bool) -> bool {
        self.phase() == expected
    }
}

impl Completion {
    /// Byte offset of `flags`, the field that carries the phase bit; written last, as
    /// for events (see [`Event::PHASE_OFFSET`]).
    pub const PHASE_OFFSET: usize = core::mem::offset_of!(Completion, flags);

    /// The phase bit of this entry.
    pub const fn phase(&self) -> bool {
        self.flags & completion::FLAG_PHASE != 0
    }

    /// `flags` with the phase bit set to `phase` and every other bit kept.
    pub const fn flags_with_phase(&self, phase: bool) -> u16 {
        (self.flags & !completion::FLAG_PHASE) | if phase { completion::FLAG_PHASE } else { 0 }
    }

    /// Whether a consumer that expects phase `expected` finds a new entry here.
    pub const fn is_new(&self, expected: bool) -> bool {
        self.phase() == expected
    }
}

// ------------------------------------------------------------------ descriptor rules (spec §11)

/// Why a work descriptor is refused (spec §11). The device completes a refused
/// descriptor with `BAD_DESCRIPTOR`; the library refuses it before posting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DescError {
    /// A reserved bit of `flags` is set.
    UnknownFlags,
    /// `opcode` is not `COPY`, `TRAFFIC` or `NOP`.
    UnknownOpcode,
    /// A COPY or TRAFFIC of zero bytes.
    Empty,
    /// A COPY longer than `work::COPY_MAX`.
    CopyTooLong,
    /// A range that wraps or ends above the canonical lower half.
    BadRange,
    /// COPY source and destination overlap.
    Overlap,
    /// TRAFFIC `op_size` outside `1..=TRAFFIC_OP_MAX` or larger than the range.
    BadOpSize,
    /// Unknown TRAFFIC pattern.
    BadPattern,
    /// TRAFFIC `ops` above `TRAFFIC_OPS_MAX`.
    TooManyOps,
    /// A PUT, GET, SEND or RECV longer than `work::RMA_MAX`.
    RmaTooLong,
    /// PUT/GET remote part invalid: node `NODE_NONE`, context beyond `NUM_CONTEXTS`, or
    /// key 0.
    BadRemote,
    /// PUT/GET/SEND/RECV with a non-zero reserved field (PUT/GET: `ops`, `rate`, `seed`;
    /// SEND: `dst`, `op_size`, `rate`, `seed`; RECV: `src`, `op_size`, `pattern`,
    /// `seed`).
    Reserved,
    /// SEND destination invalid: node `NODE_NONE` or context beyond `NUM_CONTEXTS`.
    BadDest,
}

impl DescError {
    /// A one-line description for error messages.
    pub const fn message(self) -> &'static str {
        match self {
            DescError::UnknownFlags => "reserved flag bits set",
            DescError::UnknownOpcode => "unknown opcode",
            DescError::Empty => "zero length",
            DescError::CopyTooLong => "COPY longer than COPY_MAX (64 MiB)",
            DescError::BadRange => "range wraps or is not canonical",
            DescError::Overlap => "COPY source and destination overlap",
            DescError::BadOpSize => "TRAFFIC op_size not in 1..=65536 or larger than the range",
            DescError::BadPattern => "unknown TRAFFIC pattern",
            DescError::TooManyOps => "TRAFFIC ops above 2^32",
            DescError::RmaTooLong => "PUT/GET/SEND/RECV longer than RMA_MAX (64 MiB)",
            DescError::BadRemote => "PUT/GET remote node, context or key invalid",
            DescError::Reserved => "PUT/GET/SEND/RECV reserved field not zero",
            DescError::BadDest => "SEND destination node or context invalid",
        }
    }
}

/// The exclusive end of `[va, va + len)` if the range neither wraps nor leaves the
/// canonical lower half.
const fn va_range_end(va: u64, len: u64) -> Option<u64> {
    match va.checked_add(len) {
        Some(end) if end <= pte::VA_LIMIT => Some(end),
        _ => None,
    }
}

impl WorkDesc {
    /// Checks this descriptor against spec §11: the one rule the device applies before
    /// running it and the library applies before posting it.
    ///
    /// # Errors
    /// The first reason the descriptor is refused.
    pub const fn validate(&self) -> Result<(), DescError> {
        if self.flags & !work::FLAGS_KNOWN != 0 {
            return Err(DescError::UnknownFlags);
        }
        let len = self.len as u64;
        match self.opcode {
            work::NOP => Ok(()),
            work::COPY => {
                if self.len == 0 {
                    return Err(DescError::Empty);
                }
                if self.len > work::COPY_MAX {
                    return Err(DescError::CopyTooLong);
                }
                let (Some(src_end), Some(dst_end)) =
                    (va_range_end(self.src, len), va_range_end(self.dst, len))
                else {
                    return Err(DescError::BadRange);
                };
                if self.src < dst_end && self.dst < src_end {
                    return Err(DescError::Overlap);
                }
                Ok(())
            }
            work::TRAFFIC => {
                if self.len == 0 {
                    return Err(DescError::Empty);
                }
                if va_range_end(self.src, len).is_none() {
                    return Err(DescError::BadRange);
                }
                if self.op_size == 0
                    || self.op_size > work::TRAFFIC_OP_MAX
                    || self.op_size > self.len
                {
                    return Err(DescError::BadOpSize);
                }
                if self.pattern > work::PATTERN_RANDOM_RW {
                    return Err(DescError::BadPattern);
                }
                if self.ops > work::TRAFFIC_OPS_MAX {
                    return Err(DescError::TooManyOps);
                }
                Ok(())
            }
            work::PUT | work::GET => {
                if self.len == 0 {
                    return Err(DescError::Empty);
                }
                if self.len > work::RMA_MAX {
                    return Err(DescError::RmaTooLong);
                }
                if va_range_end(self.src, len).is_none() || va_range_end(self.dst, len).is_none() {
                    return Err(DescError::BadRange);
                }
                let r = self.remote();
                if r.node == NODE_NONE || r.ctx as u32 >= NUM_CONTEXTS || r.key == 0 {
                    return Err(DescError::BadRemote);
                }
                if self.ops != 0 || self.rate != 0 || self.seed != 0 {
                    return Err(DescError::Reserved);
                }
                Ok(())
            }
            work::SEND | work::RECV => {
                // Zero-length messages are allowed (a synchronisation carries only its
                // match bits).
                if self.len > work::RMA_MAX {
                    return Err(DescError::RmaTooLong);
                }
                let send = self.opcode == work::SEND;
                let buf = if send { self.src } else { self.dst };
                if va_range_end(buf, len).is_none() {
                    return Err(DescError::BadRange);
                }
                if send {
                    let d = self.dest();
                    if d.node == NODE_NONE || d.ctx as u32 >= NUM_CONTEXTS {
                        return Err(DescError::BadDest);
                    }
                    if self.dst != 0 || self.op_size != 0 || self.rate != 0 || self.seed != 0 {
                        return Err(DescError::Reserved);
                    }
                } else if self.src != 0 || self.op_size != 0 || self.pattern != 0 || self.seed != 0
                {
                    return Err(DescError::Reserved);
                }
                Ok(())
            }
            _ => Err(DescError::UnknownOpcode),
        }
    }

    /// A PUT (`len` bytes from local `src` to `remote`) or GET (`len` bytes from `remote`
    /// to local `dst`) descriptor: `opcode` is `work::PUT` or `work::GET`, `local` the
    /// local VA, `flags` the `work::FLAG_*` bits.
    pub const fn rma(
        opcode: u16,
        flags: u16,
        tag: u64,
        local: u64,
        remote: Remote,
        len: u32,
    ) -> Self {
        let (src, dst) = if opcode == work::GET {
            (remote.va, local)
        } else {
            (local, remote.va)
        };
        WorkDesc {
            opcode,
            flags,
            len,
            tag,
            src,
            dst,
            op_size: remote.key,
            pattern: remote.node as u32 | (remote.ctx as u32) << 16,
            ops: 0,
            rate: 0,
            seed: 0,
        }
    }

    /// The remote side of a PUT or GET (spec §11: `op_size` holds the key, `pattern` the
    /// node in bits 15:0 and the context in bits 31:16; the remote VA is `dst` for PUT,
    /// `src` for GET).
    pub const fn remote(&self) -> Remote {
        Remote {
            node: self.pattern as u16,
            ctx: (self.pattern >> 16) as u16,
            key: self.op_size,
            va: if self.opcode == work::GET {
                self.src
            } else {
                self.dst
            },
        }
    }

    /// The local VA of a PUT (`src`) or GET (`dst`).
    pub const fn local(&self) -> u64 {
        if self.opcode == work::GET {
            self.dst
        } else {
            self.src
        }
    }

    /// A SEND of `len` bytes at local `src` to context `dest`, with match bits `bits`
    /// (spec §11: `pattern` holds the node in bits 15:0 and the context in bits 31:16,
    /// `ops` the match bits; `dst`, `op_size`, `rate`, `seed` are 0).
    pub const fn send(flags: u16, tag: u64, src: u64, len: u32, dest: Endpoint, bits: u64) -> Self {
        WorkDesc {
            opcode: work::SEND,
            flags,
            len,
            tag,
            src,
            dst: 0,
            op_size: 0,
            pattern: dest.packed(),
            ops: bits,
            rate: 0,
            seed: 0,
        }
    }

    /// A RECV of up to `len` bytes into local `dst`, taking the first message whose match
    /// bits `m` satisfy `(m ^ bits) & mask == 0`, from any sender (spec §11: `ops` holds
    /// the bits, `rate` the mask; `src`, `op_size`, `pattern`, `seed` are 0).
    pub const fn recv(flags: u16, tag: u64, dst: u64, len: u32, bits: u64, mask: u64) -> Self {
        WorkDesc {
            opcode: work::RECV,
            flags,
            len,
            tag,
            src: 0,
            dst,
            op_size: 0,
            pattern: 0,
            ops: bits,
            rate: mask,
            seed: 0,
        }
    }

    /// The destination of a SEND (`pattern`).
    pub const fn dest(&self) -> Endpoint {
        Endpoint::unpack(self.pattern)
    }

    /// The match bits of a SEND or RECV (`ops`).
    pub const fn match_bits(&self) -> u64 {
        self.ops
    }

    /// The mask of a RECV (`rate`): the bits that must be equal.
    pub const fn match_mask(&self) -> u64 {
        self.rate
    }
}

/// Whether a message with match bits `msg` matches a receive with `bits` and `mask`
/// (spec §11, docs/fabric.md 14.14): every bit the mask sets is equal.
pub const fn tags_match(msg: u64, bits: u64, mask: u64) -> bool {
    (msg ^ bits) & mask == 0
}

/// A context of a node: a SEND's destination, a message's sender.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    /// Fabric node id.
    pub node: u16,
    /// Context index on that node.
    pub ctx: u16,
}

impl Endpoint {
    /// As one word: the node in bits 15:0, the context in bits 31:16 (a SEND's
    /// `pattern`, a RECV completion's `detail`).
    pub const fn packed(self) -> u32 {
        self.node as u32 | (self.ctx as u32) << 16
    }

    /// The endpoint `packed` holds.
    pub const fn unpack(packed: u32) -> Self {
        Endpoint {
            node: packed as u16,
            ctx: (packed >> 16) as u16,
        }
    }
}

impl Completion {
    /// A RECV completion with status `OK` or `RECV_TRUNCATED`: the match bits of the
    /// message it took (held in `fault_va`).
    pub const fn recv_bits(&self) -> u64 {
        self.fault_va
    }

    /// A RECV completion with status `OK` or `RECV_TRUNCATED`: the sending node and
    /// context (held in `detail`, as [`Endpoint::packed`]).
    pub const fn recv_sender(&self) -> Endpoint {
        Endpoint::unpack(self.detail)
    }
}

/// The node id that is never valid: the `FABRIC_NODE` value of a device that is not a
/// node of a fabric (the same value as `fabric::NODE_NONE`).
pub const NODE_NONE: u16 = 0xffff;

/// The remote side of a PUT or GET: which node, context, key and VA.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Remote {
    /// Fabric node id of the target device.
    pub node: u16,
    /// Context index on the target device.
    pub ctx: u16,
    /// The remote key of the target's registration.
    pub key: u32,
    /// VA in the target context.
    pub va: u64,
}

// ------------------------------------------------------------------ user ABI (spec §13)

/// ioctl type byte.
pub const IOC_TYPE: u32 = 0xB7;
/// Version of the user ABI reported in `MnicInfo::abi_version` (2: remote keys and the
/// fabric node).
pub const UABI_VERSION: u32 = 2;

const IOC_NRBITS: u32 = 8;
const IOC_TYPEBITS: u32 = 8;
const IOC_SIZEBITS: u32 = 14;
const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = IOC_NRSHIFT + IOC_NRBITS;
const IOC_SIZESHIFT: u32 = IOC_TYPESHIFT + IOC_TYPEBITS;
const IOC_DIRSHIFT: u32 = IOC_SIZESHIFT + IOC_SIZEBITS;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// The ioctl number of direction `dir` (bit 0 write, bit 1 read), number `nr` and argument
/// size `size` in mnic's type (Linux `_IOC` encoding); public for tests that build malformed
/// ioctls.
pub const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    (dir << IOC_DIRSHIFT)
        | (IOC_TYPE << IOC_TYPESHIFT)
        | (nr << IOC_NRSHIFT)
        | ((size as u32) << IOC_SIZESHIFT)
}

/// `MNIC_IOC_INFO` output.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct MnicInfo {
    /// `UABI_VERSION`.
    pub abi_version: u32,
    /// `VERSION` register.
    pub hw_version: u32,
    /// `CAPS` register.
    pub caps: u32,
    /// Number of contexts of the device.
    pub num_contexts: u32,
    /// This file's context index.
    pub ctx: u32,
    /// Minor number of the device (N of /dev/mnicN).
    pub minor: u32,
    /// Most registrations per context.
    pub max_registrations: u32,
    /// The device's fabric node id (`FABRIC_NODE`), `NODE_NONE` (0xffff) without a fabric.
    pub node: u32,
}

/// Registration flags (`MnicRegister::flags`).
pub mod reg_flags {
    /// The device may read.
    pub const READ: u32 = 1 << 0;
    /// The device may write.
    pub const WRITE: u32 = 1 << 1;
    /// Baseline mode: pin every page and fill the table now.
    pub const PINNED: u32 = 1 << 2;
    /// Fill the table now, without pinning.
    pub const PREFETCH: u32 = 1 << 3;
    /// Peers on the fabric may access the range, with this registration's `READ`/`WRITE`
    /// access, through the remote key returned in `MnicRegister::rkey` (spec §14.13).
    /// Refused with `EOPNOTSUPP` on a device without `CAPS.FABRIC`.
    pub const REMOTE: u32 = 1 << 4;
    /// Every defined bit.
    pub const ALL: u32 = READ | WRITE | PINNED | PREFETCH | REMOTE;
}

/// Most registrations one context may hold.
pub const MAX_REGISTRATIONS: u32 = 1024;

/// `MNIC_IOC_REGISTER` argument.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct MnicRegister {
    /// Start VA (page aligned).
    pub addr: u64,
    /// Length in bytes (page multiple, > 0).
    pub len: u64,
    /// `reg_flags::*`.
    pub flags: u32,
    /// Out: the registration's handle (never 0).
    pub handle: u32,
    /// Out: the remote key with `reg_flags::REMOTE` (never 0, unique on the device while
    /// the registration lives), else 0.
    pub rkey: u32,
    /// Reserved, zero.
    pub rsvd: u32,
}

/// `MNIC_IOC_DEREGISTER` argument.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct MnicHandle {
    /// A handle from `MNIC_IOC_REGISTER`.
    pub handle: u32,
    /// Reserved, zero.
    pub rsvd: u32,
}

/// `MnicRange::flags`: prefetch writable translations (breaks COW now).
pub const RANGE_FLAG_WRITE: u32 = 1 << 0;

/// `MNIC_IOC_PREFETCH` argument.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct MnicRange {
    /// Start VA (page aligned).
    pub addr: u64,
    /// Length in bytes (page multiple, > 0).
    pub len: u64,
    /// `RANGE_FLAG_*`.
    pub flags: u32,
    /// Reserved, zero.
    pub rsvd: u32,
}

/// `MNIC_IOC_SETUP_QUEUES` argument.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct MnicQueues {
    /// VA of the work queue (64-byte aligned, `WorkDesc` entries).
    pub wq_addr: u64,
    /// VA of the completion queue (32-byte aligned, `Completion` entries).
    pub cq_addr: u64,
    /// log2 of work-queue entries.
    pub wq_size_log2: u32,
    /// log2 of completion-queue entries.
    pub cq_size_log2: u32,
}

/// `MNIC_IOC_POST` argument.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct MnicPost {
    /// New work-queue producer index.
    pub wq_tail: u32,
    /// Reserved, zero.
    pub rsvd: u32,
}

/// `MNIC_IOC_WAIT` argument.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct MnicWait {
    /// Wait until this context's `WORK_DONE` count is at least this.
    pub target: u64,
    /// Out: the count when the wait ended.
    pub count: u64,
    /// Timeout in milliseconds (0 = do not sleep).
    pub timeout_ms: u32,
    /// Reserved, zero.
    pub rsvd: u32,
}

/// `MNIC_IOC_CTX_STATS` output: per-context driver counters.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct MnicCtxStats {
    /// Live registrations.
    pub registrations: u64,
    /// Valid 4 KiB leaves in the context's table.
    pub mapped_4k: u64,
    /// Valid 2 MiB leaves in the context's table.
    pub mapped_2m: u64,
    /// Pages pinned (PINNED registrations only).
    pub pinned_pages: u64,
    /// Device faults handled.
    pub faults: u64,
    /// Faults answered with RESUME.
    pub resumes: u64,
    /// Faults answered with ABORT.
    pub aborts: u64,
    /// Notifier invalidations that hit this context.
    pub invalidations: u64,
    /// Table entries cleared by invalidations.
    pub entries_invalidated: u64,
    /// SYNC waits.
    pub sync_waits: u64,
    /// Total nanoseconds spent waiting for SYNC.
    pub sync_wait_ns: u64,
    /// Longest SYNC wait in nanoseconds.
    pub sync_wait_max_ns: u64,
    /// `WORK_DONE` events seen.
    pub work_done: u64,
    /// hmm_range_fault retries (sequence changed or -EBUSY).
    pub fault_retries: u64,
    /// Reserved, zero.
    pub rsvd: [u64; 2],
}

/// `MNIC_IOC_DEV_STATS` output: the device counters.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct MnicDevStats {
    /// `COUNTER[i]`, indexed by `counter::*`.
    pub counters: [u64; counter::SLOTS as usize],
}

/// `MNIC_IOC_QUERY` argument.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct MnicQuery {
    /// Start VA (page aligned).
    pub addr: u64,
    /// Length in bytes (page multiple, > 0).
    pub len: u64,
    /// Out: valid 4 KiB leaves in the range.
    pub valid_4k: u64,
    /// Out: valid 2 MiB leaves overlapping the range.
    pub valid_2m: u64,
    /// Out: of those, writable leaves.
    pub writable: u64,
    /// Out: pages of the range pinned by PINNED registrations.
    pub pinned: u64,
}

/// Buckets of a latency histogram (`MnicLatency`, spec §13): powers of two microseconds.
pub const LATENCY_BUCKETS: usize = 16;

/// The histogram bucket of a latency of `ns` nanoseconds: 0 below 2 µs, `i` for
/// [2^i, 2^(i+1)) µs, the last bucket from 2^15 µs up (spec §13).
pub const fn latency_bucket(ns: u64) -> usize {
    let us = ns / 1000;
    let bucket = (u64::BITS - us.leading_zeros()) as usize;
    // `us` in [2^i, 2^(i+1)) has i + 1 significant bits; below 2 µs lands in 0 either way.
    let bucket = if bucket == 0 { 0 } else { bucket - 1 };
    if bucket < LATENCY_BUCKETS {
        bucket
    } else {
        LATENCY_BUCKETS - 1
    }
}

/// The lower bound of histogram bucket `i` in microseconds (0 for bucket 0); bucket `i`
/// ends where `i + 1` starts, the last one has no end.
pub const fn latency_bucket_start_us(i: usize) -> u64 {
    if i == 0 {
        0
    } else {
        1 << i
    }
}

/// `MNIC_IOC_CTX_LATENCY` / `MNIC_IOC_DEV_LATENCY` output: latency histograms (spec §13).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct MnicLatency {
    /// SYNC waits per bucket (see [`latency_bucket`]).
    pub sync_wait: [u64; LATENCY_BUCKETS],
    /// Device faults per bucket, from the `FAULT` event's receipt to the posted answer.
    pub fault: [u64; LATENCY_BUCKETS],
}

/// Get device and context information.
pub const MNIC_IOC_INFO: u32 = ioc(IOC_READ, 0, core::mem::size_of::<MnicInfo>());
/// Register a range.
pub const MNIC_IOC_REGISTER: u32 = ioc(
    IOC_READ | IOC_WRITE,
    1,
    core::mem::size_of::<MnicRegister>(),
);
/// Deregister.
pub const MNIC_IOC_DEREGISTER: u32 = ioc(IOC_WRITE, 2, core::mem::size_of::<MnicHandle>());
/// Prefetch translations.
pub const MNIC_IOC_PREFETCH: u32 = ioc(IOC_WRITE, 3, core::mem::size_of::<MnicRange>());
/// Set up the work and completion queues and enable the context.
pub const MNIC_IOC_SETUP_QUEUES: u32 = ioc(IOC_WRITE, 4, core::mem::size_of::<MnicQueues>());
/// Ring the doorbell through a system call.
pub const MNIC_IOC_POST: u32 = ioc(IOC_WRITE, 5, core::mem::size_of::<MnicPost>());
/// Wait for WORK_DONE events.
pub const MNIC_IOC_WAIT: u32 = ioc(IOC_READ | IOC_WRITE, 6, core::mem::size_of::<MnicWait>());
/// Per-context driver counters.
pub const MNIC_IOC_CTX_STATS: u32 = ioc(IOC_READ, 7, core::mem::size_of::<MnicCtxStats>());
/// Device counters.
pub const MNIC_IOC_DEV_STATS: u32 = ioc(IOC_READ, 8, core::mem::size_of::<MnicDevStats>());
/// Count device table entries over a range.
pub const MNIC_IOC_QUERY: u32 = ioc(IOC_READ | IOC_WRITE, 9, core::mem::size_of::<MnicQuery>());
/// Gives the context a shadow page (spec §4a); before `MNIC_IOC_SETUP_QUEUES`.
pub const MNIC_IOC_SHADOW: u32 = ioc(0, 10, 0);
/// Posts a SYNC and waits for it: a device fence for user space.
pub const MNIC_IOC_SYNC: u32 = ioc(0, 11, 0);

/// This context's latency histograms.
pub const MNIC_IOC_CTX_LATENCY: u32 = ioc(IOC_READ, 12, core::mem::size_of::<MnicLatency>());
/// The device's latency histograms (every context).
pub const MNIC_IOC_DEV_LATENCY: u32 = ioc(IOC_READ, 13, core::mem::size_of::<MnicLatency>());

/// mmap offset of the context's shadow page in its `/dev/mnicN` file (spec §13).
pub const MMAP_SHADOW_OFFSET: u64 = 4096;
