#!/usr/bin/env bash
# tests/e2e/workers.sh — two workers on one port, with and without enough device queues.
#
#   tests/e2e/workers.sh [--only MODE[,MODE...]] [--keep-logs] [--list]
#
# Runs the engine with engine.workers = 2 in two layouts against the Linux client stack:
#   hw   af_packet qpairs=2: worker i owns RX/TX queue i (kernel fanout spreads the flows)
#   sw   af_packet qpairs=1: the device has one queue pair, so worker 0 polls it and hands
#        flows to worker 1 in software (symmetric flow hash, SPSC rings), and worker 1
#        transmits through worker 0's TX queue (egress ring)
# For each mode: curl downloads (sha256), 32 keep-alive clients, 8 echo clients, then checks
# from the metrics that both workers opened flows (and, in sw mode, that the handoff counters
# moved, flowtwin_software_rss is 1 and no flow lost a segment to the wrong worker: no_flow 0),
# and a clean SIGTERM. Each check prints `PASS name (details)` or `FAIL name (reason)`; the last
# line is `N passed, M failed` (exit 1 if any failed).
#
# It uses its own rig (namespaces ftwc/ftwsw/ftwa/ftwb, run dir /run/flowtwin-w; override with
# FT_* as in scripts/lib.sh), so it never touches another suite's namespaces, and a trap stops
# the engine and tears the rig down. Expects target/release/flowtwin (FLOWTWIN=path overrides).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export FT_CLIENT_NS=${FT_CLIENT_NS_WORKERS:-ftwc} FT_SW_NS=${FT_SW_NS_WORKERS:-ftwsw}
export FT_A_NS=${FT_A_NS_WORKERS:-ftwa} FT_B_NS=${FT_B_NS_WORKERS:-ftwb}
export FT_RUN_DIR=${FT_RUN_DIR_WORKERS:-/run/flowtwin-w}
FT_PROG=workers
ALL_MODES=(hw sw)
# shellcheck source=tests/e2e/suite_lib.sh
. "$ROOT/tests/e2e/suite_lib.sh"
suite_args workers.sh mode 2,21 ALL_MODES "$@"
ft_require_root

suite_bin workers
T_START=$(date +%s.%N)

# suite_lib.sh: inc/ina, snap/mval, client_ok/client_desc, curl_one; its suite_cleanup stops the
# engine, then suite_teardown.
suite_teardown() { "$TOPO" down >/dev/null 2>&1; }
trap 'suite_cleanup workers' EXIT
trap 'exit 130' INT TERM

write_config() { # mode
  local qpairs=2
  [[ $1 == sw ]] && qpairs=1
  # Three lcores on two CPUs: main on CPU 0, both workers on CPU 1 (DPDK-NOTES: only 0-1 exist).
  ft_engine_toml "$TMP/$1.toml" "--lcores=0@0,1@1,2@1" ftworkers \
    "net_af_packet0,iface=$FT_A_IF,qpairs=$qpairs,framecnt=4096"
  printf '[engine]\nworkers = 2\n' >>"$TMP/$1.toml"
}

start_engine() { # mode
  write_config "$1"
  suite_start_engine "$TMP/$1.toml" "$TMP/$1.log"
}

stop_engine() { # mode — SIGTERM, expect exit 0 within 3 s with the final statistics
  local mode=$1 rc=0
  if ! sigterm_wait "$ENGINE_PID" 3; then
    fail "${mode}_sigterm" "still running 3 s after SIGTERM"
    kill -KILL "$ENGINE_PID" 2>/dev/null || true
    wait "$ENGINE_PID" 2>/dev/null || true
    ENGINE_PID=""
    return
  fi
  wait "$ENGINE_PID" || rc=$?
  ENGINE_PID=""
  local line
  line=$(grep -m1 '^flowtwin: drops:' "$TMP/$mode.log" || true)
  if [[ $rc -eq 0 && -n $line ]]; then pass "${mode}_sigterm" "exit 0; ${line:0:160}"
  else fail "${mode}_sigterm" "rc=$rc; $(tail -3 "$TMP/$mode.log" | tr '\n' ' ')"; fi
}

