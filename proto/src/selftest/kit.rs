//! What every selftest case uses: the [`Session`] (the open device and context 0), the
//! verdict type and its `check`, and the data helpers (patterns, COPY descriptors, buffer
//! contents). The cases import this file; nothing here imports a case.

use mnic_abi::{work, WorkDesc};

use crate::context::{Buffer, Context};
use crate::nic::Nic;

/// The context index the cases use.
pub const CTX: u16 = 0;
/// log2 of its work and completion queue sizes.
pub const QUEUE_LOG2: u8 = 6;

/// What the cases share: the open device and, once `context_enable` ran, context 0.
pub struct Session {
    /// The device.
    pub nic: Nic,
    /// Context 0.
    pub ctx: Option<Context>,
}

impl Session {
    /// Context 0, created now if no case has yet (so that a case runs alone too).
    pub fn ctx(&mut self) -> Result<(&mut Nic, &mut Context), String> {
        if self.ctx.is_none() {
            let c = Context::create(&mut self.nic, CTX, QUEUE_LOG2, QUEUE_LOG2)
                .map_err(e("create context 0"))?;
            self.ctx = Some(c);
        }
        Ok((&mut self.nic, self.ctx.as_mut().expect("just created")))
    }
}

/// A case's verdict: `Err` carries why it failed.
pub type CaseResult = Result<(), String>;

/// Fails with `what()` unless `cond`.
pub fn check(cond: bool, what: impl FnOnce() -> String) -> CaseResult {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

/// Turns any displayable error into a case failure with context.
pub fn e<E: std::fmt::Display>(ctx: &'static str) -> impl FnOnce(E) -> String {
    move |err| format!("{ctx}: {err}")
}

/// A recognisable byte pattern, different for every `salt`.
pub fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ (i >> 8) as u8 ^ salt)
        .collect()
}

/// A COPY descriptor (no `NOTIFY`: its completion is enough).
pub fn copy(src: u64, dst: u64, len: u32, tag: u64) -> WorkDesc {
    WorkDesc {
        opcode: work::COPY,
        len,
        tag,
        src,
        dst,
        ..Default::default()
    }
}

/// The contents of a buffer.
pub fn contents(nic: &Nic, b: &Buffer) -> Vec<u8> {
    nic.mem.read_vec(b.iova, b.len as usize)
}
