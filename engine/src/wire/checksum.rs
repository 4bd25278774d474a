//! The Internet checksum (RFC 1071), the TCP/UDP pseudo-header (RFC 9293 §3.1, RFC 8200 §8.1),
//! incremental update (RFC 1624) and detection of CHECKSUM_PARTIAL segments.
//!
//! Sums are carried unfolded in a `u64` and folded once at the end (RFC 1071 §2(C) "deferred
//! carries"). Partial sums of several slices may be added together as long as every slice but
//! the last has even length (RFC 1071 §2(B) byte-order independence only holds on 16-bit
//! boundaries).

use std::net::IpAddr;

/// Unfolded one's-complement sum of `data` read as big-endian 16-bit words; an odd trailing
/// byte is padded with a zero low byte (RFC 1071 §4.1).
///
/// Summed in the machine's own byte order, 32 bytes per step into four u64 lanes with
/// end-around carry (`add` + carry), then folded and byte-swapped once: RFC 1071 §2(B), the
/// one's-complement sum commutes with swapping the bytes of every 16-bit word. This is the
/// TCP path's costliest loop (every segment sent and received is summed in software; issue
/// 16, `scripts/bench-tcp-path`): ~1 instruction per 8 bytes instead of ~6. The result is
/// at most 0xffff, still an "unfolded" sum to add to others and fold.
pub fn sum(data: &[u8]) -> u64 {
    #[inline(always)]
    fn add(acc: u64, w: u64) -> u64 {
        let (s, c) = acc.overflowing_add(w);
        s + u64::from(c)
    }
    let word = |c: &[u8]| u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
    let (mut a, mut b, mut c, mut d) = (0u64, 0u64, 0u64, 0u64);
    let mut blocks = data.chunks_exact(32);
    for k in &mut blocks {
        a = add(a, word(&k[0..8]));
        b = add(b, word(&k[8..16]));
        c = add(c, word(&k[16..24]));
        d = add(d, word(&k[24..32]));
    }
    let mut acc = add(add(a, b), add(c, d));
    let mut chunks = blocks.remainder().chunks_exact(8);
    for k in &mut chunks {
        acc = add(acc, word(k));
    }
    let mut rest = chunks.remainder();
    if let [p, q, r, t, tail @ ..] = rest {
        acc = add(acc, u64::from(u32::from_ne_bytes([*p, *q, *r, *t])));
        rest = tail;
    }
    if let [p, q, tail @ ..] = rest {
        acc = add(acc, u64::from(u16::from_ne_bytes([*p, *q])));
        rest = tail;
    }
    if let [p] = rest {
        // The pad byte is the word's low byte in big-endian order: wherever the machine
        // puts the first byte of a word, it goes there.
        acc = add(acc, u64::from(u16::from_ne_bytes([*p, 0])));
    }
    u64::from(u16::from_be(fold(acc)))
}

/// Folds an unfolded sum to 16 bits with end-around carry (RFC 1071 §4.1). Not complemented.
#[inline]
pub fn fold(mut s: u64) -> u16 {
    // At most four rounds: 64 → 48 → 33 → 17 → 16 bits.
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// The checksum field value for `data` (checksum field zeroed): `!fold(sum)`.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data))
}

/// Whether an unfolded sum that includes the checksum field verifies (RFC 1071 §1: the sum of
/// all words including the checksum is all ones).
#[inline]
pub fn verifies(s: u64) -> bool {
    fold(s) == 0xffff
}

/// Unfolded sum of the pseudo-header for an upper-layer protocol over IP: RFC 9293 §3.1 (IPv4:
/// src, dst, zero, PTCL, TCP length) and RFC 8200 §8.1 (IPv6: src, dst, upper-layer packet
/// length, zero, next header). `upper_len` is the TCP/UDP header plus payload length. A mixed
/// v4/v6 pair sums both addresses as given; it can never match a real packet.
pub fn pseudo_header_sum(src: IpAddr, dst: IpAddr, protocol: u8, upper_len: u32) -> u64 {
    fn addr(a: IpAddr) -> u64 {
        match a {
            IpAddr::V4(a) => sum(&a.octets()),
            IpAddr::V6(a) => sum(&a.octets()),
        }
    }
    // The length is 16 bits in the IPv4 pseudo-header and 32 in IPv6; for lengths that fit in
    // 16 bits the two sums are identical, and 2^16 ≡ 1 keeps them equal beyond.
    addr(src)
        + addr(dst)
        + u64::from(protocol)
        + u64::from(upper_len >> 16)
        + u64::from(upper_len & 0xffff)
}

/// RFC 1624 §3 eqn. 3: new checksum after one 16-bit word changes from `old` to `new`,
/// `HC' = ~(~HC + ~m + m')`. Unlike eqn. 2 it never yields the ambiguous -0 on its own.
#[inline]
pub fn update(hc: u16, old: u16, new: u16) -> u16 {
    !fold(u64::from(!hc) + u64::from(!old) + u64::from(new))
}

/// The outcome of verifying a TCP checksum.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum ChecksumStatus {
    /// The checksum verifies.
    Valid,
    /// The field holds only the folded pseudo-header sum: the sender used TX checksum offload
    /// (Linux CHECKSUM_PARTIAL, e.g. over veth) and nobody filled it in. Counted as its own drop
    /// reason ("partial checksum (peer TX offload on?)"); test rigs disable TX offload on the peer.
    Partial,
    /// Anything else.
    Invalid,
}

/// Offset of the checksum field in the TCP header (RFC 9293 §3.1).
const TCP_CHECKSUM_AT: usize = 16;

