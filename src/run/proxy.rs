//! Proxy services as an operator sees them: per-backend metrics on `/metrics` and
//! `flowtwin ctl backends`. Everything here reads the backends' shared counters
//! (`service::proxy::Backend`), which every worker updates when it opens or closes a
//! backend connection; nothing runs per packet.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use std::net::SocketAddrV4;

use flowtwin_engine::service::proxy::{Admin, Backend, CheckResult, CheckState, ProxySpec, CONNECT_BUCKETS_US, DEFAULT_POOL, REFUSAL_REASONS};
use flowtwin_engine::stack::{ServiceSpec, StackConfig};

use crate::metrics::{family, sample};

/// The proxy services of a config: ("vip:port", spec); one a reload removed is not listed.
pub(super) fn of(cfg: &StackConfig) -> Vec<(String, Arc<ProxySpec>)> {
    cfg.listeners
        .iter()
        .enumerate()
        .filter(|(i, _)| !cfg.is_retired(*i))
        .filter_map(|(_, l)| match &l.spec {
            ServiceSpec::Proxy(p) => Some((format!("{}:{}", l.vip, l.port), p.clone())),
            _ => None,
        })
        .collect()
}

type Field = (&'static str, &'static str, &'static str, fn(&Backend) -> u64);

const FIELDS: [Field; 6] = [
    ("flowtwin_proxy_backend_up", "gauge", "1 if the backend may get new connections (ready, not switched off, not resting after failures, not down by its health checks)", |b| {
        u64::from(b.admin() == Admin::Ready && b.up.load(Relaxed) && !b.resting() && b.check.eligible())
    }),
    ("flowtwin_proxy_backend_connections", "gauge", "backend connections open now", |b| b.active.load(Relaxed)),
    ("flowtwin_proxy_backend_opened_total", "counter", "backend connections opened", |b| b.opened.load(Relaxed)),
    ("flowtwin_proxy_backend_failed_total", "counter", "backend connections that never connected (refused, unanswered, no next hop)", |b| {
        b.failed.load(Relaxed)
    }),
    ("flowtwin_proxy_backend_marked_down_total", "counter", "times passive health rested the backend (max_fails failures in a row)", |b| {
        b.marked_down.load(Relaxed)
    }),
    ("flowtwin_proxy_backend_weight", "gauge", "the backend's weight (round-robin and least-conn)", |b| u64::from(b.weight.load(Relaxed))),
];

/// The slots that hold a backend (any state but empty).
fn listed(spec: &ProxySpec) -> impl Iterator<Item = &Backend> {
    spec.backends.iter().filter(|b| b.admin() != Admin::Empty)
}

/// Append the per-backend families (nothing without a proxy service).
pub(super) fn render(proxies: &[(String, Arc<ProxySpec>)], out: &mut String) {
    use std::fmt::Write as _;
    if proxies.is_empty() {
        return;
    }
    for (name, kind, help, get) in FIELDS {
        family(out, name, kind, help);
        for (svc, spec) in proxies {
            for b in listed(spec) {
                sample(out, name, &[("service", svc), ("backend", &b.addr().to_string())], get(b));
            }
        }
    }
    let bytes = "flowtwin_proxy_backend_bytes_total";
    family(out, bytes, "counter", "payload bytes of closed backend connections: sent to the backend (new bytes, retransmissions excluded) and received from it");
    for (svc, spec) in proxies {
        for b in listed(spec) {
            let a = b.addr().to_string();
            sample(out, bytes, &[("service", svc), ("backend", &a), ("direction", "to_backend")], b.bytes_to.load(Relaxed));
            sample(out, bytes, &[("service", svc), ("backend", &a), ("direction", "from_backend")], b.bytes_from.load(Relaxed));
        }
    }
    render_checks(proxies, out);
    let h = "flowtwin_proxy_backend_connect_seconds";
    family(out, h, "histogram", "backend connect latency: the engine's connect (its SYN waits for the standby in strict mode) to the backend's SYN-ACK, SYN retransmissions included");
    for (svc, spec) in proxies {
        for b in listed(spec) {
            let a = b.addr().to_string();
            let mut cum = 0u64;
            for (i, c) in b.connect.buckets.iter().enumerate() {
                cum += c.load(Relaxed);
                let le = CONNECT_BUCKETS_US.get(i).map_or("+Inf".to_string(), |us| format!("{}", *us as f64 / 1e6));
                sample(out, &format!("{h}_bucket"), &[("service", svc), ("backend", &a), ("le", &le)], cum);
            }
            let _ = writeln!(out, "{h}_sum{{service=\"{svc}\",backend=\"{a}\"}} {}", b.connect.sum_us.load(Relaxed) as f64 / 1e6);
            let _ = writeln!(out, "{h}_count{{service=\"{svc}\",backend=\"{a}\"}} {cum}");
        }
    }
    let r = "flowtwin_proxy_requests_refused_total";
    family(out, r, "counter", "client connections refused before a backend was chosen: answered 400, 431 or 503 (mode http), or closed without an answer (mode tcp, tls: no ClientHello, no pool, no backend up); counted when they end");
    for (svc, spec) in proxies {
        for (reason, n) in REFUSAL_REASONS.iter().zip(&spec.refused) {
            sample(out, r, &[("service", svc), ("reason", reason)], n.load(Relaxed));
        }
    }
}

/// The active-check families, for the services that run checks (none: nothing).
fn render_checks(proxies: &[(String, Arc<ProxySpec>)], out: &mut String) {
    let checked: Vec<&(String, Arc<ProxySpec>)> = proxies.iter().filter(|(_, s)| s.check.is_some()).collect();
    if checked.is_empty() {
        return;
    }
    let each = |out: &mut String, name: &str, get: &dyn Fn(&Backend) -> String| {
        for (svc, spec) in &checked {
            for b in listed(spec) {
                sample(out, name, &[("service", svc), ("backend", &b.addr().to_string())], get(b));
            }
        }
    };
    let up = "flowtwin_proxy_backend_check_up";
    family(out, up, "gauge", "1 unless the backend's active health checks marked it down (fall failures in a row; rise successes bring it back)");
    each(out, up, &|b| u64::from(b.check.eligible()).to_string());
    let total = "flowtwin_proxy_backend_checks_total";
    family(out, total, "counter", "active health checks that ended, by result: ok, fail (refused, reset, bad status or answer), timeout");
    for (svc, spec) in &checked {
        for b in listed(spec) {
            let a = b.addr().to_string();
            for (r, v) in [("ok", &b.check.ok), ("fail", &b.check.failed), ("timeout", &b.check.timeouts)] {
                sample(out, total, &[("service", svc), ("backend", &a), ("result", r)], v.load(Relaxed));
            }
        }
    }
    let tr = "flowtwin_proxy_backend_check_transitions_total";
    family(out, tr, "counter", "times the active health checks took the backend down or brought it back up");
    each(out, tr, &|b| b.check.transitions.load(Relaxed).to_string());
    let d = "flowtwin_proxy_backend_check_duration_seconds";
    family(out, d, "gauge", "how long the last finished health check took (its start to its outcome)");
    each(out, d, &|b| (b.check.last_us.load(Relaxed) as f64 / 1e6).to_string());
}

/// A backend's state as `ctl backends` prints it: its admin state unless ready, then health.
fn state(b: &Backend) -> &'static str {
    match b.admin() {
        Admin::Ready if !b.up.load(Relaxed) => "off",
        Admin::Ready if b.check.state() == CheckState::Down => "down",
        Admin::Ready if b.resting() => "resting",
        Admin::Ready => "up",
        a => a.name(),
    }
}

