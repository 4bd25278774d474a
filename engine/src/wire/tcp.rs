//! TCP segments (RFC 9293 §3.1) and options: MSS (RFC 9293 §3.2), window scale and timestamps
//! (RFC 7323), SACK (RFC 2018). Parsing yields the shared `TcpHeader`; emission writes options in
//! the order and alignment Linux uses (`tcp_options_write`), so our segments look like a
//! Linux peer's to middleboxes and in captures.

use super::checksum::{self, ChecksumStatus};
use super::ethernet::{self, emit_ethernet_header, MacAddr};
use super::ipv4::{self, Ipv4Repr};
use super::{
    be16, be32, put16, put32, SackBlock, TcpFlags, TcpHeader, TcpOptions, WireError,
    MAX_SACK_BLOCKS,
};
use crate::seq::SeqNum;
use std::net::{IpAddr, Ipv4Addr};

/// Header without options (Data Offset = 5).
pub const HEADER_LEN: usize = 20;
/// Data Offset is 4 bits of 32-bit words: at most 60 bytes, 40 of them options.
pub const MAX_HEADER_LEN: usize = 60;
/// RFC 7323 §2.3: a shift count above 14 MUST be treated as 14.
pub const MAX_WSCALE: u8 = 14;

/// Option kinds (IANA "TCP Option Kind Numbers").
const KIND_EOL: u8 = 0;
const KIND_NOP: u8 = 1;
const KIND_MSS: u8 = 2;
const KIND_WSCALE: u8 = 3;
const KIND_SACK_PERMITTED: u8 = 4;
const KIND_SACK: u8 = 5;
const KIND_TIMESTAMPS: u8 = 8;

/// A checked view of a TCP segment; `buf` is exactly the IP payload (header + data). Options
/// are parsed once, in `new_checked`.
#[derive(Copy, Clone, Debug)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buf: T,
    options: TcpOptions,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Validates the fixed header, Data Offset (RFC 9293 §3.1: at least 5 words and within the
    /// segment) and every option. The checksum needs the IP addresses: see `checksum_status`.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let header_len = usize::from(b[12] >> 4) * 4;
        if header_len < HEADER_LEN || header_len > b.len() {
            return Err(WireError::BadHeaderLen);
        }
        let options = parse_options(&b[HEADER_LEN..header_len])?;
        Ok(TcpPacket { buf, options })
    }

    #[inline]
    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }
    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(self.b(), 0)
    }
    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(self.b(), 2)
    }
    /// SEG.SEQ.
    #[inline]
    pub fn seq_number(&self) -> SeqNum {
        SeqNum(be32(self.b(), 4))
    }
    /// SEG.ACK (meaningful only with ACK set).
    #[inline]
    pub fn ack_number(&self) -> SeqNum {
        SeqNum(be32(self.b(), 8))
    }
    /// Data Offset in bytes (20..=60).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.b().get(12).copied().unwrap_or(0) >> 4) * 4
    }
    /// Control bits CWR..FIN (the reserved bits are ignored, RFC 9293 §3.1).
    #[inline]
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(self.b().get(13).copied().unwrap_or(0))
    }
    /// SEG.WND, unscaled.
    #[inline]
    pub fn window(&self) -> u16 {
        be16(self.b(), 14)
    }
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.b(), 16)
    }
    #[inline]
    pub fn urgent_pointer(&self) -> u16 {
        be16(self.b(), 18)
    }
    #[inline]
    pub fn options(&self) -> &TcpOptions {
        &self.options
    }
    /// The segment text (SEG.LEN excluding SYN/FIN).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        self.b().get(self.header_len()..).unwrap_or(&[])
    }
    /// Everything the TCP state machine reads.
    pub fn header(&self) -> TcpHeader {
        TcpHeader {
            src_port: self.src_port(),
            dst_port: self.dst_port(),
            seq: self.seq_number(),
            ack: self.ack_number(),
            flags: self.flags(),
            window: self.window(),
            options: self.options,
        }
    }
    /// Verifies the checksum over the pseudo-header and the whole segment (RFC 9293 §3.1).
    #[inline]
    pub fn checksum_status(&self, src: IpAddr, dst: IpAddr) -> ChecksumStatus {
        checksum::tcp_checksum_status(src, dst, self.b())
    }
}

