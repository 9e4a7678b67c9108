//! `mnic-device serve --socket PATH [--control PATH] [--strict]`: the vfio-user server.
//! `mnic-device stats --control PATH`: print the device counters.

use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use mnic_device::control;
use mnic_device::device::{Counters, Device};
use mnic_device::engine::Engine;
use mnic_device::mem::{GuestRam, MAX_REGIONS};
use mnic_device::server::Server;
use mnic_device::shared::Shared;

const USAGE: &str = "usage: mnic-device serve --socket PATH [--control PATH] [--strict]\n       mnic-device stats --control PATH";

struct Args {
    cmd: String,
    socket: Option<PathBuf>,
    control: Option<PathBuf>,
    strict: bool,
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
    };
    while let Some(arg) = it.next() {
        match arg.to_str() {
            Some("--socket") => a.socket = Some(it.next().ok_or("--socket needs a path")?.into()),
            Some("--control") => {
                a.control = Some(it.next().ok_or("--control needs a path")?.into())
            }
            Some("--strict") => a.strict = true,
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    Ok(a)
}

extern "C" fn on_sigterm(_: libc::c_int) {
    // SAFETY: _exit is async-signal-safe; SIGTERM is a clean shutdown (exit 0).
    unsafe { libc::_exit(0) }
}

fn serve(a: &Args) -> Result<(), String> {
    let socket = a.socket.as_ref().ok_or("serve needs --socket")?;
    // SAFETY: installing a handler that only calls the async-signal-safe _exit.
    unsafe {
        libc::signal(
            libc::SIGTERM,
            on_sigterm as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
    let counters = Arc::new(Counters::default());
    if let Some(ctl) = &a.control {
        control::spawn(ctl, counters.clone())
            .map_err(|e| format!("control socket {}: {e}", ctl.display()))?;
    }
    let _ = std::fs::remove_file(socket);
    let listener =
        UnixListener::bind(socket).map_err(|e| format!("bind {}: {e}", socket.display()))?;
    raise_fd_limit();
    let (stream, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    tracing::info!("client connected");
    let sh = Shared::new(counters, a.strict);
    let ram = Arc::new(GuestRam::new());
    let engine = Engine::spawn(sh.clone(), ram.clone()).map_err(|e| format!("data thread: {e}"))?;
    let mut server = Server::new(stream, Device::new(sh), engine, ram);
    let r = server.run();
    let (regions, mapped) = server.dma_regions();
    tracing::info!(regions, mapped, "DMA regions at exit");
    let gone = server.data_thread_gone();
    drop(server);
    let _ = std::fs::remove_file(socket);
    r.map_err(|e| {
        if gone {
            e.to_string()
        } else {
            format!("protocol error: {e}")
        }
    })?;
    tracing::info!("client disconnected");
    Ok(())
}

/// Makes room for the file descriptors the device may hold: one per DMA region (up to
/// `MAX_REGIONS`), the MSI-X eventfds, one message's fds and the sockets. The soft limit
/// is raised (within the hard one) if it is lower.
fn raise_fd_limit() {
    let want = (MAX_REGIONS + 64) as libc::rlim_t;
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

/// Logs to stderr, filtered by RUST_LOG (default: warnings and errors).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
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
