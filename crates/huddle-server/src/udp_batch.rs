//! Batched UDP I/O (`recvmmsg`/`sendmmsg`): one system call for many datagrams on the TURN
//! relay's and the media peer's hot paths, where per-packet system calls are most of the cost.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Datagrams received or sent per system call.
pub const BATCH: usize = 32;
/// Room for one datagram.
pub const SLOT: usize = 2048;

/// Receive buffers for one batch.
pub struct RecvBatch {
    bufs: Vec<[u8; SLOT]>,
    addrs: Vec<libc::sockaddr_storage>,
    lens: Vec<usize>,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    pub fn new() -> Self {
        // SAFETY: sockaddr_storage is plain data; all-zero is a valid (empty) value.
        let zero: libc::sockaddr_storage = unsafe { mem::zeroed() };
        Self {
            bufs: vec![[0u8; SLOT]; BATCH],
            addrs: vec![zero; BATCH],
            lens: vec![0; BATCH],
        }
    }

    /// Receives up to [`BATCH`] datagrams without blocking; `WouldBlock` when none is queued.
    /// Datagrams longer than [`SLOT`] arrive truncated, and are then dropped by the core's
    /// length checks (a TURN client's frames are MTU-sized).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let mut iovs: Vec<libc::iovec> = self
            .bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: SLOT,
            })
            .collect();
        let mut hdrs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .zip(self.addrs.iter_mut())
            .map(|(iov, addr)| {
                let len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                mmsghdr(iov, addr, len)
            })
            .collect();
        // SAFETY: `hdrs` holds BATCH initialised headers pointing into buffers owned by `self`.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        for (i, h) in hdrs.iter().take(n as usize).enumerate() {
            self.lens[i] = h.msg_len as usize;
        }
        Ok(n as usize)
    }

    /// Datagram `i` of the last batch and its source.
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        let from = from_storage(&self.addrs[i])?;
        Some((&self.bufs[i][..self.lens[i].min(SLOT)], from))
    }
}

/// Sends each `(payload, destination)` from `fd`, [`BATCH`] per system call; returns how many
/// went out (a full socket buffer stops the batch early: those datagrams are dropped, as UDP may).
pub fn send(fd: RawFd, datagrams: &[(&[u8], SocketAddr)]) -> usize {
    let mut sent = 0;
    for chunk in datagrams.chunks(BATCH) {
        let mut addrs: Vec<(libc::sockaddr_storage, libc::socklen_t)> =
            chunk.iter().map(|(_, to)| to_storage(to)).collect();
        let mut iovs: Vec<libc::iovec> = chunk
            .iter()
            .map(|(p, _)| libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            })
            .collect();
        let mut hdrs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .zip(addrs.iter_mut())
            .map(|(iov, (addr, len))| mmsghdr(iov, addr, *len))
            .collect();
        // SAFETY: `hdrs` holds `chunk.len()` initialised headers whose buffers outlive the call.
        let n = unsafe {
            libc::sendmmsg(
                fd,
                hdrs.as_mut_ptr(),
                hdrs.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if n <= 0 {
            break;
        }
        sent += n as usize;
        if (n as usize) < chunk.len() {
            break;
        }
    }
    sent
}

/// Closes the socket behind `fd` now, releasing its port, while `fd` itself stays open — pointing
/// at a fresh, unbound UDP socket — for whoever still holds it (a task that will drop it soon).
/// `dup2` replaces the descriptor's socket in one step; epoll forgets the old one by itself.
pub fn close_in_place(fd: RawFd, v6: bool) -> io::Result<()> {
    let family = if v6 { libc::AF_INET6 } else { libc::AF_INET };
    // SAFETY: plain system calls on descriptors we own; `placeholder` is closed on every path.
    unsafe {
        let placeholder = libc::socket(
            family,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        );
        if placeholder < 0 {
            return Err(io::Error::last_os_error());
        }
        let result = libc::dup2(placeholder, fd);
        libc::close(placeholder);
        if result < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
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

fn to_storage(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
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

fn from_storage(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
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
    fn close_in_place_releases_the_port() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = a.local_addr().unwrap();
        assert!(std::net::UdpSocket::bind(addr).is_err());
        close_in_place(a.as_raw_fd(), false).unwrap();
        let b = std::net::UdpSocket::bind(addr).expect("the port is free again");
        drop(a); // closes the placeholder, not `b`
        b.send_to(b"x", addr).unwrap();
        let mut buf = [0u8; 4];
        b.set_read_timeout(Some(std::time::Duration::from_secs(1)))
            .unwrap();
        assert_eq!(b.recv(&mut buf).unwrap(), 1);
    }
}
