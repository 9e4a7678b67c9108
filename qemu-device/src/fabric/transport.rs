//! The transport: a node's UDP socket and the thread that serves it (docs/fabric.md
//! 14.1, 14.5). Senders call [`Transport::send`] from any thread (the packet leaves at
//! once when the window allows); the thread receives, acknowledges and retransmits, and
//! wakes whoever waits for a message or a completion: a thread blocked in
//! [`Transport::recv_timeout`] or [`Transport::completion_timeout`], and the waker
//! ([`Transport::set_waker`]: a device's data thread, which takes its arrivals with
//! [`Transport::take`] in its poll rounds). Every path is bounded: the socket
//! is non-blocking, the thread drains at most `BATCH` datagrams per round, the node's
//! queues have their limits, and nothing a datagram says can make the thread panic.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mnic_abi::fabric::MAX_DATAGRAM;

use super::config::FabricConfig;
use super::inject::{Datagram, Injector};
use super::node::{Completion, Message, Node, SendError};
use super::peer::State;
use super::stats::{Snapshot, Stats};
use crate::counters::Counters;

/// Datagrams taken per round before the thread acknowledges and checks its timers.
const BATCH: usize = 256;
/// Longest sleep of the thread: the timers' resolution, and the most a datagram held
/// back by injection waits when nothing follows it.
const TICK: Duration = Duration::from_millis(5);

struct Locked {
    node: Node,
    inject: Injector,
}

/// What the transport calls when it has deliveries or completions to take.
pub type Waker = Box<dyn Fn() + Send + Sync>;

struct Inner {
    socket: UdpSocket,
    node_id: u16,
    waker: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
    state: Mutex<Locked>,
    news: Condvar,
    stats: Arc<Stats>,
    stop: AtomicBool,
    tick: Duration,
}

/// A running node of the fabric. Dropping it stops its thread and closes its socket.
pub struct Transport {
    inner: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
}

/// This start's epoch: the wall clock in milliseconds (docs/fabric.md 14.4), never 0.
fn start_epoch() -> u32 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_millis());
    (ms as u32).max(1)
}

impl Transport {
    /// Binds `cfg.bind` and starts the thread. `device`: the device counters to feed, if
    /// the transport runs inside a device.
    pub fn start(cfg: &FabricConfig, device: Option<Arc<Counters>>) -> io::Result<Transport> {
        cfg.validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Transport::on_socket(cfg, UdpSocket::bind(cfg.bind)?, device)
    }

    /// Like [`Transport::start`] on a socket bound already (`cfg.bind` is not used): a
    /// fabric whose nodes take ephemeral ports binds them all before any map is written.
    pub fn on_socket(
        cfg: &FabricConfig,
        socket: UdpSocket,
        device: Option<Arc<Counters>>,
    ) -> io::Result<Transport> {
        let with_bind = FabricConfig {
            bind: socket.local_addr()?,
            ..cfg.clone()
        };
        with_bind
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        socket.set_nonblocking(true)?;
        let stats = Arc::new(Stats::new(device));
        let node = Node::new(cfg, start_epoch(), stats.clone());
        let inner = Arc::new(Inner {
            socket,
            node_id: cfg.node,
            waker: Mutex::new(None),
            state: Mutex::new(Locked {
                node,
                inject: Injector::new(cfg.inject),
            }),
            news: Condvar::new(),
            stats,
            stop: AtomicBool::new(false),
            tick: TICK.min(cfg.timing.rto / 2).max(Duration::from_millis(1)),
        });
        let i = inner.clone();
        let thread = std::thread::Builder::new()
            .name("mnic-fabric".into())
            .spawn(move || i.run())?;
        Ok(Transport {
            inner,
            thread: Some(thread),
        })
    }

