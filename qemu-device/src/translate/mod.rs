//! Address translation (spec §6): the table walker ([`walk`](mod@walk)) and the device
//! TLB ([`tlb`]) that caches what it finds.

pub mod tlb;
pub mod walk;

pub use tlb::{Tlb, TlbEntry, TLB_CAPACITY};
pub use walk::{find_leaf, walk, Leaf, Scan, WalkError, SCAN_BUDGET};
