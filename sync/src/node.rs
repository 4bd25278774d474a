//! The sync thread: the driver of a [`Session`] (the sans-IO replication protocol, which
//! decides every role change, message and hold). The driver owns what the session must not:
//! the clock, the listener and the connection to the peer ([`Conn`]), the worker rings
//! (drained into batches for the standby), the workers' release watermarks (published from
//! [`Session::release`]), the engine's takeover callback, and the waiting. One plain std
//! thread per engine (not an lcore).
//!
//! Sockets are non-blocking, so a write blocked by a slow peer keeps reading (acks and
//! heartbeats cannot deadlock against our own batches). When a pass did nothing the loop
//! waits: with a [`Waiter`] (`SyncConfig::waiter`) it blocks until the peer's socket is
//! readable, a worker rings the doorbell (active side, see [`crate::wait`]), or the next
//! timer is due (heartbeat, dead-peer deadline, at most `park_max`); without one it sleeps
//! ~50–100 µs and looks again.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use flowtwin_engine::commit::HOLD_ALL;
use flowtwin_engine::stack::StackConfig;

use crate::coalesce::Coalescer;
use crate::conn::{Conn, HELLO_TIMEOUT};
use crate::delta::{self, MAX_DELTA_RECORDS};
use crate::proto::{self, Hello, Msg, Role, MAX_BATCH_RECORDS};
use crate::replicator::{WorkerLink, RELEASE_ALL};
use crate::ring::{Record, RECORD_BYTES, RECORD_WORDS};
use crate::session::{self, Action, DialError, Incoming, Release, Session, SessionConfig};
use crate::status::SyncStatus;
use crate::wait::{Parking, Waiter, Woken};

pub use crate::session::{Mode, Takeover, TakeoverReason};

/// Replication configuration of one engine.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    pub node_id: u32,
    /// Where an active engine listens for its standby.
    pub listen: SocketAddr,
    /// The other engine's `listen` address.
    pub peer: SocketAddr,
    /// Initial preference: `Active` or `Standby` (`Fenced` is refused).
    pub role: Role,
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
    status: Arc<SyncStatus>,
    /// To end the thread's wait at once when stopping.
    parking: Option<Arc<Parking>>,
}

impl SyncHandle {
    /// Stop the thread and wait for it (closes the sync stream: a standby takes over).
    pub fn stop(mut self) {
        self.shutdown();
    }
    fn shutdown(&mut self) {
        self.status.stop.store(true, Relaxed);
        if let Some(p) = &self.parking {
            p.wake();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
    pub fn status(&self) -> &Arc<SyncStatus> {
        &self.status
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

/// Starts the sync thread. `links` are the workers' [`WorkerLink`]s, index = worker.
pub fn start(
    cfg: SyncConfig,
    stack_cfg: Arc<StackConfig>,
    links: Vec<WorkerLink>,
    status: Arc<SyncStatus>,
    on_takeover: TakeoverFn,
) -> io::Result<SyncHandle> {
    if cfg.role == Role::Fenced {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "initial role must be active or standby",
        ));
    }
    if cfg.heartbeat.is_zero() || cfg.dead_after == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "heartbeat and dead_after must be non-zero",
        ));
    }
    if links
        .iter()
        .enumerate()
        .any(|(i, l)| usize::from(l.worker) != i)
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "links must be ordered by worker index",
        ));
    }
    for l in &links {
        l.shared.set_watermark(RELEASE_ALL);
    }
    let parking = cfg.waiter.clone().map(|w| Arc::new(Parking::new(w)));
    if let Some(p) = &parking {
        for l in &links {
            l.shared.set_parking(p.clone());
        }
    }
    let st = status.clone();
    let pk = parking.clone();
    let thread = thread::Builder::new()
        .name("flowtwin-sync".into())
        .spawn(move || {
            if let Some(p) = &pk {
                p.waiter.on_sync_thread();
            }
            let now = Instant::now();
            let session = Session::new(
                SessionConfig {
                    node_id: cfg.node_id,
                    role: cfg.role,
                    mode: cfg.mode,
                    heartbeat: cfg.heartbeat,
                    dead_after: cfg.dead_after,
                    async_max_lag: cfg.async_max_lag,
                    fence_hold: cfg.fence_hold,
                    handover_hold: cfg.handover_hold,
                    workers: links.len(),
                },
                stack_cfg,
                st.clone(),
                now,
            );
            let mut d = Driver {
                parking: pk,
                cfg,
                links,
                status: st,
                on_takeover,
                session,
                listener: None,
                bind_retry_at: now,
                conn: None,
                peek: vec![[0; RECORD_WORDS]; MAX_BATCH_RECORDS],
                batch: Vec::with_capacity(MAX_BATCH_RECORDS),
                new_flows: Vec::new(),
                recs: Vec::new(),
                coalescer: Coalescer::default(),
            };
            d.run();
        })?;
    Ok(SyncHandle {
        thread: Some(thread),
        status,
        parking,
    })
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

