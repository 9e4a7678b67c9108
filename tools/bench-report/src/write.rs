//! Writing the outputs: `report.md` (with its plots), `summary.txt` (also printed) and
//! `results.json` (every raw report and the verdicts).

use std::fmt::Write as _;
use std::path::Path;

use serde_json::json;

use crate::guest::Guest;
use crate::host::Host;
use crate::sections;
use crate::targets::{targets, verdict};

/// What [`write_all`] wrote that the caller may show or reuse.
pub struct Written {
    /// The summary table (also in `summary.txt`).
    pub summary: String,
    /// The text of `report.md`.
    pub report_md: String,
}

/// Writes every output into `out`.
pub fn write_all(
    out: &Path,
    host: &Host,
    g: &Guest,
    meta: &[(String, String)],
) -> Result<Written, String> {
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
            env.cpus,
            env.mem_total_kb / 1024,
            env.swap_total_kb / 1024,
            env.kernel
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

    sections::host_section(&mut md, host);
    let mut plots = Vec::new();
    sections::copy_section(&mut md, g, &mut plots);
    sections::register_section(&mut md, g, &mut plots);
    sections::fault_section(&mut md, g, &mut plots);
    sections::invalidate_section(&mut md, g, &mut plots);
    sections::traffic_section(&mut md, g);
    sections::shadow_section(&mut md, g);
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
    Ok(Written {
        summary,
        report_md: md,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::tests::console;

    #[test]
    fn writes_report_plots_and_results() {
        let mut g = Guest::default();
        g.parse_console(&console());
        let mut host = Host::new();
        host.insert("translate/tlb_hit".into(), 4096.0);
        let dir = std::env::temp_dir().join(format!("mnic-bench-report-{}", std::process::id()));
        let w = write_all(&dir, &host, &g, &[("command".into(), "make bench".into())]).unwrap();
        assert!(w.summary.contains("NOT met") || w.summary.contains("met"));
        assert!(w.report_md.starts_with("# mnic performance report"));
        let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
        assert!(md.contains("copy_bandwidth.svg"));
        assert!(md.contains("2 vCPUs (TCG)"));
        assert!(dir.join("copy_bandwidth.svg").exists());
        // The new targets are listed even when their cases did not run.
        assert!(md.contains("| SYNC round trip, shadow vs trapped doorbell (guest) | >= 10x faster | not measured | not measured |"));
        let all: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap())
                .unwrap();
        assert_eq!(all["guest"]["copy_hot_1M"]["bench"], "copy");
        assert_eq!(all["guest_env"]["cpus"], 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
