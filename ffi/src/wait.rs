//! Blocking waits for control threads (the sync thread): wait until one of a few descriptors
//! is readable or a deadline passes ([`wait_readable`], `ppoll` with a nanosecond timeout), a
//! [`Doorbell`] another thread rings to end such a wait early (an eventfd), and the calling
//! thread's timer slack ([`set_timer_slack`]).
//!
//! These are plain Linux system calls, not DPDK; they live here because this is the crate
//! allowed `unsafe`. Errors are `std::io::Error`s from `errno`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Most descriptors one [`wait_readable`] call takes (the sync thread waits on two).
pub const MAX_WAIT_FDS: usize = 8;

/// Which descriptors of a [`wait_readable`] call are ready: bit `i` is `fds[i]`. "Ready"
/// includes errors and hang-ups (`POLLERR`, `POLLHUP`): a read then reports them.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadySet(pub u64);

impl ReadySet {
    /// Is `fds[i]` ready?
    #[inline]
    pub fn contains(self, i: usize) -> bool {
        i < 64 && self.0 & (1 << i) != 0
    }
    /// Nothing ready: the wait timed out.
    #[inline]
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// `Duration` as a `timespec` (saturating: ~292 billion years is "forever" enough).
fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

/// Blocks until at least one of `fds` is readable (or has an error / hang-up), or `timeout`
/// has passed, and returns which are ready (empty on timeout). A signal does not end the wait
/// early: `EINTR` restarts it with the time that is left. The timeout has nanosecond
/// resolution (`ppoll`); the kernel adds the thread's timer slack (see [`set_timer_slack`]).
///
/// Errors: more than [`MAX_WAIT_FDS`] descriptors (`InvalidInput`), or what `ppoll` reports
/// (`ENOMEM`); a closed descriptor is reported ready (`POLLNVAL`), not as an error.
pub fn wait_readable(fds: &[RawFd], timeout: Duration) -> io::Result<ReadySet> {
    if fds.len() > MAX_WAIT_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("wait_readable: {} descriptors, at most {MAX_WAIT_FDS}", fds.len()),
        ));
    }
    let mut pfds = [libc::pollfd { fd: -1, events: 0, revents: 0 }; MAX_WAIT_FDS];
    for (p, &fd) in pfds.iter_mut().zip(fds) {
        p.fd = fd;
        p.events = libc::POLLIN;
    }
    let deadline = Instant::now().checked_add(timeout);
    let mut left = timeout;
    loop {
        let ts = timespec(left);
        // SAFETY: `pfds` is a valid, writable array of at least `fds.len()` pollfd entries
        // that lives across the call; `ts` is a valid timespec; a null signal mask means "do
        // not change the mask". ppoll writes only `revents` of the first `fds.len()` entries.
        let r = unsafe {
            libc::ppoll(pfds.as_mut_ptr(), fds.len() as libc::nfds_t, &ts, std::ptr::null())
        };
        if r >= 0 {
            let mut set = 0u64;
            for (i, p) in pfds[..fds.len()].iter().enumerate() {
                if p.revents != 0 {
                    set |= 1 << i;
                }
            }
            return Ok(ReadySet(set));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
        // EINTR: wait for the rest of the time. None left: the next ppoll, with a zero
        // timeout, still reports what became ready meanwhile.
        if let Some(d) = deadline {
            left = d.saturating_duration_since(Instant::now());
        }
    }
}

/// A wake-up another thread can send to a thread blocked in [`wait_readable`]: an eventfd
/// that polls readable from the first [`Doorbell::ring`] until [`Doorbell::drain`].
///
/// Rings coalesce: any number of them before a `drain` is one wake-up. `ring` never blocks
/// (the descriptor is non-blocking) and costs one `write` system call, so callers on a fast
/// path ring only when the waiter has said it is about to block.
#[derive(Debug)]
pub struct Doorbell {
    fd: OwnedFd,
}

