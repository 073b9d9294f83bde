#!/usr/bin/env bash
# Set up castbook in .venv and run its main job. Until `castbook serve` exists, that is the
# library quick start: it builds a small library in ./.castbook-quickstart and shows it.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-venv.sh
exec bash scripts/quickstart.sh
