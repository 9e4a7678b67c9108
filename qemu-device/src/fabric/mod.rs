//! The fabric transport (docs/fabric.md, spec §14): reliable, ordered delivery of a
//! device's packets to its peers over UDP, with fault injection for tests.
//!
//! - `config`: the node's id, address, peer map, timing and injection; the CLI options.
//! - `wire`: datagram ↔ packet, with every check a datagram can fail on its own.
//! - `send`, `recv`: one peer's sending side (window, retransmission) and receiving side
//!   (next expected, early packets, duplicates).
//! - `peer`: one peer's connection: state, epochs, reset and gone.
//! - `node`: the protocol logic of a node, without a socket.
//! - `inject`: drop, duplicate and reorder outgoing datagrams.
//! - `stats`: what the transport counts, and the device counters it feeds.
//! - `transport`: the socket and its thread; the device's data thread takes its
//!   arrivals (`Transport::take`) and is woken by it (`Transport::set_waker`).
//! - `rma_stats`: what the device's PUT and GET count (the data thread's side, in
//!   `engine::remote` and `engine::rma`), printed by the control socket.

pub mod config;
pub mod inject;
pub mod node;
pub mod peer;
pub mod recv;
pub mod rma_stats;
pub mod send;
pub mod stats;
pub mod transport;
pub mod wire;

pub use config::{FabricArgs, FabricConfig, Inject, Timing};
pub use node::{Completion, Message, SendError};
pub use rma_stats::{RmaSnapshot, RmaStats};
pub use transport::{Transport, Waker};
