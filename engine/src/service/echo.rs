//! The `echo` service (RFC 862 over TCP): every received byte is sent back.
//!
//! Output byte `o` is input byte `o`, so `tx_end()` is the number of bytes received and the
//! output bytes not yet acknowledged, `[acked, received)`, must be kept to answer `read_at`.
//! They sit in a per-connection ring of `buf_size` bytes (default 64 KiB), allocated on the
//! first received byte so idle connections cost no buffer. `on_recv` takes only what fits
//! (the rest stays unacknowledged in TCP and the advertised window is `rx_space()`), and
//! `on_acked` frees. For replication, the unacknowledged bytes are exactly the received data
//! the standby needs (DESIGN §4: "echoed bytes already replicated"); see [`EchoCursor`].

use super::{ByteStream, Kind};

/// Default per-connection buffer.
pub const DEFAULT_BUF_SIZE: usize = 64 * 1024;

/// Configuration of the `echo` service.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct EchoConfig {
    /// Bytes of echo buffer per connection (bounds data in flight). Minimum 1.
    pub buf_size: usize,
}

impl Default for EchoConfig {
    fn default() -> Self {
        EchoConfig { buf_size: DEFAULT_BUF_SIZE }
    }
}

/// Replicable position of an echo connection; the bytes `[acked, received)` travel as
/// received-data chunks ([`EchoState::unacked`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct EchoCursor {
    pub received: u64,
    pub acked: u64,
    pub peer_fin: bool,
}

/// Per-connection echo state.
#[derive(Clone, Debug)]
pub struct EchoState {
    /// Ring buffer; empty until the first byte. Byte at stream offset `o` is at
    /// `o % buf_size`.
    buf: Box<[u8]>,
    buf_size: usize,
    /// Bytes received (= `tx_end`).
    received: u64,
    /// Output acknowledged by the peer.
    acked: u64,
    peer_fin: bool,
}

impl EchoState {
    pub fn new(cfg: EchoConfig) -> Self {
        EchoState {
            buf: Box::new([]),
            buf_size: cfg.buf_size.max(1),
            received: 0,
            acked: 0,
            peer_fin: false,
        }
    }

    /// Bytes held for retransmission.
    #[inline]
    pub fn in_flight(&self) -> usize {
        (self.received - self.acked) as usize
    }

    /// True once the ring has been allocated.
    pub fn is_allocated(&self) -> bool {
        !self.buf.is_empty()
    }

    pub fn cursor(&self) -> EchoCursor {
        EchoCursor { received: self.received, acked: self.acked, peer_fin: self.peer_fin }
    }

    /// The unacknowledged bytes `[acked, received)` as up to two slices (ring order).
    pub fn unacked(&self) -> (&[u8], &[u8]) {
        if self.buf.is_empty() || self.received == self.acked {
            return (&[], &[]);
        }
        let start = (self.acked % self.buf_size as u64) as usize;
        let len = self.in_flight();
        let first = len.min(self.buf_size - start);
        (&self.buf[start..start + first], &self.buf[..len - first])
    }

    /// Rebuild from a replicated cursor and the unacknowledged bytes; `None` if inconsistent.
    pub fn from_cursor(cfg: EchoConfig, c: &EchoCursor, unacked: &[u8]) -> Option<EchoState> {
        let mut s = EchoState::new(cfg);
        if c.acked > c.received || c.received - c.acked != unacked.len() as u64 || unacked.len() > s.buf_size {
            return None;
        }
        s.received = c.acked;
        s.acked = c.acked;
        if s.on_recv_inner(unacked) != unacked.len() {
            return None;
        }
        s.peer_fin = c.peer_fin;
        Some(s)
    }

    fn on_recv_inner(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.buf_size - self.in_flight());
        if n == 0 {
            return 0;
        }
        if self.buf.is_empty() {
            self.buf = vec![0u8; self.buf_size].into_boxed_slice();
        }
        let start = (self.received % self.buf_size as u64) as usize;
        let first = n.min(self.buf_size - start);
        self.buf[start..start + first].copy_from_slice(&data[..first]);
        self.buf[..n - first].copy_from_slice(&data[first..n]);
        self.received += n as u64;
        n
    }
}

impl Default for EchoState {
    fn default() -> Self {
        EchoState::new(EchoConfig::default())
    }
}

impl ByteStream for EchoState {
    fn on_recv(&mut self, data: &[u8]) -> usize {
        if self.peer_fin {
            return 0;
        }
        self.on_recv_inner(data)
    }

    fn on_peer_fin(&mut self) {
        self.peer_fin = true;
    }

    fn tx_end(&self) -> u64 {
        self.received
    }

    /// After the peer's FIN the output is final: TCP sends FIN once everything is echoed.
    fn tx_closed(&self) -> bool {
        self.peer_fin
    }

    fn read_at(&self, off: u64, buf: &mut [u8]) -> usize {
        if off < self.acked || off >= self.received || self.buf.is_empty() {
            return 0;
        }
        let n = buf.len().min((self.received - off) as usize);
        let start = (off % self.buf_size as u64) as usize;
        let first = n.min(self.buf_size - start);
        buf[..first].copy_from_slice(&self.buf[start..start + first]);
        buf[first..n].copy_from_slice(&self.buf[..n - first]);
        n
    }

    fn on_acked(&mut self, off: u64) {
        let off = off.min(self.received);
        if off > self.acked {
            self.acked = off;
        }
    }

    fn rx_space(&self) -> usize {
        if self.peer_fin {
            return 0;
        }
        self.buf_size - self.in_flight()
    }
}

/// The `echo` kind (see the module docs).
pub struct EchoKind;

