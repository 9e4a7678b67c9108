//! Statistics of remote memory access (docs/fabric.md 14.13), kept by the device's data
//! thread next to the transport's [`Stats`](super::stats::Stats): the 32 device counters
//! are all taken, so these reach tests and the log through the control socket
//! (`mnic-device stats` prints them after the counters, as `rma_<name> <value>` lines).
//! They are statistics: not cleared by a device reset.

use std::sync::atomic::{AtomicU64, Ordering};

/// One statistic: its name (printed as `rma_<name>`) and what it counts.
macro_rules! rma_stats {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// What the device counts about PUT and GET. Relaxed atomics.
        #[derive(Default)]
        pub struct RmaStats {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// A copy of [`RmaStats`] at one moment.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct RmaSnapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl RmaStats {
            /// The values now.
            pub fn snapshot(&self) -> RmaSnapshot {
                RmaSnapshot {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                }
            }

            /// `rma_<name> <value>` lines, one per statistic.
            pub fn render(&self) -> String {
                let s = self.snapshot();
                let mut out = String::new();
                $(out.push_str(&format!(concat!("rma_", stringify!($name), " {}\n"), s.$name));)*
                out
            }
        }
    };
}

rma_stats! {
    /// Target: `PUT` packets written (answered `REPLY OK`).
    put_served,
    /// Target: `GET_REQ` packets read (answered `GET_RESP`).
    get_served,
    /// Target: packets refused with a `REPLY` error other than `RNR` (`NO_CONTEXT`,
    /// `BAD_KEY`, `BAD_RANGE`, `BAD_ACCESS`, `REMOTE_FAULT`).
    errors_sent,
    /// Target: packets answered `REPLY RNR` (a missing or read-only translation).
    rnr_sent,
    /// Target: network faults parked (FAULT events with `info` = 1 << 32 | node).
    network_faults,
    /// Target and initiator: malformed payloads refused and not answered (short
    /// header, wrong data length, a request of 0 or more than `GET_CHUNK` bytes or across
    /// a page, a REPLY with an undefined status, a GET_RESP of the wrong length).
    refused,
    /// `EAGER` packets dropped (no tagged matching yet).
    eager_dropped,
    /// Initiator: `PUT` and `GET_REQ` packets sent (resends included).
    packets_sent,
    /// Initiator: packets sent again (after an `RNR`, or a GET_RESP dropped).
    resends,
    /// Initiator: `REPLY RNR` received.
    rnr_received,
    /// Initiator: answers to no packet in flight (a late answer to an item that already
    /// ended, a forged or replayed one), dropped.
    late,
    /// Initiator: `GET_RESP` data dropped because its local translation was gone.
    get_resp_dropped,
    /// Initiator: work items failed by the peer going away or staying silent
    /// (`PEER_GONE`).
    peer_gone,
    /// Packets the transport would not take (send queue full): the initiator sends
    /// them again later; a target's lost answer is covered by the initiator's timeout.
    send_refused,
}

/// Adds one to `c`.
pub fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_names_every_statistic() {
        let s = RmaStats::default();
        bump(&s.rnr_sent);
        bump(&s.rnr_sent);
        let r = s.render();
        assert!(r.contains("rma_rnr_sent 2\n"), "{r}");
        assert!(r.contains("rma_put_served 0\n"), "{r}");
        assert_eq!(r.lines().count(), 14);
    }
}
