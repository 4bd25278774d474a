//! The sync thread's loop ([`Driver`]): every session's reading, timers and actions, the
//! listener and dialing, the join snapshots, draining the worker rings into the sessions'
//! batches, publishing the release watermarks, and the idle wait.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use flowtwin_engine::commit::HOLD_ALL;
use flowtwin_engine::group::MAX_GROUPS;
use flowtwin_engine::stack::StackConfig;

use super::pacer::Pacer;
use super::slot::Slot;
use super::{SessionSpec, SyncConfig, TakeoverFn, LOG_TARGET, TOKEN_SHIFT};
use crate::conn::{Conn, HELLO_TIMEOUT};
use crate::delta::{self, MAX_DELTA_RECORDS};
use crate::proto::{Hello, Msg, Role, MAX_BATCH_RECORDS};
use crate::replicator::{WorkerLink, RELEASE_ALL};
use crate::ring::{Record, RECORD_WORDS};
use crate::session::{Action, DialError, Release, Session, SessionConfig};
use crate::status::SyncStatus;
use crate::wait::{Parking, Woken};

/// Longest wait of the standby's loop: bounds how late it notices a stop or takeover
/// request (the heartbeat interval usually bounds it sooner).
const STANDBY_WAIT_MAX: Duration = Duration::from_millis(5);

/// Frames read per pass before the loop turns to its timers and writes (bounded work between
/// heartbeats and acks).
const FRAMES_PER_PASS: usize = 256;

/// A group that no session replicates (never, once `start_sessions` checked the specs).
const NO_SLOT: u8 = u8::MAX;

/// The sync thread's state: the sessions, their I/O.
pub(super) struct Driver {
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
    /// The generation of `cfg.live` the sessions run.
    live_generation: u64,
}

impl Driver {
    /// The driver of the sessions `specs` (`statuses[i]` the status of session `i`), made
    /// on the sync thread once it started.
    pub(super) fn new(
        cfg: SyncConfig,
        stack_cfg: Arc<StackConfig>,
        links: Vec<WorkerLink>,
        specs: &[SessionSpec],
        statuses: Vec<Arc<SyncStatus>>,
        on_takeover: TakeoverFn,
        parking: Option<Arc<Parking>>,
    ) -> Driver {
        let now = Instant::now();
        let mut group_slot = [NO_SLOT; MAX_GROUPS];
        let slots: Vec<Slot> = specs
            .iter()
            .zip(statuses)
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
        Driver {
            parking,
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
            live_generation: 0,
        }
    }

    fn stopping(&self) -> bool {
        self.slots[0].status.stop.load(Relaxed)
    }

    fn handshake_failed(&self, addr: SocketAddr, e: &io::Error) {
        tracing::warn!(target: LOG_TARGET, node = self.cfg.node_id, event = "peer_handshake_failed", addr = %addr, error = %e, "standby {addr}: handshake failed: {e}");
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

    pub(super) fn run(&mut self) {
        let mut pacer = Pacer::new(self.cfg.busy_poll);
        while !self.stopping() {
            self.follow_config();
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

    /// A reload published a new configuration: every session runs it from now on.
    fn follow_config(&mut self) {
        let Some(live) = &self.cfg.live else { return };
        if live.generation() == self.live_generation {
            return;
        }
        let (cfg, g) = live.load();
        self.live_generation = g;
        for s in &mut self.slots {
            s.session.set_stack_config(cfg.clone());
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
                    target: LOG_TARGET,
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
                            target: LOG_TARGET,
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
                    s.begin_burst();
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
                                s.walk(&p, &self.peek[used..used + p.records]);
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
                                target: LOG_TARGET,
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
                    full |= s.send_burst(now, w);
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
