//! Engine tests on a [`Harness`]: commands, events, contexts, work, faults.

use std::fs::File;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::time::{Duration, Instant};

use mnic_abi::{
    cmd, completion, control, counter, error, event, irq, oracle_op, reg, status, work,
};
use mnic_abi::{Command, WorkDesc, CMD_FLAG_IRQ, NUM_CONTEXTS};

use super::poll::Activity;
use crate::mem;
use crate::mmio::Mmio;
use crate::testkit::{oracle_call, Harness, CTX_TABLE, SYNC_WORD};

/// Source and destination VAs used by the tests. 1 GiB apart: their pages take distinct
/// slots of the TLB's front cache, so a repeated COPY goes through the hot path.
const SRC: u64 = 0x10_0000_0000;
const DST: u64 = SRC + (1 << 30);

/// A context with `pages` source pages (filled with a pattern) and `pages` writable
/// destination pages, all mapped. Returns (src_gpa, dst_gpa).
fn ctx_with_buffers(h: &mut Harness, ctx: u16, pages: u64) -> (u64, u64) {
    h.setup_ctx(ctx, 4, 4);
    let len = pages * 4096;
    let s = h.alloc(len, false);
    let d = h.alloc(len, false);
    h.map(ctx, SRC, s, len, false);
    h.map(ctx, DST, d, len, true);
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + u64::from(ctx)) as u8).collect();
    mem::write(&h.mem(), s, &data).unwrap();
    (s, d)
}

fn read(h: &Harness, gpa: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    mem::read(&h.mem(), gpa, &mut b).unwrap();
    b
}

#[test]
fn enable_validates_config() {
    let mut h = Harness::new(false);
    assert_eq!(h.reg(reg::STATUS) & status::ENABLED, status::ENABLED);
    h.write_reg(reg::CONTROL, control::RESET);
    assert_eq!(h.reg(reg::STATUS), 0);
    h.write_reg(reg::CMDQ_SIZE_LOG2, 13);
    h.write_reg(reg::EVQ_SIZE_LOG2, 6);
    h.write_reg(reg::CTX_TABLE_LO, CTX_TABLE as u32);
    h.write_reg(reg::CONTROL, control::ENABLE);
    assert_eq!(h.reg(reg::STATUS), 0, "ring size out of range");
    assert_eq!(h.reg(reg::ERROR_CODE), error::BAD_CONFIG);
    h.write_reg(reg::ERROR_CODE, 0);
    // Ring outside RAM.
    h.write_reg(reg::CMDQ_SIZE_LOG2, 4);
    h.write_reg(reg::CMDQ_BASE_HI, 1);
    h.write_reg(reg::CONTROL, control::ENABLE);
    assert_eq!(h.reg(reg::STATUS), 0);
    assert_eq!(h.reg(reg::ERROR_CODE), error::BAD_CONFIG);
    assert_eq!(h.reg(reg::ERROR_COUNT), 2);
    // A disabled device does nothing.
    assert_eq!(h.run(), Activity::Idle(None));
}

#[test]
fn copy_across_pages() {
    let mut h = Harness::new(true);
    let (s, d) = ctx_with_buffers(&mut h, 1, 4);
    // Unaligned on both sides, crossing three page boundaries.
    h.post(1, Harness::copy_desc(SRC + 100, DST + 7, 3 * 4096 + 5, 42));
    h.run();
    let c = h.completions(1);
    assert_eq!(c.len(), 1);
    assert_eq!(
        (c[0].tag, c[0].status, c[0].bytes),
        (42, completion::OK, 3 * 4096 + 5)
    );
    assert_eq!(
        read(&h, d + 7, 3 * 4096 + 5),
        read(&h, s + 100, 3 * 4096 + 5)
    );
    assert_eq!(read(&h, d, 7), vec![0; 7], "bytes before dst untouched");
    let ev = h.events();
    assert_eq!(ev.len(), 1);
    assert_eq!(
        (ev[0].kind, ev[0].ctx, ev[0].addr),
        (event::WORK_DONE, 1, 42)
    );
    assert_eq!(h.counter(counter::WORK_COMPLETED), 1);
    // The data, the descriptor fetch and the completion write.
    assert_eq!(h.counter(counter::DMA_BYTES), 3 * 4096 + 5 + 64 + 32);
    assert!(h.counter(counter::TLB_MISSES) >= 8);
    assert_eq!(h.counter(counter::STALE_ACCESSES), 0);
    assert_eq!(h.counter(counter::TLB_ENTRIES), h.core.tlb.len() as u64);
    // Again: the data pages hit the TLB now.
    let hits = h.counter(counter::TLB_HITS);
    h.post(1, Harness::copy_desc(SRC, DST, 4096, 43));
    h.run();
    assert_eq!(h.completions(1)[0].status, completion::OK);
    assert!(h.counter(counter::TLB_HITS) >= hits + 2);
}

/// A hot COPY (every page in the TLB's front cache) goes through runs of pages that are
/// contiguous on both sides; scattered pages must still land where the tables say.
#[test]
fn hot_copy_over_scattered_pages() {
    let mut h = Harness::new(true);
    h.setup_ctx(2, 4, 4);
    let pages = 8u64;
    let s = h.alloc(pages * 4096, false);
    let d = h.alloc(pages * 4096, false);
    // Source pages in reverse guest-physical order, pages 0..4 of the destination
    // contiguous and 4..8 swapped pairwise: runs break at different places per side.
    for p in 0..pages {
        h.map(2, SRC + p * 4096, s + (pages - 1 - p) * 4096, 4096, false);
        let q = if p < 4 { p } else { p ^ 1 };
        h.map(2, DST + p * 4096, d + q * 4096, 4096, true);
    }
    let data: Vec<u8> = (0..pages * 4096).map(|i| (i * 13 % 251) as u8).collect();
    mem::write(&h.mem(), s, &data).unwrap();
    let len = (pages - 1) * 4096 + 3;
    for tag in [1, 2] {
        let (hits, misses) = (h.counter(counter::TLB_HITS), h.counter(counter::TLB_MISSES));
        h.post(2, Harness::copy_desc(SRC + 5, DST + 2, len as u32, tag));
        h.run();
        let c = h.completions(2);
        assert_eq!((c[0].tag, c[0].status), (tag, completion::OK));
        if tag == 2 {
            assert_eq!(h.counter(counter::TLB_MISSES), misses, "all hot");
            // At least every page of each side, the descriptor and the completion (a
            // page split between two runs is looked up once per run).
            assert!(h.counter(counter::TLB_HITS) - hits >= 8 + 8 + 2);
        }
        // Byte by byte through the tables: VA x of the source holds what VA x of the
        // destination (shifted by 3) must hold now.
        let at = |base: u64, va_off: u64, rev: bool| {
            let p = va_off / 4096;
            let q = if rev {
                pages - 1 - p
            } else if p < 4 {
                p
            } else {
                p ^ 1
            };
            base + q * 4096 + va_off % 4096
        };
        for off in (0..len).step_by(97).chain([len - 1]) {
            let want = read(&h, at(s, 5 + off, true), 1);
            assert_eq!(read(&h, at(d, 2 + off, false), 1), want, "byte {off}");
        }
        mem::write(&h.mem(), d, &vec![0u8; (pages * 4096) as usize]).unwrap();
    }
}

