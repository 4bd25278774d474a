//! One session of the driver and its I/O ([`Slot`]): the session, its connection to the
//! peer, reading and writing its frames, the batch it builds from a worker's burst for its
//! standby, and how far its groups' deltas are covered by the standby's acks.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowtwin_engine::group::GroupSet;

use super::LOG_TARGET;
use crate::coalesce::Coalescer;
use crate::conn::Conn;
use crate::delta::{DeltaKind, PeekedHeader};
use crate::proto::{self, MAX_BATCH_RECORDS};
use crate::ring::{Record, RECORD_BYTES};
use crate::session::{Incoming, Session};
use crate::status::SyncStatus;

/// One session and its I/O.
pub(super) struct Slot {
    pub(super) session: Session,
    pub(super) status: Arc<SyncStatus>,
    pub(super) groups: GroupSet,
    /// The connection to the peer's session of these groups (a standby's, the active's, or a
    /// dial in progress).
    pub(super) conn: Option<Conn>,
    /// The batch being built for the standby from one worker's burst (coalesced), its flow
    /// creations (their sequence numbers), and its first and last sequence numbers, deltas
    /// walked and deltas coalesced away.
    batch: Vec<Record>,
    new_flows: Vec<u64>,
    coalescer: Coalescer,
    first: u64,
    last: u64,
    deltas: u64,
    dropped: u64,
    /// This drain sends the session's deltas to its standby (`Driver::drain_rings`).
    pub(super) sending: bool,
    /// Per worker: the last sequence number drained when the current standby was admitted.
    /// Until it acknowledged something beyond, deltas drained before (never sent to it) do
    /// not count as covered.
    pub(super) joined_at: Vec<u64>,
}

impl Slot {
    pub(super) fn new(session: Session, status: Arc<SyncStatus>, groups: GroupSet, workers: usize) -> Slot {
        Slot {
            session,
            status,
            groups,
            conn: None,
            batch: Vec::with_capacity(MAX_BATCH_RECORDS),
            new_flows: Vec::new(),
            coalescer: Coalescer::default(),
            first: 0,
            last: 0,
            deltas: 0,
            dropped: 0,
            sending: false,
            joined_at: vec![0; workers],
        }
    }

    /// Delivers what the connection has: at most `limit` frames (all with `None`), then the
    /// end of the stream once every complete frame was delivered. Returns (bytes arrived,
    /// frames, batches).
    pub(super) fn read(&mut self, recs: &mut Vec<Record>, node_id: u32, limit: Option<usize>) -> (bool, usize, usize) {
        let Some(c) = self.conn.as_mut() else { return (false, 0, 0) };
        let got = match c.fill() {
            Ok(n) => n > 0,
            // A reset: deliver what arrived before it, then the end.
            Err(_) => {
                c.eof = true;
                false
            }
        };
        self.session.on_rx(c.last_rx);
        let (mut frames, mut batches) = (0, 0);
        let mut bad = None;
        while limit.is_none_or(|l| frames < l) {
            let m = match c.next(recs) {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    bad = Some(e);
                    break;
                }
            };
            frames += 1;
            if matches!(m, Incoming::Batch { .. }) {
                batches += 1;
            }
            self.session.on_message(Instant::now(), m);
        }
        let ended = c.eof && c.start >= c.end;
        if let Some(e) = bad {
            tracing::warn!(target: LOG_TARGET, node = node_id, event = "peer_bad_frame", error = %e, "bad frame from the peer: {e}");
            self.status.decode_errors.fetch_add(1, Relaxed);
            self.session.on_closed(Instant::now(), &e.to_string());
        } else if ended {
            self.session.on_closed(Instant::now(), "connection closed");
        }
        (got, frames, batches)
    }

    pub(super) fn queue_transmit(&mut self) -> bool {
        let mut any = false;
        while let Some(m) = self.session.poll_transmit() {
            any = true;
            if let Some(c) = self.conn.as_mut() {
                c.queue(&m);
            }
        }
        any
    }

    /// Writes what is queued (for at most `linger`) and closes the connection.
    pub(super) fn close(&mut self, linger: Duration) {
        if let Some(mut c) = self.conn.take() {
            if !c.wbuf.is_empty() && !linger.is_zero() {
                let _ = c.flush(linger);
            }
            let _ = c.s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Before the walk of a worker's burst: an empty batch (when this drain sends).
    pub(super) fn begin_burst(&mut self) {
        (self.first, self.last, self.deltas, self.dropped) = (0, 0, 0, 0);
        if self.sending {
            self.coalescer.begin(&mut self.batch);
            self.new_flows.clear();
        }
    }

    /// A delta of this session's walked (`p` its header, `d` its records): coalesced into
    /// the batch when this drain sends, counted either way.
    pub(super) fn walk(&mut self, p: &PeekedHeader, d: &[Record]) {
        if self.sending {
            self.dropped += u64::from(self.coalescer.push(p, d, &mut self.batch));
            if p.kind == DeltaKind::FlowNew {
                self.new_flows.push(p.header.seq);
            }
        }
        if self.first == 0 {
            self.first = p.header.seq;
        }
        self.last = p.header.seq;
        self.deltas += 1;
    }

    /// After the walk of worker `w`'s burst: the batch into the connection's write buffer
    /// (when this drain sends and the burst had deltas of this session). Returns whether
    /// the write buffer is full (the drain stops there for this pass).
    pub(super) fn send_burst(&mut self, now: Instant, w: usize) -> bool {
        let Some(c) = self.conn.as_mut().filter(|_| self.sending) else { return false };
        if self.last != 0 {
            let n = self.batch.len();
            proto::encode_batch(&mut c.wbuf, w as u16, self.first, self.last, &self.batch);
            self.session.on_batch_sent(now, w, self.last, n as u32, &self.new_flows);
            self.status.batches_sent.fetch_add(1, Relaxed);
            self.status.deltas_sent.fetch_add(self.deltas - self.dropped, Relaxed);
            self.status.deltas_coalesced.fetch_add(self.dropped, Relaxed);
            self.status.bytes_replicated.fetch_add((n * RECORD_BYTES) as u64, Relaxed);
        }
        c.wbuf.len() >= 512 * 1024
    }

    /// How far worker `w`'s deltas of this session's groups are acknowledged, given that
    /// the driver drained that worker up to `drained`: with nothing in flight and the
    /// standby past its join, every delta of these groups up to `drained` was sent and
    /// acknowledged, so output tagged with another group's sequence number that also
    /// depends on these groups need not wait for their next delta.
    pub(super) fn covered(&self, w: usize, drained: u64) -> u64 {
        let acked = self.session.acked(w);
        if !self.session.awaiting_ack_of(w) && acked > self.joined_at[w] {
            acked.max(drained)
        } else {
            acked
        }
    }
}
