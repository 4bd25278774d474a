//! The TCP path, counted (issue 16 item 1): the real `Stack` of one worker, driven by the
//! real `Iteration` exactly as the DPDK loop drives it, with sync off, async or strict (the
//! real `RingReplicator` and `OutputHold`; a sync core that drains the ring and a standby
//! that applies it with the real `Replicas::apply_batch`), against a client made of the
//! engine's own `Tcb`. Sans-IO: no DPDK, no socket, no thread, a simulated clock, so that
//! `valgrind --tool=callgrind --toggle-collect=...` counts one party's instructions alone:
//!
//! - `*worker_pass*`: the worker (the `Iteration`, and the release after the standby's
//!   acknowledgement); what `scripts/bench-tcp-path` divides by segments and connections;
//! - `*sync_pass*`: the active's sync core draining the worker's ring (not the socket);
//! - `*standby_pass*`: the standby applying the records.
//!
//! Frames come from a pool of reused buffers (as mbufs do), so no allocation of the harness
//! is counted in the worker. Scenarios (`--scenario`):
//!
//! - `download`: one connection, `GET /gen/N` (Connection: close), the engine sends N bytes;
//! - `echo`: one connection to the echo service, N bytes up, all of them echoed back;
//! - `short`: `--count` connections one after another, each `GET /gen/1024` with
//!   Connection: close (SYN, ACK, request, response, FIN both ways).
//!
//! `--idle N` first opens N connections from addresses of their own (10.x.y.z, each a SYN and
//! an ACK from a bare client: no TCB each) that stay idle, established and replicated,
//! through the same passes, uncounted: the scenario then runs next to N held flows (issue 16
//! item 6: the per-packet cost must stay flat as the table grows). The JSON line gives the
//! process's peak resident memory (run it without valgrind for that figure).
//!
//! Prints one JSON line: what was moved (connections, segments each way, data segments), so
//! that instructions can be divided by it. Exits non-zero if a transfer did not complete,
//! the client saw a reset, or the bytes differ from the engine's generator.

use std::net::Ipv4Addr;
use std::sync::Arc;

use flowtwin_engine::commit::{CommitTag, OutputHold, Watermarks};
use flowtwin_engine::iteration::{Acked, Iteration};
use flowtwin_engine::seq::SeqNum;
use flowtwin_engine::service::echo::EchoConfig;
use flowtwin_engine::service::object::gen_byte_range;
use flowtwin_engine::stack::{vrrp_mac, FrameSink, ServiceSpec, Stack, StackConfig};
use flowtwin_engine::tcp::{State, Tcb, TcpConfig};
use flowtwin_engine::time::Instant;
use flowtwin_engine::wire::tcp::{build_tcp_frame, FrameAddrs, TcpPacket};
use flowtwin_engine::wire::{TcpFlags, TcpHeader, TcpOptions};
use flowtwin_sync::delta;
use flowtwin_sync::ring::Record;
use flowtwin_sync::shadow::Replicas;
use flowtwin_sync::{worker_channel, SyncStatus, WorkerLink};

#[path = "../tests/common/mod.rs"]
mod common;
use common::{App, ClientOut, CLIENT_MAC, VIP};

/// The simulated time one step of the world takes (the wire's one-way latency is a step).
const STEP_US: u64 = 20;
const FRAME: usize = 2048;

#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum Sync {
    Off,
    Async,
    Strict,
}

#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum Scenario {
    Download,
    Echo,
    Short,
}

/// The worker's port: frames built into reused buffers, held for the standby when there is
/// one (`OutputHold`, as the dataplane's sink holds mbufs), then "sent" to the client.
struct Port {
    free: Vec<Vec<u8>>,
    hold: Option<OutputHold<Vec<u8>>>,
    sent: Vec<Vec<u8>>,
}

impl FrameSink for Port {
    fn emit(&mut self, build: &mut dyn FnMut(&mut [u8]) -> usize) -> bool {
        let mut buf = self.free.pop().unwrap_or_else(|| vec![0u8; FRAME]);
        let n = build(&mut buf);
        if n == 0 {
            self.free.push(buf);
            return true;
        }
        buf.truncate(n);
        match self.hold.as_mut() {
            Some(h) => h.push(buf),
            None => self.sent.push(buf),
        }
        true
    }

    fn seal(&mut self, tag: Option<CommitTag>, _now: Instant) {
        if let Some(h) = self.hold.as_mut() {
            h.commit(tag, 0);
        }
    }
}

