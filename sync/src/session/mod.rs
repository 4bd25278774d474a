//! The replication protocol of one (group, peer) pair as a value, sans-IO: time and the
//! peer's messages go in, messages for the peer, actions for the driver and the next deadline
//! come out (quiche's `Connection`, raft-rs's `RawNode`/`Ready` are the shape). It never reads
//! the clock, owns no socket and never sleeps; [`crate::node`] is the driver that does.
//!
//! # Roles
//! ```text
//!  start ──(prefers active)──► Probing ──peer is active──► Following ─┐
//!    │                            │ window over / peer not active     │ active gone / ctl
//!    │                            ▼                                   ▼ takeover / Handover
//!    └──(prefers standby)──► Connecting ◄──── Fenced ◄──── Active ◄── TakingOver
//!                             ▲   │ connected to an active        │  ▲
//!                             │   ▼                               │  │ HandoverFallback
//!                             └─ Following ◄── HandingOver ◄──────┘  │ (kept flows)
//!                                  (ctl failback: final drain, Handover)
//! ```
//! * **Active**: admits one standby at a time (`on_accept`: Hello checks, a join snapshot
//!   token), tracks what it acknowledged per worker, sends heartbeats, declares it dead after
//!   `dead_after` silent intervals, and says how far the workers may release held output
//!   ([`Release`], DESIGN §4 output commit). Alone, it probes its peer address for a newer
//!   active (split brain heals: the older epoch steps down) and watches the VIP announcements
//!   of others (`SyncStatus::fence_epoch`).
//! * **Standby** (Connecting, Following): dials the active, applies its batches into
//!   [`Replicas`], acknowledges after apply, reports in-sync; takes over when the active is
//!   gone (stream closed, `dead_after` silent heartbeats, a Handover, ctl, or a refused rejoin
//!   right after it dropped us or right after we handed over to it).
//! * **Fenced**: a newer epoch exists; never release output again, follow it as a standby.
//!
//! # The driver's contract
//! Every pass: deliver what arrived (`on_rx` for any bytes, `on_message` per frame, in order,
//! `on_closed` once the stream ended and every complete frame was delivered), `tick(now)`,
//! then write every [`Session::poll_transmit`] message to the current connection *before*
//! carrying out the [`Session::poll_action`]s in order (a `Close` follows the messages queued
//! before it; a `RequestSnapshot` follows its `Snapshot` message), and publish
//! [`Session::release`] to the workers. Wait at most until [`Session::next_deadline`].
//! There is at most one connection to the peer at a time, plus the active's short split-brain
//! probe (`Action::Connect { probe: true }`), which never carries a session.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowtwin_engine::group::{GroupId, GroupSet};
use flowtwin_engine::replica::ShadowFlow;
use flowtwin_engine::stack::StackConfig;

use crate::proto::{Heartbeat, Hello, Msg, Role, MAGIC, PROTO_VERSION};
use crate::replicator::RELEASE_ALL;
use crate::ring::Record;
use crate::shadow::Replicas;
use crate::status::{PeerState, SyncStatus};

mod active;
mod hello;
mod pool;
mod standby;

/// Output commit mode (DESIGN §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Output waits for the standby's acknowledgement (default).
    Strict,
    /// Output never waits; replication lag is bounded and reported.
    Async,
}

impl Mode {
    fn wire(self) -> u8 {
        (self == Mode::Async) as u8
    }
    fn name_of(wire: u8) -> &'static str {
        match wire {
            0 => "strict",
            1 => "async",
            _ => "unknown",
        }
    }
}

/// Why a standby took over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeoverReason {
    /// `dead_after` heartbeat intervals without a frame from the active.
    HeartbeatTimeout,
    /// The sync stream ended (EOF or reset): the active's process is gone.
    PeerClosed,
    /// `SyncStatus::request_takeover` (ctl).
    Requested,
    /// The active asked for it (`Handover`, ctl failback).
    Handover,
    /// The active dropped us (it found us silent), then its sync port refused our rejoin
    /// within `fence_hold` of the drop: its process is gone, and it held its output since
    /// the drop, so our replica is what its clients last saw.
    DroppedThenGone,
    /// We handed over (failback) and the engine we handed over to died before our rejoin
    /// was in sync: it held all output meanwhile (`handover_hold`), so the flows this engine
    /// kept since the handover are what the clients last saw. They resume as they are.
    HandoverFallback,
}

