//! `mnic-matrix-test`: the correctness matrix, run in the guest (KTAP on stdout).
//!
//! Every page-table event Linux can apply to registered memory, with the device using it: each
//! case checks the data (patterns), the device table entries before and after the event (QUERY:
//! gone when the syscall returns), residency / swap / meminfo where relevant, the driver's
//! counters, and that the device's stale-access counter stays 0. Then concurrency, isolation,
//! hostile input, module unload, unbind and device death.
//!
//! Usage: `mnic-matrix-test [--soak] [CASE...]`. Without case names every default case runs;
//! cases marked explicit (device death, two NICs) run only when named. `--soak` or `MNIC_SOAK=1` makes
//! the bounded loops long.

mod around;
mod devices;
mod dma;
mod holes;
mod mm;
mod stress;
mod uffd;
mod util;

use mnic_guest_util::Case;

fn main() {
    // (name, case, runs by default)
    let cases: &[Case] = &[
        ("anon_read_write", mm::anon_read_write, true),
        ("pageout_memcg_pressure", mm::pageout_memcg_pressure, true),
        ("anon_dontneed", mm::anon_dontneed, true),
        ("munmap_partial_spanning", mm::munmap_partial_spanning, true),
        ("mremap_move_grow", mm::mremap_move_grow, true),
        ("mprotect_ro_rw", mm::mprotect_ro_rw, true),
        ("fork_cow_both", mm::fork_cow_both, true),
        (
            "fork_dontfork_wipeonfork",
            mm::fork_dontfork_wipeonfork,
            true,
        ),
        ("thp_huge_split_collapse", mm::thp_huge_split_collapse, true),
        ("migrate_numa", mm::migrate_numa, true),
        ("mlock_migrate", mm::mlock_migrate, true),
        ("ksm_merge_cow", mm::ksm_merge_cow, true),
        ("userfaultfd_missing_wp", uffd::userfaultfd_missing_wp, true),
        (
            "shared_memfd_two_processes",
            mm::shared_memfd_two_processes,
            true,
        ),
        ("file_read_write", mm::file_read_write, true),
        ("mixedmap", mm::mixedmap, true),
        ("exit_exec_dma_in_flight", mm::exit_exec_dma_in_flight, true),
        ("anon_teardown", stress::anon_teardown, true),
        ("hammer_concurrent", stress::hammer_concurrent, true),
        ("many_contexts", stress::many_contexts, true),
        (
            "stuck_fault_stalls_only_its_context",
            stress::stuck_fault_stalls_only_its_context,
            true,
        ),
        (
            "deregistration_frees_tables",
            stress::deregistration_frees_tables,
            true,
        ),
        ("two_process_isolation", stress::two_process_isolation, true),
        (
            "oom_kill_registered_idle",
            mm::oom_kill_registered_idle,
            true,
        ),
        ("oom_kill_registered", mm::oom_kill_registered, true),
        ("anon_madv_free", mm::anon_madv_free, true),
        (
            "read_fault_keeps_pages_clean",
            mm::read_fault_keeps_pages_clean,
            true,
        ),
        ("dma_mappings_released", dma::dma_mappings_released, true),
        (
            "dma_unmap_waits_for_sync",
            dma::dma_unmap_waits_for_sync,
            true,
        ),
        (
            "write_fault_around_cow",
            around::write_fault_around_cow,
            true,
        ),
        ("ioctl_fuzz", stress::ioctl_fuzz, true),
        ("hostile_descriptors", stress::hostile_descriptors, true),
        // Last: they unload the module / unbind the device.
        (
            "rmmod_with_open_context",
            stress::rmmod_with_open_context,
            true,
        ),
        (
            "unbind_with_open_context",
            stress::unbind_with_open_context,
            true,
        ),
        ("unbind_zaps_doorbells", stress::unbind_zaps_doorbells, true),
        ("dma_unmapped_at_unbind", dma::dma_unmapped_at_unbind, true),
        ("garbage_registers", stress::garbage_registers, true),
        // Only in their own boots (mnic-vm run --kill-device-after; --devices 2).
        ("device_killed", stress::device_killed, false),
        (
            "device_killed_under_load",
            stress::device_killed_under_load,
            false,
        ),
        ("device_replaced", stress::device_replaced, false),
        ("two_nics", devices::two_nics, false),
        // The invariant's holes (holes.rs): in their own boot, a strict device halts on one.
        (
            "huge_leaf_over_cached_small",
            holes::huge_leaf_over_cached_small,
            false,
        ),
        (
            "deregister_races_munmap",
            holes::deregister_races_munmap,
            false,
        ),
        (
            "huge_ro_leaf_partial_write",
            holes::huge_ro_leaf_partial_write,
            false,
        ),
        (
            "sync_timeout_slow_device",
            holes::sync_timeout_slow_device,
            false,
        ),
        (
            "unbind_races_invalidation",
            holes::unbind_races_invalidation,
            false,
        ),
    ];
    mnic_guest_util::run("mnic-matrix-test", cases);
}
