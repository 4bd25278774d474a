//! Opening: passive and active handshakes, options, SYN-SENT and SYN-RECEIVED.

use super::*;

#[test]
fn passive_handshake_all_options() {
    let cfg = TcpConfig::default();
    let mut out = RecSink::default();
    let tcb = Tcb::accept(t(0), &cfg, &syn(full_opts()), SISN, &mut out).unwrap();
    let sa = out.last();
    assert_eq!(sa.flags, F::SYN | F::ACK);
    assert_eq!((sa.seq, sa.ack), (SISN, CISN + 1));
    assert_eq!((sa.src_port, sa.dst_port), (80, 5555));
    assert_eq!(sa.options.mss, Some(1460));
    assert_eq!(sa.options.wscale, Some(7));
    assert!(sa.options.sack_permitted);
    assert_eq!(sa.options.timestamps.map(|x| x.1), Some(500));
    assert_eq!(tcb.mss(), 1400);
    assert_eq!(tcb.window_scales(), (8, 7));
    assert!(tcb.sack_enabled() && tcb.timestamps_enabled());
    let mut svc = TestSvc::echo(1 << 20);
    let (tcb, _, _) = established(&cfg, full_opts(), &mut svc);
    // Peer window 65535 << 8.
    assert_eq!(tcb.snd_wnd(), 65535 << 8);
}

#[test]
fn passive_handshake_no_options() {
    let cfg = TcpConfig::default();
    let mut out = RecSink::default();
    let tcb = Tcb::accept(t(0), &cfg, &syn(TcpOptions::default()), SISN, &mut out).unwrap();
    let sa = out.last();
    assert_eq!(sa.options.wscale, None);
    assert!(!sa.options.sack_permitted);
    assert_eq!(sa.options.timestamps, None);
    assert_eq!(tcb.mss(), 536); // RFC 9293 §3.7.1 default
    assert_eq!(tcb.window_scales(), (0, 0));
    let mut svc = TestSvc::echo(1 << 20);
    let (tcb, _, _) = established(&cfg, TcpOptions::default(), &mut svc);
    assert_eq!(tcb.snd_wnd(), 65535);
}

#[test]
fn passive_handshake_partial_options_and_disabled_config() {
    let cfg = TcpConfig { timestamps: false, sack: false, ..TcpConfig::default() };
    let mut out = RecSink::default();
    let tcb = Tcb::accept(t(0), &cfg, &syn(full_opts()), SISN, &mut out).unwrap();
    assert!(!tcb.sack_enabled() && !tcb.timestamps_enabled());
    assert_eq!(out.last().options.timestamps, None);
    let o = TcpOptions { wscale: Some(20), ..Default::default() };
    let tcb = Tcb::accept(t(0), &TcpConfig::default(), &syn(o), SISN, &mut out).unwrap();
    assert_eq!(tcb.window_scales(), (14, 7)); // RFC 7323 §2.3 clamp
}

#[test]
fn accept_rejects_non_syn() {
    let cfg = TcpConfig::default();
    let mut out = RecSink::default();
    let rst = hdr(F::RST, CISN, SeqNum(0), 0);
    assert_eq!(Tcb::accept(t(0), &cfg, &rst, SISN, &mut out).err(), Some(TcpError::RstInListen));
    let ack = hdr(F::ACK, CISN, SeqNum(77), 0);
    assert_eq!(Tcb::accept(t(0), &cfg, &ack, SISN, &mut out).err(), Some(TcpError::AckInListen));
    let r = reset_for(&ack, 0).unwrap();
    assert_eq!((r.seq, r.flags), (SeqNum(77), F::RST));
    let none = hdr(F::PSH, CISN, SeqNum(0), 0);
    assert_eq!(Tcb::accept(t(0), &cfg, &none, SISN, &mut out).err(), Some(TcpError::NotSyn));
    let r = reset_for(&none, 10).unwrap();
    assert_eq!((r.ack, r.flags), (CISN + 10, F::RST | F::ACK));
    let sf = hdr(F::SYN | F::FIN, CISN, SeqNum(0), 0);
    assert_eq!(Tcb::accept(t(0), &cfg, &sf, SISN, &mut out).err(), Some(TcpError::Malformed));
    assert!(out.segs.is_empty());
    assert!(reset_for(&rst, 0).is_none());
}

