//! Takeover of flows the engine opened, and of linked pairs, through the real replication
//! path without DPDK, sockets or threads (the `takeover_space` style): engine A is a `Stack`
//! with the real `RingReplicator`, driven by the dataplane's `Iteration`, its output held by
//! the dataplane's `OutputHold`; its "sync core" drains the ring into standby S's `Replicas`
//! (the real `apply_batch`), whose acknowledgement releases A's output; S takes over with the
//! real `take_for_takeover` and `iteration::resume`. Backend B is a second `Stack` (A opens
//! connections to it); a client is the engine's own `Tcb` (for the passive half of a pair).
//! Every frame between the engine and B is reassembled per direction by sequence number, so
//! a run proves byte-exact streams across the takeover, and no reset, either way.

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use flowtwin_engine::iteration::{resume, Acked, CommitSink, Iteration};
use flowtwin_engine::replica::{FlowImage, Origin};
use flowtwin_engine::seq::SeqNum;
use flowtwin_engine::service::echo::{EchoConfig, EchoCursor, EchoState};
use flowtwin_engine::service::proxy::{Balance, Commit, ProxySpec};
use flowtwin_engine::service::object::{gen_byte_range, ObjectStore, StoreConfig};
use flowtwin_engine::stack::{vrrp_mac, FrameSink, GroupId, Link, LinkEvent, Listener, PartnerEnd, ServiceSpec, ServiceState, Stack, StackConfig, Vip};
use flowtwin_engine::counters::Event;
use flowtwin_engine::flow::FlowId;
use flowtwin_engine::tcp::{State, Tcb, TcbSnapshot, TcpConfig};
use flowtwin_engine::time::{Duration, Instant};
use flowtwin_engine::wire::arp::ArpRepr;
use flowtwin_engine::wire::ethernet::{ethertype, EthernetFrame, MacAddr};
use flowtwin_engine::wire::tcp::TcpPacket;
use flowtwin_engine::wire::{ChecksumStatus, TcpHeader};
use flowtwin_sync::delta::{self, Delta, DeltaBody, DeltaError, DeltaHeader, FlowStateRec};
use flowtwin_sync::ring::Record;
use flowtwin_sync::shadow::Replicas;
use flowtwin_sync::{worker_channel, SyncStatus, WorkerLink};
use std::sync::atomic::Ordering::Relaxed;

#[path = "../common/mod.rs"]
mod common;
mod pool;
mod proxy;
use common::{App, ClientOut, Held, CLIENT_MAC, VIP};

const B_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 9);
const B_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 2, 9]);
/// A's echo listener: its service runs the opened flows too.
const ECHO: u16 = 1;
const STEP_US: u64 = 100;
const DETECT_US: u64 = 15_000;

fn tcp() -> TcpConfig {
    TcpConfig { delayed_ack: Duration::ZERO, ..TcpConfig::default() }
}

/// The tests' engine (`common::engine_cfg`) with a proxy on :8080 in front of B's object
/// server (listener [`PROXY`]) and one on :8007 in front of B's echo (listener
/// [`PROXY_ECHO`]), with small buffers so that they fill; and the same two with
/// `commit = "peer"` on :8180 and :8107.
fn a_cfg() -> Arc<StackConfig> {
    let mut c = (*common::engine_cfg()).clone();
    for (port, to, commit) in [(8080, 80, Commit::Standby), (8007, 7, Commit::Standby), (8180, 80, Commit::Peer), (8107, 7, Commit::Peer)] {
        let spec = ProxySpec::new(vec![SocketAddrV4::new(B_IP, to)], Balance::RoundRobin, VIP, proxy::BUF).with_commit(commit);
        c.listeners.push(Listener { vip: VIP, port, spec: ServiceSpec::Proxy(Arc::new(spec)) });
    }
    Arc::new(c)
}

