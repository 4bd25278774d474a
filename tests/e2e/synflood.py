#!/usr/bin/env python3
"""Short SYN flood toward the VIP from the client namespace (stdlib only, root).

  ip netns exec ftc python3 tests/e2e/synflood.py [--count 3000] [--rate 20000] [--dport 80]
        [--sports 61000-65535] [--seed 1]

A raw IPv4 socket (the kernel adds the IP header and resolves the VIP's MAC) sends --count bare
SYNs (MSS option, random ISN) from the client address, source ports drawn at random from
--sports (outside the client kernel's ephemeral range, so no live flow is touched), paced at
--rate per second. The client kernel answers each SYN-ACK with a RST (it has no socket), which
tears the half-open flows down again. Only 198.18.0.0/15 can be targeted. Prints one JSON line:
{"sent":N,"unique_sports":U,"send_errors":E,"duration_s":..}.
"""
import argparse
import json
import os
import random
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ftenv  # noqa: E402


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def syn(src: bytes, dst: bytes, sport: int, dport: int, isn: int) -> bytes:
    opts = b"\x02\x04\x05\xb4"  # MSS 1460
    h = struct.pack("!HHIIBBHHH", sport, dport, isn, 0, (20 + len(opts)) // 4 << 4, 0x02, 64240, 0, 0) + opts
    c = csum(src + dst + struct.pack("!BBH", 0, 6, len(h)) + h)
    return h[:16] + struct.pack("!H", c) + h[18:]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", default=ftenv.get("FT_CLIENT_IP"))
    ap.add_argument("--vip", default=ftenv.get("FT_VIP"))
    ap.add_argument("--dport", type=int, default=80)
    ap.add_argument("--count", type=int, default=3000)
    ap.add_argument("--rate", type=float, default=20000.0)
    ap.add_argument("--sports", default="61000-65535")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    for ip in (a.src, a.vip):
        if not ip.startswith(("198.18.", "198.19.")):
            raise SystemExit("synflood.py: refusing an address outside 198.18.0.0/15")
    if not 0 < a.count <= 100000 or not 0 < a.rate <= 200000:
        raise SystemExit("synflood.py: --count 1..100000, --rate 1..200000")
    lo, hi = (int(x) for x in a.sports.split("-"))
    rnd = random.Random(a.seed)
    src, dst = socket.inet_aton(a.src), socket.inet_aton(a.vip)
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    ports = set()
    sent = errors = 0
    t0 = time.monotonic()
    for k in range(a.count):
        due = t0 + k / a.rate
        d = due - time.monotonic()
        if d > 0.0005:
            time.sleep(d)
        sp = rnd.randint(lo, hi)
        try:
            s.sendto(syn(src, dst, sp, a.dport, rnd.getrandbits(32)), (a.vip, 0))
            sent += 1
            ports.add(sp)
        except OSError:
            errors += 1
    s.close()
    print(json.dumps({"sent": sent, "unique_sports": len(ports), "send_errors": errors,
                      "duration_s": round(time.monotonic() - t0, 3)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
