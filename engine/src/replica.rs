//! Replication as the engine sees it (DESIGN §4): what a worker emits about its flows, and how
//! a standby rebuilds a flow from it.
//!
//! **Replay, not state shipping.** Services are deterministic functions of their inputs, so a
//! standby does not need the service's internal state: it replays the same inputs in the same
//! order. Per TCP call the worker emits one [`FlowImage`] (the TCP_REPAIR-like snapshot; its
//! `tx_acked` is the only `on_acked` input) followed by [`ReplEvent::Data`] for the bytes the
//! service consumed in that call, in order. Within one call every `on_acked` precedes every
//! `on_recv` (RFC 9293: the ACK field is processed before the segment text), and a peer FIN is
//! delivered after the text, so a standby that applies *image → data → (FIN at the next image
//! or at takeover)* performs exactly the active's sequence of service calls. A full service
//! image ([`ServiceState::image`]) is only needed to bring a late-joining standby in sync.
//!
//! **Output commit.** Every replicated change gets a per-worker sequence number from the
//! [`Replicator`]; the DPDK loop holds each output frame until the standby acknowledged the
//! sequence number of the last change the frame depends on: its flow's creation, received
//! bytes or state change, not its send progress (`Stack::commit_tag`; see `dataplane`).

use std::collections::HashMap;

use crate::config::StackConfig;
use crate::flow::FlowKey;
use crate::group::GroupId;
use crate::service::{ByteStream, ServiceCounters, ServiceState};
use crate::tcp::{State, TcbSnapshot};
use crate::wire::MacAddr;

/// Everything the standby needs about one flow besides its service inputs.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct FlowImage {
    pub key: FlowKey,
    pub tcb: TcbSnapshot,
    /// The client's (or next hop's) MAC.
    pub peer_mac: MacAddr,
    /// The VIP MAC frames are sourced from.
    pub vip_mac: MacAddr,
    /// Index into `StackConfig::listeners` (same config on both engines): the listener
    /// whose service runs on the flow, the one that accepted it or the one on whose behalf
    /// this engine opened it ([`Origin`]).
    pub listener: u16,
    /// That listener's [`listener_fingerprint`](crate::config::listener_fingerprint): the
    /// standby finds its own listener of the service by it (`StackConfig::resolve_listener`)
    /// when the two engines' listener lists differ. 0: unknown (the index is trusted).
    pub listener_fp: u64,
    /// How the flow came to be.
    pub origin: Origin,
    /// The other half of a linked pair (`Stack::link`), by its slot (flow-table index and
    /// generation) on the same worker, as [`Replicator::emit`] names flows. Replication,
    /// output commit and takeover treat the two as one unit.
    pub link: Option<(u32, u32)>,
}

/// How a flow came to be. Both kinds run the service of their listener
/// ([`FlowImage::listener`]); the standby rebuilds either from its images the same way. An
/// opened flow's first image is always followed by its service image (its service may hold
/// output before the first byte is received: a proxy's buffered request), so the standby
/// resumes it only once it has both.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum Origin {
    /// Passive open: a SYN reached its listener.
    #[default]
    Accepted,
    /// Active open by this engine (`Stack::connect`), from a VIP and an ephemeral port.
    Opened,
}

/// A replica's link partner as the standby found it among its replicas at takeover
/// ([`pair_links`]): install the two together, or close the survivor.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum Partner {
    /// Not linked.
    #[default]
    None,
    /// Linked to the replica with this key (both are resumed, as one pair:
    /// `iteration::resume`).
    Key(FlowKey),
    /// Linked, but the partner is not among the replicas: an orphan. `Stack::install` does
    /// not resume it (SYN-SENT) or resets it at its peer's first ACK (counted).
    Missing,
}

