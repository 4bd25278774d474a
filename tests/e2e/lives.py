#!/usr/bin/env python3
"""flowtwin e2e "many lives" client (Python 3.11 stdlib only): many kinds of TCP client at once,
over Linux kernel sockets and curl, against the engine's two services on the VIP, across a
kill -9 of the active engine. Run it inside the client namespace:

  ip netns exec ftc python3 tests/e2e/lives.py --host 198.18.0.100 --kill-file K --ready-file R

Object service (--http-port, 80): `GET`/`HEAD /gen/<n>` returns n bytes of the stream that
tests/e2e/gen.py computes independently. Echo service (--echo-port, 7). Kinds (one thread per
flow; counts x --scale, at least 1 each; with fewer flows than sizes the largest sizes are kept):

  http10     4  GET /gen/N HTTP/1.0, N = 1 KiB, 200 KB, 5 MiB, 20 MiB; read to EOF
  close      3  HTTP/1.1 + Connection: close, N = 64 KB, 10 MB, 100 MiB (the last only if --scale >= 1)
  curl10     2  curl --http1.0 -o FILE, N = 3 MB, 15 MiB; code, size and sha256 of the file
  curlclose  2  curl -H 'Connection: close', same sizes
  keepalive  4  6 sequential GETs on one connection (1 KiB, 300 KB, 2 MB cycled), each read by
                Content-Length; then shutdown(SHUT_WR) and EOF (server closes after client FIN)
  pipelined  3  4 GETs in one write (10 KB, 1 MB, 50 KB, 4 MiB; the last with Connection: close),
                the 4 responses in order, then EOF
  head       2  HEAD /gen/5000000 (headers only), GET /gen/200000, HEAD again, FIN, EOF
  halfclose  3  GET /gen/8388608 HTTP/1.1 + shutdown(SHUT_WR) at once; the whole response, EOF
  echo_fin   4  6 MB of a per-flow pattern to the echo port in 16 KiB writes, shutdown(SHUT_WR)
                after the last byte while the echo still comes back (one selectors loop); every
                byte equals what was sent at that offset; then EOF
  zerowin    2  SO_RCVBUF 16384 before connect; GET /gen/6000000 HTTP/1.0; read 300 KB, stop reading
                until --kill-file exists + 0.4 s (without --kill-file: 1.5 s), read the rest, EOF
  churn      4  threads; until --duration s after start: connect, GET /gen/S + Connection: close
                (S = 1024, 5000, 30000, 70000 cycled), verify, EOF, repeat; every connection is a flow
  idle       --idle N keep-alive connections (not scaled): GET /gen/1000 at start, then idle; when
                the kill file appears (one watcher thread polls it every 1 ms; without --kill-file:
                --duration/2 s after start) each sends GET /gen/2000 at once; the time from the
                watcher's detection to the complete response is reported

Checks, per response: status 200; the header exactly
`HTTP/1.1 200 OK\\r\\nContent-Type: application/octet-stream\\r\\nContent-Length: N\\r\\nConnection: X\\r\\n\\r\\n`
with X = close for HTTP/1.0 and Connection: close requests, else keep-alive (halfclose accepts
either). --no-strict-headers (for the kernel stand-in tests/e2e/stubserver.py, whose http.server
adds Server/Date and sends no Connection header) only requires status 200 and Content-Length == N,
no Transfer-Encoding, and a Connection header, if present, that agrees with the request. Bodies are
compared byte for byte with gen.gen_bytes at their offset (curl files: sha256 vs gen.gen_sha256,
then the first differing offset); where the server must close, EOF must follow the body at once
(bytes after it are "extra bytes after body"; an RST is "connection reset"). Errors name the step,
the offset and expected vs seen, e.g. "req 2 GET /gen/2000000: EOF at 611769 of 2000000".

Pacing: the reader of every download > 1 MB (curl: --limit-rate) and the echo writer keep to
--rate bytes/s (default 4 MB/s; a download >= 64 MiB to --big-rate, 25 MB/s), sleeping while
ahead of schedule (bytes/rate - elapsed since the request), so a kill lands mid-transfer.

max_stall_ms: over all flows, the longest gap between two received-byte events of a flow while it
was incomplete, less the part of the gap the flow was ahead of its pacing schedule; the gap before
a flow's first byte, a zerowin flow's deliberate pause and an idle connection's idle time are not
counted (an idle connection's wait for its post-kill response is). curl progress is the output
file's size polled every 2 ms.

--ready-file is written once every flow has its first byte (idle: its first response; churn: each
thread's first connection), or has failed; at the latest at the end. --timeout is a hard deadline
for the whole run: every blocking operation is bounded by it, and flows not done by then fail with
"timeout". One JSON line is printed on stdout; exit status 0 iff every flow succeeded:

  {"flows":N,"ok":N,"failed":[{"kind":..,"id":..,"error":..} (at most 50, round-robin over kinds)],
   "failed_count":N,
   "by_kind":{"http10":{"flows":..,"ok":..,"bytes":..},...},   bytes = verified body/echo bytes
   "max_stall_ms":X,"max_stall_flow":"kind/id","max_stall_end_s":s after start,
   "max_stall_streaming_ms":X (every kind but idle),"max_stall_at_byte":B (bytes the flow had received, headers included),"churn_connections":N,
   "idle":{"n":N,"answered":M,"after_kill_ms":{"p50":..,"p99":..,"max":..}},
   "t_start_wall":epoch_s,"kill_seen_s":s after start or null,"duration_s":s}

Self-test switch: LIVES_SELFTEST_FLIP=OFFSET flips the expected /gen byte at OFFSET (socket bodies
and curl sha256), so every flow whose body reaches OFFSET must fail with a byte mismatch there.
"""
from __future__ import annotations

