#!/usr/bin/env bash
# tests/e2e/devices.sh — the unchanged flowtwin binary on DPDK devices beyond af_packet/null/
# ring/pcap: only EAL args and config change, never code (issue 2 item 3).
#
#   tests/e2e/devices.sh [--only NAME[,NAME...]] [--keep-logs] [--list]
#
# Each check prints `PASS name (details)`, `FAIL name (reason)` or `SKIP name (reason)`, and the
# script ends with exactly one line `N passed, M failed, K skipped` (exit 1 if any failed).
# Builds nothing: expects target/release/flowtwin (FLOWTWIN=path overrides). EAL memory comes
# from scripts/lib.sh (ft_eal_mem_args: --in-memory with hugepages, else
# --no-huge --no-shconf -m 512; FT_EAL_MEM_ARGS overrides). Every process gets --no-pci and
# its own --file-prefix. A trap stops every process started here and removes the namespaces
# and sockets.
#
# Checks (in order; --only takes names or shell globs, e.g. --only 'memif_*'):
#   memif_c2s      net_memif: `bench --mode rxonly` on role=server, `bench --mode txonly` on
#                  role=client (two processes, one unix socket), 2.5 s: the server counts what
#                  the client sent (rx > 0, rx <= tx, rx >= tx - 4096, the most the rings hold)
#   memif_s2c      the same with the directions swapped: server txonly, client rxonly
#   vhost_v2h      net_virtio_user (txonly, --single-file-segments) -> net_vhost (rxonly)
#   vhost_h2v      net_vhost (txonly) -> net_virtio_user (rxonly)
#   af_xdp_rx      net_af_xdp on a veth in a namespace: `bench --mode rxonly` counts a kernel
#                  ping burst sent to it from the peer namespace (rx >= pings sent)
#   af_xdp_run     `flowtwin run` with the VIP on net_af_xdp: ARP + ping from the kernel peer,
#                  curl /gen/1048576 and /gen/20000000 sha256-exact (tests/e2e/gen.py), port
#                  counters; SIGTERM -> exit 0
# Every flowtwin process must also exit 0 (bench processes are stopped with SIGINT, which ends
# bench early with its JSON summary).
# af_xdp checks SKIP (with the kernel's or the PMD's own words) when the kernel has no AF_XDP
# sockets, or the PMD fails to create its XDP socket; any other failure is a FAIL.
#
# Namespaces: FT_DEV_NS (default ftdev, the DPDK side, veth FT_DEV_IF=xd0) and FT_DEV_PEER_NS
# (default ftdevp, kernel side, veth FT_DEV_PEER_IF=xd1 with FT_CLIENT_IP/FT_PREFIX). Traffic
# stays on that veth pair and on unix sockets in a private temp directory.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
FT_PROG=devices
: "${FT_DEV_NS:=ftdev}"
: "${FT_DEV_PEER_NS:=ftdevp}"
: "${FT_DEV_IF:=xd0}"
: "${FT_DEV_PEER_IF:=xd1}"

ALL_CHECKS=(memif_c2s memif_s2c vhost_v2h vhost_h2v af_xdp_rx af_xdp_run)
# shellcheck source=tests/e2e/suite_lib.sh
. "$ROOT/tests/e2e/suite_lib.sh"
SUITE_REPORTS_SKIPS=1
suite_args devices.sh name 2,32 ALL_CHECKS "$@"
ft_require_root

suite_bin devices
: "${FT_EAL_MEM_ARGS:=$(ft_eal_mem_args)}"
read -r -a MEM <<<"$FT_EAL_MEM_ARGS"
T_START=$(date +%s.%N)
# Receivers get the busy CPU 1 to themselves; a sender shares CPU 0 with its main lcore.
LC_RX="0@0,1@1"
LC_TX="0@0,1@0"
MBUFS=8191

# ------------------------------------------------------------------ plumbing
ns_down() {
  local ns
  for ns in "$FT_DEV_NS" "$FT_DEV_PEER_NS"; do
    ft_ns_exists "$ns" && ip netns del "$ns" 2>/dev/null
  done
  return 0
}

