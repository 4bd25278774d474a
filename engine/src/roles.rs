//! A worker's role, per ownership group, sans-IO: what the control plane publishes
//! ([`RoleShared`]: the groups owned, a takeover's replicas, whether to keep flows after a
//! handover) and how a worker follows it ([`RoleFollower::follow`], called once per loop pass
//! before the RX burst by the DPDK loop and by the tests).
//!
//! Per group, a worker goes through: **standby** (frames for the group's VIPs are dropped
//! and counted as `standby`) → **takeover** (replicas installed, VIPs announced, the group
//! owned) or **owning without a takeover** (start-up, after a rejoin: announced, with a
//! grace period in which segments of unknown flows are dropped, not reset) → **lost**
//! (fenced or demoted: the group's flows and held output are forgotten, or kept after a
//! handover until the control plane no longer needs them). Groups change independently: a
//! worker that loses one group keeps serving the others, and only the lost group's flows and
//! held frames go.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::group::GroupSet;
use crate::iteration::{resume_groups, CommitSink, TAKEOVER_GRACE};
use crate::replica::ShadowFlow;
use crate::stack::Stack;
use crate::time::{Duration, Instant};

/// After an announcement, repeat it this long after the first (keepalived repeats its
/// gratuitous ARPs too): the old active's last frames, sent from the VIP's MAC between our
/// first announcement and its fencing, would otherwise teach the switch its port again, and
/// clients' frames would go there until something of ours passed the switch.
pub const REANNOUNCE_AFTER_MS: [u64; 4] = [10, 50, 250, 1000];


/// Engine-wide role, shared by the workers and the control plane.
#[derive(Default)]
pub struct RoleShared {
    /// The ownership groups this engine serves ([`GroupSet`] bits): workers drop what they
    /// receive for the others' VIPs. 0 on a standby of every group. Stored with Release by
    /// the control plane, loaded with Acquire by the workers.
    owned: AtomicU64,
    /// Set by the takeover: per-worker replicas to install, then become active.
    pub takeover: Vec<Mutex<Option<Vec<ShadowFlow>>>>,
    pub takeover_pending: Vec<AtomicBool>,
    /// The pending takeover resumes the flows the workers kept (after a handover) instead of
    /// replacing them. Set before `takeover_pending`.
    pub takeover_retained: AtomicBool,
    /// The groups the pending takeover is for ([`GroupSet`] bits). Set before
    /// `takeover_pending`.
    pub takeover_groups: AtomicU64,
    /// While not active, keep the flows (and their held output) instead of forgetting them:
    /// this engine handed over and may have to resume them. The control plane sets it
    /// before it makes the workers inactive, and clears it when they are no longer needed.
    pub retain: AtomicBool,
    /// Flows installed at the last takeover (all workers).
    pub flows_resumed: AtomicU64,
    pub flows_abandoned: AtomicU64,
    /// TSC-independent µs timestamp (worker clock) when the last takeover finished installing.
    pub takeover_done_us: AtomicU64,
    /// This engine's node id and epoch, tagged on its announcements (0: untagged). The
    /// control plane sets the epoch before it makes the workers active.
    pub node_id: AtomicU32,
    pub epoch: AtomicU64,
    /// The highest epoch with which another engine announced one of our VIPs (0: none): the
    /// control plane fences this engine if it is newer than its own.
    pub vip_claim_epoch: AtomicU64,
}

impl RoleShared {
    /// `owned`: the groups served from the start (all of them for an engine without a
    /// standby, none for one that starts as a standby).
    pub fn new(workers: usize, owned: GroupSet) -> RoleShared {
        RoleShared {
            owned: AtomicU64::new(owned.0),
            takeover: (0..workers).map(|_| Mutex::new(None)).collect(),
            takeover_pending: (0..workers).map(|_| AtomicBool::new(false)).collect(),
            ..RoleShared::default()
        }
    }

    /// The groups served now.
    pub fn owned(&self) -> GroupSet {
        GroupSet(self.owned.load(Ordering::Acquire))
    }

