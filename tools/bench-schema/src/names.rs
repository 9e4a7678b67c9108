//! The names in a report: rows, metrics, ratios and parameters. The `mnic` tool writes
//! them and `mnic-bench-report` looks them up, both through these constants.

/// Row names (`Row::name`), by benchmark.
pub mod row {
    // copy
    /// Device COPY (measured).
    pub const DEVICE_COPY: &str = "device_copy";
    /// CPU memcpy of the same size (baseline).
    pub const MEMCPY: &str = "memcpy";
    // register
    /// On-demand registration (measured).
    pub const ON_DEMAND: &str = "on_demand";
    /// `REG_PINNED` registration (baseline).
    pub const PINNED: &str = "pinned";
    // fault
    /// Device pass with empty translations: every page faults.
    pub const DEVICE_FIRST_TOUCH: &str = "device_first_touch";
    /// Device pass with every translation cached.
    pub const DEVICE_HOT_PASS: &str = "device_hot_pass";
    /// `MNIC_IOC_PREFETCH` of the same pages.
    pub const PREFETCH_IOCTL: &str = "prefetch_ioctl";
    /// Device pass right after the prefetch.
    pub const DEVICE_PASS_AFTER_PREFETCH: &str = "device_pass_after_prefetch";
    /// CPU first touch of fresh anonymous memory.
    pub const CPU_FIRST_TOUCH: &str = "cpu_first_touch";
    /// Device pass after `MADV_PAGEOUT`: swap-in faults.
    pub const DEVICE_SWAPIN: &str = "device_swapin";
    /// Device write pass after `MADV_PAGEOUT`: swap-in faults of writes.
    pub const DEVICE_WRITE_SWAPIN: &str = "device_write_swapin";
    /// CPU loads after `MADV_PAGEOUT`: swap-in faults.
    pub const CPU_SWAPIN: &str = "cpu_swapin";
    // invalidate
    /// munmap of a registered range, every device entry present.
    pub const MUNMAP_REGISTERED: &str = "munmap_registered";
    /// munmap of a registered range with no device entry.
    pub const MUNMAP_REGISTERED_NO_ENTRIES: &str = "munmap_registered_no_entries";
    /// munmap of an unregistered range (baseline).
    pub const MUNMAP_UNREGISTERED: &str = "munmap_unregistered";
    /// `MADV_PAGEOUT` of a registered range, every device entry present.
    pub const PAGEOUT_REGISTERED: &str = "pageout_registered";
    /// `MADV_PAGEOUT` of an unregistered range (baseline).
    pub const PAGEOUT_UNREGISTERED: &str = "pageout_unregistered";
    // traffic
    /// Generator runs without page-outs.
    pub const DEVICE_TRAFFIC: &str = "device_traffic";
    /// Generator runs while a second thread pages the range out.
    pub const DEVICE_TRAFFIC_PAGEOUT: &str = "device_traffic_pageout";
    /// The CPU doing the same accesses.
    pub const CPU_SAME_PATTERN: &str = "cpu_same_pattern";
    // sync
    /// `MNIC_IOC_SYNC` round trips, the driver writing the command-queue shadow page.
    pub const SYNC_SHADOW: &str = "sync_shadow";
    /// The same with `trapped_doorbells` = 1: the driver rings `CMDQ_TAIL` every time and
    /// the device does not poll.
    pub const SYNC_TRAPPED: &str = "sync_trapped";
    // doorbell
    /// One hot COPY item, post to completion, on a context with a shadow doorbell.
    pub const COPY_ITEM_SHADOW: &str = "copy_item_shadow";
    /// The same on a context with the plain mapped doorbell (every post trapped).
    pub const COPY_ITEM_TRAPPED: &str = "copy_item_trapped";
    // idle
    /// The device's CPU time while nothing is posted, its spin budget long over.
    pub const DEVICE_IDLE: &str = "device_idle";
    /// The device's CPU time while one context posts NOP items back to back.
    pub const DEVICE_BUSY: &str = "device_busy";
    // pingpong, bw: one row per message size, named with [`sized`].
    /// PUT to the peer, post to the last bytes visible in its memory (measured).
    pub const PUT_ONE_WAY: &str = "put_one_way";
    /// Local COPY on the initiator's device, post to the last bytes visible (baseline).
    pub const COPY_ONE_WAY: &str = "copy_one_way";
    /// PUT items back to back to the peer (measured).
    pub const PUT_BW: &str = "put_bw";
    /// GET items back to back from the peer (measured).
    pub const GET_BW: &str = "get_bw";
    /// The same bytes moved by local COPY items on the initiator's device (baseline).
    pub const COPY_BW: &str = "copy_bw";
    /// Half a tagged SEND/RECV round trip (`--op send`): a SEND to the peer into a receive
    /// posted there, answered by a SEND back, from the first post to the answer's receive
    /// completion, halved (the one-way latency as `mx_pingpong` reports it; measured).
    pub const SEND_HALF_ROUND_TRIP: &str = "send_half_round_trip";
    /// SEND items back to back to the peer, into receives posted there (`--op send`;
    /// measured).
    pub const SEND_BW: &str = "send_bw";
    // bw --target-pageout: one PUT (or COPY) per iteration, per page.
    /// One PUT into the target's window paged out (`MADV_PAGEOUT`) just before: a network
    /// fault at the target per missing page (measured).
    pub const PUT_SWAPPED_TARGET: &str = "put_swapped_target";
    /// The same PUT into the resident, translated window (reference).
    pub const PUT_RESIDENT_TARGET: &str = "put_resident_target";
    /// One local COPY of the same bytes into a destination paged out just before: a local
    /// device fault per missing page (baseline).
    pub const COPY_SWAPPED_DST: &str = "copy_swapped_dst";
    // bw --target-pinned
    /// PUT items back to back into a target window registered on demand (measured).
    pub const PUT_BW_ON_DEMAND_TARGET: &str = "put_bw_on_demand_target";
    /// The same into a target window registered `PINNED` (baseline).
    pub const PUT_BW_PINNED_TARGET: &str = "put_bw_pinned_target";

