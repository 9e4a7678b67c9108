//! PCI configuration space (type 0 header) with an MSI-X capability (spec §2).
//!
//! Every byte has a write mask; a config write only changes the masked bits, so
//! writes to anything other than the command register, the BARs and the MSI-X
//! message control are ignored. BAR size probing falls out of the masks: writing
//! all-ones to a BAR reads back `!(size - 1)` with the (read-only) type bits.

use mnic_abi::{
    BAR_DOORBELLS, BAR_DOORBELLS_SIZE, BAR_MSIX, BAR_MSIX_SIZE, BAR_REGS, BAR_REGS_SIZE,
    MNIC_CLASS, MNIC_DEVICE_ID, MNIC_REVISION, MNIC_SUBSYS_ID, MNIC_SUBSYS_VENDOR_ID,
    MNIC_VENDOR_ID, MSIX_PBA_OFFSET, MSIX_TABLE_OFFSET, MSIX_VECTORS,
};

/// Size of the configuration space region (conventional PCI).
pub const CONFIG_SIZE: usize = 256;
/// Offset of the MSI-X capability.
pub const MSIX_CAP_OFFSET: usize = 0x40;
/// PCI capability id of MSI-X.
pub const CAP_ID_MSIX: u8 = 0x11;
/// Offset of the command register.
pub const PCI_COMMAND: usize = 0x04;
/// Offset of the status register.
pub const PCI_STATUS: usize = 0x06;
/// Offset of BAR0.
pub const PCI_BAR0: usize = 0x10;
/// Offset of the capabilities pointer.
pub const PCI_CAP_PTR: usize = 0x34;
/// Status bit: the function has a capability list.
pub const STATUS_CAP_LIST: u16 = 1 << 4;
/// Command register bit: bus master enable (spec §3: no DMA, no MSI-X without it).
pub const COMMAND_BUS_MASTER: u16 = 0x0004;
/// Writable command bits: I/O, memory, bus master, parity, SERR, INTx disable.
pub const COMMAND_WMASK: u16 = 0x0001 | 0x0002 | COMMAND_BUS_MASTER | 0x0040 | 0x0100 | 0x0400;
/// Writable MSI-X message-control bits: function mask and enable.
pub const MSIX_CTRL_WMASK: u16 = 0xc000;

/// The emulated configuration space.
#[derive(Clone)]
pub struct ConfigSpace {
    bytes: [u8; CONFIG_SIZE],
    wmask: [u8; CONFIG_SIZE],
}

impl Default for ConfigSpace {
    fn default() -> Self {
        Self::new()
    }
}

/// Size of memory BAR `index`, 0 if unused.
pub fn bar_size(index: u32) -> u64 {
    match index {
        BAR_REGS => BAR_REGS_SIZE,
        BAR_DOORBELLS => BAR_DOORBELLS_SIZE,
        BAR_MSIX => BAR_MSIX_SIZE,
        _ => 0,
    }
}

impl ConfigSpace {
    /// The configuration space in its reset state.
    pub fn new() -> Self {
        let mut c = ConfigSpace {
            bytes: [0; CONFIG_SIZE],
            wmask: [0; CONFIG_SIZE],
        };
        c.put16(0x00, MNIC_VENDOR_ID);
        c.put16(0x02, MNIC_DEVICE_ID);
        c.put16(PCI_STATUS, STATUS_CAP_LIST);
        c.bytes[0x08] = MNIC_REVISION;
        c.bytes[0x09] = (MNIC_CLASS & 0xff) as u8;
        c.bytes[0x0a] = ((MNIC_CLASS >> 8) & 0xff) as u8;
        c.bytes[0x0b] = ((MNIC_CLASS >> 16) & 0xff) as u8;
        // Header type 0, single function; no INTx (interrupt pin 0).
        c.put16(0x2c, MNIC_SUBSYS_VENDOR_ID);
        c.put16(0x2e, MNIC_SUBSYS_ID);
        c.bytes[PCI_CAP_PTR] = MSIX_CAP_OFFSET as u8;
        c.wmask16(PCI_COMMAND, COMMAND_WMASK);
        for index in 0..6u32 {
            let size = bar_size(index);
            if size != 0 {
                // 32-bit non-prefetchable memory BAR: type bits are 0 and read-only.
                let mask = !(size as u32).wrapping_sub(1) & 0xffff_fff0;
                c.wmask32(PCI_BAR0 + 4 * index as usize, mask);
            }
        }
        // MSI-X capability: id, next = 0, message control (table size N-1),
        // table offset | BIR, PBA offset | BIR.
        let m = MSIX_CAP_OFFSET;
        c.bytes[m] = CAP_ID_MSIX;
        c.bytes[m + 1] = 0;
        c.put16(m + 2, MSIX_VECTORS.saturating_sub(1) & 0x7ff);
        c.put32(m + 4, MSIX_TABLE_OFFSET | BAR_MSIX);
        c.put32(m + 8, MSIX_PBA_OFFSET | BAR_MSIX);
        c.wmask16(m + 2, MSIX_CTRL_WMASK);
        c
    }

