//! The worker loop on DPDK (l2fwd/testpmd shape): role changes → RX burst → one
//! [`Iteration`] (per packet [`Stack::process`], timers, replication tick, release of held
//! output; its doc gives the order and why) → TX flush → idle backoff. The replication and
//! takeover simulations run the same `Iteration` on byte buffers.
//!
//! Worker i owns RX queue i and TX queue i of its port, its own [`Stack`] (flow-table shard,
//! timer wheel, counters) and an mbuf cache in the shared mempool; nothing is shared with other
//! workers but the read-only config and the counters it publishes.
//!
//! TX partial-send policy: the burst is retried once immediately; whatever the driver still
//! refuses is freed and counted as `tx_full` (TCP's retransmission recovers lost segments).
//!
//! Output commit (DESIGN §4, strict mode): with replication on, every frame built while
//! processing a packet or a timer is tagged with the stack's commit tag (the sequence number
//! of the last commit-relevant delta of the flow that built it, and which flow;
//! `Stack::commit_tag`) and held ([`OutputHold`]) until the sync core's per-worker watermark
//! (what the standby acknowledged) reaches the tag. So a SYN-ACK waits for the flow's
//! creation, an ACK of client bytes for those bytes, and data for the state it came from, not
//! for send progress. Each flow's frames leave in order; a frame does not wait behind another
//! flow's younger one (`commit`).
//!
//! Software distribution (a device with fewer queues than workers): packets come from an
//! [`RxSource`] and go to a [`TxPath`]; everything between is identical for every worker.
//! Worker 0 polls the only RX queue and, per packet, computes the symmetric flow hash
//! ([`crate::distribute`]): frames of other workers' flows move to their SPSC ingress rings
//! ([`Fanout::to`]), whose consumer end is that worker's `RxSource::Ring`. Without a TX queue
//! per worker, workers k>0 transmit into an SPSC egress ring (`TxPath::Ring`) that worker 0
//! drains into its TX queue every iteration ([`Fanout::from`]). A full ring never blocks: the
//! packet is freed and counted (`handoff_ring_full`); TCP retransmission recovers it. Output
//! commit is unaffected: a worker puts a frame into its egress ring only once it is released.
//!
//! Neighbour sharing ([`NeighborMail`]): ARP reaches one worker (non-IP frames stay on worker
//! 0, in software distribution and with RSS alike), but each worker resolves the next hops of
//! the connections it opens. What a worker hears it posts to every other worker's bounded
//! mailbox after each pass; each worker drains its own mailbox once per pass, before its RX
//! burst, into its stack (`Stack::learn_neighbor`). Nothing per packet.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use flowtwin_ffi::ring::{RingConsumer, RingProducer};
use flowtwin_ffi::{pause, rdtsc, tsc_hz, Mbuf, MbufBurst, Mempool, RxQueue, TxQueue, BURST_MAX};

use crate::commit::{CommitTag, OutputHold, Watermarks};
use crate::counters::{latency_bucket, Counters, Drop, Event, SharedCounters, LATENCY_SLOTS};
use crate::distribute::worker_for_frame;
use crate::ephemeral::ReplySteering;
use crate::iteration::{CommitControl, CommitSink, Iteration, RxFrames};
use crate::neighbor::Heard;
pub use crate::roles::RoleShared;
use crate::roles::{RoleFollower, RoleSink};
use crate::replica::Replicator;
use crate::capture::{CaptureTap, WorkerTap};
use crate::stack::{FrameSink, LiveConfig, Stack, MAX_FRAME};
use crate::time::Instant;

pub use crate::iteration::TAKEOVER_GRACE;

/// What the worker reads from (and publishes to) the sync core, besides its delta ring: what an
/// iteration reads ([`CommitControl`]: the watermark, what the standby acknowledged, the wake),
/// plus the snapshot requests and the held-frames gauge.
pub trait ReplControl: CommitControl + Send + Sync {
    /// A token the sync core bumps when a standby joins: emit a snapshot for it.
    fn snapshot_request(&self) -> u64;
    /// Frames this worker holds for output commit (for metrics).
    fn set_held(&self, frames: u64);
}

/// The worker's end of replication.
pub struct ReplHandles {
    pub replicator: Box<dyn Replicator>,
    pub control: Arc<dyn ReplControl>,
}

