//! The standby's replicas: per worker a table of flows indexed the way the active indexes
//! them ([`ShadowSlots`]), and the sans-IO apply of delta batches to them ([`Replicas`]).
//!
//! A delta names its flow by `(slot, generation)`: the slot is the flow's index in the
//! active's flow table, the generation tells reuses of that slot apart. The table is a vector
//! indexed by slot, so applying a delta is an index and a generation compare, not a hash
//! lookup; the flows are boxed so neither growing the vector nor inserting moves a replica
//! (a `ShadowFlow` carries its service state inline, ~2.4 KB for HTTP). With a `HashMap`
//! keyed by `(slot, generation)` hashing and moving entries were a quarter of the standby's
//! apply time at 25 000 new connections/s.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;

use flowtwin_engine::flow::FlowKey;
use flowtwin_engine::replica::{pair_links, FlowImage, Partner, ShadowFlow};
use flowtwin_engine::stack::StackConfig;

use crate::delta::{self, DeltaBody};
use crate::ring::{Record, RECORD_BYTES};
use crate::status::SyncStatus;

/// Largest slot index any engine config allows (`engine.flow_capacity` ≤ 2^26): a delta
/// naming a higher slot is corrupt and is refused instead of growing the table.
pub const MAX_SLOTS: u32 = 1 << 26;

/// `(slot, generation)` of a flow on the active.
pub type SlotKey = (u32, u32);

/// A slot index beyond [`MAX_SLOTS`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SlotOutOfRange(pub u32);

impl std::fmt::Display for SlotOutOfRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "flow slot {} beyond the largest flow table ({MAX_SLOTS} flows)", self.0)
    }
}

/// One worker's replicas.
#[derive(Default)]
pub struct ShadowSlots {
    slots: Vec<Option<(u32, Box<ShadowFlow>)>>,
    live: usize,
}

impl ShadowSlots {
    /// Replicas held.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    pub fn get_mut(&mut self, (slot, gen): SlotKey) -> Option<&mut ShadowFlow> {
        match self.slots.get_mut(slot as usize) {
            Some(Some((g, f))) if *g == gen => Some(f),
            _ => None,
        }
    }

    pub fn contains(&self, (slot, gen): SlotKey) -> bool {
        matches!(self.slots.get(slot as usize), Some(Some((g, _))) if *g == gen)
    }

    /// Store a new flow. An older generation still in the slot is replaced and returned:
    /// the active reused the slot, so that flow is gone there (its close was lost or
    /// coalesced away).
    pub fn insert(&mut self, (slot, gen): SlotKey, f: ShadowFlow) -> Result<Option<Box<ShadowFlow>>, SlotOutOfRange> {
        if slot >= MAX_SLOTS {
            return Err(SlotOutOfRange(slot));
        }
        let i = slot as usize;
        if i >= self.slots.len() {
            // Grow geometrically (amortised), never beyond what the slot needs twice over.
            let want = (i + 1).max(self.slots.len() * 2).min(MAX_SLOTS as usize);
            self.slots.resize_with(want, || None);
        }
        let old = self.slots[i].replace((gen, Box::new(f)));
        if old.is_none() {
            self.live += 1;
        }
        Ok(old.and_then(|(g, f)| (g != gen).then_some(f)))
    }

    /// Remove the flow if this generation is in its slot.
    pub fn remove(&mut self, key: SlotKey) -> Option<Box<ShadowFlow>> {
        if !self.contains(key) {
            return None;
        }
        self.live -= 1;
        self.slots[key.0 as usize].take().map(|(_, f)| f)
    }

    /// Take every replica out (takeover, reset), in slot order.
    pub fn drain(&mut self) -> Vec<ShadowFlow> {
        self.drain_keyed().into_iter().map(|(_, f)| f).collect()
    }

    /// [`ShadowSlots::drain`], each replica with its `(slot, generation)`.
    pub fn drain_keyed(&mut self) -> Vec<(SlotKey, ShadowFlow)> {
        self.live = 0;
        std::mem::take(&mut self.slots)
            .into_iter()
            .enumerate()
            .filter_map(|(slot, e)| e.map(|(g, f)| ((slot as u32, g), *f)))
            .collect()
    }
}

