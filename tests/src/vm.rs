//! Boots one guest through the `mnic-vm` runner and returns its console, with the time
//! each console line arrived (for suite and case durations).

use anyhow::{Context, Result};
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Instant;

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
    /// Seconds from the start of the boot to the arrival of each console line
    /// (indexed as `console.lines()`).
    pub line_times: Vec<f64>,
    /// Seconds from the start of the boot to the runner's exit.
    pub seconds: f64,
}

/// Boots with `vm_args`, runs `job`, returns the console.
pub fn boot(a: &Artifacts, vm_args: &[String], job: &str) -> Result<Outcome> {
    let started = Instant::now();
    let mut child = Command::new(&a.vm)
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
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", a.vm))?;
    let mut err_pipe = child.stderr.take().context("runner stderr")?;
    let stderr_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    });
    let mut lines = Vec::new();
    let mut line_times = Vec::new();
    let mut reader = BufReader::new(child.stdout.take().context("runner stdout")?);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .context("reading the console")?;
        if n == 0 {
            break;
        }
        line_times.push(started.elapsed().as_secs_f64());
        let text = String::from_utf8_lossy(&buf);
        lines.push(
            text.trim_end_matches('\n')
                .trim_end_matches('\r')
                .to_string(),
        );
    }
    let status = child.wait().context("waiting for the runner")?;
    let seconds = started.elapsed().as_secs_f64();
    let stderr = stderr_reader.join().unwrap_or_default();
    Ok(Outcome {
        console: lines.join("\n"),
        status: status.code().unwrap_or(-1),
        stderr,
        line_times,
        seconds,
    })
}
