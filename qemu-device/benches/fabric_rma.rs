//! PUT over the fabric between two devices, each run by its real data thread (the
//! engine) over a real transport on loopback: the bandwidth of a 1 MiB PUT against a
//! memcpy of 1 MiB and against a raw UDP stream of 1 MiB (the transport's floor:
//! datagrams as large as the fabric's, a window and an acknowledgement of the end,
//! `testkit::udp_stream`), and the completion latency of an 8-byte PUT (post to
//! completion: one round trip, `PUT` there and `REPLY` back) against a raw UDP round
//! trip. Both raw baselines run in the same process, before and after the PUTs they are
//! compared with. `cargo bench --bench fabric_rma` measures (200 large PUTs, 5000 small
//! ones); under `cargo test` it runs a few of each, to show it still works.

use std::time::{Duration, Instant};

use mnic_abi::fabric::MAX_DATAGRAM;
use mnic_abi::{completion, fabric_counter, key_access, work, Completion, Remote, WorkDesc};
use mnic_device::engine::DEFAULT_SPIN;
use mnic_device::mem;
use mnic_device::testkit::udp::{median, p99, raw_round_trips, raw_round_trips_polled, us};
use mnic_device::testkit::udp_stream::{raw_stream, ACK_EVERY, STREAM_CHUNK, WINDOW_DATAGRAMS};
use mnic_device::testkit::{Harness, Pair, PairConfig};

const LIMIT: Duration = Duration::from_secs(10);
const MIB: u32 = 1 << 20;
const VA_A: u64 = 0x1000_0000;
const VA_B: u64 = 0x2000_0000;
const KEY: u32 = 0x0b0b_0001;

/// A buffer of `len` bytes mapped at `va` of context 1 of `h`: its GPA.
fn buffer(h: &mut Harness, va: u64, len: u64) -> u64 {
    let gpa = h.alloc(len, false);
    h.map(1, va, gpa, len, true);
    gpa
}

/// Posts `d` on `h`'s context 1 and polls until its completion (yielding the CPU
/// between looks: the machine has few cores and four threads of the devices need them):
/// the elapsed time.
fn timed(h: &mut Harness, d: WorkDesc) -> Duration {
    let t = Instant::now();
    h.post(1, d);
    let c: Completion = loop {
        if let Some(c) = h.completions(1).pop() {
            break c;
        }
        assert!(t.elapsed() < LIMIT, "no completion");
        std::thread::yield_now();
    };
    let e = t.elapsed();
    assert_eq!(c.status, completion::OK, "{c:?}");
    e
}

