# shellcheck shell=bash
# tests/e2e/failover_lib.sh — engine-pair plumbing shared by tests/e2e/failover.sh, scripts/soak
# and scripts/demo (source it; do not execute it).
#
# The caller sets ROOT (repository root), TMP (a scratch directory) and may set BIN, PY,
# FL_QUIET=1. Then: fl_init (rig up, FT_* env), fl_start_engine a|b LOG [MODE], fl_kill9 a|b,
# fl_status a|b, fl_wait_status a|b 'PYEXPR on s' TIMEOUT, fl_clients_* and fl_rst_*, and
# fl_cleanup (both engines, clients, rstcount; the caller runs scripts/topology down).
#
# Engines: both serve the same VIP (vrid 1 -> MAC 00:00:5e:00:01:01), object on :80, echo on :7.
#   A: fta, --file-prefix fta, -l 0-1,            node 1, role active,  /run/flowtwin/a.sock
#   B: ftb, --file-prefix ftb, --lcores=0@0,1@0,  node 2, role standby, /run/flowtwin/b.sock
# stdout+stderr of each engine go through tests/e2e/stamp.py (every line prefixed by the
# wall-clock time it was printed), so a TAKEOVER line can be timed against a kill.
#
# Environment:
#   FT_FAILOVER_CLIENT_RMEM  tcp_rmem set in the client namespace (default "4096 131072 262144";
#                            "" leaves it). Rate-limited readers with multi-MB receive buffers
#                            keep reading buffered bytes through an outage and hide the stall.
#   FT_HEARTBEAT_MS / FT_DEAD_AFTER   [sync] timers (default 5 / 3)
#   FL_LCORES_a / FL_LCORES_b  the engine's EAL lcore arguments instead of the above
#   FL_CONFIG_EXTRA_a / FL_CONFIG_EXTRA_b, FL_SYNC_EXTRA_a / FL_SYNC_EXTRA_b  more config
#   FT_CLIENT_PCAP (default 0) / FT_CLIENT_PCAP_MB (150)  1: the client link's capture ring
#                            beside rstcount (fl_rst_start): kept, with DIR/rst_story.txt,
#                            only when a RST was seen; and the engines log
#                            info,flowtwin::resume=debug (resumed flows' restore and state
#                            lines, for the story) unless FLOWTWIN_LOG or RUST_LOG is set.
#                            Off by default: on these 2 vCPUs the ring's tcpdump starves the
#                            15 ms heartbeat detection (5 of 5 kill_active runs had a spurious
#                            takeover with it, 0 of 5 without). Turn it on to chase a RST.

: "${BIN:=$ROOT/target/release/flowtwin}"
: "${PY:=python3}"
E2E=$ROOT/tests/e2e
TOPO=$ROOT/scripts/topology
export PYTHONDONTWRITEBYTECODE=1
: "${FT_FAILOVER_CLIENT_RMEM=4096 131072 262144}"
: "${FT_HEARTBEAT_MS:=5}"
: "${FT_DEAD_AFTER:=3}"
: "${FL_PREFIX:=ft}"       # EAL --file-prefix of engine <who> is $FL_PREFIX<who>

A_PID=""
B_PID=""
RST_PID=""
CL_PIDS=()
CL_GROUPS=()
CL_DIR=""

fl_log() { [[ ${FL_QUIET:-0} == 1 ]] || echo "     $*"; }
fl_now() { echo "${EPOCHREALTIME/,/.}"; }
fl_ms_since() { awk -v a="$1" -v b="$(fl_now)" 'BEGIN{printf "%.0f", (b-a)*1000}'; }

fl_init() {
  "$TOPO" up >"$TMP/topology.log" 2>&1 || { cat "$TMP/topology.log" >&2; return 1; }
  eval "$("$TOPO" env)"
  if [[ -n $FT_FAILOVER_CLIENT_RMEM ]]; then
    ip netns exec "$FT_CLIENT_NS" sysctl -q -w "net.ipv4.tcp_rmem=$FT_FAILOVER_CLIENT_RMEM" >/dev/null 2>&1 \
      || fl_log "could not set tcp_rmem in $FT_CLIENT_NS"
  fi
  mkdir -p "$FT_RUN_DIR"
}

fl_sock() { echo "$FT_RUN_DIR/$1.sock"; }

