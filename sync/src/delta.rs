//! Delta records: the fixed-size, versioned, little-endian wire layout of every replicated
//! state change, packed into 64-byte ring [`Record`]s.
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
//! bytes 4..6   worker       u16  worker (lcore) index that produced the delta
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
//!     168..192 reserved; service_id (30) holds the listener index
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

use crate::ring::{Record, RECORD_BYTES, RECORD_WORDS};
use std::fmt;

/// Layout version written in byte 0 of every delta. Decoding any other value fails with
/// [`DeltaError::Version`].
/// Version 2 added the `SvcImage` kind, version 3 `FlowStep`. The sync protocol's
/// `PROTO_VERSION` changes with it, so that peers of different layouts are refused at their
/// hello instead of failing on their first delta.
pub const DELTA_VERSION: u8 = 3;
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
    /// Worker (lcore) index that produced the delta; also its ring index.
    pub worker: u16,
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

// ---- byte image <-> words ---------------------------------------------------------

/// Byte `i` of a delta whose records are `recs` (little-endian words). `i` must be in
/// range; callers check the record count first.
#[inline]
fn byte_at(recs: &[Record], i: usize) -> u8 {
    let word = recs[i / RECORD_BYTES][(i % RECORD_BYTES) / 8];
    word.to_le_bytes()[i % 8]
}

/// Copies `out.len()` bytes starting at delta byte `start` (word-aligned) out of `recs`.
fn read_bytes(recs: &[Record], start: usize, out: &mut [u8]) {
    debug_assert_eq!(start % 8, 0);
    for (k, chunk) in out.chunks_mut(8).enumerate() {
        let i = start + 8 * k;
        let word = recs[i / RECORD_BYTES][(i % RECORD_BYTES) / 8].to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

/// Writes `bytes` into `recs` starting at delta byte `start` (word-aligned), zero-padding
/// the last word.
fn write_bytes(recs: &mut [Record], start: usize, bytes: &[u8]) {
    debug_assert_eq!(start % 8, 0);
    for (k, chunk) in bytes.chunks(8).enumerate() {
        let i = start + 8 * k;
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        recs[i / RECORD_BYTES][(i % RECORD_BYTES) / 8] = u64::from_le_bytes(word);
    }
}

/// A little-endian cursor over a fixed byte image.
struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, b: &[u8]) {
        self.buf[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
    }
    fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }
    fn u16(&mut self, v: u16) {
        self.bytes(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
}

/// The reading twin of [`Writer`]. Callers size the image before reading, so no read is
/// out of range.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0; N];
        a.copy_from_slice(&self.buf[self.pos..self.pos + N]);
        self.pos += N;
        a
    }
    fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }
}

/// `state`: byte 3, a FlowStep's TCP state (0 for every other kind).
fn write_header(recs: &mut [Record], kind: DeltaKind, nrec: usize, body_len: u16, h: &DeltaHeader, state: u8) {
    let mut img = [0u8; HEADER_BYTES];
    let mut w = Writer {
        buf: &mut img,
        pos: 0,
    };
    w.u8(DELTA_VERSION);
    w.u8(kind as u8);
    w.u8(nrec as u8); // nrec <= MAX_DELTA_RECORDS <= 255, asserted at compile time
    w.u8(state);
    w.u16(h.worker);
    w.u16(body_len);
    w.u32(h.slot);
    w.u32(h.generation);
    w.u64(h.seq);
    write_bytes(recs, 0, &img);
}

fn flow_state_image(s: &FlowStateRec, img: &mut [u8; FLOW_STATE_RECORDS * RECORD_BYTES]) {
    let mut w = Writer {
        buf: img,
        pos: HEADER_BYTES,
    };
    let flags = if s.sack_ok { FLAG_SACK_OK } else { 0 }
        | if s.ts_ok { FLAG_TS_OK } else { 0 }
        | if s.wscale_ok { FLAG_WSCALE_OK } else { 0 };
    w.u8(s.state);
    w.u8(flags);
    w.u8(s.snd_wscale);
    w.u8(s.rcv_wscale);
    w.u16(s.mss);
    w.u16(s.service_id);
    for v in [
        s.iss,
        s.irs,
        s.snd_una,
        s.snd_nxt,
        s.rcv_nxt,
        s.snd_wnd,
        s.rcv_wnd,
        s.snd_wl1,
        s.snd_wl2,
        s.rcv_wup,
        s.max_window,
        s.ts_offset,
        s.ts_recent,
    ] {
        w.u32(v);
    }
    w.bytes(&s.key.remote_ip);
    w.u16(s.key.remote_port);
    w.bytes(&s.key.local_ip);
    w.u16(s.key.local_port);
    w.bytes(&s.peer_mac);
    w.bytes(&[0, 0]);
    w.bytes(&s.service_cursor);
    debug_assert_eq!(w.pos, img.len());
}

