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
    t
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
}
