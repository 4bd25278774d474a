# tests/e2e/suite_lib.sh — check bookkeeping shared by the e2e suites (interop, workers,
# devices, failover): one `PASS name (details)` / `FAIL …` / `SKIP …` line per check, `--only`
# selection by name or shell glob (comma-separated, in $ONLY), and the closing summary line
# `N passed, M failed` that scripts/test adds up; the options every suite takes (suite_args)
# and its binary and scratch directory (suite_bin). Needs $ROOT.

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

# suite_bin SUITE — $PY, the engine $BIN (FLOWTWIN overrides; it must exist) and a fresh
# scratch directory $TMP (/tmp/ft-SUITE.*).
suite_bin() {
  PY=${PYTHON:-python3}
  export PYTHONDONTWRITEBYTECODE=1
  BIN=${FLOWTWIN:-$ROOT/target/release/flowtwin}
  [[ -x $BIN ]] || { echo "$1.sh: $BIN not found: run cargo build --release" >&2; exit 2; }
  TMP=$(mktemp -d "/tmp/ft-$1.XXXXXX")
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
