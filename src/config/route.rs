//! `[[route]]` and the VIPs' subnets (`[[vip]] prefix_len`): the engine's routing table
//! (`flowtwin_engine::route`), built and checked here with every error naming its key.

use serde::{Deserialize, Serialize};

use flowtwin_engine::route::{Prefix, Route, RouteErrorKind, RouteTable, MAX_ROUTES};

use super::Config;

/// `[[route]]`: frames toward `prefix` go to the gateway `via` (on-link), or, without `via`,
/// to the destination itself (the prefix is on-link too).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    /// The destination, `a.b.c.d/n`; `0.0.0.0/0` is the default route.
    pub prefix: String,
    /// The gateway's address; it must be on-link (in a VIP's subnet, or a route without `via`).
    pub via: Option<String>,
}

impl Config {
    /// The routing table: each VIP's subnet on-link, then the `[[route]]`s, longest prefix
    /// first. Errors name the key (a bad prefix, a gateway not on-link, a prefix twice).
    pub fn route_table(&self) -> Result<RouteTable, String> {
        let mut ours = Vec::with_capacity(self.vips.len());
        for (i, v) in self.vips.iter().enumerate() {
            let p = Prefix::containing(v.addr, v.prefix_len).map_err(|e| format!("vip[{i}].prefix_len = {}: {e}", v.prefix_len))?;
            ours.push((v.addr, p));
        }
        if self.routes.len() > MAX_ROUTES {
            return Err(format!("{} [[route]] sections: at most {MAX_ROUTES} per engine", self.routes.len()));
        }
        let mut routes = Vec::with_capacity(self.routes.len());
        for (i, r) in self.routes.iter().enumerate() {
            let prefix = r.prefix.parse::<Prefix>().map_err(|e| format!("route[{i}].prefix = {:?}: {e}", r.prefix))?;
            let via = match &r.via {
                None => None,
                Some(s) => Some(s.parse().map_err(|_| format!("route[{i}].via = {s:?}: not an IPv4 address"))?),
            };
            routes.push(Route { prefix, via });
        }
        RouteTable::new(&ours, &routes).map_err(|e| {
            let i = e.index;
            let Some(r) = self.routes.get(i) else { return e.to_string() };
            let via = r.via.as_deref().unwrap_or_default();
            match e.kind {
                RouteErrorKind::Duplicate { first: Some(j) } => format!("route[{i}].prefix = {:?}: route[{j}] has the same prefix", r.prefix),
                RouteErrorKind::Duplicate { first: None } => {
                    let vip = ours.iter().position(|&(_, p)| p == routes[i].prefix).map(|j| (j, &self.vips[j]));
                    match vip {
                        Some((j, v)) => format!(
                            "route[{i}].prefix = {:?}: the subnet of vip[{j}] ({}, prefix_len {}), on-link already (its hosts are reached directly)",
                            r.prefix, v.addr, v.prefix_len
                        ),
                        None => format!("route[{i}].prefix = {:?}: {e}", r.prefix),
                    }
                }
                RouteErrorKind::ViaNotOnLink(_) => format!(
                    "route[{i}].via = {via:?}: not on-link: in no [[vip]]'s subnet (addr/prefix_len) and no [[route]] without via, so nothing resolves it"
                ),
                _ => format!("route[{i}].via = {via:?}: {e}"),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::MIN;
    use super::super::Config;
    use std::net::Ipv4Addr;

    fn with(routes: &str) -> String {
        format!("{MIN}\n{routes}\n")
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn routes_parse_into_a_table_with_the_vip_subnet_on_link() {
        let text = with(
            r#"
            [[route]]
            prefix = "10.0.0.0/8"
            via = "198.18.0.1"
            [[route]]
            prefix = "0.0.0.0/0"
            via = "198.18.0.254"
            "#,
        );
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.vips[0].prefix_len, 24, "the default subnet");
        let t = c.route_table().unwrap();
        assert_eq!(t.next_hop(ip("10.2.3.4")), Some(ip("198.18.0.1")));
        assert_eq!(t.next_hop(ip("8.8.8.8")), Some(ip("198.18.0.254")));
        assert_eq!(t.next_hop(ip("198.18.0.7")), Some(ip("198.18.0.7")), "on-link: the VIP's /24");
        // Without routes: the subnet only.
        let t = Config::parse(MIN).unwrap().route_table().unwrap();
        assert_eq!((t.next_hop(ip("198.18.0.7")), t.next_hop(ip("10.2.3.4"))), (Some(ip("198.18.0.7")), None));
        // A wider subnet, and a route without a gateway.
        let wide = MIN.replacen("addr = \"198.18.0.100\"", "addr = \"198.18.0.100\"\nprefix_len = 15", 1);
        let wide = format!("{wide}\n[[route]]\nprefix = \"203.0.113.0/24\"\n");
        let t = Config::parse(&wide).unwrap().route_table().unwrap();
        assert_eq!(t.next_hop(ip("198.19.4.4")), Some(ip("198.19.4.4")));
        assert_eq!(t.next_hop(ip("203.0.113.9")), Some(ip("203.0.113.9")));
    }

    #[test]
    fn route_errors_name_the_key() {
        let err = |routes: &str| Config::parse(&with(routes)).unwrap_err();
        let e = err("[[route]]\nprefix = \"10.0.0.0/33\"\nvia = \"198.18.0.1\"");
        assert!(e.contains("route[0].prefix = \"10.0.0.0/33\"") && e.contains("at most 32"), "{e}");
        let e = err("[[route]]\nprefix = \"10.1.0.0/8\"\nvia = \"198.18.0.1\"");
        assert!(e.contains("route[0].prefix = \"10.1.0.0/8\"") && e.contains("host bits set (the network is 10.0.0.0/8)"), "{e}");
        let e = err("[[route]]\nprefix = \"10.0.0.0\"\nvia = \"198.18.0.1\"");
        assert!(e.contains("route[0].prefix = \"10.0.0.0\": not an IPv4 prefix"), "{e}");
        let e = err("[[route]]\nprefix = \"10.0.0.0/8\"\nvia = \"gateway\"");
        assert!(e.contains("route[0].via = \"gateway\": not an IPv4 address"), "{e}");
        let e = err("[[route]]\nprefix = \"0.0.0.0/0\"\nvia = \"192.168.1.1\"");
        assert!(e.contains("route[0].via = \"192.168.1.1\": not on-link"), "{e}");
        let e = err("[[route]]\nprefix = \"10.0.0.0/8\"\nvia = \"198.18.0.1\"\n[[route]]\nprefix = \"10.0.0.0/8\"\nvia = \"198.18.0.2\"");
        assert!(e.contains("route[1].prefix = \"10.0.0.0/8\": route[0] has the same prefix"), "{e}");
        let e = err("[[route]]\nprefix = \"198.18.0.0/24\"\nvia = \"198.18.0.1\"");
        assert!(e.contains("route[0].prefix = \"198.18.0.0/24\": the subnet of vip[0] (198.18.0.100, prefix_len 24)"), "{e}");
        let e = err("[[route]]\nprefix = \"10.0.0.0/8\"\nvia = \"198.18.0.100\"");
        assert!(e.contains("route[0].via = \"198.18.0.100\": gateway 198.18.0.100 is one of our own addresses"), "{e}");
        let e = err("[[route]]\nprefix = \"10.0.0.0/8\"\nvia = \"255.255.255.255\"");
        assert!(e.contains("route[0].via = \"255.255.255.255\"") && e.contains("not a unicast host"), "{e}");
        let e = err("[[route]]\nprefix = \"10.0.0.0/8\"\ngateway = \"198.18.0.1\"");
        assert!(e.contains("unknown field `gateway`"), "{e}");
        let bad_len = MIN.replacen("addr = \"198.18.0.100\"", "addr = \"198.18.0.100\"\nprefix_len = 33", 1);
        let e = Config::parse(&bad_len).unwrap_err();
        assert!(e.contains("vip[0].prefix_len = 33"), "{e}");
        let many: String = (0..=flowtwin_engine::route::MAX_ROUTES).map(|i| format!("[[route]]\nprefix = \"10.{}.{}.0/24\"\nvia = \"198.18.0.1\"\n", i / 256, i % 256)).collect();
        let e = err(&many);
        assert!(e.contains("257 [[route]] sections: at most 256"), "{e}");
    }
}
