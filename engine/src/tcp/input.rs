//! Input: RFC 9293 §3.10.7 "SEGMENT ARRIVES" for SYN-SENT and the synchronized states, with
//! PAWS (RFC 7323 §5), RFC 5961 mitigations, NewReno (RFC 5681/6582), SACK (RFC 2018),
//! delayed ACKs (RFC 5681 §4.2) and bounded out-of-order reassembly.

use super::reassembly::{Insert, Reassembly};
use super::tcb::Tcb;
use super::{SegmentSink, SegmentVerdict, State, TcpConfig};
use crate::service::ByteStream;
use crate::time::{Duration, Instant};
use crate::wire::{TcpFlags, TcpHeader};

/// RFC 7323 §5.5: TS.Recent older than 24 days is invalid for PAWS.
const PAWS_IDLE: Duration = Duration::from_secs(24 * 24 * 3600);

impl Tcb {
    /// Process one segment for this connection. Never panics; every drop has a verdict.
    pub fn on_segment<S: ByteStream + ?Sized>(
        &mut self,
        now: Instant,
        cfg: &TcpConfig,
        hdr: &TcpHeader,
        payload: &[u8],
        svc: &mut S,
        out: &mut impl SegmentSink,
    ) -> SegmentVerdict {
        self.stats.segs_in += 1;
        self.ack_limit = svc.ack_limit();
        self.skip_received(now, svc);
        // A segment can carry at most 64 KiB; anything longer is not ours to interpret.
        let payload = &payload[..payload.len().min(u16::MAX as usize)];
        let v = match self.state() {
            // §3.10.7.1 CLOSED: the caller answers as for an unknown flow.
            State::Closed => return SegmentVerdict::Closed,
            State::SynSent => self.input_syn_sent(now, cfg, hdr, out),
            _ => self.input_synchronized(now, cfg, hdr, payload, svc, out),
        };
        self.output(now, cfg, svc, out);
        v
    }

    /// RFC 9293 §3.10.7.3 SYN-SENT.
    fn input_syn_sent(
        &mut self,
        now: Instant,
        cfg: &TcpConfig,
        hdr: &TcpHeader,
        out: &mut impl SegmentSink,
    ) -> SegmentVerdict {
        let f = hdr.flags;
        // First: "If SEG.ACK =< ISS or SEG.ACK > SND.NXT, send a reset (unless the RST bit is
        // set, if so drop the segment and return)".
        if f.ack() && !(hdr.ack.gt(self.iss()) && hdr.ack.le(self.snd_max())) {
            self.stats.bad_acks += 1;
            if f.rst() {
                return SegmentVerdict::RstIgnored;
            }
            self.send_rst(hdr.ack, out);
            return SegmentVerdict::BadAck;
        }
        // Second: RST with an acceptable ACK resets the connection; without ACK drop it.
        if f.rst() {
            if f.ack() {
                self.stats.rst_received += 1;
                self.close_now();
                return SegmentVerdict::RstAccepted;
            }
            return SegmentVerdict::RstIgnored;
        }
        // Fourth: SYN.
        if !f.syn() {
            return SegmentVerdict::Ignored;
        }
        self.set_irs(hdr.seq);
        self.set_rcv_nxt(hdr.seq + 1, 0);
        self.negotiate(cfg, hdr, now);
        // Our SYN's window (unscaled: at most the service's room) bounds what the peer may send first.
        self.set_rcv_adv(self.rcv_nxt() + u32::from(self.syn_window));
        self.last_rx = now;
        // RFC 7323 §2.2: the SYN's window is not scaled.
        self.set_snd_wnd(hdr.window as u32);
        self.max_snd_wnd = hdr.window as u32;
        self.snd_wl1 = hdr.seq;
        self.snd_wl2 = hdr.ack;
        if f.ack() {
            // "If SND.UNA > ISS (our SYN has been ACKed), change the connection state to
            // ESTABLISHED, form an ACK segment <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK> and send it."
            self.rtt_sample_syn(now, cfg, hdr);
            self.set_snd_una(1);
            self.timers.rto = None;
            self.retries = 0;
            self.rtt.reset_backoff();
            self.set_state(State::Established);
            self.ack_now(now);
        } else {
            // "Otherwise, enter SYN-RECEIVED, form a SYN,ACK segment" (simultaneous open).
            self.set_state(State::SynReceived);
            self.send_syn(now, cfg, out);
        }
        SegmentVerdict::Accepted
    }

