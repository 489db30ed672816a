//! Batched UDP I/O (`recvmmsg`/`sendmmsg`): one system call for many datagrams on the TURN
//! relay's and the media peer's hot paths, where per-packet system calls are most of the cost.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, OwnedFd, RawFd};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Datagrams received or sent per system call.
pub const BATCH: usize = 32;
/// Room for one datagram.
pub const SLOT: usize = 2048;

/// Receive buffers for one batch: [`BATCH`] slots, each with `headroom` bytes in front of the
/// datagram (where a relay writes the header it puts before the payload, so the frame leaves
/// without a copy) and `tailroom` bytes after it.
pub struct RecvBatch {
    buf: Vec<u8>,
    stride: usize,
    headroom: usize,
    capacity: usize,
    addrs: Vec<libc::sockaddr_storage>,
    lens: Vec<usize>,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    /// [`SLOT`]-byte slots, no headroom: datagrams longer than that arrive truncated, and are
    /// then dropped by the core's length checks (a TURN client's frames are MTU-sized).
    pub fn new() -> Self {
        Self::with_slots(SLOT, 0, 0)
    }

    /// Slots for datagrams of up to `capacity` bytes with `headroom` and `tailroom` around them.
    /// The buffer is zeroed memory the kernel maps only as it is written.
    pub fn with_slots(capacity: usize, headroom: usize, tailroom: usize) -> Self {
        // SAFETY: sockaddr_storage is plain data; all-zero is a valid (empty) value.
        let zero: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let stride = headroom + capacity + tailroom;
        Self {
            buf: vec![0u8; BATCH * stride],
            stride,
            headroom,
            capacity,
            addrs: vec![zero; BATCH],
            lens: vec![0; BATCH],
        }
    }

    /// Receives up to [`BATCH`] datagrams without blocking; `WouldBlock` when none is queued.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.recv_at(fd, 0)
    }

    /// Receives into slots `start..`[`BATCH`] without blocking, leaving the slots before `start`
    /// as they are (a batch filled from several sockets); how many arrived, `WouldBlock` when
    /// none is queued.
    pub fn recv_at(&mut self, fd: RawFd, start: usize) -> io::Result<usize> {
        let (stride, headroom, capacity) = (self.stride, self.headroom, self.capacity);
        let free = BATCH.saturating_sub(start);
        if free == 0 {
            return Ok(0);
        }
        // On the stack: a relay socket often has one datagram queued, and this runs per wakeup.
        let mut iovs = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; BATCH];
        let slots = self.buf.chunks_exact_mut(stride).skip(start);
        for (iov, slot) in iovs.iter_mut().zip(slots) {
            iov.iov_base = slot[headroom..].as_mut_ptr().cast();
            iov.iov_len = capacity;
        }
        let len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: mmsghdr is plain data; all-zero is a valid, empty header, each set below.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
        for ((hdr, iov), addr) in hdrs
            .iter_mut()
            .zip(iovs.iter_mut())
            .zip(self.addrs.iter_mut().skip(start))
        {
            *hdr = mmsghdr(iov, addr, len);
        }
        // SAFETY: the first `free` headers are initialised and point into buffers owned by
        // `self`.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                free as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        for (len, h) in self.lens[start..].iter_mut().zip(&hdrs[..n as usize]) {
            *len = (h.msg_len as usize).min(capacity);
        }
        Ok(n as usize)
    }

    /// Datagram `i` of the last batch and its source.
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        let from = from_storage(&self.addrs[i])?;
        let start = i * self.stride + self.headroom;
        Some((&self.buf[start..start + self.lens[i]], from))
    }

    /// Slot `i` whole: headroom, datagram, tailroom.
    pub fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        let start = i * self.stride;
        &mut self.buf[start..start + self.stride]
    }

    /// Slot `i` whole, as [`RecvBatch::slot_mut`] left it.
    pub fn slot(&self, i: usize) -> &[u8] {
        let start = i * self.stride;
        &self.buf[start..start + self.stride]
    }
}

/// `UDP_SEGMENT` from linux/udp.h (not in the libc crate for glibc targets).
const UDP_SEGMENT: libc::c_int = 103;
/// The kernel's limit on segments in one UDP GSO send (`UDP_MAX_SEGMENTS`).
const GSO_MAX_SEGMENTS: usize = 64;
/// Room below the 64 KiB UDP limit for one GSO send's payload.
const GSO_MAX_BYTES: usize = 60_000;
/// Cleared for good the first time the kernel refuses a GSO send (an old kernel, a device
/// without it): everything then goes one datagram per message.
static GSO: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Consecutive datagrams for one destination that all have the first one's size but the last
/// (which may be shorter) — how a video frame leaves a packetizer. With UDP GSO they go as one
/// message the kernel cuts into datagrams, paying for routing and the IP layer once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    start: usize,
    len: usize,
    segment: usize,
}

