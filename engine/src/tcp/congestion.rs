//! Congestion control: NewReno (RFC 5681 §3, RFC 6582) and the sender's bounded SACK
//! scoreboard (RFC 2018). NewReno over CUBIC: the engine terminates short request/response
//! flows on a LAN next to the clients, where CUBIC's gains on long fat paths do not apply,
//! and NewReno is ~60 lines that are easy to verify. Not replicated (re-learned).
//!
//! Sequence positions here are "abs" values: u64 offsets from the ISS (0 = SYN).

/// NewReno state.
#[derive(Copy, Clone, Debug)]
pub(super) struct NewReno {
    pub(super) cwnd: u32,
    pub(super) ssthresh: u32,
    pub(super) dup_acks: u32,
    /// RFC 6582 "recover": highest abs sequence sent when recovery (or an RTO) began.
    pub(super) recover: u64,
    pub(super) in_recovery: bool,
    /// Bytes acked since the last congestion-avoidance increase (RFC 5681 §3.1 eq. 3 variant).
    acked_accum: u32,
}

impl NewReno {
    pub(super) fn new(mss: u32, initial_segments: u32) -> Self {
        NewReno {
            // RFC 5681 §3.1 / RFC 6928: IW in segments.
            cwnd: mss.saturating_mul(initial_segments.max(1)),
            // RFC 5681 §3.1: "arbitrarily high".
            ssthresh: u32::MAX,
            dup_acks: 0,
            recover: 0,
            in_recovery: false,
            acked_accum: 0,
        }
    }

    /// A new cumulative ACK outside recovery.
    pub(super) fn on_ack(&mut self, acked: u64, mss: u32) {
        let acked = acked.min(u32::MAX as u64) as u32;
        if self.cwnd < self.ssthresh {
            // RFC 5681 §3.1 slow start with RFC 3465 L = 2*SMSS.
            self.cwnd = self.cwnd.saturating_add(acked.min(2 * mss));
        } else {
            // RFC 5681 §3.1 congestion avoidance: +1 SMSS per cwnd of acked data.
            self.acked_accum = self.acked_accum.saturating_add(acked);
            if self.acked_accum >= self.cwnd {
                self.acked_accum -= self.cwnd;
                self.cwnd = self.cwnd.saturating_add(mss);
            }
        }
    }

    /// RFC 5681 §3.2 steps 2-3 / RFC 6582 §3.2 step 2: third duplicate ACK.
    pub(super) fn enter_recovery(&mut self, flight: u64, mss: u32, snd_max: u64) {
        self.ssthresh = half_flight(flight, mss);
        self.recover = snd_max;
        self.in_recovery = true;
        self.cwnd = self.ssthresh.saturating_add(3 * mss);
    }

    /// RFC 6582 §3.2 step 5: partial ACK deflates by the amount acked, adds back one SMSS.
    pub(super) fn on_partial_ack(&mut self, acked: u64, mss: u32) {
        let acked = acked.min(u32::MAX as u64) as u32;
        self.cwnd = self.cwnd.saturating_sub(acked);
        if acked >= mss {
            self.cwnd = self.cwnd.saturating_add(mss);
        }
        self.cwnd = self.cwnd.max(mss);
    }

    /// RFC 6582 §3.2 step 3 option (2): full ACK, cwnd = min(ssthresh, FlightSize + SMSS).
    pub(super) fn on_full_ack(&mut self, flight: u64, mss: u32) {
        let f = flight.min(u32::MAX as u64) as u32;
        self.cwnd = self.ssthresh.min(f.max(mss).saturating_add(mss));
        self.in_recovery = false;
        self.dup_acks = 0;
    }

    /// RFC 5681 §3.1 eq. 4 and "LW = 1 SMSS"; RFC 6582 §4.2 sets recover on timeout.
    pub(super) fn on_rto(&mut self, flight: u64, mss: u32, snd_max: u64) {
        self.ssthresh = half_flight(flight, mss);
        self.cwnd = mss;
        self.recover = snd_max;
        self.in_recovery = false;
        self.dup_acks = 0;
        self.acked_accum = 0;
    }
}

