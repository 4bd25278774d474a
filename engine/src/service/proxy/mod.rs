//! The `proxy` service: a TCP (L4) load balancer. A client connection accepted on the
//! listener's VIP:port gets a backend connection that the engine opens itself
//! (`Stack::connect`, from the listener's source address, which belongs to the group and
//! so moves with the VIP), and the two are linked into one unit (`Stack::link`): what one
//! half receives, the other sends, both ways, half-closes included.
//!
//! **The two halves and their buffers.** Each half is a [`ProxyHalf`] holding one
//! direction's bytes: the bytes *its own peer sent* ([`Pipe`]), kept until the *other* half's
//! peer has acknowledged them. So a half's output is its partner's pipe: `tx_end`, `read_at`
//! and `tx_closed` read the partner's pipe and `on_acked` releases it, which is why a linked
//! half is bound together with its partner ([`Kind::bind_linked`]). A pipe holds at most
//! `buf_size` bytes (the bounded buffer per direction): the window a half advertises to its
//! peer is the room left in its own pipe, so a slow backend closes the client's window
//! honestly, and the other way round.
//!
//! **Replication (`commit = "standby"`: bytes are acknowledged once the standby holds
//! them).** A half's pipe is filled only by its own peer's bytes, which the stack replicates
//! as that flow's received data; the standby replays them into the same pipe, alone (it
//! never needs the partner for that). A pipe is a ring indexed by stream offset, so the
//! replay cannot run out of room and never needs to know what the partner's peer
//! acknowledged meanwhile: the active accepted a byte only once the byte `buf_size` before
//! it had been acknowledged by the partner's peer, so whatever the ring overwrote had been
//! delivered. At takeover the pair is installed together and each pipe learns how much of it
//! was delivered from its partner's replicated send progress ([`Kind::resume_linked`]).
//! Output of either half waits for both halves' latest changes (`Stack::touch_tag`): the
//! backend is sent client bytes only once the standby holds them, so a takeover never has to
//! produce bytes that only the dead engine had.
//!
//! **Replication (`commit = "peer"`, the default: bytes are acknowledged once the other
//! side's peer has them).** A half's acknowledgement limit (`ByteStream::ack_limit`) is
//! what the partner's peer acknowledged of its pipe, so its ACKs (and its acceptance of its
//! peer's FIN) follow the far side's; what it received and relayed beyond that is still its
//! peer's to retransmit. No `Data` is replicated past the first request or ClientHello
//! (`head_end`: read before the choice, acknowledged as it came), and what the peer
//! acknowledged (SND.UNA) is commit-relevant, since the partner acknowledges by it. At
//! takeover each half of a pair resumes its receive side from what the partner's peer
//! acknowledged (`ShadowFlow::peer_resume_point`, [`Kind::resume_linked`]), its output
//! from SND.UNA; a peer's ACK beyond the replica is caught up within one buffer
//! (`catch_up_end`), and the bytes the far side already has count as received by this
//! half at once ([`Pipe`]'s `skip`, `ByteStream::take_skipped`): its peer sent them, and
//! may not send them again.
//!
//! **Ends.** When one half closes in order, the other keeps what it still has to send: it
//! adopts the closing half's pipe ([`Kind::adopt`]) and sends it, then its FIN; it accepts
//! nothing more from its own peer (nowhere to send it). When one half is reset, the other is
//! reset too. A client whose backend cannot be reached (no backend, no route, no answer) gets
//! a FIN at once, as HAProxy closes a TCP-mode client whose server connect failed.
//!
//! Balancing ([`Balance`]): round robin, least connections (counted over every worker of the
//! engine), or a rendezvous hash of the client address. The choice is made on the active and
//! is not replayed: the backend half is a flow of its own, replicated with its address.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Mutex;

use super::ByteStream;
use crate::time::{Duration, Instant};

mod bind;
mod kind;
pub mod health;
mod pipe;
mod pool;
pub use self::bind::{Decision, Mode, Pool, BAD_REQUEST, TOO_LARGE, UNAVAILABLE};
pub use self::health::{ActiveCheck, CheckHealth, CheckKind, CheckResult, CheckState, Probe};
pub use self::kind::ProxyKind;
pub use self::pipe::Pipe;
pub use self::pool::{pack, unpack, Admin, ConnectHistogram, PoolError, SlotImage, CONNECT_BUCKETS_US, DEFAULT_MAX_BACKENDS, DEFAULT_POOL, MAX_WEIGHT, REMOVE_GRACE};

