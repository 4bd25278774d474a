#!/usr/bin/env bash
# tests/e2e/groups.sh — ownership groups on the engine pair (issue 13 item 1).
#
#   tests/e2e/groups.sh [--only NAME[,NAME...]] [--keep-logs] [--list]
#
# Both engines of tests/e2e/failover_lib.sh get a second VIP ($FT_VIP2, vrid 2: its own MAC)
# with the object (:80) and echo (:7) services, and two [[group]]s: "web" = $FT_VIP and
# "alt" = $FT_VIP2. One sync session covers both groups today, so they fail over together.
#
# Tests:
#   two_groups_kill  A active, B its in-sync standby. A's /metrics: flowtwin_group_owned 1 for
#                    both groups, B's 0, and `ctl status` says so per group. Downloads and echo
#                    streams on both VIPs; kill -9 A. PASS iff every transfer on both VIPs is
#                    byte-exact, the client saw 0 RSTs, and B owns both groups afterwards (its
#                    metrics and status), with each VIP announced from its own MAC (the client's
#                    neighbour entries); and `promtool check metrics` passes on both engines'
#                    expositions (before and after; but for the microsecond names kept on purpose).
#   idle_group       the same pair; VIP2's group has no flow at the kill (one request before it
#                    taught the switch where VIP2 lives), downloads on VIP span it. PASS iff new
#                    connections to both VIPs connect within 2 s of B's takeover (B's gratuitous
#                    ARP for VIP2 is the only frame from VIP2's MAC that can move it) and the
#                    downloads are byte-exact with 0 RSTs.
#   group_mismatch   B's config names the groups differently (VIP2 in "web" too): A refuses it
#                    as its standby with a message naming both layouts (ctl status last_error),
#                    and B never reaches in_sync.
# Prints `PASS name (details)` / `FAIL name (details)` and one closing line `N passed, M failed`.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
FT_PROG=groups
ALL_TESTS=(two_groups_kill idle_group group_mismatch)
# shellcheck source=tests/e2e/suite_lib.sh
. "$ROOT/tests/e2e/suite_lib.sh"
suite_args groups test 3,26 ALL_TESTS "$@"
suite_bin groups
# shellcheck source=tests/e2e/failover_lib.sh
. "$E2E/failover_lib.sh"
suite_teardown() { fl_cleanup; "$TOPO" down >/dev/null 2>&1 || true; }
trap 'suite_cleanup groups' EXIT
T_START=$(fl_now)

FT_VIP2=198.18.0.101
VIP2_MAC=00:00:5e:00:01:02

# The second VIP and its services, and the groups, for engine $1's config.
groups_extra() { # LAYOUT: "split" ("web" = VIP, "alt" = VIP2) or "merged" (both in "web")
  local g
  if [[ $1 == split ]]; then
    g=$(printf '[[group]]\nname = "web"\nvips = ["%s"]\n[[group]]\nname = "alt"\nvips = ["%s"]' "$FT_VIP" "$FT_VIP2")
  else
    g=$(printf '[[group]]\nname = "web"\nvips = ["%s", "%s"]' "$FT_VIP" "$FT_VIP2")
  fi
  printf '[[vip]]\naddr = "%s"\nvrid = 2\n[[service]]\nvip = "%s"\nport = 80\nkind = "object"\n[[service]]\nvip = "%s"\nport = 7\nkind = "echo"\n%s\n' \
    "$FT_VIP2" "$FT_VIP2" "$FT_VIP2" "$g"
}

# promtool_problems FILE — what Prometheus's own linter (promtool check metrics, from Debian's
# prometheus package, installed on first use) says of an exposition, but for the names that
# keep their microsecond unit on purpose (renaming them would break every dashboard and script
# that reads them; README "Metrics"). Prints nothing when clean.
KEEP_US_NAMES="flowtwin_output_hold_us|flowtwin_sync_ack_rtt_us|flowtwin_sync_lag_us|flowtwin_sync_last_detect_us|flowtwin_sync_last_takeover_us"
promtool_problems() {
  if ! command -v promtool >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >"$TMP/apt-prometheus.log" 2>&1 \
      || { apt-get update -q >>"$TMP/apt-prometheus.log" 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >>"$TMP/apt-prometheus.log" 2>&1; } \
      || { echo "promtool: cannot install Debian's prometheus package (see $TMP/apt-prometheus.log)"; return; }
  fi
  promtool check metrics <"$1" 2>&1 | grep -Ev "^($KEEP_US_NAMES) metric names should not contain abbreviated units$" | tr '\n' ' ' || true
}

