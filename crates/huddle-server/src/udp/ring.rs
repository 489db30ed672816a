//! Datagrams for many UDP sockets in one system call, through io_uring.
//!
//! `sendmmsg` batches datagrams of one socket only. A TURN server with many allocations relays
//! each client datagram from that allocation's own relay socket, so consecutive datagrams rarely
//! share a socket and every one cost a system call of its own. Here a batch of sends on any
//! sockets is one `io_uring_enter`.
//!
//! Every send carries `MSG_DONTWAIT`, so io_uring completes it inline — sent, or `EAGAIN` when
//! the socket buffer is full (the datagram is dropped, as UDP may) — and never parks it for
//! later. Payloads and addresses are copied into buffers the ring owns, and [`SendRing::send`]
//! waits for every completion before it returns. Should the ring ever fail in a way that leaves
//! submissions unaccounted for, it is leaked with its buffers (so the kernel can never touch
//! freed memory) and sends go back to `sendmmsg`.
//!
//! io_uring may be unavailable (old kernel, `kernel.io_uring_disabled`, a container's seccomp
//! profile): then [`SendRing::new`] returns a ring that always uses the fallback.

use std::net::SocketAddr;
use std::os::fd::RawFd;

use io_uring::{IoUring, opcode, types};

use crate::udp::batch::{self, BATCH, SLOT};

/// One queued datagram's copy.
struct Slot {
    addr: libc::sockaddr_storage,
    addr_len: libc::socklen_t,
    buf: [u8; SLOT],
}

struct Ring {
    ring: IoUring,
    slots: Box<[Slot]>,
}

/// Sends on many sockets per system call; see the module docs.
pub struct SendRing {
    ring: Option<Box<Ring>>,
}

impl SendRing {
    /// A ring with room for [`BATCH`] sends per submission, or the `sendmmsg` fallback if this
    /// kernel or sandbox has no io_uring.
    pub fn new() -> Self {
        let ring = match IoUring::builder()
            .setup_cqsize(2 * BATCH as u32)
            .build(BATCH as u32)
        {
            Ok(ring) => Some(Box::new(Ring {
                ring,
                // SAFETY: sockaddr_storage, socklen_t and bytes are plain data; all-zero is valid.
                slots: (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect(),
            })),
            Err(e) => {
                tracing::info!(error = %e, "io_uring unavailable; relaying with sendmmsg");
                None
            }
        };
        Self { ring }
    }

    /// Sends each `(socket, payload, destination)`, in order for each socket; returns how many
    /// datagrams went out. A run of datagrams for one socket is one `sendmmsg` (UDP GSO when it
    /// can); datagrams alone on their socket — the usual case with many allocations — go
    /// together in one io_uring submission. A datagram that does not fit its socket's buffer, or
    /// cannot reach its destination, is dropped alone.
    pub fn send(&mut self, datagrams: &[(RawFd, &[u8], SocketAddr)]) -> usize {
        let mut sent = 0;
        let mut lone: Vec<(RawFd, &[u8], SocketAddr)> = Vec::with_capacity(BATCH);
        for run in datagrams.chunk_by(|a, b| a.0 == b.0) {
            match run {
                [one] if one.1.len() <= SLOT => {
                    lone.push(*one);
                    if lone.len() == BATCH {
                        sent += self.send_lone(&lone);
                        lone.clear();
                    }
                }
                _ => {
                    // What came before goes first: a socket's datagrams keep their order.
                    sent += self.send_lone(&lone);
                    lone.clear();
                    sent += send_run(run);
                }
            }
        }
        sent + self.send_lone(&lone)
    }

    /// Up to [`BATCH`] datagrams of at most [`SLOT`] bytes, each on its own socket.
    fn send_lone(&mut self, lone: &[(RawFd, &[u8], SocketAddr)]) -> usize {
        let one_by_one = |lone: &[(RawFd, &[u8], SocketAddr)]| {
            lone.iter().map(|d| send_run(std::slice::from_ref(d))).sum()
        };
        match self.ring.as_deref_mut() {
            // One datagram is one system call either way; the ring would only add a copy.
            Some(ring) if lone.len() > 1 => match ring.send(lone) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "io_uring failed; relaying with sendmmsg from now on");
                    // Submissions may still be pending: the kernel may read these buffers
                    // later, so they must never be freed.
                    if let Some(ring) = self.ring.take() {
                        Box::leak(ring);
                    }
                    one_by_one(lone)
                }
            },
            _ => one_by_one(lone),
        }
    }
}

