//! The sync driver running several sessions (issue 13 items 1 and 2): two engines, each
//! active for one ownership group and the other's standby for the other (an active-active
//! pair), over loopback. Every delta reaches the session of its group only, each group's
//! acknowledgements move that group's watermark only, and the death of one engine makes the
//! other take over just the group it stood by for, while its own group serves on.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use flowtwin_engine::flow::FlowKey;
use flowtwin_engine::group::{GroupId, GroupSet};
use flowtwin_engine::replica::{FlowImage, ReplEvent, Replicator};
use flowtwin_engine::seq::SeqNum;
use flowtwin_engine::service::echo::EchoConfig;
use flowtwin_engine::stack::{vrrp_mac, Group, Listener, ServiceSpec, StackConfig, Vip};
use flowtwin_engine::tcp::{State, TcbSnapshot, TcpConfig};
use flowtwin_engine::wire::MacAddr;
use flowtwin_sync::node::{start_sessions, SessionSpec};
use flowtwin_sync::proto::Role;
use flowtwin_sync::{worker_channel, PeerState, RingReplicator, SyncConfig, SyncHandle, SyncStatus, Takeover, RELEASE_ALL};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const VIP_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const VIP_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 101);
const GA: GroupId = GroupId(0);
const GB: GroupId = GroupId(1);

