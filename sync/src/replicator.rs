//! The worker's end of replication: [`RingReplicator`] turns [`ReplEvent`]s into delta
//! records on the worker's SPSC ring, and [`WorkerLink`] is the sync core's end (the ring's
//! consumer plus the atomics both sides share).
//!
//! Sequence numbers are per worker and per *delta*, starting at 1; an event that needs
//! several deltas (a `Data` run longer than [`MAX_DATA_PAYLOAD`], a service image) takes one
//! number per delta and [`Replicator::emit`] returns the last. The standby acknowledges delta
//! sequence numbers, and the sync core publishes the acknowledged number as the worker's
//! release watermark: output tagged `s` (the engine's `Stack::commit_tag`, the sequence
//! number of the last change that output depends on) may leave once `watermark() >= s`.
//!
//! Ring full never drops a delta: records go to a bounded local backlog (kept in order;
//! everything emitted later queues behind it) which [`Replicator::flush`] pushes first.
//! Only when the backlog is full too does `emit` return [`ReplFull`], before taking a
//! sequence number, so the worker can retry the same event later.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use flowtwin_engine::commit::Watermarks;
use flowtwin_engine::dataplane::ReplControl;
use flowtwin_engine::group::{GroupId, GroupSet, MAX_GROUPS};
use flowtwin_engine::iteration::CommitControl;
use flowtwin_engine::replica::{ReplEvent, ReplFull, Replicator};

use crate::delta::{
    self, data_records, CloseRec, Delta, DeltaBody, DeltaHeader, FlowStateRec, FlowStepRec, MAX_DATA_PAYLOAD,
    MAX_DELTA_RECORDS,
};
use crate::ring::{self, Consumer, Producer, Record, RECORD_WORDS};
use crate::wait::Parking;

/// Default bound of a worker's local backlog, in records (64 Ki records = 4 MiB).
pub const DEFAULT_BACKLOG_RECORDS: usize = 64 * 1024;

/// Watermark value meaning "output need not wait for the standby".
pub const RELEASE_ALL: u64 = u64::MAX;

/// Atomics shared by one worker and the sync core. Every field has exactly one writer.
#[derive(Debug)]
struct Shared {
    /// Highest sequence number the standby acknowledged, or [`RELEASE_ALL`].
    /// Writer: sync core (`Release`); reader: worker (`Acquire`), so a worker that sees a
    /// watermark also sees everything the sync core did before publishing it.
    watermark: AtomicU64,
    /// Highest sequence number the standby acknowledged, or [`RELEASE_ALL`] (no standby, or
    /// output does not wait for it): paces join snapshots. Unlike `watermark` it moves while
    /// output is held (a hold after a handover waits for the very snapshot it paces).
    /// Writer: sync core (`Release`); reader: worker (`Acquire`).
    standby_acked: AtomicU64,
    /// Join-snapshot token requested by the sync core (0 = never). Writer: sync core.
    snapshot_req: AtomicU64,
    /// Frames the worker currently holds for the watermark. Writer: worker (`Relaxed`:
    /// a metric, orders nothing).
    held: AtomicU64,
    /// Records in the worker's local backlog. Writer: worker (`Relaxed`, metric).
    backlog: AtomicU64,
    /// Events refused with `ReplFull`. Writer: worker (`Relaxed`, metric).
    repl_full: AtomicU64,
    /// Last sequence number the worker assigned. Writer: worker (`Relaxed`, metric: lag).
    last_seq: AtomicU64,
    /// Records the worker has pushed onto its ring, all time. Writer: worker (`Relaxed`: the
    /// ring's own Release store publishes the records; this only tells the worker's
    /// `wake_sync` whether it published anything since its last call).
    pushed: AtomicU64,
    /// `pushed` as of the worker's last `wake_sync`. Writer and reader: the worker.
    pushed_seen: AtomicU64,
    /// The sync thread's parking spot, installed by `node::start` when it was given a
    /// waiter (empty otherwise: the sync thread polls and nobody rings).
    parking: OnceLock<Arc<Parking>>,
    /// With several sessions (`node::start_sessions`): one watermark per ownership group,
    /// each moved by its session (writer: sync core, Release; reader: worker, Acquire).
    /// Unset: `watermark` is every group's.
    per_group: OnceLock<Box<[AtomicU64]>>,
}