/// Longest idle sleep of a standby's worker (µs).
const STANDBY_SLEEP_US: u32 = 1000;

/// Idle backoff (DPDK l3fwd-power style): after `spin_iters` empty polls, pause; after
/// `pause_iters` more, sleep up to `sleep_max_us` (bounded by the next timer), so a quiet
/// engine leaves the CPU to others and the first packet after idle waits at most ~that long.
#[derive(Clone, Copy, Debug)]
pub struct IdleConfig {
    pub enabled: bool,
    pub spin_iters: u32,
    pub pause_iters: u32,
    pub sleep_max_us: u32,
}

impl Default for IdleConfig {
    fn default() -> Self {
        IdleConfig { enabled: true, spin_iters: 256, pause_iters: 1024, sleep_max_us: 100 }
    }
}

/// Where a worker's received packets come from.
pub enum RxSource {
    /// Its own RX queue (hardware RSS / af_packet fanout), or worker 0's only queue.
    Queue(RxQueue),
    /// Software distribution: the consumer end of its ingress ring, fed by worker 0.
    Ring(RingConsumer),
}

impl RxSource {
    #[inline]
    fn rx_burst(&mut self, burst: &mut MbufBurst) -> usize {
        match self {
            RxSource::Queue(q) => q.rx_burst(burst),
            RxSource::Ring(r) => r.dequeue_burst(burst),
        }
    }
}

/// Where a worker's frames go.
pub enum TxPath {
    /// Its own TX queue.
    Queue(TxQueue),
    /// Software distribution without a TX queue per worker: the producer end of its egress
    /// ring, which worker 0 drains into its TX queue.
    Ring(RingProducer),
}

impl TxPath {
    #[inline]
    fn tx_burst(&mut self, burst: &mut MbufBurst) -> usize {
        match self {
            TxPath::Queue(q) => q.tx_burst(burst),
            TxPath::Ring(r) => r.enqueue_burst(burst),
        }
    }
}

/// Worker 0's extra ends in software distribution mode.
pub struct Fanout {
    /// Total workers (the flow hash maps onto `0..workers`).
    pub workers: usize,
    /// `to[k]`: producer end of worker k's ingress ring (`None` for worker 0 itself). Empty
    /// when every worker has its own RX queue.
    pub to: Vec<Option<RingProducer>>,
    /// Consumer ends of the egress rings of workers without their own TX queue.
    pub from: Vec<RingConsumer>,
}

impl Fanout {
    /// Move the frames of other workers' flows out of `rx` into their ingress rings, keeping
    /// the order of each flow; worker 0's own frames stay in `rx`, in order.
    fn distribute(&mut self, rx: &mut MbufBurst, stage: &mut [MbufBurst], counters: &mut crate::counters::Counters) {
        if self.to.is_empty() || rx.is_empty() {
            return;
        }
        // Take the burst apart (back to front), then route front to back.
        let mut all: [Option<Mbuf>; BURST_MAX] = [const { None }; BURST_MAX];
        let n = rx.len();
        for slot in all[..n].iter_mut().rev() {
            *slot = rx.pop();
        }
        for m in all[..n].iter_mut().filter_map(Option::take) {
            let k = worker_for_frame(m.data(), self.workers);
            let dst = if k == 0 { &mut *rx } else { &mut stage[k] };
            // Cannot overflow: every burst was empty and at most BURST_MAX frames are routed.
            let _ = dst.push(m);
        }
        for (k, out) in stage.iter_mut().enumerate() {
            if out.is_empty() {
                continue;
            }
            let moved = match self.to.get_mut(k) {
                Some(Some(p)) => p.enqueue_burst(out),
                _ => 0,
            };
            counters.add(Event::HandoffOut, moved as u64);
            counters.drops[Drop::HandoffRingFull as usize] += out.len() as u64;
            out.clear();
        }
    }

    /// Transmit what the other workers queued in their egress rings (bounded per call).
    /// Returns how many frames were taken.
    fn drain_egress(&mut self, sink: &mut MbufSink<'_>) -> usize {
        let mut total = 0;
        for c in &mut self.from {
            for _ in 0..16 {
                let k = c.dequeue_burst(&mut sink.out);
                total += k;
                sink.flush();
                if k < BURST_MAX {
                    break;
                }
            }
        }
        total
    }
}

