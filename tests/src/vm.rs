//! Boots one guest (or two, with `--peer-cmd`) through the `mnic-vm` runner and returns its
//! console, with the time each console line arrived (for suite and case durations).
//!
//! With two guests the runner prefixes every line with `[guest1] ` or `[guest2] `: guest 1
//! runs the boot's suites, so its lines, without the prefix, are the console the KTAP reader
//! sees; guest 2's lines are kept apart (its kernel log is checked too).

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

/// The runner's console prefix of guest 1's lines when a run has two guests.
pub const GUEST1_PREFIX: &str = "[guest1] ";
/// The runner's console prefix of guest 2's lines.
pub const GUEST2_PREFIX: &str = "[guest2] ";

/// Whether `mnic-vm run` arguments boot a second guest.
pub fn two_guests(vm_args: &[String]) -> bool {
    vm_args
        .iter()
        .any(|a| a == "--peer-cmd" || a.starts_with("--peer-cmd="))
}

/// What a boot produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Everything QEMU printed (guest 1's lines, unprefixed, with two guests).
    pub console: String,
    /// Guest 2's lines, unprefixed, when the boot has two guests.
    pub peer_console: Option<String>,
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

/// The runner's output lines with their arrival times, split by guest: with two guests,
/// guest 1's lines (and any line without a prefix) with their times, and guest 2's lines,
/// each without its prefix; with one, every line as it is.
pub fn split_guests(
    lines: Vec<String>,
    times: Vec<f64>,
    two: bool,
) -> (Vec<String>, Vec<f64>, Option<Vec<String>>) {
    if !two {
        return (lines, times, None);
    }
    let (mut own, mut own_times, mut peer) = (Vec::new(), Vec::new(), Vec::new());
    for (line, t) in lines.into_iter().zip(times) {
        if let Some(rest) = line.strip_prefix(GUEST2_PREFIX) {
            peer.push(rest.to_string());
        } else {
            own.push(
                line.strip_prefix(GUEST1_PREFIX)
                    .unwrap_or(&line)
                    .to_string(),
            );
            own_times.push(t);
        }
    }
    (own, own_times, Some(peer))
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
    let (lines, line_times, peer) = split_guests(lines, line_times, two_guests(vm_args));
    Ok(Outcome {
        console: lines.join("\n"),
        peer_console: peer.map(|p| p.join("\n")),
        status: status.code().unwrap_or(-1),
        stderr,
        line_times,
        seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_a_peer_cmd_makes_two_guests() {
        assert!(two_guests(&strings(&[
            "--devices",
            "1",
            "--peer-cmd",
            "x.sh"
        ])));
        assert!(two_guests(&strings(&["--peer-cmd=x.sh"])));
        assert!(!two_guests(&strings(&["--devices", "1", "--fabric"])));
        assert!(!two_guests(&strings(&["--peer-cmdx"])));
    }

    #[test]
    fn two_guests_are_split_and_unprefixed() {
        let lines = strings(&[
            "[guest1] # mnic-suite-begin s",
            "[guest2] [    1.0] mnic0: bound",
            "[guest1] ok 1 a",
            "[guest2] MNIC-EXIT=0",
            "[guest1] [host] mnic-device #0 counters:",
        ]);
        let (own, times, peer) = split_guests(lines, vec![0.0, 1.0, 2.0, 3.0, 4.0], true);
        assert_eq!(
            own,
            [
                "# mnic-suite-begin s",
                "ok 1 a",
                "[host] mnic-device #0 counters:"
            ]
        );
        assert_eq!(
            times,
            [0.0, 2.0, 4.0],
            "each line keeps its own arrival time"
        );
        assert_eq!(peer.unwrap(), ["[    1.0] mnic0: bound", "MNIC-EXIT=0"]);
    }

    #[test]
    fn one_guest_is_left_as_printed() {
        let lines = strings(&["[guest2] looks like a prefix", "ok 1 a"]);
        let (own, times, peer) = split_guests(lines.clone(), vec![0.0, 1.0], false);
        assert_eq!((own, times, peer), (lines, vec![0.0, 1.0], None));
    }
}