    /// The name of row (or ratio) `base` for messages of `bytes` bytes: `base/bytes`.
    pub fn sized(base: &str, bytes: u64) -> String {
        format!("{base}/{bytes}")
    }
}

/// Metric names (`Row::metrics`).
pub mod metric {
    // Every timed row.
    /// Timed iterations.
    pub const ITERS: &str = "iters";
    /// Bytes per iteration.
    pub const BYTES: &str = "bytes";
    /// Mean time per iteration, µs.
    pub const MEAN_US: &str = "mean_us";
    /// Fastest iteration, µs.
    pub const MIN_US: &str = "min_us";
    /// Median iteration, µs.
    pub const P50_US: &str = "p50_us";
    /// Slowest iteration, µs.
    pub const MAX_US: &str = "max_us";
    /// 99th percentile iteration, µs (pingpong).
    pub const P99_US: &str = "p99_us";
    /// Throughput over all iterations, MiB/s.
    pub const MIB_PER_S: &str = "mib_per_s";
    // Rows that count faults.
    /// Driver faults per timed iteration.
    pub const FAULTS_PER_ITER: &str = "faults_per_iter";
    /// Device faults (its `faults` counter) per timed iteration, of the device whose memory
    /// faulted (bw `--target-pageout`: the target's, one per network fault).
    pub const DEVICE_FAULTS_PER_ITER: &str = "device_faults_per_iter";
    // register
    /// Mean registration time, µs.
    pub const REGISTER_US: &str = "register_us";
    /// Median registration time, µs.
    pub const REGISTER_P50_US: &str = "register_p50_us";
    /// Mean first device pass, µs.
    pub const FIRST_TOUCH_US: &str = "first_touch_us";
    /// Mean deregistration time, µs.
    pub const DEREGISTER_US: &str = "deregister_us";
    /// Mean register + first pass + deregister, µs.
    pub const TOTAL_US: &str = "total_us";
    // fault, invalidate: per page.
    /// Pages per iteration.
    pub const PAGES: &str = "pages";
    /// Median cost per page, ns.
    pub const NS_PER_PAGE: &str = "ns_per_page";
    /// Driver SYNC waits per iteration.
    pub const SYNC_WAITS_PER_ITER: &str = "sync_waits_per_iter";
    /// Mean SYNC wait, µs.
    pub const SYNC_WAIT_MEAN_US: &str = "sync_wait_mean_us";
    /// SYNC wait time per iteration, µs.
    pub const SYNC_WAIT_US_PER_ITER: &str = "sync_wait_us_per_iter";
    /// Driver invalidations per iteration.
    pub const INVALIDATIONS_PER_ITER: &str = "invalidations_per_iter";
    /// Device entries invalidated per iteration.
    pub const ENTRIES_INVALIDATED_PER_ITER: &str = "entries_invalidated_per_iter";
    // traffic: totals over the timed runs.
    /// Operations per second over all iterations.
    pub const OPS_PER_S: &str = "ops_per_s";
    /// Device stale accesses (must stay 0).
    pub const STALE_ACCESSES: &str = "stale_accesses";
    /// Device faults.
    pub const DEVICE_FAULTS: &str = "device_faults";
    /// Device invalidations.
    pub const DEVICE_INVALIDATIONS: &str = "device_invalidations";
    /// Driver faults.
    pub const DRIVER_FAULTS: &str = "driver_faults";
    /// Driver invalidations.
    pub const DRIVER_INVALIDATIONS: &str = "driver_invalidations";
    /// Driver SYNC waits.
    pub const SYNC_WAITS: &str = "sync_waits";
    /// `MADV_PAGEOUT` calls made by the page-out thread.
    pub const PAGEOUTS: &str = "pageouts";
    // sync, doorbell: device counters per operation (spec §4a).
    /// Doorbell register writes per operation (`doorbells`).
    pub const DOORBELLS_PER_OP: &str = "doorbells_per_op";
    /// Tails taken from shadow pages per operation (`shadow_tails`).
    pub const SHADOW_TAILS_PER_OP: &str = "shadow_tails_per_op";
    /// Times the device's data thread went to sleep, per operation (`sleeps`).
    pub const SLEEPS_PER_OP: &str = "sleeps_per_op";
    // idle
    /// Device process CPU time over the measurement, µs (`device_cpu_us`).
    pub const DEVICE_CPU_US: &str = "device_cpu_us";
    /// Wall time of the measurement, µs.
    pub const WALL_US: &str = "wall_us";
    /// Device CPU time as a percentage of one core.
    pub const DEVICE_CPU_PERCENT: &str = "device_cpu_percent";
    /// Times the device went to sleep, per second.
    pub const SLEEPS_PER_S: &str = "sleeps_per_s";
    /// Doorbell register writes per second.
    pub const DOORBELLS_PER_S: &str = "doorbells_per_s";
}

