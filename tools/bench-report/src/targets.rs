//! The targets of docs/performance.md and whether a run met them.

use mnic_bench_schema::names::{metric, param, ratio, row};

use crate::format::f;
use crate::guest::Guest;
use crate::host::Host;

/// One target: what is compared, the goal, the measured value and the verdict.
pub struct Target {
    pub what: &'static str,
    pub goal: &'static str,
    pub value: Option<f64>,
    /// The value as shown in the tables.
    pub shown: String,
    /// `None`: not measured.
    pub met: Option<bool>,
}

/// Every target, judged on this run's host and guest results.
pub fn targets(host: &Host, g: &Guest) -> Vec<Target> {
    let mut t = Vec::new();
    let reg = g.ratio("register_1G", ratio::PINNED_OVER_ON_DEMAND_REGISTER);
    let pinned = g
        .reports
        .get("register_1G")
        .map(|r| r.param_bool(param::PINNED_SUPPORTED).unwrap_or(false));
    t.push(Target {
        what: "on-demand registration of 1 GiB vs pinned (guest)",
        goal: ">= 1000x cheaper",
        value: reg,
        shown: match (reg, pinned) {
            (Some(v), _) => format!("{}x", f(Some(v))),
            (None, Some(false)) => "pinned: EOPNOTSUPP".into(),
            _ => "not measured".into(),
        },
        met: reg.map(|v| v >= 1000.0),
    });
    let c = g.ratio("copy_hot_1M", ratio::DEVICE_OVER_MEMCPY_BANDWIDTH);
    t.push(Target {
        what: "device COPY 1 MiB vs guest memcpy, hot (guest)",
        goal: ">= 0.5x memcpy bandwidth",
        value: c,
        shown: c.map_or("not measured".into(), |v| format!("{}x", f(Some(v)))),
        met: c.map(|v| v >= 0.5),
    });
    let hc = match (
        host.get("copy/device/1048576"),
        host.get("copy/memcpy/1048576"),
    ) {
        (Some(d), Some(m)) => Some(m / d),
        _ => None,
    };
    t.push(Target {
        what: "device-model COPY 1 MiB vs memcpy (host)",
        goal: ">= 0.8x memcpy bandwidth",
        value: hc,
        shown: hc.map_or("not measured".into(), |v| format!("{}x", f(Some(v)))),
        met: hc.map(|v| v >= 0.8),
    });
    let tlb = host.get("translate/tlb_hit").map(|ns| 1024.0 / ns * 1e3);
    t.push(Target {
        what: "TLB-hit lookups per core (host)",
        goal: ">= 100 M/s",
        value: tlb,
        shown: tlb.map_or("not measured".into(), |v| format!("{} M/s", f(Some(v)))),
        met: tlb.map(|v| v >= 100.0),
    });
    let mu = g.ratio("invalidate_16M", ratio::MUNMAP_REGISTERED_OVER_UNREGISTERED);
    t.push(Target {
        what: "munmap of a registered 16 MiB range vs unregistered (guest)",
        goal: "<= 3x",
        value: mu,
        shown: mu.map_or("not measured".into(), |v| format!("{}x", f(Some(v)))),
        met: mu.map(|v| v <= 3.0),
    });
    let stale = g.metric(
        "traffic_swap",
        row::DEVICE_TRAFFIC_PAGEOUT,
        metric::STALE_ACCESSES,
    );
    t.push(Target {
        what: "stale device accesses, traffic while swapping (guest)",
        goal: "= 0",
        value: stale,
        shown: f(stale),
        met: stale.map(|v| v == 0.0),
    });
    shadow_targets(&mut t, g);
    t
}

/// A guest value as shown: "skipped" when the case said it could not run, "not
/// measured" when it is missing, else `shown(value)`.
fn shown(g: &Guest, case: &str, v: Option<f64>, show: impl Fn(f64) -> String) -> String {
    match (v, g.reports.get(case).and_then(|r| r.skipped.as_ref())) {
        (Some(v), _) => show(v),
        (None, Some(_)) => "skipped".into(),
        (None, None) => "not measured".into(),
    }
}

/// A target on one guest ratio: what, goal, case, ratio name, and the test of the goal.
type RatioTarget = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    fn(f64) -> bool,
);

