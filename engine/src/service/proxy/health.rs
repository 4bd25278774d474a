//! Active health checks of a proxy's backends (HAProxy's `check` with `inter`, `rise`, `fall`,
//! `port` and `http-check expect status`; nginx plus's `health_check`).
//!
//! **What runs where.** The check connections are the engine's own: worker 0 of the engine
//! that owns the service's group opens them through its TCP stack out of the DPDK port (the
//! backends are only reachable there), from the service's `source` address, with the same
//! active open the proxy's backend halves use (`Stack::connect`), one check in flight per
//! backend slot (`stack::health`). A check flow is *local*: it is never replicated (the
//! standby does not own the address and a takeover must not resume a probe), and it always
//! ends: a TCP check sends its FIN right after the handshake, an HTTP check right after the
//! status line; a check that has not answered within `timeout` is reset (RST; nothing is
//! sent while still in SYN-SENT), and a lingering one is reset when the next one starts.
//!
//! **Kinds.** `tcp`: the handshake completes. `http`: `GET path HTTP/1.0` (with `Host` when
//! configured, `Connection: close`), and the status line's code within `expect`. Anything
//! else fails: refused or unanswered connects, a reset or a close before the status line, a
//! malformed status line (not `HTTP/1.x DDD`), a status outside the range.
//!
//! **State machine** (per slot, in [`CheckHealth`], atomics shared by every worker; written
//! by worker 0 of the active alone, and by the sync session on a standby):
//! ```text
//!              1 success                  rise successes in a row
//!   Unknown ─────────────► Up ◄──────────────────────────────────── Down
//!      │                    │                                        ▲
//!      │                    └────── fall failures in a row ──────────┤
//!      └───────────────────────── fall failures in a row ────────────┘
//! ```
//! *Unknown* (no check has finished since start or since the slot was filled) counts as up,
//! as HAProxy starts its servers up until the checks say otherwise. Only *Down* takes a
//! backend out of the choice (with the admin state and passive health, `Backend::usable`).
//! A change of eligibility (Unknown or Up → Down, Down → Up) is a transition: counted and
//! logged. On every change of state the pool's version moves, so the sync session sends the
//! table (which carries the state) to the standby, and a new active after a takeover keeps
//! the last known health.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};

use crate::time::Duration;

/// Default time between two checks of one backend (HAProxy's `inter`).
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(2000);
/// Default time a check may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(1000);
/// Default successes in a row that bring a down backend up.
pub const DEFAULT_RISE: u32 = 2;
/// Default failures in a row that take a backend down.
pub const DEFAULT_FALL: u32 = 3;

/// What a check does.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// A TCP handshake.
    Tcp,
    /// An HTTP GET, its status within the expected range.
    Http,
}

impl CheckKind {
    pub fn name(self) -> &'static str {
        match self {
            CheckKind::Tcp => "tcp",
            CheckKind::Http => "http",
        }
    }

    pub fn parse(s: &str) -> Option<CheckKind> {
        match s {
            "tcp" => Some(CheckKind::Tcp),
            "http" => Some(CheckKind::Http),
            _ => None,
        }
    }
}

/// A service's active check settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveCheck {
    pub kind: CheckKind,
    pub interval: Duration,
    /// At most `interval`.
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    /// The port checked (None: the backend's own).
    pub port: Option<u16>,
    /// HTTP: the path and Host asked for.
    pub path: String,
    pub host: Option<String>,
    /// HTTP: the accepted status codes, inclusive.
    pub expect: (u16, u16),
    /// HTTP: the request sent (built from `path` and `host`).
    pub(crate) request: Vec<u8>,
}

impl ActiveCheck {
    /// A check of `kind` with the default timings, `GET /` expecting 200–399.
    pub fn new(kind: CheckKind) -> ActiveCheck {
        let mut c = ActiveCheck {
            kind,
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            rise: DEFAULT_RISE,
            fall: DEFAULT_FALL,
            port: None,
            path: "/".to_string(),
            host: None,
            expect: (200, 399),
            request: Vec::new(),
        };
        c.build_request();
        c
    }

