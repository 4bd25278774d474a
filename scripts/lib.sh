# shellcheck shell=bash
# scripts/lib.sh — shared helpers for flowtwin rig scripts (source it, do not execute it).
#
#   . "$(dirname "$0")/lib.sh"
#
# Single source of truth for the test topology's names and addresses. Every value
# can be overridden from the environment before sourcing (e.g. FT_VIP=198.18.0.50).
# Only the benchmark range 198.18.0.0/15 is used, and only inside namespaces.

# ---------------------------------------------------------------- topology defaults
: "${FT_CLIENT_NS:=ftc}"          # Linux kernel TCP clients (curl, python)
: "${FT_SW_NS:=ftsw}"             # the "switch": a Linux bridge
: "${FT_A_NS:=fta}"               # engine A (DPDK af_packet on FT_A_IF)
: "${FT_B_NS:=ftb}"               # engine B
: "${FT_BRIDGE:=ftbr0}"           # bridge inside FT_SW_NS
: "${FT_SRV_NS=ftsrv}"            # backend servers of the proxy service (kernel sockets: nginx, echo,
                                  # upload; tests/e2e/backends.py); FT_SRV_NS= (empty) leaves it out

: "${FT_CLIENT_IF:=c0}"           # in FT_CLIENT_NS, peer FT_SW_CLIENT_IF
: "${FT_SW_CLIENT_IF:=swc}"       # in FT_SW_NS, bridge port
: "${FT_A_IF:=a0}"                # in FT_A_NS, no IP: DPDK attaches here
: "${FT_SW_A_IF:=swa}"
: "${FT_B_IF:=b0}"                # in FT_B_NS, no IP: DPDK attaches here
: "${FT_SW_B_IF:=swb}"
: "${FT_SRV_IF:=s0}"              # in FT_SRV_NS, peer FT_SW_SRV_IF (bridge port); both backend addresses
: "${FT_SW_SRV_IF:=sws}"
: "${FT_A_SYNC_IF:=async0}"       # in FT_A_NS, kernel sockets, peer FT_B_SYNC_IF
: "${FT_B_SYNC_IF:=bsync0}"       # in FT_B_NS

: "${FT_CLIENT_IP:=198.18.0.2}"
: "${FT_PREFIX:=24}"
: "${FT_VIP:=198.18.0.100}"       # owned by the engines; configured on no interface
# The proxy's backends, on the VIP's subnet (on-link: the engines' connections to them come from
# the VIP, and the backends reach the VIP through the switch, the engines answering its ARP).
: "${FT_SRV_IP1:=198.18.0.11}"
: "${FT_SRV_IP2:=198.18.0.12}"
: "${FT_A_SYNC_IP:=198.19.0.1}"
: "${FT_B_SYNC_IP:=198.19.0.2}"
: "${FT_SYNC_PREFIX:=30}"

# Deterministic, locally administered MACs (02:66:74 = 02:'f':'t').
: "${FT_CLIENT_MAC:=02:66:74:00:00:02}"
: "${FT_A_MAC:=02:66:74:00:00:0a}"
: "${FT_B_MAC:=02:66:74:00:00:0b}"
: "${FT_SRV_MAC:=02:66:74:00:00:11}"
: "${FT_A_SYNC_MAC:=02:66:74:00:01:0a}"
: "${FT_B_SYNC_MAC:=02:66:74:00:01:0b}"
: "${FT_VIP_MAC:=02:66:74:00:00:64}"  # suggested shared virtual MAC for the VIP (engine config)

: "${FT_MTU:=1500}"
: "${FT_BRIDGE_AGEING_CS:=30000}" # bridge fdb ageing, centiseconds (300 s, the kernel default)

: "${FT_RUN_DIR:=/run/flowtwin}"
: "${FT_HUGEPAGES_FILE:=$FT_RUN_DIR/hugepages}"
: "${FT_NOHUGE_MEM_MB:=512}"