fn runs(datagrams: &[(&[u8], SocketAddr)], gso: bool) -> Vec<Run> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < datagrams.len() {
        let (first, to) = datagrams[i];
        let segment = first.len();
        let mut j = i + 1;
        while gso
            && segment > 0
            && j < datagrams.len()
            && j - i < GSO_MAX_SEGMENTS
            && (j - i + 1) * segment <= GSO_MAX_BYTES
            && datagrams[j].1 == to
            && !datagrams[j].0.is_empty()
            && datagrams[j].0.len() <= segment
        {
            j += 1;
            if datagrams[j - 1].0.len() < segment {
                break; // a shorter datagram can only end a run
            }
        }
        runs.push(Run {
            start: i,
            len: j - i,
            segment,
        });
        i = j;
    }
    runs
}

/// Sends each `(payload, destination)` from `fd`, [`BATCH`] messages per system call, runs of
/// same-size datagrams to one destination as UDP GSO messages; returns how many datagrams went
/// out, in order (a full socket buffer stops early: the rest are dropped, as UDP may).
pub fn send(fd: RawFd, datagrams: &[(&[u8], SocketAddr)]) -> usize {
    send_with(
        fd,
        datagrams,
        GSO.load(std::sync::atomic::Ordering::Relaxed),
    )
}

/// As [`send`], but one message per datagram, never a GSO run: what a relay with many
/// allocations does, each datagram on its own socket (the benchmark's throughput floor).
pub fn send_each(fd: RawFd, datagrams: &[(&[u8], SocketAddr)]) -> usize {
    send_with(fd, datagrams, false)
}

fn send_with(fd: RawFd, datagrams: &[(&[u8], SocketAddr)], gso: bool) -> usize {
    if let [(payload, to)] = datagrams {
        // One datagram: a plain `sendto`, none of a batch's bookkeeping.
        let (addr, len) = to_storage(to);
        // SAFETY: `payload` and `addr` are live for the call; `len` is `addr`'s used size.
        let sent = unsafe {
            libc::sendto(
                fd,
                payload.as_ptr().cast(),
                payload.len(),
                libc::MSG_DONTWAIT,
                (&raw const addr).cast(),
                len,
            )
        };
        return usize::from(sent >= 0);
    }
    let all = runs(datagrams, gso);
    let mut sent = 0;
    for chunk in all.chunks(BATCH) {
        match send_runs(fd, datagrams, chunk) {
            Ok(n) => {
                sent += chunk[..n].iter().map(|r| r.len).sum::<usize>();
                if n < chunk.len() {
                    return sent;
                }
            }
            Err(e) if gso && chunk.iter().any(|r| r.len > 1) && gso_refused(&e) => {
                tracing::info!(error = %e, "UDP GSO refused by the kernel; sending datagram by datagram");
                GSO.store(false, std::sync::atomic::Ordering::Relaxed);
                let first = chunk[0].start;
                return sent + send(fd, &datagrams[first..]);
            }
            Err(_) => return sent,
        }
    }
    sent
}

fn gso_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO | libc::EINVAL | libc::EOPNOTSUPP | libc::ENOPROTOOPT)
    )
}