/// What the engine receives at takeover.
pub struct Takeover {
    /// The new epoch (already fenced: the old active's epoch + 1).
    pub epoch: u64,
    /// Shadow flows per worker index (the active's worker that owned them).
    pub flows: Vec<Vec<ShadowFlow>>,
    pub reason: TakeoverReason,
    /// Whether the standby was in sync (complete snapshot applied) when it took over.
    pub in_sync: bool,
    /// `HandoverFallback`: resume the flows the engine kept since it handed over (`flows`
    /// is empty); otherwise the engine first forgets whatever flows it still has.
    pub retained: bool,
    /// The ownership groups taken over (the session's).
    pub groups: GroupSet,
}

impl std::fmt::Debug for Takeover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Takeover")
            .field("epoch", &self.epoch)
            .field("flows", &self.flows.iter().map(Vec::len).collect::<Vec<_>>())
            .field("reason", &self.reason)
            .field("in_sync", &self.in_sync)
            .field("retained", &self.retained)
            .field("groups", &self.groups)
            .finish()
    }
}

/// What a session needs to know of its engine (see `SyncConfig` for each field).
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub node_id: u32,
    /// Initial preference: `Active` (probe the peer first) or `Standby`.
    pub role: Role,
    pub mode: Mode,
    pub heartbeat: Duration,
    pub dead_after: u32,
    pub async_max_lag: Duration,
    pub fence_hold: Duration,
    pub handover_hold: Duration,
    /// This engine's worker count.
    pub workers: usize,
    /// The ownership groups this session replicates (every group for an engine of one
    /// session): its Hello names them, and its takeover gives the engine these.
    pub groups: GroupSet,
    /// Where this session's join-snapshot tokens start: the driver tells sessions apart by
    /// `token >> TOKEN_SHIFT` (a worker's `Barrier` carries the token).
    pub token_base: u64,
}

/// A join-snapshot token's bits above this name the session that asked for it.
pub const TOKEN_SHIFT: u32 = 48;

/// Startup probe of the peer before becoming active (plus a node-id tie-break).
pub const PROBE_WINDOW: Duration = Duration::from_millis(300);
/// How often an active without a standby looks for another active on its peer address.
pub const SPLIT_BRAIN_PROBE: Duration = Duration::from_millis(200);
/// After a handover, how long the new active may take to listen before a refused rejoin
/// means that it is gone.
pub const HANDOVER_LISTEN_GRACE: Duration = Duration::from_millis(100);
/// A fenced engine gives the new active this long to listen before it follows it.
pub const FENCED_WAIT: Duration = Duration::from_millis(50);
/// After this engine lost the active role to its peer (fenced by the peer's takeover), how
/// long it, as the peer's standby, allows the peer [`SETTLE_FACTOR`] times the usual silence
/// before it declares it dead. A peer that just took over is at its busiest (installing
/// every flow, announcing, the join snapshot for us), and the starvation that made our
/// heartbeats late in the first place (a host with too few CPUs) is likely still there:
/// without this the two engines took the service from each other three times in 0.5 s on
/// the rig, each takeover with its own risk (`proxy_workers`: 8 flows abandoned). A peer
/// that really dies in this second is declared dead after 4 × `dead_after` heartbeats
/// instead (60 ms with the rig's 5 ms × 3), or at once if its process died and closed the
/// connection.
pub const SETTLE_AFTER_FENCE: Duration = Duration::from_secs(1);
/// See [`SETTLE_AFTER_FENCE`].
pub const SETTLE_FACTOR: u32 = 4;
/// How long a refusal may take to reach the peer (a Hello's time).
const REFUSAL_LINGER: Duration = Duration::from_millis(500);
/// How long a last word to a peer that may be dead (dropped, fenced by our takeover) may take.
const LAST_WORD_LINGER: Duration = Duration::from_millis(5);
/// A dead-peer deadline is reported this much after it, so that the pass at the deadline
/// sees the silence strictly longer than the limit.
const DEADLINE_SLOP: Duration = Duration::from_micros(50);

