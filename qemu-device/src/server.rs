//! The vfio-user server loop: one client, one thread, messages handled in order.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use mnic_abi::{BAR_DOORBELLS, BAR_MSIX, BAR_REGS, MSIX_VECTORS};

use crate::config::{bar_size, ConfigSpace, CONFIG_SIZE};
use crate::engine::Engine;
use crate::mem::{GuestRam, MapError, MAX_MAPS};
use crate::mmio::{Followup, Mmio};
use crate::proto::*;
use crate::shared::Request;

/// Why a request failed: the errno of the error reply.
pub type Errno = i32;

/// The per-client server state. The loop decodes messages, records register values and
/// wakes the data thread ([`Engine`]); it never writes guest memory (an oracle report
/// reads a translation table: see `oracle`).
pub struct Server {
    stream: UnixStream,
    config: ConfigSpace,
    dev: Mmio,
    engine: Engine,
    ram: Arc<GuestRam>,
}

fn einval<T>() -> Result<T, Errno> {
    Err(libc::EINVAL)
}

impl Server {
    /// A server for the connected client `stream`: `dev` decodes MMIO over the state
    /// `engine` runs on; DMA_MAP/UNMAP change `ram`, which the engine reads.
    pub fn new(stream: UnixStream, dev: Mmio, engine: Engine, ram: Arc<GuestRam>) -> Self {
        match stream.try_clone() {
            Ok(s) => dev.shared().set_peer(s),
            Err(e) => tracing::warn!("cannot watch the connection for the data thread: {e}"),
        }
        Server {
            stream,
            config: ConfigSpace::new(),
            dev,
            engine,
            ram,
        }
    }

    /// Whether the data thread has died (the device is gone).
    pub fn data_thread_gone(&self) -> bool {
        self.dev.shared().data_thread_gone()
    }

    /// Number of DMA maps recorded and how many of them are DMA-able (have an fd).
    pub fn dma_regions(&self) -> (usize, usize) {
        let (mapped, no_fd) = self.ram.regions();
        (mapped + no_fd, mapped)
    }

    /// `Err` once the data thread has died: the device is gone, the connection shut down
    /// (see [`crate::shared::Shared::data_thread_died`]).
    fn alive(&self) -> io::Result<()> {
        if self.dev.shared().data_thread_gone() {
            return Err(io::Error::other("the data thread died: the device is gone"));
        }
        Ok(())
    }

    /// Serves until the client disconnects (`Ok`), breaks the protocol or the data
    /// thread dies (`Err`).
    pub fn run(&mut self) -> io::Result<()> {
        loop {
            self.alive()?;
            let msg = match recv_message(self.stream.as_raw_fd()) {
                Ok(Some(msg)) => msg,
                Ok(None) => return self.alive(),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return self.alive(),
                Err(e) => return self.alive().and(Err(e)),
            };
            let hdr = msg.hdr;
            let result = match msg.payload {
                None => Err(libc::E2BIG),
                // A stray reply: the server never sends requests; drop it.
                Some(_) if hdr.flags & FLAG_TYPE_MASK != FLAG_COMMAND => continue,
                Some(payload) => self.dispatch(&hdr, &payload, msg.fds),
            };
            // A request the dead data thread did not carry out gets no reply.
            self.alive()?;
            if hdr.flags & FLAG_NO_REPLY != 0 {
                continue;
            }
            match self.stream.write_all(&reply(&hdr, result)) {
                Ok(()) => {}
                Err(e) if is_disconnect(&e) => return self.alive(),
                Err(e) => return Err(e),
            }
        }
    }

