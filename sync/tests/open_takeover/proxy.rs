//! The `proxy` service through the real replication path: a client of A's proxy listener,
//! relayed to backend B (a second `Stack`, its object server or its echo), killed at every
//! step of the connection's life, in both cases (A's last pass reached the standby, or it
//! did not). Every run must end with the client holding exactly B's bytes and FIN, B exactly
//! the client's, no reset on either side, and one backend connection (never reopened).

use super::*;
use flowtwin_engine::counters::Drop;
use flowtwin_engine::service::proxy::{Binding, Commit, Mode, Pool, BAD_REQUEST, REFUSAL_REASONS, UNAVAILABLE};
use std::sync::atomic::Ordering::Relaxed;

/// Bytes buffered per direction by the tests' proxies (small, so that they fill).
pub(super) const BUF: usize = 8 * 1024;
/// A's proxy in front of B's object server, and the one in front of B's echo.
const PROXY_HTTP: u16 = 8080;
const PROXY_ECHO: u16 = 8007;
/// The same two with `commit = "peer"`.
const PEER_HTTP: u16 = 8180;
const PEER_ECHO: u16 = 8107;
/// Listener index of the proxy in front of B's echo (after `common`'s two and PROXY_HTTP).
const PROXY_ECHO_LISTENER: usize = 3;

/// What one life ended with.
#[derive(Debug)]
struct End {
    steps: u64,
    installed: (u64, u64),
    state_at_kill: Vec<State>,
    /// A half adopted bytes its partner still held when it ended (seen on A).
    adopted: bool,
}

impl World {
    /// A client of A's proxy on `port` that sends `upload` and then its FIN (at once, or
    /// once `close_after` bytes arrived).
    pub(super) fn proxy_client(&mut self, port: u16, upload: &[u8], close_after: Option<usize>) {
        self.proxy_client_with(port, upload, close_after, 1 << 20);
    }

    /// [`World::proxy_client`] reading through a receive window of `window` bytes.
    fn proxy_client_with(&mut self, port: u16, upload: &[u8], close_after: Option<usize>, window: usize) {
        let mut out = ClientOut { frames: vec![], src_port: 42000, dst_port: port };
        let mut tcb = Tcb::syn_sent(Instant(self.now), &tcp(), 42000, port, SeqNum(0x2000));
        tcb.set_syn_window(window);
        tcb.send_syn_now(Instant(self.now), &tcp(), &mut out);
        self.to_engine.append(&mut out.frames);
        let mut app = App::new(upload.to_vec());
        app.close = close_after.is_none();
        app.close_after = close_after;
        app.window = window;
        self.client = Some(Client { tcb, app, out, rsts: 0 });
    }

    pub(super) fn client_done(&self, want: &[u8]) -> bool {
        let c = self.client.as_ref().unwrap();
        c.app.fin && c.app.received.len() >= want.len() && matches!(c.tcb.state(), State::TimeWait | State::Closed)
    }

    fn engine_flows(&self) -> usize {
        self.a.as_ref().map(|a| a.0.flows().len()).or(self.s_stack.as_ref().map(|s| s.0.flows().len())).unwrap_or(0)
    }

    /// Every flow of the serving engine and of B has ended (or waits in TIME-WAIT).
    pub(super) fn all_closed(&self) -> bool {
        let quiet = |s: &Stack| s.flows().iter().all(|(_, _, f)| f.tcb.state() == State::TimeWait);
        let engine = self.a.as_ref().map(|a| &a.0).or(self.s_stack.as_ref().map(|s| &s.0));
        engine.is_none_or(quiet) && quiet(&self.b)
    }
}

/// One life through proxy `port`: the client uploads `upload` and closes (at once, or once
/// it has `close_after` bytes); it must receive `want` and B's FIN. Killed after step
/// `kill.0` (`kill.1`: that step's records reached the standby) or never.
fn life(port: u16, upload: &[u8], want: &[u8], close_after: Option<usize>, kill: Option<(u64, bool)>) -> End {
    life_with(port, upload, want, close_after, 1 << 20, false, kill)
}