/// `flowtwin ctl backends`: every proxy service, its balancing and its backends.
pub(super) fn backends_json(proxies: &[(String, Arc<ProxySpec>)]) -> String {
    let services: Vec<serde_json::Value> = proxies
        .iter()
        .map(|(svc, spec)| {
            let backends: Vec<serde_json::Value> = listed(spec)
                .map(|b| {
                    let mut pools: Vec<serde_json::Value> = (0..spec.pools.len().min(64) as u16).filter(|&p| b.member(p)).map(|p| serde_json::json!(p)).collect();
                    if b.member(DEFAULT_POOL) {
                        pools.insert(0, serde_json::json!("default"));
                    }
                    serde_json::json!({
                        "backend": b.addr().to_string(),
                        "state": state(b),
                        "admin_state": b.admin().name(),
                        "weight": b.weight.load(Relaxed),
                        "pools": pools,
                        "connections": b.active.load(Relaxed),
                        "opened": b.opened.load(Relaxed),
                        "failed": b.failed.load(Relaxed),
                        "marked_down": b.marked_down.load(Relaxed),
                        "bytes_to_backend": b.bytes_to.load(Relaxed),
                        "bytes_from_backend": b.bytes_from.load(Relaxed),
                        "check": spec.check.as_ref().map(|_| check_json(b)),
                    })
                })
                .collect();
            let pools: Vec<serde_json::Value> = spec
                .pools
                .iter()
                .enumerate()
                .map(|(k, p)| serde_json::json!({ "pool": k, "host": p.host, "path_prefix": p.path_prefix }))
                .collect();
            serde_json::json!({
                "service": svc,
                "balance": spec.balance.name(),
                "source": spec.source.to_string(),
                "buffer": spec.buf_size,
                "max_fails": spec.health.max_fails,
                "fail_timeout_ms": spec.health.fail_timeout.micros() / 1000,
                "slots": spec.backends.len(),
                "health_check": spec.check.as_ref().map(|c| serde_json::json!({
                    "kind": c.kind.name(),
                    "interval_ms": c.interval.micros() / 1000,
                    "timeout_ms": c.timeout.micros() / 1000,
                    "rise": c.rise,
                    "fall": c.fall,
                    "port": c.port,
                    "http_path": (c.kind == flowtwin_engine::service::proxy::CheckKind::Http).then_some(&c.path),
                    "http_host": c.host,
                    "expect_status": (c.kind == flowtwin_engine::service::proxy::CheckKind::Http).then(|| c.expect_name()),
                })),
                "pools": pools,
                "backends": backends,
            })
        })
        .collect();
    serde_json::json!({ "services": services }).to_string()
}

