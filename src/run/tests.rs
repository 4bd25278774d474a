//! Unit tests of `run`: the queue layout and the takeover log line.

mod layout_tests {
    use super::super::layout;

    #[test]
    fn queue_per_worker_when_the_device_has_them() {
        let l = layout(2, 2, 2);
        assert_eq!((l.rx_queues, l.tx_queues, l.rx_fanout, l.tx_fanin), (2, 2, false, false));
        let l = layout(4, 64, 64);
        assert_eq!((l.rx_queues, l.tx_queues, l.rx_fanout, l.tx_fanin), (4, 4, false, false));
        let l = layout(1, 1, 1);
        assert_eq!((l.rx_queues, l.tx_queues, l.rx_fanout, l.tx_fanin), (1, 1, false, false));
    }

    #[test]
    fn software_distribution_when_queues_are_missing() {
        // af_packet qpairs=1 with two workers: one queue pair, worker 0 fans out and in.
        let l = layout(2, 1, 1);
        assert_eq!((l.rx_queues, l.tx_queues, l.rx_fanout, l.tx_fanin), (1, 1, true, true));
        // One RX queue but a TX queue per worker: every worker transmits on its own.
        let l = layout(2, 1, 2);
        assert_eq!((l.rx_queues, l.tx_queues, l.rx_fanout, l.tx_fanin), (1, 2, true, false));
        // Enough RX queues, too few TX queues: hardware RX, TX through worker 0.
        let l = layout(4, 4, 2);
        assert_eq!((l.rx_queues, l.tx_queues, l.rx_fanout, l.tx_fanin), (4, 1, false, true));
    }
}

mod log_tests {
    use flowtwin_sync::TakeoverReason;

    use super::super::log_takeover;
    use crate::logs::testing::capture;
    use crate::logs::Format;

    /// The line `tests/e2e/failover_eval.py` (`^<stamp> flowtwin: TAKEOVER \(epoch (\d+), (\w+),
    /// (\d+) flow\(s\), standby was (NOT )?in sync\)`) and the e2e greps read, unchanged.
    #[test]
    fn the_takeover_line_is_the_legacy_one() {
        let out = capture(Format::Human, "info", || log_takeover(7, TakeoverReason::HeartbeatTimeout, 42, true, false, "web"));
        assert_eq!(out, "flowtwin: TAKEOVER (epoch 7, HeartbeatTimeout, 42 flow(s), standby was in sync): announcing the VIPs and resuming\n");
        let out = capture(Format::Human, "info", || log_takeover(3, TakeoverReason::HandoverFallback, 0, false, true, "web"));
        assert_eq!(out, "flowtwin: TAKEOVER (epoch 3, HandoverFallback, 0 flow(s), standby was NOT in sync): announcing the VIPs and resuming\n");
        // A takeover is a warning: a filter of `warn` keeps it.
        assert!(capture(Format::Human, "warn", || log_takeover(7, TakeoverReason::PeerClosed, 1, true, false, "web")).contains("TAKEOVER"));
    }

    #[test]
    fn the_takeover_event_in_json_carries_its_fields() {
        let out = capture(Format::Json, "info", || log_takeover(7, TakeoverReason::HeartbeatTimeout, 42, false, false, "web,api"));
        assert_eq!(out.lines().count(), 1, "{out}");
        let j: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(j["event"], "takeover");
        assert_eq!(j["level"], "WARN");
        assert_eq!(j["groups"], "web,api");
        assert_eq!(j["epoch"], 7);
        assert_eq!(j["reason"], "HeartbeatTimeout");
        assert_eq!(j["flows"], 42);
        assert_eq!(j["in_sync"], false);
        assert_eq!(j["retained"], false);
        assert_eq!(j["target"], "flowtwin::run");
        assert!(j["message"].as_str().unwrap().starts_with("TAKEOVER (epoch 7, HeartbeatTimeout, 42 flow(s), standby was NOT in sync)"), "{j}");
    }
}