    fn rtt_sample_syn(&mut self, now: Instant, cfg: &TcpConfig, hdr: &TcpHeader) {
        // Karn: only if the SYN was not retransmitted.
        if self.retries == 0 {
            let sent = match (self.ts_ok(), hdr.options.timestamps) {
                (true, Some((_, ecr))) if ecr != 0 && self.echoes_our_clock(ecr) => {
                    let ms = self.ts_now(now).wrapping_sub(ecr) as i32;
                    (ms >= 0).then(|| ms as u64 * 1000)
                }
                _ => None,
            };
            if let Some(r) = sent {
                self.rtt.sample(r, cfg);
            }
        }
    }

    /// RFC 9293 §3.10.7.4: SYN-RECEIVED and every synchronized state.
    fn input_synchronized<S: ByteStream + ?Sized>(
        &mut self,
        now: Instant,
        cfg: &TcpConfig,
        hdr: &TcpHeader,
        payload: &[u8],
        svc: &mut S,
        out: &mut impl SegmentSink,
    ) -> SegmentVerdict {
        let f = hdr.flags;
        let state = self.state();

        // SYN-RECEIVED: a retransmitted SYN means our SYN-ACK was lost; resend it
        // (RFC 9293 §3.8.1 retransmission; Linux tcp_check_req does the same).
        if state == State::SynReceived && f.syn() && !f.ack() && !f.rst() && hdr.seq == self.irs() {
            self.stats.syn_ack_retransmits += 1;
            self.send_syn(now, cfg, out);
            return SegmentVerdict::SynAckRetransmitted;
        }

        // TIME-WAIT: a new SYN above RCV.NXT (or with a newer timestamp) may reopen the
        // 4-tuple (RFC 9293 §3.10.7.4 note; RFC 6191). The caller frees us and accepts.
        if state == State::TimeWait && f.syn() && !f.ack() && !f.rst() {
            let newer_ts = match (self.ts_ok(), hdr.options.timestamps) {
                (true, Some((tsval, _))) => tsval.wrapping_sub(self.ts_recent()) as i32 > 0,
                _ => false,
            };
            if hdr.seq.gt(self.rcv_nxt()) || newer_ts {
                return SegmentVerdict::SynInTimeWait;
            }
        }

        // TIME-WAIT: a bare ACK below RCV.NXT (no data, SYN, FIN or RST) is one the peer sent
        // before its FIN, delivered after it (issue 12: a veth reorders what two CPUs sent,
        // the kernel's ACK of our FIN and the application's FIN). It is unacceptable, and
        // RFC 9293 §3.10.7.4 (like Linux's TIME-WAIT, once per 500 ms) would answer it with
        // an ACK; but both FINs are acknowledged already, nothing is left to resynchronize,
        // and a peer whose LAST-ACK our ACK of its FIN ended has no socket: its kernel
        // answers the second ACK with a RST. Drop it silently, before PAWS (a stale TSval
        // would draw the same ACK). A peer that lost our ACK of its FIN retransmits the FIN,
        // which is answered below.
        if state == State::TimeWait
            && payload.is_empty()
            && !f.syn()
            && !f.fin()
            && !f.rst()
            && hdr.seq.lt(self.rcv_nxt())
        {
            self.stats.out_of_window += 1;
            self.stats.time_wait_stale_acks += 1;
            return SegmentVerdict::OutOfWindow;
        }

        // RFC 7323 §5.3 R1 (PAWS): TSval older than TS.Recent -> not acceptable; RSTs are
        // exempt (RFC 7323 §5.3 note / Linux tcp_paws_discard).
        if self.ts_ok() && !f.rst() {
            if let Some((tsval, _)) = hdr.options.timestamps {
                let stale = (tsval.wrapping_sub(self.ts_recent()) as i32) < 0;
                // R3: TS.Recent idle for more than 24 days is not valid.
                if stale && now.saturating_since(self.ts_recent_age) < PAWS_IDLE {
                    self.stats.paws_rejects += 1;
                    if self.time_wait_quiet(now, cfg, f) {
                        return SegmentVerdict::PawsRejected;
                    }
                    self.ack_now(now);
                    return SegmentVerdict::PawsRejected;
                }
            }
        }

        // §3.10.7.4 first check: acceptability (four cases).
        let seg_len = payload.len() as u32 + f.syn() as u32 + f.fin() as u32;
        let rcv_nxt = self.rcv_nxt();
        let wnd = self.rcv_wnd();
        let acceptable = match (seg_len == 0, wnd == 0) {
            // "0 0: SEG.SEQ = RCV.NXT"
            (true, true) => hdr.seq == rcv_nxt,
            // "0 >0: RCV.NXT =< SEG.SEQ < RCV.NXT+RCV.WND" (right edge inclusive, as Linux
            // tcp_sequence, so a full-window sender's pure ACKs are not bounced)
            (true, false) => hdr.seq.ge(rcv_nxt) && hdr.seq.le(rcv_nxt + wnd),
            // ">0 0: not acceptable" -- but "special allowance should be made to accept valid
            // ACKs, URGs, and RSTs": handled below by taking the ACK of an in-sequence one.
            (false, true) => false,
            // ">0 >0": first or last byte inside the window.
            (false, false) => {
                hdr.seq.in_window(rcv_nxt, rcv_nxt + wnd)
                    || (hdr.seq + (seg_len - 1)).in_window(rcv_nxt, rcv_nxt + wnd)
            }
        };
        let ack_only = !acceptable && wnd == 0 && hdr.seq == rcv_nxt && f.ack() && !f.rst() && !f.syn();
        if !acceptable && !ack_only {
            // "If the RST bit is set, drop the segment and return" (RFC 5961 §3.2: silently).
            if f.rst() {
                return SegmentVerdict::RstIgnored;
            }
            self.stats.out_of_window += 1;
            // TIME-WAIT: a retransmitted FIN: ACK it and restart the 2 MSL timer. But not
            // within the minimum RTO of our last ACK of the FIN: that ACK may still be on its
            // way (or held for the standby), and a peer that has since closed answers a
            // second one with a reset. If that ACK was lost, the peer's next retransmission
            // gets one. The same holds for any other old segment (a retransmission of data
            // below RCV.NXT, sent before our ACK arrived and delivered after it).
            if state == State::TimeWait {
                if f.fin() {
                    self.timers.time_wait = Some(now + cfg.time_wait);
                }
                if self.time_wait_quiet(now, cfg, f) {
                    return SegmentVerdict::OutOfWindow;
                }
                self.fin_acked_at = now;
            }
            // "send an acknowledgment <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>"; Linux-like, a
            // SYN here is answered below as a challenge (RFC 5961 §4.2) instead.
            if f.syn() {
                return self.challenge_ack(now);
            }
            self.ack_now(now);
            return SegmentVerdict::OutOfWindow;
        }

        // §3.10.7.4 second check, RST (RFC 5961 §3.2): exact RCV.NXT resets; otherwise
        // in-window -> challenge ACK.
        if f.rst() {
            // RFC 1337 (TIME-WAIT assassination): ignore RSTs in TIME-WAIT.
            if state == State::TimeWait {
                return SegmentVerdict::RstIgnored;
            }
            if hdr.seq == rcv_nxt {
                self.stats.rst_received += 1;
                // SYN-RECEIVED (passive) returns to LISTEN = this Tcb goes away; all
                // other states: "enter the CLOSED state, delete the TCB".
                self.close_now();
                return SegmentVerdict::RstAccepted;
            }
            return self.challenge_ack(now);
        }

        // §3.10.7.4 fourth check, SYN in a synchronized state: RFC 5961 §4.2 challenge ACK.
        if f.syn() {
            return self.challenge_ack(now);
        }

        // §3.10.7.4 fifth check: "if the ACK bit is off, drop the segment and return".
        if !f.ack() {
            return SegmentVerdict::NoAck;
        }

        // RFC 7323 §4.3: update TS.Recent if SEG.TSval >= TS.Recent and SEG.SEQ =< Last.ACK.sent.
        if self.ts_ok() {
            if let Some((tsval, _)) = hdr.options.timestamps {
                if tsval.wrapping_sub(self.ts_recent()) as i32 >= 0 && hdr.seq.le(self.last_ack_sent) {
                    self.set_ts_recent(tsval, now);
                }
            }
        }
        self.last_rx = now;

        if let Some(v) = self.process_ack(now, cfg, hdr, payload.len(), svc, out) {
            return v;
        }
        if self.is_closed() {
            return SegmentVerdict::Accepted; // LAST-ACK completed
        }
        if ack_only {
            // The data was not acceptable (zero window): tell the peer where we are.
            self.stats.out_of_window += 1;
            self.ack_now(now);
            return SegmentVerdict::OutOfWindow;
        }

        // §3.10.7.4 seventh check: segment text.
        self.process_text(now, cfg, hdr, payload, svc);
        // §3.10.7.4 eighth check: FIN.
        self.process_fin(now, cfg, hdr, payload.len(), svc);
        SegmentVerdict::Accepted
    }

