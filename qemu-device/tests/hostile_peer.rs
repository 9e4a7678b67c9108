//! The device against a hostile vfio-user peer (spec §1): the real `mnic-device` binary
//! driven over its socket with file descriptors that are not what they claim to be,
//! malformed DMA_UNMAPs and too many DMA regions. Every case checks both that the request
//! is refused with an error reply and that the device survives it.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use mnic_abi::{cmd, completion, control, irq, reg, work};
use mnic_abi::{CtxEntry, WorkDesc, BAR_DOORBELLS, BAR_REGS, CMD_FLAG_IRQ, MNIC_ID_VALUE};
use mnic_device::mem::{self, GuestMem, GuestRam};
use mnic_device::proto::{self, Header, FLAG_ERROR, HEADER_SIZE};
use mnic_device::testkit::Tables;
use vmm_sys_util::eventfd::EventFd;
use zerocopy::IntoBytes;

const RAM: u64 = 16 << 20;
const CTX_TABLE: u64 = 0x1000;
const CMDQ: u64 = 0x8000;
const EVQ: u64 = 0x9000;
const SYNC_WORD: u64 = 0xa000;
const WQ: u64 = 0xb000;
const CQ: u64 = 0xc000;
const SRC_GPA: u64 = 0x20_0000;
const DST_GPA: u64 = 0x30_0000;
const WQ_VA: u64 = 0x7000_0000;
const CQ_VA: u64 = 0x7000_1000;
const SRC_VA: u64 = 0x1000_0000;
const DST_VA: u64 = 0x2000_0000;
const TIMEOUT: Duration = Duration::from_secs(10);

/// VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP and VFIO_DMA_UNMAP_FLAG_ALL (`<linux/vfio.h>`).
const UNMAP_DIRTY_BITMAP: u32 = 1 << 0;
const UNMAP_ALL: u32 = 1 << 1;

/// The server process and its directory: killed (if still running) and removed on every
/// path out of a test.
struct Served {
    child: Child,
    dir: PathBuf,
}

