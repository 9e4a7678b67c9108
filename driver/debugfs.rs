// SPDX-License-Identifier: GPL-2.0
//! `/sys/kernel/debug/mnicN/`: what the driver knows, for people and tests.
//!
//! - `contexts`: one line per open context (owner's registrations, mapped leaves, pinned pages,
//!   faults, invalidations, SYNC waits);
//! - `sync_wait_us`: histogram of how long SYNC waits took (invalidations, the cost of
//!   coherence, and `MNIC_IOC_SYNC`), per power of two microseconds, over every context;
//! - `fault_us`: the same for device faults (receipt of the event to the posted answer);
//! - `latency_us`: both histograms of each open context, one line per context and histogram;
//! - `device`: the device's counters, then the driver's fault answers and the posts that carried
//!   them (`driver_fault_answers`, `driver_fault_answer_posts`: answers of contexts resolved in
//!   parallel share a post);
//! - `fault_deregister_delay_ms` (read-write): fault injection for tests: deregistration sleeps
//!   this long between its two steps (taking the translations down, removing the notifier), so a
//!   test can land an munmap between them deterministically;
//! - `fault_resolve_delay_ms` (read-write): the next device fault sleeps this long before it
//!   is resolved (one shot: a fault on an unresponsive FUSE server);
//! - `fault_unbind_delay_ms` (read-write): unbind sleeps this long once it has stopped new
//!   submissions, before the device is stopped (the window of an invalidation racing unbind);
//! - `fault_around_kib` (read-write, up to 2048): the window a device fault faults in around
//!   its page (docs/performance.md);
//! - `trapped_doorbells` (read-write, 0 or 1): 1 makes every command post write the
//!   `CMDQ_TAIL` register and turns the device's polling off (`SPIN_US` override 0, from
//!   the next post on), so a benchmark can compare the two ways of posting (spec §4a);
//! - `spin_us` (read-write, up to 1048575): nonzero overrides the device's spin budget
//!   (`SPIN_US`, from the next post on), so a test of the shadow path does not depend on how
//!   fast a loaded host schedules the guest; 0 gives the device its own budget back;
//! - `dma_maps`: DMA mappings of user pages (`dma_map.rs`), of the whole module: `live` (mapped
//!   now), `mapped` and `unmapped` (since the module was loaded);
//! - `fabric`: the device's fabric node id (`FABRIC_NODE`, 0xffff without a fabric), its live
//!   remote keys (`key_set.rs`) and the network faults (spec §12) received since it was bound;
//!   then, with `CAPS.FABRIC`, the device's statistics of PUT, GET and tagged messages (the
//!   `FABRIC_COUNTER` registers, spec §10), one `rma_<name> <value>` line each;
//! - `bar0`: the bus address of the register BAR (how test tools such as the stale-access
//!   oracle find the PCI function behind `/dev/mnicN`).

use core::fmt;

use kernel::{
    debugfs::{Dir, File, Reader},
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        Arc,
    },
    uaccess::UserSliceReader,
};

use crate::abi::{self, counter, fabric_counter, pte, LATENCY_BUCKETS};
use crate::device::{MnicDev, FAULT_AROUND_MAX_KIB};
use crate::latency::Histogram;
use crate::slots::ContextSlots;

/// Per-context table.
pub(crate) struct Contexts(pub(crate) Arc<ContextSlots>);
/// One of the device's latency histograms (`latency.rs`), chosen by `which`.
pub(crate) struct DevHistogram {
    dev: Arc<MnicDev>,
    which: fn(&MnicDev) -> &Histogram,
}
/// Both latency histograms of every open context.
pub(crate) struct CtxLatencies(pub(crate) Arc<ContextSlots>);
/// Device counters.
pub(crate) struct Counters(pub(crate) Arc<MnicDev>);
/// DMA mappings of user pages (module-wide).
pub(crate) struct DmaMaps;
/// BAR0 bus address.
pub(crate) struct Bar0(pub(crate) u64);
/// The device's part of a fabric.
pub(crate) struct Fabric(pub(crate) Arc<MnicDev>);
/// A knob of the device, a number read and written as text: a fault-injection delay (in
/// milliseconds) or a switch. Values above `max` are refused.
pub(crate) struct Knob {
    dev: Arc<MnicDev>,
    field: fn(&MnicDev) -> &Atomic<u32>,
    max: u32,
}

/// Longest fault-injection delay: a test knob, not a way to hang a process for good.
const MAX_DELAY_MS: u32 = 10_000;

impl fmt::Debug for Bar0 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:#x}", self.0)
    }
}