/// What the driver must do, in order, after writing the queued messages.
#[derive(Debug)]
pub enum Action {
    /// Dial the peer, send `Session::hello(role)`, read its Hello; report with
    /// `on_connected` or `on_connect_failed`. `probe`: the active's split-brain probe (short
    /// timeouts: the driver must keep draining the rings; never carries a session).
    Connect { role: Role, probe: bool },
    /// Open the listener for standbys (the session became active).
    Listen,
    /// Close the current connection after writing the messages queued before this, for
    /// at most `linger` (a courtesy to a peer that may be dead).
    Close { linger: Duration },
    /// A standby was admitted and its `Snapshot` message is out: ask every worker for a join
    /// snapshot with `token`. Before asking (strict mode): `pace` → set every worker's
    /// standby-acked mark to 0 (the snapshot is paced by the standby's acks), `hold` → set
    /// every watermark to 0 (output waits for this standby from now on).
    RequestSnapshot { token: u64, pace: bool, hold: bool },
    /// Handover: set every watermark to `HOLD_ALL`, drain the rings into the connection one
    /// last time, then call `on_drained` (the `Handover` message must follow the last delta).
    FinalDrain,
    /// Takeover from a live connection: deliver every complete frame it still holds, then
    /// call `on_rest_read`.
    ReadRest,
    /// Give these flows to the engine (its takeover callback). Before: `hold_all` → every
    /// watermark to `HOLD_ALL`. After the callback: `SyncStatus::set_retain_flows(false)` and
    /// `mark_takeover(detect, started.elapsed())`.
    TakeOver { takeover: Takeover, detect: Duration, started: Instant, hold_all: bool },
}

/// How far the workers may release held output, this pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Leave the watermarks as they are.
    Keep,
    /// Release everything (no standby, async within the lag bound).
    All,
    /// Release up to what the standby acknowledged per worker (`Session::acked`).
    Acked,
    /// Release nothing (fenced).
    Nothing,
}

/// How a dial failed (the driver maps its I/O error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialError {
    /// Nothing listens (or the peer refused us in words).
    Refused,
    /// The peer answered something that is not an acceptable Hello.
    Invalid,
    /// Timeout or anything else.
    Other,
}

/// A message from the peer, batches with their records moved out of the receive buffer.
#[derive(Debug)]
pub enum Incoming<'a> {
    Hello(Hello),
    Batch { worker: u16, first: u64, last: u64, records: &'a [Record] },
    Ack { worker: u16, seq: u64 },
    Heartbeat(Heartbeat),
    Snapshot { token: u64 },
    Handover { epoch: u64 },
    Takeover { epoch: u64 },
    Refused(String),
    Pool(crate::proto::PoolTable),
}

/// The active's view of its standby.
#[derive(Debug)]
struct PeerView {
    token: u64,
    in_sync: bool,
    acked: Vec<u64>,
    /// Per worker: (last seq, records, sent at) of batches not yet acknowledged.
    unacked: Vec<VecDeque<(u64, u32, Instant)>>,
    /// Per worker: sequence numbers of flow creations sent but not yet acknowledged. In async
    /// mode these flows may already have been answered, so a failover now would lose them.
    young: Vec<VecDeque<u64>>,
    last_hb_tx: Instant,
    last_rx: Instant,
    missed: u64,
}

impl PeerView {
    fn lag(&self, now: Instant) -> (u64, u64) {
        let mut recs = 0u64;
        let mut oldest: Option<Instant> = None;
        for q in &self.unacked {
            recs += q.iter().map(|b| u64::from(b.1)).sum::<u64>();
            if let Some(b) = q.front() {
                oldest = Some(oldest.map_or(b.2, |o| o.min(b.2)));
            }
        }
        (recs, oldest.map_or(0, |o| now.duration_since(o).as_micros() as u64))
    }
}

