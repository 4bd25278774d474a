#!/usr/bin/env bash
# tests/package.sh — the Debian package as an operator gets it (scripts/test runs it as a step).
#
#   tests/package.sh [--keep]     --keep: leave the scratch directory (and its root) behind
#
# Checks, one PASS/FAIL line each, then "N passed, M failed":
#   deb_builds           scripts/package leaves exactly one target/debian/flowtwin_*.deb
#   deb_control          name, a version naming the git revision, Depends on the DPDK runtime
#                        libraries (the linked ones, the mempool driver, the buses) and on no
#                        -dev package
#   deb_contents         every file at its Debian path: binary, unit, sysctl.d, examples, man
#                        pages, bash/zsh/fish completions, /etc/flowtwin
#   clean_root_install   apt-get install ./flowtwin_*.deb in a fresh minimal Debian 12 root
#                        (mmdebstrap --variant=apt: apt and the essential packages, no DPDK)
#                        resolves and installs every dependency from Debian
#   installed_version    the installed `flowtwin --version` names the revision and DPDK 22.11
#   installed_examples   `flowtwin check-config` accepts both installed example configs
#   installed_eal        the installed binary initialises EAL and forwards on two net_null
#                        ports (--no-huge): the drivers EAL loads at run time came with it
#   unit_commands_run    the unit's ExecStartPre and ExecStart for flowtwin@t, under its
#                        capability set and memlock limit, on a net_null port (--no-huge) in a
#                        network namespace of its own: check-config passes, the engine starts,
#                        answers `ctl status` on /run/flowtwin/t.sock, exits 0 on SIGTERM
#   installed_docs       man finds the pages, bash completion offers ctl's commands
#   unit_verifies        `systemd-analyze verify flowtwin@a.service` in that root (systemd
#                        and man-db installed there to check it)
#   removes_cleanly      dpkg --purge leaves none of the package's files
#
# The root is built once per machine (about 90 s, kept as FT_PKG_ROOT_TAR, default
# /var/cache/flowtwin/bookworm-apt.tar) and unpacked anew for every run; everything inside it
# runs in a private mount namespace (chroot with /proc, /sys, /dev), so nothing is left
# mounted and the host's own dpkg database is never touched.
# shellcheck disable=SC2016  # the bash -c scripts expand their own arguments
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 2
export PATH="$HOME/.cargo/bin:$PATH"
KEEP=0
[[ ${1:-} == --keep ]] && KEEP=1
ROOT_TAR=${FT_PKG_ROOT_TAR:-/var/cache/flowtwin/bookworm-apt.tar}
MIRROR=${FT_PKG_MIRROR:-http://deb.debian.org/debian}
TMP=$(mktemp -d /tmp/ft-package.XXXXXX)
R=$TMP/root
PASSED=0
FAILED=0
START=$(date +%s)
pass() { PASSED=$((PASSED + 1)); echo "PASS $1 ($2)"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $1 ($2)"; }
info() { echo "     $*"; }
tailof() { tail -n "${2:-5}" "$1" | tr '\n' ' ' | cut -c1-600; }
cleanup() {
  if [[ $KEEP == 1 ]]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

# inroot CMD... — run CMD in the clean root, in a mount namespace of its own.
inroot() {
  unshare --mount --propagation private -- bash -c '
    r=$1; shift
    mount -t proc proc "$r/proc" && mount --rbind /sys "$r/sys" && mount --rbind /dev "$r/dev" || exit 97
    exec chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
      DEBIAN_FRONTEND=noninteractive "$@"' _ "$R" "$@"
}

# ---------------------------------------------------------------- the package
if scripts/package >"$TMP/package.log" 2>&1; then
  mapfile -t debs < <(ls target/debian/flowtwin_*.deb 2>/dev/null)
  if [[ ${#debs[@]} -eq 1 && $(tail -1 "$TMP/package.log") == "$ROOT/target/debian/$(basename "${debs[0]}")" ]]; then
    DEB=${debs[0]}
    pass deb_builds "$(basename "$DEB"), $(du -k "$DEB" | cut -f1) KiB"
  else
    fail deb_builds "expected one target/debian/flowtwin_*.deb, found ${#debs[@]}: $(tailof "$TMP/package.log" 2)"
  fi
else
  fail deb_builds "scripts/package failed: $(tailof "$TMP/package.log")"
fi
if [[ -z ${DEB:-} ]]; then
  echo "$PASSED passed, $((FAILED + 10)) failed"
  exit 1
fi

rev=unknown
git rev-parse --git-dir >/dev/null 2>&1 && rev=$(git describe --always --dirty)
dpkg-deb --field "$DEB" Package Version Depends >"$TMP/control" 2>&1
depends=$(sed -n 's/^Depends: //p' "$TMP/control")
version=$(sed -n 's/^Version: //p' "$TMP/control")
problems=()
grep -qx 'Package: flowtwin' "$TMP/control" || problems+=("Package is not flowtwin")
[[ $rev == unknown || $version == *".$(git rev-parse --short HEAD)"* ]] || problems+=("Version $version does not name $(git rev-parse --short HEAD)")
for dep in libc6 librte-eal23 librte-ethdev23 librte-mbuf23 librte-mempool23 librte-mempool-ring23 librte-bus-vdev23 librte-bus-pci23; do
  [[ ", $depends," == *", $dep "* || ", $depends," == *", $dep,"* ]] || problems+=("Depends lacks $dep")
done
[[ $depends == *-dev* ]] && problems+=("Depends names a -dev package: $depends")
if [[ ${#problems[@]} -eq 0 ]]; then
  pass deb_control "Version $version; Depends: $depends"
else
  fail deb_control "$(IFS=';'; echo "${problems[*]}")"
fi

dpkg-deb --contents "$DEB" | awk '{print $1, $NF}' >"$TMP/contents"
missing=()
for p in ./usr/bin/flowtwin ./lib/systemd/system/flowtwin@.service ./usr/lib/sysctl.d/60-flowtwin-hugepages.conf \
  ./usr/share/doc/flowtwin/examples/a.toml ./usr/share/doc/flowtwin/examples/b.toml ./usr/share/doc/flowtwin/copyright \
  ./usr/share/man/man1/flowtwin.1.gz ./usr/share/man/man1/flowtwin-run.1.gz ./usr/share/man/man1/flowtwin-ctl.1.gz \
  ./usr/share/man/man1/flowtwin-check-config.1.gz ./usr/share/man/man1/flowtwin-bench.1.gz \
  ./usr/share/bash-completion/completions/flowtwin ./usr/share/zsh/vendor-completions/_flowtwin \
  ./usr/share/fish/vendor_completions.d/flowtwin.fish ./etc/flowtwin/; do
  grep -q " $p\$" "$TMP/contents" || missing+=("$p")
done
grep -q '^-rwxr-xr-x ./usr/bin/flowtwin$' "$TMP/contents" || missing+=("usr/bin/flowtwin mode 755")
if [[ ${#missing[@]} -eq 0 ]]; then
  pass deb_contents "$(grep -c '^-' "$TMP/contents") files at their Debian paths"
else
  fail deb_contents "missing: ${missing[*]}"
fi

# ---------------------------------------------------------------- a clean root
root_ok=1
if [[ ! -s $ROOT_TAR ]]; then
  if ! command -v mmdebstrap >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q mmdebstrap >"$TMP/mmdebstrap-install.log" 2>&1 || true
  fi
  mkdir -p "$(dirname "$ROOT_TAR")"
  info "building the clean root once: $ROOT_TAR"
  if mmdebstrap --variant=apt --mode=root --format=tar bookworm "$ROOT_TAR.part" \
    "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" \
    "deb ${MIRROR%/debian}/debian-security bookworm-security main" >"$TMP/mmdebstrap.log" 2>&1; then
    mv "$ROOT_TAR.part" "$ROOT_TAR"
  else
    rm -f "$ROOT_TAR.part"
    root_ok=0
    fail clean_root_install "mmdebstrap failed: $(tailof "$TMP/mmdebstrap.log")"
  fi
fi
if [[ $root_ok == 1 ]]; then
  if ! { mkdir -p "$R" && tar -xf "$ROOT_TAR" -C "$R"; }; then
    root_ok=0
    fail clean_root_install "cannot unpack $ROOT_TAR"
  fi
fi
if [[ $root_ok == 1 ]]; then
  cp /etc/resolv.conf "$R/etc/resolv.conf"
  cp "$DEB" "$R/tmp/"
  if inroot test -x /usr/bin/flowtwin || inroot dpkg -s librte-eal23 >/dev/null 2>&1; then
    root_ok=0
    fail clean_root_install "the root is not clean: flowtwin or DPDK already there ($ROOT_TAR)"
  elif inroot apt-get update -q >"$TMP/apt-update.log" 2>&1 &&
    inroot apt-get install -y -q "/tmp/$(basename "$DEB")" >"$TMP/apt-install.log" 2>&1; then
    n=$(grep -cE '^(Setting up|Unpacking) ' "$TMP/apt-install.log")
    pass clean_root_install "apt-get install ./$(basename "$DEB") in a fresh Debian 12 root: $(grep -c '^Setting up ' "$TMP/apt-install.log") packages set up (${n} dpkg steps)"
  else
    root_ok=0
    fail clean_root_install "apt-get: $(tailof "$TMP/apt-install.log" 8) $(tailof "$TMP/apt-update.log" 3)"
  fi
fi

if [[ $root_ok == 1 ]]; then
  out=$(inroot flowtwin --version 2>&1)
  if [[ $out == "flowtwin "*"(git $rev) on DPDK 22.11"* ]]; then
    pass installed_version "$out"
  else
    fail installed_version "expected '(git $rev) on DPDK 22.11...', got: $out"
  fi

  ok=1 msg=""
  for c in a b; do
    if out=$(inroot flowtwin check-config -c "/usr/share/doc/flowtwin/examples/$c.toml" 2>&1); then
      msg+="$out; "
    else
      ok=0 msg+="$c.toml: $out; "
    fi
  done
  if [[ $ok == 1 ]]; then pass installed_examples "$msg"; else fail installed_examples "$msg"; fi

  out=$(inroot flowtwin bench --duration 1 --json --quiet -- -l 0-1 --no-pci --no-huge --no-shconf -m 256 \
    --vdev net_null0 --vdev net_null1 --log-level error 2>&1)
  j=$(grep '^{' <<<"$out" | tail -1)
  rx=$(python3 -c 'import json, sys; print(int(json.loads(sys.argv[1])["rx"]))' "$j" 2>/dev/null || echo 0)
  if [[ $rx -gt 0 ]]; then
    pass installed_eal "flowtwin bench io on net_null0<->net_null1 in the clean root forwarded $rx packets: $(cut -c1-160 <<<"$j")"
  else
    fail installed_eal "$(tail -5 <<<"$out" | tr '\n' ' ' | cut -c1-600)"
  fi

  # The unit's own command lines for flowtwin@t, run as systemd would run them: its capability
  # bounding and ambient sets, LimitMEMLOCK, /run/flowtwin made as RuntimeDirectory= makes it.
  # A net_null port and --no-huge (no hugepages or interfaces of the machine are used), in a
  # network namespace of its own.
  unit=$R/lib/systemd/system/flowtwin@.service
  caps=$(sed -n 's/^CapabilityBoundingSet=//p' "$unit" | tr '[:upper:]' '[:lower:]' | sed 's/cap_//g; s/ \+/,+/g')
  pre=$(sed -n 's/^ExecStartPre=//p' "$unit" | sed 's/%i/t/g')
  start=$(sed -n 's/^ExecStart=//p' "$unit" | sed 's/%i/t/g')
  # ExecReload as systemd runs it, $MAINPID filled in by the script below.
  reload=$(sed -n 's/^ExecReload=//p' "$unit" | sed 's/\$MAINPID/PID_OF_MAIN/g')
  cat >"$R/etc/flowtwin/t.toml" <<'EOF_T'
[eal]
args = ["-l", "0-1", "--no-pci", "--no-huge", "--no-shconf", "-m", "512", "--vdev", "net_null0", "--log-level", "error"]
[[port]]
name = "net_null0"
[[vip]]
addr = "198.18.0.100"
[[service]]
vip = "198.18.0.100"
port = 7
kind = "echo"
[metrics]
listen = "127.0.0.1:9470"
[sync]
node_id = 1
role = "active"
listen = "127.0.0.1:7401"
peer = "127.0.0.1:7402"
control = "/run/flowtwin/t.sock"
EOF_T
  unshare --net --mount --propagation private -- bash -c '
    r=$1 caps=$2 pre=$3 start=$4 reload=$5
    ip link set lo up || exit 97
    mount -t proc proc "$r/proc" && mount --rbind /sys "$r/sys" && mount --rbind /dev "$r/dev" || exit 97
    exec chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root bash -c "
      caps=\$1 pre=\$2 start=\$3 reload=\$4
      as_unit() { setpriv --bounding-set -all,+\$caps --inh-caps -all,+\$caps --ambient-caps -all,+\$caps -- \"\$@\"; }
      # (This container may not raise RLIMIT_MEMLOCK; nothing here locks memory: --no-huge.)
      ulimit -l unlimited 2>/dev/null || echo memlock: kept \$(ulimit -l) here
      mkdir -p -m 755 /run/flowtwin
      as_unit grep ^CapBnd /proc/self/status
      as_unit \$pre || { echo ExecStartPre failed; exit 10; }
      ( exec setpriv --bounding-set -all,+\$caps --inh-caps -all,+\$caps --ambient-caps -all,+\$caps -- \$start >/tmp/t.log 2>&1 ) &
      pid=\$!
      for i in \$(seq 1 100); do
        flowtwin ctl -s /run/flowtwin/t.sock status >/tmp/t.status 2>&1 && break
        kill -0 \$pid 2>/dev/null || break
        sleep 0.1
      done
      echo status: \$(cat /tmp/t.status)
      # systemctl reload: the ExecReload of the unit, then the engine still answers.
      rl=\${reload//PID_OF_MAIN/\$pid}
      eval \"\$rl\" && echo reload: sent
      for i in \$(seq 1 50); do grep -q \"reloaded (SIGHUP)\" /tmp/t.log 2>/dev/null && break; sleep 0.1; done
      flowtwin ctl -s /run/flowtwin/t.sock status >/dev/null 2>&1 && echo reload: alive
      kill -TERM \$pid
      for i in \$(seq 1 100); do kill -0 \$pid 2>/dev/null || break; sleep 0.1; done
      kill -KILL \$pid 2>/dev/null && echo still running 10 s after SIGTERM: killed
      wait \$pid; echo exit: \$?
    " _ "$caps" "$pre" "$start" "$reload"' _ "$R" "$caps" "$pre" "$start" "$reload" >"$TMP/unit-run.log" 2>&1
  if grep -q '^status: {.*"role"' "$TMP/unit-run.log" && grep -qx 'exit: 0' "$TMP/unit-run.log" \
    && grep -qx 'reload: alive' "$TMP/unit-run.log" && grep -q "reloaded (SIGHUP)" "$R/tmp/t.log"; then
    pass unit_commands_run "flowtwin@t's ExecStartPre, ExecStart and ExecReload under $(grep -m1 CapBnd "$TMP/unit-run.log" | tr -s '\t ' ' ') ($caps): started, answered ctl status, reloaded on ExecReload and still answered, exit 0 on SIGTERM"
  else
    fail unit_commands_run "$(tailof "$TMP/unit-run.log" 6) | engine log: $(tailof "$R/tmp/t.log" 6)"
  fi

  # Tools to look at the docs and the unit with, installed after the package (not its deps).
  if inroot apt-get install -y -q --no-install-recommends systemd man-db bash-completion >"$TMP/tools.log" 2>&1; then
    manpath=$(inroot man -w flowtwin-ctl 2>&1)
    words=$(inroot bash -c '. /usr/share/bash-completion/bash_completion; . /usr/share/bash-completion/completions/flowtwin
      COMP_WORDS=(flowtwin ctl ""); COMP_CWORD=2; COMP_LINE="flowtwin ctl "; COMP_POINT=${#COMP_LINE}
      _flowtwin flowtwin "" ctl; echo "${COMPREPLY[*]}"' 2>&1)
    if [[ $manpath == /usr/share/man/man1/flowtwin-ctl.1.gz && $words == *status*failback* ]]; then
      pass installed_docs "man -w flowtwin-ctl: $manpath; bash completes 'flowtwin ctl ' with: $words"
    else
      fail installed_docs "man -w: $manpath; completion offered: $words"
    fi
    # Strict: systemd-analyze exits 0 on some complaints (an unknown key, a bad value it
    # ignores), so any output fails too.
    if inroot systemd-analyze verify flowtwin@a.service >"$TMP/verify.log" 2>&1 && [[ ! -s $TMP/verify.log ]]; then
      pass unit_verifies "systemd-analyze verify flowtwin@a.service: exit 0, no complaint (ExecStart binaries and man pages found)"
    else
      fail unit_verifies "$(tailof "$TMP/verify.log" 8)"
    fi
  else
    fail installed_docs "apt-get install systemd man-db bash-completion: $(tailof "$TMP/tools.log")"
    fail unit_verifies "no systemd in the root (see installed_docs)"
  fi

  inroot dpkg-query -L flowtwin >"$TMP/files" 2>&1
  if inroot dpkg --purge flowtwin >"$TMP/purge.log" 2>&1; then
    left=()
    while read -r p; do
      # Directories stay when shared (and /lib is usrmerge's symlink to usr/lib): files count.
      if [[ -L $R$p && ! -d $R$p ]] || [[ -f $R$p ]]; then left+=("$p"); fi
    done <"$TMP/files"
    if [[ ${#left[@]} -eq 0 ]]; then
      pass removes_cleanly "dpkg --purge: none of $(grep -c . "$TMP/files") paths left as files"
    else
      fail removes_cleanly "left behind: ${left[*]}"
    fi
  else
    fail removes_cleanly "dpkg --purge: $(tailof "$TMP/purge.log")"
  fi
else
  for t in installed_version installed_examples installed_eal unit_commands_run installed_docs unit_verifies removes_cleanly; do
    fail "$t" "no clean root with the package (see clean_root_install)"
  done
fi

info "total $(($(date +%s) - START)) s"
echo "$PASSED passed, $FAILED failed"
[[ $FAILED -eq 0 ]]
