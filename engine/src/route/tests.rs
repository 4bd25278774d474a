use super::*;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}
fn p(s: &str) -> Prefix {
    s.parse().unwrap()
}
fn via(prefix: &str, gw: &str) -> Route {
    Route { prefix: p(prefix), via: Some(ip(gw)) }
}
/// Our VIP 192.168.1.10 in 192.168.1.0/24.
fn ours() -> Vec<(Ipv4Addr, Prefix)> {
    vec![(ip("192.168.1.10"), p("192.168.1.0/24"))]
}

#[test]
fn prefixes_parse_strictly() {
    assert_eq!(p("10.0.0.0/8").addr(), ip("10.0.0.0"));
    assert_eq!(p("10.0.0.0/8").prefix_len(), 8);
    assert_eq!(p("0.0.0.0/0"), Prefix::ANY);
    assert!(Prefix::ANY.is_any() && !p("1.2.3.4/32").is_any());
    assert_eq!(p("1.2.3.4/32").to_string(), "1.2.3.4/32");
    assert_eq!("10.1.0.0/8".parse::<Prefix>(), Err(PrefixError::HostBits { network: p("10.0.0.0/8") }));
    assert_eq!("10.0.0.0/33".parse::<Prefix>(), Err(PrefixError::Len(33)));
    for bad in ["10.0.0.0", "10.0.0.0/", "10.0.0/8", "10.0.0.0/+8", "10.0.0.0/008", "10.0.0.0/8/8", "x/8", ""] {
        assert_eq!(bad.parse::<Prefix>(), Err(PrefixError::Syntax), "{bad:?}");
    }
    assert_eq!(Prefix::containing(ip("198.18.0.100"), 24), Ok(p("198.18.0.0/24")));
    assert_eq!(Prefix::containing(ip("198.18.0.100"), 0), Ok(Prefix::ANY));
    assert!(PrefixError::HostBits { network: p("10.0.0.0/8") }.to_string().contains("10.0.0.0/8"));
}

#[test]
fn contains_at_every_length() {
    let a = ip("172.16.5.4");
    for len in 0..=32u8 {
        let net = Prefix::containing(a, len).unwrap();
        assert!(net.contains(a), "/{len}");
        // Flipping the last bit of the prefix leaves it; flipping the first host bit does not.
        if len > 0 {
            assert!(!net.contains(Ipv4Addr::from(u32::from(a) ^ (1 << (32 - len)))), "/{len}");
        }
        if len < 32 {
            assert!(net.contains(Ipv4Addr::from(u32::from(a) ^ (1 << (31 - len)))), "/{len}");
        }
    }
}

#[test]
fn longest_prefix_wins_and_the_default_route_catches_the_rest() {
    let routes = [via("0.0.0.0/0", "192.168.1.1"), via("10.0.0.0/8", "192.168.1.2"), via("10.1.0.0/16", "192.168.1.3")];
    let t = RouteTable::new(&ours(), &routes).unwrap();
    assert_eq!(t.next_hop(ip("10.1.2.3")), Some(ip("192.168.1.3")));
    assert_eq!(t.next_hop(ip("10.2.0.1")), Some(ip("192.168.1.2")));
    assert_eq!(t.next_hop(ip("10.0.0.0")), Some(ip("192.168.1.2")));
    assert_eq!(t.next_hop(ip("11.0.0.1")), Some(ip("192.168.1.1")));
    assert_eq!(t.next_hop(ip("8.8.8.8")), Some(ip("192.168.1.1")));
    // On-link: the VIP's own subnet is reached directly, even under the default route.
    assert_eq!(t.next_hop(ip("192.168.1.77")), Some(ip("192.168.1.77")));
    assert!(t.is_on_link(ip("192.168.1.77")) && !t.is_on_link(ip("10.1.2.3")));
    assert_eq!(t.route(ip("192.168.1.77")), Some(Route { prefix: p("192.168.1.0/24"), via: None }));
    // The order given does not matter.
    let mut rev = routes;
    rev.reverse();
    let t2 = RouteTable::new(&ours(), &rev).unwrap();
    for d in ["10.1.2.3", "10.2.0.1", "8.8.8.8", "192.168.1.77"] {
        assert_eq!(t.next_hop(ip(d)), t2.next_hop(ip(d)), "{d}");
    }
    let lens: Vec<u8> = t.routes().iter().map(|r| r.prefix.prefix_len()).collect();
    assert_eq!(lens, [24, 16, 8, 0], "longest first");
}

