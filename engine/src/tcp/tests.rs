//! Per-state unit tests with a recording sink and a deterministic test service, plus a
//! proptest that arbitrary header sequences never panic.

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

// ------------------------------------------------------------------ handshake

#[test]
fn passive_handshake_all_options() {
    let cfg = TcpConfig::default();
    let mut out = RecSink::default();
    let tcb = Tcb::accept(t(0), &cfg, &syn(full_opts()), SISN, &mut out).unwrap();
    let sa = out.last();
    assert_eq!(sa.flags, F::SYN | F::ACK);
    assert_eq!((sa.seq, sa.ack), (SISN, CISN + 1));
    assert_eq!((sa.src_port, sa.dst_port), (80, 5555));
    assert_eq!(sa.options.mss, Some(1460));
    assert_eq!(sa.options.wscale, Some(7));
    assert!(sa.options.sack_permitted);
    assert_eq!(sa.options.timestamps.map(|x| x.1), Some(500));
    assert_eq!(tcb.mss(), 1400);
    assert_eq!(tcb.window_scales(), (8, 7));
    assert!(tcb.sack_enabled() && tcb.timestamps_enabled());
    let mut svc = TestSvc::echo(1 << 20);
    let (tcb, _, _) = established(&cfg, full_opts(), &mut svc);
    // Peer window 65535 << 8.
    assert_eq!(tcb.snd_wnd(), 65535 << 8);
}

#[test]
fn passive_handshake_no_options() {
    let cfg = TcpConfig::default();
    let mut out = RecSink::default();
    let tcb = Tcb::accept(t(0), &cfg, &syn(TcpOptions::default()), SISN, &mut out).unwrap();
    let sa = out.last();
    assert_eq!(sa.options.wscale, None);
    assert!(!sa.options.sack_permitted);
    assert_eq!(sa.options.timestamps, None);
    assert_eq!(tcb.mss(), 536); // RFC 9293 §3.7.1 default
    assert_eq!(tcb.window_scales(), (0, 0));
    let mut svc = TestSvc::echo(1 << 20);
    let (tcb, _, _) = established(&cfg, TcpOptions::default(), &mut svc);
    assert_eq!(tcb.snd_wnd(), 65535);
}

#[test]
fn passive_handshake_partial_options_and_disabled_config() {
    let cfg = TcpConfig { timestamps: false, sack: false, ..TcpConfig::default() };
    let mut out = RecSink::default();
    let tcb = Tcb::accept(t(0), &cfg, &syn(full_opts()), SISN, &mut out).unwrap();
    assert!(!tcb.sack_enabled() && !tcb.timestamps_enabled());
    assert_eq!(out.last().options.timestamps, None);
    let o = TcpOptions { wscale: Some(20), ..Default::default() };
    let tcb = Tcb::accept(t(0), &TcpConfig::default(), &syn(o), SISN, &mut out).unwrap();
    assert_eq!(tcb.window_scales(), (14, 7)); // RFC 7323 §2.3 clamp
}

#[test]
fn accept_rejects_non_syn() {
    let cfg = TcpConfig::default();
    let mut out = RecSink::default();
    let rst = hdr(F::RST, CISN, SeqNum(0), 0);
    assert_eq!(Tcb::accept(t(0), &cfg, &rst, SISN, &mut out).err(), Some(TcpError::RstInListen));
    let ack = hdr(F::ACK, CISN, SeqNum(77), 0);
    assert_eq!(Tcb::accept(t(0), &cfg, &ack, SISN, &mut out).err(), Some(TcpError::AckInListen));
    let r = reset_for(&ack, 0).unwrap();
    assert_eq!((r.seq, r.flags), (SeqNum(77), F::RST));
    let none = hdr(F::PSH, CISN, SeqNum(0), 0);
    assert_eq!(Tcb::accept(t(0), &cfg, &none, SISN, &mut out).err(), Some(TcpError::NotSyn));
    let r = reset_for(&none, 10).unwrap();
    assert_eq!((r.ack, r.flags), (CISN + 10, F::RST | F::ACK));
    let sf = hdr(F::SYN | F::FIN, CISN, SeqNum(0), 0);
    assert_eq!(Tcb::accept(t(0), &cfg, &sf, SISN, &mut out).err(), Some(TcpError::Malformed));
    assert!(out.segs.is_empty());
    assert!(reset_for(&rst, 0).is_none());
}

#[test]
fn active_open_and_syn_retransmit() {
    let cfg = TcpConfig::default();
    let mut out = RecSink::default();
    let mut svc = TestSvc::echo(65535);
    let mut tcb = Tcb::connect(t(0), &cfg, 40000, 80, CISN, &mut out);
    let s = out.take().pop().unwrap().0;
    assert_eq!(s.flags, F::SYN);
    assert_eq!(s.options.mss, Some(1460));
    assert_eq!(tcb.state(), State::SynSent);
    // SYN lost: retransmitted at the initial RTO.
    assert_eq!(tcb.next_deadline(), Some(t(1000)));
    tcb.on_timer(t(1000), &cfg, &mut svc, &mut out);
    assert_eq!(out.take().pop().unwrap().0.flags, F::SYN);
    assert_eq!(tcb.next_deadline(), Some(t(3000))); // backed off
    // A bad ACK gets a RST.
    let bad = hdr(F::SYN | F::ACK, SISN, CISN + 5, 1000);
    assert_eq!(tcb.on_segment(t(1500), &cfg, &bad, &[], &mut svc, &mut out), SegmentVerdict::BadAck);
    assert_eq!(out.take().pop().unwrap().0.flags, F::RST);
    let mut sa = hdr(F::SYN | F::ACK, SISN, CISN + 1, 1000);
    sa.options = TcpOptions { mss: Some(1200), wscale: Some(2), ..Default::default() };
    assert_eq!(tcb.on_segment(t(1600), &cfg, &sa, &[], &mut svc, &mut out), SegmentVerdict::Accepted);
    assert_eq!(tcb.state(), State::Established);
    let a = out.take().pop().unwrap().0;
    assert_eq!((a.flags, a.seq, a.ack), (F::ACK, CISN + 1, SISN + 1));
    assert_eq!(tcb.mss(), 1200);
    assert_eq!(tcb.snd_wnd(), 1000); // SYN window unscaled
}

#[test]
fn syn_sent_rst_handling() {
    let cfg = TcpConfig::default();
    let mut out = RecSink::default();
    let mut svc = TestSvc::echo(65535);
    let mut tcb = Tcb::connect(t(0), &cfg, 40000, 80, CISN, &mut out);
    let r = hdr(F::RST, SISN, SeqNum(0), 0);
    assert_eq!(tcb.on_segment(t(1), &cfg, &r, &[], &mut svc, &mut out), SegmentVerdict::RstIgnored);
    let r = hdr(F::RST | F::ACK, SeqNum(0), CISN + 1, 0);
    assert_eq!(tcb.on_segment(t(1), &cfg, &r, &[], &mut svc, &mut out), SegmentVerdict::RstAccepted);
    assert!(tcb.is_closed());
    assert_eq!(tcb.next_deadline(), None);
}

