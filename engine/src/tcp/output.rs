//! Output: segment construction, options, the receive window we advertise, ACKs, and the
//! pull-model send loop (RFC 9293 §3.8.6, RFC 5681, RFC 7323, RFC 2018).

use super::tcb::Tcb;
use super::{SegmentSink, State, TcpConfig};
use crate::seq::SeqNum;
use crate::service::ByteStream;
use crate::time::Instant;
use crate::wire::{SackBlock, TcpFlags, TcpHeader, TcpOptions, MAX_SACK_BLOCKS};

/// Bytes of the timestamps option as we lay it out (NOP, NOP, kind 8, len 10).
const TS_OPT_LEN: usize = 12;
/// Upper bound of segments one `poll_send` emits (a guard; the windows normally stop us).
const MAX_BURST: usize = 256;

impl Tcb {
    /// Send whatever the windows allow (new service output; FIN once `svc.tx_closed()` and
    /// everything is sent), deliver out-of-order bytes the service can now take, and send a
    /// window update if the service freed enough space. Call after the service produced data.
    pub fn poll_send<S: ByteStream + ?Sized>(
        &mut self,
        now: Instant,
        cfg: &TcpConfig,
        svc: &mut S,
        out: &mut impl SegmentSink,
    ) {
        if self.is_closed() {
            return;
        }
        self.skip_received(now, svc);
        if self.state().is_synchronized() && self.deliver_ooo(svc) {
            self.ack_now(now);
        }
        self.output(now, cfg, svc, out);
    }

    /// Send a pure ACK now (`<SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>`), e.g. a challenge ACK
    /// (RFC 5961 §3.2). A peer need not answer it (an acceptable segment without data gets
    /// no reply): to elicit an answer use [`Tcb::send_probe`].
    pub fn send_ack<S: ByteStream + ?Sized>(
        &mut self,
        now: Instant,
        svc: &S,
        out: &mut impl SegmentSink,
    ) {
        self.ack_limit = svc.ack_limit();
        let seq = self.ack_seq();
        let hdr = self.header(now, TcpFlags::ACK, seq, svc.rx_space());
        self.emit(&hdr, 0, 0, svc, out);
    }

    /// The common tail of every input/timer event: data, then owed ACKs, then the persist timer.
    pub(super) fn output<S: ByteStream + ?Sized>(
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
        if self.ack_limit.is_some() && self.peer_fin.is_some() {
            // A FIN that waited for the bytes before it to be acknowledgeable.
            self.accept_fin(now, cfg, svc);
        }
        self.send_loop(now, cfg, svc, out);
        if !self.ack_pending
            && matches!(self.state(), State::Established | State::FinWait1 | State::FinWait2)
            && self.window_update_due(svc.rx_space())
        {
            self.ack_now(now);
        }
        if self.ack_limit.is_some() && self.state().is_synchronized() {
            if self.ack_point().gt(self.last_ack_sent) {
                // The limit moved (the other half's peer acknowledged): say so now.
                self.ack_now(now);
            } else if self.ack_pending && self.ack_held() && self.ooo.is_none() && self.ack_point() == self.last_ack_sent && !self.window_update_due(svc.rx_space()) {
                // It would repeat the last ACK and window while bytes wait for the limit:
                // a duplicate ACK, which drives the peer's fast retransmit of bytes we have.
                // (With out-of-order bytes it carries SACK blocks and is sent.)
                self.ack_pending = false;
                self.timers.delack = None;
                self.stats.held_acks_suppressed += 1;
            }
        }
        if self.ack_pending && self.timers.delack.is_some_and(|d| d <= now) {
            self.send_ack(now, &*svc, out);
        }
        self.arm_persist(now, cfg, &*svc);
    }

