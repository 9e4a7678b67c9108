//! Typed builders for work descriptors (spec §11), checked before they reach the device.

use mnic_abi::{work, DescError, WorkDesc};

use crate::buffer::DmaBuffer;
use crate::error::{Error, Result};
use crate::remote::RemoteRegion;

/// One work item ready to post: a [`WorkDesc`] that passed the library's checks.
///
/// Built with [`Work::copy`], [`Work::copy_buffers`], [`Work::put`], [`Work::get`],
/// [`Work::nop`],
/// [`Traffic::build`] or [`Work::from_desc`]. By default a work item asks for a
/// `WORK_DONE` notification ([`notify`](Self::notify)) so that
/// [`Context::wait`](crate::Context::wait) can sleep for it, and gets its tag from the
/// context (a sequence number) unless [`with_tag`](Self::with_tag) sets one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Work {
    desc: WorkDesc,
    tag: Option<u64>,
}

/// Access pattern of a traffic-generator run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pattern {
    /// Sequential reads of the range (`PATTERN_SEQ_READ`).
    #[default]
    SeqRead,
    /// Sequential writes of the range (`PATTERN_SEQ_WRITE`); written data derives from
    /// the seed.
    SeqWrite,
    /// Random reads and writes (`PATTERN_RANDOM_RW`).
    RandomRw,
}

impl Pattern {
    /// The `WorkDesc::pattern` value.
    pub fn raw(self) -> u32 {
        match self {
            Pattern::SeqRead => work::PATTERN_SEQ_READ,
            Pattern::SeqWrite => work::PATTERN_SEQ_WRITE,
            Pattern::RandomRw => work::PATTERN_RANDOM_RW,
        }
    }

    /// True if the device writes the range (so it must be registered writable).
    pub fn writes(self) -> bool {
        !matches!(self, Pattern::SeqRead)
    }
}

impl Work {
    /// A NOP: completes without doing anything (useful to measure queue round trips).
    pub fn nop() -> Self {
        Self {
            desc: WorkDesc {
                opcode: work::NOP,
                flags: work::FLAG_NOTIFY,
                ..WorkDesc::default()
            },
            tag: None,
        }
    }

    /// A COPY of `len` bytes from VA `src` to VA `dst`.
    ///
    /// # Errors
    /// [`Error::InvalidWork`] if `len` is 0 or above [`work::COPY_MAX`], a range wraps or
    /// leaves the canonical lower half, or the two ranges overlap.
    pub fn copy(src: u64, dst: u64, len: u32) -> Result<Self> {
        Self::from_desc(WorkDesc {
            opcode: work::COPY,
            flags: work::FLAG_NOTIFY,
            len,
            src,
            dst,
            ..WorkDesc::default()
        })
    }

    /// A COPY of `len` bytes from `src[src_off..]` to `dst[dst_off..]`, bounds-checked
    /// against the buffers. Both must be registered on the context it is posted to
    /// (`src` readable, `dst` writable), or the item completes with `FAULT_ABORTED`.
    ///
    /// # Errors
    /// [`Error::InvalidWork`] if a range leaves its buffer or [`Work::copy`] refuses it.
    pub fn copy_buffers(
        src: &DmaBuffer,
        src_off: usize,
        dst: &DmaBuffer,
        dst_off: usize,
        len: usize,
    ) -> Result<Self> {
        let fits = |b: &DmaBuffer, off: usize| off.checked_add(len).is_some_and(|e| e <= b.len());
        if !fits(src, src_off) || !fits(dst, dst_off) {
            return Err(Error::InvalidWork("copy range leaves its buffer"));
        }
        let len =
            u32::try_from(len).map_err(|_| Error::InvalidWork(DescError::CopyTooLong.message()))?;
        Self::copy(src.va_at(src_off), dst.va_at(dst_off), len)
    }

    /// A PUT (remote write, spec §11): `len` bytes of `local[local_off..]` into
    /// `remote` at `remote_off`. `local` must be registered readable on the context the
    /// item is posted to (else the item fails with `FAULT_ABORTED`, as a COPY does);
    /// the target's device checks the key, the range and write access before it
    /// touches anything.
    ///
    /// # Errors
    /// [`Error::InvalidWork`] if a range leaves its buffer or region, is empty, or is
    /// longer than [`work::RMA_MAX`].
    pub fn put(
        local: &DmaBuffer,
        local_off: usize,
        remote: &RemoteRegion,
        remote_off: u64,
        len: usize,
    ) -> Result<Self> {
        Self::rma(work::PUT, local, local_off, remote, remote_off, len)
    }

