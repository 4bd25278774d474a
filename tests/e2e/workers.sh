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
E2E=$ROOT/tests/e2e
TOPO=$ROOT/scripts/topology
export FT_CLIENT_NS=${FT_CLIENT_NS_WORKERS:-ftwc} FT_SW_NS=${FT_SW_NS_WORKERS:-ftwsw}
export FT_A_NS=${FT_A_NS_WORKERS:-ftwa} FT_B_NS=${FT_B_NS_WORKERS:-ftwb}
export FT_RUN_DIR=${FT_RUN_DIR_WORKERS:-/run/flowtwin-w}
FT_PROG=workers
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

ALL_MODES=(hw sw)
# shellcheck source=tests/e2e/suite_lib.sh
. "$ROOT/tests/e2e/suite_lib.sh"
suite_args workers.sh mode 2,21 ALL_MODES "$@"
ft_require_root

suite_bin workers
ENGINE_PID=""
T_START=$(date +%s.%N)

cleanup() {
  local rc=$?
  set +e
  if [[ -n $ENGINE_PID ]] && kill -0 "$ENGINE_PID" 2>/dev/null; then
    kill -TERM "$ENGINE_PID" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$ENGINE_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$ENGINE_PID" 2>/dev/null
  fi
  wait 2>/dev/null
  "$TOPO" down >/dev/null 2>&1
  if [[ $KEEP_LOGS -eq 1 || $rc -ne 0 ]]; then
    echo "workers: logs kept in $TMP" >&2
  else
    rm -rf "$TMP"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

inc() { ip netns exec "$FT_CLIENT_NS" "$@"; }
ina() { ip netns exec "$FT_A_NS" "$@"; }

snap() { ina curl -s --max-time 3 "http://127.0.0.1:9470/metrics" >"$1" 2>/dev/null || : >"$1"; }

mv() { # file name [label=value ...] — sum of the samples of one family matching every label
  local f=$1 name=$2; shift 2
  awk -v name="$name" -v labs="$*" '
    BEGIN { n = 0; k = split(labs, L, " ") }
    /^#/ { next }
    {
      split($1, a, "{"); if (a[1] != name) next
      for (i = 1; i <= k; i++) { split(L[i], kv, "="); if (index($1, kv[1] "=\"" kv[2] "\"") == 0) next }
      n += $2
    }
    END { printf "%.0f\n", n }' "$f"
}

client_ok() { # summary.json — all flows completed byte-exact?
  $PY - "$1" <<'EOF' 2>/dev/null
import json, sys
try:
    s = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
except Exception:
    sys.exit(1)
sys.exit(0 if s["flows"] > 0 and s["completed_byte_exact"] == s["flows"] and not s["failed"] else 1)
EOF
}

client_desc() { # summary.json — short text
  $PY - "$1" <<'EOF' 2>/dev/null || echo "no summary"
import json, sys
s = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
mb = s["bytes_total"] / 1e6
txt = (f"{s['completed_byte_exact']}/{s['flows']} byte-exact, {mb:.1f} MB in {s['duration_s']:.2f}s "
       f"= {mb / max(s['duration_s'], 1e-9):.1f} MB/s, max_stall {s['max_stall_ms']:.0f}ms")
if s["failed"]:
    f = s["failed"][0]
    txt += f"; first failure: flow {f['flow']}: {f['error']}"
print(txt)
EOF
}

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
  "$BIN" check-config -c "$TMP/$1.toml" >/dev/null
  ip netns exec "$FT_A_NS" "$BIN" run -c "$TMP/$1.toml" >"$TMP/$1.log" 2>&1 &
  ENGINE_PID=$!
  local i
  for i in $(seq 1 60); do
    kill -0 "$ENGINE_PID" 2>/dev/null || { info "engine exited: $(tail -5 "$TMP/$1.log" | tr '\n' ' ')"; return 1; }
    inc ping -c 1 -W 0.5 "$FT_VIP" >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  info "engine does not answer ping after 15 s: $(tail -5 "$TMP/$1.log" | tr '\n' ' ')"
  return 1
}

stop_engine() { # mode — SIGTERM, expect exit 0 within 3 s with the final statistics
  local mode=$1 rc=0 i
  kill -TERM "$ENGINE_PID" 2>/dev/null || true
  for i in $(seq 1 60); do kill -0 "$ENGINE_PID" 2>/dev/null || break; sleep 0.05; done
  if kill -0 "$ENGINE_PID" 2>/dev/null; then
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

curl_one() { # size -> "ok <MB/s>" or "bad <reason>"
  local n=$1 want got w code size speed
  want=$($PY "$E2E/gen.py" "$n")
  w=$({ inc curl -s -S --noproxy '*' --http1.1 --max-time 60 -o - -w '%{stderr}%{http_code} %{size_download} %{speed_download}' \
        "http://$FT_VIP/gen/$n" | sha256sum >"$TMP/curl_$n.sha"; } 2>&1) || true
  got=$(awk '{print $1}' "$TMP/curl_$n.sha")
  read -r code size speed <<<"$w"
  if [[ $code == 200 && $size == "$n" && $got == "$want" ]]; then
    echo "ok $(awk -v s="$speed" 'BEGIN{printf "%.1f", s/1e6}')"
  else
    echo "bad code=$code size=$size sha=${got:0:12} want=${want:0:12} ${w:0:120}"
  fi
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
  rss=$(mv "$TMP/${mode}_m0" flowtwin_software_rss)
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
  f0=$(mv "$M" flowtwin_flows_opened_total worker=0); f1=$(mv "$M" flowtwin_flows_opened_total worker=1)
  nf0=$(mv "$M" flowtwin_drops_total worker=0 reason=no_flow); nf1=$(mv "$M" flowtwin_drops_total worker=1 reason=no_flow)
  ho0=$(mv "$M" flowtwin_handoff_out_total worker=0); hi1=$(mv "$M" flowtwin_handoff_in_total worker=1)
  ho1=$(mv "$M" flowtwin_handoff_out_total worker=1); hi0=$(mv "$M" flowtwin_handoff_in_total worker=0)
  full0=$(mv "$M" flowtwin_drops_total worker=0 reason=handoff_ring_full); full1=$(mv "$M" flowtwin_drops_total worker=1 reason=handoff_ring_full)
  rx0=$(mv "$M" flowtwin_rx_frames_total worker=0); rx1=$(mv "$M" flowtwin_rx_frames_total worker=1)
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
"$TOPO" down >/dev/null 2>&1 || true
"$TOPO" up >"$TMP/topology.log" 2>&1 || { cat "$TMP/topology.log"; echo "0 passed, 1 failed"; exit 1; }
eval "$("$TOPO" env)"
info "rig $FT_CLIENT_NS/$FT_SW_NS/$FT_A_NS; engine $BIN; EAL memory: $FT_EAL_MEM_ARGS"

for m in "${ALL_MODES[@]}"; do
  selected "$m" || continue
  t0=$SECONDS
  run_mode "$m"
  info "($m took $((SECONDS - t0)) s)"
done

suite_end workers mode "$T_START"
