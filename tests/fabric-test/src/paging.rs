//! Paging under remote access: the target's memory swapped out before and while PUTs stream
//! into it, the initiator's own memory swapped out, and the target's pages migrated between
//! NUMA nodes during a stream. In every case the data arrives intact, the side whose pages
//! went away faults them back, and neither device uses a translation after its
//! invalidation returned.

use mnic::{Access, Work};
use mnic_abi::fabric_counter::{NETWORK_FAULTS, RNR_SENT};
use mnic_guest_util::numa::{move_to_other_node, one_numa_node};
use mnic_guest_util::{check, duration, e, note, CaseResult, Map, Outcome, PAGE};

use crate::pair::*;

/// Pages out `[0, len)` of `map` and returns how many pages left memory (MADV_PAGEOUT only
/// takes what it can; a case needs at least one).
pub(crate) fn page_out(map: &Map, len: usize) -> Result<usize, String> {
    map.madvise(0, len, libc::MADV_PAGEOUT)?;
    let gone = map.resident(0, len)?.iter().filter(|r| !**r).count();
    check(gone > 0, || "MADV_PAGEOUT reclaimed no page".into())?;
    Ok(gone)
}

/// No page of `map` that is out of memory has an entry in `ctx`'s device table.
pub(crate) fn no_entries_for_gone_pages(
    ctx: &mnic::Context,
    map: &Map,
    len: usize,
) -> Result<(), String> {
    let resident = map.resident(0, len)?;
    for (i, _) in resident.iter().enumerate().filter(|(_, r)| !**r) {
        let q = ctx
            .query(map.at(i * PAGE), PAGE as u64)
            .map_err(e("QUERY"))?;
        check(q.valid() == 0, || {
            format!("page {i} is swapped out but still has a device entry")
        })?;
    }
    Ok(())
}

/// PUTs `len` bytes of `src` (pattern `seed`) into `w` as `pieces` work items of equal size,
/// calling `meanwhile(i)` after posting item `i`; every item must succeed and the target
/// must then hold the pattern.
fn put_stream(
    p: &Pair,
    src: &Map,
    w: &Window,
    pieces: usize,
    seed: u64,
    meanwhile: impl FnMut(usize) -> Result<(), String>,
) -> Result<(), String> {
    let len = w.map.len;
    let piece = len / pieces;
    src.fill(0, len, seed);
    let items = (0..pieces)
        .map(|i| {
            Work::put_va(
                src.at(i * piece),
                &w.region,
                (i * piece) as u64,
                piece as u32,
            )
        })
        .collect::<mnic::Result<Vec<_>>>()
        .map_err(e("PUT"))?;
    all_ok(&stream(&p.init, &items, meanwhile)?, "PUT stream")?;
    w.holds(0, len, seed)
}

/// The target's buffer is swapped out after a first PUT filled it: its device entries are
/// gone when madvise returns; the next PUT into half of it faults those pages back at the
/// target, and a GET of the whole buffer returns the new half and the old half, read back
/// from swap by the target's faults.
pub fn swap_target_before_put() -> CaseResult {
    let Some((_one_cpu, p)) = swap_pair()? else {
        return Ok(Outcome::Skip(NO_SWAP.into()));
    };
    let len = 64 * PAGE;
    let w = Window::new(&p.target, len, Access::READ_WRITE, Some(1))?;
    let (src, _rs) = local(&p.init, len, Access::READ, 2)?;
    p.put(src.va(), &w.region, 0, len, "first PUT")?;
    let gone = page_out(&w.map, len)?;
    no_entries_for_gone_pages(&p.target, &w.map, len)?;
    let f0 = faults(&p.target)?;
    let mut target = FabricStats::new(&p.target, [NETWORK_FAULTS, RNR_SENT])?;
    src.fill(0, len / 2, 3);
    p.put(
        src.va(),
        &w.region,
        0,
        len / 2,
        "PUT into swapped-out pages",
    )?;
    let f1 = faults(&p.target)?;
    check(f1 > f0, || "no target fault for swapped-out pages".into())?;
    // The faults were the target device's network faults, each behind an RNR answer.
    let [net_faults, rnr] = target.grew()?;
    check(net_faults > 0 && rnr >= net_faults, || {
        format!(
            "PUT into swapped-out pages: target device {net_faults} network faults, {rnr} RNR sent"
        )
    })?;
    let (back, _rb) = local(&p.init, len, Access::WRITE, 0)?;
    p.get(back.va(), &w.region, 0, len, "GET")?;
    mnic_guest_util::is_pattern(&back.read(0, len / 2), 0, 3)?;
    mnic_guest_util::is_pattern(&back.read(len / 2, len / 2), len / 2, 2)?;
    w.holds(0, len / 2, 3)?;
    w.holds(len / 2, len / 2, 2)?;
    note(format!(
        "{gone} of {} target pages swapped out; {} target faults to bring them back \
         ({net_faults} network faults, {rnr} RNR at the target device)",
        len / PAGE,
        faults(&p.target)? - f0
    ));
    p.no_stale()?;
    Ok(Outcome::Pass)
}

