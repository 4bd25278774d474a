//! Flows the engine opens itself, and linked flows (DESIGN §7 "Proxy": two TCBs linked as
//! one unit, the backend side opened by the engine from an address of the group).
//!
//! **Active open** ([`Stack::connect`]). From one of our VIPs to `remote`, running the
//! service of one of the engine's listeners (the flow names it as a passive flow names its
//! listener, so the standby rebuilds it from the same config; [`Origin::Opened`] says the
//! engine opened it):
//! 1. a local port from the worker's [`EphemeralPorts`], chosen so that the reply reaches
//!    this worker ([`Stack::set_worker`]: its index and the [`ReplySteering`] the segments
//!    reach it by; default worker 0 of 1) and free for that remote address and port;
//! 2. the next hop: the gateway of the remote's route, or the remote itself on-link
//!    ([`crate::route`], `StackConfig::routes`; no route is [`ConnectError::NoRoute`]), and
//!    its MAC from the neighbour table ([`Stack::resolve`]; a reply another worker heard
//!    arrives through [`Stack::learn_neighbor`]). Known: the SYN leaves now. Being
//!    resolved: the flow exists at once in SYN-SENT with its SYN *held* ([`Tcb::syn_sent`]:
//!    no timer runs), the SYN leaves when the ARP reply arrives, and if the neighbour table
//!    gives up (`max_requests` unanswered) the flow ends, counted (`opens_next_hop_failed`);
//!    it never waits longer than that. A next hop that failed recently (hold-down), or one
//!    that too many frames already wait for, refuses the connect instead;
//! 3. an RFC 6528 ISN from the stack's generator, and the SYN of [`Tcb::send_syn_now`];
//! 4. replication: the flow's first image and its service image together (its service may
//!    hold output already: a proxy's buffered first request, DESIGN §7 delayed binding). The
//!    SYN is the caller's output and waits for both, like a SYN-ACK for its flow's creation.
//!
//! Every refusal is a [`ConnectError`] and a counter (`connect_*`).
//!
//! **Links** ([`Stack::link`]). Two flows of one worker become one unit:
//! - *output commit*: output of either half waits for the other half's latest replicated
//!   change too (`touch_tag` folds the partner's `repl_seq` into the tag): what one half
//!   sends may be what the other received;
//! - *replication*: each half's image names the other by slot (`FlowImage::link`, carried in
//!   `FlowNew`/`FlowUpdate`); linking is an identity change of both;
//! - *takeover*: the standby pairs the halves ([`crate::replica::pair_links`]) and installs
//!   both or neither ([`Stack::install_pair`], `iteration::resume`). A half without its
//!   partner is an orphan (`link_orphans`): not resumed while opening (its SYN-SENT), else
//!   installed and reset at its peer's first ACK with the sequence number that ACK names (an
//!   exact RFC 5961 §3.2 match the peer accepts), never left waiting for a partner that is
//!   not coming (its TCP timers bound it even if the peer stays silent);
//! - *ends*: when one half ends, the link is gone and the other is told: a [`LinkEvent`] in a
//!   queue the (future proxy) service drains with [`Stack::take_link_event`], bounded at one
//!   event per flow of the table (`link_events_dropped` beyond).
//!
//! `connect`, `link` and `take_link_event` are called between the stack's packet calls (not
//! from inside a TCP call: the bytes a service consumes during one are replicated as that
//! flow's, and are checked to be none here).

use std::collections::VecDeque;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

use super::{Flow, FrameSink, Stack, TcpTx};
use crate::counters::Event;
use crate::ephemeral::{EphemeralConfig, EphemeralPorts, PortError, ReplySteering, Steering};
use crate::flow::{FlowId, FlowKey};
use crate::neighbor::Resolve;
use crate::replica::Origin;
use crate::service::ServiceState;
use crate::group::{GroupId, MAX_GROUPS};
use crate::tcp::isn::{GroupSecrets, IsnGenerator, SipHasher24};
use crate::tcp::{DirtyFlags, State, Tcb};
use crate::time::Instant;
use crate::wire::ethernet::MacAddr;
use crate::wire::ipv4;
use crate::wire::tcp::FrameAddrs;

