//! Replication as a worker's stack does it (DESIGN §4): after every TCP call, the flow's
//! image and the bytes its service consumed go to the [`Replicator`]; the output the call
//! built is tagged with the change it depends on (output commit); flows whose delta was lost
//! to a full ring are re-imaged; a joining standby gets a paced snapshot of every flow.

use super::{Stack, SNAPSHOT_WINDOW};
use crate::commit::{CommitTag, Lane};
use crate::group::{GroupId, GroupSet};
use crate::counters::Event;
use crate::flow::FlowId;
use crate::replica::{FlowImage, ReplEvent};
use crate::service::{Bound, ByteStream};
use crate::tcp::DirtyFlags;

/// Records the bytes a service consumes so they can be replicated (the standby replays them).
pub(super) struct Recorder<'a, 'b> {
    pub(super) inner: Bound<'a>,
    pub(super) log: &'b mut Vec<u8>,
}

impl ByteStream for Recorder<'_, '_> {
    fn on_recv(&mut self, data: &[u8]) -> usize {
        let n = self.inner.on_recv(data);
        self.log.extend_from_slice(&data[..n.min(data.len())]);
        n
    }
    fn on_peer_fin(&mut self) {
        self.inner.on_peer_fin()
    }
    fn tx_end(&self) -> u64 {
        self.inner.tx_end()
    }
    fn tx_closed(&self) -> bool {
        self.inner.tx_closed()
    }
    fn read_at(&self, off: u64, buf: &mut [u8]) -> usize {
        self.inner.read_at(off, buf)
    }
    fn on_acked(&mut self, off: u64) {
        self.inner.on_acked(off)
    }
    fn rx_space(&self) -> usize {
        self.inner.rx_space()
    }
    fn ack_limit(&self) -> Option<u64> {
        self.inner.ack_limit()
    }
    fn catch_up_end(&self) -> u64 {
        self.inner.catch_up_end()
    }
    fn take_skipped(&mut self) -> u64 {
        self.inner.take_skipped()
    }
}

impl Stack {
    /// The sequence number the output built since the previous tag depends on: it may leave
    /// once the standby acknowledged it. `None` while some flow's replica is incomplete (hold
    /// everything; the next tag covers it). Returning a tag starts the next interval, so call
    /// it exactly once per batch of output handed to the output-commit hold.
    ///
    /// The tag is the newest *commit-relevant* change of the flows that produced output, not
    /// the newest change of the worker: a flow's creation, the bytes it received, its state
    /// changes. Pure send progress (the client acknowledged bytes, windows, timestamps) is
    /// replicated too, but output does not wait for it: what a flow sends is a deterministic
    /// function of its service stream offset, and a standby whose progress image lags behind
    /// catches up from the client's ACK at takeover (`flow_input`, [`Tcb::catch_up_sent`]).
    /// A download's segments therefore leave at once instead of one sync round trip later.
    ///
    /// The tag also names the flow that built the output ([`Lane`]), so that output of
    /// other flows need not wait behind it (`commit::OutputHold`): `Lane::Any` when several
    /// flows or none did.
    pub fn commit_tag(&self) -> Option<CommitTag> {
        match &self.repl {
            None => {
                self.lane.set(None);
                self.tag_groups.set(GroupSet::NONE);
                Some(CommitTag::NONE)
            }
            Some(_) if !self.resync.is_empty() => None,
            Some(_) => Some(CommitTag {
                seq: self.tag.replace(0),
                lane: self.lane.take().unwrap_or(Lane::Any),
                groups: self.tag_groups.replace(GroupSet::NONE),
            }),
        }
    }

    /// The ownership group of flow `id`: its listener's VIP's (the default group for a flow
    /// that is gone).
    pub(super) fn flow_group(&self, id: FlowId) -> GroupId {
        self.flows
            .get(id)
            .and_then(|f| self.listener_groups.get(f.listener as usize).copied())
            .unwrap_or_default()
    }

