//! Fault injection on outgoing datagrams (docs/fabric.md 14.11): drop, duplicate, or hold
//! one back behind the next, each with its probability, drawn from a seeded generator so
//! that a failing run can be repeated.

use std::net::SocketAddr;

use super::config::Inject;
use super::stats::Stats;

/// A datagram on its way out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    /// Where it goes.
    pub to: SocketAddr,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// SplitMix64: a small, well-mixed generator; the draws need to be repeatable, not secret.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// The injector between the node and the socket.
pub struct Injector {
    cfg: Inject,
    rng: SplitMix,
    held: Option<Datagram>,
}

impl Injector {
    /// An injector with `cfg`'s probabilities and seed.
    pub fn new(cfg: Inject) -> Self {
        Injector {
            cfg,
            rng: SplitMix(cfg.seed),
            held: None,
        }
    }

    /// Puts `d` through the injection: `emit` is called for each datagram that goes out
    /// now (none, `d`, `d` twice, and any datagram held back before it, after it).
    pub fn apply(&mut self, d: Datagram, stats: &Stats, emit: &mut impl FnMut(&Datagram)) {
        if !self.cfg.is_on() {
            emit(&d);
            return;
        }
        if self.rng.chance(self.cfg.drop) {
            stats.injected_drop();
            return;
        }
        if self.held.is_none() && self.rng.chance(self.cfg.reorder) {
            stats.injected_reorder();
            self.held = Some(d);
            return;
        }
        emit(&d);
        if self.rng.chance(self.cfg.dup) {
            stats.injected_dup();
            emit(&d);
        }
        if let Some(h) = self.held.take() {
            emit(&h);
        }
    }

    /// Sends a held datagram now (the transport's timer tick: nothing followed it).
    pub fn release(&mut self, emit: &mut impl FnMut(&Datagram)) {
        if let Some(h) = self.held.take() {
            emit(&h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dgram(i: u8) -> Datagram {
        Datagram {
            to: SocketAddr::from(([127, 0, 0, 1], 9)),
            bytes: vec![i],
        }
    }

    fn run(cfg: Inject, n: u8) -> (Vec<u8>, Stats) {
        let stats = Stats::default();
        let mut inj = Injector::new(cfg);
        let mut out = Vec::new();
        for i in 0..n {
            inj.apply(dgram(i), &stats, &mut |d| out.push(d.bytes[0]));
        }
        inj.release(&mut |d| out.push(d.bytes[0]));
        (out, stats)
    }

    #[test]
    fn off_passes_everything_in_order() {
        let (out, _) = run(Inject::default(), 100);
        assert_eq!(out, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn each_fault_happens_at_about_its_rate_and_repeats_with_its_seed() {
        let cfg = Inject {
            drop: 0.2,
            dup: 0.2,
            reorder: 0.2,
            seed: 7,
        };
        let (out, st) = run(cfg, 250);
        let s = st.snapshot();
        // 250 draws at p = 0.2: 50 expected; the bounds are about 4 standard deviations.
        for n in [s.injected_drops, s.injected_dups, s.injected_reorders] {
            assert!((15..=85).contains(&n), "{s:?}");
        }
        assert_eq!(out.len() as u64, 250 - s.injected_drops + s.injected_dups);
        assert!(out.windows(2).any(|w| w[0] > w[1]), "nothing reordered");
        assert_eq!(run(cfg, 250).0, out, "same seed, other draws");
        assert_ne!(run(Inject { seed: 8, ..cfg }, 250).0, out);
    }
}
