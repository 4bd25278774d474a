//! How the sync thread waits when a pass found nothing to do.
//!
//! Without a [`Waiter`] the loops sleep ~50–100 µs per idle pass (and so wake 10–20 thousand
//! times a second). With one, they block until something can be done: a socket is readable,
//! a worker published deltas (it rings the waiter's doorbell), or a timer is due (the next
//! heartbeat, the dead-peer deadline, a bounded park). This crate has no `unsafe` and no DPDK
//! dependency, so the blocking calls (`ppoll`, eventfd) are injected from outside
//! (`SyncConfig::waiter`; the engine passes one built on `flowtwin_ffi::wait`).
//!
//! Lost wake-ups. A worker must never pay a system call per delta, so it rings only while the
//! sync thread has announced that it is parked ([`Parking`]): the Dekker pattern.
//!
//! ```text
//!   sync thread (park)                    worker (after publishing, once per loop pass)
//!   parked = true                         ring.tail = t        (Release, the ring's push)
//!   fence(SeqCst)                         fence(SeqCst)
//!   rings empty? → block on the doorbell  parked? → parked = false, ring the doorbell
//! ```
//!
//! The two SeqCst fences are totally ordered. If the sync thread's comes first, the worker's
//! load of `parked` sees `true` and rings; if the worker's comes first, the sync thread's
//! re-check of the rings sees the records and does not block. Either way no record sits in a
//! ring while the sync thread sleeps without a ring pending. A ring that arrives after the
//! sync thread woke for another reason only makes its next wait return at once.

use std::fmt;
use std::os::fd::RawFd;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Why [`Waiter::wait`] returned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Woken {
    /// Which descriptors are readable (or in error): bit `i` is `fds[i]`. A waiter that
    /// cannot tell sets every bit; the caller treats this as a hint and reads non-blockingly.
    pub readable: u64,
    /// The doorbell was rung (the ring is consumed).
    pub rung: bool,
}

/// Blocks the sync thread until there is work; injected through `SyncConfig::waiter`.
pub trait Waiter: Send + Sync + fmt::Debug {
    /// Blocks until one of `fds` is readable, [`Waiter::ring`] was called since the last
    /// return (that ring is consumed), or `timeout` has passed. May return early for no
    /// reason (the caller re-checks everything), must not return late by more than the
    /// timer slack, and must survive signals (restart on `EINTR`). At most 8 descriptors.
    fn wait(&self, fds: &[RawFd], timeout: Duration) -> Woken;

    /// Ends the current (or the next) [`Waiter::wait`] early. Called by workers: it must never
    /// block, costs at most one non-blocking system call, and rings coalesce.
    fn ring(&self);

    /// Called once on the sync thread when it starts (e.g. to lower its timer slack).
    fn on_sync_thread(&self) {}
}

/// The sync thread's parking spot, shared with every worker (see the module comment).
pub(crate) struct Parking {
    /// True while the sync thread is (about to be) blocked in [`Waiter::wait`] with every
    /// ring empty. Writers: the sync thread (sets it before re-checking the rings, clears
    /// it after waking) and a worker that rings (clears it, so one ring per park).
    parked: AtomicBool,
    pub(crate) waiter: Arc<dyn Waiter>,
}

impl fmt::Debug for Parking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Parking")
            .field("parked", &self.parked.load(Ordering::Relaxed))
            .field("waiter", &self.waiter)
            .finish()
    }
}

impl Parking {
    pub(crate) fn new(waiter: Arc<dyn Waiter>) -> Parking {
        Parking {
            parked: AtomicBool::new(false),
            waiter,
        }
    }

    /// Worker, after it published records to its ring: wake the sync thread if it parked.
    /// Costs one fence and one load while the sync thread is awake.
    #[inline]
    pub(crate) fn notify(&self) {
        // SeqCst fence: pairs with the fence in `park`. Our ring push (program order before
        // this fence) is visible to the sync thread's re-check, or its `parked = true` is
        // visible to the load below.
        fence(Ordering::SeqCst);
        // Relaxed load first: while the sync thread is awake (always, under load) this is
        // a read of a shared cache line, no RMW. The swap makes exactly one worker ring
        // per park; the doorbell's system call orders the rest.
        if self.parked.load(Ordering::Relaxed) && self.parked.swap(false, Ordering::Relaxed) {
            self.waiter.ring();
        }
    }

