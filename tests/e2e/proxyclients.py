#!/usr/bin/env python3
"""Clients of the proxy e2e test (tests/e2e/proxy.sh), Python 3.11 stdlib + curl, kernel sockets.
Run inside the client namespace, against the proxy's VIP ports or, with the backends' addresses,
straight at the backends (proxy.sh --direct):

  ip netns exec ftc python3 tests/e2e/proxyclients.py --http 198.18.0.100:8080 \\
      --echo 198.18.0.100:9000 --upload 198.18.0.100:9001 --ready-file R
  ip netns exec ftc python3 tests/e2e/proxyclients.py --http 198.18.0.11:80,198.18.0.12:80 ...

Each service takes a comma list of targets; a kind's flows go round-robin over them. The http
service is nginx serving /gen/<n> files (tests/e2e/backends.py), checked against gen.py's
stream (lives_core.expected, gen.gen_sha256), never against the files. Kinds (counts by flag):

  curl10     curl --http1.0 GET /gen/DL (--downloads: split over curl10, curlclose, http10, close)
  curlclose  curl -H 'Connection: close' GET /gen/DL
  http10     socket GET /gen/DL HTTP/1.0, read to EOF
  close      socket GET /gen/DL HTTP/1.1 + Connection: close, read to EOF
  curlka     curl, one connection (--keepalive: split over curlka and sockka): GET 1 KiB, 1 MiB,
             DL, 1 KiB, 1 MiB; num_connects must add up to 1
  sockka     socket, the same 5 GETs on one connection; then the client's FIN, the server's EOF
  big        socket GET /gen/BIG (--big), keep-alive; then FIN, EOF
  upload     --uploads: sizes 1 MiB, 5 MiB, 12 MiB, 20 MiB cycled, per-flow bytes sent in 16 KiB
             writes (SO_SNDBUF 64 KiB), FIN after the last; the server's "<sha256> <n>\\n" must
             equal the digest computed here of what was sent, then EOF
  echo       --echo flows of --echo-bytes: every byte back equals the byte sent at that
             offset (a per-flow pattern of period 65537), FIN after the last byte, then EOF
  short_*    --short-threads threads open connections back to back until --duration, at most
             --short-rate per second in all, each connection one exchange and closed:
             short_get (GET /gen/1024 + Connection: close), short_get10 (HTTP/1.0),
             short_echo (1500 bytes, FIN, all back, EOF), short_upload (4000 bytes, FIN, digest)

Paced kinds (every GET of more than 1 MiB, uploads and echo streams) take about --flow-seconds
each (the rate of a flow is its size / --flow-seconds; curl: --limit-rate), so that they are in
flight at a kill. max_stall_ms is lives_core's: the
longest gap between two progress events of a flow while incomplete, less the part it was ahead
of its pacing (an upload's progress is the bytes its send()s took). Connections are counted per
target as the client made them (a socket connect() that succeeded; curl's num_connects), so a
test can compare them with what each backend accepted.

--ready-file is written once every flow has progressed (its first byte; an upload 64 KiB sent;
each short thread one connection done). One JSON line on stdout; exit 0 iff every flow succeeded:

  {"flows":N,"ok":N,"failed":[{"kind","id","target","error"}],"failed_count":N,
   "failed_errors":{"<kind>: <error, digits as N>":N,...} (every failure, not only the sample),
   "by_kind":{"curl10":{"flows","ok","bytes","max_stall_ms"},...},
   "connections":{"http":{"198.18.0.100:8080":N},"echo":{...},"upload":{...}},
   "short_connections":N,"max_stall_ms":X,"max_stall_flow":"kind/id target","max_stall_end_wall":t,
   "t_start_wall":t,"duration_s":s}
"""
from __future__ import annotations

import sys

sys.dont_write_bytecode = True  # imports gen.py, lives_core.py: no __pycache__ in the checkout

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from types import SimpleNamespace  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen  # noqa: E402
import lives_core  # noqa: E402
from lives_core import (  # noqa: E402
    ECHO_PERIOD, Conn, Flow, FlowError, Run, check_file, check_header, curl_progress, echo_pattern,
    echo_stream, expect_eof, expected_sha256, failed_sample, keepalive_gets, kind_stats, read_body,
    read_header, run_flow, run_jobs, start_curl, worst_stall,
)

