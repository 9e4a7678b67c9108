//! `mnic-proto selftest`: the prototyping driver end to end, as KTAP for the guest test
//! harness. The first case binds the NIC to `vfio-pci` and opens it; every later case
//! runs on that device, in order, and asserts what the device did (data compared byte for
//! byte, registers and counters read back, events and completions field by field).
//!
//! The cases live in `bringup.rs` (reset, rings, context, COPY, TRAFFIC), `faults.rs`
//! (device faults, RESUME, ABORT, INVALIDATE + SYNC) and `example.rs` (the worked example
//! of `docs/prototyping.md`); what they share is in `kit.rs`.

mod bringup;
mod example;
mod faults;
mod kit;

use crate::bind::PciFunction;
use crate::nic::Nic;
use kit::{check, e, CaseResult, Session};

type Case = (&'static str, fn(&mut Session) -> CaseResult);

/// Every case after `bind_vfio`, in the order they run.
const CASES: &[Case] = &[
    ("reset_and_enable", bringup::reset_and_enable),
    ("command_queue_sync", bringup::command_queue_sync),
    ("context_enable", bringup::context_enable),
    ("copy_through_own_table", bringup::copy_through_own_table),
    ("traffic_generator", bringup::traffic_generator),
    ("fault_resume", faults::fault_resume),
    ("fault_abort", faults::fault_abort),
    ("invalidate_sync_refaults", faults::invalidate_sync_refaults),
    ("scratch_register", example::scratch_register),
    ("device_clean", bringup::device_clean),
];

/// The names `selftest` accepts.
pub fn case_names() -> Vec<&'static str> {
    std::iter::once("bind_vfio")
        .chain(CASES.iter().map(|(n, _)| *n))
        .collect()
}

/// Binds and opens the NIC (`bdf`, or the first mnic), checks its identity.
fn bind_vfio(bdf: Option<&str>) -> Result<Nic, String> {
    let pci = match bdf {
        Some(b) => PciFunction::at(b),
        None => PciFunction::find_mnic(),
    }
    .map_err(e("find the NIC"))?;
    println!("# {} was bound to {:?}", pci.bdf, pci.driver());
    let group = pci.bind_vfio().map_err(e("bind to vfio-pci"))?;
    check(pci.driver().as_deref() == Some("vfio-pci"), || {
        format!("driver is {:?}", pci.driver())
    })?;
    let mut nic = Nic::open(pci).map_err(e("open through VFIO"))?;
    nic.start().map_err(e("reset and enable"))?;
    use mnic_abi::{caps, reg, NUM_CONTEXTS};
    let (c, n) = (nic.reg(reg::CAPS), nic.reg(reg::NUM_CONTEXTS));
    check(c == caps::ALL && n == NUM_CONTEXTS, || {
        format!(
            "CAPS {c:#x} NUM_CONTEXTS {n}, want {:#x} and {NUM_CONTEXTS}",
            caps::ALL
        )
    })?;
    println!(
        "# bound {} ({}), BAR0 {} bytes",
        nic.pci.bdf,
        group.display(),
        nic.regs.len()
    );
    Ok(nic)
}

/// Runs the cases named in `only` (every case if empty; `bind_vfio` always runs first),
/// prints KTAP, returns the process exit status (0: all passed, 1: a failure, 2: an
/// unknown case name).
pub fn run(bdf: Option<&str>, only: &[String]) -> i32 {
    if let Some(bad) = only.iter().find(|o| !case_names().contains(&o.as_str())) {
        eprintln!(
            "mnic-proto selftest: unknown case '{bad}' (cases: {})",
            case_names().join(" ")
        );
        return 2;
    }
    let chosen: Vec<&Case> = CASES
        .iter()
        .filter(|(n, _)| only.is_empty() || only.iter().any(|o| o == n))
        .collect();
    println!("KTAP version 1");
    println!("1..{}", chosen.len() + 1);
    let mut failed = 0;
    let t = std::time::Instant::now();
    let mut session = match bind_vfio(bdf) {
        Ok(nic) => {
            println!("# bind_vfio: {:.1} s", t.elapsed().as_secs_f64());
            println!("ok 1 bind_vfio");
            Some(Session { nic, ctx: None })
        }
        Err(why) => {
            failed += 1;
            println!("not ok 1 bind_vfio # {}", why.replace('\n', " "));
            None
        }
    };
    for (i, (name, case)) in chosen.iter().enumerate() {
        let n = i + 2;
        let t = std::time::Instant::now();
        let r = match &mut session {
            Some(s) => case(s),
            None => Err("no device (bind_vfio failed)".into()),
        };
        println!("# {name}: {:.1} s", t.elapsed().as_secs_f64());
        match r {
            Ok(()) => println!("ok {n} {name}"),
            Err(why) => {
                failed += 1;
                println!("not ok {n} {name} # {}", why.replace('\n', " "));
            }
        }
    }
    println!(
        "# mnic-proto selftest: {} passed, {failed} failed",
        chosen.len() + 1 - failed
    );
    i32::from(failed != 0)
}