import sys

sys.dont_write_bytecode = True  # imports gen.py: no __pycache__ in the checkout

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen  # noqa: E402

now = time.monotonic
MiB = 1 << 20

# ----------------------------------------------------------------------------- the mix
# Base flow counts (x --scale, at least 1) and sizes. Sizes mix 64 KiB-aligned (MiB) and unaligned
# (decimal) lengths so gen.py's block boundaries fall both on and inside segments.
KINDS = ["http10", "close", "curl10", "curlclose", "keepalive", "pipelined", "head", "halfclose",
         "echo_fin", "zerowin", "churn", "idle"]
BASE = {"http10": 4, "close": 3, "curl10": 2, "curlclose": 2, "keepalive": 4, "pipelined": 3,
        "head": 2, "halfclose": 3, "echo_fin": 4, "zerowin": 2, "churn": 4}
SIZES = {
    "http10": [1024, 200_000, 5 * MiB, 20 * MiB],
    "close": [64_000, 10_000_000, 100 * MiB],
    "curl10": [3_000_000, 15 * MiB],
    "curlclose": [3_000_000, 15 * MiB],
    "halfclose": [8 * MiB],
}
KEEPALIVE_SIZES = [1024, 300_000, 2_000_000]
KEEPALIVE_REQS = 6
PIPELINE_SIZES = [10_000, 1_000_000, 50_000, 4 * MiB]
HEAD_SIZE, HEAD_GET_SIZE = 5_000_000, 200_000
ECHO_SIZE, ECHO_CHUNK = 6_000_000, 16 * 1024
ZEROWIN_SIZE, ZEROWIN_FIRST, ZEROWIN_RCVBUF = 6_000_000, 300_000, 16384
CHURN_SIZES = [1024, 5000, 30000, 70000]
IDLE_FIRST, IDLE_SECOND = 1000, 2000

ZEROWIN_KILL_PAUSE = 0.4  # zerowin: reopen the window this long after the kill file appears
ZEROWIN_NOKILL_PAUSE = 1.5
import lives_core  # noqa: E402
from lives_core import (  # noqa: E402 — the kinds below use these names
    Conn, Flow, FlowError, Run, check_file, check_header, curl_progress, echo_pattern, echo_stream,
    expect_eof, failed_sample, get, keepalive_gets, kind_stats, rate_for, read_body, read_header,
    request, run_flow, run_jobs, start_curl, worst_stall,
)

