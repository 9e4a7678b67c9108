// SPDX-License-Identifier: GPL-2.0 OR MIT
//! The fabric's wire (docs/fabric.md, spec §14): packet header, packet types, NAK
//! reasons, sender statuses, limits and the sequence-number arithmetic, defined once for
//! every device model that speaks it.
//!
//! The kernel driver never sees a packet, so this file is not part of what it compiles
//! (`abi.rs` is); the fabric's device counters are in `abi.rs` with the others. Every
//! multi-byte field is an explicit little-endian type: datagrams cross hosts.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy_derive::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// `Header::magic`: `"MNFC"` in memory.
pub const MAGIC: u32 = 0x4346_4e4d;
/// `Header::version` of this specification (2: `RemoteAccess` carries the operation's
/// range).
pub const VERSION: u8 = 2;
/// Size of [`Header`].
pub const HEADER_LEN: usize = 40;
/// Largest datagram: an Ethernet MTU minus the IPv4 and UDP headers (no fragmentation).
pub const MAX_DATAGRAM: usize = 1472;
/// Largest payload of one packet.
pub const MAX_PAYLOAD: usize = MAX_DATAGRAM - HEADER_LEN;
/// Largest eager message: one packet's payload after its [`EagerHeader`].
pub const EAGER_MAX: usize = MAX_PAYLOAD - EAGER_HEADER_LEN;
/// Unacknowledged packets per peer, and the receiver's window.
pub const WINDOW: u32 = 64;
/// Messages queued for sending (waiting for the window or unacknowledged), per node.
pub const SEND_QUEUE: usize = 1024;
/// Messages delivered to the layer above and not yet taken, per node.
pub const DELIVER_QUEUE: usize = 256;
/// Peers a node may have.
pub const MAX_PEERS: usize = 1024;
/// Unexpected messages kept per context (the operations).
pub const UNEXPECTED_MAX: usize = 64;
/// Bytes of unexpected messages kept per context (the operations).
pub const UNEXPECTED_BYTES: usize = 64 * 1024;
/// The node id that is never valid (the same value as `mnic_abi::NODE_NONE`).
pub const NODE_NONE: u16 = crate::abi::NODE_NONE;

/// Default first retransmission timeout, in milliseconds.
pub const RTO_MS: u64 = 10;
/// Default ceiling of the doubling retransmission timeout, in milliseconds.
pub const RTO_MAX_MS: u64 = 500;
/// Default retransmissions of one packet, with nothing heard from its peer, before the
/// peer is declared gone.
pub const RETRIES: u32 = 8;
/// `REPLY RNR`s in a row for one packet of a PUT or GET before the work item fails with
/// `RNR_RETRY_EXCEEDED` (14.13).
pub const RNR_RETRIES: u32 = 32;
/// First wait before a packet answered `RNR` is sent again, in microseconds; it doubles
/// with every `RNR` in a row for that packet, up to [`RNR_BACKOFF_MAX_US`].
pub const RNR_BACKOFF_US: u64 = 500;
/// Ceiling of the RNR back-off, in microseconds.
pub const RNR_BACKOFF_MAX_US: u64 = 64_000;
/// Data bytes of one `PUT` packet: a packet's payload after its [`RemoteAccess`].
pub const PUT_CHUNK: usize = MAX_PAYLOAD - REMOTE_ACCESS_LEN;
/// Most bytes one `GET_REQ` asks for: what one `GET_RESP` packet carries after its
/// [`GetRespHeader`].
pub const GET_CHUNK: usize = MAX_PAYLOAD - GET_RESP_HEADER_LEN;
/// Packets of one PUT or GET that the initiator keeps unanswered at most (data or
/// requests sent, no `REPLY`/`GET_RESP` yet).
pub const RMA_IN_FLIGHT: usize = 64;
/// A PUT or GET with packets unanswered and nothing heard about it for this long fails
/// with `PEER_GONE` (a target that takes packets and never answers).
pub const REPLY_TIMEOUT_MS: u64 = 10_000;

/// Packet types (`Header::ptype`).
pub mod ptype {
    /// A tagged message that fits in one packet.
    pub const EAGER: u8 = 0x01;
    /// Rendezvous request to send (operations).
    pub const RTS: u8 = 0x02;
    /// Remote read request: rendezvous pull and GET (operations).
    pub const GET_REQ: u8 = 0x03;
    /// Data answering a `GET_REQ` (operations).
    pub const GET_RESP: u8 = 0x04;
    /// Remote write (operations).
    pub const PUT: u8 = 0x05;
    /// The receiver is done with a rendezvous message ([`FinHeader`], 14.14).
    pub const FIN: u8 = 0x06;
    /// The target's answer to one `PUT` packet (written, or why not) or to a `GET_REQ`
    /// it cannot serve ([`ReplyHeader`], 14.13).
    pub const REPLY: u8 = 0x07;
    /// Cumulative acknowledgement, not sequenced.
    pub const ACK: u8 = 0x10;
    /// Negative acknowledgement with a reason in `status`, not sequenced.
    pub const NAK: u8 = 0x11;