/// The sync thread's state: one session, its I/O.
struct Driver {
    /// Present with a [`SyncConfig::waiter`].
    parking: Option<Arc<Parking>>,
    cfg: SyncConfig,
    links: Vec<WorkerLink>,
    status: Arc<SyncStatus>,
    on_takeover: TakeoverFn,
    session: Session,
    /// While active.
    listener: Option<TcpListener>,
    bind_retry_at: Instant,
    /// The connection to the peer (a standby's, the active's, or a dial in progress).
    conn: Option<Conn>,
    peek: Vec<Record>,
    /// The batch being built from `peek` (coalesced).
    batch: Vec<Record>,
    /// Flow creations in the batch being built (their sequence numbers).
    new_flows: Vec<u64>,
    /// Records of the last batch read.
    recs: Vec<Record>,
    coalescer: Coalescer,
}

impl Driver {
    fn stopping(&self) -> bool {
        self.status.stop.load(Relaxed)
    }

    fn log(&self, msg: &str) {
        session::log(self.cfg.node_id, msg);
    }

    fn run(&mut self) {
        let mut pacer = Pacer::new(self.cfg.busy_poll);
        while !self.stopping() {
            let mut busy = self.outputs();
            let (got, frames, batches) = self.read(Some(FRAMES_PER_PASS));
            busy |= got || frames > 0;
            self.session.tick(Instant::now());
            busy |= self.outputs();
            busy |= self.accept();
            let drained = self.drain_rings(self.session.replicating());
            busy |= drained;
            // A peer that stops reading for longer than it may stay silent is dead.
            let limit = self.session.dead_limit().max(Duration::from_millis(50));
            if let Some(c) = self.conn.as_mut() {
                busy |= !c.wbuf.is_empty();
                if let Err(e) = c.flush(limit) {
                    self.session.on_closed(Instant::now(), &e.to_string());
                    busy |= self.outputs();
                }
            }
            self.publish();
            let hot = drained || batches > 0 || self.session.awaiting_ack();
            if pacer.pass(hot, busy) {
                self.idle(&pacer);
            }
        }
        for l in &self.links {
            l.shared.set_watermark(RELEASE_ALL);
        }
    }

    /// Delivers what the connection has: at most `limit` frames (all with `None`), then the
    /// end of the stream once every complete frame was delivered. Returns (bytes arrived,
    /// frames, batches).
    fn read(&mut self, limit: Option<usize>) -> (bool, usize, usize) {
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
            let m = match c.next(&mut self.recs) {
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
            self.log(&format!("bad frame from the peer: {e}"));
            self.status.decode_errors.fetch_add(1, Relaxed);
            self.session.on_closed(Instant::now(), &e.to_string());
        } else if ended {
            self.session.on_closed(Instant::now(), "connection closed");
        }
        (got, frames, batches)
    }