fn b_cfg() -> Arc<StackConfig> {
    Arc::new(StackConfig {
        vips: vec![Vip { addr: B_IP, mac: B_MAC, group: GroupId::DEFAULT }],
        groups: Vec::new(),
        listeners: vec![
            Listener { vip: B_IP, port: 80, spec: ServiceSpec::Object(Arc::new(ObjectStore::empty(StoreConfig::default()))) },
            Listener { vip: B_IP, port: 7, spec: ServiceSpec::Echo(EchoConfig { buf_size: 64 * 1024 }) },
        ],
        routes: flowtwin_engine::route::RouteTable::all_on_link(),
        tcp: tcp(),
        flow_capacity: 64,
        isn_key: [9; 16],
        open_secrets: Default::default(),
        timer_tick: Duration::from_micros(100),
        retired: Vec::new(),
    })
}

/// An echo service (A's listener 1) that already owes `bytes`: the opened flow sends them
/// first (a proxy's buffered request), then echoes what it receives.
fn owing(bytes: &[u8]) -> ServiceState {
    let c = EchoCursor { received: bytes.len() as u64, acked: 0, peer_fin: false };
    ServiceState::Echo(EchoState::from_cursor(EchoConfig { buf_size: 16 * 1024 }, &c, bytes).unwrap())
}

fn request(n: usize) -> Vec<u8> {
    format!("GET /gen/{n} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n").into_bytes()
}

fn response(n: usize) -> Vec<u8> {
    let mut v = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    let at = v.len();
    v.resize(at + n, 0);
    gen_byte_range(0, &mut v[at..]);
    v
}

/// One direction between the engine and B, reassembled by sequence number.
#[derive(Default)]
struct Stream {
    next: Option<SeqNum>,
    bytes: Vec<u8>,
    fin: bool,
    rsts: u32,
    /// (ISN, source port) of every SYN.
    syns: Vec<(SeqNum, u16)>,
}

impl Stream {
    fn take(&mut self, h: &TcpHeader, payload: &[u8]) {
        if h.flags.rst() {
            self.rsts += 1;
            return;
        }
        if h.flags.syn() {
            self.syns.push((h.seq, h.src_port));
            self.next = Some(h.seq + 1);
            return;
        }
        // In order, or a retransmission that reaches past what was seen (take its tail).
        let Some(next) = self.next else { return };
        let off = next.0.wrapping_sub(h.seq.0) as usize;
        if off > payload.len() || self.fin {
            return;
        }
        self.bytes.extend_from_slice(&payload[off..]);
        let fin = h.flags.fin() as u32;
        self.fin |= fin == 1;
        self.next = Some(h.seq + payload.len() as u32 + fin);
    }
}

fn tcp_of(f: &[u8]) -> Option<(TcpHeader, Vec<u8>)> {
    let e = EthernetFrame::new_checked(f).ok()?;
    if e.ethertype() != ethertype::IPV4 {
        return None;
    }
    let p = TcpPacket::new_checked(&f[34..]).ok()?;
    let (src, dst) = (Ipv4Addr::new(f[26], f[27], f[28], f[29]), Ipv4Addr::new(f[30], f[31], f[32], f[33]));
    assert_eq!(p.checksum_status(IpAddr::V4(src), IpAddr::V4(dst)), ChecksumStatus::Valid);
    Some((p.header(), p.payload().to_vec()))
}

struct Client {
    tcb: Tcb,
    app: App,
    out: ClientOut,
    rsts: u32,
}

/// Engine A (or, after the takeover, S's stack), B, a client, the standby and the wire.
struct World {
    cfg: Arc<StackConfig>,
    /// The standby's config, when it is not A's (its own proxy specs: `pool.rs`).
    s_cfg: Option<Arc<StackConfig>>,
    now: u64,
    /// A: its stack, its held output, its ring's consumer; `None` once dead.
    a: Option<(Stack, Held, WorkerLink)>,
    /// The standby's replicas and the watermark its acknowledgements give A.
    s: Replicas,
    status: SyncStatus,
    wm: u64,
    /// After the takeover: S serving.
    s_stack: Option<(Stack, Held)>,
    b: Stack,
    client: Option<Client>,
    to_engine: Vec<Vec<u8>>,
    to_b: Vec<Vec<u8>>,
    to_client: Vec<Vec<u8>>,
    /// Engine → B, B → engine.
    eb: Stream,
    be: Stream,
    /// A dies in the next step right after its pass, before its ring is drained: its last
    /// records never reach the standby and its output of that pass never leaves.
    die_mid_step: bool,
    /// ... after shipping this many of that pass's deltas to the standby (0: none).
    die_after_deltas: usize,
    /// Payload bytes the standby was sent in `Data` records.
    data_bytes: usize,
    /// A lagging sync core: each step ships only the deltas of the passes before (up to
    /// `lag_upto`), so output tagged with an older change leaves while the standby still
    /// lacks the newest ones; a kill then finds them missing. Only the commit tags keep
    /// what left consistent with what the standby holds.
    lag: bool,
    lag_upto: u64,
}

