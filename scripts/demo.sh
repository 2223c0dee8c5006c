#!/usr/bin/env bash
# Sets up, builds, and runs the demo: degrade the bundled example image and
# restore it, writing demo_out/panel.png. Extra arguments go to `ud2m demo`.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
bash "$here/scripts/build.sh"
"${UD2M_BUILD_DIR:-$here/build}/ud2m" demo --out-dir "$here/demo_out" "$@"
