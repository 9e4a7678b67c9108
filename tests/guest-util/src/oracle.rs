//! The stale-access oracle (`tests/kmod/mnic-oracle`, spec §8a) from the tests' side.
//!
//! Every context a test opens through [`crate::nic`] is armed with the library's
//! [`mnic::oracle::arm`] (what arming is and does is described there): the oracle module
//! watches the process's address space with a notifier of its own and reports each
//! invalidation to the device, which then flags any access through a translation taken before
//! it, and any leaf the driver left in the table. The device counts both in
//! `ORACLE_VIOLATIONS` (strict mode halts it), and `nic::no_stale` checks that counter next to
//! the device's own checker. What is here is the tests' part: loading the module from the
//! image, `MNIC_ORACLE=0`, and the module's fault injection (`stall`) and register reads
//! (`peek_counter`).
//!
//! `MNIC_ORACLE=0` in the environment turns arming off (the device-death boot: a report to a
//! dead device would be an MMIO request that QEMU cannot answer).

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, Write};

use mnic::Context;

pub use mnic::oracle::{Armed, NODE};

use crate::e;

/// Where the image puts the oracle module.
pub const MODULE: &str = "/lib/modules/mnic_oracle.ko";

/// Whether tests arm the oracle (the module is in the image and `MNIC_ORACLE` is not 0).
pub fn wanted() -> bool {
    std::env::var("MNIC_ORACLE").map_or(true, |v| v != "0") && fs::metadata(MODULE).is_ok()
}

/// Loads the oracle module unless its node exists.
pub fn ensure_module() -> Result<(), String> {
    if mnic::oracle::is_loaded() {
        return Ok(());
    }
    crate::module_cmd("insmod", MODULE)
}

/// BAR0 bus address of `/dev/mnicN` (the driver's debugfs `bar0` file).
pub fn bar0(minor: u32) -> Result<u64, String> {
    mnic::oracle::bar0(minor).map_err(|err| err.to_string())
}

/// Arms the oracle for `ctx`, which the calling process opened (loading the module first).
pub fn arm(ctx: &Context) -> Result<Armed, String> {
    ensure_module()?;
    mnic::oracle::arm(ctx).map_err(e("arm oracle"))
}

/// Stalls the next DMA access of `/dev/mnicN`'s engine for `ms` milliseconds (spec §8a
/// `DEBUG_STALL_MS`): a hung, not dead, device.
pub fn stall(minor: u32, ms: u32) -> Result<(), String> {
    ensure_module()?;
    let bar0 = bar0(minor)?;
    let mut f = OpenOptions::new()
        .write(true)
        .open(NODE)
        .map_err(e("open oracle"))?;
    f.write_all(format!("stall {bar0:#x} {ms}\n").as_bytes())
        .map_err(e("stall"))
}

/// Reads device counter `counter` of the function at `bar0` straight from its registers
/// (works after the driver declared the device dead or let it go).
pub fn peek_counter(bar0: u64, counter: u32) -> Result<u64, String> {
    ensure_module()?;
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(NODE)
        .map_err(e("open oracle"))?;
    let off = mnic_abi::reg::counter(counter);
    f.write_all(format!("peek {bar0:#x} {off:x}\n").as_bytes())
        .map_err(e("peek"))?;
    f.rewind().map_err(e("rewind"))?;
    let mut text = String::new();
    f.read_to_string(&mut text).map_err(e("read peek"))?;
    text.trim().parse().map_err(e("peek value"))
}
