//! Delta records: the fixed-size, versioned, little-endian wire layout of every replicated
//! state change, packed into 64-byte ring [`Record`](crate::ring::Record)s.
//!
//! A delta is 1..=[`MAX_DELTA_RECORDS`] consecutive records; the first starts with a
//! 24-byte [header](#header). A delta's bytes are its records' words, each word
//! little-endian (`byte[8*i + j]` is bits `8*j..8*j+8` of word `i`), so the same layout
//! serves the ring (words) and the replication link (bytes) without translation. All
//! packing is explicit `to_le_bytes`/`from_le_bytes`; there is no serde and no `unsafe`.
//!
//! Multi-record deltas ([`FLOW_STATE_RECORDS`] for flow state, up to
//! [`MAX_DATA_RECORDS`] for data) must be pushed with
//! [`Producer::try_push_many`](crate::ring::Producer::try_push_many) so a delta is never
//! split across a publish.
//!
//! # Header
//! ```text
//! byte  0      version      u8   = DELTA_VERSION
//! byte  1      kind         u8   DeltaKind (0 is never valid: catches zeroed memory)
//! byte  2      records      u8   records in this delta, header included
//! byte  3      state / rsvd u8   FlowStep: the TCP state; other kinds: 0 on encode,
//!                                 ignored on decode
//! byte  4      worker       u8   worker (lcore) index that produced the delta
//! byte  5      group        u8   ownership group of the flow (its VIP's); the session
//!                                 replicating that group carries the delta. Barrier: 0
//! bytes 6..8   body_len     u16  Data: payload bytes; other kinds: 0
//! bytes 8..12  slot         u32  flow-table slot
//! bytes 12..16 generation   u32  slot generation (a reused slot gets a new one)
//! bytes 16..24 seq          u64  per-worker delta sequence number
//! ```
//! # Bodies (byte offsets from the start of the delta)
//! ```text
//! FlowNew / FlowUpdate (3 records, 192 bytes)
//!   24 state u8 | 25 flags u8 | 26 snd_wscale u8 | 27 rcv_wscale u8
//!   28 mss u16 | 30 service_id u16
//!   32 iss | 36 irs | 40 snd_una | 44 snd_nxt | 48 rcv_nxt | 52 snd_wnd | 56 rcv_wnd
//!   60 snd_wl1 | 64 snd_wl2 | 68 rcv_wup | 72 max_window | 76 ts_offset | 80 ts_recent
//!                                                                      (all u32)
//!   84 remote_ip [16] | 100 remote_port u16 | 102 local_ip [16] | 118 local_port u16
//!   120 peer_mac [6] | 126 reserved [2] | 128 service_cursor [64]
//!   service_cursor as written from an engine FlowImage (FlowStateRec::from_image):
//!     128 tcb.local_port u16 | 130 tcb.remote_port u16 | 132 vip_mac [6] | 138 reserved [2]
//!     140 ts_last_sent u32 | 144 tx_acked u64 | 152 tx_sent u64 | 160 rx_delivered u64
//!     168 origin u8 (0 accepted by its listener, 1 opened by the engine)
//!     169 linked u8 (0 no, 1 yes) | 170 reserved [2]
//!     172 link_slot u32 | 176 link_generation u32 (the other half of a linked pair, by its
//!       slot on the same worker; 0 when not linked)
//!     180 listener_fp u64 (the listener's fingerprint: address and kind, hashed; the
//!       standby's listener of the same service when the lists differ) | 188..192 reserved
//!     service_id (30) holds the listener index (for an opened flow: whose service it runs)
//! Data (1..=MAX_DATA_RECORDS records)
//!   24 offset u64 | 32 payload [body_len], zero-padded to the record boundary
//! SvcImage (the Data layout; one chunk of a service image, join snapshot)
//!   24 chunk_offset u32 | 28 image_len u32 | 32 chunk [body_len], zero-padded
//!   (DataRec::offset holds `image_len << 32 | chunk_offset`; see svc_image_offset)
//! FlowStep (1 record): a flow's state changed, its identity did not
//!   24 snd_una | 28 snd_nxt | 32 rcv_nxt | 36 snd_wnd | 40 rcv_wnd | 44 ts_recent
//!   48 ts_last_sent | 52 tx_acked lo | 56 tx_sent lo | 60 rx_delivered lo    (all u32)
//!   Everything else is as in the flow's last FlowNew/FlowUpdate. The three stream offsets
//!   travel as their low 32 bits; they only grow, by less than 2^31 between two records of
//!   a flow, and the standby extends them from its replica (FlowStepRec::apply_to).
//! FlowClose (1 record)
//!   24 reason u8 | rest reserved
//! Barrier (1 record; slot and generation 0 by convention)
//!   24 token u64 | rest reserved
//! ```
//! Reserved bytes are written as 0 and ignored on decode. Any change to the meaning or
//! place of a field bumps [`DELTA_VERSION`].

