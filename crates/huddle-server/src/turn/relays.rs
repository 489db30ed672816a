//! The relay sockets: one UDP socket per allocation, owned here, a member of the relay task's
//! epoll set for as long as it is open. The set reports descriptors; the core wants relayed
//! addresses — this keeps the two views of the same sockets in step. Also the sockets held for
//! reservations (EVEN-PORT with the R bit): bound so that nothing else on the host takes the
//! port, unused until their allocation comes.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use crate::udp::batch;
use crate::udp::epoll::Epoll;

pub(super) struct Relays {
    /// Looked up for every datagram a client relays: foldhash (randomly seeded) rather than
    /// SipHash.
    by_addr: HashMap<SocketAddr, UdpSocket, foldhash::fast::RandomState>,
    /// Relayed address by descriptor, indexed by the descriptor: they are small, dense numbers.
    by_fd: Vec<Option<SocketAddr>>,
    /// Sockets bound for reservations, not yet relays.
    held: HashMap<SocketAddr, UdpSocket>,
}

/// `socket`, unless its descriptor reaches into the reserve kept for the listeners (then it is
/// closed, and the allocation refused).
fn admitted(socket: UdpSocket) -> io::Result<UdpSocket> {
    if crate::descriptors::admits(socket.as_raw_fd()) {
        Ok(socket)
    } else {
        Err(io::Error::other(
            "relay socket refused: descriptors are kept for the listeners",
        ))
    }
}

impl Relays {
    pub(super) fn new() -> Self {
        Self {
            by_addr: HashMap::default(),
            by_fd: Vec::new(),
            held: HashMap::new(),
        }
    }

    /// Makes `addr` a relay socket — the one held there, or a new one — and adds it to `poll`;
    /// with `hold_next`, also binds and holds the next port (the whole call fails if either is
    /// taken). The address bound.
    pub(super) fn bind(
        &mut self,
        addr: SocketAddr,
        hold_next: bool,
        poll: &Epoll,
    ) -> io::Result<SocketAddr> {
        let socket = match self.held.remove(&addr) {
            Some(held) => held,
            None => admitted(UdpSocket::bind(addr)?)?,
        };
        socket.set_nonblocking(true)?;
        let fd = socket.as_raw_fd();
        batch::set_buffers(fd, 1 << 20);
        let local = socket.local_addr()?;
        let next = if hold_next {
            let port = local.port().checked_add(1);
            let next = SocketAddr::new(local.ip(), port.ok_or(io::ErrorKind::AddrNotAvailable)?);
            Some((next, admitted(UdpSocket::bind(next)?)?))
        } else {
            None
        };
        poll.add(fd)?;
        self.held.extend(next);
        let index = slot(fd);
        if self.by_fd.len() <= index {
            self.by_fd.resize(index + 1, None);
        }
        self.by_fd[index] = Some(local);
        self.by_addr.insert(local, socket);
        Ok(local)
    }

    /// Closes relay `addr`'s socket, freeing its port at once; false when there is none. The
    /// socket leaves `poll` before its descriptor can be reused.
    pub(super) fn close(&mut self, addr: SocketAddr, poll: &Epoll) -> bool {
        let Some(socket) = self.by_addr.remove(&addr) else {
            return false;
        };
        let fd = socket.as_raw_fd();
        // Closing would also take it out of the set; removing first keeps the order plain.
        let _ = poll.remove(fd);
        if let Some(entry) = self.by_fd.get_mut(slot(fd)) {
            *entry = None;
        }
        true
    }

    /// Closes the socket held at `addr` (its reservation expired).
    pub(super) fn release(&mut self, addr: SocketAddr) {
        self.held.remove(&addr);
    }

    /// Closes every relay and held socket (relays leave the set as they close).
    pub(super) fn clear(&mut self) {
        self.by_addr.clear();
        self.by_fd.clear();
        self.held.clear();
    }

    pub(super) fn get(&self, addr: &SocketAddr) -> Option<&UdpSocket> {
        self.by_addr.get(addr)
    }

    /// The relayed address of the socket behind `fd`, as the epoll set reports it.
    pub(super) fn addr_of(&self, fd: RawFd) -> Option<SocketAddr> {
        self.by_fd.get(slot(fd)).copied().flatten()
    }
}

/// `fd`'s index in `by_fd`: a descriptor is never negative (one that were would land past the
/// end, so on no relay).
fn slot(fd: RawFd) -> usize {
    usize::try_from(fd).unwrap_or(usize::MAX)
}
