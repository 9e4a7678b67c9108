//! [`Access`]: the rights and modes a registration asks for (`MnicRegister::flags`).

use mnic_abi::reg_flags;

bitflags::bitflags! {
    /// Access rights and modes of a registration (`MnicRegister::flags`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Access: u32 {
        /// The device may read.
        const READ = reg_flags::READ;
        /// The device may write.
        const WRITE = reg_flags::WRITE;
        /// The device may read and write.
        const READ_WRITE = reg_flags::READ | reg_flags::WRITE;
        /// Baseline mode: pin every page now and fill the whole table (what a classic
        /// pinned-memory NIC does). For measuring the cost of pinning, not for normal use.
        const PINNED = reg_flags::PINNED;
        /// Fill the device table now, without pinning (saves the first faults).
        const PREFETCH = reg_flags::PREFETCH;
        /// Peers on the fabric may access the range too, with this registration's
        /// `READ`/`WRITE` rights, through the remote key the driver returns
        /// ([`Registration::remote_region`](crate::Registration::remote_region)).
        /// Refused with [`Error::NoFabric`](crate::Error::NoFabric) on a device that is
        /// not a node of a fabric.
        const REMOTE = reg_flags::REMOTE;
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
            (a | Access::PINNED | Access::PREFETCH | Access::REMOTE).bits(),
            reg_flags::ALL
        );
        assert_eq!(Access::all().bits(), reg_flags::ALL);
        assert_eq!(Access::from_bits(1 << 9), None);
        assert_eq!(Access::from_bits(3), Some(Access::READ_WRITE));
    }
}
