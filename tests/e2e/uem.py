#!/usr/bin/env python3
"""Userspace netem for the client namespace, for kernels built without sch_netem (stdlib only, root).

  ip netns exec ftc python3 tests/e2e/uem.py [--iface c0] [--dst VIP] [--ready-file F] [--stats-file F]
        -- loss 1%  |  delay 5ms reorder 25% 50%  |  duplicate 2%   (netem syntax, combinable)

How: a veth pair ftimp0/ftimp1 is created inside the client namespace; a clsact/u32 filter on
the egress of --iface redirects every IPv4 packet to --dst into ftimp0 (TX checksum offload off
there, so checksums are complete); this process reads the frames from ftimp1 (AF_PACKET),
applies the impairment and sends them out of --iface with PACKET_QDISC_BYPASS, which skips the
egress hook (no loop). Only the client's egress toward the VIP is impaired, like
`tc qdisc add dev c0 root netem ...` would do (ARP is left alone). Semantics follow netem:
  loss P[%] [corr]         drop with probability P
  duplicate P[%] [corr]    send twice with probability P
  delay D[ms|us|s] [J]     hold every packet D (+-J uniform jitter)
  reorder P[%] [corr]      with 'delay': probability P of sending at once instead of after D
Runs until SIGTERM/SIGINT (or --duration), then removes the filter and the veth pair and prints
one JSON line of counts: {"rx":..,"sent":..,"dropped":..,"duplicated":..,"reordered":..,
"rst":N,"rst_first":[...]}. The client's frames it redirects never pass a capture on --iface
(rstcount.py, tcpdump): "rst" counts the RSTs among them (the client's own, which a capture
there would have called rst_out), "rst_first" names the first 20 (4-tuple, seq, wall time).
"""
import argparse
import heapq
import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ftenv  # noqa: E402

SOL_PACKET = 263
PACKET_QDISC_BYPASS = 20
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
IMP_A, IMP_B = "ftimp0", "ftimp1"


def pct(s: str) -> float:
    s = s.strip()
    return float(s[:-1]) / 100.0 if s.endswith("%") else float(s)


def dur(s: str) -> float:
    for suf, mul in (("ms", 1e-3), ("us", 1e-6), ("s", 1.0)):
        if s.endswith(suf):
            return float(s[: -len(suf)]) * mul
    return float(s) * 1e-3  # netem: bare number = ms? (tc uses us); we take ms


def is_num(s: str) -> bool:
    try:
        pct(s) if s.endswith("%") else dur(s)
        return True
    except ValueError:
        return False


def parse_spec(words):
    spec = {"loss": 0.0, "loss_c": 0.0, "dup": 0.0, "dup_c": 0.0, "delay": 0.0, "jitter": 0.0,
            "reorder": 0.0, "reorder_c": 0.0}
    i = 0
    while i < len(words):
        w = words[i]
        nxt = words[i + 1:i + 3]
        if w == "loss":
            if nxt and nxt[0] == "random":
                i += 1
                nxt = words[i + 1:i + 3]
            spec["loss"] = pct(nxt[0]); i += 2
            if len(nxt) > 1 and nxt[1].endswith("%"):
                spec["loss_c"] = pct(nxt[1]); i += 1
        elif w == "duplicate":
            spec["dup"] = pct(nxt[0]); i += 2
            if len(nxt) > 1 and nxt[1].endswith("%"):
                spec["dup_c"] = pct(nxt[1]); i += 1
        elif w == "delay":
            spec["delay"] = dur(nxt[0]); i += 2
            if len(nxt) > 1 and not nxt[1].endswith("%") and nxt[1][0].isdigit():
                spec["jitter"] = dur(nxt[1]); i += 1
        elif w == "reorder":
            spec["reorder"] = pct(nxt[0]); i += 2
            if len(nxt) > 1 and nxt[1].endswith("%"):
                spec["reorder_c"] = pct(nxt[1]); i += 1
        else:
            raise SystemExit(f"uem.py: unknown netem word {w!r}")
    if spec["reorder"] and not spec["delay"]:
        raise SystemExit("uem.py: reorder needs delay (as in netem)")
    return spec


class CRand:
    """netem's correlated random: next = (1-c)*uniform + c*last."""

    def __init__(self, rnd, c):
        self.r, self.c, self.last = rnd, c, rnd.random()

    def __call__(self):
        v = (1 - self.c) * self.r.random() + self.c * self.last
        self.last = v
        return v


