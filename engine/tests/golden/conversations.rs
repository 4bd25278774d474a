//! Multi-step TCP conversations through the real stack (packetdrill style): every step a
//! frame in, its verdict and its output frames checked.

use super::*;

fn state(h: &Harness, p: &Peer) -> Option<State> {
    h.state_of(p)
}

/// One segment from the stack, absorbed by the peer.
fn one_seg(p: &mut Peer, out: &[Vec<u8>]) -> Seg {
    assert_eq!(out.len(), 1, "expected one segment, got {:?}", out.iter().map(|f| parse_seg(f)).collect::<Vec<_>>());
    let s = parse_seg(&out[0]);
    p.absorb(&s);
    s
}

/// A pure ACK: ACK flag only, SEQ/ACK as given, no payload.
fn assert_pure_ack(s: &Seg, seq: SeqNum, ack: SeqNum) {
    assert_eq!(s.flags(), TcpFlags::ACK, "pure ACK");
    assert_eq!((s.hdr.seq, s.hdr.ack), (seq, ack), "SEQ/ACK");
    assert!(s.payload.is_empty());
}

#[test]
fn conv_http_get_gen_1000() {
    let mut h = Harness::standard();
    let mut p = Peer::linux(41000, HTTP_PORT);
    let sa = h.connect(&mut p);
    let req = p.data(b"GET /gen/1000 HTTP/1.1\r\nHost: vip\r\n\r\n");
    let out = h.step("GET /gen/1000", &req, Verdict::Accepted);
    let s = one_seg(&mut p, &out);
    let want = gen_response(1000);
    assert_eq!(s.payload, want, "header + gen_byte_range body");
    assert_eq!(s.flags(), TcpFlags::ACK | TcpFlags::PSH);
    assert_eq!(s.hdr.seq, sa.hdr.seq + 1, "first byte after our SYN");
    assert_eq!(s.hdr.ack, p.snd_nxt, "request acknowledged");
    let (tsval, tsecr) = s.hdr.options.timestamps.expect("TS on every segment");
    assert_eq!(tsecr, p.tsval, "TSecr = the request's TSval");
    assert!(tsval.wrapping_sub(sa.hdr.options.timestamps.unwrap().0) as i32 >= 0, "TSval monotonic");
    assert_eq!(s.hdr.options.sack_count, 0);
    assert_eq!(s.header_len, 32, "TS only on data segments");
    // Window: the SYN-ACK offered 65535 bytes and a window never shrinks (RFC 9293
    // §3.8.6.2.2), so what is left of it, in units of 2^7, rounded up.
    let req_len = b"GET /gen/1000 HTTP/1.1\r\nHost: vip\r\n\r\n".len() as u32;
    assert_eq!(u32::from(s.hdr.window), (65535 - req_len).div_ceil(128), "window field");
    // ACK it: nothing more to send, connection stays open (keep-alive).
    let ack = p.ack();
    let out = h.step("ACK the response", &ack, Verdict::Accepted);
    assert!(out.is_empty());
    assert_eq!(state(&h, &p), Some(State::Established));
    assert_eq!(h.stack.counters().svc_bytes_out.iter().sum::<u64>(), want.len() as u64);
}

#[test]
fn conv_http_large_object_across_segments() {
    let mut h = Harness::standard();
    let mut p = Peer::linux(41001, HTTP_PORT);
    h.connect(&mut p);
    let req = p.data(b"GET /gen/100000 HTTP/1.1\r\n\r\n");
    let mut out = h.step("GET /gen/100000", &req, Verdict::Accepted);
    let want = gen_response(100_000);
    let mut rounds = 0;
    while p.received.len() < want.len() {
        rounds += 1;
        assert!(rounds < 50, "stalled at {} bytes", p.received.len());
        assert!(!out.is_empty(), "stalled at {} bytes", p.received.len());
        for s in p.absorb_all(&out) {
            assert!(s.payload.len() <= 1448, "MSS 1460 - 12 bytes of TS");
        }
        let ack = p.ack();
        out = h.step("ACK", &ack, Verdict::Accepted);
    }
    assert_eq!(p.received, want);
    assert!(out.is_empty());
}

#[test]
fn conv_http_404_and_keep_alive() {
    let mut h = Harness::standard();
    let mut p = Peer::linux(41002, HTTP_PORT);
    h.connect(&mut p);
    let out = h.step("GET /nope", &p.data(b"GET /nope HTTP/1.1\r\n\r\n"), Verdict::Accepted);
    let s = one_seg(&mut p, &out);
    assert_eq!(
        s.payload,
        b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 14\r\nConnection: keep-alive\r\n\r\n404 Not Found\n"
    );
    assert!(!s.flags().fin(), "404 keeps the connection");
    // A file object on the same connection.
    let out = h.step("GET /hello.txt", &p.data(b"GET /hello.txt HTTP/1.1\r\n\r\n"), Verdict::Accepted);
    let s = one_seg(&mut p, &out);
    assert!(s.payload.ends_with(b"Content-Length: 12\r\nConnection: keep-alive\r\n\r\nhello world\n"));
    assert_eq!(state(&h, &p), Some(State::Established));
}

