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

/// Length of an Ethernet frame padded to the 60-byte minimum (without FCS).
pub const PADDED_FRAME_LEN: usize = 60;

/// flowtwin's tag in the Ethernet padding of a gratuitous ARP: which engine claims the VIP
/// and with which epoch. Receivers that do not know it see ordinary padding (RFC 894 pads a
/// frame to the minimum; the content of padding is not looked at). An active engine that
/// hears another engine claim its VIP with a newer epoch knows it has been taken over (the
/// sync link may be cut) and fences itself: VRRP's advertisements carry the same idea.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct AnnounceTag {
    pub node_id: u32,
    pub epoch: u64,
}

impl AnnounceTag {
    const MAGIC: [u8; 4] = *b"FTwn";
    /// Magic, node id, epoch (little-endian): 16 of the 18 padding bytes after an ARP.
    pub const LEN: usize = 16;

    /// Writes the tag at the start of `pad` (the bytes after the ARP packet).
    pub fn write(&self, pad: &mut [u8]) -> Result<(), WireError> {
        let p = pad.get_mut(..Self::LEN).ok_or(WireError::BufferTooSmall)?;
        p[..4].copy_from_slice(&Self::MAGIC);
        p[4..8].copy_from_slice(&self.node_id.to_le_bytes());
        p[8..16].copy_from_slice(&self.epoch.to_le_bytes());
        Ok(())
    }

    /// Reads a tag from the bytes after an ARP packet; `None` for any other padding.
    pub fn read(pad: &[u8]) -> Option<AnnounceTag> {
        let p = pad.get(..Self::LEN)?;
        if p[..4] != Self::MAGIC {
            return None;
        }
        let node_id = u32::from_le_bytes(p[4..8].try_into().ok()?);
        let epoch = u64::from_le_bytes(p[8..16].try_into().ok()?);
        Some(AnnounceTag { node_id, epoch })
    }

    /// A gratuitous ARP for `ip` from `mac`, padded to 60 bytes and carrying this tag.
    pub fn emit_gratuitous(&self, mac: MacAddr, ip: Ipv4Addr, buf: &mut [u8]) -> Result<usize, WireError> {
        let buf = buf.get_mut(..PADDED_FRAME_LEN).ok_or(WireError::BufferTooSmall)?;
        let n = ArpRepr::gratuitous(mac, ip).emit_frame(buf)?;
        buf[n..].fill(0);
        self.write(&mut buf[n..])?;
        Ok(PADDED_FRAME_LEN)
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

    #[test]
    fn announce_tag_rides_in_the_padding() {
        let tag = AnnounceTag { node_id: 2, epoch: 0x0102_0304_0506_0708 };
        let mut buf = [0xa5u8; 64];
        let n = tag.emit_gratuitous(MacAddr([0, 0, 0x5e, 0, 1, 1]), Ipv4Addr::new(198, 18, 0, 100), &mut buf).unwrap();
        assert_eq!(n, PADDED_FRAME_LEN);
        let payload = &buf[ethernet::HEADER_LEN..n];
        let arp = ArpRepr::parse(payload).unwrap();
        assert_eq!(arp, ArpRepr::gratuitous(MacAddr([0, 0, 0x5e, 0, 1, 1]), Ipv4Addr::new(198, 18, 0, 100)));
        assert_eq!(AnnounceTag::read(&payload[PACKET_LEN..]), Some(tag));
        assert_eq!(&payload[PACKET_LEN + AnnounceTag::LEN..], &[0, 0], "the rest of the padding is zero");
        // Ordinary padding (Linux pads with zeros) and short padding are no tag.
        assert_eq!(AnnounceTag::read(&[0; 18]), None);
        assert_eq!(AnnounceTag::read(&payload[PACKET_LEN..PACKET_LEN + 8]), None);
        assert!(tag.emit_gratuitous(MacAddr::ZERO, Ipv4Addr::LOCALHOST, &mut [0u8; 59]).is_err());
    }
}
