//! One worker's network stack: the real per-packet function.
//!
//! [`Stack::process`] takes one received Ethernet frame and the current time, and writes any
//! answer frames into a [`FrameSink`]; [`Stack::poll`] runs expired timers. Nothing here
//! touches DPDK, a clock or a socket, so the golden-packet tests run this exact code without a
//! NIC, and a standby can replay it. The DPDK loop (`dataplane`) wraps it with mbufs.
//!
//! This module holds the stack and the life of its TCP flows: demultiplexing a segment to
//! its flow (or opening one on a SYN to a listener), driving TCP with the flow's service,
//! timers and close. L2/L3 classification (ARP, IPv4 checks, ICMP echo) is in `l2`;
//! replication of every flow change and output-commit tagging in `repl`; installing
//! replicated flows at takeover and their paced first probes in `resume`; flows the engine
//! opens itself and linked pairs in `open`, and the services whose flows come in pairs (the
//! proxy) in `linked`, the proxy's active health checks (local flows, never replicated) in
//! `health`; the services themselves behind [`crate::service`]. Every drop has a reason in
//! [`Drop`].

mod health;
mod l2;
mod linked;
mod open;
mod repl;
mod resume;

pub use self::open::{ConnectError, Link, LinkError, LinkEvent, PartnerEnd};
pub use self::resume::KICK_BURST;

use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use crate::neighbor::{NeighborConfig, NeighborTable};
use self::repl::Recorder;

use crate::commit::{CommitTag, Lane};
pub use crate::config::{listener_fingerprint, vrrp_mac, Group, GroupId, GroupSet, Listener, LiveConfig, StackConfig, Vip};
use crate::counters::{Counters, Drop, Event};
use crate::flow::{FlowId, FlowKey, FlowTable};
use crate::replica::{Origin, ReplEvent, Replicator};
pub use crate::service::{ServiceSpec, ServiceState};
use crate::service::{ByteStream, Lifecycle, ServiceCounters};
use crate::tcp::isn::IsnGenerator;
use crate::tcp::{reset_for, DirtyFlags, SegmentSink, SegmentVerdict, State, Tcb, TcbStats, TcpError};
use crate::time::Instant;
use crate::timer::TimerWheel;
use crate::wire::arp::AnnounceTag;
use crate::wire::checksum::ChecksumStatus;
use crate::wire::ethernet::{self, MacAddr};
use crate::wire::ipv4;
use crate::wire::tcp::{build_tcp_frame, tcp_payload_offset, FrameAddrs, TcpPacket};
use crate::wire::TcpHeader;

/// Largest frame the stack writes (Ethernet header + 1500-byte IP MTU).
pub const MAX_FRAME: usize = ethernet::HEADER_LEN + 1500;

/// Where answer frames go. The DPDK loop allocates an mbuf per frame; tests collect `Vec`s.
pub trait FrameSink {
    /// Build one frame: `build` gets a zeroed-or-stale buffer of at least [`MAX_FRAME`] bytes
    /// and returns the frame length (0 = nothing to send). Returns false if no buffer was
    /// available (the caller counts it; TCP's timers recover).
    fn emit(&mut self, build: &mut dyn FnMut(&mut [u8]) -> usize) -> bool;

    /// The frames emitted since the last seal were all built by one flow's call and depend
    /// on `tag` (`Stack::commit_tag`). A sink that holds output for the standby tags them
    /// now, so that frames of several flows built in one pass (timers) are not tagged
    /// together (`commit::Lane::Any`). Sinks that do not hold ignore it.
    fn seal(&mut self, _tag: Option<CommitTag>, _now: Instant) {}
}