fn stack_cfg() -> Arc<StackConfig> {
    let echo = || ServiceSpec::Echo(EchoConfig { buf_size: 16 * 1024 });
    Arc::new(StackConfig {
        vips: vec![Vip { addr: VIP_A, mac: vrrp_mac(1), group: GA }, Vip { addr: VIP_B, mac: vrrp_mac(2), group: GB }],
        groups: vec![Group::new("a"), Group::new("b")],
        listeners: vec![Listener { vip: VIP_A, port: 7, spec: echo() }, Listener { vip: VIP_B, port: 7, spec: echo() }],
        routes: flowtwin_engine::route::RouteTable::all_on_link(),
        tcp: TcpConfig::default(),
        flow_capacity: 64,
        isn_key: [3; 16],
        open_secrets: Default::default(),
        timer_tick: flowtwin_engine::time::Duration::from_micros(100),
        retired: Vec::new(),
    })
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// An established echo flow of client port `port` on `vip` (listener `listener`).
fn image(vip: Ipv4Addr, listener: u16, port: u16) -> FlowImage {
    let tcb = TcbSnapshot {
        state: State::Established,
        local_port: 7,
        remote_port: port,
        iss: SeqNum(1000),
        irs: SeqNum(5000),
        snd_una: SeqNum(1001),
        snd_nxt: SeqNum(1001),
        rcv_nxt: SeqNum(5001),
        snd_wnd: 64_000,
        rcv_wnd: 65_535,
        snd_wscale: 7,
        rcv_wscale: 7,
        mss: 1460,
        sack_ok: true,
        ts_ok: true,
        ts_offset: 9,
        ts_recent: 1,
        ts_last_sent: 1,
        tx_acked: 0,
        tx_sent: 0,
        rx_delivered: 0,
    };
    FlowImage {
        key: FlowKey::v4(Ipv4Addr::new(198, 18, 1, 2), port, vip, 7),
        tcb,
        peer_mac: MacAddr([2, 0, 0, 0, 0, 2]),
        vip_mac: vrrp_mac(listener as u8 + 1),
        listener,
        listener_fp: 0,
        origin: Default::default(),
        link: None,
    }
}

/// One engine: its sync thread with a session per group, and its one worker's replicator
/// (driven by the test: it answers join snapshots with a `Barrier`, as a worker with no
/// flows yet does).
struct Engine {
    handle: Option<SyncHandle>,
    repl: RingReplicator,
    takeovers: mpsc::Receiver<Takeover>,
}

impl Engine {
    /// `active_for`: the groups this engine prefers to be active for.
    fn start(node_id: u32, listen: SocketAddr, peer: SocketAddr, active_for: GroupSet) -> Engine {
        let (repl, link) = worker_channel(0, 4096);
        let role = |g: GroupId| if active_for.contains(g) { Role::Active } else { Role::Standby };
        let cfg = SyncConfig {
            node_id,
            listen,
            peer,
            sessions: vec![SessionSpec { groups: GroupSet::of(GA), role: role(GA) }, SessionSpec { groups: GroupSet::of(GB), role: role(GB) }],
            // 200 ms of silence before a peer is dead: the test machine is small and shared.
            dead_after: 40,
            ..SyncConfig::default()
        };
        let (tx, takeovers) = mpsc::channel();
        let statuses = vec![Arc::new(SyncStatus::new()), Arc::new(SyncStatus::new())];
        let handle = start_sessions(cfg, stack_cfg(), vec![link], statuses, Box::new(move |t| tx.send(t).unwrap())).unwrap();
        Engine { handle: Some(handle), repl, takeovers }
    }

    fn status(&self, g: GroupId) -> &Arc<SyncStatus> {
        &self.handle.as_ref().unwrap().statuses()[usize::from(g.0)]
    }

    /// What the worker does each pass that matters here: answer a join snapshot.
    fn pump(&mut self) {
        if let Some(token) = self.repl.pending_snapshot() {
            self.repl.emit((0, 0), ReplEvent::Barrier(token)).unwrap();
        }
        self.repl.flush();
    }

    fn watermark(&self, g: GroupId) -> u64 {
        self.repl.shared().watermarks().of(GroupSet::of(g))
    }
}

/// Pumps both workers until `done` or the deadline (then panics with `what`).
fn until(a: &mut Engine, b: &mut Engine, what: &str, mut done: impl FnMut(&Engine, &Engine) -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !done(a, b) {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        a.pump();
        b.pump();
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn in_sync(e: &Engine, g: GroupId) -> bool {
    e.status(g).role() == Role::Active && e.status(g).peer_state() == PeerState::InSync
}

#[test]
fn an_active_active_pair_replicates_each_group_to_its_own_standby_and_takes_over_only_the_lost_one() {
    let _g = serial();
    let (la, lb) = (free_addr(), free_addr());
    let mut a = Engine::start(1, la, lb, GroupSet::of(GA));
    let mut b = Engine::start(2, lb, la, GroupSet::of(GB));
    until(&mut a, &mut b, "both sessions in sync", |a, b| in_sync(a, GA) && in_sync(b, GB));
    assert_eq!(a.status(GB).role(), Role::Standby, "A stands by for group b");
    assert_eq!(b.status(GA).role(), Role::Standby, "B stands by for group a");

    // A flow of group a on A: its delta goes to B's session a; A's watermark of group a
    // follows B's acknowledgement, and A's group b (standby) is not held by it.
    let s = a.repl.emit_in(GA, (1, 1), ReplEvent::New(&image(VIP_A, 0, 40_000))).unwrap();
    until(&mut a, &mut b, "B acknowledged group a's delta", |a, _| a.watermark(GA) >= s && a.watermark(GA) != RELEASE_ALL);
    assert_eq!(a.watermark(GB), RELEASE_ALL, "A's group b is not held by group a's standby");
    // Two flows of group b on B, for A's session b.
    let sb = b.repl.emit_in(GB, (1, 1), ReplEvent::New(&image(VIP_B, 1, 41_000))).unwrap();
    let sb = sb.max(b.repl.emit_in(GB, (2, 1), ReplEvent::New(&image(VIP_B, 1, 41_001))).unwrap());
    until(&mut a, &mut b, "A acknowledged group b's deltas", |_, b| b.watermark(GB) >= sb && b.watermark(GB) != RELEASE_ALL);
    until(&mut a, &mut b, "standby flow counts in the heartbeats", |a, b| {
        a.status(GA).shadow_flows.load(std::sync::atomic::Ordering::Relaxed) == 1
            && b.status(GB).shadow_flows.load(std::sync::atomic::Ordering::Relaxed) == 2
    });

    // Kill A: B takes over group a (A's one flow), and only group a.
    let epoch_b = b.status(GB).epoch();
    a.handle.take().unwrap().stop();
    let t = b.takeovers.recv_timeout(Duration::from_secs(5)).expect("B takes over group a");
    assert_eq!(t.groups, GroupSet::of(GA));
    let flows: Vec<_> = t.flows.iter().flatten().collect();
    assert_eq!(flows.len(), 1, "A's flow of group a, and none of B's own");
    assert_eq!(flows[0].image.key, image(VIP_A, 0, 40_000).key);
    assert!(b.takeovers.try_recv().is_err(), "one takeover");
    assert_eq!(b.status(GA).role(), Role::Active);
    assert_eq!(b.status(GB).role(), Role::Active, "group b serves on");
    assert_eq!(b.status(GB).epoch(), epoch_b, "group b's epoch did not move");
    assert_eq!(b.status(GA).epoch(), t.epoch, "group a has the takeover's epoch");
}

#[test]
fn sessions_must_cover_every_group_once() {
    let _g = serial();
    let bad = |sessions: Vec<SessionSpec>| {
        let (_repl, link) = worker_channel(0, 64);
        let n = sessions.len();
        let cfg = SyncConfig { listen: free_addr(), peer: free_addr(), sessions, ..SyncConfig::default() };
        let statuses = (0..n).map(|_| Arc::new(SyncStatus::new())).collect();
        start_sessions(cfg, stack_cfg(), vec![link], statuses, Box::new(|_| {})).err().map(|e| e.to_string())
    };
    let (a, b, ab) = (GroupSet::of(GA), GroupSet::of(GB), GroupSet::first(2));
    let e = bad(vec![SessionSpec { groups: a, role: Role::Active }]).expect("group b has no session");
    assert!(e.contains("exactly one session"), "{e}");
    let e = bad(vec![SessionSpec { groups: ab, role: Role::Active }, SessionSpec { groups: b, role: Role::Standby }]).expect("b twice");
    assert!(e.contains("overlap"), "{e}");
    let e = bad(vec![SessionSpec { groups: a, role: Role::Fenced }, SessionSpec { groups: b, role: Role::Standby }]).expect("fenced");
    assert!(e.contains("active or standby"), "{e}");
}

#[test]
fn a_peer_with_other_sessions_is_refused_naming_them() {
    // A runs one session of both groups; B one per group: B's session of group a finds A's
    // listener, and A refuses it (and B's sessions keep trying, never in sync).
    let _g = serial();
    let (la, lb) = (free_addr(), free_addr());
    let (ra, link) = worker_channel(0, 4096);
    let cfg = SyncConfig { node_id: 1, listen: la, peer: lb, dead_after: 40, ..SyncConfig::default() };
    let sa = Arc::new(SyncStatus::new());
    let ha = flowtwin_sync::start(cfg, stack_cfg(), vec![link], sa.clone(), Box::new(|_| {})).unwrap();
    let mut a = Engine { handle: Some(ha), repl: ra, takeovers: mpsc::channel().1 };
    let mut b = Engine::start(2, lb, la, GroupSet::NONE);
    until(&mut a, &mut b, "a refusal", |a, _| a.status(GA).last_error().contains("session mismatch"));
    let e = sa.last_error();
    assert!((e.contains("groups 0x1") || e.contains("groups 0x2")) && e.contains("groups 0x3"), "{e}");
    assert_ne!(sa.peer_state(), PeerState::InSync);
}

#[test]
fn output_of_two_groups_waits_for_both_sessions_and_no_longer() {
    // One engine active for both groups, each replicated by its own session to the same
    // peer. A frame built by flows of both groups in one interval is tagged with the newer
    // of their deltas and waits for both groups' watermarks: group a's session must count
    // the worker's later deltas of group b as covered once it has nothing in flight, or the
    // frame would wait for group a's next change.
    let _g = serial();
    let (la, lb) = (free_addr(), free_addr());
    let mut a = Engine::start(1, la, lb, GroupSet::first(2));
    let mut b = Engine::start(2, lb, la, GroupSet::NONE);
    until(&mut a, &mut b, "both sessions in sync", |a, _| in_sync(a, GA) && in_sync(a, GB));
    let s_a = a.repl.emit_in(GA, (1, 1), ReplEvent::New(&image(VIP_A, 0, 40_000))).unwrap();
    let s_b = a.repl.emit_in(GB, (2, 1), ReplEvent::New(&image(VIP_B, 1, 41_000))).unwrap();
    assert!(s_b > s_a);
    let both = GroupSet::first(2);
    until(&mut a, &mut b, "both groups covered the newer delta", |a, _| {
        let w = a.repl.shared().watermarks();
        w.of(both) >= s_b && w.of(both) != RELEASE_ALL
    });
    let flows = |e: &Engine, g: GroupId| e.status(g).shadow_flows.load(std::sync::atomic::Ordering::Relaxed);
    until(&mut a, &mut b, "each standby session has its own flow", |a, _| flows(a, GA) == 1 && flows(a, GB) == 1);
}