    /// TIME-WAIT, an unacceptable segment (not a SYN) within the minimum RTO of our last
    /// ACK of the peer's FIN: left unanswered (see the callers). A FIN is not counted; any
    /// other segment is, in `time_wait_stale_acks`.
    fn time_wait_quiet(&mut self, now: Instant, cfg: &TcpConfig, f: TcpFlags) -> bool {
        let quiet = self.state() == State::TimeWait
            && !f.syn()
            && self.fin_acked_at != Instant::ZERO
            && now < self.fin_acked_at + cfg.rto_min;
        if quiet && !f.fin() {
            self.stats.time_wait_stale_acks += 1;
        }
        quiet
    }

    /// RFC 5961 §3.2/§4.2/§5.2: `<SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>`, counted.
    fn challenge_ack(&mut self, now: Instant) -> SegmentVerdict {
        self.stats.challenge_acks += 1;
        self.ack_now(now);
        SegmentVerdict::ChallengeAck
    }

    /// §3.10.7.4 fifth check (ACK field). Returns a verdict if the segment must be dropped.
    fn process_ack<S: ByteStream + ?Sized>(
        &mut self,
        now: Instant,
        cfg: &TcpConfig,
        hdr: &TcpHeader,
        payload_len: usize,
        svc: &mut S,
        out: &mut impl SegmentSink,
    ) -> Option<SegmentVerdict> {
        let una = self.una_abs();
        let in_flight = self.max_abs() - una;
        let ack_off = hdr.ack.diff(self.seq_of(una)) as i64;
        // RFC 5961 §5.2: acceptable iff SND.UNA - MAX.SND.WND =< SEG.ACK =< SND.NXT.
        let too_new = ack_off > in_flight as i64;
        let too_old = ack_off < -(self.max_snd_wnd as i64);
        if self.state() == State::SynReceived {
            // "If SND.UNA < SEG.ACK =< SND.NXT, then enter ESTABLISHED ... If the segment
            // acknowledgment is not acceptable, form a reset segment <SEQ=SEG.ACK><CTL=RST>".
            if ack_off <= 0 || too_new {
                self.stats.bad_acks += 1;
                self.send_rst(hdr.ack, out);
                return Some(SegmentVerdict::BadAck);
            }
            self.set_state(State::Established);
            // "set SND.WND <- SEG.WND, SND.WL1 <- SEG.SEQ, SND.WL2 <- SEG.ACK".
            let wnd = (hdr.window as u32) << self.snd_wscale();
            self.set_snd_wnd(wnd);
            self.max_snd_wnd = self.max_snd_wnd.max(wnd);
            self.snd_wl1 = hdr.seq;
            self.snd_wl2 = hdr.ack;
        } else if too_new || too_old {
            // RFC 5961 §5.2 / RFC 9293: "If the ACK acks something not yet sent, send an ACK,
            // drop the segment". Also the too-old case.
            self.stats.bad_acks += 1;
            self.ack_now(now);
            return Some(SegmentVerdict::BadAck);
        }

        // SACK blocks (RFC 2018 §5): record what lies in (SND.UNA, SND.NXT].
        if self.sack_ok() {
            for b in hdr.options.sacks() {
                let l = b.left.diff(self.seq_of(una)) as i64;
                let r = b.right.diff(self.seq_of(una)) as i64;
                if l >= 0 && r > l && r <= in_flight as i64 {
                    self.sacked.insert(una + l as u64, una + r as u64);
                }
            }
        }

        let seg_wnd = (hdr.window as u32) << self.snd_wscale();
        let mss = self.mss() as u32;
        if ack_off > 0 {
            // "If SND.UNA < SEG.ACK =< SND.NXT, then set SND.UNA <- SEG.ACK."
            let acked = ack_off as u64;
            let new_una = una + acked;
            self.rtt_sample(now, cfg, hdr, new_una);
            self.rtt.reset_backoff();
            self.retries = 0;
            if self.cc.in_recovery {
                if new_una >= self.cc.recover {
                    // RFC 6582 §3.2 step 3: full acknowledgment.
                    self.cc.on_full_ack(self.max_abs() - new_una, mss);
                } else {
                    // RFC 6582 §3.2 step 5: partial acknowledgment -> retransmit the first
                    // unacknowledged segment, deflate, reset the timer.
                    self.cc.on_partial_ack(acked, mss);
                    self.commit_una(new_una, svc);
                    self.retransmit_hole(now, new_una, true, svc, out);
                    self.timers.rto = Some(now + self.rtt.rto(cfg));
                }
            } else {
                self.cc.dup_acks = 0;
                // RFC 5681 §3.1 slow start / congestion avoidance.
                self.cc.on_ack(acked, mss);
            }
            self.commit_una(new_una, svc);
            if self.snd_nxt < new_una {
                self.snd_nxt = new_una;
            }
            // RFC 6298 §5.2/§5.3: stop the timer when all is acked, else restart it.
            self.timers.rto = if new_una == self.max_abs() {
                None
            } else {
                Some(now + self.rtt.rto(cfg))
            };
        } else if ack_off == 0
            && payload_len == 0
            && !hdr.flags.fin()
            && in_flight > 0
            && seg_wnd == self.snd_wnd()
        {
            // RFC 5681 §2 duplicate ACK (a-e).
            self.on_dup_ack(now, cfg, svc, out);
        }

        // "If SND.UNA =< SEG.ACK =< SND.NXT, the send window should be updated. If
        // (SND.WL1 < SEG.SEQ or (SND.WL1 = SEG.SEQ and SND.WL2 =< SEG.ACK))".
        if ack_off >= 0
            && (self.snd_wl1.lt(hdr.seq) || (self.snd_wl1 == hdr.seq && self.snd_wl2.le(hdr.ack)))
        {
            self.set_snd_wnd(seg_wnd);
            self.max_snd_wnd = self.max_snd_wnd.max(seg_wnd);
            self.snd_wl1 = hdr.seq;
            self.snd_wl2 = hdr.ack;
            if seg_wnd == 0 {
                // The peer is alive and answering with a closed window: not a failure.
                self.retries = 0;
            }
        }

        // State-specific parts of the fifth check.
        let fin_acked = self.fin_abs.is_some_and(|f| self.una_abs() > f);
        match self.state() {
            // FIN-WAIT-1: "if the FIN segment is now acknowledged, then enter FIN-WAIT-2".
            State::FinWait1 if fin_acked => self.set_state(State::FinWait2),
            // CLOSING: "if the ACK acknowledges our FIN, then enter the TIME-WAIT state".
            State::Closing if fin_acked => self.enter_time_wait(now, cfg),
            // LAST-ACK: "If our FIN is now acknowledged, delete the TCB, enter CLOSED".
            State::LastAck if fin_acked => self.close_now(),
            _ => {}
        }
        None
    }

