//! Closing: passive, active and simultaneous close, a FIN out of order.

use super::*;

#[test]
fn passive_close_via_echo() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::echo(1 << 20);
    let (mut tcb, mut out, seq) = established(&cfg, TcpOptions::default(), &mut svc);
    let (h, p) = data_seg(seq, SISN + 1, 100);
    let mut h = h;
    h.flags = F::ACK | F::FIN | F::PSH;
    tcb.on_segment(t(10), &cfg, &h, &p, &mut svc, &mut out);
    // Echo closes on peer FIN: data + FIN go out together; CLOSE-WAIT -> LAST-ACK.
    assert_eq!(tcb.state(), State::LastAck);
    let s = out.take();
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].0.flags, F::ACK | F::FIN | F::PSH);
    assert_eq!(s[0].0.ack, seq + 101);
    assert_eq!(s[0].1, p);
    let a = hdr(F::ACK, seq + 101, SISN + 102, W);
    tcb.on_segment(t(20), &cfg, &a, &[], &mut svc, &mut out);
    assert!(tcb.is_closed());
    assert_eq!(svc.acked, 100);
}

#[test]
fn active_close_fin_wait_time_wait() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::generator(10, 1 << 20);
    let (mut tcb, mut out, seq) = established(&cfg, TcpOptions::default(), &mut svc);
    assert_eq!(tcb.state(), State::FinWait1);
    let s = out.take();
    assert_eq!(s[0].0.flags, F::ACK | F::FIN | F::PSH);
    tcb.on_segment(t(10), &cfg, &hdr(F::ACK, seq, SISN + 12, W), &[], &mut svc, &mut out);
    assert_eq!(tcb.state(), State::FinWait2);
    tcb.on_segment(t(20), &cfg, &hdr(F::ACK | F::FIN, seq, SISN + 12, 1000), &[], &mut svc, &mut out);
    assert_eq!(tcb.state(), State::TimeWait);
    assert_eq!(out.take()[0].0.ack, seq + 1);
    assert_eq!(tcb.next_deadline(), Some(t(20) + cfg.time_wait));
    // Retransmitted within the minimum RTO of our ACK (which may still be on its way, or
    // held for the standby): the timer restarts, but no second ACK, which a peer that has
    // closed meanwhile would answer with a reset.
    assert!(cfg.rto_min > Duration::from_millis(10));
    tcb.on_segment(t(30), &cfg, &hdr(F::ACK | F::FIN, seq, SISN + 12, 1000), &[], &mut svc, &mut out);
    assert!(out.take().is_empty(), "no duplicate ACK so soon");
    assert_eq!(tcb.next_deadline(), Some(t(30) + cfg.time_wait));
    // Retransmitted later: re-ACK and restart the timer.
    tcb.on_segment(t(500), &cfg, &hdr(F::ACK | F::FIN, seq, SISN + 12, 1000), &[], &mut svc, &mut out);
    assert_eq!(out.take()[0].0.ack, seq + 1);
    assert_eq!(tcb.next_deadline(), Some(t(500) + cfg.time_wait));
    // A new SYN above RCV.NXT may reuse the tuple.
    let s2 = hdr(F::SYN, seq + 100_000, SeqNum(0), 1000);
    assert_eq!(tcb.on_segment(t(600), &cfg, &s2, &[], &mut svc, &mut out), SegmentVerdict::SynInTimeWait);
    tcb.on_timer(t(500) + cfg.time_wait, &cfg, &mut svc, &mut out);
    assert!(tcb.is_closed());
}

#[test]
fn simultaneous_close() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::generator(0, 1 << 20);
    let (mut tcb, mut out, seq) = established(&cfg, TcpOptions::default(), &mut svc);
    assert_eq!(tcb.state(), State::FinWait1);
    assert_eq!(out.take()[0].0.flags, F::ACK | F::FIN);
    // Peer's FIN crosses ours (does not ack it).
    tcb.on_segment(t(10), &cfg, &hdr(F::ACK | F::FIN, seq, SISN + 1, 1000), &[], &mut svc, &mut out);
    assert_eq!(tcb.state(), State::Closing);
    tcb.on_segment(t(11), &cfg, &hdr(F::ACK, seq + 1, SISN + 2, W), &[], &mut svc, &mut out);
    assert_eq!(tcb.state(), State::TimeWait);
}

