//! Unit tests of the DMA maps: bounds, permissions, maps of one file, the unmap drain.

use super::*;
use crate::testkit::memfd::memfd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[test]
fn bounds_are_checked() {
    let ram = GuestRam::anonymous(&[(0, 0x10000), (0x20000, 0x1000)]).unwrap();
    let m = ram.snapshot();
    assert!(check(&m, 0, 0x10000, true).is_ok());
    assert_eq!(
        check(&m, 0xfff8, 16, false),
        Err(AddrError { addr: 0x10000 })
    );
    assert!(check(&m, u64::MAX - 3, 8, false).is_err());
    assert!(load_u64(&m, 0x20000).is_ok());
    assert!(load_u64(&m, 0x20004).is_err(), "misaligned");
    assert!(load_u64(&m, 0x30000).is_err());
    store_u64(&m, 0x20ff8, 0x1122).unwrap();
    assert_eq!(load_u64(&m, 0x20ff8).unwrap(), 0x1122);
    let mut b = [0u8; 16];
    assert!(read(&m, 0x20ff8, &mut b).is_err(), "crosses the end of RAM");
    write(&m, 0x100, b"hello").unwrap();
    copy(&m, 0x100, 0x20000, 5).unwrap();
    let mut o = [0u8; 5];
    read(&m, 0x20000, &mut o).unwrap();
    assert_eq!(&o, b"hello");
}

/// Behind an IOMMU consecutive IOVA pages are separate maps of scattered file pages: an
/// access across them is done map by map, to the right file offsets.
#[test]
fn access_spans_adjacent_maps_of_scattered_pages() {
    let fd = memfd(0x10000);
    let ram = GuestRam::new();
    // IOVA 0x1000 -> file 0x5000, IOVA 0x2000 -> file 0x3000 (read-only), 0x3000 -> 0x9000.
    for (iova, off, w) in [
        (0x1000, 0x5000, true),
        (0x2000, 0x3000, false),
        (0x3000, 0x9000, true),
    ] {
        ram.map_fd(iova, 0x1000, fd.try_clone().unwrap(), off, w)
            .unwrap();
    }
    assert_eq!(ram.files(), 1, "one host mapping for the three maps");
    let m = ram.snapshot();
    let f = File::from(fd);
    let data: Vec<u8> = (0..0x3000u32).map(|i| (i % 251) as u8).collect();
    f.write_all_at(&data[..0x1000], 0x5000).unwrap();
    f.write_all_at(&data[0x1000..0x2000], 0x3000).unwrap();
    f.write_all_at(&data[0x2000..], 0x9000).unwrap();
    let mut got = vec![0u8; 0x2000];
    read(&m, 0x1800, &mut got).unwrap();
    assert_eq!(got, data[0x800..0x2800]);
    // The middle map is read-only: a write across it is refused before any byte moves.
    assert_eq!(
        write(&m, 0x1ff0, &[0xaa; 0x20]),
        Err(AddrError { addr: 0x2000 })
    );
    let mut b = [0u8; 16];
    f.read_exact_at(&mut b, 0x5ff0).unwrap();
    assert_eq!(b, data[0xff0..0x1000], "nothing written");
    // A copy from across two maps (one read-only) into a third.
    copy(&m, 0x1800, 0x3000, 0x1000).unwrap();
    let mut out = vec![0u8; 0x1000];
    f.read_exact_at(&mut out, 0x9000).unwrap();
    assert_eq!(out, data[0x800..0x1800]);
    assert!(
        copy(&m, 0x1000, 0x2000, 8).is_err(),
        "into the read-only map"
    );
    assert!(
        read(&m, 0x3800, &mut got).is_err(),
        "runs past the last map"
    );
}

#[test]
fn unmap_removes_and_drains() {
    let ram = Arc::new(GuestRam::anonymous(&[(0, 0x1000), (0x1000, 0x1000)]).unwrap());
    let snap = ram.snapshot();
    let r2 = ram.clone();
    let t = std::thread::spawn(move || r2.unmap(0x1000, 0x1000));
    std::thread::sleep(Duration::from_millis(50));
    assert!(!t.is_finished(), "unmap must wait for the view");
    // The old view still reaches the map.
    assert!(check(&snap, 0x1000, 8, false).is_ok());
    drop(snap);
    assert_eq!(t.join().unwrap(), Ok(1));
    let m = ram.snapshot();
    assert!(check(&m, 0x1000, 8, false).is_err());
    assert!(check(&m, 0, 8, false).is_ok());
    assert_eq!(ram.regions(), (1, 0));
}

