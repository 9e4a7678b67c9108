//! `mnic pingpong` and `mnic bw`: remote memory access between two devices that are nodes of
//! one fabric, both ends in this process, each against a local COPY baseline.
//!
//! The reports have the schema of `mnic bench` (`mnic-bench-schema`), with one row and one
//! ratio per message size (`names::row::sized`). One file per job: `args` (flags), `ends`
//! (the two contexts, their buffers and remote windows), `pingpong` and `bw`. A run where
//! the two devices are not peers on a fabric prints a report that says so (`skipped`).

pub mod args;
mod bw;
mod ends;
mod pingpong;

use args::FabricArgs;

use crate::bench::print;
use crate::error::CmdResult;

/// `mnic pingpong`.
pub fn pingpong(a: &FabricArgs) -> CmdResult {
    print(&pingpong::run(a)?, a.json)
}

/// `mnic bw`.
pub fn bw(a: &FabricArgs) -> CmdResult {
    print(&bw::run(a)?, a.json)
}
