#!/usr/bin/env bash
# Sets up .venv if needed, then runs the nnssl demo (options are passed on, e.g. --quick, --out DIR).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/setup_env.sh
VENV="${NNSSL_VENV:-.venv}"
exec "$VENV/bin/nnssl_demo" "$@"
