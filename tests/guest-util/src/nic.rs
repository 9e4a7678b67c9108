//! The mnic device node and its contexts, for the guest tests.

use std::fs;
use std::time::Duration;

use mnic::{Access, Context, DmaBuffer, Pattern, QueueConfig, Registration, Traffic};
use mnic_abi as abi;

use crate::{check, e, oracle};

/// The first NIC's device node.
pub const DEV: &str = "/dev/mnic0";
/// Where the image puts the driver.
pub const MODULE: &str = "/lib/modules/mnic.ko";
/// How long a test waits for one work item.
pub const TIMEOUT: Option<Duration> = Some(Duration::from_secs(20));

/// Loads the driver unless the device node exists already.
pub fn ensure_module() -> Result<(), String> {
    if fs::metadata(DEV).is_ok() {
        return Ok(());
    }
    crate::module_cmd("insmod", MODULE)?;
    check(fs::metadata(DEV).is_ok(), || {
        format!("{DEV} missing after insmod")
    })
}

/// A context opened by a test, watched by the stale-access oracle when it is available
/// ([`crate::oracle`]). Derefs to the library's [`Context`]. The oracle is disarmed before the
/// context closes (fields drop in declaration order): work still running on the context when
/// the test lets go of it must not be judged against the invalidations of its teardown.
pub struct Nic {
    _oracle: Option<oracle::Armed>,
    ctx: Context,
}

impl std::ops::Deref for Nic {
    type Target = Context;
    fn deref(&self) -> &Context {
        &self.ctx
    }
}

/// Opens a context of the NIC at `path` (armed, see [`Nic`]).
pub fn open_path(path: &str) -> Result<Nic, String> {
    ensure_module()?;
    let ctx = Context::open(path.as_ref()).map_err(e("open"))?;
    let oracle = if oracle::wanted() {
        Some(oracle::arm(&ctx)?)
    } else {
        None
    };
    Ok(Nic {
        _oracle: oracle,
        ctx,
    })
}

/// Opens a context of the first NIC (armed, see [`Nic`]).
pub fn open() -> Result<Nic, String> {
    open_path(DEV)
}

/// A context with queues set up.
pub fn open_with_queues() -> Result<Nic, String> {
    let ctx = open()?;
    ctx.setup_queues(queue_config())
        .map_err(e("setup_queues"))?;
    Ok(ctx)
}

/// The environment variable that runs a test program on the doorbell path without
/// shadow pages: `MNIC_TEST_DOORBELL=trapped`.
pub const DOORBELL_ENV: &str = "MNIC_TEST_DOORBELL";

/// The queue configuration the tests use: the library's default (shadow doorbells on a
/// device that has them), or, with `MNIC_TEST_DOORBELL=trapped`, the path without them:
/// every work-queue post a trapped doorbell write (`DoorbellMode::Mapped`), and the
/// driver's `trapped_doorbells` knob set on every NIC, so the command queue is rung on
/// every post and the device does not poll. The same tests then check the invariant on
/// both paths.
pub fn queue_config() -> QueueConfig {
    static TRAPPED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let trapped = *TRAPPED.get_or_init(|| {
        let trapped = std::env::var(DOORBELL_ENV).is_ok_and(|v| v == "trapped");
        if trapped {
            force_trapped_doorbells();
        }
        trapped
    });
    if trapped {
        QueueConfig {
            doorbell: mnic::DoorbellMode::Mapped,
            ..QueueConfig::default()
        }
    } else {
        QueueConfig::default()
    }
}

/// Sets debugfs `trapped_doorbells` of every NIC; a knob that cannot be written ends the
/// program, since the run would not test what it says.
fn force_trapped_doorbells() {
    let dirs = fs::read_dir("/sys/kernel/debug")
        .into_iter()
        .flatten()
        .flatten();
    let mut set = 0;
    for d in dirs.filter(|d| d.file_name().to_string_lossy().starts_with("mnic")) {
        let knob = d.path().join("trapped_doorbells");
        if let Err(err) = fs::write(&knob, "1") {
            eprintln!(
                "{DOORBELL_ENV}=trapped: cannot write {}: {err}",
                knob.display()
            );
            std::process::exit(2);
        }
        set += 1;
    }
    if set == 0 {
        eprintln!("{DOORBELL_ENV}=trapped: no /sys/kernel/debug/mnic*/trapped_doorbells");
        std::process::exit(2);
    }
}

