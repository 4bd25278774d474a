//! The replication session without sockets or sleeps: every role transition and message of
//! `flowtwin_sync::session::Session`, driven by a fake clock (an `Instant` advanced by hand)
//! and checked through what it transmits, the actions it asks for, its release plan, its next
//! deadline and the status it reports. The socket driver is tested by `replication/`.
//!
//! The tests are in the files beside this one, by theme (start, mismatch, active, standby,
//! handover); the rig and the helpers they share are here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flowtwin_engine::stack::{GroupId, StackConfig};
use flowtwin_sync::delta::{self, DeltaBody};
use flowtwin_sync::proto::{Heartbeat, Hello, Msg, MAGIC, PROTO_VERSION};
use flowtwin_sync::ring::Record;
use flowtwin_sync::session::{
    Action, DialError, Incoming, Mode, Release, Session, SessionConfig, TakeoverReason, FENCED_WAIT, HANDOVER_LISTEN_GRACE,
    SETTLE_AFTER_FENCE, SETTLE_FACTOR, SPLIT_BRAIN_PROBE,
};
use flowtwin_sync::{PeerState, Role, SyncStatus};

#[path = "../common/session.rs"]
mod common_session;
use common_session::{session_cfg as cfg, session_stack, DEAD, FENCE_HOLD, HANDOVER_HOLD, HB};

mod active;
mod handover;
mod mismatch;
mod standby;
mod start;

fn stack() -> Arc<StackConfig> {
    Arc::new(session_stack(vec![], *b"flowtwin-sess-t!"))
}

/// A session and its fake clock.
struct Rig {
    s: Session,
    st: Arc<SyncStatus>,
    t0: Instant,
    now: Instant,
}

impl Rig {
    fn new(c: SessionConfig) -> Rig {
        let st = Arc::new(SyncStatus::new());
        let t0 = Instant::now();
        Rig { s: Session::new(c, stack(), st.clone(), t0), st, t0, now: t0 }
    }
    fn at(&mut self, ms: u64) -> Instant {
        self.now = self.t0 + Duration::from_millis(ms);
        self.now
    }
    fn advance(&mut self, d: Duration) -> Instant {
        self.now += d;
        self.now
    }
    fn tick(&mut self) {
        let now = self.now;
        self.s.tick(now);
    }
    /// Everything queued: (messages, actions).
    fn out(&mut self) -> (Vec<Msg<'static>>, Vec<Action>) {
        let mut m = Vec::new();
        while let Some(x) = self.s.poll_transmit() {
            m.push(x);
        }
        let mut a = Vec::new();
        while let Some(x) = self.s.poll_action() {
            a.push(x);
        }
        (m, a)
    }
    fn actions(&mut self) -> Vec<Action> {
        self.out().1
    }
    fn msg(&mut self, m: Incoming<'_>) {
        let now = self.now;
        self.s.on_rx(now);
        self.s.on_message(now, m);
    }
    /// Prefers active (node 8), its first probe dial out.
    fn probing() -> Rig {
        let mut r = Rig::new(cfg(8, Role::Active));
        r.tick();
        r.actions();
        r
    }
    /// Becomes the active (prefers active, the probe finds nothing listening).
    fn active(node_id: u32) -> Rig {
        Rig::active_with(cfg(node_id, Role::Active))
    }
    /// An async active (node 8), and the Hello of an async standby (node 9) for it.
    fn async_active() -> (Rig, Hello) {
        let mut c = cfg(8, Role::Active);
        c.mode = Mode::Async;
        let mut h = hello(9, 0, Role::Standby);
        h.mode = 1; // async on the wire
        (Rig::active_with(c), h)
    }
    /// Becomes the active with config `c` (another mode, say).
    fn active_with(c: SessionConfig) -> Rig {
        let mut r = Rig::new(c);
        r.tick();
        assert!(matches!(r.actions()[..], [Action::Connect { role: Role::Standby, probe: false }]));
        r.s.on_connect_failed(r.now, DialError::Invalid);
        assert!(matches!(r.actions()[..], [Action::Listen]));
        assert_eq!(r.st.role(), Role::Active);
        r
    }
    /// An active with an admitted standby (token 1).
    fn active_with_standby(node_id: u32) -> Rig {
        let mut r = Rig::active(node_id);
        let h = hello(9, 0, Role::Standby);
        let now = r.now;
        r.s.on_accept(now, "10.0.0.9:1", &h);
        r.out();
        r
    }
    /// The active's standby reports in sync.
    fn in_sync(&mut self) {
        self.msg(Incoming::Heartbeat(Heartbeat { in_sync: true, token: 1, ..Heartbeat::default() }));
        let now = self.now;
        self.s.release(now);
        assert!(self.st.in_sync());
    }
    /// A standby following an active of epoch `epoch`.
    fn following(epoch: u64) -> Rig {
        let mut r = Rig::new(cfg(9, Role::Standby));
        r.tick();
        assert!(matches!(r.actions()[..], [Action::Connect { role: Role::Standby, probe: false }]));
        let now = r.now;
        r.s.on_connected(now, &hello(8, epoch, Role::Active));
        assert!(r.out().1.is_empty());
        assert_eq!(r.st.peer_state(), PeerState::Joining);
        r
    }
    /// An active that handed over to its in-sync standby (`on_drained` done).
    fn handed_over(node_id: u32) -> Rig {
        let mut r = Rig::active_with_standby(node_id);
        r.in_sync();
        r.st.request_handover();
        r.tick();
        r.out();
        let now = r.now;
        r.s.on_drained(now);
        r.out();
        r
    }
    /// An in-sync standby of an active of epoch 1.
    fn in_sync_standby() -> Rig {
        let mut r = Rig::following(1);
        r.join(1);
        r.out();
        r
    }
    /// An in-sync standby just dropped by its (live) active.
    fn dropped() -> Rig {
        let mut r = Rig::in_sync_standby();
        r.msg(Incoming::Refused("dropped".into()));
        r.actions();
        r
    }
    /// The standby applies a join snapshot of empty workers (their barriers only).
    fn join(&mut self, token: u64) {
        self.msg(Incoming::Snapshot { token });
        for w in 0..2u16 {
            let recs = barrier(w, token);
            self.msg(Incoming::Batch { worker: w, first: 1, last: 1, records: &recs });
        }
        self.tick();
    }
}

fn hello(node_id: u32, epoch: u64, role: Role) -> Hello {
    Hello { magic: MAGIC, version: PROTO_VERSION, node_id, epoch, role, mode: 0, workers: 2, heartbeat_us: 5000, dead_after: DEAD, fence_hold_us: FENCE_HOLD.as_micros() as u32, handover_hold_us: HANDOVER_HOLD.as_micros() as u32, groups: stack().group_digest(), session: 1, secret: [0; 16] }
}

fn barrier(worker: u16, token: u64) -> Vec<Record> {
    let d = delta::Delta {
        header: delta::DeltaHeader { worker, group: 0, slot: 0, generation: 0, seq: 1 },
        body: DeltaBody::Barrier { token },
    };
    let mut recs = Vec::new();
    delta::encode(&d, &mut recs).unwrap();
    recs
}

fn refused(m: &[Msg<'static>]) -> String {
    m.iter()
        .find_map(|m| match m {
            Msg::Refused { reason } => Some(reason.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Refused in {m:?}"))
}

fn takeover(a: &[Action]) -> (TakeoverReason, bool, u64, bool) {
    a.iter()
        .find_map(|a| match a {
            Action::TakeOver { takeover, hold_all, .. } => Some((takeover.reason, takeover.retained, takeover.epoch, *hold_all)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no TakeOver in {a:?}"))
}
