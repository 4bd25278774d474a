#!/usr/bin/env python3
"""Connections per second: short keep-alive-less GETs (stdlib only; run in the client namespace).

  ip netns exec ftpc python3 tests/e2e/connrate.py [--host VIP] [--port 80] [--size 1024]
        [-c 16] [--duration 8] [--max-conns N]

-c worker processes x --threads threads each loop: connect, `GET /gen/<size> HTTP/1.1` with
`Connection: close`, read the response to EOF, check status 200, Content-Length and the body
(tests/e2e/gen.py), close. The server closes first, so the client keeps no TIME_WAIT. Stops after
--duration seconds or --max-conns connections in total. Prints one JSON line:

  {"conns":N,"failed":F,"conns_per_s":X,"latency_ms":{"p50":..,"p99":..,"max":..},"errors":{...}}
"""
import argparse
import hashlib
import json
import multiprocessing as mp
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ftenv  # noqa: E402
import gen  # noqa: E402


def worker(args, deadline, budget, q):
    body_exp = gen.gen_bytes(0, args.size)
    req = (f"GET /gen/{args.size} HTTP/1.1\r\nHost: {args.host}\r\nConnection: close\r\n\r\n").encode()
    lat, errors, lock = [], {}, threading.Lock()
    counts = [0, 0]

    def one():
        while time.monotonic() < deadline:
            with lock:
                if budget is not None and counts[0] + counts[1] >= budget:
                    return
            t0 = time.monotonic()
            err = None
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(args.timeout)
            try:
                s.connect((args.host, args.port))
                s.sendall(req)
                buf = bytearray()
                while True:
                    b = s.recv(65536)
                    if not b:
                        break
                    buf += b
                    if len(buf) > args.size + 4096:
                        break
                hdr, sep, body = bytes(buf).partition(b"\r\n\r\n")
                if not sep or not hdr.startswith(b"HTTP/1.1 200"):
                    err = "bad status/header"
                elif body != body_exp:
                    err = f"body mismatch ({len(body)} bytes)"
            except OSError as e:
                err = type(e).__name__
            finally:
                s.close()
            t1 = time.monotonic()
            with lock:
                if err is None:
                    counts[0] += 1
                    lat.append(t1 - t0)
                else:
                    counts[1] += 1
                    errors[err] = errors.get(err, 0) + 1
    ths = [threading.Thread(target=one) for _ in range(args.threads)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    q.put((counts[0], counts[1], lat, errors))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default=ftenv.get("FT_VIP"))
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("-c", "--procs", type=int, default=4)
    ap.add_argument("--threads", type=int, default=4, help="threads per process (each one connection at a time)")
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--max-conns", type=int, default=None, help="stop after this many connections in total")
    ap.add_argument("--timeout", type=float, default=3.0, help="per-connection socket timeout")
    a = ap.parse_args()
    if not (1 <= a.procs <= 64 and 1 <= a.threads <= 64 and 0 < a.duration <= 300):
        raise SystemExit("connrate.py: bad -c/--threads/--duration")
    q = mp.Queue()
    t0 = time.monotonic()
    deadline = t0 + a.duration
    budget = None if a.max_conns is None else max(1, a.max_conns // a.procs)
    ps = [mp.Process(target=worker, args=(a, deadline, budget, q)) for _ in range(a.procs)]
    for p in ps:
        p.start()
    ok = fail = 0
    lat, errors = [], {}
    for _ in ps:
        o, f, l, e = q.get(timeout=a.duration + a.timeout + 30)
        ok += o
        fail += f
        lat += l
        for k, v in e.items():
            errors[k] = errors.get(k, 0) + v
    for p in ps:
        p.join(5)
    dur = time.monotonic() - t0
    lat.sort()
    pct = lambda p: round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 3) if lat else None
    print(json.dumps({"conns": ok, "failed": fail, "duration_s": round(dur, 3),
                      "conns_per_s": round(ok / dur, 1), "size": a.size,
                      "latency_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0)},
                      "errors": errors}), flush=True)
    return 0 if fail == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
