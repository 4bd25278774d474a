//! What an engine is configured with: its VIPs, its listeners and their services, its routes,
//! TCP parameters. Shared read-only by every worker's stack and by the standby's replay, which
//! must see the same listeners as the active (a flow names its listener by index).

use std::net::Ipv4Addr;

pub use crate::group::{Group, GroupId, GroupSet, MAX_GROUPS};
use crate::route::RouteTable;
use crate::service::ServiceSpec;
use crate::tcp::TcpConfig;
use crate::time::Duration;
use crate::wire::ethernet::MacAddr;

/// The VRRP-style virtual MAC of virtual router `vrid` (RFC 5798 §7.3): 00:00:5e:00:01:{vrid}.
pub fn vrrp_mac(vrid: u8) -> MacAddr {
    MacAddr([0x00, 0x00, 0x5e, 0x00, 0x01, vrid])
}

/// A listener's identity, the same on every engine that runs the service: its address and
/// kind, hashed (64-bit FNV-1a; never 0). Replicas carry it next to their listener index, so
/// that a standby whose listener list is ordered otherwise still resumes a flow in its own
/// listener of that service.
pub fn listener_fingerprint(vip: Ipv4Addr, port: u16, kind: &str) -> u64 {
    let bytes = vip.octets().into_iter().chain(port.to_le_bytes()).chain(kind.bytes());
    bytes.fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)).max(1)
}

/// The configuration a running engine uses now: a reload (`flowtwin ctl reload`, SIGHUP)
/// publishes a new one, and each worker and the sync thread pick it up between two passes
/// (one relaxed load of the generation per pass; the lock only when it moved).
#[derive(Debug)]
pub struct LiveConfig {
    generation: std::sync::atomic::AtomicU64,
    current: std::sync::RwLock<std::sync::Arc<StackConfig>>,
}

impl LiveConfig {
    pub fn new(cfg: std::sync::Arc<StackConfig>) -> LiveConfig {
        LiveConfig { generation: std::sync::atomic::AtomicU64::new(0), current: std::sync::RwLock::new(cfg) }
    }

    /// How many times a new configuration was published.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The configuration now and its generation.
    pub fn load(&self) -> (std::sync::Arc<StackConfig>, u64) {
        let g = self.current.read().unwrap_or_else(|e| e.into_inner());
        (g.clone(), self.generation())
    }

