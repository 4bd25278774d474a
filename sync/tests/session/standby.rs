//! The standby: apply, ack, in sync, takeover (silence, end of stream, ctl), and a standby
//! dropped by its active.

use super::*;

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

/// A standby whose own port link is down does not take over a silent active: it could not
/// serve, and an active that was only starved (port_down in a full run: B's heartbeats late
/// on a busy machine) would be fenced with nobody left to answer. Once the link is back and
/// the active is still silent, it takes over; said and counted once per silence.
#[test]
fn standby_with_its_port_down_defers_the_takeover_until_the_link_is_up() {
    let mut r = Rig::following(3);
    r.join(1);
    r.out();
    r.st.set_port_down(true);
    r.advance(HB * DEAD * 4);
    r.tick();
    r.advance(HB);
    r.tick();
    assert!(r.actions().iter().all(|a| !matches!(a, Action::ReadRest)), "no takeover while the port is down");
    assert_eq!(r.s.epoch(), 3, "not fenced: the epoch stays");
    assert_eq!(r.st.role(), Role::Standby);
    assert_eq!(r.st.takeovers_deferred_port_down.load(std::sync::atomic::Ordering::Relaxed), 1, "counted once per silence");
    r.st.set_port_down(false);
    r.advance(Duration::from_millis(1));
    r.tick();
    assert!(matches!(r.actions()[..], [Action::ReadRest]), "the link is back and the active still silent: take over");
    assert_eq!(r.s.epoch(), 4);
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
