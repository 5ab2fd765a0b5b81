#!/usr/bin/env bash
# Unit + RPC tests of the ThreadSync VS Code extension.
#   - installs node_modules with `npm ci` when missing or stale (cache: <repo>/.cache/npm)
#   - compiles the extension (tsc → out/)
#   - runs `node --test` on test/unit/*.test.mjs (pure modules) and
#     test/rpc/*.test.mjs (real `threadsync serve` + `threadsync lsp`)
# THREADSYNC_BIN defaults to <repo>/target/debug/threadsync.
# Ends with exactly one line: "vscode-unit+rpc: N passed, N failed"; exits non-zero on failure.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
EXT="$(cd "$HERE/.." && pwd)"
REPO="$(cd "$EXT/../.." && pwd)"
export npm_config_cache="$REPO/.cache/npm"
export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
export THREADSYNC_BIN="${THREADSYNC_BIN:-$REPO/target/debug/threadsync}"
cd "$EXT"

t0=$(date +%s)
fail_setup() {
  echo "vscode: $1" >&2
  echo "vscode-unit+rpc: 0 passed, 1 failed"
  exit 1
}

"$HERE/build.sh" || fail_setup "npm ci or the TypeScript compile failed"

[ -x "$THREADSYNC_BIN" ] || echo "vscode: warning: no threadsync binary at $THREADSYNC_BIN (the RPC tests will fail; build it with cargo build, or set THREADSYNC_BIN)" >&2

out="$(mktemp)"
trap 'rm -f "$out"' EXIT
# Human-readable (spec) on stdout; TAP into a file for the counts.
# `timeout` bounds the whole run: a test process that will not exit must not hang CI.
timeout -k 10 240 node --test \
  --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=tap --test-reporter-destination="$out" \
  test/unit/*.test.mjs test/rpc/*.test.mjs 2>&1
rc=$?

pass="$(sed -n 's/^# pass \([0-9][0-9]*\)$/\1/p' "$out" | tail -1)"
fail="$(sed -n 's/^# fail \([0-9][0-9]*\)$/\1/p' "$out" | tail -1)"
cancelled="$(sed -n 's/^# cancelled \([0-9][0-9]*\)$/\1/p' "$out" | tail -1)"
pass="${pass:-0}"
fail="$(( ${fail:-0} + ${cancelled:-0} ))"
if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then fail=1; fi # the runner failed without a count
if [ "$pass" -eq 0 ] && [ "$fail" -eq 0 ]; then fail=1; fi # ran no test
echo "vscode: tests took $(( $(date +%s) - t0 ))s in all"
echo "vscode-unit+rpc: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
