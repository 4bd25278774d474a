use super::*;
use crate::wire::ethernet::EthernetFrame;

fn at(ms: u64) -> Instant {
    Instant::from_millis(ms)
}
fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 1, n)
}
fn mac(n: u8) -> MacAddr {
    MacAddr([0x02, 0, 0, 0, 0, n])
}
fn table() -> NeighborTable {
    NeighborTable::new(NeighborConfig::default())
}
/// Every piece of work due at `now`.
fn drain(t: &mut NeighborTable, now: Instant) -> Vec<Due> {
    std::iter::from_fn(|| t.poll(now)).collect()
}
/// A table in which `ip(1)` was resolved by a reply at time 0 (REACHABLE, mac(1)).
fn resolved() -> NeighborTable {
    let mut t = table();
    assert_eq!(t.lookup(at(0), ip(1)), Resolve::SendRequest);
    assert_eq!(t.learn(at(0), ip(1), mac(1), Evidence::Reply), Learned::Resolved { mac: mac(1), waiting: 1 });
    t
}

#[test]
fn miss_request_reply_hit() {
    let mut t = table();
    assert_eq!(t.lookup(at(0), ip(1)), Resolve::SendRequest);
    assert_eq!(t.get(ip(1)), Some((State::Incomplete, MacAddr::ZERO)));
    assert_eq!(t.lookup(at(1), ip(1)), Resolve::Pending);
    assert_eq!(t.lookup(at(2), ip(1)), Resolve::Pending);
    assert_eq!(t.learn(at(3), ip(1), mac(1), Evidence::Reply), Learned::Resolved { mac: mac(1), waiting: 3 });
    assert_eq!(t.lookup(at(4), ip(1)), Resolve::Known(mac(1)));
    assert_eq!(t.get(ip(1)), Some((State::Reachable, mac(1))));
    let c = t.counters();
    assert_eq!((c.requests_sent, c.replies_learned, c.hits, c.misses), (1, 1, 1, 3));
    // The reply ended the retransmissions: nothing is due before REACHABLE expires.
    assert!(drain(&mut t, at(29_999)).is_empty());
    assert_eq!(t.counters().requests_sent, 1);
}

#[test]
fn queue_limit_refuses_the_overflow() {
    let mut t = NeighborTable::new(NeighborConfig { queue_limit: 4, ..Default::default() });
    assert_eq!(t.lookup(at(0), ip(1)), Resolve::SendRequest);
    for _ in 0..3 {
        assert_eq!(t.lookup(at(0), ip(1)), Resolve::Pending);
    }
    assert_eq!(t.lookup(at(0), ip(1)), Resolve::QueueFull);
    assert!(Resolve::QueueFull.is_drop() && !Resolve::Pending.is_drop());
    assert_eq!(t.counters().queue_overflow_drops, 1);
    // Only the held ones are reported, and the count starts again after resolution.
    assert_eq!(t.learn(at(1), ip(1), mac(1), Evidence::Reply), Learned::Resolved { mac: mac(1), waiting: 4 });
    // Zero is raised to one: the packet that starts resolution is always held.
    assert_eq!(NeighborTable::new(NeighborConfig { queue_limit: 0, ..Default::default() }).config().queue_limit, 1);
}

