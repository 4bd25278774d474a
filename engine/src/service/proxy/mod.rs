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
//! **Ends.** When one half closes in order, the other keeps what it still has to send: it
//! adopts the closing half's pipe ([`Kind::adopt`]) and sends it, then its FIN; it accepts
//! nothing more from its own peer (nowhere to send it). When one half is reset, the other is
//! reset too. A client whose backend cannot be reached (no backend, no route, no answer) gets
//! a FIN at once, as HAProxy closes a TCP-mode client whose server connect failed.
//!
//! Balancing ([`Balance`]): round robin, least connections (counted over every worker of the
//! engine), or a rendezvous hash of the client address. The choice is made on the active and
//! is not replayed: the backend half is a flow of its own, replicated with its address.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use super::{ByteStream, Kind, LinkEnd, Open};
use crate::time::{Duration, Instant};

mod bind;
pub use self::bind::{Decision, Mode, Pool, BAD_REQUEST, TOO_LARGE, UNAVAILABLE};

/// Default largest first request head (HTTP) or ClientHello record (TLS) read for the choice.
pub const DEFAULT_MAX_HEAD: usize = 16 * 1024;

/// Default bytes buffered per direction per connection.
pub const DEFAULT_BUF_SIZE: usize = 256 * 1024;
/// Default SYN retransmissions toward a backend (1 s initial RTO: it gives up after 7 s).
pub const DEFAULT_CONNECT_RETRIES: u8 = 2;

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
#[derive(Debug)]
pub struct Backend {
    pub addr: SocketAddrV4,
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
}

