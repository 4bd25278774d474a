//! Replication status shared with metrics and the control socket: plain atomics written by
//! the sync thread (and a few by the engine), read by anyone. All `Relaxed`: these are
//! reports, they order nothing.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::{Acquire, Relaxed, Release}};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::proto::Role;
use flowtwin_engine::counters::{latency_bucket, write_latency_histogram, LATENCY_SLOTS};

/// What this node knows about its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PeerState {
    /// No peer (active without a standby).
    None = 0,
    /// Standby: trying to reach the active.
    Connecting = 1,
    /// A standby is receiving the join snapshot.
    Joining = 2,
    /// The standby has applied a complete snapshot and follows the deltas.
    InSync = 3,
    /// The peer was declared dead.
    Dead = 4,
}

impl PeerState {
    fn from_u8(v: u8) -> PeerState {
        match v {
            1 => PeerState::Connecting,
            2 => PeerState::Joining,
            3 => PeerState::InSync,
            4 => PeerState::Dead,
            _ => PeerState::None,
        }
    }
    /// Lower-case name (metrics, ctl).
    pub fn name(self) -> &'static str {
        match self {
            PeerState::None => "none",
            PeerState::Connecting => "connecting",
            PeerState::Joining => "joining",
            PeerState::InSync => "in_sync",
            PeerState::Dead => "dead",
        }
    }
}

/// Replication status of one engine.
#[derive(Debug)]
pub struct SyncStatus {
    role: AtomicU8,
    peer_state: AtomicU8,
    pub epoch: AtomicU64,
    pub in_sync: AtomicBool,
    /// Records sent to the standby and not yet acknowledged.
    pub lag_records: AtomicU64,
    /// Age of the oldest unacknowledged batch, µs.
    pub lag_us: AtomicU64,
    /// Flows whose creation the standby has not acknowledged yet (async mode: lost if the
    /// active died now; strict mode: their SYN-ACK is still held, so nothing is lost).
    pub flows_at_risk: AtomicU64,
    /// Async mode: times output was held because the lag passed `async_max_lag`.
    pub async_lag_holds: AtomicU64,
    /// Heartbeat intervals without anything from the peer, current streak.
    pub heartbeats_missed: AtomicU64,
    /// Heartbeat intervals missed, all time.
    pub heartbeats_missed_total: AtomicU64,
    pub takeovers: AtomicU64,
    /// Set by the engine when another engine announced our VIPs with this (newer) epoch;
    /// the active's sync thread fences itself (0: none).
    fence_epoch: AtomicU64,
    /// Times this engine fenced itself because another engine announced its VIPs.
    pub fenced_by_announcement: AtomicU64,
    /// Set by the engine after installing taken-over flows.
    pub flows_resumed: AtomicU64,
    /// Flows lost: dropped after a replay error, or incomplete at takeover.
    pub flows_abandoned: AtomicU64,
    /// Of the flows the last takeover resumed, those whose replica came from a full image
    /// (a join snapshot, or a re-image after a full ring) rather than from their `New`.
    pub takeover_imaged_flows: AtomicU64,
    /// Replicas taken over with bytes their image counted but whose data never arrived (a
    /// delta lost to a full ring before its re-image): resumed from what the service got.
    pub takeover_rewound_flows: AtomicU64,
    /// Replicas taken over as one half of a linked pair whose other half was not among them
    /// (the engine closes them: `link_orphans`).
    pub takeover_link_orphans: AtomicU64,
    pub replay_errors: AtomicU64,
    /// Standby: flow images whose listener (by fingerprint) this engine does not run.
    pub replicas_unknown_service: AtomicU64,
    /// Standby: updates/data for flows it does not hold (the join snapshot brings them).
    pub unknown_flow_deltas: AtomicU64,
    /// Standby: deltas whose sequence number did not follow the previous one.
    pub seq_gaps: AtomicU64,
    /// Deltas that did not decode.
    pub decode_errors: AtomicU64,
    /// Active: 1 while output is released without an in-sync standby.
    pub unprotected: AtomicBool,
    /// Active: total µs spent unprotected.
    pub unprotected_us: AtomicU64,
    /// Record bytes sent (active) or received (standby).
    pub bytes_replicated: AtomicU64,
    pub deltas_sent: AtomicU64,
    /// Active: updates left out of batches because a later update of the same flow in the
    /// same batch superseded them (see `coalesce`).
    pub deltas_coalesced: AtomicU64,
    pub deltas_applied: AtomicU64,
    pub batches_sent: AtomicU64,
    /// Shadow flows held (standby).
    pub shadow_flows: AtomicU64,
    /// Standby connections accepted (active) / sessions established (standby).
    pub sessions: AtomicU64,
    /// Peers refused (version mismatch, bad hello).
    pub refused: AtomicU64,
    /// Proxy pool tables applied (standby: the active's `Pool` messages).
    pub pool_tables: AtomicU64,
    /// Proxy pool tables skipped: the active proxies a service this engine does not run.
    pub pool_unknown_service: AtomicU64,
    /// Last takeover: unix time (ns), detection latency (µs: last frame from the dead
    /// active → declared dead) and takeover duration (µs: declared dead → callback done).
    pub takeover_at_unix_ns: AtomicU64,
    pub last_detect_us: AtomicU64,
    pub last_takeover_us: AtomicU64,
    /// Times the sync thread blocked in its waiter (only with `SyncConfig::waiter`).
    pub waits: AtomicU64,
    /// Of those, waits a worker's doorbell ended (it published deltas while the sync
    /// thread was parked). Under load the sync thread rarely parks, so this stays small.
    pub doorbell_wakes: AtomicU64,
    /// Active: batch sent → its acknowledgement (the standby applied it), µs. Strict output
    /// waits about one of these per commit-relevant change.
    pub ack_rtt: Histogram,
    pub(crate) takeover_requested: AtomicBool,
    pub(crate) handover_requested: AtomicBool,
    /// The engine's port link is down (`set_port_down`): a standby does not take over on a
    /// silent active meanwhile (it could not serve), but once the link is back.
    port_down: AtomicBool,
    /// Takeovers on a silent active put off because this engine's port was down (counted once
    /// per silence).
    pub takeovers_deferred_port_down: AtomicU64,
    /// This engine handed over and keeps its flows to fall back on until its rejoin of the
    /// new active is in sync (`SyncConfig::handover_hold`). The engine's workers keep their
    /// flows (output held) while it is set, and forget them once it is cleared.
    retain_flows: AtomicBool,
    /// Takeovers that resumed the flows kept since a handover (`HandoverFallback`).
    pub handover_fallbacks: AtomicU64,
    pub(crate) stop: AtomicBool,
    last_error: Mutex<String>,
}

