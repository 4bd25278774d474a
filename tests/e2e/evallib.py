"""Helpers of the verdicts that tests/e2e/failover.sh computes inline (PYTHONPATH=tests/e2e)."""
from __future__ import annotations

import json


def last(path: str) -> dict:
    """The last line of a JSON-lines file as an object ({} if missing or not JSON)."""
    try:
        return json.loads(open(path).read().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return {}


def metric(path: str, name: str) -> float | None:
    """Sum of every series of metric `name` in a Prometheus text file (None if unreadable)."""
    try:
        with open(path) as f:
            return sum(float(l.split()[-1]) for l in f
                       if l.startswith(name + " ") or l.startswith(name + "{"))
    except (OSError, ValueError):
        return None
