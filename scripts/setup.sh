#!/usr/bin/env bash
# Installs everything ud2m needs on a fresh Debian 12 machine; quick to re-run.
#  - Debian -dev packages for the C++ build (see README "Dependencies")
#  - a Python venv holding the PyPI torch wheel (LibTorch headers/libs/CMake config)
#    and the reference libraries the tests compare against.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${UD2M_VENV:-$HOME/.cache/ud2m/venv}"

apt_pkgs=(build-essential cmake ninja-build pkg-config
  libpng-dev libjpeg62-turbo-dev zlib1g-dev libcli11-dev nlohmann-json3-dev
  libgloo-dev libgtest-dev libgmock-dev libbenchmark-dev
  python3-skimage)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

stamp="$VENV/.ud2m-requirements"
if [[ ! -f "$stamp" ]] || ! cmp -s "$stamp" "$here/requirements.txt"; then
  echo "setup: creating Python venv at $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$stamp"
fi
echo "setup: ok (venv $VENV)"
