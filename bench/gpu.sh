#!/usr/bin/env bash
# The GPU checks in one call on a CUDA machine (e.g. a lent H100): build ud2m
# with CUDA, run the GPU tests, then time one forward pass (ADM-256 and ADM
# FFHQ at 256², batch 1) as C++ eager / bf16 / CUDA graph against PyTorch eager
# and torch.compile, with bench/adm_forward.py.
#
#   bash bench/gpu.sh --prepare          # here, once: fills .gpu/ (ignored by git)
#   OUT=/path bash bench/gpu.sh          # there, carrying .gpu; logs go to $OUT
#
# .gpu/ holds what such a machine may lack: Gloo's headers (Debian's
# libgloo-dev), wheels of deepinv (the PyTorch peer's network) and natsort,
# and the training and validation photos for scripts/train_slot.sh
# (.gpu/data/train.txt, .gpu/data/val.txt).
# STAGES (default "build test bench") picks what runs; CONFIGS the networks;
# COMPILE the torch.compile mode of the peer (empty: none).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
if [[ "${1:-}" == "--prepare" ]]; then
  mkdir -p .gpu/include .gpu/wheels
  cp -r /usr/include/gloo .gpu/include/
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .gpu/wheels deepinv==0.5.0 natsort
  ls .gpu/wheels
  # The training photos, their short side at 512 px: the crop datasets use them
  # at short sides 64-512 only (64-pixel crops at four scales), and at full
  # size they would not fit beside the checkout in what a device call carries.
  bash scripts/prepare_data.sh > /dev/null
  "${UD2M_VENV:-$HOME/.cache/ud2m/venv}/bin/python" - <<'PY'  # the project's venv (scripts/setup.sh) has Pillow
import os
from PIL import Image
os.makedirs(".gpu/data", exist_ok=True)
for source, name in (("data/prior_train.txt", "train"), ("data/val_images.txt", "val")):
    paths = [l.split()[0] for l in open(source) if l.strip() and not l.startswith("#")]
    copies = []
    for i, path in enumerate(paths):
        image = Image.open(path).convert("RGB")
        scale = 512 / min(image.size)
        if scale < 1:
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
        copies.append(f".gpu/data/{name}_{i:03d}.jpg")
        image.save(copies[-1], quality=95)
    open(f".gpu/data/{name}.txt", "w").write("\n".join(copies) + "\n")
    size = sum(os.path.getsize(c) for c in copies) / 2**20
    print(f"{len(copies)} photos of {source} in .gpu/data/{name}.txt, {size:.1f} MiB")
PY
  exit 0
fi
OUT=${OUT:-out/gpu}
STAGES=${STAGES:-build test bench}
CONFIGS=${CONFIGS:-adm-256-uncond adm-ffhq-256}
COMPILE=${COMPILE-reduce-overhead}  # COMPILE= skips the torch.compile row (~70 s to compile on an H200)
BUILD=${BUILD:-build-gpu}
TARGETS=${TARGETS:-ud2m ud2m_tests adm_forward}  # scripts/train_slot.sh builds ud2m alone
mkdir -p "$OUT"
T0=$(date +%s)
elapsed() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
if [[ -d .gpu/wheels ]]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/ud2m-site \
    .gpu/wheels/*.whl
  export PYTHONPATH=/tmp/ud2m-site${PYTHONPATH:+:$PYTHONPATH}
fi
if [[ " $STAGES " == *" build "* ]]; then
  gloo=()
  [[ -d .gpu/include/gloo && ! -d /usr/include/gloo ]] && gloo=(-DUD2M_GLOO_INCLUDE_DIR="$here/.gpu/include")
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DUD2M_PYTHON="$(command -v python3)" -DTORCH_CUDA_ARCH_LIST=9.0 -DUD2M_CUDA_ARCHITECTURES=90 \
    -DUD2M_BUILD_TESTS=ON -DUD2M_BUILD_BENCH=ON "${gloo[@]}" > "$OUT/cmake.txt" 2>&1 \
    || { tail -40 "$OUT/cmake.txt"; exit 1; }
  ninja -C "$BUILD" $TARGETS > "$OUT/build.txt" 2>&1 \
    || { grep -B2 -A12 "error" "$OUT/build.txt" | head -80; exit 1; }
  elapsed "built"
fi
if [[ " $STAGES " == *" test "* ]]; then
  "$BUILD/tests/ud2m_tests" --gtest_filter='Cuda.*:GraphedDenoiser.*' 2>&1 | tee "$OUT/tests.txt"
  elapsed "GPU tests done"
fi
if [[ " $STAGES " == *" bench "* ]]; then
  for config in $CONFIGS; do
    PYTHONUNBUFFERED=1 python3 bench/adm_forward.py --build "$BUILD" --config "$config" --device cuda \
      --iters 50 --trace "$OUT/trace_$config.json" ${COMPILE:+--compile "$COMPILE"} 2>&1 | tee "$OUT/adm_forward_$config.txt"
    elapsed "$config timed"
  done
fi
