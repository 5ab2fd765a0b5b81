#!/usr/bin/env bash
# Makes ../screenshots/statusline-{synced,conflict}.png: a real Neovim in an
# xterm under Xvfb, with a real `threadsync serve` and sidecars, its
# statusline showing %{v:lua.require'threadsync'.statusline()}.
# Not run in CI. Needs: apt-get install -y xvfb xterm imagemagick fonts-dejavu-core
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
plugin="$(cd "$here/.." && pwd)"
repo="$(cd "$plugin/../.." && pwd)"
bin="${THREADSYNC_BIN:-$repo/target/debug/threadsync}"
nvim="${NVIM:-$("$here/install.sh" | sed -n 's/^NVIM_0_11=//p')}"
out="$plugin/screenshots"
mkdir -p "$out"
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

wait_for() { # file, seconds
  for _ in $(seq 1 $(($2 * 10))); do [ -e "$1" ] && return 0; sleep 0.1; done
  echo "screenshots.sh: timed out waiting for $1" >&2
  return 1
}

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
db="sqlite://$work/db.sqlite"
token="$("$bin" token create --team demo --db "$db")"
"$bin" serve --listen "127.0.0.1:$port" --db "$db" 2>"$work/serve.log" &
pids+=($!)
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done

display=":$((90 + RANDOM % 100))"
Xvfb "$display" -screen 0 1280x400x24 -nolisten tcp &
pids+=($!)
sleep 1
export DISPLAY="$display"
mkdir -p "$work/xdg"
TS_SHOT_DIR="$work" TS_SHOT_SERVER="http://127.0.0.1:$port" TS_SHOT_TOKEN="$token" THREADSYNC_BIN="$bin" \
  XDG_CONFIG_HOME="$work/xdg/c" XDG_DATA_HOME="$work/xdg/d" XDG_STATE_HOME="$work/xdg/s" XDG_CACHE_HOME="$work/xdg/ca" \
  xterm -geometry 100x14+0+0 -fa 'DejaVu Sans Mono' -fs 12 -bg '#1e1e2e' -fg '#cdd6f4' -b 0 -bw 0 \
  -e "$nvim" -u NONE -i NONE --cmd "set rtp^=$plugin" --cmd 'set termguicolors' -c "luafile $here/screenshots_scene.lua" &
pids+=($!)

shoot() { # name
  local id
  id="$(xwininfo -root -tree | awk '/xterm/ {print $1; exit}')"
  import -window "${id:-root}" "$out/$1"
  echo "wrote $out/$1"
}
wait_for "$work/synced.ready" 60
shoot statusline-synced.png
touch "$work/next"
wait_for "$work/conflict.ready" 60
shoot statusline-conflict.png
touch "$work/quit"
sleep 1
