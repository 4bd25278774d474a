#!/usr/bin/env python3
"""dashcheck.py DASHBOARD.json METRICS.txt PROMETHEUS_URL — every PromQL expression of a Grafana
dashboard, evaluated by a running Prometheus (its query API; `$instance` as `.*`), and every
flowtwin_* family it names checked against an engine's exposition (METRICS.txt). Prints one
JSON object: {"exprs", "with_data", "families", "bad": [...]}; `bad` empty is the pass."""
import json
import re
import sys
import urllib.parse
import urllib.request


def main(argv):
    dash, metrics, url = json.load(open(argv[1])), open(argv[2]).read(), argv[3].rstrip("/")
    families = {ln.split()[2] for ln in metrics.splitlines() if ln.startswith("# TYPE ")}
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    bad, with_data, names = [], 0, set()
    for e in exprs:
        names.update(re.sub(r"_(bucket|sum|count)$", "", n) for n in re.findall(r"flowtwin_[a-z_]+", e))
        q = e.replace("$instance", ".*")
        try:
            r = json.load(urllib.request.urlopen(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": q}), timeout=5))
        except Exception as x:  # an HTTP 400 is Prometheus refusing the expression
            bad.append(f"{e}: {x}")
            continue
        if r.get("status") != "success":
            bad.append(f"{e}: {r.get('error')}")
        elif r["data"]["result"]:
            with_data += 1
    missing = sorted(n for n in names if n not in families)
    if missing:
        bad.append(f"the dashboard names families the engine does not export: {missing}")
    if not exprs:
        bad.append("no expression in the dashboard")
    print(json.dumps({"exprs": len(exprs), "with_data": with_data, "families": len(names), "bad": bad}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
