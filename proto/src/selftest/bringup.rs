//! Bring-up cases: reset and enable by hand, the command ring with its SYNC fence and
//! completion interrupt, a context of our own, and the two kinds of work (COPY through
//! the context's own translation table, TRAFFIC), then a last look at the device.

use mnic_abi::{
    cmd, completion, control, counter, event, irq, reg, spin, status, work, WorkDesc,
    VECTOR_CMD_DONE, VECTOR_EVENT,
};

use super::kit::{check, contents, copy, e, pattern, CaseResult, Session, CTX, QUEUE_LOG2};
use crate::context::{Buffer, BufferFlags, Context};
use crate::nic::DEVICE_WAIT;

/// `CONTROL.RESET` puts every register back to its reset value and clears the counters;
/// the enable that follows latches our rings and table.
pub fn reset_and_enable(s: &mut Session) -> CaseResult {
    // A reset drops every context.
    s.ctx = None;
    let nic = &mut s.nic;
    nic.set_reg(reg::IRQ_MASK, irq::EVENT | irq::CMD_DONE);
    nic.set_reg(reg::SPIN_US, spin::OVERRIDE | 7);
    check(nic.reg(reg::IRQ_MASK) == irq::EVENT | irq::CMD_DONE, || {
        format!(
            "IRQ_MASK reads {:#x} before the reset",
            nic.reg(reg::IRQ_MASK)
        )
    })?;
    nic.reset().map_err(e("reset"))?;
    for (name, r) in [
        ("IRQ_MASK", reg::IRQ_MASK),
        ("SPIN_US", reg::SPIN_US),
        ("CTX_TABLE_LO", reg::CTX_TABLE_LO),
        ("CMDQ_SIZE_LOG2", reg::CMDQ_SIZE_LOG2),
        ("ERROR_COUNT", reg::ERROR_COUNT),
    ] {
        let v = nic.reg(r);
        check(v == 0, || {
            format!("{name} reads {v:#x} after reset, want 0")
        })?;
    }
    let c = nic.counters();
    check(c.0[counter::COMMANDS as usize] == 0, || {
        format!("COMMANDS {} after reset", c.0[counter::COMMANDS as usize])
    })?;
    nic.enable().map_err(e("enable"))?;
    let st = nic.reg(reg::STATUS);
    check(st == status::ENABLED, || format!("STATUS {st:#x}"))?;
    let table = u64::from(nic.reg(reg::CTX_TABLE_HI)) << 32 | u64::from(nic.reg(reg::CTX_TABLE_LO));
    check(table == nic.ctx_table(), || {
        format!("CTX_TABLE reads {table:#x}, wrote {:#x}", nic.ctx_table())
    })?;
    let ctl = nic.reg(reg::CONTROL);
    check(ctl == control::ENABLE | control::STRICT, || {
        format!("CONTROL {ctl:#x}")
    })
}

/// NOPs and a SYNC with `CMD_FLAG_IRQ`: the SYNC value lands in our memory, MSI-X vector 1
/// reaches its eventfd, the device consumed every command.
pub fn command_queue_sync(s: &mut Session) -> CaseResult {
    let nic = &mut s.nic;
    let before = nic.counters();
    let irqs = nic.irqs.seen(VECTOR_CMD_DONE);
    for _ in 0..3 {
        nic.command(cmd::NOP, 0, 0, 0).map_err(e("post NOP"))?;
    }
    nic.sync().map_err(e("SYNC"))?;
    let after = nic.counters();
    let (cmds, syncs) = (
        after.since(&before, counter::COMMANDS),
        after.since(&before, counter::SYNCS),
    );
    check(cmds == 4 && syncs == 1, || {
        format!("COMMANDS +{cmds} SYNCS +{syncs}, want +4 and +1")
    })?;
    // The signal follows the SYNC value through QEMU and the guest's interrupt path, so it
    // may arrive after the value was seen.
    let signalled = nic
        .signalled_since(VECTOR_CMD_DONE, irqs)
        .map_err(e("vector 1"))?;
    check(signalled, || {
        "no CMD_DONE interrupt on the vector 1 eventfd".into()
    })?;
    let (head, tail) = (nic.reg(reg::CMDQ_HEAD), nic.reg(reg::CMDQ_TAIL));
    check(head == tail, || {
        format!("CMDQ_HEAD {head} CMDQ_TAIL {tail}")
    })
}

