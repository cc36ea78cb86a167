#!/usr/bin/env bash
# Commits per writer batch on PostgreSQL, with and without repeated
# deliveries: for each binary (OLD, if given, and NEW), an ingest run at
# duplicate shares 0 and 0.05 against a fresh database, then the database's
# committed transactions (pg_stat_database.xact_commit, which also counts
# the service's few other statements) set against the writer's batches
# (cobalt_receiver_writer_batch_size_count in /metrics).
#
#   cargo build --release --bin cobalt-receiver --example loadgen
#   [OLD=/tmp/old-target/release/cobalt-receiver] bash bench/commits.sh
#
# N: requests per run (20000). PostgreSQL at
# postgres://postgres@127.0.0.1:5432 (database commits_bench is made and
# dropped). The secret and token are test values.
set -euo pipefail
cd "$(dirname "$0")/.."
. ci/receiver.sh
NEW=${NEW:-target/release/cobalt-receiver}
LOADGEN=${LOADGEN:-target/release/examples/loadgen}
N=${N:-20000}
PG=${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432}
SECRET=whsec_bench_not_a_secret TOKEN=bench-token-not-a-secret
DB=commits_bench
work=$(mktemp -d)
cleanup() { stop_receiver; psql "$PG/postgres" -qc "drop database if exists $DB with (force)" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

commits() { psql "$PG/postgres" -Atc "select pg_stat_force_next_flush(); select xact_commit from pg_stat_database where datname = '$DB'" | tail -1; }
# (No batch yet: no series yet, so 0.)
batches() { curl -s -H "authorization: Bearer $TOKEN" "http://$address/metrics" | awk '/^cobalt_receiver_writer_batch_size_count/ {n = $2} END {print n + 0}'; }

for version in ${OLD:+old} new; do
  binary=$NEW; [ "$version" = old ] && binary=$OLD
  for share in 0 0.05; do
    psql "$PG/postgres" -qc "drop database if exists $DB with (force)" >/dev/null
    psql "$PG/postgres" -qc "create database $DB" >/dev/null
    start_receiver "$binary" "$PG/$DB"
    commits_before=$(commits) batches_before=$(batches)
    line=$("$LOADGEN" --url "http://$address" --secret "$SECRET" --token "$TOKEN" --requests "$N" --concurrency 64 --duplicate-share "$share" --prefix "c$share")
    batches_after=$(batches)
    # Backends report their counts when they end.
    stop_receiver
    sleep 1
    commits_after=$(commits)
    made=$((commits_after - commits_before)) ran=$((${batches_after%.*} - ${batches_before%.*}))
    echo "$version duplicate_share=$share batches=$ran commits=$made commits_per_batch=$(awk "BEGIN {printf \"%.2f\", $made / $ran}") | $line"
  done
done
