//! The sweeps over every kill point (and join and handover point) of every life, their tally,
//! and the tests.

use super::*;

/// The bound on simulated time a kill may add to a life: detection, the client's SYN
/// retransmission (1 s, RFC 6298 §2.1) when its SYN or our held SYN-ACK died, one more
/// retransmission timeout (at most 1 s without an RTT sample), and the TIME-WAIT that ends
/// the run (2 s) — with room for one more doubled RTO in the lossy variants.
const EXTRA_BOUND_US: u64 = 5_000_000;
const EXTRA_BOUND_LOSSY_US: u64 = 9_000_000;

struct Tally {
    checked: u64,
    failures: Vec<String>,
    states: BTreeMap<String, u64>,
    max_extra_us: u64,
}

impl Tally {
    fn new() -> Tally {
        Tally { checked: 0, failures: Vec::new(), states: BTreeMap::new(), max_extra_us: 0 }
    }

    /// One run that ended: its state at the kill, and whether the kill cost more than
    /// `bound` of simulated time beyond `base` (the life without a kill). `at` names the run.
    fn ended(&mut self, o: &Outcome, base: &Outcome, bound: u64, at: &str) {
        let state = o.state_at_kill.map_or("no flow".to_string(), |s| format!("{s:?}"));
        *self.states.entry(state).or_default() += 1;
        let extra = o.done_us.saturating_sub(base.done_us);
        self.max_extra_us = self.max_extra_us.max(extra);
        if extra > bound {
            self.failures.push(format!("{at}: ended {} ms after the life without a kill", extra / 1000));
        }
    }
}

fn sweep(life: &Life, lossy: bool, small_ring: bool, tally: &mut Tally) {
    let base = run_with(life, Kill::None, None, None, small_ring).unwrap_or_else(|e| panic!("{}: without a kill: {e}", life.name));
    for k in 0..=base.events {
        for reached in [false, true] {
            let faults = lossy.then(|| Faults::around(k, reached));
            let r = run_with(life, Kill::After { k, reached }, faults, None, small_ring);
            tally.checked += 1;
            match r {
                Ok(o) => {
                    let bound = if lossy { EXTRA_BOUND_LOSSY_US } else { EXTRA_BOUND_US };
                    tally.ended(&o, &base, bound, &format!("{} k={k} reached={reached} lossy={lossy}", life.name));
                }
                Err(e) => tally.failures.push(format!("{} k={k} reached={reached} lossy={lossy} (state at kill?): {e}", life.name)),
            }
        }
    }
}

fn sweep_all(lossy: bool) -> Tally {
    sweep_all_with(lossy, false)
}

fn sweep_all_with(lossy: bool, small_ring: bool) -> Tally {
    let mut tally = Tally::new();
    for life in lives() {
        let before = tally.checked;
        sweep(&life, lossy, small_ring, &mut tally);
        println!("{:<45} {:>5} kill points", life.name, tally.checked - before);
    }
    println!(
        "checked {} kill points ({}), longest extra time {} ms; A's flow state at the kill: {:?}",
        tally.checked,
        if lossy { "loss, duplication and reordering around the kill" } else { "clean network" },
        tally.max_extra_us / 1000,
        tally.states
    );
    tally
}

