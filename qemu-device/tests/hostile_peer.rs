//! The device against a hostile vfio-user peer (spec §1): the real `mnic-device` binary
//! driven over its socket with file descriptors that are not what they claim to be,
//! malformed DMA_UNMAPs and too many DMA regions. Every case checks both that the request
//! is refused with an error reply and that the device survives it.

mod common;

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::guest::{command, ctx_entry, try_enable, Cmdq};
use common::guest::{CQ, CQ_VA, CTX_TABLE, DST_GPA, DST_VA, RAM, ROM, SRC_GPA, SRC_VA};
use common::guest::{SYNC_WORD, WQ, WQ_VA};
use common::{dma_map_req, msix_irqs_req, tmpdir, unmap_req, wait_until, Client, Served, TIMEOUT};
use mnic_abi::{cmd, completion, control, irq, reg, work};
use mnic_abi::{WorkDesc, BAR_DOORBELLS, BAR_REGS, MNIC_ID_VALUE};
use mnic_device::mem::{self, GuestMem, GuestRam};
use mnic_device::proto::{self, Header, FLAG_ERROR};
use mnic_device::proto::{DMA_UNMAP_FLAG_ALL, DMA_UNMAP_FLAG_GET_DIRTY_BITMAP};
use mnic_device::testkit::{memfd, Tables};
use vmm_sys_util::eventfd::EventFd;
use zerocopy::IntoBytes;

/// What a hostile peer asks: requests whose reply may well be an error (the reply's
/// header), and whether the device still answers.
trait Hostile {
    /// DMA_MAP of `size` bytes at `iova`, backed by `fd` at `offset` if given.
    fn map_dma(&mut self, iova: u64, size: u64, offset: u64, fd: Option<RawFd>) -> Header;
    /// DMA_UNMAP with `flags`.
    fn unmap_dma(&mut self, flags: u32, iova: u64, size: u64) -> Header;
    /// SET_IRQS of MSI-X vectors `start..start + count` to `fds`.
    fn set_irqs(&mut self, start: u32, count: u32, fds: &[RawFd]) -> Header;
    /// Whether the device still answers a register read.
    fn answers(&mut self) -> bool;
}

