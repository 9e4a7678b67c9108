//! A node's fabric configuration (docs/fabric.md 14.1, 14.5, 14.11): its id, its bound
//! address, the peer map, the retransmission timing and the fault injection, parsed from
//! `mnic-device`'s `--fabric-*` options and checked against the loopback rule.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mnic_abi::fabric::{MAX_PEERS, NODE_NONE, RETRIES, RTO_MAX_MS, RTO_MS};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    /// An option's value did not parse.
    #[error("{0}")]
    Syntax(String),
    /// A non-loopback address without `--fabric-allow-remote`.
    #[error("{0} is not a loopback address (use --fabric-allow-remote for a fabric across hosts)")]
    NotLoopback(SocketAddr),
    /// Node id `0xffff`.
    #[error("node id 0xffff is reserved")]
    ReservedNode,
    /// A peer with this node's own id, or twice the same id.
    #[error("peer {0} given twice, or it is this node")]
    DuplicatePeer(u16),
    /// More than `MAX_PEERS` peers.
    #[error("more than {MAX_PEERS} peers")]
    TooManyPeers,
    /// Fabric options without `--fabric-node`.
    #[error("fabric options need --fabric-node")]
    NoNode,
}

/// Retransmission timing (docs/fabric.md 14.5).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    /// First retransmission timeout.
    pub rto: Duration,
    /// Ceiling of the doubling timeout.
    pub rto_max: Duration,
    /// Retransmissions of one packet, with nothing heard from its peer, before it is gone.
    pub retries: u32,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            rto: Duration::from_millis(RTO_MS),
            rto_max: Duration::from_millis(RTO_MAX_MS),
            retries: RETRIES,
        }
    }
}

impl Timing {
    /// Wait before send number `sends + 1` of a packet sent `sends` times: `rto` doubled
    /// `sends - 1` times, at most `rto_max`.
    pub fn backoff(&self, sends: u32) -> Duration {
        doubled(self.rto, sends, self.rto_max)
    }
}

/// `first` doubled `n - 1` times (n ≥ 1), at most `max`: the back-off of the transport's
/// retransmissions and of the operations' RNR answers.
pub fn doubled(first: Duration, n: u32, max: Duration) -> Duration {
    let doublings = n.saturating_sub(1).min(20);
    first.saturating_mul(1 << doublings).min(max)
}

/// Fault injection on outgoing datagrams (docs/fabric.md 14.11); all 0 = off.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Inject {
    /// Probability that a datagram is not sent.
    pub drop: f64,
    /// Probability that a datagram is sent twice.
    pub dup: f64,
    /// Probability that a datagram is held back behind the next one.
    pub reorder: f64,
    /// Seed of the generator that draws them.
    pub seed: u64,
}

impl Inject {
    /// Whether any injection is on.
    pub fn is_on(&self) -> bool {
        self.drop > 0.0 || self.dup > 0.0 || self.reorder > 0.0
    }
}

/// One node's configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct FabricConfig {
    /// This node's id.
    pub node: u16,
    /// The address its socket binds (port 0: an ephemeral port).
    pub bind: SocketAddr,
    /// Peer id → address.
    pub peers: Vec<(u16, SocketAddr)>,
    /// Allow addresses outside loopback.
    pub allow_remote: bool,
    /// Retransmission timing.
    pub timing: Timing,
    /// Fault injection.
    pub inject: Inject,
}

impl FabricConfig {
    /// A loopback node on an ephemeral port, no peers, default timing, no injection.
    pub fn loopback(node: u16) -> Self {
        FabricConfig {
            node,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            peers: Vec::new(),
            allow_remote: false,
            timing: Timing::default(),
            inject: Inject::default(),
        }
    }

    /// Checks the rules of docs/fabric.md 14.1: a valid id, peers unique and not this
    /// node, at most `MAX_PEERS`, and loopback addresses unless remote ones are allowed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node == NODE_NONE {
            return Err(ConfigError::ReservedNode);
        }
        if self.peers.len() > MAX_PEERS {
            return Err(ConfigError::TooManyPeers);
        }
        for (i, &(id, _)) in self.peers.iter().enumerate() {
            if id == self.node || id == NODE_NONE || self.peers[..i].iter().any(|p| p.0 == id) {
                return Err(ConfigError::DuplicatePeer(id));
            }
        }
        if !self.allow_remote {
            let all = std::iter::once(self.bind).chain(self.peers.iter().map(|p| p.1));
            if let Some(a) = all.into_iter().find(|a| !is_loopback(a.ip())) {
                return Err(ConfigError::NotLoopback(a));
            }
        }
        for p in [self.inject.drop, self.inject.dup, self.inject.reorder] {
            if !(0.0..=1.0).contains(&p) {
                return Err(ConfigError::Syntax(format!(
                    "probability {p} is not in [0, 1]"
                )));
            }
        }
        Ok(())
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Parses `M=ADDR:PORT`.
pub fn parse_peer(s: &str) -> Result<(u16, SocketAddr), ConfigError> {
    let bad = || ConfigError::Syntax(format!("--fabric-peer wants ID=ADDR:PORT, got {s:?}"));
    let (id, addr) = s.split_once('=').ok_or_else(bad)?;
    Ok((
        id.parse().map_err(|_| bad())?,
        addr.parse().map_err(|_| bad())?,
    ))
}

/// The `--fabric-*` options of `mnic-device serve`, collected as given (the supervisor
/// passes them on to the engine unchanged) and turned into a [`FabricConfig`].
#[derive(Clone, Debug, Default)]
pub struct FabricArgs {
    raw: Vec<String>,
}

