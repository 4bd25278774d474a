//! The `object` service: HTTP/1.1 `GET`/`HEAD` of named objects (RFC 9110, RFC 9112) over
//! persistent connections, as a pull-based [`ByteStream`].
//!
//! Per-connection state ([`HttpState`]) is fixed-size (~300 B): a request that arrives whole
//! is parsed in place in the received segment; only the tail of a header section split
//! across segments is kept (inline up to [`TAIL_INLINE`] bytes, a heap spill up to 2 KiB
//! beyond, freed when the request completes); and a ring of up to [`MAX_PIPELINE`] queued
//! responses. A queued response is a small record — start stream
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

mod request;
mod response;
#[cfg(test)]
mod tests;

use self::request::{find_header_end, is_forbidden_ctl, parse_request, Request};
use self::response::{status_text, status_text_len, Queued};
pub use self::response::{ResponseRecord, FLAG_CLOSE, FLAG_HEAD, MAX_HEADER_LEN, STATUS_TEXT_BODY};
use super::object::{ObjectId, ObjectStore};
use super::{ByteStream, Kind};
use crate::counters::{Counters, Event};

/// Request buffer: the longest header section accepted.
pub const REQ_BUF_LEN: usize = 2048;
/// Responses queued per connection (pipelining depth).
pub const MAX_PIPELINE: usize = 4;

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

/// Bytes of an incomplete request kept inline; a longer one spills to the heap.
pub const TAIL_INLINE: usize = 96;

/// The received bytes of an incomplete request header section (consumed from TCP, not yet
/// answered). A request that arrives whole in one segment is parsed where it lies and never
/// lands here; only the tail of a section split across segments does: inline up to
/// [`TAIL_INLINE`] bytes (a request line cut by a small MSS, a slow client), on the heap
/// beyond that (a header section over ~100 bytes split across segments: rare), at most
/// [`REQ_BUF_LEN`] bytes, and freed as soon as the request is complete. So an idle or busy
/// connection costs its slot and nothing else (issue 16: memory per flow).
#[derive(Clone)]
struct Partial {
    inline: [u8; TAIL_INLINE],
    spill: Option<Box<[u8; REQ_BUF_LEN]>>,
    len: u16,
}

impl Partial {
    const fn new() -> Partial {
        Partial { inline: [0; TAIL_INLINE], spill: None, len: 0 }
    }

    #[inline]
    fn len(&self) -> usize {
        self.len as usize
    }

    fn as_slice(&self) -> &[u8] {
        match &self.spill {
            Some(b) => &b[..self.len()],
            None => &self.inline[..self.len()],
        }
    }

    /// Append `bytes`; the caller keeps the total within [`REQ_BUF_LEN`].
    fn extend(&mut self, bytes: &[u8]) {
        let (old, new) = (self.len(), self.len() + bytes.len());
        debug_assert!(new <= REQ_BUF_LEN);
        if self.spill.is_none() && new > TAIL_INLINE {
            let mut b = Box::new([0u8; REQ_BUF_LEN]);
            b[..old].copy_from_slice(&self.inline[..old]);
            self.spill = Some(b);
        }
        match &mut self.spill {
            Some(b) => b[old..new].copy_from_slice(bytes),
            None => self.inline[old..new].copy_from_slice(bytes),
        }
        self.len = new as u16;
    }

    /// Forget the bytes (the request was answered) and give a spill back.
    fn clear(&mut self) {
        self.len = 0;
        self.spill = None;
    }
}

/// Per-connection HTTP state: fixed size (~300 B) and no heap, except while a long request
/// header section is split across segments ([`Partial`]).
#[derive(Clone)]
pub struct HttpState {
    partial: Partial,
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
            .field("partial", &self.partial.len())
            .field("cursor", &self.cursor())
            .finish()
    }
}

impl HttpState {
    pub const fn new() -> Self {
        HttpState {
            partial: Partial::new(),
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
        self.partial.as_slice()
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
        s.partial.extend(partial_request);
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
            let old = self.partial.len();
            if old == 0 {
                // RFC 9112 §2.2: ignore empty lines received before the request-line.
                while used < data.len() && matches!(data[used], b'\r' | b'\n') {
                    used += 1;
                }
                if used == data.len() {
                    break;
                }
                // A whole header section in this segment is parsed where it lies.
                let rest = &data[used..];
                let window = &rest[..rest.len().min(REQ_BUF_LEN)];
                if let Some(end) = find_header_end(window, 0) {
                    used += end;
                    self.answer(parse_request(&window[..end], store), stats);
                    if self.closing {
                        return data.len();
                    }
                    continue;
                }
                // Incomplete: its tail waits for the next segment.
                if window.len() == REQ_BUF_LEN || window.iter().any(|&c| is_forbidden_ctl(c)) {
                    return self.refuse(window.len() != REQ_BUF_LEN, data.len(), stats);
                }
                self.partial.extend(window);
                used += window.len();
                continue;
            }
            let take = (REQ_BUF_LEN - old).min(data.len() - used);
            self.partial.extend(&data[used..used + take]);
            let len = old + take;
            match find_header_end(self.partial.as_slice(), old.saturating_sub(2)) {
                Some(end) => {
                    // Bytes after the header section belong to the next request: consume only
                    // up to `end` and go round again.
                    used += end - old;
                    let r = parse_request(&self.partial.as_slice()[..end], store);
                    self.partial.clear();
                    self.answer(r, stats);
                    if self.closing {
                        return data.len();
                    }
                }
                None => {
                    used += take;
                    let junk = self.partial.as_slice()[old..len].iter().any(|&c| is_forbidden_ctl(c));
                    if len == REQ_BUF_LEN || junk {
                        return self.refuse(junk, data.len(), stats);
                    }
                }
            }
        }
        used
    }