// ---- encode -------------------------------------------------------------------------

/// Encodes `delta` into the front of `out` without allocating and returns the number of
/// records written ([`Delta::records`]). `out` of [`MAX_DELTA_RECORDS`] always suffices.
/// Every byte of the written records is defined (reserved bytes and padding are 0).
pub fn encode_into(delta: &Delta, out: &mut [Record]) -> Result<usize, DeltaError> {
    match &delta.body {
        DeltaBody::Data(d) => encode_data_into(&delta.header, d.offset, d.payload(), out),
        DeltaBody::SvcImage(d) => encode_payload_into(
            DeltaKind::SvcImage,
            &delta.header,
            d.offset,
            d.payload(),
            out,
        ),
        body => {
            let nrec = delta.records();
            let out = records_out(out, nrec)?;
            out.fill([0; RECORD_WORDS]);
            match body {
                DeltaBody::FlowNew(s) | DeltaBody::FlowUpdate(s) => {
                    let mut img = [0u8; FLOW_STATE_RECORDS * RECORD_BYTES];
                    flow_state_image(s, &mut img);
                    write_bytes(out, 0, &img);
                }
                DeltaBody::FlowClose(c) => write_bytes(out, HEADER_BYTES, &[c.reason]),
                DeltaBody::Barrier { token } => {
                    write_bytes(out, HEADER_BYTES, &token.to_le_bytes())
                }
                DeltaBody::FlowStep(t) => {
                    let mut img = [0u8; RECORD_BYTES - HEADER_BYTES];
                    let mut w = Writer { buf: &mut img, pos: 0 };
                    for v in [
                        t.snd_una,
                        t.snd_nxt,
                        t.rcv_nxt,
                        t.snd_wnd,
                        t.rcv_wnd,
                        t.ts_recent,
                        t.ts_last_sent,
                        t.tx_acked_lo,
                        t.tx_sent_lo,
                        t.rx_delivered_lo,
                    ] {
                        w.u32(v);
                    }
                    debug_assert_eq!(w.pos, img.len());
                    write_bytes(out, HEADER_BYTES, &img);
                }
                DeltaBody::Data(_) | DeltaBody::SvcImage(_) => unreachable!("handled above"),
            }
            // Header last: the FlowState image above covers it with zeros.
            let state = if let DeltaBody::FlowStep(t) = body { t.state } else { 0 };
            write_header(out, body.kind(), nrec, 0, &delta.header, state);
            Ok(nrec)
        }
    }
}

/// Encodes a `Data` delta straight from borrowed `payload` (the worker's path: no copy
/// into a [`DataRec`] first) into the front of `out`; returns the records written.
pub fn encode_data_into(
    header: &DeltaHeader,
    offset: u64,
    payload: &[u8],
    out: &mut [Record],
) -> Result<usize, DeltaError> {
    encode_payload_into(DeltaKind::Data, header, offset, payload, out)
}

/// `DataRec::offset` of a `SvcImage` chunk: the whole image's length in the high half, the
/// chunk's offset within the image in the low half.
pub const fn svc_image_offset(image_len: u32, chunk_offset: u32) -> u64 {
    (image_len as u64) << 32 | chunk_offset as u64
}

/// Splits a `SvcImage` chunk's `DataRec::offset` into `(image_len, chunk_offset)`.
pub const fn svc_image_split(offset: u64) -> (u32, u32) {
    ((offset >> 32) as u32, offset as u32)
}

/// Encodes a `SvcImage` chunk straight from borrowed bytes (the worker's path).
pub fn encode_svc_image_into(
    header: &DeltaHeader,
    image_len: u32,
    chunk_offset: u32,
    chunk: &[u8],
    out: &mut [Record],
) -> Result<usize, DeltaError> {
    encode_payload_into(
        DeltaKind::SvcImage,
        header,
        svc_image_offset(image_len, chunk_offset),
        chunk,
        out,
    )
}