#[test]
fn syn_received_retransmits_syn_ack() {
    let cfg = TcpConfig::default();
    let mut out = RecSink::default();
    let mut svc = TestSvc::echo(65535);
    let mut tcb = Tcb::accept(t(0), &cfg, &syn(full_opts()), SISN, &mut out).unwrap();
    out.take();
    let v = tcb.on_segment(t(10), &cfg, &syn(full_opts()), &[], &mut svc, &mut out);
    assert_eq!(v, SegmentVerdict::SynAckRetransmitted);
    assert_eq!(out.take()[0].0.flags, F::SYN | F::ACK);
    // Timer-driven retransmission, then give up after syn_ack_retries.
    let mut now;
    for _ in 0..cfg.syn_ack_retries {
        now = tcb.next_deadline().unwrap();
        tcb.on_timer(now, &cfg, &mut svc, &mut out);
        assert_eq!(out.take()[0].0.flags, F::SYN | F::ACK);
    }
    now = tcb.next_deadline().unwrap();
    tcb.on_timer(now, &cfg, &mut svc, &mut out);
    assert!(tcb.is_closed());
    assert_eq!(out.take()[0].0.flags, F::RST | F::ACK);
    assert_eq!(tcb.stats().retransmit_aborts, 1);
}

#[test]
fn syn_received_bad_ack_gets_rst() {
    let cfg = TcpConfig::default();
    let mut out = RecSink::default();
    let mut svc = TestSvc::echo(65535);
    let mut tcb = Tcb::accept(t(0), &cfg, &syn(TcpOptions::default()), SISN, &mut out).unwrap();
    out.take();
    let a = hdr(F::ACK, CISN + 1, SISN + 9, 100);
    assert_eq!(tcb.on_segment(t(1), &cfg, &a, &[], &mut svc, &mut out), SegmentVerdict::BadAck);
    let r = out.take()[0].0;
    assert_eq!((r.flags, r.seq), (F::RST, SISN + 9));
    assert_eq!(tcb.state(), State::SynReceived);
}

// ------------------------------------------------------------------ data

#[test]
fn data_in_delayed_ack_and_every_second_segment() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(0, 1 << 20);
    let (mut tcb, mut out, seq) = established(&cfg, TcpOptions::default(), &mut svc);
    let (h, p) = data_seg(seq, SISN + 1, 536);
    assert_eq!(tcb.on_segment(t(10), &cfg, &h, &p, &mut svc, &mut out), SegmentVerdict::Accepted);
    assert!(out.segs.is_empty(), "first segment: delayed ACK");
    assert_eq!(tcb.next_deadline(), Some(t(50)));
    tcb.on_timer(t(50), &cfg, &mut svc, &mut out);
    assert_eq!(out.take()[0].0.ack, seq + 536);
    // Two segments: ACK on the second.
    let (h, p) = data_seg(seq + 536, SISN + 1, 536);
    tcb.on_segment(t(60), &cfg, &h, &p, &mut svc, &mut out);
    assert!(out.segs.is_empty());
    let (h, p) = data_seg(seq + 1072, SISN + 1, 536);
    tcb.on_segment(t(61), &cfg, &h, &p, &mut svc, &mut out);
    assert_eq!(out.take()[0].0.ack, seq + 1608);
    assert_eq!(svc.rx.len(), 1608);
    assert_eq!(tcb.stats().bytes_in, 1608);
    // A retransmitted (old) segment is ACKed at once.
    tcb.on_segment(t(62), &cfg, &h, &p, &mut svc, &mut out);
    assert_eq!(out.take()[0].0.ack, seq + 1608);
    assert_eq!(svc.rx.len(), 1608);
}

#[test]
fn service_full_data_not_acked_and_window_no_shrink() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(0, 1000);
    let (mut tcb, mut out, seq) = established(&cfg, TcpOptions::default(), &mut svc);
    // The handshake advertised 65535 (unscaled SYN window); the service only takes 1000.
    let (h, p) = data_seg(seq, SISN + 1, 1500);
    tcb.on_segment(t(10), &cfg, &h, &p, &mut svc, &mut out);
    let a = out.take().pop().unwrap().0;
    assert_eq!(a.ack, seq + 1000, "only consumed bytes are acked");
    // Right edge never moves left: advertised window stays at old edge - rcv_nxt.
    assert_eq!(a.window as u32, 65535 - 1000);
    svc.drain_app();
    tcb.poll_send(t(11), &cfg, &mut svc, &mut out);
    // The 500 in-window bytes the full service could not take were held, not dropped: once
    // the application read, they are delivered and acknowledged without a retransmission.
    assert_eq!(svc.rx.len(), 1500, "held in-window bytes delivered after the service drained");
    assert_eq!(&svc.rx[..], &p[..]);
    let a = out.take().pop().expect("ACK after delivery").0;
    assert_eq!(a.ack, seq + 1500);
    assert_eq!(a.options.sack_count, 0, "held in-order bytes are not SACK blocks");
}

#[test]
fn data_out_segments_cwnd_and_acks() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(100_000, 1 << 20);
    let (mut tcb, mut out, seq) = established(&cfg, TcpOptions { mss: Some(1000), wscale: Some(4), ..Default::default() }, &mut svc);
    let segs = out.take();
    // Initial cwnd = 10 segments.
    assert_eq!(segs.len(), 10, "{:?}", segs.iter().map(|s| s.1.len()).collect::<Vec<_>>());
    for (i, (h, p)) in segs.iter().enumerate() {
        assert_eq!(h.seq, SISN + 1 + (i as u32) * 1000);
        assert_eq!(p.len(), 1000);
        assert!(p.iter().enumerate().all(|(j, &b)| b == TestSvc::gen_byte((i * 1000 + j) as u64)));
    }
    assert_eq!(tcb.next_deadline(), Some(t(1001)));
    // ACK 2 segments: slow start grows cwnd by 2 MSS (RFC 3465 L=2) -> 4 more segments.
    let a = hdr(F::ACK, seq, SISN + 1 + 2000, W);
    tcb.on_segment(t(20), &cfg, &a, &[], &mut svc, &mut out);
    assert_eq!(out.take().len(), 4);
    assert_eq!(svc.acked, 2000);
    assert!(tcb.srtt().is_some(), "Karn sample taken");
}

