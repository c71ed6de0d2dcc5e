#!/usr/bin/env bash
# Starts (or checks) the services the tests and a local run need. Idempotent.
#   scripts/services.sh up     PostgreSQL on 127.0.0.1:5432, Redis on 127.0.0.1:6379 (rate
#                              limits, inbound webhook replays) and a Kafka-compatible broker
#                              (tansu) on 127.0.0.1:9092, each started only when down
#   scripts/services.sh up --no-broker   the same without the broker
#   scripts/services.sh down   stops the broker if `up` started it
set -euo pipefail
cd "$(dirname "$0")/.."

PGHOST=${PGHOST:-127.0.0.1}
PGPORT=${PGPORT:-5432}

log() { printf '[services] %s\n' "$*" >&2; }

postgres_up() {
  if pg_isready -q -h "$PGHOST" -p "$PGPORT" 2>/dev/null; then
    return 0
  fi
  log "PostgreSQL is not answering on $PGHOST:$PGPORT; starting it"
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    log "PostgreSQL is not installed; installing it from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
    local conf
    conf=$(ls -d /etc/postgresql/*/main | head -1)
    # Local development and CI only: trust on loopback, as the documented machine has it.
    sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$conf/pg_hba.conf"
    sed -i -E 's/^(local\s+all\s+postgres\s+)\S+/\1trust/' "$conf/pg_hba.conf"
  fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do
    if pg_isready -q -h "$PGHOST" -p "$PGPORT"; then
      log "PostgreSQL is up"
      return 0
    fi
    sleep 1
  done
  log "PostgreSQL did not come up on $PGHOST:$PGPORT"
  return 1
}

REDIS_PORT=${REDIS_PORT:-6379}

# Redis keeps the rate-limit budgets shared by replicas; the tests also start private
# `redis-server`s to stop under load, so the binary must be there even when one runs.
redis_up() {
  if ! command -v redis-server >/dev/null 2>&1; then
    log "Redis is not installed; installing it from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
  fi
  if redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    return 0
  fi
  log "Redis is not answering on 127.0.0.1:$REDIS_PORT; starting it"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes --save '' --appendonly no >/dev/null
  for _ in $(seq 1 30); do
    if redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then
      log "Redis is up"
      return 0
    fi
    sleep 0.5
  done
  log "Redis did not come up on 127.0.0.1:$REDIS_PORT"
  return 1
}

# Test databases are named answers_test_*; drop the ones earlier runs left behind.
drop_test_databases() {
  local dbs
  dbs=$(psql -h "$PGHOST" -p "$PGPORT" -U postgres -Atc \
    "SELECT datname FROM pg_database WHERE datname LIKE 'answers_test_%' OR datname LIKE 'answers_bench_%'" 2>/dev/null || true)
  for db in $dbs; do
    psql -h "$PGHOST" -p "$PGPORT" -U postgres -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
  done
}

KAFKA_HOST=127.0.0.1
KAFKA_PORT=${KAFKA_PORT:-9092}
TANSU_VERSION=0.6.0
STATE_DIR=target/services
export PATH="$HOME/.cargo/bin:$PATH"

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# tansu is the Kafka-compatible broker the tests run against (no Apache Kafka here). It builds
# from crates.io in about 13 minutes on 2 cores, once per machine.
tansu_installed() {
  command -v tansu >/dev/null 2>&1 && tansu --version 2>/dev/null | grep -q "$TANSU_VERSION"
}

kafka_up() {
  if port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
    log "a broker already answers on $KAFKA_HOST:$KAFKA_PORT"
    return 0
  fi
  if ! tansu_installed; then
    log "installing tansu $TANSU_VERSION (cargo install; about 13 minutes, once per machine)"
    cargo install "tansu@$TANSU_VERSION" --locked --features dynostore,postgres --quiet
  fi
  mkdir -p "$STATE_DIR"
  log "starting tansu on $KAFKA_HOST:$KAFKA_PORT (in-memory storage)"
  nohup tansu broker \
    --listener-url "tcp://$KAFKA_HOST:$KAFKA_PORT" \
    --advertised-listener-url "tcp://$KAFKA_HOST:$KAFKA_PORT" \
    --storage-engine memory://tansu/ >"$STATE_DIR/tansu.log" 2>&1 &
  echo $! >"$STATE_DIR/tansu.pid"
  for _ in $(seq 1 60); do
    if port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
      log "tansu is up (pid $(cat "$STATE_DIR/tansu.pid"))"
      return 0
    fi
    sleep 0.5
  done
  log "tansu did not start; its log:"
  cat "$STATE_DIR/tansu.log" >&2
  return 1
}

kafka_down() {
  if [ -f "$STATE_DIR/tansu.pid" ]; then
    kill "$(cat "$STATE_DIR/tansu.pid")" 2>/dev/null || true
    rm -f "$STATE_DIR/tansu.pid"
    log "stopped tansu"
  fi
}

case "${1:-up}" in
  up)
    postgres_up
    drop_test_databases
    redis_up
    # `up --no-broker`: the embedded transport needs no broker (scripts/serve.sh).
    if [ "${2:-}" != "--no-broker" ]; then
      kafka_up
    fi
    ;;
  down)
    kafka_down
    ;;
  *)
    echo "usage: $0 up|down" >&2
    exit 2
    ;;
esac
