//! Starting: a preferred active probes before it takes the service, a standby dials and
//! backs off, and what a standby adopts from its active's Hello.

use super::*;

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