    /// Whether packets of type `t` take a sequence number (everything but ACK and NAK).
    pub const fn is_sequenced(t: u8) -> bool {
        matches!(t, EAGER | RTS | GET_REQ | GET_RESP | PUT | FIN | REPLY)
    }
}

/// `Header::flags`.
pub mod flags {
    /// The sender sent this sequence number before (informational).
    pub const RETRANSMIT: u16 = 1 << 0;
    /// Every defined bit; the others must be 0.
    pub const ALL: u16 = RETRANSMIT;
}

/// NAK reasons (`Header::status` of a `NAK`: only `STALE_EPOCH`) and the statuses of a
/// `REPLY` (`ReplyHeader::status`: `OK` and 2..=7).
pub mod nak {
    /// `REPLY`: the `PUT` packet's data is written.
    pub const OK: u16 = 0;
    /// The packet was sent to an earlier connection of this node.
    pub const STALE_EPOCH: u16 = 1;
    /// The target context faulted: back off and retry (operations).
    pub const RNR: u16 = 2;
    /// Remote key unknown or not for this context (operations).
    pub const BAD_KEY: u16 = 3;
    /// Range outside the registration (operations).
    pub const BAD_RANGE: u16 = 4;
    /// The registration does not allow the access (operations).
    pub const BAD_ACCESS: u16 = 5;
    /// The target's driver aborted the fault (operations).
    pub const REMOTE_FAULT: u16 = 6;
    /// Target context not enabled (operations).
    pub const NO_CONTEXT: u16 = 7;

    /// Whether `s` is a status a `REPLY` or `FIN` may carry: `OK` or `RNR..=NO_CONTEXT`.
    pub const fn is_answer(s: u16) -> bool {
        s == OK || (s >= RNR && s <= NO_CONTEXT)
    }
    /// Whether `s` is a defined reason.
    pub const fn is_valid(s: u16) -> bool {
        matches!(s, STALE_EPOCH..=NO_CONTEXT)
    }
}

/// What became of a message at its sender.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendStatus {
    /// Acknowledged by the peer: delivered.
    Ok = 0,
    /// The retry budget ran out: the peer is gone.
    PeerGone = 1,
    /// The peer started a new connection before acknowledging it.
    PeerReset = 2,
}

/// The header of every fabric datagram, 40 bytes (docs/fabric.md 14.2).
#[repr(C)]
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
    Unaligned,
)]
pub struct Header {
    /// [`MAGIC`].
    pub magic: U32,
    /// [`VERSION`].
    pub version: u8,
    /// A [`ptype`] value.
    pub ptype: u8,
    /// [`flags`] bits.
    pub flags: U16,
    /// Sender's node id.
    pub src_node: U16,
    /// Receiver's node id.
    pub dst_node: U16,
    /// Sending context; 0 for ACK/NAK.
    pub src_ctx: U16,
    /// Target context; 0 for ACK/NAK.
    pub dst_ctx: U16,
    /// The sender's epoch of this connection.
    pub src_epoch: U32,
    /// The receiver's epoch as the sender knows it; 0 = not known.
    pub dst_epoch: U32,
    /// Sequence number (sequenced types), refused one (NAK), 0 (ACK).
    pub seq: U32,
    /// Cumulative acknowledgement: everything up to and including it was delivered.
    pub ack: U32,
    /// Payload bytes after the header.
    pub len: U16,
    /// NAK reason; 0 otherwise.
    pub status: U16,
    /// 0.
    pub reserved: U32,
}

/// Size of [`RemoteAccess`].
pub const REMOTE_ACCESS_LEN: usize = 32;
/// Size of [`GetRespHeader`].
pub const GET_RESP_HEADER_LEN: usize = 16;
/// Size of [`ReplyHeader`].
pub const REPLY_HEADER_LEN: usize = 24;

/// Payload of a `REPLY` (14.13): the target's answer to one `PUT` packet or `GET_REQ`.
#[repr(C)]
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
    Unaligned,
)]
pub struct ReplyHeader {
    /// The `req_id` of the packet answered.
    pub req_id: U32,
    /// `nak::OK`, or why the packet was not served (`nak::RNR`..=`nak::NO_CONTEXT`).
    pub status: U16,
    /// 0.
    pub reserved: U16,
    /// The `va` of the packet answered.
    pub va: U64,
    /// `REMOTE_FAULT`: the errno the target's driver aborted the fault with; else 0.
    pub detail: U32,
    /// 0.
    pub reserved2: U32,
}

/// Size of [`EagerHeader`].
pub const EAGER_HEADER_LEN: usize = 16;

