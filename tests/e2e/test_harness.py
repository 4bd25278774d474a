#!/usr/bin/env python3
"""Unit tests of the e2e harness's own arithmetic (no rig, no engine); scripts/test runs them.

  python3 tests/e2e/test_harness.py      # prints "N passed, M failed" last
"""
import json
import os
import subprocess
import tempfile
import sys
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the checkout

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clients  # noqa: E402
import evallib  # noqa: E402


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


class MetricsText(unittest.TestCase):
    """evallib.parse_metrics: the one reader of /metrics, for Python and (through its CLI) shell."""

    TEXT = (
        "# HELP flowtwin_drops_total Frames not answered, by reason.\n"
        "# TYPE flowtwin_drops_total counter\n"
        'flowtwin_drops_total{worker="0",reason="bad_tcp_checksum"} 7\n'
        'flowtwin_drops_total{worker="1",reason="bad_tcp_checksum"} 5\n'
        'flowtwin_drops_total{worker="0",reason="no_flow"} 2\n'
        "# a comment that is neither HELP nor TYPE\n"
        "\n"
        "flowtwin_up 1\n"
        "flowtwin_up_extra 9\n"
        'flowtwin_service_bytes_out_total{service="198.18.0.100:80",kind="object"} 1.5e8\n'
        'flowtwin_odd{path="a b,c}\\"d"} 3 1700000000000\n'
        "# TYPE flowtwin_output_hold_us histogram\n"
        'flowtwin_output_hold_us_bucket{le="50"} 3\n'
        'flowtwin_output_hold_us_bucket{le="100"} 8\n'
        'flowtwin_output_hold_us_bucket{le="+Inf"} 10\n'
        "flowtwin_output_hold_us_sum 812.5\n"
        "flowtwin_output_hold_us_count 10\n"
        "flowtwin_ratio NaN\n"
        "flowtwin_max +Inf\n"
        "flowtwin_min -Inf\n"
        "not a sample line\n")

    def setUp(self):
        self.s = evallib.parse_metrics(self.TEXT)

    def test_comments_help_type_and_blank_lines_are_not_samples(self):
        self.assertEqual(len(self.s), 15)  # "not a sample line" is not one either
        self.assertFalse(any(n.startswith("#") for n, _, _ in self.s))

    def test_labels_and_sums(self):
        self.assertEqual(evallib.metric_sum(self.s, "flowtwin_drops_total"), 14)
        self.assertEqual(evallib.metric_sum(self.s, "flowtwin_drops_total", {"reason": "bad_tcp_checksum"}), 12)
        self.assertEqual(evallib.metric_sum(self.s, "flowtwin_drops_total", {"worker": "0", "reason": "no_flow"}), 2)
        self.assertEqual(evallib.metric_sum(self.s, "flowtwin_drops_total", {"reason": "nothing"}), 0)
        self.assertEqual(evallib.metric_sum(self.s, "flowtwin_up"), 1)  # not flowtwin_up_extra
        self.assertEqual(evallib.metric_sum(self.s, "flowtwin_service_bytes_out_total",
                                            {"service": "198.18.0.100:80"}), 150000000)

    def test_quoted_label_values_and_timestamps(self):
        odd = [(lab, v) for n, lab, v in self.s if n == "flowtwin_odd"]
        self.assertEqual(odd, [({"path": 'a b,c}"d'}, 3.0)])

    def test_histogram_buckets_and_special_values(self):
        self.assertEqual(evallib.buckets(self.s, "flowtwin_output_hold_us"), [("50", 3), ("100", 8), ("+Inf", 10)])
        self.assertEqual(evallib.metric_sum(self.s, "flowtwin_output_hold_us_count"), 10)
        self.assertEqual(evallib.metric_sum(self.s, "flowtwin_max"), float("inf"))
        self.assertEqual(evallib.metric_sum(self.s, "flowtwin_min"), float("-inf"))
        self.assertTrue(evallib.metric_sum(self.s, "flowtwin_ratio") != evallib.metric_sum(self.s, "flowtwin_ratio"))

    def test_the_cli_that_the_shell_suites_call(self):
        with tempfile.TemporaryDirectory() as d:
            a, b = os.path.join(d, "a"), os.path.join(d, "b")
            open(a, "w").write(self.TEXT)
            open(b, "w").write(self.TEXT.replace('reason="no_flow"} 2', 'reason="no_flow"} 12'))
            cli = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "evallib.py")]
            run = lambda *a: subprocess.run(cli + list(a), check=True, capture_output=True, text=True).stdout.strip()
            self.assertEqual(run("metric", a, "flowtwin_drops_total", "worker=0"), "9")
            self.assertEqual(run("metric", a, "flowtwin_absent"), "0")
            self.assertEqual(run("metric", os.path.join(d, "missing"), "flowtwin_up"), "0")
            self.assertEqual(run("delta", a, b, "flowtwin_drops_total", "reason=no_flow"), "10")
            self.assertEqual(run("buckets", a, "flowtwin_output_hold_us"), "50:3,100:8,+Inf:10")
            self.assertEqual(run("buckets", a, "flowtwin_absent"), "")
            self.assertIsNone(evallib.metric(os.path.join(d, "missing"), "flowtwin_up"))
            self.assertEqual(evallib.metric(a, "flowtwin_drops_total", {"worker": "1"}), 5)


