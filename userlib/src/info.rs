//! [`Info`] and [`Caps`]: what `MNIC_IOC_INFO` says about a device and a context.

use mnic_abi as abi;
use mnic_abi::caps;

bitflags::bitflags! {
    /// Device capabilities (`CAPS` register). Bits this library does not know are kept
    /// (`from_bits_retain`), so a newer device's capabilities still show.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Caps: u32 {
        /// 2 MiB leaves.
        const HUGE_2M = caps::HUGE_2M;
        /// The traffic generator.
        const TRAFFIC_GEN = caps::TRAFFIC_GEN;
        /// The stale-access checker.
        const STALE_CHECK = caps::STALE_CHECK;
        /// Per-context doorbells in BAR2.
        const DOORBELL_BAR = caps::DOORBELL_BAR;
        /// The stale-access oracle registers.
        const ORACLE = caps::ORACLE;
        /// Shadow doorbells.
        const SHADOW = caps::SHADOW;
        /// Remote memory access over a fabric (`PUT`/`GET`, remote keys).
        const FABRIC = caps::FABRIC;
    }
}

impl Caps {
    /// Names of the set bits (the flag names in lower case), and `bitN` for unknown ones.
    pub fn names(self) -> Vec<String> {
        (0..32)
            .map(|i| 1u32 << i)
            .filter(|b| self.bits() & b != 0)
            .map(|b| {
                Caps::from_bits(b)
                    .and_then(|f| f.iter_names().next())
                    .map_or_else(
                        || format!("bit{}", b.trailing_zeros()),
                        |(n, _)| n.to_lowercase(),
                    )
            })
            .collect()
    }
}

/// JSON form (with the `serde` feature): the capability names, as [`Caps::names`].
#[cfg(feature = "serde")]
impl serde::Serialize for Caps {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.names().serialize(s)
    }
}

/// Device and context identity and limits (`MNIC_IOC_INFO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Info {
    /// User ABI version of the driver.
    pub abi_version: u32,
    /// Hardware version, major.
    pub hw_major: u16,
    /// Hardware version, minor.
    pub hw_minor: u16,
    /// Capabilities.
    pub caps: Caps,
    /// Hardware contexts of the device.
    pub num_contexts: u32,
    /// This context's index.
    pub ctx: u32,
    /// N of `/dev/mnicN`.
    pub minor: u32,
    /// Most registrations per context.
    pub max_registrations: u32,
    /// The device's fabric node id, `None` when it is not a node of a fabric.
    pub node: Option<u16>,
}

impl From<abi::MnicInfo> for Info {
    fn from(i: abi::MnicInfo) -> Self {
        Self {
            abi_version: i.abi_version,
            hw_major: (i.hw_version >> 16) as u16,
            hw_minor: i.hw_version as u16,
            caps: Caps::from_bits_retain(i.caps),
            num_contexts: i.num_contexts,
            ctx: i.ctx,
            minor: i.minor,
            max_registrations: i.max_registrations,
            node: u16::try_from(i.node).ok().filter(|&n| n != abi::NODE_NONE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_info() {
        let i = Info::from(abi::MnicInfo {
            abi_version: 1,
            hw_version: 0x0001_0002,
            caps: caps::ALL | 1 << 9,
            num_contexts: 256,
            ctx: 3,
            minor: 0,
            max_registrations: 1024,
            node: 0xffff,
        });
        assert_eq!((i.hw_major, i.hw_minor), (1, 2));
        assert_eq!(i.node, None, "NODE_NONE is no node");
        let on_fabric = Info::from(abi::MnicInfo {
            node: 2,
            caps: caps::ALL | caps::FABRIC,
            ..Default::default()
        });
        assert_eq!(on_fabric.node, Some(2));
        assert!(on_fabric.caps.contains(Caps::FABRIC));
        assert_eq!(
            Info::from(abi::MnicInfo {
                node: 0x1_0000,
                ..Default::default()
            })
            .node,
            None
        );
        assert!(i.caps.contains(Caps::TRAFFIC_GEN));
        assert_eq!(i.caps.bits(), caps::ALL | 1 << 9, "unknown bits kept");
        assert_eq!(
            i.caps.names(),
            [
                "huge_2m",
                "traffic_gen",
                "stale_check",
                "doorbell_bar",
                "oracle",
                "shadow",
                "bit9"
            ]
        );
        #[cfg(feature = "serde")]
        {
            let j = serde_json::to_value(i).unwrap();
            assert_eq!(j["caps"][1], "traffic_gen");
            assert_eq!(j["max_registrations"], 1024);
        }
    }
}
