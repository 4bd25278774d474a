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
use flowtwin_engine::stack::{vrrp_mac, GroupId, Listener, ServiceSpec, Stack, StackConfig, Vip};
use flowtwin_engine::tcp::{State, Tcb, TcpConfig};
use flowtwin_engine::time::{Duration, Instant};
use flowtwin_engine::wire::tcp::TcpPacket;
use flowtwin_engine::wire::ChecksumStatus;
use flowtwin_sync::coalesce::Coalescer;
use flowtwin_sync::delta;
use flowtwin_sync::ring::Record;
use flowtwin_sync::shadow::Replicas;
use flowtwin_sync::{worker_channel, worker_channel_with_backlog, RingReplicator, SyncStatus, WorkerLink};

#[path = "../common/mod.rs"]
mod common;
mod sim;
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
        vips: vec![Vip { addr: VIP, mac: vrrp_mac(1), group: GroupId::DEFAULT }],
        groups: Vec::new(),
        listeners: vec![
            Listener { vip: VIP, port: HTTP, spec: ServiceSpec::Object(Arc::new(ObjectStore::empty(StoreConfig::default()))) },
            Listener { vip: VIP, port: ECHO, spec: ServiceSpec::Echo(EchoConfig { buf_size: 16 * 1024 }) },
        ],
        // The engine's defaults (delayed ACK, RTO, TIME-WAIT) as an operator runs it.
        routes: flowtwin_engine::route::RouteTable::all_on_link(),
        tcp: TcpConfig::default(),
        flow_capacity: 64,
        isn_key: [7; 16],
        open_secrets: Default::default(),
        timer_tick: Duration::from_micros(100),
        retired: Vec::new(),
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
