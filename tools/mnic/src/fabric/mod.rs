//! `mnic pingpong` and `mnic bw`: remote memory access (`--op put`, the default) or tagged
//! messages (`--op send`) between two devices that are nodes of one fabric, both ends in
//! this process, each against a local COPY baseline.
//!
//! The reports have the schema of `mnic bench` (`mnic-bench-schema`), with one row and one
//! ratio per message size (`names::row::sized`). One file per job: `args` (flags), `ends`
//! (the two contexts, their buffers and remote windows), `pingpong` and `bw` (PUT/GET),
//! `send_pingpong` and `send_bw` (SEND/RECV), `messages` (what the last two share). A run
//! where the two devices are not peers on a fabric prints a report that says so
//! (`skipped`).

pub mod args;
mod bw;
mod ends;
mod messages;
mod pingpong;
mod send_bw;
mod send_pingpong;

use args::{FabricArgs, FabricOp};

use crate::bench::print;
use crate::error::CmdResult;

/// `mnic pingpong`.
pub fn pingpong(a: &FabricArgs) -> CmdResult {
    let report = match a.op {
        FabricOp::Put => pingpong::run(a)?,
        FabricOp::Send => send_pingpong::run(a)?,
    };
    print(&report, a.json)
}

/// `mnic bw`.
pub fn bw(a: &FabricArgs) -> CmdResult {
    let report = match a.op {
        FabricOp::Put => bw::run(a)?,
        FabricOp::Send => send_bw::run(a)?,
    };
    print(&report, a.json)
}
