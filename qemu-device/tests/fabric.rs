//! The fabric transport end to end (docs/fabric.md): real UDP sockets on 127.0.0.1 with
//! ephemeral ports, real threads. Messages over a wire that drops, duplicates and
//! reorders arrive once and in order; a peer that disappears is declared gone within the
//! retry budget, and a restarted one is reached again; hostile datagrams are refused,
//! counted and deliver nothing. Every wait is bounded.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mnic_abi::counter;
use mnic_abi::fabric::{ptype, SendStatus, MAX_DATAGRAM, WINDOW};
use mnic_device::counters::Counters;
use mnic_device::fabric::peer::State;
use mnic_device::fabric::stats::Snapshot;
use mnic_device::fabric::wire::{self, Fields, Refusal};
use mnic_device::fabric::{FabricConfig, Inject, SendError, Timing, Transport};

/// Longest any single wait in these tests may take.
const LIMIT: Duration = Duration::from_secs(20);

fn loopback_socket() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")
}

fn config(node: u16, peers: &[(u16, SocketAddr)]) -> FabricConfig {
    FabricConfig {
        peers: peers.to_vec(),
        ..FabricConfig::loopback(node)
    }
}

/// Sends `n` numbered messages from `from` to node `to`, taking completions whenever the
/// send queue is full; returns when every one completed, with their statuses.
fn send_numbered(from: &Transport, to: u16, n: u32) -> Vec<SendStatus> {
    let mut statuses = Vec::new();
    let end = Instant::now() + LIMIT;
    for i in 0..n {
        let ctx = (i % 4) as u16;
        loop {
            match from.send(to, ptype::EAGER, ctx, ctx, &i.to_le_bytes()) {
                Ok(_) => break,
                Err(SendError::Full) => {
                    assert!(Instant::now() < end, "send queue never drained");
                    statuses.extend(
                        from.completion_timeout(Duration::from_millis(50))
                            .map(|c| c.status),
                    );
                }
                Err(e) => panic!("send: {e}"),
            }
        }
    }
    while statuses.len() < n as usize {
        assert!(Instant::now() < end, "{} of {n} completed", statuses.len());
        statuses.extend(
            from.completion_timeout(Duration::from_millis(50))
                .map(|c| c.status),
        );
    }
    statuses
}

/// Receives until `n` messages came or nothing came for `quiet`; returns their numbers.
fn receive_numbered(at: &Transport, n: u32, quiet: Duration) -> Vec<u32> {
    let mut got = Vec::new();
    while got.len() < n as usize {
        let Some(m) = at.recv_timeout(quiet) else {
            break;
        };
        assert_eq!(m.ptype, ptype::EAGER);
        let i = u32::from_le_bytes(m.payload.try_into().expect("4-byte payload"));
        assert_eq!(u32::from(m.src_ctx), i % 4, "context of message {i}");
        assert_eq!(m.dst_ctx, m.src_ctx);
        got.push(i);
    }
    got
}

