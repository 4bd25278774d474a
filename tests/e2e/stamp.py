#!/usr/bin/env python3
"""Prefix every line read on stdin with the wall-clock time it arrived (seconds since the epoch,
microseconds): `CMD 2>&1 | python3 stamp.py > LOG`. Used by failover.sh, soak and demo to time the
engines' stderr lines (flowtwin prints `flowtwin: TAKEOVER (...)` without a timestamp). Lines are
flushed at once; ends at EOF."""
import sys
import time

def main() -> int:
    inp = sys.stdin.buffer
    out = sys.stdout.buffer
    while True:
        line = inp.readline()
        if not line:
            return 0
        out.write(b"%.6f " % time.time() + line)
        out.flush()

if __name__ == "__main__":
    sys.exit(main())