R: Run  # set in main() (and in lives_core, whose helpers read it too)


# ----------------------------------------------------------------------------- kinds
def flow_single(fl: Flow, n: int, version: str, close: bool) -> None:
    """http10, close, churn: one GET whose response the server ends with FIN."""
    conn = Conn(fl, R.http_addr)
    try:
        get(conn, n, "close", version, close)
        expect_eof(conn, "body")
    finally:
        conn.close()


def flow_zerowin(fl: Flow) -> None:
    """Tiny receive buffer, and the client stops reading across the kill: a closed window."""
    n = ZEROWIN_SIZE
    conn = Conn(fl, R.http_addr, rcvbuf=ZEROWIN_RCVBUF)
    try:
        fl.step = f"GET /gen/{n} HTTP/1.0"
        conn.send(request("GET", n, "1.0"))
        fl.pace(rate_for(n))
        check_header(read_header(conn), n, "close")
        got = read_body(conn, n, 0, ZEROWIN_FIRST)
        fl.pause()
        if R.args.kill_file:
            fl.step = f"GET /gen/{n} HTTP/1.0 (window closed, waiting for the kill file)"
            if not R.kill_event.wait(max(0.0, R.remaining())):
                raise FlowError(f"timeout: kill file never appeared (read {got} of {n})")
            R.sleep(max(0.0, R.kill_t + ZEROWIN_KILL_PAUSE - now()))
        else:
            R.sleep(ZEROWIN_NOKILL_PAUSE)
        fl.step = f"GET /gen/{n} HTTP/1.0 (after reopening the window)"
        fl.resume()
        fl.pace(rate_for(n - got))
        read_body(conn, n, got)
        expect_eof(conn, "body")
    finally:
        conn.close()


def flow_keepalive(fl: Flow) -> None:
    sizes = [KEEPALIVE_SIZES[j % len(KEEPALIVE_SIZES)] for j in range(KEEPALIVE_REQS)]
    keepalive_gets(Conn(fl, R.http_addr), sizes)


def flow_pipelined(fl: Flow) -> None:
    conn = Conn(fl, R.http_addr)
    try:
        last = len(PIPELINE_SIZES) - 1
        fl.step = "pipelined send"
        conn.send(b"".join(request("GET", n, close=(j == last)) for j, n in enumerate(PIPELINE_SIZES)))
        for j, n in enumerate(PIPELINE_SIZES):
            fl.step = f"pipelined response {j} GET /gen/{n}"
            fl.pace(rate_for(n))
            check_header(read_header(conn), n, "close" if j == last else "keep-alive")
            read_body(conn, n)
        expect_eof(conn, "last response (Connection: close)")
    finally:
        conn.close()


def flow_head(fl: Flow) -> None:
    conn = Conn(fl, R.http_addr)
    try:
        for j, (method, n) in enumerate([("HEAD", HEAD_SIZE), ("GET", HEAD_GET_SIZE), ("HEAD", HEAD_SIZE)]):
            fl.step = f"req {j} {method} /gen/{n}"
            conn.send(request(method, n))
            check_header(read_header(conn), n, "keep-alive")
            if method == "GET":
                read_body(conn, n)
            # a HEAD answered with a body shows up as a bad status line next, or extra bytes at the end
        fl.step = "client FIN after the last HEAD"
        conn.shutdown_wr()
        expect_eof(conn, "HEAD response")
    finally:
        conn.close()


def flow_halfclose(fl: Flow, n: int) -> None:
    conn = Conn(fl, R.http_addr)
    try:
        fl.step = f"GET /gen/{n} + client FIN"
        conn.send(request("GET", n))
        conn.shutdown_wr()
        fl.pace(rate_for(n))
        check_header(read_header(conn), n, "either")
        read_body(conn, n)
        expect_eof(conn, "body")
    finally:
        conn.close()


def flow_echo(fl: Flow) -> None:
    """Paced writes, FIN after the last byte, echo read concurrently (one selectors loop)."""
    pat = memoryview(echo_pattern(R.args.seed, fl.id))
    echo_stream(fl, Conn(fl, R.echo_addr), pat, ECHO_SIZE, R.args.rate, ECHO_CHUNK)


