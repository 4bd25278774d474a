#!/usr/bin/env python3
"""flowtwin e2e client harness (Python 3.11 stdlib only). Run it inside the client namespace:

  ip netns exec ftc python3 tests/e2e/clients.py download  -n 20 --gen 10000000
  ip netns exec ftc python3 tests/e2e/clients.py download  -n 20 --mode curl --url http://198.18.0.100/x --sha256 HEX
  ip netns exec ftc python3 tests/e2e/clients.py keepalive -k 8 -m 50 --url http://198.18.0.100/x --sha256 HEX
  ip netns exec ftc python3 tests/e2e/clients.py echo      -n 10 --port 7 --mbytes 20

Every flow records (timestamp, bytes so far); the longest stall is the largest gap between two
progress events while the flow was incomplete (the start of the flow is the first event; for a
flow that fails, the gap up to the failure counts too); max_midflow_stall_ms excludes the gap
before a flow's first byte (connect, curl start-up). max_midflow_wait_ms is the same without
the time a --rate-limited flow was ahead of its schedule (rate x time since its start): curl
--limit-rate sometimes reads a burst and then sleeps for as long as the burst was early, a
gap of its own making. Without --rate the two are equal. One JSON line is printed on stdout:

  {"flows":N,"completed_byte_exact":N,"failed":[...],"max_stall_ms":X, ...extras}

Exit status 0 iff every flow completed byte-exact. Everything is bounded by counts and timeouts.
Byte-exact means: HTTP status as expected, body length == Content-Length (== expected size if
known) and sha256 == expected (from --sha256, or computed from tests/e2e/gen.py for /gen/<n>);
for echo, every byte read back equals the byte sent at that offset.

Modes: --mode socket (raw kernel TCP sockets, one thread per flow, exact progress) or
--mode curl (curl subprocesses as operators run them: curl -s -o FILE -w '%{http_code} %{size_download}';
progress = output file size polled every --poll-ms, so stall resolution is the poll interval).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from urllib.parse import urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ftenv  # noqa: E402
import gen  # noqa: E402

now = time.monotonic
MAX_HEADER = 64 * 1024
MAX_THREADS = 2000
EVENT_CAP = 200_000  # per flow; the stall computation stays exact beyond the cap


class FlowError(Exception):
    pass


def schedule_lead(nbytes: int, rate: float | None, t: float, t0: float) -> float:
    """Seconds a flow limited to `rate` bytes/s since `t0` is ahead of its schedule, having
    moved `nbytes` by time `t` (negative: behind; 0.0 without a rate). The socket clients
    pace themselves by it, and the wait metrics (here and in failover_eval.py) leave that
    much of a gap out."""
    return nbytes / rate - (t - t0) if rate else 0.0


# ----------------------------------------------------------------------------- progress
class Progress:
    """(timestamp, bytes so far) events of one flow + exact online longest-gap tracking."""

    def __init__(self, t0: float, keep_events: bool = True, rate: float | None = None):
        self.t0 = t0
        # --rate: the flow limits itself to `rate` bytes/s since t0. While it is ahead of that
        # schedule it does not want bytes (curl --limit-rate sleeps after a burst), so that
        # part of a gap is not a wait (max_mid_wait). None: every gap is a wait.
        self.rate = rate
        self.max_mid_wait = 0.0
        self.last_t = t0
        self.bytes = 0
        self.max_gap = 0.0
        self.max_gap_end = t0
        self.max_gap_bytes = 0
        self.max_mid_gap = 0.0  # longest gap after the first byte (excludes connect/startup)
        self.events: list[tuple[float, int]] | None = [(t0, 0)] if keep_events else None
        self.lock = threading.Lock()

    def add(self, total: int, t: float | None = None) -> None:
        t = now() if t is None else t
        with self.lock:
            gap = t - self.last_t
            if gap > self.max_gap:
                self.max_gap, self.max_gap_end, self.max_gap_bytes = gap, t, self.bytes
            if self.bytes > 0 and gap > self.max_mid_gap:
                self.max_mid_gap = gap
            if self.bytes > 0:
                ahead = schedule_lead(self.bytes, self.rate, self.last_t, self.t0)
                self.max_mid_wait = max(self.max_mid_wait, gap - max(0.0, ahead))
            self.last_t = t
            self.bytes = total
            if self.events is not None and len(self.events) < EVENT_CAP:
                self.events.append((t, total))

    def close(self, complete: bool, t: float | None = None) -> None:
        """A flow that did not complete was stalled from its last progress until now."""
        if not complete:
            self.add(self.bytes, t)


class Flow:
    def __init__(self, idx: int, kind: str, target: str, t0: float, keep_events: bool,
                 rate: float | None = None):
        self.idx = idx
        self.kind = kind
        self.target = target
        self.prog = Progress(t0, keep_events, rate)
        self.ok = False
        self.error: str | None = None
        self.done = threading.Event()
        self.t_end: float | None = None
        self.info: dict = {}

    def finish(self, ok: bool, error: str | None = None) -> None:
        self.t_end = now()
        self.ok = ok
        self.error = error
        self.prog.close(ok, self.t_end)
        self.done.set()


# ----------------------------------------------------------------------------- expectations
_gen_lock = threading.Lock()
_gen_cache: dict[int, str] = {}
GEN_RE = re.compile(r"^/gen/(\d+)(?:[/?#].*)?$")


def gen_sha256(n: int) -> str:
    """sha256 of /gen/<n> computed from gen.gen_bytes (cached)."""
    with _gen_lock:
        if n in _gen_cache:
            return _gen_cache[n]
        h = hashlib.sha256()
        off = 0
        step = 1 << 20
        while off < n:
            m = min(step, n - off)
            chunk = gen.gen_bytes(off, m)
            if len(chunk) != m:
                raise FlowError(f"gen.gen_bytes({off},{m}) returned {len(chunk)} bytes")
            h.update(chunk)
            off += m
        _gen_cache[n] = h.hexdigest()
        return _gen_cache[n]


def expectation(url: str, args) -> tuple[str | None, int | None]:
    """(sha256 hex or None, size or None) expected for url."""
    sha = args.sha256.lower() if args.sha256 else None
    size = args.size
    m = GEN_RE.match(urlsplit(url).path)
    if m and not args.no_gen:
        n = int(m.group(1))
        size = n if size is None else size
        if sha is None and not args.no_verify:
            try:
                sha = gen_sha256(n)
            except NotImplementedError as e:
                raise SystemExit(f"clients.py: {e}; pass --sha256 HEX (or --no-verify)")
    if sha is None and not args.no_verify:
        raise SystemExit(f"clients.py: no expected sha256 for {url}: pass --sha256 HEX, use /gen/<n>, or --no-verify")
    return sha, size


# ----------------------------------------------------------------------------- raw-socket HTTP/1.1
class HttpConn:
    def __init__(self, url: str, connect_timeout: float):
        u = urlsplit(url)
        if u.scheme != "http":
            raise FlowError(f"only http:// supported: {url}")
        self.host = u.hostname
        self.port = u.port or 80
        self.hosthdr = u.netloc
        self.sock = socket.create_connection((self.host, self.port), timeout=connect_timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.rbuf = bytearray(256 * 1024)
        self.rview = memoryview(self.rbuf)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def _recv(self, deadline: float, limit: int) -> memoryview:
        rem = deadline - now()
        if rem <= 0:
            raise FlowError("timeout")
        self.sock.settimeout(min(rem, 1.0))
        try:
            n = self.sock.recv_into(self.rview, min(limit, len(self.rbuf)))
        except socket.timeout:
            return self.rview[:0]
        except OSError as e:
            raise FlowError(f"recv: {e}") from e
        if n == 0:
            raise EOFError
        return self.rview[:n]

    def get(self, path: str, deadline: float, on_body, rate: float | None, t_start: float,
            base_bytes: int, extra_headers: str = "") -> tuple[int, int, str]:
        """Send one GET, stream the body to on_body(chunk, total_so_far). -> (status, length, sha256)."""
        req = (f"GET {path} HTTP/1.1\r\nHost: {self.hosthdr}\r\nUser-Agent: flowtwin-e2e\r\n"
               f"Accept: */*\r\n{extra_headers}\r\n").encode()
        try:
            self.sock.settimeout(max(0.001, deadline - now()))
            self.sock.sendall(req)
        except OSError as e:
            raise FlowError(f"send request: {e}") from e
        # headers
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(self.buf) > MAX_HEADER:
                raise FlowError("response header too large")
            try:
                chunk = self._recv(deadline, 65536)
            except EOFError:
                raise FlowError("connection closed before response header") from None
            self.buf += chunk
        head = bytes(self.buf[:end]).decode("latin-1")
        del self.buf[:end + 4]
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise FlowError(f"bad status line: {lines[0][:80]!r}")
        status = int(parts[1])
        hdrs = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        if "chunked" in hdrs.get("transfer-encoding", "").lower():
            raise FlowError("chunked transfer-encoding not supported by this harness")
        clen = int(hdrs["content-length"]) if "content-length" in hdrs else None
        h = hashlib.sha256()
        got = 0
        # leftover body bytes already buffered
        if self.buf:
            take = len(self.buf) if clen is None else min(len(self.buf), clen)
            piece = bytes(self.buf[:take])
            del self.buf[:take]
            h.update(piece)
            got += take
            on_body(base_bytes + got)
        limit = len(self.rbuf)
        if rate:
            limit = max(1024, int(rate / 200))  # ~5 ms worth per recv keeps gaps small
        while clen is None or got < clen:
            if rate:
                ahead = schedule_lead(base_bytes + got, rate, now(), t_start)
                if ahead > 0:
                    time.sleep(min(ahead, 0.005))
                    continue
            want = limit if clen is None else min(limit, clen - got)
            try:
                chunk = self._recv(deadline, want)
            except EOFError:
                if clen is None:
                    break
                raise FlowError(f"connection closed after {got} of {clen} body bytes") from None
            if chunk:
                h.update(chunk)
                got += len(chunk)
                on_body(base_bytes + got)
        return status, got, h.hexdigest()


def check_body(status: int, length: int, sha: str, exp_sha: str | None, exp_size: int | None,
               exp_status: int) -> str | None:
    if status != exp_status:
        return f"http status {status} (expected {exp_status})"
    if exp_size is not None and length != exp_size:
        return f"body length {length} (expected {exp_size})"
    if exp_sha is not None and sha != exp_sha:
        return f"sha256 mismatch ({sha[:16]}.. expected {exp_sha[:16]}..)"
    return None


def socket_http_flow(fl: Flow, urls: list[str], exps, args, deadline: float) -> None:
    """len(urls) sequential GETs on one connection (1 for download, M for keep-alive)."""
    conn = None
    try:
        conn = HttpConn(urls[0], args.connect_timeout)
        total = 0
        for j, url in enumerate(urls):
            u = urlsplit(url)
            path = u.path + ("?" + u.query if u.query else "") or "/"
            exp_sha, exp_size = exps[j]
            status, length, sha = conn.get(path, deadline, fl.prog.add, args.rate, fl.prog.t0, total)
            total += length
            err = check_body(status, length, sha, exp_sha, exp_size, args.expect_status)
            if err:
                raise FlowError(f"request {j}: {err}")
            fl.info["requests_done"] = j + 1
        fl.finish(True)
    except (FlowError, OSError) as e:
        fl.finish(False, str(e) or type(e).__name__)
    except Exception as e:  # noqa: BLE001 — a harness bug must still produce a summary
        fl.finish(False, f"internal: {type(e).__name__}: {e}")
    finally:
        if conn:
            conn.close()


# ----------------------------------------------------------------------------- echo
ECHO_PERIOD = 65537  # prime > ECHO_MAXCHUNK: a segment misplaced by any multiple of 64 KiB is still detected
ECHO_MAXCHUNK = 65536


def echo_pattern(seed: int, flow: int) -> bytes:
    """Deterministic per-flow bytes; byte at stream offset o is pat[o % ECHO_PERIOD].

    The returned buffer is the period plus its first ECHO_MAXCHUNK bytes again, so any slice
    pat[o % P : o % P + n] with n <= ECHO_MAXCHUNK is contiguous."""
    out = bytearray()
    key = f"flowtwin-echo/{seed}/{flow}/".encode()
    ctr = 0
    while len(out) < ECHO_PERIOD:
        out += hashlib.sha256(key + ctr.to_bytes(8, "little")).digest()
        ctr += 1
    base = bytes(out[:ECHO_PERIOD])
    return base + base[:ECHO_MAXCHUNK]


def echo_flow(fl: Flow, host: str, port: int, total: int, args, deadline: float) -> None:
    pat = memoryview(echo_pattern(args.seed, fl.idx))
    chunk = max(1, min(args.chunk, ECHO_MAXCHUNK))
    s = None
    sel = selectors.DefaultSelector()
    try:
        s = socket.create_connection((host, port), timeout=args.connect_timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
        sent = recvd = 0
        writing = True
        t0 = fl.prog.t0
        while recvd < total:
            t = now()
            if t >= deadline:
                raise FlowError(f"timeout: sent {sent} received {recvd} of {total}")
            can_send = sent < total and schedule_lead(sent, args.rate, t, t0) <= 0
            if writing != can_send:
                sel.modify(s, selectors.EVENT_READ | (selectors.EVENT_WRITE if can_send else 0))
                writing = can_send
            for _key, mask in sel.select(timeout=min(0.005 if args.rate else 0.2, deadline - t)):
                if mask & selectors.EVENT_WRITE and sent < total:
                    o = sent % ECHO_PERIOD
                    n = min(chunk, total - sent)
                    try:
                        sent += s.send(pat[o:o + n])
                    except (BlockingIOError, InterruptedError):
                        pass
                    if sent == total and args.half_close:
                        s.shutdown(socket.SHUT_WR)
                if mask & selectors.EVENT_READ:
                    try:
                        data = s.recv(ECHO_MAXCHUNK)
                    except (BlockingIOError, InterruptedError):
                        continue
                    if not data:
                        raise FlowError(f"connection closed after {recvd} of {total} echoed bytes")
                    if recvd + len(data) > sent:
                        raise FlowError(f"received {recvd + len(data)} bytes but sent only {sent}")
                    o = recvd % ECHO_PERIOD
                    exp = pat[o:o + len(data)]
                    if data != exp:
                        k = next((i for i in range(min(len(data), len(exp))) if data[i] != exp[i]),
                                 min(len(data), len(exp)))
                        raise FlowError(f"echo mismatch at stream offset {recvd + k} "
                                        f"(chunk {len(data)} bytes, pattern offset {o}, exp {len(exp)})")
                    recvd += len(data)
                    fl.prog.add(recvd)
        fl.finish(True)
    except (FlowError, OSError) as e:
        fl.finish(False, str(e) or type(e).__name__)
    except Exception as e:  # noqa: BLE001
        fl.finish(False, f"internal: {type(e).__name__}: {e}")
    finally:
        sel.close()
        if s:
            s.close()


# ----------------------------------------------------------------------------- curl
def curl_env() -> dict:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return env


class CurlFlow:
    """One curl process: 1 URL (download) or M URLs on one connection (keep-alive)."""

    def __init__(self, fl: Flow, urls: list[str], exps, args, outdir: str):
        self.fl = fl
        self.urls = urls
        self.exps = exps
        self.files = [os.path.join(outdir, f"f{fl.idx}_{j}") for j in range(len(urls))]
        self.lines: list[str] = []
        self.base = 0          # bytes of completed transfers
        self.last_size = -1
        # -w goes to stderr: curl block-buffers stdout on a pipe, stderr is written at once.
        wfmt = "%{stderr}FTW %{http_code} %{size_download} %{num_connects}\\n"
        cmd = ["curl", "-s", "-S", "--noproxy", "*", "--http1.1",
               "--max-time", f"{args.timeout:.3f}", "--connect-timeout", f"{args.connect_timeout:.3f}",
               "-w", wfmt.replace("\\n", "\n")]
        if args.rate:
            cmd += ["--limit-rate", str(int(args.rate))]
        if len(urls) == 1:
            cmd += ["-o", self.files[0], urls[0]]
            stdin = subprocess.DEVNULL
            self.cfg = None
        else:
            cmd += ["-K", "-"]
            self.cfg = "".join(f'url = "{u}"\noutput = "{f}"\n' for u, f in zip(urls, self.files))
            stdin = subprocess.PIPE
        self.cmd = cmd
        self.p = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  env=curl_env())
        if self.cfg is not None:
            self.p.stdin.write(self.cfg.encode())
            self.p.stdin.close()
        os.set_blocking(self.p.stderr.fileno(), False)
        self.obuf = b""
        self.errtext: list[str] = []

    def poll(self) -> bool:
        """Record progress; return True when curl has exited and the flow is finalized."""
        try:
            data = self.p.stderr.read()
        except (BlockingIOError, TypeError):
            data = None
        if data:
            self.obuf += data
            *done, self.obuf = self.obuf.split(b"\n")
            for ln in done:
                self._line(ln)
        cur = len(self.lines)
        size = 0
        if cur < len(self.files):
            try:
                size = os.stat(self.files[cur]).st_size
            except FileNotFoundError:
                size = 0
        if data or size != self.last_size:
            total = self.base + size
            if total != self.fl.prog.bytes or data:
                self.fl.prog.add(total)
            self.last_size = size
        if self.p.poll() is None:
            return False
        os.set_blocking(self.p.stderr.fileno(), True)
        self.obuf += self.p.stderr.read() or b""
        for ln in self.obuf.split(b"\n"):
            self._line(ln)
        self.obuf = b""
        self.finalize()
        return True

    def _line(self, ln: bytes) -> None:
        text = ln.decode(errors="replace").strip()
        if text.startswith("FTW "):
            self.lines.append(text[4:])
            parts = text.split()
            if len(parts) >= 3 and parts[2].isdigit():  # completed transfer: size is final
                self.base += int(parts[2])
                self.last_size = -1
        elif text:
            self.errtext.append(text)

    def finalize(self) -> None:
        fl = self.fl
        err = " | ".join(self.errtext)
        rc = self.p.returncode
        fl.info["curl_rc"] = rc
        try:
            if rc != 0:
                raise FlowError(f"curl exit {rc}: {err[:200]}")
            if len(self.lines) != len(self.urls):
                raise FlowError(f"curl reported {len(self.lines)} of {len(self.urls)} transfers")
            conns = 0
            for j, ln in enumerate(self.lines):
                code, size, nconn = (ln.split() + ["", "", ""])[:3]
                conns += int(nconn) if nconn.isdigit() else 0
                path = self.files[j]
                h = hashlib.sha256()
                length = 0
                if os.path.exists(path):
                    with open(path, "rb") as f:
                        while b := f.read(1 << 20):
                            h.update(b)
                            length += len(b)
                if size.isdigit() and int(size) != length:
                    raise FlowError(f"request {j}: curl size_download {size} != file size {length}")
                exp_sha, exp_size = self.exps[j]
                e = check_body(int(code) if code.isdigit() else 0, length, h.hexdigest(), exp_sha,
                               exp_size, fl.info["expect_status"])
                if e:
                    raise FlowError(f"request {j}: {e}")
            if len(self.urls) > 1 and conns != 1:
                raise FlowError(f"keep-alive: curl opened {conns} connections for {len(self.urls)} requests")
            fl.info["requests_done"] = len(self.urls)
            fl.finish(True)
        except FlowError as e:
            fl.finish(False, str(e))

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


# ----------------------------------------------------------------------------- runner
def summarize(kind: str, mode: str, flows: list[Flow], t_start: float, t_end: float, fail_cap: int) -> dict:
    failed = [f for f in flows if not f.ok]
    worst = max(flows, key=lambda f: f.prog.max_gap) if flows else None
    stalls = sorted(f.prog.max_gap for f in flows)
    total = sum(f.prog.bytes for f in flows)
    dur = max(1e-9, t_end - t_start)

    def pct(p):
        return round(stalls[min(len(stalls) - 1, int(p * len(stalls)))] * 1000, 3) if stalls else 0.0
    return {
        "flows": len(flows),
        "completed_byte_exact": len(flows) - len(failed),
        "failed": [{"flow": f.idx, "target": f.target, "error": f.error, "bytes": f.prog.bytes,
                    **({"requests_done": f.info["requests_done"]} if "requests_done" in f.info else {})}
                   for f in failed[:fail_cap]],
        "failed_count": len(failed),
        "max_stall_ms": round(worst.prog.max_gap * 1000, 3) if worst else 0.0,
        "max_stall_flow": worst.idx if worst else None,
        "max_stall_end_s": round(worst.prog.max_gap_end - t_start, 6) if worst else None,
        "max_stall_at_byte": worst.prog.max_gap_bytes if worst else None,
        "max_midflow_stall_ms": round(max((f.prog.max_mid_gap for f in flows), default=0.0) * 1000, 3),
        "max_midflow_wait_ms": round(max((f.prog.max_mid_wait for f in flows), default=0.0) * 1000, 3),
        "stall_p50_ms": pct(0.5),
        "stall_p99_ms": pct(0.99),
        "kind": kind,
        "mode": mode,
        "rate": flows[0].prog.rate if flows else None,
        "bytes_total": total,
        "duration_s": round(dur, 6),
        "goodput_mbit_s": round(total * 8 / dur / 1e6, 3),
    }


def write_trace(path: str, flows: list[Flow], t_start: float) -> None:
    with open(path, "w") as f:
        for fl in flows:
            ev = [(round(t - t_start, 6), b) for t, b in (fl.prog.events or [])]
            f.write(json.dumps({"flow": fl.idx, "target": fl.target, "ok": fl.ok, "error": fl.error,
                                "events": ev}) + "\n")


def touch(path: str | None) -> None:
    if path:
        with open(path, "w") as f:
            f.write(f"{time.time()}\n")


def run(kind: str, args, jobs: list[tuple[str, list[str]]]) -> dict:
    """jobs: one (target, urls) per flow; for echo, urls is unused."""
    n = len(jobs)
    if n < 1 or n > MAX_THREADS:
        raise SystemExit(f"clients.py: flow count must be 1..{MAX_THREADS}")
    exps_by_url: dict[str, tuple] = {}
    if kind != "echo":
        for _t, urls in jobs:
            for u in urls:
                if u not in exps_by_url:
                    exps_by_url[u] = expectation(u, args)
    t_start = now()
    deadline = t_start + args.timeout
    flows = [Flow(i, kind, t, t_start, not args.no_events, args.rate) for i, (t, _u) in enumerate(jobs)]
    for f in flows:
        f.info["expect_status"] = getattr(args, "expect_status", 200)
    ready_done = args.ready_file is None
    mode = getattr(args, "mode", "socket") if kind != "echo" else "socket"
    tmpdir = None
    try:
        if mode == "curl":
            if not shutil.which("curl"):
                raise SystemExit("clients.py: curl not found")
            tmpdir = args.out_dir or tempfile.mkdtemp(prefix="ft-curl-")
            os.makedirs(tmpdir, exist_ok=True)
            cfs = [CurlFlow(fl, urls, [exps_by_url[u] for u in urls], args, tmpdir)
                   for fl, (_t, urls) in zip(flows, jobs)]
            active = list(cfs)
            hard = deadline + 5.0
            while active:
                active = [c for c in active if not c.poll()]
                if not ready_done and all(f.prog.bytes > 0 or f.done.is_set() for f in flows):
                    touch(args.ready_file)
                    ready_done = True
                if now() > hard:
                    for c in active:
                        c.kill()
                        c.fl.finish(False, "timeout (curl killed)")
                    break
                time.sleep(args.poll_ms / 1000.0)
        else:
            threads = []
            for fl, (_t, urls) in zip(flows, jobs):
                if kind == "echo":
                    th = threading.Thread(target=echo_flow, daemon=True,
                                          args=(fl, args.host, args.port, int(args.mbytes * 1e6), args, deadline))
                else:
                    th = threading.Thread(target=socket_http_flow, daemon=True,
                                          args=(fl, urls, [exps_by_url[u] for u in urls], args, deadline))
                threads.append(th)
            for th in threads:
                th.start()
            hard = deadline + 5.0
            while not all(f.done.is_set() for f in flows):
                if not ready_done and all(f.prog.bytes > 0 or f.done.is_set() for f in flows):
                    touch(args.ready_file)
                    ready_done = True
                if now() > hard:
                    for f in flows:
                        if not f.done.is_set():
                            f.finish(False, "timeout (thread did not finish)")
                    break
                time.sleep(0.005)
    finally:
        if tmpdir and not args.out_dir and not args.keep_files:
            shutil.rmtree(tmpdir, ignore_errors=True)
    t_end = max([f.t_end or now() for f in flows] + [t_start])
    if not ready_done:
        touch(args.ready_file)
    summary = summarize(kind, mode, flows, t_start, t_end, args.fail_cap)
    if args.trace:
        write_trace(args.trace, flows, t_start)
    return summary


# ----------------------------------------------------------------------------- CLI
def build_urls(args) -> list[str]:
    urls = list(args.url or [])
    for n in args.gen or []:
        urls.append(f"http://{args.host}:{args.port}/gen/{n}")
    if not urls:
        raise SystemExit("clients.py: give --url URL and/or --gen SIZE")
    return urls


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p, default_port):
        p.add_argument("--host", default=ftenv.get("FT_VIP"), help="server address (default $FT_VIP)")
        p.add_argument("--port", type=int, default=default_port)
        p.add_argument("--timeout", type=float, default=60.0, help="whole-run deadline, seconds")
        p.add_argument("--connect-timeout", type=float, default=5.0)
        p.add_argument("--rate", type=float, default=None, help="per-flow rate limit, bytes/s")
        p.add_argument("--trace", help="write per-flow (t, bytes) events as JSON lines here")
        p.add_argument("--ready-file", help="create this file once every flow has made progress")
        p.add_argument("--no-events", action="store_true", help="do not keep the event list (stall still exact)")
        p.add_argument("--fail-cap", type=int, default=50, help="max entries in the failed list")
        p.add_argument("--pretty", action="store_true")

    def http(p):
        p.add_argument("--mode", choices=["socket", "curl"], default="socket")
        p.add_argument("--url", action="append", help="URL (repeatable; flows cycle through them)")
        p.add_argument("--gen", action="append", type=int, help="add http://HOST:PORT/gen/SIZE")
        p.add_argument("--sha256", help="expected sha256 of every body")
        p.add_argument("--size", type=int, help="expected body size")
        p.add_argument("--no-gen", action="store_true", help="do not derive expectations from /gen/<n>")
        p.add_argument("--no-verify", action="store_true", help="accept bodies without a sha256 expectation")
        p.add_argument("--expect-status", type=int, default=200)
        p.add_argument("--poll-ms", type=float, default=2.0, help="curl mode: progress poll interval")
        p.add_argument("--out-dir", help="curl mode: keep bodies here (default: temp dir, removed)")
        p.add_argument("--keep-files", action="store_true")

    d = sub.add_parser("download", help="N concurrent single-GET downloads")
    common(d, 80)
    http(d)
    d.add_argument("-n", "--flows", type=int, default=1)

    k = sub.add_parser("keepalive", help="K concurrent clients, M sequential GETs on one connection each")
    common(k, 80)
    http(k)
    k.add_argument("-k", "--clients", type=int, default=1)
    k.add_argument("-m", "--requests", type=int, default=10)

    e = sub.add_parser("echo", help="N concurrent echo streams, byte-exact")
    common(e, 7)
    e.add_argument("-n", "--flows", type=int, default=1)
    e.add_argument("--mbytes", type=float, default=1.0, help="MB (10^6 bytes) per flow")
    e.add_argument("--chunk", type=int, default=16384, help="bytes per send() (max 65536)")
    e.add_argument("--seed", type=int, default=1)
    e.add_argument("--half-close", action="store_true", help="shutdown(SHUT_WR) after the last byte")

    args = ap.parse_args(argv)
    if args.cmd == "download":
        urls = build_urls(args)
        jobs = [(urls[i % len(urls)], [urls[i % len(urls)]]) for i in range(args.flows)]
        res = run("download", args, jobs)
    elif args.cmd == "keepalive":
        if not 1 <= args.requests <= 100000:
            raise SystemExit("clients.py: --requests must be 1..100000")
        urls = build_urls(args)
        jobs = []
        for i in range(args.clients):
            seq = [urls[(i + j) % len(urls)] for j in range(args.requests)]
            jobs.append((f"{urls[i % len(urls)]} x{args.requests}", seq))
        res = run("keepalive", args, jobs)
    else:
        jobs = [(f"{args.host}:{args.port} {args.mbytes}MB", []) for _ in range(args.flows)]
        res = run("echo", args, jobs)
    print(json.dumps(res, indent=2 if args.pretty else None), flush=True)
    return 0 if res["completed_byte_exact"] == res["flows"] else 1


if __name__ == "__main__":
    sys.exit(main())
