//! Data cases: PUT and GET of every size that matters to the packet layer, and a target whose
//! memory no CPU touched (on-demand paging at the target).

use mnic::Access;
use mnic_abi::fabric::PUT_CHUNK;
use mnic_abi::fabric_counter::{NETWORK_FAULTS, PUT_SERVED, RNR_RECEIVED, RNR_SENT};
use mnic_guest_util::{check, e, is_zero, note, pattern, CaseResult, Outcome, PAGE};

use crate::pair::*;

/// One byte; one full PUT packet (`PUT_CHUNK`); one byte more (two packets); a page; 64 KiB
/// and an odd tail; 1 MiB (hundreds of packets, many target pages).
const SIZES: [usize; 6] = [1, PUT_CHUNK, PUT_CHUNK + 1, 4096, (64 << 10) + 13, 1 << 20];
/// The target range starts 7 bytes before a page boundary, so every size above 7 crosses
/// target pages; the local ranges start at other odd offsets.
const REMOTE_OFF: usize = PAGE - 7;
const SRC_OFF: usize = 3;
const BACK_OFF: usize = 5;
/// What the target holds around the written range (must survive every PUT).
const GUARD: u64 = 0x6a;

/// For each size: PUT from the initiator, the target holds exactly those bytes and its
/// surroundings are untouched; GET brings them back, the bytes around the local destination
/// untouched. Completions report the full length.
pub fn put_get_sizes() -> CaseResult {
    let p = pair()?;
    let len = 2 << 20;
    let w = Window::new(&p.target, len, Access::READ_WRITE, Some(GUARD))?;
    let (src, _rs) = local(&p.init, len, Access::READ, 0)?;
    let (back, _rb) = local(&p.init, len, Access::WRITE, 0)?;
    for (i, &n) in SIZES.iter().enumerate() {
        let seed = 100 + i as u64;
        src.fill(0, len, seed);
        let at = REMOTE_OFF as u64;
        p.put(src.at(SRC_OFF), &w.region, at, n, &format!("PUT {n}"))?;
        let want = pattern(SRC_OFF, n, seed);
        same(
            &w.map.read(REMOTE_OFF, n),
            &want,
            &format!("target after PUT {n}"),
        )?;
        w.holds(0, REMOTE_OFF, GUARD)?;
        let after = REMOTE_OFF + n;
        w.holds(after, PAGE.min(len - after), GUARD)?;

        back.madvise(0, len, libc::MADV_DONTNEED)?;
        p.get(back.at(BACK_OFF), &w.region, at, n, &format!("GET {n}"))?;
        same(&back.read(BACK_OFF, n), &want, &format!("GET {n}"))?;
        is_zero(
            &back.read(0, BACK_OFF),
            "bytes before the GET's destination",
        )?;
        is_zero(
            &back.read(BACK_OFF + n, PAGE),
            "bytes after the GET's destination",
        )?;
        w.map.fill(0, len, GUARD);
    }
    p.no_stale()?;
    Ok(Outcome::Pass)
}

/// The target's buffer is never touched by its CPU: nothing is resident and the target
/// device has no entry for it; a PUT faults it in at the target (the target context's fault
/// count rises), and a GET of another untouched buffer reads zeroes, faulting it in too.
pub fn target_untouched() -> CaseResult {
    let p = pair()?;
    let len = 64 * PAGE;
    let w = Window::new(&p.target, len, Access::READ_WRITE, None)?;
    let resident = w.map.resident(0, len)?.iter().filter(|r| **r).count();
    check(resident == 0, || {
        format!("{resident} target pages resident before any access")
    })?;
    let before = p.target.query(w.map.va(), len as u64).map_err(e("QUERY"))?;
    check(before.valid() == 0, || {
        "target device entries before any access".into()
    })?;
    let (src, _rs) = local(&p.init, len, Access::READ, 7)?;
    let f0 = faults(&p.target)?;
    let mut target = FabricStats::new(&p.target, [NETWORK_FAULTS, RNR_SENT, PUT_SERVED])?;
    let mut init = FabricStats::new(&p.init, [RNR_RECEIVED])?;
    p.put(src.va(), &w.region, 0, len, "PUT")?;
    let f1 = faults(&p.target)?;
    check(f1 > f0, || "the PUT raised no fault at the target".into())?;
    // The target's device saw it too: it parked network faults and answered RNR (at least
    // once per fault), every RNR reached the initiator, and it wrote at least as many
    // packets as the PUT needs (none crosses a page).
    let [net_faults, rnr, served] = target.grew()?;
    let [rnr_received] = init.grew()?;
    let packets = (len / PAGE * PAGE.div_ceil(PUT_CHUNK)) as u64;
    check(
        net_faults > 0 && rnr >= net_faults && rnr_received == rnr && served >= packets,
        || {
            format!(
                "PUT into untouched memory: target {net_faults} network faults, {rnr} RNR \
                 sent, {served} packets written (want >= {packets}); initiator {rnr_received} \
                 RNR received"
            )
        },
    )?;
    w.holds(0, len, 7)?;
    let valid = p
        .target
        .query(w.map.va(), len as u64)
        .map_err(e("QUERY"))?
        .valid();
    check(valid > 0, || "no target device entry after the PUT".into())?;

    let untouched = Window::new(&p.target, 16 * PAGE, Access::READ_WRITE, None)?;
    let (back, _rb) = local(&p.init, 16 * PAGE, Access::WRITE, 9)?;
    p.get(back.va(), &untouched.region, 0, 16 * PAGE, "GET")?;
    is_zero(&back.read(0, 16 * PAGE), "GET of untouched target memory")?;
    let f2 = faults(&p.target)?;
    check(f2 > f1, || "the GET raised no fault at the target".into())?;
    note(format!(
        "target faults: {} for the PUT of {len} bytes, {} for the GET; {valid} entries after; \
         target device: {net_faults} network faults, {rnr} RNR for the PUT",
        f1 - f0,
        f2 - f1
    ));
    p.no_stale()?;
    Ok(Outcome::Pass)
}