    /// Serve `groups` too (a session became their active). Release: pairs with the
    /// workers' Acquire load, so a worker that sees the group sees what was stored before
    /// (the epoch, a takeover's flows).
    pub fn own(&self, groups: GroupSet) {
        self.owned.fetch_or(groups.0, Ordering::AcqRel);
    }

    /// Stop serving `groups` (their session stands by, or was fenced). Set `retain` first
    /// if the workers must keep those groups' flows.
    pub fn disown(&self, groups: GroupSet) {
        self.owned.fetch_and(!groups.0, Ordering::AcqRel);
    }

    /// Whether any group is served (the `flowtwin_active` gauge).
    pub fn is_active(&self) -> bool {
        !self.owned().is_empty()
    }

    /// Hand replicas of the flows of `groups` to the workers and serve those groups (called
    /// by the sync thread). `retained`: resume the flows the workers kept since a handover
    /// (`flows` is empty).
    pub fn take_over(&self, groups: GroupSet, flows: Vec<Vec<ShadowFlow>>, retained: bool) {
        self.takeover_retained.store(retained, Ordering::Relaxed);
        self.takeover_groups.store(groups.0, Ordering::Relaxed);
        for (i, f) in flows.into_iter().enumerate() {
            if let Some(slot) = self.takeover.get(i) {
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
            } else {
                self.flows_abandoned.fetch_add(f.len() as u64, Ordering::Relaxed);
            }
        }
        for p in &self.takeover_pending {
            // Release: pairs with the worker's Acquire swap, so it sees the flows stored above.
            p.store(true, Ordering::Release);
        }
        self.own(groups);
    }
}

/// What a worker's output does at role changes besides holding ([`CommitSink`]).
pub trait RoleSink: CommitSink {
    /// Send `stack`'s VIP announcements now, not held: they carry no flow state.
    fn announce_now(&mut self, stack: &mut Stack);
    /// Forget every held frame (none may leave: this engine owns nothing any more).
    fn clear_held(&mut self);
    /// Forget the held frames `drop` picks (those of a group no longer owned).
    fn drop_held(&mut self, drop: &mut dyn FnMut(&[u8]) -> bool);
}

/// One worker's following of [`RoleShared`]: the groups its stack owns, the groups whose
/// flows it keeps after a handover, and the announcements still to repeat.
#[derive(Debug)]
pub struct RoleFollower {
    /// The worker's index (its takeover slot; worker 0 speaks for all when a group is owned
    /// without a takeover).
    me: usize,
    /// Groups whose flows were kept when they were lost (a handover: this engine may have to
    /// resume them), until the control plane says they are no longer needed.
    kept: GroupSet,
    /// Repeats still due of the last announcement: (time of the first, repeats sent).
    reannounce: Option<(Instant, usize)>,
}

impl RoleFollower {
    pub fn new(me: usize) -> RoleFollower {
        RoleFollower { me, kept: GroupSet::NONE, reannounce: None }
    }

    /// The stack's ownership at the worker's start.
    pub fn start(&self, stack: &mut Stack, role: &RoleShared) {
        stack.set_owned(role.owned());
    }

