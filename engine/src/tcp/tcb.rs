//! The connection record. Replicated fields (DESIGN §4: the TCP_REPAIR superset) live in
//! [`Repl`], whose fields are private to this file: every change goes through one of the
//! small setters below, which also marks [`DirtyFlags`]. `set_state` is the only way to change
//! the state. Open (passive/active) and snapshot/restore are here too.

use super::congestion::{NewReno, Scoreboard};
use super::reassembly::Reassembly;
use super::rto::RttEstimator;
use super::{DirtyFlags, SegmentSink, State, TcbStats, TcpConfig, TcpError};
use crate::seq::SeqNum;
use crate::time::{Duration, Instant};
use crate::wire::TcpHeader;

/// RFC 9293 §3.7.1: default send MSS when the peer sent no MSS option.
pub(super) const DEFAULT_MSS: u16 = 536;
/// Smallest send MSS we accept from a peer (Linux TCP_MIN_SND_MSS is 48).
const MIN_MSS: u16 = 64;
/// TSval margin added on restore so the standby's TSvals stay ahead of anything the active
/// engine sent after the last delta (RFC 7323 §5.4 only needs monotonic TSvals).
const RESTORE_TS_MARGIN_MS: u32 = 600_000;

/// Replicated fields. Private: only `Tcb`'s setters in this file write them.
#[derive(Copy, Clone, Debug, Default)]
pub(super) struct Repl {
    state: State,
    local_port: u16,
    remote_port: u16,
    iss: SeqNum,
    irs: SeqNum,
    /// Oldest unacknowledged, as abs offset from ISS (0 = the SYN).
    snd_una: u64,
    /// Highest sequence sent + 1 (abs); what a standby calls SND.NXT.
    snd_max: u64,
    rcv_nxt: SeqNum,
    /// Payload bytes delivered to the service (its receive cursor).
    rcv_delivered: u64,
    /// Send window in bytes (already scaled).
    snd_wnd: u32,
    /// Right edge of the receive window we advertised.
    rcv_adv: SeqNum,
    snd_wscale: u8,
    rcv_wscale: u8,
    /// Effective send MSS (min of ours and the peer's).
    mss: u16,
    sack_ok: bool,
    ts_ok: bool,
    ts_offset: u32,
    ts_recent: u32,
}

/// Plain-data image of the replicated state (DESIGN §4): what the standby needs to continue
/// the connection. RTT estimate, cwnd and the SACK scoreboard are deliberately absent.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct TcbSnapshot {
    pub state: State,
    pub local_port: u16,
    pub remote_port: u16,
    pub iss: SeqNum,
    pub irs: SeqNum,
    pub snd_una: SeqNum,
    /// Highest sequence sent + 1.
    pub snd_nxt: SeqNum,
    pub rcv_nxt: SeqNum,
    /// Send window in bytes (scaled).
    pub snd_wnd: u32,
    /// Receive window last advertised, in bytes (right edge = rcv_nxt + rcv_wnd).
    pub rcv_wnd: u32,
    pub snd_wscale: u8,
    pub rcv_wscale: u8,
    pub mss: u16,
    pub sack_ok: bool,
    pub ts_ok: bool,
    pub ts_offset: u32,
    pub ts_recent: u32,
    /// Last TSval sent (not delta-tracked; restore adds a margin).
    pub ts_last_sent: u32,
    /// Service stream offset of snd_una: output bytes acknowledged (64-bit, no wrap).
    pub tx_acked: u64,
    /// Service stream offset of snd_nxt: output bytes sent at least once.
    pub tx_sent: u64,
    /// Bytes delivered to the service (`on_recv` consumed).
    pub rx_delivered: u64,
}

/// Timer deadlines (RFC 9293 §3.8: retransmission, TIME-WAIT, user/idle; RFC 5681 delayed
/// ACK; §3.8.6.1 persist).
#[derive(Copy, Clone, Debug, Default)]
pub(super) struct Timers {
    pub(super) rto: Option<Instant>,
    pub(super) delack: Option<Instant>,
    pub(super) persist: Option<Instant>,
    pub(super) time_wait: Option<Instant>,
}