impl Default for SyncStatus {
    fn default() -> Self {
        Self::new()
    }
}

impl SyncStatus {
    pub fn new() -> SyncStatus {
        SyncStatus {
            role: AtomicU8::new(Role::Standby as u8),
            peer_state: AtomicU8::new(PeerState::None as u8),
            epoch: AtomicU64::new(0),
            in_sync: AtomicBool::new(false),
            lag_records: AtomicU64::new(0),
            lag_us: AtomicU64::new(0),
            flows_at_risk: AtomicU64::new(0),
            async_lag_holds: AtomicU64::new(0),
            heartbeats_missed: AtomicU64::new(0),
            heartbeats_missed_total: AtomicU64::new(0),
            takeovers: AtomicU64::new(0),
            fence_epoch: AtomicU64::new(0),
            fenced_by_announcement: AtomicU64::new(0),
            flows_resumed: AtomicU64::new(0),
            flows_abandoned: AtomicU64::new(0),
            takeover_imaged_flows: AtomicU64::new(0),
            takeover_rewound_flows: AtomicU64::new(0),
            takeover_link_orphans: AtomicU64::new(0),
            replay_errors: AtomicU64::new(0),
            replicas_unknown_service: AtomicU64::new(0),
            unknown_flow_deltas: AtomicU64::new(0),
            seq_gaps: AtomicU64::new(0),
            decode_errors: AtomicU64::new(0),
            unprotected: AtomicBool::new(false),
            unprotected_us: AtomicU64::new(0),
            bytes_replicated: AtomicU64::new(0),
            deltas_sent: AtomicU64::new(0),
            deltas_coalesced: AtomicU64::new(0),
            deltas_applied: AtomicU64::new(0),
            batches_sent: AtomicU64::new(0),
            shadow_flows: AtomicU64::new(0),
            sessions: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            pool_tables: AtomicU64::new(0),
            pool_unknown_service: AtomicU64::new(0),
            takeover_at_unix_ns: AtomicU64::new(0),
            last_detect_us: AtomicU64::new(0),
            last_takeover_us: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            doorbell_wakes: AtomicU64::new(0),
            ack_rtt: Histogram::default(),
            takeover_requested: AtomicBool::new(false),
            handover_requested: AtomicBool::new(false),
            port_down: AtomicBool::new(false),
            takeovers_deferred_port_down: AtomicU64::new(0),
            retain_flows: AtomicBool::new(false),
            handover_fallbacks: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            last_error: Mutex::new(String::new()),
        }
    }