/// A hot run of pages is judged as a whole: an invalidation the (buggy) TLB skipped in
/// the middle of it is still caught.
#[test]
fn stale_page_inside_a_hot_run_is_caught() {
    let mut h = Harness::new(false);
    let (_, _) = ctx_with_buffers(&mut h, 1, 8);
    h.core.tlb_mut().buggy_skip_invalidate = true;
    h.post(1, Harness::copy_desc(SRC, DST, 8 * 4096, 1));
    h.run();
    assert_eq!(h.completions(1)[0].status, completion::OK);
    h.command(cmd::INVALIDATE_RANGE, 1, DST + 5 * 4096, 4096);
    assert_eq!(h.sync(1), 1);
    h.post(1, Harness::copy_desc(SRC, DST, 8 * 4096, 2));
    h.run();
    assert_eq!(h.completions(1)[0].status, completion::OK);
    assert_eq!(h.counter(counter::STALE_ACCESSES), 1);
}

/// A page cached read-only (it was a COPY source) and then written by a COPY walks
/// again rather than passing through the hot path.
#[test]
fn hot_read_only_page_is_not_written() {
    let mut h = Harness::new(true);
    let (s, _) = ctx_with_buffers(&mut h, 1, 2);
    h.post(1, Harness::copy_desc(SRC, DST, 2 * 4096, 1));
    h.run();
    assert_eq!(h.completions(1)[0].status, completion::OK);
    let before = read(&h, s, 2 * 4096);
    h.post(1, Harness::copy_desc(DST, SRC, 2 * 4096, 2));
    h.run();
    let f = h.events().into_iter().find(|e| e.kind == event::FAULT);
    let f = f.expect("a permission fault");
    assert_eq!((f.code, f.addr), (event::FAULT_NOT_WRITABLE, SRC));
    assert_eq!(read(&h, s, 2 * 4096), before, "nothing written");
}

/// Guest RAM taken away (DMA_UNMAP) under a cached translation: the COPY stops with
/// TABLE_ERROR at that page, and its completion counts only the bytes really copied.
#[test]
fn copy_into_removed_ram_reports_what_was_copied() {
    use crate::testkit::RAM_SIZE;
    let extra = RAM_SIZE as u64;
    let ram = mem::GuestRam::anonymous(&[(0, RAM_SIZE), (extra, 0x1000)]).unwrap();
    let mut h = Harness::with_ram(ram, false);
    h.setup_ctx(1, 4, 4);
    let s = h.alloc(2 * 4096, false);
    let d = h.alloc(4096, false);
    h.map(1, SRC, s, 2 * 4096, false);
    h.map(1, DST, d, 4096, true);
    h.map(1, DST + 4096, extra, 4096, true);
    mem::write(&h.mem(), s, &[3u8; 2 * 4096]).unwrap();
    h.post(1, Harness::copy_desc(SRC, DST, 2 * 4096, 1));
    h.run();
    assert_eq!(h.completions(1)[0].status, completion::OK);
    assert_eq!(h.ram.unmap(extra, 0x1000), Ok(1));
    h.post(1, Harness::copy_desc(SRC, DST, 2 * 4096, 2));
    h.run();
    let c = h.completions(1);
    assert_eq!(
        (c[0].status, c[0].bytes, c[0].fault_va),
        (completion::TABLE_ERROR, 4096, SRC + 4096)
    );
    assert_eq!(read(&h, d, 4096), vec![3; 4096]);
}

#[test]
fn huge_page_copy() {
    let mut h = Harness::new(true);
    h.setup_ctx(0, 4, 4);
    let g = h.alloc(2 << 20, true);
    let m = h.mem();
    h.tables(0).map_2m(&m, 0x4000_0000, g, true);
    mem::write(&m, g + 0x1f_f000, &[9u8; 8192 - 4096]).unwrap();
    h.post(0, Harness::copy_desc(0x401f_f000, 0x4000_0000, 4096, 1));
    h.run();
    assert_eq!(h.completions(0)[0].status, completion::OK);
    assert_eq!(read(&h, g, 4096), vec![9; 4096]);
    assert_eq!(
        h.counter(counter::WALKS),
        3,
        "WQ, CQ and one walk for both sides"
    );
}

#[test]
fn fault_resume_keeps_other_contexts_running() {
    let mut h = Harness::new(true);
    let (s, d) = ctx_with_buffers(&mut h, 1, 3);
    ctx_with_buffers(&mut h, 2, 1);
    h.unmap(1, DST + 4096);
    h.post(1, Harness::copy_desc(SRC, DST, 3 * 4096, 7));
    h.post(2, Harness::copy_desc(SRC, DST, 4096, 8));
    h.run();
    let ev = h.events();
    let f: Vec<_> = ev.iter().filter(|e| e.kind == event::FAULT).collect();
    assert_eq!(f.len(), 1);
    let f = *f[0];
    assert_eq!(
        (f.ctx, f.code, f.addr),
        (1, event::FAULT_NOT_PRESENT, DST + 4096)
    );
    assert_eq!(f.flags & event::FLAG_WRITE, event::FLAG_WRITE);
    assert_ne!(f.id, 0);
    assert!(h.completions(1).is_empty(), "context 1 is parked");
    assert_eq!(h.completions(2)[0].status, completion::OK, "context 2 ran");
    assert_eq!(
        read(&h, d, 4096),
        read(&h, s, 4096),
        "bytes before the fault stay"
    );
    // A wrong id is a command error and changes nothing.
    h.command(cmd::RESUME, 1, f.id + 1, 0);
    h.run();
    let ev = h.events();
    assert_eq!(
        (ev[0].kind, ev[0].code),
        (event::ERROR, error::BAD_FAULT_ID)
    );
    assert!(h.completions(1).is_empty());
    // Still missing: RESUME faults again with a new id.
    h.command(cmd::RESUME, 1, f.id, 0);
    h.run();
    let f2 = h.events()[0];
    assert_eq!((f2.kind, f2.addr), (event::FAULT, DST + 4096));
    assert!(f2.id > f.id);
    // Fill the entry and resume.
    let d2 = h.alloc(4096, false);
    h.map(1, DST + 4096, d2, 4096, true);
    h.command(cmd::RESUME, 1, f2.id, 0);
    h.run();
    let c = h.completions(1);
    assert_eq!(
        (c[0].tag, c[0].status, c[0].bytes),
        (7, completion::OK, 3 * 4096)
    );
    assert_eq!(read(&h, d2, 4096), read(&h, s + 4096, 4096));
    assert_eq!(h.counter(counter::FAULTS), 2);
    assert_eq!(h.counter(counter::RESUMES), 2);
}

#[test]
fn permission_fault_then_upgrade() {
    let mut h = Harness::new(true);
    let (_, d) = ctx_with_buffers(&mut h, 3, 1);
    h.map(3, DST, d, 4096, false);
    h.post(3, Harness::copy_desc(SRC, DST, 64, 1));
    h.run();
    let f = h.events()[0];
    assert_eq!((f.kind, f.code), (event::FAULT, event::FAULT_NOT_WRITABLE));
    h.map(3, DST, d, 4096, true);
    h.command(cmd::RESUME, 3, f.id, 0);
    h.run();
    assert_eq!(h.completions(3)[0].status, completion::OK);
}

#[test]
fn abort_completes_with_errno() {
    let mut h = Harness::new(true);
    ctx_with_buffers(&mut h, 1, 2);
    h.unmap(1, SRC + 4096);
    h.post(1, Harness::copy_desc(SRC, DST, 2 * 4096, 5));
    h.run();
    let f = h.events()[0];
    assert_eq!((f.addr, f.flags & event::FLAG_WRITE), (SRC + 4096, 0));
    h.command(cmd::ABORT, 1, f.id, 14);
    h.run();
    let c = h.completions(1);
    assert_eq!(
        (c[0].status, c[0].detail, c[0].bytes, c[0].fault_va),
        (completion::FAULT_ABORTED, 14, 4096, SRC + 4096)
    );
    assert_eq!(h.counter(counter::ABORTS), 1);
    // The context moves on.
    h.post(1, Harness::copy_desc(SRC, DST, 16, 6));
    h.run();
    assert_eq!(h.completions(1)[0].tag, 6);
}

