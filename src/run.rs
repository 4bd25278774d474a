//! `flowtwin run`: start an engine from a config file.
//!
//! Order matters: control-plane threads (metrics) start before EAL init, because EAL pins the
//! calling thread and threads spawned later inherit that pinning (DPDK-NOTES).

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering, AtomicU64};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use flowtwin_engine::counters::{Counters, Drop, Event, SharedCounters};
use flowtwin_engine::dataplane::{run_worker, Fanout, IdleConfig, NeighborMail, ReplHandles, RoleShared, RxSource, TxPath, Worker, NEIGHBOR_MAILBOX};
use flowtwin_engine::distribute::worker_for_key;
use flowtwin_engine::ephemeral::{ReplySteering, RssSteering, SoftwareSteering};
use flowtwin_sync::{Mode, Role, SyncConfig, SyncStatus, WorkerShared};
use flowtwin_engine::stack::{GroupSet, LiveConfig, StackConfig};
use flowtwin_engine::wire::MacAddr;
use flowtwin_ffi::port::{port_by_name, queue_limits, PortConfig, RssMode, StatsReader};
use flowtwin_ffi::ring::{RingConsumer, RingProducer};
use flowtwin_ffi::wait::{set_timer_slack, wait_readable, Doorbell, MAX_WAIT_FDS};
use flowtwin_ffi::{Eal, LcoreId, Mempool, Port, Ring};

use tracing::{info, warn};

use crate::config::{Config, SyncMode, SyncRole};
use crate::ctl;
use crate::metrics;
use crate::reload::Reloader;

mod drops;
mod link;
mod proxy;
mod report;

use self::drops::DropWarnings;
use self::link::{vdev_iface, LinkWatch};
use self::report::{control, render};

/// Timer slack of the sync thread: its timed waits (next heartbeat, park bound, a full
/// socket's retry) end within a few µs of when asked instead of the default 50 µs.
const SYNC_TIMER_SLACK: Duration = Duration::from_micros(5);

/// The sync thread's [`flowtwin_sync::Waiter`]: `ppoll` on its socket plus an eventfd
/// doorbell the workers ring when they publish deltas while it is parked.
#[derive(Debug)]
struct PollWaiter {
    bell: Doorbell,
    /// `sync.cpu`: pin the sync thread there (checked by `check_sync_cpu` before start).
    cpu: Option<usize>,
    /// `sync.scheduler` and `sync.priority`.
    sched: (flowtwin_ffi::SchedPolicy, i32),
}

/// `sync.cpu` must exist, and no worker may run on it (a worker busy-polls its CPU: the sync
/// thread would starve there and its peer would declare it dead).
fn check_sync_cpu(eal: &Eal, workers: &[LcoreId], cpu: usize) -> Result<(), String> {
    if let Some(w) = workers.iter().find(|&&l| eal.lcore_runs_on(l, cpu)) {
        return Err(format!(
            "sync.cpu = {cpu}: worker lcore {} runs on that CPU; give the sync thread a CPU no worker uses (see eal.args -l / --lcores)",
            w.0
        ));
    }
    // Pin a throwaway thread the way the sync thread will be pinned, so a CPU that does not
    // exist (or is outside this process's cpuset) is an error now, not a warning later.
    std::thread::spawn(move || flowtwin_ffi::pin_current_thread(cpu))
        .join()
        .map_err(|_| format!("sync.cpu = {cpu}: probe thread panicked"))?
        .map_err(|e| format!("sync.cpu = {cpu}: cannot run a thread there: {e}"))
}

