//! The two ends of every case: an initiator context on `/dev/mnic0` and a target context on
//! `/dev/mnic1` (nodes 1 and 2 of a loopback fabric), the target's memory registered for
//! remote access ([`Window`]), and the checks every case ends with.

use mnic::{Access, Context, Error, Registration, RemoteError, RemoteRegion, Work, WorkDone};
use mnic_guest_util::nic::{self, Nic, TIMEOUT};
use mnic_guest_util::{check, e, ensure_swap, is_pattern, Map, OnOneCpu};

/// The initiator's device.
pub const INITIATOR: &str = "/dev/mnic0";
/// The target's device.
pub const TARGET: &str = "/dev/mnic1";

/// Errnos a target driver may abort a write fault on a read-only mapping with.
pub const WRITE_DENIED: [i32; 3] = [libc::EFAULT, libc::EPERM, libc::EACCES];

/// Both contexts, queues set up (a target context must be enabled to be reachable), each
/// watched by the stale-access oracle when the image has it.
pub struct Pair {
    pub init: Nic,
    pub target: Nic,
}

fn open_enabled(path: &str) -> Result<Nic, String> {
    let ctx = nic::open_path(path)?;
    ctx.setup_queues(nic::queue_config())
        .map_err(e("setup_queues"))?;
    Ok(ctx)
}

/// Opens the initiator and the target; fails unless they are two nodes of one fabric.
pub fn pair() -> Result<Pair, String> {
    pair_on(INITIATOR, TARGET)
}

/// [`pair`] with the initiator on `init_path` and the target on `target_path`.
pub fn pair_on(init_path: &str, target_path: &str) -> Result<Pair, String> {
    let init = open_enabled(init_path)?;
    let target = open_enabled(target_path)?;
    match (init.endpoint(), target.endpoint()) {
        (Some(a), Some(b)) if a.node != b.node => Ok(Pair { init, target }),
        (a, b) => Err(format!(
            "{init_path} ({a:?}) and {target_path} ({b:?}) are not two nodes of a fabric \
             (mnic-vm run --devices 2 --fabric)"
        )),
    }
}

/// The ends of a case that swaps memory out, with this process held on CPU 0 until the
/// guard drops (page-outs and faults then race on one CPU); `None` where there is no swap
/// (the case is then skipped: [`NO_SWAP`]).
pub fn swap_pair() -> Result<Option<(OnOneCpu, Pair)>, String> {
    if !ensure_swap()? {
        return Ok(None);
    }
    let one_cpu = OnOneCpu::new(0)?;
    Ok(Some((one_cpu, pair()?)))
}

/// Why a case that swaps memory out is skipped.
pub const NO_SWAP: &str = "no swap (no zram)";

impl Pair {
    /// Neither device saw a stale access, by its own checker or the oracle's.
    pub fn no_stale(&self) -> Result<(), String> {
        nic::no_stale(&self.init).map_err(|m| format!("initiator: {m}"))?;
        nic::no_stale(&self.target).map_err(|m| format!("target: {m}"))
    }

    /// Runs `work` on the initiator and waits for it.
    pub fn run(&self, work: mnic::Result<Work>) -> mnic::Result<u64> {
        self.init.run(&work?, TIMEOUT)
    }

    /// A PUT of `len` bytes from the initiator's `src` into `region` at `off`, which must
    /// succeed and report all of them; errors begin with `what`.
    pub fn put(
        &self,
        src: u64,
        region: &RemoteRegion,
        off: u64,
        len: usize,
        what: &str,
    ) -> Result<(), String> {
        let n = rma_len(len, what)?;
        self.moved(Work::put_va(src, region, off, n), len, what)
    }

    /// A GET of `len` bytes of `region` at `off` into the initiator's `dst`, as
    /// [`put`](Self::put).
    pub fn get(
        &self,
        dst: u64,
        region: &RemoteRegion,
        off: u64,
        len: usize,
        what: &str,
    ) -> Result<(), String> {
        let n = rma_len(len, what)?;
        self.moved(Work::get_va(dst, region, off, n), len, what)
    }

    fn moved(&self, work: mnic::Result<Work>, len: usize, what: &str) -> Result<(), String> {
        let got = self.run(work).map_err(|err| format!("{what}: {err}"))?;
        check(got == len as u64, || {
            format!("{what}: completion says {got} bytes, want {len}")
        })
    }
}

/// `len` as the length of one PUT or GET.
fn rma_len(len: usize, what: &str) -> Result<u32, String> {
    u32::try_from(len).map_err(|_| format!("{what}: {len} bytes is too long for one item"))
}

/// Device faults the driver handled for `ctx` so far.
pub fn faults(ctx: &Context) -> Result<u64, String> {
    Ok(nic::stats(ctx)?.faults)
}

/// Invalidations that hit `ctx` so far.
pub fn invalidations(ctx: &Context) -> Result<u64, String> {
    Ok(nic::stats(ctx)?.invalidations)
}

/// Fabric statistics `which` (`abi::fabric_counter` indices) of the device under `ctx`, as
/// the guest sees them (debugfs `fabric`, from the device's `FABRIC_COUNTER` registers), so
/// that a case can check what one step added to them.
pub struct FabricStats<'a, const N: usize> {
    ctx: &'a Context,
    which: [u32; N],
    base: [u64; N],
}

impl<'a, const N: usize> FabricStats<'a, N> {
    /// Reads `which` now.
    pub fn new(ctx: &'a Context, which: [u32; N]) -> Result<Self, String> {
        let mut s = FabricStats {
            ctx,
            which,
            base: [0; N],
        };
        s.grew()?;
        Ok(s)
    }

