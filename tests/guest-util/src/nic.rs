//! The mnic device node and its contexts, for the guest tests.

use std::fs;
use std::process::Command;
use std::time::Duration;

use mnic::{Context, DmaBuffer, Pattern, QueueConfig, Traffic};
use mnic_abi as abi;

use crate::{check, e};

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
    let out = Command::new("insmod")
        .arg(MODULE)
        .output()
        .map_err(e("insmod"))?;
    check(out.status.success(), || {
        format!(
            "insmod {MODULE}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })?;
    check(fs::metadata(DEV).is_ok(), || {
        format!("{DEV} missing after insmod")
    })
}

pub fn open() -> Result<Context, String> {
    ensure_module()?;
    Context::open(DEV.as_ref()).map_err(e("open"))
}

/// A context with queues set up.
pub fn open_with_queues() -> Result<Context, String> {
    let ctx = open()?;
    ctx.setup_queues(QueueConfig::default())
        .map_err(e("setup_queues"))?;
    Ok(ctx)
}

pub fn stale(ctx: &Context) -> Result<u64, String> {
    Ok(ctx
        .dev_stats()
        .map_err(e("DEV_STATS"))?
        .get(abi::counter::STALE_ACCESSES))
}

pub fn no_stale(ctx: &Context) -> Result<(), String> {
    let n = stale(ctx)?;
    check(n == 0, || format!("device counted {n} stale accesses"))
}

/// Checks the device counter with a fresh context (for cases whose own context is gone).
pub fn no_stale_fresh() -> Result<(), String> {
    no_stale(&open()?)
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
