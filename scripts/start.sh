#!/usr/bin/env bash
# Set up castbook in .venv and run its main job: the library quick start (a small demo
# library in ./.castbook-quickstart), then `castbook serve` — the web app and the HTTP API
# on http://127.0.0.1:8000 (API docs at /docs) with an API key printed for you.
# CASTBOOK_NO_SERVE=1 stops after the quick start.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-venv.sh faces,video,diffusers
bash scripts/quickstart.sh
if [[ "${CASTBOOK_NO_SERVE:-}" == "1" ]]; then
    exit 0
fi
export CASTBOOK_HOME="$PWD/.castbook-quickstart/library"
key="$(.venv/bin/castbook keys create --name quickstart --plain)"
printf '
API key for this demo library: %s
' "$key"
printf 'Open http://127.0.0.1:8000/ in a browser and paste the key, or try:
  curl -H "Authorization: Bearer %s" http://127.0.0.1:8000/v1/characters

' "$key"
exec .venv/bin/castbook serve