def flow_curl(fl: Flow, n: int, http10: bool) -> None:
    """One curl process; progress = output file size polled every 2 ms; the file is hashed here."""
    path = os.path.join(R.tmpdir, f"{fl.kind}-{fl.id}.body")
    rem = R.remaining()
    if rem <= 0:
        raise FlowError("timeout before start")
    hp = R.hosthdr
    url = f"http://{hp}/gen/{n}"
    rate = rate_for(n)
    cmd = ["curl", "-s", "-S", "--noproxy", "*"]
    cmd += ["--http1.0"] if http10 else ["--http1.1", "-H", "Connection: close"]
    cmd += ["-o", path, "-w", "%{http_code} %{size_download} %{local_port}", "--max-time", f"{rem:.3f}",
            "--connect-timeout", f"{R.args.connect_timeout:.3f}"]
    if rate:
        cmd += ["--limit-rate", str(int(rate))]
    cmd.append(url)
    fl.step = f"curl {'--http1.0' if http10 else '-H Connection:close'} GET /gen/{n}"
    fl.pace(rate)
    t_start = time.time()
    p = start_curl(cmd, subprocess.DEVNULL, subprocess.PIPE)
    try:
        last = curl_progress(fl, p, [path], f" of {n}")
        out, err = p.communicate()
        out = out.decode(errors="replace").strip()
        err = err.decode(errors="replace").strip().replace("\n", " | ")
        if p.returncode != 0:
            raise FlowError(f"curl exit {p.returncode} at {last} of {n}: {err[:200]}")
        code, _, dl = out.partition(" ")
        dl, _, port = dl.partition(" ")
        if port.isdigit():  # (--ports-file) curl's client port; open/close times are curl's run
            fl.info.setdefault("ports", []).append([int(port), round(t_start, 6), round(time.time(), 6)])
        if code != "200":
            raise FlowError(f"http status {code!r} (expected 200)")
        if not dl.isdigit() or int(dl) != n:
            raise FlowError(f"curl size_download {dl!r} (expected {n})")
        check_file(path, n)
        fl.payload = n
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def flow_idle(fl: Flow) -> None:
    """Open early, one GET, idle until the kill, then one GET timed from the kill's detection."""
    conn = Conn(fl, R.http_addr)
    try:
        get(conn, IDLE_FIRST, "keep-alive", label="first ")
        fl.ready.set()  # ready unit: the first response is complete
        fl.pause()
        fl.step = "idle, waiting for the kill"
        if not R.kill_event.wait(max(0.0, R.remaining())):
            raise FlowError("timeout: kill file never appeared" if R.args.kill_file else "timeout")
        fl.resume()
        get(conn, IDLE_SECOND, "keep-alive", label="after the kill: ")
        fl.info["after_kill"] = now() - R.kill_t
    finally:
        conn.close()


def churn_worker(ti: int, ready: threading.Event) -> None:
    """Connections back to back until --duration; each one is a flow of its own."""
    end = R.t_start + R.args.duration
    j = ti
    try:
        while now() < end and R.remaining() > 0:
            n = CHURN_SIZES[j % len(CHURN_SIZES)]
            j += 1
            with R.lock:
                fid = R.churn_next
                R.churn_next += 1
            fl = R.new_flow("churn", fid, ready_on_byte=False, ready_unit=False)
            fl.info["thread"] = ti
            run_flow(fl, flow_single, n, "1.1", True)
            ready.set()
            if not fl.ok:
                time.sleep(0.05)  # a dead server refuses at once: do not spin
    finally:
        ready.set()


# ----------------------------------------------------------------------------- main
def scaled(kind: str, scale: float) -> int:
    return max(1, int(BASE[kind] * scale + 0.5))


def sizes_for(kind: str, count: int, scale: float) -> list[int]:
    """count sizes from the kind's list: cycled; with fewer flows than sizes, the largest."""
    sz = list(SIZES[kind])
    if kind == "close" and scale < 1:
        sz = [s for s in sz if s < 100 * MiB]
    if count < len(sz):
        return sz[-count:]
    return [sz[i % len(sz)] for i in range(count)]


