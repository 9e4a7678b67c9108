//! The line link between the two ends of `mnic pingpong` / `mnic bw` when each end runs
//! in a process of its own, possibly in another guest (`--serve`/`--connect` with
//! `--link PATH`, e.g. the serial link `/dev/ttyS1` that `mnic-vm run --peer-cmd` gives
//! two guests). One message per line, plain text ([`Msg`]); a region travels in the
//! library's own text form (`RemoteRegion`'s `Display`/`FromStr`).
//!
//! A serial port is put in raw mode (no echo, no line editing, no CR/LF translation) when
//! opened. Lines that are not messages (anything not starting with `mnic-`: a console's
//! noise on a shared line) are skipped.
//!
//! A serial line loses what arrives before the other end has the port open (the guest's
//! 8250 driver clears the UART's FIFO when the port is opened, and what QEMU holds back
//! behind a full FIFO then arrives without its start). So the two ends first shake hands:
//! the client sends `hello` every second ([`Link::connect`]) until the server, which only
//! listens once its port is open ([`Link::accept`]), answers with its region; from then on
//! both ports are open and nothing is lost. Late `hello`s are skipped.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use mnic::RemoteRegion;

use crate::error::CmdResult;

/// Prefix of every message but a region (which has its own, `mnic-region-v1`).
const PREFIX: &str = "mnic-link";
/// How often a waiting end calls its idle hook.
const TICK: Duration = Duration::from_millis(50);
/// How often the client says `hello` until the server answers.
const HELLO_EVERY: Duration = Duration::from_secs(1);
/// Longest line accepted: a region line is well under 100 bytes.
const MAX_LINE: usize = 512;

/// One message between the two ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// The client is there (sent until the server answers with its region).
    Hello,
    /// The sender's window, for the other end's PUTs (and GETs).
    Region(RemoteRegion),
    /// Ping-pong: the client starts `count` rounds of `size`-byte messages, numbered from
    /// `first`.
    Rounds { size: u64, count: u64, first: u64 },
    /// The server is ready for what was just announced.
    Ready,
    /// The client is done; the server checks what it must (bw: that the first `check`
    /// bytes of its window hold the stream's pattern).
    Done { check: u64 },
    /// The server's verdict: all well.
    Ok,
    /// The server's verdict: something failed, and why.
    Fail(String),
}

impl fmt::Display for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Msg::Region(r) => write!(f, "{r}"),
            Msg::Hello => write!(f, "{PREFIX} hello"),
            Msg::Rounds { size, count, first } => {
                write!(f, "{PREFIX} rounds size={size} count={count} first={first}")
            }
            Msg::Ready => write!(f, "{PREFIX} ready"),
            Msg::Done { check } => write!(f, "{PREFIX} done check={check}"),
            Msg::Ok => write!(f, "{PREFIX} ok"),
            // One line: a reason with a line break would end the message early.
            Msg::Fail(why) => write!(f, "{PREFIX} fail {}", why.replace(['\n', '\r'], " ")),
        }
    }
}

/// The value of `name=` in `words`, as a number.
fn field(words: &[&str], name: &str) -> Option<u64> {
    words
        .iter()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))?
        .parse()
        .ok()
}

impl FromStr for Msg {
    type Err = String;

    fn from_str(line: &str) -> Result<Self, String> {
        let line = line.trim();
        if let Ok(r) = line.parse::<RemoteRegion>() {
            return Ok(Msg::Region(r));
        }
        let bad = || format!("not a link message: {line:?}");
        let rest = line.strip_prefix(PREFIX).ok_or_else(bad)?.trim_start();
        let (verb, args) = rest.split_once(' ').unwrap_or((rest, ""));
        let words: Vec<&str> = args.split_whitespace().collect();
        let num = |name| field(&words, name).ok_or_else(bad);
        Ok(match verb {
            "rounds" => Msg::Rounds {
                size: num("size")?,
                count: num("count")?,
                first: num("first")?,
            },
            "hello" => Msg::Hello,
            "ready" => Msg::Ready,
            "done" => Msg::Done {
                check: num("check")?,
            },
            "ok" => Msg::Ok,
            "fail" => Msg::Fail(args.trim().to_string()),
            _ => return Err(bad()),
        })
    }
}

/// One end of the link: anything to read and write lines on that has a file descriptor
/// to wait on.
pub struct Link<T> {
    io: T,
    /// Bytes read past the last complete line.
    pending: Vec<u8>,
}

impl Link<File> {
    /// Opens `path` for reading and writing; a terminal (serial port) is made raw.
    pub fn open(path: &Path) -> CmdResult<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| format!("opening the link {}: {e}", path.display()))?;
        make_raw(&file).map_err(|e| format!("link {}: raw mode: {e}", path.display()))?;
        Ok(Link::new(file))
    }
}

