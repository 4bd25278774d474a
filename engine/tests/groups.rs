//! Ownership groups through the real `Stack` and the worker's `RoleFollower`: an engine that
//! owns group "a" (VIP A) and not group "b" (VIP B) answers A and stands by for B (counted
//! drops, never a reset or an ARP reply); announces only what it owns; takes a claim of a
//! VIP into account only for a group it owns; and losing one group forgets that group's
//! flows and held output and nothing of the other's.

mod common;

use common::*;
use std::net::Ipv4Addr;
use std::sync::Arc;

use flowtwin_engine::commit::{CommitTag, OutputHold};
use flowtwin_engine::counters::{Drop, Event};
use flowtwin_engine::iteration::CommitSink;
use flowtwin_engine::roles::{RoleFollower, RoleShared, RoleSink};
use flowtwin_engine::stack::{vrrp_mac, FrameSink, Group, GroupId, GroupSet, Stack, StackConfig, Vip};
use flowtwin_engine::tcp::State;
use flowtwin_engine::time::Instant;
use flowtwin_engine::wire::arp::{AnnounceTag, ArpOp, ArpRepr};
use flowtwin_engine::wire::ethernet::{ethertype, EthernetFrame, MacAddr};

/// VIP A (`common::VIP`, group "a") and VIP B (group "b", its own MAC: the switch learns one
/// port per MAC, so groups owned by different engines cannot share one).
const VIP_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 101);
const A: GroupId = GroupId(0);
const B: GroupId = GroupId(1);

fn mac_b() -> MacAddr {
    vrrp_mac(2)
}

fn two_groups() -> StackConfig {
    let mut c = config(16, tcp_cfg());
    c.vips[0].group = A;
    c.vips.push(Vip { addr: VIP_B, mac: mac_b(), group: B });
    c.groups = vec![Group::new("a"), Group::new("b")];
    let mut l = c.listeners.iter().find(|l| l.port == HTTP_PORT).unwrap().clone();
    l.vip = VIP_B;
    c.listeners.push(l);
    c
}

/// A client frame to VIP A, readdressed to VIP B.
fn to_b(frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    assert_eq!(&f[30..34], &VIP.octets());
    f[0..6].copy_from_slice(&mac_b().0);
    f[30..34].copy_from_slice(&VIP_B.octets());
    fix_ip_checksum(&mut f);
    fix_tcp_checksum(&mut f);
    f
}

/// A frame the stack sent from VIP B, readdressed as if from VIP A (so `Peer` takes it in).
fn from_b(frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    assert_eq!((&f[6..12], &f[26..30]), (&mac_b().0[..], &VIP_B.octets()[..]), "sent from VIP B and its MAC");
    f[6..12].copy_from_slice(&vip_mac().0);
    f[26..30].copy_from_slice(&VIP.octets());
    fix_ip_checksum(&mut f);
    fix_tcp_checksum(&mut f);
    f
}

fn arp_request_for(ip: Ipv4Addr) -> Vec<u8> {
    let mut b = vec![0u8; 60];
    ArpRepr::request(CLIENT_MAC, CLIENT_IP, ip).emit_frame(&mut b).unwrap();
    b
}

/// The announcements in `frames`: the VIP each is for.
fn announced(frames: &[Vec<u8>]) -> Vec<Ipv4Addr> {
    frames
        .iter()
        .filter_map(|f| {
            let e = EthernetFrame::new_checked(&f[..]).ok()?;
            (e.ethertype() == ethertype::ARP).then(|| ArpRepr::parse(e.payload()).unwrap().sender_ip)
        })
        .collect()
}

