#!/usr/bin/env python3
"""The verdict of one tests/e2e/proxy.sh run. Prints one JSON line {"ok", "bad": [...], "desc", ...}.

  proxy_eval.py --clients cl.json --backends srv.json --rst client=rc.json --rst backend=rb.json
                --mode direct|proxy [--kill-t EPOCH_S] [--log b=b.log] [--status b=b_status.json]
                [--round-robin http,echo] [--expect-kinds K,K...] [--min-short N]

cl.json: tests/e2e/proxyclients.py; srv.json: the final stats of tests/e2e/backends.py; rc/rb:
tests/e2e/rstcount.py in the client and the backend namespace. Failures ("bad"):
  - a flow not byte-exact, a kind of --expect-kinds without flows, fewer than --min-short short
    connections, a missing or non-final summary (a crashed or silent part is a failure);
  - per service (http, echo, upload), the connections the backends accepted != the connections the
    clients made: --mode direct per backend address, --mode proxy in total (the proxy opens
    exactly one backend connection per client connection: a reconnect shows as one more);
    nginx's own accept count (stub_status) must equal both, and every accepted connection must
    have carried a logged request;
  - the bytes the backends received (echo, upload) or sent (nginx's $body_bytes_sent) != the
    bytes the clients verified;
  - any backend socket error (a reset seen by a server), an nginx status other than 200 or an
    incomplete response, a backend connection still open at the end;
  - any RST in either capture (rst_in + rst_out, every address), a capture that is missing or
    dropped frames;
  - with --round-robin SVC: a backend that got no connection of SVC;
  - with --metrics ENGINE=FILE (its /metrics at the end): a non-zero count of the proxy's
    failures (ZERO_COUNTERS: no backend, a failed backend connect, a reset carried from one half
    to the other, a linked half resumed without its partner); an empty FILE (no answer) is
    reported, not failed;
  - with --kill-t: a long flow (not a short connection) that had ended before the kill (the run
    did not test a kill mid-transfer); with --log, no TAKEOVER line after the kill; with
    --status, the engine not active.
"""
import argparse
import json
import os
import re
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import evallib  # noqa: E402
from evallib import last_json  # noqa: E402

# engine counters (flowtwin_<name>_total, engine/src/counters.rs) that a clean proxy run leaves at 0
ZERO_COUNTERS = ["proxy_no_backend", "proxy_connect_failed", "proxy_resets_propagated", "link_orphans"]

STAMP = re.compile(r"^(\d+\.\d+) ")


