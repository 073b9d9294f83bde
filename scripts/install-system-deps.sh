#!/usr/bin/env bash
# Install the system packages the test suite needs: PostgreSQL server binaries
# (initdb, pg_ctl, postgres). The tests start their own throwaway servers, so the
# distribution's cluster/service is not needed and is not started here.
#
# Idempotent and quick when everything is present. Without root (and no sudo) it
# prints what to do and exits 0 so the PostgreSQL tests skip -- unless CI=true,
# where PostgreSQL is mandatory and this exits 1.
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
        echo "$me: ERROR: $1 (CI=true: PostgreSQL is required)" >&2
        exit 1
    fi
    echo "$me: $1; PostgreSQL tests will be skipped" >&2
    exit 0
}

if initdb_path="$(find_initdb)"; then
    echo "$me: PostgreSQL server binaries already present ($initdb_path); nothing to do"
    exit 0
fi

if [[ "$(id -u)" -eq 0 ]]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
else
    give_up "PostgreSQL is not installed and this is not root (no passwordless sudo); run: apt-get install postgresql"
fi

if ! command -v apt-get >/dev/null 2>&1; then
    give_up "PostgreSQL is not installed and apt-get is not available; install the PostgreSQL server (initdb, pg_ctl, postgres) by hand"
fi

log="$(mktemp -t install-system-deps.XXXXXX.log)"
trap 'rm -f "$log"' EXIT
if ! {
    "${sudo[@]}" apt-get update &&
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y --no-install-recommends postgresql
} >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    give_up "apt-get install postgresql failed (output above)"
fi

if ! initdb_path="$(find_initdb)"; then
    tail -n 40 "$log" >&2
    echo "$me: ERROR: installed postgresql but initdb is still not found" >&2
    exit 1
fi
echo "$me: installed PostgreSQL via apt-get ($initdb_path)"
