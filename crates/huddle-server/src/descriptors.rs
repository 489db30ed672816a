//! File descriptors: the process's limit, and a reserve that what clients can open in numbers
//! (TURN relay sockets, TURN TCP/TLS connections) may never take — so the HTTPS listener, the
//! signaling sockets and the ICE endpoint keep answering when TURN is full.
//!
//! Linux hands out the lowest free descriptor, so a new descriptor numbered `n` means `0..n` are
//! all open: refusing every relay socket or TURN stream whose number falls into the top
//! [`reserve`] of the limit leaves that many for everything else, with no bookkeeping and with
//! the limit read when it matters (an operator or a test may change it).

use std::io;
use std::os::fd::RawFd;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, as servers do at start (a default soft
/// limit of 1,024 is a few hundred calls through TURN); returns `(soft, hard)` as now in force.
pub fn raise_limit() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// The soft descriptor limit now in force.
fn soft_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    lim.rlim_cur
}

/// Descriptors kept for the listeners and the connections they accept: a tenth of the limit,
/// at least 64 and at most 4,096.
fn reserve(limit: u64) -> u64 {
    (limit / 10).clamp(64, 4096)
}

/// Whether a descriptor just opened for a client-driven resource may be kept; `false` means it
/// reaches into the reserve and must be closed (the request refused: 508, or the connection
/// dropped).
pub(crate) fn admits(fd: RawFd) -> bool {
    let limit = soft_limit();
    u64::try_from(fd).is_ok_and(|fd| fd + reserve(limit) < limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_a_tenth_within_bounds() {
        assert_eq!(reserve(1024), 102);
        assert_eq!(reserve(256), 64);
        assert_eq!(reserve(1 << 20), 4096);
    }

    #[test]
    fn low_descriptors_are_admitted() {
        assert!(admits(3));
        assert!(!admits(RawFd::MAX));
    }
}
