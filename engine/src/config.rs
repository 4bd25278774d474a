//! What an engine is configured with: its VIPs, its listeners and their services, TCP
//! parameters. Shared read-only by every worker's stack and by the standby's replay, which
//! must see the same listeners as the active (a flow names its listener by index).

use std::net::Ipv4Addr;

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
    pub listeners: Vec<Listener>,
    pub tcp: TcpConfig,
    /// Flows this worker can hold (preallocated).
    pub flow_capacity: usize,
    /// Secret for RFC 6528 ISNs.
    pub isn_key: [u8; 16],
    /// Timer wheel resolution.
    pub timer_tick: Duration,
}