    /// Make `cfg` the configuration (the caller keeps listener indices stable).
    pub fn publish(&self, cfg: std::sync::Arc<StackConfig>) {
        let mut g = self.current.write().unwrap_or_else(|e| e.into_inner());
        *g = cfg;
        self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// A service address this engine owns.
#[derive(Clone, Debug)]
pub struct Vip {
    pub addr: Ipv4Addr,
    /// The MAC that answers ARP for `addr` and sources its frames.
    pub mac: MacAddr,
    /// The ownership group the address belongs to (index into `StackConfig::groups`).
    pub group: GroupId,
}

/// A bound service.
#[derive(Clone, Debug)]
pub struct Listener {
    pub vip: Ipv4Addr,
    pub port: u16,
    pub spec: ServiceSpec,
}

/// Everything a stack needs; shared by all workers of an engine.
#[derive(Clone, Debug)]
pub struct StackConfig {
    pub vips: Vec<Vip>,
    /// Ownership groups (names; each VIP names its group). Empty: one group of every VIP,
    /// [`GroupId::DEFAULT`], as in a configuration without `[[group]]` sections.
    pub groups: Vec<Group>,
    pub listeners: Vec<Listener>,
    /// Where frames toward a remote go (the next hop of the connections the engine opens):
    /// the VIPs' subnets on-link plus static routes; [`RouteTable::all_on_link`] for one
    /// segment that holds everything.
    pub routes: RouteTable,
    pub tcp: TcpConfig,
    /// Flows this worker can hold (preallocated).
    pub flow_capacity: usize,
    /// Secret for RFC 6528 ISNs of the connections the engine accepts.
    pub isn_key: [u8; 16],
    /// Secrets (per group, shared with the group's standby) of the ISNs and timestamp
    /// offsets of the connections the engine opens.
    pub open_secrets: std::sync::Arc<crate::tcp::isn::GroupSecrets>,
    /// Timer wheel resolution.
    pub timer_tick: Duration,
    /// Listeners a live reload removed or replaced: `retired[i]` (missing: false) takes no
    /// new connection, and its flows run to their end. Indices never move, because a flow
    /// names its listener by index; a reload only appends (`listener_for`).
    pub retired: Vec<bool>,
}

impl StackConfig {
    /// How many groups there are (at least the default one).
    pub fn group_count(&self) -> usize {
        self.groups.len().max(1)
    }

    /// Every group of this engine.
    pub fn all_groups(&self) -> GroupSet {
        GroupSet::first(self.group_count())
    }

    /// A group's name ("default" for the implicit one).
    pub fn group_name(&self, g: GroupId) -> &str {
        self.groups.get(g.0 as usize).map_or("default", |x| x.name.as_str())
    }

    /// The VIP `ip` (None: not one of ours).
    pub fn vip(&self, ip: Ipv4Addr) -> Option<&Vip> {
        self.vips.iter().find(|v| v.addr == ip)
    }

    /// The group of the VIP `ip` (None: not one of ours).
    pub fn group_of(&self, ip: Ipv4Addr) -> Option<GroupId> {
        self.vip(ip).map(|v| v.group)
    }

    /// Whether listener `i` was retired by a reload (no new connections).
    pub fn is_retired(&self, i: usize) -> bool {
        self.retired.get(i).copied().unwrap_or(false)
    }

    /// The listener that takes new connections to `vip:port` (the newest, not retired).
    pub fn listener_for(&self, vip: Ipv4Addr, port: u16) -> Option<usize> {
        self.listeners.iter().enumerate().rposition(|(i, l)| l.vip == vip && l.port == port && !self.is_retired(i))
    }

    /// Listener `i`'s identity across engines and reloads ([`listener_fingerprint`]); 0 for
    /// an index this config does not have.
    /// A listener that replicates no payload (a proxy with `commit = "peer"`) has another
    /// fingerprint than one that does: a standby never replays one's replicas as the other's.
    pub fn listener_fingerprint(&self, i: usize) -> u64 {
        self.listeners.get(i).map_or(0, |l| {
            let fp = listener_fingerprint(l.vip, l.port, l.spec.kind_name());
            if l.spec.payload_replicated() { fp } else { fp.rotate_left(17) ^ 0x7065_6572 | 1 }
        })
    }

    /// This engine's listener for a replica whose engine named its listener `index` with
    /// `fingerprint`: the same index when it is the same service here (two engines started
    /// from one file), else the listener of the same address and kind (the two engines'
    /// listener lists differ: other file order, or another history of reloads), preferring
    /// one that is not retired. A fingerprint of 0 (a test's image) trusts the index.
    pub fn resolve_listener(&self, index: u16, fingerprint: u64) -> Option<u16> {
        let i = usize::from(index);
        if i < self.listeners.len() && (fingerprint == 0 || self.listener_fingerprint(i) == fingerprint) {
            return Some(index);
        }
        let same = |j: &usize| self.listener_fingerprint(*j) == fingerprint;
        let live = (0..self.listeners.len()).filter(same).find(|j| !self.is_retired(*j));
        live.or_else(|| (0..self.listeners.len()).find(same)).and_then(|j| u16::try_from(j).ok())
    }

    /// The groups in canonical text, `name=vip,vip;name=vip`, VIPs in address order:
    /// both engines of a pair must agree on it (the sync Hello carries its digest).
    pub fn group_layout(&self) -> String {
        let mut out = String::new();
        for g in self.all_groups().iter() {
            if !out.is_empty() {
                out.push(';');
            }
            out.push_str(self.group_name(g));
            out.push('=');
            // Sorted: a VIP a reload added sits at the end of the running list, where a
            // restarted peer reading the same file may have it elsewhere.
            let mut vips: Vec<Ipv4Addr> = self.vips.iter().filter(|v| v.group == g).map(|v| v.addr).collect();
            vips.sort();
            let vips: Vec<String> = vips.iter().map(|v| v.to_string()).collect();
            out.push_str(&vips.join(","));
        }
        out
    }

    /// A digest of [`group_layout`](Self::group_layout) (64-bit FNV-1a: a fingerprint for
    /// agreement, not a secret), carried in the sync Hello.
    pub fn group_digest(&self) -> u64 {
        self.group_layout().bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
    }
}
