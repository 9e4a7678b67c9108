//! Boots one guest through the `mnic-vm` runner and returns its console.

use anyhow::{Context, Result};
use std::process::Command;

/// Paths the harness needs; `make test` sets them.
#[derive(Debug, Clone)]
pub struct Artifacts {
    /// `mnic-vm` binary.
    pub vm: String,
    /// Guest kernel.
    pub kernel: String,
    /// Base initramfs.
    pub initrd: String,
    /// `mnic-device` binary.
    pub device_bin: String,
    /// QEMU wrapper.
    pub qemu: String,
}

impl Artifacts {
    /// Reads the `MNIC_*` environment set by `make test-guest`.
    pub fn from_env() -> Result<Self> {
        let get = |k: &str| {
            std::env::var(k)
                .with_context(|| format!("{k} is not set: run the guest tests with `make test`"))
        };
        Ok(Self {
            vm: get("MNIC_VM")?,
            kernel: get("MNIC_KERNEL")?,
            initrd: get("MNIC_INITRD")?,
            device_bin: get("MNIC_DEVICE_BIN")?,
            qemu: get("MNIC_QEMU")?,
        })
    }
}

/// What a boot produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Everything QEMU printed.
    pub console: String,
    /// Runner exit status (the guest job's status, 124 timeout, 125 no result).
    pub status: i32,
    /// The runner's own messages.
    pub stderr: String,
}

/// Boots with `vm_args`, runs `job`, returns the console.
pub fn boot(a: &Artifacts, vm_args: &[String], job: &str) -> Result<Outcome> {
    let out = Command::new(&a.vm)
        .arg("run")
        .args([
            "--kernel",
            &a.kernel,
            "--initrd",
            &a.initrd,
            "--device-bin",
            &a.device_bin,
            "--qemu",
            &a.qemu,
        ])
        .args(["--cmd", job])
        .args(vm_args)
        .arg("--stats")
        .stderr(std::process::Stdio::piped())
        .output()
        .with_context(|| format!("running {}", a.vm))?;
    Ok(Outcome {
        console: String::from_utf8_lossy(&out.stdout).into_owned(),
        status: out.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}
