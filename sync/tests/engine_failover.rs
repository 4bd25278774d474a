//! The whole replication path without DPDK: a real TCP client (the engine's own `Tcb`, active
//! open) talks to engine A (`Stack` + `RingReplicator` + active sync node); A's output is held
//! exactly as the dataplane holds it: each pass is the dataplane's own `Iteration` (tagged
//! with the stack's commit tag after each call, released once the standby's acknowledgement
//! reaches the tag). Standby B (a sync node over
//! loopback) replays everything. Mid-transfer A dies; B's replicas are installed into a fresh
//! `Stack` and the client's transfer must finish byte-exact, with no RST, for both services
//! (echo upload+download, and HTTP downloads of `/gen/<n>`).

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant as StdInstant};

use flowtwin_engine::iteration::{resume, Acked, CommitSink, Iteration, RxFrames};
use flowtwin_engine::service::object::gen_byte_range;
use flowtwin_engine::stack::{Stack, StackConfig};
use flowtwin_engine::tcp::{Tcb, TcpConfig};
use flowtwin_engine::time::{Duration, Instant};
use flowtwin_engine::wire::tcp::TcpPacket;
use flowtwin_engine::seq::SeqNum;
use flowtwin_engine::stack::FrameSink;
use flowtwin_sync::{start, worker_channel, Mode, Role, SyncConfig, SyncStatus, Takeover, WorkerShared};

mod common;
use common::{App, ClientOut, Held, CLIENT, VIP};