use crate::ring::RECORD_BYTES;
use std::fmt;

/// Layout version written in byte 0 of every delta. Decoding any other value fails with
/// [`DeltaError::Version`].
/// Version 2 added the `SvcImage` kind, version 3 `FlowStep`, version 4 a flow state's
/// origin and link (bytes 168..180, reserved before: a version-3 standby would read an opened
/// or linked flow as a plain accepted one). The sync protocol's `PROTO_VERSION` changes with
/// it, so that peers of different layouts are refused at their hello instead of failing on
/// their first delta. Version 5 splits the worker field (bytes 4..6) into the worker (byte 4)
/// and the flow's ownership group (byte 5), by which the sync core routes a delta to the
/// session that replicates its group. Version 6 adds the listener's fingerprint (bytes
/// 180..188): after a live reload the two engines' listener lists may differ in order.
pub const DELTA_VERSION: u8 = 6;
/// Bytes of the common header at the start of every delta.
pub const HEADER_BYTES: usize = 24;
/// Records of a `FlowNew` / `FlowUpdate` delta.
pub const FLOW_STATE_RECORDS: usize = 3;
/// Length of the opaque service cursor carried in flow state.
pub const SERVICE_CURSOR_LEN: usize = 64;
/// Most records one `Data` delta may span.
pub const MAX_DATA_RECORDS: usize = 24;
/// Bytes before the payload in a `Data` delta: header + stream offset.
pub const DATA_PREFIX_BYTES: usize = HEADER_BYTES + 8;
/// Most payload bytes one `Data` delta carries: `24 * 64 - 32 = 1504`, at least one
/// 1460-byte MSS. Larger runs of bytes are split into several `Data` deltas.
pub const MAX_DATA_PAYLOAD: usize = MAX_DATA_RECORDS * RECORD_BYTES - DATA_PREFIX_BYTES;
/// Most records any delta spans; a `[Record; MAX_DELTA_RECORDS]` holds any delta.
pub const MAX_DELTA_RECORDS: usize = MAX_DATA_RECORDS;

/// Flags byte (offset 25) bit: SACK permitted (RFC 2018) was negotiated.
const FLAG_SACK_OK: u8 = 1 << 0;
/// Timestamps (RFC 7323) were negotiated.
const FLAG_TS_OK: u8 = 1 << 1;
/// Window scaling (RFC 7323) was negotiated.
const FLAG_WSCALE_OK: u8 = 1 << 2;
const FLAGS_KNOWN: u8 = FLAG_SACK_OK | FLAG_TS_OK | FLAG_WSCALE_OK;

// The FlowState layout above must fill exactly FLOW_STATE_RECORDS records.
const _: () = assert!(128 + SERVICE_CURSOR_LEN == FLOW_STATE_RECORDS * RECORD_BYTES);
const _: () = assert!(MAX_DATA_RECORDS <= u8::MAX as usize);
const _: () = assert!(MAX_DATA_PAYLOAD <= u16::MAX as usize);

/// The kind byte of a delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DeltaKind {
    /// A flow was created; full state.
    FlowNew = 1,
    /// A flow's replicated state changed; full state.
    FlowUpdate = 2,
    /// Received stream bytes the service has not yet turned into output.
    Data = 3,
    /// A flow ended; its slot may be reused under a new generation.
    FlowClose = 4,
    /// Heartbeat / barrier: no flow, marks a point in the worker's delta stream.
    Barrier = 5,
    /// One chunk of a flow's complete service image (join snapshot); `Data` layout.
    SvcImage = 6,
    /// A flow's replicated state changed, its identity did not; 1 record.
    FlowStep = 7,
}

