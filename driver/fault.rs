// SPDX-License-Identifier: GPL-2.0
//! Device faults are resolved per context, on a kernel workqueue, not in the event thread.
//!
//! The event thread reads the event queue for every context of the device. Resolving a fault
//! means `hmm_range_fault` under the owner's mmap lock, which can block for as long as the
//! page takes to arrive (a FUSE or NFS server that never answers, a swap device that is
//! slow): done there, one stuck context would stall the faults, completions and errors of
//! every other. So the event thread only records the fault in its context's slot and queues
//! that context's work item; contexts are resolved independently (`system_long`, for work
//! that may block long).
//!
//! The device parks at most one fault per context (spec §12): one slot per context is
//! enough (`Ctx::fault_slot`). A fault that finds the slot taken (a device breaking that rule)
//! is resolved in place, in the event thread.
//!
//! Lifetime: the work item holds an `Arc<Ctx>`, and runs module code. Teardown marks the
//! context closing under the slot lock (no enqueue after that) and then flushes the work
//! (`flush_work`): when the file's release returns, no fault work of it is queued or running,
//! so the module can be unloaded.

use kernel::{
    sync::{atomic::Relaxed, Arc},
    workqueue::{self, impl_has_work, Work, WorkItem},
};

use crate::context::{Ctx, PendingFault};

impl_has_work! {
    impl HasWork<Self> for Ctx { self.fault_work }
}

impl WorkItem for Ctx {
    type Pointer = Arc<Ctx>;

    fn run(this: Arc<Ctx>) {
        // A fault recorded while this one was being resolved re-queued the work, but taking
        // them all here costs nothing.
        loop {
            let Some(f) = this.fault_slot.lock().pending.take() else {
                return;
            };
            this.handle_fault(f.va, f.write, f.id);
        }
    }
}

impl Ctx {
    /// Called by the event thread for a `FAULT` event: hands the fault to this context's
    /// worker (see the module documentation).
    pub(crate) fn queue_fault(self: &Arc<Self>, f: PendingFault) {
        self.fault_received(&f);
        {
            let mut slot = self.fault_slot.lock();
            if slot.closing {
                // CTX_DISABLE drops the parked work; nothing to answer.
                return;
            }
            if slot.pending.is_none() {
                slot.pending = Some(f);
                // Already queued (and not yet running): it takes this fault too.
                let _ = workqueue::system_long().enqueue(self.clone());
                return;
            }
        }
        self.stats.faults_inline.add(1, Relaxed);
        self.handle_fault(f.va, f.write, f.id);
    }

    /// Teardown: no fault work is queued or running for this context when this returns.
    pub(crate) fn stop_fault_work(&self) {
        self.fault_slot.lock().closing = true;
        // SAFETY: `fault_work` is this context's initialised work item (pinned inside the
        // `Ctx`, which `self` keeps alive); `flush_work` only waits for it. No new enqueue can
        // happen after `closing` was set under the slot lock above.
        unsafe { kernel::bindings::flush_work(Work::<Ctx>::raw_get(&self.fault_work)) };
        self.fault_slot.lock().pending = None;
    }
}