/// A handle on one worker's shared atomics; cheap to clone into the worker and the
/// metrics code.
#[derive(Clone, Debug)]
pub struct WorkerShared(Arc<Shared>);

impl WorkerShared {
    fn new() -> WorkerShared {
        WorkerShared(Arc::new(Shared {
            watermark: AtomicU64::new(RELEASE_ALL),
            standby_acked: AtomicU64::new(RELEASE_ALL),
            snapshot_req: AtomicU64::new(0),
            held: AtomicU64::new(0),
            backlog: AtomicU64::new(0),
            repl_full: AtomicU64::new(0),
            last_seq: AtomicU64::new(0),
            pushed: AtomicU64::new(0),
            pushed_seen: AtomicU64::new(0),
            parking: OnceLock::new(),
            per_group: OnceLock::new(),
        }))
    }

    /// Sync core: where the worker rings when it published deltas while the sync thread is
    /// parked. Set once (later calls are ignored).
    pub(crate) fn set_parking(&self, p: Arc<Parking>) {
        let _ = self.0.parking.set(p);
    }

    /// Worker, once per loop pass after queuing the pass's deltas: if it pushed records onto
    /// its ring since the last call and the sync thread is parked, wake it (one non-blocking
    /// system call, at most once per park across all workers). Otherwise two Relaxed loads
    /// (nothing new), or those plus one fence and one load of a shared flag.
    #[inline]
    pub fn wake_sync(&self) {
        let Some(p) = self.0.parking.get() else { return };
        let pushed = self.0.pushed.load(Ordering::Relaxed);
        if pushed == self.0.pushed_seen.load(Ordering::Relaxed) {
            return;
        }
        self.0.pushed_seen.store(pushed, Ordering::Relaxed);
        // The records are on the ring (their Release store precedes this in program order);
        // `notify`'s fence orders them before its check of the parked flag.
        p.notify();
    }

    /// Sync core, before the workers run: keep one watermark per group for `groups` groups
    /// (an engine of several sessions). Set once (later calls are ignored).
    pub(crate) fn use_group_watermarks(&self, groups: usize) {
        let _ = self.0.per_group.set((0..groups.max(1)).map(|_| AtomicU64::new(RELEASE_ALL)).collect());
    }

    /// Sync core: publish watermark `w` for the groups `groups` (every group without
    /// per-group watermarks).
    pub fn set_watermark_of(&self, groups: GroupSet, w: u64) {
        let Some(pg) = self.0.per_group.get() else { return self.set_watermark(w) };
        for g in groups.iter() {
            if let Some(a) = pg.get(usize::from(g.0)) {
                a.store(w, Ordering::Release);
            }
        }
    }

    /// The watermarks of every group (what a worker's release reads each pass).
    #[inline]
    pub fn watermarks(&self) -> Watermarks {
        match self.0.per_group.get() {
            None => Watermarks::uniform(self.watermark()),
            Some(pg) => {
                let mut w = [0u64; MAX_GROUPS];
                for (d, a) in w.iter_mut().zip(pg.iter()) {
                    *d = a.load(Ordering::Acquire);
                }
                Watermarks::per_group(&w[..pg.len()])
            }
        }
    }

    /// The release watermark: output built at sequence `s` may leave once `s <= watermark()`.
    #[inline]
    pub fn watermark(&self) -> u64 {
        // Acquire pairs with the Release store in `set_watermark`.
        self.0.watermark.load(Ordering::Acquire)
    }

    /// True if output tagged `seq` (see the module comment) may leave now.
    #[inline]
    pub fn released(&self, seq: u64) -> bool {
        seq <= self.watermark()
    }