    /// Count as received the bytes the service says the far side already has
    /// (`ByteStream::take_skipped`), before any segment text is delivered: their
    /// retransmission, if it comes, is then a duplicate.
    pub(super) fn skip_received<S: ByteStream + ?Sized>(&mut self, now: Instant, svc: &mut S) {
        if !matches!(self.state(), State::Established | State::FinWait1 | State::FinWait2) {
            return;
        }
        let n = svc.take_skipped();
        if n > 0 {
            self.set_rcv_nxt(self.rcv_nxt() + n.min(u64::from(u32::MAX >> 1)) as u32, n);
            self.stats.skipped_in += n;
            self.ack_now(now);
        }
    }

    /// Owe an ACK and send it at the end of this event.
    pub(super) fn ack_now(&mut self, now: Instant) {
        self.ack_pending = true;
        self.timers.delack = Some(now);
    }

    /// Send a probe the peer must answer: an ACK with an old sequence number
    /// (`<SEQ=SND.UNA-1><ACK=RCV.NXT><CTL=ACK>`) and, once the peer has acknowledged a data
    /// byte, one byte of payload. It lies below what the peer acknowledged, so the peer drops
    /// it as a duplicate and replies at once with an ACK carrying its current SND.NXT,
    /// RCV.NXT and window (RFC 9293 §3.10.7.4). The byte is never delivered (it is a zero:
    /// the service need not keep acknowledged bytes), and it matters on Linux: the answer to
    /// a *zero-length* out-of-window segment is rate-limited to one per 500 ms per socket
    /// (`tcp_oow_rate_limited`, shared with its PAWS and challenge ACKs), and is not sent at
    /// all while the peer owes us an ACK; a segment with data is answered every time (BSD's
    /// keepalive sends the same). Used by the persist timer, and by the takeover probe
    /// (DESIGN §4): a plain ACK with SEQ=SND.UNA is acceptable whenever the replica is
    /// current, and a peer that has nothing to send would then stay silent; with a
    /// replicated zero window the standby would not learn the window had opened until its
    /// persist timer fired, 1 s later (no RTT estimate yet).
    pub fn send_probe<S: ByteStream + ?Sized>(&mut self, now: Instant, svc: &S, out: &mut impl SegmentSink) {
        self.ack_limit = svc.ack_limit();
        let una = self.una_abs();
        let seq = self.seq_of(una) - 1;
        let hdr = self.header(now, TcpFlags::ACK, seq, svc.rx_space());
        // abs 0 is the SYN: before the first data byte was acknowledged there is none to use.
        let len = usize::from(una >= 2);
        self.stats.segs_out += 1;
        if !out.emit(&hdr, len, &mut |buf: &mut [u8]| buf.fill(0)) {
            self.stats.emit_failures += 1;
        }
    }

    /// Sequence number for a segment without data: SND.NXT, but never beyond the peer's
    /// window (Linux `tcp_acceptable_seq`), so the peer's acceptability test passes.
    pub(super) fn ack_seq(&self) -> SeqNum {
        let edge = self.una_abs().saturating_add(self.snd_wnd() as u64);
        let abs = self.max_abs().min(edge).max(self.una_abs());
        self.seq_of(abs)
    }

    /// abs sequence one past the last output byte available (the FIN position once queued).
    pub(super) fn data_end<S: ByteStream + ?Sized>(&self, svc: &S) -> u64 {
        match self.fin_abs {
            Some(f) => f,
            None => svc.tx_end().saturating_add(1),
        }
    }

    /// abs sequence one past everything we have to send (data plus FIN).
    pub(super) fn seq_end<S: ByteStream + ?Sized>(&self, svc: &S) -> u64 {
        self.data_end(svc) + self.fin_abs.is_some() as u64
    }