    /// Apply what changed in `role` since the last call to `stack` and `sink`, then repeat a
    /// due announcement.
    pub fn follow<S: RoleSink + ?Sized>(&mut self, stack: &mut Stack, role: &RoleShared, now: Instant, sink: &mut S) {
        let me = self.me;
        // Acquire pairs with RoleShared::take_over's Release: the flows stored before it are
        // seen.
        if role.takeover_pending.get(me).is_some_and(|p| p.swap(false, Ordering::Acquire)) {
            let groups = GroupSet(role.takeover_groups.load(Ordering::Relaxed));
            let flows = role.takeover.get(me).and_then(|m| m.lock().unwrap_or_else(|e| e.into_inner()).take()).unwrap_or_default();
            let mut kept = 0u64;
            if role.takeover_retained.load(Ordering::Relaxed) {
                // Resume the flows kept since our handover, as they are: their held output
                // leaves with the watermark.
                kept = stack.flows().len() as u64;
            } else if !self.kept.is_empty() {
                // Flows kept for a fallback that did not come: the replicas replace them.
                drop_groups(stack, sink, self.kept.union(groups));
            }
            self.kept = self.kept.minus(groups);
            set_identity(stack, role);
            // Own the groups first: what is announced is the VIPs owned. The announcement
            // goes before the replicas' probes (it is not held).
            stack.set_owned(stack.owned().union(groups));
            sink.announce_now(stack);
            self.reannounce = Some((now, 0));
            let (installed, lost) = resume_groups(stack, groups, now, flows, sink);
            role.flows_resumed.fetch_add(kept + installed, Ordering::Relaxed);
            role.flows_abandoned.fetch_add(lost, Ordering::Relaxed);
            role.takeover_done_us.store(now.0, Ordering::Relaxed);
        } else {
            let want = role.owned();
            let (gained, lost) = (want.minus(stack.owned()), stack.owned().minus(want));
            if !gained.is_empty() {
                stack.set_owned(stack.owned().union(gained));
                set_identity(stack, role);
                // The control plane may make us own a group a moment before a takeover's
                // replicas reach this worker (the sync thread says "active" first): segments
                // of flows not installed yet must be dropped, never reset. (Seen: 3 RSTs in
                // 24 000 flows.)
                stack.set_grace_until(now + TAKEOVER_GRACE);
                // Owning without a takeover (start-up, or after a rejoin): the switch may
                // still send the VIPs to the peer's port, so announce them (worker 0 speaks
                // for all).
                if me == 0 {
                    sink.announce_now(stack);
                    self.reannounce = Some((now, 0));
                }
            }
            if !lost.is_empty() {
                // Fenced or demoted: stop answering for those groups and forget their flows
                // (the peer owns them now; this engine rejoins as its standby). Their held
                // output must never leave. After a handover the flows are kept (output still
                // held) until the rejoin is in sync: should the new active die first, this
                // engine resumes them.
                stack.set_owned(stack.owned().minus(lost));
                if role.retain.load(Ordering::Acquire) {
                    self.kept = self.kept.union(lost);
                } else {
                    drop_groups(stack, sink, lost);
                }
                if !stack.is_active() {
                    self.reannounce = None;
                }
            } else if !self.kept.is_empty()
                && !role.retain.load(Ordering::Acquire)
                && !role.takeover_pending.get(me).is_some_and(|p| p.load(Ordering::Acquire))
            {
                // The kept flows are no longer needed (or no longer valid). (A takeover that
                // resumes them is never pending here: its flag is set before `retain` clears.)
                drop_groups(stack, sink, self.kept);
                self.kept = GroupSet::NONE;
            }
        }
        if let Some((first, sent)) = self.reannounce {
            if stack.is_active() && now >= first + Duration::from_millis(REANNOUNCE_AFTER_MS[sent]) {
                sink.announce_now(stack);
                self.reannounce = (sent + 1 < REANNOUNCE_AFTER_MS.len()).then_some((first, sent + 1));
            }
        }
    }
}

/// Tag this worker's announcements with the engine's node id and epoch (if it has one).
fn set_identity(stack: &mut Stack, role: &RoleShared) {
    let node = role.node_id.load(Ordering::Relaxed);
    if node != 0 {
        stack.set_identity(node, role.epoch.load(Ordering::Relaxed));
    }
}

/// Forget the flows of `groups` and their held output (this engine no longer owns them).
/// Everything, when no group is left: nothing held may leave.
fn drop_groups<S: RoleSink + ?Sized>(stack: &mut Stack, sink: &mut S, groups: GroupSet) {
    if !stack.is_active() {
        stack.clear_flows();
        sink.clear_held();
        return;
    }
    stack.clear_groups(groups);
    sink.drop_held(&mut |f| stack.group_of_frame(f).is_some_and(|g| groups.contains(g)));
}