#[test]
fn ack_of_unsent_data_is_challenged() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(0, 1 << 20);
    let (mut tcb, mut out, seq) = established(&cfg, TcpOptions::default(), &mut svc);
    let a = hdr(F::ACK, seq, SISN + 100, W);
    assert_eq!(tcb.on_segment(t(5), &cfg, &a, &[], &mut svc, &mut out), SegmentVerdict::BadAck);
    assert_eq!(out.take()[0].0.ack, seq);
    // No ACK bit: dropped.
    let n = hdr(F::PSH, seq, SeqNum(0), 1000);
    assert_eq!(tcb.on_segment(t(5), &cfg, &n, &[1, 2], &mut svc, &mut out), SegmentVerdict::NoAck);
    assert!(svc.rx.is_empty());
}

#[test]
fn out_of_order_sack_and_hole_fill() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(0, 1 << 20);
    let mut o = full_opts();
    o.mss = Some(1000);
    let (mut tcb, mut out, seq) = established(&cfg, o, &mut svc);
    let mut ts = 600;
    let mut seg = |off: u32, len: usize| {
        let (mut h, p) = data_seg(seq + off, SISN + 1, len);
        ts += 1;
        h.options.timestamps = Some((ts, 0));
        (h, p)
    };
    let (h2, p2) = seg(1000, 1000);
    let (h3, p3) = seg(3000, 500);
    let (h1, p1) = seg(0, 1000);
    assert_eq!(tcb.on_segment(t(10), &cfg, &h2, &p2, &mut svc, &mut out), SegmentVerdict::Accepted);
    let a = out.take().pop().unwrap().0;
    assert_eq!(a.ack, seq, "duplicate ACK");
    assert_eq!(a.options.sacks(), &[SackBlock { left: seq + 1000, right: seq + 2000 }]);
    tcb.on_segment(t(11), &cfg, &h3, &p3, &mut svc, &mut out);
    let a = out.take().pop().unwrap().0;
    // Most recent block first (RFC 2018 §4).
    assert_eq!(
        a.options.sacks(),
        &[SackBlock { left: seq + 3000, right: seq + 3500 }, SackBlock { left: seq + 1000, right: seq + 2000 }]
    );
    assert_eq!(tcb.stats().ooo_segments, 2);
    // Fill the first hole: immediate ACK up to 2000, one block left.
    tcb.on_segment(t(12), &cfg, &h1, &p1, &mut svc, &mut out);
    let a = out.take().pop().unwrap().0;
    assert_eq!(a.ack, seq + 2000);
    assert_eq!(a.options.sacks().len(), 1);
    assert_eq!(svc.rx.len(), 2000);
    let (h, p) = seg(2000, 1000);
    tcb.on_segment(t(13), &cfg, &h, &p, &mut svc, &mut out);
    let a = out.take().pop().unwrap().0;
    assert_eq!(a.ack, seq + 3500);
    assert_eq!(a.options.sacks().len(), 0);
    assert!(tcb.ooo.is_none(), "store freed when the hole fills");
    assert_eq!(&svc.rx[..1000], &p1[..]);
    assert_eq!(&svc.rx[3000..], &p3[..]);
}

#[test]
fn ooo_bound_drops_and_counts() {
    let cfg = TcpConfig { max_ooo_bytes: 1500, ..TcpConfig::default() };
    let mut svc = TestSvc::open_generator(0, 1 << 20);
    let (mut tcb, mut out, seq) = established(&cfg, TcpOptions::default(), &mut svc);
    let (h, p) = data_seg(seq + 2000, SISN + 1, 500);
    tcb.on_segment(t(10), &cfg, &h, &p, &mut svc, &mut out);
    assert_eq!(tcb.stats().ooo_dropped, 1);
    assert!(tcb.ooo.is_none());
}

// ------------------------------------------------------------------ loss recovery

#[test]
fn rto_retransmit_backoff_and_abort() {
    let cfg = TcpConfig { max_retransmits: 3, ..TcpConfig::default() };
    let mut svc = TestSvc::open_generator(3000, 1 << 20);
    let (mut tcb, mut out, _) = established(&cfg, TcpOptions::default(), &mut svc);
    let first = out.take();
    assert_eq!(first.len(), 6); // 3000 bytes at MSS 536
    let mut prev = t(1);
    let mut gaps = Vec::new();
    for _ in 0..3 {
        let d = tcb.next_deadline().unwrap();
        gaps.push((d - prev).millis());
        prev = d;
        tcb.on_timer(d, &cfg, &mut svc, &mut out);
        let r = out.take();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].0.seq, SISN + 1, "go back to SND.UNA");
        assert_eq!(r[0].1, first[0].1);
    }
    assert_eq!(gaps, vec![1000, 2000, 4000]);
    assert_eq!(tcb.cwnd(), 536);
    let d = tcb.next_deadline().unwrap();
    tcb.on_timer(d, &cfg, &mut svc, &mut out);
    assert!(tcb.is_closed());
    assert_eq!(out.take()[0].0.flags, F::RST | F::ACK);
    assert_eq!(tcb.stats().retransmit_aborts, 1);
    assert_eq!(tcb.stats().rto_timeouts, 3);
}

#[test]
fn rto_after_tx_buffer_failure_recovers() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(500, 1 << 20);
    let mut out = RecSink::default();
    let mut tcb = Tcb::accept(t(0), &cfg, &syn(TcpOptions::default()), SISN, &mut out).unwrap();
    out.take();
    out.fail = 1;
    tcb.on_segment(t(1), &cfg, &hdr(F::ACK, CISN + 1, SISN + 1, 1000), &[], &mut svc, &mut out);
    assert_eq!(tcb.stats().emit_failures, 1);
    assert!(out.segs.is_empty());
    let d = tcb.next_deadline().unwrap();
    tcb.on_timer(d, &cfg, &mut svc, &mut out);
    assert_eq!(out.take()[0].1.len(), 500);
}

#[test]
fn fast_retransmit_on_three_dup_acks_and_newreno_partial_ack() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(20_000, 1 << 20);
    let o = TcpOptions { mss: Some(1000), ..Default::default() };
    let (mut tcb, mut out, seq) = established(&cfg, o, &mut svc);
    assert_eq!(out.take().len(), 10);
    let una = SISN + 1;
    let dup = hdr(F::ACK, seq, una + 1000, W);
    tcb.on_segment(t(10), &cfg, &dup, &[], &mut svc, &mut out); // new ACK
    out.take();
    for i in 0..3 {
        tcb.on_segment(t(11 + i), &cfg, &dup, &[], &mut svc, &mut out);
    }
    assert_eq!(tcb.stats().dup_acks, 3);
    assert_eq!(tcb.stats().fast_retransmits, 1);
    let segs = out.take();
    assert_eq!(segs[0].0.seq, una + 1000, "retransmits SND.UNA");
    // Partial ACK: next hole retransmitted at once.
    let partial = hdr(F::ACK, seq, una + 3000, W);
    tcb.on_segment(t(20), &cfg, &partial, &[], &mut svc, &mut out);
    let s = out.take();
    assert!(s.iter().any(|s| s.0.seq == una + 3000), "{:?}", s.iter().map(|s| s.0.seq).collect::<Vec<_>>());
    assert!(tcb.stats().recovery_retransmits >= 1);
}