impl fmt::Debug for DmaMaps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (mapped, unmapped) = crate::dma_map::counts();
        writeln!(f, "live {}", mapped - unmapped)?;
        writeln!(f, "mapped {mapped}")?;
        writeln!(f, "unmapped {unmapped}")
    }
}

impl fmt::Debug for Knob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", (self.field)(&self.dev).load(Relaxed))
    }
}

impl Reader for Knob {
    fn read_from_slice(&self, reader: &mut UserSliceReader) -> Result {
        let mut buf = [0u8; 12];
        let n = reader.len();
        if n > buf.len() {
            return Err(EINVAL);
        }
        reader.read_slice(&mut buf[..n])?;
        let text = core::str::from_utf8(&buf[..n]).map_err(|_| EINVAL)?;
        let value: u32 = text.trim().parse().map_err(|_| EINVAL)?;
        if value > self.max {
            return Err(EINVAL);
        }
        (self.field)(&self.dev).store(value, Relaxed);
        Ok(())
    }
}

impl fmt::Debug for Contexts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "ctx  regs  mapped_4k  mapped_2m  pinned  faults  aborts  invalidations  entries_inv  sync_waits  sync_avg_us  sync_max_us  tables"
        )?;
        let Ok(contexts) = self.0.live() else {
            return writeln!(f, "(out of memory)");
        };
        for ctx in contexts.iter() {
            let s = &ctx.stats;
            let valid = ctx.count(0, pte::VA_LIMIT);
            let waits = s.sync_waits.load(Relaxed);
            writeln!(
                f,
                "{:3}  {:4}  {:9}  {:9}  {:6}  {:6}  {:6}  {:13}  {:11}  {:10}  {:11}  {:11}  {:6}",
                ctx.index,
                ctx.registration_count(),
                valid.small,
                valid.huge,
                ctx.pinned_pages(0, pte::VA_LIMIT),
                s.faults.load(Relaxed),
                s.aborts.load(Relaxed),
                s.invalidations.load(Relaxed),
                s.entries_invalidated.load(Relaxed),
                waits,
                s.sync_wait_ns.load(Relaxed) / waits.max(1) / 1000,
                s.sync_wait_max_ns.load(Relaxed) / 1000,
                ctx.tables(),
            )?;
        }
        Ok(())
    }
}

