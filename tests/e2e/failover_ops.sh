# shellcheck shell=bash
# failover.sh's operations tests: live reload and packet capture (sourced; uses its helpers
# and failover_lib.sh).
#
# reload: a running pair changes its configuration without a restart. The same [[service]]
# (echo on :9) is added to both files; B (the standby) reloads on SIGHUP, A by `flowtwin ctl
# reload`. :9 refused connections before and takes them after. Echo streams on :9 and
# downloads on :80 run, kill -9 A: B resumes the new service's flows too (byte-exact, 0 RSTs
# in the client namespace). On the survivor, a reload that changes sync.heartbeat_ms is
# refused by name and changes nothing, and one that removes :9 makes it refuse new
# connections; the metrics count 2 applied reloads and 1 refused.

# probe9 -> open | refused | timeout: a connect to VIP:9 from the client namespace.
probe9() {
  ip netns exec "$FT_CLIENT_NS" $PY - "$FT_VIP" <<'EOF'
import socket, sys
s = socket.socket()
s.settimeout(2)
try:
    s.connect((sys.argv[1], 9))
    s.sendall(b"ping")
    print("open" if s.recv(4) == b"ping" else "open-but-silent")
except ConnectionRefusedError:
    print("refused")
except OSError:
    print("timeout")
EOF
}

