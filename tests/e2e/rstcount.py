#!/usr/bin/env python3
"""Count TCP RST segments received by the client namespace (stdlib only, root).

  ip netns exec ftc python3 tests/e2e/rstcount.py [--iface c0] [--duration 30] [--ready-file F]

An AF_PACKET socket on the client interface with a classic BPF filter (IPv4, TCP, first
fragment, RST flag set) so only RSTs reach userspace; each is parsed again here. Counts RSTs
arriving at the client ("rst_in", the figure that matters: optionally only those to --dst,
default the client address) and RSTs the client kernel sends ("rst_out"). Runs for --duration
seconds or until SIGINT/SIGTERM, then prints one JSON line:

  {"rst_in":N,"rst_out":M,"rst_in_after_close":K,"rst_out_after_close":L,"duration_s":..,
   "kernel_drops":..,"first":[...]}

FIN and SYN segments pass the filter too (they are not counted): a RST whose connection had
already sent a FIN in both directions is marked "after_close" (and counted in
rst_in_after_close or rst_out_after_close). Such a RST answers a late segment of a finished
connection (e.g. an ACK that a reordering link held back behind the FIN exchange; or, sent by
the client's kernel, a segment for a socket its application had closed) and cannot abort a
transfer. A SYN on a 4-tuple forgets its FINs: a reused tuple's new connection is live.
--fin-iface IF also learns FINs from IF: tests/e2e/uem.py's ftimp1, where the client's own
frames appear while the userspace impairer redirects them (its re-sent copies bypass the
capture point of --iface).

--outgoing also captures the frames the namespace's kernel sends (the socket is bound to
ETH_P_ALL: a packet socket bound to one protocol sees received frames only), so that rst_out
counts the RSTs it sends and its own FINs are learned too. Without it rst_out stays 0.

With --plain only rst_in is printed. Exit status 0 (use the count, not the status).
"""
import argparse
import ctypes
import json
import os
import select
import signal
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ftenv  # noqa: E402

ETH_P_IP = 0x0800
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_OUTGOING = 4
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33

# cBPF: accept IPv4/TCP, not a non-first fragment, with RST, SYN or FIN set; VLAN-free frames only.
BPF_PROG = [
    (0x28, 0, 0, 12),        # 0 ldh [12]            ethertype
    (0x15, 0, 8, 0x0800),    # 1 jeq #0x800 ? 2 : 10
    (0x30, 0, 0, 23),        # 2 ldb [23]            ip proto
    (0x15, 0, 6, 6),         # 3 jeq #6 ? 4 : 10
    (0x28, 0, 0, 20),        # 4 ldh [20]            flags/frag offset
    (0x45, 4, 0, 0x1FFF),    # 5 jset #0x1fff ? 10 : 6
    (0xB1, 0, 0, 14),        # 6 ldxb 4*([14]&0xf)   ip header length
    (0x50, 0, 0, 27),        # 7 ldb [x+27]          tcp flags (14 + 13)
    (0x45, 0, 1, 0x07),      # 8 jset #RST|SYN|FIN ? 9 : 10
    (0x06, 0, 0, 0x40000),   # 9 ret #262144        accept
    (0x06, 0, 0, 0),         # 10 ret #0            drop
]


def attach_filter(sock: socket.socket) -> None:
    code = b"".join(struct.pack("HBBI", *ins) for ins in BPF_PROG)
    buf = ctypes.create_string_buffer(code)
    prog = struct.pack("HL", len(BPF_PROG), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, prog)


