//! The sync thread: the active side (drain worker rings → batches → standby; acks →
//! release watermarks), the standby side (batches → shadow flow tables → acks), heartbeats,
//! death detection and takeover. One plain std thread per engine (not an lcore); it
//! switches role in place (standby → active after a takeover, active → standby after a
//! handover).
//!
//! Sockets are non-blocking, so a write blocked by a slow peer keeps reading (acks and
//! heartbeats cannot deadlock against our own batches). When a pass did nothing the loop
//! waits: with a [`Waiter`] (`SyncConfig::waiter`) it blocks until the peer's socket is
//! readable, a worker rings the doorbell (active side, see [`crate::wait`]), or the next
//! timer is due (heartbeat, dead-peer deadline, at most `park_max`); without one it sleeps
//! ~50–100 µs and looks again.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use flowtwin_engine::commit::HOLD_ALL;
use flowtwin_engine::replica::ShadowFlow;
use flowtwin_engine::stack::StackConfig;

use crate::coalesce::Coalescer;
use crate::delta::{self, MAX_DELTA_RECORDS};
use crate::proto::{self, Heartbeat, Hello, Msg, Role, MAGIC, MAX_BATCH_RECORDS, PROTO_VERSION};
use crate::shadow::Replicas;
use crate::replicator::{WorkerLink, RELEASE_ALL};
use crate::ring::{Record, RECORD_BYTES, RECORD_WORDS};
use crate::status::{PeerState, SyncStatus};
use crate::wait::{Parking, Waiter, Woken};

/// Output commit mode (DESIGN §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Output waits for the standby's acknowledgement (default).
    Strict,
    /// Output never waits; replication lag is bounded and reported.
    Async,
}

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
}

impl std::fmt::Debug for Takeover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Takeover")
            .field("epoch", &self.epoch)
            .field(
                "flows",
                &self.flows.iter().map(Vec::len).collect::<Vec<_>>(),
            )
            .field("reason", &self.reason)
            .field("in_sync", &self.in_sync)
            .field("retained", &self.retained)
            .finish()
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
    status.set_role(Role::Standby);
    status.set_peer_state(PeerState::None);
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
            let mut ctx = Ctx {
                parking: pk,
                cfg,
                stack_cfg,
                links,
                status: st,
                on_takeover,
                epoch: 0,
                token: 0,
                peek: vec![[0; RECORD_WORDS]; MAX_BATCH_RECORDS],
                batch: Vec::with_capacity(MAX_BATCH_RECORDS),
                coalescer: Coalescer::default(),
                handover_hold_until: None,
                fallback_until: None,
            };
            ctx.run();
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
/// A wait for the dead-peer deadline ends this much after it, so that the pass that follows
/// sees the silence strictly longer than the limit.
const DEADLINE_SLOP: Duration = Duration::from_micros(50);
/// Paces a sync loop: poll while replication is hot (only with a
/// [`SyncConfig::busy_poll`] window), wait once it is quiet (the caller's [`Ctx::idle`]:
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
/// Time allowed for the Hello exchange.
const HELLO_TIMEOUT: Duration = Duration::from_millis(500);
/// Startup probe of the peer before becoming active (plus a node-id tie-break).
const PROBE_WINDOW: Duration = Duration::from_millis(300);

/// A message with its batch records moved out of the receive buffer.
enum In {
    Hello(Hello),
    Batch { worker: u16, first: u64, last: u64 },
    Ack { worker: u16, seq: u64 },
    Heartbeat(Heartbeat),
    Snapshot { token: u64 },
    Handover { epoch: u64 },
    Takeover { epoch: u64 },
    Refused(String),
}

/// Receive buffer of a sync connection: always a whole frame (zeroed lazily by the OS: only
/// what reads reach is ever touched).
const RBUF_BYTES: usize = if 4 + proto::MAX_FRAME > 256 * 1024 { 4 + proto::MAX_FRAME } else { 256 * 1024 };

/// Parsed bytes at the front of the receive buffer that trigger moving the rest down.
const RBUF_COMPACT_AT: usize = 128 * 1024;

/// A non-blocking framed stream.
struct Conn {
    s: TcpStream,
    /// The socket reads straight into this buffer (one copy from the kernel, none more);
    /// `[start, end)` is received and not yet parsed. Big enough for any frame.
    rbuf: Box<[u8]>,
    start: usize,
    end: usize,
    wbuf: Vec<u8>,
    /// Last time anything was received.
    last_rx: Instant,
    eof: bool,
}

fn is_would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

impl Conn {
    fn new(s: TcpStream) -> io::Result<Conn> {
        s.set_nodelay(true)?;
        s.set_nonblocking(true)?;
        Ok(Conn {
            s,
            rbuf: vec![0; RBUF_BYTES].into_boxed_slice(),
            start: 0,
            end: 0,
            wbuf: Vec::with_capacity(256 * 1024),
            last_rx: Instant::now(),
            eof: false,
        })
    }

