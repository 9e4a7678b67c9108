//! The device behind an IOMMU, against the real `mnic-device` binary with this test as
//! the vfio-user client: guest RAM reaches the device only as one DMA_MAP per 4 KiB IOVA
//! page, as QEMU sends them behind `intel-iommu` (spec §1b). A DMA to a page that is not
//! mapped is refused, reported and counted, and a DMA_UNMAP racing a COPY never lets the
//! copy write the page after the reply.

mod common;

use std::os::fd::{AsRawFd, OwnedFd};

use common::guest::{command, completion_at, ctx_entry, event_at, try_enable, Cmdq};
use common::guest::{CQ, CQ_VA, CTX_TABLE, RAM, WQ, WQ_VA};
use common::{stat, stats, unmap_req, wait_until, Client};
use mnic_abi::{cmd, completion, control, error, event, reg, status};
use mnic_abi::{BAR_DOORBELLS, BAR_REGS};
use mnic_device::mem::{self, GuestMem, GuestRam};
use mnic_device::proto;
use mnic_device::testkit::{memfd, Harness, Tables};
use zerocopy::IntoBytes;

const PAGE: u64 = 4096;
/// COPY source and destination: 4 MiB each, so a COPY takes several device steps.
const SRC_GPA: u64 = 0x40_0000;
const DST_GPA: u64 = 0x80_0000;
const LEN: u64 = 4 << 20;
const SRC_VA: u64 = 0x1_0000_0000;
const DST_VA: u64 = 0x2_0000_0000;

/// Guest RAM as the test (the guest's CPU) sees it, and the device, which gets every
/// page as its own map except those in `holes`.
struct Guest {
    fd: OwnedFd,
    m: std::sync::Arc<GuestMem>,
    _ram: GuestRam,
}

impl Guest {
    fn new(c: &mut Client, holes: &[u64]) -> Self {
        let fd = memfd(RAM);
        let ram = GuestRam::new();
        ram.map_fd(0, RAM, fd.try_clone().unwrap(), 0, true)
            .unwrap();
        for p in (0..RAM).step_by(PAGE as usize) {
            if !holes.contains(&p) {
                c.dma_map(p, PAGE, p, Some(fd.as_raw_fd()));
            }
        }
        let m = ram.snapshot();
        Guest { fd, m, _ram: ram }
    }

    /// Context 1 with its rings, SRC and DST mapped, the device enabled.
    fn setup(&self, c: &mut Client) -> Cmdq {
        let m = &self.m;
        let mut t = Tables::new(m, 0x10_0000);
        t.map_4k(m, WQ_VA, WQ, false);
        t.map_4k(m, CQ_VA, CQ, true);
        t.map_range(m, SRC_VA, SRC_GPA, LEN, false);
        t.map_range(m, DST_VA, DST_GPA, LEN, true);
        mem::write(m, CTX_TABLE + 64, ctx_entry(t.root).as_bytes()).unwrap();
        let data: Vec<u8> = (0..LEN).map(|i| (i % 253) as u8).collect();
        mem::write(m, SRC_GPA, &data).unwrap();
        try_enable(c, control::ENABLE).unwrap();
        assert_eq!(c.read(reg::STATUS), status::ENABLED);
        c.pci_command(0x0006);
        let mut q = Cmdq { tail: 0 };
        q.post(c, m, command(cmd::CTX_ENABLE, 1, 0, 0));
        q
    }

    /// Posts COPY `i` (SRC to DST, `LEN` bytes) and rings the doorbell.
    fn copy(&self, c: &mut Client, i: u64) {
        let d = Harness::copy_desc(SRC_VA, DST_VA, LEN as u32, 0x100 + i);
        mem::write(&self.m, WQ + 64 * i, d.as_bytes()).unwrap();
        c.write(BAR_DOORBELLS, PAGE, (i + 1) as u32);
    }

    fn completion(&self, i: u64) -> mnic_abi::Completion {
        wait_until("the completion", || {
            completion_at(&self.m, i).flags & completion::FLAG_PHASE != 0
        });
        completion_at(&self.m, i)
    }

