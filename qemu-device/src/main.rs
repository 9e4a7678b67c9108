//! `mnic-device serve --socket PATH [--control PATH] [--strict]`: the vfio-user server.
//! `mnic-device stats --control PATH`: print the device counters.

use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use mnic_device::control;
use mnic_device::device::{Counters, Device};
use mnic_device::server::Server;

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
    let (stream, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    eprintln!("mnic-device: client connected");
    let mut server = Server::new(stream, Device::new(counters, a.strict));
    let r = server.run();
    let (regions, mapped) = server.dma_regions();
    eprintln!("mnic-device: {regions} DMA regions at exit, {mapped} mapped");
    let _ = std::fs::remove_file(socket);
    r.map_err(|e| format!("protocol error: {e}"))?;
    eprintln!("mnic-device: client disconnected");
    Ok(())
}

fn main() -> ExitCode {
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
