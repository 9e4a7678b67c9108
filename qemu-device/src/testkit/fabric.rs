//! Devices on a loopback fabric for tests and benches: harnesses on memfd guest RAM,
//! each attached to a real transport on 127.0.0.1 (ephemeral ports), polled by the
//! caller; a node facing a hostile peer that forges its datagrams; and the driver's
//! `KEY_SET`/`KEY_CLEAR`.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use mnic_abi::{cmd, key_access, Command, Completion};

use super::harness::{Harness, RAM_SIZE};
use super::memfd::memfd;
use crate::engine::{Activity, RmaTiming};
use crate::fabric::rma_stats::RmaSnapshot;
use crate::fabric::wire::{self, Fields};
use crate::fabric::{FabricConfig, Inject, Timing, Transport};
use crate::mem::GuestRam;

/// How a [`Pair`] is built.
#[derive(Clone, Copy, Debug, Default)]
pub struct PairConfig {
    /// The transports' retransmission timing.
    pub timing: Timing,
    /// The devices' PUT/GET timing.
    pub rma: RmaTiming,
    /// Injection on node 1's (`a`) outgoing datagrams.
    pub inject_a: Inject,
    /// Injection on node 2's (`b`) outgoing datagrams.
    pub inject_b: Inject,
}

impl PairConfig {
    /// Both directions lossy (5% of datagrams dropped, 5% duplicated, 10% reordered), the
    /// injections seeded `seed_a` (node 1's) and `seed_b` (node 2's).
    pub fn lossy(seed_a: u64, seed_b: u64) -> PairConfig {
        let lossy = |seed| Inject {
            drop: 0.05,
            dup: 0.05,
            reorder: 0.1,
            seed,
        };
        PairConfig {
            inject_a: lossy(seed_a),
            inject_b: lossy(seed_b),
            ..PairConfig::default()
        }
    }
}

/// A harness (enabled, bus mastering on) on a memfd of `RAM_SIZE` bytes at GPA 0.
pub fn memfd_harness() -> Harness {
    let ram = GuestRam::new();
    ram.map_fd(0, RAM_SIZE as u64, memfd(RAM_SIZE as u64), 0, true)
        .expect("memfd guest RAM");
    Harness::with_ram(ram, false)
}

/// A socket on 127.0.0.1, ephemeral port.
pub fn loopback_socket() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")
}

/// A memfd harness attached as node `node` on `socket`, with `peers`.
pub fn node_harness(
    node: u16,
    socket: UdpSocket,
    peers: &[(u16, SocketAddr)],
    timing: Timing,
    inject: Inject,
    rma: RmaTiming,
) -> Harness {
    let cfg = FabricConfig {
        peers: peers.to_vec(),
        timing,
        inject,
        ..FabricConfig::loopback(node)
    };
    let mut h = memfd_harness();
    let t = Transport::on_socket(&cfg, socket, Some(h.dev.counters().clone())).expect("transport");
    h.core.attach_fabric_with(t, rma);
    h
}

/// Two devices, nodes 1 (`a`) and 2 (`b`), each the other's only peer.
pub struct Pair {
    /// Node 1.
    pub a: Harness,
    /// Node 2.
    pub b: Harness,
}

impl Pair {
    /// Nodes 1 and 2 on fresh loopback sockets.
    pub fn new(cfg: &PairConfig) -> Pair {
        let (sa, sb) = (loopback_socket(), loopback_socket());
        let (aa, ab) = (sa.local_addr().unwrap(), sb.local_addr().unwrap());
        let a = node_harness(1, sa, &[(2, ab)], cfg.timing, cfg.inject_a, cfg.rma);
        let b = node_harness(2, sb, &[(1, aa)], cfg.timing, cfg.inject_b, cfg.rma);
        Pair { a, b }
    }

    /// One poll round of each device; whether either was busy.
    pub fn poll(&mut self) -> bool {
        let (ma, mb) = (self.a.mem(), self.b.mem());
        let a = self.a.core.poll(&ma);
        let b = self.b.core.poll(&mb);
        a == Activity::Busy || b == Activity::Busy
    }

    /// Polls both devices until `f` returns something, for at most `limit` (panics
    /// then), resting a little when both are idle.
    pub fn until<T>(&mut self, limit: Duration, mut f: impl FnMut(&mut Pair) -> Option<T>) -> T {
        let end = Instant::now() + limit;
        loop {
            let busy = self.poll();
            if let Some(v) = f(self) {
                return v;
            }
            assert!(Instant::now() < end, "nothing within {limit:?}");
            if !busy {
                std::thread::sleep(Duration::from_micros(20));
            }
        }
    }

    /// The next `n` completions of context `ctx` of `b` (if `on_b`) or `a`, polling
    /// both devices, in the order they were written.
    pub fn completions_on(
        &mut self,
        on_b: bool,
        ctx: u16,
        n: usize,
        limit: Duration,
    ) -> Vec<Completion> {
        let mut got = Vec::new();
        self.until(limit, |p| {
            let h = if on_b { &mut p.b } else { &mut p.a };
            got.extend(h.completions(ctx));
            (got.len() >= n).then_some(())
        });
        got
    }

