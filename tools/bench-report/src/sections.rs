//! The sections of `report.md`: one per host or guest measurement, each a table and,
//! for the guest, an SVG plot (returned to the caller to write).

use std::fmt::Write as _;

use mnic_bench_schema::names::{metric, param, ratio, row};
use mnic_bench_schema::Report;

use crate::format::{f, human};
use crate::guest::Guest;
use crate::host::Host;
use crate::svg;

/// A parameter as JSON text ("?" if the report lacks it).
fn param_text(r: &Report, name: &str) -> String {
    r.params
        .get(name)
        .map_or_else(|| "?".into(), ToString::to_string)
}

pub fn host_section(md: &mut String, host: &Host) {
    let _ = writeln!(md, "\n## Host: device model (criterion, native)\n");
    if host.is_empty() {
        let _ = writeln!(md, "No criterion results found.");
        return;
    }
    let get = |k: &str| host.get(k).copied();
    let _ = writeln!(
        md,
        "| benchmark | median | rate | baseline | ratio |\n|---|---|---|---|---|"
    );
    if let (Some(hit), Some(walk)) = (get("translate/tlb_hit"), get("translate/walk")) {
        let _ = writeln!(
            md,
            "| TLB hit (1024 pages) | {} ns/lookup | {} M/s | walk: {} ns/lookup | walk / hit = {}x |",
            f(Some(hit / 1024.0)),
            f(Some(1024.0 / hit * 1e3)),
            f(Some(walk / 1024.0)),
            f(Some(walk / hit))
        );
    }
    for len in [65536u64, 1048576] {
        if let (Some(d), Some(m)) = (
            get(&format!("copy/device/{len}")),
            get(&format!("copy/memcpy/{len}")),
        ) {
            let gib = |ns: f64| len as f64 / ns / 1.073_741_824;
            let _ = writeln!(
                md,
                "| device COPY {} | {} µs | {} GiB/s | memcpy: {} GiB/s | device / memcpy = {}x |",
                human(len),
                f(Some(d / 1e3)),
                f(Some(gib(d))),
                f(Some(gib(m))),
                f(Some(m / d))
            );
        }
        // The CPU copying the very guest buffers the device copies: shows whether a gap
        // to memcpy is the device's overhead or the memory's.
        if let Some(g) = get(&format!("copy/guest_memcpy/{len}")) {
            let _ = writeln!(
                md,
                "| CPU memcpy of the same guest buffers {} | {} µs | {} GiB/s | | |",
                human(len),
                f(Some(g / 1e3)),
                f(Some(len as f64 / g / 1.073_741_824)),
            );
        }
    }
    if let Some(s) = get("invalidate/sync_only") {
        for n in [1, 64, 512] {
            if let Some(r) = get(&format!("invalidate/range_sync/{n}")) {
                let _ = writeln!(
                    md,
                    "| INVALIDATE_RANGE ({n} cached pages) + SYNC | {} µs | {} ns/entry over SYNC | SYNC alone: {} µs | {}x |",
                    f(Some(r / 1e3)),
                    f(Some((r - s) / n as f64)),
                    f(Some(s / 1e3)),
                    f(Some(r / s))
                );
            }
        }
    }
}

pub fn copy_section(md: &mut String, g: &Guest, plots: &mut Vec<(String, String)>) {
    let hot = g.by_size("copy_hot_");
    let cold = g.by_size("copy_cold_");
    if hot.is_empty() && cold.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\n## Guest: DMA bandwidth, device COPY vs memcpy\n\n\
         Hot: registered once, prefetched, cached. Cold: a fresh on-demand registration \
         before every copy, so every page of both buffers faults in (pages resident). \
         memcpy: the guest CPU, same size, same boot.\n\n\
         | size | device hot MiB/s | device cold MiB/s | faults/copy (cold) | memcpy MiB/s | hot / memcpy | cold / memcpy |\n|---|---|---|---|---|---|---|"
    );
    let bw = |case: &str, rowname: &str| {
        let us = g.metric(case, rowname, metric::P50_US)?;
        let bytes = g.metric(case, rowname, metric::BYTES)?;
        Some(bytes / us * 1e6 / 1048576.0)
    };
    let mut sizes: Vec<u64> = hot.iter().chain(&cold).map(|x| x.0).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let (mut sh, mut sc, mut sm) = (Vec::new(), Vec::new(), Vec::new());
    for s in &sizes {
        let hc = hot.iter().find(|x| x.0 == *s).map(|x| x.1);
        let cc = cold.iter().find(|x| x.0 == *s).map(|x| x.1);
        let h = hc.and_then(|c| bw(c, row::DEVICE_COPY));
        let c = cc.and_then(|c| bw(c, row::DEVICE_COPY));
        let m = hc.or(cc).and_then(|c| bw(c, row::MEMCPY));
        let fl = cc.and_then(|c| g.metric(c, row::DEVICE_COPY, metric::FAULTS_PER_ITER));
        let rat = |a: Option<f64>| a.zip(m).map(|(a, m)| a / m);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            human(*s),
            f(h),
            f(c),
            f(fl),
            f(m),
            f(rat(h)),
            f(rat(c))
        );
        let x = *s as f64;
        if let Some(v) = h {
            sh.push((x, v));
        }
        if let Some(v) = c {
            sc.push((x, v));
        }
        if let Some(v) = m {
            sm.push((x, v));
        }
    }
    plots.push((
        "copy_bandwidth.svg".into(),
        svg::line_chart(
            "Guest: device COPY vs memcpy bandwidth (TCG)",
            "bytes per copy",
            "MiB/s (median)",
            true,
            &[
                svg::Series {
                    name: "device, hot".into(),
                    points: sh,
                },
                svg::Series {
                    name: "device, cold".into(),
                    points: sc,
                },
                svg::Series {
                    name: "guest memcpy".into(),
                    points: sm,
                },
            ],
        ),
    ));
    let _ = writeln!(md, "\n![copy bandwidth](copy_bandwidth.svg)");
}

