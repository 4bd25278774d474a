//! `flowtwin run` configuration: a TOML file. Unknown keys are errors (a typo must not be
//! silently ignored on an appliance), and every validation error names the key.
//!
//! See README.md "Configuration reference" for the documented schema; `flowtwin check-config`
//! validates a file without starting anything.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use flowtwin_engine::service::echo::{EchoConfig, EchoKind};
use flowtwin_engine::service::http::ObjectKind;
use flowtwin_engine::service::object::{ObjectStore, StoreConfig};
use flowtwin_engine::config::vrrp_mac;
use flowtwin_engine::group::{GroupId, MAX_GROUPS};
use flowtwin_engine::wire::MacAddr;
use flowtwin_engine::service::{Kind, ServiceSpec};
use serde::{Deserialize, Serialize};

mod route;
pub use self::route::RouteSection;

mod proxy;

mod engine;
pub use self::engine::{stack_config, tcp_config};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// DPDK EAL arguments, exactly as on a DPDK command line.
    pub eal: EalSection,
    #[serde(default)]
    pub engine: EngineSection,
    /// The ports (DPDK device names) the workers poll.
    #[serde(rename = "port", default)]
    pub ports: Vec<PortSection>,
    /// Service addresses owned by this engine.
    #[serde(rename = "vip", default)]
    pub vips: Vec<VipSection>,
    /// Ownership groups: sets of VIPs that move between engines together (omit: one group
    /// of every VIP).
    #[serde(rename = "group", default)]
    pub groups: Vec<GroupSection>,
    /// Services bound to VIP:port.
    #[serde(rename = "service", default)]
    pub services: Vec<ServiceSection>,
    /// Static routes for the connections the engine opens (`route` module).
    #[serde(rename = "route", default)]
    pub routes: Vec<RouteSection>,
    #[serde(default)]
    pub tcp: TcpSection,
    #[serde(default)]
    pub metrics: MetricsSection,
    /// Replication to a hot standby (omit for a stand-alone engine).
    pub sync: Option<SyncSection>,
    #[serde(default)]
    pub log: LogSection,
}

#[derive(Debug, Serialize, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SyncRole {
    Active,
    Standby,
}

impl SyncRole {
    /// As in `role = "..."`.
    pub fn name(self) -> &'static str {
        match self {
            SyncRole::Active => "active",
            SyncRole::Standby => "standby",
        }
    }
}