/// One TCP flow: the TCP control block, its service, and the L2 facts to answer it.
pub struct Flow {
    pub tcb: Tcb,
    pub svc: ServiceState,
    /// Index into `StackConfig::listeners`: the listener whose service runs on the flow.
    pub listener: u16,
    /// Accepted by that listener, or opened by this engine (`Stack::connect`).
    pub origin: Origin,
    /// The other half of a linked pair (`Stack::link`), if any.
    pub link: Link,
    /// The client's (or next hop's) MAC, learned from its frames: replicated flow state.
    pub peer_mac: MacAddr,
    /// Our VIP's MAC.
    pub vip_mac: MacAddr,
    /// Installed at takeover and not yet validated by the client's first ACK (DESIGN §4:
    /// ready once the client's ACK falls within what the replica sent).
    pub unready: bool,
    /// Installed at takeover: during the takeover grace period its client's ACKs may be
    /// ahead of the replica's send progress (see `Tcb::catch_up_sent`).
    pub installed: bool,
    /// Sequence number of this flow's last replicated change that its output depends on
    /// (0: none yet). Output of the flow may leave once the standby acknowledged it; see
    /// [`Stack::commit_tag`].
    pub repl_seq: u64,
    /// Sequence number of this flow's last replicated change of what its peer acknowledged
    /// when that matters to its link partner only (a proxy half with `commit = "peer"`: the
    /// partner acknowledges its own peer's bytes by it, [`Stack::commit_tag`]); 0: none.
    pub una_seq: u64,
    /// A delta of this flow was lost to a full ring: nothing incremental may follow it (the
    /// standby would replay it onto the wrong state) until the flow is re-imaged whole.
    pub needs_image: bool,
    /// It entered TIME-WAIT (or was installed in it) and its service was told
    /// ([`Lifecycle::Quiet`]): its connection is over and no longer counted as open.
    pub quiet: bool,
    /// This engine's own business (an active health check, `health`): never replicated
    /// (no image, no delta, no close), so that no standby ever resumes it; its output
    /// waits for nothing.
    pub local: bool,
}

/// Deltas of a join snapshot that may await the standby's acknowledgement at once (about
/// half as many flows: an image is a `New` and a `SvcImage`).
pub const SNAPSHOT_WINDOW: u64 = 1024;

/// One worker's stack.
pub struct Stack {
    cfg: Arc<StackConfig>,
    flows: FlowTable<Flow>,
    timers: TimerWheel,
    isn: IsnGenerator,
    /// Neighbours: learned from ARP heard (replies, requests, announcements), resolved on
    /// demand for frames this engine originates (bounded, states and counters: `neighbor`).
    arp: NeighborTable,
    /// Sharing on (`set_neighbor_sharing`): the mappings ARP taught this worker since the
    /// last `take_heard_neighbor`, for the other workers (bounded: `l2::HEARD_MAX`).
    heard: Option<std::collections::VecDeque<crate::neighbor::Heard>>,
    counters: Counters,
    /// Counters of the services, updated by the flows' bound services.
    svc_stats: ServiceCounters,
    ip_id: u16,
    /// Where replicated changes go (None: no standby configured).
    repl: Option<Box<dyn Replicator>>,
    /// Bytes the services consumed during the current TCP call (replicated as Data).
    rx_log: Vec<u8>,
    /// Flows whose delta could not be queued: re-imaged before their output may leave.
    resync: Vec<FlowId>,
    /// A join snapshot in progress: (token, flows still to image).
    snapshot: Option<(u64, Vec<FlowId>)>,
    /// The last sequence queued when the join snapshot began, and the standby's latest
    /// acknowledgement (`set_standby_acked`; `u64::MAX`: unknown, do not pace). Images are
    /// queued only while fewer than [`SNAPSHOT_WINDOW`] deltas await the standby's
    /// acknowledgement, so that a change made during a join waits behind at most a window of
    /// images, not behind the whole snapshot (strict output commit holds its output until
    /// the standby has it).
    snapshot_base: u64,
    standby_acked: u64,
    /// The highest `repl_seq` of the flows touched since `commit_tag` last returned a tag:
    /// the tag of the output built since then.
    tag: Cell<u64>,
    /// The flow(s) touched since then (`None`: none yet).
    lane: Cell<Option<Lane>>,
    /// The ownership groups of the flows touched since then: whose watermarks the output
    /// waits for (`CommitTag::groups`).
    tag_groups: Cell<GroupSet>,
    /// The group of each listener's VIP (`StackConfig::listeners` order): a flow's group.
    listener_groups: Vec<GroupId>,
    /// The ownership groups this engine serves now: frames for a VIP of another group are
    /// the standby's (dropped, counted). Empty: a standby, which answers nothing.
    owned: GroupSet,
    /// Installs that still kick their flow at once, and the resumed flows waiting for their
    /// kick in a later pass (`KICK_BURST` per `poll`).
    kicks_now: usize,
    kicks: std::collections::VecDeque<FlowId>,
    /// Until then, segments of unknown flows are dropped instead of reset (takeover).
    grace_until: Instant,
    /// Who this engine is in its announcements (node id, epoch): `None` sends plain ones.
    identity: Option<AnnounceTag>,
    /// The newest claim of one of our VIPs by another engine seen since the last
    /// `take_vip_claim` (a tagged gratuitous ARP from a node that took over).
    vip_claim: Option<AnnounceTag>,
    /// Flows this worker opens and links (`open`).
    open: open::Opener,
    /// The active health checks this worker runs (`health`; worker 0 only).
    checks: health::Checker,
    /// The latest time a packet or timer call brought (for what closes outside them).
    now: Instant,
}

