//! The `object` service: HTTP/1.1 `GET`/`HEAD` of named objects (RFC 9110, RFC 9112) over
//! persistent connections, as a pull-based [`ByteStream`].
//!
//! Per-connection state ([`HttpState`]) is fixed-size and heap-free: a 2 KiB request buffer
//! that holds at most one incomplete request header section, and a ring of up to
//! [`MAX_PIPELINE`] queued responses. A queued response is a small record — start stream
//! offset, status, `Content-Length`, object id, flags — from which both the header bytes and
//! the body bytes are regenerated on every `read_at`, so TCP keeps no send buffer and a
//! standby holding the same [`HttpCursor`] and [`ObjectStore`] produces identical bytes.
//!
//! Request handling:
//! - Header section ends at an empty line; lines end in CRLF, or a bare LF (RFC 9112 §2.2
//!   allows recognising LF alone); empty lines before the request-line are ignored (§2.2).
//! - `GET`/`HEAD` → 200 or 404; any other method → 405 with `Allow` (RFC 9110 §15.5.6);
//!   major version ≠ 1 → 505; malformed → 400; header section over 2 KiB → 431 (RFC 6585
//!   §5, more precise than 400). 400, 431 and 505 close the connection.
//! - `Connection: close` (RFC 9112 §9.6) and HTTP/1.0 requests close after the response.
//!   (HTTP/1.0 keep-alive is not offered.)
//! - Request bodies are not supported: a non-zero `Content-Length` or any
//!   `Transfer-Encoding` is a 400 + close, since the body's framing cannot be skipped safely.
//! - `Host` is not required (deliberately lenient for load generators; RFC 9112 §3.2 asks
//!   for a 400).
//! - Targets: origin-form `/name[?query]` and absolute-form `http://host/name` (RFC 9112
//!   §3.2.2); the query is ignored; no percent-decoding (object names never need it).
//! - Pipelining (RFC 9112 §9.3): requests are parsed as they arrive while the response queue
//!   has room; when it is full `on_recv` stops consuming and `rx_space()` is 0, so TCP closes
//!   the receive window until responses are acknowledged.
//! - After a closing response is queued, or after the peer's FIN, `tx_closed()` is true and
//!   further received bytes are consumed and discarded.

use super::object::{ObjectId, ObjectStore};
use super::ByteStream;

/// Request buffer: the longest header section accepted.
pub const REQ_BUF_LEN: usize = 2048;
/// Responses queued per connection (pipelining depth).
pub const MAX_PIPELINE: usize = 4;
/// Upper bound of a generated response header.
pub const MAX_HEADER_LEN: usize = 192;
/// Body marker for error responses: the body is the status text, e.g. `404 Not Found\n`.
pub const STATUS_TEXT_BODY: ObjectId = ObjectId(u32::MAX - 1);

/// Response flag: the request was `HEAD` (header only, `Content-Length` of the would-be body).
pub const FLAG_HEAD: u8 = 1;
/// Response flag: `Connection: close`; no response follows.
pub const FLAG_CLOSE: u8 = 2;

/// Status codes this service emits, with their reason phrases (RFC 9110 §15).
fn reason(status: u16) -> Option<&'static str> {
    Some(match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        505 => "HTTP Version Not Supported",
        _ => return None,
    })
}

/// One queued response, as replicated: everything else is derived.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct ResponseRecord {
    /// Stream offset of the first header byte.
    pub start: u64,
    /// Value of `Content-Length`.
    pub content_len: u64,
    /// Body source: a store object, [`ObjectId::GENERATED`], or [`STATUS_TEXT_BODY`].
    pub obj: ObjectId,
    pub status: u16,
    /// [`FLAG_HEAD`] | [`FLAG_CLOSE`].
    pub flags: u8,
}

impl Default for ResponseRecord {
    fn default() -> Self {
        ResponseRecord { start: 0, content_len: 0, obj: STATUS_TEXT_BODY, status: 400, flags: 0 }
    }
}

impl ResponseRecord {
    /// Body bytes on the wire (0 for HEAD).
    #[inline]
    pub fn body_len(&self) -> u64 {
        if self.flags & FLAG_HEAD != 0 {
            0
        } else {
            self.content_len
        }
    }