/// One TCP connection.
pub struct Tcb {
    /// Replicated fields changed since the worker last took this (it emits deltas).
    pub dirty: DirtyFlags,
    r: Repl,
    // ---- not replicated: transient sender state ----
    /// Next sequence to send (abs); below `snd_max` while retransmitting after an RTO.
    pub(super) snd_nxt: u64,
    /// abs sequence of our FIN once the service closed and all its bytes are queued.
    pub(super) fin_abs: Option<u64>,
    pub(super) snd_wl1: SeqNum,
    pub(super) snd_wl2: SeqNum,
    /// Largest window the peer offered (RFC 5961 §5.2 MAX.SND.WND; SWS Max(SND.WND)).
    pub(super) max_snd_wnd: u32,
    pub(super) rtt: RttEstimator,
    pub(super) cc: NewReno,
    pub(super) sacked: Scoreboard,
    /// RFC 6675-ish: holes below this abs sequence were already retransmitted in this recovery.
    pub(super) rexmit_hi: u64,
    /// Consecutive RTO expiries without progress.
    pub(super) retries: u8,
    pub(super) persist_backoff: u8,
    /// The peer's SYN carried a window-scale option (we echo one in our SYN-ACK).
    pub(super) peer_wscale: bool,
    // ---- not replicated: transient receiver state ----
    pub(super) ooo: Option<Box<Reassembly>>,
    /// Sequence of the peer's FIN once seen (possibly ahead of rcv_nxt).
    pub(super) peer_fin: Option<SeqNum>,
    /// An ACK is owed; sent at `timers.delack` (== now for "immediately").
    pub(super) ack_pending: bool,
    /// Full-sized segments received since our last ACK (RFC 5681 §4.2 "every second").
    pub(super) unacked_segs: u8,
    /// RCV.NXT in the last ACK we sent (RFC 7323 §4.3 Last.ACK.sent); with an
    /// acknowledgement limit, the [`Tcb::ack_point`] it carried.
    pub(super) last_ack_sent: SeqNum,
    /// The service's acknowledgement limit (`ByteStream::ack_limit`, a stream offset of the
    /// received stream), as of the current call: see [`Tcb::ack_point`].
    pub(super) ack_limit: Option<u64>,
    pub(super) ts_recent_age: Instant,
    pub(super) ts_last_sent: u32,
    /// Restored at a takeover: the first TSval of this engine's clock. An echo of anything
    /// older is the old active's and gives no RTT sample (`echoes_our_clock`).
    pub(super) ts_clock_from: Option<u32>,
    /// Largest `rx_space` the service ever reported (receiver SWS threshold).
    pub(super) rcv_space_max: u32,
    /// The (unscaled) window of our SYN or SYN-ACK, which fixes the first right edge: at most
    /// the service's room (a proxy half's buffer may be smaller than 64 KiB).
    pub(super) syn_window: u16,
    /// When we last acknowledged the peer's FIN (TIME-WAIT re-ACKs are paced by it).
    pub(super) fin_acked_at: Instant,
    /// SYN retransmissions before an active open gives up (`None`: `syn_ack_retries`).
    pub(super) syn_retries: Option<u8>,
    pub(super) last_rx: Instant,
    /// Copied from the config so `next_deadline` needs none.
    pub(super) idle_timeout: Duration,
    pub(super) timers: Timers,
    pub(super) stats: TcbStats,
}

