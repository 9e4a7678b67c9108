//! Host side of the guest tests: the test plan (`suites.txt`), the KTAP reader, and the
//! code that boots a guest through `mnic-vm` and collects what it printed.

pub mod ktap;
pub mod plan;
pub mod vm;
