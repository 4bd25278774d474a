//! Sans-IO TCP core (RFC 9293 plus RFC 7323, 2018, 5681, 6582, 6298, 5961, 6528).
//!
//! Time is passed in (`now`), never read; output goes to a [`SegmentSink`]; payload bytes are
//! pulled from the service ([`ByteStream::read_at`]) on every (re)transmission, so there is no
//! send buffer. One [`Tcb`] is one connection. Split by phase:
//!
//! | file            | what                                                              |
//! |-----------------|-------------------------------------------------------------------|
//! | `tcb.rs`        | the connection record, the state/replication choke point, open, snapshot/restore |
//! | `input.rs`      | `on_segment`: RFC 9293 §3.10.7 "SEGMENT ARRIVES"                  |
//! | `output.rs`     | `poll_send`, segment construction, options, windows, ACKs         |
//! | `timers.rs`     | `on_timer`, `next_deadline`: RTO, delayed ACK, persist, TIME-WAIT, idle |
//! | `rto.rs`        | RFC 6298 RTT estimator                                            |
//! | `congestion.rs` | NewReno (RFC 5681/6582) and the sender's SACK scoreboard          |
//! | `reassembly.rs` | bounded out-of-order store and receiver SACK blocks               |
//! | `isn.rs`        | RFC 6528 ISNs with SipHash-2-4                                    |
//!
//! [`ByteStream::read_at`]: crate::service::ByteStream::read_at

mod congestion;
mod input;
pub mod isn;
mod output;
mod reassembly;
mod rto;
mod tcb;
mod timers;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

pub use tcb::{Tcb, TcbSnapshot};

use crate::seq::SeqNum;
use crate::time::Duration;
use crate::wire::{TcpFlags, TcpHeader, TcpOptions};

/// Per-listener (or per-engine) TCP parameters.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TcpConfig {
    /// MSS we announce and the upper bound of what we send (RFC 9293 §3.7.1).
    pub mss: u16,
    /// Our window-scale shift (RFC 7323 §2); clamped to 14.
    pub wscale: u8,
    /// Offer/accept RFC 7323 timestamps (and PAWS).
    pub timestamps: bool,
    /// Offer/accept RFC 2018 SACK.
    pub sack: bool,
    /// RTO before the first RTT sample (RFC 6298 §2.1: 1 s).
    pub rto_initial: Duration,
    /// Lower RTO bound (RFC 6298 §2.4 says 1 s; 200 ms is the Linux value).
    pub rto_min: Duration,
    /// Upper RTO bound (RFC 6298 §2.5: at least 60 s).
    pub rto_max: Duration,
    /// Delayed-ACK timer (RFC 5681 §4.2: < 500 ms); zero disables delayed ACKs.
    pub delayed_ack: Duration,
    /// TIME-WAIT length (RFC 9293 says 2·MSL; kept short and configurable here).
    pub time_wait: Duration,
    /// A synchronized connection with no accepted segment for this long is reset; zero = off.
    pub idle_timeout: Duration,
    /// SYN or SYN-ACK retransmissions before giving up.
    pub syn_ack_retries: u8,
    /// Data/FIN retransmissions (consecutive RTO expiries) before aborting with RST.
    pub max_retransmits: u8,
    /// Bound of the out-of-order store in bytes; zero = drop all out-of-order data.
    pub max_ooo_bytes: u32,
    /// Initial congestion window in segments (RFC 6928).
    pub initial_cwnd_segments: u32,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            mss: 1460,
            wscale: 7,
            timestamps: true,
            sack: true,
            rto_initial: Duration::from_secs(1),
            rto_min: Duration::from_millis(200),
            rto_max: Duration::from_secs(60),
            delayed_ack: Duration::from_millis(40),
            time_wait: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(300),
            syn_ack_retries: 5,
            max_retransmits: 15,
            max_ooo_bytes: 256 * 1024,
            initial_cwnd_segments: 10,
        }
    }
}

/// Where TCP's output goes: the caller builds the frame (addresses, checksums) around it.
pub trait SegmentSink {
    /// Emit one segment. `payload_len` bytes of payload must be filled by calling `fill(buf)`
    /// with a buffer of exactly that length (TCP's closure copies from `ByteStream::read_at`).
    /// Returns false if no TX buffer was available (segment lost; timers recover).
    fn emit(&mut self, hdr: &TcpHeader, payload_len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool;
}

/// Why a passive open was refused. Small and `Copy`; the caller counts it and, for
/// [`TcpError::AckInListen`], answers with [`reset_for`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TcpError {
    /// RST to a listener: ignore (RFC 9293 §3.10.7.2 first check).
    RstInListen,
    /// ACK to a listener: answer `<SEQ=SEG.ACK><CTL=RST>` (RFC 9293 §3.10.7.2 second check).
    AckInListen,
    /// Neither SYN nor ACK nor RST: drop (RFC 9293 §3.10.7.2 fourth "other" case).
    NotSyn,
    /// SYN combined with FIN, or a zero port: drop (Linux drops SYN+FIN).
    Malformed,
}