/// A flow's link to another flow of the same worker.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum Link {
    #[default]
    None,
    /// One half of a pair; the other half.
    Partner(FlowId),
    /// Installed at takeover without its partner: reset at its peer's first ACK.
    Orphan,
}

/// How the other half of a pair ended (see [`LinkEvent`]); the service's [`LinkEnd`].
pub use crate::service::LinkEnd as PartnerEnd;

impl PartnerEnd {
    fn of(tcb: &Tcb) -> PartnerEnd {
        let s = tcb.stats();
        if !tcb.syn_acked() {
            PartnerEnd::NeverConnected
        } else if s.rst_received + s.rst_sent + s.retransmit_aborts + s.idle_timeouts > 0 {
            PartnerEnd::Reset
        } else {
            PartnerEnd::Closed
        }
    }
}

/// The partner of `flow` ended; `flow` is no longer linked.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct LinkEvent {
    pub flow: FlowId,
    pub end: PartnerEnd,
}

/// Why [`Stack::connect`] opened nothing. Each is counted (`connect_*`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ConnectError {
    /// This engine does not own the source VIP's group (it stands by for it).
    NotActive,
    /// The source is not one of our VIPs.
    NoVip(Ipv4Addr),
    /// No listener with this index.
    NoService(u16),
    /// The service state given is of another kind than the listener's spec.
    ServiceKind { spec: &'static str, state: &'static str },
    /// The remote is not a unicast host (0.0.0.0, broadcast, multicast, loopback, one of our
    /// VIPs), or its port is 0.
    BadRemote(SocketAddrV4),
    /// No route reaches the remote: it is in no on-link subnet and no route covers it.
    NoRoute(Ipv4Addr),
    /// Called from inside a TCP call of another flow (see the module documentation).
    Reentrant,
    /// No free local port reaches this worker (or the worker is not one of the steering's).
    Ports(PortError),
    /// The flow table is full.
    TableFull,
    /// The next hop cannot be used now ([`Resolve::Failed`], `QueueFull` or `TableFull`).
    NextHopDown(Resolve),
}

impl ConnectError {
    fn event(&self) -> Event {
        match self {
            ConnectError::NotActive => Event::ConnectNotActive,
            ConnectError::NoVip(_) => Event::ConnectNoVip,
            ConnectError::Ports(PortError::Exhausted { .. }) => Event::ConnectPortsExhausted,
            ConnectError::TableFull => Event::ConnectTableFull,
            ConnectError::NextHopDown(_) => Event::ConnectNextHopDown,
            ConnectError::NoRoute(_) => Event::ConnectNoRoute,
            ConnectError::NoService(_)
            | ConnectError::ServiceKind { .. }
            | ConnectError::BadRemote(_)
            | ConnectError::Reentrant
            | ConnectError::Ports(_) => Event::ConnectInvalid,
        }
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::NotActive => f.write_str("this engine stands by for the source address's group: it opens no connection from it"),
            ConnectError::NoVip(ip) => write!(f, "{ip} is not one of this engine's VIPs"),
            ConnectError::NoService(l) => write!(f, "no listener {l} in this engine's config"),
            ConnectError::ServiceKind { spec, state } => {
                write!(f, "a {state} service state cannot run on a listener of kind {spec}")
            }
            ConnectError::BadRemote(r) => write!(f, "{r} is not a unicast host address and port"),
            ConnectError::NoRoute(ip) => write!(f, "no route to {ip} (in no VIP's subnet, and no [[route]] covers it)"),
            ConnectError::Reentrant => f.write_str("connect or link called from inside a TCP call"),
            ConnectError::Ports(e) => write!(f, "no local port: {e}"),
            ConnectError::TableFull => f.write_str("flow table full"),
            ConnectError::NextHopDown(r) => write!(f, "next hop unusable now ({r:?})"),
        }
    }
}