    /// RFC 9293 §3.10.4 CLOSE: once the service is done and all its bytes are queued, queue the
    /// FIN: ESTABLISHED -> FIN-WAIT-1, CLOSE-WAIT -> LAST-ACK (FIN sent after the data).
    fn queue_fin<S: ByteStream + ?Sized>(&mut self, svc: &S) {
        if self.fin_abs.is_some() || !svc.tx_closed() {
            return;
        }
        match self.state() {
            State::Established => self.set_state(State::FinWait1),
            State::CloseWait => self.set_state(State::LastAck),
            _ => return,
        }
        self.fin_abs = Some(svc.tx_end().saturating_add(1));
    }

    /// Send new data (and retransmit after an RTO rewind) within min(cwnd, snd_wnd).
    fn send_loop<S: ByteStream + ?Sized>(
        &mut self,
        now: Instant,
        cfg: &TcpConfig,
        svc: &mut S,
        out: &mut impl SegmentSink,
    ) {
        if !matches!(
            self.state(),
            State::Established | State::CloseWait | State::FinWait1 | State::Closing | State::LastAck
        ) {
            return;
        }
        self.queue_fin(&*svc);
        for _ in 0..MAX_BURST {
            let seq_end = self.seq_end(&*svc);
            if self.snd_nxt >= seq_end {
                break;
            }
            // Do not resend what the peer SACKed (RFC 2018 §5.1).
            if self.snd_nxt < self.max_abs() {
                if let Some(e) = self.sacked.covering(self.snd_nxt) {
                    self.snd_nxt = e.min(self.max_abs());
                    continue;
                }
            }
            let una = self.una_abs();
            let wnd_edge = una.saturating_add(self.snd_wnd() as u64);
            let cwnd_edge = una.saturating_add(self.cc.cwnd as u64);
            let edge = wnd_edge.min(cwnd_edge);
            if self.snd_nxt >= edge {
                break;
            }
            let remaining = self.data_end(&*svc).saturating_sub(self.snd_nxt);
            if remaining > 0 {
                let mss = self.payload_mss() as u64;
                let len = remaining.min(mss).min(edge - self.snd_nxt);
                // RFC 9293 §3.8.6.2.1 sender SWS avoidance: send only a full segment, all
                // that remains, at least half the largest window, or when nothing is in flight.
                if len < mss
                    && len < remaining
                    && self.snd_nxt != una
                    && len < (self.max_snd_wnd / 2) as u64
                {
                    break;
                }
            }
            let start = self.snd_nxt;
            let is_rexmit = start < self.max_abs();
            let used = self.send_data_at(now, start, edge, &*svc, out);
            if used == 0 {
                break;
            }
            if is_rexmit {
                self.stats.retransmits += 1;
                self.rtt.timing = None; // Karn (RFC 6298 §3)
            } else if self.rtt.timing.is_none() && !self.ts_ok() {
                self.rtt.timing = Some((start + used, now));
            }
            self.snd_nxt = start + used;
            if self.snd_nxt > self.max_abs() {
                let newly = self.snd_nxt - self.max_abs().max(start);
                let fin = (self.fin_abs.is_some_and(|f| f < self.snd_nxt)) as u64;
                self.stats.bytes_out += newly.saturating_sub(fin);
                self.set_snd_max(self.snd_nxt);
            }
            // RFC 6298 §5.1: start the timer when sending data if it is not running.
            if self.timers.rto.is_none() {
                self.timers.rto = Some(now + self.rtt.rto(cfg));
            }
        }
    }

    /// Emit one data (and/or FIN) segment starting at abs `start`, not beyond `edge`.
    /// Returns the sequence space used (payload + FIN); does not move `snd_nxt`.
    pub(super) fn send_data_at<S: ByteStream + ?Sized>(
        &mut self,
        now: Instant,
        start: u64,
        edge: u64,
        svc: &S,
        out: &mut impl SegmentSink,
    ) -> u64 {
        if start == 0 {
            return 0; // the SYN is sent by send_syn
        }
        let data_end = self.data_end(svc);
        let mss = self.payload_mss() as u64;
        let len = data_end.saturating_sub(start).min(edge.saturating_sub(start)).min(mss);
        let end = start + len;
        let fin = self.fin_abs == Some(end) && edge > end;
        if len == 0 && !fin {
            return 0;
        }
        let mut flags = TcpFlags::ACK;
        if fin {
            flags = flags | TcpFlags::FIN;
        }
        if len > 0 && end == data_end {
            flags = flags | TcpFlags::PSH;
        }
        let hdr = self.header(now, flags, self.seq_of(start), svc.rx_space());
        self.emit(&hdr, start - 1, len as usize, svc, out);
        len + fin as u64
    }