/// [`life`] with a client reading through a `window`-byte receive window, and a lagging
/// sync core if `lag` (`World::lag`).
fn life_with(port: u16, upload: &[u8], want: &[u8], close_after: Option<usize>, window: usize, lag: bool, kill: Option<(u64, bool)>) -> End {
    let mut w = World::new();
    w.lag = lag;
    w.proxy_client_with(port, upload, close_after, window);
    let mut end = End { steps: 0, installed: (0, 0), state_at_kill: Vec::new(), adopted: false };
    let mut step = 0u64;
    let mut adopted = false;
    let done = |w: &World| w.client_done(want) && w.all_closed();
    while !done(&w) {
        if kill.is_some_and(|(k, _)| k == step) {
            end.state_at_kill = w.a_stack().flows().iter().map(|(_, _, f)| f.tcb.state()).collect();
            if kill.is_some_and(|(_, reached)| !reached) {
                w.die_mid_step = true;
                w.step();
            }
            end.installed = w.kill_and_take_over();
        }
        w.step();
        step += 1;
        if let Some((a, _, _)) = w.a.as_ref() {
            adopted |= a.flows().iter().any(|(_, _, f)| matches!(&f.svc, ServiceState::Proxy(h) if h.adopted().is_some_and(|p| p.held() > 0)));
        }
        assert!(step < 200_000, "life never ended (kill {kill:?}): client has {} of {} bytes, fin {}, engine flows {}, B flows {}",
            w.client.as_ref().unwrap().app.received.len(), want.len(), w.client.as_ref().unwrap().app.fin, w.engine_flows(), w.b.flows().len());
    }
    let c = w.client.as_ref().unwrap();
    assert!(c.app.received == want, "kill {kill:?}: the client's bytes are B's, byte-exact ({} of {})", c.app.received.len(), want.len());
    assert_eq!(c.app.acked, upload.len() as u64, "kill {kill:?}: the upload acknowledged");
    // B may answer a retransmission that reaches it after its connection ended in order
    // (its LAST-ACK done) with a reset, as Linux does; never one on a live connection.
    let late = w.b.counters().drops[Drop::NoFlow as usize];
    assert_eq!((c.rsts, w.eb.rsts, w.b.counters().get(Event::RstAccepted)), (0, 0, 0), "kill {kill:?}: no reset to the client or B, none accepted by B");
    assert_eq!(w.be.rsts as u64, late, "kill {kill:?}: B's resets answered only segments after its connection ended");
    assert!(w.eb.bytes == upload && w.eb.fin && w.be.fin, "kill {kill:?}: B got exactly the client's bytes and FIN ({} of {})", w.eb.bytes.len(), upload.len());
    let first = w.eb.syns.first().copied().expect("a SYN reached B");
    assert!(w.eb.syns.iter().all(|s| *s == first), "kill {kill:?}: one backend connection, its SYN resent unchanged: {:?}", w.eb.syns);
    assert_eq!(w.b.counters().get(Event::FlowsOpened), 1, "kill {kill:?}: B accepted exactly one connection");
    if kill.is_none() {
        // (With a kill the dead engine's counts stay in the spec the simulation shares.)
        let open: u64 = proxy_spec(&w, port).backends.iter().map(|b| b.active.load(Relaxed)).sum();
        assert_eq!(open, 0, "no backend connection counted open once each is closed or in TIME-WAIT");
    }
    // `commit = "peer"` replicates no payload; `standby` all of it (the upload and the
    // response, as far as the standby was sent them before a kill).
    if [PEER_HTTP, PEER_ECHO].contains(&port) {
        assert_eq!(w.data_bytes, 0, "kill {kill:?}: commit = peer replicates no payload");
    } else if kill.is_none() {
        assert!(w.data_bytes >= upload.len() + want.len(), "every byte relayed replicated: {}", w.data_bytes);
    }
    end.steps = step;
    end.adopted = adopted;
    end
}

/// Every step of a proxied HTTP exchange (`Connection: close`: the response ends with B's
/// FIN, which the proxy passes on after the last byte; the client half-closes after its
/// request), in both cases.
#[test]
fn a_proxied_request_survives_a_kill_at_every_step() {
    request_kills(PROXY_HTTP);
}

