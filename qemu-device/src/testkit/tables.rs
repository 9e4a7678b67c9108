//! A translation-table builder that plays the driver's part in guest RAM.

use mnic_abi::pte;

use crate::mem::{self, GuestMem};

/// A 4-level table tree in guest RAM with a bump allocator for its table pages.
pub struct Tables {
    /// GPA of the level-4 table.
    pub root: u64,
    next: u64,
}

impl Tables {
    /// A tree whose tables are allocated from `alloc_base` upwards (4 KiB aligned).
    pub fn new(m: &GuestMem, alloc_base: u64) -> Self {
        let mut t = Tables {
            root: 0,
            next: alloc_base,
        };
        t.root = t.alloc(m);
        t
    }

    fn alloc(&mut self, m: &GuestMem) -> u64 {
        let a = self.next;
        self.next += pte::PAGE_SIZE;
        mem::write(m, a, &[0u8; pte::PAGE_SIZE as usize]).expect("table page in RAM");
        a
    }

    /// GPA of the next table page the builder would allocate.
    pub fn alloc_end(&self) -> u64 {
        self.next
    }

    /// The table at `level` for `va`, creating the levels above as needed.
    fn table_for(&mut self, m: &GuestMem, va: u64, level: u32) -> u64 {
        let mut table = self.root;
        for l in (level + 1..=pte::LEVELS).rev() {
            let at = table + 8 * pte::index(va, l) as u64;
            let e = mem::load_u64(m, at).unwrap();
            table = if e & pte::P != 0 && e & pte::H == 0 {
                e & pte::ADDR_MASK
            } else {
                let t = self.alloc(m);
                mem::store_u64(m, at, pte::table(t)).unwrap();
                t
            };
        }
        table
    }

    /// Maps the 4 KiB page at `va` to `gpa`.
    pub fn map_4k(&mut self, m: &GuestMem, va: u64, gpa: u64, writable: bool) {
        let t = self.table_for(m, va, 1);
        mem::store_u64(
            m,
            t + 8 * pte::index(va, 1) as u64,
            pte::leaf_4k(gpa, writable),
        )
        .unwrap();
    }

    /// Maps the 2 MiB page at `va` to `gpa`.
    pub fn map_2m(&mut self, m: &GuestMem, va: u64, gpa: u64, writable: bool) {
        let t = self.table_for(m, va, 2);
        mem::store_u64(
            m,
            t + 8 * pte::index(va, 2) as u64,
            pte::leaf_2m(gpa, writable),
        )
        .unwrap();
    }

    /// Maps `[va, va + len)` to `[gpa, gpa + len)` with 4 KiB pages.
    pub fn map_range(&mut self, m: &GuestMem, va: u64, gpa: u64, len: u64, writable: bool) {
        let mut off = 0;
        while off < len {
            self.map_4k(m, va + off, gpa + off, writable);
            off += pte::PAGE_SIZE;
        }
    }

    /// GPA of the entry for `va` at `level`, if the levels above exist.
    pub fn entry_addr(&self, m: &GuestMem, va: u64, level: u32) -> Option<u64> {
        let mut table = self.root;
        for l in (1..=pte::LEVELS).rev() {
            let at = table + 8 * pte::index(va, l) as u64;
            if l == level {
                return Some(at);
            }
            let e = mem::load_u64(m, at).ok()?;
            if e & pte::P == 0 || e & pte::H != 0 {
                return None;
            }
            table = e & pte::ADDR_MASK;
        }
        None
    }

    /// Clears the leaf for `va` (4 KiB level, or the 2 MiB entry if `huge`).
    pub fn unmap(&self, m: &GuestMem, va: u64, huge: bool) {
        if let Some(at) = self.entry_addr(m, va, if huge { 2 } else { 1 }) {
            mem::store_u64(m, at, 0).unwrap();
        }
    }
}
