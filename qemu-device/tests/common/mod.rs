//! What the integration tests share: the real `mnic-device serve` process in a temporary
//! directory, and a vfio-user client over its socket (the test plays QEMU).
#![allow(dead_code)] // each test crate uses a part of it

pub mod guest;

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use mnic_abi::BAR_REGS;
use mnic_device::proto::{self, cmd, Header, FLAG_ERROR, FLAG_REPLY, FLAG_TYPE_MASK};
use mnic_device::server::{dma_unmap_reply, recv_message, region_echo, send_with_fds};

/// How long a reply or a process may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The server process and its directory: ended (SIGTERM, then SIGKILL) and removed on
/// every path out of a test, panics included.
pub struct Served {
    pub child: Child,
    pub dir: PathBuf,
}

impl Served {
    /// `Err(status)` once the server has exited.
    pub fn alive(&mut self) -> Result<(), ExitStatus> {
        match self.child.try_wait().unwrap() {
            Some(st) => Err(st),
            None => Ok(()),
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal(self.child.id(), libc::SIGTERM);
            let t = Instant::now();
            while t.elapsed() < TIMEOUT {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends `sig` to `pid`; false if there is no such process.
pub fn signal(pid: u32, sig: libc::c_int) -> bool {
    // SAFETY: kill(2) has no memory effects; the PIDs are of processes the test started.
    unsafe { libc::kill(pid as libc::pid_t, sig) == 0 }
}

/// A fresh temporary directory for the test `name`.
pub fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mnic-dev-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Starts `mnic-device serve` in `dir` with `args` and connects; returns the process,
/// the client and the control socket path.
pub fn start(dir: &Path, args: &[&str]) -> (Served, Client, PathBuf) {
    start_with(dir, args, Stdio::inherit())
}

/// [`start`] with the server's stderr sent to `stderr`.
pub fn start_with(dir: &Path, args: &[&str], stderr: Stdio) -> (Served, Client, PathBuf) {
    let sock = dir.join("dev.sock");
    let ctl = dir.join("dev.ctl");
    let child = Command::new(env!("CARGO_BIN_EXE_mnic-device"))
        .arg("serve")
        .arg("--socket")
        .arg(&sock)
        .arg("--control")
        .arg(&ctl)
        .args(args)
        .stderr(stderr)
        .spawn()
        .unwrap();
    let served = Served {
        child,
        dir: dir.to_path_buf(),
    };
    let t = Instant::now();
    let s = loop {
        if let Ok(s) = UnixStream::connect(&sock) {
            break s;
        }
        assert!(t.elapsed() < TIMEOUT, "server did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    (served, Client { s, id: 0 }, ctl)
}

/// Waits until `f` holds (at most [`TIMEOUT`]).
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < TIMEOUT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `mnic-device stats` on the control socket `ctl`.
pub fn stats(ctl: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mnic-device"))
        .arg("stats")
        .arg("--control")
        .arg(ctl)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Counter `name` in the text of [`stats`].
pub fn stat(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// Little-endian bytes of `v`.
pub fn u32s(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The `i`th little-endian u32 of `b`.
pub fn le32(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(b[4 * i..4 * i + 4].try_into().unwrap())
}

/// A REGION_READ/WRITE request: offset, region, count (and the data of a write).
pub fn region_req(region: u32, offset: u64, count: u32, data: &[u8]) -> Vec<u8> {
    // The reply's echo is the request's start.
    let mut req = region_echo(offset, region, count);
    req.extend_from_slice(data);
    req
}

/// A DMA_MAP request (read and write) of `size` bytes at `iova`, at `offset` in the fd
/// sent with it if any.
pub fn dma_map_req(iova: u64, size: u64, offset: u64) -> Vec<u8> {
    let mut m = u32s(&[32, proto::DMA_MAP_FLAG_READ | proto::DMA_MAP_FLAG_WRITE]);
    for x in [offset, iova, size] {
        m.extend_from_slice(&x.to_le_bytes());
    }
    m
}

/// A DMA_UNMAP request with `flags` (`DMA_UNMAP_FLAG_*`).
pub fn unmap_req(flags: u32, iova: u64, size: u64) -> Vec<u8> {
    // The reply echoes the request's table entry.
    dma_unmap_reply(flags, iova, size)
}

/// A DEVICE_SET_IRQS request giving MSI-X vectors `start..start + count` the eventfds
/// sent with it.
pub fn msix_irqs_req(start: u32, count: u32) -> Vec<u8> {
    u32s(&[
        20,
        proto::IRQ_SET_DATA_EVENTFD | proto::IRQ_SET_ACTION_TRIGGER,
        proto::PCI_MSIX_IRQ_INDEX,
        start,
        count,
    ])
}

/// A vfio-user client: the test plays QEMU.
pub struct Client {
    pub s: UnixStream,
    id: u16,
}

impl Client {
    /// Sends a request with `fds`; returns its message id.
    pub fn try_send_fds(
        &mut self,
        command: u16,
        flags: u32,
        payload: &[u8],
        fds: &[RawFd],
    ) -> io::Result<u16> {
        self.id = self.id.wrapping_add(1);
        let h = Header {
            msg_id: self.id,
            command,
            flags,
            ..Header::default()
        };
        send_with_fds(self.s.as_raw_fd(), &h.message(payload), fds)?;
        Ok(self.id)
    }
    /// [`Client::try_send_fds`] that must succeed.
    pub fn send_fds(&mut self, command: u16, flags: u32, payload: &[u8], fds: &[RawFd]) -> u16 {
        self.try_send_fds(command, flags, payload, fds).unwrap()
    }
    /// Sends a request; returns its message id.
    pub fn send(&mut self, command: u16, flags: u32, payload: &[u8]) -> u16 {
        self.send_fds(command, flags, payload, &[])
    }
    /// The next message from the server (`Err` also when it closed the connection).
    pub fn try_recv(&mut self) -> io::Result<(Header, Vec<u8>)> {
        let m = recv_message(self.s.as_raw_fd())?.ok_or(io::ErrorKind::UnexpectedEof)?;
        let p = m.payload.ok_or(io::ErrorKind::InvalidData)?;
        Ok((m.hdr, p))
    }
    /// The next message from the server.
    pub fn recv(&mut self) -> (Header, Vec<u8>) {
        self.try_recv().unwrap()
    }
    /// A request with `fds` and its reply (an error reply too); `Err` if the server
    /// does not answer.
    pub fn try_call_fds(
        &mut self,
        command: u16,
        payload: &[u8],
        fds: &[RawFd],
    ) -> io::Result<(Header, Vec<u8>)> {
        let id = self.try_send_fds(command, 0, payload, fds)?;
        let (h, p) = self.try_recv()?;
        assert_eq!((h.msg_id, h.command), (id, command));
        assert_eq!(h.flags & FLAG_TYPE_MASK, FLAG_REPLY);
        Ok((h, p))
    }
    /// A request with `fds` and its reply.
    pub fn call_fds(&mut self, command: u16, payload: &[u8], fds: &[RawFd]) -> (Header, Vec<u8>) {
        self.try_call_fds(command, payload, fds).unwrap()
    }
    /// A request and its reply.
    pub fn call(&mut self, command: u16, payload: &[u8]) -> (Header, Vec<u8>) {
        self.call_fds(command, payload, &[])
    }
    /// A request with `fds` that must succeed if answered: the reply payload.
    pub fn try_ok_fds(
        &mut self,
        command: u16,
        payload: &[u8],
        fds: &[RawFd],
    ) -> io::Result<Vec<u8>> {
        let (h, p) = self.try_call_fds(command, payload, fds)?;
        assert_eq!(
            h.flags & FLAG_ERROR,
            0,
            "command {command}: errno {}",
            h.error
        );
        Ok(p)
    }
    /// A request with `fds` that must succeed: the reply payload.
    pub fn ok_fds(&mut self, command: u16, payload: &[u8], fds: &[RawFd]) -> Vec<u8> {
        self.try_ok_fds(command, payload, fds).unwrap()
    }
    /// A request that must succeed: the reply payload.
    pub fn ok(&mut self, command: u16, payload: &[u8]) -> Vec<u8> {
        self.ok_fds(command, payload, &[])
    }
    /// VERSION negotiation with no capabilities: the reply payload (version and
    /// capabilities).
    pub fn version(&mut self) -> Vec<u8> {
        self.version_with("{}")
    }
    /// VERSION negotiation offering the capabilities JSON `caps`: the reply payload.
    pub fn version_with(&mut self, caps: &str) -> Vec<u8> {
        let mut v = vec![0, 0, 1, 0];
        v.extend_from_slice(caps.as_bytes());
        v.push(0);
        self.ok(cmd::VERSION, &v)
    }
    /// REGION_READ of `count` bytes that must succeed if answered: the data.
    pub fn try_region_read(&mut self, region: u32, offset: u64, count: u32) -> io::Result<Vec<u8>> {
        let req = region_req(region, offset, count, &[]);
        let p = self.try_ok_fds(cmd::REGION_READ, &req, &[])?;
        assert_eq!(&p[..16], &req[..]);
        Ok(p[16..].to_vec())
    }
    /// REGION_READ of `count` bytes: the data.
    pub fn region_read(&mut self, region: u32, offset: u64, count: u32) -> Vec<u8> {
        self.try_region_read(region, offset, count).unwrap()
    }
    /// A 4-byte REGION_WRITE that must succeed if answered.
    pub fn try_write(&mut self, region: u32, off: u64, v: u32) -> io::Result<()> {
        let req = region_req(region, off, 4, &v.to_le_bytes());
        let p = self.try_ok_fds(cmd::REGION_WRITE, &req, &[])?;
        assert_eq!(&p[..], &req[..16]);
        Ok(())
    }
    /// A 4-byte REGION_WRITE.
    pub fn write(&mut self, region: u32, off: u64, v: u32) {
        self.try_write(region, off, v).unwrap()
    }
    /// A 4-byte read of BAR0 that must succeed if answered.
    pub fn try_read(&mut self, off: u32) -> io::Result<u32> {
        Ok(le32(&self.try_region_read(BAR_REGS, off.into(), 4)?, 0))
    }
    /// A 4-byte read of BAR0.
    pub fn read(&mut self, off: u32) -> u32 {
        self.try_read(off).unwrap()
    }
    /// Writes the PCI command register (config space offset 4).
    pub fn pci_command(&mut self, v: u16) {
        self.write(proto::PCI_CONFIG_REGION_INDEX, 4, u32::from(v));
    }
    /// DMA_MAP of `size` bytes at `iova`, backed by `fd` at `offset` if given.
    pub fn dma_map(&mut self, iova: u64, size: u64, offset: u64, fd: Option<RawFd>) {
        self.ok_fds(
            cmd::DMA_MAP,
            &dma_map_req(iova, size, offset),
            fd.as_slice(),
        );
    }
}
