#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ for SECONDS each (default 60) and fails on the first
# crash, leaving its input in fuzz/artifacts/<target>/.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# cargo-fuzz is installed on first use into the cache directory ($STOWAGE_CACHE_DIR,
# as for the tests). On the stable toolchain the targets are built without a sanitizer
# (`--sanitizer none`, what CI runs); where a nightly toolchain is installed, they are
# built with the address sanitizer. The seed corpus in fuzz/corpus/ (recorded from real
# git traffic by fuzz/capture.py) is read, never written: new inputs go to a scratch
# directory.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source localstack/env.sh

seconds="${1:-60}"
shift || true
FUZZ_ROOT="$STOWAGE_CACHE_DIR/cargo-fuzz"
if [ ! -x "$FUZZ_ROOT/bin/cargo-fuzz" ]; then
  echo "installing cargo-fuzz into $FUZZ_ROOT" >&2
  cargo install --quiet --locked cargo-fuzz --version '^0.12' --root "$FUZZ_ROOT"
fi
export PATH="$FUZZ_ROOT/bin:$PATH"
export CARGO_TARGET_DIR="$STOWAGE_CACHE_DIR/fuzz-target"

# STOWAGE_FUZZ_STABLE=1 uses the stable toolchain even where a nightly is installed (as
# CI does, which has none).
if [ -z "${STOWAGE_FUZZ_STABLE:-}" ] && rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
  sanitizer=address
else
  toolchain=()
  sanitizer=none
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cd fuzz && cargo fuzz list)
fi

scratch="$(mktemp -d "${TMPDIR:-/tmp}/stowage-fuzz.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
cd fuzz
cargo "${toolchain[@]}" fuzz build --sanitizer "$sanitizer" --release
for target in "${targets[@]}"; do
  mkdir -p "$scratch/$target" "corpus/$target"
  log="$scratch/$target.log"
  if ! cargo "${toolchain[@]}" fuzz run --sanitizer "$sanitizer" --release "$target" \
      "$scratch/$target" "corpus/$target" -- \
      -max_total_time="$seconds" -print_final_stats=1 -timeout=20 -rss_limit_mb=2048 \
      >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "fuzz: $target crashed; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  echo "fuzz: $target: $runs executions in ${seconds}s, no crash"
done
