//! Split brain: fencing between two actives, and a standby dropped by a live or dying active.

use super::*;

// ---- split brain: fencing between two actives, and a dropped standby ------------------------

/// Accept up to `max` connections on `lst` within `limit`, answering each with `reply`. The
/// sockets are returned open: closing them would look like that peer dying.
fn answer_connections(lst: &TcpListener, reply: &[u8], limit: Duration, max: usize) -> Vec<TcpStream> {
    lst.set_nonblocking(true).unwrap();
    let t0 = Instant::now();
    let mut open = Vec::new();
    while t0.elapsed() < limit && open.len() < max {
        match lst.accept() {
            Ok((mut s, _)) => {
                let _ = s.write_all(reply);
                open.push(s);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    open
}

/// An engine started as active with no standby (nothing listens on its peer address yet),
/// once it is active; with its own (listen, peer) addresses.
fn lone_active(stack: &Arc<StackConfig>) -> (Node, SocketAddr, SocketAddr) {
    let (acfg, _) = pair_cfgs(Duration::from_millis(5));
    let (listen, peer) = (acfg.listen, acfg.peer);
    let a = node(acfg, stack, idle_links(1));
    wait_active(&a);
    (a, listen, peer)
}

/// An active engine alone (its standby gone) probes its peer address; a *newer* active
/// answering there (a standby that took over while this engine stalled) makes it step down,
/// so a split brain heals instead of both engines answering for the VIP.
#[test]
fn lone_active_steps_down_when_its_probe_finds_a_newer_active() {
    let _g = serial();
    let stack = stack_cfg();
    let (a, _, peer) = lone_active(&stack);
    // Bound only now: A's start-up attempt to reach its peer must not sit in this backlog.
    let fake = TcpListener::bind(peer).unwrap();
    let probes = answer_connections(&fake, &peer_hello(99, 9, Role::Active), Duration::from_secs(1), 1);
    assert_eq!(probes.len(), 1, "the lone active never probed its peer");
    wait_until("stepped down", Duration::from_secs(2), || {}, || a.status.role() != Role::Active);
    a.handle.stop();
}

/// The probe's rule is "older steps down": an *older* active answering leaves us active.
#[test]
fn lone_active_stays_active_when_its_probe_finds_an_older_active() {
    let _g = serial();
    let stack = stack_cfg();
    let (a, _, peer) = lone_active(&stack);
    // Bound only now: A's start-up attempt to reach its peer must not sit in this backlog.
    let fake = TcpListener::bind(peer).unwrap();
    // Our node's epoch is 1; epoch 0 from a higher node id is older on both counts.
    let probes = answer_connections(&fake, &peer_hello(99, 0, Role::Active), Duration::from_millis(700), usize::MAX);
    assert!(probes.len() >= 2, "expected repeated probes while alone, saw {}", probes.len());
    assert_eq!(a.status.role(), Role::Active, "an older peer must not fence us");
    a.handle.stop();
}

/// The other direction: a newer active connects to our listener (its own probe); we step down.
#[test]
fn active_steps_down_when_a_newer_active_connects() {
    let _g = serial();
    let stack = stack_cfg();
    let (a, listen, _) = lone_active(&stack);
    let mut s = TcpStream::connect(listen).unwrap();
    s.write_all(&peer_hello(99, 9, Role::Active)).unwrap();
    wait_until("stepped down", Duration::from_secs(2), || {}, || a.status.role() != Role::Active);
    a.handle.stop();
}

/// A live active that drops its standby says so (Refused) before closing. The standby must
/// rejoin, never take over: a stalled standby reading "closed" as "dead" caused a split brain.
#[test]
fn standby_dropped_by_a_live_active_rejoins_instead_of_taking_over() {
    let _g = serial();
    let stack = stack_cfg();
    let (_, scfg) = pair_cfgs(Duration::from_millis(5));
    let fake = TcpListener::bind(scfg.peer).unwrap();
    let b = node(scfg, &stack, idle_links(1));
    let (mut s, _) = fake.accept().unwrap();
    let mut out = peer_hello(8, 1, Role::Active);
    proto::encode(&Msg::Snapshot { token: 1 }, &mut out);
    proto::encode(&Msg::Refused { reason: "dropped by the active: no heartbeat for 30ms".into() }, &mut out);
    s.write_all(&out).unwrap();
    drop(s);
    // It comes back as a standby (a new connection), and no takeover happened.
    let back = answer_connections(&fake, &peer_hello(8, 1, Role::Active), Duration::from_secs(1), 1);
    assert_eq!(back.len(), 1, "the dropped standby did not reconnect");
    if let Ok((t, _)) = b.takeovers.try_recv() {
        panic!("a standby told it was dropped took over: {:?}", t.reason);
    }
    assert_ne!(b.status.role(), Role::Active);
    b.handle.stop();
}

/// The active dropped an in-sync standby (it found it silent: on a starved machine the
/// active's own thread may be the one that starved) and then died before the standby could
/// rejoin. The standby's rejoin is refused (nothing listens on the active's sync port): within
/// `fence_hold` of the drop the active released nothing the standby lacks, so the standby
/// takes over instead of waiting for an active that is gone (found by scripts/soak).
#[test]
fn standby_dropped_by_an_active_that_then_dies_takes_over() {
    let _g = serial();
    let stack = stack_cfg();
    let (_, scfg) = pair_cfgs(Duration::from_millis(5));
    let fence_hold = scfg.fence_hold;
    let fake = TcpListener::bind(scfg.peer).unwrap();
    let b = node(scfg, &stack, idle_links(1));
    let (mut s, _) = fake.accept().unwrap();
    let mut out = peer_hello(8, 1, Role::Active);
    proto::encode(&Msg::Snapshot { token: 1 }, &mut out);
    // The join snapshot of an empty worker: just its barrier. The standby is in sync.
    let barrier = delta::Delta {
        header: delta::DeltaHeader { worker: 0, group: 0, slot: 0, generation: 0, seq: 1 },
        body: DeltaBody::Barrier { token: 1 },
    };
    let mut recs: Vec<Record> = Vec::new();
    delta::encode(&barrier, &mut recs).unwrap();
    proto::encode_batch(&mut out, 0, 1, 1, &recs);
    s.write_all(&out).unwrap();
    wait_until("in sync", Duration::from_secs(2), || {}, || b.status.in_sync());
    let t_drop = Instant::now();
    let mut out = Vec::new();
    proto::encode(&Msg::Refused { reason: "dropped by the active: no heartbeat for 16ms".into() }, &mut out);
    s.write_all(&out).unwrap();
    // The active dies with its sync port: a rejoin is refused. (Its last word must reach the
    // standby: closing with the standby's heartbeats unread would send a reset, which may
    // overtake the refusal, and the standby would then take over as from a closed peer.
    // So: FIN after the refusal, then read until the standby closes its side.)
    drop(fake);
    let _ = s.shutdown(std::net::Shutdown::Write);
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut sink = [0u8; 4096];
    while matches!(std::io::Read::read(&mut s, &mut sink), Ok(n) if n > 0) {}
    drop(s);
    let (t, at) = b.takeovers.recv_timeout(Duration::from_secs(2)).expect("the standby took over");
    assert!(matches!(t.reason, TakeoverReason::DroppedThenGone), "{:?}", t.reason);
    assert!(at.duration_since(t_drop) < fence_hold + Duration::from_millis(20), "took {:?}", at.duration_since(t_drop));
    assert_eq!(b.status.role(), Role::Active);
    b.handle.stop();
}