impl flowtwin_sync::Waiter for PollWaiter {
    fn wait(&self, fds: &[RawFd], timeout: Duration) -> flowtwin_sync::Woken {
        let mut all = [-1; MAX_WAIT_FDS];
        let n = fds.len();
        if n < MAX_WAIT_FDS {
            all[..n].copy_from_slice(fds);
            all[n] = self.bell.as_raw_fd();
            if let Ok(r) = wait_readable(&all[..=n], timeout) {
                return flowtwin_sync::Woken {
                    readable: r.0 & ((1u64 << n) - 1),
                    rung: r.contains(n) && self.bell.drain(),
                };
            }
        }
        // Cannot poll (too many descriptors, or ppoll failed): degrade to a short sleep and
        // let the loop look at everything.
        std::thread::sleep(timeout.min(Duration::from_micros(100)));
        flowtwin_sync::Woken { readable: u64::MAX, rung: false }
    }
    fn ring(&self) {
        self.bell.ring()
    }
    fn on_sync_thread(&self) {
        if let Err(e) = set_timer_slack(SYNC_TIMER_SLACK) {
            warn!(event = "sync_thread", error = %e, "sync thread: cannot set timer slack: {e}");
        }
        let (policy, prio) = self.sched;
        if policy != flowtwin_ffi::SchedPolicy::Other {
            let name = if policy == flowtwin_ffi::SchedPolicy::Fifo { "SCHED_FIFO" } else { "SCHED_RR" };
            match flowtwin_ffi::set_current_thread_scheduler(policy, prio) {
                Ok(()) => info!(event = "sync_thread", policy = name, priority = prio, "sync thread runs {name} at priority {prio}"),
                Err(e) => warn!(
                    event = "sync_thread",
                    policy = name,
                    priority = prio,
                    error = %e,
                    "sync thread: cannot run {name} at priority {prio} ({e}): it runs time-shared, and on a busy host its heartbeats may come late enough for the peer to take over; grant CAP_SYS_NICE (the packaged unit does) or set sync.scheduler = \"other\" to silence this"
                ),
            }
        }
        if let Some(cpu) = self.cpu {
            match flowtwin_ffi::pin_current_thread(cpu) {
                Ok(()) => info!(event = "sync_thread", cpu, "sync thread pinned to CPU {cpu}"),
                Err(e) => warn!(event = "sync_thread", cpu, error = %e, "sync thread: cannot pin to CPU {cpu}: {e}"),
            }
        }
    }
}

/// Where the engine's configuration came from, for live reloads.
pub struct ConfigSource {
    pub path: std::path::PathBuf,
    /// The log handles a reload's `[log]` applies through.
    pub logs: crate::logs::Logs,
}

/// Each VIP and the name of its group, for the metrics.
fn vip_names(c: &StackConfig) -> Vec<(Ipv4Addr, String)> {
    c.vips.iter().map(|v| (v.addr, c.group_name(v.group).to_string())).collect()
}

/// Each listener as the metrics name it: ("vip:port", kind).
fn service_names(c: &StackConfig) -> Vec<(String, &'static str)> {
    c.listeners.iter().map(|l| (format!("{}:{}", l.vip, l.port), l.spec.kind_name())).collect()
}

impl Observed {
    /// Each VIP and the name of its group, as the configuration running now has them.
    fn vips(&self) -> Vec<(Ipv4Addr, String)> {
        vip_names(&self.live.load().0)
    }

    /// Each listener ("vip:port", kind), retired ones included (their flows still count).
    fn services(&self) -> Vec<(String, &'static str)> {
        service_names(&self.live.load().0)
    }

    /// The proxy services, for per-backend metrics and `ctl backends`.
    fn proxies(&self) -> Vec<(String, Arc<flowtwin_engine::service::proxy::ProxySpec>)> {
        proxy::of(&self.live.load().0)
    }
}