impl Tcb {
    fn blank(cfg: &TcpConfig, now: Instant, local_port: u16, remote_port: u16, iss: SeqNum) -> Tcb {
        let mss = cfg.mss.max(MIN_MSS);
        let ts_offset = iss.0.rotate_left(16) ^ 0x9e37_79b9;
        Tcb {
            dirty: DirtyFlags::ALL,
            r: Repl {
                state: State::Closed,
                local_port,
                remote_port,
                iss,
                mss,
                // RFC 7323 §5.4: a per-connection TSval offset; derived from the (keyed) ISN.
                ts_offset,
                ..Repl::default()
            },
            snd_nxt: 0,
            fin_abs: None,
            snd_wl1: SeqNum(0),
            snd_wl2: SeqNum(0),
            max_snd_wnd: 0,
            rtt: RttEstimator::new(cfg),
            cc: NewReno::new(mss as u32, cfg.initial_cwnd_segments),
            sacked: Scoreboard::default(),
            rexmit_hi: 0,
            retries: 0,
            persist_backoff: 0,
            peer_wscale: false,
            ooo: None,
            peer_fin: None,
            ack_pending: false,
            unacked_segs: 0,
            last_ack_sent: SeqNum(0),
            ack_limit: None,
            ts_recent_age: now,
            // What a segment sent now carries: a replica made before the first segment left
            // (an opened flow's image precedes its SYN) restores its clock from it, so the
            // SYN's TSval is never newer than what the new active sends next (it was 0,
            // and the resumed handshake's ACK went back in time for half the flows: the
            // peer's PAWS check dropped it and the connection never completed).
            ts_last_sent: (now.millis() as u32).wrapping_add(ts_offset),
            ts_clock_from: None,
            rcv_space_max: 0,
            syn_window: u16::MAX,
            fin_acked_at: Instant::ZERO,
            syn_retries: None,
            last_rx: now,
            idle_timeout: cfg.idle_timeout,
            timers: Timers::default(),
            stats: TcbStats::default(),
        }
    }

    /// Passive open: a SYN arrived for a listening VIP:port (flow lookup missed). Validates it,
    /// records options, sends SYN-ACK (RFC 9293 §3.10.7.2, LISTEN state).
    pub fn accept(
        now: Instant,
        cfg: &TcpConfig,
        syn: &TcpHeader,
        isn: SeqNum,
        out: &mut impl SegmentSink,
    ) -> Result<Tcb, TcpError> {
        Tcb::accept_with_window(now, cfg, syn, isn, usize::MAX, out)
    }

    /// [`Tcb::accept`] whose SYN-ACK offers at most `rx_space` bytes (the service's room).
    pub fn accept_with_window(
        now: Instant,
        cfg: &TcpConfig,
        syn: &TcpHeader,
        isn: SeqNum,
        rx_space: usize,
        out: &mut impl SegmentSink,
    ) -> Result<Tcb, TcpError> {
        let f = syn.flags;
        // §3.10.7.2 first: "An incoming RST segment could not be valid ... ignored."
        if f.rst() {
            return Err(TcpError::RstInListen);
        }
        // §3.10.7.2 second: "Any acknowledgment is bad if it arrives on a connection still in
        // the LISTEN state" -> caller sends <SEQ=SEG.ACK><CTL=RST>.
        if f.ack() {
            return Err(TcpError::AckInListen);
        }
        // §3.10.7.2 fourth: "any other control or text-bearing segment (not containing SYN)
        // must have an ACK and thus would be discarded".
        if !f.syn() {
            return Err(TcpError::NotSyn);
        }
        if f.fin() || syn.src_port == 0 || syn.dst_port == 0 {
            return Err(TcpError::Malformed);
        }
        let mut t = Tcb::blank(cfg, now, syn.dst_port, syn.src_port, isn);
        t.set_syn_window(rx_space);
        // §3.10.7.2 third: RCV.NXT = SEG.SEQ+1, IRS = SEG.SEQ, ISS selected, SND.NXT = ISS+1,
        // SND.UNA = ISS. (Data in the SYN is not accepted: no TFO; the peer retransmits it.)
        t.set_irs(syn.seq);
        t.set_rcv_nxt(syn.seq + 1, 0);
        t.negotiate(cfg, syn, now);
        // RFC 7323 §2.2: the window field of a SYN is never scaled.
        t.set_snd_wnd(syn.window as u32);
        t.snd_wl1 = syn.seq;
        t.snd_wl2 = isn;
        t.max_snd_wnd = syn.window as u32;
        t.set_state(State::SynReceived);
        t.send_syn(now, cfg, out);
        t.snd_nxt = 1;
        t.set_snd_max(1);
        t.timers.rto = Some(now + t.rtt.rto(cfg));
        Ok(t)
    }

