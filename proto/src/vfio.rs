//! [`VfioFunction`]: the device opened through VFIO's container/group interface
//! (`vfio-ioctls`): the container (an IOMMU domain of type 1), the device file with its
//! regions, PCI configuration space for bus mastering, and the MSI-X vectors wired to
//! eventfds.

use std::path::Path;
use std::sync::Arc;

use vfio_bindings::bindings::vfio::{VFIO_PCI_CONFIG_REGION_INDEX, VFIO_PCI_MSIX_IRQ_INDEX};
use vfio_ioctls::{VfioContainer, VfioDevice, VfioOps};

use crate::error::{vfio_err, Error, Result};
use crate::irq::Vectors;

// PCI configuration space (include/uapi/linux/pci_regs.h; vfio-bindings has only VFIO's
// own definitions).
const PCI_COMMAND: u64 = 0x04;
const PCI_COMMAND_MEMORY: u16 = 1 << 1;
const PCI_COMMAND_MASTER: u16 = 1 << 2;

/// The device and its container.
pub struct VfioFunction {
    /// The IOMMU domain the DMA memory is mapped in.
    pub container: Arc<VfioContainer>,
    /// The device file: regions, interrupts.
    pub device: VfioDevice,
}

impl VfioFunction {
    /// Opens the function at `sysfs` (bound to `vfio-pci`) in a new container.
    pub fn open(sysfs: &Path) -> Result<Self> {
        let container =
            Arc::new(VfioContainer::new(None).map_err(vfio_err("open /dev/vfio/vfio"))?);
        let ops: Arc<dyn VfioOps> = container.clone();
        let device =
            VfioDevice::new(sysfs, ops, false).map_err(vfio_err("open the VFIO device"))?;
        Ok(Self { container, device })
    }

    fn command(&self) -> u16 {
        let mut b = [0u8; 2];
        self.device
            .region_read(VFIO_PCI_CONFIG_REGION_INDEX, &mut b, PCI_COMMAND);
        u16::from_le_bytes(b)
    }

    /// Turns memory decoding and bus mastering on or off in the PCI command register
    /// (spec §3: the device does no DMA and sends no MSI-X while bus mastering is off), and
    /// checks the value read back.
    pub fn set_bus_master(&self, on: bool) -> Result<()> {
        let old = self.command();
        let new = if on {
            old | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER
        } else {
            old & !PCI_COMMAND_MASTER
        };
        self.device.region_write(
            VFIO_PCI_CONFIG_REGION_INDEX,
            &new.to_le_bytes(),
            PCI_COMMAND,
        );
        let now = self.command();
        if (now & PCI_COMMAND_MASTER != 0) != on {
            return Err(Error::Device(format!(
                "PCI command register reads {now:#x} after writing {new:#x}"
            )));
        }
        Ok(())
    }

    /// Routes MSI-X vector `i` to eventfd `i` of `vectors`.
    pub fn enable_msix(&self, vectors: &Vectors) -> Result<()> {
        let irq = self
            .device
            .get_irq_info(VFIO_PCI_MSIX_IRQ_INDEX)
            .ok_or_else(|| Error::Device("no MSI-X interrupt index".into()))?;
        if (irq.count as usize) < vectors.fds().len() {
            return Err(Error::Device(format!(
                "{} MSI-X vectors, {} wanted",
                irq.count,
                vectors.fds().len()
            )));
        }
        self.device
            .enable_msix(vectors.fds())
            .map_err(vfio_err("VFIO_DEVICE_SET_IRQS (MSI-X)"))
    }

    /// Stops MSI-X delivery.
    pub fn disable_msix(&self) {
        let _ = self.device.disable_msix();
    }
}