impl Backend {
    pub fn new(addr: SocketAddrV4) -> Backend {
        Backend {
            addr,
            up: AtomicBool::new(true),
            fails: AtomicU32::new(0),
            down_until: AtomicU64::new(0),
            marked_down: AtomicU64::new(0),
            seen: AtomicU64::new(0),
            active: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// Whether new connections may go to it at `now`.
    pub fn usable(&self, now: Instant) -> bool {
        self.seen.fetch_max(now.0, Relaxed);
        self.up.load(Relaxed) && now.0 >= self.down_until.load(Relaxed)
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
    pub backends: Vec<Backend>,
    pub balance: Balance,
    /// The address backend connections come from: one of the engine's VIPs, of the
    /// listener's group.
    pub source: Ipv4Addr,
    /// Bytes buffered per direction per connection.
    pub buf_size: usize,
    pub health: Health,
    /// SYN retransmissions before a backend connection gives up (its connect timeout: with
    /// a 1 s initial RTO, 2 gives up 7 s after the first SYN).
    pub connect_retries: u8,
    /// How the backend is chosen ([`Mode`]; `Tcp`: at once).
    pub mode: Mode,
    /// Pools matched by host and path, in order (`Http`, `Tls`).
    pub pools: Vec<Pool>,
    /// The backends of whatever no pool matches (indices into `backends`; all by default).
    pub default_pool: Vec<usize>,
    /// Largest first request head or ClientHello read before the choice (at most `buf_size`).
    pub max_head: usize,
    /// Round-robin position.
    next: AtomicU64,
}

impl ProxySpec {
    pub fn new(backends: Vec<SocketAddrV4>, balance: Balance, source: Ipv4Addr, buf_size: usize) -> ProxySpec {
        ProxySpec {
            default_pool: (0..backends.len()).collect(),
            mode: Mode::Tcp,
            pools: Vec::new(),
            max_head: DEFAULT_MAX_HEAD.min(buf_size.max(1)),
            backends: backends.into_iter().map(Backend::new).collect(),
            balance,
            source,
            buf_size: buf_size.max(1),
            health: Health::default(),
            connect_retries: DEFAULT_CONNECT_RETRIES,
            next: AtomicU64::new(0),
        }
    }

    /// With passive health settings `health`.
    pub fn with_health(mut self, health: Health) -> ProxySpec {
        self.health = health;
        self
    }

    /// The backend for a new connection from `client` at `now` (None: none is usable).
    pub fn choose(&self, client: Ipv4Addr, now: Instant) -> Option<usize> {
        self.choose_in(&self.default_pool, client, now)
    }

    /// [`ProxySpec::choose`] among the backends `pool` (indices into `backends`).
    pub fn choose_in(&self, pool: &[usize], client: Ipv4Addr, now: Instant) -> Option<usize> {
        let n = pool.len();
        let up = |i: usize| self.backends.get(i).is_some_and(|b| b.usable(now));
        match self.balance {
            Balance::RoundRobin => {
                let start = self.next.fetch_add(1, Relaxed) as usize;
                (0..n).map(|k| pool[(start + k) % n]).find(|&i| up(i))
            }
            Balance::LeastConn => {
                let start = self.next.fetch_add(1, Relaxed) as usize;
                (0..n).map(|k| pool[(start + k) % n]).filter(|&i| up(i)).min_by_key(|&i| self.backends[i].active.load(Relaxed))
            }
            Balance::Hash => pool.iter().copied().filter(|&i| up(i)).max_by_key(|&i| rendezvous(client, self.backends[i].addr)),
        }
    }
}

/// Rendezvous weight of (client, backend): a 64-bit mix (splitmix64 finalizer) of both.
fn rendezvous(client: Ipv4Addr, backend: SocketAddrV4) -> u64 {
    let mut x = (u64::from(u32::from(client)) << 32) ^ (u64::from(u32::from(*backend.ip())) << 16) ^ u64::from(backend.port());
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// One direction's bytes: what a half's peer sent, held until the other half's peer
/// acknowledged them. A ring indexed by stream offset (`off % cap`), allocated on the first
/// byte so an idle connection costs no buffer.
#[derive(Clone, Default)]
pub struct Pipe {
    buf: Box<[u8]>,
    cap: usize,
    /// Stream offset one past the last byte received (the other half's `tx_end`).
    pub received: u64,
    /// Bytes the other half's peer acknowledged (never above `received`).
    pub released: u64,
    /// This half's peer sent FIN: after `received`, the other half sends its FIN.
    pub peer_fin: bool,
}

impl fmt::Debug for Pipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipe").field("cap", &self.cap).field("received", &self.received).field("released", &self.released).field("peer_fin", &self.peer_fin).finish()
    }
}

impl Pipe {
    fn new(cap: usize) -> Pipe {
        Pipe { cap: cap.max(1), ..Pipe::default() }
    }

    /// Bytes held, not yet acknowledged by the other half's peer.
    pub fn held(&self) -> u64 {
        self.received - self.released
    }

    fn room(&self) -> usize {
        self.cap.saturating_sub(self.held() as usize)
    }

    /// Append (the ring overwrites what lies `cap` behind: the caller bounds what it adds).
    fn push(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if self.buf.is_empty() {
            self.buf = vec![0u8; self.cap].into_boxed_slice();
        }
        let skip = data.len().saturating_sub(self.cap);
        let mut off = self.received + skip as u64;
        for chunk in data[skip..].chunks(self.cap) {
            let start = (off % self.cap as u64) as usize;
            let first = chunk.len().min(self.cap - start);
            self.buf[start..start + first].copy_from_slice(&chunk[..first]);
            self.buf[..chunk.len() - first].copy_from_slice(&chunk[first..]);
            off += chunk.len() as u64;
        }
        self.received += data.len() as u64;
    }

    /// Every byte received, if all of them are still held in order from offset 0 (a client's
    /// first bytes before its backend is chosen: nothing was sent yet, and at most `cap`).
    fn head(&self) -> Option<&[u8]> {
        (self.released == 0 && self.received as usize <= self.cap).then(|| &self.buf[..(self.received as usize).min(self.buf.len())])
    }

    /// The first offset the ring still holds.
    fn first_held(&self) -> u64 {
        self.received.saturating_sub(self.cap as u64).max(self.released)
    }

    fn read_at(&self, off: u64, out: &mut [u8]) -> usize {
        if off < self.first_held() || off >= self.received || self.buf.is_empty() {
            return 0;
        }
        let n = out.len().min((self.received - off) as usize);
        let start = (off % self.cap as u64) as usize;
        let first = n.min(self.cap - start);
        out[..first].copy_from_slice(&self.buf[start..start + first]);
        out[first..n].copy_from_slice(&self.buf[..n - first]);
        n
    }

    fn release(&mut self, off: u64) {
        let off = off.min(self.received);
        if off > self.released {
            self.released = off;
        }
    }

    /// `received u64 | released u64 | peer_fin u8 | held bytes [first_held, received)`.
    fn image(&self, out: &mut Vec<u8>) {
        let first = self.first_held();
        out.extend_from_slice(&self.received.to_le_bytes());
        out.extend_from_slice(&first.to_le_bytes());
        out.push(self.peer_fin as u8);
        out.extend_from_slice(&(self.received - first).to_le_bytes());
        let mut at = first;
        let mut chunk = [0u8; 512];
        while at < self.received {
            let n = self.read_at(at, &mut chunk);
            if n == 0 {
                break;
            }
            out.extend_from_slice(&chunk[..n]);
            at += n as u64;
        }
    }

    /// Parse [`Pipe::image`] from the front of `b`; returns the pipe and the rest.
    fn from_image(cap: usize, b: &[u8]) -> Option<(Pipe, &[u8])> {
        let u64_at = |o: usize| b.get(o..o + 8).and_then(|s| s.try_into().ok()).map(u64::from_le_bytes);
        let (received, released, peer_fin, len) = (u64_at(0)?, u64_at(8)?, *b.get(16)?, u64_at(17)?);
        if released > received || received - released != len || len > cap as u64 || peer_fin > 1 {
            return None;
        }
        let bytes = b.get(25..25 + len as usize)?;
        let mut p = Pipe::new(cap);
        p.received = released;
        p.released = released;
        p.push(bytes);
        p.peer_fin = peer_fin == 1;
        Some((p, &b[25 + len as usize..]))
    }
}

/// Which end of the proxy a half faces.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Side {
    /// Accepted on the listener: faces the client.
    Client,
    /// Opened by the engine: faces backend number `.0` of the listener's spec.
    Backend(u16),
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
        ProxyHalf { side, rx: Pipe::new(cap), adopted: None, alone: false, binding: Binding::Bound }
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
                let at = self.spec.pools.iter().position(|x| x.backends == p).map_or(u16::MAX, |i| i as u16);
                self.me.binding = Binding::Ready(at);
            }
            Decision::Refuse(r) => self.refuse(r),
        }
    }

    fn refuse(&mut self, r: &'static [u8]) {
        let r = if self.spec.mode == Mode::Http { r } else { b"" };
        self.me.binding = Binding::Refused(reply_code(r));
        self.me.alone = true;
    }
}