/// Ratio names (`Ratio::name`), by benchmark.
pub mod ratio {
    // copy
    /// Mean device COPY time / mean memcpy time.
    pub const DEVICE_OVER_MEMCPY_TIME: &str = "device_over_memcpy_time";
    /// Device COPY bandwidth / memcpy bandwidth, medians.
    pub const DEVICE_OVER_MEMCPY_BANDWIDTH: &str = "device_over_memcpy_bandwidth";
    // register
    /// Registration time, pinned / on-demand, medians.
    pub const PINNED_OVER_ON_DEMAND_REGISTER: &str = "pinned_over_on_demand_register";
    /// First device pass, pinned / on-demand, medians.
    pub const PINNED_OVER_ON_DEMAND_FIRST_TOUCH: &str = "pinned_over_on_demand_first_touch";
    /// Register + first pass + deregister, pinned / on-demand, medians.
    pub const PINNED_OVER_ON_DEMAND_TOTAL: &str = "pinned_over_on_demand_total";
    // fault
    /// Device first-touch pass / CPU first touch.
    pub const DEVICE_FIRST_TOUCH_OVER_CPU_FIRST_TOUCH: &str =
        "device_first_touch_over_cpu_first_touch";
    /// (first-touch pass - hot pass) / prefetch.
    pub const DEVICE_FAULT_OVERHEAD_OVER_PREFETCH: &str = "device_fault_overhead_over_prefetch";
    /// First-touch pass / hot pass.
    pub const DEVICE_FIRST_TOUCH_OVER_HOT: &str = "device_first_touch_over_hot";
    /// Device swap-in pass / CPU swap-in loads.
    pub const DEVICE_SWAPIN_OVER_CPU_SWAPIN: &str = "device_swapin_over_cpu_swapin";
    // invalidate
    /// munmap, registered with entries / unregistered.
    pub const MUNMAP_REGISTERED_OVER_UNREGISTERED: &str = "munmap_registered_over_unregistered";
    /// munmap, registered without entries / unregistered.
    pub const MUNMAP_REGISTERED_NO_ENTRIES_OVER_UNREGISTERED: &str =
        "munmap_registered_no_entries_over_unregistered";
    /// `MADV_PAGEOUT`, registered with entries / unregistered.
    pub const PAGEOUT_REGISTERED_OVER_UNREGISTERED: &str = "pageout_registered_over_unregistered";
    // traffic
    /// ops/s with page-outs during the runs / without.
    pub const PAGEOUT_OVER_QUIET_THROUGHPUT: &str = "pageout_over_quiet_throughput";
    /// Mean device run time / mean CPU time for the same accesses.
    pub const DEVICE_OVER_CPU_TIME: &str = "device_over_cpu_time";
    // sync
    /// SYNC round trip, trapped doorbell / shadow doorbell, medians (>1: shadow faster).
    pub const SYNC_TRAPPED_OVER_SHADOW: &str = "sync_trapped_over_shadow";
    // doorbell
    /// One hot COPY item, trapped doorbell / shadow doorbell, medians.
    pub const COPY_ITEM_TRAPPED_OVER_SHADOW: &str = "copy_item_trapped_over_shadow";
    // idle
    /// Idle device CPU time / wall time (a fraction of one core).
    pub const IDLE_DEVICE_CPU_OVER_WALL: &str = "idle_device_cpu_over_wall";
    /// Idle device CPU time / busy device CPU time over the same period.
    pub const IDLE_OVER_BUSY_DEVICE_CPU: &str = "idle_over_busy_device_cpu";
    // pingpong, bw: one ratio per message size, named with `row::sized`.
    /// One-way PUT latency / one-way local COPY latency, medians.
    pub const PUT_OVER_COPY_ONE_WAY: &str = "put_over_copy_one_way";
    /// PUT bandwidth / local COPY bandwidth, medians.
    pub const PUT_OVER_COPY_BANDWIDTH: &str = "put_over_copy_bandwidth";
    /// GET bandwidth / local COPY bandwidth, medians.
    pub const GET_OVER_COPY_BANDWIDTH: &str = "get_over_copy_bandwidth";
    /// Half a SEND/RECV round trip / one-way local COPY latency, medians.
    pub const SEND_OVER_COPY_ONE_WAY: &str = "send_over_copy_one_way";
    /// SEND bandwidth / local COPY bandwidth, medians.
    pub const SEND_OVER_COPY_BANDWIDTH: &str = "send_over_copy_bandwidth";
    /// Per page: PUT into a paged-out target / local COPY into a paged-out destination,
    /// medians (bw `--target-pageout`; >1: a network fault costs more than a local one).
    pub const NETWORK_FAULT_OVER_LOCAL_FAULT_PER_PAGE: &str =
        "network_fault_over_local_fault_per_page";
    /// PUT bandwidth into an on-demand target / into a pinned one, medians (bw
    /// `--target-pinned`; <1: on-demand is slower).
    pub const ON_DEMAND_OVER_PINNED_PUT_BANDWIDTH: &str = "on_demand_over_pinned_put_bandwidth";
}

