//! Real DPDK: an SPSC `rte_ring` split into its producer and consumer ends, used from two
//! threads at once (the software-distribution handoff). One EAL per process, so one #[test].

use flowtwin_ffi::ring::{RingConsumer, RingProducer};
use flowtwin_ffi::{Eal, MbufBurst, Mempool, Ring, BURST_MAX};

fn eal_args() -> Vec<String> {
    let huge = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find(|l| l.starts_with("HugePages_Free:")).map(|l| l.split_whitespace().nth(1) != Some("0")))
        .unwrap_or(false);
    let mut a: Vec<String> = ["-l", "0", "--no-pci", "--log-level", "error"].iter().map(|s| s.to_string()).collect();
    if huge {
        a.push("--in-memory".to_string());
    } else {
        a.extend(["--no-huge", "--no-shconf", "-m", "256"].iter().map(|s| s.to_string()));
    }
    a
}

fn assert_send<T: Send>() {}

#[test]
fn split_ring_hands_mbufs_between_threads_in_order() {
    assert_send::<RingProducer>();
    assert_send::<RingConsumer>();
    let eal = Eal::init(&eal_args()).expect("EAL init");
    let pool = std::sync::Arc::new(Mempool::new(&eal, "split_pool", 4095, 0, 2048 + 128, -1).expect("mempool"));

    // 1. Full ring: enqueue never blocks, what does not fit stays in the burst, in order.
    let ring = Ring::new(&eal, "split_small", 64, true).expect("ring");
    assert!(ring.is_spsc());
    let (mut p, mut c) = ring.split();
    assert_eq!(p.name(), "split_small");
    let mut b = MbufBurst::new();
    for round in 0..2 {
        assert!(pool.alloc_bulk(&mut b, BURST_MAX));
        for i in 0..BURST_MAX {
            assert!(b.set_len(i, 8));
            b.data_mut(i)[..8].copy_from_slice(&((round * BURST_MAX + i) as u64).to_le_bytes());
        }
        let n = p.enqueue_burst(&mut b);
        assert_eq!(n + b.len(), BURST_MAX);
    }
    // 63 usable slots: 32 + 31 went in, one is left in the burst (the last one written).
    assert_eq!(p.count(), 63);
    assert_eq!(b.len(), 1);
    assert_eq!(u64::from_le_bytes(b.data(0)[..8].try_into().unwrap()), 63);
    b.clear();
    let mut got = MbufBurst::new();
    let n = c.dequeue_burst(&mut got);
    assert_eq!(n, BURST_MAX);
    for i in 0..n {
        assert_eq!(u64::from_le_bytes(got.data(i)[..8].try_into().unwrap()), i as u64);
    }
    got.clear();
    // 2. Dropping both ends frees the mbufs still queued (31 here) and the ring.
    assert_eq!(pool.in_use(), 31);
    drop(p);
    assert_eq!(pool.in_use(), 31, "the consumer still holds the ring");
    drop(c);
    assert_eq!(pool.in_use(), 0, "the last end frees the queued mbufs");

    // 3. Two threads: producer and consumer concurrently; every mbuf arrives once, in order.
    const TOTAL: u64 = 200_000;
    let (mut p, mut c) = Ring::new(&eal, "split_big", 1024, true).expect("ring").split();
    let pp = pool.clone();
    let prod = std::thread::spawn(move || {
        let mut next = 0u64;
        let mut b = MbufBurst::new();
        let mut full = 0u64;
        while next < TOTAL || !b.is_empty() {
            while b.len() < BURST_MAX && next < TOTAL {
                let Some(mut m) = pp.alloc() else { break };
                m.append(8).expect("room").copy_from_slice(&next.to_le_bytes());
                b.push(m).ok().expect("room in burst");
                next += 1;
            }
            if p.enqueue_burst(&mut b) == 0 {
                full += 1;
                std::hint::spin_loop();
            }
        }
        full
    });
    let cons = std::thread::spawn(move || {
        let mut want = 0u64;
        let mut b = MbufBurst::new();
        while want < TOTAL {
            let n = c.dequeue_burst(&mut b);
            for i in 0..n {
                let v = u64::from_le_bytes(b.data(i)[..8].try_into().unwrap());
                assert_eq!(v, want, "out of order or lost");
                want += 1;
            }
            b.clear();
        }
        want
    });
    let _full_rounds = prod.join().expect("producer");
    assert_eq!(cons.join().expect("consumer"), TOTAL);
    assert_eq!(pool.in_use(), 0);
}
