//! Pins every wire structure's size and field offsets to docs/spec.md.
use super::*;
use core::mem::{offset_of, size_of};

#[test]
fn hardware_structures_match_the_spec() {
    assert_eq!(size_of::<CtxEntry>(), 64);
    assert_eq!(offset_of!(CtxEntry, wq_size_log2), 0x04);
    assert_eq!(offset_of!(CtxEntry, cq_size_log2), 0x05);
    assert_eq!(offset_of!(CtxEntry, root), 0x08);
    assert_eq!(offset_of!(CtxEntry, wq_va), 0x10);
    assert_eq!(offset_of!(CtxEntry, cq_va), 0x18);
    assert_eq!(offset_of!(CtxEntry, shadow), 0x20);

    assert_eq!(size_of::<Shadow>(), 8);
    assert_eq!(Shadow::TAIL_OFFSET, 0x00);
    assert_eq!(Shadow::POLLING_OFFSET, 0x04);
    assert!(!Shadow::doorbell_needed(1, false));
    assert!(Shadow::doorbell_needed(0, false) && Shadow::doorbell_needed(1, true));

    assert_eq!(size_of::<Command>(), 32);
    assert_eq!(offset_of!(Command, ctx), 0x02);
    assert_eq!(offset_of!(Command, arg0), 0x08);
    assert_eq!(offset_of!(Command, arg2), 0x18);

    assert_eq!(size_of::<Event>(), 32);
    assert_eq!(offset_of!(Event, code), 0x04);
    assert_eq!(offset_of!(Event, addr), 0x08);
    assert_eq!(offset_of!(Event, id), 0x10);
    assert_eq!(offset_of!(Event, info), 0x18);

    assert_eq!(size_of::<WorkDesc>(), 64);
    assert_eq!(offset_of!(WorkDesc, len), 0x04);
    assert_eq!(offset_of!(WorkDesc, tag), 0x08);
    assert_eq!(offset_of!(WorkDesc, src), 0x10);
    assert_eq!(offset_of!(WorkDesc, dst), 0x18);
    assert_eq!(offset_of!(WorkDesc, op_size), 0x20);
    assert_eq!(offset_of!(WorkDesc, pattern), 0x24);
    assert_eq!(offset_of!(WorkDesc, ops), 0x28);
    assert_eq!(offset_of!(WorkDesc, rate), 0x30);
    assert_eq!(offset_of!(WorkDesc, seed), 0x38);

    assert_eq!(size_of::<Completion>(), 32);
    assert_eq!(offset_of!(Completion, status), 0x08);
    assert_eq!(offset_of!(Completion, flags), 0x0a);
    assert_eq!(offset_of!(Completion, detail), 0x0c);
    assert_eq!(offset_of!(Completion, bytes), 0x10);
    assert_eq!(offset_of!(Completion, fault_va), 0x18);
}

#[test]
fn user_abi_structures_have_no_padding() {
    assert_eq!(size_of::<MnicInfo>(), 32);
    assert_eq!(size_of::<MnicRegister>(), 32);
    assert_eq!(size_of::<MnicHandle>(), 8);
    assert_eq!(size_of::<MnicRange>(), 24);
    assert_eq!(size_of::<MnicQueues>(), 24);
    assert_eq!(size_of::<MnicPost>(), 8);
    assert_eq!(size_of::<MnicWait>(), 24);
    assert_eq!(size_of::<MnicCtxStats>(), 128);
    assert_eq!(size_of::<MnicDevStats>(), 256);
    assert_eq!(size_of::<MnicQuery>(), 48);
    assert_eq!(size_of::<MnicLatency>(), 256);
}

#[test]
fn ioctl_numbers_follow_the_linux_encoding() {
    // _IOR(0xB7, 0, 32 bytes) = dir 2, size 32, type 0xB7, nr 0.
    assert_eq!(MNIC_IOC_INFO, (2 << 30) | (32 << 16) | (0xB7 << 8));
    assert_eq!(MNIC_IOC_REGISTER, (3 << 30) | (32 << 16) | (0xB7 << 8) | 1);
    assert_eq!(MNIC_IOC_DEREGISTER, (1 << 30) | (8 << 16) | (0xB7 << 8) | 2);
    let all = [
        MNIC_IOC_INFO,
        MNIC_IOC_REGISTER,
        MNIC_IOC_DEREGISTER,
        MNIC_IOC_PREFETCH,
        MNIC_IOC_SETUP_QUEUES,
        MNIC_IOC_POST,
        MNIC_IOC_WAIT,
        MNIC_IOC_CTX_STATS,
        MNIC_IOC_DEV_STATS,
        MNIC_IOC_QUERY,
        MNIC_IOC_SHADOW,
        MNIC_IOC_SYNC,
        MNIC_IOC_CTX_LATENCY,
        MNIC_IOC_DEV_LATENCY,
    ];
    // _IO(0xB7, 10): no argument, no direction, size 0.
    assert_eq!(MNIC_IOC_SHADOW, (0xB7 << 8) | 10);
    assert_eq!(MNIC_IOC_CTX_LATENCY, 0x8100_b70c);
    for (nr, cmd) in all.iter().enumerate() {
        assert_eq!(cmd & 0xff, nr as u32, "ioctl numbers are dense and ordered");
    }
}

