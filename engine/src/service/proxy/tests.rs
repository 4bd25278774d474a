//! Unit tests of the proxy service.
use super::*;
use crate::service::{Kind, LinkEnd};
use std::sync::Arc;

const T0: Instant = Instant(1_000_000);
static SP: std::sync::LazyLock<ProxySpec> = std::sync::LazyLock::new(|| spec(1, Balance::RoundRobin));

#[test]
fn a_backend_that_keeps_failing_rests_for_fail_timeout() {
    let s = spec(2, Balance::RoundRobin).with_health(Health { max_fails: 2, fail_timeout: Duration::from_secs(5) });
    let b = &s.backends[0];
    b.outcome(false, T0, s.health);
    assert!(b.usable(T0), "one failure is not enough");
    b.outcome(true, T0, s.health);
    b.outcome(false, T0, s.health);
    assert!(b.usable(T0), "a success clears the count");
    b.outcome(false, T0, s.health);
    assert!(!b.usable(T0) && b.usable(T0 + Duration::from_secs(5)));
    assert_eq!((b.failed.load(Relaxed), b.marked_down.load(Relaxed)), (3, 1));
    assert!((0..4).all(|_| s.choose(Ipv4Addr::LOCALHOST, T0) == Some(1)), "only the other one meanwhile");
    let never = spec(1, Balance::RoundRobin).with_health(Health { max_fails: 0, ..Health::default() });
    (0..10).for_each(|_| never.backends[0].outcome(false, T0, never.health));
    assert!(never.backends[0].usable(T0), "max_fails = 0: never marked down");
}

fn spec(n: usize, balance: Balance) -> ProxySpec {
    let b = (0..n).map(|i| SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 10 + i as u8), 80)).collect();
    // The pipes' own tests: `commit = "standby"` (peer mode has tests of its own below).
    ProxySpec::new(b, balance, Ipv4Addr::new(10, 0, 0, 1), 8).with_commit(Commit::Standby)
}

#[test]
fn pipes_relay_both_ways_bounded() {
    let mut c = ProxyHalf::new(Side::Client, 8);
    let mut b = ProxyHalf::new(Side::Backend(0), 8);
    {
        let mut cc = ProxyConn { me: &mut c, partner: Some(&mut b), spec: &SP };
        assert_eq!(cc.rx_space(), 8);
        assert_eq!(cc.on_recv(b"GET / HTTP"), 8, "bounded by the pipe");
        assert_eq!(cc.rx_space(), 0);
        assert_eq!(cc.tx_end(), 0, "nothing from the backend yet");
    }
    {
        let mut bc = ProxyConn { me: &mut b, partner: Some(&mut c), spec: &SP };
        assert_eq!(bc.tx_end(), 8);
        let mut buf = [0u8; 16];
        assert_eq!(bc.read_at(0, &mut buf), 8);
        assert_eq!(&buf[..8], b"GET / HT");
        bc.on_acked(5);
        assert_eq!(bc.read_at(0, &mut buf), 0, "released");
        assert_eq!(bc.on_recv(b"200"), 3);
    }
    let mut cc = ProxyConn { me: &mut c, partner: Some(&mut b), spec: &SP };
    assert_eq!(cc.rx_space(), 5);
    assert_eq!(cc.on_recv(b"TP"), 2, "wraps the ring");
    assert_eq!(cc.tx_end(), 3);
    assert!(!cc.tx_closed());
}

#[test]
fn half_close_and_adoption() {
    let mut c = ProxyHalf::new(Side::Client, 16);
    let mut b = ProxyHalf::new(Side::Backend(0), 16);
    ProxyConn { me: &mut c, partner: Some(&mut b), spec: &SP }.on_peer_fin();
    assert!(ProxyConn { me: &mut b, partner: Some(&mut c), spec: &SP }.tx_closed(), "the client's FIN goes on to the backend");
    assert_eq!(ProxyConn { me: &mut c, partner: Some(&mut b), spec: &SP }.rx_space(), 0);
    // The backend answers and closes; then the backend half ends in order.
    let mut bc = ProxyConn { me: &mut b, partner: Some(&mut c), spec: &SP };
    assert_eq!(bc.on_recv(b"reply"), 5);
    bc.on_peer_fin();
    ProxyKind::adopt(&mut c, &mut b, 0);
    let mut cc = ProxyConn { me: &mut c, partner: None, spec: &SP };
    assert_eq!(cc.tx_end(), 5);
    let mut buf = [0u8; 8];
    assert_eq!(cc.read_at(0, &mut buf), 5);
    assert_eq!(&buf[..5], b"reply");
    assert!(cc.tx_closed());
    assert_eq!(cc.on_recv(b"more"), 0, "nowhere to send it");
    cc.on_acked(5);
    assert_eq!(c.adopted().map(|p| p.released), Some(5));
}

