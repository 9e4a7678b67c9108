//! The complete host sequence against the real `mnic-device` binary, with this test
//! as the vfio-user client (no QEMU): guest RAM is a memfd shared with DMA_MAP, MSI-X
//! goes through eventfds from SET_IRQS, and the test plays the driver by writing
//! tables and rings into the memfd and registers over REGION_WRITE.

mod common;

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use common::guest::{command, completion_at, ctx_entry, event_at, try_enable, Cmdq};
use common::guest::{CQ, CQ_VA, CTX_TABLE, DST_GPA, DST_VA, RAM, ROM};
use common::guest::{SRC_GPA, SRC_VA, SYNC_WORD, WQ, WQ_VA};
use common::{msix_irqs_req, stat, stats, unmap_req, wait_until};
use mnic_abi::{cmd, completion, control, error, event, reg, status};
use mnic_abi::{CtxEntry, WorkDesc, BAR_DOORBELLS, BAR_REGS, CMD_FLAG_IRQ};
use mnic_device::mem::{self, GuestRam};
use mnic_device::proto;
use mnic_device::testkit::{memfd, Harness, Tables};
use vmm_sys_util::eventfd::EventFd;
use zerocopy::IntoBytes;

fn wait_irq(e: &EventFd, what: &str) {
    wait_until(what, || e.read().is_ok());
}

