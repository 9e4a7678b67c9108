//! Register two buffers, let the device COPY between them, verify the data; then show
//! what happens when the device is pointed at memory no registration covers.
//!
//! Usage: `register_and_copy [N]` (device /dev/mnicN, default 0). Exits non-zero on
//! any failure.

use std::process::ExitCode;
use std::time::Duration;

use mnic::{Access, Device, DmaBuffer, QueueConfig, Work, WorkError};

const LEN: usize = 4 << 20;
const TIMEOUT: Option<Duration> = Some(Duration::from_secs(10));

fn main() -> ExitCode {
    match run() {
        Ok(()) => {
            println!("register_and_copy: ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("register_and_copy: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let n = std::env::args().nth(1).map_or(Ok(0), |s| s.parse())?;
    let ctx = Device::open_index(n)?;
    let info = ctx.info();
    println!(
        "/dev/mnic{n}: hw {}.{}, context {} of {}, caps {:?}",
        info.hw_major,
        info.hw_minor,
        info.ctx,
        info.num_contexts,
        info.caps.names()
    );
    ctx.setup_queues(QueueConfig::default())?;

    let src = DmaBuffer::new(LEN)?;
    let dst = DmaBuffer::new(LEN)?;
    let pattern: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
    src.write_from(0, &pattern);

    let rs = ctx.register(&src, Access::READ)?;
    let rd = ctx.register(&dst, Access::WRITE)?;
    println!(
        "registered src handle {}, dst handle {}",
        rs.handle(),
        rd.handle()
    );
    // Nothing is mapped on the device yet: registration does not fill the table.
    println!(
        "device entries before DMA: src {}, dst {}",
        rs.query()?.valid(),
        rd.query()?.valid()
    );

    let bytes = ctx.run(&Work::copy_buffers(&src, 0, &dst, 0, LEN)?, TIMEOUT)?;
    if bytes != LEN as u64 {
        return Err(format!("copied {bytes} bytes, expected {LEN}").into());
    }
    if dst.to_vec() != pattern {
        return Err("destination differs from source".into());
    }
    let s = ctx.ctx_stats()?;
    println!(
        "copied {bytes} bytes and verified; driver resolved {} faults ({} resumes), device entries now: src {}, dst {}",
        s.faults,
        s.resumes,
        rs.query()?.valid(),
        rd.query()?.valid()
    );

    // A COPY into memory that is not registered: the driver aborts the device's fault.
    let stray = DmaBuffer::new(4096)?;
    stray.fill(0xee);
    let done = {
        ctx.post(&Work::copy_buffers(&src, 0, &stray, 0, 4096)?)?;
        ctx.wait(TIMEOUT)?
    };
    match done.error {
        Some(WorkError::FaultAborted { errno }) => {
            println!(
                "copy into unregistered memory refused as expected: errno {errno}, fault at {:#x}",
                done.fault_va
            )
        }
        other => {
            return Err(format!(
                "copy into unregistered memory: expected FAULT_ABORTED, got {other:?}"
            )
            .into())
        }
    }
    if stray.to_vec().iter().any(|&b| b != 0xee) {
        return Err("unregistered memory was written".into());
    }

    // Deregistration tears the device entries down.
    rd.deregister()?;
    let after = ctx.query_buffer(&dst)?;
    println!("dst entries after deregister: {}", after.valid());
    if after.valid() != 0 {
        return Err("device entries survived deregistration".into());
    }
    Ok(())
}
