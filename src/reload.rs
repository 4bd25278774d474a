//! Live reload (`flowtwin ctl reload`, SIGHUP): the engine reads its config file again and
//! applies what can change while connections run, or refuses the whole reload, naming each
//! key that cannot change, and changes nothing.
//!
//! What a reload applies:
//! - `[log]` level and format;
//! - `[tcp]`: every key, for the connections made from then on;
//! - `[[vip]]` added (to a group that exists), announced by gratuitous ARP when this engine
//!   serves its group;
//! - `[[service]]` added or removed, of any kind; an object or echo service changed. A
//!   removed service takes no new connection and its connections run to their end; a changed
//!   one is a removal plus an addition (its connections keep the old service, new ones get
//!   the new). A proxy service added starts with its file's pool and health checks.
//! - A proxy service's `backends` list is read when the service starts only: the running
//!   pool is changed with `flowtwin ctl backend`, and a reload leaves it (and says so).
//!
//! What it refuses: `[eal]`, `[engine]`, `[[port]]`, `[[route]]`, `[metrics]`, `[sync]`, a
//! VIP removed or changed, a group added, removed or renamed, a proxy service changed (but
//! for its `backends`: its pool and health are running state).
//!
//! A flow names its listener by index, and so does its replica on the standby, so a reload
//! never moves a listener: it appends the new ones and retires the old ones
//! (`StackConfig::retired`). The two engines of a pair are reloaded each from its own file;
//! replicas name their listener's fingerprint too, so that a standby whose listener list is
//! ordered otherwise (another history of reloads, a restart) still finds its own listener of
//! the service. Until both are reloaded, a service that only one engine runs is not
//! protected: the standby counts its images (`flowtwin_sync_replicas_unknown_service_total`)
//! and says so once.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use flowtwin_engine::counters::MAX_SERVICES;
use flowtwin_engine::stack::{Listener, LiveConfig, StackConfig, Vip};
use flowtwin_engine::wire::ethernet::MacAddr;
use serde_json::Value;
use tracing::{info, warn};

use crate::config::{Config, ServiceKind};
use crate::logs::Logs;

/// The top-level keys a reload may change (each checked further below).
const LIVE_SECTIONS: &[&str] = &["log", "tcp", "vip", "group", "service"];

/// What a reload would do: the configuration to publish and the changes, in words.
#[derive(Debug)]
pub struct Plan {
    pub stack: StackConfig,
    pub changes: Vec<String>,
}

/// The dotted paths at which `a` and `b` differ (at most `limit`), `old → new` beside each.
fn diff_paths(path: &str, a: &Value, b: &Value, out: &mut Vec<String>, limit: usize) {
    if a == b || out.len() >= limit {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                diff_paths(&p, x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null), out, limit);
            }
        }
        _ => out.push(format!("{path} ({} → {})", short(a), short(b))),
    }
}

/// A value as a config shows it, cut short.
fn short(v: &Value) -> String {
    let s = match v {
        Value::Null => "unset".to_string(),
        other => other.to_string(),
    };
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(57).collect::<String>())
    } else {
        s
    }
}

fn section<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key).unwrap_or(&Value::Null)
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], |a| a.as_slice())
}

