#!/usr/bin/env python3
"""Malformed-packet barrage toward the VIP from the client namespace (stdlib only, root).

  ip netns exec ftc python3 tests/e2e/barrage.py [--count 40] [--rate 2000] [--categories all]
        [--dst-mac MAC | (ARP-resolved)] [--dport 80] [--rst-sport PORT] [--seed 1] [--list]

Raw Ethernet frames (AF_PACKET) on the client interface, addressed to the VIP's MAC (given, or
learned from the kernel's neighbour table / an ARP request). Addresses are only the client and
the VIP (198.18.0.0/15). Source ports for crafted segments come from 61000-65535, outside the
client kernel's ephemeral range, so live flows are only touched by the oow_rst category (which
targets a tuple guess on purpose). Bounded: --count frames per category, paced at --rate
frames/s. Prints one JSON line: frames sent per category and per variant, send errors.

Categories: bad_ip_csum bad_tcp_csum trunc_ip trunc_tcp bad_tcp_opts bad_flags oow_rst ip_frag
ip_options ttl oversized addr junk
"""
import argparse
import fcntl
import json
import os
import random
import select
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ftenv  # noqa: E402

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
SIOCGIFADDR = 0x8915
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 1, 2, 4, 8, 16, 32, 64, 128
SPORT_LO, SPORT_HI = 61000, 65535


# ----------------------------------------------------------------------------- wire helpers
def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def mac_bytes(mac: str) -> bytes:
    return bytes(int(x, 16) for x in mac.split(":"))


def eth(dst: bytes, src: bytes, etype: int, payload: bytes) -> bytes:
    return dst + src + struct.pack("!H", etype) + payload


def ipv4(src: bytes, dst: bytes, payload: bytes, proto: int = 6, ttl: int = 64, ident: int = 0,
         frag: int = 0x4000, options: bytes = b"", tos: int = 0, tot_len=None, ihl=None,
         bad_csum: bool = False, version: int = 4) -> bytes:
    if len(options) % 4:
        options += b"\0" * (4 - len(options) % 4)
    hl = 20 + len(options)
    ihl = hl // 4 if ihl is None else ihl
    tl = hl + len(payload) if tot_len is None else tot_len
    h = struct.pack("!BBHHHBBH4s4s", (version << 4) | (ihl & 0xF), tos, tl & 0xFFFF, ident, frag,
                    ttl, proto, 0, src, dst) + options
    c = csum(h)
    if bad_csum:
        c ^= 0x5A5A
    return h[:10] + struct.pack("!H", c) + h[12:] + payload


def tcp(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int,
        window: int = 65535, options: bytes = b"", payload: bytes = b"", doff=None,
        bad_csum: bool = False, pad_options: bool = True, urg: int = 0) -> bytes:
    if pad_options and len(options) % 4:
        options += b"\0" * (4 - len(options) % 4)
    off = (20 + len(options)) // 4 if doff is None else doff
    h = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, (off & 0xF) << 4,
                    flags & 0xFF, window, 0, urg) + options
    seg = h + payload
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(seg))
    c = csum(pseudo + seg)
    if bad_csum:
        c ^= 0xA5A5
    return seg[:16] + struct.pack("!H", c) + seg[18:]


# ----------------------------------------------------------------------------- resolution
def iface_ip(iface: str) -> str:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        r = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", iface.encode()[:15]))
        return socket.inet_ntoa(r[20:24])
    except OSError:
        return ftenv.get("FT_CLIENT_IP")
    finally:
        s.close()


def iface_mac(iface: str) -> str:
    with open(f"/sys/class/net/{iface}/address") as f:
        return f.read().strip()


def neigh_mac(ip: str, iface: str):
    try:
        with open("/proc/net/arp") as f:
            for ln in f.readlines()[1:]:
                p = ln.split()
                if len(p) >= 6 and p[0] == ip and p[5] == iface and p[2] != "0x0" and p[3] != "00:00:00:00:00:00":
                    return p[3]
    except OSError:
        pass
    return None


def arp_resolve(sock, iface: str, src_mac: bytes, src_ip: str, ip: str, timeout: float):
    """Send ARP requests for ip on iface; return the answering MAC or None."""
    r = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    r.bind((iface, ETH_P_ARP))
    try:
        req = struct.pack("!HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, 1, src_mac, socket.inet_aton(src_ip),
                          b"\0" * 6, socket.inet_aton(ip))
        frame = eth(b"\xff" * 6, src_mac, ETH_P_ARP, req)
        end = time.monotonic() + timeout
        next_tx = 0.0
        while time.monotonic() < end:
            if time.monotonic() >= next_tx:
                sock.send(frame)
                next_tx = time.monotonic() + 0.2
            rd, _, _ = select.select([r], [], [], 0.05)
            if not rd:
                continue
            pkt = r.recv(2048)
            if len(pkt) < 42:
                continue
            op = struct.unpack("!H", pkt[20:22])[0]
            if op == 2 and pkt[28:32] == socket.inet_aton(ip):
                return ":".join(f"{b:02x}" for b in pkt[22:28])
        return None
    finally:
        r.close()