    /// Move SND.UNA and tell the service which output bytes it may forget.
    fn commit_una<S: ByteStream + ?Sized>(&mut self, new_una: u64, svc: &mut S) {
        if new_una <= self.una_abs() {
            return;
        }
        self.set_snd_una(new_una);
        self.sacked.prune(new_una);
        // Stream offset acked = abs - 1, not counting our FIN.
        let data_una = match self.fin_abs {
            Some(f) => new_una.min(f),
            None => new_una,
        };
        svc.on_acked(data_una.saturating_sub(1));
    }

    /// Whether TSecr `ecr` echoes a TSval of this engine's clock. After a takeover the
    /// client may echo the old active's TSvals, which our restored clock runs ahead of by
    /// the restore margin (`Tcb::restore`): such an "RTT" would be ~10 minutes, clamp the
    /// RTO at its maximum, and stall the first loss by a minute.
    fn echoes_our_clock(&self, ecr: u32) -> bool {
        self.ts_clock_from.is_none_or(|from| ecr.wrapping_sub(from) as i32 >= 0)
    }

    /// RFC 7323 §4.1 (RTTM from TSecr) or RFC 6298 §3 (Karn: one timed, never-retransmitted
    /// segment).
    fn rtt_sample(&mut self, now: Instant, cfg: &TcpConfig, hdr: &TcpHeader, new_una: u64) {
        if self.ts_ok() {
            if let Some((_, ecr)) = hdr.options.timestamps {
                let ms = self.ts_now(now).wrapping_sub(ecr) as i32;
                if ecr != 0 && ms >= 0 && self.echoes_our_clock(ecr) {
                    self.rtt.sample(ms as u64 * 1000, cfg);
                }
            }
            return;
        }
        if let Some((end, sent)) = self.rtt.timing {
            if new_una >= end {
                self.rtt.sample(now.saturating_since(sent).micros(), cfg);
                self.rtt.timing = None;
            }
        }
    }

