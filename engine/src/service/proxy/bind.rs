//! Delayed binding (`mode = "http"` and `mode = "tls"`): the backend of a client connection is
//! chosen from what the client sends first, read across segments into the client half's own
//! pipe (so those bytes are replicated state like any other, and the backend connection,
//! once open, sends them from offset 0 unchanged).
//!
//! - **HTTP**: the first request's head, up to `max_head` bytes: its request line gives the
//!   path, its `Host` header the host (port and case stripped). The first request binds the
//!   whole connection (later keep-alive requests go to the same backend).
//! - **TLS**: the ClientHello's `server_name` (SNI), without terminating TLS: the handshake
//!   record is read whole (it may span several segments: a post-quantum key share makes it
//!   larger than one), and its extensions are walked.
//!
//! A pool ([`Pool`]) matches by host (exact) and path prefix; the first that matches wins, and
//! the default pool (the service's `backends`) takes the rest. What cannot be read gets a
//! clear answer: an HTTP `400` (malformed), `431` (head too large), `503` (no usable backend),
//! each closed after it; over TLS, where no answer can be sent in the clear, a FIN.

use super::ProxySpec;

/// How a proxy chooses its backend.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// At once, before any byte (server-speaks-first protocols).
    #[default]
    Tcp,
    /// From the first HTTP request's Host and path.
    Http,
    /// From the TLS ClientHello's server name.
    Tls,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Tcp => "tcp",
            Mode::Http => "http",
            Mode::Tls => "tls",
        }
    }

    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "tcp" => Some(Mode::Tcp),
            "http" => Some(Mode::Http),
            "tls" => Some(Mode::Tls),
            _ => None,
        }
    }
}

/// Backends for requests that match: by host (exact, lowercase, no port) and path prefix
/// (HTTP only), each optional.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    pub host: Option<String>,
    pub path_prefix: Option<String>,
    /// The configured members (indices into [`ProxySpec::backends`]); at run time the
    /// slots' pool bits are the members (`ctl backend add --pool`).
    pub backends: Vec<usize>,
}

impl Pool {
    fn matches(&self, host: Option<&str>, path: Option<&[u8]>) -> bool {
        self.host.as_deref().is_none_or(|h| host == Some(h))
            && self.path_prefix.as_deref().is_none_or(|p| path.is_some_and(|x| x.starts_with(p.as_bytes())))
    }
}

/// What the first bytes decide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Not enough bytes yet.
    More,
    /// The pool to choose from: a `[[service.pool]]` index, or [`super::DEFAULT_POOL`].
    Pool(u16),
    /// Refused: the answer to send (empty: none, just close).
    Refuse(&'static [u8]),
}

pub const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
pub const TOO_LARGE: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
pub const UNAVAILABLE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 47\r\nConnection: close\r\n\r\nNo server is available to handle this request.\n";

impl ProxySpec {
    /// The pool for the first bytes `head` of a client (all it sent so far).
    pub fn decide(&self, head: &[u8]) -> Decision {
        let (host, path) = match self.mode {
            Mode::Tcp => (None, None),
            Mode::Http => match http_head(head, self.max_head) {
                Err(d) => return d,
                Ok((host, path)) => (host, Some(path)),
            },
            Mode::Tls => match client_hello_sni(head, self.max_head) {
                Err(d) => return d,
                Ok(host) => (host, None),
            },
        };
        let host = host.map(|h| h.to_ascii_lowercase());
        let pool = self.pools.iter().position(|p| p.matches(host.as_deref(), path.as_deref()));
        match pool {
            Some(p) => Decision::Pool(p as u16),
            None if self.default_pool_any() => Decision::Pool(super::DEFAULT_POOL),
            None => Decision::Refuse(self.unavailable()),
        }
    }

    /// The answer of a refused client when no backend can take it.
    pub fn unavailable(&self) -> &'static [u8] {
        if self.mode == Mode::Http {
            UNAVAILABLE
        } else {
            b""
        }
    }
}

