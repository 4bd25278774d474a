//! What the fake-clock session tests share (`session/`, `session_pool.rs`): the session's
//! configuration and the engine configuration it runs beside (one VIP, 10.9.0.1).
#![allow(dead_code)]

use std::time::Duration;

use flowtwin_engine::stack::{vrrp_mac, GroupId, Listener, StackConfig, Vip};
use flowtwin_engine::tcp::TcpConfig;
use flowtwin_sync::session::{Mode, SessionConfig};
use flowtwin_sync::Role;

/// Heartbeat interval, and the heartbeats missed that make the peer dead.
pub const HB: Duration = Duration::from_millis(5);
pub const DEAD: u32 = 3;
/// Strict mode: the output holds after a lost standby and after a handover.
pub const FENCE_HOLD: Duration = Duration::from_millis(30);
pub const HANDOVER_HOLD: Duration = Duration::from_millis(500);

/// Node `node_id` preferring `role`: strict, 2 workers, the default group.
pub fn session_cfg(node_id: u32, role: Role) -> SessionConfig {
    SessionConfig {
        node_id,
        role,
        mode: Mode::Strict,
        heartbeat: HB,
        dead_after: DEAD,
        async_max_lag: Duration::from_millis(20),
        fence_hold: FENCE_HOLD,
        handover_hold: HANDOVER_HOLD,
        workers: 2,
        groups: flowtwin_engine::group::GroupSet::first(1),
        token_base: 0,
    }
}

/// The engine beside the session: VIP 10.9.0.1 with `listeners`.
pub fn session_stack(listeners: Vec<Listener>, isn_key: [u8; 16]) -> StackConfig {
    StackConfig {
        vips: vec![Vip { addr: [10, 9, 0, 1].into(), mac: vrrp_mac(1), group: GroupId::DEFAULT }],
        groups: Vec::new(),
        listeners,
        routes: flowtwin_engine::route::RouteTable::all_on_link(),
        tcp: TcpConfig::default(),
        flow_capacity: 64,
        isn_key,
        open_secrets: Default::default(),
        timer_tick: flowtwin_engine::time::Duration::from_micros(100),
        retired: Vec::new(),
    }
}
