//! BAR0 registers, BAR2 doorbells and the device counters (spec §3, §4, §10).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mnic_abi::{caps, control, counter, reg, MNIC_ID_VALUE, MNIC_VERSION_VALUE, NUM_CONTEXTS};

/// The device counters, shared with the control socket.
pub struct Counters {
    slots: [AtomicU64; counter::SLOTS as usize],
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            slots: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Counters {
    /// Value of counter slot `i` (0 outside the slots).
    pub fn get(&self, i: u32) -> u64 {
        self.slots
            .get(i as usize)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
    /// Adds one to counter `i` (ignored outside the slots).
    pub fn inc(&self, i: u32) {
        if let Some(c) = self.slots.get(i as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
    /// Resets every counter to 0.
    pub fn clear(&self) {
        for c in &self.slots {
            c.store(0, Ordering::Relaxed);
        }
    }
    /// `name value` lines for every defined counter.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for (i, name) in counter::NAMES.iter().enumerate() {
            s.push_str(&format!("{name} {}\n", self.get(i as u32)));
        }
        s
    }
}

/// How a BAR0 offset behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reg {
    Const(u32),
    ReadOnly,
    ReadWrite,
    Control,
    ErrorCode,
    IrqStatus,
}

fn classify(off: u32) -> Option<Reg> {
    Some(match off {
        reg::ID => Reg::Const(MNIC_ID_VALUE),
        reg::VERSION => Reg::Const(MNIC_VERSION_VALUE),
        reg::CAPS => Reg::Const(caps::ALL),
        reg::NUM_CONTEXTS => Reg::Const(NUM_CONTEXTS),
        reg::CONTROL => Reg::Control,
        reg::STATUS | reg::ERROR_COUNT | reg::CMDQ_HEAD | reg::EVQ_TAIL => Reg::ReadOnly,
        reg::ERROR_CODE => Reg::ErrorCode,
        reg::IRQ_STATUS => Reg::IrqStatus,
        reg::CTX_TABLE_LO
        | reg::CTX_TABLE_HI
        | reg::CMDQ_BASE_LO
        | reg::CMDQ_BASE_HI
        | reg::CMDQ_SIZE_LOG2
        | reg::CMDQ_TAIL
        | reg::EVQ_BASE_LO
        | reg::EVQ_BASE_HI
        | reg::EVQ_SIZE_LOG2
        | reg::EVQ_HEAD
        | reg::IRQ_MASK => Reg::ReadWrite,
        _ => return None,
    })
}

const NREGS: usize = (reg::COUNTERS / 4) as usize;
const COUNTERS_END: u32 = reg::COUNTERS + 8 * counter::SLOTS;

/// The register file and doorbells.
pub struct Device {
    regs: [u32; NREGS],
    doorbells: Vec<u32>,
    counters: Arc<Counters>,
    strict: bool,
}

impl Device {
    /// A device in its reset state. `strict` is the server's `--strict` option.
    pub fn new(counters: Arc<Counters>, strict: bool) -> Self {
        Device {
            regs: [0; NREGS],
            doorbells: vec![0; NUM_CONTEXTS as usize],
            counters,
            strict,
        }
    }

    /// Whether the server runs in strict mode.
    pub fn strict(&self) -> bool {
        self.strict
    }

    /// The shared counters.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Returns every register, counter and doorbell to its reset state.
    pub fn reset(&mut self) {
        self.regs = [0; NREGS];
        self.doorbells.iter_mut().for_each(|d| *d = 0);
        self.counters.clear();
    }

    fn bad(&self) {
        self.counters.inc(counter::BAD_MMIO);
    }

    /// Reads `buf.len()` bytes of BAR0 at `off` (the caller checked the BAR bounds).
    /// Bad sizes, misaligned or undefined offsets read all-ones and are counted.
    pub fn bar0_read(&self, off: u64, buf: &mut [u8]) {
        if let Some(v) = self.bar0_read_value(off, buf.len()) {
            let bytes = v.to_le_bytes();
            buf.copy_from_slice(&bytes[..buf.len()]);
        } else {
            self.bad();
            buf.fill(0xff);
        }
    }