    /// The bound address (the port, if it was 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.socket.local_addr()
    }

    /// This node's id.
    pub fn node(&self) -> u16 {
        self.inner.node_id
    }

    /// Sends a packet of type `ptype` (`EAGER`, `PUT`, `GET_REQ`, `GET_RESP` or `REPLY`)
    /// with `payload` from context `src_ctx` to context `dst_ctx` of node `dst`; the
    /// returned id comes back in its [`Completion`].
    pub fn send(
        &self,
        dst: u16,
        ptype: u8,
        src_ctx: u16,
        dst_ctx: u16,
        payload: &[u8],
    ) -> Result<u64, SendError> {
        let mut l = self.inner.lock();
        let mut out = Vec::new();
        let r = l.node.send(
            Instant::now(),
            dst,
            ptype,
            src_ctx,
            dst_ctx,
            payload,
            &mut out,
        );
        self.inner.emit(&mut l, out);
        r
    }

    /// Installs `waker`: the transport's thread calls it (outside its lock) after a round
    /// that leaves deliveries or completions to take, when some are new since the last
    /// call. It must be cheap and must not call back into the transport.
    pub fn set_waker(&self, waker: Waker) {
        *self.inner.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::from(waker));
    }

    /// Takes, without waiting, up to `max` delivered messages into `msgs` and every
    /// completion into `done` (completions must be taken: until then they count against
    /// the send queue).
    pub fn take(&self, max: usize, msgs: &mut Vec<Message>, done: &mut Vec<Completion>) {
        let mut l = self.inner.lock();
        while let Some(c) = l.node.take_completion() {
            done.push(c);
        }
        for _ in 0..max {
            let Some(m) = l.node.take_message() else {
                break;
            };
            msgs.push(m);
        }
    }

    /// The next delivered message, waiting up to `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Message> {
        self.inner.wait(timeout, |n| n.take_message())
    }

    /// The next completion of a sent message, waiting up to `timeout`.
    pub fn completion_timeout(&self, timeout: Duration) -> Option<Completion> {
        self.inner.wait(timeout, |n| n.take_completion())
    }

    /// The statistics now.
    pub fn stats(&self) -> Snapshot {
        self.inner.stats.snapshot()
    }

    /// A peer's state.
    pub fn peer_state(&self, peer: u16) -> Option<State> {
        self.inner.lock().node.peer_state(peer)
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            // The thread wakes within one tick; a panic in it has been logged already.
            let _ = t.join();
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Locked> {
        // A panic while the lock was held (a bug) leaves the node as it was; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<T>(
        &self,
        timeout: Duration,
        mut take: impl FnMut(&mut Node) -> Option<T>,
    ) -> Option<T> {
        let end = Instant::now() + timeout;
        let mut l = self.lock();
        loop {
            if let Some(v) = take(&mut l.node) {
                return Some(v);
            }
            let left = end.checked_duration_since(Instant::now())?;
            if left.is_zero() {
                return None;
            }
            l = self
                .news
                .wait_timeout(l, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Puts `out` on the wire, through the injection.
    fn emit(&self, l: &mut Locked, out: Vec<Datagram>) {
        for d in out {
            l.inject.apply(d, &self.stats, &mut |d| self.put(d));
        }
    }

    fn put(&self, d: &Datagram) {
        match self.socket.send_to(&d.bytes, d.to) {
            Ok(_) => self.stats.tx(),
            // A full socket buffer or an unreachable port: the datagram is lost, as on a
            // wire; retransmission covers it.
            Err(_) => self.stats.send_error(),
        }
    }

    /// Waits until the socket is readable or `timeout` passes; true if readable.
    fn readable(&self, timeout: Duration) -> bool {
        let mut p = libc::pollfd {
            fd: self.socket.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().clamp(1, 1000) as libc::c_int;
        // SAFETY: poll reads and writes one pollfd, a live local, for the socket this
        // struct owns.
        unsafe { libc::poll(&mut p, 1, ms) > 0 }
    }

    fn run(&self) {
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        // The waker is called for new news only: a taker that does not take (a device
        // without bus mastering) is not woken every tick for the same messages.
        let mut woken_at = self.stats.news();
        while !self.stop.load(Ordering::Relaxed) {
            let readable = self.readable(self.tick);
            let now = Instant::now();
            let mut l = self.lock();
            let mut out = Vec::new();
            for _ in 0..BATCH {
                match self.socket.recv_from(&mut buf) {
                    // A refused datagram is counted by the node and changes nothing.
                    Ok((n, from)) => {
                        let _ = l.node.receive(now, from, &buf[..n], &mut out);
                    }
                    Err(_) => break,
                }
            }
            l.node.flush_acks(&mut out);
            l.node.tick(now, &mut out);
            self.emit(&mut l, out);
            if !readable {
                l.inject.release(&mut |d| self.put(d));
            }
            let news = l.node.has_news();
            drop(l);
            if news {
                self.news.notify_all();
                let gen = self.stats.news();
                if gen != woken_at {
                    woken_at = gen;
                    let w = self.waker.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    if let Some(w) = w {
                        w();
                    }
                }
            }
        }
    }
}