pub fn register_section(md: &mut String, g: &Guest, plots: &mut Vec<(String, String)>) {
    let regs = g.by_size("register_");
    if regs.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\n## Guest: registration cost, on-demand vs pinned\n\n\
         Pages made resident first; register then deregister, no device access. \
         On-demand inserts an mmu interval notifier and preallocates the table levels; \
         pinned (`REG_PINNED`) pins every page and fills every leaf.\n\n\
         | size | on-demand register µs | pinned register µs | pinned / on-demand | on-demand deregister µs | pinned deregister µs |\n|---|---|---|---|---|---|"
    );
    let (mut so, mut sp) = (Vec::new(), Vec::new());
    for (s, case, r) in &regs {
        let od = g.metric(case, row::ON_DEMAND, metric::REGISTER_P50_US);
        let pn = g.metric(case, row::PINNED, metric::REGISTER_P50_US);
        let pin_ok = r.param_bool(param::PINNED_SUPPORTED).unwrap_or(false);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            human(*s),
            f(od),
            if pin_ok { f(pn) } else { "EOPNOTSUPP".into() },
            f(g.ratio(case, ratio::PINNED_OVER_ON_DEMAND_REGISTER)),
            f(g.metric(case, row::ON_DEMAND, metric::DEREGISTER_US)),
            f(g.metric(case, row::PINNED, metric::DEREGISTER_US)),
        );
        if let Some(v) = od {
            so.push((*s as f64, v));
        }
        if let Some(v) = pn {
            sp.push((*s as f64, v));
        }
    }
    plots.push((
        "register_cost.svg".into(),
        svg::line_chart(
            "Guest: registration time vs size (TCG)",
            "bytes registered",
            "µs (median)",
            true,
            &[
                svg::Series {
                    name: "on-demand".into(),
                    points: so,
                },
                svg::Series {
                    name: "pinned".into(),
                    points: sp,
                },
            ],
        ),
    ));
    let _ = writeln!(md, "\n![registration cost](register_cost.svg)");
}

pub fn fault_section(md: &mut String, g: &Guest, plots: &mut Vec<(String, String)>) {
    let Some((name, r)) = g.reports.iter().find(|(k, _)| k.starts_with("fault")) else {
        return;
    };
    let _ = writeln!(
        md,
        "\n## Guest: device faults vs prefetch vs CPU faults ({}, {} pages)\n\n\
         | path | ns per page (median) | faults per pass |\n|---|---|---|",
        human(r.param_u64(param::SIZE).unwrap_or(0)),
        param_text(r, param::PAGES)
    );
    let rows = [
        (
            row::DEVICE_FIRST_TOUCH,
            "device pass, translations empty (faults)",
        ),
        (row::DEVICE_HOT_PASS, "device pass, translations cached"),
        (row::PREFETCH_IOCTL, "MNIC_IOC_PREFETCH of the same pages"),
        (
            row::DEVICE_PASS_AFTER_PREFETCH,
            "device pass after prefetch",
        ),
        (
            row::CPU_FIRST_TOUCH,
            "CPU first touch of fresh anonymous memory",
        ),
        (
            row::DEVICE_SWAPIN,
            "device pass after MADV_PAGEOUT (swap-in faults)",
        ),
        (
            row::DEVICE_WRITE_SWAPIN,
            "device write pass after MADV_PAGEOUT (swap-in faults)",
        ),
        (
            row::CPU_SWAPIN,
            "CPU loads after MADV_PAGEOUT (swap-in faults)",
        ),
    ];
    let mut cats = Vec::new();
    let mut vals = Vec::new();
    for (k, label) in rows {
        let v = g.metric(name, k, metric::NS_PER_PAGE);
        let _ = writeln!(
            md,
            "| {label} | {} | {} |",
            f(v),
            f(g.metric(name, k, metric::FAULTS_PER_ITER))
        );
        cats.push(k.replace("device_", "dev ").replace("_", " "));
        vals.push(v);
    }
    let _ = writeln!(md, "\n| ratio | value | meaning |\n|---|---|---|");
    for x in &r.ratios {
        let _ = writeln!(md, "| {} | {} | {} |", x.name, f(Some(x.value)), x.meaning);
    }
    for n in &r.notes {
        let _ = writeln!(md, "\nNote: {n}");
    }
    plots.push((
        "fault_cost.svg".into(),
        svg::bar_chart(
            "Guest: cost per page (TCG)",
            "ns per page (median)",
            &cats,
            &[("ns/page".into(), vals)],
        ),
    ));
    let _ = writeln!(md, "\n![fault cost](fault_cost.svg)");
}

