#!/usr/bin/env bash
# One lent-GPU session's checks, in priority order, inside one time limit.
#
#   bash benchmarks/device_check.sh DATA_DIR OUT_DIR [DEADLINE_SECONDS]
#
# DATA_DIR holds the .npz volumes (../shared/data does not travel to the device
# machine: copy them into an ignored folder of the checkout, e.g. .data/, and
# carry it). Each stage has its own time limit inside the deadline (default
# 540 s), so the files under OUT_DIR come back even when a stage is slow.
# Stages:
#   1. the CUDA tests (tests/test_cuda.py), prefetching on the GPU included;
#   2. the first minute on the GPU (BENCHMARKS.md, "First five minutes"): the
#      window's loop (first responder, hand-over, net) for 60 s on every volume
#      of DATA_DIR and the sample, z:1, z:3 and scribble:3, one process per
#      volume sharing the GPU; the forest's Dice comes from the CPU run of the
#      same seed and labels (--baselines-from);
#   3. speed against the eager fp32 reference (benchmarks/speed.py): the 32-channel
#      net, the default net, a 256x512x512 full refresh, a cold-process first view.
# DEVICE=cpu BUDGET=5 runs the same steps on a machine without a GPU, to check
# the script itself.
set -u
DATA=${1:?DATA_DIR}
OUT=${2:?OUT_DIR}
DEADLINE=${3:-540}
DEVICE=${DEVICE:-cuda}
BUDGET=${BUDGET:-60}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
LOG=$OUT/log.txt
say() { echo "=== [$SECONDS s] $*" | tee -a "$LOG"; }
left() { local s=$((DEADLINE - SECONDS - ${1:-0})); echo $((s > 1 ? s : 1)); }   # seconds to the deadline, less $1

say "machine"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "no nvidia-smi"; nproc
  python3 -c "import torch, numpy; print('torch', torch.__version__, 'numpy', numpy.__version__)"; } 2>&1 | tee -a "$LOG"
python3 -c "import napari_sparseseg.core.session, napari_sparseseg.evaluation.simulated_user, scipy, sklearn" 2>&1 | tee -a "$LOG" \
  || { say "imports failed"; exit 1; }

say "1. CUDA tests"
timeout 150 python3 -m pytest tests/test_cuda.py -q -p no:cacheprovider 2>&1 | tee -a "$LOG"

SUITE=(benchmarks/suite.py --protocols z:1,z:3,scribble:3 --budget-seconds "$BUDGET" --device "$DEVICE"
       --baselines '' --threads 3 --out "$OUT/first_minute_gpu"
       --baselines-from benchmarks/results/first_minute_cpu_300s)
say "2. first minute, $BUDGET s per row, one process per volume, $(left 100) s left"
pids=()
for data in "$DATA"/*.npz none; do
  extra=(); [ "$data" = none ] && extra=(--sample)
  timeout "$(left 100)" python3 "${SUITE[@]}" --data "$data" "${extra[@]}" \
    > "$OUT/first_minute_$(basename "$data" .npz).log" 2>&1 &
  pids+=($!)
done
wait "${pids[@]}"
python3 "${SUITE[@]}" --data "$DATA" --sample 2>&1 | tail -n 60 | tee -a "$LOG"   # every run exists: the summary

say "3. speed, $(left 15) s left"
{ timeout "$(left 15)" python3 benchmarks/speed.py --device "$DEVICE" --base 16 --patch 64 --batch 1 --ref-tf32 --steps 10
  timeout "$(left 15)" python3 benchmarks/speed.py --device "$DEVICE" --base 32 --patch 96 --batch 2 --ref-tf32 \
    --volume 256 512 512
  timeout "$(left 15)" python3 benchmarks/speed.py --device "$DEVICE" --refresh 256 512 512
  timeout "$(left 15)" python3 benchmarks/speed.py --device "$DEVICE" --first-view 128 256 256 --first-view-only --warm-up
} 2>&1 | tee -a "$LOG" | grep '^{' > "$OUT/speed.jsonl"
say "done"