class LastJson(unittest.TestCase):
    """evallib.last_json: how proxy_eval.py and failover_eval.py read every summary file."""

    def test_the_last_object_line_wins_and_other_lines_are_skipped(self):
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "s.json")
            open(p, "w").write('{"a": 1}\nnoise\n  {"a": 2}\ntrailing text\n\n')
            self.assertEqual(evallib.last_json(p), {"a": 2})
            open(p, "w").write("no json here\n")
            self.assertIsNone(evallib.last_json(p))
            open(p, "w").write('{"a": 1}\n{"cut": \n')
            self.assertIsNone(evallib.last_json(p))  # a torn last line: no summary, not the one before
            self.assertIsNone(evallib.last_json(os.path.join(d, "missing")))


class FailoverEvalResets(unittest.TestCase):
    """failover_eval.py: every RST the client capture saw counts, also one to or from a
    connection closed both ways (issue 12: allowing those hid a second ACK from TIME-WAIT);
    those are also counted apart."""

    FE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "failover_eval.py")

    def test_a_rst_after_the_close_counts(self):
        with tempfile.TemporaryDirectory() as d:
            cl, rst = os.path.join(d, "lives.json"), os.path.join(d, "rst.json")
            open(cl, "w").write(json.dumps({"flows": 3, "completed_byte_exact": 3, "failed": [], "max_stall_ms": 1.0,
                                            "max_midflow_stall_ms": 1.0}) + "\n")
            open(rst, "w").write(json.dumps({"rst_in": 0, "rst_out": 1, "rst_in_after_close": 0, "rst_out_after_close": 1,
                                             "kernel_drops": 0, "first": []}) + "\n")
            out = subprocess.run([sys.executable, self.FE, "--clients", cl, "--rst", rst], check=True,
                                 capture_output=True, text=True).stdout
            s = json.loads(out.strip().splitlines()[-1])
            self.assertEqual((s["resets"], s["resets_after_close"]), (1, 1))


class TransfersVerdict(unittest.TestCase):
    """evallib.transfers_verdict: byte-exact transfers and a client capture without RST."""

    def verdict(self, s):
        bad = []
        evallib.transfers_verdict(s, bad)
        return bad

    def test_all_byte_exact_and_no_rst_is_clean(self):
        self.assertEqual(self.verdict({"flows": 8, "completed": 8, "resets": 0}), [])

    def test_each_fault_is_named(self):
        self.assertEqual(self.verdict({"flows": 8, "completed": 7, "resets": 2}),
                         ["1 of 8 transfer(s) not byte-exact", "2 RST(s) seen by the client"])
        self.assertIn("no rstcount output", self.verdict({"flows": 8, "completed": 8}))
        self.assertIn("0 of None transfer(s) not byte-exact", self.verdict({"resets": 0}), "no flows at all is a fault")


