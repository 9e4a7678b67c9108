//! `mnic-device serve --socket PATH [--control PATH] [--strict] [--engine-pid PATH]
//! [--spin-us N]`: the vfio-user server, as a supervisor (it owns the socket, see
//! `supervisor`) of the engine. `--spin-us` is how long the data thread polls shadow
//! pages after its last work (spec §4a; default 200, 0 = never).
//! `mnic-device stats --control PATH`: print the device counters, then the PUT/GET
//! statistics (`rma_*` lines, docs/fabric.md 14.13).
//! `mnic-device engine --fd N [--control PATH] [--strict] [--spin-us N]` (internal): the
//! engine, serving the supervisor on the inherited socket N.
//!
//! Fabric options (docs/fabric.md; off unless `--fabric-node` is given): `--fabric-node
//! ID`, `--fabric-bind ADDR:PORT` (default 127.0.0.1:0), `--fabric-peer ID=ADDR:PORT`
//! (repeated), `--fabric-allow-remote` (addresses outside loopback), and for tests
//! `--fabric-drop P`, `--fabric-dup P`, `--fabric-reorder P`, `--fabric-seed N`. The
//! supervisor checks them and passes them on to the engine, which runs the transport
//! and hands it to the data thread (PUT, GET and the target's side of them).

use std::io::IsTerminal;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::Duration;

use mnic_device::control;
use mnic_device::counters::Counters;
use mnic_device::engine::{Engine, DEFAULT_SPIN};
use mnic_device::fabric::{FabricArgs, Transport};
use mnic_device::mem::{file::MAX_FILES, GuestRam};
use mnic_device::mmio::Mmio;
use mnic_device::server::Server;
use mnic_device::shared::Shared;
use mnic_device::supervisor;

const USAGE: &str = "usage: mnic-device serve --socket PATH [--control PATH] [--strict] [--engine-pid PATH] [--spin-us N]\n           [--fabric-node ID [--fabric-bind ADDR:PORT] [--fabric-peer ID=ADDR:PORT]... [--fabric-allow-remote]\n            [--fabric-drop P] [--fabric-dup P] [--fabric-reorder P] [--fabric-seed N]]\n       mnic-device stats --control PATH";

