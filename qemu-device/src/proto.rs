//! vfio-user wire format (QEMU `docs/interop/vfio-user.rst`): a 16-byte header and
//! little-endian payloads. Only what the device needs is defined here.

/// Size of the message header.
pub const HEADER_SIZE: usize = 16;
/// Largest message accepted (header included); larger ones are drained and refused.
pub const MAX_MSG_SIZE: usize = 1 << 20;
/// Largest REGION_READ/WRITE data size advertised and accepted.
pub const MAX_DATA_XFER: usize = 64 << 10;
/// Most file descriptors accepted with one message.
pub const MAX_MSG_FDS: usize = 8;

/// Command numbers.
pub mod cmd {
    /// Version and capability negotiation.
    pub const VERSION: u16 = 1;
    /// Add a DMA region.
    pub const DMA_MAP: u16 = 2;
    /// Remove a DMA region.
    pub const DMA_UNMAP: u16 = 3;
    /// Device information.
    pub const DEVICE_GET_INFO: u16 = 4;
    /// Region information.
    pub const DEVICE_GET_REGION_INFO: u16 = 5;
    /// Interrupt information.
    pub const DEVICE_GET_IRQ_INFO: u16 = 7;
    /// Interrupt eventfds.
    pub const DEVICE_SET_IRQS: u16 = 8;
    /// Read a region.
    pub const REGION_READ: u16 = 9;
    /// Write a region.
    pub const REGION_WRITE: u16 = 10;
    /// Reset the device.
    pub const DEVICE_RESET: u16 = 13;
}

/// Header flags: message type mask.
pub const FLAG_TYPE_MASK: u32 = 0xf;
/// Message type: command.
pub const FLAG_COMMAND: u32 = 0;
/// Message type: reply.
pub const FLAG_REPLY: u32 = 1;
/// The sender wants no reply.
pub const FLAG_NO_REPLY: u32 = 1 << 4;
/// The reply carries an error.
pub const FLAG_ERROR: u32 = 1 << 5;

// VFIO's own constants, which vfio-user reuses: taken from the kernel's uapi through
// rust-vmm's `vfio-bindings` (the message framing above and below stays ours). The short
// names are what the server and the tests use.
use vfio_bindings::bindings::vfio;

pub use vfio::{vfio_device_info, vfio_iommu_type1_dma_unmap, vfio_irq_info, vfio_region_info};