#[test]
fn a_lossy_wire_delivers_every_message_once_and_in_order() {
    const N: u32 = 3000;
    const BACK: u32 = 500;
    let (sa, sb) = (loopback_socket(), loopback_socket());
    let (aa, ab) = (sa.local_addr().unwrap(), sb.local_addr().unwrap());
    let lossy = |seed| Inject {
        drop: 0.1,
        dup: 0.1,
        reorder: 0.2,
        seed,
    };
    let ca = FabricConfig {
        inject: lossy(1),
        ..config(1, &[(2, ab)])
    };
    let cb = FabricConfig {
        inject: lossy(2),
        ..config(2, &[(1, aa)])
    };
    let a = Arc::new(Transport::on_socket(&ca, sa, None).unwrap());
    let b = Arc::new(Transport::on_socket(&cb, sb, None).unwrap());
    let t = Instant::now();
    // Traffic both ways at once: B's messages carry acknowledgements for A's too.
    let b2 = b.clone();
    let back = std::thread::spawn(move || send_numbered(&b2, 1, BACK));
    let receiver = {
        let b = b.clone();
        std::thread::spawn(move || receive_numbered(&b, N, Duration::from_secs(5)))
    };
    let receiver_back = {
        let a = a.clone();
        std::thread::spawn(move || receive_numbered(&a, BACK, Duration::from_secs(5)))
    };
    let sent = send_numbered(&a, 2, N);
    let got = receiver.join().unwrap();
    let got_back = receiver_back.join().unwrap();
    let sent_back = back.join().unwrap();
    let elapsed = t.elapsed();

    assert_eq!(
        got,
        (0..N).collect::<Vec<_>>(),
        "A to B: once each, in order"
    );
    assert_eq!(got_back, (0..BACK).collect::<Vec<_>>(), "B to A");
    assert!(sent.iter().chain(&sent_back).all(|&s| s == SendStatus::Ok));
    // Nothing more arrives: no late duplicate is delivered.
    assert!(b.recv_timeout(Duration::from_millis(100)).is_none());
    let (sa, sb) = (a.stats(), b.stats());
    println!("{N}+{BACK} messages in {elapsed:?}\nA {sa:?}\nB {sb:?}");
    // The wire really was lossy, and the layer really repaired it.
    for s in [&sa, &sb] {
        assert!(
            s.injected_drops > 0 && s.injected_dups > 0 && s.injected_reorders > 0,
            "{s:?}"
        );
        assert!(s.retransmits > 0, "{s:?}");
        assert_eq!(s.bad_packets(), 0, "{s:?}");
        assert_eq!(s.peers_gone + s.failed, 0, "{s:?}");
    }
    assert!(sb.duplicates > 0, "{sb:?}");
    assert_eq!(sb.delivered, u64::from(N));
    assert_eq!(sa.acked, u64::from(N));
}

fn fast_timing() -> Timing {
    Timing {
        rto: Duration::from_millis(5),
        rto_max: Duration::from_millis(40),
        retries: 4,
    }
}

/// 5 + 10 + 20 + 40 + 40 ms: the waits of `fast_timing` from a packet's first send to
/// its peer being gone.
const FAST_BUDGET: Duration = Duration::from_millis(115);

#[test]
fn a_peer_that_disappears_is_gone_within_the_retry_budget_and_a_restarted_one_is_reached() {
    let (sa, sb) = (loopback_socket(), loopback_socket());
    let (aa, ab) = (sa.local_addr().unwrap(), sb.local_addr().unwrap());
    let ca = FabricConfig {
        timing: fast_timing(),
        ..config(1, &[(2, ab)])
    };
    let cb = config(2, &[(1, aa)]);
    let a = Transport::on_socket(&ca, sa, None).unwrap();
    let b = Transport::on_socket(&cb, sb, None).unwrap();
    assert_eq!(send_numbered(&a, 2, 10), vec![SendStatus::Ok; 10]);
    assert_eq!(receive_numbered(&b, 10, LIMIT), (0..10).collect::<Vec<_>>());
    assert_eq!(a.peer_state(2), Some(State::Up));

    let before = a.stats();
    drop(b);
    let t = Instant::now();
    let statuses = send_numbered(&a, 2, 5);
    let took = t.elapsed();
    assert_eq!(statuses, vec![SendStatus::PeerGone; 5]);
    assert!(
        took >= FAST_BUDGET,
        "gone after {took:?}, before the budget"
    );
    // The budget plus the timer's tick and a loaded machine's scheduling.
    assert!(
        took < FAST_BUDGET + Duration::from_secs(2),
        "gone only after {took:?}"
    );
    assert_eq!(a.peer_state(2), Some(State::Gone));
    let s = a.stats();
    assert_eq!((s.peers_gone, s.failed), (1, 5), "{s:?}");
    assert_eq!(
        s.retransmits - before.retransmits,
        5 * 4,
        "every packet resent `retries` times: {s:?}"
    );

    // The peer comes back at the same address (a restart: a new epoch); the next send
    // opens a new connection and gets through.
    std::thread::sleep(Duration::from_millis(2));
    let b = Transport::on_socket(&cb, UdpSocket::bind(ab).unwrap(), None).unwrap();
    assert_eq!(send_numbered(&a, 2, 3), vec![SendStatus::Ok; 3]);
    assert_eq!(receive_numbered(&b, 3, LIMIT), vec![0, 1, 2]);
    assert_eq!(a.peer_state(2), Some(State::Up));
}