/// Parameter names (`Report::params`).
pub mod param {
    // Every benchmark.
    /// Timed iterations.
    pub const ITERS: &str = "iters";
    /// Untimed iterations first.
    pub const WARMUP: &str = "warmup";
    /// Doorbell mode: "auto", "mapped" or "syscall".
    pub const DOORBELL: &str = "doorbell";
    /// log2 of the queue entries.
    pub const QUEUE_LOG2: &str = "queue_log2";
    /// 2 MiB-aligned buffers advised for huge pages.
    pub const HUGE: &str = "huge";
    /// A smoke run.
    pub const SMOKE: &str = "smoke";
    /// Bytes per iteration.
    pub const SIZE: &str = "size";
    // copy
    /// Cold translations (fresh registration every iteration).
    pub const COLD: &str = "cold";
    // register
    /// A first device pass was timed.
    pub const FIRST_TOUCH: &str = "first_touch";
    /// The pages were made resident first.
    pub const FILL: &str = "fill";
    /// The driver supports `REG_PINNED`.
    pub const PINNED_SUPPORTED: &str = "pinned_supported";
    // fault, invalidate
    /// Pages per iteration.
    pub const PAGES: &str = "pages";
    /// Fraction of the pages `MADV_PAGEOUT` swapped out.
    pub const SWAPPED_OUT_FRACTION: &str = "swapped_out_fraction";
    /// The page-out half ran (invalidate) / the range was paged out before each run (traffic).
    pub const PAGEOUT: &str = "pageout";
    // traffic
    /// Bytes per DMA operation.
    pub const OP_SIZE: &str = "op_size";
    /// Operations per run.
    pub const OPS: &str = "ops";
    /// Access pattern.
    pub const PATTERN: &str = "pattern";
    /// Operations per second, 0 = unthrottled.
    pub const RATE: &str = "rate";
    /// Pseudo-random seed.
    pub const SEED: &str = "seed";
    /// Page-out period during the runs, ms, or null.
    pub const PAGEOUT_EVERY_MS: &str = "pageout_every_ms";
    // sync, doorbell
    /// Operations per iteration and side (the two sides alternate by iteration).
    pub const BATCH: &str = "batch";
    /// The device advertises `CAPS.SHADOW`.
    pub const SHADOW_CAP: &str = "shadow_cap";
    /// The doorbell mode of the measured side's context, as set up.
    pub const MEASURED_DOORBELL: &str = "measured_doorbell";
    // idle
    /// Length of each CPU-time measurement, ms.
    pub const PERIOD_MS: &str = "period_ms";
    /// Quiet time before the idle measurement starts, ms.
    pub const SETTLE_MS: &str = "settle_ms";
    // pingpong, bw
    /// The initiator's device node.
    pub const LOCAL: &str = "local";
    /// The target's device node.
    pub const REMOTE: &str = "remote";
    /// Fabric node id of the local device.
    pub const LOCAL_NODE: &str = "local_node";
    /// Fabric node id of the remote device.
    pub const REMOTE_NODE: &str = "remote_node";
    /// Message sizes, bytes.
    pub const SIZES: &str = "sizes";
    /// How the bytes move: "put" (PUT, and GET for bw) or "send" (tagged SEND/RECV).
    pub const OP: &str = "op";
    /// Largest eager message, bytes (`--op send`: larger ones go by rendezvous).
    pub const EAGER_MAX: &str = "eager_max";
    /// Bytes moved per timed iteration of each size (bw).
    pub const BYTES_PER_ITER: &str = "bytes_per_iter";
    /// bw: what was measured: "put_get" (PUT/GET bandwidth), "target_pageout" (a network
    /// fault per page against a local one), "target_pinned" (on-demand against pinned
    /// target), comma separated.
    pub const MEASUREMENTS: &str = "measurements";
}
