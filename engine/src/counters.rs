//! Worker counters: every drop has a reason, every reason a counter.
//!
//! A worker increments plain `u64`s in its own [`Counters`] (no atomics on the packet path)
//! and publishes a copy into its [`SharedCounters`] slot every few milliseconds with Relaxed
//! stores (single writer); the metrics thread sums the slots. Staleness of a few ms is fine.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! reasons {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident => $s:literal,)* }) => {
        $(#[$m])*
        #[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
        #[repr(usize)]
        pub enum $name { $($(#[$vm])* $v,)* }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$v,)*];
            pub const COUNT: usize = [$($name::$v,)*].len();
            /// The label value used in metrics.
            pub fn as_str(self) -> &'static str { match self { $($name::$v => $s,)* } }
        }
    };
}

reasons! {
    /// Why a received frame was dropped.
    Drop {
        /// Not even an Ethernet header.
        RuntFrame => "runt_frame",
        /// Multi-segment mbuf (jumbo/scattered RX): not parsed.
        MultiSegment => "multi_segment",
        /// Source MAC is a group (multicast/broadcast) address: never learned as a peer.
        BadSourceMac => "bad_source_mac",
        /// Ethertype we do not handle (IPv6, VLAN-tagged, LLDP, ...).
        OtherEthertype => "other_ethertype",
        /// Unicast to a MAC that is not one of our VIP MACs or the port MAC.
        NotOurMac => "not_our_mac",
        /// ARP that is malformed or not Ethernet/IPv4.
        BadArp => "bad_arp",
        /// ARP for an address we do not own (normal on a shared segment).
        ArpNotForUs => "arp_not_for_us",
        /// IPv4 header invalid (version, IHL, lengths).
        BadIpv4Header => "bad_ipv4_header",
        /// IPv4 header checksum wrong.
        BadIpv4Checksum => "bad_ipv4_checksum",
        /// IPv4 fragment (we never reassemble).
        Ipv4Fragment => "ipv4_fragment",
        /// IPv4 options present.
        Ipv4Options => "ipv4_options",
        /// TTL 0 (a router should not have forwarded it).
        BadTtl => "bad_ttl",
        /// IPv4 destination is not a VIP.
        NotOurIp => "not_our_ip",
        /// Source address is not a unicast host (broadcast, multicast, 0.0.0.0, loopback).
        BadSourceAddress => "bad_source_address",
        /// IP protocol we do not serve (UDP, ...).
        OtherProtocol => "other_protocol",
        /// ICMP other than a valid echo request.
        IcmpIgnored => "icmp_ignored",
        /// TCP header invalid (data offset) or options malformed.
        BadTcpHeader => "bad_tcp_header",
        /// TCP checksum wrong.
        BadTcpChecksum => "bad_tcp_checksum",
        /// TCP checksum holds only the pseudo-header sum: the sender had TX checksum offload on
        /// (e.g. a Linux veth peer) and nothing filled it in.
        PartialTcpChecksum => "partial_tcp_checksum",
        /// An ARP whose sender address is one of our VIPs: another engine announcing it
        /// (see the `vip_claims_seen` event) or an address conflict. Never answered or learned.
        ArpFromOurVip => "arp_from_our_vip",
        /// TCP to a VIP port with no service.
        NoService => "no_service",
        /// Segment for no flow that is not a SYN (answered with RST unless in takeover grace).
        NoFlow => "no_flow",
        /// SYN refused: flow table full.
        FlowTableFull => "flow_table_full",
        /// SYN that is malformed (SYN+FIN, RST/ACK to a listener without a flow...).
        BadSyn => "bad_syn",
        /// Segment refused by the TCP state machine (out of window, PAWS, bad ACK, ...).
        TcpRejected => "tcp_rejected",
        /// No mbuf for an output frame.
        TxNoMbuf => "tx_no_mbuf",
        /// The driver did not take a frame (TX ring full): freed.
        TxFull => "tx_full",
        /// Received for a group this engine stands by for (or while it owns none): its
        /// owner answers, not us.
        Standby => "standby",
        /// Segment of an unknown flow during the takeover grace period: dropped, never reset
        /// (it may belong to a flow whose replica is still being installed).
        TakeoverGrace => "takeover_grace",
        /// Software distribution: a packet (or frame) for another worker did not fit in the
        /// handoff ring between the two workers: freed, never blocked on.
        HandoffRingFull => "handoff_ring_full",
    }
}

impl Drop {
    /// Whether drops of this reason deserve an operator's warning (rate-limited, from the
    /// reporting thread, never the packet path): input that is malformed or hostile, a peer
    /// misconfigured, or the engine out of a resource. The others are what a shared segment
    /// and the internet send anyway (other hosts' traffic, scans, late segments) or what a
    /// standby and a takeover drop by design (`arp_from_our_vip`: the peer's announcements at
    /// every takeover and failback): counted, not worth a line.
    pub fn warns(self) -> bool {
        match self {
            Drop::RuntFrame
            | Drop::MultiSegment
            | Drop::BadSourceMac
            | Drop::BadArp
            | Drop::BadIpv4Header
            | Drop::BadIpv4Checksum
            | Drop::Ipv4Fragment
            | Drop::Ipv4Options
            | Drop::BadTtl
            | Drop::BadSourceAddress
            | Drop::BadTcpHeader
            | Drop::BadTcpChecksum
            | Drop::PartialTcpChecksum
            | Drop::FlowTableFull
            | Drop::BadSyn
            | Drop::TxNoMbuf
            | Drop::TxFull
            | Drop::HandoffRingFull => true,
            Drop::OtherEthertype
            | Drop::NotOurMac
            | Drop::ArpNotForUs
            | Drop::NotOurIp
            | Drop::OtherProtocol
            | Drop::IcmpIgnored
            | Drop::NoService
            | Drop::NoFlow
            | Drop::TcpRejected
            | Drop::ArpFromOurVip
            | Drop::Standby
            | Drop::TakeoverGrace => false,
        }
    }
}

reasons! {
    /// Events worth counting that are not drops.
    Event {
        RxFrames => "rx_frames",
        TxFrames => "tx_frames",
        ArpRequestsAnswered => "arp_requests_answered",
        ArpLearned => "arp_learned",
        /// ARP requests this engine sent to resolve a next hop (first requests, retransmits
        /// and unicast probes of stale entries; `neighbor`).
        ArpRequestsSent => "arp_requests_sent",
        /// Next hops resolved: an ARP reply answered a request of ours.
        NeighborsResolved => "neighbors_resolved",
        /// Next hops that did not answer `max_requests` requests: frames to them are dropped
        /// for `failed_hold` (the connection that needed them fails).
        NeighborFailures => "neighbor_failures",
        /// ARP mappings this worker heard and handed to the other workers (each counted once,
        /// whatever the number of workers): ARP reaches one worker, every worker resolves.
        NeighborsShared => "neighbors_shared",
        /// Mappings another worker heard that changed this worker's neighbour table (an entry
        /// created, updated, or resolved: then also `neighbors_resolved`).
        NeighborsFromWorkers => "neighbors_from_workers",
        /// A mapping not handed to a worker: its mailbox (or this worker's queue of mappings
        /// to share) was full. That worker's own request is retransmitted; the reply to it
        /// is shared again.
        NeighborShareDropped => "neighbor_share_dropped",
        IcmpEchoAnswered => "icmp_echo_answered",
        FlowsOpened => "flows_opened",
        FlowsClosed => "flows_closed",
        RstSent => "rst_sent",
        ChallengeAcks => "challenge_acks",
        OutOfWindow => "out_of_window",
        /// Of those, segments TIME-WAIT left unanswered: bare ACKs below RCV.NXT, sent by the
        /// peer before its FIN and delivered after it (reordering), and any other old
        /// segment within the minimum RTO of our ACK of its FIN (a retransmission sent before
        /// that ACK arrived); an ACK to it would reach a peer whose connection is gone, which
        /// answers with a RST.
        TimeWaitStaleAcks => "time_wait_stale_acks",
        /// Duplicate ACKs not sent while received bytes wait for a proxy's `commit = "peer"`
        /// limit (the ACK would repeat the last one: the peer would retransmit bytes we hold).
        HeldAcksSuppressed => "held_acks_suppressed",
        /// Bytes a proxy half with `commit = "peer"` counted as received after a takeover
        /// without them arriving: the other side's peer had acknowledged them (the dead
        /// engine relayed them), so its own peer may never send them again.
        SkippedBytes => "skipped_bytes",
        PawsRejected => "paws_rejected",
        RstAccepted => "rst_accepted",
        Retransmits => "retransmits",
        FastRetransmits => "fast_retransmits",
        OutOfOrderSegments => "out_of_order_segments",
        HttpRequests => "http_requests",
        IdleSleeps => "idle_sleeps",
        /// Deltas queued toward the standby.
        DeltasEmitted => "deltas_emitted",
        /// A delta could not be queued (ring and backlog full): the flow's output is held
        /// until a full image of it is re-emitted.
        ReplicationFull => "replication_full",
        /// Flows installed from the replica at takeover.
        FlowsResumed => "flows_resumed",
        /// Installed flows whose client acknowledged data the replica never sent (async mode:
        /// the replica was stale): reset so the client fails fast instead of hanging.
        FlowsAbandoned => "flows_abandoned",
        /// ACKs with which a flow installed at takeover caught up: its client acknowledged
        /// output beyond the replica's last progress image (progress is replicated without
        /// holding output), and what the old active sent is a function of the stream offset.
        /// Expected under load; not an error.
        FlowsCaughtUp => "flows_caught_up",
        /// Flows installed at takeover whose client had sent bytes the replica never saw
        /// (its first segment to the new active starts beyond RCV.NXT): requests sent into
        /// the outage. Nothing the engine can send makes a Linux client resend them early
        /// (README "What a client sees"); its own loss-probe timer does, ~200 ms + 2 RTT
        /// after the send.
        FlowsClientAhead => "flows_client_ahead",
        /// Gratuitous ARPs sent (takeover announcements).
        GratuitousArps => "gratuitous_arps",
        /// Another engine's tagged announcement claimed one of our VIPs with a newer epoch
        /// than any seen before: it took over (the sync link may be cut); we fence ourselves.
        VipClaimsSeen => "vip_claims_seen",
        /// Join snapshots emitted for a standby.
        SnapshotsEmitted => "snapshots_emitted",
        /// Software distribution: packets this worker handed to another one (worker 0: received
        /// frames of other workers' flows; worker k: frames queued for worker 0's TX queue).
        HandoffOut => "handoff_out",
        /// Software distribution: packets this worker took over from another one (worker k:
        /// received frames from worker 0; worker 0: other workers' frames it transmitted).
        HandoffIn => "handoff_in",
        /// Connections this engine opened itself (`Stack::connect`; Linux `ActiveOpens`): the
        /// SYN left, or waits for the next hop. Also counted in `flows_opened`.
        ActiveOpens => "active_opens",
        /// `Stack::connect` refused: this engine is not active (a standby opens nothing).
        ConnectNotActive => "connect_not_active",
        /// `Stack::connect` refused: the source address is not one of our VIPs.
        ConnectNoVip => "connect_no_vip",
        /// `Stack::connect` refused a request it cannot serve: no such listener, a service
        /// state of another kind, a remote that is not a unicast host and port, a worker the
        /// steering does not have, a call from inside a TCP call.
        ConnectInvalid => "connect_invalid",
        /// `Stack::connect` refused: every local port whose reply reaches this worker is in use
        /// toward that remote address and port.
        ConnectPortsExhausted => "connect_ports_exhausted",
        /// `Stack::connect` refused: the flow table is full.
        ConnectTableFull => "connect_table_full",
        /// `Stack::connect` refused: the next hop failed to resolve recently (neighbour
        /// hold-down), or too many frames already wait for it, or the neighbour table is full.
        ConnectNextHopDown => "connect_next_hop_down",
        /// `Stack::connect` refused: no route reaches the remote (in no VIP's subnet, and no
        /// `[[route]]` covers it).
        ConnectNoRoute => "connect_no_route",
        /// Opened flows ended before their SYN left: the next hop never answered ARP (or, at
        /// a takeover, the standby has no route to it).
        OpensNextHopFailed => "opens_next_hop_failed",
        /// Pairs of flows linked into one unit (`Stack::link`).
        FlowsLinked => "flows_linked",
        /// One half of a linked pair ended; the other was told (`Stack::take_link_event`).
        LinkPartnerEnded => "link_partner_ended",
        /// Takeover: a linked half whose partner was not among the replicas (or could not be
        /// installed with it). Not resumed if it was opening (SYN-SENT); else installed and
        /// reset at its peer's first ACK, with the sequence number that ACK names.
        LinkOrphans => "link_orphans",
        /// Link events nobody took: the oldest was dropped (the queue holds one per flow).
        LinkEventsDropped => "link_events_dropped",
        /// Proxy: a client connection found no backend up; it was closed (FIN) at once.
        ProxyNoBackend => "proxy_no_backend",
        /// Proxy: the backend connection could not be opened (`connect_*` says why); the
        /// client connection was closed (FIN) at once.
        ProxyConnectFailed => "proxy_connect_failed",
        /// Proxy: one half of a connection was reset, so the other was reset too.
        ProxyResetsPropagated => "proxy_resets_propagated",
    }
}

/// Services (listeners) an engine can have; config validation enforces it.
pub const MAX_SERVICES: usize = 64;

/// Upper bounds (µs) of the buckets of latency histograms; one more bucket takes the rest
/// (`+Inf`). Shared by the worker's output-hold histogram and the sync thread's ack
/// round-trip histogram so the two line up.
pub const LATENCY_BUCKETS_US: [u64; 12] = [10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 50_000, 200_000];
/// Buckets of a latency histogram, `+Inf` included.
pub const LATENCY_SLOTS: usize = LATENCY_BUCKETS_US.len() + 1;

/// The bucket of a µs value (upper bounds inclusive).
#[inline]
pub fn latency_bucket(us: u64) -> usize {
    LATENCY_BUCKETS_US.partition_point(|&b| b < us)
}

/// Prometheus text of a latency histogram: `counts` per bucket (not cumulative) as
/// cumulative `{name}_bucket{le="..."}` lines, then `{name}_sum` and `{name}_count`.
pub fn write_latency_histogram(out: &mut String, name: &str, help: &str, counts: &[u64; LATENCY_SLOTS], sum: u64) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    let mut cum = 0;
    for (i, n) in counts.iter().enumerate() {
        cum += n;
        match LATENCY_BUCKETS_US.get(i) {
            Some(le) => {
                let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cum}");
            }
            None => {
                let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cum}");
            }
        }
    }
    let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cum}");
}

