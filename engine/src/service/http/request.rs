//! Request parsing of the `object` service: a complete HTTP/1.1 header section (RFC 9112
//! §2–§5, RFC 9110 §5) in, the response it asks for out.

use super::response::{status_text_len, STATUS_TEXT_BODY};
use crate::service::object::{ObjectId, ObjectStore};

/// What a complete header section asks for.
pub(super) struct Request {
    pub(super) status: u16,
    pub(super) close: bool,
    pub(super) head: bool,
    pub(super) obj: ObjectId,
    pub(super) content_len: u64,
}

/// Control characters that never appear in a request header section (HTAB, CR, LF allowed;
/// RFC 9110 §5.5 field values exclude CTLs; obs-text ≥ 0x80 is allowed).
#[inline]
pub(super) fn is_forbidden_ctl(c: u8) -> bool {
    (c < 0x20 && !matches!(c, b'\t' | b'\r' | b'\n')) || c == 0x7f
}

/// End (one past the final LF) of the header section in `buf`, searching from `from`: the
/// first LF followed by LF or CR LF.
pub(super) fn find_header_end(buf: &[u8], from: usize) -> Option<usize> {
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
pub(super) fn parse_request(section: &[u8], store: &ObjectStore) -> Request {
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