/// What the metrics thread reads.
struct Observed {
    ports: OnceLock<Vec<StatsReader>>,
    workers: OnceLock<Vec<Arc<SharedCounters>>>,
    /// The configuration running now (a reload may add VIPs and services): the VIPs,
    /// services and proxies the metrics and `ctl` name come from it.
    live: Arc<LiveConfig>,
    /// The ownership groups' names, by `GroupId`.
    groups: Vec<String>,
    sync: Option<Arc<SyncStatus>>,
    /// The packet capture point, for its counters.
    tap: Arc<flowtwin_engine::capture::CaptureTap>,
    /// Live reloads (`flowtwin ctl reload`, SIGHUP), for their metrics.
    reloader: Arc<Reloader>,
    held: OnceLock<Vec<WorkerShared>>,
    role: OnceLock<Arc<RoleShared>>,
    /// Software distribution mode: (RX fan-out by worker 0, TX fan-in through worker 0).
    software: OnceLock<(bool, bool)>,
    /// The port's link as the main loop's [`LinkWatch`] last saw it (1 up, 0 down).
    link_up: AtomicU64,
    /// Handovers requested because the port's link was down (`sync.link_down_ms`).
    link_down_handovers: AtomicU64,
}

/// The engine's account of a takeover (the sync thread has logged its own, `takeover_replica`):
/// the line `tests/e2e/failover_eval.py` times takeovers by.
fn log_takeover(epoch: u64, reason: flowtwin_sync::TakeoverReason, flows: usize, in_sync: bool, retained: bool, groups: &str) {
    warn!(
        event = "takeover",
        groups,
        epoch,
        reason = ?reason,
        flows,
        in_sync,
        retained,
        "TAKEOVER (epoch {epoch}, {reason:?}, {flows} flow(s), standby was {}in sync): announcing the VIPs and resuming",
        if in_sync { "" } else { "NOT " }
    );
}

/// The drops and events of all workers.
fn totals(workers: &[Arc<SharedCounters>]) -> Counters {
    let mut total = Counters::default();
    for w in workers {
        let c = w.snapshot();
        for (a, b) in total.drops.iter_mut().zip(c.drops.iter()) {
            *a += b;
        }
        for (a, b) in total.events.iter_mut().zip(c.events.iter()) {
            *a += b;
        }
    }
    total
}

/// Slots of each handoff ring (power of two; one burst is 32).
const HANDOFF_RING_SLOTS: u32 = 4096;

/// How packets reach the workers and leave them, decided from the device's queue limits.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Layout {
    rx_queues: u16,
    tx_queues: u16,
    /// Worker 0 polls the only RX queue and hands other workers their flows (software RSS).
    rx_fanout: bool,
    /// Workers k>0 have no TX queue: they send through worker 0's (egress rings).
    tx_fanin: bool,
}

fn layout(workers: usize, max_rx: u16, max_tx: u16) -> Layout {
    let n = workers.max(1);
    let rx_fanout = n > 1 && usize::from(max_rx) < n;
    let tx_fanin = n > 1 && usize::from(max_tx) < n;
    Layout {
        rx_queues: if rx_fanout { 1 } else { n as u16 },
        tx_queues: if tx_fanin { 1 } else { n as u16 },
        rx_fanout,
        tx_fanin,
    }
}

/// Place replicas on the worker their packets reach in software distribution mode (the active
/// may have spread flows differently, e.g. by hardware RSS, or with another worker count).
fn reshard(flows: Vec<Vec<flowtwin_engine::replica::ShadowFlow>>, workers: usize) -> Vec<Vec<flowtwin_engine::replica::ShadowFlow>> {
    let mut out: Vec<Vec<_>> = (0..workers).map(|_| Vec::new()).collect();
    for f in flows.into_iter().flatten() {
        let w = worker_for_key(&f.image.key, workers);
        out[w].push(f);
    }
    out
}

