//! Replay exactness, watermarks and output commit (strict and async), joins, the ring backlog.

use super::*;

/// (a) + (b): replay exactness with a standby present from the start, and the watermark
/// tracking the standby's acks in strict mode.
#[test]
fn replay_exact_and_watermark_tracks_acks() {
    let _g = serial();
    let stack = stack_cfg();
    let (acfg, scfg) = pair_cfgs(Duration::from_millis(10));
    let (mut ws, links) = workers(2, &stack, 0x5eed);
    let shared: Vec<_> = ws.iter().map(|w| w.repl.shared().clone()).collect();
    let active = node(acfg, &stack, links);
    // (b) no standby: everything released, unprotected.
    wait_until(
        "active role, unprotected",
        Duration::from_secs(3),
        || {},
        || {
            active.status.role() == Role::Active
                && active
                    .status
                    .unprotected
                    .load(std::sync::atomic::Ordering::Relaxed)
        },
    );
    assert!(shared.iter().all(|s| s.watermark() == RELEASE_ALL));

    let standby = node(scfg, &stack, idle_links(2));
    let t = wait_until(
        "in_sync",
        Duration::from_secs(5),
        || pump(&mut ws),
        || active.status.in_sync(),
    );
    println!("standby in sync after {t:?} (empty snapshot)");
    assert_eq!(standby.status.peer_state(), PeerState::InSync);

    // Events; in strict mode the watermark stays at or below what was emitted and catches up.
    let mut saw_behind = false;
    for i in 0..6000 {
        let w = i % 2;
        ws[w].random_event();
        let s = &shared[w];
        let wm = s.watermark();
        assert_ne!(
            wm, RELEASE_ALL,
            "in-sync strict standby: watermark must track acks"
        );
        assert!(wm <= ws[w].repl.last_seq());
        saw_behind |= wm < ws[w].repl.last_seq();
    }
    assert!(
        saw_behind,
        "output should have had to wait for an ack at least once"
    );
    let t = wait_pumped(
        "watermark catch-up",
        Duration::from_secs(10),
        &mut ws,
        |ws| ws.iter().all(FakeWorker::caught_up),
    );
    println!(
        "caught up {t:?} after the last event; deltas sent {}, bytes {}, lag now {} records",
        active
            .status
            .deltas_sent
            .load(std::sync::atomic::Ordering::Relaxed),
        active
            .status
            .bytes_replicated
            .load(std::sync::atomic::Ordering::Relaxed),
        active
            .status
            .lag_records
            .load(std::sync::atomic::Ordering::Relaxed),
    );
    assert_eq!(
        standby
            .status
            .replay_errors
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(
        standby
            .status
            .seq_gaps
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );

    // (a) take over on request and compare every flow with the reference.
    let t = standby.take_over_now();
    assert_eq!(t.reason, TakeoverReason::Requested);
    assert!(t.in_sync);
    assert_eq!(t.epoch, 2);
    assert_same(&stack, &ws, &t);
    println!(
        "replay exact: {} flows compared",
        ws.iter().map(|w| w.flows.len()).sum::<usize>()
    );
    // The old active learns it is fenced and holds all output.
    wait_until(
        "old active fenced",
        Duration::from_secs(3),
        || {},
        || active.status.role() != Role::Active,
    );
    assert!(shared
        .iter()
        .all(|s| s.watermark() != RELEASE_ALL || active.status.role() == Role::Standby));
    standby.handle.stop();
    active.handle.stop();
}

/// Runs of ACK-only updates of one flow (a download) are coalesced by the sync core, and the
/// standby still replays every flow exactly.
#[test]
fn coalesced_updates_replay_exactly() {
    let _g = serial();
    let stack = stack_cfg();
    let (scfg, mut ws, active) = active_with_workers(&stack, Duration::from_millis(10), 1, 0xc0a1);
    let standby = node(scfg, &stack, idle_links(1));
    wait_until("in_sync", Duration::from_secs(5), || pump(&mut ws), || active.status.in_sync());
    for round in 0..400 {
        let w = &mut ws[0];
        w.random_event();
        if w.flows.is_empty() {
            continue;
        }
        // A run of ACKs for one flow, emitted back to back (one RX burst's worth).
        let i = w.rng.below(w.flows.len() as u64) as usize;
        for _ in 0..(4 + round % 29) {
            w.step_with(i, false);
        }
        w.repl.flush();
    }
    wait_pumped("watermark catch-up", Duration::from_secs(10), &mut ws, |ws| {
        ws.iter().all(FakeWorker::caught_up)
    });
    let rel = std::sync::atomic::Ordering::Relaxed;
    let coalesced = active.status.deltas_coalesced.load(rel);
    let sent = active.status.deltas_sent.load(rel);
    // Sequence numbers count deltas (a long Data event is split into several).
    let emitted = ws[0].repl.last_seq();
    println!("deltas emitted {emitted}, sent {sent}, coalesced {coalesced}");
    assert!(coalesced > 0, "runs of updates of one flow must be coalesced");
    assert_eq!(sent + coalesced, emitted, "every delta is sent or coalesced");
    assert_eq!(standby.status.replay_errors.load(rel), 0);
    assert_eq!(standby.status.seq_gaps.load(rel), 0);
    let t = standby.take_over_now();
    assert_same(&stack, &ws, &t);
    standby.handle.stop();
    active.handle.stop();
}

/// (b) the watermark returns to "release all" when the standby goes away (service must
/// not stop without a standby), and async mode never holds output.
#[test]
fn watermark_without_standby_and_async() {
    let _g = serial();
    let stack = stack_cfg();
    for mode in [Mode::Strict, Mode::Async] {
        let (mut acfg, mut scfg) = pair_cfgs(Duration::from_millis(10));
        // (Both ends in the mode: a pair in different modes is refused.)
        acfg.mode = mode;
        scfg.mode = mode;
        let (mut ws, links) = workers(1, &stack, 42);
        let shared = ws[0].repl.shared().clone();
        let active = node(acfg, &stack, links);
        wait_active(&active);
        for _ in 0..50 {
            ws[0].random_event();
        }
        assert_eq!(shared.watermark(), RELEASE_ALL);
        let standby = node(scfg, &stack, idle_links(1));
        wait_until(
            "in_sync",
            Duration::from_secs(5),
            || pump(&mut ws),
            || active.status.in_sync(),
        );
        for _ in 0..200 {
            ws[0].random_event();
            if mode == Mode::Async {
                assert_eq!(shared.watermark(), RELEASE_ALL);
            }
        }
        wait_pumped("acks", Duration::from_secs(5), &mut ws, |ws| {
            active
                .status
                .lag_records
                .load(std::sync::atomic::Ordering::Relaxed)
                == 0
                && (mode == Mode::Async || ws[0].caught_up())
        });
        if mode == Mode::Strict {
            assert_eq!(shared.watermark(), ws[0].repl.last_seq());
        }
        standby.handle.stop();
        let t = wait_until(
            "release all after standby loss",
            Duration::from_secs(2),
            || pump(&mut ws),
            || shared.watermark() == RELEASE_ALL,
        );
        println!("{mode:?}: standby loss -> release all after {t:?}");
        assert!(
            standby.takeovers.try_recv().is_err(),
            "a stopped standby must not take over"
        );
        active.handle.stop();
    }
}

/// A standby that joins and reports in sync, and acknowledges batches only while `ack_now`
/// is set (from the start): the scripted peer for the async lag bound.
struct SilentStandby {
    ack_now: Arc<std::sync::atomic::AtomicBool>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SilentStandby {
    fn connect(active: SocketAddr, hello: &[u8]) -> SilentStandby {
        use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
        let ack_now = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, st) = (ack_now.clone(), stop.clone());
        let mut s = TcpStream::connect(active).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(2))).unwrap();
        s.write_all(hello).unwrap();
        let thread = std::thread::spawn(move || {
            let (mut buf, mut chunk) = (Vec::new(), vec![0u8; 1 << 16]);
            let (mut token, mut last_seq) = (0u64, 0u64);
            let mut last_hb = Instant::now() - Duration::from_secs(1);
            while !st.load(Relaxed) {
                if let Ok(n) = s.read(&mut chunk) {
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let mut at = 0;
                while let Ok(Some((m, used))) = proto::decode(&buf[at..]) {
                    match m {
                        Msg::Snapshot { token: t } => token = t,
                        Msg::Batch { last_seq: l, .. } => last_seq = last_seq.max(l),
                        _ => {}
                    }
                    at += used;
                }
                buf.drain(..at);
                let mut out = Vec::new();
                if last_hb.elapsed() >= Duration::from_millis(5) {
                    let hb = Heartbeat { epoch: 1, role: Role::Standby as u8, in_sync: token != 0, token, lag_records: 0, lag_us: 0, flows: 0 };
                    proto::encode(&Msg::Heartbeat(hb), &mut out);
                    last_hb = Instant::now();
                }
                if a.load(Relaxed) && last_seq > 0 {
                    proto::encode(&Msg::Ack { worker: 0, seq: last_seq }, &mut out);
                }
                if !out.is_empty() && s.write_all(&out).is_err() {
                    return;
                }
            }
        });
        SilentStandby { ack_now, stop, thread: Some(thread) }
    }
}

