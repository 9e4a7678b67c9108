//! A running context's state (spec §11, §12): the device's copy of its table entry, its
//! place in its work and completion rings, the item in progress and a parked fault.
//!
//! Ring indices follow spec §7a (`mnic_abi::ring`): the tail (the `WQ_TAIL` doorbell, or
//! the shadow page's `tail` if the context has one, spec §4a) is taken modulo the ring
//! size, and the device's consumer index advances when an item's
//! completion is written, so at most `wq_entries - 1` items can be pending. Completions
//! are counted from 0 since the context was enabled; the count gives the slot and the
//! phase bit.

use mnic_abi::{ring, work, Completion, CtxEntry, WorkDesc};

use super::rma::Rma;
use super::traffic::TrafficState;

/// Where a parked context stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Site {
    /// Reading the next descriptor.
    Fetch,
    /// Executing the current item.
    Work,
    /// Writing the current item's completion.
    Completion,
    /// Serving a packet from the fabric (a network fault, docs/fabric.md 14.13): nothing
    /// of the context's own waits on it; RESUME just unparks, ABORT makes packets that
    /// fault at the page answered `REMOTE_FAULT`.
    Network,
}

/// The remote operation a packet belongs to: its sender's node and context, and the
/// sender's request id of the work item (unique per sending device).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    /// Sending node.
    pub node: u16,
    /// Sending context.
    pub ctx: u16,
    /// The item's `req_id`.
    pub req_id: u32,
}

/// A network fault the driver aborted: packets of the same operation (`origin`) that
/// fault at `page` with the same kind of access are answered `REMOTE_FAULT` with `errno`
/// instead of parking a fault again. The driver's answer was about the mapping at that
/// moment and that operation: a write refused on a read-only page says nothing about
/// reads, and a later operation (after an `mprotect` back to writable, say) faults anew
/// and is asked about again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetAbort {
    /// The 4 KiB page (its first VA).
    pub page: u64,
    /// The aborted fault was for a write.
    pub write: bool,
    /// The operation whose packet raised the fault.
    pub origin: Origin,
    /// The errno the driver gave ABORT.
    pub errno: u32,
}

/// A parked fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parked {
    /// The fault id (unique per device, never 0).
    pub id: u64,
    /// Where the context stopped.
    pub site: Site,
    /// The faulting VA.
    pub va: u64,
    /// The faulting access was a write.
    pub write: bool,
}

/// A work item being executed.
pub struct Item {
    /// The descriptor as fetched.
    pub desc: WorkDesc,
    /// Progress: bytes (COPY) or operations (TRAFFIC) done.
    pub done: u64,
    /// Traffic generator state, created on the first step.
    pub traffic: Option<TrafficState>,
    /// PUT/GET state, created on the first step.
    pub rma: Option<Box<Rma>>,
}

impl Item {
    /// A validated descriptor, not started.
    pub fn new(desc: WorkDesc) -> Self {
        Item {
            desc,
            done: 0,
            traffic: None,
            rma: None,
        }
    }
}

/// A completion ready to be written.
#[derive(Clone, Copy, Debug)]
pub struct Done {
    /// The entry (its phase bit is set when it is written).
    pub cpl: Completion,
    /// Post a `WORK_DONE` event once it is written.
    pub notify: bool,
}

impl Done {
    /// The completion of `desc`.
    pub fn of(desc: &WorkDesc, status: u16, detail: u32, bytes: u64, fault_va: u64) -> Self {
        Done {
            cpl: Completion {
                tag: desc.tag,
                status,
                flags: 0,
                detail,
                bytes,
                fault_va,
            },
            notify: desc.flags & work::FLAG_NOTIFY != 0,
        }
    }
}

/// A context's progress through its queue.
pub enum Stage {
    /// Between items: fetch the next descriptor when there is one.
    Idle,
    /// Executing.
    Exec(Item),
    /// The item finished; its completion is still to be written.
    Complete(Done),
}

/// Size of a work-queue entry.
const DESC_SIZE: u64 = size_of::<WorkDesc>() as u64;
/// Size of a completion-queue entry.
pub const COMPLETION_SIZE: u64 = size_of::<Completion>() as u64;

/// A running context: the device's copy of its table entry and queue state.
pub struct Ctx {
    entry: CtxEntry,
    /// Consumer index of the work queue.
    wq_head: u32,
    /// Completions written since the context was enabled.
    cq_written: u64,
    /// Where the context is.
    pub stage: Stage,
    /// Set while a fault waits for RESUME/ABORT.
    pub parked: Option<Parked>,
    /// The last network fault the driver aborted (until a packet translates at that page,
    /// or another network fault is aborted).
    pub net_abort: Option<NetAbort>,
    /// The operation whose packet raised the parked network fault (what an ABORT of it
    /// applies to).
    pub parked_origin: Option<Origin>,
    /// The work queue's tail as last read from the shadow page (modulo the ring size);
    /// unused without one.
    pub shadow_tail: u32,
}

impl Ctx {
    /// A context started from a validated table entry, with `shadow_tail` the tail its
    /// shadow page holds at that moment (0 without one).
    pub fn new(entry: CtxEntry, shadow_tail: u32) -> Self {
        Ctx {
            entry,
            wq_head: 0,
            cq_written: 0,
            stage: Stage::Idle,
            parked: None,
            net_abort: None,
            parked_origin: None,
            shadow_tail,
        }
    }

    /// GPA of the context's shadow page, 0 for none.
    pub fn shadow(&self) -> u64 {
        self.entry.shadow
    }

    /// The work queue's tail: from the shadow page if there is one (the doorbell
    /// register's value is then not used), else the `WQ_TAIL` value `doorbell`.
    pub fn tail(&self, doorbell: u32) -> u32 {
        if self.shadow() != 0 {
            self.shadow_tail
        } else {
            doorbell
        }
    }

    /// GPA of the context's translation table.
    pub fn root(&self) -> u64 {
        self.entry.root
    }

    /// Entries of the work queue.
    pub fn wq_entries(&self) -> u64 {
        1u64 << self.entry.wq_size_log2
    }

    /// Whether the tail `tail` leaves a descriptor to fetch.
    pub fn has_work(&self, tail: u32) -> bool {
        ring::pending(u64::from(self.wq_head), u64::from(tail), self.wq_entries()) != 0
    }

    /// VA of the next descriptor to fetch.
    pub fn next_desc_va(&self) -> u64 {
        self.entry.wq_va + DESC_SIZE * u64::from(self.wq_head)
    }

    /// VA of the next completion slot, and the phase bit its entry carries.
    pub fn next_completion(&self) -> (u64, bool) {
        let n = 1u64 << self.entry.cq_size_log2;
        let va = self.entry.cq_va + COMPLETION_SIZE * ring::slot(self.cq_written, n);
        (va, ring::phase(self.cq_written, n))
    }

    /// The current item's completion is written: the item leaves the work queue.
    pub fn completed(&mut self) {
        self.cq_written += 1;
        self.wq_head = ring::next(u64::from(self.wq_head), self.wq_entries()) as u32;
    }
}
