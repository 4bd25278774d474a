//! The proxy services' runtime pools in a [`Session`] (`flowtwin ctl backend add|drain|
//! undrain|remove` on the active; `engine::service::proxy::pool`).
//!
//! - **The active** sends each proxy service's whole table (`Msg::Pool`, every slot) to its
//!   standby: at the join, right after `Snapshot` (so the standby's slots are the active's
//!   before it images any flow), and at the first tick after an operator changed it (the
//!   spec's version moved). A whole table rather than the operation: it is idempotent, a
//!   change made while no standby was there reaches the next one, and two quick changes
//!   travel as one. It also frees the slots of removed backends once no connection has used
//!   them for `REMOVE_GRACE` (a replicated change like any other, so the standby never frees
//!   a slot the active still counts a connection on).
//! - **The standby** makes its slots the table (`ProxySpec::apply_table`): its workers read
//!   the same spec, so after a takeover it routes as the active did. A table that does not fit
//!   (another slot count, a service this engine does not proxy) ends the session with a
//!   refusal naming both sides: the two configs differ, and the replica could not be trusted.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use flowtwin_engine::service::proxy::{ProxySpec, REMOVE_GRACE};
use flowtwin_engine::stack::ServiceSpec;

use super::*;
use crate::proto::PoolTable;

impl Session {
    /// The proxy services of this session's groups: (listener index, vip, port, spec).
    fn proxies(&self) -> Vec<(usize, Ipv4Addr, u16, Arc<ProxySpec>)> {
        let cfg = &self.stack_cfg;
        cfg.listeners
            .iter()
            .enumerate()
            .filter(|(i, _)| !cfg.is_retired(*i))
            .filter(|(_, l)| cfg.group_of(l.vip).is_none_or(|g| self.cfg.groups.contains(g)))
            .filter_map(|(i, l)| match &l.spec {
                ServiceSpec::Proxy(p) => Some((i, l.vip, l.port, p.clone())),
                _ => None,
            })
            .collect()
    }

    /// Active: queue the table of every proxy service whose pool changed since it was last
    /// sent (`all`: every one, a join).
    pub(super) fn send_pools(&mut self, all: bool) {
        for (i, vip, port, spec) in self.proxies() {
            if i >= self.pool_sent.len() {
                self.pool_sent.resize(i + 1, None);
            }
            let v = spec.pool_version();
            if !all && self.pool_sent[i] == Some(v) {
                continue;
            }
            let (version, slots) = spec.table();
            self.pool_sent[i] = Some(version);
            self.transmit.push_back(Msg::Pool(PoolTable { vip, port, version, slots }));
        }
    }

    /// Active: free the slots of removed backends no connection used for `REMOVE_GRACE`.
    pub(super) fn reap_pools(&mut self, now: Instant) {
        let proxies = self.proxies();
        let mut idle = Vec::new();
        for (i, _, _, spec) in &proxies {
            idle.extend(spec.idle_removed().map(|s| (*i, s)));
        }
        // Forget what is no longer idle (a connection resumed on it, or it was freed).
        self.reaping.retain(|(l, s, _)| idle.contains(&(*l, *s)));
        for (l, s) in idle {
            let since = match self.reaping.iter().find(|(a, b, _)| (*a, *b) == (l, s)) {
                Some(&(_, _, t)) => t,
                None => {
                    self.reaping.push((l, s, now));
                    now
                }
            };
            if now.saturating_duration_since(since) >= REMOVE_GRACE {
                if let Some((_, vip, port, spec)) = proxies.iter().find(|p| p.0 == l) {
                    let addr = spec.backends[s].addr();
                    if spec.reap(s) {
                        tracing::info!(node = self.cfg.node_id, event = "backend_removed", service = %format!("{vip}:{port}"), backend = %addr, "service {vip}:{port}: backend {addr} removed (no connection left)");
                    }
                }
                self.reaping.retain(|(a, b, _)| (*a, *b) != (l, s));
            }
        }
    }

    /// Standby: the active's table of one service. `Err`: it does not fit this engine.
    pub(super) fn apply_pool(&mut self, t: &PoolTable) -> Result<(), String> {
        let svc = format!("{}:{}", t.vip, t.port);
        let Some((_, _, _, spec)) = self.proxies().into_iter().find(|p| p.1 == t.vip && p.2 == t.port) else {
            // The two configs differ, as they do between the live reloads of the two engines
            // (a proxy service added on the active first, or removed here first): its flows
            // are not protected here (counted per image), the others are. Counted each time,
            // said once.
            self.status.pool_unknown_service.fetch_add(1, Relaxed);
            if !self.pool_unknown.contains(&svc) {
                tracing::warn!(node = self.cfg.node_id, event = "pool_unknown_service", service = %svc, "the active's pool names proxy service {svc}, which this engine does not run: its connections would not survive a takeover (reload this engine with the same services)");
                self.pool_unknown.push(svc);
            }
            return Ok(());
        };
        spec.apply_table(&t.slots).map_err(|e| format!("service {svc}: {e}"))?;
        self.status.pool_tables.fetch_add(1, Relaxed);
        Ok(())
    }
}
