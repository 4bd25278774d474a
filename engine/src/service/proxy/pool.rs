//! The runtime pool of a proxy: backend slots, their admin states, weighted choice, and the
//! changes an operator makes to a running engine (`flowtwin ctl backend add|drain|undrain|
//! remove`), which the sync session replicates to the standby as the pool's table.
//!
//! **Slots.** A spec holds a fixed array of [`Backend`]s allocated at start: the configured
//! backends, then empty slots up to `max_backends`. Workers read it lock-free on every new
//! connection (one Acquire load of `admin` per slot considered, then Relaxed fields); the
//! control plane changes it under `ProxySpec::ops`, a mutex no worker takes. A backend half
//! names its backend by slot index for its whole life (and in its replica), so a slot is
//! never reused while a connection may still refer to it:
//!
//! ```text
//!            add                  drain                remove (0 connections)
//!   Empty ─────────► Ready ◄──────────────► Draining ─────────────────────► Removed
//!     ▲                 │      undrain/ready                                   │
//!     │                 └────────── remove --force (any count) ───────────────►│
//!     └──── reap: no connection for REMOVE_GRACE (the sync session, on the active) ┘
//! ```
//! - *Ready*: takes new connections (if passive health lets it).
//! - *Draining*: no new connection; the open ones finish (HAProxy's `set server state drain`).
//! - *Removed*: like draining, and the slot is emptied once no connection uses it for
//!   [`REMOVE_GRACE`] (HAProxy's `del server` needs the server in maintenance with no
//!   connection; `remove` here asks the same, `--force` skips the wait and leaves the open
//!   connections to finish). The grace covers a worker that chose the backend just before
//!   the removal and has not counted its connection yet (a choice and its count happen in
//!   one worker iteration, microseconds).
//!
//! **Weights** (1..=[`MAX_WEIGHT`]): round-robin is nginx's smooth weighted round-robin (each
//! pick adds every candidate's weight to its current weight, takes the largest and subtracts
//! the candidates' total from it), over atomics so that workers share one rotation (their
//! adds and subtracts commute: the sum is conserved, so the long-run shares hold even when
//! two workers pick at once); least-conn compares connections/weight; the hash is a weighted
//! rendezvous hash (`weight / -ln(u)`).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};

use super::{Backend, Balance, CheckState, ProxySpec};
use crate::time::Instant;

/// Slots a proxy service has by default (configured backends count against it).
pub const DEFAULT_MAX_BACKENDS: usize = 64;
/// Largest weight (HAProxy's limit).
pub const MAX_WEIGHT: u32 = 256;
/// The default pool's index (the service's `backends`; `[[service.pool]]`s count from 0).
pub const DEFAULT_POOL: u16 = u16::MAX;
/// How long a removed backend's slot stays reserved after its last connection ended.
pub const REMOVE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);
/// Upper bounds (µs) of the connect-latency histogram's buckets (0.5 ms … 5 s, then +Inf).
pub const CONNECT_BUCKETS_US: [u64; 13] = [500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000];

/// A slot's administrative state (see the module documentation).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Admin {
    Empty = 0,
    Ready = 1,
    Draining = 2,
    Removed = 3,
}

impl Admin {
    pub fn from_u8(b: u8) -> Option<Admin> {
        Some(match b {
            0 => Admin::Empty,
            1 => Admin::Ready,
            2 => Admin::Draining,
            3 => Admin::Removed,
            _ => return None,
        })
    }

    /// As `ctl backends` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Admin::Empty => "empty",
            Admin::Ready => "ready",
            Admin::Draining => "draining",
            Admin::Removed => "removing",
        }
    }
}

/// `ip << 16 | port`.
pub fn pack(a: SocketAddrV4) -> u64 {
    (u64::from(u32::from(*a.ip())) << 16) | u64::from(a.port())
}

pub fn unpack(v: u64) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from((v >> 16) as u32), v as u16)
}

/// Connect latency (connect → SYN-ACK) as Prometheus histogram buckets: counts per bucket of
/// [`CONNECT_BUCKETS_US`] (not cumulative; the last is +Inf), their sum in µs. One Relaxed
/// add each per connection that connects.
#[derive(Debug, Default)]
pub struct ConnectHistogram {
    pub buckets: [AtomicU64; CONNECT_BUCKETS_US.len() + 1],
    pub sum_us: AtomicU64,
}