    /// Handles one request; `Ok` is the reply payload.
    pub fn dispatch(
        &mut self,
        hdr: &Header,
        payload: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Result<Vec<u8>, Errno> {
        let mut r = Reader::new(payload);
        match hdr.command {
            cmd::VERSION => self.version(&mut r),
            cmd::DMA_MAP => self.dma_map(&mut r, fds),
            cmd::DMA_UNMAP => self.dma_unmap(&mut r),
            cmd::DEVICE_GET_INFO => Ok(device_info(&vfio_device_info {
                flags: DEVICE_FLAGS_PCI | DEVICE_FLAGS_RESET,
                num_regions: PCI_NUM_REGIONS,
                num_irqs: PCI_NUM_IRQS,
                ..Default::default()
            })),
            cmd::DEVICE_GET_REGION_INFO => self.region_info(&mut r),
            cmd::DEVICE_GET_IRQ_INFO => self.irq_info(&mut r),
            cmd::DEVICE_SET_IRQS => self.set_irqs(&mut r, fds),
            cmd::REGION_READ => self.region_read(&mut r),
            cmd::REGION_WRITE => self.region_write(&mut r),
            cmd::DEVICE_RESET => {
                self.engine.request(Request::Reset);
                Ok(Vec::new())
            }
            _ => Err(libc::ENOSYS),
        }
    }

    fn version(&mut self, r: &mut Reader) -> Result<Vec<u8>, Errno> {
        let major = r.u16().ok_or(libc::EINVAL)?;
        let _minor = r.u16().ok_or(libc::EINVAL)?;
        // The client's JSON capabilities are optional and not needed: ignore them.
        if major != 0 {
            return Err(libc::ENOTSUP);
        }
        let caps = format!(
            "{{\"capabilities\":{{\"max_msg_fds\":{MAX_MSG_FDS},\"max_data_xfer_size\":{MAX_DATA_XFER},\"max_dma_maps\":{MAX_MAPS}}}}}"
        );
        let mut out = Vec::new();
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(caps.as_bytes());
        out.push(0);
        Ok(out)
    }

    /// DMA_MAP (spec §1b). Refused (error reply) when the fd could turn a device access
    /// into SIGBUS (not a memfd sealed or sealable against shrinking, or shorter than
    /// offset + size), when the range overlaps one already recorded (`EEXIST`, as the
    /// protocol says), or when the device keeps as many maps or files as it will
    /// (`ENOSPC`). A range without fd (ROM) is recorded as not DMA-able; so is one whose
    /// fd is sound but that the host cannot mmap (or only read-only, for a writable map).
    fn dma_map(&mut self, r: &mut Reader, fds: Vec<OwnedFd>) -> Result<Vec<u8>, Errno> {
        let (_argsz, flags, offset, iova, size) = (
            r.u32().ok_or(libc::EINVAL)?,
            r.u32().ok_or(libc::EINVAL)?,
            r.u64().ok_or(libc::EINVAL)?,
            r.u64().ok_or(libc::EINVAL)?,
            r.u64().ok_or(libc::EINVAL)?,
        );
        if size == 0 || iova.checked_add(size).is_none() {
            return einval();
        }
        let refuse = |e: MapError| {
            tracing::warn!(iova, size, offset, "DMA_MAP refused: {e}");
            Err(map_errno(&e))
        };
        let writable = flags & DMA_MAP_FLAG_WRITE != 0;
        let mapped = match fds.into_iter().next() {
            Some(fd) => match self.ram.map_fd(iova, size, fd, offset, writable) {
                Ok(()) => true,
                Err(e @ (MapError::TooLarge | MapError::Mmap(_) | MapError::ReadOnlyFile)) => {
                    tracing::warn!(iova, size, "DMA_MAP: cannot map, not DMA-able: {e}");
                    false
                }
                Err(e) => return refuse(e),
            },
            None => false,
        };
        if !mapped {
            if let Err(e) = self.ram.map_none(iova, size) {
                return refuse(e);
            }
        }
        tracing::info!(iova, size, mapped, "DMA_MAP");
        Ok(Vec::new())
    }

    /// DMA_UNMAP: removes whole regions (refused if one would be cut) or, with
    /// `DMA_UNMAP_FLAG_ALL`, every region; replies once no DMA can use them any more.
    fn dma_unmap(&mut self, r: &mut Reader) -> Result<Vec<u8>, Errno> {
        let (flags, iova, size) = dma_unmap_args(r)?;
        if flags & DMA_UNMAP_FLAG_GET_DIRTY_BITMAP != 0 {
            return Err(libc::ENOTSUP);
        }
        if flags & !DMA_UNMAP_FLAG_ALL != 0 {
            return einval();
        }
        // Each returns only once no DMA still uses the removed regions (drain).
        let removed = if flags & DMA_UNMAP_FLAG_ALL != 0 {
            if iova != 0 || size != 0 {
                return einval();
            }
            self.ram.unmap_all()
        } else {
            if size == 0 {
                return einval();
            }
            self.ram.unmap(iova, size).map_err(|e| {
                tracing::warn!(iova, size, "DMA_UNMAP refused: {e}");
                libc::EINVAL
            })?
        };
        tracing::info!(iova, size, flags, removed, "DMA_UNMAP");
        Ok(dma_unmap_reply(flags, iova, size))
    }

    fn region_info(&mut self, r: &mut Reader) -> Result<Vec<u8>, Errno> {
        let _argsz = r.u32().ok_or(libc::EINVAL)?;
        let _flags = r.u32().ok_or(libc::EINVAL)?;
        let index = r.u32().ok_or(libc::EINVAL)?;
        let size = region_size(index).ok_or(libc::EINVAL)?;
        let flags = if size == 0 {
            0
        } else {
            REGION_INFO_FLAG_READ | REGION_INFO_FLAG_WRITE
        };
        Ok(region_info(&vfio_region_info {
            flags,
            index,
            size,
            ..Default::default()
        }))
    }

    fn irq_info(&mut self, r: &mut Reader) -> Result<Vec<u8>, Errno> {
        let _argsz = r.u32().ok_or(libc::EINVAL)?;
        let _flags = r.u32().ok_or(libc::EINVAL)?;
        let index = r.u32().ok_or(libc::EINVAL)?;
        if index >= PCI_NUM_IRQS {
            return einval();
        }
        let (flags, count) = if index == PCI_MSIX_IRQ_INDEX {
            (
                IRQ_INFO_EVENTFD | IRQ_INFO_NORESIZE,
                u32::from(MSIX_VECTORS),
            )
        } else {
            (0, 0)
        };
        Ok(irq_info(&vfio_irq_info {
            flags,
            index,
            count,
            ..Default::default()
        }))
    }

    fn set_irqs(&mut self, r: &mut Reader, fds: Vec<OwnedFd>) -> Result<Vec<u8>, Errno> {
        let _argsz = r.u32().ok_or(libc::EINVAL)?;
        let flags = r.u32().ok_or(libc::EINVAL)?;
        let index = r.u32().ok_or(libc::EINVAL)?;
        let start = r.u32().ok_or(libc::EINVAL)?;
        let count = r.u32().ok_or(libc::EINVAL)?;
        if index >= PCI_NUM_IRQS {
            return einval();
        }
        if index != PCI_MSIX_IRQ_INDEX {
            // No INTx/MSI/ERR/REQ: only "disable" (count 0) is meaningful.
            return if count == 0 { Ok(Vec::new()) } else { einval() };
        }
        let end = start.checked_add(count).ok_or(libc::EINVAL)?;
        if end > u32::from(MSIX_VECTORS) {
            return einval();
        }
        if flags & IRQ_SET_ACTION_TRIGGER == 0 {
            // Mask/unmask: QEMU emulates the MSI-X table; nothing to do.
            return Ok(Vec::new());
        }
        let sh = self.dev.shared();
        if flags & IRQ_SET_DATA_NONE != 0 && count == 0 {
            (0..usize::from(MSIX_VECTORS)).for_each(|v| sh.set_msix(v, None));
            return Ok(Vec::new());
        }
        if flags & IRQ_SET_DATA_EVENTFD != 0 {
            tracing::info!(start, end, fds = fds.len(), "SET_IRQS MSI-X eventfds");
            // All or nothing: every fd is checked before any is installed. Vectors past
            // the fds sent get none (QEMU sends a run of "no eventfd" that way).
            let files = fds
                .into_iter()
                .take(count as usize)
                .map(eventfd)
                .collect::<Result<Vec<File>, Errno>>()?;
            let mut files = files.into_iter();
            for slot in start..end {
                sh.set_msix(slot as usize, files.next());
            }
            return Ok(Vec::new());
        }
        // DATA_NONE/DATA_BOOL triggers (software-fired interrupts): accepted, ignored.
        Ok(Vec::new())
    }

    fn region_read(&mut self, r: &mut Reader) -> Result<Vec<u8>, Errno> {
        let (offset, region, count) = region_access(r)?;
        let mut data = vec![0u8; count as usize];
        match region {
            PCI_CONFIG_REGION_INDEX if !self.config.read(offset, &mut data) => return einval(),
            PCI_CONFIG_REGION_INDEX => {}
            BAR_REGS => self.dev.bar0_read(offset, &mut data),
            BAR_DOORBELLS => self.dev.bar2_read(offset, &mut data),
            _ => {} // BAR4: QEMU emulates the MSI-X table and PBA; reads 0.
        }
        let mut out = region_echo(offset, region, count);
        out.extend_from_slice(&data);
        Ok(out)
    }

    fn region_write(&mut self, r: &mut Reader) -> Result<Vec<u8>, Errno> {
        let (offset, region, count) = region_access(r)?;
        let data = r.bytes(count as usize).ok_or(libc::EINVAL)?;
        match region {
            PCI_CONFIG_REGION_INDEX if !self.config.write(offset, data) => return einval(),
            // Applied before the reply (spec §3): once the driver has it, a cleared bit
            // means no more DMA.
            PCI_CONFIG_REGION_INDEX => self.dev.shared().set_bus_master(self.config.bus_master()),
            BAR_REGS => match self.dev.bar0_write(offset, data) {
                Some(Followup::Request(req)) => self.engine.request(req),
                Some(Followup::Oracle(op)) => self.dev.oracle_op(op, &self.ram.snapshot()),
                None => {}
            },
            BAR_DOORBELLS => self.dev.bar2_write(offset, data),
            _ => {}
        }
        Ok(region_echo(offset, region, count))
    }
}

/// The errno of a refused DMA_MAP.
fn map_errno(e: &MapError) -> Errno {
    match e {
        MapError::Overlap => libc::EEXIST,
        MapError::Full(_) => libc::ENOSPC,
        _ => libc::EINVAL,
    }
}

/// Takes `fd` as an MSI-X eventfd: it must be one (anything else could block or fail the
/// thread that signals it, e.g. a pipe nobody reads), and it is made non-blocking (a
/// saturated counter then fails the write with EAGAIN instead of blocking: the interrupt
/// is pending anyway). O_NONBLOCK is a property of the open file, so QEMU's descriptor is
/// non-blocking too; QEMU creates its eventfds that way anyway.
fn eventfd(fd: OwnedFd) -> Result<File, Errno> {
    let raw = fd.as_raw_fd();
    let link = std::fs::read_link(format!("/proc/self/fd/{raw}")).map_err(|e| {
        tracing::warn!("SET_IRQS: cannot inspect fd: {e}");
        libc::EINVAL
    })?;
    if link.as_os_str() != "anon_inode:[eventfd]" {
        tracing::warn!(?link, "SET_IRQS: not an eventfd: refused");
        return einval();
    }
    // SAFETY: fcntl(F_GETFL) on an fd we own; it touches no memory of ours.
    let fl = unsafe { libc::fcntl(raw, libc::F_GETFL) };
    // SAFETY: fcntl(F_SETFL) with an int argument on an fd we own.
    if fl < 0 || unsafe { libc::fcntl(raw, libc::F_SETFL, fl | libc::O_NONBLOCK) } < 0 {
        return einval();
    }
    Ok(File::from(fd))
}

/// The offset, region and count of a REGION_READ/WRITE request, if the access is one the
/// device serves (`EINVAL` otherwise).
pub fn region_access(r: &mut Reader) -> Result<(u64, u32, u32), Errno> {
    let offset = r.u64().ok_or(libc::EINVAL)?;
    let region = r.u32().ok_or(libc::EINVAL)?;
    let count = r.u32().ok_or(libc::EINVAL)?;
    check_access(region, offset, count as usize)?;
    Ok((offset, region, count))
}

/// The start of a REGION_READ/WRITE reply: the request's offset, region and count (a read
/// reply continues with the data).
pub fn region_echo(offset: u64, region: u32, count: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + count as usize);
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&region.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out
}