    /// Sync thread: announce parking, re-check `has_work` (the rings), and block in the
    /// waiter unless there is work. `None` if it did not block.
    pub(crate) fn park(
        &self,
        has_work: impl FnOnce() -> bool,
        fds: &[RawFd],
        timeout: Duration,
    ) -> Option<Woken> {
        self.parked.store(true, Ordering::Relaxed);
        // SeqCst fence: pairs with the fence in `notify` (module comment): `has_work`'s
        // Acquire loads of the ring tails come after it.
        fence(Ordering::SeqCst);
        if has_work() {
            self.parked.store(false, Ordering::Relaxed);
            return None;
        }
        let w = self.waiter.wait(fds, timeout);
        // Awake: workers stop ringing. (A worker may already have cleared it and rung; that
        // ring, if not consumed by this wait, ends the next wait at once.)
        self.parked.store(false, Ordering::Relaxed);
        Some(w)
    }

    /// Sync thread: a plain wait that workers do not ring for (e.g. the standby's loop,
    /// whose workers are idle). [`Parking::wake`] still ends it.
    pub(crate) fn wait(&self, fds: &[RawFd], timeout: Duration) -> Woken {
        self.waiter.wait(fds, timeout)
    }

    /// Anyone (e.g. `SyncHandle::stop`): end the sync thread's current or next wait.
    pub(crate) fn wake(&self) {
        self.waiter.ring();
    }
}

/// A waiter that ignores the descriptors: it wakes for a ring or at the timeout, nothing
/// else (a Mutex + Condvar, no system call of its own). For tests that must see what the
/// doorbell alone does, and for embedders without `ppoll`; it is not what the engine uses.
#[derive(Debug, Default)]
pub struct DoorbellOnly {
    rung: Mutex<bool>,
    cv: Condvar,
}