/// The data thread may still hold a view older than the newest (taken before a DMA_MAP):
/// the map is in it too, and DMA_UNMAP must wait for it.
#[test]
fn unmap_waits_for_every_view() {
    let ram = Arc::new(GuestRam::anonymous(&[(0, 0x1000)]).unwrap());
    let old = ram.snapshot();
    ram.insert(0x1000, 0x1000, FileMap::anonymous(0x1000).unwrap(), 0, true)
        .unwrap();
    let r2 = ram.clone();
    let t = std::thread::spawn(move || {
        let _ = r2.unmap(0, 0x1000);
    });
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !t.is_finished(),
        "unmap returned while an older view still reaches the map"
    );
    assert!(check(&old, 0, 8, true).is_ok());
    drop(old);
    t.join().unwrap();
    assert!(check(&ram.snapshot(), 0, 8, false).is_err());
}

#[test]
fn unmap_refuses_to_cut_and_all_removes_everything() {
    let fd = memfd(0x4000);
    let ram = GuestRam::new();
    ram.map_fd(0, 0x2000, fd.try_clone().unwrap(), 0, true)
        .unwrap();
    ram.map_fd(0x2000, 0x1000, fd.try_clone().unwrap(), 0x2000, true)
        .unwrap();
    ram.map_none(0x10000, 0x1000).unwrap();
    assert_eq!(
        ram.unmap(0x1000, 0x2000),
        Err(UnmapError {
            start: 0,
            len: 0x2000
        })
    );
    assert_eq!(ram.regions(), (2, 1), "nothing removed");
    assert!(matches!(
        ram.map_fd(0x1000, 0x1000, fd.try_clone().unwrap(), 0, true),
        Err(MapError::Overlap)
    ));
    assert_eq!(ram.unmap(0x2000, 0x1000), Ok(1));
    assert_eq!(ram.unmap_all(), 1);
    assert_eq!(ram.regions(), (0, 0));
    assert_eq!(ram.files(), 0, "the file mapping went with its last map");
}

#[test]
fn memfd_map_is_shared() {
    let fd = memfd(0x2000);
    let dup = fd.try_clone().unwrap();
    let ram = GuestRam::new();
    ram.map_fd(0x10000, 0x1000, dup, 0x1000, true).unwrap();
    ram.map_none(0xc0000, 0x1000).unwrap();
    let m = ram.snapshot();
    store_u64(&m, 0x10008, 42).unwrap();
    // Visible through the fd at file offset 0x1008.
    let f = File::from(fd);
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, 0x1008).unwrap();
    assert_eq!(u64::from_le_bytes(b), 42);
    assert!(
        check(&m, 0xc0000, 1, false).is_err(),
        "fd-less ROM is not DMA-able"
    );
    assert_eq!(ram.regions(), (1, 1));
}

#[test]
fn read_only_map_refuses_writes() {
    let fd = memfd(0x1000);
    let ram = GuestRam::new();
    ram.map_fd(0, 0x1000, fd, 0, false).unwrap();
    let m = ram.snapshot();
    assert!(load_u64(&m, 0).is_ok());
    assert!(store_u64(&m, 0, 1).is_err());
}

