//! End-to-end replication over loopback: an in-process active and standby, fake workers
//! driving real `RingReplicator`s with event sequences built from real engine types, and a
//! reference service driven directly to compare the standby's replayed services against.
//!
//! Tests share one lock (the machine has 2 CPUs; parallel engines would skew the timing
//! measurements) and each is bounded in time.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use flowtwin_engine::flow::FlowKey;
use flowtwin_engine::replica::{FlowImage, ReplEvent, Replicator, ShadowFlow};
use flowtwin_engine::seq::SeqNum;
use flowtwin_engine::service::echo::EchoConfig;
use flowtwin_engine::service::http::{HttpCounters, ObjectConn};
use flowtwin_engine::service::object::{ObjectStore, StoreConfig};
use flowtwin_engine::service::ByteStream;
use flowtwin_engine::stack::{vrrp_mac, GroupId, Listener, ServiceSpec, ServiceState, StackConfig, Vip};
use flowtwin_engine::tcp::{State, TcbSnapshot, TcpConfig};
use flowtwin_engine::wire::MacAddr;
use flowtwin_sync::delta::{self, DeltaBody, FlowStateRec};
use flowtwin_sync::proto::{self, Heartbeat, Hello, Msg, Role, MAGIC, PROTO_VERSION};
use flowtwin_sync::ring::Record;
use flowtwin_sync::{
    start, worker_channel, worker_channel_with_backlog, Mode, PeerState, RingReplicator,
    SyncConfig, SyncHandle, SyncStatus, Takeover, TakeoverReason, WorkerLink, RELEASE_ALL,
};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const LISTENER_OBJECT: u16 = 0;
const LISTENER_ECHO: u16 = 1;

fn stack_cfg() -> Arc<StackConfig> {
    let store = ObjectStore::from_objects(
        StoreConfig::default(),
        [
            ("hello.txt", b"hello world\n".to_vec()),
            ("big.bin", (0..20_000u32).map(|i| (i * 7) as u8).collect()),
        ],
    )
    .0;
    Arc::new(StackConfig {
        vips: vec![Vip {
            addr: VIP,
            mac: vrrp_mac(1),
            group: GroupId::DEFAULT,
        }],
        groups: Vec::new(),
        listeners: vec![
            Listener {
                vip: VIP,
                port: 80,
                spec: ServiceSpec::Object(Arc::new(store)),
            },
            Listener {
                vip: VIP,
                port: 7,
                spec: ServiceSpec::Echo(EchoConfig {
                    buf_size: 16 * 1024,
                }),
            },
        ],
        routes: flowtwin_engine::route::RouteTable::all_on_link(),
        tcp: TcpConfig::default(),
        flow_capacity: 1024,
        isn_key: *b"flowtwin-sync-t!",
        open_secrets: Default::default(),
        timer_tick: flowtwin_engine::time::Duration::from_micros(100),
        retired: Vec::new(),
    })
}