    /// With `GET path` and `Host: host` (the caller checked both: no whitespace or control
    /// characters).
    pub fn with_request(mut self, path: &str, host: Option<&str>) -> ActiveCheck {
        self.path = path.to_string();
        self.host = host.map(str::to_string);
        self.build_request();
        self
    }

    fn build_request(&mut self) {
        let mut r = format!("GET {} HTTP/1.0\r\n", self.path);
        if let Some(h) = &self.host {
            r.push_str(&format!("Host: {h}\r\n"));
        }
        r.push_str("User-Agent: flowtwin-health\r\nAccept: */*\r\nConnection: close\r\n\r\n");
        self.request = r.into_bytes();
    }

    /// What a check sends after its handshake (nothing for a TCP check).
    pub fn request(&self) -> &[u8] {
        match self.kind {
            CheckKind::Tcp => b"",
            CheckKind::Http => &self.request,
        }
    }

    /// `expect` as configured ("200-399", or "200").
    pub fn expect_name(&self) -> String {
        match self.expect {
            (a, b) if a == b => a.to_string(),
            (a, b) => format!("{a}-{b}"),
        }
    }

    /// Parse `"NNN"` or `"NNN-NNN"` (100..=599, low ≤ high).
    pub fn parse_expect(s: &str) -> Option<(u16, u16)> {
        let code = |t: &str| t.trim().parse::<u16>().ok().filter(|c| (100..=599).contains(c) && t.trim().len() == 3);
        let (lo, hi) = match s.split_once('-') {
            Some((a, b)) => (code(a)?, code(b)?),
            None => {
                let c = code(s)?;
                (c, c)
            }
        };
        (lo <= hi).then_some((lo, hi))
    }
}

/// A backend's health as the active checks see it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum CheckState {
    /// Not checked yet (or checks are off): counts as up.
    Unknown = 0,
    Up = 1,
    Down = 2,
}

impl CheckState {
    pub fn from_u8(b: u8) -> Option<CheckState> {
        Some(match b {
            0 => CheckState::Unknown,
            1 => CheckState::Up,
            2 => CheckState::Down,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            CheckState::Unknown => "unknown",
            CheckState::Up => "up",
            CheckState::Down => "down",
        }
    }
}

/// How one check ended.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum CheckResult {
    /// No check has finished yet.
    None = 0,
    Ok = 1,
    /// The connect failed: refused (RST) or unanswered SYNs, or no next hop.
    Refused = 2,
    /// No answer within the timeout.
    Timeout = 3,
    /// HTTP: a status outside the expected range (the code is `CheckHealth::last_status`).
    BadStatus = 4,
    /// HTTP: not an `HTTP/1.x DDD` status line.
    BadResponse = 5,
    /// Reset or closed by the backend before the status line.
    Closed = 6,
    /// The engine could not open the check connection (no route, ports, flow table).
    ConnectError = 7,
}

impl CheckResult {
    pub fn from_u8(b: u8) -> CheckResult {
        match b {
            1 => CheckResult::Ok,
            2 => CheckResult::Refused,
            3 => CheckResult::Timeout,
            4 => CheckResult::BadStatus,
            5 => CheckResult::BadResponse,
            6 => CheckResult::Closed,
            7 => CheckResult::ConnectError,
            _ => CheckResult::None,
        }
    }

    /// As `ctl backends` prints it and logs name it.
    pub fn name(self) -> &'static str {
        match self {
            CheckResult::None => "none",
            CheckResult::Ok => "ok",
            CheckResult::Refused => "connect failed (refused or unanswered)",
            CheckResult::Timeout => "timeout",
            CheckResult::BadStatus => "unexpected status",
            CheckResult::BadResponse => "not an HTTP status line",
            CheckResult::Closed => "closed before the status line",
            CheckResult::ConnectError => "could not open a check connection",
        }
    }

    /// The metrics' `result` label: ok, timeout, or fail.
    pub fn class(self) -> &'static str {
        match self {
            CheckResult::Ok => "ok",
            CheckResult::Timeout => "timeout",
            _ => "fail",
        }
    }
}

