# scripts/test_lib.sh — how scripts/test adds up a step's results into $passed and $failed.
# Sourced; tests/e2e/test_harness.py checks these functions against crafted logs (a crashed
# test binary, a suite that exits non-zero behind a clean summary, a missing summary).

# count_cargo LOG STATUS — sum the "test result: ... X passed; Y failed" lines of cargo test's
# output, and make sure nothing failed without a result line: every test binary cargo ran
# ("Running ..." / "Doc-tests ...") must have printed one (a binary killed by a signal prints
# none, and cargo runs no binary after it unless --no-fail-fast), and a non-zero exit status
# with no failing test (a crash, a build failure) counts as one failure too.
count_cargo() {
  local p f ran results
  p=$(grep -E '^test result:' "$1" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
  f=$(grep -E '^test result:' "$1" | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
  ran=$(grep -cE '^ *(Running|Doc-tests) ' "$1")
  results=$(grep -cE '^test result:' "$1")
  passed=$((passed + p)); failed=$((failed + f))
  if [ "$ran" -eq 0 ]; then
    echo "cargo test ran no test binary: counted as one failure"; grep -E '^error' "$1" | tail -5
    failed=$((failed + 1)); return
  fi
  if [ "$results" -lt "$ran" ]; then
    echo "cargo test: $((ran - results)) of $ran test binaries printed no result (crashed?):"
    grep -E '^ *(Running|Doc-tests) |^test result:|signal|SIGSEGV|SIGABRT|error: test failed' "$1" | tail -20
    failed=$((failed + ran - results))
  fi
  if [ "$2" -ne 0 ] && [ "$f" -eq 0 ] && [ "$results" -ge "$ran" ]; then
    echo "cargo test exited with status $2 but no test failed: counted as one failure"
    grep -E '^error' "$1" | tail -5
    failed=$((failed + 1))
  fi
}

# count_summary LOG NAME STATUS — add a log's last "N passed, M failed" line to the totals; a
# log without one is one failure, and so is a non-zero exit status behind a summary that
# reports no failure (a suite that crashed after its summary, or whose cleanup failed).
count_summary() {
  local line f=0
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$1" | tail -1)
  if [ -n "$line" ]; then
    f=$(echo "$line" | awk '{print $3}')
    passed=$((passed + $(echo "$line" | awk '{print $1}')))
    failed=$((failed + f))
  else
    echo "$2 printed no summary: counted as one failure"; failed=$((failed + 1)); return
  fi
  if [ "${3:-0}" -ne 0 ] && [ "$f" -eq 0 ]; then
    echo "$2 exited with status $3 but reported no failure: counted as one failure"
    failed=$((failed + 1))
  fi
}