impl flowtwin_engine::iteration::CommitSink for Port {
    fn release(&mut self, wm: Watermarks, _now: Instant) {
        let sent = &mut self.sent;
        if let Some(h) = self.hold.as_mut() {
            h.release(wm, 0, |f, _| sent.push(f));
        }
    }

    fn waiting(&self) -> bool {
        self.hold.as_ref().is_some_and(|h| !h.is_empty())
    }
}

struct Client {
    tcb: Tcb,
    app: App,
    out: ClientOut,
}

/// What one run moved.
#[derive(Default)]
struct Moved {
    connections: u64,
    to_engine: u64,
    from_engine: u64,
    data_to_engine: u64,
    data_from_engine: u64,
    bytes_to_engine: u64,
    bytes_from_engine: u64,
    steps: u64,
    deltas: u64,
}

struct World {
    cfg: Arc<StackConfig>,
    ccfg: TcpConfig,
    sync: Sync,
    now: u64,
    stack: Stack,
    port: Port,
    link: Option<WorkerLink>,
    standby: Replicas,
    status: SyncStatus,
    /// The standby's acknowledgement: the highest delta it applied.
    wm: u64,
    peek: Vec<Record>,
    to_engine: Vec<Vec<u8>>,
    moved: Moved,
}

/// The tests' engine (`common::engine_cfg`) as the dataplane runs it: default TCP (delayed
/// ACKs on), a 256 KiB echo, room for `idle` flows more.
fn engine_cfg(idle: usize) -> Arc<StackConfig> {
    let mut c = (*common::engine_cfg()).clone();
    c.tcp = TcpConfig::default();
    c.flow_capacity = idle + (1 << 16);
    c.listeners[1].spec = ServiceSpec::Echo(EchoConfig { buf_size: 256 * 1024 });
    Arc::new(c)
}

impl World {
    fn new(sync: Sync, idle: usize) -> World {
        let cfg = engine_cfg(idle);
        let now = 1_000_000;
        let mut stack = Stack::new(cfg.clone(), Instant(now));
        let link = if sync == Sync::Off {
            None
        } else {
            let (repl, link) = worker_channel(0, 1 << 16);
            stack.set_replicator(Box::new(repl));
            Some(link)
        };
        let hold = (sync != Sync::Off).then(OutputHold::default);
        World {
            cfg,
            ccfg: TcpConfig::default(),
            sync,
            now,
            stack,
            port: Port { free: (0..4096).map(|_| vec![0u8; FRAME]).collect(), hold, sent: Vec::new() },
            link,
            standby: Replicas::new(1),
            status: SyncStatus::new(),
            wm: 0,
            peek: vec![[0u64; 8]; 1 << 16],
            to_engine: Vec::new(),
            moved: Moved::default(),
        }
    }

    /// What the worker's iteration reads from the sync core: nothing without a standby; async
    /// waits for nothing; strict for the standby's last acknowledgement.
    fn control(&self) -> Option<Acked> {
        match self.sync {
            Sync::Off => None,
            Sync::Async => Some(Acked(u64::MAX)),
            Sync::Strict => Some(Acked(self.wm)),
        }
    }

    /// One step: the worker's pass over what reached it, the sync core and the standby, the
    /// release, then the client's turn with what the engine sent.
    fn step(&mut self, client: &mut Client) -> Result<(), String> {
        self.now += STEP_US;
        self.moved.steps += 1;
        let now = Instant(self.now);
        let frames = std::mem::take(&mut self.to_engine);
        for f in &frames {
            self.moved.to_engine += 1;
            let n = payload_len(f);
            self.moved.data_to_engine += (n > 0) as u64;
            self.moved.bytes_to_engine += n as u64;
        }
        let control = self.control();
        worker_pass(&mut self.stack, &mut self.port, control, now, &frames);
        if let Some(link) = self.link.as_mut() {
            if let Some((first, last, used)) = sync_pass(link, &mut self.peek)? {
                standby_pass(&mut self.standby, &self.cfg, &self.status, (first, last), &self.peek[..used]);
                self.moved.deltas += last + 1 - first;
                self.wm = last;
            }
            if self.sync == Sync::Strict {
                worker_pass_release(&mut self.port, self.wm, now);
            }
        }
        // The client: what the engine sent (its buffers back to the pool), then its timers
        // and output.
        for mut f in std::mem::take(&mut self.port.sent) {
            self.moved.from_engine += 1;
            let p = TcpPacket::new_checked(&f[34..]).map_err(|e| format!("engine sent a frame the client cannot parse: {e:?}"))?;
            let (h, payload) = (p.header(), p.payload());
            if h.flags.rst() {
                return Err(format!("the engine reset the client (state {:?})", client.tcb.state()));
            }
            self.moved.data_from_engine += (!payload.is_empty()) as u64;
            self.moved.bytes_from_engine += payload.len() as u64;
            client.tcb.on_segment(now, &self.ccfg, &h, payload, &mut client.app, &mut client.out);
            f.resize(FRAME, 0);
            self.port.free.push(f);
        }
        client.tcb.on_timer(now, &self.ccfg, &mut client.app, &mut client.out);
        client.tcb.poll_send(now, &self.ccfg, &mut client.app, &mut client.out);
        self.to_engine.append(&mut client.out.frames);
        Ok(())
    }