impl DeltaKind {
    /// The kind for a kind byte, if it is one this version knows.
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::FlowNew,
            2 => Self::FlowUpdate,
            3 => Self::Data,
            4 => Self::FlowClose,
            5 => Self::Barrier,
            6 => Self::SvcImage,
            7 => Self::FlowStep,
            _ => return None,
        })
    }
}

/// Why decoding (or encoding) a delta failed. Small and `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeltaError {
    /// The delta was written with another layout version.
    Version {
        /// Version byte found.
        got: u8,
        /// The version this build reads and writes ([`DELTA_VERSION`]).
        expected: u8,
    },
    /// The kind byte is not a [`DeltaKind`].
    Kind(u8),
    /// Fewer records are present than the delta needs (for decode: wait for more).
    Truncated {
        /// Records the delta needs.
        need: usize,
        /// Records present.
        have: usize,
    },
    /// The header's record count does not match what its kind and length require.
    RecordCount {
        /// The delta's kind.
        kind: DeltaKind,
        /// Record count in the header.
        got: u8,
        /// Record count the kind and body length require.
        expected: usize,
    },
    /// A `Data` payload longer than [`MAX_DATA_PAYLOAD`].
    PayloadTooLarge {
        /// Payload length.
        len: usize,
    },
    /// A field holds a value this version does not define.
    Field(&'static str),
    /// The caller's output buffer is too short (records for `encode_into` /
    /// `encode_data_into`, bytes for `decode_data_into`).
    OutputTooSmall {
        /// Size needed.
        need: usize,
        /// Size given.
        have: usize,
    },
}

impl fmt::Display for DeltaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Version { got, expected } => write!(
                f,
                "delta layout version {got} is not supported (this build speaks version {expected})"
            ),
            Self::Kind(k) => write!(f, "unknown delta kind {k}"),
            Self::Truncated { need, have } => {
                write!(f, "truncated delta: needs {need} records, {have} present")
            }
            Self::RecordCount {
                kind,
                got,
                expected,
            } => write!(
                f,
                "{kind:?} delta header says {got} records, its body needs {expected}"
            ),
            Self::PayloadTooLarge { len } => write!(
                f,
                "data payload of {len} bytes exceeds the {MAX_DATA_PAYLOAD}-byte maximum"
            ),
            Self::Field(what) => write!(f, "invalid value in delta field {what}"),
            Self::OutputTooSmall { need, have } => {
                write!(f, "output buffer too small: needs {need}, has {have}")
            }
        }
    }
}

impl std::error::Error for DeltaError {}

/// Fields every delta carries besides its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DeltaHeader {
    /// Worker (lcore) index that produced the delta; also its ring index. Encoded in one
    /// byte: an engine has fewer than 256 workers (DPDK's `RTE_MAX_LCORE` is 128).
    pub worker: u16,
    /// Ownership group of the flow (`flowtwin_engine::group::GroupId`); 0 for a `Barrier`.
    pub group: u8,
    /// Flow-table slot (0 for `Barrier`).
    pub slot: u32,
    /// Generation of `slot`, so a delta for a closed flow never lands on the slot's next
    /// tenant (0 for `Barrier`).
    pub generation: u32,
    /// Per-worker delta sequence number, +1 per delta.
    pub seq: u64,
}

/// Flow identity as seen from the engine: the client's address and the VIP.
/// IPv4 addresses are stored v4-mapped (`::ffff:a.b.c.d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlowKeyRec {
    /// Client (remote) address, network byte order, v4-mapped for IPv4.
    pub remote_ip: [u8; 16],
    /// Client port.
    pub remote_port: u16,
    /// Service address (VIP), network byte order, v4-mapped for IPv4.
    pub local_ip: [u8; 16],
    /// Service port.
    pub local_port: u16,
}

