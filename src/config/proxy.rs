//! `kind = "proxy"` services: their keys, checked with every error naming its key, and the
//! engine's [`ProxySpec`] built from them.
//!
//! ```toml
//! [[service]]
//! vip = "198.18.0.100"
//! port = 8080
//! kind = "proxy"
//! backends = ["198.18.0.11:80", "198.18.0.12:80 weight=3"]   # weight 1..=256, default 1
//! max_backends = 64           # backend slots in all: room for `flowtwin ctl backend add`
//! balance = "round-robin"     # or "least-conn", "hash" (rendezvous hash of the client address)
//! proxy_buffer = 262144       # bytes per direction per connection (default 256 KiB)
//! source = "198.18.0.100"     # where backend connections come from (default: vip)
//! max_fails = 3               # failed connects in a row that mark a backend down (0: never)
//! fail_timeout_ms = 10000     # how long it then gets no new connection
//! connect_retries = 2         # SYNs resent before a backend connect fails (1 s RTO: 7 s)
//! commit = "peer"             # "peer": a side's bytes are acknowledged once the other side's
//!                             # peer has them (nothing relayed is replicated); "standby": once
//!                             # the standby holds them (every byte relayed is replicated)
//! mode = "http"               # "tcp" (at once), "http" (Host, path), "tls" (SNI)
//! max_request_head = 16384    # bytes of the first request head / ClientHello read to choose
//! health_check = "http"       # active checks: "tcp" (connect) or "http" (GET, status); off if unset
//! health_interval_ms = 2000   # between two checks of one backend (100..=3600000)
//! health_timeout_ms = 1000    # a check that takes longer fails (10..=health_interval_ms)
//! health_rise = 2             # successes in a row that bring a down backend up (1..=100)
//! health_fall = 3             # failures in a row that take a backend down (1..=100)
//! health_http_path = "/"      # http: the path asked for (GET path HTTP/1.0)
//! health_http_host = "app"    # http: the Host header (default none)
//! health_expect_status = "200-399"  # http: accepted codes, "NNN" or "NNN-NNN"
//! health_port = 8081          # check this port instead of each backend's own
//! [[service.pool]]            # in order; the first that matches wins, `backends` take the rest
//! host = "api.example"        # exact (case-insensitive, port stripped); HTTP Host or TLS SNI
//! path_prefix = "/v2/"        # HTTP only
//! backends = ["198.18.0.12:80"]
//! ```

use std::net::{Ipv4Addr, SocketAddrV4};

use flowtwin_engine::service::proxy::{Balance, Commit, Health, ProxySpec, DEFAULT_BUF_SIZE, DEFAULT_COMMIT, DEFAULT_MAX_BACKENDS, MAX_WEIGHT};
use flowtwin_engine::time::Duration;

use serde::{Deserialize, Serialize};

use flowtwin_engine::service::proxy::{ActiveCheck, CheckKind, Mode, Pool};

use super::{Config, ServiceKind, ServiceSection};

/// `[[service.pool]]` of a proxy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSection {
    pub host: Option<String>,
    pub path_prefix: Option<String>,
    pub backends: Vec<String>,
}

/// Every backend of a service with its weight, its default pool and its pools (indices into
/// the first).
type Backends = (Vec<(SocketAddrV4, u32)>, Vec<usize>, Vec<Pool>);

/// Pools one proxy service may have.
pub const MAX_POOLS: usize = 64;

/// Backends one proxy service may have.
pub const MAX_BACKENDS: usize = 256;

impl ServiceSection {
    /// One list of backends, parsed (errors name the key `key`).
    fn parse_backends(key: &str, list: &[String]) -> Result<Vec<(SocketAddrV4, u32)>, String> {
        if list.len() > MAX_BACKENDS {
            return Err(format!("{key}: {} backends, at most {MAX_BACKENDS}", list.len()));
        }
        let mut out: Vec<(SocketAddrV4, u32)> = Vec::with_capacity(list.len());
        for (j, b) in list.iter().enumerate() {
            let mut words = b.split_whitespace();
            let a: SocketAddrV4 = words
                .next()
                .unwrap_or_default()
                .parse()
                .map_err(|_| format!("{key}[{j}] = {b:?}: expected an IPv4 address and port, like \"10.0.0.11:80\" or \"10.0.0.11:80 weight=2\""))?;
            let mut weight = 1;
            for w in words {
                weight = w
                    .strip_prefix("weight=")
                    .and_then(|n| n.parse().ok())
                    .filter(|n| (1..=MAX_WEIGHT).contains(n))
                    .ok_or_else(|| format!("{key}[{j}] = {b:?}: {w:?}: expected weight=N, N in 1..={MAX_WEIGHT}"))?;
            }
            let ip = *a.ip();
            if a.port() == 0 || ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback() {
                return Err(format!("{key}[{j}] = {b:?}: not a unicast host address and port"));
            }
            if out.iter().any(|(x, _)| *x == a) {
                return Err(format!("{key}[{j}] = {b:?}: listed twice"));
            }
            out.push((a, weight));
        }
        Ok(out)
    }