#[derive(Debug, Serialize, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    Strict,
    Async,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSection {
    /// This engine's id (distinct from the peer's).
    pub node_id: u32,
    /// Initial preference; an engine that finds an active peer joins as standby.
    pub role: SyncRole,
    /// Where this engine listens for its peer (the dedicated sync link).
    pub listen: SocketAddr,
    /// The peer's `listen` address.
    pub peer: SocketAddr,
    #[serde(default = "default_sync_mode")]
    pub mode: SyncMode,
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    #[serde(default = "default_dead_after")]
    pub dead_after: u32,
    /// Delta-ring records per worker (64 bytes each).
    #[serde(default = "default_ring_records")]
    pub ring_records: usize,
    /// `mode = "async"`: output may run at most this far ahead of the standby before it is
    /// held (bounds what a failover can lose).
    #[serde(default = "default_async_max_lag_ms")]
    pub async_max_lag_ms: u64,
    /// After replication activity (or while a batch awaits its ack) the sync thread keeps
    /// polling this long before it blocks. Polling saves the wake-up on each hop of a strict
    /// round trip, but burns CPU: use it when the sync thread has a core of its own
    /// (`cpu`); 0 (the default) blocks on the sync socket and the workers' doorbell at once.
    #[serde(default)]
    pub busy_poll_us: u64,
    /// Pin the sync thread to this CPU (a core of its own). Default: not pinned (it runs
    /// where the scheduler finds room). Refused if a worker lcore runs on that CPU: a
    /// busy-polling worker would starve it, and a starved sync thread looks dead to the peer.
    #[serde(default)]
    pub cpu: Option<usize>,
    /// The sync thread's scheduling policy: "rr" (the default: `SCHED_RR`), "fifo" or
    /// "other" (time-sharing, as every other thread). Its heartbeats are what tells the peer
    /// this engine lives: on a busy host a time-shared sync thread waits behind workers and
    /// clients, its heartbeats come late, and the peer takes over from a live engine
    /// (conntrackd's `Scheduler` and keepalived's `vrrp_rt_priority` exist for the same
    /// reason). It sleeps in ppoll between messages, so a real-time priority costs nothing
    /// when idle. Needs `CAP_SYS_NICE` (the packaged unit grants it); without it the engine
    /// starts time-shared and says so.
    #[serde(default = "default_sync_scheduler")]
    pub scheduler: String,
    /// Its real-time priority with "rr" or "fifo", 1..=99 (default 10: above every
    /// time-shared thread, below the kernel's own real-time threads).
    #[serde(default)]
    pub priority: Option<i32>,
    /// Strict mode: after losing its in-sync standby the active keeps holding output this
    /// long before it serves unprotected. A standby that took over because only the sync
    /// link failed announces the VIPs meanwhile, and the old active fences itself on hearing
    /// it, having sent nothing the new active does not know. Should exceed the standby's
    /// detection skew; 0 releases at once. What a standby's death costs clients grows by
    /// this much.
    #[serde(default = "default_fence_hold_ms")]
    pub fence_hold_ms: u64,
    /// Strict mode, failback (`ctl failback`): the engine taking over holds all output until
    /// the engine that handed over is its in-sync standby again, at most this long; the
    /// latter keeps its flows meanwhile and resumes them should the new active die before.
    /// What a failback costs clients is the rejoin's time (a snapshot of every flow); if the
    /// engine that handed over dies too, this much. 0: no hold (a kill during the rejoin
    /// then costs the flows not yet imaged).
    #[serde(default = "default_handover_hold_ms")]
    pub handover_hold_ms: u64,
    /// The active hands the VIPs over to its in-sync standby (as `ctl failback` does) once
    /// its port's link has been down this long while the engine lives; 0: never.
    #[serde(default = "default_link_down_ms")]
    pub link_down_ms: u64,
    /// Control socket for `flowtwin ctl`.
    #[serde(default = "default_control")]
    pub control: PathBuf,
}

/// CPUs a thread can be pinned to (glibc's `CPU_SETSIZE`).
const MAX_CPUS: usize = 1024;

fn default_sync_mode() -> SyncMode {
    SyncMode::Strict
}
fn default_heartbeat_ms() -> u64 {
    5
}
fn default_dead_after() -> u32 {
    3
}
fn default_sync_scheduler() -> String {
    "rr".to_string()
}

/// `sync.priority`'s default with a real-time `sync.scheduler`.
pub const DEFAULT_SYNC_PRIORITY: i32 = 10;

