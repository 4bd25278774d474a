//! The proxy's active health checks through real `Stack`s (no DPDK, fake time): stack A runs
//! a proxy whose checks go out of its own TCP stack to stack B (an object server on 80, an
//! echo on 7, nothing on 81), wired frame to frame with ARP; a switch between them can drop
//! A's segments (an unanswered SYN) or B's data (a backend that accepts but never answers).
//! What is checked: the rise/fall state machine over real check connections, how each kind
//! of failure is told apart, that check flows end (FIN; RST only on a timeout after the
//! handshake) and are never handed to the replicator, that a backend down by its checks
//! gets no new connection, and what a client gets when no backend is eligible.

mod common;

use common::*;
use std::collections::VecDeque;
use std::net::SocketAddrV4;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use flowtwin_engine::counters::Event;
use flowtwin_engine::replica::{ReplEvent, ReplFull, Replicator};
use flowtwin_engine::service::proxy::{ActiveCheck, Balance, CheckKind, CheckResult, CheckState, Mode, ProxySpec};
use flowtwin_engine::stack::{Listener, ServiceSpec, Stack, StackConfig};
use flowtwin_engine::time::{Duration, Instant};
use flowtwin_engine::wire::ethernet::{ethertype, EthernetFrame};
use flowtwin_engine::wire::TcpFlags;

const PROXY_PORT: u16 = 8080;

fn b_config() -> StackConfig {
    backend_config(64)
}

/// A proxy on VIP:8080 over `backends` (ports of B), checked by `check`.
fn proxy_spec(ports: &[u16], check: ActiveCheck, mode: Mode) -> Arc<ProxySpec> {
    let b = ports.iter().map(|&p| SocketAddrV4::new(B_IP, p)).collect();
    let mut s = ProxySpec::new(b, Balance::RoundRobin, VIP, 65536).with_check(check).with_slots(4);
    s.mode = mode;
    Arc::new(s)
}

fn a_config(spec: Arc<ProxySpec>) -> StackConfig {
    let mut c = config(64, tcp_cfg());
    c.listeners.push(Listener { vip: VIP, port: PROXY_PORT, spec: ServiceSpec::Proxy(spec) });
    c
}

fn check(kind: CheckKind) -> ActiveCheck {
    let mut c = ActiveCheck::new(kind).with_request("/gen/10", None);
    c.interval = Duration::from_millis(1000);
    c.timeout = Duration::from_millis(500);
    c.rise = 2;
    c.fall = 2;
    c
}

/// Records what A hands to its replicator.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<&'static str>>>);

impl Replicator for Log {
    fn emit(&mut self, _slot: (u32, u32), ev: ReplEvent<'_>) -> Result<u64, ReplFull> {
        let kind = match ev {
            ReplEvent::New(_) => "new",
            ReplEvent::Update(_) => "update",
            ReplEvent::Step(_) => "step",
            ReplEvent::Data { .. } => "data",
            ReplEvent::SvcImage(_) => "image",
            ReplEvent::Close => "close",
            ReplEvent::Barrier(_) => "barrier",
        };
        let mut l = self.0.lock().unwrap();
        l.push(kind);
        Ok(l.len() as u64)
    }
    fn last_seq(&self) -> u64 {
        self.0.lock().unwrap().len() as u64
    }
}

struct Net {
    a: Stack,
    b: Stack,
    spec: Arc<ProxySpec>,
    now: Instant,
    to_a: VecDeque<Vec<u8>>,
    to_b: VecDeque<Vec<u8>>,
    to_client: Vec<Vec<u8>>,
    /// Drop A's TCP segments to B (a backend that answers no SYN).
    drop_ab: bool,
    /// Drop B's TCP segments that carry data (a backend that accepts and never answers).
    drop_ba_data: bool,
    /// Resets seen on the wire each way.
    rst_ab: u64,
    rst_ba: u64,
    fin_ab: u64,
    repl: Log,
}

impl Net {
    fn new(spec: Arc<ProxySpec>) -> Net {
        let mut a = Stack::new(Arc::new(a_config(spec.clone())), T0);
        let repl = Log::default();
        a.set_replicator(Box::new(repl.clone()));
        Net {
            a,
            b: Stack::new(Arc::new(b_config()), T0),
            spec,
            now: T0,
            to_a: VecDeque::new(),
            to_b: VecDeque::new(),
            to_client: Vec::new(),
            drop_ab: false,
            drop_ba_data: false,
            rst_ab: 0,
            rst_ba: 0,
            fin_ab: 0,
            repl,
        }
    }

