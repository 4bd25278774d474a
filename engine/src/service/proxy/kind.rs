//! [`ProxyKind`]: the proxy's [`Kind`] (see the parent module's documentation): a
//! connection's state, its image, and what it does when it is accepted, opened, linked,
//! resumed and ended.

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::*;
use crate::service::{Kind, LinkEnd, Open};
use crate::time::Instant;

/// The `proxy` kind (see the module documentation).
pub struct ProxyKind;

/// The spec of a state bound to a non-proxy listener (cannot occur; see `Kind`).
static DETACHED: std::sync::OnceLock<Arc<ProxySpec>> = std::sync::OnceLock::new();

impl Kind for ProxyKind {
    const NAME: &'static str = "proxy";
    const IMAGE_TAG: u8 = 3;
    const SYN_WINDOW_IS_ROOM: bool = true;
    type Spec = Arc<ProxySpec>;
    type State = ProxyHalf;
    type Counters = ();
    type Conn<'a> = ProxyConn<'a>;

    fn new_state(spec: &Arc<ProxySpec>) -> ProxyHalf {
        let mut h = ProxyHalf::new(Side::Client, spec.buf_size);
        if spec.mode != Mode::Tcp {
            h.binding = Binding::Reading;
        }
        h
    }

    fn bind<'a>(state: &'a mut ProxyHalf, spec: &'a Arc<ProxySpec>, _stats: &'a mut ()) -> ProxyConn<'a> {
        ProxyConn { me: state, partner: None, spec }
    }

    fn bind_linked<'a>(state: &'a mut ProxyHalf, partner: Option<&'a mut ProxyHalf>, spec: &'a Arc<ProxySpec>, _stats: &'a mut ()) -> ProxyConn<'a> {
        ProxyConn { me: state, partner, spec }
    }

    fn detached_spec() -> &'static Arc<ProxySpec> {
        DETACHED.get_or_init(|| Arc::new(ProxySpec::new(Vec::new(), Balance::RoundRobin, Ipv4Addr::UNSPECIFIED, DEFAULT_BUF_SIZE)))
    }

    fn peer_fin(state: &ProxyHalf) -> bool {
        state.rx.peer_fin
    }

    /// `side u8 (0 client, 1 backend) | backend u16 | alone u8 | binding u8 | its arg u16 |
    /// head_end u64 | rx pipe | adopted u8 | [pipe]`.
    fn image(state: &ProxyHalf, out: &mut Vec<u8>) {
        let (side, backend) = match state.side {
            Side::Client => (0u8, 0u16),
            Side::Backend(b) => (1, b),
            // Never imaged (a local flow); if it were, `from_image` refuses it.
            Side::Check(b) => (2, b),
        };
        out.push(side);
        out.extend_from_slice(&backend.to_le_bytes());
        out.push(state.alone as u8);
        let (tag, arg) = match state.binding {
            Binding::Bound => (0u8, 0u16),
            Binding::Reading => (1, 0),
            Binding::Ready(p) => (2, p),
            Binding::Refused(c) => (3, u16::from(c)),
        };
        out.push(tag);
        out.extend_from_slice(&arg.to_le_bytes());
        out.extend_from_slice(&state.head_end.to_le_bytes());
        state.rx.image(out);
        match &state.adopted {
            None => out.push(0),
            Some(p) => {
                out.push(1);
                p.image(out);
            }
        }
    }

    fn from_image(spec: &Arc<ProxySpec>, b: &[u8]) -> Option<ProxyHalf> {
        let (&side, b) = b.split_first()?;
        let backend = u16::from_le_bytes(b.get(..2)?.try_into().ok()?);
        let (&alone, b) = b.get(2..)?.split_first()?;
        let side = match side {
            0 => Side::Client,
            1 if usize::from(backend) < spec.backends.len() => Side::Backend(backend),
            _ => return None,
        };
        if alone > 1 {
            return None;
        }
        let (&tag, b) = b.split_first()?;
        let arg = u16::from_le_bytes(b.get(..2)?.try_into().ok()?);
        let head_end = u64::from_le_bytes(b.get(2..10)?.try_into().ok()?);
        let b = b.get(10..)?;
        let binding = match tag {
            0 => Binding::Bound,
            1 => Binding::Reading,
            2 if arg == u16::MAX || usize::from(arg) < spec.pools.len() => Binding::Ready(arg),
            3 if usize::from(arg) < REPLIES.len() => Binding::Refused(arg as u8),
            _ => return None,
        };
        let (rx, b) = Pipe::from_image(spec.buf_size, b)?;
        let (&has, b) = b.split_first()?;
        let adopted = match has {
            0 if b.is_empty() => None,
            1 => {
                let (p, rest) = Pipe::from_image(spec.buf_size, b)?;
                if !rest.is_empty() {
                    return None;
                }
                Some(Box::new(p))
            }
            _ => return None,
        };
        if head_end > rx.received {
            return None;
        }
        Some(ProxyHalf { side, rx, adopted, alone: alone == 1, binding, head_end, connect_at: None, probe: Probe::default() })
    }

    fn on_accept(spec: &Arc<ProxySpec>, state: &mut ProxyHalf, client: Ipv4Addr, now: Instant) -> Option<Open<ProxyHalf>> {
        if state.binding != Binding::Bound {
            return None; // delayed binding: after the first bytes (`take_open`)
        }
        let Some(i) = spec.choose(client, now) else {
            return Some(Open { from: spec.source, to: None, state: ProxyHalf::new(Side::Client, spec.buf_size) });
        };
        Some(Open { from: spec.source, to: Some(spec.backends[i].addr()), state: ProxyHalf::backend(i, spec.buf_size, now) })
    }

    fn take_open(spec: &Arc<ProxySpec>, state: &mut ProxyHalf, client: Ipv4Addr, now: Instant) -> Option<Open<ProxyHalf>> {
        let Binding::Ready(p) = state.binding else { return None };
        if state.alone {
            // Its partner came and went (`partner_ended`): the choice was opened once.
            state.binding = Binding::Bound;
            return None;
        }
        let pool = if usize::from(p) < spec.pools.len() { p } else { DEFAULT_POOL };
        let Some(i) = spec.choose_in(pool, client, now) else {
            state.binding = Binding::Refused(reply_code(spec.unavailable()));
            return Some(Open { from: spec.source, to: None, state: ProxyHalf::new(Side::Client, spec.buf_size) });
        };
        state.binding = Binding::Bound;
        Some(Open { from: spec.source, to: Some(spec.backends[i].addr()), state: ProxyHalf::backend(i, spec.buf_size, now) })
    }

    fn syn_retries(spec: &Arc<ProxySpec>) -> Option<u8> {
        Some(spec.connect_retries)
    }

    fn opened(spec: &Arc<ProxySpec>, state: &ProxyHalf) {
        if let Side::Backend(i) = state.side {
            if let Some(b) = spec.backends.get(usize::from(i)) {
                b.active.fetch_add(1, Relaxed);
                b.opened.fetch_add(1, Relaxed);
            }
        }
    }

    fn resumed(spec: &Arc<ProxySpec>, state: &ProxyHalf) {
        if let Side::Backend(i) = state.side {
            if let Some(b) = spec.backends.get(usize::from(i)) {
                b.active.fetch_add(1, Relaxed);
            }
        }
    }

    fn quiet(spec: &Arc<ProxySpec>, state: &ProxyHalf) {
        // Its connection is over: least-conn and `flowtwin_proxy_backend_connections` count
        // open connections, not TIME-WAIT ones (as nginx's least_conn does).
        if let Side::Backend(i) = state.side {
            if let Some(b) = spec.backends.get(usize::from(i)) {
                let _ = b.active.fetch_update(Relaxed, Relaxed, |v| v.checked_sub(1));
            }
        }
    }

    fn closed(spec: &Arc<ProxySpec>, state: &ProxyHalf, connected: bool, open: bool, now: Instant) {
        if let (Side::Client, Binding::Refused(c)) = (state.side, state.binding) {
            if let Some(n) = spec.refused.get(usize::from(c)) {
                n.fetch_add(1, Relaxed);
            }
        }
        if let Side::Backend(i) = state.side {
            if let Some(b) = spec.backends.get(usize::from(i)) {
                if open {
                    let _ = b.active.fetch_update(Relaxed, Relaxed, |v| v.checked_sub(1));
                }
                b.outcome(connected, now, spec.health);
            }
        }
    }

    fn connected(spec: &Arc<ProxySpec>, state: &ProxyHalf, now: Instant) {
        if let (Side::Backend(i), Some(at)) = (state.side, state.connect_at) {
            if let Some(b) = spec.backends.get(usize::from(i)) {
                b.connect.observe(now.0.saturating_sub(at.0));
            }
        }
    }

    fn transferred(spec: &Arc<ProxySpec>, state: &ProxyHalf, bytes_in: u64, bytes_out: u64) {
        if let Side::Backend(i) = state.side {
            if let Some(b) = spec.backends.get(usize::from(i)) {
                b.bytes_from.fetch_add(bytes_in, Relaxed);
                b.bytes_to.fetch_add(bytes_out, Relaxed);
            }
        }
    }

    fn adopt(state: &mut ProxyHalf, closing: &mut ProxyHalf, acked: u64) {
        state.alone = true;
        let mut p = std::mem::take(&mut closing.rx);
        // What this half's peer acknowledged of it (on a standby, the partner's releases were
        // not replayed; the ring holds the last `cap` bytes, all still valid).
        p.release(acked.max(p.received.saturating_sub(p.cap as u64)));
        if p.held() == 0 {
            p.buf = Box::new([]); // its end and FIN are all that matter now
        }
        state.adopted = Some(Box::new(p));
    }

    fn partner_ended(state: &mut ProxyHalf, end: LinkEnd) -> bool {
        state.alone = true;
        // It had a partner, so its backend was chosen and opened: never again. (A standby
        // never sees the choice turn into the open, `take_open`'s `Bound`: its replica
        // still says `Ready` when the partner's close reaches it, and a takeover then
        // opened a second backend connection and replayed the request to it.)
        if let Binding::Ready(_) | Binding::Reading = state.binding {
            state.binding = Binding::Bound;
        }
        // A reset propagates; an orderly end or a backend that never answered ends with our
        // FIN after what is queued (`tx_closed`).
        end == LinkEnd::Reset
    }

    fn payload_replicated(spec: &Arc<ProxySpec>) -> bool {
        spec.commit == Commit::Standby
    }

    fn replicated_until(spec: &Arc<ProxySpec>, state: &ProxyHalf) -> u64 {
        if spec.commit == Commit::Standby || state.binding == Binding::Reading {
            return u64::MAX;
        }
        state.head_end
    }

    fn rewind_received(state: &mut ProxyHalf, off: u64) {
        // What follows `off` comes again, and any FIN after it.
        state.rx.peer_fin = false;
        if off < state.rx.received {
            state.rx.received = off.max(state.rx.released);
        }
    }

    fn unlinked_ack(state: &ProxyHalf) -> Option<u64> {
        // A client half that never had a partner here acknowledged what it read before the
        // choice and nothing after (alone, or still reading, it acknowledged everything:
        // `ack_limit`).
        (state.side == Side::Client && !state.alone && state.binding != Binding::Reading).then_some(state.head_end)
    }

    fn resume_linked(spec: &Arc<ProxySpec>, state: &mut ProxyHalf, partner_acked: u64) {
        // Linked, so its backend was chosen and opened (the standby never saw the choice;
        // with `commit = "peer"` it did not even see the request it was chosen by).
        if let Binding::Ready(_) | Binding::Reading = state.binding {
            state.binding = Binding::Bound;
        }
        if spec.commit == Commit::Peer {
            // Nothing beyond what the partner's peer acknowledged (or the first request read
            // before the choice, replicated) was acknowledged to this half's peer, which sends
            // it again (the replica's receive side was rewound to there, `sync::shadow`). The
            // replica's pipe holds what was replayed: that first request.
            let at = partner_acked.max(state.head_end);
            if at > state.rx.received {
                state.rx.reset_at(at);
            } else {
                state.rx.received = at;
                state.rx.skip = 0;
            }
            state.rx.release(partner_acked);
            return;
        }
        // What the partner's peer acknowledged of our pipe (its replicated send progress;
        // the ring holds the last `cap` bytes, all of them still valid).
        let first = state.rx.received.saturating_sub(state.rx.cap as u64);
        state.rx.release(partner_acked.max(first));
    }
}