#[derive(Debug)]
enum State {
    /// Prefers active: is there an active peer already?
    Probing { until: Instant, retry_at: Instant, dialing: bool },
    Active {
        peer: Option<PeerView>,
        /// Strict: after losing an in-sync standby, output stays held until then.
        hold_until: Option<Instant>,
        last_probe: Instant,
        probing: bool,
        since: Instant,
    },
    /// Waiting for the driver's final drain (`on_drained`).
    HandingOver,
    Fenced { until: Instant },
    Connecting { retry_at: Instant, dialing: bool },
    Following { last_hb_tx: Instant, last_rx: Instant, missed: u64 },
    /// Waiting for the driver to deliver what the old connection still holds (`on_rest_read`).
    TakingOver { reason: TakeoverReason, detect: Duration, started: Instant },
}

/// The replication session with one peer.
pub struct Session {
    cfg: SessionConfig,
    stack_cfg: Arc<StackConfig>,
    status: Arc<SyncStatus>,
    state: State,
    epoch: u64,
    /// Last join-snapshot token issued (tokens only grow, across sessions and roles).
    token: u64,
    /// The standby's replicas (reset per session with an active).
    shadow: Replicas,
    transmit: VecDeque<Msg<'static>>,
    actions: VecDeque<Action>,
    /// Standby: the next reconnect backoff.
    backoff: Duration,
    /// Standby: when a live active dropped us while our replica was in sync (strict).
    dropped_at: Option<Instant>,
    /// Standby: when we entered the role (after a handover: when we handed over).
    standby_since: Instant,
    /// After a `Handover` takeover: hold all output until the old active is our in-sync
    /// standby, at most until then.
    handover_hold_until: Option<Instant>,
    /// Until when the standby gives its active [`SETTLE_FACTOR`] times the usual silence
    /// (set when this engine is fenced; [`SETTLE_AFTER_FENCE`]).
    settle_until: Option<Instant>,
    /// Standby: a takeover of the silent active is put off because our port link is down
    /// (said and counted once per silence).
    port_deferred: bool,
    /// After handing over: until when the flows our workers kept may be resumed.
    fallback_until: Option<Instant>,
    /// Unprotected-time accounting: the last `release`.
    acct: Instant,
    /// Active: per listener, the pool version last sent to the standby (`pool`).
    pool_sent: Vec<Option<u64>>,
    /// Standby: the active's proxy services ("vip:port") this engine does not run, said once.
    pool_unknown: Vec<String>,
    /// Active: removed backend slots with no connection, (listener, slot, since).
    reaping: Vec<(usize, usize, Instant)>,
}

/// How long the peer has been silent (since `last_rx`), with the heartbeats that silence
/// missed counted (`missed`: what this session counted so far) — the same for both roles.
fn silence(st: &SyncStatus, heartbeat: Duration, now: Instant, last_rx: Instant, missed: &mut u64) -> Duration {
    let silent = now.saturating_duration_since(last_rx);
    let m = (silent.as_nanos() / heartbeat.as_nanos().max(1)) as u64;
    if m > *missed {
        st.heartbeats_missed_total.fetch_add(m - *missed, Relaxed);
    }
    *missed = m;
    st.heartbeats_missed.store(m, Relaxed);
    silent
}

// The sync thread's log: `tracing` events, a facade (the binary installs the subscriber that
// writes them; the session does no I/O), each with `node` = this engine's node id (the human
// format prints `flowtwin-sync[node N]: <message>`) and `event` naming what happened.

fn newer(epoch_a: u64, node_a: u32, epoch_b: u64, node_b: u32) -> bool {
    epoch_a > epoch_b || (epoch_a == epoch_b && node_a < node_b)
}

impl Session {
    /// Run `cfg` from now on (a live reload; its listener indices extend the old ones).
    pub fn set_stack_config(&mut self, cfg: Arc<StackConfig>) {
        self.stack_cfg = cfg;
    }

