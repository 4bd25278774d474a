use super::*;
use crate::distribute::{worker_for_key, worker_for_tcp_v4};
use crate::flow::FlowKey;
use std::cell::RefCell;
use std::collections::HashSet;

const L: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const R: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 7);
const RPORT: u16 = 8080;

fn key(b: u8) -> [u8; 16] {
    [b; 16]
}
fn chooser(workers: usize) -> EphemeralPorts {
    EphemeralPorts::new(EphemeralConfig::new(key(7)), SoftwareSteering::new(workers))
}
fn small(first: u16, last: u16, workers: usize) -> EphemeralPorts {
    let cfg = EphemeralConfig { range: PortRange::new(first, last).unwrap(), key: key(7), max_tries: 0 };
    EphemeralPorts::new(cfg, SoftwareSteering::new(workers))
}

#[test]
fn every_port_chosen_reaches_the_requesting_worker() {
    for workers in [1usize, 2, 3, 4, 8] {
        let mut c = chooser(workers);
        for worker in 0..workers {
            for (remote, rport) in [(R, RPORT), (Ipv4Addr::new(10, 1, 2, 3), 443), (L, 80)] {
                let taken = RefCell::new(HashSet::new());
                for _ in 0..300 {
                    let p = c.choose(worker, L, remote, rport, |p| taken.borrow().contains(&p)).unwrap();
                    assert!(c.range().contains(p));
                    assert!(taken.borrow_mut().insert(p), "{p} handed out twice");
                    // The reply (remote → local), the SYN (local → remote) and the flow key the
                    // stack files the connection under all map to the requesting worker.
                    let hw = |a, pa, b, pb| if workers == 1 { 0 } else { worker_for_tcp_v4(a, pa, b, pb, workers) };
                    assert_eq!(hw(remote, rport, L, p), worker, "{workers} workers: reply of port {p}");
                    assert_eq!(hw(L, p, remote, rport), worker, "{workers} workers: SYN of port {p}");
                    assert_eq!(worker_for_key(&FlowKey::v4(remote, rport, L, p), workers), worker);
                }
            }
        }
        let k = c.counters();
        assert_eq!(k.chosen, 300 * 3 * workers as u64);
        assert_eq!(k.examined, k.chosen + k.other_worker + k.in_use);
        if workers > 1 {
            // About (workers - 1) of every `workers` ports examined belong to another worker.
            let share = k.other_worker as f64 / k.examined as f64;
            let want = (workers - 1) as f64 / workers as f64;
            assert!((share - want).abs() < 0.05, "{workers} workers: {share} of ports skipped, want ~{want}");
        } else {
            assert_eq!(k.other_worker, 0);
        }
    }
}

#[test]
fn exhaustion_hands_out_exactly_the_worker_s_ports_then_fails() {
    for workers in [1usize, 2, 3] {
        for worker in 0..workers {
            let mut c = small(40000, 40063, workers);
            let want: HashSet<u16> = (40000..=40063).filter(|&p| c.steering().worker_of_reply(L, p, R, RPORT) == worker).collect();
            assert!(!want.is_empty());
            let taken = RefCell::new(HashSet::new());
            let err = loop {
                match c.choose(worker, L, R, RPORT, |p| taken.borrow().contains(&p)) {
                    Ok(p) => assert!(taken.borrow_mut().insert(p)),
                    Err(e) => break e,
                }
            };
            assert_eq!(*taken.borrow(), want, "{workers} workers, worker {worker}");
            assert_eq!(err, PortError::Exhausted { tried: 64, for_worker: want.len() as u32 });
            assert_eq!(c.counters().exhausted, 1);
            // Freeing one port makes it the answer.
            let freed = *want.iter().next().unwrap();
            taken.borrow_mut().remove(&freed);
            assert_eq!(c.choose(worker, L, R, RPORT, |p| taken.borrow().contains(&p)), Ok(freed));
            // Another destination has its own 4-tuples: the same ports are free for it.
            assert!(c.choose(worker, L, R, RPORT + 1, |_| false).is_ok());
        }
    }
    assert!(PortError::Exhausted { tried: 64, for_worker: 32 }.to_string().contains("64 examined"));
}

#[test]
fn search_wraps_around_the_end_of_the_range() {
    // One worker: the counter walks the range one port per choice, from the secret offset.
    let mut c = small(65526, 65535, 1);
    let seq: Vec<u16> = (0..25).map(|_| c.choose(0, L, R, RPORT, |_| false).unwrap()).collect();
    for w in seq.windows(2) {
        let next = if w[0] == 65535 { 65526 } else { w[0] + 1 };
        assert_eq!(w[1], next, "{seq:?}");
    }
    assert!(seq.windows(2).any(|w| w == [65535, 65526]), "wrapped past the top of the port space: {seq:?}");
    // Every start position: the only free port is always found, wherever the search begins.
    for first_free in 65526..=65535u16 {
        for _ in 0..10 {
            assert_eq!(c.choose(0, L, R, RPORT, |p| p != first_free), Ok(first_free));
        }
    }
}

