//! What the target refuses before it touches anything, each as its typed error: an unknown
//! key, a range outside the registration, a key without the access, a context that is not
//! enabled (closed, or never opened), a node that is no peer, and a key that died with its
//! registration. Target memory is unchanged after every refusal.

use mnic::{Access, Endpoint, RemoteError, RemoteKey, RemoteRegion, Work};
use mnic_abi::fabric_counter::{ERRORS_SENT, GET_SERVED, PUT_SERVED};
use mnic_guest_util::nic::{self, TIMEOUT};
use mnic_guest_util::{check, e, fork_pair, CaseResult, Link, Outcome, PAGE};

use crate::pair::*;

const LEN: usize = 8 * PAGE;

/// A PUT and a GET through `region` both fail with `want`; the target window keeps pattern
/// `seed` and the GET's destination its own (`seed + 2`).
fn both_refused(
    p: &Pair,
    w: &Window,
    region: &RemoteRegion,
    off: u64,
    want: RemoteError,
    seed: u64,
    what: &str,
) -> Result<(), String> {
    let (src, _rs) = local(&p.init, PAGE, Access::READ, seed + 1)?;
    let (back, _rb) = local(&p.init, PAGE, Access::WRITE, seed + 2)?;
    want_remote(
        p.run(Work::put_va(src.va(), region, off, 16)),
        want,
        &format!("PUT, {what}"),
    )?;
    want_remote(
        p.run(Work::get_va(back.va(), region, off, 16)),
        want,
        &format!("GET, {what}"),
    )?;
    mnic_guest_util::is_pattern(&back.read(0, PAGE), 0, seed + 2)
        .map_err(|m| format!("GET destination changed, {what}: {m}"))?;
    w.holds(0, LEN, seed)
}

/// A key the target never gave → `BAD_KEY`; a node that is not a peer → `NO_ROUTE`; a context
/// index nobody opened on the target → `NO_CONTEXT`.
pub fn bad_key_route_context() -> CaseResult {
    let p = pair()?;
    let w = Window::new(&p.target, LEN, Access::READ_WRITE, Some(80))?;
    let r = w.region;
    // Each refusal the target makes is one error answer for one packet (a PUT or GET of 16
    // bytes is one packet, and the transport delivers it once); it serves nothing.
    let mut target = FabricStats::new(&p.target, [ERRORS_SENT, PUT_SERVED, GET_SERVED])?;
    let mut refusals = |what: &str, want: u64| -> Result<(), String> {
        let [errors, puts, gets] = target.grew()?;
        check(errors == want && puts == 0 && gets == 0, || {
            format!(
                "{what}: the target device sent {errors} error answers (want {want}) and \
                 served {puts} PUT, {gets} GET packets"
            )
        })
    };
    let forged_key =
        RemoteKey::new(r.key.get() ^ 0x8000_0001).ok_or_else(|| "key collision".to_string())?;
    both_refused(
        &p,
        &w,
        &RemoteRegion {
            key: forged_key,
            ..r
        },
        0,
        RemoteError::BadKey,
        80,
        "unknown key",
    )?;
    refusals("unknown key", 2)?;
    let stranger = Endpoint::new(0x7ff0, u32::from(r.endpoint.ctx)).ok_or("endpoint")?;
    both_refused(
        &p,
        &w,
        &RemoteRegion {
            endpoint: stranger,
            ..r
        },
        0,
        RemoteError::NoRoute,
        80,
        "no such node",
    )?;
    refusals("no such node (nothing leaves the initiator)", 0)?;
    let unused_ctx = Endpoint::new(u32::from(r.endpoint.node), 255).ok_or("endpoint")?;
    check(unused_ctx != r.endpoint, || {
        "the target context is 255".into()
    })?;
    both_refused(
        &p,
        &w,
        &RemoteRegion {
            endpoint: unused_ctx,
            ..r
        },
        0,
        RemoteError::NoContext,
        80,
        "context not open",
    )?;
    refusals("context not open", 2)?;
    p.no_stale()?;
    Ok(Outcome::Pass)
}