    /// A session starting at `now` in the role `cfg.role` prefers.
    pub fn new(cfg: SessionConfig, stack_cfg: Arc<StackConfig>, status: Arc<SyncStatus>, now: Instant) -> Session {
        let (workers, token) = (cfg.workers, cfg.token_base);
        let mut s = Session {
            cfg,
            stack_cfg,
            status,
            state: State::Connecting { retry_at: now, dialing: false },
            epoch: 0,
            token,
            shadow: Replicas::new(workers),
            transmit: VecDeque::new(),
            actions: VecDeque::new(),
            backoff: Duration::from_millis(10),
            dropped_at: None,
            standby_since: now,
            handover_hold_until: None,
            settle_until: None,
            port_deferred: false,
            fallback_until: None,
            acct: now,
            pool_sent: Vec::new(),
            pool_unknown: Vec::new(),
            reaping: Vec::new(),
        };
        s.status.set_role(Role::Standby);
        s.status.set_peer_state(PeerState::None);
        if s.cfg.role == Role::Active {
            let window = PROBE_WINDOW + Duration::from_millis(50 * u64::from(s.cfg.node_id % 8));
            s.state = State::Probing { until: now + window, retry_at: now, dialing: false };
        } else {
            s.enter_standby(now);
        }
        s
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Active and ready to admit a standby (the driver accepts only then).
    pub fn wants_accept(&self) -> bool {
        matches!(self.state, State::Active { peer: None, .. })
    }

    /// Active, with or without a standby (the driver paces snapshots and parks on the rings).
    pub fn serving(&self) -> bool {
        matches!(self.state, State::Active { .. })
    }

    /// Active with a standby: drained deltas go to it (else the driver discards them).
    pub fn replicating(&self) -> bool {
        matches!(self.state, State::Active { peer: Some(_), .. })
    }

    /// A batch was sent and its ack has not arrived yet (due within a round trip).
    pub fn awaiting_ack(&self) -> bool {
        match &self.state {
            State::Active { peer: Some(p), .. } => p.unacked.iter().any(|q| !q.is_empty()),
            _ => false,
        }
    }

    /// A batch of worker `w` was sent and its ack has not arrived yet.
    pub fn awaiting_ack_of(&self, w: usize) -> bool {
        match &self.state {
            State::Active { peer: Some(p), .. } => p.unacked.get(w).is_some_and(|q| !q.is_empty()),
            _ => false,
        }
    }

    /// The ownership groups this session replicates.
    pub fn groups(&self) -> GroupSet {
        self.cfg.groups
    }

    /// What the standby acknowledged of worker `w` (0 without a standby).
    pub fn acked(&self, w: usize) -> u64 {
        match &self.state {
            State::Active { peer: Some(p), .. } => p.acked.get(w).copied().unwrap_or(0),
            _ => 0,
        }
    }

    /// The mark that paces worker `w`'s join snapshot: what the standby acknowledged (strict),
    /// else no limit ([`RELEASE_ALL`]). Meaningful while active.
    pub fn pacing(&self, w: usize) -> u64 {
        if self.cfg.mode == Mode::Strict && self.replicating() {
            self.acked(w)
        } else {
            RELEASE_ALL
        }
    }

    /// The next message for the peer.
    pub fn poll_transmit(&mut self) -> Option<Msg<'static>> {
        self.transmit.pop_front()
    }

