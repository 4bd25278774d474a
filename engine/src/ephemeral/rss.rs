//! Steering by the NIC (receive-side scaling): the worker a segment reaches when the device
//! spreads flows over one RX queue per worker itself, with the symmetric key the engine
//! programs (`flowtwin_ffi::port`), and the steering a worker's stack uses to choose its
//! ephemeral ports ([`ReplySteering`]: software distribution or RSS).
//!
//! The NIC computes the Toeplitz hash (Microsoft RSS; DPDK `rte_softrss`) of the segment's
//! IPv4 addresses and TCP ports under the port's key, and the queue is
//! `RETA[hash mod RETA size]`. The redirection table is the driver's default unless the
//! engine programs one: DPDK drivers fill it round robin (`entry i → queue i mod queues`),
//! which [`RssSteering::round_robin`] models; a table programmed otherwise is given whole
//! ([`RssSteering::new`]). The RETA size is the device's (`rte_eth_dev_info::reta_size`,
//! commonly 64, 128 or 512).
//!
//! With the 0x6d5a key, the hash of (src, dst, sport, dport) equals that of (dst, src,
//! dport, sport) (Woo & Park, "Scalable TCP Session Monitoring with Symmetric Receive-side
//! Scaling"): a connection's SYN and its reply reach the same queue, so searching over the
//! reply's tuple, as [`Steering::worker_of_reply`] does, is also searching over the SYN's.

use std::net::Ipv4Addr;

use super::{SoftwareSteering, Steering};

/// The symmetric Toeplitz key the engine programs (0x6d5a repeated; the ffi crate writes 52
/// bytes of the same pattern for drivers that take a longer key). IPv4/TCP hashing reads its
/// first 16 bytes.
pub const SYMMETRIC_RSS_KEY: [u8; 40] = {
    let mut k = [0u8; 40];
    let mut i = 0;
    while i < 40 {
        k[i] = if i % 2 == 0 { 0x6d } else { 0x5a };
        i += 1;
    }
    k
};

/// The Toeplitz hash of `input` under `key`: for every set bit of the input (most
/// significant first), XOR in the 32 key bits starting at that bit's position. `key` must
/// be at least `input.len() + 4` bytes long; missing key bytes read as 0.
pub fn toeplitz(key: &[u8], input: &[u8]) -> u32 {
    let byte = |i: usize| key.get(i).copied().unwrap_or(0);
    let mut window = u32::from_be_bytes([byte(0), byte(1), byte(2), byte(3)]);
    let mut hash = 0u32;
    for (i, &b) in input.iter().enumerate() {
        let next = byte(i + 4);
        for bit in 0..8 {
            if b & (0x80 >> bit) != 0 {
                hash ^= window;
            }
            window = (window << 1) | u32::from(next & (0x80 >> bit) != 0);
        }
    }
    hash
}

/// The RSS hash of an IPv4 TCP segment from `src:sport` to `dst:dport` (the input the NIC
/// hashes: source address, destination address, source port, destination port).
pub fn rss_hash_tcp_v4(key: &[u8], src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> u32 {
    let mut input = [0u8; 12];
    input[..4].copy_from_slice(&src.octets());
    input[4..8].copy_from_slice(&dst.octets());
    input[8..10].copy_from_slice(&sport.to_be_bytes());
    input[10..].copy_from_slice(&dport.to_be_bytes());
    toeplitz(key, &input)
}

/// Steering by the NIC: Toeplitz hash under a key, then a redirection table of worker
/// (queue) indices. See the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RssSteering {
    key: [u8; 40],
    reta: Box<[u16]>,
    workers: usize,
}

impl RssSteering {
    /// A redirection table `reta` (entry → worker) under `key`; `None` if the table is
    /// empty. Workers are the table's largest entry + 1.
    pub fn new(key: [u8; 40], reta: &[u16]) -> Option<RssSteering> {
        let workers = usize::from(*reta.iter().max()?) + 1;
        Some(RssSteering { key, reta: reta.into(), workers })
    }

    /// The symmetric key and the table DPDK drivers program by default: `reta_size` entries
    /// (at least 1), entry `i` → worker `i mod workers` (at least 1 worker).
    pub fn round_robin(workers: usize, reta_size: usize) -> RssSteering {
        let workers = workers.clamp(1, usize::from(u16::MAX));
        let reta: Vec<u16> = (0..reta_size.max(1)).map(|i| (i % workers) as u16).collect();
        RssSteering { key: SYMMETRIC_RSS_KEY, reta: reta.into(), workers: workers.min(reta_size.max(1)) }
    }

    /// The worker of a segment whose RSS hash is `hash`.
    pub fn worker_of_hash(&self, hash: u32) -> usize {
        usize::from(self.reta[hash as usize % self.reta.len()])
    }
}

impl Steering for RssSteering {
    fn workers(&self) -> usize {
        self.workers
    }
    fn worker_of_reply(&self, local: Ipv4Addr, lport: u16, remote: Ipv4Addr, rport: u16) -> usize {
        self.worker_of_hash(rss_hash_tcp_v4(&self.key, remote, rport, local, lport))
    }
}