/// Handshake of `peer` with VIP B; returns nothing, asserts the flow is established.
fn connect_b(h: &mut Harness, peer: &mut Peer) {
    let (out, d) = h.feed(&to_b(&peer.syn()));
    assert_eq!((d.event(Event::FlowsOpened), out.len()), (1, 1), "one SYN-ACK from B");
    peer.absorb_all(&[from_b(&out[0])]);
    let (out, _) = h.feed(&to_b(&peer.ack()));
    assert!(out.is_empty());
    let key = flowtwin_engine::flow::FlowKey::v4(peer.ip, peer.port, VIP_B, peer.dport);
    let id = h.stack.flows().lookup(&key).expect("flow on B");
    assert_eq!(h.stack.flows().get(id).unwrap().tcb.state(), State::Established);
}

#[test]
fn a_stack_answers_only_the_groups_it_owns() {
    let mut h = Harness::new(two_groups());
    assert_eq!(h.stack.owned(), GroupSet::first(2), "a new stack owns every group");
    h.stack.set_owned(GroupSet::of(A));
    assert!(h.stack.owns(VIP) && !h.stack.owns(VIP_B));

    // ARP: A answers, B is the standby's (its owner answers).
    let (out, _) = h.feed(&arp_request_for(VIP));
    assert_eq!(out.len(), 1, "ARP for VIP A answered");
    let (out, d) = h.feed(&arp_request_for(VIP_B));
    assert_eq!((out.len(), d.drop(Drop::Standby)), (0, 1), "ARP for VIP B: not ours now");

    // TCP: a SYN to A opens a flow; a SYN to B is dropped and counted, never reset.
    let mut pa = Peer::linux(40000, HTTP_PORT);
    h.connect(&mut pa);
    let mut pb = Peer::linux(40001, HTTP_PORT);
    let (out, d) = h.feed(&to_b(&pb.syn()));
    assert!(out.is_empty(), "no SYN-ACK and no RST for a group we stand by for: {out:?}");
    assert_eq!((d.drop(Drop::Standby), d.event(Event::FlowsOpened), d.event(Event::RstSent)), (1, 0, 0));

    // Announcements: the owned group's VIPs only.
    let mut sink = VecSink::default();
    h.stack.announce(&mut sink);
    assert_eq!(announced(&sink.frames), vec![VIP]);

    // Owning B too: it answers, from B's address and MAC.
    h.stack.set_owned(GroupSet::first(2));
    connect_b(&mut h, &mut pb);
    let mut sink = VecSink::default();
    h.stack.announce(&mut sink);
    assert_eq!(announced(&sink.frames), vec![VIP, VIP_B]);

    // Owning nothing: the standby drops everything, first thing.
    h.stack.set_owned(GroupSet::NONE);
    let (out, d) = h.feed(&arp_request_for(VIP));
    assert_eq!((out.len(), d.drop(Drop::Standby)), (0, 1));
    // A set beyond the configured groups is clamped to them.
    h.stack.set_owned(GroupSet(u64::MAX));
    assert_eq!(h.stack.owned(), GroupSet::first(2));
}

#[test]
fn a_claim_counts_only_for_a_group_owned() {
    let mut h = Harness::new(two_groups());
    h.stack.set_identity(1, 5);
    h.stack.set_owned(GroupSet::of(A));
    let claim = |ip: Ipv4Addr, mac: MacAddr| {
        let mut b = vec![0u8; 60];
        AnnounceTag { node_id: 2, epoch: 9 }.emit_gratuitous(mac, ip, &mut b).unwrap();
        b
    };
    // Node 2 announces B, which it owns: nothing to do with us.
    h.feed(&claim(VIP_B, mac_b()));
    assert_eq!(h.stack.take_vip_claim(), None, "a claim of a group we do not own is its owner's business");
    // Node 2 announces A with a newer epoch: it took A over, we must be fenced for A.
    h.feed(&claim(VIP, vip_mac()));
    assert_eq!(h.stack.take_vip_claim(), Some(AnnounceTag { node_id: 2, epoch: 9 }));
}

