//! Bounded out-of-order store (RFC 9293 §3.10.7.4 seventh step: segments beyond RCV.NXT may
//! be held for later processing) and the receiver's SACK blocks (RFC 2018 §4).
//!
//! A ring of `2^k >= max_ooo_bytes` bytes indexed by `seq mod 2^k` (a power of two divides
//! 2^32, so the index survives sequence wrap). Only bytes in `[rcv_nxt, rcv_nxt +
//! max_ooo_bytes)` are stored, so no two stored bytes alias. Allocated when the first hole
//! appears, dropped by the Tcb when the hole fills.

use crate::seq::SeqNum;
use crate::wire::SackBlock;

const MAX_RANGES: usize = 8;

#[derive(Copy, Clone, Debug, Default)]
struct Range {
    start: SeqNum,
    end: SeqNum,
    /// Insertion clock of the last segment that touched this range (RFC 2018 §4: the first
    /// SACK block reports the most recently received segment).
    stamp: u32,
}

pub(super) struct Reassembly {
    buf: Vec<u8>,
    mask: usize,
    limit: u32,
    ranges: [Range; MAX_RANGES],
    n: usize,
    clock: u32,
}

/// Outcome of an insert.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum Insert {
    Stored,
    /// Beyond the byte bound or the range-count bound: dropped.
    Dropped,
}

