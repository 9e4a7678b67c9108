//! Remote memory access (spec §11 `PUT`/`GET`, `docs/fabric.md` 14.13): where a peer's
//! registered memory is ([`Endpoint`], [`RemoteKey`], [`RemoteRegion`]), as plain data
//! that a target hands to an initiator out of band.
//!
//! Nothing here makes a system call. A [`RemoteRegion`] is only a claim: the target's
//! device checks the key, the range and the access of every packet before it translates
//! anything, so a wrong or forged region fails with a [`RemoteError`](crate::RemoteError)
//! instead of reaching memory the target did not register for remote access.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;

use mnic_abi::{Remote, NODE_NONE, NUM_CONTEXTS};

use crate::error::{Error, Result};

/// A fabric address of one hardware context: the device's node id and the context
/// index on it ([`Context::endpoint`](crate::Context::endpoint)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Endpoint {
    /// Fabric node id of the device (never `NODE_NONE`).
    pub node: u16,
    /// Context index on that device.
    pub ctx: u16,
}

impl Endpoint {
    /// The endpoint of context `ctx` on node `node`, or `None` if either cannot name a
    /// context of a fabric (node `NODE_NONE`, index beyond `NUM_CONTEXTS`).
    pub fn new(node: u32, ctx: u32) -> Option<Self> {
        let node = u16::try_from(node).ok().filter(|&n| n != NODE_NONE)?;
        let ctx = u16::try_from(ctx)
            .ok()
            .filter(|&c| u32::from(c) < NUM_CONTEXTS)?;
        Some(Self { node, ctx })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {} ctx {}", self.node, self.ctx)
    }
}

/// The remote key of a registration made with [`Access::REMOTE`](crate::Access::REMOTE)
/// (`MnicRegister::rkey`): never 0, unique on the device while the registration lives.
/// A capability against peers that were not given it, not a secret against whoever can
/// read the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct RemoteKey(NonZeroU32);

impl RemoteKey {
    /// The key of raw value `raw`, `None` for 0 (never a key).
    pub fn new(raw: u32) -> Option<Self> {
        NonZeroU32::new(raw).map(Self)
    }
    /// The raw value, as it travels in a descriptor.
    pub fn get(self) -> u32 {
        self.0.get()
    }
}

impl fmt::Display for RemoteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.get())
    }
}

/// A range of a target context's memory that peers may access through a key: what the
/// target hands to an initiator (see [`Registration::remote_region`]) so that it can
/// build [`Work::put`](crate::Work::put) and [`Work::get`](crate::Work::get).
///
/// Plain data, `Copy`, and serialisable two ways for passing between processes:
/// [`to_bytes`](Self::to_bytes)/[`from_bytes`](Self::from_bytes) (24 bytes, little
/// endian) and `Display`/`FromStr` (one line of text).
///
/// ```
/// use mnic::{Endpoint, RemoteKey, RemoteRegion};
/// let r = RemoteRegion {
///     endpoint: Endpoint::new(2, 5).unwrap(),
///     key: RemoteKey::new(0xabcd).unwrap(),
///     va: 0x7f00_0000_0000,
///     len: 1 << 20,
/// };
/// let text = r.to_string();
/// assert_eq!(text.parse::<RemoteRegion>()?, r);
/// assert_eq!(RemoteRegion::from_bytes(&r.to_bytes())?, r);
/// // The last 4 KiB as a region of its own:
/// let tail = r.subregion((1 << 20) - 4096, 4096)?;
/// assert_eq!(tail.va, 0x7f00_000f_f000);
/// # Ok::<(), mnic::Error>(())
/// ```
///
/// [`Registration::remote_region`]: crate::Registration::remote_region
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct RemoteRegion {
    /// The target context.
    pub endpoint: Endpoint,
    /// The target registration's key.
    pub key: RemoteKey,
    /// First VA of the range, in the target's address space.
    pub va: u64,
    /// Length of the range in bytes.
    pub len: u64,
}

/// Prefix of the text form, with a version so a reader can refuse another layout.
const TEXT_PREFIX: &str = "mnic-region-v1";

