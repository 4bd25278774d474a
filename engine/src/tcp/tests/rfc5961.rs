//! RFC 5961 (RST, SYN and out-of-window segments), PAWS and timestamps.

use super::*;

#[test]
fn rst_exact_in_window_and_out_of_window() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(0, 1 << 20);
    let (mut tcb, mut out, seq) = established(&cfg, TcpOptions::default(), &mut svc);
    let v = tcb.on_segment(t(5), &cfg, &hdr(F::RST, seq + 1_000_000, SeqNum(0), 0), &[], &mut svc, &mut out);
    assert_eq!(v, SegmentVerdict::RstIgnored);
    assert!(out.segs.is_empty());
    let v = tcb.on_segment(t(5), &cfg, &hdr(F::RST, seq + 10, SeqNum(0), 0), &[], &mut svc, &mut out);
    assert_eq!(v, SegmentVerdict::ChallengeAck);
    let a = out.take()[0].0;
    assert_eq!((a.flags, a.seq, a.ack), (F::ACK, SISN + 1, seq));
    assert_eq!(tcb.stats().challenge_acks, 1);
    let v = tcb.on_segment(t(6), &cfg, &hdr(F::RST, seq, SeqNum(0), 0), &[], &mut svc, &mut out);
    assert_eq!(v, SegmentVerdict::RstAccepted);
    assert!(tcb.is_closed());
    assert_eq!(
        tcb.on_segment(t(7), &cfg, &hdr(F::ACK, seq, SISN + 1, 0), &[], &mut svc, &mut out),
        SegmentVerdict::Closed
    );
}

#[test]
fn syn_in_established_gets_challenge_ack() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(0, 1 << 20);
    let (mut tcb, mut out, seq) = established(&cfg, TcpOptions::default(), &mut svc);
    for s in [seq, seq + 5, seq - 1000, seq + 0x4000_0000] {
        let v = tcb.on_segment(t(5), &cfg, &hdr(F::SYN, s, SeqNum(0), 1000), &[], &mut svc, &mut out);
        assert_eq!(v, SegmentVerdict::ChallengeAck);
        assert_eq!(out.take()[0].0.ack, seq);
    }
    assert_eq!(tcb.state(), State::Established);
}

#[test]
fn out_of_window_data_gets_ack() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(0, 1 << 20);
    let (mut tcb, mut out, seq) = established(&cfg, TcpOptions::default(), &mut svc);
    let (h, p) = data_seg(seq + 200_000, SISN + 1, 100);
    assert_eq!(tcb.on_segment(t(5), &cfg, &h, &p, &mut svc, &mut out), SegmentVerdict::OutOfWindow);
    assert_eq!(out.take()[0].0.ack, seq);
    assert_eq!(tcb.stats().out_of_window, 1);
}

#[test]
fn paws_rejects_old_timestamp() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(0, 1 << 20);
    let (mut tcb, mut out, seq) = established(&cfg, full_opts(), &mut svc);
    let (mut h, p) = data_seg(seq, SISN + 1, 100);
    h.options.timestamps = Some((1000, 0));
    tcb.on_segment(t(10), &cfg, &h, &p, &mut svc, &mut out);
    assert_eq!(tcb.ts_recent(), 1000);
    let (mut h, p) = data_seg(seq + 100, SISN + 1, 100);
    h.options.timestamps = Some((999, 0));
    assert_eq!(tcb.on_segment(t(11), &cfg, &h, &p, &mut svc, &mut out), SegmentVerdict::PawsRejected);
    assert_eq!(svc.rx.len(), 100);
    assert_eq!(tcb.stats().paws_rejects, 1);
    let a = out.take().pop().unwrap().0;
    assert_eq!(a.ack, seq + 100);
    assert_eq!(a.options.timestamps.map(|x| x.1), Some(1000));
    // Wrapped-but-newer TSval is fine.
    let (mut h, p) = data_seg(seq + 100, SISN + 1, 100);
    h.options.timestamps = Some((1000u32.wrapping_add(0x7fff_0000), 0));
    assert_eq!(tcb.on_segment(t(12), &cfg, &h, &p, &mut svc, &mut out), SegmentVerdict::Accepted);
}

#[test]
fn timestamps_rtt_sample() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(1000, 1 << 20);
    let (mut tcb, mut out, seq) = established(&cfg, full_opts(), &mut svc);
    let s = out.take();
    let tsval = s[0].0.options.timestamps.unwrap().0;
    let mut a = hdr(F::ACK, seq, SISN + 1001, W);
    a.options.timestamps = Some((700, tsval));
    tcb.on_segment(t(1 + 50), &cfg, &a, &[], &mut svc, &mut out);
    // Samples: 1 ms from the handshake (TSecr of the SYN-ACK), then 50 ms.
    let srtt = tcb.srtt().unwrap();
    assert!(srtt.millis() >= 6 && srtt.millis() <= 8, "{srtt:?}");
    assert!(tcb.rto(&cfg) >= cfg.rto_min);
}
