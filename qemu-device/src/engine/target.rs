//! The target side of PUT and GET (docs/fabric.md 14.13): one delivered `PUT` or
//! `GET_REQ`, served by the data thread between commands. The payload is checked on its
//! own (malformed: refused, counted, not answered), then against the context and its
//! remote keys, in the specification's order, each failure answered with a `REPLY` and
//! nothing touched; a packet that passes is translated through the context's table like
//! any of its DMA (`piece`: TLB, walk, the stale checker, the oracle's record; the DMA
//! gate right before memory), and the oracle judges it once the packet is served. A
//! missing or read-only translation writes nothing: the packet is answered `RNR` and,
//! if the context has no fault parked, a network fault is parked for its driver.
//!
//! A `GET_REQ` with key 0 is a rendezvous pull (docs/fabric.md 14.14): instead of a key,
//! the context's current item must be the SEND it names, addressed to the puller, and
//! the range inside that SEND's buffer; the rest is a GET's.

use mnic_abi::fabric::{nak, ptype, GetRespHeader, RemoteAccess, ReplyHeader, GET_CHUNK};
use mnic_abi::{counter, fabric_counter, pte, Endpoint};
use zerocopy::{FromBytes, IntoBytes};

use super::context::{Ctx, Origin, Site, Stage};
use super::error::{AccessError, Fault};
use super::state::Core;
use crate::fabric::Message;
use crate::mem::{self, GuestMem};

/// The `info` of a network fault's FAULT event: bit 32 set, the source node below.
pub const NETWORK_FAULT: u64 = 1 << 32;

/// The errno a target answers `REMOTE_FAULT` with when its own table or memory failed
/// the access (no driver aborted anything): `EFAULT`.
pub(super) const EFAULT: u32 = 14;

/// A well-formed `PUT` or `GET_REQ`.
struct Access<'a> {
    put: bool,
    key: u32,
    va: u64,
    len: u64,
    req_id: u32,
    /// The whole operation's remote range (start VA, length): what the key must cover.
    op: (u64, u64),
    /// A PUT's data.
    data: &'a [u8],
}

/// Parses the payload of a `PUT` (`put`) or `GET_REQ`: `None` if malformed.
fn parse(put: bool, payload: &[u8]) -> Option<Access<'_>> {
    let (ra, rest) = RemoteAccess::read_from_prefix(payload).ok()?;
    let op = ra.operation()?;
    let len = ra.len.get();
    let va = ra.va.get();
    let fits_page = (va & (pte::PAGE_SIZE - 1)).checked_add(u64::from(len))? <= pte::PAGE_SIZE;
    let ok = ra.reserved.get() == 0
        && len != 0
        && fits_page
        && va.checked_add(u64::from(len)).is_some()
        && if put {
            rest.len() == len as usize
        } else {
            rest.is_empty() && len as usize <= GET_CHUNK
        };
    ok.then_some(Access {
        put,
        key: ra.rkey.get(),
        va,
        len: u64::from(len),
        req_id: ra.req_id.get(),
        op,
        data: rest,
    })
}

/// Why a packet was not served: the `REPLY` status and detail.
pub(super) type Refused = (u16, u32);

/// Whether context `x`'s current item is a SEND to `from` whose buffer holds the whole
/// pull that `a` is a packet of.
fn pull_allowed(x: &Ctx, from: Endpoint, a: &Access) -> bool {
    let Stage::Exec(item) = &x.stage else {
        return false;
    };
    item.msg
        .as_deref()
        .is_some_and(|s| !a.put && s.serves_pull(from, a.req_id, a.op.0, a.op.1))
}

impl Core {
    /// Serves one delivered `PUT` or `GET_REQ` and answers it.
    pub(super) fn serve_access(&mut self, m: &GuestMem, msg: &Message) {
        let put = msg.ptype == ptype::PUT;
        let Some(a) = parse(put, &msg.payload) else {
            self.sh.rma.bump(fabric_counter::REFUSED);
            tracing::debug!(
                src = msg.src_node,
                ptype = msg.ptype,
                "malformed RMA payload"
            );
            return;
        };
        let r = self.access(m, msg, &a);
        if !self.oracle_pieces.is_empty() {
            self.oracle_judge();
        }
        let c = msg.dst_ctx;
        let (t, payload) = match r {
            Ok(data) if !put => {
                if a.key == 0 {
                    self.sh.rma.bump(fabric_counter::PULL_SERVED);
                } else {
                    self.sh.rma.bump(fabric_counter::GET_SERVED);
                }
                let h = GetRespHeader {
                    req_id: a.req_id.into(),
                    reserved: 0.into(),
                    va: a.va.into(),
                };
                let mut p = h.as_bytes().to_vec();
                p.extend_from_slice(&data);
                (ptype::GET_RESP, p)
            }
            r => {
                let (status, detail) = match r {
                    Ok(_) => {
                        self.sh.rma.bump(fabric_counter::PUT_SERVED);
                        (nak::OK, 0)
                    }
                    Err(e) => e,
                };
                let h = ReplyHeader {
                    req_id: a.req_id.into(),
                    status: status.into(),
                    va: a.va.into(),
                    detail: detail.into(),
                    ..ReplyHeader::default()
                };
                (ptype::REPLY, h.as_bytes().to_vec())
            }
        };
        if let Some(l) = &self.link {
            // Refused only with the send queue full: the initiator's timeout covers it.
            let _ = l.send(&self.sh.rma, msg.src_node, t, c, msg.src_ctx, &payload);
        }
    }