    /// Every backend of the service (the default ones, then each pool's new ones), the
    /// default pool and the pools as indices into it (errors name the key).
    fn backend_addrs(&self, i: usize) -> Result<Backends, String> {
        let list = self.backends.as_deref().unwrap_or_default();
        if list.is_empty() && self.pools.is_empty() {
            return Err(format!("service[{i}].backends: a proxy needs at least one backend, e.g. backends = [\"10.0.0.11:80\"]"));
        }
        if self.pools.len() > MAX_POOLS {
            return Err(format!("service[{i}].pool: {} pools, at most {MAX_POOLS}", self.pools.len()));
        }
        let mut all = Self::parse_backends(&format!("service[{i}].backends"), list)?;
        let default: Vec<usize> = (0..all.len()).collect();
        let mut pools = Vec::with_capacity(self.pools.len());
        for (k, p) in self.pools.iter().enumerate() {
            let key = format!("service[{i}].pool[{k}]");
            let addrs = Self::parse_backends(&format!("{key}.backends"), &p.backends)?;
            if addrs.is_empty() {
                return Err(format!("{key}.backends: a pool needs at least one backend"));
            }
            if p.host.is_none() && p.path_prefix.is_none() {
                return Err(format!("{key}: give host, path_prefix or both (the service's backends take whatever no pool matches)"));
            }
            if let Some(h) = &p.host {
                if h.is_empty() || h.contains(':') || h.bytes().any(|c| c.is_ascii_whitespace()) {
                    return Err(format!("{key}.host = {h:?}: a host name without port"));
                }
            }
            if let Some(pp) = &p.path_prefix {
                if !pp.starts_with('/') {
                    return Err(format!("{key}.path_prefix = {pp:?}: must start with /"));
                }
            }
            let mut idx = Vec::with_capacity(addrs.len());
            for (a, w) in addrs {
                let at = match all.iter().position(|x| x.0 == a) {
                    Some(at) if all[at].1 != w => {
                        return Err(format!("{key}.backends: {a} has weight {w} here and {} elsewhere (one backend, one weight)", all[at].1))
                    }
                    Some(at) => at,
                    None => {
                        all.push((a, w));
                        all.len() - 1
                    }
                };
                idx.push(at);
            }
            pools.push(Pool { host: p.host.as_ref().map(|h| h.to_ascii_lowercase()), path_prefix: p.path_prefix.clone(), backends: idx });
        }
        if all.len() > MAX_BACKENDS {
            return Err(format!("service[{i}]: {} backends in all, at most {MAX_BACKENDS}", all.len()));
        }
        Ok((all, default, pools))
    }

    fn mode_of(&self, i: usize) -> Result<Mode, String> {
        match self.mode.as_deref() {
            None => Ok(Mode::Tcp),
            Some(m) => Mode::parse(m).ok_or_else(|| format!("service[{i}].mode = {m:?}: expected \"tcp\", \"http\" or \"tls\"")),
        }
    }

    fn commit_of(&self, i: usize) -> Result<Commit, String> {
        match self.commit.as_deref() {
            None => Ok(DEFAULT_COMMIT),
            Some(c) => Commit::parse(c).ok_or_else(|| format!("service[{i}].commit = {c:?}: expected \"peer\" or \"standby\"")),
        }
    }

    fn balance_of(&self, i: usize) -> Result<Balance, String> {
        match self.balance.as_deref() {
            None => Ok(Balance::default()),
            Some(s) => Balance::parse(s).ok_or_else(|| format!("service[{i}].balance = {s:?}: expected \"round-robin\", \"least-conn\" or \"hash\"")),
        }
    }

