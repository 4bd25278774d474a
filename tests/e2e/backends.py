#!/usr/bin/env python3
"""The proxy service's backends on the e2e rig: real Linux servers over kernel sockets, in their
own namespace on the switch (scripts/topology: FT_SRV_NS, addresses FT_SRV_IP1 and FT_SRV_IP2).
Python 3.11 stdlib, plus Debian's nginx.

  backends.py files --dir WWW [--sizes 1024,1048576,20971520,104857600]
      writes WWW/gen/<n>: n bytes of tests/e2e/gen.py's stream, so that GET /gen/<n> from nginx
      is the same object as from the engine's object service, and every client checks it
      against gen.gen_sha256(n), computed without reading the file (a corrupted or truncated
      file is caught).

  ip netns exec ftsrv backends.py serve --ips 198.18.0.11,198.18.0.12 --www WWW --run-dir RUN
      [--http-port 80] [--echo-port 9000] [--upload-port 9001] [--ready-file F] [--stats-file F]
      [--inject KIND[,KIND...]] [--drain-s 3] [--max-seconds 600]
      [--tls IP:PORT:NAME[,...] --tls-dir DIR] [--banner-port P]

Servers, each on every --ips address:
  :http-port    nginx (own config, pid, error and access logs, temp dirs under RUN; never the
                system's): static files from WWW, keep-alive, HTTP/1.0 and Connection: close as
                nginx does them. The access log has one line per request with its connection
                serial number ($connection), so the connections that carried requests can be
                counted per backend address; stub_status on a unix socket (RUN/status.sock)
                gives nginx's own count of accepted connections.
  :echo-port    echo: every byte back; at the client's FIN, the rest, then FIN.
  :upload-port  upload: reads until the client's FIN, then answers "<sha256 hex> <bytes>\\n" and
                closes.
  --tls         more nginx servers (same nginx, same root): IP:PORT with TLS, presenting
                DIR/NAME.pem (key DIR/NAME.key), one name per listener, so that a client that
                verifies the name knows which listener it reached; their own access log
                (RUN/tls-access.log) records the SNI ($ssl_server_name) of every request.
  :banner-port  server speaks first (like SMTP): at accept it writes "220 <ip> flowtwin-banner\r\n",
                then echoes as :echo-port does.
Echo, upload and banner count their accepted connections, bytes, and socket errors (a reset seen
by a backend is one) per address.

Stats (JSON, written atomically to --stats-file) on SIGUSR1 and at the end (SIGTERM/SIGINT or
--max-seconds). At the end it first waits up to --drain-s for every backend connection to be
closed (a proxy that leaves backend connections open is seen as "open_at_end"), then stops
nginx and reads its access log:

  {"final": true, "services": {"http": {"198.18.0.11": {"connections": N, "requests": N,
     "incomplete": N, "statuses": {"200": N}, "bytes": N}, ...}, "echo": {...}, "upload": {...},
     "tls": {"198.18.0.11:443": {"connections", "requests", "incomplete", "statuses", "bytes",
     "sni": {"one.example": N}}, ...}, "banner": {...}},
   "nginx": {"accepts": N, "handled": N, "requests": N, "active": N} (status queries left out),
   "open_at_end": {"http": N, "echo": N, "upload": N}, "errors": [...], "injected": {...}}
   (echo/upload per address: connections = accepted, bytes_in, bytes_out, errors, active)

--inject makes the backends wrong on purpose, so the harness is seen to fail (self-checks):
  upload-digest  the first upload is answered with a wrong digest (one hex digit changed)
  echo-byte      the first echo connection that reaches 100000 bytes echoes that byte flipped
  rst            the first upload connection is closed with a RST (SO_LINGER 0) instead of answered
  extra-conn     the echo server reports one accepted connection more than it accepted
  banner-byte    the first banner connection that reaches 100000 echoed bytes echoes that byte flipped
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen  # noqa: E402

MiB = 1 << 20
DEFAULT_SIZES = [1024, MiB, 20 * MiB, 100 * MiB]
INJECT_KINDS = ("upload-digest", "echo-byte", "rst", "extra-conn", "banner-byte")
ECHO_FLIP_AT = 100_000


# ----------------------------------------------------------------------------- files
def write_files(www: str, sizes: list[int]) -> list[str]:
    d = os.path.join(www, "gen")
    os.makedirs(d, exist_ok=True)
    out = []
    for n in sizes:
        path = os.path.join(d, str(n))
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            off = 0
            while off < n:
                m = min(4 * MiB, n - off)
                f.write(gen.gen_bytes(off, m))
                off += m
        os.replace(tmp, path)
        out.append(path)
    return out


# ----------------------------------------------------------------------------- stats
class Stats:
    """Per-service, per-address counters of the Python servers; one lock for all."""

    def __init__(self):
        self.lock = threading.Lock()
        self.svc: dict[str, dict[str, dict]] = {}
        self.errors: list[str] = []
        self.error_count = 0

    def entry(self, svc: str, ip: str) -> dict:
        return self.svc.setdefault(svc, {}).setdefault(
            ip, {"connections": 0, "active": 0, "bytes_in": 0, "bytes_out": 0, "errors": 0, "banners": 0})

    def add(self, svc: str, ip: str, **kv) -> None:
        with self.lock:
            e = self.entry(svc, ip)
            for k, v in kv.items():
                e[k] += v

    def error(self, svc: str, ip: str, text: str) -> None:
        with self.lock:
            self.entry(svc, ip)["errors"] += 1
            self.error_count += 1
            if len(self.errors) < 20:
                self.errors.append(f"{svc} {ip}: {text}")

    def active(self, svc: str) -> int:
        with self.lock:
            return sum(e["active"] for e in self.svc.get(svc, {}).values())


class Injector:
    """--inject: each fault fires once."""

    def __init__(self, kinds: list[str]):
        self.want = set(kinds)
        self.fired: dict[str, str] = {}
        self.lock = threading.Lock()

    def take(self, kind: str, what: str) -> bool:
        with self.lock:
            if kind in self.want and kind not in self.fired:
                self.fired[kind] = what
                return True
            return False


# ----------------------------------------------------------------------------- echo, upload
def echo_conn(s: socket.socket, peer, ip: str, st: Stats, inj: Injector, svc: str = "echo") -> None:
    total = 0
    flip = None
    fault = "echo-byte" if svc == "echo" else f"{svc}-byte"
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            st.add(svc, ip, bytes_in=len(b))
            if flip is None and total + len(b) > ECHO_FLIP_AT and inj.take(fault, f"{peer[0]}:{peer[1]} byte {ECHO_FLIP_AT}"):
                flip = ECHO_FLIP_AT
                x = bytearray(b)
                x[ECHO_FLIP_AT - total] ^= 0xFF
                b = bytes(x)
            s.sendall(b)
            total += len(b)
            st.add(svc, ip, bytes_out=len(b))
        s.shutdown(socket.SHUT_WR)
    except OSError as e:
        st.error(svc, ip, f"{peer[0]}:{peer[1]} after {total} bytes: {type(e).__name__}: {e}")


def banner_line(ip: str) -> bytes:
    return f"220 {ip} flowtwin-banner\r\n".encode()


def banner_conn(s: socket.socket, peer, ip: str, st: Stats, inj: Injector) -> None:
    """Server speaks first: the banner at once, before reading anything; then echo."""
    b = banner_line(ip)
    try:
        s.sendall(b)
    except OSError as e:
        st.error("banner", ip, f"{peer[0]}:{peer[1]} banner: {type(e).__name__}: {e}")
        return
    st.add("banner", ip, bytes_out=len(b), banners=1)
    echo_conn(s, peer, ip, st, inj, svc="banner")


def upload_conn(s: socket.socket, peer, ip: str, st: Stats, inj: Injector) -> None:
    h = hashlib.sha256()
    n = 0
    try:
        while True:
            b = s.recv(256 * 1024)
            if not b:
                break
            h.update(b)
            n += len(b)
            st.add("upload", ip, bytes_in=len(b))
        if inj.take("rst", f"{peer[0]}:{peer[1]} after {n} bytes"):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return  # close() now sends a RST
        hexd = h.hexdigest()
        if inj.take("upload-digest", f"{peer[0]}:{peer[1]} ({n} bytes)"):
            hexd = ("1" if hexd[0] != "1" else "2") + hexd[1:]
        reply = f"{hexd} {n}\n".encode()
        s.sendall(reply)
        st.add("upload", ip, bytes_out=len(reply))
        # (the client's FIN came already: nothing is left unread, so close() sends a FIN, no RST)
    except OSError as e:
        st.error("upload", ip, f"{peer[0]}:{peer[1]} after {n} bytes: {type(e).__name__}: {e}")


def serve_listener(ls: socket.socket, svc: str, ip: str, handler, st: Stats, inj: Injector,
                   stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            s, peer = ls.accept()
        except socket.timeout:
            continue
        except OSError as e:
            if stop.is_set():
                return
            st.error(svc, ip, f"accept: {e}")
            time.sleep(0.01)
            continue
        st.add(svc, ip, connections=1, active=1)
        s.settimeout(None)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def run(s=s, peer=peer):
            try:
                handler(s, peer, ip, st, inj)
            finally:
                try:
                    s.close()
                except OSError:
                    pass
                st.add(svc, ip, active=-1)
        threading.Thread(target=run, daemon=True).start()


def listen(ip: str, port: int) -> socket.socket:
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((ip, port))
    ls.listen(4096)
    ls.settimeout(0.2)
    return ls


# ----------------------------------------------------------------------------- nginx
NGINX_CONF = """# written by tests/e2e/backends.py: the rig's backend nginx (never the system's)
daemon off;
master_process on;
worker_processes 1;
# the document root and logs are in the test's 0700 scratch directory
user root;
pid {run}/nginx.pid;
error_log {run}/nginx-error.log warn;
worker_rlimit_nofile 16384;
events {{ worker_connections 8192; }}
http {{
    log_format ft '$msec $server_addr $server_port $connection $connection_requests '
                  '$remote_addr $remote_port $status $body_bytes_sent $request_completion "$request"';
    log_format fttls '$msec $server_addr $server_port $connection $connection_requests '
                     '$remote_addr $remote_port $status $body_bytes_sent $request_completion '
                     '$ssl_server_name $ssl_protocol "$request"';
    access_log {run}/access.log ft;
    default_type application/octet-stream;
    types {{ }}
    sendfile on;
    tcp_nodelay on;
    keepalive_timeout 120s;
    keepalive_requests 100000;
    server_tokens off;
    reset_timedout_connection off;
    client_body_temp_path {run}/tmp/body;
    proxy_temp_path {run}/tmp/proxy;
    fastcgi_temp_path {run}/tmp/fastcgi;
    uwsgi_temp_path {run}/tmp/uwsgi;
    scgi_temp_path {run}/tmp/scgi;
    server {{
{listens}
        root {www};
        location / {{ }}
    }}
{tls_servers}
    server {{
        listen unix:{run}/status.sock;
        access_log off;
        location / {{ stub_status; }}
    }}
}}
"""


def die_with_parent() -> None:
    """In the nginx child before exec: SIGTERM when backends.py dies (even by SIGKILL)."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def nginx_status(run: str) -> dict | None:
    """stub_status over the unix socket -> {active, accepts, handled, requests} (None: no answer)."""
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(2)
        s.connect(os.path.join(run, "status.sock"))
        s.sendall(b"GET / HTTP/1.0\r\nHost: status\r\n\r\n")
        buf = b""
        while b := s.recv(4096):
            buf += b
        s.close()
    except OSError:
        return None
    body = buf.split(b"\r\n\r\n", 1)[-1].decode()
    lines = body.split("\n")
    try:
        active = int(lines[0].split(":")[1])
        accepts, handled, requests = (int(x) for x in lines[2].split())
    except (IndexError, ValueError):
        return None
    return {"active": active, "accepts": accepts, "handled": handled, "requests": requests}