class ProxyBench(unittest.TestCase):
    """tests/e2e/proxybench.py (scripts/bench-proxy): what a kill cost each system, and the ratios."""

    PB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "proxybench.py")

    def run_pb(self, *args):
        return subprocess.run([sys.executable, self.PB, *args], check=True, capture_output=True, text=True).stdout

    def write(self, d, name, obj):
        path = os.path.join(d, name)
        with open(path, "w") as f:
            f.write(obj if isinstance(obj, str) else json.dumps(obj) + "\n")
        return path

    def killrow(self, d, clients, srv, log=""):
        return json.loads(self.run_pb(
            "killrow", "--config", "haproxy", "--run", "1", "--clients", self.write(d, "c.json", clients),
            "--eval", self.write(d, "e.json", {"rst_client": 3, "rst_backend": 0}), "--srv", self.write(d, "s.json", srv),
            "--kill-t", "100.0", "--takeover-log", self.write(d, "ka.log", log), "--takeover-re", "Entering MASTER STATE"))

    CLIENTS = {"flows": 4, "ok": 2, "by_kind": {"curl10": {"flows": 1, "ok": 1}, "echo": {"flows": 2, "ok": 1},
                                                "short_get": {"flows": 1, "ok": 0}},
               "connections": {"http": {"v:8080": 1}, "echo": {"v:9000": 2}, "upload": {}},
               "long_flows": [{"kind": "curl10", "ok": True, "t_done_wall": 99.0},
                              {"kind": "echo", "ok": True, "t_done_wall": 101.0},
                              {"kind": "echo", "ok": False, "t_done_wall": 130.0}],
               "failed_errors": {"echo: echo N bytes: connection reset at N of N (sent N)": 1,
                                 "short_get: GET /gen/N + close: timeout waiting for EOF after body": 1}}

    def test_a_kill_row_counts_in_flight_losses_reconnects_and_a_spurious_takeover(self):
        srv = {"final": True, "nginx": {"accepts": 2}, "open_at_end": {"http": 0, "echo": 1, "upload": 0},
               "services": {"echo": {"a": {"connections": 2}, "b": {"connections": 1}}, "upload": {}}}
        log = "90.000000 x Entering MASTER STATE\n100.040000 x Entering MASTER STATE\n"
        with tempfile.TemporaryDirectory() as d:
            r = self.killrow(d, self.CLIENTS, srv, log)
        self.assertEqual((r["long_in_flight"], r["long_in_flight_lost"], r["lost"], r["short_lost"]), (2, 1, 2, 1))
        self.assertEqual(r["lost_by"], {"reset": 1, "timeout": 1})
        # echo: 3 accepted for 2 connects; http: nginx's accepts, every curl ended by itself
        self.assertEqual(r["backend_minus_client_connections"], {"http": 1, "echo": 1, "upload": 0})
        self.assertEqual(r["backend_reconnects"], 2)
        self.assertEqual((r["takeover_ms"], r["spurious_takeovers"]), (40.0, 1))

    def test_http_reconnects_are_not_counted_when_a_curl_failed(self):
        c = dict(self.CLIENTS, by_kind=dict(self.CLIENTS["by_kind"], curl10={"flows": 1, "ok": 0}))
        with tempfile.TemporaryDirectory() as d:
            r = self.killrow(d, c, {"final": True, "nginx": {"accepts": 5}, "services": {}})
        self.assertIsNone(r["backend_minus_client_connections"]["http"])
        self.assertIsNone(r["takeover_ms"])

    def test_errors_are_classified_from_their_normalized_text(self):
        sys.path.insert(0, os.path.dirname(self.PB))
        import proxybench
        for text, cls in (("curl httpN GET /gen/N: curl exit N at N bytes: curl: (N) Recv failure: Connection reset by pe", "reset"),
                          ("upload N bytes: send: broken pipe at N of N", "reset"),
                          ("timeout: GET /gen/N HTTP/N.N, N bytes moved", "timeout"),
                          ("curl: (N) transfer closed with N bytes remaining", "eof"),
                          ("upload digest mismatch: server said b'', sent b'ab N'", "eof"),
                          ("echo byte mismatch at N of N", "corrupt"),
                          ("connect N.N.N.N:N: connection refused", "refused")):
            self.assertEqual(proxybench.classify(text), cls, text)

    def test_the_summary_gives_the_ratios_to_haproxy(self):
        rows = [{"config": c, "round": 1, "test": "conn-ab", "conns_per_s": v, "per_rig_cpu_s": v / 2, "failed": 0}
                for c, v in (("off", 3000.0), ("strict", 2000.0), ("haproxy", 2500.0))]
        with tempfile.TemporaryDirectory() as d:
            out = self.run_pb("summary", self.write(d, "r.jsonl", "".join(json.dumps(r) + "\n" for r in rows)))
        s = json.loads(out.strip().splitlines()[-1])["bench_proxy"]["conn-ab"]
        self.assertEqual((s["ratio_off_haproxy"], s["ratio_strict_haproxy"], s["ratio_strict_off"]), (1.2, 0.8, 0.667))
        self.assertEqual(s["ratio_off_haproxy_per_rig_cpu"], 1.2)
        self.assertIn("off/haproxy 1.2", out)


class House(unittest.TestCase):
    """scripts/house finds a sibling cycle and a long file, and lets a module split over files be."""
    HOUSE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "house")

    def tree(self, files):
        d = tempfile.mkdtemp()
        for rel, text in files.items():
            os.makedirs(os.path.dirname(os.path.join(d, rel)), exist_ok=True)
            with open(os.path.join(d, rel), "w") as f:
                f.write(text)
        return d

    def run_house(self, d):
        p = subprocess.run([sys.executable, self.HOUSE, "--root", d], capture_output=True, text=True)
        return p.returncode, p.stdout

    def test_clean_tree_with_a_split_module(self):
        d = self.tree({"src/main.rs": "mod a;\nmod b;\nfn main() { a::f(); }\n",
                       "src/a.rs": "mod inner;\nuse crate::b::B;\npub fn f() { inner::g(); }\n",
                       "src/a/inner.rs": "use super::f;\npub fn g() {}\n",
                       "src/b.rs": "pub struct B;\n#[cfg(test)]\nmod tests {\n    use crate::a::f;\n}\n"})
        rc, out = self.run_house(d)
        self.assertEqual(rc, 0, out)

    def test_sibling_cycle_and_long_file(self):
        d = self.tree({"src/main.rs": "mod a;\nmod b;\nfn main() {}\n",
                       "src/a.rs": "use crate::b::{B, other::{C}};\n",
                       "src/b.rs": "pub struct B;\nfn x() { crate::a::f(); }\n" + "//\n" * 801})
        rc, out = self.run_house(d)
        self.assertEqual(rc, 1, out)
        self.assertIn("import cycle among src/a.rs, src/b.rs", out)
        self.assertIn("src/b.rs: 803 lines", out)


if __name__ == "__main__":
    r = unittest.main(exit=False, verbosity=2).result
    bad = len(r.failures) + len(r.errors)
    print(f"{r.testsRun - bad} passed, {bad} failed")
    sys.exit(1 if bad else 0)
