//! ARP for IPv4 over Ethernet (RFC 826), plus the gratuitous announcement a standby sends when it
//! claims a VIP (RFC 5227 §3 "ARP Announcement").

use super::ethernet::{self, emit_ethernet_header, MacAddr};
use super::{be16, put16, WireError};
use std::net::Ipv4Addr;

/// ARP packet length for Ethernet/IPv4: 8 fixed bytes + 2 × (6 + 4).
pub const PACKET_LEN: usize = 28;
/// Ethernet header + ARP packet. NICs pad it to the 60-byte minimum on transmit.
pub const FRAME_LEN: usize = ethernet::HEADER_LEN + PACKET_LEN;

/// ar$hrd for Ethernet (RFC 826; IANA "Hardware Types").
const HTYPE_ETHERNET: u16 = 1;

/// ar$op (RFC 826).
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum ArpOp {
    Request,
    Reply,
}

impl ArpOp {
    fn code(self) -> u16 {
        match self {
            ArpOp::Request => 1,
            ArpOp::Reply => 2,
        }
    }
}

/// A parsed Ethernet/IPv4 ARP packet (RFC 826 field names: sha, spa, tha, tpa).
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct ArpRepr {
    pub op: ArpOp,
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_mac: MacAddr,
    pub target_ip: Ipv4Addr,
}

impl ArpRepr {
    /// Parses the Ethernet payload of an ARP frame; trailing padding is ignored.
    /// Anything but hrd=Ethernet, pro=IPv4, hln=6, pln=4, op ∈ {1, 2} is `Unsupported` (RFC 826
    /// "Packet Reception": a receiver checks hrd/pro and may ignore what it does not speak).
    pub fn parse(payload: &[u8]) -> Result<ArpRepr, WireError> {
        let p = payload.get(..PACKET_LEN).ok_or(WireError::Truncated)?;
        if be16(p, 0) != HTYPE_ETHERNET
            || be16(p, 2) != ethernet::ethertype::IPV4
            || p[4] != 6
            || p[5] != 4
        {
            return Err(WireError::Unsupported);
        }
        let op = match be16(p, 6) {
            1 => ArpOp::Request,
            2 => ArpOp::Reply,
            _ => return Err(WireError::Unsupported),
        };
        Ok(ArpRepr {
            op,
            sender_mac: MacAddr::from_slice(&p[8..14]),
            sender_ip: Ipv4Addr::new(p[14], p[15], p[16], p[17]),
            target_mac: MacAddr::from_slice(&p[18..24]),
            target_ip: Ipv4Addr::new(p[24], p[25], p[26], p[27]),
        })
    }

    /// A request asking who has `target_ip` (tha unknown, so zero).
    pub fn request(sender_mac: MacAddr, sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> ArpRepr {
        ArpRepr {
            op: ArpOp::Request,
            sender_mac,
            sender_ip,
            target_mac: MacAddr::ZERO,
            target_ip,
        }
    }

    /// RFC 5227 §3 ARP Announcement ("gratuitous ARP"): a broadcast request with spa = tpa = `ip`
    /// and tha zero, so every neighbour (and the switch) updates its entry for `ip` to `mac`.
    pub fn gratuitous(mac: MacAddr, ip: Ipv4Addr) -> ArpRepr {
        ArpRepr::request(mac, ip, ip)
    }

    /// The reply to this request from the owner of `tpa` at `our_mac` (RFC 826 "Packet
    /// Reception": swap sender and target, fill in our hardware address, set op to reply).
    /// The caller checks that `target_ip` is one of ours.
    pub fn reply(&self, our_mac: MacAddr) -> ArpRepr {
        ArpRepr {
            op: ArpOp::Reply,
            sender_mac: our_mac,
            sender_ip: self.target_ip,
            target_mac: self.sender_mac,
            target_ip: self.sender_ip,
        }
    }

    /// Writes the 28-byte ARP packet at the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let p = buf.get_mut(..PACKET_LEN).ok_or(WireError::BufferTooSmall)?;
        put16(p, 0, HTYPE_ETHERNET);
        put16(p, 2, ethernet::ethertype::IPV4);
        p[4] = 6;
        p[5] = 4;
        put16(p, 6, self.op.code());
        p[8..14].copy_from_slice(&self.sender_mac.0);
        p[14..18].copy_from_slice(&self.sender_ip.octets());
        p[18..24].copy_from_slice(&self.target_mac.0);
        p[24..28].copy_from_slice(&self.target_ip.octets());
        Ok(())
    }

