#!/usr/bin/env bash
# Write the web UI's screenshots in docs/ again (docs/web-*.png): the browser tests that take
# them, with CASTBOOK_UPDATE_SCREENSHOTS=1 (an ordinary run writes them only when missing).
# Extra arguments go to pytest, e.g. `bash scripts/web-screenshots.sh -k clipped` for the
# layout screenshots at 1280×720, 1440×900 and 1920×1080 alone.
set -euo pipefail
cd "$(dirname "$0")/.."
export CASTBOOK_UPDATE_SCREENSHOTS=1
PYTHONPATH="$PWD/src" .venv/bin/python -m pytest -n 0 -q \
  tests/test_web_canvas_editing.py tests/test_web_canvas.py tests/test_web_ui.py tests/test_web_library.py \
  tests/test_web_models.py tests/test_web_settings.py "$@"
