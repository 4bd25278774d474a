//! Rate-limited warnings about dropped input, from the main thread's supervision loop: at most
//! one per drop reason (those `Drop::warns` names) every [`WARN_EVERY`], saying how many frames
//! were dropped since the last one. The workers only count; nothing on the packet path logs.

use std::time::{Duration, Instant};

use flowtwin_engine::counters::{Counters, Drop};

/// At most one warning per reason this often.
pub(super) const WARN_EVERY: Duration = Duration::from_secs(10);
/// How often the workers' counters are read (they publish theirs every few ms).
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// One warning: `dropped` frames of `reason` over the last `over`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct DropWarning {
    pub reason: Drop,
    pub dropped: u64,
    pub over: Duration,
}

impl DropWarning {
    pub fn log(&self) {
        let reason = self.reason.as_str();
        tracing::warn!(
            event = "drops",
            reason,
            dropped = self.dropped,
            seconds = self.over.as_secs(),
            "warning: {} frame(s) dropped as {reason} in the last {} s (flowtwin_drops_total{{reason=\"{reason}\"}})",
            self.dropped,
            self.over.as_secs()
        );
    }
}

pub(super) struct DropWarnings {
    /// Per reason: the total at the last warning (0 before the first), and when that was
    /// (the start before the first).
    last: [(u64, Instant); Drop::COUNT],
    warned: [bool; Drop::COUNT],
    next_check: Instant,
}

impl DropWarnings {
    pub fn new(now: Instant) -> DropWarnings {
        DropWarnings { last: [(0, now); Drop::COUNT], warned: [false; Drop::COUNT], next_check: now }
    }

    /// The warnings due at `now`, given the engine's drop totals (read only when a check is
    /// due): a reason's first drops at once, later ones once `WARN_EVERY` has passed since
    /// its last warning.
    pub fn poll(&mut self, now: Instant, totals: impl FnOnce() -> Counters) -> Vec<DropWarning> {
        if now < self.next_check {
            return Vec::new();
        }
        self.next_check = now + CHECK_EVERY;
        let totals = totals();
        let mut out = Vec::new();
        for &r in Drop::ALL.iter().filter(|r| r.warns()) {
            let (count, at) = self.last[r as usize];
            let total = totals.dropped(r);
            let due = !self.warned[r as usize] || now.saturating_duration_since(at) >= WARN_EVERY;
            if total > count && due {
                out.push(DropWarning { reason: r, dropped: total - count, over: now.saturating_duration_since(at) });
                self.last[r as usize] = (total, now);
                self.warned[r as usize] = true;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::testing::capture;
    use crate::logs::Format;

    fn totals(drops: &[(Drop, u64)]) -> Counters {
        let mut c = Counters::default();
        for &(r, n) in drops {
            c.drops[r as usize] = n;
        }
        c
    }

    #[test]
    fn one_warning_per_reason_per_interval_with_the_count_since_the_last() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut w = DropWarnings::new(t0);
        // Background drops (another host's traffic) never warn.
        assert_eq!(w.poll(at(0), || totals(&[(Drop::NotOurMac, 500), (Drop::Standby, 9)])), vec![]);
        // The first hostile drops: at once.
        let first = w.poll(at(1000), || totals(&[(Drop::BadTcpChecksum, 3)]));
        assert_eq!(first, vec![DropWarning { reason: Drop::BadTcpChecksum, dropped: 3, over: Duration::from_secs(1) }]);
        // More within 10 s: counted, not logged; a check is not even due within 1 s.
        assert_eq!(w.poll(at(1500), || unreachable!("read before a check is due")), vec![]);
        assert_eq!(w.poll(at(2000), || totals(&[(Drop::BadTcpChecksum, 40)])), vec![]);
        // Another reason has its own interval.
        let other = w.poll(at(5000), || totals(&[(Drop::BadTcpChecksum, 70), (Drop::FlowTableFull, 2)]));
        assert_eq!(other, vec![DropWarning { reason: Drop::FlowTableFull, dropped: 2, over: Duration::from_secs(5) }]);
        // 10 s after its warning: everything since, in one line.
        let again = w.poll(at(11_000), || totals(&[(Drop::BadTcpChecksum, 100), (Drop::FlowTableFull, 2)]));
        assert_eq!(again, vec![DropWarning { reason: Drop::BadTcpChecksum, dropped: 97, over: Duration::from_secs(10) }]);
        // Quiet reasons stay quiet.
        assert_eq!(w.poll(at(30_000), || totals(&[(Drop::BadTcpChecksum, 100), (Drop::FlowTableFull, 2)])), vec![]);
    }

    #[test]
    fn the_warning_is_a_line_no_script_mistakes_for_the_final_drops_line() {
        let w = DropWarning { reason: Drop::BadTcpChecksum, dropped: 97, over: Duration::from_secs(10) };
        let human = capture(Format::Human, "info", || w.log());
        assert_eq!(
            human,
            "flowtwin: warning: 97 frame(s) dropped as bad_tcp_checksum in the last 10 s (flowtwin_drops_total{reason=\"bad_tcp_checksum\"})\n"
        );
        // tests/e2e/{workers,interop}.sh take the first `^flowtwin: drops:` line as the final summary.
        assert!(!human.starts_with("flowtwin: drops:"));
        let json: serde_json::Value = serde_json::from_str(capture(Format::Json, "info", || w.log()).trim()).unwrap();
        assert_eq!((&json["event"], &json["reason"], &json["dropped"], &json["seconds"]), (&"drops".into(), &"bad_tcp_checksum".into(), &97.into(), &10.into()));
        assert_eq!(json["level"], "WARN");
    }
}
