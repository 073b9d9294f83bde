#!/usr/bin/env bash
# Set up castbook in .venv and run its main job: the library quick start (a small demo
# library in ./.castbook-quickstart), then `castbook serve` — the web app and the HTTP API
# on http://127.0.0.1:8000 (API docs at /docs) with an API key printed for you.
# CASTBOOK_NO_SERVE=1 stops after the quick start. CASTBOOK_PULL=sd15-ip-adapter (any preset
# id) downloads that preset's models during set-up; either way the script ends by saying
# which presets can run on this machine and the one command that makes one runnable.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-venv.sh faces,fastfaces,fastpng,video,identify,diffusers,comfyui,gemini
bash scripts/quickstart.sh
export CASTBOOK_HOME="$PWD/.castbook-quickstart/library"
if [[ -n "${CASTBOOK_PULL:-}" ]]; then
    printf '\n\033[1m$ castbook models pull %s --yes\033[0m\n' "$CASTBOOK_PULL"
    .venv/bin/castbook models pull "$CASTBOOK_PULL" --yes
fi
.venv/bin/python scripts/model_status.py
if [[ "${CASTBOOK_NO_SERVE:-}" == "1" ]]; then
    exit 0
fi
# An admin key: this is your own machine, so the web app may download models too.
key="$(.venv/bin/castbook keys create --name quickstart --admin --plain)"
printf '
API key for this demo library: %s
' "$key"
printf 'Open http://127.0.0.1:8000/ in a browser and paste the key, or try:
  curl -H "Authorization: Bearer %s" http://127.0.0.1:8000/v1/characters

' "$key"
exec .venv/bin/castbook serve