/// One worker's replicas on the standby, with what was applied and acknowledged of its
/// delta stream.
#[derive(Default)]
pub struct WorkerReplicas {
    pub flows: ShadowSlots,
    /// Service images being assembled from `SvcImage` chunks.
    images: HashMap<SlotKey, Vec<u8>>,
    /// Re-images of flows held here (the active lost one of their deltas to a full ring):
    /// the new `New`, waiting for its service image. The replica it replaces stays until the
    /// image is complete: should the active die first, the old one is what the client saw
    /// (the active held the flow's output since the lost delta).
    reimages: HashMap<SlotKey, ShadowFlow>,
    /// Highest sequence applied / acknowledged.
    pub applied: u64,
    pub acked: u64,
    /// `Barrier(join_token)` applied.
    barrier: bool,
}

impl WorkerReplicas {
    /// Drop a partly received service image (images exist only while a join is under way:
    /// the common case costs no hashing).
    fn forget_image(&mut self, key: SlotKey) {
        if !self.images.is_empty() {
            self.images.remove(&key);
        }
        if !self.reimages.is_empty() {
            self.reimages.remove(&key);
        }
    }
}

/// The standby's replicas of every worker of the active, and the state of a join snapshot.
///
/// Sans-IO: batches of delta records go in ([`Replicas::apply_batch`]), the flows come out at
/// takeover ([`Replicas::take_for_takeover`]). The sync thread drives it from its socket; the
/// takeover simulation (`tests/takeover_space/`) drives the very same code without one.
/// Counters go to a [`SyncStatus`], messages to `log`.
pub struct Replicas {
    pub workers: Vec<WorkerReplicas>,
    /// The join snapshot being received (0: none).
    pub join_token: u64,
    pub in_sync: bool,
    /// Fingerprints of the active's listeners this engine has no service for, each logged
    /// once (a pair of which only one engine was reloaded: every new flow of the service).
    unknown_listeners: Vec<u64>,
}

/// A replica's image in this engine's terms: its listener is this engine's listener of the
/// same service (`StackConfig::resolve_listener`). `Err`: this engine does not run it.
fn localize(cfg: &StackConfig, mut img: FlowImage) -> Result<FlowImage, UnknownListener> {
    let l = cfg.resolve_listener(img.listener, img.listener_fp).ok_or(UnknownListener(img.listener, img.listener_fp))?;
    img.listener = l;
    Ok(img)
}

/// The active's listener (index, fingerprint) that no listener of this engine matches.
struct UnknownListener(u16, u64);

impl Replicas {
    pub fn new(workers: usize) -> Replicas {
        let mut s = Replicas { workers: Vec::new(), join_token: 0, in_sync: false, unknown_listeners: Vec::new() };
        s.reset(workers);
        s
    }

    /// Forget everything (a new session with an active).
    pub fn reset(&mut self, workers: usize) {
        self.workers.clear();
        self.workers.resize_with(workers, WorkerReplicas::default);
        self.join_token = 0;
        self.in_sync = false;
    }

    /// The active started a join snapshot with `token`.
    pub fn begin_join(&mut self, token: u64) {
        self.join_token = token;
        self.in_sync = false;
        for w in &mut self.workers {
            w.barrier = false;
        }
    }

    /// True when this call made the replicas in sync (every worker's barrier applied).
    pub fn check_in_sync(&mut self) -> bool {
        if self.in_sync || self.join_token == 0 || !self.workers.iter().all(|w| w.barrier) {
            return false;
        }
        self.in_sync = true;
        true
    }

    /// Replicas held, all workers.
    pub fn flows(&self) -> usize {
        self.workers.iter().map(|w| w.flows.len()).sum()
    }

