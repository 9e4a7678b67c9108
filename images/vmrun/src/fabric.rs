//! `mnic-vm run --fabric`: the NICs of a run as the nodes of one fabric on loopback
//! (docs/fabric.md 14.1). Device `i` is node `i + 1`, bound to 127.0.0.1 on a port of its
//! own, with every other device as a peer; `--fabric-inject` adds the transport's fault
//! injection (14.11) to every device.
//!
//! The ports: the runner binds one UDP socket per device on port 0, so the kernel picks
//! free, distinct ports, and holds each until just before its device is started, which
//! binds it (`--fabric-bind`). Only that moment is open to another process taking the
//! port; the device then fails to bind, and says so in its log.

use anyhow::{bail, Context, Result};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};

/// The fault-injection keys of `--fabric-inject`, and the `mnic-device` options they become.
const INJECT_KEYS: [(&str, &str); 4] = [
    ("drop", "--fabric-drop"),
    ("dup", "--fabric-dup"),
    ("reorder", "--fabric-reorder"),
    ("seed", "--fabric-seed"),
];

/// Parses `--fabric-inject` (`drop=P,dup=P,reorder=P,seed=N`, any subset, each key once)
/// into the `mnic-device` options that carry it. The values are checked by the device.
pub fn inject_args(spec: &str) -> Result<Vec<String>> {
    let mut args = Vec::new();
    let mut seen = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (key, value) = item
            .split_once('=')
            .with_context(|| format!("--fabric-inject: {item:?} is not KEY=VALUE"))?;
        let Some(&(_, flag)) = INJECT_KEYS.iter().find(|(k, _)| *k == key) else {
            bail!("--fabric-inject: unknown key {key:?} (drop, dup, reorder, seed)");
        };
        if seen.contains(&key) || value.is_empty() {
            bail!("--fabric-inject: {key} given twice or without a value");
        }
        seen.push(key);
        args.push(flag.to_string());
        args.push(value.to_string());
    }
    Ok(args)
}

/// The fabric of one run: each device's port, and the socket that keeps it free until the
/// device is started.
pub struct Fabric {
    ports: Vec<u16>,
    held: Vec<Option<UdpSocket>>,
    inject: Vec<String>,
}

impl Fabric {
    /// Picks a free loopback port for each of `devices` devices (all bound at once, so they
    /// differ); `inject`: the `--fabric-inject` options for every device.
    pub fn new(devices: u32, inject: Vec<String>) -> Result<Self> {
        if devices == 0 {
            bail!("--fabric needs at least one device");
        }
        let mut held = Vec::new();
        let mut ports = Vec::new();
        for i in 0..devices {
            let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
                .with_context(|| format!("a loopback UDP port for device {i}"))?;
            ports.push(s.local_addr()?.port());
            held.push(Some(s));
        }
        Ok(Fabric {
            ports,
            held,
            inject,
        })
    }

    fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.ports[i]))
    }

    /// The `mnic-device serve` options of device `i`, and its port is let go: call it right
    /// before starting the device.
    pub fn device_args(&mut self, i: u32) -> Vec<String> {
        let i = i as usize;
        if let Some(held) = self.held.get_mut(i) {
            *held = None;
        }
        let mut args = vec![
            "--fabric-node".to_string(),
            node_id(i).to_string(),
            "--fabric-bind".to_string(),
            self.addr(i).to_string(),
        ];
        for j in (0..self.ports.len()).filter(|&j| j != i) {
            args.push("--fabric-peer".to_string());
            args.push(format!("{}={}", node_id(j), self.addr(j)));
        }
        args.extend(self.inject.iter().cloned());
        args
    }

    /// One line per node, for the run's log.
    pub fn describe(&self) -> String {
        (0..self.ports.len())
            .map(|i| format!("mnic{i} = node {} at {}", node_id(i), self.addr(i)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Device `i`'s node id: 1 upwards (0 would be a valid id too; 1-based ids read as "the
/// first node" in logs).
fn node_id(i: usize) -> usize {
    i + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inject_becomes_device_options() {
        assert_eq!(
            inject_args("drop=0.05,dup=0.05,reorder=0.1,seed=1").unwrap(),
            [
                "--fabric-drop",
                "0.05",
                "--fabric-dup",
                "0.05",
                "--fabric-reorder",
                "0.1",
                "--fabric-seed",
                "1"
            ]
        );
        assert_eq!(inject_args(" seed=7 ").unwrap(), ["--fabric-seed", "7"]);
        assert!(inject_args("").unwrap().is_empty());
        for bad in ["drop", "loss=0.1", "drop=0.1,drop=0.2", "dup="] {
            assert!(inject_args(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn every_device_is_a_node_with_the_others_as_peers() {
        let mut f = Fabric::new(3, vec!["--fabric-seed".into(), "9".into()]).unwrap();
        let ports = f.ports.clone();
        assert!(ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2]);
        let a = f.device_args(1);
        let want: Vec<String> = [
            "--fabric-node".to_string(),
            "2".into(),
            "--fabric-bind".into(),
            format!("127.0.0.1:{}", ports[1]),
            "--fabric-peer".into(),
            format!("1=127.0.0.1:{}", ports[0]),
            "--fabric-peer".into(),
            format!("3=127.0.0.1:{}", ports[2]),
            "--fabric-seed".into(),
            "9".into(),
        ]
        .into();
        assert_eq!(a, want);
        // Its port is free for the device now; the others are still held.
        UdpSocket::bind(("127.0.0.1", ports[1])).unwrap();
        assert!(UdpSocket::bind(("127.0.0.1", ports[2])).is_err());
    }

    #[test]
    fn no_devices_no_fabric() {
        assert!(Fabric::new(0, Vec::new()).is_err());
    }
}
