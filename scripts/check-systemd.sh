#!/bin/sh
# CI check for the systemd packaging in systemd/.
#   1. systemd-analyze verify   jobd.service + jobd.socket (loaded together)
#   2. systemd-analyze security --offline=true, exposure must be <= 2.5
#   3. sysusers.d / tmpfiles.d files applied into a throwaway root
# Works without systemd as PID 1 (containers, CI sandboxes). Needs systemd >= 250
# for `security --offline`; on a bare Debian 12 host run as root and it installs
# the systemd package (v252) first. Never modifies the real system beyond that.
#
# Env: JOBD_BIN     binary used for ExecStart= in the verified copy
#                   (default: target/release/jobd, target/debug/jobd, else /bin/true)
#      THRESHOLD    max exposure in tenths, as systemd-analyze expects (default 25 = 2.5)
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
unitdir="$here/systemd"
threshold=${THRESHOLD:-25}
fail=0

if ! command -v systemd-analyze >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "check-systemd: systemd-analyze not found; install the 'systemd' package" >&2
        exit 2
    fi
    echo "check-systemd: installing systemd (apt-get) ..."
    t0=$(date +%s)
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends systemd >/dev/null
    echo "check-systemd: apt install took $(( $(date +%s) - t0 ))s"
    command -v systemd-analyze >/dev/null 2>&1 ||
        { echo "check-systemd: systemd-analyze still missing after install" >&2; exit 2; }
fi

version=$(systemd-analyze --version | awk 'NR==1 {print $2}')
echo "check-systemd: systemd-analyze version $version"
major=${version%%[!0-9]*}
if [ -z "$major" ] || [ "$major" -lt 250 ]; then
    echo "check-systemd: systemd >= 250 needed for 'security --offline'" >&2
    exit 2
fi

bin=${JOBD_BIN:-}
if [ -z "$bin" ]; then
    for c in "$here/target/release/jobd" "$here/target/debug/jobd" /bin/true; do
        if [ -x "$c" ]; then bin=$c; break; fi
    done
fi
[ -x "$bin" ] || { echo "check-systemd: JOBD_BIN=$bin is not executable" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM
mkdir "$tmp/units" "$tmp/root"
# verify requires ExecStart= to exist: point the copy at a binary that does.
# Only the path changes; the arguments and every other line are the real unit.
sed "s#^ExecStart=/usr/local/bin/jobd #ExecStart=$bin #" \
    "$unitdir/jobd.service" > "$tmp/units/jobd.service"
cp "$unitdir/jobd.socket" "$tmp/units/jobd.socket"
grep -q "^ExecStart=$bin " "$tmp/units/jobd.service" ||
    { echo "check-systemd: could not rewrite ExecStart=" >&2; exit 2; }
echo "check-systemd: ExecStart for verify: $bin"

# --- 1. verify ----------------------------------------------------------------
# verify exits 0 on mere warnings (e.g. "Unknown key"), so any line it prints
# about our units counts as a failure. Lines about other units on the host are
# shown but not fatal.
echo "== systemd-analyze verify jobd.service jobd.socket"
rc=0
( cd "$tmp/units" && systemd-analyze verify ./jobd.service ./jobd.socket ) \
    > "$tmp/verify.out" 2>&1 || rc=$?
cat "$tmp/verify.out"
ours=$(grep -c -e 'jobd\.' -e "$tmp" "$tmp/verify.out" || true)
if [ "$rc" -ne 0 ] || [ "$ours" -ne 0 ]; then
    echo "verify: FAILED (exit $rc, $ours message(s) about jobd units)"
    fail=1
else
    echo "verify: OK (no messages about jobd units)"
fi

# --- 2. security ----------------------------------------------------------------
echo "== systemd-analyze security --offline=true --threshold=$threshold jobd.service"
rc=0
( cd "$tmp/units" && systemd-analyze security --no-pager --offline=true \
      --threshold="$threshold" ./jobd.service ) > "$tmp/security.out" 2>&1 || rc=$?
grep -E '^✗|Overall exposure' "$tmp/security.out" || cat "$tmp/security.out"
score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' "$tmp/security.out")
if [ "$rc" -ne 0 ] || [ -z "$score" ]; then
    echo "security: FAILED (exposure ${score:-unknown}, limit $threshold/10, exit $rc)"
    fail=1
else
    echo "security: OK (exposure $score, limit $threshold/10)"
fi

# --- 3. sysusers.d + tmpfiles.d into a throwaway root ---------------------------
echo "== systemd-sysusers / systemd-tmpfiles --root=<tmp>"
mkdir -p "$tmp/root/etc"
if systemd-sysusers --root="$tmp/root" "$unitdir/jobd.sysusers" &&
   grep -q '^jobd:' "$tmp/root/etc/passwd" &&
   { [ ! -f "$unitdir/jobd.tmpfiles" ] ||
     systemd-tmpfiles --root="$tmp/root" --create "$unitdir/jobd.tmpfiles"; }; then
    echo "sysusers/tmpfiles: OK"
else
    echo "sysusers/tmpfiles: FAILED"
    fail=1
fi

[ "$fail" -eq 0 ] && echo "check-systemd: PASS" || echo "check-systemd: FAIL"
exit "$fail"