/// A worker's private counters.
#[derive(Clone, Debug)]
pub struct Counters {
    pub drops: [u64; Drop::COUNT],
    pub events: [u64; Event::COUNT],
    /// Live flows by TCP state index (see `tcp::State as usize`).
    pub flows_by_state: [u64; 16],
    /// Payload bytes delivered to / sent by each service (index = listener).
    pub svc_bytes_in: [u64; MAX_SERVICES],
    pub svc_bytes_out: [u64; MAX_SERVICES],
    /// Output commit: how long frames waited for the standby, µs (per bucket, not
    /// cumulative), and the sum.
    pub hold_us: [u64; LATENCY_SLOTS],
    pub hold_us_sum: u64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            drops: [0; Drop::COUNT],
            events: [0; Event::COUNT],
            flows_by_state: [0; 16],
            svc_bytes_in: [0; MAX_SERVICES],
            svc_bytes_out: [0; MAX_SERVICES],
            hold_us: [0; LATENCY_SLOTS],
            hold_us_sum: 0,
        }
    }
}

impl Counters {
    #[inline]
    pub fn drop(&mut self, r: Drop) {
        self.drops[r as usize] += 1;
    }
    #[inline]
    pub fn event(&mut self, e: Event) {
        self.events[e as usize] += 1;
    }
    #[inline]
    pub fn add(&mut self, e: Event, n: u64) {
        self.events[e as usize] += n;
    }
    pub fn dropped(&self, r: Drop) -> u64 {
        self.drops[r as usize]
    }
    pub fn get(&self, e: Event) -> u64 {
        self.events[e as usize]
    }
}

