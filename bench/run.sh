#!/usr/bin/env bash
# Ingest and read benchmark. Builds release, starts two servers on
# temporary databases (one fresh, one preloaded) and examples/ceiling (an
# axum server that reads each body and answers 200, nothing else), drives
# them with examples/loadgen over loopback, and prints one table of
# medians. The ceiling's run comes right before the service's in every
# round, so the service's intake is reported as a share of what an empty
# server did seconds before on the same machine. Each row also shows the
# server's CPU time (user + system, from /proc/<pid>/stat) per request.
# Then the same for PostgreSQL, when one is reachable: one replica, two
# replicas sharing one database, and examples/naive_postgres (a transaction
# per request), each on a fresh database of its own.
#
#   bash bench/run.sh                                    # the full run
#   N=300 N1=50 REPEAT=1 PRELOAD=500 bash bench/run.sh   # a smoke run
#
# N: requests per run at concurrency 16 and 64, and per read run;
# N1: requests at concurrency 1; REPEAT: runs per row (each figure in the
# table is the median of its runs); PRELOAD: events stored before the
# "after preload" rows. The secret and token are test values.
#
# PostgreSQL rows: BENCH_POSTGRES_URL is the server, without a database
# (default postgres://postgres@127.0.0.1:5432; a user that may create
# databases); each server gets a database made for this run and dropped
# at exit. PG_N: requests per PostgreSQL run (default N); NAIVE_POOL: the
# naive server's pool size (default 16). Without a reachable PostgreSQL
# those rows are skipped with a warning, unless CI=true, which fails.
# CARGO_TARGET_DIR is honoured (default target). RECEIVER: another
# receiver binary to measure (e.g. a release build of an older commit);
# the load generator and the ceiling are still this tree's.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=ci/receiver.sh
. ci/receiver.sh

N=${N:-100000}
N1=${N1:-5000}
REPEAT=${REPEAT:-3}
PRELOAD=${PRELOAD:-1000000}
PG_N=${PG_N:-$N}
NAIVE_POOL=${NAIVE_POOL:-16}
SECRET=whsec_bench_not_a_secret
TOKEN=bench-token-not-a-secret
target=${CARGO_TARGET_DIR:-target}
receiver=${RECEIVER:-$target/release/cobalt-receiver}

# PostgreSQL: the base URL, and any ?query kept for every database's URL.
pg_base=${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432}
pg_query=
case $pg_base in *\?*) pg_query="?${pg_base#*\?}" pg_base=${pg_base%%\?*} ;; esac
pg_base=${pg_base%/}
pg_url() { echo "$pg_base/$1$pg_query"; }
# For messages: the base without a password.
pg_shown=$(printf '%s' "$pg_base" | sed -E 's#(://[^:@/]*):[^@/]*@#\1:[redacted]@#')
pg() { PGCONNECT_TIMEOUT=5 psql "$(pg_url postgres)" -X -q -v ON_ERROR_STOP=1 "$@"; }
postgres=yes
if ! command -v psql >/dev/null; then
  pg_error="psql is not installed"
elif ! pg_error=$(pg -tAc 'select 1' 2>&1 >/dev/null); then
  pg_error=$(printf '%s\n' "${pg_error:-no answer}" | head -n 1)
else
  pg_error=
fi
if [ -n "$pg_error" ]; then
  postgres=
  if [ "${CI:-}" = true ]; then
    echo "bench: PostgreSQL at $pg_shown is unreachable ($pg_error); CI=true needs the PostgreSQL rows" >&2
    exit 1
  fi
fi

cargo build --release --locked --quiet --bin cobalt-receiver --example loadgen --example ceiling \
  ${postgres:+--example naive_postgres}
