# shellcheck shell=bash
# tests/e2e/failover_joins.sh — the failover suite's tests of joins and handovers: late_join,
# join_kill, failback_kill_new / failback_kill_old, sync_cpu, rejoin_failback and
# peer_mismatch (their
# descriptions are in tests/e2e/failover.sh's header). Sourced by tests/e2e/failover.sh after
# its helpers (pair_up, kill_a, evaluate, verdict, describe, record, hold_metrics ...); do not
# execute it.
test_late_join() {
  local name=late_join dir=$TMP/late_join
  mkdir -p "$dir"
  fl_rig_reset
  fl_start_engine a "$dir/a.log" || { fail "$name" "engine A did not start"; fl_cleanup; return; }
  fl_wait_status a 's["role"] == "active"' 10 || { fail "$name" "engine A alone is not active after 10 s: $(fl_status a)"; fl_cleanup; return; }
  fl_wait_vip 10 || { fail "$name" "VIP does not answer ping (A alone): $(fl_vip_diag)"; fl_cleanup; return; }
  fl_rst_start "$dir" || info "rstcount did not report ready"
  # ~8 s transfers: B starts and syncs while they run
  fl_clients_start "$dir" 16 20971520 2621440 4 16 2000000 socket 40
  fl_clients_wait_ready 15 || info "not every flow had bytes after 15 s"
  sleep 0.5
  local t0 ms
  t0=$(fl_now)
  if ! fl_start_engine b "$dir/b.log"; then fail "$name" "engine B did not start"; fl_cleanup; return; fi
  if ! fl_wait_status b 's["role"] == "standby" and s["in_sync"]' 15; then
    fail "$name" "B not in_sync 15 s after a mid-transfer start: B $(fl_status b); A $(fl_status a)"
    fl_cleanup; return
  fi
  ms=$(fl_ms_since "$t0")
  fl_status b >"$dir/b_status_join.json"
  info "$name: B started mid-transfer and was in_sync after $ms ms: $(fl_jq "$(cat "$dir/b_status_join.json")" '"role %s, peer %s, lag %s records" % (s["role"], s["peer"], s["sync_lag_records"])')"
  fl_clients_running || info "$name: the transfers ended before B was in sync (the snapshot did not carry live flows)"
  sleep 0.5
  kill_a "$dir"
  evaluate_kill "$dir" "$name"
  local v
  v=$(verdict "$dir")
  if [[ $v == ok ]]; then pass "$name" "B in_sync $ms ms after its start; $(describe "$dir")"; record "$dir" "$name" 1
  else fail "$name" "$v; B in_sync $ms ms after its start; $(describe "$dir")"; record "$dir" "$name" 0; fi
}