    /// Flow `id` built (or may have built) output in this interval, which depends on its
    /// change `seq` and, for one half of a linked pair, on its partner's latest change
    /// (`open`: what one half sends may be what the other received).
    pub(super) fn touch_tag(&self, seq: u64, id: FlowId) {
        let seq = seq.max(self.partner_seq(id));
        if seq > self.tag.get() {
            self.tag.set(seq);
        }
        let mut groups = self.tag_groups.get().union(GroupSet::of(self.flow_group(id)));
        if let Some(p) = self.partner(id) {
            groups = groups.union(GroupSet::of(self.flow_group(p)));
        }
        self.tag_groups.set(groups);
        let lane = match self.lane.get() {
            None => Lane::Flow(id.index()),
            Some(Lane::Flow(i)) if i == id.index() => Lane::Flow(i),
            Some(_) => Lane::Any,
        };
        self.lane.set(Some(lane));
    }

    /// Give the replicator a chance to drain its backlog and re-image flows whose delta was
    /// lost to a full ring; continue a join snapshot.
    pub fn replication_tick(&mut self) {
        let Some(r) = self.repl.as_mut() else { return };
        r.flush();
        while let Some(&id) = self.resync.last() {
            if !self.emit_full_image(id) {
                return;
            }
            self.resync.pop();
        }
        if let Some((token, mut todo)) = self.snapshot.take() {
            while let Some(&id) = todo.last() {
                if self.snapshot_window_full() || !self.emit_full_image(id) {
                    self.snapshot = Some((token, todo));
                    return;
                }
                todo.pop();
            }
            let done = self.repl.as_mut().map(|r| r.emit_in(GroupId::DEFAULT, (0, 0), ReplEvent::Barrier(token)).is_ok()).unwrap_or(true);
            if done {
                self.counters.event(Event::SnapshotsEmitted);
            } else {
                self.snapshot = Some((token, todo));
            }
        }
    }

    /// The standby acknowledged every delta up to `seq` (the output-commit watermark;
    /// `u64::MAX` when output does not wait for it): paces a join snapshot.
    pub fn set_standby_acked(&mut self, seq: u64) {
        self.standby_acked = seq;
    }

    fn snapshot_window_full(&self) -> bool {
        let Some(r) = self.repl.as_ref() else { return false };
        if self.standby_acked == u64::MAX {
            return false;
        }
        r.last_seq().saturating_sub(self.standby_acked.max(self.snapshot_base)) >= SNAPSHOT_WINDOW
    }

    /// A standby joined: image every flow (New + SvcImage), then `Barrier(token)`.
    pub fn request_snapshot(&mut self, token: u64) {
        let ids: Vec<FlowId> = self.flows.iter().filter(|(_, _, f)| !f.local).map(|(id, _, _)| id).collect();
        self.snapshot = Some((token, ids));
        self.snapshot_base = self.repl.as_ref().map_or(0, |r| r.last_seq());
        self.replication_tick();
    }

    fn image_of(&self, id: FlowId) -> Option<FlowImage> {
        let (key, f) = (self.flows.key(id)?, self.flows.get(id)?);
        let link = self.partner(id).map(|p| (p.index(), p.generation()));
        Some(FlowImage {
            key: *key,
            tcb: f.tcb.snapshot(),
            peer_mac: f.peer_mac,
            vip_mac: f.vip_mac,
            listener: f.listener,
            listener_fp: self.cfg.listener_fingerprint(usize::from(f.listener)),
            origin: f.origin,
            link,
        })
    }

    /// New + SvcImage for one flow; false if the ring is full (retry later).
    pub(super) fn emit_full_image(&mut self, id: FlowId) -> bool {
        if self.flows.get(id).is_some_and(|f| f.local) {
            return true; // never replicated (`Flow::local`)
        }
        let Some(img) = self.image_of(id) else { return true };
        let mut bytes = Vec::new();
        if let Some(f) = self.flows.get(id) {
            f.svc.image(&mut bytes);
        }
        let slot = (id.index(), id.generation());
        let group = self.flow_group(id);
        let Some(r) = self.repl.as_mut() else { return true };
        let seq = match r.emit_in(group, slot, ReplEvent::New(&img)).and_then(|_| r.emit_in(group, slot, ReplEvent::SvcImage(&bytes))) {
            Ok(seq) => seq,
            Err(_) => return false,
        };
        if let Some(f) = self.flows.get_mut(id) {
            f.repl_seq = seq;
            f.una_seq = seq;
            f.needs_image = false;
        }
        self.touch_tag(seq, id);
        self.counters.add(Event::DeltasEmitted, 2);
        true
    }