    /// The next thing the driver must do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When `tick` next has something to do (a heartbeat, a dead-peer deadline, a retry, the
    /// end of a hold or window); `None`: only input can move the session.
    pub fn next_deadline(&self) -> Option<Instant> {
        let hb = self.cfg.heartbeat;
        let dead = self.dead_limit() + DEADLINE_SLOP;
        let t = match &self.state {
            State::Probing { retry_at, until, dialing } => Some(if *dialing { *until } else { (*retry_at).min(*until) }),
            State::Active { peer: Some(p), .. } => Some((p.last_hb_tx + hb).min(p.last_rx + dead)),
            State::Active { peer: None, hold_until, last_probe, .. } => Some(hold_until.unwrap_or(*last_probe + SPLIT_BRAIN_PROBE)),
            State::Fenced { until } => Some(*until),
            State::Connecting { retry_at, dialing: false } => Some(*retry_at),
            State::Following { last_hb_tx, last_rx, .. } => {
                let dead = self.standby_dead_limit() + DEADLINE_SLOP;
                Some((*last_hb_tx + hb).min(*last_rx + dead).min(self.settle_until.unwrap_or(*last_rx + dead)))
            }
            State::HandingOver | State::TakingOver { .. } | State::Connecting { dialing: true, .. } => None,
        };
        t.into_iter().chain(self.handover_hold_until).min()
    }

    /// How long the peer may stay silent: `dead_after` heartbeat intervals.
    pub fn dead_limit(&self) -> Duration {
        self.cfg.heartbeat * self.cfg.dead_after
    }

    /// How long the active may stay silent before this standby takes over: [`dead_limit`],
    /// times [`SETTLE_FACTOR`] within [`SETTLE_AFTER_FENCE`] of this engine's fencing.
    ///
    /// [`dead_limit`]: Session::dead_limit
    pub fn standby_dead_limit(&self) -> Duration {
        if self.settle_until.is_some() {
            self.dead_limit() * SETTLE_FACTOR
        } else {
            self.dead_limit()
        }
    }

    fn refuse(&mut self, reason: &str) {
        tracing::warn!(node = self.cfg.node_id, event = "peer_refused", reason, "{reason}");
        self.status.set_error(reason);
        self.status.refused.fetch_add(1, Relaxed);
        self.transmit.push_back(Msg::Refused { reason: reason.to_owned() });
        self.actions.push_back(Action::Close { linger: REFUSAL_LINGER });
    }

    fn enter_active(&mut self, now: Instant) {
        self.epoch = self.epoch.max(1);
        self.status.epoch.store(self.epoch, Relaxed);
        self.status.set_role(Role::Active);
        self.status.set_peer_state(PeerState::None);
        self.state = State::Active { peer: None, hold_until: None, last_probe: now, probing: false, since: now };
        self.acct = now;
        self.actions.push_back(Action::Listen);
    }

    fn enter_standby(&mut self, now: Instant) {
        if self.status.role() != Role::Fenced {
            self.status.set_role(Role::Standby);
        }
        self.shadow = Replicas::new(self.cfg.workers);
        self.backoff = Duration::from_millis(if self.fallback_until.is_some() { 1 } else { 10 });
        self.standby_since = now;
        self.dropped_at = None;
        self.status.set_peer_state(PeerState::Connecting);
        self.state = State::Connecting { retry_at: now, dialing: false };
    }

    /// A newer epoch exists: never release output again; rejoin as a standby.
    /// Another active with a newer epoch (`newer`) exists, found by our split-brain probe or
    /// by its own: step down.
    fn fenced_by_active(&mut self, now: Instant, h: &Hello) {
        tracing::warn!(
            node = self.cfg.node_id,
            event = "fenced",
            cause = "active_peer",
            epoch = h.epoch,
            peer = h.node_id,
            "an active peer with epoch {} exists: fenced",
            h.epoch
        );
        self.fence(now);
    }

    fn fence(&mut self, now: Instant) {
        self.handover_hold_until = None;
        self.settle_until = Some(now + SETTLE_AFTER_FENCE);
        self.status.set_role(Role::Fenced);
        self.status.set_peer_state(PeerState::None);
        self.actions.push_back(Action::Close { linger: Duration::ZERO });
        self.state = State::Fenced { until: now + FENCED_WAIT };
    }

    /// Bytes last arrived on the connection at `at` (any, even part of a frame: a long batch
    /// is progress).
    pub fn on_rx(&mut self, at: Instant) {
        match &mut self.state {
            State::Active { peer: Some(p), .. } => p.last_rx = p.last_rx.max(at),
            State::Following { last_rx, .. } => *last_rx = (*last_rx).max(at),
            _ => {}
        }
    }