/// A backend's active-check state for `ctl backends`.
fn check_json(b: &Backend) -> serde_json::Value {
    let c = &b.check;
    let last = c.last();
    let status = c.last_status.load(Relaxed);
    serde_json::json!({
        "state": c.state().name(),
        "last": last_text(last, status),
        "last_ms": c.last_us.load(Relaxed) as f64 / 1000.0,
        "ok": c.ok.load(Relaxed),
        "failed": c.failed.load(Relaxed),
        "timeouts": c.timeouts.load(Relaxed),
        "transitions": c.transitions.load(Relaxed),
    })
}

/// A check outcome in words (with the HTTP status when one was read).
fn last_text(r: CheckResult, status: u32) -> String {
    match (r, status) {
        (CheckResult::Ok, 0) | (_, 0) => r.name().to_string(),
        (CheckResult::Ok, s) => format!("ok (status {s})"),
        (_, s) => format!("{} {s}", r.name()),
    }
}

/// Logs each backend's up/down transitions by its active checks (from the runtime's
/// control loop: the workers never log). Each poll compares every checked backend's
/// transition count with the last one seen.
#[derive(Default)]
pub(super) struct HealthLog {
    seen: Vec<Vec<(SocketAddrV4, u64)>>,
}

impl HealthLog {
    pub(super) fn poll(&mut self, proxies: &[(String, Arc<ProxySpec>)]) {
        self.seen.resize_with(proxies.len(), Vec::new);
        for ((svc, spec), seen) in proxies.iter().zip(&mut self.seen) {
            let Some(check) = spec.check.as_ref() else { continue };
            seen.resize(spec.backends.len(), (SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0), 0));
            for (b, s) in spec.backends.iter().zip(seen.iter_mut()) {
                let (addr, n) = (b.addr(), b.check.transitions.load(Relaxed));
                if (addr, n) == *s {
                    continue;
                }
                let moved = s.0 == addr && n > s.1;
                *s = (addr, n);
                if !moved || b.admin() == Admin::Empty {
                    continue;
                }
                let state = b.check.state();
                let reason = last_text(b.check.last(), b.check.last_status.load(Relaxed));
                let (kind, ok, failed, timeouts) = (check.kind.name(), b.check.ok.load(Relaxed), b.check.failed.load(Relaxed), b.check.timeouts.load(Relaxed));
                if state == CheckState::Down {
                    tracing::warn!(event = "backend_down", service = %svc, backend = %addr, reason = %reason, check = kind, fall = check.fall, "service {svc}: backend {addr} is down ({kind} check: {reason}; {} failures in a row); it gets no new connections", check.fall);
                } else {
                    tracing::info!(event = "backend_up", service = %svc, backend = %addr, reason = %reason, check = kind, rise = check.rise, ok, failed, timeouts, "service {svc}: backend {addr} is up again ({kind} check: {reason}; {} successes in a row)", check.rise);
                }
            }
        }
    }
}