#[test]
fn aborted_fetch_disables_the_context() {
    let mut h = Harness::new(true);
    h.setup_ctx(4, 4, 4);
    h.unmap(4, crate::testkit::WQ_VA);
    h.post(4, WorkDesc::default());
    h.run();
    let f = h.events()[0];
    assert_eq!((f.kind, f.addr), (event::FAULT, crate::testkit::WQ_VA));
    h.command(cmd::ABORT, 4, f.id, 14);
    h.run();
    let e = h.events()[0];
    assert_eq!(
        (e.kind, e.code, e.ctx),
        (event::ERROR, error::BAD_CONTEXT, 4)
    );
    h.post(4, WorkDesc::default());
    assert_eq!(h.counter(counter::BAD_DOORBELL), 1);
    // RESUME of a disabled context's fault is a command error.
    h.command(cmd::RESUME, 4, f.id, 0);
    h.run();
    assert_eq!(h.events()[0].code, error::BAD_FAULT_ID);
}

#[test]
fn invalidate_and_sync() {
    let mut h = Harness::new(true);
    ctx_with_buffers(&mut h, 1, 4);
    h.post(1, Harness::copy_desc(SRC, DST, 4 * 4096, 1));
    h.run();
    let before = h.core.tlb.len();
    h.command(cmd::INVALIDATE_RANGE, 1, SRC + 4096, 2 * 4096);
    assert_eq!(h.sync(0xfeed), 0xfeed);
    assert_eq!(h.core.tlb.len(), before - 2);
    assert_eq!(h.counter(counter::TLB_ENTRIES), before as u64 - 2);
    h.command(cmd::INVALIDATE_CTX, 1, 0, 0);
    assert_eq!(h.sync(0xbeef), 0xbeef);
    assert_eq!(h.core.tlb.len(), 0);
    assert_eq!(h.counter(counter::INVALIDATIONS), 2);
    assert_eq!(h.counter(counter::SYNCS), 2);
    // Work after the SYNC walks again and is not stale.
    h.post(1, Harness::copy_desc(SRC, DST, 4 * 4096, 2));
    h.run();
    assert_eq!(h.completions(1).len(), 2);
    assert_eq!(h.counter(counter::STALE_ACCESSES), 0);
    assert_eq!(h.reg(reg::STATUS) & status::HALTED, 0);
}

#[test]
fn sync_with_irq_flag_signals_vector_1() {
    let mut h = Harness::new(true);
    let efd = vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let dup = efd.try_clone().unwrap();
    // SAFETY: the duplicated eventfd is owned by nobody else.
    let f = unsafe { File::from_raw_fd(dup.into_raw_fd()) };
    h.core.shared().set_msix(1, Some(f));
    h.cmd(Command {
        opcode: cmd::SYNC,
        flags: CMD_FLAG_IRQ,
        arg0: SYNC_WORD,
        arg1: 77,
        ..Default::default()
    });
    h.run();
    assert_eq!(mem::load_u64(&h.mem(), SYNC_WORD).unwrap(), 77);
    assert_eq!(h.reg(reg::IRQ_STATUS) & irq::CMD_DONE, irq::CMD_DONE);
    assert_eq!(efd.read().unwrap(), 1);
    // Masked: status set, no interrupt.
    h.write_reg(reg::IRQ_STATUS, irq::CMD_DONE);
    h.write_reg(reg::IRQ_MASK, irq::CMD_DONE);
    h.cmd(Command {
        opcode: cmd::SYNC,
        flags: CMD_FLAG_IRQ,
        arg0: SYNC_WORD,
        arg1: 78,
        ..Default::default()
    });
    h.run();
    assert_eq!(h.reg(reg::IRQ_STATUS) & irq::CMD_DONE, irq::CMD_DONE);
    assert!(efd.read().is_err(), "masked vector stays quiet");
    // Unmasking delivers the interrupt that was held back.
    h.write_reg(reg::IRQ_MASK, 0);
    assert_eq!(efd.read().unwrap(), 1, "pending cause signalled on unmask");
}

/// A deliberately buggy TLB (range invalidations ignored) makes the checker fire:
/// counted, and in strict mode the device halts with STALE_ACCESS.
#[test]
fn stale_checker_fires_on_buggy_tlb() {
    for strict in [false, true] {
        let mut h = Harness::new(strict);
        let (s, _) = ctx_with_buffers(&mut h, 1, 1);
        h.core.tlb_mut().buggy_skip_invalidate = true;
        h.post(1, Harness::copy_desc(SRC, DST, 64, 1));
        h.run();
        // The driver moves the page: clear, invalidate, SYNC, remap elsewhere.
        h.unmap(1, SRC);
        h.command(cmd::INVALIDATE_RANGE, 1, SRC, 4096);
        assert_eq!(h.sync(1), 1);
        let s2 = h.alloc(4096, false);
        h.map(1, SRC, s2, 4096, false);
        assert_ne!(s, s2);
        h.events();
        h.post(1, Harness::copy_desc(SRC, DST, 64, 2));
        h.run();
        assert_eq!(h.counter(counter::STALE_ACCESSES), 1, "strict={strict}");
        if strict {
            assert_eq!(h.reg(reg::STATUS) & status::HALTED, status::HALTED);
            assert_eq!(h.reg(reg::ERROR_CODE), error::STALE_ACCESS);
            let e = h.events();
            assert_eq!((e[0].kind, e[0].code), (event::ERROR, error::STALE_ACCESS));
            assert!(
                h.completions(1).len() == 1,
                "the stale copy did not complete"
            );
            // Halted: doorbells and commands are ignored until reset.
            h.post(1, Harness::copy_desc(SRC, DST, 64, 3));
            assert_eq!(h.run(), Activity::Idle(None));
            h.write_reg(reg::CONTROL, control::RESET);
            assert_eq!(h.reg(reg::STATUS), 0);
        } else {
            assert_eq!(h.completions(1).len(), 2);
        }
    }
}

#[test]
fn command_errors_are_reported_and_skipped() {
    let mut h = Harness::new(true);
    h.command(0x55, 0, 0, 0); // seq 1: unknown opcode
    h.command(cmd::INVALIDATE_CTX, 300, 0, 0); // seq 2: context out of range
    h.command(cmd::INVALIDATE_RANGE, 0, 0x1000, 0); // seq 3: zero length
    h.command(cmd::INVALIDATE_RANGE, 0, u64::MAX, 2); // seq 4: wraps
    h.command(cmd::SYNC, 0, SYNC_WORD + 4, 1); // seq 5: misaligned
    h.command(cmd::SYNC, 0, 1 << 40, 1); // seq 6: outside RAM
    h.command(cmd::CTX_ENABLE, 9, 0, 0); // seq 7: entry not valid
    h.command(cmd::ABORT, 9, 1, 0); // seq 8: nothing parked
    h.command(cmd::SYNC, 0, SYNC_WORD, 5); // seq 9: fine
    h.run();
    let e = h.events();
    let got: Vec<(u32, u64)> = e.iter().map(|e| (e.code, e.info)).collect();
    assert_eq!(
        got,
        vec![
            (error::BAD_COMMAND, 1),
            (error::BAD_CONTEXT, 2),
            (error::BAD_COMMAND, 3),
            (error::BAD_COMMAND, 4),
            (error::BAD_COMMAND, 5),
            (error::ADDRESS_ERROR, 6),
            (error::BAD_CONTEXT, 7),
            (error::BAD_FAULT_ID, 8),
        ]
    );
    assert_eq!(mem::load_u64(&h.mem(), SYNC_WORD).unwrap(), 5);
    assert_eq!(
        h.reg(reg::ERROR_CODE),
        error::BAD_COMMAND,
        "the first error"
    );
    assert_eq!(h.reg(reg::ERROR_COUNT), 8);
    assert_eq!(h.counter(counter::ERRORS), 8);
    assert_eq!(h.counter(counter::COMMANDS), 9);
    assert_eq!(h.reg(reg::CMDQ_HEAD), 9);
    assert_ne!(h.reg(reg::IRQ_STATUS) & irq::ERROR, 0);
}

