//! One worker iteration, sans-IO: the order in which a worker hands received frames, timers
//! and replication to its [`Stack`] and lets held output leave. The DPDK loop
//! (`dataplane::run_worker`) runs it on mbufs; the replication and takeover simulations
//! (`sync/tests`) run it on byte buffers, so the order they prove is the order that runs.
//!
//! [`Iteration::run`] is the whole pass: [`Iteration::receive`] for every received frame,
//! then [`Iteration::finish`]. A simulation that kills an engine *between* two received
//! frames calls the two halves itself; nothing else may come between them.
//!
//! At a takeover, [`resume`] installs the replicas before the next pass.

use std::collections::HashMap;

use crate::commit::Watermarks;
use crate::flow::FlowKey;
use crate::group::GroupSet;
use crate::replica::{Partner, ShadowFlow};
use crate::stack::{FrameSink, Stack, KICK_BURST};
use crate::time::{Duration, Instant};

/// How long after a takeover segments of unknown flows are dropped instead of reset.
pub const TAKEOVER_GRACE: Duration = Duration::from_secs(3);

/// A [`FrameSink`] that holds output for the standby ([`crate::commit`]): what it was given
/// leaves in [`release`](Self::release), once the watermark covers the frames' seals.
pub trait CommitSink: FrameSink {
    /// Send every held frame whose tag the watermark of its groups covers
    /// (`OutputHold::release` order).
    fn release(&mut self, watermark: Watermarks, now: Instant);
    /// Frames built and not yet released: output waits for the standby.
    fn waiting(&self) -> bool;
}

/// What an iteration reads from the sync core (the dataplane's `ReplControl` is one).
pub trait CommitControl {
    /// Per ownership group, the highest delta sequence its standby acknowledged that output
    /// waits for (u64::MAX: nothing to wait for; `commit::HOLD_ALL`: hold everything).
    /// Implementations load with Acquire, pairing with the sync core's Release stores.
    fn watermarks(&self) -> Watermarks;
    /// Highest delta sequence the standby acknowledged at all (paces join snapshots).
    fn standby_acked(&self) -> u64;
    /// Output waits for the standby after this pass: wake the sync core if it is parked.
    fn deltas_queued(&self) {}
}

/// A standby that acknowledged everything up to `.0` (for output and for pacing alike): the
/// control of a simulation, whose sync link is a scripted queue, or of an engine serving
/// alone (`u64::MAX`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Acked(pub u64);

impl CommitControl for Acked {
    fn watermarks(&self) -> Watermarks {
        Watermarks::uniform(self.0)
    }
    fn standby_acked(&self) -> u64 {
        self.0
    }
}

/// Received frames, handed to the iteration one at a time. A source may recycle a frame's
/// buffer once its call returns (the DPDK burst frees its mbufs before the timers allocate
/// theirs). Any iterator of byte slices is one.
pub trait RxFrames {
    fn each(&mut self, f: impl FnMut(&[u8]));
}

impl<'a, I: Iterator<Item = &'a [u8]>> RxFrames for I {
    #[inline]
    fn each(&mut self, f: impl FnMut(&[u8])) {
        self.for_each(f);
    }
}

/// One pass of a worker, in the one order every caller uses.
///
/// 1. **Each received frame: [`Stack::process`], then seal.** Whatever the frame made the
///    stack build (a SYN-ACK, an ACK of the client's bytes, data) depends on the change that
///    frame caused, so it is tagged with [`Stack::commit_tag`] right away: the tag of one
///    flow's call names that flow's lane, and its frames need not wait behind another flow's
///    (`commit` module). Sealing only after the burst would give every frame of it the
///    newest tag of all, in `Lane::Any`: a download's segments would wait for a new flow's
///    creation. (Without a standby nothing is held, and nothing is sealed.)
/// 2. **Timers: [`Stack::poll`].** After the frames, so that an ACK that arrived in this
///    burst cancels a retransmission before it is sent. `poll` seals after each flow's
///    frames itself, for the same reason as 1.
/// 3. **Replication tick, then seal.** [`Stack::set_standby_acked`] first (the tick's join
///    snapshot is paced by it), then [`Stack::replication_tick`]: the replicator retries what
///    a full ring refused and re-images flows that lost a delta, and the join snapshot goes
///    on. A flow awaiting its re-image makes `commit_tag` hold everything (`None`), so the
///    frames of 1 and 2 may still be untagged here; the seal after the tick gives them the
///    tag that covers the re-image, and tags what the tick itself touched.
/// 4. **Release up to the watermark.** Last, because only sealed frames can leave and
///    everything built in this pass is sealed by now; reading the watermark this late lets
///    out whatever the standby acknowledged while the pass ran. A frame whose tag the
///    standby already covers (send progress, a retransmission) leaves in this very pass.
/// 5. **Wake the sync core** if output still waits, so the acknowledgement that releases it
///    is not delayed by its park. Deltas that hold nothing wait for its next bounded park.
///
/// Steps 3–5 run only with a control (an engine with a standby, or a simulation of one).
/// Sending what [`CommitSink::release`] gives out (a TX burst) is the caller's.
#[derive(Debug)]
pub struct Iteration<'c, C: CommitControl + ?Sized> {
    control: Option<&'c C>,
}

impl<C: CommitControl + ?Sized> Clone for Iteration<'_, C> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<C: CommitControl + ?Sized> Copy for Iteration<'_, C> {}

