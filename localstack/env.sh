# Shared settings for the LocalStack scripts; sourced, not run.
# The virtualenv lives outside the clone so a second run on the same machine reuses it.
STOWAGE_CACHE_DIR="${STOWAGE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/stowage}"
LOCALSTACK_VERSION="4.12.0"
LOCALSTACK_VENV="${LOCALSTACK_VENV:-$STOWAGE_CACHE_DIR/localstack-$LOCALSTACK_VERSION}"
LOCALSTACK_LISTEN="${LOCALSTACK_LISTEN:-127.0.0.1:4566}"
LOCALSTACK_STATE="${LOCALSTACK_STATE:-$STOWAGE_CACHE_DIR/localstack-run}"
