#!/usr/bin/env bash
# Sets up .venv if needed, then runs the whole test suite (options are passed on to pytest).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/setup_env.sh
VENV="${NNSSL_VENV:-.venv}"
exec "$VENV/bin/python" -m pytest -q -rfEs -p no:cacheprovider tests "$@"