/// One backend slot's active-check state (see the module documentation). Every field is an
/// independent Relaxed atomic: one writer (worker 0 of the active, or the sync session on a
/// standby, which runs no checks), readers that only report (`ctl`, `/metrics`) or choose
/// (`Backend::usable` reads `state` alone).
#[derive(Debug, Default)]
pub struct CheckHealth {
    /// [`CheckState`] as a byte.
    state: AtomicU8,
    /// Successes in a row (0 after a failure).
    ok_run: AtomicU32,
    /// Failures in a row (0 after a success).
    fail_run: AtomicU32,
    /// The check in flight: its token (its start in engine µs, at least 1), 0 if none. The
    /// first outcome that matches it counts; later ones (the reset of a check that timed out)
    /// do not.
    inflight: AtomicU64,
    /// The last [`CheckResult`].
    last: AtomicU8,
    /// The last check's duration (µs: its start to its outcome).
    pub last_us: AtomicU64,
    /// The last HTTP status seen (0: none).
    pub last_status: AtomicU32,
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub timeouts: AtomicU64,
    /// Changes of eligibility: (Unknown or Up) → Down, Down → Up.
    pub transitions: AtomicU64,
}

impl CheckHealth {
    pub fn state(&self) -> CheckState {
        CheckState::from_u8(self.state.load(Relaxed)).unwrap_or(CheckState::Unknown)
    }

    /// Whether the checks let the backend take new connections (not down).
    pub fn eligible(&self) -> bool {
        self.state() != CheckState::Down
    }

    pub fn last(&self) -> CheckResult {
        CheckResult::from_u8(self.last.load(Relaxed))
    }

    /// A check with `token` started (it replaces one in flight, which then counts no more).
    pub fn begin(&self, token: u64) {
        self.inflight.store(token.max(1), Relaxed);
    }

    /// Whether the check `token` is still in flight (no outcome counted yet).
    pub fn pending(&self, token: u64) -> bool {
        token != 0 && self.inflight.load(Relaxed) == token.max(1)
    }

    /// The check `token` ended with `result` after `took_us` (HTTP: `status` seen, or 0).
    /// Returns the new state if it changed (Unknown → Up too, though that is no transition:
    /// the backend was eligible already). Nothing if the check is not the one in flight.
    pub(crate) fn finish(&self, token: u64, result: CheckResult, took_us: u64, status: u16, rise: u32, fall: u32) -> Option<CheckState> {
        if token == 0 || self.inflight.compare_exchange(token.max(1), 0, Relaxed, Relaxed).is_err() {
            return None;
        }
        self.last.store(result as u8, Relaxed);
        self.last_us.store(took_us, Relaxed);
        self.last_status.store(u32::from(status), Relaxed);
        let state = self.state();
        let next = if result == CheckResult::Ok {
            self.ok.fetch_add(1, Relaxed);
            self.fail_run.store(0, Relaxed);
            let n = self.ok_run.fetch_add(1, Relaxed).saturating_add(1);
            match state {
                CheckState::Unknown => CheckState::Up,
                CheckState::Down if n >= rise.max(1) => CheckState::Up,
                s => s,
            }
        } else {
            if result == CheckResult::Timeout {
                self.timeouts.fetch_add(1, Relaxed);
            } else {
                self.failed.fetch_add(1, Relaxed);
            }
            self.ok_run.store(0, Relaxed);
            let n = self.fail_run.fetch_add(1, Relaxed).saturating_add(1);
            if state != CheckState::Down && n >= fall.max(1) {
                CheckState::Down
            } else {
                state
            }
        };
        if next == state {
            return None;
        }
        self.state.store(next as u8, Relaxed);
        // A new run starts from the change (HAProxy: `rise` successes after going down).
        self.ok_run.store(0, Relaxed);
        self.fail_run.store(0, Relaxed);
        if (state == CheckState::Down) != (next == CheckState::Down) {
            self.transitions.fetch_add(1, Relaxed);
        }
        Some(next)
    }

