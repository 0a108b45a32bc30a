#!/usr/bin/env bash
# Set up .venv for KV-Lock on a fresh machine: the CPU torch wheel first (so nothing pulls a multi-GB
# CUDA build), then the project with its test tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==${KVLOCK_TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install -q -e ".[test]"
