//! One direction's bytes of a proxied connection ([`Pipe`]): a ring indexed by stream offset.

use std::fmt;

/// One direction's bytes: what a half's peer sent, held until the other half's peer
/// acknowledged them. A ring indexed by stream offset (`off % buf.len()`) that holds at most
/// `cap` bytes. Its buffer is allocated on the first byte and grows (doubling, from
/// [`MIN_BUF`]) only as far as the bytes held need, up to `cap`: a short connection's
/// request and response cost a few KiB, not two zeroed `cap` buffers (at 256 KiB each, the
/// zeroing and page faults of those were two thirds of the proxy's CPU per connection).
#[derive(Clone, Default)]
pub struct Pipe {
    pub(super) buf: Box<[u8]>,
    pub(super) cap: usize,
    /// Stream offset one past the last byte received (the other half's `tx_end`).
    pub received: u64,
    /// Bytes the other half's peer acknowledged (never above `received`).
    pub released: u64,
    /// This half's peer sent FIN: after `received`, the other half sends its FIN.
    pub peer_fin: bool,
    /// Bytes this half's peer will send again that the other half's peer already has
    /// (`commit = "peer"`, after a takeover: the other side acknowledged bytes the dead
    /// engine relayed, [`Pipe::release_past`]): counted in `received`; the half's TCP
    /// counts them as received at its next call (`take_skipped`), before it delivers any
    /// segment text. Not imaged: an image is taken of a live pipe, whose `received`
    /// says where the stream stands.
    pub(super) skip: u64,
}

impl fmt::Debug for Pipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipe").field("cap", &self.cap).field("received", &self.received).field("released", &self.released).field("peer_fin", &self.peer_fin).finish()
    }
}

/// The first buffer a pipe allocates (then doubled as needed, up to its `cap`).
pub const MIN_BUF: usize = 4096;

/// Write `data` (at most `ring.len()` bytes) at stream offset `off` of `ring`.
fn ring_write(ring: &mut [u8], off: u64, data: &[u8]) {
    let start = (off % ring.len() as u64) as usize;
    let first = data.len().min(ring.len() - start);
    ring[start..start + first].copy_from_slice(&data[..first]);
    ring[..data.len() - first].copy_from_slice(&data[first..]);
}

/// Read `out.len()` bytes (at most `ring.len()`) at stream offset `off` of `ring`.
fn ring_read(ring: &[u8], off: u64, out: &mut [u8]) {
    let start = (off % ring.len() as u64) as usize;
    let first = out.len().min(ring.len() - start);
    out[..first].copy_from_slice(&ring[start..start + first]);
    let n = out.len();
    out[first..].copy_from_slice(&ring[..n - first]);
}

impl Pipe {
    pub(super) fn new(cap: usize) -> Pipe {
        Pipe { cap: cap.max(1), ..Pipe::default() }
    }

    /// Bytes held, not yet acknowledged by the other half's peer.
    pub fn held(&self) -> u64 {
        self.received - self.released
    }

    pub(super) fn room(&self) -> usize {
        self.cap.saturating_sub(self.held() as usize)
    }

    /// Append (the ring overwrites what lies `cap` behind: the caller bounds what it adds).
    pub(super) fn push(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let end = self.received + data.len() as u64;
        // What the ring must hold after this push: [first, end), at most `cap` bytes.
        let first = end.saturating_sub(self.cap as u64).max(self.released);
        let span = (end - first) as usize;
        if span > self.buf.len() {
            self.grow(span);
        }
        // Of `data`, only what the ring keeps (its last `buf.len()` bytes at most).
        let skip = data.len().saturating_sub(self.buf.len());
        ring_write(&mut self.buf, self.received + skip as u64, &data[skip..]);
        self.received = end;
    }

    /// A buffer of at least `need` bytes (doubling from [`MIN_BUF`], at most `cap`), the held
    /// bytes moved to their places in it.
    fn grow(&mut self, need: usize) {
        let len = need.max(MIN_BUF).next_power_of_two().min(self.cap).max(need);
        let mut buf = vec![0u8; len].into_boxed_slice();
        self.each_held(|at, bytes| ring_write(&mut buf, at, bytes));
        self.buf = buf;
    }

    /// Every byte held, in order and in pieces: `f(stream offset, bytes)`.
    fn each_held(&self, mut f: impl FnMut(u64, &[u8])) {
        let mut chunk = [0u8; 512];
        let mut at = self.first_held();
        while at < self.received {
            let n = self.read_at(at, &mut chunk);
            if n == 0 {
                break;
            }
            f(at, &chunk[..n]);
            at += n as u64;
        }
    }

    /// Every byte received, if all of them are still held in order from offset 0 (a client's
    /// first bytes before its backend is chosen: nothing was sent yet, and at most `cap`).
    pub(super) fn head(&self) -> Option<&[u8]> {
        (self.released == 0 && self.received as usize <= self.cap).then(|| &self.buf[..(self.received as usize).min(self.buf.len())])
    }

    /// The first offset the ring still holds.
    pub(super) fn first_held(&self) -> u64 {
        self.received.saturating_sub(self.cap as u64).max(self.released)
    }

