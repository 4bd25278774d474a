//! Output commit (DESIGN §4, strict mode): frames wait until the standby has acknowledged the
//! replicated change they depend on, and no longer.
//!
//! A frame is built, then *tagged* with a [`CommitTag`] (`Stack::commit_tag`): the sequence
//! number of the last commit-relevant delta of the flow that built it, and which flow that was
//! (its [`Lane`]). [`OutputHold`] keeps tagged frames until the sync core's watermark for the
//! worker reaches their tag.
//!
//! **Order.** Frames of one flow leave in the order they were built. Frames of different flows
//! do not wait for each other: a download's segment, whose tag the standby acknowledged long
//! ago, passes a SYN-ACK that still waits for the new flow's creation to be acknowledged. In a
//! FIFO it would wait behind it, so under connection churn every download segment paid a sync
//! round trip for another flow's handshake. A frame whose lane is [`Lane::Any`] (built by
//! several flows in one interval, or by none: ARP, resets for unknown flows, a takeover's
//! probes) keeps FIFO order against every frame, both ways.
//!
//! Lanes are flow-table indices: a slot reused by a new flow while the old one's frames still
//! wait orders the two flows' frames, which is never wrong, only slower.
//!
//! Sans-IO and generic over the frame type: the DPDK loop holds mbufs, the replication tests
//! hold byte vectors, and both run this code.

use std::collections::VecDeque;

use crate::group::{GroupSet, MAX_GROUPS};

/// Which flow built a batch of frames.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Lane {
    /// One flow, by flow-table index.
    Flow(u32),
    /// Several flows or none: ordered against every other frame.
    Any,
}

/// The watermark that holds every frame, even one that depends on no change (tag 0: a
/// retransmission, a probe). A handover sets it: the two engines' TCP timestamp clocks
/// differ, and a segment from the wrong one would make the client discard the other's as
/// old (PAWS), so neither may speak until one of them owns the flows again.
pub const HOLD_ALL: u64 = u64::MAX - 1;

/// What a batch of frames waits for: the watermark of each group in `groups` to reach
/// `seq`, in `lane`'s order.
///
/// Sequence numbers are the worker's (one space for all its flows, whatever their group),
/// but each ownership group may be replicated by another session to another peer, whose
/// acknowledgements move that group's watermark only ([`Watermarks`]). `groups` names the
/// groups of the flows that built the batch; empty (ARP, a reset for an unknown flow) means
/// every group's watermark, the one order that was there before groups.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct CommitTag {
    pub seq: u64,
    pub lane: Lane,
    pub groups: GroupSet,
}

impl CommitTag {
    /// Output that depends on nothing replicated (no standby): leaves at once, in order.
    pub const NONE: CommitTag = CommitTag { seq: 0, lane: Lane::Any, groups: GroupSet::NONE };
}

/// How far the standby of each ownership group acknowledged the worker's deltas: one
/// watermark per group, or one for all ([`Watermarks::uniform`], an engine with one session
/// for every group, and every simulation of one). [`HOLD_ALL`] and `u64::MAX` (release
/// everything) keep their meaning per group.
#[derive(Copy, Clone, Debug)]
pub struct Watermarks {
    /// Groups with a watermark of their own, `w[..n]`; 0: `w[0]` is every group's.
    n: u8,
    w: [u64; MAX_GROUPS],
}

impl Watermarks {
    /// One watermark for every group.
    pub const fn uniform(w: u64) -> Watermarks {
        let mut a = [0; MAX_GROUPS];
        a[0] = w;
        Watermarks { n: 0, w: a }
    }

    /// Group `g`'s watermark is `per_group[g]` (at most [`MAX_GROUPS`]; an empty slice is
    /// `uniform(u64::MAX)`). A group beyond the slice has the lowest of them.
    pub fn per_group(per_group: &[u64]) -> Watermarks {
        let n = per_group.len().min(MAX_GROUPS);
        if n == 0 {
            return Watermarks::uniform(u64::MAX);
        }
        let mut a = [0; MAX_GROUPS];
        a[..n].copy_from_slice(&per_group[..n]);
        Watermarks { n: n as u8, w: a }
    }

