//! The worked example of `docs/prototyping.md`: the `SCRATCH` register (spec §3), added
//! to the device model and exercised from user space with no kernel code. A device
//! without it reads the register as all ones and counts every access in `BAD_MMIO`, so
//! this case fails there.

use mnic_abi::{counter, reg};

use super::kit::{check, e, CaseResult, Session};

/// `SCRATCH` keeps every value written (walking ones, all ones, zero) and a reset
/// clears it; no access is counted as bad.
pub fn scratch_register(s: &mut Session) -> CaseResult {
    let nic = &mut s.nic;
    let before = nic.counters();
    let values = (0..32).map(|b| 1u32 << b).chain([u32::MAX, 0x4d4e_4943, 0]);
    for v in values {
        nic.set_reg(reg::SCRATCH, v);
        let got = nic.reg(reg::SCRATCH);
        check(got == v, || {
            format!("SCRATCH reads {got:#x} after writing {v:#x}")
        })?;
    }
    let bad = nic.counters().since(&before, counter::BAD_MMIO);
    check(bad == 0, || {
        format!("BAD_MMIO +{bad}: the device does not know SCRATCH")
    })?;
    nic.set_reg(reg::SCRATCH, 0x1234_5678);
    // The reset drops every context: the cases after this one set theirs up again.
    s.ctx = None;
    nic.reset().map_err(e("reset"))?;
    let got = nic.reg(reg::SCRATCH);
    check(got == 0, || {
        format!("SCRATCH reads {got:#x} after reset, want 0")
    })?;
    nic.enable().map_err(e("enable again"))
}
