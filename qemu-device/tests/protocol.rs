//! Drives `mnic-device serve` as a vfio-user client over its UNIX socket.

mod common;

use std::io::{Read, Write};

use common::{le32, region_req, start, tmpdir, u32s};
use mnic_abi::{counter, reg, BAR_REGS, BAR_REGS_SIZE, MNIC_ID_VALUE, MNIC_VENDOR_ID};
use mnic_device::proto::{cmd, Header, FLAG_ERROR, FLAG_NO_REPLY};

#[test]
fn protocol_session() {
    let dir = tmpdir("proto");
    let (mut srv, mut c, ctl) = start(&dir, &[]);

    // VERSION
    let p = c.version_with(r#"{"capabilities":{"max_msg_fds":8}}"#);
    assert_eq!(&p[..4], &[0, 0, 0, 0]);
    assert_eq!(p.last(), Some(&0));
    assert!(String::from_utf8_lossy(&p[4..]).contains("max_data_xfer_size"));

    // DEVICE_GET_INFO
    let p = c.ok(cmd::DEVICE_GET_INFO, &u32s(&[16, 0, 0, 0]));
    assert_eq!(le32(&p, 2), 9);
    assert_eq!(le32(&p, 3), 5);

    // Region info: BAR0 and config.
    let p = c.ok(
        cmd::DEVICE_GET_REGION_INFO,
        &u32s(&[32, 0, BAR_REGS, 0, 0, 0, 0, 0]),
    );
    assert_eq!(
        u64::from_le_bytes(p[16..24].try_into().unwrap()),
        BAR_REGS_SIZE
    );
    assert_eq!(le32(&p, 1) & 4, 0, "no mmap");
    let p = c.ok(
        cmd::DEVICE_GET_REGION_INFO,
        &u32s(&[32, 0, 7, 0, 0, 0, 0, 0]),
    );
    assert_eq!(u64::from_le_bytes(p[16..24].try_into().unwrap()), 256);
    let (h, _) = c.call(
        cmd::DEVICE_GET_REGION_INFO,
        &u32s(&[32, 0, 99, 0, 0, 0, 0, 0]),
    );
    assert_ne!(h.flags & FLAG_ERROR, 0);

    // IRQ info: MSI-X has 2 vectors.
    let p = c.ok(cmd::DEVICE_GET_IRQ_INFO, &u32s(&[16, 0, 2, 0]));
    assert_eq!(le32(&p, 3), 2);

    // DMA_MAP without fd is accepted; DMA_UNMAP too.
    c.dma_map(0xc0000, 0x20000, 0, None);
    c.ok(cmd::DMA_UNMAP, &common::unmap_req(0, 0xc0000, 0x20000));

    // Config space vendor id and BAR0 ID register.
    let d = c.region_read(7, 0, 4);
    assert_eq!(u16::from_le_bytes([d[0], d[1]]), MNIC_VENDOR_ID);
    assert_eq!(c.read(reg::ID), MNIC_ID_VALUE);

    // A bogus command with a payload gets an error reply; the stream stays in sync.
    let (h, p) = c.call(0x7777, &[0xab; 40]);
    assert_ne!(h.flags & FLAG_ERROR, 0);
    assert!(p.is_empty());
    // An oversized read is refused without allocating.
    let (h, _) = c.call(cmd::REGION_READ, &region_req(BAR_REGS, 0, u32::MAX, &[]));
    assert_ne!(h.flags & FLAG_ERROR, 0);
    // A bad-width BAR0 read gives all-ones.
    assert_eq!(c.region_read(BAR_REGS, 0, 2), vec![0xff, 0xff]);
    // A posted write gets no reply; the next request's reply comes first.
    let w = region_req(BAR_REGS, reg::IRQ_MASK.into(), 4, &3u32.to_le_bytes());
    c.send(cmd::REGION_WRITE, FLAG_NO_REPLY, &w);
    assert_eq!(c.read(reg::IRQ_MASK), 3);
    let p = c.ok(cmd::DEVICE_GET_INFO, &u32s(&[16, 0, 0, 0]));
    assert_eq!(le32(&p, 2), 9);

    // The stats subcommand sees the bad access; the PUT/GET statistics follow the
    // counters.
    let text = common::stats(&ctl);
    let (rma, counters): (Vec<&str>, Vec<&str>) = text.lines().partition(|l| l.starts_with("rma_"));
    assert_eq!(counters.len(), counter::NAMES.len(), "{text}");
    assert!(rma.contains(&"rma_put_served 0"), "{text}");
    assert!(text.contains("bad_mmio 1\n"), "{text}");

    // Disconnect: the server exits 0.
    drop(c);
    let st = srv.child.wait().unwrap();
    assert!(st.success(), "{st:?}");
}

#[test]
fn garbage_header_does_not_hang_or_panic() {
    let dir = tmpdir("garbage");
    let (mut srv, mut c, _) = start(&dir, &[]);
    // Oversized message: drained and refused, then the session continues.
    let h = Header {
        msg_id: 1,
        command: cmd::REGION_WRITE,
        size: (2 << 20) + 16,
        ..Header::default()
    };
    c.s.write_all(&h.encode()).unwrap();
    let junk = vec![0u8; 2 << 20];
    let writer = {
        let mut s = c.s.try_clone().unwrap();
        std::thread::spawn(move || s.write_all(&junk).unwrap())
    };
    let (h, _) = c.recv();
    writer.join().unwrap();
    assert_ne!(h.flags & FLAG_ERROR, 0);
    assert_eq!(c.read(reg::ID), MNIC_ID_VALUE);
    // A header claiming less than its own size: the server closes the connection.
    let h = Header {
        size: 3,
        ..Header::default()
    };
    c.s.write_all(&h.encode()).unwrap();
    let mut b = [0u8; 1];
    assert_eq!(c.s.read(&mut b).unwrap_or(0), 0);
    let _ = srv.child.wait().unwrap();
}