    /// The watermark output of the flows of `groups` waits for: the lowest of theirs (of
    /// every group's, for an empty set or one outside the configured groups).
    #[inline]
    pub fn of(&self, groups: GroupSet) -> u64 {
        if self.n == 0 {
            return self.w[0];
        }
        let n = self.n as usize;
        let inside = groups.0 & GroupSet::first(n).0;
        let mut bits = if inside == 0 { GroupSet::first(n).0 } else { inside };
        let mut low = u64::MAX;
        while bits != 0 {
            let g = bits.trailing_zeros() as usize;
            low = low.min(self.w[g]);
            bits &= bits - 1;
        }
        low
    }

    /// Every group holds everything ([`HOLD_ALL`]).
    fn all_hold(&self) -> bool {
        let n = (self.n as usize).max(1);
        self.w[..n].iter().all(|&w| w == HOLD_ALL)
    }
}

impl From<u64> for Watermarks {
    fn from(w: u64) -> Watermarks {
        Watermarks::uniform(w)
    }
}

impl PartialEq for Watermarks {
    fn eq(&self, o: &Watermarks) -> bool {
        let n = (self.n as usize).max(1);
        self.n == o.n && self.w[..n] == o.w[..n]
    }
}

impl Eq for Watermarks {}

struct Held<T> {
    seq: u64,
    lane: Lane,
    groups: GroupSet,
    /// µs (worker clock) when the frame was tagged.
    since_us: u64,
    frame: T,
}

/// Frames waiting for the standby: built but not yet tagged (`pending`), then tagged
/// (`held`), in the order they were built.
pub struct OutputHold<T> {
    pending: Vec<T>,
    held: VecDeque<Held<T>>,
    /// Frames were tagged since the last release scan (the watermark moving is the other
    /// reason to scan again).
    tagged: bool,
    last_wm: Watermarks,
    /// Scratch for a release scan: the lanes of the frames it kept, up to [`KEPT_EXACT`]
    /// of them (a 64-bit filter of all of them first, so the common miss costs one AND).
    kept: Vec<u32>,
}

/// Lanes a release scan tells apart exactly. Beyond that (thousands of flows waiting, a SYN
/// flood) a frame whose filter bit is taken waits: scans stay linear in the frames held.
const KEPT_EXACT: usize = 32;

/// Allocates nothing, so `mem::take` of a hold costs no `malloc`/`free`: the worker swaps
/// its hold out for every release scan (the send closure borrows the rest of the sink).
impl<T> Default for OutputHold<T> {
    fn default() -> Self {
        OutputHold::with_capacity(0)
    }
}

impl<T> OutputHold<T> {
    /// Room for `n` held frames without reallocating; `0` allocates nothing.
    pub fn with_capacity(n: usize) -> Self {
        OutputHold {
            pending: Vec::with_capacity(n / 4),
            held: VecDeque::with_capacity(n),
            tagged: false,
            last_wm: Watermarks::uniform(0),
            kept: Vec::with_capacity(if n == 0 { 0 } else { KEPT_EXACT }),
        }
    }

    /// A frame was built; it waits for the next [`commit`](Self::commit).
    pub fn push(&mut self, frame: T) {
        self.pending.push(frame);
    }

    /// Tag every frame built since the last call (`None`: not yet committable; they stay
    /// pending and take the next tag).
    pub fn commit(&mut self, tag: Option<CommitTag>, now_us: u64) {
        let Some(t) = tag else { return };
        if self.pending.is_empty() {
            return;
        }
        for frame in self.pending.drain(..) {
            self.held.push_back(Held { seq: t.seq, lane: t.lane, groups: t.groups, since_us: now_us, frame });
        }
        self.tagged = true;
    }

    /// Hand every frame the standby has covered (the watermark of its groups) to `send`,
    /// with how long it was held (µs), unless an older frame of its flow still waits.
    /// Returns how many left.
    pub fn release(&mut self, watermark: impl Into<Watermarks>, now_us: u64, mut send: impl FnMut(T, u64)) -> usize {
        let watermark = watermark.into();
        if watermark.all_hold() {
            // Not even output that depends on nothing leaves (a handover in progress).
            self.last_wm = watermark;
            return 0;
        }
        if watermark == self.last_wm && !self.tagged {
            return 0; // nothing changed since the last scan
        }
        self.last_wm = watermark;
        self.tagged = false;
        let n = self.held.len();
        let mut released = 0;
        // Lanes of the frames kept so far in this scan: a later frame of theirs must wait.
        self.kept.clear();
        let (mut filter, mut overflow) = (0u64, false);
        for i in 0..n {
            let Some(h) = self.held.pop_front() else { break };
            let wm = watermark.of(h.groups);
            let ready = h.seq <= wm
                && wm != HOLD_ALL
                && match h.lane {
                    Lane::Flow(f) => filter & (1 << (f % 64)) == 0 || !(overflow || self.kept.contains(&f)),
                    Lane::Any => filter == 0,
                };
            if ready {
                send(h.frame, now_us.saturating_sub(h.since_us));
                released += 1;
                continue;
            }
            match h.lane {
                Lane::Flow(f) => {
                    filter |= 1 << (f % 64);
                    if !self.kept.contains(&f) {
                        if self.kept.len() < KEPT_EXACT {
                            self.kept.push(f);
                        } else {
                            overflow = true;
                        }
                    }
                    self.held.push_back(h);
                }
                Lane::Any => {
                    // Nothing may pass an `Any` frame: put the rest back behind it, in order.
                    self.held.push_back(h);
                    self.held.rotate_left(n - i - 1);
                    break;
                }
            }
        }
        released
    }

