//! `mnic bw --target-pinned`: PUT bandwidth into the target's window registered on demand
//! (the default, translations prefetched like every window of the fabric benchmarks)
//! against a second window of the target registered `PINNED` (the classic NIC's mode, as
//! `mnic bench register` registers it), the same items and sizes, alternated in each round.

use std::time::Duration;

use mnic::{Access, DmaBuffer, RemoteRegion, Work};
use mnic_bench_schema::names::{param, ratio, row};
use mnic_bench_schema::Report;
use serde_json::json;

use crate::bench::args::Common;
use crate::bench::register::pinned_unsupported;
use crate::error::CmdResult;
use crate::fabric::ends::Local;
use crate::fabric::measure::{bandwidth_vs_baseline, rounds, Measured};
use crate::fabric::stream::{items_per_iter, per_iter_bytes, timed};

/// `mnic bw --target-pinned` over `e.sizes`, into `report`; the initiator's source holds
/// `pattern`, and the pinned window must hold it after. A driver without pinned mode
/// (`EOPNOTSUPP`) leaves a note and no rows.
pub fn measure(report: &mut Report, c: &Common, e: &Local, pattern: &[u8]) -> CmdResult {
    let pinned = DmaBuffer::new(e.max)?;
    pinned.write_from(0, pattern);
    let access = Access::READ_WRITE | Access::REMOTE | Access::PINNED;
    let reg = match e.r.ctx.register(&pinned, access) {
        Ok(reg) => reg,
        Err(err) if pinned_unsupported(&err) => {
            report.params.push(param::PINNED_SUPPORTED, json!(false));
            report.notes.push(
                "REG_PINNED returned EOPNOTSUPP: no pinned target, no --target-pinned rows".into(),
            );
            return Ok(());
        }
        Err(err) => return Err(err.into()),
    };
    report.params.push(param::PINNED_SUPPORTED, json!(true));
    let region = reg
        .remote_region()
        .ok_or("a REMOTE registration without a remote region")?;
    for &size in e.sizes {
        measure_size(report, c, e, &region, size)?;
    }
    reg.deregister()?;
    if pinned.to_vec() != pattern {
        return Err("the pinned target window differs after the runs".into());
    }
    Ok(())
}

/// One size: PUT batches into the on-demand window and into the pinned one (`pinned`).
fn measure_size(
    report: &mut Report,
    c: &Common,
    e: &Local,
    pinned: &RemoteRegion,
    size: u64,
) -> CmdResult {
    let len = usize::try_from(size)?;
    let per_iter = per_iter_bytes(c.smoke);
    let count = items_per_iter(size, per_iter);
    let bytes = count * size;
    let batch = |region: &RemoteRegion| -> CmdResult<Vec<Work>> {
        Ok(vec![
            Work::put(&e.l.bufs.src, 0, region, 0, len)?;
            count as usize
        ])
    };
    let (on_demand_puts, pinned_puts) = (batch(&e.r.region)?, batch(pinned)?);
    let what =
        format!("{size} bytes into on-demand and pinned targets: {count} items per iteration");
    let run = |items: &[Work]| -> CmdResult<Duration> { timed(e.l.ctx, items, bytes, e.timeout) };
    let [on_demand, pinned_t] = rounds(c, "bw target-pinned", &what, || {
        Ok([run(&on_demand_puts)?, run(&pinned_puts)?])
    })?;
    let m = Measured {
        row: row::PUT_BW_ON_DEMAND_TARGET,
        ratio: ratio::ON_DEMAND_OVER_PINNED_PUT_BANDWIDTH,
        meaning: "PUT bandwidth into an on-demand target / into a pinned target, medians \
                  (<1: on-demand is slower)",
        times: &on_demand,
    };
    bandwidth_vs_baseline(
        report,
        size,
        bytes,
        &[m],
        row::PUT_BW_PINNED_TARGET,
        &pinned_t,
    );
    Ok(())
}
