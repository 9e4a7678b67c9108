//! Finding the mnic PCI function in sysfs and handing it to `vfio-pci`: unbind it from
//! whatever driver holds it (`mnic.ko`, typically), set `driver_override` and ask the PCI
//! core to probe it again. Then `/dev/vfio/<group>` exists and user space owns the device.

use std::fs;
use std::path::{Path, PathBuf};

use mnic_abi::{MNIC_DEVICE_ID, MNIC_VENDOR_ID};

use crate::error::{io_err, Error, Result};

const PCI_DEVICES: &str = "/sys/bus/pci/devices";
const UNSAFE_INTERRUPTS: &str = "/sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts";
const VFIO_PCI: &str = "vfio-pci";

/// A PCI function in sysfs.
#[derive(Debug, Clone)]
pub struct PciFunction {
    /// Its address, `0000:00:03.0`.
    pub bdf: String,
    /// `/sys/bus/pci/devices/<bdf>`.
    pub path: PathBuf,
}

impl PciFunction {
    /// The function at `bdf`.
    pub fn at(bdf: &str) -> Result<Self> {
        let path = Path::new(PCI_DEVICES).join(bdf);
        if !path.exists() {
            return Err(Error::Device(format!("no PCI function {bdf}")));
        }
        Ok(Self {
            bdf: bdf.to_owned(),
            path,
        })
    }

    /// The first mnic function (by vendor and device id), in address order.
    pub fn find_mnic() -> Result<Self> {
        let mut all: Vec<_> = fs::read_dir(PCI_DEVICES)
            .map_err(io_err(PCI_DEVICES))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        all.sort();
        for bdf in all {
            let f = Self::at(&bdf)?;
            if f.id("vendor")? == MNIC_VENDOR_ID && f.id("device")? == MNIC_DEVICE_ID {
                return Ok(f);
            }
        }
        Err(Error::NoDevice {
            vendor: MNIC_VENDOR_ID,
            device: MNIC_DEVICE_ID,
        })
    }

    fn id(&self, file: &str) -> Result<u16> {
        let p = self.path.join(file);
        let s = fs::read_to_string(&p).map_err(io_err(p.display().to_string()))?;
        u16::from_str_radix(s.trim().trim_start_matches("0x"), 16)
            .map_err(|_| Error::Device(format!("{}: not a PCI id: {s:?}", p.display())))
    }

    /// The name of the driver bound to the function, if any.
    pub fn driver(&self) -> Option<String> {
        fs::read_link(self.path.join("driver"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    }

    /// The number of the function's IOMMU group (absent without an IOMMU).
    pub fn iommu_group(&self) -> Result<u32> {
        let link = fs::read_link(self.path.join("iommu_group")).map_err(|_| {
            Error::Device(format!(
                "{} has no IOMMU group: boot the guest with an IOMMU (mnic-vm run --iommu)",
                self.bdf
            ))
        })?;
        link.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| Error::Device(format!("odd iommu_group link {}", link.display())))
    }

    /// Binds the function to `vfio-pci` (unbinding it from its current driver first) and
    /// returns the path of its VFIO group file. Binding a function that `vfio-pci`
    /// already holds changes nothing.
    pub fn bind_vfio(&self) -> Result<PathBuf> {
        let group = self.iommu_group()?;
        if self.driver().as_deref() != Some(VFIO_PCI) {
            if self.driver().is_some() {
                write(&self.path.join("driver/unbind"), &self.bdf)?;
            }
            // driver_override makes vfio-pci (and only it) match on the next probe, without
            // teaching vfio-pci the id table of every device it may ever be given.
            write(&self.path.join("driver_override"), VFIO_PCI)?;
            write(Path::new("/sys/bus/pci/drivers_probe"), &self.bdf)?;
        }
        match self.driver() {
            Some(d) if d == VFIO_PCI => {}
            other => {
                return Err(Error::Device(format!(
                    "{} is bound to {other:?} after the probe, not {VFIO_PCI}",
                    self.bdf
                )))
            }
        }
        let dev = PathBuf::from(format!("/dev/vfio/{group}"));
        if !dev.exists() {
            return Err(Error::Device(format!("{} missing", dev.display())));
        }
        Ok(dev)
    }

    /// Gives the function back to the kernel: unbinds it from `vfio-pci`, clears
    /// `driver_override` and probes it again, so that its own driver (`mnic.ko`, if
    /// loaded) binds it. Returns the driver that holds it now, if any.
    pub fn release(&self) -> Result<Option<String>> {
        if self.driver().as_deref() == Some(VFIO_PCI) {
            write(&self.path.join("driver/unbind"), &self.bdf)?;
        }
        // A newline alone clears the override.
        write(&self.path.join("driver_override"), "\n")?;
        write(Path::new("/sys/bus/pci/drivers_probe"), &self.bdf)?;
        Ok(self.driver())
    }
}

/// Lets VFIO's type-1 IOMMU driver accept a device on a platform without interrupt
/// remapping. The test guest's IOMMU (QEMU's intel-iommu as `mnic-vm run --iommu` creates
/// it) has none, and without this VFIO refuses to set up the container (`EPERM`). Without
/// remapping, a device could forge MSI writes; that matters for untrusted devices on real
/// machines, not for a test guest whose one device is the one under test. Returns whether
/// the setting was changed.
pub fn allow_unsafe_interrupts() -> Result<bool> {
    let p = Path::new(UNSAFE_INTERRUPTS);
    let now = fs::read_to_string(p).map_err(io_err(UNSAFE_INTERRUPTS))?;
    if now.trim() == "Y" {
        return Ok(false);
    }
    write(p, "1")?;
    Ok(true)
}

fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(io_err(format!("write {value} to {}", path.display())))
}
