//! `mnic-bench-report`: the report half of `make bench`.
//!
//! ```text
//! mnic-bench-report --criterion target/criterion --guest results/guest-console.log \
//!     --out results [--meta KEY=VALUE ...]
//! ```
//!
//! Reads the criterion estimates of the device-model benches (median per benchmark)
//! and the `@@MNIC-JSON NAME {...}` lines that `images/guest/bench.sh` prints on the
//! guest console, and writes `OUT/report.md`, SVG plots, `OUT/summary.txt` and
//! `OUT/results.json`; prints the summary table (the targets of docs/performance.md, met or not).

mod svg;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::{json, Value};

/// Criterion results: benchmark id ("group/function[/param]") -> median ns per iteration.
type Host = BTreeMap<String, f64>;

/// Guest reports by case name, plus failures and the environment line.
#[derive(Default)]
struct Guest {
    reports: BTreeMap<String, Value>,
    failures: Vec<String>,
    env: Option<Value>,
    done: bool,
}

fn usage() -> &'static str {
    "usage: mnic-bench-report [--criterion DIR] [--guest CONSOLE_LOG]... --out DIR [--meta KEY=VALUE]..."
}

fn main() -> ExitCode {
    let mut crit: Option<PathBuf> = None;
    let mut guests: Vec<PathBuf> = Vec::new();
    let mut out: Option<PathBuf> = None;
    let mut meta: Vec<(String, String)> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        let r = match a.as_str() {
            "--criterion" => val().map(|v| crit = Some(v.into())),
            "--guest" => val().map(|v| guests.push(v.into())),
            "--out" => val().map(|v| out = Some(v.into())),
            "--meta" => val().and_then(|v| {
                v.split_once('=')
                    .map(|(k, v)| meta.push((k.to_owned(), v.to_owned())))
                    .ok_or_else(|| format!("--meta {v}: expected KEY=VALUE"))
            }),
            "-h" | "--help" => {
                println!("{}", usage());
                return ExitCode::SUCCESS;
            }
            _ => Err(format!("unknown argument {a}")),
        };
        if let Err(e) = r {
            eprintln!("mnic-bench-report: {e}\n{}", usage());
            return ExitCode::from(2);
        }
    }
    let Some(out) = out else {
        eprintln!("mnic-bench-report: --out is required\n{}", usage());
        return ExitCode::from(2);
    };
    let host = crit.as_deref().map(read_criterion).unwrap_or_default();
    let mut guest = Guest::default();
    for g in &guests {
        match std::fs::read_to_string(g) {
            Ok(text) => parse_console(&text, &mut guest),
            Err(e) => guest.failures.push(format!("{}: {e}", g.display())),
        }
    }
    match write_all(&out, &host, &guest, &meta) {
        Ok(summary) => {
            print!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mnic-bench-report: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Every `*/new/estimates.json` under `dir`: the median point estimate in ns.
fn read_criterion(dir: &Path) -> Host {
    let mut host = Host::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() && p.file_name().is_some_and(|n| n != "report") {
                stack.push(p);
            } else if p.ends_with("new/estimates.json") {
                let bench = p.parent().and_then(Path::parent);
                let id = bench
                    .and_then(|b| std::fs::read_to_string(b.join("new/benchmark.json")).ok())
                    .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                    .and_then(|v| v["full_id"].as_str().map(str::to_owned));
                let median = std::fs::read_to_string(&p)
                    .ok()
                    .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                    .and_then(|v| v["median"]["point_estimate"].as_f64());
                if let (Some(id), Some(m)) = (id, median) {
                    host.insert(id, m);
                }
            }
        }
    }
    host
}