/// The usage of `flowtwin ctl backend`.
pub(crate) const BACKEND_USAGE: &str = "backend add SERVICE ADDR:PORT [--weight W] [--pool N|default] | backend drain|undrain|ready SERVICE ADDR:PORT | backend remove SERVICE ADDR:PORT [--force]  (SERVICE as `ctl backends` prints it: vip:port)";

fn err(msg: impl std::fmt::Display) -> String {
    serde_json::json!({ "error": msg.to_string() }).to_string()
}

/// `flowtwin ctl backend ...` (`words` after `backend`): change a running engine's pool.
/// `owned(service)`: whether this engine is the active for the service (else the change is
/// refused: the standby follows the active's pool, so it goes to the active).
pub(super) fn backend_cmd(proxies: &[(String, Arc<ProxySpec>)], owned: &dyn Fn(&str) -> bool, words: &[&str]) -> String {
    let (Some(&op), Some(&svc), Some(&addr)) = (words.first(), words.get(1), words.get(2)) else {
        return err(format!("usage: {BACKEND_USAGE}"));
    };
    let Some((name, spec)) = proxies.iter().find(|(n, _)| n == svc) else {
        let names: Vec<&str> = proxies.iter().map(|(n, _)| n.as_str()).collect();
        return err(format!("no proxy service {svc:?}; this engine's proxy services: {}", if names.is_empty() { "none".to_string() } else { names.join(", ") }));
    };
    let Ok(a) = addr.parse::<SocketAddrV4>() else {
        return err(format!("{addr:?}: expected a backend as IPv4 ADDR:PORT, like 198.18.0.12:80"));
    };
    let ip = *a.ip();
    if a.port() == 0 || ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback() {
        return err(format!("{addr}: not a unicast host address and port"));
    }
    let (mut weight, mut pool, mut force) = (1u32, DEFAULT_POOL, false);
    let mut rest = words[3..].iter();
    while let Some(&w) = rest.next() {
        match (op, w) {
            ("add", "--weight") => match rest.next().and_then(|v| v.parse().ok()) {
                Some(v) => weight = v,
                None => return err("--weight needs a number (1..=256)"),
            },
            ("add", "--pool") => match rest.next().copied() {
                Some("default") => pool = DEFAULT_POOL,
                Some(v) if v.parse::<u16>().is_ok_and(|p| p != DEFAULT_POOL) => pool = v.parse().unwrap_or(DEFAULT_POOL),
                _ => return err("--pool needs a [[service.pool]] index (as `ctl backends` lists them) or \"default\""),
            },
            ("remove", "--force") => force = true,
            _ => return err(format!("unexpected {w:?}; usage: {BACKEND_USAGE}")),
        }
    }
    if !owned(name) {
        return err(format!("this engine is not the active one for {name}: send pool changes to the active engine (its standby follows its pool)"));
    }
    let r = match op {
        "add" => spec.add_backend(a, weight, pool).map(|_| format!("added {a} to {name} (weight {weight})")),
        "drain" => spec.drain_backend(a).map(|i| format!("{a} is draining: no new connections, {} open ones finish", spec.backends[i].active.load(Relaxed))),
        "undrain" | "ready" => spec.undrain_backend(a).map(|_| format!("{a} takes new connections again")),
        "remove" => spec.remove_backend(a, force).map(|i| match spec.backends[i].active.load(Relaxed) {
            0 => format!("{a} removed from {name}"),
            n => format!("{a} is being removed: no new connections; its slot is freed once its {n} connection(s) ended"),
        }),
        _ => return err(format!("unknown backend operation {op:?}; usage: {BACKEND_USAGE}")),
    };
    match r {
        Ok(m) => serde_json::json!({ "ok": m }).to_string(),
        Err(e) => err(format!("{name}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowtwin_engine::service::proxy::Balance;
    use std::net::{Ipv4Addr, SocketAddrV4};

    #[test]
    fn metrics_and_ctl_name_every_backend() {
        let spec = ProxySpec::new(vec![SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 11), 80), SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 12), 80)], Balance::LeastConn, Ipv4Addr::new(10, 0, 0, 1), 4096);
        spec.backends[1].up.store(false, Relaxed);
        spec.backends[0].active.store(3, Relaxed);
        let p = vec![("10.0.0.1:80".to_string(), Arc::new(spec))];
        let mut out = String::new();
        render(&p, &mut out);
        assert!(out.contains("flowtwin_proxy_backend_connections{service=\"10.0.0.1:80\",backend=\"10.0.0.11:80\"} 3"), "{out}");
        assert!(out.contains("flowtwin_proxy_backend_up{service=\"10.0.0.1:80\",backend=\"10.0.0.12:80\"} 0"), "{out}");
        let j: serde_json::Value = serde_json::from_str(&backends_json(&p)).unwrap();
        let b = &j["services"][0]["backends"];
        assert_eq!((b[0]["state"].as_str(), b[1]["state"].as_str()), (Some("up"), Some("off")));
        assert_eq!((b[0]["admin_state"].as_str(), b[0]["weight"].as_u64()), (Some("ready"), Some(1)));
        assert_eq!(j["services"][0]["balance"], "least-conn");
        let mut none = String::new();
        render(&[], &mut none);
        assert!(none.is_empty());
    }

    fn svc() -> Vec<(String, Arc<ProxySpec>)> {
        let spec = ProxySpec::new(vec![SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 11), 80)], Balance::RoundRobin, Ipv4Addr::new(10, 0, 0, 1), 4096).with_slots(2);
        vec![("10.0.0.1:80".to_string(), Arc::new(spec))]
    }

    fn run(p: &[(String, Arc<ProxySpec>)], line: &str) -> serde_json::Value {
        let words: Vec<&str> = line.split_whitespace().collect();
        serde_json::from_str(&backend_cmd(p, &|_| true, &words)).unwrap()
    }

    #[test]
    fn backend_commands_and_their_errors() {
        let p = svc();
        let ok = run(&p, "add 10.0.0.1:80 10.0.0.12:80 --weight 3");
        assert!(ok["ok"].as_str().unwrap().contains("weight 3"), "{ok}");
        let cases = [
            ("add 10.0.0.9:80 10.0.0.13:80", "no proxy service \"10.0.0.9:80\"; this engine's proxy services: 10.0.0.1:80"),
            ("add 10.0.0.1:80 10.0.0.13", "expected a backend as IPv4 ADDR:PORT"),
            ("add 10.0.0.1:80 127.0.0.1:80", "not a unicast host"),
            ("add 10.0.0.1:80 10.0.0.12:80", "already in the pool (ready)"),
            ("add 10.0.0.1:80 10.0.0.13:80", "the pool is full: all 2 backend slots"),
            ("add 10.0.0.1:80 10.0.0.13:80 --weight x", "--weight needs a number"),
            ("add 10.0.0.1:80 10.0.0.13:80 --pool 0", "no pool 0"),
            ("remove 10.0.0.1:80 10.0.0.11:80", "drain it first"),
            ("drain 10.0.0.1:80 10.0.0.14:80", "no backend 10.0.0.14:80"),
            ("drain 10.0.0.1:80 10.0.0.11:80 --force", "unexpected \"--force\""),
            ("reboot 10.0.0.1:80 10.0.0.11:80", "unknown backend operation"),
            ("add", "usage: backend add SERVICE"),
        ];
        for (line, want) in cases {
            let e = run(&p, line);
            assert!(e["error"].as_str().is_some_and(|m| m.contains(want)), "{line}: {e}");
        }
        p[0].1.backends[0].active.store(2, Relaxed);
        assert!(run(&p, "drain 10.0.0.1:80 10.0.0.11:80")["ok"].as_str().unwrap().contains("2 open ones finish"));
        assert!(run(&p, "remove 10.0.0.1:80 10.0.0.11:80")["error"].as_str().unwrap().contains("still has 2 connection(s)"));
        let j: serde_json::Value = serde_json::from_str(&backends_json(&p)).unwrap();
        let b = &j["services"][0]["backends"];
        assert_eq!((b[0]["state"].as_str(), b[0]["connections"].as_u64()), (Some("draining"), Some(2)));
        assert_eq!((b[1]["weight"].as_u64(), b[1]["pools"][0].as_str()), (Some(3), Some("default")));
        assert!(run(&p, "remove 10.0.0.1:80 10.0.0.11:80 --force")["ok"].as_str().unwrap().contains("freed once its 2 connection(s) ended"));
        let j: serde_json::Value = serde_json::from_str(&backends_json(&p)).unwrap();
        assert_eq!(j["services"][0]["backends"][0]["state"], "removing");
        assert!(run(&p, "undrain 10.0.0.1:80 10.0.0.11:80")["error"].as_str().unwrap().contains("is removing: cannot undrain"));
        let standby: serde_json::Value = serde_json::from_str(&backend_cmd(&p, &|_| false, &["drain", "10.0.0.1:80", "10.0.0.12:80"])).unwrap();
        assert!(standby["error"].as_str().unwrap().contains("send pool changes to the active engine"), "{standby}");
        assert_eq!(p[0].1.backends[1].admin(), Admin::Ready, "the standby changed nothing");
    }

    #[test]
    fn bytes_and_connect_histogram_render_and_promtool_accepts_them() {
        let p = svc();
        let b = &p[0].1.backends[0];
        b.bytes_to.store(100, Relaxed);
        b.bytes_from.store(5000, Relaxed);
        b.connect.observe(300);
        b.connect.observe(30_000);
        let mut out = String::new();
        render(&p, &mut out);
        let l = |s: &str| assert!(out.lines().any(|x| x == s), "{s} not in\n{out}");
        l("flowtwin_proxy_backend_bytes_total{service=\"10.0.0.1:80\",backend=\"10.0.0.11:80\",direction=\"to_backend\"} 100");
        l("flowtwin_proxy_backend_bytes_total{service=\"10.0.0.1:80\",backend=\"10.0.0.11:80\",direction=\"from_backend\"} 5000");
        l("flowtwin_proxy_backend_connect_seconds_bucket{service=\"10.0.0.1:80\",backend=\"10.0.0.11:80\",le=\"0.0005\"} 1");
        l("flowtwin_proxy_backend_connect_seconds_bucket{service=\"10.0.0.1:80\",backend=\"10.0.0.11:80\",le=\"0.025\"} 1");
        l("flowtwin_proxy_backend_connect_seconds_bucket{service=\"10.0.0.1:80\",backend=\"10.0.0.11:80\",le=\"0.05\"} 2");
        l("flowtwin_proxy_backend_connect_seconds_bucket{service=\"10.0.0.1:80\",backend=\"10.0.0.11:80\",le=\"+Inf\"} 2");
        l("flowtwin_proxy_backend_connect_seconds_sum{service=\"10.0.0.1:80\",backend=\"10.0.0.11:80\"} 0.0303");
        l("flowtwin_proxy_backend_connect_seconds_count{service=\"10.0.0.1:80\",backend=\"10.0.0.11:80\"} 2");
        assert!(!out.contains("0.0.0.0:0"), "empty slots are not listed");
        assert!(!out.contains("backend_check"), "no check families without checks");
        // The same service with active checks, its backend down after 3 refusals.
        let spec = ProxySpec::new(vec![SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 11), 80)], Balance::RoundRobin, Ipv4Addr::new(10, 0, 0, 1), 4096)
            .with_slots(2)
            .with_check(flowtwin_engine::service::proxy::ActiveCheck::new(flowtwin_engine::service::proxy::CheckKind::Http));
        for t in 1..=3 {
            spec.backends[0].check.begin(t);
            spec.check_done(0, t, if t == 3 { CheckResult::BadStatus } else { CheckResult::Timeout }, 1500, if t == 3 { 503 } else { 0 });
        }
        let p = vec![("10.0.0.1:80".to_string(), Arc::new(spec))];
        let mut out = String::new();
        render(&p, &mut out);
        let l = |s: &str| assert!(out.lines().any(|x| x == s), "{s} not in\n{out}");
        l("flowtwin_proxy_backend_check_up{service=\"10.0.0.1:80\",backend=\"10.0.0.11:80\"} 0");
        l("flowtwin_proxy_backend_up{service=\"10.0.0.1:80\",backend=\"10.0.0.11:80\"} 0");
        l("flowtwin_proxy_backend_checks_total{service=\"10.0.0.1:80\",backend=\"10.0.0.11:80\",result=\"timeout\"} 2");
        l("flowtwin_proxy_backend_checks_total{service=\"10.0.0.1:80\",backend=\"10.0.0.11:80\",result=\"fail\"} 1");
        l("flowtwin_proxy_backend_checks_total{service=\"10.0.0.1:80\",backend=\"10.0.0.11:80\",result=\"ok\"} 0");
        l("flowtwin_proxy_backend_check_transitions_total{service=\"10.0.0.1:80\",backend=\"10.0.0.11:80\"} 1");
        l("flowtwin_proxy_backend_check_duration_seconds{service=\"10.0.0.1:80\",backend=\"10.0.0.11:80\"} 0.0015");
        let j: serde_json::Value = serde_json::from_str(&backends_json(&p)).unwrap();
        let (s, b) = (&j["services"][0], &j["services"][0]["backends"][0]);
        assert_eq!((b["state"].as_str(), b["check"]["state"].as_str(), b["check"]["last"].as_str()), (Some("down"), Some("down"), Some("unexpected status 503")), "{j}");
        assert_eq!((b["check"]["last_ms"].as_f64(), b["check"]["timeouts"].as_u64()), (Some(1.5), Some(2)));
        assert_eq!((s["health_check"]["kind"].as_str(), s["health_check"]["expect_status"].as_str(), s["health_check"]["http_path"].as_str()), (Some("http"), Some("200-399"), Some("/")));
        // The control loop logs each transition once, with its reason.
        let mut log = HealthLog::default();
        let first = crate::logs::testing::capture(crate::logs::Format::Human, "info", || log.poll(&p));
        assert!(first.is_empty(), "what happened before the first look is not news: {first}");
        let b0 = &p[0].1.backends[0];
        for t in 4..=5 {
            b0.check.begin(t);
            p[0].1.check_done(0, t, CheckResult::Ok, 900, 200);
        }
        let up = crate::logs::testing::capture(crate::logs::Format::Human, "info", || log.poll(&p));
        assert!(up.contains("service 10.0.0.1:80: backend 10.0.0.11:80 is up again (http check: ok (status 200); 2 successes in a row)"), "{up}");
        for t in 6..=8 {
            b0.check.begin(t);
            p[0].1.check_done(0, t, CheckResult::Refused, 900, 0);
        }
        let down = crate::logs::testing::capture(crate::logs::Format::Human, "info", || {
            log.poll(&p);
            log.poll(&p);
        });
        assert_eq!(down.matches("is down").count(), 1, "{down}");
        assert!(down.contains("backend 10.0.0.11:80 is down (http check: connect failed (refused or unanswered); 3 failures in a row); it gets no new connections"), "{down}");
        // Prometheus's own linter, where it is installed (Debian's prometheus package;
        // tests/e2e/groups.sh installs it on the rig).
        let Ok(mut child) = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
        else {
            eprintln!("promtool not installed: the exposition's format was checked above only");
            return;
        };
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(out.as_bytes()).unwrap();
        let r = child.wait_with_output().unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&r.stdout), String::from_utf8_lossy(&r.stderr));
        assert!(r.status.success() && said.trim().is_empty(), "promtool check metrics: {said}\n{out}");
    }
}
