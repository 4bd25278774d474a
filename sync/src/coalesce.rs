//! Per-flow coalescing of the deltas in one batch (DESIGN §4: "the sync core coalesces
//! per-flow updates"; pfsync does the same with its per-state update queue).
//!
//! A bulk sender's flow produces one `FlowUpdate` per ACK it receives, and several of them
//! often sit in the same ring drain. Only the last is worth sending, but only where dropping
//! the earlier one cannot change what the standby's replay does (`ShadowFlow::update`):
//!
//! * An update supersedes the flow's **immediately preceding delta in the batch** only if that
//!   delta is itself an update of the same kind (a `FlowStep` never replaces a `FlowUpdate`,
//!   which may carry a new next hop, nor the other way round: their sizes differ). A `Data`
//!   between them (or `New`, `SvcImage`, `Close`) keeps both: the replay order
//!   *image → data* is what makes the standby's service see the same `on_acked` / `on_recv`
//!   sequence as the active's (an ACK for a response must not be replayed before the request
//!   that produced it).
//! * Both updates carry the **same TCP state**, and it is not one in which the peer's FIN was
//!   received. The replay delivers a FIN to the service when the image after the one that
//!   first showed it arrives; keeping every state change keeps that order exact. Within one
//!   state the only service input an update carries is `on_acked(tx_acked)`, which is
//!   cumulative in every service, so `on_acked(a1); on_acked(a2)` equals `on_acked(a2)`.
//!
//! The later update takes the earlier one's place in the batch, so other flows' deltas keep
//! their order and nothing is copied twice. Sequence numbers inside a coalesced batch are no
//! longer contiguous (nor, after a move, monotonic); the standby checks continuity per batch
//! (`first_seq`/`last_seq` in the batch header) and acknowledges `last_seq`.

use std::collections::HashMap;

use flowtwin_engine::tcp::State;

use crate::delta::{DeltaKind, PeekedHeader, HEADER_BYTES};
use crate::ring::Record;

/// The TCP state byte of a `FlowNew`/`FlowUpdate` delta (body offset 24: the first byte after
/// the header, i.e. the low byte of word 3 of the first record).
fn state_of(first: &Record) -> u8 {
    debug_assert_eq!(HEADER_BYTES, 24);
    (first[3] & 0xff) as u8
}

/// The TCP state of a `FlowStep` delta (header byte 3: bits 24..32 of word 0).
fn step_state_of(first: &Record) -> u8 {
    (first[0] >> 24) as u8
}

fn coalescable(state: u8) -> bool {
    !matches!(
        State::from_u8(state),
        State::CloseWait | State::LastAck | State::Closing | State::TimeWait | State::Closed
    )
}

/// Reusable state of the coalescer (no allocation per batch once warm).
#[derive(Default)]
pub struct Coalescer {
    /// Per flow (slot, generation): its last delta in `out`, if that is a coalescable update.
    last: HashMap<(u32, u32), Option<LastUpdate>>,
}

/// A flow's update a later one of the same kind and state may replace in place.
#[derive(Clone, Copy)]
struct LastUpdate {
    /// Where it starts in the batch.
    pos: usize,
    state: u8,
    kind: DeltaKind,
}

impl Coalescer {
    /// Starts a batch: `out` (the batch being built) is cleared.
    pub fn begin(&mut self, out: &mut Vec<Record>) {
        out.clear();
        self.last.clear();
    }