/// Default largest first request head (HTTP) or ClientHello record (TLS) read for the choice.
pub const DEFAULT_MAX_HEAD: usize = 16 * 1024;

/// Default bytes buffered per direction per connection.
pub const DEFAULT_BUF_SIZE: usize = 256 * 1024;
/// Default output commit of a proxy service (`commit`): nothing relayed is replicated.
pub const DEFAULT_COMMIT: Commit = Commit::Peer;
/// Default SYN retransmissions toward a backend (1 s initial RTO: it gives up after 7 s).
pub const DEFAULT_CONNECT_RETRIES: u8 = 2;

/// When a proxy half acknowledges its peer's bytes (`commit`), the two ways output commit
/// can hold for a relay of two connections.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Commit {
    /// Once the standby holds them: every byte relayed is replicated, and the two sides are
    /// decoupled (a slow backend does not slow the client's upload).
    Standby,
    /// Once the other half's peer acknowledged them ([`DEFAULT_COMMIT`]): no payload is replicated, only both
    /// halves' sequence state and their link; after a takeover the two peers'
    /// retransmissions fill every gap (see the module documentation).
    Peer,
}

impl Commit {
    pub fn name(self) -> &'static str {
        match self {
            Commit::Standby => "standby",
            Commit::Peer => "peer",
        }
    }

    /// Parse a configuration name.
    pub fn parse(s: &str) -> Option<Commit> {
        match s {
            "standby" => Some(Commit::Standby),
            "peer" => Some(Commit::Peer),
            _ => None,
        }
    }
}

/// How a backend is chosen for a new client connection.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum Balance {
    /// Each backend in turn.
    #[default]
    RoundRobin,
    /// The backend with the fewest open connections (ties in turn).
    LeastConn,
    /// A rendezvous (highest random weight) hash of the client address: a client sticks to
    /// its backend, and removing a backend moves only its own clients.
    Hash,
}

impl Balance {
    pub fn name(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round-robin",
            Balance::LeastConn => "least-conn",
            Balance::Hash => "hash",
        }
    }

    /// Parse a configuration name.
    pub fn parse(s: &str) -> Option<Balance> {
        match s {
            "round-robin" | "roundrobin" => Some(Balance::RoundRobin),
            "least-conn" | "leastconn" => Some(Balance::LeastConn),
            "hash" => Some(Balance::Hash),
            _ => None,
        }
    }
}

/// One backend server and what this engine knows of it (shared by every worker).
///
/// **Passive health** (nginx's `max_fails` / `fail_timeout`): after `max_fails` connections
/// in a row that never connected (refused, unanswered), the backend gets no new connection
/// for `fail_timeout`; then the next one tries it again. A connection that completes its
/// handshake clears the count.
///
/// **A slot** (`pool`): the spec holds a fixed array of these, the configured backends then
/// spare ones (`max_backends`), allocated at start and never moved, so the workers read
/// them lock-free and a connection's backend index stays valid for its whole life. `admin`
/// says whether the slot holds a backend and whether it takes new connections; `addr`,
/// `weight` and the pool membership change only while a slot is empty (or, on a standby,
/// by the active's pool table). Every field after `failed` is the runtime pool's.
#[derive(Debug)]
pub struct Backend {
    /// The address (`ip << 16 | port`; written only while the slot is empty, before
    /// `admin` is stored with Release: read it after loading `admin` with Acquire).
    addr: AtomicU64,
    /// Eligible for new connections (an operator's switch; passive health is apart).
    pub up: AtomicBool,
    /// Connections in a row that never connected.
    pub fails: AtomicU32,
    /// Engine time (µs) until which the backend is down after `max_fails` failures.
    pub down_until: AtomicU64,
    /// Times it was marked down so.
    pub marked_down: AtomicU64,
    /// The latest engine time (µs) a choice or an outcome saw (for [`Backend::resting`]).
    seen: AtomicU64,
    /// Backend connections open now (opened here or resumed at a takeover).
    pub active: AtomicU64,
    /// Backend connections opened.
    pub opened: AtomicU64,
    /// Backend connections that never connected (refused, unanswered, no next hop).
    pub failed: AtomicU64,
    /// [`Admin`] as a byte: empty, ready, draining, removed.
    pub(crate) admin: AtomicU8,
    /// Weight for round-robin and least-conn (1..=[`MAX_WEIGHT`]).
    pub weight: AtomicU32,
    /// Smooth weighted round-robin's current weight (nginx's `current_weight`).
    pub(crate) cw: AtomicI64,
    /// Member of pool `k` (`[[service.pool]]` k) if bit `k` is set.
    pub(crate) pools: AtomicU64,
    /// Member of the service's default pool (its `backends`).
    pub(crate) in_default: AtomicBool,
    /// Bytes the backend acknowledged (client to backend), counted when a connection closes.
    pub bytes_to: AtomicU64,
    /// Bytes received from the backend, counted when a connection closes.
    pub bytes_from: AtomicU64,
    /// Connect latency: connect → SYN-ACK.
    pub connect: ConnectHistogram,
    /// Active health checks (`health`; Unknown, which counts as up, while they are off).
    pub check: CheckHealth,
}