/// One `sendmmsg` of up to [`BATCH`] runs; how many runs went out.
fn send_runs(fd: RawFd, datagrams: &[(&[u8], SocketAddr)], runs: &[Run]) -> io::Result<usize> {
    let first = runs[0].start;
    let last = runs[runs.len() - 1];
    let mut iovs: Vec<libc::iovec> = datagrams[first..last.start + last.len]
        .iter()
        .map(|(p, _)| libc::iovec {
            iov_base: p.as_ptr() as *mut libc::c_void,
            iov_len: p.len(),
        })
        .collect();
    let mut addrs: Vec<(libc::sockaddr_storage, libc::socklen_t)> = runs
        .iter()
        .map(|r| to_storage(&datagrams[r.start].1))
        .collect();
    // One aligned control buffer per message, holding a UDP_SEGMENT cmsg for GSO runs.
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(mem::size_of::<u16>() as u32) } as usize;
    let mut controls: Vec<[u64; 4]> = vec![[0; 4]; runs.len()];
    debug_assert!(space <= mem::size_of::<[u64; 4]>());
    let mut hdrs: Vec<libc::mmsghdr> = Vec::with_capacity(runs.len());
    for ((run, (addr, addr_len)), control) in
        runs.iter().zip(addrs.iter_mut()).zip(controls.iter_mut())
    {
        let iov = &mut iovs[run.start - first];
        let mut hdr = mmsghdr(iov, addr, *addr_len);
        hdr.msg_hdr.msg_iovlen = run.len;
        if run.len > 1 {
            hdr.msg_hdr.msg_control = control.as_mut_ptr().cast();
            hdr.msg_hdr.msg_controllen = space;
            // SAFETY: the control buffer is `space` bytes, aligned for cmsghdr (u64), and holds
            // exactly one cmsg of a u16, which CMSG_FIRSTHDR/CMSG_DATA address inside it.
            unsafe {
                let cmsg = libc::CMSG_FIRSTHDR(&hdr.msg_hdr);
                (*cmsg).cmsg_level = libc::SOL_UDP;
                (*cmsg).cmsg_type = UDP_SEGMENT;
                (*cmsg).cmsg_len = libc::CMSG_LEN(mem::size_of::<u16>() as u32) as usize;
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), run.segment as u16);
            }
        }
        hdrs.push(hdr);
    }
    // SAFETY: `hdrs` holds initialised headers whose iovecs, addresses and control buffers all
    // outlive the call.
    let n = unsafe {
        libc::sendmmsg(
            fd,
            hdrs.as_mut_ptr(),
            hdrs.len() as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// A UDP socket registered with the runtime for reading only. tokio's `UdpSocket` also asks for
/// writability, and edge-triggered epoll then reports the socket each time a sent datagram has
/// left its buffer: an event per packet that nobody waits for, as these sockets' sends never wait
/// (a full buffer drops the datagram).
pub type ReadableUdp = AsyncFd<std::net::UdpSocket>;

/// Makes `socket` non-blocking and registers it for readability only; see [`ReadableUdp`].
pub fn readable_only(socket: std::net::UdpSocket) -> io::Result<ReadableUdp> {
    socket.set_nonblocking(true)?;
    // SAFETY: the descriptor belongs to `socket`, moved into the AsyncFd, and is never closed
    // while the AsyncFd lives.
    unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

/// Room in a [`ReadableUdp`]'s send buffer, waited for while datagrams wait for it: a second
/// registration of the socket (a duplicate descriptor) for writability only, made when the wait
/// begins and dropped when it ends, so that sends outside it cost no event each.
pub struct SendRoom(AsyncFd<OwnedFd>);

impl SendRoom {
    pub fn new(socket: &impl AsFd) -> io::Result<Self> {
        let fd = socket.as_fd().try_clone_to_owned()?;
        // SAFETY: the duplicate is moved into the AsyncFd, which alone closes it.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::WRITABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Self(fd))
    }

    /// Resolves when the socket may take a datagram. The caller then sends until the buffer is
    /// full again: the next call waits for room made after this one.
    pub async fn ready(&self) -> io::Result<()> {
        self.0.writable().await?.clear_ready();
        Ok(())
    }
}

/// One message header of a batch: one buffer, one address. The pointers must stay valid until
/// the system call that uses the header returns.
fn mmsghdr(
    iov: &mut libc::iovec,
    addr: &mut libc::sockaddr_storage,
    addr_len: libc::socklen_t,
) -> libc::mmsghdr {
    // SAFETY: all-zero is a valid, empty msghdr; the fields set below make it describe one buffer.
    let mut hdr: libc::msghdr = unsafe { mem::zeroed() };
    hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
    hdr.msg_namelen = addr_len;
    hdr.msg_iov = iov;
    hdr.msg_iovlen = 1;
    libc::mmsghdr {
        msg_hdr: hdr,
        msg_len: 0,
    }
}

/// Asks for `bytes` of kernel buffer each way (the kernel caps it at net.core.[rw]mem_max): a
/// burst that arrives while the relay is busy waits there instead of being dropped.
pub fn set_buffers(fd: RawFd, bytes: i32) {
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: setsockopt reads size_of::<c_int>() bytes from a live c_int.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&bytes as *const i32).cast(),
                mem::size_of::<i32>() as libc::socklen_t,
            );
        }
    }
}

