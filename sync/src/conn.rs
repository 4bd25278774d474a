//! A non-blocking framed stream to the peer (the sync driver's half of the protocol's
//! I/O): reads straight into a frame-sized buffer, parses whole frames (`proto`), writes
//! queued frames while still reading (acks and heartbeats never deadlock against our own
//! batches), and the Hello exchange with its timeouts.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use crate::proto::{self, Hello, Msg};
use crate::session::Incoming;
use crate::ring::Record;

/// Time allowed for the Hello exchange.
pub(crate) const HELLO_TIMEOUT: Duration = Duration::from_millis(500);
/// Pause between reads while waiting for a Hello.
const HELLO_POLL: Duration = Duration::from_micros(50);

/// Receive buffer of a sync connection: always a whole frame (zeroed lazily by the OS: only
/// what reads reach is ever touched).
const RBUF_BYTES: usize = if 4 + proto::MAX_FRAME > 256 * 1024 { 4 + proto::MAX_FRAME } else { 256 * 1024 };

/// Parsed bytes at the front of the receive buffer that trigger moving the rest down.
const RBUF_COMPACT_AT: usize = 128 * 1024;

/// A non-blocking framed stream.
pub(crate) struct Conn {
    pub(crate) s: TcpStream,
    /// The socket reads straight into this buffer (one copy from the kernel, none more);
    /// `[start, end)` is received and not yet parsed. Big enough for any frame.
    pub(crate) rbuf: Box<[u8]>,
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) wbuf: Vec<u8>,
    /// Last time anything was received.
    pub(crate) last_rx: Instant,
    pub(crate) eof: bool,
}

fn is_would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

impl Conn {
    pub(crate) fn new(s: TcpStream) -> io::Result<Conn> {
        s.set_nodelay(true)?;
        s.set_nonblocking(true)?;
        Ok(Conn {
            s,
            rbuf: vec![0; RBUF_BYTES].into_boxed_slice(),
            start: 0,
            end: 0,
            wbuf: Vec::with_capacity(256 * 1024),
            last_rx: Instant::now(),
            eof: false,
        })
    }

    /// Reads what the socket has. Ok(bytes read); Err on reset; EOF sets `eof`.
    pub(crate) fn fill(&mut self) -> io::Result<usize> {
        let mut total = 0;
        loop {
            if self.end == self.rbuf.len() && self.start == 0 {
                // Full of unparsed frames: parse before reading more.
                return Ok(total);
            }
            if self.start >= RBUF_COMPACT_AT || self.end == self.rbuf.len() {
                // Move the unparsed tail (part of one frame, usually) to the front, so
                // reads stay in the first few hundred KB (cache-warm).
                self.rbuf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            match self.s.read(&mut self.rbuf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(total);
                }
                Ok(n) => {
                    self.end += n;
                    total += n;
                    self.last_rx = Instant::now();
                    if total >= 1 << 20 {
                        return Ok(total);
                    }
                }
                Err(e) if is_would_block(&e) => return Ok(total),
                // A reset right behind data is the end of the stream, not a reason to discard
                // that data: a peer that sends a last frame (Refused, Takeover, a Hello reply)
                // and closes with our bytes unread makes the kernel answer with RST. Report
                // what arrived; the error ends the stream (eof) once those frames are parsed.
                Err(e) if total > 0 => {
                    let _ = e;
                    self.eof = true;
                    return Ok(total);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The next complete message; a batch's records are moved (aligned) into `recs`, which
    /// the message then borrows.
    pub(crate) fn next<'r>(&mut self, recs: &'r mut Vec<Record>) -> Result<Option<Incoming<'r>>, proto::ProtoError> {
        let Some((m, used)) = proto::decode(&self.rbuf[self.start..self.end])? else {
            return Ok(None);
        };
        let msg = match m {
            Msg::Hello(h) => Incoming::Hello(h),
            Msg::Batch { worker, first_seq, last_seq, records } => {
                proto::batch_records(records, recs);
                Incoming::Batch { worker, first: first_seq, last: last_seq, records: recs }
            }
            Msg::Ack { worker, seq } => Incoming::Ack { worker, seq },
            Msg::Heartbeat(h) => Incoming::Heartbeat(h),
            Msg::Snapshot { token } => Incoming::Snapshot { token },
            Msg::Handover { epoch } => Incoming::Handover { epoch },
            Msg::Takeover { epoch } => Incoming::Takeover { epoch },
            Msg::Refused { reason } => Incoming::Refused(reason),
            Msg::Pool(t) => Incoming::Pool(t),
        };
        self.start += used;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        Ok(Some(msg))
    }

    pub(crate) fn queue(&mut self, m: &Msg<'_>) {
        proto::encode(m, &mut self.wbuf);
    }

    /// Writes all of `wbuf` (one `write` for a whole batch in the common case). While the
    /// socket is full it keeps reading so the peer's acks never deadlock against us; gives
    /// up after `limit` (the peer is not reading: treat as dead).
    pub(crate) fn flush(&mut self, limit: Duration) -> io::Result<()> {
        let mut off = 0;
        let mut since: Option<Instant> = None;
        while off < self.wbuf.len() {
            match self.s.write(&self.wbuf[off..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    off += n;
                    since = None;
                }
                Err(e) if is_would_block(&e) => {
                    let t0 = *since.get_or_insert_with(Instant::now);
                    if t0.elapsed() > limit {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "peer stopped reading",
                        ));
                    }
                    self.fill()?;
                    thread::sleep(Duration::from_micros(20));
                }
                Err(e) => return Err(e),
            }
        }
        self.wbuf.clear();
        Ok(())
    }

