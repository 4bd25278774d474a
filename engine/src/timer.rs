//! Per-worker hierarchical timer wheel over [`FlowId`]s (Varghese & Lauck, "Hashed and
//! hierarchical timing wheels", scheme 7; the cascading shape of the classic Linux
//! `kernel/timer.c`).
//!
//! - One timer per flow: a flow has at most one pending deadline (the earliest of its TCP
//!   timers: RTO, delayed ACK, persist, keep-alive, TIME-WAIT, idle). `schedule` replaces it in
//!   O(1) (intrusive doubly-linked lists, so re-arming the RTO on every ACK costs an unlink and
//!   a link, no stale entries pile up).
//! - Fixed memory: one node per flow-table slot (`capacity` from config) plus 257 list heads;
//!   nothing is allocated after [`TimerWheel::new`].
//! - Resolution: one *tick* (`tick_us`, default 1 ms). A deadline `d` is rounded **up** to a
//!   tick boundary, `E = ceil(d / tick) * tick`, and fires at the first `expire`/`pop_expired`
//!   call with `now ≥ E`: never early, late by less than one tick.
//! - Range: 4 levels × 64 slots. Level 0 holds the next 64 ticks exactly; level k holds
//!   deadlines `64^k ..< 64^(k+1)` ticks ahead in slots of `64^k` ticks and is cascaded
//!   (re-placed into lower levels) when the clock reaches a slot boundary. 64^4 ticks is
//!   4.6 h at 1 ms; farther deadlines are parked in the farthest level-3 slot and re-placed
//!   each time it cascades, so any `Instant` is accepted.
//! - Advancing: empty level-0 runs are skipped with a 64-bit occupancy map, and an empty
//!   wheel jumps straight to `now`, so a worker that has been idle for an hour catches up in
//!   ~56 K boundary steps at most, not 3.6 M ticks.

use crate::flow::FlowId;
use crate::time::{Duration, Instant};

/// Slots per level (a power of two; the occupancy map is one `u64`).
const SLOTS: usize = 64;
const SLOT_BITS: u32 = 6;
const LEVELS: usize = 4;
/// Ticks covered by all levels.
const HORIZON: u64 = 1 << (SLOT_BITS as u64 * LEVELS as u64);
/// List id of the due list (timers whose tick has been passed, waiting to be popped).
const DUE: u16 = (LEVELS * SLOTS) as u16;
const LISTS: usize = LEVELS * SLOTS + 1;
/// List id of an unscheduled node.
const NONE: u16 = u16::MAX;
const NIL: u32 = u32::MAX;

/// Default resolution: 1 ms. TCP's finest timers (delayed ACK ~40 ms, RTO ≥ 200 ms) need no
/// better; the wheel spans 4.6 h before parking.
pub const DEFAULT_TICK: Duration = Duration::from_millis(1);

#[derive(Copy, Clone, Debug)]
struct Node {
    next: u32,
    prev: u32,
    /// Deadline in ticks (rounded up).
    tick: u64,
    /// Generation of the `FlowId` the timer was scheduled for.
    gen: u32,
    /// Which list the node is on (`NONE` = not scheduled).
    list: u16,
}

const IDLE: Node = Node { next: NIL, prev: NIL, tick: 0, gen: 0, list: NONE };

/// Hierarchical timer wheel, one per worker. See the module documentation.
pub struct TimerWheel {
    tick_us: u64,
    nodes: Box<[Node]>,
    heads: Box<[u32; LISTS]>,
    /// Occupancy bit per slot, per level.
    occupied: [u64; LEVELS],
    /// The next tick not yet processed: every timer on a wheel list has `tick ≥ cur`; timers on
    /// the due list have `tick < cur`.
    cur: u64,
    /// Timers on wheel lists (not counting the due list).
    in_wheel: usize,
    /// Timers on the due list.
    due: usize,
}

impl TimerWheel {
    /// A wheel for flow ids with index `< capacity`, resolution `tick` (clamped to ≥ 1 µs),
    /// whose clock starts at `now`.
    pub fn new(capacity: usize, tick: Duration, now: Instant) -> Self {
        let tick_us = tick.micros().max(1);
        TimerWheel {
            tick_us,
            nodes: vec![IDLE; capacity].into_boxed_slice(),
            heads: Box::new([NIL; LISTS]),
            occupied: [0; LEVELS],
            // Ticks ≤ floor(now / tick) are in the past.
            cur: now.micros() / tick_us + 1,
            in_wheel: 0,
            due: 0,
        }
    }

