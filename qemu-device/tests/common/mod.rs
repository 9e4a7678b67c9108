//! What the integration tests share: the real `mnic-device serve` process in a temporary
//! directory, and a vfio-user client over its socket (the test plays QEMU).
#![allow(dead_code)] // each test crate uses a part of it

use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mnic_abi::BAR_REGS;
use mnic_device::proto::{cmd, Header, FLAG_ERROR, FLAG_REPLY, FLAG_TYPE_MASK, HEADER_SIZE};
use mnic_device::server::send_with_fds;

/// How long a reply or a process may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The server process and its directory: ended (SIGTERM, then SIGKILL) and removed on
/// every path out of a test, panics included.
pub struct Served {
    pub child: Child,
    pub dir: PathBuf,
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
    let mut req = offset.to_le_bytes().to_vec();
    req.extend_from_slice(&u32s(&[region, count]));
    req.extend_from_slice(data);
    req
}

/// A DMA_UNMAP request.
pub fn unmap_req(iova: u64, size: u64) -> Vec<u8> {
    let mut u = u32s(&[24, 0]);
    u.extend_from_slice(&iova.to_le_bytes());
    u.extend_from_slice(&size.to_le_bytes());
    u
}

/// A vfio-user client: the test plays QEMU.
pub struct Client {
    pub s: UnixStream,
    id: u16,
}

impl Client {
    /// Sends a request with `fds`; returns its message id.
    pub fn send_fds(&mut self, command: u16, flags: u32, payload: &[u8], fds: &[RawFd]) -> u16 {
        self.id = self.id.wrapping_add(1);
        let h = Header {
            msg_id: self.id,
            command,
            flags,
            ..Header::default()
        };
        send_with_fds(self.s.as_raw_fd(), &h.message(payload), fds).unwrap();
        self.id
    }
    /// Sends a request; returns its message id.
    pub fn send(&mut self, command: u16, flags: u32, payload: &[u8]) -> u16 {
        self.send_fds(command, flags, payload, &[])
    }
    /// The next message from the server.
    pub fn recv(&mut self) -> (Header, Vec<u8>) {
        let mut hb = [0u8; HEADER_SIZE];
        self.s.read_exact(&mut hb).unwrap();
        let h = Header::decode(&hb);
        let mut p = vec![0u8; h.size as usize - HEADER_SIZE];
        self.s.read_exact(&mut p).unwrap();
        (h, p)
    }
    /// A request with `fds` and its reply.
    pub fn call_fds(&mut self, command: u16, payload: &[u8], fds: &[RawFd]) -> (Header, Vec<u8>) {
        let id = self.send_fds(command, 0, payload, fds);
        let (h, p) = self.recv();
        assert_eq!((h.msg_id, h.command), (id, command));
        assert_eq!(h.flags & FLAG_TYPE_MASK, FLAG_REPLY);
        (h, p)
    }
    /// A request and its reply.
    pub fn call(&mut self, command: u16, payload: &[u8]) -> (Header, Vec<u8>) {
        self.call_fds(command, payload, &[])
    }
    /// A request with `fds` that must succeed: the reply payload.
    pub fn ok_fds(&mut self, command: u16, payload: &[u8], fds: &[RawFd]) -> Vec<u8> {
        let (h, p) = self.call_fds(command, payload, fds);
        assert_eq!(
            h.flags & FLAG_ERROR,
            0,
            "command {command}: errno {}",
            h.error
        );
        p
    }
    /// A request that must succeed: the reply payload.
    pub fn ok(&mut self, command: u16, payload: &[u8]) -> Vec<u8> {
        self.ok_fds(command, payload, &[])
    }
    /// VERSION negotiation.
    pub fn version(&mut self) {
        let mut v = vec![0, 0, 1, 0];
        v.extend_from_slice(b"{}\0");
        self.ok(cmd::VERSION, &v);
    }
    /// REGION_READ of `count` bytes: the data.
    pub fn region_read(&mut self, region: u32, offset: u64, count: u32) -> Vec<u8> {
        let req = region_req(region, offset, count, &[]);
        let p = self.ok(cmd::REGION_READ, &req);
        assert_eq!(&p[..16], &req[..]);
        p[16..].to_vec()
    }
    /// A 4-byte REGION_WRITE.
    pub fn write(&mut self, region: u32, off: u64, v: u32) {
        let req = region_req(region, off, 4, &v.to_le_bytes());
        let p = self.ok(cmd::REGION_WRITE, &req);
        assert_eq!(&p[..], &req[..16]);
    }
    /// A 4-byte read of BAR0.
    pub fn read(&mut self, off: u32) -> u32 {
        le32(&self.region_read(BAR_REGS, off.into(), 4), 0)
    }
    /// DMA_MAP of `size` bytes at `iova`, backed by `fd` at `offset` if given.
    pub fn dma_map(&mut self, iova: u64, size: u64, offset: u64, fd: Option<RawFd>) {
        let mut m = u32s(&[32, 3]);
        for x in [offset, iova, size] {
            m.extend_from_slice(&x.to_le_bytes());
        }
        self.ok_fds(cmd::DMA_MAP, &m, fd.as_slice());
    }
}