/// Raw mode for a terminal; nothing for anything else.
fn make_raw(file: &File) -> std::io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: isatty on a descriptor that `file` owns and keeps open.
    if unsafe { libc::isatty(fd) } != 1 {
        return Ok(());
    }
    // SAFETY: termios is plain old data, filled in by tcgetattr before it is read.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: tcgetattr/cfmakeraw/tcsetattr on an open terminal descriptor and a termios
    // that lives across the calls.
    unsafe {
        if libc::tcgetattr(fd, &mut t) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        libc::cfmakeraw(&mut t);
        if libc::tcsetattr(fd, libc::TCSANOW, &t) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether `fd` has something to read within `timeout`.
fn readable(fd: i32, timeout: Duration) -> std::io::Result<bool> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: poll on one pollfd that lives across the call.
    match unsafe { libc::poll(&mut p, 1, ms) } {
        n if n < 0 => {
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::Interrupted => Ok(false),
                _ => Err(e),
            }
        }
        n => Ok(n > 0),
    }
}

impl<T: Read + Write + AsRawFd> Link<T> {
    pub fn new(io: T) -> Self {
        Self {
            io,
            pending: Vec::new(),
        }
    }

    /// Sends one message.
    pub fn send(&mut self, m: &Msg) -> CmdResult {
        let line = format!("{m}\n");
        self.io.write_all(line.as_bytes())?;
        self.io.flush()?;
        Ok(())
    }

