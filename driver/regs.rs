// SPDX-License-Identifier: GPL-2.0
//! BAR0 registers as types (spec §3), with their bit fields.
//!
//! `register!` needs literal offsets; the assertions at the end tie every one of them to the
//! shared ABI definition (`abi::reg`), so this file cannot drift from the device and the spec.

use kernel::io::register;

use crate::abi;

register! {
    /// "MNIC" (`abi::MNIC_ID_VALUE`).
    pub(crate) ID(u32) @ 0x000 {}

    /// Hardware version: major in the high half.
    pub(crate) VERSION(u32) @ 0x004 {
        31:16   major;
        15:0    minor;
    }

    /// Capabilities.
    pub(crate) CAPS(u32) @ 0x008 {
        6:6     fabric => bool;
        5:5     shadow => bool;
        3:3     doorbell_bar => bool;
        2:2     stale_check => bool;
        1:1     traffic_gen => bool;
        0:0     huge_2m => bool;
    }

    /// Number of hardware contexts.
    pub(crate) NUM_CONTEXTS(u32) @ 0x00c {}

    /// Enable, reset (self-clearing), strict mode.
    pub(crate) CONTROL(u32) @ 0x010 {
        2:2     strict => bool;
        1:1     reset => bool;
        0:0     enable => bool;
    }

    /// Device state.
    pub(crate) STATUS(u32) @ 0x014 {
        1:1     halted => bool;
        0:0     enabled => bool;
    }

    /// First device error since the last clear (spec §9 codes).
    pub(crate) ERROR_CODE(u32) @ 0x018 {}

    /// Context table bus address, low and high halves.
    pub(crate) CTX_TABLE_LO(u32) @ 0x020 {}
    pub(crate) CTX_TABLE_HI(u32) @ 0x024 {}

    /// Command ring.
    pub(crate) CMDQ_BASE_LO(u32) @ 0x030 {}
    pub(crate) CMDQ_BASE_HI(u32) @ 0x034 {}
    pub(crate) CMDQ_SIZE_LOG2(u32) @ 0x038 {}
    /// Producer index (doorbell).
    pub(crate) CMDQ_TAIL(u32) @ 0x03c {}
    /// Consumer index: commands before it are done.
    pub(crate) CMDQ_HEAD(u32) @ 0x040 {}

    /// Event ring.
    pub(crate) EVQ_BASE_LO(u32) @ 0x050 {}
    pub(crate) EVQ_BASE_HI(u32) @ 0x054 {}
    pub(crate) EVQ_SIZE_LOG2(u32) @ 0x058 {}
    /// Consumer index written by the driver.
    pub(crate) EVQ_HEAD(u32) @ 0x05c {}

    /// Interrupt causes (write 1 to clear).
    pub(crate) IRQ_STATUS(u32) @ 0x070 {
        2:2     error => bool;
        1:1     cmd_done => bool;
        0:0     event => bool;
    }

    /// Interrupt mask (same bits; set = suppressed).
    pub(crate) IRQ_MASK(u32) @ 0x074 {}

    /// The command queue's shadow page (spec §4a), bus address halves; 0 = none.
    pub(crate) SHADOW_BASE_LO(u32) @ 0x0a8 {}
    pub(crate) SHADOW_BASE_HI(u32) @ 0x0ac {}

    /// The device's spin budget (spec §4a): bit 31 overrides its default with bits 19:0.
    pub(crate) SPIN_US(u32) @ 0x0b0 {}

    /// The device's fabric node id (spec §14), `abi::NODE_NONE` without a fabric.
    pub(crate) FABRIC_NODE(u32) @ 0x0b8 {}
}

/// Each typed register sits at the offset the shared ABI gives it.
const _: () = {
    use kernel::io::register::Register;
    macro_rules! same {
        ($($name:ident),*) => {
            $(assert!(<$name as Register>::OFFSET == abi::reg::$name as usize);)*
        };
    }
    same!(
        ID,
        VERSION,
        CAPS,
        NUM_CONTEXTS,
        CONTROL,
        STATUS,
        ERROR_CODE,
        CTX_TABLE_LO,
        CTX_TABLE_HI,
        CMDQ_BASE_LO,
        CMDQ_BASE_HI,
        CMDQ_SIZE_LOG2,
        CMDQ_TAIL,
        CMDQ_HEAD,
        EVQ_BASE_LO,
        EVQ_BASE_HI,
        EVQ_SIZE_LOG2,
        EVQ_HEAD,
        IRQ_STATUS,
        IRQ_MASK,
        SHADOW_BASE_LO,
        SHADOW_BASE_HI,
        SPIN_US,
        FABRIC_NODE
    );
    assert!(abi::spin::OVERRIDE == 1 << 31);
    assert!(abi::control::ENABLE == 1 << 0 && abi::control::RESET == 1 << 1);
    assert!(abi::control::STRICT == 1 << 2);
    assert!(abi::status::ENABLED == 1 << 0 && abi::status::HALTED == 1 << 1);
    assert!(abi::irq::EVENT == 1 << 0 && abi::irq::CMD_DONE == 1 << 1);
    assert!(abi::irq::ERROR == 1 << 2);
    assert!(abi::caps::HUGE_2M == 1 << 0 && abi::caps::TRAFFIC_GEN == 1 << 1);
    assert!(abi::caps::STALE_CHECK == 1 << 2 && abi::caps::DOORBELL_BAR == 1 << 3);
    assert!(abi::caps::SHADOW == 1 << 5 && abi::caps::FABRIC == 1 << 6);
};
