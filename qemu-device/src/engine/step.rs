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
    /// A throttled traffic item wants to run again at this instant.
    Until(Instant),
}

/// What executing a COPY or TRAFFIC item for one step came to.
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
    /// Throttled until the instant.
    Wait(Instant),
}
