#!/usr/bin/env python3
"""Unit tests of the e2e harness's own arithmetic (no rig, no engine); scripts/test runs them.

  python3 tests/e2e/test_harness.py      # prints "N passed, M failed" last
"""
import os
import sys
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the checkout

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clients  # noqa: E402


class ProgressWait(unittest.TestCase):
    def test_a_rate_limited_flow_sleeping_after_an_early_burst_is_not_waiting(self):
        # 1 000 B/s since t=0: on schedule at 1.0 s, then a 2 000 B burst puts it 2 s ahead;
        # the 1.99 s gap that follows is the client's own sleep.
        p = clients.Progress(0.0, rate=1000.0)
        p.add(1000, 1.0)
        p.add(3000, 1.01)
        p.add(3100, 3.0)
        self.assertAlmostEqual(p.max_mid_gap, 1.99, places=6)
        self.assertAlmostEqual(p.max_mid_wait, 0.01, places=6)  # only the 10 ms before the burst

    def test_a_gap_beyond_the_schedule_is_a_wait(self):
        # At 1.01 s with 3 200 B the flow is 2.19 s ahead; nothing comes until 4.5 s: of the
        # 3.49 s gap it slept 2.19 s and waited 1.3 s.
        p = clients.Progress(0.0, rate=1000.0)
        p.add(1000, 1.0)
        p.add(3200, 1.01)
        p.add(3300, 4.5)
        self.assertAlmostEqual(p.max_mid_gap, 3.49, places=6)
        self.assertAlmostEqual(p.max_mid_wait, 1.3, places=6)

    def test_a_flow_behind_its_schedule_waits_the_whole_gap(self):
        p = clients.Progress(0.0, rate=1000.0)
        p.add(500, 1.0)
        p.add(600, 1.8)
        self.assertAlmostEqual(p.max_mid_wait, 0.8, places=6)

    def test_without_a_rate_every_gap_is_a_wait(self):
        p = clients.Progress(0.0)
        p.add(1000, 1.0)
        p.add(3000, 1.01)
        p.add(3100, 3.0)
        self.assertAlmostEqual(p.max_mid_wait, p.max_mid_gap, places=9)

    def test_the_gap_before_the_first_byte_is_neither(self):
        p = clients.Progress(0.0, rate=1000.0)
        p.add(100, 2.5)
        self.assertEqual((p.max_mid_gap, p.max_mid_wait), (0.0, 0.0))
        self.assertAlmostEqual(p.max_gap, 2.5, places=6)


if __name__ == "__main__":
    r = unittest.main(exit=False, verbosity=2).result
    bad = len(r.failures) + len(r.errors)
    print(f"{r.testsRun - bad} passed, {bad} failed")
    sys.exit(1 if bad else 0)