    /// How much each of `which` grew since the last reading, in `which` order.
    pub fn grew(&mut self) -> Result<[u64; N], String> {
        let mut delta = [0; N];
        for (k, &i) in self.which.iter().enumerate() {
            let now = nic::fabric_stat(self.ctx, i)?;
            delta[k] = now.wrapping_sub(self.base[k]);
            self.base[k] = now;
        }
        Ok(delta)
    }
}

/// Registers a raw mapping of this process on `ctx`.
pub fn register<'a>(
    ctx: &'a Context,
    map: &Map,
    access: Access,
) -> Result<Registration<'a>, String> {
    nic::reg_raw(ctx, map.va(), map.len, access)
}

/// Target memory registered for remote access: a fresh anonymous mapping, its registration
/// (made with `Access::REMOTE`) and the region a peer uses.
pub struct Window<'a> {
    // Before `map`: deregistered before the mapping goes.
    reg: Option<Registration<'a>>,
    pub map: Map,
    pub region: RemoteRegion,
}

impl<'a> Window<'a> {
    /// `len` bytes on `target` with `access` (plus `REMOTE`); filled with pattern `seed`
    /// first, or left untouched (never faulted in by the CPU) with `None`.
    pub fn new(
        target: &'a Context,
        len: usize,
        access: Access,
        seed: Option<u64>,
    ) -> Result<Self, String> {
        let map = Map::anon(len)?;
        if let Some(seed) = seed {
            map.fill(0, len, seed);
        }
        let reg = register(target, &map, access | Access::REMOTE)?;
        let region = reg
            .remote_region()
            .ok_or_else(|| "a REMOTE registration without a remote region".to_string())?;
        check(region.len == len as u64 && region.va == map.va(), || {
            format!("region {region} does not match the mapping")
        })?;
        Ok(Window {
            reg: Some(reg),
            map,
            region,
        })
    }

    /// Deregisters now (the key dies with it).
    pub fn deregister(&mut self) -> Result<(), String> {
        match self.reg.take() {
            Some(r) => r.deregister().map_err(e("DEREGISTER")),
            None => Ok(()),
        }
    }

    /// Checks that `[off, off + len)` holds pattern `seed`.
    pub fn holds(&self, off: usize, len: usize, seed: u64) -> Result<(), String> {
        is_pattern(&self.map.read(off, len), off, seed).map_err(|m| format!("target: {m}"))
    }
}

/// A local mapping of the initiator filled with pattern `seed` and registered with `access`.
pub fn local<'a>(
    init: &'a Context,
    len: usize,
    access: Access,
    seed: u64,
) -> Result<(Map, Registration<'a>), String> {
    let map = Map::anon(len)?;
    map.fill(0, len, seed);
    let reg = register(init, &map, access)?;
    Ok((map, reg))
}

/// `Ok` if `got` equals `want`; else where they first differ.
pub fn same(got: &[u8], want: &[u8], what: &str) -> Result<(), String> {
    check(got.len() == want.len(), || {
        format!("{what}: {} bytes, want {}", got.len(), want.len())
    })?;
    match got.iter().zip(want).position(|(a, b)| a != b) {
        None => Ok(()),
        Some(i) => Err(format!(
            "{what}: byte {i:#x} is {:#04x}, want {:#04x}",
            got[i], want[i]
        )),
    }
}

/// Expects a PUT or GET to fail with `want`.
pub fn want_remote<T: std::fmt::Debug>(
    r: mnic::Result<T>,
    want: RemoteError,
    what: &str,
) -> Result<(), String> {
    match r {
        Err(err) if err.remote_error() == Some(want) => Ok(()),
        other => Err(format!("{what}: got {other:?}, want {want:?}")),
    }
}

/// Expects a PUT or GET that the target's driver aborted with one of `errnos`; returns it.
pub fn want_remote_abort<T: std::fmt::Debug>(
    r: mnic::Result<T>,
    errnos: &[i32],
    what: &str,
) -> Result<i32, String> {
    match r {
        Err(err) => match err.remote_error() {
            Some(RemoteError::FaultAborted { errno }) if errnos.contains(&errno) => Ok(errno),
            _ => Err(format!(
                "{what}: got {err}, want REMOTE_FAULT_ABORTED with errno in {errnos:?}"
            )),
        },
        Ok(v) => Err(format!(
            "{what}: succeeded ({v:?}), want REMOTE_FAULT_ABORTED"
        )),
    }
}

/// Posts `items` on `ctx` in order (never more outstanding than the queue allows), calls
/// `meanwhile(i)` right after item `i` is posted (while the device works on the stream),
/// and returns every completion, in posting order.
pub fn stream(
    ctx: &Context,
    items: &[Work],
    mut meanwhile: impl FnMut(usize) -> Result<(), String>,
) -> Result<Vec<WorkDone>, String> {
    let mut done = Vec::with_capacity(items.len());
    for (i, w) in items.iter().enumerate() {
        while ctx.outstanding() >= ctx.outstanding_limit() {
            done.push(ctx.wait(TIMEOUT).map_err(e("wait"))?);
        }
        ctx.post(w).map_err(e("post"))?;
        meanwhile(i)?;
    }
    while ctx.outstanding() > 0 {
        done.push(ctx.wait(TIMEOUT).map_err(e("wait"))?);
    }
    Ok(done)
}

/// Every completion of a stream succeeded.
pub fn all_ok(done: &[WorkDone], what: &str) -> Result<(), String> {
    for (i, d) in done.iter().enumerate() {
        d.result()
            .map_err(|err: Error| format!("{what}: item {i}: {err}"))?;
    }
    Ok(())
}