#[test]
fn sack_recovery_skips_sacked_data() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(10_000, 1 << 20);
    let o = TcpOptions { mss: Some(1000), sack_permitted: true, ..Default::default() };
    let (mut tcb, mut out, seq) = established(&cfg, o, &mut svc);
    assert_eq!(out.take().len(), 10);
    let una = SISN + 1;
    // Segments 0 and 2 lost; 1 and 3..9 SACKed.
    let mut a = hdr(F::ACK, seq, una, W);
    a.options.sack_blocks[0] = SackBlock { left: una + 3000, right: una + 10_000 };
    a.options.sack_blocks[1] = SackBlock { left: una + 1000, right: una + 2000 };
    a.options.sack_count = 2;
    tcb.on_segment(t(10), &cfg, &a, &[], &mut svc, &mut out);
    // SACKed > 3 segments: recovery starts on the first duplicate (RFC 6675 style).
    let s = out.take();
    assert_eq!(s[0].0.seq, una);
    tcb.on_segment(t(11), &cfg, &a, &[], &mut svc, &mut out);
    let s = out.take();
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].0.seq, una + 2000, "second hole, SACKed segment 1 skipped");
    tcb.on_segment(t(12), &cfg, &a, &[], &mut svc, &mut out);
    assert!(out.take().is_empty(), "nothing left to fill");
    let full = hdr(F::ACK, seq, una + 10_000, W);
    tcb.on_segment(t(20), &cfg, &full, &[], &mut svc, &mut out);
    assert!(!tcb.cc.in_recovery);
}

// ------------------------------------------------------------------ close

#[test]
fn passive_close_via_echo() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::echo(1 << 20);
    let (mut tcb, mut out, seq) = established(&cfg, TcpOptions::default(), &mut svc);
    let (h, p) = data_seg(seq, SISN + 1, 100);
    let mut h = h;
    h.flags = F::ACK | F::FIN | F::PSH;
    tcb.on_segment(t(10), &cfg, &h, &p, &mut svc, &mut out);
    // Echo closes on peer FIN: data + FIN go out together; CLOSE-WAIT -> LAST-ACK.
    assert_eq!(tcb.state(), State::LastAck);
    let s = out.take();
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].0.flags, F::ACK | F::FIN | F::PSH);
    assert_eq!(s[0].0.ack, seq + 101);
    assert_eq!(s[0].1, p);
    let a = hdr(F::ACK, seq + 101, SISN + 102, W);
    tcb.on_segment(t(20), &cfg, &a, &[], &mut svc, &mut out);
    assert!(tcb.is_closed());
    assert_eq!(svc.acked, 100);
}

#[test]
fn active_close_fin_wait_time_wait() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::generator(10, 1 << 20);
    let (mut tcb, mut out, seq) = established(&cfg, TcpOptions::default(), &mut svc);
    assert_eq!(tcb.state(), State::FinWait1);
    let s = out.take();
    assert_eq!(s[0].0.flags, F::ACK | F::FIN | F::PSH);
    tcb.on_segment(t(10), &cfg, &hdr(F::ACK, seq, SISN + 12, W), &[], &mut svc, &mut out);
    assert_eq!(tcb.state(), State::FinWait2);
    tcb.on_segment(t(20), &cfg, &hdr(F::ACK | F::FIN, seq, SISN + 12, 1000), &[], &mut svc, &mut out);
    assert_eq!(tcb.state(), State::TimeWait);
    assert_eq!(out.take()[0].0.ack, seq + 1);
    assert_eq!(tcb.next_deadline(), Some(t(20) + cfg.time_wait));
    // Retransmitted FIN: re-ACK and restart the timer.
    tcb.on_segment(t(500), &cfg, &hdr(F::ACK | F::FIN, seq, SISN + 12, 1000), &[], &mut svc, &mut out);
    assert_eq!(out.take()[0].0.ack, seq + 1);
    assert_eq!(tcb.next_deadline(), Some(t(500) + cfg.time_wait));
    // A new SYN above RCV.NXT may reuse the tuple.
    let s2 = hdr(F::SYN, seq + 100_000, SeqNum(0), 1000);
    assert_eq!(tcb.on_segment(t(600), &cfg, &s2, &[], &mut svc, &mut out), SegmentVerdict::SynInTimeWait);
    tcb.on_timer(t(500) + cfg.time_wait, &cfg, &mut svc, &mut out);
    assert!(tcb.is_closed());
}

#[test]
fn simultaneous_close() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::generator(0, 1 << 20);
    let (mut tcb, mut out, seq) = established(&cfg, TcpOptions::default(), &mut svc);
    assert_eq!(tcb.state(), State::FinWait1);
    assert_eq!(out.take()[0].0.flags, F::ACK | F::FIN);
    // Peer's FIN crosses ours (does not ack it).
    tcb.on_segment(t(10), &cfg, &hdr(F::ACK | F::FIN, seq, SISN + 1, 1000), &[], &mut svc, &mut out);
    assert_eq!(tcb.state(), State::Closing);
    tcb.on_segment(t(11), &cfg, &hdr(F::ACK, seq + 1, SISN + 2, W), &[], &mut svc, &mut out);
    assert_eq!(tcb.state(), State::TimeWait);
}

#[test]
fn fin_out_of_order_is_remembered() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(0, 1 << 20);
    let (mut tcb, mut out, seq) = established(&cfg, TcpOptions::default(), &mut svc);
    let (mut h, p) = data_seg(seq + 100, SISN + 1, 100);
    h.flags = F::ACK | F::FIN;
    tcb.on_segment(t(10), &cfg, &h, &p, &mut svc, &mut out);
    assert_eq!(tcb.state(), State::Established);
    let (h, p) = data_seg(seq, SISN + 1, 100);
    tcb.on_segment(t(11), &cfg, &h, &p, &mut svc, &mut out);
    assert_eq!(tcb.state(), State::CloseWait);
    assert!(svc.peer_fin);
    assert_eq!(out.take().pop().unwrap().0.ack, seq + 201);
}

// ------------------------------------------------------------------ RFC 5961, PAWS