# suite_lib.sh: stop_pid, sigterm_wait, jget, curl_one; its suite_cleanup stops BG_PIDS (every
# process started here), then suite_teardown.
suite_teardown() {
  ns_down
  rm -f "$TMP"/*.sock
}
trap 'suite_cleanup devices' EXIT
trap 'exit 130' INT TERM

num() { [[ $1 =~ ^[0-9]+$ ]]; }

wait_path() { # path timeout_s pid — until path exists (false if pid died or timeout)
  local i n=$(( $2 * 20 ))
  for ((i = 0; i < n; i++)); do
    [[ -e $1 ]] && return 0
    kill -0 "$3" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

errtail() { # log — last EAL/PMD error-ish lines, one line
  { grep -iE 'error|fail|cannot|not supported|invalid' "$1" 2>/dev/null || true; } | tail -3 | tr '\n' ' ' | cut -c1-300
}

# bench NAME MODE LCORES DURATION EXTRA_EAL VDEV [NS] — start `flowtwin bench` in the background
# (out: $TMP/NAME.json, log: $TMP/NAME.log); sets BPID, flowtwin's own pid (ip netns exec
# execs it), so that a SIGINT reaches it directly. DURATION bounds the run.
bench() {
  local name=$1 mode=$2 lc=$3 dur=$4 extra=$5 vdev=$6 ns=${7:-} pre=()
  [[ -n $ns ]] && pre=(ip netns exec "$ns")
  # shellcheck disable=SC2086
  "${pre[@]}" "$BIN" bench --mode "$mode" --duration "$dur" --json --quiet \
    --mbufs "$MBUFS" -- --lcores "$lc" "${MEM[@]}" --no-pci --file-prefix "ftdev-$name" $extra \
    --vdev "$vdev" >"$TMP/$name.json" 2>"$TMP/$name.log" &
  BPID=$!
  BG_PIDS+=("$BPID")
}

BRC=0
bench_stop() { # pid — SIGINT (bench prints its JSON and exits), wait for it; exit status in BRC
  kill -INT "$1" 2>/dev/null || true
  BRC=0
  wait "$1" 2>/dev/null || BRC=$?
}

# pair CHECK LISTENER_VDEV LISTENER_EXTRA CONNECTOR_VDEV CONNECTOR_EXTRA SOCK DIRECTION
# Two bench processes on the two ends of a unix-socket device. The listener (memif server,
# vhost) starts first and creates SOCK; then the connector (memif client, virtio_user).
# DIRECTION c2l: connector txonly, listener rxonly; l2c: the reverse. The receiver polls CPU 1
# alone. After 2.5 s both get SIGINT in one kill(1): their lcores stop polling within
# microseconds, and each disconnects only later, when its main thread notices (<= 100 ms). This
# order matters: DPDK 22.11's memif PMD unmaps the shared rings when the peer disconnects,
# without waiting for a polling lcore, which then crashes (SIGSEGV in librte_net_memif, seen
# in about 1 run of 5 when the sender simply exited first).
pair() {
  local chk=$1 lvdev=$2 lextra=$3 cvdev=$4 cextra=$5 sock=$6 dir=$7
  local lmode cmode llc clc lpid cpid rxj txj
  if [[ $dir == c2l ]]; then lmode=rxonly cmode=txonly llc=$LC_RX clc=$LC_TX
  else lmode=txonly cmode=rxonly llc=$LC_TX clc=$LC_RX; fi
  rm -f "$sock"
  bench "$chk-l" "$lmode" "$llc" 30 "$lextra" "$lvdev"
  lpid=$BPID
  if ! wait_path "$sock" 15 "$lpid"; then
    bench_stop "$lpid"
    fail "$chk" "listener did not create $sock: $(errtail "$TMP/$chk-l.log")"
    return 0
  fi
  sleep 0.2
  bench "$chk-c" "$cmode" "$clc" 30 "$cextra" "$cvdev"
  cpid=$BPID
  sleep 2.5
  kill -INT "$lpid" "$cpid" 2>/dev/null || true
  local crc=0 lrc=0
  wait "$cpid" 2>/dev/null || crc=$?
  wait "$lpid" 2>/dev/null || lrc=$?
  if [[ $dir == c2l ]]; then rxj=$TMP/$chk-l.json txj=$TMP/$chk-c.json
  else rxj=$TMP/$chk-c.json txj=$TMP/$chk-l.json; fi
  local rx tx rxname txname
  rx=$(jget "$rxj" 's["rx"]'); tx=$(jget "$txj" 's["tx"]')
  rxname=$(jget "$rxj" 's["ports"][0]["name"]'); txname=$(jget "$txj" 's["ports"][0]["name"]')
  local det="$txname txonly sent $tx, $rxname rxonly received $rx"
  if ! num "$rx" || ! num "$tx"; then
    fail "$chk" "no JSON summary (exit status: listener $lrc, connector $crc; 139 = SIGSEGV): listener: $(errtail "$TMP/$chk-l.log"); connector: $(errtail "$TMP/$chk-c.log")"
  elif [[ $rx -le 0 ]]; then
    fail "$chk" "$det; nothing received"
  elif [[ $rx -lt $((tx - 4096)) ]]; then
    fail "$chk" "$det; lost more than 4096 (more than the rings hold when both stop)"
  elif [[ $rx -gt $tx ]]; then
    fail "$chk" "$det; received more than was sent"
  elif [[ $lrc -ne 0 || $crc -ne 0 ]]; then
    fail "$chk" "$det; exit status: listener $lrc, connector $crc (139 = SIGSEGV) $(grep -h 'Cannot close' "$TMP/$chk"-?.log | head -1)"
  else
    pass "$chk" "$det"
  fi
  # flowtwin bench rxonly (src/bench.rs at 9ccb236) drops its unused TX queues, and with them
  # the port, only after EAL cleanup; memif/virtio_user removal then finds the port started.
  # Shown here; under --no-huge the same bug is a SIGSEGV at exit, which the exit check fails.
  local f
  for f in "$TMP/$chk"-?.log; do
    if grep -q 'Cannot close started device' "$f" 2>/dev/null; then
      info "note: $(basename "$f" .log) logged 'Cannot close started device' at exit"
    fi
  done
  return 0
}

# ------------------------------------------------------------------ memif, vhost/virtio_user
check_memif() { # name direction — socket-abstract=no: a file in $TMP (the default, an abstract
  # socket, leaves nothing to wait for and is shared by the whole network namespace)
  local s=$TMP/memif.sock
  pair "$1" "net_memif0,role=server,socket=$s,socket-abstract=no" "" \
    "net_memif0,role=client,socket=$s,socket-abstract=no" "" "$s" "$2"
}

check_vhost() { # name direction — virtio_user must share its memory as one fd per segment list
  local s=$TMP/vhost.sock
  pair "$1" "net_vhost0,iface=$s,queues=1" "" "net_virtio_user0,path=$s,queues=1" "--single-file-segments" "$s" "$2"
}

# ------------------------------------------------------------------ af_xdp on a veth
XDP_SKIP=""
xdp_up() { # veth pair across two namespaces; the DPDK end has no address
  [[ -n $XDP_SKIP ]] && return 1
  ft_ns_exists "$FT_DEV_NS" && ft_link_exists "$FT_DEV_NS" "$FT_DEV_IF" && return 0
  ns_down
  local why
  # AF_XDP socket family present? (44 = AF_XDP; EAFNOSUPPORT without CONFIG_XDP_SOCKETS)
  if ! why=$($PY -c 'import socket; socket.socket(44, socket.SOCK_RAW, 0).close()' 2>&1); then
    XDP_SKIP="kernel has no AF_XDP sockets: socket(AF_XDP) -> ${why##*$'\n'}"
    return 1
  fi
  ip netns add "$FT_DEV_NS"
  ip netns add "$FT_DEV_PEER_NS"
  ip link add "$FT_DEV_IF" netns "$FT_DEV_NS" type veth peer name "$FT_DEV_PEER_IF" netns "$FT_DEV_PEER_NS"
  local ns ifc f end
  for ns in "$FT_DEV_NS" "$FT_DEV_PEER_NS"; do ip -n "$ns" link set dev lo up; done
  for end in "$FT_DEV_NS:$FT_DEV_IF" "$FT_DEV_PEER_NS:$FT_DEV_PEER_IF"; do
    ns=${end%%:*} ifc=${end#*:}
    # one feature at a time (veth has fixed features; ethtool fails a whole list)
    for f in tx rx tso gso gro sg; do ip netns exec "$ns" ethtool -K "$ifc" "$f" off >/dev/null 2>&1 || true; done
    ip -n "$ns" link set dev "$ifc" mtu "$FT_MTU" up
  done
  if ip netns exec "$FT_DEV_PEER_NS" ethtool -k "$FT_DEV_PEER_IF" | grep -q '^tx-checksumming: on'; then
    ft_die "$FT_DEV_PEER_NS/$FT_DEV_PEER_IF: tx checksum offload still on"
  fi
  ip -n "$FT_DEV_NS" link set dev "$FT_DEV_IF" promisc on
  ip -n "$FT_DEV_PEER_NS" addr add "$FT_CLIENT_IP/$FT_PREFIX" dev "$FT_DEV_PEER_IF"
  # the PMD's umem and rings count against RLIMIT_MEMLOCK on kernels that still charge it
  ulimit -l unlimited 2>/dev/null || true
}

xdp_mode() { # how the kernel reports the XDP program on the DPDK end: native/generic + prog id
  local l
  l=$(ip -n "$FT_DEV_NS" -d link show dev "$FT_DEV_IF" 2>/dev/null || true)
  local id
  id=$(grep -oE 'prog/xdp[a-z]* id [0-9]+' <<<"$l" | head -1 | awk '{print $3}' || true)
  [[ -n $id ]] || return 0
  case $l in
    *xdpgeneric*) echo "generic/SKB mode, prog id $id" ;;
    *xdpoffload*) echo "offload mode, prog id $id" ;;
    *) echo "native (driver) mode, prog id $id" ;;
  esac
}

xdp_pmd_failure() { # log — the PMD's words when the kernel refused its XDP socket or program
  # (xsk_configure/XDP program load/libbpf/libxdp errors), else "". Other failures (interface not
  # found, "Failed to init internals", ...) are the rig's fault and stay FAILs.
  { grep -E 'xsk|XSK|xdp socket|xdp prog|XDP prog|libbpf|libxdp' "$1" 2>/dev/null || true; } \
    | { grep -iE 'fail|error|cannot|not supported|not permitted|denied' || true; } | tail -3 | tr '\n' ' ' | cut -c1-400
}

check_af_xdp_rx() {
  if ! xdp_up; then skip af_xdp_rx "$XDP_SKIP"; return; fi
  local mac n=200
  mac=$(ip -n "$FT_DEV_NS" -br link show dev "$FT_DEV_IF" | awk '{print $3}')
  # static neighbour: every ping is one frame to the DPDK end (nothing answers them)
  ip -n "$FT_DEV_PEER_NS" neigh replace 198.18.0.1 lladdr "$mac" dev "$FT_DEV_PEER_IF" nud permanent
  bench af_xdp_rx rxonly "$LC_RX" 30 "" "net_af_xdp0,iface=$FT_DEV_IF,start_queue=0,queue_count=1" "$FT_DEV_NS"
  local bpid=$BPID i mode=""
  for i in $(seq 1 100); do  # wait until the PMD attached its XDP program
    mode=$(xdp_mode); [[ -n $mode ]] && break
    kill -0 "$bpid" 2>/dev/null || break
    sleep 0.05
  done
  sleep 0.3
  local out sent
  out=$(ip netns exec "$FT_DEV_PEER_NS" ping -c "$n" -i 0.005 -W 0.1 -q 198.18.0.1 2>&1 || true)
  sent=$(grep -oE '^[0-9]+ packets transmitted' <<<"$out" | awk '{print $1}')
  sleep 0.3
  bench_stop "$bpid"
  local brc=$BRC
  ip -n "$FT_DEV_PEER_NS" neigh del 198.18.0.1 dev "$FT_DEV_PEER_IF" 2>/dev/null || true
  local rx why
  rx=$(jget "$TMP/af_xdp_rx.json" 's["rx"]')
  if ! num "$rx"; then
    why=$(xdp_pmd_failure "$TMP/af_xdp_rx.log")
    if [[ -n $why ]]; then skip af_xdp_rx "af_xdp PMD could not start: $why"
    else fail af_xdp_rx "no JSON summary: $(errtail "$TMP/af_xdp_rx.log")"; fi
  elif [[ $brc -ne 0 ]]; then
    fail af_xdp_rx "bench exit status $brc: $(errtail "$TMP/af_xdp_rx.log")"
  elif [[ -z $sent || $sent -lt $n ]]; then
    fail af_xdp_rx "ping sent only '${sent:-0}' of $n"
  elif [[ $rx -lt $sent ]]; then
    fail af_xdp_rx "kernel sent $sent ICMP frames, bench rxonly counted $rx (XDP: ${mode:-none seen})"
  else
    pass af_xdp_rx "kernel ping sent $sent frames to $FT_DEV_IF, flowtwin bench rxonly on net_af_xdp0 counted $rx (incl. ARP/IPv6 noise); XDP attached: ${mode:-?}"
  fi
}

check_af_xdp_run() {
  if ! xdp_up; then skip af_xdp_run "$XDP_SKIP"; return; fi
  local cfg=$TMP/af_xdp.toml log=$TMP/af_xdp_run.log pid i up=0
  # the shared rig config (EAL memory, --no-pci, VIP, object + echo services) on another port
  FT_EAL_MEM_ARGS=$FT_EAL_MEM_ARGS ft_engine_toml "$cfg" "--lcores $LC_RX" ftdev-run \
    "net_af_xdp0,iface=$FT_DEV_IF,start_queue=0,queue_count=1"
  sed -i 's/^name = "net_af_packet0"$/name = "net_af_xdp0"/' "$cfg"
  grep -q '^name = "net_af_xdp0"$' "$cfg" || { fail af_xdp_run "could not set the port name in $cfg"; return; }
  "$BIN" check-config -c "$cfg" >"$TMP/check-config.out" 2>&1 || { fail af_xdp_run "check-config: $(cat "$TMP/check-config.out")"; return; }
  ip netns exec "$FT_DEV_NS" "$BIN" run -c "$cfg" >"$log" 2>&1 &
  pid=$!
  BG_PIDS+=("$pid")
  for i in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || break
    if ip netns exec "$FT_DEV_PEER_NS" ping -c 1 -W 0.5 "$FT_VIP" >/dev/null 2>&1; then up=1; break; fi
    sleep 0.25
  done
  if [[ $up -eq 0 ]]; then
    local why
    why=$(xdp_pmd_failure "$log")
    stop_pid "$pid"; wait "$pid" 2>/dev/null || true
    if [[ -n $why ]]; then skip af_xdp_run "af_xdp PMD could not start: $why"
    else fail af_xdp_run "engine on net_af_xdp0 never answered ping: $(tail -5 "$log" | tr '\n' ' ' | cut -c1-400)"; fi
    return
  fi
  local mode ok=1 det="" out n r
  mode=$(xdp_mode)
  local lladdr
  lladdr=$(vip_mac "$FT_DEV_PEER_NS" "$FT_DEV_PEER_IF")
  det+="ARP: VIP at ${lladdr:-?}; "
  [[ -n $lladdr ]] || ok=0
  if out=$(ip netns exec "$FT_DEV_PEER_NS" ping -c 5 -i 0.1 -W 1 "$FT_VIP" 2>&1) && grep -q " 5 received" <<<"$out"; then
    det+="ping 5/5 $(grep -oE 'rtt [^ ]+ = [^ ]+' <<<"$out" | awk '{print $4}')ms; "
  else ok=0; det+="ping FAILED ($(grep -E 'transmitted' <<<"$out")); "; fi
  for n in 1048576 20000000; do
    r=$(curl_one "$n" "$FT_DEV_PEER_NS" 30)
    if [[ $r == ok* ]]; then det+="curl $n B sha256 ok ${r#ok } MB/s; "
    else ok=0; det+="curl $n FAILED (${r#bad }); "; fi
  done
  local ms rc=0
  sigterm_wait "$pid" 3 || { ok=0; det+="still running ${TERM_MS} ms after SIGTERM; "; stop_pid "$pid"; }
  ms=$TERM_MS
  wait "$pid" 2>/dev/null || rc=$?
  [[ $rc -eq 0 ]] || { ok=0; det+="exit $rc; "; }
  local port
  port=$(grep -m1 '^flowtwin: port net_af_xdp0:' "$log" | sed 's/^flowtwin: port //' | cut -d' ' -f1-5)
  [[ -n $port ]] || { ok=0; port="no port statistics line"; }
  det+="$port; SIGTERM exit $rc in ${ms} ms; XDP attached: ${mode:-?}"
  [[ -z $(xdp_mode) ]] || det+="; XDP program still attached after exit: $(xdp_mode)"
  if [[ $ok -eq 1 ]]; then pass af_xdp_run "$det"; else fail af_xdp_run "$det; log: $(errtail "$log")"; fi
}

# ------------------------------------------------------------------ main
ns_down
info "flowtwin $BIN; EAL memory: $FT_EAL_MEM_ARGS; logs in $TMP"

run memif_c2s  check_memif memif_c2s c2l
run memif_s2c  check_memif memif_s2c l2c
run vhost_v2h  check_vhost vhost_v2h c2l
run vhost_h2v  check_vhost vhost_h2v l2c
run af_xdp_rx  check_af_xdp_rx
run af_xdp_run check_af_xdp_run

suite_end devices check "$T_START"