#[test]
fn alone_without_backend_closes_at_once() {
    let mut c = ProxyHalf::new(Side::Client, 16);
    assert!(!ProxyKind::partner_ended(&mut c, LinkEnd::NeverConnected));
    let cc = ProxyConn { me: &mut c, partner: None, spec: &SP };
    assert!(cc.tx_closed());
    assert_eq!(cc.tx_end(), 0);
    assert_eq!(cc.rx_space(), 0);
    let mut c = ProxyHalf::new(Side::Client, 16);
    assert!(ProxyKind::partner_ended(&mut c, LinkEnd::Reset), "a reset propagates");
}

#[test]
fn replay_alone_takes_everything_and_keeps_the_last_cap_bytes() {
    let mut c = ProxyHalf::new(Side::Client, 4);
    let mut cc = ProxyConn { me: &mut c, partner: None, spec: &SP };
    assert_eq!(cc.on_recv(b"abcdef"), 6);
    assert_eq!(cc.on_recv(b"gh"), 2);
    ProxyKind::resume_linked(&std::sync::Arc::new(spec(1, Balance::RoundRobin)), &mut c, 1);
    assert_eq!(c.rx.released, 4, "the ring holds the last 4 bytes; all before were delivered");
    let mut b = ProxyHalf::new(Side::Backend(0), 4);
    let bc = ProxyConn { me: &mut b, partner: Some(&mut c), spec: &SP };
    let mut buf = [0u8; 8];
    assert_eq!(bc.read_at(4, &mut buf), 4);
    assert_eq!(&buf[..4], b"efgh");
    assert_eq!(bc.read_at(3, &mut buf), 0);
}

#[test]
fn image_round_trip_and_refusals() {
    let sp = Arc::new(spec(2, Balance::RoundRobin));
    let mut c = ProxyHalf::new(Side::Backend(1), 8);
    let mut p = ProxyHalf::new(Side::Client, 8);
    {
        let mut cc = ProxyConn { me: &mut c, partner: Some(&mut p), spec: &SP };
        cc.on_recv(b"0123456");
    }
    ProxyConn { me: &mut p, partner: Some(&mut c), spec: &SP }.on_acked(2);
    ProxyConn { me: &mut p, partner: Some(&mut c), spec: &SP }.on_recv(b"zz");
    ProxyKind::adopt(&mut c, &mut p, 0);
    let mut img = Vec::new();
    ProxyKind::image(&c, &mut img);
    let back = ProxyKind::from_image(&sp, &img).expect("decodes");
    assert_eq!(back.side, Side::Backend(1));
    assert!(back.alone);
    assert_eq!((back.rx.received, back.rx.released), (7, 2));
    let mut x = [0u8; 8];
    assert_eq!(back.rx.read_at(2, &mut x), 5);
    assert_eq!(&x[..5], b"23456");
    assert_eq!(back.adopted().map(|a| a.received), Some(2));
    for cut in 0..img.len() {
        assert!(ProxyKind::from_image(&sp, &img[..cut]).is_none(), "truncated at {cut}");
    }
    let mut bad = img.clone();
    bad[1] = 9; // backend 9 of 2
    assert!(ProxyKind::from_image(&sp, &bad).is_none());
    let mut long = img.clone();
    long.push(0);
    assert!(ProxyKind::from_image(&sp, &long).is_none());
}

#[test]
fn balancing() {
    let s = spec(3, Balance::RoundRobin);
    let picks: Vec<_> = (0..6).map(|_| s.choose(Ipv4Addr::new(1, 2, 3, 4), T0).unwrap()).collect();
    assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    s.backends[1].up.store(false, Relaxed);
    assert!((0..6).all(|_| s.choose(Ipv4Addr::LOCALHOST, T0) != Some(1)), "a down backend gets nothing");

    let s = spec(3, Balance::LeastConn);
    s.backends[0].active.store(5, Relaxed);
    s.backends[1].active.store(1, Relaxed);
    s.backends[2].active.store(3, Relaxed);
    assert_eq!(s.choose(Ipv4Addr::LOCALHOST, T0), Some(1));

    let s = spec(4, Balance::Hash);
    let clients: Vec<Ipv4Addr> = (0..200u32).map(|i| Ipv4Addr::from(0x0a00_0000 + i)).collect();
    let before: Vec<_> = clients.iter().map(|&c| s.choose(c, T0).unwrap()).collect();
    assert_eq!(before, clients.iter().map(|&c| s.choose(c, T0).unwrap()).collect::<Vec<_>>(), "sticky");
    let mut seen = [0; 4];
    before.iter().for_each(|&b| seen[b] += 1);
    assert!(seen.iter().all(|&n| n > 20), "spread: {seen:?}");
    s.backends[2].up.store(false, Relaxed);
    for (c, b) in clients.iter().zip(&before) {
        let now = s.choose(*c, T0).unwrap();
        assert!(*b == 2 || now == *b, "only backend 2's clients move");
    }
    let none = spec(2, Balance::RoundRobin);
    none.backends.iter().for_each(|b| b.up.store(false, Relaxed));
    assert_eq!(none.choose(Ipv4Addr::LOCALHOST, T0), None);
}