# fl_write_config a|b MODE -> path of the TOML. MODE strict|async adds the [sync] section;
# "off" leaves it out (a stand-alone engine, for benchmarks). EAL file prefix: $FL_PREFIX<who>.
fl_write_config() {
  local who=$1 mode=${2:-strict} ifv lc node role listen peer
  if [[ $who == a ]]; then
    lc="-l 0-1"; ifv=$FT_A_EAL_VDEV; node=1; role=active; listen=$FT_A_SYNC_IP; peer=$FT_B_SYNC_IP
  else
    lc="--lcores=0@0,1@0"; ifv=$FT_B_EAL_VDEV; node=2; role=standby; listen=$FT_B_SYNC_IP; peer=$FT_A_SYNC_IP
  fi
  # FL_LCORES_a / FL_LCORES_b: other EAL lcore arguments for that engine (more workers: one
  # lcore each, plus the main one; tests/e2e/proxy.sh proxy_workers)
  local lcv="FL_LCORES_$who"
  [[ -n ${!lcv:-} ]] && lc=${!lcv}
  ft_engine_toml "$TMP/$who.toml" "$lc" "$FL_PREFIX$who" "$ifv"
  if [[ $mode != off ]]; then
    cat >>"$TMP/$who.toml" <<EOF
[sync]
node_id = $node
role = "$role"
listen = "$listen:7400"
peer = "$peer:7400"
mode = "$mode"
heartbeat_ms = $FT_HEARTBEAT_MS
dead_after = $FT_DEAD_AFTER
control = "$(fl_sock "$who")"
EOF
    [[ -n ${FT_SYNC_BUSY_POLL_US:-} ]] && echo "busy_poll_us = $FT_SYNC_BUSY_POLL_US" >>"$TMP/$who.toml"
    # FL_SYNC_EXTRA_a / FL_SYNC_EXTRA_b: more [sync] lines for that engine (tests).
    local extra="FL_SYNC_EXTRA_$who"
    [[ -n ${!extra:-} ]] && echo "${!extra}" >>"$TMP/$who.toml"
  fi
  # FL_CONFIG_EXTRA_a / FL_CONFIG_EXTRA_b: more sections for that engine ([[vip]], [[group]],
  # [[service]]; appended last, so they follow whatever table came before).
  local more="FL_CONFIG_EXTRA_$who"
  [[ -n ${!more:-} ]] && echo "${!more}" >>"$TMP/$who.toml"
  echo "$TMP/$who.toml"
}

# fl_start_engine a|b LOG [MODE] — start in its namespace; returns once its control socket answers.
fl_start_engine() {
  local who=$1 log=$2 mode=${3:-strict} cfg ns pid i
  cfg=$(fl_write_config "$who" "$mode")
  "$BIN" check-config -c "$cfg" >"$log.check" 2>&1 || { cat "$log.check" >&2; return 1; }
  if [[ $who == a ]]; then ns=$FT_A_NS; else ns=$FT_B_NS; fi
  # ip netns exec execs the engine: $! is the engine's pid (kill -9 reaches it directly).
  # B's restore and state lines of resumed flows (flowtwin::resume, debug) are what a RST's
  # story needs (fl_rst_start); an operator's own FLOWTWIN_LOG or RUST_LOG wins.
  local logf=${FLOWTWIN_LOG:-}
  [[ -z $logf && -z ${RUST_LOG:-} && ${FT_CLIENT_PCAP:-0} == 1 ]] && logf="info,flowtwin::resume=debug"
  FLOWTWIN_LOG=$logf ip netns exec "$ns" "$BIN" run -c "$cfg" > >(exec $PY "$E2E/stamp.py" >"$log") 2>&1 &
  pid=$!
  if [[ $who == a ]]; then A_PID=$pid; else B_PID=$pid; fi
  for ((i = 0; i < 150; i++)); do
    kill -0 "$pid" 2>/dev/null || { echo "engine $who exited during start-up:" >&2; tail -20 "$log" >&2; return 1; }
    "$BIN" ctl -s "$(fl_sock "$who")" status >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "engine $who: control socket does not answer after 15 s" >&2
  return 1
}

fl_pid() { if [[ $1 == a ]]; then echo "$A_PID"; else echo "$B_PID"; fi; }

# fl_kill9 a|b — SIGKILL; sets KILL_T to the wall-clock time of the kill (do not call in $(...))
KILL_T=""
fl_kill9() {
  local pid
  pid=$(fl_pid "$1")
  KILL_T=$(fl_now)
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if [[ $1 == a ]]; then A_PID=""; else B_PID=""; fi
}

fl_stop_engine() { # a|b — SIGTERM, bounded wait, SIGKILL
  local pid i
  pid=$(fl_pid "$1")
  [[ -n $pid ]] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  if [[ $1 == a ]]; then A_PID=""; else B_PID=""; fi
}

