//! `flowtwin ctl capture`: packets of a running engine into a pcapng file that tcpdump and
//! Wireshark read, filtered by a tcpdump expression.
//!
//! ```text
//! flowtwin ctl capture start FILE [--filter EXPR...] [--count N] [--seconds S] [--snaplen N]
//! flowtwin ctl capture stop
//! flowtwin ctl capture            (what runs, or ran last)
//! ```
//!
//! The workers copy matching frames into a bounded channel (`engine::capture`); a writer
//! thread drains it into FILE and ends at `--count` frames, after `--seconds`, or at `stop`.
//! Each frame is an Enhanced Packet Block with its direction (`epb_flags`: inbound, what the
//! port received; outbound, what the engine sent, after output commit) and a µs timestamp.
//! One capture at a time. Defaults: every frame, 10 000 frames or 60 s, snap length 262 144
//! (whole frames).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowtwin_engine::capture::{BpfFilter, CaptureTap, Captured, TapSession};
use serde_json::json;
use tracing::{info, warn};

/// Frames the channel holds before the workers drop (counted).
const QUEUE: usize = 8192;
const DEFAULT_COUNT: u64 = 10_000;
const DEFAULT_SECONDS: f64 = 60.0;
const DEFAULT_SNAPLEN: usize = 262_144;

/// Writes the pcapng blocks.
pub struct PcapngWriter<W: Write> {
    out: W,
}

fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

/// One option: code, length, value padded to 4 bytes.
fn option(buf: &mut Vec<u8>, code: u16, value: &[u8]) {
    buf.extend_from_slice(&code.to_le_bytes());
    buf.extend_from_slice(&(value.len() as u16).to_le_bytes());
    buf.extend_from_slice(value);
    buf.resize(buf.len() + pad4(value.len()) - value.len(), 0);
}

impl<W: Write> PcapngWriter<W> {
    /// A section header and one Ethernet interface with µs timestamps.
    pub fn new(mut out: W, snaplen: u32, comment: &str) -> std::io::Result<Self> {
        let mut shb = Vec::new();
        shb.extend_from_slice(&0x1A2B_3C4Du32.to_le_bytes());
        shb.extend_from_slice(&1u16.to_le_bytes());
        shb.extend_from_slice(&0u16.to_le_bytes());
        shb.extend_from_slice(&(-1i64).to_le_bytes());
        option(&mut shb, 4, format!("flowtwin {}", env!("CARGO_PKG_VERSION")).as_bytes()); // shb_userappl
        option(&mut shb, 0, &[]);
        Self::block(&mut out, 0x0A0D_0D0A, &shb)?;
        let mut idb = Vec::new();
        idb.extend_from_slice(&1u16.to_le_bytes()); // LINKTYPE_ETHERNET
        idb.extend_from_slice(&0u16.to_le_bytes());
        idb.extend_from_slice(&snaplen.to_le_bytes());
        option(&mut idb, 2, b"flowtwin"); // if_name
        option(&mut idb, 3, comment.as_bytes()); // if_description
        option(&mut idb, 9, &[6]); // if_tsresol: µs
        option(&mut idb, 0, &[]);
        Self::block(&mut out, 1, &idb)?;
        Ok(PcapngWriter { out })
    }

    fn block(out: &mut W, kind: u32, body: &[u8]) -> std::io::Result<()> {
        let len = (12 + body.len()) as u32;
        out.write_all(&kind.to_le_bytes())?;
        out.write_all(&len.to_le_bytes())?;
        out.write_all(body)?;
        out.write_all(&len.to_le_bytes())
    }