/// What `on_segment` did with a segment; the caller counts verdicts by reason.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SegmentVerdict {
    /// Processed (ACK and/or data and/or FIN taken).
    Accepted,
    /// Failed the RFC 9293 §3.10.7.4 acceptability test; an ACK was sent (unless RST).
    OutOfWindow,
    /// Rejected by PAWS (RFC 7323 §5.3 R1); an ACK was sent.
    PawsRejected,
    /// ACK outside [SND.UNA − MAX.SND.WND, SND.NXT] (RFC 5961 §5.2) or, in SYN-SENT /
    /// SYN-RECEIVED, an unacceptable ACK; an ACK or RST was sent.
    BadAck,
    /// No ACK bit in a synchronized state: dropped (RFC 9293 §3.10.7.4 fifth check).
    NoAck,
    /// In-window RST with inexact sequence, or SYN in a synchronized state: challenge ACK
    /// sent (RFC 5961 §3.2, §4.2).
    ChallengeAck,
    /// RST accepted: the connection is now closed.
    RstAccepted,
    /// RST that was not acceptable: silently dropped.
    RstIgnored,
    /// Retransmitted SYN in SYN-RECEIVED: SYN-ACK retransmitted.
    SynAckRetransmitted,
    /// New SYN (higher sequence or newer timestamp) on a TIME-WAIT connection: the caller
    /// may free this Tcb and `accept` afresh (RFC 9293 §3.10.7.4 note, RFC 6191).
    SynInTimeWait,
    /// SYN-SENT: a segment without SYN (and not a RST/bad ACK): dropped.
    Ignored,
    /// The Tcb is closed; the caller should treat the flow as unknown (RFC 9293 §3.10.7.1).
    Closed,
}

/// RFC 9293 §3.3.2 connection states (LISTEN is the listener, not a Tcb).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum State {
    SynSent = 1,
    SynReceived = 2,
    Established = 3,
    FinWait1 = 4,
    FinWait2 = 5,
    Closing = 6,
    TimeWait = 7,
    CloseWait = 8,
    LastAck = 9,
    #[default]
    Closed = 10,
}

impl State {
    /// RFC 9293 "synchronized" states (everything after the handshake).
    pub fn is_synchronized(self) -> bool {
        !matches!(self, State::SynSent | State::SynReceived | State::Closed)
    }
    /// Decode the replicated byte; unknown values map to `Closed`.
    pub fn from_u8(v: u8) -> State {
        match v {
            1 => State::SynSent,
            2 => State::SynReceived,
            3 => State::Established,
            4 => State::FinWait1,
            5 => State::FinWait2,
            6 => State::Closing,
            7 => State::TimeWait,
            8 => State::CloseWait,
            9 => State::LastAck,
            _ => State::Closed,
        }
    }
}

/// Which replicated fields changed since the worker last cleared this (DESIGN §4 deltas).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct DirtyFlags(pub u16);

impl DirtyFlags {
    pub const STATE: DirtyFlags = DirtyFlags(1 << 0);
    /// iss, irs, ports.
    pub const ISS_IRS: DirtyFlags = DirtyFlags(1 << 1);
    /// snd_una and the service's acked offset.
    pub const SND_UNA: DirtyFlags = DirtyFlags(1 << 2);
    /// snd_nxt (highest sequence sent) and the service's sent offset.
    pub const SND_NXT: DirtyFlags = DirtyFlags(1 << 3);
    /// rcv_nxt and the delivered-bytes cursor.
    pub const RCV_NXT: DirtyFlags = DirtyFlags(1 << 4);
    pub const SND_WND: DirtyFlags = DirtyFlags(1 << 5);
    pub const RCV_WND: DirtyFlags = DirtyFlags(1 << 6);
    /// Window scales, MSS, SACK/TS flags, TS offset.
    pub const OPTIONS: DirtyFlags = DirtyFlags(1 << 7);
    pub const TS_RECENT: DirtyFlags = DirtyFlags(1 << 8);
    /// The flow's next hop (the peer's MAC) moved. Set by the stack, not by TCP.
    pub const PEER: DirtyFlags = DirtyFlags(1 << 9);
    pub const ALL: DirtyFlags = DirtyFlags(0x3ff);
    /// The flow was linked to another flow, or its partner ended (`Stack::link`). Set by the
    /// stack, not by TCP; not in `ALL` (a new flow's first image carries its link anyway).
    pub const LINK: DirtyFlags = DirtyFlags(1 << 10);
    /// What a flow is, rather than where it stands: fixed at its creation except for a
    /// re-learned next hop and its link. A change without these travels as a one-record step
    /// delta.
    pub const IDENTITY: DirtyFlags = DirtyFlags(Self::ISS_IRS.0 | Self::OPTIONS.0 | Self::PEER.0 | Self::LINK.0);
    /// Pure send progress: what the client acknowledged, what was sent, windows, the peer's
    /// timestamp. Output need not wait for the standby to have these (`Stack::commit_tag`).
    pub const PROGRESS: DirtyFlags = DirtyFlags(
        Self::SND_UNA.0 | Self::SND_NXT.0 | Self::SND_WND.0 | Self::RCV_WND.0 | Self::TS_RECENT.0,
    );

