#!/usr/bin/env bash
# Starts the development mail catcher (scripts/mail-catcher.ts) in the background when nothing
# answers on the SMTP port of SMTP_URL (default 127.0.0.1:1025), so that `npm run up` delivers
# its emails somewhere a developer can read them: http://127.0.0.1:8025. Only for a local SMTP_URL.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

url="${SMTP_URL:-smtp://127.0.0.1:1025}"
hostport="${url#*://}"; hostport="${hostport##*@}"; hostport="${hostport%%/*}"
host="${hostport%%:*}"; port="${hostport##*:}"
[ "$port" = "$hostport" ] && port=25
case "$host" in 127.0.0.1|localhost) ;; *) exit 0 ;; esac

if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
  exit 0
fi
mkdir -p .tmp
MAIL_CATCHER_SMTP_PORT="$port" nohup npx --no-install tsx scripts/mail-catcher.ts > .tmp/mail-catcher.log 2>&1 &
for _ in $(seq 1 50); do
  if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
    echo "ensure-mail-catcher: started; read the mail at http://127.0.0.1:${MAIL_CATCHER_HTTP_PORT:-8025}" >&2
    exit 0
  fi
  sleep 0.2
done
echo "ensure-mail-catcher: ERROR: the mail catcher did not start (see .tmp/mail-catcher.log)" >&2
exit 1