fn addr(last: u8) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, last), 80)
}

#[test]
fn smooth_weighted_round_robin_is_nginxs_sequence() {
    let s = spec(3, Balance::RoundRobin);
    s.backends[0].weight.store(5, Relaxed);
    let picks: Vec<_> = (0..7).map(|_| s.choose(Ipv4Addr::LOCALHOST, T0).unwrap()).collect();
    // nginx's example: weights { a: 5, b: 1, c: 1 } give a a b a c a a.
    assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
    let mut n = [0; 3];
    (0..700).for_each(|_| n[s.choose(Ipv4Addr::LOCALHOST, T0).unwrap()] += 1);
    assert_eq!(n, [500, 100, 100]);
}

#[test]
fn least_conn_divides_by_weight() {
    let s = spec(2, Balance::LeastConn);
    s.backends[0].weight.store(4, Relaxed);
    s.backends[0].active.store(6, Relaxed);
    s.backends[1].active.store(2, Relaxed);
    assert_eq!(s.choose(Ipv4Addr::LOCALHOST, T0), Some(0), "6/4 < 2/1");
    s.backends[0].active.store(9, Relaxed);
    assert_eq!(s.choose(Ipv4Addr::LOCALHOST, T0), Some(1), "9/4 > 2/1");
}

#[test]
fn weighted_hash_shares_follow_weights() {
    let s = spec(2, Balance::Hash);
    s.backends[1].weight.store(3, Relaxed);
    let mut n = [0u32; 2];
    (0..4000u32).for_each(|i| n[s.choose(Ipv4Addr::from(0x0a00_0000 + i), T0).unwrap()] += 1);
    assert!((2700..3300).contains(&n[1]), "weight 3 of 4: {n:?}");
}

#[test]
fn slots_add_drain_remove_reap() {
    let s = spec(1, Balance::RoundRobin).with_slots(3);
    assert_eq!(s.backends.len(), 3);
    assert_eq!(s.backends[1].admin(), Admin::Empty);
    assert!((0..4).all(|_| s.choose(Ipv4Addr::LOCALHOST, T0) == Some(0)), "empty slots get nothing");
    let v0 = s.pool_version();
    assert_eq!(s.add_backend(addr(20), 2, DEFAULT_POOL), Ok(1));
    assert!(s.pool_version() > v0);
    assert_eq!(s.backends[1].addr(), addr(20));
    assert_eq!(s.add_backend(addr(20), 1, DEFAULT_POOL), Err(PoolError::Duplicate(addr(20), Admin::Ready)));
    assert_eq!(s.add_backend(addr(21), 0, DEFAULT_POOL), Err(PoolError::BadWeight(0)));
    assert_eq!(s.add_backend(addr(21), 1, 0), Err(PoolError::NoSuchPool(0, 0)));
    let picks: Vec<_> = (0..6).map(|_| s.choose(Ipv4Addr::LOCALHOST, T0).unwrap()).collect();
    assert_eq!(picks.iter().filter(|&&i| i == 1).count(), 4, "weight 2 of 3: {picks:?}");
    assert_eq!(s.add_backend(addr(21), 1, DEFAULT_POOL), Ok(2));
    assert_eq!(s.add_backend(addr(22), 1, DEFAULT_POOL), Err(PoolError::Full(3)));

    // Drain: no new connections, the open one stays counted; remove waits for it.
    s.backends[0].active.store(1, Relaxed);
    assert_eq!(s.remove_backend(addr(10), false), Err(PoolError::NotDrained(addr(10))));
    assert_eq!(s.drain_backend(addr(10)), Ok(0));
    assert!((0..6).all(|_| s.choose(Ipv4Addr::LOCALHOST, T0) != Some(0)));
    assert_eq!(s.remove_backend(addr(10), false), Err(PoolError::Busy(addr(10), 1)));
    assert_eq!(s.undrain_backend(addr(10)), Ok(0));
    assert_eq!(s.backends[0].admin(), Admin::Ready);
    assert_eq!(s.remove_backend(addr(10), true), Ok(0), "--force: at once");
    assert_eq!(s.backends[0].admin(), Admin::Removed);
    assert_eq!(s.undrain_backend(addr(10)), Err(PoolError::State(addr(10), Admin::Removed, "undrain")));
    assert_eq!(s.idle_removed().count(), 0, "a connection still refers to slot 0");
    assert!(!s.reap(0));
    assert_eq!(s.add_backend(addr(22), 1, DEFAULT_POOL), Err(PoolError::Full(3)), "not reused while referred to");
    s.backends[0].active.store(0, Relaxed);
    assert_eq!(s.idle_removed().collect::<Vec<_>>(), [0]);
    assert!(s.reap(0));
    assert_eq!(s.backends[0].admin(), Admin::Empty);
    assert_eq!(s.find(addr(10)), None);
    assert_eq!(s.drain_backend(addr(10)), Err(PoolError::Unknown(addr(10))));
    assert_eq!(s.add_backend(addr(22), 1, DEFAULT_POOL), Ok(0), "the slot is free again");
    assert_eq!(s.backends[0].opened.load(Relaxed), 0, "a reused slot's counters start over");
}

