#!/usr/bin/env bash
# A/B of two builds of the receiver: OLD (e.g. a release build of an older
# commit, made in a git worktree) against NEW (default: this tree's release
# build), with the same load generator, in interleaved rounds, each on a
# fresh SQLite file and a fresh PostgreSQL database. Prints, per round, the
# loadgen line of an ingest and of a read run, and the server's CPU time
# per event (from /proc/<pid>/stat).
#
#   cargo build --release --bin cobalt-receiver --example loadgen
#   git worktree add /tmp/old <commit> && (cd /tmp/old && CARGO_TARGET_DIR=/tmp/old-target cargo build --release --bin cobalt-receiver)
#   OLD=/tmp/old-target/release/cobalt-receiver bash bench/ab.sh
#
# OLD_ENV / NEW_ENV: settings for one side only (VAR=value, space-separated),
# e.g. the same build with and without a key:
#   OLD=target/release/cobalt-receiver NEW_ENV=COBALT_RECEIVER_ENCRYPTION_KEYS=k1:… bash bench/ab.sh
#
# N: requests per run (30000); ROUNDS (3). PostgreSQL at
# postgres://postgres@127.0.0.1:5432 (databases ab_old and ab_new are made
# and dropped). The secret and token are test values.
set -euo pipefail
cd "$(dirname "$0")/.."
. ci/receiver.sh
OLD=${OLD:?the binary to compare against, e.g. a release build of an older commit}
NEW=${NEW:-target/release/cobalt-receiver}
LOADGEN=${LOADGEN:-target/release/examples/loadgen}
N=${N:-30000} ROUNDS=${ROUNDS:-3}
PG=${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432}
SECRET=whsec_bench_not_a_secret TOKEN=bench-token-not-a-secret
root=$(mktemp -d)
work=$root
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; for d in ab_old ab_new; do psql "$PG/postgres" -qc "drop database if exists $d with (force)" >/dev/null 2>&1 || true; done; rm -rf "$root"; }
trap cleanup EXIT
declare -A addr pid
for v in old new; do
  bin=$OLD RECEIVER_ENV=${OLD_ENV:-}; [ $v = new ] && bin=$NEW RECEIVER_ENV=${NEW_ENV:-}
  work=$root/sq-$v; mkdir -p "$work"; start_receiver "$bin"; addr[sq-$v]=$address pid[sq-$v]=$server_pid; pids+=("$server_pid")
  psql "$PG/postgres" -qc "drop database if exists ab_$v with (force)" >/dev/null; psql "$PG/postgres" -qc "create database ab_$v" >/dev/null
  work=$root/pg-$v; mkdir -p "$work"; start_receiver "$bin" "$PG/ab_$v"; addr[pg-$v]=$address pid[pg-$v]=$server_pid; pids+=("$server_pid")
done
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
for r in $(seq "$ROUNDS"); do
  for eng in sq pg; do
    for v in old new; do
      k=$eng-$v; before=$(cpu "${pid[$k]}")
      line=$("$LOADGEN" --url "http://${addr[$k]}" --secret "$SECRET" --token "$TOKEN" --requests "$N" --concurrency 64 --prefix "ab$r" )
      after=$(cpu "${pid[$k]}")
      rline=$("$LOADGEN" --url "http://${addr[$k]}" --secret "$SECRET" --token "$TOKEN" --mode read --requests "$N" --concurrency 64 --prefix "ab$r" --jobs $((N - N/20)))
      echo "$k round=$r ingest $line cpu_us_per_event=$(( (after - before) * 10000 / N )) | read $rline"
    done
  done
done
