//! `mnic-fabric-test`: remote memory access (PUT/GET, `docs/fabric.md` 14.13) and tagged
//! messages (SEND/RECV, 14.14) between two NICs of one guest that are nodes of one fabric
//! (`mnic-vm run --devices 2 --fabric`), KTAP on stdout.
//!
//! The initiator (or sender) context is on `/dev/mnic0`, the target (or receiver) context
//! on `/dev/mnic1`; both are
//! watched by the stale-access oracle when the image has it. Each case checks the data at
//! both ends, the completion statuses (as the library's typed errors), the fault and
//! invalidation counters of the side whose pages moved, and that neither device counted a
//! stale access or an oracle violation.
//!
//! Usage: `mnic-fabric-test [--soak] [CASE...]`; without names every default case runs.
//! `--soak` (or `MNIC_SOAK=1`) makes the swap-during-PUT loop long. `peer_nic_dies` runs
//! only when named, with the roles reversed: it needs the target's NIC, `/dev/mnic0`,
//! killed mid-stream (`MNIC_KILL_DEVICE_AFTER`, see `peer_death.rs`).

mod errors;
mod events;
mod messages;
mod msg;
mod msgpaging;
mod paging;
mod pair;
mod peer_death;
mod sizes;

use mnic_guest_util::Case;

fn main() {
    let cases: &[Case] = &[
        ("put_get_sizes", sizes::put_get_sizes, true),
        ("target_untouched", sizes::target_untouched, true),
        (
            "swap_target_before_put",
            paging::swap_target_before_put,
            true,
        ),
        (
            "swap_target_during_put",
            paging::swap_target_during_put,
            true,
        ),
        ("swap_initiator", paging::swap_initiator, true),
        (
            "migrate_target_during_put",
            paging::migrate_target_during_put,
            true,
        ),
        (
            "munmap_target_mid_stream",
            events::munmap_target_mid_stream,
            true,
        ),
        (
            "mprotect_target_readonly",
            events::mprotect_target_readonly,
            true,
        ),
        ("fork_target_cow", events::fork_target_cow, true),
        ("bad_key_route_context", errors::bad_key_route_context, true),
        (
            "range_outside_registration",
            errors::range_outside_registration,
            true,
        ),
        ("read_only_key_put", errors::read_only_key_put, true),
        ("write_only_key_get", errors::write_only_key_get, true),
        ("target_context_closed", errors::target_context_closed, true),
        ("deregister_then_put", errors::deregister_then_put, true),
        ("msg_sizes", messages::msg_sizes, true),
        ("msg_unexpected", messages::msg_unexpected, true),
        ("msg_match_masks", messages::msg_match_masks, true),
        ("msg_truncation", messages::msg_truncation, true),
        ("msg_stream", messages::msg_stream, true),
        (
            "msg_recv_buffer_paged",
            msgpaging::msg_recv_buffer_paged,
            true,
        ),
        (
            "msg_rndv_source_swapped",
            msgpaging::msg_rndv_source_swapped,
            true,
        ),
        ("msg_receiver_exits", msgpaging::msg_receiver_exits, true),
        // Only when named, in a boot that kills /dev/mnic0's engine (skipped elsewhere).
        ("peer_nic_dies", peer_death::peer_nic_dies, false),
    ];
    mnic_guest_util::run("mnic-fabric-test", cases);
}