    /// The checks, the translation and the access; `Ok` with the data read for a GET.
    fn access(&mut self, m: &GuestMem, msg: &Message, a: &Access) -> Result<Vec<u8>, Refused> {
        let r = self.access_inner(m, msg, a);
        if let Err((s, _)) = r {
            if s == nak::RNR {
                self.sh.rma.bump(fabric_counter::RNR_SENT);
            } else {
                self.sh.rma.bump(fabric_counter::ERRORS_SENT);
            }
        }
        r
    }

    fn access_inner(
        &mut self,
        m: &GuestMem,
        msg: &Message,
        a: &Access,
    ) -> Result<Vec<u8>, Refused> {
        let c = msg.dst_ctx;
        let i = usize::from(c);
        let from = Endpoint {
            node: msg.src_node,
            ctx: msg.src_ctx,
        };
        let (root, pull_ok) = match self.ctxs.get(i).and_then(Option::as_ref) {
            Some(x) if self.enabled && !self.halted => (x.root(), pull_allowed(x, from, a)),
            _ => return Err((nak::NO_CONTEXT, 0)),
        };
        if a.key == 0 {
            // No key is ever 0: a pull, authorised by the SEND it names.
            if !pull_ok {
                self.sh.rma.bump(fabric_counter::PULL_REFUSED);
                return Err((nak::BAD_KEY, 0));
            }
        } else {
            let key = self.keys.get(c, a.key).ok_or((nak::BAD_KEY, 0))?;
            // The operation, not only this packet: one that leaves the key's range is
            // refused in every packet, so none of it is written or read.
            if !key.covers(a.op.0, a.op.1) {
                return Err((nak::BAD_RANGE, 0));
            }
            if !(if a.put { key.write } else { key.read }) {
                return Err((nak::BAD_ACCESS, 0));
            }
        }
        let mark = self.oracle_pieces.len();
        let p = match self.piece(m, c, root, a.va, a.len, a.put) {
            Ok(p) => p,
            Err(AccessError::Fault(f)) => {
                let origin = Origin {
                    node: msg.src_node,
                    ctx: msg.src_ctx,
                    req_id: a.req_id,
                };
                return Err(self.network_fault(i, f, origin));
            }
            Err(AccessError::Failed(e)) => {
                self.report(e, c, 0);
                return Err((nak::REMOTE_FAULT, EFAULT));
            }
            // Not now (bus mastering off, a halt): the initiator retries.
            Err(AccessError::Halted | AccessError::Refused) => return Err((nak::RNR, 0)),
        };
        if p.len < a.len {
            // A leaf ends on a page boundary and the packet does not cross one.
            self.oracle_pieces.truncate(mark);
            return Err((nak::REMOTE_FAULT, EFAULT));
        }
        self.dma_gate(mark, false).map_err(|_| (nak::RNR, 0))?;
        let mut data = Vec::new();
        let r = if a.put {
            mem::write(m, p.gpa, a.data)
        } else {
            data.resize(a.len as usize, 0);
            mem::read(m, p.gpa, &mut data)
        };
        if let Err(e) = r {
            self.oracle_pieces.truncate(mark);
            self.report(super::error::DeviceError::Address { addr: a.va }, c, e.addr);
            return Err((nak::REMOTE_FAULT, EFAULT));
        }
        self.sh.counters.inc(counter::DMA_OPS);
        self.sh.counters.add(counter::DMA_BYTES, a.len);
        if let Some(x) = self.ctxs[i].as_mut() {
            page_back(x, a.va, a.put);
        }
        Ok(data)
    }