def listening(addrs: list[tuple[str, int]]) -> bool:
    """Every (ip, port) has a LISTEN socket in this namespace (/proc/net/tcp; no connection made)."""
    want = {f"{socket.inet_aton(ip)[::-1].hex().upper()}:{port:04X}" for ip, port in addrs}
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            have = {ln.split()[1] for ln in f if ln.split()[3] == "0A"}
    except OSError:
        return False
    return want <= have


TLS_SERVER = """    server {{
        listen {addr} ssl backlog=4096;
        ssl_certificate {dir}/{name}.pem;
        ssl_certificate_key {dir}/{name}.key;
        access_log {run}/tls-access.log fttls;
        # after the response nginx sends close_notify and its FIN, then reads until the client's
        # FIN: a client that answers with its own close_notify (openssl s_client does) would else
        # meet a closed socket, whose kernel answers with a RST (seen without any proxy)
        lingering_close always;
        root {www};
        location / {{ }}
    }}
"""


def _parse_nginx_log(path: str, tls: bool) -> dict:
    """nginx's access log (the formats of this file's nginx.conf): per key, distinct
    connections, requests, incomplete, statuses and body bytes; `tls`: the key is the
    listener (ip:port) and the SNI names are counted too, else the key is the address."""
    out: dict[str, dict] = {}
    conns: dict[str, set] = {}
    fields = 12 if tls else 10
    try:
        f = open(path)
    except OSError:
        return out
    with f:
        for ln in f:
            p = ln.split(" ", fields)
            if len(p) < fields + 1:
                continue
            _msec, addr, port, conn, _creq, _ra, _rp, status, body, complete = p[:10]
            key = f"{addr}:{port}" if tls else addr
            e = out.setdefault(key, {"connections": 0, "requests": 0, "incomplete": 0, "statuses": {}, "bytes": 0})
            conns.setdefault(key, set()).add(conn)
            e["requests"] += 1
            e["statuses"][status] = e["statuses"].get(status, 0) + 1
            e["bytes"] += int(body) if body.isdigit() else 0
            if complete != "OK":
                e["incomplete"] += 1
            if tls:
                sni = e.setdefault("sni", {})
                sni[p[10]] = sni.get(p[10], 0) + 1
    for key, e in out.items():
        e["connections"] = len(conns[key])
    return out