impl ByteStream for ProxyConn<'_> {
    fn on_recv(&mut self, data: &[u8]) -> usize {
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
        if let Some(r) = self.me.reply() {
            return r.len() as u64;
        }
        self.tx().map_or(0, |p| p.received)
    }

    fn tx_closed(&self) -> bool {
        if self.me.reply().is_some() {
            return true;
        }
        match self.tx() {
            Some(p) => p.peer_fin || (self.me.alone && self.partner.is_none()),
            None => self.me.alone,
        }
    }

    fn read_at(&self, off: u64, buf: &mut [u8]) -> usize {
        if let Some(r) = self.me.reply() {
            let at = (off as usize).min(r.len());
            let n = buf.len().min(r.len() - at);
            buf[..n].copy_from_slice(&r[at..at + n]);
            return n;
        }
        self.tx().map_or(0, |p| p.read_at(off, buf))
    }

    fn on_acked(&mut self, off: u64) {
        match (&mut self.partner, &mut self.me.adopted) {
            (Some(p), _) => p.rx.release(off),
            (None, Some(a)) => a.release(off),
            (None, None) => {}
        }
    }

    fn rx_space(&self) -> usize {
        if self.me.alone || self.me.rx.peer_fin {
            return 0;
        }
        self.me.rx.room()
    }
}

/// The `proxy` kind (see the module documentation).
pub struct ProxyKind;

/// The spec of a state bound to a non-proxy listener (cannot occur; see `Kind`).
static DETACHED: std::sync::OnceLock<Arc<ProxySpec>> = std::sync::OnceLock::new();

impl Kind for ProxyKind {
    const NAME: &'static str = "proxy";
    const IMAGE_TAG: u8 = 3;
    const SYN_WINDOW_IS_ROOM: bool = true;
    type Spec = Arc<ProxySpec>;
    type State = ProxyHalf;
    type Counters = ();
    type Conn<'a> = ProxyConn<'a>;