/// The targets of shadow doorbells and the polling device, and of the cases they
/// should improve.
fn shadow_targets(t: &mut Vec<Target>, g: &Guest) {
    let times = |v: f64| format!("{}x", f(Some(v)));
    let ratios: [RatioTarget; 6] = [
        (
            "SYNC round trip, shadow vs trapped doorbell (guest)",
            ">= 10x faster",
            "sync",
            ratio::SYNC_TRAPPED_OVER_SHADOW,
            |v| v >= 10.0,
        ),
        (
            "4 KiB hot COPY item, shadow vs trapped doorbell (guest)",
            ">= 10x faster",
            "doorbell_4K",
            ratio::COPY_ITEM_TRAPPED_OVER_SHADOW,
            |v| v >= 10.0,
        ),
        (
            "MADV_PAGEOUT of a registered 1 MiB range vs unregistered (guest)",
            "<= 3x",
            "invalidate_1M",
            ratio::PAGEOUT_REGISTERED_OVER_UNREGISTERED,
            |v| v <= 3.0,
        ),
        (
            "MADV_PAGEOUT of a registered 16 MiB range vs unregistered (guest)",
            "<= 3x",
            "invalidate_16M",
            ratio::PAGEOUT_REGISTERED_OVER_UNREGISTERED,
            |v| v <= 3.0,
        ),
        (
            "device swap-in vs CPU swap-in, per page (guest)",
            "<= 3x",
            "fault_4M",
            ratio::DEVICE_SWAPIN_OVER_CPU_SWAPIN,
            |v| v <= 3.0,
        ),
        (
            "traffic generator while swapping vs without (guest)",
            ">= 0.8x throughput",
            "traffic_swap",
            ratio::PAGEOUT_OVER_QUIET_THROUGHPUT,
            |v| v >= 0.8,
        ),
    ];
    for (what, goal, case, name, ok) in ratios {
        let v = g.ratio(case, name).filter(|v| v.is_finite());
        t.push(Target {
            what,
            goal,
            value: v,
            shown: shown(g, case, v, times),
            met: v.map(ok),
        });
    }
    let idle = g.metric("idle", row::DEVICE_IDLE, metric::DEVICE_CPU_PERCENT);
    t.push(Target {
        what: "idle device CPU, spin budget over (guest)",
        goal: "< 2% of one core",
        value: idle,
        shown: shown(g, "idle", idle, |v| format!("{}%", f(Some(v)))),
        met: idle.map(|v| v < 2.0),
    });
}

/// The verdict column.
pub fn verdict(m: Option<bool>) -> &'static str {
    match m {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "not measured",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::tests::console;

    #[test]
    fn judged_on_what_was_measured() {
        let mut g = Guest::default();
        g.parse_console(&console());
        let mut host = Host::new();
        host.insert("translate/tlb_hit".into(), 4096.0);
        let t = targets(&host, &g);
        assert_eq!(t[1].met, Some(true));
        assert_eq!(t[3].value, Some(250.0));
        assert_eq!(t[0].met, None);
        assert_eq!(verdict(t[0].met), "not measured");
    }

    #[test]
    fn shadow_targets_judged_or_skipped() {
        use mnic_bench_schema::{Bench, Fields, Report, Side};
        let mut g = Guest::default();
        let mut r = Report::new(Bench::Doorbell, 0);
        r.ratio(ratio::COPY_ITEM_TRAPPED_OVER_SHADOW, 120.0, 10.0, "");
        g.reports.insert("doorbell_4K".into(), r);
        g.reports.insert(
            "sync".into(),
            Report::skipped(Bench::Sync, 0, "no MNIC_IOC_SYNC"),
        );
        let mut r = Report::new(Bench::Idle, 0);
        let mut m = Fields::default();
        m.push(metric::DEVICE_CPU_PERCENT, 2.5);
        r.row(row::DEVICE_IDLE, Side::Measured, m);
        g.reports.insert("idle".into(), r);
        let t = targets(&Host::new(), &g);
        // The six earlier targets come first, unchanged.
        assert_eq!(t.len(), 13);
        let by = |w: &str| t.iter().find(|x| x.what.starts_with(w)).unwrap();
        let sync = by("SYNC round trip");
        assert_eq!((sync.shown.as_str(), sync.met), ("skipped", None));
        let copy = by("4 KiB hot COPY");
        assert_eq!((copy.shown.as_str(), copy.met), ("12.0x", Some(true)));
        let idle = by("idle device CPU");
        assert_eq!((idle.shown.as_str(), idle.met), ("2.50%", Some(false)));
        let swap = by("device swap-in");
        assert_eq!((swap.shown.as_str(), swap.met), ("not measured", None));
    }
}