#[test]
fn register_map_is_aligned_and_within_bar0() {
    assert_eq!(reg::counter(counter::SLOTS - 1) + 8, 0x200);
    assert!(u64::from(reg::counter(counter::SLOTS)) <= BAR_REGS_SIZE);
    for off in [
        reg::CTX_TABLE_LO,
        reg::CMDQ_BASE_LO,
        reg::EVQ_BASE_LO,
        reg::COUNTERS,
    ] {
        assert_eq!(off % 8, 0, "64-bit register pairs are 8-byte aligned");
    }
    assert_eq!(counter::NAMES.len(), counter::COUNT as usize);
    // The fabric counters follow the counters and stay inside BAR0.
    assert_eq!(reg::FABRIC_COUNTERS, reg::counter(counter::SLOTS));
    assert_eq!(reg::FABRIC_COUNTERS % 8, 0);
    const { assert!(fabric_counter::COUNT <= fabric_counter::SLOTS) };
    assert_eq!(reg::fabric_counter(fabric_counter::SLOTS), 0x300);
    assert!(u64::from(reg::fabric_counter(fabric_counter::SLOTS)) <= BAR_REGS_SIZE);
    assert_eq!(fabric_counter::NAMES.len(), fabric_counter::COUNT as usize);
    assert_eq!(
        fabric_counter::NAMES[fabric_counter::FIN_DROPPED as usize],
        "fin_dropped"
    );
}

#[test]
fn pte_helpers_round_trip() {
    let e = pte::leaf_2m(0x4020_0000, true);
    assert_eq!(e & pte::ADDR_MASK, 0x4020_0000);
    assert_ne!(e & pte::H, 0);
    assert_eq!(e & pte::RESERVED_MASK, 0);
    assert_eq!(pte::index(0x7fff_ffff_f000, 4), 0xff);
    assert_eq!(pte::index(0x7fff_ffff_f000, 1), 0x1ff);
    assert_eq!(pte::index(0x20_0000, 2), 1);
}

#[test]
fn ring_rules_keep_one_slot_empty_and_flip_phase_each_pass() {
    assert_eq!(ring::pending(3, 3, 8), 0);
    assert_eq!(ring::free(3, 3, 8), 7);
    assert_eq!(ring::pending(6, 2, 8), 4, "tail wrapped past the end");
    assert_eq!(ring::free(3, 2, 8), 0, "tail just behind head: full");
    assert_eq!(
        ring::pending(9, 11, 8),
        2,
        "indices are taken modulo entries"
    );
    assert_eq!(ring::next(7, 8), 0);
    assert_eq!(ring::slot(17, 8), 1);
    assert!(ring::phase(0, 8) && ring::phase(7, 8));
    assert!(!ring::phase(8, 8) && !ring::phase(15, 8));
    assert!(ring::phase(16, 8));
}

#[test]
fn phase_helpers_touch_only_the_phase_bit() {
    let e = Event {
        flags: event::FLAG_WRITE,
        ..Event::default()
    };
    assert!(!e.phase() && e.is_new(false));
    assert_eq!(
        e.flags_with_phase(true),
        event::FLAG_WRITE | event::FLAG_PHASE
    );
    assert_eq!(Event::PHASE_OFFSET, 0x01);
    let c = Completion {
        flags: 0x8000 | completion::FLAG_PHASE,
        ..Completion::default()
    };
    assert!(c.phase() && c.is_new(true) && !c.is_new(false));
    assert_eq!(c.flags_with_phase(false), 0x8000);
    assert_eq!(Completion::PHASE_OFFSET, 0x0a);
}

