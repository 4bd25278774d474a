//! Ephemeral (local) port choice for a connection the engine opens itself, from local address
//! L to remote R:rport (a proxy's backend side).
//!
//! Two constraints beyond "free":
//!
//! * **The reply must reach the worker that opened the connection.** Each worker owns its
//!   flows; the SYN-ACK from R:rport to L:port is steered to a worker by a hash of its
//!   4-tuple, so the port is chosen such that the hash sends it to the requesting worker. The
//!   mapping is a [`Steering`]. [`SoftwareSteering`] is the engine's software distribution
//!   ([`crate::distribute::worker_for_tcp_v4`]): symmetric, so the reply hashes like the SYN,
//!   and fixed, so an active and a standby engine agree on every flow's worker.
//!
//!   Assumption: the software hash decides the worker, i.e. worker 0 polls the only RX queue
//!   and fans flows out (DESIGN §2 "software RSS"). When the NIC spreads flows itself, the
//!   worker is `RETA[Toeplitz(key, tuple) mod RETA size]` instead, and the port must be
//!   searched with that function: [`RssSteering`] computes the Toeplitz hash with the
//!   port's key and reads the redirection table ([`ReplySteering`] is either, as a worker's
//!   stack holds it: `Stack::set_worker`). With the symmetric key the port is
//!   configured with, the SYN and the reply hash alike, so searching over either direction's
//!   tuple gives the same answer; an asymmetric key would make the search depend on the
//!   direction (it must be run over the reply's tuple, src = R:rport, dst = L:port) and break
//!   the both-directions-on-one-worker rule the rest of the engine relies on.
//!   (af_packet fanout hashes with a per-boot kernel seed: its worker cannot be predicted.)
//!
//! * **Ports must not be predictable** to an off-path attacker (RFC 6056 §2: a guessable port
//!   helps blind reset and injection attacks). The search starts at RFC 6056 §3.3.3
//!   "Algorithm 3: Simple Hash-Based Port Selection":
//!   `port = min + (F(L, R, rport, secret) + counter) mod num_ephemeral`, F a keyed hash
//!   (SipHash-2-4, as for RFC 6528 ISNs), `counter` advanced by every port examined. A given
//!   destination sees ports step through the range from its own secret offset (few collisions
//!   with its own earlier connections, as RFC 6056 wants); other destinations' offsets stay
//!   secret.
//!
//! The search is bounded: at most `max_tries` ports (default: the whole range) are examined,
//! each once, then it fails with [`PortError::Exhausted`]. With `n` workers about one port in
//! `n` reaches the requesting worker, so a search for a free port costs about `n` hash
//! evaluations while the range is mostly free. No allocation, no clock.

use std::fmt;
use std::net::Ipv4Addr;

use crate::distribute;
use crate::tcp::isn::SipHasher24;

mod rss;
pub use self::rss::{rss_hash_tcp_v4, toeplitz, ReplySteering, RssSteering, SYMMETRIC_RSS_KEY};

/// An inclusive range of local ports (Linux `net.ipv4.ip_local_port_range`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PortRange {
    first: u16,
    last: u16,
}

impl PortRange {
    /// Linux's default, 32768–60999 (RFC 6056 §3.2 recommends 1024–65535; Linux keeps the
    /// low half for servers and the top for masquerading).
    pub const LINUX_DEFAULT: PortRange = PortRange { first: 32768, last: 60999 };

    /// `first..=last`; port 0 is never a port (RFC 9293 §3.1: it means "any" to the socket API).
    pub fn new(first: u16, last: u16) -> Result<PortRange, PortError> {
        if first == 0 || first > last {
            return Err(PortError::BadRange { first, last });
        }
        Ok(PortRange { first, last })
    }
    pub fn first(&self) -> u16 {
        self.first
    }
    pub fn last(&self) -> u16 {
        self.last
    }
    /// How many ports (`num_ephemeral` in RFC 6056).
    pub fn len(&self) -> u32 {
        u32::from(self.last) - u32::from(self.first) + 1
    }
    /// Never true: a range holds at least one port.
    pub fn is_empty(&self) -> bool {
        false
    }
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl Default for PortRange {
    fn default() -> Self {
        PortRange::LINUX_DEFAULT
    }
}

/// Which worker receives a segment, the way the engine's receive path decides it.
pub trait Steering {
    /// Workers the flows are spread over (at least 1).
    fn workers(&self) -> usize;
    /// The worker that receives a TCP segment from `remote:rport` to `local:lport` (the
    /// reply of a connection we open from `local:lport`).
    fn worker_of_reply(&self, local: Ipv4Addr, lport: u16, remote: Ipv4Addr, rport: u16) -> usize;
}

/// The engine's software distribution ([`crate::distribute`]); see the module documentation
/// for when it is the right mapping.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SoftwareSteering {
    workers: usize,
}

impl SoftwareSteering {
    /// Over `workers` workers (0 is taken as 1).
    pub fn new(workers: usize) -> SoftwareSteering {
        SoftwareSteering { workers: workers.max(1) }
    }
}