#[test]
fn max_tries_bounds_the_search() {
    let cfg = EphemeralConfig { max_tries: 5, ..EphemeralConfig::new(key(1)) };
    let mut c = EphemeralPorts::new(cfg, SoftwareSteering::new(1));
    assert_eq!(c.choose(0, L, R, RPORT, |_| true), Err(PortError::Exhausted { tried: 5, for_worker: 5 }));
    assert_eq!((c.counters().examined, c.counters().in_use), (5, 5));
    // More than the range means the range.
    let cfg = EphemeralConfig { range: PortRange::new(1000, 1009).unwrap(), max_tries: 1_000_000, ..EphemeralConfig::new(key(1)) };
    let mut c = EphemeralPorts::new(cfg, SoftwareSteering::new(1));
    assert_eq!(c.choose(0, L, R, RPORT, |_| true), Err(PortError::Exhausted { tried: 10, for_worker: 10 }));
}

#[test]
fn start_is_keyed_per_destination_and_deterministic() {
    // The first port for a destination depends on the secret and on the 3-tuple.
    let first = |k: u8, remote: Ipv4Addr, rport: u16| {
        EphemeralPorts::new(EphemeralConfig::new(key(k)), SoftwareSteering::new(1)).choose(0, L, remote, rport, |_| false).unwrap()
    };
    assert_eq!(first(1, R, RPORT), first(1, R, RPORT), "same key, same answer (replayable)");
    let by_key: HashSet<u16> = (0..50).map(|k| first(k, R, RPORT)).collect();
    let by_port: HashSet<u16> = (0..200).map(|p| first(1, R, 1000 + p)).collect();
    let by_addr: HashSet<u16> = (0..200).map(|a| first(1, Ipv4Addr::new(10, 0, 0, a), RPORT)).collect();
    assert!(by_key.len() >= 48 && by_port.len() >= 190 && by_addr.len() >= 190, "{} {} {}", by_key.len(), by_port.len(), by_addr.len());
    // Spread over the whole range, not clustered at its start.
    let range = PortRange::default();
    let mid = range.first() + (range.len() / 2) as u16;
    let low = by_port.iter().filter(|&&p| p < mid).count();
    assert!((70..130).contains(&low), "{low} of 200 below the middle");
    // Two choosers with one key hand out the same sequence for the same requests.
    let (mut a, mut b) = (chooser(4), chooser(4));
    for i in 0..100u16 {
        let rp = 1000 + i % 7;
        assert_eq!(a.choose(usize::from(i % 4), L, R, rp, |_| false), b.choose(usize::from(i % 4), L, R, rp, |_| false));
    }
}

#[test]
fn bad_arguments() {
    assert_eq!(PortRange::new(0, 10), Err(PortError::BadRange { first: 0, last: 10 }));
    assert_eq!(PortRange::new(20, 10), Err(PortError::BadRange { first: 20, last: 10 }));
    let one = PortRange::new(5000, 5000).unwrap();
    assert_eq!((one.len(), one.is_empty(), one.contains(5000), one.contains(5001)), (1, false, true, false));
    assert_eq!(PortRange::default(), PortRange::LINUX_DEFAULT);
    assert_eq!((PortRange::default().first(), PortRange::default().last(), PortRange::default().len()), (32768, 60999, 28232));
    let full = PortRange::new(1, 65535).unwrap();
    assert_eq!(full.len(), 65535);
    let mut c = chooser(2);
    assert_eq!(c.choose(2, L, R, RPORT, |_| false), Err(PortError::NoSuchWorker { worker: 2, workers: 2 }));
    assert_eq!(c.counters().examined, 0);
    assert_eq!(SoftwareSteering::new(0).workers(), 1);
    assert_eq!(PortError::NoSuchWorker { worker: 2, workers: 2 }.to_string(), "no worker 2 (of 2)");
    assert_eq!(PortError::BadRange { first: 20, last: 10 }.to_string(), "bad local port range 20-10");
}

#[test]
fn whole_port_space_search_is_complete() {
    // The largest range there is: every port reaching the worker is found before exhaustion.
    let cfg = EphemeralConfig { range: PortRange::new(1, 65535).unwrap(), ..EphemeralConfig::new(key(3)) };
    let mut c = EphemeralPorts::new(cfg, SoftwareSteering::new(8));
    let want = (1..=65535u16).filter(|&p| c.steering().worker_of_reply(L, p, R, RPORT) == 5).count();
    let only = (1..=65535u16).rev().find(|&p| c.steering().worker_of_reply(L, p, R, RPORT) == 5).unwrap();
    assert_eq!(c.choose(5, L, R, RPORT, |p| p != only), Ok(only));
    assert_eq!(c.choose(5, L, R, RPORT, |_| true), Err(PortError::Exhausted { tried: 65535, for_worker: want as u32 }));
}
