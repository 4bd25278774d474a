#!/usr/bin/env python3
"""clients.py with extras for failover runs (same arguments as clients.py):

  "t_start_wall": wall-clock time (epoch seconds) of the run's t_start, so the per-flow events
  written by --trace (seconds since t_start) can be compared with an engine kill time or with
  engine log lines stamped by stamp.py.
  curl mode: a finished body is verified in a thread, not in the progress-poll loop.
  Echo mismatch diagnosis: the error text also says where in the flow's pattern the received
  bytes come from (stream shift: negative = bytes repeated, positive = bytes skipped), or that
  they are not this flow's bytes at all.
"""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clients  # noqa: E402

_OFF = time.time() - time.monotonic()
_orig = clients.summarize


# curl mode: clients.py verifies a finished curl's body (sha256 of the whole file) inside its
# progress-poll loop, which freezes progress recording for every other flow for ~100-300 ms
# per 20 MB body and shows up as client "stalls" that the network never caused. Verify in a
# thread instead (hashlib and file reads release the GIL); the summary waits for them.
_fin_threads: list = []
_orig_finalize = clients.CurlFlow.finalize


def _finalize(self):
    th = threading.Thread(target=_orig_finalize, args=(self,), daemon=True)
    th.start()
    _fin_threads.append(th)


clients.CurlFlow.finalize = _finalize


def _summarize(kind, mode, flows, t_start, t_end, fail_cap):
    for th in _fin_threads:
        th.join()
    t_end = max([f.t_end or t_end for f in flows] + [t_end])
    s = _orig(kind, mode, flows, t_start, t_end, fail_cap)
    s["t_start_wall"] = round(t_start + _OFF, 6)
    return s


clients.summarize = _summarize


class _DiagFlowError(clients.FlowError):
    def __init__(self, msg: str = ""):
        if msg.startswith("echo mismatch"):
            try:
                loc = sys._getframe(1).f_locals
                data, recvd, sent, pat = loc["data"], loc["recvd"], loc["sent"], loc["pat"]
                P = clients.ECHO_PERIOD
                base = bytes(pat[:P])
                k = next((i for i in range(len(data)) if data[i] != pat[(recvd + i) % P]), 0)
                probe = bytes(data[k:k + 48])
                i = (base + base[:64]).find(probe)
                if i >= 0:
                    shift = (i - (recvd + k) % P) % P
                    if shift > P // 2:
                        shift -= P
                    msg += (f"; first bad byte at chunk index {k}: the bytes from there are this flow's pattern "
                            f"at stream offset {recvd + k + shift} (shift {shift:+d} bytes mod {P}; negative = "
                            f"repeated, positive = skipped); chunk {len(data)} bytes, client had sent {sent}")
                else:
                    msg += (f"; first bad byte at chunk index {k}: not this flow's bytes "
                            f"(hex {probe[:16].hex()}, zero bytes {probe.count(0)}/{len(probe)}); client had sent {sent}")
            except Exception as e:  # noqa: BLE001 — diagnosis only
                msg += f"; (diagnosis failed: {e})"
        super().__init__(msg)


clients.FlowError = _DiagFlowError

if __name__ == "__main__":
    sys.exit(clients.main())
