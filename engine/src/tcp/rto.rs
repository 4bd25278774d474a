//! RFC 6298 retransmission timer: SRTT/RTTVAR estimator, exponential backoff, bounds.
//! Not replicated (re-learned after failover, like Linux TCP_REPAIR).

use super::TcpConfig;
use crate::time::{Duration, Instant};

/// Clock granularity G (RFC 6298 §2): our timestamps tick in ms, timers in µs.
const GRANULARITY_US: u64 = 1000;

#[derive(Copy, Clone, Debug)]
pub(super) struct RttEstimator {
    /// Smoothed RTT in µs; `None` before the first measurement.
    srtt: Option<u64>,
    rttvar: u64,
    /// Base RTO in µs (before backoff), already clamped.
    rto: u64,
    /// Number of doublings applied (RFC 6298 §5.5).
    backoff: u8,
    /// Karn's algorithm (RFC 6298 §3): one timed segment `(abs end, sent at)`; cleared on
    /// any retransmission so ambiguous samples are never taken.
    pub(super) timing: Option<(u64, Instant)>,
}

impl RttEstimator {
    pub(super) fn new(cfg: &TcpConfig) -> Self {
        RttEstimator {
            srtt: None,
            rttvar: 0,
            rto: clamp(cfg.rto_initial.micros(), cfg),
            backoff: 0,
            timing: None,
        }
    }

    /// Take one RTT measurement `r` (µs).
    pub(super) fn sample(&mut self, r: u64, cfg: &TcpConfig) {
        match self.srtt {
            // RFC 6298 §2.2: first measurement.
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            // RFC 6298 §2.3: beta = 1/4, alpha = 1/8.
            Some(srtt) => {
                let delta = srtt.abs_diff(r);
                self.rttvar = (3 * self.rttvar + delta) / 4;
                self.srtt = Some((7 * srtt + r) / 8);
            }
        }
        let srtt = self.srtt.unwrap_or(r);
        // RTO = SRTT + max(G, K*RTTVAR), K = 4, then §2.4/§2.5 bounds.
        self.rto = clamp(srtt + (4 * self.rttvar).max(GRANULARITY_US), cfg);
    }

    /// Current RTO including backoff.
    pub(super) fn rto(&self, cfg: &TcpConfig) -> Duration {
        let backed = self.rto.checked_shl(self.backoff as u32).unwrap_or(u64::MAX);
        Duration(backed.min(cfg.rto_max.micros()))
    }

    /// RFC 6298 §5.5: double the RTO on expiry (bounded by rto_max in `rto`).
    pub(super) fn back_off(&mut self) {
        self.backoff = self.backoff.saturating_add(1).min(30);
    }

    /// RFC 6298 §5.7-ish: a new ACK ends the backoff.
    pub(super) fn reset_backoff(&mut self) {
        self.backoff = 0;
    }

    pub(super) fn srtt(&self) -> Option<Duration> {
        self.srtt.map(Duration)
    }
}

fn clamp(us: u64, cfg: &TcpConfig) -> u64 {
    us.max(cfg.rto_min.micros()).min(cfg.rto_max.micros())
}
