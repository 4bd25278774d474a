//! Static IPv4 routes: where a frame toward a remote address is sent, for the connections the
//! engine opens itself (`Stack::connect`). Received flows need none: they answer the MAC their
//! segments came from.
//!
//! A route is a destination prefix and either a gateway (`via`, which must be on-link) or
//! nothing: the prefix itself is on-link, its hosts are resolved by ARP directly. The on-link
//! prefixes are the subnets of the VIPs (the engine's own addresses on its port; the
//! "connected" routes of a host, RFC 1122 §3.3.1.1: "the host MUST determine whether the
//! destination is on a connected network") plus the configured routes without a gateway. The
//! next hop is chosen by longest prefix match (RFC 1812 §5.2.4.3), so `0.0.0.0/0` is the
//! default route. The neighbour table then resolves the next hop's MAC (`neighbor`).
//!
//! The table is fixed when it is built (from the config, shared read-only by every worker and
//! by the standby) and checked there: no two routes for one prefix, every gateway on-link, a
//! unicast host, and none of our own addresses. A gateway is resolved by ARP directly: routes
//! do not recurse through other routes.
//!
//! Cost: a lookup scans the routes longest prefix first, once per connection opened, never
//! per packet; at most [`MAX_ROUTES`] of them.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// Routes a table holds at most (configured ones; the VIPs' subnets come on top).
pub const MAX_ROUTES: usize = 256;

/// An IPv4 prefix, `addr/len`, with no host bits set.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Prefix {
    addr: Ipv4Addr,
    len: u8,
}

/// Why a text or an address and length is not a [`Prefix`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PrefixError {
    /// Not `a.b.c.d/n`.
    Syntax,
    /// A length over 32.
    Len(u8),
    /// Bits set beyond the length (`10.1.2.3/8`): the network is `network`. Refused rather
    /// than masked, because the writer may have meant a longer prefix.
    HostBits { network: Prefix },
}

impl fmt::Display for PrefixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrefixError::Syntax => f.write_str("not an IPv4 prefix like 10.0.0.0/8"),
            PrefixError::Len(l) => write!(f, "prefix length {l}: at most 32"),
            PrefixError::HostBits { network } => write!(f, "host bits set (the network is {network})"),
        }
    }
}

impl std::error::Error for PrefixError {}

fn mask(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

impl Prefix {
    /// Every address: the default route's prefix.
    pub const ANY: Prefix = Prefix { addr: Ipv4Addr::UNSPECIFIED, len: 0 };

    /// `addr/len`; `addr` must have no bits beyond `len`.
    pub fn new(addr: Ipv4Addr, len: u8) -> Result<Prefix, PrefixError> {
        let p = Prefix::containing(addr, len)?;
        if p.addr != addr {
            return Err(PrefixError::HostBits { network: p });
        }
        Ok(p)
    }

    /// The `len`-bit prefix that contains `addr` (the subnet of an interface address).
    pub fn containing(addr: Ipv4Addr, len: u8) -> Result<Prefix, PrefixError> {
        if len > 32 {
            return Err(PrefixError::Len(len));
        }
        Ok(Prefix { addr: Ipv4Addr::from(u32::from(addr) & mask(len)), len })
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether the prefix is `0.0.0.0/0` (every address).
    pub fn is_any(&self) -> bool {
        self.len == 0
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.len) == u32::from(self.addr)
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;

    /// `a.b.c.d/n` (the length is required: a bare address is not taken for a /32).
    fn from_str(s: &str) -> Result<Prefix, PrefixError> {
        let (a, l) = s.split_once('/').ok_or(PrefixError::Syntax)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| PrefixError::Syntax)?;
        if l.is_empty() || l.len() > 2 || !l.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PrefixError::Syntax);
        }
        let len: u8 = l.parse().map_err(|_| PrefixError::Syntax)?;
        Prefix::new(addr, len)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// One route: frames to `prefix` go to `via`, or, without one, to the destination itself
/// (the prefix is on-link).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub prefix: Prefix,
    pub via: Option<Ipv4Addr>,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.via {
            Some(v) => write!(f, "{} via {v}", self.prefix),
            None => write!(f, "{} on-link", self.prefix),
        }
    }
}