    /// A GET (remote read, spec §11): `len` bytes of `remote` at `remote_off` into
    /// `local[local_off..]`, which must be registered writable on the context the item
    /// is posted to. The target's device checks the key, the range and read access.
    ///
    /// # Errors
    /// As [`put`](Self::put).
    pub fn get(
        local: &DmaBuffer,
        local_off: usize,
        remote: &RemoteRegion,
        remote_off: u64,
        len: usize,
    ) -> Result<Self> {
        Self::rma(work::GET, local, local_off, remote, remote_off, len)
    }

    /// A PUT from local VA `local` (any memory this context registered readable, as
    /// [`Work::copy`] takes VAs): the remote side is checked against `remote` as in
    /// [`put`](Self::put); the local side can only be checked by the device (an address
    /// no registration covers fails the item with `FAULT_ABORTED`).
    ///
    /// # Errors
    /// [`Error::InvalidWork`] if the remote range leaves its region, `len` is 0 or above
    /// [`work::RMA_MAX`], or the local range wraps.
    pub fn put_va(local: u64, remote: &RemoteRegion, remote_off: u64, len: u32) -> Result<Self> {
        Self::rma_va(work::PUT, local, remote, remote_off, len)
    }

    /// A GET into local VA `local` (registered writable on the context): see
    /// [`put_va`](Self::put_va).
    ///
    /// # Errors
    /// As [`put_va`](Self::put_va).
    pub fn get_va(local: u64, remote: &RemoteRegion, remote_off: u64, len: u32) -> Result<Self> {
        Self::rma_va(work::GET, local, remote, remote_off, len)
    }

    fn rma(
        opcode: u16,
        local: &DmaBuffer,
        local_off: usize,
        remote: &RemoteRegion,
        remote_off: u64,
        len: usize,
    ) -> Result<Self> {
        if local_off
            .checked_add(len)
            .is_none_or(|end| end > local.len())
        {
            return Err(Error::InvalidWork("PUT/GET range leaves its local buffer"));
        }
        let len =
            u32::try_from(len).map_err(|_| Error::InvalidWork(DescError::RmaTooLong.message()))?;
        Self::rma_va(opcode, local.va_at(local_off), remote, remote_off, len)
    }

    fn rma_va(
        opcode: u16,
        local: u64,
        remote: &RemoteRegion,
        remote_off: u64,
        len: u32,
    ) -> Result<Self> {
        if len == 0 {
            return Err(Error::InvalidWork(DescError::Empty.message()));
        }
        if len > work::RMA_MAX {
            return Err(Error::InvalidWork(DescError::RmaTooLong.message()));
        }
        remote
            .check(remote_off, u64::from(len))
            .map_err(|_| Error::InvalidWork("PUT/GET range leaves the remote region"))?;
        Self::from_desc(WorkDesc::rma(
            opcode,
            work::FLAG_NOTIFY,
            0,
            local,
            remote.remote_at(remote_off),
            len,
        ))
    }

    /// Wraps a raw descriptor after checking it as [`validate`] does.
    ///
    /// # Errors
    /// [`Error::InvalidWork`] naming the first problem found.
    pub fn from_desc(desc: WorkDesc) -> Result<Self> {
        validate(&desc)?;
        Ok(Self { desc, tag: None })
    }

    /// Sets the tag returned in the completion (default: a per-context sequence number).
    pub fn with_tag(mut self, tag: u64) -> Self {
        self.tag = Some(tag);
        self
    }

    /// Whether the device posts a `WORK_DONE` event when the item completes (default
    /// true). Items without it can only be seen by polling: a blocking
    /// [`wait`](crate::Context::wait) does not sleep for them.
    pub fn notify(mut self, on: bool) -> Self {
        if on {
            self.desc.flags |= work::FLAG_NOTIFY;
        } else {
            self.desc.flags &= !work::FLAG_NOTIFY;
        }
        self
    }

