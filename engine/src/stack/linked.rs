//! Services whose connections come in linked pairs (the proxy, `service::proxy`): the stack
//! side of [`crate::service::Kind::on_accept`] and the link hooks.
//!
//! - **Accept.** A flow accepted by a listener whose kind asks for a partner gets it at
//!   once: the engine opens the flow the service names ([`Stack::connect_with`], from the
//!   address it names) and links the two ([`Stack::link`]), in the same pass, so the client's
//!   SYN-ACK and the backend's SYN are built, replicated and released together. If nothing
//!   can be opened (no destination, or `connect` refuses) the accepted flow is told at once
//!   ([`LinkEnd::NeverConnected`]) and re-imaged whole for the standby (its service state
//!   changed outside a TCP call).
//! - **Both halves move together.** After every TCP call of one half (segment, timer,
//!   takeover kick) the other half gets a `poll_send` ([`Stack::poll_partner`]): what one
//!   half received is what the other sends, and what one half's peer acknowledged frees the
//!   other half's window. Both calls are bound with the partner's service state.
//! - **Ends.** When a half closes (`unlink_closing`), its partner adopts what it still held
//!   ([`crate::service::Kind::adopt`]) and is told how it ended; it is then reset (a reset
//!   propagates) or polled (to send what is left and its FIN) in the next `Stack::poll`.
//!   The standby does the same adoption when the close reaches it (`sync::shadow`).

use super::{FrameSink, Stack, TcpTx};
use crate::counters::Event;
use crate::flow::FlowId;
use crate::replica::ShadowFlow;
use crate::replica::Origin;
use crate::service::{ByteStream, LinkEnd, Lifecycle, Open, ServiceState};
use crate::stack::Link;
use crate::stack::repl::Recorder;
use crate::config::StackConfig;
use crate::time::Instant;
use crate::wire::ipv4;
use crate::wire::tcp::FrameAddrs;

impl Stack {
    /// A flow `id` of listener `li` was just accepted: open and link the partner its service
    /// asks for, if any.
    pub(super) fn open_partner<F: FrameSink + ?Sized>(&mut self, now: Instant, id: FlowId, li: usize, tx: &mut F) {
        let cfg = self.cfg.clone();
        let Some(l) = cfg.listeners.get(li) else { return };
        let Some((key, flow)) = self.flows.get_key_value_mut(id) else { return };
        let Some(client) = key.remote_ip.to_ipv4_mapped() else { return };
        let Some(open) = flow.svc.on_accept(&l.spec, client, now) else { return };
        self.open_linked(now, id, li, open, tx);
    }

    /// After a TCP call of flow `id` (or its install at a takeover): an accepted flow without
    /// a partner whose service has now chosen one (delayed binding) gets it opened and linked.
    pub(super) fn take_open<F: FrameSink + ?Sized>(&mut self, now: Instant, id: FlowId, tx: &mut F) {
        // Called after every segment of every flow: no `Arc` clone of the config on the way to
        // the common answer (no partner wanted).
        let Some((key, flow)) = self.flows.get_key_value_mut(id) else { return };
        if flow.link != Link::None || flow.origin != Origin::Accepted {
            return;
        }
        let li = usize::from(flow.listener);
        let (Some(l), Some(client)) = (self.cfg.listeners.get(li), key.remote_ip.to_ipv4_mapped()) else { return };
        let Some(open) = flow.svc.take_open(&l.spec, client, now) else { return };
        self.open_linked(now, id, li, open, tx);
    }

    /// Open the flow `open` names for flow `id` of listener `li` and link the two; or tell
    /// `id` that nothing could be opened.
    fn open_linked<F: FrameSink + ?Sized>(&mut self, now: Instant, id: FlowId, li: usize, open: Open<ServiceState>, tx: &mut F) {
        let cfg = self.cfg.clone();
        let Some(l) = cfg.listeners.get(li) else { return };
        let Some(to) = open.to else {
            self.counters.event(Event::ProxyNoBackend);
            return self.accepted_alone(id);
        };
        match self.connect_with(now, open.from, to, li as u16, open.state, tx) {
            Ok(b) => {
                if let Some(f) = self.flows.get(b) {
                    f.svc.lifecycle(&l.spec, Lifecycle::Opened);
                }
                if self.link(id, b).is_err() {
                    // Not reached: both are new, live and unlinked.
                    self.counters.event(Event::ProxyConnectFailed);
                }
            }
            Err(_) => {
                self.counters.event(Event::ProxyConnectFailed);
                self.accepted_alone(id);
            }
        }
    }

    /// An accepted flow whose partner could not be opened: its service is told, the flow is
    /// re-imaged (the change is in its service state, which no TCP image carries) and polled.
    fn accepted_alone(&mut self, id: FlowId) {
        let Some(f) = self.flows.get_mut(id) else { return };
        let reset = f.svc.partner_ended(LinkEnd::NeverConnected);
        if self.repl.is_some() {
            f.needs_image = true;
            if !self.resync.contains(&id) {
                self.resync.push(id);
            }
        }
        self.open.wake.push((id, reset));
    }

    /// The survivor `p` of a pair whose other half `id` is closing: adopt what `id` held,
    /// tell its service how the partner ended, and wake it in the next poll.
    pub(super) fn partner_closing(&mut self, id: FlowId, p: FlowId, end: LinkEnd) {
        let Some((_, closing, Some(survivor))) = self.flows.get_key_value_and_other_mut(id, Some(p)) else { return };
        if end != LinkEnd::Reset {
            let acked = survivor.tcb.tx_acked();
            survivor.svc.adopt(&mut closing.svc, acked);
        }
        let reset = survivor.svc.partner_ended(end);
        self.open.wake.push((p, reset));
    }