    /// Apply one batch of worker `worker`'s deltas (sequence numbers `seqs.0..=seqs.1`).
    /// A delta that cannot be applied costs its flow (counted as a replay error and, if the
    /// flow was held, an abandoned flow), never the batch.
    pub fn apply_batch(
        &mut self,
        cfg: &StackConfig,
        st: &SyncStatus,
        worker: u16,
        seqs: (u64, u64),
        recs: &[Record],
        log: &dyn Fn(&str),
    ) {
        let w = usize::from(worker);
        if w >= self.workers.len() {
            self.workers.resize_with(w + 1, WorkerReplicas::default);
        }
        st.bytes_replicated.fetch_add((recs.len() * RECORD_BYTES) as u64, Relaxed);
        {
            let ws = &mut self.workers[w];
            if ws.applied != 0 && seqs.0 != ws.applied + 1 {
                st.seq_gaps.fetch_add(1, Relaxed);
            }
        }
        let mut at = 0;
        while at < recs.len() {
            let (d, used) = match delta::decode(&recs[at..]) {
                Ok(x) => x,
                Err(e) => {
                    st.decode_errors.fetch_add(1, Relaxed);
                    log(&format!("worker {w}: undecodable delta: {e}"));
                    return;
                }
            };
            at += used;
            let ws = &mut self.workers[w];
            st.deltas_applied.fetch_add(1, Relaxed);
            let key = (d.header.slot, d.header.generation);
            let known = &mut self.unknown_listeners;
            // A flow of a service this engine does not run: its replica (if any) is dropped,
            // counted apart from replay errors, and the service is named once.
            let mut unknown = |ws: &mut WorkerReplicas, u: UnknownListener| {
                st.replicas_unknown_service.fetch_add(1, Relaxed);
                if ws.flows.remove(key).is_some() {
                    st.flows_abandoned.fetch_add(1, Relaxed);
                }
                ws.forget_image(key);
                if !known.contains(&u.1) {
                    known.push(u.1);
                    log(&format!(
                        "the active's listener {} (fingerprint {:016x}) is no service of this engine: its flows are not replicated here, and a takeover would lose them (the two configs differ: reload this engine with the same services)",
                        u.0, u.1
                    ));
                }
            };
            let fail = |ws: &mut WorkerReplicas, e: &dyn std::fmt::Display| {
                st.replay_errors.fetch_add(1, Relaxed);
                if ws.flows.remove(key).is_some() {
                    st.flows_abandoned.fetch_add(1, Relaxed);
                }
                ws.forget_image(key);
                log(&format!("worker {w} flow {key:?}: replay error: {e}"));
            };
            match &d.body {
                DeltaBody::FlowNew(rec) => match rec.to_image().map(|i| localize(cfg, i)) {
                    Ok(Err(u)) => unknown(ws, u),
                    Ok(Ok(img)) => match ShadowFlow::new(cfg, img) {
                        Ok(f) if ws.flows.contains(key) && !f.service_known() => {
                            // A re-image: it replaces the replica once its service image is
                            // complete.
                            ws.forget_image(key);
                            ws.reimages.insert(key, f);
                        }
                        Ok(f) => {
                            ws.forget_image(key);
                            match ws.flows.insert(key, f) {
                                // The active reused the slot, so the older flow is gone
                                // there, but its close never arrived: inconsistent.
                                Ok(Some(old)) => {
                                    st.replay_errors.fetch_add(1, Relaxed);
                                    log(&format!(
                                        "worker {w} slot {}: new flow replaces {:?} whose close never arrived",
                                        key.0, old.image.key
                                    ));
                                }
                                Ok(None) => {}
                                Err(e) => fail(ws, &e),
                            }
                        }
                        Err(e) => fail(ws, &e),
                    },
                    Err(e) => fail(ws, &e),
                },
                DeltaBody::FlowUpdate(rec) => match (ws.flows.get_mut(key), rec.to_image().map(|i| localize(cfg, i))) {
                    (Some(f), Ok(Ok(img))) => f.update(cfg, img),
                    (Some(_), Ok(Err(u))) => unknown(ws, u),
                    (None, _) => {
                        st.unknown_flow_deltas.fetch_add(1, Relaxed);
                    }
                    (Some(_), Err(e)) => fail(ws, &e),
                },
                DeltaBody::FlowStep(step) => match ws.flows.get_mut(key) {
                    Some(f) => match step.apply_to(&f.image) {
                        Ok(img) => f.update(cfg, img),
                        Err(e) => fail(ws, &e),
                    },
                    None => {
                        st.unknown_flow_deltas.fetch_add(1, Relaxed);
                    }
                },
                DeltaBody::Data(dr) => match ws.flows.get_mut(key) {
                    Some(f) => {
                        if let Err(e) = f.data(cfg, dr.offset, dr.payload()) {
                            fail(ws, &e);
                        }
                    }
                    None => {
                        st.unknown_flow_deltas.fetch_add(1, Relaxed);
                    }
                },
                DeltaBody::SvcImage(dr) => {
                    if !ws.flows.contains(key) {
                        st.unknown_flow_deltas.fetch_add(1, Relaxed);
                        continue;
                    }
                    let (total, off) = delta::svc_image_split(dr.offset);
                    let buf = ws.images.entry(key).or_default();
                    if off == 0 {
                        buf.clear();
                    }
                    if off as usize != buf.len() {
                        let e = format!("image chunk at {off}, expected {}", buf.len());
                        fail(ws, &e);
                        continue;
                    }
                    buf.extend_from_slice(dr.payload());
                    if buf.len() >= total as usize {
                        let img = ws.images.remove(&key).unwrap_or_default();
                        let r = match ws.reimages.remove(&key) {
                            Some(mut f) => {
                                let r = f.set_image(cfg, &img);
                                if r.is_ok() {
                                    let _ = ws.flows.insert(key, f);
                                }
                                Some(r)
                            }
                            None => ws.flows.get_mut(key).map(|f| f.set_image(cfg, &img)),
                        };
                        if let Some(Err(e)) = r {
                            fail(ws, &e);
                        }
                    }
                }
                DeltaBody::FlowClose(_) => {
                    // Its link partner is unlinked with it, as on the active
                    // (`Stack::link`): a takeover now resumes the partner alone, not as an
                    // orphan.
                    // Its partner also adopts what it held for it (a proxy half's pipe), as the
                    // active did (`stack::linked`).
                    if let Some(mut closing) = ws.flows.remove(key) {
                        if let Some(p) = closing.image.link.and_then(|l| ws.flows.get_mut(l)).filter(|p| p.image.link == Some(key)) {
                            p.image.link = None;
                            let acked = p.image.tcb.tx_acked;
                            p.svc.adopt(&mut closing.svc, acked);
                            p.svc.partner_ended(flowtwin_engine::service::LinkEnd::Closed);
                        }
                    }
                    ws.forget_image(key);
                }
                DeltaBody::Barrier { token } => {
                    if *token == self.join_token && *token != 0 {
                        ws.barrier = true;
                    }
                }
            }
        }
        let ws = &mut self.workers[w];
        ws.applied = ws.applied.max(seqs.1);
    }