/// The shared encoder of the two payload-carrying kinds (`Data`, `SvcImage`).
fn encode_payload_into(
    kind: DeltaKind,
    header: &DeltaHeader,
    offset: u64,
    payload: &[u8],
    out: &mut [Record],
) -> Result<usize, DeltaError> {
    if payload.len() > MAX_DATA_PAYLOAD {
        return Err(DeltaError::PayloadTooLarge { len: payload.len() });
    }
    let nrec = data_records(payload.len());
    let out = records_out(out, nrec)?;
    // The last record's tail past the payload must read as 0, not stale ring contents.
    out[nrec - 1] = [0; RECORD_WORDS];
    write_header(out, kind, nrec, payload.len() as u16, header, 0);
    write_bytes(out, HEADER_BYTES, &offset.to_le_bytes());
    write_bytes(out, DATA_PREFIX_BYTES, payload);
    Ok(nrec)
}

fn records_out(out: &mut [Record], nrec: usize) -> Result<&mut [Record], DeltaError> {
    let have = out.len();
    out.get_mut(..nrec)
        .ok_or(DeltaError::OutputTooSmall { need: nrec, have })
}

/// Appends the encoding of `delta` to `out` and returns the number of records appended.
/// Allocates only if `out` must grow; reuse one `Vec` to avoid that.
pub fn encode(delta: &Delta, out: &mut Vec<Record>) -> Result<usize, DeltaError> {
    let start = out.len();
    out.resize(start + delta.records(), [0; RECORD_WORDS]);
    match encode_into(delta, &mut out[start..]) {
        Ok(n) => Ok(n),
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

// ---- decode -------------------------------------------------------------------------

/// Validates the header of the delta at the front of `recs` (version, kind, record
/// count, presence of all its records) without decoding the body.
pub fn peek_header(recs: &[Record]) -> Result<PeekedHeader, DeltaError> {
    let first = recs
        .first()
        .ok_or(DeltaError::Truncated { need: 1, have: 0 })?;
    let mut img = [0u8; HEADER_BYTES];
    read_bytes(std::slice::from_ref(first), 0, &mut img);
    let mut r = Reader { buf: &img, pos: 0 };
    // Version first, so a delta from another layout is reported as such and not as a
    // bad kind or length.
    let version = r.u8();
    if version != DELTA_VERSION {
        return Err(DeltaError::Version {
            got: version,
            expected: DELTA_VERSION,
        });
    }
    let kind_byte = r.u8();
    let kind = DeltaKind::from_u8(kind_byte).ok_or(DeltaError::Kind(kind_byte))?;
    let nrec = r.u8();
    let _reserved = r.u8();
    let worker = r.u16();
    let body_len = usize::from(r.u16());
    let header = DeltaHeader {
        worker,
        slot: r.u32(),
        generation: r.u32(),
        seq: r.u64(),
    };
    let expected = match kind {
        DeltaKind::FlowNew | DeltaKind::FlowUpdate => FLOW_STATE_RECORDS,
        DeltaKind::Data | DeltaKind::SvcImage => {
            if body_len > MAX_DATA_PAYLOAD {
                return Err(DeltaError::PayloadTooLarge { len: body_len });
            }
            data_records(body_len)
        }
        DeltaKind::FlowClose | DeltaKind::Barrier | DeltaKind::FlowStep => 1,
    };
    if usize::from(nrec) != expected {
        return Err(DeltaError::RecordCount {
            kind,
            got: nrec,
            expected,
        });
    }
    if !matches!(kind, DeltaKind::Data | DeltaKind::SvcImage) && body_len != 0 {
        return Err(DeltaError::Field("body_len"));
    }
    if recs.len() < expected {
        return Err(DeltaError::Truncated {
            need: expected,
            have: recs.len(),
        });
    }
    Ok(PeekedHeader {
        kind,
        records: expected,
        payload_len: body_len,
        header,
    })
}

/// Decodes the delta at the front of `recs` and returns it with the number of records it
/// used; the next delta starts right after. Never panics, whatever the words hold.
///
/// `Err(Truncated)` means the delta continues past `recs` (with the ring: the consumer's
/// buffer was too short — keep these records and read more).
pub fn decode(recs: &[Record]) -> Result<(Delta, usize), DeltaError> {
    let peeked = peek_header(recs)?;
    let recs = &recs[..peeked.records];
    let body = match peeked.kind {
        DeltaKind::FlowNew => DeltaBody::FlowNew(decode_flow_state(recs)?),
        DeltaKind::FlowUpdate => DeltaBody::FlowUpdate(decode_flow_state(recs)?),
        DeltaKind::Data | DeltaKind::SvcImage => {
            let len = peeked.payload_len;
            let mut d = DataRec {
                offset: recs[0][HEADER_BYTES / 8],
                len: len as u16,
                bytes: [0; MAX_DATA_PAYLOAD],
            };
            read_bytes(recs, DATA_PREFIX_BYTES, &mut d.bytes[..len]);
            if peeked.kind == DeltaKind::Data {
                DeltaBody::Data(d)
            } else {
                DeltaBody::SvcImage(d)
            }
        }
        DeltaKind::FlowClose => DeltaBody::FlowClose(CloseRec {
            reason: byte_at(recs, HEADER_BYTES),
        }),
        DeltaKind::Barrier => DeltaBody::Barrier {
            token: recs[0][HEADER_BYTES / 8],
        },
        DeltaKind::FlowStep => {
            let mut img = [0u8; RECORD_BYTES];
            read_bytes(recs, 0, &mut img);
            let mut r = Reader { buf: &img, pos: HEADER_BYTES };
            DeltaBody::FlowStep(FlowStepRec {
                state: img[3],
                snd_una: r.u32(),
                snd_nxt: r.u32(),
                rcv_nxt: r.u32(),
                snd_wnd: r.u32(),
                rcv_wnd: r.u32(),
                ts_recent: r.u32(),
                ts_last_sent: r.u32(),
                tx_acked_lo: r.u32(),
                tx_sent_lo: r.u32(),
                rx_delivered_lo: r.u32(),
            })
        }
    };
    Ok((
        Delta {
            header: peeked.header,
            body,
        },
        peeked.records,
    ))
}

/// Copies the payload of the `Data` delta at the front of `recs` into `out` (which must
/// hold at least its length) and returns `(stream offset, payload length)`: the standby's
/// path into its receive buffer without an intermediate [`DataRec`].
pub fn decode_data_into(recs: &[Record], out: &mut [u8]) -> Result<(u64, usize), DeltaError> {
    let peeked = peek_header(recs)?;
    if peeked.kind != DeltaKind::Data {
        return Err(DeltaError::Field("kind (not a Data delta)"));
    }
    let len = peeked.payload_len;
    let have = out.len();
    let dst = out
        .get_mut(..len)
        .ok_or(DeltaError::OutputTooSmall { need: len, have })?;
    read_bytes(recs, DATA_PREFIX_BYTES, dst);
    Ok((recs[0][HEADER_BYTES / 8], len))
}

fn decode_flow_state(recs: &[Record]) -> Result<FlowStateRec, DeltaError> {
    let mut img = [0u8; FLOW_STATE_RECORDS * RECORD_BYTES];
    read_bytes(recs, 0, &mut img);
    let mut r = Reader {
        buf: &img,
        pos: HEADER_BYTES,
    };
    // Locals in wire order: each read advances the cursor.
    let state = r.u8();
    let flags = r.u8();
    if flags & !FLAGS_KNOWN != 0 {
        return Err(DeltaError::Field("flow flags"));
    }
    let snd_wscale = r.u8();
    let rcv_wscale = r.u8();
    let mss = r.u16();
    let service_id = r.u16();
    let iss = r.u32();
    let irs = r.u32();
    let snd_una = r.u32();
    let snd_nxt = r.u32();
    let rcv_nxt = r.u32();
    let snd_wnd = r.u32();
    let rcv_wnd = r.u32();
    let snd_wl1 = r.u32();
    let snd_wl2 = r.u32();
    let rcv_wup = r.u32();
    let max_window = r.u32();
    let ts_offset = r.u32();
    let ts_recent = r.u32();
    let mut s = FlowStateRec {
        state,
        iss,
        irs,
        snd_una,
        snd_nxt,
        rcv_nxt,
        snd_wnd,
        rcv_wnd,
        snd_wl1,
        snd_wl2,
        rcv_wup,
        max_window,
        snd_wscale,
        rcv_wscale,
        mss,
        sack_ok: flags & FLAG_SACK_OK != 0,
        ts_ok: flags & FLAG_TS_OK != 0,
        wscale_ok: flags & FLAG_WSCALE_OK != 0,
        ts_offset,
        ts_recent,
        service_id,
        ..FlowStateRec::default()
    };
    s.key = FlowKeyRec {
        remote_ip: r.array(),
        remote_port: r.u16(),
        local_ip: r.array(),
        local_port: r.u16(),
    };
    s.peer_mac = r.array();
    let _reserved: [u8; 2] = r.array();
    s.service_cursor = r.array();
    Ok(s)
}

// ---- engine FlowImage <-> FlowStateRec -------------------------------------------------

use flowtwin_engine::flow::FlowKey;
use flowtwin_engine::replica::FlowImage;
use flowtwin_engine::seq::SeqNum;
use flowtwin_engine::tcp::{State, TcbSnapshot};
use flowtwin_engine::wire::MacAddr;
use std::net::Ipv6Addr;

/// Offsets inside [`FlowStateRec::service_cursor`] of the engine fields the fixed part has
/// no place for (see the module docs).
mod cursor {
    pub const LOCAL_PORT: usize = 0;
    pub const REMOTE_PORT: usize = 2;
    pub const VIP_MAC: usize = 4;
    pub const TS_LAST_SENT: usize = 12;
    pub const TX_ACKED: usize = 16;
    pub const TX_SENT: usize = 24;
    pub const RX_DELIVERED: usize = 32;
}

/// The engine state a state byte names; `Field("state")` if it names none (never trust the
/// wire).
fn engine_state(b: u8) -> Result<State, DeltaError> {
    if !(State::SynSent as u8..=State::Closed as u8).contains(&b) {
        return Err(DeltaError::Field("state"));
    }
    Ok(State::from_u8(b))
}

impl FlowStepRec {
    /// The step record of an engine [`FlowImage`] (its identity is not recorded).
    pub fn from_image(img: &FlowImage) -> FlowStepRec {
        let t = &img.tcb;
        FlowStepRec {
            state: t.state as u8,
            snd_una: t.snd_una.0,
            snd_nxt: t.snd_nxt.0,
            rcv_nxt: t.rcv_nxt.0,
            snd_wnd: t.snd_wnd,
            rcv_wnd: t.rcv_wnd,
            ts_recent: t.ts_recent,
            ts_last_sent: t.ts_last_sent,
            tx_acked_lo: t.tx_acked as u32,
            tx_sent_lo: t.tx_sent as u32,
            rx_delivered_lo: t.rx_delivered as u32,
        }
    }

    /// `base` (the replica's image) moved to this step. Each stream offset becomes the value
    /// at or after `base`'s whose low 32 bits are the record's; an offset that would have to
    /// move back, or forward by 2^31 or more, is refused (`Field`): the stream would not be
    /// the active's. As is a state byte that is not an engine state.
    pub fn apply_to(&self, base: &FlowImage) -> Result<FlowImage, DeltaError> {
        let state = engine_state(self.state)?;
        let extend = |old: u64, lo: u32, what: &'static str| {
            let d = lo.wrapping_sub(old as u32);
            if d >= 1 << 31 {
                return Err(DeltaError::Field(what));
            }
            Ok(old + u64::from(d))
        };
        let mut img = *base;
        let t = &mut img.tcb;
        t.tx_acked = extend(t.tx_acked, self.tx_acked_lo, "tx_acked")?;
        t.tx_sent = extend(t.tx_sent, self.tx_sent_lo, "tx_sent")?;
        t.rx_delivered = extend(t.rx_delivered, self.rx_delivered_lo, "rx_delivered")?;
        t.state = state;
        t.snd_una = SeqNum(self.snd_una);
        t.snd_nxt = SeqNum(self.snd_nxt);
        t.rcv_nxt = SeqNum(self.rcv_nxt);
        t.snd_wnd = self.snd_wnd;
        t.rcv_wnd = self.rcv_wnd;
        t.ts_recent = self.ts_recent;
        t.ts_last_sent = self.ts_last_sent;
        Ok(img)
    }
}

impl FlowStateRec {
    /// The record of an engine [`FlowImage`]. `snd_wl1`, `snd_wl2` and `max_window` are not
    /// in the engine's snapshot (re-learned from the peer's next segment) and travel as 0;
    /// `rcv_wup` is `rcv_nxt` (the snapshot's `rcv_wnd` is measured from `rcv_nxt`).
    pub fn from_image(img: &FlowImage) -> FlowStateRec {
        let t = &img.tcb;
        let mut c = [0u8; SERVICE_CURSOR_LEN];
        c[cursor::LOCAL_PORT..][..2].copy_from_slice(&t.local_port.to_le_bytes());
        c[cursor::REMOTE_PORT..][..2].copy_from_slice(&t.remote_port.to_le_bytes());
        c[cursor::VIP_MAC..][..6].copy_from_slice(&img.vip_mac.0);
        c[cursor::TS_LAST_SENT..][..4].copy_from_slice(&t.ts_last_sent.to_le_bytes());
        c[cursor::TX_ACKED..][..8].copy_from_slice(&t.tx_acked.to_le_bytes());
        c[cursor::TX_SENT..][..8].copy_from_slice(&t.tx_sent.to_le_bytes());
        c[cursor::RX_DELIVERED..][..8].copy_from_slice(&t.rx_delivered.to_le_bytes());
        FlowStateRec {
            state: t.state as u8,
            iss: t.iss.0,
            irs: t.irs.0,
            snd_una: t.snd_una.0,
            snd_nxt: t.snd_nxt.0,
            rcv_nxt: t.rcv_nxt.0,
            snd_wnd: t.snd_wnd,
            rcv_wnd: t.rcv_wnd,
            snd_wl1: 0,
            snd_wl2: 0,
            rcv_wup: t.rcv_nxt.0,
            max_window: 0,
            snd_wscale: t.snd_wscale,
            rcv_wscale: t.rcv_wscale,
            mss: t.mss,
            sack_ok: t.sack_ok,
            ts_ok: t.ts_ok,
            wscale_ok: t.snd_wscale != 0 || t.rcv_wscale != 0,
            ts_offset: t.ts_offset,
            ts_recent: t.ts_recent,
            key: FlowKeyRec {
                remote_ip: img.key.remote_ip.octets(),
                remote_port: img.key.remote_port,
                local_ip: img.key.local_ip.octets(),
                local_port: img.key.local_port,
            },
            peer_mac: img.peer_mac.0,
            service_id: img.listener,
            service_cursor: c,
        }
    }

    /// The engine [`FlowImage`] this record carries; `Field("state")` if the state byte is
    /// not an engine state (never trust the wire).
    pub fn to_image(&self) -> Result<FlowImage, DeltaError> {
        let state = engine_state(self.state)?;
        let c = &self.service_cursor;
        let u16_at = |o: usize| u16::from_le_bytes([c[o], c[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([c[o], c[o + 1], c[o + 2], c[o + 3]]);
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&c[o..o + 8]);
            u64::from_le_bytes(b)
        };
        let mut vip_mac = [0u8; 6];
        vip_mac.copy_from_slice(&c[cursor::VIP_MAC..cursor::VIP_MAC + 6]);
        Ok(FlowImage {
            key: FlowKey {
                remote_ip: Ipv6Addr::from(self.key.remote_ip),
                remote_port: self.key.remote_port,
                local_ip: Ipv6Addr::from(self.key.local_ip),
                local_port: self.key.local_port,
            },
            tcb: TcbSnapshot {
                state,
                local_port: u16_at(cursor::LOCAL_PORT),
                remote_port: u16_at(cursor::REMOTE_PORT),
                iss: SeqNum(self.iss),
                irs: SeqNum(self.irs),
                snd_una: SeqNum(self.snd_una),
                snd_nxt: SeqNum(self.snd_nxt),
                rcv_nxt: SeqNum(self.rcv_nxt),
                snd_wnd: self.snd_wnd,
                rcv_wnd: self.rcv_wnd,
                snd_wscale: self.snd_wscale,
                rcv_wscale: self.rcv_wscale,
                mss: self.mss,
                sack_ok: self.sack_ok,
                ts_ok: self.ts_ok,
                ts_offset: self.ts_offset,
                ts_recent: self.ts_recent,
                ts_last_sent: u32_at(cursor::TS_LAST_SENT),
                tx_acked: u64_at(cursor::TX_ACKED),
                tx_sent: u64_at(cursor::TX_SENT),
                rx_delivered: u64_at(cursor::RX_DELIVERED),
            },
            peer_mac: MacAddr(self.peer_mac),
            vip_mac: MacAddr(vip_mac),
            listener: self.service_id,
        })
    }
}
