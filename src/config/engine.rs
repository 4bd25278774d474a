//! From the file's sections to the engine's own configuration types (`StackConfig`,
//! `TcpConfig`): what `flowtwin run` starts with and what a live reload builds anew.

use std::io::Read;
use std::sync::Arc;

use flowtwin_engine::stack::{Group, Listener, StackConfig, Vip};
use flowtwin_engine::tcp::TcpConfig;
use flowtwin_engine::time::Duration as FtDuration;
use flowtwin_engine::wire::MacAddr;

use super::{Config, TcpSection};

/// The TCP parameters of `[tcp]`.
pub fn tcp_config(t: &TcpSection) -> TcpConfig {
    TcpConfig {
        mss: t.mss,
        wscale: t.wscale,
        timestamps: t.timestamps,
        sack: t.sack,
        rto_initial: FtDuration::from_millis(t.rto_initial_ms),
        rto_min: FtDuration::from_millis(t.rto_min_ms),
        rto_max: FtDuration::from_millis(t.rto_max_ms),
        delayed_ack: FtDuration::from_millis(t.delayed_ack_ms),
        time_wait: FtDuration::from_millis(t.time_wait_ms),
        idle_timeout: FtDuration::from_secs(t.idle_timeout_s),
        syn_ack_retries: t.syn_ack_retries,
        max_retransmits: t.max_retransmits,
        max_ooo_bytes: t.max_ooo_bytes,
        initial_cwnd_segments: t.initial_cwnd_segments,
    }
}

/// Build the engine's stack configuration (loads object directories).
pub fn stack_config(cfg: &Config) -> Result<StackConfig, String> {
    let vips = cfg
        .vips
        .iter()
        .map(|v| Vip {
            addr: v.addr,
            mac: MacAddr(v.mac_bytes()),
            group: cfg.group_of(v.addr),
        })
        .collect();
    let groups = cfg.groups.iter().map(|g| Group::new(g.name.clone())).collect();
    let mut listeners = Vec::new();
    for (i, s) in cfg.services.iter().enumerate() {
        let spec = s.spec(i)?;
        listeners.push(Listener { vip: s.vip, port: s.port, spec });
    }
    let tcp = tcp_config(&cfg.tcp);
    Ok(StackConfig {
        vips,
        groups,
        listeners,
        routes: cfg.route_table()?,
        tcp,
        flow_capacity: cfg.engine.flow_capacity as usize,
        isn_key: random_key(),
        open_secrets: Arc::new(flowtwin_engine::tcp::isn::GroupSecrets::new(random_key())),
        timer_tick: FtDuration::from_micros(100),
        retired: Vec::new(),
    })
}

/// A secret for RFC 6528 ISNs, from the kernel's CSPRNG.
fn random_key() -> [u8; 16] {
    let mut k = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut k);
    }
    if k == [0; 16] {
        // No urandom (a very odd system): fall back to time and pid, still unpredictable enough
        // to avoid ISN collisions between restarts.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        k[..8].copy_from_slice(&(t as u64).to_le_bytes());
        k[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    }
    k
}
