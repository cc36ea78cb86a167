#!/usr/bin/env bash
# Operator console latency with a large history. For each engine: makes a
# database, migrates it with the binary, seeds JOBS jobs over DAYS days
# (their events, payloads within retention, repeated deliveries, registered
# jobs, a few thousand pending ones, an audit trail), starts the binary
# with the console on, signs in, and times every console page: REQUESTS
# requests one at a time (after WARMUP), then REQUESTS more from
# CONCURRENCY clients at once, each on its own keep-alive connection.
#
#   CARGO_TARGET_DIR=/tmp/console-bench-target cargo build --release --bin cobalt-receiver
#   BIN=/tmp/console-bench-target/release/cobalt-receiver bash bench/console.sh
#   ENGINE=sqlite JOBS=100000 REQUESTS=50 bash bench/console.sh   # a quick run
#
# BIN: the binary (default target/release/cobalt-receiver; nothing is
# built here). ENGINE: sqlite, postgres or both (default both). JOBS
# (1000000), DAYS (90), PENDING: registered jobs without an outcome
# (3000), AUDIT_ROWS (default JOBS: about one status read per job).
# REQUESTS (200), WARMUP (20), CONCURRENCY (4), PAGE_SECONDS: most seconds
# one pass over a page may take before it stops early (60).
# ANALYZE=1 (default) runs ANALYZE (SQLite) or VACUUM ANALYZE (PostgreSQL)
# after seeding: what autovacuum gives a PostgreSQL database that has
# lived. The server never analyzes a SQLite file, so ANALYZE=0 is how
# SQLite runs unless an operator did it (Python's SQLite writes
# sqlite_stat1 only; the server's, built with STAT4, would add stat4).
# KEEP=DIR keeps the seeded SQLite file and PostgreSQL database (named in
# DIR/postgres.url) and reuses them on the next run with the same DIR.
# BENCH_POSTGRES_URL: the PostgreSQL server, without a database (default
# postgres://postgres@127.0.0.1:5432; a user that may create databases).
#
# Prints, per engine: the seeding time and database size; one row per page
# (status seen, bytes, p50/p99/max in ms one at a time and at CONCURRENCY,
# a mark on pages over 50 ms at p99) and the path each row asked for; the
# CSV export of one day's failures (time and size: a download, not a
# page); the server's peak memory and the kinds of warning it logged.
# About 25 minutes for both engines at a million jobs on 2 cores. Data is
# synthetic; the token and secret are test values.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/release/cobalt-receiver}
ENGINE=${ENGINE:-both}
JOBS=${JOBS:-1000000}
DAYS=${DAYS:-90}
PENDING=${PENDING:-3000}
AUDIT_ROWS=${AUDIT_ROWS:-$JOBS}
REQUESTS=${REQUESTS:-200}
WARMUP=${WARMUP:-20}
CONCURRENCY=${CONCURRENCY:-4}
PAGE_SECONDS=${PAGE_SECONDS:-60}
ANALYZE=${ANALYZE:-1}
KEEP=${KEEP:-}
# The seeded history ends now (the generator's clock, shared by the engines).
NOW=$(date +%s)
SECRET=whsec_bench_not_a_secret
TOKEN=console-bench-token-not-a-secret
PG=${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432}
PG=${PG%/}

[ -x "$BIN" ] || { echo "console.sh: no binary at $BIN (set BIN=...)" >&2; exit 1; }
case $ENGINE in sqlite) engines=(sqlite) ;; postgres) engines=(postgres) ;; both) engines=(sqlite postgres) ;;
  *) echo "console.sh: ENGINE must be sqlite, postgres or both" >&2; exit 1 ;; esac
command -v python3 >/dev/null || { echo "console.sh: needs python3" >&2; exit 1; }

