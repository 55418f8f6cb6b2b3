#!/usr/bin/env bash
# Validates compose.yaml with `docker-compose config` (or `docker compose config`).
# Skips, with a message, when neither is installed. Not part of `npm test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
elif command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
else
  echo "check-compose: skipped: neither docker-compose nor the docker compose plugin is installed"
  exit 0
fi

# compose.yaml requires JWT_SECRET; a placeholder is enough to check the file.
JWT_SECRET="${JWT_SECRET:-check-compose-placeholder-secret-0123456789}" \
  "${compose[@]}" -f compose.yaml config --quiet
echo "check-compose: compose.yaml is valid (${compose[*]})"