    /// A filled slot: not checked yet, no history.
    pub(crate) fn clear(&self) {
        self.state.store(CheckState::Unknown as u8, Relaxed);
        self.last.store(CheckResult::None as u8, Relaxed);
        for c in [&self.inflight, &self.last_us, &self.ok, &self.failed, &self.timeouts, &self.transitions] {
            c.store(0, Relaxed);
        }
        self.ok_run.store(0, Relaxed);
        self.fail_run.store(0, Relaxed);
        self.last_status.store(0, Relaxed);
    }

    /// The state the active's pool table carries (a standby, which runs no checks).
    pub(crate) fn set_state(&self, s: CheckState) {
        self.state.store(s as u8, Relaxed);
    }
}

/// Where an HTTP check's status line stands after the bytes seen so far.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum StatusLine {
    /// Consistent so far; more bytes needed.
    More,
    /// Not `HTTP/1.x DDD` followed by a space or CR.
    Bad,
    Status(u16),
}

/// Bytes of a status line read before the verdict: `HTTP/1.x DDD` and the byte after it.
pub const STATUS_PREFIX: usize = 13;

/// The verdict on the first bytes `b` of a response (at most [`STATUS_PREFIX`] are looked at).
pub fn status_line(b: &[u8]) -> StatusLine {
    const LIT: &[u8] = b"HTTP/1.";
    for (i, &c) in b.iter().take(STATUS_PREFIX).enumerate() {
        let ok = match i {
            0..=6 => c == LIT[i],
            7 => c.is_ascii_digit(),
            8 => c == b' ',
            9..=11 => c.is_ascii_digit(),
            _ => c == b' ' || c == b'\r',
        };
        if !ok {
            return StatusLine::Bad;
        }
    }
    if b.len() < STATUS_PREFIX {
        return StatusLine::More;
    }
    let d = |i: usize| u16::from(b[i] - b'0');
    StatusLine::Status(d(9) * 100 + d(10) * 10 + d(11))
}

/// A check flow's own state (inside its `ProxyHalf`): the status line read so far, and the
/// verdict, taken by the stack after the TCP call that produced it.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Probe {
    /// The check's token (`CheckHealth::begin`).
    pub token: u64,
    head: [u8; STATUS_PREFIX],
    len: u8,
    /// HTTP: decided (the status line is read, or cannot be one): the check sends its FIN.
    pub verdict: Option<(CheckResult, u16)>,
}

impl Probe {
    pub fn new(token: u64) -> Probe {
        Probe { token, ..Probe::default() }
    }