run_mode() { # hw|sw
  local mode=$1
  info "--- mode $mode: $([[ $mode == sw ]] && echo 'qpairs=1, 2 workers (software distribution)' || echo 'qpairs=2, 2 workers (one queue pair each)')"
  if ! start_engine "$mode"; then
    fail "${mode}_start" "engine did not come up (log: $TMP/$mode.log)"
    kill -KILL "$ENGINE_PID" 2>/dev/null || true
    wait "$ENGINE_PID" 2>/dev/null || true
    ENGINE_PID=""
    return
  fi
  snap "$TMP/${mode}_m0"
  local want_rss=0 logline=""
  [[ $mode == sw ]] && want_rss=1
  local rss
  rss=$(mval "$TMP/${mode}_m0" flowtwin_software_rss)
  logline=$(grep -m1 -E 'distributes flows|started with' "$TMP/$mode.log" | sed 's/^flowtwin: //')
  if [[ $mode == sw ]]; then logline=$(grep -m1 'distributes flows' "$TMP/$mode.log" | sed 's/^flowtwin: //' || true); fi
  if [[ $rss == "$want_rss" && -n $logline ]]; then
    pass "${mode}_start" "flowtwin_software_rss $rss; $logline"
  else
    fail "${mode}_start" "flowtwin_software_rss '$rss' (want $want_rss); log: $(grep -E 'port|device' "$TMP/$mode.log" | head -3 | tr '\n' ' ')"
  fi

  # curl: sha256-checked downloads
  local n r ok=1 det=""
  for n in 1048576 20000000; do
    r=$(curl_one "$n")
    if [[ $r == ok* ]]; then det+="$n: ${r#ok } MB/s; "; else ok=0; det+="$n: ${r#bad }; "; fi
  done
  if [[ $ok -eq 1 ]]; then pass "${mode}_curl" "sha256 ok; ${det%; }"; else fail "${mode}_curl" "${det%; }"; fi

  # keep-alive: 32 clients x 4 GETs of 200 kB
  local sha
  sha=$($PY "$E2E/gen.py" 200000)
  inc timeout 90 $PY "$E2E/clients.py" keepalive -k 32 -m 4 --url "http://$FT_VIP/gen/200000" --sha256 "$sha" --timeout 60 \
    --no-events >"$TMP/${mode}_ka.json" 2>"$TMP/${mode}_ka.err" || true
  if client_ok "$TMP/${mode}_ka.json"; then pass "${mode}_keepalive" "32 clients x 4 GETs: $(client_desc "$TMP/${mode}_ka.json")"
  else fail "${mode}_keepalive" "$(client_desc "$TMP/${mode}_ka.json") $(tail -c 200 "$TMP/${mode}_ka.err" 2>/dev/null)"; fi

  # echo: 8 clients x 5 MB
  inc timeout 90 $PY "$E2E/clients.py" echo -n 8 --port 7 --mbytes 5 --timeout 60 \
    --no-events >"$TMP/${mode}_echo.json" 2>"$TMP/${mode}_echo.err" || true
  if client_ok "$TMP/${mode}_echo.json"; then pass "${mode}_echo" "8 x 5 MB: $(client_desc "$TMP/${mode}_echo.json")"
  else fail "${mode}_echo" "$(client_desc "$TMP/${mode}_echo.json") $(tail -c 200 "$TMP/${mode}_echo.err" 2>/dev/null)"; fi

  # metrics: both workers served flows; software mode: handoffs moved, nothing misrouted
  sleep 0.3
  local M=$TMP/${mode}_m1
  snap "$M"
  local f0 f1 nf0 nf1 ho0 hi1 ho1 hi0 full0 full1 rx0 rx1
  f0=$(mval "$M" flowtwin_flows_opened_total worker=0); f1=$(mval "$M" flowtwin_flows_opened_total worker=1)
  nf0=$(mval "$M" flowtwin_drops_total worker=0 reason=no_flow); nf1=$(mval "$M" flowtwin_drops_total worker=1 reason=no_flow)
  ho0=$(mval "$M" flowtwin_handoff_out_total worker=0); hi1=$(mval "$M" flowtwin_handoff_in_total worker=1)
  ho1=$(mval "$M" flowtwin_handoff_out_total worker=1); hi0=$(mval "$M" flowtwin_handoff_in_total worker=0)
  full0=$(mval "$M" flowtwin_drops_total worker=0 reason=handoff_ring_full); full1=$(mval "$M" flowtwin_drops_total worker=1 reason=handoff_ring_full)
  rx0=$(mval "$M" flowtwin_rx_frames_total worker=0); rx1=$(mval "$M" flowtwin_rx_frames_total worker=1)
  local det2="flows opened w0 $f0 / w1 $f1; rx_frames w0 $rx0 / w1 $rx1; no_flow w0 $nf0 / w1 $nf1; handoff w0->w1 $ho0 (w1 in $hi1), w1->w0 tx $ho1 (w0 in $hi0); handoff_ring_full w0 $full0 / w1 $full1"
  ok=1
  [[ $f0 -gt 0 && $f1 -gt 0 ]] || ok=0
  if [[ $mode == sw ]]; then
    [[ $ho0 -gt 0 && $hi1 -gt 0 && $ho1 -gt 0 && $hi0 -gt 0 && $((nf0 + nf1)) -eq 0 ]] || ok=0
  else
    [[ $((ho0 + hi1 + ho1 + hi0)) -eq 0 ]] || ok=0
  fi
  if [[ $ok -eq 1 ]]; then pass "${mode}_workers" "$det2"; else fail "${mode}_workers" "$det2"; fi
  stop_engine "$mode"
}

# ------------------------------------------------------------------ main
suite_rig_up
info "rig $FT_CLIENT_NS/$FT_SW_NS/$FT_A_NS; engine $BIN; EAL memory: $FT_EAL_MEM_ARGS"

for m in "${ALL_MODES[@]}"; do run "$m" run_mode "$m"; done

suite_end workers mode "$T_START"
