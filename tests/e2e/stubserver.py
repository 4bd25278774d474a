#!/usr/bin/env python3
"""Kernel-TCP stand-in for the engine's services, for harness self-tests (stdlib only).

  ip netns exec fta python3 tests/e2e/stubserver.py --bind 198.18.0.100 --dir DIR --http-port 80 --echo-port 7

HTTP/1.1 with keep-alive (http.server, protocol_version HTTP/1.1): static files from --dir, and
/gen/<n> from tests/e2e/gen.py (501 while gen.py is a stub). Echo: bytes back, one thread per
connection. Runs until SIGTERM/SIGINT or --max-seconds.
"""
import argparse
import functools
import http.server
import os
import re
import signal
import socket
import socketserver
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen  # noqa: E402


class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):  # quiet
        pass

    def setup(self):
        super().setup()
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self):
        m = re.match(r"^/gen/(\d+)$", self.path)
        if not m:
            return super().do_GET()
        n = int(m.group(1))
        try:
            gen.gen_bytes(0, min(n, 1))
        except NotImplementedError:
            self.send_error(501, "gen.py not implemented")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(n))
        self.end_headers()
        off = 0
        while off < n:
            m = min(1 << 20, n - off)
            self.wfile.write(gen.gen_bytes(off, m))
            off += m


class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self):
        s = self.request
        while True:
            try:
                b = s.recv(65536)
            except OSError:
                return
            if not b:
                return
            try:
                s.sendall(b)
            except OSError:
                return


class TServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    request_queue_size = 512  # default 5 drops SYNs of concurrent clients (1 s SYN retransmit)
    daemon_threads = True


class HServer(http.server.ThreadingHTTPServer):
    allow_reuse_address = True
    request_queue_size = 512
    daemon_threads = True

    def handle_error(self, request, client_address):  # client resets are expected in tests
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bind", required=True)
    ap.add_argument("--dir", default=".")
    ap.add_argument("--http-port", type=int, default=80)
    ap.add_argument("--echo-port", type=int, default=7, help="0 disables echo")
    ap.add_argument("--max-seconds", type=float, default=600.0)
    a = ap.parse_args()
    servers = [HServer((a.bind, a.http_port), functools.partial(Handler, directory=a.dir))]
    if a.echo_port:
        servers.append(TServer((a.bind, a.echo_port), EchoHandler))
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"stubserver: http {a.bind}:{a.http_port} echo {a.echo_port or '-'}", flush=True)
    stop.wait(a.max_seconds)
    for s in servers:
        s.shutdown()


if __name__ == "__main__":
    main()