# Two servers, each on its own temporary database: "fresh" and "preloaded"
# (PRELOAD events stored first). Their runs alternate, so a before/after
# pair is measured within seconds: this machine's speed drifts by a third
# over minutes, which a before-then-after sequence would report as a
# difference between the databases. The PostgreSQL runs take their turn
# in the same rounds, so they are compared with each other (and with
# SQLite) within a minute.
root=$(mktemp -d)
fresh_pid='' preloaded_pid='' ceiling_pid='' pg_pids=() pg_databases=()
cleanup() {
  for pid in $fresh_pid $preloaded_pid $ceiling_pid ${pg_pids[@]+"${pg_pids[@]}"}; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  for database in ${pg_databases[@]+"${pg_databases[@]}"}; do
    pg -c "drop database if exists $database with (force)" >/dev/null 2>&1 ||
      echo "bench: could not drop the database $database" >&2
  done
  rm -rf "$root"
}
trap cleanup EXIT
# Per-request log lines are off (warn): at these rates they would be
# hundreds of megabytes.
work=$root/fresh && mkdir "$work"
start_receiver "$receiver"
fresh_pid=$server_pid fresh=$address
work=$root/preloaded && mkdir "$work"
start_receiver "$receiver"
preloaded_pid=$server_pid preloaded=$address
work=$root/ceiling && mkdir "$work"
"$target/release/examples/ceiling" >"$work/server.log" 2>&1 &
server_pid=$!
wait_listening
ceiling_pid=$server_pid ceiling=$address

if [ -n "$postgres" ]; then
  # As start_receiver, for the naive server: sets server_pid and address.
  start_naive() {
    "$target/release/examples/naive_postgres" --database-url "$1" \
      --pool-size "$NAIVE_POOL" --secret "$SECRET" >"$work/server.log" 2>&1 &
    server_pid=$!
    wait_listening
  }
  # A database of each server's own, made for this run and dropped at exit.
  pg_tag=cobalt_bench_$(date +%s)_$$
  db_one=${pg_tag}_one db_two=${pg_tag}_two db_naive=${pg_tag}_naive
  for database in "$db_one" "$db_two" "$db_naive"; do
    pg_databases+=("$database")
    pg -c "create database $database" >/dev/null
  done
  work=$root/pg-one && mkdir "$work"
  start_receiver "$receiver" "$(pg_url "$db_one")"
  pg_pids+=("$server_pid") pg_one_pid=$server_pid pg_one=$address
  work=$root/pg-two-a && mkdir "$work"
  start_receiver "$receiver" "$(pg_url "$db_two")"
  pg_pids+=("$server_pid") pg_two_a_pid=$server_pid pg_two=$address
  work=$root/pg-two-b && mkdir "$work"
  start_receiver "$receiver" "$(pg_url "$db_two")"
  pg_pids+=("$server_pid") pg_two_b_pid=$server_pid pg_two+=",$address"
  work=$root/pg-naive && mkdir "$work"
  start_naive "$(pg_url "$db_naive")"
  pg_pids+=("$server_pid") naive_pid=$server_pid naive=$address
fi

# loadgen ADDRESS[,ADDRESS...] ARGS...: several addresses share the
# connections round-robin.
loadgen() {
  local address=$1
  shift
  "$target/release/examples/loadgen" --url "http://${address//,/,http://}" --secret "$SECRET" --token "$TOKEN" "$@"
}

# Server CPU time (user + system) of the processes PIDS, in clock ticks.
ticks() { local pid total=0; for pid; do total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat"))); done; echo "$total"; }
hz=$(getconf CLK_TCK)
# measured "PIDS" LOADGEN-ARGS...: the loadgen line of one run, with the
# servers' CPU microseconds per request appended (cpu_us=).
measured() {
  local pids=$1 before after line requests
  shift
  # shellcheck disable=SC2086 # PIDS is a list
  before=$(ticks $pids)
  line=$(loadgen "$@")
  # shellcheck disable=SC2086
  after=$(ticks $pids)
  requests=$(printf '%s' "$line" | grep -o 'requests=[0-9]*' | cut -d= -f2)
  printf '%s cpu_us=%s\n' "$line" "$(awk -v t=$((after - before)) -v hz="$hz" -v n="$requests" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }')"
}

# Reads the loadgen's key=value lines; prints the median of each figure.
summarise() {
  awk '
    { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1], NR] = kv[2] } }
    function median(key,   n, i, j, x, a) {
      n = 0
      for (i = 1; i <= NR; i++) {   # insertion sort: a few values, any awk
        x = v[key, i] + 0
        for (j = n; j > 0 && a[j] > x; j--) a[j + 1] = a[j]
        a[j + 1] = x; n++
      }
      return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    END { printf "%d|%.0f|%.2f|%.2f|%.2f|%d|%.1f", v["requests", 1], median("rate"),
          median("p50_ms"), median("p99_ms"), median("max_ms"), median("non_2xx"), median("cpu_us") }'
}

