#!/usr/bin/env bash
# The test suite (fast tests; `-m slow` for the slow ones). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh dev
bash scripts/install_browser.sh  # for the search page's browser test; it skips if this cannot install
exec .venv/bin/python -m pytest "$@"