impl std::error::Error for ConnectError {}

/// Why [`Stack::link`] linked nothing.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LinkError {
    /// A flow cannot be linked to itself.
    Same,
    /// No such (live) flow.
    NoFlow(FlowId),
    /// The flow is linked already.
    Linked(FlowId),
    /// Called from inside a TCP call.
    Reentrant,
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::Same => f.write_str("a flow cannot be linked to itself"),
            LinkError::NoFlow(id) => write!(f, "no flow {id:?}"),
            LinkError::Linked(id) => write!(f, "flow {id:?} is linked already"),
            LinkError::Reentrant => f.write_str("link called from inside a TCP call"),
        }
    }
}

impl std::error::Error for LinkError {}

/// The key of the worker's ephemeral-port secret (RFC 6056 §3.3.3's F), derived from the ISN
/// secret under its own label: a PRF output, not the ISN key itself.
fn ephemeral_key(isn_key: &[u8; 16]) -> [u8; 16] {
    let half = |label: &[u8]| {
        let mut h = SipHasher24::new(isn_key);
        h.write(label);
        h.finish().to_le_bytes()
    };
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&half(b"flowtwin ephemeral port key, low"));
    k[8..].copy_from_slice(&half(b"flowtwin ephemeral port key, high"));
    k
}

/// A worker's state for the flows it opens and links.
pub(super) struct Opener {
    worker: usize,
    ports_cfg: EphemeralConfig,
    ports: EphemeralPorts<ReplySteering>,
    /// Opened flows whose SYN waits for the next hop, and the address being resolved.
    waiting: Vec<(FlowId, Ipv4Addr)>,
    events: VecDeque<LinkEvent>,
    /// Survivors of a pair whose partner ended, to be reset (`true`) or polled in the next
    /// `Stack::poll` (`linked`).
    pub(super) wake: Vec<(FlowId, bool)>,
    /// The ISN/TSval generators of opened connections, one per group, from
    /// `StackConfig::open_secrets` as of generation `secrets_seen`.
    secrets: Vec<IsnGenerator>,
    secrets_seen: u64,
    /// Wall-clock µs at engine time zero (`Stack::set_wall_clock`): the clock of opened
    /// connections' ISNs and TSvals, which both engines of a pair share.
    wall_us: u64,
}

impl Opener {
    pub(super) fn new(isn_key: &[u8; 16], secrets: &GroupSecrets) -> Opener {
        let ports_cfg = EphemeralConfig::new(ephemeral_key(isn_key));
        let mut o = Opener {
            worker: 0,
            ports_cfg,
            ports: EphemeralPorts::new(ports_cfg, ReplySteering::default()),
            waiting: Vec::new(),
            events: VecDeque::new(),
            wake: Vec::new(),
            secrets: Vec::new(),
            secrets_seen: 0,
            wall_us: 0,
        };
        o.refresh_secrets(secrets);
        o
    }

    /// Re-read the groups' secrets if a standby adopted its active's since the last look (a
    /// relaxed atomic load per opened connection otherwise).
    fn refresh_secrets(&mut self, secrets: &GroupSecrets) {
        let g = secrets.generation();
        if g != self.secrets_seen || self.secrets.is_empty() {
            self.secrets = (0..MAX_GROUPS).map(|i| IsnGenerator::new(secrets.get(GroupId(i as u8)))).collect();
            self.secrets_seen = g;
        }
    }

    pub(super) fn clear(&mut self) {
        self.waiting.clear();
        self.events.clear();
        self.wake.clear();
    }

    /// Forget the opens waiting for a next hop whose flow is gone (its group was cleared).
    pub(super) fn forget_gone(&mut self, alive: impl Fn(FlowId) -> bool) {
        self.waiting.retain(|&(id, _)| alive(id));
        self.wake.retain(|&(id, _)| alive(id));
    }
}