pub fn run(cfg: Config, stop: Arc<AtomicBool>, source: ConfigSource) -> Result<(), String> {
    let stack_cfg = Arc::new(crate::config::stack_config(&cfg)?);
    let live = Arc::new(LiveConfig::new(stack_cfg.clone()));
    let sync_status = cfg.sync.as_ref().map(|_| Arc::new(SyncStatus::new()));
    // Packet capture (`flowtwin ctl capture`): the workers' tap.
    let tap = Arc::new(flowtwin_engine::capture::CaptureTap::default());
    let reloader = Arc::new(Reloader::new(source.path, Some(source.logs), live.clone(), cfg.clone()));
    let observed = Arc::new(Observed {
        tap: tap.clone(),
        ports: OnceLock::new(),
        workers: OnceLock::new(),
        live: live.clone(),
        groups: stack_cfg.all_groups().iter().map(|g| stack_cfg.group_name(g).to_string()).collect(),
        sync: sync_status.clone(),
        reloader: reloader.clone(),
        held: OnceLock::new(),
        role: OnceLock::new(),
        software: OnceLock::new(),
        link_up: AtomicU64::new(1),
        link_down_handovers: AtomicU64::new(0),
    });
    let capturer = Arc::new(crate::capture::Capturer::new(tap.clone()));
    // SIGHUP: reload (what `systemctl reload` sends).
    let hup = Arc::new(AtomicBool::new(false));
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone()) {
        warn!(event = "signal_handler", signal = "SIGHUP", error = %e, "warning: cannot install the SIGHUP handler (reload with `flowtwin ctl reload`): {e}");
    }
    if let Some(addr) = cfg.metrics.addr()? {
        let o = observed.clone();
        let bound = metrics::serve(addr, Arc::new(move |out: &mut String| render(&o, out)), stop.clone())
            .map_err(|e| format!("metrics.listen = {addr}: cannot listen: {e}"))?;
        info!(event = "metrics_listen", addr = %bound, "metrics on http://{bound}/metrics");
    }

    if let (Some(y), Some(st)) = (&cfg.sync, &sync_status) {
        let o = observed.clone();
        let st = st.clone();
        let r = reloader.clone();
        let cap = capturer.clone();
        let handler: ctl::Handler = Arc::new(move |cmd: &str| match cmd {
            c if c == "capture" || c.starts_with("capture ") => cap.command(&c.split_whitespace().skip(1).collect::<Vec<_>>()),
            "reload" => r.reply("flowtwin ctl reload"),
            _ => control(&o, &st, cmd),
        });
        let p = ctl::serve(&y.control, handler, stop.clone())?;
        info!(event = "control_listen", path = %p.display(), "control socket {}", p.display());
    }

    let eal = Eal::init(&cfg.eal.args).map_err(|e| format!("EAL init: {e}"))?;
    // The main lcore only supervises; unpin it so the threads it spawns next (the sync
    // thread) are not stuck on one CPU with a busy worker (starvation looks like death).
    if let Err(e) = flowtwin_ffi::float_current_thread() {
        warn!(event = "unpin", error = %e, "warning: cannot unpin the control threads: {e}");
    }
    let lcores = eal.worker_lcores();
    let nworkers = cfg.engine.workers.map(usize::from).unwrap_or(lcores.len());
    if nworkers == 0 || nworkers > lcores.len() {
        return Err(format!(
            "engine.workers = {nworkers} but EAL has {} worker lcore(s): give EAL more lcores (-l / --lcores) or lower engine.workers",
            lcores.len()
        ));
    }
    let pool = Arc::new(
        Mempool::new(&eal, "ft_pool", cfg.engine.mbufs, 256.min(cfg.engine.mbufs / 4), 2048 + 128, -1).map_err(|e| e.to_string())?,
    );
    let pc = &cfg.ports[0];
    let id = port_by_name(&eal, &pc.name).map_err(|e| format!("port[0].name = {:?}: {e}", pc.name))?;
    let (max_rx, max_tx) = queue_limits(&eal, id).map_err(|e| format!("port[0] {:?}: {e}", pc.name))?;
    let lay = layout(nworkers, max_rx, max_tx);
    let conf = PortConfig {
        rx_queues: lay.rx_queues,
        tx_queues: lay.tx_queues,
        rx_desc: pc.rx_desc,
        tx_desc: pc.tx_desc,
        rss: RssMode::Symmetric,
        promiscuous: true,
    };
    let mut port = Port::start(&eal, id, &conf, &pool).map_err(|e| format!("port[0] {:?}: {e}", pc.name))?;
    let info = port.info().clone();
    info!(
        event = "port_started",
        port = info.id.0,
        name = %info.name,
        driver = %info.driver,
        rx_queues = lay.rx_queues,
        tx_queues = lay.tx_queues,
        rss = info.rss_active,
        mac = %MacAddr(info.mac),
        "port {} ({}, driver {}) started with {} RX / {} TX queue(s){}, MAC {}",
        info.id.0,
        info.name,
        info.driver,
        lay.rx_queues,
        lay.tx_queues,
        if info.rss_active { ", symmetric RSS" } else { "" },
        MacAddr(info.mac)
    );
    if lay.rx_fanout {
        info!(
            event = "software_rss",
            rx_queues = max_rx,
            workers = nworkers,
            "device {} has {} RX queue(s): worker 0 distributes flows to {nworkers} workers in software (symmetric flow hash)",
            info.name,
            max_rx
        );
    }
    if lay.tx_fanin {
        info!(
            event = "software_tx_fanin",
            tx_queues = max_tx,
            workers = nworkers,
            "device {} has {} TX queue(s): the {} worker(s) other than worker 0 transmit through its TX queue (egress rings)",
            info.name,
            max_tx,
            nworkers - 1
        );
    } else if lay.rx_fanout {
        info!(event = "software_tx_fanin", workers = nworkers, "each worker transmits on its own TX queue");
    }
    if nworkers > 1 && !lay.rx_fanout && !info.rss_active && info.driver != "net_af_packet" {
        warn!(event = "no_rss", workers = nworkers, "warning: {} queues without RSS: the device must spread flows symmetrically itself", nworkers);
    }
    let _ = observed.software.set((lay.rx_fanout, lay.tx_fanin));
    // How a reply reaches a worker, so the local ports of connections a worker opens bring
    // their replies back to it: the software flow hash, or the NIC's symmetric RSS with the
    // redirection table drivers program by default. af_packet's kernel fanout hashes with a
    // per-boot seed: not predictable.
    let steering: Option<ReplySteering> = if nworkers == 1 || lay.rx_fanout {
        Some(SoftwareSteering::new(nworkers).into())
    } else if info.rss_active && info.reta_size > 0 {
        Some(RssSteering::round_robin(nworkers, usize::from(info.reta_size)).into())
    } else {
        info!(
            event = "reply_steering",
            driver = %info.driver,
            "note: {} spreads flows itself ({}): a connection a worker opens may be answered on another worker",
            info.name,
            info.driver
        );
        if let Some(l) = stack_cfg.listeners.iter().find(|l| matches!(l.spec, flowtwin_engine::stack::ServiceSpec::Proxy(_))) {
            return Err(format!(
                "service {}:{} (kind = \"proxy\"): with {nworkers} workers on {} ({}), a backend's replies may reach another worker than the one that opened the connection; use engine.workers = 1, or a device with symmetric RSS",
                l.vip, l.port, info.name, info.driver
            ));
        }
        None
    };
    // Handoff rings (SPSC: one producer lcore, one consumer lcore each).
    let mut ingress: Vec<(Option<RingProducer>, Option<RingConsumer>)> = (0..nworkers).map(|_| (None, None)).collect();
    let mut egress: Vec<(Option<RingProducer>, Option<RingConsumer>)> = (0..nworkers).map(|_| (None, None)).collect();
    for k in 1..nworkers {
        if lay.rx_fanout {
            let (p, c) = Ring::new(&eal, &format!("ft_rx_w{k}"), HANDOFF_RING_SLOTS, true).map_err(|e| e.to_string())?.split();
            ingress[k] = (Some(p), Some(c));
        }
        if lay.tx_fanin {
            let (p, c) = Ring::new(&eal, &format!("ft_tx_w{k}"), HANDOFF_RING_SLOTS, true).map_err(|e| e.to_string())?.split();
            egress[k] = (Some(p), Some(c));
        }
    }
    let _ = observed.ports.set(vec![port.stats_reader()]);
    let shared: Vec<Arc<SharedCounters>> = (0..nworkers).map(|_| Arc::new(SharedCounters::default())).collect();
    let _ = observed.workers.set(shared.clone());

    let idle = IdleConfig {
        enabled: cfg.engine.idle_backoff,
        sleep_max_us: cfg.engine.idle_sleep_max_us,
        ..IdleConfig::default()
    };
    // Without replication the engine is active from the start; with it, the sync thread
    // decides (an engine that finds an active peer joins as its standby).
    // Without a standby the engine owns every group from the start; with one, the sync
    // thread's role decides.
    let all_groups = stack_cfg.all_groups();
    let role = Arc::new(RoleShared::new(nworkers, if cfg.sync.is_none() { all_groups } else { GroupSet::NONE }));
    if let Some(y) = &cfg.sync {
        role.node_id.store(y.node_id, Ordering::Relaxed);
    }
    let _ = observed.role.set(role.clone());
    let mut links = Vec::new();
    let mut repls: Vec<Option<ReplHandles>> = Vec::new();
    for i in 0..nworkers {
        match &cfg.sync {
            Some(y) => {
                let (r, link) = flowtwin_sync::worker_channel(i as u16, y.ring_records);
                repls.push(Some(ReplHandles { replicator: Box::new(r), control: Arc::new(link.shared.clone()) }));
                links.push(link);
            }
            None => repls.push(None),
        }
    }
    let _ = observed.held.set(links.iter().map(|l| l.shared.clone()).collect());
    let mut sync_handle = None;
    if let Some(cpu) = cfg.sync.as_ref().and_then(|y| y.cpu) {
        check_sync_cpu(&eal, &lcores[..nworkers], cpu)?;
    }
    if let (Some(y), Some(st)) = (&cfg.sync, &sync_status) {
        let sc = SyncConfig {
            node_id: y.node_id,
            listen: y.listen,
            peer: y.peer,
            role: match y.role {
                SyncRole::Active => Role::Active,
                SyncRole::Standby => Role::Standby,
            },
            sessions: Vec::new(),
            mode: match y.mode {
                SyncMode::Strict => Mode::Strict,
                SyncMode::Async => Mode::Async,
            },
            heartbeat: Duration::from_millis(y.heartbeat_ms),
            dead_after: y.dead_after,
            ring_records: y.ring_records,
            async_max_lag: Duration::from_millis(y.async_max_lag_ms),
            busy_poll: Duration::from_micros(y.busy_poll_us),
            fence_hold: Duration::from_millis(y.fence_hold_ms),
            handover_hold: Duration::from_millis(y.handover_hold_ms),
            live: Some(live.clone()),
            waiter: Some(Arc::new(PollWaiter {
                bell: Doorbell::new().map_err(|e| format!("sync: eventfd: {e}"))?,
                cpu: y.cpu,
                sched: match y.scheduler.as_str() {
                    "fifo" => (flowtwin_ffi::SchedPolicy::Fifo, y.priority.unwrap_or(crate::config::DEFAULT_SYNC_PRIORITY)),
                    "other" => (flowtwin_ffi::SchedPolicy::Other, 0),
                    _ => (flowtwin_ffi::SchedPolicy::RoundRobin, y.priority.unwrap_or(crate::config::DEFAULT_SYNC_PRIORITY)),
                },
            })),
            park_max: flowtwin_sync::node::PARK_MAX,
        };
        let r = role.clone();
        let software_rx = lay.rx_fanout;
        let group_names = stack_cfg.clone();
        let on_takeover: flowtwin_sync::TakeoverFn = Box::new(move |t: flowtwin_sync::Takeover| {
            let groups: Vec<&str> = t.groups.iter().map(|g| group_names.group_name(g)).collect();
            log_takeover(t.epoch, t.reason, t.flows.iter().map(Vec::len).sum(), t.in_sync, t.retained, &groups.join(","));
            let flows = if software_rx { reshard(t.flows, nworkers) } else { t.flows };
            // The announcement carries the new epoch (an old active that still lives fences
            // itself when it hears it).
            r.epoch.store(t.epoch, Ordering::Relaxed);
            r.take_over(t.groups, flows, t.retained);
        });
        sync_handle = Some(
            flowtwin_sync::start(sc, stack_cfg.clone(), links, st.clone(), on_takeover)
                .map_err(|e| format!("sync: cannot start: {e}"))?,
        );
    }
    let mut handles = Vec::new();
    let mut mail = NeighborMail::mesh(nworkers, NEIGHBOR_MAILBOX).into_iter();
    for (i, lcore) in lcores.iter().take(nworkers).enumerate() {
        let rx = match ingress[i].1.take() {
            Some(c) => RxSource::Ring(c),
            None => RxSource::Queue(port.take_rx(i as u16).ok_or("RX queue missing")?),
        };
        let tx = match egress[i].0.take() {
            Some(p) => TxPath::Ring(p),
            None => TxPath::Queue(port.take_tx(i as u16).ok_or("TX queue missing")?),
        };
        let fanout = (i == 0 && (lay.rx_fanout || lay.tx_fanin)).then(|| Fanout {
            workers: nworkers,
            to: if lay.rx_fanout { ingress.iter_mut().map(|(p, _)| p.take()).collect() } else { Vec::new() },
            from: egress.iter_mut().filter_map(|(_, c)| c.take()).collect(),
        });
        let w = Worker {
            index: i,
            rx,
            tx,
            fanout,
            pool: pool.clone(),
            config: live.clone(),
            capture: Some(tap.clone()),
            counters: shared[i].clone(),
            stop: stop.clone(),
            idle,
            burst: cfg.engine.burst as usize,
            repl: repls[i].take(),
            role: role.clone(),
            steering: steering.clone(),
            neighbors: mail.next(),
        };
        handles.push(eal.launch(*lcore, move || run_worker(w)).map_err(|e| e.to_string())?);
    }
    for v in &stack_cfg.vips {
        let group = stack_cfg.group_name(v.group);
        info!(event = "vip", vip = %v.addr, mac = %v.mac, group, "serving VIP {} (MAC {}, group {group})", v.addr, v.mac);
    }
    for l in &stack_cfg.listeners {
        let kind = l.spec.kind_name();
        info!(event = "service", vip = %l.vip, port = l.port, kind, "  {}:{} -> {kind}", l.vip, l.port);
    }
    info!(event = "started", workers = nworkers, "running with {nworkers} worker(s); SIGINT/SIGTERM stops");
    let mut last_role = None;
    let mut link = LinkWatch::new(vdev_iface(&cfg.eal.args, &cfg.ports[0].name));
    let link_down_after = cfg.sync.as_ref().map(|y| Duration::from_millis(y.link_down_ms)).filter(|d| !d.is_zero());
    let mut drop_warnings = DropWarnings::new(std::time::Instant::now());
    let checked_of = |c: &StackConfig| -> Vec<_> { proxy::of(c).into_iter().filter(|(_, p)| p.check.is_some()).collect() };
    let mut checked = checked_of(&stack_cfg);
    let mut checked_generation = live.generation();
    let mut health_log = proxy::HealthLog::default();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(if sync_status.is_some() { 1 } else { 50 }));
        for w in drop_warnings.poll(std::time::Instant::now(), || totals(&shared)) {
            w.log();
        }
        if live.generation() != checked_generation {
            let (c, g) = live.load();
            checked = checked_of(&c);
            checked_generation = g;
        }
        if !checked.is_empty() {
            health_log.poll(&checked);
        }
        if hup.swap(false, Ordering::Relaxed) {
            // The outcome is logged (and counted) by the reloader.
            let _ = reloader.reload("SIGHUP");
        }
        if let Some(st) = &sync_status {
            // Follow the sync thread's role: active answers, standby and fenced stay silent.
            // Act on transitions only: the takeover callback activates the workers itself,
            // and a stale read of the role must never switch them back.
            let r = st.role();
            if last_role != Some(r) {
                info!(event = "role", role = r.name(), epoch = st.epoch(), "role {} (epoch {})", r.name(), st.epoch());
                last_role = Some(r);
                role.epoch.store(st.epoch(), Ordering::Relaxed);
                match r {
                    Role::Active => role.own(all_groups),
                    Role::Standby | Role::Fenced => {
                        // Before the workers see "inactive": after a handover they keep
                        // their flows.
                        role.retain.store(st.retain_flows(), Ordering::Release);
                        role.disown(all_groups);
                    }
                }
            }
            if r != Role::Active {
                // Kept flows are forgotten once the sync thread no longer needs them.
                role.retain.store(st.retain_flows(), Ordering::Release);
            }
            // Another engine announced our VIPs with a newer epoch: it took over while we
            // live (the sync link is cut). The sync thread fences us.
            let claim = role.vip_claim_epoch.load(Ordering::Relaxed);
            if r == Role::Active && claim > st.epoch() {
                st.request_fence(claim);
            }
            st.set_flows_resumed(role.flows_resumed.load(Ordering::Relaxed));
        }
        // The active's port is down (cable, switch port) although the engine lives: its
        // clients cannot reach it, so hand the VIPs to the in-sync standby (which answers on
        // its own port), asking again every 100 ms while it lasts (the standby may not be in
        // sync yet).
        let down = link.poll(|| port.link().up);
        observed.link_up.store(down.is_none() as u64, Ordering::Relaxed);
        if let Some(st) = &sync_status {
            // A standby whose port is down does not take over a silent active (it could not
            // serve): the session waits for the link.
            st.set_port_down(down.is_some());
        }
        if let (Some(d), Some(after), Some(st)) = (down, link_down_after, &sync_status) {
            let due = link.last_request.is_none_or(|t| t.elapsed() >= Duration::from_millis(100));
            if d >= after && st.role() == Role::Active && due {
                if link.last_request.is_none() {
                    let in_sync = st.in_sync();
                    warn!(
                        event = "link_down_handover",
                        down_ms = d.as_millis() as u64,
                        in_sync,
                        "port link down for {d:?} (sync.link_down_ms {}): {}",
                        after.as_millis(),
                        if in_sync { "handing over to the standby" } else { "no in-sync standby to hand over to yet" }
                    );
                }
                link.last_request = Some(std::time::Instant::now());
                if st.in_sync() {
                    observed.link_down_handovers.fetch_add(1, Ordering::Relaxed);
                    st.request_handover();
                }
            }
        }
    }
    if let Some(h) = sync_handle.take() {
        h.stop();
    }
    info!(event = "stopping", "stopping");
    let mut rc = 0;
    for h in handles {
        rc |= h.join();
    }
    // Final statistics, as an operator reads them after a stop.
    if let Ok(s) = port.stats() {
        info!(
            event = "port_stats",
            name = %info.name,
            rx = s.ipackets,
            tx = s.opackets,
            imissed = s.imissed,
            rx_nombuf = s.rx_nombuf,
            ierrors = s.ierrors,
            oerrors = s.oerrors,
            "port {}: rx {} tx {} imissed {} rx_nombuf {} ierrors {} oerrors {}",
            info.name,
            s.ipackets,
            s.opackets,
            s.imissed,
            s.rx_nombuf,
            s.ierrors,
            s.oerrors
        );
    }
    let total = totals(&shared);
    let ev: Vec<String> = Event::ALL.iter().filter(|e| total.get(**e) > 0).map(|e| format!("{} {}", e.as_str(), total.get(*e))).collect();
    let ev = ev.join(", ");
    info!(event = "events_summary", counts = %ev, "events: {ev}");
    let dr: Vec<String> = Drop::ALL.iter().filter(|r| total.dropped(**r) > 0).map(|r| format!("{} {}", r.as_str(), total.dropped(*r))).collect();
    let dr = if dr.is_empty() { "none".to_string() } else { dr.join(", ") };
    info!(event = "drops_summary", counts = %dr, "drops: {dr}");
    drop(port);
    drop(pool);
    drop(eal);
    if rc != 0 {
        return Err(format!("a worker exited with code {rc}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
