#!/usr/bin/env bash
# Git LFS figures: a push and a clone of one large file through stowage (filesystem
# store; S3 through the server; S3 with presigned URLs) against a plain PUT and GET of
# the same bytes to the same store, and the server's peak RSS. The measuring is
# bench/lfs_measure.py; this script builds stowage (release), installs git-lfs into the
# cache when missing and starts LocalStack (stopped again at the end if it started it).
#
#   bench/lfs.sh                  # 1 GiB, every configuration
#   bench/lfs.sh --mb 2048 --only fs,s3-server
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/localstack/env.sh"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$STOWAGE_CACHE_DIR/target}"

"$ROOT/scripts/install-git-lfs.sh" >/dev/null
export PATH="$STOWAGE_CACHE_DIR/git-lfs/usr/bin:$PATH"
(cd "$ROOT" && cargo build --release -q)

started=""
if ! curl -sf "http://$LOCALSTACK_LISTEN/_localstack/health" >/dev/null; then
  "$ROOT/localstack/start.sh" >/dev/null
  started=1
fi
trap '[ -n "$started" ] && "$ROOT/localstack/stop.sh"' EXIT
export AWS_ENDPOINT_URL="${AWS_ENDPOINT_URL:-http://$LOCALSTACK_LISTEN}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
export AWS_REGION="${AWS_REGION:-us-east-1}" AWS_EC2_METADATA_DISABLED=true
python3 "$ROOT/bench/lfs_measure.py" "$@"
