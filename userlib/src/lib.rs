//! `mnic`: the user-space library of the mnic NIC (`/dev/mnicN`).
//!
//! mnic is a Myrinet-style NIC whose device translation follows the CPU page tables.
//! The driver never pins your memory: a registration only says *which* addresses the
//! device may use; translations are filled when the device faults on them and torn
//! down (with the device fenced) whenever Linux changes the mapping — swap-out,
//! munmap, fork/copy-on-write, mprotect, migration, exit. Registered memory stays
//! swappable, and a registration stays correct whatever happens to the pages.
//!
//! # Guide
//!
//! 1. **Open a context.** Each open of `/dev/mnicN` is one hardware context:
//!    [`Device::open_index`], [`Device::open`], or [`Device::list`] then
//!    [`Device::context`]. [`Context::info`] gives capabilities and limits.
//! 2. **Get memory the device may touch.** [`DmaBuffer`] is page-aligned anonymous
//!    memory ([`DmaBuffer::new_huge`] for 2 MiB pages). Because the device reads and
//!    writes it asynchronously, the CPU side is copy-only: [`DmaBuffer::write_from`],
//!    [`DmaBuffer::read_into`], [`DmaBuffer::fill`], [`DmaBuffer::to_vec`] use
//!    volatile accesses and no `&[u8]` into it ever exists. See [`DmaBuffer`] for the
//!    reasoning.
//! 3. **Register it.** [`Context::register`] returns a [`Registration`] that borrows
//!    both the context and the buffer and deregisters on drop, so it can never outlive
//!    the memory it covers. [`Access::PINNED`] is the classic pinned baseline;
//!    [`Access::PREFETCH`] fills the table up front. For memory that is not a
//!    `DmaBuffer` there is the `unsafe` [`Context::register_raw`], whose contract is
//!    spelled out there.
//! 4. **Set up queues** once with [`Context::setup_queues`] ([`QueueConfig`]): the
//!    library allocates the work and completion queues in registered memory, hands
//!    them to the driver and maps the doorbell page, plus a shadow page on a device
//!    that polls ([`DoorbellMode`]; falling back to the `MNIC_IOC_POST` system call).
//! 5. **Post work** built with [`Work::copy_buffers`], [`Work::copy`], [`Work::nop`] or
//!    [`Traffic`]; the builders check the limits of the spec (COPY ≤ 64 MiB, no
//!    overlap, canonical addresses, traffic op size and count) before anything reaches
//!    the device. [`Context::post`] writes the descriptor and rings the doorbell;
//!    [`Context::push`] + [`Context::ring`] batch.
//! 6. **Consume completions** with [`Context::poll`] (phase-bit convention, never
//!    blocks) or [`Context::wait`] (polls briefly, then sleeps in `MNIC_IOC_WAIT`). The completion queue has
//!    no head register, so at most [`Context::outstanding_limit`] items may be
//!    outstanding; [`Context::push`] refuses more with [`Error::QueueFull`].
//!    A failed item reports a [`WorkError`], e.g. `FaultAborted { errno: EFAULT }` when
//!    the device touched memory no registration covers. [`Context::sync`] is a device
//!    fence.
//! 7. **Reach another node's memory** (a device that is a node of a fabric,
//!    [`Caps::FABRIC`]): the target registers with [`Access::REMOTE`] and hands the
//!    initiator its [`Registration::remote_region`] (a [`RemoteRegion`]: endpoint, key,
//!    VA, length; plain data with a byte and a text form); the initiator posts
//!    [`Work::put`] or [`Work::get`] on its own context. Both ends are paged on demand;
//!    the target's device checks key, range and access before touching anything, and
//!    a refusal comes back as [`WorkError::Remote`] ([`RemoteError::BadKey`], …). See
//!    `examples/put_get.rs`.
//! 8. **Exchange tagged messages** (MX-style, `docs/fabric.md` 14.14), with no key: the
//!    receiver posts [`Work::recv`] (a buffer range, match bits and a mask), the sender
//!    [`Work::send`] (a buffer range, the receiver's [`Endpoint`] from
//!    [`Context::endpoint`], the message's match bits). A message of at most 1416 bytes
//!    goes eagerly in one packet; a longer one is pulled by the receiving device once a
//!    receive matches (rendezvous), so its SEND completes only then. A RECV does not block
//!    the work queue: **its completion can come after those of items posted behind it**,
//!    so match completions to items by [`WorkDone::tag`] (the library's own bookkeeping
//!    does). A RECV's completion carries [`WorkDone::message`]: the message's match bits,
//!    its sender, and [`Received::truncated`] when the message was longer than the buffer
//!    — the buffer then holds the message's first bytes and [`WorkDone::result`] is still
//!    `Ok(bytes)` (truncation loses the tail, not the bytes delivered; check the flag
//!    where a short message matters). See `examples/tagged_pingpong.rs`.
//! 9. **Observe**: [`Context::query`] counts the device's valid table entries over a
//!    range (watch them vanish after [`DmaBuffer::pageout`]), [`Context::ctx_stats`]
//!    and [`Context::dev_stats`] read the driver and device counters,
//!    [`Context::latency`] and [`Context::dev_latency`] the latency histograms.
//! 10. **Test the invariant** (a testing aid): with the `mnic_oracle` test module loaded,
//!     [`oracle::arm`] has an independent witness report every invalidation of this
//!     process to the device, which then counts any access through an older translation
//!     (module [`oracle`]).
//!
//! ```no_run
//! use std::time::Duration;
//! use mnic::{Access, Device, DmaBuffer, QueueConfig, Work};
//!
//! let ctx = Device::open_index(0)?;
//! ctx.setup_queues(QueueConfig::default())?;
//!
//! let src = DmaBuffer::new(1 << 20)?;
//! let dst = DmaBuffer::new(1 << 20)?;
//! src.fill(0xab);
//! let _rs = ctx.register(&src, Access::READ)?;
//! let _rd = ctx.register(&dst, Access::WRITE)?;
//!
//! let copy = Work::copy_buffers(&src, 0, &dst, 0, 1 << 20)?;
//! let bytes = ctx.run(&copy, Some(Duration::from_secs(5)))?;
//! assert_eq!(bytes, 1 << 20);
//! assert!(dst.to_vec().iter().all(|&b| b == 0xab));
//!
//! // Swap the source out: the device's entries go away, the next DMA faults them back.
//! src.pageout()?;
//! println!("valid entries after pageout: {}", ctx.query_buffer(&src)?.valid());
//! # Ok::<(), mnic::Error>(())
//! ```
//!
//! # Safety model
//!
//! The device is another writer of process memory that the compiler cannot see. The
//! safe API keeps that sound by construction: the only memory a safe program can
//! register is a [`DmaBuffer`] (accessed only with volatile copies) and the queue
//! memory (owned by the [`Context`]). The argument, one way of misuse at a time:
//!
//! - **A registration outliving its memory.** A [`Registration`] borrows its buffer,
//!   and the buffer also *counts* it until the driver has dropped it. Safe code can end
//!   the borrow without the drop (`mem::forget`); the count then stays up and the
//!   buffer keeps its mapping when dropped (it leaks it), so the allocator never places
//!   a Rust object where the device may still write.
//! - **A hardware context outliving its queue memory.** A [`Context`] closes its file
//!   (the driver stops the context behind a SYNC) before it unmaps its queues. That
//!   holds only while this `Context` owns the only descriptor: it implements
//!   `AsRawFd`, not `AsFd`, so duplicating the descriptor (which keeps the hardware
//!   context alive) takes `unsafe`, and the file is opened close-on-exec.
//! - **Fork.** A forked child's copies of the library's objects never unmap the
//!   doorbell address (the page is not copied to the child; the address is the
//!   child's to reuse) and never deregister the parent's registrations.
//! - **The shadow page.** With a shadow doorbell the process maps a page that the
//!   device reads (`tail`) and writes (`polling`) by physical address. The library
//!   touches its two words only as atomics through raw pointers (no `&[u8]` into it, no
//!   non-atomic access), so the device's stores are no more than another thread's. What
//!   the process writes there can hurt only itself: a tail is taken modulo the ring
//!   size and checked like a doorbell register value, and the page is the driver's
//!   (not registered memory, never reused for Rust objects while mapped). It is unmapped
//!   before the file closes, like the doorbell page, and not inherited across fork.
//! - **Wrong addresses in work.** Descriptors carry plain addresses, but the device can
//!   only reach memory through this context's registrations, so a wrong address fails
//!   with [`WorkError::FaultAborted`] instead of corrupting anything.
//! - **Remote access.** A PUT or GET reaches the target only through a key that the
//!   target's registration with [`Access::REMOTE`] made, inside that registration's
//!   range and rights; the target's device checks every packet before it translates
//!   anything, and the key dies with the registration (behind the same SYNC). So a
//!   [`RemoteRegion`], even a forged one, can only make a peer touch memory its owner
//!   registered for remote access; the library additionally refuses, before posting,
//!   a PUT or GET that leaves its local buffer or its region.
//! - **Tagged messages.** A SEND's buffer is read, and a RECV's written, through the
//!   sending or receiving context's own registrations, as a COPY's are; a peer can pull
//!   only the buffer of a SEND addressed to it while that SEND is being sent, and can
//!   write only into a receive that matched its message, never past the receive's
//!   length. [`Work::send`] and [`Work::recv`] refuse a range that leaves its buffer.
//!
//! # Fork
//!
//! A context belongs to the process that opened it. After `fork` the parent's device
//! writes land in the parent's pages (the driver write-protects and invalidates on
//! fork like the CPU does) and the child's copy-on-write view is untouched. A child
//! must open its own context; see `examples/fork.rs`.
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod access;
mod buffer;
mod context;
mod counters;
mod device;
mod error;
mod info;
mod latency;
pub mod oracle;
mod queue;
mod remote;
mod shadow;
mod sys;
mod work;

/// The ABI definitions this library speaks (`mnic-abi`), re-exported.
pub use mnic_abi as abi;

pub use access::Access;
pub use buffer::{Advice, DmaBuffer};
pub use context::{Context, Registration};
pub use counters::{ctx_stats_fields, DevCounters, TableEntries};
pub use device::{parse_device_name, Device, DEV_DIR, DEV_PREFIX};
pub use error::{Error, RemoteError, Result, WorkError};
pub use info::{Caps, Info};
pub use latency::{Bucket, Histogram, Latency};
pub use queue::{DoorbellMode, QueueConfig, Received, WorkDone};
pub use remote::{Endpoint, RemoteKey, RemoteRegion};
pub use work::{validate, Pattern, Traffic, Work};