root=$(mktemp -d)
server_pid='' dropped_db=''
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  if [ -n "$dropped_db" ]; then
    psql "$PG/postgres" -X -q -c "drop database if exists $dropped_db with (force)" >/dev/null 2>&1 ||
      echo "console.sh: could not drop the database $dropped_db" >&2
  fi
  rm -rf "$root"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The data generator: deterministic (fixed seed and NOW), so both engines
# of one run hold the same jobs. Writes a SQLite file directly, or files for PostgreSQL's COPY.
cat >"$root/seed.py" <<'PY'
import itertools, json, os, random, sqlite3, sys, time

sink, target = sys.argv[1], sys.argv[2]
N = int(os.environ["JOBS"]); DAYS = int(os.environ["DAYS"])
PENDING = int(os.environ["PENDING"]); AUDIT = int(os.environ["AUDIT_ROWS"])
RETENTION = 30 * 86400  # payload_retention_days' default: older payloads are purged
rng = random.Random(20261130)
now = float(os.environ["NOW"])
start = now - DAYS * 86400

def hexid(bits): return "%0*x" % (bits // 4, rng.getrandbits(bits))
def uuid():
    h = hexid(128)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"
def stamp(t):  # RFC 3339 UTC, microseconds (as received_at / submitted_at)
    s = int(t)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + ".%06dZ" % int((t - s) * 1e6)
def second(s): return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(s))  # Cobalt's `created`
def zipf(n, s): return list(itertools.accumulate(1 / (k ** s) for k in range(1, n + 1)))

REASONS = ["Failed to create patient note", "EMR session expired", "Encounter is locked",
    "Patient not found in EMR", "EMR request timed out", "Provider not authorized for location",
    "Note type not enabled", "Appointment not found", "Duplicate note detected",
    "EMR rate limit exceeded", "Invalid location", "Patient chart is archived",
    "Signature required", "Attachment too large", "Template not found",
    "EMR maintenance window", "Invalid MRN format", "Encounter date out of range",
    "Provider account disabled", "Unsupported character in note"]
REASON_W = zipf(len(REASONS), 1.3)
LOCATIONS = [uuid() for _ in range(50)]
LOCATION_W = zipf(len(LOCATIONS), 0.8)
ACCOUNTS = ["user_" + hexid(80) for _ in range(5)]
ACCOUNT_W = list(itertools.accumulate([40, 25, 15, 12, 8]))
NOTE = ("Patient reports feeling well since last visit. No new concerns to report. Blood "
        "pressure within range; continue current medication and follow up in three months. "
        "Discussed diet and exercise; patient agrees with the plan.")