/// The flags, IOVA and size of a DMA_UNMAP request (`EINVAL` if short or wrapping). A
/// range may end at 2^64 exactly: QEMU unmaps a 64-bit IOMMU address space as its two
/// halves, the upper one [2^63, 2^64).
pub fn dma_unmap_args(r: &mut Reader) -> Result<(u32, u64, u64), Errno> {
    let _argsz = r.u32().ok_or(libc::EINVAL)?;
    let flags = r.u32().ok_or(libc::EINVAL)?;
    let iova = r.u64().ok_or(libc::EINVAL)?;
    let size = r.u64().ok_or(libc::EINVAL)?;
    // The last byte must not wrap.
    if size > 0 {
        iova.checked_add(size - 1).ok_or(libc::EINVAL)?;
    }
    Ok((flags, iova, size))
}

/// The DMA_UNMAP reply: the request's entry echoed (argsz, flags, iova, size).
pub fn dma_unmap_reply(flags: u32, iova: u64, size: u64) -> Vec<u8> {
    dma_unmap(&vfio_iommu_type1_dma_unmap {
        flags,
        iova,
        size,
        ..Default::default()
    })
}

/// Size of region `index`, `None` if there is no such region.
pub fn region_size(index: u32) -> Option<u64> {
    match index {
        0..=5 => Some(bar_size(index)),
        PCI_ROM_REGION_INDEX => Some(0),
        PCI_CONFIG_REGION_INDEX => Some(CONFIG_SIZE as u64),
        PCI_VGA_REGION_INDEX => Some(0),
        _ => None,
    }
}

