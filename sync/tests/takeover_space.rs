//! Takeover over the whole space of a connection's life (issue 12, DESIGN §6).
//!
//! A deterministic simulation of the real code, with no DPDK, socket, thread or clock:
//! - a TCP client (the engine's own `Tcb`, active open, Linux's default timers) runs a
//!   scripted life: which requests it sends and when, whether and when it closes its side,
//!   whether its application stops reading (its window closes);
//! - engine A is the real `Stack` with the real `RingReplicator`, driven by the dataplane's
//!   own `Iteration`: each frame delivered to it is one `receive` (A may be killed right
//!   after it), and the rest of its pass at that instant (timers, replication tick, release)
//!   is one `finish`; its output is held by the dataplane's own `OutputHold`;
//! - A's "sync core" drains the ring, coalesces with the real `Coalescer` and ships the batch
//!   to standby B, which applies it with the real `Replicas::apply_batch` and acknowledges;
//!   the acknowledgement releases A's held output;
//! - the network delivers frames after a latency, and in the lossy variants drops,
//!   duplicates and reorders frames around the kill.
//!
//! For each life: one run without a kill counts its packet events n (a frame delivered to
//! either end). Then for every k = 0..=n, and in both cases — the last batch reached the
//! standby, or it did not — A is killed right after event k (its held output and the
//! records it had not shipped die with it), B takes over after the detection time (the
//! real `take_for_takeover` + `Stack::install`), and the run goes on to the end. Every run
//! must give the client exactly the bytes the service produces (computed here, independently
//! of the service), no RST in either direction, our FIN once and only after the last byte,
//! both ends closed (client CLOSED or TIME-WAIT, B's flow table empty), and it must end
//! within a bound of simulated time.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::IpAddr;
use std::sync::Arc;

use flowtwin_engine::commit::HOLD_ALL;
use flowtwin_engine::counters::Event;
use flowtwin_engine::iteration::{resume, Acked, Iteration, TAKEOVER_GRACE};
use flowtwin_engine::seq::SeqNum;
use flowtwin_engine::service::echo::EchoConfig;
use flowtwin_engine::service::object::{ObjectStore, StoreConfig};
use flowtwin_engine::service::ByteStream;
use flowtwin_engine::stack::{vrrp_mac, Listener, ServiceSpec, Stack, StackConfig, Vip};
use flowtwin_engine::tcp::{State, Tcb, TcpConfig};
use flowtwin_engine::time::{Duration, Instant};
use flowtwin_engine::wire::tcp::TcpPacket;
use flowtwin_engine::wire::ChecksumStatus;
use flowtwin_sync::coalesce::Coalescer;
use flowtwin_sync::delta;
use flowtwin_sync::ring::Record;
use flowtwin_sync::shadow::Replicas;
use flowtwin_sync::{worker_channel, worker_channel_with_backlog, RingReplicator, SyncStatus, WorkerLink};

mod common;
use common::{ClientOut, Held, CLIENT, VIP};

const CLIENT_PORT: u16 = 40000;
const HTTP: u16 = 80;
const ECHO: u16 = 7;

/// One-way latency between client and engine, and between the engines (µs).
const LAT_US: u64 = 100;
const SYNC_US: u64 = 30;
/// Time from A's death to B's takeover (heartbeat 5 ms × 3 misses).
const DETECT_US: u64 = 15_000;
/// Takeover grace (`iteration::TAKEOVER_GRACE`).
const GRACE_US: u64 = TAKEOVER_GRACE.micros();
/// The lossy variants disturb frames for at most this long after the kill (µs).
const FAULT_US: u64 = 100_000;
/// The simulation gives up on a run after this much simulated time.
/// A join snapshot stands for many flows: after this life's flow's image, the images of the
/// others take this long to cross the sync link (and the flow's later deltas wait behind
/// them).
const JOIN_BACKLOG_US: u64 = 2_000;
/// `handover_hold_ms` (default 500).
const HANDOVER_HOLD_US: u64 = 500_000;
/// How long past the grace a run looks for the end of a flow B has no image of.
const UNKNOWN_WAIT_US: u64 = 5_000_000;
const GIVE_UP_US: u64 = 120_000_000;

fn t0() -> u64 {
    1_000_000
}

fn stack_cfg() -> Arc<StackConfig> {
    Arc::new(StackConfig {
        vips: vec![Vip { addr: VIP, mac: vrrp_mac(1) }],
        listeners: vec![
            Listener { vip: VIP, port: HTTP, spec: ServiceSpec::Object(Arc::new(ObjectStore::empty(StoreConfig::default()))) },
            Listener { vip: VIP, port: ECHO, spec: ServiceSpec::Echo(EchoConfig { buf_size: 16 * 1024 }) },
        ],
        // The engine's defaults (delayed ACK, RTO, TIME-WAIT) as an operator runs it.
        tcp: TcpConfig::default(),
        flow_capacity: 64,
        isn_key: [7; 16],
        timer_tick: Duration::from_micros(100),
    })
}

/// The client's TCP: Linux's defaults where ours differ (40 ms delayed ACK is both).
fn client_tcp() -> TcpConfig {
    TcpConfig::default()
}

// ------------------------------------------------------------------ expected bytes
//
// Computed here from the documented formats, not by the service: the generated stream is
// SplitMix64 blocks of 64 KiB, each XORed with its block number (object.rs module docs).

fn splitmix_block() -> Vec<u8> {
    let mut out = Vec::with_capacity(1 << 16);
    let mut s: u64 = 0;
    while out.len() < 1 << 16 {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out
}

fn gen_body(n: usize) -> Vec<u8> {
    let block = splitmix_block();
    (0..n).map(|i| block[i % (1 << 16)] ^ (i >> 16) as u8).collect()
}

/// The response to `GET` (or `HEAD`) `/gen/<n>`, with `Connection: close` or keep-alive.
fn response(n: usize, close: bool, head: bool) -> Vec<u8> {
    let conn = if close { "close" } else { "keep-alive" };
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\nConnection: {conn}\r\n\r\n"
    )
    .into_bytes();
    if !head {
        r.extend_from_slice(&gen_body(n));
    }
    r
}