#[test]
fn rst_exact_in_window_and_out_of_window() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(0, 1 << 20);
    let (mut tcb, mut out, seq) = established(&cfg, TcpOptions::default(), &mut svc);
    let v = tcb.on_segment(t(5), &cfg, &hdr(F::RST, seq + 1_000_000, SeqNum(0), 0), &[], &mut svc, &mut out);
    assert_eq!(v, SegmentVerdict::RstIgnored);
    assert!(out.segs.is_empty());
    let v = tcb.on_segment(t(5), &cfg, &hdr(F::RST, seq + 10, SeqNum(0), 0), &[], &mut svc, &mut out);
    assert_eq!(v, SegmentVerdict::ChallengeAck);
    let a = out.take()[0].0;
    assert_eq!((a.flags, a.seq, a.ack), (F::ACK, SISN + 1, seq));
    assert_eq!(tcb.stats().challenge_acks, 1);
    let v = tcb.on_segment(t(6), &cfg, &hdr(F::RST, seq, SeqNum(0), 0), &[], &mut svc, &mut out);
    assert_eq!(v, SegmentVerdict::RstAccepted);
    assert!(tcb.is_closed());
    assert_eq!(
        tcb.on_segment(t(7), &cfg, &hdr(F::ACK, seq, SISN + 1, 0), &[], &mut svc, &mut out),
        SegmentVerdict::Closed
    );
}

#[test]
fn syn_in_established_gets_challenge_ack() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(0, 1 << 20);
    let (mut tcb, mut out, seq) = established(&cfg, TcpOptions::default(), &mut svc);
    for s in [seq, seq + 5, seq - 1000, seq + 0x4000_0000] {
        let v = tcb.on_segment(t(5), &cfg, &hdr(F::SYN, s, SeqNum(0), 1000), &[], &mut svc, &mut out);
        assert_eq!(v, SegmentVerdict::ChallengeAck);
        assert_eq!(out.take()[0].0.ack, seq);
    }
    assert_eq!(tcb.state(), State::Established);
}

#[test]
fn out_of_window_data_gets_ack() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(0, 1 << 20);
    let (mut tcb, mut out, seq) = established(&cfg, TcpOptions::default(), &mut svc);
    let (h, p) = data_seg(seq + 200_000, SISN + 1, 100);
    assert_eq!(tcb.on_segment(t(5), &cfg, &h, &p, &mut svc, &mut out), SegmentVerdict::OutOfWindow);
    assert_eq!(out.take()[0].0.ack, seq);
    assert_eq!(tcb.stats().out_of_window, 1);
}

#[test]
fn paws_rejects_old_timestamp() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(0, 1 << 20);
    let (mut tcb, mut out, seq) = established(&cfg, full_opts(), &mut svc);
    let (mut h, p) = data_seg(seq, SISN + 1, 100);
    h.options.timestamps = Some((1000, 0));
    tcb.on_segment(t(10), &cfg, &h, &p, &mut svc, &mut out);
    assert_eq!(tcb.ts_recent(), 1000);
    let (mut h, p) = data_seg(seq + 100, SISN + 1, 100);
    h.options.timestamps = Some((999, 0));
    assert_eq!(tcb.on_segment(t(11), &cfg, &h, &p, &mut svc, &mut out), SegmentVerdict::PawsRejected);
    assert_eq!(svc.rx.len(), 100);
    assert_eq!(tcb.stats().paws_rejects, 1);
    let a = out.take().pop().unwrap().0;
    assert_eq!(a.ack, seq + 100);
    assert_eq!(a.options.timestamps.map(|x| x.1), Some(1000));
    // Wrapped-but-newer TSval is fine.
    let (mut h, p) = data_seg(seq + 100, SISN + 1, 100);
    h.options.timestamps = Some((1000u32.wrapping_add(0x7fff_0000), 0));
    assert_eq!(tcb.on_segment(t(12), &cfg, &h, &p, &mut svc, &mut out), SegmentVerdict::Accepted);
}

#[test]
fn timestamps_rtt_sample() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(1000, 1 << 20);
    let (mut tcb, mut out, seq) = established(&cfg, full_opts(), &mut svc);
    let s = out.take();
    let tsval = s[0].0.options.timestamps.unwrap().0;
    let mut a = hdr(F::ACK, seq, SISN + 1001, W);
    a.options.timestamps = Some((700, tsval));
    tcb.on_segment(t(1 + 50), &cfg, &a, &[], &mut svc, &mut out);
    // Samples: 1 ms from the handshake (TSecr of the SYN-ACK), then 50 ms.
    let srtt = tcb.srtt().unwrap();
    assert!(srtt.millis() >= 6 && srtt.millis() <= 8, "{srtt:?}");
    assert!(tcb.rto(&cfg) >= cfg.rto_min);
}

// ------------------------------------------------------------------ zero window

#[test]
fn zero_window_persist_probe() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(0, 1 << 20);
    let (mut tcb, mut out, seq) = established(&cfg, TcpOptions::default(), &mut svc);
    // Peer closes its window.
    tcb.on_segment(t(5), &cfg, &hdr(F::ACK, seq, SISN + 1, 0), &[], &mut svc, &mut out);
    svc.gen_len = 5000;
    tcb.poll_send(t(6), &cfg, &mut svc, &mut out);
    assert!(out.segs.is_empty());
    let d = tcb.next_deadline().unwrap();
    assert_eq!(d, t(6) + cfg.rto_initial);
    tcb.on_timer(d, &cfg, &mut svc, &mut out);
    let p = out.take();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].0.seq, SISN, "probe with SND.UNA - 1");
    assert!(p[0].1.is_empty());
    assert_eq!(tcb.stats().persist_probes, 1);
    let d2 = tcb.next_deadline().unwrap();
    assert_eq!(d2 - d, cfg.rto_initial + cfg.rto_initial, "backed off");
    // Window opens: data flows, persist cancelled.
    tcb.on_segment(d2, &cfg, &hdr(F::ACK, seq, SISN + 1, 3000), &[], &mut svc, &mut out);
    let s = out.take();
    // Five full segments; the 320-byte tail waits (sender SWS avoidance, RFC 9293 §3.8.6.2.1).
    assert_eq!(s.iter().map(|x| x.1.len()).sum::<usize>(), 5 * 536);
    assert!(tcb.timers.persist.is_none());
}

#[test]
fn takeover_probe_is_answered_even_when_the_replica_is_current() {
    // The replica: the peer had acknowledged everything and closed its window. The peer's
    // window update went to the dead active. A plain ACK (SEQ=SND.UNA) would be acceptable
    // to the peer, so it would not answer, and the standby would wait for its persist
    // timer (1 s: no RTT estimate yet). This was seen in the demo.
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(0, 1 << 20);
    let (mut tcb, mut out, seq) = established(&cfg, TcpOptions::default(), &mut svc);
    tcb.on_segment(t(5), &cfg, &hdr(F::ACK, seq, SISN + 1, 0), &[], &mut svc, &mut out);
    let snap = tcb.snapshot();
    assert_eq!(snap.snd_wnd, 0);
    let mut sb = Tcb::restore(&cfg, &snap, t(10), None);
    let mut svc2 = TestSvc::open_generator(5000, 1 << 20);
    let mut o = RecSink::default();
    sb.send_probe(t(10), &svc2, &mut o);
    sb.poll_send(t(10), &cfg, &mut svc2, &mut o);
    let p = o.take();
    assert_eq!(p.len(), 1, "only the probe: the replicated window is zero");
    assert_eq!(p[0].0.seq, SISN, "SND.UNA - 1: outside the peer's window, so it must answer");
    assert_eq!(p[0].0.ack, seq);
    assert!(p[0].1.is_empty());
    // Its answer brings the open window: data flows at once.
    sb.on_segment(t(11), &cfg, &hdr(F::ACK, seq, SISN + 1, 3000), &[], &mut svc2, &mut o);
    assert!(o.take().iter().map(|x| x.1.len()).sum::<usize>() > 0);
}

