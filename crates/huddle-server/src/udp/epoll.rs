//! An epoll set of our own, for many sockets that one task serves together (the TURN relay
//! sockets; the TURN benchmark's receiving clients). The set's descriptor is itself pollable:
//! registered with tokio, it wakes the task when any member has data, and [`Epoll::ready`] then
//! says which.
//!
//! Members are level-triggered: a socket the task did not drain in one round is reported again
//! in the next, so a round may take a bounded share from each socket without losing track.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Readiness reports fetched per [`Epoll::ready`] call.
pub const EVENTS: usize = 64;

/// Room for one call's readiness reports.
pub type Events = [libc::epoll_event; EVENTS];

/// An empty [`Events`] buffer.
pub fn events() -> Events {
    [libc::epoll_event { events: 0, u64: 0 }; EVENTS]
}

/// An epoll instance; members are identified by their descriptor.
pub struct Epoll(OwnedFd);

impl Epoll {
    pub fn new() -> io::Result<Self> {
        // SAFETY: a plain system call; a non-negative result is a descriptor we now own.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Watches `fd` for incoming data until [`Epoll::remove`] (or until it is closed).
    pub fn add(&self, fd: RawFd) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: fd as u64,
        };
        // SAFETY: `event` is valid for the call; the kernel checks both descriptors.
        let r = unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Stops watching `fd`; its reports not yet fetched are dropped with it.
    pub fn remove(&self, fd: RawFd) -> io::Result<()> {
        // SAFETY: EPOLL_CTL_DEL ignores the event argument (null allowed since Linux 2.6.9).
        let r = unsafe {
            libc::epoll_ctl(
                self.0.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The members with data now, without waiting: their descriptors, at most [`EVENTS`].
    /// `WouldBlock` when there are none, so the caller can hand the set back to its runtime.
    pub fn ready<'e>(
        &self,
        events: &'e mut Events,
    ) -> io::Result<impl ExactSizeIterator<Item = RawFd> + 'e> {
        self.wait(events, Duration::ZERO)
    }

    /// The members with data, waiting up to `timeout` for one (a thread of its own, not a task);
    /// `WouldBlock` when none had data in that time.
    pub fn wait<'e>(
        &self,
        events: &'e mut Events,
        timeout: Duration,
    ) -> io::Result<impl ExactSizeIterator<Item = RawFd> + 'e> {
        let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `events` has room for EVENTS reports.
        let n = unsafe {
            libc::epoll_wait(
                self.0.as_raw_fd(),
                events.as_mut_ptr(),
                EVENTS as libc::c_int,
                millis,
            )
        };
        match n {
            n if n < 0 => Err(io::Error::last_os_error()),
            0 => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(events[..n as usize].iter().map(|e| {
                // Copied out: the struct is packed on x86-64.
                let token = e.u64;
                token as RawFd
            })),
        }
    }
}

impl AsRawFd for Epoll {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    fn socket() -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_nonblocking(true).unwrap();
        s
    }

    #[test]
    fn reports_the_members_with_data_until_drained_or_removed() {
        let epoll = Epoll::new().unwrap();
        let (a, b, c) = (socket(), socket(), socket());
        let sender = socket();
        for s in [&a, &b, &c] {
            epoll.add(s.as_raw_fd()).unwrap();
        }
        let mut events = events();
        assert_eq!(
            epoll.ready(&mut events).err().map(|e| e.kind()),
            Some(io::ErrorKind::WouldBlock)
        );

        sender.send_to(b"x", a.local_addr().unwrap()).unwrap();
        sender.send_to(b"y", c.local_addr().unwrap()).unwrap();
        let mut ready: Vec<RawFd> = epoll.ready(&mut events).unwrap().collect();
        ready.sort();
        let mut want = vec![a.as_raw_fd(), c.as_raw_fd()];
        want.sort();
        assert_eq!(ready, want);

        // Level-triggered: `a`, not read, is reported again; `c`, removed, is not.
        epoll.remove(c.as_raw_fd()).unwrap();
        let ready: Vec<RawFd> = epoll.ready(&mut events).unwrap().collect();
        assert_eq!(ready, vec![a.as_raw_fd()]);

        let mut buf = [0u8; 8];
        a.recv_from(&mut buf).unwrap();
        assert!(epoll.ready(&mut events).is_err());
    }
}
