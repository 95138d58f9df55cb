#!/usr/bin/env bash
# Installs (with apt-get, as root) what the test suite drives besides the binaries, if it is
# missing. Used by .ci/run and by the README's set-up.
set -euo pipefail

# What the tests drive besides the binaries: tmux (jobctl top in a pseudo-terminal), the
# system's own sqlite3 CLI and python3 (outside writers, not jobd's bundled SQLite),
# setpriv (daemons run as an unprivileged user), and chromium with chromedriver (the web
# page's browser test), psql (.ci/run asks the PostgreSQL server whether it answers). A missing one is installed; if that fails, CI fails.
need=()
command -v tmux >/dev/null 2>&1 || need+=(tmux)
command -v psql >/dev/null 2>&1 || need+=(postgresql-client)
command -v sqlite3 >/dev/null 2>&1 || need+=(sqlite3)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
if [ "${#need[@]}" -gt 0 ]; then
    echo "== installing ${need[*]} (apt-get)"
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "ci: missing ${need[*]}; install these packages first" >&2
        exit 2
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }; then
        echo "ci: cannot install ${need[*]}: the tests need them" >&2
        exit 1
    fi
fi