#[test]
fn an_old_pure_ack_is_answered_a_current_one_is_not() {
    // The receiving side of that probe (RFC 9293 §3.10.7.4; Linux does the same).
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(0, 1 << 20);
    let (mut tcb, mut out, seq) = established(&cfg, TcpOptions::default(), &mut svc);
    out.take();
    tcb.on_segment(t(5), &cfg, &hdr(F::ACK, seq, SISN + 1, W), &[], &mut svc, &mut out);
    assert!(out.take().is_empty(), "an acceptable pure ACK gets no reply");
    tcb.on_segment(t(6), &cfg, &hdr(F::ACK, seq - 1, SISN + 1, W), &[], &mut svc, &mut out);
    let r = out.take();
    assert_eq!(r.len(), 1, "a pure ACK before RCV.NXT gets one");
    assert_eq!(r[0].0.ack, seq);
}

/// Once a data byte was acknowledged the probe carries one (zero) byte below SND.UNA:
/// Linux answers a zero-length out-of-window probe at most once per 500 ms per socket,
/// a duplicate data byte every time. The receiver drops the byte and answers at once.
#[test]
fn probe_carries_one_old_byte_once_data_was_acknowledged() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(3000, 1 << 20);
    let (mut tcb, mut out, seq) = established(&cfg, TcpOptions::default(), &mut svc);
    tcb.on_segment(t(2), &cfg, &hdr(F::ACK, seq, SISN + 1 + 3000, W), &[], &mut svc, &mut out);
    out.take();
    let mut o = RecSink::default();
    tcb.send_probe(t(3), &svc, &mut o);
    let p = o.take();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].0.seq, SISN + 3000, "SND.UNA - 1");
    assert_eq!(p[0].1, vec![0u8], "one byte, never delivered");
    // Our own receiver: the byte is a duplicate, not data; it is answered with RCV.NXT.
    let mut rx = TestSvc::open_generator(0, 1 << 20);
    let (mut peer, mut pout, pseq) = established(&cfg, TcpOptions::default(), &mut rx);
    let d: Vec<u8> = (0..10).collect();
    peer.on_segment(t(2), &cfg, &hdr(F::ACK, pseq, SISN + 1, W), &d, &mut rx, &mut pout);
    pout.take();
    peer.on_segment(t(3), &cfg, &hdr(F::ACK, pseq + 9, SISN + 1, W), &[0], &mut rx, &mut pout);
    let r = pout.take();
    assert_eq!(r.len(), 1, "answered at once");
    assert_eq!(r[0].0.ack, pseq + 10);
    assert_eq!(rx.rx, d, "the probe's byte was not delivered");
}

#[test]
fn receiver_zero_window_still_takes_acks() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(1000, 100);
    let (mut tcb, mut out, seq) = established(&cfg, TcpOptions::default(), &mut svc);
    out.take();
    let (h, p) = data_seg(seq, SISN + 1, 100);
    tcb.on_segment(t(5), &cfg, &h, &p, &mut svc, &mut out);
    out.take();
    // Fill the advertised window up to the edge; rx_space is 0 now.
    let a = hdr(F::ACK, seq + 100, SISN + 1, 0);
    tcb.on_segment(t(6), &cfg, &a, &[], &mut svc, &mut out);
    assert_eq!(svc.rx_space(), 0);
}

// ------------------------------------------------------------------ idle, dirty, snapshot

#[test]
fn idle_timeout_resets() {
    let cfg = TcpConfig { idle_timeout: Duration::from_secs(5), ..TcpConfig::default() };
    let mut svc = TestSvc::open_generator(0, 1 << 20);
    let (mut tcb, mut out, _) = established(&cfg, TcpOptions::default(), &mut svc);
    assert_eq!(tcb.next_deadline(), Some(t(1) + Duration::from_secs(5)));
    tcb.on_timer(t(5001), &cfg, &mut svc, &mut out);
    assert!(tcb.is_closed());
    assert_eq!(out.take()[0].0.flags, F::RST | F::ACK);
    assert_eq!(tcb.stats().idle_timeouts, 1);
}

#[test]
fn dirty_flags_track_replicated_changes() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(0, 1 << 20);
    let (mut tcb, mut out, seq) = established(&cfg, TcpOptions::default(), &mut svc);
    tcb.dirty.take();
    let (h, p) = data_seg(seq, SISN + 1, 10);
    tcb.on_segment(t(5), &cfg, &h, &p, &mut svc, &mut out);
    let d = tcb.dirty.take();
    assert!(d.contains(DirtyFlags::RCV_NXT));
    assert!(!d.contains(DirtyFlags::STATE));
    svc.gen_len = 10;
    tcb.poll_send(t(6), &cfg, &mut svc, &mut out);
    assert!(tcb.dirty.take().contains(DirtyFlags::SND_NXT));
    tcb.on_segment(t(7), &cfg, &hdr(F::ACK | F::FIN, seq + 10, SISN + 11, 1000), &[], &mut svc, &mut out);
    let d = tcb.dirty.take();
    assert!(d.contains(DirtyFlags::SND_UNA | DirtyFlags::STATE | DirtyFlags::RCV_NXT));
}

