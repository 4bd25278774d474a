//! Ethernet II frames (IEEE 802.3 §3.2.6 Length/Type field used as EtherType).
//! 802.1Q tags are not parsed: a tagged frame reports `ethertype::VLAN` and the caller drops it.

use super::{be16, put16, WireError};
use core::fmt;

/// EtherType values (IEEE registry) flowtwin looks at.
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    /// 802.1Q VLAN tag: not supported, reported so the caller can count and drop.
    pub const VLAN: u16 = 0x8100;
    pub const IPV6: u16 = 0x86dd;
}

/// Destination MAC, source MAC, EtherType.
pub const HEADER_LEN: usize = 14;

/// A 48-bit IEEE 802 MAC address.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// Reads a MAC address from the first 6 bytes of `b` (all zero if shorter).
    #[inline]
    pub(crate) fn from_slice(b: &[u8]) -> MacAddr {
        match b.get(..6) {
            Some(&[a, b, c, d, e, f]) => MacAddr([a, b, c, d, e, f]),
            _ => MacAddr::ZERO,
        }
    }
    #[inline]
    pub fn is_broadcast(&self) -> bool {
        *self == MacAddr::BROADCAST
    }
    /// I/G bit (least significant bit of the first octet) set: group address, broadcast included.
    #[inline]
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A checked view of an Ethernet II frame (FCS already stripped by the NIC).
#[derive(Copy, Clone, Debug)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// The only way in for untrusted bytes: at least a full 14-byte header.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        if buf.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(EthernetFrame { buf })
    }
    #[inline]
    pub fn dst(&self) -> MacAddr {
        MacAddr::from_slice(self.buf.as_ref())
    }
    #[inline]
    pub fn src(&self) -> MacAddr {
        MacAddr::from_slice(self.buf.as_ref().get(6..).unwrap_or(&[]))
    }
    /// EtherType; `ethertype::VLAN` for a tagged frame (not supported).
    #[inline]
    pub fn ethertype(&self) -> u16 {
        be16(self.buf.as_ref(), 12)
    }
    /// Everything after the header, including any trailing padding to the 60-byte minimum.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        self.buf.as_ref().get(HEADER_LEN..).unwrap_or(&[])
    }
    #[inline]
    pub fn into_inner(self) -> T {
        self.buf
    }
}

/// Writes a 14-byte Ethernet II header at the start of `buf`.
pub fn emit_ethernet_header(
    buf: &mut [u8],
    dst: MacAddr,
    src: MacAddr,
    ethertype: u16,
) -> Result<(), WireError> {
    let h = buf.get_mut(..HEADER_LEN).ok_or(WireError::BufferTooSmall)?;
    h[0..6].copy_from_slice(&dst.0);
    h[6..12].copy_from_slice(&src.0);
    put16(h, 12, ethertype);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_display_and_kinds() {
        let m = MacAddr([0x02, 0x00, 0x5e, 0x10, 0xab, 0xcd]);
        assert_eq!(m.to_string(), "02:00:5e:10:ab:cd");
        assert!(!m.is_multicast() && !m.is_broadcast());
        assert!(MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]).is_multicast());
        assert!(MacAddr::BROADCAST.is_broadcast() && MacAddr::BROADCAST.is_multicast());
        assert_eq!(format!("{:?}", MacAddr::BROADCAST), "ff:ff:ff:ff:ff:ff");
    }

    #[test]
    fn parse_golden_and_truncations() {
        let f = &crate::wire::tcp::tests::LINUX_SYN_FRAME;
        let e = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!(e.dst(), MacAddr([0x52, 0x54, 0x00, 0x12, 0x35, 0x02]));
        assert_eq!(e.src(), MacAddr([0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]));
        assert_eq!(e.ethertype(), ethertype::IPV4);
        assert_eq!(e.payload(), &f[14..]);
        for n in 0..HEADER_LEN {
            assert_eq!(
                EthernetFrame::new_checked(&f[..n]).unwrap_err(),
                WireError::Truncated
            );
        }
        assert!(EthernetFrame::new_checked(&f[..14])
            .unwrap()
            .payload()
            .is_empty());
    }

    #[test]
    fn vlan_reported_not_parsed() {
        let mut f = [0u8; 18];
        f[12..14].copy_from_slice(&[0x81, 0x00]);
        assert_eq!(
            EthernetFrame::new_checked(&f[..]).unwrap().ethertype(),
            ethertype::VLAN
        );
    }

    #[test]
    fn emit_round_trip() {
        let mut b = [0u8; 20];
        let (d, s) = (MacAddr::BROADCAST, MacAddr([2, 0, 0, 0, 0, 1]));
        emit_ethernet_header(&mut b, d, s, ethertype::ARP).unwrap();
        let e = EthernetFrame::new_checked(&b[..]).unwrap();
        assert_eq!((e.dst(), e.src(), e.ethertype()), (d, s, ethertype::ARP));
        assert_eq!(
            emit_ethernet_header(&mut b[..13], d, s, 0),
            Err(WireError::BufferTooSmall)
        );
    }
}
