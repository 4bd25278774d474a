//! A live reload through a real `Stack` (no DPDK): `Stack::reconfigure` with a configuration
//! that retires a listener, replaces it and adds others. New connections get the new
//! listeners, a retired one takes none (reset, counted), and the connections that were open
//! keep their service and carry on.

mod common;

use common::*;
use std::sync::Arc;

use flowtwin_engine::counters::{Drop, Event};
use flowtwin_engine::flow::FlowKey;
use flowtwin_engine::service::echo::EchoConfig;
use flowtwin_engine::stack::{Listener, ServiceSpec, Vip};
use flowtwin_engine::tcp::State;

fn listener_of(h: &Harness, peer: &Peer) -> u16 {
    let id = h.stack.flows().lookup(&FlowKey::v4(peer.ip, peer.port, VIP, peer.dport)).expect("a flow");
    h.stack.flows().get(id).unwrap().listener
}

/// Send `data` on `peer`'s connection; what the stack sent back, as payload.
fn exchange(h: &mut Harness, peer: &mut Peer, data: &[u8]) -> Vec<u8> {
    let (out, _) = h.feed(&peer.data(data));
    peer.absorb_all(&out).into_iter().flat_map(|s| s.payload).collect()
}

#[test]
fn a_reload_retires_replaces_and_adds_listeners_and_open_connections_carry_on() {
    let mut h = Harness::standard();
    let mut old = Peer::linux(41000, ECHO_PORT);
    h.connect(&mut old);
    assert_eq!(exchange(&mut h, &mut old, b"before"), b"before");
    assert_eq!(listener_of(&h, &old), 1);

    // The reload: echo :7 replaced (index 1 retired, index 2 new), echo :9 added, a VIP added.
    let mut cfg = (**h.stack.config()).clone();
    let new_vip = std::net::Ipv4Addr::new(198, 18, 0, 101);
    cfg.vips.push(Vip { addr: new_vip, mac: vip_mac(), group: cfg.vips[0].group });
    cfg.listeners.push(Listener { vip: VIP, port: ECHO_PORT, spec: ServiceSpec::Echo(EchoConfig { buf_size: 4096 }) });
    cfg.listeners.push(Listener { vip: VIP, port: 9, spec: ServiceSpec::Echo(EchoConfig::default()) });
    cfg.retired = vec![false, true, false, false];
    assert!(h.stack.reconfigure(Arc::new(cfg.clone())), "a VIP was added: the caller announces it");

    // The open connection keeps its (retired) listener and its service.
    assert_eq!(exchange(&mut h, &mut old, b"after"), b"after");
    assert_eq!(listener_of(&h, &old), 1);
    // New connections to :7 get the new listener; :9 is served.
    let mut new7 = Peer::linux(41001, ECHO_PORT);
    h.connect(&mut new7);
    assert_eq!(listener_of(&h, &new7), 2);
    assert_eq!(exchange(&mut h, &mut new7, b"seven"), b"seven");
    let mut new9 = Peer::linux(41002, 9);
    h.connect(&mut new9);
    assert_eq!(listener_of(&h, &new9), 3);
    assert_eq!(exchange(&mut h, &mut new9, b"nine"), b"nine");

    // Another reload retires :9 without a successor: a new SYN is reset, counted, while the
    // connection already on it carries on.
    cfg.retired[3] = true;
    assert!(!h.stack.reconfigure(Arc::new(cfg)), "no VIP added");
    let mut late = Peer::linux(41003, 9);
    let (out, d) = h.feed(&late.syn());
    assert_eq!(d.drop(Drop::NoService), 1);
    assert!(out.len() == 1 && parse_seg(&out[0]).flags().rst(), "refused with a RST");
    assert_eq!(exchange(&mut h, &mut new9, b"still"), b"still");
    assert_eq!(h.state_of(&new9), Some(State::Established));

    // The added VIP is announced with the others.
    let mut sink = VecSink::default();
    h.stack.announce(&mut sink);
    assert_eq!(sink.frames.len(), 2, "a gratuitous ARP per VIP");
    assert_eq!(h.stack.counters().get(Event::FlowsOpened), 3);
}
