//! Never-panic property tests: arbitrary bytes, and golden frames with random bytes overwritten
//! and random truncation, go through every `new_checked`, every accessor and the in-place
//! rewriters. A panic anywhere fails the test.

use super::arp::ArpRepr;
use super::ethernet::EthernetFrame;
use super::icmp::{echo_reply_in_place, Icmpv4Packet};
use super::ipv4::Ipv4Packet;
use super::tcp::{parse_options, TcpPacket};
use proptest::prelude::*;
use std::net::IpAddr;

fn ipv4(b: &[u8]) {
    if let Ok(p) = Ipv4Packet::new_checked(b) {
        let _ = (
            p.header_len(),
            p.has_options(),
            p.total_len(),
            p.ident(),
            p.dont_frag(),
            p.more_frags(),
        );
        let _ = (
            p.frag_offset(),
            p.is_fragment(),
            p.ttl(),
            p.protocol(),
            p.checksum(),
            p.src(),
            p.dst(),
        );
        assert!(p.payload().len() == p.total_len() - p.header_len());
        icmp(p.payload());
        tcp(p.payload(), p.src().into(), p.dst().into());
    }
}

fn icmp(b: &[u8]) {
    if let Ok(p) = Icmpv4Packet::new_checked(b) {
        let _ = (
            p.msg_type(),
            p.code(),
            p.checksum(),
            p.echo_ident(),
            p.echo_seq_no(),
            p.data(),
            p.is_echo_request(),
        );
    }
}

fn tcp(b: &[u8], src: IpAddr, dst: IpAddr) {
    if let Ok(t) = TcpPacket::new_checked(b) {
        let _ = (
            t.src_port(),
            t.dst_port(),
            t.seq_number(),
            t.ack_number(),
            t.header_len(),
            t.flags(),
        );
        let _ = (
            t.window(),
            t.checksum(),
            t.urgent_pointer(),
            t.options(),
            t.payload(),
            t.header(),
        );
        let _ = t.checksum_status(src, dst);
        assert!(t.options().sacks().len() <= 4);
        assert!(t.options().wscale.unwrap_or(0) <= 14);
    }
}

/// Everything the worker would do with one received frame.
fn pipeline(f: &[u8]) {
    if let Ok(e) = EthernetFrame::new_checked(f) {
        let _ = (e.dst(), e.src(), e.ethertype(), e.dst().to_string());
        let _ = ArpRepr::parse(e.payload());
        ipv4(e.payload());
    }
    // Each layer also on its own, at every starting point a confused caller could pick.
    ipv4(f);
    icmp(f);
    tcp(f, [1, 2, 3, 4].into(), [5, 6, 7, 8].into());
    let _ = parse_options(f);
    let _ = ArpRepr::parse(f);
    let mut copy = f.to_vec();
    if let Ok(n) = echo_reply_in_place(&mut copy) {
        assert!(n <= f.len());
        // The reply is itself a well-formed frame with valid checksums.
        let e = EthernetFrame::new_checked(&copy[..n]).unwrap();
        let ip = Ipv4Packet::new_checked(e.payload()).unwrap();
        assert!(Icmpv4Packet::new_checked(ip.payload()).is_ok());
    }
}

fn golden() -> Vec<Vec<u8>> {
    vec![
        super::tcp::tests::LINUX_SYN_FRAME.to_vec(),
        super::icmp::tests::ECHO_REQUEST_FRAME.to_vec(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..128)) {
        pipeline(&b);
    }

    #[test]
    fn mutated_golden_frames_never_panic(
        which in 0usize..2,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in any::<usize>(),
        extra in proptest::collection::vec(any::<u8>(), 0..8),
    ) {
        let mut f = golden().swap_remove(which);
        for (at, v) in edits {
            let n = f.len();
            f[at % n] = v;
        }
        pipeline(&f);
        f.extend_from_slice(&extra);
        pipeline(&f);
        f.truncate(cut % (f.len() + 1));
        pipeline(&f);
    }
}
