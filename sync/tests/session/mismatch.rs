//! Refused peers: a Hello whose mode, timers, ownership groups or protocol version differ
//! from this engine's is refused with both values named.

use super::*;

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
    assert!(why.contains("mode mismatch") && why.contains("async") && why.contains("strict") && why.contains("(sync.mode)"), "{why}");
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
    assert!(why.contains("heartbeat interval mismatch") && why.contains("2000 µs") && why.contains("5000 µs") && why.contains("(sync.heartbeat_ms)"), "{why}");
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

/// Strict: an active that lost its in-sync standby holds output `fence_hold`, and a dropped
/// standby trusts that it did for its own `fence_hold`: the two must be the same.
#[test]
fn a_peer_with_another_fence_hold_is_refused_naming_both() {
    let mut r = Rig::active(8);
    let mut h = hello(9, 0, Role::Standby);
    h.fence_hold_us = 40_500;
    let now = r.now;
    r.s.on_accept(now, "10.0.0.9:1", &h);
    let (m, a) = r.out();
    let why = refused(&m);
    let want = "fence hold mismatch: peer node 9 holds its output 40.500 ms after losing its in-sync standby, this engine 30 ms";
    assert!(why.contains(want) && why.contains("sync.fence_hold_ms"), "{why}");
    assert!(matches!(a[..], [Action::Close { .. }]));
    assert!(!r.s.replicating());
    assert_eq!(r.st.last_error(), why);
}

/// Strict: the engine that takes over by `Handover` holds all output `handover_hold` at most,
/// and the one that handed over keeps its flows to fall back on for its own: the same time.
/// Refused by a standby too (its dial's Hello).
#[test]
fn a_peer_with_another_handover_hold_is_refused_naming_both() {
    let mut r = Rig::new(cfg(9, Role::Standby));
    r.tick();
    r.actions();
    let mut h = hello(8, 1, Role::Active);
    h.handover_hold_us = 0;
    let now = r.now;
    r.s.on_connected(now, &h);
    let (m, a) = r.out();
    let why = refused(&m);
    let want = "handover hold mismatch: peer node 8 holds all output at most 0 ms after a handover (and keeps its flows that long after handing over), this engine 500 ms";
    assert!(why.contains(want) && why.contains("sync.handover_hold_ms"), "{why}");
    assert!(matches!(a[..], [Action::Close { .. }]));
    assert_eq!(r.st.peer_state(), PeerState::Connecting, "keeps trying: the operator may fix either side");
}

/// Async: no engine holds output after a lost standby or a handover, so the strict-only
/// holds may differ (and `async_max_lag`, which only an active reads for its own output, is
/// not in the Hello at all).
#[test]
fn an_async_pair_is_not_refused_for_other_strict_holds() {
    let (mut r, mut h) = Rig::async_active();
    h.fence_hold_us = 0;
    h.handover_hold_us = 2_000_000;
    let now = r.now;
    r.s.on_accept(now, "10.0.0.9:1", &h);
    let (m, a) = r.out();
    assert!(!m.iter().any(|m| matches!(m, Msg::Refused { .. })), "{m:?}");
    assert!(matches!(a[..], [Action::RequestSnapshot { .. }]), "{a:?}");
    assert!(r.s.replicating());
}
