//! The standby's half of a [`Session`]: dialling the active, following its stream (apply,
//! ack, in sync), rejoining after a drop, and the takeover with its fallbacks.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::*;

impl Session {
    /// A standby's dial failed: fall back or take over if that proves the peer gone, else
    /// retry with backoff.
    pub(super) fn dial_failed(&mut self, now: Instant, e: DialError) {
        // We handed over, and the engine we handed over to refuses our rejoin once it had
        // time to listen: it is gone. It held all output since, so the flows we kept are what
        // the clients last saw.
        if self.fallback_valid(now) {
            let since = now.saturating_duration_since(self.standby_since);
            if e == DialError::Refused && since >= HANDOVER_LISTEN_GRACE {
                tracing::warn!(
                    node = self.cfg.node_id,
                    event = "peer_lost",
                    reason = "refuses our rejoin after the handover",
                    since_ms = since.as_millis() as u64,
                    "the engine we handed over to refuses our rejoin {since:?} after the handover: it is gone"
                );
                return self.take_over(now, false, TakeoverReason::HandoverFallback, since);
            }
        } else if self.fallback_until.is_some() {
            self.drop_fallback("handover_hold is over");
        }
        // Dropped by an active that then died (it may have found us silent because it was
        // starving itself): a refused rejoin means nothing listens on its sync port any more.
        // Within fence_hold of the drop it released nothing we do not have.
        if let Some(t) = self.dropped_at {
            let since = now.saturating_duration_since(t);
            if e == DialError::Refused && since < self.cfg.fence_hold {
                tracing::warn!(
                    node = self.cfg.node_id,
                    event = "peer_lost",
                    reason = "refuses connections after dropping us",
                    since_ms = since.as_millis() as u64,
                    "the active that dropped us {since:?} ago refuses connections: it is gone"
                );
                return self.take_over(now, false, TakeoverReason::DroppedThenGone, since);
            }
            if since >= self.cfg.fence_hold {
                self.dropped_at = None;
            }
        }
        let retry_at = now + self.backoff;
        let cap = Duration::from_millis(if self.fallback_until.is_some() { 5 } else { 200 });
        self.backoff = (self.backoff * 2).min(cap);
        self.state = State::Connecting { retry_at, dialing: false };
    }

    /// The active closed the connection while we were still joining (not in sync). A live
    /// active that dropped us mid-snapshot may have had its last word (`Refused`) stuck
    /// behind the snapshot it was sending when it closed (seen on the rig: a starved
    /// standby, dropped twice, took over from an active that still served, and both answered
    /// until the old one heard the announcement). Redial first: a live active takes us back;
    /// one that is gone refuses the connection, and then we take over at once with what we
    /// have (`dial_failed`, `dropped_at`), as before, a millisecond later.
    pub(super) fn closed_while_joining(&mut self, now: Instant, why: &str) {
        tracing::warn!(
            node = self.cfg.node_id,
            event = "peer_lost",
            reason = why,
            "the active closed the connection before we were in sync ({why}): redialing; a refusal means it is gone"
        );
        self.status.set_error(format!("connection closed while joining: {why}"));
        self.status.set_peer_state(PeerState::Connecting);
        self.dropped_at = Some(now);
        self.backoff = Duration::from_millis(1);
        self.state = State::Connecting { retry_at: now + Duration::from_millis(1), dialing: false };
    }

    /// Connected to the peer as a would-be standby, its Hello checked.
    pub(super) fn follow(&mut self, now: Instant, h: &Hello) {
        self.backoff = Duration::from_millis(10);
        self.dropped_at = None;
        if h.role != Role::Active {
            self.actions.push_back(Action::Close { linger: Duration::ZERO });
            self.state = State::Connecting { retry_at: now + Duration::from_millis(50), dialing: false };
            return;
        }
        self.epoch = self.epoch.max(h.epoch);
        self.status.epoch.store(self.epoch, Relaxed);
        self.adopt_secret(h);
        self.status.set_role(Role::Standby);
        self.status.sessions.fetch_add(1, Relaxed);
        tracing::info!(
            node = self.cfg.node_id,
            event = "peer_connected",
            peer = h.node_id,
            peer_role = "active",
            epoch = h.epoch,
            "standby of node {} (epoch {})",
            h.node_id,
            h.epoch
        );
        self.shadow.reset(usize::from(h.workers).max(self.cfg.workers));
        self.status.set_peer_state(PeerState::Joining);
        self.state = State::Following { last_hb_tx: now, last_rx: now, missed: 0 };
    }

