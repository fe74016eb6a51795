#!/usr/bin/env bash
# Measures, in one run on one machine, stowage (filesystem store) against
# `git http-backend` behind nginx + fcgiwrap serving the same repository:
#   - bare clone wall time (median of $RUNS, alternating servers);
#   - server CPU and bytes sent for full, --depth 1 and --filter=blob:none clones;
#   - stowage's peak RSS while receiving a ~200 MB push, and while serving its clone;
#   - with S3_URL set (an existing bucket, for example on LocalStack), stowage's store requests
#     for a push of the corpus, a full clone and a no-op fetch.
# The full benchmark of BENCHMARKS.md is bench/run.sh; this script remains for the S3
# request counts. Installs nginx and fcgiwrap (Debian packages) when missing. Not part of the tests.
#
#   bench/clone_vs_http_backend.sh                 # clone + RSS figures
#   S3_URL=s3://bench bench/clone_vs_http_backend.sh   # and S3 request counts
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/localstack/env.sh"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$STOWAGE_CACHE_DIR/target}"
RUNS="${RUNS:-7}"
COMMITS="${COMMITS:-5000}"
FILES="${FILES:-3000}"
BIG_MB="${BIG_MB:-200}"

if ! command -v nginx >/dev/null || ! command -v fcgiwrap >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx fcgiwrap >/dev/null
fi
(cd "$ROOT" && cargo build --release -q)
STOWAGE="$CARGO_TARGET_DIR/release/stowage"

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  # fcgiwrap's prefork workers outlive its first process.
  pkill -f "fcgiwrap -c 4 -s unix:$WORK/fcgi.sock" 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
export HOME="$WORK/home" GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
mkdir -p "$HOME" "$WORK/srv" "$WORK/tmp"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
peak_rss_mb() { awk '/VmHWM/ { printf "%.0f", $2/1024 }' "/proc/$1/status"; }
start_stowage() { # store-url -> sets SPID and SURL
  local port; port=$(free_port)
  # Without access control, as git http-backend is measured.
  "$STOWAGE" serve --listen "127.0.0.1:$port" --store "$1" --no-auth >"$WORK/stowage-$port.log" 2>&1 &
  SPID=$!; PIDS+=("$SPID"); SURL="http://127.0.0.1:$port"
  for _ in $(seq 1 100); do curl -fs "$SURL/-/stats" >/dev/null 2>&1 && return; sleep 0.1; done
  echo "stowage did not start" >&2; exit 1
}
store_requests() { curl -fs "$SURL/-/stats" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["store_requests_total"], json.dumps(d["store_requests"]))'; }

echo "== corpus: $COMMITS commits over $FILES files"
git init -q --bare "$WORK/srv/corpus.git"
python3 "$ROOT/bench/gen_corpus.py" --commits "$COMMITS" --files "$FILES" | git -C "$WORK/srv/corpus.git" fast-import --quiet --done
git -C "$WORK/srv/corpus.git" symbolic-ref HEAD refs/heads/main
git -C "$WORK/srv/corpus.git" gc -q
git -C "$WORK/srv/corpus.git" config http.receivepack true
echo "objects: $(git -C "$WORK/srv/corpus.git" count-objects -v | awk '/in-pack/ {print $2}'), pack: $(du -sh "$WORK/srv/corpus.git/objects/pack" | cut -f1)"

echo "== git http-backend (nginx + fcgiwrap)"
fcgiwrap -c 4 -s "unix:$WORK/fcgi.sock" &
FPID=$!; PIDS+=("$FPID")
HPORT=$(free_port)
CPORT=$(free_port)
cat >"$WORK/nginx.conf" <<NGINX
user root;
worker_processes 2;
daemon on;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $WORK/tmp/body;
  fastcgi_temp_path $WORK/tmp/fastcgi;
  proxy_temp_path $WORK/tmp/proxy;
  uwsgi_temp_path $WORK/tmp/uwsgi;
  scgi_temp_path $WORK/tmp/scgi;
  server {
    listen 127.0.0.1:$HPORT;
    client_max_body_size 0;
    location / {
      include /etc/nginx/fastcgi_params;
      fastcgi_buffering off;
      fastcgi_request_buffering off;
      fastcgi_param SCRIPT_FILENAME $(git --exec-path)/git-http-backend;
      fastcgi_param GIT_PROJECT_ROOT $WORK/srv;
      fastcgi_param GIT_HTTP_EXPORT_ALL "";
      fastcgi_param PATH_INFO \$uri;
      fastcgi_param GIT_PROTOCOL \$http_git_protocol;
      fastcgi_pass unix:$WORK/fcgi.sock;
    }
  }
  server {
    listen 127.0.0.1:$CPORT;
    client_max_body_size 0;
    location / {
      include /etc/nginx/fastcgi_params;
      fastcgi_buffering off;
      fastcgi_request_buffering off;
      fastcgi_param SCRIPT_FILENAME $WORK/http-backend-cpu;
      fastcgi_param GIT_PROJECT_ROOT $WORK/srv;
      fastcgi_param GIT_HTTP_EXPORT_ALL "";
      fastcgi_param PATH_INFO \$uri;
      fastcgi_param GIT_PROTOCOL \$http_git_protocol;
      fastcgi_pass unix:$WORK/fcgi.sock;
    }
  }
}
NGINX
# The same backend, through a wrapper that logs each request's CPU seconds.
printf '#!/bin/sh\nexec python3 %s %s %s\n' "$ROOT/bench/rusage_wrap.py" "$WORK/backend-cpu.log" "$(git --exec-path)/git-http-backend" >"$WORK/http-backend-cpu"
chmod +x "$WORK/http-backend-cpu"
sleep 0.3
nginx -c "$WORK/nginx.conf" -p "$WORK"
HURL="http://127.0.0.1:$HPORT"