now = time.monotonic
MiB = 1 << 20
KA_SIZES = [1024, MiB, None, 1024, MiB]          # None: --dl-size
UPLOAD_SIZES = [MiB, 5 * MiB, 12 * MiB, 20 * MiB]
UPLOAD_CHUNK = 16 * 1024
UPLOAD_SNDBUF = 64 * 1024
UPLOAD_READY = 64 * 1024
ECHO_CHUNK = 16 * 1024
SHORT_KINDS = ["short_get", "short_echo", "short_get10", "short_upload"]
SHORT_GET, SHORT_ECHO, SHORT_UPLOAD = 1024, 1500, 4000

R: Run
A: argparse.Namespace


class Target:
    def __init__(self, svc: str, spec: str):
        host, _, port = spec.rpartition(":")
        if not host or not port.isdigit():
            raise SystemExit(f"proxyclients.py: bad target {spec!r} (want IP:PORT)")
        self.svc, self.name, self.host, self.port = svc, spec, host, int(port)
        fam, _t, _p, _c, sa = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)[0]
        self.addr = (fam, sa)


CONN_LOCK = threading.Lock()
CONNS: dict[str, dict[str, int]] = {}


def count_conn(t: Target, n: int = 1) -> None:
    with CONN_LOCK:
        d = CONNS.setdefault(t.svc, {})
        d[t.name] = d.get(t.name, 0) + n


def connect(fl: Flow, t: Target, sndbuf: int | None = None) -> Conn:
    fl.info["target"] = t.name
    c = Conn(fl, t.addr)
    count_conn(t)
    if sndbuf:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    return c


def request(t: Target, n: int, version: str = "1.1", close: bool = False) -> bytes:
    return (f"GET /gen/{n} HTTP/{version}\r\nHost: {t.name}\r\nUser-Agent: flowtwin-proxy-e2e\r\n"
            + ("Connection: close\r\n" if close else "") + "\r\n").encode()


def rate_of(n: int) -> float | None:
    """Paced to take --flow-seconds (None: small, unpaced)."""
    return n / A.flow_seconds if n > MiB and A.flow_seconds > 0 else None


def http_get(conn: Conn, t: Target, n: int, want_conn: str, version: str = "1.1", close: bool = False,
             label: str = "") -> None:
    fl = conn.fl
    fl.step = f"{label}GET /gen/{n}" + (" HTTP/1.0" if version == "1.0" else "") + (" + close" if close else "")
    conn.send(request(t, n, version, close))
    fl.pace(rate_of(n))
    check_header(read_header(conn), n, want_conn)
    read_body(conn, n)


# ----------------------------------------------------------------------------- socket kinds
def flow_single(fl: Flow, t: Target, n: int, version: str, close: bool) -> None:
    conn = connect(fl, t)
    try:
        http_get(conn, t, n, "close", version, close)
        expect_eof(conn, "body")
    finally:
        conn.close()


def flow_sockka(fl: Flow, t: Target, sizes: list[int]) -> None:
    keepalive_gets(connect(fl, t), sizes,
                   lambda conn, n, want_conn, label: http_get(conn, t, n, want_conn, label=label))


def upload_bytes(fid: int, seed: int) -> memoryview:
    return memoryview(echo_pattern(seed + 1000, fid))


def flow_upload(fl: Flow, t: Target, n: int, chunk: int = UPLOAD_CHUNK, paced: bool = True) -> None:
    pat = upload_bytes(fl.id if fl.kind == "upload" else 100000 + fl.id, A.seed)
    conn = connect(fl, t, sndbuf=UPLOAD_SNDBUF if paced else None)
    h = hashlib.sha256()
    try:
        fl.step = f"upload {n} bytes"
        rate = n / A.flow_seconds if paced and A.flow_seconds > 0 else None
        fl.pace(rate)
        sent = 0
        while sent < n:
            if rate:
                fl.pace_wait()
            o = sent % ECHO_PERIOD
            piece = pat[o:o + min(chunk, n - sent)]
            try:
                conn.send(piece)
            except FlowError as e:
                raise FlowError(f"{e} at {sent} of {n}") from None
            h.update(piece)
            sent += len(piece)
            fl.got(len(piece))
            fl.payload = sent
            if sent >= UPLOAD_READY or sent == n:
                fl.ready.set()
        fl.step = f"upload {n} bytes sent, client FIN, waiting for the digest"
        fl.pace(None)
        conn.shutdown_wr()
        want = f"{h.hexdigest()} {n}\n".encode()
        reply = b""
        while True:
            try:
                b = conn.recv(256)
            except FlowError as e:
                raise FlowError(f"{e} after {len(reply)} reply bytes {reply!r}") from None
            if not b:
                break
            reply += b
            if len(reply) > 200:
                raise FlowError(f"reply too long: {reply[:120]!r}")
        if reply != want:
            raise FlowError(f"upload digest mismatch: server said {reply!r}, sent {want!r}")
    finally:
        conn.close()


