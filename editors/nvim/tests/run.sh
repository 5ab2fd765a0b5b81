#!/usr/bin/env bash
# Runs every tests/*_spec.lua in a real headless Neovim (0.11.4 and a 0.12
# dev build) against the real `threadsync` binary (THREADSYNC_BIN, default
# <repo>/target/debug/threadsync; this script builds nothing).
# Prints per Neovim "nvim-<version>: N passed, N failed" (test cases), then a
# total line; exits non-zero on any failure, crash or missing Neovim.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
plugin="$(cd "$here/.." && pwd)"
repo="$(cd "$plugin/../.." && pwd)"
export THREADSYNC_BIN="${THREADSYNC_BIN:-$repo/target/debug/threadsync}"
if [ ! -x "$THREADSYNC_BIN" ]; then
  echo "run.sh: ERROR: no threadsync binary at $THREADSYNC_BIN (build it: cargo build --locked, or set THREADSYNC_BIN)" >&2
  echo "nvim: 0 passed, 1 failed"
  exit 1
fi
command -v curl >/dev/null || { echo "run.sh: ERROR: the tests need curl" >&2; exit 1; }

start=$(date +%s)
summary=()
installed="$("$here/install.sh")"
install_rc=$?
total_pass=0 total_fail=0 exit_code=0
if [ $install_rc -ne 0 ]; then
  echo "run.sh: ERROR: installing Neovim failed (see above); a missing version counts as a failed suite" >&2
  exit_code=1
fi

specs=()
if [ $# -gt 0 ]; then specs=("$@"); else for f in "$here"/*_spec.lua; do specs+=("$f"); done; fi

for label in 0_11 0_12; do
  nvim="$(printf '%s\n' "$installed" | sed -n "s/^NVIM_$label=//p")"
  if [ -z "$nvim" ]; then
    line="nvim-${label/_/.}: 0 passed, 1 failed"
    echo "$line   (NOT INSTALLED: see install.sh errors above)"
    summary+=("$line   (NOT INSTALLED)")
    total_fail=$((total_fail + 1)); exit_code=1
    continue
  fi
  version="$("$nvim" --version | head -n1 | sed 's/^NVIM v//')"
  pass=0 fail=0
  for spec in "${specs[@]}"; do
    xdg="$(mktemp -d "${TMPDIR:-/tmp}/tsnvim.XXXXXX")"
    log="$xdg/output.txt"
    XDG_CONFIG_HOME="$xdg/config" XDG_DATA_HOME="$xdg/data" XDG_STATE_HOME="$xdg/state" \
      XDG_CACHE_HOME="$xdg/cache" TMPDIR="$xdg" \
      timeout 120 "$nvim" --headless -u NONE -i NONE --cmd "set rtp^=$plugin" -l "$spec" >"$log" 2>&1 </dev/null
    rc=$?
    # Case lines: "PASS: …" / "FAIL: …" (Neovim's own messages may precede
    # them on the same line, hence -o).
    p=$(grep -oE '(^|[^A-Za-z])PASS: ' "$log" | wc -l)
    f=$(grep -oE '(^|[^A-Za-z])FAIL: ' "$log" | wc -l)
    if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then
      f=1
      echo "FAIL: $(basename "$spec") crashed or timed out (exit $rc)" >>"$log"
    fi
    if [ $rc -eq 0 ] && ! grep -q '^RESULT: ' "$log"; then
      f=$((f + 1))
      echo "FAIL: $(basename "$spec") ended without a RESULT line" >>"$log"
    fi
    echo "--- nvim $version $(basename "$spec") (exit $rc)"
    sed -e 's/^/  /' "$log"
    pass=$((pass + p)); fail=$((fail + f))
    rm -rf "$xdg"
  done
  echo "nvim-$version: $pass passed, $fail failed"
  summary+=("nvim-$version: $pass passed, $fail failed")
  total_pass=$((total_pass + pass)); total_fail=$((total_fail + fail))
done

echo
echo "== summary ($(( $(date +%s) - start )) s)"
for s in "${summary[@]}"; do echo "$s"; done
echo "nvim-total: $total_pass passed, $total_fail failed"
[ $total_fail -eq 0 ] && [ $exit_code -eq 0 ] || exit 1
