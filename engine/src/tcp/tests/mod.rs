//! Per-state unit tests with a recording sink and a deterministic test service, plus a
//! proptest that arbitrary header sequences never panic. The doubles and helpers are here;
//! the tests are grouped by phase of a connection's life.

use super::*;
use crate::service::ByteStream;
use crate::time::Instant;
use crate::wire::{SackBlock, TcpFlags as F};

// ------------------------------------------------------------------ test doubles

/// Records every emitted segment with its payload.
#[derive(Default)]
pub(super) struct RecSink {
    pub segs: Vec<(TcpHeader, Vec<u8>)>,
    /// Refuse (and lose) the next emits while > 0.
    pub fail: usize,
}

impl SegmentSink for RecSink {
    fn emit(&mut self, hdr: &TcpHeader, payload_len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        if self.fail > 0 {
            self.fail -= 1;
            return false;
        }
        let mut p = vec![0u8; payload_len];
        fill(&mut p);
        self.segs.push((*hdr, p));
        true
    }
}

impl RecSink {
    pub fn take(&mut self) -> Vec<(TcpHeader, Vec<u8>)> {
        core::mem::take(&mut self.segs)
    }
    pub fn last(&self) -> &TcpHeader {
        &self.segs.last().expect("a segment").0
    }
}

/// Deterministic generator (output byte at offset `i` is `gen_byte(i)`) or echo service.
/// Checks the `ByteStream` contract: `read_at` never below `acked`, `on_acked` monotonic.
#[derive(Default)]
pub(super) struct TestSvc {
    pub rx: Vec<u8>,
    pub rx_cap: usize,
    pub app_read: usize,
    pub echo: bool,
    pub gen_len: u64,
    pub close_after: bool,
    pub peer_fin: bool,
    pub acked: u64,
    /// `ByteStream::ack_limit` (a proxy half's `commit = "peer"`).
    pub limit: Option<u64>,
    /// `ByteStream::take_skipped`.
    pub skipped: u64,
}

impl TestSvc {
    pub fn generator(len: u64, rx_cap: usize) -> Self {
        TestSvc { gen_len: len, close_after: true, rx_cap, ..Default::default() }
    }
    pub fn open_generator(len: u64, rx_cap: usize) -> Self {
        TestSvc { gen_len: len, close_after: false, rx_cap, ..Default::default() }
    }
    pub fn echo(rx_cap: usize) -> Self {
        TestSvc { echo: true, rx_cap, ..Default::default() }
    }
    pub fn gen_byte(off: u64) -> u8 {
        (off.wrapping_mul(7) ^ (off >> 9)) as u8
    }
    pub fn drain_app(&mut self) {
        self.app_read = self.rx.len();
    }
}

impl ByteStream for TestSvc {
    fn on_recv(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.rx_space());
        self.rx.extend_from_slice(&data[..n]);
        n
    }
    fn on_peer_fin(&mut self) {
        assert!(!self.peer_fin, "FIN delivered twice");
        self.peer_fin = true;
    }
    fn tx_end(&self) -> u64 {
        if self.echo {
            self.rx.len() as u64
        } else {
            self.gen_len
        }
    }
    fn tx_closed(&self) -> bool {
        if self.echo {
            self.peer_fin
        } else {
            self.close_after
        }
    }
    fn read_at(&self, off: u64, buf: &mut [u8]) -> usize {
        assert!(off >= self.acked, "read_at({off}) below acked {}", self.acked);
        let end = self.tx_end();
        let n = (end.saturating_sub(off) as usize).min(buf.len());
        for (i, b) in buf[..n].iter_mut().enumerate() {
            let o = off + i as u64;
            *b = if self.echo { self.rx[o as usize] } else { Self::gen_byte(o) };
        }
        n
    }
    fn on_acked(&mut self, off: u64) {
        assert!(off >= self.acked && off <= self.tx_end(), "on_acked({off}) acked {} end {}", self.acked, self.tx_end());
        self.acked = off;
    }
    fn ack_limit(&self) -> Option<u64> {
        self.limit
    }
    fn take_skipped(&mut self) -> u64 {
        std::mem::take(&mut self.skipped)
    }
    fn rx_space(&self) -> usize {
        let held = if self.echo { self.rx.len() - self.acked as usize } else { self.rx.len() - self.app_read };
        self.rx_cap.saturating_sub(held)
    }
}

// ------------------------------------------------------------------ helpers

const CISN: SeqNum = SeqNum(0xffff_fff0); // client ISN: wraps during the tests
const SISN: SeqNum = SeqNum(1_000_000);
/// The client's usual window field.
const W: u16 = 65535;

fn t(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

fn hdr(flags: F, seq: SeqNum, ack: SeqNum, window: u16) -> TcpHeader {
    TcpHeader { src_port: 5555, dst_port: 80, seq, ack, flags, window, options: TcpOptions::default() }
}

fn syn(opts: TcpOptions) -> TcpHeader {
    TcpHeader { options: opts, ..hdr(F::SYN, CISN, SeqNum(0), 65535) }
}

fn full_opts() -> TcpOptions {
    TcpOptions { mss: Some(1400), wscale: Some(8), sack_permitted: true, timestamps: Some((500, 0)), ..Default::default() }
}

/// A passive connection brought to ESTABLISHED with the given client SYN options.
/// Returns (tcb, sink after the handshake, next client seq).
fn established(cfg: &TcpConfig, opts: TcpOptions, svc: &mut TestSvc) -> (Tcb, RecSink, SeqNum) {
    let mut out = RecSink::default();
    let mut tcb = Tcb::accept(t(0), cfg, &syn(opts), SISN, &mut out).expect("accept");
    assert_eq!(tcb.state(), State::SynReceived);
    let mut ack = hdr(F::ACK, CISN + 1, SISN + 1, W);
    if opts.timestamps.is_some() {
        ack.options.timestamps = Some((501, out.last().options.timestamps.map_or(0, |x| x.0)));
    }
    out.take();
    let v = tcb.on_segment(t(1), cfg, &ack, &[], svc, &mut out);
    assert_eq!(v, SegmentVerdict::Accepted);
    assert!(tcb.state().is_synchronized());
    (tcb, out, CISN + 1)
}

fn data_seg(seq: SeqNum, ack: SeqNum, payload_len: usize) -> (TcpHeader, Vec<u8>) {
    (hdr(F::ACK, seq, ack, W), (0..payload_len).map(|i| i as u8).collect())
}

mod close;
mod data;
mod fuzz;
mod handshake;
mod held;
mod probes;
mod recovery;
mod rfc5961;
mod snapshot;
