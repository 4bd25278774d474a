//! SPSC delta ring: single-thread behaviour and a two-thread std stress test.
//! (The loom model checks are unit tests in `src/ring.rs`, `ring::loom_tests`.)
#![cfg(not(loom))]
#![forbid(unsafe_code)]

use flowtwin_sync::ring::{channel, Full, Record, RECORD_WORDS};
use std::time::{Duration, Instant};

/// A record whose every word is derived from `seq`, so a torn or stale word is caught.
fn rec(seq: u64) -> Record {
    let mut r = [0u64; RECORD_WORDS];
    for (i, w) in r.iter_mut().enumerate() {
        *w = seq ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    r
}

fn check(r: &Record, seq: u64) {
    assert_eq!(*r, rec(seq), "record {seq} corrupted");
}

#[test]
fn empty_ring_pops_nothing() {
    let (_p, mut c) = channel(8);
    let mut out = [[0; RECORD_WORDS]; 4];
    assert_eq!(c.pop_burst(&mut out), 0);
    assert_eq!(c.len(), 0);
    assert!(c.is_empty());
    assert_eq!(c.capacity(), 8);
}

#[test]
fn fill_to_full_then_drain() {
    let (mut p, mut c) = channel(4);
    assert_eq!(p.free(), 4);
    for s in 0..4 {
        p.try_push(&rec(s)).unwrap();
    }
    assert_eq!(p.free(), 0);
    assert_eq!(p.try_push(&rec(99)), Err(Full));
    assert_eq!(c.len(), 4);
    let mut out = [[0; RECORD_WORDS]; 8];
    assert_eq!(c.pop_burst(&mut out), 4);
    for (s, r) in out[..4].iter().enumerate() {
        check(r, s as u64);
    }
    assert_eq!(c.pop_burst(&mut out), 0);
    assert_eq!(p.free(), 4);
}

#[test]
fn wraps_around_many_times() {
    let (mut p, mut c) = channel(4);
    let mut out = [[0; RECORD_WORDS]; 3];
    let mut next_in = 0u64;
    let mut next_out = 0u64;
    // 3 in, 3 out on a 4-slot ring: the indices cross the wrap point every few rounds.
    for _ in 0..100 {
        let burst: Vec<Record> = (next_in..next_in + 3).map(rec).collect();
        assert_eq!(p.push_burst(&burst), 3);
        next_in += 3;
        assert_eq!(c.pop_burst(&mut out), 3);
        for r in &out {
            check(r, next_out);
            next_out += 1;
        }
    }
    assert_eq!(next_out, 300);
}

#[test]
fn push_burst_is_partial_when_short_of_room() {
    let (mut p, mut c) = channel(8);
    let burst: Vec<Record> = (0..5).map(rec).collect();
    assert_eq!(p.push_burst(&burst), 5);
    let more: Vec<Record> = (5..12).map(rec).collect();
    assert_eq!(p.push_burst(&more), 3, "only 3 slots left");
    assert_eq!(p.push_burst(&more[3..]), 0);
    let mut out = [[0; RECORD_WORDS]; 16];
    assert_eq!(c.pop_burst(&mut out), 8);
    for (s, r) in out[..8].iter().enumerate() {
        check(r, s as u64);
    }
    assert_eq!(p.push_burst(&[]), 0);
}

#[test]
fn try_push_many_is_all_or_nothing() {
    let (mut p, mut c) = channel(8);
    let six: Vec<Record> = (0..6).map(rec).collect();
    p.try_push_many(&six).unwrap();
    let three: Vec<Record> = (6..9).map(rec).collect();
    assert_eq!(p.try_push_many(&three), Err(Full));
    assert_eq!(c.len(), 6, "a failed try_push_many wrote nothing");
    p.try_push_many(&three[..2]).unwrap();
    assert_eq!(p.try_push_many(&[]), Ok(()));
    let mut out = [[0; RECORD_WORDS]; 8];
    assert_eq!(c.pop_burst(&mut out), 8);
    for (s, r) in out.iter().enumerate() {
        check(r, s as u64);
    }
    // More records than the ring can ever hold never fit.
    let nine: Vec<Record> = (0..9).map(rec).collect();
    assert_eq!(p.try_push_many(&nine), Err(Full));
    // A group that wraps across the end of the storage comes out intact.
    let five: Vec<Record> = (8..13).map(rec).collect();
    p.try_push_many(&five).unwrap();
    assert_eq!(c.pop_burst(&mut out), 5);
    for (s, r) in out[..5].iter().enumerate() {
        check(r, 8 + s as u64);
    }
}

#[test]
fn peek_then_advance() {
    let (mut p, mut c) = channel(4);
    for s in 0..3 {
        p.try_push(&rec(s)).unwrap();
    }
    let mut out = [[0; RECORD_WORDS]; 4];
    assert_eq!(c.peek_burst(&mut out), 3);
    assert_eq!(c.peek_burst(&mut out), 3, "peek does not consume");
    assert_eq!(p.free(), 1);
    c.advance(2);
    assert_eq!(p.free(), 3);
    assert_eq!(c.pop_burst(&mut out), 1);
    check(&out[0], 2);
    c.advance(0);
}

#[test]
#[should_panic(expected = "advance")]
fn advance_past_seen_records_panics() {
    let (mut p, mut c) = channel(4);
    p.try_push(&rec(0)).unwrap();
    let mut out = [[0; RECORD_WORDS]; 4];
    assert_eq!(c.peek_burst(&mut out), 1);
    c.advance(2);
}

#[test]
fn capacity_one_ring() {
    let (mut p, mut c) = channel(1);
    let mut out = [[0; RECORD_WORDS]; 2];
    for s in 0..10 {
        p.try_push(&rec(s)).unwrap();
        assert_eq!(p.try_push(&rec(s + 100)), Err(Full));
        assert_eq!(c.pop_burst(&mut out), 1);
        check(&out[0], s);
    }
}

#[test]
#[should_panic(expected = "power of two")]
fn channel_panics_on_non_power_of_two() {
    let _ = channel(6);
}

/// Whole test budget for the stress tests; a hang or livelock fails instead of stalling CI.
const STRESS_DEADLINE: Duration = Duration::from_secs(300);

/// Two threads, 10M records with sequence numbers in every word: checks order, no loss, no
/// duplicate, no torn record. Burst sizes vary on both sides so the cached indices go
/// stale in every combination and the indices wrap the small ring many times.
#[test]
fn stress_two_threads_10m_records_in_order() {
    const TOTAL: u64 = 10_000_000;
    let (mut p, mut c) = channel(256);
    let start = Instant::now();
    let producer = std::thread::spawn(move || {
        let mut burst = [[0; RECORD_WORDS]; 37];
        let mut next = 0u64;
        let mut k = 1usize;
        while next < TOTAL {
            let want = k.min((TOTAL - next) as usize);
            for (i, r) in burst[..want].iter_mut().enumerate() {
                *r = rec(next + i as u64);
            }
            let n = p.push_burst(&burst[..want]);
            next += n as u64;
            if n == 0 {
                assert!(start.elapsed() < STRESS_DEADLINE, "producer timed out");
                // Yield, not spin: on a 1-CPU runner the other side needs the core.
                std::thread::yield_now();
            }
            k = k % 37 + 1;
        }
    });
    let mut out = [[0; RECORD_WORDS]; 64];
    let mut expect = 0u64;
    let mut k = 64usize;
    while expect < TOTAL {
        let n = c.pop_burst(&mut out[..k]);
        for r in &out[..n] {
            check(r, expect);
            expect += 1;
        }
        if n == 0 {
            assert!(start.elapsed() < STRESS_DEADLINE, "consumer timed out");
            // Yield, not spin: on a 1-CPU runner the other side needs the core.
            std::thread::yield_now();
        }
        k = if k == 1 { 64 } else { k - 1 };
    }
    producer.join().unwrap();
    assert_eq!(c.pop_burst(&mut out), 0, "nothing beyond the last record");
}

/// Two threads pushing groups of 1..=5 records with `try_push_many`: the consumer drains
/// everything visible each time and must always stop on a group boundary, i.e. a
/// multi-record delta is never published in part.
#[test]
fn stress_try_push_many_never_splits_a_group() {
    const GROUPS: u64 = 500_000;
    const CAP: usize = 16;
    let (mut p, mut c) = channel(CAP);
    let start = Instant::now();
    // Record word 0 = global seq, word 1 = index in group, word 2 = group length.
    let mk = |seq: u64, idx: u64, len: u64| {
        let mut r = rec(seq);
        r[1] = idx;
        r[2] = len;
        r
    };
    let producer = std::thread::spawn(move || {
        let mut seq = 0u64;
        let mut group = [[0; RECORD_WORDS]; 5];
        for g in 0..GROUPS {
            let len = g % 5 + 1;
            for i in 0..len {
                group[i as usize] = mk(seq + i, i, len);
            }
            while p.try_push_many(&group[..len as usize]).is_err() {
                assert!(start.elapsed() < STRESS_DEADLINE, "producer timed out");
                // Yield, not spin: on a 1-CPU runner the other side needs the core.
                std::thread::yield_now();
            }
            seq += len;
        }
        seq
    });
    let mut out = [[0; RECORD_WORDS]; CAP];
    let mut expect = 0u64;
    let mut groups = 0u64;
    while groups < GROUPS {
        // `out` holds the whole ring, so n is everything published.
        let n = c.pop_burst(&mut out);
        if n == 0 {
            assert!(start.elapsed() < STRESS_DEADLINE, "consumer timed out");
            // Yield, not spin: on a 1-CPU runner the other side needs the core.
            std::thread::yield_now();
            continue;
        }
        for r in &out[..n] {
            assert_eq!(r[0], expect, "order");
            assert_eq!(*r, mk(expect, r[1], r[2]), "torn record");
            if r[1] + 1 == r[2] {
                groups += 1;
            }
            expect += 1;
        }
        let last = &out[n - 1];
        assert_eq!(last[1] + 1, last[2], "a group was published in part");
    }
    assert_eq!(producer.join().unwrap(), expect);
}