impl Backend {
    /// A configured backend: ready, weight 1, in no pool yet (`ProxySpec::with_pools`).
    pub fn new(addr: SocketAddrV4) -> Backend {
        let b = Backend::empty();
        b.addr.store(pack(addr), Relaxed);
        b.admin.store(Admin::Ready as u8, Relaxed);
        b
    }

    /// A spare slot.
    pub fn empty() -> Backend {
        Backend {
            addr: AtomicU64::new(0),
            up: AtomicBool::new(true),
            fails: AtomicU32::new(0),
            down_until: AtomicU64::new(0),
            marked_down: AtomicU64::new(0),
            seen: AtomicU64::new(0),
            active: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            admin: AtomicU8::new(Admin::Empty as u8),
            weight: AtomicU32::new(1),
            cw: AtomicI64::new(0),
            pools: AtomicU64::new(0),
            in_default: AtomicBool::new(false),
            bytes_to: AtomicU64::new(0),
            bytes_from: AtomicU64::new(0),
            connect: ConnectHistogram::default(),
            check: CheckHealth::default(),
        }
    }

    /// Its address (unspecified for an empty slot).
    pub fn addr(&self) -> SocketAddrV4 {
        unpack(self.addr.load(Relaxed))
    }

    /// Whether new connections may go to it at `now`: ready (admin), switched on, not
    /// resting (passive health) and not down by the active checks.
    pub fn usable(&self, now: Instant) -> bool {
        self.seen.fetch_max(now.0, Relaxed);
        self.admin() == Admin::Ready && self.up.load(Relaxed) && now.0 >= self.down_until.load(Relaxed) && self.check.eligible()
    }

    /// Marked down by passive health, as of the latest time the engine looked at it.
    pub fn resting(&self) -> bool {
        self.down_until.load(Relaxed) > self.seen.load(Relaxed)
    }

    /// One of its connections ended: `connected` or not (passive health).
    fn outcome(&self, connected: bool, now: Instant, health: Health) {
        self.seen.fetch_max(now.0, Relaxed);
        if connected {
            self.fails.store(0, Relaxed);
            return;
        }
        self.failed.fetch_add(1, Relaxed);
        let n = self.fails.fetch_add(1, Relaxed) + 1;
        if health.max_fails > 0 && n >= health.max_fails {
            self.fails.store(0, Relaxed);
            self.down_until.store(now.0.saturating_add(health.fail_timeout.micros()), Relaxed);
            self.marked_down.fetch_add(1, Relaxed);
        }
    }
}

/// Passive health settings (see [`Backend`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// Failed connections in a row that mark a backend down (0: never).
    pub max_fails: u32,
    /// How long a backend marked down gets no new connection.
    pub fail_timeout: Duration,
}

impl Default for Health {
    fn default() -> Self {
        Health { max_fails: 3, fail_timeout: Duration::from_secs(10) }
    }
}

/// What a `proxy` listener is configured with.
#[derive(Debug)]
pub struct ProxySpec {
    /// Backend slots: the configured backends, then empty ones (see [`Backend`], `pool`).
    pub backends: Vec<Backend>,
    pub balance: Balance,
    /// The address backend connections come from: one of the engine's VIPs, of the
    /// listener's group.
    pub source: Ipv4Addr,
    /// Bytes buffered per direction per connection.
    pub buf_size: usize,
    /// When a half acknowledges its peer's bytes ([`Commit`]).
    pub commit: Commit,
    pub health: Health,
    /// SYN retransmissions before a backend connection gives up (its connect timeout: with
    /// a 1 s initial RTO, 2 gives up 7 s after the first SYN).
    pub connect_retries: u8,
    /// How the backend is chosen ([`Mode`]; `Tcp`: at once).
    pub mode: Mode,
    /// Pools matched by host and path, in order (`Http`, `Tls`); their members are the
    /// slots' `pools` bits (`Pool::backends` is what the config named).
    pub pools: Vec<Pool>,
    /// Largest first request head or ClientHello read before the choice (at most `buf_size`).
    pub max_head: usize,
    /// Active health checks (None: off, the default).
    pub check: Option<ActiveCheck>,
    /// Round-robin position (least-conn's tie-break).
    next: AtomicU64,
    /// The pool's version: bumped after every change (the sync session sends the table when
    /// it moved).
    pub(crate) version: AtomicU64,
    /// Serializes pool changes (control plane only: `ctl`, the sync session; never a worker).
    pub(crate) ops: Mutex<()>,
    /// Client connections refused before any backend was chosen, by [`REFUSAL_REASONS`]
    /// (counted when such a connection ends, on the engine that ends it).
    pub refused: [AtomicU64; 4],
}