impl RemoteRegion {
    /// Bytes of the binary form.
    pub const BYTES: usize = 24;

    /// The part `[offset, offset + len)` of this region.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if it is empty or leaves the region.
    pub fn subregion(&self, offset: u64, len: u64) -> Result<Self> {
        self.check(offset, len)?;
        Ok(Self {
            va: self.va + offset,
            len,
            ..*self
        })
    }

    /// Checks that `[offset, offset + len)` is a non-empty part of the region.
    pub(crate) fn check(&self, offset: u64, len: u64) -> Result<()> {
        if len == 0 || offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(Error::InvalidInput("range leaves the remote region"));
        }
        Ok(())
    }

    /// The descriptor's remote side for byte `offset` of the region (unchecked: the
    /// caller checked the range).
    pub(crate) fn remote_at(&self, offset: u64) -> Remote {
        Remote {
            node: self.endpoint.node,
            ctx: self.endpoint.ctx,
            key: self.key.get(),
            va: self.va.wrapping_add(offset),
        }
    }

    /// The binary form: node (u16), context (u16), key (u32), VA (u64), length (u64),
    /// little endian.
    pub fn to_bytes(&self) -> [u8; Self::BYTES] {
        let mut b = [0u8; Self::BYTES];
        b[0..2].copy_from_slice(&self.endpoint.node.to_le_bytes());
        b[2..4].copy_from_slice(&self.endpoint.ctx.to_le_bytes());
        b[4..8].copy_from_slice(&self.key.get().to_le_bytes());
        b[8..16].copy_from_slice(&self.va.to_le_bytes());
        b[16..24].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    /// Reads the binary form of [`to_bytes`](Self::to_bytes).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a slice of another length, node `NODE_NONE`, a
    /// context index out of range or key 0.
    pub fn from_bytes(b: &[u8]) -> Result<Self> {
        let b: &[u8; Self::BYTES] = b
            .try_into()
            .map_err(|_| Error::InvalidInput("a remote region is 24 bytes"))?;
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| u64::from(u32_at(i)) | u64::from(u32_at(i + 4)) << 32;
        Self::from_parts(
            u32::from(u16_at(0)),
            u32::from(u16_at(2)),
            u32_at(4),
            u64_at(8),
            u64_at(16),
        )
    }

    fn from_parts(node: u32, ctx: u32, key: u32, va: u64, len: u64) -> Result<Self> {
        Ok(Self {
            endpoint: Endpoint::new(node, ctx)
                .ok_or(Error::InvalidInput("remote region: bad node or context"))?,
            key: RemoteKey::new(key).ok_or(Error::InvalidInput("remote region: key 0"))?,
            va,
            len,
        })
    }
}

/// One line: `mnic-region-v1 node=N ctx=C key=0xK va=0xV len=L`.
impl fmt::Display for RemoteRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{TEXT_PREFIX} node={} ctx={} key={} va={:#x} len={}",
            self.endpoint.node, self.endpoint.ctx, self.key, self.va, self.len
        )
    }
}

fn parse_number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

impl FromStr for RemoteRegion {
    type Err = Error;

