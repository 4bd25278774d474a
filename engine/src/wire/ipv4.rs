//! IPv4 (RFC 791). The only module that knows IPv4 header layout; everything above it takes
//! `IpAddr` or plain payload slices so an IPv6 sibling can be added.

use super::{be16, checksum, put16, WireError};
use std::net::Ipv4Addr;

/// Protocol numbers (IANA "Assigned Internet Protocol Numbers") flowtwin looks at.
pub use super::protocol;

/// Header without options (IHL = 5).
pub const HEADER_LEN: usize = 20;
/// TTL for packets flowtwin originates (Linux `net.ipv4.ip_default_ttl`).
pub const DEFAULT_TTL: u8 = 64;

/// Flags field bits in the 16-bit flags/fragment-offset word (RFC 791 §3.1).
const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// A checked view of an IPv4 packet. `buf` is the Ethernet payload and may carry trailing
/// padding beyond Total Length, which is ignored.
#[derive(Copy, Clone, Debug)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Validates, per RFC 791 §3.1 and RFC 1122 §3.2.1.1–3.2.1.2: Version = 4; IHL ≥ 5;
    /// IHL × 4 ≤ Total Length ≤ buffer length; header checksum verifies.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[0] >> 4 != 4 {
            return Err(WireError::BadVersion);
        }
        let header_len = usize::from(b[0] & 0x0f) * 4;
        if header_len < HEADER_LEN {
            return Err(WireError::BadHeaderLen);
        }
        let total_len = usize::from(be16(b, 2));
        if total_len < header_len {
            return Err(WireError::BadTotalLen);
        }
        if total_len > b.len() {
            return Err(WireError::Truncated);
        }
        // RFC 1122 §3.2.1.2: a datagram whose header checksum fails MUST be silently discarded.
        if !checksum::verifies(checksum::sum(&b[..header_len])) {
            return Err(WireError::BadChecksum);
        }
        Ok(Ipv4Packet { buf })
    }

    #[inline]
    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }
    /// Internet Header Length in bytes (20..=60).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.b().first().copied().unwrap_or(0) & 0x0f) * 4
    }
    /// Whether the header carries options (IHL > 5). The engine does not act on them.
    #[inline]
    pub fn has_options(&self) -> bool {
        self.header_len() > HEADER_LEN
    }
    /// Total Length: header plus data, excluding link-layer padding.
    #[inline]
    pub fn total_len(&self) -> usize {
        usize::from(be16(self.b(), 2))
    }
    /// Identification.
    #[inline]
    pub fn ident(&self) -> u16 {
        be16(self.b(), 4)
    }
    /// Don't Fragment.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        be16(self.b(), 6) & FLAG_DF != 0
    }
    /// More Fragments.
    #[inline]
    pub fn more_frags(&self) -> bool {
        be16(self.b(), 6) & FLAG_MF != 0
    }
    /// Fragment Offset in bytes (the field counts 8-octet units).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (be16(self.b(), 6) & FRAG_OFFSET_MASK) * 8
    }
    /// Part of a fragmented datagram (MF set or nonzero offset). The engine does not reassemble.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        be16(self.b(), 6) & (FLAG_MF | FRAG_OFFSET_MASK) != 0
    }
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.b().get(8).copied().unwrap_or(0)
    }
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.b().get(9).copied().unwrap_or(0)
    }
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.b(), 10)
    }
    #[inline]
    pub fn src(&self) -> Ipv4Addr {
        addr(self.b(), 12)
    }
    #[inline]
    pub fn dst(&self) -> Ipv4Addr {
        addr(self.b(), 16)
    }
    /// The data: exactly Total Length − IHL × 4 bytes.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        self.b()
            .get(self.header_len()..self.total_len())
            .unwrap_or(&[])
    }
    #[inline]
    pub fn into_inner(self) -> T {
        self.buf
    }
}

#[inline]
fn addr(b: &[u8], at: usize) -> Ipv4Addr {
    match b.get(at..).and_then(|s| s.get(..4)) {
        Some(&[a, c, d, e]) => Ipv4Addr::new(a, c, d, e),
        _ => Ipv4Addr::UNSPECIFIED,
    }
}

/// What flowtwin puts in the IPv4 headers it originates: no options, TOS 0, DF set (we never
/// fragment; RFC 1191 path MTU discovery relies on DF, and Linux sets it on TCP by default).
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct Ipv4Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    pub ident: u16,
    /// Bytes after the IPv4 header.
    pub payload_len: usize,
}

