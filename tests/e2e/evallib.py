"""Helpers of the e2e verdicts (PYTHONPATH=tests/e2e), and the one reader of the engine's
Prometheus /metrics text, which the shell suites call through a small CLI:

  evallib.py metric FILE NAME [LABEL=VALUE ...]      sum of NAME's series with those labels ("%.0f", 0 if absent)
  evallib.py delta FILE_A FILE_B NAME [LABEL=VALUE ...]   the same sum in FILE_B minus FILE_A
  evallib.py buckets FILE NAME                       histogram NAME's buckets as "le:cumulative,..." ("" if absent)
  evallib.py sample URL INTERVAL_S NAME...           every INTERVAL_S, the sums of the NAMEs in URL's text, one
                                                     line each (0s when it does not answer); until killed
"""
from __future__ import annotations

import json
import re
import sys
import time

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?[0-9]+)?\s*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def last(path: str) -> dict:
    """The last line of a JSON-lines file as an object ({} if missing or not JSON)."""
    try:
        return json.loads(open(path).read().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return {}


def last_json(path: str):
    """The last line of a file that starts with "{", as JSON (None if none, unreadable or not JSON);
    the summaries of the clients, backends, rstcount and `ctl status` (proxy_eval, failover_eval)."""
    try:
        with open(path) as f:
            lines = [ln for ln in f.read().strip().splitlines() if ln.strip().startswith("{")]
        return json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None


def transfers_verdict(s: dict, bad: list) -> None:
    """A failover_eval.py summary `s` judged on its transfers: every one byte-exact, and the
    client namespace's capture there and without a RST."""
    if not s.get("flows") or s.get("completed") != s.get("flows"):
        bad.append(f"{s.get('flows', 0) - s.get('completed', 0)} of {s.get('flows')} transfer(s) not byte-exact")
    if s.get("resets") is None:
        bad.append("no rstcount output")
    elif s["resets"]:
        bad.append(f"{s['resets']} RST(s) seen by the client")


def rst_verdict(where: str, path: str, out: dict, bad: list, txt: list) -> None:
    """rstcount.py's capture at `path` of the `where` namespace, judged as the proxy verdicts
    judge it: every RST in or out is bad (the first three named, `after close` marked), and so
    are a missing capture and kernel drops; the count goes to out["rst_<where>"] and `txt`."""
    r = last_json(path)
    if r is None:
        bad.append(f"no rstcount output from the {where} namespace")
        return
    n = r.get("rst_in", 0) + r.get("rst_out", 0)
    out[f"rst_{where}"] = n
    txt.append(f"{where} {n}")
    if n:
        first = ", ".join(f"{x['src']}>{x['dst']}{' after close' if x.get('after_close') else ''}"
                          for x in (r.get("first") or [])[:3])
        bad.append(f"{n} RST(s) in the {where} namespace ({r.get('rst_in')} in, {r.get('rst_out')} out; first: {first})")
    if r.get("kernel_drops"):
        bad.append(f"the {where} capture dropped {r['kernel_drops']} frames")


def zero_counters(who: str, path: str, names: list[str], out: dict, bad: list) -> None:
    """Engine `who`'s /metrics text at `path`: each flowtwin_<name>_total of `names` must be 0
    (recorded in out["<who>_<name>"]); a /metrics that did not answer is a note, not a verdict."""
    try:
        text = open(path).read()
    except OSError:
        text = ""
    if not text.strip():
        out.setdefault("notes", []).append(f"engine {who.upper()}'s /metrics did not answer")
        return
    samples = parse_metrics(text)
    for c in names:
        v = metric_sum(samples, f"flowtwin_{c}_total")
        out[f"{who}_{c}"] = v
        if v:
            bad.append(f"engine {who.upper()} counted {v:.0f} flowtwin_{c}_total")


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """The samples of a Prometheus text exposition as (name, labels, value), in order.

    Comments (# HELP, # TYPE, any #) and blank lines are skipped, as are lines that do not
    parse; an optional timestamp after the value is ignored; NaN, +Inf and -Inf are floats.
    A histogram's series stay as the exposition names them (NAME_bucket{le=...}, NAME_sum,
    NAME_count)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        name, body, value = m.groups()
        labels: dict[str, str] = {}
        if body:
            pos = 0
            body = body.strip()
            while pos < len(body):
                lm = _LABEL.match(body, pos)
                if not lm:
                    break
                labels[lm.group(1)] = re.sub(r'\\[\\"n]', lambda e: _UNESCAPE[e.group(0)], lm.group(2))
                pos = lm.end()
            if pos < len(body):
                continue
        try:
            out.append((name, labels, float(value)))
        except ValueError:
            continue
    return out


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def metric_sum(samples, name: str, labels: dict[str, str] | None = None) -> float:
    """Sum of the samples of series `name` whose labels include every `labels` pair (0 if none)."""
    want = (labels or {}).items()
    return sum(v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in want))


def metric(path: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    """Sum of every series of metric `name` (with `labels`) in a Prometheus text file (None if unreadable)."""
    text = _read(path)
    return None if text is None else metric_sum(parse_metrics(text), name, labels)


def buckets(samples, name: str) -> list[tuple[str, float]]:
    """Histogram `name`'s buckets as (le, cumulative count), in exposition order."""
    return [(lab.get("le", ""), v) for n, lab, v in samples if n == name + "_bucket"]


def _labels(args: list[str]) -> dict[str, str]:
    return dict(a.split("=", 1) for a in args)


def _int(v: float) -> str:
    return "%.0f" % v


def main(argv: list[str]) -> int:
    cmd, args = (argv[0], argv[1:]) if argv else ("", [])
    if cmd == "metric" and len(args) >= 2:
        print(_int(metric_sum(parse_metrics(_read(args[0]) or ""), args[1], _labels(args[2:]))))
    elif cmd == "delta" and len(args) >= 3:
        a, b = (metric_sum(parse_metrics(_read(p) or ""), args[2], _labels(args[3:])) for p in args[:2])
        print(_int(b - a))
    elif cmd == "buckets" and len(args) == 2:
        print(",".join(f"{le}:{_int(n)}" for le, n in buckets(parse_metrics(_read(args[0]) or ""), args[1])))
    elif cmd == "sample" and len(args) >= 3:
        import urllib.request
        url, every, names = args[0], float(args[1]), args[2:]
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # as curl to 127.0.0.1
        while True:
            try:
                with opener.open(url, timeout=1) as r:
                    s = parse_metrics(r.read().decode("utf-8", "replace"))
            except (OSError, ValueError):
                s = []
            print(" ".join(_int(metric_sum(s, n)) for n in names), flush=True)
            time.sleep(every)
    else:
        print(__doc__.split("\n\n", 1)[1].rstrip(), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
