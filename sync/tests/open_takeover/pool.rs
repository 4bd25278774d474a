//! A pool changed on the running active (`ctl backend add` and `drain`) and replicated to
//! the standby as the sync session does it (the `Pool` message: A's whole table, encoded,
//! decoded and applied to the standby's own spec, built from the config as it was): the
//! active is killed at every few steps of a request proxied to the added backend, before
//! the request even reached A included, and the new active must route to the added backend
//! and resume what A had opened to it.

use super::proxy::world_with_spec;
use super::*;
use flowtwin_engine::counters::Drop;
use flowtwin_engine::service::proxy::{Admin, DEFAULT_POOL};
use flowtwin_sync::proto::{self, Msg, PoolTable};

const PROXY_POOL: u16 = 8090;
/// The configured backend: nothing listens on B's :81 (a connection there is refused).
const OLD: SocketAddrV4 = SocketAddrV4::new(B_IP, 81);
/// The one added at run time: B's object server.
const ADDED: SocketAddrV4 = SocketAddrV4::new(B_IP, 80);

fn spec_of(cfg: &StackConfig) -> Arc<ProxySpec> {
    match &cfg.listeners.iter().find(|l| l.port == PROXY_POOL).unwrap().spec {
        ServiceSpec::Proxy(p) => p.clone(),
        _ => unreachable!(),
    }
}

/// A world whose A proxies :8090 to [OLD] (4 slots), then gets ADDED and drains OLD; the
/// standby has its own spec from the same config, and A's table reached it.
fn pool_world() -> (World, Arc<ProxySpec>) {
    let mut w = world_with_spec(PROXY_POOL, ProxySpec::new(vec![OLD], Balance::RoundRobin, VIP, super::proxy::BUF).with_slots(4));
    let mut s_cfg = (*w.cfg).clone();
    let l = s_cfg.listeners.iter_mut().find(|l| l.port == PROXY_POOL).unwrap();
    l.spec = ServiceSpec::Proxy(Arc::new(ProxySpec::new(vec![OLD], Balance::RoundRobin, VIP, super::proxy::BUF).with_slots(4)));
    let s_cfg = Arc::new(s_cfg);
    let (a, s) = (spec_of(&w.cfg), spec_of(&s_cfg));
    assert_eq!(a.add_backend(ADDED, 1, DEFAULT_POOL), Ok(1));
    a.drain_backend(OLD).unwrap();
    assert_eq!(s.choose(VIP, Instant(w.now)), Some(0), "the standby's config alone routes to OLD");
    // What the session sends and the standby's session applies.
    let (version, slots) = a.table();
    let mut wire = Vec::new();
    proto::encode(&Msg::Pool(PoolTable { vip: VIP, port: PROXY_POOL, version, slots }), &mut wire);
    let Some((Msg::Pool(t), _)) = proto::decode(&wire).unwrap() else { panic!("a Pool message") };
    s.apply_table(&t.slots).unwrap();
    assert_eq!((s.backends[0].admin(), s.backends[1].admin(), s.backends[1].addr()), (Admin::Draining, Admin::Ready, ADDED));
    w.s_cfg = Some(s_cfg);
    (w, s)
}

/// Returns the steps of a clean run.
fn added_backend_life(kill: Option<(u64, bool)>) -> u64 {
    let (req, want) = (request(30_000), response(30_000));
    let (mut w, s) = pool_world();
    w.proxy_client(PROXY_POOL, &req, None);
    let mut step = 0u64;
    while !(w.client_done(&want) && w.all_closed()) {
        if kill.is_some_and(|(k, _)| k == step) {
            if kill.is_some_and(|(_, reached)| !reached) {
                w.die_mid_step = true;
                w.step();
            }
            let (_, lost) = w.kill_and_take_over();
            assert_eq!(lost, 0, "kill {kill:?}: every replica installed");
        }
        w.step();
        step += 1;
        assert!(step < 200_000, "kill {kill:?}: never ended ({} of {} bytes)", w.client.as_ref().unwrap().app.received.len(), want.len());
    }
    let c = w.client.as_ref().unwrap();
    assert!(c.app.received == want, "kill {kill:?}: byte-exact from the added backend ({} of {})", c.app.received.len(), want.len());
    assert_eq!((c.rsts, w.eb.rsts), (0, 0), "kill {kill:?}: no reset");
    // B may answer a retransmission that reaches it after its connection ended with a reset,
    // as Linux does (as in `proxy.rs`); never one on a live connection, and OLD (drained,
    // nothing listens there) was never tried: that would be a refused SYN.
    let late = w.b.counters().drops[Drop::NoFlow as usize];
    assert_eq!(w.be.rsts as u64, late, "kill {kill:?}: B's resets answered only segments after its connection ended");
    assert!(w.eb.bytes == req, "kill {kill:?}: B's object server got the request");
    assert!(w.eb.syns.iter().all(|x| *x == w.eb.syns[0]), "kill {kill:?}: one backend connection");
    assert_eq!(w.b.counters().get(Event::FlowsOpened), 1, "kill {kill:?}");
    if kill.is_some() {
        // The new active's backend connection is on the added slot (opened by it, or
        // resumed), counted once at most, and no longer open (closed, or in TIME-WAIT).
        let (active, opened) = (s.backends[1].active.load(Relaxed), s.backends[1].opened.load(Relaxed));
        assert!(active == 0 && opened <= 1, "kill {kill:?}: slot 1 on the new active: {active} open, {opened} opened");
        assert_eq!(s.backends[0].opened.load(Relaxed), 0, "kill {kill:?}: nothing to the drained one");
    }
    step
}

#[test]
fn a_backend_added_on_the_active_is_the_new_actives_after_a_kill() {
    let steps = added_backend_life(None);
    let mut points = 0;
    for k in 0..steps {
        for reached in [true, false] {
            added_backend_life(Some((k, reached)));
            points += 1;
        }
    }
    println!("pool: {points} kill points over {steps} steps");
    assert!(points >= 20, "{points}");
}

#[test]
fn killed_before_the_first_syn_the_new_active_opens_to_the_added_backend() {
    let (req, want) = (request(1000), response(1000));
    let (mut w, s) = pool_world();
    w.proxy_client(PROXY_POOL, &req, None);
    w.kill_and_take_over();
    w.run_until("the response", |w| w.client_done(&want) && w.all_closed());
    assert!(w.client.as_ref().unwrap().app.received == want);
    assert_eq!((s.backends[1].opened.load(Relaxed), s.backends[0].opened.load(Relaxed)), (1, 0), "the new active chose the added backend");
}
