#!/usr/bin/env python3
"""Evaluate one failover run (used by failover.sh, scripts/soak, scripts/demo). Prints one JSON line.

  failover_eval.py --clients dl.json[:dl.trace] --clients echo.json[:echo.trace] --rst rst.json
                   [--event kill=EPOCH_S] [--event failback=EPOCH_S] [--log b=b.log] [--log a=a2.log]
                   [--status b=b_status.json] ...

clients JSON come from ftclients.py (clients.py + t_start_wall); traces from its --trace;
logs are engine stdout+stderr stamped by stamp.py ("<epoch_s> <line>").
For every event E (a wall-clock time):
  E_takeover_ms   E -> first `flowtwin: TAKEOVER` line stamped at or after E (any log); with the
                  line's reason, epoch, flow count and whether the standby was in sync;
  E_outage_ms     the longest gap (any flow still running at E) that starts in [E, E+0.5 s]
                  (a flow's gap that spans E counts from E; a --rate-limited flow ahead of its
                  schedule counts from when it fell back on it, as max_midflow_wait_ms);
  E_resume_ms     E -> the end of that gap: the client's view of the takeover (the worst flow
                  made progress again).
  E_baseline_gap_ms  the longest gap in the second before E (the clients' own pacing, e.g. curl
                  --limit-rate reads in bursts).
Over all clients: max_stall_ms / max_midflow_stall_ms (the longest gap in a flow's progress,
with / without the one before its first byte) and max_midflow_wait_ms (the same, less the time
a rate-limited flow was ahead of its schedule: see clients.py).
"""
import argparse
import json
import os
import re
import sys

sys.dont_write_bytecode = True  # it imports clients.py, evallib.py: no __pycache__ in the checkout
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clients import schedule_lead  # noqa: E402
from evallib import last_json  # noqa: E402

TK = re.compile(r"^(\d+\.\d+) flowtwin: TAKEOVER \(epoch (\d+), (\w+), (\d+) flow\(s\), standby was (NOT )?in sync\)")


