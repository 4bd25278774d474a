//! Initial sequence numbers per RFC 6528 §3: `ISN = M + F(localip, localport, remoteip,
//! remoteport, secretkey)`, M a 4 µs timer and F a keyed pseudo-random function. F is
//! SipHash-2-4 (Aumasson & Bernstein 2012), written here so the crate stays dependency-free.

use crate::group::{GroupId, MAX_GROUPS};
use crate::seq::SeqNum;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use crate::time::Instant;

/// SipHash-2-4 streaming state: 2 compression rounds per 8-byte word, 4 finalization rounds.
#[derive(Clone)]
pub struct SipHasher24 {
    v: [u64; 4],
    tail: u64,
    ntail: usize,
    len: u64,
}

impl SipHasher24 {
    pub fn new(key: &[u8; 16]) -> Self {
        let mut k0 = [0u8; 8];
        let mut k1 = [0u8; 8];
        k0.copy_from_slice(&key[..8]);
        k1.copy_from_slice(&key[8..]);
        let (k0, k1) = (u64::from_le_bytes(k0), u64::from_le_bytes(k1));
        SipHasher24 {
            // "somepseudorandomlygeneratedbytes" constants from the paper.
            v: [
                k0 ^ 0x736f_6d65_7073_6575,
                k1 ^ 0x646f_7261_6e64_6f6d,
                k0 ^ 0x6c79_6765_6e65_7261,
                k1 ^ 0x7465_6462_7974_6573,
            ],
            tail: 0,
            ntail: 0,
            len: 0,
        }
    }

    #[inline]
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }

    #[inline]
    fn compress(&mut self, m: u64) {
        self.v[3] ^= m;
        Self::round(&mut self.v);
        Self::round(&mut self.v);
        self.v[0] ^= m;
    }

    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.tail |= (b as u64) << (8 * self.ntail);
            self.ntail += 1;
            if self.ntail == 8 {
                let m = self.tail;
                self.compress(m);
                self.tail = 0;
                self.ntail = 0;
            }
        }
        self.len = self.len.wrapping_add(bytes.len() as u64);
    }

    pub fn finish(mut self) -> u64 {
        // Last word: remaining bytes plus the message length mod 256 in the top byte.
        let m = self.tail | ((self.len & 0xff) << 56);
        self.compress(m);
        self.v[2] ^= 0xff;
        for _ in 0..4 {
            Self::round(&mut self.v);
        }
        self.v[0] ^ self.v[1] ^ self.v[2] ^ self.v[3]
    }
}

/// RFC 6528 ISN generator; one per engine, keyed from a secret chosen at start-up.
/// (For failover the standby does not need the key: ISNs of existing flows are replicated.)
#[derive(Clone)]
pub struct IsnGenerator {
    key: [u8; 16],
}

impl IsnGenerator {
    pub fn new(key: [u8; 16]) -> Self {
        IsnGenerator { key }
    }

    /// `M + F(...)`: M counts 4 µs ticks (RFC 6528 §3, RFC 9293 §3.4.1), F is SipHash-2-4 of
    /// the connection 4-tuple under the secret key. Addresses are raw bytes (4 or 16).
    pub fn isn(
        &self,
        now: Instant,
        local_ip: &[u8],
        local_port: u16,
        remote_ip: &[u8],
        remote_port: u16,
    ) -> SeqNum {
        let mut h = SipHasher24::new(&self.key);
        h.write(local_ip);
        h.write(&local_port.to_be_bytes());
        h.write(remote_ip);
        h.write(&remote_port.to_be_bytes());
        let f = h.finish() as u32;
        let m = (now.micros() / 4) as u32;
        SeqNum(m.wrapping_add(f))
    }
}

