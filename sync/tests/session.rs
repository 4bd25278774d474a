//! The replication session without sockets or sleeps: every role transition and message of
//! `flowtwin_sync::session::Session`, driven by a fake clock (an `Instant` advanced by hand)
//! and checked through what it transmits, the actions it asks for, its release plan, its next
//! deadline and the status it reports. The socket driver is tested by `replication.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flowtwin_engine::stack::{GroupId, StackConfig};
use flowtwin_sync::delta::{self, DeltaBody};
use flowtwin_sync::proto::{Heartbeat, Hello, Msg, MAGIC, PROTO_VERSION};
use flowtwin_sync::ring::Record;
use flowtwin_sync::session::{
    Action, DialError, Incoming, Mode, Release, Session, SessionConfig, TakeoverReason, FENCED_WAIT, HANDOVER_LISTEN_GRACE,
    SETTLE_AFTER_FENCE, SETTLE_FACTOR, SPLIT_BRAIN_PROBE,
};
use flowtwin_sync::{PeerState, Role, SyncStatus};

#[path = "common/session.rs"]
mod common_session;
use common_session::{session_cfg as cfg, session_stack, DEAD, HB};

fn stack() -> Arc<StackConfig> {
    Arc::new(session_stack(vec![], *b"flowtwin-sess-t!"))
}

/// A session and its fake clock.
struct Rig {
    s: Session,
    st: Arc<SyncStatus>,
    t0: Instant,
    now: Instant,
}

impl Rig {
    fn new(c: SessionConfig) -> Rig {
        let st = Arc::new(SyncStatus::new());
        let t0 = Instant::now();
        Rig { s: Session::new(c, stack(), st.clone(), t0), st, t0, now: t0 }
    }
    fn at(&mut self, ms: u64) -> Instant {
        self.now = self.t0 + Duration::from_millis(ms);
        self.now
    }
    fn advance(&mut self, d: Duration) -> Instant {
        self.now += d;
        self.now
    }
    fn tick(&mut self) {
        let now = self.now;
        self.s.tick(now);
    }
    /// Everything queued: (messages, actions).
    fn out(&mut self) -> (Vec<Msg<'static>>, Vec<Action>) {
        let mut m = Vec::new();
        while let Some(x) = self.s.poll_transmit() {
            m.push(x);
        }
        let mut a = Vec::new();
        while let Some(x) = self.s.poll_action() {
            a.push(x);
        }
        (m, a)
    }
    fn actions(&mut self) -> Vec<Action> {
        self.out().1
    }
    fn msg(&mut self, m: Incoming<'_>) {
        let now = self.now;
        self.s.on_rx(now);
        self.s.on_message(now, m);
    }
    /// Prefers active (node 8), its first probe dial out.
    fn probing() -> Rig {
        let mut r = Rig::new(cfg(8, Role::Active));
        r.tick();
        r.actions();
        r
    }
    /// Becomes the active (prefers active, the probe finds nothing listening).
    fn active(node_id: u32) -> Rig {
        let mut r = Rig::new(cfg(node_id, Role::Active));
        r.tick();
        assert!(matches!(r.actions()[..], [Action::Connect { role: Role::Standby, probe: false }]));
        r.s.on_connect_failed(r.now, DialError::Invalid);
        assert!(matches!(r.actions()[..], [Action::Listen]));
        assert_eq!(r.st.role(), Role::Active);
        r
    }
    /// An active with an admitted standby (token 1).
    fn active_with_standby(node_id: u32) -> Rig {
        let mut r = Rig::active(node_id);
        let h = hello(9, 0, Role::Standby);
        let now = r.now;
        r.s.on_accept(now, "10.0.0.9:1", &h);
        r.out();
        r
    }
    /// The active's standby reports in sync.
    fn in_sync(&mut self) {
        self.msg(Incoming::Heartbeat(Heartbeat { in_sync: true, token: 1, ..Heartbeat::default() }));
        let now = self.now;
        self.s.release(now);
        assert!(self.st.in_sync());
    }
    /// A standby following an active of epoch `epoch`.
    fn following(epoch: u64) -> Rig {
        let mut r = Rig::new(cfg(9, Role::Standby));
        r.tick();
        assert!(matches!(r.actions()[..], [Action::Connect { role: Role::Standby, probe: false }]));
        let now = r.now;
        r.s.on_connected(now, &hello(8, epoch, Role::Active));
        assert!(r.out().1.is_empty());
        assert_eq!(r.st.peer_state(), PeerState::Joining);
        r
    }
    /// An active that handed over to its in-sync standby (`on_drained` done).
    fn handed_over(node_id: u32) -> Rig {
        let mut r = Rig::active_with_standby(node_id);
        r.in_sync();
        r.st.request_handover();
        r.tick();
        r.out();
        let now = r.now;
        r.s.on_drained(now);
        r.out();
        r
    }
    /// An in-sync standby of an active of epoch 1.
    fn in_sync_standby() -> Rig {
        let mut r = Rig::following(1);
        r.join(1);
        r.out();
        r
    }
    /// An in-sync standby just dropped by its (live) active.
    fn dropped() -> Rig {
        let mut r = Rig::in_sync_standby();
        r.msg(Incoming::Refused("dropped".into()));
        r.actions();
        r
    }
    /// The standby applies a join snapshot of empty workers (their barriers only).
    fn join(&mut self, token: u64) {
        self.msg(Incoming::Snapshot { token });
        for w in 0..2u16 {
            let recs = barrier(w, token);
            self.msg(Incoming::Batch { worker: w, first: 1, last: 1, records: &recs });
        }
        self.tick();
    }
}