fn report(t: &Tally) {
    if !t.failures.is_empty() {
        // A few per life, so that one life's failures do not hide another's.
        let mut per: BTreeMap<&str, usize> = BTreeMap::new();
        let shown: Vec<&String> = t
            .failures
            .iter()
            .filter(|f| {
                let n = per.entry(f.split(" k=").next().unwrap_or("")).or_default();
                *n += 1;
                *n <= 4
            })
            .collect();
        panic!("{} of {} kill points failed:\n{}", t.failures.len(), t.checked, shown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n"));
    }
}

/// Kill points after a join, relative to it: the snapshot is in flight for the first few.
const AFTER_JOIN: [u64; 7] = [0, 1, 2, 3, 5, 8, 13];

/// The standby joins after every packet event j of a life (its snapshot images A's flow),
/// and A dies a few events later, in both cases.
fn sweep_join(life: &Life, tally: &mut Tally, resets: &mut u64) {
    let base = run(life, Kill::None, None).unwrap_or_else(|e| panic!("{}: without a kill: {e}", life.name));
    for j in 0..=base.events {
        for k in AFTER_JOIN.iter().map(|d| j + d).filter(|&k| k <= base.events) {
            for reached in [false, true] {
                tally.checked += 1;
                match run_with(life, Kill::After { k, reached }, None, Some(Join::at(j)), false) {
                    Ok(o) if o.reset_unknown => {
                        *resets += 1;
                        let how = match (o.lost_reset, o.lost_after_all_bytes) {
                            (true, true) => "lost (no image): every byte, then B's reset",
                            (true, false) => "lost (no image): reset by B",
                            (false, _) => "lost (no image): client waits",
                        };
                        *tally.states.entry(how.into()).or_default() += 1;
                    }
                    Ok(o) => tally.ended(&o, &base, EXTRA_BOUND_US, &format!("{} join={j} k={k} reached={reached}", life.name)),
                    Err(e) => tally.failures.push(format!("{} join={j} k={k} reached={reached}: {e}", life.name)),
                }
            }
        }
    }
}

/// A standby that joins while A serves, and A's death while its snapshot is under way: every
/// flow the standby holds an image of resumes exactly (strict output commit from the join
/// on), and the only other end is B's reset of a flow it never heard of. Mutation check:
/// `FT_SIM_MUTATE_JOIN=1` releases A's output until B is in sync, and must fail.
#[test]
fn every_life_survives_a_kill_during_a_join_snapshot() {
    let mut tally = Tally::new();
    let mut resets = 0;
    for life in lives() {
        let before = tally.checked;
        sweep_join(&life, &mut tally, &mut resets);
        println!("{:<45} {:>5} join and kill points", life.name, tally.checked - before);
    }
    println!(
        "checked {} (join, kill) points, {resets} flows lost for want of an image; longest extra time {} ms; A's flow state at the kill: {:?}",
        tally.checked,
        tally.max_extra_us / 1000,
        tally.states
    );
    report(&tally);
}

/// Kill points after a failback's handover, relative to it.
const AFTER_HANDOVER: [u64; 4] = [0, 2, 5, 13];

/// A failback after every packet event of every life, and the new active's death a few events
/// later, before the old one rejoined it: the old active resumes the flows it kept (B held all
/// output meanwhile). Mutation check: `FT_SIM_MUTATE_FAILBACK=1` lets B release output that
/// depends on no change (its probes and resent data, with B's timestamp clock).
#[test]
fn every_life_survives_a_kill_of_the_new_active_during_a_failback() {
    let mutate = std::env::var_os("FT_SIM_MUTATE_FAILBACK").is_some();
    let mut tally = Tally::new();
    for life in lives() {
        let before = tally.checked;
        let base = run(&life, Kill::None, None).unwrap_or_else(|e| panic!("{}: without a kill: {e}", life.name));
        for at in 0..=base.events {
            for k in AFTER_HANDOVER.iter().map(|d| at + d).filter(|&k| k <= base.events) {
                tally.checked += 1;
                let fb = Failback { at, b_releases_untagged: mutate };
                match run_full(&life, Kill::After { k, reached: true }, None, None, false, Some(fb), false) {
                    Ok(o) => tally.ended(&o, &base, EXTRA_BOUND_US, &format!("{} handover={at} k={k}", life.name)),
                    Err(e) => tally.failures.push(format!("{} handover={at} k={k}: {e}", life.name)),
                }
            }
        }
        println!("{:<45} {:>5} handover and kill points", life.name, tally.checked - before);
    }
    println!(
        "checked {} (handover, kill) points; longest extra time {} ms; B's flow state at the kill: {:?}",
        tally.checked,
        tally.max_extra_us / 1000,
        tally.states
    );
    report(&tally);
}

#[test]
fn every_life_survives_a_kill_at_every_packet_event() {
    let t = sweep_all(false);
    report(&t);
    // The lives reach every state a flow can be in when the active dies. CLOSE-WAIT is not
    // one with these services: both close their side in the very call that delivers the
    // client's FIN, so a flow passes through it between two replicated images (the restore
    // of a CLOSE-WAIT replica is tested in `tcp::tests::restore_in_close_wait_*`).
    for s in ["no flow", "SynReceived", "Established", "FinWait1", "FinWait2", "Closing", "TimeWait", "LastAck"] {
        assert!(t.states.contains_key(s), "no kill point found the flow in {s}: {:?}", t.states);
    }
}

/// The same with a ring that fills: deltas meet `ReplFull`, the flow's output is held until
/// it is re-imaged, and a kill can find the standby with a flow's image (`Step`) but not the
/// bytes (`Data`) that went with it.
#[test]
fn every_life_survives_a_kill_with_a_full_ring() {
    let t = sweep_all_with(false, true);
    report(&t);
}

#[test]
fn every_life_survives_a_kill_with_a_full_ring_and_loss() {
    let t = sweep_all_with(true, true);
    report(&t);
}

#[test]
fn every_life_survives_a_kill_with_loss_duplication_and_reordering() {
    let t = sweep_all(true);
    report(&t);
}

/// One run, for investigating a failure: `FT_SIM_LIFE="zero window" FT_SIM_K=2
/// FT_SIM_REACHED=1 [FT_SIM_LOSSY=1] [FT_SIM_JOIN=j] [FT_SIM_CROSSED=1] FT_SIM_TRACE=1 cargo test --release -p flowtwin-sync
/// --test takeover_space one_run -- --nocapture`. Without FT_SIM_LIFE it does nothing.
#[test]
fn one_run() {
    let Ok(name) = std::env::var("FT_SIM_LIFE") else { return };
    let life = lives().into_iter().find(|l| l.name == name).expect("FT_SIM_LIFE names a life");
    let k: u64 = std::env::var("FT_SIM_K").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let reached = std::env::var_os("FT_SIM_REACHED").is_some();
    let faults = std::env::var_os("FT_SIM_LOSSY").map(|_| Faults::around(k, reached));
    let join = std::env::var("FT_SIM_JOIN").ok().and_then(|v| v.parse().ok()).map(Join::at);
    let failback = std::env::var("FT_SIM_FAILBACK").ok().and_then(|v| v.parse().ok()).map(|at| Failback { at, b_releases_untagged: false });
    println!(
        "{:?}",
        run_full(&life, Kill::After { k, reached }, faults, join, std::env::var_os("FT_SIM_SMALL_RING").is_some(), failback, std::env::var_os("FT_SIM_CROSSED").is_some()).map(|o| (o.events, o.done_us, o.state_at_kill, o.reset_unknown))
    );
}

/// Issue 12: the client's FIN overtakes the segments its TCP sent just before it (its ACK of
/// our FIN, when the service closed first), without a kill and with one after every packet
/// event: our TIME-WAIT must not answer the stale ACK, whose ACK would reach a client that
/// has no socket any more (it answers with a RST). Mutation check: without the TIME-WAIT
/// rule in `tcp::input` this fails for every life whose server closes first.
#[test]
fn every_life_survives_a_kill_when_the_clients_fin_overtakes_its_ack() {
    let mut tally = Tally::new();
    for life in lives() {
        let before = tally.checked;
        let base = run_crossed(&life, Kill::None).unwrap_or_else(|e| panic!("{}: crossed, without a kill: {e}", life.name));
        for k in 0..=base.events {
            for reached in [false, true] {
                tally.checked += 1;
                match run_crossed(&life, Kill::After { k, reached }) {
                    Ok(o) => tally.ended(&o, &base, EXTRA_BOUND_US, &format!("{} k={k} reached={reached} crossed", life.name)),
                    Err(e) => tally.failures.push(format!("{} k={k} reached={reached} crossed: {e}", life.name)),
                }
            }
        }
        println!("{:<45} {:>5} kill points", life.name, tally.checked - before);
    }
    report(&tally);
}

/// Every life completes without a kill: the lives and the expected bytes are right.
#[test]
fn every_life_completes_without_a_kill() {
    for life in lives() {
        let o = run(&life, Kill::None, None).unwrap_or_else(|e| panic!("{}: {e}", life.name));
        println!("{:<45} {:>5} packet events, {:>6} ms", life.name, o.events, o.done_us / 1000);
    }
}
