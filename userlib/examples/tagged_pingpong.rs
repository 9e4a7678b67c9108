//! Tagged ping-pong between two contexts on two devices that are nodes of one fabric:
//! MX-style SEND/RECV with match bits, no registration for remote access and no key.
//! For each size (across the eager/rendezvous threshold, 1416 bytes) the "ping" context
//! sends a message tagged `PING | round`, the "pong" context receives it into a buffer
//! posted beforehand and sends it back tagged `PONG | round`; both check the data, the
//! match bits and the sender the receive reports, and the ping side prints the mean
//! round-trip time.
//!
//! One process drives both contexts from one thread: a receive is posted before the
//! message it waits for is sent, so the devices deliver it (a rendezvous message is
//! pulled by the receiving device) without either side waiting on the other.
//!
//! Usage: `tagged_pingpong [PING PONG]` (device indices, default 0 and 1: in a guest
//! started with `mnic-vm run --devices 2 --fabric`). Exits non-zero on any failure.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use mnic::{Access, Context, Device, DmaBuffer, Endpoint, QueueConfig, Work, WorkDone};

const SIZES: [usize; 5] = [0, 64, 1416, 1417, 64 << 10];
const ROUNDS: u64 = 20;
const PING: u64 = 0x5049_4e47 << 32;
const PONG: u64 = 0x504f_4e47 << 32;
/// The receive wants the kind in the high half and the exact round in the low half.
const ALL: u64 = !0;
const TIMEOUT: Option<Duration> = Some(Duration::from_secs(30));

fn main() -> ExitCode {
    match run() {
        Ok(()) => {
            println!("tagged_pingpong: ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tagged_pingpong: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// One side: a context, a buffer to send from and one to receive into.
struct Side {
    ctx: Context,
    me: Endpoint,
    out: DmaBuffer,
    inbox: DmaBuffer,
}

impl Side {
    fn open(index: u32) -> Res<Self> {
        let ctx = Device::open_index(index)?;
        ctx.setup_queues(QueueConfig::default())?;
        let me = ctx
            .endpoint()
            .ok_or("the device is not a node of a fabric")?;
        let len = *SIZES.iter().max().unwrap_or(&4096);
        Ok(Self {
            ctx,
            me,
            out: DmaBuffer::new(len.max(4096))?,
            inbox: DmaBuffer::new(len.max(4096))?,
        })
    }

    /// Waits for the completion of the item tagged `tag`; completions of other items
    /// may come first (a RECV completes out of work-queue order) and must succeed.
    fn wait_for(&self, tag: u64) -> Res<WorkDone> {
        loop {
            let done = self.ctx.wait(TIMEOUT)?;
            done.result()?;
            if done.tag == tag {
                return Ok(done);
            }
        }
    }

    /// Checks that the receive `done` took `len` bytes tagged `bits` from `from`.
    fn check_received(&self, done: &WorkDone, len: usize, bits: u64, from: Endpoint) -> Res<()> {
        let msg = done.message.ok_or("a RECV completed without a message")?;
        if msg.match_bits != bits || msg.sender != from || msg.truncated {
            return Err(format!("received {msg:?}, expected bits {bits:#x} from {from}").into());
        }
        if done.bytes != len as u64 || self.inbox.to_vec()[..len] != payload(len, bits) {
            return Err(format!("message {bits:#x}: {} bytes, or wrong data", done.bytes).into());
        }
        Ok(())
    }
}

/// The bytes a message tagged `bits` carries (the same rule at both ends).
fn payload(len: usize, bits: u64) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64 ^ bits ^ (bits >> 32)) as u8)
        .collect()
}

fn run() -> Res<()> {
    let mut args = std::env::args().skip(1);
    let ping_index = args.next().map_or(Ok(0), |s| s.parse())?;
    let pong_index = args.next().map_or(Ok(1), |s| s.parse())?;
    let ping = Side::open(ping_index)?;
    let pong = Side::open(pong_index)?;
    // Sending reads `out`, receiving writes `inbox`: registered with just that access.
    let _regs = [
        ping.ctx.register(&ping.out, Access::READ)?,
        ping.ctx.register(&ping.inbox, Access::WRITE)?,
        pong.ctx.register(&pong.out, Access::READ)?,
        pong.ctx.register(&pong.inbox, Access::WRITE)?,
    ];
    println!("ping {} <-> pong {}", ping.me, pong.me);
    for len in SIZES {
        let start = Instant::now();
        for round in 0..ROUNDS {
            let (ping_bits, pong_bits) = (PING | round, PONG | round);
            // The pong side posts its receive first: the ping arrives expected.
            let pong_recv = pong
                .ctx
                .post(&Work::recv(&pong.inbox, 0, len, ping_bits, ALL)?)?;
            let ping_recv = ping
                .ctx
                .post(&Work::recv(&ping.inbox, 0, len, pong_bits, ALL)?)?;
            ping.out.write_from(0, &payload(len, ping_bits));
            let sent = ping
                .ctx
                .post(&Work::send(&ping.out, 0, len, pong.me, ping_bits)?)?;
            ping.wait_for(sent)?;
            let got = pong.wait_for(pong_recv)?;
            pong.check_received(&got, len, ping_bits, ping.me)?;
            // The answer, under the pong bits.
            pong.out.write_from(0, &payload(len, pong_bits));
            let sent = pong
                .ctx
                .post(&Work::send(&pong.out, 0, len, ping.me, pong_bits)?)?;
            pong.wait_for(sent)?;
            let got = ping.wait_for(ping_recv)?;
            ping.check_received(&got, len, pong_bits, pong.me)?;
        }
        let rtt = start.elapsed() / ROUNDS as u32;
        let path = if len <= mnic::abi::fabric::EAGER_MAX {
            "eager"
        } else {
            "rendezvous"
        };
        println!("{len:>7} bytes ({path}): {ROUNDS} round trips, mean {rtt:?}");
    }
    Ok(())
}