def load_trace(path, t0, rate=None):
    """Per flow: [(wall time, bytes)], plus the flow's start and its --rate (None: unpaced)."""
    flows = []
    try:
        with open(path) as f:
            for ln in f:
                d = json.loads(ln)
                flows.append(([(t0 + t, b) for t, b in d["events"]], t0, rate))
    except (OSError, ValueError):
        pass
    return flows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", action="append", default=[])
    ap.add_argument("--rst")
    ap.add_argument("--uem", help="tests/e2e/uem.py's summary: the client's RSTs it redirected past the capture")
    ap.add_argument("--event", action="append", default=[])
    ap.add_argument("--log", action="append", default=[])
    ap.add_argument("--status", action="append", default=[])
    a = ap.parse_args()

    out = {"flows": 0, "completed": 0, "failed": [], "max_stall_ms": 0.0, "max_midflow_stall_ms": 0.0,
           "max_midflow_wait_ms": 0.0, "client_summaries": 0}
    traces = []
    for spec in a.clients:
        js, _, tr = spec.partition(":")
        s = last_json(js)
        if s is None:
            out["failed"].append({"error": f"no client summary in {js}"})
            continue
        out["client_summaries"] += 1
        out["flows"] += s["flows"]
        out["completed"] += s["completed_byte_exact"]
        out["failed"] += [{"kind": s.get("kind"), **f} for f in s["failed"][:3]]
        out["max_stall_ms"] = max(out["max_stall_ms"], s["max_stall_ms"])
        out["max_midflow_stall_ms"] = max(out["max_midflow_stall_ms"], s["max_midflow_stall_ms"])
        out["max_midflow_wait_ms"] = max(out["max_midflow_wait_ms"],
                                         s.get("max_midflow_wait_ms", s["max_midflow_stall_ms"]))
        if tr and "t_start_wall" in s:
            traces += load_trace(tr, s["t_start_wall"], s.get("rate"))
    out["failed_count"] = out["flows"] - out["completed"]
    r = last_json(a.rst) if a.rst else None
    # Every RST counts. Those to or from a connection that had finished (FIN both ways,
    # rstcount's after_close) are also counted apart: they cannot abort a transfer, but a
    # correct engine draws none (issue 12: the client's kernel answered a second ACK from
    # TIME-WAIT, its connection gone), and the harness once allowed them and so hid that.
    out["resets_after_close"] = r.get("rst_in_after_close", 0) + r.get("rst_out_after_close", 0) if r else None
    out["resets"] = r["rst_in"] + r.get("rst_out", 0) if r else None
    # While tests/e2e/uem.py impairs the client link, the client's own frames bypass that
    # capture: uem counts the RSTs among them.
    u = last_json(a.uem) if a.uem else None
    out["resets_impaired"] = u.get("rst") if u else None
    if out["resets"] is not None and u:
        out["resets"] += u.get("rst", 0)
    out["rst_capture_drops"] = r.get("kernel_drops") if r else None
    out["rst_sample"] = (r["first"][:3] if r else []) + ((u.get("rst_first") or [])[:3] if u else [])

    tk = []
    for spec in a.log:
        name, _, path = spec.partition("=")
        try:
            with open(path, errors="replace") as f:
                for ln in f:
                    m = TK.match(ln)
                    if m:
                        tk.append((float(m.group(1)), name, int(m.group(2)), m.group(3), int(m.group(4)), not m.group(5)))
        except OSError:
            pass
    tk.sort()
    out["takeover_lines"] = len(tk)
    if a.event:
        t_first = min(float(e.partition("=")[2]) for e in a.event)
        out["takeovers_before_event"] = [{"engine": x[1], "at": x[0], "epoch": x[2], "reason": x[3], "flows": x[4],
                                          "s_before_event": round(t_first - x[0], 3)} for x in tk if x[0] < t_first]
    for spec in a.event:
        name, _, t = spec.partition("=")
        t = float(t)
        out[f"{name}_at"] = t
        first = next((x for x in tk if x[0] >= t), None)
        if first:
            out[f"{name}_takeover_ms"] = round((first[0] - t) * 1000, 1)
            out[f"{name}_takeover"] = {"engine": first[1], "epoch": first[2], "reason": first[3],
                                       "flows": first[4], "in_sync": first[5]}
        else:
            out[f"{name}_takeover_ms"] = None
        resume, outage, running = t, 0.0, 0
        for ev, f0, rate in traces:
            if not ev or ev[-1][0] <= t:
                continue  # finished before the event
            running += 1
            best = None
            # the outage starts at the event (plus what is in flight / buffered on the client);
            # a rate-limited flow ahead of its schedule was asleep until it fell back on it
            for (t1, b1), (t2, _b2) in zip(ev, ev[1:]):
                if t2 <= t or t1 >= t + 0.5:
                    continue
                wake = t1 + max(0.0, schedule_lead(b1, rate, t1, f0)) if b1 > 0 else t1
                g = t2 - max(wake, t)
                if g <= 0:
                    continue
                if best is None or g > best[0]:
                    best = (g, t2)
            if best and best[0] > outage:
                outage, resume = best
        base = 0.0  # longest gap fully inside the second before the event: the clients' own pacing
        for ev, _f0, _rate in traces:
            for (t1, b1), (t2, _b2) in zip(ev, ev[1:]):
                if t1 >= t - 1.0 and t2 <= t and b1 > 0:
                    base = max(base, t2 - t1)
        out[f"{name}_baseline_gap_ms"] = round(base * 1000, 1)
        # Without traces (tests/e2e/lives.py) nothing is known of which flows ran at the event.
        out[f"{name}_flows_running"] = running if traces else None
        out[f"{name}_resume_ms"] = round((resume - t) * 1000, 1) if running else None
        out[f"{name}_outage_ms"] = round(outage * 1000, 1) if running else None
    for spec in a.status:
        name, _, path = spec.partition("=")
        s = last_json(path)
        if s is not None:
            s.pop("flows", None)
        out[f"status_{name}"] = s
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