impl World {
    fn new() -> World {
        let mut w = World::unaware();
        // A heard B announce itself: it knows its next hop.
        let mut f = vec![0u8; 60];
        ArpRepr::request(B_MAC, B_IP, B_IP).emit_frame(&mut f).unwrap();
        let now = Instant(w.now);
        w.a_stack().process(now, &f, &mut Held::default());
        w
    }

    /// A world where A has heard nothing of B yet.
    fn unaware() -> World {
        let cfg = a_cfg();
        let (repl, link) = worker_channel(0, 1 << 16);
        let mut a = Stack::new(cfg.clone(), Instant(1_000_000));
        a.set_replicator(Box::new(repl));
        World {
            cfg,
            s_cfg: None,
            now: 1_000_000,
            a: Some((a, Held::default(), link)),
            s: Replicas::new(1),
            status: SyncStatus::new(),
            wm: 0,
            s_stack: None,
            b: Stack::new(b_cfg(), Instant(1_000_000)),
            client: None,
            to_engine: Vec::new(),
            to_b: Vec::new(),
            to_client: Vec::new(),
            eb: Stream::default(),
            be: Stream::default(),
            die_mid_step: false,
            die_after_deltas: 0,
            data_bytes: 0,
            lag: false,
            lag_upto: 0,
        }
    }

    fn a_stack(&mut self) -> &mut Stack {
        &mut self.a.as_mut().unwrap().0
    }

    fn engine(&mut self) -> &mut Stack {
        match (&mut self.a, &mut self.s_stack) {
            (Some(a), _) => &mut a.0,
            (None, Some(s)) => &mut s.0,
            _ => panic!("nobody serves"),
        }
    }

    /// A's sync core: drain the ring into the standby, which acknowledges at once.
    fn replicate(&mut self) {
        if !self.lag {
            self.replicate_some(usize::MAX);
            return;
        }
        let upto = self.lag_upto;
        self.replicate_upto(usize::MAX, upto);
        // What this pass wrote ships in the next step.
        if let Some((_, _, link)) = self.a.as_mut() {
            let mut peek = vec![[0u64; 8]; 1 << 16];
            let got = link.consumer.peek_burst(&mut peek);
            let mut used = 0;
            while used < got {
                let p = delta::peek_header(&peek[used..got]).unwrap();
                self.lag_upto = p.header.seq;
                used += p.records;
            }
        }
    }

    /// [`World::replicate`] of at most `max` deltas (a sync core that drained the ring while
    /// the worker was still writing to it). Returns how many it shipped.
    fn replicate_some(&mut self, max: usize) -> usize {
        self.replicate_upto(max, u64::MAX)
    }

    /// [`World::replicate_some`] of the deltas up to sequence number `upto`.
    fn replicate_upto(&mut self, max: usize, upto: u64) -> usize {
        let Some((_, _, link)) = self.a.as_mut() else { return 0 };
        let mut peek = vec![[0u64; 8]; 1 << 16];
        let got = link.consumer.peek_burst(&mut peek);
        if got == 0 {
            return 0;
        }
        let (mut used, mut first, mut last, mut n, mut data) = (0, 0, 0, 0, 0);
        while used < got && n < max {
            n += 1;
            let p = delta::peek_header(&peek[used..got]).unwrap();
            if p.header.seq > upto {
                n -= 1;
                break;
            }
            if p.kind == delta::DeltaKind::Data {
                data += p.payload_len;
            }
            first = if first == 0 { p.header.seq } else { first };
            last = p.header.seq;
            used += p.records;
        }
        link.consumer.advance(used);
        self.data_bytes += data;
        if used == 0 {
            return 0;
        }
        let cfg = self.s_cfg.clone().unwrap_or_else(|| self.cfg.clone());
        self.s.apply_batch(&cfg, &self.status, 0, (first, last), &peek[..used], &|m| panic!("standby: {m}"));
        self.wm = last;
        n
    }

