//! Device-model benchmarks (`cargo bench -p mnic-device`): translation lookups (TLB
//! hit against a full 4-level walk) and device COPY bandwidth against a plain memcpy
//! of the same size in the same run. Results and ratios: docs/performance.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mnic_abi::pte;
use mnic_device::mem::{self, GuestRam};
use mnic_device::testkit::{Harness, Tables};
use mnic_device::translate::{walk, Tlb};

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
        tlb.insert(1, walk(&m, t.root, va).unwrap(), 0);
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

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = translation, copy
}
criterion_main!(benches);