    /// Takeover: every replica, per worker (at least `workers` lists), with owed FINs
    /// delivered to their services. A flow whose join image is still incomplete (part of its
    /// service image, or none of it, arrived) cannot be resumed: it is dropped and counted as
    /// abandoned. The two halves of a linked pair find each other here, while their slots
    /// still name them (`ShadowFlow::partner`, `replica::pair_links`), so that they are
    /// installed together; a half whose partner is missing is counted
    /// (`takeover_link_orphans`) and closed by the engine.
    pub fn take_for_takeover(&mut self, cfg: &StackConfig, st: &SyncStatus, workers: usize) -> Vec<Vec<ShadowFlow>> {
        let mut flows: Vec<Vec<ShadowFlow>> = Vec::with_capacity(self.workers.len().max(workers));
        for ws in self.workers.iter_mut() {
            for key in ws.images.drain().map(|(k, _)| k) {
                // An incomplete re-image leaves the replica it would have replaced; an
                // incomplete join image leaves nothing to resume.
                if !ws.reimages.contains_key(&key) && ws.flows.remove(key).is_some() {
                    st.flows_abandoned.fetch_add(1, Relaxed);
                }
            }
            ws.reimages.clear();
            let mut v = ws.flows.drain_keyed();
            // A join image whose service part never arrived (the active died between the
            // two): resuming it would replay into the wrong service state.
            let before = v.len();
            v.retain(|(_, f)| f.service_known());
            st.flows_abandoned.fetch_add((before - v.len()) as u64, Relaxed);
            // Linked halves find each other while their slots still name them.
            let orphans = pair_links(&mut v);
            st.takeover_link_orphans.fetch_add(orphans as u64, Relaxed);
            let mut v: Vec<ShadowFlow> = v.into_iter().map(|(_, f)| f).collect();
            // `commit = "peer"`: each half of a pair resumes from what the other half's peer
            // acknowledged (`ShadowFlow::peer_resume_point`), before the rewind below.
            // (Only linked halves are anyone's partner: no map of every flow.)
            let acked: HashMap<FlowKey, u64> = v.iter().filter(|f| matches!(f.partner, Partner::Key(_))).map(|f| (f.image.key, f.image.tcb.tx_acked)).collect();
            for f in v.iter_mut() {
                let a = match f.partner {
                    Partner::Key(k) => acked.get(&k).copied(),
                    Partner::None => f.svc.unlinked_ack(),
                    Partner::Missing => None,
                };
                if let Some(a) = a {
                    f.peer_resume_point(cfg, a);
                }
            }
            for f in v.iter_mut() {
                if f.rewind_to_replayed(cfg) {
                    st.takeover_rewound_flows.fetch_add(1, Relaxed);
                }
                f.deliver_fin(cfg);
            }
            flows.push(v);
        }
        flows.resize_with(flows.len().max(workers), Vec::new);
        let imaged = flows.iter().flatten().filter(|f| f.from_image()).count();
        st.takeover_imaged_flows.store(imaged as u64, Relaxed);
        flows
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use flowtwin_engine::flow::FlowKey;
    use flowtwin_engine::replica::FlowImage;
    use flowtwin_engine::stack::ServiceState;
    use flowtwin_engine::stack::{Listener, ServiceSpec, StackConfig};
    use flowtwin_engine::tcp::{TcbSnapshot, TcpConfig};
    use flowtwin_engine::wire::MacAddr;
    use std::net::Ipv4Addr;
    use flowtwin_engine::time::Duration;

    const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);

