//! Helpers for tests, benches and the fuzz driver (the `testkit` feature; never in the
//! shipped device): memfds, a translation-table builder that plays the driver's part in
//! guest RAM, a harness that drives the device core by function calls, and devices on
//! a loopback fabric, and the raw-UDP baselines of the fabric benches (a round trip and a
//! stream).

pub mod fabric;
pub mod harness;
pub mod memfd;
pub mod tables;
pub mod udp;
pub mod udp_stream;

pub use fabric::{loopback_socket, memfd_harness, node_harness, Hostile, Pair, PairConfig};
pub use harness::{oracle_call, pattern, Harness};
pub use harness::{
    CMDQ, CMDQ_LOG2, CMD_SHADOW, CTX_TABLE, DATA, EVQ, EVQ_LOG2, RAM_SIZE, SYNC_WORD, TABLES, WQ_VA,
};
pub use memfd::memfd;
pub use tables::Tables;
