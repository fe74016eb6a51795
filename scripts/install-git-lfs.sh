#!/usr/bin/env bash
# Makes the real git-lfs client (Debian's package) available to the tests: one on PATH
# is used as it is; otherwise the package is downloaded and unpacked into the cache
# directory ($STOWAGE_CACHE_DIR/git-lfs), without installing anything system-wide.
# Prints the directory to put on PATH.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../localstack/env.sh"

if command -v git-lfs >/dev/null 2>&1; then
  dirname "$(command -v git-lfs)"
  exit 0
fi
dest="$STOWAGE_CACHE_DIR/git-lfs"
if [ -x "$dest/usr/bin/git-lfs" ]; then
  echo "$dest/usr/bin"
  exit 0
fi
echo "installing git-lfs (Debian package) into $dest" >&2
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
fetch() { (cd "$work" && apt-get download git-lfs >/dev/null 2>&1); }
if ! fetch; then
  # A fresh machine may have no package lists yet.
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq >/dev/null
  elif command -v sudo >/dev/null; then
    sudo apt-get update -qq >/dev/null
  fi
  fetch || { echo "could not download Debian's git-lfs package" >&2; exit 1; }
fi
rm -rf "$dest.tmp"
mkdir -p "$dest.tmp"
dpkg-deb -x "$work"/git-lfs_*.deb "$dest.tmp"
"$dest.tmp/usr/bin/git-lfs" version >&2
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "$dest/usr/bin"