# join_kill: A alone serves every kind of client but the short connections (so that the set of
# flows at the join is known), paced to 1 MB/s so that uploads span the join and the kill, plus FT_JOIN_KILL_IDLE (1000) idle connections; the sync link is slowed (tbf) so that B's join snapshot takes ~1 s; B starts
# and A is killed while B holds images of part of the flows only. Nobody has the state of
# the others, so they are lost; every flow B holds an image of must resume byte-exact
# (strict output commit from the join on). PASS iff no transfer got a wrong byte, B took
# over, and the failed flows are no more than A's flows at the kill less B's resumed ones.
test_join_kill() {
  local name=join_kill dir=$TMP/join_kill lp i m total shadow="" insync=""
  mkdir -p "$dir"
  fl_rig_reset
  # The snapshot queues behind tbf for up to 300 ms, and heartbeats behind it: B must not
  # call a delayed active dead (20 ms x 40).
  local FT_HEARTBEAT_MS=20 FT_DEAD_AFTER=40
  fl_start_engine a "$dir/a.log" || { fail "$name" "engine A did not start"; fl_cleanup; record "$dir" "$name" 0; return; }
  fl_wait_status a 's["role"] == "active"' 10 || { fail "$name" "A alone is not active: $(fl_status a)"; fl_cleanup; record "$dir" "$name" 0; return; }
  fl_wait_vip 10 || { fail "$name" "VIP does not answer ping (A alone): $(fl_vip_diag)"; fl_cleanup; record "$dir" "$name" 0; return; }
  fl_rst_start "$dir" || info "rstcount did not report ready"
  rm -f "$dir/kill" "$dir/ready"
  ip netns exec "$FT_CLIENT_NS" timeout 90 $PY "$E2E/lives.py" --host "$FT_VIP" --idle "${FT_JOIN_KILL_IDLE:-1000}" \
    --kinds http10,close,curl10,curlclose,keepalive,pipelined,head,halfclose,echo_fin,zerowin,idle --duration 12 \
    --rate 1e6 --kill-file "$dir/kill" --ready-file "$dir/ready" --timeout 45 >"$dir/lives.json" 2>"$dir/lives.err" &
  lp=$!
  CL_PIDS+=("$lp")
  for ((i = 0; i < 600; i++)); do [[ -e $dir/ready ]] && break; sleep 0.05; done
  [[ -e $dir/ready ]] || info "$name: not every flow had bytes after 30 s"
  sleep 1
  ip netns exec "$FT_A_NS" tc qdisc add dev "$FT_A_SYNC_IF" root tbf rate "${FT_JOIN_KILL_RATE:-1mbit}" burst 16kb latency 300ms
  fl_status a >"$dir/a_status_before.json"
  total=$(fl_jq "$(cat "$dir/a_status_before.json")" 'sum(sum(w.values()) for w in s["flows"])')
  fl_start_engine b "$dir/b.log" || { fail "$name" "engine B did not start"; fl_cleanup; record "$dir" "$name" 0; return; }
  # Kill a while after A logged the join (at 1 Mbit/s the snapshot of ~1 200 flows takes
  # ~3 s), before B is in sync.
  for ((i = 0; i < 1000; i++)); do grep -q 'joining (snapshot token' "$dir/a.log" && break; sleep 0.01; done
  sleep "${FT_JOIN_KILL_AFTER:-1.5}"
  fl_metrics b "$dir/b_join.metrics"
  shadow=$(mval "$dir/b_join.metrics" flowtwin_sync_shadow_flows)
  insync=$(fl_jq "$(fl_status b)" 's["in_sync"]')
  fl_status b >"$dir/b_status_before.json"
  fl_metrics a "$dir/a_before.metrics"
  touch "$dir/kill"
  fl_kill9 a
  info "$name: killed A with B joining: B held ${shadow:-?} of A's $total flows (in sync: $insync)"
  ip netns exec "$FT_A_NS" tc qdisc del dev "$FT_A_SYNC_IF" root 2>/dev/null || true
  wait "$lp" 2>/dev/null || true
  CL_PIDS=()
  fl_rst_stop
  fl_status b >"$dir/b_status.json"
  fl_metrics b "$dir/b.metrics"
  fl_cleanup
  local v
  v=$(PYTHONPATH="$E2E" $PY - "$dir/lives.json" "$dir/b_status.json" "$dir/b.metrics" "$total" "${shadow:-0}" "$insync" <<'PYEOF'
import json, sys
import evallib
from evallib import last
lv, b = last(sys.argv[1]), last(sys.argv[2])
def metric(name):
    v = evallib.metric(sys.argv[3], name)
    return None if v is None else int(v)
total, shadow, insync = int(float(sys.argv[4])), int(float(sys.argv[5])), sys.argv[6]
failed = lv.get("failed") or []
nfailed = lv.get("failed_count", len(failed))
wrong = [f for f in failed if any(w in f.get("error", "") for w in ("mismatch", "extra bytes", "but sent only"))]
resumed = b.get("flows_resumed") or 0
imaged = metric("flowtwin_sync_takeover_imaged_flows") or 0
idle = lv.get("idle") or {}
bad = []
if not lv.get("flows") or not total:
    bad.append(f"no load: lives.py ran {lv.get('flows')} flows, A had {total} (see lives.err)")
if insync == "True":
    bad.append("B was in sync before the kill (the snapshot was too quick to kill it midway: lower FT_JOIN_KILL_RATE)")
if b.get("role") != "active":
    bad.append(f"B did not take over (role {b.get('role')})")
if wrong:
    bad.append(f"{len(wrong)} flow(s) got wrong bytes: {wrong[0]}")
# The flows A had when B joined are imaged by the snapshot; the ones B held images of at the
# kill must resume (flows opened since are in B's stream like any other). So at most A's
# flows at the join less B's imaged ones may fail.
if nfailed > max(0, total - imaged):
    bad.append(f"{nfailed} flows failed, but only {total - imaged} of A's {total} at the join lacked an image at B: an imaged flow failed")
if not imaged:
    bad.append("B resumed no flow from the join snapshot (killed too early: raise FT_JOIN_KILL_AFTER)")
if metric("flowtwin_sync_replay_errors_total"):
    bad.append(f"B: replay errors {metric('flowtwin_sync_replay_errors_total')}")
kinds = {}
for f in failed:
    e = f.get("error", "")
    k = "reset" if "reset" in e else "timeout" if "timeout" in e else e[:40]
    kinds[k] = kinds.get(k, 0) + 1
desc = (f"A had {total} flows at the join; B held {shadow} replicas at the kill and resumed {resumed}, "
        f"{imaged} of them from the snapshot (abandoned {b.get('flows_abandoned')}); "
        f"{lv.get('ok')}/{lv.get('flows')} flows byte-exact, {nfailed} lost (sample: {kinds}); "
        f"{idle.get('answered')}/{idle.get('n')} idle connections answered after the kill; "
        f"max stall of a moving stream {lv.get('max_stall_streaming_ms')} ms")
print(("ok" if not bad else "; ".join(bad)) + "|" + desc)
PYEOF
)
  if [[ ${v%%|*} == ok ]]; then pass "$name" "${v#*|}"; record "$dir" "$name" 1
  else fail "$name" "${v%%|*}; ${v#*|}"; record "$dir" "$name" 0; fi
}

