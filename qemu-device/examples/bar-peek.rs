//! Guest helper (the test kernel has no /dev/mem): `bar-peek RESOURCE_FILE OFFSET [VALUE]`
//! maps a PCI sysfs `resourceN` file and reads (or writes) one 32-bit register.
//! Build it static: `RUSTFLAGS="-C target-feature=+crt-static" cargo build --release
//! --example bar-peek --target x86_64-unknown-linux-gnu`.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::process::ExitCode;

fn parse(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(path), Some(off)) = (args.get(1), args.get(2).and_then(|s| parse(s))) else {
        eprintln!("usage: bar-peek RESOURCE_FILE OFFSET [VALUE]");
        return ExitCode::from(2);
    };
    let value = args.get(3).and_then(|s| parse(s));
    let file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("bar-peek: {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let page = 4096u64;
    let base = off & !(page - 1);
    let Ok(moff) = libc::off_t::try_from(base) else {
        return ExitCode::FAILURE;
    };
    if off % 4 != 0 {
        eprintln!("bar-peek: offset must be 4-byte aligned");
        return ExitCode::FAILURE;
    }
    // SAFETY: a fresh shared mapping of one page of the BAR chosen by the kernel; checked
    // for failure before use.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            page as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            moff,
        )
    };
    if p == libc::MAP_FAILED {
        eprintln!("bar-peek: mmap: {}", std::io::Error::last_os_error());
        return ExitCode::FAILURE;
    }
    // SAFETY: `off - base` < page and 4-byte aligned, so the register lies inside the
    // mapping; MMIO needs volatile accesses.
    unsafe {
        let r = p.cast::<u8>().add((off - base) as usize).cast::<u32>();
        if let Some(v) = value {
            std::ptr::write_volatile(r, v as u32);
        }
        println!("0x{:08X}", std::ptr::read_volatile(r));
        libc::munmap(p, page as usize);
    }
    ExitCode::SUCCESS
}