#[test]
fn snapshot_restore_continues_byte_stream() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(50_000, 1 << 20);
    let o = TcpOptions { mss: Some(1000), wscale: Some(2), timestamps: Some((10, 0)), sack_permitted: true, ..Default::default() };
    let (mut tcb, mut out, seq) = established(&cfg, o, &mut svc);
    let first = out.take();
    assert_eq!(first.len(), 10);
    let last_ts = first.last().unwrap().0.options.timestamps.unwrap().0;
    let mut a = hdr(F::ACK, seq, SISN + 1 + 4000, W);
    a.options.timestamps = Some((520, last_ts));
    tcb.on_segment(t(30), &cfg, &a, &[], &mut svc, &mut out);
    out.take();
    let snap = tcb.snapshot();
    assert_eq!(snap.tx_acked, 4000);
    assert!(snap.tx_sent > 4000);
    assert_eq!(snap.snd_una, SISN + 4001);
    // The standby restores on a different clock; the peer ACKs up to 6000.
    let later = Instant::from_millis(5);
    let mut sb = Tcb::restore(&cfg, &snap, later, None);
    assert_eq!(sb.snapshot().tx_sent, snap.tx_sent);
    assert_eq!(sb.state(), State::Established);
    let mut svc2 = TestSvc::open_generator(50_000, 1 << 20);
    svc2.acked = 4000;
    let mut out2 = RecSink::default();
    sb.send_ack(later, &svc2, &mut out2);
    let probe = out2.take()[0].0;
    assert_eq!(probe.ack, seq);
    assert!(probe.options.timestamps.unwrap().0.wrapping_sub(last_ts) as i32 > 0, "TSval monotonic");
    let mut a = hdr(F::ACK, seq, SISN + 1 + 6000, W);
    a.options.timestamps = Some((530, 0));
    sb.on_segment(later, &cfg, &a, &[], &mut svc2, &mut out2);
    let s = out2.take();
    assert!(!s.is_empty());
    assert_eq!(s[0].0.seq, SISN + 6001);
    for (h, p) in &s {
        let off = (h.seq - (SISN + 1)) as u64;
        assert!(p.iter().enumerate().all(|(j, &b)| b == TestSvc::gen_byte(off + j as u64)));
    }
    assert_eq!(svc2.acked, 6000);
}

#[test]
fn snapshot_restore_roundtrip_in_fin_states() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::generator(10, 1 << 20);
    let (tcb, _out, _) = established(&cfg, TcpOptions::default(), &mut svc);
    assert_eq!(tcb.state(), State::FinWait1);
    let snap = tcb.snapshot();
    let r = Tcb::restore(&cfg, &snap, t(0), Some(10));
    assert_eq!(r.snapshot(), TcbSnapshot { ts_offset: r.snapshot().ts_offset, ..snap });
    assert_eq!(r.fin_abs, Some(11));
}

/// Issue 12: a response that ends with our FIN, the FIN queued behind unsent data when the
/// active dies. The old restore put the FIN at the last replicated send position: the
/// client's next ACK then "acknowledged the FIN" (FIN-WAIT-2, silence) or the FIN left early.
#[test]
fn restore_keeps_a_fin_queued_behind_unsent_data() {
    let cfg = TcpConfig::default();
    let len = 100_000u64;
    let mut svc = TestSvc::generator(len, 1 << 20);
    let (tcb, mut out, seq) = established(&cfg, TcpOptions::default(), &mut svc);
    assert_eq!(tcb.state(), State::FinWait1, "the whole response and its FIN are queued");
    let sent = out.take();
    assert!(sent.iter().all(|(h, _)| !h.flags.fin()), "the FIN is behind {len} bytes");
    let snap = tcb.snapshot();
    assert!(snap.tx_sent < len, "only the first flight went out");

    let mut sb = Tcb::restore(&cfg, &snap, t(10), Some(len));
    assert_eq!(sb.state(), State::FinWait1);
    assert_eq!(sb.fin_abs, Some(len + 1), "the FIN goes after the last byte");
    let mut svc2 = TestSvc::generator(len, 1 << 20);
    let mut o = RecSink::default();
    // The client acknowledges everything the old active sent: not our FIN.
    let acked = snap.tx_sent;
    let a = hdr(F::ACK, seq, SISN + 1 + acked as u32, W);
    sb.on_segment(t(11), &cfg, &a, &[], &mut svc2, &mut o);
    assert_eq!(sb.state(), State::FinWait1, "an ACK of data is no ACK of the FIN");
    // Drive the rest of the transfer: every byte once, the FIN once, after the last byte.
    let mut fins = Vec::new();
    let mut now = 12;
    while sb.state() == State::FinWait1 {
        let segs = o.take();
        assert!(!segs.is_empty() || now < 10_000, "stalled in FIN-WAIT-1");
        let mut hi = SISN + 1;
        for (h, p) in &segs {
            let off = (h.seq - (SISN + 1)) as u64;
            assert!(p.iter().enumerate().all(|(j, &b)| b == TestSvc::gen_byte(off + j as u64)));
            if h.flags.fin() {
                fins.push(off + p.len() as u64);
            }
            let end = h.seq + (p.len() as u32 + h.flags.fin() as u32);
            if end.gt(hi) {
                hi = end;
            }
        }
        sb.on_segment(t(now), &cfg, &hdr(F::ACK, seq, hi, W), &[], &mut svc2, &mut o);
        now += 1;
        if segs.is_empty() {
            sb.on_timer(t(now + 2000), &cfg, &mut svc2, &mut o);
        }
    }
    assert_eq!(sb.state(), State::FinWait2);
    assert_eq!(fins, vec![len], "one FIN, right after the last byte");
}

/// The client's ACK of a FIN the old active sent after the last replicated progress proves
/// it was sent: catch up to it (and into FIN-WAIT-2), never beyond it.
#[test]
fn catch_up_covers_a_fin_the_old_active_sent() {
    let cfg = TcpConfig::default();
    // More than the first flight: the replica's progress stops short of the FIN.
    let len = 100_000u64;
    let mut svc = TestSvc::generator(len, 1 << 20);
    let (tcb, _out, seq) = established(&cfg, TcpOptions::default(), &mut svc);
    let snap = tcb.snapshot();
    let mut sb = Tcb::restore(&cfg, &snap, t(10), Some(len));
    // Beyond the FIN: nothing the old active can have sent.
    assert!(!sb.catch_up_sent(SISN + 1 + len as u32 + 2, len));
    assert!(sb.catch_up_sent(SISN + 1 + len as u32 + 1, len));
    let mut svc2 = TestSvc::generator(len, 1 << 20);
    let mut o = RecSink::default();
    sb.on_segment(t(11), &cfg, &hdr(F::ACK, seq, SISN + 1 + len as u32 + 1, W), &[], &mut svc2, &mut o);
    assert_eq!(sb.state(), State::FinWait2);
    assert!(o.take().iter().all(|(_, p)| p.is_empty()), "nothing to resend");
}

