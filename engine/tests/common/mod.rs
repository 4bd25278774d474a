//! Shared harness for the golden-packet tables (`golden.rs`) and the stack fuzzer
//! (`stack_fuzz.rs`): a `FrameSink` that collects frames, a stack wrapper that diffs counters
//! around every call, an output-frame parser that checks every field a peer would, and a small
//! TCP peer that tracks its own sequence space from the stack's answers (packetdrill-like).
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use flowtwin_engine::counters::{Counters, Drop, Event};
use flowtwin_engine::flow::FlowKey;
use flowtwin_engine::seq::SeqNum;
use flowtwin_engine::service::echo::EchoConfig;
use flowtwin_engine::service::object::{ObjectStore, StoreConfig};
use flowtwin_engine::stack::{vrrp_mac, FrameSink, GroupId, Listener, ServiceSpec, Stack, StackConfig, Vip, MAX_FRAME};
use flowtwin_engine::tcp::{State, TcbSnapshot, TcpConfig};
use flowtwin_engine::time::{Duration, Instant};
use flowtwin_engine::wire::checksum::{self, ChecksumStatus};
use flowtwin_engine::wire::ethernet::{ethertype, EthernetFrame, MacAddr};
use flowtwin_engine::wire::ipv4::{self, Ipv4Packet};
use flowtwin_engine::wire::tcp::{build_tcp_frame, tcp_payload_offset, FrameAddrs, TcpPacket};
use flowtwin_engine::wire::{TcpFlags, TcpHeader, TcpOptions};

pub const VRID: u8 = 1;
/// Stack B of the tests that open connections (`open_flows.rs`, `health_checks.rs`): the
/// backend, a second engine on the segment.
pub const B_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 9);
pub const B_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 2, 9]);
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 7);
pub const CLIENT_MAC: MacAddr = MacAddr([0x02, 0x00, 0x00, 0x00, 0x00, 0x07]);
pub const HTTP_PORT: u16 = 80;
pub const ECHO_PORT: u16 = 7;
/// A VIP port with no listener.
pub const CLOSED_PORT: u16 = 81;
/// Client ISS in the lower half of sequence space.
pub const LOW_ISS: u32 = 0x1e67_c74a;
/// Client ISS in the upper half (the real Linux capture's value).
pub const HIGH_ISS: u32 = 0xde67_c74a;
/// Arbitrary, non-zero epoch so nothing depends on time starting at 0.
pub const T0: Instant = Instant(5_000_000_000);

pub fn vip_mac() -> MacAddr {
    vrrp_mac(VRID)
}

/// TCP defaults with delayed ACKs off, so every accepted segment is answered at once.
pub fn tcp_cfg() -> TcpConfig {
    TcpConfig { delayed_ack: Duration::ZERO, ..TcpConfig::default() }
}

pub fn store() -> ObjectStore {
    ObjectStore::from_objects(StoreConfig::default(), [("hello.txt", b"hello world\n".to_vec())]).0
}

pub fn config(flow_capacity: usize, tcp: TcpConfig) -> StackConfig {
    StackConfig {
        vips: vec![Vip { addr: VIP, mac: vip_mac(), group: GroupId::DEFAULT }],
        groups: Vec::new(),
        listeners: vec![
            Listener { vip: VIP, port: HTTP_PORT, spec: ServiceSpec::Object(Arc::new(store())) },
            Listener { vip: VIP, port: ECHO_PORT, spec: ServiceSpec::Echo(EchoConfig::default()) },
        ],
        routes: flowtwin_engine::route::RouteTable::all_on_link(),
        tcp,
        flow_capacity,
        isn_key: *b"flowtwin-golden!",
        open_secrets: Default::default(),
        timer_tick: Duration::from_micros(100),
        retired: Vec::new(),
    }
}