    fn connect(&mut self, remote: SocketAddrV4, svc: ServiceState) -> FlowId {
        let now = Instant(self.now);
        let (stack, held, _) = self.a.as_mut().unwrap();
        let id = stack.connect_with(now, VIP, remote, ECHO, svc, held).expect("connect");
        // The SYN is this call's output (the caller seals it).
        held.seal(stack.commit_tag(), now);
        id
    }

    fn route_from_engine(&mut self, frames: Vec<Vec<u8>>) {
        for f in frames {
            let dst = EthernetFrame::new_checked(&f[..]).unwrap().dst();
            if dst == CLIENT_MAC {
                self.to_client.push(f);
            } else {
                assert!(dst == B_MAC || dst.is_broadcast(), "to {dst:?}");
                if let Some((h, p)) = tcp_of(&f) {
                    self.eb.take(&h, &p);
                }
                self.to_b.push(f);
            }
        }
    }

    /// One step of 100 µs: every end takes what reached it and runs its timers.
    fn step(&mut self) {
        self.now += STEP_US;
        let now = Instant(self.now);
        let frames = std::mem::take(&mut self.to_engine);
        let mut rx = frames.iter().map(Vec::as_slice);
        let sent = if let Some((stack, held, _)) = self.a.as_mut() {
            Iteration::new(Some(&Acked(self.wm))).run(stack, now, &mut rx, held);
            if std::mem::take(&mut self.die_mid_step) {
                let n = std::mem::take(&mut self.die_after_deltas);
                if n > 0 {
                    self.replicate_some(n);
                }
                self.a = None;
                return;
            }
            self.replicate();
            let (_, held, _) = self.a.as_mut().unwrap();
            held.release(self.wm.into(), now);
            held.take_sent()
        } else if let Some((stack, held)) = self.s_stack.as_mut() {
            Iteration::new(Some(&Acked(u64::MAX))).run(stack, now, &mut rx, held);
            held.take_sent()
        } else {
            Vec::new() // nobody owns the VIP: what reaches it is lost
        };
        self.route_from_engine(sent);
        // B has no standby: its output leaves at once.
        let mut out = Held::default();
        for f in std::mem::take(&mut self.to_b) {
            self.b.process(now, &f, &mut out);
            out.seal(self.b.commit_tag(), now);
        }
        self.b.poll(now, &mut out);
        out.seal(self.b.commit_tag(), now);
        out.release(u64::MAX.into(), now);
        for f in out.take_sent() {
            if let Some((h, p)) = tcp_of(&f) {
                self.be.take(&h, &p);
            }
            self.to_engine.push(f);
        }
        if let Some(c) = self.client.as_mut() {
            let cfg = tcp();
            for f in std::mem::take(&mut self.to_client) {
                let (h, p) = tcp_of(&f).unwrap();
                c.rsts += h.flags.rst() as u32;
                c.tcb.on_segment(now, &cfg, &h, &p, &mut c.app, &mut c.out);
            }
            c.tcb.on_timer(now, &cfg, &mut c.app, &mut c.out);
            c.tcb.poll_send(now, &cfg, &mut c.app, &mut c.out);
            self.to_engine.append(&mut c.out.frames);
        }
    }