#[test]
fn descriptor_rule_refuses_what_the_spec_refuses() {
    let copy = WorkDesc {
        opcode: work::COPY,
        len: 4096,
        src: 0x10_0000,
        dst: 0x20_0000,
        ..WorkDesc::default()
    };
    assert_eq!(copy.validate(), Ok(()));
    assert_eq!(
        WorkDesc {
            flags: 1 << 1,
            ..copy
        }
        .validate(),
        Err(DescError::UnknownFlags)
    );
    assert_eq!(
        WorkDesc {
            flags: work::FLAG_NOTIFY,
            ..copy
        }
        .validate(),
        Ok(())
    );
    assert_eq!(
        WorkDesc { opcode: 9, ..copy }.validate(),
        Err(DescError::UnknownOpcode)
    );
    assert_eq!(
        WorkDesc { len: 0, ..copy }.validate(),
        Err(DescError::Empty)
    );
    assert_eq!(
        WorkDesc {
            len: work::COPY_MAX + 1,
            ..copy
        }
        .validate(),
        Err(DescError::CopyTooLong)
    );
    assert_eq!(
        WorkDesc {
            dst: pte::VA_LIMIT - 4095,
            ..copy
        }
        .validate(),
        Err(DescError::BadRange)
    );
    assert_eq!(
        WorkDesc {
            dst: u64::MAX - 10,
            ..copy
        }
        .validate(),
        Err(DescError::BadRange)
    );
    assert_eq!(
        WorkDesc {
            dst: 0x10_0800,
            ..copy
        }
        .validate(),
        Err(DescError::Overlap)
    );
    assert_eq!(
        WorkDesc {
            dst: 0x10_1000,
            ..copy
        }
        .validate(),
        Ok(()),
        "adjacent is fine"
    );

    let traffic = WorkDesc {
        opcode: work::TRAFFIC,
        len: 1 << 20,
        src: 0x10_0000,
        op_size: 4096,
        ops: 10,
        ..WorkDesc::default()
    };
    assert_eq!(traffic.validate(), Ok(()));
    assert_eq!(
        WorkDesc {
            op_size: 0,
            ..traffic
        }
        .validate(),
        Err(DescError::BadOpSize)
    );
    assert_eq!(
        WorkDesc {
            op_size: work::TRAFFIC_OP_MAX + 1,
            ..traffic
        }
        .validate(),
        Err(DescError::BadOpSize)
    );
    assert_eq!(
        WorkDesc {
            len: 100,
            op_size: 101,
            ..traffic
        }
        .validate(),
        Err(DescError::BadOpSize)
    );
    assert_eq!(
        WorkDesc {
            pattern: 3,
            ..traffic
        }
        .validate(),
        Err(DescError::BadPattern)
    );
    assert_eq!(
        WorkDesc {
            ops: work::TRAFFIC_OPS_MAX + 1,
            ..traffic
        }
        .validate(),
        Err(DescError::TooManyOps)
    );
    assert_eq!(
        WorkDesc {
            opcode: work::NOP,
            ..WorkDesc::default()
        }
        .validate(),
        Ok(())
    );
}

#[test]
fn latency_buckets_are_powers_of_two_microseconds() {
    assert_eq!(latency_bucket(0), 0);
    assert_eq!(latency_bucket(1_999), 0);
    assert_eq!(latency_bucket(2_000), 1);
    assert_eq!(latency_bucket(3_999), 1);
    assert_eq!(latency_bucket(4_000), 2);
    assert_eq!(latency_bucket(299_000), 8);
    assert_eq!(latency_bucket(32_767_000), 14);
    assert_eq!(latency_bucket(32_768_000), 15);
    assert_eq!(latency_bucket(u64::MAX), LATENCY_BUCKETS - 1);
    for i in 1..LATENCY_BUCKETS {
        let start = latency_bucket_start_us(i);
        assert_eq!(
            latency_bucket(start * 1000),
            i,
            "bucket {i} starts at {start} us"
        );
        assert_eq!(latency_bucket(start * 1000 - 1), i - 1);
    }
}

#[test]
fn rma_descriptors_round_trip_their_remote_part() {
    let r = Remote {
        node: 2,
        ctx: 7,
        key: 0xdead_beef,
        va: 0x7000_0000,
    };
    let put = WorkDesc::rma(work::PUT, work::FLAG_NOTIFY, 9, 0x1000, r, 4096);
    assert_eq!(
        (put.src, put.dst, put.remote(), put.local()),
        (0x1000, r.va, r, 0x1000)
    );
    assert_eq!(put.validate(), Ok(()));
    let get = WorkDesc::rma(work::GET, 0, 9, 0x1000, r, 4096);
    assert_eq!(
        (get.src, get.dst, get.remote(), get.local()),
        (r.va, 0x1000, r, 0x1000)
    );
    assert_eq!(get.validate(), Ok(()));
    let bad = |f: fn(&mut WorkDesc)| {
        let mut d = put;
        f(&mut d);
        d.validate()
    };
    assert_eq!(bad(|d| d.len = 0), Err(DescError::Empty));
    assert_eq!(
        bad(|d| d.len = work::RMA_MAX + 1),
        Err(DescError::RmaTooLong)
    );
    assert_eq!(bad(|d| d.op_size = 0), Err(DescError::BadRemote));
    assert_eq!(
        bad(|d| d.pattern = u32::from(NODE_NONE)),
        Err(DescError::BadRemote)
    );
    assert_eq!(
        bad(|d| d.pattern = 2 | (NUM_CONTEXTS << 16)),
        Err(DescError::BadRemote)
    );
    assert_eq!(bad(|d| d.dst = pte::VA_LIMIT - 1), Err(DescError::BadRange));
    assert_eq!(bad(|d| d.seed = 1), Err(DescError::Reserved));
    assert_eq!(key_access::arg(5, key_access::WRITE), (1 << 33) | 5);
}

