//! Idle timeout, dirty flags, snapshot and restore (what replication relies on).

use super::*;

#[test]
fn idle_timeout_resets() {
    let cfg = TcpConfig { idle_timeout: Duration::from_secs(5), ..TcpConfig::default() };
    let mut svc = TestSvc::open_generator(0, 1 << 20);
    let (mut tcb, mut out, _) = established(&cfg, TcpOptions::default(), &mut svc);
    assert_eq!(tcb.next_deadline(), Some(t(1) + Duration::from_secs(5)));
    tcb.on_timer(t(5001), &cfg, &mut svc, &mut out);
    assert!(tcb.is_closed());
    assert_eq!(out.take()[0].0.flags, F::RST | F::ACK);
    assert_eq!(tcb.stats().idle_timeouts, 1);
}

#[test]
fn dirty_flags_track_replicated_changes() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(0, 1 << 20);
    let (mut tcb, mut out, seq) = established(&cfg, TcpOptions::default(), &mut svc);
    tcb.dirty.take();
    let (h, p) = data_seg(seq, SISN + 1, 10);
    tcb.on_segment(t(5), &cfg, &h, &p, &mut svc, &mut out);
    let d = tcb.dirty.take();
    assert!(d.contains(DirtyFlags::RCV_NXT));
    assert!(!d.contains(DirtyFlags::STATE));
    svc.gen_len = 10;
    tcb.poll_send(t(6), &cfg, &mut svc, &mut out);
    assert!(tcb.dirty.take().contains(DirtyFlags::SND_NXT));
    tcb.on_segment(t(7), &cfg, &hdr(F::ACK | F::FIN, seq + 10, SISN + 11, 1000), &[], &mut svc, &mut out);
    let d = tcb.dirty.take();
    assert!(d.contains(DirtyFlags::SND_UNA | DirtyFlags::STATE | DirtyFlags::RCV_NXT));
}

#[test]
fn snapshot_restore_continues_byte_stream() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(50_000, 1 << 20);
    let o = TcpOptions { mss: Some(1000), wscale: Some(2), timestamps: Some((10, 0)), sack_permitted: true, ..Default::default() };
    let (mut tcb, mut out, seq) = established(&cfg, o, &mut svc);
    let first = out.take();
    assert_eq!(first.len(), 10);
    let last_ts = first.last().unwrap().0.options.timestamps.unwrap().0;
    let mut a = hdr(F::ACK, seq, SISN + 1 + 4000, W);
    a.options.timestamps = Some((520, last_ts));
    tcb.on_segment(t(30), &cfg, &a, &[], &mut svc, &mut out);
    out.take();
    let snap = tcb.snapshot();
    assert_eq!(snap.tx_acked, 4000);
    assert!(snap.tx_sent > 4000);
    assert_eq!(snap.snd_una, SISN + 4001);
    // The standby restores on a different clock; the peer ACKs up to 6000.
    let later = Instant::from_millis(5);
    let mut sb = Tcb::restore(&cfg, &snap, later, None);
    assert_eq!(sb.snapshot().tx_sent, snap.tx_sent);
    assert_eq!(sb.state(), State::Established);
    let mut svc2 = TestSvc::open_generator(50_000, 1 << 20);
    svc2.acked = 4000;
    let mut out2 = RecSink::default();
    sb.send_ack(later, &svc2, &mut out2);
    let probe = out2.take()[0].0;
    assert_eq!(probe.ack, seq);
    assert!(probe.options.timestamps.unwrap().0.wrapping_sub(last_ts) as i32 > 0, "TSval monotonic");
    let mut a = hdr(F::ACK, seq, SISN + 1 + 6000, W);
    a.options.timestamps = Some((530, 0));
    sb.on_segment(later, &cfg, &a, &[], &mut svc2, &mut out2);
    let s = out2.take();
    assert!(!s.is_empty());
    assert_eq!(s[0].0.seq, SISN + 6001);
    for (h, p) in &s {
        let off = (h.seq - (SISN + 1)) as u64;
        assert!(p.iter().enumerate().all(|(j, &b)| b == TestSvc::gen_byte(off + j as u64)));
    }
    assert_eq!(svc2.acked, 6000);
}

#[test]
fn snapshot_restore_roundtrip_in_fin_states() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::generator(10, 1 << 20);
    let (tcb, _out, _) = established(&cfg, TcpOptions::default(), &mut svc);
    assert_eq!(tcb.state(), State::FinWait1);
    let snap = tcb.snapshot();
    let r = Tcb::restore(&cfg, &snap, t(0), Some(10));
    assert_eq!(r.snapshot(), TcbSnapshot { ts_offset: r.snapshot().ts_offset, ..snap });
    assert_eq!(r.fin_abs, Some(11));
}

