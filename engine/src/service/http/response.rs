//! Responses of the `object` service: the replicated [`ResponseRecord`] of a queued response
//! and the header and status-text bytes regenerated from it on every `read_at` (RFC 9110
//! §15, RFC 9112 §6), so that TCP keeps no send buffer.

use crate::service::object::ObjectId;

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
pub(super) fn status_text(status: u16, out: &mut [u8; 64]) -> usize {
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

pub(super) fn status_text_len(status: u16) -> u64 {
    let mut t = [0u8; 64];
    status_text(status, &mut t) as u64
}

/// A queued response with its header length (derived from the record, kept to find the
/// body without regenerating the header).
#[derive(Copy, Clone, Debug, Default)]
pub(super) struct Queued {
    pub(super) rec: ResponseRecord,
    pub(super) hdr_len: u16,
}

impl Queued {
    #[inline]
    pub(super) fn end(&self) -> u64 {
        self.rec.start + u64::from(self.hdr_len) + self.rec.body_len()
    }
}