    /// Number of flow ids this wheel can hold.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.nodes.len()
    }

    /// Resolution.
    #[inline]
    pub fn tick(&self) -> Duration {
        Duration::from_micros(self.tick_us)
    }

    /// Number of pending timers.
    #[inline]
    pub fn len(&self) -> usize {
        self.in_wheel + self.due
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Arm (or re-arm) the timer of flow `id` for `deadline`, replacing any pending one.
    /// A deadline in the past fires at the next `expire`. Ids with `index() ≥ capacity` are
    /// a configuration bug (wheel and table sized differently): they are ignored and `false`
    /// is returned.
    pub fn schedule(&mut self, id: FlowId, deadline: Instant) -> bool {
        let i = id.index() as usize;
        if i >= self.nodes.len() {
            debug_assert!(false, "timer wheel smaller than flow table");
            return false;
        }
        let tick = deadline.micros().div_ceil(self.tick_us);
        let n = self.nodes[i];
        if n.list != NONE && n.tick == tick && n.gen == id.generation() {
            return true;
        }
        self.unlink(i as u32);
        self.nodes[i].tick = tick;
        self.nodes[i].gen = id.generation();
        self.place(i as u32);
        true
    }

    /// Disarm the timer of flow `id` (any generation: the slot is being freed or re-armed).
    /// Returns true if one was pending.
    pub fn cancel(&mut self, id: FlowId) -> bool {
        let i = id.index() as usize;
        if i >= self.nodes.len() || self.nodes[i].list == NONE {
            return false;
        }
        self.unlink(i as u32);
        true
    }

    /// Pending deadline of flow `id` (rounded up to the tick), if its timer is armed for
    /// this generation.
    pub fn deadline(&self, id: FlowId) -> Option<Instant> {
        let n = self.nodes.get(id.index() as usize)?;
        (n.list != NONE && n.gen == id.generation())
            .then(|| Instant::from_micros(n.tick.saturating_mul(self.tick_us)))
    }

    /// Pop one flow whose deadline has passed at `now`, disarming it. Call in a loop; the
    /// caller may re-`schedule` between pops (a re-armed deadline ≤ `now` is popped again in
    /// the same loop, so re-arm only for the future).
    pub fn pop_expired(&mut self, now: Instant) -> Option<FlowId> {
        if self.due == 0 {
            self.advance(now.micros() / self.tick_us);
        }
        let i = self.heads[DUE as usize];
        if i == NIL {
            return None;
        }
        let gen = self.nodes[i as usize].gen;
        self.unlink(i);
        Some(FlowId::from_parts(i, gen))
    }

    /// Visit (and disarm) every flow whose deadline has passed at `now`. Returns how many were
    /// visited. To re-arm from inside the visit, use [`pop_expired`](Self::pop_expired).
    pub fn expire(&mut self, now: Instant, mut f: impl FnMut(FlowId)) -> usize {
        let mut n = 0;
        while let Some(id) = self.pop_expired(now) {
            f(id);
            n += 1;
        }
        n
    }

    /// The earliest instant at which some timer may be due, as a lower bound good for idle
    /// back-off: exact for the next 64 ticks, a level's slot start beyond. `None` if nothing
    /// is armed.
    pub fn next_deadline_hint(&self) -> Option<Instant> {
        if self.due > 0 {
            return Some(Instant::from_micros((self.cur - 1).saturating_mul(self.tick_us)));
        }
        if self.in_wheel == 0 {
            return None;
        }
        // Entries placed at different times can overlap between levels, so take the
        // minimum of each level's first occupied slot start.
        let mut best = u64::MAX;
        for level in 0..LEVELS {
            let occ = self.occupied[level];
            if occ == 0 {
                continue;
            }
            let shift = SLOT_BITS * level as u32;
            let pos = ((self.cur >> shift) & (SLOTS as u64 - 1)) as u32;
            // Slots at or after the current position come first, then wrapped ones.
            let ahead = u64::from(occ.rotate_right(pos).trailing_zeros());
            let block = ((self.cur >> shift) + ahead) << shift;
            best = best.min(block.max(self.cur));
        }
        Some(Instant::from_micros(best.saturating_mul(self.tick_us)))
    }

    // ---- internals ----

    /// List (level, slot) for a node's tick relative to `cur`, or the due list.
    #[inline]
    fn list_for(&self, tick: u64) -> u16 {
        if tick < self.cur {
            return DUE;
        }
        let delta = tick - self.cur;
        // Park far deadlines in the farthest slot; they are re-placed when it cascades.
        let t = if delta >= HORIZON { self.cur + HORIZON - 1 } else { tick };
        let delta = t - self.cur;
        let mut level = 0;
        while level + 1 < LEVELS && delta >= 1u64 << (SLOT_BITS * (level as u32 + 1)) {
            level += 1;
        }
        let slot = (t >> (SLOT_BITS * level as u32)) & (SLOTS as u64 - 1);
        (level * SLOTS + slot as usize) as u16
    }

    fn place(&mut self, i: u32) {
        let list = self.list_for(self.nodes[i as usize].tick);
        self.push(list, i);
    }

    fn push(&mut self, list: u16, i: u32) {
        let head = self.heads[list as usize];
        {
            let n = &mut self.nodes[i as usize];
            n.list = list;
            n.prev = NIL;
            n.next = head;
        }
        if head != NIL {
            self.nodes[head as usize].prev = i;
        }
        self.heads[list as usize] = i;
        if list == DUE {
            self.due += 1;
        } else {
            self.in_wheel += 1;
            let l = list as usize;
            self.occupied[l / SLOTS] |= 1 << (l % SLOTS);
        }
    }

    /// Take node `i` off whatever list it is on (no-op if none).
    fn unlink(&mut self, i: u32) {
        let Node { next, prev, list, .. } = self.nodes[i as usize];
        if list == NONE {
            return;
        }
        if prev != NIL {
            self.nodes[prev as usize].next = next;
        } else {
            self.heads[list as usize] = next;
        }
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        }
        let n = &mut self.nodes[i as usize];
        n.list = NONE;
        n.next = NIL;
        n.prev = NIL;
        if list == DUE {
            self.due -= 1;
        } else {
            self.in_wheel -= 1;
            let l = list as usize;
            if self.heads[l] == NIL {
                self.occupied[l / SLOTS] &= !(1 << (l % SLOTS));
            }
        }
    }

    /// Detach list `l` whole and re-place every node on it relative to the current `cur`.
    fn replace_list(&mut self, l: usize) {
        let mut i = self.heads[l];
        self.heads[l] = NIL;
        self.occupied[l / SLOTS] &= !(1 << (l % SLOTS));
        while i != NIL {
            let next = self.nodes[i as usize].next;
            self.nodes[i as usize].list = NONE;
            self.in_wheel -= 1;
            self.place(i);
            i = next;
        }
    }

    /// Process ticks `cur ..= target`: cascade at slot boundaries, move each level-0 slot
    /// whose tick has come to the due list.
    fn advance(&mut self, target: u64) {
        while self.cur <= target {
            if self.in_wheel == 0 {
                self.cur = target + 1;
                return;
            }
            let cur = self.cur;
            let pos0 = (cur & (SLOTS as u64 - 1)) as usize;
            if pos0 == 0 {
                // Cascade from the highest level whose boundary this is, downwards; placement
                // is relative to `cur`, so no entry lands in a slot already passed.
                // Level k cascades when `cur` is a multiple of 64^k.
                let mut top = 1;
                while top + 1 < LEVELS && (cur >> (SLOT_BITS * top as u32)) & (SLOTS as u64 - 1) == 0 {
                    top += 1;
                }
                for level in (1..=top).rev() {
                    let slot = ((cur >> (SLOT_BITS * level as u32)) & (SLOTS as u64 - 1)) as usize;
                    self.replace_list(level * SLOTS + slot);
                }
            }
            // Skip empty level-0 slots up to the next boundary (or target).
            let ahead = self.occupied[0] >> pos0;
            if ahead == 0 {
                let boundary = (cur | (SLOTS as u64 - 1)) + 1;
                self.cur = boundary.min(target + 1);
                continue;
            }
            let step = u64::from(ahead.trailing_zeros());
            let t = cur + step;
            if t > target {
                self.cur = target + 1;
                return;
            }
            // Move slot `t` to the due list.
            let l = pos0 + step as usize;
            let mut i = self.heads[l];
            self.heads[l] = NIL;
            self.occupied[0] &= !(1 << l);
            while i != NIL {
                let next = self.nodes[i as usize].next;
                self.nodes[i as usize].list = NONE;
                self.in_wheel -= 1;
                debug_assert!(self.nodes[i as usize].tick <= t);
                self.push(DUE, i);
                i = next;
            }
            self.cur = t + 1;
            if self.due > 0 {
                // Let the caller pop; the rest of the ticks up to `target` are processed on
                // the next call with an empty due list.
                return;
            }
        }
    }
}