#[test]
fn ctx_root_outside_ram_is_refused() {
    let mut h = Harness::new(true);
    h.setup_ctx(5, 4, 4);
    assert!(h.events().is_empty());
    let mut e = mnic_abi::CtxEntry {
        flags: mnic_abi::CTX_FLAG_VALID,
        wq_size_log2: 4,
        cq_size_log2: 4,
        root: 1 << 40,
        ..Default::default()
    };
    mem::write(
        &h.mem(),
        CTX_TABLE + 64 * 6,
        zerocopy::IntoBytes::as_bytes(&e),
    )
    .unwrap();
    h.command(cmd::CTX_ENABLE, 6, 0, 0);
    h.command(cmd::CTX_ENABLE, 5, 0, 0); // already running
    e.root = 0x1001;
    mem::write(
        &h.mem(),
        CTX_TABLE + 64 * 7,
        zerocopy::IntoBytes::as_bytes(&e),
    )
    .unwrap();
    h.command(cmd::CTX_ENABLE, 7, 0, 0);
    h.run();
    let codes: Vec<u32> = h.events().iter().map(|e| e.code).collect();
    assert_eq!(
        codes,
        vec![error::ADDRESS_ERROR, error::BAD_CONTEXT, error::BAD_CONTEXT]
    );
}

#[test]
fn bad_descriptors_and_table_errors() {
    let mut h = Harness::new(true);
    let (_, d) = ctx_with_buffers(&mut h, 1, 2);
    let bad = [
        Harness::copy_desc(SRC, DST, 0, 1),                  // zero length
        Harness::copy_desc(SRC, SRC + 8, 64, 2),             // overlap
        Harness::copy_desc(SRC, (1 << 47) - 8, 64, 3),       // beyond the VA space
        Harness::copy_desc(SRC, DST, work::COPY_MAX + 1, 4), // too long
        WorkDesc {
            opcode: 99,
            tag: 5,
            ..Default::default()
        }, // unknown opcode
        WorkDesc {
            opcode: work::TRAFFIC,
            tag: 6,
            len: 4096,
            src: SRC,
            op_size: 0,
            ..Default::default()
        },
        WorkDesc {
            opcode: work::TRAFFIC,
            tag: 7,
            len: 64,
            src: SRC,
            op_size: 128,
            ..Default::default()
        },
        WorkDesc {
            opcode: work::TRAFFIC,
            tag: 8,
            len: 64,
            src: SRC,
            op_size: 8,
            pattern: 3,
            ..Default::default()
        },
    ];
    for b in bad {
        h.post(1, b);
    }
    h.post(
        1,
        WorkDesc {
            opcode: work::NOP,
            tag: 9,
            ..Default::default()
        },
    );
    h.run();
    let c = h.completions(1);
    let got: Vec<(u64, u16)> = c.iter().map(|c| (c.tag, c.status)).collect();
    let mut want: Vec<(u64, u16)> = (1..=8).map(|t| (t, completion::BAD_DESCRIPTOR)).collect();
    want.push((9, completion::OK));
    assert_eq!(got, want);
    assert_eq!(
        h.events()
            .iter()
            .filter(|e| e.code == error::BAD_DESCRIPTOR)
            .count(),
        8
    );
    // A leaf with a reserved bit: TABLE_ERROR completion and error event.
    let m = h.mem();
    let at = h.tables(1).entry_addr(&m, DST, 1).unwrap();
    mem::store_u64(&m, at, mnic_abi::pte::leaf_4k(d, true) | 1 << 9).unwrap();
    h.post(1, Harness::copy_desc(SRC, DST, 64, 10));
    h.run();
    let c = h.completions(1);
    assert_eq!((c[0].status, c[0].fault_va), (completion::TABLE_ERROR, DST));
    let e = h.events();
    assert_eq!((e[0].kind, e[0].code), (event::ERROR, error::TABLE_ERROR));
}

/// A reserved `flags` bit refuses the descriptor (spec §11, `WorkDesc::validate`): the
/// item completes with `BAD_DESCRIPTOR`, an ERROR event names its tag, and nothing is
/// copied. The same COPY with only the defined flag runs.
#[test]
fn reserved_flag_bit_refuses_the_descriptor() {
    let mut h = Harness::new(true);
    let (s, d) = ctx_with_buffers(&mut h, 1, 1);
    for bit in [1u16 << 1, 1 << 15] {
        let desc = Harness::copy_desc(SRC, DST, 64, u64::from(bit));
        h.post(
            1,
            WorkDesc {
                flags: desc.flags | bit,
                ..desc
            },
        );
        h.run();
        let c = h.completions(1);
        assert_eq!(
            (c.len(), c[0].tag, c[0].status, c[0].bytes),
            (1, u64::from(bit), completion::BAD_DESCRIPTOR, 0)
        );
        let e = h.events();
        assert_eq!(
            (e[0].kind, e[0].code, e[0].addr),
            (event::ERROR, error::BAD_DESCRIPTOR, u64::from(bit))
        );
        assert_eq!(read(&h, d, 64), vec![0; 64], "not executed");
    }
    assert_eq!(h.counter(counter::WORK_COMPLETED), 2);
    h.post(1, Harness::copy_desc(SRC, DST, 64, 7));
    h.run();
    let c = h.completions(1);
    assert_eq!((c[0].tag, c[0].status), (7, completion::OK));
    assert_eq!(read(&h, d, 64), read(&h, s, 64));
}

#[test]
fn event_backlog_waits_for_room() {
    let mut h = Harness::new(true);
    h.setup_ctx(1, 8, 8);
    for t in 0..100u64 {
        h.post(
            1,
            WorkDesc {
                opcode: work::NOP,
                flags: work::FLAG_NOTIFY,
                tag: t,
                ..Default::default()
            },
        );
    }
    h.run();
    assert_eq!(h.completions(1).len(), 100);
    assert_eq!(h.core.evq.backlog(), 100 - 63);
    let mut tags: Vec<u64> = Vec::new();
    for _ in 0..3 {
        tags.extend(h.events().iter().map(|e| e.addr));
        h.run();
    }
    assert_eq!(
        tags,
        (0..100).collect::<Vec<_>>(),
        "every event once, in order"
    );
    assert_eq!(h.counter(counter::EVENTS_DROPPED), 0);
}

#[test]
fn long_copy_does_not_starve_sync() {
    let mut h = Harness::new(true);
    // Two steps' worth: the SYNC must run between them.
    let pages = (2 * crate::engine::COPY_STEP / 4096) as usize;
    let len = pages * 4096;
    let (s, d) = ctx_with_buffers(&mut h, 1, pages as u64);
    h.post(1, Harness::copy_desc(SRC, DST, len as u32, 1));
    let m = h.mem();
    h.core.poll(&m); // fetch
    h.core.poll(&m); // first step
    h.command(cmd::SYNC, 0, SYNC_WORD, 3);
    h.core.poll(&m);
    assert_eq!(
        mem::load_u64(&m, SYNC_WORD).unwrap(),
        3,
        "SYNC ran between steps"
    );
    assert!(h.completions(1).is_empty(), "the copy is still going");
    h.run();
    assert_eq!(h.completions(1)[0].bytes, len as u64);
    assert_eq!(read(&h, d, len), read(&h, s, len));
}