impl Stack {
    /// This stack is worker `worker` of the workers `steering` spreads segments over (the
    /// default: worker 0 of 1). Ports it chooses for [`Stack::connect`] reach it.
    pub fn set_worker(&mut self, worker: usize, steering: impl Into<ReplySteering>) -> Result<(), PortError> {
        let steering = steering.into();
        let workers = steering.workers();
        if worker >= workers {
            return Err(PortError::NoSuchWorker { worker, workers });
        }
        self.open.worker = worker;
        self.open.ports = EphemeralPorts::new(self.open.ports_cfg, steering);
        Ok(())
    }

    /// Engine time zero is wall-clock `wall_us` µs (since the Unix epoch): the ISNs and
    /// TSvals of the connections this stack opens count on that clock, which both engines of
    /// a pair share (to within NTP's error), so that one engine's connections follow the
    /// other's on a reused 4-tuple (see `GroupSecrets`). Default 0: engine time itself
    /// (tests, simulations).
    pub fn set_wall_clock(&mut self, wall_us: u64) {
        self.open.wall_us = wall_us;
    }

    /// The local port range, secret and search bound of [`Stack::connect`] (default: Linux's
    /// range, a secret derived from the ISN secret, the whole range).
    pub fn set_ephemeral(&mut self, cfg: EphemeralConfig) {
        let steering = self.open.ports.steering().clone();
        self.open.ports_cfg = cfg;
        self.open.ports = EphemeralPorts::new(cfg, steering);
    }

    /// The ephemeral port chooser (its range, steering and counters).
    pub fn ephemeral_ports(&self) -> &EphemeralPorts<ReplySteering> {
        &self.open.ports
    }

    /// Open a connection from `from` (one of our VIPs) to `remote`, running a fresh instance of
    /// the service of listener `listener`. See [`Stack::connect_with`].
    pub fn connect<F: FrameSink + ?Sized>(
        &mut self,
        now: Instant,
        from: Ipv4Addr,
        remote: SocketAddrV4,
        listener: u16,
        tx: &mut F,
    ) -> Result<FlowId, ConnectError> {
        let Some(l) = self.cfg.listeners.get(usize::from(listener)) else {
            self.counters.event(Event::ConnectInvalid);
            return Err(ConnectError::NoService(listener));
        };
        let svc = ServiceState::for_spec(&l.spec);
        self.connect_with(now, from, remote, listener, svc, tx)
    }

    /// Open a connection from `from` to `remote` whose service is `svc` (of the kind of
    /// listener `listener`'s spec, which it is bound with; it may hold output already). The
    /// SYN (and any ARP request) goes to `tx` and is this call's output: a caller that holds
    /// output for the standby seals it now (as `Iteration` does after each received frame).
    /// Returns the new flow, in SYN-SENT (its SYN sent, or held until the next hop resolves).
    pub fn connect_with<F: FrameSink + ?Sized>(
        &mut self,
        now: Instant,
        from: Ipv4Addr,
        remote: SocketAddrV4,
        listener: u16,
        svc: ServiceState,
        tx: &mut F,
    ) -> Result<FlowId, ConnectError> {
        self.open_counted(now, from, remote, listener, svc, false, tx)
    }

    /// [`Stack::connect_with`] of a *local* flow (`Flow::local`: never replicated; an active
    /// health check).
    pub(super) fn connect_local<F: FrameSink + ?Sized>(
        &mut self,
        now: Instant,
        from: Ipv4Addr,
        remote: SocketAddrV4,
        listener: u16,
        svc: ServiceState,
        tx: &mut F,
    ) -> Result<FlowId, ConnectError> {
        self.open_counted(now, from, remote, listener, svc, true, tx)
    }