    /// True if the item asks for a `WORK_DONE` event.
    pub fn notifies(&self) -> bool {
        self.desc.flags & work::FLAG_NOTIFY != 0
    }

    /// The tag set with [`with_tag`](Self::with_tag), if any.
    pub fn tag(&self) -> Option<u64> {
        self.tag
    }

    /// The descriptor (its `tag` field is filled in when posted).
    pub fn desc(&self) -> &WorkDesc {
        &self.desc
    }
}

/// Checks a descriptor against the descriptor rules of spec §11: a thin wrapper over
/// [`WorkDesc::validate`], the one rule the device also applies, so the library refuses
/// before posting exactly what the device would refuse.
///
/// # Errors
/// [`Error::InvalidWork`] naming the first problem found.
pub fn validate(d: &WorkDesc) -> Result<()> {
    d.validate().map_err(|e| Error::InvalidWork(e.message()))
}

/// Builder of a traffic-generator work item: `ops` DMA operations of `op_size` bytes
/// inside `[start, start + len)` following a [`Pattern`].
///
/// ```
/// use mnic::{Pattern, Traffic};
/// let w = Traffic::new(0x7f00_0000_0000, 1 << 20)
///     .op_size(4096)
///     .ops(10_000)
///     .pattern(Pattern::RandomRw)
///     .seed(42)
///     .build()?;
/// assert_eq!(w.desc().ops, 10_000);
/// # Ok::<(), mnic::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traffic {
    start: u64,
    len: u32,
    op_size: u32,
    pattern: Pattern,
    ops: u64,
    rate: u64,
    seed: u64,
}

impl Traffic {
    /// Traffic over `[start, start + len)`: defaults are 4 KiB (or `len` if smaller)
    /// operations, one pass over the range, sequential reads, unthrottled, seed 0.
    pub fn new(start: u64, len: u32) -> Self {
        let op_size = len.clamp(1, 4096);
        Self {
            start,
            len,
            op_size,
            pattern: Pattern::SeqRead,
            ops: u64::from(len / op_size),
            rate: 0,
            seed: 0,
        }
    }

    /// Traffic over a whole buffer (at most 4 GiB − 1 of it).
    pub fn over(buf: &DmaBuffer) -> Self {
        Self::new(buf.va(), u32::try_from(buf.len()).unwrap_or(!0xfff))
    }

    /// Bytes per DMA operation (1..=65536).
    pub fn op_size(mut self, n: u32) -> Self {
        self.op_size = n;
        self
    }
    /// Number of operations (≤ 2^32).
    pub fn ops(mut self, n: u64) -> Self {
        self.ops = n;
        self
    }
    /// Access pattern.
    pub fn pattern(mut self, p: Pattern) -> Self {
        self.pattern = p;
        self
    }
    /// Operations per second, 0 = unthrottled.
    pub fn rate(mut self, r: u64) -> Self {
        self.rate = r;
        self
    }
    /// Pseudo-random seed (written data derives from it).
    pub fn seed(mut self, s: u64) -> Self {
        self.seed = s;
        self
    }

