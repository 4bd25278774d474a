# tests/e2e/suite_lib.sh — check bookkeeping shared by the e2e suites (interop, workers,
# devices, failover): one `PASS name (details)` / `FAIL …` / `SKIP …` line per check, `--only`
# selection by name or shell glob (comma-separated, in $ONLY), and the closing summary line
# `N passed, M failed` that scripts/test adds up. Source it after $ONLY has its default.

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
