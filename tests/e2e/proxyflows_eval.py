#!/usr/bin/env python3
"""The verdict of tests/e2e/proxy.sh's proxy_tls_kill and proxy_banner_kill. One JSON line
{"ok_verdict", "bad": [...], "desc", ...}.

  proxyflows_eval.py tls --clients pre.json --clients main.json --clients post.json \\
      --backends srv.json --route IP:PORT=NAME[|NAME...] ... --rst client=F --rst backend=F \\
      [--kill-t EPOCH_S --log b=b.log --status b=b_status.json] [--metrics b=b.metrics]
  proxyflows_eval.py banner --clients main.json --clients post.json --backends srv.json ...

The client files are tests/e2e/proxyflows.py's, srv.json backends.py's final stats. Failures:
  - any flow that failed (not byte-exact, a certificate that does not name its SNI, a bad-input
    connection answered with a byte instead of closed, a banner missing or wrong), a missing
    summary;
  - tls: routing. --route says which SNI each TLS listener may see (IP:PORT=one.example; "-" is a
    ClientHello without SNI): a request logged by nginx on a listener with another SNI, or a
    listener whose requests differ from the flows the clients sent it (counted from their SNI);
    a status other than 200, an incomplete response;
  - connections: nginx's accepted connections (stub_status; banner: the banner server's accepts)
    != the clients' connections that must reach a backend (bad-input ones never do): a reconnect
    after the takeover is one more; every TLS connection carried exactly one request;
  - banner: a banner server's banner count != its connections; the bytes it echoed != the
    clients' verified bytes + banners;
  - any backend socket error, a backend connection open at the end;
  - any RST in either capture; a capture missing or with dropped frames;
  - --metrics: a non-zero proxy failure counter (proxy_eval.ZERO_COUNTERS);
  - --kill-t: a long flow that ended before the kill; no TAKEOVER line after it (--log); the
    engine not active (--status).
"""
import argparse
import json
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import evallib  # noqa: E402
from evallib import last_json  # noqa: E402
from proxy_eval import STAMP, ZERO_COUNTERS, kv  # noqa: E402

