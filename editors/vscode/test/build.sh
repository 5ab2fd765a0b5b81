#!/usr/bin/env bash
# Brings the extension up to date for a test run: `npm ci` when node_modules
# was not installed from this very package-lock.json (npm cache:
# <repo>/.cache/npm), then compiles src/ → out/ (a stale out/ would test
# yesterday's extension). Used by test/run.sh and e2e/run.sh.
set -euo pipefail
EXT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPO="$(cd "$EXT/../.." && pwd)"
export npm_config_cache="${npm_config_cache:-$REPO/.cache/npm}"
export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
cd "$EXT"
lock_hash="$(sha256sum package-lock.json | cut -d' ' -f1)"
stamp="node_modules/.threadsync-lock-sha256"
if [ "$(cat "$stamp" 2>/dev/null)" != "$lock_hash" ]; then
  echo "vscode: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_hash" >"$stamp"
fi
echo "vscode: npm run compile"
npm run --silent compile