#[test]
fn a_peer_that_restarts_resets_the_connection_and_both_directions_work_again() {
    let (sa, sb) = (loopback_socket(), loopback_socket());
    let (aa, ab) = (sa.local_addr().unwrap(), sb.local_addr().unwrap());
    let ca = config(1, &[(2, ab)]);
    let cb = config(2, &[(1, aa)]);
    let a = Transport::on_socket(&ca, sa, None).unwrap();
    let b = Transport::on_socket(&cb, sb, None).unwrap();
    assert_eq!(send_numbered(&a, 2, 20), vec![SendStatus::Ok; 20]);
    assert_eq!(send_numbered(&b, 1, 20), vec![SendStatus::Ok; 20]);
    assert_eq!(receive_numbered(&b, 20, LIMIT).len(), 20);
    assert_eq!(receive_numbered(&a, 20, LIMIT).len(), 20);

    drop(b);
    std::thread::sleep(Duration::from_millis(2));
    let b = Transport::on_socket(&cb, UdpSocket::bind(ab).unwrap(), None).unwrap();
    // The new B numbers from 1 again; A takes its newer epoch as a new connection.
    assert_eq!(send_numbered(&b, 1, 5), vec![SendStatus::Ok; 5]);
    assert_eq!(receive_numbered(&a, 5, LIMIT), (0..5).collect::<Vec<_>>());
    assert_eq!(send_numbered(&a, 2, 5), vec![SendStatus::Ok; 5]);
    assert_eq!(receive_numbered(&b, 5, LIMIT), (0..5).collect::<Vec<_>>());
    assert_eq!(a.stats().resets, 1, "{:?}", a.stats());
}