def flow_echo(fl: Flow, t: Target, total: int, paced: bool = True, chunk: int = ECHO_CHUNK) -> None:
    """Paced writes, FIN after the last byte, echo read concurrently; every byte checked."""
    pat = memoryview(echo_pattern(A.seed, fl.id if fl.kind == "echo" else 100000 + fl.id))
    conn = connect(fl, t)
    rate = total / A.flow_seconds if paced and A.flow_seconds > 0 else None
    echo_stream(fl, conn, pat, total, rate, chunk)


# ----------------------------------------------------------------------------- curl
def flow_curl(fl: Flow, t: Target, sizes: list[int], how: str) -> None:
    """One curl process for len(sizes) GETs (how: http10, close, keepalive); progress = the output
    files' sizes polled every 2 ms; each file checked against gen.py."""
    rem = R.remaining()
    if rem <= 0:
        raise FlowError("timeout before start")
    fl.info["target"] = t.name
    files = [os.path.join(R.tmpdir, f"{fl.kind}-{fl.id}-{j}.body") for j in range(len(sizes))]
    cmd = ["curl", "-s", "-S", "--noproxy", "*", "--max-time", f"{rem:.3f}",
           "--connect-timeout", f"{A.connect_timeout:.3f}",
           "-w", "%{stderr}FTW %{http_code} %{size_download} %{num_connects}\n"]
    cmd += {"http10": ["--http1.0"], "close": ["--http1.1", "-H", "Connection: close"],
            "keepalive": ["--http1.1"]}[how]
    big = max(sizes)
    rate = rate_of(big)
    if rate:
        cmd += ["--limit-rate", str(int(rate))]
    cfg = "".join(f'url = "http://{t.name}/gen/{n}"\noutput = "{f}"\n' for n, f in zip(sizes, files))
    cmd += ["-K", "-"]
    fl.step = f"curl {how} GET " + ",".join(f"/gen/{n}" for n in sizes)
    fl.pace(rate)
    p = start_curl(cmd, subprocess.PIPE, subprocess.DEVNULL)
    try:
        p.stdin.write(cfg.encode())
        p.stdin.close()
        last = curl_progress(fl, p, files, " bytes")
        err = p.stderr.read().decode(errors="replace")
        lines = [ln[4:].split() for ln in err.splitlines() if ln.startswith("FTW ")]
        other = " | ".join(ln for ln in err.splitlines() if ln and not ln.startswith("FTW "))
        conns = sum(int(x[2]) for x in lines if len(x) == 3 and x[2].isdigit())
        count_conn(t, conns)
        fl.info["connects"] = conns
        if p.returncode != 0:
            raise FlowError(f"curl exit {p.returncode} at {last} bytes: {other[:200]}")
        if len(lines) != len(sizes):
            raise FlowError(f"curl reported {len(lines)} of {len(sizes)} transfers: {other[:200]}")
        for j, (n, f) in enumerate(zip(sizes, files)):
            code, dl, _nc = lines[j]
            fl.step = f"curl {how} request {j} GET /gen/{n}"
            if code != "200":
                raise FlowError(f"http status {code!r} (expected 200)")
            if int(dl) != n:
                raise FlowError(f"curl size_download {dl} (expected {n})")
            check_file(f, n)
            fl.payload += n
        if how == "keepalive" and conns != 1:
            raise FlowError(f"keep-alive: curl opened {conns} connections for {len(sizes)} requests")
        fl.step = ""
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        for f in files:
            try:
                os.unlink(f)
            except FileNotFoundError:
                pass


# ----------------------------------------------------------------------------- short connections
SHORT_LOCK = threading.Lock()
SHORT_NEXT = [0]


