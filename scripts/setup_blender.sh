#!/usr/bin/env bash
# Virtual environments with real Blender-as-a-module for the add-on's tests: bpy 5.0.1 on Python 3.11 and
# bpy 5.2.3 on Python 3.13, each with the client's dependencies (grpcio, protobuf, and PyAV to read strip
# media; numpy comes with bpy). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {  # pyenv's python3.X, else one on PATH that runs (a pyenv shim may not)
  local found
  found=$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$1".*/bin/"python$1" 2>/dev/null | sort -V | tail -1)
  if [ -z "$found" ] && command -v "python$1" >/dev/null && "python$1" -c "" 2>/dev/null; then
    found=$(command -v "python$1")
  fi
  echo "$found"
}

make_env() {  # folder, python version, bpy version
  local folder=$1 python
  python=$(find_python "$2")
  if [ -z "$python" ]; then
    echo "setup_blender: Python $2 not found (needed for bpy $3)" >&2
    exit 1
  fi
  [ -x "$folder/bin/python" ] || "$python" -m venv "$folder"
  "$folder/bin/python" -m pip install -q --upgrade pip
  "$folder/bin/python" -m pip install -q "bpy==$3" "grpcio==1.85.1" "protobuf==7.36.2" "av>=14"
}

make_env .venv-blender-5.0 3.11 5.0.1
make_env .venv-blender-5.2 3.13 5.2.3

# The plug-ins' Linux wheels, fetched once here so that the installers' tests need no network: grpcio and
# protobuf for the Blender extension (3.11 and 3.13), av for both plug-ins, numpy for the Resolve client (3.11).
for python in 3.11 3.13; do
  .venv-blender-5.2/bin/python -m pip download -q --no-deps --only-binary=:all: --dest .wheelhouse \
    --python-version "$python" --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 "grpcio==1.85.1" "protobuf==7.36.2"
done
.venv-blender-5.0/bin/python -m pip download -q --only-binary=:all: --dest .wheelhouse "numpy>=1.26,<2.5" "av>=14" "typing-extensions>=4.12"