/// Sorted times of `n` memcpys of 1 MiB.
fn memcpy(n: usize) -> Vec<Duration> {
    let src = vec![7u8; MIB as usize];
    let mut dst = vec![0u8; MIB as usize];
    let mut times: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&mut dst);
            t.elapsed()
        })
        .collect();
    times.sort();
    times
}

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let (big, small) = if measuring { (200, 5000) } else { (3, 50) };

    let mut p = Pair::new(&PairConfig::default());
    p.a.setup_ctx(1, 6, 6);
    p.b.setup_ctx(1, 6, 6);
    let gpa_a = buffer(&mut p.a, VA_A, u64::from(MIB));
    buffer(&mut p.b, VA_B, u64::from(MIB));
    p.b.key_set(1, VA_B, u64::from(MIB), KEY, key_access::WRITE);
    p.b.run();
    let data: Vec<u8> = (0..MIB).map(|i| (i * 7) as u8).collect();
    mem::write(&p.a.mem(), gpa_a, &data).expect("data");
    let _ea = p.a.start_engine(DEFAULT_SPIN).expect("data thread");
    let _eb = p.b.start_engine(DEFAULT_SPIN).expect("data thread");
    let remote = Remote {
        node: 2,
        ctx: 1,
        key: KEY,
        va: VA_B,
    };
    let put = |len, tag| WorkDesc::rma(work::PUT, 0, tag, VA_A, remote, len);

    // The raw stream first, then the PUTs, then the raw stream again: a drift of the
    // machine shows as a difference between the two raw runs.
    let stream1 = raw_stream(&data, big);
    let mut tag = 0;
    let mut bulk: Vec<Duration> = (0..big)
        .map(|_| {
            tag += 1;
            timed(&mut p.a, put(MIB, tag))
        })
        .collect();
    bulk.sort();
    let stream2 = raw_stream(&data, big);
    let copy = memcpy(big);

    // The same for the round trip.
    let raw1 = raw_round_trips(small);
    let mut lat: Vec<Duration> = (0..small)
        .map(|_| {
            tag += 1;
            timed(&mut p.a, put(8, tag))
        })
        .collect();
    lat.sort();
    let raw2 = raw_round_trips(small);
    let polled = raw_round_trips_polled(small);

    let gbps = |d: Duration| f64::from(MIB) / d.as_secs_f64() / 1e9;
    println!("fabric PUT, two devices on loopback, each run by its data thread");
    println!("  1 MiB PUT, {big} times, against memcpy of 1 MiB and a raw UDP stream of 1 MiB");
    println!(
        "  (raw UDP stream: {} datagrams of {MAX_DATAGRAM} bytes, {STREAM_CHUNK} of the buffer each, \
         window {WINDOW_DATAGRAMS}, an ack every {ACK_EVERY} and at the end)",
        stream1.datagrams
    );
    for (name, v) in [
        ("raw UDP stream", &stream1.times),
        ("PUT 1 MiB", &bulk),
        ("raw UDP again", &stream2.times),
        ("memcpy 1 MiB", &copy),
    ] {
        println!(
            "  {name:<14} median {:9.1} us  ({:6.2} GB/s)   p99 {:9.1} us",
            us(median(v)),
            gbps(median(v)),
            us(p99(v))
        );
    }
    let stream = us(median(&stream1.times)).min(us(median(&stream2.times)));
    let (put_us, copy_us) = (us(median(&bulk)), us(median(&copy)));
    println!("  ratio PUT / memcpy (medians): {:.1}x", put_us / copy_us);
    println!(
        "  ratio PUT / raw UDP stream (medians, the faster raw run as baseline): {:.1}x",
        put_us / stream
    );
    println!(
        "  ratio raw UDP stream / memcpy (medians, the faster raw run): {:.1}x",
        stream / copy_us
    );
    println!(
        "  bandwidth against memcpy (medians): PUT {:.3}x, raw UDP stream {:.3}x",
        copy_us / put_us,
        copy_us / stream
    );
    println!(
        "  raw UDP stream timeouts (nothing heard for 20 ms, sent again from the first unacknowledged): {}, {}",
        stream1.timeouts, stream2.timeouts
    );
    println!("  8-byte PUT, post to completion, {small} times, against a raw UDP round trip");
    for (name, v) in [
        ("raw UDP", &raw1),
        ("PUT 8 B", &lat),
        ("raw UDP again", &raw2),
        ("raw UDP polled", &polled),
    ] {
        println!(
            "  {name:<14} median {:9.1} us   p99 {:9.1} us",
            us(median(v)),
            us(p99(v))
        );
    }
    let base = us(median(&raw1)).min(us(median(&raw2)));
    println!(
        "  ratio PUT / raw UDP (medians, the faster raw run as baseline): {:.2}x",
        us(median(&lat)) / base
    );
    // The blocking baseline moves with how busy the machine is (an idle CPU wakes slowly);
    // the polled one does not sleep, so it is the floor to hold a PUT against.
    println!(
        "  ratio PUT / raw UDP polled (medians; both ends busy-poll, no wake-ups): {:.2}x",
        us(median(&lat)) / us(median(&polled))
    );
    let sa = p.a.core.shared().rma.snapshot();
    let sb = p.b.core.shared().rma.snapshot();
    println!(
        "  packets sent {}, served {}, RNR {}, resends {}",
        sa[fabric_counter::PACKETS_SENT],
        sb[fabric_counter::PUT_SERVED],
        sb[fabric_counter::RNR_SENT],
        sa[fabric_counter::RESENDS]
    );
}