impl core::fmt::Debug for TimerWheel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TimerWheel")
            .field("tick_us", &self.tick_us)
            .field("cur", &self.cur)
            .field("pending", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn id(i: u32) -> FlowId {
        FlowId::from_parts(i, 0)
    }

    fn drain(w: &mut TimerWheel, now: u64) -> Vec<u32> {
        let mut v = Vec::new();
        w.expire(Instant::from_micros(now), |id| v.push(id.index()));
        v.sort();
        v
    }

    #[test]
    fn fires_at_rounded_up_deadline_never_early() {
        let mut w = TimerWheel::new(8, Duration::from_millis(1), Instant::ZERO);
        w.schedule(id(1), Instant::from_micros(1500));
        w.schedule(id(2), Instant::from_micros(2000));
        assert_eq!(drain(&mut w, 1500), Vec::<u32>::new()); // rounded up to 2000
        assert_eq!(drain(&mut w, 1999), Vec::<u32>::new());
        assert_eq!(drain(&mut w, 2000), vec![1, 2]);
        assert!(w.is_empty());
    }

    #[test]
    fn past_deadline_fires_next_expire() {
        let mut w = TimerWheel::new(8, Duration::from_millis(1), Instant::from_millis(10));
        w.schedule(id(3), Instant::from_millis(2));
        assert_eq!(drain(&mut w, 10_000), vec![3]);
    }

    #[test]
    fn reschedule_and_cancel() {
        let mut w = TimerWheel::new(8, Duration::from_millis(1), Instant::ZERO);
        w.schedule(id(1), Instant::from_millis(5));
        w.schedule(id(1), Instant::from_millis(50)); // re-arm replaces
        assert_eq!(w.len(), 1);
        assert_eq!(w.deadline(id(1)), Some(Instant::from_millis(50)));
        assert_eq!(drain(&mut w, 10_000), Vec::<u32>::new());
        w.schedule(id(2), Instant::from_millis(20));
        assert!(w.cancel(id(2)));
        assert!(!w.cancel(id(2)));
        assert_eq!(drain(&mut w, 49_999), Vec::<u32>::new());
        assert_eq!(drain(&mut w, 50_000), vec![1]);
        assert_eq!(w.deadline(id(1)), None);
    }

    #[test]
    fn far_deadlines_cascade_exactly() {
        // TIME-WAIT (60 s), idle (10 min), and beyond the 4.6 h horizon.
        let mut w = TimerWheel::new(8, Duration::from_millis(1), Instant::ZERO);
        let ds = [60_000u64, 600_000, 16_000_000, 40_000_000];
        for (i, d) in ds.iter().enumerate() {
            w.schedule(id(i as u32), Instant::from_millis(*d));
        }
        for (i, d) in ds.iter().enumerate() {
            assert_eq!(drain(&mut w, d * 1000 - 1), Vec::<u32>::new(), "timer {i} early");
            assert_eq!(drain(&mut w, d * 1000), vec![i as u32], "timer {i}");
        }
        assert!(w.is_empty());
    }

    #[test]
    fn pop_allows_rearm() {
        let mut w = TimerWheel::new(4, Duration::from_micros(100), Instant::ZERO);
        w.schedule(id(0), Instant::from_micros(250));
        let now = Instant::from_micros(300);
        let got = w.pop_expired(now).unwrap();
        assert_eq!(got, id(0));
        w.schedule(got, Instant::from_micros(1000));
        assert_eq!(w.pop_expired(now), None);
        assert_eq!(w.pop_expired(Instant::from_micros(1000)), Some(id(0)));
    }

    #[test]
    fn generation_is_reported() {
        let mut w = TimerWheel::new(4, Duration::from_millis(1), Instant::ZERO);
        w.schedule(FlowId::from_parts(2, 7), Instant::from_millis(1));
        assert_eq!(w.deadline(FlowId::from_parts(2, 6)), None);
        assert_eq!(w.pop_expired(Instant::from_millis(1)), Some(FlowId::from_parts(2, 7)));
    }

    #[test]
    fn out_of_range_id_is_ignored() {
        let mut w = TimerWheel::new(2, Duration::from_millis(1), Instant::ZERO);
        // debug_assert fires in debug builds; exercise only the release-mode contract.
        if !cfg!(debug_assertions) {
            assert!(!w.schedule(id(5), Instant::from_millis(1)));
        }
        assert!(!w.cancel(id(5)));
        assert_eq!(w.deadline(id(5)), None);
    }

    #[test]
    fn next_deadline_hint_is_a_lower_bound() {
        let mut w = TimerWheel::new(4, Duration::from_millis(1), Instant::ZERO);
        assert_eq!(w.next_deadline_hint(), None);
        w.schedule(id(0), Instant::from_millis(30));
        assert_eq!(w.next_deadline_hint(), Some(Instant::from_millis(30)));
        w.schedule(id(1), Instant::from_millis(5000));
        assert_eq!(w.next_deadline_hint(), Some(Instant::from_millis(30)));
        w.cancel(id(0));
        let h = w.next_deadline_hint().unwrap();
        assert!(h <= Instant::from_millis(5000) && h > Instant::from_millis(30));
    }

    #[test]
    fn long_idle_jump_is_cheap() {
        let mut w = TimerWheel::new(4, Duration::from_micros(100), Instant::ZERO);
        w.schedule(id(0), Instant::from_micros(3_600_000_000 * 10)); // 10 h
        assert_eq!(drain(&mut w, 3_600_000_000 * 10 - 1), Vec::<u32>::new());
        assert_eq!(drain(&mut w, 3_600_000_000 * 10), vec![0]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Schedule(u32, u64),
        Cancel(u32),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u32..32, prop_oneof![0u64..5_000, 0u64..300_000, 0u64..50_000_000]).prop_map(|(i, d)| Op::Schedule(i, d)),
            1 => (0u32..32).prop_map(Op::Cancel),
            3 => prop_oneof![0u64..3_000, 0u64..100_000, 0u64..20_000_000].prop_map(Op::Advance),
        ]
    }

    proptest! {
        /// Model: each flow has an optional effective deadline `ceil(d/tick)*tick`; `expire(now)`
        /// must return exactly the flows whose effective deadline is ≤ now.
        #[test]
        fn matches_model(tick in prop_oneof![Just(1u64), Just(100), Just(1000), 1u64..5000],
                         start in 0u64..10_000_000,
                         ops in proptest::collection::vec(op(), 0..300)) {
            let mut w = TimerWheel::new(32, Duration::from_micros(tick), Instant::from_micros(start));
            let mut model: BTreeMap<u32, u64> = BTreeMap::new();
            let mut now = start;
            for op in ops {
                match op {
                    Op::Schedule(i, rel) => {
                        // Deadlines relative to now, including in the past.
                        let d = (now + rel).saturating_sub(2_000);
                        w.schedule(id(i), Instant::from_micros(d));
                        model.insert(i, d.div_ceil(tick) * tick);
                    }
                    Op::Cancel(i) => {
                        prop_assert_eq!(w.cancel(id(i)), model.remove(&i).is_some());
                    }
                    Op::Advance(dt) => {
                        now += dt;
                        let got = drain(&mut w, now);
                        let want: Vec<u32> = model.iter().filter(|(_, &e)| e <= now).map(|(&i, _)| i).collect();
                        prop_assert_eq!(&got, &want, "now {}", now);
                        for i in want { model.remove(&i); }
                    }
                }
                prop_assert_eq!(w.len(), model.len());
                for (&i, &e) in &model {
                    prop_assert_eq!(w.deadline(id(i)), Some(Instant::from_micros(e)));
                }
                if let Some(h) = w.next_deadline_hint() {
                    let min = model.values().min().copied().unwrap();
                    prop_assert!(h.micros() <= min.max(now), "hint {} > min {}", h.micros(), min);
                } else {
                    prop_assert!(model.is_empty());
                }
            }
        }
    }
}
