#!/usr/bin/env bash
# Ingest and read benchmark. Builds release, starts the server on a
# temporary database, drives it with examples/loadgen over loopback, and
# prints one table of medians.
#
#   bash bench/run.sh                                    # the full run
#   N=300 N1=50 REPEAT=1 PRELOAD=500 bash bench/run.sh   # a smoke run
#
# N: requests per run at concurrency 16 and 64, and per read run;
# N1: requests at concurrency 1; REPEAT: runs per row (each figure in the
# table is the median of its runs); PRELOAD: events stored before the
# "after preload" rows. The secret and token are test values.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=ci/receiver.sh
. ci/receiver.sh

N=${N:-100000}
N1=${N1:-5000}
REPEAT=${REPEAT:-3}
PRELOAD=${PRELOAD:-1000000}
SECRET=whsec_bench_not_a_secret
TOKEN=bench-token-not-a-secret

cargo build --release --locked --quiet --bin cobalt-receiver --example loadgen
work=$(mktemp -d)
cleanup() {
  stop_receiver
  rm -rf "$work"
}
trap cleanup EXIT
# Per-request log lines are off (warn): at these rates they would be
# hundreds of megabytes.
start_receiver target/release/cobalt-receiver

loadgen() {
  target/release/examples/loadgen --url "http://$address" --secret "$SECRET" --token "$TOKEN" "$@"
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
    END { printf "%d|%.0f|%.2f|%.2f|%.2f|%d", v["requests", 1], median("rate"),
          median("p50_ms"), median("p99_ms"), median("max_ms"), median("non_2xx") }'
}

rows=()
# ingest LABEL CONCURRENCY REQUESTS PREFIX: fresh event ids for every run.
ingest() {
  local out=
  for r in $(seq "$REPEAT"); do
    out+="$(loadgen --requests "$3" --concurrency "$2" --prefix "$4$r")"$'\n'
  done
  rows+=("$1|$(printf '%s' "$out" | summarise)")
}
# read LABEL PREFIX JOBS: GET /v1/jobs/{id} over jobs an ingest created.
read_jobs() {
  local out=
  for _ in $(seq "$REPEAT"); do
    out+="$(loadgen --mode read --requests "$N" --concurrency 64 --prefix "$2" --jobs "$3")"$'\n'
  done
  rows+=("$1|$(printf '%s' "$out" | summarise)")
}

# With 5% duplicates, an ingest of R requests creates R - R/20 jobs.
jobs_of() { echo $(( $1 - $1 / 20 )); }

ingest "ingest, concurrency 1" 1 "$N1" c1-
ingest "ingest, concurrency 16" 16 "$N" c16-
ingest "ingest, concurrency 64" 64 "$N" c64-
read_jobs "read job, concurrency 64" c64-1 "$(jobs_of "$N")"

preload_line=$(loadgen --requests "$PRELOAD" --concurrency 64 --prefix preload --duplicate-share 0)
rows+=("preload of $PRELOAD events, concurrency 64|$(printf '%s\n' "$preload_line" | summarise)")
ingest "ingest, concurrency 64, after preload" 64 "$N" after-
read_jobs "read job, concurrency 64, after preload" preload "$PRELOAD"

rss_kib=$(awk '/VmHWM/ { print $2 }' "/proc/$server_pid/status")
events=$(find "$work" -name 'receiver.db*' -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f", s / 1048576 }')

echo
echo "cobalt-receiver benchmark: $(nproc) cores, $(date -u +%Y-%m-%d), N=$N N1=$N1 REPEAT=$REPEAT PRELOAD=$PRELOAD"
printf '%-44s %9s %9s %8s %8s %8s %8s\n' run requests "per s" "p50 ms" "p99 ms" "max ms" "non-2xx"
for row in "${rows[@]}"; do
  IFS='|' read -r label requests rate p50 p99 max bad <<<"$row"
  printf '%-44s %9s %9s %8s %8s %8s %8s\n' "$label" "$requests" "$rate" "$p50" "$p99" "$max" "$bad"
done
echo "server peak resident memory: $((rss_kib / 1024)) MiB; database on disk: $events MiB"
