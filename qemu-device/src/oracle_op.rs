//! Carrying out an `ORACLE_OP` write (spec §8a), on the socket thread before it answers
//! the write: the arguments from the oracle registers, the report recorded in the
//! [`Oracle`](crate::oracle::Oracle), and check 1 (a valid table entry that outlives the
//! invalidation) on the context's translation table.

use mnic_abi::{counter, error, oracle_op, reg, status, CtxEntry, CTX_FLAG_VALID, NUM_CONTEXTS};
use zerocopy::FromBytes;

use crate::mem::{self, GuestMem};
use crate::shared::Shared;
use crate::translate::{find_leaf, Leaf, Scan, SCAN_BUDGET};

/// Carries out a write of `op` to `ORACLE_OP` (the socket thread, before it answers the
/// write), with the arguments in the oracle registers and `m` for the table check.
pub fn carry_out(sh: &Shared, op: u32, m: &GuestMem) {
    let ctx = sh.reg(reg::ORACLE_CTX);
    let Some(c) = u16::try_from(ctx).ok().filter(|_| ctx < NUM_CONTEXTS) else {
        if op == oracle_op::ARM {
            sh.set_reg(reg::ORACLE_GEN, 0);
        }
        sh.counters.inc(counter::BAD_MMIO);
        return;
    };
    let gen = sh.reg(reg::ORACLE_GEN);
    match op {
        oracle_op::ARM => {
            let g = sh.oracle.arm(c);
            sh.set_reg(reg::ORACLE_GEN, g);
            tracing::debug!(ctx = c, gen = g, "oracle armed");
        }
        oracle_op::DISARM => {
            let done = sh.oracle.disarm(c, gen);
            tracing::debug!(ctx = c, gen, done, "oracle disarm");
        }
        oracle_op::INVALIDATE => invalidate(sh, c, gen, m),
        _ => sh.counters.inc(counter::BAD_MMIO),
    }
}

/// An `INVALIDATE` report: recorded for check 2, then check 1 on the table.
fn invalidate(sh: &Shared, c: u16, gen: u32, m: &GuestMem) {
    let start = sh.reg64(reg::ORACLE_START_LO, reg::ORACLE_START_HI);
    // End 0 is 2^64; u64::MAX stands for it (no access reaches that byte: VAs are < 2^47).
    let end = match sh.reg64(reg::ORACLE_END_LO, reg::ORACLE_END_HI) {
        0 => u64::MAX,
        e => e,
    };
    if end <= start {
        sh.counters.inc(counter::BAD_MMIO);
        return;
    }
    let Some(t) = sh.oracle.record(c, gen, start, end) else {
        // Not counted: a report racing a CTX_DISABLE or a new ARM is expected.
        tracing::debug!(ctx = c, gen, "oracle report for another generation ignored");
        return;
    };
    sh.counters.inc(counter::ORACLE_INVALIDATIONS);
    if let Some(leaf) = table_leaf(sh, c, start, end, m) {
        sh.counters.inc(counter::ORACLE_VIOLATIONS);
        tracing::warn!(
            ctx = c,
            start,
            end,
            t,
            leaf_va = leaf.va,
            leaf_gpa = leaf.gpa,
            "oracle: a valid table entry outlives an invalidation"
        );
        if sh.strict() {
            halt_soon(sh, c, leaf.va.max(start));
        }
    }
}

/// Check 1: a valid leaf of context `c`'s table overlapping `[start, end)`, read through
/// the context table the registers point at.
fn table_leaf(sh: &Shared, c: u16, start: u64, end: u64, m: &GuestMem) -> Option<Leaf> {
    let table = sh.reg64(reg::CTX_TABLE_LO, reg::CTX_TABLE_HI);
    let at = table.checked_add(64 * u64::from(c))?;
    let mut b = [0u8; 64];
    mem::read(m, at, &mut b).ok()?;
    let e = CtxEntry::read_from_bytes(&b).ok()?;
    if e.flags & CTX_FLAG_VALID == 0 {
        return None;
    }
    match find_leaf(m, e.root, start, end, SCAN_BUDGET) {
        Scan::Leaf(leaf) => Some(leaf),
        Scan::Clear => None,
        Scan::Incomplete => {
            tracing::warn!(
                ctx = c,
                start,
                end,
                "oracle: table too large, checked in part"
            );
            None
        }
    }
}

/// Strict mode, socket thread: the guest sees the halt at once (STATUS, ERROR_CODE, and
/// doorbells are refused); the data thread halts at its next round or access and does the
/// rest (ERROR event, error counters, interrupt).
fn halt_soon(sh: &Shared, c: u16, va: u64) {
    sh.oracle.request_halt(c, va);
    sh.set_reg_if_zero(reg::ERROR_CODE, error::ORACLE_VIOLATION);
    sh.or_reg(reg::STATUS, status::HALTED);
    sh.kick();
}
