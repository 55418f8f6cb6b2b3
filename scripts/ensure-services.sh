#!/usr/bin/env bash
# Makes sure the servers ObeyForum needs are answering: NATS with JetStream, PostgreSQL and Redis.
#
# For each one: if it answers, it is used as it is; if it is installed but down, it is started;
# if it is not installed (and the address is local), the Debian package is installed and started.
# Idempotent and silent when everything is already up; says what it does otherwise; exits
# non-zero with a clear message when a server cannot be brought up within the wait.
#
# Addresses come from the same variables the application reads (defaults: the standard local
# ports): NATS_URL (first URL; NATS_USER/NATS_PASSWORD honoured), AUTH_DATABASE_URL and
# CONTENT_DATABASE_URL, AUTH_REDIS_URL, CONTENT_REDIS_URL and ALERTS_REDIS_URL. Remote addresses
# are only checked, never started. For a local PostgreSQL the databases named in the URLs are
# created when missing.
#
# Env: ENSURE_SERVICES_TIMEOUT (seconds to wait for each server, default 30).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TIMEOUT="${ENSURE_SERVICES_TIMEOUT:-30}"

say() { echo "ensure-services: $*" >&2; }
die() { echo "ensure-services: ERROR: $*" >&2; exit 1; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=(sudo); fi
fi
as_root() { "${SUDO[@]}" "$@"; }

APT_UPDATED=0
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "$1 is not installed and apt-get is not available; install it by hand"
  if [ "$APT_UPDATED" -eq 0 ]; then
    say "apt-get update"
    as_root apt-get update -qq >/dev/null || die "apt-get update failed"
    APT_UPDATED=1
  fi
  say "apt-get install -y $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null \
    || die "apt-get install $* failed"
}

