#!/usr/bin/env bash
# Create .venv/ in the checkout (if missing) and install the package with the given extras.
# torch==2.13.0 goes first: on these machines it is a local CPU build, while any other torch request would
# download gigabytes of CUDA packages; the package's own requirement (torch>=2.3) then accepts it.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-all}"
if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[${extras}]"