    /// The next message, or `None` once `timeout` has passed; `idle` runs every `TICK`
    /// while nothing arrives (and may fail the wait). Lines that are not messages are
    /// skipped, and so are `hello`s unless `hello` is set.
    fn next(
        &mut self,
        timeout: Duration,
        hello: bool,
        idle: &mut dyn FnMut() -> CmdResult,
    ) -> CmdResult<Option<Msg>> {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                let line = line.trim();
                if !line.starts_with("mnic-") {
                    continue;
                }
                match line.parse()? {
                    Msg::Hello if !hello => {}
                    m => return Ok(Some(m)),
                }
            }
            if self.pending.len() > MAX_LINE {
                return Err(format!("link: a line longer than {MAX_LINE} bytes").into());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            if !readable(self.io.as_raw_fd(), left.min(TICK))? {
                idle()?;
                continue;
            }
            let mut buf = [0u8; 256];
            match self.io.read(&mut buf) {
                Ok(0) => return Err("link: closed by the other end".into()),
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The next message, waiting at most `timeout`; `idle` runs every `TICK` while nothing
    /// arrives (and may fail the wait).
    pub fn recv_with(
        &mut self,
        timeout: Duration,
        mut idle: impl FnMut() -> CmdResult,
    ) -> CmdResult<Msg> {
        self.next(timeout, false, &mut idle)?
            .ok_or_else(|| format!("link: no message within {timeout:?}").into())
    }

    /// The next message, waiting at most `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> CmdResult<Msg> {
        self.recv_with(timeout, || Ok(()))
    }

    /// The server's side of the handshake: waits for the client's `hello`, answers with
    /// `region`.
    pub fn accept(&mut self, region: &RemoteRegion, timeout: Duration) -> CmdResult {
        match self.next(timeout, true, &mut || Ok(()))? {
            Some(Msg::Hello) => self.send(&Msg::Region(*region)),
            Some(other) => Err(format!("link: expected `hello`, got `{other}`").into()),
            None => Err(format!("link: no client within {timeout:?}").into()),
        }
    }

    /// The client's side of the handshake: says `hello` every second until the server's
    /// region arrives, and returns it.
    pub fn connect(&mut self, timeout: Duration) -> CmdResult<RemoteRegion> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            self.send(&Msg::Hello)?;
            match self.next(HELLO_EVERY, false, &mut || Ok(()))? {
                Some(Msg::Region(r)) => return Ok(r),
                Some(other) => return Err(format!("link: expected a region, got `{other}`").into()),
                None => {}
            }
        }
        Err(format!("link: no server within {timeout:?}").into())
    }

    /// The next message, which must be a region.
    pub fn recv_region(&mut self, timeout: Duration) -> CmdResult<RemoteRegion> {
        match self.recv(timeout)? {
            Msg::Region(r) => Ok(r),
            other => Err(format!("link: expected a region, got `{other}`").into()),
        }
    }

    /// Sends `m` and expects `Ready` back.
    pub fn request(&mut self, m: &Msg, timeout: Duration) -> CmdResult {
        self.send(m)?;
        match self.recv(timeout)? {
            Msg::Ready => Ok(()),
            other => Err(format!("link: expected `ready` after `{m}`, got `{other}`").into()),
        }
    }

    /// The client's end of a run: tells the server it is done, and returns its verdict.
    pub fn finish(&mut self, check: u64, timeout: Duration) -> CmdResult {
        self.send(&Msg::Done { check })?;
        match self.recv(timeout)? {
            Msg::Ok => Ok(()),
            Msg::Fail(why) => Err(format!("the server failed: {why}").into()),
            other => Err(format!("link: expected the server's verdict, got `{other}`").into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mnic::{Endpoint, RemoteKey};
    use std::os::unix::net::UnixStream;

    fn region() -> RemoteRegion {
        RemoteRegion {
            endpoint: Endpoint::new(2, 3).unwrap(),
            key: RemoteKey::new(0x1234).unwrap(),
            va: 0x7f00_0000_1000,
            len: 65536,
        }
    }

    #[test]
    fn messages_round_trip_as_one_line() {
        for m in [
            Msg::Region(region()),
            Msg::Hello,
            Msg::Rounds {
                size: 4096,
                count: 20,
                first: 7,
            },
            Msg::Ready,
            Msg::Done { check: 1 << 20 },
            Msg::Ok,
            Msg::Fail("window differs at 4096".into()),
        ] {
            let line = m.to_string();
            assert!(!line.contains('\n'));
            assert_eq!(line.parse::<Msg>().unwrap(), m, "{line}");
        }
        assert_eq!(
            Msg::Fail("a\nb".into()).to_string(),
            "mnic-link fail a b",
            "a reason stays one line"
        );
        for bad in [
            "hello",
            "mnic-link",
            "mnic-link rounds size=1 count=2",
            "mnic-link done check=x",
            "mnic-link what",
            "mnic-region-v1 node=1",
        ] {
            assert!(bad.parse::<Msg>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn noise_is_skipped_and_messages_split_across_reads_arrive() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut link = Link::new(a);
        let line = Msg::Region(region()).to_string();
        let (head, tail) = line.split_at(10);
        let tail = tail.to_string();
        b.write_all(format!("boot noise\r\n{head}").as_bytes())
            .unwrap();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(120));
            b.write_all(format!("{tail}\r\nmnic-link ok\n").as_bytes())
                .unwrap();
            b
        });
        let mut idles = 0;
        let got = link
            .recv_with(Duration::from_secs(5), || {
                idles += 1;
                Ok(())
            })
            .unwrap();
        assert_eq!(got, Msg::Region(region()));
        assert!(idles >= 1, "the idle hook ran while waiting");
        assert_eq!(link.recv(Duration::from_secs(5)).unwrap(), Msg::Ok);
        drop(writer.join().unwrap());
        assert!(link.recv(Duration::from_secs(5)).is_err(), "closed link");
    }

    #[test]
    fn waits_end_with_the_timeout_or_the_idle_hook() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut link = Link::new(a);
        let t = Instant::now();
        assert!(link.recv(Duration::from_millis(150)).is_err());
        assert!(t.elapsed() >= Duration::from_millis(150));
        let failed = link.recv_with(Duration::from_secs(5), || Err("stop".into()));
        assert_eq!(failed.unwrap_err().to_string(), "stop");
    }

    #[test]
    fn the_handshake_survives_a_lost_start_and_late_hellos() {
        let (a, b) = UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || {
            let mut s = Link::new(b);
            // A serial line that was not open yet: the first hello arrives without its start.
            let mut first = [0u8; 5];
            let mut got = 0;
            while got < first.len() {
                got += s.io.read(&mut first[got..]).unwrap();
            }
            s.accept(&region(), Duration::from_secs(10)).unwrap();
            // Hellos sent before the region arrived do not disturb what follows.
            s.recv(Duration::from_secs(10)).unwrap()
        });
        let mut c = Link::new(a);
        assert_eq!(c.connect(Duration::from_secs(10)).unwrap(), region());
        c.send(&Msg::Ok).unwrap();
        assert_eq!(server.join().unwrap(), Msg::Ok);
    }

    #[test]
    fn a_handshake_without_the_other_end_times_out() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut c = Link::new(a);
        assert!(c.connect(Duration::from_millis(300)).is_err());
    }

    #[test]
    fn the_client_gets_the_servers_verdict() {
        let (a, b) = UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || {
            let mut s = Link::new(b);
            let Msg::Done { check } = s.recv(Duration::from_secs(5)).unwrap() else {
                panic!("no done");
            };
            s.send(&Msg::Fail(format!("checked {check}"))).unwrap();
        });
        let mut c = Link::new(a);
        let e = c.finish(42, Duration::from_secs(5)).unwrap_err();
        assert_eq!(e.to_string(), "the server failed: checked 42");
        server.join().unwrap();
    }
}
