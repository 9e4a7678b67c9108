//! [`Context`]: one open `/dev/mnicN` file, i.e. one hardware context.

use std::cell::OnceCell;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mnic_abi as abi;
use mnic_abi::reg_flags;

use crate::access::Access;
use crate::buffer::DmaBuffer;
use crate::counters::{DevCounters, TableEntries};
use crate::error::{Error, Result};
use crate::info::Info;
use crate::latency::Latency;
use crate::queue::{DoorbellMode, Queue, QueueConfig, WorkDone};
use crate::remote::{Endpoint, RemoteKey, RemoteRegion};
use crate::shadow;
use crate::sys::{self, Command, DoorbellPage, ShadowPage};
use crate::work::Work;

/// How the context rings its doorbell, once queues are set up.
#[derive(Debug)]
enum Doorbell {
    /// Every tail goes to the shadow page; the mapped doorbell is written only when the
    /// device is not polling (spec §4a).
    Shadow {
        shadow: ShadowPage,
        page: DoorbellPage,
    },
    /// Every tail is written to the mapped doorbell register (one trapped write each).
    Mapped(DoorbellPage),
    /// `MNIC_IOC_POST` (which also writes the shadow page, if the context has one).
    Syscall,
}

/// One hardware context: an open `/dev/mnicN` file.
///
/// Everything the device does for this process goes through its context: memory
/// registrations ([`register`](Self::register)), the work and completion queues
/// ([`setup_queues`](Self::setup_queues), [`post`](Self::post),
/// [`poll`](Self::poll), [`wait`](Self::wait)), translation prefetch and queries, and
/// counters. Dropping the context closes the file: the driver disables the context
/// behind a SYNC and drops every registration.
///
/// The context belongs to the process (mm) that opened it. After `fork`, a child must
/// not use an inherited context: it still addresses the parent's memory. The library
/// makes dropping one in the child harmless (registrations are not deregistered from a
/// process other than the opener), but a child should open its own context.
///
/// Methods take `&self` so that live [`Registration`]s (which borrow the context) do not
/// get in the way of posting work; the ring state is behind a `RefCell`, so a
/// `Context` is `Send` but not `Sync`.
#[derive(Debug)]
pub struct Context {
    // Field order is drop order: the doorbell mapping holds a file reference, so it
    // goes first; then the file closes (the driver tears the context down, fenced by a
    // SYNC); only then is the queue memory unmapped.
    doorbell: OnceCell<Doorbell>,
    fd: OwnedFd,
    queue: OnceCell<Queue>,
    info: Info,
    path: PathBuf,
    owner: i32,
}

/// Longest single `MNIC_IOC_WAIT` sleep: `WORK_DONE` events can be dropped when the
/// event queue overflows (spec §9), so a waiter re-checks its completion queue at least
/// this often.
const WAIT_SLICE: Duration = Duration::from_millis(100);

/// How long [`Context::wait`] polls the completion queue before it sleeps in
/// `MNIC_IOC_WAIT`. A polling device completes a small item in a few microseconds,
/// less than the system call and the interrupt's wake-up cost; but under emulation the
/// device's thread may be descheduled for tens of microseconds, and a waiter that gave
/// up too early pays an interrupt and, since the device then sleeps too, a trapped
/// doorbell for its next post. Longer waits still sleep, so an idle waiter burns at most
/// this much CPU per call.
pub(crate) const WAIT_SPIN: Duration = Duration::from_micros(100);

