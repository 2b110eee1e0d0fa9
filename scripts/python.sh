#!/usr/bin/env bash
# Prints the Python interpreter the project uses, creating the project's virtual environment when one is needed.
#
# - Inside a virtual environment (or conda): that environment's python.
# - A python that its system manages (PEP 668: Debian/Ubuntu's own python3 refuses `pip install`): the project's
#   .venv, created with --system-site-packages (so a torch the system already has, CPU or CUDA, is used as is).
# - Any other python (pyenv, python.org, a container's): that python.
# $PYTHON picks the starting interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! command -v "$PY" >/dev/null 2>&1; then
  echo "error: $PY not found; install Python >= 3.10 (apt-get install python3 python3-venv) or set PYTHON" >&2
  exit 2
fi
if [ -x .venv/bin/python ]; then
  echo "$(pwd)/.venv/bin/python"
  exit 0
fi
in_env=$("$PY" -c 'import os, sys; print(int(sys.prefix != sys.base_prefix or "CONDA_PREFIX" in os.environ))')
managed=$("$PY" -c 'import os, sysconfig; print(int(os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))))')
if [ "$in_env" = 0 ] && [ "$managed" = 1 ]; then
  echo "[install] $PY is managed by the system (PEP 668): creating the project's virtual environment .venv" >&2
  if ! "$PY" -m venv --system-site-packages .venv >&2; then
    rm -rf .venv
    echo "error: could not create .venv; install the venv module (apt-get install python3-venv) and rerun" >&2
    exit 2
  fi
  echo "$(pwd)/.venv/bin/python"
else
  command -v "$PY"
fi
