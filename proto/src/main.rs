//! `mnic-proto`: a user-space prototyping driver for the mnic device. It takes the NIC
//! from the kernel (binds it to `vfio-pci`), opens it with `vfio-ioctls`, and programs it
//! itself: reset, context table, command and event rings, translation tables of its own,
//! work and completion queues, device faults answered with RESUME or ABORT, INVALIDATE +
//! SYNC. New device features can be tried from here in minutes, without kernel code; see
//! `docs/prototyping.md`.
//!
//! Commands: `bind` (hand the NIC to vfio-pci), `release` (give it back to the kernel),
//! `info` (identity, status, counters), `selftest [CASE...]` (the end-to-end test, KTAP),
//! `cases`.

mod bind;
mod cmdq;
mod context;
mod dma;
mod error;
mod evq;
mod irq;
mod mmio;
mod nic;
mod selftest;
mod table;
mod vfio;

use clap::{Parser, Subcommand};

use bind::PciFunction;
use error::Result;
use nic::Nic;

#[derive(Parser)]
#[command(about = "User-space prototyping driver for the mnic device over VFIO")]
struct Cli {
    /// PCI address of the NIC (default: the first mnic function).
    #[arg(long, global = true)]
    bdf: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Unbind the NIC from its driver and bind it to vfio-pci; print its VFIO group file.
    Bind,
    /// Open the NIC through VFIO and print its registers and counters as found (a
    /// reset on the way out leaves it quiet).
    Info,
    /// Give the NIC back to the kernel: unbind it from vfio-pci and let its own driver
    /// (mnic.ko, if loaded) bind it again.
    Release,
    /// Run the end-to-end test (KTAP); with CASE names, only those (after bind_vfio).
    Selftest {
        /// Cases to run (default: all).
        cases: Vec<String>,
    },
    /// List the selftest's cases.
    Cases,
}

fn function(bdf: Option<&str>) -> Result<PciFunction> {
    match bdf {
        Some(b) => PciFunction::at(b),
        None => PciFunction::find_mnic(),
    }
}

fn info(bdf: Option<&str>) -> Result<()> {
    use mnic_abi::{counter, reg};
    let pci = function(bdf)?;
    pci.bind_vfio()?;
    let nic = Nic::open(pci)?;
    println!("{} (driver {:?})", nic.pci.bdf, nic.pci.driver());
    for (name, r) in [
        ("ID", reg::ID),
        ("VERSION", reg::VERSION),
        ("CAPS", reg::CAPS),
        ("NUM_CONTEXTS", reg::NUM_CONTEXTS),
        ("CONTROL", reg::CONTROL),
        ("STATUS", reg::STATUS),
        ("ERROR_CODE", reg::ERROR_CODE),
    ] {
        println!("{name:<14} {:#010x}", nic.reg(r));
    }
    let c = nic.counters();
    for (name, v) in counter::NAMES.iter().zip(c.0) {
        println!("{name:<22} {v}");
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let bdf = cli.bdf.as_deref();
    let result = match cli.command {
        Command::Bind => function(bdf).and_then(|f| {
            let group = f.bind_vfio()?;
            println!("{} bound to vfio-pci: {}", f.bdf, group.display());
            Ok(())
        }),
        Command::Info => info(bdf),
        Command::Release => function(bdf).and_then(|f| {
            let driver = f.release()?;
            println!("{} released, now bound to {driver:?}", f.bdf);
            Ok(())
        }),
        Command::Selftest { cases } => std::process::exit(selftest::run(bdf, &cases)),
        Command::Cases => {
            println!("{}", selftest::case_names().join("\n"));
            Ok(())
        }
    };
    if let Err(e) = result {
        eprintln!("mnic-proto: {e}");
        std::process::exit(1);
    }
}