/// Takeover, per worker: find each linked replica's partner among `flows` (each with its slot
/// on the active) and record it in [`ShadowFlow::partner`]. A pair is two replicas that name
/// each other; a replica whose partner exists but names no flow completes the pair (the
/// second half of `Stack::link`'s two updates had not arrived: nothing that depended on the
/// link had left the active, whose output waited for both). Every other link is an orphan.
/// Returns the number of orphans.
pub fn pair_links(flows: &mut [((u32, u32), ShadowFlow)]) -> usize {
    let at: HashMap<(u32, u32), usize> = flows.iter().enumerate().map(|(i, (slot, _))| (*slot, i)).collect();
    for (_, f) in flows.iter_mut() {
        f.partner = Partner::None;
    }
    let mut orphans = 0;
    for i in 0..flows.len() {
        let (slot, f) = (&flows[i].0, &flows[i].1);
        let Some(p) = f.image.link else { continue };
        if f.partner != Partner::None {
            continue; // completed as the partner of an earlier one
        }
        let j = at.get(&p).copied().filter(|&j| {
            j != i && flows[j].1.partner == Partner::None && flows[j].1.image.link.is_none_or(|back| back == *slot)
        });
        match j {
            Some(j) => {
                let (ki, kj) = (flows[i].1.image.key, flows[j].1.image.key);
                flows[i].1.partner = Partner::Key(kj);
                flows[j].1.partner = Partner::Key(ki);
            }
            None => {
                flows[i].1.partner = Partner::Missing;
                orphans += 1;
            }
        }
    }
    orphans
}

