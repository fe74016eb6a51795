#!/usr/bin/env bash
# Runs every test of stowage: unit tests, the store contract suite on memory, the
# filesystem and S3 (LocalStack), and the end-to-end tests with the real git and
# git-lfs clients (git-lfs is fetched into the cache directory if it is not installed).
#
# LocalStack is installed on first use into a cache directory outside the clone
# ($STOWAGE_CACHE_DIR, default ~/.cache/stowage) and started for the run, then stopped;
# one already listening on 127.0.0.1:4566 is used as it is and left running. S3 tests
# are required here: an unreachable S3 fails the run, it never skips.
#
# Then the client version matrix: with no extra arguments, the tests run again with the
# machine's other git client (`STOWAGE_MATRIX_GIT`, default Debian's /usr/bin/git) when
# it is another version than PATH's, on the filesystem store (what the client speaks
# does not depend on the store); the conformance suite's reference server stays PATH's.
#
# Extra arguments go to `cargo test` (for example a test name filter).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source localstack/env.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$STOWAGE_CACHE_DIR/target}"
export STOWAGE_REQUIRE_S3=1
export AWS_ENDPOINT_URL="${AWS_ENDPOINT_URL:-http://$LOCALSTACK_LISTEN}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
export AWS_REGION="${AWS_REGION:-us-east-1}"

started=""
cleanup() { if [ -n "$started" ]; then localstack/stop.sh; fi; }
trap cleanup EXIT
if ! curl -fsS "$AWS_ENDPOINT_URL/_localstack/health" 2>/dev/null | grep -Eq '"s3": *"(running|available)"'; then
  localstack/start.sh >/dev/null
  started=1
fi

command -v git >/dev/null || { echo "the end-to-end tests need git on PATH" >&2; exit 1; }
# The Git LFS tests drive the real git-lfs client.
PATH="$(scripts/install-git-lfs.sh):$PATH"
export PATH
cargo test --workspace --all-targets "$@"

other="${STOWAGE_MATRIX_GIT:-/usr/bin/git}"
if [ $# -eq 0 ] && [ -x "$other" ] && [ "$("$other" --version)" != "$(git --version)" ]; then
  echo "client version matrix: $("$other" --version) (the first run: $(git --version))"
  STOWAGE_TEST_GIT="$other" cargo test --workspace --tests -- --skip s3::
fi