def watcher() -> None:
    """ONE thread decides "the kill happened": the kill file's appearance (polled every 1 ms), or
    --duration/2 after the start without --kill-file."""
    a = R.args
    if a.kill_file:
        while not R.stop.is_set() and R.remaining() > 0:
            if os.path.exists(a.kill_file):
                R.kill_t = now()
                R.kill_event.set()
                return
            R.stop.wait(0.001)
    else:
        if not R.stop.wait(max(0.0, R.t_start + a.duration / 2 - now())):
            R.kill_t = now()
            R.kill_event.set()


def pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    return round(xs[max(0, math.ceil(p * len(xs)) - 1)] * 1000, 3)


def summarize(kinds: list[str], t_end: float) -> dict:
    flows = list(R.flows)
    failed = [f for f in flows if not f.ok]
    by_kind = kind_stats(flows, kinds)
    # Streams that were moving when the engine died, apart from the idle connections whose
    # requests may have gone into the outage (those wait for the client's own loss probe).
    streaming = max((f.max_stall for f in flows if f.kind != "idle"), default=0.0)
    worst = worst_stall(flows)
    idle = [f for f in flows if f.kind == "idle"]
    lat = sorted(f.info["after_kill"] for f in idle if f.ok and "after_kill" in f.info)
    return {
        "flows": len(flows),
        "ok": len(flows) - len(failed),
        "failed": [{"kind": f.kind, "id": f.id, "error": f.error} for f in failed_sample(failed, kinds)],
        "failed_count": len(failed),
        "by_kind": by_kind,
        "max_stall_ms": round(worst.max_stall * 1000, 3) if worst else 0.0,
        "max_stall_flow": f"{worst.kind}/{worst.id}" if worst else None,
        "max_stall_end_s": round(worst.max_stall_end - R.t_start, 6) if worst else None,
        "max_stall_at_byte": worst.max_stall_byte if worst else None,
        "max_stall_streaming_ms": round(streaming * 1000, 3),
        "churn_connections": sum(1 for f in flows if f.kind == "churn"),
        # The names failover_eval.py reads from a clients.py summary.
        "kind": "lives",
        "completed_byte_exact": len(flows) - len(failed),
        "max_midflow_stall_ms": round(worst.max_stall * 1000, 3) if worst else 0.0,
        "max_midflow_wait_ms": round(worst.max_stall * 1000, 3) if worst else 0.0,
        "idle": {"n": len(idle), "answered": len(lat),
                 "after_kill_ms": {"p50": pct(lat, 0.50), "p99": pct(lat, 0.99), "max": pct(lat, 1.0)}},
        "t_start_wall": round(R.t_start_wall, 6),
        "kill_seen_s": round(R.kill_t - R.t_start, 6) if R.kill_t is not None else None,
        "duration_s": round(t_end - R.t_start, 6),
    }


def write_ports(path: str) -> None:
    """--ports-file: every connection's client port, its flow's kind and id, when it was opened
    and closed (wall clock), and the flow's outcome: a RST's 4-tuple in a capture names its flow."""
    with open(path, "w") as f:
        for fl in list(R.flows):
            for port, t_open, t_close in fl.info.get("ports", []):
                f.write(json.dumps({"port": port, "kind": fl.kind, "id": fl.id, "open": t_open,
                                    "close": t_close, "ok": fl.ok, "error": fl.error}) + "\n")