    /// One connection from `port` to the engine's `dst`, run until the client is closed (or
    /// in TIME-WAIT) and the engine has nothing left to say; returns what the client got.
    fn connection(&mut self, port: u16, dst: u16, upload: Vec<u8>, close_at: Option<usize>) -> Result<Vec<u8>, String> {
        let mut out = ClientOut { frames: Vec::new(), src_port: port, dst_port: dst };
        let tcb = Tcb::connect(Instant(self.now), &self.ccfg, port, dst, SeqNum(0x8000_0000 ^ u32::from(port) << 8), &mut out);
        self.to_engine.append(&mut out.frames);
        let mut app = App::new(upload);
        app.close_after = close_at;
        app.window = 4 << 20;
        let mut c = Client { tcb, app, out };
        self.moved.connections += 1;
        for _ in 0..5_000_000u32 {
            self.step(&mut c)?;
            // The client closes once the engine did (a response with Connection: close).
            c.app.close |= c.app.fin;
            let done = matches!(c.tcb.state(), State::TimeWait | State::Closed) || c.tcb.is_closed();
            if done && self.to_engine.is_empty() && self.port.sent.is_empty() && !self.port.waiting() {
                // The engine's last ACK (its LAST-ACK ended, or its TIME-WAIT began).
                for _ in 0..4 {
                    self.step(&mut c)?;
                }
                return Ok(c.app.received);
            }
        }
        Err(format!("connection :{port} -> :{dst} did not end (client {:?}, got {} bytes)", c.tcb.state(), c.app.received.len()))
    }
}

impl World {
    /// `n` idle established connections from bare clients (see the module documentation):
    /// SYNs in batches, their SYN-ACKs answered with an ACK, through uncounted passes.
    fn open_idle(&mut self, n: usize) -> Result<(), String> {
        const BATCH: usize = 2048;
        let addr = |i: usize| (Ipv4Addr::new(10, 1 + (i / 50_000) as u8, 0, 1), 10_000 + (i % 50_000) as u16);
        let mut opened = 0usize;
        let mut next = 0usize;
        let mut pending: Vec<Vec<u8>> = Vec::new();
        while opened < n {
            while next < n && pending.len() < BATCH {
                let (ip, port) = addr(next);
                let mut h = TcpHeader { src_port: port, dst_port: 80, seq: SeqNum(0x1000), ack: SeqNum(0), flags: TcpFlags::SYN, window: 65535, options: TcpOptions::default() };
                h.options.mss = Some(1460);
                pending.push(bare_frame(ip, &h));
                next += 1;
            }
            self.now += STEP_US;
            let now = Instant(self.now);
            let frames = std::mem::take(&mut pending);
            let control = self.control();
            idle_setup(&mut self.stack, &mut self.port, control, now, &frames);
            self.idle_sync(now)?;
            for mut f in std::mem::take(&mut self.port.sent) {
                let p = TcpPacket::new_checked(&f[34..]).map_err(|e| format!("idle setup: {e:?}"))?;
                let h = p.header();
                if h.flags.syn() && h.flags.ack() {
                    let ip = Ipv4Addr::new(f[30], f[31], f[32], f[33]);
                    let a = TcpHeader { src_port: h.dst_port, dst_port: 80, seq: h.ack, ack: h.seq + 1, flags: TcpFlags::ACK, window: 65535, options: TcpOptions::default() };
                    pending.push(bare_frame(ip, &a));
                    opened += 1;
                } else if h.flags.rst() {
                    return Err(format!("idle setup: the engine reset {}:{}", Ipv4Addr::new(f[30], f[31], f[32], f[33]), h.dst_port));
                }
                f.resize(FRAME, 0);
                self.port.free.push(f);
            }
            if next >= n && pending.is_empty() && opened < n && self.port.hold.as_ref().is_none_or(|h| h.is_empty()) {
                return Err(format!("idle setup: {opened} of {n} SYNs answered"));
            }
        }
        // The last ACKs.
        self.now += STEP_US;
        let control = self.control();
        idle_setup(&mut self.stack, &mut self.port, control, Instant(self.now), &pending);
        self.idle_sync(Instant(self.now))?;
        if self.link.is_some() && self.standby.flows() < n {
            return Err(format!("idle setup: the standby holds {} of the {n} idle flows", self.standby.flows()));
        }
        let established = self.stack.flows().iter().filter(|(_, _, f)| f.tcb.state() == State::Established).count();
        if established < n {
            return Err(format!("idle setup: {established} of {n} flows established"));
        }
        self.port.sent.clear();
        Ok(())
    }
}

