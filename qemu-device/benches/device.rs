//! Device-model benchmarks (`cargo bench -p mnic-device`): translation lookups (TLB
//! hit against a full 4-level walk), device COPY bandwidth against a plain memcpy of
//! the same size, and the device side of an invalidation (INVALIDATE_RANGE + SYNC
//! against a SYNC alone), each with its baseline in the same run. Results and ratios:
//! docs/performance.md (`make bench` turns them into a report).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mnic_abi::pte;
use mnic_device::mem::{self, GuestRam};
use mnic_device::testkit::{Harness, Tables};
use mnic_device::translate::{walk, Leaf, Tlb};

const PAGES: u64 = 1024;
const VA: u64 = 0x10_0000_0000;

fn translation(c: &mut Criterion) {
    let ram = GuestRam::anonymous(&[(0, 16 << 20)]).unwrap();
    let m = ram.snapshot();
    let mut t = Tables::new(&m, 0x10_0000);
    t.map_range(&m, VA, 0x80_0000, PAGES * pte::PAGE_SIZE, true);
    let mut tlb = Tlb::default();
    for i in 0..PAGES {
        let va = VA + i * pte::PAGE_SIZE;
        tlb.insert(1, walk(&m, t.root, va).unwrap(), 0, 0);
    }
    let mut g = c.benchmark_group("translate");
    g.throughput(Throughput::Elements(PAGES));
    g.bench_function("tlb_hit", |b| {
        b.iter(|| {
            for i in 0..PAGES {
                black_box(tlb.lookup(1, black_box(VA + i * pte::PAGE_SIZE + 8)));
            }
        })
    });
    g.bench_function("walk", |b| {
        b.iter(|| {
            for i in 0..PAGES {
                black_box(walk(&m, t.root, black_box(VA + i * pte::PAGE_SIZE + 8)).ok());
            }
        })
    });
    g.finish();
}

fn copy(c: &mut Criterion) {
    let mut g = c.benchmark_group("copy");
    for len in [64u64 << 10, 1 << 20] {
        g.throughput(Throughput::Bytes(len));
        let mut h = Harness::new(false);
        h.setup_ctx(1, 8, 8);
        let s = h.alloc(len, false);
        let d = h.alloc(len, false);
        h.map(1, VA, s, len, false);
        h.map(1, VA + (1 << 30), d, len, true);
        mem::write(&h.mem(), s, &vec![7u8; len as usize]).unwrap();
        g.bench_with_input(BenchmarkId::new("device", len), &len, |b, &len| {
            b.iter(|| {
                h.post(1, Harness::copy_desc(VA, VA + (1 << 30), len as u32, 1));
                h.run();
                assert_eq!(h.completions(1).len(), 1);
            })
        });
        // Not the ratio's baseline (that is a plain memcpy, below): the CPU copying the
        // same guest buffers, to tell the device's overhead from the memory's.
        let gm = h.mem();
        g.bench_with_input(BenchmarkId::new("guest_memcpy", len), &len, |b, &len| {
            b.iter(|| mem::copy(&gm, s, d, len as usize).unwrap())
        });
        let src = vec![7u8; len as usize];
        let mut dst = vec![0u8; len as usize];
        g.bench_with_input(BenchmarkId::new("memcpy", len), &len, |b, _| {
            b.iter(|| {
                dst.copy_from_slice(black_box(&src));
                black_box(&mut dst);
            })
        });
    }
    g.finish();
}

/// The device's half of an invalidation: the command ring is read, the TLB entries of
/// the range are dropped (and recorded for the stale checker), then SYNC writes its
/// word. Baseline: a SYNC alone. Each iteration first caches `n` entries of the
/// range (untimed), so the invalidation always has work to do.
fn invalidate(c: &mut Criterion) {
    let mut g = c.benchmark_group("invalidate");
    let mut h = Harness::new(false);
    h.setup_ctx(1, 6, 6);
    let leaf = |i: u64| Leaf {
        va: VA + i * pte::PAGE_SIZE,
        gpa: 0x80_0000 + i * pte::PAGE_SIZE,
        huge: false,
        writable: true,
    };
    let mut value = 0u64;
    g.bench_function("sync_only", |b| {
        b.iter(|| {
            value += 1;
            assert_eq!(h.sync(value), value);
        })
    });
    for n in [1u64, 64, 512] {
        g.bench_with_input(BenchmarkId::new("range_sync", n), &n, |b, &n| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    for i in 0..n {
                        h.core.tlb_mut().insert(1, leaf(i), 0, 0);
                    }
                    value += 1;
                    let t = Instant::now();
                    h.command(mnic_abi::cmd::INVALIDATE_RANGE, 1, VA, n * pte::PAGE_SIZE);
                    assert_eq!(h.sync(value), value);
                    total += t.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = translation, copy, invalidate
}
criterion_main!(benches);