#[test]
fn reset_returns_to_reset_state() {
    let mut h = Harness::new(true);
    ctx_with_buffers(&mut h, 1, 1);
    h.post(1, Harness::copy_desc(SRC, DST, 64, 1));
    h.run();
    assert!(h.counter(counter::WORK_COMPLETED) > 0);
    h.write_reg(reg::IRQ_MASK, 3);
    h.write_reg(reg::CONTROL, control::RESET);
    for r in [
        reg::STATUS,
        reg::CONTROL,
        reg::IRQ_MASK,
        reg::IRQ_STATUS,
        reg::CMDQ_HEAD,
        reg::EVQ_TAIL,
        reg::CTX_TABLE_LO,
    ] {
        assert_eq!(h.reg(r), 0, "register {r:#x}");
    }
    // DEVICE_CPU_US is a reading, not a count (spec §4a).
    for i in (0..counter::COUNT).filter(|&i| i != counter::DEVICE_CPU_US) {
        assert_eq!(h.counter(i), 0, "counter {i}");
    }
    assert!(h.core.tlb.is_empty());
    // The oracle's counters are the tests' evidence and survive a reset (spec §8a).
    h.core.shared().counters.inc(counter::ORACLE_VIOLATIONS);
    h.write_reg(reg::CONTROL, control::RESET);
    assert_eq!(h.counter(counter::ORACLE_VIOLATIONS), 1);
    h.post(1, Harness::copy_desc(SRC, DST, 64, 2));
    assert_eq!(h.counter(counter::BAD_DOORBELL), 1, "contexts are gone");
}

#[test]
fn traffic_sequential_write_and_random() {
    let mut h = Harness::new(true);
    let (_, d) = ctx_with_buffers(&mut h, 1, 4);
    let desc = WorkDesc {
        opcode: work::TRAFFIC,
        tag: 1,
        len: 4 * 4096,
        src: DST,
        op_size: 1000,
        pattern: work::PATTERN_SEQ_WRITE,
        ops: 40,
        seed: 1234,
        ..Default::default()
    };
    h.post(1, desc);
    h.run();
    let c = h.completions(1);
    assert_eq!((c[0].status, c[0].bytes), (completion::OK, 40));
    let p = super::traffic::pattern(1234, 1000);
    for slot in 0..16 {
        assert_eq!(read(&h, d + slot * 1000, 1000), p, "slot {slot}");
    }
    assert_eq!(h.counter(counter::TRAFFIC_OPS), 40);
    // Random read/write over a range with a read-only page: the first write there
    // faults; abort it.
    h.post(
        1,
        WorkDesc {
            pattern: work::PATTERN_RANDOM_RW,
            src: DST,
            ops: 500,
            seed: 9,
            ..desc
        },
    );
    h.map(1, DST + 4096, d + 4096, 4096, false);
    h.command(cmd::INVALIDATE_RANGE, 1, DST + 4096, 4096);
    h.run();
    let f = h
        .events()
        .into_iter()
        .find(|e| e.kind == event::FAULT)
        .unwrap();
    assert_eq!(f.code, event::FAULT_NOT_WRITABLE);
    h.command(cmd::ABORT, 1, f.id, 1);
    h.run();
    let c = h.completions(1);
    assert_eq!(c[0].status, completion::FAULT_ABORTED);
    assert!(c[0].bytes < 500);
}

#[test]
fn traffic_rate_is_throttled() {
    let mut h = Harness::new(true);
    ctx_with_buffers(&mut h, 1, 1);
    h.post(
        1,
        WorkDesc {
            opcode: work::TRAFFIC,
            len: 4096,
            src: SRC,
            op_size: 64,
            ops: 3,
            rate: 20,
            ..Default::default()
        },
    );
    let t = std::time::Instant::now();
    match h.run() {
        Activity::Idle(Some(_)) => {}
        a => panic!("expected a deadline, got {a:?}"),
    }
    while h.completions(1).is_empty() {
        std::thread::sleep(std::time::Duration::from_millis(10));
        h.run();
        assert!(t.elapsed().as_secs() < 5);
    }
    // Ops at 0, 50 and 100 ms.
    assert!(t.elapsed().as_millis() >= 100);
}

/// Arms the oracle for `ctx` and returns the generation.
fn arm(h: &mut Harness, ctx: u16) -> u32 {
    let g = h.oracle(oracle_op::ARM, ctx, 0, 0, 0);
    assert_ne!(g, 0);
    g
}

/// An oracle report that `[start, end)` of `ctx` is being invalidated.
fn report(h: &mut Harness, ctx: u16, gen: u32, start: u64, end: u64) {
    h.oracle(oracle_op::INVALIDATE, ctx, gen, start, end);
}

/// COPY of `len` bytes from SRC to DST on context 1, run to completion (or halt).
fn copy(h: &mut Harness, len: u32, tag: u64) {
    h.post(1, Harness::copy_desc(SRC, DST, len, tag));
    h.run();
}

/// A harness (`strict` or not) with context 1 over `pages` of SRC and DST buffers, the
/// oracle armed for it: its generation.
fn armed(strict: bool, pages: u64) -> (Harness, u32) {
    let mut h = Harness::new(strict);
    ctx_with_buffers(&mut h, 1, pages);
    let g = arm(&mut h, 1);
    (h, g)
}

fn halted(h: &Harness) -> bool {
    h.reg(reg::STATUS) & status::HALTED != 0
}

/// Check 2 of the oracle: the driver cleared its table entry but never told the device,
/// whose TLB still holds the translation. The next access through it is a violation
/// (counted; in strict mode the device halts with ORACLE_VIOLATION), though the driver's
/// own stale checker sees nothing.
#[test]
fn oracle_catches_access_through_translation_older_than_report() {
    for strict in [false, true] {
        let (mut h, g) = armed(strict, 2);
        copy(&mut h, 64, 1);
        assert_eq!(h.completions(1)[0].status, completion::OK);
        h.unmap(1, SRC);
        report(&mut h, 1, g, SRC, SRC + 4096);
        assert_eq!(h.counter(counter::ORACLE_INVALIDATIONS), 1);
        assert_eq!(
            h.counter(counter::ORACLE_VIOLATIONS),
            0,
            "the table is clean"
        );
        h.events();
        copy(&mut h, 64, 2);
        assert_eq!(h.counter(counter::ORACLE_VIOLATIONS), 1, "strict={strict}");
        assert_eq!(h.counter(counter::STALE_ACCESSES), 0);
        if strict {
            assert!(halted(&h));
            assert_eq!(h.reg(reg::ERROR_CODE), error::ORACLE_VIOLATION);
            let e = h.events();
            assert_eq!(
                (e[0].kind, e[0].code, e[0].ctx, e[0].addr),
                (event::ERROR, error::ORACLE_VIOLATION, 1, SRC)
            );
            assert!(h.completions(1).is_empty(), "halted before the completion");
        } else {
            assert!(!halted(&h));
            assert_eq!(h.completions(1)[0].status, completion::OK);
        }
    }
}

/// A correct driver: table entry cleared, INVALIDATE_RANGE + SYNC, then the oracle's
/// report, then a new mapping. The translation walked after the report is fine.
#[test]
fn oracle_accepts_translation_walked_after_report() {
    let (mut h, g) = armed(true, 2);
    copy(&mut h, 2 * 4096, 1);
    h.unmap(1, SRC);
    h.command(cmd::INVALIDATE_RANGE, 1, SRC, 4096);
    assert_eq!(h.sync(1), 1);
    report(&mut h, 1, g, SRC, SRC + 4096);
    let s2 = h.alloc(4096, false);
    h.map(1, SRC, s2, 4096, false);
    copy(&mut h, 2 * 4096, 2);
    let c = h.completions(1);
    assert_eq!((c.len(), c[1].status), (2, completion::OK));
    assert_eq!(h.counter(counter::ORACLE_INVALIDATIONS), 1);
    assert_eq!(h.counter(counter::ORACLE_VIOLATIONS), 0);
    assert!(!halted(&h));
}

