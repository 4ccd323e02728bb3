#!/usr/bin/env bash
# The test suite (fast tests; `-m slow` for the slow ones). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh dev
exec .venv/bin/python -m pytest "$@"
