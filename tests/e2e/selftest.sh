#!/usr/bin/env bash
# tests/e2e/selftest.sh — self-test of the rig scripts and the e2e harness, without the engine.
#
# A kernel stand-in (tests/e2e/stubserver.py) plays the engine: the VIP is put on the engine
# port a0 in fta for the duration of the test (and removed again). Checks: topology up is
# idempotent (second run silent), env/status, downloads (socket and curl), keep-alive (socket
# and curl), echo, a wrong-sha256 run must fail, rstcount counts exactly the RSTs provoked,
# every barrage frame crosses the switch and the stand-in still serves afterwards, then
# topology down twice.
#
# Everything it starts is stopped by a trap. If the rig was already up when it started, it is
# left up (only the temporary VIP address is removed) and the down/up cycle is skipped; it
# refuses to run while any process lives in the rig's namespaces (e.g. an engine).
# Honours FT_* overrides (scripts/lib.sh), e.g. FT_CLIENT_NS=ftstc FT_SW_NS=ftstsw ... to use a
# separate rig.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
FT_PROG=selftest
# shellcheck source=tests/e2e/suite_lib.sh
. "$ROOT/tests/e2e/suite_lib.sh"   # (suite_tmp, jget; this script keeps its own check list)
ft_require_root

suite_tmp selftest
STUB_PID=""
RST_PID=""
VIP_ADDED=0
WAS_UP=0
FAILS=()
CHECKS=0