    /// Response bytes of an HTTP check expecting `expect`.
    pub fn on_response(&mut self, data: &[u8], expect: (u16, u16)) {
        if self.verdict.is_some() {
            return;
        }
        let at = usize::from(self.len);
        let n = data.len().min(STATUS_PREFIX - at);
        self.head[at..at + n].copy_from_slice(&data[..n]);
        self.len += n as u8;
        self.verdict = match status_line(&self.head[..usize::from(self.len)]) {
            StatusLine::More => None,
            StatusLine::Bad => Some((CheckResult::BadResponse, 0)),
            StatusLine::Status(s) if (expect.0..=expect.1).contains(&s) => Some((CheckResult::Ok, s)),
            StatusLine::Status(s) => Some((CheckResult::BadStatus, s)),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(status_line(b"HTTP/1.1 200 OK\r\n"), StatusLine::Status(200));
        assert_eq!(status_line(b"HTTP/1.0 503\r\n"), StatusLine::Status(503));
        assert_eq!(status_line(b"HTTP/1.1 20"), StatusLine::More);
        assert_eq!(status_line(b""), StatusLine::More);
        for bad in [&b"SSH-2.0-OpenSSH"[..], b"HTTP/2 200 OK\r\n", b"HTTP/1.1 2000 OK", b"HTTP/1.1  200", b"http/1.1 200 OK", b"HTTP/1.1 2x0 OK"] {
            assert_eq!(status_line(bad), StatusLine::Bad, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_status_line_split_across_segments_is_read_whole() {
        let mut p = Probe::new(1);
        for part in [&b"HT"[..], b"TP/1.1 2", b"0", b"4 No Content\r\n\r\n"] {
            assert_eq!(p.verdict, None);
            p.on_response(part, (200, 399));
        }
        assert_eq!(p.verdict, Some((CheckResult::Ok, 204)));
        let mut p = Probe::new(1);
        p.on_response(b"HTTP/1.1 500 Internal Server Error\r\n", (200, 399));
        assert_eq!(p.verdict, Some((CheckResult::BadStatus, 500)));
        let mut p = Probe::new(1);
        p.on_response(b"HTTP/1.1 301 Moved\r\n", (200, 200));
        assert_eq!(p.verdict, Some((CheckResult::BadStatus, 301)), "expect = \"200\" is exact");
        let mut p = Probe::new(1);
        p.on_response(b"<html>", (200, 399));
        assert_eq!(p.verdict, Some((CheckResult::BadResponse, 0)), "decided at the first wrong byte");
        p.on_response(b"HTTP/1.1 200 OK\r\n", (200, 399));
        assert_eq!(p.verdict, Some((CheckResult::BadResponse, 0)), "a verdict stands");
    }

    #[test]
    fn expect_parses() {
        assert_eq!(ActiveCheck::parse_expect("200-399"), Some((200, 399)));
        assert_eq!(ActiveCheck::parse_expect("200"), Some((200, 200)));
        assert_eq!(ActiveCheck::parse_expect(" 204 - 204 "), Some((204, 204)));
        for bad in ["", "2xx", "399-200", "99", "600", "200-", "-200", "0200", "200-399-500"] {
            assert_eq!(ActiveCheck::parse_expect(bad), None, "{bad}");
        }
    }

    #[test]
    fn rise_and_fall() {
        let h = CheckHealth::default();
        let mut t = 0;
        let mut check = |r: CheckResult| {
            t += 1;
            h.begin(t);
            h.finish(t, r, 10, 0, 2, 3)
        };
        assert_eq!(check(CheckResult::Ok), Some(CheckState::Up), "a change, but no transition");
        assert_eq!(h.state(), CheckState::Up);
        assert_eq!(check(CheckResult::Refused), None);
        assert_eq!(check(CheckResult::Timeout), None);
        assert!(h.eligible(), "2 failures of fall = 3");
        assert_eq!(check(CheckResult::BadStatus), Some(CheckState::Down));
        assert!(!h.eligible());
        assert_eq!(check(CheckResult::Ok), None, "1 success of rise = 2");
        assert_eq!(check(CheckResult::Refused), None, "the run is broken");
        assert_eq!(check(CheckResult::Ok), None);
        assert_eq!(check(CheckResult::Ok), Some(CheckState::Up));
        assert_eq!((h.ok.load(Relaxed), h.failed.load(Relaxed), h.timeouts.load(Relaxed), h.transitions.load(Relaxed)), (4, 3, 1, 2));
        // Unknown goes down after `fall` failures too (a backend dead at start): a transition.
        let h = CheckHealth::default();
        for t in 1..=3 {
            h.begin(t);
            h.finish(t, CheckResult::Refused, 10, 0, 2, 3);
        }
        assert_eq!((h.state(), h.transitions.load(Relaxed)), (CheckState::Down, 1));
        // Only the check in flight counts, once.
        h.begin(9);
        assert!(h.pending(9) && !h.pending(8));
        assert_eq!(h.finish(8, CheckResult::Ok, 1, 200, 1, 1), None);
        assert_eq!(h.finish(9, CheckResult::Ok, 1, 200, 1, 1), Some(CheckState::Up));
        assert_eq!(h.finish(9, CheckResult::Timeout, 1, 0, 1, 1), None, "counted once");
        assert_eq!((h.last(), h.last_status.load(Relaxed)), (CheckResult::Ok, 200));
    }
}