    /// After a TCP call on flow `id`: replicate what changed (image first, then the bytes
    /// the service consumed, in that order; see `replica`), and fold the flow's commit tag
    /// into the tag of the output this call built.
    pub(super) fn replicate(&mut self, id: FlowId, new: bool) {
        if self.repl.is_none() {
            self.rx_log.clear();
            if let Some(f) = self.flows.get_mut(id) {
                f.tcb.dirty.take();
            }
            return;
        }
        // A proxy with `commit = "peer"` replicates no payload past the first request (read
        // before the choice of backend): its halves acknowledge what they receive only once
        // the other side's peer has it (`Tcb::ack_point`). `until`: below which offset what
        // the flow receives is replicated; `delivered`: where its received stream stands.
        let (dirty, last, needs_image, until, delivered) = match self.flows.get_mut(id) {
            Some(f) if f.local => {
                // Never replicated (`Flow::local`): its output depends on nothing the standby
                // must hold, and keeps its own lane.
                f.tcb.dirty.take();
                self.rx_log.clear();
                self.touch_tag(0, id);
                return;
            }
            Some(f) => {
                let until = self.cfg.listeners.get(usize::from(f.listener)).map_or(u64::MAX, |l| f.svc.replicated_until(&l.spec));
                (f.tcb.dirty.take(), f.repl_seq, f.needs_image, until, f.tcb.rx_delivered())
            }
            None => (DirtyFlags::default(), 0, false, u64::MAX, 0),
        };
        let peer = until != u64::MAX;
        if peer && delivered.saturating_sub(self.rx_log.len() as u64) >= until {
            self.rx_log.clear();
        }
        if needs_image {
            // Its re-image (`replication_tick`) carries this change too; its output waits
            // for it (`commit_tag` holds everything while a flow awaits one).
            self.rx_log.clear();
            return;
        }
        if !(new || !dirty.is_empty() || !self.rx_log.is_empty()) {
            self.touch_tag(last, id);
            return;
        }
        let Some(img) = self.image_of(id) else {
            self.rx_log.clear();
            return;
        };
        // Output waits for a change unless the change is pure send progress (see commit_tag).
        // With `commit = "peer"` the bytes received are not waited for (the standby never
        // holds them; what was relayed but not acknowledged comes again), but what the peer
        // acknowledged is: the other half acknowledges its own peer's bytes by it.
        // It matters to the partner's output, not to this flow's own (`una_seq`): its data
        // and its ACK depend on what its own peer sent and on the partner's acknowledgements.
        let una = peer && dirty.intersects(DirtyFlags::SND_UNA);
        let commit = if peer {
            new || !self.rx_log.is_empty() || !DirtyFlags(DirtyFlags::PROGRESS.0 | DirtyFlags::RCV_NXT.0).contains(dirty)
        } else {
            new || !self.rx_log.is_empty() || !DirtyFlags::PROGRESS.contains(dirty)
        };
        let slot = (id.index(), id.generation());
        let log = std::mem::take(&mut self.rx_log);
        let group = self.flow_group(id);
        let mut ok = true;
        let mut seq = 0;
        if let Some(r) = self.repl.as_mut() {
            let ev = if new {
                ReplEvent::New(&img)
            } else if dirty.intersects(DirtyFlags::IDENTITY) {
                ReplEvent::Update(&img)
            } else {
                ReplEvent::Step(&img)
            };
            match r.emit_in(group, slot, ev) {
                Ok(s) => seq = s,
                Err(_) => ok = false,
            }
            if ok && !log.is_empty() {
                let offset = img.tcb.rx_delivered - log.len() as u64;
                match r.emit_in(group, slot, ReplEvent::Data { offset, bytes: &log }) {
                    Ok(s) => seq = s,
                    Err(_) => ok = false,
                }
            }
        }
        self.rx_log = log;
        self.rx_log.clear();
        if ok {
            self.counters.event(Event::DeltasEmitted);
            let tag = if commit { seq } else { last };
            if let Some(f) = self.flows.get_mut(id) {
                f.repl_seq = tag;
                if una {
                    f.una_seq = seq;
                }
            }
            self.touch_tag(tag, id);
        } else {
            self.counters.event(Event::ReplicationFull);
            if let Some(f) = self.flows.get_mut(id) {
                f.needs_image = true;
            }
            if !self.resync.contains(&id) {
                self.resync.push(id);
            }
        }
    }
}
