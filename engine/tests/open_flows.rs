//! Flows the engine opens itself, and linked flows, through real `Stack`s (no DPDK): stack A
//! opens a connection to stack B's listener, the two wired frame to frame (ARP included);
//! the failures of an active open (next hop, ports, table, requests it cannot serve), each
//! counted; the port choice against the steering of several worker counts; and the output
//! commit coupling of a linked pair.

mod common;

use common::*;
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};

use flowtwin_engine::commit::{CommitTag, Lane};
use flowtwin_engine::counters::Event;
use flowtwin_engine::distribute::worker_for_frame;
use flowtwin_engine::ephemeral::{rss_hash_tcp_v4, EphemeralConfig, PortError, PortRange, RssSteering, SoftwareSteering, SYMMETRIC_RSS_KEY};
use flowtwin_engine::flow::{FlowId, FlowKey};
use flowtwin_engine::iteration::resume;
use flowtwin_engine::neighbor::Resolve;
use flowtwin_engine::replica::{FlowImage, Origin, Partner, ReplEvent, ReplFull, Replicator, ShadowFlow};
use flowtwin_engine::seq::SeqNum;
use flowtwin_engine::service::echo::{EchoConfig, EchoCursor, EchoState};
use flowtwin_engine::stack::{ConnectError, FrameSink, GroupId, Link, LinkEvent, PartnerEnd, ServiceState, Stack, StackConfig, MAX_FRAME};
use flowtwin_engine::tcp::State;
use flowtwin_engine::time::{Duration, Instant};
use flowtwin_engine::wire::arp::ArpRepr;
use flowtwin_engine::wire::ethernet::{ethertype, EthernetFrame};

/// An address nobody answers ARP for.
const NOBODY: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 77);
/// A's listener whose service the opened flows run (echo).
const A_ECHO: u16 = 1;

fn b_config() -> StackConfig {
    backend_config(16)
}

/// An echo service that already owes `bytes` (as a proxy's backend half owes the request it
/// buffered): the opened flow sends them first, and echoes whatever comes back.
fn owing(bytes: &[u8]) -> ServiceState {
    let c = EchoCursor { received: bytes.len() as u64, acked: 0, peer_fin: false };
    ServiceState::Echo(EchoState::from_cursor(EchoConfig::default(), &c, bytes).expect("fits"))
}

fn response_close(n: usize) -> Vec<u8> {
    let mut v = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    let at = v.len();
    v.resize(at + n, 0);
    flowtwin_engine::service::object::gen_byte_range(0, &mut v[at..]);
    v
}

/// One direction of a TCP connection as seen on the wire, reassembled by sequence number.
#[derive(Default, Debug)]
struct Stream {
    isn: Option<SeqNum>,
    next: SeqNum,
    bytes: Vec<u8>,
    fin: bool,
    rst: bool,
    syns: Vec<(SeqNum, u16)>,
}

impl Stream {
    fn take(&mut self, s: &Seg) {
        if s.flags().syn() {
            self.syns.push((s.hdr.seq, s.hdr.src_port));
            self.isn = Some(s.hdr.seq);
            self.next = s.hdr.seq + 1;
            return;
        }
        self.rst |= s.flags().rst();
        if self.isn.is_some() && s.hdr.seq == self.next && !s.flags().rst() {
            self.bytes.extend_from_slice(&s.payload);
            self.next += s.payload.len() as u32;
            if s.flags().fin() {
                self.fin = true;
                self.next += 1;
            }
        }
    }
}

/// Stack A (the harness config: VIP 198.18.0.100, HTTP on 80, echo on 7) and stack B, wired
/// frame to frame; a client on A's segment gets what is addressed to its MAC.
struct Net {
    a: Stack,
    b: Stack,
    now: Instant,
    to_a: VecDeque<Vec<u8>>,
    to_b: VecDeque<Vec<u8>>,
    to_client: Vec<Vec<u8>>,
    /// A → B and B → A.
    ab: Stream,
    ba: Stream,
    /// The link events A reported, in order.
    events: Vec<LinkEvent>,
}