/// Verifies the checksum of a TCP `segment` (header + payload, exactly the IP payload) sent from
/// `src` to `dst`. Never panics; a segment too short to hold a checksum is `Invalid`.
pub fn tcp_checksum_status(src: IpAddr, dst: IpAddr, segment: &[u8]) -> ChecksumStatus {
    let Ok(len) = u32::try_from(segment.len()) else {
        return ChecksumStatus::Invalid;
    };
    if segment.len() < TCP_CHECKSUM_AT + 2 {
        return ChecksumStatus::Invalid;
    }
    let pseudo = pseudo_header_sum(src, dst, super::protocol::TCP, len);
    if verifies(pseudo + sum(segment)) {
        return ChecksumStatus::Valid;
    }
    // CHECKSUM_PARTIAL: Linux stores `~tcp_v4_check(len, saddr, daddr, 0)`, i.e. the folded,
    // uncomplemented pseudo-header sum, and expects the device to finish the job. 0x0000 and
    // 0xffff are the same one's-complement value, so compare modulo that.
    let field = super::be16(segment, TCP_CHECKSUM_AT);
    let partial = fold(pseudo);
    if field == partial || (field == 0 && partial == 0xffff) || (field == 0xffff && partial == 0) {
        ChecksumStatus::Partial
    } else {
        ChecksumStatus::Invalid
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// Reference: RFC 1071 §3 literally, one 16-bit word at a time in u32.
    fn naive(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for c in data.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from(c[0]) << 8
            };
            s += u32::from(w);
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 numerical example: bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&d)), 0xddf2);
        assert_eq!(checksum(&d), 0x220d);
        assert_eq!(fold(sum(&[])), 0);
    }

    #[test]
    fn ipv4_header_vector() {
        // A commonly cited header (192.168.0.1 → 192.168.0.199, UDP) whose checksum is b861.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&h), 0xb861);
        h[10..12].copy_from_slice(&[0xb8, 0x61]);
        assert!(verifies(sum(&h)));
    }

    #[test]
    fn rfc1624_example() {
        // RFC 1624 §4: HC = 0xdd2f, m = 0x5555 → m' = 0x3285 gives HC' = 0x0000.
        assert_eq!(update(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    #[test]
    fn partial_detection() {
        // A real Linux SYN segment 192.168.1.137:39818 → 8.8.8.8:80 (checksum 0x3f5f).
        let (src, dst) = (
            IpAddr::V4(Ipv4Addr::new(192, 168, 1, 137)),
            IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8)),
        );
        let mut seg = crate::wire::tcp::tests::LINUX_SYN_FRAME[34..].to_vec();
        assert_eq!(tcp_checksum_status(src, dst, &seg), ChecksumStatus::Valid);
        // Same segment as veth with TX offload hands it over: pseudo-header sum only (checked
        // with an independent script: 0xd26f).
        seg[16..18].copy_from_slice(&0xd26fu16.to_be_bytes());
        assert_eq!(tcp_checksum_status(src, dst, &seg), ChecksumStatus::Partial);
        seg[16..18].copy_from_slice(&0xd26eu16.to_be_bytes());
        assert_eq!(tcp_checksum_status(src, dst, &seg), ChecksumStatus::Invalid);
        assert_eq!(
            tcp_checksum_status(src, dst, &seg[..17]),
            ChecksumStatus::Invalid
        );
    }

    #[test]
    fn ipv6_pseudo_header() {
        // RFC 8200 §8.1 layout, summed by hand: both addresses, 32-bit length, next header.
        let a = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
        let b = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);
        let mut ph = Vec::new();
        ph.extend_from_slice(&a.octets());
        ph.extend_from_slice(&b.octets());
        ph.extend_from_slice(&0x0001_0004u32.to_be_bytes());
        ph.extend_from_slice(&[0, 0, 0, 6]);
        assert_eq!(
            fold(pseudo_header_sum(a.into(), b.into(), 6, 0x0001_0004)),
            naive(&ph)
        );
    }

    proptest! {
        #[test]
        fn fast_sum_matches_naive(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert_eq!(fold(sum(&data)), naive(&data));
        }

        /// Segment-sized data (the 32-byte loop, every remainder), at any start in memory,
        /// and the all-ones words whose end-around carries the lanes must not lose.
        #[test]
        fn segment_sums_match_naive(data in proptest::collection::vec(any::<u8>(), 0..3000), skip in 0usize..8, ones in any::<bool>()) {
            let mut data = data;
            if ones {
                data.iter_mut().for_each(|b| *b = 0xff);
            }
            let d = &data[skip.min(data.len())..];
            prop_assert_eq!(fold(sum(d)), naive(d));
        }

        #[test]
        fn split_sums_add(data in proptest::collection::vec(any::<u8>(), 0..300), cut in 0usize..150) {
            let cut = (cut * 2).min(data.len() & !1);
            prop_assert_eq!(fold(sum(&data[..cut]) + sum(&data[cut..])), naive(&data));
        }

        #[test]
        fn incremental_update_verifies(mut data in proptest::collection::vec(any::<u8>(), 4..64), w in any::<u16>()) {
            data[0] = 0; data[1] = 0;
            let c = checksum(&data);
            data[0..2].copy_from_slice(&c.to_be_bytes());
            let old = u16::from_be_bytes([data[2], data[3]]);
            data[2..4].copy_from_slice(&w.to_be_bytes());
            let c2 = update(c, old, w);
            data[0..2].copy_from_slice(&c2.to_be_bytes());
            prop_assert!(verifies(sum(&data)));
        }
    }
}
