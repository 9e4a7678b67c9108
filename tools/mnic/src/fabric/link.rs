//! The line link between the two ends of `mnic pingpong` / `mnic bw` when each end runs
//! in a process of its own, possibly in another guest (`--serve`/`--connect` with
//! `--link PATH`, e.g. the serial link `/dev/ttyS1` that `mnic-vm run --peer-cmd` gives
//! two guests). One message per line, plain text ([`Msg`], whose variants say what each
//! line means and who sends it); a region travels in the library's own text form
//! (`RemoteRegion`'s `Display`/`FromStr`). With `--op put` the server hands over its
//! window's region, with `--op send` its context's endpoint (tagged messages need no key);
//! what follows is `cross.rs`'s and `cross_send.rs`'s.
//!
//! A serial port is put in raw mode (no echo, no line editing, no CR/LF translation) when
//! opened. Lines that are not messages (anything not starting with `mnic-`: a console's
//! noise on a shared line) are skipped.
//!
//! A serial line loses what arrives before the other end has the port open (the guest's
//! 8250 driver clears the UART's FIFO when the port is opened, and what QEMU holds back
//! behind a full FIFO then arrives without its start). So the two ends first shake hands:
//! the client sends `hello` every second ([`Link::connect`]) until the server, which only
//! listens once its port is open ([`Link::accept`]), answers with its region or endpoint;
//! from then on both ports are open and nothing is lost. Late `hello`s are skipped.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use mnic::{Endpoint, RemoteRegion};

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
    /// `mnic-link hello`: the client is there (sent until the server answers with its
    /// region or endpoint).
    Hello,
    /// `mnic-region-v1 node=N ctx=C key=K va=V len=L` (`--op put`): the sender's window,
    /// for the other end's PUTs (and GETs); the server's answer to `hello`, and the
    /// ping-pong client's next line.
    Region(RemoteRegion),
    /// `mnic-link endpoint node=N ctx=C` (`--op send`): the sender's context, for the other
    /// end's SENDs; the server's answer to `hello`, and the client's next line.
    Endpoint(Endpoint),
    /// `mnic-link rounds size=S count=C first=F`: ping-pong, the client starts `count`
    /// rounds of `size`-byte messages, numbered from `first` (`--op send`: the server posts
    /// the receive of round `first` before it answers `ready`).
    Rounds { size: u64, count: u64, first: u64 },
    /// `mnic-link stream size=S count=C iters=I` (bw `--op send`): the client starts
    /// `iters` iterations of `count` `size`-byte messages each; the server posts its first
    /// receives before it answers `ready`, and acknowledges each iteration with a message.
    Stream { size: u64, count: u64, iters: u64 },
    /// `mnic-link ready`: the server is ready for what was just announced.
    Ready,
    /// `mnic-link done check=N`: the client is done; the server checks what it must (bw
    /// `--op put`: that the first `check` bytes of its window hold the stream's pattern;
    /// `--op send` checks every message as it arrives, and the client sends 0).
    Done { check: u64 },
    /// `mnic-link ok`: the server's verdict, all well.
    Ok,
    /// `mnic-link fail WHY`: the server's verdict, something failed and why (any time: a
    /// server that fails says so at once and stops; a client whose handshake got the
    /// wrong answer says so too).
    Fail(String),
}

impl Msg {
    /// The region this message carries, or why not (another `--op` at the other end).
    pub fn into_region(self) -> CmdResult<RemoteRegion> {
        match self {
            Msg::Region(r) => Ok(r),
            other => Err(mismatch("a region", &other).into()),
        }
    }

    /// The endpoint this message carries, or why not (another `--op` at the other end).
    pub fn into_endpoint(self) -> CmdResult<Endpoint> {
        match self {
            Msg::Endpoint(e) => Ok(e),
            other => Err(mismatch("an endpoint", &other).into()),
        }
    }
}

/// Why `got` is not `what` was expected: a region and an endpoint are the two `--op`s.
fn mismatch(what: &str, got: &Msg) -> String {
    let hint = match got {
        Msg::Region(_) => " (the other end runs `--op put`)",
        Msg::Endpoint(_) => " (the other end runs `--op send`)",
        _ => "",
    };
    format!("link: expected {what}, got `{got}`{hint}")
}