/// The library refuses a range that leaves the region before posting; a region claimed
/// larger (or starting earlier) than the registration reaches the target, which refuses a
/// range wholly outside the registration with `BAD_RANGE` and changes nothing. A PUT or
/// GET that straddles the registration's end is refused whole, even when the target's
/// page inside the registration is translated on its device: every packet carries the
/// operation's range, and the target checks that against the key, not just the packet's.
pub fn range_outside_registration() -> CaseResult {
    let p = pair()?;
    let w = Window::new(&p.target, LEN, Access::READ_WRITE, Some(90))?;
    let r = w.region;
    check(
        Work::put_va(w.map.va(), &r, (LEN - 8) as u64, 16).is_err(),
        || "the library posted a PUT that leaves its region".into(),
    )?;
    let longer = RemoteRegion {
        len: r.len + PAGE as u64,
        ..r
    };
    both_refused(
        &p,
        &w,
        &longer,
        LEN as u64,
        RemoteError::BadRange,
        90,
        "range past the end",
    )?;
    let earlier = RemoteRegion {
        va: r.va - PAGE as u64,
        len: r.len + PAGE as u64,
        ..r
    };
    both_refused(
        &p,
        &w,
        &earlier,
        0,
        RemoteError::BadRange,
        90,
        "range before the start",
    )?;
    // The last page translated writable on the target's device: a PUT of the bytes it
    // already holds, so the packet inside the registration would be written if checked
    // alone.
    let (same, _rsame) = local(&p.init, LEN, Access::READ, 90)?;
    let last = LEN - PAGE;
    p.put(
        same.at(last),
        &r,
        last as u64,
        PAGE,
        "PUT of the last page's own bytes",
    )?;
    let (src, _rs) = local(&p.init, PAGE, Access::READ, 91)?;
    want_remote(
        p.run(Work::put_va(src.va(), &longer, (LEN - 8) as u64, 16)),
        RemoteError::BadRange,
        "PUT straddling the registration's end",
    )?;
    w.holds(0, LEN, 90)
        .map_err(|m| format!("after a straddling PUT: {m}"))?;
    let (back, _rb) = local(&p.init, PAGE, Access::WRITE, 92)?;
    want_remote(
        p.run(Work::get_va(back.va(), &longer, (LEN - 8) as u64, 16)),
        RemoteError::BadRange,
        "GET straddling the registration's end",
    )?;
    mnic_guest_util::is_pattern(&back.read(0, PAGE), 0, 92)
        .map_err(|m| format!("GET destination changed by a straddling GET: {m}"))?;
    w.holds(0, LEN, 90)?;
    p.no_stale()?;
    Ok(Outcome::Pass)
}

/// A key registered READ only: PUT → `BAD_ACCESS` (nothing written), GET works.
pub fn read_only_key_put() -> CaseResult {
    let p = pair()?;
    let w = Window::new(&p.target, LEN, Access::READ, Some(100))?;
    let (src, _rs) = local(&p.init, LEN, Access::READ, 101)?;
    want_remote(
        p.run(Work::put_va(src.va(), &w.region, 0, LEN as u32)),
        RemoteError::BadAccess,
        "PUT through a read-only key",
    )?;
    w.holds(0, LEN, 100)?;
    let (back, _rb) = local(&p.init, LEN, Access::WRITE, 0)?;
    p.get(back.va(), &w.region, 0, LEN, "GET through a read-only key")?;
    mnic_guest_util::is_pattern(&back.read(0, LEN), 0, 100)?;
    p.no_stale()?;
    Ok(Outcome::Pass)
}

/// A key registered WRITE only: GET → `BAD_ACCESS` (nothing read into the destination), PUT
/// works.
pub fn write_only_key_get() -> CaseResult {
    let p = pair()?;
    let w = Window::new(&p.target, LEN, Access::WRITE, Some(110))?;
    let (back, _rb) = local(&p.init, LEN, Access::WRITE, 0)?;
    want_remote(
        p.run(Work::get_va(back.va(), &w.region, 0, LEN as u32)),
        RemoteError::BadAccess,
        "GET through a write-only key",
    )?;
    mnic_guest_util::is_pattern(&back.read(0, LEN), 0, 0)
        .map_err(|m| format!("GET destination changed after BAD_ACCESS: {m}"))?;
    let (src, _rs) = local(&p.init, LEN, Access::READ, 111)?;
    p.put(src.va(), &w.region, 0, LEN, "PUT through a write-only key")?;
    w.holds(0, LEN, 111)?;
    p.no_stale()?;
    Ok(Outcome::Pass)
}