    fn run_until(&mut self, what: &str, mut done: impl FnMut(&World) -> bool) {
        for _ in 0..400_000 {
            if done(self) {
                return;
            }
            self.step();
        }
        let states = |s: &Stack| s.flows().iter().map(|(_, k, f)| (k.local_port, f.tcb.state())).collect::<Vec<_>>();
        let engine = self.a.as_ref().map(|a| &a.0).or(self.s_stack.as_ref().map(|s| &s.0));
        let events: Vec<_> = engine.map_or(vec![], |e| Event::ALL.iter().filter(|&&v| e.counters().get(v) > 0).map(|&v| (v, e.counters().get(v))).collect());
        panic!(
            "never: {what}: SYNs {:?}, engine→B {} B {} bytes (fins {} {}, rsts {} {}), engine flows {:?}, B flows {:?}, engine events {events:?}",
            self.eb.syns,
            self.eb.bytes.len(),
            self.be.bytes.len(),
            self.eb.fin,
            self.be.fin,
            self.eb.rsts,
            self.be.rsts,
            engine.map(states),
            states(&self.b),
        );
    }

    /// A dies (its held output and unshipped records with it); S takes over after the
    /// detection time. Returns (installed, not installed).
    fn kill_and_take_over(&mut self) -> (u64, u64) {
        self.a = None;
        for _ in 0..DETECT_US / STEP_US {
            self.step();
        }
        let now = Instant(self.now);
        let cfg = self.s_cfg.clone().unwrap_or_else(|| self.cfg.clone());
        let mut stack = Stack::new(cfg.clone(), now);
        let mut held = Held::default();
        let flows = self.s.take_for_takeover(&cfg, &self.status, 1);
        let r = resume(&mut stack, now, flows.into_iter().flatten(), &mut held);
        self.s_stack = Some((stack, held));
        r
    }

    /// The client connects to A's echo listener and the handshake completes.
    fn client_connects(&mut self, upload: &[u8]) -> FlowId {
        let mut out = ClientOut { frames: vec![], src_port: 41000, dst_port: 7 };
        let tcb = Tcb::connect(Instant(self.now), &tcp(), 41000, 7, SeqNum(0x1000), &mut out);
        self.to_engine.append(&mut out.frames);
        self.client = Some(Client { tcb, app: App::new(upload.to_vec()), out, rsts: 0 });
        self.run_until("client established", |w| w.client.as_ref().unwrap().tcb.state() == State::Established);
        self.engine().flows().iter().find(|(_, k, _)| k.remote_port == 41000).unwrap().0
    }

    fn finished(&self, want: &[u8]) -> bool {
        self.be.bytes.len() == want.len() && self.be.fin && self.eb.fin && self.b.flows().is_empty()
    }
}

/// Whatever the kill point of a SYN-SENT flow (its SYN left or not, B answered or not),
/// the standby sends the same SYN (ISN and port) again and the connection completes. For
/// several secrets: the replica's timestamp clock must continue the SYN's whatever the
/// flow's timestamp offset (a replica made before the SYN left once restored a clock
/// behind it for half the offsets: B's PAWS check dropped the handshake's last ACK).
#[test]
fn a_syn_sent_flow_taken_over_sends_its_syn_again_unchanged_and_completes() {
    for (syn_left, key) in [false, true].into_iter().flat_map(|l| (0..8u8).map(move |k| (l, k))) {
        let mut w = World::new();
        w.cfg.open_secrets.adopt(GroupId::DEFAULT, [key.wrapping_mul(37); 16]);
        let req = request(20_000);
        let id = w.connect(SocketAddrV4::new(B_IP, 80), owing(&req));
        let (isn, lport) = {
            let t = &w.a_stack().flows().get(id).unwrap().tcb;
            (t.iss(), t.local_port())
        };
        w.replicate();
        if syn_left {
            // The standby has the flow; the SYN leaves; B's SYN-ACK finds A dead.
            let (_, held, _) = w.a.as_mut().unwrap();
            held.release(w.wm.into(), Instant(w.now));
            let sent = held.take_sent();
            w.route_from_engine(sent);
            assert_eq!(w.eb.syns, [(isn, lport)]);
        }
        let (installed, lost) = w.kill_and_take_over();
        assert_eq!((installed, lost), (1, 0));
        let want = response(20_000);
        w.run_until("the response", |w| w.finished(&want));
        let first = if syn_left { 1 } else { 0 };
        assert_eq!(w.eb.syns[first], (isn, lport), "the standby's SYN is the replica's: same ISN, same port");
        assert!(w.eb.syns.iter().all(|s| *s == (isn, lport)));
        assert_eq!(w.be.bytes, want, "B's response arrived whole (syn_left {syn_left})");
        assert_eq!(&w.eb.bytes[..req.len()], &req[..], "the request the replica's service owed");
        assert_eq!((w.eb.rsts, w.be.rsts), (0, 0));
        w.run_until("S's flow closed", |w| w.s_stack.as_ref().unwrap().0.flows().is_empty());
    }
}