    pub(crate) fn send_now(&mut self, m: &Msg<'_>, limit: Duration) -> io::Result<()> {
        self.queue(m);
        self.flush(limit)
    }

    /// Waits for the peer's Hello (the first frame).
    pub(crate) fn recv_hello(&mut self, recs: &mut Vec<Record>, stop: &dyn Fn() -> bool) -> io::Result<Hello> {
        self.recv_hello_within(recs, stop, HELLO_TIMEOUT)
    }

    pub(crate) fn recv_hello_within(
        &mut self,
        recs: &mut Vec<Record>,
        stop: &dyn Fn() -> bool,
        limit: Duration,
    ) -> io::Result<Hello> {
        let deadline = Instant::now() + limit;
        loop {
            match self.next(recs) {
                Ok(Some(Incoming::Hello(h))) => return Ok(h),
                Ok(Some(Incoming::Refused(r))) => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionRefused,
                        format!("peer refused: {r}"),
                    ))
                }
                Ok(Some(_)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "first frame is not Hello",
                    ))
                }
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            }
            if self.eof {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            if Instant::now() > deadline || stop() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no Hello from peer",
                ));
            }
            if self.fill()? == 0 {
                thread::sleep(HELLO_POLL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::MAX_BATCH_RECORDS;
    use crate::ring::RECORD_BYTES;
    use std::io::Write;
    use std::net::TcpListener;

    /// Frames of every size up to several receive-buffer compactions, written in odd-sized
    /// pieces (frames split anywhere), come out whole and in order.
    #[test]
    fn conn_reassembles_frames_split_anywhere() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut tx = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (rx, _) = l.accept().unwrap();
        rx.set_nonblocking(true).unwrap();
        let mut conn = Conn::new(rx).unwrap();
        // Batches of 1..=1024 records with recognisable contents, and acks between them.
        let sizes: Vec<usize> = (0..300).map(|i| 1 + (i * 397) % MAX_BATCH_RECORDS).collect();
        let mut wire = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            let recs: Vec<u8> = (0..n * RECORD_BYTES).map(|b| (b / RECORD_BYTES + i) as u8).collect();
            proto::encode(&Msg::Batch { worker: 0, first_seq: i as u64, last_seq: (i + n) as u64, records: &recs }, &mut wire);
            proto::encode(&Msg::Ack { worker: 1, seq: i as u64 }, &mut wire);
        }
        assert!(wire.len() > 16 * RBUF_COMPACT_AT, "exercises many compactions");
        let writer = std::thread::spawn(move || {
            let mut at = 0;
            let mut k = 0usize;
            while at < wire.len() {
                let n = (1 + k * 7919 % 70_000).min(wire.len() - at);
                tx.write_all(&wire[at..at + n]).unwrap();
                at += n;
                k += 1;
            }
        });
        let mut recs = Vec::new();
        let (mut batches, mut acks) = (0usize, 0usize);
        let deadline = Instant::now() + Duration::from_secs(20);
        while acks < sizes.len() {
            assert!(Instant::now() < deadline, "stalled after {batches} batches, {acks} acks");
            conn.fill().unwrap();
            while let Some(m) = conn.next(&mut recs).unwrap() {
                match m {
                    Incoming::Batch { first, last, records, .. } => {
                        let i = batches;
                        assert_eq!((first, last), (i as u64, (i + sizes[i]) as u64));
                        assert_eq!(records.len(), sizes[i]);
                        for (j, r) in records.iter().enumerate() {
                            let want = u64::from_le_bytes([(j + i) as u8; 8]);
                            assert!(r.iter().all(|&w| w == want), "batch {i} record {j}");
                        }
                        batches += 1;
                    }
                    Incoming::Ack { seq, .. } => {
                        assert_eq!((seq, acks + 1), (acks as u64, batches), "ack follows its batch");
                        acks += 1;
                    }
                    _ => panic!("unexpected message"),
                }
            }
        }
        writer.join().unwrap();
        assert_eq!((conn.start, conn.end), (0, 0), "everything parsed");
    }
}