impl Ring {
    /// Up to [`BATCH`] datagrams of at most [`SLOT`] bytes in one submission.
    fn send(&mut self, chunk: &[(RawFd, &[u8], SocketAddr)]) -> std::io::Result<usize> {
        debug_assert!(chunk.len() <= self.slots.len());
        {
            let mut sq = self.ring.submission();
            for (i, ((fd, payload, to), slot)) in
                chunk.iter().zip(self.slots.iter_mut()).enumerate()
            {
                slot.buf[..payload.len()].copy_from_slice(payload);
                (slot.addr, slot.addr_len) = batch::to_storage(to);
                let sqe =
                    opcode::Send::new(types::Fd(*fd), slot.buf.as_ptr(), payload.len() as u32)
                        .flags(libc::MSG_DONTWAIT)
                        .dest_addr((&raw const slot.addr).cast())
                        .dest_addr_len(slot.addr_len)
                        .build()
                        .user_data(i as u64);
                // SAFETY: the entry points into `slot`, which lives in `self.slots` and is not
                // touched again until its completion has been reaped below (or, on error, is
                // leaked with the ring). The queue has BATCH entries and is empty here.
                unsafe { sq.push(&sqe) }
                    .map_err(|_| std::io::Error::other("submission queue full"))?;
            }
        }
        let mut done = 0;
        let mut sent = 0;
        while done < chunk.len() {
            match self.ring.submit_and_wait(chunk.len() - done) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for cqe in self.ring.completion() {
                done += 1;
                if cqe.result() >= 0 {
                    sent += 1;
                }
            }
        }
        Ok(sent)
    }
}

/// Datagrams for one socket through `sendmmsg` (or `sendto` for one).
fn send_run(run: &[(RawFd, &[u8], SocketAddr)]) -> usize {
    let list: Vec<(&[u8], SocketAddr)> = run.iter().map(|(_, p, to)| (*p, *to)).collect();
    batch::send(run[0].0, &list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    fn receive_all(rx: &UdpSocket, n: usize) -> Vec<(Vec<u8>, SocketAddr)> {
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 4096];
        (0..n)
            .map(|_| {
                let (len, from) = rx.recv_from(&mut buf).unwrap();
                (buf[..len].to_vec(), from)
            })
            .collect()
    }

    /// A receiver and a sender on loopback.
    fn pair() -> (UdpSocket, SocketAddr, UdpSocket) {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        (rx, to, UdpSocket::bind("127.0.0.1:0").unwrap())
    }

    /// Datagrams on many sockets — alone and in runs, more than one submission's worth — arrive
    /// whole, each from its own socket, in the order given.
    fn many_sockets_in_one_call(mut ring: SendRing) {
        let (rx, to, _) = pair();
        let senders: Vec<UdpSocket> = (0..5)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let pattern = [0, 1, 2, 2, 2, 3, 4, 1, 1, 0];
        let payloads: Vec<Vec<u8>> = (0..70u8).map(|i| vec![i; 100 + usize::from(i)]).collect();
        let sender = |i: usize| &senders[pattern[i % pattern.len()]];
        let datagrams: Vec<(RawFd, &[u8], SocketAddr)> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| (sender(i).as_raw_fd(), p.as_slice(), to))
            .collect();
        assert_eq!(ring.send(&datagrams), 70);
        let got = receive_all(&rx, 70);
        let expected: Vec<(Vec<u8>, SocketAddr)> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| (p.clone(), sender(i).local_addr().unwrap()))
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn io_uring_sends_on_many_sockets() {
        let ring = SendRing::new();
        assert!(
            ring.ring.is_some(),
            "io_uring is available on these machines"
        );
        many_sockets_in_one_call(ring);
    }

    #[test]
    fn fallback_sends_on_many_sockets() {
        many_sockets_in_one_call(SendRing { ring: None });
    }

    #[test]
    fn a_failed_send_loses_that_datagram_alone() {
        let mut ring = SendRing::new();
        let (rx, to, tx) = pair();
        let other = UdpSocket::bind("127.0.0.1:0").unwrap();
        // An IPv6 destination from an IPv4 socket fails.
        let v6: SocketAddr = "[::1]:9".parse().unwrap();
        let datagrams: Vec<(RawFd, &[u8], SocketAddr)> = vec![
            (tx.as_raw_fd(), b"one", to),
            (other.as_raw_fd(), b"lost", v6),
            (tx.as_raw_fd(), b"two", to),
        ];
        assert_eq!(ring.send(&datagrams), 2);
        let got: Vec<Vec<u8>> = receive_all(&rx, 2).into_iter().map(|(d, _)| d).collect();
        assert_eq!(got, [b"one".to_vec(), b"two".to_vec()]);
        assert!(ring.ring.is_some(), "a failed send is not a failed ring");
    }

    #[test]
    fn datagrams_longer_than_a_slot_still_go_in_order() {
        let mut ring = SendRing::new();
        let (rx, to, tx) = pair();
        let other = UdpSocket::bind("127.0.0.1:0").unwrap();
        let long = vec![7u8; SLOT + 100];
        let datagrams: Vec<(RawFd, &[u8], SocketAddr)> = vec![
            (tx.as_raw_fd(), b"first", to),
            (other.as_raw_fd(), &long, to),
            (tx.as_raw_fd(), b"last", to),
        ];
        assert_eq!(ring.send(&datagrams), 3);
        let got: Vec<Vec<u8>> = receive_all(&rx, 3).into_iter().map(|(d, _)| d).collect();
        assert_eq!(got, [b"first".to_vec(), long, b"last".to_vec()]);
    }
}