/// What [`ProxySpec::refused`] counts, by index: the client was answered 400 (not an HTTP
/// request), 431 (its head over `max_request_head`), 503 (no pool for it, or no backend up),
/// or closed without an answer (mode tcp or tls: a first record that is not a ClientHello,
/// no pool for its SNI, or no backend up).
pub const REFUSAL_REASONS: [&str; 4] = ["closed", "bad_request", "too_large", "unavailable"];

impl ProxySpec {
    /// Every backend in the default pool, no spare slot (`with_slots` adds them).
    pub fn new(backends: Vec<SocketAddrV4>, balance: Balance, source: Ipv4Addr, buf_size: usize) -> ProxySpec {
        let backends: Vec<Backend> = backends.into_iter().map(Backend::new).collect();
        backends.iter().for_each(|b| b.in_default.store(true, Relaxed));
        ProxySpec {
            mode: Mode::Tcp,
            pools: Vec::new(),
            max_head: DEFAULT_MAX_HEAD.min(buf_size.max(1)),
            backends,
            balance,
            source,
            buf_size: buf_size.max(1),
            commit: DEFAULT_COMMIT,
            health: Health::default(),
            connect_retries: DEFAULT_CONNECT_RETRIES,
            check: None,
            next: AtomicU64::new(0),
            version: AtomicU64::new(0),
            ops: Mutex::new(()),
            refused: Default::default(),
        }
    }

    /// With output commit `commit`.
    pub fn with_commit(mut self, commit: Commit) -> ProxySpec {
        self.commit = commit;
        self
    }

    /// With passive health settings `health`.
    pub fn with_health(mut self, health: Health) -> ProxySpec {
        self.health = health;
        self
    }

    /// With active health checks `check`.
    pub fn with_check(mut self, check: ActiveCheck) -> ProxySpec {
        self.check = Some(check);
        self
    }

    /// The outcome of check `token` of slot `slot` (see `health`). Returns the new state if
    /// it changed; the pool's version then moves, so that the sync session sends the table
    /// (with the state) to the standby.
    pub fn check_done(&self, slot: usize, token: u64, result: CheckResult, took_us: u64, status: u16) -> Option<CheckState> {
        let (b, c) = (self.backends.get(slot)?, self.check.as_ref()?);
        let t = b.check.finish(token, result, took_us, status, c.rise, c.fall)?;
        self.bump();
        Some(t)
    }

    /// The backend for a new connection from `client` at `now` (None: none is usable).
    pub fn choose(&self, client: Ipv4Addr, now: Instant) -> Option<usize> {
        self.choose_in(DEFAULT_POOL, client, now)
    }
}

/// Which end of the proxy a half faces.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Side {
    /// Accepted on the listener: faces the client.
    Client,
    /// Opened by the engine: faces backend number `.0` of the listener's spec.
    Backend(u16),
    /// An active health check of backend slot `.0` (`health`): a local flow, never
    /// replicated, never linked.
    Check(u16),
}

/// One half of a proxied connection (see the module documentation).
#[derive(Clone, Debug)]
pub struct ProxyHalf {
    pub side: Side,
    /// What this half's peer sent, for the partner to send.
    pub rx: Pipe,
    /// The partner's pipe, adopted when the partner closed in order with bytes still to
    /// send (or its FIN): sent from here.
    adopted: Option<Box<Pipe>>,
    /// The partner is gone (or never came): nothing more is accepted from this half's peer.
    alone: bool,
    /// A client half's choice of backend (delayed binding, `bind`).
    pub binding: Binding,
    /// Where the bytes read before the backend was chosen end (a client half's first
    /// request or ClientHello, `mode = "http"` or `"tls"`; 0 otherwise). With `commit =
    /// "peer"` they were acknowledged as they came and replicated (the client's cwnd may
    /// not let it send the rest of the head before an ACK), and only what follows waits for
    /// the backend.
    pub head_end: u64,
    /// A backend half opened here: when its connect began (for the connect latency; not
    /// replicated: a connect resumed at a takeover is not timed).
    connect_at: Option<Instant>,
    /// A check half: its status line and verdict.
    pub probe: Probe,
}