    /// Sync core: publish a new watermark.
    #[inline]
    pub fn set_watermark(&self, w: u64) {
        // Release pairs with the Acquire load in `watermark`.
        self.0.watermark.store(w, Ordering::Release);
        if let Some(pg) = self.0.per_group.get() {
            for a in pg.iter() {
                a.store(w, Ordering::Release);
            }
        }
    }

    /// What the standby acknowledged of this worker's deltas (see `Shared::standby_acked`).
    #[inline]
    pub fn standby_acked(&self) -> u64 {
        self.0.standby_acked.load(Ordering::Acquire)
    }

    /// Sync core: publish the standby's acknowledgement (pacing of join snapshots).
    pub fn set_standby_acked(&self, s: u64) {
        self.0.standby_acked.store(s, Ordering::Release);
    }

    /// The join-snapshot token last requested (0 = none ever).
    #[inline]
    pub fn snapshot_request(&self) -> u64 {
        // Acquire pairs with the Release in `request_snapshot`.
        self.0.snapshot_req.load(Ordering::Acquire)
    }

    /// Sync core: ask the worker for a join snapshot answered with `Barrier(token)`.
    pub fn request_snapshot(&self, token: u64) {
        // Release pairs with the Acquire in `snapshot_request`.
        self.0.snapshot_req.store(token, Ordering::Release);
    }

    /// Worker: publish how many frames it holds for the watermark.
    #[inline]
    pub fn set_held(&self, frames: u64) {
        self.0.held.store(frames, Ordering::Relaxed);
    }

    /// Frames the worker holds for the watermark (metric).
    pub fn held(&self) -> u64 {
        self.0.held.load(Ordering::Relaxed)
    }

    /// Records in the worker's local backlog (metric).
    pub fn backlog(&self) -> u64 {
        self.0.backlog.load(Ordering::Relaxed)
    }

    /// Events the worker could not queue (`ReplFull`) so far.
    pub fn repl_full(&self) -> u64 {
        self.0.repl_full.load(Ordering::Relaxed)
    }

    /// Last sequence number the worker assigned (metric; the ring is the source of truth).
    pub fn last_seq(&self) -> u64 {
        self.0.last_seq.load(Ordering::Relaxed)
    }
}

/// What a worker's iteration reads from the sync core: this handle (the engine's traits, so
/// that the worker loop and the tests read it alike, with nothing in between).
impl CommitControl for WorkerShared {
    fn watermarks(&self) -> Watermarks {
        WorkerShared::watermarks(self)
    }
    fn standby_acked(&self) -> u64 {
        WorkerShared::standby_acked(self)
    }
    fn deltas_queued(&self) {
        self.wake_sync()
    }
}

impl ReplControl for WorkerShared {
    fn snapshot_request(&self) -> u64 {
        WorkerShared::snapshot_request(self)
    }
    fn set_held(&self, frames: u64) {
        WorkerShared::set_held(self, frames)
    }
}

/// The sync core's end of one worker: the ring consumer and the shared atomics.
#[derive(Debug)]
pub struct WorkerLink {
    /// Worker index (also the `worker` field of its deltas).
    pub worker: u16,
    /// The ring's consumer.
    pub consumer: Consumer,
    /// Atomics shared with the worker.
    pub shared: WorkerShared,
}

/// Creates worker `worker`'s replicator and the link the sync core drains, with a ring of
/// `ring_records` records (rounded up to a power of two) and a backlog of
/// [`DEFAULT_BACKLOG_RECORDS`].
pub fn worker_channel(worker: u16, ring_records: usize) -> (RingReplicator, WorkerLink) {
    worker_channel_with_backlog(worker, ring_records, DEFAULT_BACKLOG_RECORDS)
}

/// [`worker_channel`] with an explicit backlog bound (records).
pub fn worker_channel_with_backlog(
    worker: u16,
    ring_records: usize,
    backlog_records: usize,
) -> (RingReplicator, WorkerLink) {
    assert!(worker < 256, "a delta names its worker in one byte (DeltaHeader::worker)");
    let (producer, consumer) = ring::channel(ring_records);
    let shared = WorkerShared::new();
    let r = RingReplicator {
        worker,
        producer,
        backlog: VecDeque::new(),
        backlog_cap: backlog_records.max(MAX_DELTA_RECORDS),
        seq: 0,
        answered_token: 0,
        scratch: [[0; RECORD_WORDS]; MAX_DELTA_RECORDS],
        shared: shared.clone(),
        pushed: 0,
    };
    (
        r,
        WorkerLink {
            worker,
            consumer,
            shared,
        },
    )
}

