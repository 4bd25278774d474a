//! The worker loop on DPDK (l2fwd/testpmd shape): RX burst → per packet [`Stack::process`]
//! → replies batched into a TX burst → timers → TX flush → idle backoff.
//!
//! Worker i owns RX queue i and TX queue i of its port, its own [`Stack`] (flow-table shard,
//! timer wheel, counters) and an mbuf cache in the shared mempool; nothing is shared with other
//! workers but the read-only config and the counters it publishes.
//!
//! TX partial-send policy: the burst is retried once immediately; whatever the driver still
//! refuses is freed and counted as `tx_full` (TCP's retransmission recovers lost segments).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use flowtwin_ffi::{pause, rdtsc, tsc_hz, MbufBurst, Mempool, RxQueue, TxQueue};

use crate::counters::{Drop, Event, SharedCounters};
use crate::stack::{FrameSink, Stack, StackConfig, MAX_FRAME};
use crate::time::Instant;

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

/// Everything one worker lcore owns.
pub struct Worker {
    pub index: usize,
    pub rx: RxQueue,
    pub tx: TxQueue,
    pub pool: Arc<Mempool>,
    pub stack_cfg: Arc<StackConfig>,
    pub counters: Arc<SharedCounters>,
    pub stop: Arc<AtomicBool>,
    pub idle: IdleConfig,
    pub burst: usize,
}

/// Monotonic µs from the TSC (EAL calibrated its rate).
struct Clock {
    t0: u64,
    hz: u128,
}

impl Clock {
    fn new() -> Clock {
        Clock { t0: rdtsc(), hz: tsc_hz().max(1) as u128 }
    }
    #[inline]
    fn now(&self) -> Instant {
        Instant(((rdtsc().wrapping_sub(self.t0)) as u128 * 1_000_000 / self.hz) as u64)
    }
}

/// Builds reply frames in mbufs and sends them in bursts.
struct MbufSink<'a> {
    pool: &'a Mempool,
    tx: &'a mut TxQueue,
    out: MbufBurst,
    no_mbuf: u64,
    tx_full: u64,
    sent: u64,
}

impl MbufSink<'_> {
    fn flush(&mut self) {
        if self.out.is_empty() {
            return;
        }
        let mut sent = self.tx.tx_burst(&mut self.out);
        if !self.out.is_empty() {
            sent += self.tx.tx_burst(&mut self.out);
        }
        self.sent += sent as u64;
        self.tx_full += self.out.len() as u64;
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
        if let Err(m) = self.out.push(m) {
            self.flush();
            let _ = self.out.push(m);
        }
        true
    }
}

/// The worker loop. Returns the lcore exit code (0 = clean stop).
pub fn run_worker(mut w: Worker) -> i32 {
    let clock = Clock::new();
    let mut stack = Stack::new(w.stack_cfg.clone(), clock.now());
    let mut rx = MbufBurst::new();
    let mut empty_polls: u32 = 0;
    let mut last_publish = clock.now();
    let burst = w.burst.clamp(1, flowtwin_ffi::BURST_MAX);
    let mut sink = MbufSink { pool: &w.pool, tx: &mut w.tx, out: MbufBurst::new(), no_mbuf: 0, tx_full: 0, sent: 0 };
    while !w.stop.load(Ordering::Relaxed) {
        let n = w.rx.rx_burst(&mut rx);
        let _ = burst;
        let now = clock.now();
        for i in 0..n {
            rx.prefetch(i + 1);
            if !rx.is_contiguous(i) {
                stack.counters_mut().drop(Drop::MultiSegment);
                continue;
            }
            stack.process(now, rx.data(i), &mut sink);
        }
        rx.clear();
        stack.poll(now, &mut sink);
        sink.flush();

        if now.0.saturating_sub(last_publish.0) >= 1000 {
            last_publish = now;
            let c = stack.counters_mut();
            c.drops[Drop::TxNoMbuf as usize] += std::mem::take(&mut sink.no_mbuf);
            c.drops[Drop::TxFull as usize] += std::mem::take(&mut sink.tx_full);
            w.counters.publish(c);
        }

        if n > 0 || !w.idle.enabled {
            empty_polls = 0;
            continue;
        }
        empty_polls = empty_polls.saturating_add(1);
        if empty_polls > w.idle.spin_iters + w.idle.pause_iters {
            let mut us = w.idle.sleep_max_us as u64;
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
    let c = stack.counters_mut();
    c.drops[Drop::TxNoMbuf as usize] += sink.no_mbuf;
    c.drops[Drop::TxFull as usize] += sink.tx_full;
    w.counters.publish(c);
    let _ = w.index;
    0
}
