//! ICMPv4 echo (RFC 792 "Echo or Echo Reply Message"; host rules RFC 1122 §3.2.2.6).
//! Only echo request is handled; other messages parse but the caller drops them.

use super::ethernet::{self, EthernetFrame, MacAddr};
use super::ipv4::{self, Ipv4Packet};
use super::{be16, checksum, put16, WireError};
use std::net::Ipv4Addr;

/// Type, code, checksum, then 4 bytes that for echo are identifier and sequence number.
pub const HEADER_LEN: usize = 8;
/// Type values (RFC 792).
pub const TYPE_ECHO_REPLY: u8 = 0;
pub const TYPE_ECHO_REQUEST: u8 = 8;

/// A checked view of an ICMPv4 message; `buf` is exactly the IPv4 payload.
#[derive(Copy, Clone, Debug)]
pub struct Icmpv4Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// Checks the 8-byte header is present and the checksum over the whole message verifies
    /// (RFC 792: "the 16-bit one's complement of the one's complement sum of the ICMP message").
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if !checksum::verifies(checksum::sum(b)) {
            return Err(WireError::BadChecksum);
        }
        Ok(Icmpv4Packet { buf })
    }
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buf.as_ref().first().copied().unwrap_or(0)
    }
    #[inline]
    pub fn code(&self) -> u8 {
        self.buf.as_ref().get(1).copied().unwrap_or(0)
    }
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), 2)
    }
    /// Echo: Identifier.
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        be16(self.buf.as_ref(), 4)
    }
    /// Echo: Sequence Number.
    #[inline]
    pub fn echo_seq_no(&self) -> u16 {
        be16(self.buf.as_ref(), 6)
    }
    /// Echo: Data (echoed back unchanged).
    #[inline]
    pub fn data(&self) -> &[u8] {
        self.buf.as_ref().get(HEADER_LEN..).unwrap_or(&[])
    }
    /// Type 8, code 0.
    #[inline]
    pub fn is_echo_request(&self) -> bool {
        self.msg_type() == TYPE_ECHO_REQUEST && self.code() == 0
    }
}

/// A usable unicast source or destination: not unspecified, limited broadcast or multicast
/// (RFC 1122 §3.2.1.3). Subnet-directed broadcast needs the netmask; the caller only hands us
/// frames addressed to one of its own unicast addresses.
fn is_unicast(a: Ipv4Addr) -> bool {
    !(a.is_unspecified() || a.is_broadcast() || a.is_multicast())
}

/// Turns the echo-request frame in `frame` (Ethernet + IPv4 + ICMP) into its echo reply in
/// place and returns the reply's frame length (trailing Ethernet padding dropped).
///
/// Swaps the Ethernet and IPv4 addresses (the IPv4 checksum is unchanged by a swap), sets TTL to
/// `ipv4::DEFAULT_TTL` and Type to 0, and patches both checksums incrementally (RFC 1624).
/// Identifier, sequence number and data are echoed unchanged (RFC 792); IP options are copied
/// as received (RFC 1122 §3.2.2.6 only SHOULDs updating Record Route/Timestamp).
///
/// Errors: any parse error of the three layers; `Unsupported` for non-IPv4, non-ICMP, a fragment
/// (no reassembly), anything but echo request, or a multicast/broadcast address on either side
/// (RFC 1122 §3.2.2.6 allows discarding echo to broadcast/multicast; a reply to one would be a
/// reflection). The frame is only modified on success.
pub fn echo_reply_in_place(frame: &mut [u8]) -> Result<usize, WireError> {
    let eth = EthernetFrame::new_checked(&*frame)?;
    if eth.ethertype() != ethernet::ethertype::IPV4 {
        return Err(WireError::Unsupported);
    }
    let (eth_dst, eth_src) = (eth.dst(), eth.src());
    let ip = Ipv4Packet::new_checked(eth.payload())?;
    if ip.protocol() != ipv4::protocol::ICMP || ip.is_fragment() {
        return Err(WireError::Unsupported);
    }
    let icmp = Icmpv4Packet::new_checked(ip.payload())?;
    if !icmp.is_echo_request() {
        return Err(WireError::Unsupported);
    }
    if eth_dst.is_multicast()
        || eth_src.is_multicast()
        || !is_unicast(ip.src())
        || !is_unicast(ip.dst())
    {
        return Err(WireError::Unsupported);
    }
    let (ip_src, ip_dst, ttl, proto) = (ip.src(), ip.dst(), ip.ttl(), ip.protocol());
    let (ip_csum, icmp_csum) = (ip.checksum(), icmp.checksum());
    let ip_at = ethernet::HEADER_LEN;
    let icmp_at = ip_at + ip.header_len();
    let frame_len = ip_at + ip.total_len();

    // L2: back to the sender.
    set_mac(frame, 0, eth_src);
    set_mac(frame, 6, eth_dst);
    // L3: swap addresses (sum unchanged), fresh TTL: the TTL/Protocol word changes (RFC 1624).
    set_ip(frame, ip_at + 12, ip_dst);
    set_ip(frame, ip_at + 16, ip_src);
    let old_word = u16::from_be_bytes([ttl, proto]);
    let new_word = u16::from_be_bytes([ipv4::DEFAULT_TTL, proto]);
    put16(frame, ip_at + 8, new_word);
    put16(
        frame,
        ip_at + 10,
        checksum::update(ip_csum, old_word, new_word),
    );
    // ICMP: Type 8 → 0 in the Type/Code word (code is 0).
    let old_word = u16::from_be_bytes([TYPE_ECHO_REQUEST, 0]);
    let new_word = u16::from_be_bytes([TYPE_ECHO_REPLY, 0]);
    put16(frame, icmp_at, new_word);
    put16(
        frame,
        icmp_at + 2,
        checksum::update(icmp_csum, old_word, new_word),
    );
    Ok(frame_len)
}

