#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time (what .ci/run
# calls). Installs cargo-fuzz into .cache/cargo-fuzz once; builds all
# targets once (into .cache/fuzz-target, which CI caches); runs each for
# FUZZ_SECONDS (default 30) on a copy of its seeds (fuzz/seeds/<target>,
# grown in .cache/fuzz-corpus/<target>); prints the executions per target
# and, last, one line: "fuzz: N passed, N failed". A target fails when it
# finds a crash (a panic, a leak of the time or memory limits): its input
# is kept under fuzz/artifacts/<target>/ and the command that replays it is
# printed. FUZZ_TARGETS="a b" runs only those.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
secs=${FUZZ_SECONDS:-30}
cache=$root/.cache

if ! command -v cargo >/dev/null; then
  echo "cargo not found: the fuzz targets need a Rust toolchain (rustup)" >&2
  exit 1
fi

# cargo-fuzz, ours (reused when present).
export PATH="$cache/cargo-fuzz/bin:$PATH"
if ! command -v cargo-fuzz >/dev/null; then
  echo "installing cargo-fuzz into .cache/cargo-fuzz" >&2
  cargo install cargo-fuzz --locked --root "$cache/cargo-fuzz" >&2 || {
    echo "cannot install cargo-fuzz" >&2
    echo "fuzz: 0 passed, 1 failed"
    exit 1
  }
fi

# libFuzzer's instrumentation needs unstable rustc flags: on a stable
# toolchain, let it use them.
if ! rustc --version | grep -q nightly; then
  export RUSTC_BOOTSTRAP=1
fi

# No sanitizer: the code is safe Rust, and a run does twice the work
# without ASan; debug assertions on, so overflows and debug_asserts count.
flags=(--fuzz-dir fuzz --sanitizer none --debug-assertions --target-dir "$cache/fuzz-target")
triple=$(rustc -vV | sed -n 's/^host: //p')
bindir=$cache/fuzz-target/$triple/release

targets=${FUZZ_TARGETS:-$(cargo fuzz list --fuzz-dir fuzz)}
echo "fuzz: building $(echo $targets | wc -w) targets" >&2
if ! cargo fuzz build "${flags[@]}" >&2; then
  echo "fuzz: the targets do not build" >&2
  echo "fuzz: 0 passed, $(echo $targets | wc -w) failed"
  exit 1
fi

passed=0
failed=0
for t in $targets; do
  corpus=$cache/fuzz-corpus/$t
  artifacts=$root/fuzz/artifacts/$t
  mkdir -p "$corpus" "$artifacts"
  cp -f "$root/fuzz/seeds/$t/"* "$corpus/" 2>/dev/null || true
  log=$(mktemp)
  "$bindir/$t" -max_total_time="$secs" -print_final_stats=1 -timeout=60 -rss_limit_mb=4096 \
    -artifact_prefix="$artifacts/" "$corpus" >"$log" 2>&1
  status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
  crash=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | grep -v '/slow-unit-' | tail -n1)
  if [ "$status" -eq 0 ] && [ -z "$crash" ]; then
    passed=$((passed + 1))
    printf 'fuzz %-16s ok      %s executions in %ss\n' "$t" "${execs:-?}" "$secs"
  else
    failed=$((failed + 1))
    printf 'fuzz %-16s FAILED  %s executions (exit %s)\n' "$t" "${execs:-?}" "$status"
    # The panic (or libFuzzer's report) and what to run to see it again.
    grep -aE "panicked at|^==[0-9]+== ERROR|ERROR: libFuzzer|SUMMARY" -A4 "$log" | head -n 30 | sed 's/^/    /'
    if [ -n "$crash" ]; then
      echo "    input: $crash"
      echo "    replay: cargo fuzz run ${flags[*]} $t $crash"
      echo "       (or: $bindir/$t $crash)"
    else
      tail -n 20 "$log" | tr -d "\000" | sed 's/^/    /'
    fi
  fi
  rm -f "$log"
done

echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
