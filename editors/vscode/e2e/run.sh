#!/usr/bin/env bash
# End-to-end test of the ThreadSync VS Code extension in a real VS Code extension host
# (code-server on loopback, driven by Debian's Chromium through playwright-core), against
# a real `threadsync serve` and a second real `threadsync lsp`.
#   1. install.sh (idempotent): Debian packages, Node 24, code-server, playwright-core
#   2. brings the extension up to date (../test/build.sh: npm ci when stale, compile) and
#      packages it (npm run package: the .vsix code-server installs)
#   3. node --test threadsync.e2e.test.mjs, bounded by `timeout` (E2E_TIMEOUT, default 300 s)
# Env: THREADSYNC_BIN (default <repo>/target/debug/threadsync), THREADSYNC_SCREENSHOTS=1 (copy the
# status bar screenshots to editors/vscode/screenshots/), E2E_KEEP=1 (keep temp dirs).
# Ends with exactly one line "vscode-e2e: N passed, N failed"; exits non-zero on failure.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
EXT="$(cd "$HERE/.." && pwd)"
REPO="$(cd "$EXT/../.." && pwd)"
export npm_config_cache="$REPO/.cache/npm"
export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
export THREADSYNC_BIN="${THREADSYNC_BIN:-$REPO/target/debug/threadsync}"
E2E_TIMEOUT="${E2E_TIMEOUT:-300}"

t0=$(date +%s)
fail_setup() {
  echo "vscode e2e: $1" >&2
  echo "vscode-e2e: 0 passed, 1 failed"
  exit 1
}

"$HERE/install.sh" || fail_setup "install.sh failed"
t_install=$(( $(date +%s) - t0 ))

"$EXT/test/build.sh" || fail_setup "could not build the extension"
# The extension goes into code-server as users get it: the packaged .vsix.
(cd "$EXT" && npm run --silent package >/dev/null) || fail_setup "npm run package failed"
export THREADSYNC_VSIX="$EXT/threadsync-0.1.0.vsix"
[ -x "$THREADSYNC_BIN" ] || fail_setup "no threadsync binary at $THREADSYNC_BIN (cargo build --locked, or set THREADSYNC_BIN)"

tap="$(mktemp -t threadsync-vscode-e2e-tap.XXXXXX)"
trap 'rm -f "$tap"' EXIT
t1=$(date +%s)
cd "$HERE"
# spec to the terminal, TAP to a file for the counts; `timeout` bounds the whole run (SIGTERM, then
# SIGKILL 15 s later): the test kills its process groups (code-server, servers) on SIGTERM.
timeout -k 15 "$E2E_TIMEOUT" node --test --test-concurrency=1 \
  --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=tap --test-reporter-destination="$tap" \
  threadsync.e2e.test.mjs
rc=$?
t_test=$(( $(date +%s) - t1 ))
[ "$rc" -eq 124 ] && echo "vscode e2e: timed out after ${E2E_TIMEOUT}s" >&2

count() { grep -E "^# $1 [0-9]+" "$tap" | tail -1 | awk '{print $3}'; }
passed="$(count pass)"; failed="$(count fail)"; skipped="$(count skipped)"; cancelled="$(count cancelled)"
passed="${passed:-0}"; failed="$(( ${failed:-0} + ${cancelled:-0} ))"; skipped="${skipped:-0}"
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
echo "vscode e2e: install ${t_install}s, tests ${t_test}s"
if [ "$skipped" -gt 0 ]; then
  echo "vscode-e2e: $passed passed, $failed failed, $skipped skipped"
else
  echo "vscode-e2e: $passed passed, $failed failed"
fi
[ "$rc" -eq 0 ] && [ "$failed" -eq 0 ]
