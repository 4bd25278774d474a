//! The active's half of a [`Session`]: admission of a standby, its acks and heartbeats,
//! its liveness, the release plan (output commit), and the handover (failback).

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::*;

impl Session {
    /// A standby connected to our listener and sent `h` (our Hello went out already).
    /// Admitted: a `Snapshot` and `Action::RequestSnapshot`; else a refusal or a close.
    pub fn on_accept(&mut self, now: Instant, from: &str, h: &Hello) {
        if !self.wants_accept() {
            self.actions.push_back(Action::Close { linger: Duration::ZERO });
            return;
        }
        if let Err(e) = self.check_peer(h) {
            return self.refuse(&format!("refusing {from}: {e}"));
        }
        if h.role == Role::Active {
            // Another active probing for a split brain: the older epoch (then the higher node
            // id) steps down. Our Hello, already sent, tells the prober the same rule.
            self.actions.push_back(Action::Close { linger: Duration::ZERO });
            if newer(h.epoch, h.node_id, self.epoch, self.cfg.node_id) {
                self.fenced_by_active(now, h);
            }
            return;
        }
        if h.role != Role::Standby {
            return self.refuse(&format!("refusing {from}: peer role {} (expected standby)", h.role.name()));
        }
        if h.epoch > self.epoch {
            // The peer has seen a newer epoch than ours: someone took over from us.
            return self.refuse(&format!("refusing {from}: peer epoch {} > ours {}", h.epoch, self.epoch));
        }
        self.token += 1;
        let token = self.token;
        self.transmit.push_back(Msg::Snapshot { token });
        // The proxies' pools first: the standby's slots are ours before any flow refers to one.
        self.send_pools(true);
        // Everything drained from now on goes to this standby, so the snapshot (which the
        // workers emit after seeing the token) and every later delta reach it. Strict: output
        // waits for this standby from now on (a handover hold keeps holding everything), and
        // the workers pace the snapshot by its acks.
        let strict = self.cfg.mode == Mode::Strict;
        self.actions.push_back(Action::RequestSnapshot { token, pace: strict, hold: strict && self.handover_hold_until.is_none() });
        self.status.sessions.fetch_add(1, Relaxed);
        self.status.set_peer_state(PeerState::Joining);
        tracing::info!(
            node = self.cfg.node_id,
            event = "peer_connected",
            peer = h.node_id,
            peer_role = "standby",
            addr = from,
            token,
            "standby node {} at {from} joining (snapshot token {token})",
            h.node_id
        );
        let n = self.cfg.workers;
        if let State::Active { peer, .. } = &mut self.state {
            *peer = Some(PeerView {
                token,
                in_sync: false,
                acked: vec![0; n],
                unacked: vec![VecDeque::new(); n],
                young: vec![VecDeque::new(); n],
                last_hb_tx: now,
                last_rx: now,
                missed: 0,
            });
        }
    }

    /// The driver sent worker `w`'s batch ending at `last_seq` (`records` records) to the
    /// standby; `new_flows` are the sequence numbers of the flow creations in it.
    pub fn on_batch_sent(&mut self, now: Instant, w: usize, last_seq: u64, records: u32, new_flows: &[u64]) {
        if let State::Active { peer: Some(p), .. } = &mut self.state {
            if w < p.unacked.len() {
                p.unacked[w].push_back((last_seq, records, now));
                p.young[w].extend(new_flows.iter().copied());
            }
        }
    }

    pub(super) fn active_message(&mut self, now: Instant, m: Incoming<'_>) {
        let State::Active { peer: Some(p), .. } = &mut self.state else { return };
        match m {
            Incoming::Ack { worker, seq } => {
                let w = usize::from(worker);
                if w < p.acked.len() && seq > p.acked[w] {
                    p.acked[w] = seq;
                    while p.young[w].front().is_some_and(|&s| s <= seq) {
                        p.young[w].pop_front();
                    }
                    while p.unacked[w].front().is_some_and(|b| b.0 <= seq) {
                        if let Some((_, _, sent)) = p.unacked[w].pop_front() {
                            self.status.ack_rtt.observe(now.saturating_duration_since(sent).as_micros() as u64);
                        }
                    }
                }
            }
            Incoming::Heartbeat(h) => {
                if !p.in_sync && h.in_sync && h.token == p.token {
                    // Reported as in sync by `release`, once output is held for it.
                    p.in_sync = true;
                    let token = p.token;
                    tracing::info!(node = self.cfg.node_id, event = "peer_in_sync", token, "standby in sync (token {token})");
                }
                self.status.shadow_flows.store(h.flows, Relaxed);
            }
            Incoming::Takeover { epoch } if epoch > self.epoch => {
                tracing::warn!(node = self.cfg.node_id, event = "fenced", cause = "peer_took_over", epoch, "peer took over with epoch {epoch}: fenced");
                self.fence(now);
            }
            Incoming::Refused(r) => self.lose_standby(now, &format!("refused: {r}")),
            _ => {}
        }
    }

