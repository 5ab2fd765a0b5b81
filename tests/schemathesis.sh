#!/usr/bin/env bash
# Schemathesis (PyPI) against a real `threadsync serve`: it reads the
# server's own /openapi.json, generates requests from it (valid and
# invalid ones, then sequences that follow the document's links: push →
# thread → message, pull → next pull) and checks every answer: no server
# error, a documented status, the documented content type, a body that
# matches the documented schema.
#
# Installs schemathesis (pinned) into .cache/schemathesis on its first run
# and reuses it after. Builds the server with the profile the tests use
# (target/debug/threadsync). Bounded to a couple of minutes; set
# SCHEMATHESIS_MAX_EXAMPLES or SCHEMATHESIS_SEED to explore further.
#
# Ends with one line: `schemathesis: N passed, N failed`, counting the
# API operations tested, and the stateful phase as one more (an operation
# fails when any check failed on it, in any phase). Exits non-zero on any
# failure. One worker: with several, hypothesis trips over a CPython 3.11
# parser error ("AST constructor recursion depth mismatch").
set -euo pipefail
cd "$(dirname "$0")/.."

version=4.32.5
venv=.cache/schemathesis
st="$PWD/$venv/bin/schemathesis"
if ! "$st" --version 2>/dev/null | grep -qF "version $version"; then
  echo "installing schemathesis $version into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi

cargo build --locked --quiet --bin threadsync
bin=target/debug/threadsync

tmp=$(mktemp -d)
server=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# Every other generated push goes out as a fresh client whose mutation ids
# count from 1 and whose threads are created first: otherwise a random push
# is almost always a gap, and its operations, messages and contents never
# reach the server core and its store.
cat >"$tmp/threadsync_hooks.py" <<'EOF'
import itertools
import schemathesis

_n = itertools.count()


@schemathesis.hook
def map_case(context, case):
    if case.operation.path != "/v1/push" or case.operation.method.upper() != "POST":
        return case
    body = case.body
    if not isinstance(body, dict) or not isinstance(body.get("mutations"), list):
        return case
    if not all(isinstance(m, dict) and isinstance(m.get("ops"), list) for m in body["mutations"]):
        return case
    n = next(_n)
    if n % 2:
        return case
    created, mutations = set(), []
    for i, m in enumerate(body["mutations"], start=1):
        m = dict(m, id=i)
        if isinstance(m.get("threadId"), str) and m["threadId"] not in created:
            created.add(m["threadId"])
            m["ops"] = [{"op": "create", "created": 0, "env": {}}] + list(m["ops"])
        mutations.append(m)
    case.body = dict(body, clientId=f"c-st{n}", mutations=mutations)
    return case
EOF

db="sqlite://$tmp/db.sqlite"
token=$("$bin" token create --team schemathesis --db "$db")

# Pulls are held at most 0.6 s, with a heartbeat every 0.2 s: a pull that
# waits is streamed (spaces, then the JSON), so that answer is checked too,
# and the run stays short.
THREADSYNC_LOG=info "$bin" serve --listen 127.0.0.1:0 --db "$db" --max-wait 0.6 --heartbeat 0.2 \
  2>"$tmp/server.log" &
server=$!
addr=""
for _ in $(seq 1 200); do
  addr=$(sed -n 's/.*addr=\([^ ]*\).*/\1/p' "$tmp/server.log" | head -n1)
  [ -n "$addr" ] && break
  kill -0 "$server" 2>/dev/null || { cat "$tmp/server.log" >&2; echo "the server did not start" >&2; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { cat "$tmp/server.log" >&2; echo "the server printed no address" >&2; exit 1; }
base="http://$addr"

status=0
# From $tmp: schemathesis keeps its cache (.schemathesis/) in the working directory.
(cd "$tmp" && PYTHONPATH="$tmp" SCHEMATHESIS_HOOKS=threadsync_hooks "$st" run "$base/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --phases examples,coverage,fuzzing,stateful \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-80}" \
  --seed "${SCHEMATHESIS_SEED:-20260101}" \
  --workers 1 \
  --request-timeout 10 \
  --report junit --report-junit-path "$tmp/junit.xml" \
  --output-truncate false) \
  2>&1 | tee "$tmp/run.log" || status=$?

if ! kill -0 "$server" 2>/dev/null; then
  echo "the server died during the run:" >&2
  tail -n 50 "$tmp/server.log" >&2
  status=1
fi
if grep -E '\b(ERROR|panicked)\b' "$tmp/server.log" >&2; then
  echo "the server logged errors (above)" >&2
  status=1
fi

# Per API operation (and the stateful phase): failed if any of its test
# cases failed or errored.
counts=$(python3 - "$tmp/junit.xml" <<'EOF'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception:
    print("0 0")
    sys.exit()
ops = {}
for case in root.iter("testcase"):
    name = case.get("name", "")
    bad = case.find("failure") is not None or case.find("error") is not None
    ops[name] = ops.get(name, False) or bad
print(sum(not b for b in ops.values()), sum(ops.values()))
EOF
)
read -r passed failed <<<"$counts"
if [ "$passed" -eq 0 ] && [ "$failed" -eq 0 ]; then
  echo "no JUnit report: schemathesis did not run" >&2
  status=1
fi
[ "$failed" -eq 0 ] || status=1
echo "schemathesis: $passed passed, $failed failed"
exit "$status"