#[test]
fn clearing_a_group_forgets_its_flows_and_no_others() {
    let mut h = Harness::new(two_groups());
    let mut pa = Peer::linux(40000, HTTP_PORT);
    let mut pb = Peer::linux(40001, HTTP_PORT);
    h.connect(&mut pa);
    connect_b(&mut h, &mut pb);
    assert_eq!(h.stack.flows().len(), 2);

    h.stack.set_owned(GroupSet::of(A));
    h.stack.clear_groups(GroupSet::of(B));
    assert_eq!(h.stack.flows().len(), 1);
    assert_eq!(h.flows_by_state_total(), 1, "the per-state gauges follow");
    assert_eq!(h.state_of(&pa), Some(State::Established));

    // A's flow goes on: a request is answered in full.
    let out = h.step("request on A", &pa.data(b"GET /gen/3000 HTTP/1.1\r\nHost: a\r\n\r\n"), Verdict::Accepted);
    pa.absorb_all(&out);
    while pa.received.len() < gen_response(3000).len() {
        let (out, _) = h.feed(&pa.ack());
        assert!(!out.is_empty(), "the response goes on");
        pa.absorb_all(&out);
    }
    assert_eq!(pa.received, gen_response(3000));
    // B's client now talks to nobody here: dropped as the standby's.
    let (out, d) = h.feed(&to_b(&pb.ack()));
    assert_eq!((out.len(), d.drop(Drop::Standby)), (0, 1));
}

/// A worker's output, held as the DPDK loop holds it; announcements go out at once.
#[derive(Default)]
struct HeldSink {
    held: OutputHold<Vec<u8>>,
    sent: Vec<Vec<u8>>,
    hold: bool,
}

impl FrameSink for HeldSink {
    fn emit(&mut self, build: &mut dyn FnMut(&mut [u8]) -> usize) -> bool {
        let mut buf = vec![0u8; 2048];
        let n = build(&mut buf);
        if n > 0 {
            buf.truncate(n);
            if self.hold {
                self.held.push(buf);
            } else {
                self.sent.push(buf);
            }
        }
        true
    }

    fn seal(&mut self, tag: Option<CommitTag>, now: Instant) {
        self.held.commit(tag, now.0);
    }
}

impl CommitSink for HeldSink {
    fn release(&mut self, wm: flowtwin_engine::commit::Watermarks, now: Instant) {
        let sent = &mut self.sent;
        self.held.release(wm, now.0, |f, _| sent.push(f));
    }

    fn waiting(&self) -> bool {
        !self.held.is_empty()
    }
}

impl RoleSink for HeldSink {
    fn announce_now(&mut self, stack: &mut Stack) {
        let was = std::mem::replace(&mut self.hold, false);
        stack.announce(self);
        self.hold = was;
    }

    fn clear_held(&mut self) {
        self.held.clear();
    }

    fn drop_held(&mut self, drop: &mut dyn FnMut(&[u8]) -> bool) {
        self.held.drop_where(|f| drop(f));
    }
}

/// One held frame of each group's flow: a request's response, not yet released.
fn hold_one_each(h: &mut Harness, sink: &mut HeldSink, pa: &mut Peer, pb: &mut Peer) {
    sink.hold = true;
    h.stack.process(h.now, &pa.data(b"GET /gen/10 HTTP/1.1\r\n\r\n"), sink);
    sink.seal(Some(CommitTag { seq: 100, lane: flowtwin_engine::commit::Lane::Flow(1), groups: GroupSet::NONE }), h.now);
    h.stack.process(h.now, &to_b(&pb.data(b"GET /gen/20 HTTP/1.1\r\n\r\n")), sink);
    sink.seal(Some(CommitTag { seq: 101, lane: flowtwin_engine::commit::Lane::Flow(2), groups: GroupSet::NONE }), h.now);
    assert_eq!(sink.held.len(), 2, "one response per flow, held");
}

