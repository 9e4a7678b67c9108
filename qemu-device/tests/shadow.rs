//! Shadow doorbells against the real `mnic-device` binary (spec §4a), with this test as
//! the vfio-user client and the driver: the command queue's shadow page, posts by the
//! producer's rule, and `serve --spin-us` reaching the engine (0: the page never says
//! `polling`; a long budget: it does, and posts stop ringing the register).

mod common;

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{fence, Ordering};

use common::guest::{command, try_enable, CMDQ, RAM, SYNC_WORD};
use common::{stat, stats, wait_until, Client};
use mnic_abi::{cmd, control, reg, status, Shadow, BAR_REGS};
use mnic_device::mem::{self, GuestMem, GuestRam};
use mnic_device::testkit::{memfd, CMD_SHADOW};
use zerocopy::IntoBytes;

/// The driver's command queue with a shadow page, posting by the producer's rule.
struct ShadowCmdq {
    tail: u32,
    /// Posts that rang `CMDQ_TAIL` too.
    rung: u64,
}

impl ShadowCmdq {
    /// Posts a SYNC writing `v` and waits until it landed; returns the `polling` word
    /// read just after, while the device had just worked.
    fn sync(&mut self, c: &mut Client, m: &GuestMem, v: u64) -> u32 {
        let s = command(cmd::SYNC, 0, SYNC_WORD, v);
        mem::write(m, CMDQ + 32 * u64::from(self.tail), s.as_bytes()).unwrap();
        self.tail = (self.tail + 1) % 16;
        mem::store_u32(m, CMD_SHADOW + Shadow::TAIL_OFFSET as u64, self.tail).unwrap();
        fence(Ordering::SeqCst);
        let polling = mem::load_u32(m, CMD_SHADOW + Shadow::POLLING_OFFSET as u64).unwrap();
        if Shadow::doorbell_needed(polling, false) {
            c.write(BAR_REGS, reg::CMDQ_TAIL.into(), self.tail);
            self.rung += 1;
        }
        wait_until("SYNC", || mem::load_u64(m, SYNC_WORD).unwrap() == v);
        mem::load_u32(m, CMD_SHADOW + Shadow::POLLING_OFFSET as u64).unwrap()
    }
}

/// A device started with `args`, enabled with the command queue's shadow page, bus
/// mastering on. Returns what the caller needs to keep.
fn device(name: &str, args: &[&str]) -> (common::Served, Client, std::path::PathBuf, GuestRam) {
    let dir = common::tmpdir(name);
    let (server, mut c, ctl) = common::start(&dir, args);
    c.version();
    let fd: OwnedFd = memfd(RAM);
    let ram = GuestRam::new();
    ram.map_fd(0, RAM, fd.try_clone().unwrap(), 0, true)
        .unwrap();
    c.dma_map(0, RAM, 0, Some(fd.as_raw_fd()));
    c.write(BAR_REGS, reg::SHADOW_BASE_LO.into(), CMD_SHADOW as u32);
    try_enable(&mut c, control::ENABLE).unwrap();
    assert_eq!(c.read(reg::STATUS), status::ENABLED);
    c.pci_command(0x0006);
    (server, c, ctl, ram)
}

#[test]
fn spin_zero_never_polls() {
    let (_server, mut c, ctl, ram) = device("shadow-spin0", &["--spin-us", "0"]);
    let m = ram.snapshot();
    let mut q = ShadowCmdq { tail: 0, rung: 0 };
    for v in 1..=20 {
        assert_eq!(q.sync(&mut c, &m, v), 0, "polling set with --spin-us 0");
    }
    let s = stats(&ctl);
    assert_eq!(q.rung, 20, "every post rings");
    assert_eq!(stat(&s, "doorbells"), 20);
    assert_eq!(stat(&s, "syncs"), 20);
    assert!(stat(&s, "sleeps") >= 1);
    assert!(stat(&s, "device_cpu_us") > 0);
}

#[test]
fn a_spinning_device_saves_doorbells() {
    // A budget long enough that the device is still polling when the next post comes,
    // however slow this machine is.
    let (_server, mut c, ctl, ram) = device("shadow-spin", &["--spin-us", "2000000"]);
    let m = ram.snapshot();
    let mut q = ShadowCmdq { tail: 0, rung: 0 };
    assert_eq!(q.sync(&mut c, &m, 1), 1, "polling after work");
    for v in 2..=20 {
        q.sync(&mut c, &m, v);
    }
    let s = stats(&ctl);
    assert!(q.rung < 20, "posts while polling need no doorbell");
    assert_eq!(stat(&s, "doorbells"), q.rung);
    assert_eq!(stat(&s, "syncs"), 20);
    assert_eq!(stat(&s, "shadow_tails"), 20, "one tail change per post");
}