/// A flow whose SYN still waited for its next hop at the kill: the standby resolves it
/// itself (its replica has no next hop yet), then sends the SYN.
#[test]
fn a_flow_still_resolving_its_next_hop_resolves_it_again_on_the_standby() {
    let mut w = World::unaware();
    let req = request(5000);
    let id = w.connect(SocketAddrV4::new(B_IP, 80), owing(&req));
    assert_eq!(w.a_stack().flows().get(id).unwrap().peer_mac, MacAddr::ZERO, "next hop unknown yet");
    w.replicate();
    assert_eq!(w.to_b.len(), 0, "A's ARP request was held output too: it never left");
    let (installed, lost) = w.kill_and_take_over();
    assert_eq!((installed, lost), (1, 0));
    let want = response(5000);
    w.run_until("the response", |w| w.finished(&want));
    let s = &w.s_stack.as_ref().unwrap().0;
    assert_eq!((s.counters().get(Event::ArpRequestsSent), s.counters().get(Event::NeighborsResolved)), (1, 1));
    assert_eq!(w.eb.syns.len(), 1);
    assert!(w.be.bytes == want && w.eb.rsts + w.be.rsts == 0);
}

#[test]
fn an_established_opened_flow_resumes_like_a_passive_one() {
    let mut w = World::new();
    let n = 300_000;
    let req = request(n);
    let id = w.connect(SocketAddrV4::new(B_IP, 80), owing(&req));
    w.run_until("mid-transfer", |w| w.be.bytes.len() > 100_000);
    assert_eq!(w.a_stack().flows().get(id).unwrap().tcb.state(), State::Established);
    let (installed, lost) = w.kill_and_take_over();
    assert_eq!((installed, lost), (1, 0));
    let want = response(n);
    w.run_until("the response", |w| w.finished(&want));
    assert!(w.be.bytes == want, "B → engine stream byte-exact across the takeover");
    let mut echoed = req.clone();
    echoed.extend_from_slice(&want);
    assert!(w.eb.bytes == echoed, "engine → B: the request, then the response echoed, byte-exact");
    assert_eq!((w.eb.rsts, w.be.rsts), (0, 0), "no reset either way");
    assert_eq!(w.eb.syns.len(), 1, "one SYN: the takeover resumed, it did not reconnect");
    w.run_until("S's flow closed", |w| w.s_stack.as_ref().unwrap().0.flows().is_empty());
}

/// The standby's image of flow `id` (slot = its flow-table id on A).
fn replica_image(w: &mut World, id: FlowId) -> FlowImage {
    w.s.workers[0].flows.get_mut((id.index(), id.generation())).expect("replicated").image
}

