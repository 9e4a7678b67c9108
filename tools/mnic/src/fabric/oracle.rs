//! `--oracle`: every context a fabric run opens is armed with the stale-access oracle
//! (`mnic::oracle`, spec §8a), so its device judges the run against a witness of the
//! invalidations that does not trust the driver (`oracle_invalidations` counts the reports it
//! accepted, `oracle_violations` what it flagged). The oracle watches the address space of the
//! process that arms it, so each process arms the contexts it opened itself: with an end per
//! process, each end arms its own.

use std::ops::Deref;

use mnic::oracle::Armed;
use mnic::Context;
use mnic_bench_schema::Report;

use crate::error::CmdResult;
use crate::fabric::args::FabricArgs;

/// A context of a fabric run, armed when the run asked for the oracle. Derefs to the
/// [`Context`]. The arming outlives everything the run allocated after the context (its
/// buffers are dropped first), so their unmaps are reported too, and ends just before the
/// context closes (fields drop in declaration order).
pub struct End {
    _armed: Option<Armed>,
    ctx: Context,
}

impl Deref for End {
    type Target = Context;
    fn deref(&self) -> &Context {
        &self.ctx
    }
}

/// `ctx` as an end of the run: armed with `--oracle` (which fails if the oracle module is not
/// loaded), as it is otherwise.
pub fn end(a: &FabricArgs, ctx: Context) -> CmdResult<End> {
    let armed = if a.oracle {
        let armed = mnic::oracle::arm(&ctx)?;
        eprintln!(
            "[oracle] {} context {} armed",
            ctx.path().display(),
            armed.context()
        );
        Some(armed)
    } else {
        None
    };
    Ok(End { _armed: armed, ctx })
}

/// With `--oracle`, a note in the report that the run was watched (each invalidation of the
/// process then costs a report to the device, which the timings include).
pub fn note(report: &mut Report, a: &FabricArgs) {
    if a.oracle {
        report.notes.push(
            "--oracle: the stale-access oracle watched every context of this run (each \
             invalidation of the process was reported to its device)"
                .into(),
        );
    }
}