/// Replicated TCP state of one flow: a superset of what Linux `TCP_REPAIR` saves
/// (`TCP_REPAIR_WINDOW`, `TCP_REPAIR_OPTIONS`, queue sequences, timestamp offset), plus
/// the flow key, the peer's MAC and the service's position. Sequence numbers are raw
/// 32-bit values. Not replicated (re-learned from traffic after takeover, as Linux does
/// on repair): RTT estimate, cwnd, SACK scoreboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowStateRec {
    /// TCP state (the engine's state numbering).
    pub state: u8,
    /// Initial send sequence number.
    pub iss: u32,
    /// Initial receive sequence number.
    pub irs: u32,
    /// Oldest unacknowledged sequence number.
    pub snd_una: u32,
    /// Next sequence number to send.
    pub snd_nxt: u32,
    /// Next sequence number expected.
    pub rcv_nxt: u32,
    /// Send window (unscaled bytes).
    pub snd_wnd: u32,
    /// Receive window (unscaled bytes).
    pub rcv_wnd: u32,
    /// Segment sequence number used for the last window update (RFC 9293).
    pub snd_wl1: u32,
    /// Segment acknowledgment number used for the last window update (RFC 9293).
    pub snd_wl2: u32,
    /// `rcv_nxt` when the window was last advertised; `rcv_wup + rcv_wnd` is the right
    /// edge the standby must not shrink (Linux `rcv_wup`).
    pub rcv_wup: u32,
    /// Largest send window the peer has offered (Linux `max_window`).
    pub max_window: u32,
    /// Shift applied to the peer's advertised window.
    pub snd_wscale: u8,
    /// Shift applied to our advertised window.
    pub rcv_wscale: u8,
    /// Send MSS.
    pub mss: u16,
    /// SACK permitted was negotiated.
    pub sack_ok: bool,
    /// Timestamps were negotiated.
    pub ts_ok: bool,
    /// Window scaling was negotiated.
    pub wscale_ok: bool,
    /// Offset added to the local clock to form TSval.
    pub ts_offset: u32,
    /// Most recent TSval from the peer to echo (RFC 7323 TS.Recent).
    pub ts_recent: u32,
    /// Flow key.
    pub key: FlowKeyRec,
    /// Client's next-hop MAC (where replies go).
    pub peer_mac: [u8; 6],
    /// Service bound to the flow.
    pub service_id: u16,
    /// Opaque service position, written and read by the service layer only.
    pub service_cursor: [u8; SERVICE_CURSOR_LEN],
}

impl Default for FlowStateRec {
    fn default() -> Self {
        Self {
            state: 0,
            iss: 0,
            irs: 0,
            snd_una: 0,
            snd_nxt: 0,
            rcv_nxt: 0,
            snd_wnd: 0,
            rcv_wnd: 0,
            snd_wl1: 0,
            snd_wl2: 0,
            rcv_wup: 0,
            max_window: 0,
            snd_wscale: 0,
            rcv_wscale: 0,
            mss: 0,
            sack_ok: false,
            ts_ok: false,
            wscale_ok: false,
            ts_offset: 0,
            ts_recent: 0,
            key: FlowKeyRec::default(),
            peer_mac: [0; 6],
            service_id: 0,
            service_cursor: [0; SERVICE_CURSOR_LEN],
        }
    }
}

/// The fields of a flow that change after its creation ([`DeltaKind::FlowStep`]): a
/// [`FlowStateRec`] without what identifies the flow, and with the stream offsets cut to
/// their low 32 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlowStepRec {
    /// TCP state (the engine's state numbering).
    pub state: u8,
    pub snd_una: u32,
    pub snd_nxt: u32,
    pub rcv_nxt: u32,
    pub snd_wnd: u32,
    pub rcv_wnd: u32,
    pub ts_recent: u32,
    pub ts_last_sent: u32,
    /// Low 32 bits of the service stream offsets (see [`FlowStepRec::apply_to`]).
    pub tx_acked_lo: u32,
    pub tx_sent_lo: u32,
    pub rx_delivered_lo: u32,
}

/// A run of received stream bytes, held inline (no allocation).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DataRec {
    /// Stream offset of the first payload byte (bytes since the flow's first data byte).
    pub offset: u64,
    len: u16,
    bytes: [u8; MAX_DATA_PAYLOAD],
}

