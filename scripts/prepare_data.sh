#!/usr/bin/env bash
# Installs the Debian packages whose photographs train the shipped prior
# (listed in data/prior_train.txt) and those of the validation photographs
# (data/val_images.txt); the held-out test photos come with python3-skimage,
# installed by scripts/setup.sh. Only needed for training.
set -euo pipefail
pkgs=(plasma-workspace-wallpapers opencv-doc lomiri-wallpapers-16.04 python-matplotlib-data python3-sklearn)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
here="$(cd "$(dirname "$0")/.." && pwd)"
count() {  # photographs listed in $1, each checked to exist
  local n=0 path
  while read -r path; do
    [[ -z "$path" || "$path" == \#* ]] && continue
    [[ -f "$path" ]] || { echo "prepare_data: missing $path (listed in $1)" >&2; exit 1; }
    n=$((n + 1))
  done < "$1"
  echo "$n"
}
train=$(count "$here/data/prior_train.txt")
val=$(count "$here/data/val_images.txt")
echo "prepare_data: ok ($train training photographs, $val validation photographs)"
