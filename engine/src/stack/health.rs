//! The stack side of the proxy's active health checks (`service::proxy::health`): worker 0
//! of the engine that owns a proxy service's group opens one check connection per backend
//! slot every `interval`, from the service's source address, through its own TCP stack, as
//! a *local* flow (`Flow::local`: never replicated).
//!
//! - **Start** (`run_checks`, from `Stack::poll` when a check is due): a slot that holds a
//!   backend (ready or draining; a removed one is not checked) gets
//!   [`Stack::connect_local`] to its address (or `health_port`), its service a check half
//!   ([`ProxyHalf::check`]) with a fresh token, which [`CheckHealth::begin`] makes the one in
//!   flight. A connect the engine refuses (no route, ports, table full, next hop down) is a
//!   failed check at once. A previous check flow still open then (a backend that answered
//!   but never closed) is reset.
//! - **Outcome** (`check_observe`, after every TCP call of a local flow): a TCP check
//!   succeeds on its handshake, an HTTP check on its status line (the half's
//!   [`Probe`](crate::service::proxy::Probe) verdict); a flow that closed first failed:
//!   never synchronized is a refused or unanswered connect, else closed before the status
//!   line. The first outcome of the token in flight counts ([`ProxySpec::check_done`]).
//! - **Timeout**: a check still in flight `timeout` after its start counts as a timeout and
//!   its flow is reset (an RST once synchronized; in SYN-SENT nothing is sent).
//!
//! Only the active runs checks; a worker that stops owning the group forgets its checks (its
//! flows were cleared with the group), and its slots' health stays what it was (and what
//! the pool table carries to the other engine).

use std::net::SocketAddrV4;
use std::sync::Arc;

use super::{FrameSink, Stack};
use crate::config::StackConfig;
use crate::flow::FlowId;
use crate::service::proxy::{Admin, CheckKind, CheckResult, ProxyHalf, ProxySpec};
use crate::service::{ServiceSpec, ServiceState};
use crate::tcp::State;
use crate::time::Instant;

/// One backend slot's checks on this worker.
#[derive(Debug)]
struct SlotCheck {
    listener: u16,
    slot: u16,
    /// When the next check starts.
    due: Instant,
    /// The check in flight: its token (0: none) and start.
    token: u64,
    started: Instant,
    /// Its flow (kept after the outcome until it ends or the next check starts).
    flow: Option<FlowId>,
}

/// A worker's active checks.
pub(super) struct Checker {
    /// Every slot of every proxy listener with checks on (empty: no checks configured).
    slots: Vec<SlotCheck>,
    /// The earliest start or timeout (`Instant` far away when there is nothing to run).
    pub(super) next: Instant,
    /// This worker runs them (worker 0).
    on: bool,
}

impl Checker {
    pub(super) fn new(cfg: &StackConfig, now: Instant) -> Checker {
        let mut slots = Vec::new();
        for (li, l) in cfg.listeners.iter().enumerate() {
            let ServiceSpec::Proxy(p) = &l.spec else { continue };
            if p.check.is_none() {
                continue;
            }
            for s in 0..p.backends.len() {
                slots.push(SlotCheck { listener: li as u16, slot: s as u16, due: now, token: 0, started: now, flow: None });
            }
        }
        let next = if slots.is_empty() { Instant(u64::MAX) } else { now };
        Checker { slots, next, on: true }
    }

    /// After a reload: forget the checks of retired listeners (a check flow in flight ends by
    /// itself), add those of new proxy listeners, due now. The others keep their schedule.
    pub(super) fn reconfigure(&mut self, cfg: &StackConfig, now: Instant) {
        self.slots.retain(|s| !cfg.is_retired(usize::from(s.listener)));
        for (li, l) in cfg.listeners.iter().enumerate() {
            let ServiceSpec::Proxy(p) = &l.spec else { continue };
            if p.check.is_none() || cfg.is_retired(li) || self.slots.iter().any(|s| usize::from(s.listener) == li) {
                continue;
            }
            for s in 0..p.backends.len() {
                self.slots.push(SlotCheck { listener: li as u16, slot: s as u16, due: now, token: 0, started: now, flow: None });
            }
        }
        self.next = if self.runs() { now } else { Instant(u64::MAX) };
    }

    /// Whether this worker has checks to run.
    pub(super) fn runs(&self) -> bool {
        self.on && !self.slots.is_empty()
    }
}

impl Stack {
    /// Run the checks of this worker (worker 0; see [`Stack::set_worker`]) or not (another
    /// worker: its checks would double worker 0's). On by default.
    pub fn set_health_checks(&mut self, on: bool) {
        self.checks.on = on;
        self.checks.next = if self.checks.runs() { self.now } else { Instant(u64::MAX) };
    }

    /// The proxy spec of listener `li`.
    fn proxy_of(&self, li: u16) -> Option<Arc<ProxySpec>> {
        match &self.cfg.listeners.get(usize::from(li))?.spec {
            ServiceSpec::Proxy(p) => Some(p.clone()),
            _ => None,
        }
    }

