//! Data and ACKs: delayed ACKs, the service's window, segmentation and cwnd, out-of-order data and SACK.

use super::*;

#[test]
fn data_in_delayed_ack_and_every_second_segment() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(0, 1 << 20);
    let (mut tcb, mut out, seq) = established(&cfg, TcpOptions::default(), &mut svc);
    let (h, p) = data_seg(seq, SISN + 1, 536);
    assert_eq!(tcb.on_segment(t(10), &cfg, &h, &p, &mut svc, &mut out), SegmentVerdict::Accepted);
    assert!(out.segs.is_empty(), "first segment: delayed ACK");
    assert_eq!(tcb.next_deadline(), Some(t(50)));
    tcb.on_timer(t(50), &cfg, &mut svc, &mut out);
    assert_eq!(out.take()[0].0.ack, seq + 536);
    // Two segments: ACK on the second.
    let (h, p) = data_seg(seq + 536, SISN + 1, 536);
    tcb.on_segment(t(60), &cfg, &h, &p, &mut svc, &mut out);
    assert!(out.segs.is_empty());
    let (h, p) = data_seg(seq + 1072, SISN + 1, 536);
    tcb.on_segment(t(61), &cfg, &h, &p, &mut svc, &mut out);
    assert_eq!(out.take()[0].0.ack, seq + 1608);
    assert_eq!(svc.rx.len(), 1608);
    assert_eq!(tcb.stats().bytes_in, 1608);
    // A retransmitted (old) segment is ACKed at once.
    tcb.on_segment(t(62), &cfg, &h, &p, &mut svc, &mut out);
    assert_eq!(out.take()[0].0.ack, seq + 1608);
    assert_eq!(svc.rx.len(), 1608);
}

#[test]
fn service_full_data_not_acked_and_window_no_shrink() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(0, 1000);
    let (mut tcb, mut out, seq) = established(&cfg, TcpOptions::default(), &mut svc);
    // The handshake advertised 65535 (unscaled SYN window); the service only takes 1000.
    let (h, p) = data_seg(seq, SISN + 1, 1500);
    tcb.on_segment(t(10), &cfg, &h, &p, &mut svc, &mut out);
    let a = out.take().pop().unwrap().0;
    assert_eq!(a.ack, seq + 1000, "only consumed bytes are acked");
    // Right edge never moves left: advertised window stays at old edge - rcv_nxt.
    assert_eq!(a.window as u32, 65535 - 1000);
    svc.drain_app();
    tcb.poll_send(t(11), &cfg, &mut svc, &mut out);
    // The 500 in-window bytes the full service could not take were held, not dropped: once
    // the application read, they are delivered and acknowledged without a retransmission.
    assert_eq!(svc.rx.len(), 1500, "held in-window bytes delivered after the service drained");
    assert_eq!(&svc.rx[..], &p[..]);
    let a = out.take().pop().expect("ACK after delivery").0;
    assert_eq!(a.ack, seq + 1500);
    assert_eq!(a.options.sack_count, 0, "held in-order bytes are not SACK blocks");
}

#[test]
fn data_out_segments_cwnd_and_acks() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(100_000, 1 << 20);
    let (mut tcb, mut out, seq) = established(&cfg, TcpOptions { mss: Some(1000), wscale: Some(4), ..Default::default() }, &mut svc);
    let segs = out.take();
    // Initial cwnd = 10 segments.
    assert_eq!(segs.len(), 10, "{:?}", segs.iter().map(|s| s.1.len()).collect::<Vec<_>>());
    for (i, (h, p)) in segs.iter().enumerate() {
        assert_eq!(h.seq, SISN + 1 + (i as u32) * 1000);
        assert_eq!(p.len(), 1000);
        assert!(p.iter().enumerate().all(|(j, &b)| b == TestSvc::gen_byte((i * 1000 + j) as u64)));
    }
    assert_eq!(tcb.next_deadline(), Some(t(1001)));
    // ACK 2 segments: slow start grows cwnd by 2 MSS (RFC 3465 L=2) -> 4 more segments.
    let a = hdr(F::ACK, seq, SISN + 1 + 2000, W);
    tcb.on_segment(t(20), &cfg, &a, &[], &mut svc, &mut out);
    assert_eq!(out.take().len(), 4);
    assert_eq!(svc.acked, 2000);
    assert!(tcb.srtt().is_some(), "Karn sample taken");
}

#[test]
fn ack_of_unsent_data_is_challenged() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(0, 1 << 20);
    let (mut tcb, mut out, seq) = established(&cfg, TcpOptions::default(), &mut svc);
    let a = hdr(F::ACK, seq, SISN + 100, W);
    assert_eq!(tcb.on_segment(t(5), &cfg, &a, &[], &mut svc, &mut out), SegmentVerdict::BadAck);
    assert_eq!(out.take()[0].0.ack, seq);
    // No ACK bit: dropped.
    let n = hdr(F::PSH, seq, SeqNum(0), 1000);
    assert_eq!(tcb.on_segment(t(5), &cfg, &n, &[1, 2], &mut svc, &mut out), SegmentVerdict::NoAck);
    assert!(svc.rx.is_empty());
}