impl Served {
    /// `Err(status)` once the server has exited.
    fn alive(&mut self) -> Result<(), ExitStatus> {
        match self.child.try_wait().unwrap() {
            Some(st) => Err(st),
            None => Ok(()),
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Client {
    s: UnixStream,
    id: u16,
}

/// sendmsg with SCM_RIGHTS.
fn send_with_fds(sock: RawFd, buf: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let mut cbuf = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain old data; all-zero is a valid empty value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let len = std::mem::size_of_val(fds);
        assert!(len <= 64);
        msg.msg_control = cbuf.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE is a pure size computation.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(len as u32) } as _;
        // SAFETY: the control buffer is 128 bytes, enough for the header and up to 16
        // fds; CMSG_FIRSTHDR/CMSG_DATA point into it.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(len as u32) as _;
            std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(c), len);
        }
    }
    // SAFETY: `msg` points at live buffers for the duration of the call.
    let n = unsafe { libc::sendmsg(sock, &msg, 0) };
    if n == buf.len() as isize {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Client {
    fn call(&mut self, command: u16, payload: &[u8], fds: &[RawFd]) -> io::Result<Header> {
        self.id = self.id.wrapping_add(1);
        let h = Header {
            msg_id: self.id,
            command,
            ..Header::default()
        };
        send_with_fds(self.s.as_raw_fd(), &h.message(payload), fds)?;
        let mut hb = [0u8; HEADER_SIZE];
        self.s.read_exact(&mut hb)?;
        let r = Header::decode(&hb);
        let mut p = vec![0u8; (r.size as usize).saturating_sub(HEADER_SIZE)];
        self.s.read_exact(&mut p)?;
        assert_eq!((r.msg_id, r.command), (self.id, command));
        Ok(r)
    }
    /// A request that must succeed.
    fn ok(&mut self, command: u16, payload: &[u8], fds: &[RawFd]) {
        let h = self.call(command, payload, fds).unwrap();
        assert_eq!(
            h.flags & FLAG_ERROR,
            0,
            "command {command}: errno {}",
            h.error
        );
    }
    fn write(&mut self, region: u32, off: u64, v: u32) -> io::Result<()> {
        let mut req = off.to_le_bytes().to_vec();
        req.extend_from_slice(&region.to_le_bytes());
        req.extend_from_slice(&4u32.to_le_bytes());
        req.extend_from_slice(&v.to_le_bytes());
        let h = self.call(proto::cmd::REGION_WRITE, &req, &[])?;
        assert_eq!(h.flags & FLAG_ERROR, 0);
        Ok(())
    }
    fn read(&mut self, off: u32) -> io::Result<u32> {
        let mut req = u64::from(off).to_le_bytes().to_vec();
        req.extend_from_slice(&BAR_REGS.to_le_bytes());
        req.extend_from_slice(&4u32.to_le_bytes());
        self.id = self.id.wrapping_add(1);
        let h = Header {
            msg_id: self.id,
            command: proto::cmd::REGION_READ,
            ..Header::default()
        };
        send_with_fds(self.s.as_raw_fd(), &h.message(&req), &[])?;
        let mut hb = [0u8; HEADER_SIZE];
        self.s.read_exact(&mut hb)?;
        let r = Header::decode(&hb);
        let mut p = vec![0u8; (r.size as usize).saturating_sub(HEADER_SIZE)];
        self.s.read_exact(&mut p)?;
        Ok(u32::from_le_bytes(p[16..20].try_into().unwrap()))
    }
    fn dma_map(&mut self, iova: u64, size: u64, offset: u64, fd: Option<RawFd>) -> Header {
        let mut m = 32u32.to_le_bytes().to_vec();
        m.extend_from_slice(&3u32.to_le_bytes());
        for x in [offset, iova, size] {
            m.extend_from_slice(&x.to_le_bytes());
        }
        self.call(proto::cmd::DMA_MAP, &m, fd.as_slice()).unwrap()
    }
    fn dma_unmap(&mut self, flags: u32, iova: u64, size: u64) -> Header {
        let mut u = 24u32.to_le_bytes().to_vec();
        u.extend_from_slice(&flags.to_le_bytes());
        u.extend_from_slice(&iova.to_le_bytes());
        u.extend_from_slice(&size.to_le_bytes());
        self.call(proto::cmd::DMA_UNMAP, &u, &[]).unwrap()
    }
    fn set_irqs(&mut self, start: u32, count: u32, fds: &[RawFd]) -> Header {
        let mut s = Vec::new();
        for x in [
            20u32,
            proto::IRQ_SET_DATA_EVENTFD | proto::IRQ_SET_ACTION_TRIGGER,
            proto::PCI_MSIX_IRQ_INDEX,
            start,
            count,
        ] {
            s.extend_from_slice(&x.to_le_bytes());
        }
        self.call(proto::cmd::DEVICE_SET_IRQS, &s, fds).unwrap()
    }
    /// Whether the device still answers a register read.
    fn answers(&mut self) -> bool {
        self.read(reg::ID).ok() == Some(MNIC_ID_VALUE)
    }
}

fn refused(h: &Header, what: &str) {
    assert_ne!(h.flags & FLAG_ERROR, 0, "{what}: taken (should be refused)");
}

fn taken(h: &Header, what: &str) {
    assert_eq!(
        h.flags & FLAG_ERROR,
        0,
        "{what}: refused, errno {}",
        h.error
    );
}

fn start(name: &str) -> (Served, Client) {
    let dir = std::env::temp_dir().join(format!("mnic-hostile-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("dev.sock");
    let child = Command::new(env!("CARGO_BIN_EXE_mnic-device"))
        .args(["serve", "--socket"])
        .arg(&sock)
        .spawn()
        .unwrap();
    let served = Served { child, dir };
    let t = Instant::now();
    let s = loop {
        if let Ok(s) = UnixStream::connect(&sock) {
            break s;
        }
        assert!(t.elapsed() < TIMEOUT, "server did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut c = Client { s, id: 0 };
    let mut v = vec![0, 0, 1, 0];
    v.extend_from_slice(b"{}\0");
    c.ok(proto::cmd::VERSION, &v, &[]);
    (served, c)
}

/// A memfd of `size` bytes created with `flags` (`MFD_*`), unsealed.
fn memfd_with(size: u64, flags: libc::c_uint) -> OwnedFd {
    // SAFETY: memfd_create takes a NUL-terminated name and flags and returns a new fd.
    let fd = unsafe { libc::memfd_create(c"mnic-hostile".as_ptr(), libc::MFD_CLOEXEC | flags) };
    assert!(fd >= 0, "memfd_create: {}", io::Error::last_os_error());
    // SAFETY: `fd` was just created and is owned by nobody else.
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(size).unwrap();
    f.into()
}

/// Guest RAM as QEMU's `memory-backend-memfd` makes it (its default `seal=on`): sealed
/// against growing, shrinking and further seals.
fn qemu_memfd(size: u64) -> OwnedFd {
    let fd = memfd_with(size, libc::MFD_ALLOW_SEALING);
    let seals = libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
    // SAFETY: fcntl on an fd we own.
    assert_eq!(
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) },
        0
    );
    fd
}

fn seals(fd: &OwnedFd) -> libc::c_int {
    // SAFETY: fcntl on an fd we own.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) }
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut p = [0; 2];
    // SAFETY: pipe2 writes two new fds into `p`.
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both fds were just created and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < TIMEOUT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Writes the ring registers, enables the device (the rings at the fixed GPAs) and turns
/// on bus mastering.
fn enable(c: &mut Client) -> io::Result<()> {
    for (r, v) in [
        (reg::CTX_TABLE_LO, CTX_TABLE as u32),
        (reg::CMDQ_BASE_LO, CMDQ as u32),
        (reg::CMDQ_SIZE_LOG2, 4),
        (reg::EVQ_BASE_LO, EVQ as u32),
        (reg::EVQ_SIZE_LOG2, 4),
        (reg::CONTROL, control::ENABLE),
    ] {
        c.write(BAR_REGS, r.into(), v)?;
    }
    // PCI command: memory decoding and bus mastering.
    c.write(proto::PCI_CONFIG_REGION_INDEX, 4, 0x6)
}

/// Guest RAM (a QEMU-style memfd) given to the device at GPA 0 and mapped here too, and
/// the device enabled over it.
fn rig(c: &mut Client) -> (GuestRam, OwnedFd) {
    let fd = qemu_memfd(RAM);
    let ram = GuestRam::new();
    ram.map_fd(0, RAM, fd.try_clone().unwrap(), 0, true)
        .unwrap();
    taken(&c.dma_map(0, RAM, 0, Some(fd.as_raw_fd())), "guest RAM");
    enable(c).unwrap();
    (ram, fd)
}

/// The driver's side of the command ring.
struct Cmdq {
    tail: u32,
}

impl Cmdq {
    /// Writes the command, rings CMDQ_TAIL and waits until the device has taken it.
    fn post(&mut self, c: &mut Client, m: &GuestMem, cm: mnic_abi::Command) {
        mem::write(m, CMDQ + 32 * u64::from(self.tail), cm.as_bytes()).unwrap();
        self.tail = (self.tail + 1) % 16;
        c.write(BAR_REGS, reg::CMDQ_TAIL.into(), self.tail).unwrap();
        let want = self.tail;
        wait_until("CMDQ_HEAD", || c.read(reg::CMDQ_HEAD).unwrap() == want);
    }
    /// A SYNC writing `v`; whether the value landed.
    fn sync(&mut self, c: &mut Client, m: &GuestMem, v: u64, irq: bool) -> bool {
        let mut s = command(cmd::SYNC, 0, SYNC_WORD, v);
        if irq {
            s.flags = CMD_FLAG_IRQ;
        }
        self.post(c, m, s);
        mem::load_u64(m, SYNC_WORD).unwrap() == v
    }
}

fn command(opcode: u8, ctx: u16, arg0: u64, arg1: u64) -> mnic_abi::Command {
    mnic_abi::Command {
        opcode,
        ctx,
        arg0,
        arg1,
        ..Default::default()
    }
}

/// A DMA_MAP whose memfd ends before offset + size: a device access past the end of the
/// file would be SIGBUS, so the map is refused at once.
#[test]
fn dma_map_refuses_a_short_memfd() {
    let (mut srv, mut c) = start("short");
    let fd = memfd_with(0x1000, libc::MFD_ALLOW_SEALING);
    let h = c.dma_map(0, 0x10000, 0, Some(fd.as_raw_fd()));
    // Were it taken: the command ring lies beyond the end of the file.
    let _ = enable(&mut c);
    let _ = c.write(BAR_REGS, reg::CMDQ_TAIL.into(), 1);
    std::thread::sleep(Duration::from_millis(200));
    let answers = c.answers();
    assert!(answers, "the device died: {:?}", srv.alive());
    refused(&h, "a map beyond the end of its memfd");
    // The offset counts too.
    refused(
        &c.dma_map(0x10_0000, 0x1000, 0x1000, Some(fd.as_raw_fd())),
        "a map at the end of its memfd",
    );
    refused(
        &c.dma_map(0x10_0000, 0x1000, u64::MAX - 0xfff, Some(fd.as_raw_fd())),
        "a wrapping offset",
    );
    // What the file does hold is taken.
    taken(
        &c.dma_map(0x10_0000, 0x1000, 0, Some(fd.as_raw_fd())),
        "a whole memfd",
    );
    assert!(srv.alive().is_ok());
}

/// A DMA_MAP of an fd that could shrink under the device (a memfd that cannot be sealed,
/// a plain file) or that is not a file at all: refused. A sealable memfd is taken, and
/// sealed against shrinking from then on.
#[test]
fn dma_map_refuses_a_shrinkable_fd() {
    let (mut srv, mut c) = start("shrink");
    // Created without MFD_ALLOW_SEALING: it can never be sealed.
    let plain = memfd_with(RAM, 0);
    let h = c.dma_map(0, RAM, 0, Some(plain.as_raw_fd()));
    // Were it taken: the peer shrinks it, then the device reads its command ring.
    File::from(plain.try_clone().unwrap()).set_len(0).unwrap();
    let _ = enable(&mut c);
    let _ = c.write(BAR_REGS, reg::CMDQ_TAIL.into(), 1);
    std::thread::sleep(Duration::from_millis(200));
    let answers = c.answers();
    assert!(answers, "the device died: {:?}", srv.alive());
    refused(&h, "an unsealable memfd");

    let path = srv.dir.join("ram.img");
    let file = File::create(&path).unwrap();
    file.set_len(0x10000).unwrap();
    refused(
        &c.dma_map(0x100_0000, 0x10000, 0, Some(file.as_raw_fd())),
        "a plain file",
    );
    let (r, _w) = pipe();
    refused(
        &c.dma_map(0x100_0000, 0x10000, 0, Some(r.as_raw_fd())),
        "a pipe",
    );

    let sealable = memfd_with(0x10000, libc::MFD_ALLOW_SEALING);
    assert_eq!(seals(&sealable) & libc::F_SEAL_SHRINK, 0);
    taken(
        &c.dma_map(0x100_0000, 0x10000, 0, Some(sealable.as_raw_fd())),
        "a sealable memfd",
    );
    assert_ne!(
        seals(&sealable) & libc::F_SEAL_SHRINK,
        0,
        "sealed by the device"
    );
    assert!(
        File::from(sealable).set_len(0).is_err(),
        "cannot shrink any more"
    );
    taken(
        &c.dma_map(
            0x200_0000,
            0x10000,
            0,
            Some(qemu_memfd(0x10000).as_raw_fd()),
        ),
        "QEMU's sealed memfd",
    );
    assert!(c.answers());
    assert!(srv.alive().is_ok());
}

/// MSI-X "eventfds" that are something else (here a pipe nobody reads, which would block
/// the thread that signals it) are refused; eventfds are taken and made non-blocking.
#[test]
fn set_irqs_accepts_only_eventfds() {
    let (mut srv, mut c) = start("irqs");
    c.s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (ram, _fd) = rig(&mut c);
    let m = ram.snapshot();
    let mut q = Cmdq { tail: 0 };
    let (_r, w) = pipe();
    let h = c.set_irqs(0, 2, &[w.as_raw_fd(), w.as_raw_fd()]);
    // Were it taken: CMD_DONE pending, then unmasked again and again; every unmask signals
    // vector 1 (8 bytes into the pipe, whose 64 KiB fill after 8192 of them).
    assert!(q.sync(&mut c, &m, 1, true));
    let mut hung = None;
    for i in 0..10_000 {
        let r = c
            .write(BAR_REGS, reg::IRQ_MASK.into(), irq::CMD_DONE)
            .and_then(|()| c.write(BAR_REGS, reg::IRQ_MASK.into(), 0));
        if let Err(e) = r {
            hung = Some((i, e));
            break;
        }
    }
    assert!(hung.is_none(), "the device stopped answering: {hung:?}");
    refused(&h, "a pipe as MSI-X eventfd");

    // Eventfds work; the device makes them non-blocking (QEMU's are already).
    let e0 = EventFd::new(0).unwrap();
    let e1 = EventFd::new(0).unwrap();
    taken(
        &c.set_irqs(0, 2, &[e0.as_raw_fd(), e1.as_raw_fd()]),
        "two eventfds",
    );
    // SAFETY: fcntl on an fd we own.
    let fl = unsafe { libc::fcntl(e1.as_raw_fd(), libc::F_GETFL) };
    assert_ne!(fl & libc::O_NONBLOCK, 0, "the device set O_NONBLOCK");
    c.write(BAR_REGS, reg::IRQ_MASK.into(), irq::CMD_DONE)
        .unwrap();
    c.write(BAR_REGS, reg::IRQ_MASK.into(), 0).unwrap();
    assert_eq!(e1.read().unwrap(), 1, "the held-back CMD_DONE on unmask");
    assert!(q.sync(&mut c, &m, 2, true));
    wait_until("the SYNC interrupt", || e1.read().is_ok());

    // One bad fd refuses the whole request: vector 1 keeps its eventfd.
    let e2 = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    refused(
        &c.set_irqs(0, 2, &[e2.as_raw_fd(), w.as_raw_fd()]),
        "an eventfd and a pipe",
    );
    assert!(q.sync(&mut c, &m, 3, true));
    wait_until("the SYNC interrupt", || e1.read().is_ok());
    assert!(e2.read().is_err());
    assert!(srv.alive().is_ok());
}

/// DMA_UNMAP must name whole regions (vfio-user: "must match exactly a previous
/// mapping"); one that cuts a region is refused and removes nothing.
#[test]
fn dma_unmap_refuses_a_partial_range() {
    const ROM: u64 = 0x4000_0000;
    let (mut srv, mut c) = start("partial");
    let (ram, _fd) = rig(&mut c);
    let m = ram.snapshot();
    taken(&c.dma_map(ROM, 0x1_0000, 0, None), "ROM without fd");
    let mut q = Cmdq { tail: 0 };
    assert!(q.sync(&mut c, &m, 1, false));
    refused(&c.dma_unmap(0, 0, RAM / 2), "the lower half of RAM");
    refused(&c.dma_unmap(0, 0x1000, RAM), "RAM shifted by a page");
    refused(&c.dma_unmap(0, ROM, 0x1000), "a page of the ROM range");
    assert!(q.sync(&mut c, &m, 2, false), "RAM is still there");
    // A range covering whole regions removes them.
    taken(&c.dma_unmap(0, ROM, 0x1_0000), "the ROM range");
    taken(&c.dma_map(ROM, 0x1_0000, 0, None), "the ROM range again");
    taken(&c.dma_unmap(0, 0, RAM), "RAM");
    let errors = c.read(reg::ERROR_COUNT).unwrap();
    q.post(&mut c, &m, command(cmd::SYNC, 0, SYNC_WORD, 3));
    assert_eq!(mem::load_u64(&m, SYNC_WORD).unwrap(), 2, "no RAM: no SYNC");
    assert_eq!(c.read(reg::ERROR_COUNT).unwrap(), errors + 1);
    assert!(srv.alive().is_ok());
}

/// DMA_UNMAP flags: `VFIO_DMA_UNMAP_FLAG_ALL` (address and size 0) removes every region;
/// the dirty bitmap (no dirty tracking here), unknown bits and a size of 0 without `ALL`
/// are refused.
#[test]
fn dma_unmap_flags() {
    let (mut srv, mut c) = start("unmapflags");
    let (ram, _fd) = rig(&mut c);
    let m = ram.snapshot();
    let mut q = Cmdq { tail: 0 };
    assert!(q.sync(&mut c, &m, 1, false));
    refused(&c.dma_unmap(UNMAP_DIRTY_BITMAP, 0, RAM), "GET_DIRTY_BITMAP");
    refused(&c.dma_unmap(1 << 7, 0, RAM), "an unknown flag");
    refused(&c.dma_unmap(UNMAP_ALL, 0, RAM), "ALL with a size");
    refused(&c.dma_unmap(UNMAP_ALL, 0x1000, 0), "ALL with an address");
    refused(&c.dma_unmap(0, 0, 0), "size 0 without ALL");
    assert!(q.sync(&mut c, &m, 2, false), "RAM is still there");
    taken(&c.dma_unmap(UNMAP_ALL, 0, 0), "unmap all");
    let errors = c.read(reg::ERROR_COUNT).unwrap();
    q.post(&mut c, &m, command(cmd::SYNC, 0, SYNC_WORD, 3));
    assert_eq!(mem::load_u64(&m, SYNC_WORD).unwrap(), 2, "no RAM: no SYNC");
    assert_eq!(c.read(reg::ERROR_COUNT).unwrap(), errors + 1);
    // The same ranges can be mapped again.
    taken(
        &c.dma_map(0, RAM, 0, Some(_fd.as_raw_fd())),
        "RAM after unmap all",
    );
    assert!(q.sync(&mut c, &m, 4, false));
    assert!(srv.alive().is_ok());
}

/// The DMA_UNMAP reply waits for a DMA that still uses the region, however long it takes:
/// here a COPY stalled (DEBUG_STALL_MS) for longer than the old 10 s give-up.
#[test]
fn dma_unmap_waits_for_a_stalled_copy() {
    let (mut srv, mut c) = start("unmapwait");
    c.s.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
    let (ram, _fd) = rig(&mut c);
    let m = ram.snapshot();
    let mut q = Cmdq { tail: 0 };
    let mut t = Tables::new(&m, 0x10_0000);
    t.map_4k(&m, WQ_VA, WQ, false);
    t.map_4k(&m, CQ_VA, CQ, true);
    t.map_4k(&m, SRC_VA, SRC_GPA, false);
    t.map_4k(&m, DST_VA, DST_GPA, true);
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 13 % 251) as u8).collect();
    mem::write(&m, SRC_GPA, &data).unwrap();
    let entry = CtxEntry {
        flags: mnic_abi::CTX_FLAG_VALID,
        wq_size_log2: 4,
        cq_size_log2: 4,
        root: t.root,
        wq_va: WQ_VA,
        cq_va: CQ_VA,
        ..Default::default()
    };
    mem::write(&m, CTX_TABLE + 64, entry.as_bytes()).unwrap();
    q.post(&mut c, &m, command(cmd::CTX_ENABLE, 1, 0, 0));
    let d = WorkDesc {
        opcode: work::COPY,
        len: 4096,
        tag: 9,
        src: SRC_VA,
        dst: DST_VA,
        ..Default::default()
    };
    mem::write(&m, WQ, d.as_bytes()).unwrap();
    const STALL_MS: u32 = 11_000;
    c.write(BAR_REGS, reg::DEBUG_STALL_MS.into(), STALL_MS)
        .unwrap();
    c.write(BAR_DOORBELLS, 4096, 1).unwrap();
    wait_until("the stall", || c.read(reg::DEBUG_STALL_MS).unwrap() == 0);
    let t0 = Instant::now();
    let h = c.dma_unmap(0, 0, RAM);
    let took = t0.elapsed();
    // The reply comes once the stalled copy has used the region, and not before.
    let mut out = vec![0u8; 4096];
    mem::read(&m, DST_GPA, &mut out).unwrap();
    assert!(
        out == data,
        "DMA_UNMAP answered after {took:?}, before the copy that used the region"
    );
    taken(&h, "DMA_UNMAP of RAM");
    let cpl = {
        let mut b = [0u8; 32];
        mem::read(&m, CQ, &mut b).unwrap();
        u16::from_le_bytes([b[8], b[9]])
    };
    assert_eq!(cpl, completion::OK);
    assert!(c.answers());
    assert!(srv.alive().is_ok());
}

/// The device keeps at most 1024 DMA regions with an fd and 1024 ranges without one
/// (spec §1); beyond that DMA_MAP is refused. It says so in its VERSION reply.
#[test]
fn dma_regions_are_bounded() {
    const BOUND: u64 = 1024;
    let (mut srv, mut c) = start("bounds");
    let mut v = vec![0, 0, 1, 0];
    v.extend_from_slice(b"{}\0");
    let mut hb = Vec::new();
    {
        // The reply of a second VERSION, read raw to see the capabilities.
        c.id = c.id.wrapping_add(1);
        let h = Header {
            msg_id: c.id,
            command: proto::cmd::VERSION,
            ..Header::default()
        };
        c.s.write_all(&h.message(&v)).unwrap();
        let mut b = [0u8; HEADER_SIZE];
        c.s.read_exact(&mut b).unwrap();
        hb.resize(Header::decode(&b).size as usize - HEADER_SIZE, 0);
        c.s.read_exact(&mut hb).unwrap();
    }
    let caps = String::from_utf8_lossy(&hb[4..]).into_owned();
    assert!(caps.contains("\"max_dma_maps\":1024"), "{caps}");

    let rom = 1u64 << 40;
    for i in 0..BOUND {
        taken(
            &c.dma_map(rom + i * 0x1000, 0x1000, 0, None),
            "a range without fd",
        );
    }
    refused(
        &c.dma_map(rom + BOUND * 0x1000, 0x1000, 0, None),
        "range 1025",
    );
    let fd = qemu_memfd(0x1000);
    let base = 1u64 << 41;
    for i in 0..BOUND {
        taken(
            &c.dma_map(base + i * 0x1000, 0x1000, 0, Some(fd.as_raw_fd())),
            "a region with fd",
        );
    }
    refused(
        &c.dma_map(base + BOUND * 0x1000, 0x1000, 0, Some(fd.as_raw_fd())),
        "region 1025",
    );
    // Room again after an unmap.
    taken(&c.dma_unmap(0, base, 0x1000), "one region");
    taken(
        &c.dma_map(base + BOUND * 0x1000, 0x1000, 0, Some(fd.as_raw_fd())),
        "a region after an unmap",
    );
    taken(&c.dma_unmap(0, rom, 0x1000), "one range");
    taken(
        &c.dma_map(rom + BOUND * 0x1000, 0x1000, 0, None),
        "a range after an unmap",
    );
    assert!(c.answers());
    assert!(srv.alive().is_ok());
}