/// Runs `f` on the service of a flow as a byte stream (what the engine's private `bind` does).
fn with_stream<R>(
    svc: &mut ServiceState,
    spec: &ServiceSpec,
    f: impl FnOnce(&mut dyn ByteStream) -> R,
) -> R {
    let mut http = HttpCounters::default();
    match (svc, spec) {
        (ServiceState::Echo(e), _) => f(e),
        (ServiceState::Object(h), ServiceSpec::Object(store)) => {
            f(&mut ObjectConn::new(h, store, &mut http))
        }
        _ => panic!("service/spec mismatch"),
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

// ---- the fake worker: a flow model with a reference service ---------------------------

struct RefFlow {
    slot: (u32, u32),
    img: FlowImage,
    svc: ServiceState,
    /// Object flows: request bytes not yet consumed by the service.
    pending: Vec<u8>,
    fin: bool,
}

struct FakeWorker {
    cfg: Arc<StackConfig>,
    repl: RingReplicator,
    flows: Vec<RefFlow>,
    next_slot: u32,
    next_port: u16,
    rng: Rng,
    events: u64,
}

impl FakeWorker {
    fn new(cfg: Arc<StackConfig>, repl: RingReplicator, seed: u64) -> FakeWorker {
        let w = repl.worker();
        FakeWorker {
            cfg,
            repl,
            flows: Vec::new(),
            next_slot: 1,
            next_port: 10_000 + w * 5000,
            rng: Rng(seed | 1),
            events: 0,
        }
    }

    fn emit(&mut self, slot: (u32, u32), ev: ReplEvent<'_>) {
        // The test rings are large enough; a real worker would hold output and retry.
        self.repl.emit(slot, ev).expect("ring + backlog full");
        self.events += 1;
    }

    /// Answers a pending join snapshot: New + SvcImage for every flow, then Barrier.
    fn poll_snapshot(&mut self) {
        let Some(token) = self.repl.pending_snapshot() else {
            return;
        };
        let mut img_bytes = Vec::new();
        for i in 0..self.flows.len() {
            let (slot, img) = (self.flows[i].slot, self.flows[i].img);
            img_bytes.clear();
            self.flows[i].svc.image(&mut img_bytes);
            self.emit(slot, ReplEvent::New(&img));
            self.emit(slot, ReplEvent::SvcImage(&img_bytes));
        }
        self.emit((0, 0), ReplEvent::Barrier(token));
    }

    fn open(&mut self) {
        let listener = if self.rng.below(2) == 0 {
            LISTENER_OBJECT
        } else {
            LISTENER_ECHO
        };
        let port = self.next_port;
        self.next_port += 1;
        let iss = self.rng.next() as u32;
        let irs = self.rng.next() as u32;
        let lport = self.cfg.listeners[listener as usize].port;
        let tcb = TcbSnapshot {
            state: State::Established,
            local_port: lport,
            remote_port: port,
            iss: SeqNum(iss),
            irs: SeqNum(irs),
            snd_una: SeqNum(iss.wrapping_add(1)),
            snd_nxt: SeqNum(iss.wrapping_add(1)),
            rcv_nxt: SeqNum(irs.wrapping_add(1)),
            snd_wnd: 64_000,
            rcv_wnd: 65_535,
            snd_wscale: 7,
            rcv_wscale: 7,
            mss: 1460,
            sack_ok: true,
            ts_ok: true,
            ts_offset: self.rng.next() as u32,
            ts_recent: 12345,
            ts_last_sent: 777,
            tx_acked: 0,
            tx_sent: 0,
            rx_delivered: 0,
        };
        let img = FlowImage {
            key: FlowKey::v4(
                Ipv4Addr::new(198, 18, 1, (port % 250) as u8 + 1),
                port,
                VIP,
                lport,
            ),
            tcb,
            peer_mac: MacAddr([2, 0, 0, 0, (port >> 8) as u8, port as u8]),
            vip_mac: vrrp_mac(1),
            listener,
            listener_fp: 0,
            origin: Default::default(),
            link: None,
        };
        let slot = (self.next_slot, self.rng.below(1000) as u32);
        self.next_slot += 1;
        let svc = ServiceState::for_spec(&self.cfg.listeners[listener as usize].spec);
        self.emit(slot, ReplEvent::New(&img));
        self.flows.push(RefFlow {
            slot,
            img,
            svc,
            pending: Vec::new(),
            fin: false,
        });
    }

    /// One TCP call on flow `i`: the client acks some output and sends some bytes (maybe a
    /// FIN). Emits the image, then the bytes the service consumed (the replica contract).
    fn step(&mut self, i: usize) {
        self.step_with(i, true)
    }

    /// A TCP call with client bytes (`talk`) or an ACK only (a bulk sender's pattern: only
    /// the acked offset and ts_recent move, so the sync core may coalesce the updates).
    fn step_with(&mut self, i: usize, talk: bool) {
        let cfg = self.cfg.clone();
        let rng = &mut self.rng;
        let f = &mut self.flows[i];
        let spec = &cfg.listeners[f.img.listener as usize].spec;
        let tx_end = with_stream(&mut f.svc, spec, |s| s.tx_end());
        let acked = f.img.tcb.tx_acked + rng.below(tx_end - f.img.tcb.tx_acked + 1);
        // Client bytes.
        let mut input = Vec::new();
        if !f.fin && talk {
            if f.img.listener == LISTENER_ECHO {
                let n = rng.below(3000) as usize;
                input.extend((0..n).map(|_| rng.next() as u8));
            } else {
                if f.pending.len() < 200 {
                    let req: &[u8] = match rng.below(4) {
                        0 => b"GET /hello.txt HTTP/1.1\r\nHost: v\r\n\r\n",
                        1 => b"GET /big.bin HTTP/1.1\r\nHost: v\r\n\r\n",
                        2 => b"GET /missing HTTP/1.1\r\nHost: v\r\n\r\n",
                        _ => b"GET /gen/30000 HTTP/1.1\r\nHost: v\r\n\r\n",
                    };
                    f.pending.extend_from_slice(req);
                }
                let n = 1 + rng.below(f.pending.len() as u64) as usize;
                input.extend_from_slice(&f.pending[..n]);
            }
        }
        let fin_now = talk && !f.fin && rng.below(40) == 0;
        // The reference service, in the order TCP calls it: ACK, text, FIN.
        let rx_before = f.img.tcb.rx_delivered;
        let (consumed, new_end) = with_stream(&mut f.svc, spec, |s| {
            if acked > 0 {
                s.on_acked(acked);
            }
            let n = if input.is_empty() {
                0
            } else {
                s.on_recv(&input)
            };
            if fin_now {
                s.on_peer_fin();
            }
            (n, s.tx_end())
        });
        if f.img.listener == LISTENER_OBJECT {
            f.pending.drain(..consumed);
        }
        if fin_now {
            f.fin = true;
            f.img.tcb.state = State::CloseWait;
        }
        let t = &mut f.img.tcb;
        t.tx_acked = acked;
        t.tx_sent = new_end;
        t.rx_delivered = rx_before + consumed as u64;
        t.snd_una = SeqNum(t.iss.0.wrapping_add(1).wrapping_add(acked as u32));
        t.snd_nxt = SeqNum(t.iss.0.wrapping_add(1).wrapping_add(new_end as u32));
        t.rcv_nxt =
            SeqNum(t.irs.0.wrapping_add(1).wrapping_add(t.rx_delivered as u32) + fin_now as u32);
        t.ts_recent = t.ts_recent.wrapping_add(1);
        let (slot, img) = (f.slot, f.img);
        let data = input[..consumed].to_vec();
        self.emit(slot, ReplEvent::Update(&img));
        if !data.is_empty() {
            self.emit(
                slot,
                ReplEvent::Data {
                    offset: rx_before,
                    bytes: &data,
                },
            );
        }
    }

    fn close(&mut self, i: usize) {
        let f = self.flows.swap_remove(i);
        self.emit(f.slot, ReplEvent::Close);
    }

    /// One random event.
    fn random_event(&mut self) {
        self.poll_snapshot();
        let r = self.rng.below(100);
        if self.flows.len() < 4 || (r < 6 && self.flows.len() < 60) {
            self.open();
        } else if r < 8 {
            let i = self.rng.below(self.flows.len() as u64) as usize;
            self.close(i);
        } else {
            let i = self.rng.below(self.flows.len() as u64) as usize;
            self.step(i);
        }
        self.repl.flush();
    }

    fn caught_up(&self) -> bool {
        self.repl.shared().watermark() >= self.repl.last_seq()
    }
}

/// Compares the standby's takeover flows with the reference flows, byte for byte.
fn assert_same(cfg: &StackConfig, workers: &[FakeWorker], t: &Takeover) {
    for (w, fw) in workers.iter().enumerate() {
        let got = &t.flows[w];
        assert_eq!(got.len(), fw.flows.len(), "worker {w}: flow count");
        let mut by_key: HashMap<FlowKey, &ShadowFlow> =
            got.iter().map(|f| (f.image.key, f)).collect();
        for rf in &fw.flows {
            let sf = by_key
                .remove(&rf.img.key)
                .expect("flow missing on the standby");
            assert_eq!(sf.image, rf.img, "image");
            assert_eq!(sf.rx_replayed, rf.img.tcb.rx_delivered, "rx replayed");
            let spec = &cfg.listeners[rf.img.listener as usize].spec;
            let mut a = clone_state(&rf.svc, spec);
            let mut b = clone_state(&sf.svc, spec);
            let (ea, ca) = with_stream(&mut a, spec, |s| (s.tx_end(), s.tx_closed()));
            let (eb, cb) = with_stream(&mut b, spec, |s| (s.tx_end(), s.tx_closed()));
            assert_eq!((ea, ca), (eb, cb), "tx_end / tx_closed of {:?}", rf.img.key);
            let mut off = rf.img.tcb.tx_acked;
            let (mut ba, mut bb) = (vec![0u8; 4096], vec![0u8; 4096]);
            while off < ea {
                let na = with_stream(&mut a, spec, |s| s.read_at(off, &mut ba));
                let nb = with_stream(&mut b, spec, |s| s.read_at(off, &mut bb));
                assert_eq!(na, nb, "read_at length at {off}");
                assert!(na > 0);
                assert_eq!(
                    ba[..na],
                    bb[..nb],
                    "read_at bytes at {off} of {:?}",
                    rf.img.key
                );
                off += na as u64;
            }
        }
    }
}

/// A copy of a service state through its image (ServiceState is not Clone).
fn clone_state(s: &ServiceState, spec: &ServiceSpec) -> ServiceState {
    let mut b = Vec::new();
    s.image(&mut b);
    ServiceState::from_image(spec, &b).expect("image round trip")
}

// ---- engines ---------------------------------------------------------------------------

struct Node {
    handle: SyncHandle,
    status: Arc<SyncStatus>,
    takeovers: mpsc::Receiver<(Takeover, Instant)>,
}

impl Node {
    /// `flowtwin ctl takeover`: asks this (standby) node to take over and returns what it
    /// handed to the engine.
    fn take_over_now(&self) -> Takeover {
        self.status.request_takeover();
        let (t, _) = self.takeovers.recv_timeout(Duration::from_secs(5)).expect("takeover");
        t
    }
}

fn node(cfg: SyncConfig, stack: &Arc<StackConfig>, links: Vec<WorkerLink>) -> Node {
    let status = Arc::new(SyncStatus::new());
    let (tx, rx) = mpsc::channel();
    let st = status.clone();
    let handle = start(
        cfg,
        stack.clone(),
        links,
        status.clone(),
        Box::new(move |t: Takeover| {
            let n = t.flows.iter().map(Vec::len).sum::<usize>() as u64;
            st.set_flows_resumed(n);
            let _ = tx.send((t, Instant::now()));
        }),
    )
    .unwrap();
    Node {
        handle,
        status,
        takeovers: rx,
    }
}

/// Configs for an active/standby pair. `dead_after` is generous (1 s at 10 ms heartbeats) so
/// that a loaded CI machine descheduling a thread for a few ms does not look like a death;
/// the detection test sets its own.
fn pair_cfgs(hb: Duration) -> (SyncConfig, SyncConfig) {
    let (a, b) = (free_addr(), free_addr());
    let base = SyncConfig {
        heartbeat: hb,
        dead_after: 100,
        ring_records: 1 << 14,
        ..SyncConfig::default()
    };
    (
        SyncConfig {
            node_id: 8,
            listen: a,
            peer: b,
            role: Role::Active,
            ..base.clone()
        },
        SyncConfig {
            node_id: 9,
            listen: b,
            peer: a,
            role: Role::Standby,
            ..base
        },
    )
}

fn workers(n: u16, stack: &Arc<StackConfig>, seed: u64) -> (Vec<FakeWorker>, Vec<WorkerLink>) {
    let mut ws = Vec::new();
    let mut links = Vec::new();
    for w in 0..n {
        let (r, l) = worker_channel(w, 1 << 14);
        ws.push(FakeWorker::new(
            stack.clone(),
            r,
            seed.wrapping_mul(w as u64 + 7),
        ));
        links.push(l);
    }
    (ws, links)
}

/// Standby-side links (its own idle workers).
fn idle_links(n: u16) -> Vec<WorkerLink> {
    (0..n).map(|w| worker_channel(w, 1024).1).collect()
}

fn wait_until(
    what: &str,
    limit: Duration,
    mut pump: impl FnMut(),
    mut cond: impl FnMut() -> bool,
) -> Duration {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        pump();
        std::thread::sleep(Duration::from_micros(200));
    }
    t0.elapsed()
}

/// A pair's configs with heartbeat `hb`, `n` fake workers (seeded), and the active engine
/// started on their links; returns the standby's config, the workers and the active.
fn active_with_workers(stack: &Arc<StackConfig>, hb: Duration, n: u16, seed: u64) -> (SyncConfig, Vec<FakeWorker>, Node) {
    let (acfg, scfg) = pair_cfgs(hb);
    let (ws, links) = workers(n, stack, seed);
    (scfg, ws, node(acfg, stack, links))
}

/// Waits (3 s at most) until `n` is the active.
fn wait_active(n: &Node) {
    wait_until("active", Duration::from_secs(3), || {}, || n.status.role() == Role::Active);
}

/// Waits for `cond` while the fake workers answer snapshots and flush their backlogs.
fn wait_pumped(
    what: &str,
    limit: Duration,
    ws: &mut [FakeWorker],
    cond: impl Fn(&[FakeWorker]) -> bool,
) -> Duration {
    let t0 = Instant::now();
    while !cond(ws) {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        pump(ws);
        std::thread::sleep(Duration::from_micros(200));
    }
    t0.elapsed()
}

fn pump(ws: &mut [FakeWorker]) {
    for w in ws.iter_mut() {
        w.poll_snapshot();
        w.repl.flush();
    }
}

/// A Hello as another engine would send it.
fn peer_hello(node_id: u32, epoch: u64, role: Role) -> Vec<u8> {
    peer_hello_with(node_id, epoch, role, 0, 5000)
}

/// A Hello with the given mode (0 strict, 1 async) and heartbeat interval.
fn peer_hello_with(node_id: u32, epoch: u64, role: Role, mode: u8, heartbeat_us: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let h = Hello { magic: MAGIC, version: PROTO_VERSION, node_id, epoch, role, mode, workers: 1, heartbeat_us, dead_after: 100, fence_hold_us: SyncConfig::default().fence_hold.as_micros() as u32, handover_hold_us: SyncConfig::default().handover_hold.as_micros() as u32, groups: stack_cfg().group_digest(), session: 1, secret: [0; 16] };
    proto::encode(&Msg::Hello(h), &mut out);
    out
}

mod replay;
mod roles;
mod split_brain;