    fn page(&self, gpa: u64) -> Vec<u8> {
        let mut b = vec![0u8; PAGE as usize];
        std::os::unix::fs::FileExt::read_exact_at(
            &std::fs::File::from(self.fd.try_clone().unwrap()),
            &mut b,
            gpa,
        )
        .unwrap();
        b
    }
}

/// A COPY into a page the guest never mapped for the device: refused before a byte of
/// that page moves, reported as ADDRESS_ERROR with the VA, counted in `dma_unmapped`;
/// the pages before it are copied.
#[test]
fn dma_to_an_unmapped_iova_is_refused_and_counted() {
    let dir = common::tmpdir("iova-refused");
    let (_server, mut c, ctl) = common::start(&dir, &[]);
    c.version();
    let hole = DST_GPA + 5 * PAGE;
    let g = Guest::new(&mut c, &[hole]);
    let st = stats(&ctl);
    assert_eq!(stat(&st, "dma_unmapped"), 0, "{st}");
    g.setup(&mut c);
    g.copy(&mut c, 0);
    let cp = g.completion(0);
    assert_eq!(
        (cp.tag, cp.status, cp.bytes, cp.fault_va),
        (0x100, completion::TABLE_ERROR, 5 * PAGE, DST_VA + 5 * PAGE)
    );
    let e = event_at(&g.m, 0);
    assert_eq!(
        (e.kind, e.ctx, e.code, e.addr),
        (event::ERROR, 1, error::ADDRESS_ERROR, DST_VA + 5 * PAGE)
    );
    assert!(g.page(hole).iter().all(|&b| b == 0), "the hole was written");
    let before: Vec<u8> = (4 * PAGE..5 * PAGE).map(|i| (i % 253) as u8).collect();
    assert_eq!(
        g.page(hole - PAGE),
        before,
        "the page before the hole was copied"
    );
    let st = stats(&ctl);
    assert_eq!(stat(&st, "dma_unmapped"), 1, "{st}");
    assert_eq!(stat(&st, "errors"), 1, "{st}");
    assert_eq!(c.read(reg::ERROR_CODE), error::ADDRESS_ERROR);
}

/// DMA_UNMAP of a destination page while COPYs run: each COPY either completes (then
/// before the reply) or fails with ADDRESS_ERROR; a sentinel the test writes into the
/// page once the reply is in is never overwritten.
#[test]
fn unmap_racing_a_copy_never_writes_after_the_reply() {
    let dir = common::tmpdir("iova-race");
    let (_server, mut c, ctl) = common::start(&dir, &[]);
    c.version();
    let g = Guest::new(&mut c, &[]);
    g.setup(&mut c);
    let file = std::fs::File::from(g.fd.try_clone().unwrap());
    let (mut ok, mut refused) = (0u64, 0u64);
    const ROUNDS: u64 = 12;
    for i in 0..ROUNDS {
        // Late pages first: the copy is more likely still running when they go.
        let victim = DST_GPA + LEN - (1 + i * 37) * PAGE;
        g.copy(&mut c, i);
        c.ok(proto::cmd::DMA_UNMAP, &unmap_req(0, victim, PAGE));
        std::os::unix::fs::FileExt::write_all_at(&file, &[0xee; PAGE as usize], victim).unwrap();
        let cp = g.completion(i);
        match cp.status {
            completion::OK => {
                assert_eq!(cp.bytes, LEN);
                ok += 1;
            }
            completion::TABLE_ERROR => {
                assert!(cp.bytes < LEN);
                refused += 1;
            }
            s => panic!("completion status {s}"),
        }
        assert!(
            g.page(victim).iter().all(|&b| b == 0xee),
            "round {i}: the COPY wrote the page after its DMA_UNMAP reply"
        );
        c.dma_map(victim, PAGE, victim, Some(g.fd.as_raw_fd()));
        c.write(BAR_REGS, reg::EVQ_HEAD.into(), 0);
    }
    let st = stats(&ctl);
    assert_eq!(stat(&st, "dma_unmapped"), refused, "{st}");
    eprintln!("{ROUNDS} rounds: {ok} copies completed before the unmap, {refused} refused");
}