#[test]
fn message_descriptors_round_trip_and_validate() {
    let dest = Endpoint { node: 2, ctx: 7 };
    let send = WorkDesc::send(
        work::FLAG_NOTIFY,
        4,
        0x1000,
        100,
        dest,
        0xfeed_0000_0000_0001,
    );
    assert_eq!(send.opcode, work::SEND);
    assert_eq!(send.pattern, 2 | 7 << 16);
    assert_eq!(send.ops, 0xfeed_0000_0000_0001);
    assert_eq!(
        (send.dest(), send.match_bits()),
        (dest, 0xfeed_0000_0000_0001)
    );
    assert_eq!((send.dst, send.op_size, send.rate, send.seed), (0, 0, 0, 0));
    assert_eq!(send.validate(), Ok(()));
    let recv = WorkDesc::recv(0, 5, 0x2000, 4096, 0xab, 0xff);
    assert_eq!(
        (recv.opcode, recv.dst, recv.ops, recv.rate),
        (work::RECV, 0x2000, 0xab, 0xff)
    );
    assert_eq!((recv.match_bits(), recv.match_mask()), (0xab, 0xff));
    assert_eq!(
        (recv.src, recv.op_size, recv.pattern, recv.seed),
        (0, 0, 0, 0)
    );
    assert_eq!(recv.validate(), Ok(()));
    // Zero-length messages are allowed.
    assert_eq!(WorkDesc { len: 0, ..send }.validate(), Ok(()));
    assert_eq!(WorkDesc { len: 0, ..recv }.validate(), Ok(()));
    let bad = |d: WorkDesc, f: fn(&mut WorkDesc)| {
        let mut d = d;
        f(&mut d);
        d.validate()
    };
    for d in [send, recv] {
        assert_eq!(
            bad(d, |d| d.len = work::RMA_MAX + 1),
            Err(DescError::RmaTooLong)
        );
        assert_eq!(bad(d, |d| d.seed = 1), Err(DescError::Reserved));
        assert_eq!(bad(d, |d| d.op_size = 1), Err(DescError::Reserved));
        assert_eq!(bad(d, |d| d.flags = 1 << 3), Err(DescError::UnknownFlags));
    }
    assert_eq!(
        bad(send, |d| d.src = pte::VA_LIMIT - 1),
        Err(DescError::BadRange)
    );
    assert_eq!(bad(send, |d| d.dst = 1), Err(DescError::Reserved));
    assert_eq!(bad(send, |d| d.rate = 1), Err(DescError::Reserved));
    assert_eq!(
        bad(send, |d| d.pattern = u32::from(NODE_NONE)),
        Err(DescError::BadDest)
    );
    assert_eq!(
        bad(send, |d| d.pattern = 2 | (NUM_CONTEXTS << 16)),
        Err(DescError::BadDest)
    );
    assert_eq!(
        bad(recv, |d| d.dst = pte::VA_LIMIT - 1),
        Err(DescError::BadRange)
    );
    assert_eq!(bad(recv, |d| d.src = 1), Err(DescError::Reserved));
    assert_eq!(bad(recv, |d| d.pattern = 1), Err(DescError::Reserved));
    // The mask decides which bits count.
    assert!(tags_match(0x1234, 0x1200, 0xff00));
    assert!(!tags_match(0x1334, 0x1200, 0xff00));
    assert!(tags_match(u64::MAX, 0, 0));
    // A RECV completion carries the message's bits and sender.
    let c = Completion {
        detail: Endpoint { node: 3, ctx: 9 }.packed(),
        fault_va: 0xabcd,
        ..Completion::default()
    };
    assert_eq!(c.recv_sender(), Endpoint { node: 3, ctx: 9 });
    assert_eq!(c.recv_bits(), 0xabcd);
    assert_eq!(
        Endpoint::unpack(0xffff_ffff),
        Endpoint {
            node: 0xffff,
            ctx: 0xffff
        }
    );
}