# ----------------------------------------------------------------------------- categories
class Gen:
    """Variant generators; each returns (variant_name, frame)."""

    def __init__(self, rnd, dmac, smac, cip, vip, dports, rst_sport, rst_sports):
        self.r, self.dmac, self.smac = rnd, dmac, smac
        self.c, self.v = socket.inet_aton(cip), socket.inet_aton(vip)
        self.dports, self.rst_sport, self.rst_sports = dports, rst_sport, rst_sports

    def sp(self):
        return self.r.randint(SPORT_LO, SPORT_HI)

    def dp(self):
        return self.r.choice(self.dports)

    def seq(self):
        return self.r.getrandbits(32)

    def e(self, ip: bytes) -> bytes:
        return eth(self.dmac, self.smac, ETH_P_IP, ip)

    def seg(self, flags, payload=b"", options=b"", **kw):
        return tcp(self.c, self.v, self.sp(), self.dp(), self.seq(), self.seq() if flags & ACK else 0,
                   flags, options=options, payload=payload, **kw)

    def syn(self, **kw):
        return self.seg(SYN, options=b"\x02\x04\x05\xb4", **kw)

    # -- categories
    def bad_ip_csum(self):
        return self.r.choice([
            ("syn", lambda: self.e(ipv4(self.c, self.v, self.syn(), bad_csum=True))),
            ("ack_data", lambda: self.e(ipv4(self.c, self.v, self.seg(ACK | PSH, b"GET / HTTP/1.1\r\n\r\n"), bad_csum=True))),
            ("rst", lambda: self.e(ipv4(self.c, self.v, self.seg(RST), bad_csum=True))),
        ])

    def bad_tcp_csum(self):
        return self.r.choice([
            ("syn", lambda: self.e(ipv4(self.c, self.v, self.syn(bad_csum=True)))),
            ("ack_data", lambda: self.e(ipv4(self.c, self.v, self.seg(ACK | PSH, b"x" * 100, bad_csum=True)))),
            ("rst", lambda: self.e(ipv4(self.c, self.v, self.seg(RST | ACK, bad_csum=True)))),
            ("fin", lambda: self.e(ipv4(self.c, self.v, self.seg(FIN | ACK, bad_csum=True)))),
        ])

    def trunc_ip(self):
        full = ipv4(self.c, self.v, self.syn())
        return self.r.choice([
            ("ip_10_bytes", lambda: self.e(full[:10])),
            ("ip_19_bytes", lambda: self.e(full[:19])),
            ("ihl_4", lambda: self.e(ipv4(self.c, self.v, self.syn(), ihl=4))),
            ("ihl_0", lambda: self.e(ipv4(self.c, self.v, self.syn(), ihl=0))),
            ("ihl_15_short", lambda: self.e(ipv4(self.c, self.v, b"\x00" * 8, ihl=15))),
            ("totlen_lt_ihl", lambda: self.e(ipv4(self.c, self.v, self.syn(), tot_len=12))),
            ("totlen_gt_frame", lambda: self.e(ipv4(self.c, self.v, self.syn(), tot_len=20 + 24 + 200))),
            ("version_6", lambda: self.e(ipv4(self.c, self.v, self.syn(), version=6))),
            ("version_0", lambda: self.e(ipv4(self.c, self.v, self.syn(), version=0))),
            ("eth_only", lambda: eth(self.dmac, self.smac, ETH_P_IP, b"")),
        ])

    def trunc_tcp(self):
        s = self.syn()
        return self.r.choice([
            ("tcp_8_bytes", lambda: self.e(ipv4(self.c, self.v, s[:8]))),
            ("tcp_19_bytes", lambda: self.e(ipv4(self.c, self.v, s[:19]))),
            ("tcp_0_bytes", lambda: self.e(ipv4(self.c, self.v, b""))),
            ("doff_4", lambda: self.e(ipv4(self.c, self.v, self.seg(SYN, doff=4)))),
            ("doff_0", lambda: self.e(ipv4(self.c, self.v, self.seg(ACK, b"data", doff=0)))),
            ("doff_15_past_seg", lambda: self.e(ipv4(self.c, self.v, self.seg(SYN, doff=15)))),
            ("doff_6_no_opts", lambda: self.e(ipv4(self.c, self.v, self.seg(SYN, doff=6)))),
            ("doff_past_totlen", lambda: self.e(ipv4(self.c, self.v, self.seg(SYN, options=b"\x01" * 20),
                                                      tot_len=20 + 24))),
        ])

    def bad_tcp_opts(self):
        variants = {
            "len_0": b"\x02\x00\x05\xb4",
            "len_1": b"\x03\x01\x07\x01",
            "past_header": b"\x08\x28" + b"\0" * 2,          # timestamp claims 40 bytes
            "len_255": b"\x02\xff\x05\xb4",
            "mss_0": b"\x02\x04\x00\x00",
            "mss_len_3": b"\x02\x03\x05\x01",
            "wscale_255": b"\x03\x03\xff\x01",
            "wscale_len_2": b"\x03\x02\x01\x01",
            "sackperm_len_3": b"\x04\x03\x00\x01",
            "sack_len_3": b"\x05\x03\x00\x01",
            "sack_len_9": b"\x05\x09" + b"\0" * 7 + b"\x01\x01\x01",
            "ts_len_9": b"\x08\x09" + b"\0" * 7 + b"\x01\x01\x01",
            "kind_no_len": b"\x01\x01\x01\x02",               # last byte: kind with no length byte
            "unknown_kind": b"\xfe\x02\x01\x01",
            "eol_then_garbage": b"\x00\x02\x04\x05\xb4\xff\xff\xff",
            "nop_40": b"\x01" * 40,
            "dup_mss": b"\x02\x04\x05\xb4\x02\x04\x00\x01",
        }
        name = self.r.choice(sorted(variants))
        opts = variants[name]
        flags = self.r.choice([SYN, ACK])
        return name + ("_syn" if flags == SYN else "_ack"), \
            lambda: self.e(ipv4(self.c, self.v, self.seg(flags, options=opts)))

    def bad_flags(self):
        return self.r.choice([
            ("syn_fin", lambda: self.e(ipv4(self.c, self.v, self.seg(SYN | FIN)))),
            ("syn_rst", lambda: self.e(ipv4(self.c, self.v, self.seg(SYN | RST)))),
            ("syn_fin_data", lambda: self.e(ipv4(self.c, self.v, self.seg(SYN | FIN, b"GET /")))),
            ("null", lambda: self.e(ipv4(self.c, self.v, self.seg(0)))),
            ("xmas", lambda: self.e(ipv4(self.c, self.v, self.seg(FIN | PSH | URG, urg=1)))),
            ("all", lambda: self.e(ipv4(self.c, self.v, self.seg(0xFF, urg=1)))),
            ("fin_no_ack", lambda: self.e(ipv4(self.c, self.v, self.seg(FIN)))),
            ("stray_ack", lambda: self.e(ipv4(self.c, self.v, self.seg(ACK)))),
            ("stray_data", lambda: self.e(ipv4(self.c, self.v, self.seg(ACK | PSH, b"GET / HTTP/1.1\r\n\r\n")))),
            ("synack", lambda: self.e(ipv4(self.c, self.v, self.seg(SYN | ACK)))),
            ("syn_win0_mss1", lambda: self.e(ipv4(self.c, self.v, self.seg(SYN, options=b"\x02\x04\x00\x01", window=0)))),
            ("syn_ece_cwr", lambda: self.e(ipv4(self.c, self.v, self.seg(SYN | ECE | CWR)))),
        ])

    def oow_rst(self):
        sport = self.rst_sport or self.r.randint(*self.rst_sports)
        dport = self.dp()
        flags = self.r.choice([RST, RST | ACK])

        def f():
            return self.e(ipv4(self.c, self.v, tcp(self.c, self.v, sport, dport, self.seq(),
                                                   self.seq() if flags & ACK else 0, flags)))
        return ("rst" if flags == RST else "rst_ack"), f

    def ip_frag(self):
        seg = self.syn(payload=b"\x00" * 32)
        ident = self.r.getrandbits(16)

        def frag(data, off8, mf, df=False, tl=None):
            fl = (0x2000 if mf else 0) | (0x4000 if df else 0) | off8
            return self.e(ipv4(self.c, self.v, data, ident=ident, frag=fl, tot_len=tl))
        return self.r.choice([
            ("first_tiny_8", lambda: frag(seg[:8], 0, True)),
            ("first_16", lambda: frag(seg[:16], 0, True)),
            ("middle_only", lambda: frag(seg[8:16], 1, True)),
            ("last_only", lambda: frag(seg[16:], 2, False)),
            ("offset_1_overwrites_ports", lambda: frag(b"\x00" * 8, 1, False)),
            ("df_and_mf", lambda: frag(seg, 0, True, df=True)),
            ("past_64k", lambda: frag(b"\x00" * 16, 8190, False)),
            ("odd_len_mf", lambda: frag(seg[:13], 0, True)),
        ])

    def ip_options(self):
        opts = {
            "nop_eol": b"\x01\x01\x01\x00",
            "record_route": b"\x07\x07\x04" + b"\0" * 4 + b"\x00",
            "router_alert": b"\x94\x04\x00\x00",
            "len_0": b"\x07\x00\x00\x00",
            "len_1": b"\x44\x01\x00\x00",
            "past_header": b"\x07\x27\x04\x00",
            "timestamp": b"\x44\x0c\x05\x00" + b"\0" * 8,
            "all_nop_40": b"\x01" * 40,
            "lsrr": b"\x83\x07\x04" + socket.inet_aton(ftenv.get("FT_VIP")) + b"\x00",
        }
        name = self.r.choice(sorted(opts))
        o = opts[name]
        return name, lambda: self.e(ipv4(self.c, self.v, self.syn(), options=o))

    def ttl(self):
        t = self.r.choice([0, 1])
        kind = self.r.choice(["syn", "ack_data"])

        def f():
            seg = self.syn() if kind == "syn" else self.seg(ACK | PSH, b"hello")
            return self.e(ipv4(self.c, self.v, seg, ttl=t))
        return f"ttl{t}_{kind}", f

    def oversized(self):
        return self.r.choice([
            ("totlen_65535", lambda: self.e(ipv4(self.c, self.v, self.syn(), tot_len=65535))),
            ("totlen_plus_1", lambda: self.e(ipv4(self.c, self.v, self.syn(), tot_len=20 + 24 + 1))),
            ("trailing_junk", lambda: self.e(ipv4(self.c, self.v, self.syn())) + os.urandom(200)),
            ("full_mtu_data", lambda: self.e(ipv4(self.c, self.v, self.seg(ACK | PSH, b"\xab" * 1460)))),
            ("over_mtu_frame", lambda: self.e(ipv4(self.c, self.v, self.seg(ACK | PSH, b"\xab" * 2000)))),
            ("syn_with_1400_data", lambda: self.e(ipv4(self.c, self.v, self.seg(SYN, b"\xcd" * 1400)))),
        ])

    def addr(self):
        bc = socket.inet_aton("198.18.0.255")
        return self.r.choice([
            ("land_src_eq_dst", lambda: self.e(ipv4(self.v, self.v, tcp(self.v, self.v, 80, 80, self.seq(), 0, SYN)))),
            ("src_subnet_bcast", lambda: self.e(ipv4(bc, self.v, tcp(bc, self.v, self.sp(), self.dp(), self.seq(), 0, SYN)))),
            ("dst_subnet_bcast", lambda: self.e(ipv4(self.c, bc, tcp(self.c, bc, self.sp(), self.dp(), self.seq(), 0, SYN)))),
            ("eth_bcast_to_vip", lambda: eth(b"\xff" * 6, self.smac, ETH_P_IP, ipv4(self.c, self.v, self.syn()))),
            ("sport_0", lambda: self.e(ipv4(self.c, self.v, tcp(self.c, self.v, 0, self.dp(), self.seq(), 0, SYN)))),
            ("dport_0", lambda: self.e(ipv4(self.c, self.v, tcp(self.c, self.v, self.sp(), 0, self.seq(), 0, SYN)))),
        ])

    def junk(self):
        r = self.r
        return r.choice([
            ("random_ipv4", lambda: eth(self.dmac, self.smac, ETH_P_IP, os.urandom(r.randint(1, 1400)))),
            ("random_ethertype", lambda: eth(self.dmac, self.smac, r.choice([0x86DD, 0x8100, 0x88CC, 0x1234, 0xFFFF]),
                                             os.urandom(r.randint(0, 200)))),
            # own source MAC: a random one could be multicast (dropped) or poison the switch's fdb
            ("random_frame", lambda: self.dmac + self.smac + os.urandom(r.randint(2, 1500))),
            ("arp_truncated", lambda: eth(self.dmac, self.smac, ETH_P_ARP, os.urandom(r.randint(0, 27)))),
            ("arp_bad_op", lambda: eth(self.dmac, self.smac, ETH_P_ARP, struct.pack(
                "!HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, 99, self.smac, self.c, b"\0" * 6, self.v))),
            ("arp_bad_hlen", lambda: eth(self.dmac, self.smac, ETH_P_ARP, struct.pack(
                "!HHBBH", 1, ETH_P_IP, 60, 4, 1) + os.urandom(20))),
            ("zeros_60", lambda: eth(self.dmac, self.smac, ETH_P_IP, b"\0" * 46)),
            ("proto_udp_junk", lambda: self.e(ipv4(self.c, self.v, os.urandom(r.randint(0, 64)), proto=17))),
            ("proto_icmp_junk", lambda: self.e(ipv4(self.c, self.v, os.urandom(r.randint(0, 64)), proto=1))),
            ("proto_255", lambda: self.e(ipv4(self.c, self.v, os.urandom(40), proto=255))),
        ])


CATEGORIES = ["bad_ip_csum", "bad_tcp_csum", "trunc_ip", "trunc_tcp", "bad_tcp_opts", "bad_flags",
              "oow_rst", "ip_frag", "ip_options", "ttl", "oversized", "addr", "junk"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iface", default=ftenv.get("FT_CLIENT_IF"))
    ap.add_argument("--vip", default=ftenv.get("FT_VIP"))
    ap.add_argument("--dst-mac", help="VIP MAC (default: neighbour table, else ARP request)")
    ap.add_argument("--arp-timeout", type=float, default=2.0)
    ap.add_argument("--dport", default="80", help="comma list of VIP ports to aim at")
    ap.add_argument("--rst-sport", type=int, help="oow_rst: client port of a live flow (4-tuple guess)")
    ap.add_argument("--rst-sports", default="32768-60999", help="oow_rst: range to guess from if no --rst-sport")
    ap.add_argument("--count", type=int, default=40, help="frames per category (max 100000)")
    ap.add_argument("--rate", type=float, default=2000.0, help="frames per second (max 100000)")
    ap.add_argument("--categories", default="all", help="comma list or 'all'")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--list", action="store_true", help="list categories and exit")
    a = ap.parse_args()
    if a.list:
        print("\n".join(CATEGORIES))
        return 0
    cats = CATEGORIES if a.categories == "all" else [c.strip() for c in a.categories.split(",") if c.strip()]
    bad = [c for c in cats if c not in CATEGORIES]
    if bad:
        raise SystemExit(f"barrage.py: unknown categories {bad}; see --list")
    if not 0 < a.count <= 100000 or not 0 < a.rate <= 100000:
        raise SystemExit("barrage.py: --count and --rate must be in 1..100000")
    for ip in (a.vip,):
        if not ip.startswith(("198.18.", "198.19.")):
            raise SystemExit("barrage.py: refusing to target an address outside 198.18.0.0/15")

    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.bind((a.iface, 0))
    smac_s = iface_mac(a.iface)
    cip = iface_ip(a.iface)
    dmac_s = a.dst_mac or neigh_mac(a.vip, a.iface) or arp_resolve(sock, a.iface, mac_bytes(smac_s), cip,
                                                                   a.vip, a.arp_timeout)
    if not dmac_s:
        raise SystemExit(f"barrage.py: no ARP answer for {a.vip} on {a.iface}; pass --dst-mac")
    lo, hi = (int(x) for x in a.rst_sports.split("-"))
    g = Gen(random.Random(a.seed), mac_bytes(dmac_s), mac_bytes(smac_s), cip, a.vip,
            [int(p) for p in a.dport.split(",")], a.rst_sport, (lo, hi))

    sent = {c: 0 for c in cats}
    variants = {c: {} for c in cats}
    errors = {}
    interval = 1.0 / a.rate
    t0 = time.monotonic()
    k = 0
    # Interleave categories so a rate-dependent effect does not hit only one of them.
    for _ in range(a.count):
        for c in cats:
            name, make = getattr(g, c)()
            frame = make()
            due = t0 + k * interval
            d = due - time.monotonic()
            if d > 0:
                time.sleep(d)
            k += 1
            try:
                sock.send(frame)
                sent[c] += 1
                variants[c][name] = variants[c].get(name, 0) + 1
            except OSError as e:
                key = f"{c}/{name}: {e.strerror or e}"
                errors[key] = errors.get(key, 0) + 1
    sock.close()
    print(json.dumps({"iface": a.iface, "src_mac": smac_s, "dst_mac": dmac_s, "src_ip": cip, "vip": a.vip,
                      "total_sent": sum(sent.values()), "sent": sent, "variants": variants,
                      "send_errors": errors, "duration_s": round(time.monotonic() - t0, 3)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
