//! Time as the sans-IO core sees it: a monotonic instant passed in by the caller, never read.
//! Microsecond resolution is enough for TCP timers (RFC 6298 clock granularity) and keeps
//! arithmetic in plain `u64` that cannot overflow in practice (584,000 years).

use core::ops::{Add, Sub};

/// A monotonic point in time, in microseconds since an arbitrary epoch chosen by the caller.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Instant(pub u64);

/// A span of time in microseconds.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Duration(pub u64);

impl Instant {
    pub const ZERO: Instant = Instant(0);
    #[inline]
    pub fn from_micros(us: u64) -> Instant {
        Instant(us)
    }
    #[inline]
    pub fn from_millis(ms: u64) -> Instant {
        Instant(ms.saturating_mul(1000))
    }
    #[inline]
    pub fn micros(self) -> u64 {
        self.0
    }
    #[inline]
    pub fn millis(self) -> u64 {
        self.0 / 1000
    }
    /// Time elapsed since `earlier`; zero if `earlier` is in the future.
    #[inline]
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration(self.0.saturating_sub(earlier.0))
    }
}

impl Duration {
    pub const ZERO: Duration = Duration(0);
    #[inline]
    pub const fn from_micros(us: u64) -> Duration {
        Duration(us)
    }
    #[inline]
    pub const fn from_millis(ms: u64) -> Duration {
        Duration(ms.saturating_mul(1000))
    }
    #[inline]
    pub const fn from_secs(s: u64) -> Duration {
        Duration(s.saturating_mul(1_000_000))
    }
    #[inline]
    pub const fn micros(self) -> u64 {
        self.0
    }
    #[inline]
    pub fn millis(self) -> u64 {
        self.0 / 1000
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    #[inline]
    fn add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(d.0))
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    #[inline]
    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_since(earlier)
    }
}

impl Add for Duration {
    type Output = Duration;
    #[inline]
    fn add(self, d: Duration) -> Duration {
        Duration(self.0.saturating_add(d.0))
    }
}
