#!/usr/bin/env bash
# The main job: index the bundled example documents into an embedded Qdrant folder and answer three queries.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh all
exec .venv/bin/python examples/main_job.py "$@"
