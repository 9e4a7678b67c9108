// SPDX-License-Identifier: GPL-2.0
//! Registering and deregistering ranges of a context (`MNIC_IOC_REGISTER`,
//! `MNIC_IOC_DEREGISTER`): each registration is an mmu interval notifier (`Region`, whose
//! callbacks are in `invalidate.rs`), listed in `Ctx::registrations`.
//!
//! Registration preallocates every translation table its range needs, so neither a fill nor
//! an invalidation ever allocates one (DMA slots it leaves to the fills, which allocate them
//! per 2 MiB block they touch, `dma_map.rs`); deregistration takes the range's translations
//! down behind a SYNC before it removes the notifier, and bounds the tables left behind.

use kernel::{mm::mmu_notifier::IntervalNotifier, prelude::*, sync::Arc};

use crate::abi::{self, pte, reg_flags};
use crate::cmd_ring::Ticket;
use crate::context::{Ctx, Region, Registered, Registrations};
use crate::device::fault_delay;
use crate::dma_map::DmaPages;
use crate::pin::PinnedPages;
use crate::remote_key::RemoteKey;
use crate::table::{self, PageTable};

/// Largest registration: 1 GiB keeps the preallocated translation tables at 2 MiB.
pub(crate) const MAX_REGISTER_LEN: u64 = 1 << 30;

/// Table pages a context keeps that no registration needs (left by deregistrations): enough
/// to register the largest registration (1 GiB: 512 level-1 tables and a few above) again
/// without allocating, and a bound on what a context holds beyond its live registrations
/// (about 2 MiB).
const UNUSED_TABLES_KEPT: usize = 520;

impl Ctx {
    /// `MNIC_IOC_REGISTER`.
    pub(crate) fn register(self: &Arc<Self>, req: &mut abi::MnicRegister) -> Result {
        let (start, len) = (req.addr, req.len);
        if req.flags & !reg_flags::ALL != 0
            || req.flags & (reg_flags::READ | reg_flags::WRITE) == 0
            || req.handle != 0
            || req.rkey != 0
            || req.rsvd != 0
            || len == 0
            || len > MAX_REGISTER_LEN
            || start % pte::PAGE_SIZE != 0
            || len % pte::PAGE_SIZE != 0
            || start.checked_add(len).is_none_or(|end| end > pte::VA_LIMIT)
        {
            return Err(EINVAL);
        }
        let remote = req.flags & reg_flags::REMOTE != 0;
        if remote && self.dev.caps & abi::caps::FABRIC == 0 {
            return Err(EOPNOTSUPP);
        }
        let end = start + len;
        let mm = self.caller_mm()?;
        let write = req.flags & reg_flags::WRITE != 0;
        if self.registrations.lock().list.len() >= abi::MAX_REGISTRATIONS as usize {
            return Err(ENOSPC);
        }

        // Until this registration is listed, no deregistration may free tables it needs.
        let tables_guard = self.tables_lock.lock();
        // Translation tables for the range: found missing under the lock, allocated without
        // it (invalidations must never wait for an allocation), linked in under it again.
        let mut keys = KVec::with_capacity(table::max_tables(start, end), GFP_KERNEL)?;
        self.state.lock().table.missing(start, end, &mut keys);
        let mut new_tables = {
            let access = self.dev.enter()?;
            PageTable::allocate(access.bound(), &keys)?
        };
        self.state.lock().table.grow(&mut new_tables)?;
        drop(new_tables);

        let handle = {
            let mut registrations = self.registrations.lock();
            let handle = registrations.next_handle;
            registrations.next_handle = registrations.next_handle.wrapping_add(1).max(1);
            handle
        };
        // No DMA slots yet: fills allocate them per 2 MiB block they touch (`dma_map.rs`).
        let dma = DmaPages::new(start, end)?;
        // Recorded in the device's set from here on; forgotten again if this fails below.
        let remote = if remote {
            Some(RemoteKey::claim(&self.dev, self.index, req.flags)?)
        } else {
            None
        };
        let rkey = remote.as_ref().map_or(0, |k| k.key);
        let region = KBox::pin_init(
            IntervalNotifier::new(
                &mm,
                start as usize,
                len as usize,
                Region {
                    ctx: self.clone(),
                    handle,
                    flags: req.flags,
                    remote,
                    dma,
                },
            ),
            GFP_KERNEL,
        )?;
        // The baseline mode pins every page now (and keeps it pinned until deregistration).
        let pinned = if req.flags & reg_flags::PINNED != 0 {
            Some(PinnedPages::pin(
                start,
                (len / pte::PAGE_SIZE) as usize,
                write,
            )?)
        } else {
            None
        };
        let mut list_entry = KVec::with_capacity(1, GFP_KERNEL)?;
        list_entry.push(
            Registered {
                notifier: region,
                pinned,
            },
            GFP_KERNEL,
        )?;
        {
            let mut registrations = self.registrations.lock();
            if registrations.list.len() >= abi::MAX_REGISTRATIONS as usize {
                drop(registrations);
                drop(list_entry);
                return Err(ENOSPC);
            }
            // Reserve before moving so the push under the lock cannot fail half way.
            registrations.list.reserve(1, GFP_KERNEL)?;
            for r in list_entry.drain_all() {
                registrations
                    .list
                    .push_within_capacity(r)
                    .map_err(|_| ENOMEM)?;
            }
        }
        drop(tables_guard);
        req.handle = handle;
        if req.flags & (reg_flags::PREFETCH | reg_flags::PINNED) != 0 {
            if let Err(e) = self.prefetch(start, len, &mm) {
                let _ = self.deregister(handle);
                return Err(e);
            }
        }
        // Listed first: a packet that faults once the device has the key finds the
        // registration (`fill.rs` resolves network faults through the list too).
        if rkey != 0 {
            if let Err(e) = self.give_key(handle) {
                let _ = self.deregister(handle);
                return Err(e);
            }
        }
        req.rkey = rkey;
        Ok(())
    }

