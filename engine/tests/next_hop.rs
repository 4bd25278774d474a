//! Next-hop resolution through the real `Stack` (the `neighbor` table wired into its ARP
//! handling and timers): the request a first miss sends, what the reply teaches, retransmits
//! from `Stack::poll`, the failure after `max_requests`, and passive learning from ARP heard;
//! routes (`route`: a gateway for an off-link remote, no route refused); and the sharing of
//! what one worker hears with the others (`dataplane::NeighborMail`, `Stack::learn_neighbor`),
//! two workers' stacks side by side. Frames are parsed back and checked field by field.

mod common;

use common::*;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use flowtwin_engine::counters::Event;
use flowtwin_engine::dataplane::{NeighborMail, NEIGHBOR_MAILBOX};
use flowtwin_engine::distribute::worker_for_frame;
use flowtwin_engine::ephemeral::SoftwareSteering;
use flowtwin_engine::neighbor::{Evidence, Heard, Resolve};
use flowtwin_engine::route::{Prefix, Route, RouteTable};
use flowtwin_engine::stack::{ConnectError, Stack};
use flowtwin_engine::tcp::State;
use flowtwin_engine::time::Duration;
use flowtwin_engine::wire::arp::{ArpOp, ArpRepr};
use flowtwin_engine::wire::ethernet::{ethertype, EthernetFrame, MacAddr};

const BACKEND: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 9);
const BACKEND_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 2, 9]);
/// The common config's echo listener: the service the opened flows run.
const ECHO: u16 = 1;

fn resolve(h: &mut Harness) -> (Resolve, Vec<Vec<u8>>) {
    let mut sink = VecSink::default();
    let r = h.stack.resolve(h.now, VIP, BACKEND, &mut sink);
    (r, sink.frames)
}

/// The frame is an ARP request from our VIP for `BACKEND`, to `dst`.
fn assert_request(f: &[u8], dst: MacAddr) {
    assert_request_for(f, dst, BACKEND);
}

/// The frame is an ARP request from our VIP for `target`, to `dst`.
fn assert_request_for(f: &[u8], dst: MacAddr, target: Ipv4Addr) {
    let eth = EthernetFrame::new_checked(f).unwrap();
    assert_eq!((eth.dst(), eth.src(), eth.ethertype()), (dst, vip_mac(), ethertype::ARP));
    let a = ArpRepr::parse(eth.payload()).unwrap();
    assert_eq!(a.op, ArpOp::Request);
    assert_eq!((a.sender_mac, a.sender_ip, a.target_ip), (vip_mac(), VIP, target));
}

fn backend_reply(dst: MacAddr) -> Vec<u8> {
    reply_from(BACKEND, BACKEND_MAC, dst)
}

/// `ip`'s ARP reply (at `mac`) to our request, in a frame sent to `dst`.
fn reply_from(ip: Ipv4Addr, mac: MacAddr, dst: MacAddr) -> Vec<u8> {
    let rep = ArpRepr::request(vip_mac(), VIP, ip).reply(mac);
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

const GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const GATEWAY_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 1]);

/// The VIP in 198.18.0.0/24, and 10.0.0.0/8 behind `GATEWAY`.
fn routed() -> Harness {
    let mut cfg = config(16, tcp_cfg());
    let subnet = Prefix::containing(VIP, 24).unwrap();
    let to_ten = Route { prefix: "10.0.0.0/8".parse().unwrap(), via: Some(GATEWAY) };
    cfg.routes = RouteTable::new(&[(VIP, subnet)], &[to_ten]).unwrap();
    Harness::new(cfg)
}

/// `h` opens a connection from the VIP to `to` (echo); the result and what it sent.
fn open(h: &mut Harness, to: SocketAddrV4) -> (Result<flowtwin_engine::flow::FlowId, ConnectError>, Vec<Vec<u8>>) {
    let mut sink = VecSink::default();
    let r = h.stack.connect(h.now, VIP, to, ECHO, &mut sink);
    (r, sink.frames)
}