    /// The next completion of `a`'s context `ctx`, polling both devices.
    pub fn completion(&mut self, ctx: u16, limit: Duration) -> Completion {
        self.until(limit, |p| {
            let c = p.a.completions(ctx);
            assert!(c.len() <= 1, "one item at a time: {c:?}");
            c.into_iter().next()
        })
    }
}

/// Node 2 (`victim`) whose map has node 1 at a socket of the test's (`attacker`): every
/// datagram "from node 1" is forged by the test.
pub struct Hostile {
    /// Node 2, polled by the caller.
    pub victim: Harness,
    /// Node 1's address in the victim's map.
    pub attacker: UdpSocket,
    victim_addr: SocketAddr,
    seq: u32,
    /// The victim's last data packet taken in order by [`Hostile::take_and_ack`].
    acked: u32,
}

impl Hostile {
    /// The victim on a fresh loopback socket, with default timing.
    pub fn new() -> Hostile {
        let attacker = loopback_socket();
        let socket = loopback_socket();
        let victim_addr = socket.local_addr().unwrap();
        let peers = [(1, attacker.local_addr().unwrap())];
        let victim = node_harness(
            2,
            socket,
            &peers,
            Timing::default(),
            Inject::default(),
            RmaTiming::default(),
        );
        Hostile {
            victim,
            attacker,
            victim_addr,
            seq: 0,
            acked: 0,
        }
    }

    /// Sends the victim a datagram of type `ptype` from node 1's context `src_ctx` (epoch
    /// 1000) to its context `dst_ctx`, with the next sequence number.
    pub fn forge(&mut self, ptype: u8, src_ctx: u16, dst_ctx: u16, payload: &[u8]) {
        self.seq += 1;
        self.replay(ptype, src_ctx, dst_ctx, payload);
    }

    /// As [`forge`](Self::forge), with the last datagram's sequence number: a replay,
    /// which the transport drops.
    pub fn replay(&mut self, ptype: u8, src_ctx: u16, dst_ctx: u16, payload: &[u8]) {
        let f = Fields {
            ptype,
            src_node: 1,
            dst_node: 2,
            src_ctx,
            dst_ctx,
            src_epoch: 1000,
            seq: self.seq,
            ..Fields::default()
        };
        self.attacker
            .send_to(&wire::encode(&f, payload), self.victim_addr)
            .unwrap();
    }

    /// Takes, without waiting, every datagram the victim sent the attacker and
    /// acknowledges its data packets as an honest node 1 would (cumulatively, in order),
    /// so that a long attack neither fills the victim's send queue nor gets node 1
    /// declared gone. Returns the data packets taken: (type, payload).
    pub fn take_and_ack(&mut self) -> Vec<(u8, Vec<u8>)> {
        self.attacker.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; mnic_abi::fabric::MAX_DATAGRAM];
        let mut epoch = None;
        while let Ok(n) = self.attacker.recv(&mut buf) {
            let Ok(p) = wire::parse(&buf[..n]) else {
                continue;
            };
            if p.f.ptype == mnic_abi::fabric::ptype::ACK {
                continue;
            }
            epoch = Some(p.f.src_epoch);
            if p.f.seq == self.acked.wrapping_add(1) {
                self.acked = p.f.seq;
                got.push((p.f.ptype, p.payload.to_vec()));
            }
            // Anything else is a retransmit or arrived past a gap: taken again in order.
        }
        self.attacker.set_nonblocking(false).unwrap();
        if let Some(e) = epoch {
            let f = Fields {
                ptype: mnic_abi::fabric::ptype::ACK,
                src_node: 1,
                dst_node: 2,
                src_epoch: 1000,
                dst_epoch: e,
                ack: self.acked,
                ..Fields::default()
            };
            self.attacker
                .send_to(&wire::encode(&f, &[]), self.victim_addr)
                .unwrap();
        }
        got
    }

    /// Polls the victim until `read` of its remote-access counters gives `want`, for at
    /// most `limit`; returns the last reading (the caller asserts it).
    pub fn counted<T: PartialEq>(
        &mut self,
        want: T,
        limit: Duration,
        read: impl Fn(&RmaSnapshot) -> T,
    ) -> T {
        let start = Instant::now();
        loop {
            self.victim.core.poll(&self.victim.mem());
            let got = read(&self.victim.core.shared().rma.snapshot());
            if got == want || start.elapsed() > limit {
                return got;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

impl Default for Hostile {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    /// `KEY_SET(ctx, va, len, key | access)` queued (not run).
    pub fn key_set(&mut self, ctx: u16, va: u64, len: u64, key: u32, access: u64) {
        self.cmd(Command {
            opcode: cmd::KEY_SET,
            ctx,
            arg0: va,
            arg1: len,
            arg2: key_access::arg(key, access),
            ..Default::default()
        });
    }

    /// `KEY_CLEAR(ctx, key)` queued (not run).
    pub fn key_clear(&mut self, ctx: u16, key: u32) {
        self.command(cmd::KEY_CLEAR, ctx, u64::from(key), 0);
    }
}