    /// Header bytes; `None` if the record is not one this service produces.
    pub fn header(&self, out: &mut [u8; MAX_HEADER_LEN]) -> Option<usize> {
        let reason = reason(self.status)?;
        let mut w = Writer { buf: out, len: 0 };
        w.put(b"HTTP/1.1 ");
        w.num(u64::from(self.status));
        w.put(b" ");
        w.put(reason.as_bytes());
        w.put(b"\r\nContent-Type: ");
        w.put(if self.obj == STATUS_TEXT_BODY { b"text/plain" } else { b"application/octet-stream" });
        w.put(b"\r\nContent-Length: ");
        w.num(self.content_len);
        if self.status == 405 {
            w.put(b"\r\nAllow: GET, HEAD");
        }
        w.put(if self.flags & FLAG_CLOSE != 0 {
            b"\r\nConnection: close\r\n\r\n"
        } else {
            b"\r\nConnection: keep-alive\r\n\r\n"
        });
        (!w.overflow()).then_some(w.len)
    }
}

/// Status text body (`"404 Not Found\n"`) of an error response.
fn status_text(status: u16, out: &mut [u8; 64]) -> usize {
    let mut w = Writer { buf: out, len: 0 };
    w.num(u64::from(status));
    w.put(b" ");
    w.put(reason(status).unwrap_or("").as_bytes());
    w.put(b"\n");
    w.len.min(64)
}

/// Bounded writer into a fixed array; records overflow instead of panicking.
struct Writer<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Writer<'_> {
    fn put(&mut self, s: &[u8]) {
        if let Some(dst) = self.buf.get_mut(self.len..self.len + s.len()) {
            dst.copy_from_slice(s);
        }
        self.len += s.len();
    }
    fn num(&mut self, mut v: u64) {
        let mut tmp = [0u8; 20];
        let mut i = tmp.len();
        loop {
            i -= 1;
            tmp[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.put(&tmp[i..]);
    }
    fn overflow(&self) -> bool {
        self.len > self.buf.len()
    }
}

#[derive(Copy, Clone, Debug, Default)]
struct Queued {
    rec: ResponseRecord,
    hdr_len: u16,
}

impl Queued {
    #[inline]
    fn end(&self) -> u64 {
        self.rec.start + u64::from(self.hdr_len) + self.rec.body_len()
    }
}

/// Replicable state of one connection's response queue (DESIGN §4 "service cursor"), oldest
/// response first. The incomplete request bytes travel separately (as received-data chunks),
/// see [`HttpState::partial_request`].
#[derive(Copy, Clone, PartialEq, Eq, Debug, Default)]
pub struct HttpCursor {
    pub responses: [ResponseRecord; MAX_PIPELINE],
    pub count: u8,
    /// Output acknowledged by the peer.
    pub acked: u64,
    /// One past the last output byte (`tx_end()`).
    pub tx_end: u64,
    /// A closing response is queued: no more requests are parsed.
    pub closing: bool,
    pub peer_fin: bool,
}

/// Per-worker counters of the `object` service.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpCounters {
    /// Header sections parsed (well-formed or not).
    pub requests: u64,
    pub resp_2xx: u64,
    pub resp_4xx: u64,
    pub resp_5xx: u64,
    /// Response bytes acknowledged by clients (headers and bodies; retransmissions count once).
    pub bytes_out: u64,
}

/// Per-connection HTTP state: fixed size (~2.3 KiB), no heap.
#[derive(Clone)]
pub struct HttpState {
    req: [u8; REQ_BUF_LEN],
    req_len: u16,
    queue: [Queued; MAX_PIPELINE],
    head: u8,
    count: u8,
    acked: u64,
    tx_end: u64,
    closing: bool,
    peer_fin: bool,
}

impl Default for HttpState {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for HttpState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HttpState")
            .field("req_len", &self.req_len)
            .field("cursor", &self.cursor())
            .finish()
    }
}

/// What a complete header section asks for.
struct Request {
    status: u16,
    close: bool,
    head: bool,
    obj: ObjectId,
    content_len: u64,
}

impl HttpState {
    pub const fn new() -> Self {
        HttpState {
            req: [0; REQ_BUF_LEN],
            req_len: 0,
            queue: [Queued {
                rec: ResponseRecord { start: 0, content_len: 0, obj: STATUS_TEXT_BODY, status: 400, flags: 0 },
                hdr_len: 0,
            }; MAX_PIPELINE],
            head: 0,
            count: 0,
            acked: 0,
            tx_end: 0,
            closing: false,
            peer_fin: false,
        }
    }

    /// The replicable response queue.
    pub fn cursor(&self) -> HttpCursor {
        let mut c = HttpCursor {
            count: self.count,
            acked: self.acked,
            tx_end: self.tx_end,
            closing: self.closing,
            peer_fin: self.peer_fin,
            ..HttpCursor::default()
        };
        for i in 0..self.count as usize {
            c.responses[i] = self.slot(i).rec;
        }
        c
    }

    /// Received bytes of an incomplete request (consumed from TCP, not yet answered).
    pub fn partial_request(&self) -> &[u8] {
        &self.req[..self.req_len as usize]
    }