#[test]
fn a_linked_pair_replicates_as_one_unit_and_is_taken_over_together() {
    let mut w = World::new();
    let client = w.client_connects(b"ping");
    let backend = w.connect(SocketAddrV4::new(B_IP, 80), owing(&request(50_000)));
    w.a_stack().link(client, backend).unwrap();
    w.run_until("mid-transfer", |w| w.be.bytes.len() > 20_000 && w.client.as_ref().unwrap().app.received == b"ping");
    // Both halves' replicas name each other, with their origins.
    let (ci, bi) = (replica_image(&mut w, client), replica_image(&mut w, backend));
    assert_eq!((ci.origin, ci.link), (Origin::Accepted, Some((backend.index(), backend.generation()))));
    assert_eq!((bi.origin, bi.link), (Origin::Opened, Some((client.index(), client.generation()))));
    for (id, img) in [(client, ci), (backend, bi)] {
        let f = w.a_stack().flows().get(id).unwrap();
        let t = f.tcb.snapshot();
        let same = |a: &TcbSnapshot, b: &TcbSnapshot| (a.state, a.iss, a.irs, a.snd_una, a.rcv_nxt, a.rx_delivered, a.local_port) == (b.state, b.iss, b.irs, b.snd_una, b.rcv_nxt, b.rx_delivered, b.local_port);
        assert!(same(&img.tcb, &t), "replica of {id:?} = the active's flow");
        assert_eq!((img.listener, img.peer_mac, img.vip_mac), (f.listener, f.peer_mac, f.vip_mac));
    }
    let (installed, lost) = w.kill_and_take_over();
    assert_eq!((installed, lost), (2, 0));
    assert_eq!(w.status.takeover_link_orphans.load(Relaxed), 0);
    {
        let s = &w.s_stack.as_ref().unwrap().0;
        let (c2, b2) = (s.flows().iter().find(|f| f.2.origin == Origin::Accepted).unwrap().0, s.flows().iter().find(|f| f.2.origin == Origin::Opened).unwrap().0);
        assert_eq!((s.partner(c2), s.partner(b2)), (Some(b2), Some(c2)), "installed as a pair");
        assert_eq!(s.counters().get(Event::LinkOrphans), 0);
    }
    let want = response(50_000);
    w.run_until("the response", |w| w.finished(&want));
    assert!(w.be.bytes == want && w.eb.rsts + w.be.rsts == 0);
    // The opened half ended in order: its partner (the client's flow) was told.
    let s = &mut w.s_stack.as_mut().unwrap().0;
    let ev = s.take_link_event().expect("the client half is told");
    assert_eq!(ev.end, PartnerEnd::Closed);
    assert_eq!(s.partner(ev.flow), None);
    assert_eq!(w.client.as_ref().unwrap().rsts, 0);
}

#[test]
fn a_half_taken_over_without_its_partner_is_an_orphan_closed_cleanly() {
    // The backend half's replica is missing: the client half is reset at its client's first
    // ACK (the answer to the takeover probe), with the sequence number that ACK names.
    let mut w = World::new();
    let client = w.client_connects(b"ping");
    let backend = w.connect(SocketAddrV4::new(B_IP, 80), owing(&request(50_000)));
    w.a_stack().link(client, backend).unwrap();
    w.run_until("linked and replicated", |w| w.client.as_ref().unwrap().app.received == b"ping" && w.be.bytes.len() > 1000);
    assert!(w.s.workers[0].flows.remove((backend.index(), backend.generation())).is_some());
    let (installed, lost) = w.kill_and_take_over();
    assert_eq!((installed, lost), (1, 0));
    assert_eq!(w.status.takeover_link_orphans.load(Relaxed), 1);
    let s = &mut w.s_stack.as_mut().unwrap().0;
    assert_eq!(s.counters().get(Event::LinkOrphans), 1);
    let orphan = s.flows().iter().next().unwrap().0;
    assert_eq!(s.flows().get(orphan).unwrap().link, Link::Orphan);
    assert_eq!(s.take_link_event(), Some(LinkEvent { flow: orphan, end: PartnerEnd::Lost }));
    w.run_until("the client reset", |w| w.client.as_ref().unwrap().tcb.state() == State::Closed);
    let c = w.client.as_ref().unwrap();
    assert_eq!((c.rsts, c.tcb.stats().rst_received), (1, 1), "one reset, and the client accepted it");
    assert!(w.s_stack.as_ref().unwrap().0.flows().is_empty(), "not left waiting for its partner");

    // The client half's replica is missing: the backend half, still opening, is not resumed.
    let mut w = World::new();
    let client = w.client_connects(b"ping");
    let backend = w.connect(SocketAddrV4::new(B_IP, 80), owing(&request(1000)));
    w.a_stack().link(client, backend).unwrap();
    w.replicate();
    assert!(w.s.workers[0].flows.remove((client.index(), client.generation())).is_some());
    let (installed, lost) = w.kill_and_take_over();
    assert_eq!((installed, lost), (0, 1), "a SYN-SENT orphan is not resumed");
    assert_eq!(w.s_stack.as_ref().unwrap().0.counters().get(Event::LinkOrphans), 1);
}

