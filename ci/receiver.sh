# Sourced by bench/run.sh and ci/schemathesis.sh: starts a receiver binary
# on a free loopback port with a database in "$work", and sets
# server_pid and address. Needs: work, SECRET, TOKEN, and the binary's path.
#   start_receiver BINARY [DATABASE_URL]
# DATABASE_URL (e.g. postgres://...) replaces the SQLite file in "$work";
# the log is in "$work" either way. RECEIVER_ENV adds settings
# (VAR=value, space-separated), e.g. a key in COBALT_RECEIVER_ENCRYPTION_KEYS.
start_receiver() {
  local binary=$1 database_url=${2:-sqlite://$work/receiver.db}
  # shellcheck disable=SC2086 # RECEIVER_ENV is a list of assignments
  env ${RECEIVER_ENV:-} \
  COBALT_RECEIVER_LISTEN=127.0.0.1:0 \
  COBALT_RECEIVER_DATABASE_URL="$database_url" \
  COBALT_RECEIVER_WEBHOOK_SECRETS=$SECRET \
  COBALT_RECEIVER_API_TOKENS=$TOKEN \
  RUST_LOG=${RECEIVER_LOG:-warn,cobalt_receiver::startup=info} \
    "$binary" >"$work/server.log" 2>&1 &
  server_pid=$!
  wait_listening
}

# Waits until the server started last says where it listens (the
# "listening address=…" line in "$work/server.log") and sets address.
wait_listening() {
  address=
  for _ in $(seq 100); do
    address=$(grep -o 'listening address=[0-9.:]*' "$work/server.log" | cut -d= -f2 || true)
    [ -n "$address" ] && return 0
    sleep 0.1
  done
  cat "$work/server.log" >&2
  echo "the server did not start" >&2
  return 1
}

stop_receiver() {
  if [ -n "${server_pid:-}" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
}
