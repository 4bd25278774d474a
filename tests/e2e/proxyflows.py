#!/usr/bin/env python3
"""Clients of tests/e2e/proxy.sh's proxy_tls_kill and proxy_banner_kill (Python 3.11 stdlib, curl,
openssl), kernel sockets, run in the client namespace against the proxy's VIP port:

  ip netns exec ftc proxyflows.py tls --target 198.18.0.100:8443 --cafile CA.pem \\
      --flow curl:one.example --flow sclient-big:two.example --flow pyssl-pieces:one.example ...
  ip netns exec ftc proxyflows.py banner --target 198.18.0.100:9002 --flows 4 --bytes 6000000

tls: every --flow KIND:SNI[:SIZE] (SIZE default --size) is one connection, one GET /gen/SIZE of
HTTP/1.0 over TLS, the name verified against --cafile; the body checked against gen.py's stream
(lives_core.expected, computed here, never read from the backends' files), paced to take about
--flow-seconds. Kinds:
  curl          curl --resolve SNI:PORT:VIP --cacert CA https://SNI:PORT/gen/SIZE (--limit-rate)
  sclient       openssl s_client -servername SNI -verify_hostname SNI -verify_return_error, the
                request on its stdin, its stdout read here (paced: s_client blocks, the window
                closes)
  sclient-big   the same with an ALPN list padded to --pad bytes before http/1.1: a ClientHello
                record of several segments, as a post-quantum key share makes one
  pyssl         Python ssl over a memory BIO on a kernel socket
  pyssl-pieces  the same, its ClientHello record written in --pieces pieces (the first 3 bytes,
                then the record header's end, then the rest in equal parts), 30 ms apart: the
                proxy reads it across segments and partial headers
  pyssl-any     the name is not verified; the certificate must name --expect-cert (an unknown SNI,
                or none with SNI "-", goes to the default pool)
  plain         not TLS: "GET / HTTP/1.1" first; the proxy must close (FIN) without a byte, no RST
  alert         a TLS record that is not a handshake (an alert): closed the same way
  srvhello      a handshake record that is not a ClientHello (a ServerHello type): closed the same way

banner: --flows connections that send nothing until the server's banner line
("220 <ip> flowtwin-banner\\r\\n") arrived (within --banner-timeout), then an echo stream of
--bytes (lives_core.echo_stream: paced to --flow-seconds, every byte checked, FIN, EOF).

--ready-file is written once every flow has progressed. One JSON line on stdout; exit 0 iff every
flow succeeded:
  {"flows":N,"ok":N,"failed":[{"kind","id","sni","error"}],"by_kind":{...},"connections":N,
   "max_stall_ms":X,"max_stall_flow":"kind/id","long_flows":[{"kind","id","ok","t_done_wall"}],
   "banners":{"<ip>":N}, "certs":{"<kind>/<id>":"<name>"}, "t_start_wall":t,"duration_s":s}
"""
from __future__ import annotations

import sys

sys.dont_write_bytecode = True

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import ssl  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from types import SimpleNamespace  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen  # noqa: E402
import lives_core  # noqa: E402
from lives_core import (  # noqa: E402
    Conn, FlowError, Run, check_file, check_header, curl_progress, echo_pattern, echo_stream,
    expected_sha256, kind_stats, read_body, read_header, run_flow, run_jobs, start_curl, worst_stall,
)

now = time.monotonic
MiB = 1 << 20
LONG = 8 * MiB          # tls: downloads at least this large are long flows (in flight at a kill)
TLS_KINDS = ["curl", "sclient", "sclient-big", "pyssl", "pyssl-pieces", "pyssl-any", "plain", "alert", "srvhello"]
BAD_KINDS = {"plain": b"GET / HTTP/1.1\r\nHost: one.example\r\n\r\n",
             "alert": b"\x15\x03\x03\x00\x02\x02\x28",                       # alert: fatal handshake_failure
             "srvhello": b"\x16\x03\x03\x00\x08\x02\x00\x00\x04\x03\x03\x00\x00"}  # handshake type 2
R: Run
A: argparse.Namespace
CONNS = [0]
CONN_LOCK = threading.Lock()
CERTS: dict[str, str] = {}
BANNERS: dict[str, int] = {}


def count_conn(n: int = 1) -> None:
    with CONN_LOCK:
        CONNS[0] += n


def rate(n: int) -> float | None:
    return n / A.flow_seconds if n > MiB and A.flow_seconds > 0 else None


def request(sni: str, n: int) -> bytes:
    return f"GET /gen/{n} HTTP/1.0\r\nHost: {sni}\r\nUser-Agent: flowtwin-proxy-e2e\r\n\r\n".encode()


