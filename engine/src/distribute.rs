//! Software flow distribution (sans-IO): which worker a received frame belongs to when the
//! device has fewer RX queues than there are workers, so one worker polls the only queue and
//! hands every other worker its flows (the dataplane's fan-out; DESIGN §2 "software RSS").
//!
//! The hash is **symmetric** — both directions of a flow map to the same worker — because it
//! is computed over the unordered pair of addresses and the unordered pair of ports, the way a
//! symmetric Toeplitz key makes NIC RSS symmetric. It is also **fixed** (no per-process seed):
//! an active and a standby engine that both distribute in software agree on the worker of every
//! flow, so a takeover can install each replica on the worker its packets will reach.
//!
//! Only IPv4 TCP and UDP with ports are spread. Everything else — ARP, ICMP, IPv6, VLAN-tagged,
//! IPv4 fragments (a later fragment has no ports), malformed headers — stays on worker 0, which
//! parses it fully and counts any drop by reason, exactly as in hardware-queue mode.

use std::net::Ipv4Addr;

use crate::flow::FlowKey;

const ETH_HDR: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

/// The 64-bit finalizer of MurmurHash3 (full avalanche: every input bit affects every output bit).
#[inline]
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// Symmetric hash of an IPv4 5-tuple: `hash(a, b, pa, pb) == hash(b, a, pb, pa)`.
/// Order-independent over the two addresses and, separately, over the two ports.
#[inline]
pub fn symmetric_hash_v4(src: u32, dst: u32, sport: u16, dport: u16, proto: u8) -> u32 {
    let (ip_lo, ip_hi) = if src <= dst { (src, dst) } else { (dst, src) };
    let (p_lo, p_hi) = if sport <= dport { (sport, dport) } else { (dport, sport) };
    let ips = (u64::from(ip_lo) << 32) | u64::from(ip_hi);
    let rest = (u64::from(p_lo) << 32) | (u64::from(p_hi) << 16) | u64::from(proto);
    let h = fmix64(ips ^ fmix64(rest ^ 0x9e37_79b9_7f4a_7c15));
    (h ^ (h >> 32)) as u32
}

/// Map a 32-bit hash onto `0..workers` (multiply-shift: no division, uniform for a uniform hash).
#[inline]
pub fn worker_of_hash(hash: u32, workers: usize) -> usize {
    ((u64::from(hash) * workers as u64) >> 32) as usize
}

/// The symmetric flow hash of an Ethernet frame, or `None` if the frame is not IPv4 TCP/UDP
/// with both ports present (then it stays on worker 0). Never panics on any input.
#[inline]
pub fn frame_flow_hash(frame: &[u8]) -> Option<u32> {
    if frame.len() < ETH_HDR + 20 {
        return None;
    }
    if u16::from_be_bytes([frame[12], frame[13]]) != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = &frame[ETH_HDR..];
    if ip[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ihl < 20 {
        return None;
    }
    // More-fragments flag or a fragment offset: not spreadable (later fragments carry no ports).
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
        return None;
    }
    let proto = ip[9];
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return None;
    }
    let l4 = ip.get(ihl..ihl + 4)?;
    let src = u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]);
    let dst = u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]);
    let sport = u16::from_be_bytes([l4[0], l4[1]]);
    let dport = u16::from_be_bytes([l4[2], l4[3]]);
    Some(symmetric_hash_v4(src, dst, sport, dport, proto))
}

/// The worker (of `workers`) that owns this frame's flow; 0 for anything not spreadable.
#[inline]
pub fn worker_for_frame(frame: &[u8], workers: usize) -> usize {
    if workers <= 1 {
        return 0;
    }
    match frame_flow_hash(frame) {
        Some(h) => worker_of_hash(h, workers),
        None => 0,
    }
}

/// The worker a TCP flow's packets reach in software distribution mode (used to place replicas
/// at a takeover). IPv6 keys (not spread yet) map to worker 0, like their frames.
pub fn worker_for_key(key: &FlowKey, workers: usize) -> usize {
    if workers <= 1 {
        return 0;
    }
    match (key.remote_ip.to_ipv4_mapped(), key.local_ip.to_ipv4_mapped()) {
        (Some(r), Some(l)) => {
            worker_of_hash(symmetric_hash_v4(u32::from(r), u32::from(l), key.remote_port, key.local_port, PROTO_TCP), workers)
        }
        _ => 0,
    }
}

