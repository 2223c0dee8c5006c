#!/bin/bash
# One call on a lent GPU that makes the most of a short visit: build, time
# ADM-256 while the GPU is idle, then train the runs below side by side while
# the GPU tests run, and pack what must come back into files in $OUT (a device
# call brings back at most 8 files of at most 16 MiB: one per adapter run, two
# for NCVSD, one of logs).
#
#   MODE=first SLOT=560 OUT=$OUT bash scripts/gpu_visit.sh      # carrying .gpu (bench/gpu.sh --prepare)
#   MODE=continue SLOT=240 OUT=$OUT bash scripts/gpu_visit.sh   # the same machine, still warm: train on
#
# SLOT: seconds until everything is packed (leave the call's timeout ~20 s more).
# ADAPTERS: the UD2M runs, NAME:TASK[:NxK] each, continuing models/ud2m-small-64-NAME.adapter.safetensors
# (LoRA widened to the residual blocks where it had none; NxK, e.g. 1x9: trained
# for N sampling steps of K blocks instead of the adapter's); NCVSD=0 leaves the
# generator out; PROFILE=0 skips the step profile of the first adapter run (of the NCVSD run
# when there is none).
# The runs live in /tmp/ud2m-runs/ and resume from there (not under .gpu: a
# call that carries .gpu replaces it, runs and all). This is how
# the shipped SR adapter's last 1,062 steps and the shipped NCVSD generator
# were trained (2026-11-27, H200). The runs share the cores: processes with a
# full-size CPU thread pool each would oversubscribe them.
set -uo pipefail
T0=$(date +%s); END=$((T0 + ${SLOT:-560})); MODE=${MODE:-first}
ADAPTERS=${ADAPTERS-"sr:sr inpainting:inpainting_random:1x9"}; NCVSD=${NCVSD:-1}  # ADAPTERS="": none
OUT=${OUT:?set OUT to a folder for the results}
LOG=/tmp/visit-$MODE; RUNS=/tmp/ud2m-runs; mkdir -p "$LOG" "$RUNS" "$OUT"
left() { echo $(( END - $(date +%s) )); }
say() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
pack() {
  local d
  for d in "$RUNS"/ud2m-*; do
    [ -d "$d" ] && tar czf "$OUT/$MODE-$(basename "$d").tgz" -C "$d" .
  done
  d=$RUNS/ncvsd
  if [ -d $d ]; then  # its checkpoint (213 MB) cannot come back
    [ -f $d/generator.safetensors ] && cp $d/generator.safetensors "$OUT/$MODE-ncvsd-generator.safetensors"
    tar czf "$OUT/$MODE-ncvsd.tgz" -C $d --exclude checkpoint.safetensors --exclude generator.safetensors .
  fi
  tar czf "$OUT/$MODE-logs.tgz" -C /tmp "visit-$MODE"
  ls -la "$OUT"
}
# train_adapter NAME:TASK[:NxK] [profile]: continue the shipped adapter models/ud2m-small-64-NAME.adapter.safetensors;
# "profile" records its steps 4-8 (train --profile) for the summary printed at the end.
PROFILE_TRACE=/tmp/ud2m-train-profile.json  # not under $LOG: too big to come back
train_adapter() {
  local name task shape profile=() unroll=()
  IFS=: read -r name task shape <<< "$1"
  [ -n "$shape" ] && unroll=(--sample-steps "${shape%x*}" --blocks "${shape#*x}")
  [ "${2:-}" = profile ] && profile=(--profile $PROFILE_TRACE)
  OMP_NUM_THREADS=$THREADS build-gpu/ud2m train --method ud2m --prior models/ud2m-small-64.safetensors "${profile[@]}" "${unroll[@]}" \
    --data .gpu/data/train.txt --val-data .gpu/data/val.txt --task "$task" --sigma 0.01 \
    --lora-placement attention+resblocks --init-adapter "models/ud2m-small-64-$name.adapter.safetensors" \
    --batch 64 --steps 100000 --w-adv 0.1 --perceptual none --save-every 200 --val-every 200 \
    --device cuda --out "$RUNS/ud2m-$name" --max-time $TRAIN > "$LOG/train_ud2m_$name.txt" 2>&1
}
if [ "$MODE" = first ]; then
  STAGES=build OUT=$LOG bash bench/gpu.sh > "$LOG/gpu_build.txt" 2>&1 || { tail -60 "$LOG/gpu_build.txt"; pack; exit 1; }
  say "built"
  STAGES=bench CONFIGS=adm-256-uncond COMPILE= OUT=$LOG timeout 200 bash bench/gpu.sh > "$LOG/gpu_bench.txt" 2>&1
  say "bench rc=$?"; tail -70 "$LOG/gpu_bench.txt"
fi
TRAIN=$(( $(left) - 45 ))
RUN_COUNT=$(( $(wc -w <<< "$ADAPTERS") + NCVSD ))
THREADS=$(( $(nproc) / (RUN_COUNT > 0 ? RUN_COUNT : 1) ))
say "training $RUN_COUNT runs for $TRAIN s, $THREADS threads each"
PIDS=()
extra=$([ "${PROFILE:-1}" = 1 ] && echo profile)  # PROFILE=0: no step profile
for spec in $ADAPTERS; do train_adapter "$spec" $extra & PIDS+=($!); extra=; done
if [ "$NCVSD" = 1 ]; then
  ncvsd_profile=()  # the step profile, when no adapter run took it
  [ -n "$extra" ] && ncvsd_profile=(--profile $PROFILE_TRACE)
  OMP_NUM_THREADS=$THREADS build-gpu/ud2m train --method ncvsd --prior models/ud2m-small-64.safetensors "${ncvsd_profile[@]}" \
    --init-generator models/ud2m-small-64-ncvsd.generator.safetensors \
    --data .gpu/data/train.txt --crop 64 --batch 64 --steps 1000000 --generator-lr 1e-4 --save-every 500 \
    --device cuda --out $RUNS/ncvsd --max-time $TRAIN > "$LOG/train_ncvsd.txt" 2>&1 &
  PIDS+=($!)
fi
if [ "$MODE" = first ]; then
  timeout $(( $(left) - 30 )) build-gpu/tests/ud2m_tests --gtest_filter='Cuda.*:GraphedDenoiser.*' > "$LOG/tests.txt" 2>&1
  say "tests rc=$?"; grep -E "^\[ +(FAILED|PASSED|OK) |Failure|Expected|Which is" "$LOG/tests.txt" | head -60
fi
for pid in "${PIDS[@]}"; do wait "$pid"; done
for log in "$LOG"/train_*.txt; do say "$(basename "$log" .txt):"; tail -4 "$log"; done
if [ -f $PROFILE_TRACE ]; then  # where a training step's time goes, by operator and by kernel
  say "profile of one training run's steps 4-8:"; python3 bench/op_times.py $PROFILE_TRACE --top 25 | tee "$LOG/train_profile.txt"
  rm -f $PROFILE_TRACE
fi
pack
say "done"