impl Ipv4Repr {
    /// Writes a 20-byte header with its checksum at the start of `buf`. Errors if the buffer is
    /// shorter than the header or Total Length would exceed 65535.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let total_len = HEADER_LEN
            .checked_add(self.payload_len)
            .and_then(|n| u16::try_from(n).ok())
            .ok_or(WireError::BadTotalLen)?;
        let h = buf.get_mut(..HEADER_LEN).ok_or(WireError::BufferTooSmall)?;
        h[0] = 0x45; // Version 4, IHL 5
        h[1] = 0; // TOS (DSCP/ECN)
        put16(h, 2, total_len);
        put16(h, 4, self.ident);
        put16(h, 6, FLAG_DF);
        h[8] = self.ttl;
        h[9] = self.protocol;
        put16(h, 10, 0);
        h[12..16].copy_from_slice(&self.src.octets());
        h[16..20].copy_from_slice(&self.dst.octets());
        let c = checksum::checksum(h);
        put16(h, 10, c);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden() -> &'static [u8] {
        &crate::wire::tcp::tests::LINUX_SYN_FRAME[14..]
    }

    #[test]
    fn parse_golden() {
        let p = Ipv4Packet::new_checked(golden()).unwrap();
        assert_eq!(p.header_len(), 20);
        assert!(!p.has_options());
        assert_eq!(p.total_len(), 60);
        assert_eq!(p.ident(), 0xc8a5);
        assert!(p.dont_frag() && !p.more_frags() && !p.is_fragment());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), protocol::TCP);
        assert_eq!(p.checksum(), 0x9fd5);
        assert_eq!(p.src(), Ipv4Addr::new(192, 168, 1, 137));
        assert_eq!(p.dst(), Ipv4Addr::new(8, 8, 8, 8));
        assert_eq!(p.payload(), &golden()[20..]);
    }

    #[test]
    fn every_truncation_fails() {
        for n in 0..golden().len() {
            assert!(Ipv4Packet::new_checked(&golden()[..n]).is_err(), "len {n}");
        }
    }

    #[test]
    fn padding_ignored() {
        let mut b = golden().to_vec();
        b.extend_from_slice(&[0xee; 6]);
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.payload(), &golden()[20..]);
    }

    /// Rewrites the header bytes `f` changes, refreshing the checksum so only the intended
    /// check can fail.
    fn mutated(f: impl Fn(&mut [u8])) -> Result<(), WireError> {
        let mut b = golden().to_vec();
        f(&mut b);
        let hl = usize::from(b[0] & 0x0f) * 4;
        if (20..=b.len()).contains(&hl) {
            b[10..12].fill(0);
            let c = checksum::checksum(&b[..hl]);
            b[10..12].copy_from_slice(&c.to_be_bytes());
        }
        Ipv4Packet::new_checked(&b[..]).map(|_| ())
    }

    #[test]
    fn each_check() {
        assert_eq!(mutated(|b| b[0] = 0x65), Err(WireError::BadVersion));
        assert_eq!(mutated(|b| b[0] = 0x44), Err(WireError::BadHeaderLen));
        assert_eq!(
            mutated(|b| b[2..4].copy_from_slice(&19u16.to_be_bytes())),
            Err(WireError::BadTotalLen)
        );
        assert_eq!(
            mutated(|b| b[2..4].copy_from_slice(&61u16.to_be_bytes())),
            Err(WireError::Truncated)
        );
        // IHL 6 inside a 60-byte packet: 4 option bytes are taken from the TCP header.
        let p = mutated(|b| b[0] = 0x46);
        assert_eq!(p, Ok(()));
        let mut b = golden().to_vec();
        b[11] ^= 1;
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).unwrap_err(),
            WireError::BadChecksum
        );
    }

    #[test]
    fn options_and_fragments() {
        let mut b = golden().to_vec();
        b[0] = 0x46;
        b[6..8].copy_from_slice(&(0x2000u16 | 3).to_be_bytes()); // MF, offset 3 × 8
        b[10..12].fill(0);
        let c = checksum::checksum(&b[..24]);
        b[10..12].copy_from_slice(&c.to_be_bytes());
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(p.has_options() && p.more_frags() && !p.dont_frag() && p.is_fragment());
        assert_eq!((p.frag_offset(), p.payload().len()), (24, 36));
    }

    #[test]
    fn emit_round_trip_and_golden() {
        // Re-emitting the golden header's fields reproduces it byte for byte.
        let r = Ipv4Repr {
            src: Ipv4Addr::new(192, 168, 1, 137),
            dst: Ipv4Addr::new(8, 8, 8, 8),
            protocol: protocol::TCP,
            ttl: 64,
            ident: 0xc8a5,
            payload_len: 40,
        };
        let mut b = [0u8; 60];
        r.emit(&mut b).unwrap();
        assert_eq!(&b[..20], &golden()[..20]);
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(
            (p.src(), p.dst(), p.protocol(), p.ttl(), p.ident()),
            (r.src, r.dst, r.protocol, r.ttl, r.ident)
        );
        assert_eq!(r.emit(&mut b[..19]), Err(WireError::BufferTooSmall));
        for payload_len in [65516, usize::MAX] {
            let r = Ipv4Repr { payload_len, ..r };
            assert_eq!(r.emit(&mut b), Err(WireError::BadTotalLen));
        }
    }
}
