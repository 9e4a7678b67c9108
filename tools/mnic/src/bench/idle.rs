//! `mnic bench idle`: what the polling device costs when nothing happens. The device's
//! own CPU time (`device_cpu_us`, spec §10) over a quiet period that starts once its
//! spin budget has surely run out, as a share of one core, next to the same reading
//! while one context posts NOP items back to back.

use std::thread::sleep;
use std::time::{Duration, Instant};

use mnic::abi::counter;
use mnic::{Caps, Context, DevCounters, Work};
use mnic_bench_schema::names::{metric, param, ratio, row};
use mnic_bench_schema::{Bench, Fields, Report, Side};
use serde_json::json;

use crate::bench::args::Common;
use crate::bench::harness::{open, progress};
use crate::bench::report::{new_report, record_counters};
use crate::error::CmdResult;

/// Device CPU time, sleeps and doorbells over one measured period.
#[derive(Debug, Default, Clone, Copy)]
struct Period {
    cpu_us: u64,
    wall_us: f64,
    sleeps: u64,
    doorbells: u64,
    ops: u64,
}

impl Period {
    fn add(&mut self, a: &DevCounters, b: &DevCounters, wall: Duration, ops: u64) {
        let d = b.since(a);
        self.cpu_us += d.get(counter::DEVICE_CPU_US);
        self.sleeps += d.get(counter::SLEEPS);
        self.doorbells += d.get(counter::DOORBELLS);
        self.wall_us += wall.as_secs_f64() * 1e6;
        self.ops += ops;
    }
    fn percent(&self) -> f64 {
        if self.wall_us > 0.0 {
            self.cpu_us as f64 / self.wall_us * 100.0
        } else {
            0.0
        }
    }
    fn metrics(&self) -> Fields<f64> {
        let per_s = |n: u64| {
            if self.wall_us > 0.0 {
                n as f64 / self.wall_us * 1e6
            } else {
                0.0
            }
        };
        let mut m = Fields::default();
        m.push(metric::DEVICE_CPU_US, self.cpu_us as f64);
        m.push(metric::WALL_US, self.wall_us);
        m.push(metric::DEVICE_CPU_PERCENT, self.percent());
        m.push(metric::SLEEPS_PER_S, per_s(self.sleeps));
        m.push(metric::DOORBELLS_PER_S, per_s(self.doorbells));
        m.push(metric::OPS_PER_S, per_s(self.ops));
        m
    }
}

/// NOP items, one at a time, for `period`; returns how many.
fn busy(ctx: &Context, period: Duration, timeout: Duration) -> CmdResult<u64> {
    let t = Instant::now();
    let mut n = 0;
    while t.elapsed() < period {
        ctx.run(&Work::nop(), Some(timeout))?;
        n += 1;
    }
    Ok(n)
}

pub fn run(c: &Common, period: Duration, settle: Duration) -> CmdResult<Report> {
    let ctx = open(c)?;
    let first = ctx.dev_stats()?;
    if first.get(counter::DEVICE_CPU_US) == 0 {
        return Ok(Report::skipped(
            Bench::Idle,
            c.device,
            "the device does not report its CPU time (counter device_cpu_us reads 0)",
        ));
    }
    let timeout = Duration::from_millis(c.timeout_ms);
    eprintln!(
        "[idle] {} ms busy (NOPs) then {} ms quiet after {} ms settling, {} iterations",
        period.as_millis(),
        period.as_millis(),
        settle.as_millis(),
        c.iters
    );
    let (mut idle, mut load) = (Period::default(), Period::default());
    let before = ctx.dev_stats()?;
    for i in 0..c.iters {
        // Busy: wakes the device, and shows what it costs while there is work.
        let a = ctx.dev_stats()?;
        let t = Instant::now();
        let n = busy(&ctx, period, timeout)?;
        load.add(&a, &ctx.dev_stats()?, t.elapsed(), n);
        // Quiet: nothing posted; the spin budget (microseconds) ended long before.
        sleep(settle);
        let a = ctx.dev_stats()?;
        let t = Instant::now();
        sleep(period);
        let wall = t.elapsed();
        idle.add(&a, &ctx.dev_stats()?, wall, 0);
        progress("idle", i, c.iters);
    }
    let mut report = new_report(Bench::Idle, c);
    record_counters(&mut report, &ctx, &before)?;
    report
        .params
        .push(param::PERIOD_MS, json!(period.as_millis() as u64));
    report
        .params
        .push(param::SETTLE_MS, json!(settle.as_millis() as u64));
    report.params.push(
        param::SHADOW_CAP,
        json!(ctx.info().caps.contains(Caps::SHADOW)),
    );
    report.params.push(
        param::MEASURED_DOORBELL,
        json!(ctx
            .queue_config()
            .map(|q| format!("{:?}", q.doorbell).to_lowercase())),
    );
    report.row(row::DEVICE_IDLE, Side::Measured, idle.metrics());
    report.row(row::DEVICE_BUSY, Side::Reference, load.metrics());
    report.ratio(
        ratio::IDLE_DEVICE_CPU_OVER_WALL,
        idle.cpu_us as f64,
        idle.wall_us,
        "device CPU time while idle / wall time: the share of one core an idle device uses",
    );
    report.ratio(
        ratio::IDLE_OVER_BUSY_DEVICE_CPU,
        idle.percent(),
        load.percent(),
        "device CPU share idle / busy (NOPs back to back)",
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mnic::abi::MnicDevStats;

    #[test]
    fn period_share_of_a_core() {
        let reading = |cpu, sleeps| {
            let mut m = MnicDevStats::default();
            m.counters[counter::DEVICE_CPU_US as usize] = cpu;
            m.counters[counter::SLEEPS as usize] = sleeps;
            DevCounters(m)
        };
        let mut p = Period::default();
        p.add(
            &reading(1000, 0),
            &reading(6000, 200),
            Duration::from_secs(1),
            0,
        );
        assert!((p.percent() - 0.5).abs() < 1e-9);
        assert_eq!(p.metrics().get(metric::SLEEPS_PER_S), Some(&200.0));
        assert_eq!(Period::default().percent(), 0.0);
    }
}
