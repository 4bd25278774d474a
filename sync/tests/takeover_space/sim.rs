//! One simulated run: faults, the kill, the join and failback schedules, and `run_full`, which
//! drives the client, the active, the standby and the takeover to the end of a life.

use super::*;

mod sweeps;

/// How the network treats frames sent during a window of packet events around the kill.
#[derive(Clone, Copy, Debug)]
struct Faults {
    seed: u64,
    /// Packet events [from, to) whose frames may be dropped / duplicated / delayed.
    from: u64,
    to: u64,
}

impl Faults {
    /// Faults from three events before kill point `k` to twelve after it, seeded by the
    /// kill point and its case.
    fn around(k: u64, reached: bool) -> Faults {
        Faults { seed: k * 2 + reached as u64 + 1, from: k.saturating_sub(3), to: k + 12 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kill {
    /// Never (the run that counts the events).
    None,
    /// After packet event k; `reached`: A's unshipped records reach the standby.
    After { k: u64, reached: bool },
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum To {
    Engine,
    Client,
}

#[derive(Debug, Default)]
struct Outcome {
    events: u64,
    /// Simulated µs from the start to both ends closed.
    done_us: u64,
    /// A's flow state at the kill (None: no flow yet, or already gone).
    state_at_kill: Option<State>,
    caught_up: u64,
    resumed: u64,
    /// The standby joined after A's flow existed and had no image of it at the kill: nobody
    /// held its state, B reset it (allowed only then).
    reset_unknown: bool,
    /// ... and B's reset told the client (else it waits, having nothing to send).
    lost_reset: bool,
    lost_after_all_bytes: bool,
}

/// Frames in flight: (delivery time, send order, destination, frame), earliest first.
type Wire = BinaryHeap<Reverse<(u64, u64, To, Vec<u8>)>>;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.next() % 100 < pct
    }
}

/// A join of the standby: after packet event `at` (before any with 0), with its snapshot.
#[derive(Clone, Copy, Debug)]
struct Join {
    at: u64,
    /// The mutation: release everything until the standby is in sync (not strict from the
    /// join on).
    release_until_in_sync: bool,
}

impl Join {
    fn at(at: u64) -> Join {
        Join { at, release_until_in_sync: std::env::var_os("FT_SIM_MUTATE_JOIN").is_some() }
    }
}

/// The join: A's workers image every flow for the standby (token 1), B begins a join, and
/// from now on A's output waits for B's acknowledgements (strict mode).
fn join_now(act: &mut Active, b: &mut Standby, j: Join) {
    act.watermark = if j.release_until_in_sync { u64::MAX } else { 0 };
    act.stack.set_standby_acked(act.watermark);
    act.stack.request_snapshot(1);
    b.replicas.begin_join(1);
}

/// The engines' frames that left after one of them had acknowledged the client's FIN (see
/// `to_closed_client` in `run_full`), by hash.
#[derive(Default)]
struct LateFrames {
    /// One past the client's FIN, once it sent one.
    client_fin_end: Option<SeqNum>,
    fin_acked: bool,
    late: BTreeSet<u64>,
}

impl LateFrames {
    fn hash(f: &[u8]) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hs = std::collections::hash_map::DefaultHasher::new();
        f.hash(&mut hs);
        hs.finish()
    }

    /// An engine frame leaves.
    fn leaves(&mut self, f: &[u8]) {
        let (Some(end), Ok(seg)) = (self.client_fin_end, TcpPacket::new_checked(&f[34..])) else { return };
        let h = seg.header();
        if self.fin_acked {
            self.late.insert(Self::hash(f));
        } else if h.flags.ack() && h.ack.ge(end) {
            self.fin_acked = true;
        }
    }

    fn is_late(&self, f: &[u8]) -> bool {
        self.late.contains(&Self::hash(f))
    }
}

fn run(life: &Life, kill: Kill, faults: Option<Faults>) -> Result<Outcome, String> {
    run_with(life, kill, faults, None, false)
}

fn run_with(life: &Life, kill: Kill, faults: Option<Faults>, join: Option<Join>, small_ring: bool) -> Result<Outcome, String> {
    run_full(life, kill, faults, join, small_ring, None, false)
}

/// `run` on a network that delivers the client's FIN ahead of the segments its TCP sent just
/// before it (issue 12: a veth reorders what two CPUs sent, the kernel's ACK of our FIN from
/// softirq and the application's FIN from `close()`).
fn run_crossed(life: &Life, kill: Kill) -> Result<Outcome, String> {
    run_full(life, kill, None, None, false, None, true)
}

/// A failback: after packet event `at`, A hands over to B (everything drained reaches B);
/// B takes over and holds all output (the old active has not rejoined), A keeps its flows,
/// inactive. The kill is then B's, and A resumes its kept flows.
#[derive(Clone, Copy, Debug)]
struct Failback {
    at: u64,
    /// The mutation: B releases what depends on nothing (watermark 0, not `HOLD_ALL`).
    b_releases_untagged: bool,
}

fn run_full(
    life: &Life,
    kill: Kill,
    faults: Option<Faults>,
    join: Option<Join>,
    small_ring: bool,
    failback: Option<Failback>,
    cross_close: bool,
) -> Result<Outcome, String> {
    let cfg = stack_cfg();
    let ccfg = client_tcp();
    let mut now = t0();
    let mut a = Some(Active::new(&cfg, Instant(now), small_ring));
    let mut b = Standby { replicas: Replicas::new(1), status: SyncStatus::new(), stack: None, out: Held::default() };
    // Before the join A has no standby: it drops what it drains and releases everything.
    let mut joined = join.is_none();
    let mut flow_at_join = false;
    let mut b_had_flow = true;
    // B ever held a replica (of the one flow of a life).
    let mut b_saw_flow = false;
    // A join's snapshot: batches sent to B since it began, and when the images of the other
    // flows it stands for will have crossed the sync link.
    let mut join_batches = 0u64;
    let mut backlog_until = 0u64;
    // Failback: A handed over; what B's output waits for meanwhile.
    let mut handed_over: Option<u64> = None;
    let mut hold_over = false;
    let mut b_watermark = u64::MAX;
    if let (Some(j), Some(act)) = (join, a.as_mut()) {
        act.watermark = u64::MAX;
        if j.at == 0 {
            join_now(act, &mut b, j);
            joined = true;
            backlog_until = now + JOIN_BACKLOG_US;
        }
    }
    let mut app = App::new(life.clone());
    let mut cout = ClientOut { frames: Vec::new(), src_port: CLIENT_PORT, dst_port: life.port };
    let mut client = Tcb::connect(Instant(now), &ccfg, CLIENT_PORT, life.port, SeqNum(0x8000_0000), &mut cout);
    // (time, order, to, frame)
    let mut net: Wire = BinaryHeap::new();
    let mut to_b: Vec<(u64, Batch)> = Vec::new();
    let mut to_a: Vec<(u64, u64)> = Vec::new();
    let mut order = 0u64;
    let mut events = 0u64;
    let mut killed_at: Option<u64> = None;
    let mut out = Outcome::default();
    let mut rng = Rng(faults.map_or(0, |f| f.seed));
    let mut fins: BTreeSet<u64> = BTreeSet::new();
    let (mut client_rsts, mut engine_rsts) = (0u32, 0u32);
    // Issue 12: segments an engine sent after it had acknowledged the client's FIN once (the
    // client's LAST-ACK may be over: it has no socket) that reached the client after its
    // connection had closed. A Linux client answers each with a RST. Segments the network
    // delayed past the close (sent before that ACK) and copies it duplicated are not the
    // engine's doing: frames are known by their hash (each frame an engine builds has its
    // own IP id, a network copy is identical).
    let mut to_closed_client = 0u32;
    let mut late = LateFrames::default();
    // FT_SIM_TRACE=1 prints every frame as it is delivered (for a single failing run).
    let trace = std::env::var_os("FT_SIM_TRACE").is_some();

    let send = |net: &mut Wire, now: u64, events: u64, killed_at: Option<u64>, to: To, f: Vec<u8>, order: &mut u64, rng: &mut Rng| {
        let mut delay = LAT_US;
        if let Some(fl) = faults {
            // Around the kill: a few events before it, a few after, and not for longer than
            // FAULT_US after it (frames lost then do not count as events, so a window in
            // events alone could last for seconds of retransmissions).
            let recent = killed_at.is_none_or(|k| now < k + FAULT_US);
            if events >= fl.from && events < fl.to && recent {
                if rng.chance(15) {
                    return; // lost
                }
                if rng.chance(10) {
                    *order += 1;
                    net.push(Reverse((now + delay + 50, *order, to, f.clone()))); // duplicated
                }
                if rng.chance(20) {
                    delay += 400; // reordered behind later frames
                }
            }
        }
        *order += 1;
        net.push(Reverse((now + delay, *order, to, f)));
    };

    loop {
        // ---- the ends' own steps at `now`
        app.advance(now);
        client.poll_send(Instant(now), &ccfg, &mut app, &mut cout);
        client.on_timer(Instant(now), &ccfg, &mut app, &mut cout);
        let mut frames: Vec<Vec<u8>> = cout.frames.drain(..).collect();
        if cross_close && frames.len() > 1 && frames.last().is_some_and(|f| TcpPacket::new_checked(&f[34..]).is_ok_and(|s| s.header().flags.fin())) {
            // The FIN overtakes what was sent before it.
            frames.rotate_right(1);
        }
        for f in frames {
            if let Ok(seg) = TcpPacket::new_checked(&f[34..]) {
                let h = seg.header();
                if h.flags.fin() {
                    late.client_fin_end = Some(h.seq + (seg.payload().len() as u32 + 1));
                }
            }
            send(&mut net, now, events, killed_at, To::Engine, f, &mut order, &mut rng);
        }
        // The rest of the engines' passes at `now` (their frames of `now` were received
        // below, one event each).
        if let Some(act) = a.as_mut() {
            Iteration::new(Some(&Acked(act.watermark))).finish(&mut act.stack, Instant(now), &mut act.out);
            if let Some(batch) = act.drain() {
                if joined && handed_over.is_none() {
                    // After the join's first batch (this flow's image, first in the snapshot),
                    // the other flows' images occupy the sync link until `backlog_until`.
                    let t = if join_batches == 0 { now + SYNC_US } else { (now + SYNC_US).max(backlog_until) };
                    if join.is_some() {
                        join_batches += 1;
                    }
                    to_b.push((t, batch));
                }
            }
            for f in act.out.take_sent() {
                late.leaves(&f);
                send(&mut net, now, events, killed_at, To::Client, f, &mut order, &mut rng);
            }
        }
        if let Some(bs) = b.stack.as_mut() {
            Iteration::new(Some(&Acked(b_watermark))).finish(bs, Instant(now), &mut b.out);
            for f in b.out.take_sent() {
                late.leaves(&f);
                send(&mut net, now, events, killed_at, To::Client, f, &mut order, &mut rng);
            }
        }

        // ---- done?
        let client_done = matches!(client.state(), State::Closed | State::TimeWait)
            && app.received.len() == life.expect.len()
            && app.server_fin;
        let engine_empty = match (&a, &b.stack) {
            (Some(_), Some(bs)) if handed_over.is_some() => bs.flows().is_empty(),
            (Some(act), _) => act.stack.flows().is_empty(),
            (None, Some(bs)) => bs.flows().is_empty(),
            (None, None) => false,
        };
        let kill_pending = matches!(kill, Kill::After { .. }) && killed_at.is_none() && !hold_over;
        // A flow B never had an image of ends with B's reset, or never (a client that only
        // receives has nothing to send B, so nothing tells it): look until well past the grace.
        let unknown_over = !b_had_flow
            && ((client.state() == State::Closed && engine_rsts > 0)
                || killed_at.is_some_and(|k| now > k + DETECT_US + GRACE_US + UNKNOWN_WAIT_US));
        if unknown_over {
            out.done_us = now - t0();
            break;
        }
        if client_done && engine_empty && net.is_empty() && !kill_pending {
            out.done_us = now - t0();
            break;
        }
        if client_done && out.done_us == 0 {
            out.done_us = now - t0();
        }
        if now - t0() > GIVE_UP_US {
            return Err(format!(
                "no end after {} s: client {:?} received {}/{} fin {} closed {}; engine flows {:?}",
                GIVE_UP_US / 1_000_000,
                client.state(),
                app.received.len(),
                life.expect.len(),
                app.server_fin,
                app.closed,
                b.stack.as_ref().map(|s| s.flows().iter().map(|(_, _, f)| f.tcb.state()).collect::<Vec<_>>())
            ));
        }

        // ---- the next instant anything happens
        let mut next = u64::MAX;
        if let Some(Reverse((t, ..))) = net.peek() {
            next = next.min(*t);
        }
        for (t, _) in &to_b {
            next = next.min(*t);
        }
        for (t, _) in &to_a {
            next = next.min(*t);
        }
        if let Some(d) = client.next_deadline() {
            next = next.min(d.0);
        }
        if let Some(until) = app.paused_until {
            next = next.min(until);
        }
        if let Some(act) = &a {
            if let Some(d) = act.stack.next_timer() {
                next = next.min(d.0);
            }
        }
        if let Some(bs) = &b.stack {
            if let Some(d) = bs.next_timer() {
                next = next.min(d.0);
            }
        }
        if let Some(k) = killed_at {
            // The takeover, or the failback's resumption, that is still to come.
            let pending = match (failback, &a) {
                (None, _) => b.stack.is_none(),
                (Some(_), Some(act)) => !act.stack.is_active(),
                (Some(_), None) => false,
            };
            if pending {
                next = next.min(k + DETECT_US);
            }
        }
        if let (Some(h), false, None) = (handed_over, hold_over, killed_at) {
            next = next.min(h + HANDOVER_HOLD_US);
        }
        if next == u64::MAX && kill_pending && client_done && engine_empty {
            // With faults the life can end in fewer events than without: the kill point lies
            // beyond its end, so this run is the life without a kill.
            out.done_us = now - t0();
            break;
        }
        if next == u64::MAX {
            return Err(format!("nothing left to happen: client {:?} received {}/{}", client.state(), app.received.len(), life.expect.len()));
        }
        now = next.max(now + 1);

        // ---- a failback's hold ends before any kill: the old active never rejoined (it is
        // as good as dead: it forgets its flows), B serves alone
        if let (Some(h), false, None) = (handed_over, hold_over, killed_at) {
            if now >= h + HANDOVER_HOLD_US {
                hold_over = true;
                a = None;
                b_watermark = u64::MAX;
                if trace {
                    println!("{:>9} us B's handover hold over: B serves alone", now - t0());
                }
            }
        }
        // ---- takeover (failback: A resumes the flows it kept once it saw B die)
        if let Some(k) = killed_at {
            if failback.is_none() && b.stack.is_none() && now >= k + DETECT_US {
                let any = b.take_over(&cfg, now)?;
                b_had_flow = out.state_at_kill.is_none() || any;
            }
            if let (Some(_), Some(act)) = (failback, a.as_mut()) {
                if !act.stack.is_active() && now >= k + DETECT_US {
                    // As the engine's workers do at every takeover (dataplane.rs): its kept
                    // flows, no replicas.
                    resume(&mut act.stack, Instant(now), [], &mut act.out);
                    act.watermark = u64::MAX;
                }
            }
        }

        // ---- the sync link
        let (due, later): (Vec<_>, Vec<_>) = to_b.drain(..).partition(|(t, _)| *t <= now);
        to_b = later;
        for (_, batch) in due {
            b.apply(&cfg, &batch);
            b.replicas.check_in_sync();
            b_saw_flow |= b.replicas.flows() > 0;
            to_a.push((now + SYNC_US, batch.last));
        }
        let (due, later): (Vec<_>, Vec<_>) = to_a.drain(..).partition(|(t, _)| *t <= now);
        to_a = later;
        if let Some(act) = a.as_mut() {
            for (_, seq) in due {
                act.watermark = if act.watermark == u64::MAX {
                    // The mutation's release-everything ends once B is in sync.
                    if b.replicas.in_sync && now >= backlog_until { seq } else { u64::MAX }
                } else {
                    act.watermark.max(seq)
                };
            }
        }

        // ---- the network: every frame due now
        while let Some(Reverse((t, ..))) = net.peek() {
            if *t > now {
                break;
            }
            let Reverse((_, _, to, f)) = net.pop().unwrap();
            events += 1;
            if trace {
                if let Ok(seg) = TcpPacket::new_checked(&f[34..]) {
                    let h = seg.header();
                    let who = match (to, &a, &b.stack) {
                        (To::Client, ..) => "   -> client",
                        (To::Engine, Some(_), _) => "A <-",
                        (To::Engine, None, Some(_)) => "B <-",
                        (To::Engine, None, None) => "(lost) <-",
                    };
                    println!(
                        "{:>9} us #{events:<4} {who:<12} {:?} seq {} ack {} len {} win {}",
                        now - t0(),
                        h.flags,
                        h.seq.0,
                        h.ack.0,
                        seg.payload().len(),
                        h.window
                    );
                }
            }
            match to {
                To::Client => {
                    let seg = TcpPacket::new_checked(&f[34..]).map_err(|e| format!("engine frame: {e:?}"))?;
                    if seg.checksum_status(IpAddr::V4(VIP), IpAddr::V4(CLIENT)) != ChecksumStatus::Valid {
                        return Err("bad checksum from the engine".into());
                    }
                    let h = seg.header();
                    if h.flags.rst() {
                        engine_rsts += 1;
                    }
                    if client.state() == State::Closed && client.syn_acked() && !h.flags.rst() && late.is_late(&f) {
                        to_closed_client += 1;
                        if trace {
                            println!("{:>9} us       client: CLOSED, would answer with RST", now - t0());
                        }
                    }
                    if h.flags.fin() {
                        let end = (h.seq + seg.payload().len() as u32).diff(client.irs() + 1);
                        fins.insert(end as u64);
                    }
                    client.on_segment(Instant(now), &ccfg, &h, seg.payload(), &mut app, &mut cout);
                    // The application reacts to each segment (a close crosses our FIN).
                    app.advance(now);
                    client.poll_send(Instant(now), &ccfg, &mut app, &mut cout);
                    if trace {
                        let d = client.next_deadline().map(|d| d.0 as i64 - now as i64);
                        println!("{:>9} us       client: {:?}, rto {:?}, next timer in {d:?} us", now - t0(), client.state(), client.rto(&ccfg));
                    }
                }
                To::Engine => {
                    let seg = TcpPacket::new_checked(&f[34..]).map_err(|e| format!("client frame: {e:?}"))?;
                    if seg.header().flags.rst() {
                        client_rsts += 1;
                    }
                    let to_a = a.is_some() && !(handed_over.is_some() && b.stack.is_some());
                    if let (true, Some(act)) = (to_a, a.as_mut()) {
                        Iteration::new(Some(&Acked(act.watermark))).receive(&mut act.stack, Instant(now), &f, &mut act.out);
                    } else if let Some(bs) = b.stack.as_mut() {
                        Iteration::new(Some(&Acked(b_watermark))).receive(bs, Instant(now), &f, &mut b.out);
                        if trace {
                            for (_, _, fl) in bs.flows().iter() {
                                let d = fl.tcb.next_deadline().map(|d| d.0 as i64 - now as i64);
                                println!("{:>9} us       B: {:?}, next timer in {d:?} us", now - t0(), fl.tcb.state());
                            }
                        }
                    } // else: sent to the VIP while nobody owns it: lost
                }
            }
            // ---- the join, right after event j (and before a kill at the same point)
            if let (Some(j), Some(act)) = (join, a.as_mut()) {
                if !joined && events >= j.at {
                    flow_at_join = !act.stack.flows().is_empty();
                    join_now(act, &mut b, j);
                    joined = true;
                    backlog_until = now + JOIN_BACKLOG_US;
                    if trace {
                        println!("{:>9} us join B (A has a flow: {flow_at_join})", now - t0());
                    }
                }
            }
            // ---- the failback's handover, right after event `at`
            if let (Some(fb), Some(act)) = (failback, a.as_mut()) {
                if handed_over.is_none() && events >= fb.at {
                    act.watermark = HOLD_ALL;
                    act.stack.replication_tick();
                    for (_, batch) in to_b.drain(..) {
                        b.apply(&cfg, &batch);
                    }
                    if let Some(batch) = act.drain() {
                        b.apply(&cfg, &batch);
                    }
                    to_a.clear();
                    act.stack.set_active(false);
                    b.take_over(&cfg, now)?;
                    b_watermark = if fb.b_releases_untagged { 0 } else { HOLD_ALL };
                    handed_over = Some(now);
                    if trace {
                        println!("{:>9} us handover to B", now - t0());
                    }
                }
            }
            // ---- the kill, right after event k (of B after a failback's handover)
            if let (Kill::After { k, .. }, Some(_)) = (kill, handed_over) {
                if killed_at.is_none() && !hold_over && events >= k {
                    out.state_at_kill = b.stack.as_ref().and_then(|bs| bs.flows().iter().next().map(|(_, _, f)| f.tcb.state()));
                    b.stack = None;
                    killed_at = Some(now);
                    if trace {
                        println!("{:>9} us kill B (state {:?}); A resumes its kept flows", now - t0(), out.state_at_kill);
                    }
                }
            }
            if let (Kill::After { k, reached }, None) = (kill, failback) {
                if killed_at.is_none() && events >= k {
                    let mut act = a.take().expect("A is alive until the kill");
                    out.state_at_kill = act.stack.flows().iter().next().map(|(_, _, f)| f.tcb.state());
                    if reached {
                        // Its last batch (and whatever its ring still held) reached B.
                        act.stack.replication_tick();
                        for (_, batch) in to_b.drain(..) {
                            b.apply(&cfg, &batch);
                        }
                        if let Some(batch) = act.drain() {
                            b.apply(&cfg, &batch);
                        }
                    } else {
                        to_b.clear();
                    }
                    to_a.clear();
                    killed_at = Some(now);
                    if trace {
                        println!("{:>9} us kill A (reached {reached}), state {:?}", now - t0(), out.state_at_kill);
                    }
                }
            }
        }
    }
    out.events = events;
    let completed = app.received == life.expect && app.server_fin && matches!(client.state(), State::Closed | State::TimeWait);
    if !b_had_flow && (!completed || engine_rsts > 0) {
        // B had no image of the flow: nobody held its state. Allowed only for a flow that
        // existed before B joined (one opened after the join is in B's stream like any
        // other), and only after a prefix of the right bytes.
        if !flow_at_join {
            return Err("B had no image of a flow opened after it joined".into());
        }
        if b_saw_flow {
            return Err("B had an image of the flow before the kill, but not at the takeover".into());
        }
        let abandoned = b.status.flows_abandoned.load(std::sync::atomic::Ordering::Relaxed);
        if abandoned != 0 {
            return Err(format!("{abandoned} replica(s) abandoned at the takeover"));
        }
        if app.received[..] != life.expect[..app.received.len().min(life.expect.len())] {
            return Err("a lost flow received wrong bytes first".into());
        }
        out.reset_unknown = true;
        out.lost_reset = engine_rsts > 0;
        out.lost_after_all_bytes = app.received == life.expect;
        return Ok(out);
    }
    if let Some(bs) = &b.stack {
        out.caught_up = bs.counters().get(Event::FlowsCaughtUp);
        out.resumed = bs.counters().get(Event::FlowsResumed);
        let abandoned = bs.counters().get(Event::FlowsAbandoned);
        if abandoned != 0 {
            return Err(format!("{abandoned} flow(s) abandoned at takeover"));
        }
    }
    if engine_rsts + client_rsts != 0 {
        return Err(format!("RSTs: {engine_rsts} from the engine, {client_rsts} from the client"));
    }
    if to_closed_client != 0 {
        return Err(format!(
            "{to_closed_client} segment(s) from the engine reached the client after its connection had closed: a Linux client answers each with a RST"
        ));
    }
    if app.received != life.expect {
        let i = app.received.iter().zip(&life.expect).position(|(x, y)| x != y).unwrap_or(app.received.len().min(life.expect.len()));
        return Err(format!("bytes differ at offset {i} (received {}, expected {})", app.received.len(), life.expect.len()));
    }
    // Our FIN ends every life (the service closes after the client's FIN, or first).
    let want_fins: BTreeSet<u64> = [life.expect.len() as u64].into();
    if fins != want_fins {
        return Err(format!("our FIN ended the stream at {fins:?}, expected {want_fins:?}"));
    }
    if b.status.replay_errors.load(std::sync::atomic::Ordering::Relaxed) != 0 {
        return Err("replay errors on the standby".into());
    }
    Ok(out)
}