#[test]
fn fault_resume_sync_and_hostile_tables() {
    let dir = common::tmpdir("host");
    let (_server, mut c, ctl) = common::start(&dir, &["--strict"]);
    c.version();

    // Guest RAM: a memfd the test maps too (the "guest" side), and a ROM range
    // without fd.
    let fd: OwnedFd = memfd(RAM);
    let ram = GuestRam::new();
    ram.map_fd(0, RAM, fd.try_clone().unwrap(), 0, true)
        .unwrap();
    let m = ram.snapshot();
    c.dma_map(0, RAM, 0, Some(fd.as_raw_fd()));
    c.dma_map(ROM, 0x1_0000, 0, None);

    // MSI-X: two eventfds.
    let irq_ev = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let irq_cmd = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    c.ok_fds(
        proto::cmd::DEVICE_SET_IRQS,
        &msix_irqs_req(0, 2),
        &[irq_ev.as_raw_fd(), irq_cmd.as_raw_fd()],
    );

    // Context 1: tables, queues, data.
    let mut t = Tables::new(&m, 0x10_0000);
    t.map_4k(&m, WQ_VA, WQ, false);
    t.map_4k(&m, CQ_VA, CQ, true);
    t.map_range(&m, SRC_VA, SRC_GPA, 2 * 4096, false);
    t.map_4k(&m, DST_VA, DST_GPA, true); // the second DST page is missing
    let data: Vec<u8> = (0..8192u32).map(|i| (i * 13 % 251) as u8).collect();
    mem::write(&m, SRC_GPA, &data).unwrap();
    let entry = ctx_entry(t.root);
    mem::write(&m, CTX_TABLE + 64, entry.as_bytes()).unwrap();

    // Registers, enable in strict mode.
    try_enable(&mut c, control::ENABLE | control::STRICT).unwrap();
    assert_eq!(c.read(reg::STATUS), status::ENABLED);
    // Bus mastering is off after reset (spec §3): with memory decoding alone, a doorbell
    // makes the device do nothing at all.
    c.pci_command(0x0002);
    let mut q = Cmdq { tail: 0 };
    q.ring(&mut c, &m, command(cmd::CTX_ENABLE, 1, 0, 0));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        c.read(reg::CMDQ_HEAD),
        0,
        "a command ran without bus mastering"
    );
    assert!(stat(&stats(&ctl), "dma_refused") >= 1);
    // What the driver's probe does (pci_set_master): the command runs now.
    c.pci_command(0x0006);
    q.wait(&mut c);

    // COPY of two pages through the doorbell: the second destination page faults.
    let d = Harness::copy_desc(SRC_VA, DST_VA, 8192, 0xabc);
    mem::write(&m, WQ, d.as_bytes()).unwrap();
    c.write(BAR_DOORBELLS, 4096, 1);
    wait_irq(&irq_ev, "the fault interrupt");
    let f = event_at(&m, 0);
    assert_eq!(f.flags & event::FLAG_PHASE, 1);
    assert_eq!(
        (f.kind, f.ctx, f.code),
        (event::FAULT, 1, event::FAULT_NOT_PRESENT)
    );
    assert_eq!(
        (f.addr, f.flags & event::FLAG_WRITE),
        (DST_VA + 4096, event::FLAG_WRITE)
    );
    assert_ne!(f.id, 0);
    c.write(BAR_REGS, reg::EVQ_HEAD.into(), 1);
    assert_eq!(completion_at(&m, 0).flags, 0, "no completion while parked");

    // The driver fills the entry and resumes.
    t.map_4k(&m, DST_VA + 4096, DST_GPA + 4096, true);
    q.post(&mut c, &m, command(cmd::RESUME, 1, f.id, 0));
    wait_until("the completion", || {
        completion_at(&m, 0).flags & completion::FLAG_PHASE != 0
    });
    let cp = completion_at(&m, 0);
    assert_eq!((cp.tag, cp.status, cp.bytes), (0xabc, completion::OK, 8192));
    let mut out = vec![0u8; 8192];
    mem::read(&m, DST_GPA, &mut out).unwrap();
    assert_eq!(out, data);
    wait_until("WORK_DONE", || event_at(&m, 1).kind == event::WORK_DONE);
    c.write(BAR_REGS, reg::EVQ_HEAD.into(), 2);

    // INVALIDATE_RANGE + SYNC with the IRQ flag: the value lands, vector 1 fires.
    q.post(&mut c, &m, command(cmd::INVALIDATE_RANGE, 1, DST_VA, 8192));
    let mut sync = command(cmd::SYNC, 0, SYNC_WORD, 0x5eed);
    sync.flags = CMD_FLAG_IRQ;
    q.post(&mut c, &m, sync);
    wait_irq(&irq_cmd, "the SYNC interrupt");
    assert_eq!(mem::load_u64(&m, SYNC_WORD).unwrap(), 0x5eed);

    let st = stats(&ctl);
    assert_eq!(stat(&st, "faults"), 1, "{st}");
    assert_eq!(stat(&st, "resumes"), 1);
    assert!(stat(&st, "syncs") >= 1);
    assert_eq!(stat(&st, "stale_accesses"), 0);
    assert_eq!(stat(&st, "work_completed"), 1);
    assert_eq!(stat(&st, "errors"), 0);

    // Hostile: context 2's root outside RAM, context 3's root in the fd-less ROM.
    for (ctx, root) in [(2u64, 1u64 << 40), (3, ROM)] {
        let e = CtxEntry { root, ..entry };
        mem::write(&m, CTX_TABLE + 64 * ctx, e.as_bytes()).unwrap();
        q.post(&mut c, &m, command(cmd::CTX_ENABLE, ctx as u16, 0, 0));
    }
    wait_until("two ERROR events", || event_at(&m, 3).kind == event::ERROR);
    for i in [2, 3] {
        let e = event_at(&m, i);
        assert_eq!((e.kind, e.code), (event::ERROR, error::ADDRESS_ERROR));
    }
    // A leaf of context 1 pointing into ROM: the copy fails with TABLE_ERROR.
    t.map_4k(&m, SRC_VA, ROM, false);
    q.post(&mut c, &m, command(cmd::INVALIDATE_CTX, 1, 0, 0));
    mem::write(&m, WQ + 64, WorkDesc { tag: 0xbad, ..d }.as_bytes()).unwrap();
    c.write(BAR_DOORBELLS, 4096, 2);
    wait_until("the failed completion", || {
        completion_at(&m, 1).flags & completion::FLAG_PHASE != 0
    });
    let cp = completion_at(&m, 1);
    assert_eq!(
        (cp.tag, cp.status, cp.fault_va),
        (0xbad, completion::TABLE_ERROR, SRC_VA)
    );

    // The device still serves.
    assert_eq!(c.read(reg::ID), mnic_abi::MNIC_ID_VALUE);
    assert_eq!(c.read(reg::STATUS), status::ENABLED);
    q.post(&mut c, &m, command(cmd::SYNC, 0, SYNC_WORD, 2));
    assert_eq!(mem::load_u64(&m, SYNC_WORD).unwrap(), 2);
    let st = stats(&ctl);
    assert_eq!(stat(&st, "errors"), 3, "{st}");
    assert_eq!(stat(&st, "stale_accesses"), 0);

    // DMA_UNMAP of RAM is answered (after draining); then the device has no RAM.
    c.ok(proto::cmd::DMA_UNMAP, &unmap_req(0, 0, RAM));
    c.write(BAR_DOORBELLS, 4096, 3);
    assert_eq!(c.read(reg::ID), mnic_abi::MNIC_ID_VALUE);
    c.s.flush().unwrap();
}
