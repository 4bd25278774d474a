//! One direction's bytes of a proxied connection ([`Pipe`]): a ring indexed by stream offset.

use std::fmt;

/// One direction's bytes: what a half's peer sent, held until the other half's peer
/// acknowledged them. A ring indexed by stream offset (`off % cap`), allocated on the first
/// byte so an idle connection costs no buffer.
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
}

impl fmt::Debug for Pipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipe").field("cap", &self.cap).field("received", &self.received).field("released", &self.released).field("peer_fin", &self.peer_fin).finish()
    }
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
        if self.buf.is_empty() {
            self.buf = vec![0u8; self.cap].into_boxed_slice();
        }
        let skip = data.len().saturating_sub(self.cap);
        let mut off = self.received + skip as u64;
        for chunk in data[skip..].chunks(self.cap) {
            let start = (off % self.cap as u64) as usize;
            let first = chunk.len().min(self.cap - start);
            self.buf[start..start + first].copy_from_slice(&chunk[..first]);
            self.buf[..chunk.len() - first].copy_from_slice(&chunk[first..]);
            off += chunk.len() as u64;
        }
        self.received += data.len() as u64;
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
        let n = out.len().min((self.received - off) as usize);
        let start = (off % self.cap as u64) as usize;
        let first = n.min(self.cap - start);
        out[..first].copy_from_slice(&self.buf[start..start + first]);
        out[first..n].copy_from_slice(&self.buf[..n - first]);
        n
    }

    pub(super) fn release(&mut self, off: u64) {
        let off = off.min(self.received);
        if off > self.released {
            self.released = off;
        }
    }

    /// `received u64 | released u64 | peer_fin u8 | held bytes [first_held, received)`.
    pub(super) fn image(&self, out: &mut Vec<u8>) {
        let first = self.first_held();
        out.extend_from_slice(&self.received.to_le_bytes());
        out.extend_from_slice(&first.to_le_bytes());
        out.push(self.peer_fin as u8);
        out.extend_from_slice(&(self.received - first).to_le_bytes());
        let mut at = first;
        let mut chunk = [0u8; 512];
        while at < self.received {
            let n = self.read_at(at, &mut chunk);
            if n == 0 {
                break;
            }
            out.extend_from_slice(&chunk[..n]);
            at += n as u64;
        }
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