/// Context 0 with our own table and queues: enabled without error; a NOP work item with
/// `NOTIFY` completes with its tag and posts `WORK_DONE` through the vector 0 eventfd.
pub fn context_enable(s: &mut Session) -> CaseResult {
    s.ctx = None;
    let nic = &mut s.nic;
    let ctx = Context::create(nic, CTX, QUEUE_LOG2, QUEUE_LOG2).map_err(e("create context 0"))?;
    // Kept for the cases after this one whatever this one finds.
    let ctx = s.ctx.insert(ctx);
    let nic = &mut s.nic;
    let before = nic.counters();
    let irqs = nic.irqs.seen(VECTOR_EVENT);
    let tag = 0xc0ff_ee00;
    let nop = WorkDesc {
        opcode: work::NOP,
        flags: work::FLAG_NOTIFY,
        tag,
        ..Default::default()
    };
    ctx.post(nic, nop).map_err(e("post NOP"))?;
    let c = ctx.wait_completion(nic).map_err(e("NOP completion"))?;
    check(
        c.tag == tag && c.status == completion::OK && c.bytes == 0,
        || format!("completion {c:?}"),
    )?;
    let ev = nic.next_event(DEVICE_WAIT).map_err(e("WORK_DONE"))?;
    check(
        ev.kind == event::WORK_DONE && ev.ctx == CTX && ev.addr == tag,
        || format!("event {ev:?}, want WORK_DONE of context {CTX} tag {tag:#x}"),
    )?;
    let signalled = nic
        .signalled_since(VECTOR_EVENT, irqs)
        .map_err(e("vector 0"))?;
    check(signalled, || {
        "no EVENT interrupt on the vector 0 eventfd".into()
    })?;
    let done = nic.counters().since(&before, counter::WORK_COMPLETED);
    check(done == 1, || format!("WORK_COMPLETED +{done}"))
}

/// A COPY between two buffers mapped in our own translation table, at odd offsets: the
/// destination holds the source's bytes exactly there, and nothing around them changed.
pub fn copy_through_own_table(s: &mut Session) -> CaseResult {
    let (nic, ctx) = s.ctx()?;
    let src = ctx
        .buffer(nic, 4, BufferFlags::empty())
        .map_err(e("source"))?;
    let dst = ctx
        .buffer(nic, 4, BufferFlags::WRITABLE)
        .map_err(e("destination"))?;
    let data = pattern(src.len as usize, 0x5a);
    nic.mem.write(src.iova, &data);
    let (so, dof, len) = (17usize, 33usize, 4 * 4096 - 100);
    let before = nic.counters();
    ctx.post(
        nic,
        copy(src.va + so as u64, dst.va + dof as u64, len as u32, 5),
    )
    .map_err(e("post COPY"))?;
    let c = ctx.wait_completion(nic).map_err(e("COPY completion"))?;
    check(
        c.tag == 5 && c.status == completion::OK && c.bytes == len as u64,
        || format!("completion {c:?}"),
    )?;
    let got = contents(nic, &dst);
    check(got[dof..dof + len] == data[so..so + len], || {
        let at = (0..len)
            .find(|&i| got[dof + i] != data[so + i])
            .unwrap_or(0);
        format!("destination differs from the source at byte {at}")
    })?;
    check(
        got[..dof].iter().chain(&got[dof + len..]).all(|&b| b == 0),
        || "the COPY wrote outside its destination range".into(),
    )?;
    let after = nic.counters();
    let (faults, bytes, walks) = (
        after.since(&before, counter::FAULTS),
        after.since(&before, counter::DMA_BYTES),
        after.since(&before, counter::WALKS),
    );
    check(faults == 0 && bytes >= len as u64 && walks > 0, || {
        format!("FAULTS +{faults} DMA_BYTES +{bytes} WALKS +{walks}")
    })
}