    /// Reads the text form of `Display` (surrounding white space is ignored; numbers in
    /// decimal or `0x` hex).
    fn from_str(s: &str) -> Result<Self> {
        const BAD: Error = Error::InvalidInput(
            "remote region: expected `mnic-region-v1 node=N ctx=C key=K va=V len=L`",
        );
        let mut words = s.split_whitespace();
        if words.next() != Some(TEXT_PREFIX) {
            return Err(BAD);
        }
        let mut fields = [None; 5];
        for word in words {
            let (name, value) = word.split_once('=').ok_or(BAD)?;
            let i = ["node", "ctx", "key", "va", "len"]
                .iter()
                .position(|&n| n == name)
                .ok_or(BAD)?;
            if fields[i].is_some() {
                return Err(BAD);
            }
            fields[i] = Some(parse_number(value).ok_or(BAD)?);
        }
        let [Some(node), Some(ctx), Some(key), Some(va), Some(len)] = fields else {
            return Err(BAD);
        };
        let narrow = |v: u64| u32::try_from(v).map_err(|_| BAD);
        Self::from_parts(narrow(node)?, narrow(ctx)?, narrow(key)?, va, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region() -> RemoteRegion {
        RemoteRegion {
            endpoint: Endpoint::new(1, 7).unwrap(),
            key: RemoteKey::new(0xdead_beef).unwrap(),
            va: 0x7f12_3456_7000,
            len: 3 * 4096,
        }
    }

    #[test]
    fn endpoint_refuses_what_names_no_context() {
        assert!(Endpoint::new(u32::from(NODE_NONE), 0).is_none());
        assert!(Endpoint::new(0x1_0000, 0).is_none());
        assert!(Endpoint::new(1, NUM_CONTEXTS).is_none());
        assert_eq!(Endpoint::new(0, 255), Some(Endpoint { node: 0, ctx: 255 }));
        assert!(RemoteKey::new(0).is_none());
        assert_eq!(RemoteKey::new(5).map(RemoteKey::get), Some(5));
    }

    #[test]
    fn bytes_round_trip_and_layout() {
        let r = region();
        let b = r.to_bytes();
        assert_eq!(&b[0..2], &[1, 0]);
        assert_eq!(&b[2..4], &[7, 0]);
        assert_eq!(&b[4..8], &0xdead_beefu32.to_le_bytes());
        assert_eq!(RemoteRegion::from_bytes(&b).unwrap(), r);
        assert!(RemoteRegion::from_bytes(&b[..23]).is_err());
        let mut zero_key = b;
        zero_key[4..8].fill(0);
        assert!(RemoteRegion::from_bytes(&zero_key).is_err());
        let mut no_node = b;
        no_node[0..2].fill(0xff);
        assert!(RemoteRegion::from_bytes(&no_node).is_err());
    }

    #[test]
    fn text_round_trip_and_refusals() {
        let r = region();
        let s = r.to_string();
        assert_eq!(
            s,
            "mnic-region-v1 node=1 ctx=7 key=0xdeadbeef va=0x7f1234567000 len=12288"
        );
        assert_eq!(format!("  {s}\n").parse::<RemoteRegion>().unwrap(), r);
        // Field order does not matter; decimal and hex both parse.
        let shuffled = "mnic-region-v1 len=0x3000 va=139716164218880 key=3735928559 ctx=7 node=1";
        assert_eq!(shuffled.parse::<RemoteRegion>().unwrap(), r);
        for bad in [
            "",
            "mnic-region-v2 node=1 ctx=7 key=1 va=0 len=1",
            "mnic-region-v1 node=1 ctx=7 key=1 va=0",
            "mnic-region-v1 node=1 node=1 ctx=7 key=1 va=0 len=1",
            "mnic-region-v1 node=1 ctx=7 key=0 va=0 len=1",
            "mnic-region-v1 node=65535 ctx=7 key=1 va=0 len=1",
            "mnic-region-v1 node=1 ctx=256 key=1 va=0 len=1",
            "mnic-region-v1 node=1 ctx=7 key=0x1_0000_0000 va=0 len=1",
            "mnic-region-v1 node=1 ctx=7 key=1 va=zz len=1",
            "mnic-region-v1 node=1 ctx=7 key=1 va=0 len=1 extra=2",
        ] {
            assert!(bad.parse::<RemoteRegion>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn subregion_stays_inside() {
        let r = region();
        let s = r.subregion(4096, 8192).unwrap();
        assert_eq!((s.va, s.len, s.key), (r.va + 4096, 8192, r.key));
        assert!(r.subregion(4096, 8193).is_err());
        assert!(r.subregion(0, 0).is_err());
        assert!(r.subregion(u64::MAX, 2).is_err());
        let remote = r.remote_at(10);
        assert_eq!(
            (remote.node, remote.ctx, remote.key, remote.va),
            (1, 7, 0xdead_beef, r.va + 10)
        );
    }
}