impl World {
    /// The idle setup's sync core and standby (uncounted): drain, apply, release.
    fn idle_sync(&mut self, now: Instant) -> Result<(), String> {
        let Some(link) = self.link.as_mut() else { return Ok(()) };
        while let Some((first, last, used)) = drain_ring(link, &mut self.peek)? {
            self.standby.apply_batch(&self.cfg, &self.status, 0, (first, last), &self.peek[..used], &|m| eprintln!("tcp_path: standby: {m}"));
            self.wm = last;
        }
        flowtwin_engine::iteration::CommitSink::release(&mut self.port, self.wm.into(), now);
        Ok(())
    }
}

/// A bare client's frame from `ip` (no TCB: the idle connections).
fn bare_frame(ip: Ipv4Addr, h: &TcpHeader) -> Vec<u8> {
    let mut buf = vec![0u8; 128];
    let a = FrameAddrs { src_mac: CLIENT_MAC, dst_mac: vrrp_mac(1), src_ip: ip, dst_ip: VIP, ttl: 64, ip_id: 1 };
    let n = build_tcp_frame(&mut buf, &a, h, 0).expect("a bare frame fits");
    buf.truncate(n);
    buf
}

/// The idle connections' passes (not counted: no toggle matches it). Not the same code as
/// [`worker_pass`] (the `black_box`): the compiler would merge two identical functions into
/// one symbol, and callgrind's toggle would then follow whichever name it kept.
#[inline(never)]
fn idle_setup(stack: &mut Stack, port: &mut Port, control: Option<Acked>, now: Instant, frames: &[Vec<u8>]) {
    let mut rx = frames.iter().map(Vec::as_slice);
    Iteration::new(control.as_ref()).run(stack, now, &mut rx, port);
    std::hint::black_box(frames.len());
}

/// Peak resident memory of this process (kB), from /proc/self/status.
fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

impl Port {
    fn waiting(&self) -> bool {
        flowtwin_engine::iteration::CommitSink::waiting(self)
    }
}

fn payload_len(f: &[u8]) -> usize {
    TcpPacket::new_checked(&f[34..]).map_or(0, |p| p.payload().len())
}

/// The worker's pass (counted: `--toggle-collect=*worker_pass*`).
#[inline(never)]
fn worker_pass(stack: &mut Stack, port: &mut Port, control: Option<Acked>, now: Instant, frames: &[Vec<u8>]) {
    let mut rx = frames.iter().map(Vec::as_slice);
    Iteration::new(control.as_ref()).run(stack, now, &mut rx, port);
}

/// Strict: the output the standby's acknowledgement releases (counted with the worker: the
/// dataplane's next pass does this).
#[inline(never)]
fn worker_pass_release(port: &mut Port, wm: u64, now: Instant) {
    flowtwin_engine::iteration::CommitSink::release(port, wm.into(), now);
}

/// The active's sync core: what the worker's ring holds (`*sync_pass*`).
#[inline(never)]
fn sync_pass(link: &mut WorkerLink, peek: &mut [Record]) -> Result<Option<(u64, u64, usize)>, String> {
    drain_ring(link, peek)
}

/// Take what the worker's ring holds into `peek`: the batch's first and last delta sequence
/// and its records (None: the ring is empty).
fn drain_ring(link: &mut WorkerLink, peek: &mut [Record]) -> Result<Option<(u64, u64, usize)>, String> {
    let got = link.consumer.peek_burst(peek);
    let (mut used, mut first, mut last) = (0, 0, 0);
    while used < got {
        let p = delta::peek_header(&peek[used..got]).map_err(|e| format!("the worker's ring: {e:?}"))?;
        first = if first == 0 { p.header.seq } else { first };
        last = p.header.seq;
        used += p.records;
    }
    link.consumer.advance(used);
    Ok((used > 0).then_some((first, last, used)))
}

