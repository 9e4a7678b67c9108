//! Remote memory access between two contexts on two devices that are nodes of one
//! fabric: the target registers a buffer for remote access and hands its region to the
//! initiator as text (as it would through a socket or a file), the initiator PUTs into
//! it and GETs it back; then shows that a deregistered key is refused.
//!
//! Usage: `put_get [INITIATOR TARGET]` (device indices, default 0 and 1: in a guest
//! started with `mnic-vm run --devices 2 --fabric`). Exits non-zero on any failure.

use std::process::ExitCode;
use std::time::Duration;

use mnic::{Access, Device, DmaBuffer, QueueConfig, RemoteError, RemoteRegion, Work};

const LEN: usize = 64 << 10;
const TIMEOUT: Option<Duration> = Some(Duration::from_secs(30));

fn main() -> ExitCode {
    match run() {
        Ok(()) => {
            println!("put_get: ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("put_get: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let initiator_index = args.next().map_or(Ok(0), |s| s.parse())?;
    let target_index = args.next().map_or(Ok(1), |s| s.parse())?;

    // The target: one context, one buffer registered for remote reads and writes. The
    // target's process never touches the buffer: its pages appear when the first PUT
    // faults them in at the target. Its queues must be set up (that enables the
    // context), even though it posts nothing: peers reach enabled contexts only.
    let target = Device::open_index(target_index)?;
    target.setup_queues(QueueConfig::default())?;
    let window = DmaBuffer::new(LEN)?;
    let reg = target.register(&window, Access::READ_WRITE | Access::REMOTE)?;
    let offer = reg
        .remote_region()
        .ok_or("the target device is not a node of a fabric")?
        .to_string();
    println!("target offers: {offer}");

    // The initiator: its own context on the other device, and the region read back
    // from the text the target handed over.
    let initiator = Device::open_index(initiator_index)?;
    initiator.setup_queues(QueueConfig::default())?;
    let region: RemoteRegion = offer.parse()?;
    let src = DmaBuffer::new(LEN)?;
    let back = DmaBuffer::new(LEN)?;
    let pattern: Vec<u8> = (0..LEN).map(|i| (i * 7 + 3) as u8).collect();
    src.write_from(0, &pattern);
    let _rs = initiator.register(&src, Access::READ)?;
    let _rb = initiator.register(&back, Access::WRITE)?;

    let bytes = initiator.run(&Work::put(&src, 0, &region, 0, LEN)?, TIMEOUT)?;
    println!("PUT {bytes} bytes to {}", region.endpoint);
    if window.to_vec() != pattern {
        return Err("the target's buffer does not hold what was PUT".into());
    }
    let bytes = initiator.run(&Work::get(&back, 0, &region, 0, LEN)?, TIMEOUT)?;
    println!("GET {bytes} bytes from {}", region.endpoint);
    if back.to_vec() != pattern {
        return Err("GET did not bring back what was PUT".into());
    }

    // Once the target deregisters, its key is dead: the same PUT is refused by the
    // target's device before it touches anything.
    reg.deregister()?;
    match initiator.run(&Work::put(&src, 0, &region, 0, 4096)?, TIMEOUT) {
        Err(e) if e.remote_error() == Some(RemoteError::BadKey) => {
            println!("PUT after deregistration: {e}");
            Ok(())
        }
        other => Err(format!("PUT after deregistration: expected BadKey, got {other:?}").into()),
    }
}
