//! What the fabric benchmarks' measuring shares, whatever they post: timed rounds whose
//! warmups are dropped, and the rows and ratios that set a measured operation against the
//! local COPY baseline.

use std::time::Duration;

use mnic_bench_schema::names::{metric, row};
use mnic_bench_schema::{Fields, Report, Side as RowSide};

use crate::bench::args::Common;
use crate::bench::harness::progress;
use crate::bench::statistics::Timing;
use crate::error::CmdResult;

/// `size` as a message length: a message has at least one byte (its stamp is its last).
pub fn message_len(size: u64) -> CmdResult<usize> {
    match usize::try_from(size)? {
        0 => Err("message sizes must be at least 1 byte".into()),
        len => Ok(len),
    }
}

/// Runs `c.warmup + c.iters` rounds, announced as `[label] what: N iterations`; each round
/// returns one time per measured operation, and the timed rounds' times are returned in the
/// same order.
pub fn rounds<const N: usize>(
    c: &Common,
    label: &str,
    what: &str,
    mut round: impl FnMut() -> CmdResult<[Duration; N]>,
) -> CmdResult<[Timing; N]> {
    eprintln!("[{label}] {what}: {} iterations", c.iters);
    let mut timings: [Timing; N] = std::array::from_fn(|_| Timing::default());
    for i in 0..c.warmup + c.iters {
        let times = round()?;
        if i >= c.warmup {
            for (t, d) in timings.iter_mut().zip(times) {
                t.0.push(d);
            }
            progress(label, i - c.warmup, c.iters);
        }
    }
    Ok(timings)
}

/// Latency metrics of one row: timing metrics plus the 99th percentile.
fn latency_metrics(t: &Timing, size: u64) -> Fields<f64> {
    let mut m = t.metrics(size);
    m.push(metric::P99_US, t.pct_us(0.99));
    m
}

/// One measured operation's times, the row they make and their ratio to the baseline's.
pub struct Measured<'a> {
    pub row: &'a str,
    pub ratio: &'a str,
    pub meaning: &'a str,
    pub times: &'a Timing,
}

/// The latency rows of `size`-byte messages, `m`'s and the COPY baseline's, and the ratio
/// of their medians (above 1: the fabric is slower).
pub fn latency_vs_copy(report: &mut Report, size: u64, m: Measured, copy: &Timing) {
    report.row(
        &row::sized(m.row, size),
        RowSide::Measured,
        latency_metrics(m.times, size),
    );
    report.row(
        &row::sized(row::COPY_ONE_WAY, size),
        RowSide::Baseline,
        latency_metrics(copy, size),
    );
    report.ratio(
        &row::sized(m.ratio, size),
        m.times.p50_us(),
        copy.p50_us(),
        m.meaning,
    );
}

/// The bandwidth rows of `size`-byte items moving `bytes` per iteration, each of `ms`'s and
/// the COPY baseline's, and each measured one's ratio to the baseline (below 1: the fabric
/// is slower).
pub fn bandwidth_vs_copy(
    report: &mut Report,
    size: u64,
    bytes: u64,
    ms: &[Measured],
    copy: &Timing,
) {
    bandwidth_vs_baseline(report, size, bytes, ms, row::COPY_BW, copy);
}

/// The bandwidth rows of `size`-byte items moving `bytes` per iteration, each of `ms`'s and
/// the baseline's (row `baseline_row`), and each measured one's ratio to the baseline.
/// The bytes per iteration are the same, so the bandwidth ratio is the inverse of the
/// medians' ratio.
pub fn bandwidth_vs_baseline(
    report: &mut Report,
    size: u64,
    bytes: u64,
    ms: &[Measured],
    baseline_row: &str,
    baseline: &Timing,
) {
    for m in ms {
        report.row(
            &row::sized(m.row, size),
            RowSide::Measured,
            m.times.metrics(bytes),
        );
    }
    report.row(
        &row::sized(baseline_row, size),
        RowSide::Baseline,
        baseline.metrics(bytes),
    );
    for m in ms {
        report.ratio(
            &row::sized(m.ratio, size),
            baseline.p50_us(),
            m.times.p50_us(),
            m.meaning,
        );
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use mnic_bench_schema::names::ratio;
    use mnic_bench_schema::Bench;

    use super::*;
    use crate::bench::report::new_report;

    fn common(iters: &str, warmup: &str) -> Common {
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            c: Common,
        }
        Wrap::parse_from(["t", "--iters", iters, "--warmup", warmup]).c
    }

    #[test]
    fn rounds_drop_the_warmups() {
        let mut k = 0u64;
        let [a, b] = rounds(&common("3", "2"), "t", "test", || {
            k += 1;
            Ok([Duration::from_micros(k), Duration::from_micros(10 * k)])
        })
        .unwrap();
        assert_eq!(k, 5);
        let us = |t: &Timing| t.0.iter().map(|d| d.as_micros()).collect::<Vec<_>>();
        assert_eq!(us(&a), [3, 4, 5]);
        assert_eq!(us(&b), [30, 40, 50]);
        let failing = rounds::<1>(&common("3", "0"), "t", "test", || Err("no".into()));
        assert!(failing.is_err());
    }

    #[test]
    fn messages_have_a_byte() {
        assert!(message_len(0).is_err());
        assert_eq!(message_len(8).unwrap(), 8);
    }

    #[test]
    fn bandwidth_rows_then_ratios_to_the_baseline() {
        let mut r = new_report(Bench::Bw, &common("1", "0"));
        let t = |us| Timing(vec![Duration::from_micros(us)]);
        let (put, get, copy) = (t(20), t(40), t(10));
        let m = |row, ratio, times| Measured {
            row,
            ratio,
            meaning: "m",
            times,
        };
        let ms = [
            m(row::PUT_BW, ratio::PUT_OVER_COPY_BANDWIDTH, &put),
            m(row::GET_BW, ratio::GET_OVER_COPY_BANDWIDTH, &get),
        ];
        bandwidth_vs_copy(&mut r, 4096, 8192, &ms, &copy);
        let names: Vec<&str> = r.results.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(
            names,
            [
                row::sized(row::PUT_BW, 4096),
                row::sized(row::GET_BW, 4096),
                row::sized(row::COPY_BW, 4096)
            ]
        );
        assert_eq!(r.results[2].side, RowSide::Baseline);
        assert_eq!(r.ratios.len(), 2);
        assert_eq!(r.ratios[1].value, 0.25);
    }

    #[test]
    fn bandwidth_against_another_baseline_row() {
        let mut r = new_report(Bench::Bw, &common("1", "0"));
        let t = |us| Timing(vec![Duration::from_micros(us)]);
        let (on_demand, pinned) = (t(50), t(40));
        let m = Measured {
            row: row::PUT_BW_ON_DEMAND_TARGET,
            ratio: ratio::ON_DEMAND_OVER_PINNED_PUT_BANDWIDTH,
            meaning: "m",
            times: &on_demand,
        };
        bandwidth_vs_baseline(
            &mut r,
            65536,
            65536,
            &[m],
            row::PUT_BW_PINNED_TARGET,
            &pinned,
        );
        assert_eq!(
            r.results[1].name,
            row::sized(row::PUT_BW_PINNED_TARGET, 65536)
        );
        assert_eq!(r.results[1].side, RowSide::Baseline);
        assert_eq!(r.ratios[0].value, 0.8);
    }
}
