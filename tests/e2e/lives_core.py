"""The core of tests/e2e/lives.py (the "many lives" client) and tests/e2e/proxyclients.py (the
proxy's clients): the expected bytes, the run state shared by the flow threads (`Run`; each
client's main sets `R`), a flow's outcome and stall tracking (`Flow`), the socket helpers every
kind uses (`Conn`, `get`, `read_body`, ...), the echo stream, curl's progress and file check, the
run of the flow threads (`run_jobs`) and the parts of the summary both clients share. The kinds,
the mix and the summary are in lives.py and proxyclients.py. Python 3.11 stdlib only.
"""
from __future__ import annotations

import hashlib
import os
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen  # noqa: E402

now = time.monotonic
MiB = 1 << 20
PACE_MIN = 1_000_000      # downloads larger than this are paced to --rate
BIG_MIN = 64 * MiB        # downloads at least this large are paced to --big-rate
MAX_HEADER = 8192
CURL_POLL = 0.002         # curl's progress: its output files' sizes, polled this often, s
FAIL_CAP = 50             # failures listed in a summary


_flip = os.environ.get("LIVES_SELFTEST_FLIP")
FLIP = int(_flip) if _flip not in (None, "") else None


class FlowError(Exception):
    pass


def oserr(e: OSError) -> str:
    """Short names for the socket errors a failover can cause."""
    if isinstance(e, ConnectionResetError):
        return "connection reset"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, BrokenPipeError):
        return "broken pipe"
    if isinstance(e, TimeoutError):
        return "timeout"
    return f"{type(e).__name__}: {e}"


# ----------------------------------------------------------------------------- expected bytes
def expected(off: int, n: int) -> bytes:
    """Body bytes [off, off+n) of any /gen object (gen.py), with the self-test flip applied."""
    b = gen.gen_bytes(off, n)
    if FLIP is not None and off <= FLIP < off + n:
        x = bytearray(b)
        x[FLIP - off] ^= 0xFF
        b = bytes(x)
    return b


_sha_lock = threading.Lock()
_sha_cache: dict[int, str] = {}


def expected_sha256(n: int) -> str:
    """sha256 of /gen/<n> (gen.gen_sha256; streamed through expected() under the self-test flip)."""
    with _sha_lock:
        if n not in _sha_cache:
            if FLIP is None:
                _sha_cache[n] = gen.gen_sha256(n)
            else:
                h = hashlib.sha256()
                for off in range(0, n, MiB):
                    h.update(expected(off, min(MiB, n - off)))
                _sha_cache[n] = h.hexdigest()
        return _sha_cache[n]


def first_diff(a, b) -> int:
    m = min(len(a), len(b))
    return next((i for i in range(m) if a[i] != b[i]), m)


ECHO_PERIOD = 65537  # prime > the largest recv: a segment misplaced by any multiple of 64 KiB is caught
ECHO_MAXREAD = 65536


def echo_pattern(seed: int, fid: int) -> bytes:
    """Per-flow echo bytes: byte at stream offset o is p[o % ECHO_PERIOD]; the buffer repeats its first
    ECHO_MAXREAD bytes so that p[o % P : o % P + n] (n <= ECHO_MAXREAD) is contiguous."""
    key = f"flowtwin-lives-echo/{seed}/{fid}/".encode()
    out = bytearray()
    ctr = 0
    while len(out) < ECHO_PERIOD:
        out += hashlib.sha256(key + ctr.to_bytes(8, "little")).digest()
        ctr += 1
    base = bytes(out[:ECHO_PERIOD])
    return base + base[:ECHO_MAXREAD]


def echo_shift(pat: memoryview, data: bytes, k: int, recvd: int) -> str:
    """Where in the flow's pattern the wrong bytes come from: a stream shift (bytes repeated
    or skipped), zeros, or bytes that are not this flow's at all (for the next engineer)."""
    probe = bytes(data[k:k + 16])
    n = len(data) - k
    if len(probe) < 8:
        return f"; {n} wrong byte(s) at the end of a read of {len(data)}"
    if probe.count(0) == len(probe):
        return f"; zeros from there ({n} bytes of a read of {len(data)})"
    at = bytes(pat[:ECHO_PERIOD]).find(probe)
    if at < 0:
        return f"; not this flow's bytes (read of {len(data)}, first wrong: {probe.hex()})"
    shift = (at - (recvd + k)) % ECHO_PERIOD
    if shift > ECHO_PERIOD // 2:
        shift -= ECHO_PERIOD
    return (f"; they are the flow's bytes at offset {recvd + k + shift} (shift {shift:+d} mod "
            f"{ECHO_PERIOD}: negative = repeated, positive = skipped; read of {len(data)})")