/// Records an event needs (all-or-nothing check before any sequence number is taken).
fn event_records(ev: &ReplEvent<'_>) -> usize {
    let payload = |len: usize| {
        let full = len / MAX_DATA_PAYLOAD;
        let rest = len % MAX_DATA_PAYLOAD;
        full * data_records(MAX_DATA_PAYLOAD) + if rest > 0 { data_records(rest) } else { 0 }
    };
    match ev {
        ReplEvent::New(_) | ReplEvent::Update(_) => delta::FLOW_STATE_RECORDS,
        ReplEvent::Step(_) => 1,
        ReplEvent::Data { bytes, .. } => payload(bytes.len()),
        // An empty image still travels as one empty chunk (it tells the standby "image done").
        ReplEvent::SvcImage(b) => payload(b.len()).max(1),
        ReplEvent::Close | ReplEvent::Barrier(_) => 1,
    }
}

/// A worker's [`Replicator`] over its SPSC ring.
pub struct RingReplicator {
    worker: u16,
    producer: Producer,
    /// Whole deltas the ring had no room for, oldest first.
    backlog: VecDeque<Record>,
    backlog_cap: usize,
    seq: u64,
    /// Last snapshot token answered with `Barrier(token)`.
    answered_token: u64,
    scratch: [Record; MAX_DELTA_RECORDS],
    shared: WorkerShared,
    /// Records pushed onto the ring, all time (published to `Shared::pushed`).
    pushed: u64,
}

impl std::fmt::Debug for RingReplicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingReplicator")
            .field("worker", &self.worker)
            .field("seq", &self.seq)
            .field("backlog", &self.backlog.len())
            .finish_non_exhaustive()
    }
}

impl RingReplicator {
    /// The handle on this worker's shared atomics (clone it into the worker loop).
    pub fn shared(&self) -> &WorkerShared {
        &self.shared
    }

    /// Worker index.
    pub fn worker(&self) -> u16 {
        self.worker
    }

    /// A join snapshot the sync core asked for and this worker has not answered yet. The
    /// worker answers with `New` + `SvcImage` for every flow it holds, then
    /// `Barrier(token)` (emitting the barrier marks the request answered).
    pub fn pending_snapshot(&self) -> Option<u64> {
        let req = self.shared.snapshot_request();
        (req != 0 && req != self.answered_token).then_some(req)
    }

    /// True if output built at `seq` may leave now (shortcut for the worker loop).
    #[inline]
    pub fn released(&self, seq: u64) -> bool {
        self.shared.released(seq)
    }

    fn header(&mut self, slot: (u32, u32), group: GroupId) -> DeltaHeader {
        self.seq += 1;
        DeltaHeader {
            worker: self.worker,
            group: group.0,
            slot: slot.0,
            generation: slot.1,
            seq: self.seq,
        }
    }

    /// Encode a one-piece delta of flow `slot` with the next sequence number and queue it.
    fn push_delta(&mut self, slot: (u32, u32), group: GroupId, body: DeltaBody) {
        let d = Delta { header: self.header(slot, group), body };
        let n = delta::encode_into(&d, &mut self.scratch).expect("scratch holds any delta");
        self.push_scratch(n);
    }

    /// Queue the first `n` scratch records (one whole delta): straight onto the ring if
    /// nothing is waiting ahead of it, else behind the backlog.
    fn push_scratch(&mut self, n: usize) {
        if self.backlog.is_empty() && self.producer.try_push_many(&self.scratch[..n]).is_ok() {
            self.pushed += n as u64;
            return;
        }
        self.backlog.extend(self.scratch[..n].iter().copied());
    }

