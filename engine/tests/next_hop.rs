//! Next-hop resolution through the real `Stack` (the `neighbor` table wired into its ARP
//! handling and timers): the request a first miss sends, what the reply teaches, retransmits
//! from `Stack::poll`, the failure after `max_requests`, and passive learning from ARP heard.
//! Frames are parsed back and checked field by field.

mod common;

use common::*;
use std::net::Ipv4Addr;

use flowtwin_engine::counters::Event;
use flowtwin_engine::neighbor::Resolve;
use flowtwin_engine::time::Duration;
use flowtwin_engine::wire::arp::{ArpOp, ArpRepr};
use flowtwin_engine::wire::ethernet::{ethertype, EthernetFrame, MacAddr};

const BACKEND: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 9);
const BACKEND_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 2, 9]);

fn resolve(h: &mut Harness) -> (Resolve, Vec<Vec<u8>>) {
    let mut sink = VecSink::default();
    let r = h.stack.resolve(h.now, VIP, BACKEND, &mut sink);
    (r, sink.frames)
}

/// The frame is an ARP request from our VIP for `BACKEND`, to `dst`.
fn assert_request(f: &[u8], dst: MacAddr) {
    let eth = EthernetFrame::new_checked(f).unwrap();
    assert_eq!((eth.dst(), eth.src(), eth.ethertype()), (dst, vip_mac(), ethertype::ARP));
    let a = ArpRepr::parse(eth.payload()).unwrap();
    assert_eq!(a.op, ArpOp::Request);
    assert_eq!((a.sender_mac, a.sender_ip, a.target_ip), (vip_mac(), VIP, BACKEND));
}

fn backend_reply(dst: MacAddr) -> Vec<u8> {
    let rep = ArpRepr::request(vip_mac(), VIP, BACKEND).reply(BACKEND_MAC);
    let mut b = vec![0u8; 60];
    rep.emit_frame(&mut b).unwrap();
    b[0..6].copy_from_slice(&dst.0);
    b
}

#[test]
fn a_miss_asks_once_and_the_reply_resolves() {
    let mut h = Harness::standard();
    assert_eq!(h.stack.arp_lookup(BACKEND), None);
    let (r, out) = resolve(&mut h);
    assert_eq!(r, Resolve::SendRequest);
    assert_eq!(out.len(), 1);
    assert_request(&out[0], MacAddr::BROADCAST);
    assert_eq!(h.stack.counters().events[Event::ArpRequestsSent as usize], 1);
    // A second frame for the same next hop waits; no second request.
    let (r, out) = resolve(&mut h);
    assert_eq!((r, out.len()), (Resolve::Pending, 0));
    assert!(h.stack.next_timer().is_some(), "the retransmit is a stack timer");
    // The unicast reply: learned, resolved.
    h.advance(Duration::from_millis(3));
    let (out, d) = h.feed(&backend_reply(vip_mac()));
    assert!(out.is_empty(), "a reply is not answered");
    assert_eq!((d.event(Event::ArpLearned), d.event(Event::NeighborsResolved)), (1, 1));
    assert_eq!(h.stack.arp_lookup(BACKEND), Some(BACKEND_MAC));
    let (r, out) = resolve(&mut h);
    assert_eq!((r, out.len()), (Resolve::Known(BACKEND_MAC), 0));
}

#[test]
fn an_unanswered_request_is_retransmitted_then_fails() {
    let mut h = Harness::standard();
    let (r, _) = resolve(&mut h);
    assert_eq!(r, Resolve::SendRequest);
    let mut requests = 1;
    let mut failed_at = None;
    for ms in (100..=20_000).step_by(100) {
        let (out, d) = h.poll_at(T0 + Duration::from_millis(ms));
        for f in &out {
            assert_request(f, MacAddr::BROADCAST);
        }
        requests += out.len();
        if d.event(Event::NeighborFailures) > 0 {
            failed_at = Some(ms);
            break;
        }
    }
    let failed_at = failed_at.expect("resolution fails");
    assert_eq!(requests, 3, "max_requests, then give up");
    assert!((3_000..=8_000).contains(&failed_at), "failed after {failed_at} ms");
    // Frames to it are dropped for a while, not queued behind a request storm.
    let (r, out) = resolve(&mut h);
    assert_eq!((r, out.len()), (Resolve::Failed, 0));
    assert!(r.is_drop());
}

#[test]
fn a_next_hop_heard_from_is_usable_without_asking() {
    let mut h = Harness::standard();
    // The backend asks for our VIP (it is about to talk to us): we answer and learn it.
    let mut req = vec![0u8; 60];
    ArpRepr::request(BACKEND_MAC, BACKEND, VIP).emit_frame(&mut req).unwrap();
    let (out, d) = h.feed(&req);
    assert_eq!(out.len(), 1, "answered");
    assert_eq!(d.event(Event::ArpLearned), 1);
    let (r, out) = resolve(&mut h);
    assert_eq!((r, out.len()), (Resolve::Known(BACKEND_MAC), 0));
    // The same again teaches nothing new.
    let (_, d) = h.feed(&req);
    assert_eq!(d.event(Event::ArpLearned), 0);
}