    /// Carries out what the session asked for: its messages into the connection's write
    /// buffer, then its actions in order (each one's own messages before the next action).
    /// Returns whether there was anything.
    fn outputs(&mut self) -> bool {
        let mut any = self.queue_transmit();
        while let Some(a) = self.session.poll_action() {
            any = true;
            match a {
                Action::Connect { role, probe } => self.dial(role, probe),
                Action::Listen => {
                    self.bind_retry_at = Instant::now();
                    self.listen();
                }
                Action::Close { linger } => self.close(linger),
                Action::RequestSnapshot { token, pace, hold } => {
                    // Release/Acquire order both marks before the request.
                    for l in &self.links {
                        if hold {
                            l.shared.set_watermark(0);
                        }
                        if pace {
                            l.shared.set_standby_acked(0);
                        }
                        l.shared.request_snapshot(token);
                    }
                }
                Action::FinalDrain => {
                    // Hold all output from now on: the standby speaks for the VIPs after this.
                    for l in &self.links {
                        l.shared.set_watermark(HOLD_ALL);
                    }
                    self.drain_rings(true);
                    self.session.on_drained(Instant::now());
                }
                Action::ReadRest => {
                    self.read(None);
                    self.session.on_rest_read(Instant::now());
                }
                Action::TakeOver { takeover, detect, started, hold_all } => {
                    if hold_all {
                        for l in &self.links {
                            l.shared.set_watermark(HOLD_ALL);
                        }
                    }
                    (self.on_takeover)(takeover);
                    // After the callback: the engine's workers have the takeover (and keep
                    // what they kept) before they may see the flag cleared.
                    self.status.set_retain_flows(false);
                    self.status.mark_takeover(detect, started.elapsed());
                }
            }
            self.queue_transmit();
        }
        if self.status.role() != Role::Active {
            // Only an active engine listens: a fenced one must not answer a prober.
            self.listener = None;
        }
        any
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

    /// Opens the active's listener (retried every 100 ms while the address is taken; the
    /// session serves unprotected meanwhile: no standby, everything released).
    fn listen(&mut self) {
        if self.listener.is_some() || self.status.role() != Role::Active || Instant::now() < self.bind_retry_at {
            return;
        }
        match TcpListener::bind(self.cfg.listen).and_then(|l| l.set_nonblocking(true).map(|()| l)) {
            Ok(l) => {
                self.listener = Some(l);
                self.log(&format!("active (epoch {}), listening on {}", self.session.epoch(), self.cfg.listen));
            }
            Err(e) => {
                self.status.set_error(format!("bind {}: {e}", self.cfg.listen));
                self.bind_retry_at = Instant::now() + Duration::from_millis(100);
            }
        }
    }

    /// Dials the peer and exchanges Hello as `role`; the session hears how it went.
    fn dial(&mut self, role: Role, probe: bool) {
        self.close(Duration::ZERO);
        // A probe runs on the active's sync thread, which must keep draining the rings.
        let (limit, hello_limit) = if probe {
            (Duration::from_millis(20), Duration::from_millis(50))
        } else {
            (Duration::from_millis(100), HELLO_TIMEOUT)
        };
        match self.handshake(role, limit, hello_limit) {
            Ok((c, h)) => {
                self.conn = Some(c);
                self.session.on_connected(Instant::now(), &h);
            }
            Err(e) => {
                let kind = match e.kind() {
                    io::ErrorKind::ConnectionRefused => DialError::Refused,
                    io::ErrorKind::InvalidData => DialError::Invalid,
                    _ => DialError::Other,
                };
                self.session.on_connect_failed(Instant::now(), kind);
            }
        }
    }

    /// Dials the peer and exchanges Hello as `role`, each step bounded by `limit` (the Hello
    /// reply by `hello_limit`). The peer's Hello is returned unchecked.
    fn handshake(&mut self, role: Role, limit: Duration, hello_limit: Duration) -> io::Result<(Conn, Hello)> {
        let s = TcpStream::connect_timeout(&self.cfg.peer, limit)?;
        let mut c = Conn::new(s)?;
        c.send_now(&Msg::Hello(self.session.hello(role)), limit)?;
        let status = self.status.clone();
        let h = c.recv_hello_within(&mut self.recs, &|| status.stop.load(Relaxed), hello_limit)?;
        Ok((c, h))
    }

    /// An active without a standby takes the next connection on its listener.
    fn accept(&mut self) -> bool {
        self.listen();
        if !self.session.wants_accept() || self.conn.is_some() {
            return false;
        }
        let Some(Ok((s, addr))) = self.listener.as_ref().map(TcpListener::accept) else { return false };
        let Ok(mut conn) = Conn::new(s) else { return true };
        let _ = conn.send_now(&Msg::Hello(self.session.hello(Role::Active)), HELLO_TIMEOUT);
        let status = self.status.clone();
        match conn.recv_hello(&mut self.recs, &|| status.stop.load(Relaxed)) {
            Ok(h) => {
                self.conn = Some(conn);
                self.session.on_accept(Instant::now(), &addr.to_string(), &h);
                self.outputs();
            }
            Err(e) => self.log(&format!("standby {addr}: handshake failed: {e}")),
        }
        true
    }

    /// Publishes the session's release plan to the workers' watermarks, and (active) what
    /// the standby acknowledged, which paces join snapshots, held output or not.
    fn publish(&mut self) {
        match self.session.release(Instant::now()) {
            Release::Keep => {}
            Release::All => self.links.iter().for_each(|l| l.shared.set_watermark(RELEASE_ALL)),
            Release::Nothing => self.links.iter().for_each(|l| l.shared.set_watermark(0)),
            Release::Acked => {
                for (w, l) in self.links.iter().enumerate() {
                    l.shared.set_watermark(self.session.acked(w));
                }
            }
        }
        if self.session.serving() {
            for (w, l) in self.links.iter().enumerate() {
                l.shared.set_standby_acked(self.session.pacing(w));
            }
        }
    }

    /// An idle pass's wait, until the session's next deadline at the most. With a waiter:
    /// block until the connection (or the listener) is readable, the doorbell rings, or the
    /// timeout; an active parks (workers ring when they publish deltas) after re-checking
    /// that every ring is empty. Without: sleep a little.
    fn idle(&mut self, pacer: &Pacer) {
        let now = Instant::now();
        let active = self.session.serving();
        // An active never blocks past park_max, so no delta depends on the doorbell alone; a
        // standby looks at stop and takeover requests at least every STANDBY_WAIT_MAX.
        let cap = if active { self.cfg.park_max } else { STANDBY_WAIT_MAX };
        let timeout = self.session.next_deadline().map_or(cap, |d| cap.min(d.saturating_duration_since(now)));
        let fd: Option<RawFd> = match (&self.conn, &self.listener) {
            (Some(c), _) => Some(c.s.as_raw_fd()),
            (None, Some(l)) if active => Some(l.as_raw_fd()),
            _ => None,
        };
        let Some(p) = self.parking.clone() else {
            // Nothing can arrive without a connection or listener: sleep to the deadline.
            let t = if fd.is_none() { timeout } else { pacer.sleep_time().min(timeout.max(Duration::from_micros(1))) };
            thread::sleep(t);
            return;
        };
        if timeout.is_zero() {
            return;
        }
        let fds: &[RawFd] = match &fd {
            Some(fd) => std::slice::from_ref(fd),
            None => &[],
        };
        let woken = if active {
            let links = &mut self.links;
            p.park(|| links.iter_mut().any(|l| !l.consumer.is_empty()), fds, timeout)
        } else {
            Some(p.wait(fds, timeout))
        };
        if let Some(Woken { rung, .. }) = woken {
            self.status.waits.fetch_add(1, Relaxed);
            if rung {
                self.status.doorbell_wakes.fetch_add(1, Relaxed);
            }
        }
    }

    /// Moves whole deltas from every ring into batches for the standby (`to_peer`), or drops
    /// them (no standby: the workers do not wait for one). Returns whether anything was
    /// drained.
    fn drain_rings(&mut self, to_peer: bool) -> bool {
        let mut any = false;
        let now = Instant::now();
        let mut peer = if to_peer { self.conn.as_mut() } else { None };
        for w in 0..self.links.len() {
            // Bounded passes per call so heartbeats and acks keep flowing under load.
            for _ in 0..16 {
                let got = self.links[w].consumer.peek_burst(&mut self.peek);
                if got == 0 {
                    break;
                }
                // Walk whole deltas (a delta is never split across batches), coalescing them
                // into the batch for the standby as they are walked.
                let (mut used, mut first, mut last, mut deltas) = (0usize, 0u64, 0u64, 0u64);
                let mut dropped = 0u64;
                if peer.is_some() {
                    self.coalescer.begin(&mut self.batch);
                    self.new_flows.clear();
                }
                while used < got {
                    match delta::peek_header(&self.peek[used..got]) {
                        Ok(p) => {
                            if peer.is_some() {
                                let d = &self.peek[used..used + p.records];
                                dropped += u64::from(self.coalescer.push(&p, d, &mut self.batch));
                                if p.kind == delta::DeltaKind::FlowNew {
                                    self.new_flows.push(p.header.seq);
                                }
                            }
                            if first == 0 {
                                first = p.header.seq;
                            }
                            last = p.header.seq;
                            used += p.records;
                            deltas += 1;
                        }
                        Err(delta::DeltaError::Truncated { .. }) => break,
                        Err(e) => {
                            // Cannot happen with our producer; skip one record, count it.
                            self.status.decode_errors.fetch_add(1, Relaxed);
                            session::log(self.cfg.node_id, &format!("worker {w}: bad delta on ring: {e}"));
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
                if let Some(c) = peer.as_deref_mut() {
                    if last != 0 {
                        let n = self.batch.len();
                        proto::encode_batch(&mut c.wbuf, w as u16, first, last, &self.batch);
                        self.session.on_batch_sent(now, w, last, n as u32, &self.new_flows);
                        self.status.batches_sent.fetch_add(1, Relaxed);
                        self.status.deltas_sent.fetch_add(deltas - dropped, Relaxed);
                        self.status.deltas_coalesced.fetch_add(dropped, Relaxed);
                        self.status.bytes_replicated.fetch_add((n * RECORD_BYTES) as u64, Relaxed);
                    }
                }
                self.links[w].consumer.advance(used);
                any = true;
                if peer.as_ref().is_some_and(|c| c.wbuf.len() >= 512 * 1024) {
                    break;
                }
            }
        }
        any
    }
}

// Keep the biggest delta within one peek buffer.
const _: () = assert!(MAX_BATCH_RECORDS >= MAX_DELTA_RECORDS);