/// Issue 12: a response that ends with our FIN, the FIN queued behind unsent data when the
/// active dies. The old restore put the FIN at the last replicated send position: the
/// client's next ACK then "acknowledged the FIN" (FIN-WAIT-2, silence) or the FIN left early.
#[test]
fn restore_keeps_a_fin_queued_behind_unsent_data() {
    let cfg = TcpConfig::default();
    let len = 100_000u64;
    let mut svc = TestSvc::generator(len, 1 << 20);
    let (tcb, mut out, seq) = established(&cfg, TcpOptions::default(), &mut svc);
    assert_eq!(tcb.state(), State::FinWait1, "the whole response and its FIN are queued");
    let sent = out.take();
    assert!(sent.iter().all(|(h, _)| !h.flags.fin()), "the FIN is behind {len} bytes");
    let snap = tcb.snapshot();
    assert!(snap.tx_sent < len, "only the first flight went out");

    let mut sb = Tcb::restore(&cfg, &snap, t(10), Some(len));
    assert_eq!(sb.state(), State::FinWait1);
    assert_eq!(sb.fin_abs, Some(len + 1), "the FIN goes after the last byte");
    let mut svc2 = TestSvc::generator(len, 1 << 20);
    let mut o = RecSink::default();
    // The client acknowledges everything the old active sent: not our FIN.
    let acked = snap.tx_sent;
    let a = hdr(F::ACK, seq, SISN + 1 + acked as u32, W);
    sb.on_segment(t(11), &cfg, &a, &[], &mut svc2, &mut o);
    assert_eq!(sb.state(), State::FinWait1, "an ACK of data is no ACK of the FIN");
    // Drive the rest of the transfer: every byte once, the FIN once, after the last byte.
    let mut fins = Vec::new();
    let mut now = 12;
    while sb.state() == State::FinWait1 {
        let segs = o.take();
        assert!(!segs.is_empty() || now < 10_000, "stalled in FIN-WAIT-1");
        let mut hi = SISN + 1;
        for (h, p) in &segs {
            let off = (h.seq - (SISN + 1)) as u64;
            assert!(p.iter().enumerate().all(|(j, &b)| b == TestSvc::gen_byte(off + j as u64)));
            if h.flags.fin() {
                fins.push(off + p.len() as u64);
            }
            let end = h.seq + (p.len() as u32 + h.flags.fin() as u32);
            if end.gt(hi) {
                hi = end;
            }
        }
        sb.on_segment(t(now), &cfg, &hdr(F::ACK, seq, hi, W), &[], &mut svc2, &mut o);
        now += 1;
        if segs.is_empty() {
            sb.on_timer(t(now + 2000), &cfg, &mut svc2, &mut o);
        }
    }
    assert_eq!(sb.state(), State::FinWait2);
    assert_eq!(fins, vec![len], "one FIN, right after the last byte");
}

/// The client's ACK of a FIN the old active sent after the last replicated progress proves
/// it was sent: catch up to it (and into FIN-WAIT-2), never beyond it.
#[test]
fn catch_up_covers_a_fin_the_old_active_sent() {
    let cfg = TcpConfig::default();
    // More than the first flight: the replica's progress stops short of the FIN.
    let len = 100_000u64;
    let mut svc = TestSvc::generator(len, 1 << 20);
    let (tcb, _out, seq) = established(&cfg, TcpOptions::default(), &mut svc);
    let snap = tcb.snapshot();
    let mut sb = Tcb::restore(&cfg, &snap, t(10), Some(len));
    // Beyond the FIN: nothing the old active can have sent.
    assert!(!sb.catch_up_sent(SISN + 1 + len as u32 + 2, len));
    assert!(sb.catch_up_sent(SISN + 1 + len as u32 + 1, len));
    let mut svc2 = TestSvc::generator(len, 1 << 20);
    let mut o = RecSink::default();
    sb.on_segment(t(11), &cfg, &hdr(F::ACK, seq, SISN + 1 + len as u32 + 1, W), &[], &mut svc2, &mut o);
    assert_eq!(sb.state(), State::FinWait2);
    assert!(o.take().iter().all(|(_, p)| p.is_empty()), "nothing to resend");
}

/// CLOSE-WAIT at a takeover: the client's FIN is in the replica, our service has not
/// closed. (Neither built-in service lingers there: both close in the call that delivers
/// the FIN, so the exhaustive simulation never finds a replica in CLOSE-WAIT; a proxy's
/// client side will.) The restored flow must neither deliver the FIN again nor send ours
/// before the service closes, and then send it once, after the last byte.
#[test]
fn restore_in_close_wait_waits_for_the_service_to_close() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(2000, 1 << 20);
    let (mut tcb, mut out, seq) = established(&cfg, TcpOptions::default(), &mut svc);
    let a = hdr(F::ACK, seq, SISN + 1 + 2000, W);
    tcb.on_segment(t(2), &cfg, &a, &[], &mut svc, &mut out);
    tcb.on_segment(t(3), &cfg, &hdr(F::FIN | F::ACK, seq, SISN + 1 + 2000, W), &[], &mut svc, &mut out);
    assert_eq!(tcb.state(), State::CloseWait);
    out.take();
    let snap = tcb.snapshot();
    let mut sb = Tcb::restore(&cfg, &snap, t(10), None);
    assert_eq!(sb.state(), State::CloseWait);
    // The replayed service already has the FIN (ShadowFlow delivers it once).
    let mut svc2 = TestSvc { peer_fin: true, ..TestSvc::open_generator(5000, 1 << 20) };
    svc2.acked = 2000;
    let mut o = RecSink::default();
    sb.poll_send(t(10), &cfg, &mut svc2, &mut o);
    let segs = o.take();
    assert!(segs.iter().all(|(h, _)| !h.flags.fin()), "no FIN before the service closes");
    assert_eq!(segs.iter().map(|(_, p)| p.len()).sum::<usize>(), 3000, "the output produced since");
    svc2.close_after = true;
    sb.on_segment(t(11), &cfg, &hdr(F::ACK, seq + 1, SISN + 1 + 5000, W), &[], &mut svc2, &mut o);
    let segs = o.take();
    assert_eq!(sb.state(), State::LastAck);
    assert_eq!(segs.len(), 1);
    assert!(segs[0].0.flags.fin() && segs[0].0.seq == SISN + 1 + 5000, "one FIN, after byte 5000");
    sb.on_segment(t(12), &cfg, &hdr(F::ACK, seq + 1, SISN + 1 + 5001, W), &[], &mut svc2, &mut o);
    assert!(sb.is_closed());
}