/// Between the oracle stamp and the table reads of context 1's first walk of SRC: the
/// oracle module's report that SRC's page is being invalidated (generation `g`), then
/// `after` (what the driver does once the invalidation ends).
fn report_during_first_walk_of_src(
    h: &mut Harness,
    g: u32,
    after: impl FnOnce(&mem::GuestMem) + Send + 'static,
) {
    let dev = Mmio::new(h.core.shared().clone());
    let mut after = Some(after);
    h.core.before_walk = Some(Box::new(move |m: &mem::GuestMem, va: u64| {
        if va == SRC {
            if let Some(f) = after.take() {
                oracle_call(&dev, m, oracle_op::INVALIDATE, 1, g, SRC, SRC + 4096);
                f(m);
            }
        }
    }));
}

/// A walk that a report overtakes. The kernel invalidates SRC just as the device begins to
/// walk it; the driver had no entry there (nothing to clear, so it posted nothing), and its
/// fill of the new page lands before the walk reads the table. The walk reads the new leaf:
/// the access is right, and the oracle must not call it stale. Before the fix it did (and a
/// strict device halted): the translation was stamped when its walk began, before the
/// report. Now a walk that a report covering its address overtook is walked again.
#[test]
fn oracle_accepts_a_walk_that_a_report_overtook_when_it_read_the_new_leaf() {
    let mut h = Harness::new(true);
    let (_, dst) = ctx_with_buffers(&mut h, 1, 1);
    let g = arm(&mut h, 1);
    let m = h.mem();
    // The new page and its leaf, then no leaf: the state the invalidation found.
    let fresh = h.alloc(4096, false);
    mem::write(&m, fresh, &[0x5a; 4096]).unwrap();
    h.map(1, SRC, fresh, 4096, false);
    let slot = h.tables(1).entry_addr(&m, SRC, 1).unwrap();
    let leaf = mem::load_u64(&m, slot).unwrap();
    h.unmap(1, SRC);
    report_during_first_walk_of_src(&mut h, g, move |m| {
        mem::write(m, slot, &leaf.to_le_bytes()).unwrap();
    });
    copy(&mut h, 64, 1);
    assert_eq!(
        h.counter(counter::ORACLE_INVALIDATIONS),
        1,
        "the report came"
    );
    assert_eq!(h.counter(counter::ORACLE_VIOLATIONS), 0);
    assert!(!halted(&h));
    let c = h.completions(1);
    assert_eq!((c.len(), c[0].status), (1, completion::OK));
    assert_eq!(read(&h, dst, 64), vec![0x5a; 64]);
}

/// The walk again is no way round the evidence: when the report overtakes a walk of a leaf
/// the driver failed to clear, the table check at the report counts it, and a strict device
/// halts before the access.
#[test]
fn an_overtaken_walk_of_a_leaf_left_in_the_table_is_still_a_violation() {
    let mut h = Harness::new(true);
    ctx_with_buffers(&mut h, 1, 1);
    let g = arm(&mut h, 1);
    report_during_first_walk_of_src(&mut h, g, |_| {});
    copy(&mut h, 64, 1);
    assert_eq!(h.counter(counter::ORACLE_VIOLATIONS), 1);
    assert!(halted(&h));
    assert!(h.completions(1).is_empty(), "halted before the access");
}

/// Reports that do not cover the access: another range, another context, a stale or
/// missing generation, a malformed range, a disarmed context.
#[test]
fn oracle_ignores_reports_that_do_not_cover_the_access() {
    let mut h = Harness::new(true);
    ctx_with_buffers(&mut h, 1, 2);
    ctx_with_buffers(&mut h, 2, 2);
    let old = arm(&mut h, 1);
    let g = arm(&mut h, 1);
    assert_ne!(old, g, "re-arming hands out a new generation");
    let g2 = arm(&mut h, 2);
    copy(&mut h, 64, 1);
    h.unmap(1, SRC);
    h.unmap(2, SRC);
    report(&mut h, 1, g, SRC + 0x10_0000, SRC + 0x20_0000); // another range
    report(&mut h, 2, g2, SRC, SRC + 4096); // another context
    report(&mut h, 1, old, SRC, SRC + 4096); // the old generation: ignored
    report(&mut h, 3, 0, SRC, SRC + 4096); // not armed: ignored
    assert_eq!(h.counter(counter::ORACLE_INVALIDATIONS), 2);
    assert_eq!(h.counter(counter::BAD_MMIO), 0, "ignored, not counted");
    report(&mut h, 1, g, SRC + 4096, SRC); // end before start
    h.oracle(oracle_op::ARM, NUM_CONTEXTS as u16, 0, 0, 0); // no such context
    assert_eq!(h.reg(reg::ORACLE_GEN), 0);
    assert_eq!(h.counter(counter::BAD_MMIO), 2);
    // DISARM with the old generation changes nothing; with the current one the watch
    // ends and a later report is ignored.
    h.oracle(oracle_op::DISARM, 1, old, 0, 0);
    h.oracle(oracle_op::DISARM, 1, g, 0, 0);
    report(&mut h, 1, g, SRC, SRC + 4096);
    assert_eq!(h.counter(counter::ORACLE_INVALIDATIONS), 2);
    copy(&mut h, 64, 2);
    assert_eq!(h.completions(1).len(), 2);
    assert_eq!(h.counter(counter::ORACLE_VIOLATIONS), 0);
    assert!(!halted(&h));
}

/// CTX_DISABLE and a device reset end the watch: generation 0, reports forgotten.
#[test]
fn oracle_watch_ends_with_ctx_disable_and_reset() {
    let (mut h, g) = armed(true, 1);
    let g2 = arm(&mut h, 2);
    h.command(cmd::CTX_DISABLE, 1, 0, 0);
    h.run();
    let o = &h.core.shared().oracle;
    assert!(!o.armed(1) && o.armed(2));
    report(&mut h, 1, g, SRC, SRC + 4096);
    assert_eq!(h.counter(counter::ORACLE_INVALIDATIONS), 0);
    h.write_reg(reg::CONTROL, control::RESET);
    assert!(!h.core.shared().oracle.armed(2));
    report(&mut h, 2, g2, SRC, SRC + 4096);
    assert_eq!(h.counter(counter::ORACLE_INVALIDATIONS), 0);
    assert!(arm(&mut h, 2) > g2, "generations are not handed out twice");
}

/// Check 1 of the oracle: at a report, no valid leaf of the context's table may overlap
/// the range (4 KiB or 2 MiB), counted once per report.
#[test]
fn oracle_table_check() {
    let (mut h, g) = armed(false, 2);
    h.unmap(1, DST);
    report(&mut h, 1, g, DST, DST + 4096);
    assert_eq!(h.counter(counter::ORACLE_VIOLATIONS), 0, "leaf cleared");
    report(&mut h, 1, g, DST, DST + 2 * 4096);
    assert_eq!(
        h.counter(counter::ORACLE_VIOLATIONS),
        1,
        "DST + 4096 is still there"
    );
    report(&mut h, 1, g, 0, 0); // the whole address space: once per report
    assert_eq!(h.counter(counter::ORACLE_VIOLATIONS), 2);
    h.unmap(1, DST + 4096);
    report(&mut h, 1, g, DST, DST + 2 * 4096);
    assert_eq!(h.counter(counter::ORACLE_VIOLATIONS), 2, "all cleared");
    let huge = h.alloc(2 << 20, true);
    let m = h.mem();
    h.tables(1).map_2m(&m, 0x4000_0000, huge, true);
    report(&mut h, 1, g, 0x401f_f000, 0x4020_0000);
    assert_eq!(h.counter(counter::ORACLE_VIOLATIONS), 3, "a 2 MiB leaf");
    h.tables(1).unmap(&m, 0x4000_0000, true);
    report(&mut h, 1, g, 0x4000_0000, 0x4020_0000);
    assert_eq!(h.counter(counter::ORACLE_VIOLATIONS), 3);
    assert_eq!(h.counter(counter::ORACLE_INVALIDATIONS), 6);
    assert!(!halted(&h));
}

