//! The baseline the fabric benches compare against: round trips of a small message
//! between two blocking UDP sockets on loopback, one echoing in its own thread.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

/// Longest wait for one datagram.
const WAIT: Duration = Duration::from_secs(10);

/// Sorted round-trip times of `n` raw UDP echoes of an 8-byte message, both ends sleeping
/// in `recv`. Panics if the loopback loses one (it does not, short of a broken host).
pub fn raw_round_trips(n: usize) -> Vec<Duration> {
    round_trips(n, false)
}

/// As [`raw_round_trips`], with both ends busy-polling non-blocking sockets instead of
/// sleeping in `recv`: the floor of a round trip whose threads never sleep, free of the
/// wake-up latency an idle (virtual) CPU adds to a blocking `recv`, which varies by an
/// order of magnitude with how busy the machine is.
pub fn raw_round_trips_polled(n: usize) -> Vec<Duration> {
    round_trips(n, true)
}

fn round_trips(n: usize, polled: bool) -> Vec<Duration> {
    let a = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let b = UdpSocket::bind("127.0.0.1:0").expect("bind");
    a.connect(b.local_addr().expect("addr")).expect("connect");
    b.connect(a.local_addr().expect("addr")).expect("connect");
    for s in [&a, &b] {
        if polled {
            s.set_nonblocking(true).expect("nonblocking");
        } else {
            s.set_read_timeout(Some(WAIT)).expect("timeout");
        }
    }
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        for _ in 0..n {
            let k = recv_one(&b, &mut buf, polled, "request");
            b.send(&buf[..k]).expect("raw echo: send");
        }
    });
    let mut buf = [0u8; 64];
    let mut times = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let t = Instant::now();
        a.send(&i.to_le_bytes()).expect("raw echo: send");
        recv_one(&a, &mut buf, polled, "reply");
        times.push(t.elapsed());
    }
    echo.join().expect("echo thread");
    times.sort();
    times
}

/// One datagram from `s`: waiting in `recv`, or (`polled`) polling it, for at most `WAIT`.
fn recv_one(s: &UdpSocket, buf: &mut [u8], polled: bool, what: &str) -> usize {
    if !polled {
        return s
            .recv(buf)
            .unwrap_or_else(|e| panic!("raw echo: {what}: {e}"));
    }
    let until = Instant::now() + WAIT;
    loop {
        match s.recv(buf) {
            Ok(k) => return k,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < until, "raw echo: no {what}");
                std::hint::spin_loop();
            }
            Err(e) => panic!("raw echo: {what}: {e}"),
        }
    }
}

/// The median of sorted `v`.
pub fn median(v: &[Duration]) -> Duration {
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// The 99th percentile of sorted `v`.
pub fn p99(v: &[Duration]) -> Duration {
    v.get(v.len() * 99 / 100).copied().unwrap_or_default()
}

/// `d` in microseconds.
pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