# ----------------------------------------------------------------------------- TLS over a memory BIO
class TlsConn:
    """TLS on a lives_core.Conn through memory BIOs, so that the ClientHello's bytes can be
    written in pieces. Quacks like Conn for read_header/read_body (buf, fl, recv)."""

    def __init__(self, conn: Conn, ctx: ssl.SSLContext, sni: str | None, pieces: int):
        self.conn, self.fl, self.buf = conn, conn.fl, bytearray()
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_side=False, server_hostname=sni)
        first = True
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as e:
                raise FlowError(f"TLS handshake: {e}") from None
            data = self.out.read()
            if data and first and pieces > 1:
                self.send_pieces(data, pieces)
            elif data:
                conn.send(data)
            first = False
            b = self.raw_recv()
            if not b:
                raise FlowError("EOF in the TLS handshake")
            self.inc.write(b)
        self.flush()

    def send_pieces(self, data: bytes, pieces: int) -> None:
        """The ClientHello record: 3 bytes, then to the end of its 5-byte header, then the rest in
        pieces - 2 parts, each its own segment (TCP_NODELAY, 30 ms apart)."""
        cuts = [3, 5]
        rest = len(data) - 5
        for k in range(1, pieces - 1):
            cuts.append(5 + rest * k // (pieces - 1))
        cuts = sorted(set(c for c in cuts if 0 < c < len(data)))
        at = 0
        for c in cuts + [len(data)]:
            self.conn.send(data[at:c])
            at = c
            if c < len(data):
                time.sleep(0.03)
        self.fl.info["hello_bytes"] = len(data)

    def raw_recv(self) -> bytes:
        """Ciphertext from the socket (no progress event: progress is plaintext)."""
        rem = R.remaining()
        if rem <= 0:
            raise FlowError("timeout")
        try:
            self.conn.sock.settimeout(rem)
            return self.conn.sock.recv(65536)
        except OSError as e:
            raise FlowError(lives_core.oserr(e)) from None

    def flush(self) -> None:
        data = self.out.read()
        if data:
            self.conn.send(data)

    def send(self, data: bytes) -> None:
        self.obj.write(data)
        self.flush()

    def recv(self, limit: int, timeout: float | None = None) -> bytes:
        while True:
            try:
                data = self.obj.read(limit)
                if data:
                    self.fl.got(len(data))
                return data
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:
                return b""  # close_notify
            except ssl.SSLError as e:
                raise FlowError(f"TLS: {e}") from None
            self.flush()
            b = self.raw_recv()
            if not b:
                raise FlowError("TCP EOF without TLS close_notify")
            self.inc.write(b)

    def peer_names(self) -> list[str]:
        c = self.obj.getpeercert() or {}
        return [v for k, v in c.get("subjectAltName", ()) if k == "DNS"]


def flow_pyssl(fl, kind: str, sni: str, n: int) -> None:
    ctx = ssl.create_default_context(cafile=A.cafile)
    if kind == "pyssl-any":
        ctx.check_hostname = False  # the name is checked below, against --expect-cert
    conn = Conn(fl, R.http_addr)
    count_conn()
    try:
        fl.step = "TLS handshake"
        t = TlsConn(conn, ctx, None if sni == "-" else sni, A.pieces if kind == "pyssl-pieces" else 1)
        names = t.peer_names()
        CERTS[f"{kind}/{fl.id}"] = ",".join(names)
        if kind == "pyssl-any" and A.expect_cert not in names:
            raise FlowError(f"SNI {sni}: the certificate names {names}, not {A.expect_cert} (the default pool's)")
        fl.step = f"GET /gen/{n}"
        t.send(request(sni if sni != "-" else "none.example", n))
        fl.pace(rate(n))
        check_header(read_header(t), n, "either")
        read_body(t, n)
        fl.pace(None)
        fl.step = "after the body"
        if t.buf or t.recv(65536, timeout=A.eof_timeout):
            raise FlowError("bytes after the body")
    finally:
        conn.close()


# ----------------------------------------------------------------------------- curl, s_client
def flow_curl(fl, sni: str, n: int) -> None:
    port = R.http_addr[1][1]
    vip = R.http_addr[1][0]
    path = os.path.join(R.tmpdir, f"curl{fl.id}")
    cmd = ["curl", "-s", "-S", "--http1.1", "--resolve", f"{sni}:{port}:{vip}", "--cacert", A.cafile,
           "--max-time", str(int(R.remaining())), "-o", path, "-w", "%{http_code} %{num_connects} %{ssl_verify_result}"]
    r = rate(n)
    if r:
        cmd += ["--limit-rate", str(int(r))]
    cmd.append(f"https://{sni}:{port}/gen/{n}")
    fl.step = f"curl GET https://{sni}:{port}/gen/{n}"
    p = start_curl(cmd, subprocess.DEVNULL, subprocess.PIPE)
    fl.pace(r)
    curl_progress(fl, p, [path], f" of {n}")
    out, err = p.communicate()
    w = out.decode(errors="replace").split()
    if len(w) == 3 and w[1].isdigit():
        count_conn(int(w[1]))
    if p.returncode != 0 or len(w) != 3 or w[0] != "200" or w[2] != "0":
        raise FlowError(f"curl exit {p.returncode}, code/connects/verify {w}: {err.decode(errors='replace').strip()[:200]}")
    check_file(path, n)
    fl.payload = n


class PipeConn:
    """s_client's stdout as a Conn for read_header/read_body."""

    def __init__(self, fl, f):
        self.fl, self.f, self.buf = fl, f, bytearray()

    def recv(self, limit: int, timeout: float | None = None) -> bytes:
        data = self.f.read1(limit)
        if data:
            self.fl.got(len(data))
        return data


def flow_sclient(fl, kind: str, sni: str, n: int) -> None:
    vip, port = R.http_addr[1][0], R.http_addr[1][1]
    cmd = ["openssl", "s_client", "-connect", f"{vip}:{port}", "-servername", sni, "-CAfile", A.cafile,
           "-verify_hostname", sni, "-verify_return_error", "-quiet", "-no_ign_eof"]
    if kind == "sclient-big":
        # ALPN names of 200 bytes each, then the one nginx takes: a ClientHello of several segments
        names = [f"x-flowtwin-pad-{i:03d}-".ljust(200, "p") for i in range(max(1, A.pad // 201))]
        cmd += ["-alpn", ",".join(names + ["http/1.1"])]
        fl.info["alpn_bytes"] = sum(len(x) + 1 for x in names) + 9
    fl.step = f"s_client {sni} GET /gen/{n}"
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with R.lock:
        R.procs.append(p)
    count_conn()
    err: list[bytes] = []
    threading.Thread(target=lambda: err.append(p.stderr.read()), daemon=True).start()
    try:
        # -no_ign_eof: s_client ends when the server closes; stdin stays open until then
        p.stdin.write(request(sni, n))
        p.stdin.flush()
        c = PipeConn(fl, p.stdout)
        fl.pace(rate(n))
        try:
            check_header(read_header(c), n, "either")
            read_body(c, n)
        except FlowError as e:
            p.kill()
            p.wait()
            time.sleep(0.05)
            raise FlowError(f"{e}; s_client exit {p.returncode}: {b''.join(err).decode(errors='replace').strip()[-240:]}") from None
        fl.pace(None)
        fl.step = "after the body"
        if p.stdout.read(1):
            raise FlowError("bytes after the body")
        p.stdin.close()
        rc = p.wait(timeout=max(1.0, R.remaining()))
        if rc != 0:
            raise FlowError(f"s_client exit {rc}: {b''.join(err).decode(errors='replace').strip()[-240:]}")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


# ----------------------------------------------------------------------------- bad input
def flow_bad(fl, kind: str) -> None:
    """The first record is not a ClientHello: the proxy closes in order (EOF, no byte, no reset)."""
    conn = Conn(fl, R.http_addr)
    count_conn()
    try:
        fl.step = f"{kind}: sent {BAD_KINDS[kind][:20]!r}, waiting for the proxy's FIN"
        conn.send(BAD_KINDS[kind])
        t0 = now()
        data = conn.recv(4096, timeout=A.eof_timeout)
        if data:
            raise FlowError(f"answered {len(data)} bytes {data[:40]!r} (want: closed without a byte)")
        fl.info["fin_ms"] = round((now() - t0) * 1000, 1)
        fl.payload = 1
    finally:
        conn.close()


# ----------------------------------------------------------------------------- banner
def flow_banner(fl, n: int) -> None:
    conn = Conn(fl, R.http_addr)
    count_conn()
    fl.step = "waiting for the banner (nothing sent)"
    t0 = now()
    line = b""
    while not line.endswith(b"\r\n"):
        try:
            b = conn.recv(256, timeout=A.banner_timeout - (now() - t0))
        except FlowError as e:
            conn.close()
            raise FlowError(f"{e}: no banner after {now() - t0:.1f} s ({line!r} so far)") from None
        if not b:
            conn.close()
            raise FlowError(f"EOF before the banner ({line!r})")
        line += b
        if len(line) > 100:
            break
    parts = line.decode(errors="replace").split()
    if len(parts) != 3 or parts[0] != "220" or parts[2] != "flowtwin-banner" or not line.endswith(b"\r\n"):
        conn.close()
        raise FlowError(f"bad banner {line!r}")
    fl.info["banner_ms"] = round((now() - t0) * 1000, 1)
    fl.info["backend"] = parts[1]
    with CONN_LOCK:
        BANNERS[parts[1]] = BANNERS.get(parts[1], 0) + 1
    fl.ready.set()
    # every echoed byte after the banner is checked: a second banner (a reconnect) is a mismatch
    echo_stream(fl, conn, memoryview(echo_pattern(A.seed, fl.id)), n, rate(n), 16384)
    fl.payload = n


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    global R, A
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["tls", "banner"])
    ap.add_argument("--target", required=True, help="VIP:PORT")
    ap.add_argument("--flow", action="append", default=[], help="tls: KIND:SNI[:SIZE]")
    ap.add_argument("--cafile")
    ap.add_argument("--size", type=int, default=20 * MiB)
    ap.add_argument("--pad", type=int, default=4000, help="sclient-big: ALPN padding bytes")
    ap.add_argument("--pieces", type=int, default=4, help="pyssl-pieces: ClientHello pieces")
    ap.add_argument("--expect-cert", default="default.example", help="pyssl-any: the certificate's name")
    ap.add_argument("--flows", type=int, default=4, help="banner: connections")
    ap.add_argument("--bytes", type=int, default=6_000_000, help="banner: echo bytes per connection")
    ap.add_argument("--banner-timeout", type=float, default=3.0)
    ap.add_argument("--flow-seconds", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--ready-file")
    ap.add_argument("--timeout", type=float, default=40.0)
    ap.add_argument("--connect-timeout", type=float, default=5.0)
    ap.add_argument("--eof-timeout", type=float, default=3.0)
    a = ap.parse_args(argv)
    host, _, port = a.target.rpartition(":")
    A = a
    for k in range(256):  # gen.py's block variants before the clock starts
        gen.gen_bytes(k * gen.GEN_BLOCK, 1)
    R = lives_core.R = Run(SimpleNamespace(
        host=host, http_port=int(port), echo_port=int(port), timeout=a.timeout, connect_timeout=a.connect_timeout,
        eof_timeout=a.eof_timeout, strict_headers=False, rate=1.0, big_rate=1.0, kill_file=None, seed=a.seed))
    jobs = []
    kinds = TLS_KINDS if a.mode == "tls" else ["banner"]
    if a.mode == "tls":
        if not a.cafile:
            ap.error("tls needs --cafile")
        for i, spec in enumerate(a.flow):
            kind, _, rest = spec.partition(":")
            sni, _, size = rest.partition(":")
            if kind not in TLS_KINDS:
                ap.error(f"unknown kind {kind!r} ({', '.join(TLS_KINDS)})")
            n = int(size) if size else a.size
            if kind not in BAD_KINDS:
                expected_sha256(n)
            fl = R.new_flow(kind, i)
            fl.info["sni"] = sni
            fl.info["size"] = 0 if kind in BAD_KINDS else n
            if kind == "curl":
                jobs.append((run_flow, (fl, flow_curl, sni, n)))
            elif kind.startswith("sclient"):
                jobs.append((run_flow, (fl, flow_sclient, kind, sni, n)))
            elif kind.startswith("pyssl"):
                jobs.append((run_flow, (fl, flow_pyssl, kind, sni, n)))
            else:
                jobs.append((run_flow, (fl, flow_bad, kind)))
    else:
        for i in range(a.flows):
            fl = R.new_flow("banner", i, ready_on_byte=False)
            jobs.append((run_flow, (fl, flow_banner, a.bytes)))
    t_end = run_jobs(jobs, a.ready_file, "moved")
    flows = list(R.flows)
    failed = [f for f in flows if not f.ok]
    worst = worst_stall(flows)
    off = R.t_start_wall - R.t_start
    res = {
        "flows": len(flows), "ok": len(flows) - len(failed),
        "failed": [{"kind": f.kind, "id": f.id, "sni": f.info.get("sni"), "error": f.error} for f in failed],
        "by_kind": {k: v for k, v in kind_stats(flows, kinds).items() if v["flows"]},
        "connections": CONNS[0],
        "max_stall_ms": round(worst.max_stall * 1000, 3) if worst else 0.0,
        "max_stall_flow": f"{worst.kind}/{worst.id}" if worst else None,
        "long_flows": [{"kind": f.kind, "id": f.id, "sni": f.info.get("sni"), "ok": f.ok, "t_done_wall": round(f.t_done + off, 6)}
                       for f in flows if f.kind == "banner" or f.info.get("size", 0) >= LONG],
        "info": {f"{f.kind}/{f.id}": f.info for f in flows},
        "certs": CERTS, "banners": BANNERS,
        "t_start_wall": round(R.t_start_wall, 6), "duration_s": round(t_end - R.t_start, 6),
    }
    print(json.dumps(res), flush=True)
    return 0 if res["flows"] > 0 and res["ok"] == res["flows"] else 1


if __name__ == "__main__":
    sys.exit(main())