/// A thread unmaps the destination page by page while another copies into it over and
/// over through fresh views, as the data thread does. Every copy either completes whole
/// or is refused before it writes; once an unmap has returned, the file page it removed
/// is never written again (a sentinel put there stays).
#[test]
fn unmap_racing_copies_never_writes_an_unmapped_page() {
    const PAGES: u64 = 64;
    let fd = memfd(2 * PAGES * 0x1000);
    let f = File::from(fd.try_clone().unwrap());
    let ram = Arc::new(GuestRam::new());
    // Source: IOVA 0.., file 0..; destination: IOVA 1 GiB.., file PAGES * 4 KiB...
    let dst = 1u64 << 30;
    for i in 0..PAGES {
        let p = i * 0x1000;
        ram.map_fd(p, 0x1000, fd.try_clone().unwrap(), p, false)
            .unwrap();
        ram.map_fd(
            dst + p,
            0x1000,
            fd.try_clone().unwrap(),
            PAGES * 0x1000 + p,
            true,
        )
        .unwrap();
    }
    f.write_all_at(&vec![0x5a; (PAGES * 0x1000) as usize], 0)
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // Copies done whole, and refused.
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let copier = {
        let (ram, stop, counts) = (ram.clone(), stop.clone(), counts.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let m = ram.snapshot();
                let i = copy(&m, 0, dst, (PAGES * 0x1000) as usize).is_err();
                counts[usize::from(i)].fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let wait_for = |i: usize| {
        let t = Instant::now();
        while counts[i].load(Ordering::Relaxed) == 0 {
            assert!(t.elapsed() < Duration::from_secs(20), "the copier is stuck");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    wait_for(0);
    for i in (0..PAGES).rev() {
        std::thread::sleep(Duration::from_micros(200));
        assert_eq!(ram.unmap(dst + i * 0x1000, 0x1000), Ok(1));
        // The page is no DMA target any more: mark it.
        f.write_all_at(&[0xee; 0x1000], (PAGES + i) * 0x1000)
            .unwrap();
    }
    wait_for(1);
    stop.store(true, Ordering::Relaxed);
    copier.join().unwrap();
    let mut b = vec![0u8; (PAGES * 0x1000) as usize];
    f.read_exact_at(&mut b, PAGES * 0x1000).unwrap();
    assert!(
        b.iter().all(|&x| x == 0xee),
        "a copy wrote a page after its DMA_UNMAP returned"
    );
}

#[test]
fn map_count_is_bounded() {
    let ram = GuestRam::new();
    let file = FileMap::anonymous(0x1000).unwrap();
    let mut st = lock(&ram.state);
    for i in 0..MAX_MAPS as u64 {
        let t = Target {
            file: file.clone(),
            offset: 0,
            writable: true,
        };
        st.maps.insert(i * 0x1000, i * 0x1000 + 0x1000, t).unwrap();
    }
    drop(st);
    assert!(matches!(
        ram.map_fd(1 << 40, 0x1000, memfd(0x1000), 0, true),
        Err(MapError::Full(MAX_MAPS))
    ));
}

/// A page mapped after the data thread took its view is seen by an access that comes
/// after the map (the guest maps, writes a leaf, then posts the work that reads it): the
/// refusal falls back to the newest view. Before that fallback, a per-round view refused
/// such pages behind an IOMMU ("address outside the DMA maps" right after the DMA_MAP).
#[test]
fn a_map_published_after_the_view_was_taken_is_seen() {
    let fd = memfd(0x4000);
    let ram = GuestRam::new();
    ram.map_fd(0x1000, 0x1000, fd.try_clone().unwrap(), 0, true)
        .unwrap();
    let old = ram.snapshot();
    ram.map_fd(0x8000, 0x1000, fd.try_clone().unwrap(), 0x2000, true)
        .unwrap();
    // Every kind of access, through the view taken before the map.
    check(&old, 0x8000, 0x1000, true).unwrap();
    store_u64(&old, 0x8008, 0x5a5a).unwrap();
    assert_eq!(load_u64(&old, 0x8008).unwrap(), 0x5a5a);
    write(&old, 0x8100, b"late map").unwrap();
    copy(&old, 0x8100, 0x1100, 8).unwrap();
    let mut b = [0u8; 8];
    read(&old, 0x1100, &mut b).unwrap();
    assert_eq!(&b, b"late map");
    // What no view maps stays refused, with the first refusal's address.
    assert_eq!(
        read(&old, 0x20000, &mut b),
        Err(AddrError { addr: 0x20000 })
    );
    // A read-only map stays read-only in the newest view too.
    ram.map_fd(0xa000, 0x1000, fd, 0x3000, false).unwrap();
    assert!(write(&old, 0xa000, b"x").is_err());
    assert!(read(&old, 0xa000, &mut b).is_ok());
}
