//! Host side of the guest tests: the test plan (`suites.txt`), the KTAP reader, the code
//! that boots a guest through `mnic-vm` and collects what it printed, and the run records
//! (guest and host) that `test-report` turns into the generated blocks of `docs/testing.md`.

pub mod collect;
pub mod docblock;
pub mod hostlog;
pub mod ktap;
pub mod markdown;
pub mod plan;
pub mod provenance;
pub mod record;
pub mod report;
pub mod vm;