fn echo_bytes(n: usize) -> Vec<u8> {
    (0..n as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
}

// ------------------------------------------------------------------ lives

/// When the client sends its next request.
#[derive(Clone, Copy, Debug)]
enum Send {
    /// Everything at once (pipelined, or one request).
    AllAtOnce,
    /// Request i+1 once the responses to 0..=i have arrived whole (keep-alive).
    AfterEachResponse,
    /// Echo: the upload in chunks of this many bytes, a chunk whenever the previous one has
    /// been echoed back (so the upload is spread over the life).
    Chunks(usize),
}

/// When the client closes its sending side (its FIN).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Close {
    /// Right after its last request byte is queued (half-close).
    AfterSend,
    /// Once it has received this many bytes (with the server's FIN or not).
    AtReceived(usize),
    /// Only after the server's FIN (HTTP/1.0, `Connection: close`).
    AfterServerFin,
}

#[derive(Clone, Debug)]
struct Life {
    name: &'static str,
    port: u16,
    requests: Vec<Vec<u8>>,
    send: Send,
    close: Close,
    /// The byte stream the client must receive.
    expect: Vec<u8>,
    /// The client's receive buffer (its window) in bytes.
    rcv_buf: usize,
    /// The application stops reading once it has read this many bytes, for this long (µs).
    pause: Option<(usize, u64)>,
}

fn get(n: usize, version: &str, extra: &str) -> Vec<u8> {
    format!("GET /gen/{n} HTTP/{version}\r\nHost: vip\r\n{extra}\r\n").into_bytes()
}

fn lives() -> Vec<Life> {
    let base = |name, requests: Vec<Vec<u8>>, expect: Vec<u8>| Life {
        name,
        port: HTTP,
        requests,
        send: Send::AllAtOnce,
        close: Close::AfterServerFin,
        expect,
        rcv_buf: 256 * 1024,
        pause: None,
    };
    let keep = |sizes: &[usize]| -> Vec<u8> { sizes.iter().flat_map(|&n| response(n, false, false)).collect() };
    let mut v = Vec::with_capacity(16);
    // Handshake and one small request: kills with the SYN-ACK held, the request in flight,
    // the response held.
    v.push(Life { close: Close::AtReceived(response(100, false, false).len()), ..base("one request, client closes", vec![get(100, "1.1", "")], keep(&[100])) });
    v.push(base("HTTP/1.0", vec![get(20_000, "1.0", "")], response(20_000, true, false)));
    v.push(base("Connection: close", vec![get(30_000, "1.1", "Connection: close\r\n")], response(30_000, true, false)));
    // Our FIN queued behind more unsent data than the window lets out (the bug of issue 12).
    v.push(Life { rcv_buf: 16 * 1024, ..base("FIN behind unsent data", vec![get(120_000, "1.0", "")], response(120_000, true, false)) });
    v.push(Life {
        send: Send::AfterEachResponse,
        close: Close::AtReceived(keep(&[3000, 10, 5000]).len()),
        ..base("keep-alive, three requests", vec![get(3000, "1.1", ""), get(10, "1.1", ""), get(5000, "1.1", "")], keep(&[3000, 10, 5000]))
    });
    {
        let mut exp = keep(&[2000, 700]);
        exp.extend_from_slice(&response(1500, true, false));
        v.push(base(
            "pipelined, the last with Connection: close",
            vec![[get(2000, "1.1", ""), get(700, "1.1", ""), get(1500, "1.1", "Connection: close\r\n")].concat()],
            exp,
        ));
    }
    v.push(Life {
        close: Close::AtReceived(response(5000, false, true).len()),
        ..base("HEAD", vec![b"HEAD /gen/5000 HTTP/1.1\r\nHost: vip\r\n\r\n".to_vec()], response(5000, false, true))
    });
    // The client half-closes right after its request (CLOSE-WAIT, then our FIN: LAST-ACK).
    v.push(Life { close: Close::AfterSend, ..base("half-close after the request", vec![get(40_000, "1.1", "")], response(40_000, false, false)) });
    // The client closes while our response and FIN are in flight (CLOSING).
    v.push(Life {
        close: Close::AtReceived(response(8_000, true, false).len() - 3000),
        ..base("simultaneous close", vec![get(8_000, "1.0", "")], response(8_000, true, false))
    });
    // The client's window closes mid-response and stays closed across the kill.
    v.push(Life {
        rcv_buf: 8 * 1024,
        pause: Some((20_000, 40_000)),
        ..base("zero window", vec![get(60_000, "1.0", "")], response(60_000, true, false))
    });
    // Echo: upload in chunks, FIN mid-stream (the client's FIN reaches the service while
    // echoed bytes are still owed), the service closes after the last echoed byte.
    {
        let up = echo_bytes(40_000);
        v.push(Life {
            port: ECHO,
            send: Send::Chunks(4000),
            close: Close::AfterSend,
            ..base("echo, client FIN mid-stream", vec![up.clone()], up)
        });
    }
    // Echo, the client writing faster than the echo comes back: the service's buffer
    // fills, bytes wait in the engine's out-of-order store, the window closes and opens.
    {
        let up = echo_bytes(150_000);
        v.push(Life { port: ECHO, close: Close::AfterSend, ..base("echo, upload at once (service full)", vec![up.clone()], up) });
    }
    v
}

// ------------------------------------------------------------------ the client

struct App {
    life: Life,
    /// Request bytes queued to TCP so far.
    upload: Vec<u8>,
    next_req: usize,
    received: Vec<u8>,
    /// Bytes the application has read out of its receive buffer.
    read: usize,
    paused_until: Option<u64>,
    pause_done: bool,
    closed: bool,
    server_fin: bool,
    /// Cumulative response lengths (for `Send::AfterEachResponse`).
    resp_ends: Vec<usize>,
}

impl App {
    fn new(life: Life) -> App {
        let mut resp_ends = Vec::new();
        if let Send::AfterEachResponse = life.send {
            // Each response's length, from the expected stream's Content-Length headers.
            let mut at = 0;
            while at < life.expect.len() {
                let text = String::from_utf8_lossy(&life.expect[at..(at + 200).min(life.expect.len())]).to_string();
                let cl: usize = text.split("Content-Length: ").nth(1).unwrap().split("\r\n").next().unwrap().parse().unwrap();
                let hdr = text.find("\r\n\r\n").unwrap() + 4;
                at += hdr + cl;
                resp_ends.push(at);
            }
        }
        let mut a = App { life, upload: Vec::new(), next_req: 0, received: Vec::new(), read: 0, paused_until: None, pause_done: false, closed: false, server_fin: false, resp_ends };
        a.advance(0);
        a
    }

