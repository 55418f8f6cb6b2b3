#!/usr/bin/env bash
# Validates compose.yaml with `docker-compose config` (or `docker compose config`), and the
# gateway's nginx configuration with `nginx -t`. Part of `npm test` (ensure-deps installs both);
# skips, with a message, when docker-compose is not installed.
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

# compose.yaml requires its secrets (deploy/env.example); placeholders are enough to check the file.
env JWT_SECRET="${JWT_SECRET:-check-compose-placeholder-secret-0123456789}" \
  AUTH_NATS_PASSWORD=pcheck1 CONTENT_NATS_PASSWORD=pcheck2 ALERTS_NATS_PASSWORD=pcheck3 \
  MAILING_NATS_PASSWORD=pcheck4 OBEYFORUM_NATS_PASSWORD=pcheck5 OPERATOR_NATS_PASSWORD=pcheck6 \
  "${compose[@]}" -f compose.yaml config --quiet
# The gateway's configuration, as compose mounts it, must be valid nginx (when nginx is here).
if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
  dir="$(mktemp -d)"
  mkdir -p "$dir/obeyforum"
  cp deploy/nginx/http.conf deploy/nginx/locations.conf "$dir/obeyforum/"
  sed -e "s#/etc/nginx/obeyforum#$dir/obeyforum#g" -e "s#obeyforum-[12]:3000#127.0.0.1:9#g" -e "s#/tmp/nginx.pid#$dir/nginx.pid#" \
    deploy/nginx/nginx.conf > "$dir/nginx.conf"
  "$(command -v nginx || echo /usr/sbin/nginx)" -t -q -c "$dir/nginx.conf" -p "$dir" -g "error_log $dir/error.log;" \
    || { rm -rf "$dir"; echo "check-compose: deploy/nginx is not valid nginx" >&2; exit 1; }
  rm -rf "$dir"
  echo "check-compose: deploy/nginx/nginx.conf is valid (nginx -t)"
fi
echo "check-compose: compose.yaml is valid (${compose[*]})"