    /// Frames built or tagged and not yet released.
    pub fn len(&self) -> usize {
        self.pending.len() + self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.held.is_empty()
    }

    /// Drop everything (demotion, shutdown): held output must never leave.
    pub fn clear(&mut self) {
        self.pending.clear();
        self.held.clear();
        self.tagged = false;
    }

    /// Drop the frames `drop` picks (those of a group no longer owned: its new owner's
    /// standby image is what the client will be answered from, so they must never leave),
    /// keeping the others in order. Dropping never lets a kept frame pass one it waited
    /// behind out of turn: lanes are per flow, and a flow's frames all go or all stay.
    pub fn drop_where(&mut self, mut drop: impl FnMut(&T) -> bool) {
        self.pending.retain(|f| !drop(f));
        self.held.retain(|h| !drop(&h.frame));
        self.tagged = true;
    }

    /// Every frame not yet released, pending ones last (for tests and diagnostics).
    pub fn frames(&self) -> impl Iterator<Item = &T> + '_ {
        self.held.iter().map(|h| &h.frame).chain(self.pending.iter())
    }

    /// Tagged frames and their tags, oldest first (for tests and diagnostics).
    pub fn held_tags(&self) -> impl Iterator<Item = u64> + '_ {
        self.held.iter().map(|h| h.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(seq: u64, flow: Option<u32>) -> Option<CommitTag> {
        Some(CommitTag { seq, lane: flow.map_or(Lane::Any, Lane::Flow), groups: GroupSet::NONE })
    }

    /// Push one frame named `name`, tagged `seq` in `flow`'s lane (None: Any).
    fn put(h: &mut OutputHold<&'static str>, name: &'static str, seq: u64, flow: Option<u32>) {
        h.push(name);
        h.commit(tag(seq, flow), 0);
    }

    fn release(h: &mut OutputHold<&'static str>, wm: impl Into<Watermarks>) -> Vec<&'static str> {
        let mut out = Vec::new();
        h.release(wm, 0, |f, _| out.push(f));
        out
    }

    #[test]
    fn an_empty_hold_owns_no_memory() {
        // The worker's release scan swaps its hold out with `mem::take` every pass while
        // output waits: a default that allocated cost a malloc and a free per pass (3 % of a
        // busy worker's time in the conn/s benchmark).
        let h = OutputHold::<u8>::default();
        assert_eq!(h.pending.capacity() + h.held.capacity() + h.kept.capacity(), 0);
        let h = OutputHold::<u8>::with_capacity(64);
        assert!(h.held.capacity() >= 64 && h.kept.capacity() >= KEPT_EXACT);
    }

    #[test]
    fn an_acknowledged_frame_passes_another_flows_waiting_one() {
        let mut h = OutputHold::default();
        put(&mut h, "syn-ack of 1", 10, Some(1));
        put(&mut h, "segment of 2", 3, Some(2));
        put(&mut h, "segment of 2, next", 3, Some(2));
        assert_eq!(release(&mut h, 5), ["segment of 2", "segment of 2, next"]);
        assert_eq!(h.len(), 1);
        assert_eq!(release(&mut h, 10), ["syn-ack of 1"]);
        assert!(h.is_empty());
    }

    #[test]
    fn a_flows_frames_keep_their_order_whatever_their_tags() {
        let mut h = OutputHold::default();
        // Flow 1's first frame was tagged with a younger change than its second (a tag covers
        // everything built in its interval).
        put(&mut h, "1a", 9, Some(1));
        put(&mut h, "1b", 4, Some(1));
        put(&mut h, "2", 4, Some(2));
        assert_eq!(release(&mut h, 5), ["2"]);
        assert_eq!(release(&mut h, 9), ["1a", "1b"]);
    }

    #[test]
    fn flows_that_share_a_filter_bit_are_still_told_apart() {
        let mut h = OutputHold::default();
        put(&mut h, "1", 9, Some(1));
        put(&mut h, "65", 2, Some(65));
        put(&mut h, "1 again", 2, Some(1));
        assert_eq!(release(&mut h, 5), ["65"]);
        assert_eq!(release(&mut h, 9), ["1", "1 again"]);
    }

    #[test]
    fn nothing_passes_an_any_frame_and_it_passes_nothing() {
        let mut h = OutputHold::default();
        put(&mut h, "1", 9, Some(1));
        put(&mut h, "any", 2, None);
        put(&mut h, "2", 2, Some(2));
        put(&mut h, "3", 1, Some(3));
        assert_eq!(release(&mut h, 5), Vec::<&str>::new(), "the Any frame waits behind flow 1, and so does everything after it");
        assert_eq!(h.held_tags().collect::<Vec<_>>(), [9, 2, 2, 1], "order kept");
        assert_eq!(release(&mut h, 9), ["1", "any", "2", "3"]);

        put(&mut h, "4", 9, Some(4));
        put(&mut h, "any", 12, None);
        put(&mut h, "5", 12, Some(5));
        assert_eq!(release(&mut h, 9), ["4"]);
        assert_eq!(release(&mut h, 12), ["any", "5"]);
    }

    #[test]
    fn with_more_waiting_flows_than_it_tracks_a_frame_waits_rather_than_risk_passing() {
        let mut h = OutputHold::default();
        for f in 0..KEPT_EXACT as u32 + 1 {
            put(&mut h, "waits", 9, Some(f));
        }
        put(&mut h, "a flow beyond the exact list, ready", 1, Some(KEPT_EXACT as u32));
        put(&mut h, "a new flow whose filter bit is taken", 1, Some(64));
        put(&mut h, "flow 0 again", 1, Some(0));
        assert_eq!(release(&mut h, 5), Vec::<&str>::new());
        assert_eq!(release(&mut h, 9).len(), KEPT_EXACT + 4);
    }

    #[test]
    fn untagged_frames_wait_for_the_next_tag() {
        let mut h = OutputHold::default();
        h.push("a");
        h.commit(None, 0);
        h.push("b");
        assert_eq!(release(&mut h, u64::MAX), Vec::<&str>::new());
        assert_eq!(h.len(), 2);
        h.commit(tag(7, Some(1)), 0);
        assert_eq!(release(&mut h, 6), Vec::<&str>::new());
        assert_eq!(release(&mut h, 7), ["a", "b"]);
    }

    #[test]
    fn a_frame_tagged_at_an_acknowledged_sequence_leaves_at_the_next_release() {
        let mut h = OutputHold::default();
        assert_eq!(release(&mut h, 20), Vec::<&str>::new());
        put(&mut h, "late ack", 3, Some(1));
        assert_eq!(release(&mut h, 20), ["late ack"], "the watermark did not move, but a frame was tagged");
    }

    #[test]
    fn release_reports_how_long_each_frame_waited() {
        let mut h = OutputHold::default();
        h.push("a");
        h.commit(tag(1, Some(1)), 100);
        h.push("b");
        h.commit(tag(2, Some(2)), 130);
        let mut waited = Vec::new();
        h.release(2, 250, |f, us| waited.push((f, us)));
        assert_eq!(waited, [("a", 150), ("b", 120)]);
    }

    fn put_in(h: &mut OutputHold<&'static str>, name: &'static str, seq: u64, flow: u32, groups: u64) {
        h.push(name);
        h.commit(Some(CommitTag { seq, lane: Lane::Flow(flow), groups: GroupSet(groups) }), 0);
    }

    #[test]
    fn each_group_waits_for_its_own_watermark() {
        // Groups 0 and 1 replicated by two sessions: group 1's standby acknowledged up to 8,
        // group 0's only up to 2.
        let mut h = OutputHold::default();
        put_in(&mut h, "g0 flow", 5, 1, 0b01);
        put_in(&mut h, "g1 flow", 7, 2, 0b10);
        put_in(&mut h, "both", 4, 3, 0b11);
        assert_eq!(release(&mut h, Watermarks::per_group(&[2, 8])), ["g1 flow"]);
        assert_eq!(release(&mut h, Watermarks::per_group(&[4, 8])), ["both"], "both groups covered it");
        assert_eq!(release(&mut h, Watermarks::per_group(&[5, 8])), ["g0 flow"]);
    }

    #[test]
    fn output_of_no_group_waits_for_every_group() {
        let wm = Watermarks::per_group(&[3, 9]);
        assert_eq!(wm.of(GroupSet::NONE), 3);
        assert_eq!(wm.of(GroupSet(0b100)), 3, "a group beyond the configured ones: the lowest");
        assert_eq!(wm.of(GroupSet(0b10)), 9);
        assert_eq!(Watermarks::uniform(6).of(GroupSet(0b10)), 6);
        assert_eq!(Watermarks::per_group(&[]).of(GroupSet::NONE), u64::MAX);
    }

    #[test]
    fn one_group_held_whole_holds_only_its_own_frames() {
        // Group 0 is being handed over (HOLD_ALL); group 1 serves on.
        let mut h = OutputHold::default();
        put_in(&mut h, "g0 probe", 0, 1, 0b01);
        put_in(&mut h, "g1 probe", 0, 2, 0b10);
        let wm = Watermarks::per_group(&[HOLD_ALL, u64::MAX]);
        assert_eq!(release(&mut h, wm), ["g1 probe"]);
        assert_eq!(release(&mut h, Watermarks::per_group(&[HOLD_ALL, HOLD_ALL])), Vec::<&str>::new());
        assert_eq!(release(&mut h, Watermarks::per_group(&[0, HOLD_ALL])), ["g0 probe"]);
    }

    #[test]
    fn clear_drops_everything() {
        let mut h = OutputHold::default();
        put(&mut h, "a", 1, Some(1));
        h.push("b");
        h.clear();
        assert!(h.is_empty());
        assert_eq!(release(&mut h, u64::MAX), Vec::<&str>::new());
    }

    /// Against a model: random tags, lanes and watermarks; every frame leaves exactly once,
    /// never before the watermark covers it, and each flow's frames (and every Any frame
    /// against everything) in the order they were built.
    #[test]
    fn matches_the_ordering_model_on_random_schedules() {
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut passed = 0;
        for _ in 0..200 {
            let mut h: OutputHold<(u64, u32, u64)> = OutputHold::default();
            let (mut id, mut seq, mut wm) = (0u64, 0u64, 0u64);
            let mut built: Vec<(u64, u32, u64)> = Vec::new(); // (id, lane (u32::MAX = Any), tag)
            let mut sent: Vec<(u64, u32, u64)> = Vec::new();
            for _ in 0..300 {
                match next() % 4 {
                    0 | 1 => {
                        seq += next() % 3;
                        let lane = if next() % 10 == 0 { u32::MAX } else { (next() % 130) as u32 };
                        let t = seq.saturating_sub(next() % 8);
                        for _ in 0..=next() % 3 {
                            id += 1;
                            h.push((id, lane, t));
                            built.push((id, lane, t));
                        }
                        let l = if lane == u32::MAX { Lane::Any } else { Lane::Flow(lane) };
                        h.commit(Some(CommitTag { seq: t, lane: l, groups: GroupSet::NONE }), 0);
                    }
                    _ => {
                        wm = (wm + next() % 4).min(seq);
                        h.release(wm, 0, |f, _| {
                            assert!(f.2 <= wm, "frame {f:?} left before watermark {wm}");
                            sent.push(f);
                        });
                    }
                }
            }
            h.release(u64::MAX, 0, |f, _| sent.push(f));
            assert!(h.is_empty());
            let mut ids: Vec<u64> = sent.iter().map(|f| f.0).collect();
            ids.sort_unstable();
            assert_eq!(ids, built.iter().map(|f| f.0).collect::<Vec<_>>(), "every frame exactly once");
            let pos = |id: u64| sent.iter().position(|f| f.0 == id).unwrap();
            for (i, a) in built.iter().enumerate() {
                for b in &built[i + 1..] {
                    if a.1 == b.1 || a.1 == u32::MAX || b.1 == u32::MAX {
                        assert!(pos(a.0) < pos(b.0), "{a:?} was built before {b:?} but left after it");
                    }
                }
            }
            passed += sent.windows(2).filter(|w| w[0].0 > w[1].0).count();
        }
        assert!(passed > 1000, "frames passed others only {passed} times: the schedules tested little");
    }
}