/// One worker's published counters (single writer: the worker; readers: control threads).
pub struct SharedCounters {
    drops: Vec<AtomicU64>,
    events: Vec<AtomicU64>,
    flows_by_state: Vec<AtomicU64>,
    svc_bytes_in: Vec<AtomicU64>,
    svc_bytes_out: Vec<AtomicU64>,
    hold_us: Vec<AtomicU64>,
    hold_us_sum: AtomicU64,
}

impl Default for SharedCounters {
    fn default() -> Self {
        let v = |n| (0..n).map(|_| AtomicU64::new(0)).collect();
        SharedCounters {
            drops: v(Drop::COUNT),
            events: v(Event::COUNT),
            flows_by_state: v(16),
            svc_bytes_in: v(MAX_SERVICES),
            svc_bytes_out: v(MAX_SERVICES),
            hold_us: v(LATENCY_SLOTS),
            hold_us_sum: AtomicU64::new(0),
        }
    }
}

/// Relaxed stores of `src` into `dst` (single writer; see `SharedCounters::publish`).
fn store_all(dst: &[AtomicU64], src: &[u64]) {
    for (a, v) in dst.iter().zip(src.iter()) {
        a.store(*v, Ordering::Relaxed);
    }
}

/// Relaxed loads of `src` into `dst` (pairs with `store_all`).
fn load_all(dst: &mut [u64], src: &[AtomicU64]) {
    for (v, a) in dst.iter_mut().zip(src.iter()) {
        *v = a.load(Ordering::Relaxed);
    }
}

