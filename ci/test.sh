#!/usr/bin/env bash
# The test command: every test on the SQLite engine, then the end-to-end
# suite again on PostgreSQL (each test on a database of its own, cloned
# from a migrated template; see tests/api/database.rs). Without a
# PostgreSQL server the second pass is skipped, loudly, except in CI
# (CI=true), where that is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

# Tests that skip write why to this file; each pass ends with the list.
skips=$(mktemp)
trap 'rm -f "$skips"' EXIT
export COBALT_TEST_SKIP_LOG=$skips
report_skips() {
  echo "== tests skipped in the $1 pass:"
  if [ -s "$skips" ]; then sort "$skips"; else echo "(none)"; fi
  : >"$skips"
}

cargo test --locked
report_skips SQLite
if bash ci/postgres.sh; then
  COBALT_TEST_ENGINE=postgres cargo test --locked --test api
  report_skips PostgreSQL
elif [ "${CI:-}" = true ]; then
  echo "ci/test.sh: PostgreSQL cannot be reached on 127.0.0.1:5432; the PostgreSQL pass must run in CI" >&2
  exit 1
else
  echo "######################################################################" >&2
  echo "SKIPPED: the PostgreSQL pass of the suite. No server answers on" >&2
  echo "127.0.0.1:5432 and none could be started. Install or start PostgreSQL" >&2
  echo "(or point COBALT_TEST_POSTGRES_URL at one) and run ci/test.sh again." >&2
  echo "######################################################################" >&2
fi
