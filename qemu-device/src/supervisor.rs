//! The device process is two processes: this supervisor owns the vfio-user socket QEMU
//! connects to, and the engine (the same binary, `mnic-device engine --fd N`) runs the
//! [`Server`](crate::server::Server) on one end of a socketpair. The supervisor relays
//! complete messages (at most [`MAX_MSG_SIZE`]) both ways, one at a time, and remembers
//! which requests await a reply (a few bytes each, as many as QEMU has outstanding). The
//! engine's death shows as the end of its socket (it holds the only other end).
//!
//! Why: when the server dies with a request in flight, QEMU 11.1's vfio-user client
//! aborts (on ECONNRESET it sets the same error twice: `error_setv: Assertion
//! '*errp == NULL'`), taking the whole VM down. Real hardware that dies falls off the
//! bus instead: reads return all ones, writes vanish, nothing completes. So when the
//! engine dies, the supervisor answers every request still in flight, and every later
//! one, as such a device ([`fell_off_the_bus`]), and keeps QEMU's socket open until QEMU
//! closes it. The engine is not restarted: the function stays dead.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::proto::*;
use crate::server::{
    dma_unmap_args, dma_unmap_reply, is_disconnect, recv_message, region_access, region_echo,
    reply, send_with_fds, Errno, Message,
};

/// Payload bytes kept of a request in flight: enough to answer it without the engine
/// (the DMA_UNMAP entry is the longest, 24 bytes).
const ARGS_KEPT: usize = 24;
/// How long the engine may take to exit after its socket closed (QEMU disconnected).
const ENGINE_GRACE: Duration = Duration::from_secs(1);

/// The reply of a device that fell off the bus to `hdr` (whose payload starts with
/// `args`): reads return all ones, writes and DMA/IRQ/reset requests succeed and do
/// nothing, anything else fails with `ENODEV`.
pub fn fell_off_the_bus(hdr: &Header, args: &[u8]) -> Result<Vec<u8>, Errno> {
    let mut r = Reader::new(args);
    match hdr.command {
        cmd::REGION_READ => {
            let (offset, region, count) = region_access(&mut r)?;
            let mut out = region_echo(offset, region, count);
            out.resize(out.len() + count as usize, 0xff);
            Ok(out)
        }
        cmd::REGION_WRITE => region_access(&mut r).map(|(o, reg, n)| region_echo(o, reg, n)),
        cmd::DMA_UNMAP => {
            dma_unmap_args(&mut r).map(|(f, iova, size)| dma_unmap_reply(f, iova, size))
        }
        cmd::DMA_MAP | cmd::DEVICE_SET_IRQS | cmd::DEVICE_RESET => Ok(Vec::new()),
        _ => Err(libc::ENODEV),
    }
}

/// A request forwarded to the engine that still awaits its reply.
struct InFlight {
    hdr: Header,
    /// The start of its payload (at most [`ARGS_KEPT`] bytes).
    args: Vec<u8>,
}

/// The engine process and the supervisor's end of its socket. Dropping it kills the
/// process (by its PID, SIGKILL) and reaps it.
struct Engine {
    child: Child,
    sock: UnixStream,
    in_flight: VecDeque<InFlight>,
}

impl Engine {
    /// Starts `cmd` with `--fd N`, N its end of a new socketpair.
    fn spawn(mut cmd: Command) -> Result<Self, String> {
        let (sock, theirs) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
        inheritable(theirs.as_raw_fd()).map_err(|e| format!("fcntl: {e}"))?;
        let child = cmd
            .arg("--fd")
            .arg(theirs.as_raw_fd().to_string())
            .spawn()
            .map_err(|e| format!("starting the engine: {e}"))?;
        tracing::info!(pid = child.id(), "engine started");
        // `theirs` closes here: the engine holds the only other end.
        Ok(Engine {
            child,
            sock,
            in_flight: VecDeque::new(),
        })
    }