    /// The active health check settings of `service[i]` (None: off), checked (errors name the
    /// key).
    fn check_of(&self, i: usize) -> Result<Option<ActiveCheck>, String> {
        let key = |k: &str| format!("service[{i}].{k}");
        let Some(kind) = self.health_check.as_deref() else {
            let set = [
                ("health_interval_ms", self.health_interval_ms.is_some()),
                ("health_timeout_ms", self.health_timeout_ms.is_some()),
                ("health_rise", self.health_rise.is_some()),
                ("health_fall", self.health_fall.is_some()),
                ("health_http_path", self.health_http_path.is_some()),
                ("health_http_host", self.health_http_host.is_some()),
                ("health_expect_status", self.health_expect_status.is_some()),
                ("health_port", self.health_port.is_some()),
            ];
            if let Some((k, _)) = set.iter().find(|(_, s)| *s) {
                return Err(format!("{}: needs health_check = \"tcp\" or \"http\" (active checks are off without it)", key(k)));
            }
            return Ok(None);
        };
        let kind = CheckKind::parse(kind).ok_or_else(|| format!("{} = {kind:?}: expected \"tcp\" (connect) or \"http\" (GET, expected status)", key("health_check")))?;
        let mut c = ActiveCheck::new(kind);
        if let Some(v) = self.health_interval_ms {
            if !(100..=3_600_000).contains(&v) {
                return Err(format!("{} = {v}: must be 100..=3600000", key("health_interval_ms")));
            }
            c.interval = Duration::from_millis(v);
        }
        if let Some(v) = self.health_timeout_ms {
            let max = c.interval.micros() / 1000;
            if !(10..=max).contains(&v) {
                return Err(format!("{} = {v}: must be 10..=health_interval_ms ({max})", key("health_timeout_ms")));
            }
            c.timeout = Duration::from_millis(v);
        } else if c.timeout.micros() > c.interval.micros() {
            c.timeout = c.interval;
        }
        for (k, v, at) in [("health_rise", self.health_rise, &mut c.rise), ("health_fall", self.health_fall, &mut c.fall)] {
            if let Some(v) = v {
                if !(1..=100).contains(&v) {
                    return Err(format!("{} = {v}: must be 1..=100", key(k)));
                }
                *at = v;
            }
        }
        if let Some(p) = self.health_port {
            if p == 0 {
                return Err(format!("{} = 0: must be 1..=65535 (or unset: each backend's own port)", key("health_port")));
            }
            c.port = Some(p);
        }
        let http_only = [
            ("health_http_path", self.health_http_path.is_some()),
            ("health_http_host", self.health_http_host.is_some()),
            ("health_expect_status", self.health_expect_status.is_some()),
        ];
        if kind == CheckKind::Tcp {
            if let Some((k, _)) = http_only.iter().find(|(_, s)| *s) {
                return Err(format!("{}: only with health_check = \"http\"", key(k)));
            }
            return Ok(Some(c));
        }
        let token = |s: &str| !s.is_empty() && s.len() <= 1024 && s.bytes().all(|b| b.is_ascii_graphic());
        let path = self.health_http_path.as_deref().unwrap_or("/");
        if !path.starts_with('/') || !token(path) {
            return Err(format!("{} = {path:?}: a path starting with / without spaces or control characters (at most 1024 bytes)", key("health_http_path")));
        }
        if let Some(h) = self.health_http_host.as_deref() {
            if !token(h) {
                return Err(format!("{} = {h:?}: a host name (optionally :port) without spaces or control characters", key("health_http_host")));
            }
        }
        if let Some(e) = self.health_expect_status.as_deref() {
            c.expect = ActiveCheck::parse_expect(e).ok_or_else(|| format!("{} = {e:?}: expected a status \"200\" or a range \"200-399\" (100..=599)", key("health_expect_status")))?;
        }
        Ok(Some(c.with_request(path, self.health_http_host.as_deref())))
    }