#[test]
fn active_open_and_syn_retransmit() {
    let cfg = TcpConfig::default();
    let mut out = RecSink::default();
    let mut svc = TestSvc::echo(65535);
    let mut tcb = Tcb::connect(t(0), &cfg, 40000, 80, CISN, &mut out);
    let s = out.take().pop().unwrap().0;
    assert_eq!(s.flags, F::SYN);
    assert_eq!(s.options.mss, Some(1460));
    assert_eq!(tcb.state(), State::SynSent);
    // SYN lost: retransmitted at the initial RTO.
    assert_eq!(tcb.next_deadline(), Some(t(1000)));
    tcb.on_timer(t(1000), &cfg, &mut svc, &mut out);
    assert_eq!(out.take().pop().unwrap().0.flags, F::SYN);
    assert_eq!(tcb.next_deadline(), Some(t(3000))); // backed off
    // A bad ACK gets a RST.
    let bad = hdr(F::SYN | F::ACK, SISN, CISN + 5, 1000);
    assert_eq!(tcb.on_segment(t(1500), &cfg, &bad, &[], &mut svc, &mut out), SegmentVerdict::BadAck);
    assert_eq!(out.take().pop().unwrap().0.flags, F::RST);
    let mut sa = hdr(F::SYN | F::ACK, SISN, CISN + 1, 1000);
    sa.options = TcpOptions { mss: Some(1200), wscale: Some(2), ..Default::default() };
    assert_eq!(tcb.on_segment(t(1600), &cfg, &sa, &[], &mut svc, &mut out), SegmentVerdict::Accepted);
    assert_eq!(tcb.state(), State::Established);
    let a = out.take().pop().unwrap().0;
    assert_eq!((a.flags, a.seq, a.ack), (F::ACK, CISN + 1, SISN + 1));
    assert_eq!(tcb.mss(), 1200);
    assert_eq!(tcb.snd_wnd(), 1000); // SYN window unscaled
}

#[test]
fn syn_sent_rst_handling() {
    let cfg = TcpConfig::default();
    let mut out = RecSink::default();
    let mut svc = TestSvc::echo(65535);
    let mut tcb = Tcb::connect(t(0), &cfg, 40000, 80, CISN, &mut out);
    let r = hdr(F::RST, SISN, SeqNum(0), 0);
    assert_eq!(tcb.on_segment(t(1), &cfg, &r, &[], &mut svc, &mut out), SegmentVerdict::RstIgnored);
    let r = hdr(F::RST | F::ACK, SeqNum(0), CISN + 1, 0);
    assert_eq!(tcb.on_segment(t(1), &cfg, &r, &[], &mut svc, &mut out), SegmentVerdict::RstAccepted);
    assert!(tcb.is_closed());
    assert_eq!(tcb.next_deadline(), None);
}

#[test]
fn syn_received_retransmits_syn_ack() {
    let cfg = TcpConfig::default();
    let mut out = RecSink::default();
    let mut svc = TestSvc::echo(65535);
    let mut tcb = Tcb::accept(t(0), &cfg, &syn(full_opts()), SISN, &mut out).unwrap();
    out.take();
    let v = tcb.on_segment(t(10), &cfg, &syn(full_opts()), &[], &mut svc, &mut out);
    assert_eq!(v, SegmentVerdict::SynAckRetransmitted);
    assert_eq!(out.take()[0].0.flags, F::SYN | F::ACK);
    // Timer-driven retransmission, then give up after syn_ack_retries.
    let mut now;
    for _ in 0..cfg.syn_ack_retries {
        now = tcb.next_deadline().unwrap();
        tcb.on_timer(now, &cfg, &mut svc, &mut out);
        assert_eq!(out.take()[0].0.flags, F::SYN | F::ACK);
    }
    now = tcb.next_deadline().unwrap();
    tcb.on_timer(now, &cfg, &mut svc, &mut out);
    assert!(tcb.is_closed());
    assert_eq!(out.take()[0].0.flags, F::RST | F::ACK);
    assert_eq!(tcb.stats().retransmit_aborts, 1);
}

#[test]
fn syn_received_bad_ack_gets_rst() {
    let cfg = TcpConfig::default();
    let mut out = RecSink::default();
    let mut svc = TestSvc::echo(65535);
    let mut tcb = Tcb::accept(t(0), &cfg, &syn(TcpOptions::default()), SISN, &mut out).unwrap();
    out.take();
    let a = hdr(F::ACK, CISN + 1, SISN + 9, 100);
    assert_eq!(tcb.on_segment(t(1), &cfg, &a, &[], &mut svc, &mut out), SegmentVerdict::BadAck);
    let r = out.take()[0].0;
    assert_eq!((r.flags, r.seq), (F::RST, SISN + 9));
    assert_eq!(tcb.state(), State::SynReceived);
}