# failback_kill_new / failback_kill_old: every kind of client plus 1 000 idle connections; A
# active, B its in-sync standby; `ctl failback` on A hands the VIPs to B, and B's snapshot back
# to A (A rejoins as B's standby) is slowed to ~3 s (tbf on B's sync link). Within it:
#   _new: kill -9 B (the new active). A kept its flows since the handover and B held all
#         output meanwhile (handover_hold_ms = 4000 here): A resumes them (HandoverFallback).
#   _old: kill -9 A (the engine that handed over). B holds output until handover_hold_ms
#         (500, the default) and then serves alone.
# PASS iff every flow is byte-exact, the client saw 0 RSTs, and the survivor is active (_new:
# by HandoverFallback).
test_failback_kill_new() { failback_kill_run failback_kill_new b; }
test_failback_kill_old() { failback_kill_run failback_kill_old a; }

failback_kill_run() { # NAME a|b (the engine killed)
  local name=$1 victim=$2 dir=$TMP/$1 lp i fbreply survivor=a
  [[ $victim == a ]] && survivor=b
  local FT_HEARTBEAT_MS=20 FT_DEAD_AFTER=40
  local FL_SYNC_EXTRA_a="" FL_SYNC_EXTRA_b=""
  # (FT_FAILBACK_HOLD_MS=0: the mutation check, no fallback: _new must fail.)
  local hold=${FT_FAILBACK_HOLD_MS:-}
  [[ -z $hold && $victim == b ]] && hold=4000
  if [[ -n $hold ]]; then FL_SYNC_EXTRA_a="handover_hold_ms = $hold"; FL_SYNC_EXTRA_b="handover_hold_ms = $hold"; fi
  pair_up "$name" "$dir" strict || { fl_cleanup; record "$dir" "$name" 0; return; }
  rm -f "$dir/kill" "$dir/ready"
  ip netns exec "$FT_CLIENT_NS" timeout 90 $PY "$E2E/lives.py" --host "$FT_VIP" --idle 1000 --duration 12 --rate 1e6 \
    --kill-file "$dir/kill" --ready-file "$dir/ready" --timeout 60 >"$dir/lives.json" 2>"$dir/lives.err" &
  lp=$!
  CL_PIDS+=("$lp")
  for ((i = 0; i < 600; i++)); do [[ -e $dir/ready ]] && break; sleep 0.05; done
  [[ -e $dir/ready ]] || info "$name: not every flow had bytes after 30 s"
  sleep 1
  ip netns exec "$FT_B_NS" tc qdisc add dev "$FT_B_SYNC_IF" root tbf rate 1mbit burst 16kb latency 300ms
  fl_status a >"$dir/a_status_before.json"
  fbreply=$("$BIN" ctl -s "$(fl_sock a)" failback 2>&1 || true)
  for ((i = 0; i < 500; i++)); do grep -q 'handed over to the standby' "$dir/a.log" && break; sleep 0.01; done
  local after=${FT_FAILBACK_KILL_AFTER:-0.2}
  sleep "$after"
  fl_status b >"$dir/b_status_before.json"
  touch "$dir/kill"
  fl_kill9 "$victim"
  info "$name: failback (reply: ${fbreply:-none}), then killed ${victim^^} $after s after the handover; $survivor was $(fl_jq "$(cat "$dir/${survivor}_status_before.json" 2>/dev/null || fl_status "$survivor")" 's["role"] + " " + s["peer"]')"
  ip netns exec "$FT_B_NS" tc qdisc del dev "$FT_B_SYNC_IF" root 2>/dev/null || true
  wait "$lp" 2>/dev/null || true
  CL_PIDS=()
  fl_rst_stop
  fl_status "$survivor" >"$dir/${survivor}_status.json"
  fl_metrics "$survivor" "$dir/$survivor.metrics"
  fl_cleanup
  local v
  v=$(PYTHONPATH="$E2E" $PY - "$dir/lives.json" "$dir/rst.json" "$dir/${survivor}_status.json" "$dir/$survivor.metrics" "$dir/$survivor.log" "$victim" <<'PYEOF'
import json, sys
import evallib
from evallib import last
lv, rst, st = last(sys.argv[1]), last(sys.argv[2]), last(sys.argv[3])
def metric(name):
    v = evallib.metric(sys.argv[4], name)
    return None if v is None else int(v)
try:
    log = open(sys.argv[5]).read()
except OSError:
    log = ""
victim = sys.argv[6]
bad = []
if not lv.get("flows"):
    bad.append("no load (see lives.err)")
if lv.get("failed_count", len(lv.get("failed") or [])):
    f = (lv.get("failed") or [{}])[0]
    bad.append(f"{lv.get('failed_count')} flow(s) failed, first {f.get('kind')} {f.get('id')}: {f.get('error')}")
if rst.get("rst_in") is None or rst.get("rst_in"):
    bad.append(f"RSTs seen by the client: {rst.get('rst_in')}")
if st.get("role") != "active":
    bad.append(f"the survivor is not active (role {st.get('role')})")
if victim == "b" and "HandoverFallback" not in log:
    bad.append("A did not take over by HandoverFallback")
if victim == "b" and not metric("flowtwin_sync_handover_fallbacks_total"):
    bad.append("flowtwin_sync_handover_fallbacks_total is 0")
if victim == "a" and "handover_hold over" not in log:
    bad.append("B's log does not say that its handover hold ended")
idle = lv.get("idle") or {}
ak = idle.get("after_kill_ms") or {}
desc = (f"{lv.get('ok')}/{lv.get('flows')} flows byte-exact ({lv.get('churn_connections')} short connections), "
        f"RSTs {rst.get('rst_in')}; longest wait of a moving stream {lv.get('max_stall_streaming_ms')} ms; "
        f"{idle.get('answered')}/{idle.get('n')} idle connections sending at the kill answered after p50 {ak.get('p50')} / max {ak.get('max')} ms; "
        f"survivor flows_resumed {st.get('flows_resumed')}, handover_fallbacks {metric('flowtwin_sync_handover_fallbacks_total')}")
print(("ok" if not bad else "; ".join(bad)) + "|" + desc)
PYEOF
)
  if [[ ${v%%|*} == ok ]]; then pass "$name" "${v#*|}"; record "$dir" "$name" 1
  else fail "$name" "${v%%|*}; ${v#*|}"; record "$dir" "$name" 0; fi
}

