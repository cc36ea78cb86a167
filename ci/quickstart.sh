#!/usr/bin/env bash
# Runs the README's Quick start as written, so an example that no longer
# works fails CI. Takes every fenced block between "## Quick start" and the
# next "## " heading, in order, in one shell:
#   ```sh     blocks run as they are;
#   ``` with `$ ` lines: the commands after `$ ` run, and must succeed;
#   a block after `<!-- quickstart: server -->` starts the server: it runs
#             in the background, and the next blocks wait for /readyz.
# Every http://127.0.0.1:... URL the section's prose names (the console's)
# must then answer below 400. The data goes to a temporary database (COBALT_RECEIVER_DATABASE_URL,
# over the example file's), and the server is stopped at the end, which
# must exit 0. Needs curl and jq (the README's examples use them).
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in curl jq; do
  command -v "$tool" >/dev/null || { echo "ci/quickstart.sh: $tool is missing" >&2; exit 1; }
done

work=$(mktemp -d)
cleanup() {
  if [ -s "$work/server.pid" ]; then kill "$(cat "$work/server.pid")" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
export COBALT_RECEIVER_DATABASE_URL="sqlite://$work/quickstart.db"

section=$(awk '/^## Quick start$/ { on = 1; next } on && /^## / { exit } on' README.md)
[ -n "$section" ] || { echo "ci/quickstart.sh: README.md has no Quick start section" >&2; exit 1; }

# Split the section into numbered blocks: $work/block.N (the lines) and
# $work/kind.N (sh, transcript or server).
awk -v dir="$work" '
  /^<!-- quickstart: server -->$/ { server = 1; next }
  /^```/ && !inside { inside = 1; n++; kind = ($0 == "```sh") ? "sh" : "transcript";
                      if (server) { kind = "server"; server = 0 }
                      print kind > (dir "/kind." n); close(dir "/kind." n);
                      printf "" > (dir "/block." n); next }
  /^```/ && inside { inside = 0; next }
  inside { print >> (dir "/block." n) }
' <<<"$section"

script=$work/run.sh
{
  echo 'set -euo pipefail'
  echo 'curl() { command curl --fail-with-body "$@"; }'
  for kind_file in $(ls "$work"/kind.* | sort -t. -k2 -n); do
    n=${kind_file##*.}
    block=$work/block.$n
    case $(cat "$kind_file") in
      sh) cat "$block" ;;
      transcript) sed -n 's/^\$ //p' "$block" ;;
      server)
        echo "( $(cat "$block") ) >\"$work/server.log\" 2>&1 &"
        echo "echo \$! >\"$work/server.pid\""
        echo "for _ in \$(seq 100); do command curl -sf http://127.0.0.1:8080/readyz >/dev/null && break; sleep 0.1; done"
        echo "command curl -sf http://127.0.0.1:8080/readyz >/dev/null || { cat \"$work/server.log\" >&2; echo 'the server did not become ready' >&2; exit 1; }"
        ;;
    esac
    echo "echo \"== quick start block $n ran\" >&2"
  done
} >"$script"
grep -q 'server.pid' "$script" || { echo "ci/quickstart.sh: no block is marked as the server" >&2; exit 1; }

echo "ci/quickstart.sh: running the README's Quick start" >&2
bash "$script"
server=$(cat "$work/server.pid")

prose=$(awk '/^```/ { inside = !inside; next } !inside' <<<"$section")
for url in $(grep -o 'http://127\.0\.0\.1:[0-9]*/[^` )"]*' <<<"$prose" | sort -u); do
  status=$(curl -s -o /dev/null -w '%{http_code}' "$url")
  if [ "$status" -ge 400 ] || [ "$status" = 000 ]; then
    echo "ci/quickstart.sh: $url, named in the Quick start, answered $status" >&2
    exit 1
  fi
done

kill -INT "$server"
for _ in $(seq 100); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$server" 2>/dev/null; then
  echo "ci/quickstart.sh: the server did not stop on SIGINT" >&2
  exit 1
fi
rm -f "$work/server.pid"
echo "ci/quickstart.sh: the Quick start works as written" >&2