#[test]
fn retransmit_with_backoff_then_fail_and_hold_down() {
    let mut t = table(); // 1 s doubling to 4 s, 3 requests, 20 s hold-down
    assert_eq!(t.next_deadline(), None);
    assert_eq!(t.lookup(at(0), ip(1)), Resolve::SendRequest);
    assert_eq!(t.next_deadline(), Some(at(1000)));
    assert!(drain(&mut t, at(999)).is_empty());
    assert_eq!(drain(&mut t, at(1000)), [Due::Request { ip: ip(1), dst: MacAddr::BROADCAST }]);
    assert_eq!(t.next_deadline(), Some(at(3000)), "second wait is 2 s");
    assert!(drain(&mut t, at(2999)).is_empty());
    assert_eq!(drain(&mut t, at(3000)), [Due::Request { ip: ip(1), dst: MacAddr::BROADCAST }]);
    assert_eq!(t.lookup(at(3500), ip(1)), Resolve::Pending);
    assert_eq!(t.next_deadline(), Some(at(7000)), "third wait is 4 s (the cap)");
    assert!(drain(&mut t, at(6999)).is_empty());
    assert_eq!(drain(&mut t, at(7000)), [Due::Failed { ip: ip(1), waiting: 2 }]);
    assert_eq!(t.get(ip(1)).map(|s| s.0), Some(State::Failed));
    assert_eq!((t.counters().requests_sent, t.counters().resolution_failures), (3, 1));
    // During the hold-down callers drop, and no request goes out.
    for ms in [7000, 15_000, 26_999] {
        assert_eq!(t.lookup(at(ms), ip(1)), Resolve::Failed);
    }
    assert_eq!(t.counters().failed_drops, 3);
    assert_eq!(t.counters().requests_sent, 3);
    assert_eq!(t.next_deadline(), Some(at(27_000)));
    // The hold-down ends: the entry is freed and a lookup starts over.
    assert!(drain(&mut t, at(27_000)).is_empty());
    assert!(t.is_empty());
    assert_eq!(t.counters().expired, 1);
    assert_eq!(t.next_deadline(), None);
    assert_eq!(t.lookup(at(27_001), ip(1)), Resolve::SendRequest);
    assert_eq!(t.counters().requests_sent, 4);
}

#[test]
fn lookup_after_hold_down_restarts_before_the_timer_runs() {
    let mut t = table();
    t.lookup(at(0), ip(1));
    drain(&mut t, at(1000));
    drain(&mut t, at(3000));
    assert_eq!(drain(&mut t, at(7000)).len(), 1);
    // No poll at 27 s: the lookup itself sees that the hold-down is over.
    assert_eq!(t.lookup(at(27_000), ip(1)), Resolve::SendRequest);
    assert_eq!(t.get(ip(1)).map(|s| s.0), Some(State::Incomplete));
    assert!(drain(&mut t, at(27_000)).is_empty());
    assert_eq!(t.next_deadline(), Some(at(28_000)));
}

#[test]
fn backoff_is_capped() {
    let cfg = NeighborConfig { max_requests: 5, retrans: Duration::from_secs(1), retrans_max: Duration::from_secs(2), ..Default::default() };
    let mut t = NeighborTable::new(cfg);
    t.lookup(at(0), ip(1));
    let mut sent = vec![];
    let mut failed = None;
    for ms in (0..20_000).step_by(100) {
        for d in drain(&mut t, at(ms)) {
            match d {
                Due::Request { .. } => sent.push(ms),
                Due::Failed { .. } => failed = Some(ms),
            }
        }
    }
    assert_eq!(sent, [1000, 3000, 5000, 7000]);
    assert_eq!(failed, Some(9000));
    assert_eq!(backoff(&cfg, 200), cfg.retrans_max, "large shifts saturate");
}

#[test]
fn reachable_goes_stale_then_delay_then_unicast_probe() {
    let mut t = resolved();
    // The hint may be early (the request's retransmission was due at 1 s); a poll tightens it.
    assert!(t.next_deadline() <= Some(at(30_000)));
    assert!(drain(&mut t, at(1000)).is_empty());
    assert_eq!(t.next_deadline(), Some(at(30_000)));
    assert!(drain(&mut t, at(30_000)).is_empty());
    assert_eq!(t.get(ip(1)), Some((State::Stale, mac(1))));
    // A STALE address is still used; the use starts the delay.
    assert_eq!(t.lookup(at(31_000), ip(1)), Resolve::Known(mac(1)));
    assert_eq!(t.get(ip(1)).map(|s| s.0), Some(State::Delay));
    assert_eq!(t.next_deadline(), Some(at(36_000)));
    assert!(drain(&mut t, at(35_999)).is_empty());
    assert_eq!(drain(&mut t, at(36_000)), [Due::Request { ip: ip(1), dst: mac(1) }]);
    assert_eq!(t.get(ip(1)).map(|s| s.0), Some(State::Probe));
    assert_eq!(t.lookup(at(36_100), ip(1)), Resolve::Known(mac(1)), "used while probing");
    assert_eq!(t.learn(at(36_200), ip(1), mac(1), Evidence::Reply), Learned::Updated);
    assert_eq!(t.get(ip(1)), Some((State::Reachable, mac(1))));
    assert!(drain(&mut t, at(66_199)).is_empty(), "no more probes");
    assert_eq!((t.counters().probes_sent, t.counters().requests_sent), (1, 1));
}