    /// `MNIC_IOC_DEREGISTER`.
    pub(crate) fn deregister(&self, handle: u32) -> Result {
        self.check_owner()?;
        let region = {
            let mut registrations = self.registrations.lock();
            let i = registrations.position(handle).ok_or(ENOENT)?;
            registrations.list.remove(i).map_err(|_| EINVAL)?
        };
        let Registered { notifier, pinned } = region;
        let (start, end) = (notifier.start() as u64, notifier.end() as u64);
        // A remote key goes first, behind the same SYNC as the translations: once it has
        // executed, no packet reaches the range through the key and no translation is left.
        let keys = self.key_lock.lock();
        let key_clear = notifier
            .data()
            .remote
            .as_ref()
            .and_then(|k| k.clear_command(self.index));
        // Fence first, remove the notifier last (as `ib_umem_odp_free` does): take the
        // translations down behind a SYNC while the notifier still hears every invalidation of
        // the range (nothing can fill it again: the registration left the list under `registrations`,
        // and fills find their registration there). Removed first, an munmap in between would
        // free pages the table still maps, and nobody would tell the device. Other
        // registrations over the same pages fault them back on demand. The pages' DMA mappings
        // go once the device is fenced, while the notifier still guarantees that the pages
        // are not freed; pinned pages are released only after that.
        let result = self.shoot_down(start, end, key_clear);
        drop(keys);
        notifier.dma.unmap_fenced(start, end);
        // Fault injection (debugfs): widens the window between the two steps for tests.
        fault_delay(&self.dev.deregister_delay_ms);
        drop(notifier);
        drop(pinned);
        result.and(self.prune_tables())
    }

    /// Bounds the translation tables that no registration still listed needs: a process that
    /// registers and deregisters many ranges would otherwise keep a table page per 2 MiB it
    /// ever registered, until it closes the context. Up to `UNUSED_TABLES_KEPT` stay (cheap
    /// re-registration); past that all of them are freed.
    fn prune_tables(&self) -> Result {
        let _tables = self.tables_lock.lock();
        let mut keep = KVec::with_capacity(abi::MAX_REGISTRATIONS as usize, GFP_KERNEL)?;
        for r in self.registrations.lock().list.iter() {
            let range = (r.notifier.start() as u64, r.notifier.end() as u64);
            // Cannot fail: the list never holds more than MAX_REGISTRATIONS.
            let _ = keep.push_within_capacity(range);
        }
        // Tables no registration needs stay linked (zeroed by the shoot-down) as long as there
        // are few: registering the same range again then allocates nothing. Past the bound,
        // every such table of the context goes at once.
        let most = self.state.lock().table.prunable(&keep);
        if most <= UNUSED_TABLES_KEPT {
            return Ok(());
        }
        // Reserved outside the notifier lock (invalidations must never wait for memory);
        // `tables_lock` keeps the set of tables from growing in between.
        let mut freed = KVec::with_capacity(most, GFP_KERNEL)?;
        self.state
            .lock()
            .table
            .prune(0, pte::VA_LIMIT, &keep, &mut freed);
        if freed.is_empty() {
            return Ok(());
        }
        // A walk that began before the unlinking may still read these pages: free them only
        // after a SYNC (commands run between work steps, and walks happen inside steps).
        let ticket = self.dev.post_sync(&[]).unwrap_or(Ticket::QUIESCED);
        let _ = self.dev.wait_sync(ticket);
        drop(freed);
        Ok(())
    }
}

impl Ctx {
    /// Teardown, once the device can no longer use this context (`CTX_DISABLE` executed, or
    /// the device stopped): unmaps the DMA mappings of every registration while their
    /// notifiers still keep the pages from being freed.
    pub(crate) fn unmap_registrations(&self) {
        self.registrations.lock().unmap_all();
    }

    /// The same at unbind, once the device is stopped, but without waiting for the list: a
    /// device fault being resolved holds it, and may wait as long as its page takes (an
    /// unresponsive file system). Then the mappings stay until the registrations go.
    pub(crate) fn try_unmap_registrations(&self) -> bool {
        self.registrations
            .try_lock()
            .map(|r| r.unmap_all())
            .is_some()
    }
}

impl Registrations {
    fn unmap_all(&self) {
        for r in self.list.iter() {
            r.notifier
                .dma
                .unmap_fenced(r.notifier.start() as u64, r.notifier.end() as u64);
        }
    }

    /// Index in the list of the registration with `handle`.
    fn position(&self, handle: u32) -> Option<usize> {
        self.list
            .iter()
            .position(|r| r.notifier.data().handle == handle)
    }

    /// The registration with `handle`.
    pub(crate) fn find(&self, handle: u32) -> Option<&Registered> {
        self.list.get(self.position(handle)?)
    }
}