impl ConnectHistogram {
    pub fn observe(&self, us: u64) {
        let i = CONNECT_BUCKETS_US.iter().position(|&b| us <= b).unwrap_or(CONNECT_BUCKETS_US.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    fn clear(&self) {
        self.buckets.iter().for_each(|b| b.store(0, Relaxed));
        self.sum_us.store(0, Relaxed);
    }
}

/// Why a pool change was refused (its `Display` is the operator's message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PoolError {
    Duplicate(SocketAddrV4, Admin),
    Full(usize),
    Unknown(SocketAddrV4),
    NoSuchPool(u16, usize),
    BadWeight(u32),
    NotDrained(SocketAddrV4),
    Busy(SocketAddrV4, u64),
    State(SocketAddrV4, Admin, &'static str),
}

impl std::fmt::Display for PoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PoolError::Duplicate(a, s) => write!(f, "backend {a} is already in the pool ({})", s.name()),
            PoolError::Full(n) => write!(f, "the pool is full: all {n} backend slots are in use (max_backends; a removed backend frees its slot once its connections ended)"),
            PoolError::Unknown(a) => write!(f, "no backend {a} in this service"),
            PoolError::NoSuchPool(p, n) => write!(f, "no pool {p}: the service has {n} [[service.pool]] (0..{n}), or \"default\""),
            PoolError::BadWeight(w) => write!(f, "weight {w}: must be 1..={MAX_WEIGHT}"),
            PoolError::NotDrained(a) => write!(f, "backend {a} is ready: drain it first (`ctl backend drain`), or remove --force"),
            PoolError::Busy(a, n) => write!(f, "backend {a} still has {n} connection(s): wait until 0 (`ctl backends`), or remove --force (no new connections; the open ones finish, then the slot is freed)"),
            PoolError::State(a, s, op) => write!(f, "backend {a} is {}: cannot {op} it", s.name()),
        }
    }
}

/// One slot as the sync session replicates it (the pool's table: every slot, empty ones
/// included, so the standby's slots are the active's).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SlotImage {
    pub admin: u8,
    pub addr: SocketAddrV4,
    pub weight: u32,
    pub pools: u64,
    pub in_default: bool,
    /// The active checks' [`CheckState`] as a byte (a new active keeps the last known health).
    pub health: u8,
}

impl Backend {
    pub fn admin(&self) -> Admin {
        Admin::from_u8(self.admin.load(Acquire)).unwrap_or(Admin::Empty)
    }

    /// Whether pool `pool` ([`DEFAULT_POOL`] or a `[[service.pool]]` index) has it.
    pub fn member(&self, pool: u16) -> bool {
        if pool == DEFAULT_POOL {
            self.in_default.load(Relaxed)
        } else {
            pool < 64 && self.pools.load(Relaxed) & (1 << pool) != 0
        }
    }

    fn weight_of(&self) -> u32 {
        self.weight.load(Relaxed).max(1)
    }

    /// Fill an empty slot (under `ops`): everything but `admin`, which the caller stores last.
    fn fill(&self, addr: SocketAddrV4, weight: u32, pools: u64, in_default: bool) {
        self.addr.store(pack(addr), Relaxed);
        self.weight.store(weight, Relaxed);
        self.pools.store(pools, Relaxed);
        self.in_default.store(in_default, Relaxed);
        self.cw.store(0, Relaxed);
        self.up.store(true, Relaxed);
        self.fails.store(0, Relaxed);
        self.down_until.store(0, Relaxed);
        for c in [&self.marked_down, &self.opened, &self.failed, &self.bytes_to, &self.bytes_from] {
            c.store(0, Relaxed);
        }
        self.connect.clear();
        self.check.clear();
    }
}

impl ProxySpec {
    /// With `max` slots in all (at least the configured backends; at most `u16::MAX`).
    pub fn with_slots(mut self, max: usize) -> ProxySpec {
        let max = max.clamp(self.backends.len(), usize::from(u16::MAX) - 1);
        self.backends.resize_with(max, Backend::empty);
        self
    }

    /// With the default pool `default` and the pools `pools` (indices into `backends`).
    pub fn with_pools(mut self, default: &[usize], pools: Vec<Pool>) -> ProxySpec {
        for (i, b) in self.backends.iter().enumerate() {
            b.in_default.store(default.contains(&i), Relaxed);
            let bits = pools.iter().enumerate().filter(|(k, p)| *k < 64 && p.backends.contains(&i)).fold(0u64, |m, (k, _)| m | 1 << k);
            b.pools.store(bits, Relaxed);
        }
        self.pools = pools;
        self
    }

    /// Whether the default pool has any backend (any admin state but empty).
    pub fn default_pool_any(&self) -> bool {
        self.backends.iter().any(|b| b.admin() != Admin::Empty && b.member(DEFAULT_POOL))
    }

