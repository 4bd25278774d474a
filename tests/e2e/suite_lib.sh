# shellcheck shell=bash
# tests/e2e/suite_lib.sh — what the e2e suites (interop, workers, devices, failover, selftest)
# share, defined once. Source it after setting ROOT (and FT_PROG and any FT_* overrides); it
# sources scripts/lib.sh (the rig's names and addresses, the metrics reader) and sets E2E, TOPO.
#
# Check bookkeeping: one `PASS name (details)` / `FAIL …` / `SKIP …` line per check, `--only`
# selection by name or shell glob (comma-separated, in $ONLY), `run NAME FUNC ARGS...`, and the
# closing summary line `N passed, M failed` that scripts/test adds up; the options every suite
# takes (suite_args), its binary and scratch directory (suite_bin, suite_tmp) and its EXIT trap
# (suite_cleanup). The rig: suite_rig_up; the engine in FT_A_NS: suite_start_engine,
# engine_alive, stop_pid, sigterm_wait; its metrics: snap, mval, mdelta (tests/e2e/evallib.py
# reads the text); the clients' JSON summaries: jget, client_ok, client_desc; curl_one,
# wait_file, netem_on/netem_off.

E2E=$ROOT/tests/e2e
TOPO=$ROOT/scripts/topology
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

ONLY=""
KEEP_LOGS=0
PASSED=0
FAILED=0
SKIPPED=0

pass() { PASSED=$((PASSED + 1)); echo "PASS $1 ($2)"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $1 ($2)"; }
skip() { SKIPPED=$((SKIPPED + 1)); echo "SKIP $1 ($2)"; }
info() { echo "     $*"; }

selected() { # name — is this check selected by --only?
  [[ -z $ONLY ]] && return 0
  local pat
  IFS=',' read -r -a _pats <<<"$ONLY"
  for pat in "${_pats[@]}"; do
    # shellcheck disable=SC2053
    [[ $1 == $pat ]] && return 0
  done
  return 1
}

# run NAME FUNC ARGS... — FUNC ARGS if NAME is selected, then how long it took. A suite that
# defines run_guard NAME has a say first: when it returns non-zero, the check does not run.
run() {
  local name=$1; shift
  selected "$name" || return 0
  local t0=$SECONDS
  if declare -F run_guard >/dev/null && ! run_guard "$name"; then return 0; fi
  "$@"
  info "($name took $((SECONDS - t0)) s)"
}

# suite_end SUITE WHAT START — an --only that matched nothing is a failure (WHAT: "check",
# "mode"); then the total time since START (date +%s.%N), the summary line (", K skipped" once
# a check was skipped or SUITE_REPORTS_SKIPS=1) and the suite's status.
suite_end() {
  if [[ $PASSED -eq 0 && $FAILED -eq 0 && $SKIPPED -eq 0 ]]; then
    echo "$1: --only '$ONLY' matched no $2 (see --list)" >&2
    FAILED=1
  fi
  info "total $(awk -v a="$3" -v b="$(date +%s.%N)" 'BEGIN{printf "%.0f", b-a}') s"
  if [[ $SKIPPED -gt 0 || ${SUITE_REPORTS_SKIPS:-0} == 1 ]]; then
    echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"
  else
    echo "$PASSED passed, $FAILED failed"
  fi
  [[ $FAILED -eq 0 ]]
}

# suite_args SUITE WHAT HELP_LINES ITEMS "$@" — the options every suite takes: --only NAMES
# (comma-separated names or globs), --keep-logs, --list (prints the array named ITEMS), -h
# (prints lines HELP_LINES, e.g. 2,30, of the script's header). A suite with more options
# defines suite_opt, which gets the remaining arguments and sets SUITE_TAKEN to how many it
# consumed (left 0: unknown argument).
suite_args() {
  local suite=$1 what=$2 help=$3
  local -n items=$4
  shift 4
  while [[ $# -gt 0 ]]; do
    case $1 in
      --only) ONLY=${2:?--only needs a $what}; shift 2 ;;
      --only=*) ONLY=${1#--only=}; shift ;;
      --keep-logs) KEEP_LOGS=1; shift ;;
      --list) printf '%s\n' "${items[@]}"; exit 0 ;;
      -h|--help) sed -n "${help}p" "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
      *)
        SUITE_TAKEN=0
        if declare -F suite_opt >/dev/null; then suite_opt "$@"; fi
        [[ $SUITE_TAKEN -gt 0 ]] || { echo "$suite: unknown argument $1" >&2; exit 2; }
        shift "$SUITE_TAKEN" ;;
    esac
  done
}