# owned FILE GROUP — flowtwin_group_owned{group=GROUP} in a metrics file
owned() { mval "$1" flowtwin_group_owned "group=$2"; }

# clients_on VIP DIR — 6 downloads of 20 MB at 2 MiB/s and 2 echo streams of 20 MB at 2 MB/s to VIP
# (~10 s each: they span the kill, which comes at most 2 s after the slowest client has bytes)
clients_on() {
  local vip=$1 dir=$2
  mkdir -p "$dir"
  FT_VIP=$vip ip netns exec "$FT_CLIENT_NS" timeout 70 $PY "$E2E/ftclients.py" download -n 6 --mode socket \
    --gen 20971520 --rate 2097152 --timeout 50 --connect-timeout 3 --ready-file "$dir/dl.ready" \
    >"$dir/dl.json" 2>"$dir/dl.err" &
  CL_PIDS+=($!)
  FT_VIP=$vip ip netns exec "$FT_CLIENT_NS" timeout 70 $PY "$E2E/ftclients.py" echo -n 2 --mbytes 20 \
    --chunk 16384 --rate 2000000 --timeout 50 --connect-timeout 3 --ready-file "$dir/echo.ready" \
    >"$dir/echo.json" 2>"$dir/echo.err" &
  CL_PIDS+=($!)
}

START_ERR=""
start_pair() { # DIR LAYOUT_A LAYOUT_B -> 0 once A is active (B is started, not awaited); else START_ERR
  local dir=$1
  mkdir -p "$dir"
  fl_rig_reset
  bridge -n "$FT_SW_NS" fdb del "$VIP2_MAC" dev "$FT_SW_A_IF" master >/dev/null 2>&1 || true
  bridge -n "$FT_SW_NS" fdb del "$VIP2_MAC" dev "$FT_SW_B_IF" master >/dev/null 2>&1 || true
  FL_CONFIG_EXTRA_a=$(groups_extra "$2") FL_CONFIG_EXTRA_b=$(groups_extra "$3")
  export FL_CONFIG_EXTRA_a FL_CONFIG_EXTRA_b
  fl_start_engine a "$dir/a.log" || { START_ERR="engine A did not start: $(tail -3 "$dir/a.log" | tr '\n' ' ')"; return 1; }
  fl_wait_status a 's["role"] == "active"' 10 || { START_ERR="engine A not active: $(fl_status a)"; return 1; }
  fl_start_engine b "$dir/b.log" || { START_ERR="engine B did not start: $(tail -3 "$dir/b.log" | tr '\n' ' ')"; return 1; }
}