/// Mappings a worker's mailbox holds ([`NeighborMail`]): far more than the ARP a pass hears.
pub const NEIGHBOR_MAILBOX: usize = 256;

/// One worker's end of neighbour sharing: its own mailbox, and a sender into every other
/// worker's. A mapping (`neighbor::Heard`) one worker's stack heard is posted to all the
/// others after the pass that heard it; each drains its mailbox at the start of its next pass
/// (so a SYN waiting on worker k leaves at most a pass of worker 0 and one of worker k after
/// worker 0 received the reply). Any worker may hear ARP (a device may spread it): the mesh
/// does not assume worker 0.
///
/// The mailboxes are `std::sync::mpsc::sync_channel`s: bounded at [`NEIGHBOR_MAILBOX`],
/// allocated once, several producers. `try_send` and `try_recv` never block and take no lock
/// here: std's bounded channel is the crossbeam array queue (a CAS on its head or tail, a
/// stamp per slot), and its waker lock is taken only when a thread sleeps in a blocking
/// `recv`/`send`, which no worker does. A full mailbox drops the mapping, counted
/// (`neighbor_share_dropped`): the worker that needed it retransmits its request, and the
/// reply is shared again. What it costs: nothing per packet; per pass, one `try_recv` on an
/// empty mailbox and a look at the stack's empty queue of mappings heard.
pub struct NeighborMail {
    inbox: Receiver<Heard>,
    others: Vec<SyncSender<Heard>>,
}

impl NeighborMail {
    /// The ends of `workers` workers, worker i's at index i; none for fewer than two (a
    /// single worker has nobody to tell). `capacity` mappings per mailbox (at least 1).
    pub fn mesh(workers: usize, capacity: usize) -> Vec<NeighborMail> {
        if workers < 2 {
            return Vec::new();
        }
        let (senders, inboxes): (Vec<_>, Vec<_>) = (0..workers).map(|_| sync_channel(capacity.max(1))).unzip();
        inboxes
            .into_iter()
            .enumerate()
            .map(|(me, inbox)| NeighborMail { inbox, others: senders.iter().enumerate().filter(|&(k, _)| k != me).map(|(_, s)| s.clone()).collect() })
            .collect()
    }

    /// Turn on `stack`'s queue of mappings heard (`Stack::set_neighbor_sharing`).
    pub fn attach(&self, stack: &mut Stack) {
        stack.set_neighbor_sharing(!self.others.is_empty());
    }

    /// Post what `stack` heard since the last call to every other worker. Returns how many
    /// mappings (counted `neighbors_shared`; a full mailbox `neighbor_share_dropped`).
    pub fn publish(&self, stack: &mut Stack) -> usize {
        let (mut posted, mut dropped) = (0, 0);
        while let Some(h) = stack.take_heard_neighbor() {
            posted += 1;
            for s in &self.others {
                // Disconnected: that worker has stopped; nothing to tell it.
                if let Err(TrySendError::Full(_)) = s.try_send(h) {
                    dropped += 1;
                }
            }
        }
        if posted > 0 {
            let c = stack.counters_mut();
            c.add(Event::NeighborsShared, posted as u64);
            c.add(Event::NeighborShareDropped, dropped);
        }
        posted
    }

    /// Merge what the other workers heard into `stack` (at most a mailbox's worth per call);
    /// the SYNs that waited for a next hop learned here go to `tx` (the caller seals them).
    /// Returns how many mappings were taken.
    pub fn deliver<F: FrameSink + ?Sized>(&self, stack: &mut Stack, now: Instant, tx: &mut F) -> usize {
        let mut n = 0;
        while n < NEIGHBOR_MAILBOX {
            let Ok(h) = self.inbox.try_recv() else { break };
            stack.learn_neighbor(now, h, tx);
            n += 1;
        }
        n
    }
}

