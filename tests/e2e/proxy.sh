#!/usr/bin/env bash
# tests/e2e/proxy.sh — the proxy service (kind = "proxy") end to end: real Linux backends, the
# engine pair in between, kill -9 of the active engine mid-transfer (issue 14).
#
#   tests/e2e/proxy.sh [--only NAME[,NAME...]] [--direct] [--inject KIND[,KIND...]] [--selfcheck]
#                      [--keep-logs] [--list]
#
# The rig (scripts/topology up) has a backend namespace on the switch (FT_SRV_NS, ftsrv) with two
# addresses (FT_SRV_IP1/2, 198.18.0.11 and .12). There tests/e2e/backends.py runs, on both:
# nginx on :80 (files /gen/<n> of 1 KiB, 1 MiB, 20 MiB, 100 MiB written from tests/e2e/gen.py),
# echo on :9000, upload (answers the SHA-256 of what it read) on :9001. Engines A (active) and B
# (its strict standby) start with the failover_lib helpers, plus these [[service]]s on the VIP:
#   :8080 kind = "proxy" -> the backends' :80     balance FT_PROXY_BALANCE_HTTP   (round-robin)
#   :9000 kind = "proxy" -> the backends' :9000   balance FT_PROXY_BALANCE_ECHO   (least-conn)
#   :9001 kind = "proxy" -> the backends' :9001   balance FT_PROXY_BALANCE_UPLOAD (hash)
# tests/e2e/proxyclients.py in the client namespace, through the VIP: 8 downloads of 20 MiB
# (curl --http1.0, curl Connection: close, sockets HTTP/1.0 and Connection: close), 2 keep-alive
# clients (curl and socket, 5 GETs on one connection), one 100 MiB download, 4 uploads of 1-20 MiB,
# 4 echo streams of 6 MB, and short connections (GET, HTTP/1.0 GET, echo, upload; one exchange
# each, ~40/s) throughout; the long ones paced to take ~6 s. Every body is checked against gen.py,
# every upload's digest against the client's own, every echoed byte.
#
# Tests (--only takes names or shell globs):
#   proxy_basic  no kill. PASS iff every transfer is byte-exact, the connections each service's
#                backends accepted equal the clients' (one backend connection per client one),
#                nginx's own accept count agrees, the bytes the backends moved equal the clients',
#                no backend socket error and no backend connection left open, 0 RSTs in the
#                captures of the client AND the backend namespace.
#   proxy_kill   the same load; once every flow moves, a random 0.5-2 s, then kill -9 A. PASS iff
#                all of proxy_basic's checks hold (so: no reconnect to a backend, no RST anywhere),
#                every long flow was still running at the kill, and B took over. The proxies run
#                their default output commit, `commit = "peer"` (FT_PROXY_COMMIT sets another).
#   proxy_kill_standby  proxy_kill with `commit = "standby"` (every relayed byte replicated).
#   proxy_http_kill  mode = "http": downloads routed by Host to the two nginx, kill (see below).
#   proxy_tls_kill   mode = "tls" on :8443 (SNI one.example -> nginx TLS on .11:443, two.example ->
#                .12:443, anything else or no SNI -> the default pool, .12:8444; each listener has its
#                own certificate, signed by a CA made with openssl at test time). 6 downloads of
#                20 MiB (curl, openssl s_client, one with a 4 KiB ALPN list: a ClientHello of 3
#                segments, Python ssl, one writing its ClientHello in 4 pieces) paced to ~5 s, kill
#                -9 A mid-transfer; then on B bad input (a plain HTTP request, a TLS alert record, a
#                handshake record that is not a ClientHello: each closed with a FIN and no byte),
#                the default pool (SNI three.example and none: the default listener's certificate)
#                and new connections by SNI. PASS iff every body matches gen.py's digest (computed
#                here), every certificate names the client's SNI, each nginx listener logged only
#                its SNI and exactly the clients' requests for it, nginx accepted exactly the client
#                connections that must reach it (no reconnect), 0 RSTs in both namespaces.
#   proxy_banner_kill  mode = "tcp" with a server-speaks-first backend (:9002, a banner line at
#                accept, then echo): 4 clients wait for the banner without sending a byte, then
#                echo 6 MB each (~5 s), kill -9 A mid-stream; 2 more connections after the takeover.
#                PASS iff every banner came at once and whole, every echoed byte matches, one banner
#                per backend connection, backend connections = client connections, 0 RSTs.
#   proxy_workers  both engines with engine.workers = 2 (af_packet qpairs=1: software
#                distribution, as tests/e2e/workers.sh runs it), proxy_kill's checks under a lighter
#                load with many short connections, kill -9 A; PASS also needs each worker of A (before
#                the kill) and of B (after it) to have linked proxied flows, and no frame counted
#                no_flow (a backend reply on the wrong worker); first a negative check: qpairs=2
#                (kernel fanout) with 2 workers and a proxy is refused at start, naming the reason.
#   proxy_closed_kill  delayed-binding connections (TLS, and HTTP/1.0 on mode = "http") done, kill
#                -9 A 0.3 s later (within tcp.time_wait_ms, their client halves in TIME-WAIT, the
#                backend halves gone). PASS iff nginx accepted exactly the clients' 4 connections,
#                logged exactly their 2 HTTP requests and no error: B never opens a backend
#                connection for a finished client one (it did, and replayed the request, until
#                the engine marked a partner's end as the choice used: nginx logged each request
#                twice, TLS "bad record mac").
#   proxy_pool   the pool of the running pair changed on the active (ctl backend drain, remove
#                --force, add --weight 3), the standby refusing changes itself and following the
#                active's table, then kill -9 A mid-download: B keeps the table (1:3 round-robin),
#                takes changes itself; every body digest-checked, nginx's log says which backend
#                served each request, 0 RSTs in both namespaces.
#   proxy_prometheus  Debian's Prometheus scrapes the running pair's active every 1 s: PASS iff its
#                target is up without error, every expression of the Grafana dashboard
#                (docs/grafana/flowtwin.json, tests/e2e/dashcheck.py) evaluates, more than half
#                return data, every family it names is one the engine exports, and promtool
#                check metrics is clean.
#   proxy_health  active health checks (health_check = "http", GET /gen/1024 expecting 200, every
#                0.5 s, rise 2, fall 2) of two backends, each its own nginx on :8090 (the other
#                tests' services have no checks). Backend 2's nginx is stopped (its port refuses):
#                PASS iff `ctl backends` on A shows it down within interval*fall+timeout+1 s, B (the
#                standby, from the pool table) shows it down too, /metrics has check_up 0, one
#                transition and >= fall failed checks, 10 downloads through the VIP all reach
#                backend 1 byte-exact; kill -9 A: B takes over with backend 2 down (A's health,
#                kept: B's own failing checks count no transition), 4 downloads all on backend 1;
#                then backend 2 restarts: up on B within 10 s, 10 more downloads split between
#                both (round-robin), A logged backend_down and B backend_up, no client found no
#                backend, 0 RSTs in the client namespace.
#                (--selfcheck: selfcheck_health-off runs it with no health_check, which must fail.)
# Reproductions of open engine defects, run only when named exactly (--only NAME; not by scripts/test):
#   (none open)
#
# --direct   no engines: the clients go straight to the backends (both addresses, ports 80, 9000,
#            9001), the "kill" only marks the time. Checks the harness itself, without the engine.
# --inject   make the harness see a fault (it must FAIL): upload-digest, echo-byte, rst, extra-conn,
#            banner-byte (tests/e2e/backends.py --inject), file-byte (one byte of /gen/20971520
#            flipped; proxy_tls_kill's downloads too), file-truncate (/gen/1048576 one byte short);
#            with the engines: tls-route (the TLS pools swapped), tls-as-tcp (the TLS service in
#            mode = "tcp"), banner-first (the banner service in mode = "http": the proxy waits for
#            the client), workers-one (proxy_workers with one worker), fanout-qpairs1 (its
#            negative check with qpairs=1, which starts), health-off (proxy_health's service
#            without health_check).
# --selfcheck  (implies --direct) one clean run, which must pass, then one run per --inject kind,
#            each of which must fail for its own reason: `PASS selfcheck_<kind>` when it did; then
#            the tests with the engines, each with a fault of its own (selfcheck_tls-route,
#            selfcheck_tls-as-tcp, selfcheck_tls-file-byte, selfcheck_banner-byte,
#            selfcheck_banner-first, selfcheck_workers-one, selfcheck_fanout-qpairs1,
#            selfcheck_health-off), each of which must fail for it.
# FLOWTWIN=tests/e2e/stubengine.py  a kernel-socket stand-in for the engine (no DPDK, nothing
#            replicated) to dry-run the engine paths: proxy_basic passes, proxy_kill must fail.
#
# A kill test whose run failed after B took over the live A before the kill (A logged that it
# fenced itself: a starved heartbeat on 2 vCPUs) is void and repeated, at most twice (see
# run_voidable); the summary counts the void runs.
#
# Prints `PASS name (details)` / `FAIL name (details)` per test, the numbers (flows, connections
# per service and backend, RSTs, the longest client stall, takeover time), and one closing line
# `N passed, M failed` (exit 1 if any failed). A trap stops everything it started and runs
# `scripts/topology down`. Environment: FLOWTWIN (the engine binary), FT_PROXY_BALANCE_*, FT_*
# (scripts/lib.sh), FT_PROXY_CLIENT_ARGS (more proxyclients.py arguments: a lighter load for a slow
# engine is e.g. "--flow-seconds 10 --big 0 --short-rate 20").
# Needs nginx (and ping, for the engines' VIP check): apt-get installs them when missing, starting no service.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
FT_PROG=proxy
ALL_TESTS=(proxy_basic proxy_kill proxy_kill_standby proxy_http_kill proxy_tls_kill proxy_banner_kill proxy_workers proxy_closed_kill proxy_pool proxy_prometheus proxy_health proxy_reload)
# reproductions of open engine defects: run only when named exactly with --only (not by scripts/test)
REPRO_TESTS=()
INJECT_KINDS=(upload-digest echo-byte rst extra-conn file-byte file-truncate)
# selfcheck_<name>: test, --inject kind; the failure it must be reported as
ENGINE_SELFCHECKS=("tls-route proxy_tls_kill tls-route routing:"
                   "tls-as-tcp proxy_tls_kill tls-as-tcp closed without a byte"
                   "tls-file-byte proxy_tls_kill file-byte byte mismatch at 777777"
                   "banner-byte proxy_banner_kill banner-byte echo byte mismatch"
                   "banner-first proxy_banner_kill banner-first no banner after"
                   "workers-one proxy_workers workers-one worker 1 of A linked no proxied flow"
                   "fanout-qpairs1 proxy_workers fanout-qpairs1 qpairs=2, 2 workers and a proxy: exit 124"
                   "health-off proxy_health health-off not up by its checks")
