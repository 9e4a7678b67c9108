//! `mnic pingpong` and `mnic bw`: remote memory access (`--op put`, the default) or tagged
//! messages (`--op send`) between two devices that are nodes of one fabric, both ends in
//! this process, each against a local COPY baseline; or, with `--serve`/`--connect --link
//! PATH`, one end per process (another guest), the two talking over a line link.
//!
//! The reports have the schema of `mnic bench` (`mnic-bench-schema`), with one row and one
//! ratio per message size (`names::row::sized`). One file per job: `args` (flags), `ends`
//! (the two contexts, their buffers and remote windows), `pingpong` and `bw` (PUT/GET),
//! `send_pingpong` and `send_bw` (SEND/RECV), `messages` (what the last two share),
//! `target_pageout` (bw `--target-pageout`: a network fault per page against a local one)
//! and `target_pinned` (bw `--target-pinned`: an on-demand target against a pinned one),
//! `measure` (what every mode's timed rounds and rows against a baseline share), `stream`
//! (items per iteration and one iteration's time, for the bandwidth modes), `link`
//! (the line protocol between two processes), `cross` (the two ends of that mode with PUT,
//! and what they share with SEND's), `cross_send` (the two ends of `--op send` there) and
//! `oracle` (`--oracle`: every context the run opens armed with the stale-access oracle). A
//! run where the two devices are not peers on a fabric prints a report that says so
//! (`skipped`).

pub mod args;
mod bw;
mod cross;
mod cross_send;
mod ends;
mod link;
mod measure;
mod messages;
mod oracle;
mod pingpong;
mod send_bw;
mod send_pingpong;
mod stream;
mod target_pageout;
mod target_pinned;

use args::{FabricArgs, FabricOp, Role};

use crate::bench::print;
use crate::error::CmdResult;

/// `mnic pingpong`.
pub fn pingpong(a: &FabricArgs) -> CmdResult {
    a.check_target_modes(false)?;
    match (a.role()?, a.op) {
        (None, FabricOp::Put) => print(&pingpong::run(a)?, a.json),
        (None, FabricOp::Send) => print(&send_pingpong::run(a)?, a.json),
        (Some((Role::Serve, link)), FabricOp::Put) => cross::pingpong_server(a, link),
        (Some((Role::Serve, link)), FabricOp::Send) => cross_send::pingpong_server(a, link),
        (Some((Role::Connect, link)), FabricOp::Put) => {
            print(&cross::pingpong_client(a, link)?, a.json)
        }
        (Some((Role::Connect, link)), FabricOp::Send) => {
            print(&cross_send::pingpong_client(a, link)?, a.json)
        }
    }
}

/// `mnic bw`.
pub fn bw(a: &FabricArgs) -> CmdResult {
    a.check_target_modes(true)?;
    match (a.role()?, a.op) {
        (None, FabricOp::Put) => print(&bw::run(a)?, a.json),
        (None, FabricOp::Send) => print(&send_bw::run(a)?, a.json),
        (Some((Role::Serve, link)), FabricOp::Put) => cross::bw_server(a, link),
        (Some((Role::Serve, link)), FabricOp::Send) => cross_send::bw_server(a, link),
        (Some((Role::Connect, link)), FabricOp::Put) => print(&cross::bw_client(a, link)?, a.json),
        (Some((Role::Connect, link)), FabricOp::Send) => {
            print(&cross_send::bw_client(a, link)?, a.json)
        }
    }
}