impl Net {
    fn new() -> Net {
        Net {
            a: Stack::new(Arc::new(config(16, tcp_cfg())), T0),
            b: Stack::new(Arc::new(b_config()), T0),
            now: T0,
            to_a: VecDeque::new(),
            to_b: VecDeque::new(),
            to_client: Vec::new(),
            ab: Stream::default(),
            ba: Stream::default(),
            events: Vec::new(),
        }
    }

    /// Route A's output: to B (its MAC, or broadcast), or to the client.
    fn route_a(&mut self, frames: Vec<Vec<u8>>) {
        for f in frames {
            let e = EthernetFrame::new_checked(&f[..]).unwrap();
            let (dst, tcp) = (e.dst(), e.ethertype() == ethertype::IPV4);
            if dst == CLIENT_MAC {
                self.to_client.push(f);
                continue;
            }
            assert!(dst == B_MAC || dst.is_broadcast(), "A sent to {dst:?}");
            if tcp {
                self.ab.take(&parse_seg(&f));
            }
            self.to_b.push_back(f);
        }
    }

    fn route_b(&mut self, frames: Vec<Vec<u8>>) {
        for f in frames {
            if EthernetFrame::new_checked(&f[..]).unwrap().ethertype() == ethertype::IPV4 {
                let s = parse_seg(&f);
                assert_eq!(s.eth_dst, vip_mac(), "B answers A's VIP MAC");
                self.ba.take(&s);
            }
            self.to_a.push_back(f);
        }
    }

    fn connect(&mut self, remote: SocketAddrV4, svc: ServiceState) -> Result<FlowId, ConnectError> {
        let mut sink = VecSink::default();
        let r = self.a.connect_with(self.now, VIP, remote, A_ECHO, svc, &mut sink);
        self.route_a(sink.frames);
        r
    }

    /// Deliver everything in flight (and what that produces).
    fn deliver(&mut self) {
        while !(self.to_a.is_empty() && self.to_b.is_empty()) {
            if let Some(f) = self.to_b.pop_front() {
                let mut sink = VecSink::default();
                self.b.process(self.now, &f, &mut sink);
                self.route_b(sink.frames);
            }
            if let Some(f) = self.to_a.pop_front() {
                let mut sink = VecSink::default();
                self.a.process(self.now, &f, &mut sink);
                self.route_a(sink.frames);
            }
        }
        while let Some(e) = self.a.take_link_event() {
            self.events.push(e);
        }
    }

    /// Run for `d` in 1 ms steps: deliver, then timers of both.
    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.deliver();
            self.now = self.now + Duration::from_millis(1);
            let (mut sa, mut sb) = (VecSink::default(), VecSink::default());
            self.a.poll(self.now, &mut sa);
            self.b.poll(self.now, &mut sb);
            self.route_a(sa.frames);
            self.route_b(sb.frames);
        }
        self.deliver();
    }
}

#[test]
fn a_opens_a_connection_to_b_through_arp_bytes_flow_both_ways_and_it_closes_cleanly() {
    let mut n = Net::new();
    let request = b"GET /gen/30000 HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n";
    let id = n.connect(SocketAddrV4::new(B_IP, 80), owing(request)).expect("connect");
    // The next hop is unknown: one broadcast ARP request, the SYN held meanwhile.
    assert_eq!(n.to_b.len(), 1);
    assert!(n.ab.syns.is_empty());
    let f = n.a.flows().get(id).unwrap();
    assert_eq!((f.tcb.state(), f.origin, f.link, f.listener), (State::SynSent, Origin::Opened, Link::None, A_ECHO));
    let lport = f.tcb.local_port();
    assert!(PortRange::LINUX_DEFAULT.contains(lport));
    let k = n.a.counters();
    assert_eq!((k.get(Event::ActiveOpens), k.get(Event::FlowsOpened), k.get(Event::ArpRequestsSent)), (1, 1, 1));

    n.deliver();
    assert_eq!(n.a.arp_lookup(B_IP), Some(B_MAC), "B answered; A learned it");
    assert_eq!(n.ab.syns, [(n.ab.isn.unwrap(), lport)], "one SYN, from the chosen port");
    n.run(Duration::from_secs(3));

    let want = response_close(30000);
    assert_eq!(n.ba.bytes, want, "B's response reached A whole");
    assert!(n.ba.fin && n.ab.fin, "both FINs");
    assert_eq!(&n.ab.bytes[..request.len()], request, "A sent its request first");
    assert_eq!(&n.ab.bytes[request.len()..], &want[..], "then echoed B's response");
    assert!(!n.ab.rst && !n.ba.rst, "no reset either way");
    assert!(n.a.flows().is_empty() && n.b.flows().is_empty(), "both ends closed (B after TIME-WAIT)");
    for s in [&n.a, &n.b] {
        let k = s.counters();
        assert_eq!((k.get(Event::RstSent), k.get(Event::Retransmits), k.get(Event::FlowsClosed)), (0, 0, 1));
        assert_eq!(k.flows_by_state.iter().sum::<u64>(), 0);
    }
    assert_eq!(n.a.counters().get(Event::NeighborsResolved), 1);
}

