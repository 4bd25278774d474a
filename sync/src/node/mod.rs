//! The sync thread: the driver of the engine's [`Session`]s (the sans-IO replication protocol
//! of one group of VIPs and one peer, which decides every role change, message and hold). The
//! driver owns what a session must not: the clock, the listener and each session's
//! connection to its peer ([`Conn`]), the worker rings (drained into batches for the
//! standbys), the workers' release watermarks (published from [`Session::release`]), the
//! engine's takeover callback, and the waiting. One plain std thread per engine (not an
//! lcore), whatever the number of sessions.
//!
//! [`Session`]: crate::session::Session
//! [`Session::release`]: crate::session::Session::release
//! [`Conn`]: crate::conn::Conn
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
//!
//! Files: this one holds the configuration ([`SyncConfig`], [`SessionSpec`]), the handle
//! ([`SyncHandle`]) and the start ([`start`], [`start_sessions`]: the checks, then the
//! thread); `driver` the thread's loop (`Driver`), `slot` each session's I/O and batches,
//! `pacer` the pacing of the loop's waits.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use flowtwin_engine::group::GroupSet;
use flowtwin_engine::stack::{LiveConfig, StackConfig};

use crate::proto::Role;
use crate::replicator::{WorkerLink, RELEASE_ALL};
use crate::status::SyncStatus;
use crate::wait::{Parking, Waiter};

use self::driver::Driver;

mod driver;
mod pacer;
mod slot;

pub use crate::session::{Mode, Takeover, TakeoverReason, TOKEN_SHIFT};

/// Default [`SyncConfig::park_max`].
pub const PARK_MAX: Duration = Duration::from_millis(1);

/// The target of the driver's log events, whichever file of this module they come from (the
/// `target` of a JSON log line).
const LOG_TARGET: &str = "flowtwin_sync::node";

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
    /// [`Pacer`](pacer::Pacer)); zero always sleeps when idle.
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
    /// The engine's live configuration (`flowtwin ctl reload`): the sessions follow it, so
    /// that the Hello, pools and replay use the listeners and VIPs of the last reload.
    /// `None`: the configuration given to [`start`] for good.
    pub live: Option<Arc<LiveConfig>>,
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
            live: None,
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
            Driver::new(cfg, stack_cfg, links, &specs, sts, on_takeover, pk).run();
        })?;
    Ok(SyncHandle { thread: Some(thread), statuses, parking })
}
