//! The sync thread: the driver of the engine's [`Session`]s (the sans-IO replication
//! protocol of one group of VIPs and one peer, which decides every role change, message and
//! hold). The driver owns what a session must not: the clock, the listener and each
//! session's connection to its peer ([`Conn`]), the worker rings (drained into batches for
//! the standbys), the workers' release watermarks (published from [`Session::release`]),
//! the engine's takeover callback, and the waiting. One plain std thread per engine (not an
//! lcore), whatever the number of sessions.
//!
//! **Sessions** ([`SyncConfig::sessions`]): each replicates a set of ownership groups and has
//! its own role, epoch and connection, so that an engine can be active for some groups and
//! standby for others (active-active pairs). A worker's ring carries the deltas of every
//! group, in one sequence space; the driver routes each delta to the session of its group
//! (the delta header names it) and a `Barrier` to the session whose join snapshot it ends
//! (by its token, [`TOKEN_SHIFT`]). Each session's acknowledgements move the watermarks of
//! its own groups only (`commit::Watermarks`). One listener serves every session: a dialing
//! peer names the session in its Hello (`Hello::session`). Join snapshots run one at a time
//! (a worker answers one request at a time). An engine of one session, the default, runs
//! exactly as before sessions: one uniform watermark, every delta to the one peer.
//!
//! Sockets are non-blocking, so a write blocked by a slow peer keeps reading (acks and
//! heartbeats cannot deadlock against our own batches). When a pass did nothing the loop
//! waits: with a [`Waiter`] (`SyncConfig::waiter`) it blocks until the peer's socket is
//! readable, a worker rings the doorbell (active side, see [`crate::wait`]), or the next
//! timer is due (heartbeat, dead-peer deadline, at most `park_max`); without one it sleeps
//! ~50–100 µs and looks again.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use flowtwin_engine::commit::HOLD_ALL;
use flowtwin_engine::group::{GroupSet, MAX_GROUPS};
use flowtwin_engine::stack::StackConfig;

use crate::coalesce::Coalescer;
use crate::conn::{Conn, HELLO_TIMEOUT};
use crate::delta::{self, MAX_DELTA_RECORDS};
use crate::proto::{self, Hello, Msg, Role, MAX_BATCH_RECORDS};
use crate::replicator::{WorkerLink, RELEASE_ALL};
use crate::ring::{Record, RECORD_BYTES, RECORD_WORDS};
use crate::session::{Action, DialError, Incoming, Release, Session, SessionConfig};
use crate::status::SyncStatus;
use crate::wait::{Parking, Waiter, Woken};

pub use crate::session::{Mode, Takeover, TakeoverReason, TOKEN_SHIFT};

/// One session of an engine: the ownership groups it replicates and this engine's initial
/// preference for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSpec {
    pub groups: GroupSet,
    /// `Active` or `Standby` (`Fenced` is refused).
    pub role: Role,
}

/// Replication configuration of one engine.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    pub node_id: u32,
    /// Where an active engine listens for its standby.
    pub listen: SocketAddr,
    /// The other engine's `listen` address.
    pub peer: SocketAddr,
    /// Initial preference: `Active` or `Standby` (`Fenced` is refused), of the one session
    /// of an engine whose `sessions` is empty.
    pub role: Role,
    /// The engine's sessions, each replicating its groups to the peer; together they must
    /// cover every group once. Empty: one session of every group, preferring `role`.
    pub sessions: Vec<SessionSpec>,
    pub mode: Mode,
    /// Heartbeat interval (default 5 ms).
    pub heartbeat: Duration,
    /// Heartbeat intervals without anything from the peer before it is declared dead (3).
    pub dead_after: u32,
    /// Records per worker ring (used by the caller's `worker_channel`).
    pub ring_records: usize,
    /// Async mode: how far output may run ahead of the standby. Once the oldest
    /// unacknowledged batch is older than this, output is held until the standby catches up,
    /// which bounds the replication lag (and so what a failover can lose).
    pub async_max_lag: Duration,
    /// How long the loop keeps polling after replication activity before it sleeps (see
    /// [`Pacer`]); zero always sleeps when idle.
    pub busy_poll: Duration,
    /// How an idle loop waits (see [`crate::wait`]). `None`: it sleeps ~50–100 µs per idle
    /// pass and polls again (no system call outside the sync thread, no `unsafe` anywhere;
    /// what tests use). The engine passes a `ppoll`/eventfd waiter.
    pub waiter: Option<Arc<dyn Waiter>>,
    /// With a waiter: the longest the active's loop blocks when nothing else is due, so
    /// that no delta depends on the doorbell alone (a lost ring costs at most this).
    pub park_max: Duration,
    /// Strict mode: how long an active that lost its in-sync standby keeps holding output
    /// before it serves unprotected. If only the sync link failed, the standby takes over
    /// meanwhile and its tagged announcement fences this engine: nothing this engine sent
    /// is unknown to the new active. Zero releases at once (a standby's death then costs
    /// clients only the detection time, but a cut sync link can cost flows).
    pub fence_hold: Duration,
    /// Strict mode, failback: how long the engine that takes over by `Handover` holds all
    /// output while the engine that handed over rejoins it as an in-sync standby, and so how
    /// long the latter keeps its flows to fall back on (it resumes them should the new active
    /// die before its rejoin is complete: nothing left that engine meanwhile). Should the old
    /// active never rejoin, output resumes after this, unprotected. Zero: no hold, no
    /// fallback (a kill within the rejoin then costs the flows not yet imaged).
    pub handover_hold: Duration,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            node_id: 1,
            listen: SocketAddr::from(([127, 0, 0, 1], 7701)),
            peer: SocketAddr::from(([127, 0, 0, 1], 7702)),
            role: Role::Active,
            sessions: Vec::new(),
            mode: Mode::Strict,
            heartbeat: Duration::from_millis(5),
            dead_after: 3,
            ring_records: 64 * 1024,
            async_max_lag: Duration::from_millis(20),
            busy_poll: Duration::ZERO,
            waiter: None,
            park_max: PARK_MAX,
            fence_hold: Duration::from_millis(30),
            handover_hold: Duration::from_millis(500),
        }
    }
}

