//! The data path: one data thread that executes commands, posts events and runs the
//! contexts' work, separate from the vfio-user socket loop.
//!
//! [`Core`] is the device state machine, driven synchronously by [`Core::poll`] (the
//! data thread, unit tests, the fuzz driver and the benches all drive the same code).
//! [`Engine`] is the thread around it.
//!
//! Why SYNC's promise holds by construction: this thread is the only DMA issuer, and
//! it executes commands only *between* work steps. A work step translates every
//! access through the TLB at the moment of the access (no translation is kept across
//! steps) and finishes its DMA before it returns. So when a SYNC runs, every
//! invalidation before it has dropped its TLB entries, and no DMA that used one of
//! them is still in flight. Steps are bounded (a long COPY is split), so a SYNC is
//! never starved.
//!
//! The engine runs only while bus mastering is on (spec §3), and a work step checks it
//! again right before each access touches memory (`dma`).
//!
//! Packets from the fabric (docs/fabric.md 14.13) are served by this thread too, in its
//! poll rounds between commands, each translated afresh like a work step's access: the
//! promise covers the network's accesses, and a SYNC after a `KEY_CLEAR` fences the key.
//!
//! Shadow pages (spec §4a) are read and written by this thread too, in its poll rounds
//! and in the sleep handshake right after one (between work steps, like commands), so
//! the promise above covers them: after the SYNC that follows a `CTX_DISABLE`, the
//! context's shadow page is not touched again.
//!
//! One job per file, imports one way (a file only uses files listed before it):
//!
//! | file | job |
//! |---|---|
//! | `error` | typed errors, and their spec error codes and details |
//! | `step` | what one step of a context or of a work item came to |
//! | `traffic` | the TRAFFIC generator: which operations an item makes, a bounded step |
//! | `keys` | remote keys: which range of which context a peer reaches, and how |
//! | `link` | the fabric attachment: the transport and the PUT/GET timing |
//! | `rma` | one PUT or GET at the initiator as a state machine: packets, back-off, answers |
//! | `context` | a running context's state: table entry, ring positions, item, fault |
//! | `live` | the set of enabled contexts and the round-robin order |
//! | `evq` | the event ring and the backlog inside the device |
//! | `state` | [`Core`]: the fields every job shares, the reset state |
//! | `report` | errors, events and interrupts out of the device; halts |
//! | `shadow` | shadow pages: tails read from them, `polling` written, the sleep handshake |
//! | `lifecycle` | CONTROL writes and resets: enable, disable |
//! | `dma` | one access: translate (TLB, walk), judge (stale checker, oracle), gate |
//! | `copy` | COPY: bounded steps, page runs copied with one memcpy |
//! | `target` | PUT/GET at the target: checks, translation, access, REPLY; network faults |
//! | `initiator` | PUT/GET at the initiator: a step's sends, the answers to its packets |
//! | `work` | a context's work items: fetch and decode, execute, complete, park |
//! | `cmdq` | the command queue: invalidations, SYNC, RESUME/ABORT, context enable, keys |
//! | `remote` | the fabric in a poll round: attach, deliveries, completions, lost peers |
//! | `poll` | one poll round over commands, fabric deliveries and contexts |
//! | `pace` | when the data thread polls and when it sleeps: spin budget, backstop |
//! | `thread` | the data thread around [`Core`] |

mod cmdq;
mod context;
mod copy;
mod dma;
mod error;
mod evq;
mod initiator;
mod keys;
mod lifecycle;
mod link;
mod live;
mod pace;
mod poll;
mod remote;
mod report;
mod rma;
mod shadow;
mod state;
mod step;
mod target;
mod thread;
mod traffic;
mod work;

pub use context::Ctx;
pub use copy::COPY_STEP;
pub use error::{AccessError, DeviceError, Fault, FaultCause};
pub use evq::{EventQueue, BACKLOG_BOUND, BACKLOG_MAX};
pub use link::RmaTiming;
pub use pace::{Next, Pace, BACKSTOP, DEFAULT_SPIN};
pub use poll::Activity;
pub use state::Core;
pub use target::NETWORK_FAULT;
pub use thread::Engine;
pub use traffic::{mix, op as traffic_op, pattern as traffic_pattern};

#[cfg(test)]
mod shadow_tests;
#[cfg(test)]
mod tests;