    /// One frame as an Enhanced Packet Block.
    pub fn packet(&mut self, c: &Captured) -> std::io::Result<()> {
        let mut epb = Vec::with_capacity(32 + pad4(c.data.len()));
        epb.extend_from_slice(&0u32.to_le_bytes()); // interface 0
        epb.extend_from_slice(&((c.ts_us >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(c.ts_us as u32).to_le_bytes());
        epb.extend_from_slice(&(c.data.len() as u32).to_le_bytes());
        epb.extend_from_slice(&c.orig_len.to_le_bytes());
        epb.extend_from_slice(&c.data);
        epb.resize(epb.len() + pad4(c.data.len()) - c.data.len(), 0);
        let flags: u32 = if c.outbound { 2 } else { 1 }; // epb_flags: direction
        option(&mut epb, 2, &flags.to_le_bytes());
        option(&mut epb, 0, &[]);
        Self::block(&mut self.out, 6, &epb)
    }

    pub fn finish(mut self) -> std::io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// What `capture start` asked for.
#[derive(Debug, PartialEq)]
pub struct Request {
    pub file: PathBuf,
    pub filter: String,
    pub count: u64,
    pub seconds: f64,
    pub snaplen: usize,
}

/// `start FILE [--filter EXPR...] [--count N] [--seconds S] [--snaplen N]` (the words after
/// `capture start`).
pub fn parse_start(words: &[&str]) -> Result<Request, String> {
    let mut it = words.iter().peekable();
    let file = it.next().filter(|f| !f.starts_with("--")).ok_or("capture start: name the pcapng FILE to write")?;
    let mut r = Request { file: PathBuf::from(file), filter: String::new(), count: DEFAULT_COUNT, seconds: DEFAULT_SECONDS, snaplen: DEFAULT_SNAPLEN };
    while let Some(w) = it.next() {
        let mut value = |what: &str| it.next().map(|v| v.to_string()).ok_or(format!("capture start: {w} needs {what}"));
        match *w {
            "--filter" => {
                let mut e = Vec::new();
                while let Some(x) = it.peek().filter(|x| !x.starts_with("--")) {
                    e.push(x.to_string());
                    it.next();
                }
                r.filter = e.join(" ");
            }
            "--count" => r.count = value("a number of frames")?.parse().ok().filter(|n| *n > 0).ok_or("capture start: --count must be a positive number of frames")?,
            "--seconds" => {
                r.seconds = value("a duration")?.parse().ok().filter(|s: &f64| s.is_finite() && *s > 0.0).ok_or("capture start: --seconds must be a positive number")?
            }
            "--snaplen" => {
                r.snaplen = value("a length")?.parse().ok().filter(|n| (64..=262_144).contains(n)).ok_or("capture start: --snaplen must be 64..=262144 bytes")?
            }
            other => return Err(format!("capture start: unknown option {other:?} (--filter, --count, --seconds, --snaplen)")),
        }
    }
    Ok(r)
}

/// The outcome of a capture, as `ctl capture` reports it.
#[derive(Debug, Default)]
struct Progress {
    written: AtomicU64,
    bytes: AtomicU64,
    done: AtomicBool,
    error: Mutex<Option<String>>,
}

struct Running {
    request: Request,
    started: Instant,
    stop: Arc<AtomicBool>,
    progress: Arc<Progress>,
    /// The tap's counters when it started (they count over the engine's life).
    base: (u64, u64),
}

/// The engine's capture control: one capture at a time.
pub struct Capturer {
    tap: Arc<CaptureTap>,
    current: Mutex<Option<Running>>,
}

impl Capturer {
    pub fn new(tap: Arc<CaptureTap>) -> Capturer {
        Capturer { tap, current: Mutex::new(None) }
    }

    /// `ctl capture ...` (the words after `capture`): a JSON reply.
    pub fn command(&self, words: &[&str]) -> String {
        let r = match words.first().copied() {
            None => Ok(self.status()),
            Some("start") => self.start(&words[1..]),
            Some("stop") => self.stop(),
            Some(other) => Err(format!("capture: unknown subcommand {other:?} (start, stop, or none for the status)")),
        };
        r.unwrap_or_else(|e| json!({ "error": e })).to_string()
    }

    fn start(&self, words: &[&str]) -> Result<serde_json::Value, String> {
        let req = parse_start(words)?;
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if cur.as_ref().is_some_and(|r| !r.progress.done.load(Relaxed)) {
            return Err("capture: one is running (capture stop first)".into());
        }
        let filter = if req.filter.is_empty() { None } else { Some(Arc::new(BpfFilter::compile(&req.filter).map_err(|e| format!("capture: {e}"))?)) };
        let file = File::create(&req.file).map_err(|e| format!("capture: {}: {e}", req.file.display()))?;
        let comment = if req.filter.is_empty() { "every frame".to_string() } else { format!("filter: {}", req.filter) };
        let writer = PcapngWriter::new(BufWriter::new(file), req.snaplen as u32, &comment).map_err(|e| format!("capture: {}: {e}", req.file.display()))?;
        let (tx, rx) = sync_channel(QUEUE);
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(Progress::default());
        let base = (self.tap.captured.load(Relaxed), self.tap.dropped.load(Relaxed));
        let (p, s, tap, count, limit) = (progress.clone(), stop.clone(), self.tap.clone(), req.count, Duration::from_secs_f64(req.seconds));
        std::thread::Builder::new()
            .name("ft-capture".into())
            .spawn(move || write_loop(writer, rx, tap, count, limit, &s, &p))
            .map_err(|e| format!("capture: cannot start its thread: {e}"))?;
        self.tap.start(TapSession { tx, filter, snaplen: req.snaplen });
        let path = std::fs::canonicalize(&req.file).unwrap_or_else(|_| req.file.clone());
        info!(event = "capture_started", file = %path.display(), filter = %req.filter, count = req.count, seconds = req.seconds, "capture into {} ({comment}, at most {} frames or {} s)", path.display(), req.count, req.seconds);
        let reply = json!({ "capturing": path.display().to_string(), "filter": req.filter, "count": req.count, "seconds": req.seconds, "snaplen": req.snaplen });
        *cur = Some(Running { request: Request { file: path, ..req }, started: Instant::now(), stop, progress, base });
        Ok(reply)
    }

    fn stop(&self) -> Result<serde_json::Value, String> {
        let cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let Some(r) = cur.as_ref() else { return Err("capture: none has run".into()) };
        r.stop.store(true, Relaxed);
        drop(cur);
        // The writer ends within its 100 ms poll once the workers let go of the channel.
        for _ in 0..50 {
            if self.current.lock().unwrap_or_else(|e| e.into_inner()).as_ref().is_some_and(|r| r.progress.done.load(Relaxed)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(self.status())
    }

    fn status(&self) -> serde_json::Value {
        let cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let Some(r) = cur.as_ref() else { return json!({ "capture": "none" }) };
        let p = &r.progress;
        json!({
            "capture": if p.done.load(Relaxed) { "done" } else { "running" },
            "file": r.request.file.display().to_string(),
            "filter": r.request.filter,
            "written": p.written.load(Relaxed),
            "bytes": p.bytes.load(Relaxed),
            "queued": self.tap.captured.load(Relaxed) - r.base.0,
            "dropped": self.tap.dropped.load(Relaxed) - r.base.1,
            "seconds": r.started.elapsed().as_secs_f64(),
            "error": *p.error.lock().unwrap_or_else(|e| e.into_inner()),
        })
    }
}

/// The writer thread: frames into the file until the count, the time limit or a stop.
fn write_loop(mut w: PcapngWriter<BufWriter<File>>, rx: Receiver<Captured>, tap: Arc<CaptureTap>, count: u64, limit: Duration, stop: &AtomicBool, p: &Progress) {
    let start = Instant::now();
    let mut stopped = false;
    let fail = |e: std::io::Error| *p.error.lock().unwrap_or_else(|x| x.into_inner()) = Some(e.to_string());
    loop {
        if !stopped && (stop.load(Relaxed) || start.elapsed() >= limit || p.written.load(Relaxed) >= count) {
            // The workers drop their senders at their next millisecond; what they queued
            // until then is still written (up to the count).
            tap.stop();
            stopped = true;
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(c) if p.written.load(Relaxed) < count => {
                if let Err(e) = w.packet(&c) {
                    fail(e);
                    tap.stop();
                    break;
                }
                p.written.fetch_add(1, Relaxed);
                p.bytes.fetch_add(c.data.len() as u64, Relaxed);
            }
            Ok(_) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    if let Err(e) = w.finish() {
        fail(e);
    }
    let written = p.written.load(Relaxed);
    match &*p.error.lock().unwrap_or_else(|e| e.into_inner()) {
        None => info!(event = "capture_done", written, seconds = start.elapsed().as_secs_f64(), "capture done: {written} frame(s)"),
        Some(e) => warn!(event = "capture_failed", written, error = %e, "capture failed after {written} frame(s): {e}"),
    }
    p.done.store(true, Relaxed);
}

/// Whether `path` is a file this module wrote (tests).
#[cfg(test)]
fn is_pcapng(path: &std::path::Path) -> bool {
    std::fs::read(path).is_ok_and(|b| b.len() >= 12 && b[..4] == [0x0A, 0x0D, 0x0D, 0x0A])
}

#[cfg(test)]
mod tests;
