//! The bandwidth floor of the fabric's transport: a raw UDP stream of a buffer between
//! two sockets on loopback, one receiving in its own thread. Each datagram is as large as
//! the fabric's ([`MAX_DATAGRAM`]) and carries an 8-byte header of its own (round and
//! sequence number) before its share of the buffer; the receiver copies each share into
//! its buffer and acknowledges the end, so a round is timed like a confirmed PUT: first
//! send to the last acknowledgement.
//!
//! Loopback drops datagrams when the receiving socket's buffer is full, so the sender keeps
//! at most [`WINDOW`] datagrams unacknowledged (the fabric's own window; 64 datagrams of
//! 1472 bytes fit the default 208 KiB receive buffer, 128 do not: tried, hundreds of
//! timeouts per 200 rounds) and the receiver acknowledges every [`ACK_EVERY`] datagrams
//! and the last one (an ack every 4 or every 32 measured the same: the per-datagram
//! system calls set the pace, not the acknowledgements). Should one get lost anyway, the sender hears
//! nothing for [`RESEND_AFTER`] and sends again from the first unacknowledged datagram
//! (go-back-N); the run counts those timeouts, so a reader sees whether the floor was
//! measured on a loss-free stream.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use mnic_abi::fabric::{MAX_DATAGRAM, WINDOW};

/// Datagrams in flight, unacknowledged: the fabric transport's window.
pub const WINDOW_DATAGRAMS: u32 = WINDOW;
/// The receiver acknowledges every this many datagrams in order (and the last one).
pub const ACK_EVERY: u32 = 16;
/// Silence from the receiver after which the sender sends again.
pub const RESEND_AFTER: Duration = Duration::from_millis(20);
/// The stream's own header in each datagram: round and sequence number.
pub const STREAM_HEADER: usize = 8;
/// Bytes of the buffer in each datagram.
pub const STREAM_CHUNK: usize = MAX_DATAGRAM - STREAM_HEADER;
/// Longest wait of the receiver for any datagram before it gives up.
const WAIT: Duration = Duration::from_secs(10);
/// Quiet time after which the receiver, done with its last round, stops re-acknowledging.
const LINGER: Duration = Duration::from_millis(100);
/// Sequence number of the sender's "no more rounds" datagram.
const STOP: u32 = u32::MAX;

/// What [`raw_stream`] measured.
pub struct StreamRun {
    /// Sorted times of the rounds, first send to the last acknowledgement.
    pub times: Vec<Duration>,
    /// Times the sender heard nothing for [`RESEND_AFTER`] and sent again (0: no loss).
    pub timeouts: u64,
    /// Datagrams per round.
    pub datagrams: u32,
}

fn header(round: u32, seq: u32) -> [u8; STREAM_HEADER] {
    let mut h = [0u8; STREAM_HEADER];
    h[..4].copy_from_slice(&round.to_le_bytes());
    h[4..].copy_from_slice(&seq.to_le_bytes());
    h
}

fn parse(b: &[u8]) -> Option<(u32, u32)> {
    let round = u32::from_le_bytes(b.get(..4)?.try_into().ok()?);
    let seq = u32::from_le_bytes(b.get(4..8)?.try_into().ok()?);
    Some((round, seq))
}

/// Streams `data` `rounds` times from one socket to another on 127.0.0.1. Panics if the
/// receiver hears nothing for 10 s or the received bytes differ from `data`.
pub fn raw_stream(data: &[u8], rounds: usize) -> StreamRun {
    let datagrams = data.len().div_ceil(STREAM_CHUNK) as u32;
    let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
    tx.connect(rx.local_addr().expect("addr")).expect("connect");
    rx.connect(tx.local_addr().expect("addr")).expect("connect");
    tx.set_read_timeout(Some(RESEND_AFTER)).expect("timeout");
    rx.set_read_timeout(Some(WAIT)).expect("timeout");
    let len = data.len();
    let receiver = std::thread::spawn(move || receive(&rx, len, rounds));

    let mut times = Vec::with_capacity(rounds);
    let mut timeouts = 0;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    for round in 0..rounds as u32 {
        let t = Instant::now();
        let (mut next, mut acked) = (0u32, 0u32);
        while acked < datagrams {
            while next < datagrams && next - acked < WINDOW_DATAGRAMS {
                let at = next as usize * STREAM_CHUNK;
                let chunk = &data[at..(at + STREAM_CHUNK).min(len)];
                buf[..STREAM_HEADER].copy_from_slice(&header(round, next));
                buf[STREAM_HEADER..STREAM_HEADER + chunk.len()].copy_from_slice(chunk);
                tx.send(&buf[..STREAM_HEADER + chunk.len()])
                    .expect("raw stream: send");
                next += 1;
            }
            let mut ack = [0u8; 64];
            match tx.recv(&mut ack) {
                Ok(k) => {
                    if let Some((r, upto)) = parse(&ack[..k]) {
                        if r == round && upto > acked {
                            acked = upto;
                        }
                    }
                }
                Err(e) if is_timeout(&e) => {
                    timeouts += 1;
                    next = acked;
                }
                Err(e) => panic!("raw stream: ack: {e}"),
            }
        }
        times.push(t.elapsed());
    }
    // A lost STOP costs only the receiver's LINGER.
    tx.send(&header(rounds as u32, STOP))
        .expect("raw stream: stop");
    let got = receiver.join().expect("receiver thread");
    assert!(got == data, "raw stream: received bytes differ");
    times.sort();
    StreamRun {
        times,
        timeouts,
        datagrams,
    }
}

/// The receiving end: `rounds` times `len` bytes in order, each datagram copied to its
/// place, acknowledged cumulatively (the number of datagrams of the round received in
/// order). Returns the bytes of the last round.
fn receive(rx: &UdpSocket, len: usize, rounds: usize) -> Vec<u8> {
    let datagrams = len.div_ceil(STREAM_CHUNK) as u32;
    let mut out = vec![0u8; len];
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let (mut round, mut expected) = (0u32, 0u32);
    loop {
        let k = match rx.recv(&mut buf) {
            Ok(k) => k,
            Err(e) if round as usize == rounds && is_timeout(&e) => break,
            Err(e) => panic!("raw stream: receive: {e}"),
        };
        let Some((r, seq)) = parse(&buf[..k]) else {
            continue;
        };
        if seq == STOP {
            break;
        }
        if r < round {
            // That round is complete here; its last acknowledgement got lost.
            rx.send(&header(r, datagrams)).expect("raw stream: ack");
            continue;
        }
        if seq < expected {
            // Sent again after a timeout: the acknowledgement it waits for got lost.
            rx.send(&header(round, expected)).expect("raw stream: ack");
            continue;
        }
        if seq > expected {
            continue; // one before it got lost: the sender's timeout sends both again
        }
        let at = seq as usize * STREAM_CHUNK;
        let n = (k - STREAM_HEADER).min(len - at);
        out[at..at + n].copy_from_slice(&buf[STREAM_HEADER..STREAM_HEADER + n]);
        expected += 1;
        if expected % ACK_EVERY == 0 || expected == datagrams {
            rx.send(&header(round, expected)).expect("raw stream: ack");
        }
        if expected == datagrams {
            round += 1;
            expected = 0;
            if round as usize == rounds {
                rx.set_read_timeout(Some(LINGER)).expect("timeout");
            }
        }
    }
    out
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}