    /// A packet of operation `origin` for context `i` faulted with `f`: `REMOTE_FAULT` if
    /// the driver aborted that operation's network fault at that page (for that access),
    /// else `RNR`, parking a network fault if the context has none parked.
    fn network_fault(&mut self, i: usize, f: Fault, origin: Origin) -> Refused {
        let Some(mut x) = self.ctxs.get_mut(i).and_then(Option::take) else {
            return (nak::NO_CONTEXT, 0);
        };
        let r = self.network_fault_of(&mut x, i, f, origin);
        self.ctxs[i] = Some(x);
        r
    }

    /// [`Core::network_fault`] of context `x` (index `i`), taken out of its slot.
    pub(super) fn network_fault_of(
        &mut self,
        x: &mut Ctx,
        i: usize,
        f: Fault,
        origin: Origin,
    ) -> Refused {
        let page = f.va & !(pte::PAGE_SIZE - 1);
        match x.net_abort {
            Some(n) if n.page == page && n.write == f.write && n.origin == origin => {
                (nak::REMOTE_FAULT, n.errno)
            }
            _ => {
                if x.parked.is_none() {
                    self.sh.rma.bump(fabric_counter::NETWORK_FAULTS);
                    let info = NETWORK_FAULT | u64::from(origin.node);
                    self.park_with(x, i as u16, Site::Network, f, info);
                    x.parked_origin = Some(origin);
                }
                (nak::RNR, 0)
            }
        }
    }
}

/// An access of context `x` at `va` (a write if `write`) translated: an earlier ABORT of
/// that page no longer applies (a read that translates says nothing about an aborted
/// write).
pub(super) fn page_back(x: &mut Ctx, va: u64, write: bool) {
    if x.net_abort
        .is_some_and(|n| n.page == va & !(pte::PAGE_SIZE - 1) && (write || !n.write))
    {
        x.net_abort = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(len: u32, va: u64, data: usize) -> Vec<u8> {
        let ra = RemoteAccess {
            rkey: 5.into(),
            len: len.into(),
            va: va.into(),
            req_id: 1.into(),
            op_offset: 0.into(),
            op_len: len.into(),
            reserved: 0.into(),
        };
        let mut p = ra.as_bytes().to_vec();
        p.resize(p.len() + data, 0xab);
        p
    }

    #[test]
    fn malformed_payloads_are_refused() {
        assert!(parse(true, &payload(10, 0x1000, 10)).is_some());
        assert!(parse(false, &payload(10, 0x1000, 0)).is_some());
        assert!(
            parse(true, &payload(10, 0x1000, 10)[..23]).is_none(),
            "short"
        );
        assert!(
            parse(true, &payload(10, 0x1000, 9)).is_none(),
            "data length"
        );
        assert!(parse(true, &payload(0, 0x1000, 0)).is_none(), "empty");
        assert!(parse(false, &payload(0, 0x1000, 0)).is_none(), "empty GET");
        assert!(
            parse(false, &payload(1417, 0x1000, 0)).is_none(),
            "GET_CHUNK"
        );
        assert!(
            parse(false, &payload(16, 0x1ff8, 0)).is_none(),
            "across a page"
        );
        assert!(
            parse(true, &payload(16, 0x1ff8, 16)).is_none(),
            "across a page"
        );
        assert!(
            parse(false, &payload(8, 0x1ff8, 0)).is_some(),
            "up to the end"
        );
        assert!(
            parse(false, &payload(8, u64::MAX - 7, 0)).is_none(),
            "wraps"
        );
        assert!(
            parse(false, &payload(8, 0x1000, 1)).is_none(),
            "GET with data"
        );
        let mut p = payload(8, 0x1000, 0);
        p[28] = 1;
        assert!(parse(false, &p).is_none(), "reserved");
        let mut p = payload(8, 0x1000, 0);
        p[0x18] = 7;
        assert!(
            parse(false, &p).is_none(),
            "packet longer than its operation"
        );
        let mut p = payload(8, 0x1000, 0);
        p[0x14..0x18].copy_from_slice(&0x2000u32.to_le_bytes());
        p[0x18..0x1c].copy_from_slice(&0x3000u32.to_le_bytes());
        assert!(parse(false, &p).is_none(), "operation starting below 0");
        let mut p = payload(8, 0x1ff8, 0);
        p[0x14..0x18].copy_from_slice(&0xff8u32.to_le_bytes());
        p[0x18..0x1c].copy_from_slice(&0x2000u32.to_le_bytes());
        let a = parse(false, &p).expect("a packet inside its operation");
        assert_eq!(a.op, (0x1000, 0x2000));
    }
}