pub fn invalidate_section(md: &mut String, g: &Guest, plots: &mut Vec<(String, String)>) {
    let cases = g.by_size("invalidate_");
    if cases.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\n## Guest: invalidation cost (munmap, MADV_PAGEOUT)\n\n\
         Registered = every device entry present (prefetched), so the notifier clears \
         entries and waits for INVALIDATE + SYNC. SYNC wait = the driver's \
         `sync_wait_ns / sync_waits` during the operation.\n\n\
         | size | operation | unregistered µs | registered µs | registered / unregistered | same, fastest runs | SYNC waits | mean SYNC wait µs | invalidations |\n|---|---|---|---|---|---|---|---|---|"
    );
    let rows = [
        (
            "munmap",
            row::MUNMAP_UNREGISTERED,
            row::MUNMAP_REGISTERED,
            ratio::MUNMAP_REGISTERED_OVER_UNREGISTERED,
        ),
        (
            "munmap, no entries",
            row::MUNMAP_UNREGISTERED,
            row::MUNMAP_REGISTERED_NO_ENTRIES,
            ratio::MUNMAP_REGISTERED_NO_ENTRIES_OVER_UNREGISTERED,
        ),
        (
            "MADV_PAGEOUT",
            row::PAGEOUT_UNREGISTERED,
            row::PAGEOUT_REGISTERED,
            ratio::PAGEOUT_REGISTERED_OVER_UNREGISTERED,
        ),
    ];
    let mut cats = Vec::new();
    let (mut vu, mut vr) = (Vec::new(), Vec::new());
    for (s, case, _) in &cases {
        for (label, base, meas, rname) in rows {
            let u = g.metric(case, base, metric::P50_US);
            let r = g.metric(case, meas, metric::P50_US);
            if u.is_none() && r.is_none() {
                continue;
            }
            let min = g
                .metric(case, meas, metric::MIN_US)
                .zip(g.metric(case, base, metric::MIN_US))
                .map(|(r, u)| r / u);
            let _ = writeln!(
                md,
                "| {} | {label} | {} | {} | {} | {} | {} | {} | {} |",
                human(*s),
                f(u),
                f(r),
                f(g.ratio(case, rname)),
                f(min),
                f(g.metric(case, meas, metric::SYNC_WAITS_PER_ITER)),
                f(g.metric(case, meas, metric::SYNC_WAIT_MEAN_US)),
                f(g.metric(case, meas, metric::INVALIDATIONS_PER_ITER)),
            );
            cats.push(format!("{label} {}", human(*s)));
            vu.push(u);
            vr.push(r);
        }
    }
    plots.push((
        "invalidate_cost.svg".into(),
        svg::bar_chart(
            "Guest: munmap / page-out time (TCG)",
            "µs (median)",
            &cats,
            &[("unregistered".into(), vu), ("registered".into(), vr)],
        ),
    ));
    let _ = writeln!(md, "\n![invalidation cost](invalidate_cost.svg)");
}