/// The same with `commit = "peer"`: no payload replicated; each side's bytes acknowledged
/// once the other side's peer has them.
#[test]
fn a_peer_committed_request_survives_a_kill_at_every_step() {
    request_kills(PEER_HTTP);
}

fn request_kills(port: u16) {
    let mut states = std::collections::BTreeSet::new();
    let mut points = 0;
    let only: Option<u64> = std::env::var("PROXY_KILL").ok().and_then(|v| v.parse().ok());
    // The client half-closes after its request; or once it has the whole response (then
    // B's FIN reaches it first); or after B's FIN but while B's last bytes still wait in
    // the proxy (less than a buffer before the end): the backend half then ends first
    // (LAST-ACK) and the client half adopts what it held.
    // (The last reads slowly, so that the proxy holds a buffer of the response.)
    for (n, before_end, window) in [(30_000, None, 1 << 20), (200_000, Some(0), 1 << 20), (20_000, Some(600), 300)] {
        let (req, want) = (request(n), response(n));
        let close_after = before_end.map(|b: usize| want.len() - b);
        let clean = life_with(port, &req, &want, close_after, window, false, None);
        // (With `commit = "peer"` never: a backend half acknowledges its peer's FIN only once
        // the client has every byte before it.)
        assert_eq!(clean.adopted, before_end == Some(600) && port != PEER_HTTP, "the client half adopts the backend half's last bytes in the third life only");
        for k in (0..clean.steps).filter(|k| only.is_none_or(|o| o == *k)) {
            for (reached, lag) in [(true, false), (false, false), (true, true), (false, true)] {
                let e = life_with(port, &req, &want, close_after, window, lag, Some((k, reached)));
                states.extend(e.state_at_kill.iter().map(|s| format!("{s:?}")));
                points += 1;
                assert!(e.installed.1 == 0, "kill {k}/{reached}: every replica installed: {:?}", e.installed);
            }
        }
    }
    println!("proxy http :{port}: {points} kill points, A's flow states at the kills: {states:?}");
    for s in ["SynReceived", "SynSent", "Established", "CloseWait", "FinWait1", "FinWait2", "LastAck", "TimeWait"] {
        assert!(only.is_some() || states.contains(s), "some kill found a half in {s}: {states:?}");
    }
}

/// An upload echoed back through the proxy while it is still being sent: both pipes fill
/// (each is `BUF`), so both windows close and open again; killed every few steps.
#[test]
fn a_proxied_echo_with_full_pipes_survives_kills() {
    echo_kills(PROXY_ECHO);
}

/// The same with `commit = "peer"`.
#[test]
fn a_peer_committed_echo_with_full_pipes_survives_kills() {
    echo_kills(PEER_ECHO);
}