#[test]
fn reachable_expired_but_not_polled_is_treated_as_stale() {
    let mut t = resolved();
    assert_eq!(t.lookup(at(30_000), ip(1)), Resolve::Known(mac(1)));
    assert_eq!(t.get(ip(1)).map(|s| s.0), Some(State::Delay));
}

#[test]
fn unanswered_probes_fail_the_entry() {
    let mut t = resolved();
    drain(&mut t, at(30_000));
    t.lookup(at(30_000), ip(1));
    let mut got = vec![];
    for ms in (30_000..60_000).step_by(500) {
        got.extend(drain(&mut t, at(ms)).into_iter().map(|d| (ms, d)));
    }
    let probe = Due::Request { ip: ip(1), dst: mac(1) };
    assert_eq!(got, [(35_000, probe), (36_000, probe), (38_000, probe), (42_000, Due::Failed { ip: ip(1), waiting: 0 })]);
    assert_eq!(t.lookup(at(42_000), ip(1)), Resolve::Failed);
    assert_eq!((t.counters().probes_sent, t.counters().resolution_failures), (3, 1));
}

#[test]
fn upper_layer_confirmation_spares_the_probe() {
    let mut t = resolved();
    drain(&mut t, at(30_000));
    t.lookup(at(31_000), ip(1));
    assert!(t.confirm(at(32_000), ip(1)));
    assert_eq!(t.get(ip(1)).map(|s| s.0), Some(State::Reachable));
    assert!(drain(&mut t, at(36_000)).is_empty());
    assert_eq!(t.lookup(at(61_999), ip(1)), Resolve::Known(mac(1)));
    assert_eq!(t.get(ip(1)).map(|s| s.0), Some(State::Reachable));
    assert_eq!(t.counters().probes_sent, 0);
    // Nothing to confirm for unknown or unresolved addresses.
    assert!(!t.confirm(at(0), ip(2)));
    t.lookup(at(0), ip(2));
    assert!(!t.confirm(at(0), ip(2)));
    assert_eq!(t.counters().confirmations, 1);
}

#[test]
fn passively_learned_entries_are_usable() {
    let mut t = table();
    // A request heard from .1, an announcement from .2, a reply we did not ask for from .3:
    // usable at once, but unconfirmed (STALE), and no request goes out.
    for (n, ev) in [(1, Evidence::Heard), (2, Evidence::Announcement), (3, Evidence::Reply)] {
        assert_eq!(t.learn(at(0), ip(n), mac(n), ev), Learned::Created);
        assert_eq!(t.get(ip(n)), Some((State::Stale, mac(n))));
        assert_eq!(t.lookup(at(1), ip(n)), Resolve::Known(mac(n)));
    }
    assert_eq!((t.counters().requests_sent, t.counters().passive_learned), (0, 3));

    // Linux's arp_accept=0: only existing entries are updated.
    let mut t = NeighborTable::new(NeighborConfig { learn_unsolicited: false, ..Default::default() });
    assert_eq!(t.learn(at(0), ip(1), mac(1), Evidence::Announcement), Learned::Ignored);
    assert_eq!(t.lookup(at(0), ip(1)), Resolve::SendRequest);
    // A request from the host we are resolving answers the question as well as a reply.
    assert_eq!(t.learn(at(1), ip(1), mac(1), Evidence::Heard), Learned::Resolved { mac: mac(1), waiting: 1 });
    assert_eq!(t.get(ip(1)), Some((State::Stale, mac(1))));
    assert!(drain(&mut t, at(10_000)).is_empty(), "no retransmission after resolution");
}

#[test]
fn unused_stale_entries_are_collected() {
    let mut t = table();
    t.learn(at(0), ip(1), mac(1), Evidence::Heard);
    assert_eq!(t.next_deadline(), Some(at(60_000)));
    assert!(drain(&mut t, at(59_999)).is_empty());
    assert_eq!(t.len(), 1);
    assert!(drain(&mut t, at(60_000)).is_empty());
    assert!(t.is_empty());
    assert_eq!(t.counters().expired, 1);
    assert_eq!(t.next_deadline(), None);
}