impl Reassembly {
    /// `limit` must be > 0.
    pub(super) fn new(limit: u32) -> Self {
        let limit = limit.clamp(1, 1 << 30);
        let cap = (limit as usize).next_power_of_two();
        Reassembly {
            buf: vec![0; cap],
            mask: cap - 1,
            limit,
            ranges: [Range::default(); MAX_RANGES],
            n: 0,
            clock: 0,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Forget ranges below `rcv_nxt` (delivered or retransmitted in order meanwhile).
    pub(super) fn prune(&mut self, rcv_nxt: SeqNum) {
        let mut m = 0;
        for i in 0..self.n {
            let mut r = self.ranges[i];
            if r.end.gt(rcv_nxt) {
                r.start = r.start.max(rcv_nxt);
                self.ranges[m] = r;
                m += 1;
            }
        }
        self.n = m;
    }

    /// Store `data` at `seq` (>= rcv_nxt: in-order bytes the service could not take yet are
    /// held here too). Trims to the byte bound; refuses a new range when all range slots are
    /// used.
    pub(super) fn insert(&mut self, rcv_nxt: SeqNum, seq: SeqNum, data: &[u8]) -> Insert {
        self.prune(rcv_nxt);
        let off = seq.diff(rcv_nxt);
        if off < 0 || off as u32 >= self.limit || data.is_empty() {
            return Insert::Dropped;
        }
        let room = (self.limit - off as u32) as usize;
        let data = &data[..data.len().min(room)];
        let (s, e) = (seq, seq + data.len() as u32);
        // Merge with every overlapping or adjacent range; keep the array sorted.
        let mut ms = s;
        let mut me = e;
        let mut out = [Range::default(); MAX_RANGES];
        let mut m = 0;
        let mut at = None;
        for i in 0..self.n {
            let r = self.ranges[i];
            if r.end.lt(s) {
                out[m] = r;
                m += 1;
            } else if r.start.gt(e) {
                if at.is_none() {
                    at = Some(m);
                    m += 1; // slot for the merged range
                }
                if m >= MAX_RANGES {
                    return Insert::Dropped;
                }
                out[m] = r;
                m += 1;
            } else {
                ms = ms.min(r.start);
                me = me.max(r.end);
            }
        }
        let slot = match at {
            Some(i) => i,
            None => {
                if m >= MAX_RANGES {
                    return Insert::Dropped;
                }
                m += 1;
                m - 1
            }
        };
        self.clock = self.clock.wrapping_add(1);
        out[slot] = Range { start: ms, end: me, stamp: self.clock };
        self.ranges = out;
        self.n = m;
        // Copy the bytes into the ring (at most two pieces).
        let mut pos = s.0 as usize & self.mask;
        let mut rest = data;
        while !rest.is_empty() {
            let k = rest.len().min(self.buf.len() - pos);
            self.buf[pos..pos + k].copy_from_slice(&rest[..k]);
            rest = &rest[k..];
            pos = 0;
        }
        Insert::Stored
    }

    /// Contiguous bytes starting exactly at `rcv_nxt`, if any (may be the first piece of a
    /// range that wraps the ring; call again after consuming it).
    pub(super) fn front(&self, rcv_nxt: SeqNum) -> Option<&[u8]> {
        if self.n == 0 {
            return None;
        }
        let r = self.ranges[0];
        if !(r.start.le(rcv_nxt) && r.end.gt(rcv_nxt)) {
            return None;
        }
        let len = r.end.diff(rcv_nxt) as usize;
        let pos = rcv_nxt.0 as usize & self.mask;
        let k = len.min(self.buf.len() - pos);
        Some(&self.buf[pos..pos + k])
    }

    /// SACK blocks, most recently updated first (RFC 2018 §4), at most `out.len()`. A range
    /// starting at `rcv_nxt` (in-order bytes held for a full service) is not a SACK block: it
    /// is not above the cumulative ACK.
    pub(super) fn sack_blocks(&self, rcv_nxt: SeqNum, out: &mut [SackBlock]) -> usize {
        let mut used = [false; MAX_RANGES];
        for (u, r) in used.iter_mut().zip(self.ranges[..self.n].iter()) {
            *u = r.start.le(rcv_nxt);
        }
        let mut k = 0;
        while k < out.len() {
            let mut best: Option<usize> = None;
            for (i, r) in self.ranges[..self.n].iter().enumerate() {
                let newer = match best {
                    None => true,
                    Some(b) => r.stamp.wrapping_sub(self.ranges[b].stamp) as i32 > 0,
                };
                if !used[i] && newer {
                    best = Some(i);
                }
            }
            let Some(b) = best else { break };
            used[b] = true;
            out[k] = SackBlock { left: self.ranges[b].start, right: self.ranges[b].end };
            k += 1;
        }
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_merges_and_delivers_across_wrap() {
        let base = SeqNum(u32::MAX - 10);
        let mut r = Reassembly::new(64);
        assert_eq!(r.insert(base, base + 20, &[2; 10]), Insert::Stored);
        assert_eq!(r.insert(base, base + 5, &[1; 10]), Insert::Stored);
        let mut b = [SackBlock::default(); 4];
        assert_eq!(r.sack_blocks(base, &mut b), 2);
        assert_eq!(b[0].left, base + 5); // most recent first
        assert!(r.front(base).is_none());
        // Fill the gap 15..20: merges everything into 5..30.
        assert_eq!(r.insert(base, base + 15, &[3; 5]), Insert::Stored);
        assert_eq!(r.sack_blocks(base, &mut b), 1);
        let nxt = base + 5;
        let mut got = Vec::new();
        let mut at = nxt;
        while let Some(s) = r.front(at) {
            got.extend_from_slice(s);
            at += s.len() as u32;
        }
        assert_eq!(got.len(), 25);
        assert_eq!(&got[..10], &[1; 10]);
        assert_eq!(&got[10..15], &[3; 5]);
        assert_eq!(&got[15..], &[2; 10]);
        r.prune(at);
        assert!(r.is_empty());
        // Beyond the bound: dropped.
        assert_eq!(r.insert(at, at + 64, &[0; 4]), Insert::Dropped);
        assert_eq!(r.insert(at, at + 60, &[9; 10]), Insert::Stored);
    }

    #[test]
    fn bounded_range_count() {
        let mut r = Reassembly::new(1 << 16);
        let base = SeqNum(0);
        for i in 0..MAX_RANGES as u32 {
            assert_eq!(r.insert(base, base + 10 + i * 10, &[0; 5]), Insert::Stored);
        }
        assert_eq!(r.insert(base, base + 1000, &[0; 5]), Insert::Dropped);
        // Merging into an existing range is still possible.
        assert_eq!(r.insert(base, base + 15, &[0; 5]), Insert::Stored);
    }
}