impl Steering for SoftwareSteering {
    fn workers(&self) -> usize {
        self.workers
    }
    fn worker_of_reply(&self, local: Ipv4Addr, lport: u16, remote: Ipv4Addr, rport: u16) -> usize {
        if self.workers <= 1 {
            return 0; // as `distribute::worker_for_frame`: one worker owns everything
        }
        distribute::worker_for_tcp_v4(remote, rport, local, lport, self.workers)
    }
}

/// Configuration of an [`EphemeralPorts`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct EphemeralConfig {
    pub range: PortRange,
    /// The secret of RFC 6056's F, chosen at start-up (like the RFC 6528 ISN key, and not the
    /// same key).
    pub key: [u8; 16],
    /// Ports examined at most per choice; 0 (the default) or more than the range: the range.
    pub max_tries: u32,
}

impl EphemeralConfig {
    pub fn new(key: [u8; 16]) -> EphemeralConfig {
        EphemeralConfig { range: PortRange::default(), key, max_tries: 0 }
    }
}

/// Why no port was chosen.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PortError {
    /// `first > last`, or `first` is 0.
    BadRange { first: u16, last: u16 },
    /// The requesting worker does not exist.
    NoSuchWorker { worker: usize, workers: usize },
    /// `tried` ports were examined (the whole range, or `max_tries`); `for_worker` of them
    /// reach the requesting worker, and every one of those is in use for this destination.
    Exhausted { tried: u32, for_worker: u32 },
}

impl fmt::Display for PortError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PortError::BadRange { first, last } => write!(f, "bad local port range {first}-{last}"),
            PortError::NoSuchWorker { worker, workers } => write!(f, "no worker {worker} (of {workers})"),
            PortError::Exhausted { tried, for_worker } => write!(
                f,
                "no free local port: {tried} examined, {for_worker} reach this worker, all in use for this destination"
            ),
        }
    }
}

impl std::error::Error for PortError {}

/// Counters (plain integers: one chooser per worker).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct EphemeralCounters {
    /// Ports handed out.
    pub chosen: u64,
    /// Ports examined (chosen or skipped).
    pub examined: u64,
    /// Skipped: the reply would reach another worker.
    pub other_worker: u64,
    /// Skipped: in use for the destination.
    pub in_use: u64,
    /// Choices that failed with [`PortError::Exhausted`].
    pub exhausted: u64,
}

/// One worker's ephemeral port chooser.
pub struct EphemeralPorts<S: Steering = SoftwareSteering> {
    range: PortRange,
    key: [u8; 16],
    tries: u32,
    steering: S,
    /// RFC 6056's `counter`, kept below `range.len()` so a search of `range.len()` steps
    /// visits every port exactly once.
    counter: u32,
    counters: EphemeralCounters,
}

impl<S: Steering> EphemeralPorts<S> {
    pub fn new(cfg: EphemeralConfig, steering: S) -> EphemeralPorts<S> {
        let n = cfg.range.len();
        let tries = if cfg.max_tries == 0 { n } else { cfg.max_tries.min(n) };
        EphemeralPorts { range: cfg.range, key: cfg.key, tries, steering, counter: 0, counters: EphemeralCounters::default() }
    }

    pub fn range(&self) -> PortRange {
        self.range
    }

    pub fn steering(&self) -> &S {
        &self.steering
    }

    pub fn counters(&self) -> &EphemeralCounters {
        &self.counters
    }

    /// A local port for a connection from `local` to `remote:rport` opened by `worker`: its
    /// reply reaches `worker`, and `in_use(port)` (the flow table's answer for the 4-tuple
    /// (local, port, remote, rport)) is false. The same port may serve other destinations.
    pub fn choose(
        &mut self,
        worker: usize,
        local: Ipv4Addr,
        remote: Ipv4Addr,
        rport: u16,
        in_use: impl Fn(u16) -> bool,
    ) -> Result<u16, PortError> {
        let workers = self.steering.workers();
        if worker >= workers {
            return Err(PortError::NoSuchWorker { worker, workers });
        }
        let n = self.range.len();
        let offset = (self.offset(local, remote, rport) % u64::from(n)) as u32;
        let mut for_worker = 0;
        for _ in 0..self.tries {
            let port = self.range.first + ((offset + self.counter) % n) as u16;
            self.counter = (self.counter + 1) % n;
            self.counters.examined += 1;
            if self.steering.worker_of_reply(local, port, remote, rport) != worker {
                self.counters.other_worker += 1;
                continue;
            }
            for_worker += 1;
            if in_use(port) {
                self.counters.in_use += 1;
                continue;
            }
            self.counters.chosen += 1;
            return Ok(port);
        }
        self.counters.exhausted += 1;
        Err(PortError::Exhausted { tried: self.tries, for_worker })
    }

    /// RFC 6056's F(local_IP, remote_IP, remote_port, secret_key).
    fn offset(&self, local: Ipv4Addr, remote: Ipv4Addr, rport: u16) -> u64 {
        let mut h = SipHasher24::new(&self.key);
        h.write(&local.octets());
        h.write(&remote.octets());
        h.write(&rport.to_be_bytes());
        h.finish()
    }
}

#[cfg(test)]
mod tests;
