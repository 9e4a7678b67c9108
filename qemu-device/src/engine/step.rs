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

impl Step {
    /// What a step that did `self`, then `other`, came to: progress if either made
    /// some, else the earlier instant to run again.
    pub fn and(self, other: Step) -> Step {
        match (self, other) {
            (Step::Progress, _) | (_, Step::Progress) => Step::Progress,
            (Step::Until(a), Step::Until(b)) => Step::Until(a.min(b)),
            (Step::Until(t), Step::Idle) | (Step::Idle, Step::Until(t)) => Step::Until(t),
            (Step::Idle, Step::Idle) => Step::Idle,
        }
    }
}

/// What executing a COPY, TRAFFIC, PUT, GET or SEND item (or a receive's delivery) for
/// one step came to.
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
    /// GET, SEND: the target's answer, the peer, the route).
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
    /// Waiting for the network with no deadline (a rendezvous SEND waiting for its
    /// receiver's `FIN`): the next arrival wakes the thread.
    Waiting,
}