def kv(specs):
    out = {}
    for s in specs:
        k, _, v = s.partition("=")
        out[k] = v
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", required=True)
    ap.add_argument("--backends", required=True)
    ap.add_argument("--rst", action="append", default=[], help="client=FILE, backend=FILE")
    ap.add_argument("--mode", choices=["direct", "proxy"], required=True)
    ap.add_argument("--kill-t", type=float)
    ap.add_argument("--log", action="append", default=[], help="ENGINE=stamped log (the TAKEOVER line)")
    ap.add_argument("--status", action="append", default=[], help="ENGINE=ctl status JSON (must be active)")
    ap.add_argument("--metrics", action="append", default=[], help="ENGINE=its /metrics text at the end")
    ap.add_argument("--round-robin", default="")
    ap.add_argument("--expect-kinds", default="")
    ap.add_argument("--min-short", type=int, default=1)
    a = ap.parse_args()

    bad = []
    out = {}
    cl = last_json(a.clients)
    srv = last_json(a.backends)
    if cl is None:
        bad.append(f"no client summary in {a.clients} (clients crashed?)")
        cl = {}
    if srv is None or not srv.get("final"):
        bad.append(f"no final backend stats in {a.backends} (backends crashed?)")
        srv = srv or {}
    flows, ok = cl.get("flows", 0), cl.get("ok", 0)
    out["flows"], out["ok"] = flows, ok
    if cl and (not flows or ok != flows):
        f = min(cl.get("failed") or [{}], key=lambda x: x.get("t_done_s", 0))  # the earliest to fail
        bad.append(f"{flows - ok} of {flows} flows not byte-exact (first: {f.get('kind')}/{f.get('id')} "
                   f"{f.get('target')}: {f.get('error')})")
    by_kind = cl.get("by_kind") or {}
    for k in [k for k in a.expect_kinds.split(",") if k]:
        if not by_kind.get(k, {}).get("flows"):
            bad.append(f"no {k} flow ran")
    nshort = cl.get("short_connections", 0)
    if cl and nshort < a.min_short:
        bad.append(f"only {nshort} short connections (want >= {a.min_short})")

    # ---- connections: clients vs backends
    csvc = cl.get("connections") or {}
    ssvc = srv.get("services") or {}
    conn_txt = []
    for svc in ("http", "echo", "upload"):
        c_by_ip = {}
        for tgt, n in (csvc.get(svc) or {}).items():
            ip = tgt.rpartition(":")[0]
            c_by_ip[ip] = c_by_ip.get(ip, 0) + n
        s_by_ip = {ip: e.get("connections", 0) for ip, e in (ssvc.get(svc) or {}).items()}
        ctot, stot = sum(c_by_ip.values()), sum(s_by_ip.values())
        out[f"{svc}_client_connections"], out[f"{svc}_backend_connections"] = ctot, s_by_ip
        if not ctot and not stot:
            continue
        per = "+".join(str(s_by_ip[ip]) for ip in sorted(s_by_ip))
        conn_txt.append(f"{svc} {ctot} = {stot} ({per})")
        if a.mode == "direct":
            for ip in sorted(set(c_by_ip) | set(s_by_ip)):
                if c_by_ip.get(ip, 0) != s_by_ip.get(ip, 0):
                    bad.append(f"{svc}: backend {ip} accepted {s_by_ip.get(ip, 0)} connections, "
                               f"clients made {c_by_ip.get(ip, 0)} to it")
        elif ctot != stot:
            bad.append(f"{svc}: backends accepted {stot} connections ({per}), clients made {ctot} "
                       f"({'reconnects or extra backend connections' if stot > ctot else 'client connections without a backend one'})")
        if svc in a.round_robin.split(",") and a.mode == "proxy" and ctot >= len(s_by_ip):
            for ip, n in sorted(s_by_ip.items()):
                if n == 0:
                    bad.append(f"{svc}: round-robin gave backend {ip} no connection of {ctot}")
    ng = srv.get("nginx")
    hlog = ssvc.get("http") or {}
    if srv:
        logged = sum(e.get("connections", 0) for e in hlog.values())
        if ng is None:
            bad.append("no nginx stub_status in the backend stats")
        else:
            hc = out.get("http_client_connections", 0)
            if ng.get("accepts") != logged:
                bad.append(f"nginx accepted {ng.get('accepts')} connections, {logged} carried a logged request")
            if ng.get("accepts") != hc:
                bad.append(f"nginx accepted {ng.get('accepts')} connections, clients made {hc} http connections")
        for ip, e in sorted(hlog.items()):
            st = {k: v for k, v in (e.get("statuses") or {}).items() if k != "200"}
            if st:
                bad.append(f"nginx {ip}: responses with status {st}")
            if e.get("incomplete"):
                bad.append(f"nginx {ip}: {e['incomplete']} responses not sent completely")
        if srv.get("error_count"):
            bad.append(f"{srv['error_count']} backend socket error(s): {'; '.join(srv.get('errors', [])[:3])}")
        oe = srv.get("open_at_end") or {}
        if any(v for v in oe.values()):
            bad.append(f"backend connections still open at the end: {oe}")
        if srv.get("injected"):
            out["injected"] = srv["injected"]

    # ---- bytes: what the backends moved vs what the clients verified
    def kb(*kinds):
        return sum((by_kind.get(k) or {}).get("bytes", 0) for k in kinds)
    if cl and srv:
        pairs = [("upload", kb("upload", "short_upload"), sum(e.get("bytes_in", 0) for e in (ssvc.get("upload") or {}).values())),
                 ("echo", kb("echo", "short_echo"), sum(e.get("bytes_in", 0) for e in (ssvc.get("echo") or {}).values())),
                 ("http", kb("curl10", "curlclose", "http10", "close", "curlka", "sockka", "big", "short_get", "short_get10"),
                  sum(e.get("bytes", 0) for e in hlog.values()))]
        for svc, c, s in pairs:
            out[f"{svc}_bytes"] = [c, s]
            if c != s:
                bad.append(f"{svc}: backends {'received' if svc != 'http' else 'sent'} {s} bytes, clients verified {c}")

    # ---- RSTs
    rst_txt = []
    rsts = kv(a.rst)
    for where in ("client", "backend"):
        if where not in rsts:
            continue
        evallib.rst_verdict(where, rsts[where], out, bad, rst_txt)

    # ---- the engine's own account
    for who, path in kv(a.metrics).items():
        evallib.zero_counters(who, path, ZERO_COUNTERS, out, bad)

    # ---- the kill
    takeover_txt = ""
    if a.kill_t is not None:
        longf = cl.get("long_flows") or []
        early = [f for f in longf if f["t_done_wall"] <= a.kill_t]
        out["long_flows_running_at_kill"] = len(longf) - len(early)
        if early:
            bad.append(f"{len(early)} of {len(longf)} long flows had ended before the kill "
                       f"(first: {early[0]['kind']}/{early[0]['id']}): not a kill mid-transfer")
        for who, path in kv(a.log).items():
            t = None
            try:
                for ln in open(path, errors="replace"):
                    m = STAMP.match(ln)
                    if m and "TAKEOVER" in ln and float(m.group(1)) >= a.kill_t:
                        t = float(m.group(1))
                        break
            except OSError:
                pass
            if t is None:
                bad.append(f"no TAKEOVER line of engine {who.upper()} after the kill")
            else:
                out["takeover_ms"] = round((t - a.kill_t) * 1000)
                takeover_txt = f"; takeover {out['takeover_ms']} ms after the kill"
        for who, path in kv(a.status).items():
            s = last_json(path) or {}
            if s.get("role") != "active":
                bad.append(f"engine {who.upper()} is not active after the kill (role {s.get('role')})")
        takeover_txt = f"; {out['long_flows_running_at_kill']}/{len(longf)} long flows running at the kill" + takeover_txt

    kinds_txt = ", ".join(f"{k} {v['ok']}/{v['flows']}" for k, v in sorted(by_kind.items()))
    mb = sum(v.get("bytes", 0) for v in by_kind.values()) / 1e6
    out["max_stall_ms"] = cl.get("max_stall_ms")
    out["max_stall_flow"] = cl.get("max_stall_flow")
    out["desc"] = (f"{ok}/{flows} flows byte-exact, {mb:.0f} MB ({kinds_txt}); {nshort} short connections; "
                   f"connections clients = backends: {', '.join(conn_txt) or '-'}; "
                   f"RSTs: {', '.join(rst_txt) or '-'}; longest client stall {cl.get('max_stall_ms')} ms "
                   f"({cl.get('max_stall_flow')}), of a long flow {cl.get('max_stall_long_flows_ms')} ms"
                   + takeover_txt + ("; " + "; ".join(out["notes"]) if out.get("notes") else ""))
    out["bad"] = bad
    out["ok_verdict"] = not bad
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