    #[allow(clippy::too_many_arguments)]
    fn open_counted<F: FrameSink + ?Sized>(
        &mut self,
        now: Instant,
        from: Ipv4Addr,
        remote: SocketAddrV4,
        listener: u16,
        svc: ServiceState,
        local: bool,
        tx: &mut F,
    ) -> Result<FlowId, ConnectError> {
        let r = self.open_flow(now, from, remote, listener, svc, local, tx);
        match &r {
            Ok(_) => self.counters.event(Event::ActiveOpens),
            Err(e) => self.counters.event(e.event()),
        }
        r
    }

    #[allow(clippy::too_many_arguments)]
    fn open_flow<F: FrameSink + ?Sized>(
        &mut self,
        now: Instant,
        from: Ipv4Addr,
        remote: SocketAddrV4,
        listener: u16,
        svc: ServiceState,
        local: bool,
        tx: &mut F,
    ) -> Result<FlowId, ConnectError> {
        let vip_mac = self.vip_mac(from).ok_or(ConnectError::NoVip(from))?;
        // Only the owner of the source address's group opens from it (its standby would
        // answer nothing the reply brings).
        if !self.owns(from) {
            return Err(ConnectError::NotActive);
        }
        if !self.rx_log.is_empty() {
            return Err(ConnectError::Reentrant);
        }
        let cfg = self.cfg.clone();
        let l = cfg.listeners.get(usize::from(listener)).ok_or(ConnectError::NoService(listener))?;
        if l.spec.kind_name() != svc.kind_name() {
            return Err(ConnectError::ServiceKind { spec: l.spec.kind_name(), state: svc.kind_name() });
        }
        let (rip, rport) = (*remote.ip(), remote.port());
        if rport == 0 || rip.is_unspecified() || rip.is_broadcast() || rip.is_multicast() || rip.is_loopback() || self.vip_mac(rip).is_some() {
            return Err(ConnectError::BadRemote(remote));
        }
        let hop = cfg.routes.next_hop(rip).ok_or(ConnectError::NoRoute(rip))?;
        if self.flows.len() >= self.flows.capacity() {
            return Err(ConnectError::TableFull);
        }
        // Free: no flow of this 4-tuple, and not a listener's port (its SYNs are not ours).
        let flows = &self.flows;
        let in_use = |p: u16| {
            flows.lookup(&FlowKey::v4(rip, rport, from, p)).is_some() || cfg.listeners.iter().any(|l| l.vip == from && l.port == p)
        };
        let lport = self.open.ports.choose(self.open.worker, from, rip, rport, in_use).map_err(ConnectError::Ports)?;
        // Last: a miss sends an ARP request and counts the SYN as held for it.
        let next_hop = match self.resolve(now, from, hop, tx) {
            Resolve::Known(mac) => Some(mac),
            Resolve::Pending | Resolve::SendRequest => None,
            r => return Err(ConnectError::NextHopDown(r)),
        };
        // ISN on the pair's clock and the group's secret (`GroupSecrets`), TSval the wall
        // clock's ms: a 4-tuple the peer engine (or this one before a restart) used moments
        // ago still gets a newer TSval, and, from the pair, a newer ISN.
        self.open.refresh_secrets(&cfg.open_secrets);
        let gen = &self.open.secrets[usize::from(cfg.group_of(from).unwrap_or(GroupId::DEFAULT).0) % MAX_GROUPS];
        let wall = Instant(now.0.wrapping_add(self.open.wall_us));
        let isn = gen.isn(wall, &from.octets(), lport, &rip.octets(), rport);
        let mut tcb = Tcb::syn_sent(now, &cfg.tcp, lport, rport, isn);
        // The timestamp clock is the wall clock itself, not offset per 4-tuple (Linux's
        // `secure_tcp_ts_off`): a per-tuple offset keyed by a secret that dies with the
        // process sent half of the reuses backwards after a restart of both engines (a
        // backend's TIME-WAIT holds the old TSval), and hiding the wall clock hides nothing
        // (RFC 7323 §7.1 is about uptime).
        tcb.set_ts_offset((self.open.wall_us / 1000) as u32);
        let mut svc = svc;
        tcb.set_syn_window(svc.syn_window(&l.spec, &mut self.svc_stats));
        if let Some(n) = svc.syn_retries(&l.spec) {
            tcb.set_syn_retries(n);
        }
        let flow = Flow {
            tcb,
            svc,
            listener,
            origin: Origin::Opened,
            link: Link::None,
            peer_mac: next_hop.unwrap_or(MacAddr::ZERO),
            vip_mac,
            unready: false,
            installed: false,
            repl_seq: 0,
            una_seq: 0,
            needs_image: false,
            quiet: false,
            local,
        };
        // Cannot fail: the table has room and the 4-tuple is free (checked above).
        let id = self.flows.insert(FlowKey::v4(rip, rport, from, lport), flow).map_err(|_| ConnectError::TableFull)?;
        self.counters.event(Event::FlowsOpened);
        self.counters.flows_by_state[State::SynSent as usize] += 1;
        self.replicate_opened(id);
        match next_hop {
            Some(_) => self.send_held_syn(now, id, tx),
            None => self.open.waiting.push((id, hop)),
        }
        Ok(id)
    }