/// The engine's takeover callback (installs the flows into its workers).
pub type TakeoverFn = Box<dyn FnMut(Takeover) + Send>;

/// The running sync thread.
#[derive(Debug)]
pub struct SyncHandle {
    thread: Option<JoinHandle<()>>,
    /// One per session, in `SyncConfig::sessions` order.
    statuses: Vec<Arc<SyncStatus>>,
    /// To end the thread's wait at once when stopping.
    parking: Option<Arc<Parking>>,
}

impl SyncHandle {
    /// Stop the thread and wait for it (closes the sync streams: a standby takes over).
    pub fn stop(mut self) {
        self.shutdown();
    }
    fn shutdown(&mut self) {
        for s in &self.statuses {
            s.stop.store(true, Relaxed);
        }
        if let Some(p) = &self.parking {
            p.wake();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
    /// The first session's status (the only one of an engine with one session).
    pub fn status(&self) -> &Arc<SyncStatus> {
        &self.statuses[0]
    }
    /// Every session's status, in `SyncConfig::sessions` order.
    pub fn statuses(&self) -> &[Arc<SyncStatus>] {
        &self.statuses
    }
    pub fn is_finished(&self) -> bool {
        !matches!(&self.thread, Some(t) if !t.is_finished())
    }
}

impl Drop for SyncHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Starts the sync thread of an engine with one session of every group (`cfg.sessions`
/// empty). `links` are the workers' [`WorkerLink`]s, index = worker.
pub fn start(
    cfg: SyncConfig,
    stack_cfg: Arc<StackConfig>,
    links: Vec<WorkerLink>,
    status: Arc<SyncStatus>,
    on_takeover: TakeoverFn,
) -> io::Result<SyncHandle> {
    start_sessions(cfg, stack_cfg, links, vec![status], on_takeover)
}

/// The sessions `cfg` describes: its `sessions`, or one of every group.
fn session_specs(cfg: &SyncConfig, stack_cfg: &StackConfig) -> Vec<SessionSpec> {
    if cfg.sessions.is_empty() {
        vec![SessionSpec { groups: stack_cfg.all_groups(), role: cfg.role }]
    } else {
        cfg.sessions.clone()
    }
}

/// Starts the sync thread with one session per `cfg.sessions` entry (one of every group if
/// it is empty), `statuses[i]` the status of session `i`. The sessions' groups must cover
/// every group of `stack_cfg` exactly once.
pub fn start_sessions(
    cfg: SyncConfig,
    stack_cfg: Arc<StackConfig>,
    links: Vec<WorkerLink>,
    statuses: Vec<Arc<SyncStatus>>,
    on_takeover: TakeoverFn,
) -> io::Result<SyncHandle> {
    let specs = session_specs(&cfg, &stack_cfg);
    if statuses.len() != specs.len() {
        return Err(invalid(format!("{} sessions but {} statuses", specs.len(), statuses.len())));
    }
    if specs.iter().any(|s| s.role == Role::Fenced) {
        return Err(invalid("initial role must be active or standby".into()));
    }
    if specs.len() >= 1 << (64 - TOKEN_SHIFT) {
        return Err(invalid(format!("too many sessions: {}", specs.len())));
    }
    let mut covered = GroupSet::NONE;
    for s in &specs {
        if s.groups.is_empty() || covered.0 & s.groups.0 != 0 {
            return Err(invalid(format!("session groups {:#x} are empty or overlap another session's", s.groups.0)));
        }
        covered = covered.union(s.groups);
    }
    if covered != stack_cfg.all_groups() {
        return Err(invalid(format!(
            "the sessions replicate groups {:#x}, the engine has groups {:#x}: each group needs exactly one session",
            covered.0,
            stack_cfg.all_groups().0
        )));
    }
    if cfg.heartbeat.is_zero() || cfg.dead_after == 0 {
        return Err(invalid("heartbeat and dead_after must be non-zero".into()));
    }
    if links.iter().enumerate().any(|(i, l)| usize::from(l.worker) != i) {
        return Err(invalid("links must be ordered by worker index".into()));
    }
    let per_group = specs.len() > 1;
    for l in &links {
        if per_group {
            l.shared.use_group_watermarks(stack_cfg.all_groups().len());
        }
        l.shared.set_watermark(RELEASE_ALL);
    }
    let parking = cfg.waiter.clone().map(|w| Arc::new(Parking::new(w)));
    if let Some(p) = &parking {
        for l in &links {
            l.shared.set_parking(p.clone());
        }
    }
    let sts = statuses.clone();
    let pk = parking.clone();
    let thread = thread::Builder::new()
        .name("flowtwin-sync".into())
        .spawn(move || {
            if let Some(p) = &pk {
                p.waiter.on_sync_thread();
            }
            let now = Instant::now();
            let mut group_slot = [NO_SLOT; MAX_GROUPS];
            let slots: Vec<Slot> = specs
                .iter()
                .zip(sts)
                .enumerate()
                .map(|(i, (spec, status))| {
                    for g in spec.groups.iter() {
                        group_slot[usize::from(g.0)] = i as u8;
                    }
                    let session = Session::new(
                        SessionConfig {
                            node_id: cfg.node_id,
                            role: spec.role,
                            mode: cfg.mode,
                            heartbeat: cfg.heartbeat,
                            dead_after: cfg.dead_after,
                            async_max_lag: cfg.async_max_lag,
                            fence_hold: cfg.fence_hold,
                            handover_hold: cfg.handover_hold,
                            workers: links.len(),
                            groups: spec.groups,
                            token_base: (i as u64) << TOKEN_SHIFT,
                        },
                        stack_cfg.clone(),
                        status.clone(),
                        now,
                    );
                    Slot::new(session, status, spec.groups, links.len())
                })
                .collect();
            let mut d = Driver {
                parking: pk,
                drained: vec![0; links.len()],
                cfg,
                links,
                on_takeover,
                slots,
                group_slot,
                listener: None,
                bind_retry_at: now,
                peek: vec![[0; RECORD_WORDS]; MAX_BATCH_RECORDS],
                recs: Vec::new(),
                fds: Vec::new(),
                snapshots: VecDeque::new(),
                snapshot_running: None,
            };
            d.run();
        })?;
    Ok(SyncHandle { thread: Some(thread), statuses, parking })
}

// ---- connection ---------------------------------------------------------------------

/// Idle pause of the loop (DESIGN §2: a quiet engine must not burn a core).
const IDLE_SLEEP: Duration = Duration::from_micros(50);
/// Idle pause once the loop has been idle for [`IDLE_STREAK`] passes (~1–2 ms): bounds the
/// extra latency of the first delta after a quiet period to ~100 µs.
const IDLE_SLEEP_LONG: Duration = Duration::from_micros(100);
const IDLE_STREAK: u32 = 20;
/// Default [`SyncConfig::park_max`].
pub const PARK_MAX: Duration = Duration::from_millis(1);
/// Longest wait of the standby's loop: bounds how late it notices a stop or takeover
/// request (the heartbeat interval usually bounds it sooner).
const STANDBY_WAIT_MAX: Duration = Duration::from_millis(5);
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
struct Pacer {
    window: Duration,
    /// Last pass that moved replication state (records, batches, acks).
    hot_at: Instant,
    /// Consecutive passes that did nothing.
    streak: u32,
}

impl Pacer {
    fn new(window: Duration) -> Pacer {
        Pacer { window, hot_at: Instant::now(), streak: 0 }
    }

    /// After a pass: `hot` if it moved replication state or is waiting for an ack that is
    /// due any moment (starts or extends the polling window), `busy` if it did anything at
    /// all (then the next pass follows at once). Returns true if the loop should wait now.
    /// Without a polling window an idle pass waits even while an ack is awaited.
    fn pass(&mut self, hot: bool, busy: bool) -> bool {
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
    fn sleep_time(&self) -> Duration {
        if self.streak > IDLE_STREAK {
            IDLE_SLEEP_LONG
        } else {
            IDLE_SLEEP
        }
    }
}

/// Frames read per pass before the loop turns to its timers and writes (bounded work between
/// heartbeats and acks).
const FRAMES_PER_PASS: usize = 256;

/// A group that no session replicates (never, once `start_sessions` checked the specs).
const NO_SLOT: u8 = u8::MAX;

/// One session and its I/O.
struct Slot {
    session: Session,
    status: Arc<SyncStatus>,
    groups: GroupSet,
    /// The connection to the peer's session of these groups (a standby's, the active's, or a
    /// dial in progress).
    conn: Option<Conn>,
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
    sending: bool,
    /// Per worker: the last sequence number drained when the current standby was admitted.
    /// Until it acknowledged something beyond, deltas drained before (never sent to it) do
    /// not count as covered.
    joined_at: Vec<u64>,
}

impl Slot {
    fn new(session: Session, status: Arc<SyncStatus>, groups: GroupSet, workers: usize) -> Slot {
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
    fn read(&mut self, recs: &mut Vec<Record>, node_id: u32, limit: Option<usize>) -> (bool, usize, usize) {
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
            tracing::warn!(node = node_id, event = "peer_bad_frame", error = %e, "bad frame from the peer: {e}");
            self.status.decode_errors.fetch_add(1, Relaxed);
            self.session.on_closed(Instant::now(), &e.to_string());
        } else if ended {
            self.session.on_closed(Instant::now(), "connection closed");
        }
        (got, frames, batches)
    }

    fn queue_transmit(&mut self) -> bool {
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
    fn close(&mut self, linger: Duration) {
        if let Some(mut c) = self.conn.take() {
            if !c.wbuf.is_empty() && !linger.is_zero() {
                let _ = c.flush(linger);
            }
            let _ = c.s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// How far worker `w`'s deltas of this session's groups are acknowledged, given that
    /// the driver drained that worker up to `drained`: with nothing in flight and the
    /// standby past its join, every delta of these groups up to `drained` was sent and
    /// acknowledged, so output tagged with another group's sequence number that also
    /// depends on these groups need not wait for their next delta.
    fn covered(&self, w: usize, drained: u64) -> u64 {
        let acked = self.session.acked(w);
        if !self.session.awaiting_ack_of(w) && acked > self.joined_at[w] {
            acked.max(drained)
        } else {
            acked
        }
    }
}

/// The sync thread's state: the sessions, their I/O.
struct Driver {
    /// Present with a [`SyncConfig::waiter`].
    parking: Option<Arc<Parking>>,
    cfg: SyncConfig,
    links: Vec<WorkerLink>,
    on_takeover: TakeoverFn,
    slots: Vec<Slot>,
    /// The slot of each group.
    group_slot: [u8; MAX_GROUPS],
    /// Per worker: the last sequence number drained from its ring.
    drained: Vec<u64>,
    /// While some session is active.
    listener: Option<TcpListener>,
    bind_retry_at: Instant,
    peek: Vec<Record>,
    /// Records of the last batch read.
    recs: Vec<Record>,
    /// What an idle pass waits on (kept: no allocation per wait).
    fds: Vec<RawFd>,
    /// Join snapshots asked for while another ran: (slot, token, pace).
    snapshots: VecDeque<(usize, u64, bool)>,
    /// The join snapshot the workers are emitting: its token and the workers whose
    /// `Barrier` has not been drained yet.
    snapshot_running: Option<(u64, Vec<bool>)>,
}

impl Driver {
    fn stopping(&self) -> bool {
        self.slots[0].status.stop.load(Relaxed)
    }

    fn handshake_failed(&self, addr: SocketAddr, e: &io::Error) {
        tracing::warn!(node = self.cfg.node_id, event = "peer_handshake_failed", addr = %addr, error = %e, "standby {addr}: handshake failed: {e}");
    }

    fn single(&self) -> bool {
        self.slots.len() == 1
    }

    /// Sets the watermark of slot `i`'s groups on worker `w`.
    fn set_watermark(&self, i: usize, w: usize, v: u64) {
        if self.single() {
            self.links[w].shared.set_watermark(v);
        } else {
            self.links[w].shared.set_watermark_of(self.slots[i].groups, v);
        }
    }

    fn set_watermarks(&self, i: usize, v: u64) {
        for w in 0..self.links.len() {
            self.set_watermark(i, w, v);
        }
    }

    fn run(&mut self) {
        let mut pacer = Pacer::new(self.cfg.busy_poll);
        while !self.stopping() {
            let mut busy = false;
            let mut batches = 0;
            for i in 0..self.slots.len() {
                busy |= self.outputs(i);
                let (got, frames, b) = self.slots[i].read(&mut self.recs, self.cfg.node_id, Some(FRAMES_PER_PASS));
                busy |= got || frames > 0;
                batches += b;
                self.slots[i].session.tick(Instant::now());
                busy |= self.outputs(i);
            }
            busy |= self.accept();
            let drained = self.drain_rings(None);
            busy |= drained;
            for i in 0..self.slots.len() {
                let s = &mut self.slots[i];
                // A peer that stops reading for longer than it may stay silent is dead.
                let limit = s.session.dead_limit().max(Duration::from_millis(50));
                let Some(c) = s.conn.as_mut() else { continue };
                busy |= !c.wbuf.is_empty();
                if let Err(e) = c.flush(limit) {
                    s.session.on_closed(Instant::now(), &e.to_string());
                    busy |= self.outputs(i);
                }
            }
            self.publish();
            let hot = drained || batches > 0 || self.slots.iter().any(|s| s.session.awaiting_ack());
            if pacer.pass(hot, busy) {
                self.idle(&pacer);
            }
        }
        for l in &self.links {
            l.shared.set_watermark(RELEASE_ALL);
        }
    }

    /// Carries out what session `i` asked for: its messages into its connection's write
    /// buffer, then its actions in order (each one's own messages before the next action).
    /// Returns whether there was anything.
    fn outputs(&mut self, i: usize) -> bool {
        let mut any = self.slots[i].queue_transmit();
        while let Some(a) = self.slots[i].session.poll_action() {
            any = true;
            match a {
                Action::Connect { role, probe } => self.dial(i, role, probe),
                Action::Listen => {
                    self.bind_retry_at = Instant::now();
                    self.listen();
                }
                Action::Close { linger } => self.slots[i].close(linger),
                Action::RequestSnapshot { token, pace, hold } => {
                    // Release/Acquire order both marks before the request.
                    if hold {
                        self.set_watermarks(i, 0);
                    }
                    let drained = self.drained.clone();
                    self.slots[i].joined_at = drained;
                    // A newer request of the same session replaces its older one; so does
                    // any request of the one session of an engine (as before sessions).
                    self.snapshots.retain(|q| q.0 != i);
                    let own = self.snapshot_running.as_ref().is_some_and(|(t, _)| (t >> TOKEN_SHIFT) as usize == i);
                    if own || self.single() {
                        self.snapshot_running = None;
                    }
                    self.snapshots.push_back((i, token, pace));
                    self.next_snapshot();
                }
                Action::FinalDrain => {
                    // Hold all output from now on: the standby speaks for the VIPs after this.
                    self.set_watermarks(i, HOLD_ALL);
                    self.drain_rings(Some(i));
                    self.slots[i].session.on_drained(Instant::now());
                }
                Action::ReadRest => {
                    self.slots[i].read(&mut self.recs, self.cfg.node_id, None);
                    self.slots[i].session.on_rest_read(Instant::now());
                }
                Action::TakeOver { takeover, detect, started, hold_all } => {
                    if hold_all {
                        self.set_watermarks(i, HOLD_ALL);
                    }
                    (self.on_takeover)(takeover);
                    // After the callback: the engine's workers have the takeover (and keep
                    // what they kept) before they may see the flag cleared.
                    let st = &self.slots[i].status;
                    st.set_retain_flows(false);
                    st.mark_takeover(detect, started.elapsed());
                }
            }
            self.slots[i].queue_transmit();
        }
        if !self.slots.iter().any(|s| s.status.role() == Role::Active) {
            // Only an active engine listens: a fenced one must not answer a prober.
            self.listener = None;
        }
        any
    }

    /// Starts the next queued join snapshot unless one runs (a worker answers one request
    /// at a time: a second would replace the first, whose standby would wait forever).
    fn next_snapshot(&mut self) {
        if self.snapshot_running.is_some() {
            return;
        }
        let Some((i, token, pace)) = self.snapshots.pop_front() else { return };
        if !self.slots[i].session.replicating() {
            // Its standby left meanwhile.
            return self.next_snapshot();
        }
        for l in &self.links {
            if pace {
                l.shared.set_standby_acked(0);
            }
            l.shared.request_snapshot(token);
        }
        self.snapshot_running = Some((token, vec![false; self.links.len()]));
    }

    /// A `Barrier(token)` of worker `w` was drained.
    fn barrier_drained(&mut self, w: usize, token: u64) {
        if let Some((t, seen)) = self.snapshot_running.as_mut() {
            if *t == token && w < seen.len() {
                seen[w] = true;
                if seen.iter().all(|&s| s) {
                    self.snapshot_running = None;
                    self.next_snapshot();
                }
            }
        }
    }

    /// Opens the listener (retried every 100 ms while the address is taken; an active
    /// session serves unprotected meanwhile: no standby, everything released).
    fn listen(&mut self) {
        let active = self.slots.iter().any(|s| s.status.role() == Role::Active);
        if self.listener.is_some() || !active || Instant::now() < self.bind_retry_at {
            return;
        }
        match TcpListener::bind(self.cfg.listen).and_then(|l| l.set_nonblocking(true).map(|()| l)) {
            Ok(l) => {
                self.listener = Some(l);
                let epoch = self.slots.iter().find(|s| s.status.role() == Role::Active).map_or(0, |s| s.session.epoch());
                tracing::info!(
                    node = self.cfg.node_id,
                    event = "listening",
                    epoch,
                    addr = %self.cfg.listen,
                    "active (epoch {epoch}), listening on {}",
                    self.cfg.listen
                );
            }
            Err(e) => {
                for s in self.slots.iter().filter(|s| s.status.role() == Role::Active) {
                    s.status.set_error(format!("bind {}: {e}", self.cfg.listen));
                }
                self.bind_retry_at = Instant::now() + Duration::from_millis(100);
            }
        }
    }

    /// Dials the peer for session `i` and exchanges Hello as `role`; the session hears how
    /// it went.
    fn dial(&mut self, i: usize, role: Role, probe: bool) {
        self.slots[i].close(Duration::ZERO);
        // A probe runs on the active's sync thread, which must keep draining the rings.
        let (limit, hello_limit) = if probe {
            (Duration::from_millis(20), Duration::from_millis(50))
        } else {
            (Duration::from_millis(100), HELLO_TIMEOUT)
        };
        match self.handshake(i, role, limit, hello_limit) {
            Ok((c, h)) => {
                self.slots[i].conn = Some(c);
                self.slots[i].session.on_connected(Instant::now(), &h);
            }
            Err(e) => {
                let kind = match e.kind() {
                    io::ErrorKind::ConnectionRefused => DialError::Refused,
                    io::ErrorKind::InvalidData => DialError::Invalid,
                    _ => DialError::Other,
                };
                self.slots[i].session.on_connect_failed(Instant::now(), kind);
            }
        }
    }

    /// Dials the peer and exchanges Hello as `role`, each step bounded by `limit` (the Hello
    /// reply by `hello_limit`). The peer's Hello is returned unchecked.
    fn handshake(&mut self, i: usize, role: Role, limit: Duration, hello_limit: Duration) -> io::Result<(Conn, Hello)> {
        let s = TcpStream::connect_timeout(&self.cfg.peer, limit)?;
        let mut c = Conn::new(s)?;
        c.send_now(&Msg::Hello(self.slots[i].session.hello(role)), limit)?;
        let status = self.slots[i].status.clone();
        let h = c.recv_hello_within(&mut self.recs, &|| status.stop.load(Relaxed), hello_limit)?;
        Ok((c, h))
    }

    /// A session that is active without a standby takes the next connection on the
    /// listener that is for it.
    ///
    /// With one session, our Hello goes out first (as before sessions). With several, the
    /// peer's Hello names the session it is for, so it is read first; a connection for a
    /// session that admits no standby now is closed without a word (the peer retries).
    fn accept(&mut self) -> bool {
        self.listen();
        if !self.slots.iter().any(|s| s.session.wants_accept() && s.conn.is_none()) {
            return false;
        }
        let Some(Ok((s, addr))) = self.listener.as_ref().map(TcpListener::accept) else { return false };
        let Ok(mut conn) = Conn::new(s) else { return true };
        let status = self.slots[0].status.clone();
        let stop = || status.stop.load(Relaxed);
        let i = if self.single() {
            let _ = conn.send_now(&Msg::Hello(self.slots[0].session.hello(Role::Active)), HELLO_TIMEOUT);
            match conn.recv_hello(&mut self.recs, &stop) {
                Ok(h) => Some((0, h)),
                Err(e) => {
                    self.handshake_failed(addr, &e);
                    None
                }
            }
        } else {
            match conn.recv_hello(&mut self.recs, &stop) {
                Ok(h) => match self.slots.iter().position(|s| s.groups.0 == h.session) {
                    Some(i) if self.slots[i].session.wants_accept() && self.slots[i].conn.is_none() => {
                        let _ = conn.send_now(&Msg::Hello(self.slots[i].session.hello(Role::Active)), HELLO_TIMEOUT);
                        Some((i, h))
                    }
                    Some(_) => None,
                    None => {
                        tracing::warn!(
                            node = self.cfg.node_id,
                            event = "peer_refused",
                            addr = %addr,
                            groups = h.session,
                            reason = "no session replicates these groups",
                            "peer {addr}: no session replicates groups {:#x}",
                            h.session
                        );
                        None
                    }
                },
                Err(e) => {
                    self.handshake_failed(addr, &e);
                    None
                }
            }
        };
        if let Some((i, h)) = i {
            self.slots[i].conn = Some(conn);
            self.slots[i].session.on_accept(Instant::now(), &addr.to_string(), &h);
            self.outputs(i);
        }
        true
    }

    /// Publishes each session's release plan to the watermarks of its groups, and (while
    /// some session is active) what the standbys acknowledged, which paces join snapshots.
    fn publish(&mut self) {
        for i in 0..self.slots.len() {
            match self.slots[i].session.release(Instant::now()) {
                Release::Keep => {}
                Release::All => self.set_watermarks(i, RELEASE_ALL),
                Release::Nothing => self.set_watermarks(i, 0),
                Release::Acked => {
                    for w in 0..self.links.len() {
                        let s = &self.slots[i];
                        let v = if self.single() { s.session.acked(w) } else { s.covered(w, self.drained[w]) };
                        self.set_watermark(i, w, v);
                    }
                }
            }
        }
        if self.slots.iter().any(|s| s.session.serving()) {
            for (w, l) in self.links.iter().enumerate() {
                let pace = self.slots.iter().filter(|s| s.session.serving()).map(|s| s.session.pacing(w)).min();
                l.shared.set_standby_acked(pace.unwrap_or(RELEASE_ALL));
            }
        }
    }

    /// An idle pass's wait, until the sessions' next deadline at the most. With a waiter:
    /// block until a connection (or the listener) is readable, the doorbell rings, or the
    /// timeout; an active parks (workers ring when they publish deltas) after re-checking
    /// that every ring is empty. Without: sleep a little.
    fn idle(&mut self, pacer: &Pacer) {
        let now = Instant::now();
        let active = self.slots.iter().any(|s| s.session.serving());
        // An active never blocks past park_max, so no delta depends on the doorbell alone; a
        // standby looks at stop and takeover requests at least every STANDBY_WAIT_MAX.
        let cap = if active { self.cfg.park_max } else { STANDBY_WAIT_MAX };
        let deadline = self.slots.iter().filter_map(|s| s.session.next_deadline()).min();
        let timeout = deadline.map_or(cap, |d| cap.min(d.saturating_duration_since(now)));
        let mut fds = std::mem::take(&mut self.fds);
        fds.clear();
        fds.extend(self.slots.iter().filter_map(|s| s.conn.as_ref().map(|c| c.s.as_raw_fd())));
        if let (Some(l), true) = (&self.listener, active) {
            if self.slots.iter().any(|s| s.session.wants_accept() && s.conn.is_none()) || fds.is_empty() {
                fds.push(l.as_raw_fd());
            }
        }
        self.wait_on(pacer, &fds, active, timeout);
        self.fds = fds;
    }

    /// The wait of [`idle`](Self::idle) on `fds` (the connections, maybe the listener).
    fn wait_on(&mut self, pacer: &Pacer, fds: &[RawFd], active: bool, timeout: Duration) {
        let Some(p) = self.parking.clone() else {
            // Nothing can arrive without a connection or listener: sleep to the deadline.
            let t = if fds.is_empty() { timeout } else { pacer.sleep_time().min(timeout.max(Duration::from_micros(1))) };
            thread::sleep(t);
            return;
        };
        if timeout.is_zero() {
            return;
        }
        let woken = if active {
            let links = &mut self.links;
            p.park(|| links.iter_mut().any(|l| !l.consumer.is_empty()), fds, timeout)
        } else {
            Some(p.wait(fds, timeout))
        };
        if let Some(Woken { rung, .. }) = woken {
            let st = &self.slots[0].status;
            st.waits.fetch_add(1, Relaxed);
            if rung {
                st.doorbell_wakes.fetch_add(1, Relaxed);
            }
        }
    }

    /// Moves whole deltas from every ring into batches for the standbys of their groups'
    /// sessions, or drops them (a session without a standby: the workers do not wait for
    /// one). `force`: the session whose final drain this is (sent even though it may no
    /// longer count as replicating). Returns whether anything was drained.
    fn drain_rings(&mut self, force: Option<usize>) -> bool {
        let mut any = false;
        let now = Instant::now();
        for (i, s) in self.slots.iter_mut().enumerate() {
            s.sending = s.conn.is_some() && (s.session.replicating() || force == Some(i));
        }
        for w in 0..self.links.len() {
            // Bounded passes per call so heartbeats and acks keep flowing under load.
            for _ in 0..16 {
                let got = self.links[w].consumer.peek_burst(&mut self.peek);
                if got == 0 {
                    break;
                }
                // Walk whole deltas (a delta is never split across batches), coalescing them
                // into the batch of their session as they are walked.
                let mut used = 0usize;
                for s in self.slots.iter_mut() {
                    (s.first, s.last, s.deltas, s.dropped) = (0, 0, 0, 0);
                    if s.sending {
                        s.coalescer.begin(&mut s.batch);
                        s.new_flows.clear();
                    }
                }
                let mut barriers: Vec<u64> = Vec::new();
                while used < got {
                    match delta::peek_header(&self.peek[used..got]) {
                        Ok(p) => {
                            let i = if p.kind == delta::DeltaKind::Barrier {
                                let d = delta::decode(&self.peek[used..used + p.records]).ok();
                                let token = match d.map(|(d, _)| d.body) {
                                    Some(delta::DeltaBody::Barrier { token }) => token,
                                    _ => 0,
                                };
                                barriers.push(token);
                                (token >> TOKEN_SHIFT) as usize
                            } else {
                                usize::from(self.group_slot.get(usize::from(p.header.group)).copied().unwrap_or(NO_SLOT))
                            };
                            if let Some(s) = self.slots.get_mut(i) {
                                if s.sending {
                                    let d = &self.peek[used..used + p.records];
                                    s.dropped += u64::from(s.coalescer.push(&p, d, &mut s.batch));
                                    if p.kind == delta::DeltaKind::FlowNew {
                                        s.new_flows.push(p.header.seq);
                                    }
                                }
                                if s.first == 0 {
                                    s.first = p.header.seq;
                                }
                                s.last = p.header.seq;
                                s.deltas += 1;
                            } else {
                                self.slots[0].status.decode_errors.fetch_add(1, Relaxed);
                            }
                            self.drained[w] = p.header.seq;
                            used += p.records;
                        }
                        Err(delta::DeltaError::Truncated { .. }) => break,
                        Err(e) => {
                            // Cannot happen with our producer; skip one record, count it.
                            self.slots[0].status.decode_errors.fetch_add(1, Relaxed);
                            tracing::error!(
                                node = self.cfg.node_id,
                                event = "bad_delta",
                                worker = w,
                                error = %e,
                                "worker {w}: bad delta on ring: {e}"
                            );
                            if used == 0 {
                                used = 1;
                            }
                            break;
                        }
                    }
                }
                if used == 0 {
                    break;
                }
                let mut full = false;
                for s in self.slots.iter_mut() {
                    let Some(c) = s.conn.as_mut().filter(|_| s.sending) else { continue };
                    if s.last != 0 {
                        let n = s.batch.len();
                        proto::encode_batch(&mut c.wbuf, w as u16, s.first, s.last, &s.batch);
                        s.session.on_batch_sent(now, w, s.last, n as u32, &s.new_flows);
                        s.status.batches_sent.fetch_add(1, Relaxed);
                        s.status.deltas_sent.fetch_add(s.deltas - s.dropped, Relaxed);
                        s.status.deltas_coalesced.fetch_add(s.dropped, Relaxed);
                        s.status.bytes_replicated.fetch_add((n * RECORD_BYTES) as u64, Relaxed);
                    }
                    full |= c.wbuf.len() >= 512 * 1024;
                }
                self.links[w].consumer.advance(used);
                for t in barriers {
                    self.barrier_drained(w, t);
                }
                any = true;
                if full {
                    break;
                }
            }
        }
        any
    }
}

// Keep the biggest delta within one peek buffer.
const _: () = assert!(MAX_BATCH_RECORDS >= MAX_DELTA_RECORDS);