    fn cfg() -> StackConfig {
        StackConfig {
            vips: Vec::new(),
            groups: Vec::new(),
            listeners: vec![Listener { vip: VIP, port: 7, spec: ServiceSpec::Echo(Default::default()) }],
            routes: flowtwin_engine::route::RouteTable::all_on_link(),
            tcp: TcpConfig::default(),
            flow_capacity: 16,
            isn_key: [0; 16],
            open_secrets: Default::default(),
            timer_tick: Duration::from_millis(1),
            retired: Vec::new(),
        }
    }

    fn flow(port: u16) -> ShadowFlow {
        let image = FlowImage {
            key: FlowKey::v4(Ipv4Addr::new(10, 0, 0, 1), port, VIP, 7),
            tcb: TcbSnapshot::default(),
            peer_mac: MacAddr::default(),
            vip_mac: MacAddr::default(),
            listener: 0,
            listener_fp: 0,
            origin: Default::default(),
            link: None,
        };
        ShadowFlow::new(&cfg(), image).expect("listener 0 exists")
    }

    fn port(f: &ShadowFlow) -> u16 {
        f.image.key.remote_port
    }

    #[test]
    fn generations_tell_reuses_of_a_slot_apart() {
        let mut t = ShadowSlots::default();
        assert!(t.insert((5, 1), flow(1001)).unwrap().is_none());
        assert_eq!(t.len(), 1);
        assert!(t.contains((5, 1)) && !t.contains((5, 2)) && !t.contains((4, 1)));
        assert!(t.get_mut((5, 2)).is_none(), "another generation is another flow");
        assert!(t.remove((5, 2)).is_none());
        assert_eq!(t.len(), 1);
        // The slot is reused before its close arrived: the new flow replaces the old one.
        let old = t.insert((5, 2), flow(1002)).unwrap().expect("old generation returned");
        assert_eq!(port(&old), 1001);
        assert_eq!(t.len(), 1);
        assert_eq!(port(t.get_mut((5, 2)).unwrap()), 1002);
        assert!(t.get_mut((5, 1)).is_none());
        assert_eq!(port(&t.remove((5, 2)).unwrap()), 1002);
        assert!(t.is_empty());
    }