    /// RFC 5681 §3.2 / RFC 6582 §3.2 fast retransmit and fast recovery, SACK-aware.
    fn on_dup_ack<S: ByteStream + ?Sized>(
        &mut self,
        now: Instant,
        cfg: &TcpConfig,
        svc: &mut S,
        out: &mut impl SegmentSink,
    ) {
        self.stats.dup_acks += 1;
        self.cc.dup_acks = self.cc.dup_acks.saturating_add(1);
        let mss = self.mss() as u32;
        let una = self.una_abs();
        if self.cc.in_recovery {
            // RFC 5681 §3.2 step 4: inflate by one SMSS per additional duplicate ACK.
            self.cc.cwnd = self.cc.cwnd.saturating_add(mss);
            // With SACK, also fill the next known hole (one per duplicate ACK).
            if self.sack_ok() {
                if let Some(hi) = self.sacked.highest() {
                    let from = self.rexmit_hi.max(una);
                    if from < hi {
                        self.retransmit_hole(now, from, true, svc, out);
                    }
                }
            }
        } else if self.cc.dup_acks == 3 || (self.sack_ok() && self.cc.dup_acks < 3 && self.sacked_beyond(3)) {
            // RFC 6582 §3.2 step 2: only if the cumulative ACK covers "recover" (no false
            // retransmit after an RTO); RFC 6675-style: SACKed data of 3 segments above UNA
            // counts as three duplicates.
            if una > self.cc.recover || self.cc.recover == 0 {
                self.stats.fast_retransmits += 1;
                self.cc.enter_recovery(self.max_abs() - una, mss, self.max_abs());
                self.rexmit_hi = una;
                self.retransmit_hole(now, una, false, svc, out);
                self.timers.rto = Some(now + self.rtt.rto(cfg));
            }
        }
    }