#[test]
fn a_next_hop_that_never_answers_ends_the_flow_counted_and_its_partner_is_told() {
    let mut n = Net::new();
    // A client's flow on A (passive), to be linked with the opened one.
    let mut h = Harness { stack: std::mem::replace(&mut n.a, Stack::new(Arc::new(config(16, tcp_cfg())), T0)), now: T0, fed: 0 };
    let mut peer = Peer::linux(41000, ECHO_PORT);
    h.connect(&mut peer);
    n.a = h.stack;
    let client = n.a.flows().iter().next().unwrap().0;
    let id = n.connect(SocketAddrV4::new(NOBODY, 80), owing(b"x")).unwrap();
    n.a.link(client, id).unwrap();
    assert_eq!((n.a.partner(client), n.a.partner(id)), (Some(id), Some(client)));
    n.run(Duration::from_secs(10));
    let k = n.a.counters();
    assert_eq!((k.get(Event::OpensNextHopFailed), k.get(Event::NeighborFailures), k.get(Event::LinkPartnerEnded)), (1, 1, 1));
    assert!(n.a.flows().get(id).is_none(), "ended, not stuck in SYN-SENT");
    assert!(n.ab.syns.is_empty(), "no SYN ever left");
    assert_eq!(n.events, [LinkEvent { flow: client, end: PartnerEnd::NeverConnected }]);
    assert_eq!(n.a.partner(client), None, "the survivor is unlinked");
    assert_eq!(n.a.flows().get(client).map(|f| f.tcb.state()), Some(State::Established));
    // During the neighbour's hold-down a connect is refused at once, counted.
    let r = n.connect(SocketAddrV4::new(NOBODY, 80), owing(b"x"));
    assert_eq!(r, Err(ConnectError::NextHopDown(Resolve::Failed)));
    assert_eq!(n.a.counters().get(Event::ConnectNextHopDown), 1);
    assert!(r.unwrap_err().to_string().contains("next hop"));
}

#[test]
fn port_exhaustion_is_an_error_and_counted() {
    let mut n = Net::new();
    let range = PortRange::new(40000, 40003).unwrap();
    n.a.set_ephemeral(EphemeralConfig { range, ..EphemeralConfig::new([5; 16]) });
    let to = SocketAddrV4::new(B_IP, 80);
    let ids: Vec<FlowId> = (0..4).map(|_| n.connect(to, owing(b"x")).unwrap()).collect();
    let mut ports: Vec<u16> = ids.iter().map(|&id| n.a.flows().get(id).unwrap().tcb.local_port()).collect();
    ports.sort_unstable();
    assert_eq!(ports, [40000, 40001, 40002, 40003]);
    let e = n.connect(to, owing(b"x")).unwrap_err();
    assert_eq!(e, ConnectError::Ports(PortError::Exhausted { tried: 4, for_worker: 4 }));
    assert!(e.to_string().contains("no free local port"), "{e}");
    assert_eq!(n.a.counters().get(Event::ConnectPortsExhausted), 1);
    // The same ports are free toward another port of B.
    assert!(n.connect(SocketAddrV4::new(B_IP, 7), owing(b"x")).is_ok());
    assert_eq!(n.a.counters().get(Event::ActiveOpens), 5);
}

