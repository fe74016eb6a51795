#!/usr/bin/env bash
# Installs LocalStack (S3 only, no Docker) into a virtualenv in the cache directory.
# Idempotent: does nothing when the virtualenv already holds the pinned version.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/env.sh"

# pyOpenSSL 26 dropped X509.add_extensions, which LocalStack 4.12 uses for its certificate.
requirements=("localstack-core[runtime]==$LOCALSTACK_VERSION" 'cbor2<6' 'psutil<7.2' 'pyopenssl<26')
if [ -x "$LOCALSTACK_VENV/bin/python" ] && [ "$(cat "$LOCALSTACK_VENV/.installed" 2>/dev/null)" = "${requirements[*]}" ]; then
  exit 0
fi
echo "installing LocalStack $LOCALSTACK_VERSION into $LOCALSTACK_VENV" >&2
mkdir -p "$(dirname "$LOCALSTACK_VENV")"
rm -rf "$LOCALSTACK_VENV"
python3 -m venv "$LOCALSTACK_VENV"
"$LOCALSTACK_VENV/bin/pip" install --quiet --disable-pip-version-check "${requirements[@]}"
echo "${requirements[*]}" >"$LOCALSTACK_VENV/.installed"
