//! `flowtwin bench`: a testpmd-style forwarding harness, to hold flowtwin's DPDK plumbing to
//! `dpdk-testpmd`'s speed.
//!
//! Like testpmd: forwarding modes are a small table of per-burst hooks ([`MODES`]); ports are
//! paired (0↔1, 2↔3, a lone port answers itself); every (port, queue) RX stream is assigned
//! to one forwarding lcore; per-stream counters live apart from configuration; busy cycles
//! (`rte_rdtsc` around bursts that carried packets, testpmd `--record-core-cycles`) give
//! cycles/packet. TX partial-send policy (testpmd's default without `--retry`): whatever the
//! driver did not take is freed and counted as `tx_dropped`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowtwin_ffi::port::{available_ports, PortConfig, RssMode};
use flowtwin_ffi::{rdtsc, tsc_hz, Eal, MbufBurst, Mempool, Port, PortId, RxQueue, TxQueue};

/// One forwarding mode: a name and a per-burst hook.
pub struct FwdMode {
    pub name: &'static str,
    pub help: &'static str,
    /// Process one iteration of one stream; returns packets received (or generated).
    run: fn(&mut Stream, &Mempool) -> u64,
}

/// The table of modes (testpmd's `struct fwd_engine` list).
pub const MODES: &[FwdMode] = &[
    FwdMode { name: "io", help: "forward packets unchanged to the paired port", run: fwd_io },
    FwdMode { name: "macswap", help: "swap source and destination MAC, forward to the paired port", run: fwd_macswap },
    FwdMode { name: "rxonly", help: "receive and free", run: fwd_rxonly },
    FwdMode { name: "txonly", help: "generate 64-byte UDP packets on every port", run: fwd_txonly },
];

pub fn mode_by_name(name: &str) -> Option<&'static FwdMode> {
    MODES.iter().find(|m| m.name == name)
}

/// Per-stream counters, written by one lcore (plain stores), read by the main lcore.
#[repr(align(128))]
#[derive(Default)]
pub struct StreamCounters {
    pub rx: AtomicU64,
    pub tx: AtomicU64,
    pub tx_dropped: AtomicU64,
    pub busy_cycles: AtomicU64,
}

/// An RX stream: RX queue q of port p, transmitting on TX queue q of the paired port.
pub struct Stream {
    rx: RxQueue,
    /// None in rxonly mode.
    tx: Option<TxQueue>,
    burst: MbufBurst,
    /// Local copies of the counters; published every 256 iterations and at the end.
    rx_n: u64,
    tx_n: u64,
    drop_n: u64,
    busy: u64,
    counters: Arc<StreamCounters>,
}

impl Stream {
    /// Send the burst; free and count what the driver refused (the stated partial-send
    /// policy: no retry, like testpmd without --retry).
    #[inline]
    fn send(&mut self) {
        let n = self.burst.len() as u64;
        let sent = match &mut self.tx {
            Some(tx) => tx.tx_burst(&mut self.burst) as u64,
            None => 0,
        };
        self.tx_n += sent;
        self.drop_n += n - sent;
        self.burst.clear();
    }

    #[inline]
    fn publish(&self) {
        // Single writer per counter: plain Relaxed stores; the main lcore's Relaxed loads may
        // see slightly old values, which a once-a-second report tolerates.
        self.counters.rx.store(self.rx_n, Ordering::Relaxed);
        self.counters.tx.store(self.tx_n, Ordering::Relaxed);
        self.counters.tx_dropped.store(self.drop_n, Ordering::Relaxed);
        self.counters.busy_cycles.store(self.busy, Ordering::Relaxed);
    }
}

fn fwd_io(s: &mut Stream, _: &Mempool) -> u64 {
    let n = s.rx.rx_burst(&mut s.burst) as u64;
    if n > 0 {
        s.rx_n += n;
        s.send();
    }
    n
}

fn fwd_macswap(s: &mut Stream, _: &Mempool) -> u64 {
    let n = s.rx.rx_burst(&mut s.burst);
    if n == 0 {
        return 0;
    }
    s.burst.swap_macs();
    s.rx_n += n as u64;
    s.send();
    n as u64
}

fn fwd_rxonly(s: &mut Stream, _: &Mempool) -> u64 {
    let n = s.rx.rx_burst(&mut s.burst) as u64;
    if n > 0 {
        s.rx_n += n;
        s.burst.clear();
    }
    n
}