test_reload() {
  local name=reload dir=$TMP/reload problems=() r i
  pair_up "$name" "$dir" strict || { fl_cleanup; return; }
  [[ $(probe9) == refused ]] || problems+=("before the reload, :9 answered '$(probe9)', not refused")
  # That refusal was a RST: count from here on.
  fl_rst_stop
  fl_rst_start "$dir" || info "rstcount did not report ready"
  for w in a b; do
    printf '\n[[service]]\nvip = "%s"\nport = 9\nkind = "echo"\n' "$FT_VIP" >>"$TMP/$w.toml"
  done
  kill -HUP "$B_PID"
  for ((i = 0; i < 50; i++)); do grep -q 'reloaded (SIGHUP)' "$dir/b.log" && break; sleep 0.1; done
  grep -q "reloaded (SIGHUP): service $FT_VIP:9 (echo) added" "$dir/b.log" \
    || problems+=("B did not log its SIGHUP reload: $(grep -i reload "$dir/b.log" | tail -2 | tr '\n' ' ')")
  r=$("$BIN" ctl -s "$(fl_sock a)" reload 2>&1 || true)
  [[ $r == *'"reloaded":true'* && $r == *"$FT_VIP:9 (echo) added"* ]] || problems+=("A's ctl reload answered: $r")
  [[ $(probe9) == open ]] || problems+=("after the reload, :9 answered '$(probe9)'")

  # The new service's flows are replicated like the others: kill -9 A under load.
  fl_clients_start "$dir" 4 20971520 4194304 0 0 0 socket 40
  ip netns exec "$FT_CLIENT_NS" timeout 60 $PY "$E2E/ftclients.py" echo -n 4 --port 9 --mbytes 8 \
    --chunk 16384 --rate 2000000 --timeout 40 --connect-timeout 3 --ready-file "$dir/echo.ready" \
    --trace "$dir/echo.trace" >"$dir/echo.json" 2>"$dir/echo.err" &
  CL_PIDS+=($!)
  CL_GROUPS+=(echo)
  fl_clients_wait_ready 15 || info "not every flow had bytes after 15 s"
  sleep "$(fl_random_delay)"
  fl_kill9 a
  local t_kill=$KILL_T
  fl_wait_status b 's["role"] == "active"' 5 || problems+=("B not active 5 s after the kill: $(fl_status b)")
  fl_clients_wait
  fl_rst_stop
  fl_status b >"$dir/b_status.json"
  evaluate "$dir" "$name" --event "kill=$t_kill" --log "b=$dir/b.log" --status "b=$dir/b_status.json"
  local v
  v=$(PYTHONPATH="$E2E" $PY - "$dir/eval.json" <<'EOF'
import json, sys, evallib
s = json.loads(open(sys.argv[1]).read() or "{}")
bad = []
evallib.transfers_verdict(s, bad)
print(("ok" if not bad else "; ".join(bad)) + f"|flows {s.get('flows')}, completed {s.get('completed')}, resets {s.get('resets')}, longest client wait {s.get('max_midflow_wait_ms')} ms")
EOF
)
  [[ ${v%%|*} == ok ]] || problems+=("${v%%|*}")

  # On the survivor: a key that cannot change live is refused by name, nothing changes.
  cp "$TMP/b.toml" "$dir/b.toml.good"
  sed -i 's/^heartbeat_ms = .*/heartbeat_ms = 9/' "$TMP/b.toml"
  r=$("$BIN" ctl -s "$(fl_sock b)" reload 2>&1 || true)
  [[ $r == *'"error"'* && $r == *'sync.heartbeat_ms'* && $r == *'nothing changed'* ]] || problems+=("a heartbeat change was not refused by name: $r")
  [[ $(probe9) == open ]] || problems+=("after the refused reload, :9 answered '$(probe9)'")
  # Removing :9: no new connections there.
  $PY - "$dir/b.toml.good" "$TMP/b.toml" <<'EOF'
import sys
text = open(sys.argv[1]).read()
block = text[text.rindex("\n[[service]]"):]
assert "port = 9" in block, block
open(sys.argv[2], "w").write(text[: len(text) - len(block)] + "\n")
EOF
  r=$("$BIN" ctl -s "$(fl_sock b)" reload 2>&1 || true)
  [[ $r == *'"reloaded":true'* && $r == *":9 (echo) removed"* ]] || problems+=("B's reload removing :9 answered: $r")
  [[ $(probe9) == refused ]] || problems+=("after removing :9, it answered '$(probe9)'")
  fl_metrics b "$dir/b.metrics"
  local counts
  counts=$(PYTHONPATH="$E2E" $PY -c '
import sys, evallib
m = evallib.parse_metrics(open(sys.argv[1]).read())
def v(name, **labels):
    return next((f"{x:.0f}" for n, l, x in m if n == name and l == labels), "none")
print(v("flowtwin_config_reloads_total", result="applied"), v("flowtwin_config_reloads_total", result="refused"), v("flowtwin_config_generation"))
' "$dir/b.metrics" 2>&1)
  [[ $counts == "2 1 2" ]] || problems+=("B's reload metrics (applied refused generation): $counts, want 2 1 2")
  fl_cleanup
  if [[ ${#problems[@]} -eq 0 ]]; then
    pass "$name" "echo :9 added live on both (SIGHUP, ctl reload); ${v#*|}; a heartbeat change refused by name; :9 removed live"
    record "$dir" "$name" 1
  else
    local IFS=';'
    fail "$name" "${problems[*]}; ${v#*|}"
    record "$dir" "$name" 0
  fi
}

# capture: `flowtwin ctl capture` on the active of a pair under downloads (:80) and echo
# streams (:7), with the filter "tcp port 80". tcpdump (Debian's) reads the pcapng file: as
# many frames as the engine says it wrote, every one of them port 80, both directions, and
# the payload the engine sent from :80 at least the bytes the clients received (the whole
# stream is there). A filter that does not compile is refused by name.
test_capture() {
  local name=capture dir=$TMP/capture problems=() r
  pair_up "$name" "$dir" strict || { fl_cleanup; return; }
  local sock
  sock=$(fl_sock a)
  r=$("$BIN" ctl -s "$sock" capture start "$dir/bad.pcapng" --filter tcp portt 80 2>&1 || true)
  [[ $r == *'"error"'* && $r == *'tcp portt 80'* ]] || problems+=("a bad filter was not refused by name: $r")
  r=$("$BIN" ctl -s "$sock" capture start "$dir/a.pcapng" --filter tcp port 80 --count 1000000 --seconds 60 2>&1 || true)
  [[ $r == *'"capturing"'* ]] || problems+=("capture start answered: $r")
  fl_clients_start "$dir" 4 4194304 4194304 2 2 2000000 socket 30
  fl_clients_wait
  r=$("$BIN" ctl -s "$sock" capture stop 2>&1 || true)
  echo "$r" >"$dir/capture.json"
  fl_rst_stop
  evaluate "$dir" "$name"
  [[ -n ${FT_CAPTURE_COST_ROUNDS:-} ]] && capture_cost "$dir" "$sock" "$FT_CAPTURE_COST_ROUNDS"
  fl_cleanup
  local v
  v=$(PYTHONPATH="$E2E" $PY - "$dir/capture.json" "$dir/a.pcapng" "$dir/eval.json" "$FT_VIP" <<'EOF'
import evallib, json, re, subprocess, sys
st = json.loads(open(sys.argv[1]).read() or "{}")
ev = json.loads(open(sys.argv[3]).read() or "{}")
vip = sys.argv[4]
bad = []
out = subprocess.run(["tcpdump", "-nn", "-r", sys.argv[2]], capture_output=True, text=True)
lines = [l for l in out.stdout.splitlines() if l.strip()]
if out.returncode != 0:
    bad.append(f"tcpdump -r failed: {out.stderr.strip()[:200]}")
if st.get("capture") != "done":
    bad.append(f"capture not done after stop: {st}")
if len(lines) != st.get("written"):
    bad.append(f"tcpdump read {len(lines)} frames, the engine wrote {st.get('written')}")
sent = re.compile(rf" {re.escape(vip)}\.80 > ")
recv = re.compile(rf" > {re.escape(vip)}\.80: ")
n_out = sum(1 for l in lines if sent.search(l))
n_in = sum(1 for l in lines if recv.search(l))
if n_out + n_in != len(lines) or not n_out or not n_in:
    bad.append(f"{len(lines) - n_out - n_in} frame(s) not of port 80 (in {n_in}, out {n_out})")
payload = sum(int(m.group(1)) for l in lines if sent.search(l) for m in [re.search(r"length (\d+)", l)] if m)
evallib.transfers_verdict(ev, bad)
want = 4 * 4194304
if payload < want:
    bad.append(f"the capture holds {payload} payload bytes sent from :80, less than the {want} downloaded")
print(("ok" if not bad else "; ".join(bad)) + f"|{len(lines)} frames ({n_in} in, {n_out} out, {payload} payload bytes out) for {want} bytes downloaded; dropped {st.get('dropped')}")
EOF
)
  [[ ${v%%|*} == ok ]] || problems+=("${v%%|*}")
  if [[ ${#problems[@]} -eq 0 ]]; then
    pass "$name" "ctl capture, filter 'tcp port 80': ${v#*|}; a bad filter refused by name"
  else
    local IFS=';'
    fail "$name" "${problems[*]}; ${v#*|}"
  fi
}

# capture_cost DIR SOCK ROUNDS — what a running capture costs (BENCHMARKS.md): 4 unthrottled
# 20 MiB downloads through the pair, capture off, on (filter "tcp port 80": every frame of
# them copied and written), and Linux's tcpdump capturing the same frames on the client's
# interface as the yardstick, in turn, ROUNDS times each; the wall time of each round.
capture_cost() {
  local dir=$1 sock=$2 rounds=$3 i mode t0 ms
  for ((i = 1; i <= rounds; i++)); do
    for mode in off on tcpdump; do
      [[ $mode == on ]] && "$BIN" ctl -s "$sock" capture start "$dir/cost.pcapng" --filter tcp port 80 --count 100000000 --seconds 600 >/dev/null
      local tdpid=""
      if [[ $mode == tcpdump ]]; then
        ip netns exec "$FT_CLIENT_NS" tcpdump -i c0 -s 0 -w "$dir/cost-tcpdump.pcap" tcp port 80 >/dev/null 2>"$dir/cost-tcpdump.err" &
        tdpid=$!
        sleep 1
      fi
      t0=$(fl_now)
      fl_clients_start "$dir/cost" 4 20971520 1000000000 0 0 0 socket 60
      fl_clients_wait
      ms=$(fl_ms_since "$t0")
      local st='{}'
      [[ $mode == on ]] && st=$("$BIN" ctl -s "$sock" capture stop)
      if [[ -n $tdpid ]]; then
        kill -INT "$tdpid"; wait "$tdpid" 2>/dev/null || true
        st=$($PY -c 'import json, re, sys; t = open(sys.argv[1]).read(); g = lambda p: int((re.search(p, t) or [0, 0])[1]); print(json.dumps({"written": g(r"(\d+) packets captured"), "dropped": g(r"(\d+) packets dropped by kernel")}))' "$dir/cost-tcpdump.err")
      fi
      info "capture_cost round $i capture $mode: 4 x 20 MiB in $ms ms $(fl_jq "$st" '"" if not s else "(written %s, dropped %s)" % (s.get("written"), s.get("dropped"))')"
      echo "{\"round\": $i, \"capture\": \"$mode\", \"ms\": $ms, \"status\": $st}" >>"$dir/cost.jsonl"
    done
  done
}