    /// A complete header section, parsed: queue its response.
    fn answer(&mut self, r: Request, stats: &mut HttpCounters) {
        stats.requests += 1;
        self.enqueue(r.status, r.obj, r.content_len, r.head, r.close, stats);
    }

    /// An unparsable header section: fail fast on binary junk (400), 431 when the section is
    /// just too long; either closes the connection, so the rest of `n` bytes is consumed.
    fn refuse(&mut self, junk: bool, n: usize, stats: &mut HttpCounters) -> usize {
        stats.requests += 1;
        self.partial.clear();
        let status = if junk { 400 } else { 431 };
        self.enqueue(status, STATUS_TEXT_BODY, status_text_len(status), false, true, stats);
        n
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
        REQ_BUF_LEN - self.partial.len()
    }
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
        self.state.partial.clear();
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

/// The `object` kind (see the module docs): listeners hold the store, connections an
/// [`HttpState`].
pub struct ObjectKind;

/// One [`ResponseRecord`] in a service image: `start u64 | content_len u64 | obj u32 |
/// status u16 | flags u8`.
const IMAGE_RECORD_LEN: usize = 23;

impl Kind for ObjectKind {
    const NAME: &'static str = "object";
    const IMAGE_TAG: u8 = 2;
    type Spec = std::sync::Arc<ObjectStore>;
    type State = HttpState;
    type Counters = HttpCounters;
    type Conn<'a> = ObjectConn<'a>;

    fn new_state(_spec: &Self::Spec) -> HttpState {
        HttpState::default()
    }

    #[inline]
    fn bind<'a>(state: &'a mut HttpState, spec: &'a Self::Spec, stats: &'a mut HttpCounters) -> ObjectConn<'a> {
        ObjectConn::new(state, spec, stats)
    }

    /// An object state without a store serves from an empty one.
    fn detached_spec() -> &'static Self::Spec {
        static EMPTY: std::sync::OnceLock<std::sync::Arc<ObjectStore>> = std::sync::OnceLock::new();
        EMPTY.get_or_init(|| std::sync::Arc::new(ObjectStore::empty(Default::default())))
    }

    fn peer_fin(state: &HttpState) -> bool {
        state.peer_fin
    }

    /// The response queue, then the partial request: `count u8 | acked u64 | tx_end u64 |
    /// flags u8 (1 closing, 2 peer_fin) | count records | partial request bytes`,
    /// little-endian.
    fn image(state: &HttpState, out: &mut Vec<u8>) {
        let c = state.cursor();
        out.push(c.count);
        out.extend_from_slice(&c.acked.to_le_bytes());
        out.extend_from_slice(&c.tx_end.to_le_bytes());
        out.push(c.closing as u8 | (c.peer_fin as u8) << 1);
        for r in &c.responses[..(c.count as usize).min(MAX_PIPELINE)] {
            out.extend_from_slice(&r.start.to_le_bytes());
            out.extend_from_slice(&r.content_len.to_le_bytes());
            out.extend_from_slice(&r.obj.0.to_le_bytes());
            out.extend_from_slice(&r.status.to_le_bytes());
            out.push(r.flags);
        }
        out.extend_from_slice(state.partial_request());
    }

    fn from_image(_spec: &Self::Spec, b: &[u8]) -> Option<HttpState> {
        let u64_at = |o: usize| b.get(o..o + 8).map(|s| u64::from_le_bytes(s.try_into().unwrap_or([0; 8])));
        let count = *b.first()? as usize;
        if count > MAX_PIPELINE {
            return None;
        }
        let flags = *b.get(17)?;
        let mut c = HttpCursor {
            count: count as u8,
            acked: u64_at(1)?,
            tx_end: u64_at(9)?,
            closing: flags & 1 != 0,
            peer_fin: flags & 2 != 0,
            ..HttpCursor::default()
        };
        let mut o = 18;
        for r in c.responses[..count].iter_mut() {
            let rec = b.get(o..o + IMAGE_RECORD_LEN)?;
            *r = ResponseRecord {
                start: u64::from_le_bytes(rec[0..8].try_into().ok()?),
                content_len: u64::from_le_bytes(rec[8..16].try_into().ok()?),
                obj: ObjectId(u32::from_le_bytes(rec[16..20].try_into().ok()?)),
                status: u16::from_le_bytes(rec[20..22].try_into().ok()?),
                flags: rec[22],
            };
            o += IMAGE_RECORD_LEN;
        }
        HttpState::from_cursor(&c, b.get(o..)?)
    }

    fn publish(stats: &HttpCounters, into: &mut Counters) {
        into.events[Event::HttpRequests as usize] = stats.requests;
    }
}
