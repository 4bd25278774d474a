//! Takeover (DESIGN §4): the flows a standby replicated, installed and resumed by the engine
//! that takes them over (`iteration::resume`).
//!
//! - **Install** ([`Stack::install`]; a linked pair both or neither, [`Stack::install_pair`]
//!   in `open`): the replica's TCB is restored with its owed FIN delivered and, if its
//!   service has closed, where that service's output ends (`linked`). The flow is *unready*
//!   (`Flow::unready`) until its client's first ACK falls within what the replica sent
//!   (checked where segments meet their flow, in `stack`). One half of a linked pair
//!   installed alone is an orphan (`open`): not resumed while it was opening.
//! - **Kick** (`kick`): a resumed flow's first output, a pure ACK its client must answer
//!   ([`Tcb::send_probe`]) and the resend from SND.UNA; a flow in SYN-SENT sends its SYN
//!   again, one in TIME-WAIT only re-arms its timer. The first installs of a takeover kick at
//!   once ([`Stack::set_kicks_now`]), the others [`KICK_BURST`] per [`Stack::poll`].
//! - **Grace** ([`Stack::set_grace_until`]): until then a segment of an unknown flow is
//!   dropped, not reset (its replica may still be arriving).

use super::{Flow, FrameSink, Link, Stack, TcpTx};
use crate::counters::{Drop, Event};
use crate::flow::FlowId;
use crate::replica::ShadowFlow;
use crate::service::Lifecycle;
use crate::tcp::{State, Tcb};
use crate::time::Instant;
use crate::wire::ipv4;
use crate::wire::tcp::FrameAddrs;

/// Resumed flows kicked (probed, resent from SND.UNA) per pass at a takeover: a burst the
/// mbuf pool and TX ring absorb (each kick is a probe plus up to a window of data), 40 passes
/// for 10 000 flows.
pub const KICK_BURST: usize = 256;

impl Stack {
    /// Drop (not reset) segments of unknown flows until `t` (takeover grace, DESIGN §4).
    pub fn set_grace_until(&mut self, t: Instant) {
        self.grace_until = t;
    }

    /// Takeover: install a replicated flow, probe the client with a pure ACK it must answer
    /// ([`crate::tcp::Tcb::send_probe`]; its answer re-validates our sequence state through
    /// the normal RFC 5961 ACK checks and brings the current window) and resume sending from
    /// SND.UNA; a flow that was opening (SYN-SENT) sends its SYN again. Returns false if the
    /// table is full (the flow is abandoned). One half of a linked pair installed alone is an
    /// orphan (`open`; pairs go through [`Stack::install_pair`]): returns false while opening.
    pub fn install<F: FrameSink + ?Sized>(&mut self, now: Instant, mut sh: ShadowFlow, tx: &mut F) -> bool {
        let link = if sh.image.link.is_some() { Link::Orphan } else { Link::None };
        let cfg = self.cfg.clone();
        sh.deliver_fin(&cfg);
        let closed_at = self.replica_closed_at(&cfg, &mut sh, None);
        let Some(id) = self.install_flow(now, sh, link, closed_at, true, tx) else { return false };
        // A proxied client whose backend was chosen but not yet opened (delayed binding).
        self.take_open(now, id, tx);
        true
    }

    /// Install `sh` (its owed FIN delivered; `closed_at`: where its service's output ends if
    /// it has closed) and, if `kick`, probe it now or in a later pass.
    pub(super) fn install_flow<F: FrameSink + ?Sized>(&mut self, now: Instant, sh: ShadowFlow, link: Link, closed_at: Option<u64>, kick: bool, tx: &mut F) -> Option<FlowId> {
        let cfg = self.cfg.clone();
        let img = sh.image;
        if link == Link::Orphan && img.tcb.state == State::SynSent {
            // Nobody but its peer saw it: not resumed.
            self.counters.event(Event::LinkOrphans);
            return None;
        }
        let l = cfg.listeners.get(img.listener as usize)?;
        if img.key.remote_ip.to_ipv4_mapped().is_none() || img.key.local_ip.to_ipv4_mapped().is_none() {
            return None;
        }
        let mut tcb = Tcb::restore(&cfg.tcp, &img.tcb, now, closed_at);
        // Issue 12: what a resumed flow started from, to read beside a capture of its client.
        tracing::debug!(target: "flowtwin::resume", "install {}:{} {:?} una {} nxt {} rcv_nxt {} wnd {} tx_acked {} tx_sent {} rx {} closed_at {:?} -> {:?} una {} max {}",
            img.key.remote_ip, img.key.remote_port, img.tcb.state, img.tcb.snd_una.0, img.tcb.snd_nxt.0, img.tcb.rcv_nxt.0, img.tcb.snd_wnd,
            img.tcb.tx_acked, img.tcb.tx_sent, img.tcb.rx_delivered, closed_at, tcb.state(), tcb.snd_una().0, tcb.snd_max().0);
        let quiet = tcb.state() == State::TimeWait;
        sh.svc.lifecycle(&l.spec, if quiet { Lifecycle::Quiet } else { Lifecycle::Resumed });
        let mut svc = sh.svc;
        if tcb.state() == State::SynSent {
            tcb.set_syn_window(svc.syn_window(&l.spec, &mut self.svc_stats));
            if let Some(n) = svc.syn_retries(&l.spec) {
                tcb.set_syn_retries(n);
            }
        }
        let state = tcb.state();
        let flow = Flow { tcb, svc, listener: img.listener, origin: img.origin, link, peer_mac: img.peer_mac, vip_mac: img.vip_mac, unready: true, installed: true, repl_seq: 0, una_seq: 0, needs_image: false, quiet, local: false };
        let Ok(id) = self.flows.insert(img.key, flow) else { return None };
        self.counters.flows_by_state[state as usize] += 1;
        self.counters.event(Event::FlowsResumed);
        if link == Link::Orphan {
            self.orphan_installed(id);
        }
        // A later standby learns this flow through a join snapshot.
        if let Some(f) = self.flows.get_mut(id) {
            f.tcb.dirty.take();
        }
        if !kick {
        } else if self.kicks_now > 0 || link != Link::None || state == State::SynSent {
            self.kicks_now = self.kicks_now.saturating_sub(1);
            self.kick(now, id, tx);
        } else {
            // Beyond this pass's burst: probed from `poll`, a burst per pass (issue 16: the
            // probes of 10 000 flows at once exhausted the mbuf pool).
            self.kicks.push_back(id);
        }
        self.flows.contains(id).then_some(id)
    }

