#!/usr/bin/env bash
# Runs `npm ci` only when node_modules is missing or package-lock.json changed since the last
# install (npm writes node_modules/.package-lock.json on every install).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "ensure-deps: npm ci" >&2
  npm ci --no-audit --no-fund
fi
