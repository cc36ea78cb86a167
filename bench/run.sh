#!/usr/bin/env bash
# Ingest and read benchmark. Builds release, starts two servers on
# temporary databases (one fresh, one preloaded), drives them with
# examples/loadgen over loopback, and prints one table of medians.
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
# Two servers, each on its own temporary database: "fresh" and "preloaded"
# (PRELOAD events stored first). Their runs alternate, so a before/after
# pair is measured within seconds: this machine's speed drifts by a third
# over minutes, which a before-then-after sequence would report as a
# difference between the databases.
root=$(mktemp -d)
fresh_pid='' preloaded_pid=''
cleanup() {
  for pid in $fresh_pid $preloaded_pid; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$root"
}
trap cleanup EXIT
# Per-request log lines are off (warn): at these rates they would be
# hundreds of megabytes.
work=$root/fresh && mkdir "$work"
start_receiver target/release/cobalt-receiver
fresh_pid=$server_pid fresh=$address
work=$root/preloaded && mkdir "$work"
start_receiver target/release/cobalt-receiver
preloaded_pid=$server_pid preloaded=$address

# loadgen ADDRESS ARGS...
loadgen() {
  local address=$1
  shift
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

# Each row gathers REPEAT runs' loadgen lines, then is summarised.
declare -A runs
ingest() { # ROW ADDRESS CONCURRENCY REQUESTS PREFIX: fresh event ids every time
  runs[$1]+="$(loadgen "$2" --requests "$4" --concurrency "$3" --prefix "$5")"$'\n'
}
read_jobs() { # ROW ADDRESS PREFIX JOBS: GET /v1/jobs/{id} over jobs an ingest created
  runs[$1]+="$(loadgen "$2" --mode read --requests "$N" --concurrency 64 --prefix "$3" --jobs "$4")"$'\n'
}
# With 5% duplicates, an ingest of R requests creates R - R/20 jobs.
jobs_of() { echo $(( $1 - $1 / 20 )); }

labels=(
  "ingest, concurrency 1"
  "ingest, concurrency 16"
  "ingest, concurrency 64"
  "read job, concurrency 64"
  "preload of $PRELOAD events, concurrency 64"
  "ingest, concurrency 64, after preload"
  "read job, concurrency 64, after preload"
)
runs[${labels[4]}]=$(loadgen "$preloaded" --requests "$PRELOAD" --concurrency 64 --prefix preload --duplicate-share 0)$'\n'
for r in $(seq "$REPEAT"); do
  ingest "${labels[0]}" "$fresh" 1 "$N1" "c1-$r"
  ingest "${labels[1]}" "$fresh" 16 "$N" "c16-$r"
  ingest "${labels[2]}" "$fresh" 64 "$N" "c64-$r"
  ingest "${labels[5]}" "$preloaded" 64 "$N" "after-$r"
  read_jobs "${labels[3]}" "$fresh" c64-1 "$(jobs_of "$N")"
  read_jobs "${labels[6]}" "$preloaded" preload "$PRELOAD"
done

hwm() { awk '/VmHWM/ { printf "%d", $2 / 1024 }' "/proc/$1/status"; }
mib() { find "$1" -name 'receiver.db*' -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f", s / 1048576 }'; }

echo
echo "cobalt-receiver benchmark: $(nproc) cores, $(date -u +%Y-%m-%d), N=$N N1=$N1 REPEAT=$REPEAT PRELOAD=$PRELOAD"
printf '%-44s %9s %9s %8s %8s %8s %8s\n' run requests "per s" "p50 ms" "p99 ms" "max ms" "non-2xx"
for label in "${labels[@]}"; do
  IFS='|' read -r requests rate p50 p99 max bad <<<"$(printf '%s' "${runs[$label]}" | summarise)"
  printf '%-44s %9s %9s %8s %8s %8s %8s\n' "$label" "$requests" "$rate" "$p50" "$p99" "$max" "$bad"
done
echo "server peak resident memory: $(hwm "$fresh_pid") MiB fresh, $(hwm "$preloaded_pid") MiB preloaded; database on disk: $(mib "$root/fresh") MiB fresh, $(mib "$root/preloaded") MiB preloaded"