/// A SYN (no ACK) from the VIP to `to`, sent to the Ethernet address `dst`.
fn assert_syn(f: &[u8], dst: MacAddr, to: SocketAddrV4) -> Seg {
    let s = parse_seg(f);
    assert!(s.flags().syn() && !s.flags().ack(), "a SYN");
    assert_eq!((s.eth_src, s.eth_dst), (vip_mac(), dst), "MACs");
    assert_eq!((s.ip_src, s.ip_dst, s.hdr.dst_port), (VIP, *to.ip(), to.port()), "addresses");
    s
}

#[test]
fn an_off_link_remote_goes_through_its_gateway_an_on_link_one_directly() {
    let mut h = routed();
    let far = SocketAddrV4::new(Ipv4Addr::new(10, 1, 2, 3), 80);
    let (r, out) = open(&mut h, far);
    let id = r.expect("routed");
    assert_eq!(out.len(), 1, "the SYN waits for the gateway");
    assert_request_for(&out[0], MacAddr::BROADCAST, GATEWAY);
    // The gateway answers: the SYN leaves to its MAC, addressed to the remote.
    let (out, d) = h.feed(&reply_from(GATEWAY, GATEWAY_MAC, vip_mac()));
    assert_eq!(d.event(Event::NeighborsResolved), 1);
    assert_eq!(out.len(), 1);
    assert_syn(&out[0], GATEWAY_MAC, far);
    assert_eq!(h.stack.flows().get(id).unwrap().peer_mac, GATEWAY_MAC);
    // Another remote behind it: the gateway is known, no ARP.
    let other = SocketAddrV4::new(Ipv4Addr::new(10, 200, 0, 1), 7);
    let (r, out) = open(&mut h, other);
    assert!(r.is_ok());
    assert_eq!(out.len(), 1);
    assert_syn(&out[0], GATEWAY_MAC, other);
    // On-link (the VIP's subnet): resolved itself, not through the gateway.
    let near = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 55), 80);
    let (r, out) = open(&mut h, near);
    assert!(r.is_ok());
    assert_eq!(out.len(), 1);
    assert_request_for(&out[0], MacAddr::BROADCAST, *near.ip());
    assert_eq!(h.stack.counters().get(Event::ArpRequestsSent), 2);
}

#[test]
fn a_remote_no_route_reaches_is_refused_counted() {
    let mut h = routed();
    let nowhere = Ipv4Addr::new(8, 8, 8, 8);
    for rip in [nowhere, BACKEND] {
        let (r, out) = open(&mut h, SocketAddrV4::new(rip, 80));
        assert_eq!(r, Err(ConnectError::NoRoute(rip)));
        assert!(out.is_empty(), "nothing sent, no ARP");
    }
    let e = ConnectError::NoRoute(nowhere).to_string();
    assert!(e.contains("no route to 8.8.8.8"), "{e}");
    let k = h.stack.counters();
    assert_eq!((k.get(Event::ConnectNoRoute), k.get(Event::ActiveOpens), k.get(Event::ArpRequestsSent)), (2, 0, 0));
    assert!(h.stack.flows().is_empty());
}

#[test]
fn a_standby_resumes_an_opening_flow_through_the_gateway_of_its_route() {
    use flowtwin_engine::flow::FlowKey;
    use flowtwin_engine::replica::{FlowImage, Origin, ShadowFlow};
    use flowtwin_engine::seq::SeqNum;
    use flowtwin_engine::tcp::TcbSnapshot;
    let mut h = routed();
    let far = SocketAddrV4::new(Ipv4Addr::new(10, 1, 2, 3), 80);
    // The old active was still resolving the gateway: the replica has no next hop.
    let tcb = TcbSnapshot { state: State::SynSent, local_port: 40000, remote_port: 80, iss: SeqNum(1000), snd_una: SeqNum(1000), snd_nxt: SeqNum(1001), mss: 1460, ..Default::default() };
    let img = FlowImage { key: FlowKey::v4(*far.ip(), 80, VIP, 40000), tcb, peer_mac: MacAddr::ZERO, vip_mac: vip_mac(), listener: ECHO, listener_fp: 0, origin: Origin::Opened, link: None };
    let sh = ShadowFlow::new(h.stack.config(), img).unwrap();
    let mut sink = VecSink::default();
    assert_eq!(flowtwin_engine::iteration::resume(&mut h.stack, h.now, [sh], &mut sink), (1, 0));
    assert_eq!(sink.frames.len(), 1, "the gateway is asked for, the SYN waits");
    assert_request_for(&sink.frames[0], MacAddr::BROADCAST, GATEWAY);
    let (out, _) = h.feed(&reply_from(GATEWAY, GATEWAY_MAC, vip_mac()));
    assert_eq!(out.len(), 1);
    assert_eq!(assert_syn(&out[0], GATEWAY_MAC, far).hdr.seq, SeqNum(1000), "the same SYN");
}

