// SPDX-License-Identifier: GPL-2.0
//! The driver's kernel trace events (`mnic:*`, defined in C in `mnic_trace.h`; spec §13 lists
//! them), as safe Rust functions with plain integer arguments.
//!
//! For each event `e` this file has `e(...)`, which fires it, and `e_enabled()`, for a caller
//! that must compute an argument first (and should not when nobody listens).
//!
//! The kernel's `declare_trace!` reaches the tracepoint through the kernel crate's generated
//! bindings, which an out-of-tree module cannot extend, so the same two steps are written here
//! against our own C symbols: test the event's static key (`__tracepoint_e.key`) in Rust, and
//! only when it is on call `rust_do_trace_e` (`mnic_trace.c`), which fires the event. A
//! disabled event thus costs what it costs a C caller of `trace_e()`: with `CONFIG_JUMP_LABEL`
//! a patched-out jump; without it (the guest kernel of `images/kernel.config`) one read of the
//! key's count, through the kernel's `static_key_count` helper. Either is nothing next to what
//! the traced steps cost (a SYNC or a device fault is at least one trip through the device).

use kernel::bindings::tracepoint;

/// Defines, for each event, the C symbols and the safe `name` / `name_enabled` pair.
macro_rules! events {
    ($( $(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?); )*) => {
        kernel::macros::paste! {
            // The symbols `mnic_trace.c` defines (`DEFINE_TRACE` and `CREATE_RUST_TRACE_POINTS`
            // of `<linux/tracepoint.h>`), linked into the same module. `struct tracepoint` has
            // a zero-sized member rustc calls FFI-unsafe; the statics are only ever addressed
            // (their static key), never passed or read by value.
            #[allow(improper_ctypes)]
            extern "C" {
                $(
                    static [<__tracepoint_ $name>]: tracepoint;
                    fn [<rust_do_trace_ $name>]($($arg: $ty),*);
                )*
            }
            $(
                /// Whether the event is enabled (someone traces it).
                #[inline(always)]
                #[allow(dead_code)]
                pub(crate) fn [<$name _enabled>]() -> bool {
                    // SAFETY: `__tracepoint_<name>` is the `struct tracepoint` DEFINE_TRACE
                    // made for this event in this module; its `key` is a real static key, which
                    // may always be tested.
                    unsafe {
                        kernel::static_branch_unlikely!([<__tracepoint_ $name>], tracepoint, key)
                    }
                }

                $(#[$doc])*
                #[inline(always)]
                pub(crate) fn $name($($arg: $ty),*) {
                    if [<$name _enabled>]() {
                        // SAFETY: the prototype above is the event's `TP_PROTO` in
                        // `mnic_trace.h`, argument by argument (plain integers and bools); the
                        // function only records them and may run in any context.
                        unsafe { [<rust_do_trace_ $name>]($($arg),*) }
                    }
                }
            )*
        }
    };
}

events! {
    /// `mnic:inval_start`: an invalidation callback cleared `pages` 4 KiB and `huge` 2 MiB
    /// leaves of [start, end) (`event`: the `mmu_notifier_event`).
    fn inval_start(
        dev: u32,
        ctx: u16,
        handle: u32,
        start: u64,
        end: u64,
        event: u32,
        pages: u64,
        huge: u64,
        blockable: bool,
    );
    /// `mnic:inval_end`: that invalidation is complete for the device, `us` after its start,
    /// behind SYNC `seq` (0: it needed none).
    fn inval_end(
        dev: u32,
        ctx: u16,
        handle: u32,
        start: u64,
        end: u64,
        event: u32,
        seq: u64,
        us: u64,
    );
    /// `mnic:sync_post`: SYNC `seq` is on the command queue behind `cmds` commands (the first
    /// of context `ctx`, -1 if none); `rang`: the tail register was written.
    fn sync_post(dev: u32, ctx: i32, seq: u64, cmds: u32, rang: bool);
    /// `mnic:sync_done`: a wait saw SYNC `seq` after `us`; `polled`: within the polling phase.
    fn sync_done(dev: u32, seq: u64, us: u64, polled: bool);
    /// `mnic:fault_recv`: the event thread took fault `id` at `va`; `remote`: a network fault
    /// (raised by a packet from the fabric, spec §12).
    fn fault_recv(dev: u32, ctx: u16, va: u64, write: bool, id: u64, remote: bool);
    /// `mnic:fault_resolved`: the fill of fault `id` finished `us` after its receipt with
    /// `result` (0 or an errno); `window` pages of its fault-around window are mapped.
    fn fault_resolved(
        dev: u32,
        ctx: u16,
        va: u64,
        write: bool,
        id: u64,
        us: u64,
        window: u32,
        result: i32,
    );
    /// `mnic:fault_resumed`: the answer to fault `id` (RESUME if `result` is 0, else ABORT
    /// with that errno) is posted, `us` after its receipt.
    fn fault_resumed(dev: u32, ctx: u16, id: u64, us: u64, result: i32);
}