/// Convenience for tests and tools: the worker of an IPv4 TCP 4-tuple.
pub fn worker_for_tcp_v4(a: Ipv4Addr, pa: u16, b: Ipv4Addr, pb: u16, workers: usize) -> usize {
    worker_of_hash(symmetric_hash_v4(u32::from(a), u32::from(b), pa, pb, PROTO_TCP), workers)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal Ethernet/IPv4/L4 frame (checksums irrelevant to the hash).
    fn frame(src: [u8; 4], dst: [u8; 4], proto: u8, sport: u16, dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; ETH_HDR + 20 + 20];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let ip = &mut f[ETH_HDR..];
        ip[0] = 0x45;
        ip[8] = 64;
        ip[9] = proto;
        ip[12..16].copy_from_slice(&src);
        ip[16..20].copy_from_slice(&dst);
        ip[20..22].copy_from_slice(&sport.to_be_bytes());
        ip[22..24].copy_from_slice(&dport.to_be_bytes());
        f
    }

    const C: [u8; 4] = [198, 18, 0, 2];
    const V: [u8; 4] = [198, 18, 0, 100];

    #[test]
    fn symmetric_for_swapped_directions() {
        for proto in [PROTO_TCP, PROTO_UDP] {
            for p in [1u16, 80, 443, 32768, 40000, 60999, 65535] {
                let a = frame(C, V, proto, p, 80);
                let b = frame(V, C, proto, 80, p);
                assert_eq!(frame_flow_hash(&a), frame_flow_hash(&b), "proto {proto} port {p}");
                assert!(frame_flow_hash(&a).is_some());
                for n in 1..=8 {
                    assert_eq!(worker_for_frame(&a, n), worker_for_frame(&b, n));
                }
            }
        }
        // And over arbitrary tuples.
        let mut x: u64 = 0x1234_5678_9abc_def0;
        for _ in 0..10_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let (s, d) = ((x >> 32) as u32, x as u32);
            let (sp, dp) = ((x >> 17) as u16, (x >> 45) as u16);
            assert_eq!(symmetric_hash_v4(s, d, sp, dp, 6), symmetric_hash_v4(d, s, dp, sp, 6));
        }
    }

    #[test]
    fn frame_and_key_agree() {
        // A replica placed by its key must land where its frames are steered.
        for p in 30000u16..30200 {
            let f = frame(C, V, PROTO_TCP, p, 80);
            let key = FlowKey::v4(Ipv4Addr::from(C), p, Ipv4Addr::from(V), 80);
            for n in 2..=4 {
                assert_eq!(worker_for_frame(&f, n), worker_for_key(&key, n));
                assert_eq!(worker_for_tcp_v4(Ipv4Addr::from(V), 80, Ipv4Addr::from(C), p, n), worker_for_key(&key, n));
            }
        }
    }

    #[test]
    fn stable_across_builds() {
        // Golden values: active and standby (possibly different builds) must agree, so the
        // function must never change silently.
        assert_eq!(symmetric_hash_v4(0xc612_0002, 0xc612_0064, 40000, 80, 6), GOLDEN[0]);
        assert_eq!(symmetric_hash_v4(0x0a00_0001, 0x0a00_0002, 1, 2, 17), GOLDEN[1]);
        assert_eq!(symmetric_hash_v4(0, 0, 0, 0, 0), GOLDEN[2]);
    }
    const GOLDEN: [u32; 3] = [1286270568, 2892617624, 1700122048];

    #[test]
    fn spreads_flows() {
        // One client, one VIP port, sequential ephemeral ports (the worst realistic case).
        for n in [2usize, 3, 4, 8] {
            let mut per = vec![0usize; n];
            let flows = 20_000;
            for p in 0..flows {
                let f = frame(C, V, PROTO_TCP, 32768 + p as u16, 80);
                per[worker_for_frame(&f, n)] += 1;
            }
            let want = flows / n;
            for (w, c) in per.iter().enumerate() {
                assert!(c.abs_diff(want) * 100 < want * 5, "{n} workers: worker {w} got {c} of {flows} (want ~{want}): {per:?}");
            }
        }
        // Many clients on one port.
        let mut per = [0usize; 2];
        for i in 0..10_000u32 {
            per[worker_for_tcp_v4(Ipv4Addr::from(0x0a00_0000 + i), 12345, Ipv4Addr::from(V), 80, 2)] += 1;
        }
        assert!(per[0].abs_diff(5000) < 250, "{per:?}");
    }

    #[test]
    fn everything_else_stays_on_worker_0() {
        // Find a port that maps to worker 1 of 2, so "stays on 0" is meaningful.
        let p = (40000u16..41000).find(|p| worker_for_frame(&frame(C, V, PROTO_TCP, *p, 80), 2) == 1).expect("some flow on worker 1");
        let base = frame(C, V, PROTO_TCP, p, 80);
        assert_eq!(worker_for_frame(&base, 2), 1);

        let mut icmp = base.clone();
        icmp[ETH_HDR + 9] = 1;
        assert_eq!(worker_for_frame(&icmp, 2), 0);
        let mut arp = base.clone();
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(worker_for_frame(&arp, 2), 0);
        let mut v6 = base.clone();
        v6[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
        assert_eq!(worker_for_frame(&v6, 2), 0);
        let mut vlan = base.clone();
        vlan[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
        assert_eq!(worker_for_frame(&vlan, 2), 0);
        let mut frag = base.clone();
        frag[ETH_HDR + 6] = 0x20; // MF
        assert_eq!(worker_for_frame(&frag, 2), 0);
        let mut frag2 = base.clone();
        frag2[ETH_HDR + 7] = 0x10; // offset
        assert_eq!(worker_for_frame(&frag2, 2), 0);
        let mut bad_ver = base.clone();
        bad_ver[ETH_HDR] = 0x65;
        assert_eq!(worker_for_frame(&bad_ver, 2), 0);
        let mut bad_ihl = base.clone();
        bad_ihl[ETH_HDR] = 0x44;
        assert_eq!(worker_for_frame(&bad_ihl, 2), 0);
        // IHL pointing past the frame: no ports → worker 0.
        let mut long_ihl = base.clone();
        long_ihl[ETH_HDR] = 0x4f;
        long_ihl.truncate(ETH_HDR + 60);
        assert_eq!(worker_for_frame(&long_ihl, 2), 0);
        // Every truncation of a valid frame is handled (no panic; short ones stay on 0).
        for len in 0..base.len() {
            let w = worker_for_frame(&base[..len], 2);
            if len < ETH_HDR + 24 {
                assert_eq!(w, 0, "truncated to {len}");
            }
        }
        assert_eq!(worker_for_frame(&base, 1), 0);
    }

    #[test]
    fn worker_of_hash_in_range() {
        for n in 1..=16 {
            for h in [0u32, 1, u32::MAX / 2, u32::MAX - 1, u32::MAX] {
                assert!(worker_of_hash(h, n) < n);
            }
        }
    }
}