/// Start of an `EAGER` payload (operations; the transport carries it as opaque bytes).
#[repr(C)]
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
    Unaligned,
)]
pub struct EagerHeader {
    /// Match bits, compared under the posted receive's mask.
    pub match_bits: U64,
    /// Message length (the rest of the payload).
    pub msg_len: U32,
    /// The sender's id of the SEND, echoed in the target's `REPLY` (never 0).
    pub req_id: U32,
}

/// Payload of an `RTS` (operations): where the receiver pulls the message from.
#[repr(C)]
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
    Unaligned,
)]
pub struct RtsHeader {
    /// Match bits.
    pub match_bits: U64,
    /// Message length.
    pub msg_len: U32,
    /// 0: the receiver's pulls are authorised by `req_id` (14.14), not by a key.
    pub rkey: U32,
    /// VA of the sender's buffer.
    pub va: U64,
    /// The sender's id of the SEND (never 0), echoed in the `REPLY`, the pulls'
    /// `GET_REQ`s and the `FIN`.
    pub req_id: U32,
    /// 0.
    pub reserved: U32,
}

/// Size of [`FinHeader`].
pub const FIN_LEN: usize = 16;

/// Payload of a `FIN` (14.14): the receiver is done with a rendezvous message.
#[repr(C)]
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
    Unaligned,
)]
pub struct FinHeader {
    /// The `RTS`'s `req_id`.
    pub req_id: U32,
    /// `nak::OK` (pulled, as much as the receive had room for), or why the message was
    /// not delivered: `NO_CONTEXT` (the receiving context was disabled), `REMOTE_FAULT`
    /// (a fault on either buffer was aborted; `detail` the errno), `RNR` (the pull met
    /// `RNR_RETRIES` RNRs in a row), or another `REPLY` status a pull was answered with.
    pub status: U16,
    /// 0.
    pub reserved: U16,
    /// `REMOTE_FAULT`: the errno; else 0.
    pub detail: U32,
    /// 0.
    pub reserved2: U32,
}

/// Start of a `PUT` or `GET_REQ` payload (operations): the packet's remote range, the
/// range of the whole operation it belongs to, and the key.
///
/// Every packet carries its operation's range so that the target checks the *operation*
/// against the key: an operation that leaves the key's range is refused in every packet,
/// and writes or reads nothing, however its packets are cut, ordered or resent (the target
/// keeps no state per operation).
#[repr(C)]
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
    Unaligned,
)]
pub struct RemoteAccess {
    /// Remote key of the target registration (0: a rendezvous pull, 14.14).
    pub rkey: U32,
    /// Bytes (`GET_REQ`); the data length for `PUT`.
    pub len: U32,
    /// VA in the target context.
    pub va: U64,
    /// The requester's id, echoed in `GET_RESP`.
    pub req_id: U32,
    /// Bytes of the operation before this packet: it starts at `va - op_offset`.
    pub op_offset: U32,
    /// Bytes of the whole operation; `op_offset + len <= op_len`.
    pub op_len: U32,
    /// 0.
    pub reserved: U32,
}

impl RemoteAccess {
    /// The operation's remote range as (start VA, length), if the fields are consistent:
    /// the packet lies inside it and it does not wrap.
    pub fn operation(&self) -> Option<(u64, u64)> {
        let (off, len, op_len) = (
            u64::from(self.op_offset.get()),
            u64::from(self.len.get()),
            u64::from(self.op_len.get()),
        );
        let start = self.va.get().checked_sub(off)?;
        (off.checked_add(len)? <= op_len && start.checked_add(op_len).is_some())
            .then_some((start, op_len))
    }
}

/// Start of a `GET_RESP` payload (operations).
#[repr(C)]
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
    Unaligned,
)]
pub struct GetRespHeader {
    /// The `GET_REQ`'s `req_id`.
    pub req_id: U32,
    /// 0.
    pub reserved: U32,
    /// VA (in the target context) of this data: the `GET_REQ`'s `va`.
    pub va: U64,
}