struct Args {
    cmd: String,
    socket: Option<PathBuf>,
    control: Option<PathBuf>,
    strict: bool,
    engine_pid: Option<PathBuf>,
    fd: Option<RawFd>,
    /// `--spin-us`: `None` leaves the device's default.
    spin_us: Option<u64>,
    /// `--fabric-*`: none given, no fabric.
    fabric: FabricArgs,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args_os().skip(1);
    let cmd = it
        .next()
        .and_then(|s| s.into_string().ok())
        .ok_or("missing subcommand")?;
    let mut a = Args {
        cmd,
        socket: None,
        control: None,
        strict: false,
        engine_pid: None,
        fd: None,
        spin_us: None,
        fabric: FabricArgs::default(),
    };
    while let Some(arg) = it.next() {
        match arg.to_str() {
            Some("--socket") => a.socket = Some(it.next().ok_or("--socket needs a path")?.into()),
            Some("--control") => {
                a.control = Some(it.next().ok_or("--control needs a path")?.into())
            }
            Some("--strict") => a.strict = true,
            Some("--engine-pid") => {
                a.engine_pid = Some(it.next().ok_or("--engine-pid needs a path")?.into())
            }
            Some("--spin-us") => {
                let n = it.next().and_then(|s| s.to_str()?.parse().ok());
                a.spin_us = Some(n.ok_or("--spin-us needs a number of microseconds")?);
            }
            Some("--fd") => {
                let n = it.next().and_then(|s| s.to_str()?.parse().ok());
                a.fd = Some(
                    n.filter(|&n: &RawFd| n > 2)
                        .ok_or("--fd needs a number > 2")?,
                );
            }
            Some(f) if f.starts_with("--fabric-") => {
                let mut rest = (&mut it).map_while(|s| s.into_string().ok());
                if !a.fabric.take(f, &mut rest).map_err(|e| e.to_string())? {
                    return Err(format!("unknown argument {arg:?}"));
                }
            }
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    Ok(a)
}

/// The supervisor: owns the socket, runs the engine as its child.
fn serve(a: &Args) -> Result<(), String> {
    let socket = a.socket.as_ref().ok_or("serve needs --socket")?;
    // This very binary, even if its file was replaced since it started (named as this
    // process was, for `ps`).
    let mut engine = Command::new("/proc/self/exe");
    if let Some(name) = std::env::args_os().next() {
        engine.arg0(name);
    }
    engine.arg("engine");
    if let Some(ctl) = &a.control {
        engine.arg("--control").arg(ctl);
    }
    if a.strict {
        engine.arg("--strict");
    }
    if let Some(us) = a.spin_us {
        engine.arg("--spin-us").arg(us.to_string());
    }
    // Refused here, before QEMU connects, rather than by an engine that then dies.
    a.fabric.config().map_err(|e| e.to_string())?;
    engine.args(a.fabric.raw());
    supervisor::serve(socket, engine, a.engine_pid.as_deref())
}

extern "C" fn on_sigterm(_: libc::c_int) {
    // SAFETY: _exit is async-signal-safe; SIGTERM is a clean shutdown (exit 0).
    unsafe { libc::_exit(0) }
}

/// The engine: the device model, serving the supervisor's end of a socketpair.
fn engine(a: &Args) -> Result<(), String> {
    let fd = a.fd.ok_or("engine needs --fd")?;
    // SAFETY: `fd` is the socketpair end the supervisor left open for this process; it is
    // used for nothing else here, so the stream is its only owner.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    // SAFETY: installing a handler that only calls the async-signal-safe _exit.
    unsafe {
        libc::signal(
            libc::SIGTERM,
            on_sigterm as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
    let counters = Arc::new(Counters::default());
    let sh = Shared::new(counters.clone(), a.strict);
    if let Some(ctl) = &a.control {
        control::spawn(ctl, counters.clone(), sh.rma.clone())
            .map_err(|e| format!("control socket {}: {e}", ctl.display()))?;
    }
    // The data thread serves the fabric: the node's packets are its DMA too.
    let fabric = match a.fabric.config().map_err(|e| e.to_string())? {
        Some(cfg) => {
            let t = Transport::start(&cfg, Some(counters.clone()))
                .map_err(|e| format!("fabric socket {}: {e}", cfg.bind))?;
            tracing::info!(node = cfg.node, addr = ?t.local_addr().ok(), "fabric transport up");
            Some(t)
        }
        None => None,
    };
    // One fd per DMA region is held here, in the engine.
    raise_fd_limit();
    let ram = Arc::new(GuestRam::new());
    let spin = a.spin_us.map_or(DEFAULT_SPIN, Duration::from_micros);
    let engine = Engine::spawn(sh.clone(), ram.clone(), spin, fabric)
        .map_err(|e| format!("data thread: {e}"))?;
    let mut server = Server::new(stream, Mmio::new(sh), engine, ram);
    let r = server.run();
    let (regions, mapped) = server.dma_regions();
    tracing::info!(regions, mapped, "DMA regions at exit");
    let gone = server.data_thread_gone();
    drop(server);
    r.map_err(|e| {
        if gone {
            e.to_string()
        } else {
            format!("protocol error: {e}")
        }
    })
}

/// Makes room for the file descriptors the device may hold: one per file behind its DMA
/// maps (up to `MAX_FILES`), the MSI-X eventfds, one message's fds and the sockets. The soft limit
/// is raised (within the hard one) if it is lower.
fn raise_fd_limit() {
    let want = (MAX_FILES + 64) as libc::rlim_t;
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `rl`, a live local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 || rl.rlim_cur >= want {
        return;
    }
    rl.rlim_cur = want.min(rl.rlim_max);
    // SAFETY: setrlimit reads one rlimit from `rl`, a live local.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) } != 0 {
        tracing::warn!(
            "cannot raise the fd limit: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Logs to stderr, filtered by RUST_LOG (default: warnings and errors); colours only on a
/// terminal (`mnic-vm` sends it to a log file).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn main() -> ExitCode {
    init_tracing();
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("mnic-device: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let r = match a.cmd.as_str() {
        "serve" => serve(&a),
        "engine" => engine(&a),
        "stats" => a
            .control
            .as_ref()
            .ok_or_else(|| "stats needs --control".to_string())
            .and_then(|p| control::query_stats(p).map_err(|e| format!("{}: {e}", p.display())))
            .map(|s| print!("{s}")),
        other => Err(format!("unknown subcommand {other:?}\n{USAGE}")),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mnic-device: {e}");
            ExitCode::FAILURE
        }
    }
}