/// The context's driver counters (`MNIC_IOC_CTX_STATS`).
pub fn stats(ctx: &Context) -> Result<abi::MnicCtxStats, String> {
    ctx.ctx_stats().map_err(e("CTX_STATS"))
}

/// Fabric statistic `i` (an `abi::fabric_counter` index, e.g. `ERRORS_SENT`) of the device
/// under `ctx`: its `rma_<name> <value>` line in the driver's debugfs `fabric` file, which
/// the driver reads from the device's `FABRIC_COUNTER` registers (spec §10). Root only.
pub fn fabric_stat(ctx: &Context, i: u32) -> Result<u64, String> {
    let name = abi::fabric_counter::NAMES
        .get(i as usize)
        .ok_or_else(|| format!("no fabric statistic {i}"))?;
    let path = format!("/sys/kernel/debug/mnic{}/fabric", ctx.info().minor);
    let text = fs::read_to_string(&path).map_err(|err| format!("{path}: {err}"))?;
    let key = format!("{}{name}", abi::fabric_counter::PREFIX);
    text.lines()
        .find_map(|l| l.strip_prefix(&key)?.strip_prefix(' ')?.parse().ok())
        .ok_or_else(|| format!("{path}: no {key} line in {text:?}"))
}

/// Registers `[va, va+len)` (which the caller maps and unmaps itself; the device only ever
/// touches it through work items the case posts, and data is read back with volatile copies).
pub fn reg_raw(
    ctx: &Context,
    va: u64,
    len: usize,
    access: Access,
) -> Result<Registration<'_>, String> {
    // SAFETY: the test programs access registered raw mappings only through `Map`'s volatile
    // copies or while no work is in flight, and drop registrations before reusing addresses
    // for Rust objects (mappings are private to each case and never handed to the allocator).
    unsafe { ctx.register_raw(va, len as u64, access) }.map_err(e("register_raw"))
}

/// Stale accesses the device found: by its own checker plus those the oracle saw.
pub fn stale(ctx: &Context) -> Result<u64, String> {
    let c = ctx.dev_stats().map_err(e("DEV_STATS"))?;
    Ok(c.get(abi::counter::STALE_ACCESSES) + c.get(abi::counter::ORACLE_VIOLATIONS))
}

/// Neither the device's checker nor the oracle saw a stale access.
pub fn no_stale(ctx: &Context) -> Result<(), String> {
    let c = ctx.dev_stats().map_err(e("DEV_STATS"))?;
    let (own, oracle) = (
        c.get(abi::counter::STALE_ACCESSES),
        c.get(abi::counter::ORACLE_VIOLATIONS),
    );
    check(own == 0 && oracle == 0, || {
        format!("device counted {own} stale accesses, the oracle {oracle} violations")
    })
}

/// Checks the device counter with a fresh context (for cases whose own context is gone).
pub fn no_stale_fresh() -> Result<(), String> {
    let ctx = open()?;
    no_stale(&ctx)
}

/// Keeps the device busy on `buf` for a long while: four traffic items of 2^20 4 KiB
/// operations each with `pattern` (for cases that need DMA in flight when something happens).
pub fn post_long_traffic(ctx: &Context, buf: &DmaBuffer, pattern: Pattern) -> Result<(), String> {
    for i in 0..4 {
        let w = Traffic::over(buf)
            .op_size(4096)
            .ops(1 << 20)
            .pattern(pattern)
            .seed(i)
            .build()
            .map_err(e("traffic"))?;
        ctx.post(&w).map_err(e("post"))?;
    }
    Ok(())
}