/// Where a client half stands in choosing its backend.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Binding {
    /// Chosen (or `mode = "tcp"`, chosen at once; a backend half).
    Bound,
    /// Reading the first request or ClientHello.
    Reading,
    /// Read: the backend is to be chosen from pool `.0` (`u16::MAX`: the default pool) and its
    /// connection opened, right after this TCP call (`Kind::take_open`).
    Ready(u16),
    /// Refused: the answer to send, then close (0: none, 1: 400, 2: 431, 3: 503).
    Refused(u8),
}

/// The answers of [`Binding::Refused`], by code.
const REPLIES: [&[u8]; 4] = [b"", BAD_REQUEST, TOO_LARGE, UNAVAILABLE];

fn reply_code(r: &'static [u8]) -> u8 {
    REPLIES.iter().position(|x| *x == r).unwrap_or(0) as u8
}

impl ProxyHalf {
    fn new(side: Side, cap: usize) -> ProxyHalf {
        ProxyHalf { side, rx: Pipe::new(cap), adopted: None, alone: false, binding: Binding::Bound, head_end: 0, connect_at: None, probe: Probe::default() }
    }

    /// The half of a health check of backend slot `i` (`token`: `CheckHealth::begin`'s),
    /// started at `now`.
    pub fn check(i: usize, token: u64, now: Instant) -> ProxyHalf {
        ProxyHalf { connect_at: Some(now), probe: Probe::new(token), ..ProxyHalf::new(Side::Check(i as u16), 1) }
    }

    /// A check half's start.
    pub fn started(&self) -> Option<Instant> {
        self.connect_at
    }

    /// The half of a connection to backend slot `i`, its connect beginning at `now`.
    fn backend(i: usize, cap: usize, now: Instant) -> ProxyHalf {
        ProxyHalf { connect_at: Some(now), ..ProxyHalf::new(Side::Backend(i as u16), cap) }
    }

    /// What a refused client is answered.
    fn reply(&self) -> Option<&'static [u8]> {
        match self.binding {
            Binding::Refused(c) => Some(REPLIES.get(usize::from(c)).copied().unwrap_or_default()),
            _ => None,
        }
    }

    /// Whether the partner is gone.
    pub fn is_alone(&self) -> bool {
        self.alone
    }

    /// The adopted pipe, if any.
    pub fn adopted(&self) -> Option<&Pipe> {
        self.adopted.as_deref()
    }
}

/// A proxy half bound for one TCP call: with its partner while linked (on the active),
/// alone on the standby's replay and after the partner is gone.
pub struct ProxyConn<'a> {
    me: &'a mut ProxyHalf,
    partner: Option<&'a mut ProxyHalf>,
    spec: &'a ProxySpec,
}

impl ProxyConn<'_> {
    /// Where this half's output comes from: the partner's pipe, or the adopted one.
    fn tx(&self) -> Option<&Pipe> {
        match &self.partner {
            Some(p) => Some(&p.rx),
            None => self.me.adopted.as_deref(),
        }
    }

    /// `commit = "peer"` and a relaying half (not a health check).
    fn peer_commit(&self) -> bool {
        self.spec.commit == Commit::Peer && !matches!(self.me.side, Side::Check(_))
    }
}

impl ProxyConn<'_> {
    /// A client half still choosing its backend took bytes: decide once they suffice.
    fn bind_step(&mut self) {
        let Some(head) = self.me.rx.head() else {
            self.refuse(BAD_REQUEST);
            return;
        };
        match self.spec.decide(head) {
            Decision::More => {}
            Decision::Pool(p) => {
                self.me.binding = Binding::Ready(p);
                self.me.head_end = self.me.rx.received;
            }
            Decision::Refuse(r) => self.refuse(r),
        }
    }

    /// A check half's request (`health`): what it sends, then its FIN (a TCP check: its
    /// FIN at once; an HTTP check: once the status line is decided).
    fn check_request(&self) -> Option<(&[u8], bool)> {
        let Side::Check(_) = self.me.side else { return None };
        let Some(c) = self.spec.check.as_ref() else { return Some((b"", true)) };
        let closed = c.kind == CheckKind::Tcp || self.me.probe.verdict.is_some();
        Some((c.request(), closed))
    }

    fn refuse(&mut self, r: &'static [u8]) {
        let r = if self.spec.mode == Mode::Http { r } else { b"" };
        self.me.binding = Binding::Refused(reply_code(r));
        self.me.alone = true;
    }
}

