#!/usr/bin/env bash
# Create .venv and install castbook into it with the extras named in $1 (comma-separated).
# Quick when nothing changed: skipped while pyproject.toml and the extras are as last time.
#   bash scripts/setup-venv.sh faces,video              # what `castbook` needs to run
#   bash scripts/setup-venv.sh test,faces,video,...     # what the test suite needs
set -euo pipefail
cd "$(dirname "$0")/.."

extras=${1:-faces,fastpng,video}
python=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
    "$python" -m venv .venv
fi
stamp=.venv/.castbook-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $extras"
if [[ ! -f $stamp || "$(cat "$stamp")" != "$want" ]]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    if [[ ,$extras, == *,embeddings,* || ,$extras, == *,diffusers,* || ,$extras, == *,fastfaces,* ]]; then
        # 2.13.0 is the CPU build this machine kind keeps on local disk; another version
        # would download gigabytes of CUDA wheels.
        .venv/bin/python -m pip install --quiet "torch==2.13.0"
    fi
    .venv/bin/python -m pip install --quiet -e ".[$extras]"
    echo "$want" >"$stamp"
fi