/// A tiny seeded generator for the hostile bytes (repeatable runs).
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Waits until `cond` holds on `t`'s statistics (the thread counts asynchronously).
fn stats_until(t: &Transport, cond: impl Fn(&Snapshot) -> bool) -> Snapshot {
    let end = Instant::now() + LIMIT;
    loop {
        let s = t.stats();
        if cond(&s) || Instant::now() > end {
            return s;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn hostile_datagrams_are_counted_deliver_nothing_and_leave_the_node_working() {
    // Node 2 under attack. Its map: node 1 at the attacker's address (so forgeries can
    // come from the right address), node 3 at an address nobody sends from.
    let attacker = loopback_socket();
    let other = loopback_socket();
    let victim_sock = loopback_socket();
    let victim_addr = victim_sock.local_addr().unwrap();
    let counters = Arc::new(Counters::default());
    let cfg = config(
        2,
        &[
            (1, attacker.local_addr().unwrap()),
            (3, SocketAddr::from(([127, 0, 0, 1], 9))),
        ],
    );
    let victim = Transport::on_socket(&cfg, victim_sock, Some(counters.clone())).unwrap();
    attacker
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // Paced: every 32 datagrams, wait until the victim has taken them all, so that the
    // socket's receive buffer never overflows and every datagram is accounted for.
    let sent = std::cell::Cell::new(0u64);
    let send = |s: &UdpSocket, d: &[u8]| {
        s.send_to(d, victim_addr).unwrap();
        sent.set(sent.get() + 1);
        if sent.get().is_multiple_of(32) {
            let want = sent.get();
            stats_until(&victim, |st| st.rx + st.bad_packets() >= want);
        }
    };

    // One honest packet first, from node 1: delivered; its ACK tells the victim's epoch.
    let honest = Fields {
        ptype: ptype::EAGER,
        src_node: 1,
        dst_node: 2,
        src_epoch: 1000,
        seq: 1,
        ..Fields::default()
    };
    send(&attacker, &wire::encode(&honest, b"first"));
    assert_eq!(victim.recv_timeout(LIMIT).unwrap().payload, b"first");
    let mut buf = [0u8; MAX_DATAGRAM];
    let n = attacker.recv(&mut buf).expect("an ACK from the victim");
    let ack = wire::parse(&buf[..n]).unwrap().f;
    assert_eq!((ack.ptype, ack.ack, ack.dst_epoch), (ptype::ACK, 1, 1000));
    let victim_epoch = ack.src_epoch;

    // Refused datagrams, by reason.
    let mut refused = 0u64;
    let mut rng = XorShift(0x5eed);
    for _ in 0..2000 {
        let len = (rng.next() % 1600) as usize;
        let d: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        send(&attacker, &d);
        refused += 1;
    }
    let valid = wire::encode(&Fields { seq: 2, ..honest }, b"0123456789");
    for cut in 0..valid.len() {
        send(&attacker, &valid[..cut]);
        refused += 1;
    }
    let forged = [
        Fields {
            dst_node: 7,
            ..honest
        }, // another node
        Fields {
            src_node: 5,
            ..honest
        }, // not in the map
        Fields {
            src_node: 2,
            ..honest
        }, // the victim itself
        Fields {
            ptype: ptype::NAK,
            src_ctx: 0,
            dst_ctx: 0,
            seq: 2,
            ack: 0,
            status: 3,
            ..honest
        }, // a NAK says only STALE_EPOCH (the operations answer with REPLY)
        Fields {
            ptype: ptype::RTS,
            ..honest
        }, // not implemented yet
        Fields {
            status: 3,
            ..honest
        }, // status on a data packet
        Fields {
            src_ctx: 4096,
            ..honest
        }, // no such context
        // An acknowledgement of packets the victim never sent, on its current connection.
        Fields {
            ptype: ptype::ACK,
            seq: 0,
            dst_epoch: victim_epoch,
            ack: 500,
            ..honest
        },
    ];
    for f in &forged {
        send(&attacker, &wire::encode(f, b""));
        refused += 1;
    }
    // Node 3's id from an address that is not node 3's, and node 1's from another socket.
    send(
        &attacker,
        &wire::encode(
            &Fields {
                src_node: 3,
                ..honest
            },
            b"x",
        ),
    );
    send(&other, &wire::encode(&Fields { seq: 2, ..honest }, b"x"));
    refused += 2;

    // Accepted but harmless: replays of packet 1, sequence numbers beyond the window, an
    // earlier epoch of node 1, and a packet aimed at an earlier epoch of the victim.
    for _ in 0..50 {
        send(&attacker, &wire::encode(&honest, b"first"));
    }
    for k in 0..20 {
        send(
            &attacker,
            &wire::encode(
                &Fields {
                    seq: 2 + WINDOW + k,
                    ..honest
                },
                b"far",
            ),
        );
    }
    send(
        &attacker,
        &wire::encode(
            &Fields {
                seq: 0x8000_0000,
                ..honest
            },
            b"far",
        ),
    );
    send(
        &attacker,
        &wire::encode(
            &Fields {
                src_epoch: 999,
                seq: 2,
                ..honest
            },
            b"old",
        ),
    );
    let stale_dst = Fields {
        dst_epoch: victim_epoch.wrapping_sub(1).max(1),
        seq: 2,
        ..honest
    };
    send(&attacker, &wire::encode(&stale_dst, b"old"));

    let s = stats_until(&victim, |s| {
        s.bad_packets() >= refused && s.duplicates >= 50 && s.out_of_window >= 21 && s.stale >= 2
    });
    assert_eq!(s.bad_packets(), refused, "{s:?}");
    assert_eq!(s.refused_for(Refusal::ForgedAck), 1, "{s:?}");
    assert_eq!(s.refused_for(Refusal::WrongAddress), 2, "{s:?}");
    assert_eq!(s.refused_for(Refusal::Type), 1, "{s:?}");
    assert_eq!(
        (s.duplicates, s.out_of_window, s.stale),
        (50, 21, 2),
        "{s:?}"
    );
    assert_eq!(counters.get(counter::FABRIC_BAD_PACKETS), refused);
    assert_eq!(s.delivered, 1, "only the honest packet");
    assert!(
        victim.recv_timeout(Duration::from_millis(200)).is_none(),
        "something got through"
    );

    // The node still works: node 1's packet 2 is the next one delivered.
    send(
        &attacker,
        &wire::encode(&Fields { seq: 2, ..honest }, b"second"),
    );
    assert_eq!(victim.recv_timeout(LIMIT).unwrap().payload, b"second");
    assert_eq!(victim.peer_state(1), Some(State::Up));
}

#[test]
fn messages_that_cannot_be_sent_are_refused_before_anything_is_queued() {
    let peer = loopback_socket();
    let a = Transport::start(&config(1, &[(2, peer.local_addr().unwrap())]), None).unwrap();
    assert_eq!(
        a.send(9, ptype::EAGER, 0, 0, b""),
        Err(SendError::UnknownPeer)
    );
    assert_eq!(
        a.send(1, ptype::EAGER, 0, 0, b""),
        Err(SendError::UnknownPeer)
    );
    assert_eq!(
        a.send(2, ptype::EAGER, 0, 0, &[0; 1433]),
        Err(SendError::TooLong)
    );
    assert_eq!(
        a.send(2, ptype::EAGER, 256, 0, b""),
        Err(SendError::BadContext)
    );
    assert!(a.send(2, ptype::EAGER, 0, 0, &[0; 1432]).is_ok());
    assert_eq!(a.stats().tx, 1);
    let remote = config(1, &[(2, SocketAddr::from(([192, 0, 2, 1], 7)))]);
    assert!(
        Transport::start(&remote, None).is_err(),
        "a non-loopback peer"
    );
}

#[test]
fn a_slow_receiver_holds_its_sender_back_without_being_declared_gone() {
    // More than the receiver can hold (its delivery queue and its window), from a sender
    // whose retry budget (115 ms of silence) is far shorter than the receiver's stall.
    const N: u32 = 600;
    let (sa, sb) = (loopback_socket(), loopback_socket());
    let (aa, ab) = (sa.local_addr().unwrap(), sb.local_addr().unwrap());
    let ca = FabricConfig {
        timing: fast_timing(),
        ..config(1, &[(2, ab)])
    };
    let a = Transport::on_socket(&ca, sa, None).unwrap();
    let b = Arc::new(Transport::on_socket(&config(2, &[(1, aa)]), sb, None).unwrap());
    let receiver = {
        let b = b.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(1));
            receive_numbered(&b, N, Duration::from_secs(5))
        })
    };
    let statuses = send_numbered(&a, 2, N);
    assert_eq!(receiver.join().unwrap(), (0..N).collect::<Vec<_>>());
    assert!(statuses.iter().all(|&s| s == SendStatus::Ok));
    let s = a.stats();
    assert_eq!(s.peers_gone, 0, "{s:?}");
    assert!(s.retransmits > 0, "the receiver never held back: {s:?}");
}

