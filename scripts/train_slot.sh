#!/bin/bash
# Train inside a fixed-length slot on a CUDA machine whose Python holds a CUDA
# torch (e.g. a lent GPU box): build ud2m there (first call only), run one
# `ud2m train-prior` or `ud2m train` command on the GPU until BUDGET seconds
# after the start, and copy what the run wrote (files up to 16 MiB: the model,
# a small checkpoint, loss curves, sample grid) to OUT.
#
#   BUDGET=540 OUT=/path/out RUN=ud2m-sr bash scripts/train_slot.sh \
#     train --method ud2m --prior models/ud2m-small-64.safetensors --data .gpu/data/train.txt --task sr ...
#   BUDGET=540 OUT=/path/out RUN=prior bash scripts/train_slot.sh \
#     train-prior --config ud2m-small-64 --data .gpu/data/train.txt --batch 256 --steps 1000000 --save-every 1000
#
# The run lives in .gpu/runs/RUN: put a checkpoint that came back from an
# earlier slot there (carrying .gpu) and the same command resumes it. The
# script adds --out, --device cuda and --max-time. `bash bench/gpu.sh
# --prepare` fills .gpu/ with what such a machine lacks: the training photos
# and validation photos (.gpu/data/train.txt, .gpu/data/val.txt) and Gloo's
# headers (.gpu/include).
set -uo pipefail
T0=$(date +%s)
BUDGET=${BUDGET:-570}
OUT=${OUT:?set OUT to a folder for the results}
RUN=${RUN:?set RUN to the name of the run (its folder is .gpu/runs/RUN)}
[[ $# -ge 1 ]] || { echo "usage: ... bash scripts/train_slot.sh train|train-prior OPTIONS" >&2; exit 2; }
run_dir=.gpu/runs/$RUN
mkdir -p "$OUT" "$run_dir"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
if [ ! -x build-gpu/ud2m ]; then  # the same configuration as bench/gpu.sh, the binary alone
  STAGES=build TARGETS=ud2m BUILD=build-gpu OUT="$OUT" bash bench/gpu.sh || exit 1
fi
echo "build done after $(( $(date +%s) - T0 )) s"
LEFT=$(( BUDGET - ($(date +%s) - T0) - 30 ))
echo "training for $LEFT s in $run_dir"
build-gpu/ud2m "$@" --device cuda --out "$run_dir" --max-time "$LEFT" 2>&1 | tee "$OUT/train.txt"
status=${PIPESTATUS[0]}
find "$run_dir" -maxdepth 1 -type f -size -16777216c -exec cp {} "$OUT/" \;
ls -la "$run_dir"
echo "total $(( $(date +%s) - T0 )) s"
exit "$status"