/// The config of a state bound to a non-echo listener (cannot occur; see `Kind`).
static DETACHED: EchoConfig = EchoConfig { buf_size: DEFAULT_BUF_SIZE };

impl Kind for EchoKind {
    const NAME: &'static str = "echo";
    const IMAGE_TAG: u8 = 1;
    type Spec = EchoConfig;
    type State = EchoState;
    type Counters = ();
    type Conn<'a> = &'a mut EchoState;

    fn new_state(spec: &EchoConfig) -> EchoState {
        EchoState::new(*spec)
    }

    #[inline]
    fn bind<'a>(state: &'a mut EchoState, _spec: &'a EchoConfig, _stats: &'a mut ()) -> &'a mut EchoState {
        // The ring was sized from the spec when the connection opened.
        state
    }

    fn detached_spec() -> &'static EchoConfig {
        &DETACHED
    }

    fn peer_fin(state: &EchoState) -> bool {
        state.peer_fin
    }

    /// The cursor, then the unacknowledged bytes (ring order):
    /// `received u64 | acked u64 | peer_fin u8 | unacked bytes`, little-endian.
    fn image(state: &EchoState, out: &mut Vec<u8>) {
        let c = state.cursor();
        out.extend_from_slice(&c.received.to_le_bytes());
        out.extend_from_slice(&c.acked.to_le_bytes());
        out.push(c.peer_fin as u8);
        let (a, b) = state.unacked();
        out.extend_from_slice(a);
        out.extend_from_slice(b);
    }

    fn from_image(spec: &EchoConfig, b: &[u8]) -> Option<EchoState> {
        let u64_at = |o: usize| b.get(o..o + 8).map(|s| u64::from_le_bytes(s.try_into().unwrap_or([0; 8])));
        let c = EchoCursor { received: u64_at(0)?, acked: u64_at(8)?, peer_fin: *b.get(16)? != 0 };
        EchoState::from_cursor(*spec, &c, b.get(17..)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn echoes_and_bounds() {
        let mut e = EchoState::new(EchoConfig { buf_size: 8 });
        assert!(!e.is_allocated());
        assert_eq!(e.rx_space(), 8);
        assert_eq!(e.on_recv(b"hello"), 5);
        assert!(e.is_allocated());
        assert_eq!(e.on_recv(b" world"), 3);
        assert_eq!(e.rx_space(), 0);
        assert_eq!(e.tx_end(), 8);
        let mut b = [0u8; 16];
        assert_eq!(e.read_at(0, &mut b), 8);
        assert_eq!(&b[..8], b"hello wo");
        e.on_acked(6);
        assert_eq!(e.read_at(0, &mut b), 0, "below acked");
        assert_eq!(e.rx_space(), 6);
        assert_eq!(e.on_recv(b"rld!"), 4); // wraps the ring
        assert_eq!(e.read_at(6, &mut b), 6);
        assert_eq!(&b[..6], b"world!");
        assert_eq!(e.read_at(12, &mut b), 0, "at tx_end");
        assert_eq!(e.unacked(), (&b"wo"[..], &b"rld!"[..]));
        e.on_acked(100); // clamped
        assert_eq!(e.in_flight(), 0);
    }

    #[test]
    fn fin_closes_after_echo() {
        let mut e = EchoState::default();
        e.on_recv(b"bye");
        assert!(!e.tx_closed());
        e.on_peer_fin();
        assert!(e.tx_closed());
        assert_eq!(e.tx_end(), 3);
        assert_eq!(e.rx_space(), 0);
        assert_eq!(e.on_recv(b"late"), 0);
    }

    #[test]
    fn cursor_round_trip() {
        let cfg = EchoConfig { buf_size: 10 };
        let mut e = EchoState::new(cfg);
        e.on_recv(b"0123456789");
        e.on_acked(7);
        e.on_recv(b"abcde");
        let (a, b) = e.unacked();
        let bytes = [a, b].concat();
        assert_eq!(bytes, b"789abcde");
        let r = EchoState::from_cursor(cfg, &e.cursor(), &bytes).unwrap();
        let mut x = [0u8; 10];
        let mut y = [0u8; 10];
        assert_eq!(r.read_at(7, &mut x), e.read_at(7, &mut y));
        assert_eq!(x, y);
        assert!(EchoState::from_cursor(cfg, &e.cursor(), b"short").is_none());
        assert!(EchoState::from_cursor(cfg, &EchoCursor { received: 1, acked: 2, peer_fin: false }, b"").is_none());
    }

    proptest! {
        /// Model: output stream == input stream; any read in [acked, tx_end) returns it.
        #[test]
        fn output_equals_input(size in 1usize..100,
                               steps in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..150), 0u64..200, 1usize..120), 1..60)) {
            let mut e = EchoState::new(EchoConfig { buf_size: size });
            let mut input: Vec<u8> = Vec::new();
            for (data, ack_step, rd) in steps {
                let space = e.rx_space();
                let n = e.on_recv(&data);
                prop_assert_eq!(n, data.len().min(space));
                input.extend_from_slice(&data[..n]);
                prop_assert_eq!(e.tx_end(), input.len() as u64);
                let acked = e.acked;
                let mut buf = vec![0u8; rd];
                for off in acked..e.tx_end() {
                    let k = e.read_at(off, &mut buf);
                    prop_assert_eq!(k, rd.min((e.tx_end() - off) as usize));
                    prop_assert_eq!(&buf[..k], &input[off as usize..off as usize + k]);
                }
                e.on_acked(acked + ack_step);
                prop_assert!(e.in_flight() <= size);
            }
        }
    }
}
