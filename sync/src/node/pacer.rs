//! The pacing of the sync loop: poll while replication is hot, wait once it is quiet
//! ([`Pacer`]), and the idle pauses of a loop without a waiter.

use std::thread;
use std::time::{Duration, Instant};

/// Idle pause of the loop (DESIGN §2: a quiet engine must not burn a core).
const IDLE_SLEEP: Duration = Duration::from_micros(50);
/// Idle pause once the loop has been idle for [`IDLE_STREAK`] passes (~1–2 ms): bounds the
/// extra latency of the first delta after a quiet period to ~100 µs.
const IDLE_SLEEP_LONG: Duration = Duration::from_micros(100);
const IDLE_STREAK: u32 = 20;

/// Paces a sync loop: poll while replication is hot (only with a
/// [`SyncConfig::busy_poll`] window), wait once it is quiet (the caller's [`Driver::idle`]:
/// block on events with a waiter, else sleep).
///
/// In strict mode every SYN-ACK, every ACK of client bytes and every reply waits for one
/// round trip worker → sync thread → standby → sync thread → worker. A sleeping loop (no
/// waiter) adds 60–110 µs per hop (the sleep plus the kernel's timer slack), three hops per
/// round trip; a blocked one (waiter) adds a wake-up of the thread, a few µs to tens of µs on
/// a VM. While records or acks keep coming (under load the next is typically tens of µs
/// away), a polling loop answers within a pass, yielding the CPU between passes so that other
/// runnable threads on the core go first. That pays off on a core of its own; where the sync thread
/// shares CPUs with the clients and the standby (the 2-vCPU test machine) the polling costs
/// more throughput than the latency it saves (BENCHMARKS.md), hence off by default.
///
/// [`SyncConfig::busy_poll`]: super::SyncConfig::busy_poll
/// [`Driver::idle`]: super::driver::Driver::idle
pub(super) struct Pacer {
    window: Duration,
    /// Last pass that moved replication state (records, batches, acks).
    hot_at: Instant,
    /// Consecutive passes that did nothing.
    streak: u32,
}

impl Pacer {
    pub(super) fn new(window: Duration) -> Pacer {
        Pacer { window, hot_at: Instant::now(), streak: 0 }
    }

    /// After a pass: `hot` if it moved replication state or is waiting for an ack that is
    /// due any moment (starts or extends the polling window), `busy` if it did anything at
    /// all (then the next pass follows at once). Returns true if the loop should wait now.
    /// Without a polling window an idle pass waits even while an ack is awaited.
    pub(super) fn pass(&mut self, hot: bool, busy: bool) -> bool {
        if hot {
            self.hot_at = Instant::now();
        }
        let polling = !self.window.is_zero() && self.hot_at.elapsed() < self.window;
        if busy {
            self.streak = 0;
            if polling {
                thread::yield_now();
            }
            return false;
        }
        if polling {
            thread::yield_now();
            return false;
        }
        self.streak = self.streak.saturating_add(1);
        true
    }

    /// The idle pause without a waiter.
    pub(super) fn sleep_time(&self) -> Duration {
        if self.streak > IDLE_STREAK {
            IDLE_SLEEP_LONG
        } else {
            IDLE_SLEEP
        }
    }
}
