// SPDX-License-Identifier: GPL-2.0
//! mnic: the driver of the mnic NIC, whose device translations follow the CPU page tables.
//!
//! User memory registered with the NIC is never pinned. Registrations are mmu interval
//! notifiers; the device's per-context translation tables are filled on demand (device page
//! faults, resolved with `hmm_range_fault`) and every invalidation clears the entries, posts
//! `INVALIDATE` + `SYNC` and waits for the SYNC before the kernel may reuse the pages.
//! See `docs/spec.md` (hardware and ioctls) and `docs/driver.md` (design).
//!
//! Modules, from the hardware up (each uses only modules listed before it):
//! - `regs` (BAR0 registers as types), `dma_mem` (word access to DMA memory the device
//!   shares), `shadow` (a shadow doorbell page and the producer's rule), `pin` (the pinned
//!   baseline), `dma_map` (the DMA mappings of a registration's pages), `key_set` (the live
//!   remote keys of a device);
//! - `table` (a context's translation table), `cmd_ring` and `event_ring` (the rings and SYNC
//!   tickets), `device` (register access, posting and SYNC waits, unbind, a dead device),
//!   `remote_key` (one registration's remote key and its commands);
//! - `context` (a context and its lifecycle), and what it does: `registration` (register,
//!   deregister), `remote` (when `KEY_SET` and `KEY_CLEAR` are posted), `invalidate` (the
//!   notifier callbacks), `fill` (device faults and prefetch), `fault` (faults handed to a
//!   per-context worker);
//! - `slots` (context index → context), `file` (misc device, ioctls, doorbell and shadow mmap),
//!   `debugfs`, and here: PCI probe/unbind and the event interrupt;
//! - beside them, where the time goes: `trace` (the `mnic:*` trace events, defined in C in
//!   `mnic_trace.h`), `latency` (the latency histograms), `observe` (what each path reports at
//!   each step).
//!
//! `docs/driver.md` has the table of modules and of locks.

use kernel::{
    device::Core,
    dma::{Device as _, DmaMask},
    irq::{IrqReturn, ThreadedHandler, ThreadedIrqReturn, ThreadedRegistration},
    pci,
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        Arc,
    },
};

#[path = "../abi/src/abi.rs"]
#[allow(dead_code, unreachable_pub, clippy::all)]
mod abi;
mod cmd_ring;
mod context;
mod debugfs;
mod device;
mod dma_map;
mod dma_mem;
mod event_ring;
mod fault;
mod file;
mod fill;
mod invalidate;
mod key_set;
mod latency;
mod observe;
mod pin;
mod registration;
mod regs;
mod remote;
mod remote_key;
mod shadow;
mod slots;
mod table;
mod trace;

use context::PendingFault;
use device::{MnicDev, BAR0_SIZE};
use file::MiscHandle;
use slots::ContextSlots;

/// Device node names: one per NIC, `/dev/mnic0` upwards.
const NAMES: [&CStr; 8] = [
    c"mnic0", c"mnic1", c"mnic2", c"mnic3", c"mnic4", c"mnic5", c"mnic6", c"mnic7",
];
/// Bit i set: `NAMES[i]` is in use.
static NAMES_USED: Atomic<u32> = Atomic::new(0);

fn claim_name() -> Result<u32> {
    let mut used = NAMES_USED.load(Relaxed);
    loop {
        let free = (!used).trailing_zeros();
        if free as usize >= NAMES.len() {
            return Err(ENOSPC);
        }
        match NAMES_USED.cmpxchg(used, used | (1 << free), Relaxed) {
            Ok(_) => return Ok(free),
            Err(now) => used = now,
        }
    }
}

fn release_name(i: u32) {
    let mut used = NAMES_USED.load(Relaxed);
    while let Err(now) = NAMES_USED.cmpxchg(used, used & !(1 << i), Relaxed) {
        used = now;
    }
}