/// Everything one worker lcore owns.
pub struct Worker {
    pub index: usize,
    pub rx: RxSource,
    pub tx: TxPath,
    /// Worker 0 in software distribution mode: its fan-out producers / fan-in consumers.
    pub fanout: Option<Fanout>,
    pub pool: Arc<Mempool>,
    /// The engine's configuration; a live reload publishes a new one, which the worker
    /// picks up within a millisecond.
    pub config: Arc<LiveConfig>,
    /// The engine's capture point (`None`: no capture possible).
    pub capture: Option<Arc<CaptureTap>>,
    pub counters: Arc<SharedCounters>,
    pub stop: Arc<AtomicBool>,
    pub idle: IdleConfig,
    pub burst: usize,
    pub repl: Option<ReplHandles>,
    pub role: Arc<RoleShared>,
    /// How segments reach the workers, for the local ports of connections this worker opens
    /// (`Stack::set_worker`); `None`: not predictable (af_packet's kernel fanout), the stack
    /// keeps its default (worker 0 of 1).
    pub steering: Option<ReplySteering>,
    /// Neighbour sharing with the other workers ([`NeighborMail::mesh`]); `None`: the only
    /// worker.
    pub neighbors: Option<NeighborMail>,
}

/// Monotonic µs from the TSC (EAL calibrated its rate). A multiply and a shift per call, not a
/// 128-bit division (which took ~2 % of a busy worker): `µs = ticks * mult >> CLOCK_SHIFT`
/// with `mult = 10^6 << CLOCK_SHIFT / hz`, exact to < 10^-9 of the elapsed time for any
/// TSC between 1 MHz and 10 GHz.
struct Clock {
    t0: u64,
    mult: u128,
}

const CLOCK_SHIFT: u32 = 48;

impl Clock {
    fn new() -> Clock {
        Clock::with_hz(rdtsc(), tsc_hz())
    }
    fn with_hz(t0: u64, hz: u64) -> Clock {
        Clock { t0, mult: (1_000_000u128 << CLOCK_SHIFT) / u128::from(hz.max(1)) }
    }
    #[inline]
    fn now(&self) -> Instant {
        self.at(rdtsc())
    }
    #[inline]
    fn at(&self, tsc: u64) -> Instant {
        Instant(((u128::from(tsc.wrapping_sub(self.t0)) * self.mult) >> CLOCK_SHIFT) as u64)
    }
}

/// Builds reply frames in mbufs and sends them in bursts.
struct MbufSink<'a> {
    pool: &'a Mempool,
    tx: &'a mut TxPath,
    out: MbufBurst,
    no_mbuf: u64,
    tx_full: u64,
    sent: u64,
    /// TX goes through an egress ring (software distribution): what does not fit is counted
    /// as `handoff_ring_full`, what does as `handoff_out`.
    to_ring: bool,
    ring_full: u64,
    /// Output commit on: frames wait in `held` until the standby has what they depend on.
    hold: bool,
    held: OutputHold<Mbuf>,
    /// How long released frames were held (see `Counters::hold_us`), folded into the
    /// worker's counters when they are published.
    hold_us: [u64; LATENCY_SLOTS],
    hold_us_sum: u64,
    /// The capture point (`flowtwin ctl capture`), and the wall-clock µs of this pass.
    tap: Option<WorkerTap>,
    now_us: u64,
}

impl MbufSink<'_> {
    fn send_now(&mut self, m: Mbuf) {
        if let Err(m) = self.out.push(m) {
            self.flush();
            let _ = self.out.push(m);
        }
    }

    /// Move the hold histogram into the worker's counters.
    fn fold_holds(&mut self, c: &mut Counters) {
        for (a, b) in c.hold_us.iter_mut().zip(self.hold_us.iter_mut()) {
            *a += std::mem::take(b);
        }
        c.hold_us_sum += std::mem::take(&mut self.hold_us_sum);
    }

    fn flush(&mut self) {
        if self.out.is_empty() {
            return;
        }
        // What leaves the port (frames into an egress ring are captured by the worker that
        // transmits them).
        if let Some(t) = self.tap.as_mut().filter(|t| t.on() && !self.to_ring) {
            for i in 0..self.out.len() {
                t.frame(self.now_us, true, self.out.data(i));
            }
        }
        let mut sent = self.tx.tx_burst(&mut self.out);
        if !self.out.is_empty() {
            sent += self.tx.tx_burst(&mut self.out);
        }
        self.sent += sent as u64;
        if self.to_ring {
            self.ring_full += self.out.len() as u64;
        } else {
            self.tx_full += self.out.len() as u64;
        }
        self.out.clear();
    }
}

