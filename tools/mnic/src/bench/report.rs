//! Filling and printing a benchmark [`Report`] (the type itself is the shared schema in
//! `mnic-bench-schema`): the common parameters, the counters that moved, the text form.

use mnic::{ctx_stats_fields, Context, DevCounters};
use mnic_bench_schema::names::param;
use mnic_bench_schema::{Bench, Report};
use serde_json::json;

use crate::bench::args::Common;
use crate::error::CmdResult;
use crate::output::Table;

/// An empty report of `bench` with the flags every benchmark takes as parameters.
pub fn new_report(bench: Bench, c: &Common) -> Report {
    let mut r = Report::new(bench, c.device);
    r.params.push(param::ITERS, json!(c.iters));
    r.params.push(param::WARMUP, json!(c.warmup));
    r.params.push(
        param::DOORBELL,
        json!(format!("{:?}", c.doorbell).to_lowercase()),
    );
    r.params.push(param::QUEUE_LOG2, json!(c.queue_log2));
    r.params.push(param::HUGE, json!(c.huge));
    r.params.push(param::SMOKE, json!(c.smoke));
    r
}

/// Records the device counters that moved since `before` and the context's driver
/// counters now.
pub fn record_counters(r: &mut Report, ctx: &Context, before: &DevCounters) -> CmdResult {
    let delta = ctx.dev_stats()?.since(before);
    r.device_counters = delta.iter().filter(|(_, v)| *v != 0).collect();
    r.context = ctx_stats_fields(&ctx.ctx_stats()?).into_iter().collect();
    Ok(())
}

/// The human-readable form of a report.
pub fn render(r: &Report) -> String {
    // `mnic pingpong` and `mnic bw` are subcommands of their own, the rest of `mnic bench`.
    let group = match r.bench {
        Bench::Pingpong | Bench::Bw => "",
        _ => "bench ",
    };
    let mut out = format!("mnic {group}{} on /dev/mnic{}\n", r.bench.name(), r.device);
    if let Some(why) = &r.skipped {
        out.push_str(&format!("  skipped: {why}\n"));
        return out;
    }
    let params: Vec<String> = r.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    out.push_str(&format!("  {}\n\n", params.join(" ")));
    // One column per metric name, in order of first appearance.
    let mut cols: Vec<&str> = Vec::new();
    for row in &r.results {
        for (k, _) in row.metrics.iter() {
            if !cols.contains(&k) {
                cols.push(k);
            }
        }
    }
    let mut headers = vec!["name", "side"];
    headers.extend(&cols);
    let mut t = Table::new(&headers);
    for row in &r.results {
        let mut cells = vec![row.name.clone(), row.side.name().to_owned()];
        cells.extend(
            cols.iter()
                .map(|c| row.metrics.get(c).map_or(String::new(), |v| fmt_num(*v))),
        );
        t.row(&cells);
    }
    out.push_str(&t.render());
    if !r.ratios.is_empty() {
        out.push('\n');
        let mut t = Table::new(&["ratio", "value", "meaning"]);
        for x in &r.ratios {
            t.row(&[x.name.clone(), format!("{:.3}", x.value), x.meaning.clone()]);
        }
        out.push_str(&t.render());
    }
    if !r.device_counters.is_empty() {
        out.push('\n');
        let mut t = Table::new(&["device counter (delta)", "value"]);
        for (k, v) in r.device_counters.iter() {
            t.row(&[k.to_owned(), v.to_string()]);
        }
        out.push_str(&t.render());
    }
    for n in &r.notes {
        out.push_str(&format!("\nnote: {n}\n"));
    }
    out
}

/// Integers without decimals, large values with one, small ones with three.
fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;
    use mnic_bench_schema::names::{ratio, row};
    use mnic_bench_schema::Side;

    use super::*;
    use crate::bench::args::{BenchCmd, Common};
    use crate::bench::statistics::Timing;

    /// The default flags, as clap fills them in.
    fn common() -> Common {
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(subcommand)]
            b: BenchCmd,
        }
        match Wrap::parse_from(["bench", "copy"]).b {
            BenchCmd::Copy { common, .. } => common,
            _ => unreachable!(),
        }
    }

    #[test]
    fn common_params_and_text() {
        let mut r = new_report(Bench::Copy, &common());
        r.params.push(param::SIZE, json!(4096));
        r.row(
            row::DEVICE_COPY,
            Side::Measured,
            Timing(vec![Duration::from_micros(4)]).metrics(4096),
        );
        r.row(
            row::MEMCPY,
            Side::Baseline,
            Timing(vec![Duration::from_micros(1)]).metrics(4096),
        );
        r.ratio(ratio::DEVICE_OVER_MEMCPY_TIME, 4.0, 1.0, "x");
        r.device_counters.push("faults", 3);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["params"]["iters"], 20);
        assert_eq!(v["params"]["doorbell"], "auto");
        assert_eq!(v["params"]["size"], 4096);
        let text = render(&r);
        assert!(text
            .starts_with("mnic bench copy on /dev/mnic0\n  iters=20 warmup=2 doorbell=\"auto\""));
        assert!(text.contains("device_copy"));
        assert!(text.contains("baseline"));
        assert!(text.contains("4.000"));
        let s = Report::skipped(Bench::Sync, 0, "no SYNC");
        assert_eq!(
            render(&s),
            "mnic bench sync on /dev/mnic0\n  skipped: no SYNC\n"
        );
        let s = Report::skipped(Bench::Bw, 0, "no fabric");
        assert_eq!(render(&s), "mnic bw on /dev/mnic0\n  skipped: no fabric\n");
    }
}