/// Collects frames. Hands out buffers full of stale bytes so a builder that forgets a field
/// shows up as a wrong value rather than a lucky zero.
#[derive(Default)]
pub struct VecSink {
    pub frames: Vec<Vec<u8>>,
    /// Emit calls whose builder returned 0 (nothing to send).
    pub empty_builds: usize,
}

impl FrameSink for VecSink {
    fn emit(&mut self, build: &mut dyn FnMut(&mut [u8]) -> usize) -> bool {
        let mut buf = vec![0xa5u8; MAX_FRAME];
        let n = build(&mut buf);
        assert!(n <= MAX_FRAME, "builder returned {n} > MAX_FRAME");
        if n == 0 {
            self.empty_builds += 1;
        } else {
            buf.truncate(n);
            self.frames.push(buf);
        }
        true
    }
}

/// Counter movement over one call.
#[derive(Clone, Debug)]
pub struct Delta {
    pub drops: Vec<u64>,
    pub events: Vec<u64>,
}

impl Delta {
    fn between(a: &Counters, b: &Counters) -> Delta {
        Delta {
            drops: a.drops.iter().zip(b.drops.iter()).map(|(x, y)| y - x).collect(),
            events: a.events.iter().zip(b.events.iter()).map(|(x, y)| y - x).collect(),
        }
    }
    pub fn drop(&self, d: Drop) -> u64 {
        self.drops[d as usize]
    }
    pub fn event(&self, e: Event) -> u64 {
        self.events[e as usize]
    }
    pub fn moved_drops(&self) -> Vec<(Drop, u64)> {
        Drop::ALL.iter().filter(|d| self.drop(**d) != 0).map(|d| (*d, self.drop(*d))).collect()
    }
    pub fn moved_events(&self) -> Vec<(Event, u64)> {
        Event::ALL.iter().filter(|e| self.event(**e) != 0).map(|e| (*e, self.event(*e))).collect()
    }
}

/// The expected verdict of one input frame.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Exactly this drop counter moved, by exactly 1; no other drop counter moved.
    Drop(Drop),
    /// This event counter moved by exactly 1; no drop counter moved.
    Event(Event),
    /// No drop counter moved (the segment was taken; outputs are checked separately).
    Accepted,
}