# ----------------------------------------------------------------------------- run state
class Run:
    """Everything shared by the flow threads: arguments, clock, kill event, flow registry."""

    def __init__(self, args):
        self.args = args
        self.t_start = now()
        self.t_start_wall = time.time()
        self.deadline = self.t_start + args.timeout
        self.kill_event = threading.Event()   # set by the watcher thread
        self.kill_t: float | None = None      # monotonic time the watcher saw the kill file
        self.stop = threading.Event()         # end of run: watcher and pollers quit
        self.lock = threading.Lock()
        self.flows: list[Flow] = []
        self.ready_units: list[threading.Event] = []
        self.procs: list[subprocess.Popen] = []
        self.churn_next = 0                   # churn flow ids, in order of creation
        self.tmpdir = tempfile.mkdtemp(prefix="ft-lives-")
        h = args.host
        hh = f"[{h}]" if ":" in h else h
        self.hosthdr = hh if args.http_port == 80 else f"{hh}:{args.http_port}"
        self.http_addr = self._resolve(args.http_port)
        self.echo_addr = self._resolve(args.echo_port)

    def _resolve(self, port: int):
        fam, _t, _p, _c, addr = socket.getaddrinfo(self.args.host, port, type=socket.SOCK_STREAM)[0]
        return fam, addr

    def remaining(self) -> float:
        return self.deadline - now()

    def new_flow(self, kind: str, fid: int, ready_on_byte: bool = True, ready_unit: bool = True) -> "Flow":
        fl = Flow(kind, fid, ready_on_byte)
        with self.lock:
            self.flows.append(fl)
            if ready_unit:
                self.ready_units.append(fl.ready)
        return fl

    def sleep(self, secs: float) -> None:
        """Sleep, bounded by the deadline."""
        secs = min(secs, self.remaining())
        if secs > 0:
            time.sleep(secs)


R: Run = None  # type: ignore[assignment]  # lives.main() sets it before any flow runs


def rate_for(n: int) -> float | None:
    if n >= BIG_MIN:
        return R.args.big_rate
    if n > PACE_MIN:
        return R.args.rate
    return None


class Flow:
    """One flow's outcome and progress. Progress (got/pace/pause) is updated by the flow's own thread
    only; finish() may race with the main thread's deadline sweep, first caller wins."""

    def __init__(self, kind: str, fid: int, ready_on_byte: bool):
        self.kind = kind
        self.id = fid
        self.step = ""                  # what the flow is doing, prefixed to its error
        self.done = False
        self.t_done = 0.0
        self.ok = False
        self.error: str | None = None
        self.payload = 0                # verified body / echo bytes
        self.info: dict = {}
        self.ready = threading.Event()  # --ready-file unit
        self.ready_on_byte = ready_on_byte
        self._lock = threading.Lock()
        # progress and stall tracking
        self.nbytes = 0                 # every byte received (headers included)
        self.last_t = 0.0
        self.paused = False
        self.max_stall = 0.0
        self.max_stall_end = 0.0        # when the longest stall ended, and at which byte
        self.max_stall_byte = 0
        self.rate: float | None = None  # current pacing segment: rate, start time, bytes at start
        self.seg_t0 = 0.0
        self.seg_base = 0
        self.lead_at_switch = 0.0       # lead of the last event under the previous segment

    def lead(self, t: float) -> float:
        """Seconds this flow is ahead of its pacing schedule at time t (<= 0: not ahead)."""
        if not self.rate:
            return 0.0
        return (self.nbytes - self.seg_base) / self.rate - (t - self.seg_t0)

    def got(self, n: int) -> None:
        """n bytes received now: a progress event."""
        t = now()
        if self.nbytes > 0 and not self.paused:
            # the gap since the last event, less the time the flow was ahead of its schedule then
            # (an event before the current segment began is judged by the segment it belonged to)
            lead = self.lead_at_switch if self.last_t < self.seg_t0 else self.lead(self.last_t)
            stall = (t - self.last_t) - max(0.0, lead)
            if stall > self.max_stall:
                self.max_stall, self.max_stall_end, self.max_stall_byte = stall, t, self.nbytes
        self.paused = False
        self.nbytes += n
        self.last_t = t
        if self.ready_on_byte:
            self.ready.set()

    def pace(self, rate: float | None) -> None:
        """Start a pacing segment now (None: unpaced)."""
        self.lead_at_switch = self.lead(self.last_t)
        self.rate = rate
        self.seg_t0 = now()
        self.seg_base = self.nbytes

    def pace_wait(self) -> None:
        lead = self.lead(now())
        if lead > 0:
            R.sleep(lead)

    def pause(self) -> None:
        """The flow stops wanting bytes (idle, deliberate zero window): the gap is not a stall."""
        self.paused = True

    def resume(self) -> None:
        """The flow wants bytes again from now on."""
        self.paused = False
        self.last_t = now()

    def finish(self, ok: bool, error: str | None = None) -> bool:
        with self._lock:
            if self.done:
                return False
            self.done = True
            self.t_done = now()
            self.ok = ok
            if error is not None and self.step:
                error = f"{self.step}: {error}"
            self.error = error
        self.ready.set()
        return True