impl FrameSink for MbufSink<'_> {
    fn emit(&mut self, build: &mut dyn FnMut(&mut [u8]) -> usize) -> bool {
        let Some(mut m) = self.pool.alloc() else {
            self.no_mbuf += 1;
            return false;
        };
        if m.capacity() < MAX_FRAME || !m.set_len(MAX_FRAME) {
            self.no_mbuf += 1;
            return false;
        }
        let n = build(m.data_mut());
        if n == 0 || !m.set_len(n) {
            // Nothing to send (the builder declined); the mbuf goes back to the pool.
            return true;
        }
        if self.hold {
            self.held.push(m);
        } else {
            self.send_now(m);
        }
        true
    }

    /// Tag the frames built since the last seal (`None`: not yet committable).
    fn seal(&mut self, tag: Option<CommitTag>, now: Instant) {
        if self.hold {
            self.held.commit(tag, now.0);
        }
    }
}

impl RoleSink for MbufSink<'_> {
    fn announce_now(&mut self, stack: &mut Stack) {
        let was = std::mem::replace(&mut self.hold, false);
        stack.announce(self);
        self.flush();
        self.hold = was;
    }

    fn clear_held(&mut self) {
        self.held.clear();
    }

    fn drop_held(&mut self, drop: &mut dyn FnMut(&[u8]) -> bool) {
        self.held.drop_where(|m| drop(m.data()));
    }
}

impl CommitSink for MbufSink<'_> {
    /// Send every held frame whose tag the standby has acknowledged.
    fn release(&mut self, watermark: Watermarks, now: Instant) {
        let mut held = std::mem::take(&mut self.held);
        held.release(watermark, now.0, |m, us| {
            self.hold_us[latency_bucket(us)] += 1;
            self.hold_us_sum += us;
            self.send_now(m);
        });
        self.held = held;
    }

    fn waiting(&self) -> bool {
        !self.held.is_empty()
    }
}

/// An RX burst as the iteration reads it: each single-segment frame in order (the next one
/// prefetched), then the burst's mbufs go back to the pool, before the timers allocate
/// theirs. Multi-segment frames are skipped and counted (`Drop::MultiSegment`).
struct BurstFrames<'a> {
    rx: &'a mut MbufBurst,
    multi_segment: u64,
}

impl RxFrames for BurstFrames<'_> {
    #[inline]
    fn each(&mut self, mut f: impl FnMut(&[u8])) {
        let n = self.rx.len();
        for i in 0..n {
            self.rx.prefetch(i + 1);
            if !self.rx.is_contiguous(i) {
                self.multi_segment += 1;
                continue;
            }
            f(self.rx.data(i));
        }
        self.rx.clear();
    }
}

