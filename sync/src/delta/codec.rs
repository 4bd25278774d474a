//! Encoding and decoding of delta records: the byte layout of the parent module's docs
//! written into and read out of 64-byte ring [`Record`]s, without allocating and without
//! trusting the words read.

use super::{
    data_records, CloseRec, DataRec, Delta, DeltaBody, DeltaError, DeltaHeader, DeltaKind, FlowKeyRec, FlowStateRec,
    FlowStepRec, PeekedHeader, DATA_PREFIX_BYTES, DELTA_VERSION, FLAGS_KNOWN, FLAG_SACK_OK, FLAG_TS_OK, FLAG_WSCALE_OK,
    FLOW_STATE_RECORDS, HEADER_BYTES, MAX_DATA_PAYLOAD,
};
use crate::ring::{Record, RECORD_BYTES, RECORD_WORDS};

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
    w.u8(h.worker as u8); // < 256 workers (DeltaHeader::worker)
    w.u8(h.group);
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
    let worker = u16::from(r.u8());
    let group = r.u8();
    let body_len = usize::from(r.u16());
    let header = DeltaHeader {
        worker,
        group,
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
