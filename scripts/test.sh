#!/usr/bin/env bash
# Set up everything the tests need (system packages, .venv) and run the whole suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k export`.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-system-deps.sh
bash scripts/setup-venv.sh test,faces,fastfaces,fastpng,video,identify,embeddings,diffusers,postgres,celery,comfyui,gemini,s3
.venv/bin/ruff check src tests benchmarks scripts
# Three processes on CI's and this machine's 2 cores: many tests wait on a server, a worker or
# a browser, and a third process keeps both cores busy meanwhile. Each test file stays in one
# process, so a module's fixtures (a Redis, a Celery cluster, a browser) are built once.
# `-n 0` after it runs everything in this process.
.venv/bin/python -m pytest -n 3 --dist loadfile "$@"