#[test]
fn a_half_whose_partner_closed_before_the_takeover_resumes_alone() {
    let mut w = World::new();
    let client = w.client_connects(b"ping");
    // The client's flow is quiet from here on: nothing but the standby's own bookkeeping can
    // tell it that its partner is gone.
    w.run_until("the echo", |w| w.client.as_ref().unwrap().app.received == b"ping");
    for _ in 0..10 {
        w.step();
    }
    // B has no listener on 81: it resets the SYN; the opened half ends, never connected.
    let backend = w.connect(SocketAddrV4::new(B_IP, 81), owing(b"x"));
    w.a_stack().link(client, backend).unwrap();
    w.run_until("the backend half reset", |w| w.a.as_ref().unwrap().0.flows().len() == 1);
    assert_eq!(w.a_stack().take_link_event(), Some(LinkEvent { flow: client, end: PartnerEnd::NeverConnected }));
    w.replicate();
    let (installed, lost) = w.kill_and_take_over();
    assert_eq!((installed, lost), (1, 0));
    assert_eq!(w.status.takeover_link_orphans.load(Relaxed), 0, "the standby unlinked it with its partner's close");
    w.client.as_mut().unwrap().app.upload.extend_from_slice(b" again");
    w.run_until("the client's echo", |w| w.client.as_ref().unwrap().app.received == b"ping again");
    assert_eq!(w.client.as_ref().unwrap().rsts, 0);
}

// ------------------------------------------------------------------ the wire layout

fn image(origin: Origin, link: Option<(u32, u32)>) -> FlowImage {
    FlowImage {
        key: flowtwin_engine::flow::FlowKey::v4(B_IP, 80, VIP, 40123),
        tcb: TcbSnapshot { state: State::SynSent, local_port: 40123, remote_port: 80, iss: SeqNum(0xdead_beef), snd_nxt: SeqNum(0xdead_bef0), mss: 1460, ..Default::default() },
        peer_mac: B_MAC,
        vip_mac: vrrp_mac(1),
        listener: ECHO,
                listener_fp: 0,
        origin,
        link,
    }
}

fn round_trip(img: &FlowImage) -> Result<FlowImage, DeltaError> {
    let d = Delta { header: DeltaHeader { worker: 0, group: 0, slot: 3, generation: 9, seq: 77 }, body: DeltaBody::FlowNew(FlowStateRec::from_image(img)) };
    let mut recs: Vec<Record> = Vec::new();
    delta::encode(&d, &mut recs).unwrap();
    let (back, used) = delta::decode(&recs).unwrap();
    assert_eq!((back, used), (d, delta::FLOW_STATE_RECORDS));
    match back.body {
        DeltaBody::FlowNew(r) => r.to_image(),
        _ => unreachable!(),
    }
}

#[test]
fn origin_and_link_survive_encode_decode_and_bad_bytes_are_refused() {
    for img in [image(Origin::Opened, None), image(Origin::Opened, Some((5, 0xffff_fff0))), image(Origin::Accepted, Some((0, 1)))] {
        assert_eq!(round_trip(&img), Ok(img));
    }
    // Layout: byte 168 origin, 169 linked, 172 slot, 176 generation (since version 4).
    let r = FlowStateRec::from_image(&image(Origin::Opened, Some((0x0102_0304, 0x0a0b_0c0d))));
    assert_eq!(&r.service_cursor[40..52], &[1, 1, 0, 0, 4, 3, 2, 1, 0x0d, 0x0c, 0x0b, 0x0a]);
    const { assert!(delta::DELTA_VERSION >= 4) };
    // A plain accepted flow writes what the reserved bytes always held.
    assert!(FlowStateRec::from_image(&image(Origin::Accepted, None)).service_cursor[40..].iter().all(|&b| b == 0));
    let mut bad = r;
    bad.service_cursor[40] = 2;
    assert_eq!(bad.to_image(), Err(DeltaError::Field("origin")));
    let mut bad = r;
    bad.service_cursor[41] = 7;
    assert_eq!(bad.to_image(), Err(DeltaError::Field("link")));
}