# Each row gathers REPEAT runs' loadgen lines, then is summarised.
declare -A runs
# The servers a row's address list reaches, for their CPU time.
declare -A pids_of
pids_of[$fresh]=$fresh_pid pids_of[$preloaded]=$preloaded_pid pids_of[$ceiling]=$ceiling_pid
ingest() { # ROW ADDRESS CONCURRENCY REQUESTS PREFIX: fresh event ids every time
  runs[$1]+="$(measured "${pids_of[$2]}" "$2" --requests "$4" --concurrency "$3" --prefix "$5")"$'\n'
}
read_jobs() { # ROW ADDRESS PREFIX JOBS [REQUESTS]: GET /v1/jobs/{id} over jobs an ingest created
  runs[$1]+="$(measured "${pids_of[$2]}" "$2" --mode read --requests "${5:-$N}" --concurrency 64 --prefix "$3" --jobs "$4")"$'\n'
}
# Each round's ceiling and service rates at concurrency 64, for the share.
ceiling_rates=() service_rates=()
rate_in() { printf '%s' "$1" | tail -n 1 | grep -o 'rate=[0-9]*' | cut -d= -f2; }
# With 5% duplicates, an ingest of R requests creates R - R/20 jobs.
jobs_of() { echo $(( $1 - $1 / 20 )); }

labels=(
  "ceiling (empty axum server), concurrency 64"
  "ingest, concurrency 1"
  "ingest, concurrency 16"
  "ingest, concurrency 64"
  "read job, concurrency 64"
  "preload of $PRELOAD events, concurrency 64"
  "ingest, concurrency 64, after preload"
  "read job, concurrency 64, after preload"
)
ceiling_row=${labels[0]} c1_row=${labels[1]} c16_row=${labels[2]} c64_row=${labels[3]}
read_row=${labels[4]} preload_row=${labels[5]} after_row=${labels[6]} read_after_row=${labels[7]}
pg_labels=(
  "postgres 1 replica: ingest, concurrency 64"
  "postgres 2 replicas: ingest, concurrency 64"
  "postgres 1 replica: read job, concurrency 64"
  "postgres naive: ingest, concurrency 64"
)
if [ -n "$postgres" ]; then
  labels+=("${pg_labels[@]}")
  pids_of[$pg_one]=$pg_one_pid pids_of[$pg_two]="$pg_two_a_pid $pg_two_b_pid" pids_of[$naive]=$naive_pid
fi
runs[$preload_row]=$(measured "$preloaded_pid" "$preloaded" --requests "$PRELOAD" --concurrency 64 --prefix preload --duplicate-share 0)$'\n'
for r in $(seq "$REPEAT"); do
  ingest "$c1_row" "$fresh" 1 "$N1" "c1-$r"
  ingest "$c16_row" "$fresh" 16 "$N" "c16-$r"
  # The ceiling, then the service at once: the pair the share is made of.
  ingest "$ceiling_row" "$ceiling" 64 "$N" "ceiling-$r"
  ingest "$c64_row" "$fresh" 64 "$N" "c64-$r"
  ceiling_rates+=("$(rate_in "${runs[$ceiling_row]}")") service_rates+=("$(rate_in "${runs[$c64_row]}")")
  ingest "$after_row" "$preloaded" 64 "$N" "after-$r"
  read_jobs "$read_row" "$fresh" c64-1 "$(jobs_of "$N")"
  read_jobs "$read_after_row" "$preloaded" preload "$PRELOAD"
  if [ -n "$postgres" ]; then
    # One replica, two, and the naive design back to back, each on its own
    # database, so the three are compared within seconds of each other.
    ingest "${pg_labels[0]}" "$pg_one" 64 "$PG_N" "pg1-$r"
    ingest "${pg_labels[1]}" "$pg_two" 64 "$PG_N" "pg2-$r"
    ingest "${pg_labels[3]}" "$naive" 64 "$PG_N" "naive-$r"
    read_jobs "${pg_labels[2]}" "$pg_one" pg1-1 "$(jobs_of "$PG_N")" "$PG_N"
  fi
