#!/usr/bin/env bash
# Sets up, builds, and runs the whole test suite (GoogleTest through ctest;
# Python only writes the reference files the tests compare against).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
bash "$here/scripts/build.sh"
cd "${UD2M_BUILD_DIR:-$here/build}"
ctest --output-on-failure -j"$(nproc)" "$@"