    /// An opened flow's creation: its first image and its service image (`New` + `SvcImage`,
    /// as for a join snapshot); a full ring re-images it later and holds output meanwhile.
    fn replicate_opened(&mut self, id: FlowId) {
        let mut local = false;
        if let Some(f) = self.flows.get_mut(id) {
            f.tcb.dirty.take();
            local = f.local;
        }
        if self.repl.is_none() || local || self.emit_full_image(id) {
            return;
        }
        self.counters.event(Event::ReplicationFull);
        if let Some(f) = self.flows.get_mut(id) {
            f.needs_image = true;
        }
        if !self.resync.contains(&id) {
            self.resync.push(id);
        }
    }

    /// Send an opened flow's SYN to its next hop (`peer_mac`) and arm its retransmission.
    fn send_held_syn<F: FrameSink + ?Sized>(&mut self, now: Instant, id: FlowId, tx: &mut F) {
        let cfg = self.cfg.clone();
        let Some((key, flow)) = self.flows.get_key_value_mut(id) else { return };
        let (Some(remote), Some(local)) = (key.remote_ip.to_ipv4_mapped(), key.local_ip.to_ipv4_mapped()) else { return };
        let addrs = FrameAddrs { src_mac: flow.vip_mac, dst_mac: flow.peer_mac, src_ip: local, dst_ip: remote, ttl: ipv4::DEFAULT_TTL, ip_id: 0 };
        let mut out = TcpTx { sink: tx, addrs, ip_id: &mut self.ip_id, frames: 0, failed: 0 };
        flow.tcb.send_syn_now(now, &cfg.tcp, &mut out);
        let (frames, failed, seq) = (out.frames, out.failed, flow.repl_seq);
        let deadline = flow.tcb.next_deadline();
        self.counters.add(Event::TxFrames, frames);
        self.counters.drops[crate::counters::Drop::TxNoMbuf as usize] += failed;
        self.schedule(id, deadline);
        // The SYN waits for the flow's creation (and its next hop) to be replicated.
        self.touch_tag(seq, id);
    }

    /// Takeover of a flow that was opening (SYN-SENT): send its SYN again, unchanged, to the
    /// next hop the replica names, or resolve it first if the old active was still
    /// resolving it (the flow ends, counted, if that fails, or if no route reaches it).
    pub(super) fn resume_open<F: FrameSink + ?Sized>(&mut self, now: Instant, id: FlowId, tx: &mut F) {
        let (Some(key), Some(f)) = (self.flows.key(id), self.flows.get(id)) else { return };
        if f.peer_mac != MacAddr::ZERO {
            return self.send_held_syn(now, id, tx);
        }
        let (Some(remote), Some(local)) = (key.remote_ip.to_ipv4_mapped(), key.local_ip.to_ipv4_mapped()) else { return };
        let hop = self.cfg.routes.next_hop(remote);
        match hop.map(|hop| (hop, self.resolve(now, local, hop, tx))) {
            Some((_, Resolve::Known(mac))) => {
                if let Some(f) = self.flows.get_mut(id) {
                    f.peer_mac = mac;
                }
                self.send_held_syn(now, id, tx);
            }
            Some((hop, Resolve::Pending | Resolve::SendRequest)) => {
                // The restored SYN-SENT retransmission timer must not send to no next hop.
                self.timers.cancel(id);
                self.open.waiting.push((id, hop));
            }
            _ => {
                self.counters.event(Event::OpensNextHopFailed);
                self.close_flow(id);
            }
        }
    }

