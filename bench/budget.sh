#!/usr/bin/env bash
# The per-event cost guard, run by CI: the service's CPU time per delivery
# against an empty axum server's CPU time per request (examples/ceiling:
# reads the body, answers 200), measured in the same run, in interleaved
# rounds, at concurrency 64, on SQLite with 5% repeated deliveries. The
# ratio is steadier than either figure alone (it divides out the machine's
# speed). Fails when the median ratio exceeds the budget in
# bench/cost-budget.
#
# A change that adds cost to the delivery path raises the budget in the
# same commit, saying why; one that takes cost away lowers it.
#
#   bash bench/budget.sh           # N=20000 EMPTY_N=100000 ROUNDS=7
#
# N: deliveries per run of the service; EMPTY_N: requests per run of the
# empty server (more, so its CPU time spans as many clock ticks: /proc
# counts in hundredths of a second); ROUNDS: interleaved rounds, after one
# warm-up run of each (the median counts).
# CARGO_TARGET_DIR is honoured; RECEIVER measures another receiver binary
# (the guard's own check: a debug build must fail it). The secret and token
# are test values.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=ci/receiver.sh
. ci/receiver.sh

N=${N:-20000}
EMPTY_N=${EMPTY_N:-100000}
ROUNDS=${ROUNDS:-7}
SECRET=whsec_bench_not_a_secret
TOKEN=bench-token-not-a-secret
target=${CARGO_TARGET_DIR:-target}
receiver=${RECEIVER:-$target/release/cobalt-receiver}
budget=$(grep -v '^#' bench/cost-budget | grep -v '^[[:space:]]*$' | head -n 1)

cargo build --release --locked --quiet --bin cobalt-receiver --example loadgen --example ceiling

root=$(mktemp -d)
pids=()
cleanup() {
  for pid in ${pids[@]+"${pids[@]}"}; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$root"
}
trap cleanup EXIT

work=$root/service && mkdir "$work"
start_receiver "$receiver"
service_pid=$server_pid service=$address
pids+=("$service_pid")
work=$root/ceiling && mkdir "$work"
"$target/release/examples/ceiling" >"$work/server.log" 2>&1 &
server_pid=$!
pids+=("$server_pid")
wait_listening
ceiling_pid=$server_pid ceiling=$address

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# cpu_per_request PID ADDRESS PREFIX REQUESTS: runs the requests, prints
# the server's CPU clock ticks per 1,000 requests.
cpu_per_request() {
  local before after
  before=$(ticks "$1")
  "$target/release/examples/loadgen" --url "http://$2" --secret "$SECRET" --token "$TOKEN" \
    --requests "$4" --concurrency 64 --prefix "$3" >"$root/last.txt"
  grep -qE '(^| )non_2xx=0( |$)' "$root/last.txt" || {
    cat "$root/last.txt" >&2
    echo "bench/budget.sh: requests failed" >&2
    exit 1
  }
  after=$(ticks "$1")
  awk -v t=$((after - before)) -v n="$4" 'BEGIN { printf "%.4f", t * 1000 / n }'
}

hz=$(getconf CLK_TCK)
ratios=()
cpu_per_request "$ceiling_pid" "$ceiling" warm "$EMPTY_N" >/dev/null
cpu_per_request "$service_pid" "$service" warm "$N" >/dev/null
for r in $(seq "$ROUNDS"); do
  empty=$(cpu_per_request "$ceiling_pid" "$ceiling" "ceiling-$r" "$EMPTY_N")
  full=$(cpu_per_request "$service_pid" "$service" "budget-$r" "$N")
  ratio=$(awk -v a="$full" -v b="$empty" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 999 }')
  ratios+=("$ratio")
  awk -v a="$full" -v b="$empty" -v hz="$hz" -v r="$r" -v x="$ratio" 'BEGIN {
    printf "round %d: service %.1f us/event, empty server %.1f us/request, ratio %s\n",
      r, a * 1e6 / hz / 1000, b * 1e6 / hz / 1000, x }'
done
median=$(printf '%s\n' "${ratios[@]}" | sort -n |
  awk '{ a[NR] = $1 } END { printf "%.2f", (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }')
echo "CPU per event / empty server's CPU per request: median ${median}x (budget ${budget}x)"
if awk -v m="$median" -v b="$budget" 'BEGIN { exit !(m > b) }'; then
  echo "bench/budget.sh: the delivery path costs more than its budget (bench/cost-budget)." >&2
  echo "Take the cost back, or raise the budget in the same commit and say why." >&2
  exit 1
fi