    /// Start the checks that are due, time out the ones past their timeout.
    pub(super) fn run_checks<F: FrameSink + ?Sized>(&mut self, now: Instant, tx: &mut F) {
        if !self.checks.runs() {
            self.checks.next = Instant(u64::MAX);
            return;
        }
        let mut next = Instant(u64::MAX);
        for k in 0..self.checks.slots.len() {
            let (li, slot) = (self.checks.slots[k].listener, usize::from(self.checks.slots[k].slot));
            let Some(spec) = self.proxy_of(li) else { continue };
            let Some(check) = spec.check.as_ref() else { continue };
            if !self.owns(spec.source) {
                // A standby: no checks; what was in flight went with the group's flows.
                let c = &mut self.checks.slots[k];
                (c.token, c.flow, c.due) = (0, None, now);
                next = next.min(now + check.interval);
                continue;
            }
            let c = &self.checks.slots[k];
            let (token, started, flow, due) = (c.token, c.started, c.flow, c.due);
            let Some(b) = spec.backends.get(slot) else { continue };
            if token != 0 && now >= started + check.timeout {
                if b.check.pending(token) {
                    let took = now.saturating_since(started).micros();
                    spec.check_done(slot, token, CheckResult::Timeout, took, 0);
                    if let Some(id) = flow {
                        self.abort_check(now, id, tx);
                    }
                }
                self.checks.slots[k].token = 0;
            }
            if now >= due {
                if let Some(id) = flow {
                    // Answered but still open (the backend did not close): reset it now.
                    if self.flows.get(id).is_some_and(|f| f.local && f.tcb.state() != State::TimeWait) {
                        self.abort_check(now, id, tx);
                    }
                }
                let c = &mut self.checks.slots[k];
                (c.token, c.flow) = (0, None);
                // From its last start, unless this worker fell behind (then from now).
                let from = if due + check.interval > now { due } else { now };
                c.due = from + check.interval;
                if matches!(b.admin(), Admin::Ready | Admin::Draining) {
                    let addr = b.addr();
                    let to = SocketAddrV4::new(*addr.ip(), check.port.unwrap_or(addr.port()));
                    self.start_check(now, &spec, li, slot, to, k, tx);
                }
            }
            let c = &self.checks.slots[k];
            next = next.min(c.due);
            if c.token != 0 {
                next = next.min(c.started + check.timeout);
            }
        }
        self.checks.next = next;
    }

    /// Open check `k`'s connection to `to`.
    #[allow(clippy::too_many_arguments)]
    fn start_check<F: FrameSink + ?Sized>(&mut self, now: Instant, spec: &ProxySpec, li: u16, slot: usize, to: SocketAddrV4, k: usize, tx: &mut F) {
        let Some(b) = spec.backends.get(slot) else { return };
        let token = now.micros().max(1);
        b.check.begin(token);
        let half = ProxyHalf::check(slot, token, now);
        match self.connect_local(now, spec.source, to, li, ServiceState::Proxy(half), tx) {
            Ok(id) => {
                let c = &mut self.checks.slots[k];
                (c.token, c.started, c.flow) = (token, now, Some(id));
            }
            Err(_) => {
                spec.check_done(slot, token, CheckResult::ConnectError, 0, 0);
            }
        }
        // The SYN (or ARP request) is this check's own output.
        tx.seal(self.commit_tag(), now);
    }

    /// Reset check flow `id` (its RST once synchronized) and close it.
    fn abort_check<F: FrameSink + ?Sized>(&mut self, now: Instant, id: FlowId, tx: &mut F) {
        if !self.flows.get(id).is_some_and(|f| f.local) {
            return;
        }
        if self.reset_and_close(now, id, tx).is_some_and(|frames| frames > 0) {
            tx.seal(self.commit_tag(), now);
        }
    }

    /// After a TCP call of local flow `id`: the outcome of its check, if it has one now.
    pub(super) fn check_observe(&mut self, id: FlowId) {
        let Some(f) = self.flows.get(id) else { return };
        let ServiceState::Proxy(h) = &f.svc else { return };
        let crate::service::proxy::Side::Check(slot) = h.side else { return };
        let Some(spec) = self.proxy_of(f.listener) else { return };
        let Some(check) = spec.check.as_ref() else { return };
        let token = h.probe.token;
        if !spec.backends.get(usize::from(slot)).is_some_and(|b| b.check.pending(token)) {
            return; // counted already (or a slot refilled since)
        }
        let (result, status) = match (check.kind, h.probe.verdict) {
            (CheckKind::Http, Some(v)) => v,
            (CheckKind::Tcp, _) if f.tcb.syn_acked() => (CheckResult::Ok, 0),
            _ if !f.tcb.is_closed() => return,
            _ if !f.tcb.syn_acked() => (CheckResult::Refused, 0),
            _ => (CheckResult::Closed, 0),
        };
        let took = h.started().map_or(0, |t| self.now.saturating_since(t).micros());
        spec.check_done(usize::from(slot), token, result, took, status);
    }
}