fn set_mac(b: &mut [u8], at: usize, m: MacAddr) {
    if let Some(s) = b.get_mut(at..).and_then(|s| s.get_mut(..6)) {
        s.copy_from_slice(&m.0);
    }
}

fn set_ip(b: &mut [u8], at: usize, a: Ipv4Addr) {
    if let Some(s) = b.get_mut(at..).and_then(|s| s.get_mut(..4)) {
        s.copy_from_slice(&a.octets());
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `ping -c1 -s 8 10.0.0.1` from 10.0.0.2 (Linux, TTL 64, id 0x3b1c, DF), padded to 60 bytes
    /// on the wire. Checksums cross-checked with an independent script: IP 0xebba, ICMP 0x5631.
    pub(crate) const ECHO_REQUEST_FRAME: [u8; 60] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x52, 0x54, 0x00, 0xab, 0xcd, 0xef, 0x08,
        0x00, // eth
        0x45, 0x00, 0x00, 0x24, 0x3b, 0x1c, 0x40, 0x00, 0x40, 0x01, 0xeb, 0xba, // ip
        0x0a, 0x00, 0x00, 0x02, 0x0a, 0x00, 0x00, 0x01, //
        0x08, 0x00, 0x56, 0x31, 0x00, 0x2a, 0x00, 0x01, // icmp: type code csum id seq
        0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03, 0x04, // data
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // padding
    ];

    #[test]
    fn parse_golden() {
        let ip = Ipv4Packet::new_checked(&ECHO_REQUEST_FRAME[14..]).unwrap();
        let p = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert!(p.is_echo_request());
        assert_eq!(
            (p.echo_ident(), p.echo_seq_no(), p.checksum()),
            (0x2a, 1, 0x5631)
        );
        assert_eq!(p.data(), &[0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4]);
        for n in 0..HEADER_LEN {
            assert_eq!(
                Icmpv4Packet::new_checked(&ip.payload()[..n]).unwrap_err(),
                WireError::Truncated
            );
        }
        let mut m = ip.payload().to_vec();
        m[9] ^= 0x10;
        assert_eq!(
            Icmpv4Packet::new_checked(&m[..]).unwrap_err(),
            WireError::BadChecksum
        );
    }

    #[test]
    fn reply_in_place() {
        let mut f = ECHO_REQUEST_FRAME;
        assert_eq!(echo_reply_in_place(&mut f), Ok(50));
        let e = EthernetFrame::new_checked(&f[..50]).unwrap();
        assert_eq!(e.dst(), MacAddr([0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]));
        assert_eq!(e.src(), MacAddr([0x02, 0, 0, 0, 0, 1]));
        let ip = Ipv4Packet::new_checked(e.payload()).unwrap(); // checksum verified
        assert_eq!(
            (ip.src(), ip.dst(), ip.ttl()),
            (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), 64)
        );
        let p = Icmpv4Packet::new_checked(ip.payload()).unwrap(); // checksum verified
        assert_eq!(
            (p.msg_type(), p.code(), p.echo_ident(), p.echo_seq_no()),
            (0, 0, 0x2a, 1)
        );
        assert_eq!(p.data(), &ECHO_REQUEST_FRAME[42..50]);
        // Incremental update equals recomputation (script: 0x5e31 = 0x5631 + 0x0800).
        assert_eq!(p.checksum(), 0x5e31);
        // A reply is not a request.
        let mut again = f;
        assert_eq!(echo_reply_in_place(&mut again), Err(WireError::Unsupported));
        assert_eq!(again, f);
    }

    #[test]
    fn ttl_update_verifies() {
        let mut f = ECHO_REQUEST_FRAME;
        f[22] = 3; // a request that crossed routers: TTL 3 (fix the IP checksum by hand)
        f[24..26].fill(0);
        let c = checksum::checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        echo_reply_in_place(&mut f).unwrap();
        assert!(Ipv4Packet::new_checked(&f[14..]).is_ok());
        assert_eq!(f[22], 64);
    }

    #[test]
    fn refuses_broadcast_and_truncation() {
        let mut f = ECHO_REQUEST_FRAME;
        f[0..6].fill(0xff);
        assert_eq!(echo_reply_in_place(&mut f), Err(WireError::Unsupported));
        for n in 0..50 {
            let mut t = ECHO_REQUEST_FRAME[..n].to_vec();
            assert!(echo_reply_in_place(&mut t).is_err(), "len {n}");
            assert_eq!(&t[..], &ECHO_REQUEST_FRAME[..n]);
        }
    }
}