    fn put16(&mut self, off: usize, v: u16) {
        self.bytes[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }
    fn put32(&mut self, off: usize, v: u32) {
        self.bytes[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn wmask16(&mut self, off: usize, v: u16) {
        self.wmask[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }
    fn wmask32(&mut self, off: usize, v: u32) {
        self.wmask[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }

    /// Reads `buf.len()` bytes at `offset`; false (and nothing read) if out of range.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> bool {
        match range(offset, buf.len()) {
            Some((s, e)) => {
                buf.copy_from_slice(&self.bytes[s..e]);
                true
            }
            None => false,
        }
    }

    /// Writes `data` at `offset` through the write masks; false if out of range.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> bool {
        let Some((s, _)) = range(offset, data.len()) else {
            return false;
        };
        for (i, &b) in data.iter().enumerate() {
            let m = self.wmask[s + i];
            self.bytes[s + i] = (self.bytes[s + i] & !m) | (b & m);
        }
        true
    }

    /// A little-endian 16-bit value at `off` (in range by construction of callers).
    pub fn read16(&self, off: usize) -> u16 {
        let mut b = [0u8; 2];
        if self.read(off as u64, &mut b) {
            u16::from_le_bytes(b)
        } else {
            0
        }
    }

    /// A little-endian 32-bit value at `off`.
    pub fn read32(&self, off: usize) -> u32 {
        let mut b = [0u8; 4];
        if self.read(off as u64, &mut b) {
            u32::from_le_bytes(b)
        } else {
            0
        }
    }

    /// Whether the guest set bus master enable in the command register.
    pub fn bus_master(&self) -> bool {
        self.read16(PCI_COMMAND) & COMMAND_BUS_MASTER != 0
    }

    /// Whether the guest enabled MSI-X in the capability's message control.
    pub fn msix_enabled(&self) -> bool {
        self.read16(MSIX_CAP_OFFSET + 2) & 0x8000 != 0
    }
}

fn range(offset: u64, len: usize) -> Option<(usize, usize)> {
    let s = usize::try_from(offset).ok()?;
    let e = s.checked_add(len)?;
    (e <= CONFIG_SIZE).then_some((s, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity() {
        let c = ConfigSpace::new();
        assert_eq!(c.read16(0), MNIC_VENDOR_ID);
        assert_eq!(c.read16(2), MNIC_DEVICE_ID);
        assert_eq!(c.read32(8) >> 8, MNIC_CLASS);
        assert_eq!(c.read32(8) & 0xff, MNIC_REVISION as u32);
        assert_eq!(c.read16(0x2c), MNIC_SUBSYS_VENDOR_ID);
        assert_eq!(c.read16(0x2e), MNIC_SUBSYS_ID);
        assert_eq!(c.read16(PCI_STATUS) & STATUS_CAP_LIST, STATUS_CAP_LIST);
        assert_eq!(c.read32(0x0c) >> 16 & 0x7f, 0, "header type 0");
        assert_eq!(c.read32(0x3c) >> 8 & 0xff, 0, "no INTx pin");
    }

    #[test]
    fn bar_sizing() {
        let mut c = ConfigSpace::new();
        for i in 0..6u32 {
            let off = PCI_BAR0 + 4 * i as usize;
            assert!(c.write(off as u64, &u32::MAX.to_le_bytes()));
            let size = bar_size(i);
            let expect = if size == 0 {
                0
            } else {
                !(size as u32 - 1) & 0xffff_fff0
            };
            assert_eq!(c.read32(off), expect, "BAR{i}");
            if size != 0 {
                assert_eq!((!(c.read32(off) & !0xf)).wrapping_add(1) as u64, size);
            }
        }
        // Programming an address keeps the aligned part.
        assert!(c.write(PCI_BAR0 as u64, &0xfebf_1234u32.to_le_bytes()));
        assert_eq!(c.read32(PCI_BAR0), 0xfebf_1000);
        // Byte-wise write of the top byte.
        assert!(c.write(PCI_BAR0 as u64 + 3, &[0xaa]));
        assert_eq!(c.read32(PCI_BAR0), 0xaabf_1000);
    }

    #[test]
    fn msix_cap_layout() {
        let mut c = ConfigSpace::new();
        let m = c.read32(PCI_CAP_PTR) as usize & 0xff;
        assert_eq!(m, MSIX_CAP_OFFSET);
        assert_eq!(c.read16(m) & 0xff, CAP_ID_MSIX as u16);
        assert_eq!(c.read16(m) >> 8, 0, "last capability");
        assert_eq!((c.read16(m + 2) & 0x7ff) + 1, MSIX_VECTORS);
        assert_eq!(c.read32(m + 4) & 7, BAR_MSIX);
        assert_eq!(c.read32(m + 4) & !7, MSIX_TABLE_OFFSET);
        assert_eq!(c.read32(m + 8) & 7, BAR_MSIX);
        assert_eq!(c.read32(m + 8) & !7, MSIX_PBA_OFFSET);
        assert!(!c.msix_enabled());
        assert!(c.write(m as u64 + 2, &0xffffu16.to_le_bytes()));
        assert!(c.msix_enabled());
        assert_eq!((c.read16(m + 2) & 0x7ff) + 1, MSIX_VECTORS, "table size RO");
    }

    #[test]
    fn ignored_writes_and_ranges() {
        let mut c = ConfigSpace::new();
        let before = c.bytes;
        assert!(c.write(0, &[0xff; 4]));
        assert!(c.write(0x08, &[0xff; 8]));
        assert!(c.write(0x2c, &[0xff; 4]));
        assert!(c.write(0x80, &[0xff; 0x80]));
        assert_eq!(c.bytes, before);
        assert!(!c.bus_master(), "off after reset");
        assert!(c.write(PCI_COMMAND as u64, &0xffffu16.to_le_bytes()));
        assert_eq!(c.read16(PCI_COMMAND), COMMAND_WMASK);
        assert!(c.bus_master());
        assert!(c.write(PCI_COMMAND as u64, &[0x02]));
        assert!(!c.bus_master());
        let mut b = [0u8; 4];
        assert!(!c.read(254, &mut b));
        assert!(!c.read(u64::MAX, &mut b));
        assert!(!c.write(u64::MAX - 1, &b));
        assert!(c.read(252, &mut b));
    }
}