/// 400 closes: response and FIN in one segment (FIN-WAIT-1), then the client's ACK
/// (FIN-WAIT-2), its FIN (TIME-WAIT, ACKed), and the TIME-WAIT timer removes the flow.
#[test]
fn conv_http_400_close_and_time_wait_expiry() {
    let mut h = Harness::standard();
    let mut p = Peer::linux(41003, HTTP_PORT);
    h.connect(&mut p);
    let out = h.step("garbage", &p.data(b"garbage\r\n\r\n"), Verdict::Accepted);
    let s = one_seg(&mut p, &out);
    assert_eq!(
        s.payload,
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 16\r\nConnection: close\r\n\r\n400 Bad Request\n"
    );
    assert_eq!(s.flags(), TcpFlags::ACK | TcpFlags::PSH | TcpFlags::FIN, "FIN piggybacked on the response");
    assert!(p.got_fin);
    assert_eq!(state(&h, &p), Some(State::FinWait1));
    let out = h.step("ACK response+FIN", &p.ack(), Verdict::Accepted);
    assert!(out.is_empty());
    assert_eq!(state(&h, &p), Some(State::FinWait2));
    let fin = p.fin();
    let out = h.step("client FIN", &fin, Verdict::Accepted);
    let s = one_seg(&mut p, &out);
    assert_pure_ack(&s, p.rcv_nxt, p.snd_nxt);
    assert_eq!(state(&h, &p), Some(State::TimeWait));
    // TIME-WAIT (2 s): a retransmitted FIN is ACKed again.
    h.advance(Duration::from_millis(500));
    let mut p2 = p.clone();
    let refin = p2.raw(TcpFlags::FIN | TcpFlags::ACK, p.snd_nxt - 1, p.rcv_nxt, &[]);
    p.tsval = p2.tsval;
    let out = h.step("retransmitted FIN in TIME-WAIT", &refin, Verdict::Drop(Drop::TcpRejected));
    let s = one_seg(&mut p, &out);
    assert_pure_ack(&s, p.rcv_nxt, p.snd_nxt);
    // The FIN restarted the 2 s timer at +0.5 s: still there at +2.4 s, gone at +2.5 s.
    let (out, d) = h.poll_at(T0 + Duration::from_millis(2_400));
    assert!(out.is_empty() && d.event(Event::FlowsClosed) == 0);
    assert_eq!(state(&h, &p), Some(State::TimeWait));
    let (out, d) = h.poll_at(T0 + Duration::from_millis(2_501));
    assert!(out.is_empty());
    assert_eq!(d.event(Event::FlowsClosed), 1, "TIME-WAIT expiry closes the flow");
    assert_eq!(state(&h, &p), None);
    assert_eq!(h.flows_by_state_total(), 0);
}