    /// Rebuild the state from a replicated cursor and partial request. `None` if the cursor
    /// is inconsistent (never trust bytes from the wire).
    pub fn from_cursor(c: &HttpCursor, partial_request: &[u8]) -> Option<HttpState> {
        let count = c.count as usize;
        if count > MAX_PIPELINE || partial_request.len() >= REQ_BUF_LEN || c.acked > c.tx_end {
            return None;
        }
        let mut s = HttpState::new();
        let mut hdr = [0u8; MAX_HEADER_LEN];
        let mut expect_start = None;
        for (i, rec) in c.responses[..count].iter().enumerate() {
            let hdr_len = rec.header(&mut hdr)? as u16;
            let q = Queued { rec: *rec, hdr_len };
            if let Some(st) = expect_start {
                if rec.start != st {
                    return None;
                }
            }
            let end = rec.start.checked_add(u64::from(hdr_len))?.checked_add(rec.body_len())?;
            // Fully acknowledged responses are retired, so the oldest one is partly unacked.
            if i == 0 && !(rec.start <= c.acked && c.acked < end) {
                return None;
            }
            // A closing response is the last one.
            if rec.flags & FLAG_CLOSE != 0 && i + 1 != count {
                return None;
            }
            expect_start = Some(end);
            s.queue[i] = q;
        }
        if expect_start.unwrap_or(c.acked) != c.tx_end {
            return None;
        }
        s.count = c.count;
        s.acked = c.acked;
        s.tx_end = c.tx_end;
        s.closing = c.closing;
        s.peer_fin = c.peer_fin;
        s.req[..partial_request.len()].copy_from_slice(partial_request);
        s.req_len = partial_request.len() as u16;
        Some(s)
    }

    /// Responses queued and not fully acknowledged.
    pub fn queued(&self) -> usize {
        self.count as usize
    }

    #[inline]
    fn slot(&self, i: usize) -> &Queued {
        &self.queue[(self.head as usize + i) % MAX_PIPELINE]
    }

    fn enqueue(&mut self, status: u16, obj: ObjectId, content_len: u64, head: bool, close: bool, stats: &mut HttpCounters) {
        debug_assert!((self.count as usize) < MAX_PIPELINE);
        let flags = if head { FLAG_HEAD } else { 0 } | if close { FLAG_CLOSE } else { 0 };
        let rec = ResponseRecord { start: self.tx_end, content_len, obj, status, flags };
        let mut hdr = [0u8; MAX_HEADER_LEN];
        // All statuses passed here have a reason phrase and fit MAX_HEADER_LEN.
        let hdr_len = rec.header(&mut hdr).unwrap_or(0) as u16;
        let q = Queued { rec, hdr_len };
        let idx = (self.head as usize + self.count as usize) % MAX_PIPELINE;
        self.queue[idx] = q;
        self.count += 1;
        self.tx_end = q.end();
        match status {
            200..=299 => stats.resp_2xx += 1,
            400..=499 => stats.resp_4xx += 1,
            _ => stats.resp_5xx += 1,
        }
        if close {
            self.closing = true;
        }
    }

    fn recv(&mut self, data: &[u8], store: &ObjectStore, stats: &mut HttpCounters) -> usize {
        if self.closing || self.peer_fin {
            return data.len();
        }
        let mut used = 0;
        while used < data.len() && (self.count as usize) < MAX_PIPELINE {
            if self.req_len == 0 {
                // RFC 9112 §2.2: ignore empty lines received before the request-line.
                while used < data.len() && matches!(data[used], b'\r' | b'\n') {
                    used += 1;
                }
                if used == data.len() {
                    break;
                }
            }
            let old = self.req_len as usize;
            let take = (REQ_BUF_LEN - old).min(data.len() - used);
            self.req[old..old + take].copy_from_slice(&data[used..used + take]);
            let len = old + take;
            self.req_len = len as u16;
            match find_header_end(&self.req[..len], old.saturating_sub(2)) {
                Some(end) => {
                    // Bytes after the header section belong to the next request: consume only
                    // up to `end` and go round again.
                    used += end - old;
                    self.req_len = 0;
                    stats.requests += 1;
                    let r = parse_request(&self.req[..end], store);
                    self.enqueue(r.status, r.obj, r.content_len, r.head, r.close, stats);
                    if self.closing {
                        return data.len();
                    }
                }
                None => {
                    used += take;
                    let fresh = &self.req[old..len];
                    let junk = fresh.iter().any(|&c| is_forbidden_ctl(c));
                    if len == REQ_BUF_LEN || junk {
                        // Fail fast on binary junk; 431 when the section is just too long.
                        stats.requests += 1;
                        self.req_len = 0;
                        let status = if junk { 400 } else { 431 };
                        self.enqueue(status, STATUS_TEXT_BODY, status_text_len(status), false, true, stats);
                        return data.len();
                    }
                }
            }
        }
        used
    }

