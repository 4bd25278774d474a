#!/usr/bin/env python3
"""The arithmetic of scripts/bench-proxy (Python 3.11 stdlib): CPU snapshots, one JSON row per
test or kill run, and the summaries with the flowtwin/HAProxy ratios.

  proxybench.py cpu [--proxy PID,...] [--backend PID,...] [--shell PID]
      one JSON line: the machine's busy and total clock ticks (/proc/stat, all CPUs), the
      utime+stime ticks of the proxy's processes and of the backends' (every thread), the
      children's ticks of the shell PID (its waited-for clients) and of the ksoftirqd threads
  proxybench.py ab FILE            ApacheBench's output -> {"conns","failed","conns_per_s",...}
  proxybench.py row --config C --round R --test T --client F --t0 T --t1 T --cpu0 J --cpu1 J
      [--srv0 F --srv1 F] [--metrics0 F --metrics1 F] [--link0 N --link1 N --idle-link-bps X]
      [--tko0 N --tko1 N]              one throughput/connrate test -> one JSON line
  proxybench.py summary RESULTS    the rows -> a line per test, then one JSON object
  proxybench.py killrow --config C --run N --clients F --eval F --srv F --kill-t T
      [--takeover-log F --takeover-re RE] [--status F] [--delay S]   one kill run -> one JSON line
  proxybench.py killsummary FILE   the kill rows -> a line per system, then one JSON object

Units: MB are 10^6 bytes. "per rig CPU-s" divides a test's units by the CPU seconds of everything
the rig ran during it: the proxy's processes, the backends' (every process in their namespace),
the clients (the children the driver waited for: cutime/cstime of its shell, --shell) and the
kernel's ksoftirqd threads; what else runs on the machine (a build, another suite) is left out,
so it is the count this shared VM moves least. "per proxy CPU-s" divides a test's units (MB, connections) by the
CPU seconds the proxy's processes used during it (HAProxy; engine A, plus B in strict): a
count, not wall clock, so another load on the machine does not move it much. It does include
what the kernel runs inside the proxy's system calls (for veths: the peer's receive path), and
a polling engine's worker counts as busy whenever it is not asleep. "per machine CPU-s" divides
by the busy time of the whole machine (clients, backends, proxy, kernel).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import evallib  # noqa: E402

HZ = os.sysconf("SC_CLK_TCK")
# the engine's proxy failure counters that a clean run leaves at 0 (as tests/e2e/proxy_eval.py)
ZERO_COUNTERS = ["proxy_no_backend", "proxy_connect_failed", "proxy_resets_propagated", "link_orphans"]
CONFIG_ORDER = ["off", "strict", "async", "haproxy", "direct"]
MAIN = {"download": "MB_s", "echo": "MB_s", "conn": "conns_per_s", "conn-ab": "conns_per_s"}
LABEL = {"download": "downloads, MB/s", "echo": "echo, MB/s", "conn": "connrate.py conn/s", "conn-ab": "ab conn/s"}


def last_json(path: str | None) -> dict:
    if not path:
        return {}
    try:
        lines = [ln for ln in open(path).read().strip().splitlines() if ln.strip().startswith("{")]
        return json.loads(lines[-1]) if lines else {}
    except (OSError, ValueError):
        return {}


def ticks(pid: str) -> int:
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return int(f[11]) + int(f[12])  # utime + stime of the whole thread group
    except (OSError, IndexError, ValueError):
        return 0


def pids(spec: str | None) -> list[str]:
    return [p for p in (spec or "").replace(" ", ",").split(",") if p.isdigit()]


def child_ticks(pid: str) -> int:
    """cutime + cstime: what the children that PID waited for used (the clients of a test)."""
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return int(f[13]) + int(f[14])
    except (OSError, IndexError, ValueError):
        return 0


def softirq_pids() -> list[str]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if open(f"/proc/{d}/comm").read().startswith("ksoftirqd/"):
                    out.append(d)
            except OSError:
                pass
    return out


def cmd_cpu(a) -> int:
    c = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    idle = c[3] + c[4]
    print(json.dumps({"busy": sum(c) - idle, "total": sum(c),
                      "proxy": {p: ticks(p) for p in pids(a.proxy)},
                      "backend": {p: ticks(p) for p in pids(a.backend)},
                      "clients": child_ticks(a.shell) if a.shell else 0,
                      "softirq": sum(ticks(p) for p in softirq_pids())}))
    return 0


def cmd_ab(a) -> int:
    t = open(a.file).read()

    def g(k):
        m = re.search(k + r":\s+([0-9.]+)", t)
        return float(m[1]) if m else 0.0
    bad = int(g("Failed requests")) + int(g("Non-2xx responses"))
    if "Complete requests" in t:
        print(json.dumps({"conns": int(g("Complete requests")) - bad, "failed": bad,
                          "conns_per_s": g("Requests per second"), "duration_s": g("Time taken for tests"),
                          "latency_ms": {"mean": g("Time per request")}, "clients": int(g("Concurrency Level"))}))
    else:
        print(json.dumps({"error": "ab printed no summary: " + t.strip()[-200:], "failed": None}))
    return 0


def srv_conns(s: dict) -> dict:
    """Connections the backends accepted so far, per service (http: nginx's own count)."""
    svc = s.get("services") or {}
    out = {v: sum(e.get("connections", 0) for e in (svc.get(v) or {}).values()) for v in ("echo", "upload")}
    out["http"] = (s.get("nginx") or {}).get("accepts")
    return out


def engine_counters(m0: str | None, m1: str | None) -> dict | None:
    if not m1:
        return None
    try:
        t1 = open(m1).read()
    except OSError:
        return None
    if not t1.strip():
        return None
    s1 = evallib.parse_metrics(t1)
    try:
        s0 = evallib.parse_metrics(open(m0).read()) if m0 else []
    except OSError:
        s0 = []
    return {c: evallib.metric_sum(s1, f"flowtwin_{c}_total") - evallib.metric_sum(s0, f"flowtwin_{c}_total")
            for c in ZERO_COUNTERS}


def rnd(x, n=1):
    return None if x is None else round(x, n)


def cmd_row(a) -> int:
    c = last_json(a.client)
    dur = float(a.t1) - float(a.t0)
    row = {"config": a.config, "round": a.round, "test": a.test, "wall_s": round(dur, 2)}
    if a.test in ("conn", "conn-ab"):
        row.update(conns=c.get("conns"), failed=c.get("failed"), conns_per_s=c.get("conns_per_s"),
                   latency_ms=c.get("latency_ms"), errors=c.get("errors") or c.get("error"))
        units = c.get("conns") or 0
    else:
        b = c.get("bytes_total") or 0
        row.update(flows=c.get("flows"), completed=c.get("completed_byte_exact"),
                   failed=(c.get("flows") or 0) - (c.get("completed_byte_exact") or 0) if c else None,
                   MB_s=round(b / c["duration_s"] / 1e6, 1) if c.get("duration_s") else None, bytes=b,
                   errors=[f.get("error") for f in (c.get("failed") or [])][:3] or c.get("error"))
        units = b / 1e6
    if not c:
        row["error"] = f"no client output in {a.client}"
    c0, c1 = json.loads(a.cpu0), json.loads(a.cpu1)
    busy = (c1["busy"] - c0["busy"]) / HZ
    row["machine_busy_pct"] = rnd(100 * (c1["busy"] - c0["busy"]) / max(1, c1["total"] - c0["total"]))
    pr = sum(c1["proxy"].get(p, 0) - t for p, t in c0["proxy"].items()) / HZ
    bk = sum(c1["backend"].get(p, 0) - t for p, t in c0["backend"].items()) / HZ
    cl = (c1.get("clients", 0) - c0.get("clients", 0)) / HZ
    si = (c1.get("softirq", 0) - c0.get("softirq", 0)) / HZ
    rig = pr + bk + cl + si
    row["proxy_cpu_pct"] = rnd(100 * pr / dur) if c0["proxy"] else None
    row["backend_cpu_pct"] = rnd(100 * bk / dur) if c0["backend"] else None
    row["client_cpu_pct"] = rnd(100 * cl / dur)
    row["softirq_cpu_pct"] = rnd(100 * si / dur)
    row["rig_cpu_pct"] = rnd(100 * rig / dur)
    row["per_rig_cpu_s"] = rnd(units / rig) if rig > 0 and units else None
    row["per_proxy_cpu_s"] = rnd(units / pr) if c0["proxy"] and pr > 0 and units else None
    row["per_machine_cpu_s"] = rnd(units / busy) if busy > 0 and units else None
    if a.srv0 and a.srv1:
        s0, s1 = srv_conns(last_json(a.srv0)), srv_conns(last_json(a.srv1))
        row["backend_connections"] = {k: (s1[k] - s0[k]) if s1.get(k) is not None and s0.get(k) is not None else None
                                      for k in s1}
    ec = engine_counters(a.metrics0, a.metrics1)
    if ec is not None:
        row["engine_failures"] = ec
    if a.link0 is not None and a.link1 is not None:
        net = max(0.0, int(a.link1) - int(a.link0) - float(a.idle_link_bps or 0) * dur)
        if units:
            row["sync_link_bytes_per_" + ("conn" if a.test in ("conn", "conn-ab") else "MB")] = round(net / units, 1)
    if a.tko0 is not None and a.tko1 is not None:
        try:
            row["spurious_takeovers"] = int(float(a.tko1)) - int(float(a.tko0))
        except ValueError:
            row["spurious_takeovers"] = None
    print(json.dumps(row))
    return 0


def med(v):
    v = [x for x in v if isinstance(x, (int, float))]
    return round(statistics.median(v), 1) if v else None


def ratio(x, y):
    return round(x / y, 3) if x and y else None


def cmd_summary(a) -> int:
    rows = [json.loads(ln) for ln in open(a.file) if ln.startswith("{") and '"config"' in ln]
    out = {}
    for t in [t for t in MAIN if any(r["test"] == t for r in rows)]:
        k = MAIN[t]
        rs = [r for r in rows if r["test"] == t]
        cfgs = [c for c in CONFIG_ORDER if any(r["config"] == c for r in rs)]
        d = {"unit": k}
        for c in cfgs:
            rc = [r for r in rs if r["config"] == c]
            d[c] = med([r.get(k) for r in rc])
            d[f"{c}_rounds"] = [r.get(k) for r in rc]
            d[f"{c}_per_rig_cpu_s"] = med([r.get("per_rig_cpu_s") for r in rc])
            d[f"{c}_rig_cpu_pct"] = med([r.get("rig_cpu_pct") for r in rc])
            d[f"{c}_per_proxy_cpu_s"] = med([r.get("per_proxy_cpu_s") for r in rc])
            d[f"{c}_proxy_cpu_pct"] = med([r.get("proxy_cpu_pct") for r in rc])
            d[f"{c}_per_machine_cpu_s"] = med([r.get("per_machine_cpu_s") for r in rc])
            d[f"{c}_machine_busy_pct"] = med([r.get("machine_busy_pct") for r in rc])
        for x, y in (("off", "haproxy"), ("strict", "haproxy"), ("strict", "off"), ("haproxy", "direct")):
            if x in cfgs and y in cfgs:
                d[f"ratio_{x}_{y}"] = ratio(d[x], d[y])
                d[f"ratio_{x}_{y}_per_rig_cpu"] = ratio(d[f"{x}_per_rig_cpu_s"], d[f"{y}_per_rig_cpu_s"])
                if y != "direct":
                    d[f"ratio_{x}_{y}_per_proxy_cpu"] = ratio(d[f"{x}_per_proxy_cpu_s"], d[f"{y}_per_proxy_cpu_s"])
        d["failures"] = sum(r.get("failed") or 0 for r in rs) + sum(1 for r in rs if r.get("error"))
        d["engine_failures"] = sum(sum((r.get("engine_failures") or {}).values()) for r in rs)
        d["spurious_takeovers"] = sum(r.get("spurious_takeovers") or 0 for r in rs)
        out[t] = d
        figs = ", ".join(f"{c} {d[c]}" for c in cfgs)
        rat = ", ".join(f"{x}/{y} {d[f'ratio_{x}_{y}']}" for x, y in (("off", "haproxy"), ("strict", "haproxy"), ("strict", "off"))
                        if f"ratio_{x}_{y}" in d)
        unit = "MB" if k == "MB_s" else "conns"
        rig = ", ".join(f"{c} {d[f'{c}_per_rig_cpu_s']}" for c in cfgs)
        rrat = ", ".join(f"{x}/{y} {d[f'ratio_{x}_{y}_per_rig_cpu']}" for x, y in (("off", "haproxy"), ("strict", "haproxy"), ("strict", "off"))
                         if f"ratio_{x}_{y}" in d)
        cpu = ", ".join(f"{c} {d[f'{c}_per_proxy_cpu_s']} ({d[f'{c}_proxy_cpu_pct']} %)" for c in cfgs if c != "direct")
        print(f"{LABEL[t]}: {figs}" + (f" | {rat}" if rat else "")
              + f" | {unit} per rig CPU-s: {rig}" + (f" ({rrat})" if rrat else "")
              + f" | per proxy CPU-s (its % of a CPU): {cpu} | failures {d['failures']}, engine failure counters {d['engine_failures']:.0f}"
              + (f", spurious takeovers {d['spurious_takeovers']}" if "strict" in cfgs else ""))
    print(json.dumps({"bench_proxy": out}))
    return 0


# ----------------------------------------------------------------------------- kill
def classify(err: str) -> str:
    e = err.lower()
    # (the texts are proxyclients.py's failed_errors keys, digits already N: "curl exit N")
    for key, cls in (("server said b''", "eof"), ("reset", "reset"), ("broken pipe", "reset"), ("refused", "refused"), ("timeout", "timeout"),
                     ("timed out", "timeout"), ("eof", "eof"), ("transfer closed", "eof"), ("closed", "eof"),
                     ("empty reply", "eof"), ("size_download", "eof"), ("mismatch", "corrupt")):
        if key in e:
            return cls
    return "other"


def cmd_killrow(a) -> int:
    cl = last_json(a.clients)
    ev = last_json(a.eval)
    srv = last_json(a.srv)
    st = last_json(a.status)
    kill = float(a.kill_t) if a.kill_t else None
    longf = cl.get("long_flows") or []
    inflight = [f for f in longf if kill is not None and f.get("t_done_wall", 0) > kill]
    by_kind = cl.get("by_kind") or {}
    short = {k: v for k, v in by_kind.items() if k.startswith("short_")}
    classes: dict[str, int] = {}
    for e, n in (cl.get("failed_errors") or {}).items():
        c = classify(e.split(": ", 1)[-1])
        classes[c] = classes.get(c, 0) + n
    # Backend connections beyond the clients' own, per service: echo and upload from the socket
    # clients' connect()s and the servers' accepts; http from nginx's accept count, but only when
    # every curl flow succeeded (a curl killed at the deadline reports no num_connects).
    cc = {svc: sum((cl.get("connections") or {}).get(svc, {}).values()) for svc in ("http", "echo", "upload")}
    sv = srv.get("services") or {}
    bc = {svc: sum(e.get("connections", 0) for e in (sv.get(svc) or {}).values()) for svc in ("echo", "upload")}
    bc["http"] = (srv.get("nginx") or {}).get("accepts")
    curl_ok = all(v.get("ok") == v.get("flows") for k, v in by_kind.items() if k.startswith("curl"))
    extra = {svc: (bc[svc] - cc[svc]) if bc.get(svc) is not None and (svc != "http" or curl_ok) else None
             for svc in ("http", "echo", "upload")}
    flows, ok = cl.get("flows"), cl.get("ok")
    # the standby's takeover: its first line matching --takeover-re after the kill (B's TAKEOVER,
    # the backup keepalived's "Entering MASTER STATE"); one before the kill is a spurious takeover
    # (a starved heartbeat or VRRP advert): the run did not test a clean kill
    takeover, spurious = None, 0
    if a.takeover_log and a.takeover_re and kill is not None:
        try:
            for ln in open(a.takeover_log, errors="replace"):
                m = re.match(r"^(\d+\.\d+) ", ln)
                if not m or not re.search(a.takeover_re, ln):
                    continue
                t = float(m.group(1))
                if t < kill:
                    spurious += 1
                elif takeover is None:
                    takeover = round((t - kill) * 1000, 1)
        except OSError:
            pass
    row = {"config": a.config, "run": a.run, **({"ka_kill": a.ka_kill} if a.ka_kill else {}),
           "kill_delay_s": a.delay, "flows": flows, "byte_exact": ok,
           "lost": (flows - ok) if isinstance(flows, int) and isinstance(ok, int) else None,
           "long_flows": len(longf), "long_in_flight": len(inflight),
           "long_in_flight_lost": sum(1 for f in inflight if not f.get("ok")),
           "long_lost_not_in_flight": sum(1 for f in longf if f not in inflight and not f.get("ok")),
           "short_connections": sum(v.get("flows", 0) for v in short.values()),
           "short_lost": sum(v.get("flows", 0) - v.get("ok", 0) for v in short.values()),
           "lost_by": classes, "rst_client": ev.get("rst_client"), "rst_backend": ev.get("rst_backend"),
           "backend_reconnects": sum(max(0, v) for v in extra.values() if v is not None),
           "backend_minus_client_connections": extra, "backend_open_at_end": srv.get("open_at_end"),
           "backend_socket_errors": srv.get("error_count"),
           # the new active's own proxy failure counters (proxy_eval.py --metrics b=...; absent: none read)
           "engine_failures": ({c: ev[f"b_{c}"] for c in ZERO_COUNTERS if f"b_{c}" in ev} or None),
           "max_stall_long_ms": cl.get("max_stall_long_flows_ms"),
           "takeover_ms": takeover, "spurious_takeovers": spurious,
           "verdict": "ok" if ev.get("ok_verdict") else "; ".join(ev.get("bad") or ["no verdict"])[:400]}
    if st:
        row.update(b_role=st.get("role"), flows_resumed=st.get("flows_resumed"), flows_abandoned=st.get("flows_abandoned"))
    if not cl:
        row["error"] = f"no client output in {a.clients}"
    print(json.dumps(row))
    return 0


def dist(v):
    v = sorted(x for x in v if isinstance(x, (int, float)))
    if not v:
        return None
    return {"p50": round(statistics.median(v), 1), "max": v[-1], "n": len(v), **({"all": v} if len(v) <= 10 else {})}


def cmd_killsummary(a) -> int:
    rows = [json.loads(ln) for ln in open(a.file) if ln.startswith("{") and '"config"' in ln]
    names = {"strict": "flowtwin pair (strict), kill -9 of A",
             "haproxy": "HAProxy + keepalived, the active box dies (link down, SIGKILL)",
             "haproxy-processes": "HAProxy + keepalived, SIGKILL of the active's processes (its kernel lives)"}
    out = {}
    for c in [c for c in ("strict", "haproxy") if any(r["config"] == c for r in rows)]:
        rs = [r for r in rows if r["config"] == c]
        s = lambda k: sum(r.get(k) or 0 for r in rs)  # noqa: E731
        lost_by: dict[str, int] = {}
        for r in rs:
            for k, n in (r.get("lost_by") or {}).items():
                lost_by[k] = lost_by.get(k, 0) + n
        d = {"runs": len(rs), "flows": s("flows"), "byte_exact": s("byte_exact"), "lost": s("lost"),
             "long_in_flight": s("long_in_flight"), "long_in_flight_lost": s("long_in_flight_lost"),
             "short_connections": s("short_connections"), "short_lost": s("short_lost"),
             "lost_by": dict(sorted(lost_by.items(), key=lambda kv: -kv[1])),
             "rst_client": s("rst_client"), "rst_backend": s("rst_backend"),
             "backend_reconnects": s("backend_reconnects"),
             "spurious_takeovers": s("spurious_takeovers"),
             "runs_http_not_counted": sum(1 for r in rs if (r.get("backend_minus_client_connections") or {}).get("http") is None),
             "backend_open_at_end": sum(sum(v for v in (r.get("backend_open_at_end") or {}).values() if isinstance(v, int)) for r in rs),
             "takeover_ms": dist([r.get("takeover_ms") for r in rs]),
             "max_stall_long_ms": dist([r.get("max_stall_long_ms") for r in rs]),
             "engine_failures": sum(sum((r.get("engine_failures") or {}).values()) for r in rs) if c == "strict" else None,
             "verdicts_ok": sum(1 for r in rs if r.get("verdict") == "ok"),
             "runs_with_errors": sum(1 for r in rs if r.get("error"))}
        if c == "haproxy" and all(r.get("ka_kill") == "processes" for r in rs):
            c = "haproxy-processes"
        out[c] = d
        to = d["takeover_ms"] or {}
        ms = d["max_stall_long_ms"] or {}
        print(f"kill {c} [{names[c]}]: {d['runs']} run(s); {d['flows']} flows, {d['byte_exact']} byte-exact, "
              f"{d['lost']} lost; long flows in flight at the kill: {d['long_in_flight']}, of them lost "
              f"{d['long_in_flight_lost']}; short connections {d['short_connections']}, lost {d['short_lost']}; "
              f"lost by {json.dumps(d['lost_by'])}; RSTs client {d['rst_client']}, backend {d['rst_backend']}; "
              f"backend reconnects {d['backend_reconnects']}"
              + (f" (http not counted in {d['runs_http_not_counted']} run(s): a curl that failed may not report its connections)"
                 if d["runs_http_not_counted"] else "")
              + f"; backend connections left open {d['backend_open_at_end']}; "
              f"takeover p50 {to.get('p50')} / max {to.get('max')} ms; longest stall of a long flow "
              + (f"p50 {ms.get('p50')} / max {ms.get('max')} ms" if not d["long_in_flight_lost"] else "- (flows lost)")
              + (f"; engine proxy failure counters {d['engine_failures']:.0f}; proxy_eval verdict ok in "
                 f"{d['verdicts_ok']}/{d['runs']}" if c == "strict" else "")
              + (f"; SPURIOUS takeovers before the kill: {d['spurious_takeovers']} (such a run is no clean kill)"
                 if d["spurious_takeovers"] else "; no spurious takeover")
              + (f"; {d['runs_with_errors']} run(s) could not run" if d["runs_with_errors"] else ""))
    print(json.dumps({"bench_proxy_kill": out}))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("cpu")
    p.add_argument("--proxy")
    p.add_argument("--backend")
    p.add_argument("--shell")
    p = sub.add_parser("ab")
    p.add_argument("file")
    p = sub.add_parser("row")
    for k in ("config", "test", "client", "t0", "t1", "cpu0", "cpu1"):
        p.add_argument("--" + k, required=True)
    p.add_argument("--round", type=int, required=True)
    for k in ("srv0", "srv1", "metrics0", "metrics1", "link0", "link1", "idle-link-bps", "tko0", "tko1"):
        p.add_argument("--" + k)
    p = sub.add_parser("summary")
    p.add_argument("file")
    p = sub.add_parser("killrow")
    for k in ("config", "clients", "eval", "srv"):
        p.add_argument("--" + k, required=True)
    p.add_argument("--run", type=int, required=True)
    for k in ("kill-t", "takeover-log", "takeover-re", "status"):
        p.add_argument("--" + k)
    p.add_argument("--delay", type=float)
    p.add_argument("--ka-kill", help="haproxy: box (link down + SIGKILL) or processes (SIGKILL only)")
    p = sub.add_parser("killsummary")
    p.add_argument("file")
    a = ap.parse_args()
    return {"cpu": cmd_cpu, "ab": cmd_ab, "row": cmd_row, "summary": cmd_summary, "killrow": cmd_killrow,
            "killsummary": cmd_killsummary}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