#[test]
fn added_backends_join_the_pool_they_name_and_tables_replicate() {
    let pools = vec![Pool { host: Some("a".into()), path_prefix: None, backends: vec![1] }];
    let s = spec(2, Balance::RoundRobin).with_slots(4).with_pools(&[0], pools);
    assert!((0..4).all(|_| s.choose_in(0, Ipv4Addr::LOCALHOST, T0) == Some(1)));
    assert_eq!(s.add_backend(addr(30), 1, 0), Ok(2));
    let picks: Vec<_> = (0..4).map(|_| s.choose_in(0, Ipv4Addr::LOCALHOST, T0).unwrap()).collect();
    assert_eq!(picks, [1, 2, 1, 2], "pool 0 has the added backend");
    assert!((0..4).all(|_| s.choose(Ipv4Addr::LOCALHOST, T0) == Some(0)), "the default pool does not");
    s.drain_backend(addr(11)).unwrap();

    // The standby's spec (from its own, older config) becomes the active's pool.
    let standby = spec(2, Balance::RoundRobin).with_slots(4).with_pools(&[0], vec![Pool { host: Some("a".into()), path_prefix: None, backends: vec![1] }]);
    let (_, t) = s.table();
    standby.apply_table(&t).unwrap();
    assert_eq!(standby.table().1, t);
    assert_eq!(standby.backends[2].addr(), addr(30));
    assert_eq!(standby.backends[1].admin(), Admin::Draining);
    assert!((0..4).all(|_| standby.choose_in(0, Ipv4Addr::LOCALHOST, T0) == Some(2)));
    let small = spec(2, Balance::RoundRobin).with_slots(3);
    let e = small.apply_table(&t).unwrap_err();
    assert!(e.contains("4 backend slots") && e.contains("max_backends"), "{e}");
    let mut bad = t.clone();
    bad[0].weight = 0;
    assert!(standby.apply_table(&bad).is_err());
}

#[test]
fn connect_histogram_buckets() {
    let h = ConnectHistogram::default();
    for us in [100, 500, 501, 7_000_000] {
        h.observe(us);
    }
    let n: Vec<u64> = h.buckets.iter().map(|b| b.load(Relaxed)).collect();
    assert_eq!((n[0], n[1], n[CONNECT_BUCKETS_US.len()]), (2, 1, 1));
    assert_eq!(h.sum_us.load(Relaxed), 7_001_101);
}