fn stack_cfg() -> Arc<StackConfig> {
    common::engine_cfg()
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

struct Client {
    tcb: Tcb,
    app: App,
    out: ClientOut,
    rsts: u32,
}

impl Client {
    fn on_frame(&mut self, now: Instant, cfg: &TcpConfig, f: &[u8]) {
        let seg = TcpPacket::new_checked(&f[34..]).expect("engine frames parse");
        assert_eq!(
            seg.checksum_status(IpAddr::V4(VIP), IpAddr::V4(CLIENT)),
            flowtwin_engine::wire::ChecksumStatus::Valid
        );
        let h = seg.header();
        if h.flags.rst() {
            self.rsts += 1;
        }
        // The client Tcb's ports are (local, remote) = (src_port, dst_port) of ClientOut.
        self.tcb.on_segment(now, cfg, &h, seg.payload(), &mut self.app, &mut self.out);
        self.tcb.poll_send(now, cfg, &mut self.app, &mut self.out);
    }
}

/// Run one client against A, kill A after `kill_after` received bytes, finish against B.
fn failover_case(port: u16, upload: Vec<u8>, expect: Vec<u8>, kill_after: usize) {
    let cfg = stack_cfg();
    let tcpc = TcpConfig { delayed_ack: Duration::from_millis(0), ..TcpConfig::default() };
    let (a_addr, b_addr) = (free_addr(), free_addr());
    let base = SyncConfig { heartbeat: StdDuration::from_millis(5), dead_after: 200, ring_records: 1 << 14, mode: Mode::Strict, ..SyncConfig::default() };

    // Engine A: stack + replicator + active sync node.
    let (repl, link) = worker_channel(0, 1 << 14);
    let shared: WorkerShared = link.shared.clone();
    let a_status = Arc::new(SyncStatus::new());
    let mut a_node = Some(start(
        SyncConfig { node_id: 1, listen: a_addr, peer: b_addr, role: Role::Active, ..base.clone() },
        cfg.clone(),
        vec![link],
        a_status.clone(),
        Box::new(|_t: Takeover| panic!("A must not take over")),
    )
    .unwrap());
    let t0 = StdInstant::now();
    let now = || Instant(t0.elapsed().as_micros() as u64 + 1_000_000);
    let mut a = Stack::new(cfg.clone(), now());
    a.set_replicator(Box::new(repl));
    let mut a_out = Held::default();

    // Standby B.
    let (b_repl, b_link) = worker_channel(0, 1 << 14);
    drop(b_repl);
    let b_status = Arc::new(SyncStatus::new());
    let (tx, rx) = mpsc::channel::<Takeover>();
    let b_node = start(
        SyncConfig { node_id: 2, listen: b_addr, peer: a_addr, role: Role::Standby, ..base },
        cfg.clone(),
        vec![b_link],
        b_status.clone(),
        Box::new(move |t: Takeover| {
            let _ = tx.send(t);
        }),
    )
    .unwrap();
    // Wait for A to be active and B in sync (A's output would otherwise not be protected).
    let deadline = StdInstant::now() + StdDuration::from_secs(10);
    while !(a_status.role() == Role::Active && a_status.in_sync()) {
        // The worker answers snapshot requests (empty table: just the barrier).
        let token = shared.snapshot_request();
        if token != 0 {
            a.request_snapshot(token);
        }
        a.replication_tick();
        assert!(StdInstant::now() < deadline, "standby never got in sync");
        std::thread::sleep(StdDuration::from_millis(1));
    }

    // The client opens a connection.
    let mut c = Client {
        tcb: Tcb::connect(now(), &tcpc, 40000, port, SeqNum(0x8000_0000), &mut ClientOut { frames: vec![], src_port: 40000, dst_port: port }),
        app: App::new(upload),
        out: ClientOut { frames: vec![], src_port: 40000, dst_port: port },
        rsts: 0,
    };
    // Re-emit the SYN into our sink (connect wrote it into a temporary one).
    c.tcb.on_timer(Instant(u64::MAX / 4), &tcpc, &mut c.app, &mut c.out);
    let mut killed = false;
    let mut b: Option<Stack> = None;
    let mut b_out = Held::default();
    let deadline = StdInstant::now() + StdDuration::from_secs(30);
    while c.app.received.len() < expect.len() {
        assert!(StdInstant::now() < deadline, "stalled: received {} of {} (killed {killed})", c.app.received.len(), expect.len());
        let n = now();
        // One worker pass of the engine that owns the VIP: the client's frames, timers,
        // replication, release.
        let frames: Vec<Vec<u8>> = c.out.frames.drain(..).collect();
        let mut frames = frames.iter().map(Vec::as_slice);
        let released = match (&mut b, killed) {
            (Some(bs), true) => {
                Iteration::new(Some(&Acked(u64::MAX))).run(bs, n, &mut frames, &mut b_out);
                b_out.take_sent()
            }
            (None, true) => vec![], // in flight while nobody owns the VIP: lost
            _ => {
                Iteration::new(Some(&shared)).run(&mut a, n, &mut frames, &mut a_out);
                a_out.take_sent()
            }
        };
        for f in released {
            c.on_frame(n, &tcpc, &f);
        }
        c.tcb.on_timer(n, &tcpc, &mut c.app, &mut c.out);

        // Kill A mid-transfer: its held output dies with it.
        if !killed && c.app.received.len() >= kill_after {
            killed = true;
            drop(std::mem::take(&mut a_out));
            if let Some(h) = a_node.take() {
                h.stop();
            }
            let t = rx.recv_timeout(StdDuration::from_secs(5)).expect("B took over");
            assert_eq!(t.flows.iter().map(Vec::len).sum::<usize>(), 1, "one replicated flow");
            let n = now();
            let mut bs = Stack::new(cfg.clone(), n);
            let (_, lost) = resume(&mut bs, n, t.flows.into_iter().flatten(), &mut b_out);
            assert_eq!(lost, 0, "every replica installs");
            b = Some(bs);
            break_a(&mut a);
        }
        std::thread::sleep(StdDuration::from_micros(200));
    }
    assert!(killed, "the transfer finished before the kill point; make it longer");
    assert_eq!(c.rsts, 0, "the client saw a RST");
    assert_eq!(c.app.received.len(), expect.len());
    if let Some(i) = c.app.received.iter().zip(expect.iter()).position(|(x, y)| x != y) {
        panic!(
            "bytes differ after failover at offset {i} (kill after {kill_after}): got {:?} expected {:?}",
            String::from_utf8_lossy(&c.app.received[i.saturating_sub(20)..(i + 40).min(c.app.received.len())]),
            String::from_utf8_lossy(&expect[i.saturating_sub(20)..(i + 40).min(expect.len())])
        );
    }
    drop(b_node);
}

/// A is dead: make sure nothing of it is used by accident.
fn break_a(a: &mut Stack) {
    a.set_active(false);
}

#[test]
fn echo_transfer_survives_failover() {
    let data: Vec<u8> = (0..400_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    failover_case(7, data.clone(), data, 150_000);
}

/// `GET /gen/<n>` and the exact response the object service writes for it.
fn gen_download(n: usize) -> (Vec<u8>, Vec<u8>) {
    let req = format!("GET /gen/{n} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes();
    let mut expect = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\nConnection: keep-alive\r\n\r\n"
    )
    .into_bytes();
    let mut body = vec![0u8; n];
    gen_byte_range(0, &mut body);
    expect.extend_from_slice(&body);
    (req, expect)
}

#[test]
fn http_download_survives_failover() {
    let (req, expect) = gen_download(600_000);
    failover_case(80, req, expect, 250_000);
}

// ---------------------------------------------------------------- progress that lags
//
// Output waits only for commit-relevant changes (creation, received bytes, state); pure send
// progress is replicated without holding output (`Stack::commit_tag`). The case below is the
// worst a standby can be in: it has applied exactly what A's released output needed and none
// of the progress after it. Deterministic (no sync node, no threads): the "standby" is a map
// of replayed `ShadowFlow`s fed from a recording replicator up to the watermark.

use flowtwin_engine::counters::Event;
use flowtwin_engine::replica::{FlowImage, ReplEvent, ReplFull, Replicator, ShadowFlow};
use std::collections::HashMap;
use std::sync::Mutex;

enum Owned {
    New(FlowImage),
    Update(FlowImage),
    Data(u64, Vec<u8>),
    Close,
}

/// (seq, flow slot, event)
type Recorded = (u64, (u32, u32), Owned);

/// Records every event with its sequence number (shared with the test's standby).
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<(u64, Vec<Recorded>)>>);

impl Replicator for Recorder {
    fn emit(&mut self, slot: (u32, u32), ev: ReplEvent<'_>) -> Result<u64, ReplFull> {
        let mut g = self.0.lock().unwrap();
        g.0 += 1;
        let seq = g.0;
        let o = match ev {
            ReplEvent::New(i) => Owned::New(*i),
            // The test's standby replays whole images; a step's image is whole too.
            ReplEvent::Update(i) | ReplEvent::Step(i) => Owned::Update(*i),
            ReplEvent::Data { offset, bytes } => Owned::Data(offset, bytes.to_vec()),
            ReplEvent::Close => Owned::Close,
            ReplEvent::SvcImage(_) | ReplEvent::Barrier(_) => return Ok(seq),
        };
        g.1.push((seq, slot, o));
        Ok(seq)
    }
    fn last_seq(&self) -> u64 {
        self.0.lock().unwrap().0
    }
}

/// Returns (frames of A that waited for the standby, B's catch-ups, B's abandoned flows).
/// `stale_first`: at the kill, B first gets an old ACK of the client's (one within what the
/// replica knows was sent, as reordering in the network may deliver it), then the rest.
fn lagging_progress_case(port: u16, upload: Vec<u8>, expect: Vec<u8>, kill_after: usize, stale_first: bool) -> (u64, u64, u64) {
    let cfg = stack_cfg();
    let tcpc = TcpConfig { delayed_ack: Duration::from_millis(0), ..TcpConfig::default() };
    let mut clock = 1_000_000u64;
    let rec = Recorder::default();
    let mut a = Stack::new(cfg.clone(), Instant(clock));
    a.set_replicator(Box::new(rec.clone()));
    let mut a_out = Held::default();
    // The standby: replays events up to the watermark, which moves only when held output
    // needs it.
    let mut shadow: HashMap<(u32, u32), ShadowFlow> = HashMap::new();
    let mut applied = 0u64;
    let apply_to = |wm: u64, applied: &mut u64, shadow: &mut HashMap<(u32, u32), ShadowFlow>| {
        let g = rec.0.lock().unwrap();
        let from = *applied;
        for (seq, slot, ev) in g.1.iter().filter(|(s, _, _)| *s > from && *s <= wm) {
            match ev {
                Owned::New(i) => {
                    shadow.insert(*slot, ShadowFlow::new(&cfg, *i).unwrap());
                }
                Owned::Update(i) => shadow.get_mut(slot).unwrap().update(&cfg, *i),
                Owned::Data(off, b) => shadow.get_mut(slot).unwrap().data(&cfg, *off, b).unwrap(),
                Owned::Close => {
                    shadow.remove(slot);
                }
            }
            *applied = *seq;
        }
    };
    let mut c = Client {
        tcb: Tcb::connect(Instant(clock), &tcpc, 40000, port, SeqNum(0x8000_0000), &mut ClientOut { frames: vec![], src_port: 40000, dst_port: port }),
        app: App::new(upload),
        out: ClientOut { frames: vec![], src_port: 40000, dst_port: port },
        rsts: 0,
    };
    c.tcb.on_timer(Instant(u64::MAX / 4), &tcpc, &mut c.app, &mut c.out);
    let (mut waited, mut b): (u64, Option<Stack>) = (0, None);
    let mut stale: Option<Vec<u8>> = None;
    let mut b_out = Held::default();
    for _ in 0..200_000 {
        if c.app.received.len() >= expect.len() {
            break;
        }
        clock += 200;
        let n = Instant(clock);
        if stale.is_none() && !c.app.received.is_empty() {
            stale = c.out.frames.last().cloned();
        }
        let frames: Vec<Vec<u8>> = c.out.frames.drain(..).collect();
        let mut frames = frames.iter().map(Vec::as_slice);
        let released = match &mut b {
            None => {
                // A's pass, with this standby between the seal and the release: it
                // acknowledges exactly what the held output needs, nothing more, so the second
                // half of the pass (`Iteration::finish`) is written out around it. (Its
                // replicator never fills: the replication tick has nothing to do.)
                let acked = Acked(applied);
                let it = Iteration::new(Some(&acked));
                frames.each(|f| it.receive(&mut a, n, f, &mut a_out));
                a.poll(n, &mut a_out);
                a_out.seal(a.commit_tag(), n);
                let need = a_out.held.held_tags().max().unwrap_or(0);
                if need > applied {
                    waited += a_out.held.held_tags().filter(|t| *t > applied).count() as u64;
                }
                apply_to(need.max(applied), &mut applied, &mut shadow);
                a_out.release(applied.into(), n);
                a_out.take_sent()
            }
            Some(bs) => {
                Iteration::new(Some(&Acked(u64::MAX))).run(bs, n, &mut frames, &mut b_out);
                b_out.take_sent()
            }
        };
        for f in released {
            c.on_frame(n, &tcpc, &f);
        }
        c.tcb.on_timer(n, &tcpc, &mut c.app, &mut c.out);
        if b.is_none() && c.app.received.len() >= kill_after {
            // A dies with whatever it holds; B installs the (lagging) replicas.
            a_out = Held::default();
            let mut bs = Stack::new(cfg.clone(), n);
            assert_eq!(shadow.len(), 1, "one replicated flow");
            let (_, lost) = resume(&mut bs, n, shadow.drain().map(|(_, f)| f), &mut b_out);
            assert_eq!(lost, 0, "every replica installs");
            if stale_first {
                Iteration::new(Some(&Acked(u64::MAX))).receive(&mut bs, n, stale.as_deref().expect("an early client ACK"), &mut b_out);
            }
            b = Some(bs);
            break_a(&mut a);
        }
    }
    let bs = b.expect("the transfer finished before the kill point; make it longer");
    assert_eq!(c.rsts, 0, "the client saw a RST");
    assert_eq!(c.app.received.len(), expect.len(), "transfer incomplete");
    assert!(c.app.received == expect, "bytes differ after failover");
    let k = bs.counters();
    (waited, k.get(Event::FlowsCaughtUp), k.get(Event::FlowsAbandoned))
}

#[test]
fn download_resumes_from_a_replica_whose_progress_lags() {
    let (req, expect) = gen_download(2_000_000);
    let (waited, caught_up, abandoned) = lagging_progress_case(80, req.clone(), expect.clone(), 1_200_000, false);
    // Only the SYN-ACK and the response's first flight waited for the standby: the download's
    // segments did not (before: every segment waited for the progress delta of its ACK).
    assert!(waited < 64, "{waited} frames waited for the standby");
    assert!(caught_up >= 1 && abandoned == 0, "B must catch up from the client's ACK ({caught_up}, {abandoned})");
    // An old ACK first makes the flow ready without catching up; the client's current ACK
    // right after it must still catch up (else B resends from the old point at 1 MSS per RTO).
    let (_, caught_up, abandoned) = lagging_progress_case(80, req, expect, 1_200_000, true);
    assert!(caught_up >= 1 && abandoned == 0, "({caught_up}, {abandoned})");
}

#[test]
fn echo_resumes_from_a_replica_whose_progress_lags() {
    let data: Vec<u8> = (0..600_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let (_, _, abandoned) = lagging_progress_case(7, data.clone(), data, 300_000, false);
    assert_eq!(abandoned, 0);
}
