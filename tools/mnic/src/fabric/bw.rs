//! `mnic bw`: PUT and GET bandwidth per message size, like `ib_write_bw` and `ib_read_bw`:
//! the initiator keeps its queue full of items of one size, all to (or from) the same
//! remote window, and each timed iteration moves a fixed number of bytes. Baseline: the same
//! bytes moved by local COPY items of the same size on the initiator's device. With
//! `--target-pageout` or `--target-pinned`, what those measure instead (`target_pageout`,
//! `target_pinned`).

use std::time::Duration;

use mnic::abi::fabric::PUT_CHUNK;
use mnic::{RemoteRegion, Work};
use mnic_bench_schema::names::{param, ratio, row};
use mnic_bench_schema::{Bench, Report};
use serde_json::json;

use crate::bench::args::Common;
use crate::error::CmdResult;
use crate::fabric::args::{BwMeasurement, FabricArgs};
use crate::fabric::ends::{run_local, Side};
use crate::fabric::measure::{bandwidth_vs_copy, rounds, Measured};
use crate::fabric::stream::{items_per_iter, per_iter_bytes, timed};
use crate::fabric::{target_pageout, target_pinned};

/// Untimed iterations per size without `--warmup`.
pub const DEFAULT_WARMUP: u32 = 1;
/// Sizes without `--sizes`: one full PUT packet, a page, 64 KiB, 1 and 4 MiB.
pub const DEFAULT_SIZES: [u64; 5] = [PUT_CHUNK as u64, 4096, 65536, 1 << 20, 4 << 20];
/// Sizes of `--target-pageout` and `--target-pinned` without `--sizes`.
const TARGET_SIZES: [u64; 2] = [65536, 1 << 20];
/// The same in a smoke run.
const SMOKE_TARGET_SIZES: [u64; 1] = [16384];
/// What a stream of `len` bytes carries (and what the target's window or receive buffer
/// must hold after).
pub(super) fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(29) ^ 0x3c)
        .collect()
}

pub fn run(a: &FabricArgs) -> CmdResult<Report> {
    let c = a.common(DEFAULT_WARMUP);
    let measurements = a.bw_measurements();
    let sizes = if measurements == [BwMeasurement::PutGet] {
        a.sizes(&DEFAULT_SIZES)
    } else {
        a.sizes_or_smoke(&TARGET_SIZES, &SMOKE_TARGET_SIZES)
    };
    run_local(a, Bench::Bw, &c, &sizes, 4096, |report, e| {
        let pattern = pattern(e.max);
        e.l.bufs.src.write_from(0, &pattern);
        e.r.bufs.window.write_from(0, &pattern);
        let names: Vec<&str> = measurements.iter().map(|m| m.name()).collect();
        report.params.push(param::MEASUREMENTS, json!(names));
        for m in &measurements {
            match m {
                BwMeasurement::PutGet => measure(report, &c, &sizes, &e.l, &e.r.region, &pattern)?,
                BwMeasurement::TargetPageout => target_pageout::measure(report, &c, e)?,
                BwMeasurement::TargetPinned => target_pinned::measure(report, &c, e, &pattern)?,
            }
        }
        if e.r.bufs.window.to_vec() != pattern {
            return Err("the target's window differs after the runs".into());
        }
        Ok(())
    })
}

/// The timed runs of every size from `l` against `region` (PUT, GET) and the local COPY
/// baseline, into `report`; `l`'s source holds `pattern`, and what GET and COPY bring
/// back is checked against it. The target's window is the caller's to check.
pub(super) fn measure(
    report: &mut Report,
    c: &Common,
    sizes: &[u64],
    l: &Side,
    region: &RemoteRegion,
    pattern: &[u8],
) -> CmdResult {
    let per_iter = per_iter_bytes(c.smoke);
    let timeout = Duration::from_millis(c.timeout_ms);
    report.params.push(param::BYTES_PER_ITER, json!(per_iter));
    let lbufs = l.bufs;
    for &size in sizes {
        let len = usize::try_from(size)?;
        let count = items_per_iter(size, per_iter);
        let bytes = count * size;
        let put = Work::put(&lbufs.src, 0, region, 0, len)?;
        let get = Work::get(&lbufs.dst, 0, region, 0, len)?;
        let copy = Work::copy_buffers(&lbufs.src, 0, &lbufs.dst, 0, len)?;
        let batch = |w: Work| vec![w; count as usize];
        let (puts, gets, copies) = (batch(put), batch(get), batch(copy));
        let what = format!("{size} bytes: {count} items per iteration");
        let [tp, tg, tc] = rounds(c, "bw", &what, || {
            Ok([
                timed(l.ctx, &puts, bytes, timeout)?,
                timed(l.ctx, &gets, bytes, timeout)?,
                timed(l.ctx, &copies, bytes, timeout)?,
            ])
        })?;
        if lbufs.dst.to_vec()[..len] != pattern[..len] {
            return Err(format!("{size} bytes: data differs after the runs").into());
        }
        let ms = [
            Measured {
                row: row::PUT_BW,
                ratio: ratio::PUT_OVER_COPY_BANDWIDTH,
                meaning: "PUT bandwidth / local COPY bandwidth, medians (<1: the fabric is slower)",
                times: &tp,
            },
            Measured {
                row: row::GET_BW,
                ratio: ratio::GET_OVER_COPY_BANDWIDTH,
                meaning: "GET bandwidth / local COPY bandwidth, medians (<1: the fabric is slower)",
                times: &tg,
            },
        ];
        bandwidth_vs_copy(report, size, bytes, &ms, &tc);
    }
    Ok(())
}