impl ByteStream for ProxyConn<'_> {
    fn on_recv(&mut self, data: &[u8]) -> usize {
        if let Side::Check(_) = self.me.side {
            // A check reads its status line and discards the rest (its window stays open, so
            // the backend finishes and closes).
            if let Some(c) = self.spec.check.as_ref().filter(|c| c.kind == CheckKind::Http) {
                self.me.probe.on_response(data, c.expect);
            }
            return data.len();
        }
        if self.me.alone || self.me.rx.peer_fin {
            return 0;
        }
        // Linked, or still choosing its backend: bounded by the room left (the window
        // advertised). Unlinked otherwise: the standby replaying what the active accepted
        // (see the module documentation).
        let choosing = matches!(self.me.binding, Binding::Reading | Binding::Ready(_));
        let n = if self.partner.is_some() || choosing { data.len().min(self.me.rx.room()) } else { data.len() };
        self.me.rx.push(&data[..n]);
        if self.me.binding == Binding::Reading && n > 0 {
            self.bind_step();
        }
        n
    }

    fn on_peer_fin(&mut self) {
        self.me.rx.peer_fin = true;
    }

    fn tx_end(&self) -> u64 {
        if let Some((r, _)) = self.check_request() {
            return r.len() as u64;
        }
        if let Some(r) = self.me.reply() {
            return r.len() as u64;
        }
        self.tx().map_or(0, |p| p.received)
    }

    fn tx_closed(&self) -> bool {
        if let Some((_, closed)) = self.check_request() {
            return closed;
        }
        if self.me.reply().is_some() {
            return true;
        }
        match self.tx() {
            Some(p) => p.peer_fin || (self.me.alone && self.partner.is_none()),
            None => self.me.alone,
        }
    }

    fn read_at(&self, off: u64, buf: &mut [u8]) -> usize {
        let check = self.check_request().map(|(r, _)| r);
        if let Some(r) = check.or_else(|| self.me.reply()) {
            let at = (off as usize).min(r.len());
            let n = buf.len().min(r.len() - at);
            buf[..n].copy_from_slice(&r[at..at + n]);
            return n;
        }
        self.tx().map_or(0, |p| p.read_at(off, buf))
    }

    fn on_acked(&mut self, off: u64) {
        let past = self.peer_commit();
        let pipe = match (&mut self.partner, &mut self.me.adopted) {
            (Some(p), _) => &mut p.rx,
            (None, Some(a)) => &mut **a,
            (None, None) => return,
        };
        if past {
            pipe.release_past(off);
        } else {
            pipe.release(off);
        }
    }

    fn ack_limit(&self) -> Option<u64> {
        // Alone (the partner is gone, or the client was refused), nothing more is relayed:
        // what was received is acknowledged (it goes nowhere, as with `standby`). Still
        // reading the first request or ClientHello: acknowledged (and replicated) as it
        // comes, so that the client may send all of it.
        if !self.peer_commit() || self.me.alone || self.me.binding == Binding::Reading {
            return None;
        }
        Some(self.me.rx.released.max(self.me.head_end))
    }

    fn take_skipped(&mut self) -> u64 {
        std::mem::take(&mut self.me.rx.skip)
    }

    fn catch_up_end(&self) -> u64 {
        let end = self.tx_end();
        if !self.peer_commit() {
            return end;
        }
        // The dead engine relayed what the partner's peer sent within the window the
        // partner advertised from what it had acknowledged, whose record the replica holds:
        // at most `cap` bytes past what the pipe released.
        self.tx().map_or(end, |p| end.max(p.released.saturating_add(p.cap as u64)))
    }

    fn rx_space(&self) -> usize {
        if let Side::Check(_) = self.me.side {
            return CHECK_WINDOW;
        }
        if self.me.alone || self.me.rx.peer_fin {
            return 0;
        }
        self.me.rx.room()
    }
}

/// The window a check flow advertises (it discards what it reads).
const CHECK_WINDOW: usize = 65535;

#[cfg(test)]
mod tests;