    /// The engine's spec of proxy `service[i]`.
    pub(super) fn proxy_spec(&self, i: usize) -> Result<ProxySpec, String> {
        let buf = self.proxy_buffer.map_or(DEFAULT_BUF_SIZE, |b| b as usize);
        let d = Health::default();
        let health = Health {
            max_fails: self.max_fails.unwrap_or(d.max_fails),
            fail_timeout: self.fail_timeout_ms.map_or(d.fail_timeout, Duration::from_millis),
        };
        let (all, default, pools) = self.backend_addrs(i)?;
        let slots = self.max_backends.map_or(DEFAULT_MAX_BACKENDS.max(all.len()), |m| m as usize);
        let mut spec = ProxySpec::new(all.iter().map(|b| b.0).collect(), self.balance_of(i)?, self.source.unwrap_or(self.vip), buf)
            .with_health(health)
            .with_slots(slots)
            .with_pools(&default, pools);
        for (b, (_, w)) in spec.backends.iter().zip(&all) {
            b.weight.store(*w, std::sync::atomic::Ordering::Relaxed);
        }
        spec.connect_retries = self.connect_retries.unwrap_or(spec.connect_retries);
        spec.mode = self.mode_of(i)?;
        spec.commit = self.commit_of(i)?;
        if let Some(m) = self.max_request_head {
            spec.max_head = m as usize;
        }
        spec.check = self.check_of(i)?;
        Ok(spec)
    }
}

