#!/usr/bin/env python3
"""A kernel-socket stand-in for the `flowtwin` binary, only to dry-run tests/e2e/proxy.sh's engine
paths without DPDK (config writing, pair start-up, ctl status, the kill, the verdict):

  FLOWTWIN=tests/e2e/stubengine.py tests/e2e/proxy.sh

It is NOT an engine and replicates nothing. `check-config -c F` parses F (tomllib) and checks the
proxy keys; `run -c F` serves `ctl status` on [sync] control and, while active, puts the VIP on
its namespace's port (FT_A_IF / FT_B_IF) and runs a threaded L4 proxy (kernel sockets, from the
VIP, round-robin whatever the balance) for every kind = "proxy" service; the standby polls the
active's control socket and, once it is gone, removes the VIP from the active's port, prints a
TAKEOVER line and serves. `ctl -s SOCK status` prints the status JSON. A config without [sync]
runs as a stand-alone active engine with no control socket (scripts/bench-proxy's "off"). So with it proxy_basic
passes, and proxy_kill must FAIL (the kill resets every connection of the dead process: RSTs
in both captures, transfers cut, reconnects): a check that the kill test can fail at all.
"""
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib


def load(argv):
    return tomllib.load(open(argv[argv.index("-c") + 1], "rb"))


def check_config(argv):
    c = load(argv)
    for i, s in enumerate(c.get("service", [])):
        if s.get("kind") == "proxy":
            if not s.get("backends") or s.get("balance", "round-robin") not in ("round-robin", "least-conn", "hash"):
                print(f"service[{i}]: bad proxy keys {s}", file=sys.stderr)
                return 1
    print("stubengine: config ok")
    return 0


def pump(src, dst):
    try:
        while b := src.recv(65536):
            dst.sendall(b)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def proxy(vip, port, backends):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((vip, port))
    ls.listen(1024)
    rr = itertools.cycle(backends)
    while True:
        c, _ = ls.accept()
        host, p = next(rr).split(":")
        b = socket.socket()
        try:
            b.bind((vip, 0))
            b.connect((host, int(p)))
        except OSError:
            c.close()
            b.close()
            continue
        for s in (c, b):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def both(c=c, b=b):
            t = threading.Thread(target=pump, args=(b, c), daemon=True)
            t.start()
            pump(c, b)
            t.join()
            c.close()
            b.close()
        threading.Thread(target=both, daemon=True).start()


def run(argv):
    c = load(argv)
    # no [sync]: a stand-alone engine (scripts/bench-proxy's "off"): active, no control socket
    sync = c.get("sync") or {"node_id": 1, "role": "active"}
    ctl_path = sync.get("control")
    me_a = sync["node_id"] == 1
    iface = os.environ.get("FT_A_IF" if me_a else "FT_B_IF", "a0" if me_a else "b0")
    vip = c["vip"][0]["addr"]
    st = {"role": sync["role"], "active": sync["role"] == "active", "in_sync": True, "peer": "in_sync",
          "epoch": 1, "takeovers": 0, "flows_resumed": 0, "flows_abandoned": 0}

    def serve_ctl():
        try:
            os.unlink(ctl_path)
        except FileNotFoundError:
            pass
        u = socket.socket(socket.AF_UNIX)
        u.bind(ctl_path)
        u.listen(16)
        while True:
            s, _ = u.accept()
            try:
                s.sendall(json.dumps(st).encode())
            except OSError:
                pass
            s.close()
    if ctl_path:
        threading.Thread(target=serve_ctl, daemon=True).start()

    def activate():
        subprocess.run(["ip", "addr", "add", f"{vip}/24", "dev", iface], stderr=subprocess.DEVNULL)
        for s in c.get("service", []):
            if s.get("kind") == "proxy":
                threading.Thread(target=proxy, args=(vip, s["port"], s["backends"]), daemon=True).start()

    if st["active"]:
        activate()
    else:
        peer_ctl = os.path.join(os.path.dirname(ctl_path), "a.sock")

        def watch():
            time.sleep(0.5)
            while True:
                time.sleep(0.005)
                try:
                    s = socket.socket(socket.AF_UNIX)
                    s.connect(peer_ctl)
                    s.close()
                except OSError:
                    subprocess.run(["ip", "-n", os.environ.get("FT_A_NS", "fta"), "addr", "flush", "dev",
                                    os.environ.get("FT_A_IF", "a0")], stderr=subprocess.DEVNULL)
                    st.update(role="active", active=True, takeovers=1, epoch=2)
                    print("flowtwin: TAKEOVER (epoch 2, HeartbeatTimeout, 0 flow(s), standby was in sync): "
                          "announcing the VIPs and resuming (stubengine)", flush=True)
                    activate()
                    return
        threading.Thread(target=watch, daemon=True).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    if st["active"]:
        subprocess.run(["ip", "addr", "del", f"{vip}/24", "dev", iface], stderr=subprocess.DEVNULL)
    return 0


def ctl(argv):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(2)
    s.connect(argv[argv.index("-s") + 1])
    print(s.recv(65536).decode())
    return 0


if __name__ == "__main__":
    cmds = {"check-config": check_config, "run": run, "ctl": ctl}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(cmds[sys.argv[1]](sys.argv))