/// Parses the options area (bytes 20..Data Offset) per RFC 9293 §3.2: EOL ends the list, NOP is
/// one byte, every other kind has a length byte counting kind and length. Unknown kinds are
/// skipped by their length (MUST-6). An illegal length (MUST-7: < 2, or running past the
/// header) is `BadOption`, as is a known option whose length is not the one its RFC defines.
/// Later duplicates overwrite earlier ones.
pub fn parse_options(mut opts: &[u8]) -> Result<TcpOptions, WireError> {
    let mut o = TcpOptions::default();
    while let [kind, rest @ ..] = opts {
        match *kind {
            KIND_EOL => break,
            KIND_NOP => {
                opts = rest;
                continue;
            }
            _ => {}
        }
        let len = usize::from(*rest.first().ok_or(WireError::BadOption)?);
        if len < 2 {
            return Err(WireError::BadOption);
        }
        let body = opts.get(2..len).ok_or(WireError::BadOption)?;
        match (*kind, body) {
            // RFC 9293 §3.2: MSS, length 4.
            (KIND_MSS, &[a, b]) => o.mss = Some(u16::from_be_bytes([a, b])),
            // RFC 7323 §2.2: window scale, length 3; §2.3: shift.cnt > 14 is used as 14.
            (KIND_WSCALE, &[shift]) => o.wscale = Some(shift.min(MAX_WSCALE)),
            // RFC 2018 §2: SACK-permitted, length 2.
            (KIND_SACK_PERMITTED, &[]) => o.sack_permitted = true,
            // RFC 2018 §3: SACK, length 2 + 8n; 40 option bytes leave room for n ≤ 4.
            (KIND_SACK, blocks)
                if !blocks.is_empty()
                    && blocks.len() % 8 == 0
                    && blocks.len() / 8 <= MAX_SACK_BLOCKS =>
            {
                let mut n = 0u8;
                for (slot, blk) in o.sack_blocks.iter_mut().zip(blocks.chunks_exact(8)) {
                    *slot = SackBlock {
                        left: SeqNum(be32(blk, 0)),
                        right: SeqNum(be32(blk, 4)),
                    };
                    n += 1;
                }
                o.sack_count = n;
            }
            // RFC 7323 §3.2: timestamps, length 10.
            (KIND_TIMESTAMPS, b) if b.len() == 8 => o.timestamps = Some((be32(b, 0), be32(b, 4))),
            (KIND_MSS | KIND_WSCALE | KIND_SACK_PERMITTED | KIND_SACK | KIND_TIMESTAMPS, _) => {
                return Err(WireError::BadOption)
            }
            _ => {} // unknown kind: skipped by its length
        }
        opts = opts.get(len..).unwrap_or(&[]);
    }
    Ok(o)
}

/// Option area layout, following Linux `tcp_options_write`:
/// `MSS` | `SACK_PERM TS` or `NOP NOP TS` | `NOP NOP SACK_PERM` (no TS) | `NOP WS` |
/// `NOP NOP SACK(n)`. Every piece is a multiple of 4 bytes, so no trailing padding is needed.
/// Returns (bytes before the SACK blocks, number of SACK blocks that fit).
fn options_layout(o: &TcpOptions) -> (usize, usize) {
    let mut len = 0;
    if o.mss.is_some() {
        len += 4;
    }
    if o.timestamps.is_some() {
        len += 12; // SACK-permitted, if any, rides in the first word
    } else if o.sack_permitted {
        len += 4;
    }
    if o.wscale.is_some() {
        len += 4;
    }
    // RFC 2018 §3: as many blocks as fit in what is left of the 40 bytes (3 with timestamps).
    let room = (MAX_HEADER_LEN - HEADER_LEN - len).saturating_sub(4) / 8;
    (len, o.sacks().len().min(room))
}

/// Header length `emit_tcp_header` writes for these options: 20 + options, a multiple of 4,
/// at most 60. SACK blocks that do not fit are left out.
pub fn tcp_header_len(o: &TcpOptions) -> usize {
    let (len, sacks) = options_layout(o);
    let sack_len = if sacks > 0 { 4 + 8 * sacks } else { 0 };
    HEADER_LEN + len + sack_len
}

