//! Tests of the `object` service: request handling, responses, cursors and segmentation.

use crate::service::object::{gen_byte_range, StoreConfig};
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

/// A header section longer than the inline tail, split at every byte: the spill holds it,
/// the answer is the same as unsplit, and the spill is given back once it is answered.
#[test]
fn long_request_split_anywhere_spills_and_is_freed() {
    let s = store();
    let pad = "a".repeat(900);
    let req = format!("GET /hello.txt HTTP/1.1\r\nX-Pad: {pad}\r\n\r\n");
    let (want, _, _) = run(req.as_bytes());
    for cut in [1, 50, TAIL_INLINE - 1, TAIL_INLINE, TAIL_INLINE + 1, 500, req.len() - 1] {
        let mut st = HttpState::new();
        let mut stats = HttpCounters::default();
        let mut c = ObjectConn::new(&mut st, &s, &mut stats);
        assert_eq!(c.on_recv(&req.as_bytes()[..cut]), cut);
        assert_eq!(c.state.partial_request(), &req.as_bytes()[..cut], "cut {cut}: the tail is kept");
        assert_eq!(c.state.partial.spill.is_some(), cut > TAIL_INLINE, "cut {cut}: spilled only beyond the inline tail");
        // The standby rebuilds the same partial from the replicated bytes.
        let st2 = HttpState::from_cursor(&c.state.cursor(), c.state.partial_request()).unwrap();
        assert_eq!(st2.partial_request(), c.state.partial_request());
        assert_eq!(c.on_recv(&req.as_bytes()[cut..]), req.len() - cut);
        assert!(c.state.partial.spill.is_none() && c.state.partial_request().is_empty(), "cut {cut}: spill freed");
        assert_eq!(drain(&mut c, 1460), want, "cut {cut}");
    }
}

/// A request that arrives whole is parsed where it lies: nothing is copied into the state.
#[test]
fn whole_requests_are_parsed_in_place() {
    let s = store();
    let mut st = HttpState::new();
    let mut stats = HttpCounters::default();
    let mut c = ObjectConn::new(&mut st, &s, &mut stats);
    let big = format!("GET /hello.txt HTTP/1.1\r\nX-Pad: {}\r\n\r\nGET /hel", "b".repeat(1200));
    assert_eq!(c.on_recv(big.as_bytes()), big.len());
    assert_eq!(c.state.queued(), 1);
    assert_eq!(c.state.partial_request(), b"GET /hel", "only the incomplete tail is kept");
    assert!(c.state.partial.spill.is_none());
}

#[test]
fn state_is_small() {
    assert!(core::mem::size_of::<HttpState>() <= 320, "{}", core::mem::size_of::<HttpState>());
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
                // Longer than the inline tail: split, it spills.
                Just("GET /hello.txt HTTP/1.1\r\nUser-Agent: a-long-user-agent-string/1.0 (X11; Linux x86_64)\r\nAccept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\r\n"),
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