/// The standby applying a batch (`*standby_pass*`).
#[inline(never)]
fn standby_pass(r: &mut Replicas, cfg: &StackConfig, st: &SyncStatus, seqs: (u64, u64), recs: &[Record]) {
    r.apply_batch(cfg, st, 0, seqs, recs, &|m| eprintln!("tcp_path: standby: {m}"));
}

fn request(n: usize) -> Vec<u8> {
    format!("GET /gen/{n} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").into_bytes()
}

/// The body of a response (after its head), checked against the engine's generator.
fn check_body(got: &[u8], n: usize) -> Result<(), String> {
    let at = got.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no response head")? + 4;
    if !got.starts_with(b"HTTP/1.1 200") {
        return Err(format!("response {:?}", String::from_utf8_lossy(&got[..at.min(40)])));
    }
    let mut want = vec![0u8; n];
    gen_byte_range(0, &mut want);
    if got[at..] != want[..] {
        return Err(format!("body of {} bytes differs from /gen/{n} ({} bytes)", got.len() - at, n));
    }
    Ok(())
}

fn run(scenario: Scenario, sync: Sync, bytes: usize, count: u64, idle: usize) -> Result<Moved, String> {
    let mut w = World::new(sync, idle);
    if idle > 0 {
        w.open_idle(idle)?;
        w.moved = Moved::default();
    }
    match scenario {
        Scenario::Download => {
            let got = w.connection(40000, 80, request(bytes), None)?;
            check_body(&got, bytes)?;
        }
        Scenario::Echo => {
            let mut up = vec![0u8; bytes];
            gen_byte_range(12345, &mut up);
            let got = w.connection(40000, 7, up.clone(), Some(bytes))?;
            if got != up {
                return Err(format!("echoed {} bytes, not the {} sent", got.len(), bytes));
            }
        }
        Scenario::Short => {
            for i in 0..count {
                let got = w.connection(20000 + (i % 40000) as u16, 80, request(1024), None)?;
                check_body(&got, 1024)?;
            }
        }
    }
    Ok(w.moved)
}

fn main() {
    let mut scenario = Scenario::Download;
    let mut sync = Sync::Off;
    let mut bytes = 32usize << 20;
    let mut count = 1000u64;
    let mut idle = 0usize;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: tcp_path [--scenario download|echo|short] [--sync off|async|strict] [--bytes N] [--count N] [--idle N]";
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().unwrap_or_else(|| fail(&format!("{a} needs a value; {usage}")));
        match a.as_str() {
            "--scenario" => scenario = choice("scenario", &val(), &[("download", Scenario::Download), ("echo", Scenario::Echo), ("short", Scenario::Short)], usage),
            "--sync" => sync = choice("sync mode", &val(), &[("off", Sync::Off), ("async", Sync::Async), ("strict", Sync::Strict)], usage),
            "--bytes" => bytes = val().parse().unwrap_or_else(|e| fail(&format!("--bytes: {e}"))),
            "--count" => count = val().parse().unwrap_or_else(|e| fail(&format!("--count: {e}"))),
            "--idle" => idle = val().parse().unwrap_or_else(|e| fail(&format!("--idle: {e}"))),
            "-h" | "--help" => {
                println!("{usage}");
                return;
            }
            s => fail(&format!("unknown argument {s:?}; {usage}")),
        }
    }
    match run(scenario, sync, bytes, count, idle) {
        Ok(m) => println!(
            "{{\"scenario\":\"{}\",\"sync\":\"{}\",\"connections\":{},\"segments_to_engine\":{},\"segments_from_engine\":{},\"data_segments_to_engine\":{},\"data_segments_from_engine\":{},\"bytes_to_engine\":{},\"bytes_from_engine\":{},\"steps\":{},\"deltas\":{},\"idle\":{},\"peak_rss_kb\":{}}}",
            format!("{scenario:?}").to_lowercase(),
            format!("{sync:?}").to_lowercase(),
            m.connections,
            m.to_engine,
            m.from_engine,
            m.data_to_engine,
            m.data_from_engine,
            m.bytes_to_engine,
            m.bytes_from_engine,
            m.steps,
            m.deltas,
            idle,
            peak_rss_kb()
        ),
        Err(e) => fail(&format!("{scenario:?} with sync {sync:?}: {e}")),
    }
}

/// The option of `options` named `v`, or exit naming `what`.
fn choice<T: Copy>(what: &str, v: &str, options: &[(&str, T)], usage: &str) -> T {
    options.iter().find(|(n, _)| *n == v).map(|(_, t)| *t).unwrap_or_else(|| fail(&format!("unknown {what} {v:?}; {usage}")))
}

fn fail(msg: &str) -> ! {
    eprintln!("tcp_path: {msg}");
    std::process::exit(1)
}