    fn bar0_read_value(&self, off: u64, len: usize) -> Option<u64> {
        let off = u32::try_from(off).ok()?;
        match len {
            4 if off % 4 == 0 => {
                if (reg::COUNTERS..COUNTERS_END).contains(&off) {
                    let c = self.counters.get((off - reg::COUNTERS) / 8);
                    return Some(if off % 8 == 0 {
                        c & 0xffff_ffff
                    } else {
                        c >> 32
                    });
                }
                let v = match classify(off)? {
                    Reg::Const(v) => v,
                    _ => *self.regs.get(off as usize / 4)?,
                };
                Some(u64::from(v))
            }
            8 if off % 8 == 0 && (reg::COUNTERS..COUNTERS_END).contains(&off) => {
                Some(self.counters.get((off - reg::COUNTERS) / 8))
            }
            _ => None,
        }
    }

    /// Writes `data` to BAR0 at `off`. Bad accesses are ignored and counted.
    pub fn bar0_write(&mut self, off: u64, data: &[u8]) {
        let (Ok(off), Ok(bytes)) = (u32::try_from(off), <[u8; 4]>::try_from(data)) else {
            self.bad();
            return;
        };
        let v = u32::from_le_bytes(bytes);
        let kind = if off % 4 == 0 { classify(off) } else { None };
        let idx = off as usize / 4;
        match kind {
            Some(Reg::ReadWrite) => self.set(idx, v),
            Some(Reg::ErrorCode) => self.set(idx, 0),
            Some(Reg::IrqStatus) => {
                let cur = self.regs.get(idx).copied().unwrap_or(0);
                self.set(idx, cur & !v);
            }
            Some(Reg::Control) => {
                if v & control::RESET != 0 {
                    self.reset();
                } else {
                    self.set(idx, v & (control::ENABLE | control::STRICT));
                }
            }
            Some(Reg::Const(_)) | Some(Reg::ReadOnly) | None => self.bad(),
        }
    }

    fn set(&mut self, idx: usize, v: u32) {
        if let Some(r) = self.regs.get_mut(idx) {
            *r = v;
        }
    }

    /// Reads BAR2 (doorbells read back 0).
    pub fn bar2_read(&self, _off: u64, buf: &mut [u8]) {
        buf.fill(0);
    }

    /// Writes BAR2: a 4-byte write to a page's `WQ_TAIL` is stored; others ignored.
    pub fn bar2_write(&mut self, off: u64, data: &[u8]) {
        let page = mnic_abi::DOORBELL_PAGE_SIZE;
        if let Ok(bytes) = <[u8; 4]>::try_from(data) {
            if off % page == u64::from(reg::DB_WQ_TAIL) {
                let ctx = usize::try_from(off / page).unwrap_or(usize::MAX);
                if let Some(d) = self.doorbells.get_mut(ctx) {
                    *d = u32::from_le_bytes(bytes);
                }
            }
        }
    }

