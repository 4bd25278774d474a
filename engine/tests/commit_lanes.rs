//! The stack's commit tags name the flow that built the output (`commit::Lane`), so the
//! dataplane can let one flow's acknowledged frames pass another flow's waiting ones; and
//! output built by timers for several flows in one `poll` is sealed per flow.

mod common;

use common::*;
use std::sync::{Arc, Mutex};

use flowtwin_engine::commit::{CommitTag, Lane};
use flowtwin_engine::flow::FlowKey;
use flowtwin_engine::replica::{ReplEvent, ReplFull, Replicator};
use flowtwin_engine::stack::FrameSink;
use flowtwin_engine::time::{Duration, Instant};

/// Numbers every event; remembers nothing else.
#[derive(Clone, Default)]
struct Numbering(Arc<Mutex<u64>>);

impl Replicator for Numbering {
    fn emit(&mut self, _slot: (u32, u32), _ev: ReplEvent<'_>) -> Result<u64, ReplFull> {
        let mut n = self.0.lock().unwrap();
        *n += 1;
        Ok(*n)
    }
    fn last_seq(&self) -> u64 {
        *self.0.lock().unwrap()
    }
}

/// Frames, and the seals the stack made after them: (frames emitted so far, tag).
#[derive(Default)]
struct SealSink {
    frames: Vec<Vec<u8>>,
    seals: Vec<(usize, Option<CommitTag>)>,
}

impl FrameSink for SealSink {
    fn emit(&mut self, build: &mut dyn FnMut(&mut [u8]) -> usize) -> bool {
        let mut buf = vec![0u8; flowtwin_engine::stack::MAX_FRAME];
        let n = build(&mut buf);
        buf.truncate(n);
        self.frames.push(buf);
        true
    }
    fn seal(&mut self, tag: Option<CommitTag>, _now: Instant) {
        self.seals.push((self.frames.len(), tag));
    }
}

fn index_of(h: &Harness, p: &Peer) -> u32 {
    h.stack.flows().lookup(&FlowKey::v4(p.ip, p.port, VIP, p.dport)).expect("flow").index()
}

#[test]
fn each_flows_output_is_tagged_in_its_own_lane_and_timers_seal_per_flow() {
    let mut h = Harness::standard();
    h.stack.set_replicator(Box::new(Numbering::default()));
    assert_eq!(h.stack.commit_tag(), Some(CommitTag { seq: 0, lane: Lane::Any, groups: flowtwin_engine::group::GroupSet::NONE }), "nothing built yet: ordered against all");

    let (mut p1, mut p2) = (Peer::linux(40001, HTTP_PORT), Peer::linux(40002, HTTP_PORT));
    let out = h.step("SYN 1", &p1.syn(), Verdict::Event(flowtwin_engine::counters::Event::FlowsOpened));
    assert_eq!(out.len(), 1);
    let t1 = h.stack.commit_tag().unwrap();
    assert_eq!(t1.lane, Lane::Flow(index_of(&h, &p1)));
    assert!(t1.seq > 0, "the SYN-ACK waits for the flow's creation");

    h.step("SYN 2", &p2.syn(), Verdict::Event(flowtwin_engine::counters::Event::FlowsOpened));
    let t2 = h.stack.commit_tag().unwrap();
    assert_eq!(t2.lane, Lane::Flow(index_of(&h, &p2)));
    assert_ne!(t1.lane, t2.lane);
    assert!(t2.seq > t1.seq);

    // Two packets of different flows without a tag in between: one tag for both, Any lane.
    h.feed(&p1.syn());
    h.feed(&p2.syn());
    assert_eq!(h.stack.commit_tag().unwrap().lane, Lane::Any);

    // Neither client answers: both SYN-ACKs are retransmitted by one poll, sealed per flow.
    let mut sink = SealSink::default();
    let t = h.now + Duration::from_secs(2);
    h.stack.poll(t, &mut sink);
    assert_eq!(sink.frames.len(), 2, "one SYN-ACK retransmission per flow");
    let lanes: Vec<Lane> = sink.seals.iter().map(|(_, t)| t.unwrap().lane).collect();
    assert_eq!(sink.seals.iter().map(|s| s.0).collect::<Vec<_>>(), [1, 2], "a seal after each flow's frame");
    let mut want = vec![Lane::Flow(index_of(&h, &p1)), Lane::Flow(index_of(&h, &p2))];
    if lanes != want {
        want.reverse();
    }
    assert_eq!(lanes, want);
    assert_eq!(h.stack.commit_tag().unwrap(), CommitTag { seq: 0, lane: Lane::Any, groups: flowtwin_engine::group::GroupSet::NONE }, "nothing left untagged");
}

#[test]
fn without_a_standby_output_depends_on_nothing() {
    let mut h = Harness::standard();
    let mut p = Peer::linux(40003, HTTP_PORT);
    h.feed(&p.syn());
    assert_eq!(h.stack.commit_tag(), Some(CommitTag::NONE));
}

/// A join snapshot is paced by the standby's acknowledgements: at most `SNAPSHOT_WINDOW`
/// deltas await it, so a change made during the join waits behind a window of images, not
/// behind the whole snapshot. Without a standby watermark (`u64::MAX`) nothing is paced.
#[test]
fn a_join_snapshot_is_paced_by_the_standby_acks() {
    use flowtwin_engine::stack::SNAPSHOT_WINDOW;
    let flows = 1500usize; // 3 000 deltas of images: three windows
    let mut h = Harness::new(config(2048, tcp_cfg()));
    let n = Numbering::default();
    h.stack.set_replicator(Box::new(n.clone()));
    for i in 0..flows {
        let mut p = Peer::new(20_000 + i as u16, 80, 7_000 + i as u32 * 100_000, linux_syn_options(1));
        h.connect(&mut p);
    }
    let base = n.last_seq();
    // The join: the standby has acknowledged nothing of it yet.
    h.stack.set_standby_acked(0);
    h.stack.request_snapshot(1);
    let queued = n.last_seq() - base;
    assert!((SNAPSHOT_WINDOW..SNAPSHOT_WINDOW + 4).contains(&queued), "first window: {queued} deltas");
    h.stack.replication_tick();
    assert_eq!(n.last_seq() - base, queued, "no acknowledgement, no more images");
    // Acknowledgements open the window again, until every image and the barrier are queued.
    let mut rounds = 0;
    while n.last_seq() - base < 2 * flows as u64 + 1 {
        h.stack.set_standby_acked(n.last_seq());
        h.stack.replication_tick();
        rounds += 1;
        assert!(rounds < 10, "the snapshot does not finish: {} of {} deltas", n.last_seq() - base, 2 * flows + 1);
    }
    assert_eq!(rounds, 2, "three windows in all");
    // Unpaced without a standby watermark.
    let before = n.last_seq();
    h.stack.set_standby_acked(u64::MAX);
    h.stack.request_snapshot(2);
    assert_eq!(n.last_seq() - before, 2 * flows as u64 + 1, "every image and the barrier at once");
}