    /// Next hop `ip` resolved to `mac` (an ARP packet answered our request, heard here or by
    /// another worker): the SYNs that waited for it leave, after the update that records
    /// their next hop (they wait for it).
    pub(super) fn next_hop_resolved<F: FrameSink + ?Sized>(&mut self, now: Instant, ip: Ipv4Addr, mac: MacAddr, tx: &mut F) {
        while let Some(i) = self.open.waiting.iter().position(|&(_, at)| at == ip) {
            let (id, _) = self.open.waiting.swap_remove(i);
            let Some(f) = self.flows.get_mut(id) else { continue };
            if f.tcb.state() != State::SynSent {
                continue; // a segment of its peer moved it on meanwhile (simultaneous open)
            }
            f.peer_mac = mac;
            f.tcb.dirty.insert(DirtyFlags::PEER);
            self.replicate(id, false);
            self.send_held_syn(now, id, tx);
        }
    }

    /// Resolution of `ip` failed: the flows whose SYN waited for it end (counted).
    pub(super) fn next_hop_failed(&mut self, ip: Ipv4Addr) {
        while let Some(i) = self.open.waiting.iter().position(|&(_, at)| at == ip) {
            let (id, _) = self.open.waiting.swap_remove(i);
            if self.flows.get(id).is_some_and(|f| f.tcb.state() == State::SynSent) {
                self.counters.event(Event::OpensNextHopFailed);
                self.close_flow(id);
            }
        }
    }

    /// Link `a` and `b` into one unit (see the module documentation). Both must be live and
    /// unlinked. The link is replicated at once (an update of each).
    pub fn link(&mut self, a: FlowId, b: FlowId) -> Result<(), LinkError> {
        if a == b {
            return Err(LinkError::Same);
        }
        if !self.rx_log.is_empty() {
            return Err(LinkError::Reentrant);
        }
        for id in [a, b] {
            match self.flows.get(id) {
                None => return Err(LinkError::NoFlow(id)),
                Some(f) if f.link != Link::None => return Err(LinkError::Linked(id)),
                Some(_) => {}
            }
        }
        for (id, other) in [(a, b), (b, a)] {
            if let Some(f) = self.flows.get_mut(id) {
                f.link = Link::Partner(other);
                f.tcb.dirty.insert(DirtyFlags::LINK);
            }
        }
        self.counters.event(Event::FlowsLinked);
        self.replicate(a, false);
        self.replicate(b, false);
        Ok(())
    }

    /// The partner of flow `id`, if it is one half of a pair.
    pub fn partner(&self, id: FlowId) -> Option<FlowId> {
        match self.flows.get(id)?.link {
            Link::Partner(p) => Some(p),
            _ => None,
        }
    }

    /// The oldest link event not taken yet: the partner of a linked flow ended.
    pub fn take_link_event(&mut self) -> Option<LinkEvent> {
        self.open.events.pop_front()
    }

    fn push_link_event(&mut self, ev: LinkEvent) {
        if self.open.events.len() >= self.flows.capacity() {
            self.open.events.pop_front();
            self.counters.event(Event::LinkEventsDropped);
        }
        self.open.events.push_back(ev);
    }