fn check_access(region: u32, offset: u64, len: usize) -> Result<(), Errno> {
    if len == 0 || len > MAX_DATA_XFER {
        return einval();
    }
    let size = region_size(region).ok_or(libc::EINVAL)?;
    let end = offset.checked_add(len as u64).ok_or(libc::EINVAL)?;
    if end > size
        || !matches!(
            region,
            BAR_REGS | BAR_DOORBELLS | BAR_MSIX | PCI_CONFIG_REGION_INDEX
        )
    {
        return einval();
    }
    Ok(())
}

/// A vfio-user message read by [`recv_message`].
pub struct Message {
    /// Its header.
    pub hdr: Header,
    /// The payload; `None` if the message was larger than [`MAX_MSG_SIZE`]: its payload
    /// was read and discarded, and the request is to be refused (`E2BIG`).
    pub payload: Option<Vec<u8>>,
    /// Descriptors that came with it (SCM_RIGHTS).
    pub fds: Vec<OwnedFd>,
}

/// Reads one complete message from `sock`. `Ok(None)`: the peer closed (or reset) the
/// connection before a new message; `Err` also for a size smaller than the header.
pub fn recv_message(sock: RawFd) -> io::Result<Option<Message>> {
    let mut fds = Vec::new();
    let mut hb = [0u8; HEADER_SIZE];
    match recv_exact(sock, &mut hb, &mut fds, true) {
        Ok(true) => {}
        Ok(false) => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(None),
        Err(e) => return Err(e),
    }
    let hdr = Header::decode(&hb);
    let size = hdr.size as usize;
    if size < HEADER_SIZE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message size {size} smaller than the header"),
        ));
    }
    let mut len = size - HEADER_SIZE;
    if size > MAX_MSG_SIZE {
        let mut buf = vec![0u8; 64 << 10];
        while len > 0 {
            let n = len.min(buf.len());
            recv_exact(sock, &mut buf[..n], &mut fds, false)?;
            len -= n;
            fds.clear();
        }
        return Ok(Some(Message {
            hdr,
            payload: None,
            fds,
        }));
    }
    let mut payload = vec![0u8; len];
    recv_exact(sock, &mut payload, &mut fds, false)?;
    Ok(Some(Message {
        hdr,
        payload: Some(payload),
        fds,
    }))
}

