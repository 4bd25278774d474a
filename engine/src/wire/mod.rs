//! Wire formats: zero-copy checked views over frame bytes plus owned `repr` types.
//!
//! Pattern (smoltcp `src/wire/`): untrusted bytes enter only through a view's `new_checked`,
//! which validates every length once; after that no accessor can panic. Emitters write into
//! caller-provided buffers and return `WireError::BufferTooSmall` instead of panicking.
//!
//! Layering: `ethernet` → (`arp` | `ipv4` → (`icmp` | `tcp`)). Only `ipv4` (and the IPv4 frame
//! builders in `icmp`/`tcp`) assume IPv4; checksums and TCP segment handling take
//! `std::net::IpAddr` so an IPv6 layer can slot in beside `ipv4`.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod ipv4;
pub mod repr;
pub mod tcp;

pub use repr::*;

pub use arp::{AnnounceTag, ArpOp, ArpRepr};
pub use checksum::ChecksumStatus;
pub use ethernet::{EthernetFrame, MacAddr};
pub use icmp::Icmpv4Packet;
pub use ipv4::{Ipv4Packet, Ipv4Repr};
pub use tcp::{FrameAddrs, TcpPacket};

#[cfg(test)]
mod fuzz_tests;

/// IP protocol numbers (IANA), shared by `ipv4` and the pseudo header `checksum` sums, so that
/// neither of the two has to import the other.
pub mod protocol {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
}

use core::fmt;

/// Why bytes could not be parsed or a header could not be emitted. Small and `Copy` so the
/// worker can map it straight onto a drop counter.
#[derive(Copy, Clone, PartialEq, Eq, Debug, Hash)]
pub enum WireError {
    /// The buffer ends before the header (or the length a header claims) does.
    Truncated,
    /// IP version field is not the one this parser handles.
    BadVersion,
    /// A header-length field is below the minimum or runs past the packet.
    BadHeaderLen,
    /// The IPv4 total length is smaller than the header or larger than the buffer.
    BadTotalLen,
    /// A checksum does not verify.
    BadChecksum,
    /// A TCP option is malformed (length byte < 2, runs past the header, wrong fixed length).
    BadOption,
    /// Well-formed but not something flowtwin handles (non-Ethernet/IPv4 ARP, unknown ARP op,
    /// ICMP other than echo request, ...).
    Unsupported,
    /// Emit: the output buffer is too small for what must be written.
    BufferTooSmall,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WireError::Truncated => "truncated packet",
            WireError::BadVersion => "bad IP version",
            WireError::BadHeaderLen => "bad header length",
            WireError::BadTotalLen => "bad total length",
            WireError::BadChecksum => "bad checksum",
            WireError::BadOption => "malformed option",
            WireError::Unsupported => "unsupported packet",
            WireError::BufferTooSmall => "output buffer too small",
        })
    }
}

impl std::error::Error for WireError {}

/// Big-endian field readers over slices whose length the caller has already checked. They
/// still never panic: a short slice reads as zero (which `new_checked` makes unreachable).
#[inline]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    match b.get(at..).and_then(|s| s.get(..2)) {
        Some(&[x, y]) => u16::from_be_bytes([x, y]),
        _ => 0,
    }
}

#[inline]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    match b.get(at..).and_then(|s| s.get(..4)) {
        Some(&[a, c, d, e]) => u32::from_be_bytes([a, c, d, e]),
        _ => 0,
    }
}

/// Writes `v` big-endian at `at`; a no-op if it does not fit (callers check lengths first).
#[inline]
pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    if let Some(s) = b.get_mut(at..).and_then(|s| s.get_mut(..2)) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

#[inline]
pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    if let Some(s) = b.get_mut(at..).and_then(|s| s.get_mut(..4)) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_helpers_never_panic() {
        assert_eq!(WireError::BadChecksum.to_string(), "bad checksum");
        assert_eq!(be16(&[1], 0), 0);
        assert_eq!(be16(&[1, 2, 3], usize::MAX), 0);
        assert_eq!(be32(&[1, 2, 3, 4], 0), 0x0102_0304);
        let mut b = [0u8; 3];
        put32(&mut b, 0, 7);
        put16(&mut b, usize::MAX, 7);
        put16(&mut b, 1, 0x0a0b);
        assert_eq!(b, [0, 0x0a, 0x0b]);
    }
}