fl_status() { "$BIN" ctl -s "$(fl_sock "$1")" status 2>/dev/null || true; }
fl_metrics() { # a|b FILE
  local ns=$FT_A_NS
  [[ $1 == b ]] && ns=$FT_B_NS
  ft_metrics_fetch "$ns" "$2" 2
}

# fl_jq JSON 'expr on s' — evaluate a Python expression on a JSON object (prints "?" on error)
fl_jq() {
  $PY -c 'import json,sys
try:
    s = json.loads(sys.argv[1]); print(eval(sys.argv[2]))
except Exception:
    print("?")' "$1" "$2"
}

# fl_wait_status a|b 'python bool expr on s' TIMEOUT_S — poll ctl status
fl_wait_status() {
  local who=$1 expr=$2 to=$3 t0 st
  t0=$(fl_now)
  while :; do
    st=$(fl_status "$who")
    if [[ -n $st && $(fl_jq "$st" "bool($expr)") == True ]]; then return 0; fi
    [[ $(fl_ms_since "$t0") -ge $((to * 1000)) ]] && return 1
    sleep 0.05
  done
}

fl_wait_vip() { # TIMEOUT_S — the VIP answers ping from the client namespace
  local i n=$(( $1 * 5 ))
  for ((i = 0; i < n; i++)); do
    ip netns exec "$FT_CLIENT_NS" ping -c 1 -W 0.2 "$FT_VIP" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}

# fl_rig_reset — before a run: forget where the VIP lived in the previous run (client neighbour
# entry, switch fdb entry of the VIP MAC). An engine that becomes active at start-up (not through
# a takeover) sends no gratuitous ARP, so after a previous run's takeover by B the switch and the
# client keep sending to B's port. FT_FAILOVER_NO_RIG_RESET=1 skips this (reproduces that gap).
FT_VIP_VRRP_MAC=00:00:5e:00:01:01
fl_rig_reset() {
  [[ ${FT_FAILOVER_NO_RIG_RESET:-0} == 1 ]] && return 0
  ip -n "$FT_CLIENT_NS" neigh flush dev "$FT_CLIENT_IF" >/dev/null 2>&1 || true
  local port
  for port in "$FT_SW_A_IF" "$FT_SW_B_IF"; do
    bridge -n "$FT_SW_NS" fdb del "$FT_VIP_VRRP_MAC" dev "$port" master >/dev/null 2>&1 || true
  done
  return 0
}

fl_vip_diag() { # where the client and the switch think the VIP is
  echo "client neigh: $(ip -n "$FT_CLIENT_NS" neigh show "$FT_VIP" 2>/dev/null | tr '\n' ' ');" \
    "switch fdb for $FT_VIP_VRRP_MAC: $(bridge -n "$FT_SW_NS" fdb show 2>/dev/null | grep -i "$FT_VIP_VRRP_MAC" | grep -v permanent | tr '\n' ' ')"
}

# ------------------------------------------------------------------ clients
# fl_clients_start DIR DL_N DL_BYTES DL_RATE ECHO_N ECHO_MBYTES ECHO_RATE [socket|curl] [TIMEOUT]
fl_clients_start() {
  local dir=$1 dn=$2 dbytes=$3 drate=$4 en=$5 emb=$6 erate=$7 mode=${8:-socket} to=${9:-40}
  CL_DIR=$dir
  mkdir -p "$dir"
  rm -f "$dir"/dl.* "$dir"/echo.* "$dir"/young.*
  CL_PIDS=()
  CL_GROUPS=()   # (the redirect files appear asynchronously: never infer the groups from them)
  [[ $dn -gt 0 ]] && CL_GROUPS+=(dl)
  [[ $en -gt 0 ]] && CL_GROUPS+=(echo)
  if [[ $dn -gt 0 ]]; then
    ip netns exec "$FT_CLIENT_NS" timeout $((to + 20)) $PY "$E2E/ftclients.py" download -n "$dn" --mode "$mode" \
      --gen "$dbytes" --rate "$drate" --timeout "$to" --connect-timeout 3 --ready-file "$dir/dl.ready" \
      --trace "$dir/dl.trace" >"$dir/dl.json" 2>"$dir/dl.err" &
    CL_PIDS+=($!)
  fi
  if [[ $en -gt 0 ]]; then
    ip netns exec "$FT_CLIENT_NS" timeout $((to + 20)) $PY "$E2E/ftclients.py" echo -n "$en" --mbytes "$emb" \
      --chunk 16384 --rate "$erate" --timeout "$to" --connect-timeout 3 --ready-file "$dir/echo.ready" \
      --trace "$dir/echo.trace" >"$dir/echo.json" 2>"$dir/echo.err" &
    CL_PIDS+=($!)
  fi
}

