#!/usr/bin/env bash
# tests/e2e/repro_starve.sh — minimal repro: CPU contention on the sync threads' CPU causes a
# false failover (and, if the active drops the standby first, two active engines).
#
#   tests/e2e/repro_starve.sh [SECONDS] [HOGS]   (default 10 s, 2 busy loops)
#
# Starts A (active) and B (standby) exactly as failover.sh does (both engines' flowtwin-sync
# threads inherit the EAL main lcore's affinity: CPU 0; B's worker lcore is also on CPU 0),
# waits for in_sync with no traffic at all, then runs HOGS busy loops pinned to CPU 0 (plain
# `sh -c 'while :; do :; done'` in the client namespace) for SECONDS. Prints every sync/role
# line of both engines and both ctl status replies at the end. Expected (correct) behaviour:
# no takeover, or — if the engine decides the peer is dead — exactly one active engine.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SECS=${1:-10}
HOGS=${2:-2}
FT_PROG=repro_starve
. "$ROOT/scripts/lib.sh"
ft_require_root
TMP=$(mktemp -d /tmp/ft-starve.XXXXXX)
. "$ROOT/tests/e2e/failover_lib.sh"
HOG_PIDS=()
cleanup() {
  set +e
  local p
  for p in "${HOG_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
  fl_cleanup
  "$TOPO" down >/dev/null 2>&1
  echo "logs in $TMP"
}
trap cleanup EXIT
fl_init
fl_rig_reset
fl_start_engine a "$TMP/a.log"
fl_wait_status a 's["role"] == "active"' 10
fl_start_engine b "$TMP/b.log"
fl_wait_status b 's["role"] == "standby" and s["in_sync"]' 15
echo "A active, B in sync; starting $HOGS busy loop(s) on CPU 0 for $SECS s"
for ((i = 0; i < HOGS; i++)); do
  ip netns exec "$FT_CLIENT_NS" taskset -c 0 sh -c 'while :; do :; done' &
  HOG_PIDS+=($!)
done
sleep "$SECS"
for p in "${HOG_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
HOG_PIDS=()
sleep 0.5
echo "--- A:"; grep -E 'sync\[|role|TAKEOVER' "$TMP/a.log" | cut -c1-200
echo "--- B:"; grep -E 'sync\[|role|TAKEOVER' "$TMP/b.log" | cut -c1-200
sa=$(fl_status a); sb=$(fl_status b)
echo "A status: $(fl_jq "$sa" '"role %s epoch %s active %s peer %s takeovers %s hb_missed %s last_error %r" % (s["role"], s["epoch"], s["active"], s["peer"], s["takeovers"], s["heartbeats_missed"], s["last_error"])')"
echo "B status: $(fl_jq "$sb" '"role %s epoch %s active %s peer %s takeovers %s hb_missed %s last_error %r" % (s["role"], s["epoch"], s["active"], s["peer"], s["takeovers"], s["heartbeats_missed"], s["last_error"])')"
if [[ $(fl_jq "$sa" 's["active"]') == True && $(fl_jq "$sb" 's["active"]') == True ]]; then
  echo "RESULT: SPLIT BRAIN — both engines active for VIP $FT_VIP"
elif [[ $(fl_jq "$sb" 's["takeovers"]') != 0.0 || $(fl_jq "$sa" 's["takeovers"]') != 0.0 ]]; then
  echo "RESULT: false failover (a takeover while both engines were alive), one active engine"
else
  echo "RESULT: no takeover"
fi