/// Sends a region over a parent/child link (its 24-byte form, three messages).
fn send_region(link: &Link, r: &RemoteRegion) {
    for chunk in r.to_bytes().chunks(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        link.send(u64::from_le_bytes(word));
    }
}

fn recv_region(link: &Link) -> Result<RemoteRegion, String> {
    let mut bytes = Vec::with_capacity(RemoteRegion::BYTES);
    for _ in 0..RemoteRegion::BYTES / 8 {
        bytes.extend_from_slice(&link.recv()?.to_le_bytes());
    }
    RemoteRegion::from_bytes(&bytes).map_err(e("region"))
}

/// The target is another process: it opens its own context, registers a buffer and hands
/// the region over a pipe (the byte form); the initiator's PUT lands (the child checks its
/// buffer), then the child exits, closing its file. A PUT to the same region now fails with
/// `REMOTE_NO_CONTEXT`.
pub fn target_context_closed() -> CaseResult {
    let p = pair()?;
    let (src, _rs) = local(&p.init, LEN, Access::READ, 121)?;
    let region = fork_pair(
        |link| {
            let ctx = nic::open_path(TARGET)?;
            ctx.setup_queues(nic::queue_config())
                .map_err(e("setup_queues"))?;
            let buf = mnic::DmaBuffer::new(LEN).map_err(e("buffer"))?;
            let reg = ctx
                .register(&buf, Access::READ_WRITE | Access::REMOTE)
                .map_err(e("register"))?;
            let region = reg.remote_region().ok_or("no remote region")?;
            send_region(link, &region);
            link.recv()?;
            mnic_guest_util::is_pattern(&buf.to_vec(), 0, 121)
                .map_err(|m| format!("child's buffer: {m}"))?;
            link.send(1);
            // Exit closes the context: the driver disables it and drops its keys.
            Ok(())
        },
        |link, _pid| {
            let region = recv_region(link)?;
            p.init
                .run(
                    &Work::put_va(src.va(), &region, 0, LEN as u32).map_err(e("PUT"))?,
                    TIMEOUT,
                )
                .map_err(e("PUT to the child's context"))?;
            link.send(1);
            link.recv()?;
            Ok(region)
        },
    )?;
    // The child is reaped: its file is closed.
    want_remote(
        p.run(Work::put_va(src.va(), &region, 0, PAGE as u32)),
        RemoteError::NoContext,
        "PUT to a closed context",
    )?;
    p.no_stale()?;
    Ok(Outcome::Pass)
}

/// Deregistration kills the key: a PUT after it fails with `BAD_KEY` and the memory keeps
/// what the PUT before it wrote.
pub fn deregister_then_put() -> CaseResult {
    let p = pair()?;
    let mut w = Window::new(&p.target, LEN, Access::READ_WRITE, Some(130))?;
    let (src, _rs) = local(&p.init, LEN, Access::READ, 131)?;
    p.put(src.va(), &w.region, 0, LEN, "PUT before deregistration")?;
    w.holds(0, LEN, 131)?;
    w.deregister()?;
    src.fill(0, LEN, 132);
    want_remote(
        p.run(Work::put_va(src.va(), &w.region, 0, LEN as u32)),
        RemoteError::BadKey,
        "PUT after deregistration",
    )?;
    let (back, _rb) = local(&p.init, LEN, Access::WRITE, 0)?;
    want_remote(
        p.run(Work::get_va(back.va(), &w.region, 0, LEN as u32)),
        RemoteError::BadKey,
        "GET after deregistration",
    )?;
    w.holds(0, LEN, 131)?;
    p.no_stale()?;
    Ok(Outcome::Pass)
}