    fn payload_deltas(&mut self, slot: (u32, u32), group: GroupId, bytes: &[u8], image: Option<u32>, offset: u64) {
        let mut off = 0usize;
        loop {
            let end = (off + MAX_DATA_PAYLOAD).min(bytes.len());
            let chunk = &bytes[off..end];
            let h = self.header(slot, group);
            let n = match image {
                Some(total) => {
                    delta::encode_svc_image_into(&h, total, off as u32, chunk, &mut self.scratch)
                }
                None => delta::encode_data_into(&h, offset + off as u64, chunk, &mut self.scratch),
            }
            .expect("chunk <= MAX_DATA_PAYLOAD and scratch holds MAX_DELTA_RECORDS");
            self.push_scratch(n);
            off = end;
            if off >= bytes.len() {
                break;
            }
        }
    }

    fn publish_metrics(&self) {
        self.shared
            .0
            .backlog
            .store(self.backlog.len() as u64, Ordering::Relaxed);
        self.shared.0.last_seq.store(self.seq, Ordering::Relaxed);
        self.shared.0.pushed.store(self.pushed, Ordering::Relaxed);
    }
}

impl Replicator for RingReplicator {
    fn emit(&mut self, slot: (u32, u32), ev: ReplEvent<'_>) -> Result<u64, ReplFull> {
        self.emit_in(GroupId::DEFAULT, slot, ev)
    }

    fn emit_in(&mut self, group: GroupId, slot: (u32, u32), ev: ReplEvent<'_>) -> Result<u64, ReplFull> {
        if !self.backlog.is_empty() {
            self.flush();
        }
        let need = event_records(&ev);
        if !self.backlog.is_empty() && self.backlog.len() + need > self.backlog_cap {
            self.shared.0.repl_full.fetch_add(1, Ordering::Relaxed);
            return Err(ReplFull);
        }
        match ev {
            ReplEvent::New(img) => self.push_delta(slot, group, DeltaBody::FlowNew(FlowStateRec::from_image(img))),
            ReplEvent::Update(img) => self.push_delta(slot, group, DeltaBody::FlowUpdate(FlowStateRec::from_image(img))),
            ReplEvent::Step(img) => self.push_delta(slot, group, DeltaBody::FlowStep(FlowStepRec::from_image(img))),
            ReplEvent::Data { offset, bytes } => {
                if bytes.is_empty() {
                    return Ok(self.seq);
                }
                self.payload_deltas(slot, group, bytes, None, offset);
            }
            ReplEvent::SvcImage(bytes) => {
                // Service images are bounded by the service's buffers (KiBs); u32 is ample.
                let total = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
                self.payload_deltas(slot, group, &bytes[..total as usize], Some(total), 0);
            }
            ReplEvent::Close => self.push_delta(slot, group, DeltaBody::FlowClose(CloseRec { reason: 0 })),
            ReplEvent::Barrier(token) => {
                // A barrier belongs to no flow: the driver routes it by its token.
                self.push_delta((0, 0), GroupId::DEFAULT, DeltaBody::Barrier { token });
                if token == self.shared.snapshot_request() {
                    self.answered_token = token;
                }
            }
        }
        self.publish_metrics();
        Ok(self.seq)
    }

    fn last_seq(&self) -> u64 {
        self.seq
    }

    fn backlog(&self) -> usize {
        self.backlog.len()
    }

    /// Push backlogged deltas, oldest first, as many whole deltas as the ring has room for,
    /// in one publish.
    fn flush(&mut self) {
        if self.backlog.is_empty() {
            return;
        }
        let free = self.producer.free();
        let recs = self.backlog.make_contiguous();
        let mut take = 0;
        while take < recs.len() {
            // Byte 2 of a delta's first record is its record count (delta header).
            let n = ((recs[take][0] >> 16) & 0xff) as usize;
            if n == 0 || take + n > free {
                break;
            }
            take += n;
        }
        if take > 0 && self.producer.try_push_many(&recs[..take]).is_ok() {
            self.backlog.drain(..take);
            self.pushed += take as u64;
        }
        self.publish_metrics();
    }
}