    /// A join image whose service image never arrived (the active died between the `New`
    /// and its `SvcImage`) is not resumed: its service would replay from the wrong state.
    #[test]
    fn a_replica_without_its_service_image_is_abandoned_at_takeover() {
        let c = cfg();
        let st = SyncStatus::new();
        let mut r = Replicas::new(1);
        let fresh = flow(1001);
        let mut consumed = flow(1002);
        consumed.image.tcb.rx_delivered = 10;
        let mut imaged = ShadowFlow::new(&c, consumed.image).unwrap();
        assert!(fresh.service_known());
        let unimaged = ShadowFlow::new(&c, consumed.image).unwrap();
        assert!(!unimaged.service_known(), "consumed bytes, no image: unknown service state");
        let mut img = Vec::new();
        ServiceState::for_spec(&c.listeners[0].spec).image(&mut img);
        imaged.set_image(&c, &img).unwrap();
        assert!(imaged.service_known());
        for (slot, f) in [(1, fresh), (2, unimaged), (3, imaged)] {
            r.workers[0].flows.insert((slot, 1), f).unwrap();
        }
        let out = r.take_for_takeover(&c, &st, 1);
        let ports: Vec<u16> = out[0].iter().map(port).collect();
        assert_eq!(ports, [1001, 1002], "the fresh and the imaged flow resume");
        assert_eq!(st.flows_abandoned.load(Relaxed), 1);
    }

    /// The two engines list their listeners in another order (a reload on one, a restart of
    /// the other): a replica names the active's index and the service's fingerprint, and the
    /// standby resumes it in its own listener of that service, or refuses it, counted and
    /// said once, when it has none.
    #[test]
    fn a_replica_finds_its_service_by_fingerprint_when_the_listener_lists_differ() {
        use crate::delta::{encode, Delta, DeltaHeader, FlowStateRec};
        use flowtwin_engine::stack::listener_fingerprint;
        let mut standby = cfg();
        standby.listeners.insert(0, Listener { vip: VIP, port: 80, spec: ServiceSpec::Echo(Default::default()) });
        let st = SyncStatus::new();
        let mut r = Replicas::new(1);
        let logs = std::cell::RefCell::new(Vec::new());
        let log = |m: &str| logs.borrow_mut().push(m.to_string());
        let mut recs = Vec::new();
        let mut img = flow(1001).image;
        for (slot, port) in [(1u32, 7u16), (2, 7), (3, 9), (4, 9)] {
            img.listener = 0;
            img.listener_fp = listener_fingerprint(VIP, port, "echo");
            let header = DeltaHeader { worker: 0, group: 0, slot, generation: 1, seq: u64::from(slot) };
            encode(&Delta { header, body: DeltaBody::FlowNew(FlowStateRec::from_image(&img)) }, &mut recs).unwrap();
        }
        r.apply_batch(&standby, &st, 0, (1, 4), &recs, &log);
        let listeners: Vec<u16> = [1, 2].iter().map(|s| r.workers[0].flows.get_mut((*s, 1)).unwrap().image.listener).collect();
        assert_eq!(listeners, [1, 1], "the active's echo :7 at index 0 is the standby's index 1");
        assert!(r.workers[0].flows.get_mut((3, 1)).is_none(), "no echo :9 here");
        assert_eq!(st.replicas_unknown_service.load(Relaxed), 2);
        let said = logs.borrow();
        assert!(said.len() == 1 && said[0].contains("no service of this engine"), "said once per service: {said:?}");
    }

    #[test]
    fn grows_on_demand_and_refuses_corrupt_slots() {
        let mut t = ShadowSlots::default();
        for s in [0u32, 70_000, 3, 69_999] {
            t.insert((s, 7), flow(s as u16)).unwrap();
        }
        assert_eq!(t.len(), 4);
        assert_eq!(t.insert((MAX_SLOTS, 1), flow(9)).err(), Some(SlotOutOfRange(MAX_SLOTS)));
        assert!(t.get_mut((u32::MAX, 7)).is_none() && t.remove((u32::MAX, 7)).is_none());
        assert_eq!(t.len(), 4);
        let all: Vec<u16> = t.drain().iter().map(port).collect();
        assert_eq!(all, [0, 3, 69_999u32 as u16, 70_000u32 as u16]);
        assert!(t.is_empty() && t.get_mut((3, 7)).is_none());
    }
}
