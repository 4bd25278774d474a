//! Per-worker single-producer single-consumer ring of fixed-size delta records.
//!
//! A worker lcore owns the [`Producer`]; the sync core owns the [`Consumer`]. Nothing else
//! can touch the ring: [`channel`] hands out exactly one of each, neither is `Clone`, and
//! every operation takes `&mut self`, so the single-producer / single-consumer contract is
//! enforced by ownership instead of by documentation.
//!
//! # Safe-Rust layout
//!
//! The crate forbids `unsafe`, so the slots are not `UnsafeCell`s. A record is
//! [`RECORD_WORDS`] `u64` words (64 bytes, one cache line) and the ring storage is one
//! preallocated `Box<[AtomicU64]>` of `capacity * RECORD_WORDS` words. On x86-64 and
//! AArch64 a `Relaxed` atomic load/store of a `u64` compiles to a plain `mov`/`ldr`/`str`,
//! so the data path costs the same as an `UnsafeCell` ring, and a wrong ordering shows up
//! as a stale value (which the loom tests catch) rather than as undefined behaviour.
//!
//! # Protocol (the DPDK `rte_ring` / `ringbuf` scheme, SPSC only)
//!
//! * `tail` — next record the producer will write. Stored only by the producer.
//! * `head` — next record the consumer will read. Stored only by the consumer.
//! * Both are free-running `usize` counters; a slot index is `counter & mask`. The number
//!   of records in the ring is `tail.wrapping_sub(head)`, always in `0..=capacity`.
//! * Producer: write the records' words with `Relaxed` stores, then publish the whole
//!   burst with **one** `Release` store of `tail`.
//! * Consumer: `Acquire`-load `tail`, read the words with `Relaxed` loads, then hand the
//!   slots back with **one** `Release` store of `head`.
//! * Each side keeps a private copy of the other side's index (`head_cache`,
//!   `tail_cache`) and re-reads the shared one only when its copy says "not enough room"
//!   / "not enough records", so in steady state the two cores touch the other's cache
//!   line once per burst at most.
//! * `head` and `tail` live on separate 128-byte-aligned lines (`CachePadded`), because
//!   adjacent-line prefetchers on Intel pull cache lines in pairs.

// Under `RUSTFLAGS="--cfg loom"` the unit tests at the end of this file model-check the
// ring with loom's atomics. loom is a dev-dependency, visible only to the test build of
// this crate, so the library build itself keeps std's atomics even under `cfg(loom)`.
#[cfg(all(loom, test))]
use loom::sync::{
    atomic::{AtomicU64, AtomicUsize, Ordering},
    Arc,
};
#[cfg(not(all(loom, test)))]
use std::sync::{
    atomic::{AtomicU64, AtomicUsize, Ordering},
    Arc,
};

use std::fmt;

/// Words in one record. 8 × 8 bytes = 64 bytes = one cache line.
pub const RECORD_WORDS: usize = 8;
/// Bytes in one record.
pub const RECORD_BYTES: usize = RECORD_WORDS * 8;
/// Largest capacity [`channel`] accepts, in records (64 Mi records = 4 GiB of ring).
pub const MAX_CAPACITY: usize = 1 << 26;

/// One fixed-size ring record. The byte layout inside is defined by [`crate::delta`].
pub type Record = [u64; RECORD_WORDS];

/// The ring had no room for the record(s); nothing was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl fmt::Display for Full {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("delta ring full")
    }
}

impl std::error::Error for Full {}

/// A capacity [`try_channel`] cannot build a ring for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapacityError {
    /// The capacity asked for, in records.
    pub requested: usize,
}

impl fmt::Display for CapacityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ring capacity {} records is not a power of two in 1..={}",
            self.requested, MAX_CAPACITY
        )
    }
}

impl std::error::Error for CapacityError {}

/// Aligns (and so pads) its content to 128 bytes, like crossbeam's `CachePadded`: two
/// values in separate `CachePadded`s never share a cache line or an adjacent-line
/// prefetch pair.
#[repr(align(128))]
struct CachePadded<T>(T);

/// State shared by the two ends.
struct Shared {
    /// Next record the consumer will read. Stored only by the [`Consumer`].
    head: CachePadded<AtomicUsize>,
    /// Next record the producer will write. Stored only by the [`Producer`].
    tail: CachePadded<AtomicUsize>,
    /// `capacity * RECORD_WORDS` words; record `i` occupies words
    /// `(i & mask) * RECORD_WORDS ..` `+ RECORD_WORDS`. Never resized.
    slots: Box<[AtomicU64]>,
    /// `capacity - 1`.
    mask: usize,
}

impl Shared {
    /// The words of the slot that record counter `idx` maps to.
    #[inline]
    fn slot(&self, idx: usize) -> &[AtomicU64] {
        let base = (idx & self.mask) * RECORD_WORDS;
        &self.slots[base..base + RECORD_WORDS]
    }
}

