//! The proxies' runtime pools through the sans-IO session (`session::pool`), with a fake
//! clock: the join snapshot carries the active's tables, a change made on the active
//! reaches its standby at the next tick, removed slots are freed after their grace, a table
//! that does not fit is refused without a takeover, and a peer of the previous protocol
//! version is refused by name.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowtwin_engine::service::proxy::{ActiveCheck, Admin, Balance, CheckKind, CheckResult, CheckState, ProxySpec, DEFAULT_POOL, REMOVE_GRACE};
use flowtwin_engine::stack::{Listener, ServiceSpec, StackConfig};
use flowtwin_sync::proto::{Hello, Msg, MAGIC, PROTO_VERSION};
use flowtwin_sync::session::{Action, DialError, Incoming, Session};
use flowtwin_sync::{Role, SyncStatus};

#[path = "common/session.rs"]
mod common_session;
use common_session::{session_cfg as cfg, session_stack};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);

fn be(last: u8) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, last), 80)
}

/// A stack with one proxy on VIP:8080 of `backends` and `slots` slots in all.
fn stack(backends: &[u8], slots: usize) -> (Arc<StackConfig>, Arc<ProxySpec>) {
    let spec = Arc::new(ProxySpec::new(backends.iter().map(|&b| be(b)).collect(), Balance::RoundRobin, VIP, 4096).with_slots(slots).with_check(ActiveCheck::new(CheckKind::Tcp)));
    let cfg = session_stack(vec![Listener { vip: VIP, port: 8080, spec: ServiceSpec::Proxy(spec.clone()) }], *b"flowtwin-pool-t!");
    (Arc::new(cfg), spec)
}

fn hello(stack: &StackConfig, node_id: u32, role: Role, version: u16) -> Hello {
    Hello { magic: MAGIC, version, node_id, epoch: 0, role, mode: 0, workers: 2, heartbeat_us: 5000, dead_after: common_session::DEAD, fence_hold_us: common_session::FENCE_HOLD.as_micros() as u32, handover_hold_us: common_session::HANDOVER_HOLD.as_micros() as u32, groups: stack.group_digest(), session: 1, secret: [0; 16] }
}

fn drain(s: &mut Session) -> (Vec<Msg<'static>>, Vec<Action>) {
    let (mut m, mut a) = (Vec::new(), Vec::new());
    while let Some(x) = s.poll_transmit() {
        m.push(x);
    }
    while let Some(x) = s.poll_action() {
        a.push(x);
    }
    (m, a)
}

fn pools(m: &[Msg<'static>]) -> Vec<flowtwin_sync::proto::PoolTable> {
    m.iter().filter_map(|m| if let Msg::Pool(t) = m { Some(t.clone()) } else { None }).collect()
}

/// An active (node 8) with its spec, and a standby (node 9) of another config following it.
struct Pair {
    a: Session,
    a_spec: Arc<ProxySpec>,
    b: Session,
    b_spec: Arc<ProxySpec>,
    b_st: Arc<SyncStatus>,
    now: Instant,
    /// What the active sent at the standby's join.
    join: Vec<Msg<'static>>,
}

impl Pair {
    fn new(a_backends: &[u8], b_backends: &[u8], b_slots: usize) -> Pair {
        Pair::changed_before_join(a_backends, b_backends, b_slots, |_| {})
    }

    /// [`Pair::new`], the active's pool changed by `change` before the standby joins.
    fn changed_before_join(a_backends: &[u8], b_backends: &[u8], b_slots: usize, change: impl Fn(&ProxySpec)) -> Pair {
        let now = Instant::now();
        let (a_cfg, a_spec) = stack(a_backends, 4);
        change(&a_spec);
        let (b_cfg, b_spec) = stack(b_backends, b_slots);
        let mut a = Session::new(cfg(8, Role::Active), a_cfg.clone(), Arc::new(SyncStatus::new()), now);
        a.tick(now);
        drain(&mut a);
        a.on_connect_failed(now, DialError::Invalid);
        drain(&mut a);
        let b_st = Arc::new(SyncStatus::new());
        let mut b = Session::new(cfg(9, Role::Standby), b_cfg.clone(), b_st.clone(), now);
        b.tick(now);
        drain(&mut b);
        b.on_connected(now, &hello(&a_cfg, 8, Role::Active, PROTO_VERSION));
        drain(&mut b);
        a.on_accept(now, "10.9.0.9:1", &hello(&b_cfg, 9, Role::Standby, PROTO_VERSION));
        let (join, _) = drain(&mut a);
        Pair { a, a_spec, b, b_spec, b_st, now, join }
    }

    /// Deliver the active's messages `m` to the standby.
    fn deliver(&mut self, m: Vec<Msg<'static>>) -> (Vec<Msg<'static>>, Vec<Action>) {
        for x in m {
            let inc = match x {
                Msg::Pool(t) => Incoming::Pool(t),
                Msg::Snapshot { token } => Incoming::Snapshot { token },
                Msg::Heartbeat(h) => Incoming::Heartbeat(h),
                _ => continue,
            };
            self.b.on_rx(self.now);
            self.b.on_message(self.now, inc);
        }
        drain(&mut self.b)
    }

    fn tick_active(&mut self, d: Duration) -> Vec<Msg<'static>> {
        self.now += d;
        // The standby is alive (its heartbeats are not the point here).
        self.a.on_rx(self.now);
        self.a.tick(self.now);
        drain(&mut self.a).0
    }
}