/// What a reload from `old` to `new` does to `running` (the configuration the engine runs
/// now, which `old` made). `Err`: every reason it is refused, in one message.
pub fn plan(old: &Config, new: &Config, running: &StackConfig) -> Result<Plan, String> {
    let (o, n) = match (serde_json::to_value(old), serde_json::to_value(new)) {
        (Ok(o), Ok(n)) => (o, n),
        (Err(e), _) | (_, Err(e)) => return Err(format!("cannot compare the configs: {e}")),
    };
    let mut refused = Vec::new();
    let mut changes = Vec::new();

    // Sections that only a restart changes.
    let keys: BTreeSet<&String> = o.as_object().into_iter().chain(n.as_object()).flat_map(|m| m.keys()).collect();
    for k in keys.into_iter().filter(|k| !LIVE_SECTIONS.contains(&k.as_str())) {
        let mut d = Vec::new();
        diff_paths(k, section(&o, k), section(&n, k), &mut d, 4);
        refused.extend(d.into_iter().map(|p| format!("{p} cannot change on a running engine")));
    }

    // [log] and [tcp]: everything.
    for (k, note) in [("log", ""), ("tcp", " (connections made from now on)")] {
        let mut d = Vec::new();
        diff_paths(k, section(&o, k), section(&n, k), &mut d, 32);
        changes.extend(d.into_iter().map(|p| format!("{p}{note}")));
    }

    // VIPs: added only.
    let mut stack = running.clone();
    let old_vips: Vec<Ipv4Addr> = old.vips.iter().map(|v| v.addr).collect();
    for (ov, ovj) in old.vips.iter().zip(list(section(&o, "vip"))) {
        match new.vips.iter().zip(list(section(&n, "vip"))).find(|(nv, _)| nv.addr == ov.addr) {
            None => refused.push(format!("vip {}: removing a VIP on a running engine would cut its connections", ov.addr)),
            Some((_, nvj)) => {
                if old.group_of(ov.addr) != new.group_of(ov.addr) {
                    refused.push(format!("vip {}: moving a VIP to another group on a running engine is not supported", ov.addr));
                }
                let mut d = Vec::new();
                diff_paths(&format!("vip {}", ov.addr), ovj, nvj, &mut d, 4);
                refused.extend(d.into_iter().map(|p| format!("{p} cannot change on a running engine")));
            }
        }
    }
    // Groups: the same names in the same order; a group's VIPs may grow.
    let names = |c: &Config| c.groups.iter().map(|g| g.name.clone()).collect::<Vec<_>>();
    if names(old) != names(new) {
        refused.push(format!(
            "group: the ownership groups cannot change on a running engine ({:?} → {:?})",
            names(old),
            names(new)
        ));
    }
    for v in new.vips.iter().filter(|v| !old_vips.contains(&v.addr)) {
        let group = new.group_of(v.addr);
        stack.vips.push(Vip { addr: v.addr, mac: MacAddr(v.mac_bytes()), group });
        changes.push(format!("vip {} added (group {})", v.addr, stack.group_name(group)));
    }

    // Services, by address.
    let old_svc: Vec<_> = old.services.iter().zip(list(section(&o, "service"))).collect();
    let new_svc: Vec<_> = new.services.iter().zip(list(section(&n, "service"))).enumerate().collect();
    let name = |vip: Ipv4Addr, port: u16, kind: ServiceKind| format!("service {vip}:{port} ({})", kind.name());
    // A new listener for `service[i]` of the new file (loads its objects, builds its pool).
    let listener = |i: usize, ns: &crate::config::ServiceSection| -> Result<Listener, String> {
        Ok(Listener { vip: ns.vip, port: ns.port, spec: ns.spec(i).map_err(|e| format!("reload refused, nothing changed: {e}"))? })
    };
    let mut retire = Vec::new();
    for (os, osj) in &old_svc {
        let Some(li) = running.listener_for(os.vip, os.port) else { continue };
        let svc = name(os.vip, os.port, os.kind);
        match new_svc.iter().find(|(_, (ns, _))| ns.vip == os.vip && ns.port == os.port) {
            None => {
                retire.push(li);
                changes.push(format!("{svc} removed: no new connections; its connections run to their end"));
            }
            Some((_, (_, nsj))) if nsj == osj => {}
            Some((i, (ns, nsj))) => {
                if os.kind == ServiceKind::Proxy || ns.kind == ServiceKind::Proxy {
                    let strip = |v: &Value| {
                        let mut v = v.clone();
                        if let Some(m) = v.as_object_mut() {
                            m.remove("backends");
                        }
                        v
                    };
                    let mut d = Vec::new();
                    diff_paths(&svc, &strip(osj), &strip(nsj), &mut d, 4);
                    if d.is_empty() {
                        changes.push(format!(
                            "{svc}: its backends are not reloaded (the running pool changes with `flowtwin ctl backend`; the file's list applies at the next start)"
                        ));
                    } else {
                        refused.extend(d.into_iter().map(|p| format!("{p}: a proxy service cannot change on a running engine")));
                    }
                } else {
                    retire.push(li);
                    stack.listeners.push(listener(*i, ns)?);
                    changes.push(format!("{svc} replaced: new connections get the new one, its connections keep the old"));
                }
            }
        }
    }
    for (i, (ns, _)) in &new_svc {
        if old_svc.iter().any(|(os, _)| os.vip == ns.vip && os.port == ns.port) {
            continue;
        }
        let svc = name(ns.vip, ns.port, ns.kind);
        stack.listeners.push(listener(*i, ns)?);
        changes.push(format!("{svc} added"));
    }
    if stack.listeners.len() > MAX_SERVICES {
        refused.push(format!(
            "the engine would hold {} listeners, retired ones included (at most {MAX_SERVICES}): restart it to start over",
            stack.listeners.len()
        ));
    }
    if !refused.is_empty() {
        return Err(format!("reload refused, nothing changed: {} (restart the engine for these)", refused.join("; ")));
    }
    stack.retired.resize(stack.listeners.len(), false);
    for li in retire {
        stack.retired[li] = true;
    }
    stack.tcp = crate::config::tcp_config(&new.tcp);
    stack.routes = new.route_table()?;
    Ok(Plan { stack, changes })
}

