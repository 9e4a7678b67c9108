//! A minimal QMP client (QEMU's JSON monitor protocol, one JSON object per line): enough to
//! hot-add a device. Line-based and without a JSON parser on purpose: the replies needed here
//! are told apart by their top-level key (`"return"`, `"error"`, `"event"`), and a full QMP
//! crate would bring an async runtime for two commands.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// A connected, negotiated QMP session.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects to QEMU's `-qmp unix:PATH,server=on,wait=off` socket and leaves capability
    /// negotiation mode.
    pub fn connect(path: &Path) -> Result<Qmp> {
        let stream =
            UnixStream::connect(path).with_context(|| format!("QMP {}", path.display()))?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        let writer = stream.try_clone()?;
        let mut q = Qmp {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = q.line()?;
        if !greeting.contains("\"QMP\"") {
            bail!("not a QMP greeting: {greeting}");
        }
        q.execute(r#"{"execute":"qmp_capabilities"}"#)?;
        Ok(q)
    }

    fn line(&mut self) -> Result<String> {
        let mut s = String::new();
        if self.reader.read_line(&mut s)? == 0 {
            bail!("QMP connection closed");
        }
        Ok(s)
    }

    /// Sends one command and returns its `"return"` line; an `"error"` reply is an error.
    /// Asynchronous events in between are skipped.
    pub fn execute(&mut self, command: &str) -> Result<String> {
        writeln!(self.writer, "{command}")?;
        loop {
            let reply = self.line()?;
            if reply.contains("\"return\"") {
                return Ok(reply);
            }
            if reply.contains("\"error\"") {
                bail!("QMP {command}: {}", reply.trim());
            }
        }
    }
}

/// The `device_add` command of a vfio-user-pci device `id` served at `socket`, plugged into
/// the hot-plug root port `bus`.
pub fn device_add_vfio_user(id: &str, socket: &Path, bus: &str) -> String {
    format!(
        r#"{{"execute":"device_add","arguments":{{"driver":"vfio-user-pci","id":"{id}","bus":"{bus}","socket":{{"type":"unix","path":"{}"}}}}}}"#,
        socket.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_add_is_one_json_object() {
        let c = device_add_vfio_user("mnic1", Path::new("/tmp/r/mnic1.sock"), "hotplug0");
        assert_eq!(
            c,
            r#"{"execute":"device_add","arguments":{"driver":"vfio-user-pci","id":"mnic1","bus":"hotplug0","socket":{"type":"unix","path":"/tmp/r/mnic1.sock"}}}"#
        );
    }
}