/// VFIO device flags: reset supported.
pub const DEVICE_FLAGS_RESET: u32 = vfio::VFIO_DEVICE_FLAGS_RESET;
/// VFIO device flags: PCI device.
pub const DEVICE_FLAGS_PCI: u32 = vfio::VFIO_DEVICE_FLAGS_PCI;
/// VFIO PCI region count (BAR0..5, ROM, CONFIG, VGA).
pub const PCI_NUM_REGIONS: u32 = vfio::VFIO_PCI_NUM_REGIONS;
/// Region index of the ROM.
pub const PCI_ROM_REGION_INDEX: u32 = vfio::VFIO_PCI_ROM_REGION_INDEX;
/// Region index of the configuration space.
pub const PCI_CONFIG_REGION_INDEX: u32 = vfio::VFIO_PCI_CONFIG_REGION_INDEX;
/// Region index of the VGA ranges (the device has none).
pub const PCI_VGA_REGION_INDEX: u32 = vfio::VFIO_PCI_VGA_REGION_INDEX;
/// VFIO PCI IRQ index count (INTx, MSI, MSI-X, ERR, REQ).
pub const PCI_NUM_IRQS: u32 = vfio::VFIO_PCI_NUM_IRQS;
/// IRQ index of MSI-X.
pub const PCI_MSIX_IRQ_INDEX: u32 = vfio::VFIO_PCI_MSIX_IRQ_INDEX;
/// Region flag: readable.
pub const REGION_INFO_FLAG_READ: u32 = vfio::VFIO_REGION_INFO_FLAG_READ;
/// Region flag: writable.
pub const REGION_INFO_FLAG_WRITE: u32 = vfio::VFIO_REGION_INFO_FLAG_WRITE;
/// DMA_MAP flag: the device may read the map.
pub const DMA_MAP_FLAG_READ: u32 = vfio::VFIO_DMA_MAP_FLAG_READ;
/// DMA_MAP flag: the device may write the map.
pub const DMA_MAP_FLAG_WRITE: u32 = vfio::VFIO_DMA_MAP_FLAG_WRITE;
/// DMA_UNMAP flag: return a dirty bitmap. The device has no dirty page tracking; refused.
pub const DMA_UNMAP_FLAG_GET_DIRTY_BITMAP: u32 = vfio::VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP;
/// DMA_UNMAP flag: remove every map; address and size are 0. QEMU sends it when the
/// whole address space goes.
pub const DMA_UNMAP_FLAG_ALL: u32 = vfio::VFIO_DMA_UNMAP_FLAG_ALL;
/// IRQ info flag: eventfd signalling.
pub const IRQ_INFO_EVENTFD: u32 = vfio::VFIO_IRQ_INFO_EVENTFD;
/// IRQ info flag: the count cannot change without disabling.
pub const IRQ_INFO_NORESIZE: u32 = vfio::VFIO_IRQ_INFO_NORESIZE;
/// SET_IRQS: no data.
pub const IRQ_SET_DATA_NONE: u32 = vfio::VFIO_IRQ_SET_DATA_NONE;
/// SET_IRQS: bool data.
pub const IRQ_SET_DATA_BOOL: u32 = vfio::VFIO_IRQ_SET_DATA_BOOL;
/// SET_IRQS: eventfds (in the message's fds).
pub const IRQ_SET_DATA_EVENTFD: u32 = vfio::VFIO_IRQ_SET_DATA_EVENTFD;
/// SET_IRQS: trigger action.
pub const IRQ_SET_ACTION_TRIGGER: u32 = vfio::VFIO_IRQ_SET_ACTION_TRIGGER;

/// Little-endian field writer for a reply payload.
#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// Appends a u32.
    pub fn u32(mut self, v: u32) -> Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends a u64.
    pub fn u64(mut self, v: u64) -> Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// The bytes written.
    pub fn done(self) -> Vec<u8> {
        self.buf
    }
}

/// The DEVICE_GET_INFO reply: vfio-user sends the first four fields of
/// `vfio_device_info` (16 bytes, no capability chain).
pub fn device_info(info: &vfio_device_info) -> Vec<u8> {
    Writer::default()
        .u32(16)
        .u32(info.flags)
        .u32(info.num_regions)
        .u32(info.num_irqs)
        .done()
}

/// The DEVICE_GET_REGION_INFO reply: a `vfio_region_info` (32 bytes, no capabilities).
pub fn region_info(info: &vfio_region_info) -> Vec<u8> {
    Writer::default()
        .u32(std::mem::size_of::<vfio_region_info>() as u32)
        .u32(info.flags)
        .u32(info.index)
        .u32(info.cap_offset)
        .u64(info.size)
        .u64(info.offset)
        .done()
}

/// The DEVICE_GET_IRQ_INFO reply: a `vfio_irq_info` (16 bytes).
pub fn irq_info(info: &vfio_irq_info) -> Vec<u8> {
    Writer::default()
        .u32(std::mem::size_of::<vfio_irq_info>() as u32)
        .u32(info.flags)
        .u32(info.index)
        .u32(info.count)
        .done()
}

/// The DMA_UNMAP reply: the request's `vfio_iommu_type1_dma_unmap` echoed (24 bytes, no
/// dirty bitmap).
pub fn dma_unmap(u: &vfio_iommu_type1_dma_unmap) -> Vec<u8> {
    Writer::default()
        .u32(std::mem::size_of::<vfio_iommu_type1_dma_unmap>() as u32)
        .u32(u.flags)
        .u64(u.iova)
        .u64(u.size)
        .done()
}