/// Picks the marker lines out of a guest console (anything may surround them).
fn parse_console(text: &str, g: &mut Guest) {
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        let Some(at) = line.find("@@MNIC-") else {
            continue;
        };
        let l = &line[at..];
        if let Some(rest) = l.strip_prefix("@@MNIC-JSON ") {
            let (name, body) = rest.split_once(' ').unwrap_or((rest, ""));
            match serde_json::from_str::<Value>(body) {
                Ok(v) => {
                    g.reports.insert(name.to_owned(), v);
                }
                Err(e) => g
                    .failures
                    .push(format!("{name}: unreadable JSON on the console ({e})")),
            }
        } else if let Some(rest) = l.strip_prefix("@@MNIC-FAIL ") {
            g.failures.push(rest.to_owned());
        } else if let Some(rest) = l.strip_prefix("@@MNIC-ENV ") {
            g.env = serde_json::from_str(rest).ok();
        } else if l.starts_with("@@MNIC-DONE") {
            g.done = true;
        }
    }
}

// ---------------------------------------------------------------- guest accessors

fn row<'a>(r: &'a Value, name: &str) -> Option<&'a Value> {
    r["results"]
        .as_array()?
        .iter()
        .find(|x| x["name"] == name)
        .map(|x| &x["metrics"])
}

fn metric(g: &Guest, case: &str, rowname: &str, key: &str) -> Option<f64> {
    row(g.reports.get(case)?, rowname)?[key].as_f64()
}

fn ratio(g: &Guest, case: &str, name: &str) -> Option<f64> {
    g.reports.get(case)?["ratios"]
        .as_array()?
        .iter()
        .find(|x| x["name"] == name)?["value"]
        .as_f64()
}

/// Cases whose name starts with `prefix`, ordered by their `params.size`.
fn by_size<'a>(g: &'a Guest, prefix: &str) -> Vec<(u64, &'a str, &'a Value)> {
    let mut v: Vec<_> = g
        .reports
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .filter_map(|(k, r)| Some((r["params"]["size"].as_u64()?, k.as_str(), r)))
        .collect();
    v.sort_by_key(|x| x.0);
    v
}

fn human(n: u64) -> String {
    svg::tick_label(n as f64, true)
        .replace('K', " KiB")
        .replace('M', " MiB")
        .replace('G', " GiB")
}

fn f(v: Option<f64>) -> String {
    match v {
        None => "n/a".into(),
        Some(v) if !v.is_finite() => "n/a".into(),
        Some(0.0) => "0".into(),
        Some(v) if v.abs() >= 1000.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) if v.abs() >= 0.1 => format!("{v:.2}"),
        Some(v) => format!("{v:.3}"),
    }
}

// ---------------------------------------------------------------- targets

struct Target {
    what: &'static str,
    goal: &'static str,
    value: Option<f64>,
    shown: String,
    met: Option<bool>,
}