    /// Active open (RFC 9293 §3.10.1 OPEN call, active): sends SYN, enters SYN-SENT.
    pub fn connect(
        now: Instant,
        cfg: &TcpConfig,
        local_port: u16,
        remote_port: u16,
        isn: SeqNum,
        out: &mut impl SegmentSink,
    ) -> Tcb {
        let mut t = Tcb::syn_sent(now, cfg, local_port, remote_port, isn);
        t.send_syn_now(now, cfg, out);
        t
    }

    /// Active open whose SYN is not sent yet: SYN-SENT with ISS chosen, nothing sent, no
    /// timer running (so nothing can fire). The engine opens a connection this way while the
    /// next hop is being resolved; [`Tcb::send_syn_now`] sends the SYN once it is.
    pub fn syn_sent(now: Instant, cfg: &TcpConfig, local_port: u16, remote_port: u16, isn: SeqNum) -> Tcb {
        let mut t = Tcb::blank(cfg, now, local_port, remote_port, isn);
        t.set_state(State::SynSent);
        // SND.NXT = ISS + 1 (RFC 9293 §3.10.1): the SYN occupies abs 0, sent or not.
        t.snd_nxt = 1;
        t.set_snd_max(1);
        t
    }

    /// Offer at most `rx_space` bytes in our SYN (before [`Tcb::send_syn_now`]): the first
    /// window a peer may fill before it hears from us again.
    pub fn set_syn_window(&mut self, rx_space: usize) {
        self.syn_window = rx_space.clamp(1, usize::from(u16::MAX)) as u16;
    }

    /// The timestamp offset of an active open, before its SYN is sent (`Stack::connect`: the
    /// wall clock's ms at engine time zero, see `Stack::set_wall_clock`).
    pub fn set_ts_offset(&mut self, offset: u32) {
        // `ts_last_sent` says what a segment sent at the creation would carry: same instant,
        // new offset.
        self.ts_last_sent = self.ts_last_sent.wrapping_sub(self.r.ts_offset).wrapping_add(offset);
        self.r.ts_offset = offset;
    }

    /// Give up an active open after `n` SYN retransmissions (instead of `syn_ack_retries`):
    /// a proxy's connect timeout.
    pub fn set_syn_retries(&mut self, n: u8) {
        self.syn_retries = Some(n);
    }

    /// SYN-SENT: send our SYN (ISS, ports, our options) and restart the retransmission
    /// timer from `now`. For the first SYN of [`Tcb::syn_sent`], and at a takeover, where the
    /// replica's SYN is sent again unchanged (to the peer it is a retransmission: same ISS,
    /// same ports). Returns false, sending nothing, in any other state.
    pub fn send_syn_now(&mut self, now: Instant, cfg: &TcpConfig, out: &mut impl SegmentSink) -> bool {
        if self.state() != State::SynSent {
            return false;
        }
        self.send_syn(now, cfg, out);
        // SND.NXT = ISS + 1 (RFC 9293 §3.10.1), also for a SYN-SENT replica (`restore`
        // leaves SND.NXT at SND.UNA, the SYN).
        self.snd_nxt = self.snd_nxt.max(1);
        self.timers.rto = Some(now + self.rtt.rto(cfg));
        true
    }

