//! The two ends of a fabric benchmark in one process: a context on each device, and on each
//! a receive window registered for remote access ([`Side`]).

use std::path::Path;
use std::time::Duration;

use mnic::{Access, Context, DmaBuffer, Endpoint, Registration, RemoteRegion};
use mnic_bench_schema::names::param;
use mnic_bench_schema::{Bench, Report};
use serde_json::json;

use crate::bench::args::Common;
use crate::bench::harness::setup;
use crate::bench::report::{new_report, record_counters};
use crate::error::CmdResult;
use crate::fabric::args::FabricArgs;
use crate::fabric::oracle::{self, End};

/// Buffers of one end: a source, a destination for GET and COPY, and the window its peer
/// writes (registered `READ | WRITE | REMOTE`), each `len` bytes.
pub struct Buffers {
    pub src: DmaBuffer,
    pub dst: DmaBuffer,
    pub window: DmaBuffer,
}

impl Buffers {
    pub fn new(len: usize) -> CmdResult<Self> {
        Ok(Self {
            src: DmaBuffer::new(len)?,
            dst: DmaBuffer::new(len)?,
            window: DmaBuffer::new(len)?,
        })
    }
}

/// One end, registered: its context's registrations of its [`Buffers`] and the region its
/// peer uses. Translations are prefetched: the benchmarks measure the fabric, not faults.
pub struct Side<'a> {
    pub ctx: &'a Context,
    pub bufs: &'a Buffers,
    pub region: RemoteRegion,
    _regs: [Registration<'a>; 3],
}

impl<'a> Side<'a> {
    pub fn new(ctx: &'a Context, bufs: &'a Buffers) -> CmdResult<Self> {
        let rs = ctx.register(&bufs.src, Access::READ | Access::PREFETCH)?;
        let rd = ctx.register(&bufs.dst, Access::WRITE)?;
        let rw = ctx.register(&bufs.window, Access::READ_WRITE | Access::REMOTE)?;
        rd.prefetch(true)?;
        rw.prefetch(true)?;
        let region = rw
            .remote_region()
            .ok_or("a REMOTE registration without a remote region")?;
        Ok(Self {
            ctx,
            bufs,
            region,
            _regs: [rs, rd, rw],
        })
    }

    /// This end's context as a fabric address, for tagged messages.
    pub fn endpoint(&self) -> CmdResult<Endpoint> {
        Ok(self
            .ctx
            .endpoint()
            .ok_or("the context is not on a fabric node: no endpoint")?)
    }
}

/// Opens both contexts, sets up their queues as `c` says and arms them with `--oracle`;
/// `Ok(Err(why))` when the benchmark cannot run here (a device missing, not a node of a
/// fabric, or both ends on one node), which the caller reports as skipped.
fn open_both(a: &FabricArgs, c: &Common) -> CmdResult<Result<(End, End), String>> {
    let open = |p: &Path| Context::open(p).map_err(|e| e.to_string());
    let (local, remote) = match (open(&a.local), open(&a.remote)) {
        (Ok(l), Ok(r)) => (l, r),
        (Err(why), _) | (_, Err(why)) => return Ok(Err(why)),
    };
    let not_a_node = |p: &Path| format!("{} is not a node of a fabric", p.display());
    match (local.info().node, remote.info().node) {
        (Some(l), Some(r)) if l != r => {}
        (Some(_), Some(_)) => return Ok(Err("--local and --remote are one fabric node".into())),
        (None, _) => return Ok(Err(not_a_node(&a.local))),
        (_, None) => return Ok(Err(not_a_node(&a.remote))),
    }
    let local = oracle::end(a, setup(c, local)?)?;
    let remote = oracle::end(a, setup(c, remote)?)?;
    Ok(Ok((local, remote)))
}

/// The length of buffers that take the largest of `sizes` (`fallback` bytes without any).
pub fn largest(sizes: &[u64], fallback: u64) -> CmdResult<usize> {
    Ok(usize::try_from(
        sizes.iter().copied().max().unwrap_or(fallback),
    )?)
}

/// Both ends of a run in this process, registered, with the run's sizes.
pub struct Local<'a> {
    pub sizes: &'a [u64],
    /// The largest of `sizes`: the length of every buffer.
    pub max: usize,
    pub timeout: Duration,
    pub l: Side<'a>,
    pub r: Side<'a>,
}

/// The frame of a `bench` run with both ends here, whatever it posts: opens the ends (or
/// reports the run skipped), gives each buffers for the largest of `sizes` (`fallback`
/// bytes without any), records the ends and the operation, runs `body`, then adds the
/// counters of both devices that moved during it.
pub fn run_local(
    a: &FabricArgs,
    bench: Bench,
    c: &Common,
    sizes: &[u64],
    fallback: u64,
    body: impl FnOnce(&mut Report, &Local) -> CmdResult,
) -> CmdResult<Report> {
    let (local, remote) = match open_both(a, c)? {
        Ok(ends) => ends,
        Err(why) => return Ok(Report::skipped(bench, c.device, why)),
    };
    let max = largest(sizes, fallback)?;
    let (lbufs, rbufs) = (Buffers::new(max)?, Buffers::new(max)?);
    let ends = Local {
        sizes,
        max,
        timeout: Duration::from_millis(c.timeout_ms),
        l: Side::new(&local, &lbufs)?,
        r: Side::new(&remote, &rbufs)?,
    };
    let mut report = new_report(bench, c);
    record_ends(&mut report, a, &local, &remote, sizes);
    report.params.push(param::OP, json!(a.op.name()));
    oracle::note(&mut report, a);
    let before = local.dev_stats()?;
    let remote_before = remote.dev_stats()?;
    body(&mut report, &ends)?;
    // The remote window's registration ends before the counters are read.
    drop(ends.r);
    record_counters(&mut report, &local, &before)?;
    remote_note(&mut report, &remote, &remote_before)?;
    Ok(report)
}

/// The parameters every fabric report has: the two ends and the sizes.
fn record_ends(r: &mut Report, a: &FabricArgs, local: &Context, remote: &Context, sizes: &[u64]) {
    r.params
        .push(param::LOCAL, json!(a.local.display().to_string()));
    r.params
        .push(param::REMOTE, json!(a.remote.display().to_string()));
    r.params.push(param::LOCAL_NODE, json!(local.info().node));
    r.params.push(param::REMOTE_NODE, json!(remote.info().node));
    r.params.push(param::SIZES, json!(sizes));
}

/// A note with the remote device's fabric counters that moved (its datagrams, and the
/// retransmissions a lossy fabric causes).
fn remote_note(r: &mut Report, remote: &Context, before: &mnic::DevCounters) -> CmdResult {
    let delta = remote.dev_stats()?.since(before);
    let moved: Vec<String> = delta
        .iter()
        .filter(|(k, v)| k.starts_with("fabric_") && *v != 0)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    r.notes.push(format!("remote device: {}", moved.join(" ")));
    Ok(())
}