    /// Reads what the socket has. Ok(bytes read); Err on reset; EOF sets `eof`.
    fn fill(&mut self) -> io::Result<usize> {
        let mut total = 0;
        loop {
            if self.end == self.rbuf.len() && self.start == 0 {
                // Full of unparsed frames: parse before reading more.
                return Ok(total);
            }
            if self.start >= RBUF_COMPACT_AT || self.end == self.rbuf.len() {
                // Move the unparsed tail (part of one frame, usually) to the front, so
                // reads stay in the first few hundred KB (cache-warm).
                self.rbuf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            match self.s.read(&mut self.rbuf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(total);
                }
                Ok(n) => {
                    self.end += n;
                    total += n;
                    self.last_rx = Instant::now();
                    if total >= 1 << 20 {
                        return Ok(total);
                    }
                }
                Err(e) if is_would_block(&e) => return Ok(total),
                // A reset right behind data is the end of the stream, not a reason to discard
                // that data: a peer that sends a last frame (Refused, Takeover, a Hello reply)
                // and closes with our bytes unread makes the kernel answer with RST. Report
                // what arrived; the error ends the stream (eof) once those frames are parsed.
                Err(e) if total > 0 => {
                    let _ = e;
                    self.eof = true;
                    return Ok(total);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The next complete message; batch records go to `recs`.
    fn next(&mut self, recs: &mut Vec<Record>) -> Result<Option<In>, proto::ProtoError> {
        let Some((m, used)) = proto::decode(&self.rbuf[self.start..self.end])? else {
            return Ok(None);
        };
        let msg = match m {
            Msg::Hello(h) => In::Hello(h),
            Msg::Batch {
                worker,
                first_seq,
                last_seq,
                records,
            } => {
                proto::batch_records(records, recs);
                In::Batch {
                    worker,
                    first: first_seq,
                    last: last_seq,
                }
            }
            Msg::Ack { worker, seq } => In::Ack { worker, seq },
            Msg::Heartbeat(h) => In::Heartbeat(h),
            Msg::Snapshot { token } => In::Snapshot { token },
            Msg::Handover { epoch } => In::Handover { epoch },
            Msg::Takeover { epoch } => In::Takeover { epoch },
            Msg::Refused { reason } => In::Refused(reason),
        };
        self.start += used;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        Ok(Some(msg))
    }

    fn queue(&mut self, m: &Msg<'_>) {
        proto::encode(m, &mut self.wbuf);
    }

    /// Writes all of `wbuf` (one `write` for a whole batch in the common case). While the
    /// socket is full it keeps reading so the peer's acks never deadlock against us; gives
    /// up after `limit` (the peer is not reading: treat as dead).
    fn flush(&mut self, limit: Duration) -> io::Result<()> {
        let mut off = 0;
        let mut since: Option<Instant> = None;
        while off < self.wbuf.len() {
            match self.s.write(&self.wbuf[off..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    off += n;
                    since = None;
                }
                Err(e) if is_would_block(&e) => {
                    let t0 = *since.get_or_insert_with(Instant::now);
                    if t0.elapsed() > limit {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "peer stopped reading",
                        ));
                    }
                    self.fill()?;
                    thread::sleep(Duration::from_micros(20));
                }
                Err(e) => return Err(e),
            }
        }
        self.wbuf.clear();
        Ok(())
    }

    fn send_now(&mut self, m: &Msg<'_>, limit: Duration) -> io::Result<()> {
        self.queue(m);
        self.flush(limit)
    }

    /// Waits for the peer's Hello (the first frame).
    fn recv_hello(&mut self, recs: &mut Vec<Record>, stop: &dyn Fn() -> bool) -> io::Result<Hello> {
        self.recv_hello_within(recs, stop, HELLO_TIMEOUT)
    }

    fn recv_hello_within(
        &mut self,
        recs: &mut Vec<Record>,
        stop: &dyn Fn() -> bool,
        limit: Duration,
    ) -> io::Result<Hello> {
        let deadline = Instant::now() + limit;
        loop {
            match self.next(recs) {
                Ok(Some(In::Hello(h))) => return Ok(h),
                Ok(Some(In::Refused(r))) => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionRefused,
                        format!("peer refused: {r}"),
                    ))
                }
                Ok(Some(_)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "first frame is not Hello",
                    ))
                }
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            }
            if self.eof {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            if Instant::now() > deadline || stop() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no Hello from peer",
                ));
            }
            if self.fill()? == 0 {
                thread::sleep(IDLE_SLEEP);
            }
        }
    }
}

// ---- the thread ---------------------------------------------------------------------

struct Ctx {
    /// Present with a [`SyncConfig::waiter`].
    parking: Option<Arc<Parking>>,
    cfg: SyncConfig,
    stack_cfg: Arc<StackConfig>,
    links: Vec<WorkerLink>,
    status: Arc<SyncStatus>,
    on_takeover: TakeoverFn,
    epoch: u64,
    /// Last join-snapshot token issued (tokens only grow, across sessions and roles).
    token: u64,
    peek: Vec<Record>,
    /// The batch being built from `peek` (coalesced).
    batch: Vec<Record>,
    coalescer: Coalescer,
    /// After a `Handover` takeover: hold all output until the old active is our in-sync
    /// standby, at most until then (consumed by `active`).
    handover_hold_until: Option<Instant>,
    /// After handing over: until when the flows our workers kept may be resumed (the new
    /// active's hold outlasts this: it began later).
    fallback_until: Option<Instant>,
}

/// After a handover, how long the new active may take to listen before a refused rejoin
/// means that it is gone.
const HANDOVER_LISTEN_GRACE: Duration = Duration::from_millis(100);

/// What to do after leaving a role's loop.
enum Next {
    Active,
    /// Standby, possibly on an already-handshaken connection to the active.
    Standby(Option<(Conn, Hello)>),
    Exit,
}

impl Ctx {
    fn stopping(&self) -> bool {
        self.status.stop.load(Relaxed)
    }

    fn hello(&self, role: Role) -> Hello {
        Hello {
            magic: MAGIC,
            version: PROTO_VERSION,
            node_id: self.cfg.node_id,
            epoch: self.epoch,
            role,
            mode: (self.cfg.mode == Mode::Async) as u8,
            workers: self.links.len() as u16,
            heartbeat_us: self.cfg.heartbeat.as_micros().min(u32::MAX as u128) as u32,
        }
    }

    fn dead_limit(&self) -> Duration {
        self.cfg.heartbeat * self.cfg.dead_after
    }

    fn log(&self, msg: &str) {
        eprintln!("flowtwin-sync[node {}]: {msg}", self.cfg.node_id);
    }

    /// When a loop talking to a peer has something due: our next heartbeat (last sent at
    /// `last_hb_tx`), or the peer's dead-peer deadline (last heard at `last_rx`), just past
    /// it so that the pass that follows sees the silence as over the limit.
    fn peer_due(&self, last_hb_tx: Instant, last_rx: Instant) -> Instant {
        (last_hb_tx + self.cfg.heartbeat).min(last_rx + self.dead_limit() + DEADLINE_SLOP)
    }

