//! What one bounded step came to: [`Step`] for a context (what the poll loop sees) and
//! [`Outcome`] for the work item the context executes.

use std::time::Instant;

use super::error::AccessError;

/// What one step of a context did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Work was done.
    Progress,
    /// Nothing to do (no descriptors, parked, disabled).
    Idle,
    /// A throttled traffic item, or a PUT or GET waiting for a back-off or its answers,
    /// wants to run again at this instant (or when woken).
    Until(Instant),
}

/// What executing a COPY, TRAFFIC, PUT or GET item for one step came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not finished; continue next step.
    More,
    /// Finished: the item completes `OK` with `bytes` (bytes copied, or operations done).
    Finished {
        /// What the completion reports in `bytes`.
        bytes: u64,
    },
    /// An access failed.
    Failed(AccessError),
    /// Ended with a status other than `OK` that is not an access of this device (PUT,
    /// GET: the target's answer, the peer, the route).
    Ended {
        /// `completion::*` status.
        status: u16,
        /// The completion's `detail`.
        detail: u32,
        /// Bytes confirmed before.
        bytes: u64,
        /// The completion's `fault_va`.
        fault_va: u64,
    },
    /// Throttled (TRAFFIC), or waiting for a back-off or answers (PUT, GET), until the
    /// instant.
    Wait(Instant),
}