/// The secrets of the connections an engine *opens* (to backends), one per ownership group,
/// shared with that group's standby so that the two engines of a pair open connections as one
/// host would.
///
/// Why: after a takeover the new active opens backend connections from the same source
/// address as the old one. A backend may still hold one of the old active's 4-tuples in
/// TIME-WAIT; Linux accepts a new SYN on it only if its TSval is newer than the last one
/// it saw there, or, without timestamps, if its ISN is beyond the old `rcv_nxt`. The TSval
/// of an opened connection is the wall clock (`Stack::set_wall_clock`), which grows across
/// takeovers and restarts alike. The ISN is `M + F(tuple, secret)` on the same clock: with
/// one secret per group shared by the pair, a reused tuple's ISN keeps growing across the
/// takeover exactly as on one engine. (With secrets and TSval offsets of their own, half the
/// reuses went backwards: the backend's PAWS check answered with an ACK, we reset it, and the
/// client waited a second for the SYN's retransmission; seen on the rig, `proxy_kill` flaky,
/// 2 of 3 runs.)
///
/// The active of a group keeps its secret; a standby adopts the active's (sync `Hello`), so
/// the secret lives as long as one engine of the pair does. The sync link carries every
/// flow's ISNs and bytes already: sending the secret there exposes nothing new.
pub struct GroupSecrets {
    /// Bumped (Release) after every change, so a worker re-reads the keys only then.
    generation: AtomicU64,
    keys: Mutex<[[u8; 16]; MAX_GROUPS]>,
}

impl GroupSecrets {
    /// Every group's secret is `key` (an engine's start).
    pub fn new(key: [u8; 16]) -> GroupSecrets {
        GroupSecrets { generation: AtomicU64::new(1), keys: Mutex::new([key; MAX_GROUPS]) }
    }

    /// Changes so far (compare with the last one read to know whether to re-read).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Group `g`'s secret.
    pub fn get(&self, g: GroupId) -> [u8; 16] {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())[usize::from(g.0) % MAX_GROUPS]
    }

    /// Make group `g`'s secret `key` (a standby adopting its active's). Returns whether it
    /// changed.
    pub fn adopt(&self, g: GroupId, key: [u8; 16]) -> bool {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let slot = &mut keys[usize::from(g.0) % MAX_GROUPS];
        if *slot == key {
            return false;
        }
        *slot = key;
        self.generation.fetch_add(1, Ordering::Release);
        true
    }
}

impl Default for GroupSecrets {
    /// All-zero secrets (tests; an engine starts with [`GroupSecrets::new`] of a random key).
    fn default() -> GroupSecrets {
        GroupSecrets::new([0; 16])
    }
}

impl std::fmt::Debug for GroupSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.debug_struct("GroupSecrets").field("generation", &self.generation()).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_secrets_change_only_when_adopted_and_say_so() {
        let s = GroupSecrets::new(key());
        let g0 = s.generation();
        assert!(!s.adopt(GroupId(3), key()), "the same key is no change");
        assert_eq!(s.generation(), g0);
        assert!(s.adopt(GroupId(3), [7; 16]));
        assert!(s.generation() > g0);
        assert_eq!(s.get(GroupId(3)), [7; 16]);
        assert_eq!(s.get(GroupId(0)), key(), "other groups keep theirs");
        assert!(!format!("{s:?}").contains('7'), "Debug never shows a key: {s:?}");
    }

    fn key() -> [u8; 16] {
        let mut k = [0u8; 16];
        for (i, b) in k.iter_mut().enumerate() {
            *b = i as u8;
        }
        k
    }

    #[test]
    fn siphash_reference_vectors() {
        // Appendix A of the SipHash paper: key 00..0f, message 00..0e.
        let msg: Vec<u8> = (0u8..15).collect();
        let mut h = SipHasher24::new(&key());
        h.write(&msg);
        assert_eq!(h.finish(), 0xa129_ca61_49be_45e5);
        // Empty message (first entry of the reference vectors.h table).
        assert_eq!(SipHasher24::new(&key()).finish(), 0x726f_db47_dd0e_0e31);
        // Split writes give the same answer as one write.
        let mut h = SipHasher24::new(&key());
        h.write(&msg[..3]);
        h.write(&msg[3..11]);
        h.write(&msg[11..]);
        assert_eq!(h.finish(), 0xa129_ca61_49be_45e5);
    }

    #[test]
    fn isn_advances_with_time_and_depends_on_tuple() {
        let g = IsnGenerator::new(key());
        let a = g.isn(Instant(0), &[10, 0, 0, 1], 80, &[10, 0, 0, 2], 40000);
        let b = g.isn(Instant(4000), &[10, 0, 0, 1], 80, &[10, 0, 0, 2], 40000);
        assert_eq!(b - a, 1000);
        let c = g.isn(Instant(0), &[10, 0, 0, 1], 80, &[10, 0, 0, 2], 40001);
        assert_ne!(a, c);
        let g2 = IsnGenerator::new([7; 16]);
        assert_ne!(a, g2.isn(Instant(0), &[10, 0, 0, 1], 80, &[10, 0, 0, 2], 40000));
    }
}