    /// Closes its socket (its server then ends on its own), waits up to `grace` (less if
    /// SIGTERM arrives), then kills it.
    fn stop(mut self, grace: Duration, sigterm: &OwnedFd) -> Option<ExitStatus> {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            let tick = Some(Duration::from_millis(10));
            if poll([sigterm.as_raw_fd()], tick).map_or(true, |r| r[0]) {
                break;
            }
        }
        self.kill()
    }

    /// Kills it (SIGKILL) and reaps it.
    fn kill(mut self) -> Option<ExitStatus> {
        // Child::kill signals by PID only while the child is not reaped yet.
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Serves `socket` as the supervisor of the engine started by `engine` (a command line
/// to which `--fd N` is appended), writing the engine's PID to `engine_pid` if given.
/// Returns when QEMU disconnects or on SIGTERM, after the engine has ended.
pub fn serve(socket: &Path, engine: Command, engine_pid: Option<&Path>) -> Result<(), String> {
    // SIGTERM is blocked (read from a signalfd) only after the engine started: a blocked
    // signal stays blocked across exec.
    let engine = Engine::spawn(engine)?;
    let sigterm = sigterm_fd().map_err(|e| format!("signalfd: {e}"))?;
    if let Some(p) = engine_pid {
        std::fs::write(p, format!("{}\n", engine.child.id()))
            .map_err(|e| format!("{}: {e}", p.display()))?;
    }
    let _ = std::fs::remove_file(socket);
    let listener =
        UnixListener::bind(socket).map_err(|e| format!("bind {}: {e}", socket.display()))?;
    let r = match wait_for_client(listener, &engine, &sigterm) {
        Ok(Some(qemu)) => Relay {
            qemu,
            engine: Some(engine),
        }
        .run(&sigterm),
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_file(socket);
    r
}

/// Accepts QEMU's connection; `None` on SIGTERM.
fn wait_for_client(
    listener: UnixListener,
    engine: &Engine,
    sigterm: &OwnedFd,
) -> Result<Option<UnixStream>, String> {
    let fds = [
        listener.as_raw_fd(),
        engine.sock.as_raw_fd(),
        sigterm.as_raw_fd(),
    ];
    let ready = poll(fds, None).map_err(|e| format!("poll: {e}"))?;
    if ready[2] {
        tracing::info!("SIGTERM before a client connected");
        return Ok(None);
    }
    if ready[1] {
        // The engine never speaks first: this is its end (a failed start).
        return Err("the engine ended before a client connected".into());
    }
    let (stream, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    tracing::info!("client connected");
    Ok(Some(stream))
}

/// Why the relay stopped.
enum Stop {
    Disconnected,
    Terminated,
}

/// QEMU's connection and the engine, `None` once it died.
struct Relay {
    qemu: UnixStream,
    engine: Option<Engine>,
}

impl Relay {
    /// Relays until QEMU disconnects or SIGTERM; then ends the engine.
    fn run(mut self, sigterm: &OwnedFd) -> Result<(), String> {
        let r = match self.relay(sigterm) {
            Err(e) if is_disconnect(&e) => Ok(Stop::Disconnected),
            r => r,
        };
        let grace = match r {
            Ok(Stop::Disconnected) => ENGINE_GRACE,
            _ => Duration::ZERO,
        };
        if let Some(e) = self.engine.take() {
            let status = e
                .stop(grace, sigterm)
                .map_or("unknown".into(), |st| st.to_string());
            tracing::info!(%status, "engine stopped");
        }
        match r {
            Ok(Stop::Disconnected) => {
                tracing::info!("client disconnected");
                Ok(())
            }
            Ok(Stop::Terminated) => {
                tracing::info!("SIGTERM");
                Ok(())
            }
            Err(e) => Err(format!("protocol error: {e}")),
        }
    }

    fn relay(&mut self, sigterm: &OwnedFd) -> io::Result<Stop> {
        loop {
            let engine = self.engine.as_ref().map_or(-1, |e| e.sock.as_raw_fd());
            let ready = poll([self.qemu.as_raw_fd(), engine, sigterm.as_raw_fd()], None)?;
            if ready[2] {
                return Ok(Stop::Terminated);
            }
            if ready[1] {
                self.on_engine()?;
            }
            if ready[0] {
                match recv_message(self.qemu.as_raw_fd())? {
                    Some(msg) => self.on_request(msg)?,
                    None => return Ok(Stop::Disconnected),
                }
            }
        }
    }

    /// A message from QEMU: forwarded to the engine, or answered here.
    fn on_request(&mut self, msg: Message) -> io::Result<()> {
        let hdr = msg.hdr;
        let wants_reply = hdr.flags & FLAG_NO_REPLY == 0;
        let Some(payload) = msg.payload else {
            // Larger than MAX_MSG_SIZE (already drained): refused here, as the server does.
            return self.answer(wants_reply, &hdr, Err(libc::E2BIG));
        };
        if hdr.flags & FLAG_TYPE_MASK != FLAG_COMMAND {
            return Ok(()); // A stray reply: dropped, as the server does.
        }
        let Some(e) = self.engine.as_mut() else {
            return self.answer(wants_reply, &hdr, fell_off_the_bus(&hdr, &payload));
        };
        if wants_reply {
            let args = payload[..payload.len().min(ARGS_KEPT)].to_vec();
            e.in_flight.push_back(InFlight { hdr, args });
        }
        // No request uses more descriptors than the device advertises (max_msg_fds).
        let fds: Vec<RawFd> = msg
            .fds
            .iter()
            .take(MAX_MSG_FDS)
            .map(AsRawFd::as_raw_fd)
            .collect();
        match send_with_fds(e.sock.as_raw_fd(), &hdr.message(&payload), &fds) {
            Ok(()) => Ok(()),
            Err(err) => self.engine_died(&format!("sending to it failed: {err}")),
        }
    }

    /// The engine's socket is readable: a reply to forward, or its end.
    fn on_engine(&mut self) -> io::Result<()> {
        let Some(e) = self.engine.as_mut() else {
            return Ok(());
        };
        let (hdr, payload) = match recv_message(e.sock.as_raw_fd()) {
            Ok(Some(Message {
                hdr,
                payload: Some(p),
                ..
            })) if hdr.flags & FLAG_TYPE_MASK == FLAG_REPLY => (hdr, p),
            Ok(Some(_)) => return self.engine_died("it sent an unexpected message"),
            Ok(None) => return self.engine_died("its socket closed"),
            Err(err) => return self.engine_died(&format!("its socket failed: {err}")),
        };
        let key = (hdr.msg_id, hdr.command);
        match e
            .in_flight
            .iter()
            .position(|f| (f.hdr.msg_id, f.hdr.command) == key)
        {
            Some(i) => drop(e.in_flight.remove(i)),
            None => tracing::warn!(?hdr, "engine reply to no request in flight"),
        }
        self.qemu.write_all(&hdr.message(&payload))
    }

    /// The engine is gone: reap it, log it, and answer what it left unanswered.
    fn engine_died(&mut self, why: &str) -> io::Result<()> {
        let Some(mut e) = self.engine.take() else {
            return Ok(());
        };
        let in_flight = std::mem::take(&mut e.in_flight);
        let pid = e.child.id();
        let status = e.kill().map_or("unknown".into(), |st| st.to_string());
        tracing::error!(
            pid,
            %status,
            in_flight = in_flight.len(),
            "the engine died ({why}): the device fell off the bus (reads return all ones, \
             nothing completes)"
        );
        for f in in_flight {
            self.answer(true, &f.hdr, fell_off_the_bus(&f.hdr, &f.args))?;
        }
        Ok(())
    }

    fn answer(
        &mut self,
        wants_reply: bool,
        hdr: &Header,
        r: Result<Vec<u8>, Errno>,
    ) -> io::Result<()> {
        if !wants_reply {
            return Ok(());
        }
        self.qemu.write_all(&reply(hdr, r))
    }
}

/// Blocks SIGTERM and returns a signalfd that becomes readable when it is pending (the
/// supervisor is single-threaded).
fn sigterm_fd() -> io::Result<OwnedFd> {
    // SAFETY: `set` is plain data initialised by sigemptyset before use; the calls only
    // read it. signalfd returns a new descriptor that nothing else owns.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let err = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if err != 0 {
            return Err(io::Error::from_raw_os_error(err));
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Clears FD_CLOEXEC on `fd`, so that the engine inherits it.
fn inheritable(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, reading and changing only its flags.
    let r = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags < 0 {
            flags
        } else {
            libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC)
        }
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// poll(2) for input on `fds` (negative ones are ignored): which are ready (readable,
/// closed or failed). `None` waits forever.
fn poll<const N: usize>(fds: [RawFd; N], timeout: Option<Duration>) -> io::Result<[bool; N]> {
    let mut p = fds.map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    let ms = timeout.map_or(-1, |d| i32::try_from(d.as_millis()).unwrap_or(i32::MAX));
    loop {
        // SAFETY: `p` is a live array of N pollfd entries the kernel may write.
        let n = unsafe { libc::poll(p.as_mut_ptr(), N as libc::nfds_t, ms) };
        if n >= 0 {
            return Ok(p.map(|x| x.revents != 0));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