# Variables printed by `scripts/topology env` / `status`, in order.
FT_ENV_VARS=(
  FT_CLIENT_NS FT_SW_NS FT_A_NS FT_B_NS FT_BRIDGE
  FT_CLIENT_IF FT_SW_CLIENT_IF FT_A_IF FT_SW_A_IF FT_B_IF FT_SW_B_IF
  FT_A_SYNC_IF FT_B_SYNC_IF
  FT_CLIENT_IP FT_PREFIX FT_VIP FT_A_SYNC_IP FT_B_SYNC_IP FT_SYNC_PREFIX
  FT_CLIENT_MAC FT_A_MAC FT_B_MAC FT_A_SYNC_MAC FT_B_SYNC_MAC FT_VIP_MAC
  FT_SRV_NS FT_SRV_IF FT_SW_SRV_IF FT_SRV_IP1 FT_SRV_IP2 FT_SRV_MAC
  FT_MTU FT_BRIDGE_AGEING_CS FT_RUN_DIR
)

# ---------------------------------------------------------------- engine metrics
FT_LIB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# ft_metrics_fetch NS FILE [MAX_TIME_S] — the engine's /metrics (Prometheus text) in namespace
# NS into FILE; an empty FILE if it does not answer within MAX_TIME_S (default 3).
ft_metrics_fetch() {
  ip netns exec "$1" curl -s --max-time "${3:-3}" "http://127.0.0.1:9470/metrics" >"$2" 2>/dev/null || : >"$2"
}
# ft_metrics metric FILE NAME [LABEL=VALUE ...] | delta FILE_A FILE_B NAME [LABEL=VALUE ...] |
#   buckets FILE NAME | sample URL INTERVAL_S NAME... — the one reader of that text
#   (tests/e2e/evallib.py): a sum over NAME's series with those labels (0 if absent), its change
#   from FILE_A to FILE_B, a histogram's buckets as "le:cumulative,...", a sampler.
ft_metrics() { "${PY:-python3}" "$FT_LIB_ROOT/tests/e2e/evallib.py" "$@"; }

# ---------------------------------------------------------------- RST counting
# ft_rstcount_start OUT NS SECONDS [rstcount.py args...] — the one launcher of
# tests/e2e/rstcount.py (every suite, the demo and the benchmarks count RSTs with it): in
# namespace NS for at most SECONDS, its JSON summary to OUT.json, its log to OUT.err. Sets
# FT_RSTCOUNT_PID; returns 0 once it reports ready (OUT.ready), 1 if not within 5 s.
FT_RSTCOUNT_PID=""
ft_rstcount_start() {
  local out=$1 ns=$2 secs=$3 i
  shift 3
  rm -f "$out.ready"
  ip netns exec "$ns" timeout $((secs + 10)) "${PY:-python3}" "$FT_LIB_ROOT/tests/e2e/rstcount.py" --duration "$secs" \
    --ready-file "$out.ready" "$@" >"$out.json" 2>"$out.err" &
  FT_RSTCOUNT_PID=$!
  for ((i = 0; i < 100; i++)); do [[ -s $out.ready ]] && return 0; sleep 0.05; done
  return 1
}

# ---------------------------------------------------------------- messages
ft_info() { printf '%s: %s\n' "${FT_PROG:-flowtwin}" "$*"; }
ft_warn() { printf '%s: warning: %s\n' "${FT_PROG:-flowtwin}" "$*" >&2; }
ft_die()  { printf '%s: error: %s\n' "${FT_PROG:-flowtwin}" "$*" >&2; exit 1; }

ft_require_root() {
  [[ ${EUID:-$(id -u)} -eq 0 ]] || ft_die "must run as root (try: sudo $0 $*)"
}