/// CLOSE-WAIT at a takeover: the client's FIN is in the replica, our service has not
/// closed. (Neither built-in service lingers there: both close in the call that delivers
/// the FIN, so the exhaustive simulation never finds a replica in CLOSE-WAIT; a proxy's
/// client side will.) The restored flow must neither deliver the FIN again nor send ours
/// before the service closes, and then send it once, after the last byte.
#[test]
fn restore_in_close_wait_waits_for_the_service_to_close() {
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::open_generator(2000, 1 << 20);
    let (mut tcb, mut out, seq) = established(&cfg, TcpOptions::default(), &mut svc);
    let a = hdr(F::ACK, seq, SISN + 1 + 2000, W);
    tcb.on_segment(t(2), &cfg, &a, &[], &mut svc, &mut out);
    tcb.on_segment(t(3), &cfg, &hdr(F::FIN | F::ACK, seq, SISN + 1 + 2000, W), &[], &mut svc, &mut out);
    assert_eq!(tcb.state(), State::CloseWait);
    out.take();
    let snap = tcb.snapshot();
    let mut sb = Tcb::restore(&cfg, &snap, t(10), None);
    assert_eq!(sb.state(), State::CloseWait);
    // The replayed service already has the FIN (ShadowFlow delivers it once).
    let mut svc2 = TestSvc { peer_fin: true, ..TestSvc::open_generator(5000, 1 << 20) };
    svc2.acked = 2000;
    let mut o = RecSink::default();
    sb.poll_send(t(10), &cfg, &mut svc2, &mut o);
    let segs = o.take();
    assert!(segs.iter().all(|(h, _)| !h.flags.fin()), "no FIN before the service closes");
    assert_eq!(segs.iter().map(|(_, p)| p.len()).sum::<usize>(), 3000, "the output produced since");
    svc2.close_after = true;
    sb.on_segment(t(11), &cfg, &hdr(F::ACK, seq + 1, SISN + 1 + 5000, W), &[], &mut svc2, &mut o);
    let segs = o.take();
    assert_eq!(sb.state(), State::LastAck);
    assert_eq!(segs.len(), 1);
    assert!(segs[0].0.flags.fin() && segs[0].0.seq == SISN + 1 + 5000, "one FIN, after byte 5000");
    sb.on_segment(t(12), &cfg, &hdr(F::ACK, seq + 1, SISN + 1 + 5001, W), &[], &mut svc2, &mut o);
    assert!(sb.is_closed());
}

// ------------------------------------------------------------------ never panic

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn arb_hdr() -> impl Strategy<Value = (TcpHeader, usize)> {
        (
            any::<u8>(),
            prop_oneof![any::<u32>(), (-3000i32..70_000i32).prop_map(|x| x as u32)],
            prop_oneof![any::<u32>(), (-3000i32..70_000i32).prop_map(|x| x as u32)],
            any::<u16>(),
            0usize..3000,
            proptest::option::of((any::<u32>(), any::<u32>())),
            proptest::collection::vec((any::<u32>(), any::<u32>()), 0..5),
        )
            .prop_map(|(flags, dseq, dack, window, len, ts, sacks)| {
                let mut o = TcpOptions { timestamps: ts, ..Default::default() };
                for (i, (l, r)) in sacks.iter().take(4).enumerate() {
                    o.sack_blocks[i] = SackBlock { left: SeqNum(l.wrapping_add(CISN.0)), right: SeqNum(r.wrapping_add(SISN.0)) };
                }
                o.sack_count = sacks.len() as u8; // may exceed 4: sacks() must cope
                let h = TcpHeader {
                    src_port: 5555,
                    dst_port: 80,
                    seq: CISN + dseq,
                    ack: SISN + dack,
                    flags: F(flags),
                    window,
                    options: o,
                };
                (h, len)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn arbitrary_segments_never_panic(
            segs in proptest::collection::vec(arb_hdr(), 1..60),
            opts in any::<u8>(),
            gen in 0u64..200_000,
            timer_steps in proptest::collection::vec(0u64..3000, 1..60),
        ) {
            let cfg = TcpConfig { max_ooo_bytes: 8192, ..TcpConfig::default() };
            let o = TcpOptions {
                mss: if opts & 1 != 0 { Some((opts as u16) * 7) } else { None },
                wscale: if opts & 2 != 0 { Some(opts >> 2) } else { None },
                sack_permitted: opts & 4 != 0,
                timestamps: if opts & 8 != 0 { Some((opts as u32, 0)) } else { None },
                ..Default::default()
            };
            let mut out = RecSink::default();
            let mut svc = TestSvc::open_generator(gen, 1 << 16);
            let mut tcb = if opts & 16 != 0 {
                Tcb::connect(t(0), &cfg, 40000, 80, SISN, &mut out)
            } else {
                Tcb::accept(t(0), &cfg, &syn(o), SISN, &mut out).unwrap()
            };
            let payload = vec![0xabu8; 3000];
            let mut now = t(0);
            for (i, (h, len)) in segs.iter().enumerate() {
                now = now + Duration::from_millis(timer_steps[i % timer_steps.len()]);
                let _ = tcb.on_segment(now, &cfg, h, &payload[..*len], &mut svc, &mut out);
                if let Some(d) = tcb.next_deadline() {
                    if d <= now { tcb.on_timer(now, &cfg, &mut svc, &mut out); }
                }
                if i % 7 == 0 { svc.drain_app(); tcb.poll_send(now, &cfg, &mut svc, &mut out); }
                let _ = tcb.snapshot();
                out.segs.clear();
            }
        }
    }
}

#[test]
fn scaled_window_reflects_service_space() {
    scaled_window_case(SeqNum(100));
    // A peer ISN in the upper half of sequence space: RCV.ADV must still be initialised.
    scaled_window_case(SeqNum(0x9000_0000));
}

fn scaled_window_case(client_isn: SeqNum) {
    // Linux-like options: the peer scales by 10, we by 7 (cfg default). With a 64 KiB echo
    // service the advertised window must be about 64 KiB, i.e. a field near 512, not 65535.
    let cfg = TcpConfig::default();
    let mut svc = TestSvc::echo(65536);
    let opts = TcpOptions { mss: Some(1460), wscale: Some(10), sack_permitted: true, timestamps: Some((1, 0)), ..Default::default() };
    let mut out = RecSink::default();
    let mut s = syn(opts);
    s.seq = client_isn;
    let mut tcb = Tcb::accept(t(0), &cfg, &s, SISN, &mut out).expect("accept");
    let mut ack = hdr(F::ACK, client_isn + 1, SISN + 1, W);
    ack.options.timestamps = Some((2, out.last().options.timestamps.map_or(0, |x| x.0)));
    assert_eq!(tcb.on_segment(t(1), &cfg, &ack, &[], &mut svc, &mut out), SegmentVerdict::Accepted);
    out.take();
    let seq = client_isn + 1;
    let (mut h, p) = data_seg(seq, SISN + 1, 1448);
    h.options.timestamps = Some((2, 0));
    tcb.on_segment(t(10), &cfg, &h, &p, &mut svc, &mut out);
    tcb.poll_send(t(10), &cfg, &mut svc, &mut out);
    for (hdr, _) in out.take() {
        let bytes = (hdr.window as u64) << 7;
        assert!(bytes <= 65536 + 128, "window field {} advertises {} bytes for a 64 KiB service", hdr.window, bytes);
    }
}