/// What is wrong with route `index` of those given to [`RouteTable::new`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RouteError {
    pub index: usize,
    pub kind: RouteErrorKind,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RouteErrorKind {
    /// Route `first` has the same prefix (`None`: it is the subnet of one of our addresses,
    /// on-link already).
    Duplicate { first: Option<usize> },
    /// The gateway is in no on-link prefix: nothing could resolve it.
    ViaNotOnLink(Ipv4Addr),
    /// The gateway is not a unicast host address (0.0.0.0, broadcast, multicast, loopback).
    ViaNotUnicast(Ipv4Addr),
    /// The gateway is one of our own addresses.
    ViaOurs(Ipv4Addr),
    /// More than [`MAX_ROUTES`] routes.
    TooMany,
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            RouteErrorKind::Duplicate { first: Some(i) } => write!(f, "the same prefix as route {i}"),
            RouteErrorKind::Duplicate { first: None } => {
                f.write_str("the subnet of a VIP (on-link already): a route for it would take its hosts away")
            }
            RouteErrorKind::ViaNotOnLink(v) => {
                write!(f, "gateway {v} is not on-link (in no VIP's subnet and no route without a gateway)")
            }
            RouteErrorKind::ViaNotUnicast(v) => write!(f, "gateway {v} is not a unicast host address"),
            RouteErrorKind::ViaOurs(v) => write!(f, "gateway {v} is one of our own addresses"),
            RouteErrorKind::TooMany => write!(f, "more than {MAX_ROUTES} routes"),
        }
    }
}

impl std::error::Error for RouteError {}

/// The routes of an engine: built once, looked up by every worker. See the module doc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteTable {
    /// The subnets of our addresses (as on-link routes) and the configured routes, longest
    /// prefix first (the first match is the longest); no prefix twice.
    routes: Vec<Route>,
}

impl RouteTable {
    /// One segment holds everything: every destination is on-link (`0.0.0.0/0` without a
    /// gateway). What an engine did before it had routes; tests and simulations use it.
    pub fn all_on_link() -> RouteTable {
        RouteTable { routes: vec![Route { prefix: Prefix::ANY, via: None }] }
    }

    /// The table of an engine whose addresses are `ours`, each in its subnet (`subnets`, the
    /// prefixes containing them: on-link), with the configured `routes`. Errors name the
    /// route by its index in `routes`.
    pub fn new(ours: &[(Ipv4Addr, Prefix)], routes: &[Route]) -> Result<RouteTable, RouteError> {
        if routes.len() > MAX_ROUTES {
            return Err(RouteError { index: MAX_ROUTES, kind: RouteErrorKind::TooMany });
        }
        let mut all: Vec<Route> = Vec::with_capacity(ours.len() + routes.len());
        for &(_, p) in ours {
            // Several addresses in one subnet are one on-link route.
            if !all.iter().any(|r| r.prefix == p) {
                all.push(Route { prefix: p, via: None });
            }
        }
        let connected = all.len();
        for (index, r) in routes.iter().enumerate() {
            let err = |kind| RouteError { index, kind };
            if let Some(i) = all.iter().position(|o| o.prefix == r.prefix) {
                let first = i.checked_sub(connected);
                return Err(err(RouteErrorKind::Duplicate { first }));
            }
            all.push(*r);
        }
        let on_link = |ip: Ipv4Addr| all.iter().any(|r| r.via.is_none() && r.prefix.contains(ip));
        for (index, r) in routes.iter().enumerate() {
            let Some(via) = r.via else { continue };
            let err = |kind| Err(RouteError { index, kind });
            if via.is_unspecified() || via.is_broadcast() || via.is_multicast() || via.is_loopback() {
                return err(RouteErrorKind::ViaNotUnicast(via));
            }
            if ours.iter().any(|&(a, _)| a == via) {
                return err(RouteErrorKind::ViaOurs(via));
            }
            if !on_link(via) {
                return err(RouteErrorKind::ViaNotOnLink(via));
            }
        }
        // Longest first; a stable sort keeps equal lengths in configured order (they cannot
        // both match: equal-length prefixes that differ are disjoint).
        all.sort_by_key(|r| std::cmp::Reverse(r.prefix.prefix_len()));
        Ok(RouteTable { routes: all })
    }

    /// The route frames to `dst` take (longest prefix match), if any.
    pub fn route(&self, dst: Ipv4Addr) -> Option<Route> {
        self.routes.iter().find(|r| r.prefix.contains(dst)).copied()
    }

    /// The address whose MAC frames to `dst` are sent to: the gateway of its route, or `dst`
    /// itself on-link. `None`: no route.
    pub fn next_hop(&self, dst: Ipv4Addr) -> Option<Ipv4Addr> {
        self.route(dst).map(|r| r.via.unwrap_or(dst))
    }

    /// Whether `ip` is reached without a gateway.
    pub fn is_on_link(&self, ip: Ipv4Addr) -> bool {
        self.route(ip).is_some_and(|r| r.via.is_none())
    }

    /// Every route, longest prefix first (the VIPs' subnets among them, on-link).
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

#[cfg(test)]
mod tests;
