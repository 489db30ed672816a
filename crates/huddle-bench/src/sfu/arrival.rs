//! When a datagram reached its socket, by the kernel's stamp (`SO_TIMESTAMPNS`), so that a
//! latency measured to it is the sender's and the server's, not also the time the generator's
//! loop, busy with other participants, took to come to that socket.

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use huddle_server::udp::batch::from_storage;

/// Linux's control message type for `SO_TIMESTAMPNS` is the option's own number.
const SCM_TIMESTAMPNS: libc::c_int = libc::SO_TIMESTAMPNS;

/// Asks the kernel to stamp each datagram `fd` receives with its arrival.
pub fn enable(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: the option is a c_int, passed with its size, on a socket the caller owns.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&raw const on).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One datagram, without blocking: its length, its sender, and when it arrived (`None` when
/// the kernel gave no stamp). `WouldBlock` when none is queued.
pub fn recv_from(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<Instant>)> {
    // SAFETY: sockaddr_storage and msghdr are plain data; all-zero is valid for both.
    let mut addr: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for one timespec's control message (CMSG_SPACE(16) is 32), aligned as cmsghdr.
    let mut control = [0u64; 8];
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = (&raw mut addr).cast();
    msg.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = mem::size_of_val(&control);
    // SAFETY: every pointer in `msg` points into a buffer that outlives the call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let from = from_storage(&addr).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, "sender neither IPv4 nor IPv6")
    })?;
    let mut stamp = None;
    // SAFETY: recvmsg filled `msg`; the CMSG_ macros walk its control buffer within
    // msg_controllen, and a SCM_TIMESTAMPNS message's data is one timespec.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == SCM_TIMESTAMPNS {
                stamp = Some(std::ptr::read_unaligned(
                    libc::CMSG_DATA(c).cast::<libc::timespec>(),
                ));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, from, stamp.map(on_instant_clock)))
}

/// The stamp is on the realtime clock: how long ago it was, read on that clock, places it on
/// `Instant`'s.
fn on_instant_clock(stamp: libc::timespec) -> Instant {
    let now = Instant::now();
    // SAFETY: timespec is plain data, filled by clock_gettime.
    let mut realtime: libc::timespec = unsafe { mem::zeroed() };
    // SAFETY: a valid clock id and a timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut realtime) };
    let nanos = |t: &libc::timespec| i128::from(t.tv_sec) * 1_000_000_000 + i128::from(t.tv_nsec);
    let ago = (nanos(&realtime) - nanos(&stamp)).clamp(0, i128::from(u64::MAX)) as u64;
    now.checked_sub(Duration::from_nanos(ago)).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn a_datagram_comes_with_its_arrival_stamped() {
        use std::os::fd::AsRawFd;
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        enable(rx.as_raw_fd()).unwrap();
        let mut buf = [0u8; 64];
        // The kernel turns receive stamping on from a work queue, so the first datagrams may
        // be stamped only when read; within a second they are stamped on arrival.
        for _ in 0..50 {
            tx.send_to(b"hello", rx.local_addr().unwrap()).unwrap();
            let sent = Instant::now();
            std::thread::sleep(Duration::from_millis(20));
            let (n, from, at) = recv_from(rx.as_raw_fd(), &mut buf).unwrap();
            assert_eq!((&buf[..n], from), (&b"hello"[..], tx.local_addr().unwrap()));
            let at = at.expect("a kernel stamp");
            if at < sent + Duration::from_millis(10) {
                let empty = recv_from(rx.as_raw_fd(), &mut buf).unwrap_err();
                assert_eq!(empty.kind(), io::ErrorKind::WouldBlock);
                return;
            }
        }
        panic!("no datagram was stamped on arrival in a second");
    }
}