    /// The final drain of a handover is done: send `Handover`, rejoin the new active.
    pub fn on_drained(&mut self, now: Instant) {
        if !matches!(self.state, State::HandingOver) {
            return;
        }
        self.epoch += 1;
        let keep = self.cfg.mode == Mode::Strict && !self.cfg.handover_hold.is_zero();
        if keep {
            // Before the role changes: the workers read it when they stop being active.
            self.status.set_retain_flows(true);
            self.fallback_until = Some(now + self.cfg.handover_hold);
        }
        self.transmit.push_back(Msg::Handover { epoch: self.epoch });
        self.actions.push_back(Action::Close { linger: self.dead_limit() });
        tracing::info!(
            node = self.cfg.node_id,
            event = "handover",
            epoch = self.epoch,
            keep_flows = keep,
            "handed over to the standby (epoch {}){}",
            self.epoch,
            if keep {
                format!("; keeping our flows until our rejoin is in sync (at most {:?})", self.cfg.handover_hold)
            } else {
                String::new()
            }
        );
        if keep {
            // Rejoin at once (the new active listens as soon as it took over).
            self.status.set_role(Role::Fenced);
            self.status.set_peer_state(PeerState::None);
            self.enter_standby(now);
        } else {
            self.fence(now);
        }
    }

    pub(super) fn active_tick(&mut self, now: Instant) {
        let fence = self.status.fence_epoch();
        if fence > self.epoch {
            tracing::warn!(
                node = self.cfg.node_id,
                event = "fenced",
                cause = "announcement",
                epoch = fence,
                our_epoch = self.epoch,
                "another engine announced our VIPs with epoch {fence} (ours {}): it took over; fenced",
                self.epoch
            );
            self.status.fenced_by_announcement.fetch_add(1, Relaxed);
            self.status.set_error(format!("fenced: another engine announced our VIPs with epoch {fence}"));
            return self.fence(now);
        }
        self.reap_pools(now);
        if self.replicating() {
            self.send_pools(false);
        }
        let (heartbeat, dead_limit) = (self.cfg.heartbeat, self.dead_limit());
        let State::Active { peer, last_probe, probing, since, .. } = &mut self.state else { return };
        let since = *since;
        // Alone, look for another active (a standby that took over while this engine was
        // starved or partitioned): the older one fences itself, so a split brain heals.
        if peer.is_none() && !*probing && now.saturating_duration_since(*last_probe) >= SPLIT_BRAIN_PROBE {
            *last_probe = now;
            *probing = true;
            self.actions.push_back(Action::Connect { role: Role::Active, probe: true });
        }
        if self.status.handover_requested.swap(false, Relaxed) {
            if peer.as_ref().is_some_and(|p| p.in_sync) {
                self.state = State::HandingOver;
                self.actions.push_back(Action::FinalDrain);
                return;
            }
            tracing::warn!(node = self.cfg.node_id, event = "handover_refused", reason = "no in-sync standby", "handover refused: no in-sync standby");
        }
        let State::Active { peer, .. } = &mut self.state else { return };
        if let Some(p) = peer {
            if now.saturating_duration_since(p.last_hb_tx) >= heartbeat {
                let (lag_records, lag_us) = p.lag(now);
                self.transmit.push_back(Msg::Heartbeat(Heartbeat {
                    epoch: self.epoch,
                    role: Role::Active as u8,
                    in_sync: p.in_sync,
                    token: p.token,
                    lag_records,
                    lag_us,
                    flows: 0,
                }));
                p.last_hb_tx = now;
            }
            let silent = silence(&self.status, heartbeat, now, p.last_rx, &mut p.missed);
            let (lag_records, lag_us) = p.lag(now);
            self.status.lag_records.store(lag_records, Relaxed);
            self.status.lag_us.store(lag_us, Relaxed);
            let young: usize = p.young.iter().map(VecDeque::len).sum();
            self.status.flows_at_risk.store(young as u64, Relaxed);
            if silent > dead_limit {
                self.lose_standby(now, &format!("no heartbeat for {silent:?}"));
            }
        } else if self.status.peer_state() == PeerState::Dead {
            self.status.set_peer_state(PeerState::None);
        }
        if let Some(until) = self.handover_hold_until {
            let in_sync = matches!(&self.state, State::Active { peer: Some(p), .. } if p.in_sync);
            if in_sync || now >= until {
                self.handover_hold_until = None;
                let after = now.saturating_duration_since(since);
                tracing::info!(
                    node = self.cfg.node_id,
                    event = "handover_hold_over",
                    in_sync,
                    after_ms = after.as_millis() as u64,
                    "{} {:?} after the handover: output released",
                    if in_sync {
                        "the engine that handed over is our in-sync standby"
                    } else {
                        "handover_hold over, that engine did not rejoin in sync:"
                    },
                    after
                );
            }
        }
    }