/// In strict mode a table violation halts the device: the socket thread makes it visible
/// at once (STATUS, ERROR_CODE, doorbells refused), the engine does the rest at its next
/// round (ERROR event, counters).
#[test]
fn oracle_table_violation_halts_in_strict_mode() {
    let (mut h, g) = armed(true, 1);
    report(&mut h, 1, g, DST, DST + 4096);
    assert_eq!(h.counter(counter::ORACLE_VIOLATIONS), 1);
    assert!(halted(&h), "before the engine ran");
    assert_eq!(h.reg(reg::ERROR_CODE), error::ORACLE_VIOLATION);
    h.post(1, Harness::copy_desc(SRC, DST, 64, 1));
    h.run();
    assert!(h.completions(1).is_empty(), "a halted device does no work");
    let e = h.events();
    assert_eq!(
        (e[0].kind, e[0].code, e[0].ctx, e[0].addr),
        (event::ERROR, error::ORACLE_VIOLATION, 1, DST)
    );
    assert_eq!(h.reg(reg::ERROR_COUNT), 1);
}

/// Bus mastering off: no command, no work, no event; each round counts DMA_REFUSED. The
/// work continues when the bit is set again.
#[test]
fn bus_master_off_stops_the_engine() {
    let mut h = Harness::new(true);
    let (s, d) = ctx_with_buffers(&mut h, 1, 1);
    h.core.shared().set_bus_master(false);
    h.post(1, Harness::copy_desc(SRC, DST, 4096, 1));
    h.command(cmd::SYNC, 0, SYNC_WORD, 7);
    let head = h.reg(reg::CMDQ_HEAD);
    assert_eq!(h.run(), Activity::Idle(None));
    assert_eq!(h.reg(reg::CMDQ_HEAD), head, "no command fetched");
    assert_eq!(mem::load_u64(&h.mem(), SYNC_WORD).unwrap(), 0);
    assert!(h.completions(1).is_empty());
    assert_eq!(read(&h, d, 4096), vec![0; 4096]);
    assert_eq!(h.counter(counter::DMA_REFUSED), 1, "one per round");
    h.run();
    assert_eq!(h.counter(counter::DMA_REFUSED), 2);
    h.core.shared().set_bus_master(true);
    h.run();
    assert_eq!(mem::load_u64(&h.mem(), SYNC_WORD).unwrap(), 7);
    assert_eq!(h.completions(1)[0].status, completion::OK);
    assert_eq!(read(&h, d, 4096), read(&h, s, 4096));
    assert_eq!(h.counter(counter::DMA_REFUSED), 2);
}

/// Bus mastering cleared (by another thread, as the socket thread would) while a step is
/// stalled before its access: the access is refused, never judged by the oracle (it did
/// not happen), and the item stays, to continue when the bit is set again.
#[test]
fn bus_master_cleared_during_a_step_refuses_its_access() {
    let mut h = Harness::new(true);
    let (s, d) = ctx_with_buffers(&mut h, 1, 2);
    let g = arm(&mut h, 1);
    h.post(1, Harness::copy_desc(SRC, DST, 2 * 4096, 1));
    let m = h.mem();
    h.core.poll(&m); // fetch the descriptor
    h.write_reg(reg::DEBUG_STALL_MS, 300);
    let leaves = [DST, DST + 4096].map(|va| h.tables(1).entry_addr(&m, va, 1).unwrap());
    let sh = h.core.shared().clone();
    let dev = Mmio::new(sh.clone());
    let m2 = m.clone();
    let clearer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        // The kernel takes DST away while the engine sleeps, and the device is stopped.
        for at in leaves {
            mem::store_u64(&m2, at, 0).unwrap();
        }
        oracle_call(&dev, &m2, oracle_op::INVALIDATE, 1, g, DST, DST + 2 * 4096);
        // Returns at once: the stalled engine is outside its round.
        let t = Instant::now();
        sh.set_bus_master(false);
        t.elapsed()
    });
    h.core.poll(&m); // the copy step: stalls, then finds the bit clear
    assert!(clearer.join().unwrap() < Duration::from_millis(200));
    assert_eq!(h.reg(reg::DEBUG_STALL_MS), 0, "the step took the stall");
    assert_eq!(h.counter(counter::DMA_REFUSED), 1);
    assert!(h.completions(1).is_empty());
    assert_eq!(read(&h, d, 2 * 4096), vec![0; 2 * 4096], "nothing written");
    assert_eq!(h.counter(counter::ORACLE_INVALIDATIONS), 1);
    assert_eq!(
        h.counter(counter::ORACLE_VIOLATIONS),
        0,
        "no access happened"
    );
    // The driver catches up (invalidation, new pages), then turns bus mastering back on.
    h.command(cmd::INVALIDATE_RANGE, 1, DST, 2 * 4096);
    let d2 = h.alloc(2 * 4096, false);
    h.map(1, DST, d2, 2 * 4096, true);
    h.core.shared().set_bus_master(true);
    h.run();
    let c = h.completions(1);
    assert_eq!((c[0].status, c[0].bytes), (completion::OK, 2 * 4096));
    assert_eq!(read(&h, d2, 2 * 4096), read(&h, s, 2 * 4096));
    assert_eq!(h.counter(counter::ORACLE_VIOLATIONS), 0);
    assert!(!halted(&h));
}

/// A strict-mode table violation found while the engine is stalled before an access:
/// the access does not happen after the stall.
#[test]
fn oracle_halt_during_a_stall_stops_the_access() {
    let mut h = Harness::new(true);
    let (_, d) = ctx_with_buffers(&mut h, 1, 1);
    let g = arm(&mut h, 1);
    h.post(1, Harness::copy_desc(SRC, DST, 4096, 1));
    let m = h.mem();
    h.core.poll(&m); // fetch the descriptor
    h.write_reg(reg::DEBUG_STALL_MS, 200);
    let dev = Mmio::new(h.core.shared().clone());
    let m2 = m.clone();
    let reporter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        // The driver forgot to clear DST: a table violation.
        oracle_call(&dev, &m2, oracle_op::INVALIDATE, 1, g, DST, DST + 4096);
    });
    h.core.poll(&m);
    reporter.join().unwrap();
    assert!(halted(&h));
    assert_eq!(read(&h, d, 4096), vec![0; 4096], "no access after the halt");
    assert_eq!(h.counter(counter::ORACLE_VIOLATIONS), 1, "the table only");
    let e = h.events();
    assert_eq!(
        (e[0].kind, e[0].code),
        (event::ERROR, error::ORACLE_VIOLATION)
    );
}

/// A hot COPY stretch shares one walk time per side: a page walked before a report next
/// to one walked after it is judged on its own.
#[test]
fn oracle_hot_stretch_keeps_walk_times_apart() {
    let (mut h, g) = armed(false, 2);
    // The second pages, walked now; then the driver clears SRC's second page without
    // telling the device, and the oracle reports it.
    h.post(1, Harness::copy_desc(SRC + 4096, DST + 4096, 4096, 1));
    h.run();
    h.unmap(1, SRC + 4096);
    report(&mut h, 1, g, SRC + 4096, SRC + 2 * 4096);
    // The first pages, walked after the report.
    copy(&mut h, 4096, 2);
    assert_eq!(h.counter(counter::ORACLE_VIOLATIONS), 0);
    // Both pages of both sides hot and guest-physically contiguous: one stretch, were it
    // not for the walk times.
    let (misses, hits) = (h.counter(counter::TLB_MISSES), h.counter(counter::TLB_HITS));
    copy(&mut h, 2 * 4096, 3);
    assert_eq!(h.counter(counter::TLB_MISSES), misses, "all hot");
    let pages_wq_cq = 4 + 1 + 1;
    assert_eq!(h.counter(counter::TLB_HITS) - hits, pages_wq_cq);
    assert_eq!(h.completions(1).len(), 3);
    assert_eq!(h.counter(counter::ORACLE_VIOLATIONS), 1);
}