    /// Flows whose partner ended: reset them (a reset propagates) or let them send what is
    /// left and their FIN. Each sealed apart.
    pub(super) fn wake_survivors<F: FrameSink + ?Sized>(&mut self, now: Instant, tx: &mut F) {
        while let Some((id, reset)) = self.open.wake.pop() {
            if !self.flows.contains(id) {
                continue;
            }
            let sent = self.counters.get(Event::TxFrames);
            if reset {
                self.reset_flow(now, id, tx);
            } else {
                self.poll_linked(now, id, tx);
            }
            if self.counters.get(Event::TxFrames) > sent {
                tx.seal(self.commit_tag(), now);
            }
        }
    }

    /// Reset flow `id` (RST to its peer) and close it, counted as a propagated reset.
    fn reset_flow<F: FrameSink + ?Sized>(&mut self, now: Instant, id: FlowId, tx: &mut F) {
        if self.reset_and_close(now, id, tx).is_some() {
            self.counters.event(Event::ProxyResetsPropagated);
        }
    }

    /// Reset flow `id` (its RST to its peer once synchronized) and close it. Returns the
    /// frames sent, `None` if there was no such flow.
    pub(super) fn reset_and_close<F: FrameSink + ?Sized>(&mut self, now: Instant, id: FlowId, tx: &mut F) -> Option<u64> {
        let (key, flow) = self.flows.get_key_value_mut(id)?;
        let (Some(remote), Some(local)) = (key.remote_ip.to_ipv4_mapped(), key.local_ip.to_ipv4_mapped()) else { return None };
        let addrs = FrameAddrs { src_mac: flow.vip_mac, dst_mac: flow.peer_mac, src_ip: local, dst_ip: remote, ttl: ipv4::DEFAULT_TTL, ip_id: 0 };
        let (s0, a) = (flow.tcb.state(), *flow.tcb.stats());
        let mut out = TcpTx { sink: tx, addrs, ip_id: &mut self.ip_id, frames: 0, failed: 0 };
        flow.tcb.reset(now, &mut out);
        let (frames, failed) = (out.frames, out.failed);
        self.after_tcp_call(id, s0, &a, frames, failed);
        Some(frames)
    }

    /// After a TCP call of flow `id`: its partner's turn to send (see the module docs).
    ///
    /// If that changed the partner's state, this half polls once more: with `commit =
    /// "peer"` a half processes its peer's FIN only once the other side's peer acknowledged
    /// every byte before it, which happens in the partner's poll, and this half then has a
    /// FIN to pass on (else it waited for the partner's end, two seconds of TIME-WAIT).
    pub(super) fn poll_partner<F: FrameSink + ?Sized>(&mut self, now: Instant, id: FlowId, tx: &mut F) {
        if let Some(p) = self.partner(id) {
            let before = self.flows.get(p).map(|f| f.tcb.state());
            self.poll_linked(now, p, tx);
            if self.flows.get(p).map(|f| f.tcb.state()) != before && self.partner(id) == Some(p) {
                self.poll_linked(now, id, tx);
            }
        }
    }

    /// `poll_send` of flow `id`, bound with its partner (if it has one), as a TCP call of its
    /// own: replicated, counted, its timer re-armed.
    pub(super) fn poll_linked<F: FrameSink + ?Sized>(&mut self, now: Instant, id: FlowId, tx: &mut F) {
        let cfg = self.cfg.clone();
        let partner = self.partner(id);
        let Some((key, flow, mut pflow)) = self.flows.get_key_value_and_other_mut(id, partner) else { return };
        let (Some(remote), Some(local)) = (key.remote_ip.to_ipv4_mapped(), key.local_ip.to_ipv4_mapped()) else { return };
        let Some(l) = cfg.listeners.get(usize::from(flow.listener)) else { return };
        if flow.unready && flow.tcb.state().is_synchronized() {
            // Resumed at a takeover and not yet validated by its peer: its kick sent what
            // may be sent; the rest waits for the peer's answer.
            return;
        }
        let addrs = FrameAddrs { src_mac: flow.vip_mac, dst_mac: flow.peer_mac, src_ip: local, dst_ip: remote, ttl: ipv4::DEFAULT_TTL, ip_id: 0 };
        let (s0, a) = (flow.tcb.state(), *flow.tcb.stats());
        let mut out = TcpTx { sink: tx, addrs, ip_id: &mut self.ip_id, frames: 0, failed: 0 };
        {
            let inner = flow.svc.bind_linked(pflow.as_mut().map(|p| &mut p.svc), &l.spec, &mut self.svc_stats);
            let mut svc = Recorder { inner, log: &mut self.rx_log };
            flow.tcb.poll_send(now, &cfg.tcp, &mut svc, &mut out);
        }
        let (frames, failed) = (out.frames, out.failed);
        self.after_tcp_call(id, s0, &a, frames, failed);
    }

    /// Where a replica's output ends if its service has closed (`Tcb::restore`), bound with
    /// its partner's state when it is installed as one half of a pair.
    pub(super) fn replica_closed_at(&mut self, cfg: &StackConfig, sh: &mut ShadowFlow, partner: Option<&mut ServiceState>) -> Option<u64> {
        let l = cfg.listeners.get(usize::from(sh.image.listener))?;
        let svc = sh.svc.bind_linked(partner, &l.spec, &mut self.svc_stats);
        svc.tx_closed().then(|| svc.tx_end())
    }
}