    /// Record the peer's SYN options and derive the negotiated ones (RFC 9293 §3.7.1 MSS,
    /// RFC 7323 §2.2 window scale / §3.2 timestamps only if both sent them, RFC 2018 §2 SACK).
    pub(super) fn negotiate(&mut self, cfg: &TcpConfig, syn: &TcpHeader, now: Instant) {
        let o = &syn.options;
        let peer_mss = o.mss.unwrap_or(DEFAULT_MSS);
        self.r.mss = peer_mss.min(cfg.mss).max(MIN_MSS);
        self.peer_wscale = o.wscale.is_some();
        match o.wscale {
            // RFC 7323 §2.3: shift counts above 14 are treated as 14.
            Some(ws) => {
                self.r.snd_wscale = ws.min(14);
                self.r.rcv_wscale = cfg.wscale.min(14);
            }
            None => {
                self.r.snd_wscale = 0;
                self.r.rcv_wscale = 0;
            }
        }
        self.r.sack_ok = cfg.sack && o.sack_permitted;
        match (cfg.timestamps, o.timestamps) {
            (true, Some((tsval, _))) => {
                self.r.ts_ok = true;
                self.r.ts_recent = tsval;
                self.ts_recent_age = now;
            }
            _ => self.r.ts_ok = false,
        }
        self.cc = NewReno::new(self.r.mss as u32, cfg.initial_cwnd_segments);
        self.dirty.insert(DirtyFlags::OPTIONS);
        self.dirty.insert(DirtyFlags::TS_RECENT);
    }

    // ------------------------------------------------------------------ choke point
    /// The only way to change the state.
    pub(super) fn set_state(&mut self, s: State) {
        if self.r.state != s {
            self.r.state = s;
            self.dirty.insert(DirtyFlags::STATE);
        }
    }
    pub(super) fn set_irs(&mut self, irs: SeqNum) {
        self.r.irs = irs;
        self.dirty.insert(DirtyFlags::ISS_IRS);
    }
    pub(super) fn set_snd_una(&mut self, abs: u64) {
        if self.r.snd_una != abs {
            self.r.snd_una = abs;
            self.dirty.insert(DirtyFlags::SND_UNA);
        }
    }
    pub(super) fn set_snd_max(&mut self, abs: u64) {
        if self.r.snd_max != abs {
            self.r.snd_max = abs;
            self.dirty.insert(DirtyFlags::SND_NXT);
        }
    }
    /// Advance RCV.NXT; `delivered` payload bytes were consumed by the service.
    pub(super) fn set_rcv_nxt(&mut self, rcv_nxt: SeqNum, delivered: u64) {
        if self.r.rcv_nxt != rcv_nxt || delivered != 0 {
            self.r.rcv_nxt = rcv_nxt;
            self.r.rcv_delivered = self.r.rcv_delivered.wrapping_add(delivered);
            self.dirty.insert(DirtyFlags::RCV_NXT);
        }
    }
    pub(super) fn set_snd_wnd(&mut self, wnd: u32) {
        if self.r.snd_wnd != wnd {
            self.r.snd_wnd = wnd;
            self.dirty.insert(DirtyFlags::SND_WND);
        }
    }
    pub(super) fn set_rcv_adv(&mut self, edge: SeqNum) {
        if self.r.rcv_adv != edge {
            self.r.rcv_adv = edge;
            self.dirty.insert(DirtyFlags::RCV_WND);
        }
    }
    pub(super) fn set_ts_recent(&mut self, ts: u32, now: Instant) {
        self.ts_recent_age = now;
        if self.r.ts_recent != ts {
            self.r.ts_recent = ts;
            self.dirty.insert(DirtyFlags::TS_RECENT);
        }
    }