/// A 64-byte (without FCS: 60) Ethernet/IPv4/UDP frame in the benchmark range 198.18.0.0/15.
const TXONLY_FRAME: [u8; 60] = {
    let mut f = [0u8; 60];
    // dst 02:00:00:00:00:02, src 02:00:00:00:00:01, IPv4
    f[0] = 0x02; f[5] = 0x02; f[6] = 0x02; f[11] = 0x01; f[12] = 0x08;
    // IPv4: ver/ihl, tos, total length 46, id, flags, ttl 64, proto UDP, checksum 0x31c5
    f[14] = 0x45; f[17] = 46; f[22] = 64; f[23] = 17; f[24] = 0x31; f[25] = 0xc5;
    // 198.18.0.1 -> 198.18.0.2
    f[26] = 198; f[27] = 18; f[29] = 1; f[30] = 198; f[31] = 18; f[33] = 2;
    // UDP 9 -> 9, length 26, checksum 0 (none)
    f[35] = 9; f[37] = 9; f[39] = 26;
    f
};

fn fwd_txonly(s: &mut Stream, pool: &Mempool) -> u64 {
    let room = s.burst.room();
    if !pool.alloc_bulk(&mut s.burst, room) {
        return 0;
    }
    for i in 0..s.burst.len() {
        if s.burst.set_len(i, TXONLY_FRAME.len()) {
            s.burst.data_mut(i).copy_from_slice(&TXONLY_FRAME);
        }
    }
    let n = s.burst.len() as u64;
    s.send();
    n
}

/// Bench options (from the CLI).
pub struct BenchOpts {
    pub mode: &'static FwdMode,
    pub duration: Duration,
    pub queues: u16,
    pub mbufs: u32,
    pub desc: u16,
    pub json: bool,
    pub quiet: bool,
}

/// One lcore's work: its streams.
struct LcoreJob {
    streams: Vec<Stream>,
}