echo "== stowage (filesystem store, release build)"
start_stowage "file://$WORK/stowage-data"
git -C "$WORK/srv/corpus.git" push -q "$SURL/corpus.git" 'refs/*:refs/*'

python3 "$ROOT/bench/measure_clone.py" "$RUNS" "http-backend=$HURL/corpus.git" "stowage=$SURL/corpus.git" | tee "$WORK/clone.txt"
field() { awk -v n="$1" -v f="$2" '$1 == n { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == f) print kv[2] } }' "$WORK/clone.txt"; }
printf 'bare clone, median of %d: wall time ratio stowage/http-backend %.2f\n' "$RUNS" \
  "$(echo "$(field stowage wall) / $(field http-backend wall)" | bc -l)"

# Server CPU, counted exactly: git http-backend's processes through the wrapper,
# stowage's from its /proc entry. Bytes: the size of the pack each clone received.
proc_cpu() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"; }
pack_bytes() { du -cb "$1"/objects/pack/*.pack | tail -1 | cut -f1; }
cpu_row() { # label, extra clone arguments...
  local label="$1"; shift
  : >"$WORK/backend-cpu.log"
  local s0 hb=0 sb=0 i
  s0=$(proc_cpu "$SPID")
  for i in $(seq 1 "$RUNS"); do
    git clone -q --bare "$@" "http://127.0.0.1:$CPORT/corpus.git" "$WORK/cpu-h$i"
    hb=$(pack_bytes "$WORK/cpu-h$i"); rm -rf "$WORK/cpu-h$i"
    git clone -q --bare "$@" "$SURL/corpus.git" "$WORK/cpu-s$i"
    sb=$(pack_bytes "$WORK/cpu-s$i"); rm -rf "$WORK/cpu-s$i"
  done
  local hcpu scpu
  hcpu=$(awk -v n="$RUNS" '{ t += $1 } END { print t / n }' "$WORK/backend-cpu.log")
  scpu=$(echo "($(proc_cpu "$SPID") - $s0) / $RUNS" | bc -l)
  printf '%-18s server CPU: http-backend %.3f s, stowage %.3f s, ratio %.2f; bytes: http-backend %d, stowage %d, ratio %.2f\n' \
    "$label" "$hcpu" "$scpu" "$(echo "$scpu / $hcpu" | bc -l)" "$hb" "$sb" "$(echo "$sb / $hb" | bc -l)"
}
git -C "$WORK/srv/corpus.git" config uploadpack.allowFilter true
[ -n "${KEEP:-}" ] && echo "work dir: $WORK"
cpu_row "full clone"
cpu_row "--depth 1" --depth 1
cpu_row "--filter=blob:none" --filter=blob:none

if [ "$BIG_MB" -gt 0 ]; then
echo "== peak RSS: ${BIG_MB} MB push and its clone"
big="$WORK/big"
git init -q -b main "$big"
python3 - "$big" "$BIG_MB" <<'PY'
import os, random, sys
root, mb = sys.argv[1], int(sys.argv[2])
rng = random.Random(7)
for i in range(mb // 10):
    with open(os.path.join(root, f"blob{i:03d}.bin"), "wb") as f:
        f.write(rng.randbytes(10 * 1024 * 1024))
PY
git -C "$big" add -A
git -C "$big" -c user.name=b -c user.email=b@b commit -q -m "big data"
start_stowage "file://$WORK/big-data"
git -C "$big" push -q "$SURL/big.git" main
echo "stowage peak RSS during the push: $(peak_rss_mb "$SPID") MB"
kill "$SPID"
start_stowage "file://$WORK/big-data"
git clone -q --bare "$SURL/big.git" "$WORK/big-clone"
echo "stowage peak RSS during its clone: $(peak_rss_mb "$SPID") MB"
kill "$SPID"
fi

if [ -n "${S3_URL:-}" ]; then
  echo "== store requests on $S3_URL"
  start_stowage "$S3_URL"
  r0=$(store_requests | cut -d' ' -f1)
  git -C "$WORK/srv/corpus.git" push -q "$SURL/corpus.git" 'refs/*:refs/*'
  echo "push of the corpus: $(( $(store_requests | cut -d' ' -f1) - r0 )) requests ($(store_requests | cut -d' ' -f2-) so far)"
  r0=$(store_requests | cut -d' ' -f1)
  git clone -q --bare "$SURL/corpus.git" "$WORK/s3-clone"
  echo "full clone (v2): $(( $(store_requests | cut -d' ' -f1) - r0 )) requests"
  r0=$(store_requests | cut -d' ' -f1)
  git -C "$WORK/s3-clone" fetch -q "$SURL/corpus.git" 'refs/*:refs/*'
  echo "no-op fetch (v2): $(( $(store_requests | cut -d' ' -f1) - r0 )) requests"
  (cd "$WORK/s3-clone" && git -c user.name=b -c user.email=b@b commit-tree -m small -p "$(git rev-parse main)" "$(git rev-parse 'main^{tree}')" >"$WORK/newcommit")
  r0=$(store_requests | cut -d' ' -f1)
  git -C "$WORK/s3-clone" push -q "$SURL/corpus.git" "$(cat "$WORK/newcommit"):refs/heads/main"
  echo "push of one commit: $(( $(store_requests | cut -d' ' -f1) - r0 )) requests"
fi