#[test]
fn first_reply_wins_inside_locktime_announcements_override() {
    let mut t = resolved();
    // A second proxy-ARP agent answering late is ignored.
    assert_eq!(t.learn(at(500), ip(1), mac(2), Evidence::Reply), Learned::Ignored);
    assert_eq!(t.get(ip(1)), Some((State::Reachable, mac(1))));
    assert_eq!(t.counters().locktime_ignored, 1);
    // The owner announcing a move (a takeover) is believed at once.
    assert_eq!(t.learn(at(600), ip(1), mac(3), Evidence::Announcement), Learned::Updated);
    assert_eq!(t.get(ip(1)), Some((State::Stale, mac(3))));
    // After locktime, ordinary evidence may change the address again.
    assert_eq!(t.learn(at(1500), ip(1), mac(4), Evidence::Heard), Learned::Ignored);
    assert_eq!(t.learn(at(1600), ip(1), mac(4), Evidence::Heard), Learned::Updated);
    assert_eq!(t.get(ip(1)), Some((State::Stale, mac(4))));
    assert_eq!(t.counters().mac_changes, 2);
}

#[test]
fn weaker_evidence_for_the_same_address_changes_nothing() {
    let mut t = resolved();
    assert_eq!(t.learn(at(5000), ip(1), mac(1), Evidence::Heard), Learned::Unchanged);
    assert_eq!(t.learn(at(5000), ip(1), mac(1), Evidence::Announcement), Learned::Unchanged);
    assert_eq!(t.get(ip(1)), Some((State::Reachable, mac(1))));
    // A reply renews REACHABLE.
    assert_eq!(t.learn(at(10_000), ip(1), mac(1), Evidence::Reply), Learned::Updated);
    assert_eq!(t.lookup(at(39_999), ip(1)), Resolve::Known(mac(1)));
    assert_eq!(t.get(ip(1)).map(|s| s.0), Some(State::Reachable));
}

#[test]
fn a_failed_host_that_speaks_again_is_usable_at_once() {
    let mut t = table();
    t.lookup(at(0), ip(1));
    for ms in [1000, 3000, 7000] {
        drain(&mut t, at(ms));
    }
    assert_eq!(t.lookup(at(8000), ip(1)), Resolve::Failed);
    // It reboots and announces itself.
    assert_eq!(t.learn(at(9000), ip(1), mac(1), Evidence::Announcement), Learned::Updated);
    assert_eq!(t.lookup(at(9001), ip(1)), Resolve::Known(mac(1)));
    assert_eq!(t.counters().mac_changes, 0, "a FAILED entry had no address to change");
}

#[test]
fn bad_senders_are_never_learned() {
    let mut t = table();
    for (i, m) in [
        (Ipv4Addr::UNSPECIFIED, mac(1)),
        (Ipv4Addr::BROADCAST, mac(1)),
        (Ipv4Addr::new(224, 0, 0, 1), mac(1)),
        (ip(1), MacAddr([0x01, 0, 0x5e, 0, 0, 1])),
        (ip(1), MacAddr::BROADCAST),
        (ip(1), MacAddr::ZERO),
    ] {
        assert_eq!(t.learn(at(0), i, m, Evidence::Reply), Learned::Ignored, "{i} {m}");
    }
    assert!(t.is_empty());
}

#[test]
fn broadcast_multicast_and_unspecified_need_no_entry() {
    let mut t = table();
    assert_eq!(t.lookup(at(0), Ipv4Addr::BROADCAST), Resolve::Known(MacAddr::BROADCAST));
    assert_eq!(t.lookup(at(0), Ipv4Addr::new(239, 255, 0, 1)), Resolve::Known(MacAddr([0x01, 0, 0x5e, 0x7f, 0, 1])));
    assert_eq!(multicast_mac(Ipv4Addr::new(224, 0, 0, 251)), MacAddr([0x01, 0, 0x5e, 0, 0, 0xfb]));
    assert_eq!(multicast_mac(Ipv4Addr::new(225, 128, 0, 251)), MacAddr([0x01, 0, 0x5e, 0, 0, 0xfb]), "RFC 1112: 5 bits are lost");
    assert_eq!(t.lookup(at(0), Ipv4Addr::UNSPECIFIED), Resolve::Failed);
    assert!(t.is_empty());
    let c = t.counters();
    assert_eq!((c.hits, c.misses, c.failed_drops, c.requests_sent), (2, 1, 1, 0));
}

