//! Packet capture of a running engine (`flowtwin ctl capture`): while a capture runs, each
//! worker copies the frames it receives from its port and the frames it hands to its port
//! (after output commit: what really leaves), filtered by a tcpdump expression and cut to a
//! snap length, into a bounded channel that the capture's writer drains into a pcapng file.
//!
//! Off, it costs a worker a test that no session is set per loop pass and per transmitted
//! burst, and a look at the tap's generation in its 1 ms housekeeping; on, per frame, the
//! filter and a copy. A full channel drops the
//! frame, counted (the writer is behind), never the worker's time.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

pub use flowtwin_ffi::BpfFilter;

/// One captured frame.
#[derive(Debug)]
pub struct Captured {
    /// Wall-clock time, µs since the Unix epoch.
    pub ts_us: u64,
    /// Sent by the engine (else received).
    pub outbound: bool,
    pub worker: u16,
    /// The frame's length on the wire (`data` may be cut to the snap length).
    pub orig_len: u32,
    pub data: Vec<u8>,
}

/// What a running capture gives the workers.
#[derive(Clone, Debug)]
pub struct TapSession {
    pub tx: SyncSender<Captured>,
    /// `None`: every frame.
    pub filter: Option<Arc<BpfFilter>>,
    pub snaplen: usize,
}

/// The engine's capture point, shared by the workers and the control plane.
#[derive(Debug, Default)]
pub struct CaptureTap {
    generation: AtomicU64,
    session: Mutex<Option<TapSession>>,
    /// Frames copied into the channel, and frames dropped because it was full.
    pub captured: AtomicU64,
    pub dropped: AtomicU64,
}

impl CaptureTap {
    /// Start capturing into `s` (replaces a running session).
    pub fn start(&self, s: TapSession) {
        *self.session.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
        self.generation.fetch_add(1, Relaxed);
    }

    /// Stop: the workers drop their sender within a millisecond, which ends the channel.
    pub fn stop(&self) {
        *self.session.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.generation.fetch_add(1, Relaxed);
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Relaxed)
    }

    fn current(&self) -> Option<TapSession> {
        self.session.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A worker's side of the tap.
#[derive(Debug)]
pub struct WorkerTap {
    tap: Arc<CaptureTap>,
    generation: u64,
    session: Option<TapSession>,
    worker: u16,
}

impl WorkerTap {
    pub fn new(tap: Arc<CaptureTap>, worker: u16) -> WorkerTap {
        WorkerTap { tap, generation: 0, session: None, worker }
    }

    /// Follow a start or stop of the control plane (cheap: one load when nothing changed).
    pub fn refresh(&mut self) {
        let g = self.tap.generation();
        if g != self.generation {
            self.generation = g;
            self.session = self.tap.current();
        }
    }

    /// Whether a capture runs.
    #[inline]
    pub fn on(&self) -> bool {
        self.session.is_some()
    }

    /// Offer one frame (when `on`).
    pub fn frame(&mut self, ts_us: u64, outbound: bool, frame: &[u8]) {
        let Some(s) = &self.session else { return };
        if s.filter.as_ref().is_some_and(|f| !f.matches(frame)) {
            return;
        }
        let data = frame[..frame.len().min(s.snaplen)].to_vec();
        let c = Captured { ts_us, outbound, worker: self.worker, orig_len: frame.len() as u32, data };
        match s.tx.try_send(c) {
            Ok(()) => {
                self.tap.captured.fetch_add(1, Relaxed);
            }
            Err(TrySendError::Full(_)) => {
                self.tap.dropped.fetch_add(1, Relaxed);
            }
            // The writer ended (count or time reached): stop offering until the next start.
            Err(TrySendError::Disconnected(_)) => self.session = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_follows_start_and_stop_and_counts_what_it_could_not_queue() {
        let tap = Arc::new(CaptureTap::default());
        let mut w = WorkerTap::new(tap.clone(), 3);
        w.refresh();
        assert!(!w.on());
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        let filter = Some(Arc::new(BpfFilter::compile("ether[0] == 1").unwrap()));
        tap.start(TapSession { tx, filter, snaplen: 4 });
        assert!(!w.on(), "not before its refresh");
        w.refresh();
        assert!(w.on());
        for first in [1u8, 2, 1, 1] {
            w.frame(7, true, &[first, 9, 9, 9, 9, 9]);
        }
        let got: Vec<Captured> = rx.try_iter().collect();
        assert_eq!(got.len(), 2, "the filtered one skipped, the fourth found the channel full");
        assert_eq!((got[0].data.len(), got[0].orig_len, got[0].worker, got[0].outbound), (4, 6, 3, true));
        assert_eq!((tap.captured.load(Relaxed), tap.dropped.load(Relaxed)), (2, 1));
        tap.stop();
        w.refresh();
        assert!(!w.on());
    }
}