/// Worker `k` of `mail.len()` (software distribution), sharing neighbours through `mail[k]`.
fn worker(k: usize, mail: &[NeighborMail]) -> Stack {
    let mut s = Stack::new(Arc::new(config(16, tcp_cfg())), T0);
    s.set_worker(k, SoftwareSteering::new(mail.len())).unwrap();
    mail[k].attach(&mut s);
    s
}

#[test]
fn the_arp_reply_worker_0_hears_lets_the_syn_waiting_on_worker_1_leave() {
    let mail = NeighborMail::mesh(2, NEIGHBOR_MAILBOX);
    let (mut w0, mut w1) = (worker(0, &mail), worker(1, &mail));
    let to = SocketAddrV4::new(BACKEND, 80);
    let mut sink = VecSink::default();
    let id = w1.connect(T0, VIP, to, ECHO, &mut sink).unwrap();
    assert_eq!(sink.frames.len(), 1, "worker 1 asks");
    assert_request(&sink.frames[0], MacAddr::BROADCAST);
    assert_eq!(w1.flows().get(id).unwrap().tcb.state(), State::SynSent);
    // The reply is not TCP: the distribution leaves it on worker 0.
    let reply = backend_reply(vip_mac());
    assert_eq!(worker_for_frame(&reply, 2), 0);
    let now = T0 + Duration::from_millis(2);
    let mut out = VecSink::default();
    w0.process(now, &reply, &mut out);
    assert!(out.frames.is_empty());
    assert_eq!(w0.arp_lookup(BACKEND), Some(BACKEND_MAC), "worker 0 learned it");
    assert_eq!(w1.arp_lookup(BACKEND), None, "worker 1 did not hear it");
    // Worker 0's pass posts it; worker 1's next pass takes it, and its SYN leaves.
    assert_eq!(mail[0].publish(&mut w0), 1);
    assert_eq!(w0.counters().get(Event::NeighborsShared), 1);
    let mut out = VecSink::default();
    assert_eq!(mail[1].deliver(&mut w1, now, &mut out), 1);
    assert_eq!(out.frames.len(), 1, "the held SYN, nothing else");
    let syn = assert_syn(&out.frames[0], BACKEND_MAC, to);
    let f = w1.flows().get(id).unwrap();
    assert_eq!((f.peer_mac, f.tcb.state(), f.tcb.local_port()), (BACKEND_MAC, State::SynSent, syn.hdr.src_port));
    assert!(f.tcb.next_deadline().is_some(), "its retransmission timer runs now");
    assert_eq!(worker_for_frame(&out.frames[0], 2), 1, "and the answer comes back to worker 1");
    let k = w1.counters();
    assert_eq!((k.get(Event::NeighborsFromWorkers), k.get(Event::NeighborsResolved), k.get(Event::OpensNextHopFailed)), (1, 1, 0));
    assert_eq!(w1.arp_lookup(BACKEND), Some(BACKEND_MAC));
    // Learned from a worker, not heard: not shared back.
    assert_eq!((mail[1].publish(&mut w1), mail[0].deliver(&mut w0, now, &mut VecSink::default())), (0, 0));
    // No more requests from worker 1: its entry is resolved.
    let mut out = VecSink::default();
    w1.poll(now + Duration::from_millis(1500), &mut out);
    assert!(out.frames.iter().all(|f| EthernetFrame::new_checked(&f[..]).unwrap().ethertype() == ethertype::IPV4), "no ARP retransmission");
}

