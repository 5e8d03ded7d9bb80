#!/usr/bin/env bash
# Creates the virtual environment .venv (when missing) and installs nnssl with its test extras.
# Idempotent: skips the installation when the stamp file matches pyproject.toml and hatch_build.py.
# NNSSL_VENV overrides the environment folder, PYTHON the interpreter that creates it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
VENV="${NNSSL_VENV:-.venv}"
STAMP="$VENV/.nnssl_install_stamp"
TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup_env: creating $VENV with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
fi

HASH="$(cat pyproject.toml hatch_build.py | sha256sum | cut -d' ' -f1) ${TORCH_PINS[*]}"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$HASH" ]; then
    echo "setup_env: $VENV is up to date"
    exit 0
fi

echo "setup_env: installing ${TORCH_PINS[*]} (nnU-Net's trainer lookup imports torchvision)"
"$VENV/bin/python" -m pip install --disable-pip-version-check -q "${TORCH_PINS[@]}"
echo "setup_env: installing nnssl (editable, with test extras)"
"$VENV/bin/python" -m pip install --disable-pip-version-check -q -e '.[test]'
echo "$HASH" > "$STAMP"
echo "setup_env: done ($VENV)"