    pub(super) fn standby_message(&mut self, now: Instant, m: Incoming<'_>) {
        let taking_over = matches!(self.state, State::TakingOver { .. });
        match m {
            Incoming::Batch { worker, first, last, records } => {
                let node = self.cfg.node_id;
                self.shadow.apply_batch(&self.stack_cfg, &self.status, worker, (first, last), records, &|msg| {
                    tracing::warn!(node, event = "replay_error", "{msg}")
                });
            }
            Incoming::Snapshot { token } => self.shadow.begin_join(token),
            Incoming::Pool(t) => {
                if let Err(e) = self.apply_pool(&t) {
                    // The configs differ: a replica of flows on other slots cannot be trusted.
                    // Refuse and retry later as a standby (never take over for this).
                    self.refuse(&e);
                    if !taking_over {
                        self.dial_failed(now, DialError::Invalid);
                    }
                }
            }
            _ if taking_over => {}
            Incoming::Handover { epoch } => {
                self.epoch = self.epoch.max(epoch.saturating_sub(1));
                self.take_over(now, true, TakeoverReason::Handover, Duration::ZERO);
            }
            Incoming::Heartbeat(h) => {
                self.epoch = self.epoch.max(h.epoch);
                self.status.lag_records.store(h.lag_records, Relaxed);
                self.status.lag_us.store(h.lag_us, Relaxed);
            }
            Incoming::Refused(r) => {
                // A live active dropped us (e.g. we stalled): its state has moved on without
                // us, so rejoin with a fresh snapshot; never take over.
                tracing::warn!(node = self.cfg.node_id, event = "peer_lost", reason = %r, "active dropped us: {r}; rejoining");
                self.status.set_error(format!("dropped by the active: {r}"));
                self.actions.push_back(Action::Close { linger: Duration::ZERO });
                self.status.set_peer_state(PeerState::Connecting);
                if self.cfg.mode == Mode::Strict && self.shadow.in_sync {
                    self.dropped_at = Some(now);
                }
                // Retry soon: the rejoin (or the finding that the active is gone) must come
                // well within fence_hold.
                self.backoff = Duration::from_millis(1);
                self.state = State::Connecting { retry_at: now + Duration::from_millis(1), dialing: false };
            }
            _ => {}
        }
    }

    /// `Action::ReadRest` is done: finish the takeover.
    pub fn on_rest_read(&mut self, now: Instant) {
        let State::TakingOver { reason, detect, started } = self.state else { return };
        // Tell a still-listening old active that it is fenced (after the engine has the
        // flows: the callback follows the role change as closely as it can).
        self.transmit.push_back(Msg::Takeover { epoch: self.epoch });
        self.finish_takeover(now, reason, detect, started);
        self.actions.push_back(Action::Close { linger: LAST_WORD_LINGER });
    }

    pub(super) fn standby_tick(&mut self, now: Instant) {
        if self.status.takeover_requested.swap(false, Relaxed) {
            return self.take_over(now, true, TakeoverReason::Requested, Duration::ZERO);
        }
        // Ack after apply: the highest sequence applied per worker.
        for (w, ws) in self.shadow.workers.iter_mut().enumerate() {
            if ws.applied > ws.acked {
                ws.acked = ws.applied;
                self.transmit.push_back(Msg::Ack { worker: w as u16, seq: ws.applied });
            }
        }
        let became_in_sync = self.shadow.check_in_sync();
        if became_in_sync {
            self.status.set_peer_state(PeerState::InSync);
            tracing::info!(node = self.cfg.node_id, event = "in_sync", token = self.shadow.join_token, "in sync (token {})", self.shadow.join_token);
            self.drop_fallback("our rejoin of the new active is in sync");
        } else if self.fallback_until.is_some() && !self.fallback_valid(now) {
            self.drop_fallback("handover_hold is over");
        }
        let flows = self.shadow.flows() as u64;
        self.status.shadow_flows.store(flows, Relaxed);
        if self.settle_until.is_some_and(|t| now >= t) {
            self.settle_until = None;
        }
        let (heartbeat, dead_limit) = (self.cfg.heartbeat, self.standby_dead_limit());
        let State::Following { last_hb_tx, last_rx, missed } = &mut self.state else { return };
        if became_in_sync || now.saturating_duration_since(*last_hb_tx) >= heartbeat {
            self.transmit.push_back(Msg::Heartbeat(Heartbeat {
                epoch: self.epoch,
                role: Role::Standby as u8,
                in_sync: self.shadow.in_sync,
                token: self.shadow.join_token,
                lag_records: 0,
                lag_us: 0,
                flows,
            }));
            *last_hb_tx = now;
        }
        let silent = silence(&self.status, heartbeat, now, *last_rx, missed);
        if silent <= dead_limit {
            self.port_deferred = false;
        } else if self.status.port_down() {
            // Our own port is down: we could not serve the VIPs, and an active that is only
            // starved (a busy machine) would be fenced for nothing, leaving nobody to answer.
            // Take over once the link is back, if the active is still silent then.
            if !self.port_deferred {
                self.port_deferred = true;
                self.status.takeovers_deferred_port_down.fetch_add(1, Relaxed);
                tracing::warn!(
                    node = self.cfg.node_id,
                    event = "takeover_deferred",
                    silent_ms = silent.as_millis() as u64,
                    "the active is silent for {silent:?}, but our port link is down: not taking over until it is up"
                );
            }
        } else {
            self.take_over(now, true, TakeoverReason::HeartbeatTimeout, silent);
        }
    }