def run_flow(fl: Flow, fn, *a) -> None:
    """Run one flow body in the current thread and record its outcome."""
    try:
        fn(fl, *a)
        fl.finish(True)
    except FlowError as e:
        fl.finish(False, str(e))
    except OSError as e:
        fl.finish(False, oserr(e))
    except Exception as e:  # noqa: BLE001 — a harness bug must still produce a summary
        fl.finish(False, f"internal error: {type(e).__name__}: {e}")


# ----------------------------------------------------------------------------- sockets
class Conn:
    """A blocking kernel TCP socket (TCP_NODELAY) whose every wait is bounded by the deadline;
    every recv is a progress event of its flow. buf holds received bytes not yet consumed."""

    def __init__(self, fl: Flow, addr, rcvbuf: int | None = None):
        self.fl = fl
        self.buf = bytearray()
        fam, sa = addr
        rem = R.remaining()
        if rem <= 0:
            raise FlowError("timeout before connect")
        s = socket.socket(fam, socket.SOCK_STREAM)
        try:
            if rcvbuf:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: sets the window scale
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.settimeout(min(R.args.connect_timeout, rem))
            s.connect(sa)
        except OSError as e:
            s.close()
            raise FlowError(f"connect {sa[0]}:{sa[1]}: {oserr(e)}") from None
        self.sock = s
        # The client port names the flow in a capture (--ports-file): one RST's 4-tuple tells
        # which kind of client it was, and when it opened and closed.
        try:
            fl.info.setdefault("ports", []).append([s.getsockname()[1], round(time.time(), 6), None])
        except OSError:
            pass

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
        ports = self.fl.info.get("ports")
        if ports and ports[-1][2] is None:
            ports[-1][2] = round(time.time(), 6)

    def send(self, data: bytes) -> None:
        rem = R.remaining()
        if rem <= 0:
            raise FlowError("timeout before send")
        try:
            self.sock.settimeout(rem)
            self.sock.sendall(data)
        except OSError as e:
            raise FlowError(f"send: {oserr(e)}") from None

    def shutdown_wr(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            raise FlowError(f"shutdown(SHUT_WR): {oserr(e)}") from None

    def recv(self, limit: int, timeout: float | None = None) -> bytes:
        """Up to limit bytes; b'' at EOF. FlowError('timeout' / 'connection reset' / ...)."""
        rem = R.remaining() if timeout is None else min(R.remaining(), timeout)
        if rem <= 0:
            raise FlowError("timeout")
        try:
            self.sock.settimeout(rem)
            data = self.sock.recv(limit)
        except OSError as e:
            raise FlowError(oserr(e)) from None
        if data:
            self.fl.got(len(data))
        return data


def request(method: str, n: int, version: str = "1.1", close: bool = False) -> bytes:
    return (f"{method} /gen/{n} HTTP/{version}\r\nHost: {R.hosthdr}\r\n"
            + ("Connection: close\r\n" if close else "") + "\r\n").encode()


def read_header(conn: Conn) -> bytes:
    """The next response header section (through the empty line); later bytes stay in conn.buf."""
    while True:
        i = conn.buf.find(b"\r\n\r\n")
        if i >= 0:
            hdr = bytes(conn.buf[:i + 4])
            del conn.buf[:i + 4]
            return hdr
        if len(conn.buf) > MAX_HEADER:
            raise FlowError(f"no end of response header in {len(conn.buf)} bytes: {bytes(conn.buf[:80])!r}")
        try:
            data = conn.recv(4096)
        except FlowError as e:
            raise FlowError(f"{e} before end of response header ({len(conn.buf)} header bytes)") from None
        if not data:
            raise FlowError(f"EOF in response header after {len(conn.buf)} bytes: {bytes(conn.buf[:80])!r}"
                            if conn.buf else "EOF before response header")
        conn.buf += data


def check_header(hdr: bytes, n: int, want_conn: str) -> None:
    """want_conn: 'close', 'keep-alive' or 'either' (the Connection the engine must answer)."""
    text = hdr.decode("latin-1")
    lines = text[:-4].split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise FlowError(f"bad status line {lines[0][:80]!r}")
    if parts[1] != "200":
        raise FlowError(f"status {parts[1]} (expected 200): {lines[0][:80]!r}")
    if R.args.strict_headers:
        choices = ["close", "keep-alive"] if want_conn == "either" else [want_conn]
        exp = [f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\n"
               f"Connection: {c}\r\n\r\n".encode() for c in choices]
        if hdr not in exp:
            raise FlowError(f"response header {hdr[:240]!r} (expected {exp[0]!r}"
                            + (" or with Connection: close" if len(exp) > 1 else "") + ")")
        return
    hdrs: dict[str, str] = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    if "transfer-encoding" in hdrs:
        raise FlowError(f"Transfer-Encoding: {hdrs['transfer-encoding']} (expected Content-Length framing)")
    if hdrs.get("content-length") != str(n):
        raise FlowError(f"Content-Length {hdrs.get('content-length')!r} (expected {n})")
    c = hdrs.get("connection")
    if c is not None:
        is_close = "close" in c.lower()
        if (want_conn == "close" and not is_close) or (want_conn == "keep-alive" and is_close):
            raise FlowError(f"Connection: {c} (expected {want_conn})")


def verify(data, off: int, n: int) -> None:
    exp = expected(off, len(data))
    if data != exp:
        k = first_diff(data, exp)
        raise FlowError(f"byte mismatch at {off + k} of {n}: got 0x{data[k]:02x} expected 0x{exp[k]:02x}")


def read_body(conn: Conn, n: int, got: int = 0, stop: int | None = None) -> int:
    """Read and verify body bytes [got, stop) of /gen/<n> (stop defaults to n), paced by the flow's
    current segment; never reads past stop. Returns stop."""
    fl = conn.fl
    stop = n if stop is None else stop
    if conn.buf and got < stop:
        take = min(len(conn.buf), stop - got)
        verify(bytes(conn.buf[:take]), got, n)
        del conn.buf[:take]
        got += take
        fl.payload += take
    # paced: ~10 ms of data per recv keeps the sleeps (and so the gaps) short
    limit = max(16384, int(fl.rate / 100)) if fl.rate else 256 * 1024
    while got < stop:
        if fl.rate:
            fl.pace_wait()
        try:
            data = conn.recv(min(limit, stop - got))
        except FlowError as e:
            raise FlowError(f"{e} at {got} of {n}") from None
        if not data:
            raise FlowError(f"EOF at {got} of {n}")
        verify(data, got, n)
        got += len(data)
        fl.payload += len(data)
    return got


def expect_eof(conn: Conn, what: str) -> None:
    """The server must close (FIN) now: no further bytes, EOF within --eof-timeout."""
    if conn.buf:
        raise FlowError(f"extra bytes after {what}: {len(conn.buf)}+ bytes {bytes(conn.buf[:24])!r}")
    try:
        data = conn.recv(65536, timeout=R.args.eof_timeout)
    except FlowError as e:
        raise FlowError(f"{e} waiting for EOF after {what}") from None
    if data:
        raise FlowError(f"extra bytes after {what}: {len(data)}+ bytes {data[:24]!r}")


def get(conn: Conn, n: int, want_conn: str, version: str = "1.1", close: bool = False, label: str = "") -> None:
    """One request-response on conn: send, header check, whole body verified."""
    conn.fl.step = f"{label}GET /gen/{n}" + (" HTTP/1.0" if version == "1.0" else "")
    conn.send(request("GET", n, version, close))
    conn.fl.pace(rate_for(n))
    check_header(read_header(conn), n, want_conn)
    read_body(conn, n)


def keepalive_gets(conn: Conn, sizes: list[int], get1=get) -> None:
    """GET /gen/<n> for each n of sizes in turn on conn, each by get1(conn, n, "keep-alive", label=...)
    (get's signature), fl.info["requests_done"] counting them; then the client's FIN and the
    server's EOF. Closes conn."""
    fl = conn.fl
    try:
        for j, n in enumerate(sizes):
            get1(conn, n, "keep-alive", label=f"req {j} ")
            fl.info["requests_done"] = j + 1
        fl.step = f"after {len(sizes)} requests, client FIN"
        fl.pace(None)
        conn.shutdown_wr()
        expect_eof(conn, "client FIN")
    finally:
        conn.close()


# ----------------------------------------------------------------------------- echo
def echo_stream(fl: Flow, conn: Conn, pat: memoryview, total: int, rate: float | None, chunk: int) -> None:
    """total bytes of pat (echo_pattern) to conn in writes of at most chunk, paced to rate (None:
    unpaced), FIN after the last byte, the echo read concurrently (one selectors loop); every byte
    back must equal the byte sent at that offset, then EOF. Closes conn."""
    s = conn.sock
    sel = selectors.DefaultSelector()
    try:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
        writing = True
        sent = recvd = 0
        fl.pace(rate)  # the writer's schedule; the reader's lead is measured against it too
        fl.step = f"echo {total} bytes"
        while True:
            t = now()
            if t >= R.deadline:
                raise FlowError(f"timeout at {recvd} of {total} (sent {sent})")
            w_lead = (sent / rate - (t - fl.seg_t0)) if (rate and sent < total) else 0.0
            want_write = sent < total and w_lead <= 0
            if want_write != writing:
                sel.modify(s, selectors.EVENT_READ | (selectors.EVENT_WRITE if want_write else 0))
                writing = want_write
            wait = min(R.deadline - t, w_lead if w_lead > 0 else 0.5)
            for _key, mask in sel.select(max(0.0, wait)):
                if mask & selectors.EVENT_WRITE and sent < total:
                    o = sent % ECHO_PERIOD
                    try:
                        sent += s.send(pat[o:o + min(chunk, total - sent)])
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError as e:
                        raise FlowError(f"send at {sent} of {total}: {oserr(e)}") from None
                    if sent == total:
                        try:
                            s.shutdown(socket.SHUT_WR)  # FIN right after the last byte
                        except OSError as e:
                            raise FlowError(f"shutdown(SHUT_WR) at {recvd} of {total} echoed: {oserr(e)}") from None
                if mask & selectors.EVENT_READ:
                    try:
                        data = s.recv(ECHO_MAXREAD)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError as e:
                        raise FlowError(f"{oserr(e)} at {recvd} of {total} (sent {sent})") from None
                    if not data:
                        if recvd < total:
                            raise FlowError(f"EOF at {recvd} of {total} (sent {sent})")
                        return  # everything echoed, then the server's FIN
                    if recvd + len(data) > total:
                        raise FlowError(f"extra bytes after echo: {recvd + len(data) - total} beyond {total}")
                    if recvd + len(data) > sent:
                        raise FlowError(f"received {recvd + len(data)} bytes but sent only {sent}")
                    fl.got(len(data))
                    o = recvd % ECHO_PERIOD
                    exp = pat[o:o + len(data)]
                    if data != exp:
                        k = first_diff(data, exp)
                        raise FlowError(f"echo byte mismatch at {recvd + k} of {total}: "
                                        f"got 0x{data[k]:02x} expected 0x{exp[k]:02x}"
                                        f"{echo_shift(pat, data, k, recvd)}")
                    recvd += len(data)
                    fl.payload += len(data)
                    if recvd == total:
                        fl.step = f"echo {total} bytes done, waiting for EOF"
                        fl.pace(None)
                        s.setblocking(True)
                        sel.unregister(s)
                        conn.buf.clear()
                        expect_eof(conn, "echo")
                        return
    finally:
        sel.close()
        conn.close()


# ----------------------------------------------------------------------------- curl
def curl_env() -> dict:
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


def start_curl(cmd: list[str], stdin: int, stdout: int) -> subprocess.Popen:
    """curl, without the environment's proxy settings (curl_env), in R.procs: killed at the end
    of the run if it is still running then."""
    p = subprocess.Popen(cmd, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, env=curl_env())
    with R.lock:
        R.procs.append(p)
    return p


def curl_progress(fl: Flow, p: subprocess.Popen, files: list[str], of: str) -> int:
    """Until curl p exits: the total size of its output files, polled every CURL_POLL s, is fl's
    progress. At the deadline curl is killed: FlowError "timeout at <bytes><of> (curl killed)".
    Returns the bytes seen."""
    last = 0
    while True:
        exited = p.poll() is not None
        size = 0
        for f in files:
            try:
                size += os.stat(f).st_size
            except FileNotFoundError:
                pass
        if size > last:
            fl.got(size - last)
            last = size
        if exited:
            break
        if now() >= R.deadline:
            p.kill()
            p.wait()
            raise FlowError(f"timeout at {last}{of} (curl killed)")
        time.sleep(CURL_POLL)
    return last


def check_file(path: str, n: int) -> None:
    """A downloaded /gen/<n>: n bytes whose sha256 is expected_sha256(n); else the first wrong byte."""
    h = hashlib.sha256()
    length = 0
    with open(path, "rb") as f:
        while b := f.read(MiB):
            h.update(b)
            length += len(b)
    if length != n:
        raise FlowError(f"file size {length} (expected {n})")
    if h.hexdigest() != expected_sha256(n):
        with open(path, "rb") as f:  # locate the first wrong byte for the report
            off = 0
            while b := f.read(MiB):
                exp = expected(off, len(b))
                if b != exp:
                    k = first_diff(b, exp)
                    raise FlowError(f"sha256 mismatch; byte mismatch at {off + k} of {n}: "
                                    f"got 0x{b[k]:02x} expected 0x{exp[k]:02x}")
                off += len(b)
        raise FlowError("sha256 mismatch")


# ----------------------------------------------------------------------------- the run
def touch(path: str | None) -> None:
    if path:
        with open(path, "w") as f:
            f.write(f"{time.time()}\n")


def run_jobs(jobs: list[tuple], ready_file: str | None, moved: str) -> float:
    """One daemon thread per (target, args) of jobs, until all have ended or the deadline. ready_file
    is written once every ready unit is set (at the latest at the end); a flow not done at the end
    fails "timeout: <step>, <n> bytes <moved>"; then curl processes still running are killed and
    R.tmpdir is removed. Returns the (monotonic) end of the run."""
    threads = [threading.Thread(target=t, args=ar, daemon=True) for t, ar in jobs]
    for th in threads:
        th.start()

    ready_done = ready_file is None
    try:
        while any(th.is_alive() for th in threads) and now() < R.deadline:
            if not ready_done:
                with R.lock:
                    units = list(R.ready_units)
                if all(ev.is_set() for ev in units):
                    touch(ready_file)
                    ready_done = True
            time.sleep(0.005)
        t_end = now()
        # the hard deadline: whatever is still running has failed
        with R.lock:
            flows = list(R.flows)
        for f in flows:
            if not f.done:
                msg = f"timeout: {f.step or 'not started'}, {f.nbytes} bytes {moved}"
                f.step = ""
                f.finish(False, msg)
    finally:
        R.stop.set()
        with R.lock:
            procs = list(R.procs)
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(R.tmpdir, ignore_errors=True)
    if not ready_done:
        touch(ready_file)
    return t_end


# ----------------------------------------------------------------------------- summary
def kind_stats(flows: list[Flow], kinds: list[str]) -> dict:
    """Per kind: flows, ok, verified bytes, the longest stall (ms)."""
    by_kind = {}
    for k in kinds:
        fk = [f for f in flows if f.kind == k]
        by_kind[k] = {"flows": len(fk), "ok": sum(f.ok for f in fk), "bytes": sum(f.payload for f in fk),
                      "max_stall_ms": round(max((f.max_stall for f in fk), default=0.0) * 1000, 3)}
    return by_kind


def failed_sample(failed: list[Flow], kinds: list[str]) -> list[Flow]:
    """At most FAIL_CAP failures: round-robin over the kinds (each kind's earliest failures first),
    so 200 idle failures cannot hide the one echo failure."""
    per = [sorted((f for f in failed if f.kind == k), key=lambda f: f.t_done) for k in kinds]
    out: list[Flow] = []
    i = 0
    while len(out) < FAIL_CAP and any(i < len(p) for p in per):
        out += [p[i] for p in per if i < len(p)]
        i += 1
    return out[:FAIL_CAP]


def worst_stall(flows: list[Flow]) -> Flow | None:
    """The flow with the longest stall (None if no flow stalled at all)."""
    worst = max(flows, key=lambda f: f.max_stall, default=None)
    if worst is not None and worst.max_stall <= 0:
        worst = None
    return worst
