//! A worker's timers through one timerfd in its poll set, armed for the
//! earliest deadline only when that deadline changes. The poll itself then
//! waits without a timeout: a wait with a timeout arms and cancels a kernel
//! timer on every pass, which on virtual machines costs microseconds per
//! pass (a request in each direction is a pass).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

pub struct TimerFd {
    fd: OwnedFd,
    /// The deadline the kernel timer is set for, if any.
    armed: Option<Instant>,
}

impl TimerFd {
    /// A disarmed timer registered under `token`.
    pub fn new(registry: &Registry, token: Token) -> io::Result<TimerFd> {
        // SAFETY: plain system call; the descriptor is owned below.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        registry.register(&mut SourceFd(&fd.as_raw_fd()), token, Interest::READABLE)?;
        Ok(TimerFd { fd, armed: None })
    }

    /// Makes the timer go off at `next` (the earliest pending deadline).
    /// Costs a system call only when `next` differs from what is set.
    pub fn arm(&mut self, next: Option<Instant>) -> io::Result<()> {
        if next == self.armed {
            return Ok(());
        }
        let Some(at) = next else {
            // Nothing pending: a timer left set goes off once, harmlessly.
            self.armed = None;
            return Ok(());
        };
        // An all-zero value would disarm: a deadline already due fires at once.
        let after = at
            .saturating_duration_since(Instant::now())
            .max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: valid descriptor and a fully initialised itimerspec.
        let rc =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        self.armed = Some(at);
        Ok(())
    }

    /// The timer went off: consume its count so the next expiry signals
    /// again, and forget the deadline (it has passed).
    pub fn went_off(&mut self) {
        let mut count = [0u8; 8];
        // SAFETY: reads at most 8 bytes into an 8-byte buffer.
        unsafe {
            libc::read(self.fd.as_raw_fd(), count.as_mut_ptr().cast(), count.len());
        }
        self.armed = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll};

    const T: Token = Token(7);

    fn wait(poll: &mut Poll, within: Duration) -> bool {
        let mut events = Events::with_capacity(4);
        poll.poll(&mut events, Some(within)).expect("poll");
        events.iter().any(|e| e.token() == T)
    }

    #[test]
    fn goes_off_at_the_deadline_and_again_once_rearmed() {
        let mut poll = Poll::new().expect("poll");
        let mut t = TimerFd::new(poll.registry(), T).expect("timerfd");
        assert!(
            !wait(&mut poll, Duration::from_millis(30)),
            "a new timer is disarmed"
        );

        let start = Instant::now();
        t.arm(Some(start + Duration::from_millis(40))).expect("arm");
        assert!(wait(&mut poll, Duration::from_secs(2)));
        assert!(
            start.elapsed() >= Duration::from_millis(40),
            "not before its deadline"
        );
        t.went_off();
        assert!(!wait(&mut poll, Duration::from_millis(30)), "one-shot");

        // A deadline already past goes off at once.
        let now = Instant::now();
        t.arm(Some(now - Duration::from_millis(5))).expect("arm");
        assert!(wait(&mut poll, Duration::from_secs(2)));
        t.went_off();
    }

    #[test]
    fn an_earlier_deadline_replaces_a_later_one() {
        let mut poll = Poll::new().expect("poll");
        let mut t = TimerFd::new(poll.registry(), T).expect("timerfd");
        let now = Instant::now();
        t.arm(Some(now + Duration::from_secs(60))).expect("arm");
        t.arm(Some(now + Duration::from_millis(20))).expect("arm");
        assert!(wait(&mut poll, Duration::from_secs(2)));
        assert!(now.elapsed() < Duration::from_secs(50));
    }
}