/// Builds an SPSC ring holding `capacity_records` records.
///
/// # Panics
/// If `capacity_records` is not a power of two in `1..=MAX_CAPACITY`; use
/// [`try_channel`] to get an error instead (e.g. for a value from the config file).
pub fn channel(capacity_records: usize) -> (Producer, Consumer) {
    match try_channel(capacity_records) {
        Ok(ends) => ends,
        Err(e) => panic!("{e}"),
    }
}

/// Builds an SPSC ring holding `capacity_records` records, which must be a power of two
/// in `1..=MAX_CAPACITY`. All memory is allocated here; no operation allocates later.
pub fn try_channel(capacity_records: usize) -> Result<(Producer, Consumer), CapacityError> {
    if !capacity_records.is_power_of_two() || capacity_records > MAX_CAPACITY {
        return Err(CapacityError {
            requested: capacity_records,
        });
    }
    let slots: Box<[AtomicU64]> = (0..capacity_records * RECORD_WORDS)
        .map(|_| AtomicU64::new(0))
        .collect();
    let shared = Arc::new(Shared {
        head: CachePadded(AtomicUsize::new(0)),
        tail: CachePadded(AtomicUsize::new(0)),
        slots,
        mask: capacity_records - 1,
    });
    let producer = Producer {
        shared: Arc::clone(&shared),
        tail: 0,
        head_cache: 0,
    };
    let consumer = Consumer {
        shared,
        head: 0,
        tail_cache: 0,
    };
    Ok((producer, consumer))
}

/// The writing end of a delta ring. Owned by exactly one worker lcore.
pub struct Producer {
    shared: Arc<Shared>,
    /// Private copy of `shared.tail`. We are its only writer, so it is always current.
    tail: usize,
    /// Last value of `shared.head` we loaded. Only ever behind the real head, so it
    /// under-estimates free space, never over-estimates it.
    head_cache: usize,
}

impl Producer {
    /// Capacity in records.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.shared.mask + 1
    }

    /// Free records according to our cached head (a lower bound).
    #[inline]
    fn free_cached(&self) -> usize {
        self.capacity() - self.tail.wrapping_sub(self.head_cache)
    }

    /// Re-reads the consumer's head and returns the fresh free count.
    #[inline]
    fn refresh_free(&mut self) -> usize {
        // Acquire pairs with the consumer's Release store of `head` in `Consumer::advance`:
        // the consumer's Relaxed loads of the slots below that head happen-before our
        // Relaxed stores that will overwrite them, so it can never read a word of a
        // record we are writing now (write-after-read hazard).
        self.head_cache = self.shared.head.0.load(Ordering::Acquire);
        self.free_cached()
    }

    /// Free records right now (re-reads the consumer's head). The value can only grow
    /// until this producer pushes again.
    pub fn free(&mut self) -> usize {
        self.refresh_free()
    }

    /// Appends one record, or returns [`Full`] and writes nothing.
    #[inline]
    pub fn try_push(&mut self, rec: &Record) -> Result<(), Full> {
        self.try_push_many(std::slice::from_ref(rec))
    }

    /// Appends all of `recs` or none of them. The records become visible to the
    /// consumer together (one `Release` store), so a multi-record delta is never seen
    /// split. `recs.len() > capacity()` always fails; an empty slice always succeeds.
    pub fn try_push_many(&mut self, recs: &[Record]) -> Result<(), Full> {
        if recs.is_empty() {
            return Ok(());
        }
        if self.free_cached() < recs.len() && self.refresh_free() < recs.len() {
            return Err(Full);
        }
        self.write_and_publish(recs);
        Ok(())
    }

    /// Appends as many leading records of `recs` as fit and returns how many. At most
    /// one `Release` store for the whole burst. Use [`Producer::try_push_many`] for
    /// multi-record deltas; this may cut a slice anywhere.
    pub fn push_burst(&mut self, recs: &[Record]) -> usize {
        let mut free = self.free_cached();
        if free < recs.len() {
            free = self.refresh_free();
        }
        let n = free.min(recs.len());
        if n > 0 {
            self.write_and_publish(&recs[..n]);
        }
        n
    }

    /// Writes `recs` into the slots after `tail` and publishes them. The caller has
    /// checked that `recs.len()` slots are free.
    #[inline]
    fn write_and_publish(&mut self, recs: &[Record]) {
        let shared = &*self.shared;
        for (i, rec) in recs.iter().enumerate() {
            for (word, &value) in shared.slot(self.tail.wrapping_add(i)).iter().zip(rec) {
                // Relaxed: this word is published by the Release store of `tail` below;
                // the consumer reads it only after its Acquire load of `tail` (in
                // `Consumer::refresh_len`) observes that store.
                word.store(value, Ordering::Relaxed);
            }
        }
        self.tail = self.tail.wrapping_add(recs.len());
        // Release pairs with the consumer's Acquire load of `tail` in
        // `Consumer::refresh_len`: every Relaxed word store above happens-before the
        // consumer's Relaxed loads of those words. One store per burst.
        shared.tail.0.store(self.tail, Ordering::Release);
    }
}