/// A worker owning both groups (from the start: no announcement), one established flow on
/// each VIP, and one held response of each.
struct Worker {
    h: Harness,
    role: Arc<RoleShared>,
    roles: RoleFollower,
    sink: HeldSink,
    pa: Peer,
    #[allow(dead_code)]
    pb: Peer,
}

fn worker_with_one_flow_each() -> Worker {
    let mut h = Harness::new(two_groups());
    let role = Arc::new(RoleShared::new(1, GroupSet::first(2)));
    let mut roles = RoleFollower::new(0);
    let mut sink = HeldSink::default();
    roles.start(&mut h.stack, &role);
    roles.follow(&mut h.stack, &role, h.now, &mut sink);
    assert!(sink.sent.is_empty(), "owning from the start: no announcement needed");
    let mut pa = Peer::linux(40000, HTTP_PORT);
    let mut pb = Peer::linux(40001, HTTP_PORT);
    h.connect(&mut pa);
    connect_b(&mut h, &mut pb);
    hold_one_each(&mut h, &mut sink, &mut pa, &mut pb);
    Worker { h, role, roles, sink, pa, pb }
}

/// The group of every frame still held, oldest first.
fn groups_held(h: &Harness, sink: &HeldSink) -> Vec<GroupId> {
    sink.held.frames().map(|f| h.stack.group_of_frame(f).expect("every held frame is from a VIP")).collect()
}

#[test]
fn a_worker_that_loses_one_group_keeps_serving_the_other() {
    let Worker { mut h, role, mut roles, mut sink, mut pa, .. } = worker_with_one_flow_each();

    // Group B is lost (fenced): its flow and its held output go, A's stay.
    role.disown(GroupSet::of(B));
    roles.follow(&mut h.stack, &role, h.now, &mut sink);
    assert_eq!(h.stack.owned(), GroupSet::of(A));
    assert_eq!(h.stack.flows().len(), 1);
    assert_eq!(groups_held(&h, &sink), vec![A], "B's held response must never leave; A's still waits");
    sink.release(u64::MAX.into(), h.now);
    assert_eq!(sink.sent.len(), 1);
    pa.absorb_all(&sink.sent);
    assert_eq!(pa.received, gen_response(10), "A's response left, whole");

    // B comes back without a takeover (a rejoin): owned again, announced by worker 0.
    sink.sent.clear();
    role.own(GroupSet::of(B));
    roles.follow(&mut h.stack, &role, h.now, &mut sink);
    assert_eq!(h.stack.owned(), GroupSet::first(2));
    assert_eq!(announced(&sink.sent), vec![VIP, VIP_B]);
}

#[test]
fn kept_groups_are_forgotten_when_no_longer_needed() {
    let Worker { mut h, role, mut roles, mut sink, .. } = worker_with_one_flow_each();

    // A handover of B: its flow and held output are kept while `retain` says so.
    role.retain.store(true, std::sync::atomic::Ordering::Release);
    role.disown(GroupSet::of(B));
    roles.follow(&mut h.stack, &role, h.now, &mut sink);
    assert_eq!((h.stack.owned(), h.stack.flows().len(), sink.held.len()), (GroupSet::of(A), 2, 2));
    roles.follow(&mut h.stack, &role, h.now, &mut sink);
    assert_eq!(h.stack.flows().len(), 2, "kept while retained");

    // No longer needed: B's flow and held frame go; A's stay.
    role.retain.store(false, std::sync::atomic::Ordering::Release);
    roles.follow(&mut h.stack, &role, h.now, &mut sink);
    assert_eq!(h.stack.flows().len(), 1);
    assert_eq!(groups_held(&h, &sink), vec![A]);
}

