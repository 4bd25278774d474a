//! Proxy services as an operator sees them: per-backend metrics on `/metrics` and
//! `flowtwin ctl backends`. Everything here reads the backends' shared counters
//! (`service::proxy::Backend`), which every worker updates when it opens or closes a
//! backend connection; nothing runs per packet.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use flowtwin_engine::service::proxy::{Backend, ProxySpec};
use flowtwin_engine::stack::{ServiceSpec, StackConfig};

use crate::metrics::{family, sample};

/// The proxy services of a config: ("vip:port", spec).
pub(super) fn of(cfg: &StackConfig) -> Vec<(String, Arc<ProxySpec>)> {
    cfg.listeners
        .iter()
        .filter_map(|l| match &l.spec {
            ServiceSpec::Proxy(p) => Some((format!("{}:{}", l.vip, l.port), p.clone())),
            _ => None,
        })
        .collect()
}

type Field = (&'static str, &'static str, &'static str, fn(&Backend) -> u64);

const FIELDS: [Field; 5] = [
    ("flowtwin_proxy_backend_up", "gauge", "1 if the backend may get new connections (not switched off, not resting after failures)", |b| {
        u64::from(b.up.load(Relaxed) && !b.resting())
    }),
    ("flowtwin_proxy_backend_connections", "gauge", "backend connections open now", |b| b.active.load(Relaxed)),
    ("flowtwin_proxy_backend_opened_total", "counter", "backend connections opened", |b| b.opened.load(Relaxed)),
    ("flowtwin_proxy_backend_failed_total", "counter", "backend connections that never connected (refused, unanswered, no next hop)", |b| {
        b.failed.load(Relaxed)
    }),
    ("flowtwin_proxy_backend_marked_down_total", "counter", "times passive health rested the backend (max_fails failures in a row)", |b| {
        b.marked_down.load(Relaxed)
    }),
];

/// Append the per-backend families (nothing without a proxy service).
pub(super) fn render(proxies: &[(String, Arc<ProxySpec>)], out: &mut String) {
    if proxies.is_empty() {
        return;
    }
    for (name, kind, help, get) in FIELDS {
        family(out, name, kind, help);
        for (svc, spec) in proxies {
            for b in &spec.backends {
                sample(out, name, &[("service", svc), ("backend", &b.addr.to_string())], get(b));
            }
        }
    }
}

/// `flowtwin ctl backends`: every proxy service, its balancing and its backends.
pub(super) fn backends_json(proxies: &[(String, Arc<ProxySpec>)]) -> String {
    let services: Vec<serde_json::Value> = proxies
        .iter()
        .map(|(svc, spec)| {
            let backends: Vec<serde_json::Value> = spec
                .backends
                .iter()
                .map(|b| {
                    serde_json::json!({
                        "backend": b.addr.to_string(),
                        "state": if !b.up.load(Relaxed) { "off" } else if b.resting() { "resting" } else { "up" },
                        "connections": b.active.load(Relaxed),
                        "opened": b.opened.load(Relaxed),
                        "failed": b.failed.load(Relaxed),
                        "marked_down": b.marked_down.load(Relaxed),
                    })
                })
                .collect();
            serde_json::json!({
                "service": svc,
                "balance": spec.balance.name(),
                "source": spec.source.to_string(),
                "buffer": spec.buf_size,
                "max_fails": spec.health.max_fails,
                "fail_timeout_ms": spec.health.fail_timeout.micros() / 1000,
                "backends": backends,
            })
        })
        .collect();
    serde_json::json!({ "services": services }).to_string()
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
        assert_eq!(j["services"][0]["balance"], "least-conn");
        let mut none = String::new();
        render(&[], &mut none);
        assert!(none.is_empty());
    }
}