    /// Flow `id` is closing: its partner, if any, is unlinked and told.
    pub(super) fn unlink_closing(&mut self, id: FlowId) {
        let Some(f) = self.flows.get(id) else { return };
        let Link::Partner(p) = f.link else { return };
        let end = PartnerEnd::of(&f.tcb);
        let Some(pf) = self.flows.get_mut(p) else { return };
        if pf.link != Link::Partner(id) {
            return;
        }
        pf.link = Link::None;
        // Its next image says so (the standby unlinks it on this flow's close already).
        pf.tcb.dirty.insert(DirtyFlags::LINK);
        self.counters.event(Event::LinkPartnerEnded);
        self.partner_closing(id, p, end);
        self.push_link_event(LinkEvent { flow: p, end });
    }

    /// The replicated change the output of flow `id` must also wait for: its partner's.
    pub(super) fn partner_seq(&self, id: FlowId) -> u64 {
        match self.flows.get(id).map(|f| f.link) {
            Some(Link::Partner(p)) => self.flows.get(p).map_or(0, |f| f.repl_seq.max(f.una_seq)),
            _ => 0,
        }
    }

    /// Takeover: install a linked pair, both or neither (neither if the table has no room
    /// for both, or one of them could not be installed at all). Returns whether both were.
    ///
    /// Each half's service is bound with the other's while it is restored (a proxy half's
    /// output is its partner's input), learns what the partner's peer acknowledged
    /// (`Kind::resume_linked`), and both are probed once linked.
    pub fn install_pair<F: FrameSink + ?Sized>(&mut self, now: Instant, a: crate::replica::ShadowFlow, b: crate::replica::ShadowFlow, tx: &mut F) -> bool {
        let room = self.flows.capacity() - self.flows.len() >= 2;
        if !(room && self.installable(&a) && self.installable(&b)) || a.image.key == b.image.key {
            return false;
        }
        let cfg = self.cfg.clone();
        let (mut a, mut b) = (a, b);
        a.deliver_fin(&cfg);
        b.deliver_fin(&cfg);
        let (a_acked, b_acked) = (a.image.tcb.tx_acked, b.image.tcb.tx_acked);
        let spec_of = |sh: &crate::replica::ShadowFlow| cfg.listeners.get(usize::from(sh.image.listener)).map(|l| &l.spec);
        if let (Some(sa), Some(sb)) = (spec_of(&a), spec_of(&b)) {
            a.svc.resume_linked(sa, b_acked);
            b.svc.resume_linked(sb, a_acked);
        }
        let a_closed = self.replica_closed_at(&cfg, &mut a, Some(&mut b.svc));
        let b_closed = self.replica_closed_at(&cfg, &mut b, Some(&mut a.svc));
        let ia = self.install_flow(now, a, Link::None, a_closed, false, tx);
        let ib = self.install_flow(now, b, Link::None, b_closed, false, tx);
        let (Some(ia), Some(ib)) = (ia, ib) else {
            return false; // not reached: both were checked installable
        };
        for (id, other) in [(ia, ib), (ib, ia)] {
            if let Some(f) = self.flows.get_mut(id) {
                // A later standby learns the link with the flows' join images.
                f.link = Link::Partner(other);
            }
        }
        self.kick(now, ia, tx);
        self.kick(now, ib, tx);
        true
    }

    /// Whether `install_flow` would install `sh` (its listener, IPv4 key, a free key).
    fn installable(&self, sh: &crate::replica::ShadowFlow) -> bool {
        let k = &sh.image.key;
        self.cfg.listeners.get(usize::from(sh.image.listener)).is_some()
            && k.remote_ip.to_ipv4_mapped().is_some()
            && k.local_ip.to_ipv4_mapped().is_some()
            && self.flows.lookup(k).is_none()
    }

    /// An orphan half was installed (takeover): count it and tell its service.
    pub(super) fn orphan_installed(&mut self, id: FlowId) {
        self.counters.event(Event::LinkOrphans);
        self.push_link_event(LinkEvent { flow: id, end: PartnerEnd::Lost });
    }
}
