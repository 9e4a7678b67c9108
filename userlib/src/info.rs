//! [`Info`] and [`Caps`]: what `MNIC_IOC_INFO` says about a device and a context.

use mnic_abi as abi;
use mnic_abi::caps;

/// Device capabilities (`CAPS` register).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Caps(pub u32);

impl Caps {
    /// Names of the known capability bits.
    pub const NAMES: [(u32, &'static str); 6] = [
        (caps::HUGE_2M, "huge_2m"),
        (caps::TRAFFIC_GEN, "traffic_gen"),
        (caps::STALE_CHECK, "stale_check"),
        (caps::DOORBELL_BAR, "doorbell_bar"),
        (caps::ORACLE, "oracle"),
        (caps::SHADOW, "shadow"),
    ];
    /// True if `bit` (a `mnic_abi::caps` constant) is set.
    pub fn has(self, bit: u32) -> bool {
        self.0 & bit == bit
    }
    /// Names of the set bits, and `bitN` for unknown ones.
    pub fn names(self) -> Vec<String> {
        (0..32)
            .filter(|i| self.0 & (1 << i) != 0)
            .map(|i| {
                Self::NAMES
                    .iter()
                    .find(|(b, _)| *b == 1 << i)
                    .map_or_else(|| format!("bit{i}"), |(_, n)| (*n).to_owned())
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
}

impl From<abi::MnicInfo> for Info {
    fn from(i: abi::MnicInfo) -> Self {
        Self {
            abi_version: i.abi_version,
            hw_major: (i.hw_version >> 16) as u16,
            hw_minor: i.hw_version as u16,
            caps: Caps(i.caps),
            num_contexts: i.num_contexts,
            ctx: i.ctx,
            minor: i.minor,
            max_registrations: i.max_registrations,
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
            rsvd: 0,
        });
        assert_eq!((i.hw_major, i.hw_minor), (1, 2));
        assert!(i.caps.has(caps::TRAFFIC_GEN));
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