# Outcomes by hour: clinic hours weigh most, weekends little; one busy
# weekday about ten days ago carries three times a normal day.
buckets, weights = [], []
busy_day = None
for d in range(DAYS + 1):
    day0 = (int(start) // 86400 + d) * 86400
    wd = time.gmtime(day0).tm_wday
    w_day = {5: 0.35, 6: 0.2}.get(wd, 1.0)
    if busy_day is None and wd < 5 and day0 >= now - 11 * 86400:
        busy_day, w_day = day0, 3.0
    for h in range(24):
        b0, b1 = max(day0 + h * 3600, start), min(day0 + (h + 1) * 3600, now)
        if b1 <= b0: continue
        w_h = 1.0 if 13 <= h <= 23 else (0.4 if h in (11, 12, 0, 1) else 0.08)
        buckets.append((b0, b1 - b0)); weights.append(w_day * w_h * (b1 - b0) / 3600)
created = sorted(int(b0 + rng.random() * span) for b0, span in rng.choices(buckets, weights, k=N))

jobs, events, expected, repeats = [], [], [], []
emr_sample = job_with_events = None
for i, c in enumerate(created):
    job_id = str(70_000_000 + i)
    note = "%08x" % c + hexid(64)
    account = rng.choices(ACCOUNTS, cum_weights=ACCOUNT_W)[0]
    received = c + 0.3 + rng.random() * 2
    failed = rng.random() < 0.10
    attempt = 2 if rng.random() < 0.02 else 1
    if attempt == 2: received += 60 + rng.random() * 240
    source = "recovered" if rng.random() < 0.01 else "webhook"
    if source == "recovered": received += 1200 + rng.random() * 1200; attempt = None
    evt = "evt_" + hexid(96)
    data = {"patient_note_id": note}
    if failed:
        reason = rng.choices(REASONS, cum_weights=REASON_W)[0]
        reasons = (json.dumps([{"code": reason.lower().replace(" ", "_")[:24], "description": reason}])
                   if rng.random() < 0.7 else None)
        data["failure_reason"] = reason
        if reasons: data["reasons"] = json.loads(reasons)
        emr = mrn = location = None
    else:
        reason = reasons = None
        emr, mrn = uuid(), "MRN-%08d" % rng.randrange(200_000)
        location = rng.choices(LOCATIONS, cum_weights=LOCATION_W)[0]
        data.update(emr_note_id=emr, patient_mrn=mrn, location_id=location,
                    subject="Wellness check-in", note=NOTE)
    kind = "patient_note.failed" if failed else "patient_note.created"
    first = received
    # A few created notes failed first (Cobalt retried): two events.
    if not failed and rng.random() < 0.04:
        fc = c - 60 - rng.randrange(1800); first = fc + 0.5
        fe = "evt_" + hexid(96)
        fdata = {"patient_note_id": note, "failure_reason": "EMR request timed out"}
        events.append((first, fe, "patient_note.failed", job_id, note, second(fc), 1, "applied",
                       "webhook", {"id": fe, "access_token_reference_id": account, "object": "event",
                                   "created": second(fc), "type": "patient_note.failed",
                                   "job_id": job_id, "data": fdata}))
        if job_with_events is None and c > now - 86400 * 3: job_with_events = job_id
    events.append((received, evt, kind, job_id, note, second(c), attempt, "applied", source,
                   {"id": evt, "access_token_reference_id": account, "object": "event",
                    "created": second(c), "type": kind, "job_id": job_id, "data": data}))
    # Cobalt sometimes delivers an event again (a retry of a delivery it
    # thought lost): stored once, each repeat noted.
    if source == "webhook" and (rng.random() < 0.02 or job_with_events == job_id):
        repeats.append((evt, stamp(received + 5 + rng.random() * 600), (attempt or 1) + 1))
    jobs.append((note, job_id, "failed" if failed else "created", emr, reason, reasons, mrn,
                 location, account, evt, second(c), c * 1_000_000_000, stamp(first), stamp(received)))
    if emr and emr_sample is None and c > now - 86400 * 20: emr_sample = emr
    if rng.random() < 0.2:  # submitted through this service, outcome in
        sub = c - 5 - rng.random() * 85
        expected.append((job_id, note, stamp(sub), int(sub * 1e9), account, "clinic-app", 1))
for k in range(PENDING):  # registered, no outcome: most are stuck (overdue)
    sub = now - (rng.random() ** 2) * 14 * 86400 if k % 10 else now - rng.random() * 3600
    expected.append((str(90_000_000 + k), "%08x" % int(sub) + hexid(64), stamp(sub), int(sub * 1e9),
                     rng.choices(ACCOUNTS, cum_weights=ACCOUNT_W)[0], "clinic-app", 0))
expected.sort(key=lambda e: e[3])
events.sort(key=lambda e: e[0])
cutoff = now - RETENTION
swept = sum(1 for e in events if e[0] < cutoff)  # seq is 1-based arrival order

ACTIONS = [("clinic-app", "api.job.read", 9000), ("clinic-app", "api.note.read", 400),
           ("ops", "console.jobs.view", 250), ("ops", "console.job.view", 150),
           ("ops", "console.today.view", 100), ("alice", "console.jobs.view", 60),
           ("ops", "console.search", 30), ("ops", "console.sign_in", 8),
           ("ops", "console.export", 2), ("ops", "console.mrn.reveal", 1)]
ACTION_W = list(itertools.accumulate(a[2] for a in ACTIONS))
audit_at = sorted(start + rng.random() * (now - start - 600) for _ in range(AUDIT))
def audit_rows():
    for t in audit_at:
        actor, action, _ = rng.choices(ACTIONS, cum_weights=ACTION_W)[0]
        target = {"api.job.read": lambda: str(70_000_000 + rng.randrange(N)),
                  "console.job.view": lambda: str(70_000_000 + rng.randrange(N)),
                  "console.jobs.view": lambda: "status=failed",
                  "console.today.view": lambda: time.strftime("%Y-%m-%d", time.gmtime(t))}.get(action, lambda: "")()
        yield (stamp(t), int(t * 1e9), actor, action, target, uuid())

def payload(e): return json.dumps(e[9], separators=(",", ":")) if e[0] >= cutoff else ""
def event_row(e): return (e[1], e[2], e[3], e[4], e[5], stamp(e[0]), e[6], e[7], None, e[8])

repeats.sort(key=lambda r: r[1])

if sink == "sqlite":
    db = sqlite3.connect(target)
    db.executescript("pragma journal_mode = delete; pragma synchronous = off; pragma cache_size = -2000000;")
    with db:
        db.executemany("insert into events (event_id, event_type, job_id, patient_note_id, created, "
                       "received_at, attempt, outcome, reject_reason, source, payload) "
                       "values (?,?,?,?,?,?,?,?,?,?,?)", (event_row(e) + (payload(e),) for e in events))
        db.executemany("insert into jobs values (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", jobs)
        db.executemany("insert into expected_jobs (job_id, patient_note_id, submitted_at, submitted_ns, "
                       "access_token_reference_id, registered_by, resolved) values (?,?,?,?,?,?,?)", expected)
        db.executemany("insert into audit_log (at, at_ns, actor, action, target, request_id) "
                       "values (?,?,?,?,?,?)", audit_rows())
        db.execute("update payload_purge set swept_through_seq = ? where id = 1", (swept,))
        if db.execute("select 1 from sqlite_master where name = 'repeated_deliveries'").fetchone():
            db.executemany("insert into repeated_deliveries values (?,?,?)", repeats)
    db.execute("pragma journal_mode = wal")
    db.close()
else:  # files in COPY's text format: tab-separated, \N for null
    def field(v):
        if v is None: return "\\N"
        return str(v).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    def write(name, rows):
        with open(os.path.join(target, name + ".tsv"), "w") as f:
            f.writelines("\t".join(map(field, row)) + "\n" for row in rows)
    write("events", (event_row(e) for e in events))
    write("payloads", ((i + 1, payload(e)) for i, e in enumerate(events) if e[0] >= cutoff))
    write("jobs", jobs)
    write("expected_jobs", (e[:6] + ("t" if e[6] else "f",) for e in expected))
    write("audit_log", audit_rows())
    write("repeated_deliveries", repeats)
    with open(os.path.join(target, "swept"), "w") as f: f.write(str(swept))

failed_jobs = [j for j in jobs if j[2] == "failed"]
count = {r: 0 for r in REASONS}
for j in failed_jobs: count[j[4]] += 1
loc_count = {l: 0 for l in LOCATIONS}
for j in jobs:
    if j[7]: loc_count[j[7]] += 1
day = lambda s: time.strftime("%Y-%m-%d", time.gmtime(s))
json.dump({
    "jobs": len(jobs), "events": len(events), "expected": len(expected), "audit": AUDIT,
    "repeated_deliveries": len(repeats),
    "busy_day": day(busy_day),
    "common_reason": max(count, key=count.get), "common_reason_jobs": max(count.values()),
    "rare_reason": min(count, key=count.get), "rare_reason_jobs": min(count.values()),
    "location": max(loc_count, key=loc_count.get), "location_jobs": max(loc_count.values()),
    "small_location": min(loc_count, key=loc_count.get), "small_location_jobs": min(loc_count.values()),
    "account": ACCOUNTS[2], "emr_note_id": emr_sample, "job_with_events": job_with_events,
}, open(sys.argv[3], "w"), indent=1)
PY

# The latency client: one keep-alive connection per client, every body
# read in full, each request timed with perf_counter.
cat >"$root/measure.py" <<'PY'
import http.client, json, math, os, sys, threading, time

host, port = sys.argv[1].split(":"); port = int(port)
cookie = sys.argv[2]
pages = json.load(open(sys.argv[3]))
REQUESTS, WARMUP = int(os.environ["REQUESTS"]), int(os.environ["WARMUP"])
CONC, BUDGET = int(os.environ["CONCURRENCY"]), float(os.environ["PAGE_SECONDS"])
headers = {"Cookie": "cobalt_console=" + cookie}

def connect():
    return http.client.HTTPConnection(host, port, timeout=120)

def get(conn, path):
    t = time.perf_counter()
    conn.request("GET", path, headers=headers)
    r = conn.getresponse(); body = r.read()
    return time.perf_counter() - t, r.status, len(body)

def pct(xs, p):
    xs = sorted(xs); return xs[min(len(xs) - 1, max(0, math.ceil(p * len(xs)) - 1))] * 1000

def run(label, path):
    conn = connect()
    statuses = set(); size = 0
    deadline = time.monotonic() + BUDGET / 4
    for _ in range(WARMUP):
        _, status, size = get(conn, path); statuses.add(status)
        if time.monotonic() > deadline: break
    seq = []; deadline = time.monotonic() + BUDGET
    while len(seq) < REQUESTS and time.monotonic() < deadline:
        t, status, size = get(conn, path); seq.append(t); statuses.add(status)
    conn.close()
    conc = []; lock = threading.Lock(); left = [REQUESTS]
    deadline = time.monotonic() + BUDGET
    def client():
        c = connect(); mine = []
        while time.monotonic() < deadline:
            with lock:
                if left[0] == 0: break
                left[0] -= 1
            t, status, _ = get(c, path); mine.append(t)
            with lock: statuses.add(status)
        c.close()
        with lock: conc.extend(mine)
    threads = [threading.Thread(target=client) for _ in range(CONC)]
    for t in threads: t.start()
    for t in threads: t.join()
    row = {"page": label, "path": path, "status": ",".join(map(str, sorted(statuses))), "bytes": size,
           "n": len(seq), "p50": pct(seq, .5), "p99": pct(seq, .99), "max": max(seq) * 1000,
           "cn": len(conc), "cp50": pct(conc, .5), "cp99": pct(conc, .99), "cmax": max(conc) * 1000}
    print(json.dumps(row), flush=True)

for label, path in pages:
    run(label, path)
PY

# Times a download (the CSV export): seconds to the last byte, and bytes.
export_time() { # ADDRESS COOKIE PATH
  python3 - "$@" <<'PY'
import http.client, sys, time
host, port = sys.argv[1].split(":")
times = []
for _ in range(5):
    c = http.client.HTTPConnection(host, int(port), timeout=300)
    t = time.perf_counter()
    c.request("GET", sys.argv[3], headers={"Cookie": "cobalt_console=" + sys.argv[2]})
    r = c.getresponse(); body = r.read(); times.append(time.perf_counter() - t); c.close()
rows = body.count(b"\n") - 1
print(f"status {r.status}, {len(body)} bytes, {rows} rows; "
      f"ms per export of 5: median {sorted(times)[2] * 1000:.1f}, max {max(times) * 1000:.1f}")
PY
}

pg() { psql "$PG/${1:-postgres}" -X -q -v ON_ERROR_STOP=1 "${@:2}"; }
seconds_since() { awk -v s="$1" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }'; }

measure_engine() {
  local engine=$1 work=$root/$engine dir url seeded=''
  mkdir -p "$work"
  dir=${KEEP:-$work}/$engine
  mkdir -p "$dir"
  [ -f "$dir/seed.json" ] && seeded=yes
  if [ -z "$seeded" ] && [ -f "$dir/postgres.url" ]; then
    # A kept database whose seeding did not finish: start again.
    pg postgres -c "drop database if exists $(sed 's#.*/##' "$dir/postgres.url") with (force)" >/dev/null
    rm -f "$dir/postgres.url"
  fi
  if [ "$engine" = sqlite ]; then
    url=sqlite://$dir/receiver.db
    [ -n "$seeded" ] || rm -f "$dir"/receiver.db*
  elif [ -f "$dir/postgres.url" ]; then
    url=$(cat "$dir/postgres.url")
  else
    local name=cobalt_console_bench_$(date +%s)_$$
    pg postgres -c "create database $name" >/dev/null
    url=$PG/$name
    if [ -n "$KEEP" ]; then echo "$url" >"$dir/postgres.url"; else dropped_db=$name; fi
  fi

  echo
  echo "== $engine: $JOBS jobs over $DAYS days ($(nproc) cores, $(date -u '+%Y-%m-%d %H:%M') UTC)"
  if [ -z "$seeded" ]; then
    COBALT_RECEIVER_DATABASE_URL=$url "$BIN" migrate >"$work/migrate.log" 2>&1 ||
      { cat "$work/migrate.log" >&2; return 1; }
    local t0; t0=$(date +%s.%N)
    if [ "$engine" = sqlite ]; then
      NOW=$NOW JOBS=$JOBS DAYS=$DAYS PENDING=$PENDING AUDIT_ROWS=$AUDIT_ROWS \
        python3 "$root/seed.py" sqlite "$dir/receiver.db" "$dir/seed.json.tmp"
    else
      NOW=$NOW JOBS=$JOBS DAYS=$DAYS PENDING=$PENDING AUDIT_ROWS=$AUDIT_ROWS \
        python3 "$root/seed.py" pgcopy "$work" "$dir/seed.json.tmp"
      local gen; gen=$(seconds_since "$t0")
      local db=${url##*/}
      pg "$db" -c "\\copy events (event_id, event_type, job_id, patient_note_id, created, received_at, attempt, outcome, reject_reason, source) from '$work/events.tsv'"
      # Payload rows name their event by its arrival order; the identity
      # column of a freshly made table counts from 1.
      [ "$(pg "$db" -tAc 'select min(seq) = 1 and max(seq) = count(*) from events')" = t ] ||
        { echo "console.sh: events.seq does not count from 1" >&2; return 1; }
      pg "$db" -c "\\copy payloads (seq, payload) from '$work/payloads.tsv'"
      pg "$db" -c "\\copy jobs from '$work/jobs.tsv'"
      pg "$db" -c "\\copy expected_jobs (job_id, patient_note_id, submitted_at, submitted_ns, access_token_reference_id, registered_by, resolved) from '$work/expected_jobs.tsv'"
      pg "$db" -c "\\copy audit_log (at, at_ns, actor, action, target, request_id) from '$work/audit_log.tsv'"
      pg "$db" -c "update payload_purge set swept_through_seq = $(cat "$work/swept") where id = 1"
      # A binary older than the table seeds without it.
      if [ "$(pg "$db" -tAc "select to_regclass('repeated_deliveries') is not null")" = t ]; then
        pg "$db" -c "\\copy repeated_deliveries (event_id, received_at, attempt) from '$work/repeated_deliveries.tsv'"
      fi
      rm -f "$work"/*.tsv
      echo "generating the rows took ${gen} s"
    fi
    echo "seeding took $(seconds_since "$t0") s"
    if [ "$ANALYZE" = 1 ]; then
      t0=$(date +%s.%N)
      if [ "$engine" = sqlite ]; then
        python3 -c 'import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); db.execute("analyze"); db.execute("pragma wal_checkpoint(truncate)"); db.close()' "$dir/receiver.db"
        echo "ANALYZE took $(seconds_since "$t0") s"
      else
        pg "${url##*/}" -c "vacuum (analyze)"
        echo "VACUUM ANALYZE took $(seconds_since "$t0") s"
      fi
    fi
    mv "$dir/seed.json.tmp" "$dir/seed.json"
  else
    echo "reusing the database seeded in $dir"
  fi
  if [ "$engine" = sqlite ]; then
    echo "statistics: $(python3 -c 'import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); print("ANALYZE" if db.execute("select count(*) from sqlite_master where name = '"'"'sqlite_stat1'"'"'").fetchone()[0] else "none (never analyzed)")' "$dir/receiver.db")"
    echo "database on disk: $(du -cm "$dir"/receiver.db* | tail -n 1 | cut -f1) MiB"
  else
    echo "database size: $(pg "${url##*/}" -tAc "select pg_size_pretty(pg_database_size(current_database()))")"
  fi

  # The webhook port is any free one; the console's must differ from it,
  # so it is picked here (free a moment ago).
  local console_port
  console_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  COBALT_RECEIVER_LISTEN=127.0.0.1:0 \
  COBALT_RECEIVER_CONSOLE_LISTEN=127.0.0.1:$console_port \
  COBALT_RECEIVER_CONSOLE_TIME_ZONE=UTC \
  COBALT_RECEIVER_DATABASE_URL=$url \
  COBALT_RECEIVER_WEBHOOK_SECRETS=$SECRET \
  COBALT_RECEIVER_API_TOKENS="ops:read+operate:$TOKEN" \
  RUST_LOG=warn,cobalt_receiver::startup=info \
    "$BIN" >"$work/server.log" 2>&1 &
  server_pid=$!
  local address=''
  for _ in $(seq 300); do
    address=$(grep -o 'console=http://[0-9.:]*' "$work/server.log" | cut -d/ -f3 || true)
    [ -n "$address" ] && grep -q 'listening' "$work/server.log" && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$address" ] || { cat "$work/server.log" >&2; echo "console.sh: the server did not start" >&2; return 1; }

  local cookie
  cookie=$(curl -s -i --max-time 10 -X POST -H "Origin: http://$address" \
    --data-urlencode "token=$TOKEN" -d 'next=/ui' "http://$address/ui/sign-in" |
    sed -n 's/^set-cookie: cobalt_console=\([0-9a-f]*\).*/\1/ip')
  [ -n "$cookie" ] || { echo "console.sh: could not sign in" >&2; return 1; }

  # The pages, with the values the generator chose.
  python3 - "$dir/seed.json" "$address" "$cookie" >"$work/pages.json" <<'PY'
import datetime, html, http.client, json, re, sys, urllib.parse
s = json.load(open(sys.argv[1]))
q = urllib.parse.quote
host, port = sys.argv[2].split(":")
c = http.client.HTTPConnection(host, int(port), timeout=120)
c.request("GET", "/ui/jobs", headers={"Cookie": "cobalt_console=" + sys.argv[3]})
page = c.getresponse().read().decode()
m = re.search(r'<a href="([^"]*)" rel="next"|rel="next" href="([^"]*)"', page)
second = html.unescape(m.group(1) or m.group(2)) if m else "/ui/jobs"
day = s["busy_day"]
busy = datetime.date.fromisoformat(day)
week_from, week_to = busy - datetime.timedelta(days=3), busy + datetime.timedelta(days=3)
pages = [
    ("today", "/ui"),
    ("today, busy day", f"/ui?day={day}"),
    ("jobs", "/ui/jobs"),
    ("jobs, page 2", second),
    ("jobs failed", "/ui/jobs?status=failed"),
    (f"jobs failed, common reason ({s['common_reason_jobs']})", f"/ui/jobs?status=failed&reason={q(s['common_reason'])}"),
    (f"jobs failed, rare reason ({s['rare_reason_jobs']})", f"/ui/jobs?status=failed&reason={q(s['rare_reason'])}"),
    ("jobs, one day", f"/ui/jobs?from={day}&to={day}"),
    ("jobs, a week", f"/ui/jobs?from={week_from}&to={week_to}"),
    (f"jobs, location ({s['location_jobs']})", f"/ui/jobs?location={q(s['location'])}"),
    (f"jobs, small location ({s['small_location_jobs']})", f"/ui/jobs?location={q(s['small_location'])}"),
    ("jobs, location nobody has", "/ui/jobs?location=no-such-location"),
    ("jobs, account", f"/ui/jobs?account={q(s['account'])}"),
    ("jobs pending overdue", "/ui/jobs?status=pending&overdue=true"),
    ("job (2 events, a repeat)", f"/ui/jobs/{s['job_with_events']}"),
    ("search emr note id (303)", f"/ui/search?q={q(s['emr_note_id'])}"),
    ("overdue", "/ui/overdue"),
    ("audit", "/ui/audit"),
    ("audit, action=console.export", "/ui/audit?action=console.export"),
]
json.dump(pages, sys.stdout)
PY

  printf '%-38s %7s %7s | %-22s | %-22s\n' "" "" "" "one at a time (ms)" "$CONCURRENCY at once (ms)"
  printf '%-38s %7s %7s | %6s %7s %7s | %6s %7s %7s\n' page status bytes p50 p99 max p50 p99 max
  REQUESTS=$REQUESTS WARMUP=$WARMUP CONCURRENCY=$CONCURRENCY PAGE_SECONDS=$PAGE_SECONDS \
    python3 "$root/measure.py" "$address" "$cookie" "$work/pages.json" | tee "$work/results.jsonl" |
    python3 -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    mark = "  <-- over 50 ms at p99" if max(r["p99"], r["cp99"]) > 50 else ""
    short = "" if r["n"] >= int(sys.argv[1]) else "  (only %d + %d requests in the time limit)" % (r["n"], r["cn"])
    print("%-38s %7s %7d | %6.1f %7.1f %7.1f | %6.1f %7.1f %7.1f%s%s" % (r["page"][:38], r["status"], r["bytes"],
          r["p50"], r["p99"], r["max"], r["cp50"], r["cp99"], r["cmax"], mark, short), flush=True)
' "$REQUESTS"
  python3 -c 'import json, sys; [print("  %s: %s" % (r["page"], r["path"])) for r in map(json.loads, open(sys.argv[1]))]' "$work/results.jsonl"
  local day; day=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["busy_day"])' "$dir/seed.json")
  echo "CSV export /ui/jobs.csv?status=failed&from=$day&to=$day: $(export_time "$address" "$cookie" "/ui/jobs.csv?status=failed&from=$day&to=$day")"
  echo "server peak resident memory: $(awk '/VmHWM/ { printf "%d", $2 / 1024 }' "/proc/$server_pid/status") MiB; server log warnings/errors: $(grep -c -E '\b(WARN|ERROR)\b' "$work/server.log" || true)"
  # The distinct kinds of warning (e.g. a statement timeout behind a 503).
  grep -E '\b(WARN|ERROR)\b' "$work/server.log" | sed -E 's/^[^ ]+ +//; s/db.statement=.*//' | cut -c1-160 | sort | uniq -c | sort -rn | head -n 5 || true
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=''
  if [ -n "$dropped_db" ]; then pg postgres -c "drop database if exists $dropped_db with (force)" >/dev/null; dropped_db=''; fi
  [ -n "$KEEP" ] || rm -rf "$dir"
}

for engine in "${engines[@]}"; do measure_engine "$engine"; done