test_sync_cpu() {
  local name=sync_cpu dir=$TMP/sync_cpu cpus t
  mkdir -p "$dir"
  fl_rig_reset
  # A's worker lcore 1 runs on CPU 1 (-l 0-1): the sync thread must not be pinned there.
  # (Its control socket may answer before EAL is up: wait for the exit, not for start-up.)
  FL_SYNC_EXTRA_a="cpu = 1" fl_start_engine a "$dir/a1.log" 2>"$dir/a1.err" || true
  for ((t = 0; t < 100; t++)); do kill -0 "$A_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$A_PID" 2>/dev/null; then
    fail "$name" "engine A still runs 10 s after start with sync.cpu on its worker's CPU"; fl_cleanup; return
  fi
  if ! grep -q "sync.cpu = 1: worker lcore 1 runs on that CPU" "$dir/a1.log"; then
    fail "$name" "no clear error for sync.cpu on a worker's CPU: $(tail -3 "$dir/a1.log" | tr '\n' ' ')"; fl_cleanup; return
  fi
  A_PID=""
  if ! FL_SYNC_EXTRA_a="cpu = 0" fl_start_engine a "$dir/a0.log" 2>"$dir/a0.err"; then
    fail "$name" "engine A did not start with sync.cpu = 0: $(tr '\n' ' ' <"$dir/a0.err" | head -c 300)"; fl_cleanup; return
  fi
  fl_wait_status a 's["role"] == "active"' 10 || { fail "$name" "A not active: $(fl_status a)"; fl_cleanup; return; }
  cpus="" sched="" wsched=""
  for t in /proc/"$A_PID"/task/*; do
    if [[ $(cat "$t/comm" 2>/dev/null) == flowtwin-sync ]]; then
      cpus+=$(awk '/^Cpus_allowed_list/ {print $2}' "$t/status")
      # policy 2 = SCHED_RR; the real-time priority is stat field 40 (rt_priority)
      sched="$(awk '/^policy/ {print $3}' "$t/sched") $(awk '{print $40}' "$t/stat")"
    elif [[ -z $wsched ]]; then
      wsched=$(awk '/^policy/ {print $3}' "$t/sched")
    fi
  done
  if [[ $cpus == 0 && $sched == "2 10" && $wsched == 0 ]]; then
    pass "$name" "refused on the worker's CPU with a clear error; with cpu = 0 the sync thread's Cpus_allowed_list is $cpus; it runs SCHED_RR at priority 10 (the default sync.scheduler), the other threads time-shared"
  else
    fail "$name" "sync thread Cpus_allowed_list '$cpus' (expected 0), policy and rt priority '$sched' (expected '2 10': SCHED_RR 10), another thread's policy '$wsched' (expected 0)"
  fi
  fl_cleanup
}

RF_ATTEMPT=0
# rf_void VERDICT DIR — the run measured nothing, every takeover fenced correctly and nothing
# lost: B took over the live A before the kill (a starved heartbeat on this 2-vCPU machine;
# spurious_only, as kill_test repeats it), or the failback worked but a heartbeat gap made the
# engines trade the VIP again afterwards, so A is not the one active at the end.
rf_void() {
  spurious_only "$1" && return 0
  [[ $1 == *"does not show a takeover"* ]] && nothing_lost "$1" \
    && grep -q "TAKEOVER (epoch [0-9]*, HeartbeatTimeout" "$2/a2.log" "$2/b.log"
}

test_rejoin_failback() {
  local name=rejoin_failback dir=$TMP/rejoin_failback
  [[ $RF_ATTEMPT -gt 0 ]] && dir=$TMP/rejoin_failback.retry$RF_ATTEMPT
  mkdir -p "$dir"
  fl_rig_reset
  fl_start_engine a "$dir/a.log" || { fail "$name" "engine A did not start"; fl_cleanup; return; }
  fl_wait_status a 's["role"] == "active"' 10 || { fail "$name" "A not active: $(fl_status a)"; fl_cleanup; return; }
  fl_start_engine b "$dir/b.log" || { fail "$name" "engine B did not start"; fl_cleanup; return; }
  fl_wait_status b 's["role"] == "standby" and s["in_sync"]' 15 || { fail "$name" "B not in_sync: $(fl_status b)"; fl_cleanup; return; }
  fl_wait_vip 10 || { fail "$name" "VIP does not answer ping: $(fl_vip_diag)"; fl_cleanup; return; }
  fl_rst_start "$dir" || info "rstcount did not report ready"
  # ~14 s transfers: they span the kill, A's rejoin and the failback
  fl_clients_start "$dir" 16 20971520 1500000 4 10 750000 socket 50
  fl_clients_wait_ready 15 || info "not every flow had bytes after 15 s"
  sleep "$(fl_random_delay)"
  kill_a "$dir"
  local kill_t=$KILL_T problems=() t0 ms_join="?" ms_fb="?"
  if ! fl_wait_status b 's["role"] == "active" and s["takeovers"] >= 1' 5; then
    problems+=("B did not take over within 5 s: $(fl_status b)")
  fi
  t0=$(fl_now)
  if ! fl_start_engine a "$dir/a2.log"; then
    problems+=("A did not restart: $(tail -3 "$dir/a2.log" | tr '\n' ' ')")
  elif ! fl_wait_status a 's["role"] == "standby" and s["in_sync"]' 15; then
    problems+=("restarted A (preference active) did not join as an in_sync standby within 15 s: A $(fl_status a); B $(fl_status b)")
  else
    ms_join=$(fl_ms_since "$t0")
    fl_status a >"$dir/a2_status_join.json"
  fi
  local fb_t="" running_at_fb=no fbreply=""
  if [[ ${#problems[@]} -eq 0 ]]; then
    fl_clients_running && running_at_fb=yes
    sleep 0.5
    fb_t=$(fl_now)
    fbreply=$("$BIN" ctl -s "$(fl_sock b)" failback 2>&1 || true)
    if ! fl_wait_status a 's["role"] == "active"' 5; then
      problems+=("A not active 5 s after failback (reply: $fbreply): A $(fl_status a); B $(fl_status b)")
    else
      ms_fb=$(fl_ms_since "$fb_t")
      fl_wait_status b 's["role"] == "standby"' 3 || problems+=("B not standby after the failback: $(fl_status b)")
    fi
  fi
  fl_clients_wait
  fl_rst_stop
  fl_status a >"$dir/a2_status.json"
  fl_status b >"$dir/b_status.json"
  fl_metrics a "$dir/a2.metrics"
  fl_metrics b "$dir/b.metrics"
  local evs=(--event "kill=$kill_t")
  [[ -n $fb_t ]] && evs+=(--event "failback=$fb_t")
  evaluate "$dir" "$name" "${evs[@]}" --log "b=$dir/b.log" --log "a=$dir/a2.log" \
    --status "a=$dir/a2_status.json" --status "b=$dir/b_status.json" \
    --status "a_before=$dir/a_status_before.json" --status "b_before=$dir/b_status_before.json"
  fl_cleanup
  local v extra
  v=$(verdict "$dir" kill a)   # at the end A is active again; B's takeover is in the kill_* keys
  extra=$(PYTHONPATH="$E2E" $PY - "$dir/eval.json" <<'EOF'
import json, sys
s = json.loads(open(sys.argv[1]).read() or "{}")
k, f = s.get("kill_takeover") or {}, s.get("failback_takeover") or {}
out = [f"kill -> B TAKEOVER {s.get('kill_takeover_ms')} ms ({k.get('reason')}, epoch {k.get('epoch')}, {k.get('flows')} flows)"]
if "failback_takeover_ms" in s:
    out.append(f"failback -> A TAKEOVER {s.get('failback_takeover_ms')} ms ({f.get('reason')}, epoch {f.get('epoch')}, "
               f"{f.get('flows')} flows), client resume {s.get('failback_resume_ms')} ms, "
               f"{s.get('failback_flows_running')} flows running at the failback")
print("; ".join(out))
EOF
)
  # B's role check in verdict is for the final active engine (A); the TAKEOVER line check
  # (kill_takeover_ms) covers B's takeover.
  local summary="A rejoined as in_sync standby after ${ms_join} ms; failback -> A active after ${ms_fb} ms; transfers running at the failback: $running_at_fb; $extra; $(describe "$dir")"
  [[ $RF_ATTEMPT -gt 0 ]] && summary+="; after $RF_ATTEMPT void run(s) with a spurious, correctly fenced takeover"
  if [[ ${#problems[@]} -eq 0 && $v == ok && $running_at_fb == yes ]]; then
    pass "$name" "$summary"; record "$dir" "$name" 1
  elif [[ $RF_ATTEMPT -lt 2 && ${#problems[@]} -eq 0 ]] && rf_void "$v" "$dir"; then
    SPURIOUS_TAKEOVERS=$((SPURIOUS_TAKEOVERS + 1))
    info "$name: void run, repeated: $v"
    RF_ATTEMPT=$((RF_ATTEMPT + 1))
    test_rejoin_failback
  else
    [[ $running_at_fb == yes || ${#problems[@]} -gt 0 ]] || problems+=("the transfers had ended before the failback")
    [[ $v == ok ]] || problems+=("$v")
    local IFS=';'
    fail "$name" "${problems[*]}; $summary"; record "$dir" "$name" 0
  fi
}

# peer_mismatch — a standby that differs from the active in output-commit mode, then in its
# heartbeat interval, is refused with both values named and never gets in sync.
test_peer_mismatch() {
  local name=peer_mismatch dir=$TMP/peer_mismatch problems=() i err
  mkdir -p "$dir"
  fl_rig_reset
  fl_start_engine a "$dir/a.log" strict || { fail "$name" "engine A did not start"; fl_cleanup; return; }
  fl_wait_status a 's["role"] == "active"' 10 || { fail "$name" "A not active: $(fl_status a)"; fl_cleanup; return; }
  local what want
  for what in mode heartbeat; do
    if [[ $what == mode ]]; then
      fl_start_engine b "$dir/b_mode.log" async || problems+=("B (async) did not start")
      want="sync mode mismatch: peer node 2 runs async, this engine runs strict"
    else
      FT_HEARTBEAT_MS=7 fl_start_engine b "$dir/b_hb.log" strict || problems+=("B (7 ms heartbeats) did not start")
      want="heartbeat interval mismatch: peer node 2 beats every 7000 µs, this engine every $((FT_HEARTBEAT_MS * 1000)) µs"
    fi
    err=""
    for ((i = 0; i < 60; i++)); do
      err=$(fl_jq "$(fl_status a)" 's["last_error"]')
      [[ $err == *"$want"* ]] && break
      sleep 0.1
    done
    [[ $err == *"$want"* ]] || problems+=("$what: A's last_error '$err', want '$want'")
    [[ $(fl_jq "$(fl_status b)" 's["in_sync"]') != True ]] || problems+=("$what: B got in sync")
    [[ $(fl_jq "$(fl_status a)" 's["role"]') == active ]] || problems+=("$what: A is no longer active: $(fl_status a)")
    fl_stop_engine b
  done
  fl_cleanup
  if [[ ${#problems[@]} -eq 0 ]]; then
    pass "$name" "a standby in async mode and one beating every 7 ms were each refused by name; A stayed active"
  else
    local IFS=';'
    fail "$name" "${problems[*]}"
  fi
}