/// The reply to the request `hdr`: `result` is its payload or the errno of an error reply.
pub fn reply(hdr: &Header, result: Result<Vec<u8>, Errno>) -> Vec<u8> {
    match result {
        Ok(body) => Header {
            msg_id: hdr.msg_id,
            command: hdr.command,
            flags: FLAG_REPLY,
            ..Header::default()
        }
        .message(&body),
        Err(errno) => Header {
            msg_id: hdr.msg_id,
            command: hdr.command,
            flags: FLAG_REPLY | FLAG_ERROR,
            error: errno as u32,
            ..Header::default()
        }
        .message(&[]),
    }
}

/// Whether a send error means the peer has gone (not a protocol failure).
pub fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    )
}

/// Fills `buf`, collecting SCM_RIGHTS fds. `Ok(false)`: clean EOF before the first
/// byte (only if `eof_ok`).
fn recv_exact(
    sock: RawFd,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    eof_ok: bool,
) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        let n = recv_with_fds(sock, &mut buf[got..], fds)?;
        if n == 0 {
            if got == 0 && eof_ok {
                return Ok(false);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "peer closed mid-message",
            ));
        }
        got += n;
    }
    Ok(true)
}

/// Sends all of `buf` on `sock`, with `fds` (SCM_RIGHTS, at most [`MAX_MSG_FDS`])
/// attached to its first byte.
pub fn send_with_fds(sock: RawFd, buf: &[u8], fds: &[RawFd]) -> io::Result<()> {
    if fds.len() > MAX_MSG_FDS {
        return Err(io::Error::from_raw_os_error(libc::E2BIG));
    }
    // Room for MAX_MSG_FDS descriptors, u64-aligned as cmsghdr requires.
    let mut cbuf = [0u64; 16 + MAX_MSG_FDS];
    let mut sent = 0;
    while sent < buf.len() {
        let rest = &buf[sent..];
        let mut iov = libc::iovec {
            iov_base: rest.as_ptr() as *mut libc::c_void,
            iov_len: rest.len(),
        };
        // SAFETY: msghdr is plain old data; all-zero is a valid empty value.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if sent == 0 && !fds.is_empty() {
            let len = std::mem::size_of_val(fds);
            msg.msg_control = cbuf.as_mut_ptr().cast();
            // SAFETY: CMSG_SPACE is a pure size computation.
            msg.msg_controllen = unsafe { libc::CMSG_SPACE(len as u32) } as _;
            // SAFETY: `cbuf` has room for the header and MAX_MSG_FDS fds (checked
            // above); CMSG_FIRSTHDR/CMSG_DATA point into it.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(&msg);
                (*c).cmsg_level = libc::SOL_SOCKET;
                (*c).cmsg_type = libc::SCM_RIGHTS;
                (*c).cmsg_len = libc::CMSG_LEN(len as u32) as _;
                std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(c), len);
            }
        }
        // SAFETY: `msg` points at `iov` (covering `rest`) and `cbuf`, live for the call;
        // the kernel only reads them.
        let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
            continue;
        }
        sent += n as usize;
    }
    Ok(())
}

