#!/usr/bin/env bash
# Per-job counts of one jobd daemon draining noop jobs on the local PostgreSQL (issue 17),
# beside the seconds, so two builds can be compared on a loaded machine: CPU of the
# daemon and of its server backends (/proc/PID/stat utime+stime, 10 ms ticks), WAL bytes
# (pg_current_wal_lsn before/after), WAL records and commit records (pg_waldump),
# transactions (pg_stat_database.xact_commit, read-only ones included), row updates, HOT
# updates and attempt rows (pg_stat_user_tables). Same daemon configuration and insert
# as benches/postgres.rs (4 workers, one INSERT ... generate_series, timed until all
# succeeded).
#
#   scripts/pg-drain-counts.sh [JOBD [JOBS [LABEL]]]   # default target/release/jobd 20000
#   IDLE=0 ...        # insert at once after start-up, as the bench does (default: 1 s
#                     # idle first, as a daemon that waited for work: its statements
#                     # are prepared and planned on the empty table)
#   PREFETCH=2048 ... # daemon.prefetch
#   ASYNC=1 ...       # the database's synchronous_commit = off (an upper bound only)
#   EXPLAIN=MS ...    # auto_explain every statement over MS ms into the server log
#
# Run as root on the server's machine (pg_waldump reads pg_wal, /proc of the backends).
# WAL figures are the server's over the window: other databases' writes count too.
set -euo pipefail
cd "$(dirname "$0")/.."
jobd=${1:-target/release/jobd}
jobs=${2:-20000}
label=${3:-drain}
waldump=/usr/lib/postgresql/15/bin/pg_waldump
waldir=/var/lib/postgresql/15/main/pg_wal
db=jobd_counts_$$_$RANDOM
admin="psql -X -q -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1"
$admin -d postgres -c "CREATE DATABASE $db"
if [ -n "${ASYNC:-}" ]; then
    $admin -d postgres -c "ALTER DATABASE $db SET synchronous_commit = off"
fi
if [ -n "${EXPLAIN:-}" ]; then
    $admin -d postgres -c "ALTER DATABASE $db SET session_preload_libraries = 'auto_explain'" \
        -c "ALTER DATABASE $db SET auto_explain.log_min_duration = $EXPLAIN" \
        -c "ALTER DATABASE $db SET auto_explain.log_analyze = on" \
        -c "ALTER DATABASE $db SET auto_explain.log_nested_statements = on"
fi
dir=$(mktemp -d)
daemon=
cleanup() {
    [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null || true
    $admin -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
    rm -rf "$dir"
}
trap cleanup EXIT
mkdir -p "$dir/var"
cat > "$dir/jobd.toml" <<EOT
[daemon]
database = "postgresql://postgres@127.0.0.1:5432/$db"
data_dir = "$dir/var"
socket = "$dir/var/run/jobd.sock"
node = "d0"
workers = 4
${PREFETCH:+prefetch = $PREFETCH}
[log]
level = "warn"
EOT
env -u NOTIFY_SOCKET "$jobd" --config "$dir/jobd.toml" >"$dir/out" 2>&1 &
daemon=$!
for _ in $(seq 1 300); do [ -S "$dir/var/run/jobd.sock" ] && break; sleep 0.1; done
sleep "${IDLE:-1}"
sql="$admin -d $db"
cpu() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
backends=$($sql -Atc "SELECT pid FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid()")
backends_cpu() { local sum=0; for pid in $backends; do sum=$((sum + $(cpu "$pid"))); done; echo $sum; }
counters() {
    $sql -Atc "SELECT pg_current_wal_lsn(),
        (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()),
        coalesce((SELECT n_tup_upd || ' ' || n_tup_hot_upd FROM pg_stat_user_tables
                  WHERE relname = 'jobs'), '0 0'),
        coalesce((SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 'job_attempts'), 0)" |
        tr '|' ' '
}
read -r lsn0 xact0 upd0 hot0 att0 <<< "$(counters)"
daemon0=$(cpu $daemon); backends0=$(backends_cpu)
times=$($sql -At <<EOT
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
INSERT INTO jobs (kind, payload) SELECT 'noop', '{}' FROM generate_series(1, $jobs);
DO \$\$ BEGIN
    LOOP
        EXIT WHEN (SELECT count(*) FROM jobs WHERE state = 'succeeded') >= $jobs;
        PERFORM pg_sleep(0.02);
    END LOOP;
END \$\$;
SELECT extract(epoch FROM clock_timestamp()) - :t0;
EOT
)
daemon1=$(cpu $daemon); backends1=$(backends_cpu)
# The backends flush their table and database counters within a second.
sleep 1.2
read -r lsn1 xact1 upd1 hot1 att1 <<< "$(counters)"
read -r walcommits walrecords <<< "$($waldump -p $waldir -s "$lsn0" -e "$lsn1" --stats=record 2>/dev/null |
    awk '/Transaction\/COMMIT /{c = $2} /^Total/{t = $2} END {print c + 0, t + 0}')"
$sql -Atc "SELECT '$label', 'jobs/s', round($jobs / $times),
    'seconds', round($times::numeric, 3),
    'backend_cpu_us/job', round(($backends1 - $backends0) * 10000.0 / $jobs, 1),
    'daemon_cpu_us/job', round(($daemon1 - $daemon0) * 10000.0 / $jobs, 1),
    'wal_bytes/job', round((pg_lsn '$lsn1' - pg_lsn '$lsn0') / $jobs),
    'wal_records/job', round($walrecords::numeric / $jobs, 1),
    'wal_commits/1000jobs', round($walcommits * 1000.0 / $jobs, 1),
    'xacts/1000jobs', round(($xact1 - $xact0) * 1000.0 / $jobs, 1),
    'updates/job', round(($upd1 - $upd0)::numeric / $jobs, 2),
    'hot/job', round(($hot1 - $hot0)::numeric / $jobs, 2),
    'attempts/job', round(($att1 - $att0)::numeric / $jobs, 2),
    'load', split_part(pg_read_file('/proc/loadavg'), ' ', 1)" | tr '|' ' '