/// The group of each listener's VIP, in listener order.
fn listener_groups(cfg: &StackConfig) -> Vec<GroupId> {
    cfg.listeners.iter().map(|l| cfg.group_of(l.vip).unwrap_or(GroupId::DEFAULT)).collect()
}

/// Turns TCP's segments into Ethernet frames in the sink.
struct TcpTx<'a, F: FrameSink + ?Sized> {
    sink: &'a mut F,
    addrs: FrameAddrs,
    ip_id: &'a mut u16,
    frames: u64,
    failed: u64,
}

impl<F: FrameSink + ?Sized> SegmentSink for TcpTx<'_, F> {
    fn emit(&mut self, hdr: &TcpHeader, payload_len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        let off = tcp_payload_offset(&hdr.options);
        *self.ip_id = self.ip_id.wrapping_add(1);
        let mut addrs = self.addrs;
        addrs.ip_id = *self.ip_id;
        let ok = self.sink.emit(&mut |buf: &mut [u8]| {
            let Some(p) = buf.get_mut(off..off + payload_len) else { return 0 };
            fill(p);
            build_tcp_frame(buf, &addrs, hdr, payload_len).unwrap_or(0)
        });
        if ok {
            self.frames += 1;
        } else {
            self.failed += 1;
        }
        ok
    }
}

impl Stack {
    pub fn new(cfg: Arc<StackConfig>, now: Instant) -> Stack {
        let cap = cfg.flow_capacity.max(1);
        Stack {
            flows: FlowTable::new(cap),
            timers: TimerWheel::new(cap, cfg.timer_tick, now),
            isn: IsnGenerator::new(cfg.isn_key),
            arp: NeighborTable::new(NeighborConfig::default()),
            heard: None,
            counters: Counters::default(),
            svc_stats: ServiceCounters::default(),
            ip_id: 0,
            repl: None,
            rx_log: Vec::with_capacity(64 * 1024),
            resync: Vec::new(),
            snapshot: None,
            snapshot_base: 0,
            standby_acked: u64::MAX,
            tag: Cell::new(0),
            lane: Cell::new(None),
            tag_groups: Cell::new(GroupSet::NONE),
            listener_groups: listener_groups(&cfg),
            owned: cfg.all_groups(),
            kicks_now: usize::MAX,
            kicks: std::collections::VecDeque::new(),
            grace_until: Instant::ZERO,
            identity: None,
            vip_claim: None,
            open: open::Opener::new(&cfg.isn_key, &cfg.open_secrets),
            checks: health::Checker::new(&cfg, now),
            now,
            cfg,
        }
    }

    /// Replicate every flow change through `r` (an engine with a standby).
    pub fn set_replicator(&mut self, r: Box<dyn Replicator>) {
        self.repl = Some(r);
    }

    /// Serve the groups of `owned` from now on: answer frames for their VIPs, drop (count)
    /// the others'. Flows of groups no longer owned stay until [`Stack::clear_groups`].
    pub fn set_owned(&mut self, owned: GroupSet) {
        self.owned = GroupSet(owned.0 & self.cfg.all_groups().0);
    }

    /// Run `cfg` from now on (a live reload): new VIPs are answered and new listeners take
    /// connections; a retired listener takes none, and every flow keeps its listener (a reload
    /// keeps the indices and appends). TCP parameters apply to connections made from now on.
    /// Whether VIPs were added (the caller announces them).
    pub fn reconfigure(&mut self, cfg: Arc<StackConfig>) -> bool {
        let added = cfg.vips.iter().any(|v| self.cfg.vip(v.addr).is_none());
        self.listener_groups = listener_groups(&cfg);
        self.owned = GroupSet(self.owned.0 & cfg.all_groups().0);
        self.checks.reconfigure(&cfg, self.now);
        self.cfg = cfg;
        added
    }