cleanup() {
  local rc=$?
  set +e
  [[ -n $RST_PID ]] && kill "$RST_PID" 2>/dev/null && wait "$RST_PID" 2>/dev/null
  [[ -n $STUB_PID ]] && kill "$STUB_PID" 2>/dev/null && wait "$STUB_PID" 2>/dev/null
  if [[ $VIP_ADDED -eq 1 ]]; then
    ip -n "$FT_A_NS" addr del "$FT_VIP/$FT_PREFIX" dev "$FT_A_IF" 2>/dev/null
  fi
  if [[ $WAS_UP -eq 0 ]]; then
    "$TOPO" down >/dev/null 2>&1
  fi
  rm -rf "$TMP"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

check() { # name cmd... — run, record pass/fail
  local name=$1; shift
  CHECKS=$((CHECKS + 1))
  if "$@"; then
    printf '  ok    %s\n' "$name"
  else
    printf '  FAIL  %s\n' "$name"
    FAILS+=("$name")
  fi
}

all_ok() { # summary json file: completed_byte_exact == flows and nothing failed
  $PY - "$1" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
ok = s["flows"] > 0 and s["completed_byte_exact"] == s["flows"] and not s["failed"]
print(f"        flows={s['flows']} exact={s['completed_byte_exact']} max_stall_ms={s['max_stall_ms']} "
      f"midflow_stall_ms={s['max_midflow_stall_ms']} goodput={s['goodput_mbit_s']}Mbit/s", file=sys.stderr)
sys.exit(0 if ok else 1)
EOF
}

run_client() { # outfile expect_rc args...
  local out=$1 want=$2; shift 2
  local rc=0
  ip netns exec "$FT_CLIENT_NS" "$PY" "$E2E/clients.py" "$@" >"$out" 2>"$out.err" || rc=$?
  if [[ $rc -ne $want ]]; then
    echo "        clients.py $* -> rc=$rc (want $want): $(head -c 400 "$out" "$out.err")" >&2
    return 1
  fi
  [[ $want -ne 0 ]] || all_ok "$out"
}

a0_rx() {
  ip -n "$FT_A_NS" -s -j link show dev "$FT_A_IF" |
    $PY -c 'import json,sys; print(json.load(sys.stdin)[0]["stats64"]["rx"]["packets"])'
}

# ------------------------------------------------------------------ preconditions
for ns in "$FT_CLIENT_NS" "$FT_SW_NS" "$FT_A_NS" "$FT_B_NS"; do
  if ft_ns_exists "$ns" && [[ -n $(ip netns pids "$ns" 2>/dev/null) ]]; then
    WAS_UP=1   # never tear down a rig that is in use
    ft_die "processes are running in namespace $ns (an engine?); not touching a rig in use"
  fi
done
if "$TOPO" status >/dev/null 2>&1; then WAS_UP=1; fi

echo "selftest: setup --check"
"$ROOT/scripts/setup" --check >"$TMP/setup.out" 2>&1 || echo "        (setup --check reported problems; continuing)"

echo "selftest: topology"
check "topology up" "$TOPO" up
check "topology up again is idempotent and silent" bash -c "out=\$('$TOPO' up 2>&1) && [[ -z \$out ]] || { echo \"\$out\" >&2; false; }"
check "topology status says up" bash -c "'$TOPO' status >'$TMP/status' && grep -q '^state: up' '$TMP/status'"
check "topology env evaluates" bash -c "eval \"\$('$TOPO' env)\" && [[ \$FT_VIP == '$FT_VIP' && \$FT_A_IF == '$FT_A_IF' && -n \$FT_EAL_MEM_ARGS ]]"
check "engine ports carry no IPv4 address" bash -c "! ip -n '$FT_A_NS' -4 -o addr show dev '$FT_A_IF' | grep -q inet && ! ip -n '$FT_B_NS' -4 -o addr show dev '$FT_B_IF' | grep -q inet"
check "client tx checksum offload off" bash -c "ip netns exec '$FT_CLIENT_NS' ethtool -k '$FT_CLIENT_IF' | grep -q '^tx-checksumming: off'"
check "sync link pings" bash -c "ip netns exec '$FT_A_NS' ping -c 2 -i 0.2 -W 1 -q '$FT_B_SYNC_IP' >/dev/null"

# ------------------------------------------------------------------ stand-in server on the VIP
echo "selftest: stand-in server on $FT_A_NS/$FT_A_IF $FT_VIP"
ip -n "$FT_A_NS" addr add "$FT_VIP/$FT_PREFIX" dev "$FT_A_IF"
VIP_ADDED=1
mkdir -p "$TMP/www"
head -c 5000000 /dev/urandom >"$TMP/www/obj"
head -c 1000 /dev/urandom >"$TMP/www/small"
SHA=$(sha256sum "$TMP/www/obj" | cut -d' ' -f1)
SHA_SMALL=$(sha256sum "$TMP/www/small" | cut -d' ' -f1)
ip netns exec "$FT_A_NS" "$PY" "$E2E/stubserver.py" --bind "$FT_VIP" --dir "$TMP/www" \
  --http-port 80 --echo-port 7 --max-seconds 300 >"$TMP/stub.log" 2>&1 &
STUB_PID=$!
for _ in $(seq 1 100); do
  if ip netns exec "$FT_CLIENT_NS" curl -s --noproxy '*' --max-time 1 -o /dev/null "http://$FT_VIP/small"; then break; fi
  sleep 0.1
done

ft_rstcount_start "$TMP/rst" "$FT_CLIENT_NS" 240 || echo "selftest: rstcount did not report ready"
RST_PID=$FT_RSTCOUNT_PID

echo "selftest: clients"
U="http://$FT_VIP/obj"
check "download socket x10" run_client "$TMP/d1" 0 download -n 10 --url "$U" --sha256 "$SHA" --timeout 60
check "download curl x10" run_client "$TMP/d2" 0 download -n 10 --mode curl --url "$U" --sha256 "$SHA" --timeout 60
check "download socket rate-limited x2 (4 MB/s)" run_client "$TMP/d3" 0 download -n 2 --url "$U" --sha256 "$SHA" --rate 4000000 --timeout 30
check "keepalive socket 4x20" run_client "$TMP/k1" 0 keepalive -k 4 -m 20 --url "http://$FT_VIP/small" --sha256 "$SHA_SMALL"
check "keepalive curl 4x20 (one connection each)" run_client "$TMP/k2" 0 keepalive --mode curl -k 4 -m 20 --url "http://$FT_VIP/small" --sha256 "$SHA_SMALL"
check "echo x4 5 MB" run_client "$TMP/e1" 0 echo -n 4 --mbytes 5 --port 7
check "wrong sha256 fails" run_client "$TMP/n1" 1 download -n 2 --url "$U" --sha256 "$(printf '0%.0s' {1..64})"
check "404 fails" run_client "$TMP/n2" 1 download -n 1 --url "http://$FT_VIP/nothere" --no-verify
check "trace file written" bash -c "ip netns exec '$FT_CLIENT_NS' '$PY' '$E2E/clients.py' download -n 2 --url '$U' --sha256 '$SHA' --trace '$TMP/trace.jsonl' >/dev/null && [[ \$(wc -l <'$TMP/trace.jsonl') -eq 2 ]]"

echo "selftest: rstcount"
for port in 81 82 83; do   # closed ports: the kernel stand-in answers each SYN with one RST
  ip netns exec "$FT_CLIENT_NS" curl -s --noproxy '*' --max-time 1 -o /dev/null "http://$FT_VIP:$port/" || true
done
sleep 0.3
kill -TERM "$RST_PID"; wait "$RST_PID" || true; RST_PID=""
check "rstcount saw exactly the 3 provoked RSTs" bash -c "[[ \$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))[\"rst_in\"])' '$TMP/rst.json') -eq 3 ]] || { cat '$TMP/rst.json' >&2; false; }"

echo "selftest: barrage"
A_MAC=$(ip netns exec "$FT_A_NS" cat "/sys/class/net/$FT_A_IF/address")
before=$(a0_rx)
check "barrage runs (all categories)" bash -c "ip netns exec '$FT_CLIENT_NS' '$PY' '$E2E/barrage.py' --count 10 --rate 5000 --dport 80,7 >'$TMP/barrage.json'"
after=$(a0_rx)
sent=$(jget "$TMP/barrage.json" 's["total_sent"]')
[[ $sent =~ ^[0-9]+$ ]] || sent=-1
echo "        barrage sent $sent frames; $FT_A_IF received $((after - before)) (incl. ARP)"
check "every barrage frame reached the engine port" test "$((after - before))" -ge "$sent"
check "barrage resolved the VIP MAC by ARP" test "$(jget "$TMP/barrage.json" 's["dst_mac"]')" = "$A_MAC"
check "stand-in still serves after barrage" run_client "$TMP/d4" 0 download -n 2 --url "$U" --sha256 "$SHA"

# ------------------------------------------------------------------ teardown
kill "$STUB_PID" 2>/dev/null; wait "$STUB_PID" 2>/dev/null || true; STUB_PID=""
ip -n "$FT_A_NS" addr del "$FT_VIP/$FT_PREFIX" dev "$FT_A_IF"; VIP_ADDED=0

if [[ $WAS_UP -eq 0 ]]; then
  echo "selftest: topology down"
  check "topology down" "$TOPO" down
  check "topology down again is a no-op" bash -c "out=\$('$TOPO' down 2>&1) && [[ -z \$out ]]"
  check "namespaces gone" bash -c "! ip netns list | grep -Eq '^($FT_CLIENT_NS|$FT_SW_NS|$FT_A_NS|$FT_B_NS)( |\$)'"
  check "status reports down (exit 1)" bash -c "! '$TOPO' status >/dev/null"
else
  echo "selftest: rig was up before; leaving it up (down/up cycle skipped)"
fi

if [[ ${#FAILS[@]} -eq 0 ]]; then
  echo "selftest: PASS ($CHECKS checks)"
  exit 0
fi
echo "selftest: FAIL (${#FAILS[@]} of $CHECKS): ${FAILS[*]}"
exit 1
