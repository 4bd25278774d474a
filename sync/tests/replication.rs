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
use flowtwin_engine::stack::{vrrp_mac, Listener, ServiceSpec, ServiceState, StackConfig, Vip};
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
        }],
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
        tcp: TcpConfig::default(),
        flow_capacity: 1024,
        isn_key: *b"flowtwin-sync-t!",
        timer_tick: flowtwin_engine::time::Duration::from_micros(100),
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

// ---- tests -------------------------------------------------------------------------------

/// (a) + (b): replay exactness with a standby present from the start, and the watermark
/// tracking the standby's acks in strict mode.
#[test]
fn replay_exact_and_watermark_tracks_acks() {
    let _g = serial();
    let stack = stack_cfg();
    let (acfg, scfg) = pair_cfgs(Duration::from_millis(10));
    let (mut ws, links) = workers(2, &stack, 0x5eed);
    let shared: Vec<_> = ws.iter().map(|w| w.repl.shared().clone()).collect();
    let active = node(acfg, &stack, links);
    // (b) no standby: everything released, unprotected.
    wait_until(
        "active role, unprotected",
        Duration::from_secs(3),
        || {},
        || {
            active.status.role() == Role::Active
                && active
                    .status
                    .unprotected
                    .load(std::sync::atomic::Ordering::Relaxed)
        },
    );
    assert!(shared.iter().all(|s| s.watermark() == RELEASE_ALL));

    let standby = node(scfg, &stack, idle_links(2));
    let t = wait_until(
        "in_sync",
        Duration::from_secs(5),
        || pump(&mut ws),
        || active.status.in_sync(),
    );
    println!("standby in sync after {t:?} (empty snapshot)");
    assert_eq!(standby.status.peer_state(), PeerState::InSync);

    // Events; in strict mode the watermark stays at or below what was emitted and catches up.
    let mut saw_behind = false;
    for i in 0..6000 {
        let w = i % 2;
        ws[w].random_event();
        let s = &shared[w];
        let wm = s.watermark();
        assert_ne!(
            wm, RELEASE_ALL,
            "in-sync strict standby: watermark must track acks"
        );
        assert!(wm <= ws[w].repl.last_seq());
        saw_behind |= wm < ws[w].repl.last_seq();
    }
    assert!(
        saw_behind,
        "output should have had to wait for an ack at least once"
    );
    let t = wait_pumped(
        "watermark catch-up",
        Duration::from_secs(10),
        &mut ws,
        |ws| ws.iter().all(FakeWorker::caught_up),
    );
    println!(
        "caught up {t:?} after the last event; deltas sent {}, bytes {}, lag now {} records",
        active
            .status
            .deltas_sent
            .load(std::sync::atomic::Ordering::Relaxed),
        active
            .status
            .bytes_replicated
            .load(std::sync::atomic::Ordering::Relaxed),
        active
            .status
            .lag_records
            .load(std::sync::atomic::Ordering::Relaxed),
    );
    assert_eq!(
        standby
            .status
            .replay_errors
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(
        standby
            .status
            .seq_gaps
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );

    // (a) take over on request and compare every flow with the reference.
    let t = standby.take_over_now();
    assert_eq!(t.reason, TakeoverReason::Requested);
    assert!(t.in_sync);
    assert_eq!(t.epoch, 2);
    assert_same(&stack, &ws, &t);
    println!(
        "replay exact: {} flows compared",
        ws.iter().map(|w| w.flows.len()).sum::<usize>()
    );
    // The old active learns it is fenced and holds all output.
    wait_until(
        "old active fenced",
        Duration::from_secs(3),
        || {},
        || active.status.role() != Role::Active,
    );
    assert!(shared
        .iter()
        .all(|s| s.watermark() != RELEASE_ALL || active.status.role() == Role::Standby));
    standby.handle.stop();
    active.handle.stop();
}

/// Runs of ACK-only updates of one flow (a download) are coalesced by the sync core, and the
/// standby still replays every flow exactly.
#[test]
fn coalesced_updates_replay_exactly() {
    let _g = serial();
    let stack = stack_cfg();
    let (acfg, scfg) = pair_cfgs(Duration::from_millis(10));
    let (mut ws, links) = workers(1, &stack, 0xc0a1);
    let active = node(acfg, &stack, links);
    let standby = node(scfg, &stack, idle_links(1));
    wait_until("in_sync", Duration::from_secs(5), || pump(&mut ws), || active.status.in_sync());
    for round in 0..400 {
        let w = &mut ws[0];
        w.random_event();
        if w.flows.is_empty() {
            continue;
        }
        // A run of ACKs for one flow, emitted back to back (one RX burst's worth).
        let i = w.rng.below(w.flows.len() as u64) as usize;
        for _ in 0..(4 + round % 29) {
            w.step_with(i, false);
        }
        w.repl.flush();
    }
    wait_pumped("watermark catch-up", Duration::from_secs(10), &mut ws, |ws| {
        ws.iter().all(FakeWorker::caught_up)
    });
    let rel = std::sync::atomic::Ordering::Relaxed;
    let coalesced = active.status.deltas_coalesced.load(rel);
    let sent = active.status.deltas_sent.load(rel);
    // Sequence numbers count deltas (a long Data event is split into several).
    let emitted = ws[0].repl.last_seq();
    println!("deltas emitted {emitted}, sent {sent}, coalesced {coalesced}");
    assert!(coalesced > 0, "runs of updates of one flow must be coalesced");
    assert_eq!(sent + coalesced, emitted, "every delta is sent or coalesced");
    assert_eq!(standby.status.replay_errors.load(rel), 0);
    assert_eq!(standby.status.seq_gaps.load(rel), 0);
    let t = standby.take_over_now();
    assert_same(&stack, &ws, &t);
    standby.handle.stop();
    active.handle.stop();
}

/// (b) the watermark returns to "release all" when the standby goes away (service must
/// not stop without a standby), and async mode never holds output.
#[test]
fn watermark_without_standby_and_async() {
    let _g = serial();
    let stack = stack_cfg();
    for mode in [Mode::Strict, Mode::Async] {
        let (mut acfg, mut scfg) = pair_cfgs(Duration::from_millis(10));
        // (Both ends in the mode: a pair in different modes is refused.)
        acfg.mode = mode;
        scfg.mode = mode;
        let (mut ws, links) = workers(1, &stack, 42);
        let shared = ws[0].repl.shared().clone();
        let active = node(acfg, &stack, links);
        wait_until(
            "active",
            Duration::from_secs(3),
            || {},
            || active.status.role() == Role::Active,
        );
        for _ in 0..50 {
            ws[0].random_event();
        }
        assert_eq!(shared.watermark(), RELEASE_ALL);
        let standby = node(scfg, &stack, idle_links(1));
        wait_until(
            "in_sync",
            Duration::from_secs(5),
            || pump(&mut ws),
            || active.status.in_sync(),
        );
        for _ in 0..200 {
            ws[0].random_event();
            if mode == Mode::Async {
                assert_eq!(shared.watermark(), RELEASE_ALL);
            }
        }
        wait_pumped("acks", Duration::from_secs(5), &mut ws, |ws| {
            active
                .status
                .lag_records
                .load(std::sync::atomic::Ordering::Relaxed)
                == 0
                && (mode == Mode::Async || ws[0].caught_up())
        });
        if mode == Mode::Strict {
            assert_eq!(shared.watermark(), ws[0].repl.last_seq());
        }
        standby.handle.stop();
        let t = wait_until(
            "release all after standby loss",
            Duration::from_secs(2),
            || pump(&mut ws),
            || shared.watermark() == RELEASE_ALL,
        );
        println!("{mode:?}: standby loss -> release all after {t:?}");
        assert!(
            standby.takeovers.try_recv().is_err(),
            "a stopped standby must not take over"
        );
        active.handle.stop();
    }
}

/// A standby that joins and reports in sync, and acknowledges batches only while `ack_now`
/// is set (from the start): the scripted peer for the async lag bound.
struct SilentStandby {
    ack_now: Arc<std::sync::atomic::AtomicBool>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SilentStandby {
    fn connect(active: SocketAddr, hello: &[u8]) -> SilentStandby {
        use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
        let ack_now = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, st) = (ack_now.clone(), stop.clone());
        let mut s = TcpStream::connect(active).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(2))).unwrap();
        s.write_all(hello).unwrap();
        let thread = std::thread::spawn(move || {
            let (mut buf, mut chunk) = (Vec::new(), vec![0u8; 1 << 16]);
            let (mut token, mut last_seq) = (0u64, 0u64);
            let mut last_hb = Instant::now() - Duration::from_secs(1);
            while !st.load(Relaxed) {
                if let Ok(n) = s.read(&mut chunk) {
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let mut at = 0;
                while let Ok(Some((m, used))) = proto::decode(&buf[at..]) {
                    match m {
                        Msg::Snapshot { token: t } => token = t,
                        Msg::Batch { last_seq: l, .. } => last_seq = last_seq.max(l),
                        _ => {}
                    }
                    at += used;
                }
                buf.drain(..at);
                let mut out = Vec::new();
                if last_hb.elapsed() >= Duration::from_millis(5) {
                    let hb = Heartbeat { epoch: 1, role: Role::Standby as u8, in_sync: token != 0, token, lag_records: 0, lag_us: 0, flows: 0 };
                    proto::encode(&Msg::Heartbeat(hb), &mut out);
                    last_hb = Instant::now();
                }
                if a.load(Relaxed) && last_seq > 0 {
                    proto::encode(&Msg::Ack { worker: 0, seq: last_seq }, &mut out);
                }
                if !out.is_empty() && s.write_all(&out).is_err() {
                    return;
                }
            }
        });
        SilentStandby { ack_now, stop, thread: Some(thread) }
    }
}