/// RFC 5681 eq. 4: ssthresh = max(FlightSize / 2, 2*SMSS).
fn half_flight(flight: u64, mss: u32) -> u32 {
    ((flight / 2).min(u32::MAX as u64) as u32).max(2 * mss)
}

/// Maximum ranges remembered by the sender (a SACK option carries at most 4).
const SCOREBOARD: usize = 8;

/// Sender-side SACK scoreboard: disjoint, sorted abs ranges `[start, end)` the peer reported
/// as received above `snd_una`. Bounded: when full, the highest range is forgotten (it matters
/// least for choosing what to retransmit next).
#[derive(Copy, Clone, Debug, Default)]
pub(super) struct Scoreboard {
    r: [(u64, u64); SCOREBOARD],
    n: usize,
}

impl Scoreboard {
    pub(super) fn clear(&mut self) {
        self.n = 0;
    }

    pub(super) fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Highest SACKed abs sequence (end of the last range).
    pub(super) fn highest(&self) -> Option<u64> {
        if self.n == 0 {
            None
        } else {
            Some(self.r[self.n - 1].1)
        }
    }

    /// Merge `[s, e)` (already validated to lie within (snd_una, snd_max]).
    pub(super) fn insert(&mut self, s: u64, e: u64) {
        if s >= e {
            return;
        }
        let (mut s, mut e) = (s, e);
        let mut out = [(0u64, 0u64); SCOREBOARD];
        let mut m = 0;
        let mut placed = false;
        for i in 0..self.n {
            let (a, b) = self.r[i];
            if b < s {
                out[m] = (a, b);
                m += 1;
            } else if a > e {
                if !placed {
                    if m < SCOREBOARD {
                        out[m] = (s, e);
                        m += 1;
                    }
                    placed = true;
                }
                if m < SCOREBOARD {
                    out[m] = (a, b);
                    m += 1;
                }
            } else {
                s = s.min(a);
                e = e.max(b);
            }
        }
        if !placed && m < SCOREBOARD {
            out[m] = (s, e);
            m += 1;
        }
        self.r = out;
        self.n = m;
    }

    /// Forget everything below `una` (cumulatively acknowledged).
    pub(super) fn prune(&mut self, una: u64) {
        let mut m = 0;
        for i in 0..self.n {
            let (a, b) = self.r[i];
            if b > una {
                self.r[m] = (a.max(una), b);
                m += 1;
            }
        }
        self.n = m;
    }

    /// If `pos` is SACKed, the end of its range.
    pub(super) fn covering(&self, pos: u64) -> Option<u64> {
        self.r[..self.n].iter().find(|&&(a, b)| a <= pos && pos < b).map(|&(_, b)| b)
    }

    /// Start of the next SACKed range strictly above `pos` (bounds a hole's retransmission).
    pub(super) fn next_sacked_after(&self, pos: u64) -> Option<u64> {
        self.r[..self.n].iter().find(|&&(a, _)| a > pos).map(|&(a, _)| a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoreboard_merges_and_prunes() {
        let mut s = Scoreboard::default();
        s.insert(100, 200);
        s.insert(300, 400);
        s.insert(200, 250);
        assert_eq!(s.covering(220), Some(250));
        assert_eq!(s.covering(260), None);
        assert_eq!(s.next_sacked_after(260), Some(300));
        s.insert(240, 310);
        assert_eq!(s.covering(100), Some(400));
        s.prune(150);
        assert_eq!(s.covering(149), None);
        assert_eq!(s.highest(), Some(400));
        for i in 0..20 {
            s.insert(1000 + i * 10, 1005 + i * 10);
        }
        assert!(s.n <= SCOREBOARD);
    }

    #[test]
    fn newreno_windows() {
        let mut c = NewReno::new(1000, 10);
        assert_eq!(c.cwnd, 10_000);
        c.on_ack(1000, 1000);
        assert_eq!(c.cwnd, 11_000);
        c.enter_recovery(20_000, 1000, 50_000);
        assert_eq!(c.ssthresh, 10_000);
        assert_eq!(c.cwnd, 13_000);
        c.on_full_ack(5000, 1000);
        assert_eq!(c.cwnd, 6000);
        c.on_rto(8000, 1000, 60_000);
        assert_eq!((c.cwnd, c.ssthresh), (1000, 4000));
    }
}