#[test]
fn fin_out_of_order_is_remembered() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(0, 1 << 20);
    let (mut tcb, mut out, seq) = established(&cfg, TcpOptions::default(), &mut svc);
    let (mut h, p) = data_seg(seq + 100, SISN + 1, 100);
    h.flags = F::ACK | F::FIN;
    tcb.on_segment(t(10), &cfg, &h, &p, &mut svc, &mut out);
    assert_eq!(tcb.state(), State::Established);
    let (h, p) = data_seg(seq, SISN + 1, 100);
    tcb.on_segment(t(11), &cfg, &h, &p, &mut svc, &mut out);
    assert_eq!(tcb.state(), State::CloseWait);
    assert!(svc.peer_fin);
    assert_eq!(out.take().pop().unwrap().0.ack, seq + 201);
}

/// A passive connection (timestamps on or off) whose service sent 10 bytes and its FIN at
/// once: FIN-WAIT-1. Returns the TCB, its sink, the client's next seq, the service and the
/// TSval our segment carried (0 without timestamps).
fn sent_data_and_fin(cfg: &TcpConfig, ts: bool) -> (Tcb, RecSink, SeqNum, TestSvc, u32) {
    let mut svc = TestSvc::generator(10, 1 << 20);
    let opts = if ts { full_opts() } else { TcpOptions::default() };
    let (tcb, mut out, seq) = established(cfg, opts, &mut svc);
    assert_eq!(tcb.state(), State::FinWait1);
    let our = out.take();
    assert_eq!(our[0].0.flags, F::ACK | F::FIN | F::PSH);
    let ecr = our[0].0.options.timestamps.map_or(0, |x| x.0);
    (tcb, out, seq, svc, ecr)
}

/// `h` with timestamps `(tsval, ecr)` when `ts`.
fn stamped(mut h: TcpHeader, ts: bool, tsval: u32, ecr: u32) -> TcpHeader {
    if ts {
        h.options.timestamps = Some((tsval, ecr));
    }
    h
}

/// Issue 12: the client's last two segments cross on the way (a veth delivers what two CPUs
/// sent through two backlogs: the kernel's immediate ACK of our FIN from softirq, the
/// application's FIN from `close()`). Its FIN arrives first and takes us to TIME-WAIT with
/// one ACK, which ends the client's LAST-ACK: its socket is gone. The pure ACK it sent before
/// the FIN arrives next, below RCV.NXT. Answering it (RFC 9293 §3.10.7.4 "send an
/// acknowledgment" for an unacceptable segment; Linux does, once per 500 ms) reaches no
/// socket, and the client's kernel answers with a RST. In TIME-WAIT nothing is to be
/// resynchronized: both FINs are acknowledged, and a peer still missing our ACK of its FIN
/// asks for it by retransmitting the FIN, which is answered.
#[test]
fn time_wait_does_not_answer_the_clients_stale_ack() {
    for ts in [false, true] {
        let cfg = TcpConfig::default();
        let (mut tcb, mut out, seq, mut svc, ecr) = sent_data_and_fin(&cfg, ts);
        let with_ts = |h: TcpHeader, tsval: u32| stamped(h, ts, tsval, ecr);
        // Sent second, arrives first: the client's FIN, acknowledging our data and FIN.
        let fin = with_ts(hdr(F::ACK | F::FIN, seq, SISN + 12, W), 503);
        tcb.on_segment(t(10), &cfg, &fin, &[], &mut svc, &mut out);
        assert_eq!(tcb.state(), State::TimeWait);
        let s = out.take();
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].0.flags, s[0].0.ack), (F::ACK, seq + 1));
        // Sent first, arrives second: its ACK of our data and FIN, one below RCV.NXT (and,
        // with timestamps, an older TSval: PAWS rejects it too). No answer.
        let stale = with_ts(hdr(F::ACK, seq, SISN + 12, W), 502);
        tcb.on_segment(t(10), &cfg, &stale, &[], &mut svc, &mut out);
        assert!(out.take().is_empty(), "ts {ts}: a stale ACK in TIME-WAIT drew an ACK; a closed client answers it with RST");
        assert_eq!(tcb.stats().time_wait_stale_acks, 1);
        assert_eq!(tcb.state(), State::TimeWait);
        // A retransmitted FIN (the client lost our ACK) is still answered, once the minimum
        // RTO has passed.
        let fin2 = with_ts(hdr(F::ACK | F::FIN, seq, SISN + 12, W), 900);
        tcb.on_segment(t(400), &cfg, &fin2, &[], &mut svc, &mut out);
        assert_eq!(out.take().len(), 1, "ts {ts}: a retransmitted FIN is answered");
    }
}