impl Drop for SilentStandby {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Async mode never holds output while the standby keeps up, but once the oldest
/// unacknowledged batch is older than `async_max_lag` it holds output (the watermark falls
/// back to what the standby acknowledged) until the standby catches up: the lag, and so what
/// a failover can lose, is bounded. Counted in `async_lag_holds`.
#[test]
fn async_lag_is_bounded_by_holding_output() {
    use std::sync::atomic::Ordering::Relaxed;
    let _g = serial();
    let stack = stack_cfg();
    let (mut acfg, _) = pair_cfgs(Duration::from_millis(10));
    acfg.mode = Mode::Async;
    acfg.async_max_lag = Duration::from_millis(40);
    let listen = acfg.listen;
    let (mut ws, links) = workers(1, &stack, 77);
    let shared = ws[0].repl.shared().clone();
    let active = node(acfg, &stack, links);
    wait_active(&active);
    // An async standby beating every 10 ms, as the active (a mismatch is refused).
    let peer = SilentStandby::connect(listen, &peer_hello_with(9, 0, Role::Standby, 1, 10_000));
    wait_until("in_sync", Duration::from_secs(5), || pump(&mut ws), || active.status.in_sync());
    // Caught up (the join snapshot acknowledged), then the standby falls silent: the oldest
    // unacknowledged batch is sent after t0.
    wait_pumped("join acknowledged", Duration::from_secs(3), &mut ws, |_| active.status.lag_records.load(Relaxed) == 0);
    peer.ack_now.store(false, Relaxed);
    std::thread::sleep(Duration::from_millis(10)); // acks already in flight arrive
    let t0 = Instant::now();
    // Output flows freely at first, although nothing is acknowledged.
    for _ in 0..100 {
        ws[0].random_event();
    }
    assert_eq!(shared.watermark(), RELEASE_ALL, "async: no hold while the lag is young");
    // Past the bound: output is held at the acknowledged sequence (nothing yet).
    wait_pumped("hold once the lag passes async_max_lag", Duration::from_secs(3), &mut ws, |_| {
        shared.watermark() != RELEASE_ALL
    });
    let held_after = t0.elapsed();
    println!("async: output held {held_after:?} after the last event (bound 40 ms), lag {} us", active.status.lag_us.load(Relaxed));
    assert!(held_after >= Duration::from_millis(30), "held too early: {held_after:?}");
    assert!(shared.watermark() < ws[0].repl.last_seq(), "held output must wait for the standby");
    assert!(active.status.async_lag_holds.load(Relaxed) > 0);
    // Still held while the standby stays silent.
    std::thread::sleep(Duration::from_millis(100));
    assert_ne!(shared.watermark(), RELEASE_ALL);
    // The standby catches up: output flows again.
    peer.ack_now.store(true, Relaxed);
    wait_pumped("release after the standby caught up", Duration::from_secs(3), &mut ws, |_| {
        shared.watermark() == RELEASE_ALL
    });
    drop(peer);
    active.handle.stop();
}

/// (c) join: flows that exist before the standby connects arrive through the snapshot
/// (New + SvcImage + Barrier); the standby reports in_sync and replays exactly afterwards.
#[test]
fn late_standby_joins_through_snapshot() {
    let _g = serial();
    let stack = stack_cfg();
    let (scfg, mut ws, active) = active_with_workers(&stack, Duration::from_millis(10), 2, 0xabc);
    wait_active(&active);
    for i in 0..3000 {
        ws[i % 2].random_event();
    }
    let before: usize = ws.iter().map(|w| w.flows.len()).sum();
    let standby = node(scfg, &stack, idle_links(2));
    // Keep traffic going while the standby joins.
    let mut i = 0;
    let t = wait_until(
        "in_sync",
        Duration::from_secs(5),
        || {
            ws[i % 2].random_event();
            i += 1;
        },
        || active.status.in_sync(),
    );
    println!("late standby in sync after {t:?} ({before} flows in the snapshot)");
    for i in 0..2000 {
        ws[i % 2].random_event();
    }
    wait_pumped("catch-up", Duration::from_secs(10), &mut ws, |ws| {
        ws.iter().all(FakeWorker::caught_up)
    });
    assert_eq!(
        standby
            .status
            .replay_errors
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    let t = standby.take_over_now();
    assert!(t.in_sync);
    assert_same(&stack, &ws, &t);
    standby.handle.stop();
    active.handle.stop();
}


/// (f) ring full: records queue in the backlog in order, nothing is lost, `ReplFull` only
/// when the backlog is full too (without taking a sequence number), Data is split.
#[test]
fn ring_full_backlog_keeps_order() {
    let _g = serial();
    let stack = stack_cfg();
    let (repl, mut link) = worker_channel_with_backlog(3, 64, 256);
    let mut fw = FakeWorker::new(stack, repl, 5);
    fw.open();
    let (slot, img) = (fw.flows[0].slot, fw.flows[0].img);
    let mut expected_offset = 0u64;
    let mut full_at = None;
    let payload: Vec<u8> = (0..4000u32).map(|i| i as u8).collect();
    for i in 0..100 {
        let before = fw.repl.last_seq();
        match fw.repl.emit(
            slot,
            ReplEvent::Data {
                offset: expected_offset,
                bytes: &payload,
            },
        ) {
            Ok(seq) => {
                assert_eq!(seq, before + 3, "4000 bytes = 3 Data deltas");
                expected_offset += payload.len() as u64;
            }
            Err(_) => {
                assert_eq!(
                    fw.repl.last_seq(),
                    before,
                    "ReplFull takes no sequence number"
                );
                full_at = Some(i);
                break;
            }
        }
    }
    let full_at = full_at.expect("backlog bound must be hit");
    assert!(fw.repl.backlog() > 0);
    assert!(fw.repl.shared().repl_full() >= 1);
    // Drain in small steps, flushing between: order and contiguity are kept.
    let mut recs: Vec<Record> = vec![[0; 8]; 64];
    let (mut next_seq, mut next_off) = (2u64, 0u64); // seq 1 = the New
    let mut saw_new = false;
    loop {
        let n = link.consumer.peek_burst(&mut recs);
        if n == 0 {
            fw.repl.flush();
            if link.consumer.is_empty() {
                break;
            }
            continue;
        }
        let mut at = 0;
        while at < n {
            let (d, used) = match delta::decode(&recs[at..n]) {
                Ok(x) => x,
                Err(delta::DeltaError::Truncated { .. }) => break,
                Err(e) => panic!("{e}"),
            };
            at += used;
            match d.body {
                DeltaBody::FlowNew(_) => {
                    assert_eq!(d.header.seq, 1);
                    saw_new = true;
                }
                DeltaBody::Data(dr) => {
                    assert_eq!(d.header.seq, next_seq, "sequence order");
                    assert_eq!(dr.offset, next_off, "stream order");
                    let o = (dr.offset % payload.len() as u64) as usize;
                    assert_eq!(dr.payload(), &payload[o..o + dr.payload().len()]);
                    next_seq += 1;
                    next_off += dr.payload().len() as u64;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        link.consumer.advance(at);
        fw.repl.flush();
    }
    assert!(saw_new);
    assert_eq!(next_off, expected_offset, "every accepted byte arrived");
    assert_eq!(next_seq - 1, fw.repl.last_seq());
    assert_eq!(fw.repl.backlog(), 0);
    // Room again: the refused event can be retried.
    fw.repl.emit(slot, ReplEvent::Update(&img)).unwrap();
    println!(
        "backlog filled after {full_at} × 4000-byte events; all {} deltas arrived in order",
        next_seq - 1
    );
}

/// FlowImage ↔ FlowStateRec round trip through the delta encoding.
#[test]
fn flow_image_roundtrip() {
    let stack = stack_cfg();
    let (repl, _l) = worker_channel(0, 64);
    let mut fw = FakeWorker::new(stack, repl, 9);
    fw.open();
    fw.flows[0].img.tcb.tx_acked = 0x1_0000_0001;
    fw.flows[0].img.tcb.tx_sent = 0x2_0000_0002;
    fw.flows[0].img.tcb.rx_delivered = 0x3_0000_0003;
    fw.flows[0].img.tcb.ts_last_sent = 0xdead_beef;
    fw.flows[0].img.tcb.state = State::LastAck;
    let img = fw.flows[0].img;
    let rec = FlowStateRec::from_image(&img);
    let d = delta::Delta {
        header: delta::DeltaHeader {
            worker: 1,
            group: 0,
            slot: 2,
            generation: 3,
            seq: 4,
        },
        body: DeltaBody::FlowUpdate(rec),
    };
    let mut v = Vec::new();
    delta::encode(&d, &mut v).unwrap();
    let (back, _) = delta::decode(&v).unwrap();
    let DeltaBody::FlowUpdate(r2) = back.body else {
        panic!()
    };
    assert_eq!(r2.to_image().unwrap(), img);
    let mut bad = r2;
    bad.state = 0;
    assert!(bad.to_image().is_err());
}