def sh(*cmd, check=True):
    return subprocess.run(cmd, check=check, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def setup(iface, dst):
    teardown(iface, quiet=True)
    sh("ip", "link", "add", IMP_A, "type", "veth", "peer", "name", IMP_B)
    for f in ("tx", "tso", "gso", "sg", "gro"):
        sh("ethtool", "-K", IMP_A, f, "off", check=False)
        sh("ethtool", "-K", IMP_B, f, "off", check=False)
    for d in (IMP_A, IMP_B):
        sh("sysctl", "-q", "-w", f"net.ipv6.conf.{d}.disable_ipv6=1", check=False)
        sh("ip", "link", "set", d, "mtu", "1500", "up")


def attach(iface, dst):
    sh("tc", "qdisc", "add", "dev", iface, "clsact")
    sh("tc", "filter", "add", "dev", iface, "egress", "protocol", "ip", "u32", "match", "ip", "dst",
       f"{dst}/32", "action", "mirred", "egress", "redirect", "dev", IMP_A)


def teardown(iface, quiet=False):
    sh("tc", "qdisc", "del", "dev", iface, "clsact", check=False)
    sh("ip", "link", "del", IMP_A, check=False)


def tcp_rst(frame: bytes):
    """{src, dst, seq, flags} if frame is an IPv4 TCP segment with RST set, else None."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[14] >> 4 != 4 or frame[23] != 6:
        return None
    ihl = (frame[14] & 0xF) * 4
    t = 14 + ihl
    if len(frame) < t + 14 or not frame[t + 13] & 0x04:
        return None
    ip = lambda o: socket.inet_ntoa(frame[o:o + 4])  # noqa: E731
    port = lambda o: int.from_bytes(frame[o:o + 2], "big")  # noqa: E731
    return {"src": f"{ip(26)}:{port(t)}", "dst": f"{ip(30)}:{port(t + 2)}",
            "seq": int.from_bytes(frame[t + 4:t + 8], "big"), "flags": frame[t + 13]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iface", default=ftenv.get("FT_CLIENT_IF"))
    ap.add_argument("--dst", default=ftenv.get("FT_VIP"))
    ap.add_argument("--duration", type=float, default=600.0, help="upper bound, seconds")
    ap.add_argument("--ready-file")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cleanup", action="store_true", help="only remove a leftover filter/veth and exit")
    ap.add_argument("spec", nargs="*")
    a = ap.parse_args()
    if not a.dst.startswith(("198.18.", "198.19.")):
        raise SystemExit("uem.py: --dst must be in 198.18.0.0/15")
    if a.cleanup:
        teardown(a.iface)
        return 0
    spec = parse_spec(a.spec)
    rnd = random.Random(a.seed)
    loss_r, dup_r, reo_r = CRand(rnd, spec["loss_c"]), CRand(rnd, spec["dup_c"]), CRand(rnd, spec["reorder_c"])

    stop = False

    def on_sig(*_):
        nonlocal stop
        stop = True
    signal.signal(signal.SIGTERM, on_sig)
    signal.signal(signal.SIGINT, on_sig)

    st = {"rx": 0, "sent": 0, "dropped": 0, "duplicated": 0, "reordered": 0, "delayed": 0, "send_errors": 0,
          "rst": 0, "rst_first": []}
    setup(a.iface, a.dst)
    try:
        rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        rx.bind((IMP_B, ETH_P_ALL))
        rx.setblocking(False)
        tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        tx.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
        tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
        tx.bind((a.iface, 0))
        attach(a.iface, a.dst)
        if a.ready_file:
            with open(a.ready_file, "w") as f:
                f.write(f"{os.getpid()}\n")
        heap = []
        seq = 0
        end = time.monotonic() + a.duration

        def send(frame):
            for _ in range(200):
                try:
                    tx.send(frame)
                    st["sent"] += 1
                    return
                except BlockingIOError:
                    time.sleep(0.0001)
                except OSError:
                    break
            st["send_errors"] += 1

        while not stop and time.monotonic() < end:
            t = time.monotonic()
            while heap and heap[0][0] <= t:
                send(heapq.heappop(heap)[2])
            timeout = 0.1 if not heap else max(0.0, heap[0][0] - t)
            r, _, _ = select.select([rx], [], [], min(timeout, 0.1))
            if not r:
                continue
            for _ in range(256):
                try:
                    frame, addr = rx.recvfrom(65535)
                except (BlockingIOError, InterruptedError):
                    break
                if addr[2] == PACKET_OUTGOING:
                    continue
                st["rx"] += 1
                rst = tcp_rst(frame)
                if rst:
                    st["rst"] += 1
                    if len(st["rst_first"]) < 20:
                        st["rst_first"].append({**rst, "wall": round(time.time(), 6)})
                if spec["loss"] and loss_r() < spec["loss"]:
                    st["dropped"] += 1
                    continue
                copies = 2 if spec["dup"] and dup_r() < spec["dup"] else 1
                if copies == 2:
                    st["duplicated"] += 1
                for _c in range(copies):
                    if spec["delay"]:
                        if spec["reorder"] and reo_r() < spec["reorder"]:
                            st["reordered"] += 1
                            send(frame)
                            continue
                        d = spec["delay"]
                        if spec["jitter"]:
                            d = max(0.0, d + rnd.uniform(-spec["jitter"], spec["jitter"]))
                        seq += 1
                        st["delayed"] += 1
                        heapq.heappush(heap, (time.monotonic() + d, seq, frame))
                    else:
                        send(frame)
        # stop redirecting first, then flush what is still held
        teardown(a.iface)
        for _d, _s, fr in sorted(heap):
            send(fr)
    finally:
        teardown(a.iface)
    print(json.dumps(st), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
