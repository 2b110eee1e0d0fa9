#!/usr/bin/env bash
# The main job: napari with the plugin docked on the synthetic sample volume; without a screen,
# the headless demo (paint 3 slices from ground truth, train with a progress bar, print scores).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(bash scripts/python.sh)
if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]; then
  exec "$PY" -m napari_sparseseg gui "$@"
else
  echo "No display found: running the headless demo (napari-sparseseg demo)."
  exec "$PY" -m napari_sparseseg demo --seconds "${DEMO_SECONDS:-60}"
fi