    /// The last value written to context `ctx`'s doorbell.
    pub fn doorbell(&self, ctx: usize) -> u32 {
        self.doorbells.get(ctx).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mnic_abi::irq;

    fn dev() -> Device {
        Device::new(Arc::new(Counters::default()), false)
    }
    fn rd(d: &Device, off: u32, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        d.bar0_read(off.into(), &mut b);
        b
    }
    fn rd32(d: &Device, off: u32) -> u32 {
        u32::from_le_bytes(rd(d, off, 4).try_into().unwrap())
    }
    fn bad(d: &Device) -> u64 {
        d.counters.get(counter::BAD_MMIO)
    }

    #[test]
    fn identity_registers() {
        let d = dev();
        assert_eq!(rd32(&d, reg::ID), MNIC_ID_VALUE);
        assert_eq!(rd32(&d, reg::VERSION), MNIC_VERSION_VALUE);
        assert_eq!(rd32(&d, reg::CAPS), caps::ALL);
        assert_eq!(rd32(&d, reg::NUM_CONTEXTS), NUM_CONTEXTS);
        assert_eq!(rd32(&d, reg::STATUS), 0);
        assert_eq!(rd32(&d, reg::counter(counter::DMA_OPS)), 0);
        assert_eq!(bad(&d), 0);
    }

    #[test]
    fn stored_registers() {
        let mut d = dev();
        d.bar0_write(reg::IRQ_MASK.into(), &7u32.to_le_bytes());
        assert_eq!(rd32(&d, reg::IRQ_MASK), 7);
        d.bar0_write(reg::CONTROL.into(), &control::STRICT.to_le_bytes());
        assert_eq!(rd32(&d, reg::CONTROL), control::STRICT);
        d.bar0_write(reg::IRQ_STATUS.into(), &irq::EVENT.to_le_bytes());
        assert_eq!(rd32(&d, reg::IRQ_STATUS), 0);
        d.bar0_write(reg::CONTROL.into(), &control::RESET.to_le_bytes());
        assert_eq!(rd32(&d, reg::CONTROL), 0);
        assert_eq!(rd32(&d, reg::IRQ_MASK), 0);
        assert_eq!(bad(&d), 0);
    }

    #[test]
    fn bad_accesses() {
        let mut d = dev();
        assert_eq!(rd(&d, reg::ID, 2), vec![0xff; 2]);
        assert_eq!(bad(&d), 1);
        assert_eq!(rd(&d, 1, 4), vec![0xff; 4]);
        assert_eq!(rd(&d, 0x0ffc, 4), vec![0xff; 4]);
        assert_eq!(rd(&d, reg::ID, 8), vec![0xff; 8]);
        assert_eq!(rd(&d, reg::ID, 3), vec![0xff; 3]);
        assert_eq!(bad(&d), 5);
        d.bar0_write(reg::ID.into(), &0u32.to_le_bytes());
        d.bar0_write(reg::STATUS.into(), &1u32.to_le_bytes());
        d.bar0_write(0x0ffc, &1u32.to_le_bytes());
        d.bar0_write(reg::IRQ_MASK.into(), &[1, 2]);
        d.bar0_write(u64::MAX, &[1, 2, 3, 4]);
        assert_eq!(bad(&d), 10);
        assert_eq!(rd32(&d, reg::STATUS), 0);
        assert_eq!(rd32(&d, reg::IRQ_MASK), 0);
        // The counter is visible through its own slot, 32 and 64 bits wide.
        assert_eq!(rd32(&d, reg::counter(counter::BAD_MMIO)), 10);
        let v = rd(&d, reg::counter(counter::BAD_MMIO), 8);
        assert_eq!(u64::from_le_bytes(v.try_into().unwrap()), 10);
        assert_eq!(rd32(&d, reg::counter(counter::BAD_MMIO) + 4), 0);
    }

    #[test]
    fn doorbells() {
        let mut d = dev();
        d.bar2_write(3 * 4096, &5u32.to_le_bytes());
        d.bar2_write(3 * 4096 + 8, &9u32.to_le_bytes());
        d.bar2_write(u64::MAX - 3, &9u32.to_le_bytes());
        assert_eq!(d.doorbell(3), 5);
        let mut b = [1u8; 4];
        d.bar2_read(3 * 4096, &mut b);
        assert_eq!(b, [0; 4]);
    }

    #[test]
    fn stats_render() {
        let d = dev();
        d.counters.inc(counter::BAD_MMIO);
        let s = d.counters.render();
        assert_eq!(s.lines().count(), counter::COUNT as usize);
        assert!(s.contains("bad_mmio 1\n"));
    }
}