def short_worker(ti: int, ready: threading.Event, targets: dict[str, list[Target]]) -> None:
    """Back-to-back short connections until --duration, paced to --short-rate overall."""
    end = R.t_start + A.duration
    period = A.short_threads / A.short_rate
    next_t = now() + ti * period / A.short_threads
    j = ti
    try:
        while now() < end and R.remaining() > 0:
            if next_t > now():
                R.sleep(next_t - now())
            next_t = max(next_t + period, now())
            kind = SHORT_KINDS[j % len(SHORT_KINDS)]
            svc = {"short_get": "http", "short_get10": "http", "short_echo": "echo", "short_upload": "upload"}[kind]
            tl = targets.get(svc) or []
            if not tl:
                j += 1
                continue
            t = tl[(j // len(SHORT_KINDS)) % len(tl)]
            j += 1
            with SHORT_LOCK:
                fid = SHORT_NEXT[0]
                SHORT_NEXT[0] += 1
            fl = R.new_flow(kind, fid, ready_on_byte=False, ready_unit=False)
            fl.info["target"] = t.name
            if kind == "short_get":
                run_flow(fl, flow_single, t, SHORT_GET, "1.1", True)
            elif kind == "short_get10":
                run_flow(fl, flow_single, t, SHORT_GET, "1.0", False)
            elif kind == "short_echo":
                run_flow(fl, flow_echo, t, SHORT_ECHO, False)
            else:
                run_flow(fl, flow_upload, t, SHORT_UPLOAD, UPLOAD_CHUNK, False)
            ready.set()
            if not fl.ok:
                time.sleep(0.05)
    finally:
        ready.set()


# ----------------------------------------------------------------------------- main
def error_counts(failed: list[Flow]) -> dict[str, int]:
    out: dict[str, int] = {}
    for f in failed:
        k = re.sub(r"\d+", "N", f"{f.kind}: {f.error or '?'}")[:100]
        out[k] = out.get(k, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def summarize(t_end: float) -> dict:
    flows = list(R.flows)
    failed = [f for f in flows if not f.ok]
    kinds = sorted({f.kind for f in flows})
    by_kind = kind_stats(flows, kinds)
    worst = worst_stall(flows)
    off = R.t_start_wall - R.t_start
    long_stall = max((f.max_stall for f in flows if not f.kind.startswith("short_")), default=0.0)
    return {
        "flows": len(flows),
        "ok": len(flows) - len(failed),
        "failed": [{"kind": f.kind, "id": f.id, "target": f.info.get("target"), "error": f.error,
                    "t_done_s": round(f.t_done - R.t_start, 6)} for f in failed_sample(failed, kinds)],
        "failed_count": len(failed),
        # every failure (not only the sample above) by its error text, digits as N: how the flows
        # ended (scripts/bench-proxy kill tells resets from timeouts with it)
        "failed_errors": error_counts(failed),
        "by_kind": by_kind,
        "connections": CONNS,
        "short_connections": sum(1 for f in flows if f.kind.startswith("short_")),
        "max_stall_ms": round(worst.max_stall * 1000, 3) if worst else 0.0,
        "max_stall_flow": f"{worst.kind}/{worst.id} {worst.info.get('target')}" if worst else None,
        "max_stall_end_wall": round(worst.max_stall_end + off, 6) if worst else None,
        "max_stall_long_flows_ms": round(long_stall * 1000, 3),
        # the flows that are not short connections: when each ended (a kill must find them running)
        "long_flows": [{"kind": f.kind, "id": f.id, "target": f.info.get("target"), "ok": f.ok,
                        "t_done_wall": round(f.t_done + off, 6)} for f in flows if not f.kind.startswith("short_")],
        "kind": "proxy",
        "completed_byte_exact": len(flows) - len(failed),
        "t_start_wall": round(R.t_start_wall, 6),
        "duration_s": round(t_end - R.t_start, 6),
    }


def main(argv=None) -> int:
    global R, A
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--http", default="", help="nginx targets IP:PORT[,IP:PORT...]")
    ap.add_argument("--echo", default="", help="echo targets")
    ap.add_argument("--upload", default="", help="upload targets")
    ap.add_argument("--downloads", type=int, default=8, help="curl10/curlclose/http10/close flows of --dl-size")
    ap.add_argument("--dl-size", type=int, default=20 * MiB)
    ap.add_argument("--keepalive", type=int, default=2, help="curlka/sockka flows (5 GETs each)")
    ap.add_argument("--big", type=int, default=1, help="flows of --big-size")
    ap.add_argument("--big-size", type=int, default=100 * MiB)
    ap.add_argument("--uploads", type=int, default=4)
    ap.add_argument("--echo-flows", type=int, default=4)
    ap.add_argument("--echo-bytes", type=int, default=6_000_000)
    ap.add_argument("--short-threads", type=int, default=4)
    ap.add_argument("--short-rate", type=float, default=40.0, help="short connections per second, all threads")
    ap.add_argument("--duration", type=float, default=8.0, help="short connections for this long, s")
    ap.add_argument("--flow-seconds", type=float, default=6.0, help="paced flows take about this long")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--ready-file")
    ap.add_argument("--timeout", type=float, default=60.0, help="hard deadline of the whole run, s")
    ap.add_argument("--connect-timeout", type=float, default=5.0)
    ap.add_argument("--eof-timeout", type=float, default=5.0)
    a = ap.parse_args(argv)
    targets = {svc: [Target(svc, x) for x in spec.split(",") if x]
               for svc, spec in (("http", a.http), ("echo", a.echo), ("upload", a.upload))}
    if not any(targets.values()):
        ap.error("give --http, --echo and/or --upload targets")
    if a.short_threads < 0 or a.short_rate <= 0 or a.timeout <= 0 or a.flow_seconds < 0:
        ap.error("need --short-threads >= 0, --short-rate > 0, --timeout > 0, --flow-seconds >= 0")
    if targets["http"] and not shutil.which("curl"):
        ap.error("curl not found")
    for k in range(256):  # gen.py's block variants (~1 s of CPU) before the clock starts
        gen.gen_bytes(k * gen.GEN_BLOCK, 1)
    for n in {a.dl_size, MiB, 1024}:
        expected_sha256(n)
    threading.stack_size(512 * 1024)

    first = next(t for tl in targets.values() for t in tl)
    A = a
    R = lives_core.R = Run(SimpleNamespace(
        host=first.host, http_port=first.port, echo_port=first.port, timeout=a.timeout,
        connect_timeout=a.connect_timeout, eof_timeout=a.eof_timeout, strict_headers=False,
        rate=1.0, big_rate=1.0, kill_file=None, seed=a.seed))

    jobs: list[tuple] = []

    def add(kind: str, i: int, fn, svc: str, *args) -> None:
        tl = targets[svc]
        if not tl:
            return
        fl = R.new_flow(kind, i, ready_on_byte=(kind != "upload"))
        jobs.append((run_flow, (fl, fn, tl[i % len(tl)], *args)))

    dl_kinds = ["curl10", "curlclose", "http10", "close"]
    for i in range(a.downloads):
        k = dl_kinds[i % 4]
        idx = sum(1 for j in range(i) if dl_kinds[j % 4] == k)
        if k == "curl10":
            add(k, idx, flow_curl, "http", [a.dl_size], "http10")
        elif k == "curlclose":
            add(k, idx, flow_curl, "http", [a.dl_size], "close")
        elif k == "http10":
            add(k, idx, flow_single, "http", a.dl_size, "1.0", False)
        else:
            add(k, idx, flow_single, "http", a.dl_size, "1.1", True)
    ka = [n if n is not None else a.dl_size for n in KA_SIZES]
    for i in range(a.keepalive):
        if i % 2 == 0:
            add("curlka", i // 2, flow_curl, "http", ka, "keepalive")
        else:
            add("sockka", i // 2, flow_sockka, "http", ka)
    for i in range(a.big):
        add("big", i, flow_sockka, "http", [a.big_size])
    for i in range(a.uploads):
        add("upload", i, flow_upload, "upload", UPLOAD_SIZES[i % len(UPLOAD_SIZES)])
    for i in range(a.echo_flows):
        add("echo", i, flow_echo, "echo", a.echo_bytes)
    for ti in range(a.short_threads):
        ev = threading.Event()
        R.ready_units.append(ev)
        jobs.append((short_worker, (ti, ev, targets)))

    t_end = run_jobs(jobs, a.ready_file, "moved")
    res = summarize(t_end)
    print(json.dumps(res), flush=True)
    return 0 if res["flows"] > 0 and res["ok"] == res["flows"] else 1


if __name__ == "__main__":
    sys.exit(main())