#[test]
fn requests_it_cannot_serve_are_refused_and_counted() {
    let mut n = Net::new();
    let b80 = SocketAddrV4::new(B_IP, 80);
    let mut sink = VecSink::default();
    let now = n.now;
    let other = Ipv4Addr::new(198, 18, 0, 1);
    assert_eq!(n.a.connect(now, other, b80, A_ECHO, &mut sink), Err(ConnectError::NoVip(other)));
    assert_eq!(n.a.connect(now, VIP, b80, 9, &mut sink), Err(ConnectError::NoService(9)));
    assert_eq!(
        n.a.connect_with(now, VIP, b80, 0, owing(b"x"), &mut sink),
        Err(ConnectError::ServiceKind { spec: "object", state: "echo" })
    );
    for bad in [SocketAddrV4::new(B_IP, 0), SocketAddrV4::new(Ipv4Addr::BROADCAST, 80), SocketAddrV4::new(VIP, 80), SocketAddrV4::new(Ipv4Addr::new(224, 0, 0, 1), 80)] {
        assert_eq!(n.a.connect(now, VIP, bad, A_ECHO, &mut sink), Err(ConnectError::BadRemote(bad)));
    }
    assert!(sink.frames.is_empty(), "nothing sent for a refused connect");
    assert_eq!(n.a.counters().get(Event::ConnectNoVip), 1);
    assert_eq!(n.a.counters().get(Event::ConnectInvalid), 6);
    n.a.set_active(false);
    assert_eq!(n.a.connect(now, VIP, b80, A_ECHO, &mut sink), Err(ConnectError::NotActive));
    assert_eq!(n.a.counters().get(Event::ConnectNotActive), 1);
    n.a.set_active(true);
    // A full table.
    for _ in 0..16 {
        n.a.connect(now, VIP, b80, A_ECHO, &mut sink).unwrap();
    }
    assert_eq!(n.a.connect(now, VIP, b80, A_ECHO, &mut sink), Err(ConnectError::TableFull));
    assert_eq!(n.a.counters().get(Event::ConnectTableFull), 1);
    assert!(n.a.set_worker(2, SoftwareSteering::new(2)).is_err());
}

/// Teach A where B is without asking (B's announcement), so a connect sends its SYN at once.
fn learn_b(a: &mut Stack, now: Instant) {
    let mut f = vec![0u8; 60];
    ArpRepr::request(B_MAC, B_IP, B_IP).emit_frame(&mut f).unwrap();
    a.process(now, &f, &mut VecSink::default());
    assert_eq!(a.arp_lookup(B_IP), Some(B_MAC));
}

#[test]
fn the_chosen_port_brings_the_reply_to_the_opening_worker() {
    for workers in [1usize, 2, 3, 4, 8] {
        for worker in 0..workers {
            for rss in [false, true] {
                let mut a = Stack::new(Arc::new(config(64, tcp_cfg())), T0);
                let r = if rss { a.set_worker(worker, RssSteering::round_robin(workers, 128)) } else { a.set_worker(worker, SoftwareSteering::new(workers)) };
                r.unwrap();
                learn_b(&mut a, T0);
                for rport in [80u16, 7, 443, 8080, 5201] {
                    let mut sink = VecSink::default();
                    a.connect_with(T0, VIP, SocketAddrV4::new(B_IP, rport), A_ECHO, owing(b"x"), &mut sink).unwrap();
                    let syn = parse_seg(&sink.frames[0]);
                    assert!(syn.flags().syn() && !syn.flags().ack());
                    let lport = syn.hdr.src_port;
                    let got = if rss {
                        let s = RssSteering::round_robin(workers, 128);
                        let reply = s.worker_of_hash(rss_hash_tcp_v4(&SYMMETRIC_RSS_KEY, B_IP, rport, VIP, lport));
                        let out = s.worker_of_hash(rss_hash_tcp_v4(&SYMMETRIC_RSS_KEY, VIP, lport, B_IP, rport));
                        assert_eq!(reply, out, "symmetric");
                        reply
                    } else {
                        // The SYN as the software distribution sees it, and so its reply (the
                        // hash is symmetric: checked by `distribute`'s own tests).
                        worker_for_frame(&sink.frames[0], workers)
                    };
                    assert_eq!(got, worker, "{workers} workers (rss {rss}): port {lport} to {rport}");
                }
            }
        }
    }
}

