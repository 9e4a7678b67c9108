//! The device's attachment to a fabric: its transport and the timing of PUT and GET
//! (docs/fabric.md 14.13). Sends count what the transport refuses.

use std::time::Duration;

use mnic_abi::fabric::{REPLY_TIMEOUT_MS, RNR_BACKOFF_MAX_US, RNR_BACKOFF_US, RNR_RETRIES};
use mnic_abi::fabric_counter;

use crate::fabric::rma_stats::RmaStats;
use crate::fabric::{SendError, Transport};

/// Timing of PUT and GET at the initiator; the defaults are the specification's, tests
/// shorten them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RmaTiming {
    /// First wait before a packet answered `RNR` is sent again.
    pub rnr_backoff: Duration,
    /// Ceiling of the doubling RNR wait.
    pub rnr_backoff_max: Duration,
    /// `RNR`s in a row for one packet that fail the item (`RNR_RETRY_EXCEEDED`).
    pub rnr_retries: u32,
    /// Silence, with packets unanswered, that fails the item (`PEER_GONE`).
    pub reply_timeout: Duration,
}

impl Default for RmaTiming {
    fn default() -> Self {
        RmaTiming {
            rnr_backoff: Duration::from_micros(RNR_BACKOFF_US),
            rnr_backoff_max: Duration::from_micros(RNR_BACKOFF_MAX_US),
            rnr_retries: RNR_RETRIES,
            reply_timeout: Duration::from_millis(REPLY_TIMEOUT_MS),
        }
    }
}

impl RmaTiming {
    /// The wait after the `n`th `RNR` in a row (n ≥ 1): the first wait doubled `n - 1`
    /// times, at most the ceiling.
    pub fn rnr_wait(&self, n: u32) -> Duration {
        crate::fabric::config::doubled(self.rnr_backoff, n, self.rnr_backoff_max)
    }
}

/// A device's transport and its PUT/GET timing.
pub struct Link {
    /// The transport (its thread wakes the data thread).
    pub t: Transport,
    /// PUT/GET timing.
    pub timing: RmaTiming,
}

impl Link {
    /// Sends one packet; a refusal is counted in `send_refused`.
    pub fn send(
        &self,
        stats: &RmaStats,
        dst: u16,
        ptype: u8,
        src_ctx: u16,
        dst_ctx: u16,
        payload: &[u8],
    ) -> Result<(), SendError> {
        match self.t.send(dst, ptype, src_ctx, dst_ctx, payload) {
            Ok(_) => Ok(()),
            Err(e) => {
                stats.bump(fabric_counter::SEND_REFUSED);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rnr_wait_doubles_up_to_the_ceiling() {
        let t = RmaTiming::default();
        assert_eq!(t.rnr_wait(1), Duration::from_micros(500));
        assert_eq!(t.rnr_wait(2), Duration::from_millis(1));
        assert_eq!(t.rnr_wait(8), Duration::from_millis(64));
        assert_eq!(t.rnr_wait(32), Duration::from_millis(64));
    }
}
