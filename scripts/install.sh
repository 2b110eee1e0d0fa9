#!/usr/bin/env bash
# Installs everything napari-sparseseg needs on a fresh Debian/Ubuntu machine with Python >= 3.10.
# Idempotent: steps already done are skipped. Run as root for the apt-get part (Xvfb + Qt's X11 libraries).
set -euo pipefail
cd "$(dirname "$0")/.."

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

# The interpreter: this environment's, or the project's .venv where the system manages its python (PEP 668).
PY=$(bash scripts/python.sh)

# torch 2.13.0 unless some torch is already there (a CUDA build you installed stays). From PyPI on Linux x86_64 that
# is the CUDA build (several GB of NVIDIA libraries); TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu takes the
# CPU build (a 192 MB wheel, 754 MB installed). A machine that carries a local torch wheel (a pip find-links
# setting) takes that.
if ! $PY -c "import torch" 2>/dev/null; then
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    echo "[install] torch==2.13.0 from $TORCH_INDEX_URL"
    $PY -m pip install -q "torch==2.13.0" --index-url "$TORCH_INDEX_URL"
  else
    echo "[install] torch==2.13.0 (from your pip index: on Linux x86_64 PyPI gives the CUDA build, several GB)"
    $PY -m pip install -q "torch==2.13.0"
  fi
fi
if ! $PY -c "import napari_sparseseg, napari, pytestqt, itk, importlinter, ruff, distributed, ome_zarr" 2>/dev/null \
   || [ "$($PY -c 'import napari_sparseseg, pathlib; print(pathlib.Path(napari_sparseseg.__file__).resolve().parent.parent)')" != "$(pwd)" ]; then
  echo "[install] pip install -e .[test]"
  $PY -m pip install -q -e ".[test]"
fi