#[test]
fn full_table_evicts_failed_then_least_recently_used_stale_then_drops() {
    let mut t = NeighborTable::new(NeighborConfig { capacity: 4, ..Default::default() });
    assert_eq!(t.learn(at(0), ip(1), mac(1), Evidence::Heard), Learned::Created);
    assert_eq!(t.learn(at(10), ip(2), mac(2), Evidence::Heard), Learned::Created);
    assert_eq!(t.lookup(at(0), ip(3)), Resolve::SendRequest);
    assert_eq!(t.lookup(at(0), ip(4)), Resolve::SendRequest);
    assert_eq!(t.len(), 4);
    assert_eq!(t.learn(at(20), ip(9), mac(9), Evidence::Announcement), Learned::Ignored, "passive learning never evicts");
    // Full: the least recently used STALE entry (.1) makes room.
    assert_eq!(t.lookup(at(20), ip(5)), Resolve::SendRequest);
    assert_eq!(t.get(ip(1)), None);
    assert!(t.get(ip(2)).is_some());
    // .3 and .4 fail at 7 s (.5, started at 20 ms, is still trying).
    for ms in [1000, 3000, 7000] {
        drain(&mut t, at(ms));
    }
    assert_eq!(t.get(ip(3)).map(|s| s.0), Some(State::Failed));
    assert_eq!(t.get(ip(5)).map(|s| s.0), Some(State::Incomplete));
    // A FAILED entry goes before the (older) STALE one: it holds no address worth keeping.
    assert_eq!(t.lookup(at(7000), ip(6)), Resolve::SendRequest);
    assert!(t.get(ip(2)).is_some());
    assert_eq!([ip(3), ip(4)].iter().filter(|a| t.get(**a).is_none()).count(), 1);
    assert_eq!(t.lookup(at(7000), ip(7)), Resolve::SendRequest);
    assert!(t.get(ip(3)).is_none() && t.get(ip(4)).is_none());
    assert_eq!(t.lookup(at(7000), ip(8)), Resolve::SendRequest);
    assert_eq!(t.get(ip(2)), None);
    assert_eq!(t.counters().evictions, 4);
    // Only entries with packets waiting remain: nothing may go, the packet is dropped.
    assert_eq!(t.lookup(at(7000), ip(10)), Resolve::TableFull);
    assert_eq!(t.lookup(at(7000), ip(10)), Resolve::TableFull);
    assert_eq!((t.len(), t.counters().table_full_drops), (4, 2));
    // Entries already in the table are still served.
    assert_eq!(t.lookup(at(7000), ip(8)), Resolve::Pending);
}

#[test]
fn capacity_is_bounded_and_clamped() {
    let t = NeighborTable::new(NeighborConfig { capacity: 0, ..Default::default() });
    assert_eq!(t.capacity(), 1);
    let t = NeighborTable::new(NeighborConfig { capacity: 1000, ..Default::default() });
    assert_eq!((t.capacity(), t.slots.len()), (1000, 2048));
}

/// Structural invariants: `len` counts the occupied slots, every entry is found from its home
/// slot (no hole inside a probe chain), no address is stored twice.
fn check_index(t: &NeighborTable) {
    let mut seen = std::collections::HashSet::new();
    let mut n = 0;
    for (j, e) in t.slots.iter().enumerate() {
        if let Some(e) = e {
            n += 1;
            assert!(seen.insert(e.ip), "{} twice", e.ip);
            assert_eq!(t.find(e.ip), Some(j), "{} not found from its home", e.ip);
        }
    }
    assert_eq!(n, t.len());
    assert!(t.len() <= t.capacity());
}