    fn read(&self, off: u64, buf: &mut [u8], store: &ObjectStore) -> usize {
        let mut n = 0;
        for i in 0..self.count as usize {
            if n == buf.len() {
                break;
            }
            let q = self.slot(i);
            let pos = off + n as u64;
            if pos >= q.end() {
                continue;
            }
            if pos < q.rec.start {
                // Below the oldest queued response: already acknowledged (contract violation).
                break;
            }
            let mut p = pos - q.rec.start;
            let hdr_len = u64::from(q.hdr_len);
            if p < hdr_len {
                let mut hdr = [0u8; MAX_HEADER_LEN];
                let h = q.rec.header(&mut hdr).unwrap_or(0);
                let src = &hdr[p as usize..h.max(p as usize)];
                let k = src.len().min(buf.len() - n);
                buf[n..n + k].copy_from_slice(&src[..k]);
                n += k;
                p += k as u64;
            }
            if n == buf.len() {
                break;
            }
            let bp = p - hdr_len;
            let k = (q.rec.body_len() - bp).min((buf.len() - n) as u64) as usize;
            let dst = &mut buf[n..n + k];
            if q.rec.obj == STATUS_TEXT_BODY {
                let mut t = [0u8; 64];
                let tl = status_text(q.rec.status, &mut t);
                let b = bp as usize;
                dst.copy_from_slice(&t[b.min(tl)..(b + k).min(tl)]);
            } else {
                let got = store.read(q.rec.obj, bp, dst);
                if got < k {
                    // Object shorter than announced (store differs from the one the response
                    // was made with): keep the stream length promised by Content-Length.
                    debug_assert!(false, "object {:?} shorter than its response", q.rec.obj);
                    dst[got..].fill(0);
                }
            }
            n += k;
        }
        n
    }

    fn acked_to(&mut self, off: u64, stats: &mut HttpCounters) {
        let off = off.min(self.tx_end);
        if off <= self.acked {
            return;
        }
        stats.bytes_out += off - self.acked;
        self.acked = off;
        while self.count > 0 && self.slot(0).end() <= off {
            self.head = ((self.head as usize + 1) % MAX_PIPELINE) as u8;
            self.count -= 1;
        }
    }

    fn space(&self) -> usize {
        if self.closing || self.peer_fin {
            // Discard sink: accept whatever arrives so the close completes.
            return REQ_BUF_LEN;
        }
        if self.count as usize == MAX_PIPELINE {
            return 0;
        }
        REQ_BUF_LEN - self.req_len as usize
    }
}

fn status_text_len(status: u16) -> u64 {
    let mut t = [0u8; 64];
    status_text(status, &mut t) as u64
}

/// Control characters that never appear in a request header section (HTAB, CR, LF allowed;
/// RFC 9110 §5.5 field values exclude CTLs; obs-text ≥ 0x80 is allowed).
#[inline]
fn is_forbidden_ctl(c: u8) -> bool {
    (c < 0x20 && !matches!(c, b'\t' | b'\r' | b'\n')) || c == 0x7f
}

/// End (one past the final LF) of the header section in `buf`, searching from `from`: the
/// first LF followed by LF or CR LF.
fn find_header_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < buf.len() {
        if buf[i] == b'\n' {
            match (buf.get(i + 1), buf.get(i + 2)) {
                (Some(b'\n'), _) => return Some(i + 2),
                (Some(b'\r'), Some(b'\n')) => return Some(i + 3),
                _ => {}
            }
        }
        i += 1;
    }
    None
}

/// RFC 9110 §5.6.2 tchar.
#[inline]
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn bad(status: u16) -> Request {
    Request { status, close: true, head: false, obj: STATUS_TEXT_BODY, content_len: status_text_len(status) }
}