/// How a worker's segments reach it, as its stack chooses ephemeral ports by it: the
/// engine's software distribution (one RX queue, worker 0 fans flows out), or the NIC's RSS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplySteering {
    Software(SoftwareSteering),
    Rss(RssSteering),
}

impl Default for ReplySteering {
    /// One worker: every segment reaches it.
    fn default() -> Self {
        ReplySteering::Software(SoftwareSteering::new(1))
    }
}

impl From<SoftwareSteering> for ReplySteering {
    fn from(s: SoftwareSteering) -> Self {
        ReplySteering::Software(s)
    }
}

impl From<RssSteering> for ReplySteering {
    fn from(s: RssSteering) -> Self {
        ReplySteering::Rss(s)
    }
}

impl Steering for ReplySteering {
    fn workers(&self) -> usize {
        match self {
            ReplySteering::Software(s) => s.workers(),
            ReplySteering::Rss(s) => s.workers(),
        }
    }
    fn worker_of_reply(&self, local: Ipv4Addr, lport: u16, remote: Ipv4Addr, rport: u16) -> usize {
        match self {
            ReplySteering::Software(s) => s.worker_of_reply(local, lport, remote, rport),
            ReplySteering::Rss(s) => s.worker_of_reply(local, lport, remote, rport),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ephemeral::{EphemeralConfig, EphemeralPorts};

    /// Microsoft's RSS verification key and vectors ("Verifying the RSS Hash Calculation";
    /// DPDK's `test_thash.c` checks `rte_softrss` against the same ones).
    const MS_KEY: [u8; 40] = [
        0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0, 0xd0, 0xca, 0x2b, 0xcb,
        0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
    ];

    #[test]
    fn toeplitz_matches_the_published_vectors() {
        // (destination, source, IPv4-only hash, IPv4+TCP hash)
        let v = [
            ([161, 142, 100, 80], 1766, [66, 9, 149, 187], 2794, 0x323e_8fc2u32, 0x51cc_c178u32),
            ([65, 69, 140, 83], 4739, [199, 92, 111, 2], 14230, 0xd718_262a, 0xc626_b0ea),
            ([12, 22, 207, 184], 38024, [24, 19, 198, 95], 12898, 0xd2d0_a5de, 0x5c2b_394a),
            ([209, 142, 163, 6], 2217, [38, 27, 205, 30], 48228, 0x8298_9176, 0xafc7_327f),
            ([202, 188, 127, 2], 1303, [153, 39, 163, 191], 44251, 0x5d18_09c5, 0x10e8_28a2),
        ];
        for (dst, dport, src, sport, l3, l4) in v {
            let (dst, src) = (Ipv4Addr::from(dst), Ipv4Addr::from(src));
            let mut ips = [0u8; 8];
            ips[..4].copy_from_slice(&src.octets());
            ips[4..].copy_from_slice(&dst.octets());
            assert_eq!(toeplitz(&MS_KEY, &ips), l3, "{src} -> {dst}");
            assert_eq!(rss_hash_tcp_v4(&MS_KEY, src, sport, dst, dport), l4, "{src}:{sport} -> {dst}:{dport}");
        }
    }

    #[test]
    fn the_symmetric_key_hashes_both_directions_alike() {
        let (a, b) = (Ipv4Addr::new(198, 18, 0, 100), Ipv4Addr::new(198, 18, 2, 9));
        for p in (1000..60000u16).step_by(997) {
            for q in [80u16, 443, 8080, 40001] {
                let h = rss_hash_tcp_v4(&SYMMETRIC_RSS_KEY, a, p, b, q);
                assert_eq!(h, rss_hash_tcp_v4(&SYMMETRIC_RSS_KEY, b, q, a, p));
            }
        }
    }

    /// The chooser with RSS steering: every port chosen reaches the requesting worker, as
    /// the NIC would steer both its SYN and the reply, and the workers all get ports.
    #[test]
    fn ports_chosen_under_rss_reach_their_worker() {
        let (l, r) = (Ipv4Addr::new(198, 18, 0, 100), Ipv4Addr::new(198, 18, 2, 9));
        for (workers, reta) in [(2usize, 128usize), (3, 128), (4, 512), (8, 64)] {
            let s = RssSteering::round_robin(workers, reta);
            assert_eq!(s.workers(), workers);
            let mut c = EphemeralPorts::new(EphemeralConfig::new([9; 16]), ReplySteering::from(s.clone()));
            for w in 0..workers {
                for _ in 0..50 {
                    let p = c.choose(w, l, r, 80, |_| false).unwrap();
                    let reply = s.worker_of_hash(rss_hash_tcp_v4(&SYMMETRIC_RSS_KEY, r, 80, l, p));
                    let syn = s.worker_of_hash(rss_hash_tcp_v4(&SYMMETRIC_RSS_KEY, l, p, r, 80));
                    assert_eq!((reply, syn), (w, w), "{workers} workers, RETA {reta}: port {p}");
                }
            }
        }
        assert!(RssSteering::new(SYMMETRIC_RSS_KEY, &[]).is_none());
        assert_eq!(RssSteering::new(SYMMETRIC_RSS_KEY, &[0, 2, 1, 2]).unwrap().workers(), 3);
    }
}