#[test]
fn index_survives_random_insertion_and_removal() {
    // A small table and a pool of addresses five times its size: long probe chains, wrap
    // around the end of the slot array, and backward shifts across it.
    let mut t = NeighborTable::new(NeighborConfig { capacity: 8, ..Default::default() });
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut now = 0u64;
    let mut present = std::collections::HashSet::new();
    for _ in 0..20_000 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let a = ip((x >> 33) as u8 % 40 + 1);
        match (x >> 50) % 4 {
            0 => {
                t.lookup(at(now), a);
            }
            1 => {
                t.learn(at(now), a, mac(1), Evidence::Heard);
            }
            2 => {
                t.learn(at(now), a, mac(2), Evidence::Reply);
            }
            _ => {
                now += (x >> 40) % 30_000;
                drain(&mut t, at(now));
            }
        }
        check_index(&t);
        present.insert(a);
        // The deadline hint is never late.
        if let Some(d) = t.next_deadline() {
            let true_min = t.slots.iter().flatten().map(|e| e.deadline).min();
            assert!(true_min.is_some_and(|m| d <= m));
        } else {
            assert!(t.is_empty() || t.slots.iter().flatten().all(|e| e.deadline == NEVER));
        }
    }
    assert!(t.counters().evictions > 0 && t.counters().expired > 0 && t.counters().table_full_drops > 0);
    // Everything expires in the end.
    for k in 1..=20 {
        drain(&mut t, at(now + k * 10_000));
    }
    assert!(t.is_empty());
    assert_eq!(t.next_deadline(), None);
    check_index(&t);
}

#[test]
fn evidence_of_arp_packets() {
    let req = ArpRepr::request(mac(1), ip(1), ip(9));
    assert_eq!(Evidence::of(&req, MacAddr::BROADCAST), Evidence::Heard);
    assert_eq!(Evidence::of(&req.reply(mac(9)), mac(1)), Evidence::Reply);
    assert_eq!(Evidence::of(&req.reply(mac(9)), MacAddr::BROADCAST), Evidence::Heard, "a broadcast reply proves nothing");
    assert_eq!(Evidence::of(&ArpRepr::gratuitous(mac(1), ip(1)), MacAddr::BROADCAST), Evidence::Announcement);
    let mut garp_reply = ArpRepr::gratuitous(mac(1), ip(1));
    garp_reply.op = ArpOp::Reply;
    assert_eq!(Evidence::of(&garp_reply, MacAddr::BROADCAST), Evidence::Announcement);
}

#[test]
fn request_frames() {
    let (us, our_ip, target) = (MacAddr([0x02, 0, 0, 0, 0, 0x01]), Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 1));
    let mut b = [0u8; 64];
    assert_eq!(emit_request(&mut b, us, our_ip, target, MacAddr::BROADCAST), Ok(FRAME_LEN));
    #[rustfmt::skip]
    let golden: [u8; FRAME_LEN] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x06, // eth
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // hrd pro hln pln op=request
        0x02, 0, 0, 0, 0, 0x01, 10, 0, 0, 2, // sha spa
        0, 0, 0, 0, 0, 0, 10, 0, 0, 1, // tha (unknown) tpa
    ];
    assert_eq!(b[..FRAME_LEN], golden);
    // The unicast probe differs only in the Ethernet destination.
    let cached = MacAddr([0x52, 0x54, 0, 0xab, 0xcd, 0xef]);
    let mut u = [0u8; FRAME_LEN];
    assert_eq!(emit_request(&mut u, us, our_ip, target, cached), Ok(FRAME_LEN));
    assert_eq!(u[..6], cached.0);
    assert_eq!(u[6..], golden[6..]);
    let e = EthernetFrame::new_checked(&u[..]).unwrap();
    assert_eq!((e.dst(), e.src(), e.ethertype()), (cached, us, ethernet::ethertype::ARP));
    assert_eq!(ArpRepr::parse(e.payload()), Ok(ArpRepr::request(us, our_ip, target)));
    for dst in [MacAddr::BROADCAST, cached] {
        assert_eq!(emit_request(&mut u[..FRAME_LEN - 1], us, our_ip, target, dst), Err(WireError::BufferTooSmall));
    }
}