#[test]
fn the_operations_packet_types_are_carried_in_order_and_wake_the_taker() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let (sa, sb) = (loopback_socket(), loopback_socket());
    let (aa, ab) = (sa.local_addr().unwrap(), sb.local_addr().unwrap());
    let a = Transport::on_socket(&config(1, &[(2, ab)]), sa, None).unwrap();
    let b = Transport::on_socket(&config(2, &[(1, aa)]), sb, None).unwrap();
    let woken = Arc::new(AtomicU64::new(0));
    let w = woken.clone();
    b.set_waker(Box::new(move || {
        w.fetch_add(1, Ordering::Relaxed);
    }));
    assert_eq!((a.node(), b.node()), (1, 2));
    let types = [
        ptype::PUT,
        ptype::GET_REQ,
        ptype::GET_RESP,
        ptype::REPLY,
        ptype::EAGER,
    ];
    for (i, &t) in types.iter().enumerate() {
        a.send(2, t, 1, 3, &[t, i as u8]).unwrap();
    }
    for t in [ptype::ACK, ptype::NAK, ptype::RTS, ptype::FIN, 0x7f] {
        assert_eq!(a.send(2, t, 1, 3, b""), Err(SendError::BadType), "{t:#x}");
    }
    // Taken without waiting, by whoever the waker woke: here, a poll after it.
    let end = Instant::now() + LIMIT;
    let mut got = Vec::new();
    while got.len() < types.len() {
        assert!(
            Instant::now() < end,
            "{} of {} arrived",
            got.len(),
            types.len()
        );
        let mut done = Vec::new();
        b.take(2, &mut got, &mut done);
        assert!(got.len() <= types.len());
        std::thread::sleep(Duration::from_millis(1));
    }
    for (i, m) in got.iter().enumerate() {
        assert_eq!(
            (m.ptype, m.src_node, m.src_ctx, m.dst_ctx),
            (types[i], 1, 1, 3)
        );
        assert_eq!(m.payload, [types[i], i as u8]);
    }
    assert!(woken.load(Ordering::Relaxed) >= 1, "the waker was called");
    // Completions come back through `take` too.
    let mut done = Vec::new();
    while done.len() < types.len() {
        assert!(
            Instant::now() < end,
            "{} of {} completed",
            done.len(),
            types.len()
        );
        a.take(0, &mut Vec::new(), &mut done);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(done
        .iter()
        .all(|c| c.status == SendStatus::Ok && c.dst_node == 2));
}