fn hello(node_id: u32, epoch: u64, role: Role) -> Hello {
    Hello { magic: MAGIC, version: PROTO_VERSION, node_id, epoch, role, mode: 0, workers: 2, heartbeat_us: 5000, dead_after: DEAD, groups: stack().group_digest(), session: 1, secret: [0; 16] }
}

fn barrier(worker: u16, token: u64) -> Vec<Record> {
    let d = delta::Delta {
        header: delta::DeltaHeader { worker, group: 0, slot: 0, generation: 0, seq: 1 },
        body: DeltaBody::Barrier { token },
    };
    let mut recs = Vec::new();
    delta::encode(&d, &mut recs).unwrap();
    recs
}

fn refused(m: &[Msg<'static>]) -> String {
    m.iter()
        .find_map(|m| match m {
            Msg::Refused { reason } => Some(reason.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Refused in {m:?}"))
}

fn takeover(a: &[Action]) -> (TakeoverReason, bool, u64, bool) {
    a.iter()
        .find_map(|a| match a {
            Action::TakeOver { takeover, hold_all, .. } => Some((takeover.reason, takeover.retained, takeover.epoch, *hold_all)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no TakeOver in {a:?}"))
}

// ---- start: probe and connect ---------------------------------------------------------------

#[test]
fn prefers_active_probes_then_becomes_active_when_nothing_answers() {
    let mut r = Rig::new(cfg(8, Role::Active));
    assert_eq!(r.st.role(), Role::Standby, "not active before the probe");
    r.tick();
    assert!(matches!(r.actions()[..], [Action::Connect { role: Role::Standby, probe: false }]));
    r.s.on_connect_failed(r.now, DialError::Refused);
    assert_eq!(r.s.next_deadline(), Some(r.now + Duration::from_millis(20)), "retries every 20 ms");
    // The window: 300 ms + 50 ms × (node id % 8) = 700 ms for node 8 → 300 ms; node 8 % 8 = 0.
    let mut t = 0;
    while r.st.role() != Role::Active {
        t += 20;
        r.at(t);
        r.tick();
        for a in r.actions() {
            match a {
                Action::Connect { .. } => r.s.on_connect_failed(r.now, DialError::Refused),
                Action::Listen => {}
                a => panic!("{a:?}"),
            }
        }
        assert!(t <= 320, "still probing at {t} ms");
    }
    assert!(t >= 300, "active after {t} ms, before the window closed");
    assert_eq!(r.s.epoch(), 1);
}

#[test]
fn prefers_active_follows_an_active_peer() {
    let mut r = Rig::probing();
    let now = r.now;
    r.s.on_connected(now, &hello(2, 4, Role::Active));
    assert!(r.out().1.is_empty(), "keeps the connection");
    assert_eq!((r.st.role(), r.st.peer_state(), r.s.epoch()), (Role::Standby, PeerState::Joining, 4));
}

#[test]
fn prefers_active_becomes_active_when_the_peer_is_a_standby() {
    let mut r = Rig::probing();
    let now = r.now;
    r.s.on_connected(now, &hello(2, 0, Role::Standby));
    assert!(matches!(r.actions()[..], [Action::Close { .. }, Action::Listen]));
    assert_eq!(r.st.role(), Role::Active);
}

#[test]
fn standby_backs_off_while_the_active_is_unreachable() {
    let mut r = Rig::new(cfg(9, Role::Standby));
    assert_eq!(r.st.peer_state(), PeerState::Connecting);
    let mut gaps = Vec::new();
    for _ in 0..7 {
        let due = r.s.next_deadline().unwrap();
        r.now = due;
        r.tick();
        assert!(matches!(r.actions()[..], [Action::Connect { .. }]));
        assert_eq!(r.s.next_deadline(), None, "nothing due while dialing");
        r.s.on_connect_failed(r.now, DialError::Refused);
        gaps.push((r.s.next_deadline().unwrap() - r.now).as_millis());
    }
    assert_eq!(gaps, [10, 20, 40, 80, 160, 200, 200]);
    assert_eq!(r.st.role(), Role::Standby, "a standby never takes over for an unreachable active");
}

#[test]
fn standby_waits_for_an_active_when_the_peer_is_not_one() {
    let mut r = Rig::new(cfg(9, Role::Standby));
    r.tick();
    r.actions();
    let now = r.now;
    r.s.on_connected(now, &hello(8, 0, Role::Fenced));
    assert!(matches!(r.actions()[..], [Action::Close { .. }]));
    assert_eq!(r.s.next_deadline(), Some(now + Duration::from_millis(50)));
}

// ---- refused mismatches ---------------------------------------------------------------------

#[test]
fn a_peer_in_another_mode_is_refused_naming_both() {
    let mut r = Rig::active(8);
    let mut h = hello(9, 0, Role::Standby);
    h.mode = 1;
    let now = r.now;
    r.s.on_accept(now, "10.0.0.9:1", &h);
    let (m, a) = r.out();
    let why = refused(&m);
    assert!(why.contains("mode mismatch") && why.contains("async") && why.contains("strict"), "{why}");
    assert!(matches!(a[..], [Action::Close { .. }]));
    assert!(!r.s.replicating());
    assert_eq!(r.st.refused.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(r.st.last_error(), why);
}

#[test]
fn a_peer_with_another_heartbeat_is_refused_naming_both() {
    let mut r = Rig::new(cfg(9, Role::Standby));
    r.tick();
    r.actions();
    let mut h = hello(8, 1, Role::Active);
    h.heartbeat_us = 2000;
    let now = r.now;
    r.s.on_connected(now, &h);
    let (m, a) = r.out();
    let why = refused(&m);
    assert!(why.contains("heartbeat interval mismatch") && why.contains("2000 µs") && why.contains("5000 µs"), "{why}");
    assert!(matches!(a[..], [Action::Close { .. }]));
    assert_eq!(r.st.peer_state(), PeerState::Connecting, "keeps trying: the operator may fix either side");
}

#[test]
fn a_peer_with_another_dead_peer_limit_is_refused_naming_both() {
    let mut r = Rig::active(8);
    let mut h = hello(9, 0, Role::Standby);
    h.dead_after = DEAD + 2;
    let now = r.now;
    r.s.on_accept(now, "10.0.0.9:1", &h);
    let (m, a) = r.out();
    let why = refused(&m);
    let want = format!("dead-peer limit mismatch: peer node 9 declares its peer dead after {} missed heartbeats, this engine after {DEAD}", DEAD + 2);
    assert!(why.contains(&want) && why.contains("sync.dead_after"), "{why}");
    assert!(matches!(a[..], [Action::Close { .. }]));
    assert!(!r.s.replicating());
}

#[test]
fn a_peer_with_other_ownership_groups_is_refused_naming_both() {
    let mut r = Rig::active(8);
    let mut h = hello(9, 0, Role::Standby);
    h.groups ^= 1;
    let now = r.now;
    r.s.on_accept(now, "10.0.0.9:1", &h);
    let (m, a) = r.out();
    let why = refused(&m);
    let ours = stack().group_digest();
    assert!(
        why.contains("ownership group mismatch")
            && why.contains(&format!("{:016x}", ours ^ 1))
            && why.contains(&format!("{ours:016x}"))
            && why.contains("default=10.9.0.1"),
        "{why}"
    );
    assert!(matches!(a[..], [Action::Close { .. }]));
    assert!(!r.s.replicating());
}

#[test]
fn a_peer_speaking_another_version_is_refused_naming_both() {
    let mut r = Rig::active(8);
    let mut h = hello(9, 0, Role::Standby);
    h.version = PROTO_VERSION + 1;
    let now = r.now;
    r.s.on_accept(now, "x", &h);
    let why = refused(&r.out().0);
    assert!(why.contains(&format!("version {}", PROTO_VERSION + 1)) && why.contains(&format!("version {PROTO_VERSION}")), "{why}");
}

// ---- the active: admission, acks, output commit ---------------------------------------------

#[test]
fn admission_starts_a_join_snapshot_and_holds_output_for_the_standby() {
    let mut r = Rig::active(8);
    assert!(r.s.wants_accept());
    assert_eq!(r.s.release(r.now), Release::All, "alone: everything released (unprotected)");
    assert!(r.st.unprotected.load(std::sync::atomic::Ordering::Relaxed));
    let now = r.now;
    r.s.on_accept(now, "x", &hello(9, 0, Role::Standby));
    let (m, a) = r.out();
    assert!(matches!(m[..], [Msg::Snapshot { token: 1 }]));
    assert!(matches!(a[..], [Action::RequestSnapshot { token: 1, pace: true, hold: true }]));
    assert!(r.s.replicating() && !r.s.wants_accept());
    assert_eq!(r.st.peer_state(), PeerState::Joining);
    assert_eq!(r.s.release(r.now), Release::Acked, "strict from the join on");
    assert_eq!((r.s.acked(0), r.s.pacing(1)), (0, 0));
    // Acks move the marks, per worker, never back.
    r.s.on_batch_sent(now, 0, 7, 10, &[3]);
    r.msg(Incoming::Ack { worker: 0, seq: 7 });
    r.msg(Incoming::Ack { worker: 0, seq: 5 });
    r.msg(Incoming::Ack { worker: 9, seq: 5 });
    assert_eq!((r.s.acked(0), r.s.acked(1)), (7, 0));
    assert!(!r.s.awaiting_ack());
    // A heartbeat for another token is not "in sync".
    r.msg(Incoming::Heartbeat(Heartbeat { in_sync: true, token: 2, ..Heartbeat::default() }));
    r.s.release(r.now);
    assert!(!r.st.in_sync());
    r.in_sync();
    assert_eq!(r.st.peer_state(), PeerState::InSync);
}

#[test]
fn admission_refuses_wrong_roles_and_newer_epochs() {
    let mut r = Rig::active(8);
    let now = r.now;
    r.s.on_accept(now, "x", &hello(9, 0, Role::Fenced));
    assert!(refused(&r.out().0).contains("expected standby"));
    r.s.on_accept(now, "x", &hello(9, 5, Role::Standby));
    assert!(refused(&r.out().0).contains("peer epoch 5 > ours 1"));
    // An older active probing us: we stay, it steps down.
    r.s.on_accept(now, "x", &hello(9, 1, Role::Active));
    assert!(matches!(r.actions()[..], [Action::Close { .. }]));
    assert_eq!(r.st.role(), Role::Active);
    // A newer one: we fence ourselves.
    r.s.on_accept(now, "x", &hello(9, 2, Role::Active));
    r.out();
    assert_eq!(r.st.role(), Role::Fenced);
    assert_eq!(r.s.release(r.now), Release::Nothing);
}

#[test]
fn async_releases_everything_until_the_lag_bound() {
    let mut c = cfg(8, Role::Active);
    c.mode = Mode::Async;
    let mut r = Rig::new(c);
    r.tick();
    r.actions();
    r.s.on_connect_failed(r.now, DialError::Invalid);
    r.actions();
    let mut h = hello(9, 0, Role::Standby);
    h.mode = 1;
    let now = r.now;
    r.s.on_accept(now, "x", &h);
    let (_, a) = r.out();
    assert!(matches!(a[..], [Action::RequestSnapshot { pace: false, hold: false, .. }]));
    assert_eq!(r.s.pacing(0), u64::MAX);
    r.in_sync();
    r.s.on_batch_sent(now, 1, 4, 3, &[4]);
    assert_eq!(r.s.release(r.now), Release::All);
    r.advance(Duration::from_millis(21));
    assert_eq!(r.s.release(r.now), Release::Acked, "over async_max_lag: hold until it catches up");
    r.msg(Incoming::Ack { worker: 1, seq: 4 });
    assert_eq!(r.s.release(r.now), Release::All);
}

#[test]
fn active_beats_and_drops_a_silent_standby_then_holds_for_fence_hold() {
    let mut r = Rig::active_with_standby(8);
    r.in_sync();
    r.advance(HB);
    r.tick();
    assert!(matches!(r.out().0[..], [Msg::Heartbeat(Heartbeat { in_sync: true, token: 1, .. })]));
    // Silent for dead_after intervals and a little: dropped, told so, output held.
    assert_eq!(r.s.next_deadline().unwrap(), r.now + HB);
    r.advance(HB * DEAD - HB + Duration::from_millis(1));
    r.tick();
    let (m, a) = r.out();
    assert!(refused(&m).starts_with("dropped by the active: no heartbeat"), "{m:?}");
    assert!(matches!(a[..], [Action::Close { .. }]));
    assert_eq!(r.st.peer_state(), PeerState::Dead);
    assert_eq!(r.s.release(r.now), Release::Keep, "fence_hold: nothing more leaves");
    r.advance(Duration::from_millis(29));
    assert_eq!(r.s.release(r.now), Release::Keep);
    r.advance(Duration::from_millis(2));
    assert_eq!(r.s.release(r.now), Release::All, "then it serves unprotected");
    assert!(r.s.wants_accept());
}

#[test]
fn a_standby_lost_before_it_was_in_sync_costs_no_hold() {
    let mut r = Rig::active_with_standby(8);
    let now = r.now;
    r.s.on_closed(now, "connection closed");
    let (m, _) = r.out();
    assert!(refused(&m).contains("connection closed"));
    assert_eq!(r.s.release(r.now), Release::All);
}

#[test]
fn a_refusal_from_the_standby_drops_it() {
    let mut r = Rig::active_with_standby(8);
    r.msg(Incoming::Refused("bye".into()));
    assert!(refused(&r.out().0).contains("refused: bye"));
    assert!(r.s.wants_accept());
}

// ---- fencing --------------------------------------------------------------------------------

#[test]
fn an_announcement_with_a_newer_epoch_fences_the_active_then_it_follows() {
    let mut r = Rig::active_with_standby(8);
    r.st.request_fence(2);
    r.tick();
    assert!(matches!(r.actions()[..], [Action::Close { .. }]));
    assert_eq!(r.st.role(), Role::Fenced);
    assert_eq!(r.st.fenced_by_announcement.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(r.s.release(r.now), Release::Nothing);
    assert_eq!(r.s.next_deadline(), Some(r.now + FENCED_WAIT));
    r.advance(FENCED_WAIT);
    r.tick();
    r.tick();
    assert!(matches!(r.actions()[..], [Action::Connect { role: Role::Standby, .. }]));
    assert_eq!(r.st.role(), Role::Fenced, "stays fenced until it follows");
    let now = r.now;
    r.s.on_connected(now, &hello(9, 2, Role::Active));
    assert_eq!((r.st.role(), r.s.epoch()), (Role::Standby, 2));
}

#[test]
fn a_takeover_message_from_the_standby_fences_the_active() {
    let mut r = Rig::active_with_standby(8);
    r.msg(Incoming::Takeover { epoch: 1 });
    assert_eq!(r.st.role(), Role::Active, "not newer than ours");
    r.msg(Incoming::Takeover { epoch: 2 });
    assert_eq!(r.st.role(), Role::Fenced);
}

#[test]
fn a_lone_active_probes_for_a_newer_active() {
    let mut r = Rig::active(8);
    r.tick();
    assert!(r.actions().is_empty());
    assert_eq!(r.s.next_deadline(), Some(r.now + SPLIT_BRAIN_PROBE));
    r.advance(SPLIT_BRAIN_PROBE);
    r.tick();
    assert!(matches!(r.actions()[..], [Action::Connect { role: Role::Active, probe: true }]));
    let now = r.now;
    // An older active (same epoch, higher node id) does not make us step down.
    r.s.on_connected(now, &hello(9, 1, Role::Active));
    assert!(matches!(r.actions()[..], [Action::Close { .. }]));
    assert_eq!(r.st.role(), Role::Active);
    r.advance(SPLIT_BRAIN_PROBE);
    r.tick();
    r.actions();
    let now = r.now;
    r.s.on_connected(now, &hello(3, 1, Role::Active));
    r.actions();
    assert_eq!(r.st.role(), Role::Fenced, "the lower node id wins a tie");
}

// ---- the standby: apply, ack, in sync, takeover ---------------------------------------------

#[test]
fn standby_acks_after_apply_and_reports_in_sync() {
    let mut r = Rig::following(1);
    r.join(1);
    let (m, _) = r.out();
    assert!(m.iter().any(|m| matches!(m, Msg::Ack { worker: 0, seq: 1 })), "{m:?}");
    assert!(m.iter().any(|m| matches!(m, Msg::Ack { worker: 1, seq: 1 })), "{m:?}");
    assert!(
        m.iter().any(|m| matches!(m, Msg::Heartbeat(Heartbeat { in_sync: true, token: 1, .. }))),
        "in sync is reported at once: {m:?}"
    );
    assert_eq!(r.st.peer_state(), PeerState::InSync);
    // Nothing new applied: no ack, and a heartbeat only when due.
    r.tick();
    assert!(r.out().0.is_empty());
    r.advance(HB);
    r.tick();
    assert!(matches!(r.out().0[..], [Msg::Heartbeat(Heartbeat { role: 2, .. })]));
}

#[test]
fn standby_takes_over_a_silent_active_after_reading_what_is_left() {
    let mut r = Rig::following(3);
    r.join(1);
    r.out();
    r.advance(HB * DEAD);
    r.tick();
    assert!(r.actions().iter().all(|a| !matches!(a, Action::ReadRest)), "exactly dead_after intervals: not yet");
    r.advance(Duration::from_millis(1));
    r.tick();
    assert!(matches!(r.actions()[..], [Action::ReadRest]));
    assert_eq!(r.s.epoch(), 4, "fenced first: epoch + 1");
    // What is left on the connection is still applied.
    let recs = barrier(0, 1);
    r.msg(Incoming::Batch { worker: 0, first: 2, last: 2, records: &recs });
    let now = r.now;
    r.s.on_rest_read(now);
    let (m, a) = r.out();
    assert!(matches!(m[..], [Msg::Takeover { epoch: 4 }]));
    assert_eq!(takeover(&a), (TakeoverReason::HeartbeatTimeout, false, 4, false));
    assert!(matches!(a[..], [Action::TakeOver { .. }, Action::Listen, Action::Close { .. }]), "{a:?}");
    assert_eq!(r.st.role(), Role::Active);
    assert!(r.s.wants_accept());
}

#[test]
fn standby_takes_over_when_the_stream_ends() {
    let mut r = Rig::in_sync_standby();
    r.advance(Duration::from_millis(2));
    let now = r.now;
    r.s.on_closed(now, "connection closed");
    assert!(matches!(r.actions()[..], [Action::ReadRest]));
    r.s.on_rest_read(now);
    let a = r.actions();
    assert_eq!(takeover(&a).0, TakeoverReason::PeerClosed);
    let Some(Action::TakeOver { detect, takeover, .. }) = a.iter().find(|a| matches!(a, Action::TakeOver { .. })) else { unreachable!() };
    assert_eq!(*detect, Duration::from_millis(2), "detection: since the last bytes");
    assert!(takeover.in_sync);
}

/// A stream that ends while the standby is still joining may be a live active's drop whose
/// `Refused` never got out from behind the snapshot: redial; take over only if the active
/// then refuses the connection (it is gone), with what the standby has.
#[test]
fn a_joining_standby_whose_stream_ends_redials_before_it_takes_over() {
    let mut r = Rig::following(1);
    r.advance(Duration::from_millis(2));
    let now = r.now;
    r.s.on_closed(now, "connection closed");
    assert!(r.actions().is_empty(), "no takeover yet");
    assert_eq!((r.st.role(), r.st.peer_state()), (Role::Standby, PeerState::Connecting));
    assert_eq!(r.s.next_deadline(), Some(r.now + Duration::from_millis(1)), "redials at once");
    // The active lives: a plain rejoin.
    r.advance(Duration::from_millis(1));
    r.tick();
    assert!(matches!(r.actions()[..], [Action::Connect { role: Role::Standby, probe: false }]));
    let now = r.now;
    r.s.on_connected(now, &hello(8, 1, Role::Active));
    assert_eq!((r.st.role(), r.st.peer_state()), (Role::Standby, PeerState::Joining));
    // The active is gone: its port refuses, and the standby takes over with what it has.
    let mut r = Rig::following(1);
    let now = r.now;
    r.s.on_closed(now, "connection closed");
    r.advance(Duration::from_millis(1));
    r.tick();
    r.actions();
    r.s.on_connect_failed(r.now, DialError::Refused);
    let a = r.actions();
    assert_eq!(takeover(&a).0, TakeoverReason::DroppedThenGone);
    let Some(Action::TakeOver { takeover, .. }) = a.iter().find(|a| matches!(a, Action::TakeOver { .. })) else { unreachable!() };
    assert!(!takeover.in_sync);
}

#[test]
fn ctl_takeover_works_connected_or_not() {
    let mut r = Rig::following(1);
    r.st.request_takeover();
    r.tick();
    assert!(matches!(r.actions()[..], [Action::ReadRest]));
    let mut r = Rig::new(cfg(9, Role::Standby));
    r.st.request_takeover();
    r.tick();
    assert_eq!(takeover(&r.actions()).0, TakeoverReason::Requested);
}

#[test]
fn a_standby_dropped_by_a_live_active_rejoins() {
    let mut r = Rig::in_sync_standby();
    r.msg(Incoming::Refused("dropped by the active: no heartbeat for 16ms".into()));
    assert!(matches!(r.actions()[..], [Action::Close { .. }]));
    assert_eq!(r.st.role(), Role::Standby);
    assert_eq!(r.s.next_deadline(), Some(r.now + Duration::from_millis(1)), "rejoins at once");
    // Its sync port still answers: a plain rejoin, never a takeover.
    r.advance(Duration::from_millis(1));
    r.tick();
    r.actions();
    let now = r.now;
    r.s.on_connected(now, &hello(8, 1, Role::Active));
    assert_eq!((r.st.role(), r.st.peer_state()), (Role::Standby, PeerState::Joining));
}

#[test]
fn a_standby_dropped_by_an_active_that_then_dies_takes_over_within_fence_hold() {
    let mut r = Rig::dropped();
    r.advance(Duration::from_millis(1));
    r.tick();
    r.actions();
    r.advance(Duration::from_millis(3));
    r.s.on_connect_failed(r.now, DialError::Refused);
    assert_eq!(takeover(&r.actions()).0, TakeoverReason::DroppedThenGone);
    // After fence_hold the active may have released what we lack: only a rejoin then.
    let mut r = Rig::dropped();
    r.advance(Duration::from_millis(31));
    r.s.on_connect_failed(r.now, DialError::Refused);
    assert!(r.actions().is_empty());
    assert_eq!(r.st.role(), Role::Standby);
}

// ---- handover (failback) and its fallback ---------------------------------------------------

#[test]
fn handover_needs_an_in_sync_standby() {
    let mut r = Rig::active_with_standby(8);
    r.st.request_handover();
    r.tick();
    assert!(r.actions().is_empty(), "refused: not in sync");
    assert_eq!(r.st.role(), Role::Active);
}

#[test]
fn handover_drains_then_hands_over_and_keeps_the_flows_until_the_rejoin_is_in_sync() {
    let mut r = Rig::active_with_standby(8);
    r.in_sync();
    r.st.request_handover();
    r.tick();
    assert!(matches!(r.actions()[..], [Action::FinalDrain]));
    let now = r.now;
    r.s.on_drained(now);
    let (m, a) = r.out();
    assert!(matches!(m[..], [Msg::Handover { epoch: 2 }]));
    assert!(matches!(a[..], [Action::Close { linger }] if linger == HB * DEAD));
    assert_eq!(r.st.role(), Role::Fenced);
    assert!(r.st.retain_flows(), "the workers keep their flows to fall back on");
    assert_eq!(r.s.release(r.now), Release::Keep, "and their output stays held (HOLD_ALL)");
    // Rejoin the new active at once; in sync → the kept flows are let go.
    r.tick();
    assert!(matches!(r.actions()[..], [Action::Connect { .. }]));
    let now = r.now;
    r.s.on_connected(now, &hello(9, 2, Role::Active));
    r.join(1);
    assert!(!r.st.retain_flows());
}

#[test]
fn handover_falls_back_when_the_new_active_dies_before_the_rejoin() {
    let mut r = Rig::handed_over(8);
    // The new active refuses within its listen grace: not yet a proof that it is gone.
    r.tick();
    r.actions();
    r.s.on_connect_failed(r.now, DialError::Refused);
    assert!(r.actions().is_empty());
    r.advance(HANDOVER_LISTEN_GRACE);
    r.tick();
    r.actions();
    r.s.on_connect_failed(r.now, DialError::Refused);
    let a = r.actions();
    assert_eq!(takeover(&a), (TakeoverReason::HandoverFallback, true, 3, false));
    assert_eq!(r.st.role(), Role::Active);
}

#[test]
fn handover_fallback_also_when_the_new_active_dies_during_the_rejoin() {
    let mut r = Rig::handed_over(8);
    r.tick();
    r.actions();
    let now = r.now;
    r.s.on_connected(now, &hello(9, 2, Role::Active));
    r.msg(Incoming::Snapshot { token: 1 });
    r.s.on_closed(now, "connection closed");
    r.actions();
    r.s.on_rest_read(now);
    assert_eq!(takeover(&r.actions()).0, TakeoverReason::HandoverFallback);
}

#[test]
fn the_new_active_holds_all_output_until_the_old_one_is_its_in_sync_standby() {
    let mut r = Rig::in_sync_standby();
    r.msg(Incoming::Handover { epoch: 2 });
    assert!(matches!(r.actions()[..], [Action::ReadRest]));
    let now = r.now;
    r.s.on_rest_read(now);
    let a = r.actions();
    assert_eq!(takeover(&a), (TakeoverReason::Handover, false, 2, true));
    assert_eq!(r.s.release(r.now), Release::Keep, "HOLD_ALL stays");
    // The old active rejoins; admitted without touching the hold.
    let now = r.now;
    r.s.on_accept(now, "x", &hello(8, 2, Role::Standby));
    let (_, a) = r.out();
    assert!(matches!(a[..], [Action::RequestSnapshot { hold: false, pace: true, .. }]));
    assert_eq!(r.s.release(r.now), Release::Keep);
    r.msg(Incoming::Heartbeat(Heartbeat { in_sync: true, token: 1, ..Heartbeat::default() }));
    r.tick();
    assert_eq!(r.s.release(r.now), Release::Acked, "released once it is in sync");
}

#[test]
fn the_handover_hold_ends_after_handover_hold_without_a_rejoin() {
    let mut r = Rig::following(1);
    r.msg(Incoming::Handover { epoch: 2 });
    r.actions();
    let now = r.now;
    r.s.on_rest_read(now);
    r.actions();
    assert_eq!(r.s.next_deadline(), Some(r.now + Duration::from_millis(200)), "the split-brain probe comes first");
    r.advance(Duration::from_millis(499));
    r.tick();
    r.actions();
    assert_eq!(r.s.release(r.now), Release::Keep);
    r.advance(Duration::from_millis(1));
    r.tick();
    assert_eq!(r.s.release(r.now), Release::All);
}

/// The secret of the connections an engine opens (`GroupSecrets`) follows the active: a
/// standby adopts the one its active's Hello carries (so that after a takeover it opens
/// backend connections as the old active would have), an active keeps its own whatever a
/// standby's Hello says.
#[test]
fn a_standby_adopts_its_actives_secret_and_an_active_keeps_its_own() {
    let active_key = *b"the active's key";
    let standby_key = *b"standby's secret";
    let st_stack = Arc::new(StackConfig { open_secrets: Arc::new(flowtwin_engine::tcp::isn::GroupSecrets::new(standby_key)), ..(*stack()).clone() });
    let t0 = Instant::now();
    let mut s = Session::new(cfg(9, Role::Standby), st_stack.clone(), Arc::new(SyncStatus::new()), t0);
    assert_eq!(s.hello(Role::Standby).secret, standby_key, "its own until it follows");
    s.tick(t0);
    let mut h = hello(8, 0, Role::Active);
    h.secret = active_key;
    s.on_connected(t0, &h);
    assert_eq!(st_stack.open_secrets.get(GroupId::DEFAULT), active_key, "adopted");
    assert_eq!(s.hello(Role::Standby).secret, active_key);

    let a_stack = Arc::new(StackConfig { open_secrets: Arc::new(flowtwin_engine::tcp::isn::GroupSecrets::new(active_key)), ..(*stack()).clone() });
    let mut a = Session::new(cfg(8, Role::Active), a_stack.clone(), Arc::new(SyncStatus::new()), t0);
    a.tick(t0);
    let mut hs = hello(9, 0, Role::Standby);
    hs.secret = standby_key;
    a.on_accept(t0, "10.0.0.9:1", &hs);
    assert_eq!(a_stack.open_secrets.get(GroupId::DEFAULT), active_key, "an active never adopts");
    assert_eq!(a.hello(Role::Active).secret, active_key);
}

/// Fenced by its peer's takeover, the old active follows the new one, which is at its
/// busiest: for `SETTLE_AFTER_FENCE` it allows `SETTLE_FACTOR` times the usual silence before
/// it takes the service back (on the rig the two took it from each other three times in
/// 0.5 s); after that, the usual limit again.
#[test]
fn a_fenced_engine_gives_the_peer_that_took_over_time_to_settle() {
    let dead = HB * DEAD;
    let fenced_rig = || {
        let mut r = Rig::active_with_standby(8);
        r.st.request_fence(2);
        r.tick();
        r.actions();
        r.advance(FENCED_WAIT);
        r.tick();
        r.tick();
        r.actions();
        let now = r.now;
        r.s.on_connected(now, &hello(9, 2, Role::Active));
        r.join(1);
        r.out();
        assert_eq!(r.st.role(), Role::Standby);
        r
    };
    // Run the silent session from deadline to deadline until `until` or its takeover:
    // when it took over, after how much silence.
    let silent_until = |r: &mut Rig, until: Duration| -> Option<Duration> {
        let from = r.now;
        while r.now < from + until {
            let Some(due) = r.s.next_deadline() else { break };
            r.now = due.max(r.now + Duration::from_micros(100));
            r.tick();
            if r.actions().iter().any(|a| matches!(a, Action::ReadRest)) {
                return Some(r.now - from);
            }
        }
        None
    };
    // Right after the fencing: twice the usual silence is no death...
    let mut r = fenced_rig();
    assert_eq!(r.s.standby_dead_limit(), dead * SETTLE_FACTOR);
    assert_eq!(silent_until(&mut r, dead * 2), None, "the peer that just took over is given time");
    // ... SETTLE_FACTOR times it is.
    let mut r = fenced_rig();
    let t = silent_until(&mut r, dead * (SETTLE_FACTOR + 1)).expect("taken over in the end");
    assert!(t >= dead * SETTLE_FACTOR && t < dead * (SETTLE_FACTOR + 1), "after {t:?}");
    // A second after the fencing the usual limit holds again.
    let mut r = fenced_rig();
    let end = r.now + SETTLE_AFTER_FENCE;
    while r.now < end {
        r.advance(HB);
        r.msg(Incoming::Heartbeat(Heartbeat { epoch: 2, in_sync: true, token: 1, ..Heartbeat::default() }));
        r.tick();
        r.out();
    }
    assert_eq!(r.s.standby_dead_limit(), dead);
    let t = silent_until(&mut r, dead * 2).expect("taken over with the usual limit");
    assert!(t >= dead && t < dead * 2, "after {t:?}");
    // A standby that was never fenced has the usual limit from the start.
    assert_eq!(Rig::in_sync_standby().s.standby_dead_limit(), dead);
}