/// TRAFFIC sequential writes: every operation writes the same seeded pattern, so the
/// slots of a range are equal, two ranges with one seed are equal, another seed differs;
/// sequential reads complete their operations and change nothing.
pub fn traffic_generator(s: &mut Session) -> CaseResult {
    let (nic, ctx) = s.ctx()?;
    let op = 4096u32;
    let bufs: Vec<Buffer> = (0..3)
        .map(|_| ctx.buffer(nic, 4, BufferFlags::WRITABLE))
        .collect::<Result<_, _>>()
        .map_err(e("buffers"))?;
    let traffic = |b: &Buffer, pattern: u32, ops: u64, op_size: u32, seed: u64| WorkDesc {
        opcode: work::TRAFFIC,
        len: b.len as u32,
        tag: seed,
        src: b.va,
        op_size,
        pattern,
        ops,
        seed,
        ..Default::default()
    };
    let before = nic.counters();
    for (b, seed) in bufs.iter().zip([0x5eed, 0x5eed, 0x5eee]) {
        ctx.post(nic, traffic(b, work::PATTERN_SEQ_WRITE, 4, op, seed))
            .map_err(e("post TRAFFIC"))?;
        let c = ctx.wait_completion(nic).map_err(e("TRAFFIC completion"))?;
        check(c.status == completion::OK && c.bytes == 4, || {
            format!("write completion {c:?}, want OK and 4 operations")
        })?;
    }
    let ops = nic.counters().since(&before, counter::TRAFFIC_OPS);
    check(ops == 12, || format!("TRAFFIC_OPS +{ops}, want +12"))?;
    let [a, b, c] = [0, 1, 2].map(|i| contents(nic, &bufs[i]));
    let slot = op as usize;
    check(a[..slot].iter().any(|&x| x != 0), || {
        "the first write operation left its slot zero".into()
    })?;
    check(a.chunks(slot).all(|s| *s == a[..slot]), || {
        "the slots of one range hold different data".into()
    })?;
    check(a == b, || "two ranges written with one seed differ".into())?;
    check(a[..slot] != c[..slot], || {
        "two seeds wrote the same data".into()
    })?;
    let before = nic.counters();
    ctx.post(nic, traffic(&bufs[0], work::PATTERN_SEQ_READ, 8, op / 2, 1))
        .map_err(e("post TRAFFIC read"))?;
    let r = ctx
        .wait_completion(nic)
        .map_err(e("TRAFFIC read completion"))?;
    check(r.status == completion::OK && r.bytes == 8, || {
        format!("read completion {r:?}, want OK and 8 operations")
    })?;
    let ops = nic.counters().since(&before, counter::TRAFFIC_OPS);
    check(ops == 8, || {
        format!("TRAFFIC_OPS +{ops} for the reads, want +8")
    })?;
    check(contents(nic, &bufs[0]) == a, || {
        "sequential reads changed the range".into()
    })
}

/// The device after everything: enabled, not halted, no error, no stale access, no event
/// dropped or left unread, no work outstanding.
pub fn device_clean(s: &mut Session) -> CaseResult {
    let nic = &mut s.nic;
    let st = nic.reg(reg::STATUS);
    check(st == status::ENABLED, || format!("STATUS {st:#x}"))?;
    let c = nic.counters();
    for (name, i) in [
        ("STALE_ACCESSES", counter::STALE_ACCESSES),
        ("ERRORS", counter::ERRORS),
        ("EVENTS_DROPPED", counter::EVENTS_DROPPED),
        ("BAD_DOORBELL", counter::BAD_DOORBELL),
        ("BAD_MMIO", counter::BAD_MMIO),
    ] {
        let v = c.0[i as usize];
        check(v == 0, || format!("{name} = {v}"))?;
    }
    println!(
        "# DMA arena: {} KiB of {} KiB used, backed by a huge page: {}",
        nic.mem.used() / 1024,
        crate::dma::ARENA_SIZE / 1024,
        match nic.mem.huge_backed() {
            Some(true) => "yes",
            Some(false) => "no",
            None => "unknown",
        }
    );
    let left = nic.pending_events();
    check(left.is_empty(), || format!("unread events {left:?}"))?;
    if let Some(ctx) = &s.ctx {
        check(ctx.outstanding() == 0, || {
            format!("{} work items outstanding", ctx.outstanding())
        })?;
    }
    Ok(())
}