impl fmt::Display for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Msg::Region(r) => write!(f, "{r}"),
            Msg::Hello => write!(f, "{PREFIX} hello"),
            Msg::Endpoint(e) => write!(f, "{PREFIX} endpoint node={} ctx={}", e.node, e.ctx),
            Msg::Rounds { size, count, first } => {
                write!(f, "{PREFIX} rounds size={size} count={count} first={first}")
            }
            Msg::Stream { size, count, iters } => {
                write!(f, "{PREFIX} stream size={size} count={count} iters={iters}")
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
            "stream" => Msg::Stream {
                size: num("size")?,
                count: num("count")?,
                iters: num("iters")?,
            },
            "endpoint" => {
                let id = |name| u32::try_from(num(name)?).map_err(|_| bad());
                Msg::Endpoint(Endpoint::new(id("node")?, id("ctx")?).ok_or_else(bad)?)
            }
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
    /// `offer` (its region or endpoint).
    pub fn accept(&mut self, offer: &Msg, timeout: Duration) -> CmdResult {
        match self.next(timeout, true, &mut || Ok(()))? {
            Some(Msg::Hello) => self.send(offer),
            Some(other) => Err(format!("link: expected `hello`, got `{other}`").into()),
            None => Err(format!("link: no client within {timeout:?}").into()),
        }
    }

    /// The client's side of the handshake: says `hello` every second until the server
    /// answers, and returns what `take` makes of the answer (its region or endpoint). An
    /// answer `take` refuses is told to the server (`fail`), so that it stops too.
    pub fn connect<R>(
        &mut self,
        timeout: Duration,
        take: impl FnOnce(Msg) -> CmdResult<R>,
    ) -> CmdResult<R> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            self.send(&Msg::Hello)?;
            if let Some(answer) = self.next(HELLO_EVERY, false, &mut || Ok(()))? {
                return take(answer).or_else(|e| {
                    self.send(&Msg::Fail(format!("the client refused the handshake: {e}")))?;
                    Err(e)
                });
            }
        }
        Err(format!("link: no server within {timeout:?}").into())
    }

    /// The next message, which must be a region.
    pub fn recv_region(&mut self, timeout: Duration) -> CmdResult<RemoteRegion> {
        self.recv(timeout)?.into_region()
    }

    /// The next message, which must be an endpoint.
    pub fn recv_endpoint(&mut self, timeout: Duration) -> CmdResult<Endpoint> {
        self.recv(timeout)?.into_endpoint()
    }

    /// Sends `m` and expects `Ready` back.
    pub fn request(&mut self, m: &Msg, timeout: Duration) -> CmdResult {
        self.send(m)?;
        match self.recv(timeout)? {
            Msg::Ready => Ok(()),
            Msg::Fail(why) => Err(format!("the server failed: {why}").into()),
            other => Err(format!("link: expected `ready` after `{m}`, got `{other}`").into()),
        }
    }

    /// The client's end of a run: tells the server it is done, and returns its verdict.
    pub fn finish(&mut self, check: u64, timeout: Duration) -> CmdResult {
        self.send(&Msg::Done { check })?;
        self.verdict(timeout)
    }

    /// The server's verdict, the next message: `Ok(())` for `ok`, the server's reason as
    /// the error for `fail`.
    pub fn verdict(&mut self, timeout: Duration) -> CmdResult {
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
            Msg::Endpoint(Endpoint::new(7, 255).unwrap()),
            Msg::Stream {
                size: 1417,
                count: 185,
                iters: 4,
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
            "mnic-link stream size=1 count=2",
            "mnic-link endpoint node=1",
            "mnic-link endpoint node=65535 ctx=0",
            "mnic-link endpoint node=1 ctx=4096",
            "mnic-link endpoint node=4294967297 ctx=0",
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
            s.accept(&Msg::Region(region()), Duration::from_secs(10))
                .unwrap();
            // Hellos sent before the region arrived do not disturb what follows.
            s.recv(Duration::from_secs(10)).unwrap()
        });
        let mut c = Link::new(a);
        let got = c.connect(Duration::from_secs(10), Msg::into_region);
        assert_eq!(got.unwrap(), region());
        c.send(&Msg::Ok).unwrap();
        assert_eq!(server.join().unwrap(), Msg::Ok);
    }

    #[test]
    fn a_handshake_without_the_other_end_times_out() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut c = Link::new(a);
        assert!(c
            .connect(Duration::from_millis(300), Msg::into_region)
            .is_err());
    }

    #[test]
    fn the_line_forms_of_an_endpoint_and_a_stream() {
        let e = Endpoint::new(2, 3).unwrap();
        assert_eq!(
            Msg::Endpoint(e).to_string(),
            "mnic-link endpoint node=2 ctx=3"
        );
        assert_eq!(
            "mnic-link  endpoint ctx=3 node=2 ".parse::<Msg>().unwrap(),
            Msg::Endpoint(e),
            "fields in any order, spaces around"
        );
        assert_eq!(
            "mnic-link stream iters=2 size=64 count=9"
                .parse::<Msg>()
                .unwrap(),
            Msg::Stream {
                size: 64,
                count: 9,
                iters: 2
            }
        );
        assert_eq!(Msg::Endpoint(e).into_endpoint().unwrap(), e);
        assert!(Msg::Endpoint(e).into_region().is_err());
    }

    #[test]
    fn a_handshake_with_an_end_of_the_other_op_fails_at_both_ends() {
        let (a, b) = UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || {
            let mut s = Link::new(b);
            s.accept(&Msg::Region(region()), Duration::from_secs(10))
                .unwrap();
            s.recv_endpoint(Duration::from_secs(10))
                .unwrap_err()
                .to_string()
        });
        let mut c = Link::new(a);
        let e = c
            .connect(Duration::from_secs(10), Msg::into_endpoint)
            .unwrap_err();
        assert!(
            e.to_string().contains("the other end runs `--op put`"),
            "{e}"
        );
        let e = server.join().unwrap();
        assert!(e.contains("the client refused the handshake"), "{e}");
    }

    #[test]
    fn a_server_that_fails_instead_of_ready_says_why() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut s = Link::new(b);
        s.send(&Msg::Fail("message size 9 outside 1..=8".into()))
            .unwrap();
        let mut c = Link::new(a);
        let announce = Msg::Rounds {
            size: 9,
            count: 1,
            first: 1,
        };
        let e = c.request(&announce, Duration::from_secs(5)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the server failed: message size 9 outside 1..=8"
        );
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