def main(argv=None) -> int:
    global R
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", required=True, help="the VIP")
    ap.add_argument("--http-port", type=int, default=80)
    ap.add_argument("--echo-port", type=int, default=7)
    ap.add_argument("--scale", type=float, default=1.0, help="flow counts x this (at least 1 per kind)")
    ap.add_argument("--kinds", default=",".join(KINDS), help="comma list of: " + ",".join(KINDS))
    ap.add_argument("--kill-file", help="appears when the active engine is killed")
    ap.add_argument("--ready-file", help="written once every flow has its first byte")
    ap.add_argument("--ports-file", help="at the end: one JSON line per connection, "
                    '{"port":P,"kind":K,"id":I,"open":wall s,"close":wall s,"ok":B,"error":E}')
    ap.add_argument("--timeout", type=float, default=60.0, help="hard deadline of the whole run, s")
    ap.add_argument("--connect-timeout", type=float, default=3.0)
    ap.add_argument("--duration", type=float, default=8.0, help="churn runs this long (s after start)")
    ap.add_argument("--idle", type=int, default=200, help="idle keep-alive connections")
    ap.add_argument("--seed", type=int, default=1, help="echo pattern seed")
    ap.add_argument("--rate", type=float, default=4e6, help="pacing of downloads > 1 MB and echo writes, bytes/s")
    ap.add_argument("--big-rate", type=float, default=25e6, help="pacing of downloads >= 64 MiB, bytes/s")
    ap.add_argument("--eof-timeout", type=float, default=5.0, help="wait for the server's FIN at most this long, s")
    ap.add_argument("--strict-headers", action=argparse.BooleanOptionalAction, default=True,
                    help="require the engine's exact response header (--no-strict-headers for stubserver.py)")
    a = ap.parse_args(argv)
    kinds = [k for k in a.kinds.split(",") if k]
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        ap.error(f"unknown kind(s) {bad}; choose from {','.join(KINDS)}")
    if a.scale <= 0 or a.idle < 0 or a.idle > 1000 or a.rate <= 0 or a.big_rate <= 0 or a.timeout <= 0:
        ap.error("need --scale > 0, 0 <= --idle <= 1000, rates > 0, --timeout > 0")
    if ("curl10" in kinds or "curlclose" in kinds) and not shutil.which("curl"):
        ap.error("curl not found")
    if a.kill_file and os.path.exists(a.kill_file):
        print(f"lives.py: warning: kill file {a.kill_file} exists already: idle and zerowin fire at once",
              file=sys.stderr)

    # gen.py builds its 256 block variants lazily (~1 s of CPU): do it before the clock starts.
    for k in range(256):
        gen.gen_bytes(k * gen.GEN_BLOCK, 1)
    threading.stack_size(512 * 1024)

    R = lives_core.R = Run(a)
    jobs: list[tuple] = []  # (target, args) per thread
    if "idle" in kinds:  # opened first: they are the connections that exist before everything else
        for i in range(a.idle):
            jobs.append((run_flow, (R.new_flow("idle", i, ready_on_byte=False), flow_idle)))
    for kind in kinds:
        if kind == "idle":
            continue
        cnt = scaled(kind, a.scale)
        if kind == "churn":
            for ti in range(cnt):
                ev = threading.Event()
                R.ready_units.append(ev)
                jobs.append((churn_worker, (ti, ev)))
            continue
        for i in range(cnt):
            fl = R.new_flow(kind, i)
            if kind in ("http10", "close"):
                n = sizes_for(kind, cnt, a.scale)[i]
                job = (fl, flow_single, n, "1.0" if kind == "http10" else "1.1", kind == "close")
            elif kind in ("curl10", "curlclose"):
                job = (fl, flow_curl, sizes_for(kind, cnt, a.scale)[i], kind == "curl10")
            elif kind == "halfclose":
                job = (fl, flow_halfclose, sizes_for(kind, cnt, a.scale)[i])
            else:
                job = (fl, {"keepalive": flow_keepalive, "pipelined": flow_pipelined, "head": flow_head,
                            "echo_fin": flow_echo, "zerowin": flow_zerowin}[kind])
            jobs.append((run_flow, job))

    threading.Thread(target=watcher, name="kill-watcher", daemon=True).start()
    t_end = run_jobs(jobs, a.ready_file, "received")
    res = summarize(kinds, t_end)
    if a.ports_file:
        write_ports(a.ports_file)
    print(json.dumps(res), flush=True)
    return 0 if res["flows"] > 0 and res["ok"] == res["flows"] else 1


if __name__ == "__main__":
    sys.exit(main())