/// The event interrupt (MSI-X vector 0): faults, errors and work completions.
struct EventIrq {
    dev: Arc<MnicDev>,
    contexts: Arc<ContextSlots>,
}

impl ThreadedHandler for EventIrq {
    fn handle(&self) -> ThreadedIrqReturn {
        // Everything (reading the cause is an MMIO round trip to the device) in the thread.
        ThreadedIrqReturn::WakeThread
    }

    fn handle_threaded(&self) -> IrqReturn {
        let dev = &self.dev;
        // Acknowledge first: an event written after the drain below raises a new interrupt.
        if dev.ack_irq().is_err() {
            return IrqReturn::None;
        }
        let mut q = dev.evq.lock();
        let mut n = 0u32;
        while let Some(ev) = q.next() {
            n += 1;
            match ev.kind {
                abi::event::FAULT => match self.contexts.get(ev.ctx) {
                    // Resolved by the context's own worker (fault.rs): a fault that blocks
                    // must not stall the other contexts' events.
                    Some(ctx) => ctx.queue_fault(PendingFault {
                        va: ev.addr,
                        write: ev.flags & abi::event::FLAG_WRITE != 0,
                        id: ev.id,
                        network: ev.info & abi::event::FAULT_INFO_NETWORK != 0,
                    }),
                    // The file is gone: CTX_DISABLE dropped the parked work already.
                    None => {}
                },
                abi::event::WORK_DONE => {
                    if let Some(ctx) = self.contexts.get(ev.ctx) {
                        ctx.work_completed();
                    }
                }
                abi::event::ERROR => {
                    dev_warn!(
                        dev.pdev(),
                        "device error {} ctx {:#x} addr {:#x} info {:#x}\n",
                        ev.code,
                        ev.ctx,
                        ev.addr,
                        ev.info
                    );
                }
                kind => dev_warn!(dev.pdev(), "unknown event kind {}\n", kind),
            }
            // Give slots back now and then so a burst does not stall the device.
            if n % 32 == 0 {
                let _ = dev.release_events(&q);
            }
        }
        let _ = dev.release_events(&q);
        IrqReturn::Handled
    }
}

/// Per bound device. Fields drop in declaration order: first no new opens, then no interrupt,
/// then the vectors, then (last reference aside) the device state and the context table.
#[pin_data(PinnedDrop)]
struct MnicPci<'bound> {
    #[pin]
    misc: MiscHandle,
    _debugfs: debugfs::DebugDir,
    #[pin]
    irq: ThreadedRegistration<'bound, EventIrq>,
    vecs: pci::IrqVectorRegistration<'bound>,
    dev: Arc<MnicDev>,
    name: u32,
    contexts: Arc<ContextSlots>,
}

#[pinned_drop]
impl PinnedDrop for MnicPci<'_> {
    fn drop(self: Pin<&mut Self>) {
        release_name(self.name);
    }
}

struct MnicDriver;

kernel::pci_device_table!(
    PCI_TABLE,
    <MnicDriver as pci::Driver>::IdInfo,
    // `pci::Vendor` has no constructor for 0x1234 (not in pci_ids.h): match the class and
    // check vendor and device in probe.
    [(pci::DeviceId::from_class(abi::MNIC_CLASS, 0xffffff), ())]
);

impl pci::Driver for MnicDriver {
    type IdInfo = ();
    type Data<'bound> = MnicPci<'bound>;
    const ID_TABLE: pci::IdTable<Self::IdInfo> = &PCI_TABLE;