#[test]
fn without_sharing_the_syn_on_worker_1_waits_until_its_next_hop_fails() {
    let (mut w0, mut w1) = (Harness::standard(), Harness::standard());
    w1.stack.set_worker(1, SoftwareSteering::new(2)).unwrap();
    let (r, _) = open(&mut w1, SocketAddrV4::new(BACKEND, 80));
    let id = r.unwrap();
    // Each of worker 1's requests is answered, to worker 0.
    for ms in (100..=10_000).step_by(100) {
        let (out, _) = w1.poll_at(T0 + Duration::from_millis(ms));
        for _ in out.iter().filter(|f| EthernetFrame::new_checked(&f[..]).unwrap().ethertype() == ethertype::ARP) {
            w0.feed(&backend_reply(vip_mac()));
        }
    }
    assert!(w1.stack.flows().get(id).is_none(), "ended");
    assert_eq!(w1.stack.counters().get(Event::OpensNextHopFailed), 1);
    assert_eq!(w0.stack.arp_lookup(BACKEND), Some(BACKEND_MAC));
}

/// An ARP frame (`op`) from `ip` at `mac`, to `dst`, asking for or answering `target`.
fn arp(op: ArpOp, ip: Ipv4Addr, mac: MacAddr, target: Ipv4Addr, dst: MacAddr) -> Vec<u8> {
    let mut a = ArpRepr::request(mac, ip, target);
    if op == ArpOp::Reply {
        a = ArpRepr::request(vip_mac(), VIP, ip).reply(mac);
    }
    let mut b = vec![0u8; 60];
    a.emit_frame(&mut b).unwrap();
    b[0..6].copy_from_slice(&dst.0);
    b
}

#[test]
fn replies_are_always_shared_other_arp_when_it_taught_something_and_a_full_mailbox_counts() {
    let mail = NeighborMail::mesh(3, 2);
    let (mut w0, mut w1, mut w2) = (worker(0, &mail), worker(1, &mail), worker(2, &mail));
    let host = |n: u8| (Ipv4Addr::new(198, 18, 0, n), MacAddr([0x02, 0, 0, 0, 0, n]));
    let hear = |w: &mut Stack, f: Vec<u8>| w.process(T0, &f, &mut VecSink::default());
    let (a, am) = host(10);
    hear(&mut w0, arp(ArpOp::Request, a, am, VIP, MacAddr::BROADCAST)); // created: shared
    hear(&mut w0, arp(ArpOp::Request, a, am, VIP, MacAddr::BROADCAST)); // nothing new: not shared
    hear(&mut w0, arp(ArpOp::Reply, a, am, VIP, MacAddr::BROADCAST)); // a reply, even one that taught nothing
    let heard: Vec<Heard> = std::iter::from_fn(|| w0.take_heard_neighbor()).collect();
    assert_eq!(heard, [Heard { ip: a, mac: am, evidence: Evidence::Heard }; 2]);
    let (b, bm) = host(11);
    hear(&mut w0, arp(ArpOp::Reply, b, bm, VIP, vip_mac()));
    hear(&mut w0, arp(ArpOp::Request, VIP, vip_mac(), VIP, MacAddr::BROADCAST)); // our own VIP: never a neighbour
    let (c, cm) = host(12);
    hear(&mut w0, arp(ArpOp::Request, c, cm, c, MacAddr::BROADCAST)); // an announcement
    let (d, dm) = host(13);
    hear(&mut w0, arp(ArpOp::Request, d, dm, VIP, MacAddr::BROADCAST));
    // Three mappings for two workers whose mailboxes hold two: the third dropped at each, counted.
    assert_eq!(mail[0].publish(&mut w0), 3);
    let k = w0.counters();
    assert_eq!((k.get(Event::NeighborsShared), k.get(Event::NeighborShareDropped)), (3, 2));
    for (w, m) in [(&mut w1, &mail[1]), (&mut w2, &mail[2])] {
        assert_eq!(m.deliver(w, T0, &mut VecSink::default()), 2);
        assert_eq!((w.arp_lookup(b), w.arp_lookup(c), w.arp_lookup(d)), (Some(bm), Some(cm), None));
        assert_eq!(w.counters().get(Event::NeighborsFromWorkers), 2);
    }
}