/// Carries reloads out: the file, the configuration it made, and where a new one goes.
pub struct Reloader {
    path: PathBuf,
    logs: Option<Logs>,
    live: Arc<LiveConfig>,
    current: Mutex<Config>,
    /// Reloads applied and refused (`flowtwin_config_reloads_total{result}`).
    pub applied: AtomicU64,
    pub refused: AtomicU64,
}

impl Reloader {
    pub fn new(path: PathBuf, logs: Option<Logs>, live: Arc<LiveConfig>, current: Config) -> Reloader {
        Reloader { path, logs, live, current: Mutex::new(current), applied: AtomicU64::new(0), refused: AtomicU64::new(0) }
    }

    /// Read the file again and apply it; the changes made, in words. One reload at a time.
    pub fn reload(&self, by: &str) -> Result<Vec<String>, String> {
        let r = self.try_reload();
        match &r {
            Ok(changes) => {
                self.applied.fetch_add(1, Ordering::Relaxed);
                let text = if changes.is_empty() { "no change".to_string() } else { changes.join("; ") };
                info!(event = "config_reloaded", by, path = %self.path.display(), changes = %text, "config {} reloaded ({by}): {text}", self.path.display());
            }
            Err(e) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                warn!(event = "config_reload_refused", by, path = %self.path.display(), error = %e, "config {}: {e}", self.path.display());
            }
        }
        r
    }

    fn try_reload(&self) -> Result<Vec<String>, String> {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let new = Config::load(&self.path).map_err(|e| format!("reload refused, nothing changed: {e}"))?;
        let (running, _) = self.live.load();
        let plan = plan(&cur, &new, &running)?;
        if let Some(l) = &self.logs {
            l.configure(&new.log.level, &new.log.format)?;
        }
        if !plan.changes.is_empty() {
            self.live.publish(Arc::new(plan.stack));
        }
        *cur = new;
        Ok(plan.changes)
    }

    /// Configurations published since the start.
    pub fn generation(&self) -> u64 {
        self.live.generation()
    }

    /// The reply of `flowtwin ctl reload`.
    pub fn reply(&self, by: &str) -> String {
        match self.reload(by) {
            Ok(changes) => serde_json::json!({ "reloaded": true, "generation": self.live.generation(), "changes": changes }).to_string(),
            Err(e) => serde_json::json!({ "error": e }).to_string(),
        }
    }
}

#[cfg(test)]
mod tests;