/// MSI-X messages are memory writes: none while bus mastering is off; the causes stay in
/// IRQ_STATUS and are delivered when the bit is set again.
#[test]
fn msix_waits_for_bus_master() {
    let h = Harness::new(true);
    let efd = vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let dup = efd.try_clone().unwrap();
    // SAFETY: the duplicated eventfd is owned by nobody else.
    let f = unsafe { File::from_raw_fd(dup.into_raw_fd()) };
    let sh = h.core.shared().clone();
    sh.set_msix(0, Some(f));
    sh.set_bus_master(false);
    sh.set_reg(reg::IRQ_STATUS, irq::EVENT);
    sh.signal_causes(irq::EVENT);
    assert!(efd.read().is_err(), "no MSI-X without bus mastering");
    sh.set_bus_master(true);
    assert_eq!(efd.read().unwrap(), 1, "held-back cause delivered");
    sh.signal_causes(irq::EVENT);
    assert_eq!(efd.read().unwrap(), 1);
}

/// DEBUG_STALL_MS: clamped, and the next access of the engine sleeps that long.
#[test]
fn debug_stall_waits_for_copy_data() {
    // A descriptor fetch and a completion write do not take the stall: it is for the
    // engine holding translations of user buffers.
    let mut h = Harness::new(true);
    ctx_with_buffers(&mut h, 1, 1);
    h.write_reg(reg::DEBUG_STALL_MS, 5000);
    h.post(
        1,
        WorkDesc {
            opcode: work::NOP,
            tag: 1,
            ..Default::default()
        },
    );
    let t = Instant::now();
    h.run();
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    assert_eq!(h.completions(1)[0].status, completion::OK);
    assert_eq!(h.reg(reg::DEBUG_STALL_MS), 5000, "still armed");
}

#[test]
fn debug_stall_delays_the_next_access() {
    let mut h = Harness::new(true);
    let (s, d) = ctx_with_buffers(&mut h, 1, 1);
    h.write_reg(reg::DEBUG_STALL_MS, 100_000);
    assert_eq!(h.reg(reg::DEBUG_STALL_MS), mnic_abi::STALL_MS_MAX);
    h.write_reg(reg::DEBUG_STALL_MS, 200);
    assert_eq!(h.reg(reg::DEBUG_STALL_MS), 200);
    h.post(1, Harness::copy_desc(SRC, DST, 4096, 1));
    let t = Instant::now();
    h.run();
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(h.reg(reg::DEBUG_STALL_MS), 0, "taken");
    assert_eq!(h.completions(1)[0].status, completion::OK);
    assert_eq!(read(&h, d, 4096), read(&h, s, 4096));
}

/// The case the oracle exists for: the engine is stalled in a COPY step holding a
/// translation of DST; meanwhile the kernel unmaps DST (the driver clears its entry; its
/// SYNC would time out behind the stalled engine) and the oracle reports it from the
/// socket thread. The access, made after the report, is a violation.
#[test]
fn oracle_report_during_a_stalled_step_is_caught() {
    let (mut h, g) = armed(true, 1);
    h.post(1, Harness::copy_desc(SRC, DST, 4096, 1));
    let m = h.mem();
    h.core.poll(&m); // fetch the descriptor
    h.write_reg(reg::DEBUG_STALL_MS, 300);
    let l1 = h.tables(1).entry_addr(&m, DST, 1).unwrap();
    let dev = Mmio::new(h.core.shared().clone());
    let m2 = m.clone();
    let reporter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        mem::store_u64(&m2, l1, 0).unwrap();
        oracle_call(&dev, &m2, oracle_op::INVALIDATE, 1, g, DST, DST + 4096);
        // The socket thread keeps serving while the engine sleeps.
        Instant::now()
    });
    let t = Instant::now();
    h.core.poll(&m); // the copy step: walk, stall, access
    let stalled = t.elapsed();
    let reported = reporter.join().unwrap();
    assert!(stalled >= Duration::from_millis(300), "{stalled:?}");
    assert!(reported < t + stalled, "the report came during the step");
    assert_eq!(h.counter(counter::ORACLE_INVALIDATIONS), 1);
    assert_eq!(h.counter(counter::ORACLE_VIOLATIONS), 1);
    assert!(halted(&h));
    assert_eq!(h.reg(reg::ERROR_CODE), error::ORACLE_VIOLATION);
}

/// A guest that never consumes events and loops "fault, then end the fault" on a context
/// whose work queue is unmapped (CTX_DISABLE/CTX_ENABLE, RESUME, ABORT, each followed by a
/// doorbell) must not grow the device's event backlog without limit: a FAULT event that
/// has not reached the ring is withdrawn when its fault ends.
#[test]
fn fault_backlog_stays_bounded() {
    use crate::engine::{BACKLOG_BOUND as bound, BACKLOG_MAX};
    let mut h = Harness::new(true);
    let c = 5u16;
    h.setup_ctx(c, 4, 4);
    h.unmap(c, crate::testkit::WQ_VA);
    let db = u64::from(c) * mnic_abi::DOORBELL_PAGE_SIZE;
    let parked = |h: &Harness| {
        h.core.ctxs[usize::from(c)]
            .as_ref()
            .and_then(|x| x.parked)
            .map(|p| p.id)
    };
    let mut max_backlog = 0;
    const ROUNDS: u32 = 9000;
    for round in 0..ROUNDS {
        h.dev.bar2_write(db, &1u32.to_le_bytes());
        h.run();
        let id = parked(&h).expect("the fetch faulted");
        match round % 3 {
            0 => {
                h.command(cmd::CTX_DISABLE, c, 0, 0);
                h.command(cmd::CTX_ENABLE, c, 0, 0);
            }
            // RESUME retries the fetch at once: it faults again (a new FAULT).
            1 => h.command(cmd::RESUME, c, id, 0),
            // ABORT of a fetch fault disables the context (and posts an ERROR).
            _ => {
                h.command(cmd::ABORT, c, id, 14);
                h.command(cmd::CTX_ENABLE, c, 0, 0);
            }
        }
        h.run();
        max_backlog = max_backlog.max(h.core.evq.backlog());
        assert!(
            h.core.evq.backlog() <= bound,
            "round {round}: {} events wait inside the device (bound {bound})",
            h.core.evq.backlog()
        );
    }
    // The live fault's event is still delivered, and it is the one the driver must answer.
    h.dev.bar2_write(db, &1u32.to_le_bytes());
    h.run();
    let live = parked(&h).expect("parked");
    let mut last_fault = None;
    for _ in 0..200 {
        for e in h.events() {
            if e.kind == event::FAULT && e.ctx == c {
                last_fault = Some(e.id);
            }
        }
        h.run();
    }
    assert_eq!(h.core.evq.backlog(), 0, "everything delivered");
    assert_eq!(
        last_fault,
        Some(live),
        "the live fault's event arrives last"
    );
    assert!(max_backlog <= BACKLOG_MAX + 1, "{max_backlog}");
    // Three faults every three rounds (the doorbell after a RESUME finds the context
    // parked already), and the last one.
    assert_eq!(h.counter(counter::FAULTS), u64::from(ROUNDS) + 1);
}
