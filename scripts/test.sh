#!/usr/bin/env bash
# Set up everything the tests need (system packages, .venv) and run the whole suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k export`.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-system-deps.sh
bash scripts/setup-venv.sh test,faces,video,embeddings,diffusers,postgres,celery
.venv/bin/ruff check src tests benchmarks scripts
.venv/bin/python -m pytest "$@"
