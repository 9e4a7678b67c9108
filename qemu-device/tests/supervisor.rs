//! The device process as a supervisor and an engine (`qemu-device/src/supervisor.rs`):
//! when the engine dies, the device falls off the bus instead of closing QEMU's socket.
//! The test plays QEMU against the real `mnic-device serve` binary and kills the engine
//! by the PID it wrote (`--engine-pid`), as `mnic-vm run --kill-device-after` does.

mod common;

use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{msix_irqs_req, region_req, signal, start, start_with, tmpdir, u32s, unmap_req};
use common::{Client, TIMEOUT};
use mnic_abi::{reg, BAR_DOORBELLS, BAR_REGS, MNIC_ID_VALUE};
use mnic_device::proto::{self, cmd, FLAG_ERROR, FLAG_NO_REPLY};
use mnic_device::testkit::memfd;
use vmm_sys_util::eventfd::EventFd;

const ONES: u32 = 0xffff_ffff;

/// Starts the server with `--engine-pid`; returns the engine's PID too.
fn start_engine(dir: &Path, stderr: Option<Stdio>) -> (common::Served, Client, u32) {
    let pid_file = dir.join("engine.pid");
    let args = ["--engine-pid", pid_file.to_str().unwrap()];
    let (srv, mut c, _) = match stderr {
        Some(s) => start_with(dir, &args, s),
        None => start(dir, &args),
    };
    c.version();
    assert_eq!(c.read(reg::ID), MNIC_ID_VALUE, "the engine serves");
    let engine: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{engine}/stat")).unwrap();
    let ppid: u32 = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(ppid, srv.child.id(), "the engine is the supervisor's child");
    // The supervisor blocks SIGTERM (it reads it from a signalfd); its child must not.
    let status = std::fs::read_to_string(format!("/proc/{engine}/status")).unwrap();
    let blocked = status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .unwrap();
    assert_eq!(
        u64::from_str_radix(blocked.trim(), 16).unwrap(),
        0,
        "engine signal mask"
    );
    (srv, c, engine)
}

/// Waits (at most TIMEOUT) for `child` to exit.
fn wait_exit(child: &mut Child) -> ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(t.elapsed() < TIMEOUT, "process {} did not exit", child.id());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGTERM ends the supervisor with status 0, its engine gone and its socket removed.
fn terminate(srv: &mut common::Served, engine: u32) {
    assert!(signal(srv.child.id(), libc::SIGTERM));
    let st = wait_exit(&mut srv.child);
    assert!(st.success(), "{st:?}");
    assert!(!signal(engine, 0), "engine {engine} still exists");
    assert!(!srv.dir.join("dev.sock").exists());
}

fn is_error(c: &mut Client, command: u16, payload: &[u8]) -> Option<u32> {
    let (h, _) = c.call(command, payload);
    (h.flags & FLAG_ERROR != 0).then_some(h.error)
}

