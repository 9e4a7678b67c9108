//! `mnic bench`: device work against a CPU or pinned baseline, side by side.
//!
//! Every benchmark prints progress on stderr and a result table (or, with `--json`,
//! one JSON report, the schema of `mnic-bench-schema`) on stdout: the measured side,
//! the baseline side, their ratios, and the device and context counters that moved
//! during the measurement.
//!
//! One file per job: `args` (flags), `harness` (context, buffers, posting and waiting),
//! `statistics` (timings to metrics), `device_counts` (the polling device's counters
//! per operation), `trapped` (the driver's trapped-doorbell knob), `report` (filling and
//! printing the report), and one file per benchmark. This file only applies `--smoke`
//! and dispatches.
//!
//! A benchmark that cannot run here (a driver or device without what it measures)
//! prints a report that says so (`skipped`) and succeeds.

pub mod args;
mod copy;
mod device_counts;
mod doorbell;
mod fault;
pub mod harness;
mod idle;
mod invalidate;
pub(crate) mod register;
pub mod report;
pub mod statistics;
mod sync;
mod traffic;
mod trapped;

use std::time::Duration;

use args::BenchCmd;

use crate::error::CmdResult;

/// Runs one benchmark and prints its report.
pub fn run(cmd: BenchCmd) -> CmdResult {
    let (report, json) = match cmd {
        BenchCmd::Copy { common, size, cold } => {
            let c = common.effective();
            (copy::run(&c, c.size(size, 64 << 10), cold)?, c.json)
        }
        BenchCmd::Register {
            common,
            size,
            no_touch,
            no_fill,
        } => {
            let c = common.effective();
            let size = c.size(size, 1 << 20);
            (register::run(&c, size, no_touch, no_fill)?, c.json)
        }
        BenchCmd::Fault { common, size } => {
            let c = common.effective();
            (fault::run(&c, c.size(size, 256 << 10))?, c.json)
        }
        BenchCmd::Invalidate {
            common,
            size,
            no_pageout,
        } => {
            let c = common.effective();
            let size = c.size(size, 1 << 20);
            (invalidate::run(&c, size, no_pageout)?, c.json)
        }
        BenchCmd::Traffic {
            common,
            size,
            op_size,
            ops,
            pattern,
            rate,
            seed,
            pageout,
            pageout_every_ms,
        } => {
            let c = common.effective();
            let size = c.size(size, 1 << 20);
            let ops = if c.smoke {
                Some(ops.unwrap_or(64).min(64))
            } else {
                ops
            };
            let report = traffic::run(
                &c,
                size,
                op_size,
                ops,
                pattern.into(),
                rate,
                seed,
                pageout,
                pageout_every_ms,
            )?;
            (report, c.json)
        }
        BenchCmd::Sync { common, batch } => {
            let c = common.effective();
            let batch = if c.smoke { batch.min(5) } else { batch };
            (sync::run(&c, batch)?, c.json)
        }
        BenchCmd::Doorbell {
            common,
            size,
            batch,
        } => {
            let c = common.effective();
            let batch = if c.smoke { batch.min(3) } else { batch };
            (doorbell::run(&c, c.size(size, 4096), batch)?, c.json)
        }
        BenchCmd::Idle {
            common,
            period_ms,
            settle_ms,
        } => {
            let c = common.effective();
            let period = if c.smoke {
                period_ms.min(200)
            } else {
                period_ms
            };
            let report = idle::run(
                &c,
                Duration::from_millis(period),
                Duration::from_millis(settle_ms),
            )?;
            (report, c.json)
        }
    };
    print(&report, json)
}

/// Prints `report` as JSON or as tables.
pub fn print(report: &mnic_bench_schema::Report, json: bool) -> CmdResult {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", report::render(report));
    }
    Ok(())
}
