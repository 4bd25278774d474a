//! Timers (RFC 9293 §3.8): retransmission (RFC 6298), delayed ACK (RFC 5681 §4.2), persist
//! (§3.8.6.1), TIME-WAIT, idle timeout. The caller keeps one wheel entry per Tcb at
//! `next_deadline()` and calls `on_timer` when it passes; early or spurious calls are harmless.

use super::tcb::Tcb;
use super::{SegmentSink, State, TcpConfig};
use crate::service::ByteStream;
use crate::time::Instant;

impl Tcb {
    /// The earliest instant at which `on_timer` has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.is_closed() {
            return None;
        }
        let t = &self.timers;
        let delack = if self.ack_pending { t.delack } else { None };
        [t.rto, delack, t.persist, t.time_wait, self.idle_deadline_at()]
            .into_iter()
            .flatten()
            .min()
    }

    fn idle_deadline_at(&self) -> Option<Instant> {
        if self.idle_timeout.micros() == 0
            || !self.state().is_synchronized()
            || self.state() == State::TimeWait
        {
            return None;
        }
        Some(self.last_rx + self.idle_timeout)
    }

    /// Run every expired timer.
    pub fn on_timer<S: ByteStream + ?Sized>(
        &mut self,
        now: Instant,
        cfg: &TcpConfig,
        svc: &mut S,
        out: &mut impl SegmentSink,
    ) {
        if self.is_closed() {
            return;
        }
        self.ack_limit = svc.ack_limit();
        // TIME-WAIT timeout: "delete the TCB, enter the CLOSED state" (RFC 9293 §3.10.8).
        if self.state() == State::TimeWait && self.timers.time_wait.is_some_and(|d| d <= now) {
            self.close_now();
            return;
        }
        // Idle (user) timeout: reset like Linux's keepalive/user-timeout expiry.
        if cfg.idle_timeout.micros() > 0
            && self.idle_deadline_at().is_some_and(|d| d <= now)
        {
            self.stats.idle_timeouts += 1;
            self.abort(now, out, true);
            return;
        }
        if self.timers.rto.is_some_and(|d| d <= now) {
            self.on_rto(now, cfg, svc, out);
            if self.is_closed() {
                return;
            }
        }
        if self.timers.persist.is_some_and(|d| d <= now) {
            self.timers.persist = None;
            // RFC 9293 §3.8.6.1: probe the zero window, with a segment the peer must answer
            // with its current window.
            self.stats.persist_probes += 1;
            self.persist_backoff = self.persist_backoff.saturating_add(1).min(30);
            self.send_probe(now, svc, out);
        }
        // Delayed ACK timeout (RFC 5681 §4.2): `output` sends any owed ACK whose time came.
        self.output(now, cfg, svc, out);
    }

    /// RFC 6298 §5.4-5.6 retransmission timeout.
    fn on_rto<S: ByteStream + ?Sized>(
        &mut self,
        now: Instant,
        cfg: &TcpConfig,
        svc: &mut S,
        out: &mut impl SegmentSink,
    ) {
        self.timers.rto = None;
        let limit = match self.state() {
            State::SynSent => self.syn_retries.unwrap_or(cfg.syn_ack_retries),
            State::SynReceived => cfg.syn_ack_retries,
            _ => cfg.max_retransmits,
        };
        if self.retries >= limit {
            // Too many retransmissions: give up (RFC 9293 §3.8.3 R2) with a RST.
            self.stats.retransmit_aborts += 1;
            self.abort(now, out, self.state() != State::SynSent);
            return;
        }
        match self.state() {
            State::SynSent | State::SynReceived => {
                // Retransmit SYN / SYN-ACK.
                if self.state() == State::SynReceived {
                    self.stats.syn_ack_retransmits += 1;
                }
                self.send_syn(now, cfg, out);
            }
            _ if self.una_abs() >= self.max_abs() || !self.state().is_synchronized() => {
                return; // nothing outstanding: a stale timer
            }
            State::TimeWait | State::FinWait2 => return,
            _ => {
                // RFC 5681 §3.1: ssthresh = FlightSize/2, cwnd = 1 SMSS; RFC 2018 §5.1:
                // forget SACK information after a timeout; go back to SND.UNA.
                let flight = self.max_abs() - self.una_abs();
                self.cc.on_rto(flight, self.mss() as u32, self.max_abs());
                self.sacked.clear();
                self.snd_nxt = self.una_abs();
                if self.snd_wnd() == 0 {
                    // Retransmitting into a zero window: probe instead (the data goes once
                    // the window opens).
                    self.stats.persist_probes += 1;
                    self.send_probe(now, &*svc, out);
                } else {
                    // Resend one segment from SND.UNA (cwnd is now 1 SMSS).
                    let start = self.snd_nxt;
                    let edge = start + self.mss() as u64;
                    let used = self.send_data_at(now, start, edge, &*svc, out);
                    self.snd_nxt = start + used;
                    // The segment may extend past SND.MAX when the outstanding tail was short.
                    if self.snd_nxt > self.max_abs() {
                        self.set_snd_max(self.snd_nxt);
                    }
                }
            }
        }
        self.retries += 1;
        self.stats.rto_timeouts += 1;
        self.stats.retransmits += 1;
        // §5.5: back off the timer; Karn: no sample from anything outstanding now.
        self.rtt.back_off();
        self.rtt.timing = None;
        // §5.6: restart the timer with the backed-off RTO.
        self.timers.rto = Some(now + self.rtt.rto(cfg));
    }
}