pub fn traffic_section(md: &mut String, g: &Guest) {
    let Some(r) = g.reports.get("traffic_swap") else {
        return;
    };
    let _ = writeln!(
        md,
        "\n## Guest: traffic generator while swapping\n\n\
         {} ops of {} B over {}, pattern {}, rate {} ops/s; a second thread runs \
         MADV_PAGEOUT over the range every {} ms during the measured runs.\n\n\
         | run | ops/s (mean) | device faults | device invalidations | SYNC waits | page-outs | stale accesses |\n|---|---|---|---|---|---|---|",
        param_text(r, param::OPS),
        param_text(r, param::OP_SIZE),
        human(r.param_u64(param::SIZE).unwrap_or(0)),
        r.param_str(param::PATTERN).unwrap_or("?"),
        param_text(r, param::RATE),
        param_text(r, param::PAGEOUT_EVERY_MS)
    );
    for (k, label) in [
        (row::DEVICE_TRAFFIC, "no page-outs (baseline)"),
        (row::DEVICE_TRAFFIC_PAGEOUT, "with page-outs"),
        (row::CPU_SAME_PATTERN, "CPU, same accesses, unthrottled"),
    ] {
        let m = |key| g.metric("traffic_swap", k, key);
        let _ = writeln!(
            md,
            "| {label} | {} | {} | {} | {} | {} | {} |",
            f(m(metric::OPS_PER_S)),
            f(m(metric::DEVICE_FAULTS)),
            f(m(metric::DEVICE_INVALIDATIONS)),
            f(m(metric::SYNC_WAITS)),
            f(m(metric::PAGEOUTS)),
            f(m(metric::STALE_ACCESSES)),
        );
    }
    let _ = writeln!(
        md,
        "\nThroughput with page-outs / without: {}x.",
        f(g.ratio("traffic_swap", ratio::PAGEOUT_OVER_QUIET_THROUGHPUT))
    );
}

pub fn shadow_section(md: &mut String, g: &Guest) {
    let cases = [
        (
            "sync",
            "SYNC round trip (`MNIC_IOC_SYNC`)",
            row::SYNC_SHADOW,
            row::SYNC_TRAPPED,
            ratio::SYNC_TRAPPED_OVER_SHADOW,
        ),
        (
            "doorbell_4K",
            "4 KiB hot COPY item, post to completion",
            row::COPY_ITEM_SHADOW,
            row::COPY_ITEM_TRAPPED,
            ratio::COPY_ITEM_TRAPPED_OVER_SHADOW,
        ),
    ];
    let idle = g.reports.get("idle");
    if idle.is_none() && cases.iter().all(|c| !g.reports.contains_key(c.0)) {
        return;
    }
    let _ = writeln!(
        md,
        "\n## Guest: shadow doorbells and the polling device\n\n\
         Shadow: the producer writes its tail into a shadow page and rings the doorbell \
         register only while the device is not polling. Trapped: every post writes the \
         register and the device does not poll (SYNC: debugfs `trapped_doorbells` = 1, which \
         also sets the device's spin budget to 0; COPY: a context with the plain mapped \
         doorbell, which the device never polls). Both sides alternate in blocks in one boot. Counters per \
         operation are device-wide deltas (`doorbells`, `shadow_tails`, `sleeps`).\n\n\
         | operation | shadow µs | trapped µs | trapped / shadow | doorbells/op shadow | doorbells/op trapped | shadow tails/op | device sleeps/op |\n|---|---|---|---|---|---|---|---|"
    );
    let mut skipped = Vec::new();
    for (case, label, meas, base, rname) in cases {
        if let Some(why) = g.reports.get(case).and_then(|r| r.skipped.as_ref()) {
            skipped.push(format!("`{case}` skipped: {why}"));
            continue;
        }
        let m = |r, k| g.metric(case, r, k);
        let _ = writeln!(
            md,
            "| {label} | {} | {} | {} | {} | {} | {} | {} |",
            f(m(meas, metric::P50_US)),
            f(m(base, metric::P50_US)),
            f(g.ratio(case, rname)),
            f(m(meas, metric::DOORBELLS_PER_OP)),
            f(m(base, metric::DOORBELLS_PER_OP)),
            f(m(meas, metric::SHADOW_TAILS_PER_OP)),
            f(m(meas, metric::SLEEPS_PER_OP)),
        );
    }
    if let Some(r) = idle {
        match &r.skipped {
            Some(why) => skipped.push(format!("`idle` skipped: {why}")),
            None => {
                let _ = writeln!(
                    md,
                    "\n| device | CPU, % of one core | sleeps/s | doorbells/s | ops/s |\n|---|---|---|---|---|"
                );
                for (k, label) in [
                    (row::DEVICE_IDLE, "idle, spin budget over"),
                    (row::DEVICE_BUSY, "busy: NOPs back to back"),
                ] {
                    let m = |key| g.metric("idle", k, key);
                    let _ = writeln!(
                        md,
                        "| {label} | {} | {} | {} | {} |",
                        f(m(metric::DEVICE_CPU_PERCENT)),
                        f(m(metric::SLEEPS_PER_S)),
                        f(m(metric::DOORBELLS_PER_S)),
                        f(m(metric::OPS_PER_S)),
                    );
                }
            }
        }
    }
    for s in skipped {
        let _ = writeln!(md, "\n{s}");
    }
    for (case, r) in &g.reports {
        if ["sync", "doorbell_4K", "idle"].contains(&case.as_str()) {
            for n in &r.notes {
                let _ = writeln!(md, "\nNote (`{case}`): {n}");
            }
        }
    }
}