    /// Writes a whole frame: Ethernet source is sha; destination is broadcast for a request and
    /// tha for a reply (RFC 826 sends replies unicast). Returns `FRAME_LEN`.
    pub fn emit_frame(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        if buf.len() < FRAME_LEN {
            return Err(WireError::BufferTooSmall);
        }
        let dst = match self.op {
            ArpOp::Request => MacAddr::BROADCAST,
            ArpOp::Reply => self.target_mac,
        };
        emit_ethernet_header(buf, dst, self.sender_mac, ethernet::ethertype::ARP)?;
        self.emit(buf.get_mut(ethernet::HEADER_LEN..).unwrap_or(&mut []))?;
        Ok(FRAME_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ethernet::EthernetFrame;

    /// A Linux ARP request "who-has 10.0.0.1 tell 10.0.0.2", padded to 60 bytes by the sender.
    const REQUEST_FRAME: [u8; 60] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0x00, 0xab, 0xcd, 0xef, 0x08,
        0x06, // eth
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // hrd pro hln pln op
        0x52, 0x54, 0x00, 0xab, 0xcd, 0xef, 10, 0, 0, 2, // sha spa
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 10, 0, 0, 1, // tha tpa
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // padding
    ];
    const US: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);

    #[test]
    fn parse_golden_request() {
        let e = EthernetFrame::new_checked(&REQUEST_FRAME[..]).unwrap();
        assert_eq!(e.ethertype(), ethernet::ethertype::ARP);
        let a = ArpRepr::parse(e.payload()).unwrap();
        assert_eq!(
            a,
            ArpRepr::request(
                MacAddr([0x52, 0x54, 0, 0xab, 0xcd, 0xef]),
                [10, 0, 0, 2].into(),
                [10, 0, 0, 1].into()
            )
        );
        for n in 0..PACKET_LEN {
            assert_eq!(ArpRepr::parse(&e.payload()[..n]), Err(WireError::Truncated));
        }
    }

    #[test]
    fn reply_round_trip() {
        let req = ArpRepr::parse(&REQUEST_FRAME[14..]).unwrap();
        let rep = req.reply(US);
        let mut b = [0u8; 64];
        assert_eq!(rep.emit_frame(&mut b), Ok(FRAME_LEN));
        let e = EthernetFrame::new_checked(&b[..FRAME_LEN]).unwrap();
        assert_eq!((e.dst(), e.src()), (req.sender_mac, US));
        let back = ArpRepr::parse(e.payload()).unwrap();
        assert_eq!(back, rep);
        assert_eq!(
            (back.sender_ip, back.target_ip),
            (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2))
        );
        assert_eq!(b[20..22], [0, 2]);
        assert_eq!(
            rep.emit_frame(&mut b[..FRAME_LEN - 1]),
            Err(WireError::BufferTooSmall)
        );
    }

    #[test]
    fn gratuitous_is_broadcast_request_for_own_ip() {
        let vip = Ipv4Addr::new(10, 0, 0, 100);
        let mut b = [0u8; FRAME_LEN];
        ArpRepr::gratuitous(US, vip).emit_frame(&mut b).unwrap();
        let e = EthernetFrame::new_checked(&b[..]).unwrap();
        assert!(e.dst().is_broadcast());
        let a = ArpRepr::parse(e.payload()).unwrap();
        assert_eq!(
            (a.op, a.sender_ip, a.target_ip, a.target_mac),
            (ArpOp::Request, vip, vip, MacAddr::ZERO)
        );
    }

    #[test]
    fn unsupported_variants() {
        // hrd 6, pro 0x0886, hln 8, pln 16, op 3.
        for (at, v) in [(1usize, 6u8), (3, 0x86), (4, 8), (5, 16), (7, 3)] {
            let mut p = REQUEST_FRAME[14..].to_vec();
            p[at] = v;
            assert_eq!(ArpRepr::parse(&p), Err(WireError::Unsupported), "byte {at}");
        }
    }
}
