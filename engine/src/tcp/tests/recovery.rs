//! Loss recovery: RTO backoff and abort, fast retransmit, NewReno, SACK recovery.

use super::*;

#[test]
fn rto_retransmit_backoff_and_abort() {
    let cfg = TcpConfig { max_retransmits: 3, ..TcpConfig::default() };
    let mut svc = TestSvc::open_generator(3000, 1 << 20);
    let (mut tcb, mut out, _) = established(&cfg, TcpOptions::default(), &mut svc);
    let first = out.take();
    assert_eq!(first.len(), 6); // 3000 bytes at MSS 536
    let mut prev = t(1);
    let mut gaps = Vec::new();
    for _ in 0..3 {
        let d = tcb.next_deadline().unwrap();
        gaps.push((d - prev).millis());
        prev = d;
        tcb.on_timer(d, &cfg, &mut svc, &mut out);
        let r = out.take();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].0.seq, SISN + 1, "go back to SND.UNA");
        assert_eq!(r[0].1, first[0].1);
    }
    assert_eq!(gaps, vec![1000, 2000, 4000]);
    assert_eq!(tcb.cwnd(), 536);
    let d = tcb.next_deadline().unwrap();
    tcb.on_timer(d, &cfg, &mut svc, &mut out);
    assert!(tcb.is_closed());
    assert_eq!(out.take()[0].0.flags, F::RST | F::ACK);
    assert_eq!(tcb.stats().retransmit_aborts, 1);
    assert_eq!(tcb.stats().rto_timeouts, 3);
}

#[test]
fn rto_after_tx_buffer_failure_recovers() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(500, 1 << 20);
    let mut out = RecSink::default();
    let mut tcb = Tcb::accept(t(0), &cfg, &syn(TcpOptions::default()), SISN, &mut out).unwrap();
    out.take();
    out.fail = 1;
    tcb.on_segment(t(1), &cfg, &hdr(F::ACK, CISN + 1, SISN + 1, 1000), &[], &mut svc, &mut out);
    assert_eq!(tcb.stats().emit_failures, 1);
    assert!(out.segs.is_empty());
    let d = tcb.next_deadline().unwrap();
    tcb.on_timer(d, &cfg, &mut svc, &mut out);
    assert_eq!(out.take()[0].1.len(), 500);
}

#[test]
fn fast_retransmit_on_three_dup_acks_and_newreno_partial_ack() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(20_000, 1 << 20);
    let o = TcpOptions { mss: Some(1000), ..Default::default() };
    let (mut tcb, mut out, seq) = established(&cfg, o, &mut svc);
    assert_eq!(out.take().len(), 10);
    let una = SISN + 1;
    let dup = hdr(F::ACK, seq, una + 1000, W);
    tcb.on_segment(t(10), &cfg, &dup, &[], &mut svc, &mut out); // new ACK
    out.take();
    for i in 0..3 {
        tcb.on_segment(t(11 + i), &cfg, &dup, &[], &mut svc, &mut out);
    }
    assert_eq!(tcb.stats().dup_acks, 3);
    assert_eq!(tcb.stats().fast_retransmits, 1);
    let segs = out.take();
    assert_eq!(segs[0].0.seq, una + 1000, "retransmits SND.UNA");
    // Partial ACK: next hole retransmitted at once.
    let partial = hdr(F::ACK, seq, una + 3000, W);
    tcb.on_segment(t(20), &cfg, &partial, &[], &mut svc, &mut out);
    let s = out.take();
    assert!(s.iter().any(|s| s.0.seq == una + 3000), "{:?}", s.iter().map(|s| s.0.seq).collect::<Vec<_>>());
    assert!(tcb.stats().recovery_retransmits >= 1);
}

#[test]
fn sack_recovery_skips_sacked_data() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(10_000, 1 << 20);
    let o = TcpOptions { mss: Some(1000), sack_permitted: true, ..Default::default() };
    let (mut tcb, mut out, seq) = established(&cfg, o, &mut svc);
    assert_eq!(out.take().len(), 10);
    let una = SISN + 1;
    // Segments 0 and 2 lost; 1 and 3..9 SACKed.
    let mut a = hdr(F::ACK, seq, una, W);
    a.options.sack_blocks[0] = SackBlock { left: una + 3000, right: una + 10_000 };
    a.options.sack_blocks[1] = SackBlock { left: una + 1000, right: una + 2000 };
    a.options.sack_count = 2;
    tcb.on_segment(t(10), &cfg, &a, &[], &mut svc, &mut out);
    // SACKed > 3 segments: recovery starts on the first duplicate (RFC 6675 style).
    let s = out.take();
    assert_eq!(s[0].0.seq, una);
    tcb.on_segment(t(11), &cfg, &a, &[], &mut svc, &mut out);
    let s = out.take();
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].0.seq, una + 2000, "second hole, SACKed segment 1 skipped");
    tcb.on_segment(t(12), &cfg, &a, &[], &mut svc, &mut out);
    assert!(out.take().is_empty(), "nothing left to fill");
    let full = hdr(F::ACK, seq, una + 10_000, W);
    tcb.on_segment(t(20), &cfg, &full, &[], &mut svc, &mut out);
    assert!(!tcb.cc.in_recovery);
}
