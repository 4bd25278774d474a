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

    /// The groups in canonical text, `name=vip,vip;name=vip`, VIPs in configured order:
    /// both engines of a pair must agree on it (the sync Hello carries its digest).
    pub fn group_layout(&self) -> String {
        let mut out = String::new();
        for g in self.all_groups().iter() {
            if !out.is_empty() {
                out.push(';');
            }
            out.push_str(self.group_name(g));
            out.push('=');
            let vips: Vec<String> = self.vips.iter().filter(|v| v.group == g).map(|v| v.addr.to_string()).collect();
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