impl DataRec {
    /// A chunk holding a copy of `payload`, or `PayloadTooLarge`.
    pub fn new(offset: u64, payload: &[u8]) -> Result<Self, DeltaError> {
        if payload.len() > MAX_DATA_PAYLOAD {
            return Err(DeltaError::PayloadTooLarge { len: payload.len() });
        }
        let mut bytes = [0; MAX_DATA_PAYLOAD];
        bytes[..payload.len()].copy_from_slice(payload);
        Ok(Self {
            offset,
            len: payload.len() as u16,
            bytes,
        })
    }

    /// The payload bytes.
    pub fn payload(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Debug for DataRec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataRec")
            .field("offset", &self.offset)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// Close reasons for [`CloseRec::reason`] (plain `u8`; unknown values pass through).
pub mod close_reason {
    /// Orderly close: both FINs exchanged.
    pub const FIN: u8 = 1;
    /// Peer sent RST.
    pub const RST: u8 = 2;
    /// Idle or retransmission timeout.
    pub const TIMEOUT: u8 = 3;
    /// Engine aborted the flow (service error, resource limit).
    pub const ABORT: u8 = 4;
}

/// A flow ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CloseRec {
    /// One of [`close_reason`], or another engine-defined value.
    pub reason: u8,
}

/// A delta's kind-specific content.
// `Data` is ~1.5 KiB inline on purpose: deltas are built and decoded on the stack with
// no allocation; they are passed by reference, never moved in bulk.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeltaBody {
    /// A flow was created.
    FlowNew(FlowStateRec),
    /// A flow's state changed.
    FlowUpdate(FlowStateRec),
    /// Received bytes not yet turned into output.
    Data(DataRec),
    /// A flow ended.
    FlowClose(CloseRec),
    /// Heartbeat / barrier with a caller-chosen token.
    Barrier {
        /// Opaque token (e.g. the sync round or a timestamp).
        token: u64,
    },
    /// One chunk of a service image; `offset` is [`svc_image_offset`]`(image_len, chunk_offset)`.
    SvcImage(DataRec),
    /// A flow's state changed, its identity did not.
    FlowStep(FlowStepRec),
}

impl DeltaBody {
    /// The kind byte this body is encoded with.
    pub fn kind(&self) -> DeltaKind {
        match self {
            Self::FlowNew(_) => DeltaKind::FlowNew,
            Self::FlowUpdate(_) => DeltaKind::FlowUpdate,
            Self::Data(_) => DeltaKind::Data,
            Self::FlowClose(_) => DeltaKind::FlowClose,
            Self::Barrier { .. } => DeltaKind::Barrier,
            Self::SvcImage(_) => DeltaKind::SvcImage,
            Self::FlowStep(_) => DeltaKind::FlowStep,
        }
    }
}

/// One replicated state change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Delta {
    /// Worker, flow and sequence number.
    pub header: DeltaHeader,
    /// Kind-specific content.
    pub body: DeltaBody,
}

impl Delta {
    /// Records this delta encodes to.
    pub fn records(&self) -> usize {
        match &self.body {
            DeltaBody::FlowNew(_) | DeltaBody::FlowUpdate(_) => FLOW_STATE_RECORDS,
            DeltaBody::Data(d) | DeltaBody::SvcImage(d) => data_records(d.payload().len()),
            DeltaBody::FlowClose(_) | DeltaBody::Barrier { .. } | DeltaBody::FlowStep(_) => 1,
        }
    }
}

/// Records a `Data` delta with `payload_len` bytes needs (may exceed
/// [`MAX_DATA_RECORDS`] for an oversized payload, which encode rejects).
pub const fn data_records(payload_len: usize) -> usize {
    (DATA_PREFIX_BYTES + payload_len).div_ceil(RECORD_BYTES)
}

/// Header fields as found on the ring, for routing or skipping a delta without decoding
/// its body (the sync core's coalescing pass).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeekedHeader {
    /// Kind byte, validated.
    pub kind: DeltaKind,
    /// Records the delta spans, validated against its kind and length.
    pub records: usize,
    /// `Data`: payload bytes (at most [`MAX_DATA_PAYLOAD`]); other kinds: 0.
    pub payload_len: usize,
    /// Worker, flow and sequence number.
    pub header: DeltaHeader,
}

mod codec;
mod engine;

pub use self::codec::{
    decode, decode_data_into, encode, encode_data_into, encode_into, encode_svc_image_into, peek_header,
    svc_image_offset, svc_image_split,
};