    fn route_a(&mut self, frames: Vec<Vec<u8>>) {
        for f in frames {
            let e = EthernetFrame::new_checked(&f[..]).unwrap();
            let (dst, tcp) = (e.dst(), e.ethertype() == ethertype::IPV4);
            if dst == CLIENT_MAC {
                self.to_client.push(f);
                continue;
            }
            if tcp {
                let s = parse_seg(&f);
                self.rst_ab += s.flags().rst() as u64;
                self.fin_ab += s.flags().fin() as u64;
                if self.drop_ab {
                    continue;
                }
            }
            self.to_b.push_back(f);
        }
    }

    fn route_b(&mut self, frames: Vec<Vec<u8>>) {
        for f in frames {
            if EthernetFrame::new_checked(&f[..]).unwrap().ethertype() == ethertype::IPV4 {
                let s = parse_seg(&f);
                self.rst_ba += s.flags().rst() as u64;
                if self.drop_ba_data && !s.payload.is_empty() {
                    continue;
                }
            }
            self.to_a.push_back(f);
        }
    }

    fn deliver(&mut self) {
        while !(self.to_a.is_empty() && self.to_b.is_empty()) {
            if let Some(f) = self.to_b.pop_front() {
                let mut sink = VecSink::default();
                self.b.process(self.now, &f, &mut sink);
                self.route_b(sink.frames);
            }
            if let Some(f) = self.to_a.pop_front() {
                let mut sink = VecSink::default();
                self.a.process(self.now, &f, &mut sink);
                self.route_a(sink.frames);
            }
        }
    }

    /// A client frame to A.
    fn client(&mut self, f: &[u8]) {
        let mut sink = VecSink::default();
        self.a.process(self.now, f, &mut sink);
        self.route_a(sink.frames);
        self.deliver();
    }

    /// Run for `d` in 1 ms steps.
    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.deliver();
            self.now = self.now + Duration::from_millis(1);
            let (mut sa, mut sb) = (VecSink::default(), VecSink::default());
            self.a.poll(self.now, &mut sa);
            self.b.poll(self.now, &mut sb);
            self.route_a(sa.frames);
            self.route_b(sb.frames);
        }
        self.deliver();
    }

    fn health(&self, slot: usize) -> CheckState {
        self.spec.backends[slot].check.state()
    }

    fn counts(&self, slot: usize) -> (u64, u64, u64, u64) {
        let c = &self.spec.backends[slot].check;
        (c.ok.load(Relaxed), c.failed.load(Relaxed), c.timeouts.load(Relaxed), c.transitions.load(Relaxed))
    }
}

#[test]
fn an_http_check_marks_a_serving_backend_up_its_flows_end_with_fins_and_nothing_is_replicated() {
    let mut n = Net::new(proxy_spec(&[80], check(CheckKind::Http), Mode::Tcp));
    assert_eq!(n.health(0), CheckState::Unknown, "up until the checks say otherwise");
    n.run(Duration::from_millis(100));
    assert_eq!(n.health(0), CheckState::Up, "the first check answered 200");
    let c = &n.spec.backends[0].check;
    assert_eq!((c.last(), c.last_status.load(Relaxed)), (CheckResult::Ok, 200));
    assert!(c.last_us.load(Relaxed) < 100_000);
    n.run(Duration::from_millis(4000));
    assert_eq!(n.counts(0), (5, 0, 0, 0), "one check per second");
    assert_eq!((n.rst_ab, n.rst_ba), (0, 0), "no reset either way");
    assert!(n.fin_ab >= 5, "each check ends with its FIN");
    assert_eq!(n.spec.backends[0].opened.load(Relaxed), 0, "checks are not backend connections");
    assert_eq!(n.spec.backends[0].active.load(Relaxed), 0);
    // Nothing of the checks reached the replicator, nor does a join snapshot image them.
    assert!(n.repl.0.lock().unwrap().is_empty(), "{:?}", n.repl.0.lock().unwrap());
    // A check in flight (its SYN unanswered) is not in a join snapshot either.
    n.drop_ab = true;
    n.run(Duration::from_millis(1000));
    assert_eq!(n.a.flows().iter().filter(|(_, _, f)| f.local).count(), 1, "a check in SYN-SENT");
    n.a.request_snapshot(7);
    assert_eq!(*n.repl.0.lock().unwrap(), ["barrier"], "a snapshot skips check flows");
    n.drop_ab = false;
    // Checks off: every check flow ends by itself (TIME-WAIT), none is left.
    n.a.set_health_checks(false);
    n.run(Duration::from_millis(5000));
    assert!(n.a.flows().is_empty() && n.b.flows().is_empty(), "no stuck check flow");
    assert_eq!(n.a.counters().flows_by_state.iter().sum::<u64>(), 0);
}