    #[inline]
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    #[inline]
    pub fn contains(self, o: DirtyFlags) -> bool {
        self.0 & o.0 == o.0
    }
    #[inline]
    pub fn intersects(self, o: DirtyFlags) -> bool {
        self.0 & o.0 != 0
    }
    #[inline]
    pub fn insert(&mut self, o: DirtyFlags) {
        self.0 |= o.0;
    }
    /// Return the set and clear it (what the worker does after emitting a delta).
    #[inline]
    pub fn take(&mut self) -> DirtyFlags {
        core::mem::take(self)
    }
}

impl core::ops::BitOr for DirtyFlags {
    type Output = DirtyFlags;
    #[inline]
    fn bitor(self, o: DirtyFlags) -> DirtyFlags {
        DirtyFlags(self.0 | o.0)
    }
}

/// Per-connection counters; the worker sums them per reason.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct TcbStats {
    pub segs_in: u64,
    pub segs_out: u64,
    /// Payload bytes delivered to the service.
    pub bytes_in: u64,
    /// New payload bytes sent (retransmissions excluded).
    pub bytes_out: u64,
    /// Segments retransmitted for any reason.
    pub retransmits: u64,
    pub rto_timeouts: u64,
    pub fast_retransmits: u64,
    /// Segments retransmitted during recovery because of partial ACKs or SACK holes.
    pub recovery_retransmits: u64,
    pub dup_acks: u64,
    pub ooo_segments: u64,
    /// Out-of-order segments dropped because the store was full or disabled.
    pub ooo_dropped: u64,
    pub challenge_acks: u64,
    pub paws_rejects: u64,
    pub out_of_window: u64,
    /// Segments TIME-WAIT left unanswered: bare ACKs below RCV.NXT, and other old segments
    /// (not a FIN) within the minimum RTO of our ACK of the peer's FIN (also in
    /// `out_of_window` or `paws_rejects`).
    pub time_wait_stale_acks: u64,
    /// Owed ACKs dropped as duplicates while bytes wait for the acknowledgement limit
    /// (`Tcb::ack_point`).
    pub held_acks_suppressed: u64,
    /// Bytes counted as received without arriving: the far side had them
    /// (`ByteStream::take_skipped`, a proxy takeover with `commit = "peer"`).
    pub skipped_in: u64,
    pub bad_acks: u64,
    pub rst_received: u64,
    pub rst_sent: u64,
    pub persist_probes: u64,
    pub syn_ack_retransmits: u64,
    pub idle_timeouts: u64,
    pub retransmit_aborts: u64,
    /// `SegmentSink::emit` returned false.
    pub emit_failures: u64,
}

/// The RST answering a segment that matches no connection (RFC 9293 §3.10.7.1):
/// none for a RST; `<SEQ=SEG.ACK><CTL=RST>` if it had ACK; else
/// `<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>`. Ports are swapped.
pub fn reset_for(hdr: &TcpHeader, payload_len: usize) -> Option<TcpHeader> {
    if hdr.flags.rst() {
        return None;
    }
    let mut r = TcpHeader {
        src_port: hdr.dst_port,
        dst_port: hdr.src_port,
        options: TcpOptions::default(),
        ..TcpHeader::default()
    };
    if hdr.flags.ack() {
        r.seq = hdr.ack;
        r.flags = TcpFlags::RST;
    } else {
        let len = (payload_len as u32)
            .wrapping_add(hdr.flags.syn() as u32)
            .wrapping_add(hdr.flags.fin() as u32);
        r.seq = SeqNum(0);
        r.ack = hdr.seq + len;
        r.flags = TcpFlags::RST | TcpFlags::ACK;
    }
    Some(r)
}