    /// [`ProxySpec::choose`] among pool `pool`'s usable backends.
    pub fn choose_in(&self, pool: u16, client: Ipv4Addr, now: Instant) -> Option<usize> {
        let cand = |i: usize, b: &Backend| -> Option<(usize, u32)> { (b.member(pool) && b.usable(now)).then(|| (i, b.weight_of())) };
        let all = || self.backends.iter().enumerate().filter_map(|(i, b)| cand(i, b));
        match self.balance {
            Balance::RoundRobin => {
                // nginx's smooth weighted round-robin (ties: the first).
                let mut total = 0i64;
                let mut best: Option<(usize, i64)> = None;
                for (i, w) in all() {
                    let w = i64::from(w);
                    let c = self.backends[i].cw.fetch_add(w, Relaxed) + w;
                    total += w;
                    if best.is_none_or(|(_, bc)| c > bc) {
                        best = Some((i, c));
                    }
                }
                let (i, _) = best?;
                self.backends[i].cw.fetch_sub(total, Relaxed);
                Some(i)
            }
            Balance::LeastConn => {
                // Fewest connections per weight; ties in turn.
                let n = self.backends.len().max(1);
                let start = self.next.fetch_add(1, Relaxed) as usize % n;
                let order = self.backends.iter().enumerate().cycle().skip(start).take(n);
                let mut best: Option<(usize, u64, u32)> = None;
                for (i, w) in order.filter_map(|(i, b)| cand(i, b)) {
                    let a = self.backends[i].active.load(Relaxed);
                    if best.is_none_or(|(_, ba, bw)| u128::from(a) * u128::from(bw) < u128::from(ba) * u128::from(w)) {
                        best = Some((i, a, w));
                    }
                }
                best.map(|(i, ..)| i)
            }
            Balance::Hash => all().map(|(i, w)| (i, weighted(rendezvous(client, self.backends[i].addr()), w))).max_by(|a, b| a.1.total_cmp(&b.1)).map(|(i, _)| i),
        }
    }

    /// The slot holding `addr` (any state but empty).
    pub fn find(&self, addr: SocketAddrV4) -> Option<usize> {
        self.backends.iter().position(|b| b.admin() != Admin::Empty && b.addr() == addr)
    }

    pub(super) fn bump(&self) {
        self.version.fetch_add(1, Release);
    }

    /// The pool's version (moves after every change).
    pub fn pool_version(&self) -> u64 {
        self.version.load(Acquire)
    }

    /// Add `addr` with `weight` to pool `pool` ([`DEFAULT_POOL`]: the default backends):
    /// fills an empty slot nothing refers to. Returns the slot.
    pub fn add_backend(&self, addr: SocketAddrV4, weight: u32, pool: u16) -> Result<usize, PoolError> {
        if !(1..=MAX_WEIGHT).contains(&weight) {
            return Err(PoolError::BadWeight(weight));
        }
        if pool != DEFAULT_POOL && usize::from(pool) >= self.pools.len().min(64) {
            return Err(PoolError::NoSuchPool(pool, self.pools.len()));
        }
        let _g = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = self.find(addr) {
            return Err(PoolError::Duplicate(addr, self.backends[i].admin()));
        }
        let i = self.backends.iter().position(|b| b.admin() == Admin::Empty && b.active.load(Relaxed) == 0).ok_or(PoolError::Full(self.backends.len()))?;
        let (pools, in_default) = if pool == DEFAULT_POOL { (0, true) } else { (1u64 << pool, false) };
        let b = &self.backends[i];
        b.fill(addr, weight, pools, in_default);
        // Pairs with the workers' Acquire load of `admin` in `usable`: they see the filled slot.
        b.admin.store(Admin::Ready as u8, Release);
        self.bump();
        Ok(i)
    }

    /// Change `addr`'s state for `op` from one of `from` to `to`.
    fn transition(&self, addr: SocketAddrV4, from: &[Admin], to: Admin, op: &'static str) -> Result<usize, PoolError> {
        let _g = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        let i = self.find(addr).ok_or(PoolError::Unknown(addr))?;
        let b = &self.backends[i];
        let s = b.admin();
        if s != to {
            if !from.contains(&s) {
                return Err(PoolError::State(addr, s, op));
            }
            b.admin.store(to as u8, Release);
            self.bump();
        }
        Ok(i)
    }

    /// No new connections for `addr`; its open ones finish.
    pub fn drain_backend(&self, addr: SocketAddrV4) -> Result<usize, PoolError> {
        self.transition(addr, &[Admin::Ready], Admin::Draining, "drain")
    }