    pub(super) fn fallback_valid(&self, now: Instant) -> bool {
        self.fallback_until.is_some_and(|t| now < t)
    }

    /// The kept flows are no longer needed (our rejoin is in sync) or no longer valid (the
    /// new active's hold is over): the workers forget them.
    pub(super) fn drop_fallback(&mut self, why: &str) {
        if self.fallback_until.take().is_some() {
            self.status.set_retain_flows(false);
            tracing::info!(node = self.cfg.node_id, event = "fallback_dropped", reason = why, "forgetting the flows kept since the handover: {why}");
        }
    }

    /// Takeover, in DESIGN §4 order: fence (epoch + 1), apply everything received (`ReadRest`
    /// when a connection is open), deliver owed FINs, hand the flows to the engine; then serve
    /// as the active.
    pub(super) fn take_over(&mut self, now: Instant, connected: bool, reason: TakeoverReason, detect: Duration) {
        self.port_deferred = false;
        self.epoch += 1;
        self.status.epoch.store(self.epoch, Relaxed);
        self.status.set_peer_state(PeerState::Dead);
        if connected {
            self.state = State::TakingOver { reason, detect, started: now };
            self.actions.push_back(Action::ReadRest);
        } else {
            self.finish_takeover(now, reason, detect, now);
        }
    }

    pub(super) fn finish_takeover(&mut self, now: Instant, reason: TakeoverReason, detect: Duration, started: Instant) {
        let in_sync = self.shadow.check_in_sync() || self.shadow.in_sync;
        // We handed over, and the new active died before our rejoin was in sync: resume the
        // flows our workers kept (nothing left the new active since), not a partial replica.
        let fallback = !in_sync && self.fallback_valid(now);
        let reason = if fallback { TakeoverReason::HandoverFallback } else { reason };
        let workers = self.cfg.workers;
        let flows = if fallback {
            self.shadow.reset(workers);
            self.status.handover_fallbacks.fetch_add(1, Relaxed);
            (0..workers).map(|_| Vec::new()).collect()
        } else {
            self.shadow.take_for_takeover(&self.stack_cfg, &self.status, workers)
        };
        let n: usize = flows.iter().map(Vec::len).sum();
        self.status.shadow_flows.store(0, Relaxed);
        if fallback {
            tracing::warn!(
                node = self.cfg.node_id,
                event = "takeover_replica",
                reason = ?reason,
                epoch = self.epoch,
                retained = true,
                "takeover ({reason:?}, epoch {}): resuming the flows kept since the handover",
                self.epoch
            );
        } else {
            let imaged = self.status.takeover_imaged_flows.load(Relaxed);
            tracing::warn!(
                node = self.cfg.node_id,
                event = "takeover_replica",
                reason = ?reason,
                epoch = self.epoch,
                flows = n,
                imaged,
                in_sync,
                "takeover ({reason:?}, epoch {}, {n} flows, {imaged} of them from full images, in_sync {in_sync})",
                self.epoch
            );
        }
        // By handover: hold all output until the engine that handed over is our in-sync
        // standby (it keeps its flows to fall back on meanwhile), at most handover_hold.
        let hold_all = reason == TakeoverReason::Handover && self.cfg.mode == Mode::Strict && !self.cfg.handover_hold.is_zero();
        if hold_all {
            self.handover_hold_until = Some(now + self.cfg.handover_hold);
        }
        self.fallback_until = None;
        let takeover = Takeover { epoch: self.epoch, flows, reason, in_sync, retained: fallback, groups: self.cfg.groups };
        // Active before the callback (`enter_active` sets the role now, the driver calls back
        // later): the engine follows this role, and must never see Standby after its workers
        // started installing the flows. The callback comes before `Listen`.
        self.actions.push_back(Action::TakeOver { takeover, detect, started, hold_all });
        self.enter_active(now);
    }
}
