//! Datagrams to packets and back (docs/fabric.md 14.2): [`parse`] checks everything a
//! datagram says about itself before anything looks at it, [`encode`] builds one. What
//! needs the node's state (its id, the peer map, the acknowledgement range) is checked by
//! the node (`node.rs`).

use mnic_abi::fabric::{self, flags, nak, ptype, Header, HEADER_LEN, MAGIC, MAX_DATAGRAM, VERSION};
use mnic_abi::NUM_CONTEXTS;
use zerocopy::{FromBytes, IntoBytes};

/// A header's fields in host order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fields {
    /// Packet type.
    pub ptype: u8,
    /// Flags.
    pub flags: u16,
    /// Sender's node.
    pub src_node: u16,
    /// Receiver's node.
    pub dst_node: u16,
    /// Sending context.
    pub src_ctx: u16,
    /// Target context.
    pub dst_ctx: u16,
    /// Sender's epoch.
    pub src_epoch: u32,
    /// Receiver's epoch as the sender knows it (0: not known).
    pub dst_epoch: u32,
    /// Sequence number.
    pub seq: u32,
    /// Cumulative acknowledgement.
    pub ack: u32,
    /// NAK reason.
    pub status: u16,
}

/// A datagram that passed [`parse`].
#[derive(Clone, Copy, Debug)]
pub struct Packet<'a> {
    /// The header.
    pub f: Fields,
    /// The payload (`len` bytes).
    pub payload: &'a [u8],
}

/// Why a datagram was refused (each is counted, docs/fabric.md 14.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Shorter than a header.
    Short,
    /// Longer than `MAX_DATAGRAM`.
    Long,
    /// `len` is not the datagram's length minus the header.
    Length,
    /// Wrong magic or version.
    NotOurs,
    /// A reserved bit or field is set.
    Reserved,
    /// A type this device does not implement.
    Type,
    /// An ACK or NAK with fields it must not have, or an unknown NAK reason, or a
    /// sequenced packet with a status.
    Control,
    /// A context number beyond `NUM_CONTEXTS`.
    Context,
    /// Sent to another node.
    WrongNode,
    /// From a node this one does not know (or from itself).
    UnknownPeer,
    /// From another address than the map's for its source node.
    WrongAddress,
    /// Acknowledges a sequence number never sent.
    ForgedAck,
}

impl Refusal {
    /// Every reason, in a fixed order (the index of its statistic).
    pub const ALL: [Refusal; 12] = [
        Refusal::Short,
        Refusal::Long,
        Refusal::Length,
        Refusal::NotOurs,
        Refusal::Reserved,
        Refusal::Type,
        Refusal::Control,
        Refusal::Context,
        Refusal::WrongNode,
        Refusal::UnknownPeer,
        Refusal::WrongAddress,
        Refusal::ForgedAck,
    ];

    /// Index in [`Refusal::ALL`].
    pub fn index(self) -> usize {
        Refusal::ALL.iter().position(|&r| r == self).unwrap_or(0)
    }
}

/// The types this device accepts: every type of docs/fabric.md 14.3 (the transport's,
/// PUT and GET's, the tagged messages').
fn implemented(t: u8) -> bool {
    ptype::is_sequenced(t) || matches!(t, ptype::ACK | ptype::NAK)
}

/// Parses and checks one datagram on its own.
pub fn parse(d: &[u8]) -> Result<Packet<'_>, Refusal> {
    if d.len() > MAX_DATAGRAM {
        return Err(Refusal::Long);
    }
    let (h, payload) = Header::read_from_prefix(d).map_err(|_| Refusal::Short)?;
    if h.magic.get() != MAGIC || h.version != VERSION {
        return Err(Refusal::NotOurs);
    }
    if usize::from(h.len.get()) != payload.len() {
        return Err(Refusal::Length);
    }
    if h.flags.get() & !flags::ALL != 0 || h.reserved.get() != 0 {
        return Err(Refusal::Reserved);
    }
    if !implemented(h.ptype) {
        return Err(Refusal::Type);
    }
    let f = Fields {
        ptype: h.ptype,
        flags: h.flags.get(),
        src_node: h.src_node.get(),
        dst_node: h.dst_node.get(),
        src_ctx: h.src_ctx.get(),
        dst_ctx: h.dst_ctx.get(),
        src_epoch: h.src_epoch.get(),
        dst_epoch: h.dst_epoch.get(),
        seq: h.seq.get(),
        ack: h.ack.get(),
        status: h.status.get(),
    };
    if u32::from(f.src_ctx) >= NUM_CONTEXTS || u32::from(f.dst_ctx) >= NUM_CONTEXTS {
        return Err(Refusal::Context);
    }
    let control_ok = match f.ptype {
        ptype::ACK => {
            payload.is_empty() && f.src_ctx == 0 && f.dst_ctx == 0 && f.seq == 0 && f.status == 0
        }
        ptype::NAK => {
            payload.is_empty()
                && f.src_ctx == 0
                && f.dst_ctx == 0
                && f.ack == 0
                // The operations answer with `REPLY` (14.13): a NAK only says
                // STALE_EPOCH.
                && f.status == nak::STALE_EPOCH
        }
        _ => f.status == 0,
    };
    if !control_ok {
        return Err(Refusal::Control);
    }
    Ok(Packet { f, payload })
}