impl SharedCounters {
    /// Publish a worker's counters. Relaxed: each value is independent and monotonic (or a
    /// gauge); readers need no ordering between them.
    pub fn publish(&self, c: &Counters) {
        store_all(&self.drops, &c.drops);
        store_all(&self.events, &c.events);
        store_all(&self.flows_by_state, &c.flows_by_state);
        store_all(&self.svc_bytes_in, &c.svc_bytes_in);
        store_all(&self.svc_bytes_out, &c.svc_bytes_out);
        store_all(&self.hold_us, &c.hold_us);
        self.hold_us_sum.store(c.hold_us_sum, Ordering::Relaxed);
    }

    /// A snapshot (pairs with `publish`'s Relaxed stores; values may be a few ms old).
    pub fn snapshot(&self) -> Counters {
        let mut c = Counters::default();
        load_all(&mut c.drops, &self.drops);
        load_all(&mut c.events, &self.events);
        load_all(&mut c.flows_by_state, &self.flows_by_state);
        load_all(&mut c.svc_bytes_in, &self.svc_bytes_in);
        load_all(&mut c.svc_bytes_out, &self.svc_bytes_out);
        load_all(&mut c.hold_us, &self.hold_us);
        c.hold_us_sum = self.hold_us_sum.load(Ordering::Relaxed);
        c
    }
}