impl Config {
    /// The proxy keys of `service[i]`: only on a proxy, and consistent.
    pub(super) fn validate_proxy(&self, i: usize, s: &ServiceSection) -> Result<(), String> {
        if s.kind != ServiceKind::Proxy {
            let keys = [
                ("backends", s.backends.is_some()),
                ("balance", s.balance.is_some()),
                ("proxy_buffer", s.proxy_buffer.is_some()),
                ("source", s.source.is_some()),
                ("max_fails", s.max_fails.is_some()),
                ("fail_timeout_ms", s.fail_timeout_ms.is_some()),
                ("connect_retries", s.connect_retries.is_some()),
                ("mode", s.mode.is_some()),
                ("commit", s.commit.is_some()),
                ("max_request_head", s.max_request_head.is_some()),
                ("max_backends", s.max_backends.is_some()),
                ("pool", !s.pools.is_empty()),
                ("health_check", s.health_check.is_some()),
                ("health_interval_ms", s.health_interval_ms.is_some()),
                ("health_timeout_ms", s.health_timeout_ms.is_some()),
                ("health_rise", s.health_rise.is_some()),
                ("health_fall", s.health_fall.is_some()),
                ("health_http_path", s.health_http_path.is_some()),
                ("health_http_host", s.health_http_host.is_some()),
                ("health_expect_status", s.health_expect_status.is_some()),
                ("health_port", s.health_port.is_some()),
            ];
            for (key, set) in keys {
                if set {
                    return Err(format!("service[{i}].{key}: only valid for kind = \"proxy\""));
                }
            }
            return Ok(());
        }
        let (backends, _, _) = s.backend_addrs(i)?;
        if let Some(m) = s.max_backends {
            if (m as usize) < backends.len() || m as usize > MAX_BACKENDS {
                return Err(format!("service[{i}].max_backends = {m}: must be {}..={MAX_BACKENDS} (at least the configured backends)", backends.len().max(1)));
            }
        }
        s.balance_of(i)?;
        s.commit_of(i)?;
        s.check_of(i)?;
        let mode = s.mode_of(i)?;
        if mode == Mode::Tcp && !s.pools.is_empty() {
            return Err(format!("service[{i}].pool: pools choose by host or path: give mode = \"http\" or \"tls\""));
        }
        if mode == Mode::Tls && s.pools.iter().any(|p| p.path_prefix.is_some()) {
            return Err(format!("service[{i}].pool: path_prefix needs mode = \"http\" (a TLS ClientHello has no path)"));
        }
        let buf = s.proxy_buffer.unwrap_or(flowtwin_engine::service::proxy::DEFAULT_BUF_SIZE as u32);
        if let Some(m) = s.max_request_head {
            if m < 256 || m > buf {
                return Err(format!("service[{i}].max_request_head = {m}: must be 256..=proxy_buffer ({buf})"));
            }
        }
        if let Some(b) = s.proxy_buffer {
            if !(1024..=(64 << 20)).contains(&b) {
                return Err(format!("service[{i}].proxy_buffer = {b}: must be 1024..=67108864"));
            }
        }
        if let Some(n) = s.connect_retries {
            if n > 10 {
                return Err(format!("service[{i}].connect_retries = {n}: at most 10 (the SYN backoff doubles each time)"));
            }
        }
        if let Some(t) = s.fail_timeout_ms {
            if t == 0 || t > 3_600_000 {
                return Err(format!("service[{i}].fail_timeout_ms = {t}: must be 1..=3600000"));
            }
        }
        let source = s.source.unwrap_or(s.vip);
        if !self.vips.iter().any(|v| v.addr == source) {
            return Err(format!("service[{i}].source = {source}: no [[vip]] with that addr (backend connections come from one of the engine's VIPs)"));
        }
        if self.group_of(source) != self.group_of(s.vip) {
            return Err(format!(
                "service[{i}].source = {source}: in another [[group]] than the service's vip {} (both halves of a connection move together)",
                s.vip
            ));
        }
        let routes = self.route_table()?;
        for (j, (b, _)) in backends.iter().enumerate() {
            let ip: Ipv4Addr = *b.ip();
            if self.vips.iter().any(|v| v.addr == ip) {
                return Err(format!("service[{i}].backends[{j}] = \"{b}\": one of this engine's VIPs"));
            }
            if routes.next_hop(ip).is_none() {
                return Err(format!("service[{i}].backends[{j}] = \"{b}\": no route to {ip} (in no [[vip]]'s subnet, and no [[route]] covers it)"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::MIN;
    use super::super::Config;

    fn proxy(keys: &str) -> String {
        let vip = MIN.split("[[vip]]").nth(1).and_then(|v| v.split('"').nth(1)).unwrap_or("198.18.0.100").to_string();
        format!("{MIN}\n[[service]]\nvip = \"{vip}\"\nport = 8080\nkind = \"proxy\"\n{keys}\n")
    }

    #[test]
    fn proxy_parses() {
        let c = Config::parse(&proxy("backends = [\"198.18.0.11:80\", \"198.18.0.12:80\"]\nbalance = \"least-conn\"\nproxy_buffer = 65536")).expect("valid");
        let s = c.services.last().unwrap();
        let spec = s.proxy_spec(c.services.len() - 1).unwrap();
        assert_eq!(spec.backends.len(), 64, "2 configured, the rest spare slots");
        assert_eq!(spec.backends[1].addr().to_string(), "198.18.0.12:80");
        assert_eq!(spec.backends[2].admin(), flowtwin_engine::service::proxy::Admin::Empty);
        assert_eq!(spec.buf_size, 65536);
        assert_eq!(spec.balance.name(), "least-conn");
        assert_eq!(spec.source, s.vip);
    }

    #[test]
    fn weights_and_slots_parse() {
        let c = Config::parse(&proxy("backends = [\"198.18.0.11:80 weight=5\", \"198.18.0.12:80\", \" 198.18.0.13:80   weight=256 \"]\nmax_backends = 8")).expect("valid");
        let spec = c.services.last().unwrap().proxy_spec(c.services.len() - 1).unwrap();
        let w: Vec<u32> = spec.backends.iter().take(3).map(|b| b.weight.load(std::sync::atomic::Ordering::Relaxed)).collect();
        assert_eq!(w, [5, 1, 256]);
        assert_eq!(spec.backends.len(), 8);
        // Old configs (plain "ip:port") keep weight 1 and get the default slots.
        let c = Config::parse(&proxy("backends = [\"198.18.0.11:80\"]")).expect("valid");
        let spec = c.services.last().unwrap().proxy_spec(c.services.len() - 1).unwrap();
        assert_eq!((spec.backends.len(), spec.backends[0].weight.load(std::sync::atomic::Ordering::Relaxed)), (64, 1));
    }

    #[test]
    fn commit_parses_with_its_default() {
        let spec = |keys: &str| {
            let c = Config::parse(&proxy(&format!("backends = [\"198.18.0.11:80\"]\n{keys}"))).expect(keys);
            c.services.last().unwrap().proxy_spec(c.services.len() - 1).unwrap()
        };
        use flowtwin_engine::service::proxy::{Commit, DEFAULT_COMMIT};
        assert_eq!(spec("").commit, DEFAULT_COMMIT);
        assert_eq!(spec("commit = \"peer\"").commit, Commit::Peer);
        assert_eq!(spec("commit = \"standby\"").commit, Commit::Standby);
    }

    #[test]
    fn pools_parse_into_one_backend_list() {
        let keys = "mode = \"http\"\nbackends = [\"198.18.0.11:80\"]\n[[service.pool]]\nhost = \"API.example\"\nbackends = [\"198.18.0.12:80\", \"198.18.0.11:80\"]\n[[service.pool]]\npath_prefix = \"/v2/\"\nbackends = [\"198.18.0.13:80\"]";
        let c = Config::parse(&proxy(keys)).expect("valid");
        let spec = c.services.last().unwrap().proxy_spec(c.services.len() - 1).unwrap();
        assert_eq!(spec.find("198.18.0.13:80".parse().unwrap()), Some(2), "each address once");
        let members = |p: u16| (0..3).filter(|&i| spec.backends[i].member(p)).collect::<Vec<_>>();
        assert_eq!(members(flowtwin_engine::service::proxy::DEFAULT_POOL), [0]);
        assert_eq!((members(0), members(1)), (vec![0, 1], vec![2]));
        assert_eq!(spec.pools[0].host.as_deref(), Some("api.example"));
        assert_eq!(spec.pools[0].backends, [1, 0]);
        assert_eq!(spec.pools[1].backends, [2]);
        assert_eq!(spec.mode, flowtwin_engine::service::proxy::Mode::Http);
    }

    #[test]
    fn health_checks_parse_with_defaults() {
        let spec = |keys: &str| {
            let c = Config::parse(&proxy(&format!("backends = [\"198.18.0.11:80\"]\n{keys}"))).expect(keys);
            c.services.last().unwrap().proxy_spec(c.services.len() - 1).unwrap()
        };
        assert!(spec("").check.is_none(), "off unless configured");
        let c = spec("health_check = \"tcp\"").check.unwrap();
        assert_eq!((c.kind.name(), c.interval.micros(), c.timeout.micros(), c.rise, c.fall, c.port), ("tcp", 2_000_000, 1_000_000, 2, 3, None));
        let c = spec("health_check = \"http\"\nhealth_interval_ms = 500\nhealth_rise = 1\nhealth_fall = 2\nhealth_http_path = \"/healthz\"\nhealth_http_host = \"app.example\"\nhealth_expect_status = \"200\"\nhealth_port = 8081").check.unwrap();
        assert_eq!((c.interval.micros(), c.timeout.micros(), c.rise, c.fall, c.port, c.expect), (500_000, 500_000, 1, 2, Some(8081), (200, 200)), "the timeout is at most the interval");
        assert_eq!(c.request(), b"GET /healthz HTTP/1.0\r\nHost: app.example\r\nUser-Agent: flowtwin-health\r\nAccept: */*\r\nConnection: close\r\n\r\n");
        assert_eq!(spec("health_check = \"http\"").check.unwrap().expect_name(), "200-399");
    }

    #[test]
    fn proxy_errors_name_the_key() {
        let cases = [
            ("", "backends"),
            ("backends = []", "backends"),
            ("backends = [\"198.18.0.11\"]", "backends[0]"),
            ("backends = [\"198.18.0.11:0\"]", "backends[0]"),
            ("backends = [\"198.18.0.11:80\", \"198.18.0.11:80\"]", "listed twice"),
            ("backends = [\"203.0.113.5:80\"]", "no route"),
            ("backends = [\"198.18.0.11:80\"]\nbalance = \"random\"", "balance"),
            ("backends = [\"198.18.0.11:80\"]\nproxy_buffer = 10", "proxy_buffer"),
            ("backends = [\"198.18.0.11:80\"]\ncommit = \"eventually\"", "commit = \"eventually\": expected \"peer\" or \"standby\""),
            ("backends = [\"198.18.0.11:80\"]\nsource = \"198.18.0.77\"", "source"),
            ("backends = [\"198.18.0.11:80\"]\nfail_timeout_ms = 0", "fail_timeout_ms"),
            ("backends = [\"198.18.0.11:80\"]\nmode = \"udp\"", "mode"),
            ("backends = [\"198.18.0.11:80\"]\n[[service.pool]]\nhost = \"a\"\nbackends = [\"198.18.0.12:80\"]", "mode = \"http\""),
            ("mode = \"http\"\n[[service.pool]]\nbackends = [\"198.18.0.12:80\"]", "pool[0]"),
            ("mode = \"tls\"\n[[service.pool]]\npath_prefix = \"/a\"\nbackends = [\"198.18.0.12:80\"]", "path_prefix"),
            ("mode = \"http\"\n[[service.pool]]\nhost = \"a:80\"\nbackends = [\"198.18.0.12:80\"]", "pool[0].host"),
            ("mode = \"http\"\nbackends = [\"198.18.0.11:80\"]\nmax_request_head = 10", "max_request_head"),
            ("backends = [\"198.18.0.11:80 weight=0\"]", "weight=N"),
            ("backends = [\"198.18.0.11:80 weight=257\"]", "weight=N"),
            ("backends = [\"198.18.0.11:80 wait=2\"]", "weight=N"),
            ("backends = [\"198.18.0.11:80\", \"198.18.0.12:80\"]\nmax_backends = 1", "max_backends"),
            ("backends = [\"198.18.0.11:80\"]\nmax_backends = 300", "max_backends"),
            ("mode = \"http\"\nbackends = [\"198.18.0.11:80 weight=2\"]\n[[service.pool]]\nhost = \"a\"\nbackends = [\"198.18.0.11:80\"]", "one backend, one weight"),
            ("backends = [\"198.18.0.11:80\"]\nhealth_check = \"icmp\"", "health_check = \"icmp\""),
            ("backends = [\"198.18.0.11:80\"]\nhealth_interval_ms = 1000", "health_interval_ms: needs health_check"),
            ("backends = [\"198.18.0.11:80\"]\nhealth_check = \"tcp\"\nhealth_interval_ms = 10", "health_interval_ms = 10"),
            ("backends = [\"198.18.0.11:80\"]\nhealth_check = \"tcp\"\nhealth_timeout_ms = 3000", "health_timeout_ms = 3000: must be 10..=health_interval_ms (2000)"),
            ("backends = [\"198.18.0.11:80\"]\nhealth_check = \"tcp\"\nhealth_rise = 0", "health_rise = 0"),
            ("backends = [\"198.18.0.11:80\"]\nhealth_check = \"tcp\"\nhealth_fall = 101", "health_fall = 101"),
            ("backends = [\"198.18.0.11:80\"]\nhealth_check = \"tcp\"\nhealth_port = 0", "health_port = 0"),
            ("backends = [\"198.18.0.11:80\"]\nhealth_check = \"tcp\"\nhealth_http_path = \"/\"", "health_http_path: only with health_check = \"http\""),
            ("backends = [\"198.18.0.11:80\"]\nhealth_check = \"http\"\nhealth_http_path = \"healthz\"", "health_http_path = \"healthz\""),
            ("backends = [\"198.18.0.11:80\"]\nhealth_check = \"http\"\nhealth_http_path = \"/a b\"", "health_http_path"),
            ("backends = [\"198.18.0.11:80\"]\nhealth_check = \"http\"\nhealth_http_host = \"a\\r\\nX: y\"", "health_http_host"),
            ("backends = [\"198.18.0.11:80\"]\nhealth_check = \"http\"\nhealth_expect_status = \"2xx\"", "health_expect_status = \"2xx\""),
            ("backends = [\"198.18.0.11:80\"]\nhealth_check = \"http\"\nhealth_expect_status = \"399-200\"", "health_expect_status"),
        ];
        for (keys, want) in cases {
            let e = Config::parse(&proxy(keys)).expect_err(keys);
            assert!(e.contains(want) && e.contains("service["), "{keys}: {e}");
        }
        let echo_with_backends = format!("{MIN}\n[[service]]\nvip = \"198.18.0.100\"\nport = 9\nkind = \"echo\"\nbackends = [\"198.18.0.11:80\"]\n");
        let e = Config::parse(&echo_with_backends).expect_err("backends on echo");
        assert!(e.contains("only valid for kind = \"proxy\""), "{e}");
        // Out of u16: the TOML reader names the line and key.
        let e = Config::parse(&proxy("backends = [\"198.18.0.11:80\"]\nhealth_check = \"tcp\"\nhealth_port = 70000")).expect_err("port");
        assert!(e.contains("health_port"), "{e}");
        let echo_with_check = format!("{MIN}\n[[service]]\nvip = \"198.18.0.100\"\nport = 9\nkind = \"echo\"\nhealth_check = \"tcp\"\n");
        let e = Config::parse(&echo_with_check).expect_err("health_check on echo");
        assert!(e.contains("health_check: only valid for kind = \"proxy\""), "{e}");
    }
}
