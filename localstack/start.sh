#!/usr/bin/env bash
# Starts LocalStack (S3 only) on $LOCALSTACK_LISTEN in the background and waits until
# S3 is running. Prints the PID file's path; localstack/stop.sh stops it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/env.sh"

"$here/install.sh"
mkdir -p "$LOCALSTACK_STATE"
pidfile="$LOCALSTACK_STATE/localstack.pid"
log="$LOCALSTACK_STATE/localstack.log"
health="http://$LOCALSTACK_LISTEN/_localstack/health"

healthy() { curl -fsS "$health" 2>/dev/null | grep -Eq '"s3": *"(running|available)"'; }
# Reuse only a LocalStack that answers: a PID file can outlive its process, and the
# PID can be taken by another one.
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null && healthy; then
  echo "LocalStack already running (pid $(cat "$pidfile"))" >&2
  echo "$pidfile"
  exit 0
fi

# Its own working directories, so nothing lands in the clone or in $HOME. Signatures
# are checked, as S3 checks them (presigned LFS transfers are tested against it).
export FILESYSTEM_ROOT="$LOCALSTACK_STATE/fs" LOCALSTACK_VOLUME_DIR="$LOCALSTACK_STATE/volume"
S3_SKIP_SIGNATURE_VALIDATION=0 GATEWAY_SERVER=hypercorn SERVICES=s3 EAGER_SERVICE_LOADING=1 \
  GATEWAY_LISTEN="$LOCALSTACK_LISTEN" DISABLE_EVENTS=1 SKIP_SSL_CERT_DOWNLOAD=1 \
  DNS_ADDRESS=0 LS_LOG=warn \
  setsid "$LOCALSTACK_VENV/bin/python" -m localstack.runtime.main >"$log" 2>&1 </dev/null &
echo $! >"$pidfile"

for _ in $(seq 1 240); do
  if healthy; then
    echo "LocalStack S3 ready on $LOCALSTACK_LISTEN (pid $(cat "$pidfile"))" >&2
    echo "$pidfile"
    exit 0
  fi
  if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "LocalStack exited while starting; its log:" >&2
    tail -50 "$log" >&2
    exit 1
  fi
  sleep 0.5
done
echo "LocalStack did not become ready in 120 s; its log:" >&2
tail -50 "$log" >&2
"$here/stop.sh"
exit 1
