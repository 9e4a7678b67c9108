//! The control socket: a line `stats` is answered with `name value` lines: the device
//! counters (spec §10), then the PUT/GET statistics (`rma_*`, docs/fabric.md 14.13).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::counters::Counters;
use crate::fabric::RmaStats;

/// Longest request line accepted.
const MAX_LINE: u64 = 256;

/// Binds `path` (replacing a stale socket) and answers requests on a thread.
pub fn spawn(
    path: &Path,
    counters: Arc<Counters>,
    rma: Arc<RmaStats>,
) -> io::Result<JoinHandle<()>> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::thread::Builder::new()
        .name("mnic-control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(s) => {
                        if let Err(e) = handle(s, &counters, &rma) {
                            tracing::warn!("control connection: {e}");
                        }
                    }
                    Err(e) => tracing::warn!("control accept: {e}"),
                }
            }
        })
}

fn handle(stream: UnixStream, counters: &Counters, rma: &RmaStats) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = Vec::new();
        let n = (&mut reader).take(MAX_LINE).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(());
        }
        let reply = match String::from_utf8_lossy(&line).trim() {
            "stats" => counters.render() + &rma.render(),
            "" => continue,
            other => format!("error: unknown request {other:?}\n"),
        };
        out.write_all(reply.as_bytes())?;
        if line.last() != Some(&b'\n') && n as u64 == MAX_LINE {
            return Ok(());
        }
    }
}

/// Asks the server at `path` for its counters.
pub fn query_stats(path: &Path) -> io::Result<String> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"stats\n")?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}