    pub(super) fn read_at(&self, off: u64, out: &mut [u8]) -> usize {
        if off < self.first_held() || off >= self.received || self.buf.is_empty() {
            return 0;
        }
        let n = out.len().min((self.received - off) as usize).min(self.buf.len());
        ring_read(&self.buf, off, &mut out[..n]);
        n
    }

    pub(super) fn release(&mut self, off: u64) {
        let off = off.min(self.received);
        if off > self.released {
            self.released = off;
        }
    }

    /// Release up to `off`, also beyond what was received (`commit = "peer"`): the other
    /// half's peer acknowledged bytes this pipe never held, which the dead engine relayed;
    /// this half's TCP counts them as received (`skip`).
    pub(super) fn release_past(&mut self, off: u64) {
        if off > self.received {
            self.skip += off - self.received;
            self.received = off;
        }
        self.release(off);
    }

    /// Empty at stream offset `off`, both received and released (a takeover in
    /// `commit = "peer"`: what the other half's peer acknowledged; the rest comes again).
    /// The peer's FIN stays.
    pub(super) fn reset_at(&mut self, off: u64) {
        self.buf = Box::new([]);
        self.received = off;
        self.released = off;
        self.skip = 0;
    }

    /// `received u64 | released u64 | peer_fin u8 | held bytes [first_held, received)`.
    pub(super) fn image(&self, out: &mut Vec<u8>) {
        let first = self.first_held();
        out.extend_from_slice(&self.received.to_le_bytes());
        out.extend_from_slice(&first.to_le_bytes());
        out.push(self.peer_fin as u8);
        out.extend_from_slice(&(self.received - first).to_le_bytes());
        self.each_held(|_, bytes| out.extend_from_slice(bytes));
    }

    /// Parse [`Pipe::image`] from the front of `b`; returns the pipe and the rest.
    pub(super) fn from_image(cap: usize, b: &[u8]) -> Option<(Pipe, &[u8])> {
        let u64_at = |o: usize| b.get(o..o + 8).and_then(|s| s.try_into().ok()).map(u64::from_le_bytes);
        let (received, released, peer_fin, len) = (u64_at(0)?, u64_at(8)?, *b.get(16)?, u64_at(17)?);
        if released > received || received - released != len || len > cap as u64 || peer_fin > 1 {
            return None;
        }
        let bytes = b.get(25..25 + len as usize)?;
        let mut p = Pipe::new(cap);
        p.received = released;
        p.released = released;
        p.push(bytes);
        p.peer_fin = peer_fin == 1;
        Some((p, &b[25 + len as usize..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Against a model that keeps every byte: whatever the pushes (bounded by the room,
        /// as a linked half's are, or not, as the standby's replay is) and releases, every
        /// offset the ring says it holds reads back the byte sent there; the head, the image
        /// and its parse agree; the buffer never exceeds `cap` and grows only as needed.
        #[test]
        fn growing_ring_reads_back_what_was_pushed(
            cap in 1usize..20_000,
            ops in proptest::collection::vec((0usize..9000, 0u64..9000, any::<bool>()), 1..40),
        ) {
            let mut p = Pipe::new(cap);
            let mut all: Vec<u8> = Vec::new();
            let mut max_span = 0usize;
            for (i, (n, rel, bounded)) in ops.into_iter().enumerate() {
                let n = if bounded { n.min(p.room()) } else { n };
                let data: Vec<u8> = (0..n).map(|k| (all.len() + k) as u8 ^ i as u8).collect();
                p.push(&data);
                all.extend_from_slice(&data);
                max_span = max_span.max((p.received - p.first_held()) as usize);
                p.release(p.released + rel);
                prop_assert!(p.buf.len() <= p.cap);
                prop_assert!(p.buf.len() <= MIN_BUF.max(2 * max_span).min(p.cap), "buffer {} for a span of at most {}", p.buf.len(), max_span);
                let first = p.first_held();
                let mut out = vec![0u8; 700];
                let mut at = first;
                while at < p.received {
                    let got = p.read_at(at, &mut out);
                    prop_assert!(got > 0);
                    prop_assert_eq!(&out[..got], &all[at as usize..at as usize + got]);
                    at += got as u64;
                }
                if let Some(h) = p.head() {
                    prop_assert_eq!(h, &all[..]);
                }
                let mut img = Vec::new();
                p.image(&mut img);
                let (q, rest) = Pipe::from_image(cap, &img).expect("its own image parses");
                prop_assert!(rest.is_empty());
                prop_assert_eq!((q.received, q.first_held()), (p.received, first));
            }
        }
    }

    #[test]
    fn a_short_exchange_allocates_little() {
        let mut p = Pipe::new(256 * 1024);
        p.push(&[7u8; 1500]);
        assert_eq!(p.buf.len(), MIN_BUF);
        p.release(1500);
        p.push(&[8u8; 3000]);
        assert_eq!(p.buf.len(), MIN_BUF, "released bytes make room: no growth");
        p.push(&[9u8; 100_000]);
        assert_eq!(p.buf.len(), 131_072);
    }
}
