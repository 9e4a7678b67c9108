//! Small-message round trip over the fabric transport against a raw UDP round trip on
//! loopback, in the same run, with their ratio: what the reliability layer (sequence
//! numbers, acknowledgements, its thread hand-offs) costs over the bare socket.
//! `cargo bench --bench fabric_rtt` measures 20 000 round trips of each; under `cargo
//! test` it runs 200 of each, to show it still works.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mnic_abi::fabric::ptype;
use mnic_device::fabric::{FabricConfig, Transport};
use mnic_device::testkit::udp::{median, p99, raw_round_trips, us};

const WAIT: Duration = Duration::from_secs(10);

/// Sorted round-trip times of `n` echoes through two transports.
fn transport(n: usize) -> Vec<Duration> {
    let (sa, sb) = (
        UdpSocket::bind("127.0.0.1:0").unwrap(),
        UdpSocket::bind("127.0.0.1:0").unwrap(),
    );
    let ca = FabricConfig {
        peers: vec![(2, sb.local_addr().unwrap())],
        ..FabricConfig::loopback(1)
    };
    let cb = FabricConfig {
        peers: vec![(1, sa.local_addr().unwrap())],
        ..FabricConfig::loopback(2)
    };
    let a = Transport::on_socket(&ca, sa, None).unwrap();
    let b = Arc::new(Transport::on_socket(&cb, sb, None).unwrap());
    let done = Arc::new(AtomicBool::new(false));
    let echo = {
        let (b, done) = (b.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Some(m) = b.recv_timeout(Duration::from_millis(100)) {
                    b.send(1, ptype::EAGER, 0, 0, &m.payload).unwrap();
                }
                while b.completion_timeout(Duration::ZERO).is_some() {}
            }
        })
    };
    let mut times = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let t = Instant::now();
        a.send(2, ptype::EAGER, 0, 0, &i.to_le_bytes()).unwrap();
        let m = a.recv_timeout(WAIT).expect("transport echo: reply");
        times.push(t.elapsed());
        assert_eq!(m.payload, i.to_le_bytes());
        while a.completion_timeout(Duration::ZERO).is_some() {}
    }
    done.store(true, Ordering::Relaxed);
    echo.join().unwrap();
    let s = a.stats();
    println!(
        "  transport: {} datagrams sent by A, {} retransmissions",
        s.tx, s.retransmits
    );
    times.sort();
    times
}

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let n = if measuring { 20_000 } else { 200 };
    // Raw first, then the transport, then raw again: a drift of the machine shows as a
    // difference between the two raw runs.
    let raw1 = raw_round_trips(n);
    let tr = transport(n);
    let raw2 = raw_round_trips(n);
    let med = median;
    println!("fabric round trip, 8-byte message, {n} round trips each (loopback)");
    for (name, v) in [
        ("raw UDP", &raw1),
        ("transport", &tr),
        ("raw UDP again", &raw2),
    ] {
        println!(
            "  {name:<14} median {:8.1} us   p99 {:8.1} us",
            us(med(v)),
            us(p99(v))
        );
    }
    let base = us(med(&raw1)).min(us(med(&raw2)));
    println!(
        "  ratio transport / raw UDP (medians, the faster raw run as baseline): {:.2}x",
        us(med(&tr)) / base
    );
}