    /// Payload bytes per segment: effective MSS minus the options we put on data segments
    /// (RFC 9293 §3.7.1: Eff.snd.MSS excludes TCP options).
    pub(super) fn payload_mss(&self) -> usize {
        let (_, opt_len) = self.sack_option_count();
        let ts = if self.ts_ok() { TS_OPT_LEN } else { 0 };
        (self.mss() as usize).saturating_sub(ts + opt_len).max(1)
    }

    /// (SACK blocks we would send, their option bytes incl. 2 NOPs).
    fn sack_option_count(&self) -> (usize, usize) {
        if !self.sack_ok() {
            return (0, 0);
        }
        let Some(r) = self.ooo.as_ref() else { return (0, 0) };
        if r.is_empty() {
            return (0, 0);
        }
        let mut b = [SackBlock::default(); MAX_SACK_BLOCKS];
        // RFC 2018 §3: 4 blocks fit alone, 3 beside timestamps.
        let max = if self.ts_ok() { 3 } else { 4 };
        let n = r.sack_blocks(self.rcv_nxt(), &mut b[..max]);
        (n, if n > 0 { 4 + 8 * n } else { 0 })
    }

    /// Build a non-SYN header: ports, ACK = RCV.NXT, the advertised window, TS and SACK options.
    /// Sending an ACK satisfies any owed ACK.
    pub(super) fn header(&mut self, now: Instant, flags: TcpFlags, seq: SeqNum, rx_space: usize) -> TcpHeader {
        let window = self.advertise(rx_space);
        let mut options = TcpOptions::default();
        if self.ts_ok() {
            let tsval = self.ts_now(now);
            self.ts_last_sent = tsval;
            options.timestamps = Some((tsval, self.ts_recent()));
        }
        if self.sack_ok() {
            if let Some(r) = self.ooo.as_ref() {
                let max = if self.ts_ok() { 3 } else { 4 };
                let n = r.sack_blocks(self.rcv_nxt(), &mut options.sack_blocks[..max]);
                options.sack_count = n as u8;
            }
        }
        let ack = self.ack_point();
        if flags.ack() {
            self.last_ack_sent = ack;
            self.ack_pending = false;
            self.unacked_segs = 0;
            self.timers.delack = None;
        }
        TcpHeader {
            src_port: self.local_port(),
            dst_port: self.remote_port(),
            seq,
            ack: if flags.ack() { ack } else { SeqNum(0) },
            flags,
            window,
            options,
        }
    }

    /// The window field to send, moving the advertised right edge: never shrink it
    /// (RFC 9293 §3.8.6.2.2 / RFC 7323 §2.4), and move it only in steps of at least
    /// min(BUFF/2, MSS) (receiver SWS avoidance). The field counts from the ACK it goes
    /// with ([`Tcb::ack_point`]): bytes received but not yet acknowledged are inside it.
    fn advertise(&mut self, rx_space: usize) -> u16 {
        let ws = self.rcv_wscale() as u32;
        let cap = 65535u64 << ws;
        let (base, space, cur) = self.window_from_ack(rx_space);
        let space = u64::from(space).min(cap) as u32;
        self.rcv_space_max = self.rcv_space_max.max(space);
        let thresh = (self.rcv_space_max / 2).min(self.mss() as u32).max(1);
        let gran = 1u32 << ws;
        let wnd = if space > cur && space - cur >= thresh {
            (space & !(gran - 1)).max(cur)
        } else {
            cur
        };
        let field = wnd.div_ceil(gran).min(65535);
        let edge = base + (field << ws);
        if edge.gt(self.rcv_adv()) {
            self.set_rcv_adv(edge);
        }
        field as u16
    }