#[test]
fn a_takeover_of_one_group_leaves_the_other_alone() {
    let mut h = Harness::new(two_groups());
    let role = Arc::new(RoleShared::new(1, GroupSet::of(A)));
    let mut roles = RoleFollower::new(0);
    let mut sink = HeldSink::default();
    roles.start(&mut h.stack, &role);
    let mut pa = Peer::linux(40000, HTTP_PORT);
    h.connect(&mut pa);
    role.node_id.store(1, std::sync::atomic::Ordering::Relaxed);
    role.epoch.store(7, std::sync::atomic::Ordering::Relaxed);
    // The peer serving B died: B is taken over (no flows to install here).
    role.take_over(GroupSet::of(B), vec![Vec::new()], false);
    roles.follow(&mut h.stack, &role, h.now, &mut sink);
    assert_eq!(h.stack.owned(), GroupSet::first(2));
    assert_eq!(h.state_of(&pa), Some(State::Established), "A's flow is untouched by B's takeover");
    // The announcement carries the epoch; it names every owned VIP.
    assert_eq!(announced(&sink.sent), vec![VIP, VIP_B]);
    let e = EthernetFrame::new_checked(&sink.sent[0][..]).unwrap();
    let a = ArpRepr::parse(e.payload()).unwrap();
    assert_eq!(a.op, ArpOp::Request, "a gratuitous ARP");
    assert_eq!(AnnounceTag::read(&e.payload()[28..]), Some(AnnounceTag { node_id: 1, epoch: 7 }));
}

/// Records the group each event was emitted in (`Replicator::emit_in`).
#[derive(Clone, Default)]
struct GroupLog(Arc<std::sync::Mutex<Vec<(u8, u32)>>>, Arc<std::sync::atomic::AtomicU64>);

impl flowtwin_engine::replica::Replicator for GroupLog {
    fn emit(&mut self, slot: (u32, u32), ev: flowtwin_engine::replica::ReplEvent<'_>) -> Result<u64, flowtwin_engine::replica::ReplFull> {
        self.emit_in(GroupId(0xff), slot, ev)
    }
    fn emit_in(&mut self, g: GroupId, slot: (u32, u32), _ev: flowtwin_engine::replica::ReplEvent<'_>) -> Result<u64, flowtwin_engine::replica::ReplFull> {
        self.0.lock().unwrap().push((g.0, slot.0));
        Ok(self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1)
    }
    fn last_seq(&self) -> u64 {
        self.1.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[test]
fn a_flows_deltas_and_output_name_its_group() {
    // The group is the unit of replication: each session carries its group's deltas
    // (`emit_in`), and output waits for the watermark of its own group (`CommitTag::groups`).
    let mut h = Harness::new(two_groups());
    let log = GroupLog::default();
    h.stack.set_replicator(Box::new(log.clone()));
    let mut pb = Peer::linux(40001, HTTP_PORT);
    let (out, _) = h.feed(&to_b(&pb.syn()));
    assert_eq!(out.len(), 1, "a SYN-ACK from B");
    let tag = h.stack.commit_tag().unwrap();
    assert_eq!(tag.groups, GroupSet::of(B), "B's SYN-ACK waits for group b's standby only");
    assert!(tag.seq > 0);
    let mut pa = Peer::linux(40000, HTTP_PORT);
    h.feed(&pa.syn());
    assert_eq!(h.stack.commit_tag().unwrap().groups, GroupSet::of(A));
    let emitted = log.0.lock().unwrap().clone();
    assert!(!emitted.is_empty());
    assert!(emitted.iter().all(|&(g, _)| g == A.0 || g == B.0), "every event names its flow's group: {emitted:?}");
    let slot_b = emitted[0].1;
    assert!(emitted.iter().filter(|e| e.1 == slot_b).all(|&(g, _)| g == B.0), "{emitted:?}");
    assert!(emitted.iter().any(|&(g, _)| g == A.0));
    // Output of both groups in one interval waits for both watermarks.
    h.feed(&to_b(&pb.syn()));
    h.feed(&pa.syn());
    assert_eq!(h.stack.commit_tag().unwrap().groups, GroupSet::of(A).union(GroupSet::of(B)));
}