fn default_fence_hold_ms() -> u64 {
    30
}
fn default_handover_hold_ms() -> u64 {
    500
}
fn default_link_down_ms() -> u64 {
    50
}
fn default_ring_records() -> usize {
    64 * 1024
}
fn default_async_max_lag_ms() -> u64 {
    20
}
fn default_control() -> PathBuf {
    PathBuf::from("/run/flowtwin/flowtwin.sock")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EalSection {
    pub args: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSection {
    /// Worker lcores to use (default: every worker lcore EAL was given).
    pub workers: Option<u16>,
    /// Mbufs in the packet pool.
    pub mbufs: u32,
    /// Flow-table capacity per worker (preallocated).
    pub flow_capacity: u32,
    /// RX burst size (1..=32).
    pub burst: u16,
    /// Back off (pause, then short sleeps) when RX is idle, so an idle engine does not burn a core.
    pub idle_backoff: bool,
    /// Longest idle sleep in microseconds (bounds first-packet latency after idle).
    pub idle_sleep_max_us: u32,
}

impl Default for EngineSection {
    fn default() -> Self {
        EngineSection {
            workers: None,
            mbufs: 8191,
            flow_capacity: 65536,
            burst: 32,
            idle_backoff: true,
            idle_sleep_max_us: 100,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSection {
    /// DPDK device name as EAL knows it, e.g. `net_af_packet0` or `0000:01:00.0`.
    pub name: String,
    #[serde(default = "default_desc")]
    pub rx_desc: u16,
    #[serde(default = "default_desc")]
    pub tx_desc: u16,
}

fn default_desc() -> u16 {
    1024
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipSection {
    /// The service IPv4 address.
    pub addr: Ipv4Addr,
    /// Virtual router id: the VIP answers ARP from 00:00:5e:00:01:<vrid> unless `mac` is set.
    #[serde(default = "default_vrid")]
    pub vrid: u8,
    /// Explicit MAC for this VIP (aa:bb:cc:dd:ee:ff).
    pub mac: Option<String>,
    /// The length of the subnet the VIP is in on its port: remotes inside it are on-link
    /// (resolved by ARP directly), others need a `[[route]]`. 32: no subnet.
    #[serde(default = "default_prefix_len")]
    pub prefix_len: u8,
}

/// `[[group]]`: an ownership group, the unit of role, epoch, replication and failover.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSection {
    /// Its name in logs, metrics (`group="..."`) and `flowtwin ctl`: letters, digits, `-`, `_`.
    pub name: String,
    /// The VIPs of the group (each a `[[vip]]` addr, each in exactly one group).
    pub vips: Vec<Ipv4Addr>,
}

impl VipSection {
    /// The MAC the VIP answers from: `mac` if set (validated), else the VRRP MAC of `vrid`.
    pub fn mac_bytes(&self) -> [u8; 6] {
        self.mac.as_deref().and_then(parse_mac).unwrap_or(vrrp_mac(self.vrid).0)
    }
}

fn default_vrid() -> u8 {
    1
}

fn default_prefix_len() -> u8 {
    24
}

#[derive(Debug, Serialize, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    Object,
    Echo,
    Proxy,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    pub vip: Ipv4Addr,
    pub port: u16,
    pub kind: ServiceKind,
    /// `object`: directory whose files are served as /<file name> (loaded at start).
    pub objects_dir: Option<PathBuf>,
    /// `object`: largest /gen/<bytes> object served.
    #[serde(default = "default_gen_max")]
    pub gen_max_bytes: u64,
    /// `echo`: per-connection echo buffer.
    #[serde(default = "default_echo_buf")]
    pub echo_buffer: u32,
    /// `proxy`: the backend servers, `"ip:port"` or `"ip:port weight=N"` (see `config/proxy.rs`).
    pub backends: Option<Vec<String>>,
    /// `proxy`: backend slots in all, for `ctl backend add` (default 64, at least the
    /// configured backends).
    pub max_backends: Option<u32>,
    /// `proxy`: `round-robin` (default), `least-conn` or `hash`.
    pub balance: Option<String>,
    /// `proxy`: bytes buffered per direction per connection.
    pub proxy_buffer: Option<u32>,
    /// `proxy`: the address backend connections come from (default: the service's vip).
    pub source: Option<Ipv4Addr>,
    /// `proxy`: failed connections in a row that mark a backend down (0: never; default 3).
    pub max_fails: Option<u32>,
    /// `proxy`: how long a backend marked down gets no new connection (default 10000).
    pub fail_timeout_ms: Option<u64>,
    /// `proxy`: SYN retransmissions before a backend connect gives up (default 2).
    pub connect_retries: Option<u8>,
    /// `proxy`: `tcp` (default: choose at once), `http` (by Host and path), `tls` (by SNI).
    pub mode: Option<String>,
    /// `proxy`: the largest first request head / ClientHello read for the choice.
    pub max_request_head: Option<u32>,
    /// `proxy`: active health checks, `tcp` or `http` (default: none; see `config/proxy.rs`).
    pub health_check: Option<String>,
    /// `proxy`: time between two checks of one backend (default 2000).
    pub health_interval_ms: Option<u64>,
    /// `proxy`: how long a check may take (default 1000, at most the interval).
    pub health_timeout_ms: Option<u64>,
    /// `proxy`: successes in a row that bring a down backend up (default 2).
    pub health_rise: Option<u32>,
    /// `proxy`: failures in a row that take a backend down (default 3).
    pub health_fall: Option<u32>,
    /// `proxy`, `health_check = "http"`: the path asked for (default "/").
    pub health_http_path: Option<String>,
    /// `proxy`, `health_check = "http"`: the Host header sent (default: none, HTTP/1.0).
    pub health_http_host: Option<String>,
    /// `proxy`, `health_check = "http"`: accepted status codes, "200-399" (default) or "200".
    pub health_expect_status: Option<String>,
    /// `proxy`: the port checked (default: each backend's own).
    pub health_port: Option<u16>,
    /// `proxy`: when a side's bytes are acknowledged: `peer` (once the other side's peer
    /// has them; no payload is replicated) or `standby` (once the standby holds them).
    pub commit: Option<String>,
    /// `proxy`: `[[service.pool]]`, matched in order by host and path prefix.
    #[serde(default, rename = "pool")]
    pub pools: Vec<self::proxy::PoolSection>,
}

impl ServiceKind {
    /// The kind's name, as in `kind = "..."`.
    pub fn name(self) -> &'static str {
        match self {
            ServiceKind::Object => ObjectKind::NAME,
            ServiceKind::Echo => EchoKind::NAME,
            ServiceKind::Proxy => flowtwin_engine::service::proxy::ProxyKind::NAME,
        }
    }
}

impl ServiceSection {
    /// The engine's spec of `service[i]` (loads an object directory); errors name the key.
    pub fn spec(&self, i: usize) -> Result<ServiceSpec, String> {
        Ok(match self.kind {
            ServiceKind::Object => {
                let sc = StoreConfig { max_gen_bytes: self.gen_max_bytes, ..StoreConfig::default() };
                let store = match &self.objects_dir {
                    Some(d) => ObjectStore::load_dir_with(d, sc).map_err(|e| format!("service[{i}].objects_dir: {e}"))?,
                    None => ObjectStore::empty(sc),
                };
                ServiceSpec::Object(std::sync::Arc::new(store))
            }
            ServiceKind::Echo => ServiceSpec::Echo(EchoConfig { buf_size: self.echo_buffer as usize }),
            ServiceKind::Proxy => ServiceSpec::Proxy(std::sync::Arc::new(self.proxy_spec(i)?)),
        })
    }
}

fn default_gen_max() -> u64 {
    1 << 30
}

fn default_echo_buf() -> u32 {
    64 * 1024
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpSection {
    pub mss: u16,
    pub wscale: u8,
    pub timestamps: bool,
    pub sack: bool,
    pub rto_initial_ms: u64,
    pub rto_min_ms: u64,
    pub rto_max_ms: u64,
    pub delayed_ack_ms: u64,
    pub time_wait_ms: u64,
    pub idle_timeout_s: u64,
    pub max_retransmits: u8,
    pub syn_ack_retries: u8,
    pub max_ooo_bytes: u32,
    pub initial_cwnd_segments: u32,
}

impl Default for TcpSection {
    fn default() -> Self {
        TcpSection {
            mss: 1460,
            wscale: 7,
            timestamps: true,
            sack: true,
            rto_initial_ms: 1000,
            rto_min_ms: 200,
            rto_max_ms: 60_000,
            delayed_ack_ms: 40,
            time_wait_ms: 2000,
            idle_timeout_s: 300,
            max_retransmits: 15,
            syn_ack_retries: 5,
            max_ooo_bytes: 256 * 1024,
            initial_cwnd_segments: 10,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Where Prometheus text metrics are served (HTTP GET /metrics). Empty string: off.
    pub listen: String,
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection { listen: "127.0.0.1:9470".into() }
    }
}

impl MetricsSection {
    pub fn addr(&self) -> Result<Option<SocketAddr>, String> {
        if self.listen.is_empty() {
            return Ok(None);
        }
        self.listen
            .parse()
            .map(Some)
            .map_err(|e| format!("metrics.listen = {:?}: not an address:port ({e})", self.listen))
    }
}

/// `[log]`: what the engine logs on stderr and how (see `crate::logs`). `FLOWTWIN_LOG` (or
/// `RUST_LOG`) and `FLOWTWIN_LOG_FORMAT` override these.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// A filter in RUST_LOG syntax: a level (`info`) and per-target levels
    /// (`warn,flowtwin_sync=debug`).
    pub level: String,
    /// `human` (the lines as the engine always printed them) or `json` (one object a line).
    pub format: String,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection { level: crate::logs::DEFAULT_FILTER.into(), format: "human".into() }
    }
}

impl LogSection {
    fn validate(&self) -> Result<(), String> {
        crate::logs::parse_filter(&self.level).map_err(|e| format!("log.level = {:?}: {e}", self.level))?;
        crate::logs::Format::parse(&self.format).map_err(|e| format!("log.format = {:?}: {e}", self.format))?;
        Ok(())
    }
}

/// Parse a MAC written as aa:bb:cc:dd:ee:ff.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut n = 0;
    for part in s.split(':') {
        if n == 6 || part.len() != 2 {
            return None;
        }
        out[n] = u8::from_str_radix(part, 16).ok()?;
        n += 1;
    }
    (n == 6).then_some(out)
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        Config::parse(&text).map_err(|e| format!("config {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        let c: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    /// `[[group]]`: named once each, at most `MAX_GROUPS`, and with groups every VIP in
    /// exactly one of them (a VIP nobody owns would never be answered or failed over).
    fn validate_groups(&self) -> Result<(), String> {
        if self.groups.len() > MAX_GROUPS {
            return Err(format!("{} [[group]] sections: at most {MAX_GROUPS} per engine", self.groups.len()));
        }
        for (i, g) in self.groups.iter().enumerate() {
            if g.name.is_empty() || g.name.len() > 64 || !g.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(format!("group[{i}].name = {:?}: 1 to 64 letters, digits, '-' or '_'", g.name));
            }
            if self.groups[..i].iter().any(|o| o.name == g.name) {
                return Err(format!("group[{i}].name = {:?}: two groups have that name", g.name));
            }
            if g.vips.is_empty() {
                return Err(format!("group[{i}].vips is empty: a group is a set of VIPs, name at least one"));
            }
            for (j, a) in g.vips.iter().enumerate() {
                if !self.vips.iter().any(|v| v.addr == *a) {
                    return Err(format!("group[{i}].vips[{j}] = {a}: no [[vip]] with that addr"));
                }
                if let Some(o) = self.groups[..i].iter().find(|o| o.vips.contains(a)) {
                    return Err(format!("group[{i}].vips[{j}] = {a}: already in group {:?} (a VIP belongs to one group)", o.name));
                }
                if g.vips[..j].contains(a) {
                    return Err(format!("group[{i}].vips[{j}] = {a}: listed twice"));
                }
            }
        }
        if !self.groups.is_empty() {
            for (i, v) in self.vips.iter().enumerate() {
                if !self.groups.iter().any(|g| g.vips.contains(&v.addr)) {
                    return Err(format!(
                        "vip[{i}].addr = {}: in no [[group]] (with [[group]] sections every VIP must be in one)",
                        v.addr
                    ));
                }
            }
        }
        // The switch learns one port per MAC: VIPs that move between engines apart (two
        // groups) must not share one, or owning one group would pull the other's traffic.
        for (i, v) in self.vips.iter().enumerate() {
            let mac = v.mac_bytes();
            if let Some(o) = self.vips[..i].iter().find(|o| o.mac_bytes() == mac && self.group_of(o.addr) != self.group_of(v.addr)) {
                return Err(format!(
                    "vip[{i}].addr = {}: shares MAC {} with {} of another group (give each group its own vrid or mac: the switch learns one port per MAC)",
                    v.addr,
                    MacAddr(mac),
                    o.addr
                ));
            }
        }
        Ok(())
    }

    /// The group of VIP `addr` (index into `groups`; 0 without groups).
    pub fn group_of(&self, addr: Ipv4Addr) -> GroupId {
        GroupId(self.groups.iter().position(|g| g.vips.contains(&addr)).unwrap_or(0) as u8)
    }

    fn validate(&self) -> Result<(), String> {
        if self.eal.args.is_empty() {
            return Err("eal.args is empty: give at least the lcores, e.g. [\"-l\", \"0-1\", \"--no-pci\", ...]".into());
        }
        if self.ports.is_empty() {
            return Err("no [[port]]: name at least one DPDK device, e.g. [[port]] name = \"net_af_packet0\"".into());
        }
        let eal = flowtwin_ffi::EalArgs::parse(&self.eal.args).map_err(|e| format!("eal.args: {e}"))?;
        for (i, p) in self.ports.iter().enumerate() {
            eal.check_port(&p.name).map_err(|e| format!("port[{i}].name = {:?}: {e}", p.name))?;
        }
        if self.ports.len() > 1 {
            return Err(format!(
                "{} [[port]] sections: one port per engine is supported in this version (put the VIPs behind one port)",
                self.ports.len()
            ));
        }
        let e = &self.engine;
        if !(1..=32).contains(&e.burst) {
            return Err(format!("engine.burst = {}: must be 1..=32", e.burst));
        }
        if e.flow_capacity == 0 || e.flow_capacity > (1 << 26) {
            return Err(format!("engine.flow_capacity = {}: must be 1..=67108864", e.flow_capacity));
        }
        if e.mbufs < 1024 {
            return Err(format!("engine.mbufs = {}: at least 1024 are needed for RX rings and TX", e.mbufs));
        }
        if e.idle_sleep_max_us > 10_000 {
            return Err(format!("engine.idle_sleep_max_us = {}: at most 10000 (it bounds first-packet latency after idle)", e.idle_sleep_max_us));
        }
        if e.workers == Some(0) {
            return Err("engine.workers = 0: need at least one worker lcore".into());
        }
        for (i, v) in self.vips.iter().enumerate() {
            if let Some(m) = &v.mac {
                if parse_mac(m).is_none() {
                    return Err(format!("vip[{i}].mac = {m:?}: expected six hex bytes like 00:00:5e:00:01:01"));
                }
            }
            if self.vips[..i].iter().any(|o| o.addr == v.addr) {
                return Err(format!("vip[{i}].addr = {}: listed twice", v.addr));
            }
        }
        self.validate_groups()?;
        self.route_table()?;
        if self.services.len() > flowtwin_engine::counters::MAX_SERVICES {
            return Err(format!(
                "{} [[service]] sections: at most {} per engine",
                self.services.len(),
                flowtwin_engine::counters::MAX_SERVICES
            ));
        }
        for (i, s) in self.services.iter().enumerate() {
            if !self.vips.iter().any(|v| v.addr == s.vip) {
                return Err(format!("service[{i}].vip = {}: no [[vip]] with that addr", s.vip));
            }
            if s.port == 0 {
                return Err(format!("service[{i}].port = 0: must be 1..=65535"));
            }
            if self.services[..i].iter().any(|o| o.vip == s.vip && o.port == s.port) {
                return Err(format!("service[{i}]: {}:{} is bound twice", s.vip, s.port));
            }
            if let Some(d) = &s.objects_dir {
                if s.kind != ServiceKind::Object {
                    return Err(format!("service[{i}].objects_dir: only valid for kind = \"object\""));
                }
                if !d.is_dir() {
                    return Err(format!("service[{i}].objects_dir = {}: not a directory", d.display()));
                }
            }
            if s.kind == ServiceKind::Echo && (s.echo_buffer < 1024 || s.echo_buffer > (64 << 20)) {
                return Err(format!("service[{i}].echo_buffer = {}: must be 1024..=67108864", s.echo_buffer));
            }
            self.validate_proxy(i, s)?;
        }
        let t = &self.tcp;
        if !(536..=9000).contains(&t.mss) {
            return Err(format!("tcp.mss = {}: must be 536..=9000", t.mss));
        }
        if t.wscale > 14 {
            return Err(format!("tcp.wscale = {}: RFC 7323 allows at most 14", t.wscale));
        }
        if t.rto_min_ms == 0 || t.rto_min_ms > t.rto_max_ms || t.rto_initial_ms < t.rto_min_ms {
            return Err(format!(
                "tcp.rto_*: need 0 < rto_min_ms ({}) <= rto_initial_ms ({}) and rto_min_ms <= rto_max_ms ({})",
                t.rto_min_ms, t.rto_initial_ms, t.rto_max_ms
            ));
        }
        if t.delayed_ack_ms > 500 {
            return Err(format!("tcp.delayed_ack_ms = {}: RFC 5681 allows at most 500", t.delayed_ack_ms));
        }
        self.metrics.addr()?;
        self.log.validate()?;
        if let Some(y) = &self.sync {
            if y.heartbeat_ms == 0 || y.heartbeat_ms > 10_000 {
                return Err(format!("sync.heartbeat_ms = {}: must be 1..=10000", y.heartbeat_ms));
            }
            if y.dead_after == 0 || y.dead_after > 1000 {
                return Err(format!("sync.dead_after = {}: must be 1..=1000 missed heartbeats", y.dead_after));
            }
            if let Some(c) = y.cpu.filter(|&c| c >= MAX_CPUS) {
                return Err(format!("sync.cpu = {c}: CPU numbers go from 0 to {}", MAX_CPUS - 1));
            }
            if y.fence_hold_ms > 10_000 {
                return Err(format!("sync.fence_hold_ms = {}: must be 0..=10000", y.fence_hold_ms));
            }
            if y.link_down_ms > 60_000 {
                return Err(format!("sync.link_down_ms = {}: must be 0..=60000", y.link_down_ms));
            }
            if y.handover_hold_ms > 60_000 {
                return Err(format!("sync.handover_hold_ms = {}: must be 0..=60000", y.handover_hold_ms));
            }
            match (y.scheduler.as_str(), y.priority) {
                ("rr" | "fifo", None) => {}
                ("rr" | "fifo", Some(p)) if (1..=99).contains(&p) => {}
                ("rr" | "fifo", Some(p)) => return Err(format!("sync.priority = {p}: a real-time priority is 1..=99")),
                ("other", None) => {}
                ("other", Some(p)) => {
                    return Err(format!("sync.priority = {p}: only with sync.scheduler = \"rr\" or \"fifo\" (\"other\" has no priority)"))
                }
                (s, _) => return Err(format!("sync.scheduler = {s:?}: expected \"rr\", \"fifo\" or \"other\"")),
            }
            if y.busy_poll_us > 1_000_000 {
                return Err(format!("sync.busy_poll_us = {}: must be 0..=1000000", y.busy_poll_us));
            }
            if y.async_max_lag_ms == 0 || y.async_max_lag_ms > 60_000 {
                return Err(format!("sync.async_max_lag_ms = {}: must be 1..=60000", y.async_max_lag_ms));
            }
            if y.listen == y.peer {
                return Err(format!("sync.peer = {}: the same address as sync.listen", y.peer));
            }
            if !y.ring_records.is_power_of_two() || y.ring_records < 1024 || y.ring_records > (1 << 24) {
                return Err(format!("sync.ring_records = {}: a power of two in 1024..=16777216", y.ring_records));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