    fn new_state(spec: &Arc<ProxySpec>) -> ProxyHalf {
        let mut h = ProxyHalf::new(Side::Client, spec.buf_size);
        if spec.mode != Mode::Tcp {
            h.binding = Binding::Reading;
        }
        h
    }

    fn bind<'a>(state: &'a mut ProxyHalf, spec: &'a Arc<ProxySpec>, _stats: &'a mut ()) -> ProxyConn<'a> {
        ProxyConn { me: state, partner: None, spec }
    }

    fn bind_linked<'a>(state: &'a mut ProxyHalf, partner: Option<&'a mut ProxyHalf>, spec: &'a Arc<ProxySpec>, _stats: &'a mut ()) -> ProxyConn<'a> {
        ProxyConn { me: state, partner, spec }
    }

    fn detached_spec() -> &'static Arc<ProxySpec> {
        DETACHED.get_or_init(|| Arc::new(ProxySpec::new(Vec::new(), Balance::RoundRobin, Ipv4Addr::UNSPECIFIED, DEFAULT_BUF_SIZE)))
    }

    fn peer_fin(state: &ProxyHalf) -> bool {
        state.rx.peer_fin
    }

    /// `side u8 (0 client, 1 backend) | backend u16 | alone u8 | binding u8 | its arg u16 |
    /// rx pipe | adopted u8 | [pipe]`.
    fn image(state: &ProxyHalf, out: &mut Vec<u8>) {
        let (side, backend) = match state.side {
            Side::Client => (0u8, 0u16),
            Side::Backend(b) => (1, b),
        };
        out.push(side);
        out.extend_from_slice(&backend.to_le_bytes());
        out.push(state.alone as u8);
        let (tag, arg) = match state.binding {
            Binding::Bound => (0u8, 0u16),
            Binding::Reading => (1, 0),
            Binding::Ready(p) => (2, p),
            Binding::Refused(c) => (3, u16::from(c)),
        };
        out.push(tag);
        out.extend_from_slice(&arg.to_le_bytes());
        state.rx.image(out);
        match &state.adopted {
            None => out.push(0),
            Some(p) => {
                out.push(1);
                p.image(out);
            }
        }
    }

    fn from_image(spec: &Arc<ProxySpec>, b: &[u8]) -> Option<ProxyHalf> {
        let (&side, b) = b.split_first()?;
        let backend = u16::from_le_bytes(b.get(..2)?.try_into().ok()?);
        let (&alone, b) = b.get(2..)?.split_first()?;
        let side = match side {
            0 => Side::Client,
            1 if usize::from(backend) < spec.backends.len() => Side::Backend(backend),
            _ => return None,
        };
        if alone > 1 {
            return None;
        }
        let (&tag, b) = b.split_first()?;
        let arg = u16::from_le_bytes(b.get(..2)?.try_into().ok()?);
        let b = b.get(2..)?;
        let binding = match tag {
            0 => Binding::Bound,
            1 => Binding::Reading,
            2 if arg == u16::MAX || usize::from(arg) < spec.pools.len() => Binding::Ready(arg),
            3 if usize::from(arg) < REPLIES.len() => Binding::Refused(arg as u8),
            _ => return None,
        };
        let (rx, b) = Pipe::from_image(spec.buf_size, b)?;
        let (&has, b) = b.split_first()?;
        let adopted = match has {
            0 if b.is_empty() => None,
            1 => {
                let (p, rest) = Pipe::from_image(spec.buf_size, b)?;
                if !rest.is_empty() {
                    return None;
                }
                Some(Box::new(p))
            }
            _ => return None,
        };
        Some(ProxyHalf { side, rx, adopted, alone: alone == 1, binding })
    }

    fn on_accept(spec: &Arc<ProxySpec>, state: &mut ProxyHalf, client: Ipv4Addr, now: Instant) -> Option<Open<ProxyHalf>> {
        if state.binding != Binding::Bound {
            return None; // delayed binding: after the first bytes (`take_open`)
        }
        let Some(i) = spec.choose(client, now) else {
            return Some(Open { from: spec.source, to: None, state: ProxyHalf::new(Side::Client, spec.buf_size) });
        };
        let b = &spec.backends[i];
        Some(Open { from: spec.source, to: Some(b.addr), state: ProxyHalf::new(Side::Backend(i as u16), spec.buf_size) })
    }

    fn take_open(spec: &Arc<ProxySpec>, state: &mut ProxyHalf, client: Ipv4Addr, now: Instant) -> Option<Open<ProxyHalf>> {
        let Binding::Ready(p) = state.binding else { return None };
        let pool = match spec.pools.get(usize::from(p)) {
            Some(pool) => &pool.backends,
            None => &spec.default_pool,
        };
        let Some(i) = spec.choose_in(pool, client, now) else {
            state.binding = Binding::Refused(reply_code(spec.unavailable()));
            return Some(Open { from: spec.source, to: None, state: ProxyHalf::new(Side::Client, spec.buf_size) });
        };
        state.binding = Binding::Bound;
        Some(Open { from: spec.source, to: Some(spec.backends[i].addr), state: ProxyHalf::new(Side::Backend(i as u16), spec.buf_size) })
    }

    fn syn_retries(spec: &Arc<ProxySpec>) -> Option<u8> {
        Some(spec.connect_retries)
    }

    fn opened(spec: &Arc<ProxySpec>, state: &ProxyHalf) {
        if let Side::Backend(i) = state.side {
            if let Some(b) = spec.backends.get(usize::from(i)) {
                b.active.fetch_add(1, Relaxed);
                b.opened.fetch_add(1, Relaxed);
            }
        }
    }

    fn resumed(spec: &Arc<ProxySpec>, state: &ProxyHalf) {
        if let Side::Backend(i) = state.side {
            if let Some(b) = spec.backends.get(usize::from(i)) {
                b.active.fetch_add(1, Relaxed);
            }
        }
    }

    fn closed(spec: &Arc<ProxySpec>, state: &ProxyHalf, connected: bool, now: Instant) {
        if let Side::Backend(i) = state.side {
            if let Some(b) = spec.backends.get(usize::from(i)) {
                let _ = b.active.fetch_update(Relaxed, Relaxed, |v| v.checked_sub(1));
                b.outcome(connected, now, spec.health);
            }
        }
    }

    fn adopt(state: &mut ProxyHalf, closing: &mut ProxyHalf, acked: u64) {
        state.alone = true;
        let mut p = std::mem::take(&mut closing.rx);
        // What this half's peer acknowledged of it (on a standby, the partner's releases were
        // not replayed; the ring holds the last `cap` bytes, all still valid).
        p.release(acked.max(p.received.saturating_sub(p.cap as u64)));
        if p.held() == 0 {
            p.buf = Box::new([]); // its end and FIN are all that matter now
        }
        state.adopted = Some(Box::new(p));
    }

    fn partner_ended(state: &mut ProxyHalf, end: LinkEnd) -> bool {
        state.alone = true;
        // A reset propagates; an orderly end or a backend that never answered ends with our
        // FIN after what is queued (`tx_closed`).
        end == LinkEnd::Reset
    }

    fn resume_linked(state: &mut ProxyHalf, partner_acked: u64) {
        // Linked, so its backend was chosen and opened (the standby never saw the choice).
        if let Binding::Ready(_) = state.binding {
            state.binding = Binding::Bound;
        }
        // What the partner's peer acknowledged of our pipe (its replicated send progress;
        // the ring holds the last `cap` bytes, all of them still valid).
        let first = state.rx.received.saturating_sub(state.rx.cap as u64);
        state.rx.release(partner_acked.max(first));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Instant = Instant(1_000_000);
    static SP: std::sync::LazyLock<ProxySpec> = std::sync::LazyLock::new(|| spec(1, Balance::RoundRobin));

    #[test]
    fn a_backend_that_keeps_failing_rests_for_fail_timeout() {
        let s = spec(2, Balance::RoundRobin).with_health(Health { max_fails: 2, fail_timeout: Duration::from_secs(5) });
        let b = &s.backends[0];
        b.outcome(false, T0, s.health);
        assert!(b.usable(T0), "one failure is not enough");
        b.outcome(true, T0, s.health);
        b.outcome(false, T0, s.health);
        assert!(b.usable(T0), "a success clears the count");
        b.outcome(false, T0, s.health);
        assert!(!b.usable(T0) && b.usable(T0 + Duration::from_secs(5)));
        assert_eq!((b.failed.load(Relaxed), b.marked_down.load(Relaxed)), (3, 1));
        assert!((0..4).all(|_| s.choose(Ipv4Addr::LOCALHOST, T0) == Some(1)), "only the other one meanwhile");
        let never = spec(1, Balance::RoundRobin).with_health(Health { max_fails: 0, ..Health::default() });
        (0..10).for_each(|_| never.backends[0].outcome(false, T0, never.health));
        assert!(never.backends[0].usable(T0), "max_fails = 0: never marked down");
    }

    fn spec(n: usize, balance: Balance) -> ProxySpec {
        let b = (0..n).map(|i| SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 10 + i as u8), 80)).collect();
        ProxySpec::new(b, balance, Ipv4Addr::new(10, 0, 0, 1), 8)
    }

    #[test]
    fn pipes_relay_both_ways_bounded() {
        let mut c = ProxyHalf::new(Side::Client, 8);
        let mut b = ProxyHalf::new(Side::Backend(0), 8);
        {
            let mut cc = ProxyConn { me: &mut c, partner: Some(&mut b), spec: &SP };
            assert_eq!(cc.rx_space(), 8);
            assert_eq!(cc.on_recv(b"GET / HTTP"), 8, "bounded by the pipe");
            assert_eq!(cc.rx_space(), 0);
            assert_eq!(cc.tx_end(), 0, "nothing from the backend yet");
        }
        {
            let mut bc = ProxyConn { me: &mut b, partner: Some(&mut c), spec: &SP };
            assert_eq!(bc.tx_end(), 8);
            let mut buf = [0u8; 16];
            assert_eq!(bc.read_at(0, &mut buf), 8);
            assert_eq!(&buf[..8], b"GET / HT");
            bc.on_acked(5);
            assert_eq!(bc.read_at(0, &mut buf), 0, "released");
            assert_eq!(bc.on_recv(b"200"), 3);
        }
        let mut cc = ProxyConn { me: &mut c, partner: Some(&mut b), spec: &SP };
        assert_eq!(cc.rx_space(), 5);
        assert_eq!(cc.on_recv(b"TP"), 2, "wraps the ring");
        assert_eq!(cc.tx_end(), 3);
        assert!(!cc.tx_closed());
    }

    #[test]
    fn half_close_and_adoption() {
        let mut c = ProxyHalf::new(Side::Client, 16);
        let mut b = ProxyHalf::new(Side::Backend(0), 16);
        ProxyConn { me: &mut c, partner: Some(&mut b), spec: &SP }.on_peer_fin();
        assert!(ProxyConn { me: &mut b, partner: Some(&mut c), spec: &SP }.tx_closed(), "the client's FIN goes on to the backend");
        assert_eq!(ProxyConn { me: &mut c, partner: Some(&mut b), spec: &SP }.rx_space(), 0);
        // The backend answers and closes; then the backend half ends in order.
        let mut bc = ProxyConn { me: &mut b, partner: Some(&mut c), spec: &SP };
        assert_eq!(bc.on_recv(b"reply"), 5);
        bc.on_peer_fin();
        ProxyKind::adopt(&mut c, &mut b, 0);
        let mut cc = ProxyConn { me: &mut c, partner: None, spec: &SP };
        assert_eq!(cc.tx_end(), 5);
        let mut buf = [0u8; 8];
        assert_eq!(cc.read_at(0, &mut buf), 5);
        assert_eq!(&buf[..5], b"reply");
        assert!(cc.tx_closed());
        assert_eq!(cc.on_recv(b"more"), 0, "nowhere to send it");
        cc.on_acked(5);
        assert_eq!(c.adopted().map(|p| p.released), Some(5));
    }

    #[test]
    fn alone_without_backend_closes_at_once() {
        let mut c = ProxyHalf::new(Side::Client, 16);
        assert!(!ProxyKind::partner_ended(&mut c, LinkEnd::NeverConnected));
        let cc = ProxyConn { me: &mut c, partner: None, spec: &SP };
        assert!(cc.tx_closed());
        assert_eq!(cc.tx_end(), 0);
        assert_eq!(cc.rx_space(), 0);
        let mut c = ProxyHalf::new(Side::Client, 16);
        assert!(ProxyKind::partner_ended(&mut c, LinkEnd::Reset), "a reset propagates");
    }

    #[test]
    fn replay_alone_takes_everything_and_keeps_the_last_cap_bytes() {
        let mut c = ProxyHalf::new(Side::Client, 4);
        let mut cc = ProxyConn { me: &mut c, partner: None, spec: &SP };
        assert_eq!(cc.on_recv(b"abcdef"), 6);
        assert_eq!(cc.on_recv(b"gh"), 2);
        ProxyKind::resume_linked(&mut c, 1);
        assert_eq!(c.rx.released, 4, "the ring holds the last 4 bytes; all before were delivered");
        let mut b = ProxyHalf::new(Side::Backend(0), 4);
        let bc = ProxyConn { me: &mut b, partner: Some(&mut c), spec: &SP };
        let mut buf = [0u8; 8];
        assert_eq!(bc.read_at(4, &mut buf), 4);
        assert_eq!(&buf[..4], b"efgh");
        assert_eq!(bc.read_at(3, &mut buf), 0);
    }

    #[test]
    fn image_round_trip_and_refusals() {
        let sp = Arc::new(spec(2, Balance::RoundRobin));
        let mut c = ProxyHalf::new(Side::Backend(1), 8);
        let mut p = ProxyHalf::new(Side::Client, 8);
        {
            let mut cc = ProxyConn { me: &mut c, partner: Some(&mut p), spec: &SP };
            cc.on_recv(b"0123456");
        }
        ProxyConn { me: &mut p, partner: Some(&mut c), spec: &SP }.on_acked(2);
        ProxyConn { me: &mut p, partner: Some(&mut c), spec: &SP }.on_recv(b"zz");
        ProxyKind::adopt(&mut c, &mut p, 0);
        let mut img = Vec::new();
        ProxyKind::image(&c, &mut img);
        let back = ProxyKind::from_image(&sp, &img).expect("decodes");
        assert_eq!(back.side, Side::Backend(1));
        assert!(back.alone);
        assert_eq!((back.rx.received, back.rx.released), (7, 2));
        let mut x = [0u8; 8];
        assert_eq!(back.rx.read_at(2, &mut x), 5);
        assert_eq!(&x[..5], b"23456");
        assert_eq!(back.adopted().map(|a| a.received), Some(2));
        for cut in 0..img.len() {
            assert!(ProxyKind::from_image(&sp, &img[..cut]).is_none(), "truncated at {cut}");
        }
        let mut bad = img.clone();
        bad[1] = 9; // backend 9 of 2
        assert!(ProxyKind::from_image(&sp, &bad).is_none());
        let mut long = img.clone();
        long.push(0);
        assert!(ProxyKind::from_image(&sp, &long).is_none());
    }

    #[test]
    fn balancing() {
        let s = spec(3, Balance::RoundRobin);
        let picks: Vec<_> = (0..6).map(|_| s.choose(Ipv4Addr::new(1, 2, 3, 4), T0).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        s.backends[1].up.store(false, Relaxed);
        assert!((0..6).all(|_| s.choose(Ipv4Addr::LOCALHOST, T0) != Some(1)), "a down backend gets nothing");

        let s = spec(3, Balance::LeastConn);
        s.backends[0].active.store(5, Relaxed);
        s.backends[1].active.store(1, Relaxed);
        s.backends[2].active.store(3, Relaxed);
        assert_eq!(s.choose(Ipv4Addr::LOCALHOST, T0), Some(1));

        let s = spec(4, Balance::Hash);
        let clients: Vec<Ipv4Addr> = (0..200u32).map(|i| Ipv4Addr::from(0x0a00_0000 + i)).collect();
        let before: Vec<_> = clients.iter().map(|&c| s.choose(c, T0).unwrap()).collect();
        assert_eq!(before, clients.iter().map(|&c| s.choose(c, T0).unwrap()).collect::<Vec<_>>(), "sticky");
        let mut seen = [0; 4];
        before.iter().for_each(|&b| seen[b] += 1);
        assert!(seen.iter().all(|&n| n > 20), "spread: {seen:?}");
        s.backends[2].up.store(false, Relaxed);
        for (c, b) in clients.iter().zip(&before) {
            let now = s.choose(*c, T0).unwrap();
            assert!(*b == 2 || now == *b, "only backend 2's clients move");
        }
        let none = spec(2, Balance::RoundRobin);
        none.backends.iter().for_each(|b| b.up.store(false, Relaxed));
        assert_eq!(none.choose(Ipv4Addr::LOCALHOST, T0), None);
    }
}