    /// The result of `Action::Connect`: the peer's Hello (unchecked).
    pub fn on_connected(&mut self, now: Instant, h: &Hello) {
        match self.state {
            State::Probing { .. } => {
                if let Err(e) = self.check_peer(h) {
                    self.refuse(&e);
                    self.enter_active(now);
                } else if h.role == Role::Active {
                    self.enter_standby(now);
                    self.follow(now, h);
                } else {
                    self.actions.push_back(Action::Close { linger: Duration::ZERO });
                    self.enter_active(now);
                }
            }
            State::Connecting { .. } => {
                if let Err(e) = self.check_peer(h) {
                    self.refuse(&e);
                    self.dial_failed(now, DialError::Invalid);
                } else {
                    self.follow(now, h);
                }
            }
            State::Active { ref mut probing, .. } if *probing => {
                *probing = false;
                self.actions.push_back(Action::Close { linger: Duration::ZERO });
                if h.check().is_ok() && h.role == Role::Active && newer(h.epoch, h.node_id, self.epoch, self.cfg.node_id) {
                    self.fenced_by_active(now, h);
                }
            }
            _ => self.actions.push_back(Action::Close { linger: Duration::ZERO }),
        }
    }

    /// `Action::Connect` failed.
    pub fn on_connect_failed(&mut self, now: Instant, e: DialError) {
        match &mut self.state {
            State::Probing { retry_at, dialing, .. } => {
                *dialing = false;
                if e == DialError::Invalid {
                    self.enter_active(now);
                } else {
                    *retry_at = now + Duration::from_millis(20);
                }
            }
            State::Connecting { .. } => self.dial_failed(now, e),
            State::Active { probing, .. } => *probing = false,
            _ => {}
        }
    }

    /// One message from the peer, in stream order.
    pub fn on_message(&mut self, now: Instant, m: Incoming<'_>) {
        match self.state {
            State::Active { peer: Some(_), .. } => self.active_message(now, m),
            State::Following { .. } | State::TakingOver { .. } => self.standby_message(now, m),
            _ => {}
        }
    }

    /// The connection ended (EOF, reset, a write that timed out, a frame that does not
    /// decode), after every complete frame was delivered.
    pub fn on_closed(&mut self, now: Instant, why: &str) {
        match self.state {
            State::Active { peer: Some(_), .. } => self.lose_standby(now, why),
            State::Following { .. } if !self.shadow.in_sync && self.fallback_until.is_none() && self.cfg.mode == Mode::Strict => {
                self.closed_while_joining(now, why)
            }
            State::Following { last_rx, .. } => {
                self.take_over(now, true, TakeoverReason::PeerClosed, now.saturating_duration_since(last_rx))
            }
            _ => {}
        }
    }

    /// Timers and requests (`SyncStatus::request_takeover`, `request_handover`,
    /// `fence_epoch`): heartbeats, dead-peer detection, retries, the end of holds.
    pub fn tick(&mut self, now: Instant) {
        match self.state {
            State::Probing { until, retry_at, dialing } => {
                if now >= until && !dialing {
                    self.enter_active(now);
                } else if !dialing && now >= retry_at {
                    self.state = State::Probing { until, retry_at, dialing: true };
                    self.actions.push_back(Action::Connect { role: Role::Standby, probe: false });
                }
            }
            State::Active { .. } => self.active_tick(now),
            State::Fenced { until } => {
                if now >= until {
                    self.enter_standby(now);
                }
            }
            State::Connecting { retry_at, dialing } => {
                if self.status.takeover_requested.swap(false, Relaxed) {
                    return self.take_over(now, false, TakeoverReason::Requested, Duration::ZERO);
                }
                if !dialing && now >= retry_at {
                    self.status.set_peer_state(PeerState::Connecting);
                    self.state = State::Connecting { retry_at, dialing: true };
                    self.actions.push_back(Action::Connect { role: Role::Standby, probe: false });
                }
            }
            State::Following { .. } => self.standby_tick(now),
            State::HandingOver | State::TakingOver { .. } => {}
        }
    }

}
