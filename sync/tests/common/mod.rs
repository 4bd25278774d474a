//! Shared by the tests that drive a real `Stack` against a client made of the engine's own
//! `Tcb` (`engine_failover.rs`, `takeover_space.rs`): the addresses, the client's frame
//! builder, and the engine's output held for output commit exactly as the dataplane holds it
//! (the engine's `iteration` seals and releases it, as it does the dataplane's mbufs).
#![allow(dead_code)]

use std::net::Ipv4Addr;

use flowtwin_engine::commit::{CommitTag, OutputHold};
use flowtwin_engine::iteration::CommitSink;
use flowtwin_engine::service::ByteStream;
use std::sync::Arc;

use flowtwin_engine::service::echo::EchoConfig;
use flowtwin_engine::service::object::{ObjectStore, StoreConfig};
use flowtwin_engine::stack::{vrrp_mac, FrameSink, GroupId, Listener, ServiceSpec, StackConfig, Vip};
use flowtwin_engine::tcp::TcpConfig;
use flowtwin_engine::time::Duration;
use flowtwin_engine::tcp::SegmentSink;
use flowtwin_engine::time::Instant;
use flowtwin_engine::wire::tcp::{build_tcp_frame, tcp_payload_offset, FrameAddrs};
use flowtwin_engine::wire::{MacAddr, TcpHeader};

pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const CLIENT_MAC: MacAddr = MacAddr([2, 0x66, 0x74, 0, 0, 2]);

/// Frames from the client toward the engine, built with the wire layer's own emitter.
#[derive(Default)]
pub struct ClientOut {
    pub frames: Vec<Vec<u8>>,
    pub src_port: u16,
    pub dst_port: u16,
}

impl SegmentSink for ClientOut {
    fn emit(&mut self, hdr: &TcpHeader, payload_len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        let mut buf = vec![0u8; 2048];
        let off = tcp_payload_offset(&hdr.options);
        fill(&mut buf[off..off + payload_len]);
        let mut h = *hdr;
        h.src_port = self.src_port;
        h.dst_port = self.dst_port;
        let a = FrameAddrs { src_mac: CLIENT_MAC, dst_mac: vrrp_mac(1), src_ip: CLIENT, dst_ip: VIP, ttl: 64, ip_id: 1 };
        let n = build_tcp_frame(&mut buf, &a, &h, payload_len).expect("client frame fits");
        buf.truncate(n);
        self.frames.push(buf);
        true
    }
}

/// The engine's output, held for output commit by the dataplane's own [`OutputHold`]; what
/// a release lets out waits in `sent` for the network.
#[derive(Default)]
pub struct Held {
    pub held: OutputHold<Vec<u8>>,
    pub sent: Vec<Vec<u8>>,
}

impl FrameSink for Held {
    fn emit(&mut self, build: &mut dyn FnMut(&mut [u8]) -> usize) -> bool {
        let mut buf = vec![0u8; 2048];
        let n = build(&mut buf);
        if n > 0 {
            buf.truncate(n);
            self.held.push(buf);
        }
        true
    }

    fn seal(&mut self, tag: Option<CommitTag>, _now: Instant) {
        self.held.commit(tag, 0);
    }
}

impl CommitSink for Held {
    /// The held frames the standby's acknowledgement `wm` releases go to `sent`, in order.
    fn release(&mut self, wm: flowtwin_engine::commit::Watermarks, _now: Instant) {
        let sent = &mut self.sent;
        self.held.release(wm, 0, |f, _| sent.push(f));
    }

    fn waiting(&self) -> bool {
        !self.held.is_empty()
    }
}

impl Held {
    /// The frames released since the last call, in order.
    pub fn take_sent(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.sent)
    }
}

/// A client's application over the engine's own `Tcb`: sends `upload` (an HTTP request, echo
/// data), records everything it receives, its peer's FIN and how much of its upload was
/// acknowledged.
pub struct App {
    pub upload: Vec<u8>,
    pub acked: u64,
    pub received: Vec<u8>,
    pub fin: bool,
    /// Close (FIN) after the upload.
    pub close: bool,
    /// Close (FIN) after the upload once this many bytes arrived.
    pub close_after: Option<usize>,
    /// The receive window it offers (a slow reader's is small).
    pub window: usize,
}

impl App {
    pub fn new(upload: Vec<u8>) -> App {
        App { upload, acked: 0, received: Vec::new(), fin: false, close: false, close_after: None, window: 1 << 20 }
    }
}

impl ByteStream for App {
    fn on_recv(&mut self, data: &[u8]) -> usize {
        self.received.extend_from_slice(data);
        data.len()
    }
    fn on_peer_fin(&mut self) {
        self.fin = true;
    }
    fn tx_end(&self) -> u64 {
        self.upload.len() as u64
    }
    fn tx_closed(&self) -> bool {
        self.close || self.close_after.is_some_and(|n| self.received.len() >= n)
    }
    fn read_at(&self, off: u64, buf: &mut [u8]) -> usize {
        let s = &self.upload[(off as usize).min(self.upload.len())..];
        let n = s.len().min(buf.len());
        buf[..n].copy_from_slice(&s[..n]);
        n
    }
    fn on_acked(&mut self, off: u64) {
        self.acked = off;
    }
    fn rx_space(&self) -> usize {
        self.window
    }
}

/// The engine of these tests: `VIP` with an empty object store on :80 and a 16 KiB echo on :7
/// (listeners 0 and 1), no delayed ACKs, 64 flows.
pub fn engine_cfg() -> Arc<StackConfig> {
    Arc::new(StackConfig {
        vips: vec![Vip { addr: VIP, mac: vrrp_mac(1), group: GroupId::DEFAULT }],
        groups: Vec::new(),
        listeners: vec![
            Listener { vip: VIP, port: 80, spec: ServiceSpec::Object(Arc::new(ObjectStore::empty(StoreConfig::default()))) },
            Listener { vip: VIP, port: 7, spec: ServiceSpec::Echo(EchoConfig { buf_size: 16 * 1024 }) },
        ],
        routes: flowtwin_engine::route::RouteTable::all_on_link(),
        tcp: TcpConfig { delayed_ack: Duration::ZERO, ..TcpConfig::default() },
        flow_capacity: 64,
        isn_key: [7; 16],
        open_secrets: Default::default(),
        timer_tick: Duration::from_micros(100),
        retired: Vec::new(),
    })
}
