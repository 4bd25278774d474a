//! The active: admission of a standby, its acks and output commit, its loss; fencing, and
//! a fenced engine following the peer that took over.

use super::*;

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
    let (mut r, h) = Rig::async_active();
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