# ---------------------------------------------------------------- packages
# ft_ensure_cmds CMD:PACKAGE... — apt-get install the packages of the commands that are missing
# (a policy-rc.d keeps their services stopped: the rig starts its own); an apt log in
# ${TMP:-/tmp}/apt.log. Returns 1, naming the package and apt's last lines, if one is still missing.
ft_ensure_cmds() {
  local spec pkgs=() log=${TMP:-/tmp}/apt.log
  for spec in "$@"; do command -v "${spec%%:*}" >/dev/null || pkgs+=("${spec#*:}"); done
  [[ ${#pkgs[@]} -eq 0 ]] && return 0
  ft_info "installing ${pkgs[*]} (apt-get; no service is started)"
  local policy=/usr/sbin/policy-rc.d made=0
  if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; made=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}" >"$log" 2>&1 \
    || { apt-get update -q >>"$log" 2>&1 \
         && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}" >>"$log" 2>&1; } || true
  [[ $made -eq 1 ]] && rm -f "$policy"
  for spec in "$@"; do
    command -v "${spec%%:*}" >/dev/null || { ft_warn "${spec#*:} could not be installed: $(tail -3 "$log" | tr '\n' ' ')"; return 1; }
  done
}

# ---------------------------------------------------------------- namespaces
ft_ns_exists() { [[ -e "/run/netns/$1" ]]; }
# ft_nsx NS CMD... : run CMD inside namespace NS
ft_nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
ft_link_exists() { ft_ns_exists "$1" && ip -n "$1" link show dev "$2" >/dev/null 2>&1; }

# ---------------------------------------------------------------- hugepages / EAL
# ft_hugepages_mode: prints "huge" or "no-huge".
# Uses the decision written by scripts/setup; if absent, decides from the live system.
ft_hugepages_mode() {
  local m=""
  if [[ -r $FT_HUGEPAGES_FILE ]]; then
    m=$(tr -d ' \n' <"$FT_HUGEPAGES_FILE")
  fi
  case $m in
    huge|no-huge) ;;
    *)
      local n
      n=$(cat /proc/sys/vm/nr_hugepages 2>/dev/null || echo 0)
      if [[ ${n:-0} -gt 0 ]] && grep -qs ' /dev/hugepages hugetlbfs ' /proc/mounts; then
        m=huge
      else
        m=no-huge
      fi ;;
  esac
  printf '%s\n' "$m"
}

# ft_eal_mem_args: EAL memory arguments matching the hugepage decision.
#   huge    -> --in-memory            (no shared config, no files left in /dev/hugepages)
#   no-huge -> --no-huge --no-shconf -m 512   (--in-memory is incompatible with --no-huge)
ft_eal_mem_args() {
  if [[ $(ft_hugepages_mode) == huge ]]; then
    printf '%s\n' "--in-memory"
  else
    printf '%s\n' "--no-huge --no-shconf -m ${FT_NOHUGE_MEM_MB}"
  fi
}

# ft_engine_toml FILE LCORES PREFIX VDEV
# Write the rig's engine config, the part every suite shares: EAL args (LCORES, word-split,
# e.g. "-l 0-1"; the memory args from FT_EAL_MEM_ARGS; --no-pci, which keeps EAL off the VM's
# own NIC; --file-prefix PREFIX; --vdev VDEV), the af_packet port, the VIP (vrid 1) and the
# object (:80) and echo (:7) services. Callers append their own sections ([engine], [sync]).
ft_engine_toml() {
  local out=$1 lcores=$2 prefix=$3 vdev=$4 a args="" mem=()
  for a in $lcores; do args+="\"$a\", "; done
  read -r -a mem <<<"${FT_EAL_MEM_ARGS:-$(ft_eal_mem_args)}"
  for a in "${mem[@]}"; do args+="\"$a\", "; done
  args+="\"--no-pci\", \"--file-prefix\", \"$prefix\", \"--vdev\", \"$vdev\", \"--log-level\", \"warning\""
  cat >"$out" <<EOF
[eal]
args = [$args]
[[port]]
name = "net_af_packet0"
[[vip]]
addr = "$FT_VIP"
vrid = 1
[[service]]
vip = "$FT_VIP"
port = 80
kind = "object"
[[service]]
vip = "$FT_VIP"
port = 7
kind = "echo"
EOF
}