impl Context {
    /// Opens `path` as a new context and reads its [`Info`].
    ///
    /// # Errors
    /// See [`Device::open`](crate::Device::open).
    pub fn open(path: &Path) -> Result<Context> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(|source| match source.kind() {
                io::ErrorKind::NotFound => Error::NoDevice(Some(path.to_owned())),
                _ => Error::Open {
                    path: path.to_owned(),
                    source,
                },
            })?;
        let fd = OwnedFd::from(file);
        let mut raw = abi::MnicInfo::default();
        sys::ioctl(fd.as_fd(), &mut raw)?;
        if raw.abi_version != abi::UABI_VERSION {
            return Err(Error::AbiMismatch {
                driver: raw.abi_version,
                library: abi::UABI_VERSION,
            });
        }
        Ok(Context {
            doorbell: OnceCell::new(),
            fd,
            queue: OnceCell::new(),
            info: raw.into(),
            path: path.to_owned(),
            owner: sys::getpid(),
        })
    }

    /// Identity and limits of the device and of this context (read at open).
    pub fn info(&self) -> &Info {
        &self.info
    }

    /// This context's address on the fabric (the device's node id and this context's
    /// index), `None` when the device is not a node of a fabric. Peers reach the context
    /// only while it is enabled, i.e. once [`setup_queues`](Self::setup_queues) has
    /// run (before, their PUT and GET fail with
    /// [`RemoteError::NoContext`](crate::RemoteError::NoContext)).
    pub fn endpoint(&self) -> Option<Endpoint> {
        Endpoint::new(u32::from(self.info.node?), self.info.ctx)
    }

    /// The device node this context was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when called from the process that opened the context.
    pub fn is_owner(&self) -> bool {
        sys::getpid() == self.owner
    }

    // ------------------------------------------------------------ registration

    /// Registers all of `buf` with `access`; the registration lives until the returned
    /// value is dropped and cannot outlive the buffer or the context.
    ///
    /// # Errors
    /// [`Error::TooManyRegistrations`], [`Error::InvalidArgument`] (bad flags),
    /// [`Error::DeviceGone`], or what pinning fails with for [`Access::PINNED`].
    pub fn register<'a>(&'a self, buf: &'a DmaBuffer, access: Access) -> Result<Registration<'a>> {
        self.register_range(buf, 0, buf.len(), access)
    }

    /// Registers `len` bytes of `buf` from `offset` (page aligned; `len` is rounded up
    /// to whole pages).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a misaligned or out-of-range part; else as
    /// [`register`](Self::register).
    pub fn register_range<'a>(
        &'a self,
        buf: &'a DmaBuffer,
        offset: usize,
        len: usize,
        access: Access,
    ) -> Result<Registration<'a>> {
        let page = sys::page_size();
        let len = len.next_multiple_of(page);
        if !offset.is_multiple_of(page)
            || len == 0
            || offset.checked_add(len).is_none_or(|e| e > buf.len())
        {
            return Err(Error::InvalidInput(
                "registration must be whole pages inside the buffer",
            ));
        }
        // SAFETY: the range is inside `buf`, whose contents Rust only touches through
        // volatile copies. The returned registration borrows `buf` for 'a and is counted in
        // it: the buffer keeps its mapping while the count is up, even if the registration
        // is forgotten instead of dropped, so the memory is never reused while registered.
        let mut reg = unsafe { self.register_raw(buf.va_at(offset), len as u64, access) }?;
        buf.hold();
        reg.buf = Some(buf);
        Ok(reg)
    }

    /// Registers `[addr, addr + len)` (page aligned, whole pages) of this process.
    ///
    /// The driver never pins (except with [`Access::PINNED`]): it follows the page
    /// tables, so the range need not even be mapped yet, and munmap, swap-out or fork
    /// of it are handled. What the *library* cannot check is how Rust code uses the
    /// memory while the device may access it.
    ///
    /// ```no_run
    /// # use mnic::{Access, Device};
    /// let ctx = Device::open_index(0)?;
    /// let len = 1 << 20;
    /// // Memory from elsewhere (here a raw mmap); Rust holds no reference into it.
    /// // SAFETY: a fresh anonymous mapping, checked below.
    /// let p = unsafe {
    ///     libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE,
    ///                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
    /// };
    /// assert_ne!(p, libc::MAP_FAILED);
    /// // SAFETY: the mapping is accessed only through raw pointers while work is in
    /// // flight, and is unmapped only after the registration is dropped.
    /// let reg = unsafe { ctx.register_raw(p as u64, len as u64, Access::READ_WRITE)? };
    /// // ... post work over it ...
    /// drop(reg);
    /// // SAFETY: our mapping, no longer registered.
    /// unsafe { libc::munmap(p, len) };
    /// # Ok::<(), mnic::Error>(())
    /// ```
    ///
    /// # Safety
    /// Until the returned registration is dropped:
    /// - any work item posted on this context may make the device read and (with
    ///   [`Access::WRITE`]) write the range at any time, behind the compiler's back. No
    ///   Rust reference (`&T`, `&mut T`, slices) to memory in the range may be live
    ///   while work that could touch it is in flight; access it only through raw
    ///   pointers with volatile or copy semantics, or when nothing is in flight;
    /// - the range must not be unmapped and then reused for other Rust objects (for
    ///   example by the allocator), because the registration would then cover them: the
    ///   device follows whatever is mapped at the address. Deregister first.
    ///
    /// # Errors
    /// As [`register`](Self::register); [`Error::InvalidArgument`] for an unaligned,
    /// empty or wrapping range.
    pub unsafe fn register_raw(
        &self,
        addr: u64,
        len: u64,
        access: Access,
    ) -> Result<Registration<'_>> {
        let mut r = abi::MnicRegister {
            addr,
            len,
            flags: access.bits(),
            ..Default::default()
        };
        sys::ioctl(self.fd.as_fd(), &mut r)?;
        Ok(Registration {
            ctx: self,
            handle: r.handle,
            addr,
            len,
            access,
            rkey: RemoteKey::new(r.rkey),
            buf: None,
        })
    }

    fn deregister_handle(&self, handle: u32) -> Result<()> {
        let mut h = abi::MnicHandle { handle, rsvd: 0 };
        sys::ioctl(self.fd.as_fd(), &mut h)
    }

    /// Fills the device's translations for `[addr, addr + len)` now (the range must be
    /// registered). With `write`, writable translations are made, which breaks
    /// copy-on-write sharing now rather than at the device's first write.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad range, [`Error::BadAddress`] if it is not
    /// mapped or not registered with the needed access.
    pub fn prefetch(&self, addr: u64, len: u64, write: bool) -> Result<()> {
        let mut r = abi::MnicRange {
            addr,
            len,
            flags: if write { abi::RANGE_FLAG_WRITE } else { 0 },
            rsvd: 0,
        };
        sys::ioctl(self.fd.as_fd(), &mut r)
    }

    /// Counts the valid device table entries over `[addr, addr + len)` (page aligned).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad range.
    pub fn query(&self, addr: u64, len: u64) -> Result<TableEntries> {
        let mut q = abi::MnicQuery {
            addr,
            len,
            ..Default::default()
        };
        sys::ioctl(self.fd.as_fd(), &mut q)?;
        Ok(TableEntries {
            valid_4k: q.valid_4k,
            valid_2m: q.valid_2m,
            writable: q.writable,
            pinned: q.pinned,
        })
    }

    /// [`query`](Self::query) over a whole buffer.
    pub fn query_buffer(&self, buf: &DmaBuffer) -> Result<TableEntries> {
        self.query(buf.va(), buf.len() as u64)
    }

    // ------------------------------------------------------------ counters

    /// This context's driver counters.
    pub fn ctx_stats(&self) -> Result<abi::MnicCtxStats> {
        let mut s = abi::MnicCtxStats::default();
        sys::ioctl(self.fd.as_fd(), &mut s)?;
        Ok(s)
    }

    /// The device's counters.
    pub fn dev_stats(&self) -> Result<DevCounters> {
        let mut s = abi::MnicDevStats::default();
        sys::ioctl(self.fd.as_fd(), &mut s)?;
        Ok(DevCounters(s))
    }

    /// This context's latency histograms (`MNIC_IOC_CTX_LATENCY`): its SYNC waits and
    /// device faults since it was opened.
    ///
    /// # Errors
    /// [`Error::DeviceGone`]; [`Error::NotSupported`] from a driver without the request.
    pub fn latency(&self) -> Result<Latency> {
        let mut l = sys::CtxLatency::default();
        sys::ioctl(self.fd.as_fd(), &mut l)?;
        Ok(l.0.into())
    }

    /// The device's latency histograms (`MNIC_IOC_DEV_LATENCY`): every context's SYNC waits
    /// and device faults since the driver bound it.
    ///
    /// # Errors
    /// As [`latency`](Self::latency).
    pub fn dev_latency(&self) -> Result<Latency> {
        let mut l = sys::DevLatency::default();
        sys::ioctl(self.fd.as_fd(), &mut l)?;
        Ok(l.0.into())
    }

    /// A device fence (`MNIC_IOC_SYNC`): posts a SYNC on the command queue and returns
    /// once the device has executed it and every command before it.
    ///
    /// # Errors
    /// [`Error::DeviceGone`]; [`Error::NotSupported`] from a driver without the request.
    pub fn sync(&self) -> Result<()> {
        sys::command(self.fd.as_fd(), Command::Sync)
    }

    // ------------------------------------------------------------ queues

    /// Allocates and registers the work and completion queues, hands them to the driver
    /// (`MNIC_IOC_SETUP_QUEUES`, which enables the context) and sets up the doorbell.
    /// Once per context.
    ///
    /// With [`DoorbellMode::Shadow`] (or [`DoorbellMode::Auto`] on a device with
    /// `CAPS.SHADOW`) the context first asks for a shadow page (`MNIC_IOC_SHADOW`) and maps
    /// it with the doorbell page once the queues are set up.
    ///
    /// # Errors
    /// [`Error::QueuesBusy`] if already done, [`Error::InvalidInput`] for sizes out of
    /// range, the errors of registration and `SETUP_QUEUES`; with
    /// [`DoorbellMode::Shadow`] the error of `MNIC_IOC_SHADOW` (nothing is set up then:
    /// the call may be repeated with another mode); with [`DoorbellMode::Mapped`] or
    /// [`DoorbellMode::Shadow`] the error of a page mmap (the queues are then set up
    /// nonetheless, with the system-call doorbell).
    pub fn setup_queues(&self, cfg: QueueConfig) -> Result<()> {
        if self.queue.get().is_some() {
            return Err(Error::QueuesBusy { op: "SETUP_QUEUES" });
        }
        let q = Queue::new(cfg)?;
        // The shadow page must be asked for before SETUP_QUEUES (which puts its address
        // into the context entry). From then on the device takes the tail from that page
        // only, so a context that has one never uses the plain mapped doorbell.
        let shadow = match cfg.doorbell {
            DoorbellMode::Shadow => {
                sys::command(self.fd.as_fd(), Command::Shadow)?;
                true
            }
            DoorbellMode::Auto => {
                self.info.caps.contains(crate::Caps::SHADOW)
                    && sys::command(self.fd.as_fd(), Command::Shadow).is_ok()
            }
            DoorbellMode::Mapped | DoorbellMode::Syscall => false,
        };
        // Registered READ|WRITE: the device reads descriptors and writes completions
        // through this context's translation. The registration is never removed: it
        // ends with the context (the queue memory outlives the file, see field order).
        let mut r = abi::MnicRegister {
            addr: q.mem().va(),
            len: q.mem().len() as u64,
            flags: reg_flags::READ | reg_flags::WRITE | reg_flags::PREFETCH,
            ..Default::default()
        };
        sys::ioctl(self.fd.as_fd(), &mut r)?;
        let mut setup = abi::MnicQueues {
            wq_addr: q.wq_va(),
            cq_addr: q.cq_va(),
            wq_size_log2: cfg.wq_log2.into(),
            cq_size_log2: cfg.cq_log2.into(),
        };
        if let Err(e) = sys::ioctl(self.fd.as_fd(), &mut setup) {
            let _ = self.deregister_handle(r.handle);
            return Err(e);
        }
        // The driver now uses the queue memory: from here on it must live as long as
        // the context, whatever happens next.
        let _ = self.queue.set(q);
        let (doorbell, result) = if shadow {
            // Both pages or the system call: `MNIC_IOC_POST` writes the shadow page itself.
            match self.map_shadow() {
                Ok(d) => (d, Ok(())),
                Err(e) if cfg.doorbell == DoorbellMode::Shadow => (Doorbell::Syscall, Err(e)),
                Err(_) => (Doorbell::Syscall, Ok(())),
            }
        } else if cfg.doorbell == DoorbellMode::Syscall {
            (Doorbell::Syscall, Ok(()))
        } else {
            // Mapped, or Auto without a shadow page: the old path, every tail trapped.
            match DoorbellPage::map(self.fd.as_fd()) {
                Ok(p) => (Doorbell::Mapped(p), Ok(())),
                Err(e) if cfg.doorbell == DoorbellMode::Mapped => (Doorbell::Syscall, Err(e)),
                Err(_) => (Doorbell::Syscall, Ok(())),
            }
        };
        let _ = self.doorbell.set(doorbell);
        result
    }

    /// Maps the shadow page and the doorbell page (for when the device sleeps).
    fn map_shadow(&self) -> Result<Doorbell> {
        Ok(Doorbell::Shadow {
            shadow: ShadowPage::map(self.fd.as_fd())?,
            page: DoorbellPage::map(self.fd.as_fd())?,
        })
    }

    fn queue(&self) -> Result<&Queue> {
        self.queue.get().ok_or(Error::QueuesNotSetUp)
    }

    /// The queue configuration, once set up.
    pub fn queue_config(&self) -> Option<QueueConfig> {
        let mut c = *self.queue.get()?.config();
        c.doorbell = match self.doorbell.get()? {
            Doorbell::Shadow { .. } => DoorbellMode::Shadow,
            Doorbell::Mapped(_) => DoorbellMode::Mapped,
            Doorbell::Syscall => DoorbellMode::Syscall,
        };
        Some(c)
    }

    /// Writes `work` into the work queue without ringing the doorbell (batch several,
    /// then [`ring`](Self::ring)); returns its tag.
    ///
    /// # Errors
    /// [`Error::QueuesNotSetUp`]; [`Error::QueueFull`] when
    /// [`outstanding_limit`](Self::outstanding_limit) items are outstanding (consume
    /// completions first).
    pub fn push(&self, work: &Work) -> Result<u64> {
        self.queue()?.push(work)
    }

    /// Tells the device about every pushed descriptor. With a shadow page: the tail is
    /// stored there, and the mapped doorbell is written only if the device is not
    /// polling (spec §4a); otherwise one 32-bit store to the mapped doorbell, or
    /// `MNIC_IOC_POST`. Does nothing if nothing was pushed since.
    ///
    /// # Errors
    /// [`Error::QueuesNotSetUp`]; the errors of `MNIC_IOC_POST` (the next ring retries).
    pub fn ring(&self) -> Result<()> {
        let q = self.queue()?;
        let prev = q.rung();
        let Some(tail) = q.take_tail() else {
            return Ok(());
        };
        match self.doorbell.get() {
            Some(Doorbell::Shadow { shadow, page }) => {
                if shadow::publish(&shadow.words(), tail) {
                    page.ring(tail);
                }
            }
            Some(Doorbell::Mapped(page)) => page.ring(tail),
            _ => {
                let mut p = abi::MnicPost {
                    wq_tail: tail,
                    rsvd: 0,
                };
                if let Err(e) = sys::ioctl(self.fd.as_fd(), &mut p) {
                    q.unring(prev);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// [`push`](Self::push) then [`ring`](Self::ring); returns the item's tag.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use mnic::{Access, Device, DmaBuffer, QueueConfig, Work};
    /// let ctx = Device::open_index(0)?;
    /// ctx.setup_queues(QueueConfig::default())?;
    /// let (a, b) = (DmaBuffer::new(1 << 16)?, DmaBuffer::new(1 << 16)?);
    /// let (_ra, _rb) = (ctx.register(&a, Access::READ)?, ctx.register(&b, Access::WRITE)?);
    /// // Sixteen 4 KiB copies in one doorbell, then collect the completions.
    /// for i in 0..16 {
    ///     ctx.push(&Work::copy_buffers(&a, i * 4096, &b, i * 4096, 4096)?)?;
    /// }
    /// ctx.ring()?;
    /// while ctx.outstanding() > 0 {
    ///     let done = ctx.wait(Some(Duration::from_secs(1)))?;
    ///     done.result()?;
    /// }
    /// # Ok::<(), mnic::Error>(())
    /// ```
    pub fn post(&self, work: &Work) -> Result<u64> {
        let tag = self.push(work)?;
        self.ring()?;
        Ok(tag)
    }

    /// Consumes the next completion if the device has written one (never blocks).
    ///
    /// # Errors
    /// [`Error::QueuesNotSetUp`].
    pub fn poll(&self) -> Result<Option<WorkDone>> {
        Ok(self.queue()?.poll())
    }

    /// Waits for the next completion; `None` waits without limit. Completions come in
    /// posting order.
    ///
    /// It first polls the completion queue for a short spin (100 µs): a small item on a
    /// polling device completes sooner than a system call and a wake-up would take.
    /// After that it sleeps in `MNIC_IOC_WAIT` until the oldest outstanding notifying
    /// item has completed.
    ///
    /// # Errors
    /// [`Error::TimedOut`], [`Error::Interrupted`] (a signal; call again),
    /// [`Error::NothingToWaitFor`] if nothing is outstanding,
    /// [`Error::DeviceGone`], [`Error::QueuesNotSetUp`].
    pub fn wait(&self, timeout: Option<Duration>) -> Result<WorkDone> {
        let q = self.queue()?;
        let start = Instant::now();
        let deadline = timeout.map(|t| start + t);
        let spin_until = deadline.map_or(start + WAIT_SPIN, |d| d.min(start + WAIT_SPIN));
        if let Some(d) = q.spin_poll(spin_until) {
            return Ok(d);
        }
        loop {
            if let Some(d) = q.poll() {
                return Ok(d);
            }
            if q.outstanding() == 0 {
                return Err(Error::NothingToWaitFor);
            }
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => WAIT_SLICE,
            };
            if left.is_zero() {
                return Err(Error::TimedOut { op: "wait" });
            }
            let slice = left.min(WAIT_SLICE);
            match q.wait_target() {
                Some(target) => match self.wait_events(target, slice) {
                    Ok(_) | Err(Error::TimedOut { .. }) => {}
                    Err(e) => return Err(e),
                },
                // Only items without NOTIFY are outstanding: nothing to sleep on.
                None => std::thread::sleep(slice.min(Duration::from_micros(50))),
            }
        }
    }

    /// Posts `work` on an idle queue and waits for its completion; `Ok(bytes)` if it
    /// succeeded.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if other work is outstanding; [`Error::Work`] if the
    /// item failed; else as [`post`](Self::post) and [`wait`](Self::wait).
    pub fn run(&self, work: &Work, timeout: Option<Duration>) -> Result<u64> {
        if self.outstanding() != 0 {
            return Err(Error::InvalidInput("run() needs an idle queue"));
        }
        self.post(&work.notify(true))?;
        self.wait(timeout)?.result()
    }

    /// Raw `MNIC_IOC_WAIT`: sleeps until this context's `WORK_DONE` count reaches
    /// `target` or `timeout` passes (rounded up to milliseconds; zero does not sleep);
    /// returns the count.
    ///
    /// # Errors
    /// [`Error::TimedOut`], [`Error::Interrupted`], [`Error::DeviceGone`].
    pub fn wait_events(&self, target: u64, timeout: Duration) -> Result<u64> {
        let ms = timeout.as_nanos().div_ceil(1_000_000);
        let mut w = abi::MnicWait {
            target,
            count: 0,
            timeout_ms: u32::try_from(ms).unwrap_or(u32::MAX),
            rsvd: 0,
        };
        sys::ioctl(self.fd.as_fd(), &mut w)?;
        Ok(w.count)
    }

    /// Work items posted whose completion has not been consumed.
    pub fn outstanding(&self) -> u32 {
        self.queue.get().map_or(0, Queue::outstanding)
    }

    /// Most work items that may be outstanding (0 before queues are set up); see
    /// [`QueueConfig::outstanding_limit`].
    pub fn outstanding_limit(&self) -> u32 {
        self.queue.get().map_or(0, Queue::limit)
    }
}

/// The raw descriptor, for `poll`/`epoll` and diagnostics. There is deliberately no `AsFd`:
/// with it safe code could duplicate the descriptor (`try_clone_to_owned`), the file (and so
/// the hardware context) would outlive this `Context`, and the device could write
/// completions into queue memory that dropping the `Context` unmapped and the allocator
/// reused. Duplicating a raw descriptor takes `unsafe`, whose caller answers for that.
///
/// ```compile_fail
/// use std::os::fd::AsFd;
/// fn dup(ctx: &mnic::Context) -> std::io::Result<std::os::fd::OwnedFd> {
///     ctx.as_fd().try_clone_to_owned()
/// }
/// ```
impl AsRawFd for Context {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A registered range; deregistered when dropped (`MNIC_IOC_DEREGISTER`, whose
/// translations go behind a SYNC).
///
/// It borrows the [`Context`] and, when made by [`Context::register`], the
/// [`DmaBuffer`] it covers, so it cannot outlive either: the device can never be left
/// with a registration over memory that Rust has freed and reused.
#[derive(Debug)]
pub struct Registration<'a> {
    ctx: &'a Context,
    /// 0 once deregistered (the driver never hands out 0).
    handle: u32,
    addr: u64,
    len: u64,
    access: Access,
    /// The remote key, for a registration made with [`Access::REMOTE`].
    rkey: Option<RemoteKey>,
    /// The buffer it covers ([`Context::register`]), which counts it until the driver has
    /// dropped it.
    buf: Option<&'a DmaBuffer>,
}

impl Registration<'_> {
    /// The driver's handle.
    pub fn handle(&self) -> u32 {
        self.handle
    }
    /// Start address.
    pub fn addr(&self) -> u64 {
        self.addr
    }
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }
    /// Always false (registrations cover at least one page).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The flags it was registered with.
    pub fn access(&self) -> Access {
        self.access
    }
    /// The remote key the driver gave a registration made with [`Access::REMOTE`].
    pub fn remote_key(&self) -> Option<RemoteKey> {
        self.rkey
    }
    /// What a peer needs to PUT into or GET from this registration: this context's
    /// endpoint, the key and the range. `None` unless registered with
    /// [`Access::REMOTE`] on a device that is a node of a fabric.
    pub fn remote_region(&self) -> Option<RemoteRegion> {
        Some(RemoteRegion {
            endpoint: self.ctx.endpoint()?,
            key: self.rkey?,
            va: self.addr,
            len: self.len,
        })
    }
    /// [`Context::prefetch`] over the whole registration.
    pub fn prefetch(&self, write: bool) -> Result<()> {
        self.ctx.prefetch(self.addr, self.len, write)
    }
    /// [`Context::query`] over the whole registration.
    pub fn query(&self) -> Result<TableEntries> {
        self.ctx.query(self.addr, self.len)
    }
    /// Deregisters now and reports the driver's answer (dropping ignores it).
    pub fn deregister(mut self) -> Result<()> {
        let r = self.ctx.deregister_handle(self.handle);
        if r.is_ok() {
            self.handle = 0;
        }
        r
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        // In a forked child the file is the parent's context: leave it alone.
        if self.handle != 0
            && self.ctx.is_owner()
            && self.ctx.deregister_handle(self.handle).is_ok()
        {
            self.handle = 0;
        }
        // Only a registration the driver no longer has lets the buffer go; otherwise the
        // buffer keeps its mapping for good (see `DmaBuffer`).
        if self.handle == 0 {
            if let Some(buf) = self.buf {
                buf.release();
            }
        }
    }
}