pub fn run(eal: Eal, opts: BenchOpts, stop: Arc<AtomicBool>) -> Result<(), String> {
    let ports_ids = available_ports(&eal);
    if ports_ids.is_empty() {
        return Err("no ports: give EAL a device, e.g. `-- --vdev net_null0 --vdev net_null1` (see flowtwin bench --help)".into());
    }
    let workers = eal.worker_lcores();
    if workers.is_empty() {
        return Err("no worker lcore: give EAL at least two lcores, e.g. -l 0-1 (main + one forwarding lcore)".into());
    }
    let nmbufs = opts.mbufs;
    let pool = Arc::new(
        Mempool::new(&eal, "bench_pool", nmbufs, 256, 2048 + 128, -1).map_err(|e| e.to_string())?,
    );
    let conf = PortConfig {
        rx_queues: opts.queues,
        tx_queues: opts.queues,
        rx_desc: opts.desc,
        tx_desc: opts.desc,
        rss: RssMode::Symmetric,
        promiscuous: true,
    };
    let mut ports: Vec<Port> = Vec::new();
    for id in &ports_ids {
        ports.push(Port::start(&eal, *id, &conf, &pool).map_err(|e| e.to_string())?);
    }
    // Streams: RX (p, q) -> TX (peer(p), q); ports pair 0<->1, 2<->3, a lone port answers
    // itself. txonly generates on TX (p, q).
    let np = ports.len();
    let peer = |p: usize| if p ^ 1 < np { p ^ 1 } else { p };
    let mut streams: Vec<Stream> = Vec::new();
    let mut counters: Vec<(PortId, u16, Arc<StreamCounters>)> = Vec::new();
    let mut txs: Vec<Vec<Option<TxQueue>>> =
        ports.iter_mut().map(|p| (0..opts.queues).map(|q| p.take_tx(q)).collect()).collect();
    for p in 0..np {
        for q in 0..opts.queues {
            let rx = ports[p].take_rx(q).ok_or("RX queue taken twice")?;
            let tx = match opts.mode.name {
                "rxonly" => None,
                "txonly" => txs[p][q as usize].take(),
                _ => txs[peer(p)][q as usize].take(),
            };
            let c = Arc::new(StreamCounters::default());
            counters.push((ports_ids[p], q, c.clone()));
            streams.push(Stream { rx, tx, burst: MbufBurst::new(), rx_n: 0, tx_n: 0, drop_n: 0, busy: 0, counters: c });
        }
    }
    // Streams go to forwarding lcores round-robin (testpmd's default distribution).
    let mut jobs: Vec<LcoreJob> = (0..workers.len()).map(|_| LcoreJob { streams: Vec::new() }).collect();
    for (i, s) in streams.into_iter().enumerate() {
        jobs[i % workers.len()].streams.push(s);
    }
    let active_lcores = jobs.iter().filter(|j| !j.streams.is_empty()).count();

    let mode = opts.mode;
    let mut handles = Vec::new();
    for (w, job) in workers.iter().zip(jobs) {
        if job.streams.is_empty() {
            continue;
        }
        let stop = stop.clone();
        let pool = pool.clone();
        handles.push(eal.launch(*w, move || forward_loop(job, mode, &pool, &stop)).map_err(|e| e.to_string())?);
    }

    if !opts.quiet {
        eprintln!(
            "flowtwin bench: mode {} on {} port(s) [{}], {} queue(s) each, {} forwarding lcore(s), {} s",
            mode.name,
            np,
            ports.iter().map(|p| format!("{}={}", p.id().0, p.info().name)).collect::<Vec<_>>().join(", "),
            opts.queues,
            active_lcores,
            opts.duration.as_secs_f64()
        );
    }
    let hz = tsc_hz().max(1) as f64;
    let start = Instant::now();
    let mut last = (start, 0u64);
    while start.elapsed() < opts.duration && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100).min(opts.duration.saturating_sub(start.elapsed())));
        if last.0.elapsed() >= Duration::from_secs(1) {
            let rx: u64 = counters.iter().map(|(_, _, c)| pkts_of(mode, c)).sum();
            let dt = last.0.elapsed().as_secs_f64();
            if !opts.quiet {
                eprintln!("  {:>6.1} s  {:>8.3} Mpps", start.elapsed().as_secs_f64(), (rx - last.1) as f64 / dt / 1e6);
            }
            last = (Instant::now(), rx);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut rc = 0;
    for h in handles {
        rc |= h.join();
    }
    let elapsed = start.elapsed().as_secs_f64();
    if rc != 0 {
        return Err(format!("a forwarding lcore exited with code {rc}"));
    }

    // Summary: per stream, per port, totals.
    let mut total = (0u64, 0u64, 0u64, 0u64);
    let mut lines = Vec::new();
    for (port, q, c) in &counters {
        let (rx, tx, dr, busy) = (
            c.rx.load(Ordering::Relaxed),
            c.tx.load(Ordering::Relaxed),
            c.tx_dropped.load(Ordering::Relaxed),
            c.busy_cycles.load(Ordering::Relaxed),
        );
        total = (total.0 + rx, total.1 + tx, total.2 + dr, total.3 + busy);
        lines.push(format!("  stream port {} queue {q}: rx {rx} tx {tx} tx-dropped {dr}", port.0));
    }
    let pkts = if mode.name == "txonly" { total.1 + total.2 } else { total.0 };
    let mpps = pkts as f64 / elapsed / 1e6;
    let cpp = if pkts > 0 { total.3 as f64 / pkts as f64 } else { 0.0 };
    let mut port_json = Vec::new();
    for p in &ports {
        let s = p.stats().map_err(|e| e.to_string())?;
        if !opts.quiet {
            lines.push(format!(
                "  port {} ({}): ipackets {} opackets {} imissed {} rx_nombuf {} ierrors {} oerrors {}",
                p.id().0, p.info().name, s.ipackets, s.opackets, s.imissed, s.rx_nombuf, s.ierrors, s.oerrors
            ));
        }
        port_json.push(serde_json::json!({
            "port": p.id().0, "name": p.info().name, "ipackets": s.ipackets, "opackets": s.opackets,
            "imissed": s.imissed, "rx_nombuf": s.rx_nombuf, "ierrors": s.ierrors, "oerrors": s.oerrors,
        }));
    }
    if !opts.quiet {
        eprintln!("flowtwin bench: done in {elapsed:.2} s");
        for l in &lines {
            eprintln!("{l}");
        }
        eprintln!(
            "  total: rx {} tx {} tx-dropped {}  => {:.3} Mpps, {:.1} busy cycles/packet ({:.0} MHz TSC)",
            total.0, total.1, total.2, mpps, cpp, hz / 1e6
        );
    }
    if opts.json {
        println!(
            "{}",
            serde_json::json!({
                "mode": mode.name, "seconds": elapsed, "lcores": active_lcores, "ports": port_json,
                "rx": total.0, "tx": total.1, "tx_dropped": total.2, "mpps": mpps, "cycles_per_packet": cpp,
            })
        );
    }
    // Queue handles keep their port alive: release the unused ones (rxonly keeps every TX
    // queue) before the ports, so every port is stopped and closed before EAL cleanup.
    drop(txs);
    drop(ports);
    drop(pool);
    drop(eal);
    Ok(())
}

fn pkts_of(mode: &FwdMode, c: &StreamCounters) -> u64 {
    if mode.name == "txonly" {
        c.tx.load(Ordering::Relaxed) + c.tx_dropped.load(Ordering::Relaxed)
    } else {
        c.rx.load(Ordering::Relaxed)
    }
}

fn forward_loop(mut job: LcoreJob, mode: &FwdMode, pool: &Mempool, stop: &AtomicBool) -> i32 {
    let mut iter: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        for s in job.streams.iter_mut() {
            let t0 = rdtsc();
            let n = (mode.run)(s, pool);
            if n > 0 {
                s.busy += rdtsc() - t0;
            }
        }
        iter += 1;
        if iter & 0xff == 0 {
            for s in &job.streams {
                s.publish();
            }
        }
    }
    for s in &job.streams {
        s.publish();
    }
    0
}