impl Drop for SilentStandby {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Async mode never holds output while the standby keeps up, but once the oldest
/// unacknowledged batch is older than `async_max_lag` it holds output (the watermark falls
/// back to what the standby acknowledged) until the standby catches up: the lag, and so what
/// a failover can lose, is bounded. Counted in `async_lag_holds`.
#[test]
fn async_lag_is_bounded_by_holding_output() {
    use std::sync::atomic::Ordering::Relaxed;
    let _g = serial();
    let stack = stack_cfg();
    let (mut acfg, _) = pair_cfgs(Duration::from_millis(10));
    acfg.mode = Mode::Async;
    acfg.async_max_lag = Duration::from_millis(40);
    let listen = acfg.listen;
    let (mut ws, links) = workers(1, &stack, 77);
    let shared = ws[0].repl.shared().clone();
    let active = node(acfg, &stack, links);
    wait_until("active", Duration::from_secs(3), || {}, || active.status.role() == Role::Active);
    // An async standby beating every 10 ms, as the active (a mismatch is refused).
    let peer = SilentStandby::connect(listen, &peer_hello_with(9, 0, Role::Standby, 1, 10_000));
    wait_until("in_sync", Duration::from_secs(5), || pump(&mut ws), || active.status.in_sync());
    // Caught up (the join snapshot acknowledged), then the standby falls silent: the oldest
    // unacknowledged batch is sent after t0.
    wait_pumped("join acknowledged", Duration::from_secs(3), &mut ws, |_| active.status.lag_records.load(Relaxed) == 0);
    peer.ack_now.store(false, Relaxed);
    std::thread::sleep(Duration::from_millis(10)); // acks already in flight arrive
    let t0 = Instant::now();
    // Output flows freely at first, although nothing is acknowledged.
    for _ in 0..100 {
        ws[0].random_event();
    }
    assert_eq!(shared.watermark(), RELEASE_ALL, "async: no hold while the lag is young");
    // Past the bound: output is held at the acknowledged sequence (nothing yet).
    wait_pumped("hold once the lag passes async_max_lag", Duration::from_secs(3), &mut ws, |_| {
        shared.watermark() != RELEASE_ALL
    });
    let held_after = t0.elapsed();
    println!("async: output held {held_after:?} after the last event (bound 40 ms), lag {} us", active.status.lag_us.load(Relaxed));
    assert!(held_after >= Duration::from_millis(30), "held too early: {held_after:?}");
    assert!(shared.watermark() < ws[0].repl.last_seq(), "held output must wait for the standby");
    assert!(active.status.async_lag_holds.load(Relaxed) > 0);
    // Still held while the standby stays silent.
    std::thread::sleep(Duration::from_millis(100));
    assert_ne!(shared.watermark(), RELEASE_ALL);
    // The standby catches up: output flows again.
    peer.ack_now.store(true, Relaxed);
    wait_pumped("release after the standby caught up", Duration::from_secs(3), &mut ws, |_| {
        shared.watermark() == RELEASE_ALL
    });
    drop(peer);
    active.handle.stop();
}

/// (c) join: flows that exist before the standby connects arrive through the snapshot
/// (New + SvcImage + Barrier); the standby reports in_sync and replays exactly afterwards.
#[test]
fn late_standby_joins_through_snapshot() {
    let _g = serial();
    let stack = stack_cfg();
    let (acfg, scfg) = pair_cfgs(Duration::from_millis(10));
    let (mut ws, links) = workers(2, &stack, 0xabc);
    let active = node(acfg, &stack, links);
    wait_until(
        "active",
        Duration::from_secs(3),
        || {},
        || active.status.role() == Role::Active,
    );
    for i in 0..3000 {
        ws[i % 2].random_event();
    }
    let before: usize = ws.iter().map(|w| w.flows.len()).sum();
    let standby = node(scfg, &stack, idle_links(2));
    // Keep traffic going while the standby joins.
    let mut i = 0;
    let t = wait_until(
        "in_sync",
        Duration::from_secs(5),
        || {
            ws[i % 2].random_event();
            i += 1;
        },
        || active.status.in_sync(),
    );
    println!("late standby in sync after {t:?} ({before} flows in the snapshot)");
    for i in 0..2000 {
        ws[i % 2].random_event();
    }
    wait_pumped("catch-up", Duration::from_secs(10), &mut ws, |ws| {
        ws.iter().all(FakeWorker::caught_up)
    });
    assert_eq!(
        standby
            .status
            .replay_errors
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    let t = standby.take_over_now();
    assert!(t.in_sync);
    assert_same(&stack, &ws, &t);
    standby.handle.stop();
    active.handle.stop();
}

/// (d) a peer speaking another protocol version is refused with both versions named.
#[test]
fn version_mismatch_is_refused() {
    let _g = serial();
    let stack = stack_cfg();
    let (acfg, _) = pair_cfgs(Duration::from_millis(10));
    let listen = acfg.listen;
    let active = node(acfg, &stack, idle_links(1));
    wait_until(
        "active",
        Duration::from_secs(3),
        || {},
        || active.status.role() == Role::Active,
    );
    std::thread::sleep(Duration::from_millis(20));
    let mut s = TcpStream::connect(listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut out = Vec::new();
    let bogus = Hello {
        magic: MAGIC,
        version: PROTO_VERSION + 41,
        node_id: 99,
        epoch: 0,
        role: Role::Standby,
        mode: 0,
        workers: 1,
        heartbeat_us: 5000,
    };
    proto::encode(&Msg::Hello(bogus), &mut out);
    s.write_all(&out).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let mut msgs = Vec::new();
    let mut at = 0;
    while let Ok(Some((m, used))) = proto::decode(&buf[at..]) {
        msgs.push(format!("{m:?}"));
        if let Msg::Refused { reason } = &m {
            println!("refusal received: {reason}");
            assert!(
                reason.contains(&format!("version {}", PROTO_VERSION + 41)),
                "{reason}"
            );
            assert!(
                reason.contains(&format!("version {PROTO_VERSION}")),
                "{reason}"
            );
        }
        at += used;
    }
    assert!(
        msgs.iter().any(|m| m.starts_with("Refused")),
        "got {msgs:?}"
    );
    let e = active.status.last_error();
    assert!(e.contains("version mismatch"), "{e}");
    assert_eq!(
        active
            .status
            .refused
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(active.status.peer_state(), PeerState::None);
    active.handle.stop();
}

/// (e1) the active's process dies (stream closed): the standby takes over at once with
/// every flow.
#[test]
fn active_death_by_close_takes_over_immediately() {
    let _g = serial();
    let stack = stack_cfg();
    let (acfg, scfg) = pair_cfgs(Duration::from_millis(5));
    let (mut ws, links) = workers(2, &stack, 0xdead);
    let active = node(acfg, &stack, links);
    wait_until(
        "active",
        Duration::from_secs(3),
        || {},
        || active.status.role() == Role::Active,
    );
    let standby = node(scfg, &stack, idle_links(2));
    wait_until(
        "in_sync",
        Duration::from_secs(5),
        || pump(&mut ws),
        || active.status.in_sync(),
    );
    for i in 0..2000 {
        ws[i % 2].random_event();
    }
    wait_pumped("catch-up", Duration::from_secs(10), &mut ws, |ws| {
        ws.iter().all(FakeWorker::caught_up)
    });
    let t0 = Instant::now();
    active.handle.stop();
    let (t, at) = standby
        .takeovers
        .recv_timeout(Duration::from_secs(2))
        .expect("takeover");
    let took = at.duration_since(t0);
    println!(
        "EOF takeover: {took:?} from killing the active to on_takeover ({} flows, takeover itself {} µs)",
        t.flows.iter().map(Vec::len).sum::<usize>(),
        standby.status.last_takeover_us.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert_eq!(t.reason, TakeoverReason::PeerClosed);
    assert!(took < Duration::from_millis(100), "{took:?}");
    assert_same(&stack, &ws, &t);
    // The role turns Active before the engine callback runs; the takeover counter after it.
    wait_until(
        "new active",
        Duration::from_secs(2),
        || {},
        || {
            standby.status.role() == Role::Active
                && standby.status.takeovers.load(std::sync::atomic::Ordering::Relaxed) >= 1
        },
    );
    assert_eq!(
        standby
            .status
            .takeovers
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    standby.handle.stop();
}

/// (e2) the active hangs (stream open, silent): the standby declares it dead after
/// `dead_after` heartbeat intervals. The "active" is a raw peer fed from a real
/// RingReplicator, so the standby code is the real one.
#[test]
fn silent_active_detected_after_three_heartbeats() {
    let _g = serial();
    let stack = stack_cfg();
    // 20 ms rather than the 5 ms default: the assertion is "after three missed heartbeats,
    // not before", and a loaded 2-CPU CI runner can deschedule this thread for >15 ms.
    let hb = Duration::from_millis(20);
    let (acfg, mut scfg) = pair_cfgs(hb);
    scfg.dead_after = 3;
    let lst = TcpListener::bind(acfg.listen).unwrap();
    let (repl, mut link) = worker_channel(0, 1 << 12);
    let mut fw = FakeWorker::new(stack.clone(), repl, 77);
    let standby = node(scfg, &stack, idle_links(1));
    let (mut s, _) = lst.accept().unwrap();
    s.set_nodelay(true).unwrap();
    let mut out = Vec::new();
    let hello = Hello {
        magic: MAGIC,
        version: PROTO_VERSION,
        node_id: 8,
        epoch: 4,
        role: Role::Active,
        mode: 0,
        workers: 1,
        heartbeat_us: 20_000,
    };
    proto::encode(&Msg::Hello(hello), &mut out);
    proto::encode(&Msg::Snapshot { token: 1 }, &mut out);
    link.shared.request_snapshot(1);
    for _ in 0..300 {
        fw.random_event();
    }
    let mut recs: Vec<Record> = vec![[0; 8]; 1 << 12];
    let n = link.consumer.pop_burst(&mut recs);
    let first = delta::peek_header(&recs).unwrap().header.seq;
    proto::encode_batch(&mut out, 0, first, fw.repl.last_seq(), &recs[..n]);
    s.write_all(&out).unwrap();
    // Heartbeats for a while, then silence with the stream left open.
    for _ in 0..10 {
        std::thread::sleep(hb);
        out.clear();
        proto::encode(
            &Msg::Heartbeat(proto::Heartbeat {
                epoch: 4,
                role: 1,
                ..Default::default()
            }),
            &mut out,
        );
        s.write_all(&out).unwrap();
    }
    let silent_from = Instant::now();
    let (t, at) = standby
        .takeovers
        .recv_timeout(Duration::from_secs(2))
        .expect("takeover");
    let detect = at.duration_since(silent_from);
    println!(
        "silent-active takeover: {detect:?} after the last heartbeat (heartbeat {hb:?} × 3; detection {} µs, takeover {} µs)",
        standby.status.last_detect_us.load(std::sync::atomic::Ordering::Relaxed),
        standby.status.last_takeover_us.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert_eq!(t.reason, TakeoverReason::HeartbeatTimeout);
    assert_eq!(t.epoch, 5, "fenced: active epoch + 1");
    assert!(t.in_sync);
    assert!(detect >= hb * 3 - Duration::from_millis(1), "{detect:?}");
    assert!(detect < hb * 3 + Duration::from_millis(250), "{detect:?}");
    assert_same(&stack, std::slice::from_ref(&fw), &t);
    drop(s);
    standby.handle.stop();
}

/// (f) ring full: records queue in the backlog in order, nothing is lost, `ReplFull` only
/// when the backlog is full too (without taking a sequence number), Data is split.
#[test]
fn ring_full_backlog_keeps_order() {
    let _g = serial();
    let stack = stack_cfg();
    let (repl, mut link) = worker_channel_with_backlog(3, 64, 256);
    let mut fw = FakeWorker::new(stack, repl, 5);
    fw.open();
    let (slot, img) = (fw.flows[0].slot, fw.flows[0].img);
    let mut expected_offset = 0u64;
    let mut full_at = None;
    let payload: Vec<u8> = (0..4000u32).map(|i| i as u8).collect();
    for i in 0..100 {
        let before = fw.repl.last_seq();
        match fw.repl.emit(
            slot,
            ReplEvent::Data {
                offset: expected_offset,
                bytes: &payload,
            },
        ) {
            Ok(seq) => {
                assert_eq!(seq, before + 3, "4000 bytes = 3 Data deltas");
                expected_offset += payload.len() as u64;
            }
            Err(_) => {
                assert_eq!(
                    fw.repl.last_seq(),
                    before,
                    "ReplFull takes no sequence number"
                );
                full_at = Some(i);
                break;
            }
        }
    }
    let full_at = full_at.expect("backlog bound must be hit");
    assert!(fw.repl.backlog() > 0);
    assert!(fw.repl.shared().repl_full() >= 1);
    // Drain in small steps, flushing between: order and contiguity are kept.
    let mut recs: Vec<Record> = vec![[0; 8]; 64];
    let (mut next_seq, mut next_off) = (2u64, 0u64); // seq 1 = the New
    let mut saw_new = false;
    loop {
        let n = link.consumer.peek_burst(&mut recs);
        if n == 0 {
            fw.repl.flush();
            if link.consumer.is_empty() {
                break;
            }
            continue;
        }
        let mut at = 0;
        while at < n {
            let (d, used) = match delta::decode(&recs[at..n]) {
                Ok(x) => x,
                Err(delta::DeltaError::Truncated { .. }) => break,
                Err(e) => panic!("{e}"),
            };
            at += used;
            match d.body {
                DeltaBody::FlowNew(_) => {
                    assert_eq!(d.header.seq, 1);
                    saw_new = true;
                }
                DeltaBody::Data(dr) => {
                    assert_eq!(d.header.seq, next_seq, "sequence order");
                    assert_eq!(dr.offset, next_off, "stream order");
                    let o = (dr.offset % payload.len() as u64) as usize;
                    assert_eq!(dr.payload(), &payload[o..o + dr.payload().len()]);
                    next_seq += 1;
                    next_off += dr.payload().len() as u64;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        link.consumer.advance(at);
        fw.repl.flush();
    }
    assert!(saw_new);
    assert_eq!(next_off, expected_offset, "every accepted byte arrived");
    assert_eq!(next_seq - 1, fw.repl.last_seq());
    assert_eq!(fw.repl.backlog(), 0);
    // Room again: the refused event can be retried.
    fw.repl.emit(slot, ReplEvent::Update(&img)).unwrap();
    println!(
        "backlog filled after {full_at} × 4000-byte events; all {} deltas arrived in order",
        next_seq - 1
    );
}

/// FlowImage ↔ FlowStateRec round trip through the delta encoding.
#[test]
fn flow_image_roundtrip() {
    let stack = stack_cfg();
    let (repl, _l) = worker_channel(0, 64);
    let mut fw = FakeWorker::new(stack, repl, 9);
    fw.open();
    fw.flows[0].img.tcb.tx_acked = 0x1_0000_0001;
    fw.flows[0].img.tcb.tx_sent = 0x2_0000_0002;
    fw.flows[0].img.tcb.rx_delivered = 0x3_0000_0003;
    fw.flows[0].img.tcb.ts_last_sent = 0xdead_beef;
    fw.flows[0].img.tcb.state = State::LastAck;
    let img = fw.flows[0].img;
    let rec = FlowStateRec::from_image(&img);
    let d = delta::Delta {
        header: delta::DeltaHeader {
            worker: 1,
            slot: 2,
            generation: 3,
            seq: 4,
        },
        body: DeltaBody::FlowUpdate(rec),
    };
    let mut v = Vec::new();
    delta::encode(&d, &mut v).unwrap();
    let (back, _) = delta::decode(&v).unwrap();
    let DeltaBody::FlowUpdate(r2) = back.body else {
        panic!()
    };
    assert_eq!(r2.to_image().unwrap(), img);
    let mut bad = r2;
    bad.state = 0;
    assert!(bad.to_image().is_err());
}

/// ctl failback: the active hands over to its in-sync standby and fences itself.
#[test]
fn handover_to_in_sync_standby() {
    let _g = serial();
    let stack = stack_cfg();
    let (acfg, scfg) = pair_cfgs(Duration::from_millis(10));
    let (mut ws, links) = workers(1, &stack, 0x4a4d);
    let shared = ws[0].repl.shared().clone();
    let active = node(acfg, &stack, links);
    wait_until(
        "active",
        Duration::from_secs(3),
        || {},
        || active.status.role() == Role::Active,
    );
    let standby = node(scfg, &stack, idle_links(1));
    wait_pumped("in_sync", Duration::from_secs(5), &mut ws, |_| {
        active.status.in_sync()
    });
    for _ in 0..500 {
        ws[0].random_event();
    }
    wait_pumped("catch-up", Duration::from_secs(5), &mut ws, |ws| {
        ws[0].caught_up()
    });
    active.status.request_handover();
    let (t, _) = standby
        .takeovers
        .recv_timeout(Duration::from_secs(2))
        .expect("takeover");
    assert_eq!(t.reason, TakeoverReason::Handover);
    assert_eq!(t.epoch, 2);
    assert_same(&stack, &ws, &t);
    assert_eq!(shared.watermark(), flowtwin_engine::commit::HOLD_ALL, "an engine that handed over releases nothing");
    assert!(active.status.retain_flows() || active.status.in_sync(), "it keeps its flows until its rejoin is in sync");
    wait_until(
        "old active follows as standby",
        Duration::from_secs(3),
        || {},
        || active.status.role() == Role::Standby && active.status.epoch() == 2,
    );
    wait_until("its rejoin is in sync: the kept flows are let go", Duration::from_secs(3), || {}, || !active.status.retain_flows());
    standby.handle.stop();
    active.handle.stop();
}

/// CPU cost of an idle, in-sync pair (the machine has 2 CPUs; the loops must back off).
#[test]
fn idle_pair_cpu() {
    let _g = serial();
    fn cpu_ticks() -> u64 {
        let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let rest = s.rsplit(')').next().unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        // Fields 14 and 15 (utime, stime) are at 11 and 12 after the command name.
        f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
    }
    let stack = stack_cfg();
    let (acfg, scfg) = pair_cfgs(Duration::from_millis(5));
    let (mut ws, links) = workers(2, &stack, 3);
    let active = node(acfg, &stack, links);
    wait_until(
        "active",
        Duration::from_secs(3),
        || {},
        || active.status.role() == Role::Active,
    );
    let standby = node(scfg, &stack, idle_links(2));
    wait_pumped("in_sync", Duration::from_secs(5), &mut ws, |_| {
        active.status.in_sync()
    });
    let (c0, t0) = (cpu_ticks(), Instant::now());
    std::thread::sleep(Duration::from_secs(1));
    let (c1, dt) = (cpu_ticks(), t0.elapsed());
    let pct = (c1 - c0) as f64 / 100.0 / dt.as_secs_f64() * 100.0;
    println!("idle in-sync pair (both sync threads, 5 ms heartbeats): {pct:.1}% of one CPU");
    assert!(pct < 60.0, "{pct}");
    assert_eq!(
        active
            .status
            .heartbeats_missed
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    standby.handle.stop();
    active.handle.stop();
}

// ---- split brain: fencing between two actives, and a dropped standby ------------------------

/// A Hello as another engine would send it.
fn peer_hello(node_id: u32, epoch: u64, role: Role) -> Vec<u8> {
    peer_hello_with(node_id, epoch, role, 0, 5000)
}

/// A Hello with the given mode (0 strict, 1 async) and heartbeat interval.
fn peer_hello_with(node_id: u32, epoch: u64, role: Role, mode: u8, heartbeat_us: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let h = Hello { magic: MAGIC, version: PROTO_VERSION, node_id, epoch, role, mode, workers: 1, heartbeat_us };
    proto::encode(&Msg::Hello(h), &mut out);
    out
}

/// Accept up to `max` connections on `lst` within `limit`, answering each with `reply`. The
/// sockets are returned open: closing them would look like that peer dying.
fn answer_connections(lst: &TcpListener, reply: &[u8], limit: Duration, max: usize) -> Vec<TcpStream> {
    lst.set_nonblocking(true).unwrap();
    let t0 = Instant::now();
    let mut open = Vec::new();
    while t0.elapsed() < limit && open.len() < max {
        match lst.accept() {
            Ok((mut s, _)) => {
                let _ = s.write_all(reply);
                open.push(s);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    open
}

/// An engine started as active with no standby (nothing listens on its peer address yet),
/// once it is active; with its own (listen, peer) addresses.
fn lone_active(stack: &Arc<StackConfig>) -> (Node, SocketAddr, SocketAddr) {
    let (acfg, _) = pair_cfgs(Duration::from_millis(5));
    let (listen, peer) = (acfg.listen, acfg.peer);
    let a = node(acfg, stack, idle_links(1));
    wait_until("active", Duration::from_secs(3), || {}, || a.status.role() == Role::Active);
    (a, listen, peer)
}

/// An active engine alone (its standby gone) probes its peer address; a *newer* active
/// answering there (a standby that took over while this engine stalled) makes it step down,
/// so a split brain heals instead of both engines answering for the VIP.
#[test]
fn lone_active_steps_down_when_its_probe_finds_a_newer_active() {
    let _g = serial();
    let stack = stack_cfg();
    let (a, _, peer) = lone_active(&stack);
    // Bound only now: A's start-up attempt to reach its peer must not sit in this backlog.
    let fake = TcpListener::bind(peer).unwrap();
    let probes = answer_connections(&fake, &peer_hello(99, 9, Role::Active), Duration::from_secs(1), 1);
    assert_eq!(probes.len(), 1, "the lone active never probed its peer");
    wait_until("stepped down", Duration::from_secs(2), || {}, || a.status.role() != Role::Active);
    a.handle.stop();
}

/// The probe's rule is "older steps down": an *older* active answering leaves us active.
#[test]
fn lone_active_stays_active_when_its_probe_finds_an_older_active() {
    let _g = serial();
    let stack = stack_cfg();
    let (a, _, peer) = lone_active(&stack);
    // Bound only now: A's start-up attempt to reach its peer must not sit in this backlog.
    let fake = TcpListener::bind(peer).unwrap();
    // Our node's epoch is 1; epoch 0 from a higher node id is older on both counts.
    let probes = answer_connections(&fake, &peer_hello(99, 0, Role::Active), Duration::from_millis(700), usize::MAX);
    assert!(probes.len() >= 2, "expected repeated probes while alone, saw {}", probes.len());
    assert_eq!(a.status.role(), Role::Active, "an older peer must not fence us");
    a.handle.stop();
}

/// The other direction: a newer active connects to our listener (its own probe); we step down.
#[test]
fn active_steps_down_when_a_newer_active_connects() {
    let _g = serial();
    let stack = stack_cfg();
    let (a, listen, _) = lone_active(&stack);
    let mut s = TcpStream::connect(listen).unwrap();
    s.write_all(&peer_hello(99, 9, Role::Active)).unwrap();
    wait_until("stepped down", Duration::from_secs(2), || {}, || a.status.role() != Role::Active);
    a.handle.stop();
}

/// A live active that drops its standby says so (Refused) before closing. The standby must
/// rejoin, never take over: a stalled standby reading "closed" as "dead" caused a split brain.
#[test]
fn standby_dropped_by_a_live_active_rejoins_instead_of_taking_over() {
    let _g = serial();
    let stack = stack_cfg();
    let (_, scfg) = pair_cfgs(Duration::from_millis(5));
    let fake = TcpListener::bind(scfg.peer).unwrap();
    let b = node(scfg, &stack, idle_links(1));
    let (mut s, _) = fake.accept().unwrap();
    let mut out = peer_hello(8, 1, Role::Active);
    proto::encode(&Msg::Snapshot { token: 1 }, &mut out);
    proto::encode(&Msg::Refused { reason: "dropped by the active: no heartbeat for 30ms".into() }, &mut out);
    s.write_all(&out).unwrap();
    drop(s);
    // It comes back as a standby (a new connection), and no takeover happened.
    let back = answer_connections(&fake, &peer_hello(8, 1, Role::Active), Duration::from_secs(1), 1);
    assert_eq!(back.len(), 1, "the dropped standby did not reconnect");
    if let Ok((t, _)) = b.takeovers.try_recv() {
        panic!("a standby told it was dropped took over: {:?}", t.reason);
    }
    assert_ne!(b.status.role(), Role::Active);
    b.handle.stop();
}

/// The active dropped an in-sync standby (it found it silent: on a starved machine the
/// active's own thread may be the one that starved) and then died before the standby could
/// rejoin. The standby's rejoin is refused (nothing listens on the active's sync port): within
/// `fence_hold` of the drop the active released nothing the standby lacks, so the standby
/// takes over instead of waiting for an active that is gone (found by scripts/soak).
#[test]
fn standby_dropped_by_an_active_that_then_dies_takes_over() {
    let _g = serial();
    let stack = stack_cfg();
    let (_, scfg) = pair_cfgs(Duration::from_millis(5));
    let fence_hold = scfg.fence_hold;
    let fake = TcpListener::bind(scfg.peer).unwrap();
    let b = node(scfg, &stack, idle_links(1));
    let (mut s, _) = fake.accept().unwrap();
    let mut out = peer_hello(8, 1, Role::Active);
    proto::encode(&Msg::Snapshot { token: 1 }, &mut out);
    // The join snapshot of an empty worker: just its barrier. The standby is in sync.
    let barrier = delta::Delta {
        header: delta::DeltaHeader { worker: 0, slot: 0, generation: 0, seq: 1 },
        body: DeltaBody::Barrier { token: 1 },
    };
    let mut recs: Vec<Record> = Vec::new();
    delta::encode(&barrier, &mut recs).unwrap();
    proto::encode_batch(&mut out, 0, 1, 1, &recs);
    s.write_all(&out).unwrap();
    wait_until("in sync", Duration::from_secs(2), || {}, || b.status.in_sync());
    let t_drop = Instant::now();
    let mut out = Vec::new();
    proto::encode(&Msg::Refused { reason: "dropped by the active: no heartbeat for 16ms".into() }, &mut out);
    s.write_all(&out).unwrap();
    // The active dies with its sync port: a rejoin is refused.
    drop(fake);
    drop(s);
    let (t, at) = b.takeovers.recv_timeout(Duration::from_secs(2)).expect("the standby took over");
    assert!(matches!(t.reason, TakeoverReason::DroppedThenGone), "{:?}", t.reason);
    assert!(at.duration_since(t_drop) < fence_hold + Duration::from_millis(20), "took {:?}", at.duration_since(t_drop));
    assert_eq!(b.status.role(), Role::Active);
    b.handle.stop();
}
