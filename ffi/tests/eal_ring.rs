//! Real DPDK, no NIC: EAL in memory (no hugepages needed), a `net_ring` port built from two
//! rte_rings, and the safe wrappers end to end. DPDK allows one EAL init per process, so this
//! binary holds exactly one #[test] that walks through every case in order.

use flowtwin_ffi::port::{available_ports, port_by_name, PortConfig, RssMode};
use flowtwin_ffi::ring::eth_from_rings;
use flowtwin_ffi::{Eal, MbufBurst, Mempool, Port, Ring, BURST_MAX};

fn eal_args() -> Vec<String> {
    let huge = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find(|l| l.starts_with("HugePages_Free:")).map(|l| l.split_whitespace().nth(1) != Some("0")))
        .unwrap_or(false);
    let mut a: Vec<String> = ["-l", "0", "--no-pci", "--log-level", "error"].iter().map(|s| s.to_string()).collect();
    if huge {
        a.extend(["--in-memory".to_string()]);
    } else {
        a.extend(["--no-huge", "--no-shconf", "-m", "256"].iter().map(|s| s.to_string()));
    }
    a.extend(["--vdev".to_string(), "net_null0".to_string()]);
    a
}

#[test]
fn eal_mempool_mbuf_port_ring_end_to_end() {
    let eal = Eal::init(&eal_args()).expect("EAL init");

    // A second init in the same process is an error, not UB.
    let again = Eal::init(&["-l", "0"]).err().expect("second init must fail");
    assert!(again.to_string().contains("already initialised"), "{again}");

    let pool = Mempool::new(&eal, "t_pool", 2047, 0, 2048 + 128, -1).expect("mempool");
    assert_eq!(pool.in_use(), 0);

    // Owned mbuf: append, write, read; freed on drop (pool count returns).
    {
        let mut m = pool.alloc().expect("alloc");
        assert_eq!(pool.in_use(), 1);
        m.append(60).expect("room for 60 bytes").copy_from_slice(&[0xab; 60]);
        assert_eq!(m.data().len(), 60);
        assert!(m.is_contiguous());
        assert!(m.append(1 << 15).is_none(), "append past the data room must fail, not overflow");
    }
    assert_eq!(pool.in_use(), 0, "dropping an Mbuf frees it exactly once");

    // Bulk alloc into a burst; the burst frees what it still holds on drop.
    {
        let mut b = MbufBurst::new();
        assert!(pool.alloc_bulk(&mut b, BURST_MAX));
        assert!(!pool.alloc_bulk(&mut b, 1), "a full burst takes no more");
        assert_eq!(pool.in_use(), BURST_MAX as u32);
    }
    assert_eq!(pool.in_use(), 0);

    // A burst's capacity bounds every fill: engine.burst sets the RX burst size with it.
    {
        let mut b = MbufBurst::with_capacity(4);
        assert_eq!(b.capacity(), 4);
        assert!(!pool.alloc_bulk(&mut b, 5), "more than the capacity is refused");
        assert!(pool.alloc_bulk(&mut b, 4));
        assert!(b.is_full() && b.room() == 0);
        let m = pool.alloc().expect("alloc");
        assert!(b.push(m).is_err(), "a full burst gives the mbuf back");
        assert_eq!(MbufBurst::with_capacity(0).capacity(), 1);
        assert_eq!(MbufBurst::with_capacity(1000).capacity(), BURST_MAX);
    }
    assert_eq!(pool.in_use(), 0);

    // net_ring port: TX ring == RX ring, so what we send comes back.
    let r = Ring::new(&eal, "t_ring", 1024, true).expect("ring");
    let r2 = Ring::new(&eal, "t_ring_unused", 1024, true).expect("ring2");
    drop(r2);
    assert!(Ring::new(&eal, "t_bad", 1000, true).is_err(), "non power of two is refused");
    // Both directions through one ring: rte_eth_from_rings keeps the pointers.
    let ring_port = {
        let rx = vec![r];
        // The same ring cannot be moved twice; build the port from one ring for RX and a
        // second for TX, then move mbufs across by hand below.
        let tx = vec![Ring::new(&eal, "t_ring_tx", 1024, true).expect("tx ring")];
        eth_from_rings(&eal, "net_ring_t", rx, tx).expect("eth_from_rings")
    };
    let ids = available_ports(&eal);
    assert!(ids.contains(&ring_port), "{ids:?}");
    // rte_eth_from_rings names the device "net_ring_<name>".
    assert_eq!(port_by_name(&eal, "net_ring_net_ring_t").unwrap(), ring_port);
    let err = port_by_name(&eal, "no_such_port").unwrap_err().to_string();
    assert!(err.contains("no_such_port"), "{err}");

    let conf = PortConfig { rss: RssMode::Symmetric, ..Default::default() };
    let mut port = Port::start(&eal, ring_port, &conf, &pool).expect("start ring port");
    assert!(!port.info().rss_active, "one queue: no RSS");
    let too_many = PortConfig { rx_queues: 4096, tx_queues: 4096, ..Default::default() };
    let null = port_by_name(&eal, "net_null0").unwrap();
    let e = Port::start(&eal, null, &too_many, &pool).err().expect("4096 queues on net_null must be refused");
    assert!(e.to_string().contains("supports at most"), "{e}");

    let mut txq = port.take_tx(0).expect("tx queue");
    let mut rxq = port.take_rx(0).expect("rx queue");
    assert!(port.take_tx(0).is_none(), "a queue handle is handed out once");

    let mut b = MbufBurst::new();
    assert!(pool.alloc_bulk(&mut b, 8));
    for i in 0..8 {
        assert!(b.set_len(i, 64));
        b.data_mut(i).fill(i as u8);
    }
    let sent = txq.tx_burst(&mut b);
    assert_eq!(sent, 8);
    assert!(b.is_empty(), "sent mbufs leave the burst");
    // Nothing arrives on RX: its ring is a different one, and empty.
    let mut got = MbufBurst::new();
    assert_eq!(rxq.rx_burst(&mut got), 0);
    let st = port.stats().unwrap();
    assert_eq!(st.opackets, 8);
    assert_eq!(pool.in_use(), 8, "8 mbufs wait in the TX ring");

    // The null port: RX generates packets, TX frees them; counters move.
    let mut nullp = Port::start(&eal, null, &PortConfig::default(), &pool).expect("null port");
    let mut nrx = nullp.take_rx(0).unwrap();
    let mut ntx = nullp.take_tx(0).unwrap();
    let mut burst = MbufBurst::new();
    let mut small = MbufBurst::with_capacity(3);
    assert_eq!(nrx.rx_burst(&mut small), 3, "rx_burst stops at the burst's capacity");
    let taken = small.len() as u64;
    let s0 = ntx.tx_burst(&mut small) as u64;
    assert_eq!(s0, taken);
    let n = nrx.rx_burst(&mut burst);
    assert!(n > 3, "net_null RX fills a full-size burst");
    let s = ntx.tx_burst(&mut burst);
    assert_eq!(s, n);
    let ns = nullp.stats().unwrap();
    assert_eq!(ns.ipackets, n as u64 + taken);
    assert_eq!(ns.opackets, n as u64 + taken);
    assert!(nullp.link().up);
}