fn echo_kills(port: u16) {
    let upload: Vec<u8> = (0..120_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let clean = life(port, &upload, &upload, None, None);
    let mut points = 0;
    for k in (0..clean.steps).step_by(3) {
        for (reached, lag) in [(true, false), (false, false), (true, true), (false, true)] {
            life_with(port, &upload, &upload, None, 1 << 20, lag, Some((k, reached)));
            points += 1;
        }
    }
    println!("proxy echo :{port}: {points} kill points over {} steps", clean.steps);
    assert!(points > 20);
}

/// The relay is bounded: neither half ever holds more than its buffer, and the window the
/// client sees closes while B does not read.
#[test]
fn the_proxy_buffers_at_most_its_buffer_per_direction() {
    let mut w = World::new();
    let upload = vec![7u8; 100_000];
    w.proxy_client(PROXY_ECHO, &upload, None);
    let mut max_held = 0u64;
    for _ in 0..3000 {
        w.step();
        for (_, _, f) in w.a_stack().flows().iter() {
            if let ServiceState::Proxy(h) = &f.svc {
                max_held = max_held.max(h.rx.held());
            }
        }
    }
    assert!(max_held > 0 && max_held <= BUF as u64, "held at most {BUF}: {max_held}");
    assert_eq!(w.a_stack().config().listeners[PROXY_ECHO_LISTENER].port, PROXY_ECHO);
}

/// A world whose engine also proxies :`port` to `backend`, and has heard `backend`'s address
/// announced from B's MAC (so its SYNs reach B, whatever B makes of them).
fn world_with_proxy(port: u16, backend: SocketAddrV4) -> World {
    world_with_spec(port, ProxySpec::new(vec![backend], Balance::RoundRobin, VIP, BUF))
}

/// A world whose engine also runs proxy `spec` on :`port` (its backends announced from B's
/// MAC).
pub(super) fn world_with_spec(port: u16, spec: ProxySpec) -> World {
    let mut w = World::new();
    let backends: Vec<SocketAddrV4> = spec.backends.iter().filter(|b| b.admin() != flowtwin_engine::service::proxy::Admin::Empty).map(|b| b.addr()).collect();
    let cfg = {
        let mut c = (*w.cfg).clone();
        c.listeners.push(Listener { vip: VIP, port, spec: ServiceSpec::Proxy(Arc::new(spec)) });
        Arc::new(c)
    };
    let (repl, link) = worker_channel(0, 1 << 16);
    let mut a = Stack::new(cfg.clone(), Instant(w.now));
    a.set_replicator(Box::new(repl));
    for ip in std::iter::once(B_IP).chain(backends.iter().map(|b| *b.ip())) {
        let mut f = vec![0u8; 60];
        ArpRepr::request(B_MAC, ip, ip).emit_frame(&mut f).unwrap();
        a.process(Instant(w.now), &f, &mut Held::default());
    }
    w.cfg = cfg;
    w.a = Some((a, Held::default(), link));
    w
}

/// A backend that refuses (B has nothing on :81): the client gets a FIN and no byte, no
/// reset; the backend half is counted as never connected.
#[test]
fn a_refused_backend_closes_the_client_cleanly() {
    let mut w = world_with_proxy(8081, SocketAddrV4::new(B_IP, 81));
    w.proxy_client(8081, b"hello", None);
    w.run_until("the client's FIN", |w| w.client.as_ref().unwrap().app.fin);
    let c = w.client.as_ref().unwrap();
    assert!(c.app.received.is_empty() && c.rsts == 0, "a FIN, no byte, no reset");
    assert_eq!(w.be.rsts, 1, "B refused the SYN");
    assert_eq!(w.a_stack().counters().get(Event::LinkPartnerEnded), 1);
}

/// A backend that never answers (its SYNs vanish): the backend connection gives up after the
/// proxy's `connect_retries` (2: 1 + 2 + 4 s with the 1 s initial RTO), and the client gets a
/// FIN then, not after TCP's default minute.
#[test]
fn an_unanswering_backend_closes_the_client_after_the_connect_timeout() {
    let silent = Ipv4Addr::new(198, 18, 2, 10); // announced from B's MAC, which drops it
    let mut w = world_with_proxy(8082, SocketAddrV4::new(silent, 80));
    let t0 = w.now;
    w.proxy_client(8082, b"hello", None);
    w.run_until("the client's FIN", |w| w.client.as_ref().unwrap().app.fin);
    let waited_ms = (w.now - t0) / 1000;
    let rto = tcp().rto_initial.micros() / 1000;
    assert!((7 * rto..8 * rto).contains(&waited_ms), "gave up after {waited_ms} ms (initial RTO {rto} ms)");
    let c = w.client.as_ref().unwrap();
    assert!(c.app.received.is_empty() && c.rsts == 0);
    assert_eq!(w.eb.syns.len(), 3, "the SYN and its 2 retransmissions");
    assert_eq!(w.a_stack().counters().get(Event::LinkPartnerEnded), 1);
}

/// An HTTP proxy (delayed binding) on :8088: requests for `b.example` go to B's object
/// server; nothing else has a backend (503).
fn http_world() -> World {
    http_world_with(Commit::Standby)
}

/// [`http_world`] with output commit `commit`.
fn http_world_with(commit: Commit) -> World {
    let pools = vec![Pool { host: Some("b.example".into()), path_prefix: Some("/gen/".into()), backends: vec![0] }];
    let mut spec = ProxySpec::new(vec![SocketAddrV4::new(B_IP, 80)], Balance::RoundRobin, VIP, BUF).with_pools(&[], pools).with_commit(commit);
    spec.mode = Mode::Http;
    world_with_spec(8088, spec)
}

/// A request whose head spans two segments (a long header, within what B reads), for B's `/gen/<n>`.
fn long_request(n: usize, host: &str) -> Vec<u8> {
    format!("GET /gen/{n} HTTP/1.1\r\nHost: {host}\r\nX-Pad: {}\r\nConnection: close\r\n\r\n", "p".repeat(1700)).into_bytes()
}

/// Delayed binding: the backend is chosen once the whole request head arrived (two
/// segments); killed at every step, in both cases, including before the choice (the standby
/// then chooses and opens the backend itself, once) and between the choice and the backend's
/// SYN.
#[test]
fn an_http_proxied_request_chosen_by_host_survives_a_kill_at_every_step() {
    http_kills(Commit::Standby);
}

/// The same with `commit = "peer"`: the standby never sees the request, so a kill before
/// the backend had it makes the client send it again and the new active choose.
#[test]
fn a_peer_committed_http_request_chosen_by_host_survives_a_kill_at_every_step() {
    http_kills(Commit::Peer);
}

fn http_kills(commit: Commit) {
    let n = 40_000;
    let (req, want) = (long_request(n, "B.Example:8088"), response(n));
    // kill: (step, deltas of that step's pass the standby got; usize::MAX: all).
    let run = |kill: Option<(u64, usize)>| -> u64 {
        let mut w = http_world_with(commit);
        w.proxy_client(8088, &req, None);
        let mut step = 0u64;
        while !(w.client_done(&want) && w.all_closed()) {
            if let Some((_, shipped)) = kill.filter(|(k, _)| *k == step) {
                if shipped != usize::MAX {
                    w.die_mid_step = true;
                    w.die_after_deltas = shipped;
                    w.step();
                }
                w.kill_and_take_over();
                // A replica whose backend was chosen but not opened opens it at once (not at
                // the client's next retransmission).
                let s = &w.s_stack.as_ref().unwrap().0;
                assert!(
                    !s.flows().iter().any(|(_, _, f)| matches!(&f.svc, ServiceState::Proxy(h) if matches!(h.binding, Binding::Ready(_)))),
                    "kill {kill:?}: a chosen backend not opened at the takeover"
                );
            }
            w.step();
            step += 1;
            assert!(step < 200_000, "kill {kill:?}: never ended ({} of {} bytes)", w.client.as_ref().unwrap().app.received.len(), want.len());
        }
        let c = w.client.as_ref().unwrap();
        assert!(c.app.received == want, "kill {kill:?}: byte-exact");
        assert_eq!((c.rsts, w.eb.rsts), (0, 0), "kill {kill:?}: no reset");
        assert!(w.eb.bytes == req, "kill {kill:?}: B got the request as the client sent it");
        assert_eq!(w.b.counters().get(Event::FlowsOpened), 1, "kill {kill:?}: one backend connection");
        step
    };
    let steps = run(None);
    let mut points = 0;
    for k in 0..steps {
        // Everything reached the standby; none of the last pass did; or only its first
        // deltas did (a sync core that drained the ring mid-pass: e.g. the client's request
        // bytes, which chose the backend, without the backend flow opened for them).
        for shipped in [usize::MAX, 0, 1, 2, 3, 4] {
            run(Some((k, shipped)));
            points += 1;
        }
    }
    println!("http proxy ({}): {points} kill points", commit.name());
    assert!(points > 20);
}

/// No pool for the host: `503` and a FIN, no backend connection; a request that is not HTTP:
/// `400`.
#[test]
fn an_http_proxy_answers_what_it_cannot_route() {
    for (req, want, reason) in [(long_request(10, "other.example"), UNAVAILABLE, "unavailable"), (b"\x16\x03\x01\x00\x10hello".to_vec(), BAD_REQUEST, "bad_request")] {
        let mut w = http_world();
        w.proxy_client(8088, &req, None);
        w.run_until("the answer and FIN", |w| w.client.as_ref().unwrap().app.fin);
        let c = w.client.as_ref().unwrap();
        assert_eq!(c.app.received, want, "{}", String::from_utf8_lossy(&c.app.received));
        assert_eq!(c.rsts, 0);
        assert!(w.eb.syns.is_empty(), "no backend connection");
        // Counted once the refused connection ended, by reason.
        w.run_until("the refused flow gone", |w| w.engine_flows() == 0);
        let spec = proxy_spec(&w, 8088);
        let counts: Vec<(&str, u64)> = REFUSAL_REASONS.iter().zip(&spec.refused).map(|(r, n)| (*r, n.load(Relaxed))).filter(|(_, n)| *n > 0).collect();
        assert_eq!(counts, [(reason, 1)]);
    }
}

/// The proxy spec of A's listener on `port`.
fn proxy_spec(w: &World, port: u16) -> Arc<ProxySpec> {
    w.cfg.listeners.iter().find_map(|l| match &l.spec { ServiceSpec::Proxy(p) if l.port == port => Some(p.clone()), _ => None }).expect("a proxy listener")
}

/// Delayed binding, and the client closes only after the whole response (`curl --http1.0`,
/// `Connection: close`): the backend's FIN ends the backend half first, and the client half
/// then waits in TIME-WAIT on the engine. Killed at every step, including those after the
/// exchange (the client half in TIME-WAIT, its backend half gone): the new active must
/// never open a second backend connection and replay the request (seen on the rig,
/// `proxy_closed_kill`: the standby's replica still had the choice "made, not opened"
/// because the active never re-images that change, and opening it at the install sent the
/// request to the backend again).
#[test]
fn a_client_half_outliving_its_backend_half_is_never_reconnected() {
    outliving_kills(Commit::Standby);
}

/// The same with `commit = "peer"`.
#[test]
fn a_peer_committed_client_half_outliving_its_backend_half_is_never_reconnected() {
    outliving_kills(Commit::Peer);
}

fn outliving_kills(commit: Commit) {
    let n = 20_000;
    let (req, want) = (long_request(n, "b.example"), response(n));
    // Steps after the exchange ended in which a kill still lands (the client half in
    // TIME-WAIT), and steps the world then runs on for a second connection to show.
    let after = 40u64;
    let run = |kill: Option<(u64, bool)>| -> u64 {
        let mut w = http_world_with(commit);
        w.proxy_client(8088, &req, Some(want.len()));
        let mut step = 0u64;
        let mut done_at = None;
        loop {
            if done_at.is_none() && w.client_done(&want) && w.all_closed() {
                done_at = Some(step);
            }
            let killed = kill.is_none_or(|(k, _)| step > k);
            if done_at.is_some_and(|d| killed && step >= d + after) {
                break;
            }
            if let Some((_, reached)) = kill.filter(|(k, _)| *k == step) {
                if !reached {
                    w.die_mid_step = true;
                    w.step();
                }
                w.kill_and_take_over();
            }
            w.step();
            step += 1;
            assert!(step < 200_000, "kill {kill:?}: never ended ({} of {} bytes)", w.client.as_ref().unwrap().app.received.len(), want.len());
        }
        let c = w.client.as_ref().unwrap();
        assert!(c.app.received == want, "kill {kill:?}: byte-exact ({} of {})", c.app.received.len(), want.len());
        assert_eq!((c.rsts, w.eb.rsts), (0, 0), "kill {kill:?}: no reset");
        assert!(w.eb.bytes == req, "kill {kill:?}: B got the request once, as the client sent it ({} bytes, {} sent)", w.eb.bytes.len(), req.len());
        let first = w.eb.syns.first().copied().expect("a SYN reached B");
        assert!(w.eb.syns.iter().all(|s| *s == first), "kill {kill:?}: one backend connection: {:?}", w.eb.syns);
        assert_eq!(w.b.counters().get(Event::FlowsOpened), 1, "kill {kill:?}: B accepted exactly one connection");
        done_at.unwrap_or(step)
    };
    let steps = run(None);
    let mut points = 0;
    for k in 0..steps + after {
        for reached in [true, false] {
            run(Some((k, reached)));
            points += 1;
        }
    }
    println!("http proxy, client closing last: {points} kill points");
    assert!(points > 40);
}
