#!/usr/bin/env bash
# One lent-GPU session's checks, in priority order, inside one time limit.
#
#   bash benchmarks/device_check.sh DATA_DIR OUT_DIR [DEADLINE_SECONDS]
#
# DATA_DIR holds the .npz volumes (../shared/data does not travel to the device
# machine: copy them into an ignored folder of the checkout and carry it).
# Each stage has its own time limit and the suite gets what is left before the
# deadline (default 560 s), so the files under OUT_DIR come back even when a
# stage is slow. Stages:
#   1. the CUDA tests (tests/test_cuda.py), prefetching on the GPU included;
#   2. the prefetcher's speed-up on CUDA (benchmarks/prefetch.py), synthetic and CT;
#   3. speed against the eager fp32 reference (benchmarks/speed.py): the 32-channel
#      net, the default net, a 256x512x512 full refresh, a cold-process first view;
#   4. the accuracy suite at a 60 s GPU budget, four processes sharing the GPU
#      (forest and interpolation come from the CPU run: same seed, same voxels).
set -u
DATA=${1:?DATA_DIR}
OUT=${2:?OUT_DIR}
DEADLINE=${3:-560}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
LOG=$OUT/log.txt
say() { echo "=== [$SECONDS s] $*" | tee -a "$LOG"; }

say "machine"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nproc
  python3 -c "import torch, numpy; print('torch', torch.__version__, 'numpy', numpy.__version__)"; } 2>&1 | tee -a "$LOG"
python3 -c "import napari_sparseseg.core.session, napari_sparseseg.evaluation.simulated_user, scipy, sklearn" 2>&1 | tee -a "$LOG" \
  || { say "imports failed"; exit 1; }

say "1. CUDA tests"
timeout 150 python3 -m pytest tests/test_cuda.py -q -p no:cacheprovider 2>&1 | tee -a "$LOG"

say "2. prefetch"
timeout 60 python3 benchmarks/prefetch.py --sample --device cuda --threads 4 --steps 80 --repeats 2 \
  --json "$OUT/prefetch.jsonl" 2>&1 | tee -a "$LOG"
timeout 60 python3 benchmarks/prefetch.py --data "$DATA/msd_spleen_ct_crop.npz" --device cuda --threads 4 \
  --steps 80 --repeats 2 --json "$OUT/prefetch.jsonl" 2>&1 | tee -a "$LOG"

say "3. speed"
{ timeout 90 python3 benchmarks/speed.py --device cuda --base 32 --patch 96 --batch 2 --ref-tf32 --volume 256 512 512
  timeout 60 python3 benchmarks/speed.py --device cuda --base 16 --patch 64 --batch 1 --ref-tf32 --steps 10
  timeout 60 python3 benchmarks/speed.py --device cuda --refresh 256 512 512
  timeout 60 python3 benchmarks/speed.py --device cuda --first-view 128 256 256 --first-view-only --warm-up
} 2>&1 | tee -a "$LOG" | tee "$OUT/speed_raw.txt"
grep '^{' "$OUT/speed_raw.txt" > "$OUT/speed.jsonl"; rm -f "$OUT/speed_raw.txt"

left=$((DEADLINE - SECONDS - 15))
say "4. suite, 60 s per row, 4 processes, $left s left"
pids=()
for f in "$DATA"/*.npz; do
  for ps in z:3,z:5,full,z:1 ortho:1,ortho:2,scribble:3; do
    timeout "$left" python3 benchmarks/suite.py --data "$f" --protocols "$ps" --budget-seconds 60 --device cuda \
      --baselines '' --threads 3 --out "$OUT/suite" >> "$OUT/suite_log.txt" 2>&1 &
    pids+=($!)
  done
done
wait "${pids[@]}"
grep -v '^|' "$OUT/suite_log.txt" | tee -a "$LOG" >/dev/null
tar -czf "$OUT/suite.tar.gz" -C "$OUT" suite && rm -rf "$OUT/suite"
say "done"
