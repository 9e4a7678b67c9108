//! Registered memory stays swappable: register, DMA, swap the pages out with
//! MADV_PAGEOUT, see the device's entries go (QUERY) and the counters move, DMA again
//! and verify the data came back.
//!
//! Needs swap in the guest (zram) for the page-out to take effect; without it the
//! example says so and still checks the data. Usage: `survive_swapout [N]`.

use std::process::ExitCode;
use std::time::Duration;

use mnic::abi::counter;
use mnic::{Access, Context, Device, DmaBuffer, QueueConfig, Work};

const LEN: usize = 8 << 20;
const TIMEOUT: Option<Duration> = Some(Duration::from_secs(30));

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    match run() {
        Ok(()) => {
            println!("survive_swapout: ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("survive_swapout: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn entries(ctx: &Context, name: &str, b: &DmaBuffer) -> Res<u64> {
    let q = ctx.query_buffer(b)?;
    let (res, total) = b.resident_pages()?;
    println!(
        "  {name}: device entries {} (4K {}, 2M {}, writable {}), resident pages {res}/{total}",
        q.valid(),
        q.valid_4k,
        q.valid_2m,
        q.writable
    );
    Ok(q.valid())
}

fn copy_and_check(ctx: &Context, src: &DmaBuffer, dst: &DmaBuffer, expect: &[u8]) -> Res {
    dst.fill(0);
    ctx.run(&Work::copy_buffers(src, 0, dst, 0, LEN)?, TIMEOUT)?;
    if dst.to_vec() != expect {
        return Err("data after DMA differs".into());
    }
    Ok(())
}

fn run() -> Res {
    let n = std::env::args().nth(1).map_or(Ok(0), |s| s.parse())?;
    let ctx = Device::open_index(n)?;
    ctx.setup_queues(QueueConfig::default())?;

    let src = DmaBuffer::new(LEN)?;
    let dst = DmaBuffer::new(LEN)?;
    let pattern: Vec<u8> = (0..LEN)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1])
        .collect();
    src.write_from(0, &pattern);
    let _rs = ctx.register(&src, Access::READ)?;
    let _rd = ctx.register(&dst, Access::WRITE)?;

    println!("1. first DMA (device faults the pages in)");
    copy_and_check(&ctx, &src, &dst, &pattern)?;
    let before_src = entries(&ctx, "src", &src)?;
    entries(&ctx, "dst", &dst)?;
    if before_src == 0 {
        return Err("no device entries after a DMA".into());
    }

    let d0 = ctx.dev_stats()?;
    let c0 = ctx.ctx_stats()?;
    println!("2. MADV_PAGEOUT of src");
    src.pageout()?;
    let (res, total) = src.resident_pages()?;
    let after_src = entries(&ctx, "src", &src)?;
    let c1 = ctx.ctx_stats()?;
    let d1 = ctx.dev_stats()?.since(&d0);
    println!(
        "  driver: {} invalidations, {} entries cleared, {} SYNC waits; device: {} invalidations, {} syncs",
        c1.invalidations - c0.invalidations,
        c1.entries_invalidated - c0.entries_invalidated,
        c1.sync_waits - c0.sync_waits,
        d1.get(counter::INVALIDATIONS),
        d1.get(counter::SYNCS)
    );
    if res == total {
        println!("  note: nothing was paged out (no swap configured?); entries may stay");
    } else {
        // A page that left memory cannot keep a device entry.
        if after_src > res as u64 {
            return Err(format!("{after_src} device entries for {res} resident pages").into());
        }
        if c1.invalidations == c0.invalidations {
            return Err("page-out did not invalidate the device".into());
        }
    }

    println!("3. DMA again from the swapped-out source");
    let f0 = ctx.ctx_stats()?.faults;
    copy_and_check(&ctx, &src, &dst, &pattern)?;
    let f1 = ctx.ctx_stats()?.faults;
    println!("  data verified; {} device faults resolved", f1 - f0);
    entries(&ctx, "src", &src)?;

    println!("4. MADV_PAGEOUT of dst, then the device writes into it");
    dst.fill(0);
    dst.pageout()?;
    entries(&ctx, "dst", &dst)?;
    // The device writes into swapped-out pages: each write faults them back in.
    ctx.run(&Work::copy_buffers(&src, 0, &dst, 0, LEN)?, TIMEOUT)?;
    if dst.to_vec() != pattern {
        return Err("device write into swapped-out memory lost".into());
    }
    let d = ctx.dev_stats()?.since(&d0);
    println!(
        "  verified; device totals since step 2: faults {}, walks {}, stale accesses {}",
        d.get(counter::FAULTS),
        d.get(counter::WALKS),
        d.get(counter::STALE_ACCESSES)
    );
    if d.get(counter::STALE_ACCESSES) != 0 {
        return Err("the device reported stale accesses".into());
    }
    Ok(())
}