impl fmt::Debug for Producer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("capacity", &self.capacity())
            .field("tail", &self.tail)
            .field("head_cache", &self.head_cache)
            .finish()
    }
}

/// The reading end of a delta ring. Owned by the sync core.
pub struct Consumer {
    shared: Arc<Shared>,
    /// Private copy of `shared.head`. We are its only writer, so it is always current.
    head: usize,
    /// Last value of `shared.tail` we loaded. Only ever behind the real tail, so it
    /// under-estimates the records available, never over-estimates them.
    tail_cache: usize,
}

impl Consumer {
    /// Capacity in records.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.shared.mask + 1
    }

    /// Records available according to our cached tail (a lower bound).
    #[inline]
    fn len_cached(&self) -> usize {
        self.tail_cache.wrapping_sub(self.head)
    }

    /// Re-reads the producer's tail and returns the fresh count of available records.
    #[inline]
    fn refresh_len(&mut self) -> usize {
        // Acquire pairs with the producer's Release store of `tail` in
        // `Producer::write_and_publish`: the producer's Relaxed word stores for every
        // record below this tail happen-before our Relaxed loads of them.
        self.tail_cache = self.shared.tail.0.load(Ordering::Acquire);
        self.len_cached()
    }

    /// Records in the ring right now (re-reads the producer's tail). The value can only
    /// grow until this consumer pops again.
    pub fn len(&mut self) -> usize {
        self.refresh_len()
    }

    /// True if the ring holds no record right now.
    pub fn is_empty(&mut self) -> bool {
        self.len() == 0
    }

    /// Copies up to `out.len()` of the oldest records into `out` **without** consuming
    /// them and returns how many. Call [`Consumer::advance`] with the number actually
    /// used (e.g. whole deltas decoded). Records published together by
    /// [`Producer::try_push_many`] are either all visible or none, but `out` may be too
    /// short to hold them all.
    pub fn peek_burst(&mut self, out: &mut [Record]) -> usize {
        let mut avail = self.len_cached();
        if avail < out.len() {
            avail = self.refresh_len();
        }
        let n = avail.min(out.len());
        let shared = &*self.shared;
        for (i, rec) in out[..n].iter_mut().enumerate() {
            for (dst, word) in rec.iter_mut().zip(shared.slot(self.head.wrapping_add(i))) {
                // Relaxed: ordered after the producer's word stores by our Acquire load
                // of `tail` (in `refresh_len`, earlier in program order) that observed
                // the producer's Release store covering this record.
                *dst = word.load(Ordering::Relaxed);
            }
        }
        n
    }

    /// Consumes the `n` oldest records, handing their slots back to the producer with one
    /// `Release` store. `advance(0)` does nothing.
    ///
    /// # Panics
    /// If `n` is more than this consumer has seen (a caller bug; the ring is unharmed).
    pub fn advance(&mut self, n: usize) {
        assert!(
            n <= self.len_cached(),
            "advance({n}) past the {} records seen",
            self.len_cached()
        );
        if n == 0 {
            return;
        }
        self.head = self.head.wrapping_add(n);
        // Release pairs with the producer's Acquire load of `head` in
        // `Producer::refresh_free`: our Relaxed loads of the freed slots happen-before
        // the producer's Relaxed stores that reuse them. One store per burst.
        self.shared.head.0.store(self.head, Ordering::Release);
    }

    /// Moves up to `out.len()` of the oldest records into `out` and returns how many.
    /// At most one `Acquire` load and one `Release` store for the whole burst.
    pub fn pop_burst(&mut self, out: &mut [Record]) -> usize {
        let n = self.peek_burst(out);
        self.advance(n);
        n
    }
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("capacity", &self.capacity())
            .field("head", &self.head)
            .field("tail_cache", &self.tail_cache)
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn head_and_tail_on_separate_128_byte_lines() {
        assert_eq!(std::mem::align_of::<CachePadded<AtomicUsize>>(), 128);
        assert_eq!(std::mem::size_of::<CachePadded<AtomicUsize>>(), 128);
        let (p, _c) = channel(4);
        let head = &p.shared.head as *const _ as usize;
        let tail = &p.shared.tail as *const _ as usize;
        assert!(head.abs_diff(tail) >= 128);
        assert_eq!(head % 128, 0);
        assert_eq!(tail % 128, 0);
    }

    #[test]
    fn rejects_bad_capacity() {
        for bad in [0, 3, 6, 100, MAX_CAPACITY * 2] {
            assert_eq!(
                try_channel(bad).err(),
                Some(CapacityError { requested: bad })
            );
        }
        assert!(try_channel(1).is_ok());
    }

    #[test]
    fn producer_and_consumer_are_send() {
        fn is_send<T: Send>() {}
        is_send::<Producer>();
        is_send::<Consumer>();
    }
}