/// The same class with an old segment that is not a bare ACK: the peer's retransmission of
/// data (or, with timestamps, a PAWS-stale segment) sent before our ACK of its FIN reached
/// it and delivered after that ACK ended its LAST-ACK. Within the minimum RTO of that ACK it
/// is left unanswered (the proxy's backend half met this: an echo server's kernel answered
/// our second ACK with a RST); later, a retransmission is answered as before, since the
/// peer evidently lacks our ACK.
#[test]
fn time_wait_does_not_answer_an_old_retransmission_at_once() {
    for ts in [false, true] {
        let cfg = TcpConfig::default();
        let (mut tcb, mut out, seq, mut svc, ecr) = sent_data_and_fin(&cfg, ts);
        let with_ts = |h: TcpHeader, tsval: u32| stamped(h, ts, tsval, ecr);
        // The peer's last 100 bytes, acknowledging our data and FIN, then its FIN.
        let (d, p) = data_seg(seq, SISN + 12, 100);
        tcb.on_segment(t(10), &cfg, &with_ts(d, 510), &p, &mut svc, &mut out);
        assert_eq!(tcb.state(), State::FinWait2);
        let fin = with_ts(hdr(F::ACK | F::FIN, seq + 100, SISN + 12, W), 511);
        tcb.on_segment(t(11), &cfg, &fin, &[], &mut svc, &mut out);
        assert_eq!(tcb.state(), State::TimeWait);
        out.take();
        // Its retransmission of the data, sent before our ACKs arrived: no answer.
        let before = tcb.stats().time_wait_stale_acks;
        tcb.on_segment(t(20), &cfg, &with_ts(d, 512), &p, &mut svc, &mut out);
        assert!(out.take().is_empty(), "ts {ts}: an old retransmission in TIME-WAIT drew an ACK at once");
        assert_eq!(tcb.stats().time_wait_stale_acks, before + 1);
        if ts {
            // A PAWS-stale bare ACK at RCV.NXT: no answer either.
            let stale = with_ts(hdr(F::ACK, seq + 101, SISN + 12, W), 505);
            tcb.on_segment(t(21), &cfg, &stale, &[], &mut svc, &mut out);
            assert!(out.take().is_empty(), "a PAWS-stale segment in TIME-WAIT drew an ACK at once");
        }
        // Past the minimum RTO: the peer still lacks our ACK; it is answered.
        let later = t(11) + cfg.rto_min + Duration::from_millis(1);
        tcb.on_segment(later, &cfg, &with_ts(d, 900), &p, &mut svc, &mut out);
        let s = out.take();
        assert_eq!(s.len(), 1, "ts {ts}: a later retransmission is answered");
        assert_eq!(s[0].0.ack, seq + 101);
        assert_eq!(tcb.state(), State::TimeWait);
    }
}