    /// An idle pass's wait. With a waiter: block until one of `fds` is readable, the
    /// doorbell rings, or `timeout`; `watch_rings` parks (workers ring when they publish
    /// deltas) after re-checking that every ring is empty. Without: sleep a little.
    fn idle(&mut self, pacer: &Pacer, fds: &[RawFd], timeout: Duration, watch_rings: bool) {
        let Some(p) = self.parking.clone() else {
            thread::sleep(pacer.sleep_time());
            return;
        };
        if timeout.is_zero() {
            return;
        }
        let woken = if watch_rings {
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

    fn refuse(&self, conn: &mut Conn, reason: &str) {
        self.log(reason);
        self.status.set_error(reason);
        self.status.refused.fetch_add(1, Relaxed);
        let _ = conn.send_now(
            &Msg::Refused {
                reason: reason.to_owned(),
            },
            HELLO_TIMEOUT,
        );
        let _ = conn.s.shutdown(std::net::Shutdown::Both);
    }

    fn run(&mut self) {
        let mut next = match self.cfg.role {
            Role::Active => self.probe(),
            _ => Next::Standby(None),
        };
        loop {
            next = match next {
                Next::Active => self.active(),
                Next::Standby(c) => self.standby(c),
                Next::Exit => break,
            };
        }
        for l in &self.links {
            l.shared.set_watermark(RELEASE_ALL);
        }
    }

    /// Dials the peer and exchanges Hello as `role`, each step bounded by `limit` (the Hello
    /// reply by `hello_limit`). The peer's Hello is returned unchecked.
    fn handshake(
        &mut self,
        role: Role,
        limit: Duration,
        hello_limit: Duration,
        recs: &mut Vec<Record>,
    ) -> io::Result<(Conn, Hello)> {
        let s = TcpStream::connect_timeout(&self.cfg.peer, limit)?;
        let mut c = Conn::new(s)?;
        c.send_now(&Msg::Hello(self.hello(role)), limit)?;
        let status = self.status.clone();
        let h = c.recv_hello_within(recs, &|| status.stop.load(Relaxed), hello_limit)?;
        Ok((c, h))
    }

    /// Connects to the peer and exchanges Hello as a would-be standby.
    fn connect(&mut self, recs: &mut Vec<Record>) -> io::Result<(Conn, Hello)> {
        let (mut c, h) = self.handshake(Role::Standby, Duration::from_millis(100), HELLO_TIMEOUT, recs)?;
        if let Err(e) = h.check() {
            self.refuse(&mut c, &e);
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        Ok((c, h))
    }

    /// Startup rule for an Active preference: reach the peer for ~300 ms; an active peer
    /// (e.g. one that took over while we were down) makes us its standby (no pre-emption).
    /// The window grows with `node_id % 8` so two engines starting together do not both
    /// become active.
    fn probe(&mut self) -> Next {
        let window = PROBE_WINDOW + Duration::from_millis(50 * u64::from(self.cfg.node_id % 8));
        let deadline = Instant::now() + window;
        let mut recs = Vec::new();
        while Instant::now() < deadline && !self.stopping() {
            match self.connect(&mut recs) {
                Ok((c, h)) if h.role == Role::Active => return Next::Standby(Some((c, h))),
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::InvalidData => break,
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        }
        if self.stopping() {
            Next::Exit
        } else {
            Next::Active
        }
    }

    // ---- active -------------------------------------------------------------------------

    fn active(&mut self) -> Next {
        self.epoch = self.epoch.max(1);
        self.status.epoch.store(self.epoch, Relaxed);
        self.status.set_role(Role::Active);
        self.status.set_peer_state(PeerState::None);
        let listener = loop {
            match TcpListener::bind(self.cfg.listen)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
            {
                Ok(l) => break l,
                Err(e) => {
                    self.status
                        .set_error(format!("bind {}: {e}", self.cfg.listen));
                    if self.stopping() {
                        return Next::Exit;
                    }
                    // Serve unprotected meanwhile: output must not stop without a standby.
                    self.drain_rings(None);
                    self.publish_watermarks(None, &mut Instant::now());
                    thread::sleep(Duration::from_millis(100));
                }
            }
        };
        self.log(&format!(
            "active (epoch {}), listening on {}",
            self.epoch, self.cfg.listen
        ));
        let mut peer: Option<Standby> = None;
        let mut acct = Instant::now();
        let mut recs = Vec::new();
        let mut pacer = Pacer::new(self.cfg.busy_poll);
        let mut last_probe = Instant::now();
        // Strict: after losing an in-sync standby, output stays held until then (fence_hold).
        let mut hold_until: Option<Instant> = None;
        // After a Handover takeover: all output stays held until the engine that handed over
        // is our in-sync standby again, or until then (handover_hold).
        let handover_since = Instant::now();
        loop {
            if self.stopping() {
                return Next::Exit;
            }
            let fence = self.status.fence_epoch();
            if fence > self.epoch {
                self.log(&format!(
                    "another engine announced our VIPs with epoch {fence} (ours {}): it took over; fenced",
                    self.epoch
                ));
                self.status.fenced_by_announcement.fetch_add(1, Relaxed);
                self.status.set_error(format!("fenced: another engine announced our VIPs with epoch {fence}"));
                return self.fenced();
            }
            let mut busy = false;
            if peer.is_none() {
                if let Ok((s, addr)) = listener.accept() {
                    busy = true;
                    match self.admit(s, addr, &mut recs) {
                        Admit::Standby(p) => peer = Some(p),
                        Admit::Refused => {}
                        Admit::Fenced(e) => {
                            self.log(&format!("an active peer with epoch {e} exists: fenced"));
                            return self.fenced();
                        }
                    }
                }
            }
            // Alone, look for another active (a standby that took over while this engine was
            // starved or partitioned): the older one fences itself, so a split brain heals.
            if peer.is_none() && last_probe.elapsed() >= SPLIT_BRAIN_PROBE {
                last_probe = Instant::now();
                if let Some(e) = self.probe_for_newer_active(&mut recs) {
                    self.log(&format!("peer is active with epoch {e}: fenced"));
                    return self.fenced();
                }
            }
            if self.status.handover_requested.swap(false, Relaxed) {
                if let Some(p) = peer.as_mut().filter(|p| p.in_sync) {
                    return self.hand_over(p);
                }
                self.log("handover refused: no in-sync standby");
            }
            let drained = self.drain_rings(peer.as_mut());
            busy |= drained;
            // Hot while records move or a batch awaits its ack (due within a round trip).
            let hot = drained || peer.as_ref().is_some_and(Standby::awaiting_ack);
            if let Some(p) = peer.as_mut() {
                match self.serve_peer(p, &mut recs) {
                    Ok(b) => busy |= b,
                    Err(PeerEnd::Fenced(e)) => {
                        self.log(&format!("peer took over with epoch {e}: fenced"));
                        return self.fenced();
                    }
                    Err(PeerEnd::Lost(why)) => {
                        self.log(&format!("standby lost: {why}"));
                        self.status.set_error(format!("standby lost: {why}"));
                        self.status.set_peer_state(PeerState::Dead);
                        if self.cfg.mode == Mode::Strict && p.in_sync && !self.cfg.fence_hold.is_zero() {
                            hold_until = Some(Instant::now() + self.cfg.fence_hold);
                        }
                        // Say so before closing: a standby that merely stalled must read
                        // "dropped by a live active" (and rejoin), not "the active died"
                        // (and take over while this engine still serves: split brain).
                        if let Some(mut p) = peer.take() {
                            let _ = p.conn.send_now(
                                &Msg::Refused { reason: format!("dropped by the active: {why}") },
                                Duration::from_millis(5),
                            );
                            let _ = p.conn.s.shutdown(std::net::Shutdown::Both);
                        }
                    }
                }
            } else if self.status.peer_state() == PeerState::Dead {
                self.status.set_peer_state(PeerState::None);
            }
            // What the standby acknowledged paces join snapshots, held output or not.
            for (w, l) in self.links.iter().enumerate() {
                l.shared.set_standby_acked(match &peer {
                    Some(p) if self.cfg.mode == Mode::Strict => p.acked[w],
                    _ => RELEASE_ALL,
                });
            }
            if let Some(until) = self.handover_hold_until {
                let in_sync = peer.as_ref().is_some_and(|p| p.in_sync);
                if in_sync || Instant::now() >= until {
                    self.handover_hold_until = None;
                    self.log(&format!(
                        "{} {:?} after the handover: output released",
                        if in_sync { "the engine that handed over is our in-sync standby" } else { "handover_hold over, that engine did not rejoin in sync:" },
                        handover_since.elapsed()
                    ));
                }
            }
            // Held output stays held until the hold after a lost standby is over.
            let holding = (peer.is_none() && hold_until.is_some_and(|t| Instant::now() < t)) || self.handover_hold_until.is_some();
            if !holding {
                hold_until = None;
                self.publish_watermarks(peer.as_ref(), &mut acct);
            }
            if pacer.pass(hot, busy) {
                // Wait for the standby's frames (or a new standby), the workers' doorbell,
                // or the next thing due: a heartbeat, the standby's dead-peer deadline, the
                // split-brain probe; never longer than park_max.
                let now = Instant::now();
                let (fd, mut due) = match &peer {
                    Some(p) => (p.conn.s.as_raw_fd(), self.peer_due(p.last_hb_tx, p.conn.last_rx)),
                    None => (listener.as_raw_fd(), hold_until.unwrap_or(last_probe + SPLIT_BRAIN_PROBE)),
                };
                if let Some(until) = self.handover_hold_until {
                    due = due.min(until);
                }
                let timeout = self.cfg.park_max.min(due.saturating_duration_since(now));
                self.idle(&pacer, &[fd], timeout, true);
            }
        }
    }

    /// Handshake with a connecting standby; on success asks every worker for a join
    /// snapshot.
    fn admit(&mut self, s: TcpStream, addr: SocketAddr, recs: &mut Vec<Record>) -> Admit {
        let Ok(mut conn) = Conn::new(s) else { return Admit::Refused };
        let _ = conn.send_now(&Msg::Hello(self.hello(Role::Active)), HELLO_TIMEOUT);
        let status = self.status.clone();
        let h = match conn.recv_hello(recs, &|| status.stop.load(Relaxed)) {
            Ok(h) => h,
            Err(e) => {
                self.log(&format!("standby {addr}: handshake failed: {e}"));
                return Admit::Refused;
            }
        };
        if let Err(e) = h.check() {
            self.refuse(&mut conn, &format!("refusing {addr}: {e}"));
            return Admit::Refused;
        }
        if h.role == Role::Active {
            // Another active probing for a split brain: the older epoch (then the higher
            // node id) steps down. Our Hello, already sent, tells the prober the same rule.
            let _ = conn.s.shutdown(std::net::Shutdown::Both);
            if newer(h.epoch, h.node_id, self.epoch, self.cfg.node_id) {
                return Admit::Fenced(h.epoch);
            }
            return Admit::Refused;
        }
        if h.role != Role::Standby {
            self.refuse(
                &mut conn,
                &format!(
                    "refusing {addr}: peer role {} (expected standby)",
                    h.role.name()
                ),
            );
            return Admit::Refused;
        }
        if h.epoch > self.epoch {
            // The peer has seen a newer epoch than ours: someone took over from us.
            self.refuse(
                &mut conn,
                &format!(
                    "refusing {addr}: peer epoch {} > ours {}",
                    h.epoch, self.epoch
                ),
            );
            return Admit::Refused;
        }
        self.token += 1;
        let token = self.token;
        if conn
            .send_now(&Msg::Snapshot { token }, self.dead_limit())
            .is_err()
        {
            return Admit::Refused;
        }
        // Everything drained from now on goes to this standby, so the snapshot (which the
        // workers emit after seeing the token) and every later delta reach it. Strict: output
        // waits for this standby from now on, and the workers pace the snapshot by its acks
        // (the watermark), so it is set before the request (Release/Acquire order both).
        for l in &self.links {
            if self.cfg.mode == Mode::Strict {
                // (A handover hold keeps holding everything.)
                if self.handover_hold_until.is_none() {
                    l.shared.set_watermark(0);
                }
                l.shared.set_standby_acked(0);
            }
            l.shared.request_snapshot(token);
        }
        self.status.sessions.fetch_add(1, Relaxed);
        self.status.set_peer_state(PeerState::Joining);
        self.log(&format!(
            "standby node {} at {addr} joining (snapshot token {token})",
            h.node_id
        ));
        let n = self.links.len();
        Admit::Standby(Standby {
            conn,
            token,
            in_sync: false,
            acked: vec![0; n],
            unacked: vec![VecDeque::new(); n],
            young: vec![VecDeque::new(); n],
            last_hb_tx: Instant::now(),
            missed: 0,
        })
    }

    /// Connect to the peer as an active and compare epochs. `Some(epoch)` if the peer is an
    /// active engine newer than us (we must fence ourselves). Short timeouts: this runs on
    /// the sync thread, which must keep draining the rings.
    fn probe_for_newer_active(&mut self, recs: &mut Vec<Record>) -> Option<u64> {
        let (c, h) = self
            .handshake(Role::Active, Duration::from_millis(20), Duration::from_millis(50), recs)
            .ok()?;
        let _ = c.s.shutdown(std::net::Shutdown::Both);
        (h.check().is_ok() && h.role == Role::Active && newer(h.epoch, h.node_id, self.epoch, self.cfg.node_id))
            .then_some(h.epoch)
    }

    /// Moves whole deltas from every ring into batches for `peer` (or drops them when there
    /// is no standby). Returns whether anything was drained.
    fn drain_rings(&mut self, mut peer: Option<&mut Standby>) -> bool {
        let mut any = false;
        let now = Instant::now();
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
                }
                while used < got {
                    match delta::peek_header(&self.peek[used..got]) {
                        Ok(p) => {
                            if peer.is_some() {
                                let d = &self.peek[used..used + p.records];
                                dropped += u64::from(self.coalescer.push(&p, d, &mut self.batch));
                            }
                            if first == 0 {
                                first = p.header.seq;
                            }
                            if p.kind == delta::DeltaKind::FlowNew {
                                if let Some(sb) = peer.as_deref_mut() {
                                    sb.young[w].push_back(p.header.seq);
                                }
                            }
                            last = p.header.seq;
                            used += p.records;
                            deltas += 1;
                        }
                        Err(delta::DeltaError::Truncated { .. }) => break,
                        Err(e) => {
                            // Cannot happen with our producer; skip one record, count it.
                            self.status.decode_errors.fetch_add(1, Relaxed);
                            self.log(&format!("worker {w}: bad delta on ring: {e}"));
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
                if let Some(p) = peer.as_deref_mut() {
                    if last != 0 {
                        let n = self.batch.len();
                        proto::encode_batch(&mut p.conn.wbuf, w as u16, first, last, &self.batch);
                        p.unacked[w].push_back((last, n as u32, now));
                        self.status.batches_sent.fetch_add(1, Relaxed);
                        self.status.deltas_sent.fetch_add(deltas - dropped, Relaxed);
                        self.status.deltas_coalesced.fetch_add(dropped, Relaxed);
                        self.status
                            .bytes_replicated
                            .fetch_add((n * RECORD_BYTES) as u64, Relaxed);
                    }
                }
                self.links[w].consumer.advance(used);
                any = true;
                if let Some(p) = peer.as_deref_mut() {
                    if p.conn.wbuf.len() >= 512 * 1024 {
                        break;
                    }
                }
            }
        }
        any
    }

    /// Sends queued batches and heartbeats, reads acks. `Ok(busy)`.
    fn serve_peer(&mut self, p: &mut Standby, recs: &mut Vec<Record>) -> Result<bool, PeerEnd> {
        let lost = |e: io::Error| PeerEnd::Lost(e.to_string());
        let mut busy = !p.conn.wbuf.is_empty();
        let now = Instant::now();
        if now.duration_since(p.last_hb_tx) >= self.cfg.heartbeat {
            let (lag_records, lag_us) = p.lag(now);
            p.conn.queue(&Msg::Heartbeat(Heartbeat {
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
        if !p.conn.wbuf.is_empty() {
            p.conn
                .flush(self.dead_limit().max(Duration::from_millis(50)))
                .map_err(lost)?;
        }
        busy |= p.conn.fill().map_err(lost)? > 0;
        while let Some(m) = p
            .conn
            .next(recs)
            .map_err(|e| PeerEnd::Lost(e.to_string()))?
        {
            busy = true;
            match m {
                In::Ack { worker, seq } => {
                    let w = usize::from(worker);
                    if w < p.acked.len() && seq > p.acked[w] {
                        p.acked[w] = seq;
                        while p.young[w].front().is_some_and(|&s| s <= seq) {
                            p.young[w].pop_front();
                        }
                        let now = Instant::now();
                        while p.unacked[w].front().is_some_and(|b| b.0 <= seq) {
                            if let Some((_, _, sent)) = p.unacked[w].pop_front() {
                                let rtt = now.saturating_duration_since(sent);
                                self.status.ack_rtt.observe(rtt.as_micros() as u64);
                            }
                        }
                    }
                }
                In::Heartbeat(h) => {
                    if !p.in_sync && h.in_sync && h.token == p.token {
                        // Reported as in sync by publish_watermarks, once output is held
                        // for it.
                        p.in_sync = true;
                        self.log(&format!("standby in sync (token {})", p.token));
                    }
                    self.status.shadow_flows.store(h.flows, Relaxed);
                }
                In::Takeover { epoch } if epoch > self.epoch => return Err(PeerEnd::Fenced(epoch)),
                In::Refused(r) => return Err(PeerEnd::Lost(format!("refused: {r}"))),
                _ => {}
            }
        }
        if p.conn.eof {
            return Err(PeerEnd::Lost("connection closed".into()));
        }
        let silent = p.conn.last_rx.elapsed();
        let missed = (silent.as_nanos() / self.cfg.heartbeat.as_nanos().max(1)) as u64;
        if missed > p.missed {
            self.status
                .heartbeats_missed_total
                .fetch_add(missed - p.missed, Relaxed);
        }
        p.missed = missed;
        self.status.heartbeats_missed.store(missed, Relaxed);
        if silent > self.dead_limit() {
            return Err(PeerEnd::Lost(format!("no heartbeat for {silent:?}")));
        }
        let (lag_records, lag_us) = p.lag(Instant::now());
        self.status.lag_records.store(lag_records, Relaxed);
        self.status.lag_us.store(lag_us, Relaxed);
        let young: usize = p.young.iter().map(VecDeque::len).sum();
        self.status.flows_at_risk.store(young as u64, Relaxed);
        Ok(busy)
    }

    /// Release watermarks: in strict mode the standby's acked sequence, from the moment it
    /// joins; in async mode everything, unless the lag passed `async_max_lag` (then hold until
    /// it catches up); without a standby everything (counted as unprotected).
    ///
    /// Strict during the join too: output waits for the standby to acknowledge the changes
    /// it depends on (and so the part of the snapshot queued before them), which makes every
    /// flow the standby holds an image of as safe as after the join. Were everything released
    /// until the join ends, those replicas would lag behind what their clients saw, and a
    /// kill during a long snapshot would resume them wrongly. (The cost: a join delays new
    /// output by the snapshot's transfer; a download's segments, which depend on no new
    /// change, do not wait.)
    fn publish_watermarks(&self, peer: Option<&Standby>, acct: &mut Instant) {
        let protected = peer.is_some_and(|p| p.in_sync);
        let now = Instant::now();
        let over_lag = peer.is_some_and(|p| {
            self.cfg.mode == Mode::Async && p.lag(now).1 > self.cfg.async_max_lag.as_micros() as u64
        });
        if over_lag {
            self.status.async_lag_holds.fetch_add(1, Relaxed);
        }
        for (w, l) in self.links.iter().enumerate() {
            let wm = match peer {
                Some(p) if self.cfg.mode == Mode::Strict || (p.in_sync && over_lag) => p.acked[w],
                _ => RELEASE_ALL,
            };
            l.shared.set_watermark(wm);
        }
        // Only now say "in sync": whoever reads it may rely on output being protected.
        if protected && self.status.peer_state() != PeerState::InSync {
            self.status.set_peer_state(PeerState::InSync);
        }
        if !protected {
            self.status
                .unprotected_us
                .fetch_add(now.duration_since(*acct).as_micros() as u64, Relaxed);
        }
        self.status.unprotected.store(!protected, Relaxed);
        if peer.is_none() {
            self.status.flows_at_risk.store(0, Relaxed);
            self.status.lag_records.store(0, Relaxed);
            self.status.lag_us.store(0, Relaxed);
            self.status.heartbeats_missed.store(0, Relaxed);
        }
        *acct = now;
    }

    /// ctl failback: final drain, `Handover` to the in-sync standby, then its standby.
    ///
    /// Strict with a `handover_hold`: the workers keep their flows (output held) until our
    /// rejoin of the new active is in sync, and the new active holds all output until then.
    /// Should it die before, this engine resumes the flows it kept (`HandoverFallback`):
    /// nothing left the new active, so they are what the clients last saw. Without this, a
    /// kill in the rejoin's window would cost every flow not yet imaged back to us.
    fn hand_over(&mut self, p: &mut Standby) -> Next {
        // Hold all output from now on: the standby speaks for the VIPs after this.
        for l in &self.links {
            l.shared.set_watermark(HOLD_ALL);
        }
        self.drain_rings(Some(p));
        self.epoch += 1;
        let keep = self.cfg.mode == Mode::Strict && !self.cfg.handover_hold.is_zero();
        if keep {
            // Before the role changes: the workers read it when they stop being active.
            self.status.set_retain_flows(true);
            self.fallback_until = Some(Instant::now() + self.cfg.handover_hold);
        }
        let _ = p
            .conn
            .send_now(&Msg::Handover { epoch: self.epoch }, self.dead_limit());
        self.log(&format!(
            "handed over to the standby (epoch {}){}",
            self.epoch,
            if keep {
                format!("; keeping our flows until our rejoin is in sync (at most {:?})", self.cfg.handover_hold)
            } else {
                String::new()
            }
        ));
        if keep {
            // Rejoin at once (the new active listens as soon as it took over).
            self.status.set_role(Role::Fenced);
            self.status.set_peer_state(PeerState::None);
            return Next::Standby(None);
        }
        self.fenced()
    }

    /// The flows kept since our handover may still be resumed.
    fn fallback_valid(&self) -> bool {
        self.fallback_until.is_some_and(|t| Instant::now() < t)
    }

    /// The kept flows are no longer needed (our rejoin is in sync) or no longer valid (the
    /// new active's hold is over): the workers forget them.
    fn drop_fallback(&mut self, why: &str) {
        if self.fallback_until.take().is_some() {
            self.status.set_retain_flows(false);
            self.log(&format!("forgetting the flows kept since the handover: {why}"));
        }
    }

    /// A newer epoch exists: never release output again; rejoin as a standby.
    fn fenced(&mut self) -> Next {
        self.handover_hold_until = None;
        self.status.set_role(Role::Fenced);
        self.status.set_peer_state(PeerState::None);
        for l in &self.links {
            l.shared.set_watermark(0);
        }
        // Give the new active time to start listening, then follow it.
        let until = Instant::now() + Duration::from_millis(50);
        while Instant::now() < until && !self.stopping() {
            self.drain_rings(None);
            thread::sleep(Duration::from_millis(1));
        }
        if self.stopping() {
            return Next::Exit;
        }
        Next::Standby(None)
    }

    // ---- standby ------------------------------------------------------------------------

    fn standby(&mut self, mut first: Option<(Conn, Hello)>) -> Next {
        self.status.set_role(if self.status.role() == Role::Fenced {
            Role::Fenced
        } else {
            Role::Standby
        });
        let mut shadow = Replicas::new(self.links.len());
        let mut recs = Vec::new();
        let mut backoff = Duration::from_millis(if self.fallback_until.is_some() { 1 } else { 10 });
        let handed_over_at = Instant::now();
        // When a live active dropped us while our replica was in sync (strict mode).
        let mut dropped_at: Option<Instant> = None;
        loop {
            if self.stopping() {
                return Next::Exit;
            }
            if self.status.takeover_requested.swap(false, Relaxed) {
                return self.take_over(
                    &mut shadow,
                    None,
                    TakeoverReason::Requested,
                    Duration::ZERO,
                );
            }
            self.status.set_peer_state(PeerState::Connecting);
            let session = match first.take() {
                Some(s) => Ok(s),
                None => self.connect(&mut recs),
            };
            let (mut conn, h) = match session {
                Ok(s) => s,
                Err(e) => {
                    // We handed over, and the engine we handed over to refuses our rejoin
                    // once it had time to listen: it is gone. It held all output since, so
                    // the flows we kept are what the clients last saw.
                    if self.fallback_valid() {
                        let since = handed_over_at.elapsed();
                        if e.kind() == io::ErrorKind::ConnectionRefused && since >= HANDOVER_LISTEN_GRACE {
                            self.log(&format!(
                                "the engine we handed over to refuses our rejoin {since:?} after the handover: it is gone"
                            ));
                            return self.take_over(&mut shadow, None, TakeoverReason::HandoverFallback, since);
                        }
                    } else if self.fallback_until.is_some() {
                        self.drop_fallback("handover_hold is over");
                    }
                    // Dropped by an active that then died (it may have found us silent
                    // because it was starving itself): a refused rejoin means nothing listens
                    // on its sync port any more. Within fence_hold of the drop it released
                    // nothing we do not have, so our replica can still resume every flow.
                    if let Some(t) = dropped_at {
                        let since = t.elapsed();
                        if e.kind() == io::ErrorKind::ConnectionRefused && since < self.cfg.fence_hold {
                            self.log(&format!(
                                "the active that dropped us {since:?} ago refuses connections: it is gone"
                            ));
                            return self.take_over(&mut shadow, None, TakeoverReason::DroppedThenGone, since);
                        }
                        if since >= self.cfg.fence_hold {
                            dropped_at = None;
                        }
                    }
                    self.drain_rings(None);
                    thread::sleep(backoff);
                    let cap = if self.fallback_until.is_some() { 5 } else { 200 };
                    backoff = (backoff * 2).min(Duration::from_millis(cap));
                    continue;
                }
            };
            backoff = Duration::from_millis(10);
            dropped_at = None;
            if h.role != Role::Active {
                let _ = conn.s.shutdown(std::net::Shutdown::Both);
                thread::sleep(Duration::from_millis(50));
                continue;
            }
            self.epoch = self.epoch.max(h.epoch);
            self.status.epoch.store(self.epoch, Relaxed);
            self.status.set_role(Role::Standby);
            self.status.sessions.fetch_add(1, Relaxed);
            self.log(&format!(
                "standby of node {} (epoch {})",
                h.node_id, h.epoch
            ));
            shadow.reset(usize::from(h.workers).max(self.links.len()));
            self.status.set_peer_state(PeerState::Joining);
            match self.follow(&mut conn, &mut shadow, &mut recs) {
                FollowEnd::Takeover(r, detect) => {
                    return self.take_over(&mut shadow, Some(&mut conn), r, detect)
                }
                FollowEnd::Rejoin => {
                    let _ = conn.s.shutdown(std::net::Shutdown::Both);
                    self.status.set_peer_state(PeerState::Connecting);
                    if self.cfg.mode == Mode::Strict && shadow.in_sync {
                        dropped_at = Some(Instant::now());
                    }
                    // Retry soon: the rejoin (or the finding that the active is gone) must
                    // come well within fence_hold.
                    backoff = Duration::from_millis(1);
                    thread::sleep(Duration::from_millis(1));
                    continue;
                }
                FollowEnd::Exit => return Next::Exit,
            }
        }
    }

    /// Applies the active's stream until it dies (returns why) or we stop (None).
    fn follow(
        &mut self,
        conn: &mut Conn,
        shadow: &mut Replicas,
        recs: &mut Vec<Record>,
    ) -> FollowEnd {
        let mut last_hb_tx = Instant::now();
        let mut missed = 0u64;
        let mut pacer = Pacer::new(self.cfg.busy_poll);
        loop {
            if self.stopping() {
                return FollowEnd::Exit;
            }
            if self.status.takeover_requested.swap(false, Relaxed) {
                return FollowEnd::Takeover(TakeoverReason::Requested, Duration::ZERO);
            }
            let got = match conn.fill() {
                Ok(n) => n,
                Err(_) => return FollowEnd::Takeover(TakeoverReason::PeerClosed, conn.last_rx.elapsed()),
            };
            let mut progressed = false;
            let (mut frames, mut batches) = (0, 0);
            loop {
                match conn.next(recs) {
                    Ok(Some(m)) => {
                        frames += 1;
                        match m {
                            In::Batch { worker, first, last } => {
                                self.apply_batch(shadow, worker, (first, last), recs);
                                batches += 1;
                            }
                            In::Snapshot { token } => shadow.begin_join(token),
                            In::Handover { epoch } => {
                                self.epoch = self.epoch.max(epoch.saturating_sub(1));
                                return FollowEnd::Takeover(TakeoverReason::Handover, Duration::ZERO);
                            }
                            In::Heartbeat(h) => {
                                self.epoch = self.epoch.max(h.epoch);
                                self.status.lag_records.store(h.lag_records, Relaxed);
                                self.status.lag_us.store(h.lag_us, Relaxed);
                            }
                            In::Refused(r) => {
                                // A live active dropped us (e.g. we stalled): its state has
                                // moved on without us, so rejoin with a fresh snapshot.
                                self.log(&format!("active dropped us: {r}; rejoining"));
                                self.status.set_error(format!("dropped by the active: {r}"));
                                return FollowEnd::Rejoin;
                            }
                            _ => {}
                        }
                        // Bounded work between heartbeats and acks.
                        if frames >= 256 {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.log(&format!("bad frame from active: {e}"));
                        self.status.decode_errors.fetch_add(1, Relaxed);
                        return FollowEnd::Takeover(TakeoverReason::PeerClosed, conn.last_rx.elapsed());
                    }
                }
            }
            // Ack after apply: the highest sequence applied per worker.
            for (w, ws) in shadow.workers.iter_mut().enumerate() {
                if ws.applied > ws.acked {
                    ws.acked = ws.applied;
                    conn.queue(&Msg::Ack {
                        worker: w as u16,
                        seq: ws.applied,
                    });
                    progressed = true;
                }
            }
            let became_in_sync = shadow.check_in_sync();
            if became_in_sync {
                self.status.set_peer_state(PeerState::InSync);
                self.log(&format!("in sync (token {})", shadow.join_token));
                self.drop_fallback("our rejoin of the new active is in sync");
            } else if self.fallback_until.is_some() && !self.fallback_valid() {
                self.drop_fallback("handover_hold is over");
            }
            let now = Instant::now();
            if became_in_sync || now.duration_since(last_hb_tx) >= self.cfg.heartbeat {
                conn.queue(&Msg::Heartbeat(Heartbeat {
                    epoch: self.epoch,
                    role: Role::Standby as u8,
                    in_sync: shadow.in_sync,
                    token: shadow.join_token,
                    lag_records: 0,
                    lag_us: 0,
                    flows: shadow.flows() as u64,
                }));
                last_hb_tx = now;
            }
            if !conn.wbuf.is_empty()
                && conn
                    .flush(self.dead_limit().max(Duration::from_millis(50)))
                    .is_err()
            {
                return FollowEnd::Takeover(TakeoverReason::PeerClosed, conn.last_rx.elapsed());
            }
            self.status
                .shadow_flows
                .store(shadow.flows() as u64, Relaxed);
            if conn.eof && conn.start >= conn.end {
                return FollowEnd::Takeover(TakeoverReason::PeerClosed, conn.last_rx.elapsed());
            }
            let silent = conn.last_rx.elapsed();
            let m = (silent.as_nanos() / self.cfg.heartbeat.as_nanos().max(1)) as u64;
            if m > missed {
                self.status
                    .heartbeats_missed_total
                    .fetch_add(m - missed, Relaxed);
            }
            missed = m;
            self.status.heartbeats_missed.store(m, Relaxed);
            if silent > self.dead_limit() {
                return FollowEnd::Takeover(TakeoverReason::HeartbeatTimeout, silent);
            }
            // The standby's own workers are idle; keep their rings empty anyway.
            let drained = self.drain_rings(None);
            if pacer.pass(batches > 0, got > 0 || frames > 0 || progressed || drained) {
                // Wait for the active's frames, or our next heartbeat, or its dead-peer
                // deadline, whichever comes first (and look at stop/takeover requests at
                // least every STANDBY_WAIT_MAX).
                let now = Instant::now();
                let due = self.peer_due(last_hb_tx, conn.last_rx);
                let timeout = STANDBY_WAIT_MAX.min(due.saturating_duration_since(now));
                self.idle(&pacer, &[conn.s.as_raw_fd()], timeout, false);
            }
        }
    }

    /// Applies one batch (`seqs`: its first and last delta sequence numbers). Continuity
    /// is checked per batch: the sync core may have coalesced deltas out of it.
    fn apply_batch(&self, shadow: &mut Replicas, worker: u16, seqs: (u64, u64), recs: &[Record]) {
        shadow.apply_batch(&self.stack_cfg, &self.status, worker, seqs, recs, &|m| self.log(m));
    }

    /// Takeover, in DESIGN §4 order: fence (epoch + 1), apply everything received, deliver
    /// owed FINs, hand the flows to the engine; then serve as the active.
    fn take_over(
        &mut self,
        shadow: &mut Replicas,
        conn: Option<&mut Conn>,
        reason: TakeoverReason,
        detect: Duration,
    ) -> Next {
        let t0 = Instant::now();
        self.epoch += 1;
        self.status.epoch.store(self.epoch, Relaxed);
        self.status.set_peer_state(PeerState::Dead);
        let mut recs = Vec::new();
        if let Some(c) = conn {
            // Apply everything already received (the socket may hold the last frames).
            let _ = c.fill();
            while let Ok(Some(m)) = c.next(&mut recs) {
                match m {
                    In::Batch { worker, first, last } => {
                        self.apply_batch(shadow, worker, (first, last), &recs)
                    }
                    In::Snapshot { token } => shadow.begin_join(token),
                    _ => {}
                }
            }
            // Tell a still-listening old active that it is fenced.
            let _ = c.send_now(
                &Msg::Takeover { epoch: self.epoch },
                Duration::from_millis(5),
            );
            let _ = c.s.shutdown(std::net::Shutdown::Both);
        }
        let in_sync = shadow.check_in_sync() || shadow.in_sync;
        // We handed over, and the new active died before our rejoin was in sync: resume the
        // flows our workers kept (nothing left the new active since), not a partial replica.
        let fallback = !in_sync && self.fallback_valid();
        let reason = if fallback { TakeoverReason::HandoverFallback } else { reason };
        let flows = if fallback {
            shadow.reset(self.links.len());
            self.status.handover_fallbacks.fetch_add(1, Relaxed);
            (0..self.links.len()).map(|_| Vec::new()).collect()
        } else {
            shadow.take_for_takeover(&self.stack_cfg, &self.status, self.links.len())
        };
        let n: usize = flows.iter().map(Vec::len).sum();
        self.status.shadow_flows.store(0, Relaxed);
        if fallback {
            self.log(&format!(
                "takeover ({reason:?}, epoch {}): resuming the flows kept since the handover",
                self.epoch
            ));
        } else {
            self.log(&format!(
                "takeover ({reason:?}, epoch {}, {n} flows, {} of them from full images, in_sync {in_sync})",
                self.epoch,
                self.status.takeover_imaged_flows.load(Relaxed)
            ));
        }
        // By handover: hold all output until the engine that handed over is our in-sync
        // standby (it keeps its flows to fall back on meanwhile), at most handover_hold.
        if reason == TakeoverReason::Handover && self.cfg.mode == Mode::Strict && !self.cfg.handover_hold.is_zero() {
            for l in &self.links {
                l.shared.set_watermark(HOLD_ALL);
            }
            self.handover_hold_until = Some(Instant::now() + self.cfg.handover_hold);
        }
        // Active before the callback: the engine follows this role, and must never see
        // Standby after its workers started installing the flows.
        self.status.set_role(Role::Active);
        (self.on_takeover)(Takeover {
            epoch: self.epoch,
            flows,
            reason,
            in_sync,
            retained: fallback,
        });
        // After the callback: the engine's workers have the takeover (and keep what they
        // kept) before they may see the flag cleared.
        self.fallback_until = None;
        self.status.set_retain_flows(false);
        self.status.mark_takeover(detect, t0.elapsed());
        Next::Active
    }
}

enum PeerEnd {
    Lost(String),
    Fenced(u64),
}

/// Outcome of a connection to the active's listener.
enum Admit {
    Standby(Standby),
    Refused,
    /// The connector is an active with a newer epoch: we step down.
    Fenced(u64),
}

/// How often an active without a standby looks for another active on its peer address.
const SPLIT_BRAIN_PROBE: Duration = Duration::from_millis(200);

/// Is (epoch a, node a) newer than (epoch b, node b)? Epochs decide; on a tie (two engines
/// that both started as active) the lower node id wins.
fn newer(epoch_a: u64, node_a: u32, epoch_b: u64, node_b: u32) -> bool {
    epoch_a > epoch_b || (epoch_a == epoch_b && node_a < node_b)
}

/// How following the active ended.
enum FollowEnd {
    /// The active is gone (or a takeover was requested / handed over).
    Takeover(TakeoverReason, Duration),
    /// The active is alive and dropped us: reconnect and rejoin (never take over).
    Rejoin,
    Exit,
}

/// The active's view of its standby.
struct Standby {
    conn: Conn,
    token: u64,
    in_sync: bool,
    acked: Vec<u64>,
    /// Per worker: (last seq, records, sent at) of batches not yet acknowledged.
    unacked: Vec<VecDeque<(u64, u32, Instant)>>,
    /// Per worker: sequence numbers of flow creations sent but not yet acknowledged. In async
    /// mode these flows may already have been answered, so a failover now would lose them.
    young: Vec<VecDeque<u64>>,
    last_hb_tx: Instant,
    missed: u64,
}

impl Standby {
    /// A batch was sent and its ack has not arrived yet.
    fn awaiting_ack(&self) -> bool {
        self.unacked.iter().any(|q| !q.is_empty())
    }

    fn lag(&self, now: Instant) -> (u64, u64) {
        let mut recs = 0u64;
        let mut oldest: Option<Instant> = None;
        for q in &self.unacked {
            recs += q.iter().map(|b| u64::from(b.1)).sum::<u64>();
            if let Some(b) = q.front() {
                oldest = Some(oldest.map_or(b.2, |o| o.min(b.2)));
            }
        }
        (
            recs,
            oldest.map_or(0, |o| now.duration_since(o).as_micros() as u64),
        )
    }
}

// Keep the biggest delta within one peek buffer.
const _: () = assert!(MAX_BATCH_RECORDS >= MAX_DELTA_RECORDS);

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    /// Frames of every size up to several receive-buffer compactions, written in odd-sized
    /// pieces (frames split anywhere), come out whole and in order.
    #[test]
    fn conn_reassembles_frames_split_anywhere() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut tx = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (rx, _) = l.accept().unwrap();
        rx.set_nonblocking(true).unwrap();
        let mut conn = Conn::new(rx).unwrap();
        // Batches of 1..=1024 records with recognisable contents, and acks between them.
        let sizes: Vec<usize> = (0..300).map(|i| 1 + (i * 397) % MAX_BATCH_RECORDS).collect();
        let mut wire = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            let recs: Vec<u8> = (0..n * RECORD_BYTES).map(|b| (b / RECORD_BYTES + i) as u8).collect();
            proto::encode(&Msg::Batch { worker: 0, first_seq: i as u64, last_seq: (i + n) as u64, records: &recs }, &mut wire);
            proto::encode(&Msg::Ack { worker: 1, seq: i as u64 }, &mut wire);
        }
        assert!(wire.len() > 16 * RBUF_COMPACT_AT, "exercises many compactions");
        let writer = std::thread::spawn(move || {
            let mut at = 0;
            let mut k = 0usize;
            while at < wire.len() {
                let n = (1 + k * 7919 % 70_000).min(wire.len() - at);
                tx.write_all(&wire[at..at + n]).unwrap();
                at += n;
                k += 1;
            }
        });
        let mut recs = Vec::new();
        let (mut batches, mut acks) = (0usize, 0usize);
        let deadline = Instant::now() + Duration::from_secs(20);
        while acks < sizes.len() {
            assert!(Instant::now() < deadline, "stalled after {batches} batches, {acks} acks");
            conn.fill().unwrap();
            while let Some(m) = conn.next(&mut recs).unwrap() {
                match m {
                    In::Batch { first, last, .. } => {
                        let i = batches;
                        assert_eq!((first, last), (i as u64, (i + sizes[i]) as u64));
                        assert_eq!(recs.len(), sizes[i]);
                        for (j, r) in recs.iter().enumerate() {
                            let want = u64::from_le_bytes([(j + i) as u8; 8]);
                            assert!(r.iter().all(|&w| w == want), "batch {i} record {j}");
                        }
                        batches += 1;
                    }
                    In::Ack { seq, .. } => {
                        assert_eq!((seq, acks + 1), (acks as u64, batches), "ack follows its batch");
                        acks += 1;
                    }
                    _ => panic!("unexpected message"),
                }
            }
        }
        writer.join().unwrap();
        assert_eq!((conn.start, conn.end), (0, 0), "everything parsed");
    }
}