    fn sacked_beyond(&self, segs: u32) -> bool {
        match self.sacked.highest() {
            Some(h) => h.saturating_sub(self.una_abs()) > (segs * self.mss() as u32) as u64 && !self.sacked.is_empty(),
            None => false,
        }
    }

    /// Retransmit one segment of the first un-SACKed hole at or above `from`.
    fn retransmit_hole<S: ByteStream + ?Sized>(
        &mut self,
        now: Instant,
        from: u64,
        in_recovery: bool,
        svc: &mut S,
        out: &mut impl SegmentSink,
    ) {
        let mut start = from.max(self.una_abs());
        while let Some(e) = self.sacked.covering(start) {
            start = e;
        }
        if start >= self.max_abs() {
            return;
        }
        let edge = self.sacked.next_sacked_after(start).unwrap_or(self.max_abs()).min(self.max_abs());
        let used = self.send_data_at(now, start, edge, &*svc, out);
        if used > 0 {
            self.stats.retransmits += 1;
            if in_recovery {
                self.stats.recovery_retransmits += 1;
            }
            self.rexmit_hi = self.rexmit_hi.max(start + used);
            self.rtt.timing = None;
        }
    }

    /// §3.10.7.4 seventh check: deliver in-order text, store out-of-order text.
    fn process_text<S: ByteStream + ?Sized>(
        &mut self,
        now: Instant,
        cfg: &TcpConfig,
        hdr: &TcpHeader,
        payload: &[u8],
        svc: &mut S,
    ) {
        // ESTABLISHED, FIN-WAIT-1, FIN-WAIT-2 deliver text; CLOSE-WAIT, CLOSING, LAST-ACK,
        // TIME-WAIT "should not occur, since a FIN has been received": ignore.
        if !matches!(self.state(), State::Established | State::FinWait1 | State::FinWait2) {
            if !payload.is_empty() {
                self.ack_now(now);
            }
            return;
        }
        if payload.is_empty() {
            return;
        }
        let rcv_nxt = self.rcv_nxt();
        // Trim to the window: drop bytes below RCV.NXT and beyond the advertised edge.
        let skip = rcv_nxt.diff(hdr.seq).max(0) as usize;
        if skip >= payload.len() {
            // Entirely old: a retransmission; RFC 5681 §4.2 immediate ACK.
            self.ack_now(now);
            return;
        }
        let start = hdr.seq + skip as u32;
        let room = self.rcv_adv().diff(start).max(0) as usize;
        let data = &payload[skip..payload.len().min(skip + room)];
        if data.is_empty() {
            self.ack_now(now);
            return;
        }
        if skip > 0 {
            self.ack_now(now); // partially duplicate
        }
        if start == rcv_nxt {
            let n = svc.on_recv(data).min(data.len());
            self.set_rcv_nxt(rcv_nxt + n as u32, n as u64);
            self.stats.bytes_in += n as u64;
            if n < data.len() && cfg.max_ooo_bytes > 0 {
                // The service is full but the bytes are inside the window we advertised (its
                // right edge never shrinks): hold them, unacknowledged, and hand them over
                // when the service has room (`deliver_ooo` from `poll_send`) rather than make
                // the peer retransmit everything behind them.
                let at = rcv_nxt + n as u32;
                let r = self.ooo.get_or_insert_with(|| Box::new(Reassembly::new(cfg.max_ooo_bytes)));
                let _ = r.insert(at, at, &data[n..]);
            }
            let mut filled = false;
            if n == data.len() {
                filled = self.deliver_ooo(svc);
            }
            if n < data.len() || filled {
                // Service full (the peer must retransmit: tell it now), or a hole was
                // filled (RFC 5681 §4.2: immediate ACK).
                self.ack_now(now);
            } else {
                // RFC 5681 §4.2 / RFC 1122: ACK at least every second full-sized segment,
                // otherwise within the delayed-ACK timeout.
                self.unacked_segs = self.unacked_segs.saturating_add(1);
                if cfg.delayed_ack.micros() == 0 || self.unacked_segs >= 2 {
                    self.ack_now(now);
                } else if !self.ack_pending {
                    self.ack_pending = true;
                    self.timers.delack = Some(now + cfg.delayed_ack);
                }
            }
        } else {
            // Out of order: hold it (bounded) and ACK immediately (RFC 5681 §4.2, the
            // duplicate ACK drives the peer's fast retransmit; SACK blocks say what we hold).
            self.stats.ooo_segments += 1;
            if cfg.max_ooo_bytes == 0 {
                self.stats.ooo_dropped += 1;
            } else {
                let r = self.ooo.get_or_insert_with(|| Box::new(Reassembly::new(cfg.max_ooo_bytes)));
                if r.insert(rcv_nxt, start, data) == Insert::Dropped {
                    self.stats.ooo_dropped += 1;
                }
                if r.is_empty() {
                    self.ooo = None;
                }
            }
            self.ack_now(now);
        }
    }