/// Options that take a value; `--fabric-allow-remote` is the only flag without one.
const VALUED: [&str; 7] = [
    "--fabric-node",
    "--fabric-bind",
    "--fabric-peer",
    "--fabric-drop",
    "--fabric-dup",
    "--fabric-reorder",
    "--fabric-seed",
];

impl FabricArgs {
    /// Takes option `flag` (and its value from `rest`) if it is a fabric option; `Ok(false)`
    /// if it is not one.
    pub fn take(
        &mut self,
        flag: &str,
        rest: &mut impl Iterator<Item = String>,
    ) -> Result<bool, ConfigError> {
        if flag == "--fabric-allow-remote" {
            self.raw.push(flag.to_string());
            return Ok(true);
        }
        if !VALUED.contains(&flag) {
            return Ok(false);
        }
        let v = rest
            .next()
            .ok_or_else(|| ConfigError::Syntax(format!("{flag} needs a value")))?;
        self.raw.push(flag.to_string());
        self.raw.push(v);
        Ok(true)
    }

    /// The options as given, to pass on.
    pub fn raw(&self) -> &[String] {
        &self.raw
    }

    /// The configuration, or `None` when no fabric option was given (the fabric is off).
    pub fn config(&self) -> Result<Option<FabricConfig>, ConfigError> {
        if self.raw.is_empty() {
            return Ok(None);
        }
        let mut node = None;
        let mut c = FabricConfig::loopback(0);
        let mut it = self.raw.iter();
        while let Some(flag) = it.next() {
            if flag == "--fabric-allow-remote" {
                c.allow_remote = true;
                continue;
            }
            let v = it.next().map(String::as_str).unwrap_or_default();
            let bad = || ConfigError::Syntax(format!("{flag}: bad value {v:?}"));
            match flag.as_str() {
                "--fabric-node" => node = Some(v.parse().map_err(|_| bad())?),
                "--fabric-bind" => c.bind = v.parse().map_err(|_| bad())?,
                "--fabric-peer" => c.peers.push(parse_peer(v)?),
                "--fabric-drop" => c.inject.drop = v.parse().map_err(|_| bad())?,
                "--fabric-dup" => c.inject.dup = v.parse().map_err(|_| bad())?,
                "--fabric-reorder" => c.inject.reorder = v.parse().map_err(|_| bad())?,
                "--fabric-seed" => c.inject.seed = v.parse().map_err(|_| bad())?,
                _ => return Err(bad()),
            }
        }
        c.node = node.ok_or(ConfigError::NoNode)?;
        c.validate()?;
        Ok(Some(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Option<FabricConfig>, ConfigError> {
        let mut a = FabricArgs::default();
        let mut it = list.iter().map(|s| s.to_string());
        while let Some(f) = it.next() {
            assert!(a.take(&f, &mut it)?, "{f} not taken");
        }
        a.config()
    }

    #[test]
    fn options_make_a_config() {
        let c = args(&[
            "--fabric-node",
            "1",
            "--fabric-peer",
            "2=127.0.0.1:7002",
            "--fabric-drop",
            "0.1",
            "--fabric-seed",
            "9",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.node, 1);
        assert_eq!(c.peers, vec![(2, "127.0.0.1:7002".parse().unwrap())]);
        assert_eq!(c.inject.drop, 0.1);
        assert_eq!(c.inject.seed, 9);
        assert_eq!(args(&[]).unwrap(), None);
    }

    #[test]
    fn non_loopback_needs_the_explicit_flag() {
        let peer = ["--fabric-node", "1", "--fabric-peer", "2=192.0.2.1:7002"];
        assert!(matches!(args(&peer), Err(ConfigError::NotLoopback(_))));
        let bind = ["--fabric-node", "1", "--fabric-bind", "0.0.0.0:7001"];
        assert!(matches!(args(&bind), Err(ConfigError::NotLoopback(_))));
        let mut allowed = peer.to_vec();
        allowed.push("--fabric-allow-remote");
        assert!(args(&allowed).unwrap().is_some());
        let v6 = ["--fabric-node", "1", "--fabric-peer", "2=[::1]:7002"];
        assert!(args(&v6).unwrap().is_some());
    }

    #[test]
    fn bad_maps_are_refused() {
        assert_eq!(
            args(&["--fabric-node", "1", "--fabric-peer", "1=127.0.0.1:1"]),
            Err(ConfigError::DuplicatePeer(1))
        );
        let twice = [
            "--fabric-node",
            "1",
            "--fabric-peer",
            "2=127.0.0.1:1",
            "--fabric-peer",
            "2=127.0.0.1:2",
        ];
        assert_eq!(args(&twice), Err(ConfigError::DuplicatePeer(2)));
        assert_eq!(
            args(&["--fabric-node", "65535"]),
            Err(ConfigError::ReservedNode)
        );
        assert_eq!(
            args(&["--fabric-peer", "2=127.0.0.1:1"]),
            Err(ConfigError::NoNode)
        );
        assert!(args(&["--fabric-node", "1", "--fabric-dup", "1.5"]).is_err());
        assert!(args(&["--fabric-node", "1", "--fabric-peer", "2:127.0.0.1:1"]).is_err());
        assert!(args(&["--fabric-node"]).is_err());
    }

    #[test]
    fn backoff_doubles_up_to_the_ceiling() {
        let t = Timing::default();
        assert_eq!(t.backoff(1), Duration::from_millis(10));
        assert_eq!(t.backoff(2), Duration::from_millis(20));
        assert_eq!(t.backoff(7), Duration::from_millis(500));
        assert_eq!(t.backoff(u32::MAX), Duration::from_millis(500));
    }
}
