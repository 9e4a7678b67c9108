//! The fabric options of the real `mnic-device serve` (docs/fabric.md 14.1): a device
//! started with `--fabric-node` reports its node id and `CAPS.FABRIC`, acknowledges a
//! peer's messages, counts them in its `FABRIC_*` counters and its `rma_*` statistics,
//! refuses garbage and still serves the guest; a non-loopback peer is
//! refused at start. Loopback only, ephemeral ports, bounded waits.

mod common;

use std::net::UdpSocket;
use std::process::Command;
use std::time::Instant;

use common::{start, stat, stats, tmpdir, wait_until, TIMEOUT};
use mnic_abi::fabric::{ptype, SendStatus};
use mnic_abi::{caps, reg, MNIC_ID_VALUE};
use mnic_device::fabric::{FabricConfig, Transport};

#[test]
fn a_device_on_the_fabric_acknowledges_counts_and_refuses() {
    // The device's port: taken from the kernel, then freed for the device to bind (the
    // test's peer must know it before the device starts).
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let device_addr = format!("127.0.0.1:{port}");
    let peer_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let peer_addr = peer_sock.local_addr().unwrap();
    let dir = tmpdir("fabric");
    let (_served, mut client, ctl) = start(
        &dir,
        &[
            "--fabric-node",
            "1",
            "--fabric-bind",
            &device_addr,
            "--fabric-peer",
            &format!("2={peer_addr}"),
        ],
    );
    // The engine (and its transport) runs once the client connected: ask it something.
    assert_eq!(client.read(reg::ID), MNIC_ID_VALUE);
    assert_eq!(client.read(reg::FABRIC_NODE), 1);
    assert_eq!(client.read(reg::CAPS), caps::ALL | caps::FABRIC);

    let cfg = FabricConfig {
        peers: vec![(1, device_addr.parse().unwrap())],
        ..FabricConfig::loopback(2)
    };
    let peer = Transport::on_socket(&cfg, peer_sock, None).unwrap();
    for i in 0..20u32 {
        peer.send(1, ptype::EAGER, 0, 0, &i.to_le_bytes()).unwrap();
    }
    let end = Instant::now() + TIMEOUT;
    for _ in 0..20 {
        let c = peer
            .completion_timeout(end.saturating_duration_since(Instant::now()))
            .expect("the device acknowledges");
        assert_eq!(c.status, SendStatus::Ok);
    }

    let garbage = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..10u8 {
        garbage.send_to(&[i; 48], &device_addr).unwrap();
    }
    wait_until("10 bad packets counted", || {
        stat(&stats(&ctl), "fabric_bad_packets") == 10
    });
    // The data thread takes the messages (tagged matching is not there yet: dropped).
    wait_until("20 eager messages taken", || {
        stat(&stats(&ctl), "rma_eager_dropped") == 20
    });
    let st = stats(&ctl);
    assert!(stat(&st, "fabric_rx") >= 20, "{st}");
    assert!(stat(&st, "fabric_tx") >= 1, "{st}");
    // The device still serves the guest side.
    assert_eq!(client.read(reg::ID), MNIC_ID_VALUE);
}

#[test]
fn a_device_refuses_a_peer_outside_loopback_at_start() {
    let dir = tmpdir("fabric-remote");
    let out = Command::new(env!("CARGO_BIN_EXE_mnic-device"))
        .arg("serve")
        .arg("--socket")
        .arg(dir.join("dev.sock"))
        .args(["--fabric-node", "1", "--fabric-peer", "2=192.0.2.1:7000"])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a loopback address"), "{err}");
    assert!(!dir.join("dev.sock").exists());
}