/// A message header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Message id, echoed in the reply.
    pub msg_id: u16,
    /// Command number.
    pub command: u16,
    /// Size including the header.
    pub size: u32,
    /// `FLAG_*`.
    pub flags: u32,
    /// errno of an error reply.
    pub error: u32,
}

impl Header {
    /// Decodes a header.
    pub fn decode(b: &[u8; HEADER_SIZE]) -> Self {
        Header {
            msg_id: u16::from_le_bytes([b[0], b[1]]),
            command: u16::from_le_bytes([b[2], b[3]]),
            size: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            flags: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            error: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
        }
    }

    /// Encodes a header.
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..2].copy_from_slice(&self.msg_id.to_le_bytes());
        b[2..4].copy_from_slice(&self.command.to_le_bytes());
        b[4..8].copy_from_slice(&self.size.to_le_bytes());
        b[8..12].copy_from_slice(&self.flags.to_le_bytes());
        b[12..16].copy_from_slice(&self.error.to_le_bytes());
        b
    }

    /// A complete message: this header (size fixed up) followed by `payload`.
    pub fn message(mut self, payload: &[u8]) -> Vec<u8> {
        self.size = u32::try_from(HEADER_SIZE + payload.len()).unwrap_or(u32::MAX);
        let mut v = Vec::with_capacity(HEADER_SIZE + payload.len());
        v.extend_from_slice(&self.encode());
        v.extend_from_slice(payload);
        v
    }
}

/// Little-endian field reader over a payload; out-of-range reads give `None`.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    /// The next u16.
    pub fn u16(&mut self) -> Option<u16> {
        self.bytes(2)?.try_into().ok().map(u16::from_le_bytes)
    }
    /// The next u32.
    pub fn u32(&mut self) -> Option<u32> {
        self.bytes(4)?.try_into().ok().map(u32::from_le_bytes)
    }
    /// The next u64.
    pub fn u64(&mut self) -> Option<u64> {
        self.bytes(8)?.try_into().ok().map(u64::from_le_bytes)
    }
    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        let s = self.buf.get(self.pos..).unwrap_or(&[]);
        self.pos = self.buf.len();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip() {
        let h = Header {
            msg_id: 7,
            command: cmd::REGION_READ,
            size: 32,
            flags: FLAG_REPLY | FLAG_ERROR,
            error: 22,
        };
        assert_eq!(Header::decode(&h.encode()), h);
        assert_eq!(h.message(&[1, 2]).len(), 18);
    }

    #[test]
    fn replies_have_the_vfio_layouts() {
        let r = region_info(&vfio_region_info {
            flags: REGION_INFO_FLAG_READ,
            index: 7,
            size: 256,
            ..Default::default()
        });
        assert_eq!(r.len(), 32);
        assert_eq!(&r[0..4], &32u32.to_le_bytes());
        assert_eq!(&r[16..24], &256u64.to_le_bytes());
        assert_eq!(irq_info(&vfio_irq_info::default()).len(), 16);
        let u = dma_unmap(&vfio_iommu_type1_dma_unmap {
            flags: DMA_UNMAP_FLAG_ALL,
            iova: 0x1000,
            size: 0x2000,
            ..Default::default()
        });
        assert_eq!(u.len(), 24);
        assert_eq!(&u[8..16], &0x1000u64.to_le_bytes());
        assert_eq!(device_info(&vfio_device_info::default()).len(), 16);
    }

    #[test]
    fn reader_bounds() {
        let mut r = Reader::new(&[1, 0, 0, 0, 2]);
        assert_eq!(r.u32(), Some(1));
        assert_eq!(r.u32(), None);
        assert_eq!(r.rest(), &[2]);
        assert_eq!(r.u64(), None);
    }
}