    /// Would the window we could advertise now grow enough to tell the peer unprompted
    /// (RFC 9293 §3.8.6.2.2; Linux-like: from below the SWS threshold, or at least doubling)?
    ///
    /// Only if [`Tcb::advertise`] would really move the window field: a pure ACK that
    /// repeats the last window is a duplicate ACK to the peer (three of them make it
    /// retransmit, and a peer that has closed answers one with a reset). A service whose
    /// room grows outside a segment's arrival (a proxy half, when the other half's peer
    /// acknowledged bytes) asks this on every poll.
    fn window_update_due(&self, rx_space: usize) -> bool {
        let ws = self.rcv_wscale() as u32;
        let (_, space, cur) = self.window_from_ack(rx_space);
        let space = u64::from(space).min(65535u64 << ws) as u32;
        let thresh = (self.rcv_space_max.max(space) / 2).min(self.mss() as u32).max(1);
        let gran = 1u32 << ws;
        let wnd = space & !(gran - 1);
        space > cur && space - cur >= thresh.max(cur) && wnd.div_ceil(gran) > cur.div_ceil(gran)
    }

    /// The ACK a window field counts from, the window the service's room allows from there
    /// (its room plus what was received beyond the ACK), and the window advertised from
    /// there now. Without an acknowledgement limit: RCV.NXT, the room, RCV.WND.
    fn window_from_ack(&self, rx_space: usize) -> (SeqNum, u32, u32) {
        let base = self.ack_point();
        let held = self.rcv_nxt().diff(base).max(0) as u64;
        let space = (rx_space as u64).saturating_add(held).min(u64::from(u32::MAX)) as u32;
        (base, space, self.rcv_adv().diff(base).max(0) as u32)
    }

    /// RFC 9293 §3.8.6.1: with a zero send window, data waiting and nothing in flight, run
    /// the persist timer; cancel it when the window opens.
    fn arm_persist<S: ByteStream + ?Sized>(&mut self, now: Instant, cfg: &TcpConfig, svc: &S) {
        if self.snd_wnd() > 0 || !self.state().is_synchronized() {
            self.timers.persist = None;
            self.persist_backoff = 0;
            return;
        }
        let waiting = self.snd_nxt < self.seq_end(svc);
        if waiting && self.una_abs() == self.max_abs() && self.timers.rto.is_none() {
            if self.timers.persist.is_none() {
                let base = self.rtt.rto(cfg).micros();
                let d = base
                    .checked_shl(self.persist_backoff as u32)
                    .unwrap_or(u64::MAX)
                    .min(cfg.rto_max.micros());
                self.timers.persist = Some(now + crate::time::Duration(d));
            }
        } else {
            self.timers.persist = None;
        }
    }