/// Parse a complete header section (ending in an empty line) and decide the response.
fn parse_request(section: &[u8], store: &ObjectStore) -> Request {
    let mut lines = section.split(|&c| c == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let Some(request_line) = lines.next() else {
        return bad(400);
    };
    if section.iter().any(|&c| is_forbidden_ctl(c)) {
        return bad(400);
    }
    // request-line = method SP request-target SP HTTP-version (RFC 9112 §3)
    let mut parts = request_line.split(|&c| c == b' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return bad(400);
    };
    if method.is_empty() || !method.iter().all(|&c| is_tchar(c)) || target.is_empty() {
        return bad(400);
    }
    // HTTP-version = "HTTP/" DIGIT "." DIGIT (RFC 9112 §2.3)
    let minor = match version {
        [b'H', b'T', b'T', b'P', b'/', maj, b'.', min] if maj.is_ascii_digit() && min.is_ascii_digit() => {
            if *maj != b'1' {
                return bad(505);
            }
            *min - b'0'
        }
        _ => return bad(400),
    };
    // HTTP/1.0 closes after the response; 1.1 and later 1.x persist by default.
    let mut close = minor == 0;
    for line in lines {
        if line.is_empty() {
            break;
        }
        // No obs-fold (RFC 9112 §5.2), no bare CR, no whitespace before the colon (§5.1).
        if matches!(line[0], b' ' | b'\t') || line.contains(&b'\r') {
            return bad(400);
        }
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            return bad(400);
        };
        let (name, value) = (&line[..colon], trim_ows(&line[colon + 1..]));
        if name.is_empty() || !name.iter().all(|&c| is_tchar(c)) {
            return bad(400);
        }
        if name.eq_ignore_ascii_case(b"connection") {
            for opt in value.split(|&c| c == b',') {
                if trim_ows(opt).eq_ignore_ascii_case(b"close") {
                    close = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let zero = !value.is_empty() && value.iter().all(|&c| c == b'0');
            if !zero {
                return bad(400);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return bad(400);
        }
    }
    let head = match method {
        b"GET" => false,
        b"HEAD" => true,
        _ => {
            return Request { status: 405, close, head: false, obj: STATUS_TEXT_BODY, content_len: status_text_len(405) };
        }
    };
    let Some(path) = request_path(target) else {
        return bad(400);
    };
    match path.strip_prefix(b"/").and_then(|name| store.resolve(name)) {
        Some((obj, len)) => Request { status: 200, close, head, obj, content_len: len },
        None => Request { status: 404, close, head, obj: STATUS_TEXT_BODY, content_len: status_text_len(404) },
    }
}

/// Path of an origin-form or absolute-form request-target, query removed.
fn request_path(target: &[u8]) -> Option<&[u8]> {
    let path = if target.first() == Some(&b'/') {
        target
    } else {
        let scheme_len = if target.len() >= 7 && target[..7].eq_ignore_ascii_case(b"http://") {
            7
        } else if target.len() >= 8 && target[..8].eq_ignore_ascii_case(b"https://") {
            8
        } else {
            return None;
        };
        let rest = &target[scheme_len..];
        match rest.iter().position(|&c| c == b'/') {
            Some(i) => &rest[i..],
            None => b"/",
        }
    };
    Some(match path.iter().position(|&c| c == b'?') {
        Some(q) => &path[..q],
        None => path,
    })
}

/// The `object` service bound to one connection: per-flow state, the worker's shared store
/// and the worker's counters.
pub struct ObjectConn<'a> {
    pub state: &'a mut HttpState,
    pub store: &'a ObjectStore,
    pub stats: &'a mut HttpCounters,
}

impl<'a> ObjectConn<'a> {
    pub fn new(state: &'a mut HttpState, store: &'a ObjectStore, stats: &'a mut HttpCounters) -> Self {
        ObjectConn { state, store, stats }
    }
}

impl ByteStream for ObjectConn<'_> {
    fn on_recv(&mut self, data: &[u8]) -> usize {
        self.state.recv(data, self.store, self.stats)
    }

    fn on_peer_fin(&mut self) {
        // An incomplete request can never complete: drop it.
        self.state.peer_fin = true;
        self.state.req_len = 0;
    }

    fn tx_end(&self) -> u64 {
        self.state.tx_end
    }

    fn tx_closed(&self) -> bool {
        self.state.closing || self.state.peer_fin
    }

    fn read_at(&self, off: u64, buf: &mut [u8]) -> usize {
        self.state.read(off, buf, self.store)
    }

    fn on_acked(&mut self, off: u64) {
        self.state.acked_to(off, self.stats)
    }

    fn rx_space(&self) -> usize {
        self.state.space()
    }
}

#[cfg(test)]
mod tests {
    use super::super::object::{gen_byte_range, StoreConfig};
    use super::*;
    use proptest::prelude::*;

    fn store() -> ObjectStore {
        ObjectStore::from_objects(
            StoreConfig { max_gen_bytes: 1 << 20, ..Default::default() },
            [("hello.txt", b"hello world\n".to_vec()), ("empty", Vec::new())],
        )
        .0
    }

    /// Read everything in [acked, tx_end) with `chunk`-sized reads, then ack it all.
    fn drain(c: &mut ObjectConn<'_>, chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut off = c.state.acked;
        let mut buf = vec![0u8; chunk];
        while off < c.tx_end() {
            let n = c.read_at(off, &mut buf);
            assert!(n > 0 && n <= chunk);
            assert!(n == chunk || off + n as u64 == c.tx_end(), "short read mid-stream");
            out.extend_from_slice(&buf[..n]);
            off += n as u64;
        }
        assert_eq!(c.read_at(off, &mut buf), 0);
        c.on_acked(off);
        out
    }

    fn run(reqs: &[u8]) -> (Vec<u8>, bool, HttpCounters) {
        let s = store();
        let mut st = HttpState::new();
        let mut stats = HttpCounters::default();
        let mut c = ObjectConn::new(&mut st, &s, &mut stats);
        let mut out = Vec::new();
        let mut rest = reqs;
        for _ in 0..1000 {
            let n = c.on_recv(rest);
            rest = &rest[n..];
            out.extend(drain(&mut c, 1000));
            if rest.is_empty() {
                break;
            }
        }
        let closed = c.tx_closed();
        (out, closed, stats)
    }

    fn text(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    #[test]
    fn get_and_head() {
        let (out, closed, stats) = run(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\nHEAD /hello.txt HTTP/1.1\r\n\r\n");
        let want = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 12\r\n\
                    Connection: keep-alive\r\n\r\nhello world\n\
                    HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 12\r\n\
                    Connection: keep-alive\r\n\r\n";
        assert_eq!(text(&out), want);
        assert!(!closed);
        assert_eq!(stats.requests, 2);
        assert_eq!(stats.resp_2xx, 2);
        assert_eq!(stats.bytes_out, out.len() as u64);
    }

    #[test]
    fn not_found_and_method_not_allowed_keep_alive() {
        let (out, closed, stats) = run(b"GET /nope HTTP/1.1\r\n\r\nPOST /hello.txt HTTP/1.1\r\n\r\nGET /empty HTTP/1.1\r\n\r\n");
        let t = text(&out);
        assert!(t.starts_with("HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 14\r\nConnection: keep-alive\r\n\r\n404 Not Found\n"), "{t}");
        assert!(t.contains("HTTP/1.1 405 Method Not Allowed\r\n"), "{t}");
        assert!(t.contains("Allow: GET, HEAD\r\n"), "{t}");
        assert!(t.ends_with("Content-Length: 0\r\nConnection: keep-alive\r\n\r\n"), "{t}");
        assert!(!closed);
        assert_eq!((stats.resp_2xx, stats.resp_4xx), (1, 2));
    }

    #[test]
    fn connection_close_and_http10() {
        let (out, closed, _) = run(b"GET /hello.txt HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\nGET /hello.txt HTTP/1.1\r\n\r\n");
        let t = text(&out);
        assert!(t.contains("Connection: close\r\n"));
        assert_eq!(t.matches("HTTP/1.1 200").count(), 1, "nothing after close");
        assert!(closed);
        let (out, closed, _) = run(b"GET /hello.txt HTTP/1.0\r\n\r\n");
        assert!(text(&out).contains("Connection: close\r\n\r\nhello world\n"));
        assert!(closed);
    }

    #[test]
    fn bad_requests_close() {
        for req in [
            &b"GARBAGE\r\n\r\n"[..],
            b"GET /x\r\n\r\n",
            b"GET  /x HTTP/1.1\r\n\r\n",
            b"GET /x HTTP/1.1\r\nNoColon\r\n\r\n",
            b"GET /x HTTP/1.1\r\nBad Name: v\r\n\r\n",
            b"GET /x HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
            b"GET /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            b"GET /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET x HTTP/1.1\r\n\r\n",
            b"GET /x HTTP/1.1\r\nA: \x01\r\n\r\n",
            b"\x00\x01\x02\x03binary",
        ] {
            let (out, closed, stats) = run(req);
            assert!(text(&out).starts_with("HTTP/1.1 400 Bad Request\r\n"), "{:?} -> {}", text(req), text(&out));
            assert!(text(&out).contains("Connection: close"));
            assert!(closed, "{:?}", text(req));
            assert_eq!(stats.resp_4xx, 1);
        }
        let (out, closed, stats) = run(b"GET /x HTTP/2.0\r\n\r\n");
        assert!(text(&out).starts_with("HTTP/1.1 505 "));
        assert!(closed);
        assert_eq!(stats.resp_5xx, 1);
    }

    #[test]
    fn oversized_header_section_is_431() {
        let mut req = b"GET /hello.txt HTTP/1.1\r\nX: ".to_vec();
        req.extend_from_slice(&[b'a'; 3000]);
        let (out, closed, _) = run(&req);
        assert!(text(&out).starts_with("HTTP/1.1 431 "), "{}", text(&out));
        assert!(closed);
    }

    #[test]
    fn lenient_forms() {
        // Leading empty lines, bare LF, absolute-form, query string, Content-Length: 0.
        let (out, _, stats) = run(b"\r\n\r\nGET http://vip.example/hello.txt?x=1 HTTP/1.1\nContent-Length: 0\n\nGET /gen/5 HTTP/1.1\n\r\n");
        let t = text(&out);
        assert_eq!(stats.resp_2xx, 2, "{t}");
        assert!(t.contains("hello world\n"));
    }

    #[test]
    fn generated_body_matches() {
        let s = store();
        let mut st = HttpState::new();
        let mut stats = HttpCounters::default();
        let mut c = ObjectConn::new(&mut st, &s, &mut stats);
        let req = b"GET /gen/100000 HTTP/1.1\r\n\r\n";
        assert_eq!(c.on_recv(req), req.len());
        let out = drain(&mut c, 1460);
        let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(text(&out[..split]).contains("Content-Length: 100000\r\n"));
        let mut want = vec![0u8; 100_000];
        gen_byte_range(0, &mut want);
        assert_eq!(&out[split..], &want[..]);
        // Too large a generated object is simply not found.
        let big = b"GET /gen/1048577 HTTP/1.1\r\n\r\n";
        assert_eq!(c.on_recv(big), big.len());
        assert!(text(&drain(&mut c, 1460)).starts_with("HTTP/1.1 404 "));
    }

    #[test]
    fn pipeline_backpressure() {
        let s = store();
        let mut st = HttpState::new();
        let mut stats = HttpCounters::default();
        let mut c = ObjectConn::new(&mut st, &s, &mut stats);
        let one = b"GET /hello.txt HTTP/1.1\r\n\r\n";
        let many: Vec<u8> = one.iter().copied().cycle().take(one.len() * 6).collect();
        let n = c.on_recv(&many);
        assert_eq!(n, one.len() * MAX_PIPELINE, "stops at a request boundary when the queue is full");
        assert_eq!(c.rx_space(), 0);
        assert_eq!(c.on_recv(&many[n..]), 0);
        let per = c.tx_end() / MAX_PIPELINE as u64;
        // Acking part of the first response frees nothing; acking all of it frees one slot.
        c.on_acked(per - 1);
        assert_eq!(c.rx_space(), 0);
        c.on_acked(per);
        assert!(c.rx_space() > 0);
        assert_eq!(c.on_recv(&many[n..]), one.len());
        assert_eq!(c.state.queued(), MAX_PIPELINE);
        // Retransmission of unacked data is byte-identical.
        let mut a = vec![0u8; 50];
        let mut b = vec![0u8; 50];
        assert_eq!(c.read_at(per + 10, &mut a), 50);
        assert_eq!(c.read_at(per + 10, &mut b), 50);
        assert_eq!(a, b);
        // Below acked: nothing (contract violation, no panic).
        assert_eq!(c.read_at(0, &mut a), 0);
    }

    #[test]
    fn request_split_across_segments() {
        let s = store();
        let mut st = HttpState::new();
        let mut stats = HttpCounters::default();
        let mut c = ObjectConn::new(&mut st, &s, &mut stats);
        let req = b"GET /hello.txt HTTP/1.1\r\nHost: a\r\n\r\n";
        for b in req.iter() {
            assert_eq!(c.on_recv(std::slice::from_ref(b)), 1);
        }
        assert!(text(&drain(&mut c, 7)).ends_with("hello world\n"));
    }

    #[test]
    fn peer_fin_closes_after_queued_responses() {
        let s = store();
        let mut st = HttpState::new();
        let mut stats = HttpCounters::default();
        let mut c = ObjectConn::new(&mut st, &s, &mut stats);
        c.on_recv(b"GET /hello.txt HTTP/1.1\r\n\r\nGET /hel");
        c.on_peer_fin();
        assert!(c.tx_closed());
        assert_eq!(c.state.partial_request(), b"");
        assert!(text(&drain(&mut c, 100)).ends_with("hello world\n"));
    }

    #[test]
    fn cursor_round_trip_reproduces_output() {
        let s = store();
        let mut st = HttpState::new();
        let mut stats = HttpCounters::default();
        let mut c = ObjectConn::new(&mut st, &s, &mut stats);
        c.on_recv(b"GET /gen/3000 HTTP/1.1\r\n\r\nHEAD /nope HTTP/1.1\r\n\r\nGET /hello.txt HTTP/1.1\r\nConnection: close\r\n\r\n");
        c.on_acked(500);
        let cur = c.state.cursor();
        let mut st2 = HttpState::from_cursor(&cur, b"").unwrap();
        assert_eq!(st2.cursor(), cur);
        let mut stats2 = HttpCounters::default();
        let mut c2 = ObjectConn::new(&mut st2, &s, &mut stats2);
        assert_eq!(c2.tx_end(), c.tx_end());
        assert!(c2.tx_closed());
        assert_eq!(drain(&mut c2, 333), drain(&mut c, 1460));

        // Inconsistent cursors are rejected.
        let mut bad = cur;
        bad.count = 9;
        assert!(HttpState::from_cursor(&bad, b"").is_none());
        let mut bad = cur;
        bad.responses[1].start += 1;
        assert!(HttpState::from_cursor(&bad, b"").is_none());
        let mut bad = cur;
        bad.responses[0].status = 999;
        assert!(HttpState::from_cursor(&bad, b"").is_none());
        let mut bad = cur;
        bad.tx_end += 1;
        assert!(HttpState::from_cursor(&bad, b"").is_none());
        let mut bad = cur;
        bad.responses[0].content_len = u64::MAX;
        assert!(HttpState::from_cursor(&bad, b"").is_none());
        assert!(HttpState::from_cursor(&cur, &[0u8; REQ_BUF_LEN]).is_none());
    }

    #[test]
    fn partial_request_survives_cursor() {
        let s = store();
        let mut st = HttpState::new();
        let mut stats = HttpCounters::default();
        ObjectConn::new(&mut st, &s, &mut stats).on_recv(b"GET /hello.t");
        let mut st2 = HttpState::from_cursor(&st.cursor(), st.partial_request()).unwrap();
        let mut c2 = ObjectConn::new(&mut st2, &s, &mut stats);
        c2.on_recv(b"xt HTTP/1.1\r\n\r\n");
        assert!(text(&drain(&mut c2, 100)).ends_with("hello world\n"));
    }

    #[test]
    fn state_is_small() {
        assert!(core::mem::size_of::<HttpState>() <= REQ_BUF_LEN + 256, "{}", core::mem::size_of::<HttpState>());
        assert!(core::mem::size_of::<HttpCursor>() <= 160, "{}", core::mem::size_of::<HttpCursor>());
    }

    proptest! {
        /// Arbitrary bytes in arbitrary segmentation: no panic, output always well-formed
        /// (every read in [acked, tx_end) is full and repeatable), queue bounded.
        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..5000),
                                cuts in proptest::collection::vec(1usize..700, 1..20)) {
            let s = store();
            let mut st = HttpState::new();
            let mut stats = HttpCounters::default();
            let mut c = ObjectConn::new(&mut st, &s, &mut stats);
            let mut rest = &data[..];
            for cut in cuts.iter().cycle().take(200) {
                if rest.is_empty() { break; }
                let seg = &rest[..(*cut).min(rest.len())];
                let n = c.on_recv(seg);
                prop_assert!(n <= seg.len());
                rest = &rest[n..];
                prop_assert!(c.state.queued() <= MAX_PIPELINE);
                let _ = drain(&mut c, *cut);
            }
        }

        /// Valid-looking requests from a small grammar, pipelined and cut anywhere: the output
        /// equals the output for the same requests sent one at a time.
        #[test]
        fn segmentation_does_not_matter(reqs in proptest::collection::vec(
                prop_oneof![
                    Just("GET /hello.txt HTTP/1.1\r\n\r\n"),
                    Just("HEAD /gen/777 HTTP/1.1\r\nAccept: */*\r\n\r\n"),
                    Just("GET /gen/70000 HTTP/1.1\r\n\r\n"),
                    Just("GET /missing HTTP/1.1\r\n\r\n"),
                    Just("PUT /x HTTP/1.1\r\n\r\n"),
                    Just("GET /empty HTTP/1.1\nHost: h\n\n"),
                ], 1..10),
                cut in 1usize..200, chunk in 1usize..3000) {
            let all: String = reqs.concat();
            let s = store();
            let mut st = HttpState::new();
            let mut stats = HttpCounters::default();
            let mut c = ObjectConn::new(&mut st, &s, &mut stats);
            let mut out = Vec::new();
            let mut rest = all.as_bytes();
            while !rest.is_empty() {
                let n = c.on_recv(&rest[..cut.min(rest.len())]);
                rest = &rest[n..];
                out.extend(drain(&mut c, chunk));
            }
            let mut want = Vec::new();
            for r in &reqs {
                want.extend(run(r.as_bytes()).0);
            }
            prop_assert_eq!(out, want);
        }
    }
}
