#!/usr/bin/env bash
# The test suite (fast tests; `-m slow` for the slow ones). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh dev
bash scripts/install_test_tools.sh  # a browser and Tesseract for the tests that drive them; they skip if this cannot install
exec .venv/bin/python -m pytest "$@"