/// A replicated change of one flow. `slot` identifies the flow within its worker (flow-table
/// index and generation), stable for the flow's life.
#[derive(Debug)]
pub enum ReplEvent<'a> {
    /// A flow was created (SYN accepted, or opened by the engine): its first image. An
    /// opened flow's is followed by its `SvcImage`.
    New(&'a FlowImage),
    /// Replicated TCP fields changed, the flow's identity among them (its next hop, its
    /// link).
    Update(&'a FlowImage),
    /// Replicated TCP fields changed, its identity did not (key, addresses, ISS/IRS,
    /// negotiated options, listener, origin, link: as in the last `New`/`Update`). The image is complete;
    /// the replicator may send only what can change (one record instead of three).
    Step(&'a FlowImage),
    /// Bytes the service consumed, starting at service stream offset `offset`.
    Data { offset: u64, bytes: &'a [u8] },
    /// A complete service image (join snapshot): replaces the standby's service state.
    SvcImage(&'a [u8]),
    /// The flow is gone (closed, reset, timed out).
    Close,
    /// End of a join snapshot requested with `token` (slot is ignored): every flow this worker
    /// had when the request was seen has been imaged before this event.
    Barrier(u64),
}

/// Why a delta could not be queued: the ring toward the sync core is full. The caller keeps
/// the flow's output held and retries (never drops the delta silently).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ReplFull;

/// The worker's side of replication: turns events into delta records on its SPSC ring.
pub trait Replicator: Send {
    /// Queue one event for flow `slot` (`(index, generation)` of its flow-table entry).
    /// Returns the event's sequence number.
    fn emit(&mut self, slot: (u32, u32), ev: ReplEvent<'_>) -> Result<u64, ReplFull>;
    /// [`emit`](Self::emit) for a flow of ownership group `group`: the sync core routes the
    /// delta to the session that replicates that group. A replicator of one session (every
    /// test replicator) ignores the group.
    fn emit_in(&mut self, group: GroupId, slot: (u32, u32), ev: ReplEvent<'_>) -> Result<u64, ReplFull> {
        let _ = group;
        self.emit(slot, ev)
    }
    /// The sequence number of the last event queued (0 before the first): once the standby
    /// acknowledged it, it has everything queued so far. (Output waits for less: the last
    /// change it depends on, `Stack::commit_tag`.)
    fn last_seq(&self) -> u64;
    /// Records waiting because the ring was full (0 when caught up).
    fn backlog(&self) -> usize {
        0
    }
    /// Retry queued records (called every loop iteration).
    fn flush(&mut self) {}
}

/// Why a standby could not apply a delta: the replica is inconsistent with the active (a
/// protocol or determinism bug). Counted; the flow is then resynchronised from an image.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ReplayError {
    /// Data at an offset other than the next expected one.
    DataGap { expected: u64, got: u64 },
    /// The replayed service refused bytes the active's service consumed.
    ServiceRefused { offered: usize, consumed: usize },
    /// A service image that does not decode for this listener.
    BadImage,
    /// The image names a listener the standby's config does not have.
    UnknownListener(u16),
}

impl std::fmt::Display for ReplayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplayError::DataGap { expected, got } => write!(f, "data at offset {got}, expected {expected}"),
            ReplayError::ServiceRefused { offered, consumed } => {
                write!(f, "replayed service consumed {consumed} of {offered} bytes the active consumed")
            }
            ReplayError::BadImage => f.write_str("service image does not decode"),
            ReplayError::UnknownListener(l) => write!(f, "listener {l} not in this engine's config"),
        }
    }
}

/// A flow as the standby holds it: the last image plus a service rebuilt by replay.
pub struct ShadowFlow {
    pub image: FlowImage,
    pub svc: ServiceState,
    /// Bytes replayed into the service (next expected Data offset).
    pub rx_replayed: u64,
    /// The peer's FIN was seen in an image and must reach the service after this call's data.
    fin_pending: bool,
    fin_delivered: bool,
    /// The service state is known: the service consumed nothing yet (its initial state), or
    /// a complete image arrived. A join snapshot's `New` of a flow that has consumed bytes is
    /// followed by its `SvcImage`; until that arrives the replica cannot be resumed.
    svc_known: bool,
    /// The service state came from a full image (join snapshot or re-image).
    imaged: bool,
    /// Per-standby scratch counters the replayed services update (not reported).
    stats: ServiceCounters,
    /// Where its link partner is, found at takeover ([`pair_links`]).
    pub partner: Partner,
}

/// States in which the peer's FIN has been received (RFC 9293 §3.3.2).
fn fin_received(s: State) -> bool {
    matches!(s, State::CloseWait | State::LastAck | State::Closing | State::TimeWait)
}

impl ShadowFlow {
    /// A flow created on the active (its `New` image).
    pub fn new(cfg: &StackConfig, image: FlowImage) -> Result<ShadowFlow, ReplayError> {
        let spec = &cfg.listeners.get(image.listener as usize).ok_or(ReplayError::UnknownListener(image.listener))?.spec;
        let mut f = ShadowFlow {
            svc: ServiceState::for_spec(spec),
            rx_replayed: image.tcb.rx_delivered,
            fin_pending: false,
            fin_delivered: false,
            // An opened flow's service may hold output from the start: known once its
            // service image (which follows its first image) arrived.
            svc_known: image.tcb.rx_delivered == 0 && image.origin == Origin::Accepted,
            imaged: false,
            stats: ServiceCounters::default(),
            partner: Partner::None,
            image,
        };
        f.update(cfg, image);
        Ok(f)
    }

    /// Whether the service state came from a full image (a join snapshot, a re-image).
    pub fn from_image(&self) -> bool {
        self.imaged
    }

    /// Whether this replica can be resumed: its service state is known (see `svc_known`).
    pub fn service_known(&self) -> bool {
        self.svc_known
    }

    /// A newer image: deliver a FIN owed from the previous call, then `on_acked`.
    pub fn update(&mut self, cfg: &StackConfig, image: FlowImage) {
        self.deliver_fin(cfg);
        self.image = image;
        if let Some(l) = cfg.listeners.get(image.listener as usize) {
            let mut svc = self.svc.bind(&l.spec, &mut self.stats);
            if image.tcb.tx_acked > 0 {
                svc.on_acked(image.tcb.tx_acked);
            }
            // Beyond what the service replicates (a proxy half with `commit = "peer"`, once
            // its first request is replayed) no `Data` comes: the stream's offset is all
            // there is to replay.
            let until = self.svc.replicated_until(&l.spec);
            if until != u64::MAX && self.rx_replayed >= until {
                self.rx_replayed = self.rx_replayed.max(image.tcb.rx_delivered);
            }
        }
        if fin_received(image.tcb.state) && !self.fin_delivered {
            self.fin_pending = true;
        }
    }

    /// Bytes the active's service consumed at stream offset `offset`.
    pub fn data(&mut self, cfg: &StackConfig, offset: u64, bytes: &[u8]) -> Result<(), ReplayError> {
        if offset != self.rx_replayed {
            return Err(ReplayError::DataGap { expected: self.rx_replayed, got: offset });
        }
        let l = cfg.listeners.get(self.image.listener as usize).ok_or(ReplayError::UnknownListener(self.image.listener))?;
        let mut svc = self.svc.bind(&l.spec, &mut self.stats);
        let n = svc.on_recv(bytes);
        self.rx_replayed += n as u64;
        if n != bytes.len() {
            return Err(ReplayError::ServiceRefused { offered: bytes.len(), consumed: n });
        }
        Ok(())
    }

    /// Replace the service state with a full image (join snapshot).
    pub fn set_image(&mut self, cfg: &StackConfig, bytes: &[u8]) -> Result<(), ReplayError> {
        let l = cfg.listeners.get(self.image.listener as usize).ok_or(ReplayError::UnknownListener(self.image.listener))?;
        self.svc = ServiceState::from_image(&l.spec, bytes).ok_or(ReplayError::BadImage)?;
        self.svc_known = true;
        self.imaged = true;
        self.rx_replayed = self.image.tcb.rx_delivered;
        let peer_fin = self.svc.peer_fin();
        self.fin_delivered = peer_fin;
        self.fin_pending = fin_received(self.image.tcb.state) && !peer_fin;
        Ok(())
    }

    /// Bytes the last image says the service consumed but whose `Data` never arrived: the
    /// active lost that delta to a full ring after its image had been queued, and holds the
    /// flow's output until it has re-imaged the flow.
    pub fn rx_lag(&self) -> u64 {
        self.image.tcb.rx_delivered.saturating_sub(self.rx_replayed)
    }

    /// Takeover before the re-image (see [`ShadowFlow::rx_lag`]): go back to what the service
    /// really received. Those bytes (and a FIN after them) were never acknowledged to the
    /// client: the active held the flow's output, so the client sends them again. Returns
    /// whether anything was rewound.
    pub fn rewind_to_replayed(&mut self, cfg: &StackConfig) -> bool {
        let lag = self.rx_lag();
        if lag == 0 {
            return false;
        }
        // Whether the service, as it really is, has closed its side (our FIN).
        let closed = cfg
            .listeners
            .get(self.image.listener as usize)
            .is_some_and(|l| self.svc.bind(&l.spec, &mut self.stats).tx_closed());
        let t = &mut self.image.tcb;
        t.rx_delivered = self.rx_replayed;
        let mut back = lag as u32;
        if fin_received(t.state) {
            // Their FIN came after the missing bytes: un-receive it too. Our own FIN stays
            // only if the service closed without it (a service that closes because the
            // client did has not closed yet).
            back += 1;
            t.state = match t.state {
                State::TimeWait => State::FinWait2,
                State::LastAck | State::Closing if closed => State::FinWait1,
                _ => State::Established,
            };
            self.fin_pending = false;
        }
        t.rcv_nxt = t.rcv_nxt - back;
        true
    }

    /// Takeover of one half of a linked pair whose listener replicates no payload (a proxy
    /// with `commit = "peer"`): this half acknowledged its peer's bytes only as far as the
    /// other half's peer acknowledged them, `partner_acked`, and its peer sends the rest
    /// again; so [`ShadowFlow::rewind_to_replayed`] takes the receive side back to there. Its
    /// own output beyond what its peer acknowledged is gone with the dead engine's pipe
    /// (the other side's peer sends it again): it resumes from SND.UNA. Returns false for a
    /// listener that replicates its payload (nothing changes).
    pub fn peer_resume_point(&mut self, cfg: &StackConfig, partner_acked: u64) -> bool {
        let Some(l) = cfg.listeners.get(self.image.listener as usize).filter(|l| !l.spec.payload_replicated()) else {
            return false;
        };
        // What it read before its backend was chosen was acknowledged as it came, and
        // replayed here (`Kind::replicated_until`).
        let floor = self.svc.replicated_until(&l.spec);
        self.rx_replayed = self.image.tcb.rx_delivered.min(partner_acked.max(floor));
        if self.rx_replayed < self.image.tcb.rx_delivered {
            self.svc.rewind_received(self.rx_replayed);
        }
        let t = &mut self.image.tcb;
        if t.tx_sent > t.tx_acked {
            t.tx_sent = t.tx_acked;
            t.snd_nxt = t.snd_una;
        }
        true
    }

    /// Deliver an owed FIN to the service (also done at takeover), never before the bytes
    /// that precede it.
    pub fn deliver_fin(&mut self, cfg: &StackConfig) {
        if self.fin_pending && !self.fin_delivered && self.rx_lag() == 0 {
            if let Some(l) = cfg.listeners.get(self.image.listener as usize) {
                self.svc.bind(&l.spec, &mut self.stats).on_peer_fin();
            }
            self.fin_pending = false;
            self.fin_delivered = true;
        }
    }
}