    /// Hand contiguous stored bytes at RCV.NXT to the service. True if anything moved.
    /// Frees the store once it is empty (the hole filled).
    pub(super) fn deliver_ooo<S: ByteStream + ?Sized>(&mut self, svc: &mut S) -> bool {
        let mut moved = false;
        loop {
            let rcv_nxt = self.rcv_nxt();
            let Some(r) = self.ooo.as_mut() else { return moved };
            r.prune(rcv_nxt);
            let n = match r.front(rcv_nxt) {
                Some(s) => {
                    let n = svc.on_recv(s).min(s.len());
                    if n == 0 {
                        break;
                    }
                    n
                }
                None => break,
            };
            self.set_rcv_nxt(rcv_nxt + n as u32, n as u64);
            self.stats.bytes_in += n as u64;
            moved = true;
        }
        let rcv_nxt = self.rcv_nxt();
        if let Some(r) = self.ooo.as_mut() {
            r.prune(rcv_nxt);
            if r.is_empty() {
                self.ooo = None;
            }
        }
        moved
    }

    /// §3.10.7.4 eighth check: FIN, processed once RCV.NXT reaches it (an out-of-order FIN is
    /// remembered so a reordered link does not cost a retransmission).
    fn process_fin<S: ByteStream + ?Sized>(
        &mut self,
        now: Instant,
        cfg: &TcpConfig,
        hdr: &TcpHeader,
        payload_len: usize,
        svc: &mut S,
    ) {
        if hdr.flags.fin() {
            let fin_seq = hdr.seq + payload_len as u32;
            // Only a FIN inside the window we advertised counts (trimmed otherwise).
            if fin_seq.ge(self.rcv_nxt()) && fin_seq.le(self.rcv_adv()) {
                self.peer_fin = Some(fin_seq);
            }
        }
        self.accept_fin(now, cfg, svc);
    }