# fl_young_start DIR N MBYTES RATE — N more echo flows, started just before a kill ("young" flows)
fl_young_start() {
  local dir=$1 n=$2 mb=$3 rate=$4
  rm -f "$dir"/young.*
  ip netns exec "$FT_CLIENT_NS" timeout 60 $PY "$E2E/ftclients.py" echo -n "$n" --mbytes "$mb" --seed 2 \
    --chunk 16384 --rate "$rate" --timeout 40 --connect-timeout 3 --ready-file "$dir/young.ready" \
    --trace "$dir/young.trace" >"$dir/young.json" 2>"$dir/young.err" &
  CL_PIDS+=($!)
}

fl_clients_wait_ready() { # TIMEOUT_S — every flow has bytes
  local i n=$(( $1 * 20 )) f ok
  for ((i = 0; i < n; i++)); do
    ok=1
    for f in "${CL_GROUPS[@]}"; do
      [[ -s $CL_DIR/$f.ready ]] || ok=0
    done
    [[ $ok -eq 1 ]] && return 0
    sleep 0.05
  done
  return 1
}

fl_clients_running() { local p; for p in "${CL_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }

fl_clients_wait() { # wait for the client processes (each bounded by its own timeout)
  local p
  for p in "${CL_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  CL_PIDS=()
}

fl_clients_args() { # -> --clients arguments for failover_eval.py
  local f
  for f in dl echo young; do
    [[ -e $CL_DIR/$f.json ]] && printf -- '--clients\n%s\n' "$CL_DIR/$f.json:$CL_DIR/$f.trace"
  done
  return 0
}

# ------------------------------------------------------------------ RST counting
# fl_rst_start DIR — rstcount.py in the client namespace, and (FT_CLIENT_PCAP=1; off by default)
# a ring of headers-only captures of the client link (tcpdump, FT_CLIENT_PCAP_MB x 8 files),
# so that one RST tells its whole story: fl_rst_stop has tests/e2e/rststory.py write
# DIR/rst_story.txt (the RST's flow: kind, times, its packets) and deletes the ring unless
# a RST was seen.
PCAP_PID=""
RST_DIR=""
fl_rst_start() { # DIR
  RST_DIR=$1
  if [[ ${FT_CLIENT_PCAP:-0} == 1 ]] && command -v tcpdump >/dev/null; then
    ip netns exec "$FT_CLIENT_NS" tcpdump -Z root -i "$FT_CLIENT_IF" -n -s 120 -B 32768 -C "${FT_CLIENT_PCAP_MB:-150}" -W 8 \
      -w "$1/client.pcap" tcp >"$1/tcpdump.err" 2>&1 &
    PCAP_PID=$!
  fi
  local rc=0
  ft_rstcount_start "$1/rst" "$FT_CLIENT_NS" 290 --outgoing --keep 20 || rc=1
  RST_PID=$FT_RSTCOUNT_PID
  return $rc
}
fl_rst_stop() {
  [[ -n $RST_PID ]] || return 0
  sleep 0.3
  kill -TERM "$RST_PID" 2>/dev/null || true
  wait "$RST_PID" 2>/dev/null || true
  RST_PID=""
  fl_pcap_stop
}
fl_pcap_stop() {
  local d=$RST_DIR
  if [[ -n $PCAP_PID ]]; then
    kill -INT "$PCAP_PID" 2>/dev/null || true
    wait "$PCAP_PID" 2>/dev/null || true
    PCAP_PID=""
  fi
  [[ -n $d && -e $d/rst.json ]] || return 0
  # The story (without the ring: the client and B's lines, no packets).
  if $PY "$E2E/rststory.py" "$d" >"$d/rst_story.txt" 2>"$d/rst_story.err"; then
    rm -f "$d"/client.pcap* "$d/rst_story.txt"   # no RST: nothing to tell
  fi
}

# ------------------------------------------------------------------ cleanup
fl_cleanup() {
  local p
  for p in "${CL_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  [[ -n $RST_PID ]] && kill -TERM "$RST_PID" 2>/dev/null
  [[ -n $PCAP_PID ]] && kill -INT "$PCAP_PID" 2>/dev/null
  fl_stop_engine b
  fl_stop_engine a
  for p in "${CL_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  [[ -n $RST_PID ]] && wait "$RST_PID" 2>/dev/null
  [[ -n $PCAP_PID ]] && wait "$PCAP_PID" 2>/dev/null
  RST_PID="" PCAP_PID=""
  CL_PIDS=()
  return 0
}

fl_random_delay() { # -> seconds in [0.5, 2.0]
  awk -v r="$RANDOM" 'BEGIN{printf "%.3f", 0.5 + 1.5 * r / 32767}'
}