/// The worker loop. Returns the lcore exit code (0 = clean stop).
pub fn run_worker(mut w: Worker) -> i32 {
    let clock = Clock::new();
    let (first_cfg, mut cfg_generation) = w.config.load();
    let mut stack = Stack::new(first_cfg, clock.now());
    // The pair's clock for the connections this worker opens (`Stack::set_wall_clock`),
    // re-read every second below: the engine clock counts TSC ticks at EAL's estimate of
    // their rate, which drifts from the wall clock (0.01 % is 360 ms an hour), and the two
    // engines of a pair must agree on it for a reused 4-tuple's TSval to keep growing
    // across a takeover.
    let wall_offset = |now: Instant| {
        let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        wall.wrapping_sub(now.0)
    };
    let mut wall_off = wall_offset(clock.now());
    stack.set_wall_clock(wall_off);
    if let Some(s) = w.steering.take() {
        if let Err(e) = stack.set_worker(w.index, s) {
            // Once, before the loop: the packet path never logs.
            tracing::warn!(
                event = "reply_steering",
                worker = w.index,
                error = %e,
                "worker {}: connections it opens cannot be steered back to it: {e}",
                w.index
            );
        }
    }
    // Worker 0 alone runs the proxies' active health checks (one checker per backend).
    stack.set_health_checks(w.index == 0);
    let mail = w.neighbors.take();
    if let Some(m) = &mail {
        m.attach(&mut stack);
    }
    let mut repl = w.repl.take();
    let control = repl.as_ref().map(|r| r.control.clone());
    if let Some(r) = repl.take() {
        stack.set_replicator(r.replicator);
    }
    let hold = control.is_some();
    let iteration = Iteration::new(control.as_deref());
    let mut snapshot_token = control.as_ref().map(|c| c.snapshot_request()).unwrap_or(0);
    // engine.burst: how many packets one RX poll takes.
    let burst = w.burst.clamp(1, flowtwin_ffi::BURST_MAX);
    let mut rx = MbufBurst::with_capacity(burst);
    let mut empty_polls: u32 = 0;
    let mut last_publish = clock.now();
    let mut last_wall = clock.now();
    let to_ring = matches!(w.tx, TxPath::Ring(_));
    let from_ring = matches!(w.rx, RxSource::Ring(_));
    let mut fanout = w.fanout.take();
    let mut stage: Vec<MbufBurst> = (0..fanout.as_ref().map_or(0, |f| f.workers)).map(|_| MbufBurst::new()).collect();
    let mut sink = MbufSink {
        pool: &w.pool,
        tx: &mut w.tx,
        out: MbufBurst::new(),
        no_mbuf: 0,
        tx_full: 0,
        sent: 0,
        to_ring,
        ring_full: 0,
        hold,
        held: OutputHold::with_capacity(if hold { 4096 } else { 0 }),
        hold_us: [0; LATENCY_SLOTS],
        hold_us_sum: 0,
        tap: w.capture.clone().map(|t| WorkerTap::new(t, w.index as u16)),
        now_us: 0,
    };
    let me = w.index;
    let mut roles = RoleFollower::new(me);
    roles.start(&mut stack, &w.role);
    while !w.stop.load(Ordering::Relaxed) {
        let now = clock.now();
        // Role changes, per ownership group (`roles`): a takeover's replicas installed and
        // the VIPs announced, a group gained or lost.
        roles.follow(&mut stack, &w.role, now, &mut sink);
        if let Some(c) = &control {
            let t = c.snapshot_request();
            if t != snapshot_token {
                snapshot_token = t;
                iteration.snapshot(&mut stack, t);
            }
        }

        // What the other workers heard: before this pass's frames (`Iteration::delivered`).
        let learned = mail.as_ref().map_or(0, |m| m.deliver(&mut stack, now, &mut sink));
        iteration.delivered(&stack, now, learned, &mut sink);

        let got = w.rx.rx_burst(&mut rx);
        sink.now_us = now.0.wrapping_add(wall_off);
        // What the port received (frames from a handoff ring were captured by worker 0).
        if let Some(t) = sink.tap.as_mut().filter(|t| t.on() && !from_ring) {
            for i in 0..rx.len() {
                if rx.is_contiguous(i) {
                    t.frame(sink.now_us, false, rx.data(i));
                }
            }
        }
        if let Some(f) = fanout.as_mut() {
            f.distribute(&mut rx, &mut stage, stack.counters_mut());
        } else if from_ring {
            stack.counters_mut().add(Event::HandoffIn, got as u64);
        }
        // Frames, timers, replication, release: the one order (`iteration`). A parked sync
        // core is woken only when output waits for the standby. Deltas that hold nothing
        // (send progress; everything in async mode while the lag is within bounds) wait for
        // its next bounded park instead: a download then costs ~1 000 wake-ups a second, not
        // one per loop pass.
        let mut frames = BurstFrames { rx: &mut rx, multi_segment: 0 };
        iteration.run(&mut stack, now, &mut frames, &mut sink);
        if frames.multi_segment > 0 {
            stack.counters_mut().drops[Drop::MultiSegment as usize] += frames.multi_segment;
        }
        if let Some(m) = &mail {
            m.publish(&mut stack);
        }
        if let Some(claim) = stack.take_vip_claim() {
            // Another engine took our VIPs over: the control plane fences us.
            w.role.vip_claim_epoch.fetch_max(claim.epoch, Ordering::Relaxed);
        }
        sink.flush();
        let drained = match fanout.as_mut() {
            Some(f) if !f.from.is_empty() => {
                let d = f.drain_egress(&mut sink);
                stack.counters_mut().add(Event::HandoffIn, d as u64);
                d
            }
            _ => 0,
        };

        if now.0.saturating_sub(last_wall.0) >= 1_000_000 {
            last_wall = now;
            wall_off = wall_offset(now);
            stack.set_wall_clock(wall_off);
        }
        if now.0.saturating_sub(last_publish.0) >= 1000 {
            last_publish = now;
            if let Some(t) = sink.tap.as_mut() {
                t.refresh();
            }
            if w.config.generation() != cfg_generation {
                let (cfg, g) = w.config.load();
                cfg_generation = g;
                // A VIP added to a group this engine serves: worker 0 announces it (for all).
                if stack.reconfigure(cfg) && !stack.owned().is_empty() && me == 0 {
                    sink.announce_now(&mut stack);
                }
            }
            if let Some(c) = &control {
                c.set_held(sink.held.len() as u64);
            }
            let c = stack.counters_mut();
            sink.fold_holds(c);
            c.drops[Drop::TxNoMbuf as usize] += std::mem::take(&mut sink.no_mbuf);
            c.drops[Drop::TxFull as usize] += std::mem::take(&mut sink.tx_full);
            if to_ring {
                c.drops[Drop::HandoffRingFull as usize] += std::mem::take(&mut sink.ring_full);
                c.add(Event::HandoffOut, std::mem::take(&mut sink.sent));
            }
            w.counters.publish(c);
        }

        let waiting = !sink.held.is_empty();
        if got > 0 || drained > 0 || learned > 0 || !w.idle.enabled || waiting {
            empty_polls = 0;
            continue;
        }
        empty_polls = empty_polls.saturating_add(1);
        if empty_polls > w.idle.spin_iters + w.idle.pause_iters {
            // A standby answers nothing until a takeover, which the sync thread signals
            // through `RoleShared`: it may sleep longer (each wake-up costs CPU on the
            // standby's host; ~1 ms more at takeover against a stall of tens of ms).
            let max = if stack.is_active() { w.idle.sleep_max_us } else { w.idle.sleep_max_us.max(STANDBY_SLEEP_US) };
            let mut us = max as u64;
            if let Some(t) = stack.next_timer() {
                us = us.min(t.0.saturating_sub(now.0));
            }
            if us > 0 {
                stack.counters_mut().event(Event::IdleSleeps);
                std::thread::sleep(std::time::Duration::from_micros(us));
            }
        } else if empty_polls > w.idle.spin_iters {
            pause();
        }
    }
    sink.flush();
    // Held frames are dropped at shutdown (their mbufs return to the pool): the standby, if
    // any, will send them after its takeover.
    sink.held.clear();
    let c = stack.counters_mut();
    sink.fold_holds(c);
    c.drops[Drop::TxNoMbuf as usize] += sink.no_mbuf;
    c.drops[Drop::TxFull as usize] += sink.tx_full;
    if to_ring {
        c.drops[Drop::HandoffRingFull as usize] += sink.ring_full;
        c.add(Event::HandoffOut, sink.sent);
    }
    w.counters.publish(c);
    0
}

#[cfg(test)]
mod tests {
    use super::Clock;

    #[test]
    fn clock_matches_exact_division() {
        for hz in [1_000_000u64, 1_999_999_999, 2_400_000_000, 3_187_654_321, 10_000_000_000] {
            let c = Clock::with_hz(1000, hz);
            assert_eq!(c.at(1000).0, 0);
            for ticks in [1u64, hz / 1_000_000, hz - 1, hz, 7 * hz + 12_345, hz * 86_400 * 365, u64::MAX - 1000] {
                let exact = (u128::from(ticks) * 1_000_000 / u128::from(hz)) as u64;
                let got = c.at(1000u64.wrapping_add(ticks)).0;
                // Truncation of `mult` can only make the result smaller, by < 1 µs per 10^9.
                assert!(got <= exact && exact - got <= 1 + exact / 1_000_000_000, "hz {hz} ticks {ticks}: {got} vs {exact}");
            }
        }
        // The counter wraps: time keeps increasing across it.
        let c = Clock::with_hz(u64::MAX - 5, 1_000_000);
        assert_eq!(c.at(4).0, 10);
    }
}