fn targets(host: &Host, g: &Guest) -> Vec<Target> {
    let mut t = Vec::new();
    let reg = ratio(g, "register_1G", "pinned_over_on_demand_register");
    let pinned = g
        .reports
        .get("register_1G")
        .map(|r| r["params"]["pinned_supported"].as_bool().unwrap_or(false));
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
    let c = ratio(g, "copy_hot_1M", "device_over_memcpy_bandwidth");
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
    let mu = ratio(g, "invalidate_16M", "munmap_registered_over_unregistered");
    t.push(Target {
        what: "munmap of a registered 16 MiB range vs unregistered (guest)",
        goal: "<= 3x",
        value: mu,
        shown: mu.map_or("not measured".into(), |v| format!("{}x", f(Some(v)))),
        met: mu.map(|v| v <= 3.0),
    });
    let stale = metric(
        g,
        "traffic_swap",
        "device_traffic_pageout",
        "stale_accesses",
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

fn verdict(m: Option<bool>) -> &'static str {
    match m {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "not measured",
    }
}

// ---------------------------------------------------------------- output

fn write_all(
    out: &Path,
    host: &Host,
    g: &Guest,
    meta: &[(String, String)],
) -> Result<String, String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let put = |name: &str, text: &str| {
        std::fs::write(out.join(name), text).map_err(|e| format!("{name}: {e}"))
    };
    let tg = targets(host, g);
    let mut md = String::new();
    let mut summary = String::new();

    // Summary (also printed).
    let _ = writeln!(
        summary,
        "mnic bench summary (targets of docs/performance.md)"
    );
    let w0 = tg.iter().map(|t| t.what.len()).max().unwrap_or(10);
    for t in &tg {
        let _ = writeln!(
            summary,
            "  {:<w0$}  {:<26}  {:>20}  {}",
            t.what,
            t.goal,
            t.shown,
            verdict(t.met)
        );
    }
    if !g.failures.is_empty() {
        let _ = writeln!(summary, "guest failures:");
        for fl in &g.failures {
            let _ = writeln!(summary, "  {fl}");
        }
    }
    if !g.done && !g.reports.is_empty() {
        let _ = writeln!(summary, "  (the guest run did not reach its end marker)");
    }
    let _ = writeln!(summary, "report: {}", out.join("report.md").display());

    let _ = writeln!(md, "# mnic performance report\n");
    for (k, v) in meta {
        let _ = writeln!(md, "- **{k}**: {v}");
    }
    if let Some(env) = &g.env {
        let _ = writeln!(
            md,
            "- **guest**: {} vCPUs (TCG), {} MiB RAM, {} MiB swap (zram), kernel {}",
            env["cpus"],
            env["mem_total_kb"].as_u64().unwrap_or(0) / 1024,
            env["swap_total_kb"].as_u64().unwrap_or(0) / 1024,
            env["kernel"].as_str().unwrap_or("?")
        );
    }
    let _ = writeln!(
        md,
        "\nAll figures are medians unless marked mean. Every comparison is against a \
         baseline measured in the same run (host) or the same boot (guest). Guest \
         absolute numbers are distorted by TCG: see docs/performance.md.\n"
    );
    let _ = writeln!(
        md,
        "## Targets\n\n| target | goal | measured | verdict |\n|---|---|---|---|"
    );
    for t in &tg {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            t.what,
            t.goal,
            t.shown,
            verdict(t.met)
        );
    }
    if !g.failures.is_empty() {
        let _ = writeln!(md, "\n**Guest failures:**\n");
        for fl in &g.failures {
            let _ = writeln!(md, "- `{fl}`");
        }
    }

    host_section(&mut md, host);
    let mut plots = Vec::new();
    copy_section(&mut md, g, &mut plots);
    register_section(&mut md, g, &mut plots);
    fault_section(&mut md, g, &mut plots);
    invalidate_section(&mut md, g, &mut plots);
    traffic_section(&mut md, g);
    for (name, text) in &plots {
        put(name, text)?;
    }
    put("report.md", &md)?;
    put("summary.txt", &summary)?;
    let all = json!({
        "meta": meta.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "host_median_ns": host,
        "guest": g.reports,
        "guest_env": g.env,
        "guest_failures": g.failures,
        "targets": tg.iter().map(|t| json!({"what": t.what, "goal": t.goal, "value": t.value, "met": t.met})).collect::<Vec<_>>(),
    });
    put(
        "results.json",
        &serde_json::to_string_pretty(&all).map_err(|e| e.to_string())?,
    )?;
    Ok(summary)
}

