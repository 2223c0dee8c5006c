#!/bin/bash
# Train the shipped prior inside a fixed-length slot on a CUDA machine whose
# Python holds a CUDA torch (e.g. a lent GPU box): build ud2m there (first call
# only), then train until BUDGET seconds after the start, and copy the EMA
# prior, loss curve and sample grid to OUT. A second call on the same machine
# resumes from build-gpu/prior-run/checkpoint.safetensors.
#
#   BUDGET=540 OUT=/path/out DATA=.gpu/data/list.txt [INIT=models/ud2m-small-64.safetensors] \
#   GLOO=.gpu/include bash scripts/train_prior_slot.sh
#
# DATA: a list file of the training photos (copy data/prior_train.txt's files
# next to the checkout and list them with relative paths when the machine has
# no Debian packages). GLOO: a folder holding gloo/ headers (Debian's
# /usr/include/gloo), needed when the machine has none. INIT: start a new run
# from these weights (the full checkpoint rarely travels back).
set -uo pipefail
T0=$(date +%s)
BUDGET=${BUDGET:-570}
OUT=${OUT:?set OUT to a folder for the results}
DATA=${DATA:-data/prior_train.txt}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
if [ ! -x build-gpu/ud2m ]; then
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DUD2M_BUILD_TESTS=OFF -DUD2M_BUILD_BENCH=OFF \
    -DTORCH_CUDA_ARCH_LIST=9.0 ${GLOO:+-DUD2M_GLOO_INCLUDE_DIR=$PWD/$GLOO} > "$OUT/cmake.txt" 2>&1 \
    || { tail -40 "$OUT/cmake.txt"; exit 1; }
  cmake --build build-gpu --target ud2m -j"$(nproc)" > "$OUT/build.txt" 2>&1 \
    || { grep -B2 -A12 "error" "$OUT/build.txt" | head -80; exit 1; }
fi
echo "build done after $(( $(date +%s) - T0 )) s"
LEFT=$(( BUDGET - ($(date +%s) - T0) - 30 ))
echo "training for $LEFT s"
build-gpu/ud2m train-prior --device cuda --data "$DATA" --out build-gpu/prior-run \
  --config ud2m-small-64 --batch 256 --steps 1000000 --save-every 1000 --sample-every 1000000 \
  --max-time "$LEFT" ${INIT:+--init "$INIT"} 2>&1 | tee "$OUT/train.txt"
cp build-gpu/prior-run/prior.safetensors build-gpu/prior-run/loss.csv build-gpu/prior-run/samples.png "$OUT/"
echo "total $(( $(date +%s) - T0 )) s"