    /// Drop the standby: say so before closing, since a standby that merely stalled must read
    /// "dropped by a live active" (and rejoin), not "the active died" (and take over while
    /// this engine still serves: split brain).
    pub(super) fn lose_standby(&mut self, now: Instant, why: &str) {
        let State::Active { peer, hold_until, .. } = &mut self.state else { return };
        let Some(p) = peer.take() else { return };
        if self.cfg.mode == Mode::Strict && p.in_sync && !self.cfg.fence_hold.is_zero() {
            *hold_until = Some(now + self.cfg.fence_hold);
        }
        tracing::warn!(node = self.cfg.node_id, event = "peer_lost", reason = why, "standby lost: {why}");
        self.status.set_error(format!("standby lost: {why}"));
        self.status.set_peer_state(PeerState::Dead);
        self.transmit.push_back(Msg::Refused { reason: format!("dropped by the active: {why}") });
        self.actions.push_back(Action::Close { linger: LAST_WORD_LINGER });
    }

    /// How far the workers may release held output now (strict: what the standby acknowledged,
    /// from the moment it joins; async: everything unless the lag passed `async_max_lag`;
    /// without a standby everything, counted as unprotected), and the status that goes with it.
    ///
    /// Strict during the join too: output waits for the standby to acknowledge the changes it
    /// depends on (and so the part of the snapshot queued before them), which makes every flow
    /// the standby holds an image of as safe as after the join.
    pub fn release(&mut self, now: Instant) -> Release {
        let handover_hold = self.handover_hold_until.is_some();
        match &mut self.state {
            State::Fenced { .. } => Release::Nothing,
            State::Active { peer, hold_until, .. } => {
                // Held output stays held until the hold after a lost standby is over, and
                // everything stays held during a handover hold.
                let holding = (peer.is_none() && hold_until.is_some_and(|t| now < t)) || handover_hold;
                if holding {
                    return Release::Keep;
                }
                *hold_until = None;
                let peer = peer.as_ref();
                let protected = peer.is_some_and(|p| p.in_sync);
                let over_lag = peer.is_some_and(|p| {
                    self.cfg.mode == Mode::Async && p.lag(now).1 > self.cfg.async_max_lag.as_micros() as u64
                });
                if over_lag {
                    self.status.async_lag_holds.fetch_add(1, Relaxed);
                }
                let plan = match peer {
                    Some(p) if self.cfg.mode == Mode::Strict || (p.in_sync && over_lag) => Release::Acked,
                    _ => Release::All,
                };
                // Only now say "in sync": whoever reads it may rely on output being protected.
                if protected && self.status.peer_state() != PeerState::InSync {
                    self.status.set_peer_state(PeerState::InSync);
                }
                if !protected {
                    self.status
                        .unprotected_us
                        .fetch_add(now.saturating_duration_since(self.acct).as_micros() as u64, Relaxed);
                }
                self.status.unprotected.store(!protected, Relaxed);
                if peer.is_none() {
                    self.status.flows_at_risk.store(0, Relaxed);
                    self.status.lag_records.store(0, Relaxed);
                    self.status.lag_us.store(0, Relaxed);
                    self.status.heartbeats_missed.store(0, Relaxed);
                }
                self.acct = now;
                plan
            }
            _ => Release::Keep,
        }
    }
}