    fn probe<'bound>(
        pdev: &'bound pci::Device<Core<'_>>,
        _info: Option<&'bound Self::IdInfo>,
    ) -> impl PinInit<Self::Data<'bound>, Error> + 'bound {
        try_pin_init!(&this in MnicPci {
            name: {
                if pdev.vendor_id().as_raw() != abi::MNIC_VENDOR_ID
                    || pdev.device_id() != abi::MNIC_DEVICE_ID
                {
                    return Err(ENODEV);
                }
                claim_name()?
            },
            contexts: Arc::pin_init(ContextSlots::new()?, GFP_KERNEL)?,
            dev: {
                pdev.enable_device_mem()?;
                pdev.set_master();
                // SAFETY: probe runs before any DMA allocation of this device.
                unsafe { pdev.dma_set_mask_and_coherent(DmaMask::new::<64>())? };
                let bar = pdev.iomap_region_sized::<BAR0_SIZE>(abi::BAR_REGS, c"mnic")?;
                let doorbells = pdev.iomap_region(abi::BAR_DOORBELLS, c"mnic-doorbells")?;
                // SAFETY: `name` and `contexts` were initialised above (fields initialise in
                // this order).
                let (name, contexts) =
                    unsafe { ((*this.as_ptr()).name, (*this.as_ptr()).contexts.clone()) };
                Arc::pin_init(
                    MnicDev::new(
                        pdev,
                        bar.into_devres()?,
                        doorbells.into_devres()?,
                        name,
                        contexts,
                    )?,
                    GFP_KERNEL,
                )?
            },
            vecs: pdev.alloc_irq_vectors(
                1,
                abi::MSIX_VECTORS.into(),
                pci::IrqTypes::default().with(pci::IrqType::MsiX),
            )?,
            irq <- {
                // SAFETY: `vecs` was initialised above and lives in this pinned structure until
                // it is dropped, after `irq` (declaration order): the borrow outlives every use.
                let vecs: &'bound pci::IrqVectorRegistration<'bound> =
                    unsafe { &*core::ptr::addr_of!((*this.as_ptr()).vecs) };
                // SAFETY: as above, for `dev` and `contexts`.
                let (dev, contexts) =
                    unsafe { ((*this.as_ptr()).dev.clone(), (*this.as_ptr()).contexts.clone()) };
                dev_info!(
                    pdev,
                    "mnic{}: {} MSI-X vectors, hardware {:#x}, caps {:#x}, node {:#x}\n",
                    dev.minor_index,
                    vecs.len(),
                    dev.hw_version,
                    dev.caps,
                    dev.node
                );
                let vector = vecs.index(abi::VECTOR_EVENT.into())?;
                // SAFETY: the registration is a field of the pinned `MnicPci` and is never
                // forgotten: it is dropped with it.
                unsafe {
                    ThreadedRegistration::new(
                        vector.into(),
                        kernel::irq::Flags::SHARED,
                        c"mnic-events",
                        Ok::<_, Error>(EventIrq { dev, contexts }),
                    )
                }
            },
            _debugfs: {
                // SAFETY: `dev`, `contexts` and `name` were initialised above.
                let (dev, contexts, name) = unsafe {
                    (
                        &(*this.as_ptr()).dev,
                        &(*this.as_ptr()).contexts,
                        (*this.as_ptr()).name,
                    )
                };
                debugfs::DebugDir::new(dev, contexts, NAMES[name as usize])?
            },
            misc <- {
                // SAFETY: `dev`, `contexts` and `name` were initialised above.
                let (dev, contexts, name) = unsafe {
                    (
                        (*this.as_ptr()).dev.clone(),
                        (*this.as_ptr()).contexts.clone(),
                        (*this.as_ptr()).name,
                    )
                };
                MiscHandle::new(dev, contexts, NAMES[name as usize])
            },
        }? Error)
    }

    fn unbind<'bound>(pdev: &'bound pci::Device<Core<'_>>, this: Pin<&Self::Data<'bound>>) {
        // No new device access; running ones finish; the device is reset (no DMA afterwards).
        this.dev.unbind(pdev.as_ref());
    }
}

kernel::module_pci_driver! {
    type: MnicDriver,
    name: "mnic",
    authors: ["mnic developers"],
    description: "mnic NIC: device translations that follow the CPU page tables, no pinning",
    license: "GPL",
}