#[test]
fn a_refused_tcp_check_goes_down_after_fall_and_the_backend_is_never_chosen() {
    let mut n = Net::new(proxy_spec(&[81, 80], check(CheckKind::Tcp), Mode::Tcp));
    n.run(Duration::from_millis(100));
    assert_eq!((n.health(0), n.health(1)), (CheckState::Unknown, CheckState::Up), "one refusal of fall = 2");
    assert_eq!(n.spec.backends[0].check.last(), CheckResult::Refused);
    assert!(n.spec.backends[0].usable(n.now), "still eligible");
    n.run(Duration::from_millis(1000));
    assert_eq!(n.health(0), CheckState::Down);
    assert_eq!(n.counts(0), (0, 2, 0, 1), "unknown (eligible) → down is a transition");
    assert!((0..20).all(|_| n.spec.choose(CLIENT_IP, n.now) == Some(1)), "a down backend is never chosen");
    assert_eq!(n.rst_ab, 0, "a refused connect is answered by B's RST; A sends none");
    // A TCP check that connects ends at once with our FIN: B's port 80 took 2 checks.
    assert_eq!(n.counts(1), (2, 0, 0, 0));
    n.run(Duration::from_millis(3000));
    assert!(n.a.flows().iter().all(|(_, _, f)| f.local), "only check flows");
    assert!(n.repl.0.lock().unwrap().is_empty());
}

#[test]
fn an_unanswered_check_times_out_without_a_reset_then_rises_when_the_backend_is_back() {
    let mut n = Net::new(proxy_spec(&[80], check(CheckKind::Http), Mode::Tcp));
    n.run(Duration::from_millis(100));
    assert_eq!(n.health(0), CheckState::Up);
    n.drop_ab = true;
    n.run(Duration::from_millis(2500));
    assert_eq!(n.health(0), CheckState::Down, "2 timeouts of fall = 2");
    assert_eq!(n.counts(0), (1, 0, 2, 1));
    assert_eq!(n.spec.backends[0].check.last(), CheckResult::Timeout);
    assert_eq!(n.rst_ab, 0, "a check still in SYN-SENT is dropped, not reset");
    assert!(n.a.flows().is_empty(), "the timed-out check flows are gone");
    n.drop_ab = false;
    n.run(Duration::from_millis(1000));
    assert_eq!(n.health(0), CheckState::Down, "1 success of rise = 2");
    n.run(Duration::from_millis(1000));
    assert_eq!(n.health(0), CheckState::Up);
    assert_eq!(n.counts(0), (3, 0, 2, 2));
}

#[test]
fn a_backend_that_accepts_and_never_answers_times_out_and_its_check_is_reset() {
    let mut n = Net::new(proxy_spec(&[80], check(CheckKind::Http), Mode::Tcp));
    n.drop_ba_data = true;
    n.run(Duration::from_millis(1600));
    assert_eq!(n.counts(0), (0, 0, 2, 1));
    assert_eq!(n.health(0), CheckState::Down);
    assert_eq!(n.rst_ab, 2, "a synchronized check past its timeout is reset");
    assert!(n.a.flows().is_empty());
}

#[test]
fn http_checks_fail_on_an_unexpected_status_or_a_non_http_answer() {
    let mut c = check(CheckKind::Http).with_request("/nothing-here", Some("backend.example"));
    c.fall = 1;
    let mut n = Net::new(proxy_spec(&[80, 7], c, Mode::Tcp));
    n.run(Duration::from_millis(100));
    let (b0, b1) = (&n.spec.backends[0].check, &n.spec.backends[1].check);
    assert_eq!((b0.last(), b0.last_status.load(Relaxed)), (CheckResult::BadStatus, 404));
    assert_eq!(b1.last(), CheckResult::BadResponse, "the echo sends our GET back: not a status line");
    assert_eq!((n.health(0), n.health(1)), (CheckState::Down, CheckState::Down));
    assert_eq!(n.spec.choose(CLIENT_IP, n.now), None);
    // 200..=399 is the default: a 404 fails it, and so does a 200 expecting exactly 204.
    let mut c = check(CheckKind::Http);
    c.expect = (204, 204);
    c.fall = 1;
    let mut n = Net::new(proxy_spec(&[80], c, Mode::Tcp));
    n.run(Duration::from_millis(100));
    assert_eq!(n.spec.backends[0].check.last_status.load(Relaxed), 200);
    assert_eq!(n.health(0), CheckState::Down);
}