BACKEND_INJECTS=(upload-digest echo-byte rst extra-conn banner-byte)
# shellcheck source=tests/e2e/suite_lib.sh
. "$ROOT/tests/e2e/suite_lib.sh"
DIRECT=0
INJECT=""
SELFCHECK=0
suite_opt() {
  case $1 in
    --direct) DIRECT=1; SUITE_TAKEN=1 ;;
    --inject) INJECT=${2:?--inject needs a kind}; SUITE_TAKEN=2 ;;
    --inject=*) INJECT=${1#--inject=}; SUITE_TAKEN=1 ;;
    --selfcheck) SELFCHECK=1; DIRECT=1; SUITE_TAKEN=1 ;;
  esac
}
suite_args proxy.sh name 2,113 ALL_TESTS "$@"
ft_require_root
ALL_INJECTS=("${INJECT_KINDS[@]}" banner-byte tls-route tls-as-tcp banner-first workers-one fanout-qpairs1 health-off)
for k in ${INJECT//,/ }; do
  [[ " ${ALL_INJECTS[*]} " == *" $k "* ]] || { echo "proxy.sh: unknown --inject $k (${ALL_INJECTS[*]})" >&2; exit 2; }
done

# (--selfcheck needs the engine too: the new tests' faults are checked with it)
if [[ $DIRECT -eq 1 && $SELFCHECK -eq 0 ]]; then suite_tmp proxy; else suite_bin proxy; fi
# shellcheck source=tests/e2e/failover_lib.sh
. "$ROOT/tests/e2e/failover_lib.sh"
T_START=$(date +%s.%N)

: "${FT_PROXY_BALANCE_HTTP:=round-robin}"
: "${FT_PROXY_BALANCE_ECHO:=least-conn}"
: "${FT_PROXY_BALANCE_UPLOAD:=hash}"
HTTP_PORT=8080 ECHO_PORT=9000 UPLOAD_PORT=9001          # on the VIP
L7_PORT=8088                                              # mode = "http" on the VIP (proxy_http_kill)
SRV_HTTP=80 SRV_ECHO=9000 SRV_UPLOAD=9001               # on each backend
EXPECT_KINDS=curl10,curlclose,http10,close,curlka,sockka,big,upload,echo,short_get,short_get10,short_echo,short_upload
MIN_SHORT=100

SRV_PID=""
SRV_EXTRA=()      # more backends.py serve arguments (a test's own servers: TLS, banner)
RST_PIDS=()
suite_teardown() {
  local p
  fl_cleanup
  for p in "${RST_PIDS[@]}"; do stop_pid "$p"; done
  for p in "${HS_PIDS[@]}"; do stop_pid "$p"; done
  [[ -n $SRV_PID ]] && stop_pid "$SRV_PID"
  "$TOPO" down >/dev/null 2>&1
}
trap 'suite_cleanup proxy' EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ nginx, files
# ensure_cmds CMD:PACKAGE... — apt-get install the packages of the missing commands (nginx; ping,
# which fl_wait_vip uses), with a temporary policy-rc.d so that the system's nginx is not started.
ensure_cmds() { ft_ensure_cmds "$@"; }

WWW=""
make_files() {
  WWW=$TMP/www
  $PY "$E2E/backends.py" files --dir "$WWW" >"$TMP/files.json" || return 1
  chmod -R a+rX "$WWW"
}

# inject_files KINDS — the file faults (restored by restore_files)
inject_files() {
  local k
  for k in ${1//,/ }; do
    case $k in
      file-byte) $PY -c 'import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(777777); b = f.read(1); f.seek(777777); f.write(bytes([b[0] ^ 0xFF]))' "$WWW/gen/20971520" ;;
      file-truncate) truncate -s -1 "$WWW/gen/1048576" ;;
    esac
  done
}
restore_files() {
  [[ $1 == *file-* ]] || return 0
  $PY "$E2E/backends.py" files --dir "$WWW" --sizes 1048576,20971520 >/dev/null
}