    /// The configuration this stack runs.
    pub fn config(&self) -> &Arc<StackConfig> {
        &self.cfg
    }

    /// The groups this stack serves now.
    pub fn owned(&self) -> GroupSet {
        self.owned
    }

    /// Whether the stack serves the group of VIP `ip` now.
    pub fn owns(&self, ip: Ipv4Addr) -> bool {
        self.cfg.group_of(ip).is_some_and(|g| self.owned.contains(g))
    }

    /// All groups (active) or none (standby): the pair of one group, as before groups.
    pub fn set_active(&mut self, active: bool) {
        self.set_owned(if active { self.cfg.all_groups() } else { GroupSet::NONE });
    }

    /// Whether the stack serves any group.
    pub fn is_active(&self) -> bool {
        !self.owned.is_empty()
    }

    /// Forget every flow (fenced or demoted: the peer now owns them). Not replicated: the new
    /// active's standby learns its flows through a join snapshot.
    pub fn clear_flows(&mut self) {
        self.clear_groups(GroupSet(u64::MAX));
        self.resync.clear();
        self.snapshot = None;
        self.rx_log.clear();
        self.open.clear();
        self.kicks.clear();
    }

    /// Forget the flows of the groups in `groups` (the peer now owns them), and nothing of
    /// the others'. A join snapshot in progress goes on without them (an image of a flow
    /// that is gone is skipped).
    pub fn clear_groups(&mut self, groups: GroupSet) {
        let cfg = self.cfg.clone();
        let of = |k: &FlowKey| k.local_ip.to_ipv4_mapped().and_then(|ip| cfg.group_of(ip)).is_none_or(|g| groups.contains(g));
        let ids: Vec<FlowId> = self.flows.iter().filter(|(_, k, _)| of(k)).map(|(id, _, _)| id).collect();
        if ids.is_empty() {
            return;
        }
        for id in ids {
            self.timers.cancel(id);
            if let Some(f) = self.flows.remove(id) {
                if let Some(l) = cfg.listeners.get(usize::from(f.listener)) {
                    f.svc.lifecycle(&l.spec, Lifecycle::closed(&f.tcb, f.quiet, self.now));
                }
                let s = f.tcb.state() as usize;
                self.counters.flows_by_state[s] = self.counters.flows_by_state[s].saturating_sub(1);
            }
        }
        let flows = &self.flows;
        self.resync.retain(|&id| flows.get(id).is_some());
        self.open.forget_gone(|id| flows.get(id).is_some());
        self.kicks.retain(|&id| flows.get(id).is_some());
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Counters with the services' counters folded in (for publishing).
    pub fn counters_mut(&mut self) -> &mut Counters {
        self.svc_stats.publish(&mut self.counters);
        &mut self.counters
    }

    pub fn flows(&self) -> &FlowTable<Flow> {
        &self.flows
    }

    /// The earliest pending timer, for the caller's idle sleep bound.
    pub fn next_timer(&self) -> Option<Instant> {
        let checks = (self.checks.runs() && self.is_active()).then_some(self.checks.next);
        self.timers.next_deadline_hint().into_iter().chain(self.arp.next_deadline()).chain(checks).min()
    }

    #[allow(clippy::too_many_arguments)]
    fn on_tcp<F: FrameSink + ?Sized>(
        &mut self,
        now: Instant,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        src_mac: MacAddr,
        vip_mac: MacAddr,
        segment: &[u8],
        tx: &mut F,
    ) {
        let pkt = match TcpPacket::new_checked(segment) {
            Ok(p) => p,
            Err(_) => return self.counters.drop(Drop::BadTcpHeader),
        };
        // Policy (DPDK-NOTES, veth offloads): verify every checksum; a partial one is its own
        // drop reason so an operator can spot a peer with TX offload on.
        match pkt.checksum_status(IpAddr::V4(src), IpAddr::V4(dst)) {
            ChecksumStatus::Valid => {}
            ChecksumStatus::Partial => return self.counters.drop(Drop::PartialTcpChecksum),
            ChecksumStatus::Invalid => return self.counters.drop(Drop::BadTcpChecksum),
        }
        let hdr = pkt.header();
        let payload = pkt.payload();
        let key = FlowKey::v4(src, hdr.src_port, dst, hdr.dst_port);
        let addrs = FrameAddrs { src_mac: vip_mac, dst_mac: src_mac, src_ip: dst, dst_ip: src, ttl: ipv4::DEFAULT_TTL, ip_id: 0 };

        if let Some(id) = self.flows.lookup(&key) {
            let verdict = self.flow_input(now, id, src_mac, &addrs, &hdr, payload, tx);
            if verdict != SegmentVerdict::SynInTimeWait {
                return;
            }
            // RFC 9293 §3.10.7.4 / RFC 6191: a new SYN may reopen a TIME-WAIT connection.
            self.close_flow(id);
        }
        self.on_unknown_flow(now, key, src_mac, vip_mac, &addrs, &hdr, payload.len(), tx);
    }

    /// A segment for an existing flow.
    #[allow(clippy::too_many_arguments)]
    fn flow_input<F: FrameSink + ?Sized>(
        &mut self,
        now: Instant,
        id: FlowId,
        src_mac: MacAddr,
        addrs: &FrameAddrs,
        hdr: &TcpHeader,
        payload: &[u8],
        tx: &mut F,
    ) -> SegmentVerdict {
        let cfg = self.cfg.clone();
        let partner = self.partner(id);
        let Some((_, flow, mut pflow)) = self.flows.get_key_value_and_other_mut(id, partner) else { return SegmentVerdict::Closed };
        if flow.link == Link::Orphan && hdr.flags.ack() && !hdr.flags.rst() {
            // Resumed without its link partner (`open`): it cannot go on. Its peer's ACK
            // names the one sequence number a reset must carry to be accepted.
            self.send_reset(addrs, hdr, payload.len(), tx);
            self.close_flow(id);
            return SegmentVerdict::Closed;
        }
        let catching_up = flow.unready || (flow.installed && now < self.grace_until);
        if catching_up && hdr.flags.ack() && !hdr.flags.rst() && hdr.ack.gt(flow.tcb.snd_max()) {
            // Beyond what the replica recorded as sent. Within what the service produced,
            // that is lagging progress replication (see `commit_tag`): catch up. Not only on
            // the first ACK: an older ACK still in flight may arrive first.
            let spec = &cfg.listeners[flow.listener as usize].spec;
            let tx_end = flow.svc.bind_linked(pflow.as_mut().map(|p| &mut p.svc), spec, &mut self.svc_stats).catch_up_end();
            if flow.tcb.catch_up_sent(hdr.ack, tx_end) {
                self.counters.event(Event::FlowsCaughtUp);
            }
        }
        if flow.unready && hdr.flags.ack() && !hdr.flags.rst() {
            if hdr.seq.gt(flow.tcb.rcv_nxt()) {
                // Its first word since the takeover says it sent bytes into the outage.
                self.counters.event(Event::FlowsClientAhead);
            }
            if hdr.ack.gt(flow.tcb.snd_max()) {
                // The client has seen bytes this replica never produced (async replication
                // lagged): the flow cannot resume. Say so now rather than let it hang.
                self.counters.event(Event::FlowsAbandoned);
                self.send_reset(addrs, hdr, payload.len(), tx);
                self.close_flow(id);
                return SegmentVerdict::Closed;
            }
            flow.unready = false;
        }
        let before_state = flow.tcb.state();
        let before = *flow.tcb.stats();
        let spec = &cfg.listeners[flow.listener as usize].spec;
        let mut out = TcpTx { sink: tx, addrs: *addrs, ip_id: &mut self.ip_id, frames: 0, failed: 0 };
        let verdict = {
            let inner = flow.svc.bind_linked(pflow.as_mut().map(|p| &mut p.svc), spec, &mut self.svc_stats);
            let mut svc = Recorder { inner, log: &mut self.rx_log };
            let v = flow.tcb.on_segment(now, &cfg.tcp, hdr, payload, &mut svc, &mut out);
            flow.tcb.poll_send(now, &cfg.tcp, &mut svc, &mut out);
            v
        };
        let (frames, failed) = (out.frames, out.failed);
        if verdict == SegmentVerdict::Accepted && flow.peer_mac != src_mac {
            // Re-learn the peer's MAC (it moved behind another switch port), but only from a
            // segment TCP accepted: a blind out-of-window segment must not redirect the flow.
            flow.peer_mac = src_mac;
            flow.tcb.dirty.insert(DirtyFlags::PEER);
        }
        match verdict {
            SegmentVerdict::Accepted | SegmentVerdict::SynInTimeWait | SegmentVerdict::SynAckRetransmitted => {}
            SegmentVerdict::ChallengeAck | SegmentVerdict::RstAccepted | SegmentVerdict::RstIgnored => {}
            SegmentVerdict::Closed => {}
            _ => self.counters.drop(Drop::TcpRejected),
        }
        self.after_tcp_call(id, before_state, &before, frames, failed);
        self.take_open(now, id, tx);
        self.poll_partner(now, id, tx);
        verdict
    }

    /// A segment that matched no flow: a SYN to a listener opens one; anything else gets the
    /// RFC 9293 §3.10.7.1 reset (never for a RST).
    #[allow(clippy::too_many_arguments)]
    fn on_unknown_flow<F: FrameSink + ?Sized>(
        &mut self,
        now: Instant,
        key: FlowKey,
        src_mac: MacAddr,
        vip_mac: MacAddr,
        addrs: &FrameAddrs,
        hdr: &TcpHeader,
        payload_len: usize,
        tx: &mut F,
    ) {
        let listener = self.cfg.listener_for(addrs.src_ip, hdr.dst_port);
        if listener.is_none() && !hdr.flags.syn() && !hdr.flags.rst() && now < self.grace_until {
            // After a takeover, to an ephemeral port: maybe a flow this engine opened whose
            // replica is still arriving, or a late segment of one that just ended. Never RST.
            return self.counters.drop(Drop::TakeoverGrace);
        }
        let Some(li) = listener else {
            self.counters.drop(Drop::NoService);
            return self.send_reset(addrs, hdr, payload_len, tx);
        };
        if !hdr.flags.syn() || hdr.flags.ack() || hdr.flags.rst() {
            if now < self.grace_until {
                // After a takeover: maybe a flow whose replica is still arriving. Never RST.
                return self.counters.drop(Drop::TakeoverGrace);
            }
            if hdr.flags.ack() && !hdr.flags.syn() && !hdr.flags.rst() {
                self.counters.drop(Drop::NoFlow);
            } else {
                self.counters.drop(Drop::BadSyn);
            }
            return self.send_reset(addrs, hdr, payload_len, tx);
        }
        if self.flows.len() >= self.flows.capacity() {
            // Table full: refuse new work, keep serving established flows (DESIGN §2).
            return self.counters.drop(Drop::FlowTableFull);
        }
        let cfg = self.cfg.clone();
        let isn = self.isn.isn(now, &addrs.src_ip.octets(), hdr.dst_port, &addrs.dst_ip.octets(), hdr.src_port);
        let mut out = TcpTx { sink: tx, addrs: *addrs, ip_id: &mut self.ip_id, frames: 0, failed: 0 };
        let mut svc = ServiceState::for_spec(&cfg.listeners[li].spec);
        let window = svc.syn_window(&cfg.listeners[li].spec, &mut self.svc_stats);
        let tcb = match Tcb::accept_with_window(now, &cfg.tcp, hdr, isn, window, &mut out) {
            Ok(t) => t,
            Err(TcpError::AckInListen) => {
                self.counters.drop(Drop::BadSyn);
                return self.send_reset(addrs, hdr, payload_len, tx);
            }
            Err(_) => return self.counters.drop(Drop::BadSyn),
        };
        let (frames, failed) = (out.frames, out.failed);
        let state = tcb.state();
        let deadline = tcb.next_deadline();
        let flow = Flow { tcb, svc, listener: li as u16, origin: Origin::Accepted, link: Link::None, peer_mac: src_mac, vip_mac, unready: false, installed: false, repl_seq: 0, una_seq: 0, needs_image: false, quiet: false, local: false };
        match self.flows.insert(key, flow) {
            Ok(id) => {
                self.counters.event(Event::FlowsOpened);
                self.counters.flows_by_state[state as usize] += 1;
                self.counters.add(Event::TxFrames, frames);
                self.counters.drops[Drop::TxNoMbuf as usize] += failed;
                self.replicate(id, true);
                self.schedule(id, deadline);
                self.open_partner(now, id, li, tx);
            }
            Err(_) => self.counters.drop(Drop::FlowTableFull),
        }
    }

    fn send_reset<F: FrameSink + ?Sized>(&mut self, addrs: &FrameAddrs, hdr: &TcpHeader, payload_len: usize, tx: &mut F) {
        let Some(rst) = reset_for(hdr, payload_len) else { return };
        let mut out = TcpTx { sink: tx, addrs: *addrs, ip_id: &mut self.ip_id, frames: 0, failed: 0 };
        let sent = out.emit(&rst, 0, &mut |_| {});
        self.count_tx(sent, Event::RstSent);
    }

    /// After a TCP call on flow `id` (state `s0` and stats `a` before it; `frames` sent,
    /// `failed` without an mbuf): fold its effects into the worker counters, then free the flow
    /// if TCP closed it, else replicate what changed and re-arm its timer.
    fn after_tcp_call(&mut self, id: FlowId, s0: State, a: &TcbStats, frames: u64, failed: u64) {
        let Some(flow) = self.flows.get(id) else { return };
        let (li, s1, b) = (flow.listener, flow.tcb.state(), *flow.tcb.stats());
        let (deadline, closed) = (flow.tcb.next_deadline(), flow.tcb.is_closed());
        let mut went_quiet = false;
        let c = &mut self.counters;
        let li = (li as usize).min(crate::counters::MAX_SERVICES - 1);
        c.svc_bytes_in[li] += b.bytes_in - a.bytes_in;
        c.svc_bytes_out[li] += b.bytes_out - a.bytes_out;
        if flow.installed && (s0 != s1 || b.rto_timeouts > a.rto_timeouts || b.rst_sent > a.rst_sent) {
            if let Some(k) = self.flows.key(id) {
                tracing::debug!(target: "flowtwin::resume", "state {}:{} {:?} -> {:?} una {} max {} rcv_nxt {} rexmit {} rto {} rst {}",
                    k.remote_ip, k.remote_port, s0, s1, flow.tcb.snd_una().0, flow.tcb.snd_max().0, flow.tcb.rcv_nxt().0, b.retransmits,
                    b.rto_timeouts, b.rst_sent);
            }
        }
        if s0 != s1 {
            c.flows_by_state[s0 as usize] = c.flows_by_state[s0 as usize].saturating_sub(1);
            c.flows_by_state[s1 as usize] += 1;
            if s0 == State::SynSent && s1 == State::Established {
                if let Some(l) = self.cfg.listeners.get(usize::from(flow.listener)) {
                    flow.svc.lifecycle(&l.spec, Lifecycle::Connected { now: self.now });
                }
            }
            if s1 == State::TimeWait && !flow.quiet {
                if let Some(l) = self.cfg.listeners.get(usize::from(flow.listener)) {
                    flow.svc.lifecycle(&l.spec, Lifecycle::Quiet);
                }
                went_quiet = true;
            }
        }
        c.add(Event::TxFrames, frames);
        c.drops[Drop::TxNoMbuf as usize] += failed;
        c.add(Event::Retransmits, b.retransmits - a.retransmits);
        c.add(Event::FastRetransmits, b.fast_retransmits - a.fast_retransmits);
        c.add(Event::OutOfOrderSegments, b.ooo_segments - a.ooo_segments);
        c.add(Event::ChallengeAcks, b.challenge_acks - a.challenge_acks);
        c.add(Event::PawsRejected, b.paws_rejects - a.paws_rejects);
        c.add(Event::OutOfWindow, b.out_of_window - a.out_of_window);
        c.add(Event::TimeWaitStaleAcks, b.time_wait_stale_acks - a.time_wait_stale_acks);
        c.add(Event::HeldAcksSuppressed, b.held_acks_suppressed - a.held_acks_suppressed);
        c.add(Event::SkippedBytes, b.skipped_in - a.skipped_in);
        c.add(Event::RstAccepted, b.rst_received - a.rst_received);
        c.add(Event::RstSent, b.rst_sent - a.rst_sent);
        let local = flow.local;
        if went_quiet {
            if let Some(f) = self.flows.get_mut(id) {
                f.quiet = true;
            }
        }
        if local {
            self.check_observe(id);
        }
        if closed {
            self.close_flow(id);
        } else {
            self.replicate(id, false);
            self.schedule(id, deadline);
        }
    }

    fn schedule(&mut self, id: FlowId, deadline: Option<Instant>) {
        match deadline {
            Some(d) => {
                self.timers.schedule(id, d);
            }
            None => {
                self.timers.cancel(id);
            }
        }
    }

    fn close_flow(&mut self, id: FlowId) {
        self.timers.cancel(id);
        self.rx_log.clear();
        let group = self.flow_group(id);
        let local = self.flows.get(id).is_some_and(|f| f.local);
        if let Some(r) = self.repl.as_mut().filter(|_| !local) {
            match r.emit_in(group, (id.index(), id.generation()), ReplEvent::Close) {
                // A closing flow's last output (its RST, a final ACK) goes after the close.
                Ok(seq) => self.touch_tag(seq, id),
                // The standby keeps a dead flow until its idle timeout; harmless, counted.
                Err(_) => self.counters.event(Event::ReplicationFull),
            }
        }
        self.resync.retain(|&r| r != id);
        self.unlink_closing(id);
        if let Some(f) = self.flows.get(id) {
            if let Some(l) = self.cfg.listeners.get(usize::from(f.listener)) {
                f.svc.lifecycle(&l.spec, Lifecycle::closed(&f.tcb, f.quiet, self.now));
            }
        }
        if let Some(f) = self.flows.remove(id) {
            let s = f.tcb.state() as usize;
            self.counters.flows_by_state[s] = self.counters.flows_by_state[s].saturating_sub(1);
            self.counters.event(Event::FlowsClosed);
        }
    }

    /// Run expired timers (RTO, delayed ACK, persist, TIME-WAIT, idle).
    pub fn poll<F: FrameSink + ?Sized>(&mut self, now: Instant, tx: &mut F) {
        self.now = self.now.max(now);
        self.poll_neighbors(now, tx);
        if !self.kicks.is_empty() {
            self.kick_waiting(now, tx);
        }
        if !self.open.wake.is_empty() {
            self.wake_survivors(now, tx);
        }
        if now >= self.checks.next {
            self.run_checks(now, tx);
        }
        let cfg = self.cfg.clone();
        while let Some(id) = self.timers.pop_expired(now) {
            let partner = self.partner(id);
            let Some((key, flow, mut pflow)) = self.flows.get_key_value_and_other_mut(id, partner) else { continue };
            let (remote, local) = match (key.remote_ip.to_ipv4_mapped(), key.local_ip.to_ipv4_mapped()) {
                (Some(r), Some(l)) => (r, l),
                _ => continue,
            };
            let addrs = FrameAddrs { src_mac: flow.vip_mac, dst_mac: flow.peer_mac, src_ip: local, dst_ip: remote, ttl: ipv4::DEFAULT_TTL, ip_id: 0 };
            let before_state = flow.tcb.state();
            let before = *flow.tcb.stats();
            let spec = &cfg.listeners[flow.listener as usize].spec;
            let mut out = TcpTx { sink: tx, addrs, ip_id: &mut self.ip_id, frames: 0, failed: 0 };
            {
                let inner = flow.svc.bind_linked(pflow.as_mut().map(|p| &mut p.svc), spec, &mut self.svc_stats);
                let mut svc = Recorder { inner, log: &mut self.rx_log };
                flow.tcb.on_timer(now, &cfg.tcp, &mut svc, &mut out);
            }
            let (frames, failed) = (out.frames, out.failed);
            self.after_tcp_call(id, before_state, &before, frames, failed);
            if frames > 0 {
                tx.seal(self.commit_tag(), now);
            }
            if let Some(p) = self.partner(id) {
                // What the timer changed may let the partner send (`linked`): its own seal.
                let sent = self.counters.get(Event::TxFrames);
                self.poll_linked(now, p, tx);
                if self.counters.get(Event::TxFrames) > sent {
                    tx.seal(self.commit_tag(), now);
                }
            }
        }
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;
    use crate::service::echo::EchoState;
    use crate::service::http::HttpState;

    /// Memory per flow is a figure operators judge us by (BENCHMARKS "memory per flow"). The
    /// flow table preallocates one `Flow` per slot plus its index; this pins the size so a
    /// change that bloats every flow is noticed.
    #[test]
    fn memory_per_flow_is_bounded() {
        let flow = std::mem::size_of::<Flow>();
        let tcb = std::mem::size_of::<Tcb>();
        let http = std::mem::size_of::<HttpState>();
        let echo = std::mem::size_of::<EchoState>();
        println!("size_of: Flow {flow} B (Tcb {tcb} B, HttpState {http} B, EchoState {echo} B)");
        // Issue 16: at most 1 KiB per flow slot (the TCB, the largest service state, the
        // flow's own fields), with nothing allocated per connection.
        assert!(flow <= 1024, "Flow grew to {flow} bytes");
        assert!(tcb <= 768, "Tcb grew to {tcb} bytes");
    }
}