impl Waiter for DoorbellOnly {
    fn wait(&self, _fds: &[RawFd], timeout: Duration) -> Woken {
        let g = self.rung.lock().unwrap_or_else(|e| e.into_inner());
        let (mut g, _) = self.cv.wait_timeout_while(g, timeout, |r| !*r).unwrap_or_else(|e| e.into_inner());
        Woken { readable: 0, rung: std::mem::replace(&mut *g, false) }
    }
    fn ring(&self) {
        *self.rung.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cv.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{self, RECORD_WORDS};
    use std::time::Instant;

    /// Stress the park/notify handshake: a producer publishes one record at a time and
    /// waits until the consumer took it; the consumer parks with a 20 s timeout whenever
    /// the ring is empty. A lost wake-up stalls a round for 20 s, which the test reports;
    /// there is no timer to hide it. (Whether the racy interleavings occur depends on the
    /// scheduler; the next test forces each of them.)
    #[test]
    fn no_lost_wakeup_under_ping_pong() {
        const ROUNDS: u64 = 20_000;
        let waiter = Arc::new(DoorbellOnly::default());
        let parking = Arc::new(Parking::new(waiter.clone()));
        let (mut tx, mut rx) = ring::channel(16);
        let taken = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let consumer = {
            let parking = parking.clone();
            let taken = taken.clone();
            std::thread::spawn(move || {
                let mut parks = 0u64;
                let mut slowest = Duration::ZERO;
                let mut buf = [[0u64; RECORD_WORDS]; 4];
                let mut next = 1u64;
                while next <= ROUNDS {
                    let n = rx.pop_burst(&mut buf);
                    for r in &buf[..n] {
                        assert_eq!(r[0], next);
                        next += 1;
                    }
                    if n > 0 {
                        taken.store(next - 1, Ordering::Release);
                        continue;
                    }
                    // Widen the race the re-check in `park` exists for: the producer's
                    // push landing after our empty pop but before `parked` is set.
                    for _ in 0..(next * 37) % 512 {
                        std::hint::spin_loop();
                    }
                    let t0 = Instant::now();
                    if parking
                        .park(|| !rx.is_empty(), &[], Duration::from_secs(20))
                        .is_some()
                    {
                        parks += 1;
                        slowest = slowest.max(t0.elapsed());
                    }
                }
                (parks, slowest)
            })
        };
        for i in 1..=ROUNDS {
            let mut rec = [0u64; RECORD_WORDS];
            rec[0] = i;
            tx.try_push(&rec).unwrap();
            parking.notify();
            // Vary the phase: sometimes the consumer is still awake, sometimes parking,
            // sometimes asleep.
            if i % 7 == 0 {
                std::thread::yield_now();
            }
            let mut spins = 0u32;
            while taken.load(Ordering::Acquire) < i {
                spins += 1;
                if spins < 1000 {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
        }
        let (parks, slowest) = consumer.join().unwrap();
        println!("{ROUNDS} rounds, {parks} parks, slowest park {slowest:?}");
        assert!(parks > 0, "the consumer never parked: the test tested nothing");
        assert!(slowest < Duration::from_secs(10), "a wake-up was lost ({slowest:?})");
    }

    /// The two ways a push can race a park, forced one at a time; each must end the park at
    /// once (a 60 s timeout stands for "forever").
    #[test]
    fn a_push_racing_the_park_is_never_missed() {
        let waiter = Arc::new(DoorbellOnly::default());
        let p = Parking::new(waiter.clone());
        let (mut tx, mut rx) = ring::channel(16);
        let rec = [7u64; RECORD_WORDS];
        let mut buf = [[0u64; RECORD_WORDS]; 1];
        // 1. The worker pushed and looked at the flag before the sync thread set it (so it
        //    did not ring): the re-check after setting the flag finds the record.
        tx.try_push(&rec).unwrap();
        p.notify();
        let t0 = Instant::now();
        assert!(p.park(|| !rx.is_empty(), &[], Duration::from_secs(60)).is_none());
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert_eq!(rx.pop_burst(&mut buf), 1);
        // 2. The worker pushed after the re-check but saw the flag: it rang, so the wait that
        //    follows returns at once.
        let t0 = Instant::now();
        let woken = p.park(
            || {
                let empty = rx.is_empty();
                tx.try_push(&rec).unwrap();
                p.notify();
                !empty
            },
            &[],
            Duration::from_secs(60),
        );
        assert_eq!(woken, Some(Woken { readable: 0, rung: true }));
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert_eq!(rx.pop_burst(&mut buf), 1);
        // 3. A ring left over from case 2's race (consumed there) does not linger; a stale one
        //    would only end the next wait early, which is harmless.
        assert!(!*waiter.rung.lock().unwrap());
    }

    /// The worker rings only while the sync thread is parked, and once per park.
    #[test]
    fn rings_only_while_parked() {
        #[derive(Debug, Default)]
        struct Counting(std::sync::atomic::AtomicU64);
        impl Waiter for Counting {
            fn wait(&self, _: &[RawFd], _: Duration) -> Woken {
                Woken::default()
            }
            fn ring(&self) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let w = Arc::new(Counting::default());
        let p = Parking::new(w.clone());
        for _ in 0..100 {
            p.notify();
        }
        assert_eq!(w.0.load(Ordering::Relaxed), 0, "awake: no rings");
        p.parked.store(true, Ordering::Relaxed);
        for _ in 0..100 {
            p.notify();
        }
        assert_eq!(w.0.load(Ordering::Relaxed), 1, "parked: one ring");
        // park() with work pending does not block and leaves the flag clear.
        assert!(p.park(|| true, &[], Duration::from_secs(60)).is_none());
        assert!(!p.parked.load(Ordering::Relaxed));
        assert!(p.park(|| false, &[], Duration::from_secs(60)).is_some());
        assert!(!p.parked.load(Ordering::Relaxed));
    }
}