    /// SYN (SYN-SENT) or SYN-ACK (SYN-RECEIVED) with our options (RFC 7323 §2.2, §3.2;
    /// RFC 2018 §2: in a SYN-ACK only what the peer offered). The window is unscaled.
    pub(super) fn send_syn(&mut self, now: Instant, cfg: &TcpConfig, out: &mut impl SegmentSink) {
        let passive = self.state() == State::SynReceived;
        let mut o = TcpOptions { mss: Some(cfg.mss), ..TcpOptions::default() };
        let tsval = self.ts_now(now);
        if passive {
            if self.peer_wscale {
                o.wscale = Some(self.rcv_wscale());
            }
            o.sack_permitted = self.sack_ok();
            if self.ts_ok() {
                o.timestamps = Some((tsval, self.ts_recent()));
                self.ts_last_sent = tsval;
            }
        } else {
            o.wscale = Some(cfg.wscale.min(14));
            o.sack_permitted = cfg.sack;
            if cfg.timestamps {
                o.timestamps = Some((tsval, 0));
                self.ts_last_sent = tsval;
            }
        }
        let (flags, ack) = if passive {
            (TcpFlags::SYN | TcpFlags::ACK, self.rcv_nxt())
        } else {
            (TcpFlags::SYN, SeqNum(0))
        };
        if passive {
            self.last_ack_sent = self.rcv_nxt();
            // The SYN-ACK's (unscaled) window fixes the first right edge. Set, not max():
            // RCV.ADV starts at 0, and comparing against it is meaningless for half of the
            // sequence space (RFC 1982 order), which once left the edge unset for every peer
            // ISN >= 2^31 and advertised 8 MB windows.
            self.set_rcv_adv(self.rcv_nxt() + u32::from(self.syn_window));
        }
        let hdr = TcpHeader {
            src_port: self.local_port(),
            dst_port: self.remote_port(),
            seq: self.iss(),
            ack,
            flags,
            window: self.syn_window,
            options: o,
        };
        self.stats.segs_out += 1;
        if !out.emit(&hdr, 0, &mut |_| {}) {
            self.stats.emit_failures += 1;
        }
    }

    /// A bare RST with the given sequence (RFC 9293 §3.10.7.3/§3.10.7.4 "send a reset").
    pub(super) fn send_rst(&mut self, seq: SeqNum, out: &mut impl SegmentSink) {
        let hdr = TcpHeader {
            src_port: self.local_port(),
            dst_port: self.remote_port(),
            seq,
            flags: TcpFlags::RST,
            ..TcpHeader::default()
        };
        self.stats.rst_sent += 1;
        self.stats.segs_out += 1;
        if !out.emit(&hdr, 0, &mut |_| {}) {
            self.stats.emit_failures += 1;
        }
    }

    /// ABORT (RFC 9293 §3.10.5): `<SEQ=SND.NXT><CTL=RST>` (ACK set as Linux does), then CLOSED.
    pub(super) fn abort(&mut self, now: Instant, out: &mut impl SegmentSink, send: bool) {
        if send && (self.state().is_synchronized() || self.state() == State::SynReceived) {
            let seq = self.ack_seq();
            let mut hdr = self.header(now, TcpFlags::RST | TcpFlags::ACK, seq, 0);
            hdr.window = 0;
            hdr.options = TcpOptions::default();
            self.stats.rst_sent += 1;
            self.emit_bare(&hdr, out);
        }
        self.close_now();
    }

    /// Enter CLOSED and drop everything transient.
    pub(super) fn close_now(&mut self) {
        self.set_state(State::Closed);
        self.timers = Default::default();
        self.ooo = None;
        self.ack_pending = false;
    }

    fn emit_bare(&mut self, hdr: &TcpHeader, out: &mut impl SegmentSink) {
        self.stats.segs_out += 1;
        if !out.emit(hdr, 0, &mut |_| {}) {
            self.stats.emit_failures += 1;
        }
    }

    /// Emit `hdr` with `len` payload bytes pulled from the service at stream offset `off`.
    fn emit<S: ByteStream + ?Sized>(
        &mut self,
        hdr: &TcpHeader,
        off: u64,
        len: usize,
        svc: &S,
        out: &mut impl SegmentSink,
    ) {
        self.stats.segs_out += 1;
        let ok = out.emit(hdr, len, &mut |buf: &mut [u8]| {
            if buf.is_empty() {
                return;
            }
            let n = svc.read_at(off, buf).min(buf.len());
            // Contract violation by the service; never leave stale bytes.
            buf[n..].fill(0);
        });
        if !ok {
            self.stats.emit_failures += 1;
        }
    }
}