impl<'c, C: CommitControl + ?Sized> Iteration<'c, C> {
    /// `control`: the sync core's (or a simulation's) acknowledgements; `None`: an engine
    /// without a standby, whose sink sends at once.
    pub fn new(control: Option<&'c C>) -> Self {
        Iteration { control }
    }

    /// The whole pass: every frame of `frames` ([`receive`](Self::receive)), then
    /// [`finish`](Self::finish).
    #[inline]
    pub fn run<S: CommitSink + ?Sized>(self, stack: &mut Stack, now: Instant, frames: &mut impl RxFrames, sink: &mut S) {
        frames.each(|f| self.receive(stack, now, f, sink));
        self.finish(stack, now, sink);
    }

    /// Before the pass's frames: what the other workers of this engine heard for this one
    /// (`dataplane::NeighborMail`: next-hop answers that let held SYNs go) was handed to
    /// `stack` by the caller, `learned` frames of it; seal them apart, as the output of
    /// their own flows, so they leave with this pass's release and not behind its frames.
    #[inline]
    pub fn delivered<S: CommitSink + ?Sized>(self, stack: &Stack, now: Instant, learned: usize, sink: &mut S) {
        if learned > 0 && self.control.is_some() {
            sink.seal(stack.commit_tag(), now);
        }
    }

    /// Before the pass: the sync core asked for a join snapshot (a standby joined) under a
    /// new `token`. The acknowledgement after the token comes first: the snapshot is paced
    /// by it. Does nothing without a control.
    pub fn snapshot(self, stack: &mut Stack, token: u64) {
        if let Some(c) = self.control {
            stack.set_standby_acked(c.standby_acked());
            stack.request_snapshot(token);
        }
    }

    /// Step 1 for one received frame.
    #[inline]
    pub fn receive<S: CommitSink + ?Sized>(self, stack: &mut Stack, now: Instant, frame: &[u8], sink: &mut S) {
        stack.process(now, frame, sink);
        if self.control.is_some() {
            sink.seal(stack.commit_tag(), now);
        }
    }

    /// Steps 2–5, after the pass's frames.
    pub fn finish<S: CommitSink + ?Sized>(self, stack: &mut Stack, now: Instant, sink: &mut S) {
        stack.poll(now, sink);
        if let Some(c) = self.control {
            stack.set_standby_acked(c.standby_acked());
            stack.replication_tick();
            sink.seal(stack.commit_tag(), now);
            sink.release(c.watermarks(), now);
            if sink.waiting() {
                c.deltas_queued();
            }
        }
    }
}

/// A takeover: make `stack` own every group, drop segments of flows it does not know for
/// [`TAKEOVER_GRACE`] (their replicas may still be on their way; a reset would kill them),
/// install every replica (each probes its client and resends from SND.UNA,
/// [`Stack::install`]) and seal what they built, so the probes leave with the next release.
/// Announcing the VIPs is the caller's, before this (announcements are not held). Returns
/// (flows installed, flows not installed: the table was full, or an orphaned link half that
/// was still opening).
///
/// The two halves of a linked pair ([`Partner::Key`], found by the standby:
/// `replica::pair_links`) are installed together or not at all ([`Stack::install_pair`]); a
/// half whose partner is not among `flows` is installed as an orphan (`stack::open`).
pub fn resume<S: FrameSink + ?Sized>(stack: &mut Stack, now: Instant, flows: impl IntoIterator<Item = ShadowFlow>, sink: &mut S) -> (u64, u64) {
    let all = stack.config().all_groups();
    resume_groups(stack, all, now, flows, sink)
}

/// [`resume`] for the groups `groups` only: the stack owns them too from now on (and keeps
/// owning the others it owned).
pub fn resume_groups<S: FrameSink + ?Sized>(
    stack: &mut Stack,
    groups: GroupSet,
    now: Instant,
    flows: impl IntoIterator<Item = ShadowFlow>,
    sink: &mut S,
) -> (u64, u64) {
    stack.set_owned(stack.owned().union(groups));
    stack.set_grace_until(now + TAKEOVER_GRACE);
    // The first burst of flows probes now; the rest from the next passes' `Stack::poll`, a
    // burst each, so that thousands of probes do not exhaust the mbuf pool at once.
    stack.set_kicks_now(KICK_BURST);
    let (mut ok, mut lost) = (0u64, 0u64);
    let mut count = |installed: bool, n: u64| if installed { ok += n } else { lost += n };
    // Linked halves whose partner has not come by yet, by their own key.
    let mut halves: HashMap<FlowKey, ShadowFlow> = HashMap::new();
    for f in flows {
        let Partner::Key(other) = f.partner else {
            count(stack.install(now, f, sink), 1);
            continue;
        };
        match halves.remove(&other) {
            Some(p) if p.partner == Partner::Key(f.image.key) => count(stack.install_pair(now, p, f, sink), 2),
            Some(p) => {
                // Not each other's partner: both are orphans.
                count(stack.install(now, p, sink), 1);
                count(stack.install(now, f, sink), 1);
            }
            None => {
                halves.insert(f.image.key, f);
            }
        }
    }
    let mut rest: Vec<ShadowFlow> = halves.into_values().collect();
    rest.sort_by_key(|f| (f.image.key.remote_ip, f.image.key.remote_port, f.image.key.local_ip, f.image.key.local_port));
    for f in rest {
        count(stack.install(now, f, sink), 1);
    }
    stack.set_kicks_now(usize::MAX);
    sink.seal(stack.commit_tag(), now);
    (ok, lost)
}