/// `(host, path)` of a complete HTTP request head, or what to do meanwhile.
fn http_head(b: &[u8], max: usize) -> Result<(Option<String>, Vec<u8>), Decision> {
    let Some(end) = b.windows(4).position(|w| w == b"\r\n\r\n") else {
        // A request line must look like one from its first bytes (a client speaking another
        // protocol gets its 400 now, not after max bytes).
        let line = b.split(|&c| c == b'\r' || c == b'\n').next().unwrap_or_default();
        let method = line.split(|&c| c == b' ').next().unwrap_or_default();
        if !method.iter().all(u8::is_ascii_uppercase) || method.len() > 16 {
            return Err(Decision::Refuse(BAD_REQUEST));
        }
        return Err(if b.len() >= max { Decision::Refuse(TOO_LARGE) } else { Decision::More });
    };
    if end + 4 > max {
        return Err(Decision::Refuse(TOO_LARGE));
    }
    let head = &b[..end];
    let mut lines = head.split(|&c| c == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(|&c| c == b' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Decision::Refuse(BAD_REQUEST));
    };
    if method.is_empty() || !method.iter().all(u8::is_ascii_uppercase) || target.is_empty() || !version.starts_with(b"HTTP/1.") || parts.next().is_some() {
        return Err(Decision::Refuse(BAD_REQUEST));
    }
    let mut host = None;
    for l in lines {
        let Some(colon) = l.iter().position(|&c| c == b':') else { return Err(Decision::Refuse(BAD_REQUEST)) };
        if l[..colon].eq_ignore_ascii_case(b"host") {
            let v = std::str::from_utf8(&l[colon + 1..]).map_err(|_| Decision::Refuse(BAD_REQUEST))?.trim();
            let name = v.rsplit_once(':').filter(|(_, port)| port.bytes().all(|c| c.is_ascii_digit())).map_or(v, |(n, _)| n);
            host = Some(name.to_string());
        }
    }
    Ok((host, target.to_vec()))
}

/// The SNI of a complete TLS ClientHello record, `None` if it names none; or what to do
/// meanwhile.
fn client_hello_sni(b: &[u8], max: usize) -> Result<Option<String>, Decision> {
    let close = Decision::Refuse(b"");
    if b.is_empty() {
        return Err(Decision::More);
    }
    // TLSPlaintext: type 22 (handshake), legacy version 3.x, length.
    if b[0] != 22 || b.get(1).is_some_and(|&v| v != 3) {
        return Err(close);
    }
    if b.len() < 5 {
        return Err(Decision::More);
    }
    let len = usize::from(u16::from_be_bytes([b[3], b[4]]));
    if len + 5 > max {
        return Err(close);
    }
    if b.len() < 5 + len {
        return Err(Decision::More);
    }
    let h = &b[5..5 + len];
    let mut r = Reader(h);
    let parsed = (|| {
        if r.u8()? != 1 {
            return None; // not a ClientHello
        }
        let n = r.u24()?;
        let body = r.take(n)?;
        let mut r = Reader(body);
        r.take(2 + 32)?; // legacy_version, random
        let sid = r.u8()?;
        r.take(usize::from(sid))?;
        let cs = r.u16()?;
        r.take(cs)?;
        let comp = r.u8()?;
        r.take(usize::from(comp))?;
        if r.0.is_empty() {
            return Some(None); // no extensions
        }
        let n = r.u16()?;
        let exts = r.take(n)?;
        let mut r = Reader(exts);
        while !r.0.is_empty() {
            let (ty, data) = (r.u16()?, r.u16()?);
            let data = r.take(data)?;
            if ty == 0 {
                let mut s = Reader(data);
                let n = s.u16()?;
                let list = s.take(n)?;
                let mut s = Reader(list);
                while !s.0.is_empty() {
                    let (kind, n) = (s.u8()?, s.u16()?);
                    let name = s.take(n)?;
                    if kind == 0 {
                        return std::str::from_utf8(name).ok().map(|n| Some(n.to_string()));
                    }
                }
                return Some(None);
            }
        }
        Some(None)
    })();
    parsed.ok_or(close)
}

/// Big-endian reads over a byte slice; `None` past its end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3).map(|b| (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::proxy::{Balance, DEFAULT_POOL};
    use std::net::{Ipv4Addr, SocketAddrV4};

    fn spec(mode: Mode) -> ProxySpec {
        let b = (0..3).map(|i| SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 10 + i), 80)).collect();
        let pools = vec![
            Pool { host: Some("api.example".into()), path_prefix: Some("/v2/".into()), backends: vec![2] },
            Pool { host: Some("api.example".into()), path_prefix: None, backends: vec![1] },
        ];
        let mut s = ProxySpec::new(b, Balance::RoundRobin, Ipv4Addr::new(10, 0, 0, 1), 16384).with_pools(&[0], pools);
        s.mode = mode;
        s
    }

    #[test]
    fn http_chooses_by_host_and_path_across_segments() {
        let s = spec(Mode::Http);
        let req = b"GET /v2/users HTTP/1.1\r\nHost: API.example:8080\r\nAccept: */*\r\n\r\nbody";
        for cut in 0..req.len() - 4 {
            assert_eq!(s.decide(&req[..cut]), Decision::More, "after {cut} bytes");
        }
        assert_eq!(s.decide(req), Decision::Pool(0));
        assert_eq!(s.decide(b"GET /v1 HTTP/1.1\r\nhost: api.example\r\n\r\n"), Decision::Pool(1));
        assert_eq!(s.decide(b"GET /v2/ HTTP/1.0\r\n\r\n"), Decision::Pool(DEFAULT_POOL), "no Host: the default pool");
    }

    #[test]
    fn http_refusals() {
        let s = spec(Mode::Http);
        assert_eq!(s.decide(b"\x16\x03\x01\x02\x00"), Decision::Refuse(BAD_REQUEST), "TLS to an HTTP proxy: at once");
        assert_eq!(s.decide(b"GET / HTTP/1.1 x\r\n\r\n"), Decision::Refuse(BAD_REQUEST));
        assert_eq!(s.decide(b"GET / HTTP/1.1\r\nno colon\r\n\r\n"), Decision::Refuse(BAD_REQUEST));
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(s.max_head, b'a');
        assert_eq!(s.decide(&big), Decision::Refuse(TOO_LARGE));
        let none = spec(Mode::Http);
        none.backends[0].in_default.store(false, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(none.decide(b"GET / HTTP/1.1\r\nHost: other\r\n\r\n"), Decision::Refuse(UNAVAILABLE));
    }

    /// A ClientHello naming `sni`, with a key share of `pad` bytes (post-quantum: large).
    fn hello(sni: Option<&str>, pad: usize) -> Vec<u8> {
        let mut exts = Vec::new();
        if let Some(n) = sni {
            let mut list = vec![0u8];
            list.extend_from_slice(&(n.len() as u16).to_be_bytes());
            list.extend_from_slice(n.as_bytes());
            let mut e = (list.len() as u16).to_be_bytes().to_vec();
            e.extend_from_slice(&list);
            exts.extend_from_slice(&0u16.to_be_bytes());
            exts.extend_from_slice(&(e.len() as u16).to_be_bytes());
            exts.extend_from_slice(&e);
        }
        exts.extend_from_slice(&51u16.to_be_bytes()); // key_share, after SNI or not
        exts.extend_from_slice(&(pad as u16).to_be_bytes());
        exts.resize(exts.len() + pad, 7);
        let mut body = vec![3, 3];
        body.extend_from_slice(&[1u8; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // cipher suites
        body.extend_from_slice(&[1, 0]); // compression
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut hs = vec![1];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let mut rec = vec![22, 3, 1];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn tls_chooses_by_sni_across_segments() {
        let s = spec(Mode::Tls);
        let h = hello(Some("API.example"), 1200 * 3);
        assert!(h.len() > 2 * 1448, "spans segments");
        for cut in [0, 1, 4, 5, 100, 1448, 2896, h.len() - 1] {
            assert_eq!(s.decide(&h[..cut]), Decision::More, "after {cut} bytes");
        }
        assert_eq!(s.decide(&h), Decision::Pool(1));
        assert_eq!(s.decide(&hello(None, 10)), Decision::Pool(DEFAULT_POOL), "no SNI: the default pool");
        assert_eq!(s.decide(b"GET / HTTP/1.1\r\n"), Decision::Refuse(b""), "not TLS: closed");
        let mut bad = hello(Some("x"), 10);
        bad[5] = 2; // a ServerHello
        assert_eq!(s.decide(&bad), Decision::Refuse(b""));
        let mut cut = hello(Some("api.example"), 10);
        let n = cut.len();
        cut[3..5].copy_from_slice(&((n - 5 - 20) as u16).to_be_bytes()); // record shorter than its hello
        assert_eq!(s.decide(&cut[..n - 20]), Decision::Refuse(b""));
    }
}