done

hwm() { awk '/VmHWM/ { printf "%d", $2 / 1024 }' "/proc/$1/status"; }
mib() { find "$1" -name 'receiver.db*' -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f", s / 1048576 }'; }
pg_mib() { pg -tAc "select round(pg_database_size('$1') / 1048576.0)"; }
rate_of() { printf '%s' "${runs[$1]}" | summarise | cut -d'|' -f2; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }'; }
# Lines at warn or above in a server's log (its startup line is info).
log_problems() { grep -c -E '\b(WARN|ERROR)\b|storage failed' "$1/server.log" || true; }

echo
echo "cobalt-receiver benchmark: $(nproc) cores, $(date -u +%Y-%m-%d), N=$N N1=$N1 REPEAT=$REPEAT PRELOAD=$PRELOAD${postgres:+ PG_N=$PG_N NAIVE_POOL=$NAIVE_POOL}"
printf '%-44s %9s %9s %8s %8s %8s %8s %9s\n' run requests "per s" "p50 ms" "p99 ms" "max ms" "non-2xx" "CPU us/req"
for label in "${labels[@]}"; do
  IFS='|' read -r requests rate p50 p99 max bad cpu <<<"$(printf '%s' "${runs[$label]}" | summarise)"
  printf '%-44s %9s %9s %8s %8s %8s %8s %9s\n' "$label" "$requests" "$rate" "$p50" "$p99" "$max" "$bad" "$cpu"
done
# The share of each round's pair, then their median.
shares=$(for i in "${!service_rates[@]}"; do ratio "${service_rates[$i]}" "${ceiling_rates[$i]}"; echo; done)
echo "intake at concurrency 64 / ceiling: $(printf '%s\n' "$shares" | sort -n | awk '{ a[NR] = $1 } END { printf "%.2f", (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }')x (median of rounds: $(printf '%s' "$shares" | paste -sd' ' -))"
echo "server peak resident memory: $(hwm "$fresh_pid") MiB fresh, $(hwm "$preloaded_pid") MiB preloaded, $(hwm "$ceiling_pid") MiB ceiling; database on disk: $(mib "$root/fresh") MiB fresh, $(mib "$root/preloaded") MiB preloaded"
if [ -n "$postgres" ]; then
  one=$(rate_of "${pg_labels[0]}") two=$(rate_of "${pg_labels[1]}") naive_rate=$(rate_of "${pg_labels[3]}")
  echo "postgres peak resident memory: $(hwm "$pg_one_pid") MiB 1 replica, $(hwm "$pg_two_a_pid") + $(hwm "$pg_two_b_pid") MiB 2 replicas, $(hwm "$naive_pid") MiB naive; database size: $(pg_mib "$db_one") MiB 1 replica, $(pg_mib "$db_two") MiB 2 replicas, $(pg_mib "$db_naive") MiB naive"
  echo "postgres events/s: 1 replica / naive $(ratio "$one" "$naive_rate")x, 2 replicas / 1 replica $(ratio "$two" "$one")x; server log warnings/errors: $(log_problems "$root/pg-one") 1 replica, $(log_problems "$root/pg-two-a") + $(log_problems "$root/pg-two-b") 2 replicas, $(log_problems "$root/pg-naive") naive"
else
  echo "!!! PostgreSQL rows SKIPPED: $pg_shown is unreachable ($pg_error). To measure them, start PostgreSQL there or set BENCH_POSTGRES_URL=postgres://user@host:port (a user that may create databases). !!!"
fi
