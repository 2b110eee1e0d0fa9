#!/usr/bin/env bash
# Installs everything napari-sparseseg needs on a fresh Debian/Ubuntu machine with Python >= 3.10.
# Idempotent: steps already done are skipped. Run as root for the apt-get part (Xvfb + Qt's X11 libraries).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

apt_pkgs="xvfb xauth libgl1 libegl1 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0
  libxcb-render-util0 libxcb-xinerama0 libxcb-xinput0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 libdbus-1-3
  libfontconfig1"
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  missing=$(for p in $apt_pkgs; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
  if [ -n "$missing" ]; then
    echo "[install] apt-get: $missing"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  fi
fi

# torch: the pinned CPU wheel unless some torch is already there (a CUDA build stays: see README).
if ! $PY -c "import torch" 2>/dev/null; then
  echo "[install] torch==2.13.0 (CPU)"
  $PY -m pip install -q "torch==2.13.0"
fi
if ! $PY -c "import napari_sparseseg, napari, pytestqt, itk, importlinter, distributed, ome_zarr" 2>/dev/null \
   || [ "$($PY -c 'import napari_sparseseg, pathlib; print(pathlib.Path(napari_sparseseg.__file__).resolve().parent.parent)')" != "$(pwd)" ]; then
  echo "[install] pip install -e .[test]"
  $PY -m pip install -q -e ".[test]"
fi