#[test]
fn conv_http_binary_garbage_400() {
    let mut h = Harness::standard();
    let mut p = Peer::linux(41004, HTTP_PORT);
    h.connect(&mut p);
    let out = h.step("binary junk", &p.data(&[0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00]), Verdict::Accepted);
    let s = one_seg(&mut p, &out);
    assert!(s.payload.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
    assert!(s.flags().fin());
}

/// Client closes first: its FIN is ACKed together with our FIN (CLOSE-WAIT -> LAST-ACK), the
/// final ACK removes the flow.
#[test]
fn conv_echo_and_client_close() {
    let mut h = Harness::standard();
    let mut p = Peer::linux(41010, ECHO_PORT);
    h.connect(&mut p);
    let out = h.step("echo data", &p.data(b"hello, echo"), Verdict::Accepted);
    let s = one_seg(&mut p, &out);
    assert_eq!(s.payload, b"hello, echo");
    assert_eq!(s.hdr.ack, p.snd_nxt);
    assert_eq!(h.step("ACK echo", &p.ack(), Verdict::Accepted).len(), 0);
    let fin = p.fin();
    let out = h.step("client FIN", &fin, Verdict::Accepted);
    let s = one_seg(&mut p, &out);
    assert_eq!(s.flags(), TcpFlags::ACK | TcpFlags::FIN, "ACK of their FIN + our FIN");
    assert_eq!(s.hdr.ack, p.snd_nxt, "FIN acknowledged");
    assert_eq!(state(&h, &p), Some(State::LastAck));
    let out = h.step("last ACK", &p.ack(), Verdict::Event(Event::FlowsClosed));
    assert!(out.is_empty());
    assert_eq!(state(&h, &p), None);
    assert_eq!(h.flows_by_state_total(), 0);
    // The 4-tuple is free again: an ACK now draws a RST (no flow).
    let stray = p.ack();
    let out = h.step("ACK after close", &stray, Verdict::Drop(Drop::NoFlow));
    assert_eq!(parse_seg(one(&out)).hdr.seq, p.rcv_nxt);
}

/// Simultaneous close: our FIN is out, the client's FIN arrives without acknowledging it
/// (CLOSING), then its ACK of our FIN moves us to TIME-WAIT.
#[test]
fn conv_simultaneous_close_closing() {
    let mut h = Harness::standard();
    let mut p = Peer::linux(41011, HTTP_PORT);
    h.connect(&mut p);
    let out = h.step("Connection: close", &p.data(b"GET /gen/10 HTTP/1.1\r\nConnection: close\r\n\r\n"), Verdict::Accepted);
    let s = one_seg(&mut p, &out);
    assert!(s.flags().fin() && s.payload.ends_with(&gen_response(10)[gen_response(10).len() - 10..]));
    // FIN that acknowledges the data but not our FIN.
    let ack_data_only = p.rcv_nxt - 1;
    let fin = p.raw(TcpFlags::FIN | TcpFlags::ACK, p.snd_nxt, ack_data_only, &[]);
    p.snd_nxt += 1;
    let out = h.step("FIN crossing ours", &fin, Verdict::Accepted);
    let s = one_seg(&mut p, &out);
    assert_eq!(s.hdr.ack, p.snd_nxt, "their FIN ACKed");
    assert!(s.hdr.flags.ack());
    assert_eq!(state(&h, &p), Some(State::Closing));
    let out = h.step("ACK of our FIN", &p.ack(), Verdict::Accepted);
    assert!(out.is_empty());
    assert_eq!(state(&h, &p), Some(State::TimeWait));
    let (_, d) = h.poll_at(h.now + Duration::from_secs(2) + Duration::from_millis(1));
    assert_eq!(d.event(Event::FlowsClosed), 1);
}

#[test]
fn conv_out_of_order_gets_dup_ack_with_sack() {
    let mut h = Harness::standard();
    let mut p = Peer::linux(41012, ECHO_PORT);
    h.connect(&mut p);
    let base = p.snd_nxt;
    let second = p.raw(TcpFlags::ACK | TcpFlags::PSH, base + 5, p.rcv_nxt, b"world");
    let out = h.step("segment 2 first", &second, Verdict::Event(Event::OutOfOrderSegments));
    let s = one_seg(&mut p, &out);
    assert_pure_ack(&s, p.rcv_nxt, base);
    assert_eq!(s.hdr.options.sack_count, 1, "one SACK block");
    assert_eq!((s.hdr.options.sack_blocks[0].left, s.hdr.options.sack_blocks[0].right), (base + 5, base + 10));
    assert!(s.hdr.options.timestamps.is_some(), "TS beside SACK");
    assert_eq!(s.raw_options[12..16], [1, 1, 5, 10], "NOP NOP SACK(1)");
    // Filling the hole delivers both, in order, ACKs everything.
    let first = p.raw(TcpFlags::ACK | TcpFlags::PSH, base, p.rcv_nxt, b"hello");
    p.snd_nxt = base + 10;
    let out = h.step("segment 1", &first, Verdict::Accepted);
    let s = one_seg(&mut p, &out);
    assert_eq!(s.payload, b"helloworld");
    assert_eq!(s.hdr.ack, base + 10);
    assert_eq!(s.hdr.options.sack_count, 0, "no SACK once the hole is filled");
}

#[test]
fn conv_duplicate_segment_acked_not_redelivered() {
    let mut h = Harness::standard();
    let mut p = Peer::linux(41013, ECHO_PORT);
    h.connect(&mut p);
    let seq = p.snd_nxt;
    let out = h.step("abc", &p.data(b"abc"), Verdict::Accepted);
    let s = one_seg(&mut p, &out);
    assert_eq!(s.payload, b"abc");
    let bytes_in = h.stack.counters().svc_bytes_in.iter().sum::<u64>();
    let dup = p.raw(TcpFlags::ACK | TcpFlags::PSH, seq, p.rcv_nxt, b"abc");
    // RFC 9293 §3.10.7.4: entirely below RCV.NXT is "not acceptable": ACK, drop.
    let (out, d) = h.feed(&dup);
    check_verdict("retransmitted abc", &d, Verdict::Drop(Drop::TcpRejected), 1, out.len()).unwrap();
    assert_eq!(d.event(Event::OutOfWindow), 1);
    let s = one_seg(&mut p, &out);
    assert_pure_ack(&s, p.rcv_nxt, p.snd_nxt);
    assert_eq!(h.stack.counters().svc_bytes_in.iter().sum::<u64>(), bytes_in, "no double delivery");
    // Partly old, partly new: only the new part is echoed.
    let overlap = p.raw(TcpFlags::ACK | TcpFlags::PSH, seq + 1, p.rcv_nxt, b"bcdef");
    p.snd_nxt = seq + 6;
    let out = h.step("overlapping retransmission", &overlap, Verdict::Accepted);
    let segs = p.absorb_all(&out);
    let echoed: Vec<u8> = segs.iter().flat_map(|s| s.payload.clone()).collect();
    assert_eq!(echoed, b"def");
    assert_eq!(p.received, b"abcdef");
    assert_eq!(segs.last().unwrap().hdr.ack, seq + 6);
}

#[test]
fn conv_rst_exact_removes_flow() {
    let mut h = Harness::standard();
    let mut p = Peer::linux(41020, HTTP_PORT);
    h.connect(&mut p);
    let rst = p.raw(TcpFlags::RST, p.snd_nxt, SeqNum(0), &[]);
    let out = h.step("RST at RCV.NXT", &rst, Verdict::Event(Event::RstAccepted));
    assert!(out.is_empty());
    assert_eq!(state(&h, &p), None);
    assert_eq!(h.stack.counters().get(Event::FlowsClosed), 1);
    assert_eq!(h.flows_by_state_total(), 0);
}

#[test]
fn conv_rst_inexact_in_window_challenge_ack() {
    let mut h = Harness::standard();
    let mut p = Peer::linux(41021, HTTP_PORT);
    h.connect(&mut p);
    let rst = p.raw(TcpFlags::RST, p.snd_nxt + 100, SeqNum(0), &[]);
    let out = h.step("RST in window, not exact", &rst, Verdict::Event(Event::ChallengeAcks));
    let s = one_seg(&mut p, &out);
    assert_pure_ack(&s, p.rcv_nxt, p.snd_nxt);
    assert_eq!(state(&h, &p), Some(State::Established));
    // Out of window: silently ignored.
    let rst = p.raw(TcpFlags::RST, p.snd_nxt + 10_000_000, SeqNum(0), &[]);
    let out = h.step("RST out of window", &rst, Verdict::Accepted);
    assert!(out.is_empty());
    assert_eq!(state(&h, &p), Some(State::Established));
}

#[test]
fn conv_syn_on_established_challenge_ack() {
    let mut h = Harness::standard();
    let mut p = Peer::linux(41022, HTTP_PORT);
    h.connect(&mut p);
    // A restarted client: new ISS, and (Linux) a TSval clock that kept running.
    let syn = {
        let mut q = p.clone();
        q.iss = p.snd_nxt + 12345;
        q.syn_opts.timestamps = Some((p.tsval + 50, 0));
        q.syn()
    };
    let out = h.step("new SYN on ESTABLISHED", &syn, Verdict::Event(Event::ChallengeAcks));
    let s = one_seg(&mut p, &out);
    assert_pure_ack(&s, p.rcv_nxt, p.snd_nxt);
    assert_eq!(state(&h, &p), Some(State::Established));
    // The original SYN, late (old sequence and old TSval): PAWS answers it first with a
    // duplicate ACK (Linux sends a challenge ACK here; the frame on the wire is the same).
    let mut q = p.clone();
    let old_syn = q.syn();
    let (out, d) = h.feed(&old_syn);
    check_verdict("old SYN on ESTABLISHED", &d, Verdict::Drop(Drop::TcpRejected), 1, out.len()).unwrap();
    assert_eq!(d.event(Event::PawsRejected), 1);
    assert_pure_ack(&one_seg(&mut p, &out), p.rcv_nxt, p.snd_nxt);
    // Same SYN without timestamps: challenge ACK (RFC 5961 §4.2).
    let mut q = p.clone();
    q.syn_opts.timestamps = None;
    let out = h.step("old SYN without TS", &q.syn(), Verdict::Event(Event::ChallengeAcks));
    assert_pure_ack(&one_seg(&mut p, &out), p.rcv_nxt, p.snd_nxt);
    assert_eq!(h.stack.flows().len(), 1);
}

#[test]
fn conv_syn_retransmit_in_syn_received() {
    let mut h = Harness::standard();
    let mut p = Peer::linux(41023, HTTP_PORT);
    let syn = p.syn();
    let out = h.step("SYN", &syn, Verdict::Event(Event::FlowsOpened));
    let sa = one_seg(&mut p, &out);
    let out = h.step("SYN again", &syn, Verdict::Accepted);
    let sa2 = parse_seg(one(&out));
    assert_eq!((sa2.flags(), sa2.hdr.seq, sa2.hdr.ack), (sa.flags(), sa.hdr.seq, sa.hdr.ack), "same SYN-ACK");
    assert_eq!(h.stack.flows().len(), 1);
    assert_eq!(state(&h, &p), Some(State::SynReceived));
}

/// An ACK in SYN-RECEIVED that does not acknowledge our SYN: `<SEQ=SEG.ACK><CTL=RST>`.
#[test]
fn conv_bad_ack_in_syn_received() {
    let mut h = Harness::standard();
    let mut p = Peer::linux(41024, HTTP_PORT);
    let out = h.step("SYN", &p.syn(), Verdict::Event(Event::FlowsOpened));
    one_seg(&mut p, &out);
    let bogus = p.raw(TcpFlags::ACK, p.snd_nxt, p.rcv_nxt + 1000, &[]);
    let out = h.step("ACK beyond SND.NXT", &bogus, Verdict::Drop(Drop::TcpRejected));
    let s = parse_seg(one(&out));
    assert_eq!((s.flags(), s.hdr.seq), (TcpFlags::RST, p.rcv_nxt + 1000));
    assert_eq!(state(&h, &p), Some(State::SynReceived));
}

#[test]
fn conv_flow_table_full() {
    let mut h = Harness::new(config(2, tcp_cfg()));
    let mut a = Peer::linux(42000, ECHO_PORT);
    let mut b = Peer::linux(42001, HTTP_PORT);
    h.connect(&mut a);
    let out = h.step("second SYN", &b.syn(), Verdict::Event(Event::FlowsOpened));
    one_seg(&mut b, &out);
    let mut c = Peer::linux(42002, HTTP_PORT);
    let out = h.step("third SYN", &c.syn(), Verdict::Drop(Drop::FlowTableFull));
    assert!(out.is_empty(), "refused silently: the client retries");
    assert_eq!(h.stack.flows().len(), 2);
    // Existing flows are still served.
    let out = h.step("echo on a full table", &a.data(b"still here"), Verdict::Accepted);
    assert_eq!(one_seg(&mut a, &out).payload, b"still here");
    let out = h.step("complete the second handshake", &b.ack(), Verdict::Accepted);
    assert!(out.is_empty());
    assert_eq!(state(&h, &b), Some(State::Established));
    // Freeing one makes room.
    let rst = a.raw(TcpFlags::RST, a.snd_nxt, SeqNum(0), &[]);
    h.step("free a slot", &rst, Verdict::Event(Event::RstAccepted));
    let out = h.step("third SYN again", &c.syn(), Verdict::Event(Event::FlowsOpened));
    assert_eq!(one_seg(&mut c, &out).flags(), TcpFlags::SYN | TcpFlags::ACK);
}

#[test]
fn conv_syn_ack_rto_retransmit() {
    let mut h = Harness::standard();
    let mut p = Peer::linux(42010, HTTP_PORT);
    let out = h.step("SYN", &p.syn(), Verdict::Event(Event::FlowsOpened));
    let sa = parse_seg(one(&out));
    let (out, d) = h.poll_at(T0 + Duration::from_millis(999));
    assert!(out.is_empty() && d.event(Event::Retransmits) == 0, "not before the 1 s initial RTO");
    let (out, d) = h.poll_at(T0 + Duration::from_secs(1));
    assert_eq!(d.event(Event::Retransmits), 1);
    let re = parse_seg(one(&out));
    assert_eq!((re.flags(), re.hdr.seq, re.hdr.ack, re.hdr.window), (sa.flags(), sa.hdr.seq, sa.hdr.ack, sa.hdr.window));
    let (o1, o2) = (re.hdr.options, sa.hdr.options);
    assert_eq!((o1.mss, o1.wscale, o1.sack_permitted), (o2.mss, o2.wscale, o2.sack_permitted));
    let (ts1, ts2) = (o1.timestamps.unwrap(), o2.timestamps.unwrap());
    assert_eq!(ts1.1, ts2.1, "same TSecr");
    assert_eq!(ts1.0.wrapping_sub(ts2.0), 1000, "TSval advanced by 1000 ms");
    assert_ne!(re.ip_id, sa.ip_id, "fresh IP id");
    // Backed off: the next retransmission is 2 s later.
    let (out, _) = h.poll_at(T0 + Duration::from_millis(2_999));
    assert!(out.is_empty());
    let (out, _) = h.poll_at(T0 + Duration::from_secs(3));
    assert_eq!(parse_seg(one(&out)).hdr.seq, sa.hdr.seq);
}

/// After `syn_ack_retries` the half-open flow is given up with a RST and removed.
#[test]
fn conv_syn_ack_retries_exhausted() {
    let tcp = TcpConfig { syn_ack_retries: 2, ..tcp_cfg() };
    let mut h = Harness::new(config(4, tcp));
    let mut p = Peer::linux(42011, HTTP_PORT);
    let out = h.step("SYN", &p.syn(), Verdict::Event(Event::FlowsOpened));
    let sa = one_seg(&mut p, &out);
    let mut t = T0;
    let mut sent = 0;
    for _ in 0..10 {
        t = t + Duration::from_secs(64);
        let (out, _) = h.poll_at(t);
        sent += out.len();
        if h.stack.flows().is_empty() {
            let last = parse_seg(out.last().expect("RST on give-up"));
            assert!(last.flags().rst());
            assert_eq!(last.hdr.seq, sa.hdr.seq + 1);
            break;
        }
    }
    assert!(h.stack.flows().is_empty(), "flow given up");
    assert_eq!(sent, 3, "two SYN-ACK retransmissions, then the RST");
    assert_eq!(h.flows_by_state_total(), 0);
}

#[test]
fn conv_data_rto_retransmit() {
    let mut h = Harness::standard();
    let mut p = Peer::linux(42012, ECHO_PORT);
    h.connect(&mut p);
    h.advance(Duration::from_millis(10));
    let out = h.step("data", &p.data(b"retransmit me"), Verdict::Accepted);
    let s = parse_seg(one(&out)); // "lost": not absorbed
    let (out, d) = h.poll_at(h.now + Duration::from_secs(1));
    assert_eq!(d.event(Event::Retransmits), 1);
    let r = one_seg(&mut p, &out);
    assert_eq!((r.hdr.seq, r.payload.clone()), (s.hdr.seq, s.payload.clone()));
    assert_eq!(p.received, b"retransmit me");
}

/// Delayed ACK (default 40 ms): a lone data segment on the echo port is answered at once
/// with the echoed data; with nothing to send back (HTTP partial request) the ACK waits for
/// the timer.
#[test]
fn conv_delayed_ack_timer() {
    let mut h = Harness::new(config(4, TcpConfig::default()));
    let mut p = Peer::linux(42013, HTTP_PORT);
    h.connect(&mut p);
    let out = h.step("partial request", &p.data(b"GET /gen/1 HT"), Verdict::Accepted);
    assert!(out.is_empty(), "ACK delayed");
    let (out, _) = h.poll_at(h.now + Duration::from_millis(39));
    assert!(out.is_empty());
    let (out, _) = h.poll_at(h.now + Duration::from_millis(1));
    let s = one_seg(&mut p, &out);
    assert_pure_ack(&s, p.rcv_nxt, p.snd_nxt);
}

/// A new SYN with a higher sequence on a TIME-WAIT 4-tuple reopens it (RFC 9293 / RFC 6191).
#[test]
fn conv_syn_reopens_time_wait() {
    let mut h = Harness::standard();
    let mut p = Peer::linux(42014, HTTP_PORT);
    h.connect(&mut p);
    let out = h.step("close", &p.data(b"GET /gen/1 HTTP/1.1\r\nConnection: close\r\n\r\n"), Verdict::Accepted);
    one_seg(&mut p, &out);
    h.step("ACK", &p.ack(), Verdict::Accepted);
    let out = h.step("FIN", &p.fin(), Verdict::Accepted);
    one_seg(&mut p, &out);
    assert_eq!(state(&h, &p), Some(State::TimeWait));
    let mut q = Peer::linux(42014, HTTP_PORT);
    q.iss = p.snd_nxt + 100_000;
    q.syn_opts.timestamps = Some((p.tsval + 10, 0));
    q.tsval = p.tsval + 10;
    let out = h.step("SYN reusing the TIME-WAIT tuple", &q.syn(), Verdict::Event(Event::FlowsOpened));
    let sa = one_seg(&mut q, &out);
    assert_eq!(sa.hdr.ack, q.iss + 1);
    assert_eq!(state(&h, &q), Some(State::SynReceived));
    assert_eq!(h.stack.flows().len(), 1);
    assert_eq!(h.flows_by_state_total(), 1);
}

#[test]
fn conv_ack_of_unsent_data_is_rejected() {
    let mut h = Harness::standard();
    let mut p = Peer::linux(42015, HTTP_PORT);
    h.connect(&mut p);
    let bad = p.raw(TcpFlags::ACK, p.snd_nxt, p.rcv_nxt + 5000, &[]);
    let out = h.step("ACK of unsent data", &bad, Verdict::Drop(Drop::TcpRejected));
    assert_pure_ack(&one_seg(&mut p, &out), p.rcv_nxt, p.snd_nxt);
    assert_eq!(state(&h, &p), Some(State::Established));
}

#[test]
fn conv_paws_rejects_old_timestamp() {
    let mut h = Harness::standard();
    let mut p = Peer::linux(42016, ECHO_PORT);
    h.connect(&mut p);
    let mut old = p.clone();
    old.tsval = p.tsval.wrapping_sub(1000);
    let f = old.raw(TcpFlags::ACK | TcpFlags::PSH, p.snd_nxt, p.rcv_nxt, b"stale");
    let (out, d) = h.feed(&f);
    check_verdict("PAWS", &d, Verdict::Drop(Drop::TcpRejected), 1, out.len()).unwrap();
    assert_eq!(d.event(Event::PawsRejected), 1);
    assert_pure_ack(&one_seg(&mut p, &out), p.rcv_nxt, p.snd_nxt);
    assert_eq!(h.stack.counters().svc_bytes_in.iter().sum::<u64>(), 0, "nothing delivered");
}

#[test]
fn conv_peer_mac_learned_from_frames() {
    let mut h = Harness::standard();
    let mut p = Peer::linux(42017, ECHO_PORT);
    h.connect(&mut p);
    p.mac = MacAddr([0x02, 0, 0, 0, 0, 0x42]); // the client moved behind another router port
    let out = h.step("data from the new MAC", &p.data(b"x"), Verdict::Accepted);
    assert_eq!(one_seg(&mut p, &out).eth_dst, MacAddr([0x02, 0, 0, 0, 0, 0x42]));
}

#[test]
fn output_frames_fit_max_frame() {
    assert_eq!(MAX_FRAME, 1514);
}

// ------------------------------------------------------------------ engine bugs

/// Passive open with a client ISS of `iss`: returns the harness, the peer and the window
/// field of the server's first data segment after a 38-byte request.
fn first_data_window(iss: u32) -> (Harness, Peer, u16) {
    let mut h = Harness::standard();
    let mut p = Peer::new(43000, HTTP_PORT, iss, linux_syn_options(1000));
    h.connect(&mut p);
    let out = h.step("GET", &p.data(b"GET /gen/1000 HTTP/1.1\r\nHost: vip\r\n\r\n"), Verdict::Accepted);
    let w = one_seg(&mut p, &out).hdr.window;
    (h, p, w)
}

#[test]
fn window_after_handshake_low_iss() {
    let (mut h, mut p, w) = first_data_window(LOW_ISS);
    assert_eq!(u32::from(w), (65535u32 - 38).div_ceil(128));
    // A RST 10 MB ahead is outside the window: silently ignored (RFC 5961 §3.2).
    let rst = p.raw(TcpFlags::RST, p.snd_nxt + 10_000_000, SeqNum(0), &[]);
    let out = h.step("far RST", &rst, Verdict::Accepted);
    assert!(out.is_empty());
    assert_eq!(h.stack.counters().get(Event::ChallengeAcks), 0);
}

/// Regression: RCV.ADV starts as `SeqNum(0)` and `send_syn` used to move it only
/// `if edge.gt(rcv_adv)`, false in serial arithmetic for every client ISS >= 2^31: RCV.ADV
/// stayed 0, `rcv_wnd()` became up to 2 GiB, the first data segment advertised 65535 << 7
/// and RSTs hundreds of MB ahead were challenged instead of ignored (found by this file;
/// fixed in tcp/output.rs `send_syn`, which now sets the edge).
#[test]
fn window_after_handshake_high_iss() {
    let (mut h, mut p, w) = first_data_window(HIGH_ISS);
    assert_eq!(u32::from(w), (65535u32 - 38).div_ceil(128), "same window as for a low ISS");
    let rst = p.raw(TcpFlags::RST, p.snd_nxt + 10_000_000, SeqNum(0), &[]);
    let out = h.step("far RST", &rst, Verdict::Accepted);
    assert!(out.is_empty(), "a RST 10 MB outside the window must be ignored, not challenged");
}

fn peer_mac_of(h: &Harness, p: &Peer) -> MacAddr {
    let key = flowtwin_engine::flow::FlowKey::v4(p.ip, p.port, VIP, p.dport);
    let id = h.stack.flows().lookup(&key).expect("flow");
    h.stack.flows().get(id).unwrap().peer_mac
}

/// Bug (engine/src/stack.rs `process`/`flow_input`): nothing checks the Ethernet *source*
/// MAC on the IPv4 path. A segment from a multicast/broadcast source (I/G bit set; invalid as
/// a source per IEEE 802.3, and what a one-bit corruption of a real MAC looks like) is
/// accepted, `flow.peer_mac = src_mac` learns the group address, and every later segment of
/// the flow (including timer retransmissions) is sent to it, i.e. flooded. The ARP path
/// (`sender_mac.is_multicast()` → BadArp) and `echo_reply_in_place` already refuse this.
/// Found by `stack_fuzz`. Fix: in `Stack::process`, drop frames whose `eth.src()` is
/// multicast with a counted reason (e.g. a new `Drop::BadSourceMac`, or `BadSourceAddress`).
#[test]
fn bug_multicast_source_mac_is_learned() {
    let mut h = Harness::standard();
    let mut p = Peer::linux(43100, ECHO_PORT);
    h.connect(&mut p);
    let mut bad = p.clone();
    bad.mac = MacAddr([0x03, 0, 0, 0, 0, 0x07]); // CLIENT_MAC with the I/G bit flipped
    let f = bad.data(b"x");
    let (out, d) = h.feed(&f);
    assert!(out.is_empty(), "answered to a multicast MAC: {:?}", out.iter().map(|f| parse_seg(f).eth_dst).collect::<Vec<_>>());
    assert_eq!(d.drops.iter().sum::<u64>(), 1, "a counted drop");
    assert_eq!(peer_mac_of(&h, &p), CLIENT_MAC, "peer MAC not replaced by a group address");
}

/// Hardening (engine/src/stack.rs `flow_input`, `flow.peer_mac = src_mac;` before
/// `on_segment`): the peer MAC is learned from every frame that matches the 4-tuple, even one
/// TCP then rejects (out of window, bad ACK, PAWS). Any L2-adjacent host that knows the
/// 4-tuple but not the sequence numbers can move the flow's traffic to its own MAC with one
/// blind segment (RFC 5961's threat model). Fix: remember `src_mac` and assign it only when
/// the verdict is `SegmentVerdict::Accepted`.
#[test]
fn bug_peer_mac_learned_from_rejected_segment() {
    let mut h = Harness::standard();
    let mut p = Peer::linux(43101, ECHO_PORT);
    h.connect(&mut p);
    let mut attacker = p.clone();
    attacker.mac = MacAddr([0x02, 0xba, 0xd0, 0, 0, 1]);
    attacker.ts_ok = false;
    let blind = attacker.raw(TcpFlags::ACK, p.snd_nxt + 3_000_000_000, p.rcv_nxt, b"guess");
    let (_, d) = h.feed(&blind);
    assert_eq!(d.drop(Drop::TcpRejected), 1, "out of window");
    assert_eq!(peer_mac_of(&h, &p), CLIENT_MAC, "a rejected segment must not move the flow");
}

/// Fencing over the data path (issue 12 #4, a cut sync link): another engine's tagged
/// announcement of our VIP with a newer epoch is a claim the control plane acts on; an
/// untagged one (a host with our address), our own node's, or an older epoch is not. None of
/// them is answered or learned as a neighbour, and each is counted.
#[test]
fn tagged_announcement_of_our_vip_is_a_claim() {
    use flowtwin_engine::wire::AnnounceTag;
    let mut h = Harness::standard();
    h.stack.set_identity(1, 3);
    let garp = |tag: Option<AnnounceTag>| {
        let mut buf = vec![0u8; 60];
        let n = match tag {
            Some(t) => t.emit_gratuitous(vip_mac(), VIP, &mut buf).unwrap(),
            None => ArpRepr::gratuitous(vip_mac(), VIP).emit_frame(&mut buf).unwrap(),
        };
        buf.truncate(n);
        buf
    };
    let out = h.step("untagged", &garp(None), Verdict::Drop(Drop::ArpFromOurVip));
    assert!(out.is_empty() && h.stack.take_vip_claim().is_none());
    let out = h.step("our own", &garp(Some(AnnounceTag { node_id: 1, epoch: 9 })), Verdict::Drop(Drop::ArpFromOurVip));
    assert!(out.is_empty() && h.stack.take_vip_claim().is_none());
    let (out, d) = h.feed(&garp(Some(AnnounceTag { node_id: 2, epoch: 4 })));
    assert!(out.is_empty());
    assert_eq!((d.event(Event::VipClaimsSeen), d.drop(Drop::ArpFromOurVip)), (1, 1));
    assert_eq!(h.stack.take_vip_claim(), Some(AnnounceTag { node_id: 2, epoch: 4 }));
    assert!(h.stack.take_vip_claim().is_none(), "taken once");
    assert_eq!(h.stack.arp_lookup(VIP), None, "our VIP is never learned as a neighbour");
    // Our announcements carry our identity.
    let mut sink = VecSink::default();
    h.stack.announce(&mut sink);
    assert_eq!(sink.frames.len(), 1);
    assert_eq!(AnnounceTag::read(&sink.frames[0][14 + 28..]), Some(AnnounceTag { node_id: 1, epoch: 3 }));
    assert_eq!(ArpRepr::parse(&sink.frames[0][14..]).unwrap(), ArpRepr::gratuitous(vip_mac(), VIP));
}