    pub fn role(&self) -> Role {
        Role::from_u8(self.role.load(Relaxed)).unwrap_or(Role::Fenced)
    }
    pub(crate) fn set_role(&self, r: Role) {
        self.role.store(r as u8, Relaxed);
    }
    pub fn peer_state(&self) -> PeerState {
        PeerState::from_u8(self.peer_state.load(Relaxed))
    }
    pub(crate) fn set_peer_state(&self, p: PeerState) {
        self.peer_state.store(p as u8, Relaxed);
        // Release/Acquire: a reader that sees in_sync also sees the watermarks published
        // before it (the active publishes them first).
        self.in_sync.store(p == PeerState::InSync, Release);
    }
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Relaxed)
    }
    /// Another engine announced our VIPs with `epoch`: an active with an older epoch fences
    /// itself (its sync thread acts on it).
    pub fn request_fence(&self, epoch: u64) {
        self.fence_epoch.fetch_max(epoch, Relaxed);
    }
    /// The epoch of the newest such announcement (0: none).
    pub fn fence_epoch(&self) -> u64 {
        self.fence_epoch.load(Relaxed)
    }
    pub fn in_sync(&self) -> bool {
        self.in_sync.load(Acquire)
    }

    /// ctl `takeover`: a standby takes over now (as if the active had died). Ignored by an
    /// active engine.
    pub fn request_takeover(&self) {
        self.takeover_requested.store(true, Relaxed);
    }

    /// The engine's port link is down (true) or up: the engine's main loop sets it from the
    /// port's link state (see `port_down`).
    pub fn set_port_down(&self, down: bool) {
        self.port_down.store(down, Relaxed);
    }

    /// Whether the engine said its port link is down.
    pub fn port_down(&self) -> bool {
        self.port_down.load(Relaxed)
    }

    /// ctl `failback`: an active engine with an in-sync standby hands the VIPs over
    /// (`Handover`) and fences itself. Ignored otherwise.
    pub fn request_handover(&self) {
        self.handover_requested.store(true, Relaxed);
    }

    /// Whether the engine's workers keep their flows while not active (see `retain_flows`).
    /// Acquire pairs with the sync core's Release: a cleared flag is seen after the takeover
    /// that preceded its clearing.
    pub fn retain_flows(&self) -> bool {
        self.retain_flows.load(Acquire)
    }
    pub(crate) fn set_retain_flows(&self, on: bool) {
        self.retain_flows.store(on, Release);
    }

    /// The engine reports how many taken-over flows it installed.
    pub fn set_flows_resumed(&self, n: u64) {
        self.flows_resumed.store(n, Relaxed);
    }

    /// The last error or refusal (empty if none).
    pub fn last_error(&self) -> String {
        self.last_error
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }
    pub(crate) fn set_error(&self, e: impl Into<String>) {
        if let Ok(mut s) = self.last_error.lock() {
            *s = e.into();
        }
    }

    pub(crate) fn mark_takeover(&self, detect: Duration, took: Duration) {
        let ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        self.takeover_at_unix_ns.store(ns, Relaxed);
        self.last_detect_us
            .store(detect.as_micros() as u64, Relaxed);
        self.last_takeover_us
            .store(took.as_micros() as u64, Relaxed);
        self.takeovers.fetch_add(1, Relaxed);
    }

    /// Appends the status as Prometheus text exposition (`flowtwin_sync_*`).
    pub fn render_prometheus(&self, out: &mut String) {
        let role = self.role();
        let _ = writeln!(out, "# HELP flowtwin_sync_role this engine's replication role (1 for the current one)");
        let _ = writeln!(out, "# TYPE flowtwin_sync_role gauge");
        for r in [Role::Active, Role::Standby, Role::Fenced] {
            let _ = writeln!(out, "flowtwin_sync_role{{role=\"{}\"}} {}", r.name(), (r == role) as u8);
        }
        let peer = self.peer_state();
        let _ = writeln!(out, "# HELP flowtwin_sync_peer_state the peer as this engine sees it (1 for the current state)");
        let _ = writeln!(out, "# TYPE flowtwin_sync_peer_state gauge");
        for p in [PeerState::None, PeerState::Connecting, PeerState::Joining, PeerState::InSync, PeerState::Dead] {
            let _ = writeln!(out, "flowtwin_sync_peer_state{{state=\"{}\"}} {}", p.name(), (p == peer) as u8);
        }
        // (name after flowtwin_sync_, type, help, value): one HELP and TYPE line each, as
        // promtool check metrics wants.
        let rows: &[(&str, &str, &str, u64)] = &[
            ("epoch", "gauge", "the current epoch (raised by every takeover)", self.epoch()),
            ("in_sync", "gauge", "1 while the standby holds every flow of the active", self.in_sync() as u64),
            ("lag_records", "gauge", "delta records the standby has not acknowledged", self.lag_records.load(Relaxed)),
            ("lag_us", "gauge", "age of the oldest unacknowledged batch, microseconds", self.lag_us.load(Relaxed)),
            ("flows_at_risk", "gauge", "async mode: flows a failover now would lose", self.flows_at_risk.load(Relaxed)),
            ("async_lag_holds_total", "counter", "async mode: times output was held because the standby lagged more than async_max_lag_ms", self.async_lag_holds.load(Relaxed)),
            ("heartbeats_missed", "gauge", "heartbeat intervals since the peer was last heard", self.heartbeats_missed.load(Relaxed)),
            ("heartbeats_missed_total", "counter", "heartbeat intervals the peer stayed silent", self.heartbeats_missed_total.load(Relaxed)),
            ("takeovers_total", "counter", "takeovers by this engine", self.takeovers.load(Relaxed)),
            ("flows_resumed", "gauge", "flows resumed at the last takeover", self.flows_resumed.load(Relaxed)),
            ("flows_abandoned_total", "counter", "replicas not resumable at takeovers", self.flows_abandoned.load(Relaxed)),
            ("takeover_imaged_flows", "gauge", "of the last takeover's flows, those from a join snapshot", self.takeover_imaged_flows.load(Relaxed)),
            ("takeover_rewound_flows_total", "counter", "replicas resumed from what their service received (a delta lost to a full ring)", self.takeover_rewound_flows.load(Relaxed)),
            ("takeover_link_orphans_total", "counter", "linked flows taken over without their partner", self.takeover_link_orphans.load(Relaxed)),
            ("replay_errors_total", "counter", "standby: deltas that could not be replayed", self.replay_errors.load(Relaxed)),
            (
                "replicas_unknown_service_total",
                "counter",
                "standby: flow images of a service this engine does not run (the two configs differ)",
                self.replicas_unknown_service.load(Relaxed),
            ),
            ("unknown_flow_deltas_total", "counter", "standby: deltas of a flow it does not hold", self.unknown_flow_deltas.load(Relaxed)),
            ("seq_gaps_total", "counter", "standby: gaps in a worker's delta sequence", self.seq_gaps.load(Relaxed)),
            ("decode_errors_total", "counter", "frames or deltas from the peer that did not decode", self.decode_errors.load(Relaxed)),
            ("unprotected", "gauge", "1 while the active serves without an in-sync standby", self.unprotected.load(Relaxed) as u64),
            ("unprotected_seconds_total", "counter", "seconds served without an in-sync standby", self.unprotected_us.load(Relaxed) / 1_000_000),
            ("bytes_replicated_total", "counter", "bytes sent to the standby", self.bytes_replicated.load(Relaxed)),
            ("deltas_sent_total", "counter", "delta records sent to the standby", self.deltas_sent.load(Relaxed)),
            ("deltas_coalesced_total", "counter", "deltas merged into a later one of the same flow before sending", self.deltas_coalesced.load(Relaxed)),
            ("deltas_applied_total", "counter", "standby: deltas applied", self.deltas_applied.load(Relaxed)),
            ("batches_sent_total", "counter", "batches sent to the standby", self.batches_sent.load(Relaxed)),
            ("shadow_flows", "gauge", "standby: replicas held", self.shadow_flows.load(Relaxed)),
            ("fenced_by_announcement_total", "counter", "times this engine fenced itself on another engine's tagged announcement", self.fenced_by_announcement.load(Relaxed)),
            ("handover_fallbacks_total", "counter", "flows kept after a handover resumed because the new active died first", self.handover_fallbacks.load(Relaxed)),
            (
                "takeovers_deferred_port_down_total",
                "counter",
                "standby: takeovers of a silent active put off while this engine's port link was down",
                self.takeovers_deferred_port_down.load(Relaxed),
            ),
            ("sessions_total", "counter", "peer sessions started", self.sessions.load(Relaxed)),
            ("peers_refused_total", "counter", "peers refused (version, mode, timer or group mismatch)", self.refused.load(Relaxed)),
            ("pool_tables_applied_total", "counter", "proxy backend tables applied from the active (standby)", self.pool_tables.load(Relaxed)),
            (
                "pool_tables_unknown_service_total",
                "counter",
                "standby: proxy backend tables of a service this engine does not run (the two configs differ)",
                self.pool_unknown_service.load(Relaxed),
            ),
            ("last_detect_us", "gauge", "last takeover: peer silence at detection, microseconds", self.last_detect_us.load(Relaxed)),
            ("last_takeover_us", "gauge", "last takeover: detection to flows handed to the workers, microseconds", self.last_takeover_us.load(Relaxed)),
            ("waits_total", "counter", "times the idle sync thread blocked", self.waits.load(Relaxed)),
            ("doorbell_wakes_total", "counter", "times a worker's doorbell woke the sync thread", self.doorbell_wakes.load(Relaxed)),
        ];
        for &(name, kind, help, v) in rows {
            let _ = writeln!(out, "# HELP flowtwin_sync_{name} {help}\n# TYPE flowtwin_sync_{name} {kind}\nflowtwin_sync_{name} {v}");
        }
        self.ack_rtt.render(
            out,
            "flowtwin_sync_ack_rtt_us",
            "active: a batch sent -> the standby applied and acknowledged it",
        );
    }
}