BAD_KINDS = {"plain", "alert", "srvhello"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["tls", "banner"])
    ap.add_argument("--clients", action="append", default=[])
    ap.add_argument("--backends", required=True)
    ap.add_argument("--route", action="append", default=[], help="tls: IP:PORT=NAME[|NAME...]")
    ap.add_argument("--rst", action="append", default=[])
    ap.add_argument("--kill-t", type=float)
    ap.add_argument("--log", action="append", default=[])
    ap.add_argument("--status", action="append", default=[])
    ap.add_argument("--metrics", action="append", default=[])
    a = ap.parse_args()
    bad: list[str] = []
    out: dict = {}

    flows = []        # (file, flow summary entries) of every client run
    conns_backend = 0  # client connections that must reach a backend
    long_flows = []
    by_kind: dict[str, list[int]] = {}
    stall = (0.0, None)
    for path in a.clients:
        cl = last_json(path)
        if cl is None:
            bad.append(f"no client summary in {os.path.basename(path)} (clients crashed?)")
            continue
        flows.append((path, cl))
        for f in cl.get("failed") or []:
            bad.append(f"{os.path.basename(path)}: {f['kind']}/{f['id']} {f.get('sni') or ''}: {f['error']}")
        for k, v in (cl.get("by_kind") or {}).items():
            e = by_kind.setdefault(k, [0, 0, 0])
            e[0] += v["flows"]
            e[1] += v["ok"]
            e[2] += v["bytes"]
        nbad = sum(v["flows"] for k, v in (cl.get("by_kind") or {}).items() if k in BAD_KINDS)
        conns_backend += cl.get("connections", 0) - nbad
        long_flows += cl.get("long_flows") or []
        if (cl.get("max_stall_ms") or 0) > stall[0]:
            stall = (cl["max_stall_ms"], f"{os.path.basename(path)} {cl.get('max_stall_flow')}")
    nflows = sum(v[0] for v in by_kind.values())
    nok = sum(v[1] for v in by_kind.values())
    out.update(flows=nflows, ok=nok, max_stall_ms=stall[0], max_stall_flow=stall[1])

    srv = last_json(a.backends)
    if srv is None or not srv.get("final"):
        bad.append("no final backend stats (backends crashed?)")
        srv = srv or {}
    svc = srv.get("services") or {}
    route_txt = ""
    if a.mode == "tls":
        routes = {}
        for r in a.route:
            lst, _, names = r.partition("=")
            routes[lst] = set(names.split("|"))
        want: dict[str, int] = {lst: 0 for lst in routes}
        for _path, cl in flows:
            for key, info in (cl.get("info") or {}).items():
                if key.split("/")[0] in BAD_KINDS:
                    continue
                sni = info.get("sni")
                lst = next((x for x, names in routes.items() if sni in names), None)
                if lst is None:
                    bad.append(f"harness: no --route takes SNI {sni!r}")
                    continue
                want[lst] += 1
        tls = svc.get("tls") or {}
        parts = []
        for lst, names in sorted(routes.items()):
            e = tls.get(lst) or {}
            sni = e.get("sni") or {}
            parts.append(f"{lst} {'+'.join(f'{n} {c}' for n, c in sorted(sni.items())) or 'none'}")
            wrong = {n: c for n, c in sni.items() if n not in names}
            if wrong:
                bad.append(f"routing: nginx {lst} (for {'|'.join(sorted(names))}) logged requests with SNI {wrong}")
            if e.get("requests", 0) != want[lst]:
                bad.append(f"routing: nginx {lst} logged {e.get('requests', 0)} requests, clients sent {want[lst]} with SNI {'|'.join(sorted(names))}")
            if e.get("connections", 0) != e.get("requests", 0):
                bad.append(f"nginx {lst}: {e.get('requests', 0)} requests on {e.get('connections', 0)} connections (want one each)")
            st = {k: v for k, v in (e.get("statuses") or {}).items() if k != "200"}
            if st:
                bad.append(f"nginx {lst}: responses with status {st}")
            if e.get("incomplete"):
                bad.append(f"nginx {lst}: {e['incomplete']} responses not sent completely")
        for lst in sorted(set(tls) - set(routes)):
            bad.append(f"routing: requests on an unexpected listener {lst}")
        route_txt = "requests by listener and SNI: " + ", ".join(parts)
        ng = srv.get("nginx")
        accepted = ng.get("accepts") if ng else None
        if ng is None:
            bad.append("no nginx stub_status in the backend stats")
    else:
        b = svc.get("banner") or {}
        accepted = sum(e.get("connections", 0) for e in b.values())
        banners = sum(e.get("banners", 0) for e in b.values())
        if banners != accepted:
            bad.append(f"banner servers sent {banners} banners on {accepted} connections")
        echoed = sum(e.get("bytes_out", 0) for e in b.values())
        got = by_kind.get("banner", [0, 0, 0])[2]
        # (the clients' bytes are the echo streams; the banner lines are counted by the server)
        bl = sum(e.get("banners", 0) * len(f"220 {ip} flowtwin-banner\r\n") for ip, e in b.items())
        if echoed != got + bl:
            bad.append(f"banner servers sent {echoed} bytes, clients verified {got} echoed bytes + {bl} banner bytes")
        route_txt = "banners by backend: " + ", ".join(f"{ip} {e.get('banners', 0)}" for ip, e in sorted(b.items()))
    out["backend_connections"], out["client_connections"] = accepted, conns_backend
    if accepted != conns_backend:
        bad.append(f"backends accepted {accepted} connections, clients made {conns_backend} that reach one"
                   + (" (reconnects or extra backend connections)" if (accepted or 0) > conns_backend else ""))
    if srv.get("error_count"):
        bad.append(f"{srv['error_count']} backend socket error(s): {'; '.join(srv.get('errors', [])[:3])}")
    oe = srv.get("open_at_end") or {}
    if any(v for v in oe.values()):
        bad.append(f"backend connections still open at the end: {oe}")
    if srv.get("injected"):
        out["injected"] = srv["injected"]

    rst_txt = []
    for where, path in kv(a.rst).items():
        evallib.rst_verdict(where, path, out, bad, rst_txt)

    for who, path in kv(a.metrics).items():
        evallib.zero_counters(who, path, ZERO_COUNTERS, out, bad)

    kill_txt = ""
    if a.kill_t is not None:
        early = [f for f in long_flows if f["t_done_wall"] <= a.kill_t]
        out["long_flows_running_at_kill"] = len(long_flows) - len(early)
        if not long_flows:
            bad.append("no long flow")
        if early:
            bad.append(f"{len(early)} of {len(long_flows)} long flows had ended before the kill "
                       f"(first: {early[0]['kind']}/{early[0]['id']}): not a kill mid-transfer")
        for who, path in kv(a.log).items():
            t = None
            early_line = None
            try:
                for ln in open(path, errors="replace"):
                    m = STAMP.match(ln)
                    if m and "TAKEOVER" in ln and float(m.group(1)) < a.kill_t and early_line is None:
                        early_line = (float(m.group(1)), ln.split("TAKEOVER", 1)[1].strip()[:80])
                    if m and "TAKEOVER" in ln and float(m.group(1)) >= a.kill_t:
                        t = float(m.group(1))
                        break
            except OSError:
                pass
            if t is None:
                bad.append(f"no TAKEOVER line of engine {who.upper()} after the kill"
                           + (f" (it took over {(a.kill_t - early_line[0]) * 1000:.0f} ms BEFORE the kill, "
                              f"{early_line[1]}: a starved heartbeat; the kill hit the standby)" if early_line else ""))
            else:
                out["takeover_ms"] = round((t - a.kill_t) * 1000)
        for who, path in kv(a.status).items():
            s = last_json(path) or {}
            if s.get("role") != "active":
                bad.append(f"engine {who.upper()} is not active after the kill (role {s.get('role')})")
        kill_txt = (f"; {out['long_flows_running_at_kill']}/{len(long_flows)} long flows running at the kill"
                    + (f", takeover {out['takeover_ms']} ms after it" if "takeover_ms" in out else ""))
    mb = sum(v[2] for k, v in by_kind.items() if k not in BAD_KINDS) / 1e6
    kinds_txt = ", ".join(f"{k} {v[1]}/{v[0]}" for k, v in sorted(by_kind.items()))
    out["desc"] = (f"{nok}/{nflows} flows ok, {mb:.0f} MB byte-exact ({kinds_txt}); {route_txt}; "
                   f"backend connections {accepted} = client connections {conns_backend}; RSTs: {', '.join(rst_txt) or '-'}; "
                   f"longest stall {stall[0]} ms ({stall[1]})" + kill_txt
                   + ("; " + "; ".join(out["notes"]) if out.get("notes") else ""))
    out["bad"] = bad
    out["ok_verdict"] = not bad
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
