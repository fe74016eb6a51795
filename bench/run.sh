#!/usr/bin/env bash
# The benchmark of BENCHMARKS.md: stowage (filesystem store), stowage with 20 ms injected
# per store request, and git http-backend behind nginx + fcgiwrap, in one run on the same
# corpus. The measuring is bench/bench.py; this script builds stowage, installs nginx and
# fcgiwrap (Debian packages) when missing, and keeps the results.
#
#   bench/run.sh                         # the full run, results in bench/results.json
#   RUNS=3 BIG_MB=0 bench/run.sh         # quicker: 3 runs, no 2 GB push
#   KEEP=1 bench/run.sh                  # keep the work directory
# Any other arguments are passed to bench.py (see bench/bench.py --help).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/localstack/env.sh"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$STOWAGE_CACHE_DIR/target}"

if ! command -v nginx >/dev/null || ! command -v fcgiwrap >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx fcgiwrap >/dev/null
fi
(cd "$ROOT" && cargo build --release -q)

WORK="$(mktemp -d "${TMPDIR:-/tmp}/stowage-bench.XXXXXX")"
cleanup() { if [ -n "${KEEP:-}" ]; then echo "work dir: $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT
python3 "$ROOT/bench/bench.py" --stowage "$CARGO_TARGET_DIR/release/stowage" --work "$WORK" \
  --runs "${RUNS:-5}" --big-mb "${BIG_MB:-2048}" --out "${OUT:-$ROOT/bench/results.json}" "$@"