#[test]
fn out_of_order_sack_and_hole_fill() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(0, 1 << 20);
    let mut o = full_opts();
    o.mss = Some(1000);
    let (mut tcb, mut out, seq) = established(&cfg, o, &mut svc);
    let mut ts = 600;
    let mut seg = |off: u32, len: usize| {
        let (mut h, p) = data_seg(seq + off, SISN + 1, len);
        ts += 1;
        h.options.timestamps = Some((ts, 0));
        (h, p)
    };
    let (h2, p2) = seg(1000, 1000);
    let (h3, p3) = seg(3000, 500);
    let (h1, p1) = seg(0, 1000);
    assert_eq!(tcb.on_segment(t(10), &cfg, &h2, &p2, &mut svc, &mut out), SegmentVerdict::Accepted);
    let a = out.take().pop().unwrap().0;
    assert_eq!(a.ack, seq, "duplicate ACK");
    assert_eq!(a.options.sacks(), &[SackBlock { left: seq + 1000, right: seq + 2000 }]);
    tcb.on_segment(t(11), &cfg, &h3, &p3, &mut svc, &mut out);
    let a = out.take().pop().unwrap().0;
    // Most recent block first (RFC 2018 §4).
    assert_eq!(
        a.options.sacks(),
        &[SackBlock { left: seq + 3000, right: seq + 3500 }, SackBlock { left: seq + 1000, right: seq + 2000 }]
    );
    assert_eq!(tcb.stats().ooo_segments, 2);
    // Fill the first hole: immediate ACK up to 2000, one block left.
    tcb.on_segment(t(12), &cfg, &h1, &p1, &mut svc, &mut out);
    let a = out.take().pop().unwrap().0;
    assert_eq!(a.ack, seq + 2000);
    assert_eq!(a.options.sacks().len(), 1);
    assert_eq!(svc.rx.len(), 2000);
    let (h, p) = seg(2000, 1000);
    tcb.on_segment(t(13), &cfg, &h, &p, &mut svc, &mut out);
    let a = out.take().pop().unwrap().0;
    assert_eq!(a.ack, seq + 3500);
    assert_eq!(a.options.sacks().len(), 0);
    assert!(tcb.ooo.is_none(), "store freed when the hole fills");
    assert_eq!(&svc.rx[..1000], &p1[..]);
    assert_eq!(&svc.rx[3000..], &p3[..]);
}

#[test]
fn ooo_bound_drops_and_counts() {
    let cfg = TcpConfig { max_ooo_bytes: 1500, ..TcpConfig::default() };
    let mut svc = TestSvc::open_generator(0, 1 << 20);
    let (mut tcb, mut out, seq) = established(&cfg, TcpOptions::default(), &mut svc);
    let (h, p) = data_seg(seq + 2000, SISN + 1, 500);
    tcb.on_segment(t(10), &cfg, &h, &p, &mut svc, &mut out);
    assert_eq!(tcb.stats().ooo_dropped, 1);
    assert!(tcb.ooo.is_none());
}

#[test]
fn scaled_window_reflects_service_space() {
    scaled_window_case(SeqNum(100));
    // A peer ISN in the upper half of sequence space: RCV.ADV must still be initialised.
    scaled_window_case(SeqNum(0x9000_0000));
}

fn scaled_window_case(client_isn: SeqNum) {
    // Linux-like options: the peer scales by 10, we by 7 (cfg default). With a 64 KiB echo
    // service the advertised window must be about 64 KiB, i.e. a field near 512, not 65535.
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::echo(65536);
    let opts = TcpOptions { mss: Some(1460), wscale: Some(10), sack_permitted: true, timestamps: Some((1, 0)), ..Default::default() };
    let mut out = RecSink::default();
    let mut s = syn(opts);
    s.seq = client_isn;
    let mut tcb = Tcb::accept(t(0), &cfg, &s, SISN, &mut out).expect("accept");
    let mut ack = hdr(F::ACK, client_isn + 1, SISN + 1, W);
    ack.options.timestamps = Some((2, out.last().options.timestamps.map_or(0, |x| x.0)));
    assert_eq!(tcb.on_segment(t(1), &cfg, &ack, &[], &mut svc, &mut out), SegmentVerdict::Accepted);
    out.take();
    let seq = client_isn + 1;
    let (mut h, p) = data_seg(seq, SISN + 1, 1448);
    h.options.timestamps = Some((2, 0));
    tcb.on_segment(t(10), &cfg, &h, &p, &mut svc, &mut out);
    tcb.poll_send(t(10), &cfg, &mut svc, &mut out);
    for (hdr, _) in out.take() {
        let bytes = (hdr.window as u64) << 7;
        assert!(bytes <= 65536 + 128, "window field {} advertises {} bytes for a 64 KiB service", hdr.window, bytes);
    }
}