/// Loom model checks. Run with
/// `RUSTFLAGS="--cfg loom" cargo test -p flowtwin-sync --release ring_loom`.
///
/// Every word of every record is checked, so a missing Release/Acquire pairing shows up
/// as a stale word read by the consumer (loom models the weak memory of `Relaxed`
/// atomics), and a lost or duplicated record as a wrong sequence. Weakening the `tail`
/// Release store or Acquire load makes all three fail. Loom does not model load
/// buffering (a load reading a store that comes later in a cycle), so the `head`
/// Release/Acquire pair that prevents the write-after-read hazard rests on the argument
/// in `Producer::refresh_free`, not on these checks.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::thread;

    fn rec(seq: u64) -> Record {
        let mut r = [0u64; RECORD_WORDS];
        for (i, w) in r.iter_mut().enumerate() {
            *w = (seq + 1) * 100 + i as u64;
        }
        r
    }

    /// Runs `f` under loom with no preemption bound (LOOM_MAX_PREEMPTIONS still
    /// overrides): these models are small enough to explore exhaustively (under a second
    /// in release; the explored space stops growing at a bound of about 10).
    fn model(f: impl Fn() + Sync + Send + 'static) {
        loom::model::Builder::new().check(f);
    }

    /// Producer pushes 3 records one by one into a 2-slot ring (so it must wait for the
    /// consumer and reuse a slot); consumer pops in bursts of up to 2.
    #[test]
    fn ring_loom_order_no_loss_no_tear() {
        model(|| {
            const N: u64 = 3;
            let (mut p, mut c) = channel(2);
            let prod = thread::spawn(move || {
                for s in 0..N {
                    while p.try_push(&rec(s)).is_err() {
                        thread::yield_now();
                    }
                }
            });
            let mut out = [[0; RECORD_WORDS]; 2];
            let mut next = 0;
            while next < N {
                let n = c.pop_burst(&mut out);
                if n == 0 {
                    thread::yield_now();
                }
                for r in &out[..n] {
                    assert_eq!(*r, rec(next));
                    next += 1;
                }
            }
            prod.join().unwrap();
            assert_eq!(c.pop_burst(&mut out), 0);
        });
    }

    /// A 2-record group pushed with `try_push_many` into a 2-slot ring after a single
    /// record: the group can only go in once both slots are free, and the consumer must see
    /// it whole, never half.
    #[test]
    fn ring_loom_push_many_is_atomic() {
        model(|| {
            let (mut p, mut c) = channel(2);
            let prod = thread::spawn(move || {
                while p.try_push(&rec(0)).is_err() {
                    thread::yield_now();
                }
                let group = [rec(1), rec(2)];
                while p.try_push_many(&group).is_err() {
                    thread::yield_now();
                }
            });
            let mut out = [[0; RECORD_WORDS]; 2];
            let mut next = 0;
            while next < 3 {
                let n = c.pop_burst(&mut out);
                if n == 0 {
                    thread::yield_now();
                    continue;
                }
                if next >= 1 {
                    assert_eq!(n, 2, "the group was seen in part");
                }
                for r in &out[..n] {
                    assert_eq!(*r, rec(next));
                    next += 1;
                }
            }
            prod.join().unwrap();
        });
    }

    /// `push_burst` on the producer (partial bursts when short of room) against
    /// `peek_burst` + partial `advance` on the consumer, on a 2-slot ring that wraps.
    #[test]
    fn ring_loom_bursts_with_peek_advance() {
        model(|| {
            let (mut p, mut c) = channel(2);
            let prod = thread::spawn(move || {
                let recs = [rec(0), rec(1), rec(2)];
                let mut sent = 0;
                while sent < recs.len() {
                    let n = p.push_burst(&recs[sent..]);
                    if n == 0 {
                        thread::yield_now();
                    }
                    sent += n;
                }
            });
            let mut out = [[0; RECORD_WORDS]; 2];
            let mut next = 0;
            while next < 3 {
                let n = c.peek_burst(&mut out);
                if n == 0 {
                    thread::yield_now();
                    continue;
                }
                // Consume only the first record seen; the rest is read again next time.
                assert_eq!(out[0], rec(next));
                c.advance(1);
                next += 1;
            }
            prod.join().unwrap();
        });
    }
}