/// A Prometheus histogram of µs values (buckets: `LATENCY_BUCKETS_US`, like the workers'
/// output-hold histogram). Written by one thread, read by any.
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_SLOTS],
    sum: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { buckets: std::array::from_fn(|_| AtomicU64::new(0)), sum: AtomicU64::new(0) }
    }
}

impl Histogram {
    pub fn observe(&self, us: u64) {
        self.buckets[latency_bucket(us)].fetch_add(1, Relaxed);
        self.sum.fetch_add(us, Relaxed);
    }

    /// Observations so far, per bucket (not cumulative; the last is `+Inf`).
    pub fn counts(&self) -> [u64; LATENCY_SLOTS] {
        std::array::from_fn(|i| self.buckets[i].load(Relaxed))
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        write_latency_histogram(out, name, help, &self.counts(), self.sum.load(Relaxed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_upper_bounds() {
        let h = Histogram::default();
        for us in [0, 10, 11, 99, 100, 150, 200_000, 200_001, u64::MAX / 4] {
            h.observe(us);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        let line = |k: &str| out.lines().find(|l| l.starts_with(k)).unwrap_or_else(|| panic!("{k} in {out}")).to_owned();
        assert_eq!(line("x_bucket{le=\"10\"}"), "x_bucket{le=\"10\"} 2", "le is inclusive");
        assert_eq!(line("x_bucket{le=\"20\"}"), "x_bucket{le=\"20\"} 3");
        assert_eq!(line("x_bucket{le=\"100\"}"), "x_bucket{le=\"100\"} 5");
        assert_eq!(line("x_bucket{le=\"200\"}"), "x_bucket{le=\"200\"} 6");
        assert_eq!(line("x_bucket{le=\"200000\"}"), "x_bucket{le=\"200000\"} 7");
        assert_eq!(line("x_bucket{le=\"+Inf\"}"), "x_bucket{le=\"+Inf\"} 9");
        assert_eq!(line("x_count"), "x_count 9");
        assert!(out.starts_with("# HELP x help\n# TYPE x histogram\n"));
    }
}