    // ------------------------------------------------------------------ read access
    pub fn state(&self) -> State {
        self.r.state
    }
    /// The caller may free the flow.
    pub fn is_closed(&self) -> bool {
        self.r.state == State::Closed
    }
    pub fn stats(&self) -> &TcbStats {
        &self.stats
    }
    /// Our SYN (or SYN-ACK) was acknowledged: the connection was synchronized at some point,
    /// whatever its state now.
    pub fn syn_acked(&self) -> bool {
        self.r.snd_una > 0
    }
    pub fn local_port(&self) -> u16 {
        self.r.local_port
    }
    pub fn remote_port(&self) -> u16 {
        self.r.remote_port
    }
    pub fn iss(&self) -> SeqNum {
        self.r.iss
    }
    pub fn irs(&self) -> SeqNum {
        self.r.irs
    }
    pub fn rcv_nxt(&self) -> SeqNum {
        self.r.rcv_nxt
    }
    /// SND.UNA as a sequence number.
    pub fn snd_una(&self) -> SeqNum {
        self.seq_of(self.r.snd_una)
    }
    /// Highest sequence sent + 1.
    pub fn snd_max(&self) -> SeqNum {
        self.seq_of(self.r.snd_max)
    }
    pub fn snd_wnd(&self) -> u32 {
        self.r.snd_wnd
    }
    /// Effective send MSS.
    pub fn mss(&self) -> u16 {
        self.r.mss
    }
    pub fn cwnd(&self) -> u32 {
        self.cc.cwnd
    }
    pub fn srtt(&self) -> Option<Duration> {
        self.rtt.srtt()
    }
    pub fn rto(&self, cfg: &TcpConfig) -> Duration {
        self.rtt.rto(cfg)
    }
    pub fn sack_enabled(&self) -> bool {
        self.r.sack_ok
    }
    pub fn timestamps_enabled(&self) -> bool {
        self.r.ts_ok
    }
    /// (send shift, receive shift); both 0 unless negotiated.
    pub fn window_scales(&self) -> (u8, u8) {
        (self.r.snd_wscale, self.r.rcv_wscale)
    }
    pub(super) fn una_abs(&self) -> u64 {
        self.r.snd_una
    }
    pub(super) fn max_abs(&self) -> u64 {
        self.r.snd_max
    }
    pub(super) fn rcv_adv(&self) -> SeqNum {
        self.r.rcv_adv
    }
    pub(super) fn snd_wscale(&self) -> u8 {
        self.r.snd_wscale
    }
    pub(super) fn rcv_wscale(&self) -> u8 {
        self.r.rcv_wscale
    }
    pub(super) fn ts_ok(&self) -> bool {
        self.r.ts_ok
    }
    pub(super) fn sack_ok(&self) -> bool {
        self.r.sack_ok
    }
    pub(super) fn ts_recent(&self) -> u32 {
        self.r.ts_recent
    }
    /// Our TSval clock: ms from `now` plus the per-connection offset (RFC 7323 §5.4).
    pub(super) fn ts_now(&self, now: Instant) -> u32 {
        (now.millis() as u32).wrapping_add(self.r.ts_offset)
    }
    /// Sequence number of an abs position.
    #[inline]
    pub(super) fn seq_of(&self, abs: u64) -> SeqNum {
        self.r.iss + abs as u32
    }
    /// What our ACKs acknowledge: RCV.NXT, or less while the service limits it
    /// (`ByteStream::ack_limit`: a proxy half with `commit = "peer"` acknowledges its
    /// peer's bytes once the other half's peer has them). Bytes between the two are
    /// received and passed on, but the peer keeps them (and retransmits them) until they
    /// are acknowledged. The peer's FIN is acknowledged only with every byte before it (it
    /// is not even processed before: `process_fin`). The right edge of the window stays
    /// where RCV.NXT put it.
    pub fn ack_point(&self) -> SeqNum {
        match self.ack_limit {
            Some(l) if l < self.r.rcv_delivered => self.r.rcv_nxt - (self.r.rcv_delivered - l).min(u64::from(u32::MAX >> 1)) as u32,
            _ => self.r.rcv_nxt,
        }
    }
    /// Whether received bytes wait for the service's acknowledgement limit
    /// ([`Tcb::ack_point`] below RCV.NXT).
    pub(super) fn ack_held(&self) -> bool {
        self.ack_limit.is_some_and(|l| l < self.r.rcv_delivered)
    }
    /// Bytes received and delivered to the service (its receive stream offset).
    pub fn rx_delivered(&self) -> u64 {
        self.r.rcv_delivered
    }
    /// RCV.WND as currently advertised (never negative).
    pub(super) fn rcv_wnd(&self) -> u32 {
        self.r.rcv_adv.diff(self.r.rcv_nxt).max(0) as u32
    }

