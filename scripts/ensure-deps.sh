#!/usr/bin/env bash
# Runs `npm ci` only when node_modules is missing or package-lock.json changed since the last
# install (npm writes node_modules/.package-lock.json on every install), and installs Debian's
# Chromium when it is missing (the browser test of the API docs, src/http/docs-ui.int.spec.ts,
# runs it headless), and nginx when it is missing (the gateway test runs it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "ensure-deps: npm ci" >&2
  npm ci --no-audit --no-fund
fi

say() { echo "ensure-deps: $*" >&2; }
SUDO=()
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO=(sudo); fi
as_root() { "${SUDO[@]}" "$@"; }

APT_UPDATED=0
apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-deps: ERROR: $* is not installed and apt-get is not available; install it by hand" >&2
    exit 1
  fi
  if [ "$APT_UPDATED" -eq 0 ]; then
    say "apt-get update"
    as_root apt-get update -qq >/dev/null
    APT_UPDATED=1
  fi
  say "apt-get install -y $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! command -v chromium >/dev/null 2>&1; then
  apt_install chromium
fi

# nginx: the gateway test (src/gateway.int.spec.ts) runs the gateway's configuration for real.
# Debian starts the packaged server on port 80 when it can; the test runs its own instance.
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  apt_install nginx-light
fi

# docker-compose (Debian's package): `npm test` checks compose.yaml with `docker-compose config`.
if ! command -v docker-compose >/dev/null 2>&1; then
  apt_install docker-compose
fi
