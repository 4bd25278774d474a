//! The sync threads with a blocking [`Waiter`]: a delta published while the active's sync
//! thread is parked is sent at once (the doorbell, no lost wake-up), heartbeats keep flowing
//! while both sides block, and a stop ends a long wait.
//!
//! The waiter here is doorbell-only: it ignores the descriptors (this crate cannot `ppoll`
//! without `unsafe`), so a loop wakes only for a ring or at the timeout it computed. That
//! makes both properties visible: with a 1 s heartbeat and a 10 s park bound, nothing but the
//! doorbell can make a delta reach the standby within milliseconds, and nothing but the
//! loops' own deadlines can keep 5 ms heartbeats flowing. (The engine's real waiter, on
//! `ppoll` and an eventfd, has its own tests in flowtwin-ffi and runs in the e2e suites.)

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use flowtwin_engine::replica::{ReplEvent, Replicator};
use flowtwin_engine::stack::StackConfig;
use flowtwin_engine::tcp::TcpConfig;
use flowtwin_sync::{
    start, worker_channel, PeerState, RingReplicator, Role, SyncConfig, SyncHandle, SyncStatus,
    DoorbellOnly, Takeover, Waiter, WorkerLink,
};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn stack_cfg() -> Arc<StackConfig> {
    Arc::new(StackConfig {
        vips: Vec::new(),
        groups: Vec::new(),
        listeners: Vec::new(),
        routes: flowtwin_engine::route::RouteTable::all_on_link(),
        tcp: TcpConfig::default(),
        flow_capacity: 16,
        isn_key: *b"flowtwin-wait-t!",
        open_secrets: Default::default(),
        timer_tick: flowtwin_engine::time::Duration::from_micros(100),
        retired: Vec::new(),
    })
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

struct Node {
    handle: SyncHandle,
    status: Arc<SyncStatus>,
    takeovers: mpsc::Receiver<Takeover>,
}

fn node(cfg: SyncConfig, links: Vec<WorkerLink>) -> Node {
    let status = Arc::new(SyncStatus::new());
    let (tx, rx) = mpsc::channel();
    let handle = start(
        cfg,
        stack_cfg(),
        links,
        status.clone(),
        Box::new(move |t: Takeover| {
            let _ = tx.send(t);
        }),
    )
    .unwrap();
    Node { handle, status, takeovers: rx }
}

fn pair(hb: Duration, dead_after: u32, a: Option<Arc<dyn Waiter>>, b: Option<Arc<dyn Waiter>>) -> (SyncConfig, SyncConfig) {
    let (la, lb) = (free_addr(), free_addr());
    let base = SyncConfig { heartbeat: hb, dead_after, ring_records: 1 << 12, park_max: Duration::from_secs(10), ..SyncConfig::default() };
    (
        SyncConfig { node_id: 1, listen: la, peer: lb, role: Role::Active, waiter: a, ..base.clone() },
        SyncConfig { node_id: 2, listen: lb, peer: la, role: Role::Standby, waiter: b, ..base },
    )
}

/// What a worker loop does each pass for replication: answer a join snapshot (no flows:
/// just the barrier), then say it queued deltas.
fn pass(w: &mut RingReplicator) {
    if let Some(t) = w.pending_snapshot() {
        w.emit((0, 0), ReplEvent::Barrier(t)).unwrap();
    }
    w.flush();
    w.shared().wake_sync();
}

fn wait_until(what: &str, limit: Duration, w: &mut RingReplicator, cond: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        pass(w);
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// A delta queued while the active's sync thread is parked (1 s heartbeats, 10 s park bound,
/// deaf to its socket) reaches the standby within milliseconds: the worker rang. Deltas are
/// queued at varying moments, so some land while the thread is awake, parking, or asleep.
#[test]
fn delta_queued_while_parked_is_sent_at_once() {
    let _g = serial();
    let waiter = Arc::new(DoorbellOnly::default());
    let (acfg, scfg) = pair(Duration::from_secs(1), 100, Some(waiter.clone()), None);
    let (mut w, link) = worker_channel(0, 1 << 12);
    let a = node(acfg, vec![link]);
    let b = node(scfg, vec![worker_channel(0, 1 << 12).1]);
    // The active accepts the standby at its next timeout (its split-brain probe, 200 ms):
    // it does not see its listener.
    wait_until("in sync", Duration::from_secs(10), &mut w, || a.status.in_sync());
    let mut worst = Duration::ZERO;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..60u32 {
        // 0–4 ms apart: the active is anywhere in its wait.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        std::thread::sleep(Duration::from_micros(x % 4000));
        let before = b.status.deltas_applied.load(Relaxed);
        let t0 = Instant::now();
        w.emit((1, i), ReplEvent::Close).unwrap();
        w.shared().wake_sync();
        while b.status.deltas_applied.load(Relaxed) == before {
            assert!(t0.elapsed() < Duration::from_secs(5), "delta {i} never arrived");
            std::thread::sleep(Duration::from_micros(50));
        }
        worst = worst.max(t0.elapsed());
    }
    let rung = a.status.doorbell_wakes.load(Relaxed);
    let waits = a.status.waits.load(Relaxed);
    println!("60 deltas: slowest {worst:?}; active waited {waits} times, {rung} ended by the doorbell");
    // Without the doorbell a delta would wait for the next heartbeat (up to 1 s).
    assert!(worst < Duration::from_millis(300), "slowest delta took {worst:?}");
    assert!(rung >= 30, "only {rung} doorbell wake-ups for 60 deltas");
    assert_eq!(a.status.role(), Role::Active);
    let t0 = Instant::now();
    b.handle.stop();
    a.handle.stop();
    // stop() rings too: neither the 10 s park bound nor the 1 s heartbeat delays it.
    assert!(t0.elapsed() < Duration::from_millis(500), "stop took {:?}", t0.elapsed());
    drop(waiter);
}

/// Both sync threads block (deaf to their sockets, so only their own deadlines wake them):
/// 5 ms heartbeats must still flow both ways, or one side declares the other dead after
/// 50 ms. And idle loops wait rather than spin.
#[test]
fn heartbeats_flow_while_both_sides_block() {
    let _g = serial();
    let (acfg, scfg) = pair(
        Duration::from_millis(5),
        10,
        Some(Arc::new(DoorbellOnly::default())),
        Some(Arc::new(DoorbellOnly::default())),
    );
    let (mut w, link) = worker_channel(0, 1 << 12);
    let a = node(acfg, vec![link]);
    let b = node(scfg, vec![worker_channel(0, 1 << 12).1]);
    wait_until("in sync", Duration::from_secs(10), &mut w, || a.status.in_sync());
    let (wa, wb) = (a.status.waits.load(Relaxed), b.status.waits.load(Relaxed));
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(1) {
        pass(&mut w);
        std::thread::sleep(Duration::from_millis(1));
    }
    let secs = t0.elapsed().as_secs_f64();
    let (wa, wb) = (
        (a.status.waits.load(Relaxed) - wa) as f64 / secs,
        (b.status.waits.load(Relaxed) - wb) as f64 / secs,
    );
    println!(
        "idle pair, 5 ms heartbeats: active waits {wa:.0}/s, standby {wb:.0}/s; heartbeat intervals missed: active {} standby {}",
        a.status.heartbeats_missed_total.load(Relaxed),
        b.status.heartbeats_missed_total.load(Relaxed)
    );
    assert!(a.takeovers.try_recv().is_err() && b.takeovers.try_recv().is_err());
    assert_eq!(a.status.role(), Role::Active);
    assert_eq!(a.status.peer_state(), PeerState::InSync, "the active lost its standby");
    assert_eq!(b.status.role(), Role::Standby, "the standby took over");
    assert_eq!(b.status.takeovers.load(Relaxed), 0);
    // Woken when a heartbeat is due (~200/s each; the park bound is 10 s here); a loop
    // that spun or slept in 50–100 µs steps would show thousands to tens of thousands.
    assert!(wa > 50.0 && wa < 3000.0, "active waits {wa}/s");
    assert!(wb > 50.0 && wb < 3000.0, "standby waits {wb}/s");
    b.handle.stop();
    a.handle.stop();
}
