#!/usr/bin/env python3
"""Unit tests of the e2e harness's own arithmetic (no rig, no engine); scripts/test runs them.

  python3 tests/e2e/test_harness.py      # prints "N passed, M failed" last
"""
import os
import subprocess
import tempfile
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


class TestScriptCounting(unittest.TestCase):
    """scripts/test_lib.sh: a crashed or silent step must count as a failure (issue 12 #5)."""

    ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    def count(self, func, log_text, *args):
        with tempfile.NamedTemporaryFile("w", suffix=".log", delete=False) as f:
            f.write(log_text)
            path = f.name
        try:
            out = subprocess.run(
                ["bash", "-c", f'source "$0"; passed=0; failed=0; {func} "$@" >/dev/null; echo "$passed $failed"',
                 os.path.join(self.ROOT, "scripts", "test_lib.sh"), path, *args],
                check=True, capture_output=True, text=True).stdout.split()
        finally:
            os.unlink(path)
        return int(out[0]), int(out[1])

    CLEAN = ("     Running unittests src/lib.rs (target/release/deps/a-1)\n"
             "test result: ok. 5 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n"
             "     Running tests/x.rs (target/release/deps/x-2)\n"
             "test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n"
             "   Doc-tests a\n"
             "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n")

    def test_clean_cargo_run_counts_its_tests(self):
        self.assertEqual(self.count("count_cargo", self.CLEAN, "0"), (7, 0))

    def test_a_test_binary_killed_by_a_signal_is_a_failure(self):
        crashed = ("     Running unittests src/lib.rs (target/release/deps/a-1)\n"
                   "test result: ok. 5 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n"
                   "     Running tests/ffi.rs (target/release/deps/ffi-3)\n"
                   "error: test failed, to rerun pass `-p flowtwin-ffi --test ffi`\n"
                   "Caused by:\n  process didn't exit successfully (signal: 11, SIGSEGV: invalid memory reference)\n")
        self.assertEqual(self.count("count_cargo", crashed, "101"), (5, 1))

    def test_a_nonzero_status_without_a_failing_test_is_a_failure(self):
        self.assertEqual(self.count("count_cargo", self.CLEAN, "101"), (7, 1))

    def test_a_run_without_test_binaries_is_a_failure(self):
        self.assertEqual(self.count("count_cargo", "error: could not compile `x`\n", "101"), (0, 1))

    def test_a_failing_test_is_counted_once(self):
        log = self.CLEAN.replace("2 passed; 0 failed", "1 passed; 1 failed")
        self.assertEqual(self.count("count_cargo", log, "101"), (6, 1))

    def test_suite_summary_is_added(self):
        self.assertEqual(self.count("count_summary", "PASS a (x)\n3 passed, 1 failed\n", "suite", "1"), (3, 1))

    def test_suite_without_a_summary_is_a_failure(self):
        self.assertEqual(self.count("count_summary", "PASS a (x)\nSegmentation fault\n", "suite", "139"), (0, 1))

    def test_suite_exiting_nonzero_behind_a_clean_summary_is_a_failure(self):
        self.assertEqual(self.count("count_summary", "4 passed, 0 failed\n", "suite", "2"), (4, 1))


if __name__ == "__main__":
    r = unittest.main(exit=False, verbosity=2).result
    bad = len(r.failures) + len(r.errors)
    print(f"{r.testsRun - bad} passed, {bad} failed")
    sys.exit(1 if bad else 0)