def parse_rst_fin(frame: bytes):
    """-> (src, sport, dst, dport, seq, ack, flags) or None unless a well-formed IPv4 TCP RST/SYN/FIN."""
    if len(frame) < 14 + 20 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    if ip[0] >> 4 != 4 or ip[9] != 6:
        return None
    ihl = (ip[0] & 0xF) * 4
    if ihl < 20 or len(ip) < ihl + 20:
        return None
    tcp = ip[ihl:]
    sport, dport, seq, ack, _off, flags = struct.unpack("!HHIIBB", tcp[:14])
    if not flags & 0x07:
        return None
    return (socket.inet_ntoa(ip[12:16]), sport, socket.inet_ntoa(ip[16:20]), dport, seq, ack, flags)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iface", default=ftenv.get("FT_CLIENT_IF"))
    ap.add_argument("--dst", default=ftenv.get("FT_CLIENT_IP"),
                    help="count only RSTs to this address ('any' = all incoming)")
    ap.add_argument("--duration", type=float, default=3600.0, help="seconds (upper bound)")
    ap.add_argument("--ready-file", help="created once the socket is capturing")
    ap.add_argument("--keep", type=int, default=20, help="RSTs to list in 'first'")
    ap.add_argument("--plain", action="store_true", help="print only the rst_in count")
    ap.add_argument("--fin-iface", help="also learn FINs from this interface (see above)")
    ap.add_argument("--outgoing", action="store_true", help="also see sent frames (rst_out; see above)")
    a = ap.parse_args()

    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # proto 0: nothing until bound
    attach_filter(s)
    try:
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    s.bind((a.iface, ETH_P_ALL if a.outgoing else ETH_P_IP))
    socks = [s]
    if a.fin_iface:
        f = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        attach_filter(f)
        f.bind((a.fin_iface, ETH_P_IP))
        socks.insert(0, f)  # read FINs before the RSTs of the same wake-up
    # Drain anything queued between bind and now that predates the filter (none expected).
    stop = False

    def on_sig(*_):
        nonlocal stop
        stop = True
    signal.signal(signal.SIGTERM, on_sig)
    signal.signal(signal.SIGINT, on_sig)
    if a.ready_file:
        with open(a.ready_file, "w") as f:
            f.write(f"{os.getpid()}\n")

    t0 = time.monotonic()
    end = t0 + a.duration
    rst_in = rst_out = rst_in_after_close = rst_out_after_close = 0
    first = []
    fins = set()  # (src, sport, dst, dport) that sent a FIN
    while not stop:
        rem = end - time.monotonic()
        if rem <= 0:
            break
        try:
            r, _, _ = select.select(socks, [], [], min(rem, 0.2))
        except InterruptedError:
            continue
        if not r:
            continue
        for rs in r:
            while True:
                try:
                    frame, addr = rs.recvfrom(65535, socket.MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    if rs is s:
                        raise
                    socks.remove(rs)  # --fin-iface went away (the impairer stopped)
                    break
                p = parse_rst_fin(frame)
                if p is None:
                    continue
                if not p[6] & 0x04:
                    if p[6] & 0x02:  # SYN: a new connection on this tuple
                        fins.discard(p[:4])
                        fins.discard((p[2], p[3], p[0], p[1]))
                    if p[6] & 0x01:
                        fins.add(p[:4])
                    continue
                if rs is not s:
                    continue  # --fin-iface: FINs only
                outgoing = addr[2] == PACKET_OUTGOING
                closed = p[:4] in fins and (p[2], p[3], p[0], p[1]) in fins
                if outgoing:
                    rst_out += 1
                    rst_out_after_close += closed
                elif a.dst == "any" or p[2] == a.dst:
                    rst_in += 1
                    rst_in_after_close += closed
                else:
                    continue
                if len(first) < a.keep:
                    first.append({"t": round(time.monotonic() - t0, 6), "wall": round(time.time(), 6),
                                  "dir": "out" if outgoing else "in",
                                  "src": f"{p[0]}:{p[1]}", "dst": f"{p[2]}:{p[3]}", "seq": p[4], "ack": p[5],
                                  "flags": p[6], "after_close": closed})
    drops = None
    try:
        st = s.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        _pk, drops = struct.unpack("II", st)
    except OSError:
        pass
    s.close()
    if a.plain:
        print(rst_in, flush=True)
    else:
        print(json.dumps({"rst_in": rst_in, "rst_out": rst_out, "rst_in_after_close": rst_in_after_close,
                          "rst_out_after_close": rst_out_after_close,
                          "iface": a.iface, "dst": a.dst,
                          "duration_s": round(time.monotonic() - t0, 3), "kernel_drops": drops,
                          "first": first}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