impl fmt::Debug for DevHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "wait_us  count")?;
        for (i, n) in (self.which)(&self.dev).counts().iter().enumerate() {
            if i + 1 == LATENCY_BUCKETS {
                writeln!(f, ">={:<6} {n}", abi::latency_bucket_start_us(i))?;
            } else {
                writeln!(f, "<{:<7} {n}", abi::latency_bucket_start_us(i + 1))?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for CtxLatencies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Bucket i starts at the i-th bound (0, 2, 4, ... 32768 microseconds).
        write!(f, "ctx  what     ")?;
        for i in 0..LATENCY_BUCKETS {
            write!(f, " {:>6}", abi::latency_bucket_start_us(i))?;
        }
        writeln!(f)?;
        let Ok(contexts) = self.0.live() else {
            return writeln!(f, "(out of memory)");
        };
        for ctx in contexts.iter() {
            let l = &ctx.stats.latency;
            for (what, h) in [("sync_wait", &l.sync_wait), ("fault", &l.fault)] {
                write!(f, "{:3}  {:9}", ctx.index, what)?;
                for n in h.counts() {
                    write!(f, " {n:6}")?;
                }
                writeln!(f)?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Fabric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dev = &self.0;
        writeln!(f, "node {:#x}", dev.node)?;
        writeln!(f, "remote_keys {}", dev.remote_keys.lock().len())?;
        writeln!(f, "network_faults {}", dev.network_faults.load(Relaxed))?;
        if dev.caps & abi::caps::FABRIC == 0 {
            return Ok(());
        }
        // The device's own statistics, named as the host's control socket names them (the
        // prefix keeps the device's `rma_network_faults` apart from the driver's line above).
        let mut values = [0u64; fabric_counter::COUNT as usize];
        if dev.fabric_counters(&mut values).is_err() {
            return writeln!(f, "(device gone)");
        }
        for (name, v) in fabric_counter::NAMES.iter().zip(values.iter()) {
            writeln!(f, "{}{name} {v}", fabric_counter::PREFIX)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut values = [0u64; counter::COUNT as usize];
        if self.0.counters(&mut values).is_err() {
            return writeln!(f, "(device gone)");
        }
        for (name, v) in counter::NAMES.iter().zip(values.iter()) {
            writeln!(f, "{name} {v}")?;
        }
        // The driver's side of the fault answers: how many posts carried them.
        writeln!(
            f,
            "driver_fault_answers {}",
            self.0.answers_posted.load(Relaxed)
        )?;
        writeln!(
            f,
            "driver_fault_answer_posts {}",
            self.0.answer_posts.load(Relaxed)
        )
    }
}

/// The directory and its files (removed when dropped; files first).
pub(crate) struct DebugDir {
    _contexts: Pin<KBox<File<Contexts>>>,
    _sync_waits: Pin<KBox<File<DevHistogram>>>,
    _faults: Pin<KBox<File<DevHistogram>>>,
    _latencies: Pin<KBox<File<CtxLatencies>>>,
    _counters: Pin<KBox<File<Counters>>>,
    _bar0: Pin<KBox<File<Bar0>>>,
    _fabric: Pin<KBox<File<Fabric>>>,
    _dma_maps: Pin<KBox<File<DmaMaps>>>,
    _deregister_delay: Pin<KBox<File<Knob>>>,
    _unbind_delay: Pin<KBox<File<Knob>>>,
    _resolve_delay: Pin<KBox<File<Knob>>>,
    _trapped_doorbells: Pin<KBox<File<Knob>>>,
    _fault_around: Pin<KBox<File<Knob>>>,
    _spin_us: Pin<KBox<File<Knob>>>,
    _dir: Dir,
}

impl DebugDir {
    pub(crate) fn new(
        dev: &Arc<MnicDev>,
        contexts: &Arc<ContextSlots>,
        name: &'static CStr,
    ) -> Result<Self> {
        let dir = Dir::new(name);
        let knob = |field: fn(&MnicDev) -> &Atomic<u32>, max| Knob {
            dev: dev.clone(),
            field,
            max,
        };
        Ok(DebugDir {
            _contexts: KBox::pin_init(
                dir.read_only_file(c"contexts", Contexts(contexts.clone())),
                GFP_KERNEL,
            )?,
            _sync_waits: KBox::pin_init(
                dir.read_only_file(
                    c"sync_wait_us",
                    DevHistogram {
                        dev: dev.clone(),
                        which: |d| &d.latency.hist.sync_wait,
                    },
                ),
                GFP_KERNEL,
            )?,
            _faults: KBox::pin_init(
                dir.read_only_file(
                    c"fault_us",
                    DevHistogram {
                        dev: dev.clone(),
                        which: |d| &d.latency.hist.fault,
                    },
                ),
                GFP_KERNEL,
            )?,
            _latencies: KBox::pin_init(
                dir.read_only_file(c"latency_us", CtxLatencies(contexts.clone())),
                GFP_KERNEL,
            )?,
            _counters: KBox::pin_init(
                dir.read_only_file(c"device", Counters(dev.clone())),
                GFP_KERNEL,
            )?,
            _bar0: KBox::pin_init(dir.read_only_file(c"bar0", Bar0(dev.bar_phys)), GFP_KERNEL)?,
            _fabric: KBox::pin_init(
                dir.read_only_file(c"fabric", Fabric(dev.clone())),
                GFP_KERNEL,
            )?,
            _dma_maps: KBox::pin_init(dir.read_only_file(c"dma_maps", DmaMaps), GFP_KERNEL)?,
            _deregister_delay: KBox::pin_init(
                dir.read_write_file(
                    c"fault_deregister_delay_ms",
                    knob(|d| &d.deregister_delay_ms, MAX_DELAY_MS),
                ),
                GFP_KERNEL,
            )?,
            _unbind_delay: KBox::pin_init(
                dir.read_write_file(
                    c"fault_unbind_delay_ms",
                    knob(|d| &d.unbind_delay_ms, MAX_DELAY_MS),
                ),
                GFP_KERNEL,
            )?,
            _resolve_delay: KBox::pin_init(
                dir.read_write_file(
                    c"fault_resolve_delay_ms",
                    knob(|d| &d.resolve_delay_ms, MAX_DELAY_MS),
                ),
                GFP_KERNEL,
            )?,
            _trapped_doorbells: KBox::pin_init(
                dir.read_write_file(c"trapped_doorbells", knob(|d| &d.trapped_doorbells, 1)),
                GFP_KERNEL,
            )?,
            _fault_around: KBox::pin_init(
                dir.read_write_file(
                    c"fault_around_kib",
                    knob(|d| &d.fault_around_kib, FAULT_AROUND_MAX_KIB),
                ),
                GFP_KERNEL,
            )?,
            _spin_us: KBox::pin_init(
                dir.read_write_file(c"spin_us", knob(|d| &d.spin_us, abi::spin::US_MASK)),
                GFP_KERNEL,
            )?,
            _dir: dir,
        })
    }
}
