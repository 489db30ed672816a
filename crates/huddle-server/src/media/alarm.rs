//! The media worker's one deadline, as a timerfd that its runtime polls like a socket.
//!
//! The engine's next deadline moves with nearly every datagram. A tokio `Sleep` moved earlier
//! wakes the runtime's driver to re-arm it — a write to the runtime's eventfd, and then a turn
//! of the loop with nothing to do — about once for every four datagrams in a room of four. A
//! timerfd is re-armed by one system call and wakes the loop only when it rings. It rings on a
//! millisecond grid, as tokio's timer wheel does: the sessions' deadlines within a millisecond
//! share one wake-up, and a deadline that moves within its millisecond is not re-armed.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// The alarm rings on a grid of this step: deadlines within one step share a ring, and moving a
/// deadline within its step costs no system call.
const STEP: Duration = Duration::from_millis(1);

pub struct Alarm {
    fd: AsyncFd<OwnedFd>,
    /// When it is set to ring, if it is: a point of the grid.
    armed: Option<Instant>,
    /// The grid's origin.
    epoch: Instant,
}

impl Alarm {
    /// An alarm that is not set. Needs a tokio runtime with I/O enabled.
    pub fn new() -> io::Result<Self> {
        // SAFETY: a plain system call; a non-negative result is a descriptor we now own.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nothing else; moved into the AsyncFd,
        // it is closed only when the AsyncFd drops it.
        let fd = unsafe {
            AsyncFd::register_with_interest(OwnedFd::from_raw_fd(fd), Interest::READABLE)
        }
        .map_err(|e| e.into_parts().1)?;
        Ok(Self {
            fd,
            armed: None,
            epoch: Instant::now(),
        })
    }

    /// Sets the alarm to ring at `at` — at once if that has passed — or unsets it for `None`.
    /// Setting it to when it is already set costs nothing, not even a look at the clock.
    pub fn set(&mut self, at: Option<Instant>) -> io::Result<()> {
        let at = at.map(|at| self.on_grid(at));
        if at == self.armed {
            return Ok(());
        }
        // A zero value disarms a timerfd, so a time already passed rings after a nanosecond.
        let after = at.map_or(Duration::ZERO, |at| {
            at.saturating_duration_since(Instant::now())
                .max(Duration::from_nanos(1))
        });
        let spec = libc::itimerspec {
            it_interval: timespec(Duration::ZERO),
            it_value: timespec(after),
        };
        // SAFETY: `spec` is valid for the call and the old value is not asked for.
        let r =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        self.armed = at;
        Ok(())
    }

    /// The first point of the grid at or after `at`.
    fn on_grid(&self, at: Instant) -> Instant {
        let steps = at
            .saturating_duration_since(self.epoch)
            .as_nanos()
            .div_ceil(STEP.as_nanos());
        // A deadline past u32::MAX steps (50 days of 1 ms) is as good as never.
        self.epoch + STEP * u32::try_from(steps).unwrap_or(u32::MAX)
    }

    /// Resolves when the alarm rings; it is then unset.
    pub async fn rung(&mut self) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            let read = guard.try_io(|fd| {
                let mut expirations = [0u8; 8];
                // SAFETY: the buffer is valid for its length; a timerfd reads as 8 bytes.
                let n = unsafe {
                    libc::read(
                        fd.as_raw_fd(),
                        expirations.as_mut_ptr().cast(),
                        expirations.len(),
                    )
                };
                if n < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
            // Err: it was re-armed since tokio saw it readable; wait again.
            if let Ok(result) = read {
                // Read, it is not readable until it rings again (a new edge for tokio); left
                // marked ready, the next wait would cost a read that finds nothing.
                guard.clear_ready();
                self.armed = None;
                return result;
            }
        }
    }
}

fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        // A deadline centuries away saturates rather than wraps.
        tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: d.subsec_nanos().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits for `alarm` to ring; fails after five seconds.
    async fn rings(alarm: &mut Alarm) {
        tokio::time::timeout(Duration::from_secs(5), alarm.rung())
            .await
            .expect("the alarm rings")
            .unwrap();
    }

    #[tokio::test]
    async fn rings_at_its_time_and_not_before() {
        let mut alarm = Alarm::new().unwrap();
        let start = Instant::now();
        let at = start + Duration::from_millis(30);
        alarm.set(Some(at)).unwrap();
        rings(&mut alarm).await;
        assert!(Instant::now() >= at);
    }

    #[tokio::test]
    async fn a_time_passed_rings_at_once_and_again_when_set_again() {
        let mut alarm = Alarm::new().unwrap();
        let start = Instant::now();
        let passed = Some(start - Duration::from_millis(1));
        alarm.set(Some(start + Duration::from_secs(3600))).unwrap();
        alarm.set(passed).unwrap();
        rings(&mut alarm).await;
        // Rung, it is unset: the same time set again rings again.
        alarm.set(passed).unwrap();
        rings(&mut alarm).await;
    }

    #[tokio::test]
    async fn an_unset_alarm_does_not_ring() {
        let mut alarm = Alarm::new().unwrap();
        let now = Instant::now();
        alarm.set(Some(now + Duration::from_millis(5))).unwrap();
        alarm.set(None).unwrap();
        let waited = tokio::time::timeout(Duration::from_millis(50), alarm.rung()).await;
        assert!(waited.is_err());
    }
}
