#!/usr/bin/env bash
# Instructions per job of socket batch enqueue (1,000 jobs a request, ack awaited) in the
# jobd daemon, counted by callgrind (issue 15, target 3); with MODE=singles, of single
# enqueues from 16 clients, each waiting for its ack (target 2), BATCHES per client; with
# MODE=single, the same from one client.
# Instruction counts do not move with the machine's load, unlike the jobs/s `cargo bench
# --bench queue -- --only socket` prints; they leave out the kernel's share (read, write,
# fsync) and what waiting costs.
#
#   scripts/enqueue-callgrind.sh [BATCHES [SYNC]]   # default 20 normal
#   KEEP=dir scripts/enqueue-callgrind.sh           # keep the callgrind files in dir
#   JOBD=path scripts/enqueue-callgrind.sh          # count that jobd binary instead of
#                                                   # the one built here (a before figure)
#   MODE=singles scripts/enqueue-callgrind.sh 500   # 16 clients, 500 single enqueues each
#   MODE=single scripts/enqueue-callgrind.sh 2000   # 1 client, 2000 single enqueues
#
# The bench (`--only socket-batch`) starts the real jobd binary under callgrind
# (JOBD_BENCH_DAEMON_WRAP), sends the batches from its own, uncounted process and stops
# the daemon with SIGTERM. Every daemon thread is summed. Start-up and shutdown are taken
# out by a second run of 2 batches: per job = (I(BATCHES) - I(2)) / ((BATCHES - 2) * 1000)
# (* 16 for singles, * 1 for single). Under callgrind the daemon runs slowly, so 16
# clients' enqueues meet in larger group commits than at full speed; the figure is the
# cost in such a turn.
set -euo pipefail
cd "$(dirname "$0")/.."
batches=${1:-20}
sync=${2:-normal}
small=2
case ${MODE:-batch} in
batch) only=socket-batch per=1000 what="socket batch enqueue" ;;
singles) only=socket-singles per=16 what="socket single enqueue, 16 clients" ;;
single) only=socket-single per=1 what="socket single enqueue, 1 client" ;;
*) echo "MODE is batch, singles or single, not ${MODE}" >&2; exit 2 ;;
esac
out=${KEEP:-$(mktemp -d)}
mkdir -p "$out"
# Both binaries are copied at once: another worktree building into the same target
# directory (CARGO_TARGET_DIR) writes the same paths.
built=$(nice -n 19 ionice -c3 cargo bench --bench queue --no-run --message-format=json 2>/dev/null)
bench=$(echo "$built" | sed -n 's/.*"target":{[^}]*"kind":\["bench"\].*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
jobd=$(echo "$built" | sed -n 's/.*"target":{[^}]*"kind":\["bin"\][^}]*"name":"jobd".*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
[ -x "$bench" ] && [ -x "$jobd" ] || { echo "no bench or jobd binary found" >&2; exit 1; }
cp "$bench" "$out/queue-bench"
cp "${JOBD:-$jobd}" "$out/jobd"
bin=$out/queue-bench
export JOBD_BENCH_JOBD=$out/jobd
# The figure callgrind writes as "totals:" (or "summary:") in each file.
total() { sed -n 's/^\(totals\|summary\): \([0-9]*\).*/\2/p' "$1" | head -n 1; }
# Runs BATCHES batches with the daemon under callgrind; prints the daemon's instructions.
count() {
    local n=$1 name=$2 sum=0
    rm -f "$out/$name".out*
    JOBD_BENCH_DAEMON_WRAP="nice -n 19 ionice -c3 valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file=$out/$name.out --log-file=$out/$name.valgrind.log" \
        "$bin" --only "$only" --batches "$n" --synchronous "$sync" >"$out/$name.bench.log" 2>&1 ||
        { cat "$out/$name.bench.log" "$out/$name.valgrind.log" >&2; exit 1; }
    for f in "$out/$name".out-*; do
        sum=$((sum + $(total "$f")))
    done
    echo "$sum"
}
big=$(count "$batches" big)
base=$(count "$small" small)
echo "$what: batches=$batches (less $small) of $per jobs, synchronous=$sync (callgrind files in $out)"
awk -v big="$big" -v base="$base" -v n=$(((batches - small) * per)) -v per="$per" -v what="$what" 'BEGIN {
    printf "daemon, %d batches: %d instructions; 2 batches: %d\n", n / per + 2, big, base
    printf "%s: %.0f instructions per job\n", what, (big - base) / n
}'