/// Writes the TCP header (checksum zero, urgent pointer zero) at the start of `buf` and returns
/// its length. A window scale above 14 is written as 14 (RFC 7323 §2.3).
pub fn emit_tcp_header(buf: &mut [u8], h: &TcpHeader) -> Result<usize, WireError> {
    let header_len = tcp_header_len(&h.options);
    let b = buf.get_mut(..header_len).ok_or(WireError::BufferTooSmall)?;
    put16(b, 0, h.src_port);
    put16(b, 2, h.dst_port);
    put32(b, 4, h.seq.0);
    put32(b, 8, h.ack.0);
    b[12] = ((header_len / 4) as u8) << 4;
    b[13] = h.flags.0;
    put16(b, 14, h.window);
    put32(b, 16, 0); // checksum, urgent pointer
    let o = &h.options;
    let (_, sacks) = options_layout(o);
    let mut at = HEADER_LEN;
    let mut word = |w: [u8; 4]| {
        if let Some(s) = b.get_mut(at..at + 4) {
            s.copy_from_slice(&w);
        }
        at += 4;
    };
    if let Some(mss) = o.mss {
        let [hi, lo] = mss.to_be_bytes();
        word([KIND_MSS, 4, hi, lo]);
    }
    if let Some((tsval, tsecr)) = o.timestamps {
        if o.sack_permitted {
            word([KIND_SACK_PERMITTED, 2, KIND_TIMESTAMPS, 10]);
        } else {
            word([KIND_NOP, KIND_NOP, KIND_TIMESTAMPS, 10]);
        }
        word(tsval.to_be_bytes());
        word(tsecr.to_be_bytes());
    } else if o.sack_permitted {
        word([KIND_NOP, KIND_NOP, KIND_SACK_PERMITTED, 2]);
    }
    if let Some(shift) = o.wscale {
        word([KIND_NOP, KIND_WSCALE, 3, shift.min(MAX_WSCALE)]);
    }
    if sacks > 0 {
        word([KIND_NOP, KIND_NOP, KIND_SACK, (2 + 8 * sacks) as u8]);
        for blk in &o.sacks()[..sacks] {
            word(blk.left.0.to_be_bytes());
            word(blk.right.0.to_be_bytes());
        }
    }
    Ok(header_len)
}

/// Computes and stores the checksum of `segment` (header + payload, exactly) sent from `src`
/// to `dst` (RFC 9293 §3.1).
pub fn fill_tcp_checksum(segment: &mut [u8], src: IpAddr, dst: IpAddr) -> Result<(), WireError> {
    if segment.len() < HEADER_LEN {
        return Err(WireError::BufferTooSmall);
    }
    let len = u32::try_from(segment.len()).map_err(|_| WireError::BadTotalLen)?;
    put16(segment, 16, 0);
    let s =
        checksum::pseudo_header_sum(src, dst, ipv4::protocol::TCP, len) + checksum::sum(segment);
    put16(segment, 16, !checksum::fold(s));
    Ok(())
}

/// Per-frame addressing for `build_tcp_frame` (IPv4; an IPv6 builder would take its own).
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct FrameAddrs {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub ttl: u8,
    pub ip_id: u16,
}

/// Where the caller must place the payload before `build_tcp_frame`: 14 + 20 + TCP header.
#[inline]
pub fn tcp_payload_offset(o: &TcpOptions) -> usize {
    ethernet::HEADER_LEN + ipv4::HEADER_LEN + tcp_header_len(o)
}