#[test]
fn without_a_default_route_a_remote_off_link_has_none() {
    let t = RouteTable::new(&ours(), &[via("10.0.0.0/8", "192.168.1.1")]).unwrap();
    assert_eq!(t.next_hop(ip("11.0.0.1")), None);
    assert_eq!(t.route(ip("11.0.0.1")), None);
    assert!(!t.is_on_link(ip("11.0.0.1")));
    // Only the subnet: nothing else.
    let t = RouteTable::new(&ours(), &[]).unwrap();
    assert_eq!(t.next_hop(ip("192.168.2.1")), None);
    assert_eq!(t.next_hop(ip("192.168.1.1")), Some(ip("192.168.1.1")));
    // A /32 VIP has no subnet: every remote needs a route.
    let t = RouteTable::new(&[(ip("192.168.1.10"), p("192.168.1.10/32"))], &[]).unwrap();
    assert_eq!(t.next_hop(ip("192.168.1.1")), None);
}

#[test]
fn all_on_link_reaches_everything_directly() {
    let t = RouteTable::all_on_link();
    for d in ["1.2.3.4", "198.18.2.9", "255.255.255.254"] {
        assert_eq!(t.next_hop(ip(d)), Some(ip(d)));
    }
}

#[test]
fn a_route_without_a_gateway_is_on_link_and_may_hold_gateways() {
    // A second subnet on the same segment, and a gateway in it.
    let routes = [Route { prefix: p("10.9.0.0/16"), via: None }, via("0.0.0.0/0", "10.9.0.1")];
    let t = RouteTable::new(&ours(), &routes).unwrap();
    assert_eq!(t.next_hop(ip("10.9.3.3")), Some(ip("10.9.3.3")));
    assert_eq!(t.next_hop(ip("8.8.8.8")), Some(ip("10.9.0.1")));
    // Several VIPs of one subnet: one on-link route.
    let two = [(ip("192.168.1.10"), p("192.168.1.0/24")), (ip("192.168.1.11"), p("192.168.1.0/24"))];
    assert_eq!(RouteTable::new(&two, &[]).unwrap().routes().len(), 1);
}

#[test]
fn bad_routes_are_named_by_index() {
    let err = |routes: &[Route]| RouteTable::new(&ours(), routes).unwrap_err();
    let e = err(&[via("10.0.0.0/8", "192.168.1.1"), via("0.0.0.0/0", "192.168.1.1"), via("10.0.0.0/8", "192.168.1.2")]);
    assert_eq!(e, RouteError { index: 2, kind: RouteErrorKind::Duplicate { first: Some(0) } });
    assert!(e.to_string().contains("route 0"), "{e}");
    let e = err(&[via("192.168.1.0/24", "192.168.1.1")]);
    assert_eq!(e.kind, RouteErrorKind::Duplicate { first: None });
    assert!(e.to_string().contains("subnet of a VIP"), "{e}");
    let e = err(&[via("10.0.0.0/8", "192.168.1.1"), via("0.0.0.0/0", "172.16.0.1")]);
    assert_eq!(e, RouteError { index: 1, kind: RouteErrorKind::ViaNotOnLink(ip("172.16.0.1")) });
    assert!(e.to_string().contains("not on-link"), "{e}");
    // A gateway reached only through another route is not on-link either (no recursion).
    let e = err(&[via("10.0.0.0/8", "192.168.1.1"), via("0.0.0.0/0", "10.0.0.1")]);
    assert_eq!(e.kind, RouteErrorKind::ViaNotOnLink(ip("10.0.0.1")));
    for bad in ["0.0.0.0", "255.255.255.255", "224.0.0.1", "127.0.0.1"] {
        assert_eq!(err(&[via("10.0.0.0/8", bad)]).kind, RouteErrorKind::ViaNotUnicast(ip(bad)), "{bad}");
    }
    assert_eq!(err(&[via("10.0.0.0/8", "192.168.1.10")]).kind, RouteErrorKind::ViaOurs(ip("192.168.1.10")));
    let many = vec![via("0.0.0.0/0", "192.168.1.1"); MAX_ROUTES + 1];
    assert_eq!(err(&many).kind, RouteErrorKind::TooMany);
}