/// Checks `v` against `d`, plus the invariants every call must keep: RxFrames moved by exactly
/// `rx` and TxFrames equals the frames that reached the sink.
pub fn check_verdict(ctx: &str, d: &Delta, v: Verdict, rx: u64, frames_out: usize) -> Result<(), String> {
    let mut errs = Vec::new();
    if d.event(Event::RxFrames) != rx {
        errs.push(format!("RxFrames moved by {}, want {rx}", d.event(Event::RxFrames)));
    }
    if d.event(Event::TxFrames) != frames_out as u64 {
        errs.push(format!("TxFrames moved by {} but {frames_out} frame(s) were emitted", d.event(Event::TxFrames)));
    }
    match v {
        Verdict::Drop(want) => {
            let moved = d.moved_drops();
            if moved != vec![(want, 1)] {
                errs.push(format!("want drop {want:?} +1, drops moved: {moved:?}"));
            }
        }
        Verdict::Event(want) => {
            if d.event(want) != 1 {
                errs.push(format!("want event {want:?} +1, moved by {}", d.event(want)));
            }
            if !d.moved_drops().is_empty() {
                errs.push(format!("no drop expected, drops moved: {:?}", d.moved_drops()));
            }
        }
        Verdict::Accepted => {
            if !d.moved_drops().is_empty() {
                errs.push(format!("no drop expected, drops moved: {:?}", d.moved_drops()));
            }
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(format!("{ctx}: {} (events moved: {:?})", errs.join("; "), d.moved_events()))
    }
}

/// One stack plus a clock.
pub struct Harness {
    pub stack: Stack,
    pub now: Instant,
    pub fed: u64,
}

impl Harness {
    pub fn new(cfg: StackConfig) -> Harness {
        Harness { stack: Stack::new(Arc::new(cfg), T0), now: T0, fed: 0 }
    }

    pub fn standard() -> Harness {
        Harness::new(config(16, tcp_cfg()))
    }

    /// Feed one frame at the current time.
    pub fn feed(&mut self, frame: &[u8]) -> (Vec<Vec<u8>>, Delta) {
        let before = self.stack.counters().clone();
        let mut sink = VecSink::default();
        self.stack.process(self.now, frame, &mut sink);
        self.fed += 1;
        let d = Delta::between(&before, self.stack.counters());
        (sink.frames, d)
    }

    /// Feed one frame and check its verdict; panics with `ctx` on mismatch.
    pub fn step(&mut self, ctx: &str, frame: &[u8], v: Verdict) -> Vec<Vec<u8>> {
        let (out, d) = self.feed(frame);
        if let Err(e) = check_verdict(ctx, &d, v, 1, out.len()) {
            panic!("{e}");
        }
        out
    }

    /// Advance the clock to `t` and run timers.
    pub fn poll_at(&mut self, t: Instant) -> (Vec<Vec<u8>>, Delta) {
        assert!(t >= self.now, "time goes forward");
        self.now = t;
        let before = self.stack.counters().clone();
        let mut sink = VecSink::default();
        self.stack.poll(t, &mut sink);
        let d = Delta::between(&before, self.stack.counters());
        assert_eq!(d.event(Event::RxFrames), 0);
        assert_eq!(d.event(Event::TxFrames), sink.frames.len() as u64, "TxFrames vs frames emitted by poll");
        (sink.frames, d)
    }

    pub fn advance(&mut self, by: Duration) {
        self.now = self.now + by;
    }

    /// TCP state of the flow of `peer`, or `None` if it has no flow.
    pub fn state_of(&self, peer: &Peer) -> Option<State> {
        let key = FlowKey::v4(peer.ip, peer.port, VIP, peer.dport);
        let id = self.stack.flows().lookup(&key)?;
        self.stack.flows().get(id).map(|f| f.tcb.state())
    }

    /// Sum of the per-state flow gauges.
    pub fn flows_by_state_total(&self) -> u64 {
        self.stack.counters().flows_by_state.iter().sum()
    }

    /// Three-way handshake for `peer`; returns the SYN-ACK.
    pub fn connect(&mut self, peer: &mut Peer) -> Seg {
        let syn = peer.syn();
        let out = self.step("handshake SYN", &syn, Verdict::Event(Event::FlowsOpened));
        assert_eq!(out.len(), 1, "one SYN-ACK");
        let sa = parse_seg(&out[0]);
        peer.absorb(&sa);
        let ack = peer.ack();
        let out = self.step("handshake ACK", &ack, Verdict::Accepted);
        assert!(out.is_empty(), "nothing to send after the handshake: {:?}", out.iter().map(|f| parse_seg(f)).collect::<Vec<_>>());
        assert_eq!(self.state_of(peer), Some(State::Established));
        sa
    }
}

/// A parsed output TCP frame; `parse_seg` already checked every fixed field.
#[derive(Clone, Debug)]
pub struct Seg {
    pub eth_dst: MacAddr,
    pub eth_src: MacAddr,
    pub ip_src: Ipv4Addr,
    pub ip_dst: Ipv4Addr,
    pub ttl: u8,
    pub ip_id: u16,
    pub hdr: TcpHeader,
    pub header_len: usize,
    pub raw_options: Vec<u8>,
    pub payload: Vec<u8>,
}

impl Seg {
    pub fn flags(&self) -> TcpFlags {
        self.hdr.flags
    }
    /// SEG.LEN (payload + SYN + FIN).
    pub fn seg_len(&self) -> u32 {
        self.payload.len() as u32 + self.hdr.flags.syn() as u32 + self.hdr.flags.fin() as u32
    }
}

/// Parses an output frame as Ethernet/IPv4/TCP and checks what must hold for every TCP frame
/// the stack sends: both checksums verify, IPv4 without options, DF, not a fragment, TTL 64,
/// the frame is exactly Ethernet + IP total length, urgent pointer 0, reserved bits 0.
pub fn parse_seg(f: &[u8]) -> Seg {
    let e = EthernetFrame::new_checked(f).expect("ethernet");
    assert_eq!(e.ethertype(), ethertype::IPV4, "ethertype");
    let ip = Ipv4Packet::new_checked(e.payload()).expect("IPv4 header valid, checksum verifies");
    assert_eq!(ip.total_len() + 14, f.len(), "frame length = 14 + IP total length");
    assert!(!ip.has_options(), "no IP options");
    assert!(ip.dont_frag() && !ip.is_fragment(), "DF, unfragmented");
    assert_eq!(ip.protocol(), ipv4::protocol::TCP);
    assert_eq!(ip.ttl(), ipv4::DEFAULT_TTL, "TTL");
    assert_eq!(e.payload()[1], 0, "TOS");
    let t = TcpPacket::new_checked(ip.payload()).expect("TCP header valid");
    assert_eq!(t.checksum_status(IpAddr::V4(ip.src()), IpAddr::V4(ip.dst())), ChecksumStatus::Valid, "TCP checksum");
    assert_eq!(t.urgent_pointer(), 0, "urgent pointer");
    assert_eq!(ip.payload()[12] & 0x0f, 0, "reserved bits");
    let hl = t.header_len();
    Seg {
        eth_dst: e.dst(),
        eth_src: e.src(),
        ip_src: ip.src(),
        ip_dst: ip.dst(),
        ttl: ip.ttl(),
        ip_id: ip.ident(),
        hdr: t.header(),
        header_len: hl,
        raw_options: ip.payload()[20..hl].to_vec(),
        payload: t.payload().to_vec(),
    }
}

/// Builds a client → VIP frame.
pub fn tcp_frame(a: &FrameAddrs, h: &TcpHeader, payload: &[u8]) -> Vec<u8> {
    let off = tcp_payload_offset(&h.options);
    let mut b = vec![0u8; off + payload.len()];
    b[off..].copy_from_slice(payload);
    let n = build_tcp_frame(&mut b, a, h, payload.len()).expect("build");
    b.truncate(n);
    b
}

pub fn client_addrs() -> FrameAddrs {
    FrameAddrs { src_mac: CLIENT_MAC, dst_mac: vip_mac(), src_ip: CLIENT_IP, dst_ip: VIP, ttl: 64, ip_id: 0x1234 }
}

/// Linux's SYN options (MSS 1460, SACK-permitted, TS, WS 7).
pub fn linux_syn_options(tsval: u32) -> TcpOptions {
    TcpOptions { mss: Some(1460), wscale: Some(7), sack_permitted: true, timestamps: Some((tsval, 0)), ..Default::default() }
}

/// Recomputes the IPv4 header checksum of an Ethernet frame (after a test edited the header).
pub fn fix_ip_checksum(frame: &mut [u8]) {
    let hl = usize::from(frame[14] & 0x0f) * 4;
    frame[24..26].fill(0);
    let c = checksum::checksum(&frame[14..14 + hl]);
    frame[24..26].copy_from_slice(&c.to_be_bytes());
}

/// Recomputes the TCP checksum of an Ethernet/IPv4/TCP frame.
pub fn fix_tcp_checksum(frame: &mut [u8]) {
    let hl = usize::from(frame[14] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
    let src = Ipv4Addr::new(frame[26], frame[27], frame[28], frame[29]);
    let dst = Ipv4Addr::new(frame[30], frame[31], frame[32], frame[33]);
    let seg = &mut frame[14 + hl..14 + total];
    flowtwin_engine::wire::tcp::fill_tcp_checksum(seg, src.into(), dst.into()).expect("fill");
}

/// A TCP peer (the client) that keeps its own sequence state from what it sends and what the
/// stack answers. It does not retransmit or reorder on its own: tests script that.
#[derive(Clone, Debug)]
pub struct Peer {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    pub port: u16,
    pub dport: u16,
    /// Options of our SYN.
    pub syn_opts: TcpOptions,
    pub iss: SeqNum,
    /// Next sequence we send.
    pub snd_nxt: SeqNum,
    /// Next sequence we expect from the stack (what we ACK).
    pub rcv_nxt: SeqNum,
    /// The stack's ISS, from its SYN-ACK.
    pub server_iss: SeqNum,
    /// Both sides sent timestamps.
    pub ts_ok: bool,
    pub tsval: u32,
    /// Last TSval seen from the stack (our TSecr).
    pub ts_recent: u32,
    /// Raw window field we send after the SYN.
    pub window: u16,
    pub ip_id: u16,
    /// In-order payload received from the stack.
    pub received: Vec<u8>,
    /// The stack's FIN was received (in order).
    pub got_fin: bool,
}

impl Peer {
    pub fn new(port: u16, dport: u16, iss: u32, syn_opts: TcpOptions) -> Peer {
        Peer {
            mac: CLIENT_MAC,
            ip: CLIENT_IP,
            port,
            dport,
            syn_opts,
            iss: SeqNum(iss),
            snd_nxt: SeqNum(iss),
            rcv_nxt: SeqNum(0),
            server_iss: SeqNum(0),
            ts_ok: false,
            tsval: syn_opts.timestamps.map(|t| t.0).unwrap_or(0),
            ts_recent: 0,
            window: 65535,
            ip_id: 100,
            received: Vec::new(),
            got_fin: false,
        }
    }

    /// A Linux-like client (all options). Its ISS is below 2^31: see `HIGH_ISS`.
    pub fn linux(port: u16, dport: u16) -> Peer {
        Peer::new(port, dport, LOW_ISS, linux_syn_options(0x592b_2997))
    }

    pub fn addrs(&mut self) -> FrameAddrs {
        self.ip_id = self.ip_id.wrapping_add(1);
        FrameAddrs { src_mac: self.mac, dst_mac: vip_mac(), src_ip: self.ip, dst_ip: VIP, ttl: 64, ip_id: self.ip_id }
    }

    /// Our SYN (sequence `iss`).
    pub fn syn(&mut self) -> Vec<u8> {
        self.snd_nxt = self.iss + 1;
        let h = TcpHeader {
            src_port: self.port,
            dst_port: self.dport,
            seq: self.iss,
            ack: SeqNum(0),
            flags: TcpFlags::SYN,
            window: 65535,
            options: self.syn_opts,
        };
        let a = self.addrs();
        tcp_frame(&a, &h, &[])
    }

    /// A segment with explicit sequence numbers (no state change except the TS clock);
    /// carries our TS option when timestamps were negotiated.
    pub fn raw(&mut self, flags: TcpFlags, seq: SeqNum, ack: SeqNum, payload: &[u8]) -> Vec<u8> {
        let mut options = TcpOptions::default();
        if self.ts_ok {
            self.tsval = self.tsval.wrapping_add(1);
            options.timestamps = Some((self.tsval, self.ts_recent));
        }
        let h = TcpHeader { src_port: self.port, dst_port: self.dport, seq, ack, flags, window: self.window, options };
        let a = self.addrs();
        tcp_frame(&a, &h, payload)
    }

    /// The next in-sequence segment (ACK set), advancing our SND.NXT.
    pub fn send(&mut self, flags: TcpFlags, payload: &[u8]) -> Vec<u8> {
        let flags = flags | TcpFlags::ACK;
        let f = self.raw(flags, self.snd_nxt, self.rcv_nxt, payload);
        self.snd_nxt = self.snd_nxt + payload.len() as u32 + flags.fin() as u32;
        f
    }

    pub fn ack(&mut self) -> Vec<u8> {
        self.send(TcpFlags::ACK, &[])
    }

    pub fn data(&mut self, payload: &[u8]) -> Vec<u8> {
        self.send(TcpFlags::PSH, payload)
    }

    pub fn fin(&mut self) -> Vec<u8> {
        self.send(TcpFlags::FIN, &[])
    }

    /// Check a stack segment is addressed to us from the VIP, and take it in (in-order data,
    /// FIN, SYN-ACK, TS).
    pub fn absorb(&mut self, s: &Seg) {
        assert_eq!((s.eth_src, s.eth_dst), (vip_mac(), self.mac), "MACs: from the VIP MAC to the client");
        assert_eq!((s.ip_src, s.ip_dst), (VIP, self.ip), "IPs");
        assert_eq!((s.hdr.src_port, s.hdr.dst_port), (self.dport, self.port), "ports");
        if let Some((tsval, _)) = s.hdr.options.timestamps {
            self.ts_recent = tsval;
        }
        if s.hdr.flags.syn() {
            assert!(s.hdr.flags.ack(), "passive open only: SYN-ACK");
            self.server_iss = s.hdr.seq;
            self.rcv_nxt = s.hdr.seq + 1;
            self.ts_ok = self.syn_opts.timestamps.is_some() && s.hdr.options.timestamps.is_some();
            return;
        }
        if s.hdr.seq == self.rcv_nxt && !s.hdr.flags.rst() {
            self.received.extend_from_slice(&s.payload);
            self.rcv_nxt += s.payload.len() as u32;
            if s.hdr.flags.fin() {
                self.rcv_nxt += 1;
                self.got_fin = true;
            }
        }
    }

    pub fn absorb_all(&mut self, frames: &[Vec<u8>]) -> Vec<Seg> {
        frames
            .iter()
            .map(|f| {
                let s = parse_seg(f);
                self.absorb(&s);
                s
            })
            .collect()
    }
}

/// The bytes `/gen/<n>` must return: header + generated body.
pub fn gen_response(n: usize) -> Vec<u8> {
    let mut v = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\nConnection: keep-alive\r\n\r\n"
    )
    .into_bytes();
    let at = v.len();
    v.resize(at + n, 0);
    flowtwin_engine::service::object::gen_byte_range(0, &mut v[at..]);
    v
}

/// The replicated TCB of an established, idle connection between ports `lport` (ours) and
/// `rport`: our ISS 1000 and the peer's 5000, nothing in flight.
pub fn established(lport: u16, rport: u16) -> TcbSnapshot {
    TcbSnapshot {
        state: State::Established,
        local_port: lport,
        remote_port: rport,
        iss: SeqNum(1000),
        irs: SeqNum(5000),
        snd_una: SeqNum(1001),
        snd_nxt: SeqNum(1001),
        rcv_nxt: SeqNum(5001),
        snd_wnd: 65535,
        rcv_wnd: 65535,
        mss: 1460,
        ..Default::default()
    }
}

/// Stack B's configuration: an object server on :80 and an echo on :7 at [`B_IP`].
pub fn backend_config(flow_capacity: usize) -> StackConfig {
    StackConfig {
        vips: vec![Vip { addr: B_IP, mac: B_MAC, group: GroupId::DEFAULT }],
        groups: Vec::new(),
        listeners: vec![
            Listener { vip: B_IP, port: 80, spec: ServiceSpec::Object(Arc::new(ObjectStore::empty(StoreConfig::default()))) },
            Listener { vip: B_IP, port: 7, spec: ServiceSpec::Echo(EchoConfig::default()) },
        ],
        routes: flowtwin_engine::route::RouteTable::all_on_link(),
        tcp: tcp_cfg(),
        flow_capacity,
        isn_key: *b"flowtwin-backend",
        open_secrets: Default::default(),
        timer_tick: Duration::from_micros(100),
        retired: Vec::new(),
    }
}