#[test]
fn the_join_snapshot_carries_the_pool_before_any_flow() {
    // The active's pool was changed before the standby joined; the standby's config still
    // names the old one.
    let mut p = Pair::changed_before_join(&[11], &[11], 4, |a| {
        assert_eq!(a.add_backend(be(12), 3, DEFAULT_POOL), Ok(1));
        a.drain_backend(be(11)).unwrap();
    });
    let m = std::mem::take(&mut p.join);
    assert!(matches!(m[0], Msg::Snapshot { token: 1 }), "{m:?}");
    let t = pools(&m);
    assert_eq!(t.len(), 1, "one table per proxy service");
    assert!(matches!(m[1], Msg::Pool(_)), "right after the snapshot token, before any heartbeat: {m:?}");
    assert_eq!((t[0].vip, t[0].port, t[0].slots.len()), (VIP, 8080, 4));
    let (out, actions) = p.deliver(m);
    assert!(out.is_empty() && actions.is_empty(), "applied quietly: {out:?} {actions:?}");
    assert_eq!(p.b_spec.backends[1].addr(), be(12));
    assert_eq!(p.b_spec.backends[1].weight.load(std::sync::atomic::Ordering::Relaxed), 3);
    assert_eq!(p.b_spec.backends[0].admin(), Admin::Draining);
    assert_eq!(p.b_spec.table().1, p.a_spec.table().1);
    assert_eq!(p.b_st.pool_tables.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[test]
fn a_change_on_the_active_reaches_its_standby_at_the_next_tick() {
    let mut p = Pair::new(&[11], &[11], 4);
    let join = std::mem::take(&mut p.join);
    assert_eq!(pools(&join).len(), 1);
    p.deliver(join);
    assert!(pools(&p.tick_active(Duration::from_millis(1))).is_empty(), "nothing changed: nothing sent");
    p.a_spec.add_backend(be(12), 2, DEFAULT_POOL).unwrap();
    p.a_spec.add_backend(be(13), 1, DEFAULT_POOL).unwrap();
    let m = p.tick_active(Duration::from_millis(1));
    assert_eq!(pools(&m).len(), 1, "two quick changes, one table");
    p.deliver(m);
    assert_eq!(p.b_spec.find(be(13)), Some(2));
    assert!(pools(&p.tick_active(Duration::from_millis(1))).is_empty());

    // The standby takes over and routes to the added backends (its workers share the spec).
    let now = p.now;
    let picks: Vec<_> = (0..8).map(|_| p.b_spec.choose(Ipv4Addr::LOCALHOST, flowtwin_engine::time::Instant(now.elapsed().as_micros() as u64)).unwrap()).collect();
    assert_eq!(picks.iter().filter(|&&i| i == 1).count(), 4, "weight 2 of 4: {picks:?}");
    assert!(picks.contains(&2));
}

#[test]
fn the_active_checks_health_reaches_the_standby_so_a_new_active_keeps_it() {
    let mut p = Pair::new(&[11, 12], &[11, 12], 4);
    let join = std::mem::take(&mut p.join);
    assert!(pools(&join)[0].slots.iter().all(|s| s.health == CheckState::Unknown as u8));
    p.deliver(join);
    // Backend 11 fails its checks (fall = 3) on the active: down, and the pool's version moves.
    let a_spec = p.a_spec.clone();
    let b = &a_spec.backends[0];
    for t in 1..=3 {
        b.check.begin(t);
        p.a_spec.check_done(0, t, CheckResult::Refused, 5, 0);
    }
    assert_eq!(b.check.state(), CheckState::Down);
    let m = p.tick_active(Duration::from_millis(1));
    let t = pools(&m);
    assert_eq!(t.len(), 1, "a health transition sends the table");
    assert_eq!((t[0].slots[0].health, t[0].slots[1].health), (CheckState::Down as u8, CheckState::Unknown as u8));
    p.deliver(m);
    assert_eq!(p.b_spec.backends[0].check.state(), CheckState::Down, "the standby knows it is down");
    // After a takeover the new active routes around it until its own checks bring it up.
    let now = flowtwin_engine::time::Instant(1);
    assert!((0..8).all(|_| p.b_spec.choose(Ipv4Addr::LOCALHOST, now) == Some(1)));
    // Back up on the active: the standby follows.
    for t in 4..=5 {
        b.check.begin(t);
        p.a_spec.check_done(0, t, CheckResult::Ok, 5, 0);
    }
    let m = p.tick_active(Duration::from_millis(1));
    p.deliver(m);
    assert_eq!(p.b_spec.backends[0].check.state(), CheckState::Up);
}

#[test]
fn removed_slots_are_freed_after_their_grace_and_the_standby_follows() {
    let mut p = Pair::new(&[11, 12], &[11, 12], 4);
    let join = std::mem::take(&mut p.join);
    p.deliver(join);
    p.a_spec.backends[0].active.store(1, std::sync::atomic::Ordering::Relaxed);
    p.a_spec.remove_backend(be(11), true).unwrap();
    let m = p.tick_active(Duration::from_millis(1));
    p.deliver(m);
    assert_eq!(p.b_spec.backends[0].admin(), Admin::Removed, "the standby sees it removing");
    // A connection still uses it: never freed.
    p.tick_active(REMOVE_GRACE * 2);
    assert_eq!(p.a_spec.backends[0].admin(), Admin::Removed);
    p.a_spec.backends[0].active.store(0, std::sync::atomic::Ordering::Relaxed);
    assert!(pools(&p.tick_active(Duration::from_millis(1))).is_empty(), "the grace starts now");
    assert_eq!(p.a_spec.backends[0].admin(), Admin::Removed);
    p.tick_active(REMOVE_GRACE - Duration::from_millis(2));
    assert_eq!(p.a_spec.backends[0].admin(), Admin::Removed, "within the grace");
    let m = p.tick_active(Duration::from_millis(2));
    assert_eq!(p.a_spec.backends[0].admin(), Admin::Empty, "freed");
    assert_eq!(pools(&m).len(), 1);
    p.deliver(m);
    assert_eq!(p.b_spec.backends[0].admin(), Admin::Empty);
    assert_eq!(p.b_spec.find(be(11)), None);
}

#[test]
fn a_table_that_does_not_fit_is_refused_without_a_takeover() {
    let mut p = Pair::new(&[11], &[11], 8);
    let join = std::mem::take(&mut p.join);
    let (out, actions) = p.deliver(join);
    let why = out.iter().find_map(|m| if let Msg::Refused { reason } = m { Some(reason.clone()) } else { None }).expect("refused");
    assert!(why.contains("4 backend slots") && why.contains("this engine 8") && why.contains("10.9.0.1:8080"), "{why}");
    assert!(actions.iter().any(|a| matches!(a, Action::Close { .. })), "{actions:?}");
    assert!(!actions.iter().any(|a| matches!(a, Action::TakeOver { .. })), "never a takeover for it");
    assert_eq!(p.b_st.role(), Role::Standby);
    assert_eq!(p.b_spec.find(be(11)), Some(0), "nothing applied");
}

/// Between the live reloads of the two engines the active may proxy a service the standby
/// does not run yet (or no longer): its table is skipped, the session carries on, and the
/// others still apply.
#[test]
fn a_table_of_a_service_the_standby_does_not_run_is_skipped_without_a_refusal() {
    let mut p = Pair::new(&[11], &[11], 4);
    let join = std::mem::take(&mut p.join);
    p.deliver(join);
    let mut stray = pools(&p.tick_active(Duration::from_millis(1)));
    assert!(stray.is_empty(), "nothing changed yet");
    let (_, slots) = p.a_spec.table();
    stray.push(flowtwin_sync::proto::PoolTable { vip: VIP, port: 9999, version: 1, slots });
    let applied = p.b_st.pool_tables.load(std::sync::atomic::Ordering::Relaxed);
    let (out, actions) = p.deliver(stray.into_iter().map(Msg::Pool).collect());
    assert!(!out.iter().any(|m| matches!(m, Msg::Refused { .. })), "{out:?}");
    assert!(!actions.iter().any(|a| matches!(a, Action::Close { .. })), "{actions:?}");
    assert_eq!(p.b_st.role(), Role::Standby);
    assert_eq!(p.b_st.pool_unknown_service.load(std::sync::atomic::Ordering::Relaxed), 1, "counted");
    assert_eq!(p.b_st.pool_tables.load(std::sync::atomic::Ordering::Relaxed), applied, "not applied");
    // The service both run still follows the active.
    p.a_spec.add_backend(be(12), 1, DEFAULT_POOL).unwrap();
    let m = p.tick_active(Duration::from_millis(1));
    assert_eq!(pools(&m).len(), 1);
    p.deliver(m);
    assert!(p.b_spec.find(be(12)).is_some());
}

#[test]
fn a_peer_of_the_previous_protocol_version_is_refused_by_name() {
    let now = Instant::now();
    let (a_cfg, _) = stack(&[11], 4);
    let mut a = Session::new(cfg(8, Role::Active), a_cfg.clone(), Arc::new(SyncStatus::new()), now);
    a.tick(now);
    drain(&mut a);
    a.on_connect_failed(now, DialError::Invalid);
    drain(&mut a);
    a.on_accept(now, "10.9.0.9:1", &hello(&a_cfg, 9, Role::Standby, PROTO_VERSION - 1));
    let (m, _) = drain(&mut a);
    assert!(pools(&m).is_empty(), "no pool table to a peer that could not parse it");
    let why = m.iter().find_map(|m| if let Msg::Refused { reason } = m { Some(reason.clone()) } else { None }).expect("refused");
    assert!(why.contains(&format!("version {}", PROTO_VERSION - 1)) && why.contains(&format!("version {PROTO_VERSION}")), "{why}");
}