# suite_tmp SUITE — $PY and a fresh scratch directory $TMP (/tmp/ft-SUITE.*).
suite_tmp() {
  PY=${PYTHON:-python3}
  export PYTHONDONTWRITEBYTECODE=1
  TMP=$(mktemp -d "/tmp/ft-$1.XXXXXX")
}

# suite_bin SUITE — the engine $BIN (FLOWTWIN overrides; it must exist), then suite_tmp.
suite_bin() {
  BIN=${FLOWTWIN:-$ROOT/target/release/flowtwin}
  [[ -x $BIN ]] || { echo "$1.sh: $BIN not found: run cargo build --release" >&2; exit 2; }
  suite_tmp "$1"
}

# ------------------------------------------------------------------ processes, clean-up
ENGINE_PID=""
BG_PIDS=()

stop_pid() { # pid — SIGTERM, wait up to 5 s, SIGKILL
  local p=$1 i
  kill -0 "$p" 2>/dev/null || return 0
  kill -TERM "$p" 2>/dev/null
  for i in $(seq 1 50); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null
}

# sigterm_wait PID LIMIT_S — SIGTERM, then up to LIMIT_S (whole seconds) for PID to exit;
# TERM_MS: how long that took. False if PID still runs.
TERM_MS=0
sigterm_wait() {
  local t0 i
  t0=$(date +%s%N)
  kill -TERM "$1" 2>/dev/null || true
  for ((i = 0; i < $2 * 50; i++)); do kill -0 "$1" 2>/dev/null || break; sleep 0.02; done
  TERM_MS=$(( ($(date +%s%N) - t0) / 1000000 ))
  ! kill -0 "$1" 2>/dev/null
}

# suite_cleanup SUITE — the EXIT trap: stops BG_PIDS, netem and ENGINE_PID, runs the suite's
# suite_teardown (if it defines one), then removes $TMP, unless --keep-logs, a non-zero exit
# status or a failed check keeps it (and says where).
suite_cleanup() {
  local rc=$? p
  set +e
  for p in "${BG_PIDS[@]}"; do stop_pid "$p"; done
  netem_off
  [[ -n $ENGINE_PID ]] && stop_pid "$ENGINE_PID"
  declare -F suite_teardown >/dev/null && suite_teardown
  wait 2>/dev/null
  if [[ $KEEP_LOGS -eq 1 || $rc -ne 0 || $FAILED -gt 0 ]]; then
    echo "$1: logs kept in $TMP" >&2
  else
    rm -rf "$TMP"
  fi
  exit "$rc"
}

# ------------------------------------------------------------------ the rig and its engine
# suite_rig_up — scripts/topology down, then up (if that fails: its log, a failed summary and
# exit 1), then its FT_* environment (FT_EAL_MEM_ARGS, ...) in this shell.
suite_rig_up() {
  "$TOPO" down >/dev/null 2>&1 || true
  "$TOPO" up >"$TMP/topology.log" 2>&1 || { cat "$TMP/topology.log"; echo "0 passed, 1 failed"; exit 1; }
  eval "$("$TOPO" env)"
}

# inc/ina are functions: never background them ('inc cmd &' gives the pid of a subshell, and a
# TERM to it does not reach cmd); background jobs use 'ip netns exec NS cmd &' directly.
inc() { ip netns exec "$FT_CLIENT_NS" "$@"; }
ina() { ip netns exec "$FT_A_NS" "$@"; }

# suite_start_engine CONFIG LOG — check-config, then `flowtwin run` in FT_A_NS (ENGINE_PID);
# true once the VIP answers ping from the client namespace (within 15 s).
suite_start_engine() {
  "$BIN" check-config -c "$1" >/dev/null
  ip netns exec "$FT_A_NS" "$BIN" run -c "$1" >"$2" 2>&1 &
  ENGINE_PID=$!
  local i
  for i in $(seq 1 60); do
    kill -0 "$ENGINE_PID" 2>/dev/null || { info "engine exited: $(tail -5 "$2" | tr '\n' ' ')"; return 1; }
    inc ping -c 1 -W 0.5 "$FT_VIP" >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  info "engine does not answer ping after 15 s: $(tail -5 "$2" | tr '\n' ' ')"
  return 1
}

engine_alive() { [[ -n $ENGINE_PID ]] && kill -0 "$ENGINE_PID" 2>/dev/null; }

vip_mac() { # [NS] [IF] — the VIP's MAC as NS (default the client namespace) learned it on IF
  ip -n "${1:-$FT_CLIENT_NS}" neigh show "$FT_VIP" dev "${2:-$FT_CLIENT_IF}" \
    | awk '{for(i=1;i<=NF;i++) if($i=="lladdr") print $(i+1)}' | head -1
}

