//! An acknowledgement limit from the service (`ByteStream::ack_limit`, a proxy half with
//! `commit = "peer"`): received bytes are delivered at once but acknowledged only as far as
//! the limit, the window's right edge stays where RCV.NXT put it, no duplicate ACK goes out
//! while bytes wait, a raised limit is said at once, and the peer's FIN waits for every byte
//! before it.

use super::*;

/// ESTABLISHED with a service that takes 10 000 bytes and acknowledges nothing yet.
fn held() -> (TcpConfig, TestSvc, Tcb, RecSink, SeqNum) {
    let cfg = TcpConfig { delayed_ack: crate::time::Duration::ZERO, ..TcpConfig::default() };
    let mut svc = TestSvc { limit: Some(0), ..TestSvc::open_generator(0, 10_000) };
    let (tcb, out, seq) = established(&cfg, TcpOptions::default(), &mut svc);
    (cfg, svc, tcb, out, seq)
}

#[test]
fn bytes_beyond_the_limit_are_delivered_but_not_acknowledged() {
    let (cfg, mut svc, mut tcb, mut out, seq) = held();
    let (h, p) = data_seg(seq, SISN + 1, 1000);
    tcb.on_segment(t(10), &cfg, &h, &p, &mut svc, &mut out);
    assert_eq!(svc.rx.len(), 1000, "delivered at once");
    assert_eq!(tcb.rcv_nxt(), seq + 1000);
    assert_eq!(tcb.ack_point(), seq, "acknowledged only as far as the limit");
    // Nothing new to say: the ACK it owes would repeat the handshake's (a duplicate ACK).
    assert!(out.take().is_empty(), "no duplicate ACK while bytes wait");
    let (h, p) = data_seg(seq + 1000, SISN + 1, 1000);
    tcb.on_segment(t(11), &cfg, &h, &p, &mut svc, &mut out);
    assert!(out.take().is_empty());
    // The peer retransmits what was not acknowledged: still no duplicate ACK.
    let (h, p) = data_seg(seq, SISN + 1, 1000);
    tcb.on_segment(t(12), &cfg, &h, &p, &mut svc, &mut out);
    assert!(out.take().is_empty());
    assert_eq!(svc.rx.len(), 2000, "the retransmission is not delivered twice");
    assert_eq!(tcb.stats().held_acks_suppressed, 3);
    // The limit moves (the other side's peer acknowledged 1 500 bytes): one ACK at once.
    svc.limit = Some(1500);
    tcb.poll_send(t(13), &cfg, &mut svc, &mut out);
    let segs = out.take();
    assert_eq!(segs.len(), 1, "one pure ACK: {segs:?}");
    let a = segs[0].0;
    assert_eq!(a.ack, seq + 1500);
    // The window counts from the ACK it goes with: the right edge stays where the handshake
    // put it (64 KiB from the first byte), the bytes between the ACK and RCV.NXT inside it.
    assert_eq!(a.ack + u32::from(a.window), seq + 65535);
    tcb.poll_send(t(14), &cfg, &mut svc, &mut out);
    assert!(out.take().is_empty(), "said once");
    // All of it: the ACK reaches RCV.NXT.
    svc.limit = Some(2000);
    tcb.poll_send(t(15), &cfg, &mut svc, &mut out);
    assert_eq!(out.take().pop().expect("ACK").0.ack, seq + 2000);
}

#[test]
fn the_fin_waits_for_every_byte_before_it() {
    let (cfg, mut svc, mut tcb, mut out, seq) = held();
    let (mut h, p) = data_seg(seq, SISN + 1, 500);
    h.flags = F::ACK | F::FIN;
    tcb.on_segment(t(10), &cfg, &h, &p, &mut svc, &mut out);
    assert_eq!(svc.rx.len(), 500);
    assert_eq!(tcb.state(), State::Established, "the FIN is not processed while bytes before it wait");
    assert!(!svc.peer_fin);
    assert_eq!(tcb.rcv_nxt(), seq + 500);
    svc.limit = Some(499);
    tcb.poll_send(t(11), &cfg, &mut svc, &mut out);
    assert_eq!(out.take().pop().expect("ACK").0.ack, seq + 499);
    assert_eq!(tcb.state(), State::Established);
    svc.limit = Some(500);
    tcb.poll_send(t(12), &cfg, &mut svc, &mut out);
    assert_eq!(tcb.state(), State::CloseWait, "processed once every byte before it may be acknowledged");
    assert!(svc.peer_fin);
    assert_eq!(out.take().pop().expect("ACK").0.ack, seq + 501, "the FIN acknowledged with its bytes");
}

#[test]
fn without_held_bytes_every_ack_goes_out() {
    // A keepalive while nothing waits is answered as always (the limit only silences
    // duplicates while received bytes wait for it).
    let (cfg, mut svc, mut tcb, mut out, seq) = held();
    let (h, p) = data_seg(seq, SISN + 1, 100);
    tcb.on_segment(t(10), &cfg, &h, &p, &mut svc, &mut out);
    svc.limit = Some(100);
    tcb.poll_send(t(11), &cfg, &mut svc, &mut out);
    assert_eq!(out.take().pop().expect("ACK").0.ack, seq + 100);
    let (h, p) = data_seg(seq + 99, SISN + 1, 1);
    tcb.on_segment(t(12), &cfg, &h, &p, &mut svc, &mut out);
    assert_eq!(out.take().pop().expect("the keepalive answered").0.ack, seq + 100);
}

#[test]
fn bytes_the_far_side_has_count_as_received() {
    // After a takeover the other side's peer acknowledged 300 bytes of ours that this engine
    // never saw (the dead one relayed them): RCV.NXT moves over them, and their
    // retransmission is a duplicate.
    let (cfg, mut svc, mut tcb, mut out, seq) = held();
    let (h, p) = data_seg(seq + 300, SISN + 1, 100);
    tcb.on_segment(t(10), &cfg, &h, &p, &mut svc, &mut out);
    assert_eq!(svc.rx.len(), 0, "out of order: held");
    svc.skipped = 300;
    svc.limit = Some(400);
    tcb.poll_send(t(11), &cfg, &mut svc, &mut out);
    assert_eq!(tcb.rcv_nxt(), seq + 400, "over the skipped bytes, then the held segment");
    assert_eq!(svc.rx.len(), 100);
    assert_eq!(tcb.stats().skipped_in, 300);
    assert_eq!(out.take().pop().expect("ACK").0.ack, seq + 400);
    let (h, p) = data_seg(seq, SISN + 1, 300);
    tcb.on_segment(t(12), &cfg, &h, &p, &mut svc, &mut out);
    assert_eq!(svc.rx.len(), 100, "the retransmission of the skipped bytes is a duplicate");
}
