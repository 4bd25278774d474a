//! Handover (failback) and its fallback when the new active dies.

use super::*;

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
