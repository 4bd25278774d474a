//! A takeover of many flows paces its probes (issue 16 item 7): the first `KICK_BURST`
//! resumed flows probe their clients at once, the rest a burst per worker pass, so that the
//! probes of 20 000 flows never need more buffers than one pass's TX frees. Measured against
//! a sink that models the mbuf pool: a frame holds a buffer until the pass's TX burst ends.

mod common;

use common::*;

use flowtwin_engine::flow::FlowKey;
use flowtwin_engine::iteration::{resume, Acked, CommitSink, Iteration};
use flowtwin_engine::replica::{FlowImage, Origin, ShadowFlow};
use flowtwin_engine::seq::SeqNum;
use flowtwin_engine::stack::{FrameSink, Stack, KICK_BURST, MAX_FRAME};
use flowtwin_engine::time::Duration;
use std::sync::Arc;

/// `cap` buffers; an emitted frame holds one until `drain` (the end of a pass's TX).
struct Pool {
    cap: usize,
    held: usize,
    failed: usize,
    sent: usize,
    most_in_a_pass: usize,
}

impl Pool {
    fn drain(&mut self) {
        self.most_in_a_pass = self.most_in_a_pass.max(self.held);
        self.sent += self.held;
        self.held = 0;
    }
}

impl FrameSink for Pool {
    fn emit(&mut self, build: &mut dyn FnMut(&mut [u8]) -> usize) -> bool {
        if self.held == self.cap {
            self.failed += 1;
            return false;
        }
        let mut buf = [0u8; MAX_FRAME];
        if build(&mut buf) > 0 {
            self.held += 1;
        }
        true
    }
}

impl CommitSink for Pool {
    fn release(&mut self, _watermark: flowtwin_engine::commit::Watermarks, _now: flowtwin_engine::time::Instant) {}
    fn waiting(&self) -> bool {
        false
    }
}

const FLOWS: usize = 20_000;

/// `n` established, idle echo flows as a standby holds them.
fn replicas(cfg: &flowtwin_engine::stack::StackConfig, n: usize) -> Vec<ShadowFlow> {
    let echo = cfg.listeners.iter().position(|l| l.port == ECHO_PORT).unwrap() as u16;
    (0..n)
        .map(|i| {
            let port = 10_000 + i as u16;
            let tcb = established(ECHO_PORT, port);
            let image = FlowImage {
                key: FlowKey::v4(CLIENT_IP, port, VIP, ECHO_PORT),
                tcb,
                peer_mac: CLIENT_MAC,
                vip_mac: vip_mac(),
                listener: echo,
                listener_fp: 0,
                origin: Origin::Accepted,
                link: None,
            };
            ShadowFlow::new(cfg, image).unwrap()
        })
        .collect()
}

#[test]
fn the_probes_of_a_big_takeover_leave_a_burst_per_pass() {
    let cfg = Arc::new(config(FLOWS, tcp_cfg()));
    let mut stack = Stack::new(cfg.clone(), T0);
    stack.set_active(false);
    // A pool smaller than the flows (the engine's: 8 191 mbufs, a quarter of them in RX rings).
    let mut pool = Pool { cap: 2048, held: 0, failed: 0, sent: 0, most_in_a_pass: 0 };
    let (ok, lost) = resume(&mut stack, T0, replicas(&cfg, FLOWS), &mut pool);
    assert_eq!((ok, lost), (FLOWS as u64, 0));
    assert_eq!(pool.held, KICK_BURST, "the first burst probes at once");
    assert_eq!(stack.kicks_pending(), FLOWS - KICK_BURST);
    pool.drain();
    let it = Iteration::new(Some(&Acked(u64::MAX)));
    let mut now = T0;
    let mut passes = 0;
    while stack.kicks_pending() > 0 {
        now = now + Duration::from_micros(100);
        it.finish(&mut stack, now, &mut pool);
        pool.drain();
        passes += 1;
        assert!(passes <= FLOWS, "the kicks never end");
    }
    assert_eq!(pool.failed, 0, "no probe found the pool empty");
    assert_eq!(pool.sent, FLOWS, "every flow probed once");
    assert_eq!(pool.most_in_a_pass, KICK_BURST);
    assert_eq!(passes, (FLOWS - KICK_BURST).div_ceil(KICK_BURST));
    assert_eq!(stack.counters().drops[flowtwin_engine::counters::Drop::TxNoMbuf as usize], 0);
}

#[test]
fn a_flow_whose_client_spoke_first_is_not_probed_again() {
    let cfg = Arc::new(config(FLOWS, tcp_cfg()));
    let mut stack = Stack::new(cfg.clone(), T0);
    let mut pool = Pool { cap: usize::MAX, held: 0, failed: 0, sent: 0, most_in_a_pass: 0 };
    let n = KICK_BURST + 1;
    resume(&mut stack, T0, replicas(&cfg, n), &mut pool);
    assert_eq!((pool.held, stack.kicks_pending()), (KICK_BURST, 1));
    pool.drain();
    // The last flow's client sends its ACK before the flow's probe left: it is answered as
    // any segment is (nothing to send: in sync), and no probe follows.
    let mut peer = Peer::linux(10_000 + KICK_BURST as u16, ECHO_PORT);
    peer.snd_nxt = SeqNum(5001);
    peer.rcv_nxt = SeqNum(1001);
    peer.ts_ok = false;
    let ack = peer.raw(flowtwin_engine::wire::TcpFlags::ACK, SeqNum(5001), SeqNum(1001), &[]);
    stack.process(T0, &ack, &mut pool);
    let after_ack = pool.held;
    Iteration::new(Some(&Acked(u64::MAX))).finish(&mut stack, T0 + Duration::from_micros(100), &mut pool);
    assert_eq!(stack.kicks_pending(), 0);
    assert_eq!(pool.held, after_ack, "no probe for a flow its client already re-validated");
}
