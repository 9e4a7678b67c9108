//! Ownership of the processes a run starts. Every child is ended by its own PID (never
//! by name) when its guard drops, on every path out of the runner: success, error,
//! timeout, panic unwinding, or a SIGINT/SIGTERM the runner turns into an orderly exit.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// A started process that is ended when dropped.
pub struct Owned {
    name: String,
    child: Option<Child>,
}

impl Owned {
    /// Starts `cmd`; `name` is used in messages.
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Self> {
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({cmd:?})"))?;
        Ok(Self {
            name: name.to_string(),
            child: Some(child),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The child, for taking its pipes.
    pub fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("child is present until drop")
    }

    /// Returns the exit status if the process has ended.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        Ok(self.child_mut().try_wait()?)
    }

    /// Asks the process to stop (SIGTERM), waits up to `grace`, then kills it (SIGKILL).
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: kill(2) on the PID of our own un-reaped child: it cannot have been
            // reused by another process because we have not waited for it yet.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok()
    }

    /// Kills (SIGKILL) the child of this process whose PID is in `pid_file` (the engine
    /// of a `mnic-device serve --engine-pid`); returns that PID. A PID that is not this
    /// process's child (any more) is refused: its own parent ends it otherwise.
    pub fn kill_child(&self, pid_file: &Path) -> Result<u32> {
        let text = std::fs::read_to_string(pid_file)
            .with_context(|| format!("reading {}", pid_file.display()))?;
        let pid = text
            .trim()
            .parse::<i32>()
            .ok()
            .filter(|&p| p > 1)
            .with_context(|| format!("{}: not a PID: {text:?}", pid_file.display()))?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("process {pid}"))?;
        // Fields after the command name (which may hold spaces): state, ppid, ...
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid != Some(self.pid()) {
            bail!("process {pid} is not a child of {} ({ppid:?})", self.pid());
        }
        // SAFETY: kill(2) on a PID just checked to be our child's child; its parent has
        // not reaped it (it is still listed with that parent).
        if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
            bail!("kill {pid}: {}", std::io::Error::last_os_error());
        }
        Ok(pid as u32)
    }

    /// Name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(2));
        self.child = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_child_kills_only_a_child_of_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pid");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"sleep 60 & echo $! > "$0"; wait"#)
            .arg(&file);
        let mut sh = Owned::spawn("sh", &mut cmd).unwrap();
        let t = Instant::now();
        while std::fs::read_to_string(&file).map_or(true, |s| !s.ends_with('\n')) {
            assert!(t.elapsed() < Duration::from_secs(10), "no PID file");
            std::thread::sleep(Duration::from_millis(10));
        }
        // Not its child: refused.
        let other = dir.path().join("other");
        std::fs::write(&other, format!("{}\n", std::process::id())).unwrap();
        assert!(sh.kill_child(&other).is_err());
        std::fs::write(&other, "0\n").unwrap();
        assert!(sh.kill_child(&other).is_err());
        // Its child: killed; `wait` in the shell then returns and the shell exits.
        sh.kill_child(&file).unwrap();
        let t = Instant::now();
        while sh.try_wait().unwrap().is_none() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the child was not killed"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
