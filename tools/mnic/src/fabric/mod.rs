//! `mnic pingpong` and `mnic bw`: remote memory access between two devices that are nodes of
//! one fabric, both ends in this process, each against a local COPY baseline; or, with
//! `--serve`/`--connect --link PATH`, one end per process (another guest), the two talking
//! over a line link.
//!
//! The reports have the schema of `mnic bench` (`mnic-bench-schema`), with one row and one
//! ratio per message size (`names::row::sized`). One file per job: `args` (flags), `ends`
//! (the two contexts, their buffers and remote windows), `pingpong` and `bw`, `link` (the
//! line protocol between two processes) and `cross` (the two ends of that mode). A run where
//! the two devices are not peers on a fabric prints a report that says so (`skipped`).

pub mod args;
mod bw;
mod cross;
mod ends;
mod link;
mod pingpong;

use args::{FabricArgs, Role};

use crate::bench::print;
use crate::error::CmdResult;

/// `mnic pingpong`.
pub fn pingpong(a: &FabricArgs) -> CmdResult {
    match a.role()? {
        None => print(&pingpong::run(a)?, a.json),
        Some((Role::Serve, link)) => cross::pingpong_server(a, link),
        Some((Role::Connect, link)) => print(&cross::pingpong_client(a, link)?, a.json),
    }
}

/// `mnic bw`.
pub fn bw(a: &FabricArgs) -> CmdResult {
    match a.role()? {
        None => print(&bw::run(a)?, a.json),
        Some((Role::Serve, link)) => cross::bw_server(a, link),
        Some((Role::Connect, link)) => print(&cross::bw_client(a, link)?, a.json),
    }
}