impl Hostile for Client {
    fn map_dma(&mut self, iova: u64, size: u64, offset: u64, fd: Option<RawFd>) -> Header {
        let req = dma_map_req(iova, size, offset);
        self.call_fds(proto::cmd::DMA_MAP, &req, fd.as_slice()).0
    }
    fn unmap_dma(&mut self, flags: u32, iova: u64, size: u64) -> Header {
        let req = unmap_req(flags, iova, size);
        self.call(proto::cmd::DMA_UNMAP, &req).0
    }
    fn set_irqs(&mut self, start: u32, count: u32, fds: &[RawFd]) -> Header {
        let req = msix_irqs_req(start, count);
        self.call_fds(proto::cmd::DEVICE_SET_IRQS, &req, fds).0
    }
    fn answers(&mut self) -> bool {
        self.try_read(reg::ID).ok() == Some(MNIC_ID_VALUE)
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

/// The server, and a client that has negotiated the version.
fn start(name: &str) -> (Served, Client) {
    let (srv, mut c, _) = common::start(&tmpdir(&format!("hostile-{name}")), &[]);
    c.version();
    (srv, c)
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

/// Enables the device (the rings at the fixed GPAs) and turns on bus mastering.
fn enable(c: &mut Client) -> io::Result<()> {
    try_enable(c, control::ENABLE)?;
    // PCI command: memory decoding and bus mastering.
    c.try_write(proto::PCI_CONFIG_REGION_INDEX, 4, 0x6)
}

/// What a map that should have been refused would do if taken: the device enabled and its
/// command ring (in the mapped range) rung, errors ignored. The device must still answer.
fn ring_and_survive(srv: &mut Served, c: &mut Client) {
    let _ = enable(c);
    let _ = c.try_write(BAR_REGS, reg::CMDQ_TAIL.into(), 1);
    std::thread::sleep(Duration::from_millis(200));
    let answers = c.answers();
    assert!(answers, "the device died: {:?}", srv.alive());
}

/// Guest RAM (a QEMU-style memfd) given to the device at GPA 0 and mapped here too, and
/// the device's command ring.
struct Guest {
    m: Arc<GuestMem>,
    q: Cmdq,
    fd: OwnedFd,
    _ram: GuestRam,
}

impl Guest {
    /// Posts a command and waits until the device has taken it.
    fn post(&mut self, c: &mut Client, cm: mnic_abi::Command) {
        self.q.post(c, &self.m, cm);
    }
    /// A SYNC writing `v`; whether the value landed.
    fn sync(&mut self, c: &mut Client, v: u64, irq: bool) -> bool {
        self.q.sync(c, &self.m, v, irq)
    }
    /// A SYNC writing `v` once RAM is gone: it does not land (the word keeps `old`) and
    /// counts an error.
    fn sync_without_ram(&mut self, c: &mut Client, v: u64, old: u64) {
        let errors = c.read(reg::ERROR_COUNT);
        self.post(c, command(cmd::SYNC, 0, SYNC_WORD, v));
        assert_eq!(
            mem::load_u64(&self.m, SYNC_WORD).unwrap(),
            old,
            "no RAM: no SYNC"
        );
        assert_eq!(c.read(reg::ERROR_COUNT), errors + 1);
    }
}

/// [`start`] with replies awaited for `timeout`, [`Guest`] RAM given to the device and
/// the device enabled over it.
fn start_rigged(name: &str, timeout: Duration) -> (Served, Client, Guest) {
    let (srv, mut c) = start(name);
    c.s.set_read_timeout(Some(timeout)).unwrap();
    let fd = memfd(RAM);
    let ram = GuestRam::new();
    ram.map_fd(0, RAM, fd.try_clone().unwrap(), 0, true)
        .unwrap();
    taken(&c.map_dma(0, RAM, 0, Some(fd.as_raw_fd())), "guest RAM");
    enable(&mut c).unwrap();
    let g = Guest {
        m: ram.snapshot(),
        q: Cmdq { tail: 0 },
        fd,
        _ram: ram,
    };
    (srv, c, g)
}

/// A DMA_MAP whose memfd ends before offset + size: a device access past the end of the
/// file would be SIGBUS, so the map is refused at once.
#[test]
fn dma_map_refuses_a_short_memfd() {
    let (mut srv, mut c) = start("short");
    let fd = memfd_with(0x1000, libc::MFD_ALLOW_SEALING);
    let h = c.map_dma(0, 0x10000, 0, Some(fd.as_raw_fd()));
    // Were it taken: the command ring lies beyond the end of the file.
    ring_and_survive(&mut srv, &mut c);
    refused(&h, "a map beyond the end of its memfd");
    // The offset counts too.
    refused(
        &c.map_dma(0x10_0000, 0x1000, 0x1000, Some(fd.as_raw_fd())),
        "a map at the end of its memfd",
    );
    refused(
        &c.map_dma(0x10_0000, 0x1000, u64::MAX - 0xfff, Some(fd.as_raw_fd())),
        "a wrapping offset",
    );
    // What the file does hold is taken.
    taken(
        &c.map_dma(0x10_0000, 0x1000, 0, Some(fd.as_raw_fd())),
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
    let h = c.map_dma(0, RAM, 0, Some(plain.as_raw_fd()));
    // Were it taken: the peer shrinks it, then the device reads its command ring.
    File::from(plain.try_clone().unwrap()).set_len(0).unwrap();
    ring_and_survive(&mut srv, &mut c);
    refused(&h, "an unsealable memfd");

    let path = srv.dir.join("ram.img");
    let file = File::create(&path).unwrap();
    file.set_len(0x10000).unwrap();
    refused(
        &c.map_dma(0x100_0000, 0x10000, 0, Some(file.as_raw_fd())),
        "a plain file",
    );
    let (r, _w) = pipe();
    refused(
        &c.map_dma(0x100_0000, 0x10000, 0, Some(r.as_raw_fd())),
        "a pipe",
    );

    let sealable = memfd_with(0x10000, libc::MFD_ALLOW_SEALING);
    assert_eq!(seals(&sealable) & libc::F_SEAL_SHRINK, 0);
    taken(
        &c.map_dma(0x100_0000, 0x10000, 0, Some(sealable.as_raw_fd())),
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
        &c.map_dma(0x200_0000, 0x10000, 0, Some(memfd(0x10000).as_raw_fd())),
        "QEMU's sealed memfd",
    );
    assert!(c.answers());
    assert!(srv.alive().is_ok());
}

/// MSI-X "eventfds" that are something else (here a pipe nobody reads, which would block
/// the thread that signals it) are refused; eventfds are taken and made non-blocking.
#[test]
fn set_irqs_accepts_only_eventfds() {
    let (mut srv, mut c, mut g) = start_rigged("irqs", Duration::from_secs(5));
    let (_r, w) = pipe();
    let h = c.set_irqs(0, 2, &[w.as_raw_fd(), w.as_raw_fd()]);
    // Were it taken: CMD_DONE pending, then unmasked again and again; every unmask signals
    // vector 1 (8 bytes into the pipe, whose 64 KiB fill after 8192 of them).
    assert!(g.sync(&mut c, 1, true));
    let mut hung = None;
    for i in 0..10_000 {
        let r = c
            .try_write(BAR_REGS, reg::IRQ_MASK.into(), irq::CMD_DONE)
            .and_then(|()| c.try_write(BAR_REGS, reg::IRQ_MASK.into(), 0));
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
    c.write(BAR_REGS, reg::IRQ_MASK.into(), irq::CMD_DONE);
    c.write(BAR_REGS, reg::IRQ_MASK.into(), 0);
    assert_eq!(e1.read().unwrap(), 1, "the held-back CMD_DONE on unmask");
    assert!(g.sync(&mut c, 2, true));
    wait_until("the SYNC interrupt", || e1.read().is_ok());

    // One bad fd refuses the whole request: vector 1 keeps its eventfd.
    let e2 = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    refused(
        &c.set_irqs(0, 2, &[e2.as_raw_fd(), w.as_raw_fd()]),
        "an eventfd and a pipe",
    );
    assert!(g.sync(&mut c, 3, true));
    wait_until("the SYNC interrupt", || e1.read().is_ok());
    assert!(e2.read().is_err());
    assert!(srv.alive().is_ok());
}

/// DMA_UNMAP must name whole regions (vfio-user: "must match exactly a previous
/// mapping"); one that cuts a region is refused and removes nothing.
#[test]
fn dma_unmap_refuses_a_partial_range() {
    let (mut srv, mut c, mut g) = start_rigged("partial", TIMEOUT);
    taken(&c.map_dma(ROM, 0x1_0000, 0, None), "ROM without fd");
    assert!(g.sync(&mut c, 1, false));
    refused(&c.unmap_dma(0, 0, RAM / 2), "the lower half of RAM");
    refused(&c.unmap_dma(0, 0x1000, RAM), "RAM shifted by a page");
    refused(&c.unmap_dma(0, ROM, 0x1000), "a page of the ROM range");
    assert!(g.sync(&mut c, 2, false), "RAM is still there");
    // A range covering whole regions removes them.
    taken(&c.unmap_dma(0, ROM, 0x1_0000), "the ROM range");
    taken(&c.map_dma(ROM, 0x1_0000, 0, None), "the ROM range again");
    taken(&c.unmap_dma(0, 0, RAM), "RAM");
    g.sync_without_ram(&mut c, 3, 2);
    assert!(srv.alive().is_ok());
}

/// DMA_UNMAP flags: `VFIO_DMA_UNMAP_FLAG_ALL` (address and size 0) removes every region;
/// the dirty bitmap (no dirty tracking here), unknown bits and a size of 0 without `ALL`
/// are refused.
#[test]
fn dma_unmap_flags() {
    let (mut srv, mut c, mut g) = start_rigged("unmapflags", TIMEOUT);
    assert!(g.sync(&mut c, 1, false));
    refused(
        &c.unmap_dma(DMA_UNMAP_FLAG_GET_DIRTY_BITMAP, 0, RAM),
        "GET_DIRTY_BITMAP",
    );
    refused(&c.unmap_dma(1 << 7, 0, RAM), "an unknown flag");
    refused(&c.unmap_dma(DMA_UNMAP_FLAG_ALL, 0, RAM), "ALL with a size");
    refused(
        &c.unmap_dma(DMA_UNMAP_FLAG_ALL, 0x1000, 0),
        "ALL with an address",
    );
    refused(&c.unmap_dma(0, 0, 0), "size 0 without ALL");
    assert!(g.sync(&mut c, 2, false), "RAM is still there");
    taken(&c.unmap_dma(DMA_UNMAP_FLAG_ALL, 0, 0), "unmap all");
    g.sync_without_ram(&mut c, 3, 2);
    // The same ranges can be mapped again.
    taken(
        &c.map_dma(0, RAM, 0, Some(g.fd.as_raw_fd())),
        "RAM after unmap all",
    );
    assert!(g.sync(&mut c, 4, false));
    assert!(srv.alive().is_ok());
}

/// The DMA_UNMAP reply waits for a DMA that still uses the region, however long it takes:
/// here a COPY stalled (DEBUG_STALL_MS) for longer than the old 10 s give-up.
#[test]
fn dma_unmap_waits_for_a_stalled_copy() {
    let (mut srv, mut c, mut g) = start_rigged("unmapwait", Duration::from_secs(40));
    let m = g.m.clone();
    let mut t = Tables::new(&m, 0x10_0000);
    t.map_4k(&m, WQ_VA, WQ, false);
    t.map_4k(&m, CQ_VA, CQ, true);
    t.map_4k(&m, SRC_VA, SRC_GPA, false);
    t.map_4k(&m, DST_VA, DST_GPA, true);
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 13 % 251) as u8).collect();
    mem::write(&m, SRC_GPA, &data).unwrap();
    mem::write(&m, CTX_TABLE + 64, ctx_entry(t.root).as_bytes()).unwrap();
    g.post(&mut c, command(cmd::CTX_ENABLE, 1, 0, 0));
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
    c.write(BAR_REGS, reg::DEBUG_STALL_MS.into(), STALL_MS);
    c.write(BAR_DOORBELLS, 4096, 1);
    wait_until("the stall", || c.read(reg::DEBUG_STALL_MS) == 0);
    let t0 = Instant::now();
    let h = c.unmap_dma(0, 0, RAM);
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

/// The device keeps at most 1024 ranges without an fd and 64 distinct files behind its
/// DMA maps (spec §1, §1b); beyond that DMA_MAP is refused. Many small maps of one file
/// (as behind an IOMMU) are taken far past the old one-mmap-per-map bound. The map count
/// bound (65535) is said in the VERSION reply; reaching it is a unit test
/// (`mem::tests::map_count_is_bounded`), 65535 round trips being too slow here.
#[test]
fn dma_regions_are_bounded() {
    const BOUND: u64 = 1024;
    const FILES: u64 = 64;
    let (mut srv, mut c) = start("bounds");
    // The reply of a second VERSION, to see the capabilities.
    let caps = String::from_utf8_lossy(&c.version()[4..]).into_owned();
    assert!(caps.contains("\"max_dma_maps\":65535"), "{caps}");

    let rom = 1u64 << 40;
    for i in 0..BOUND {
        taken(
            &c.map_dma(rom + i * 0x1000, 0x1000, 0, None),
            "a range without fd",
        );
    }
    refused(
        &c.map_dma(rom + BOUND * 0x1000, 0x1000, 0, None),
        "range 1025",
    );
    // 4096 page maps of one memfd, each with its own fd as QEMU sends them.
    let fd = memfd(4 * BOUND * 0x1000);
    let base = 1u64 << 41;
    for i in 0..4 * BOUND {
        taken(
            &c.map_dma(base + i * 0x1000, 0x1000, i * 0x1000, Some(fd.as_raw_fd())),
            "a page map of one memfd",
        );
    }
    // 63 more files, then one too many.
    let files: Vec<_> = (1..FILES).map(|_| memfd(0x1000)).collect();
    let other = 1u64 << 42;
    for (i, f) in files.iter().enumerate() {
        taken(
            &c.map_dma(other + i as u64 * 0x1000, 0x1000, 0, Some(f.as_raw_fd())),
            "a map of another file",
        );
    }
    let extra = memfd(0x1000);
    let at = other + FILES * 0x1000;
    refused(
        &c.map_dma(at, 0x1000, 0, Some(extra.as_raw_fd())),
        "file 65",
    );
    // Room again once every map of a file is gone.
    taken(&c.unmap_dma(0, other, 0x1000), "the only map of a file");
    taken(
        &c.map_dma(at, 0x1000, 0, Some(extra.as_raw_fd())),
        "a file after an unmap",
    );
    taken(&c.unmap_dma(0, rom, 0x1000), "one range");
    taken(
        &c.map_dma(rom + BOUND * 0x1000, 0x1000, 0, None),
        "a range after an unmap",
    );
    assert!(c.answers());
    assert!(srv.alive().is_ok());
}
