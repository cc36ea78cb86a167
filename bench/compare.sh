#!/usr/bin/env bash
# Several receiver builds, and the empty server, in one interleaved run:
# SQLite, concurrency 64, 5% repeated deliveries. Each build gets a server
# on a fresh database; every round drives each of them in turn, so the
# machine's drift reaches all alike. Prints, per round and build, the
# server's CPU time per request (µs, from /proc/<pid>/stat) and the load
# generator's line; then each build's medians over the rounds after the
# first (a warm-up).
#
#   BINS="old=/tmp/old-target/release/cobalt-receiver new=target/release/cobalt-receiver" bash bench/compare.sh
#   BINS="empty=ceiling d8c17c8=/tmp/d8/cobalt-receiver new=target/release/cobalt-receiver" bash bench/compare.sh
#
# BINS: NAME=BINARY pairs; the binary `ceiling` is examples/ceiling (an
# axum server that reads the body and answers 200). N: deliveries a run
# (30000; the empty server gets EMPTY_N, 100000, so its CPU time spans
# enough clock ticks); ROUNDS (5, after the warm-up). The secret and token
# are test values.
set -euo pipefail
cd "$(dirname "$0")/.."
. ci/receiver.sh
SECRET=whsec_bench_not_a_secret
TOKEN=bench-token-not-a-secret
BINS=${BINS:?NAME=BINARY pairs, e.g. old=/tmp/old/cobalt-receiver new=target/release/cobalt-receiver}
N=${N:-30000} EMPTY_N=${EMPTY_N:-100000} ROUNDS=${ROUNDS:-5}
target=${CARGO_TARGET_DIR:-target}
cargo build --release --locked --quiet --example loadgen --example ceiling

root=$(mktemp -d)
declare -A pid addr
names=()
cleanup() {
  for name in ${names[@]+"${names[@]}"}; do kill "${pid[$name]}" 2>/dev/null || true; done
  rm -rf "$root"
}
trap cleanup EXIT
for pair in $BINS; do
  name=${pair%%=*} binary=${pair#*=}
  names+=("$name")
  work=$root/$name && mkdir "$work"
  if [ "$binary" = ceiling ]; then
    "$target/release/examples/ceiling" >"$work/server.log" 2>&1 &
    server_pid=$!
    wait_listening
  else
    start_receiver "$binary"
  fi
  pid[$name]=$server_pid addr[$name]=$address
done

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
results=$root/results
for round in $(seq 0 "$ROUNDS"); do
  for pair in $BINS; do
    name=${pair%%=*} binary=${pair#*=}
    n=$N
    [ "$binary" = ceiling ] && n=$EMPTY_N
    before=$(ticks "${pid[$name]}")
    line=$("$target/release/examples/loadgen" --url "http://${addr[$name]}" --secret "$SECRET" \
      --token "$TOKEN" --requests "$n" --concurrency 64 --prefix "$name-$round")
    after=$(ticks "${pid[$name]}")
    cpu=$(awk -v t=$((after - before)) -v n="$n" -v hz="$hz" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }')
    echo "round $round $name cpu_us=$cpu $line"
    [ "$round" -gt 0 ] && echo "$name $cpu $line" >>"$results"
  done
done

median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
field() { grep -o "$1=[0-9.]*" | cut -d= -f2; }
echo "medians over rounds 1-$ROUNDS:"
for name in "${names[@]}"; do
  rows=$(grep "^$name " "$results")
  printf '%-12s cpu_us=%s rate=%s p99_ms=%s\n' "$name" \
    "$(awk '{ print $2 }' <<<"$rows" | median)" \
    "$(field rate <<<"$rows" | median)" \
    "$(field p99_ms <<<"$rows" | median)"
done