#[test]
fn the_pool_table_carries_check_health_and_a_refilled_slot_starts_unknown() {
    let a = spec(2, Balance::RoundRobin).with_slots(3).with_check(ActiveCheck::new(CheckKind::Tcp));
    let b = spec(2, Balance::RoundRobin).with_slots(3);
    for t in 1..=3 {
        a.backends[1].check.begin(t);
        a.check_done(1, t, CheckResult::Timeout, 1_000_000, 0);
    }
    assert_eq!(a.backends[1].check.state(), CheckState::Down);
    assert!((0..4).all(|_| a.choose(Ipv4Addr::LOCALHOST, T0) == Some(0)), "down by its checks: never chosen");
    let (_, t) = a.table();
    assert_eq!(t.iter().map(|s| s.health).collect::<Vec<_>>(), [0, 2, 0]);
    b.apply_table(&t).unwrap();
    assert_eq!(b.backends[1].check.state(), CheckState::Down, "the standby keeps the state");
    let mut bad = t.clone();
    bad[0].health = 3;
    assert!(b.apply_table(&bad).is_err(), "an unknown state is refused");
    // Removed and refilled with another backend: no history.
    a.drain_backend(a.backends[1].addr()).unwrap();
    a.remove_backend(a.backends[1].addr(), false).unwrap();
    assert!(a.reap(1));
    let other = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 99), 80);
    assert_eq!(a.add_backend(other, 1, DEFAULT_POOL), Ok(1));
    assert_eq!((a.backends[1].check.state(), a.backends[1].check.timeouts.load(Relaxed)), (CheckState::Unknown, 0));
}

/// `commit = "peer"`: a half acknowledges its peer's bytes as far as the other half's peer
/// acknowledged them; alone (nothing more is relayed), all of them.
#[test]
fn peer_commit_acknowledges_what_the_other_side_has() {
    let sp = spec(1, Balance::RoundRobin).with_commit(Commit::Peer);
    let mut c = ProxyHalf::new(Side::Client, 8);
    let mut b = ProxyHalf::new(Side::Backend(0), 8);
    {
        let mut cc = ProxyConn { me: &mut c, partner: Some(&mut b), spec: &sp };
        assert_eq!(cc.on_recv(b"GET /"), 5);
        assert_eq!(cc.ack_limit(), Some(0), "nothing acknowledged before the backend has it");
    }
    {
        let mut bc = ProxyConn { me: &mut b, partner: Some(&mut c), spec: &sp };
        assert_eq!(bc.ack_limit(), Some(0));
        bc.on_acked(3);
    }
    let cc = ProxyConn { me: &mut c, partner: Some(&mut b), spec: &sp };
    assert_eq!(cc.ack_limit(), Some(3), "what the backend acknowledged");
    assert_eq!(ProxyConn { me: &mut c, partner: None, spec: &SP }.ack_limit(), None, "commit = standby: no limit");
    c.alone = true;
    assert_eq!(ProxyConn { me: &mut c, partner: None, spec: &sp }.ack_limit(), None, "alone: everything");
    let mut h = ProxyHalf::check(0, 1, T0);
    assert_eq!(ProxyConn { me: &mut h, partner: None, spec: &sp }.ack_limit(), None, "a health check is no relay");
}

/// After a takeover in `commit = "peer"` the other side's peer may acknowledge bytes the dead
/// engine relayed and this engine never held: the pipe skips them when they come again.
#[test]
fn peer_commit_skips_what_the_other_side_already_has() {
    let sp = std::sync::Arc::new(spec(1, Balance::RoundRobin).with_commit(Commit::Peer));
    let mut c = ProxyHalf::new(Side::Client, 8);
    c.rx.push(b"abc");
    c.binding = Binding::Reading;
    ProxyKind::resume_linked(&sp, &mut c, 2);
    assert_eq!((c.rx.received, c.rx.released, c.rx.held()), (2, 2, 0), "empty where the backend's acknowledgement stands");
    assert_eq!(c.binding, Binding::Bound, "linked: its backend was chosen");
    let mut b = ProxyHalf::new(Side::Backend(0), 8);
    {
        let mut bc = ProxyConn { me: &mut b, partner: Some(&mut c), spec: &sp };
        assert_eq!(bc.catch_up_end(), 2 + 8, "the backend may acknowledge up to a buffer beyond");
        bc.on_acked(5);
    }
    assert_eq!((c.rx.received, c.rx.released), (5, 5));
    let mut cc = ProxyConn { me: &mut c, partner: Some(&mut b), spec: &sp };
    // Bytes 2..5 are the client half's TCP's to count as received (the client may never
    // send them again), once; what the client sends after them is relayed.
    assert_eq!(cc.take_skipped(), 3);
    assert_eq!(cc.take_skipped(), 0);
    assert_eq!(cc.me.rx.received, 5);
    assert_eq!(cc.on_recv(b"fg"), 2);
    assert_eq!(cc.tx_end(), 0);
    assert_eq!(cc.me.rx.received, 7);
    let mut buf = [0u8; 4];
    assert_eq!(ProxyConn { me: &mut b, partner: Some(&mut c), spec: &sp }.read_at(5, &mut buf), 2);
    assert_eq!(&buf[..2], b"fg");
}
