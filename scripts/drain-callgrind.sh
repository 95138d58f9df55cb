#!/usr/bin/env bash
# Instructions per job of jobd's drain and of the raw rusqlite 64-per-transaction loop,
# counted by callgrind (issue 15, target 1). Instruction counts do not move with the
# machine's load, unlike the seconds `cargo bench --bench queue -- --only drain` prints;
# they leave out the kernel's share (write, fsync) and what waiting costs.
#
#   scripts/drain-callgrind.sh [JOBS [SYNC]]      # default 20000 normal
#   KEEP=dir scripts/drain-callgrind.sh          # keep the callgrind files in dir
#
# raw: only the timed loop is counted (--toggle-collect on raw_claim_loop; the seeding
# inserts are not). jobd: every thread but the bench's main one (which seeds the jobs
# and waits), i.e. the dispatcher, the workers and the daemon's helpers, from start-up
# to the end of the --once drain. Under valgrind the threads take turns on one core, so
# turns fold in more or fewer reports than on real cores: the count per job is
# repeatable, but it is the cost of this schedule.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${1:-20000}
sync=${2:-normal}
bin=$(nice -n 19 ionice -c3 cargo bench --bench queue --no-run 2>&1 |
    sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -n 1)
[ -x "$bin" ] || { echo "no bench binary found" >&2; exit 1; }
out=${KEEP:-$(mktemp -d)}
mkdir -p "$out"
run() {
    nice -n 19 ionice -c3 valgrind --tool=callgrind "$@" >/dev/null 2>"$out/valgrind.log" ||
        { cat "$out/valgrind.log" >&2; exit 1; }
}
# The figure callgrind writes as "totals:" (or "summary:") in each file.
total() { sed -n 's/^\(totals\|summary\): \([0-9]*\).*/\2/p' "$1" | head -n 1; }

run --callgrind-out-file="$out/raw.out" --toggle-collect='*raw_claim_loop*' \
    "$bin" --only drain --drain-runs raw64 --jobs "$jobs" --synchronous "$sync"
raw=$(total "$out/raw.out")

run --separate-threads=yes --callgrind-out-file="$out/jobd.out" \
    "$bin" --only drain --drain-runs jobd --jobs "$jobs" --synchronous "$sync"
jobd=0
for f in "$out"/jobd.out-*; do
    case "$f" in *-01) continue ;; esac
    jobd=$((jobd + $(total "$f")))
done

echo "jobs=$jobs synchronous=$sync (callgrind files in $out)"
awk -v raw="$raw" -v jobd="$jobd" -v n="$jobs" 'BEGIN {
    printf "raw 64/txn loop: %d instructions, %.0f per job\n", raw, raw / n
    printf "jobd drain:      %d instructions, %.0f per job\n", jobd, jobd / n
    printf "jobd / raw:      %.2f\n", jobd / raw
}'