fn host_section(md: &mut String, host: &Host) {
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

fn copy_section(md: &mut String, g: &Guest, plots: &mut Vec<(String, String)>) {
    let hot = by_size(g, "copy_hot_");
    let cold = by_size(g, "copy_cold_");
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
        let us = metric(g, case, rowname, "p50_us")?;
        let bytes = metric(g, case, rowname, "bytes")?;
        Some(bytes / us * 1e6 / 1048576.0)
    };
    let mut sizes: Vec<u64> = hot.iter().chain(&cold).map(|x| x.0).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let (mut sh, mut sc, mut sm) = (Vec::new(), Vec::new(), Vec::new());
    for s in &sizes {
        let hc = hot.iter().find(|x| x.0 == *s).map(|x| x.1);
        let cc = cold.iter().find(|x| x.0 == *s).map(|x| x.1);
        let h = hc.and_then(|c| bw(c, "device_copy"));
        let c = cc.and_then(|c| bw(c, "device_copy"));
        let m = hc.or(cc).and_then(|c| bw(c, "memcpy"));
        let fl = cc.and_then(|c| metric(g, c, "device_copy", "faults_per_iter"));
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

fn register_section(md: &mut String, g: &Guest, plots: &mut Vec<(String, String)>) {
    let regs = by_size(g, "register_");
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
        let od = metric(g, case, "on_demand", "register_p50_us");
        let pn = metric(g, case, "pinned", "register_p50_us");
        let pin_ok = r["params"]["pinned_supported"].as_bool().unwrap_or(false);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            human(*s),
            f(od),
            if pin_ok { f(pn) } else { "EOPNOTSUPP".into() },
            f(ratio(g, case, "pinned_over_on_demand_register")),
            f(metric(g, case, "on_demand", "deregister_us")),
            f(metric(g, case, "pinned", "deregister_us")),
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

fn fault_section(md: &mut String, g: &Guest, plots: &mut Vec<(String, String)>) {
    let Some((name, r)) = g.reports.iter().find(|(k, _)| k.starts_with("fault")) else {
        return;
    };
    let _ = writeln!(
        md,
        "\n## Guest: device faults vs prefetch vs CPU faults ({}, {} pages)\n\n\
         | path | ns per page (median) | faults per pass |\n|---|---|---|",
        human(r["params"]["size"].as_u64().unwrap_or(0)),
        r["params"]["pages"]
    );
    let rows = [
        (
            "device_first_touch",
            "device pass, translations empty (faults)",
        ),
        ("device_hot_pass", "device pass, translations cached"),
        ("prefetch_ioctl", "MNIC_IOC_PREFETCH of the same pages"),
        ("device_pass_after_prefetch", "device pass after prefetch"),
        (
            "cpu_first_touch",
            "CPU first touch of fresh anonymous memory",
        ),
        (
            "device_swapin",
            "device pass after MADV_PAGEOUT (swap-in faults)",
        ),
        (
            "cpu_swapin",
            "CPU loads after MADV_PAGEOUT (swap-in faults)",
        ),
    ];
    let mut cats = Vec::new();
    let mut vals = Vec::new();
    for (k, label) in rows {
        let v = metric(g, name, k, "ns_per_page");
        let _ = writeln!(
            md,
            "| {label} | {} | {} |",
            f(v),
            f(metric(g, name, k, "faults_per_iter"))
        );
        cats.push(k.replace("device_", "dev ").replace("_", " "));
        vals.push(v);
    }
    let _ = writeln!(md, "\n| ratio | value | meaning |\n|---|---|---|");
    for x in r["ratios"].as_array().into_iter().flatten() {
        let _ = writeln!(
            md,
            "| {} | {} | {} |",
            x["name"].as_str().unwrap_or(""),
            f(x["value"].as_f64()),
            x["meaning"].as_str().unwrap_or("")
        );
    }
    for n in r["notes"].as_array().into_iter().flatten() {
        let _ = writeln!(md, "\nNote: {}", n.as_str().unwrap_or(""));
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

fn invalidate_section(md: &mut String, g: &Guest, plots: &mut Vec<(String, String)>) {
    let cases = by_size(g, "invalidate_");
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
            "munmap_unregistered",
            "munmap_registered",
            "munmap_registered_over_unregistered",
        ),
        (
            "munmap, no entries",
            "munmap_unregistered",
            "munmap_registered_no_entries",
            "munmap_registered_no_entries_over_unregistered",
        ),
        (
            "MADV_PAGEOUT",
            "pageout_unregistered",
            "pageout_registered",
            "pageout_registered_over_unregistered",
        ),
    ];
    let mut cats = Vec::new();
    let (mut vu, mut vr) = (Vec::new(), Vec::new());
    for (s, case, _) in &cases {
        for (label, base, meas, rname) in rows {
            let u = metric(g, case, base, "p50_us");
            let r = metric(g, case, meas, "p50_us");
            if u.is_none() && r.is_none() {
                continue;
            }
            let min = metric(g, case, meas, "min_us")
                .zip(metric(g, case, base, "min_us"))
                .map(|(r, u)| r / u);
            let _ = writeln!(
                md,
                "| {} | {label} | {} | {} | {} | {} | {} | {} | {} |",
                human(*s),
                f(u),
                f(r),
                f(ratio(g, case, rname)),
                f(min),
                f(metric(g, case, meas, "sync_waits_per_iter")),
                f(metric(g, case, meas, "sync_wait_mean_us")),
                f(metric(g, case, meas, "invalidations_per_iter")),
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

fn traffic_section(md: &mut String, g: &Guest) {
    let Some(r) = g.reports.get("traffic_swap") else {
        return;
    };
    let p = &r["params"];
    let _ = writeln!(
        md,
        "\n## Guest: traffic generator while swapping\n\n\
         {} ops of {} B over {}, pattern {}, rate {} ops/s; a second thread runs \
         MADV_PAGEOUT over the range every {} ms during the measured runs.\n\n\
         | run | ops/s (mean) | device faults | device invalidations | SYNC waits | page-outs | stale accesses |\n|---|---|---|---|---|---|---|",
        p["ops"],
        p["op_size"],
        human(p["size"].as_u64().unwrap_or(0)),
        p["pattern"].as_str().unwrap_or("?"),
        p["rate"],
        p["pageout_every_ms"]
    );
    for (k, label) in [
        ("device_traffic", "no page-outs (baseline)"),
        ("device_traffic_pageout", "with page-outs"),
        ("cpu_same_pattern", "CPU, same accesses, unthrottled"),
    ] {
        let m = |key| metric(g, "traffic_swap", k, key);
        let _ = writeln!(
            md,
            "| {label} | {} | {} | {} | {} | {} | {} |",
            f(m("ops_per_s")),
            f(m("device_faults")),
            f(m("device_invalidations")),
            f(m("sync_waits")),
            f(m("pageouts")),
            f(m("stale_accesses")),
        );
    }
    let _ = writeln!(
        md,
        "\nThroughput with page-outs / without: {}x.",
        f(ratio(g, "traffic_swap", "pageout_over_quiet_throughput"))
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_markers_survive_noise() {
        let text = "[    1.0] boot\r\n\
            junk @@MNIC-ENV {\"cpus\":2,\"mem_total_kb\":2048000,\"swap_total_kb\":0,\"kernel\":\"7.3\"}\n\
            @@MNIC-JSON copy_hot_1M {\"params\":{\"size\":1048576},\"results\":[{\"name\":\"device_copy\",\"side\":\"measured\",\"metrics\":{\"p50_us\":100.0,\"bytes\":1048576}},{\"name\":\"memcpy\",\"side\":\"baseline\",\"metrics\":{\"p50_us\":200.0,\"bytes\":1048576}}],\"ratios\":[{\"name\":\"device_over_memcpy_bandwidth\",\"value\":2.0}]}\n\
            @@MNIC-JSON broken {\"x\":\n\
            @@MNIC-FAIL register_1G rc=1 out of memory\n\
            @@MNIC-DONE fails=1\n";
        let mut g = Guest::default();
        parse_console(text, &mut g);
        assert!(g.done);
        assert_eq!(g.env.as_ref().unwrap()["cpus"], 2);
        assert_eq!(
            ratio(&g, "copy_hot_1M", "device_over_memcpy_bandwidth"),
            Some(2.0)
        );
        assert_eq!(metric(&g, "copy_hot_1M", "memcpy", "p50_us"), Some(200.0));
        assert_eq!(g.failures.len(), 2);
        let mut host = Host::new();
        host.insert("translate/tlb_hit".into(), 4096.0);
        let t = targets(&host, &g);
        assert_eq!(t[1].met, Some(true));
        assert_eq!(t[3].value, Some(250.0));
        assert_eq!(t[0].met, None);
        let dir = std::env::temp_dir().join(format!("mnic-bench-report-{}", std::process::id()));
        let s = write_all(&dir, &host, &g, &[("command".into(), "make bench".into())]).unwrap();
        assert!(s.contains("NOT met") || s.contains("met"));
        let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
        assert!(md.contains("copy_bandwidth.svg"));
        assert!(dir.join("copy_bandwidth.svg").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn number_format() {
        assert_eq!(f(None), "n/a");
        assert_eq!(f(Some(1234.5)), "1234");
        assert_eq!(f(Some(0.5)), "0.50");
        assert_eq!(human(1 << 30), "1 GiB");
    }
}
