#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers on 127.0.0.1:5432 for the tests:
# starts the installed cluster if it is stopped, installs PostgreSQL from
# Debian's packages if it is absent (a fresh cluster then trusts local
# TCP connections: it holds test data only). PostgreSQL refuses to run as
# root; Debian's pg_ctlcluster starts it as the `postgres` user.
# Exit 0 when it answers, 1 when it cannot be made to.
set -uo pipefail

ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }

wait_ready() {
  for _ in $(seq 1 60); do
    ready && return 0
    sleep 0.5
  done
  return 1
}

command -v pg_isready >/dev/null && ready && exit 0

if ! command -v pg_ctlcluster >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "ci/postgres.sh: installing PostgreSQL from Debian's packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -q && apt-get install -y -q postgresql; } >/dev/null || exit 1
    installed=1
  else
    echo "ci/postgres.sh: PostgreSQL is not installed, and cannot be installed here (needs root and apt-get)" >&2
    exit 1
  fi
fi

# The first cluster Debian knows (version and name).
read -r version cluster _ < <(pg_lsclusters --no-header | head -n 1)
if [ -z "${version:-}" ]; then
  echo "ci/postgres.sh: no PostgreSQL cluster exists" >&2
  exit 1
fi
if [ "${installed:-0}" = 1 ]; then
  hba=/etc/postgresql/$version/$cluster/pg_hba.conf
  sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
fi
echo "ci/postgres.sh: starting PostgreSQL $version/$cluster" >&2
pg_ctlcluster --skip-systemctl-redirect "$version" "$cluster" start >&2 || true
wait_ready