#[test]
fn killed_engine_falls_off_the_bus() {
    let dir = tmpdir("falloff");
    let (mut srv, mut c, engine) = start_engine(&dir, None);
    assert!(signal(engine, libc::SIGKILL));
    // The supervisor notices and reaps it (a zombie would still take signal 0).
    common::wait_until("the engine reaped", || !signal(engine, 0));

    // Reads return all ones: registers, doorbells, config space (vendor id too).
    assert_eq!(c.read(reg::ID), ONES);
    assert_eq!(c.region_read(BAR_DOORBELLS, 4096, 4), vec![0xff; 4]);
    assert_eq!(
        c.region_read(proto::PCI_CONFIG_REGION_INDEX, 0, 4),
        vec![0xff; 4]
    );
    assert_eq!(c.region_read(BAR_REGS, 0, 8), vec![0xff; 8]);
    // Writes get their normal reply and vanish; posted ones get none.
    c.write(BAR_REGS, reg::IRQ_MASK.into(), 3);
    let w = region_req(BAR_REGS, reg::CONTROL.into(), 4, &1u32.to_le_bytes());
    c.send(cmd::REGION_WRITE, FLAG_NO_REPLY, &w);
    assert_eq!(c.read(reg::IRQ_MASK), ONES);
    // An access the live device refuses is still refused.
    assert_eq!(
        is_error(
            &mut c,
            cmd::REGION_READ,
            &region_req(BAR_REGS, 0, 1 << 20, &[])
        ),
        Some(libc::EINVAL as u32)
    );
    // DMA_MAP (with its memfd), DMA_UNMAP (echoed), SET_IRQS (with eventfds), reset.
    let ram = memfd(1 << 20);
    c.dma_map(0, 1 << 20, 0, Some(ram.as_raw_fd()));
    let mut echo = u32s(&[24, 0]);
    echo.extend_from_slice(&0u64.to_le_bytes());
    echo.extend_from_slice(&(1u64 << 20).to_le_bytes());
    assert_eq!(c.ok(cmd::DMA_UNMAP, &unmap_req(0, 0, 1 << 20)), echo);
    let irqs = [0, 1].map(|_| EventFd::new(libc::EFD_NONBLOCK).unwrap());
    let fds = irqs.each_ref().map(|e| e.as_raw_fd());
    assert!(c
        .ok_fds(cmd::DEVICE_SET_IRQS, &msix_irqs_req(0, 2), &fds)
        .is_empty());
    assert!(c.ok(cmd::DEVICE_RESET, &[]).is_empty());
    // Anything else: ENODEV.
    assert_eq!(
        is_error(&mut c, cmd::DEVICE_GET_INFO, &u32s(&[16, 0, 0, 0])),
        Some(libc::ENODEV as u32)
    );
    // The socket stays open.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(c.read(reg::ID), ONES);
    terminate(&mut srv, engine);
}

#[test]
fn engine_killed_with_a_request_in_flight() {
    let dir = tmpdir("inflight");
    let log = dir.join("supervisor.log");
    let file = std::fs::File::create(&log).unwrap();
    let (mut srv, mut c, engine) = start_engine(&dir, Some(file.into()));
    // A stopped engine reads nothing: the next request stays in flight.
    assert!(signal(engine, libc::SIGSTOP));
    let req = region_req(BAR_REGS, reg::ID.into(), 4, &[]);
    let id = c.send(cmd::REGION_READ, 0, &req);
    // The supervisor has taken it off the socket (the client's queue is empty) ...
    common::wait_until("the supervisor to read the request", || outq(&c) == 0);
    // ... and it is unanswered.
    c.s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let early = c.s.read(&mut [0u8; 1]);
    assert!(
        early
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "a reply while the engine is stopped: {early:?}"
    );
    c.s.set_read_timeout(Some(TIMEOUT)).unwrap();
    assert!(signal(engine, libc::SIGKILL));
    let (h, p) = c.recv();
    assert_eq!(
        (h.msg_id, h.command, h.flags & FLAG_ERROR),
        (id, cmd::REGION_READ, 0)
    );
    assert_eq!(&p[..16], &req[..]);
    assert_eq!(&p[16..], &[0xff; 4]);
    assert_eq!(c.read(reg::ID), ONES);
    terminate(&mut srv, engine);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("the engine died") && text.contains("in_flight=1"),
        "{text}"
    );
}

#[test]
fn supervisor_ends_its_engine() {
    // On SIGTERM, engine alive.
    let (mut srv, _c, engine) = start_engine(&tmpdir("sigterm"), None);
    terminate(&mut srv, engine);
    // When QEMU disconnects.
    let (mut srv, c, engine) = start_engine(&tmpdir("disconnect"), None);
    drop(c);
    let st = wait_exit(&mut srv.child);
    assert!(st.success(), "{st:?}");
    assert!(!signal(engine, 0), "engine {engine} still exists");
}

/// Bytes the client sent that the supervisor has not read yet.
fn outq(c: &Client) -> libc::c_int {
    let mut n: libc::c_int = -1;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) on a socket we own writes one int.
    let r = unsafe { libc::ioctl(c.s.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    assert_eq!(r, 0, "SIOCOUTQ: {}", std::io::Error::last_os_error());
    n
}