    // ------------------------------------------------------------------ replication
    /// Takeover from a replica whose send progress lags (progress is replicated without
    /// holding output): the client acknowledges `ack`, beyond SND.MAX of the replica. The old
    /// active sent the bytes below `ack`, and since output is a deterministic function of the
    /// stream offset they are exactly the service's bytes there; so if `ack` lies within what
    /// the service has produced (`tx_end`, a stream offset), or acknowledges our queued FIN
    /// right after it, record them as sent and let the ACK be processed normally. (An ACK of
    /// the FIN proves the old active sent it: FIN-WAIT-1 with the FIN behind unsent data is
    /// the common case of an HTTP/1.0 or `Connection: close` response.) Returns false
    /// (nothing changed) if `ack` is not beyond SND.MAX or beyond everything there is to send.
    pub fn catch_up_sent(&mut self, ack: SeqNum, tx_end: u64) -> bool {
        let ahead = ack.diff(self.snd_max());
        if ahead <= 0 || !self.r.state.is_synchronized() {
            return false;
        }
        let abs = self.r.snd_max + ahead as u64;
        let limit = match self.fin_abs {
            Some(f) => f + 1,
            None => tx_end + 1,
        };
        if abs > limit {
            return false;
        }
        self.set_snd_max(abs);
        true
    }

    /// Stream offset our peer acknowledged (`TcbSnapshot::tx_acked`).
    pub fn tx_acked(&self) -> u64 {
        self.r.snd_una.saturating_sub(1)
    }

    /// ABORT (RFC 9293 §3.10.5): send `<SEQ=SND.NXT><CTL=RST>` if the connection is
    /// synchronized (or SYN-RECEIVED), then CLOSED. A linked partner's reset propagates so.
    pub fn reset(&mut self, now: Instant, out: &mut impl SegmentSink) {
        self.abort(now, out, true);
    }

    /// Image of the replicated state.
    pub fn snapshot(&self) -> TcbSnapshot {
        let r = &self.r;
        // Stream offset = abs - 1 (the SYN occupies abs 0); saturating for SYN states.
        let off = |abs: u64| abs.saturating_sub(1);
        TcbSnapshot {
            state: r.state,
            local_port: r.local_port,
            remote_port: r.remote_port,
            iss: r.iss,
            irs: r.irs,
            snd_una: self.seq_of(r.snd_una),
            snd_nxt: self.seq_of(r.snd_max),
            rcv_nxt: r.rcv_nxt,
            snd_wnd: r.snd_wnd,
            rcv_wnd: self.rcv_wnd(),
            snd_wscale: r.snd_wscale,
            rcv_wscale: r.rcv_wscale,
            mss: r.mss,
            sack_ok: r.sack_ok,
            ts_ok: r.ts_ok,
            ts_offset: r.ts_offset,
            ts_recent: r.ts_recent,
            ts_last_sent: self.ts_last_sent,
            tx_acked: off(r.snd_una),
            tx_sent: off(r.snd_max),
            rx_delivered: r.rcv_delivered,
        }
    }