    /// Appends the whole delta `d` (its header already walked, `p`) to `out`, or lets it
    /// replace the flow's superseded update in place. Returns whether it replaced one (one
    /// delta fewer in the batch).
    pub fn push(&mut self, p: &PeekedHeader, d: &[Record], out: &mut Vec<Record>) -> bool {
        if p.kind == DeltaKind::Barrier {
            out.extend_from_slice(d);
            return false;
        }
        let key = (p.header.slot, p.header.generation);
        let update_state = match p.kind {
            DeltaKind::FlowUpdate => Some(state_of(&d[0])),
            DeltaKind::FlowStep => Some(step_state_of(&d[0])),
            _ => None,
        };
        if let Some(st) = update_state {
            if coalescable(st) {
                if let Some(Some(prev)) = self.last.get(&key).copied() {
                    if prev.state == st && prev.kind == p.kind {
                        out[prev.pos..prev.pos + d.len()].copy_from_slice(d);
                        return true;
                    }
                }
                self.last.insert(key, Some(LastUpdate { pos: out.len(), state: st, kind: p.kind }));
                out.extend_from_slice(d);
                return false;
            }
        }
        self.last.insert(key, None);
        out.extend_from_slice(d);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delta::{self, DataRec, Delta, DeltaBody, DeltaHeader, FlowStateRec, FlowStepRec};
    use flowtwin_engine::flow::FlowKey;
    use flowtwin_engine::replica::FlowImage;
    use flowtwin_engine::tcp::TcbSnapshot;
    use flowtwin_engine::wire::MacAddr;
    use std::net::Ipv4Addr;

    fn enc(slot: u32, seq: u64, body: DeltaBody) -> Vec<Record> {
        let header = DeltaHeader { worker: 0, group: 0, slot, generation: 1, seq };
        let mut out = Vec::new();
        delta::encode(&Delta { header, body }, &mut out).unwrap();
        out
    }

    fn rec(kind: DeltaKind, slot: u32, seq: u64, state: State, acked: u64) -> Vec<Record> {
        let tcb = TcbSnapshot { state, local_port: 80, remote_port: 40000, tx_acked: acked, ..Default::default() };
        let img = FlowImage {
            key: FlowKey::v4(Ipv4Addr::new(198, 18, 0, 2), 40000, Ipv4Addr::new(198, 18, 0, 1), 80),
            tcb,
            peer_mac: MacAddr([2, 0, 0, 0, 0, 2]),
            vip_mac: MacAddr([0, 0, 0x5e, 0, 1, 1]),
            listener: 0,
                listener_fp: 0,
            origin: Default::default(),
            link: None,
        };
        let s = FlowStateRec::from_image(&img);
        let body = match kind {
            DeltaKind::FlowNew => DeltaBody::FlowNew(s),
            DeltaKind::FlowStep => DeltaBody::FlowStep(FlowStepRec::from_image(&img)),
            _ => DeltaBody::FlowUpdate(s),
        };
        enc(slot, seq, body)
    }

    fn data(slot: u32, seq: u64, off: u64) -> Vec<Record> {
        enc(slot, seq, DeltaBody::Data(DataRec::new(off, b"GET / HTTP/1.1\r\n\r\n").unwrap()))
    }

    /// The sync core's walk over whole deltas, coalescing into `out`; returns the dropped count.
    fn coalesce(recs: &[Record], out: &mut Vec<Record>) -> u64 {
        let mut c = Coalescer::default();
        c.begin(out);
        let (mut at, mut dropped) = (0, 0);
        while at < recs.len() {
            let p = delta::peek_header(&recs[at..]).unwrap();
            dropped += u64::from(c.push(&p, &recs[at..at + p.records], out));
            at += p.records;
        }
        dropped
    }

    fn seqs(recs: &[Record]) -> Vec<(u32, u64)> {
        let mut v = Vec::new();
        let mut at = 0;
        while at < recs.len() {
            let p = delta::peek_header(&recs[at..]).unwrap();
            v.push((p.header.slot, p.header.seq));
            at += p.records;
        }
        v
    }

    #[test]
    fn consecutive_updates_of_one_flow_keep_the_last_in_the_first_place() {
        let mut recs = Vec::new();
        recs.extend(rec(DeltaKind::FlowUpdate, 1, 1, State::Established, 100));
        recs.extend(rec(DeltaKind::FlowUpdate, 2, 2, State::Established, 5));
        recs.extend(rec(DeltaKind::FlowUpdate, 1, 3, State::Established, 200));
        recs.extend(rec(DeltaKind::FlowUpdate, 1, 4, State::Established, 300));
        let mut out = Vec::new();
        let n = coalesce(&recs, &mut out);
        assert_eq!(n, 2);
        assert_eq!(seqs(&out), vec![(1, 4), (2, 2)]);
        let (d, _) = delta::decode(&out).unwrap();
        match d.body {
            DeltaBody::FlowUpdate(s) => assert_eq!(s.to_image().unwrap().tcb.tx_acked, 300),
            b => panic!("{b:?}"),
        }
    }

    #[test]
    fn data_state_changes_fin_and_new_are_never_merged_across() {
        let mut recs = Vec::new();
        // New then update: both stay (the New creates the shadow flow).
        recs.extend(rec(DeltaKind::FlowNew, 1, 1, State::SynReceived, 0));
        recs.extend(rec(DeltaKind::FlowUpdate, 1, 2, State::SynReceived, 0));
        // Update, data, update: all stay (image -> data order).
        recs.extend(rec(DeltaKind::FlowUpdate, 1, 3, State::Established, 0));
        recs.extend(data(1, 4, 0));
        recs.extend(rec(DeltaKind::FlowUpdate, 1, 5, State::Established, 10));
        // A state change: stays.
        recs.extend(rec(DeltaKind::FlowUpdate, 1, 6, State::CloseWait, 10));
        // Same FIN-received state twice: both stay (FIN delivery order).
        recs.extend(rec(DeltaKind::FlowUpdate, 1, 7, State::CloseWait, 20));
        let mut out = Vec::new();
        let n = coalesce(&recs, &mut out);
        assert_eq!(n, 0);
        assert_eq!(out, recs);
    }

    #[test]
    fn steps_coalesce_with_steps_but_never_with_full_updates() {
        let mut recs = Vec::new();
        recs.extend(rec(DeltaKind::FlowStep, 1, 1, State::Established, 100));
        recs.extend(rec(DeltaKind::FlowStep, 1, 2, State::Established, 200));
        recs.extend(rec(DeltaKind::FlowUpdate, 1, 3, State::Established, 300));
        recs.extend(rec(DeltaKind::FlowStep, 1, 4, State::Established, 400));
        recs.extend(rec(DeltaKind::FlowStep, 2, 5, State::CloseWait, 1));
        recs.extend(rec(DeltaKind::FlowStep, 2, 6, State::CloseWait, 2));
        let mut out = Vec::new();
        assert_eq!(coalesce(&recs, &mut out), 1, "only step 2 replaces step 1");
        assert_eq!(seqs(&out), vec![(1, 2), (1, 3), (1, 4), (2, 5), (2, 6)]);
        let (d, _) = delta::decode(&out).unwrap();
        match d.body {
            DeltaBody::FlowStep(t) => assert_eq!((t.tx_acked_lo, t.state), (200, State::Established as u8)),
            b => panic!("{b:?}"),
        }
    }
}
