#!/usr/bin/env python3
"""The story of every RST a failover run's client capture saw (issue 12), for the next engineer.

  python3 tests/e2e/rststory.py DIR

Reads DIR/rst.json (rstcount.py: each RST's 4-tuple and wall time), DIR/ports.jsonl
(lives.py --ports-file: which kind of client owned a port, when it opened and closed),
DIR/client.pcap* (the tcpdump ring of the client link, fl_rst_start), DIR/kill (touched just
before the event), DIR/b.log and DIR/a.log (the engines' `flowtwin::resume` debug lines:
what B restored for the flow and its state changes after the takeover), and prints, per RST
tuple: the client, B's lines for it, and every captured packet of the tuple (times relative
to the event). Exit status 0 iff there was no RST (the caller then deletes the ring), else 1.
"""
import glob
import json
import os
import subprocess
import sys


def last_json(path):
    try:
        lines = [x for x in open(path).read().splitlines() if x.strip().startswith("{")]
        return json.loads(lines[-1]) if lines else {}
    except (OSError, ValueError):
        return {}


def main() -> int:
    d = sys.argv[1]
    r = last_json(os.path.join(d, "rst.json"))
    rsts = r.get("first") or []
    if not rsts:
        print("no RST")
        return 0
    try:
        t_event = os.stat(os.path.join(d, "kill")).st_mtime
    except OSError:
        t_event = None
    ports = {}
    try:
        for line in open(os.path.join(d, "ports.jsonl")):
            p = json.loads(line)
            ports.setdefault(p["port"], []).append(p)
    except OSError:
        pass
    rel = (lambda t: f"{t - t_event:+.6f}") if t_event else (lambda t: f"{t:.6f}")
    print(f"rst_in {r.get('rst_in')} rst_out {r.get('rst_out')} (after close: in {r.get('rst_in_after_close')}, "
          f"out {r.get('rst_out_after_close')}); times below are s relative to the event"
          + (f" at {t_event:.6f}" if t_event else " (no kill file: wall clock)"))
    pcaps = sorted(glob.glob(os.path.join(d, "client.pcap*")), key=os.path.getmtime)
    seen = set()
    for x in rsts:
        tup = tuple(sorted([x["src"], x["dst"]]))
        if tup in seen:
            continue
        seen.add(tup)
        a, b = x["src"].rsplit(":", 1), x["dst"].rsplit(":", 1)
        client = a if x["dir"] == "out" else b
        vip = b if x["dir"] == "out" else a
        cport = int(client[1])
        print(f"\n=== RST {x['dir']} {x['src']} > {x['dst']} seq {x['seq']} ack {x['ack']} flags {x['flags']:#x} "
              f"at {rel(x['wall']) if 'wall' in x else x['t']} after_close {x.get('after_close')}")
        for p in ports.get(cport, []):
            print(f"  client: {p['kind']}/{p['id']} opened {rel(p['open'])} closed "
                  f"{rel(p['close']) if p['close'] else '?'} ok {p['ok']} {p.get('error') or ''}")
        needle = f"{client[0]}:{cport} "
        for who in ("a", "b"):
            try:
                for line in open(os.path.join(d, f"{who}.log"), errors="replace"):
                    if needle in line and ("install " in line or "state " in line):
                        print(f"  {who.upper()}: {line.rstrip()}")
            except OSError:
                pass
        flt = f"host {client[0]} and tcp port {cport} and host {vip[0]} and tcp port {vip[1]}"
        for f in pcaps:
            try:
                out = subprocess.run(["tcpdump", "-r", f, "-n", "-tt", "-S", "-v", flt], capture_output=True,
                                     text=True, timeout=120).stdout
            except (OSError, subprocess.TimeoutExpired) as e:
                print(f"  tcpdump {f}: {e}")
                continue
            for line in out.splitlines():
                head, _, rest = line.partition(" ")
                try:
                    t = float(head)
                    print(f"  {rel(t)} {rest}")
                except ValueError:
                    print(f"      {line.strip()}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