    /// Rebuild a connection on the standby from a snapshot (DESIGN §4 takeover). Sending
    /// resumes from SND.UNA (go-back-N; the peer's next ACK tells us where it really is);
    /// RTT, cwnd and SACK state start fresh. The caller probes with [`Tcb::send_probe`].
    ///
    /// `svc_closed_at`: where the (replayed) service's output ends, if it has closed
    /// (`ByteStream::tx_end` once `tx_closed`). Our FIN goes right after that byte, wherever
    /// the replicated send progress stands: in FIN-WAIT-1, CLOSING and LAST-ACK the FIN was
    /// *queued* (RFC 9293 §3.10.4: the state changes when the user closes), and it may still
    /// sit behind megabytes of unsent data (DESIGN §6).
    pub fn restore(cfg: &TcpConfig, s: &TcbSnapshot, now: Instant, svc_closed_at: Option<u64>) -> Tcb {
        let mut t = Tcb::blank(cfg, now, s.local_port, s.remote_port, s.iss);
        // abs = stream offset + 1, plus a FIN bit when the sequence says one is covered.
        let unwrap = |off: u64, seq: SeqNum| -> u64 {
            let low = seq.0.wrapping_sub(s.iss.0);
            let extra = low.wrapping_sub(off.wrapping_add(1) as u32) as u64;
            off + 1 + if extra <= 1 { extra } else { 0 }
        };
        let (una, max) = match s.state {
            State::SynSent | State::SynReceived => (0, 1),
            _ => (unwrap(s.tx_acked, s.snd_una), unwrap(s.tx_sent, s.snd_nxt)),
        };
        let max = max.max(una);
        // Where our FIN is. FIN-WAIT-2 and TIME-WAIT: the client acknowledged it, so it is
        // the last sequence sent. FIN-WAIT-1, CLOSING, LAST-ACK: it was queued after the
        // service's last byte and has been sent iff SND.MAX is beyond that byte. (A service
        // that has not closed in those states cannot be: its replay diverged. Then the FIN
        // is put where the old rule put it, at the last sequence sent.) It is never below what
        // the client acknowledged, and nothing was sent beyond it.
        let fin_abs = match s.state {
            State::FinWait2 | State::TimeWait => Some(max.saturating_sub(1)),
            State::FinWait1 | State::Closing | State::LastAck => {
                Some(svc_closed_at.map_or(max.saturating_sub(1), |end| end.saturating_add(1)))
            }
            _ => None,
        }
        .map(|f| f.max(una.saturating_sub(1)));
        let max = fin_abs.map_or(max, |f| max.min(f + 1));
        t.r = Repl {
            state: s.state,
            local_port: s.local_port,
            remote_port: s.remote_port,
            iss: s.iss,
            irs: s.irs,
            snd_una: una,
            snd_max: max,
            rcv_nxt: s.rcv_nxt,
            rcv_delivered: s.rx_delivered,
            snd_wnd: s.snd_wnd,
            rcv_adv: s.rcv_nxt + s.rcv_wnd,
            snd_wscale: s.snd_wscale.min(14),
            rcv_wscale: s.rcv_wscale.min(14),
            mss: s.mss.max(MIN_MSS),
            sack_ok: s.sack_ok,
            ts_ok: s.ts_ok,
            ts_offset: s
                .ts_last_sent
                .wrapping_add(RESTORE_TS_MARGIN_MS)
                .wrapping_sub(now.millis() as u32),
            ts_recent: s.ts_recent,
        };
        t.dirty = DirtyFlags::ALL;
        t.ts_clock_from = Some(t.ts_now(now));
        t.peer_wscale = s.snd_wscale != 0 || s.rcv_wscale != 0;
        t.snd_nxt = una;
        t.snd_wl1 = s.rcv_nxt;
        t.snd_wl2 = s.snd_una;
        t.max_snd_wnd = s.snd_wnd;
        t.last_ack_sent = s.rcv_nxt;
        t.cc = NewReno::new(t.r.mss as u32, cfg.initial_cwnd_segments);
        t.fin_abs = fin_abs;
        if s.state == State::TimeWait {
            t.timers.time_wait = Some(now + cfg.time_wait);
        } else if una < max || matches!(s.state, State::SynSent | State::SynReceived) {
            t.timers.rto = Some(now + t.rtt.rto(cfg));
        }
        t
    }
}