test_two_groups_kill() {
  local name=two_groups_kill dir=$TMP/two_groups_kill problems=()
  if ! start_pair "$dir" split split; then fail "$name" "$START_ERR"; fl_cleanup; return; fi
  if ! fl_wait_status b 's["role"] == "standby" and s["in_sync"]' 15; then
    fail "$name" "B not in_sync after 15 s: B $(fl_status b); A $(fl_status a)"; fl_cleanup; return
  fi
  fl_wait_vip 10 || problems+=("VIP does not answer ping: $(fl_vip_diag)")
  ip netns exec "$FT_CLIENT_NS" ping -c 1 -W 1 "$FT_VIP2" >/dev/null 2>&1 || problems+=("VIP2 $FT_VIP2 does not answer ping")
  fl_metrics a "$dir/a_before.metrics"
  fl_metrics b "$dir/b_before.metrics"
  [[ $(owned "$dir/a_before.metrics" web) == 1 && $(owned "$dir/a_before.metrics" alt) == 1 ]] \
    || problems+=("A's flowtwin_group_owned before the kill: web $(owned "$dir/a_before.metrics" web), alt $(owned "$dir/a_before.metrics" alt) (want 1, 1)")
  [[ $(owned "$dir/b_before.metrics" web) == 0 && $(owned "$dir/b_before.metrics" alt) == 0 ]] \
    || problems+=("B's flowtwin_group_owned before the kill: web $(owned "$dir/b_before.metrics" web), alt $(owned "$dir/b_before.metrics" alt) (want 0, 0)")
  [[ $(fl_jq "$(fl_status a)" 's["groups"] == {"web": "owned", "alt": "owned"}') == True ]] || problems+=("A's ctl status groups: $(fl_jq "$(fl_status a)" 's.get("groups")')")
  [[ $(fl_jq "$(fl_status b)" 's["groups"] == {"web": "standby", "alt": "standby"}') == True ]] || problems+=("B's ctl status groups: $(fl_jq "$(fl_status b)" 's.get("groups")')")
  fl_rst_start "$dir" || info "rstcount did not report ready"
  CL_PIDS=()
  clients_on "$FT_VIP" "$dir/web"
  clients_on "$FT_VIP2" "$dir/alt"
  local i f
  for ((i = 0; i < 300; i++)); do
    f=0
    for g in web/dl web/echo alt/dl alt/echo; do [[ -s $dir/$g.ready ]] || f=1; done
    [[ $f -eq 0 ]] && break
    sleep 0.05
  done
  local ready=yes
  [[ $f -eq 0 ]] || { ready=no; info "$name: not every client group had bytes after 15 s"; }
  sleep "$(fl_random_delay)"
  spurious_guard || { fl_cleanup; void_run "$name" test_two_groups_kill; return; }
  fl_kill9 a
  fl_wait_status b 's["role"] == "active"' 5 || problems+=("B did not take over within 5 s: $(fl_status b)")
  fl_clients_wait
  fl_rst_stop
  fl_metrics b "$dir/b_after.metrics"
  local lint
  for f in a_before b_after; do
    lint=$(promtool_problems "$dir/$f.metrics")
    [[ -z $lint ]] || problems+=("promtool check metrics on ${f%_*}'s exposition: $lint")
  done
  local st rst
  st=$(fl_status b)
  for g in web/dl web/echo alt/dl alt/echo; do
    client_ok "$dir/$g.json" || problems+=("$g: $(client_desc "$dir/$g.json")")
  done
  rst=$(jget "$dir/rst.json" 's["rst_in"]')
  [[ $rst == 0 ]] || problems+=("client saw $rst RST(s)")
  # Every flow of both groups was running at the kill: B must have resumed all 16.
  [[ $(fl_jq "$st" 's["flows_resumed"]') == 16 ]] || problems+=("B resumed $(fl_jq "$st" 's["flows_resumed"]') flows, not the 16 of both groups (ready before the kill: $ready; kill at $KILL_T; ready files at $(stat -c %.Y "$dir"/web/dl.ready "$dir"/web/echo.ready "$dir"/alt/dl.ready "$dir"/alt/echo.ready | tr '\n' ' '))")
  [[ $(owned "$dir/b_after.metrics" web) == 1 && $(owned "$dir/b_after.metrics" alt) == 1 ]] \
    || problems+=("B's flowtwin_group_owned after the takeover: web $(owned "$dir/b_after.metrics" web), alt $(owned "$dir/b_after.metrics" alt)")
  [[ $(fl_jq "$st" 's["groups"] == {"web": "owned", "alt": "owned"}') == True ]] || problems+=("B's ctl status groups after: $(fl_jq "$st" 's.get("groups")')")
  local n1 n2
  n1=$(ip -n "$FT_CLIENT_NS" neigh show "$FT_VIP" | awk '{print $5}')
  n2=$(ip -n "$FT_CLIENT_NS" neigh show "$FT_VIP2" | awk '{print $5}')
  [[ $n1 == "$FT_VIP_VRRP_MAC" && $n2 == "$VIP2_MAC" ]] || problems+=("client neighbours: $FT_VIP at '$n1', $FT_VIP2 at '$n2' (want $FT_VIP_VRRP_MAC, $VIP2_MAC)")
  local desc="web: $(client_desc "$dir/web/dl.json"); alt: $(client_desc "$dir/alt/dl.json"); echo alt: $(client_desc "$dir/alt/echo.json"); RSTs $rst; B resumed $(fl_jq "$st" 's["flows_resumed"]') flows"
  fl_cleanup
  if [[ ${#problems[@]} -eq 0 ]]; then
    pass "$name" "$desc"
  else
    local IFS=';'
    fail "$name" "${problems[*]}; $desc"
  fi
}

# spurious_guard — just before a kill: A still active and B its in-sync standby. On this
# 2-vCPU machine a starved heartbeat sometimes makes B take over early (correctly fenced);
# the kill would then measure nothing.
spurious_guard() {
  [[ $(fl_jq "$(fl_status a)" 's["role"]') == active && $(fl_jq "$(fl_status b)" 's["role"] == "standby" and s["in_sync"]') == True ]]
}

# void_run NAME FUNC — repeat FUNC (at most twice in all) after a spurious takeover, else fail
VOIDS=0
void_run() {
  VOIDS=$((VOIDS + 1))
  if [[ $VOIDS -gt 2 ]]; then fail "$1" "B took over before the kill in 3 runs (starved heartbeats?)"; return; fi
  info "$1: B took over before the kill (spurious, fenced): run repeated"
  "$2"
}

# idle_group — VIP2's group has no flow at the kill (a request before it taught the switch and
# the client that VIP2 lives at A); downloads on VIP span the kill. After B's takeover new
# connections to both VIPs must connect within 2 s: only B's announcement of VIP2 (nothing else
# B sends comes from VIP2's MAC) moves it on the switch.
test_idle_group() {
  local name=idle_group dir=$TMP/idle_group problems=()
  if ! start_pair "$dir" split split; then fail "$name" "$START_ERR"; fl_cleanup; return; fi
  if ! fl_wait_status b 's["role"] == "standby" and s["in_sync"]' 15; then
    fail "$name" "B not in_sync after 15 s: B $(fl_status b); A $(fl_status a)"; fl_cleanup; return
  fi
  local before
  before=$(ip netns exec "$FT_CLIENT_NS" curl -s -o /dev/null -w '%{http_code}' --max-time 3 "http://$FT_VIP2/gen/1000" || true)
  [[ $before == 200 ]] || problems+=("request to VIP2 before the kill: HTTP '$before'")
  fl_rst_start "$dir" || info "rstcount did not report ready"
  CL_PIDS=()
  clients_on "$FT_VIP" "$dir/web"
  local i
  for ((i = 0; i < 300; i++)); do [[ -s $dir/web/dl.ready && -s $dir/web/echo.ready ]] && break; sleep 0.05; done
  sleep "$(fl_random_delay)"
  spurious_guard || { fl_cleanup; void_run "$name" test_idle_group; return; }
  fl_kill9 a
  fl_wait_status b 's["role"] == "active"' 5 || problems+=("B did not take over within 5 s: $(fl_status b)")
  local v code t
  for v in "$FT_VIP2" "$FT_VIP"; do
    t=$(fl_now)
    code=$(ip netns exec "$FT_CLIENT_NS" curl -s -o /dev/null -w '%{http_code}' --connect-timeout 2 --max-time 4 "http://$v/gen/1000" || true)
    [[ $code == 200 ]] || problems+=("new connection to $v after the takeover: HTTP '$code' after $(fl_ms_since "$t") ms")
  done
  fl_clients_wait
  fl_rst_stop
  local g rst
  for g in web/dl web/echo; do client_ok "$dir/$g.json" || problems+=("$g: $(client_desc "$dir/$g.json")"); done
  rst=$(jget "$dir/rst.json" 's["rst_in"]')
  [[ $rst == 0 ]] || problems+=("client saw $rst RST(s)")
  local desc
  desc="new connections to both VIPs after the takeover: ${#problems[@]} problem(s); web: $(client_desc "$dir/web/dl.json"); RSTs $rst"
  fl_cleanup
  if [[ ${#problems[@]} -eq 0 ]]; then pass "$name" "$desc"; else local IFS=';'; fail "$name" "${problems[*]}; $desc"; fi
}

test_group_mismatch() {
  local name=group_mismatch dir=$TMP/group_mismatch
  if ! start_pair "$dir" split merged; then fail "$name" "$START_ERR"; fl_cleanup; return; fi
  local i err="" b_sync=""
  for ((i = 0; i < 60; i++)); do
    err=$(fl_jq "$(fl_status a)" 's["last_error"]')
    [[ $err == *"ownership group mismatch"* ]] && break
    sleep 0.1
  done
  sleep 1
  b_sync=$(fl_jq "$(fl_status b)" 's["in_sync"]')
  fl_cleanup
  if [[ $err == *"ownership group mismatch"* && $err == *"web=$FT_VIP;alt=$FT_VIP2"* && $b_sync != True ]]; then
    pass "$name" "A refused B: $err; B in_sync: $b_sync"
  else
    fail "$name" "A's last_error: '$err' (want the mismatch naming both layouts); B in_sync: $b_sync"
  fi
}

fl_init
info "rig up; engines: $BIN; logs: $TMP"
for t in "${ALL_TESTS[@]}"; do
  selected "$t" || continue
  run "$t" "test_$t"
done
suite_end groups test "$T_START"