/// One recvmsg: reads into `buf` and appends any SCM_RIGHTS fds to `fds`.
fn recv_with_fds(sock: RawFd, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    const FD_SIZE: usize = std::mem::size_of::<RawFd>();
    // Room for MAX_MSG_FDS descriptors, u64-aligned as cmsghdr requires.
    let mut cbuf = [0u64; 16 + MAX_MSG_FDS];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain old data; all-zero is a valid empty value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
    let n = loop {
        // SAFETY: `msg` points at `iov` (covering `buf`) and `cbuf`, all live and
        // exclusively borrowed for the call; the kernel writes within their lengths.
        let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    // SAFETY: the CMSG_* macros walk the control buffer the kernel just filled, bounded
    // by `msg_controllen`; SCM_RIGHTS data is an array of fds now owned by us.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c);
                let hdr_len = libc::CMSG_LEN(0) as usize;
                let count = ((*c).cmsg_len as usize).saturating_sub(hdr_len) / FD_SIZE;
                for i in 0..count {
                    let fd = std::ptr::read_unaligned(data.add(i * FD_SIZE).cast::<RawFd>());
                    if fd >= 0 {
                        let fd = OwnedFd::from_raw_fd(fd);
                        // A message's fds may come with any of its recvmsg calls: past
                        // MAX_MSG_FDS they are closed at once.
                        if fds.len() < MAX_MSG_FDS {
                            fds.push(fd);
                        }
                    }
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::Counters;
    use crate::shared::Shared;
    use std::io::Read;
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    /// QEMU removes a 64-bit IOMMU address space as two DMA_UNMAPs, [0, 2^63) and
    /// [2^63, 2^64): the upper half ends at 2^64 exactly and must be taken (it was refused
    /// as wrapping, and QEMU reported the error reply at every guest shutdown behind
    /// `--iommu`). A range whose last byte wraps is still refused.
    #[test]
    fn dma_unmap_of_the_upper_half_is_taken() {
        let args = |iova: u64, size: u64| {
            let mut b = Vec::new();
            b.extend_from_slice(&24u32.to_le_bytes());
            b.extend_from_slice(&0u32.to_le_bytes());
            b.extend_from_slice(&iova.to_le_bytes());
            b.extend_from_slice(&size.to_le_bytes());
            dma_unmap_args(&mut Reader::new(&b))
        };
        assert_eq!(args(1 << 63, 1 << 63), Ok((0, 1 << 63, 1 << 63)));
        assert_eq!(args(u64::MAX, 1), Ok((0, u64::MAX, 1)));
        assert_eq!(args(u64::MAX, 2), Err(libc::EINVAL));
        assert_eq!(args((1 << 63) + 1, 1 << 63), Err(libc::EINVAL));
        // And the range removes what lies in it.
        let ram = GuestRam::anonymous(&[(0, 0x1000)]).unwrap();
        let fd = crate::testkit::memfd::memfd(0x1000);
        ram.map_fd(u64::MAX - 0x1fff, 0x1000, fd, 0, true).unwrap();
        assert_eq!(ram.unmap(1 << 63, 1 << 63), Ok(1));
        assert_eq!(ram.regions(), (1, 0));
    }

    /// A panic ends the data thread: the server must not sit 10 s on every request that
    /// needs it. It closes the connection at once (the device is gone, as a device that
    /// fell off the bus) and its loop ends with an error.
    #[test]
    fn data_thread_panic_fails_fast() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let sh = Shared::new(Arc::new(Counters::default()), false);
        let ram = Arc::new(GuestRam::new());
        let engine =
            Engine::spawn(sh.clone(), ram.clone(), crate::engine::DEFAULT_SPIN, None).unwrap();
        let mut server = Server::new(ours, Mmio::new(sh.clone()), engine, ram);
        let t = std::thread::spawn(move || server.run());
        sh.panic_next.store(true, Ordering::SeqCst);
        sh.kick();
        std::thread::sleep(Duration::from_millis(100));
        theirs
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        // A CONTROL write: only the data thread can carry it out.
        let mut w = u64::from(mnic_abi::reg::CONTROL).to_le_bytes().to_vec();
        for v in [BAR_REGS, 4, mnic_abi::control::ENABLE] {
            w.extend_from_slice(&v.to_le_bytes());
        }
        let h = Header {
            msg_id: 1,
            command: cmd::REGION_WRITE,
            ..Header::default()
        };
        let t0 = Instant::now();
        let _ = theirs.write_all(&h.message(&w));
        let mut b = [0u8; 64];
        let r = theirs.read(&mut b);
        let took = t0.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "the CONTROL write took {took:?} ({r:?})"
        );
        assert!(matches!(r, Ok(0)), "the connection is closed: {r:?}");
        let t1 = Instant::now();
        while !t.is_finished() && t1.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(t.is_finished(), "the server loop did not end");
        assert!(t.join().unwrap().is_err(), "a dead device is an error");
    }
}