/// Events a replicator saw: (slot, sequence number, kind).
type Log = Arc<Mutex<Vec<((u32, u32), u64, &'static str)>>>;

/// A replicator that records every event with its sequence number.
#[derive(Default)]
struct Seqs {
    seq: u64,
    log: Log,
}

impl Replicator for Seqs {
    fn emit(&mut self, slot: (u32, u32), ev: ReplEvent<'_>) -> Result<u64, ReplFull> {
        self.seq += 1;
        let kind = match ev {
            ReplEvent::New(_) => "new",
            ReplEvent::Update(_) => "update",
            ReplEvent::Step(_) => "step",
            ReplEvent::Data { .. } => "data",
            ReplEvent::SvcImage(_) => "image",
            ReplEvent::Close => "close",
            ReplEvent::Barrier(_) => "barrier",
        };
        self.log.lock().unwrap().push((slot, self.seq, kind));
        Ok(self.seq)
    }
    fn last_seq(&self) -> u64 {
        self.seq
    }
}

/// The sequence number of the last event of flow `id`.
fn last_of(log: &Log, id: FlowId) -> u64 {
    log.lock().unwrap().iter().rev().find(|e| e.0 == (id.index(), id.generation())).map_or(0, |e| e.1)
}

/// Records the commit tags the stack seals its output with.
#[derive(Default)]
struct TagSink {
    frames: Vec<Vec<u8>>,
    seals: Vec<(usize, CommitTag)>,
}

impl FrameSink for TagSink {
    fn emit(&mut self, build: &mut dyn FnMut(&mut [u8]) -> usize) -> bool {
        let mut b = vec![0u8; MAX_FRAME];
        let n = build(&mut b);
        b.truncate(n);
        self.frames.push(b);
        true
    }
    fn seal(&mut self, tag: Option<CommitTag>, _now: Instant) {
        if let Some(t) = tag {
            self.seals.push((self.frames.len(), t));
        }
    }
}

#[test]
fn a_linked_halfs_output_waits_for_its_partners_latest_change() {
    let mut h = Harness::standard();
    let seqs = Seqs::default();
    let events = seqs.log.clone();
    h.stack.set_replicator(Box::new(seqs));
    let mut peer = Peer::linux(41000, ECHO_PORT);
    h.connect(&mut peer);
    let client = h.stack.flows().iter().next().unwrap().0;
    learn_b(&mut h.stack, h.now);
    let mut sink = TagSink::default();
    let backend = h.stack.connect_with(h.now, VIP, SocketAddrV4::new(B_IP, 80), A_ECHO, owing(b"GET / HTTP/1.1\r\n\r\n"), &mut sink).unwrap();
    assert_eq!(sink.frames.len(), 1, "the SYN");
    {
        let ev = events.lock().unwrap();
        let kinds: Vec<&str> = ev.iter().filter(|e| e.0 == (backend.index(), backend.generation())).map(|e| e.2).collect();
        assert_eq!(kinds, ["new", "image"], "an opened flow's creation carries its service image");
    }
    h.stack.link(client, backend).unwrap();
    // The client sends bytes: its flow's latest change (commit-relevant: Data).
    let data = peer.data(b"hello");
    let (out, _) = h.feed(&data);
    peer.absorb_all(&out);
    let (client_seq, backend_seq) = (last_of(&events, client), last_of(&events, backend));
    assert!(client_seq > backend_seq);
    let ack = peer.ack();
    h.feed(&ack);
    // The backend half's SYN is retransmitted (its own latest change is older): that output
    // waits for the client half's change too.
    let _ = h.stack.commit_tag(); // what was built so far was sealed (as `Iteration` does)
    let mut sink = TagSink::default();
    h.now = h.now + Duration::from_millis(1001);
    h.stack.poll(h.now, &mut sink);
    assert_eq!(sink.frames.len(), 1, "the SYN again");
    assert!(parse_seg(&sink.frames[0]).flags().syn());
    assert_eq!(sink.seals, [(1, CommitTag { seq: client_seq, lane: Lane::Flow(backend.index()), groups: flowtwin_engine::group::GroupSet(1) })]);
    // Unlinked (its partner ended), it waits for its own changes only.
    let rst = peer.send(flowtwin_engine::wire::TcpFlags::RST, &[]);
    h.feed(&rst);
    assert_eq!(h.stack.take_link_event(), Some(LinkEvent { flow: backend, end: PartnerEnd::Reset }));
    let _ = h.stack.commit_tag();
    let mut sink = TagSink::default();
    h.now = h.now + Duration::from_millis(2001);
    h.stack.poll(h.now, &mut sink);
    let own = last_of(&events, backend);
    assert_eq!(sink.seals, [(1, CommitTag { seq: own, lane: Lane::Flow(backend.index()), groups: flowtwin_engine::group::GroupSet(1) })]);
    assert!(own > client_seq);
}

/// Two replicas that name each other (as the standby's `pair_links` leaves them).
fn pair(cfg: &StackConfig) -> (ShadowFlow, ShadowFlow) {
    let est = established;
    let client = FlowImage {
        key: FlowKey::v4(CLIENT_IP, 41000, VIP, ECHO_PORT),
        tcb: est(ECHO_PORT, 41000),
        peer_mac: CLIENT_MAC,
        vip_mac: vip_mac(),
        listener: A_ECHO,
                listener_fp: 0,
        origin: Origin::Accepted,
        link: Some((3, 1)),
    };
    let backend = FlowImage { key: FlowKey::v4(B_IP, 80, VIP, 40000), tcb: est(40000, 80), peer_mac: B_MAC, origin: Origin::Opened, link: Some((2, 1)), ..client };
    let mut a = ShadowFlow::new(cfg, client).unwrap();
    let mut b = ShadowFlow::new(cfg, backend).unwrap();
    a.partner = Partner::Key(backend.key);
    b.partner = Partner::Key(client.key);
    (a, b)
}

#[test]
fn takeover_installs_a_linked_pair_both_or_neither() {
    for room in [1usize, 2, 3] {
        let cfg = config(room, tcp_cfg());
        let (a, b) = pair(&cfg);
        let mut s = Stack::new(Arc::new(cfg), T0);
        let mut sink = VecSink::default();
        let (installed, lost) = resume(&mut s, T0, [b, a], &mut sink);
        if room < 2 {
            assert_eq!((installed, lost, s.flows().len()), (0, 2, 0), "room for {room}: neither");
            assert!(sink.frames.is_empty(), "nothing sent for a pair not installed");
            continue;
        }
        assert_eq!((installed, lost), (2, 0));
        let ids: Vec<FlowId> = s.flows().iter().map(|(id, _, _)| id).collect();
        assert_eq!((s.partner(ids[0]), s.partner(ids[1])), (Some(ids[1]), Some(ids[0])), "linked again");
        assert_eq!(s.counters().get(Event::LinkOrphans), 0);
        assert_eq!(sink.frames.len(), 2, "a probe each");
    }
    // Alone (its partner not among the replicas), a half is an orphan.
    let cfg = config(4, tcp_cfg());
    let (a, _) = pair(&cfg);
    let mut s = Stack::new(Arc::new(cfg), T0);
    assert_eq!(resume(&mut s, T0, [a], &mut VecSink::default()), (1, 0));
    let id = s.flows().iter().next().unwrap().0;
    assert_eq!((s.flows().get(id).unwrap().link, s.counters().get(Event::LinkOrphans)), (Link::Orphan, 1));
}

/// The SYN (ISN, TSval) of a connection to B's port 80 from local port 40000, opened by an
/// engine with `cfg` whose engine time `now` is wall-clock `wall_us`.
fn syn_from(cfg: StackConfig, now: Instant, wall_us: u64) -> (SeqNum, u32) {
    let mut a = Stack::new(Arc::new(cfg), now);
    a.set_wall_clock(wall_us - now.0);
    a.set_ephemeral(EphemeralConfig { range: PortRange::new(40000, 40000).unwrap(), ..EphemeralConfig::new([5; 16]) });
    learn_b(&mut a, now);
    let mut sink = VecSink::default();
    a.connect_with(now, VIP, SocketAddrV4::new(B_IP, 80), A_ECHO, owing(b"x"), &mut sink).unwrap();
    let syn = sink.frames.iter().map(|f| parse_seg(f)).find(|s| s.flags().syn()).expect("a SYN at once");
    (syn.hdr.seq, syn.hdr.options.timestamps.expect("timestamps on").0)
}

/// Two engines open the same 4-tuple a few ms apart (the new active after a takeover, or an
/// engine restarted, while the backend still holds the old connection in TIME-WAIT): the
/// later SYN carries a newer TSval whatever the engines' secrets and engine clocks (it is the
/// wall clock), which Linux accepts on a TIME-WAIT tuple; and, with the pair's secret, a newer
/// ISN too (what a backend without timestamps checks). With a TSval offset per tuple under
/// a secret of each engine's own, half of the reuses went backwards (a 1 s wait for the
/// SYN's retransmission after the backend's PAWS check refused it).
#[test]
fn a_reused_four_tuple_gets_a_newer_tsval_and_from_the_pair_a_newer_isn() {
    use flowtwin_engine::tcp::isn::GroupSecrets;
    let wall = 1_796_000_000_000_000u64; // µs since the epoch, late 2026
    let pair = Arc::new(GroupSecrets::new(*b"the pair secret!"));
    let engine = |isn_key: [u8; 16], secrets: &Arc<GroupSecrets>| StackConfig { isn_key, open_secrets: secrets.clone(), ..config(16, tcp_cfg()) };
    // The old engine has run for an hour, the new one for a minute (engine clocks unrelated).
    let hour = Instant(3_600_000_000);
    let minute = Instant(60_000_000);
    for gap_ms in [2u64, 10, 1000, 50_000] {
        let (isn_a, ts_a) = syn_from(engine(*b"engine A's own k", &pair), hour, wall);
        let (isn_b, ts_b) = syn_from(engine(*b"engine B's own k", &pair), minute, wall + gap_ms * 1000);
        let d_ts = ts_b.wrapping_sub(ts_a) as i32;
        assert!(d_ts > 0 && (d_ts as u64).abs_diff(gap_ms) <= 1, "TSval grows by the gap: {d_ts} ms after {gap_ms} ms");
        assert!(isn_b.gt(isn_a), "ISN grows: {isn_a:?} then {isn_b:?} ({gap_ms} ms)");
    }
    // A restart (secrets of their own): the TSval still grows, for every secret.
    for i in 0..16u8 {
        let (_, ts_a) = syn_from(engine([i; 16], &Arc::new(GroupSecrets::new([i; 16]))), hour, wall);
        let (_, ts_b) = syn_from(engine([i; 16], &Arc::new(GroupSecrets::new([i ^ 0x80; 16]))), minute, wall + 2000);
        assert_eq!(ts_b.wrapping_sub(ts_a), 2, "secret {i}");
    }
    // Mutation check of the ISN: secrets of their own give unrelated ISNs (some go back).
    let backwards = (0..16u8).any(|i| {
        let (isn_a, _) = syn_from(engine([i; 16], &Arc::new(GroupSecrets::new([i; 16]))), hour, wall);
        let (isn_b, _) = syn_from(engine([i; 16], &Arc::new(GroupSecrets::new([i ^ 0x80; 16]))), minute, wall + 2000);
        !isn_b.gt(isn_a)
    });
    assert!(backwards, "without the shared secret some ISN goes backwards (else the ISN check proves nothing)");
    // A secret adopted later (a standby joining its active) is used from the next connection.
    let own = Arc::new(GroupSecrets::new(*b"standby's own ke"));
    let cfg_b = engine(*b"engine B's own k", &own);
    assert!(own.adopt(GroupId::DEFAULT, *b"the pair secret!"));
    let (isn_a, _) = syn_from(engine(*b"engine A's own k", &pair), hour, wall);
    let (isn_b, _) = syn_from(cfg_b, minute, wall + 3000);
    assert_eq!(isn_b - isn_a, 750, "3 ms of 4 µs ticks later, same tuple, same secret");
}
