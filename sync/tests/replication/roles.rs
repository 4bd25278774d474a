//! Refusals, death detection (stream closed, silence), handover, and what an idle pair costs.

use super::*;

/// (d) a peer speaking another protocol version is refused with both versions named.
#[test]
fn version_mismatch_is_refused() {
    let _g = serial();
    let stack = stack_cfg();
    let (acfg, _) = pair_cfgs(Duration::from_millis(10));
    let listen = acfg.listen;
    let active = node(acfg, &stack, idle_links(1));
    wait_active(&active);
    std::thread::sleep(Duration::from_millis(20));
    let mut s = TcpStream::connect(listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut out = Vec::new();
    let bogus = Hello {
        magic: MAGIC,
        version: PROTO_VERSION + 41,
        node_id: 99,
        epoch: 0,
        role: Role::Standby,
        mode: 0,
        workers: 1,
        heartbeat_us: 5000,
        dead_after: 3,
        fence_hold_us: SyncConfig::default().fence_hold.as_micros() as u32,
        handover_hold_us: SyncConfig::default().handover_hold.as_micros() as u32,
        groups: 0,
        session: 1,
        secret: [0; 16],
    };
    proto::encode(&Msg::Hello(bogus), &mut out);
    s.write_all(&out).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let mut msgs = Vec::new();
    let mut at = 0;
    while let Ok(Some((m, used))) = proto::decode(&buf[at..]) {
        msgs.push(format!("{m:?}"));
        if let Msg::Refused { reason } = &m {
            println!("refusal received: {reason}");
            assert!(
                reason.contains(&format!("version {}", PROTO_VERSION + 41)),
                "{reason}"
            );
            assert!(
                reason.contains(&format!("version {PROTO_VERSION}")),
                "{reason}"
            );
        }
        at += used;
    }
    assert!(
        msgs.iter().any(|m| m.starts_with("Refused")),
        "got {msgs:?}"
    );
    let e = active.status.last_error();
    assert!(e.contains("version mismatch"), "{e}");
    assert_eq!(
        active
            .status
            .refused
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(active.status.peer_state(), PeerState::None);
    active.handle.stop();
}

/// (e1) the active's process dies (stream closed): the standby takes over at once with
/// every flow.
#[test]
fn active_death_by_close_takes_over_immediately() {
    let _g = serial();
    let stack = stack_cfg();
    let (scfg, mut ws, active) = active_with_workers(&stack, Duration::from_millis(5), 2, 0xdead);
    wait_active(&active);
    let standby = node(scfg, &stack, idle_links(2));
    wait_until(
        "in_sync",
        Duration::from_secs(5),
        || pump(&mut ws),
        || active.status.in_sync(),
    );
    for i in 0..2000 {
        ws[i % 2].random_event();
    }
    wait_pumped("catch-up", Duration::from_secs(10), &mut ws, |ws| {
        ws.iter().all(FakeWorker::caught_up)
    });
    let t0 = Instant::now();
    active.handle.stop();
    let (t, at) = standby
        .takeovers
        .recv_timeout(Duration::from_secs(2))
        .expect("takeover");
    let took = at.duration_since(t0);
    println!(
        "EOF takeover: {took:?} from killing the active to on_takeover ({} flows, takeover itself {} µs)",
        t.flows.iter().map(Vec::len).sum::<usize>(),
        standby.status.last_takeover_us.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert_eq!(t.reason, TakeoverReason::PeerClosed);
    assert!(took < Duration::from_millis(100), "{took:?}");
    assert_same(&stack, &ws, &t);
    // The role turns Active before the engine callback runs; the takeover counter after it.
    wait_until(
        "new active",
        Duration::from_secs(2),
        || {},
        || {
            standby.status.role() == Role::Active
                && standby.status.takeovers.load(std::sync::atomic::Ordering::Relaxed) >= 1
        },
    );
    assert_eq!(
        standby
            .status
            .takeovers
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    standby.handle.stop();
}

/// (e2) the active hangs (stream open, silent): the standby declares it dead after
/// `dead_after` heartbeat intervals. The "active" is a raw peer fed from a real
/// RingReplicator, so the standby code is the real one.
#[test]
fn silent_active_detected_after_three_heartbeats() {
    let _g = serial();
    let stack = stack_cfg();
    // 20 ms rather than the 5 ms default: the assertion is "after three missed heartbeats,
    // not before", and a loaded 2-CPU CI runner can deschedule this thread for >15 ms.
    let hb = Duration::from_millis(20);
    let (acfg, mut scfg) = pair_cfgs(hb);
    scfg.dead_after = 3;
    let lst = TcpListener::bind(acfg.listen).unwrap();
    let (repl, mut link) = worker_channel(0, 1 << 12);
    let mut fw = FakeWorker::new(stack.clone(), repl, 77);
    let standby = node(scfg, &stack, idle_links(1));
    let (mut s, _) = lst.accept().unwrap();
    s.set_nodelay(true).unwrap();
    let mut out = Vec::new();
    let hello = Hello {
        magic: MAGIC,
        version: PROTO_VERSION,
        node_id: 8,
        epoch: 4,
        role: Role::Active,
        mode: 0,
        workers: 1,
        heartbeat_us: 20_000,
        dead_after: 3,
        fence_hold_us: SyncConfig::default().fence_hold.as_micros() as u32,
        handover_hold_us: SyncConfig::default().handover_hold.as_micros() as u32,
        groups: stack.group_digest(),
        session: 1,
        secret: [0; 16],
    };
    proto::encode(&Msg::Hello(hello), &mut out);
    proto::encode(&Msg::Snapshot { token: 1 }, &mut out);
    link.shared.request_snapshot(1);
    for _ in 0..300 {
        fw.random_event();
    }
    let mut recs: Vec<Record> = vec![[0; 8]; 1 << 12];
    let n = link.consumer.pop_burst(&mut recs);
    let first = delta::peek_header(&recs).unwrap().header.seq;
    proto::encode_batch(&mut out, 0, first, fw.repl.last_seq(), &recs[..n]);
    s.write_all(&out).unwrap();
    // Heartbeats for a while, then silence with the stream left open.
    for _ in 0..10 {
        std::thread::sleep(hb);
        out.clear();
        proto::encode(
            &Msg::Heartbeat(proto::Heartbeat {
                epoch: 4,
                role: 1,
                ..Default::default()
            }),
            &mut out,
        );
        s.write_all(&out).unwrap();
    }
    let silent_from = Instant::now();
    let (t, at) = standby
        .takeovers
        .recv_timeout(Duration::from_secs(2))
        .expect("takeover");
    let detect = at.duration_since(silent_from);
    println!(
        "silent-active takeover: {detect:?} after the last heartbeat (heartbeat {hb:?} × 3; detection {} µs, takeover {} µs)",
        standby.status.last_detect_us.load(std::sync::atomic::Ordering::Relaxed),
        standby.status.last_takeover_us.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert_eq!(t.reason, TakeoverReason::HeartbeatTimeout);
    assert_eq!(t.epoch, 5, "fenced: active epoch + 1");
    assert!(t.in_sync);
    assert!(detect >= hb * 3 - Duration::from_millis(1), "{detect:?}");
    assert!(detect < hb * 3 + Duration::from_millis(250), "{detect:?}");
    assert_same(&stack, std::slice::from_ref(&fw), &t);
    drop(s);
    standby.handle.stop();
}


/// ctl failback: the active hands over to its in-sync standby and fences itself.
#[test]
fn handover_to_in_sync_standby() {
    let _g = serial();
    let stack = stack_cfg();
    let (scfg, mut ws, active) = active_with_workers(&stack, Duration::from_millis(10), 1, 0x4a4d);
    let shared = ws[0].repl.shared().clone();
    wait_active(&active);
    let standby = node(scfg, &stack, idle_links(1));
    wait_pumped("in_sync", Duration::from_secs(5), &mut ws, |_| {
        active.status.in_sync()
    });
    for _ in 0..500 {
        ws[0].random_event();
    }
    wait_pumped("catch-up", Duration::from_secs(5), &mut ws, |ws| {
        ws[0].caught_up()
    });
    active.status.request_handover();
    let (t, _) = standby
        .takeovers
        .recv_timeout(Duration::from_secs(2))
        .expect("takeover");
    assert_eq!(t.reason, TakeoverReason::Handover);
    assert_eq!(t.epoch, 2);
    assert_same(&stack, &ws, &t);
    assert_eq!(shared.watermark(), flowtwin_engine::commit::HOLD_ALL, "an engine that handed over releases nothing");
    assert!(active.status.retain_flows() || active.status.in_sync(), "it keeps its flows until its rejoin is in sync");
    wait_until(
        "old active follows as standby",
        Duration::from_secs(3),
        || {},
        || active.status.role() == Role::Standby && active.status.epoch() == 2,
    );
    wait_until("its rejoin is in sync: the kept flows are let go", Duration::from_secs(3), || {}, || !active.status.retain_flows());
    standby.handle.stop();
    active.handle.stop();
}

/// CPU cost of an idle, in-sync pair (the machine has 2 CPUs; the loops must back off).
#[test]
fn idle_pair_cpu() {
    let _g = serial();
    fn cpu_ticks() -> u64 {
        let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let rest = s.rsplit(')').next().unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        // Fields 14 and 15 (utime, stime) are at 11 and 12 after the command name.
        f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
    }
    let stack = stack_cfg();
    let (scfg, mut ws, active) = active_with_workers(&stack, Duration::from_millis(5), 2, 3);
    wait_active(&active);
    let standby = node(scfg, &stack, idle_links(2));
    wait_pumped("in_sync", Duration::from_secs(5), &mut ws, |_| {
        active.status.in_sync()
    });
    let (c0, t0) = (cpu_ticks(), Instant::now());
    std::thread::sleep(Duration::from_secs(1));
    let (c1, dt) = (cpu_ticks(), t0.elapsed());
    let pct = (c1 - c0) as f64 / 100.0 / dt.as_secs_f64() * 100.0;
    println!("idle in-sync pair (both sync threads, 5 ms heartbeats): {pct:.1}% of one CPU");
    assert!(pct < 60.0, "{pct}");
    assert_eq!(
        active
            .status
            .heartbeats_missed
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    standby.handle.stop();
    active.handle.stop();
}