    /// A resumed flow's first output: the probe its client must answer, and the resend from
    /// SND.UNA; then its timer.
    pub(super) fn kick<F: FrameSink + ?Sized>(&mut self, now: Instant, id: FlowId, tx: &mut F) {
        let cfg = self.cfg.clone();
        let partner = self.partner(id);
        let Some((key, flow, mut pflow)) = self.flows.get_key_value_and_other_mut(id, partner) else { return };
        let (Some(remote), Some(local)) = (key.remote_ip.to_ipv4_mapped(), key.local_ip.to_ipv4_mapped()) else { return };
        let Some(l) = cfg.listeners.get(flow.listener as usize) else { return };
        let state = flow.tcb.state();
        if state == State::TimeWait {
            // Nothing to elicit: its peer has closed, or (its last ACK lost) is in LAST-ACK
            // and retransmits its FIN, which TIME-WAIT acknowledges. A probe would only draw
            // a reset from the closed peer.
            let deadline = flow.tcb.next_deadline();
            flow.unready = false;
            self.schedule(id, deadline);
            return;
        }
        let addrs = FrameAddrs { src_mac: flow.vip_mac, dst_mac: flow.peer_mac, src_ip: local, dst_ip: remote, ttl: ipv4::DEFAULT_TTL, ip_id: 0 };
        let mut out = TcpTx { sink: tx, addrs, ip_id: &mut self.ip_id, frames: 0, failed: 0 };
        {
            let mut svc = flow.svc.bind_linked(pflow.as_mut().map(|p| &mut p.svc), &l.spec, &mut self.svc_stats);
            if state.is_synchronized() {
                flow.tcb.send_probe(now, &svc, &mut out);
            }
            flow.tcb.poll_send(now, &cfg.tcp, &mut svc, &mut out);
        }
        let (frames, failed) = (out.frames, out.failed);
        let deadline = flow.tcb.next_deadline();
        self.counters.add(Event::TxFrames, frames);
        self.counters.drops[Drop::TxNoMbuf as usize] += failed;
        self.schedule(id, deadline);
        if state == State::SynSent {
            self.resume_open(now, id, tx);
        }
        // A later standby learns this flow through a join snapshot.
        if let Some(f) = self.flows.get_mut(id) {
            f.tcb.dirty.take();
        }
        // Its probe and resent data are this flow's output (ordered with its later frames).
        self.touch_tag(0, id);
    }

    /// Takeover: the next `n` installs kick their flow at once ([`Stack::install`]); later
    /// ones wait for [`Stack::poll`], which kicks [`KICK_BURST`] per pass. `usize::MAX` (the
    /// default): every install kicks at once.
    pub fn set_kicks_now(&mut self, n: usize) {
        self.kicks_now = n;
    }

    /// Resumed flows whose probe waits for a later pass.
    pub fn kicks_pending(&self) -> usize {
        self.kicks.len()
    }

    /// Kick up to [`KICK_BURST`] waiting flows, each sealed apart (like timers). A flow whose
    /// client spoke meanwhile needs no probe: its segment already re-validated it and made it
    /// send.
    pub(super) fn kick_waiting<F: FrameSink + ?Sized>(&mut self, now: Instant, tx: &mut F) {
        for _ in 0..KICK_BURST {
            let Some(id) = self.kicks.pop_front() else { break };
            if !self.flows.get(id).is_some_and(|f| f.unready) {
                continue;
            }
            self.kick(now, id, tx);
            tx.seal(self.commit_tag(), now);
        }
    }
}
