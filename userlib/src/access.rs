//! [`Access`]: the rights and modes a registration asks for (`MnicRegister::flags`).

use std::ops::BitOr;

use mnic_abi::reg_flags;

/// Access rights and modes of a registration (`MnicRegister::flags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Access(u32);

impl Access {
    /// The device may read.
    pub const READ: Access = Access(reg_flags::READ);
    /// The device may write.
    pub const WRITE: Access = Access(reg_flags::WRITE);
    /// The device may read and write.
    pub const READ_WRITE: Access = Access(reg_flags::READ | reg_flags::WRITE);
    /// Baseline mode: pin every page now and fill the whole table (what a classic
    /// pinned-memory NIC does). For measuring the cost of pinning, not for normal use.
    pub const PINNED: Access = Access(reg_flags::PINNED);
    /// Fill the device table now, without pinning (saves the first faults).
    pub const PREFETCH: Access = Access(reg_flags::PREFETCH);

    /// The raw flag bits.
    pub fn bits(self) -> u32 {
        self.0
    }
    /// From raw bits; `None` if an unknown bit is set.
    pub fn from_bits(bits: u32) -> Option<Access> {
        (bits & !reg_flags::ALL == 0).then_some(Access(bits))
    }
    /// True if every bit of `other` is set in `self`.
    pub fn contains(self, other: Access) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for Access {
    type Output = Access;
    fn bitor(self, rhs: Access) -> Access {
        Access(self.0 | rhs.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_bits() {
        let a = Access::READ | Access::WRITE;
        assert_eq!(a, Access::READ_WRITE);
        assert!(a.contains(Access::WRITE));
        assert!(!a.contains(Access::PINNED));
        assert_eq!(
            (a | Access::PINNED | Access::PREFETCH).bits(),
            reg_flags::ALL
        );
        assert_eq!(Access::from_bits(1 << 9), None);
        assert_eq!(Access::from_bits(3), Some(Access::READ_WRITE));
    }
}