/// Whether sequence number `a` comes after `b` (serial-number arithmetic: the wire's
/// numbers wrap, and two live ones are never 2^31 apart).
pub const fn seq_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// Whether epoch `a` is newer than `b` (the same serial arithmetic as sequence numbers).
pub const fn epoch_newer(a: u32, b: u32) -> bool {
    seq_after(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn header_layout_matches_the_spec() {
        assert_eq!(size_of::<Header>(), HEADER_LEN);
        assert_eq!(offset_of!(Header, version), 0x04);
        assert_eq!(offset_of!(Header, ptype), 0x05);
        assert_eq!(offset_of!(Header, flags), 0x06);
        assert_eq!(offset_of!(Header, src_node), 0x08);
        assert_eq!(offset_of!(Header, dst_node), 0x0a);
        assert_eq!(offset_of!(Header, src_ctx), 0x0c);
        assert_eq!(offset_of!(Header, dst_ctx), 0x0e);
        assert_eq!(offset_of!(Header, src_epoch), 0x10);
        assert_eq!(offset_of!(Header, dst_epoch), 0x14);
        assert_eq!(offset_of!(Header, seq), 0x18);
        assert_eq!(offset_of!(Header, ack), 0x1c);
        assert_eq!(offset_of!(Header, len), 0x20);
        assert_eq!(offset_of!(Header, status), 0x22);
        assert_eq!(offset_of!(Header, reserved), 0x24);
        assert_eq!(&MAGIC.to_le_bytes(), b"MNFC");
    }

    #[test]
    fn payload_headers_match_the_spec() {
        assert_eq!(size_of::<EagerHeader>(), EAGER_HEADER_LEN);
        assert_eq!(offset_of!(EagerHeader, req_id), 0x0c);
        assert_eq!(size_of::<FinHeader>(), FIN_LEN);
        assert_eq!(offset_of!(FinHeader, status), 0x04);
        assert_eq!(offset_of!(FinHeader, detail), 0x08);
        assert_eq!(offset_of!(RtsHeader, req_id), 0x18);
        assert_eq!(size_of::<RtsHeader>(), 32);
        assert_eq!(offset_of!(RtsHeader, va), 0x10);
        assert_eq!(size_of::<RemoteAccess>(), 32);
        assert_eq!(offset_of!(RemoteAccess, va), 0x08);
        assert_eq!(offset_of!(RemoteAccess, op_offset), 0x14);
        assert_eq!(offset_of!(RemoteAccess, op_len), 0x18);
        assert_eq!(size_of::<GetRespHeader>(), GET_RESP_HEADER_LEN);
        assert_eq!(size_of::<RemoteAccess>(), REMOTE_ACCESS_LEN);
        assert_eq!(size_of::<ReplyHeader>(), REPLY_HEADER_LEN);
        assert_eq!(offset_of!(ReplyHeader, va), 0x08);
        assert_eq!(PUT_CHUNK, 1400);
        assert_eq!(GET_CHUNK, 1416);
        assert_eq!(MAX_PAYLOAD, 1432);
        assert_eq!(EAGER_MAX, 1416);
        assert!(MAX_PAYLOAD <= u16::MAX as usize);
    }

    #[test]
    fn a_remote_access_names_its_operation_only_when_consistent() {
        let ra = |va: u64, len: u32, op_offset: u32, op_len: u32| RemoteAccess {
            rkey: 5.into(),
            len: len.into(),
            va: va.into(),
            req_id: 1.into(),
            op_offset: op_offset.into(),
            op_len: op_len.into(),
            reserved: 0.into(),
        };
        assert_eq!(ra(0x2000, 8, 0, 8).operation(), Some((0x2000, 8)));
        assert_eq!(
            ra(0x2ff8, 8, 0xff8, 0x1010).operation(),
            Some((0x2000, 0x1010))
        );
        assert_eq!(
            ra(0x2ff8, 16, 0xff8, 0x1000).operation(),
            None,
            "packet past the end"
        );
        assert_eq!(ra(0x10, 8, 0x20, 0x100).operation(), None, "starts below 0");
        assert_eq!(ra(u64::MAX - 7, 8, 0, 16).operation(), None, "wraps");
        assert_eq!(
            ra(0x2000, 8, u32::MAX, u32::MAX).operation(),
            None,
            "offset overflows"
        );
    }

    #[test]
    fn sequence_numbers_compare_across_the_wrap() {
        assert!(seq_after(0, u32::MAX) && seq_after(1, u32::MAX));
        assert!(seq_after(5, 3) && !seq_after(3, 5) && !seq_after(4, 4));
        assert!(epoch_newer(0x8000_0000, 0x7fff_ffff));
    }

    #[test]
    fn sequenced_types_and_nak_reasons() {
        assert!(ptype::is_sequenced(ptype::EAGER) && ptype::is_sequenced(ptype::FIN));
        assert!(!ptype::is_sequenced(ptype::ACK) && !ptype::is_sequenced(ptype::NAK));
        assert!(!ptype::is_sequenced(0) && !ptype::is_sequenced(0x08));
        assert!(ptype::is_sequenced(ptype::REPLY));
        assert!(nak::is_valid(nak::STALE_EPOCH) && nak::is_valid(nak::NO_CONTEXT));
        assert!(!nak::is_valid(0) && !nak::is_valid(8));
        assert!(
            nak::is_answer(nak::OK) && nak::is_answer(nak::RNR) && nak::is_answer(nak::NO_CONTEXT)
        );
        assert!(!nak::is_answer(nak::STALE_EPOCH) && !nak::is_answer(8));
    }
}