/// Builds a datagram. `payload` must fit in one packet (`MAX_PAYLOAD`; the node never
/// queues a longer one).
pub fn encode(f: &Fields, payload: &[u8]) -> Vec<u8> {
    debug_assert!(payload.len() <= fabric::MAX_PAYLOAD);
    let h = Header {
        magic: MAGIC.into(),
        version: VERSION,
        ptype: f.ptype,
        flags: f.flags.into(),
        src_node: f.src_node.into(),
        dst_node: f.dst_node.into(),
        src_ctx: f.src_ctx.into(),
        dst_ctx: f.dst_ctx.into(),
        src_epoch: f.src_epoch.into(),
        dst_epoch: f.dst_epoch.into(),
        seq: f.seq.into(),
        ack: f.ack.into(),
        len: (payload.len().min(fabric::MAX_PAYLOAD) as u16).into(),
        status: f.status.into(),
        reserved: 0.into(),
    };
    let mut d = Vec::with_capacity(HEADER_LEN + payload.len());
    d.extend_from_slice(h.as_bytes());
    d.extend_from_slice(&payload[..payload.len().min(fabric::MAX_PAYLOAD)]);
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn eager() -> Fields {
        Fields {
            ptype: ptype::EAGER,
            src_node: 1,
            dst_node: 2,
            src_ctx: 3,
            dst_ctx: 4,
            src_epoch: 10,
            seq: 1,
            ..Fields::default()
        }
    }

    #[test]
    fn encode_then_parse_is_the_identity() {
        let d = encode(&eager(), b"hello");
        let p = parse(&d).unwrap();
        assert_eq!(p.f, eager());
        assert_eq!(p.payload, b"hello");
    }

    #[test]
    fn each_rule_refuses_its_datagram() {
        let good = encode(&eager(), b"xy");
        let with = |i: usize, v: u8| {
            let mut d = good.clone();
            d[i] = v;
            d
        };
        assert_eq!(parse(&good[..39]).unwrap_err(), Refusal::Short);
        assert_eq!(parse(&good[..41]).unwrap_err(), Refusal::Length);
        assert_eq!(
            parse(&vec![0; MAX_DATAGRAM + 1]).unwrap_err(),
            Refusal::Long
        );
        assert_eq!(parse(&with(0, b'X')).unwrap_err(), Refusal::NotOurs);
        assert_eq!(parse(&with(4, VERSION + 1)).unwrap_err(), Refusal::NotOurs);
        assert_eq!(parse(&with(4, VERSION - 1)).unwrap_err(), Refusal::NotOurs);
        assert_eq!(parse(&with(5, 0x08)).unwrap_err(), Refusal::Type);
        assert_eq!(parse(&with(5, 0x7f)).unwrap_err(), Refusal::Type);
        for t in [
            ptype::PUT,
            ptype::GET_REQ,
            ptype::GET_RESP,
            ptype::REPLY,
            ptype::RTS,
            ptype::FIN,
        ] {
            assert_eq!(
                parse(&with(5, t)).unwrap().f.ptype,
                t,
                "type {t:#x} accepted"
            );
        }
        assert_eq!(parse(&with(6, 2)).unwrap_err(), Refusal::Reserved);
        assert_eq!(parse(&with(0x24, 1)).unwrap_err(), Refusal::Reserved);
        assert_eq!(parse(&with(0x0d, 1)).unwrap_err(), Refusal::Context);
        assert_eq!(parse(&with(0x22, 1)).unwrap_err(), Refusal::Control);
        let ack = Fields {
            ptype: ptype::ACK,
            src_ctx: 0,
            dst_ctx: 0,
            seq: 0,
            ack: 5,
            ..eager()
        };
        assert!(parse(&encode(&ack, b"")).is_ok());
        assert_eq!(parse(&encode(&ack, b"x")).unwrap_err(), Refusal::Control);
        let ack_seq = Fields { seq: 1, ..ack };
        assert_eq!(parse(&encode(&ack_seq, b"")).unwrap_err(), Refusal::Control);
        let nak_ok = Fields {
            ptype: ptype::NAK,
            ack: 0,
            status: nak::STALE_EPOCH,
            ..ack
        };
        assert!(parse(&encode(&nak_ok, b"")).is_ok());
        for status in [99, nak::RNR, nak::BAD_KEY, nak::NO_CONTEXT] {
            let nak_bad = Fields { status, ..nak_ok };
            assert_eq!(
                parse(&encode(&nak_bad, b"")).unwrap_err(),
                Refusal::Control,
                "NAK status {status}"
            );
        }
        let nak_ack = Fields { ack: 1, ..nak_ok };
        assert_eq!(parse(&encode(&nak_ack, b"")).unwrap_err(), Refusal::Control);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

        /// Any bytes: parse returns, and what it accepts re-encodes to the same bytes
        /// (nothing it accepts is lost or invented).
        #[test]
        fn parse_never_panics_and_accepts_only_what_it_can_rebuild(
            d in proptest::collection::vec(any::<u8>(), 0..1600)
        ) {
            if let Ok(p) = parse(&d) {
                prop_assert_eq!(encode(&p.f, p.payload), d);
            }
        }

        /// A valid datagram with one byte changed or cut short: parse returns, and any
        /// acceptance is a faithful reading of the changed bytes.
        #[test]
        fn mutated_datagrams_parse_faithfully(
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            at in 0usize..104, byte in any::<u8>(), cut in 0usize..104,
        ) {
            let mut d = encode(&eager(), &payload);
            let i = at % d.len();
            d[i] = byte;
            d.truncate(cut.max(1).min(d.len()));
            if let Ok(p) = parse(&d) {
                prop_assert_eq!(encode(&p.f, p.payload), d);
            }
        }
    }
}