# ------------------------------------------------------------------ backends, captures
# srv_start DIR INJECT — backends.py in FT_SRV_NS; true once every server listens
srv_start() {
  local dir=$1 inj=$2 i kinds=""
  local k
  for k in ${inj//,/ }; do [[ " ${BACKEND_INJECTS[*]} " == *" $k "* ]] && kinds+="${kinds:+,}$k"; done
  mkdir -p "$dir/srv"
  rm -f "$dir/srv.ready" "$dir/srv.json"
  # no timeout(1) in between: SRV_PID must be backends.py itself (SIGUSR1, SIGTERM); it ends by
  # itself after --max-seconds, and takes nginx with it (PR_SET_PDEATHSIG)
  ip netns exec "$FT_SRV_NS" $PY "$E2E/backends.py" serve --ips "$FT_SRV_IP1,$FT_SRV_IP2" \
    --www "$WWW" --run-dir "$dir/srv" --http-port "$SRV_HTTP" --echo-port "$SRV_ECHO" --upload-port "$SRV_UPLOAD" \
    --ready-file "$dir/srv.ready" --stats-file "$dir/srv.json" ${kinds:+--inject "$kinds"} --max-seconds 550 "${SRV_EXTRA[@]}" \
    >"$dir/srv.out" 2>&1 &
  SRV_PID=$!
  for ((i = 0; i < 200; i++)); do
    [[ -s $dir/srv.ready ]] && return 0
    kill -0 "$SRV_PID" 2>/dev/null || break
    sleep 0.05
  done
  info "backends did not start: $(tail -5 "$dir/srv.out" | tr '\n' ' ')"
  return 1
}
# srv_drain DIR [TIMEOUT_S] — until no backend connection is open (SIGUSR1 snapshots), at most 3 s:
# the captures must still run while the proxy closes its backend connections
srv_drain() {
  local dir=$1 i
  [[ -n $SRV_PID ]] || return 0
  for ((i = 0; i < ${2:-3} * 10; i++)); do
    rm -f "$dir/srv.json"
    kill -USR1 "$SRV_PID" 2>/dev/null || return 0
    wait_file "$dir/srv.json" 1 || continue
    [[ $(jget "$dir/srv.json" 'sum(e["active"] for v in ("echo", "upload") for e in s["services"].get(v, {}).values()) + (s["nginx"] or {}).get("active", 1)') == 0 ]] && return 0
    sleep 0.1
  done
}
srv_stop() { # the final stats: connections drained (at most 3 s), nginx stopped, its log read
  [[ -n $SRV_PID ]] || return 0
  kill -TERM "$SRV_PID" 2>/dev/null || true
  local i
  for ((i = 0; i < 200; i++)); do kill -0 "$SRV_PID" 2>/dev/null || break; sleep 0.05; done
  stop_pid "$SRV_PID"
  wait "$SRV_PID" 2>/dev/null || true
  SRV_PID=""
}

# rst_start DIR WHERE NS IFACE — rstcount.py counting every RST (received and sent: --outgoing;
# any address)
rst_start() {
  local dir=$1 where=$2 ns=$3 ifc=$4 rc=0
  if [[ ${FT_CLIENT_PCAP:-0} == 1 ]] && command -v tcpdump >/dev/null; then
    # FT_CLIENT_PCAP=1 (off by default, as in failover_lib): headers of every TCP segment on
    # this side's link, kept in DIR/WHERE.pcap, so that a RST can be followed on both halves
    ip netns exec "$ns" tcpdump -Z root -i "$ifc" -n -s 120 -B 32768 -w "$dir/$where.pcap" tcp >"$dir/tcpdump_$where.err" 2>&1 &
    RST_PIDS+=($!)
  fi
  ft_rstcount_start "$dir/rst_$where" "$ns" 290 --iface "$ifc" --dst any --outgoing --keep 20 || rc=1
  RST_PIDS+=("$FT_RSTCOUNT_PID")
  ((rc == 1)) || return 0
  info "rstcount in $ns did not report ready: $(tail -2 "$dir/rst_$where.err" | tr '\n' ' ')"
  return 1
}
rst_stop() {
  local p
  sleep 0.3   # the last FINs and any late RST
  for p in "${RST_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${RST_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  RST_PIDS=()
}

# ------------------------------------------------------------------ engines
# The proxies' output commit: FT_PROXY_COMMIT ("peer" or "standby"; unset: the engine's default).
commit_key() { [[ -n ${FT_PROXY_COMMIT:-} ]] && echo "commit = \"$FT_PROXY_COMMIT\"" || true; }
proxy_services() { # the [[service]] sections of the proxy on the VIP
  local port backend_port balance
  for spec in "$HTTP_PORT $SRV_HTTP $FT_PROXY_BALANCE_HTTP" "$ECHO_PORT $SRV_ECHO $FT_PROXY_BALANCE_ECHO" \
              "$UPLOAD_PORT $SRV_UPLOAD $FT_PROXY_BALANCE_UPLOAD"; do
    read -r port backend_port balance <<<"$spec"
    cat <<EOF
[[service]]
vip = "$FT_VIP"
port = $port
kind = "proxy"
$(commit_key)
backends = ["$FT_SRV_IP1:$backend_port", "$FT_SRV_IP2:$backend_port"]
balance = "$balance"
EOF
  done
  # Delayed binding (proxy_http_kill): Host two.example to the second backend, the rest to the
  # first, and nothing (503) for paths outside /gen/.
  cat <<EOF
[[service]]
vip = "$FT_VIP"
port = $L7_PORT
kind = "proxy"
$(commit_key)
mode = "http"
[[service.pool]]
host = "two.example"
path_prefix = "/gen/"
backends = ["$FT_SRV_IP2:$SRV_HTTP"]
[[service.pool]]
path_prefix = "/gen/"
backends = ["$FT_SRV_IP1:$SRV_HTTP"]
EOF
}

# pair_up DIR — A active, B its in-sync standby, the VIP answers (else false, PAIR_ERR says why)
# PAIR_EXTRA: more [[service]]s (a test's own); PAIR_WORKERS: engine.workers of both (more than
# one: one lcore each, A's two on different CPUs; af_packet qpairs=1, so software distribution)
PAIR_ERR=""
PAIR_EXTRA=""
PAIR_WORKERS=1
pair_up() {
  local dir=$1
  fl_rig_reset
  ip -n "$FT_SRV_NS" neigh flush dev "$FT_SRV_IF" >/dev/null 2>&1 || true
  FL_CONFIG_EXTRA_a="$(proxy_services)
$PAIR_EXTRA"
  if [[ $PAIR_WORKERS -gt 1 ]]; then
    FL_CONFIG_EXTRA_a+=$'\n[engine]\nworkers = 2'
    export FL_LCORES_a="--lcores=0@0,1@1,2@0" FL_LCORES_b="--lcores=0@0,1@0,2@1"
  else
    unset FL_LCORES_a FL_LCORES_b
  fi
  FL_CONFIG_EXTRA_b=$FL_CONFIG_EXTRA_a
  export FL_CONFIG_EXTRA_a FL_CONFIG_EXTRA_b
  fl_start_engine a "$dir/a.log" strict 2>"$dir/a.start" \
    || { PAIR_ERR="engine A did not start: $(tail -3 "$dir/a.start" "$dir/a.log.check" 2>/dev/null | tr '\n' ' ')"; return 1; }
  fl_wait_status a 's["role"] == "active"' 10 || { PAIR_ERR="engine A not active after 10 s: $(fl_status a)"; return 1; }
  fl_start_engine b "$dir/b.log" strict 2>"$dir/b.start" \
    || { PAIR_ERR="engine B did not start: $(tail -3 "$dir/b.start" "$dir/b.log.check" 2>/dev/null | tr '\n' ' ')"; return 1; }
  fl_wait_status b 's["role"] == "standby" and s["in_sync"]' 15 \
    || { PAIR_ERR="engine B not in_sync after 15 s: B $(fl_status b); A $(fl_status a)"; return 1; }
  fl_wait_vip 10 || { PAIR_ERR="VIP does not answer ping (A active): $(fl_vip_diag)"; return 1; }
}

# ------------------------------------------------------------------ one run
# load_run NAME DIR KILL(0|1) INJECT — backends, (engines), captures, clients, (kill), verdict.
# Sets VERDICT ("ok" or the reasons) and DESC; reports nothing itself unless it could not run.
# LR_CLIENT_ARGS, LR_EXPECT: another client load and its kinds (proxy_workers)
VERDICT=""
DESC=""
LR_CLIENT_ARGS=""
LR_EXPECT=""
load_run() {
  local name=$1 dir=$2 kill=$3 inj=$4 targets=() cp i d cap=""
  VERDICT="not run" DESC=""
  mkdir -p "$dir"
  inject_files "$inj"
  srv_start "$dir" "$inj" || { VERDICT="backends did not start"; restore_files "$inj"; return 1; }
  if [[ $DIRECT -eq 1 ]]; then
    targets=(--http "$FT_SRV_IP1:$SRV_HTTP,$FT_SRV_IP2:$SRV_HTTP" --echo "$FT_SRV_IP1:$SRV_ECHO,$FT_SRV_IP2:$SRV_ECHO"
             --upload "$FT_SRV_IP1:$SRV_UPLOAD,$FT_SRV_IP2:$SRV_UPLOAD")
  else
    pair_up "$dir" || { VERDICT=$PAIR_ERR; srv_stop; fl_cleanup; restore_files "$inj"; return 1; }
    targets=(--http "$FT_VIP:$HTTP_PORT" --echo "$FT_VIP:$ECHO_PORT" --upload "$FT_VIP:$UPLOAD_PORT")
  fi
  rst_start "$dir" client "$FT_CLIENT_NS" "$FT_CLIENT_IF" || true
  rst_start "$dir" backend "$FT_SRV_NS" "$FT_SRV_IF" || true
  rm -f "$dir/clients.ready"
  # shellcheck disable=SC2086
  ip netns exec "$FT_CLIENT_NS" timeout 60 $PY "$E2E/proxyclients.py" "${targets[@]}" --timeout 40 \
    --ready-file "$dir/clients.ready" ${LR_CLIENT_ARGS:-${FT_PROXY_CLIENT_ARGS:-}} >"$dir/clients.json" 2>"$dir/clients.err" &
  cp=$!
  CL_PIDS=("$cp")
  for ((i = 0; i < 600; i++)); do [[ -s $dir/clients.ready ]] && break; kill -0 "$cp" 2>/dev/null || break; sleep 0.05; done
  [[ -s $dir/clients.ready ]] || info "$name: not every flow had progressed after 30 s"
  local kill_args=()
  if [[ $kill -eq 1 ]]; then
    d=$(fl_random_delay)
    if [[ $DIRECT -eq 0 ]]; then
      # diagnostics only, in the background: under load they can take seconds, and the kill
      # must land mid-transfer, d after every flow moved
      { fl_status a >"$dir/a_status_before.json"; fl_status b >"$dir/b_status_before.json"
        fl_metrics a "$dir/a_before.metrics"; } &
      cap=$!
    fi
    sleep "$d"
    if [[ $DIRECT -eq 1 ]]; then
      KILL_T=$(fl_now)
      info "$name: --direct: no engine to kill; the kill time is marked $d s after every flow moved"
    else
      fl_kill9 a
      info "$name: killed A $d s after every flow moved (at $(date -d "@$KILL_T" +%T.%3N)); waiting for the clients"
      kill_args=(--log "b=$dir/b.log" --status "b=$dir/b_status.json")
    fi
    kill_args+=(--kill-t "$KILL_T")
  fi
  wait "$cp" 2>/dev/null || true
  [[ -n $cap ]] && wait "$cap" 2>/dev/null
  CL_PIDS=()
  srv_drain "$dir"
  rst_stop
  if [[ $DIRECT -eq 0 ]]; then
    fl_status b >"$dir/b_status.json"
    [[ $kill -eq 1 ]] || fl_status a >"$dir/a_status.json"
    fl_metrics b "$dir/b.metrics"
    [[ $kill -eq 1 ]] || fl_metrics a "$dir/a.metrics"
  fi
  srv_stop
  [[ $DIRECT -eq 1 ]] || fl_cleanup
  restore_files "$inj"
  local rr=http metrics_args=()
  if [[ $DIRECT -eq 0 ]]; then
    if [[ $kill -eq 1 ]]; then metrics_args=(--metrics "b=$dir/b.metrics"); else metrics_args=(--metrics "a=$dir/a.metrics"); fi
  fi
  [[ $DIRECT -eq 1 || $FT_PROXY_BALANCE_HTTP != round-robin ]] && rr=""
  $PY "$E2E/proxy_eval.py" --clients "$dir/clients.json" --backends "$dir/srv.json" \
    --rst "client=$dir/rst_client.json" --rst "backend=$dir/rst_backend.json" \
    --mode "$([[ $DIRECT -eq 1 ]] && echo direct || echo proxy)" --round-robin "$rr" \
    --expect-kinds "${LR_EXPECT:-$EXPECT_KINDS}" --min-short "$MIN_SHORT" "${kill_args[@]}" "${metrics_args[@]}" \
    >"$dir/eval.json" 2>"$dir/eval.err" || echo '{}' >"$dir/eval.json"
  VERDICT=$(jget "$dir/eval.json" '"ok" if s["ok_verdict"] else "; ".join(s["bad"])')
  [[ $VERDICT == "?" ]] && VERDICT="no verdict (proxy_eval.py: $(tail -2 "$dir/eval.err" | tr '\n' ' '))"
  DESC=$(jget "$dir/eval.json" 's["desc"]')
  if [[ $DIRECT -eq 0 && $kill -eq 0 ]]; then
    # no verdict: a takeover without a kill (a starved heartbeat) is the pair's business, not the proxy's
    DESC+="; roles at the end: A $(fl_jq "$(cat "$dir/a_status.json" 2>/dev/null)" 's.get("role")'), B $(fl_jq "$(cat "$dir/b_status.json" 2>/dev/null)" 's.get("role")')"
  fi
  if [[ $DIRECT -eq 0 && $kill -eq 1 ]]; then
    # The output commit in effect, seen from B after it served the uploads: with `peer` it
    # holds back ACKs that would repeat the last one (flowtwin_held_acks_suppressed_total),
    # with `standby` it never has an ACK to hold back.
    local held want=${FT_PROXY_COMMIT:-peer}
    held=$(awk '/^flowtwin_held_acks_suppressed_total/ {n += $2} END {printf "%d", n}' "$dir/b.metrics" 2>/dev/null)
    DESC+="; commit = $want (B held back ${held:-0} duplicate ACKs)"
    if [[ $want == peer && ${held:-0} -eq 0 ]] || [[ $want == standby && ${held:-0} -ne 0 ]]; then
      [[ $VERDICT == ok ]] && VERDICT="" || VERDICT+="; "
      VERDICT+="commit = $want not in effect on B (held_acks_suppressed ${held:-0})"
    fi
    DESC+="; B: $(fl_jq "$(cat "$dir/b_status.json" 2>/dev/null)" '"role %s, flows_resumed %s, flows_abandoned %s" % (s.get("role"), s.get("flows_resumed"), s.get("flows_abandoned"))')"
  fi
  if [[ $DIRECT -eq 0 ]]; then
    local who=a
    [[ $kill -eq 1 ]] && who=b
    info "$name: engine ${who^^} counters: $(engine_counters "$dir/$who.metrics")"
  fi
  info "$name: summary $(jget "$dir/eval.json" 'json.dumps({k: s.get(k) for k in ("flows", "ok", "http_client_connections", "echo_client_connections", "upload_client_connections", "rst_client", "rst_backend", "max_stall_ms", "long_flows_running_at_kill", "takeover_ms")}, separators=(",", ":"))')"
  [[ -n $inj ]] && DESC+="; injected: $(jget "$dir/eval.json" 's.get("injected")') ${inj}"
  if [[ -n ${FT_PROXY_JSON:-} && $kill -eq 1 ]]; then
    # The main job's one line (scripts/demo --proxy): backend_reconnects are the backend
    # connections beyond one per client connection, summed over the services.
    $PY - "$dir/eval.json" >"$FT_PROXY_JSON" <<'PYEOF' || echo '{}' >"$FT_PROXY_JSON"
import json, sys
s = json.load(open(sys.argv[1]))
extra = 0
for svc in ("http", "echo", "upload"):
    c, b = s.get(f"{svc}_client_connections"), s.get(f"{svc}_backend_connections")
    if isinstance(c, int) and isinstance(b, dict):
        extra += max(0, sum(b.values()) - c)
print(json.dumps({"flows": s.get("flows", 0), "completed_byte_exact": s.get("ok", 0), "client_resets": s.get("rst_client"),
                  "backend_resets": s.get("rst_backend"), "backend_reconnects": extra, "max_stall_ms": s.get("max_stall_ms"),
                  "takeover_ms": s.get("takeover_ms"), "verdict": "ok" if s.get("ok_verdict") else "; ".join(s.get("bad", []))},
                 separators=(",", ":")))
PYEOF
  fi
  return 0
}

# engine_counters FILE — the engine's counters of opened and linked flows, neighbours and the proxy
# (whatever /metrics names them), non-zero sums only: for the next engineer, not a verdict
engine_counters() {
  PYTHONPATH="$E2E" $PY - "$1" <<'EOF' 2>/dev/null || true
import re, sys
import evallib
try:
    samples = evallib.parse_metrics(open(sys.argv[1]).read())
except OSError:
    sys.exit(0)
sums = {}
for name, _labels, v in samples:
    if re.search(r"proxy|connect|link|neighbo|backend|resumed|abandon|client_ahead|caught_up", name) \
            and not name.endswith(("_bucket", "_sum", "_count")):
        sums[name] = sums.get(name, 0) + v
print(", ".join(f"{k.removeprefix('flowtwin_')} {v:.0f}" for k, v in sorted(sums.items()) if v) or "none non-zero")
EOF
}

report() { # NAME — PASS/FAIL from VERDICT, DESC
  if [[ $VERDICT == ok ]]; then pass "$1" "$DESC"; else fail "$1" "$VERDICT; $DESC"; fi
}

# (a test function always returns 0: `run` runs it under set -e; a run that could not even
# start is a FAIL with its reason, never silence)
test_proxy_basic() { load_run proxy_basic "$TMP/proxy_basic" 0 "$INJECT" || true; report proxy_basic; }
test_proxy_kill() { load_run proxy_kill "$TMP/proxy_kill" 1 "$INJECT" || true; report proxy_kill; }
# The same kill with `commit = "standby"` (every relayed byte replicated) instead of the
# default `peer` (each side's bytes acknowledged once the other side's peer has them).
test_proxy_kill_standby() {
  local saved=${FT_PROXY_COMMIT-}
  FT_PROXY_COMMIT=standby
  load_run proxy_kill_standby "$TMP/proxy_kill_standby" 1 "$INJECT" || true
  FT_PROXY_COMMIT=$saved
  report proxy_kill_standby
}

# proxy_http_kill: mode = "http" (the backend chosen from the first request's Host and path).
# Rate-limited 20 MiB downloads with Host two.example and one.example (curl, keep-alive and
# Connection: close), kill -9 of A mid-transfer. PASS iff every body matches gen.py's digest,
# each backend's nginx served exactly the requests routed to it (two.example: the second
# address; the rest: the first), a path no pool takes was answered 503, and no RST was seen
# in the client or backend namespace.
test_proxy_http_kill() {
  local name=proxy_http_kill dir=$TMP/proxy_http_kill i pids=() bad="" n=6 want code
  mkdir -p "$dir"
  srv_start "$dir" "" || { fail $name "backends did not start"; return 0; }
  pair_up "$dir" || { fail $name "$PAIR_ERR"; srv_stop; fl_cleanup; return 0; }
  rst_start "$dir" client "$FT_CLIENT_NS" "$FT_CLIENT_IF" || true
  rst_start "$dir" backend "$FT_SRV_NS" "$FT_SRV_IF" || true
  code=$(ip netns exec "$FT_CLIENT_NS" curl -s -o /dev/null -w '%{http_code}' -m 5 -H 'Host: two.example' "http://$FT_VIP:$L7_PORT/other" || true)
  [[ $code == 503 ]] || bad+="a path no pool takes got '$code', not 503; "
  want=$($PY -c 'import sys; sys.path.insert(0, sys.argv[1]); import gen; print(gen.gen_sha256(20971520))' "$E2E")
  for ((i = 0; i < n; i++)); do
    local host=one.example hdr=()
    ((i % 2 == 0)) && host=two.example
    ((i % 3 == 0)) && hdr=(-H 'Connection: close')
    ip netns exec "$FT_CLIENT_NS" timeout 40 curl -s -m 35 --limit-rate 4M -H "Host: $host" "${hdr[@]}"       "http://$FT_VIP:$L7_PORT/gen/20971520" -o "$dir/dl$i" 2>"$dir/dl$i.err" &
    pids+=($!)
  done
  sleep 1.5
  fl_kill9 a
  info "$name: killed A 1.5 s into $n downloads"
  for i in "${!pids[@]}"; do wait "${pids[$i]}" || bad+="download $i: curl exit $?; "; done
  for ((i = 0; i < n; i++)); do
    [[ $(sha256sum <"$dir/dl$i" | cut -d' ' -f1) == "$want" ]] || bad+="download $i: $(stat -c %s "$dir/dl$i" 2>/dev/null) bytes, digest differs; "
  done
  srv_drain "$dir"
  rst_stop
  fl_status b >"$dir/b_status.json"
  srv_stop
  fl_cleanup
  local counts two one rc rb
  counts=$(jget "$dir/srv.json" 'json.dumps({ip: e.get("requests", 0) for ip, e in s["services"]["http"].items()})')
  two=$(jget "$dir/srv.json" "s['services']['http'].get('$FT_SRV_IP2', {}).get('requests', 0)")
  one=$(jget "$dir/srv.json" "s['services']['http'].get('$FT_SRV_IP1', {}).get('requests', 0)")
  [[ $two == $((n / 2)) && $one == $((n - n / 2)) ]] || bad+="requests per backend $counts, want $((n / 2)) on $FT_SRV_IP2 (two.example) and $((n - n / 2)) on $FT_SRV_IP1; "
  rc=$(jget "$dir/rst_client.json" 's["rst_in"] + s["rst_out"]')
  rb=$(jget "$dir/rst_backend.json" 's["rst_in"] + s["rst_out"]')
  [[ $rc == 0 && $rb == 0 ]] || bad+="RSTs: client $rc, backend $rb; "
  DESC="$n downloads of 20 MiB routed by Host, byte-exact against gen.py; requests per backend $counts; 503 for an unrouted path; RSTs client $rc, backend $rb; B: $(fl_jq "$(cat "$dir/b_status.json" 2>/dev/null)" '"role %s, flows_resumed %s" % (s.get("role"), s.get("flows_resumed"))')"
  if [[ -z $bad ]]; then pass $name "$DESC"; else fail $name "$bad$DESC"; fi
  return 0
}

# ------------------------------------------------------------------ TLS, banner, workers
TLS_PORT=8443 BANNER_PORT=9002                          # on the VIP (proxy_tls_kill, proxy_banner_kill)
SRV_TLS=443 SRV_TLS_DEFAULT=8444 SRV_BANNER=9002        # nginx TLS on both backends (+ .12:8444), banner on both
CERTS=""

has_inject() { [[ ,$1, == *,$2,* ]]; } # KINDS KIND

# make_tls_certs DIR — a throwaway CA and one server certificate per name, made here with openssl
# (EC P-256, valid 2 days, nothing fetched): DIR/ca.pem; DIR/NAME.pem, NAME.key for one, two and
# default (subjectAltName NAME.example).
make_tls_certs() {
  local d=$1 n
  mkdir -p "$d"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=flowtwin e2e throwaway CA" -keyout "$d/ca.key" -out "$d/ca.pem" >"$d/openssl.log" 2>&1 || return 1
  for n in one two default; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$n.example" \
      -keyout "$d/$n.key" -out "$d/$n.csr" >>"$d/openssl.log" 2>&1 || return 1
    printf 'subjectAltName=DNS:%s.example\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' "$n" >"$d/$n.ext"
    openssl x509 -req -in "$d/$n.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial -days 2 \
      -extfile "$d/$n.ext" -out "$d/$n.pem" >>"$d/openssl.log" 2>&1 || return 1
  done
}

tls_services() { # INJECT — the mode = "tls" service: SNI one/two.example to its own nginx, the rest to the default
  local one=$FT_SRV_IP1:$SRV_TLS two=$FT_SRV_IP2:$SRV_TLS
  has_inject "$1" tls-route && { one=$FT_SRV_IP2:$SRV_TLS; two=$FT_SRV_IP1:$SRV_TLS; }
  cat <<EOT
[[service]]
vip = "$FT_VIP"
port = $TLS_PORT
kind = "proxy"
$(commit_key)
backends = ["$FT_SRV_IP2:$SRV_TLS_DEFAULT"]
EOT
  if has_inject "$1" tls-as-tcp; then echo 'mode = "tcp"'; return; fi
  cat <<EOT
mode = "tls"
[[service.pool]]
host = "one.example"
backends = ["$one"]
[[service.pool]]
host = "two.example"
backends = ["$two"]
EOT
}

banner_services() { # INJECT — mode = "tcp" to the server-speaks-first backends
  local mode=tcp
  has_inject "$1" banner-first && mode=http
  cat <<EOT
[[service]]
vip = "$FT_VIP"
port = $BANNER_PORT
kind = "proxy"
$(commit_key)
mode = "$mode"
backends = ["$FT_SRV_IP1:$SRV_BANNER", "$FT_SRV_IP2:$SRV_BANNER"]
EOT
}

# flows_run DIR NAME TIMEOUT ARGS... — proxyflows.py in the client namespace, in the background
# (FLOWS_PID; its JSON in DIR/NAME.json, stderr in DIR/NAME.err, ready file DIR/NAME.ready)
FLOWS_PID=""
flows_run() {
  local dir=$1 nm=$2 to=$3
  shift 3
  rm -f "$dir/$nm.ready"
  ip netns exec "$FT_CLIENT_NS" timeout "$to" $PY "$E2E/proxyflows.py" "$@" --timeout $((to - 5)) \
    --ready-file "$dir/$nm.ready" >"$dir/$nm.json" 2>"$dir/$nm.err" &
  FLOWS_PID=$!
  CL_PIDS=("$FLOWS_PID")
}
flows_wait() { wait "$FLOWS_PID" 2>/dev/null || true; FLOWS_PID=""; CL_PIDS=(); }

# kill_when_ready NAME DIR FILE — once FILE is written (every flow moved; at most 15 s), a random
# 0.5-2 s, then kill -9 A (KILL_T)
kill_when_ready() {
  local i d
  for ((i = 0; i < 300; i++)); do [[ -s $3 ]] && break; kill -0 "$FLOWS_PID" 2>/dev/null || break; sleep 0.05; done
  [[ -s $3 ]] || info "$1: not every flow had moved after 15 s"
  d=$(fl_random_delay)
  sleep "$d"
  fl_kill9 a
  info "$1: killed A $d s after every flow moved (at $(date -d "@$KILL_T" +%T.%3N))"
}

# flows_end DIR — after the clients: backends drained, captures stopped, B's status and metrics,
# backends and engines stopped
flows_end() {
  local dir=$1
  srv_drain "$dir"
  rst_stop
  fl_status b >"$dir/b_status.json"
  fl_metrics b "$dir/b.metrics"
  srv_stop
  fl_cleanup
}

# flows_start NAME DIR INJECT SERVICES — backends (with SRV_EXTRA), the pair (with SERVICES), the
# captures; false (FAIL reported) if something did not start
flows_start() {
  local name=$1 dir=$2 inj=$3
  mkdir -p "$dir"
  srv_start "$dir" "$inj" || { SRV_EXTRA=(); fail "$name" "backends did not start: $(tail -3 "$dir/srv.out" | tr '\n' ' ')"; return 1; }
  SRV_EXTRA=()
  PAIR_EXTRA=$4
  pair_up "$dir" || { PAIR_EXTRA=""; fail "$name" "$PAIR_ERR"; srv_stop; fl_cleanup; return 1; }
  PAIR_EXTRA=""
  rst_start "$dir" client "$FT_CLIENT_NS" "$FT_CLIENT_IF" || true
  rst_start "$dir" backend "$FT_SRV_NS" "$FT_SRV_IF" || true
}

flows_verdict() { # NAME DIR MODE EVAL-ARGS... — proxyflows_eval.py's verdict: PASS or FAIL
  local name=$1 dir=$2 mode=$3 verdict desc
  shift 3
  $PY "$E2E/proxyflows_eval.py" "$mode" --backends "$dir/srv.json" \
    --rst "client=$dir/rst_client.json" --rst "backend=$dir/rst_backend.json" \
    --kill-t "$KILL_T" --log "b=$dir/b.log" --status "b=$dir/b_status.json" --metrics "b=$dir/b.metrics" \
    "$@" >"$dir/eval.json" 2>"$dir/eval.err" || echo '{}' >"$dir/eval.json"
  verdict=$(jget "$dir/eval.json" '"ok" if s["ok_verdict"] else "; ".join(s["bad"])')
  [[ $verdict == "?" ]] && verdict="no verdict (proxyflows_eval.py: $(tail -2 "$dir/eval.err" | tr '\n' ' '))"
  desc=$(jget "$dir/eval.json" 's["desc"]')
  desc+="; B: $(fl_jq "$(cat "$dir/b_status.json" 2>/dev/null)" '"role %s, flows_resumed %s, flows_abandoned %s" % (s.get("role"), s.get("flows_resumed"), s.get("flows_abandoned"))')"
  [[ -n ${FLOWS_NOTE:-} ]] && desc+="; $FLOWS_NOTE"
  info "$name: summary $(jget "$dir/eval.json" 'json.dumps({k: s.get(k) for k in ("flows", "ok", "client_connections", "backend_connections", "rst_client", "rst_backend", "max_stall_ms", "long_flows_running_at_kill", "takeover_ms")}, separators=(",", ":"))')"
  VERDICT=$verdict DESC=$desc
  if [[ $verdict == ok ]]; then pass "$name" "$desc"; else fail "$name" "$verdict; $desc"; fi
}

# proxy_tls_kill [INJECT] (see the header)
test_proxy_tls_kill() {
  local name=proxy_tls_kill dir=$TMP/proxy_tls_kill inj=${1:-$INJECT} common ok_bad moved
  [[ $# -gt 1 ]] && name=$2 dir=$TMP/$2
  if [[ -z $CERTS ]]; then
    make_tls_certs "$TMP/certs" || { fail $name "openssl could not make the certificates: $(tail -3 "$TMP/certs/openssl.log" | tr '\n' ' ')"; return 0; }
    CERTS=$TMP/certs
  fi
  mkdir -p "$dir"
  inject_files "$inj"
  SRV_EXTRA=(--tls "$FT_SRV_IP1:$SRV_TLS:one,$FT_SRV_IP2:$SRV_TLS:two,$FT_SRV_IP2:$SRV_TLS_DEFAULT:default" --tls-dir "$CERTS")
  flows_start $name "$dir" "$inj" "$(tls_services "$inj")" || { restore_files "$inj"; return 0; }
  common=(tls --target "$FT_VIP:$TLS_PORT" --cafile "$CERTS/ca.pem")
  # 1. 20 MiB downloads by SNI, kill -9 A mid-transfer
  flows_run "$dir" main 45 "${common[@]}" --flow-seconds 5 --flow curl:one.example --flow curl:two.example \
    --flow sclient-big:one.example --flow sclient:two.example --flow pyssl-pieces:two.example --flow pyssl:one.example
  kill_when_ready $name "$dir" "$dir/main.ready"
  flows_wait
  # 2. on B: bad input (its counters apart), then the default pool (unknown SNI, none) and new
  # connections by SNI. (A delayed-binding connection that ended just before the kill is
  # proxy_closed_kill's case.)
  fl_metrics b "$dir/b_m0.metrics"
  flows_run "$dir" bad 20 "${common[@]}" --flow plain:- --flow alert:- --flow srvhello:-
  flows_wait
  sleep 0.2
  fl_metrics b "$dir/b_m1.metrics"
  flows_run "$dir" post 25 "${common[@]}" --flow pyssl-any:three.example:1048576 --flow pyssl-any:-:1048576 \
    --flow curl:two.example:1048576 --flow pyssl-pieces:one.example:1048576 --flow sclient-big:two.example:1048576
  flows_wait
  flows_end "$dir"
  restore_files "$inj"
  # The bad input's account on B: the documented outcome is a FIN (checked by the clients);
  # which counters moved is reported (README names none for a refused ClientHello).
  moved=$(PYTHONPATH="$E2E" $PY - "$dir/b_m0.metrics" "$dir/b_m1.metrics" <<'PYEOF' 2>/dev/null || true
import sys, evallib
a, b = (evallib.parse_metrics(open(p).read()) for p in sys.argv[1:3])
names = sorted({n for n, _l, _v in b if ("proxy" in n or "closed" in n or "rst" in n or "drops" in n) and not n.endswith(("_bucket", "_sum", "_count"))})
d = {n.removeprefix("flowtwin_"): evallib.metric_sum(b, n) - evallib.metric_sum(a, n) for n in names}
print(", ".join(f"{k} +{v:.0f}" for k, v in d.items() if v) or "none")
PYEOF
)
  FLOWS_NOTE="bad input (plain, alert, non-ClientHello) closed with a FIN; B's counters it moved: $moved"
  FLOWS_NOTE+="; ClientHello bytes: s_client with ALPN padding $(jget "$dir/main.json" '[v.get("alpn_bytes") for v in s["info"].values() if v.get("alpn_bytes")][0]') ALPN bytes, pyssl-pieces $(jget "$dir/main.json" '[v.get("hello_bytes") for v in s["info"].values() if v.get("hello_bytes")][0]') bytes in 4 pieces"
  flows_verdict $name "$dir" tls --clients "$dir/main.json" --clients "$dir/bad.json" --clients "$dir/post.json" \
    --route "$FT_SRV_IP1:$SRV_TLS=one.example" --route "$FT_SRV_IP2:$SRV_TLS=two.example" \
    --route "$FT_SRV_IP2:$SRV_TLS_DEFAULT=three.example|-"
  FLOWS_NOTE=""
  return 0
}

# proxy_banner_kill [INJECT] (see the header)
test_proxy_banner_kill() {
  local name=proxy_banner_kill dir=$TMP/proxy_banner_kill inj=${1:-$INJECT}
  [[ $# -gt 1 ]] && name=$2 dir=$TMP/$2
  SRV_EXTRA=(--banner-port "$SRV_BANNER")
  flows_start $name "$dir" "$inj" "$(banner_services "$inj")" || return 0
  flows_run "$dir" main 40 banner --target "$FT_VIP:$BANNER_PORT" --flows 4 --bytes 6000000 --flow-seconds 5
  kill_when_ready $name "$dir" "$dir/main.ready"
  flows_wait
  flows_run "$dir" post 20 banner --target "$FT_VIP:$BANNER_PORT" --flows 2 --bytes 200000 --flow-seconds 0 --seed 4
  flows_wait
  flows_end "$dir"
  FLOWS_NOTE="banner after $(jget "$dir/main.json" 'max(v.get("banner_ms", 0) for v in s["info"].values())') ms at most (before the kill), $(jget "$dir/post.json" 'max(v.get("banner_ms", 0) for v in s["info"].values())') ms (on B)"
  flows_verdict $name "$dir" banner --clients "$dir/main.json" --clients "$dir/post.json"
  FLOWS_NOTE=""
  return 0
}

# proxy_workers [INJECT] (see the header)
test_proxy_workers() {
  local name=proxy_workers dir=$TMP/proxy_workers inj=${1:-$INJECT} cfg out rc=0 msg
  [[ $# -gt 1 ]] && name=$2 dir=$TMP/$2
  mkdir -p "$dir"
  # Kernel fanout (qpairs=2) with 2 workers: refused for a proxy, by design.
  cfg=$TMP/fanout.toml
  local vdev=${FT_A_EAL_VDEV/qpairs=1/qpairs=2}
  has_inject "$inj" fanout-qpairs1 && vdev=$FT_A_EAL_VDEV
  ft_engine_toml "$cfg" "--lcores=0@0,1@1,2@0" "${FL_PREFIX}fanout" "$vdev"
  proxy_services >>"$cfg"
  printf '[engine]\nworkers = 2\n' >>"$cfg"
  out=$(ip netns exec "$FT_A_NS" timeout 8 "$BIN" run -c "$cfg" 2>&1) || rc=$?
  msg="a backend's replies may reach another worker than the one that opened the connection"
  if [[ $rc -ne 0 && $rc -ne 124 && $out == *"$msg"* ]]; then
    FANOUT_OK=1
    pass ${name}_fanout_refused "exit $rc: $(grep -m1 -o "service [^;]*; use engine.workers = 1, or a device with symmetric RSS" <<<"$out" || echo "$msg")"
  else
    FANOUT_OK=0
    fail ${name}_fanout_refused "qpairs=2, 2 workers and a proxy: exit $rc, want non-zero and '$msg': $(tail -3 <<<"$out" | tr '\n' ' ')"
  fi
  if has_inject "$inj" fanout-qpairs1; then  # (selfcheck: the negative check's own verdict is the one)
    VERDICT=ok
    [[ $FANOUT_OK == 1 ]] || VERDICT="qpairs=2, 2 workers and a proxy: exit $rc"
    return 0
  fi
  has_inject "$inj" workers-one || PAIR_WORKERS=2
  LR_CLIENT_ARGS="--downloads 4 --keepalive 2 --big 0 --uploads 2 --echo-flows 2 --short-threads 4 --short-rate 60 --duration 7 --flow-seconds 5"
  LR_EXPECT=curl10,curlclose,http10,close,curlka,sockka,upload,echo,short_get,short_get10,short_echo,short_upload
  load_run $name "$dir" 1 "$inj" || true
  PAIR_WORKERS=1 LR_CLIENT_ARGS="" LR_EXPECT=""
  # Each worker linked proxied flows: A before the kill, B after the takeover.
  local who f wbad="" wdesc="" v0 v1 n0 n1
  for who in a_before:A b:B; do
    f=$dir/${who%%:*}.metrics
    v0=$(mval "$f" flowtwin_flows_linked_total worker=0); v1=$(mval "$f" flowtwin_flows_linked_total worker=1)
    n0=$(mval "$f" flowtwin_drops_total worker=0 reason=no_flow); n1=$(mval "$f" flowtwin_drops_total worker=1 reason=no_flow)
    wdesc+="${who#*:}: flows_linked w0 $v0 / w1 $v1, no_flow drops $n0 / $n1; "
    [[ $v0 -gt 0 ]] || wbad+="worker 0 of ${who#*:} linked no proxied flow; "
    [[ $v1 -gt 0 ]] || wbad+="worker 1 of ${who#*:} linked no proxied flow; "
    [[ $((n0 + n1)) -eq 0 ]] || wbad+="${who#*:} dropped $((n0 + n1)) frames as no_flow; "
  done
  if [[ -n $wbad ]]; then
    if [[ $VERDICT == ok ]]; then VERDICT=${wbad%; }; else VERDICT+="; ${wbad%; }"; fi
  fi
  DESC="$wdesc$DESC"
  report $name
  return 0
}

# proxy_closed_kill (see the header): delayed-binding
# connections (mode = "tls" and "http") that completed, their backend connections closed, then a
# kill -9 of A within tcp.time_wait_ms (2 s) of their end, while their client halves are in
# TIME_WAIT (HTTP/1.0 and TLS with an HTTP/1.0 request: the backend closes first). PASS iff the backends accepted exactly the clients' 4 connections and nginx logged
# exactly their 4 requests (B must not open a backend connection for a finished client one).
test_proxy_closed_kill() {
  local name=proxy_closed_kill dir=$TMP/proxy_closed_kill bad="" h code want accepts reqs tlsreq errs
  if [[ -z $CERTS ]]; then
    make_tls_certs "$TMP/certs" || { fail $name "openssl could not make the certificates"; return 0; }
    CERTS=$TMP/certs
  fi
  mkdir -p "$dir"
  SRV_EXTRA=(--tls "$FT_SRV_IP1:$SRV_TLS:one,$FT_SRV_IP2:$SRV_TLS:two,$FT_SRV_IP2:$SRV_TLS_DEFAULT:default" --tls-dir "$CERTS")
  flows_start $name "$dir" "" "$(tls_services "")" || return 0
  flows_run "$dir" pre 25 tls --target "$FT_VIP:$TLS_PORT" --cafile "$CERTS/ca.pem" \
    --flow pyssl:one.example:1048576 --flow pyssl-any:three.example:1048576
  flows_wait
  want=$($PY "$E2E/gen.py" 1048576)
  for h in two.example one.example; do
    # HTTP/1.0: nginx closes first, so the client half is the one left in TIME_WAIT
    code=$(ip netns exec "$FT_CLIENT_NS" curl -s -m 10 --http1.0 -H "Host: $h" -o "$dir/$h.body" -w '%{http_code}' "http://$FT_VIP:$L7_PORT/gen/1048576" || true)
    [[ $code == 200 && $(sha256sum <"$dir/$h.body" | cut -d' ' -f1) == "$want" ]] || bad+="http GET Host $h: $code or digest differs; "
  done
  [[ $(jget "$dir/pre.json" 's["ok"]') == 2 ]] || bad+="TLS clients: $(jget "$dir/pre.json" 's["failed"]'); "
  sleep 0.3
  fl_metrics a "$dir/a_before.metrics"
  fl_kill9 a
  info "$name: killed A, the 4 connections done $(fl_ms_since "$(date -r "$dir/one.example.body" +%s.%N)") ms before"
  sleep 3   # beyond time_wait_ms: whatever B does with those flows, it has done
  flows_end "$dir"
  accepts=$(jget "$dir/srv.json" 's["nginx"]["accepts"]')
  reqs=$(jget "$dir/srv.json" 'json.dumps({ip: e.get("requests", 0) for ip, e in s["services"]["http"].items()})')
  tlsreq=$(jget "$dir/srv.json" 'json.dumps({k: e.get("requests", 0) for k, e in s["services"]["tls"].items()})')
  errs=$(cat "$dir/srv/nginx-error.log" 2>/dev/null | grep -c "" || true)
  [[ $accepts == 4 ]] || bad+="nginx accepted $accepts connections, the clients made 4 (all done before the kill); "
  [[ $(jget "$dir/srv.json" 'sum(e.get("requests", 0) for e in s["services"]["http"].values())') == 2 ]] || bad+="nginx (http) logged requests $reqs, the clients sent 2; "
  [[ $errs == 0 ]] || bad+="nginx error log: $(head -c 600 "$dir/srv/nginx-error.log" | tr '\n' ' '); "
  DESC="4 connections (TLS one.example, TLS three.example, HTTP Host two.example, one.example) done, kill -9 A 0.3 s later; nginx accepted $accepts; http requests $reqs; TLS requests $tlsreq; B: $(grep -m1 -o 'TAKEOVER ([^)]*)' "$dir/b.log"); B's counters: $(engine_counters "$dir/b.metrics")"
  if [[ -z $bad ]]; then VERDICT=ok; pass $name "$DESC"; else VERDICT=$bad; fail $name "$bad$DESC"; fi
  return 0
}

# proxy_pool (see the header)
pool_ctl() { "$BIN" ctl -s "$(fl_sock "$1")" "${@:2}" 2>&1; } # a|b ARGS... — the engine's answer
pool_table() { # a|b — "addr:admin:weight ..." of the HTTP proxy service's backends, from ctl backends
  fl_jq "$(pool_ctl "$1" backends)" "' '.join('%s:%s:%s' % (b['backend'], b['admin_state'], b['weight']) for v in s['services'] if v['service'] == '$FT_VIP:$HTTP_PORT' for b in v['backends'])"
}
pool_wait() { # a|b TABLE TIMEOUT_S — until pool_table says TABLE
  local i
  for ((i = 0; i < $3 * 20; i++)); do [[ $(pool_table "$1") == "$2" ]] && return 0; sleep 0.05; done
  return 1
}
pool_gets() { # DIR TAG N — N GETs of /gen/1024?TAG through the VIP, one connection each, digest-checked
  local i want got
  want=$($PY "$E2E/gen.py" 1024)
  for ((i = 0; i < $3; i++)); do
    got=$(ip netns exec "$FT_CLIENT_NS" curl -s -m 5 "http://$FT_VIP:$HTTP_PORT/gen/1024?$2" | sha256sum | cut -d' ' -f1)
    [[ $got == "$want" ]] || POOL_BAD+="GET ?$2 #$i: body differs; "
  done
}
pool_count() { # DIR TAG — "IP1 IP2": requests for ?TAG nginx logged on each backend address
  echo "$(grep -c "^[0-9.]* $FT_SRV_IP1 .*?$2 HTTP" "$1/srv/access.log" || true) $(grep -c "^[0-9.]* $FT_SRV_IP2 .*?$2 HTTP" "$1/srv/access.log" || true)"
}

# The pool of a running pair changed on the active and kept through a kill -9 of it: drain the
# second backend (new connections only to the first; a standby refuses the change and names the
# active; it follows the active's table), remove it (--force) and add it back with weight 3, kill
# -9 A while a 20 MiB download runs, then on B (now the active) 1:3 round-robin as set on A, and a
# drain on B works. Every body digest-checked (gen.py), nginx's log says which backend served
# each request; 0 RSTs in both namespaces.
test_proxy_pool() {
  local name=proxy_pool dir=$TMP/proxy_pool svc="$FT_VIP:$HTTP_PORT" b1="$FT_SRV_IP1:$SRV_HTTP" b2="$FT_SRV_IP2:$SRV_HTTP" out c dl_pid want20 t
  POOL_BAD=""
  flows_start $name "$dir" "" "" || return 0
  # 1. drain b2 on A; the standby refuses the change itself and follows A's table
  out=$(pool_ctl a backend drain "$svc" "$b2") || POOL_BAD+="drain on A refused: $out; "
  out=$(pool_ctl b backend drain "$svc" "$b1") && POOL_BAD+="the standby took a pool change: $out; "
  [[ $out == *"send pool changes to the active engine"* ]] || POOL_BAD+="the standby's refusal does not name the active: $out; "
  pool_wait b "$b1:ready:1 $b2:draining:1" 3 || POOL_BAD+="the standby's table is '$(pool_table b)' 3 s after the drain on A; "
  pool_gets "$dir" p1 12
  c=$(pool_count "$dir" p1)
  [[ $c == "12 0" ]] || POOL_BAD+="drained: requests per backend $c, want 12 0; "
  # 2. remove b2 (no connection left: freed after the grace), add it back with weight 3
  out=$(pool_ctl a backend remove "$svc" "$b2" --force) || POOL_BAD+="remove on A refused: $out; "
  pool_wait a "$b1:ready:1" 5 || POOL_BAD+="A's table is '$(pool_table a)' 5 s after the remove; "
  out=$(pool_ctl a backend add "$svc" "$b2" --weight 3) || POOL_BAD+="add on A refused: $out; "
  pool_wait b "$b1:ready:1 $b2:ready:3" 3 || POOL_BAD+="the standby's table is '$(pool_table b)' 3 s after the add on A; "
  # 3. kill -9 A during a 20 MiB download; B resumes it and routes as A's table said
  want20=$($PY "$E2E/gen.py" 20971520)
  ip netns exec "$FT_CLIENT_NS" curl -s -m 40 --limit-rate 4M -o "$dir/dl.body" "http://$FT_VIP:$HTTP_PORT/gen/20971520?dl" &
  dl_pid=$!
  sleep 1.5
  fl_kill9 a
  info "$name: killed A 1.5 s into the download"
  fl_wait_status b 's.get("role") == "active"' 5 || POOL_BAD+="B not active 5 s after the kill; "
  t=$(pool_table b)
  [[ $t == "$b1:ready:1 $b2:ready:3" ]] || POOL_BAD+="B's table after the takeover is '$t'; "
  pool_gets "$dir" p2 16
  c=$(pool_count "$dir" p2)
  [[ $c == "4 12" ]] || POOL_BAD+="weights 1:3 on B: requests per backend $c, want 4 12; "
  # 4. B is the active now: it takes pool changes
  out=$(pool_ctl b backend drain "$svc" "$b2") || POOL_BAD+="drain on B (active) refused: $out; "
  pool_gets "$dir" p3 6
  c=$(pool_count "$dir" p3)
  [[ $c == "6 0" ]] || POOL_BAD+="drained on B: requests per backend $c, want 6 0; "
  wait "$dl_pid" 2>/dev/null || POOL_BAD+="the download's curl failed; "
  [[ $(sha256sum <"$dir/dl.body" | cut -d' ' -f1) == "$want20" ]] || POOL_BAD+="the 20 MiB download across the kill differs ($(stat -c %s "$dir/dl.body" 2>/dev/null) bytes); "
  flows_end "$dir"
  for w in client backend; do
    c=$(jget "$dir/rst_$w.json" 's["rst_in"] + s["rst_out"]')
    [[ $c == 0 ]] || POOL_BAD+="$c RST(s) in the $w namespace; "
  done
  DESC="drain on A (standby followed, refused its own change), remove --force + add weight 3, kill -9 A mid-download; requests per backend: drained $(pool_count "$dir" p1), 1:3 on B $(pool_count "$dir" p2), drained on B $(pool_count "$dir" p3); download across the kill byte-exact; B: $(grep -m1 -o 'TAKEOVER ([^)]*)' "$dir/b.log")"
  if [[ -z $POOL_BAD ]]; then VERDICT=ok; pass $name "$DESC"; else VERDICT=$POOL_BAD; fail $name "$POOL_BAD$DESC"; fi
  return 0
}

# A proxy service added to a running pair by a live reload: the same [[service]] (:8095 over
# the first backend, TCP health checks) in both files, B reloaded by SIGHUP, A by `ctl
# reload`. ctl backends lists it on both, a GET through it is byte-exact, its health check is
# up, and a 20 MiB download through it survives kill -9 A; 0 RSTs in both namespaces. Then B
# (now active) removes it by reload: new connections are refused, ctl backends drops it.
RELOAD_PORT=8095
test_proxy_reload() {
  local name=proxy_reload dir=$TMP/proxy_reload bad="" out w want got dl_pid svc="$FT_VIP:$RELOAD_PORT"
  flows_start $name "$dir" "" "" || return 0
  for w in a b; do
    printf '\n[[service]]\nvip = "%s"\nport = %s\nkind = "proxy"\nbackends = ["%s:%s"]\nhealth_check = "tcp"\nhealth_interval_ms = 500\n' \
      "$FT_VIP" "$RELOAD_PORT" "$FT_SRV_IP1" "$SRV_HTTP" >>"$TMP/$w.toml"
  done
  kill -HUP "$B_PID"
  for ((i = 0; i < 50; i++)); do grep -q 'reloaded (SIGHUP)' "$dir/b.log" && break; sleep 0.1; done
  grep -q "reloaded (SIGHUP): service $svc (proxy) added" "$dir/b.log" || bad+="B did not log its reload: $(grep -i reload "$dir/b.log" | tail -1); "
  out=$(pool_ctl a reload || true)
  [[ $out == *'"reloaded":true'* && $out == *"$svc (proxy) added"* ]] || bad+="A's reload answered: $out; "
  for w in a b; do
    [[ $(pool_ctl $w backends) == *"\"$svc\""* ]] || bad+="ctl backends on $w does not list $svc; "
  done
  want=$($PY "$E2E/gen.py" 1024)
  got=$(ip netns exec "$FT_CLIENT_NS" curl -s -m 5 "http://$svc/gen/1024?reload" | sha256sum | cut -d' ' -f1)
  [[ $got == "$want" ]] || bad+="a GET through $svc differs; "
  for ((i = 0; i < 40; i++)); do
    [[ $(fl_jq "$(pool_ctl a backends)" "[b['check']['state'] for v in s['services'] if v['service'] == '$svc' for b in v['backends']]") == "['up']" ]] && break
    sleep 0.1
  done
  [[ $i -lt 40 ]] || bad+="the added service's health check is not up on A: $(pool_ctl a backends | head -c 300); "
  want=$($PY "$E2E/gen.py" 20971520)
  ip netns exec "$FT_CLIENT_NS" curl -s -m 40 --limit-rate 4M -o "$dir/dl.body" "http://$svc/gen/20971520?dl" &
  dl_pid=$!
  sleep 1.5
  fl_kill9 a
  fl_wait_status b 's.get("role") == "active"' 5 || bad+="B not active 5 s after the kill; "
  wait "$dl_pid" 2>/dev/null || bad+="the download's curl failed; "
  [[ $(sha256sum <"$dir/dl.body" | cut -d' ' -f1) == "$want" ]] || bad+="the 20 MiB download through $svc across the kill differs ($(stat -c %s "$dir/dl.body" 2>/dev/null) bytes); "
  rst_stop
  # Removed on B: a connect to :8095 is refused (the engine's RST; the captures are stopped).
  $PY - "$TMP/b.toml" "$RELOAD_PORT" <<'EOF'
import sys
text = open(sys.argv[1]).read()
block = text[text.rindex("\n[[service]]"):]
assert f"port = {sys.argv[2]}" in block, block
open(sys.argv[1], "w").write(text[: len(text) - len(block)] + "\n")
EOF
  out=$(pool_ctl b reload || true)
  [[ $out == *"$svc (proxy) removed"* ]] || bad+="B's reload removing $svc answered: $out; "
  got=$(ip netns exec "$FT_CLIENT_NS" curl -s -m 3 -o /dev/null -w '%{http_code}' "http://$svc/gen/10" 2>/dev/null || true)
  [[ $got == 000 ]] || bad+="after the removal, $svc answered HTTP $got; "
  [[ $(pool_ctl b backends) != *"\"$svc\""* ]] || bad+="ctl backends on B still lists $svc; "
  flows_end "$dir"
  for w in client backend; do
    c=$(jget "$dir/rst_$w.json" 's["rst_in"] + s["rst_out"]')
    [[ $c == 0 ]] || bad+="$c RST(s) in the $w namespace; "
  done
  DESC="proxy $svc added live (B SIGHUP, A ctl reload), listed and checked up, GET byte-exact, 20 MiB across kill -9 A byte-exact, removed live on B; B: $(grep -m1 -o 'TAKEOVER ([^)]*)' "$dir/b.log")"
  if [[ -z $bad ]]; then VERDICT=ok; pass $name "$DESC"; else VERDICT=$bad; fail $name "$bad$DESC"; fi
  return 0
}

# ------------------------------------------------------------------ active health checks
HEALTH_PORT=8090 SRV_HEALTH=8090                          # on the VIP; each backend's own nginx
HS_PIDS=()

# hsrv_start DIR IP — a backends.py of its own on IP alone (nginx on :SRV_HEALTH, nothing else),
# so that one backend can be stopped and started while the other serves; sets HS_PID
HS_PID=""
hsrv_start() {
  local dir=$1 ip=$2 i
  mkdir -p "$dir"
  rm -f "$dir/ready"
  ip netns exec "$FT_SRV_NS" $PY "$E2E/backends.py" serve --ips "$ip" --www "$WWW" --run-dir "$dir" \
    --http-port "$SRV_HEALTH" --echo-port 0 --upload-port 0 --drain-s 0.2 --ready-file "$dir/ready" \
    --stats-file "$dir/stats.json" --max-seconds 300 >"$dir/out" 2>&1 &
  HS_PID=$!
  HS_PIDS+=("$HS_PID")
  for ((i = 0; i < 200; i++)); do
    [[ -s $dir/ready ]] && return 0
    kill -0 "$HS_PID" 2>/dev/null || break
    sleep 0.05
  done
  info "health backend $ip did not start: $(tail -3 "$dir/out" | tr '\n' ' ')"
  return 1
}
hsrv_stop() { # PID — SIGTERM (nginx goes with it: its port refuses), bounded wait
  local i
  kill -TERM "$1" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do kill -0 "$1" 2>/dev/null || break; sleep 0.05; done
  stop_pid "$1"
  wait "$1" 2>/dev/null || true
}
# hits LOG PATH — requests for PATH in an nginx access log (backends.py's "ft" format)
hits() { local n=0; [[ -r $1 ]] && n=$(grep -c "\"GET $2 HTTP" "$1") || true; echo "${n:-0}"; }
# backend_check a|b ADDR — "state/check-state" of ADDR in the health service as ctl backends shows it
backend_check() {
  local j
  j=$("$BIN" ctl -s "$(fl_sock "$1")" backends 2>/dev/null || true)
  fl_jq "$j" "[('%s/%s' % (b['state'], (b.get('check') or {}).get('state'))) for v in s['services'] if v['service'] == '$FT_VIP:$HEALTH_PORT' for b in v['backends'] if b['backend'] == '$2'][0]"
}
# wait_check a|b ADDR WANT TIMEOUT_S — until backend_check is WANT; prints the seconds it took
wait_check() {
  local t0 got
  t0=$(fl_now)
  while :; do
    got=$(backend_check "$1" "$2")
    [[ $got == "$3" ]] && { awk -v a="$t0" -v b="$(fl_now)" 'BEGIN{printf "%.2f", b-a}'; return 0; }
    [[ $(fl_ms_since "$t0") -gt $(($4 * 1000)) ]] && { echo "timeout ($got)"; return 1; }
    sleep 0.05
  done
}
# downloads N DIR TAG — N sequential downloads of /gen/1048576 through the VIP, each checked
# against gen.py's digest; prints what went wrong (nothing when all were byte-exact)
downloads() {
  local n=$1 dir=$2 tag=$3 i want bad=""
  want=$($PY -c 'import sys; sys.path.insert(0, sys.argv[1]); import gen; print(gen.gen_sha256(1048576))' "$E2E")
  for ((i = 0; i < n; i++)); do
    ip netns exec "$FT_CLIENT_NS" curl -s -m 10 -o "$dir/$tag$i" "http://$FT_VIP:$HEALTH_PORT/gen/1048576" 2>"$dir/$tag$i.err" \
      || bad+="$tag download $i: curl exit $?; "
    [[ $(sha256sum <"$dir/$tag$i" | cut -d' ' -f1) == "$want" ]] || bad+="$tag download $i: $(stat -c %s "$dir/$tag$i" 2>/dev/null) bytes, digest differs; "
  done
  echo -n "$bad"
}

# proxy_health [INJECT [NAME]] (see the header; --inject health-off: the service without checks)
test_proxy_health() {
  local name=proxy_health dir=$TMP/proxy_health inj=${1:-$INJECT} bad="" p1 p2 t a2=$FT_SRV_IP2:$SRV_HEALTH a1=$FT_SRV_IP1:$SRV_HEALTH
  [[ $# -gt 1 ]] && name=$2 dir=$TMP/$2
  local interval=500 timeout=400 rise=2 fall=2 limit down_s up_s b_down b_fail=0 n=10 c1 c2 d1 d2 rc m
  mkdir -p "$dir"
  HS_PIDS=()
  hsrv_start "$dir/srv1" "$FT_SRV_IP1" || { fail $name "backend 1 did not start"; return 0; }
  p1=$HS_PID
  hsrv_start "$dir/srv2" "$FT_SRV_IP2" || { fail $name "backend 2 did not start"; hsrv_stop "$p1"; return 0; }
  p2=$HS_PID
  PAIR_EXTRA="[[service]]
vip = \"$FT_VIP\"
port = $HEALTH_PORT
kind = \"proxy\"
backends = [\"$a1\", \"$a2\"]"
  has_inject "$inj" health-off || PAIR_EXTRA+="
health_check = \"http\"
health_interval_ms = $interval
health_timeout_ms = $timeout
health_rise = $rise
health_fall = $fall
health_http_path = \"/gen/1024\"
health_expect_status = \"200\""
  pair_up "$dir" || { PAIR_EXTRA=""; fail $name "$PAIR_ERR"; hsrv_stop "$p1"; hsrv_stop "$p2"; fl_cleanup; return 0; }
  PAIR_EXTRA=""
  rst_start "$dir" client "$FT_CLIENT_NS" "$FT_CLIENT_IF" || true
  t=$(wait_check a "$a2" up/up 5) || bad+="backend 2 not up by its checks 5 s after the start: $t; "
  t=$(wait_check a "$a1" up/up 5) || bad+="backend 1 not up by its checks: $t; "
  # 1. Backend 2 stops (its port refuses): down within fall intervals (+ a timeout and slack).
  limit=$(awk -v i=$interval -v f=$fall -v t=$timeout 'BEGIN{printf "%.1f", (i * f + t) / 1000 + 1.0}')
  hsrv_stop "$p2"
  down_s=$(wait_check a "$a2" down/down 10) || bad+="backend 2 stopped, not down after 10 s: $down_s; "
  awk -v d="$down_s" -v l="$limit" 'BEGIN{exit !(d + 0 <= l + 0)}' || bad+="backend 2 down after $down_s s, more than interval*fall+timeout+1 s = $limit s; "
  b_down=$(wait_check b "$a2" down/down 3) || bad+="the standby does not see backend 2 down (pool table): $b_down; "
  fl_metrics a "$dir/a_down.metrics"
  m=$(mval "$dir/a_down.metrics" flowtwin_proxy_backend_check_up backend="$a2")
  [[ $m == 0 ]] || bad+="check_up of backend 2 is '$m' while down; "
  m=$(mval "$dir/a_down.metrics" flowtwin_proxy_backend_check_transitions_total backend="$a2")
  [[ $m == 1 ]] || bad+="transitions of backend 2: '$m', want 1; "
  m=$(mval "$dir/a_down.metrics" flowtwin_proxy_backend_checks_total backend="$a2" result=fail)
  [[ $m -ge $fall ]] || bad+="failed checks of backend 2: '$m', want >= $fall; "
  # 2. New connections all go to backend 1, byte-exact.
  c1=$(hits "$dir/srv1/access.log" /gen/1048576)
  bad+=$(downloads $n "$dir" down)
  d1=$(($(hits "$dir/srv1/access.log" /gen/1048576) - c1))
  [[ $d1 == "$n" ]] || bad+="while backend 2 was down backend 1 served $d1 of $n downloads; "
  # 3. kill -9 A: B takes over with the health A's pool table carried (down, not unknown: its
  # own checks then find nothing new, so B counts no transition), checks on its own, and
  # routes around backend 2 too.
  fl_kill9 a
  fl_wait_status b 's["role"] == "active"' 10 || bad+="B not active 10 s after the kill: $(fl_status b); "
  [[ $(backend_check b "$a2") == down/down ]] || bad+="B took over with backend 2 '$(backend_check b "$a2")', not down/down; "
  c1=$(hits "$dir/srv1/access.log" /gen/1048576)
  bad+=$(downloads 4 "$dir" takeover)
  d1=$(($(hits "$dir/srv1/access.log" /gen/1048576) - c1))
  [[ $d1 == 4 ]] || bad+="after the takeover backend 1 served $d1 of 4 downloads; "
  fl_metrics b "$dir/b_down.metrics"
  b_fail=$(mval "$dir/b_down.metrics" flowtwin_proxy_backend_checks_total backend="$a2" result=fail)
  [[ $b_fail -ge 1 ]] || bad+="B ran no check of backend 2 after the takeover ('$b_fail' failed); "
  m=$(mval "$dir/b_down.metrics" flowtwin_proxy_backend_check_transitions_total backend="$a2")
  [[ $m == 0 ]] || bad+="B counted '$m' transitions of backend 2 after the takeover: it did not keep A's health; "
  # 4. Backend 2 is back: up after rise checks (B's), and it takes connections again.
  hsrv_start "$dir/srv2b" "$FT_SRV_IP2" || bad+="backend 2 did not restart; "
  p2=$HS_PID
  up_s=$(wait_check b "$a2" up/up 10) || bad+="backend 2 restarted, not up after 10 s: $up_s; "
  c1=$(hits "$dir/srv1/access.log" /gen/1048576)
  bad+=$(downloads $n "$dir" up)
  d1=$(($(hits "$dir/srv1/access.log" /gen/1048576) - c1))
  d2=$(hits "$dir/srv2b/access.log" /gen/1048576)
  [[ $((d1 + d2)) == "$n" && $d2 -ge $((n / 2 - 1)) && $d1 -ge $((n / 2 - 1)) ]] || bad+="after backend 2 came back: $d1 downloads on backend 1, $d2 on backend 2 (round-robin of $n); "
  c2=$(hits "$dir/srv2b/access.log" /gen/1024)
  [[ $c2 -ge $rise ]] || bad+="the restarted backend 2 logged $c2 checks (GET /gen/1024), want >= $rise; "
  fl_metrics b "$dir/b_up.metrics"
  m=$(mval "$dir/b_up.metrics" flowtwin_proxy_backend_check_transitions_total backend="$a2")
  [[ $m == 1 ]] || bad+="B's transitions of backend 2 at the end: '$m', want 1 (up); "
  m=$(mval "$dir/a_down.metrics" flowtwin_proxy_no_backend_total)
  m=$((m + $(mval "$dir/b_up.metrics" flowtwin_proxy_no_backend_total)))
  [[ $m == 0 ]] || bad+="proxy_no_backend $m: a client found no backend; "
  grep -q "backend $a2 is down" "$dir/a.log" || bad+="no backend_down log line for $a2 in A's log; "
  grep -q "backend $a2 is up again" "$dir/b.log" || bad+="no backend_up log line for $a2 in B's log; "
  rst_stop
  rc=$(jget "$dir/rst_client.json" 's["rst_in"] + s["rst_out"]')
  [[ $rc == 0 ]] || bad+="RSTs in the client namespace: $rc; "
  fl_cleanup
  hsrv_stop "$p1"
  hsrv_stop "$p2"
  HS_PIDS=()
  DESC="http checks every $interval ms (timeout $timeout, rise $rise, fall $fall): backend 2 stopped -> down on A in $down_s s (limit $limit s), on B $b_down s later; $n downloads all on backend 1, byte-exact; kill -9 A: B active with backend 2 still down ($b_fail checks of its own failed, no transition), 4 downloads on backend 1; restarted -> up on B in $up_s s; then $d1/$d2 of $n on backends 1/2; RSTs client $rc"
  VERDICT=${bad:-ok}
  if [[ -z $bad ]]; then pass $name "$DESC"; else fail $name "$bad$DESC"; fi
  return 0
}

# proxy_prometheus (see the header)
test_proxy_prometheus() {
  local name=proxy_prometheus dir=$TMP/proxy_prometheus prom_pid i health="" verdict lint
  POOL_BAD=""
  if ! command -v prometheus >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >"$TMP/apt-prometheus.log" 2>&1 \
      || { apt-get update -q >>"$TMP/apt-prometheus.log" 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >>"$TMP/apt-prometheus.log" 2>&1; } \
      || { fail $name "cannot install Debian's prometheus package (see $TMP/apt-prometheus.log)"; return 0; }
  fi
  # A service with active health checks too, so that their families exist (the dashboard
  # has panels for them).
  flows_start $name "$dir" "" "[[service]]
vip = \"$FT_VIP\"
port = 8095
kind = \"proxy\"
backends = [\"$FT_SRV_IP1:$SRV_HTTP\", \"$FT_SRV_IP2:$SRV_HTTP\"]
health_check = \"http\"
health_interval_ms = 500
health_http_path = \"/gen/1024\"" || return 0
  pool_gets "$dir" prom 8
  printf '%s\n' "global:" "  scrape_interval: 1s" "  evaluation_interval: 1s" "scrape_configs:" "  - job_name: flowtwin" \
    "    static_configs:" '      - targets: ["127.0.0.1:9470"]' >"$dir/prometheus.yml"
  # Debian's prometheus, in A's namespace (the engine's /metrics listens on its 127.0.0.1)
  ip netns exec "$FT_A_NS" prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/tsdb" \
    --web.listen-address=127.0.0.1:9090 >"$dir/prometheus.log" 2>&1 &
  prom_pid=$!
  for ((i = 0; i < 300; i++)); do
    health=$(ip netns exec "$FT_A_NS" curl -s -m 1 http://127.0.0.1:9090/api/v1/targets 2>/dev/null \
      | $PY -c 'import json,sys; t=json.load(sys.stdin)["data"]["activeTargets"]; print(t[0]["health"], t[0]["lastError"] or "-")' 2>/dev/null || true)
    [[ $health == "up -" ]] && break
    sleep 0.1
  done
  [[ $health == "up -" ]] || POOL_BAD+="Prometheus's target is '${health:-not listed}' after 30 s (log: $(tail -2 "$dir/prometheus.log" | tr '\n' ' ')); "
  pool_gets "$dir" prom2 8
  sleep 3   # a few more scrapes: the dashboard's rate() windows need two samples
  fl_metrics a "$dir/a.metrics"
  lint=$(promtool check metrics <"$dir/a.metrics" 2>&1 | grep -Ev "metric names should not contain abbreviated units" | tr '\n' ' ' || true)
  [[ -z $lint ]] || POOL_BAD+="promtool check metrics: $lint; "
  verdict=$(ip netns exec "$FT_A_NS" $PY "$E2E/dashcheck.py" "$ROOT/docs/grafana/flowtwin.json" "$dir/a.metrics" http://127.0.0.1:9090 2>&1)
  kill "$prom_pid" 2>/dev/null; wait "$prom_pid" 2>/dev/null || true
  flows_end "$dir"
  [[ $(fl_jq "$verdict" 'len(s["bad"])') == 0 ]] || POOL_BAD+="dashboard: $(fl_jq "$verdict" '"; ".join(s["bad"])') ${verdict:0:300}; "
  [[ $(fl_jq "$verdict" 's["with_data"] > s["exprs"] // 2') == True ]] || POOL_BAD+="only $(fl_jq "$verdict" 's["with_data"]') of $(fl_jq "$verdict" 's["exprs"]') dashboard expressions returned data; "
  DESC="Debian's Prometheus ($(prometheus --version 2>&1 | head -1 | awk '{print $3}')) scraped A every 1 s: target $health; docs/grafana/flowtwin.json: $(fl_jq "$verdict" '"%d expressions evaluated, %d with data, %d families all exported" % (s["exprs"], s["with_data"], s["families"])'); promtool check metrics clean"
  if [[ -z $POOL_BAD ]]; then pass $name "$DESC"; else fail $name "$POOL_BAD$DESC"; fi
  return 0
}

# selfcheck: what each injected fault must be reported as
selfcheck_expect() {
  case $1 in
    upload-digest) echo "upload digest mismatch" ;;
    echo-byte) echo "echo byte mismatch" ;;
    rst) echo "RST(s) in the backend namespace (0 in, 1 out" ;;   # the backend's own RST: --outgoing
    extra-conn) echo "echo: backend" ;;
    file-byte) echo "byte mismatch at" ;;
    file-truncate) echo "1048575" ;;
  esac
}
selfcheck() {
  if selected selfcheck_clean; then
    load_run selfcheck_clean "$TMP/selfcheck_clean" 1 "" || true
    report selfcheck_clean
  fi
  local k want
  for k in "${INJECT_KINDS[@]}"; do
    selected "selfcheck_$k" || continue
    want=$(selfcheck_expect "$k")
    load_run "selfcheck_$k" "$TMP/selfcheck_$k" 0 "$k" || { fail "selfcheck_$k" "could not run: $VERDICT"; continue; }
    if [[ $VERDICT != ok && $VERDICT == *"$want"* ]]; then
      pass "selfcheck_$k" "the harness failed as it must: ${VERDICT:0:300}"
    else
      fail "selfcheck_$k" "injected $k, want a failure naming '$want'; verdict: ${VERDICT:0:300}; $DESC"
    fi
  done
  # the tests with the engines, each with its own fault (their PASS/FAIL line is inverted here)
  local spec sk test kind
  DIRECT=0
  for spec in "${ENGINE_SELFCHECKS[@]}"; do
    read -r sk test kind want <<<"$spec"
    selected "selfcheck_$sk" || continue
    VERDICT="not run" DESC=""
    local p0=$PASSED f0=$FAILED
    "test_$test" "$kind" "selfcheck_$sk" >"$TMP/selfcheck_$sk.out" 2>&1 || true
    PASSED=$p0 FAILED=$f0
    if [[ $VERDICT != ok && $VERDICT == *"$want"* ]]; then
      pass "selfcheck_$sk" "$test with --inject $kind failed as it must: ${VERDICT:0:400}"
    else
      fail "selfcheck_$sk" "$test with --inject $kind, want a failure naming '$want'; verdict: ${VERDICT:0:400}; $(tail -c 600 "$TMP/selfcheck_$sk.out" | tr '\n' ' ')"
    fi
  done
  DIRECT=1
}

# ------------------------------------------------------------------ void runs
# A kill test's run is void when B took over the live A before the kill: on these 2 vCPUs a
# starved heartbeat (5 ms x 3) sometimes does, and A, correctly, fences itself (it logs
# "fenced"; a killed A never can). The kill then hit an engine that no longer served, so the run
# measured nothing. Such a failed run is repeated, at most twice, as failover.sh's and groups.sh's
# kill tests do: its FAIL line is printed as an info line, its logs kept in DIR.voidN, and the
# third run's verdict stands whatever it is. A PASS is never repeated; the tests that do not kill
# (NOVOID_TESTS) are never repeated.
NOVOID_TESTS=" proxy_basic proxy_prometheus "
VOID_RUNS=0
void_run_of() { # T — did B take over while A lived, in T's run ($TMP/T)?
  grep -q 'TAKEOVER' "$TMP/$1/b.log" 2>/dev/null && grep -q 'fenced' "$TMP/$1/a.log" 2>/dev/null
}
run_voidable() { # T — test_T, repeated while its run failed and was void (at most 3 runs)
  local t=$1 attempt p0 f0 out
  if [[ $NOVOID_TESTS == *" $t "* ]]; then "test_$t"; return 0; fi
  for attempt in 0 1 2; do
    p0=$PASSED f0=$FAILED
    out=$TMP/$t.out$attempt
    "test_$t" >"$out" 2>&1 || true
    if [[ $FAILED -gt $f0 && $attempt -lt 2 ]] && void_run_of "$t"; then
      PASSED=$p0 FAILED=$f0 VOID_RUNS=$((VOID_RUNS + 1))
      grep -v '^FAIL ' "$out" || true
      info "$t: void run, repeated: B took over the live A before the kill (A fenced itself); it would have said: $(grep -m1 '^FAIL ' "$out" | head -c 600)"
      rm -rf "$TMP/$t.void$attempt"
      mv "$TMP/$t" "$TMP/$t.void$attempt" 2>/dev/null || true
      continue
    fi
    cat "$out"
    [[ $attempt -gt 0 ]] && info "$t: the verdict above is of run $((attempt + 1)), after $attempt void run(s)"
    break
  done
  return 0
}

# ------------------------------------------------------------------ main
if [[ $DIRECT -eq 1 && $SELFCHECK -eq 0 ]]; then need=(nginx:nginx); else need=(nginx:nginx ping:iputils-ping openssl:openssl); fi
ensure_cmds "${need[@]}" || { echo "0 passed, 1 failed"; exit 1; }
fl_init
if [[ -z $FT_SRV_NS ]] || ! ft_ns_exists "$FT_SRV_NS"; then
  echo "proxy.sh: the rig has no backend namespace (FT_SRV_NS='$FT_SRV_NS')" >&2; echo "0 passed, 1 failed"; exit 1
fi
make_files || { echo "proxy.sh: could not write the backends' files" >&2; echo "0 passed, 1 failed"; exit 1; }
info "rig up; $([[ $DIRECT -eq 1 ]] && echo "--direct: clients straight to the backends, no engine" || echo "engines: $BIN; hugepages: $FT_HUGEPAGES_MODE"); backends $FT_SRV_NS $FT_SRV_IP1 $FT_SRV_IP2 ($(nginx -v 2>&1)); logs: $TMP"
if [[ $SELFCHECK -eq 1 ]]; then
  selfcheck
else
  for t in "${ALL_TESTS[@]}" "${REPRO_TESTS[@]}"; do
    selected "$t" || continue
    [[ " ${REPRO_TESTS[*]} " == *" $t "* && ,$ONLY, != *,$t,* ]] && continue  # by its exact name only
    if [[ $DIRECT -eq 1 && $t != proxy_basic && $t != proxy_kill ]]; then
      info "$t: --direct has no engine to route, link or kill: not run"
      continue
    fi
    run "$t" run_voidable "$t"
  done
fi
[[ $SELFCHECK -eq 1 ]] || info "void runs (B took over the live A before the kill; repeated): $VOID_RUNS"
suite_end proxy.sh test "$T_START"