#[test]
fn no_eligible_backend_answers_503_in_http_mode_and_a_fin_in_tcp_mode_and_counts_it() {
    for mode in [Mode::Http, Mode::Tcp] {
        let mut c = check(CheckKind::Tcp);
        c.fall = 1;
        let mut n = Net::new(proxy_spec(&[81], c, mode));
        n.run(Duration::from_millis(100));
        assert_eq!(n.health(0), CheckState::Down);
        let mut peer = Peer::linux(41000, PROXY_PORT);
        let syn = peer.syn();
        n.client(&syn);
        let out: Vec<Vec<u8>> = n.to_client.drain(..).collect();
        peer.absorb_all(&out);
        let ack = peer.ack();
        n.client(&ack);
        if mode == Mode::Http {
            let req = peer.data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            n.client(&req);
        }
        n.run(Duration::from_millis(10));
        let out: Vec<Vec<u8>> = n.to_client.drain(..).collect();
        let segs = peer.absorb_all(&out);
        assert!(segs.iter().all(|s| !s.flags().rst()), "{mode:?}: closed, not reset");
        assert!(peer.got_fin, "{mode:?}: the client gets a FIN");
        let text = String::from_utf8_lossy(&peer.received).to_string();
        match mode {
            Mode::Http => assert!(text.starts_with("HTTP/1.1 503 ") && text.contains("No server is available"), "{text}"),
            _ => assert!(text.is_empty(), "{text}"),
        }
        assert_eq!(n.a.counters().get(Event::ProxyNoBackend), 1, "{mode:?}");
        // The client closes too: nothing is left of it.
        let fin = peer.send(TcpFlags::FIN, &[]);
        n.client(&fin);
        n.run(Duration::from_millis(5000));
        assert!(n.a.flows().iter().all(|(_, _, f)| f.local), "{mode:?}: no stuck client flow");
    }
}

#[test]
fn a_standby_runs_no_checks_and_a_worker_other_than_0_neither() {
    let mut n = Net::new(proxy_spec(&[80], check(CheckKind::Tcp), Mode::Tcp));
    n.a.set_active(false);
    n.run(Duration::from_millis(3000));
    assert_eq!(n.counts(0), (0, 0, 0, 0));
    assert!(n.a.flows().is_empty());
    n.a.set_active(true);
    n.run(Duration::from_millis(100));
    assert_eq!(n.counts(0).0, 1, "checks start when it becomes the active");
    n.a.set_health_checks(false);
    n.run(Duration::from_millis(3000));
    assert_eq!(n.counts(0).0, 1);
}

/// A proxy service added by a live reload (`Stack::reconfigure`) gets its checks at once; one
/// removed (retired) gets none any more, and the others keep theirs.
#[test]
fn a_reload_starts_the_checks_of_an_added_proxy_and_ends_those_of_a_removed_one() {
    let mut n = Net::new(proxy_spec(&[80], check(CheckKind::Tcp), Mode::Tcp));
    n.run(Duration::from_millis(100));
    assert_eq!(n.counts(0), (1, 0, 0, 0));
    // Added: a second proxy on :8081 over B's :80.
    let added = proxy_spec(&[80], check(CheckKind::Tcp), Mode::Tcp);
    let mut cfg = (**n.a.config()).clone();
    cfg.listeners.push(Listener { vip: VIP, port: 8081, spec: ServiceSpec::Proxy(added.clone()) });
    n.a.reconfigure(Arc::new(cfg.clone()));
    n.run(Duration::from_millis(100));
    assert_eq!(added.backends[0].check.state(), CheckState::Up, "checked at once");
    // Removed: the first one retired; its backend is checked no more, the added one still.
    cfg.retired = vec![false, false, true, false];
    n.a.reconfigure(Arc::new(cfg));
    n.run(Duration::from_millis(3000));
    assert_eq!(n.counts(0), (1, 0, 0, 0), "no check of the retired service since");
    let ok = added.backends[0].check.ok.load(Relaxed);
    assert!(ok >= 3, "the added service keeps its checks: {ok}");
}