    /// The application's step: read what it may, queue requests, decide to close.
    fn advance(&mut self, now: u64) {
        if let Some(until) = self.paused_until {
            if now >= until {
                self.paused_until = None;
                self.pause_done = true;
            }
        }
        if self.paused_until.is_none() {
            let mut can = self.received.len();
            if let (Some((at, len)), false) = (self.life.pause, self.pause_done) {
                if self.read < at && can >= at {
                    can = at;
                    self.paused_until = Some(now + len);
                }
            }
            self.read = self.read.max(can);
        }
        match self.life.send {
            Send::AllAtOnce => {
                while self.next_req < self.life.requests.len() {
                    self.upload.extend_from_slice(&self.life.requests[self.next_req]);
                    self.next_req += 1;
                }
            }
            Send::AfterEachResponse => {
                while self.next_req < self.life.requests.len()
                    && (self.next_req == 0 || self.received.len() >= self.resp_ends[self.next_req - 1])
                {
                    self.upload.extend_from_slice(&self.life.requests[self.next_req]);
                    self.next_req += 1;
                }
            }
            Send::Chunks(c) => {
                let all = &self.life.requests[0];
                while self.upload.len() < all.len() && self.received.len() + c > self.upload.len() {
                    let end = (self.upload.len() + c).min(all.len());
                    let chunk = all[self.upload.len()..end].to_vec();
                    self.upload.extend_from_slice(&chunk);
                }
                self.next_req = if self.upload.len() == all.len() { 1 } else { 0 };
            }
        }
        let all_sent = self.next_req >= self.life.requests.len();
        self.closed |= match self.life.close {
            Close::AfterSend => all_sent,
            Close::AtReceived(n) => all_sent && self.received.len() >= n,
            Close::AfterServerFin => self.server_fin,
        };
    }
}

impl ByteStream for App {
    fn on_recv(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.rx_space());
        self.received.extend_from_slice(&data[..n]);
        n
    }
    fn on_peer_fin(&mut self) {
        self.server_fin = true;
    }
    fn tx_end(&self) -> u64 {
        self.upload.len() as u64
    }
    fn tx_closed(&self) -> bool {
        self.closed
    }
    fn read_at(&self, off: u64, buf: &mut [u8]) -> usize {
        let s = &self.upload[(off as usize).min(self.upload.len())..];
        let n = s.len().min(buf.len());
        buf[..n].copy_from_slice(&s[..n]);
        n
    }
    fn on_acked(&mut self, _off: u64) {}
    fn rx_space(&self) -> usize {
        self.life.rcv_buf.saturating_sub(self.received.len() - self.read)
    }
}

// ------------------------------------------------------------------ the engines

/// Engine A: stack, its ring toward the sync core, the sync core's coalescer.
struct Active {
    stack: Stack,
    out: Held,
    link: WorkerLink,
    coalescer: Coalescer,
    /// The sync core's peek buffer (a ring's worth of records), reused by every drain.
    peek: Vec<Record>,
    watermark: u64,
}

impl Active {
    /// `small_ring`: a ring of `SMALL_RING_RECORDS` and the least backlog, so that deltas
    /// meet a full ring (`ReplFull`: the flow is re-imaged, its output held meanwhile).
    fn new(cfg: &Arc<StackConfig>, now: Instant, small_ring: bool) -> Active {
        let (repl, link): (RingReplicator, WorkerLink) = if small_ring {
            worker_channel_with_backlog(0, SMALL_RING_RECORDS, 0)
        } else {
            worker_channel(0, RING_RECORDS)
        };
        let mut stack = Stack::new(cfg.clone(), now);
        stack.set_replicator(Box::new(repl));
        Active { stack, out: Held::default(), link, coalescer: Coalescer::default(), peek: vec![[0u64; 8]; RING_RECORDS], watermark: 0 }
    }

    /// The sync core's drain: every whole delta on the ring, coalesced into one batch.
    fn drain(&mut self) -> Option<Batch> {
        let peek = &mut self.peek;
        let got = self.link.consumer.peek_burst(peek);
        if got == 0 {
            return None;
        }
        let mut recs = Vec::new();
        self.coalescer.begin(&mut recs);
        let (mut used, mut first, mut last) = (0, 0, 0);
        while used < got {
            let p = delta::peek_header(&peek[used..got]).expect("our own producer writes whole deltas");
            self.coalescer.push(&p, &peek[used..used + p.records], &mut recs);
            if first == 0 {
                first = p.header.seq;
            }
            last = p.header.seq;
            used += p.records;
        }
        self.link.consumer.advance(used);
        Some(Batch { first, last, recs })
    }
}

/// Records of A's ring (and of the sync core's peek buffer).
const RING_RECORDS: usize = 1 << 16;
/// A ring that a burst of received bytes fills (a segment's `Data` is ~25 records).
const SMALL_RING_RECORDS: usize = 64;

struct Batch {
    first: u64,
    last: u64,
    recs: Vec<Record>,
}

/// Standby B: the replicas, then (after takeover) the stack that serves them.
struct Standby {
    replicas: Replicas,
    status: SyncStatus,
    stack: Option<Stack>,
    out: Held,
}

impl Standby {
    /// Take over: a stack with every replica installed. Returns whether B had any flow.
    fn take_over(&mut self, cfg: &Arc<StackConfig>, now: u64) -> Result<bool, String> {
        let mut bs = Stack::new(cfg.clone(), Instant(now));
        let flows = self.replicas.take_for_takeover(cfg, &self.status, 1);
        let any = flows.iter().any(|v| !v.is_empty());
        let (_, lost) = resume(&mut bs, Instant(now), flows.into_iter().flatten(), &mut self.out);
        if lost > 0 {
            return Err("install failed".into());
        }
        self.stack = Some(bs);
        Ok(any)
    }

    fn apply(&mut self, cfg: &StackConfig, b: &Batch) {
        self.replicas.apply_batch(cfg, &self.status, 0, (b.first, b.last), &b.recs, &|m| panic!("standby: {m}"));
    }
}

// ------------------------------------------------------------------ the simulation

/// How the network treats frames sent during a window of packet events around the kill.
#[derive(Clone, Copy, Debug)]
struct Faults {
    seed: u64,
    /// Packet events [from, to) whose frames may be dropped / duplicated / delayed.
    from: u64,
    to: u64,
}

