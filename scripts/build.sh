#!/usr/bin/env bash
# Installs what is missing (scripts/setup.sh), then configures and builds ud2m
# into build/ (or $UD2M_BUILD_DIR).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
bash "$here/scripts/setup.sh"
VENV="${UD2M_VENV:-$HOME/.cache/ud2m/venv}"
BUILD="${UD2M_BUILD_DIR:-$here/build}"
cmake -S "$here" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DUD2M_PYTHON="$VENV/bin/python" >/dev/null
ninja -C "$BUILD" -j"$(nproc)"