    /// A draining `addr` takes new connections again.
    pub fn undrain_backend(&self, addr: SocketAddrV4) -> Result<usize, PoolError> {
        self.transition(addr, &[Admin::Draining], Admin::Ready, "undrain")
    }

    /// Remove `addr`: it must be draining with no connection left (HAProxy's `del server`),
    /// unless `force`. Its slot is freed by [`ProxySpec::reap`] once unused.
    pub fn remove_backend(&self, addr: SocketAddrV4, force: bool) -> Result<usize, PoolError> {
        if !force {
            let i = self.find(addr).ok_or(PoolError::Unknown(addr))?;
            let b = &self.backends[i];
            match (b.admin(), b.active.load(Relaxed)) {
                (Admin::Ready, _) => return Err(PoolError::NotDrained(addr)),
                (Admin::Draining, n) if n > 0 => return Err(PoolError::Busy(addr, n)),
                _ => {}
            }
        }
        self.transition(addr, &[Admin::Ready, Admin::Draining], Admin::Removed, "remove")
    }

    /// Removed slots with no connection now (candidates for [`ProxySpec::reap`]).
    pub fn idle_removed(&self) -> impl Iterator<Item = usize> + '_ {
        self.backends.iter().enumerate().filter(|(_, b)| b.admin() == Admin::Removed && b.active.load(Relaxed) == 0).map(|(i, _)| i)
    }

    /// Empty slot `i` if it is still removed and unused (its grace is the caller's).
    pub fn reap(&self, i: usize) -> bool {
        let _g = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        let Some(b) = self.backends.get(i) else { return false };
        if b.admin() != Admin::Removed || b.active.load(Relaxed) != 0 {
            return false;
        }
        b.admin.store(Admin::Empty as u8, Release);
        self.bump();
        true
    }

    /// Every slot, as the sync session sends it, and the version it is of.
    pub fn table(&self) -> (u64, Vec<SlotImage>) {
        let _g = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        let v = self.pool_version();
        let t = self
            .backends
            .iter()
            .map(|b| SlotImage {
                admin: b.admin() as u8,
                addr: b.addr(),
                weight: b.weight_of(),
                pools: b.pools.load(Relaxed),
                in_default: b.in_default.load(Relaxed),
                health: b.check.state() as u8,
            })
            .collect();
        (v, t)
    }

    /// Make the slots the active's `table` (a standby). Refused, changing nothing, if the
    /// table does not fit this spec (another slot count, a bad state or weight).
    pub fn apply_table(&self, table: &[SlotImage]) -> Result<(), String> {
        if table.len() != self.backends.len() {
            return Err(format!("the peer has {} backend slots, this engine {} (max_backends must be the same on both)", table.len(), self.backends.len()));
        }
        if let Some(s) = table.iter().find(|s| Admin::from_u8(s.admin).is_none() || !(1..=MAX_WEIGHT).contains(&s.weight) || CheckState::from_u8(s.health).is_none()) {
            return Err(format!("bad slot in the peer's pool table: {s:?}"));
        }
        let _g = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        for (b, s) in self.backends.iter().zip(table) {
            let health = CheckState::from_u8(s.health).unwrap_or(CheckState::Unknown);
            let cur = (b.admin(), b.addr(), b.weight_of(), b.pools.load(Relaxed), b.in_default.load(Relaxed));
            if cur == (Admin::from_u8(s.admin).unwrap_or(Admin::Empty), s.addr, s.weight, s.pools, s.in_default) {
                b.check.set_state(health);
                continue;
            }
            if b.addr() != s.addr {
                b.fill(s.addr, s.weight, s.pools, s.in_default);
            } else {
                b.weight.store(s.weight, Relaxed);
                b.pools.store(s.pools, Relaxed);
                b.in_default.store(s.in_default, Relaxed);
            }
            b.check.set_state(health);
            b.admin.store(s.admin, Release);
        }
        self.bump();
        Ok(())
    }
}

use super::Pool;

/// Rendezvous weight of (client, backend): a 64-bit mix (splitmix64 finalizer) of both.
pub(super) fn rendezvous(client: Ipv4Addr, backend: SocketAddrV4) -> u64 {
    let mut x = (u64::from(u32::from(client)) << 32) ^ (u64::from(u32::from(*backend.ip())) << 16) ^ u64::from(backend.port());
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Weighted rendezvous score `w / -ln(u)`, `u` in (0, 1) from the hash: with equal weights it
/// orders as the hash does, and a backend of weight `w` wins `w` times as many clients.
fn weighted(h: u64, w: u32) -> f64 {
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    f64::from(w) / -u.ln()
}