/// PUT streams into a 1 MiB target buffer while the target pages it out every few items:
/// each round's data arrives intact, and the target keeps faulting pages back.
pub fn swap_target_during_put() -> CaseResult {
    let Some((_one_cpu, p)) = swap_pair()? else {
        return Ok(Outcome::Skip(NO_SWAP.into()));
    };
    let len = 1 << 20;
    let w = Window::new(&p.target, len, Access::READ_WRITE, Some(10))?;
    let (src, _rs) = local(&p.init, len, Access::READ, 0)?;
    let f0 = faults(&p.target)?;
    let i0 = invalidations(&p.target)?;
    let until = std::time::Instant::now() + duration(0, 120);
    let mut rounds = 0u64;
    loop {
        put_stream(&p, &src, &w, 16, 20 + rounds, |i| {
            if i % 4 == 3 {
                w.map.madvise(0, len, libc::MADV_PAGEOUT)?;
            }
            Ok(())
        })
        .map_err(|m| format!("round {rounds}: {m}"))?;
        rounds += 1;
        if rounds >= 4 && std::time::Instant::now() >= until {
            break;
        }
    }
    let (f, i) = (faults(&p.target)? - f0, invalidations(&p.target)? - i0);
    check(f > 0 && i > 0, || {
        format!("target: {f} faults, {i} invalidations over {rounds} rounds with page-outs")
    })?;
    note(format!(
        "{rounds} rounds: target {f} faults, {i} invalidations"
    ));
    p.no_stale()?;
    Ok(Outcome::Pass)
}

/// The initiator's own memory swapped out: a PUT's source faults back in at the initiator
/// (the target receives the right bytes), and so does a GET's destination.
pub fn swap_initiator() -> CaseResult {
    let Some((_one_cpu, p)) = swap_pair()? else {
        return Ok(Outcome::Skip(NO_SWAP.into()));
    };
    let len = 64 * PAGE;
    let w = Window::new(&p.target, len, Access::READ_WRITE, Some(30))?;
    let (src, _rs) = local(&p.init, len, Access::READ, 31)?;
    p.put(src.va(), &w.region, 0, len, "first PUT")?;
    w.map.fill(0, len, 30);
    page_out(&src, len)?;
    no_entries_for_gone_pages(&p.init, &src, len)?;
    let f0 = faults(&p.init)?;
    p.put(src.va(), &w.region, 0, len, "PUT from swapped-out source")?;
    let f1 = faults(&p.init)?;
    check(f1 > f0, || {
        "no initiator fault for a swapped-out source".into()
    })?;
    w.holds(0, len, 31)?;

    let (back, _rb) = local(&p.init, len, Access::WRITE, 32)?;
    p.get(back.va(), &w.region, 0, len, "first GET")?;
    page_out(&back, len)?;
    w.map.fill(0, len, 33);
    p.get(
        back.va(),
        &w.region,
        0,
        len,
        "GET into a swapped-out destination",
    )?;
    let f2 = faults(&p.init)?;
    check(f2 > f1, || {
        "no initiator fault for a swapped-out destination".into()
    })?;
    mnic_guest_util::is_pattern(&back.read(0, len), 0, 33)?;
    note(format!(
        "initiator faults: {} (PUT), {} (GET)",
        f1 - f0,
        f2 - f1
    ));
    p.no_stale()?;
    Ok(Outcome::Pass)
}

/// The target's pages migrate to the other NUMA node while a PUT stream writes them: the
/// target's entries go with the old pages, the stream's data lands in the new ones.
pub fn migrate_target_during_put() -> CaseResult {
    if let Some(skip) = one_numa_node() {
        return Ok(skip);
    }
    let p = pair()?;
    let pages = 64;
    let len = pages * PAGE;
    let w = Window::new(&p.target, len, Access::READ_WRITE, Some(40))?;
    let (src, _rs) = local(&p.init, len, Access::READ, 0)?;
    put_stream(&p, &src, &w, 16, 41, |_| Ok(()))?;
    let i0 = invalidations(&p.target)?;
    let mut moved = 0;
    let mut route = (0, 0);
    for round in 0..4 {
        put_stream(&p, &src, &w, 16, 42 + round, |i| {
            if i == 4 {
                let (from, to, status) = move_to_other_node(&w.map, pages)?;
                moved += status.iter().filter(|s| **s == to).count();
                route = (from, to);
            }
            Ok(())
        })
        .map_err(|m| format!("round {round}: {m}"))?;
    }
    check(moved > 0, || "no target page migrated".into())?;
    let i = invalidations(&p.target)? - i0;
    check(i > 0, || {
        "migration invalidated nothing at the target".into()
    })?;
    note(format!(
        "last move node {} -> {}: {moved} page moves over 4 rounds, {i} target invalidations",
        route.0, route.1
    ));
    p.no_stale()?;
    Ok(Outcome::Pass)
}