impl Doorbell {
    /// A new, silent doorbell (`eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)`).
    pub fn new() -> io::Result<Doorbell> {
        // SAFETY: eventfd takes no pointers; it returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by eventfd, is open, and nothing else owns it.
        Ok(Doorbell { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// Makes the doorbell readable (wakes a waiter). Never blocks; a ring that cannot be
    /// recorded (the counter is at its maximum, i.e. already rung) is not needed.
    #[inline]
    pub fn ring(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own open eventfd. The result is
        // ignored on purpose: the only failure of a non-blocking eventfd write of 1 is EAGAIN
        // (counter saturated), and then the doorbell is already readable.
        let _ = unsafe {
            libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), std::mem::size_of::<u64>())
        };
    }

    /// Consumes every ring so far (the doorbell stops polling readable). Returns whether it
    /// had been rung. Never blocks.
    pub fn drain(&self) -> bool {
        let mut n: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live, writable u64 from our own open eventfd.
        let r = unsafe {
            libc::read(self.fd.as_raw_fd(), (&mut n as *mut u64).cast(), std::mem::size_of::<u64>())
        };
        r == std::mem::size_of::<u64>() as isize && n > 0
    }
}

impl AsRawFd for Doorbell {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Sets the calling thread's timer slack (`prctl(PR_SET_TIMERSLACK)`): how much later than
/// asked the kernel may end its timed waits and sleeps, to batch wake-ups. The default is
/// 50 µs; a latency-sensitive control thread asks for a few µs. Zero restores the default
/// (the process's initial slack).
pub fn set_timer_slack(slack: Duration) -> io::Result<()> {
    let ns = libc::c_ulong::try_from(slack.as_nanos()).unwrap_or(libc::c_ulong::MAX);
    // SAFETY: PR_SET_TIMERSLACK takes an integer and affects only the calling thread.
    let r = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, ns, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The calling thread's timer slack (`prctl(PR_GET_TIMERSLACK)`).
pub fn timer_slack() -> io::Result<Duration> {
    // SAFETY: PR_GET_TIMERSLACK takes no pointer and returns the slack in ns.
    let r = unsafe { libc::prctl(libc::PR_GET_TIMERSLACK, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Duration::from_nanos(r as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;

    #[test]
    fn readable_descriptor_is_reported() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let (_c, d) = UnixStream::pair().unwrap();
        let fds = [d.as_raw_fd(), b.as_raw_fd()];
        assert!(wait_readable(&fds, Duration::ZERO).unwrap().is_empty());
        a.write_all(b"x").unwrap();
        let t0 = Instant::now();
        let r = wait_readable(&fds, Duration::from_secs(5)).unwrap();
        assert!(t0.elapsed() < Duration::from_secs(1));
        assert_eq!(r, ReadySet(0b10));
        assert!(r.contains(1) && !r.contains(0));
    }

    #[test]
    fn hang_up_counts_as_ready() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(a);
        let r = wait_readable(&[b.as_raw_fd()], Duration::from_secs(5)).unwrap();
        assert!(r.contains(0));
    }

    #[test]
    fn timeout_is_honoured() {
        let (_a, b) = UnixStream::pair().unwrap();
        for ms in [0u64, 3, 20] {
            let t0 = Instant::now();
            let r = wait_readable(&[b.as_raw_fd()], Duration::from_millis(ms)).unwrap();
            let el = t0.elapsed();
            assert!(r.is_empty());
            assert!(el >= Duration::from_millis(ms), "{ms} ms wait took {el:?}");
            assert!(el < Duration::from_millis(ms + 500), "{ms} ms wait took {el:?}");
        }
        // No descriptors at all: a plain precise sleep.
        let t0 = Instant::now();
        assert!(wait_readable(&[], Duration::from_millis(2)).unwrap().is_empty());
        assert!(t0.elapsed() >= Duration::from_millis(2));
    }

    /// Signals arriving during the wait (EINTR) neither end it early nor lose its deadline.
    #[test]
    fn signals_do_not_end_the_wait() {
        extern "C" fn on_signal(_: libc::c_int) {}
        // SAFETY: installs a handler that does nothing (async-signal-safe) for SIGURG, which
        // nothing else in this test process uses; no SA_RESTART, so ppoll sees EINTR.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            assert_eq!(libc::sigaction(libc::SIGURG, &sa, std::ptr::null_mut()), 0);
        }
        let (_a, b) = UnixStream::pair().unwrap();
        let fd = b.as_raw_fd();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            // SAFETY: pthread_self has no preconditions.
            tx.send(unsafe { libc::pthread_self() }).unwrap();
            let t0 = Instant::now();
            let r = wait_readable(&[fd], Duration::from_millis(150)).unwrap();
            (r, t0.elapsed())
        });
        let tid = rx.recv().unwrap();
        let mut sent = 0;
        while !waiter.is_finished() && sent < 50 {
            std::thread::sleep(Duration::from_millis(2));
            // SAFETY: `tid` is the waiter thread, alive (not finished; joined only below).
            unsafe { libc::pthread_kill(tid, libc::SIGURG) };
            sent += 1;
        }
        let (r, el) = waiter.join().unwrap();
        assert!(sent > 5);
        assert!(r.is_empty());
        assert!(el >= Duration::from_millis(150), "returned after {el:?}");
        assert!(el < Duration::from_secs(2), "returned after {el:?}");
    }

    #[test]
    fn too_many_descriptors_is_an_error() {
        let fds = [0; MAX_WAIT_FDS + 1];
        let e = wait_readable(&fds, Duration::ZERO).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn doorbell_rings_coalesce_and_drain() {
        let bell = Doorbell::new().unwrap();
        let fd = [bell.as_raw_fd()];
        assert!(wait_readable(&fd, Duration::ZERO).unwrap().is_empty());
        assert!(!bell.drain(), "a silent bell drains nothing");
        bell.ring();
        bell.ring();
        bell.ring();
        assert!(wait_readable(&fd, Duration::ZERO).unwrap().contains(0));
        assert!(bell.drain());
        assert!(wait_readable(&fd, Duration::ZERO).unwrap().is_empty(), "one drain ends all rings");
        assert!(!bell.drain());
    }

    #[test]
    fn doorbell_wakes_a_blocked_waiter() {
        let bell = Arc::new(Doorbell::new().unwrap());
        let (_a, b) = UnixStream::pair().unwrap();
        let ringer = {
            let bell = bell.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                bell.ring();
            })
        };
        let t0 = Instant::now();
        let r = wait_readable(&[b.as_raw_fd(), bell.as_raw_fd()], Duration::from_secs(10)).unwrap();
        let el = t0.elapsed();
        ringer.join().unwrap();
        assert_eq!(r, ReadySet(0b10));
        assert!(el < Duration::from_secs(5), "woken after {el:?}");
        assert!(bell.drain());
    }

    #[test]
    fn timer_slack_is_per_thread_and_settable() {
        std::thread::spawn(|| {
            set_timer_slack(Duration::from_micros(5)).unwrap();
            assert_eq!(timer_slack().unwrap(), Duration::from_micros(5));
            set_timer_slack(Duration::from_nanos(1)).unwrap();
            assert_eq!(timer_slack().unwrap(), Duration::from_nanos(1));
        })
        .join()
        .unwrap();
    }
}