# ------------------------------------------------------------------ metrics (read by tests/e2e/evallib.py)
snap() { ft_metrics_fetch "$FT_A_NS" "$1"; }   # FILE — save the engine's /metrics
mval() { ft_metrics metric "$@"; }             # FILE NAME [LABEL=VALUE ...] — sum of those series (0 if absent)
mdelta() { ft_metrics delta "$@"; }            # FILE_A FILE_B NAME [LABEL=VALUE ...] — its change from A to B

# ------------------------------------------------------------------ clients
jget() { # file python-expression-on-s — a value from the last line of a JSON-lines file ("?" if none)
  $PY -c 'import json,sys; s=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); print(eval(sys.argv[2]))' "$1" "$2" 2>/dev/null || echo "?"
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
       f"= {mb / max(s['duration_s'], 1e-9):.1f} MB/s, max_stall {s['max_stall_ms']:.0f}ms "
       f"(midflow {s['max_midflow_stall_ms']:.0f}ms)")
if s["failed"]:
    f = s["failed"][0]
    txt += f"; first failure: flow {f['flow']}: {f['error']}"
print(txt)
EOF
}

# curl_one SIZE [NS] [MAX_TIME_S] — GET /gen/SIZE from the VIP with curl in NS (default the
# client namespace; at most 60 s): "ok <MB/s>" when it is 200 with SIZE bytes whose sha256 is
# tests/e2e/gen.py's, else "bad <reason>".
curl_one() {
  local n=$1 ns=${2:-$FT_CLIENT_NS} want got w code size speed
  want=$($PY "$E2E/gen.py" "$n")
  w=$({ ip netns exec "$ns" curl -s -S --noproxy '*' --http1.1 --max-time "${3:-60}" -o - \
        -w '%{stderr}%{http_code} %{size_download} %{speed_download}' "http://$FT_VIP/gen/$n" \
        | sha256sum >"$TMP/curl_$n.sha"; } 2>&1) || true
  got=$(awk '{print $1}' "$TMP/curl_$n.sha")
  read -r code size speed <<<"$w"
  if [[ $code == 200 && $size == "$n" && $got == "$want" ]]; then
    echo "ok $(awk -v s="$speed" 'BEGIN{printf "%.1f", s/1e6}')"
  else
    echo "bad code=$code size=$size sha=${got:0:12} want=${want:0:12} ${w:0:120}"
  fi
}

wait_file() { # file timeout_s — until file exists and is not empty
  local i n=$(( ${2%.*} * 20 ))
  for ((i = 0; i < n; i++)); do [[ -s $1 ]] && return 0; sleep 0.05; done
  return 1
}

# netem_on SPEC... / netem_off — impair the client namespace's egress toward the VIP (netem
# syntax: loss 2%, delay 1ms reorder 25% 50%, ...): `tc qdisc ... netem` on FT_CLIENT_IF, or
# on kernels built without sch_netem (this machine's) tests/e2e/uem.py, a userspace netem with
# the same semantics. Sets NETEM_KIND (tc|uem); needs $PY, $TMP, FT_CLIENT_NS, FT_CLIENT_IF.
NETEM_KIND=""
UEM_PID=""
netem_on() {
  if ip netns exec "$FT_CLIENT_NS" tc qdisc add dev "$FT_CLIENT_IF" root netem "$@" 2>"$TMP/netem.err"; then
    NETEM_KIND=tc
    return 0
  fi
  if grep -q "qdisc kind is unknown" "$TMP/netem.err"; then
    NETEM_KIND=uem
    rm -f "$TMP/uem.ready"
    ip netns exec "$FT_CLIENT_NS" timeout 300 $PY "$ROOT/tests/e2e/uem.py" --duration 280 \
      --ready-file "$TMP/uem.ready" "$@" >"$TMP/uem.out" 2>"$TMP/uem.err" &
    UEM_PID=$!
    local i
    for ((i = 0; i < 200; i++)); do [[ -s $TMP/uem.ready ]] && return 0; sleep 0.05; done
    info "uem.py did not start: $(tail -3 "$TMP/uem.err")"
    return 1
  fi
  info "tc netem failed: $(cat "$TMP/netem.err")"
  return 1
}
netem_off() {
  if [[ $NETEM_KIND == tc ]]; then
    ip netns exec "$FT_CLIENT_NS" tc qdisc del dev "$FT_CLIENT_IF" root 2>/dev/null || true
  elif [[ $NETEM_KIND == uem && -n $UEM_PID ]]; then
    kill -TERM "$UEM_PID" 2>/dev/null || true
    wait "$UEM_PID" 2>/dev/null || true
    UEM_PID=""
    info "userspace netem (no sch_netem in this kernel): $(tail -1 "$TMP/uem.out" 2>/dev/null)"
  fi
  NETEM_KIND=""
}