    /// Checks the parameters and makes the work item.
    ///
    /// # Errors
    /// [`Error::InvalidWork`] as [`validate`].
    pub fn build(&self) -> Result<Work> {
        Work::from_desc(WorkDesc {
            opcode: work::TRAFFIC,
            flags: work::FLAG_NOTIFY,
            len: self.len,
            src: self.start,
            op_size: self.op_size,
            pattern: self.pattern.raw(),
            ops: self.ops,
            rate: self.rate,
            seed: self.seed,
            ..WorkDesc::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mnic_abi::pte;

    const VA: u64 = 0x7f00_0000_0000;

    #[test]
    fn copy_limits() {
        assert!(Work::copy(VA, VA + (64 << 20), work::COPY_MAX).is_ok());
        assert!(matches!(
            Work::copy(VA, VA + (128 << 20), work::COPY_MAX + 1),
            Err(Error::InvalidWork(_))
        ));
        assert!(Work::copy(VA, VA + 4096, 0).is_err());
        // Overlap either way; touching is fine.
        assert!(Work::copy(VA, VA + 100, 101).is_err());
        assert!(Work::copy(VA + 100, VA, 101).is_err());
        assert!(Work::copy(VA, VA + 100, 100).is_ok());
        // Wrapping and non-canonical.
        assert!(Work::copy(u64::MAX - 10, VA, 100).is_err());
        assert!(Work::copy(pte::VA_LIMIT - 50, VA, 100).is_err());
        assert!(Work::copy(pte::VA_LIMIT - 100, VA, 100).is_ok());
    }

    #[test]
    fn copy_builder_fills_descriptor() {
        let w = Work::copy(VA, VA + 8192, 4096).unwrap().with_tag(9);
        let d = w.desc();
        assert_eq!(
            (d.opcode, d.len, d.src, d.dst),
            (work::COPY, 4096, VA, VA + 8192)
        );
        assert!(w.notifies());
        assert_eq!(w.tag(), Some(9));
        let w = w.notify(false);
        assert!(!w.notifies());
        assert_eq!(w.desc().flags, 0);
    }

    #[test]
    fn copy_buffers_bounds() {
        let a = DmaBuffer::new(8192).unwrap();
        let b = DmaBuffer::new(4096).unwrap();
        let w = Work::copy_buffers(&a, 4096, &b, 0, 4096).unwrap();
        assert_eq!(w.desc().src, a.va() + 4096);
        assert_eq!(w.desc().dst, b.va());
        assert!(Work::copy_buffers(&a, 4097, &b, 0, 4096).is_err());
        assert!(Work::copy_buffers(&a, 0, &b, 1, 4096).is_err());
        assert!(Work::copy_buffers(&a, usize::MAX, &b, 0, 2).is_err());
        // Same buffer, overlapping ranges.
        assert!(Work::copy_buffers(&a, 0, &a, 100, 200).is_err());
    }

    fn region(len: u64) -> RemoteRegion {
        RemoteRegion {
            endpoint: crate::Endpoint::new(2, 9).unwrap(),
            key: crate::RemoteKey::new(0x1234_5678).unwrap(),
            va: 0x7e00_0000_0000,
            len,
        }
    }

    #[test]
    fn put_and_get_descriptors() {
        let local = DmaBuffer::new(8192).unwrap();
        let r = region(1 << 20);
        let put = Work::put(&local, 100, &r, 5000, 1409).unwrap();
        let d = put.desc();
        assert_eq!(
            (d.opcode, d.len, d.src, d.dst),
            (work::PUT, 1409, local.va() + 100, r.va + 5000)
        );
        assert_eq!(d.flags, work::FLAG_NOTIFY);
        let remote = d.remote();
        assert_eq!((remote.node, remote.ctx, remote.key), (2, 9, 0x1234_5678));
        assert_eq!(d.local(), local.va() + 100);

        let get = Work::get(&local, 0, &r, (1 << 20) - 8192, 8192).unwrap();
        let d = get.desc();
        assert_eq!(
            (d.opcode, d.src, d.dst),
            (work::GET, r.va + (1 << 20) - 8192, local.va())
        );
        assert_eq!(d.remote().va, r.va + (1 << 20) - 8192);
        assert_eq!(d.local(), local.va());
        assert!(validate(d).is_ok());
    }

    #[test]
    fn put_and_get_refuse_out_of_range_use() {
        let local = DmaBuffer::new(8192).unwrap();
        let r = region(4096);
        for build in [Work::put, Work::get] {
            assert!(build(&local, 0, &r, 0, 4096).is_ok());
            // Local side leaves the buffer.
            assert!(build(&local, 4097, &r, 0, 4096).is_err());
            assert!(build(&local, usize::MAX, &r, 0, 2).is_err());
            // Remote side leaves the region.
            assert!(build(&local, 0, &r, 1, 4096).is_err());
            assert!(build(&local, 0, &r, u64::MAX, 1).is_err());
            // Empty.
            assert!(build(&local, 0, &r, 0, 0).is_err());
        }
        // Longer than RMA_MAX, even inside a big enough region.
        let big = DmaBuffer::new(work::RMA_MAX as usize + 4096).unwrap();
        let r = region(u64::from(work::RMA_MAX) + 4096);
        assert!(Work::put(&big, 0, &r, 0, work::RMA_MAX as usize).is_ok());
        assert!(matches!(
            Work::put(&big, 0, &r, 0, work::RMA_MAX as usize + 1),
            Err(Error::InvalidWork(m)) if m == DescError::RmaTooLong.message()
        ));
        // A region whose VA range wraps is refused by the abi's rule.
        let wraps = RemoteRegion {
            va: u64::MAX - 100,
            ..region(4096)
        };
        assert!(Work::get(&local, 0, &wraps, 0, 4096).is_err());
    }

    #[test]
    fn put_and_get_from_vas() {
        let r = region(8192);
        let w = Work::put_va(VA, &r, 4096, 4096).unwrap();
        assert_eq!((w.desc().src, w.desc().dst), (VA, r.va + 4096));
        let w = Work::get_va(VA, &r, 0, 8192).unwrap();
        assert_eq!((w.desc().src, w.desc().dst), (r.va, VA));
        assert!(Work::put_va(VA, &r, 4096, 4097).is_err());
        assert!(Work::get_va(VA, &r, 0, 0).is_err());
        // A local range that wraps or leaves the canonical half.
        assert!(Work::put_va(u64::MAX - 10, &r, 0, 100).is_err());
        assert!(Work::get_va(pte::VA_LIMIT - 10, &r, 0, 100).is_err());
    }

    #[test]
    fn raw_rma_descriptors_follow_the_abi() {
        let remote = mnic_abi::Remote {
            node: 1,
            ctx: 0,
            key: 0,
            va: VA,
        };
        let d = WorkDesc::rma(work::PUT, work::FLAG_NOTIFY, 0, VA + 0x10000, remote, 64);
        assert!(matches!(
            Work::from_desc(d),
            Err(Error::InvalidWork(m)) if m == DescError::BadRemote.message()
        ));
        let d = WorkDesc::rma(
            work::GET,
            0,
            0,
            VA + 0x10000,
            mnic_abi::Remote { key: 3, ..remote },
            64,
        );
        assert!(Work::from_desc(d).is_ok());
        assert!(Work::from_desc(WorkDesc { seed: 1, ..d }).is_err());
    }

    #[test]
    fn traffic_limits() {
        let t = Traffic::new(VA, 1 << 20);
        let w = t.build().unwrap();
        assert_eq!(w.desc().op_size, 4096);
        assert_eq!(w.desc().ops, 256);
        assert_eq!(w.desc().opcode, work::TRAFFIC);
        assert!(t.op_size(0).build().is_err());
        assert!(t.op_size(work::TRAFFIC_OP_MAX).build().is_ok());
        assert!(t.op_size(work::TRAFFIC_OP_MAX + 1).build().is_err());
        assert!(t.ops(work::TRAFFIC_OPS_MAX).build().is_ok());
        assert!(t.ops(work::TRAFFIC_OPS_MAX + 1).build().is_err());
        assert!(Traffic::new(VA, 0).build().is_err());
        assert!(Traffic::new(VA, 100).op_size(200).build().is_err());
        assert!(Traffic::new(u64::MAX - 5, 100).build().is_err());
        let w = t
            .pattern(Pattern::RandomRw)
            .rate(5)
            .seed(7)
            .build()
            .unwrap();
        assert_eq!(
            (w.desc().pattern, w.desc().rate, w.desc().seed),
            (work::PATTERN_RANDOM_RW, 5, 7)
        );
        assert!(Pattern::SeqWrite.writes() && !Pattern::SeqRead.writes());
    }

    #[test]
    fn raw_descriptors() {
        assert!(Work::from_desc(WorkDesc {
            opcode: 99,
            ..Default::default()
        })
        .is_err());
        assert!(Work::from_desc(WorkDesc {
            opcode: work::NOP,
            flags: 0x8000,
            ..Default::default()
        })
        .is_err());
        let d = WorkDesc {
            opcode: work::TRAFFIC,
            len: 4096,
            src: VA,
            op_size: 64,
            pattern: 3,
            ..Default::default()
        };
        assert!(validate(&d).is_err());
        assert!(validate(&WorkDesc { pattern: 2, ..d }).is_ok());
        // The message is the abi's, so library and device name a refusal alike.
        assert!(matches!(
            validate(&d),
            Err(Error::InvalidWork(m)) if m == DescError::BadPattern.message()
        ));
        assert_eq!(Work::nop().desc().opcode, work::NOP);
    }
}