# parse_url URL DEFAULT_PORT -> sets U_USER U_PASS U_HOST U_PORT U_PATH
# Accepts scheme://[user[:pass]@]host[:port][/path][?query], with or without the scheme.
parse_url() {
  local url="$1" rest hostport
  rest="${url#*://}"
  rest="${rest%%\?*}"
  U_USER="" U_PASS="" U_PATH=""
  if [[ "$rest" == */* ]]; then U_PATH="${rest#*/}"; rest="${rest%%/*}"; fi
  if [[ "$rest" == *@* ]]; then
    local userinfo="${rest%@*}"
    rest="${rest##*@}"
    U_USER="${userinfo%%:*}"
    if [[ "$userinfo" == *:* ]]; then U_PASS="${userinfo#*:}"; fi
  fi
  hostport="$rest"
  if [[ "$hostport" == \[*\]* ]]; then           # [ipv6]:port
    U_HOST="${hostport%%]*}"; U_HOST="${U_HOST#[}"
    hostport="${hostport#*]}"
    U_PORT="${hostport#:}"
  elif [[ "$hostport" == *:* ]]; then
    U_HOST="${hostport%%:*}"; U_PORT="${hostport#*:}"
  else
    U_HOST="$hostport"; U_PORT=""
  fi
  [ -n "$U_HOST" ] || U_HOST=127.0.0.1
  [ -n "$U_PORT" ] || U_PORT="$2"
}

is_local() { case "$1" in 127.0.0.1 | localhost | ::1 | 0.0.0.0) return 0 ;; *) return 1 ;; esac; }

tcp_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

# wait_for CHECK_FUNCTION ARGS... : polls until the check passes or TIMEOUT runs out.
wait_for() {
  local deadline=$((SECONDS + TIMEOUT))
  until "$@"; do
    if [ "$SECONDS" -ge "$deadline" ]; then return 1; fi
    sleep 0.5
  done
}

# ---------------------------------------------------------------------------------------------
# NATS with JetStream
# ---------------------------------------------------------------------------------------------

# True when the server's INFO line (sent before any authentication) says JetStream is on.
nats_info_says_jetstream() {
  local info
  info="$(timeout 3 bash -c "exec 3<>/dev/tcp/$1/$2 && head -n1 <&3" 2>/dev/null)" || return 1
  [[ "$info" == INFO* && "$info" == *'"jetstream":true'* ]]
}

# True when JetStream answers an API request (needs node_modules; falls back to the INFO line).
nats_jetstream_answers() {
  local host="$1" port="$2" url="$3"
  tcp_open "$host" "$port" || return 1
  if [ -d "$ROOT/node_modules/@nats-io/jetstream" ] && [ -d "$ROOT/node_modules/@nats-io/transport-node" ]; then
    (cd "$ROOT" && CHECK_NATS_URL="$url" timeout 15 node --input-type=module -e '
      import { connect } from "@nats-io/transport-node";
      import { jetstreamManager } from "@nats-io/jetstream";
      const nc = await connect({
        servers: process.env.CHECK_NATS_URL,
        user: process.env.NATS_USER || undefined,
        pass: process.env.NATS_PASSWORD || undefined,
        timeout: 3000,
        reconnect: false,
      });
      try {
        const jsm = await jetstreamManager(nc, { timeout: 3000 });
        await jsm.getAccountInfo();
      } finally {
        await nc.close();
      }
    ' >/dev/null 2>&1)
  else
    nats_info_says_jetstream "$host" "$port"
  fi
}

ensure_nats() {
  local raw="${NATS_URL:-nats://127.0.0.1:4222}"
  raw="${raw%%,*}"
  parse_url "$raw" 4222
  local host="$U_HOST" port="$U_PORT" url="nats://$U_HOST:$U_PORT"
  [[ "$host" == *:* ]] && url="nats://[$host]:$port"

  if nats_jetstream_answers "$host" "$port" "$url"; then return 0; fi

  if tcp_open "$host" "$port"; then
    # Something listens but JetStream does not answer: maybe it is still starting.
    if wait_for nats_jetstream_answers "$host" "$port" "$url"; then return 0; fi
    if nats_info_says_jetstream "$host" "$port"; then
      die "NATS at $host:$port has JetStream enabled but its API does not answer (check NATS_USER/NATS_PASSWORD and the server log)"
    fi
    die "NATS at $host:$port answers but JetStream is not enabled: restart it with -js (e.g. nats-server -a $host -p $port -js -sd /var/lib/nats-server)"
  fi

  is_local "$host" || die "NATS at $host:$port does not answer (remote address: not starting it here)"

  local bin=""
  if [ -x /usr/sbin/nats-server ]; then bin=/usr/sbin/nats-server
  elif command -v nats-server >/dev/null 2>&1; then bin="$(command -v nats-server)"
  else
    apt_install nats-server
    if [ -x /usr/sbin/nats-server ]; then bin=/usr/sbin/nats-server; else bin="$(command -v nats-server || true)"; fi
    [ -n "$bin" ] || die "nats-server still not found after apt-get install nats-server"
    # The package may have started its own server; use it if it has JetStream.
    sleep 1
    if nats_jetstream_answers "$host" "$port" "$url"; then return 0; fi
  fi

  local bind="$host"; [ "$bind" = localhost ] && bind=127.0.0.1
  # The standard port uses the machine's usual store; any other port gets its own, so two
  # servers never share a JetStream store directory.
  local store=/var/lib/nats-server log=/var/log/nats-server.log
  if [ "$port" != 4222 ]; then store="/var/lib/nats-server-$port"; log="/var/log/nats-server-$port.log"; fi
  say "starting nats-server (JetStream) on $bind:$port, store $store"
  as_root mkdir -p "$store"
  local args=(-a "$bind" -p "$port" -js -sd "$store" -l "$log")
  if command -v start-stop-daemon >/dev/null 2>&1 && [ "$port" = 4222 ]; then
    as_root start-stop-daemon --start --oknodo --background --exec "$bin" -- "${args[@]}"
  else
    as_root nohup "$bin" "${args[@]}" >/dev/null 2>&1 &
  fi
  wait_for nats_jetstream_answers "$host" "$port" "$url" \
    || die "nats-server did not answer with JetStream on $host:$port within ${TIMEOUT}s (see $log)"
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------

pg_answers() {
  if command -v pg_isready >/dev/null 2>&1; then
    pg_isready -q -h "$1" -p "$2" -t 2 >/dev/null 2>&1
  else
    tcp_open "$1" "$2"
  fi
}

# psql over TCP as the URL's user (trust, or the URL's password).
pg_sql() {
  local host="$1" port="$2" user="$3" pass="$4" sql="$5"
  PGPASSWORD="$pass" PGCONNECT_TIMEOUT=3 psql -X -q -t -A -v ON_ERROR_STOP=1 \
    -h "$host" -p "$port" -U "$user" -d postgres -c "$sql" 2>&1
}

# shellcheck disable=SC2012 # version directories: plain names
pg_latest_version() { ls /etc/postgresql 2>/dev/null | sort -V | tail -n1; }

# A fresh Debian cluster asks for passwords over TCP; make 127.0.0.1 and ::1 trusted.
pg_trust_local_tcp() {
  local ver="$1" hba
  hba="/etc/postgresql/$ver/main/pg_hba.conf"
  [ -f "$hba" ] || die "cannot find $hba to allow trust authentication on 127.0.0.1"
  say "setting trust authentication for 127.0.0.1/32 and ::1/128 in $hba"
  as_root sed -i -E \
    -e 's#^(host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+)[a-z0-9-]+#\1trust#' \
    -e 's#^(host[[:space:]]+all[[:space:]]+all[[:space:]]+::1/128[[:space:]]+)[a-z0-9-]+#\1trust#' \
    "$hba"
  if ! grep -Eq '^host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba"; then
    as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main reload >/dev/null
  sleep 1
}

ensure_postgres_at() {
  local host="$1" port="$2" user="$3" pass="$4"
  if ! pg_answers "$host" "$port"; then
    is_local "$host" || die "PostgreSQL at $host:$port does not answer (remote address: not starting it here)"
    [ "$port" = 5432 ] || die "PostgreSQL at $host:$port does not answer (only the standard port 5432 is started by this script)"
    if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(pg_latest_version)" ]; then
      apt_install postgresql
      sleep 1
    fi
    local ver; ver="$(pg_latest_version)"
    [ -n "$ver" ] || die "PostgreSQL is installed but no cluster exists under /etc/postgresql"
    if [ ! -d "/etc/postgresql/$ver/main" ]; then
      say "creating PostgreSQL $ver cluster main"
      as_root pg_createcluster "$ver" main >/dev/null
    fi
    if ! pg_answers "$host" "$port"; then
      say "starting PostgreSQL $ver"
      as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start \
        || say "pg_ctlcluster start returned an error; waiting for the server anyway"
    fi
    wait_for pg_answers "$host" "$port" \
      || die "PostgreSQL did not answer on $host:$port within ${TIMEOUT}s (see /var/log/postgresql/)"
  fi

  command -v psql >/dev/null 2>&1 || apt_install postgresql-client
  local out
  if ! out="$(pg_sql "$host" "$port" "$user" "$pass" 'select 1')"; then
    if is_local "$host" && [[ "$out" == *"password authentication failed"* || "$out" == *"no password supplied"* || "$out" == *"password"* ]] \
      && [ -n "$(pg_latest_version)" ]; then
      pg_trust_local_tcp "$(pg_latest_version)"
      out="$(pg_sql "$host" "$port" "$user" "$pass" 'select 1')" \
        || die "PostgreSQL on $host:$port still refuses user $user after setting trust: $out"
    else
      die "PostgreSQL on $host:$port refuses 'select 1' as user $user: $out"
    fi
  fi
}

ensure_database() {
  local host="$1" port="$2" user="$3" pass="$4" db="$5"
  [ -n "$db" ] || return 0
  [[ "$db" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "unexpected database name '$db'"
  local exists
  exists="$(pg_sql "$host" "$port" "$user" "$pass" "select 1 from pg_database where datname = '$db'")" \
    || die "cannot list databases on $host:$port: $exists"
  if [ "$exists" != 1 ]; then
    say "creating database $db on $host:$port"
    local out
    out="$(pg_sql "$host" "$port" "$user" "$pass" "create database \"$db\"")" \
      || [[ "$out" == *"already exists"* ]] \
      || die "cannot create database $db on $host:$port: $out"
  fi
}

ensure_postgres() {
  local seen=" " url
  for url in "${AUTH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/obey_auth}" \
             "${CONTENT_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/obey_content}"; do
    parse_url "$url" 5432
    local host="$U_HOST" port="$U_PORT" user="${U_USER:-postgres}" pass="$U_PASS" db="$U_PATH"
    if [[ "$seen" != *" $host:$port "* ]]; then
      ensure_postgres_at "$host" "$port" "$user" "$pass"
      seen="$seen$host:$port "
    fi
    if is_local "$host"; then ensure_database "$host" "$port" "$user" "$pass" "$db"; fi
  done
}

# ---------------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------------

redis_answers() {
  local host="$1" port="$2" reply
  if command -v redis-cli >/dev/null 2>&1; then
    reply="$(timeout 3 redis-cli -h "$host" -p "$port" ping 2>/dev/null)" || return 1
  else
    reply="$(timeout 3 bash -c "exec 3<>/dev/tcp/$host/$port && printf 'PING\r\n' >&3 && head -n1 <&3" 2>/dev/null)" || return 1
  fi
  [[ "$reply" == *PONG* || "$reply" == *NOAUTH* ]]
}

ensure_redis_at() {
  local host="$1" port="$2"
  redis_answers "$host" "$port" && return 0
  is_local "$host" || die "Redis at $host:$port does not answer (remote address: not starting it here)"
  if ! command -v redis-server >/dev/null 2>&1; then
    apt_install redis-server
    sleep 1
    redis_answers "$host" "$port" && return 0
  fi
  local log=/var/log/redis/ci.log
  [ "$port" = 6379 ] || log="/var/log/redis/ci-$port.log"
  say "starting redis-server on 127.0.0.1:$port"
  as_root mkdir -p /var/lib/redis /var/log/redis
  # Sorted sets above 32 entries as skip lists, as alerts' Redis wants (docs/alerts.md); the
  # services share this one on a fresh machine.
  as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$port" --save "" --appendonly no \
    --zset-max-listpack-entries 32 --dir /var/lib/redis --logfile "$log" >/dev/null
  wait_for redis_answers "$host" "$port" \
    || die "Redis did not answer on $host:$port within ${TIMEOUT}s (see $log)"
}

ensure_redis() {
  local seen=" " url
  for url in "${AUTH_REDIS_URL:-redis://127.0.0.1:6379/1}" \
             "${CONTENT_REDIS_URL:-redis://127.0.0.1:6379/2}" \
             "${ALERTS_REDIS_URL:-redis://127.0.0.1:6379/3}"; do
    parse_url "$url" 6379
    if [[ "$seen" != *" $U_HOST:$U_PORT "* ]]; then
      ensure_redis_at "$U_HOST" "$U_PORT"
      seen="$seen$U_HOST:$U_PORT "
    fi
  done
}

ensure_nats
ensure_postgres
ensure_redis
