//! Zero windows and probes: persist, the takeover probe and what answers it.

use super::*;

#[test]
fn zero_window_persist_probe() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(0, 1 << 20);
    let (mut tcb, mut out, seq) = established(&cfg, TcpOptions::default(), &mut svc);
    // Peer closes its window.
    tcb.on_segment(t(5), &cfg, &hdr(F::ACK, seq, SISN + 1, 0), &[], &mut svc, &mut out);
    svc.gen_len = 5000;
    tcb.poll_send(t(6), &cfg, &mut svc, &mut out);
    assert!(out.segs.is_empty());
    let d = tcb.next_deadline().unwrap();
    assert_eq!(d, t(6) + cfg.rto_initial);
    tcb.on_timer(d, &cfg, &mut svc, &mut out);
    let p = out.take();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].0.seq, SISN, "probe with SND.UNA - 1");
    assert!(p[0].1.is_empty());
    assert_eq!(tcb.stats().persist_probes, 1);
    let d2 = tcb.next_deadline().unwrap();
    assert_eq!(d2 - d, cfg.rto_initial + cfg.rto_initial, "backed off");
    // Window opens: data flows, persist cancelled.
    tcb.on_segment(d2, &cfg, &hdr(F::ACK, seq, SISN + 1, 3000), &[], &mut svc, &mut out);
    let s = out.take();
    // Five full segments; the 320-byte tail waits (sender SWS avoidance, RFC 9293 §3.8.6.2.1).
    assert_eq!(s.iter().map(|x| x.1.len()).sum::<usize>(), 5 * 536);
    assert!(tcb.timers.persist.is_none());
}

#[test]
fn takeover_probe_is_answered_even_when_the_replica_is_current() {
    // The replica: the peer had acknowledged everything and closed its window. The peer's
    // window update went to the dead active. A plain ACK (SEQ=SND.UNA) would be acceptable
    // to the peer, so it would not answer, and the standby would wait for its persist
    // timer (1 s: no RTT estimate yet). This was seen in the demo.
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(0, 1 << 20);
    let (mut tcb, mut out, seq) = established(&cfg, TcpOptions::default(), &mut svc);
    tcb.on_segment(t(5), &cfg, &hdr(F::ACK, seq, SISN + 1, 0), &[], &mut svc, &mut out);
    let snap = tcb.snapshot();
    assert_eq!(snap.snd_wnd, 0);
    let mut sb = Tcb::restore(&cfg, &snap, t(10), None);
    let mut svc2 = TestSvc::open_generator(5000, 1 << 20);
    let mut o = RecSink::default();
    sb.send_probe(t(10), &svc2, &mut o);
    sb.poll_send(t(10), &cfg, &mut svc2, &mut o);
    let p = o.take();
    assert_eq!(p.len(), 1, "only the probe: the replicated window is zero");
    assert_eq!(p[0].0.seq, SISN, "SND.UNA - 1: outside the peer's window, so it must answer");
    assert_eq!(p[0].0.ack, seq);
    assert!(p[0].1.is_empty());
    // Its answer brings the open window: data flows at once.
    sb.on_segment(t(11), &cfg, &hdr(F::ACK, seq, SISN + 1, 3000), &[], &mut svc2, &mut o);
    assert!(o.take().iter().map(|x| x.1.len()).sum::<usize>() > 0);
}

#[test]
fn an_old_pure_ack_is_answered_a_current_one_is_not() {
    // The receiving side of that probe (RFC 9293 §3.10.7.4; Linux does the same).
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(0, 1 << 20);
    let (mut tcb, mut out, seq) = established(&cfg, TcpOptions::default(), &mut svc);
    out.take();
    tcb.on_segment(t(5), &cfg, &hdr(F::ACK, seq, SISN + 1, W), &[], &mut svc, &mut out);
    assert!(out.take().is_empty(), "an acceptable pure ACK gets no reply");
    tcb.on_segment(t(6), &cfg, &hdr(F::ACK, seq - 1, SISN + 1, W), &[], &mut svc, &mut out);
    let r = out.take();
    assert_eq!(r.len(), 1, "a pure ACK before RCV.NXT gets one");
    assert_eq!(r[0].0.ack, seq);
}

/// Once a data byte was acknowledged the probe carries one (zero) byte below SND.UNA:
/// Linux answers a zero-length out-of-window probe at most once per 500 ms per socket,
/// a duplicate data byte every time. The receiver drops the byte and answers at once.
#[test]
fn probe_carries_one_old_byte_once_data_was_acknowledged() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(3000, 1 << 20);
    let (mut tcb, mut out, seq) = established(&cfg, TcpOptions::default(), &mut svc);
    tcb.on_segment(t(2), &cfg, &hdr(F::ACK, seq, SISN + 1 + 3000, W), &[], &mut svc, &mut out);
    out.take();
    let mut o = RecSink::default();
    tcb.send_probe(t(3), &svc, &mut o);
    let p = o.take();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].0.seq, SISN + 3000, "SND.UNA - 1");
    assert_eq!(p[0].1, vec![0u8], "one byte, never delivered");
    // Our own receiver: the byte is a duplicate, not data; it is answered with RCV.NXT.
    let mut rx = TestSvc::open_generator(0, 1 << 20);
    let (mut peer, mut pout, pseq) = established(&cfg, TcpOptions::default(), &mut rx);
    let d: Vec<u8> = (0..10).collect();
    peer.on_segment(t(2), &cfg, &hdr(F::ACK, pseq, SISN + 1, W), &d, &mut rx, &mut pout);
    pout.take();
    peer.on_segment(t(3), &cfg, &hdr(F::ACK, pseq + 9, SISN + 1, W), &[0], &mut rx, &mut pout);
    let r = pout.take();
    assert_eq!(r.len(), 1, "answered at once");
    assert_eq!(r[0].0.ack, pseq + 10);
    assert_eq!(rx.rx, d, "the probe's byte was not delivered");
}

#[test]
fn receiver_zero_window_still_takes_acks() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(1000, 100);
    let (mut tcb, mut out, seq) = established(&cfg, TcpOptions::default(), &mut svc);
    out.take();
    let (h, p) = data_seg(seq, SISN + 1, 100);
    tcb.on_segment(t(5), &cfg, &h, &p, &mut svc, &mut out);
    out.take();
    // Fill the advertised window up to the edge; rx_space is 0 now.
    let a = hdr(F::ACK, seq + 100, SISN + 1, 0);
    tcb.on_segment(t(6), &cfg, &a, &[], &mut svc, &mut out);
    assert_eq!(svc.rx_space(), 0);
}