pub(crate) fn to_storage(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage; the writes below stay within it, as
    // sockaddr_in and sockaddr_in6 both fit in sockaddr_storage by definition.
    unsafe {
        let mut storage: libc::sockaddr_storage = mem::zeroed();
        match addr {
            SocketAddr::V4(a) => {
                let sin =
                    &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>();
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = a.port().to_be();
                sin.sin_addr = libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                };
                (
                    storage,
                    mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
            SocketAddr::V6(a) => {
                let sin6 = &mut *(&mut storage as *mut libc::sockaddr_storage)
                    .cast::<libc::sockaddr_in6>();
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = a.port().to_be();
                sin6.sin6_addr = libc::in6_addr {
                    s6_addr: a.ip().octets(),
                };
                sin6.sin6_flowinfo = a.flowinfo();
                sin6.sin6_scope_id = a.scope_id();
                (
                    storage,
                    mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    }
}

/// The address a `sockaddr_storage` holds; `None` for a family other than IPv4 and IPv6.
pub fn from_storage(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    #[tokio::test]
    async fn a_send_room_waits_for_room_made_after_the_buffer_filled() {
        // Loopback UDP never fills a send buffer (the kernel delivers at once); a datagram
        // socket pair does, once the peer's queue is full, and has room again when it reads.
        let (tx, rx) = std::os::unix::net::UnixDatagram::pair().unwrap();
        tx.set_nonblocking(true).unwrap();
        let mut queued = 0;
        while tx.send(&[0u8; 512]).is_ok() {
            queued += 1;
        }
        assert!(queued > 0);
        let room = SendRoom::new(&tx).unwrap();
        let waited = tokio::time::timeout(Duration::from_millis(50), room.ready()).await;
        assert!(waited.is_err(), "a full buffer has no room");
        let mut buf = [0u8; 512];
        for _ in 0..queued {
            rx.recv(&mut buf).unwrap();
        }
        tokio::time::timeout(Duration::from_secs(5), room.ready())
            .await
            .expect("room once the peer read")
            .unwrap();
        tx.send(&[0u8; 512]).unwrap();
    }

    #[tokio::test]
    async fn a_send_room_says_a_socket_with_room_is_ready_and_leaves_reading_alone() {
        let socket = readable_only(std::net::UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap();
        let room = SendRoom::new(socket.get_ref()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), room.ready())
            .await
            .expect("an empty send buffer has room")
            .unwrap();
        drop(room);
        // The duplicate's registration came and went; the socket still reads.
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.send_to(b"x", socket.get_ref().local_addr().unwrap())
            .unwrap();
        let mut ready = tokio::time::timeout(Duration::from_secs(5), socket.readable())
            .await
            .expect("the datagram is seen")
            .unwrap();
        let mut buf = [0u8; 8];
        let n = ready
            .try_io(|s| s.get_ref().recv(&mut buf))
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"x");
    }

    #[test]
    fn batch_round_trip_v4_and_v6() {
        for bind in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(rx) = std::net::UdpSocket::bind(bind) else {
                continue;
            }; // no IPv6 here
            let tx = std::net::UdpSocket::bind(bind).unwrap();
            let to = rx.local_addr().unwrap();
            let payloads: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; usize::from(i) + 1]).collect();
            let datagrams: Vec<(&[u8], SocketAddr)> =
                payloads.iter().map(|p| (p.as_slice(), to)).collect();
            assert_eq!(send(tx.as_raw_fd(), &datagrams), 40);
            let mut batch = RecvBatch::new();
            let mut got = Vec::new();
            while got.len() < 40 {
                let n = batch.recv(rx.as_raw_fd()).unwrap();
                for i in 0..n {
                    let (data, from) = batch.get(i).unwrap();
                    assert_eq!(from, tx.local_addr().unwrap());
                    got.push(data.to_vec());
                }
            }
            assert_eq!(got, payloads);
        }
    }

    #[test]
    fn slots_with_headroom_take_whole_large_datagrams_and_a_header_in_front() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let large = vec![9u8; 60_000]; // far past SLOT: whole, not truncated
        tx.send_to(&large, to).unwrap();
        tx.send_to(b"small", to).unwrap();
        let mut batch = RecvBatch::with_slots(65_536, 4, 3);
        let mut n = 0;
        while n < 2 {
            n += batch.recv(rx.as_raw_fd()).unwrap_or(0);
        }
        assert_eq!(batch.get(0).unwrap().0, &large[..]);
        assert_eq!(
            batch.get(1).unwrap(),
            (&b"small"[..], tx.local_addr().unwrap())
        );
        batch.slot_mut(1)[..4].copy_from_slice(b"HDR:");
        assert_eq!(&batch.slot(1)[..9], b"HDR:small");
    }

    #[test]
    fn runs_group_same_size_datagrams_to_one_destination() {
        let (a, b): (SocketAddr, SocketAddr) =
            ("10.0.0.1:1".parse().unwrap(), "10.0.0.2:2".parse().unwrap());
        let big = [0u8; 1200];
        let small = [0u8; 300];
        let d: Vec<(&[u8], SocketAddr)> = vec![
            (&big, a),
            (&big, a),
            (&small, a), // a frame: equal packets, a shorter last one
            (&small, a), // a shorter one ended the run
            (&big, b),
            (&big, b), // another destination
            (&small, b),
            (&big, b), // a longer one cannot follow a shorter one
        ];
        let r = |start, len, segment| Run {
            start,
            len,
            segment,
        };
        assert_eq!(
            runs(&d, true),
            [r(0, 3, 1200), r(3, 1, 300), r(4, 3, 1200), r(7, 1, 1200)]
        );
        assert!(
            runs(&d, false).iter().all(|r| r.len == 1),
            "without GSO, one per message"
        );
        // At most 64 segments and under 60,000 bytes per message.
        let many: Vec<(&[u8], SocketAddr)> = (0..100).map(|_| (&big[..], a)).collect();
        assert_eq!(runs(&many, true)[0].len, 50);
        let tiny = [0u8; 10];
        let many: Vec<(&[u8], SocketAddr)> = (0..100).map(|_| (&tiny[..], a)).collect();
        assert_eq!(runs(&many, true)[0].len, GSO_MAX_SEGMENTS);
    }

    #[test]
    fn gso_runs_arrive_as_the_datagrams_they_were() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        // Three frames: 5 × 1000 + 200, 3 × 800, one of 50.
        let mut payloads: Vec<Vec<u8>> = Vec::new();
        for (n, size, last) in [(5, 1000, 200), (3, 800, 800), (0, 0, 50)] {
            for i in 0..n {
                payloads.push(vec![i as u8; size]);
            }
            payloads.push(vec![0xAB; last]);
        }
        let datagrams: Vec<(&[u8], SocketAddr)> =
            payloads.iter().map(|p| (p.as_slice(), to)).collect();
        assert_eq!(send(tx.as_raw_fd(), &datagrams), payloads.len());
        let mut batch = RecvBatch::new();
        let mut got = Vec::new();
        while got.len() < payloads.len() {
            let n = batch.recv(rx.as_raw_fd()).unwrap();
            for i in 0..n {
                got.push(batch.get(i).unwrap().0.to_vec());
            }
        }
        assert_eq!(got, payloads, "same datagrams, same order, same boundaries");
        assert!(
            GSO.load(std::sync::atomic::Ordering::Relaxed),
            "the kernel took the GSO sends"
        );
    }

    #[test]
    fn one_batch_fills_from_several_sockets() {
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (a, b) = (
            std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
            std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
        );
        for i in 0..3u8 {
            tx.send_to(&[b'a', i], a.local_addr().unwrap()).unwrap();
        }
        for i in 0..BATCH as u8 {
            tx.send_to(&[b'b', i], b.local_addr().unwrap()).unwrap();
        }
        let mut batch = RecvBatch::new();
        assert_eq!(batch.recv_at(a.as_raw_fd(), 0).unwrap(), 3);
        // `b` gets the slots left, and the slots `a` filled stay as they were.
        assert_eq!(batch.recv_at(b.as_raw_fd(), 3).unwrap(), BATCH - 3);
        assert_eq!(
            batch.recv_at(b.as_raw_fd(), BATCH).unwrap(),
            0,
            "no room left"
        );
        let got: Vec<Vec<u8>> = (0..BATCH)
            .map(|i| batch.get(i).unwrap().0.to_vec())
            .collect();
        let want: Vec<Vec<u8>> = (0..3u8)
            .map(|i| vec![b'a', i])
            .chain((0..BATCH as u8 - 3).map(|i| vec![b'b', i]))
            .collect();
        assert_eq!(got, want);
        // What did not fit is still queued on `b`.
        assert_eq!(batch.recv(b.as_raw_fd()).unwrap(), 3);
        assert_eq!(batch.get(0).unwrap().0, [b'b', BATCH as u8 - 3]);
    }
}
