#!/usr/bin/env bash
# Install the Debian packages the test suite runs for real: the PostgreSQL server
# (initdb, pg_ctl, postgres), redis-server and chromium (the web UI's browser tests). The
# tests start their own throwaway servers, so the distribution's services are not needed and
# are not started here.
#
# Idempotent and quick when everything is present. Without root (and no sudo) it prints
# what to do and exits 0 so those tests skip -- unless CI=true, where they are mandatory
# and this exits 1.
set -euo pipefail

me="install-system-deps"
is_ci() { [[ "${CI:-}" == "true" || "${CI:-}" == "1" ]]; }

find_initdb() {
    local path
    if path="$(command -v initdb 2>/dev/null)"; then
        echo "$path"
        return 0
    fi
    # Debian/Ubuntu keep the server binaries off PATH; pick the highest version.
    path="$(ls -1d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 || true)"
    if [[ -n "$path" && -x "$path" ]]; then
        echo "$path"
        return 0
    fi
    return 1
}

give_up() {
    if is_ci; then
        echo "$me: ERROR: $1 (CI=true: these servers are required)" >&2
        exit 1
    fi
    echo "$me: $1; the tests that need them will be skipped" >&2
    exit 0
}

missing=()
find_initdb >/dev/null || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# Headless Chromium for the web UI tests (driven by Playwright; no browser is downloaded).
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# A font for storyboard captions (Pillow's built-in one is used when it is missing).
[[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]] || missing+=(fonts-dejavu-core)
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "$me: PostgreSQL, Redis, Chromium and fonts already present; nothing to do"
    exit 0
fi

if [[ "$(id -u)" -eq 0 ]]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
else
    give_up "${missing[*]} not installed and this is not root (no passwordless sudo); run: apt-get install ${missing[*]}"
fi
if ! command -v apt-get >/dev/null 2>&1; then
    give_up "${missing[*]} not installed and apt-get is not available; install them by hand"
fi

log="$(mktemp -t install-system-deps.XXXXXX.log)"
trap 'rm -f "$log"' EXIT
if ! {
    "${sudo[@]}" apt-get update &&
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y --no-install-recommends "${missing[@]}"
} >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    give_up "apt-get install ${missing[*]} failed (output above)"
fi
if ! find_initdb >/dev/null || ! command -v redis-server >/dev/null 2>&1 ||
    ! command -v chromium >/dev/null 2>&1; then
    tail -n 40 "$log" >&2
    echo "$me: ERROR: installed ${missing[*]} but a server binary is still missing" >&2
    exit 1
fi
echo "$me: installed ${missing[*]} via apt-get"