impl Faults {
    /// Faults from three events before kill point `k` to twelve after it, seeded by the
    /// kill point and its case.
    fn around(k: u64, reached: bool) -> Faults {
        Faults { seed: k * 2 + reached as u64 + 1, from: k.saturating_sub(3), to: k + 12 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kill {
    /// Never (the run that counts the events).
    None,
    /// After packet event k; `reached`: A's unshipped records reach the standby.
    After { k: u64, reached: bool },
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum To {
    Engine,
    Client,
}

#[derive(Debug, Default)]
struct Outcome {
    events: u64,
    /// Simulated µs from the start to both ends closed.
    done_us: u64,
    /// A's flow state at the kill (None: no flow yet, or already gone).
    state_at_kill: Option<State>,
    caught_up: u64,
    resumed: u64,
    /// The standby joined after A's flow existed and had no image of it at the kill: nobody
    /// held its state, B reset it (allowed only then).
    reset_unknown: bool,
    /// ... and B's reset told the client (else it waits, having nothing to send).
    lost_reset: bool,
    lost_after_all_bytes: bool,
}

/// Frames in flight: (delivery time, send order, destination, frame), earliest first.
type Wire = BinaryHeap<Reverse<(u64, u64, To, Vec<u8>)>>;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.next() % 100 < pct
    }
}

/// A join of the standby: after packet event `at` (before any with 0), with its snapshot.
#[derive(Clone, Copy, Debug)]
struct Join {
    at: u64,
    /// The mutation: release everything until the standby is in sync (not strict from the
    /// join on).
    release_until_in_sync: bool,
}

impl Join {
    fn at(at: u64) -> Join {
        Join { at, release_until_in_sync: std::env::var_os("FT_SIM_MUTATE_JOIN").is_some() }
    }
}

/// The join: A's workers image every flow for the standby (token 1), B begins a join, and
/// from now on A's output waits for B's acknowledgements (strict mode).
fn join_now(act: &mut Active, b: &mut Standby, j: Join) {
    act.watermark = if j.release_until_in_sync { u64::MAX } else { 0 };
    act.stack.set_standby_acked(act.watermark);
    act.stack.request_snapshot(1);
    b.replicas.begin_join(1);
}

fn run(life: &Life, kill: Kill, faults: Option<Faults>) -> Result<Outcome, String> {
    run_with(life, kill, faults, None, false)
}

fn run_with(life: &Life, kill: Kill, faults: Option<Faults>, join: Option<Join>, small_ring: bool) -> Result<Outcome, String> {
    run_full(life, kill, faults, join, small_ring, None)
}

/// A failback: after packet event `at`, A hands over to B (everything drained reaches B);
/// B takes over and holds all output (the old active has not rejoined), A keeps its flows,
/// inactive. The kill is then B's, and A resumes its kept flows.
#[derive(Clone, Copy, Debug)]
struct Failback {
    at: u64,
    /// The mutation: B releases what depends on nothing (watermark 0, not `HOLD_ALL`).
    b_releases_untagged: bool,
}

fn run_full(
    life: &Life,
    kill: Kill,
    faults: Option<Faults>,
    join: Option<Join>,
    small_ring: bool,
    failback: Option<Failback>,
) -> Result<Outcome, String> {
    let cfg = stack_cfg();
    let ccfg = client_tcp();
    let mut now = t0();
    let mut a = Some(Active::new(&cfg, Instant(now), small_ring));
    let mut b = Standby { replicas: Replicas::new(1), status: SyncStatus::new(), stack: None, out: Held::default() };
    // Before the join A has no standby: it drops what it drains and releases everything.
    let mut joined = join.is_none();
    let mut flow_at_join = false;
    let mut b_had_flow = true;
    // B ever held a replica (of the one flow of a life).
    let mut b_saw_flow = false;
    // A join's snapshot: batches sent to B since it began, and when the images of the other
    // flows it stands for will have crossed the sync link.
    let mut join_batches = 0u64;
    let mut backlog_until = 0u64;
    // Failback: A handed over; what B's output waits for meanwhile.
    let mut handed_over: Option<u64> = None;
    let mut hold_over = false;
    let mut b_watermark = u64::MAX;
    if let (Some(j), Some(act)) = (join, a.as_mut()) {
        act.watermark = u64::MAX;
        if j.at == 0 {
            join_now(act, &mut b, j);
            joined = true;
            backlog_until = now + JOIN_BACKLOG_US;
        }
    }
    let mut app = App::new(life.clone());
    let mut cout = ClientOut { frames: Vec::new(), src_port: CLIENT_PORT, dst_port: life.port };
    let mut client = Tcb::connect(Instant(now), &ccfg, CLIENT_PORT, life.port, SeqNum(0x8000_0000), &mut cout);
    // (time, order, to, frame)
    let mut net: Wire = BinaryHeap::new();
    let mut to_b: Vec<(u64, Batch)> = Vec::new();
    let mut to_a: Vec<(u64, u64)> = Vec::new();
    let mut order = 0u64;
    let mut events = 0u64;
    let mut killed_at: Option<u64> = None;
    let mut out = Outcome::default();
    let mut rng = Rng(faults.map_or(0, |f| f.seed));
    let mut fins: BTreeSet<u64> = BTreeSet::new();
    let (mut client_rsts, mut engine_rsts) = (0u32, 0u32);
    // FT_SIM_TRACE=1 prints every frame as it is delivered (for a single failing run).
    let trace = std::env::var_os("FT_SIM_TRACE").is_some();

    let send = |net: &mut Wire, now: u64, events: u64, killed_at: Option<u64>, to: To, f: Vec<u8>, order: &mut u64, rng: &mut Rng| {
        let mut delay = LAT_US;
        if let Some(fl) = faults {
            // Around the kill: a few events before it, a few after, and not for longer than
            // FAULT_US after it (frames lost then do not count as events, so a window in
            // events alone could last for seconds of retransmissions).
            let recent = killed_at.is_none_or(|k| now < k + FAULT_US);
            if events >= fl.from && events < fl.to && recent {
                if rng.chance(15) {
                    return; // lost
                }
                if rng.chance(10) {
                    *order += 1;
                    net.push(Reverse((now + delay + 50, *order, to, f.clone()))); // duplicated
                }
                if rng.chance(20) {
                    delay += 400; // reordered behind later frames
                }
            }
        }
        *order += 1;
        net.push(Reverse((now + delay, *order, to, f)));
    };

    loop {
        // ---- the ends' own steps at `now`
        app.advance(now);
        client.poll_send(Instant(now), &ccfg, &mut app, &mut cout);
        client.on_timer(Instant(now), &ccfg, &mut app, &mut cout);
        for f in cout.frames.drain(..) {
            send(&mut net, now, events, killed_at, To::Engine, f, &mut order, &mut rng);
        }
        // The rest of the engines' passes at `now` (their frames of `now` were received
        // below, one event each).
        if let Some(act) = a.as_mut() {
            Iteration::new(Some(&Acked(act.watermark))).finish(&mut act.stack, Instant(now), &mut act.out);
            if let Some(batch) = act.drain() {
                if joined && handed_over.is_none() {
                    // After the join's first batch (this flow's image, first in the snapshot),
                    // the other flows' images occupy the sync link until `backlog_until`.
                    let t = if join_batches == 0 { now + SYNC_US } else { (now + SYNC_US).max(backlog_until) };
                    if join.is_some() {
                        join_batches += 1;
                    }
                    to_b.push((t, batch));
                }
            }
            for f in act.out.take_sent() {
                send(&mut net, now, events, killed_at, To::Client, f, &mut order, &mut rng);
            }
        }
        if let Some(bs) = b.stack.as_mut() {
            Iteration::new(Some(&Acked(b_watermark))).finish(bs, Instant(now), &mut b.out);
            for f in b.out.take_sent() {
                send(&mut net, now, events, killed_at, To::Client, f, &mut order, &mut rng);
            }
        }

        // ---- done?
        let client_done = matches!(client.state(), State::Closed | State::TimeWait)
            && app.received.len() == life.expect.len()
            && app.server_fin;
        let engine_empty = match (&a, &b.stack) {
            (Some(_), Some(bs)) if handed_over.is_some() => bs.flows().is_empty(),
            (Some(act), _) => act.stack.flows().is_empty(),
            (None, Some(bs)) => bs.flows().is_empty(),
            (None, None) => false,
        };
        let kill_pending = matches!(kill, Kill::After { .. }) && killed_at.is_none() && !hold_over;
        // A flow B never had an image of ends with B's reset, or never (a client that only
        // receives has nothing to send B, so nothing tells it): look until well past the grace.
        let unknown_over = !b_had_flow
            && ((client.state() == State::Closed && engine_rsts > 0)
                || killed_at.is_some_and(|k| now > k + DETECT_US + GRACE_US + UNKNOWN_WAIT_US));
        if unknown_over {
            out.done_us = now - t0();
            break;
        }
        if client_done && engine_empty && net.is_empty() && !kill_pending {
            out.done_us = now - t0();
            break;
        }
        if client_done && out.done_us == 0 {
            out.done_us = now - t0();
        }
        if now - t0() > GIVE_UP_US {
            return Err(format!(
                "no end after {} s: client {:?} received {}/{} fin {} closed {}; engine flows {:?}",
                GIVE_UP_US / 1_000_000,
                client.state(),
                app.received.len(),
                life.expect.len(),
                app.server_fin,
                app.closed,
                b.stack.as_ref().map(|s| s.flows().iter().map(|(_, _, f)| f.tcb.state()).collect::<Vec<_>>())
            ));
        }

        // ---- the next instant anything happens
        let mut next = u64::MAX;
        if let Some(Reverse((t, ..))) = net.peek() {
            next = next.min(*t);
        }
        for (t, _) in &to_b {
            next = next.min(*t);
        }
        for (t, _) in &to_a {
            next = next.min(*t);
        }
        if let Some(d) = client.next_deadline() {
            next = next.min(d.0);
        }
        if let Some(until) = app.paused_until {
            next = next.min(until);
        }
        if let Some(act) = &a {
            if let Some(d) = act.stack.next_timer() {
                next = next.min(d.0);
            }
        }
        if let Some(bs) = &b.stack {
            if let Some(d) = bs.next_timer() {
                next = next.min(d.0);
            }
        }
        if let Some(k) = killed_at {
            // The takeover, or the failback's resumption, that is still to come.
            let pending = match (failback, &a) {
                (None, _) => b.stack.is_none(),
                (Some(_), Some(act)) => !act.stack.is_active(),
                (Some(_), None) => false,
            };
            if pending {
                next = next.min(k + DETECT_US);
            }
        }
        if let (Some(h), false, None) = (handed_over, hold_over, killed_at) {
            next = next.min(h + HANDOVER_HOLD_US);
        }
        if next == u64::MAX && kill_pending && client_done && engine_empty {
            // With faults the life can end in fewer events than without: the kill point lies
            // beyond its end, so this run is the life without a kill.
            out.done_us = now - t0();
            break;
        }
        if next == u64::MAX {
            return Err(format!("nothing left to happen: client {:?} received {}/{}", client.state(), app.received.len(), life.expect.len()));
        }
        now = next.max(now + 1);

        // ---- a failback's hold ends before any kill: the old active never rejoined (it is
        // as good as dead: it forgets its flows), B serves alone
        if let (Some(h), false, None) = (handed_over, hold_over, killed_at) {
            if now >= h + HANDOVER_HOLD_US {
                hold_over = true;
                a = None;
                b_watermark = u64::MAX;
                if trace {
                    println!("{:>9} us B's handover hold over: B serves alone", now - t0());
                }
            }
        }
        // ---- takeover (failback: A resumes the flows it kept once it saw B die)
        if let Some(k) = killed_at {
            if failback.is_none() && b.stack.is_none() && now >= k + DETECT_US {
                let any = b.take_over(&cfg, now)?;
                b_had_flow = out.state_at_kill.is_none() || any;
            }
            if let (Some(_), Some(act)) = (failback, a.as_mut()) {
                if !act.stack.is_active() && now >= k + DETECT_US {
                    // As the engine's workers do at every takeover (dataplane.rs): its kept
                    // flows, no replicas.
                    resume(&mut act.stack, Instant(now), [], &mut act.out);
                    act.watermark = u64::MAX;
                }
            }
        }

        // ---- the sync link
        let (due, later): (Vec<_>, Vec<_>) = to_b.drain(..).partition(|(t, _)| *t <= now);
        to_b = later;
        for (_, batch) in due {
            b.apply(&cfg, &batch);
            b.replicas.check_in_sync();
            b_saw_flow |= b.replicas.flows() > 0;
            to_a.push((now + SYNC_US, batch.last));
        }
        let (due, later): (Vec<_>, Vec<_>) = to_a.drain(..).partition(|(t, _)| *t <= now);
        to_a = later;
        if let Some(act) = a.as_mut() {
            for (_, seq) in due {
                act.watermark = if act.watermark == u64::MAX {
                    // The mutation's release-everything ends once B is in sync.
                    if b.replicas.in_sync && now >= backlog_until { seq } else { u64::MAX }
                } else {
                    act.watermark.max(seq)
                };
            }
        }

        // ---- the network: every frame due now
        while let Some(Reverse((t, ..))) = net.peek() {
            if *t > now {
                break;
            }
            let Reverse((_, _, to, f)) = net.pop().unwrap();
            events += 1;
            if trace {
                if let Ok(seg) = TcpPacket::new_checked(&f[34..]) {
                    let h = seg.header();
                    let who = match (to, &a, &b.stack) {
                        (To::Client, ..) => "   -> client",
                        (To::Engine, Some(_), _) => "A <-",
                        (To::Engine, None, Some(_)) => "B <-",
                        (To::Engine, None, None) => "(lost) <-",
                    };
                    println!(
                        "{:>9} us #{events:<4} {who:<12} {:?} seq {} ack {} len {} win {}",
                        now - t0(),
                        h.flags,
                        h.seq.0,
                        h.ack.0,
                        seg.payload().len(),
                        h.window
                    );
                }
            }
            match to {
                To::Client => {
                    let seg = TcpPacket::new_checked(&f[34..]).map_err(|e| format!("engine frame: {e:?}"))?;
                    if seg.checksum_status(IpAddr::V4(VIP), IpAddr::V4(CLIENT)) != ChecksumStatus::Valid {
                        return Err("bad checksum from the engine".into());
                    }
                    let h = seg.header();
                    if h.flags.rst() {
                        engine_rsts += 1;
                    }
                    if h.flags.fin() {
                        let end = (h.seq + seg.payload().len() as u32).diff(client.irs() + 1);
                        fins.insert(end as u64);
                    }
                    client.on_segment(Instant(now), &ccfg, &h, seg.payload(), &mut app, &mut cout);
                    // The application reacts to each segment (a close crosses our FIN).
                    app.advance(now);
                    client.poll_send(Instant(now), &ccfg, &mut app, &mut cout);
                    if trace {
                        let d = client.next_deadline().map(|d| d.0 as i64 - now as i64);
                        println!("{:>9} us       client: {:?}, rto {:?}, next timer in {d:?} us", now - t0(), client.state(), client.rto(&ccfg));
                    }
                }
                To::Engine => {
                    let seg = TcpPacket::new_checked(&f[34..]).map_err(|e| format!("client frame: {e:?}"))?;
                    if seg.header().flags.rst() {
                        client_rsts += 1;
                    }
                    let to_a = a.is_some() && !(handed_over.is_some() && b.stack.is_some());
                    if let (true, Some(act)) = (to_a, a.as_mut()) {
                        Iteration::new(Some(&Acked(act.watermark))).receive(&mut act.stack, Instant(now), &f, &mut act.out);
                    } else if let Some(bs) = b.stack.as_mut() {
                        Iteration::new(Some(&Acked(b_watermark))).receive(bs, Instant(now), &f, &mut b.out);
                        if trace {
                            for (_, _, fl) in bs.flows().iter() {
                                let d = fl.tcb.next_deadline().map(|d| d.0 as i64 - now as i64);
                                println!("{:>9} us       B: {:?}, next timer in {d:?} us", now - t0(), fl.tcb.state());
                            }
                        }
                    } // else: sent to the VIP while nobody owns it: lost
                }
            }
            // ---- the join, right after event j (and before a kill at the same point)
            if let (Some(j), Some(act)) = (join, a.as_mut()) {
                if !joined && events >= j.at {
                    flow_at_join = !act.stack.flows().is_empty();
                    join_now(act, &mut b, j);
                    joined = true;
                    backlog_until = now + JOIN_BACKLOG_US;
                    if trace {
                        println!("{:>9} us join B (A has a flow: {flow_at_join})", now - t0());
                    }
                }
            }
            // ---- the failback's handover, right after event `at`
            if let (Some(fb), Some(act)) = (failback, a.as_mut()) {
                if handed_over.is_none() && events >= fb.at {
                    act.watermark = HOLD_ALL;
                    act.stack.replication_tick();
                    for (_, batch) in to_b.drain(..) {
                        b.apply(&cfg, &batch);
                    }
                    if let Some(batch) = act.drain() {
                        b.apply(&cfg, &batch);
                    }
                    to_a.clear();
                    act.stack.set_active(false);
                    b.take_over(&cfg, now)?;
                    b_watermark = if fb.b_releases_untagged { 0 } else { HOLD_ALL };
                    handed_over = Some(now);
                    if trace {
                        println!("{:>9} us handover to B", now - t0());
                    }
                }
            }
            // ---- the kill, right after event k (of B after a failback's handover)
            if let (Kill::After { k, .. }, Some(_)) = (kill, handed_over) {
                if killed_at.is_none() && !hold_over && events >= k {
                    out.state_at_kill = b.stack.as_ref().and_then(|bs| bs.flows().iter().next().map(|(_, _, f)| f.tcb.state()));
                    b.stack = None;
                    killed_at = Some(now);
                    if trace {
                        println!("{:>9} us kill B (state {:?}); A resumes its kept flows", now - t0(), out.state_at_kill);
                    }
                }
            }
            if let (Kill::After { k, reached }, None) = (kill, failback) {
                if killed_at.is_none() && events >= k {
                    let mut act = a.take().expect("A is alive until the kill");
                    out.state_at_kill = act.stack.flows().iter().next().map(|(_, _, f)| f.tcb.state());
                    if reached {
                        // Its last batch (and whatever its ring still held) reached B.
                        act.stack.replication_tick();
                        for (_, batch) in to_b.drain(..) {
                            b.apply(&cfg, &batch);
                        }
                        if let Some(batch) = act.drain() {
                            b.apply(&cfg, &batch);
                        }
                    } else {
                        to_b.clear();
                    }
                    to_a.clear();
                    killed_at = Some(now);
                    if trace {
                        println!("{:>9} us kill A (reached {reached}), state {:?}", now - t0(), out.state_at_kill);
                    }
                }
            }
        }
    }
    out.events = events;
    let completed = app.received == life.expect && app.server_fin && matches!(client.state(), State::Closed | State::TimeWait);
    if !b_had_flow && (!completed || engine_rsts > 0) {
        // B had no image of the flow: nobody held its state. Allowed only for a flow that
        // existed before B joined (one opened after the join is in B's stream like any
        // other), and only after a prefix of the right bytes.
        if !flow_at_join {
            return Err("B had no image of a flow opened after it joined".into());
        }
        if b_saw_flow {
            return Err("B had an image of the flow before the kill, but not at the takeover".into());
        }
        let abandoned = b.status.flows_abandoned.load(std::sync::atomic::Ordering::Relaxed);
        if abandoned != 0 {
            return Err(format!("{abandoned} replica(s) abandoned at the takeover"));
        }
        if app.received[..] != life.expect[..app.received.len().min(life.expect.len())] {
            return Err("a lost flow received wrong bytes first".into());
        }
        out.reset_unknown = true;
        out.lost_reset = engine_rsts > 0;
        out.lost_after_all_bytes = app.received == life.expect;
        return Ok(out);
    }
    if let Some(bs) = &b.stack {
        out.caught_up = bs.counters().get(Event::FlowsCaughtUp);
        out.resumed = bs.counters().get(Event::FlowsResumed);
        let abandoned = bs.counters().get(Event::FlowsAbandoned);
        if abandoned != 0 {
            return Err(format!("{abandoned} flow(s) abandoned at takeover"));
        }
    }
    if engine_rsts + client_rsts != 0 {
        return Err(format!("RSTs: {engine_rsts} from the engine, {client_rsts} from the client"));
    }
    if app.received != life.expect {
        let i = app.received.iter().zip(&life.expect).position(|(x, y)| x != y).unwrap_or(app.received.len().min(life.expect.len()));
        return Err(format!("bytes differ at offset {i} (received {}, expected {})", app.received.len(), life.expect.len()));
    }
    // Our FIN ends every life (the service closes after the client's FIN, or first).
    let want_fins: BTreeSet<u64> = [life.expect.len() as u64].into();
    if fins != want_fins {
        return Err(format!("our FIN ended the stream at {fins:?}, expected {want_fins:?}"));
    }
    if b.status.replay_errors.load(std::sync::atomic::Ordering::Relaxed) != 0 {
        return Err("replay errors on the standby".into());
    }
    Ok(out)
}

/// The bound on simulated time a kill may add to a life: detection, the client's SYN
/// retransmission (1 s, RFC 6298 §2.1) when its SYN or our held SYN-ACK died, one more
/// retransmission timeout (at most 1 s without an RTT sample), and the TIME-WAIT that ends
/// the run (2 s) — with room for one more doubled RTO in the lossy variants.
const EXTRA_BOUND_US: u64 = 5_000_000;
const EXTRA_BOUND_LOSSY_US: u64 = 9_000_000;

struct Tally {
    checked: u64,
    failures: Vec<String>,
    states: BTreeMap<String, u64>,
    max_extra_us: u64,
}

impl Tally {
    fn new() -> Tally {
        Tally { checked: 0, failures: Vec::new(), states: BTreeMap::new(), max_extra_us: 0 }
    }

    /// One run that ended: its state at the kill, and whether the kill cost more than
    /// `bound` of simulated time beyond `base` (the life without a kill). `at` names the run.
    fn ended(&mut self, o: &Outcome, base: &Outcome, bound: u64, at: &str) {
        let state = o.state_at_kill.map_or("no flow".to_string(), |s| format!("{s:?}"));
        *self.states.entry(state).or_default() += 1;
        let extra = o.done_us.saturating_sub(base.done_us);
        self.max_extra_us = self.max_extra_us.max(extra);
        if extra > bound {
            self.failures.push(format!("{at}: ended {} ms after the life without a kill", extra / 1000));
        }
    }
}

fn sweep(life: &Life, lossy: bool, small_ring: bool, tally: &mut Tally) {
    let base = run_with(life, Kill::None, None, None, small_ring).unwrap_or_else(|e| panic!("{}: without a kill: {e}", life.name));
    for k in 0..=base.events {
        for reached in [false, true] {
            let faults = lossy.then(|| Faults::around(k, reached));
            let r = run_with(life, Kill::After { k, reached }, faults, None, small_ring);
            tally.checked += 1;
            match r {
                Ok(o) => {
                    let bound = if lossy { EXTRA_BOUND_LOSSY_US } else { EXTRA_BOUND_US };
                    tally.ended(&o, &base, bound, &format!("{} k={k} reached={reached} lossy={lossy}", life.name));
                }
                Err(e) => tally.failures.push(format!("{} k={k} reached={reached} lossy={lossy} (state at kill?): {e}", life.name)),
            }
        }
    }
}

fn sweep_all(lossy: bool) -> Tally {
    sweep_all_with(lossy, false)
}

fn sweep_all_with(lossy: bool, small_ring: bool) -> Tally {
    let mut tally = Tally::new();
    for life in lives() {
        let before = tally.checked;
        sweep(&life, lossy, small_ring, &mut tally);
        println!("{:<45} {:>5} kill points", life.name, tally.checked - before);
    }
    println!(
        "checked {} kill points ({}), longest extra time {} ms; A's flow state at the kill: {:?}",
        tally.checked,
        if lossy { "loss, duplication and reordering around the kill" } else { "clean network" },
        tally.max_extra_us / 1000,
        tally.states
    );
    tally
}

fn report(t: &Tally) {
    if !t.failures.is_empty() {
        // A few per life, so that one life's failures do not hide another's.
        let mut per: BTreeMap<&str, usize> = BTreeMap::new();
        let shown: Vec<&String> = t
            .failures
            .iter()
            .filter(|f| {
                let n = per.entry(f.split(" k=").next().unwrap_or("")).or_default();
                *n += 1;
                *n <= 4
            })
            .collect();
        panic!("{} of {} kill points failed:\n{}", t.failures.len(), t.checked, shown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n"));
    }
}

/// Kill points after a join, relative to it: the snapshot is in flight for the first few.
const AFTER_JOIN: [u64; 7] = [0, 1, 2, 3, 5, 8, 13];

/// The standby joins after every packet event j of a life (its snapshot images A's flow),
/// and A dies a few events later, in both cases.
fn sweep_join(life: &Life, tally: &mut Tally, resets: &mut u64) {
    let base = run(life, Kill::None, None).unwrap_or_else(|e| panic!("{}: without a kill: {e}", life.name));
    for j in 0..=base.events {
        for k in AFTER_JOIN.iter().map(|d| j + d).filter(|&k| k <= base.events) {
            for reached in [false, true] {
                tally.checked += 1;
                match run_with(life, Kill::After { k, reached }, None, Some(Join::at(j)), false) {
                    Ok(o) if o.reset_unknown => {
                        *resets += 1;
                        let how = match (o.lost_reset, o.lost_after_all_bytes) {
                            (true, true) => "lost (no image): every byte, then B's reset",
                            (true, false) => "lost (no image): reset by B",
                            (false, _) => "lost (no image): client waits",
                        };
                        *tally.states.entry(how.into()).or_default() += 1;
                    }
                    Ok(o) => tally.ended(&o, &base, EXTRA_BOUND_US, &format!("{} join={j} k={k} reached={reached}", life.name)),
                    Err(e) => tally.failures.push(format!("{} join={j} k={k} reached={reached}: {e}", life.name)),
                }
            }
        }
    }
}

/// A standby that joins while A serves, and A's death while its snapshot is under way: every
/// flow the standby holds an image of resumes exactly (strict output commit from the join
/// on), and the only other end is B's reset of a flow it never heard of. Mutation check:
/// `FT_SIM_MUTATE_JOIN=1` releases A's output until B is in sync, and must fail.
#[test]
fn every_life_survives_a_kill_during_a_join_snapshot() {
    let mut tally = Tally::new();
    let mut resets = 0;
    for life in lives() {
        let before = tally.checked;
        sweep_join(&life, &mut tally, &mut resets);
        println!("{:<45} {:>5} join and kill points", life.name, tally.checked - before);
    }
    println!(
        "checked {} (join, kill) points, {resets} flows lost for want of an image; longest extra time {} ms; A's flow state at the kill: {:?}",
        tally.checked,
        tally.max_extra_us / 1000,
        tally.states
    );
    report(&tally);
}

/// Kill points after a failback's handover, relative to it.
const AFTER_HANDOVER: [u64; 4] = [0, 2, 5, 13];

/// A failback after every packet event of every life, and the new active's death a few events
/// later, before the old one rejoined it: the old active resumes the flows it kept (B held all
/// output meanwhile). Mutation check: `FT_SIM_MUTATE_FAILBACK=1` lets B release output that
/// depends on no change (its probes and resent data, with B's timestamp clock).
#[test]
fn every_life_survives_a_kill_of_the_new_active_during_a_failback() {
    let mutate = std::env::var_os("FT_SIM_MUTATE_FAILBACK").is_some();
    let mut tally = Tally::new();
    for life in lives() {
        let before = tally.checked;
        let base = run(&life, Kill::None, None).unwrap_or_else(|e| panic!("{}: without a kill: {e}", life.name));
        for at in 0..=base.events {
            for k in AFTER_HANDOVER.iter().map(|d| at + d).filter(|&k| k <= base.events) {
                tally.checked += 1;
                let fb = Failback { at, b_releases_untagged: mutate };
                match run_full(&life, Kill::After { k, reached: true }, None, None, false, Some(fb)) {
                    Ok(o) => tally.ended(&o, &base, EXTRA_BOUND_US, &format!("{} handover={at} k={k}", life.name)),
                    Err(e) => tally.failures.push(format!("{} handover={at} k={k}: {e}", life.name)),
                }
            }
        }
        println!("{:<45} {:>5} handover and kill points", life.name, tally.checked - before);
    }
    println!(
        "checked {} (handover, kill) points; longest extra time {} ms; B's flow state at the kill: {:?}",
        tally.checked,
        tally.max_extra_us / 1000,
        tally.states
    );
    report(&tally);
}

#[test]
fn every_life_survives_a_kill_at_every_packet_event() {
    let t = sweep_all(false);
    report(&t);
    // The lives reach every state a flow can be in when the active dies. CLOSE-WAIT is not
    // one with these services: both close their side in the very call that delivers the
    // client's FIN, so a flow passes through it between two replicated images (the restore
    // of a CLOSE-WAIT replica is tested in `tcp::tests::restore_in_close_wait_*`).
    for s in ["no flow", "SynReceived", "Established", "FinWait1", "FinWait2", "Closing", "TimeWait", "LastAck"] {
        assert!(t.states.contains_key(s), "no kill point found the flow in {s}: {:?}", t.states);
    }
}

/// The same with a ring that fills: deltas meet `ReplFull`, the flow's output is held until
/// it is re-imaged, and a kill can find the standby with a flow's image (`Step`) but not the
/// bytes (`Data`) that went with it.
#[test]
fn every_life_survives_a_kill_with_a_full_ring() {
    let t = sweep_all_with(false, true);
    report(&t);
}

#[test]
fn every_life_survives_a_kill_with_a_full_ring_and_loss() {
    let t = sweep_all_with(true, true);
    report(&t);
}

#[test]
fn every_life_survives_a_kill_with_loss_duplication_and_reordering() {
    let t = sweep_all(true);
    report(&t);
}

/// One run, for investigating a failure: `FT_SIM_LIFE="zero window" FT_SIM_K=2
/// FT_SIM_REACHED=1 [FT_SIM_LOSSY=1] [FT_SIM_JOIN=j] FT_SIM_TRACE=1 cargo test --release -p flowtwin-sync
/// --test takeover_space one_run -- --nocapture`. Without FT_SIM_LIFE it does nothing.
#[test]
fn one_run() {
    let Ok(name) = std::env::var("FT_SIM_LIFE") else { return };
    let life = lives().into_iter().find(|l| l.name == name).expect("FT_SIM_LIFE names a life");
    let k: u64 = std::env::var("FT_SIM_K").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let reached = std::env::var_os("FT_SIM_REACHED").is_some();
    let faults = std::env::var_os("FT_SIM_LOSSY").map(|_| Faults::around(k, reached));
    let join = std::env::var("FT_SIM_JOIN").ok().and_then(|v| v.parse().ok()).map(Join::at);
    let failback = std::env::var("FT_SIM_FAILBACK").ok().and_then(|v| v.parse().ok()).map(|at| Failback { at, b_releases_untagged: false });
    println!(
        "{:?}",
        run_full(&life, Kill::After { k, reached }, faults, join, std::env::var_os("FT_SIM_SMALL_RING").is_some(), failback).map(|o| (o.events, o.done_us, o.state_at_kill, o.reset_unknown))
    );
}

/// Every life completes without a kill: the lives and the expected bytes are right.
#[test]
fn every_life_completes_without_a_kill() {
    for life in lives() {
        let o = run(&life, Kill::None, None).unwrap_or_else(|e| panic!("{}: {e}", life.name));
        println!("{:<45} {:>5} packet events, {:>6} ms", life.name, o.events, o.done_us / 1000);
    }
}