def parse_tls_log(path: str) -> dict:
    """Per TLS listener (ip:port): distinct connections, requests, incomplete, statuses, body
    bytes, and the SNI names the requests came with ("-": none)."""
    return _parse_nginx_log(path, tls=True)


def parse_access_log(path: str) -> dict:
    """Per server address: distinct connections, requests, incomplete, statuses, body bytes."""
    return _parse_nginx_log(path, tls=False)


# ----------------------------------------------------------------------------- serve
def serve(a) -> int:
    ips = [x for x in a.ips.split(",") if x]
    kinds = [k for k in (a.inject or "").split(",") if k]
    bad = [k for k in kinds if k not in INJECT_KINDS]
    if bad:
        raise SystemExit(f"backends.py: unknown --inject {bad}; choose from {','.join(INJECT_KINDS)}")
    run = os.path.abspath(a.run_dir)
    www = os.path.abspath(a.www)
    for d in ("tmp",):
        os.makedirs(os.path.join(run, d), exist_ok=True)
    st = Stats()
    inj = Injector(kinds)
    stop = threading.Event()
    status_queries = 0

    listens = "\n".join(f"        listen {ip}:{a.http_port} backlog=4096;" for ip in ips)
    tls = []
    for spec in (a.tls or "").split(","):
        if not spec:
            continue
        ip, port, name = spec.split(":")
        tls.append((ip, int(port), name))
    if tls and not a.tls_dir:
        raise SystemExit("backends.py: --tls needs --tls-dir")
    tls_servers = "".join(TLS_SERVER.format(addr=f"{ip}:{port}", dir=os.path.abspath(a.tls_dir), name=name, run=run, www=www)
                          for ip, port, name in tls)
    conf = os.path.join(run, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(run=run, www=www, listens=listens, tls_servers=tls_servers))
    for p in ("access.log", "tls-access.log", "status.sock"):
        try:
            os.unlink(os.path.join(run, p))
        except FileNotFoundError:
            pass
    nginx = subprocess.Popen([a.nginx, "-p", run + "/", "-c", conf, "-e", os.path.join(run, "nginx-error.log")],
                             stdin=subprocess.DEVNULL, stdout=open(os.path.join(run, "nginx.out"), "w"),
                             stderr=subprocess.STDOUT,
                             # its own process group: a signal to ours (timeout(1) sends one to the
                             # whole group) must not stop nginx before the final stats are read
                             start_new_session=True, preexec_fn=die_with_parent)

    listeners = []
    try:
        for ip in ips:
            if a.echo_port:
                listeners.append(("echo", ip, listen(ip, a.echo_port), echo_conn))
            if a.upload_port:
                listeners.append(("upload", ip, listen(ip, a.upload_port), upload_conn))
            if a.banner_port:
                listeners.append(("banner", ip, listen(ip, a.banner_port), banner_conn))
    except OSError as e:
        nginx.terminate()
        raise SystemExit(f"backends.py: cannot listen: {e}")
    for svc, ip, ls, h in listeners:
        st.entry(svc, ip)
        threading.Thread(target=serve_listener, args=(ls, svc, ip, h, st, inj, stop), daemon=True).start()

    t0 = time.monotonic()
    while not listening([(ip, a.http_port) for ip in ips] + [(ip, port) for ip, port, _n in tls]) or not os.path.exists(os.path.join(run, "status.sock")):
        if nginx.poll() is not None or time.monotonic() - t0 > 10:
            try:
                err = open(os.path.join(run, "nginx-error.log")).read()[-600:] + open(os.path.join(run, "nginx.out")).read()[-600:]
            except OSError:
                err = ""
            nginx.kill()
            raise SystemExit(f"backends.py: nginx did not come up (exit {nginx.poll()}): {err}")
        time.sleep(0.02)

    done = threading.Event()
    dump = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGUSR1, lambda *_: dump.set())

    def snapshot(final: bool, open_at_end: dict | None = None) -> dict:
        nonlocal status_queries
        ng = None
        if nginx.poll() is None:
            ng = nginx_status(run)
            status_queries += 1
        with st.lock:
            svc = json.loads(json.dumps(st.svc))
            errors = list(st.errors)
            nerr = st.error_count
        if "extra-conn" in inj.want and svc.get("echo"):
            ip0 = next(iter(svc["echo"]))
            svc["echo"][ip0]["connections"] += 1
            inj.fired.setdefault("extra-conn", f"echo {ip0} reports one connection more")
        http = parse_access_log(os.path.join(run, "access.log"))
        svc["http"] = {ip: http.get(ip, {"connections": 0, "requests": 0, "incomplete": 0, "statuses": {}, "bytes": 0})
                       for ip in ips}
        for ip in http:
            svc["http"].setdefault(ip, http[ip])
        if tls:
            svc["tls"] = {f"{ip}:{port}": {"connections": 0, "requests": 0, "incomplete": 0, "statuses": {}, "bytes": 0, "sni": {}}
                          for ip, port, _n in tls}
            svc["tls"].update(parse_tls_log(os.path.join(run, "tls-access.log")))
        if ng is not None:
            # each stub_status query is a connection and a request of nginx's own: not a client's
            ng = dict(ng, accepts=ng["accepts"] - status_queries, handled=ng["handled"] - status_queries,
                      requests=ng["requests"] - status_queries, active=ng["active"] - 1)
        return {"final": final, "t_wall": round(time.time(), 6), "ips": ips,
                "ports": {"http": a.http_port, "echo": a.echo_port, "upload": a.upload_port, "banner": a.banner_port},
                "services": svc, "nginx": ng, "open_at_end": open_at_end, "errors": errors,
                "error_count": nerr, "injected": dict(inj.fired), "inject": kinds}

    def write(obj: dict) -> None:
        if not a.stats_file:
            print(json.dumps(obj), flush=True)
            return
        tmp = a.stats_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps(obj) + "\n")
        os.replace(tmp, a.stats_file)

    if a.ready_file:
        with open(a.ready_file, "w") as f:
            f.write(f"{os.getpid()}\n")
    print(f"backends.py: nginx :{a.http_port}, echo :{a.echo_port}, upload :{a.upload_port} on {','.join(ips)}"
          + (f"; injecting {','.join(kinds)}" if kinds else ""), flush=True)

    end = time.monotonic() + a.max_seconds
    while not done.is_set() and time.monotonic() < end:
        if dump.is_set():
            dump.clear()
            write(snapshot(False))
        if nginx.poll() is not None:
            st.error("http", "-", f"nginx exited with {nginx.returncode}")
            break
        done.wait(0.05)

    # drain: the proxy must close every backend connection once its client is done
    t_end = time.monotonic() + a.drain_s
    while True:
        ng = nginx_status(run) if nginx.poll() is None else None
        if ng is not None:
            status_queries += 1
        open_now = {"http": (ng["active"] - 1) if ng else None, "echo": st.active("echo"), "upload": st.active("upload"),
                    "banner": st.active("banner")}
        if all(v == 0 for v in open_now.values()) or time.monotonic() >= t_end:
            break
        time.sleep(0.05)
    final = snapshot(True, open_now)
    stop.set()
    if nginx.poll() is None:
        nginx.terminate()
        try:
            nginx.wait(5)
        except subprocess.TimeoutExpired:
            nginx.kill()
            nginx.wait()
    # the access log is complete now (nginx writes it unbuffered; read again after the stop)
    http = parse_access_log(os.path.join(run, "access.log"))
    for ip, e in http.items():
        final["services"]["http"][ip] = e
    if tls:
        final["services"]["tls"].update(parse_tls_log(os.path.join(run, "tls-access.log")))
    write(final)
    for _svc, _ip, ls, _h in listeners:
        ls.close()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("files", help="write WWW/gen/<n> for each size")
    f.add_argument("--dir", required=True)
    f.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)))
    s = sub.add_parser("serve", help="nginx, echo and upload servers on every --ips address")
    s.add_argument("--ips", required=True, help="comma-separated addresses (in this namespace)")
    s.add_argument("--www", required=True, help="document root (backends.py files --dir)")
    s.add_argument("--run-dir", required=True, help="nginx config, pid, logs, temp dirs; the status socket")
    s.add_argument("--http-port", type=int, default=80)
    s.add_argument("--echo-port", type=int, default=9000)
    s.add_argument("--upload-port", type=int, default=9001)
    s.add_argument("--banner-port", type=int, default=0, help="server-speaks-first banner + echo (0: none)")
    s.add_argument("--tls", help="nginx TLS listeners IP:PORT:NAME[,...] (certificate --tls-dir/NAME.pem)")
    s.add_argument("--tls-dir", help="certificates and keys of --tls")
    s.add_argument("--nginx", default="/usr/sbin/nginx")
    s.add_argument("--ready-file", help="written once every server listens")
    s.add_argument("--stats-file", help="stats JSON (SIGUSR1, and at the end); default stdout")
    s.add_argument("--inject", help="comma list of: " + ",".join(INJECT_KINDS))
    s.add_argument("--drain-s", type=float, default=3.0, help="at the end, wait this long for open connections")
    s.add_argument("--max-seconds", type=float, default=600.0)
    a = ap.parse_args()
    if a.cmd == "files":
        sizes = [int(x) for x in a.sizes.split(",") if x]
        t = time.monotonic()
        paths = write_files(a.dir, sizes)
        print(json.dumps({"files": paths, "bytes": sum(sizes), "seconds": round(time.monotonic() - t, 3)}))
        return 0
    return serve(a)


if __name__ == "__main__":
    sys.exit(main())