    /// Process the FIN remembered in `peer_fin` once RCV.NXT reached it, and every byte
    /// before it may be acknowledged (`Tcb::ack_point`; until then it waits, unprocessed and
    /// unreplicated, and the peer retransmits it if the engine dies).
    pub(super) fn accept_fin<S: ByteStream + ?Sized>(&mut self, now: Instant, cfg: &TcpConfig, svc: &mut S) {
        let Some(fin_seq) = self.peer_fin else { return };
        if fin_seq != self.rcv_nxt() || self.ack_held() {
            return;
        }
        let next = match self.state() {
            // "SYN-RECEIVED, ESTABLISHED: Enter the CLOSE-WAIT state."
            State::SynReceived | State::Established => State::CloseWait,
            // "FIN-WAIT-1: If our FIN has been ACKed, enter TIME-WAIT; otherwise CLOSING."
            State::FinWait1 => {
                if self.fin_abs.is_some_and(|f| self.una_abs() > f) {
                    State::TimeWait
                } else {
                    State::Closing
                }
            }
            // "FIN-WAIT-2: Enter the TIME-WAIT state."
            State::FinWait2 => State::TimeWait,
            // CLOSE-WAIT, CLOSING, LAST-ACK: remain; TIME-WAIT: restart the timer.
            State::TimeWait => {
                self.timers.time_wait = Some(now + cfg.time_wait);
                self.ack_now(now);
                return;
            }
            _ => return,
        };
        self.peer_fin = None;
        // "advance RCV.NXT over the FIN, and send an acknowledgment for the FIN".
        self.set_rcv_nxt(fin_seq + 1, 0);
        svc.on_peer_fin();
        self.ack_now(now);
        self.fin_acked_at = now;
        if next == State::TimeWait {
            self.enter_time_wait(now, cfg);
        } else {
            self.set_state(next);
        }
    }

    /// TIME-WAIT: only the 2·MSL (here `cfg.time_wait`) timer runs.
    pub(super) fn enter_time_wait(&mut self, now: Instant, cfg: &TcpConfig) {
        self.set_state(State::TimeWait);
        self.timers.rto = None;
        self.timers.persist = None;
        self.timers.time_wait = Some(now + cfg.time_wait);
        self.ooo = None;
    }
}