/// TX path: the caller has already placed `payload_len` bytes at `tcp_payload_offset(&h.options)`
/// in `buf`; writes Ethernet II, IPv4 (no options, DF) and TCP headers plus both checksums in
/// front of it and returns the frame length. Errors, before writing anything, if `buf` is too
/// small (`BufferTooSmall`) or the IPv4 Total Length would exceed 65535 (`BadTotalLen`).
pub fn build_tcp_frame(
    buf: &mut [u8],
    a: &FrameAddrs,
    h: &TcpHeader,
    payload_len: usize,
) -> Result<usize, WireError> {
    let seg_len = tcp_header_len(&h.options)
        .checked_add(payload_len)
        .ok_or(WireError::BadTotalLen)?;
    if seg_len > usize::from(u16::MAX) - ipv4::HEADER_LEN {
        return Err(WireError::BadTotalLen);
    }
    let ip_at = ethernet::HEADER_LEN;
    let tcp_at = ip_at + ipv4::HEADER_LEN;
    let frame_len = tcp_at + seg_len;
    let frame = buf.get_mut(..frame_len).ok_or(WireError::BufferTooSmall)?;
    emit_ethernet_header(frame, a.dst_mac, a.src_mac, ethernet::ethertype::IPV4)?;
    let ip = Ipv4Repr {
        src: a.src_ip,
        dst: a.dst_ip,
        protocol: ipv4::protocol::TCP,
        ttl: a.ttl,
        ident: a.ip_id,
        payload_len: seg_len,
    };
    let (eth_ip, segment) = frame.split_at_mut(tcp_at);
    ip.emit(&mut eth_ip[ip_at..])?;
    emit_tcp_header(segment, h)?;
    fill_tcp_checksum(segment, a.src_ip.into(), a.dst_ip.into())?;
    Ok(frame_len)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::ethernet::EthernetFrame;
    use crate::wire::ipv4::Ipv4Packet;
    use proptest::prelude::*;

    /// A real Linux SYN, 192.168.1.137:39818 → 8.8.8.8:80, window 29200, options
    /// `MSS 1460, SACK_PERM, TS val 0x592b2997 ecr 0, NOP, WS 7`; IPv4 id 0xc8a5, DF, TTL 64.
    /// Both checksums (IP 0x9fd5, TCP 0x3f5f) re-verified with an independent script. The
    /// Ethernet header (52:54:00:ab:cd:ef → 52:54:00:12:35:02) is ours.
    pub(crate) const LINUX_SYN_FRAME: [u8; 74] = [
        0x52, 0x54, 0x00, 0x12, 0x35, 0x02, 0x52, 0x54, 0x00, 0xab, 0xcd, 0xef, 0x08, 0x00, //
        0x45, 0x00, 0x00, 0x3c, 0xc8, 0xa5, 0x40, 0x00, 0x40, 0x06, 0x9f, 0xd5, 0xc0, 0xa8, 0x01,
        0x89, //
        0x08, 0x08, 0x08, 0x08, //
        0x9b, 0x8a, 0x00, 0x50, 0xde, 0x67, 0xc7, 0x4a, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02, 0x72,
        0x10, //
        0x3f, 0x5f, 0x00, 0x00, //
        0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x59, 0x2b, 0x29, 0x97, 0x00, 0x00, 0x00,
        0x00, //
        0x01, 0x03, 0x03, 0x07,
    ];

    fn syn_addrs() -> FrameAddrs {
        FrameAddrs {
            src_mac: MacAddr([0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]),
            dst_mac: MacAddr([0x52, 0x54, 0x00, 0x12, 0x35, 0x02]),
            src_ip: Ipv4Addr::new(192, 168, 1, 137),
            dst_ip: Ipv4Addr::new(8, 8, 8, 8),
            ttl: 64,
            ip_id: 0xc8a5,
        }
    }

    fn syn_header() -> TcpHeader {
        TcpHeader {
            src_port: 39818,
            dst_port: 80,
            seq: SeqNum(0xde67_c74a),
            ack: SeqNum(0),
            flags: TcpFlags::SYN,
            window: 29200,
            options: TcpOptions {
                mss: Some(1460),
                wscale: Some(7),
                sack_permitted: true,
                timestamps: Some((0x592b_2997, 0)),
                ..Default::default()
            },
        }
    }

    /// Parses a whole Ethernet/IPv4/TCP frame the way the worker will.
    fn parse_frame(f: &[u8]) -> Result<(TcpHeader, Vec<u8>, ChecksumStatus), WireError> {
        let e = EthernetFrame::new_checked(f)?;
        let ip = Ipv4Packet::new_checked(e.payload())?;
        let t = TcpPacket::new_checked(ip.payload())?;
        Ok((
            t.header(),
            t.payload().to_vec(),
            t.checksum_status(ip.src().into(), ip.dst().into()),
        ))
    }

    #[test]
    fn parse_golden_syn() {
        let (h, payload, cs) = parse_frame(&LINUX_SYN_FRAME).unwrap();
        assert_eq!(h, syn_header());
        assert!(payload.is_empty());
        assert_eq!(cs, ChecksumStatus::Valid);
        let t = TcpPacket::new_checked(&LINUX_SYN_FRAME[34..]).unwrap();
        assert_eq!(
            (t.header_len(), t.checksum(), t.urgent_pointer()),
            (40, 0x3f5f, 0)
        );
    }

    #[test]
    fn every_truncation_fails() {
        for n in 0..LINUX_SYN_FRAME.len() {
            assert!(parse_frame(&LINUX_SYN_FRAME[..n]).is_err(), "frame len {n}");
        }
        for n in 0..40 {
            assert!(
                TcpPacket::new_checked(&LINUX_SYN_FRAME[34..34 + n]).is_err(),
                "segment len {n}"
            );
        }
    }

    #[test]
    fn emit_reproduces_linux_syn() {
        let h = syn_header();
        assert_eq!(tcp_header_len(&h.options), 40);
        assert_eq!(tcp_payload_offset(&h.options), 74);
        let mut b = [0u8; 128];
        assert_eq!(build_tcp_frame(&mut b, &syn_addrs(), &h, 0), Ok(74));
        assert_eq!(b[..74], LINUX_SYN_FRAME[..]);
    }

    #[test]
    fn build_frame_with_payload_and_errors() {
        let mut h = syn_header();
        h.flags = TcpFlags::ACK | TcpFlags::PSH;
        h.options = TcpOptions {
            timestamps: Some((1, 2)),
            ..Default::default()
        };
        let off = tcp_payload_offset(&h.options);
        let mut b = vec![0u8; off + 5];
        b[off..].copy_from_slice(b"hello");
        assert_eq!(build_tcp_frame(&mut b, &syn_addrs(), &h, 5), Ok(off + 5));
        let (back, payload, cs) = parse_frame(&b).unwrap();
        assert_eq!(
            (back, &payload[..], cs),
            (h, &b"hello"[..], ChecksumStatus::Valid)
        );
        let before = b.clone();
        assert_eq!(
            build_tcp_frame(&mut b[..off + 4], &syn_addrs(), &h, 5),
            Err(WireError::BufferTooSmall)
        );
        assert_eq!(
            build_tcp_frame(&mut b, &syn_addrs(), &h, 65536),
            Err(WireError::BadTotalLen)
        );
        assert_eq!(
            build_tcp_frame(&mut b, &syn_addrs(), &h, usize::MAX),
            Err(WireError::BadTotalLen)
        );
        assert_eq!(b, before, "nothing written on error");
    }

    fn opts_bytes(h: &TcpHeader) -> Vec<u8> {
        let mut b = [0u8; 60];
        let n = emit_tcp_header(&mut b, h).unwrap();
        b[20..n].to_vec()
    }

    #[test]
    fn linux_option_layouts() {
        let mut h = TcpHeader::default();
        h.options.timestamps = Some((0x0102_0304, 0x0506_0708));
        assert_eq!(opts_bytes(&h), [1, 1, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8]);
        h.options = TcpOptions {
            sack_permitted: true,
            mss: Some(536),
            wscale: Some(20),
            ..Default::default()
        };
        // No timestamps: NOP NOP SACK_PERM; window scale clamped to 14 on output too.
        assert_eq!(opts_bytes(&h), [2, 4, 2, 24, 1, 1, 4, 2, 1, 3, 3, 14]);
        // ACK with TS and three SACK blocks (the most that fits beside TS): 12 + 4 + 24 = 40.
        let blk = |l, r| SackBlock {
            left: SeqNum(l),
            right: SeqNum(r),
        };
        h.options = TcpOptions {
            timestamps: Some((9, 10)),
            sack_blocks: [blk(1, 2), blk(3, 4), blk(5, 6), blk(7, 8)],
            sack_count: 4,
            ..Default::default()
        };
        let o = opts_bytes(&h);
        assert_eq!(o.len(), 40);
        assert_eq!(o[12..16], [1, 1, 5, 26]);
        let back = parse_options(&o).unwrap();
        assert_eq!(back.sacks(), &h.options.sack_blocks[..3]);
        // Without TS all four fit (36 bytes); with MSS+TS+WS only two.
        h.options.timestamps = None;
        assert_eq!(tcp_header_len(&h.options), 56);
        h.options.timestamps = Some((0, 0));
        h.options.mss = Some(1);
        h.options.wscale = Some(0);
        assert_eq!(tcp_header_len(&h.options), 60);
        assert_eq!(parse_options(&opts_bytes(&h)).unwrap().sack_count, 2);
        let mut b = [0u8; 59];
        assert_eq!(emit_tcp_header(&mut b, &h), Err(WireError::BufferTooSmall));
    }

    #[test]
    fn option_parsing_rules() {
        // Unknown kind 34 (TFO cookie, length 4) skipped; EOL ends parsing, garbage after ignored.
        let o = parse_options(&[34, 4, 0xaa, 0xbb, 2, 4, 0x05, 0xb4, 0, 0xff, 0xff, 0xff]).unwrap();
        assert_eq!(o.mss, Some(1460));
        // Shift count 15 is used as 14 (RFC 7323 §2.3).
        assert_eq!(parse_options(&[1, 3, 3, 15]).unwrap().wscale, Some(14));
        let bad: &[&[u8]] = &[
            &[2],                                // length byte missing
            &[34, 0],                            // length < 2
            &[34, 1, 1, 1],                      // length < 2
            &[34, 5, 0, 0],                      // runs past the header
            &[2, 3, 0],                          // MSS with length 3
            &[3, 4, 1, 0],                       // WS with length 4
            &[4, 3, 0, 0],                       // SACK_PERM with length 3
            &[8, 8, 0, 0, 0, 0, 0, 0],           // TS with length 8
            &[5, 2],                             // SACK with no block
            &[5, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0], // SACK length not 2 + 8n
        ];
        for b in bad {
            assert_eq!(parse_options(b), Err(WireError::BadOption), "{b:?}");
        }
        // A bad option inside a segment fails new_checked.
        let mut seg = LINUX_SYN_FRAME[34..].to_vec();
        seg[21] = 5; // MSS length 5
        assert_eq!(
            TcpPacket::new_checked(&seg[..]).unwrap_err(),
            WireError::BadOption
        );
        seg[12] = 0x40; // Data Offset 4
        assert_eq!(
            TcpPacket::new_checked(&seg[..]).unwrap_err(),
            WireError::BadHeaderLen
        );
        seg[12] = 0xf0; // Data Offset 15 > 40-byte segment
        assert_eq!(
            TcpPacket::new_checked(&seg[..]).unwrap_err(),
            WireError::BadHeaderLen
        );
    }

    #[test]
    fn four_sack_blocks_parse() {
        let mut o = vec![1, 1, 5, 34];
        for i in 0..8u32 {
            o.extend_from_slice(&(i * 100).to_be_bytes());
        }
        let p = parse_options(&o).unwrap();
        assert_eq!(p.sack_count, 4);
        assert_eq!(
            p.sacks()[3],
            SackBlock {
                left: SeqNum(600),
                right: SeqNum(700)
            }
        );
    }

    fn arb_header() -> impl Strategy<Value = TcpHeader> {
        let blk = (any::<u32>(), any::<u32>()).prop_map(|(l, r)| SackBlock {
            left: SeqNum(l),
            right: SeqNum(r),
        });
        let opts = (
            proptest::option::of(any::<u16>()),
            proptest::option::of(0u8..=MAX_WSCALE),
            any::<bool>(),
            proptest::option::of((any::<u32>(), any::<u32>())),
            proptest::array::uniform4(blk),
            0u8..=4,
        )
            .prop_map(
                |(mss, wscale, sack_permitted, timestamps, sack_blocks, sack_count)| TcpOptions {
                    mss,
                    wscale,
                    sack_permitted,
                    timestamps,
                    sack_blocks,
                    sack_count,
                },
            );
        (
            any::<u16>(),
            any::<u16>(),
            any::<u32>(),
            any::<u32>(),
            any::<u8>(),
            any::<u16>(),
            opts,
        )
            .prop_map(
                |(src_port, dst_port, seq, ack, flags, window, options)| TcpHeader {
                    src_port,
                    dst_port,
                    seq: SeqNum(seq),
                    ack: SeqNum(ack),
                    flags: TcpFlags(flags),
                    window,
                    options,
                },
            )
    }

    proptest! {
        #[test]
        fn emit_parse_round_trip(h in arb_header(), payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let off = tcp_payload_offset(&h.options);
            let mut b = vec![0u8; off + payload.len()];
            b[off..].copy_from_slice(&payload);
            prop_assert_eq!(build_tcp_frame(&mut b, &syn_addrs(), &h, payload.len()), Ok(b.len()));
            let (back, p, cs) = parse_frame(&b).unwrap();
            // Only the SACK blocks that fit are sent; unused slots come back as default.
            let mut want = h;
            let (_, fit) = options_layout(&h.options);
            want.options.sack_count = fit as u8;
            for s in want.options.sack_blocks.iter_mut().skip(fit) {
                *s = SackBlock::default();
            }
            prop_assert_eq!(back, want);
            prop_assert_eq!(p, payload);
            prop_assert_eq!(cs, ChecksumStatus::Valid);
        }
    }
}
